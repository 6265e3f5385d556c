//! Read destinations for [`crate::batch`]: the buffer pool, caller-owned external memory, and the
//! [`ReadBuf`] that names either (or a plain `Vec`).
//!
//! [`BufferPool`] allocates `count` buffers of `buf_size` bytes once and lends them out as
//! [`PooledBuf`]s that return on drop; acquire waits while every buffer is out. A pool made with
//! [`BufferPool::registered`] (or [`crate::Client::buffer_pool`]) registers each buffer once with
//! the bulk transport ([`t3fs_common::bulk::Transport::register`]) for the pool's life: a no-op
//! handle over TCP, one RDMA memory region per buffer over RDMA, so a storage node can
//! RDMA-WRITE a read straight into it. [`ExternalBuf`] is caller memory a read lands in (see its
//! `new`).
//!
//! Invariants: a buffer's registration is released before its memory is freed (field order in
//! `Slot`), and only after every loan is back (loans hold the pool); the pool holds at least as many
//! free buffers as its semaphore has permits.
use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use t3fs_common::Result;
use t3fs_common::bulk::{BulkClient, Registration};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bounded pool of equally sized read buffers, allocated once (see the [`crate::batch`] module note).
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    buf_size: usize,
    count: usize,
    registered: bool,
    /// Invariant: holds at least as many buffers as `permits` has available permits (a buffer is
    /// pushed back before its permit is released).
    free: Mutex<Vec<Slot>>,
    permits: Arc<Semaphore>,
}

/// One pool buffer and its transport registration. Field order matters: the registration is
/// released (dropped) before the memory it names is freed.
struct Slot {
    reg: Option<Registration>,
    buf: Box<[u8]>,
}

impl BufferPool {
    /// Allocates `count` zeroed buffers of `buf_size` bytes each, registered with no transport.
    pub fn new(buf_size: usize, count: usize) -> BufferPool {
        let free = (0..count).map(|_| Slot { reg: None, buf: vec![0u8; buf_size].into_boxed_slice() }).collect();
        Self::from_slots(buf_size, count, false, free)
    }

    /// As [`BufferPool::new`], with every buffer registered once with `bulk`'s transport for the
    /// pool's life (released when the pool and all its buffers are dropped). TCP: a no-op; RDMA:
    /// one memory region per buffer, so storage nodes write reads straight into them.
    pub fn registered(buf_size: usize, count: usize, bulk: &BulkClient) -> Result<BufferPool> {
        let mut free = Vec::with_capacity(count);
        for _ in 0..count {
            let mut buf = vec![0u8; buf_size].into_boxed_slice();
            let reg = if buf.is_empty() {
                None
            } else {
                // SAFETY: `buf` is a live heap allocation that never moves (a `Box<[u8]>` is only
                // ever moved as a pointer) and is freed only when its `Slot` is dropped, which
                // drops `reg` first (field order), ending the registration before the free.
                Some(unsafe { bulk.register(buf.as_mut_ptr(), buf.len()) }?)
            };
            free.push(Slot { reg, buf });
        }
        Ok(Self::from_slots(buf_size, count, true, free))
    }

    fn from_slots(buf_size: usize, count: usize, registered: bool, free: Vec<Slot>) -> BufferPool {
        BufferPool {
            inner: Arc::new(PoolInner {
                buf_size,
                count,
                registered,
                free: Mutex::new(free),
                permits: Arc::new(Semaphore::new(count)),
            }),
        }
    }

    /// Whether the buffers were registered with a transport ([`BufferPool::registered`]).
    pub fn is_registered(&self) -> bool {
        self.inner.registered
    }

    /// Takes a buffer, waiting while all are in use.
    pub async fn acquire(&self) -> PooledBuf {
        let permit = self.inner.permits.clone().acquire_owned().await.expect("the pool semaphore is never closed");
        self.take(permit)
    }

    /// Takes a buffer if one is free now.
    pub fn try_acquire(&self) -> Option<PooledBuf> {
        self.inner.permits.clone().try_acquire_owned().ok().map(|p| self.take(p))
    }

    fn take(&self, permit: OwnedSemaphorePermit) -> PooledBuf {
        let buf = self.inner.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        PooledBuf {
            buf: Some(buf.expect("a permit guarantees a free buffer")),
            pool: self.inner.clone(),
            _permit: permit,
        }
    }

