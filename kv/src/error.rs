//! The kv crate's error type and its mapping onto the stable status codes.
use t3fs_common::{Error, StatusCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Another transaction wrote something this one read. Nothing was written; retry.
    #[error("transaction conflict")]
    Conflict,
    /// The transaction's read version is too old to check conflicts against. Retry.
    #[error("transaction too old")]
    TooOld,
    /// The transaction wrote more than the size limit. Not retryable.
    #[error("transaction too large: {0} bytes")]
    TransactionTooLarge(usize),
    /// A key or value exceeds its size limit. Not retryable.
    #[error("key or value too large: {0}")]
    TooLarge(String),
    /// The backend failed (I/O, corruption, connection). Not retried by [`crate::run`].
    #[error("kv backend: {0}")]
    Backend(String),
    /// The user closure failed with a t3fs error; passed through the retry loop untouched.
    #[error("{0}")]
    User(#[from] Error),
}

impl KvError {
    pub fn is_retryable(&self) -> bool {
        match self {
            KvError::Conflict | KvError::TooOld => true,
            KvError::User(e) => e.code == StatusCode::KvConflict || e.code == StatusCode::KvTransactionTooOld,
            _ => false,
        }
    }
}

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Conflict => Error::new(StatusCode::KvConflict, "transaction conflict"),
            KvError::TooOld => Error::new(StatusCode::KvTransactionTooOld, "transaction too old"),
            KvError::TransactionTooLarge(n) => {
                Error::new(StatusCode::KvTransactionTooLarge, format!("transaction too large: {n} bytes"))
            }
            KvError::TooLarge(m) => Error::new(StatusCode::KvTransactionTooLarge, m),
            KvError::Backend(m) => Error::new(StatusCode::Io, format!("kv backend: {m}")),
            KvError::User(e) => e,
        }
    }
}
