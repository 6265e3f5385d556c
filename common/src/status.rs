//! Stable status codes and the boundary error.
//!
//! Every t3fs error that crosses a process boundary is a [`StatusCode`] plus a message. The numeric
//! values are part of the wire format: never renumber, only append. On gRPC the code travels in the
//! `t3fs-code` metadata entry beside a best-fit tonic code; on the bulk plane in `BulkResponse.code`;
//! at FUSE it becomes an errno via [`StatusCode::errno`].
use std::fmt;

/// Stable status codes (wire values).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StatusCode {
    Ok = 0,
    Internal = 1,
    InvalidArgument = 2,
    NotFound = 3,
    AlreadyExists = 4,
    NotDirectory = 5,
    IsDirectory = 6,
    DirectoryNotEmpty = 7,
    NameTooLong = 8,
    PermissionDenied = 9,
    Unauthenticated = 10,
    Unavailable = 11,
    Timeout = 12,
    Unsupported = 13,
    Io = 14,
    NoSpace = 15,
    Busy = 16,
    /// This mgmtd is a standby; the message names the primary's address (if known).
    NotPrimary = 17,
    /// The caller may not do this whatever the mode bits say (EPERM: sticky bit, chown, ...).
    OperationNotPermitted = 18,
    // Storage / replication.
    ChainVersionMismatch = 100,
    NotHead = 101,
    ChunkNotFound = 102,
    ChecksumMismatch = 103,
    ChunkNotCommitted = 104,
    TargetNotServing = 105,
    RoutingNotReady = 106,
    ChunkTooLarge = 107,
    /// An update on an exactly-once channel whose sequence number is older than the channel's last
    /// one: a stale duplicate, refused without being applied (storage/src/channels.rs).
    DuplicateUpdate = 120,
    // KV store.
    KvConflict = 200,
    KvTransactionTooLarge = 201,
    KvTransactionTooOld = 202,
}

impl StatusCode {
    const ALL: &'static [StatusCode] = &[
        Self::Ok,
        Self::Internal,
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::NotDirectory,
        Self::IsDirectory,
        Self::DirectoryNotEmpty,
        Self::NameTooLong,
        Self::PermissionDenied,
        Self::Unauthenticated,
        Self::Unavailable,
        Self::Timeout,
        Self::Unsupported,
        Self::Io,
        Self::NoSpace,
        Self::Busy,
        Self::NotPrimary,
        Self::OperationNotPermitted,
        Self::ChainVersionMismatch,
        Self::NotHead,
        Self::ChunkNotFound,
        Self::ChecksumMismatch,
        Self::ChunkNotCommitted,
        Self::TargetNotServing,
        Self::RoutingNotReady,
        Self::ChunkTooLarge,
        Self::DuplicateUpdate,
        Self::KvConflict,
        Self::KvTransactionTooLarge,
        Self::KvTransactionTooOld,
    ];

    /// Decodes a wire value; unknown values (from a newer peer) become `Internal`.
    pub fn from_u32(v: u32) -> StatusCode {
        Self::ALL.iter().copied().find(|c| *c as u32 == v).unwrap_or(StatusCode::Internal)
    }

    /// The errno a FUSE op returns for this code.
    pub fn errno(self) -> i32 {
        use StatusCode::*;
        match self {
            Ok => 0,
            InvalidArgument | ChunkTooLarge => libc::EINVAL,
            NotFound | ChunkNotFound => libc::ENOENT,
            AlreadyExists => libc::EEXIST,
            NotDirectory => libc::ENOTDIR,
            IsDirectory => libc::EISDIR,
            DirectoryNotEmpty => libc::ENOTEMPTY,
            NameTooLong => libc::ENAMETOOLONG,
            PermissionDenied => libc::EACCES,
            Unauthenticated | OperationNotPermitted => libc::EPERM,
            Timeout => libc::ETIMEDOUT,
            Unsupported => libc::EOPNOTSUPP,
            NoSpace => libc::ENOSPC,
            Busy => libc::EBUSY,
            Unavailable | TargetNotServing | RoutingNotReady | ChainVersionMismatch | NotHead | ChunkNotCommitted
            | KvConflict | KvTransactionTooOld | NotPrimary => libc::EAGAIN,
            KvTransactionTooLarge => libc::EFBIG,
            Internal | Io | ChecksumMismatch | DuplicateUpdate => libc::EIO,
        }
    }

    /// Whether a client should retry the same request (after refreshing routing info).
    pub fn is_retryable(self) -> bool {
        use StatusCode::*;
        matches!(
            self,
            Unavailable
                | Timeout
                | TargetNotServing
                | RoutingNotReady
                | ChainVersionMismatch
                | NotHead
                | ChunkNotCommitted
                | KvConflict
                | KvTransactionTooOld
                | Busy
                | NotPrimary
        )
    }

    fn tonic_code(self) -> tonic::Code {
        use StatusCode::*;
        match self {
            Ok => tonic::Code::Ok,
            InvalidArgument | NameTooLong | ChunkTooLarge | NotDirectory | IsDirectory => tonic::Code::InvalidArgument,
            NotFound | ChunkNotFound => tonic::Code::NotFound,
            AlreadyExists => tonic::Code::AlreadyExists,
            DirectoryNotEmpty | DuplicateUpdate => tonic::Code::FailedPrecondition,
            PermissionDenied | OperationNotPermitted => tonic::Code::PermissionDenied,
            Unauthenticated => tonic::Code::Unauthenticated,
            Timeout => tonic::Code::DeadlineExceeded,
            Unsupported => tonic::Code::Unimplemented,
            NoSpace => tonic::Code::ResourceExhausted,
            KvConflict | KvTransactionTooOld => tonic::Code::Aborted,
            Unavailable | Busy | TargetNotServing | RoutingNotReady | ChainVersionMismatch | NotHead
            | ChunkNotCommitted | NotPrimary => tonic::Code::Unavailable,
            Internal | Io | ChecksumMismatch | KvTransactionTooLarge => tonic::Code::Internal,
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self, *self as u32)
    }
}

