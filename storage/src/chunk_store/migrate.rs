//! Target directory formats, and the migration of a file-per-chunk target into the chunk engine.
//!
//! - format 1: no `FORMAT` file; chunk contents in `chunks/<fan-out>/<32 hex id>.<16 hex version>[.<8 hex
//!   generation>]`, records of formats 1-3 naming them by version and generation;
//! - format 2: `FORMAT` holds `t3fs-target 2`; contents in slots of the target's private engine
//!   (`engine/`), format 4 records;
//! - format 3: `FORMAT` holds `t3fs-target 3` and a line `disk <16 hex id>`; contents in slots of the
//!   shared engine of the disk with that id (`crate::disk`), format 4 records; no `engine/` directory.
//!
//! [`check_format`] reads the format (`meta/` or `chunks/` without `FORMAT` is format 1) and refuses any
//! other with a clear error. A new directory becomes format 2 or 3, as its configuration says, when its
//! open finishes ([`finish`]); a format 2 directory stays format 2 (its private engine keeps working). Migrating format 1, at open, is
//! crash-safe at every step: each live chunk's file is read and verified against its record's CRC, written
//! into a fresh engine slot and synced, and only then is its record rewritten as format 4 naming the slot
//! (one durable commit per chunk). A crash leaves each chunk either still in its file (imported again by the
//! next open; the half-written slot is free, as allocation is derived from the records) or in its slot.
//! When every chunk is in the engine, `FORMAT` is written (temporary file, fsync, rename, fsync of the
//! directory) and only then is `chunks/` deleted; a format 2 directory that still has a `chunks/` left by a
//! crash during that deletion gets it deleted by the next open. A chunk whose file is missing or does not
//! match its record's CRC is not imported: it keeps its old record and is reported damaged (reads fail with
//! ChecksumMismatch; resync or `t3fs admin` repair replaces it).
use std::fs;
use std::path::{Path, PathBuf};

use t3fs_common::{ChunkId, Error, StatusCode};

use super::record::{BlockCrcs, Record, crc_block_size};
use super::{ChunkStore, io_err, kv_err};
use crate::engine::Slot;

/// The file naming the format of a target directory.
pub const FORMAT_FILE: &str = "FORMAT";
/// The format of a target with a private engine.
pub const PRIVATE_FORMAT: u32 = 2;
/// The format of a target in a disk's shared engine.
pub const SHARED_FORMAT: u32 = 3;
const FORMAT_PREFIX: &str = "t3fs-target ";
const OLD_CHUNKS_DIR: &str = "chunks";

/// What [`check_format`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A new directory.
    New,
    /// Format 1, to migrate.
    FilePerChunk,
    /// Format 2: a private engine.
    Engine,
    /// Format 3: the shared engine of the disk with this id.
    Shared(u64),
}

