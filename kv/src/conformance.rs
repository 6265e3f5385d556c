//! The conformance suite every backend must pass: FoundationDB's transaction semantics as the
//! rest of t3fs relies on them (see the crate docs). Public, not `cfg(test)`, so a backend that
//! can only run elsewhere (FoundationDB needs `libfdb_c` and a cluster) can run it there:
//!
//! ```ignore
//! t3fs_kv::conformance::run_all(&my_store).await;
//! ```
//!
//! Each check opens the store, works only under its own key prefix (`t3fs-conformance/<name>/`),
//! clears that prefix first, and drops every handle before returning, so the checks can share
//! one store (even a real FoundationDB cluster) and run in any order. Failures panic.
use std::sync::Arc;

use crate::{Db, KeyValue, KvError, MAX_TRANSACTION_BYTES, RangeOpts, Transaction, prefix_end, run};

/// A store under test.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Opens the store. When `durable()`, a later `open` after every handle was dropped must see
    /// everything committed before.
    async fn open(&self) -> crate::Result<Db>;
    /// Whether committed data survives dropping every handle and opening again (false for mem).
    fn durable(&self) -> bool;
}

/// A check of the suite.
pub type Check = for<'a> fn(&'a dyn Store) -> futures::future::BoxFuture<'a, ()>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name.
        pub const CHECKS: &[(&str, Check)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

/// Invokes `$m!($($arg,)* <every check name>)`: the one list of checks, shared by [`CHECKS`] and by
/// test crates that want one test per check (see `kv/tests/conformance.rs`).
#[macro_export]
macro_rules! with_conformance_checks {
    ($m:ident $(, $arg:tt)*) => {
        $m!($($arg,)*
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

with_conformance_checks!(checks);

/// Runs every check in order against `store`, logging each name.
pub async fn run_all(store: &dyn Store) {
    for (name, check) in CHECKS {
        tracing::info!(check = name, "kv conformance");
        check(store).await;
    }
}

fn ns(name: &str) -> Vec<u8> {
    format!("t3fs-conformance/{name}/").into_bytes()
}

fn key(ns: &[u8], suffix: &str) -> Vec<u8> {
    let mut k = ns.to_vec();
    k.extend_from_slice(suffix.as_bytes());
    k
}

fn end_of(ns: &[u8]) -> Vec<u8> {
    prefix_end(ns).expect("conformance prefixes never end in 0xff")
}

/// Opens the store and clears this check's prefix.
async fn fresh(store: &dyn Store, name: &str) -> (Db, Vec<u8>) {
    let db = store.open().await.expect("open the store");
    let p = ns(name);
    let mut t = db.begin().await.unwrap();
    t.clear_range(&p, &end_of(&p));
    t.commit().await.expect("clear the check's prefix");
    (db, p)
}

async fn put(db: &Db, pairs: &[(&[u8], &[u8])]) {
    let mut t = db.begin().await.unwrap();
    for (k, v) in pairs {
        t.set(k, v);
    }
    t.commit().await.expect("commit setup writes");
}

async fn get(db: &Db, k: &[u8]) -> Option<Vec<u8>> {
    db.begin().await.unwrap().get(k, true).await.unwrap()
}

async fn range(t: &mut dyn Transaction, p: &[u8], limit: usize, reverse: bool) -> Vec<String> {
    let opts = RangeOpts { limit, reverse, snapshot: false };
    let kvs = t.get_range(p, &end_of(p), opts).await.unwrap();
    suffixes(p, &kvs)
}

fn suffixes(p: &[u8], kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key[p.len()..]).into_owned()).collect()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub async fn read_your_writes_point(store: &dyn Store) {
    let (db, p) = fresh(store, "ryw_point").await;
    put(&db, &[(&key(&p, "a"), b"old"), (&key(&p, "b"), b"b")]).await;
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "a"), b"new");
    t.set(&key(&p, "c"), b"c");
    t.clear(&key(&p, "b"));
    assert_eq!(t.get(&key(&p, "a"), false).await.unwrap(), Some(b"new".to_vec()));
    assert_eq!(t.get(&key(&p, "c"), true).await.unwrap(), Some(b"c".to_vec()));
    assert_eq!(t.get(&key(&p, "b"), false).await.unwrap(), None, "a cleared key reads as absent");
    t.set(&key(&p, "b"), b"again");
    assert_eq!(t.get(&key(&p, "b"), false).await.unwrap(), Some(b"again".to_vec()));
    // Others do not see uncommitted writes.
    assert_eq!(get(&db, &key(&p, "a")).await, Some(b"old".to_vec()));
    assert_eq!(get(&db, &key(&p, "c")).await, None);
    t.commit().await.unwrap();
    assert_eq!(get(&db, &key(&p, "a")).await, Some(b"new".to_vec()));
    assert_eq!(get(&db, &key(&p, "b")).await, Some(b"again".to_vec()));
    assert_eq!(get(&db, &key(&p, "c")).await, Some(b"c".to_vec()));
}

pub async fn read_your_writes_range(store: &dyn Store) {
    let (db, p) = fresh(store, "ryw_range").await;
    put(&db, &[(&key(&p, "b"), b"1"), (&key(&p, "d"), b"1"), (&key(&p, "f"), b"1")]).await;
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "a"), b"2");
    t.set(&key(&p, "e"), b"2");
    t.set(&key(&p, "d"), b"2");
    t.clear(&key(&p, "f"));
    t.set(&key(&p, "g"), b"2");
    assert_eq!(range(t.as_mut(), &p, 0, false).await, strs(&["a", "b", "d", "e", "g"]));
    assert_eq!(range(t.as_mut(), &p, 0, true).await, strs(&["g", "e", "d", "b", "a"]));
    assert_eq!(range(t.as_mut(), &p, 3, false).await, strs(&["a", "b", "d"]));
    assert_eq!(range(t.as_mut(), &p, 2, true).await, strs(&["g", "e"]));
    let opts = RangeOpts::default();
    let kvs = t.get_range(&key(&p, "c"), &key(&p, "e"), opts).await.unwrap();
    assert_eq!(kvs, vec![KeyValue { key: key(&p, "d"), value: b"2".to_vec() }], "overwritten value wins");
}

