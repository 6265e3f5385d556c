//! The config templates in deploy/config parse with the daemons' real config types and pass their
//! validation, so the templates can never drift from the code.
use std::path::PathBuf;

fn template(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/config").join(name)
}

#[test]
fn deploy_templates_parse() {
    let m: t3fs_mgmtd::Config = t3fs_common::config::load(&template("mgmtd.toml")).unwrap();
    m.validate().unwrap();
    let me: t3fs_meta::Config = t3fs_common::config::load(&template("meta.toml")).unwrap();
    me.validate().unwrap();
    let s: t3fs_storage::Config = t3fs_common::config::load(&template("storage.toml")).unwrap();
    s.validate().unwrap();
    assert_eq!(s.targets.len(), 2);
    let _f: t3fs_fuse::MountConfig = t3fs_common::config::load(&template("fuse.toml")).unwrap();
}
