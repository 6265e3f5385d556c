//! RDMA probe (feature `rdma`). The RDMA bulk transport itself is issue 4; this only tells whether the
//! host has RDMA devices, so `t3fs` can report it and fall back to TCP.

/// Number of RDMA devices visible through libibverbs (0 when the host has no RDMA support).
pub fn rdma_device_count() -> usize {
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: `ibv_get_device_list` only writes the device count through the valid pointer we pass. It
    // returns NULL (not an empty list) when the kernel has no RDMA support (research/deps.md §4).
    let list = unsafe { rdma_sys::ibv_get_device_list(&mut n) };
    if list.is_null() {
        return 0;
    }
    // SAFETY: `list` is a non-NULL list returned by `ibv_get_device_list` above and is freed exactly once;
    // no device pointer from it is used afterwards.
    unsafe { rdma_sys::ibv_free_device_list(list) };
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_does_not_crash() {
        // Hosts without RDMA report 0; hosts with it report their devices. Either way no crash.
        let n = super::rdma_device_count();
        assert!(n < 1024);
    }
}
