//! The size-class chunk engine of one disk: chunk contents live in fixed-size *slots* of large data
//! files, one set of files per size class. The chunk store (`crate::chunk_store`) owns the metadata
//! (fjall records naming each chunk version's slot); this module owns the data files and the allocation.
//!
//! **Layout.** `<engine dir>/<class>/<group>` (`<disk>/engine` for a shared engine, `<target>/engine` for a
//! private one): size classes are the powers of two from 64 KiB
//! ([`MIN_CLASS_SHIFT`]) to 64 MiB ([`MAX_CLASS_SHIFT`]), directory names `64K` … `64M`; a chunk of
//! `length` bytes takes a slot of the smallest class that holds it ([`class_for`]). Each *group* file
//! (`00000000`, `00000001`, … 8 hex digits) holds [`slots_per_group`] slots of its class back to back
//! (16 MiB of 64 KiB slots … 64 MiB of one 64 MiB slot, 256 slots at most): slot `i` is bytes
//! `[i * size, (i + 1) * size)`. A group file is created at its full length (sparse, `set_len`, plus
//! `posix_fallocate` when [`EngineOptions::preallocate`] is on), made durable with its directory entry,
//! and never shrinks. Without `preallocate`, the blocks of a slot that stays free are given back to
//! the file system by [`Engine::trim`] (a hole punched), which the storage server runs periodically.
//! A slot is named by [`Slot`] (class, group, index), stored in the chunk's record as one u64
//! ([`Slot::encode`]).
//!
//! **Sharing.** One engine serves every target of a storage process that is configured on one disk
//! (`crate::disk`), or a single target (a private engine in `<target>/engine`). Each target registers
//! with [`Engine::attach`], marking the slots its records reference; [`Engine::seal`] ends registration.
//! Allocation is refused until the engine is sealed, and attaching after the seal is refused: so every
//! slot any target references is marked before any slot is handed out, and a slot one target references
//! is never allocated to another. A slot referenced twice (by two records of one target, or by two
//! targets) is a *conflict*: the second reference is reported invalid (its chunk is damaged), and the
//! slot is never freed until the next open, so neither referrer can cause it to be reused under the other.
//!
//! **Allocation.** One bitmap per group (`used` bits), in memory only. It is *derived*: the attaches mark
//! exactly the slots that committed or pending records reference, so a slot written by an update
//! that crashed before its metadata commit, or an old version's slot whose free never ran, is free again
//! after a restart: no leak survives a reopen, with nothing to keep consistent on disk. A free slot is
//! found by scanning the class's groups in order for a zero bit (`trailing_ones`); if all are full a new
//! group file is created.
//!
//! **Copy-on-write and readers.** An update writes the new content into a freshly allocated slot
//! ([`Engine::write`]: `pwrite` then `fdatasync`) before the record switch; the old slot is freed with
//! [`Engine::free`] only after the new record is durable. A reader looks the record up and *pins* its slot
//! while holding [`Engine::read_gate`] shared; `free` takes the gate exclusively, so a slot a reader found
//! through a record is either pinned before the free (the free is then deferred to the last unpin,
//! [`SlotPin`]'s drop) or the reader already sees the new record. A freed slot is therefore never reused
//! while someone may still read it. Pins and the gate are engine-wide, so this holds across the targets
//! of a shared engine.
//!
//! **I/O.** With [`EngineOptions::direct_io`] (the default) group files are opened with O_DIRECT: writes
//! go from a 4 KiB-aligned buffer ([`aligned::AlignedBuf`]) padded with zeros to a multiple of 4 KiB (the
//! record keeps the real length; slots are at least 64 KiB and aligned, so the padding stays inside the
//! slot), and reads cover the 4 KiB-aligned range around what is asked ([`Engine::read_bytes`]; CRC
//! blocks, 4–64 KiB, are already aligned). If the engine directory's file system refuses O_DIRECT (EINVAL, e.g. tmpfs)
//! the engine logs one warning and uses buffered `pread`/`pwrite`. Either way every write is followed by
//! `fdatasync` before its record commits. O_DIRECT bypasses the page cache: hot chunks are read from the
//! device every time (docs/storage.md).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use t3fs_common::{Error, StatusCode};

