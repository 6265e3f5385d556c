//! Users and tokens: who a request comes from, as meta, storage and mgmtd decide it.
//!
//! A request carries a token in its `RequestHeader`. It is one of:
//! - the **cluster token** (each daemon's `token` config): daemons, FUSE mounts and ops tools. Such
//!   a caller is trusted to state the identity it acts for (`uid`/`gid`/`gids` in the header), the
//!   way a FUSE mount acts for each local user ([`Principal::Cluster`]);
//! - a **user token**, issued by mgmtd (`t3fs admin user-add`): the caller *is* that user; meta
//!   takes uid, gid and groups from the user record and ignores the header's ([`Principal::User`]);
//! - anything else: refused with `Unauthenticated` before any state is touched. Only when the
//!   cluster token is empty (a dev cluster without authentication) is every request admitted
//!   ([`Principal::Open`], header identity as for the cluster token).
//!
//! mgmtd stores users in the KV store with the SHA-256 of their token, never the token itself, and
//! serves the table (hashes only) to daemons holding the cluster token (`GetUserTable`). Meta and
//! storage keep it in a [`UserCache`], polled by version; a token the cache does not know triggers
//! one rate-limited refresh before it is refused, so a user added a moment ago works at once. A
//! removed user or replaced token stops working within one poll interval.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::auth::constant_time_eq;
use crate::mgmtd_conn::MgmtdConn;
use crate::proto::{self, RequestHeader};
use crate::status::{Error, StatusCode};

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

/// Shortest token a user may choose (generated tokens are 64 hex digits).
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted anywhere.
pub const MAX_TOKEN_LEN: usize = 256;
/// A cache refreshes at most this often because of tokens it does not know.
pub const MISS_REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// The SHA-256 of `token`.
pub fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: 32 bytes from the thread CSPRNG, as 64 hex digits.
pub fn generate_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Checks a token a user chose: `MIN_TOKEN_LEN..=MAX_TOKEN_LEN` printable ASCII, no spaces.
pub fn check_new_token(token: &str) -> Result<(), Error> {
    if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
        return Err(Error::invalid(format!(
            "a token must have {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters (got {})",
            token.len()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid("a token may only hold printable ASCII characters without spaces"));
    }
    Ok(())
}

/// A user's identity as its record states it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
    pub admin: bool,
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No authentication configured (empty cluster token) and the token names no user.
    Open,
    /// The cluster token: a daemon, FUSE mount or ops tool, trusted to state whom it acts for.
    Cluster,
    /// A user's token.
    User(Identity),
}

impl Principal {
    /// The cluster token, an admin user, or an open cluster.
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Open | Principal::Cluster => true,
            Principal::User(id) => id.admin,
        }
    }

    /// `PermissionDenied` unless [`Self::is_admin`].
    pub fn require_admin(&self) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::new(StatusCode::PermissionDenied, "this operation needs an admin user or the cluster token"))
        }
    }

    /// `PermissionDenied` unless the cluster token (or an open cluster): daemon-only operations.
    pub fn require_cluster(&self) -> Result<(), Error> {
        match self {
            Principal::Open | Principal::Cluster => Ok(()),
            Principal::User(_) => Err(Error::new(
                StatusCode::PermissionDenied,
                "this operation needs the cluster token, not a user token",
            )),
        }
    }

    /// The identity file-system permission checks use: a user's from its record, otherwise the one
    /// the (trusted) caller states in the header.
    pub fn identity(&self, header: Option<&RequestHeader>) -> Identity {
        match self {
            Principal::User(id) => id.clone(),
            Principal::Open | Principal::Cluster => match header {
                Some(h) => Identity { uid: h.uid, gid: h.gid, gids: h.gids.clone(), admin: false },
                None => Identity::default(),
            },
        }
    }

    /// The uid to record for this caller (sessions, logs): a user's, else 0.
    pub fn uid(&self) -> u32 {
        match self {
            Principal::User(id) => id.uid,
            _ => 0,
        }
    }
}

/// Users by token hash, at one version of mgmtd's user table.
#[derive(Debug, Default)]
pub struct Directory {
    version: u64,
    by_hash: HashMap<TokenHash, Identity>,
}

