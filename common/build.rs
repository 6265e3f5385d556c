//! Compiles `proto/*.proto` with protox (pure Rust), so the build needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/mgmtd.proto", "proto/meta.proto", "proto/storage.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // Default stubs (answering Unimplemented) let test fakes implement only the RPCs they use; the
    // real services are covered by tests of every RPC they serve.
    tonic_prost_build::configure().bytes(".").generate_default_stubs(true).compile_fds(fds)?;
    Ok(())
}