    /// Size of every buffer, in bytes.
    pub fn buf_size(&self) -> usize {
        self.inner.buf_size
    }

    /// Number of buffers in the pool.
    pub fn capacity(&self) -> usize {
        self.inner.count
    }

    /// Buffers free right now.
    pub fn available(&self) -> usize {
        self.inner.permits.available_permits()
    }
}

/// A buffer on loan from a [`BufferPool`]; derefs to all `buf_size` bytes and goes back to the
/// pool when dropped. Contents are not cleared between loans.
pub struct PooledBuf {
    buf: Option<Slot>,
    pool: Arc<PoolInner>,
    /// Released after `Drop::drop` has put the buffer back (fields drop after `drop` runs).
    _permit: OwnedSemaphorePermit,
}

impl PooledBuf {
    /// This buffer's transport registration, if the pool was registered.
    pub fn registration(&self) -> Option<&Registration> {
        self.buf.as_ref().expect("present until drop").reg.as_ref()
    }

    /// The bytes and the registration together (a read writes one while naming the other).
    pub(crate) fn parts(&mut self) -> (&mut [u8], Option<&Registration>) {
        let s = self.buf.as_mut().expect("present until drop");
        (&mut s.buf, s.reg.as_ref())
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf.as_ref().expect("present until drop").buf
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut().expect("present until drop").buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(b);
        }
    }
}

/// `len` bytes of caller-owned memory at `ptr`, kept alive by `owner` (see the [`crate::batch`]
/// module note): the destination of a read that must land in place, e.g. one sample's range of a
/// pinned batch buffer. Derefs to exactly those `len` bytes.
pub struct ExternalBuf {
    ptr: *mut u8,
    len: usize,
    owner: Arc<dyn Any + Send + Sync>,
}

// SAFETY: an ExternalBuf is the only handle to its range (the contract of `new`), like a
// `Box<[u8]>` that some `owner` frees; moving it to another thread moves that exclusive access
// with it, and `owner` is itself Send + Sync.
unsafe impl Send for ExternalBuf {}
// SAFETY: `&ExternalBuf` only gives `&[u8]` (reads); writes need `&mut`. No one else writes the
// range while the ExternalBuf lives (the contract of `new`), so shared reads from several threads
// do not race. (Keeps `ReadBuf`, `ReadReq` and `Completion` Sync, as they were before.)
unsafe impl Sync for ExternalBuf {}

impl ExternalBuf {
    /// A read destination over `len` bytes at `ptr`, kept alive by `owner`. A zero `len` needs no
    /// valid pointer (it may be null).
    ///
    /// # Safety
    /// - `ptr..ptr + len` is one allocation (or part of one), valid for reads and writes of `len`
    ///   bytes for as long as `owner` (any clone of it) is alive, and `len <= isize::MAX`. Dropping
    ///   the last clone of `owner` may free it; nothing else may.
    /// - Nothing else reads, writes or borrows that range from this call until the `ExternalBuf`
    ///   is dropped (ranges handed to different `ExternalBuf`s must be disjoint).
    /// - The bytes are initialized (any values: every bit pattern is a valid `u8`), since the
    ///   `ExternalBuf` derefs to slices over them (e.g. zero a fresh pinned allocation first).
    pub unsafe fn new(ptr: *mut u8, len: usize, owner: Arc<dyn Any + Send + Sync>) -> ExternalBuf {
        // `from_raw_parts` needs a non-null, aligned pointer even for an empty slice.
        let ptr = if len == 0 { std::ptr::NonNull::dangling().as_ptr() } else { ptr };
        ExternalBuf { ptr, len, owner }
    }

    /// The handle that keeps the memory alive (the one given to [`ExternalBuf::new`]).
    pub fn owner(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.owner
    }
}

impl Deref for ExternalBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `new`'s contract: `ptr..ptr + len` is valid while `owner` lives (we hold a
        // clone, so at least as long as `self`) and no one else writes it; `ptr` is non-null (a
        // dangling, aligned pointer when `len == 0`) and u8 needs no alignment.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for ExternalBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; the range is exclusively ours (`new`'s contract) and `&mut self`
        // makes this the only borrow of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl std::fmt::Debug for ExternalBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalBuf").field("ptr", &self.ptr).field("len", &self.len).finish_non_exhaustive()
    }
}

