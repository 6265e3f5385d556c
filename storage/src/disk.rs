//! Disks with a shared chunk engine, and opening every target of a storage process.
//!
//! A disk configured in `[[disks]]` (`index`, `path`) holds one chunk engine (`<path>/engine`, see
//! [`crate::engine`]) shared by every target whose `disk` names that index. `<path>/DISK` identifies it:
//!
//! ```text
//! t3fs-disk 1
//! id <16 hex digits, random, chosen when the file is created>
//! target <target id> <target directory>      (one line per target ever put into this engine)
//! ```
//!
//! A target directory put into the engine is format 3 and names the disk id (chunk_store `migrate`), so
//! a target is never opened over another disk's engine. The `target` lines are the **registry** of the
//! engine's owners: allocation is derived from the records of every owner, so every owner must attach
//! before any allocation ([`crate::engine::Engine::seal`]); [`open_stores`] therefore refuses to start if
//! a registered target directory still exists but is not configured on the disk (its slots would be
//! handed to other targets). Deleting the target directory releases its registration at the next start.
//!
//! [`open_stores`] begins opening every target (each attaches to its engine), then seals every shared
//! engine, then finishes each target (migration, checks), so no allocation happens before every target of
//! a disk has marked its slots. Targets whose `disk` is not in `[[disks]]` (or unset) keep a private engine
//! in their own directory, as do format 2 directories whatever the configuration says.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use t3fs_common::{Error, StatusCode, TargetId};

use crate::chunk_store::migrate::write_durably;
use crate::chunk_store::{ChunkStore, EngineChoice, OpenReport};
use crate::config::Config;
use crate::engine::{Engine, EngineOptions};

const DISK_FILE: &str = "DISK";
const DISK_PREFIX: &str = "t3fs-disk 1";
const ENGINE_DIR: &str = "engine";

/// One disk's shared engine and its registry of targets.
pub struct Disk {
    index: u32,
    path: PathBuf,
    id: u64,
    options: EngineOptions,
    engine: Arc<Engine>,
    /// Registered target directories (target id, path), as in the `DISK` file.
    registry: Mutex<Vec<(u64, PathBuf)>>,
}

impl Disk {
    /// Opens (creating) the disk directory `path`: its `DISK` file and its engine, unsealed.
    pub fn open(index: u32, path: &Path, options: EngineOptions) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(path).map_err(|e| Error::io(&format!("creating {}", path.display()), e))?;
        let file = path.join(DISK_FILE);
        let (id, registry) = match std::fs::read_to_string(&file) {
            Ok(text) => parse(&text).ok_or_else(|| {
                Error::new(StatusCode::Unsupported, format!("{}: not a t3fs disk file", file.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = random_id();
                write_durably(path, DISK_FILE, &render(id, &[]))?;
                tracing::info!(disk = index, path = %path.display(), id = format!("{id:016x}"), "new disk");
                (id, Vec::new())
            }
            Err(e) => return Err(Error::io(&format!("reading {}", file.display()), e)),
        };
        let engine = Engine::open(&path.join(ENGINE_DIR), options)?;
        Ok(Arc::new(Self { index, path: path.to_path_buf(), id, options, engine, registry: Mutex::new(registry) }))
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn options(&self) -> EngineOptions {
        self.options
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The registered targets (id, directory).
    pub fn registered(&self) -> Vec<(u64, PathBuf)> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds a target to the registry (durably, before its directory names this disk); no-op if present.
    pub fn register(&self, target: TargetId, dir: &Path) -> Result<(), Error> {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if reg.iter().any(|(t, p)| *t == target.0 && p == dir) {
            return Ok(());
        }
        let mut next = reg.clone();
        next.retain(|(_, p)| p != dir);
        next.push((target.0, dir.to_path_buf()));
        write_durably(&self.path, DISK_FILE, &render(self.id, &next))?;
        *reg = next;
        Ok(())
    }

    /// Checks the registry against the target directories configured on this disk: a registered
    /// directory that is not configured is refused while it exists, and dropped once it is gone.
    fn check_registry(&self, configured: &HashSet<PathBuf>) -> Result<(), Error> {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let (mut keep, mut dropped) = (Vec::new(), false);
        for (t, p) in reg.iter() {
            if configured.contains(p) {
                keep.push((*t, p.clone()));
            } else if p.exists() {
                return Err(Error::invalid(format!(
                    "target {t} at {} keeps data in the engine of disk {} ({}) but is not configured on it; \
                     configure it again, or delete its directory to drop its data",
                    p.display(),
                    self.index,
                    self.path.display()
                )));
            } else {
                tracing::warn!(target_id = t, dir = %p.display(), disk = self.index,
                    "registered target directory is gone; its slots are released");
                dropped = true;
            }
        }
        if dropped {
            write_durably(&self.path, DISK_FILE, &render(self.id, &keep))?;
            *reg = keep;
        }
        Ok(())
    }
}

fn render(id: u64, registry: &[(u64, PathBuf)]) -> String {
    let mut s = format!("{DISK_PREFIX}\nid {id:016x}\n");
    for (t, p) in registry {
        s.push_str(&format!("target {t} {}\n", p.display()));
    }
    s
}

fn parse(text: &str) -> Option<(u64, Vec<(u64, PathBuf)>)> {
    let mut lines = text.lines();
    if lines.next()?.trim() != DISK_PREFIX {
        return None;
    }
    let id = u64::from_str_radix(lines.next()?.trim().strip_prefix("id ")?, 16).ok()?;
    let mut registry = Vec::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let (t, p) = l.strip_prefix("target ")?.split_once(' ')?;
        registry.push((t.parse().ok()?, PathBuf::from(p)));
    }
    Some((id, registry))
}

/// A random id (std's randomly seeded hasher over the time and the process id; no dependency needed).
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

/// Opens every configured target (module note): begin all, seal the shared engines, finish all.
pub fn open_stores(config: &Config, options: EngineOptions) -> Result<Vec<(TargetId, ChunkStore, OpenReport)>, Error> {
    let mut disks = HashMap::new();
    for d in &config.disks {
        let disk = Disk::open(d.index, &d.path, options)?;
        let configured = config.targets.iter().filter(|t| t.disk == Some(d.index)).map(|t| t.path.clone()).collect();
        disk.check_registry(&configured)?;
        disks.insert(d.index, disk);
    }
    let mut opening = Vec::new();
    for t in &config.targets {
        let choice = match t.disk.and_then(|i| disks.get(&i)) {
            Some(disk) => EngineChoice::Shared(disk.clone()),
            None => EngineChoice::Private(options),
        };
        let o = ChunkStore::begin_open(TargetId(t.id), &t.path, &choice).map_err(|e| {
            Error::new(e.code, format!("opening target {} at {}: {}", t.id, t.path.display(), e.message))
        })?;
        opening.push((TargetId(t.id), o));
    }
    for disk in disks.values() {
        disk.engine().seal();
        tracing::info!(
            disk = disk.index(),
            targets = disk.engine().owners(),
            direct_io = disk.engine().direct_io(),
            "shared chunk engine ready"
        );
    }
    let mut out = Vec::new();
    for (id, o) in opening {
        let (store, report) = o.finish()?;
        out.push((id, store, report));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