pub mod aligned;
pub mod space;

use aligned::{ALIGN, AlignedBuf, align_up};
pub use space::Claim;

/// Smallest size class: 64 KiB.
pub const MIN_CLASS_SHIFT: u8 = 16;
/// Largest size class: 64 MiB (the largest chunk).
pub const MAX_CLASS_SHIFT: u8 = 26;
/// Group files hold about this many bytes (at least one slot, at most [`MAX_SLOTS`]).
const GROUP_BYTES: u64 = 64 << 20;
/// Most slots in one group (the bitmap is 4 × u64).
const MAX_SLOTS: u32 = 256;

/// Options of an engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Reserve every new group file's blocks with `posix_fallocate` (else the file is sparse and blocks
    /// are allocated by the first write of each slot).
    pub preallocate: bool,
    /// O_DIRECT slot I/O (falls back to buffered I/O where the file system refuses it).
    pub direct_io: bool,
    /// Free space kept for removals and recovery ([`space`]): client writes are refused below it.
    /// `None`: [`t3fs_common::space::reserve_of`]'s default (2% of the file system, at least 256 MiB).
    pub reserved_bytes: Option<u64>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { preallocate: false, direct_io: true, reserved_bytes: None }
    }
}

/// How often the storage server runs [`Engine::trim`] by default (`trim_interval_ms`): a slot that
/// stays free is punched within two intervals.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Most slots one trim pass punches.
pub const TRIM_MAX_SLOTS: usize = 16_384;

/// Where one chunk version's content lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    /// log2 of the slot size, [`MIN_CLASS_SHIFT`]..=[`MAX_CLASS_SHIFT`].
    pub class: u8,
    pub group: u32,
    pub index: u16,
}

impl Slot {
    /// `class << 48 | group << 16 | index`; never 0 (class >= 16).
    pub fn encode(self) -> u64 {
        u64::from(self.class) << 48 | u64::from(self.group) << 16 | u64::from(self.index)
    }

    /// The inverse of [`Slot::encode`]; `None` for anything it cannot produce.
    pub fn decode(v: u64) -> Option<Self> {
        let class = (v >> 48) as u16;
        if !(u16::from(MIN_CLASS_SHIFT)..=u16::from(MAX_CLASS_SHIFT)).contains(&class) {
            return None;
        }
        let slot = Self { class: class as u8, group: (v >> 16) as u32, index: v as u16 };
        (u32::from(slot.index) < slots_per_group(slot.class)).then_some(slot)
    }

    /// Bytes in the slot.
    pub fn size(self) -> u64 {
        1 << self.class
    }

    /// Byte offset of the slot in its group file.
    pub fn offset(self) -> u64 {
        u64::from(self.index) * self.size()
    }
}

/// The size class (log2 of the slot size) for a chunk of `length` bytes (<= 64 MiB).
pub fn class_for(length: u32) -> u8 {
    let shift = length.max(1).next_power_of_two().trailing_zeros() as u8;
    shift.clamp(MIN_CLASS_SHIFT, MAX_CLASS_SHIFT)
}

/// Slots in one group file of `class`.
pub fn slots_per_group(class: u8) -> u32 {
    (GROUP_BYTES >> class).clamp(1, u64::from(MAX_SLOTS)) as u32
}

fn class_dir_name(class: u8) -> String {
    if class >= 20 { format!("{}M", 1u32 << (class - 20)) } else { format!("{}K", 1u32 << (class - 10)) }
}

struct Group {
    file: Arc<File>,
    bits: [u64; 4],
    used: u32,
    /// Free slots whose blocks may still be allocated in the file ([`Engine::trim`]).
    dirty: [u64; 4],
    /// The free dirty slots as the previous trim pass saw them: punched by the next pass if still so.
    aged: [u64; 4],
}

