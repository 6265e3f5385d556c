//! RDMA bulk backend (feature `rdma`): placeholder, filled in below.
