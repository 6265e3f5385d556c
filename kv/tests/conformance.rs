//! Runs the conformance suite on the mem and embedded backends, one test per check and backend.
use std::sync::Arc;

use t3fs_kv::conformance::{self, Store};
use t3fs_kv::embedded::EmbeddedKv;
use t3fs_kv::mem::MemKv;
use t3fs_kv::{Db, Result};

struct Mem(Db);

#[async_trait::async_trait]
impl Store for Mem {
    async fn open(&self) -> Result<Db> {
        Ok(self.0.clone())
    }
    fn durable(&self) -> bool {
        false
    }
}

struct Embedded(tempfile::TempDir);

#[async_trait::async_trait]
impl Store for Embedded {
    async fn open(&self) -> Result<Db> {
        Ok(EmbeddedKv::open(self.0.path())?)
    }
    fn durable(&self) -> bool {
        true
    }
}

fn mem() -> Mem {
    Mem(MemKv::new())
}

fn embedded() -> Embedded {
    Embedded(tempfile::tempdir().unwrap())
}

async fn check(store: &dyn Store, name: &str) {
    let (_, f) = conformance::CHECKS.iter().find(|(n, _)| *n == name).expect("known check");
    f(store).await;
}

macro_rules! suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = super::$backend();
                    super::check(&store, stringify!($name)).await;
                }
            )*
        }
    };
}

macro_rules! all_checks {
    ($backend:ident) => {
        suite!($backend:
            read_your_writes_point,
            read_your_writes_range,
            read_your_writes_clear_range,
            snapshot_isolation,
            read_versions_increase,
            write_write_on_read_key_conflicts,
            read_write_conflict,
            read_only_never_conflicts,
            phantom_conflict,
            limited_range_read_conflicts_only_on_covered_part,
            snapshot_reads_do_not_conflict,
            explicit_conflict_ranges,
            disjoint_transactions_commit,
            failed_commit_writes_nothing,
            retry_loop_converges,
            transaction_too_large,
            key_and_value_size_limits,
            range_limit_and_reverse,
            clear_range_semantics,
            durability_across_reopen,
            uncommitted_not_durable,
        );
    };
}

all_checks!(mem);
all_checks!(embedded);

#[test]
fn every_check_has_a_test() {
    // Keeps the per-check test list above in sync with the suite.
    assert_eq!(conformance::CHECKS.len(), 21);
}

#[tokio::test]
async fn run_all_on_one_mem_store() {
    conformance::run_all(&mem()).await;
}

#[tokio::test]
async fn run_all_on_one_embedded_store() {
    conformance::run_all(&embedded()).await;
}

#[tokio::test]
async fn open_via_config() {
    let db = t3fs_kv::open(&t3fs_kv::KvConfig::Mem).await.unwrap();
    let _ = Arc::clone(&db).begin().await.unwrap();
}