impl Group {
    /// A group with no used and no dirty slot.
    fn new(file: File) -> Self {
        Group { file: Arc::new(file), bits: [0; 4], used: 0, dirty: [0; 4], aged: [0; 4] }
    }

    fn is_set(&self, i: u16) -> bool {
        self.bits[usize::from(i / 64)] >> (i % 64) & 1 == 1
    }

    fn is_dirty(&self, i: u16) -> bool {
        self.dirty[usize::from(i / 64)] >> (i % 64) & 1 == 1
    }

    /// The slot's blocks were punched out.
    fn set_clean(&mut self, i: u16) {
        let (w, b) = (usize::from(i / 64), i % 64);
        self.dirty[w] &= !(1 << b);
        self.aged[w] &= !(1 << b);
    }

    /// Marks the slot used (no longer a trim candidate) or free (dirty: its blocks are allocated).
    fn set(&mut self, i: u16, on: bool) {
        let (w, b) = (usize::from(i / 64), i % 64);
        if on {
            self.bits[w] |= 1 << b;
            self.used += 1;
            self.dirty[w] &= !(1 << b);
            self.aged[w] &= !(1 << b);
        } else {
            self.bits[w] &= !(1 << b);
            self.used -= 1;
            self.dirty[w] |= 1 << b;
        }
    }
}

#[derive(Default)]
struct State {
    groups: BTreeMap<(u8, u32), Group>,
    /// Owners (target ids) attached so far.
    owners: HashSet<u64>,
    /// Set by [`Engine::seal`]: allocation allowed, attaching refused.
    sealed: bool,
    /// Slots referenced more than once at attach: never freed (module note).
    conflicts: HashSet<Slot>,
    /// Readers per pinned slot.
    pins: HashMap<Slot, u32>,
    /// Freed while pinned: cleared by the last unpin.
    deferred: HashSet<Slot>,
    /// New blocks promised to client writes whose slot is allocated but not yet synced ([`space`]).
    unsynced: HashMap<Slot, u64>,
    /// The sum of `unsynced`.
    unsynced_bytes: u64,
}

impl State {
    /// Forgets what `slot` was promised (synced, or freed).
    fn settle(&mut self, slot: Slot) {
        if let Some(n) = self.unsynced.remove(&slot) {
            self.unsynced_bytes -= n;
        }
    }
}

/// The data files of one disk (or one target). See the module note.
pub struct Engine {
    dir: PathBuf,
    options: EngineOptions,
    /// Whether group files are opened with O_DIRECT (the option, unless the file system refused it).
    direct: bool,
    state: Mutex<State>,
    gate: RwLock<()>,
    /// `<dir>/LOCK`, held (flock, exclusive) from the open until the last attached owner detaches.
    lock: Mutex<Option<fs::File>>,
    /// [`Engine::trim`] punches free slots out of their group files (off with `preallocate`, or once
    /// the file system refused).
    punch: AtomicBool,
    /// The free-space reserve of the engine's file system.
    space: space::Space,
    /// Tests: every slot write fails with this errno.
    #[cfg(test)]
    inject_errno: Mutex<Option<i32>>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(&context, e)
}

/// Takes `<dir>/LOCK` (an exclusive `flock`, released when the file is closed, also by a crash): two
/// engines over one directory would hand out the same slots. The target's fjall database has its own
/// lock, but a shared disk's engine belongs to no single target: without this, a second storage
/// process configured with the same disk directory could allocate from it too.
fn lock_dir(dir: &Path) -> Result<fs::File, Error> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::new(
            StatusCode::Busy,
            format!(
                "chunk engine {} is in use by another storage process (it holds {})",
                dir.display(),
                path.display()
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&format!("locking {}", path.display()), e)),
    }
}