pub async fn read_your_writes_clear_range(store: &dyn Store) {
    let (db, p) = fresh(store, "ryw_clear_range").await;
    let ks = ["a", "b", "c", "d", "e"];
    let pairs: Vec<(Vec<u8>, &[u8])> = ks.iter().map(|s| (key(&p, s), &b"1"[..])).collect();
    let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
    put(&db, &refs).await;
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "c2"), b"own");
    t.clear_range(&key(&p, "b"), &key(&p, "d"));
    assert_eq!(t.get(&key(&p, "b"), false).await.unwrap(), None);
    assert_eq!(t.get(&key(&p, "c2"), false).await.unwrap(), None, "clear_range hides earlier own writes");
    assert_eq!(t.get(&key(&p, "d"), false).await.unwrap(), Some(b"1".to_vec()), "end is exclusive");
    assert_eq!(range(t.as_mut(), &p, 0, false).await, strs(&["a", "d", "e"]));
    t.set(&key(&p, "c"), b"later");
    assert_eq!(range(t.as_mut(), &p, 0, false).await, strs(&["a", "c", "d", "e"]), "a later set survives");
    assert_eq!(range(t.as_mut(), &p, 0, true).await, strs(&["e", "d", "c", "a"]));
    assert_eq!(range(t.as_mut(), &p, 2, false).await, strs(&["a", "c"]));
    t.commit().await.unwrap();
    let mut r = db.begin().await.unwrap();
    assert_eq!(range(r.as_mut(), &p, 0, false).await, strs(&["a", "c", "d", "e"]));
    assert_eq!(r.get(&key(&p, "c"), false).await.unwrap(), Some(b"later".to_vec()));
}