/// Where a read lands: a pooled (registered) buffer, a plain `Vec` (its current length is the
/// room available; it is never resized), or caller-owned external memory.
pub enum ReadBuf {
    Pooled(PooledBuf),
    Owned(Vec<u8>),
    External(ExternalBuf),
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadBuf::Pooled(b) => b,
            ReadBuf::Owned(v) => v,
            ReadBuf::External(e) => e,
        }
    }
}

impl DerefMut for ReadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            ReadBuf::Pooled(b) => b,
            ReadBuf::Owned(v) => v,
            ReadBuf::External(e) => e,
        }
    }
}

impl ReadBuf {
    /// The bytes and, for a buffer from a registered pool, its registration.
    pub(crate) fn parts(&mut self) -> (&mut [u8], Option<&Registration>) {
        match self {
            ReadBuf::Pooled(b) => b.parts(),
            ReadBuf::Owned(v) => (v, None),
            ReadBuf::External(e) => (e, None),
        }
    }
}

impl From<ExternalBuf> for ReadBuf {
    fn from(b: ExternalBuf) -> Self {
        ReadBuf::External(b)
    }
}

impl From<PooledBuf> for ReadBuf {
    fn from(b: PooledBuf) -> Self {
        ReadBuf::Pooled(b)
    }
}