impl Engine {
    /// Opens (creating) the engine directory `dir` with no owner attached; allocation is refused until
    /// every owner has attached and [`Engine::seal`] is called.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Arc<Self>, Error> {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let direct = options.direct_io && {
            let ok = aligned::probe_direct(dir).map_err(io(format!("probing O_DIRECT in {}", dir.display())))?;
            if !ok {
                tracing::warn!(dir = %dir.display(), "file system refuses O_DIRECT; chunk engine uses buffered I/O");
            }
            ok
        };
        let mut state = State::default();
        for class in MIN_CLASS_SHIFT..=MAX_CLASS_SHIFT {
            let cdir = dir.join(class_dir_name(class));
            if !cdir.is_dir() {
                continue;
            }
            for e in fs::read_dir(&cdir).map_err(io(format!("listing {}", cdir.display())))? {
                let p = e.map_err(io(format!("listing {}", cdir.display())))?.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let Some(group) = (name.len() == 8).then(|| u32::from_str_radix(name, 16).ok()).flatten() else {
                    tracing::warn!(file = %p.display(), "unknown file in engine directory, left alone");
                    continue;
                };
                let file = aligned::open_rw(&p, direct, false).map_err(io(format!("opening {}", p.display())))?;
                // A crash while a group was being created may leave it short: restore its length.
                let want = u64::from(slots_per_group(class)) << class;
                let len = file.metadata().map_err(io(format!("stat {}", p.display())))?.len();
                if len < want {
                    file.set_len(want).and_then(|_| file.sync_all()).map_err(io(format!("sizing {}", p.display())))?;
                }
                let mut g = Group::new(file);
                // Free slots that hold blocks (from before this open) are what trim gives back.
                g.dirty = data_slots(&g.file, class).unwrap_or_else(|e| {
                    tracing::debug!(file = %p.display(), error = %e, "cannot map the file's data; every slot counts");
                    [u64::MAX; 4]
                });
                state.groups.insert((class, group), g);
            }
        }
        let engine = Self {
            dir: dir.to_path_buf(),
            options,
            direct,
            state: Mutex::new(state),
            gate: RwLock::new(()),
            lock: Mutex::new(Some(lock)),
            punch: AtomicBool::new(!options.preallocate),
            space: space::Space::new(dir, options.reserved_bytes),
            #[cfg(test)]
            inject_errno: Mutex::new(None),
        };
        Ok(Arc::new(engine))
    }

    /// [`Engine::open`], [`Engine::attach`] of one owner and [`Engine::seal`]: a private engine.
    pub fn open_single(
        dir: &Path,
        options: EngineOptions,
        owner: u64,
        referenced: &[Slot],
    ) -> Result<(Arc<Self>, Vec<Slot>), Error> {
        let engine = Self::open(dir, options)?;
        let invalid = engine.attach(owner, referenced)?;
        engine.seal();
        Ok((engine, invalid))
    }

    /// Registers `owner` (a target id), marking the slots its records reference used. Returns the
    /// referenced slots that cannot be valid (group file missing, or already marked by this or another
    /// owner): the caller treats their chunks as damaged. Refused once the engine is sealed or if `owner`
    /// is already attached.
    pub fn attach(&self, owner: u64, referenced: &[Slot]) -> Result<Vec<Slot>, Error> {
        let mut st = self.state();
        if st.sealed {
            return Err(Error::internal(format!(
                "chunk engine {}: target {owner} attached after allocation began",
                self.dir.display()
            )));
        }
        if !st.owners.insert(owner) {
            return Err(Error::internal(format!("chunk engine {}: target {owner} attached twice", self.dir.display())));
        }
        let (mut invalid, mut conflicts) = (Vec::new(), 0);
        for &slot in referenced {
            match st.groups.get_mut(&(slot.class, slot.group)) {
                Some(g) if !g.is_set(slot.index) => g.set(slot.index, true),
                Some(_) => {
                    st.conflicts.insert(slot);
                    invalid.push(slot);
                    conflicts += 1;
                }
                None => invalid.push(slot),
            }
        }
        if conflicts > 0 {
            tracing::error!(dir = %self.dir.display(), owner, conflicts,
                "chunk engine: slots already referenced by another record; kept allocated until the next open");
        }
        Ok(invalid)
    }

    /// Ends registration: allocation is allowed from now on, attaching refused.
    pub fn seal(&self) {
        self.state().sealed = true;
    }

    /// `owner`'s target was closed. When no owner is left, the directory's lock is released (so the
    /// engine can be opened again, by this process or another); this engine must not be used after.
    pub fn detach(&self, owner: u64) {
        let mut st = self.state();
        st.owners.remove(&owner);
        if st.owners.is_empty() {
            drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
    }

    /// The targets attached.
    pub fn owners(&self) -> usize {
        self.state().owners.len()
    }

    /// The engine directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether slot I/O uses O_DIRECT.
    pub fn direct_io(&self) -> bool {
        self.direct
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path of a group file.
    pub fn group_path(&self, class: u8, group: u32) -> PathBuf {
        self.dir.join(class_dir_name(class)).join(format!("{group:08x}"))
    }

    /// Takes a free slot for a chunk of `length` bytes, creating a group file if its class is full.
    /// Never refused for space ([`Claim::Reserve`]).
    pub fn allocate(&self, length: u32) -> Result<Slot, Error> {
        self.allocate_for(length, Claim::Reserve)
    }

    /// [`Engine::allocate`] for `claim`: a [`Claim::Client`] allocation that needs new blocks is
    /// refused with `NoSpace` when they would come out of the reserve ([`space`]), unless a free slot
    /// that still holds blocks can take the chunk.
    pub fn allocate_for(&self, length: u32, claim: Claim) -> Result<Slot, Error> {
        let class = class_for(length);
        let mut st = self.state();
        if !st.sealed {
            return Err(Error::unavailable(format!(
                "chunk engine {}: not every target of the disk has opened yet",
                self.dir.display()
            )));
        }
        let slots = slots_per_group(class);
        let groups = || st.groups.range((class, 0)..=(class, u32::MAX));
        let next_group = groups().next_back().map_or(0, |(&(_, g), _)| g + 1);
        // The lowest free slot of the class, if any group has one.
        let mut pick = groups().find(|(_, g)| g.used < slots).map(|(&(_, group), g)| {
            let index = (0..4)
                .filter(|&w| g.bits[w] != u64::MAX)
                .map(|w| w as u32 * 64 + g.bits[w].trailing_ones())
                .find(|&i| i < slots)
                .expect("a group with used < slots has a free bit") as u16;
            (group, index, g.is_dirty(index))
        });
        let need = match pick {
            Some((_, _, dirty)) if dirty || self.options.preallocate => 0,
            None if self.options.preallocate => u64::from(slots) << class,
            _ => align_up(length as usize) as u64,
        };
        let mut promised = need;
        if claim == Claim::Client
            && need > 0
            && let Err(e) = self.space.check(need, st.unsynced_bytes)
        {
            // A free slot that still holds blocks (freed since the last trim) needs none.
            pick = Some(dirty_free_slot(&st, class).ok_or(e)?);
            promised = 0;
        }
        let slot = match pick {
            Some((group, index, _)) => {
                st.groups.get_mut(&(class, group)).expect("picked from the map").set(index, true);
                Slot { class, group, index }
            }
            None => {
                let file = self.create_group(class, next_group)?;
                let mut g = Group::new(file);
                g.set(0, true);
                st.groups.insert((class, next_group), g);
                Slot { class, group: next_group, index: 0 }
            }
        };
        if claim == Claim::Client && promised > 0 {
            st.unsynced.insert(slot, promised);
            st.unsynced_bytes += promised;
        }
        Ok(slot)
    }

    /// Free bytes of the engine's file system left for client writes (less the reserve and what
    /// unsynced writes were promised) and its total bytes; `None` when it cannot be measured.
    pub fn client_space(&self) -> Option<(u64, u64)> {
        let in_flight = self.state().unsynced_bytes;
        self.space.for_clients(in_flight)
    }

    /// Makes every slot write fail with `errno` (`None`: stop) (tests).
    #[cfg(test)]
    pub fn inject_write_errno(&self, errno: Option<i32>) {
        *self.inject_errno.lock().unwrap_or_else(|p| p.into_inner()) = errno;
    }

    /// Replaces how the engine measures its file system's free and total bytes (tests).
    #[cfg(test)]
    pub fn set_space_probe(&self, probe: impl Fn() -> Option<(u64, u64)> + Send + Sync + 'static) {
        self.space.set_probe(Box::new(probe));
    }

    fn create_group(&self, class: u8, group: u32) -> Result<File, Error> {
        let p = self.group_path(class, group);
        let cdir = p.parent().expect("group paths have a parent").to_path_buf();
        if !cdir.is_dir() {
            fs::create_dir_all(&cdir).map_err(io(format!("creating {}", cdir.display())))?;
            sync_dir(&self.dir)?;
        }
        let file = aligned::open_rw(&p, self.direct, true).map_err(io(format!("creating {}", p.display())))?;
        let len = u64::from(slots_per_group(class)) << class;
        file.set_len(len).map_err(io(format!("sizing {}", p.display())))?;
        if self.options.preallocate {
            preallocate(&file, len).map_err(io(format!("fallocate {}", p.display())))?;
        }
        file.sync_all().map_err(io(format!("syncing {}", p.display())))?;
        sync_dir(&cdir)?;
        tracing::debug!(file = %p.display(), "created group file");
        Ok(file)
    }

    fn file(&self, slot: Slot) -> Result<Arc<File>, Error> {
        self.state().groups.get(&(slot.class, slot.group)).map(|g| g.file.clone()).ok_or_else(|| {
            Error::new(StatusCode::ChecksumMismatch, format!("slot {slot:?}: data missing (no such group)"))
        })
    }

    /// Writes `data` (at most the slot's size) at the start of `slot` and syncs it (`fdatasync`).
    pub fn write(&self, slot: Slot, data: &[u8]) -> Result<(), Error> {
        self.write_unsynced(slot, data)?;
        self.sync(slot)
    }

    /// Writes without syncing (the failpoint tests stop between the write and the sync). With O_DIRECT
    /// the data is copied into an aligned buffer padded with zeros to a multiple of 4 KiB.
    pub fn write_unsynced(&self, slot: Slot, data: &[u8]) -> Result<(), Error> {
        if !self.direct {
            assert!(data.len() as u64 <= slot.size(), "chunk data larger than its slot");
            return self.file(slot)?.write_all_at(data, slot.offset()).map_err(io(format!("writing slot {slot:?}")));
        }
        let mut buf = AlignedBuf::zeroed(align_up(data.len()));
        buf[..data.len()].copy_from_slice(data);
        self.write_aligned_unsynced(slot, &buf, data.len())
    }

    /// Writes the first `len` bytes of `buf` (which holds zeros from `len` to the next multiple of 4 KiB)
    /// without syncing and without a copy: with O_DIRECT the padded length, else `len` bytes.
    pub fn write_aligned_unsynced(&self, slot: Slot, buf: &AlignedBuf, len: usize) -> Result<(), Error> {
        let padded = align_up(len);
        assert!(padded as u64 <= slot.size() && buf.len() >= padded, "chunk data larger than its slot or buffer");
        let data = if self.direct { &buf[..padded] } else { &buf[..len] };
        #[cfg(test)]
        if let Some(errno) = *self.inject_errno.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(Error::io(&format!("writing slot {slot:?}"), std::io::Error::from_raw_os_error(errno)));
        }
        self.file(slot)?.write_all_at(data, slot.offset()).map_err(io(format!("writing slot {slot:?}")))
    }

    /// `fdatasync` of the slot's group file.
    pub fn sync(&self, slot: Slot) -> Result<(), Error> {
        let res = self.file(slot).and_then(|f| f.sync_data().map_err(io(format!("syncing slot {slot:?}"))));
        // Written and synced (or failed, and about to be freed): the file system's own free space
        // counts it from now on.
        self.state().settle(slot);
        res
    }

    /// Bytes `[offset, offset + len)` of `slot`. With O_DIRECT the 4 KiB-aligned range around them is
    /// read into an aligned buffer, which the returned `Bytes` shares (no copy).
    pub fn read_bytes(&self, slot: Slot, offset: u64, len: usize) -> Result<Bytes, Error> {
        assert!(offset + len as u64 <= slot.size(), "read beyond the slot");
        let file = self.file(slot)?;
        let ctx = || format!("reading slot {slot:?}");
        if !self.direct {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, slot.offset() + offset).map_err(io(ctx()))?;
            return Ok(Bytes::from(buf));
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        let from = offset / ALIGN as u64 * ALIGN as u64;
        // The slot size is a multiple of ALIGN, so the aligned end stays inside the slot.
        let to = align_up((offset + len as u64) as usize) as u64;
        let mut buf = AlignedBuf::zeroed((to - from) as usize);
        file.read_exact_at(&mut buf, slot.offset() + from).map_err(io(ctx()))?;
        let skip = (offset - from) as usize;
        Ok(buf.into_bytes().slice(skip..skip + len))
    }

    /// Fills `buf` from byte `offset` of `slot`.
    pub fn read(&self, slot: Slot, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let data = self.read_bytes(slot, offset, buf.len())?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    /// Held shared while a reader looks up a record and pins its slot (see the module note).
    pub fn read_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `slot` for a reader (call under [`Engine::read_gate`]): it is not reused until the pin drops.
    pub fn pin(self: &Arc<Self>, slot: Slot) -> SlotPin {
        *self.state().pins.entry(slot).or_insert(0) += 1;
        SlotPin { engine: self.clone(), slot }
    }

    /// Frees `slot` (after the record switch that dropped it is durable); deferred while readers pin it.
    pub fn free(&self, slot: Slot) {
        let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut st = self.state();
        st.settle(slot);
        if st.conflicts.contains(&slot) {
            tracing::warn!(?slot, "not freeing a slot referenced more than once");
        } else if st.pins.contains_key(&slot) {
            st.deferred.insert(slot);
        } else {
            clear(&mut st, slot);
        }
    }

    /// Gives the blocks of slots that have stayed free since the previous call back to the file
    /// system (a hole punched over each, at most `max` of them) and returns the bytes released, so
    /// deleted data becomes free space on the host (`df`) and in the cluster's `statfs`. A slot freed
    /// and allocated again between two calls is left alone: a steady overwrite load reuses its freed
    /// slots at once and pays nothing (punching on every free cost a third of synced overwrite
    /// throughput: docs/benchmarks.md). Nothing is punched with `preallocate` (the blocks are meant to
    /// stay reserved) or once the file system refused. Each punch runs with the state locked, so the
    /// slot cannot be handed out while its hole is made. The storage server calls this every
    /// `trim_interval_ms` ([`TRIM_INTERVAL`] by default); after a restart, the free slots of an existing group file that hold blocks
    /// count as freed. The figure returned counts whole slots.
    pub fn trim(&self, max: usize) -> u64 {
        if !self.punch.load(Ordering::Relaxed) {
            return 0;
        }
        let due: Vec<Slot> = {
            let mut st = self.state();
            let mut due = Vec::new();
            for (&(class, group), g) in st.groups.iter_mut() {
                let slots = slots_per_group(class);
                for w in 0..4 {
                    let mut bits = g.aged[w] & g.dirty[w] & !g.bits[w];
                    while bits != 0 && due.len() < max {
                        let index = w as u32 * 64 + bits.trailing_zeros();
                        bits &= bits - 1;
                        if index < slots {
                            due.push(Slot { class, group, index: index as u16 });
                        }
                    }
                    g.aged[w] = g.dirty[w] & !g.bits[w];
                }
            }
            due
        };
        let mut released = 0;
        for slot in due {
            let mut st = self.state();
            if self.lock.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                // Detached (every target closed): another engine may own the directory now.
                break;
            }
            let Some(g) = st.groups.get_mut(&(slot.class, slot.group)) else { continue };
            if g.is_set(slot.index) || !g.is_dirty(slot.index) {
                continue;
            }
            match punch_hole(&g.file, slot.offset(), slot.size()) {
                Ok(()) => {
                    g.set_clean(slot.index);
                    released += slot.size();
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                    self.punch.store(false, Ordering::Relaxed);
                    tracing::warn!(dir = %self.dir.display(), "file system cannot punch holes: freed chunk space stays allocated");
                    break;
                }
                Err(e) => tracing::warn!(?slot, error = %e, "punching a free slot failed; retried next pass"),
            }
        }
        released
    }

    /// Every used slot, in order (tests, leak checks).
    pub fn allocated(&self) -> Vec<Slot> {
        let st = self.state();
        let mut out = Vec::new();
        for (&(class, group), g) in &st.groups {
            for index in 0..slots_per_group(class) as u16 {
                if g.is_set(index) {
                    out.push(Slot { class, group, index });
                }
            }
        }
        out
    }

    /// Bytes of used slots and bytes of all group files.
    pub fn space(&self) -> (u64, u64) {
        let st = self.state();
        st.groups.iter().fold((0, 0), |(used, total), (&(class, _), g)| {
            (used + (u64::from(g.used) << class), total + (u64::from(slots_per_group(class)) << class))
        })
    }
}