impl Directory {
    /// The directory of `users` (records whose hash is not 32 bytes are skipped: they match nothing).
    pub fn new<'a>(version: u64, users: impl IntoIterator<Item = &'a proto::UserInfo>) -> Self {
        let by_hash = users
            .into_iter()
            .filter_map(|u| {
                let hash: TokenHash = u.token_sha256.as_ref().try_into().ok()?;
                Some((hash, Identity { uid: u.uid, gid: u.gid, gids: u.gids.clone(), admin: u.admin }))
            })
            .collect();
        Self { version, by_hash }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The user whose token this is.
    pub fn lookup(&self, token: &str) -> Option<&Identity> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        self.by_hash.get(&token_hash(token))
    }

    /// Decides who `token` is (rules in the module note); `Unauthenticated` when nobody.
    pub fn authenticate(&self, cluster_token: &str, token: &str) -> Result<Principal, Error> {
        if !cluster_token.is_empty() && constant_time_eq(token.as_bytes(), cluster_token.as_bytes()) {
            return Ok(Principal::Cluster);
        }
        if let Some(id) = self.lookup(token) {
            return Ok(Principal::User(id.clone()));
        }
        if cluster_token.is_empty() {
            return Ok(Principal::Open);
        }
        Err(unauthenticated(token))
    }
}

fn unauthenticated(token: &str) -> Error {
    let why = if token.is_empty() { "the request carries no token" } else { "the token is not valid" };
    Error::new(
        StatusCode::Unauthenticated,
        format!("{why}: use the cluster token or a user token from `t3fs admin user-add`"),
    )
}

struct CacheInner {
    dir: RwLock<Arc<Directory>>,
    /// Where to fetch the table, with the cluster token; `None` for a fixed directory.
    source: Option<(MgmtdConn, String)>,
    /// When the last fetch after a miss started; serialises and rate-limits those fetches.
    last_miss_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// A daemon's copy of mgmtd's user table. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct UserCache {
    inner: Arc<CacheInner>,
}

impl UserCache {
    fn with(dir: Directory, source: Option<(MgmtdConn, String)>) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                dir: RwLock::new(Arc::new(dir)),
                source,
                last_miss_fetch: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// A cache that fetches from mgmtd through `conn` with the cluster token `token`.
    pub fn new(conn: MgmtdConn, token: String) -> Self {
        Self::with(Directory::default(), Some((conn, token)))
    }

    /// A cache that never fetches (tests).
    pub fn fixed(dir: Directory) -> Self {
        Self::with(dir, None)
    }

