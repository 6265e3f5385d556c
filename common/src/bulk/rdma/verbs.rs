//! The whole unsafe surface of the RDMA backend: small owning wrappers over libibverbs objects
//! (device context + protection domain, registered memory region, RC queue pair with its completion
//! queue). Every raw pointer is created, used and destroyed here; the rest of the backend is safe.
//!
//! Invariants: each wrapper owns exactly one verbs object (plus its parents through an `Arc`, so a
//! parent outlives its children) and destroys it exactly once in `Drop`; a memory region's buffer is
//! heap memory owned by the region and never moves or shrinks while registered (an [`ExtMr`] names
//! caller memory instead, under the contract of its `unsafe` constructor: allocated and unmoved
//! until the `ExtMr` is dropped); a queue pair has at
//! most one work request outstanding at a time (each post is followed by [`Qp::wait`]), so the local
//! buffer of a post stays untouched until its completion.
//!
//! UNTESTED ON HARDWARE: this compiles against rdma-core 44 headers and follows the verbs API, but
//! the build machines have no InfiniBand/RoCE device, so no line here has run against a NIC.
use std::os::raw::{c_int, c_void};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdma_sys::*;

use crate::proto::RdmaEndpoint;
use crate::status::{Error, StatusCode};

fn unavailable(what: &str) -> Error {
    Error::new(StatusCode::Unavailable, format!("rdma: {what}: {}", std::io::Error::last_os_error()))
}

/// An open RDMA device (first one with an active port 1) and its protection domain.
pub struct Device {
    ctx: *mut ibv_context,
    pd: *mut ibv_pd,
    port: u8,
    lid: u16,
    gid: [u8; 16],
}

// SAFETY: libibverbs contexts and PDs are thread-safe (the verbs API allows any thread to use them);
// `Device` never hands out the raw pointers mutably to safe code.
unsafe impl Send for Device {}
// SAFETY: as above; all methods take `&self` and only pass the pointers to thread-safe verbs calls.
unsafe impl Sync for Device {}

impl Device {
    /// The process-wide device, opened on first use; `None` when the host has no usable one.
    pub fn global() -> Option<Arc<Device>> {
        static DEV: OnceLock<Option<Arc<Device>>> = OnceLock::new();
        DEV.get_or_init(|| match Device::open_first() {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                tracing::info!(error = %e, "no RDMA device");
                None
            }
        })
        .clone()
    }

    fn open_first() -> Result<Device, Error> {
        let mut n: c_int = 0;
        // SAFETY: writes the count through a valid pointer; NULL means no RDMA support.
        let list = unsafe { ibv_get_device_list(&mut n) };
        if list.is_null() || n <= 0 {
            if !list.is_null() {
                // SAFETY: `list` came from ibv_get_device_list and is freed once.
                unsafe { ibv_free_device_list(list) };
            }
            return Err(Error::new(StatusCode::Unavailable, "rdma: no devices"));
        }
        // SAFETY: `list` holds `n` > 0 valid device pointers; the context we open stays valid after
        // the list is freed (libibverbs keeps devices referenced by open contexts).
        let ctx = unsafe { ibv_open_device(*list) };
        // SAFETY: freed exactly once, after its first entry was opened.
        unsafe { ibv_free_device_list(list) };
        if ctx.is_null() {
            return Err(unavailable("ibv_open_device"));
        }
        // SAFETY: `ctx` is a valid open context.
        let pd = unsafe { ibv_alloc_pd(ctx) };
        if pd.is_null() {
            // SAFETY: closing the context we opened, once.
            unsafe { ibv_close_device(ctx) };
            return Err(unavailable("ibv_alloc_pd"));
        }
        let mut dev = Device { ctx, pd, port: 1, lid: 0, gid: [0; 16] };
        // SAFETY: ibv_port_attr is plain data; all-zero is a valid value to be overwritten.
        let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and a valid out-pointer of the right type.
        if unsafe { ___ibv_query_port(ctx, dev.port, &mut attr) } != 0 {
            return Err(unavailable("ibv_query_port"));
        }
        if attr.state != ibv_port_state::IBV_PORT_ACTIVE {
            return Err(Error::new(StatusCode::Unavailable, "rdma: port 1 is not active"));
        }
        dev.lid = attr.lid;
        // SAFETY: ibv_gid is a 16-byte union of plain data; zero is valid.
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: valid context, port and out-pointer; index 0 always exists.
        if unsafe { ibv_query_gid(ctx, dev.port, 0, &mut gid) } == 0 {
            // SAFETY: every bit pattern of the union is a valid `[u8; 16]`.
            dev.gid = unsafe { gid.raw };
        }
        Ok(dev)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: both were created in `open_first` and are destroyed once, PD first; every child
        // (MR, QP, CQ) holds an `Arc<Device>`, so none is left.
        unsafe {
            ibv_dealloc_pd(self.pd);
            ibv_close_device(self.ctx);
        }
    }
}

