//! Run-time compilation of the kernel sources with NVRTC, straight to a CUBIN for the device's
//! real architecture (`sm_90a` on Hopper: `wgmma`/`setmaxnreg` need the `a` target), and an
//! on-disk cache of the results.
//!
//! Why CUBIN and not PTX: a CUBIN is final machine code, so loading it costs no driver JIT, and
//! PTX from a newer NVRTC can be rejected by an older driver. The cache key is the full text of
//! (NVRTC version, architecture, options, source); the file name is a 64-bit hash of it and the
//! file stores the key itself, so a hash collision is detected and recompiled, never loaded.
//! Files are written to a temporary name and renamed, so a crash never leaves a torn entry and
//! concurrent processes may share the directory.
//!
//! Cache directory: `$T3FS_KERNEL_CACHE`, else `$XDG_CACHE_HOME/t3fs/kernels`, else
//! `$HOME/.cache/t3fs/kernels`, else no caching.
//!
//! Every entry point checks [`nvrtc_available`] first: cudarc panics when libnvrtc is missing.

use std::ffi::{CString, c_char};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};

use crate::sources::KernelSource;
use crate::{KernelError, Result};

/// Options every kernel is compiled with (besides `--gpu-architecture`).
pub const NVRTC_OPTIONS: &[&str] = &["-std=c++17", "--use_fast_math", "-lineinfo", "--ptxas-options=-v"];

/// Whether libnvrtc can be loaded on this machine.
pub fn nvrtc_available() -> bool {
    // SAFETY: only attempts to dlopen libnvrtc and reports success; no NVRTC call is made.
    unsafe { sys::is_culib_present() }
}

/// The NVRTC library version (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(KernelError::Compile("libnvrtc is not installed (or not on LD_LIBRARY_PATH)".into()));
    }
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: both pointers are valid for writes of one c_int for the duration of the call.
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    r.result().map_err(|e| KernelError::Compile(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// One compiled kernel module.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    /// NVRTC's log (with `-v`, ptxas' register / shared memory / spill report); empty from cache.
    pub log: String,
    pub from_cache: bool,
}

impl Compiled {
    /// Bytes ptxas reports as spilled (stores + loads) over all kernels in the log; 0 when clean.
    pub fn spill_bytes(&self) -> u64 {
        let mut total = 0;
        for line in self.log.lines() {
            // "... 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(3) {
                if w[1] == "bytes" && w[2] == "spill" {
                    total += w[0].parse::<u64>().unwrap_or(0);
                }
            }
        }
        total
    }
}

fn log_of(prog: sys::nvrtcProgram) -> String {
    // SAFETY: `prog` is a live program created by create_program and not yet destroyed.
    match unsafe { result::get_program_log(prog) } {
        Ok(raw) => {
            let bytes: Vec<u8> = raw.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(e) => format!("(no log: {e:?})"),
    }
}

/// Compiles `src` for `arch` (e.g. `sm_90a`) to a CUBIN, without the cache.
pub fn compile_cubin(src: &KernelSource, arch: &str) -> Result<Compiled> {
    if !nvrtc_available() {
        return Err(KernelError::Compile("libnvrtc is not installed (or not on LD_LIBRARY_PATH)".into()));
    }
    let text = CString::new(src.text.as_str())
        .map_err(|_| KernelError::InvalidArgument(format!("{}: source contains NUL", src.name)))?;
    let name = CString::new(format!("{}.cu", src.name))
        .map_err(|_| KernelError::InvalidArgument("kernel name contains NUL".into()))?;
    let prog = result::create_program(&text, Some(&name))
        .map_err(|e| KernelError::Compile(format!("{}: nvrtcCreateProgram: {e:?}", src.name)))?;
    let mut opts: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
    opts.push(format!("--gpu-architecture={arch}"));
    // SAFETY: `prog` was just created and is destroyed below, after its last use; the source and
    // name CStrings outlive it.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let log = log_of(prog);
    let out = match compiled {
        Err(e) => Err(KernelError::Compile(format!("{} for {arch}: {e:?}\n{log}", src.name))),
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled successfully; size is a valid out-pointer.
            let r = unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) };
            match r.result() {
                Err(e) => Err(KernelError::Compile(format!("{}: nvrtcGetCUBINSize: {e:?}", src.name))),
                Ok(()) => {
                    let mut cubin = vec![0u8; size];
                    // SAFETY: `cubin` has exactly the `size` bytes NVRTC reported for this program.
                    let r = unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char) };
                    r.result()
                        .map_err(|e| KernelError::Compile(format!("{}: nvrtcGetCUBIN: {e:?}", src.name)))
                        .map(|()| Compiled { cubin, log: log.clone(), from_cache: false })
                }
            }
        }
    };
    // SAFETY: `prog` is live and never used again.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// The on-disk compile cache (see the module note).