    /// The current directory.
    pub fn get(&self) -> Arc<Directory> {
        self.inner.dir.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs `table` unless the cache already has a newer version.
    pub fn install(&self, table: &proto::UserTable) {
        let mut g = self.inner.dir.write().unwrap_or_else(|p| p.into_inner());
        if table.version >= g.version() {
            *g = Arc::new(Directory::new(table.version, &table.users));
        }
    }

    /// Fetches the table from mgmtd if it changed; returns whether it did.
    pub async fn refresh(&self) -> Result<bool, Error> {
        let Some((conn, token)) = &self.inner.source else { return Ok(false) };
        let known = self.get().version();
        let rsp = conn
            .call(|mut c| {
                let header =
                    RequestHeader { request_id: crate::new_request_id(), token: token.clone(), ..Default::default() };
                async move { c.get_user_table(proto::GetUserTableReq { header: Some(header), known_version: known }).await }
            })
            .await?
            .into_inner();
        match rsp.table {
            Some(t) => {
                self.install(&t);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// After a miss: refreshes unless another refresh after a miss started less than
    /// [`MISS_REFRESH_INTERVAL`] ago (concurrent misses wait for one fetch).
    async fn refresh_after_miss(&self) {
        if self.inner.source.is_none() {
            return;
        }
        let mut last = self.inner.last_miss_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < MISS_REFRESH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh().await {
            tracing::debug!(error = %e, "user table refresh after an unknown token failed");
        }
    }

    /// Polls mgmtd every `interval` until `cancel` fires (errors are logged and retried).
    pub fn spawn_poller(&self, interval: Duration, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        crate::periodic::spawn_every(
            crate::periodic::First::Now,
            move || interval,
            cancel,
            move || {
                let cache = cache.clone();
                async move {
                    if let Err(e) = cache.refresh().await {
                        tracing::debug!(error = %e, "user table refresh failed");
                    }
                }
            },
        )
    }
}

/// A daemon's token check: its cluster token and, when it knows mgmtd, the user table.
#[derive(Clone)]
pub struct Authenticator {
    cluster_token: Arc<str>,
    users: Option<UserCache>,
}

impl Authenticator {
    /// Checks the cluster token only (no users known).
    pub fn new(cluster_token: &str) -> Self {
        Self { cluster_token: cluster_token.into(), users: None }
    }

    /// Also admits the users of `users`.
    pub fn with_users(mut self, users: UserCache) -> Self {
        self.users = Some(users);
        self
    }

    /// The user cache, if any.
    pub fn users(&self) -> Option<&UserCache> {
        self.users.as_ref()
    }

    fn decide(&self, token: &str) -> Result<Principal, Error> {
        match &self.users {
            Some(u) => u.get().authenticate(&self.cluster_token, token),
            None => Directory::default().authenticate(&self.cluster_token, token),
        }
    }

    /// Who `token` is; a token the cache does not know triggers one (rate-limited) refresh first.
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal, Error> {
        match self.decide(token) {
            Err(e) if e.code == StatusCode::Unauthenticated && !token.is_empty() => match &self.users {
                Some(u) => {
                    u.refresh_after_miss().await;
                    self.decide(token)
                }
                None => Err(e),
            },
            other => other,
        }
    }

    /// [`Self::authenticate_token`] on an optional header (a missing header carries no token).
    pub async fn authenticate(&self, header: Option<&RequestHeader>) -> Result<Principal, Error> {
        self.authenticate_token(header.map(|h| h.token.as_str()).unwrap_or("")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, token: &str, admin: bool) -> proto::UserInfo {
        proto::UserInfo {
            uid,
            gid: uid + 1000,
            gids: vec![7],
            admin,
            token_sha256: token_hash(token).to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn tokens_are_checked_and_generated() {
        assert!(check_new_token("short").is_err());
        assert!(check_new_token("has a space in it!!").is_err());
        assert!(check_new_token(&"x".repeat(MAX_TOKEN_LEN + 1)).is_err());
        assert!(check_new_token("0123456789abcdef").is_ok());
        let (a, b) = (generate_token(), generate_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(check_new_token(&a).is_ok());
        assert_eq!(hex::encode(token_hash("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn who_is_who() {
        let dir = Directory::new(3, &[user(5, "alice-token-12345", false), user(6, "admin-token-12345", true)]);
        assert_eq!(dir.len(), 2);
        assert_eq!(dir.authenticate("cluster", "cluster").unwrap(), Principal::Cluster);
        let alice = dir.authenticate("cluster", "alice-token-12345").unwrap();
        assert!(matches!(&alice, Principal::User(id) if id.uid == 5 && id.gid == 1005 && !id.admin));
        assert!(!alice.is_admin());
        assert_eq!(alice.require_admin().unwrap_err().code, StatusCode::PermissionDenied);
        assert_eq!(alice.require_cluster().unwrap_err().code, StatusCode::PermissionDenied);
        assert!(dir.authenticate("cluster", "admin-token-12345").unwrap().is_admin());
        for bad in ["", "clusterX", "alice-token-1234", "cluste"] {
            assert_eq!(dir.authenticate("cluster", bad).unwrap_err().code, StatusCode::Unauthenticated, "{bad}");
        }
        // Open cluster: anything goes, but a user token still names its user.
        assert_eq!(dir.authenticate("", "whatever").unwrap(), Principal::Open);
        assert!(matches!(dir.authenticate("", "alice-token-12345").unwrap(), Principal::User(_)));
    }

    #[test]
    fn identity_comes_from_the_record_for_users_only() {
        let h = RequestHeader { uid: 0, gid: 0, gids: vec![1], ..Default::default() };
        let id = Identity { uid: 5, gid: 6, gids: vec![], admin: false };
        assert_eq!(Principal::User(id.clone()).identity(Some(&h)), id);
        assert_eq!(Principal::Cluster.identity(Some(&h)).gids, vec![1]);
        assert_eq!(Principal::Open.identity(None), Identity::default());
    }

    #[test]
    fn malformed_hashes_match_nothing_and_old_tables_are_ignored() {
        let mut bad = user(9, "nine-token-123456", false);
        bad.token_sha256.truncate(31);
        let cache = UserCache::fixed(Directory::new(1, &[bad]));
        assert!(cache.get().is_empty());
        cache.install(&proto::UserTable { version: 4, users: vec![user(9, "nine-token-123456", false)] });
        assert_eq!(cache.get().len(), 1);
        cache.install(&proto::UserTable { version: 3, users: vec![] });
        assert_eq!(cache.get().version(), 4);
    }

    #[tokio::test]
    async fn authenticator_without_users_checks_the_cluster_token() {
        let a = Authenticator::new("secret");
        assert_eq!(a.authenticate_token("secret").await.unwrap(), Principal::Cluster);
        assert_eq!(a.authenticate(None).await.unwrap_err().code, StatusCode::Unauthenticated);
        let a = Authenticator::new("secret")
            .with_users(UserCache::fixed(Directory::new(1, &[user(5, "alice-token-12345", false)])));
        assert!(matches!(a.authenticate_token("alice-token-12345").await.unwrap(), Principal::User(_)));
        assert_eq!(a.authenticate_token("nobody-token-1234").await.unwrap_err().code, StatusCode::Unauthenticated);
    }
}
