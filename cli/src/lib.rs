//! t3fs-cli: the library behind the one `t3fs` binary.
//!
//! - [`admin`]: `t3fs admin ...` — operator commands against a running cluster (nodes, chains,
//!   namespace, put/get, fsck).
//! - [`bench`]: `t3fs bench` — write then read N files through the native client (MiB/s, IOPS).
//! - [`local`]: `t3fs local up|status` — a whole cluster on one machine, as child processes
//!   (for users) or in-process (for tests), from one data directory.
//! - [`umount`]: `t3fs umount MNT` — clears a t3fs FUSE mount, a dead one included.
//!
//! The daemon subcommands (`t3fs mgmtd|meta|storage|mount --config F`) are thin: they load the
//! daemon crate's typed config and call its `run`. See `main.rs`.
pub mod admin;
pub mod bench;
pub mod local;
pub mod mount_helper;
pub mod umount;