#[derive(Clone, Debug)]
pub struct KernelCache {
    dir: Option<PathBuf>,
}

const CACHE_MAGIC: &[u8; 8] = b"T3KCUBN1";

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl KernelCache {
    /// The cache in the default directory (module note), or none when no directory is known.
    pub fn default_dir() -> KernelCache {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = env("T3FS_KERNEL_CACHE")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("t3fs/kernels")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/t3fs/kernels")));
        KernelCache { dir }
    }

    /// A cache in `dir` (created on first store).
    pub fn at(dir: impl Into<PathBuf>) -> KernelCache {
        KernelCache { dir: Some(dir.into()) }
    }

    /// No caching: every call compiles.
    pub fn disabled() -> KernelCache {
        KernelCache { dir: None }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn key(src: &KernelSource, arch: &str, version: (i32, i32)) -> Vec<u8> {
        let mut k = format!("nvrtc {}.{}\narch {arch}\nopts {}\n", version.0, version.1, NVRTC_OPTIONS.join(" "));
        k.push_str(src.key());
        k.into_bytes()
    }

    /// The CUBIN for `src` on `arch`: from the cache when an entry with the same key exists,
    /// else compiled and stored. A cache that cannot be read or written only costs a compile.
    pub fn get_or_compile(&self, src: &KernelSource, arch: &str) -> Result<Compiled> {
        let version = nvrtc_version()?;
        let key = Self::key(src, arch, version);
        let Some(dir) = &self.dir else { return compile_cubin(src, arch) };
        let path = dir.join(format!("{}-{arch}-{:016x}.cubin", src.name, fnv1a64(&[&key])));
        if let Ok(bytes) = std::fs::read(&path)
            && let Some(cubin) = Self::parse_entry(&bytes, &key)
        {
            return Ok(Compiled { cubin: cubin.to_vec(), log: String::new(), from_cache: true });
        }
        let compiled = compile_cubin(src, arch)?;
        if let Err(e) = Self::store(dir, &path, &key, &compiled.cubin) {
            tracing::warn!(path = %path.display(), error = %e, "kernel cache: could not store entry");
        }
        Ok(compiled)
    }

    fn parse_entry<'a>(bytes: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
        let rest = bytes.strip_prefix(CACHE_MAGIC.as_slice())?;
        let (len, rest) = rest.split_first_chunk::<8>()?;
        let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
        if rest.len() < len || &rest[..len] != key {
            return None;
        }
        Some(&rest[len..])
    }

    fn store(dir: &Path, path: &Path, key: &[u8], cubin: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut data = Vec::with_capacity(16 + key.len() + cubin.len());
        data.extend_from_slice(CACHE_MAGIC);
        data.extend_from_slice(&(key.len() as u64).to_le_bytes());
        data.extend_from_slice(key);
        data.extend_from_slice(cubin);
        std::fs::write(&tmp, &data)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_are_checked_against_their_full_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.cubin");
        KernelCache::store(dir.path(), &path, b"key-a", b"CUBIN").expect("store");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(KernelCache::parse_entry(&bytes, b"key-a"), Some(&b"CUBIN"[..]));
        assert_eq!(KernelCache::parse_entry(&bytes, b"key-b"), None);
        assert_eq!(KernelCache::parse_entry(&bytes[..10], b"key-a"), None);
        assert_eq!(KernelCache::parse_entry(b"garbage", b"key-a"), None);
    }

    #[test]
    fn spill_report_is_parsed() {
        let c = Compiled {
            cubin: vec![],
            log: "ptxas info    : Used 168 registers, 0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
                .into(),
            from_cache: false,
        };
        assert_eq!(c.spill_bytes(), 12);
    }
}
