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
    ($backend:ident, $($name:ident),* $(,)?) => {
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

t3fs_kv::with_conformance_checks!(suite, mem);
t3fs_kv::with_conformance_checks!(suite, embedded);

#[test]
fn every_check_has_a_test() {
    // Pins the size of the shared check list (`with_conformance_checks!`), so a dropped check shows.
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