pub async fn snapshot_isolation(store: &dyn Store) {
    let (db, p) = fresh(store, "snapshot_isolation").await;
    put(&db, &[(&key(&p, "k"), b"1")]).await;
    let mut old = db.begin().await.unwrap();
    put(&db, &[(&key(&p, "k"), b"2"), (&key(&p, "new"), b"2")]).await;
    assert_eq!(old.get(&key(&p, "k"), false).await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(old.get(&key(&p, "new"), false).await.unwrap(), None);
    assert_eq!(range(old.as_mut(), &p, 0, false).await, strs(&["k"]));
    assert_eq!(get(&db, &key(&p, "k")).await, Some(b"2".to_vec()));
}

pub async fn read_versions_increase(store: &dyn Store) {
    let (db, p) = fresh(store, "read_versions").await;
    let before = db.begin().await.unwrap().read_version();
    put(&db, &[(&key(&p, "k"), b"1")]).await;
    let after = db.begin().await.unwrap().read_version();
    assert!(after > before, "read version {after} after a commit must exceed {before}");
}

pub async fn write_write_on_read_key_conflicts(store: &dyn Store) {
    let (db, p) = fresh(store, "ww_conflict").await;
    let k = key(&p, "k");
    put(&db, &[(&k, b"0")]).await;
    let mut a = db.begin().await.unwrap();
    let mut b = db.begin().await.unwrap();
    assert_eq!(a.get(&k, false).await.unwrap(), Some(b"0".to_vec()));
    a.set(&k, b"a");
    b.set(&k, b"b");
    b.commit().await.unwrap();
    assert_eq!(a.commit().await, Err(KvError::Conflict));
    assert_eq!(get(&db, &k).await, Some(b"b".to_vec()));
}

pub async fn read_write_conflict(store: &dyn Store) {
    let (db, p) = fresh(store, "rw_conflict").await;
    let mut a = db.begin().await.unwrap();
    let mut b = db.begin().await.unwrap();
    assert_eq!(a.get(&key(&p, "x"), false).await.unwrap(), None);
    a.set(&key(&p, "y"), b"a");
    b.set(&key(&p, "x"), b"b");
    b.commit().await.unwrap();
    assert_eq!(a.commit().await, Err(KvError::Conflict));
    // Blind writes (no reads) never conflict, whatever they overwrite.
    let mut c = db.begin().await.unwrap();
    let mut d = db.begin().await.unwrap();
    c.set(&key(&p, "x"), b"c");
    d.set(&key(&p, "x"), b"d");
    d.commit().await.unwrap();
    c.commit().await.unwrap();
    assert_eq!(get(&db, &key(&p, "x")).await, Some(b"c".to_vec()), "the later commit wins");
}

pub async fn read_only_never_conflicts(store: &dyn Store) {
    let (db, p) = fresh(store, "read_only").await;
    let mut a = db.begin().await.unwrap();
    assert_eq!(a.get(&key(&p, "k"), false).await.unwrap(), None);
    put(&db, &[(&key(&p, "k"), b"1")]).await;
    a.commit().await.expect("a read-only transaction commits");
}

pub async fn phantom_conflict(store: &dyn Store) {
    let (db, p) = fresh(store, "phantom").await;
    put(&db, &[(&key(&p, "a"), b"1"), (&key(&p, "c"), b"1")]).await;
    let mut a = db.begin().await.unwrap();
    let kvs = a.get_range(&key(&p, "a"), &key(&p, "c"), RangeOpts::default()).await.unwrap();
    assert_eq!(suffixes(&p, &kvs), strs(&["a"]));
    a.set(&key(&p, "z"), b"a");
    put(&db, &[(&key(&p, "b"), b"phantom")]).await;
    assert_eq!(a.commit().await, Err(KvError::Conflict), "an insert into a read range conflicts");
    // An insert just outside the range read does not.
    let mut a = db.begin().await.unwrap();
    a.get_range(&key(&p, "a"), &key(&p, "c"), RangeOpts::default()).await.unwrap();
    a.set(&key(&p, "z"), b"a");
    put(&db, &[(&key(&p, "c"), b"2")]).await;
    a.commit().await.expect("the range end is exclusive");
}

pub async fn limited_range_read_conflicts_only_on_covered_part(store: &dyn Store) {
    let (db, p) = fresh(store, "limited_range").await;
    put(&db, &[(&key(&p, "a"), b"1"), (&key(&p, "c"), b"1"), (&key(&p, "e"), b"1")]).await;
    // Forward, limit 2: covers [a, c] only.
    let mut t = db.begin().await.unwrap();
    assert_eq!(range(t.as_mut(), &p, 2, false).await, strs(&["a", "c"]));
    t.set(&key(&p, "out"), b"1");
    put(&db, &[(&key(&p, "d"), b"1")]).await;
    t.commit().await.expect("a write beyond the last key returned does not conflict");
    let mut t = db.begin().await.unwrap();
    assert_eq!(range(t.as_mut(), &p, 2, false).await, strs(&["a", "c"]));
    t.set(&key(&p, "out"), b"2");
    put(&db, &[(&key(&p, "b"), b"1")]).await;
    assert_eq!(t.commit().await, Err(KvError::Conflict));
    // Reverse, limit 1: covers [e, end) only.
    let mut t = db.begin().await.unwrap();
    assert_eq!(range(t.as_mut(), &p, 1, true).await, strs(&["out"]));
    t.set(&key(&p, "zz"), b"1");
    put(&db, &[(&key(&p, "a0"), b"1")]).await;
    t.commit().await.expect("a write below the last key returned does not conflict");
    let mut t = db.begin().await.unwrap();
    assert_eq!(range(t.as_mut(), &p, 1, true).await, strs(&["zz"]));
    t.set(&key(&p, "zzz"), b"1");
    put(&db, &[(&key(&p, "zz0"), b"1")]).await;
    assert_eq!(t.commit().await, Err(KvError::Conflict));
}

pub async fn snapshot_reads_do_not_conflict(store: &dyn Store) {
    let (db, p) = fresh(store, "snapshot_reads").await;
    let mut a = db.begin().await.unwrap();
    assert_eq!(a.get(&key(&p, "k"), true).await.unwrap(), None);
    let opts = RangeOpts { snapshot: true, ..RangeOpts::default() };
    assert!(a.get_range(&p, &end_of(&p), opts).await.unwrap().is_empty());
    a.set(&key(&p, "out"), b"a");
    put(&db, &[(&key(&p, "k"), b"1"), (&key(&p, "m"), b"1")]).await;
    a.commit().await.expect("snapshot reads add no conflict ranges");
}

pub async fn explicit_conflict_ranges(store: &dyn Store) {
    let (db, p) = fresh(store, "explicit_ranges").await;
    // An explicit read range conflicts with a real write into it.
    let mut a = db.begin().await.unwrap();
    a.add_read_conflict_range(&key(&p, "m"), &key(&p, "n"));
    a.set(&key(&p, "a"), b"a");
    put(&db, &[(&key(&p, "m5"), b"1")]).await;
    assert_eq!(a.commit().await, Err(KvError::Conflict));
    // An explicit write range (with no data written) conflicts with a real read of it.
    let mut a = db.begin().await.unwrap();
    let mut b = db.begin().await.unwrap();
    assert_eq!(a.get(&key(&p, "q"), false).await.unwrap(), None);
    a.set(&key(&p, "a"), b"a");
    b.add_write_conflict_range(&key(&p, "q"), &key(&p, "r"));
    b.commit().await.unwrap();
    assert_eq!(a.commit().await, Err(KvError::Conflict));
    assert_eq!(get(&db, &key(&p, "q")).await, None, "a write conflict range writes no data");
    // Disjoint explicit ranges do not conflict.
    let mut a = db.begin().await.unwrap();
    let mut b = db.begin().await.unwrap();
    a.add_read_conflict_range(&key(&p, "s"), &key(&p, "t"));
    a.set(&key(&p, "a"), b"a2");
    b.add_write_conflict_range(&key(&p, "t"), &key(&p, "u"));
    b.commit().await.unwrap();
    a.commit().await.expect("[s,t) and [t,u) are disjoint");
}

pub async fn disjoint_transactions_commit(store: &dyn Store) {
    let (db, p) = fresh(store, "disjoint").await;
    let mut a = db.begin().await.unwrap();
    let mut b = db.begin().await.unwrap();
    assert_eq!(a.get(&key(&p, "a"), false).await.unwrap(), None);
    assert_eq!(b.get(&key(&p, "b"), false).await.unwrap(), None);
    a.set(&key(&p, "a"), b"a");
    b.set(&key(&p, "b"), b"b");
    let (ra, rb) = futures::join!(a.commit(), b.commit());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(get(&db, &key(&p, "a")).await, Some(b"a".to_vec()));
    assert_eq!(get(&db, &key(&p, "b")).await, Some(b"b".to_vec()));
}

pub async fn failed_commit_writes_nothing(store: &dyn Store) {
    let (db, p) = fresh(store, "failed_commit").await;
    let mut a = db.begin().await.unwrap();
    assert_eq!(a.get(&key(&p, "k"), false).await.unwrap(), None);
    a.set(&key(&p, "x"), b"a");
    a.clear_range(&key(&p, "m"), &key(&p, "n"));
    put(&db, &[(&key(&p, "k"), b"1"), (&key(&p, "m1"), b"1")]).await;
    assert_eq!(a.commit().await, Err(KvError::Conflict));
    assert_eq!(get(&db, &key(&p, "x")).await, None);
    assert_eq!(get(&db, &key(&p, "m1")).await, Some(b"1".to_vec()));
}

pub async fn retry_loop_converges(store: &dyn Store) {
    let (db, p) = fresh(store, "retry_loop").await;
    let counter = Arc::new(key(&p, "counter"));
    let tasks = (0..8).map(|_| {
        let (db, counter) = (db.clone(), counter.clone());
        async move {
            run(db.as_ref(), |t| {
                let counter = counter.clone();
                Box::pin(async move {
                    let n = match t.get(&counter, false).await? {
                        Some(v) => u64::from_be_bytes(v.as_slice().try_into().expect("8-byte counter")),
                        None => 0,
                    };
                    tokio::task::yield_now().await; // let the others read the same value
                    t.set(&counter, &(n + 1).to_be_bytes());
                    Ok(n)
                })
            })
            .await
        }
    });
    let mut seen: Vec<u64> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<u64>>(), "each increment saw a distinct value");
    assert_eq!(get(&db, &counter).await, Some(8u64.to_be_bytes().to_vec()));
}