/// A heap buffer registered with the device for local and remote read/write.
pub struct Mr {
    _dev: Arc<Device>,
    buf: Box<[u8]>,
    mr: *mut ibv_mr,
}

// SAFETY: the region is owned (no aliasing outside `&self`/`&mut self` borrows); verbs MRs may be used
// from any thread.
unsafe impl Send for Mr {}
// SAFETY: shared access only reads the buffer or the MR's keys.
unsafe impl Sync for Mr {}

impl Mr {
    pub fn new(dev: &Arc<Device>, len: usize) -> Result<Mr, Error> {
        let mut buf = vec![0u8; len.max(1)].into_boxed_slice();
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        // SAFETY: `buf` is a live heap allocation of `buf.len()` bytes that this `Mr` owns and never
        // reallocates; it is deregistered in `Drop` before the box is freed.
        let mr = unsafe { ibv_reg_mr(dev.pd, buf.as_mut_ptr().cast::<c_void>(), buf.len(), access.0 as c_int) };
        if mr.is_null() {
            return Err(unavailable("ibv_reg_mr"));
        }
        Ok(Mr { _dev: dev.clone(), buf, mr })
    }

    pub fn addr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn lkey(&self) -> u32 {
        // SAFETY: `mr` is valid until Drop.
        unsafe { (*self.mr).lkey }
    }

    pub fn rkey(&self) -> u32 {
        // SAFETY: `mr` is valid until Drop.
        unsafe { (*self.mr).rkey }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered in `new`, deregistered once, before `buf` is freed.
        unsafe { ibv_dereg_mr(self.mr) };
    }
}

/// Caller memory (not owned) registered with the device for remote write: a `BufferPool`
/// buffer ([`ExtMr::new`]) or GPU memory exported as a DMA-BUF ([`ExtMr::from_dmabuf`]). Only the
/// registration is owned; the memory belongs to the caller.
pub struct ExtMr {
    _dev: Arc<Device>,
    mr: *mut ibv_mr,
}

// SAFETY: the handle only holds the MR pointer (verbs MRs may be used and deregistered from any
// thread); it gives no access to the memory itself.
unsafe impl Send for ExtMr {}
// SAFETY: shared access only reads the MR's keys.
unsafe impl Sync for ExtMr {}

impl ExtMr {
    /// Registers `len` bytes at `ptr` on the device's protection domain.
    ///
    /// # Safety
    /// `ptr..ptr + len` is one live allocation (or part of one) that stays allocated and does not
    /// move until the `ExtMr` is dropped (the NIC may write it whenever a call names its key).
    pub unsafe fn new(dev: &Arc<Device>, ptr: *mut u8, len: usize) -> Result<ExtMr, Error> {
        if len == 0 {
            return Err(Error::invalid("rdma: cannot register an empty buffer"));
        }
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        // SAFETY: the caller guarantees `ptr..ptr + len` stays a live, unmoved allocation until
        // this `ExtMr` is dropped, which deregisters it; `dev.pd` lives as long as `_dev`.
        let mr = unsafe { ibv_reg_mr(dev.pd, ptr.cast::<c_void>(), len, access.0 as c_int) };
        if mr.is_null() {
            return Err(unavailable("ibv_reg_mr (caller memory)"));
        }
        Ok(ExtMr { _dev: dev.clone(), mr })
    }