impl From<Vec<u8>> for ReadBuf {
    fn from(v: Vec<u8>) -> Self {
        ReadBuf::Owned(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffer_pool_is_bounded_and_buffers_return_on_drop() {
        let pool = BufferPool::new(1024, 2);
        assert_eq!((pool.buf_size(), pool.capacity(), pool.available()), (1024, 2, 2));
        let mut a = pool.acquire().await;
        a[0] = 7;
        let b = pool.try_acquire().unwrap();
        assert_eq!(b.len(), 1024);
        assert!(pool.try_acquire().is_none());
        assert_eq!(pool.available(), 0);
        // A waiter is woken when a buffer comes back.
        let p2 = pool.clone();
        let waiter = tokio::spawn(async move { p2.acquire().await.len() });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.unwrap(), 1024);
        drop(b);
        assert_eq!(pool.available(), 2);
        // Buffers are reused, not reallocated: a written byte is still there on the next loan.
        let seen: Vec<u8> = vec![pool.acquire().await[0], pool.acquire().await[0]];
        assert!(seen.contains(&7));
        let rb: ReadBuf = pool.acquire().await.into();
        assert_eq!(rb.len(), 1024);
        let rb: ReadBuf = vec![0u8; 3].into();
        assert_eq!(rb.len(), 3);
    }

    /// An Arc-owned buffer and the base pointer of its bytes, taken once through exclusive access
    /// (the way a loader lends a batch buffer).
    fn owned(len: usize, fill: u8) -> (Arc<Mutex<Vec<u8>>>, *mut u8) {
        let mut owner = Arc::new(Mutex::new(vec![fill; len]));
        let v = Arc::get_mut(&mut owner).unwrap().get_mut().unwrap();
        let ptr = v.as_mut_ptr();
        (owner, ptr)
    }

    #[test]
    fn external_bufs_deref_to_exactly_their_range_and_keep_the_owner_alive() {
        let (owner, base) = owned(32, 0xEE);
        // Two disjoint ranges with a gap between them: [4, 12) and [20, 30).
        let erased: Arc<dyn Any + Send + Sync> = owner.clone();
        // SAFETY: both ranges lie inside the 32-byte Vec that `owner` keeps alive, are disjoint,
        // and nothing touches the Vec until both ExternalBufs are gone (the try_unwrap below).
        let (mut a, mut b) =
            unsafe { (ExternalBuf::new(base.add(4), 8, erased.clone()), ExternalBuf::new(base.add(20), 10, erased)) };
        assert_eq!((a.len(), b.len()), (8, 10));
        assert!(a.iter().chain(b.iter()).all(|&x| x == 0xEE), "they see the owner's bytes");
        a.fill(1);
        b.copy_from_slice(&[2; 10]);
        let mut rb: ReadBuf = b.into();
        rb[9] = 3;
        assert_eq!(Arc::strong_count(&owner), 3, "each ExternalBuf holds a clone of the owner");
        assert!(Arc::ptr_eq(a.owner(), &(owner.clone() as Arc<dyn Any + Send + Sync>)));
        // Dropping our handle does not free the memory while an ExternalBuf holds the owner.
        let weak = Arc::downgrade(&owner);
        drop(owner);
        assert_eq!(&a[..], &[1; 8]);
        drop((a, rb));
        assert!(weak.upgrade().is_none(), "the last ExternalBuf freed the buffer");

        // Writes stayed inside the two ranges.
        let (owner, base) = owned(16, 0);
        // SAFETY: [8, 16) of the Vec `owner` keeps alive; untouched until the ExternalBuf is gone.
        let mut e = unsafe { ExternalBuf::new(base.add(8), 8, owner.clone()) };
        e.fill(9);
        drop(e);
        let v = Arc::try_unwrap(owner).unwrap().into_inner().unwrap();
        assert_eq!(v, [[0u8; 8], [9u8; 8]].concat());

        // Zero length: a null pointer is fine and derefs to an empty slice.
        // SAFETY: zero bytes are never accessed.
        let mut z = unsafe { ExternalBuf::new(std::ptr::null_mut(), 0, Arc::new(())) };
        assert!(z.is_empty() && z.deref_mut().is_empty());
        let z: ReadBuf = z.into();
        assert!(z.is_empty());
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use t3fs_common::Error;
    use t3fs_common::bulk::{CallFuture, Transport, TransportKind};
    use t3fs_common::proto::{BulkRequest, BulkResponse};

    /// A transport whose registrations count themselves while alive.
    struct Counting(Arc<AtomicUsize>);
    struct Live(Arc<AtomicUsize>);
    impl Drop for Live {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    impl Transport for Counting {
        fn kind(&self) -> TransportKind {
            TransportKind::Tcp
        }
        fn call<'a>(
            &'a self,
            _addr: &'a str,
            _req: &'a BulkRequest,
            _payload: &'a [u8],
        ) -> CallFuture<'a, (BulkResponse, bytes::Bytes)> {
            Box::pin(async { Err(Error::internal("not used")) })
        }
        unsafe fn register(&self, ptr: *mut u8, len: usize) -> Result<Registration> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Registration::new(TransportKind::Tcp, ptr, len, Some(7), Box::new(Live(self.0.clone()))))
        }
    }

    #[tokio::test]
    async fn tcp_pool_registration_is_a_noop_handle_per_buffer() {
        let pool = BufferPool::registered(256, 2, &BulkClient::default()).unwrap();
        assert!(pool.is_registered() && !BufferPool::new(256, 2).is_registered());
        let b = pool.acquire().await;
        let reg = b.registration().expect("a registered pool's buffer has a registration");
        assert!(reg.is_noop() && reg.covers(&b) && reg.covers(&b[10..20]));
        assert!(BufferPool::new(256, 1).acquire().await.registration().is_none());
        // Zero-sized buffers register nothing and still work.
        assert!(BufferPool::registered(0, 1, &BulkClient::default()).unwrap().acquire().await.registration().is_none());
    }

    #[tokio::test]
    async fn pool_registrations_are_released_when_the_pool_and_its_loans_are_gone() {
        let live = Arc::new(AtomicUsize::new(0));
        let bulk = BulkClient::from_transport(Arc::new(Counting(live.clone())));
        let pool = BufferPool::registered(128, 3, &bulk).unwrap();
        assert_eq!(live.load(Ordering::SeqCst), 3, "each buffer registered once");
        let mut a = pool.acquire().await;
        let b = pool.acquire().await;
        assert_eq!(a.registration().and_then(|r| r.rkey()), Some(7));
        assert!(a.registration().is_some_and(|r| r.covers(&a)));
        assert!(!a.registration().is_some_and(|r| r.covers(&b)), "each buffer has its own registration");
        drop(b);
        // Loans and returns do not register again.
        let c = pool.acquire().await;
        a[0] = 1;
        assert_eq!(live.load(Ordering::SeqCst), 3);
        drop((pool, c));
        assert_eq!(live.load(Ordering::SeqCst), 3, "a buffer on loan keeps the pool, and so every registration");
        drop(a);
        assert_eq!(live.load(Ordering::SeqCst), 0, "all released once the pool is gone");
    }
}