pub async fn transaction_too_large(store: &dyn Store) {
    let (db, p) = fresh(store, "too_large").await;
    let value = vec![7u8; 90_000];
    let mut t = db.begin().await.unwrap();
    let n = MAX_TRANSACTION_BYTES / value.len() + 1;
    for i in 0..n {
        t.set(&key(&p, &format!("{i:04}")), &value);
    }
    assert!(matches!(t.commit().await, Err(KvError::TransactionTooLarge(_))));
    assert_eq!(get(&db, &key(&p, "0000")).await, None);
    assert!(!KvError::TransactionTooLarge(0).is_retryable());
}

pub async fn key_and_value_size_limits(store: &dyn Store) {
    let (db, p) = fresh(store, "size_limits").await;
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, &"k".repeat(crate::MAX_KEY_BYTES)), b"v");
    assert!(matches!(t.commit().await, Err(KvError::TooLarge(_))), "oversized key");
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "v"), &vec![0u8; crate::MAX_VALUE_BYTES + 1]);
    t.set(&key(&p, "ok"), b"1");
    assert!(matches!(t.commit().await, Err(KvError::TooLarge(_))), "oversized value");
    assert_eq!(get(&db, &key(&p, "ok")).await, None, "nothing of a rejected transaction is written");
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "max"), &vec![1u8; crate::MAX_VALUE_BYTES]);
    t.commit().await.expect("a value at the limit is fine");
}