/// A free slot of `class` that still holds blocks (freed since the last trim), as (group, index, true).
fn dirty_free_slot(st: &State, class: u8) -> Option<(u32, u16, bool)> {
    let slots = slots_per_group(class);
    st.groups.range((class, 0)..=(class, u32::MAX)).find_map(|(&(_, group), g)| {
        (0..4).find_map(|w| {
            let bits = g.dirty[w] & !g.bits[w];
            let index = w as u32 * 64 + bits.trailing_zeros();
            (bits != 0 && index < slots).then_some((group, index as u16, true))
        })
    })
}

fn clear(st: &mut State, slot: Slot) {
    match st.groups.get_mut(&(slot.class, slot.group)) {
        Some(g) if g.is_set(slot.index) => g.set(slot.index, false),
        _ => tracing::error!(?slot, "freeing a slot that is not allocated"),
    }
}

/// A reader's hold on a slot; see [`Engine::pin`].
pub struct SlotPin {
    engine: Arc<Engine>,
    slot: Slot,
}

impl Drop for SlotPin {
    fn drop(&mut self) {
        let mut st = self.engine.state();
        let n = st.pins.get_mut(&self.slot).expect("a pinned slot has a count");
        *n -= 1;
        if *n == 0 {
            st.pins.remove(&self.slot);
            if st.deferred.remove(&self.slot) {
                clear(&mut st, self.slot);
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(format!("fsync {}", dir.display())))
}

fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: the descriptor is open for the duration of the call; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(rc)) }
}

