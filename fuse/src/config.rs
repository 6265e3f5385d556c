//! Mount configuration (`t3fs mount --config F MOUNTPOINT`).
use serde::{Deserialize, Serialize};
use t3fs_client::ClientConfig;

/// How to mount a t3fs cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountConfig {
    /// mgmtd gRPC address (`host:port`); everything else is found through routing info.
    pub mgmtd_addr: String,
    /// Cluster token sent in every request header (empty when the cluster runs without one).
    pub token: String,
    /// How long the kernel may cache attributes (stat results), in milliseconds. Short by default so
    /// changes made by other clients show up quickly.
    pub attr_timeout_ms: u64,
    /// How long the kernel may cache name -> inode lookups, in milliseconds.
    pub entry_timeout_ms: u64,
    /// FUSE event-loop threads reading requests from the kernel. Operations run on the tokio
    /// runtime, so these threads only dispatch; a few are enough.
    pub threads: usize,
    /// Let users other than the one who mounted access the mount (`allow_other`; needs
    /// `user_allow_other` in /etc/fuse.conf for non-root mounts). Also enables auto-unmount when the
    /// daemon dies.
    pub allow_other: bool,
    /// The source name shown in /proc/mounts and `df`.
    pub fsname: String,
    /// Prometheus endpoint listen address (`host:port`; port 0 picks a free port): `GET /metrics`
    /// serves the metrics in docs/metrics.md. Unset: no endpoint.
    pub metrics_listen: Option<String>,
    /// Read-ahead for sequential readers (see docs/fuse.md "Read path"). Off: every read goes
    /// straight to storage.
    pub prefetch: bool,
    /// First read-ahead window of a sequential reader and the size of each read-ahead storage
    /// read, in bytes.
    pub prefetch_min_window_bytes: u64,
    /// Largest read-ahead window (how far ahead of a sequential reader data is fetched), in bytes.
    pub prefetch_max_window_bytes: u64,
    /// Bytes all open files together may hold in read-ahead data; reads go straight through
    /// while it is spent.
    pub prefetch_memory_bytes: u64,
    /// Serve `readdir` as readdirplus (entries with their attributes, so `ls -l` needs no lookup
    /// per entry) where the kernel supports it.
    pub readdirplus: bool,
    /// Bytes one open file buffers from sequential writes before sending them to storage in one
    /// parallel write (see docs/fuse.md "Write path").
    pub write_buffer_bytes: u64,
    /// Bytes all open files together may hold in write buffers; past it every write goes to
    /// storage at once.
    pub write_buffer_memory_bytes: u64,
    /// Every this many milliseconds, open files with unsent or unreported writes are written out
    /// and their length reported to meta, so other clients see a long-running writer's data without
    /// it closing (0: only on close, fsync and the other flush points).
    pub flush_interval_ms: u64,
    /// How often the mount tells mgmtd it is alive (its client session), in milliseconds. Must stay
    /// well below mgmtd's `client_session_timeout_ms`: when the session lapses, meta drops this
    /// mount's file locks and write sessions (docs/fuse.md "Locks").
    pub session_extend_ms: u64,
    /// Send creates, mkdirs and removes to their directory's owner meta node (see
    /// `ClientConfig::dir_owner_routing`).
    pub dir_owner_routing: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        Self {
            mgmtd_addr: "127.0.0.1:8000".into(),
            token: String::new(),
            attr_timeout_ms: 1000,
            entry_timeout_ms: 1000,
            threads: 4,
            allow_other: false,
            fsname: "t3fs".into(),
            metrics_listen: None,
            prefetch: true,
            prefetch_min_window_bytes: 1 << 20,
            prefetch_max_window_bytes: 16 << 20,
            prefetch_memory_bytes: 512 << 20,
            readdirplus: true,
            write_buffer_bytes: crate::handles::DEFAULT_WRITE_BUFFER as u64,
            write_buffer_memory_bytes: crate::handles::DEFAULT_WRITE_MEMORY,
            flush_interval_ms: 5000,
            session_extend_ms: ClientConfig::default().session_extend_ms,
            dir_owner_routing: true,
        }
    }
}

impl MountConfig {
    /// The read-ahead settings.
    pub fn prefetch_config(&self) -> crate::prefetch::PrefetchConfig {
        crate::prefetch::PrefetchConfig {
            enabled: self.prefetch,
            min_window: self.prefetch_min_window_bytes,
            max_window: self.prefetch_max_window_bytes,
            memory_limit: self.prefetch_memory_bytes,
        }
        .normalized()
    }

    /// The client-library config this mount uses.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            mgmtd_addr: self.mgmtd_addr.clone(),
            token: self.token.clone(),
            session_extend_ms: self.session_extend_ms,
            dir_owner_routing: self.dir_owner_routing,
            ..ClientConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_rejects_unknown_fields() {
        let c: MountConfig = t3fs_common::config::parse("mgmtd_addr = \"1.2.3.4:5\"\nthreads = 2").unwrap();
        assert_eq!(c.mgmtd_addr, "1.2.3.4:5");
        assert_eq!(c.threads, 2);
        assert_eq!(c.attr_timeout_ms, 1000);
        assert_eq!(c.fsname, "t3fs");
        assert!(!c.allow_other);
        assert!(t3fs_common::config::parse::<MountConfig>("mountpoint = \"/x\"").is_err());
        assert_eq!(c.client_config().mgmtd_addr, "1.2.3.4:5");
    }
}