pub async fn range_limit_and_reverse(store: &dyn Store) {
    let (db, p) = fresh(store, "limit_reverse").await;
    let names: Vec<String> = (0..50).map(|i| format!("{i:02}")).collect();
    let mut t = db.begin().await.unwrap();
    for n in &names {
        t.set(&key(&p, n), n.as_bytes());
    }
    t.commit().await.unwrap();
    let mut t = db.begin().await.unwrap();
    assert_eq!(range(t.as_mut(), &p, 0, false).await, names);
    let rev: Vec<String> = names.iter().rev().cloned().collect();
    assert_eq!(range(t.as_mut(), &p, 0, true).await, rev);
    assert_eq!(range(t.as_mut(), &p, 5, false).await, names[..5].to_vec());
    assert_eq!(range(t.as_mut(), &p, 5, true).await, rev[..5].to_vec());
    assert_eq!(range(t.as_mut(), &p, 500, false).await, names);
    let kvs = t.get_range(&key(&p, "10"), &key(&p, "13"), RangeOpts { reverse: true, ..Default::default() }).await;
    let kvs = kvs.unwrap();
    assert_eq!(suffixes(&p, &kvs), strs(&["12", "11", "10"]));
    assert_eq!(kvs[0].value, b"12".to_vec());
    let empty = t.get_range(&key(&p, "13"), &key(&p, "10"), RangeOpts::default()).await.unwrap();
    assert!(empty.is_empty(), "an inverted range is empty");
}