    /// Registers device memory (GPU) through a DMA-BUF file descriptor for remote write:
    /// `len` bytes at `fd_offset` of the DMA-BUF `fd`, addressed by peers as `iova`
    /// (`ibv_reg_dmabuf_mr`, GPUDirect RDMA's registration path without nvidia-peermem).
    ///
    /// # Safety
    /// The memory behind `fd` stays allocated until the `ExtMr` is dropped. The kernel takes its
    /// own reference on the DMA-BUF, so `fd` itself may be closed after this returns.
    pub unsafe fn from_dmabuf(
        dev: &Arc<Device>,
        fd: c_int,
        fd_offset: u64,
        len: usize,
        iova: u64,
    ) -> Result<ExtMr, Error> {
        if len == 0 {
            return Err(Error::invalid("rdma: cannot register an empty device buffer"));
        }
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        // SAFETY: `dev.pd` is valid while `_dev` lives; the caller guarantees the DMA-BUF's memory
        // outlives this registration, which `Drop` releases.
        let mr = unsafe { ibv_reg_dmabuf_mr(dev.pd, fd_offset, len, iova, fd, access.0 as c_int) };
        if mr.is_null() {
            return Err(unavailable("ibv_reg_dmabuf_mr (is GPUDirect RDMA supported here?)"));
        }
        Ok(ExtMr { _dev: dev.clone(), mr })
    }

    pub fn rkey(&self) -> u32 {
        // SAFETY: `mr` is valid until Drop.
        unsafe { (*self.mr).rkey }
    }
}

impl Drop for ExtMr {
    fn drop(&mut self) {
        // SAFETY: registered in `new`, deregistered once; the caller's memory is still allocated
        // (the contract of `new`).
        unsafe { ibv_dereg_mr(self.mr) };
    }
}

/// One-sided operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Copy remote memory into the local region.
    Read,
    /// Copy the local region into remote memory.
    Write,
}

/// A reliable-connected queue pair with its own completion queue.
pub struct Qp {
    dev: Arc<Device>,
    cq: *mut ibv_cq,
    qp: *mut ibv_qp,
    psn: u32,
}

// SAFETY: a QP and its CQ may be used from any thread; `Qp` methods that post or poll take `&mut self`,
// so one thread at a time drives it.
unsafe impl Send for Qp {}

impl Qp {
    pub fn new(dev: &Arc<Device>) -> Result<Qp, Error> {
        // SAFETY: valid context; no completion channel (we poll).
        let cq = unsafe { ibv_create_cq(dev.ctx, 64, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if cq.is_null() {
            return Err(unavailable("ibv_create_cq"));
        }
        // SAFETY: plain data; zero is a valid starting value for every field set below.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq;
        init.recv_cq = cq;
        init.cap = ibv_qp_cap { max_send_wr: 16, max_recv_wr: 1, max_send_sge: 1, max_recv_sge: 1, max_inline_data: 0 };
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        // SAFETY: valid PD and init attributes referencing the CQ created above.
        let qp = unsafe { ibv_create_qp(dev.pd, &mut init) };
        if qp.is_null() {
            // SAFETY: destroying the CQ created above, once.
            unsafe { ibv_destroy_cq(cq) };
            return Err(unavailable("ibv_create_qp"));
        }
        let psn = rand::random::<u32>() & 0x00ff_ffff;
        Ok(Qp { dev: dev.clone(), cq, qp, psn })
    }

    /// This side's endpoint, to send to the peer.
    pub fn endpoint(&self) -> RdmaEndpoint {
        RdmaEndpoint {
            lid: u32::from(self.dev.lid),
            // SAFETY: `qp` is valid until Drop.
            qpn: unsafe { (*self.qp).qp_num },
            psn: self.psn,
            gid: bytes::Bytes::copy_from_slice(&self.dev.gid),
        }
    }

    fn modify(&mut self, attr: &mut ibv_qp_attr, mask: ibv_qp_attr_mask, what: &str) -> Result<(), Error> {
        // SAFETY: valid QP; `attr` is a valid, initialised attribute block for the bits in `mask`.
        if unsafe { ibv_modify_qp(self.qp, attr, mask.0 as c_int) } != 0 {
            return Err(unavailable(what));
        }
        Ok(())
    }

    /// Moves the QP through INIT, RTR and RTS towards `remote`.
    pub fn connect(&mut self, remote: &RdmaEndpoint) -> Result<(), Error> {
        let port = self.dev.port;
        // SAFETY: plain data; zero is valid for every field not set.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = port;
        a.qp_access_flags = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE)
            .0;
        let m = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        self.modify(&mut a, m, "QP to INIT")?;

        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = ibv_mtu::IBV_MTU_1024;
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = 16;
        a.min_rnr_timer = 12;
        a.ah_attr.dlid = remote.lid as u16;
        a.ah_attr.port_num = port;
        if remote.gid.len() == 16 && remote.gid.iter().any(|&b| b != 0) {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&remote.gid);
            a.ah_attr.is_global = 1;
            a.ah_attr.grh.dgid = ibv_gid { raw };
            a.ah_attr.grh.sgid_index = 0;
            a.ah_attr.grh.hop_limit = 1;
        }
        let m = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_AV
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        self.modify(&mut a, m, "QP to RTR")?;

        // SAFETY: as above.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        a.timeout = 14;
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.sq_psn = self.psn;
        a.max_rd_atomic = 16;
        let m = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify(&mut a, m, "QP to RTS")
    }