/// The slots of a group file of `class` that hold allocated blocks (`SEEK_DATA` / `SEEK_HOLE`), as a
/// bitmap: a few calls per extent, not one per slot.
fn data_slots(file: &File, class: u8) -> std::io::Result<[u64; 4]> {
    use std::os::fd::AsRawFd;
    let seek = |pos: u64, whence: libc::c_int| -> std::io::Result<Option<u64>> {
        let pos = libc::off_t::try_from(pos).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: the descriptor is open for the duration of the call; no memory is passed.
        let at = unsafe { libc::lseek(file.as_raw_fd(), pos, whence) };
        match at {
            -1 => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
                e => Err(e),
            },
            at => Ok(Some(at as u64)),
        }
    };
    let len = u64::from(slots_per_group(class)) << class;
    let (mut mask, mut pos) = ([0u64; 4], 0);
    while pos < len {
        let Some(data) = seek(pos, libc::SEEK_DATA)?.filter(|&d| d < len) else { break };
        let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        for i in (data >> class)..=((hole.max(data + 1) - 1) >> class) {
            mask[(i / 64) as usize] |= 1 << (i % 64);
        }
        pos = hole.max(data + 1);
    }
    Ok(mask)
}

/// Deallocates `[offset, offset + len)` of `file`, keeping its size (reads there return zeros).
fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let off = |v: u64| libc::off_t::try_from(v).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput));
    let (offset, len) = (off(offset)?, off(len)?);
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: the descriptor is open for the duration of the call; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests;