/// Reads the format of the target directory `path` (creating the directory if needed).
pub fn check_format(path: &Path) -> Result<Layout, Error> {
    fs::create_dir_all(path).map_err(io_err(format!("creating {}", path.display())))?;
    let file = path.join(FORMAT_FILE);
    match fs::read_to_string(&file) {
        Ok(s) => {
            let mut lines = s.lines().map(str::trim);
            let version = lines.next().and_then(|l| l.strip_prefix(FORMAT_PREFIX)).and_then(|v| v.parse::<u32>().ok());
            let disk =
                lines.next().and_then(|l| l.strip_prefix("disk ")).and_then(|id| u64::from_str_radix(id, 16).ok());
            match (version, disk) {
                (Some(PRIVATE_FORMAT), _) => Ok(Layout::Engine),
                (Some(SHARED_FORMAT), Some(id)) => Ok(Layout::Shared(id)),
                (Some(v), _) if v != SHARED_FORMAT => Err(Error::new(
                    StatusCode::Unsupported,
                    format!(
                        "target directory {} has format {v}; this binary reads formats {PRIVATE_FORMAT} and \
                         {SHARED_FORMAT} (and migrates format 1)",
                        path.display()
                    ),
                )),
                _ => Err(Error::new(
                    StatusCode::Unsupported,
                    format!("{}: not a t3fs target format file ({:?})", file.display(), s.trim()),
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let old = path.join(OLD_CHUNKS_DIR).exists() || path.join(super::META_DIR).exists();
            Ok(if old { Layout::FilePerChunk } else { Layout::New })
        }
        Err(e) => Err(Error::io(&format!("reading {}", file.display()), e)),
    }
}

/// After the chunks are in the engine: records the format durably (format 3 naming `disk` when the target
/// uses a shared engine, else format 2) unless the directory already had one, then deletes the old
/// layout's chunk files.
pub fn finish(path: &Path, layout: Layout, disk: Option<u64>) -> Result<(), Error> {
    if matches!(layout, Layout::New | Layout::FilePerChunk) {
        let text = match disk {
            Some(id) => format!("{FORMAT_PREFIX}{SHARED_FORMAT}\ndisk {id:016x}\n"),
            None => format!("{FORMAT_PREFIX}{PRIVATE_FORMAT}\n"),
        };
        write_durably(path, FORMAT_FILE, &text)?;
    }
    let old = path.join(OLD_CHUNKS_DIR);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(format!("removing {}", old.display())))?;
        tracing::info!(dir = %old.display(), "removed the file-per-chunk layout's files");
    }
    Ok(())
}

/// Replaces `dir/name` with `text` atomically and durably (temporary file, fsync, rename, fsync of `dir`).
pub(crate) fn write_durably(dir: &Path, name: &str, text: &str) -> Result<(), Error> {
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        fs::write(&tmp, text)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(io_err(format!("writing {}", dir.join(name).display())))
}

/// The data file of a chunk version in format 1.
fn old_path(dir: &Path, chunk: ChunkId, version: u64, file_gen: u32) -> PathBuf {
    let id = chunk.to_bytes();
    let fan = crc32c::crc32c(&id) as u8;
    let name = match file_gen {
        0 => format!("{}.{version:016x}", hex::encode(id)),
        g => format!("{}.{version:016x}.{g:08x}", hex::encode(id)),
    };
    dir.join(OLD_CHUNKS_DIR).join(format!("{fan:02x}")).join(name)
}

impl ChunkStore {
    /// Imports every chunk still in a format 1 file (module note); returns how many were imported.
    pub(super) fn migrate_files(&self) -> Result<usize, Error> {
        let mut imported = 0;
        for (chunk, head) in self.records()? {
            if head.slot.is_some() {
                continue;
            }
            let rec = self.record(chunk)?.expect("listed records exist");
            let new = if rec.removed || rec.meta.length == 0 {
                Record {
                    file_gen: 0,
                    slot: None,
                    blocks: Some(BlockCrcs { block_size: crc_block_size(0), crcs: vec![] }),
                    ..rec
                }
            } else {
                let p = old_path(&self.inner.dir, chunk, rec.meta.version, rec.file_gen);
                let data = match fs::read(&p) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(target_id = self.inner.target.0, %chunk, file = %p.display(), error = %e,
                            "migration: chunk file unreadable; chunk left damaged");
                        continue;
                    }
                };
                let (blocks, crc) = BlockCrcs::compute(&data, crc_block_size(data.len()));
                if data.len() != rec.meta.length as usize || crc != rec.meta.crc32c {
                    tracing::error!(target_id = self.inner.target.0, %chunk, file = %p.display(), meta = ?rec.meta,
                        len = data.len(), crc, "migration: chunk file does not match its record; chunk left damaged");
                    continue;
                }
                let slot = self.engine().allocate(rec.meta.length)?;
                if let Err(e) = self.engine().write(slot, &data) {
                    self.engine().free(slot);
                    return Err(e);
                }
                imported += 1;
                Record { file_gen: 0, slot: Some(Slot::encode(slot)), blocks: Some(blocks), ..rec }
            };
            self.with_db(|db| {
                db.metas.insert(chunk.to_bytes(), new.encode()).map_err(kv_err)?;
                db.db.persist(fjall::PersistMode::SyncAll).map_err(kv_err)
            })?;
        }
        if imported > 0 {
            tracing::info!(target_id = self.inner.target.0, imported, "migrated chunk files into the chunk engine");
        }
        Ok(imported)
    }
}