    /// Runs one signalled RDMA READ or WRITE of `len` bytes between `local[..len]` and the peer's
    /// `(remote_addr, rkey)`, and waits (polling, yielding to tokio) up to `timeout` for it.
    pub async fn transfer(
        &mut self,
        op: Op,
        local: &mut Mr,
        len: usize,
        remote_addr: u64,
        rkey: u32,
        timeout: Duration,
    ) -> Result<(), Error> {
        self.post(op, local, len, remote_addr, rkey)?;
        // `local` stays borrowed mutably (and unchanged) until the completion, so the NIC's access
        // to its bytes cannot race with Rust code.
        self.wait(timeout).await
    }

    fn post(&mut self, op: Op, local: &mut Mr, len: usize, remote_addr: u64, rkey: u32) -> Result<(), Error> {
        if len > local.len() || len > u32::MAX as usize {
            return Err(Error::invalid(format!("rdma transfer of {len} bytes over a {}-byte region", local.len())));
        }
        let mut sge = ibv_sge { addr: local.addr(), length: len as u32, lkey: local.lkey() };
        // SAFETY: plain data (unions of integers and pointers); zero is valid for unused fields.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = 1;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = match op {
            Op::Read => ibv_wr_opcode::IBV_WR_RDMA_READ,
            Op::Write => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
        };
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.wr.rdma = rdma_t { remote_addr, rkey };
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: valid QP in RTS; `wr` and `sge` live until the call returns (the provider copies
        // them into the send queue); the registered region they point into outlives the transfer.
        if unsafe { ibv_post_send(self.qp, &mut wr, &mut bad) } != 0 {
            return Err(unavailable("ibv_post_send"));
        }
        Ok(())
    }

    /// Polls for the one outstanding completion.
    fn poll(&mut self) -> Result<bool, Error> {
        // SAFETY: plain data; zero is valid and overwritten by a completion.
        let mut wc: ibv_wc = unsafe { std::mem::zeroed() };
        // SAFETY: valid CQ and room for exactly one completion.
        let n = unsafe { ibv_poll_cq(self.cq, 1, &mut wc) };
        if n < 0 {
            return Err(unavailable("ibv_poll_cq"));
        }
        if n == 1 && wc.status != ibv_wc_status::IBV_WC_SUCCESS {
            return Err(Error::new(StatusCode::Unavailable, format!("rdma: work completion status {}", wc.status)));
        }
        Ok(n == 1)
    }

    async fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        while !self.poll()? {
            if Instant::now() > deadline {
                // The QP may still complete the work request later; the caller drops the connection
                // (QP first, then its regions), so nothing touches the buffer afterwards.
                return Err(Error::new(StatusCode::Timeout, "rdma: transfer timed out"));
            }
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once, QP before its CQ.
        unsafe {
            ibv_destroy_qp(self.qp);
            ibv_destroy_cq(self.cq);
        }
    }
}