/// The boundary error: a stable code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: StatusCode,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

const CODE_KEY: &str = "t3fs-code";

impl Error {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Internal, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NotFound, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::Unavailable, message)
    }
    pub fn io(context: &str, e: std::io::Error) -> Self {
        let code = if e.raw_os_error() == Some(libc::ENOSPC) { StatusCode::NoSpace } else { StatusCode::Io };
        Self::new(code, format!("{context}: {e}"))
    }
    pub fn errno(&self) -> i32 {
        self.code.errno()
    }
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }

    /// Encodes this error as a gRPC status carrying the stable code.
    pub fn to_tonic(&self) -> tonic::Status {
        let mut st = tonic::Status::new(self.code.tonic_code(), self.message.clone());
        if let Ok(v) = (self.code as u32).to_string().parse() {
            st.metadata_mut().insert(CODE_KEY, v);
        }
        st
    }

    /// Decodes a gRPC status; transport failures (no `t3fs-code`) map onto `Unavailable`/`Timeout`.
    pub fn from_tonic(st: &tonic::Status) -> Self {
        if let Some(code) =
            st.metadata().get(CODE_KEY).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u32>().ok())
        {
            return Self::new(StatusCode::from_u32(code), st.message().to_string());
        }
        let code = match st.code() {
            tonic::Code::DeadlineExceeded => StatusCode::Timeout,
            tonic::Code::Unauthenticated => StatusCode::Unauthenticated,
            tonic::Code::Unimplemented => StatusCode::Unsupported,
            tonic::Code::InvalidArgument => StatusCode::InvalidArgument,
            tonic::Code::NotFound => StatusCode::NotFound,
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => StatusCode::Unavailable,
            _ => StatusCode::Internal,
        };
        Self::new(code, format!("rpc: {}", st.message()))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.to_tonic()
    }
}

impl From<tonic::Status> for Error {
    fn from(st: tonic::Status) -> Self {
        Error::from_tonic(&st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_u32_and_tonic() {
        for &c in StatusCode::ALL {
            assert_eq!(StatusCode::from_u32(c as u32), c);
            let e = Error::new(c, "m");
            assert_eq!(Error::from_tonic(&e.to_tonic()).code, c);
        }
        assert_eq!(StatusCode::from_u32(987_654), StatusCode::Internal);
    }

    #[test]
    fn wire_values_are_frozen() {
        assert_eq!(StatusCode::NotFound as u32, 3);
        assert_eq!(StatusCode::ChainVersionMismatch as u32, 100);
        assert_eq!(StatusCode::KvConflict as u32, 200);
        assert_eq!(StatusCode::NameTooLong.errno(), libc::ENAMETOOLONG);
    }
}
