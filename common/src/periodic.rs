//! Background loops that run a job every interval until a cancellation token fires.
//!
//! Every daemon has a few of them (routing and user-table pollers, heartbeats, session extension,
//! GC, pruning, cleanup). They share one shape, kept here so that each follows the same rules:
//! - the job runs either at once or after the first wait ([`First`]), then after every wait;
//! - the interval is read before every wait, so a hot-updated setting takes effect at the next wait;
//! - cancellation ends the loop promptly, during the wait *or* in the middle of a job (an await point
//!   of the job's future): jobs must therefore be safe to stop at any await point, which every job we
//!   run is (KV transactions commit atomically or not at all; chunk removals are idempotent);
//! - a job reports its own errors (it returns `()`), so one failure never stops the loop.
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// When a periodic job runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum First {
    /// Run the job at once, then wait between runs (pollers: fresh state as soon as possible).
    Now,
    /// Wait one interval before the first run (housekeeping that need not run at start-up).
    AfterInterval,
}

/// Spawns a loop that runs `job` every `interval()` until `cancel` fires.
pub fn spawn_every<I, F, Fut>(first: First, interval: I, cancel: CancellationToken, mut job: F) -> JoinHandle<()>
where
    I: Fn() -> Duration + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut run_now = first == First::Now;
        loop {
            if !run_now {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(interval()) => {}
                }
            }
            run_now = false;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = job() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Starts a loop counting its runs; returns the counter, the token and the task.
    fn counting(first: First, interval: Duration) -> (Arc<AtomicU32>, CancellationToken, JoinHandle<()>) {
        let n = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let counter = n.clone();
        let task = spawn_every(
            first,
            move || interval,
            cancel.clone(),
            move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
        (n, cancel, task)
    }

    async fn stop(cancel: CancellationToken, task: JoinHandle<()>) {
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the loop ends promptly on cancel")
            .expect("the loop does not panic");
    }

    #[tokio::test]
    async fn first_run_now_or_after_one_interval() {
        // An hour-long interval: only the first-run rule can produce a run within the test.
        let hour = Duration::from_secs(3600);
        let (now, c1, t1) = counting(First::Now, hour);
        let (later, c2, t2) = counting(First::AfterInterval, hour);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while now.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(now.load(Ordering::SeqCst), 1);
        assert_eq!(later.load(Ordering::SeqCst), 0);
        stop(c1, t1).await;
        stop(c2, t2).await;
    }

    #[tokio::test]
    async fn repeats_every_interval() {
        let (n, cancel, task) = counting(First::AfterInterval, Duration::from_millis(5));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while n.load(Ordering::SeqCst) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(n.load(Ordering::SeqCst) >= 3);
        stop(cancel, task).await;
    }

    #[tokio::test]
    async fn cancel_stops_a_job_in_progress() {
        let cancel = CancellationToken::new();
        let (started, finished) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (s, f) = (started.clone(), finished.clone());
        let task = spawn_every(
            First::Now,
            || Duration::from_secs(1),
            cancel.clone(),
            move || {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    f.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop(cancel, task).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }
}
