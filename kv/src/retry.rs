//! The retry loop (FoundationDB's `db.run`): begin, run the closure, commit; on a retryable error
//! start over with a fresh transaction after a jittered exponential backoff.
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::{KvEngine, Result, Transaction};

/// How long and how often [`run_with`] retries.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 100, initial_backoff: Duration::from_millis(1), max_backoff: Duration::from_millis(200) }
    }
}

pub type TxnFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

/// Runs `f` in a transaction with the default policy and commits; retries conflicts.
pub async fn run<T, F>(db: &dyn KvEngine, f: F) -> Result<T>
where
    T: Send,
    F: for<'t> FnMut(&'t mut dyn Transaction) -> TxnFuture<'t, T> + Send,
{
    run_with(db, &RetryPolicy::default(), f).await
}

/// Runs `f` in a transaction and commits, retrying retryable errors per `policy`.
pub async fn run_with<T, F>(db: &dyn KvEngine, policy: &RetryPolicy, mut f: F) -> Result<T>
where
    T: Send,
    F: for<'t> FnMut(&'t mut dyn Transaction) -> TxnFuture<'t, T> + Send,
{
    let mut backoff = policy.initial_backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut txn = db.begin().await?;
        let result = match f(txn.as_mut()).await {
            Ok(v) => txn.commit().await.map(|_| v),
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                let jitter = rand_jitter(backoff);
                tracing::trace!(attempt, error = %e, "kv transaction retry");
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(policy.max_backoff);
            }
            Err(e) => return Err(e),
        }
    }
}

fn rand_jitter(d: Duration) -> Duration {
    // Cheap jitter from the clock's low bits; no need for a real RNG here.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    let max = d.as_nanos().max(1) as u32;
    Duration::from_nanos((nanos % max) as u64)
}
