//! The bulk data plane: chunk data never rides gRPC (DESIGN.md, research/deps.md §3).
//!
//! - [`frame`]: the frame codec (prost header + raw payload) and the in-memory decode path that the
//!   fuzz target covers.
//! - [`transport`]: the [`Transport`] trait that clients and storage peers call through, and the
//!   run-time choice of backend ([`BulkClient`]).
//! - [`tcp`]: the TCP backend (always built) and the server loop storage nodes run.
//! - `rdma` (feature `rdma`): the RDMA backend over libibverbs. It compiles in CI but has never run on
//!   InfiniBand/RoCE hardware (none on the build machines); see its module note.
pub mod frame;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod tcp;
pub mod transport;

pub use frame::{
    FRAME_PREFIX, MAGIC, MAX_HEADER, MAX_PAYLOAD, VERSION, decode_request, encode_frame, read_frame, write_frame,
};
pub use tcp::{BulkHandler, TcpConfig, TcpTransport, error_response, serve};
pub use transport::{BulkClient, CallFuture, Placed, Registration, Transport, TransportKind, TransportPrefs};

/// Most reads one batch-read request may carry (3FS packs up to 128 per `BatchReadReq`).
pub const MAX_BATCH_READS: usize = 1024;