pub async fn clear_range_semantics(store: &dyn Store) {
    let (db, p) = fresh(store, "clear_range").await;
    let names = ["a", "b", "b\0", "bz", "c", "d"];
    let pairs: Vec<(Vec<u8>, &[u8])> = names.iter().map(|s| (key(&p, s), &b"1"[..])).collect();
    let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
    put(&db, &refs).await;
    let mut t = db.begin().await.unwrap();
    t.clear_range(&key(&p, "b"), &key(&p, "c"));
    t.clear_range(&key(&p, "d"), &key(&p, "a")); // inverted: no-op
    t.commit().await.unwrap();
    let mut t = db.begin().await.unwrap();
    assert_eq!(range(t.as_mut(), &p, 0, false).await, strs(&["a", "c", "d"]));
    // A clear_range committed together with sets to keys in it: the later op wins.
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "a"), b"gone");
    t.clear_range(&p, &end_of(&p));
    t.set(&key(&p, "e"), b"kept");
    t.commit().await.unwrap();
    let mut t = db.begin().await.unwrap();
    assert_eq!(range(t.as_mut(), &p, 0, false).await, strs(&["e"]));
}

pub async fn durability_across_reopen(store: &dyn Store) {
    if !store.durable() {
        return;
    }
    let (db, p) = fresh(store, "durability").await;
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "k"), b"durable");
    t.set(&key(&p, "gone"), b"x");
    t.commit().await.unwrap();
    let mut t = db.begin().await.unwrap();
    t.clear(&key(&p, "gone"));
    t.commit().await.unwrap();
    let version = db.begin().await.unwrap().read_version();
    drop(db);
    let db = store.open().await.expect("reopen");
    let mut t = db.begin().await.unwrap();
    assert!(t.read_version() >= version, "read versions stay monotonic across reopen");
    assert_eq!(t.get(&key(&p, "k"), false).await.unwrap(), Some(b"durable".to_vec()));
    assert_eq!(t.get(&key(&p, "gone"), false).await.unwrap(), None);
    drop(t);
    put(&db, &[(&key(&p, "after"), b"1")]).await;
    assert!(db.begin().await.unwrap().read_version() > version);
}

pub async fn uncommitted_not_durable(store: &dyn Store) {
    if !store.durable() {
        return;
    }
    let (db, p) = fresh(store, "uncommitted").await;
    let mut t = db.begin().await.unwrap();
    t.set(&key(&p, "k"), b"never committed");
    drop(t);
    let mut conflicted = db.begin().await.unwrap();
    assert_eq!(conflicted.get(&key(&p, "c"), false).await.unwrap(), None);
    conflicted.set(&key(&p, "lost"), b"x");
    put(&db, &[(&key(&p, "c"), b"1")]).await;
    assert_eq!(conflicted.commit().await, Err(KvError::Conflict));
    drop(db);
    let db = store.open().await.expect("reopen");
    assert_eq!(get(&db, &key(&p, "k")).await, None);
    assert_eq!(get(&db, &key(&p, "lost")).await, None);
    assert_eq!(get(&db, &key(&p, "c")).await, Some(b"1".to_vec()));
}
