//! Users, tokens and client sessions: the pure model (what a request would change) and its KV
//! records. The [`crate::service::Cluster`] methods that persist and install it are in
//! `crate::accounts_service`.
//!
//! Invariants: a user's token is stored only as its SHA-256, and no two users (nor a user and the
//! cluster token) share a token; user names are unique; the user table version goes up by one with
//! every change, so daemons polling `GetUserTable(known_version)` notice. A session belongs to the
//! uid that created it; another non-admin user cannot extend it.
use std::collections::BTreeMap;

use prost::Message;
use t3fs_common::proto::{ClientSession, UserInfo};
use t3fs_common::users::{self, Principal};
use t3fs_common::{Error, StatusCode};
use t3fs_kv::{KeyValue, KvEngine, RangeOpts};

use crate::keys;
use crate::store::Write;

/// Longest user name.
pub const MAX_NAME_LEN: usize = 64;
/// Most supplementary groups per user.
pub const MAX_GIDS: usize = 64;
/// Longest client id / description / hostname of a session.
pub const MAX_SESSION_FIELD: usize = 256;
/// Most live client sessions mgmtd keeps (a bound on memory; more are refused).
pub const MAX_SESSIONS: usize = 1_000_000;

/// Users and sessions as a primary mgmtd holds them.
#[derive(Debug, Default)]
pub struct Accounts {
    version: u64,
    users: BTreeMap<u32, UserInfo>,
    sessions: BTreeMap<String, ClientSession>,
}

/// A planned user change: the record to store (or the uid to delete) and the new token to return.
#[derive(Debug)]
pub struct UserChange {
    pub user: Option<UserInfo>,
    pub removed: Option<u32>,
    pub token: String,
}

impl Accounts {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every user, token hashes included.
    pub fn users(&self) -> impl Iterator<Item = &UserInfo> {
        self.users.values()
    }

    pub fn sessions(&self) -> impl Iterator<Item = &ClientSession> {
        self.sessions.values()
    }

    /// The directory token checks use.
    pub fn directory(&self) -> users::Directory {
        users::Directory::new(self.version, self.users.values())
    }

    fn check_token_free(&self, token: &str, cluster_token: &str, except_uid: Option<u32>) -> Result<(), Error> {
        let hash = users::token_hash(token);
        let clash =
            self.users.values().any(|u| Some(u.uid) != except_uid && u.token_sha256.as_ref() == hash.as_slice());
        if clash || (!cluster_token.is_empty() && token == cluster_token) {
            return Err(Error::new(StatusCode::AlreadyExists, "this token is already in use; choose another"));
        }
        Ok(())
    }

    /// Plans `AddUser`: a new user (`update == false`) or new attributes for an existing one.
    pub fn plan_add(
        &self,
        req: &t3fs_common::proto::AddUserReq,
        cluster_token: &str,
        now_ms: u64,
    ) -> Result<UserChange, Error> {
        check_name(&req.name)?;
        if req.gids.len() > MAX_GIDS {
            return Err(Error::invalid(format!("at most {MAX_GIDS} supplementary groups")));
        }
        if let Some(other) = self.users.values().find(|u| u.name == req.name && u.uid != req.uid) {
            return Err(Error::new(
                StatusCode::AlreadyExists,
                format!("user name {} is taken by uid {}", req.name, other.uid),
            ));
        }
        let mut gids = req.gids.clone();
        gids.sort_unstable();
        gids.dedup();
        match (self.users.get(&req.uid), req.update) {
            (Some(old), true) => {
                if !req.token.is_empty() {
                    return Err(Error::invalid("an update keeps the token; use set-token to replace it"));
                }
                let user = UserInfo { name: req.name.clone(), gid: req.gid, gids, admin: req.admin, ..old.clone() };
                Ok(UserChange { user: Some(user), removed: None, token: String::new() })
            }
            (None, true) => Err(Error::not_found(format!("no user with uid {}", req.uid))),
            (Some(_), false) => Err(Error::new(
                StatusCode::AlreadyExists,
                format!("uid {} already has a user (update it instead)", req.uid),
            )),
            (None, false) => {
                let token = self.new_token(&req.token, cluster_token, None)?;
                let user = UserInfo {
                    uid: req.uid,
                    name: req.name.clone(),
                    gid: req.gid,
                    gids,
                    admin: req.admin,
                    token_sha256: users::token_hash(&token).to_vec().into(),
                    created_ms: now_ms,
                    token_set_ms: now_ms,
                };
                Ok(UserChange { user: Some(user), removed: None, token })
            }
        }
    }

    fn new_token(&self, chosen: &str, cluster_token: &str, uid: Option<u32>) -> Result<String, Error> {
        let token = if chosen.is_empty() {
            users::generate_token()
        } else {
            users::check_new_token(chosen)?;
            chosen.to_string()
        };
        self.check_token_free(&token, cluster_token, uid)?;
        Ok(token)
    }

    /// Plans `SetUserToken`.
    pub fn plan_set_token(
        &self,
        uid: u32,
        chosen: &str,
        cluster_token: &str,
        now_ms: u64,
    ) -> Result<UserChange, Error> {
        let old = self.users.get(&uid).ok_or_else(|| Error::not_found(format!("no user with uid {uid}")))?;
        let token = self.new_token(chosen, cluster_token, Some(uid))?;
        let user =
            UserInfo { token_sha256: users::token_hash(&token).to_vec().into(), token_set_ms: now_ms, ..old.clone() };
        Ok(UserChange { user: Some(user), removed: None, token })
    }

    /// Plans `RemoveUser`.
    pub fn plan_remove(&self, uid: u32) -> Result<UserChange, Error> {
        if !self.users.contains_key(&uid) {
            return Err(Error::not_found(format!("no user with uid {uid}")));
        }
        Ok(UserChange { user: None, removed: Some(uid), token: String::new() })
    }

    /// The records a user change writes (the user and the bumped table version) and deletes.
    pub fn user_writes(&self, change: &UserChange) -> (Vec<Write>, Vec<Vec<u8>>) {
        let mut sets = vec![(keys::USER_TABLE_VERSION.to_vec(), keys::encode_version(self.version + 1))];
        if let Some(u) = &change.user {
            sets.push((keys::user(u.uid), u.encode_to_vec()));
        }
        let clears = change.removed.map(keys::user).into_iter().collect();
        (sets, clears)
    }

    /// Installs a persisted user change.
    pub fn apply_user(&mut self, change: UserChange) {
        self.version += 1;
        if let Some(u) = change.user {
            self.users.insert(u.uid, u);
        }
        if let Some(uid) = change.removed {
            self.users.remove(&uid);
        }
    }

    /// Plans `ExtendClientSession` for `caller` at `now_ms`.
    pub fn plan_extend(
        &self,
        req: &t3fs_common::proto::ExtendClientSessionReq,
        caller: &Principal,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<ClientSession, Error> {
        if req.client_id.is_empty() || req.client_id.len() > MAX_SESSION_FIELD {
            return Err(Error::invalid(format!("a client id must have 1 to {MAX_SESSION_FIELD} bytes")));
        }
        if req.hostname.len() > MAX_SESSION_FIELD || req.description.len() > MAX_SESSION_FIELD {
            return Err(Error::invalid(format!("hostname and description are limited to {MAX_SESSION_FIELD} bytes")));
        }
        let uid = caller.uid();
        let start_ms = match self.sessions.get(&req.client_id) {
            Some(old) if old.uid != uid && !caller.is_admin() => {
                return Err(Error::new(StatusCode::PermissionDenied, "this client session belongs to another user"));
            }
            Some(old) => old.start_ms,
            None if self.sessions.len() >= MAX_SESSIONS => {
                return Err(Error::new(StatusCode::Busy, "too many client sessions"));
            }
            None => now_ms,
        };
        Ok(ClientSession {
            client_id: req.client_id.clone(),
            hostname: req.hostname.clone(),
            description: req.description.clone(),
            uid,
            start_ms,
            last_extend_ms: now_ms,
            expire_ms: now_ms.saturating_add(timeout_ms),
        })
    }

    pub fn apply_session(&mut self, s: ClientSession) {
        self.sessions.insert(s.client_id.clone(), s);
    }

    /// Sessions that expired by `now_ms`.
    pub fn expired(&self, now_ms: u64) -> Vec<String> {
        self.sessions.values().filter(|s| s.expire_ms <= now_ms).map(|s| s.client_id.clone()).collect()
    }

    pub fn remove_sessions(&mut self, ids: &[String]) {
        for id in ids {
            self.sessions.remove(id);
        }
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(ok_char) {
        return Err(Error::invalid(format!(
            "a user name must have 1 to {MAX_NAME_LEN} characters from [A-Za-z0-9._-] (got {name:?})"
        )));
    }
    Ok(())
}

/// Reads users, sessions and the user table version in one transaction.
pub async fn load(db: &dyn KvEngine) -> Result<Accounts, Error> {
    let (users, sessions, version) = t3fs_kv::run(db, |txn| {
        Box::pin(async move {
            let range =
                |p: &'static [u8; 4]| (p.as_slice(), t3fs_kv::prefix_end(p).expect("ascii prefixes have an end"));
            let (ub, ue) = range(keys::USER);
            let users = txn.get_range(ub, &ue, RangeOpts::default()).await?;
            let (sb, se) = range(keys::SESSION);
            let sessions = txn.get_range(sb, &se, RangeOpts::default()).await?;
            let version = txn.get(keys::USER_TABLE_VERSION, false).await?;
            Ok((users, sessions, version))
        })
    })
    .await?;
    let corrupt = |kv: &KeyValue, why: String| {
        Error::internal(format!("corrupt mgmtd record {}: {why}", String::from_utf8_lossy(&kv.key)))
    };
    let mut acc = Accounts::default();
    if let Some(v) = version {
        acc.version = keys::decode_version(&v)
            .ok_or_else(|| Error::internal(format!("corrupt user table version record ({} bytes)", v.len())))?;
    }
    for kv in &users {
        let uid = keys::parse_user(&kv.key).ok_or_else(|| corrupt(kv, "malformed key".into()))?;
        let u = UserInfo::decode(kv.value.as_slice()).map_err(|e| corrupt(kv, e.to_string()))?;
        if u.uid != uid {
            return Err(corrupt(kv, format!("value uid {} does not match key uid {uid}", u.uid)));
        }
        acc.users.insert(uid, u);
    }
    for kv in &sessions {
        let id = keys::parse_session(&kv.key).ok_or_else(|| corrupt(kv, "malformed key".into()))?;
        let s = ClientSession::decode(kv.value.as_slice()).map_err(|e| corrupt(kv, e.to_string()))?;
        if s.client_id != id {
            return Err(corrupt(kv, "value client id does not match the key".into()));
        }
        acc.sessions.insert(id, s);
    }
    Ok(acc)
}

/// The record of a session.
pub fn session_write(s: &ClientSession) -> Write {
    (keys::session(&s.client_id), s.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use t3fs_common::proto::{AddUserReq, ExtendClientSessionReq};
    use t3fs_common::users::Identity;

    use super::*;

    fn add(uid: u32, name: &str) -> AddUserReq {
        AddUserReq { uid, name: name.into(), gid: 100, gids: vec![3, 2, 3], ..Default::default() }
    }

    fn apply(acc: &mut Accounts, c: UserChange) -> String {
        let token = c.token.clone();
        acc.apply_user(c);
        token
    }

    #[test]
    fn add_update_set_token_remove() {
        let mut acc = Accounts::default();
        let c = acc.plan_add(&add(1000, "alice"), "cluster-token", 5).unwrap();
        let (sets, clears) = acc.user_writes(&c);
        assert_eq!(sets.len(), 2);
        assert!(clears.is_empty());
        let t1 = apply(&mut acc, c);
        assert_eq!(t1.len(), 64);
        assert_eq!(acc.version(), 1);
        let u = acc.users().next().unwrap().clone();
        assert_eq!((u.gids.clone(), u.created_ms, u.token_sha256.len()), (vec![2, 3], 5, 32));
        assert!(matches!(acc.directory().authenticate("c", &t1).unwrap(), Principal::User(Identity { uid: 1000, .. })));

        // Update keeps the token; set-token replaces it.
        let up = AddUserReq { update: true, admin: true, ..add(1000, "alice2") };
        let c = acc.plan_add(&up, "", 6).unwrap();
        apply(&mut acc, c);
        assert!(acc.directory().authenticate("c", &t1).unwrap().is_admin());
        let c = acc.plan_set_token(1000, "", "", 7).unwrap();
        let t2 = apply(&mut acc, c);
        assert_ne!(t1, t2);
        let dir = acc.directory();
        assert!(dir.authenticate("c", &t1).is_err());
        assert!(dir.authenticate("c", &t2).is_ok());

        let c = acc.plan_remove(1000).unwrap();
        assert_eq!(acc.user_writes(&c).1, vec![keys::user(1000)]);
        apply(&mut acc, c);
        assert_eq!(acc.version(), 4);
        assert!(acc.directory().is_empty());
    }

    #[test]
    fn refusals() {
        let mut acc = Accounts::default();
        let c = acc.plan_add(&AddUserReq { token: "alice-token-123456".into(), ..add(1, "alice") }, "", 0).unwrap();
        apply(&mut acc, c);
        let code = |r: Result<UserChange, Error>| r.unwrap_err().code;
        assert_eq!(code(acc.plan_add(&add(1, "bob"), "", 0)), StatusCode::AlreadyExists);
        assert_eq!(code(acc.plan_add(&add(2, "alice"), "", 0)), StatusCode::AlreadyExists);
        assert_eq!(code(acc.plan_add(&add(2, "bad name"), "", 0)), StatusCode::InvalidArgument);
        assert_eq!(code(acc.plan_add(&add(2, ""), "", 0)), StatusCode::InvalidArgument);
        assert_eq!(code(acc.plan_add(&AddUserReq { update: true, ..add(2, "bob") }, "", 0)), StatusCode::NotFound);
        let same_token = AddUserReq { token: "alice-token-123456".into(), ..add(2, "bob") };
        assert_eq!(code(acc.plan_add(&same_token, "", 0)), StatusCode::AlreadyExists);
        let cluster_token = AddUserReq { token: "the-cluster-token-1".into(), ..add(2, "bob") };
        assert_eq!(code(acc.plan_add(&cluster_token, "the-cluster-token-1", 0)), StatusCode::AlreadyExists);
        assert_eq!(
            code(acc.plan_add(&AddUserReq { token: "short".into(), ..add(2, "bob") }, "", 0)),
            StatusCode::InvalidArgument
        );
        let many = AddUserReq { gids: (0..65).collect(), ..add(2, "bob") };
        assert_eq!(code(acc.plan_add(&many, "", 0)), StatusCode::InvalidArgument);
        let token_on_update = AddUserReq { update: true, token: "another-token-123456".into(), ..add(1, "alice") };
        assert_eq!(code(acc.plan_add(&token_on_update, "", 0)), StatusCode::InvalidArgument);
        assert_eq!(code(acc.plan_set_token(9, "", "", 0)), StatusCode::NotFound);
        assert_eq!(code(acc.plan_remove(9)), StatusCode::NotFound);
        // Setting the token a user already has is allowed (idempotent retry).
        assert!(acc.plan_set_token(1, "alice-token-123456", "", 0).is_ok());
        // Nothing above changed anything.
        assert_eq!(acc.version(), 1);
        assert_eq!(acc.users().count(), 1);
    }

    #[test]
    fn sessions_extend_expire_and_belong_to_their_user() {
        let mut acc = Accounts::default();
        let alice = Principal::User(Identity { uid: 5, ..Default::default() });
        let bob = Principal::User(Identity { uid: 6, ..Default::default() });
        let req = ExtendClientSessionReq { client_id: "c1".into(), hostname: "h".into(), ..Default::default() };
        let s = acc.plan_extend(&req, &alice, 1000, 100).unwrap();
        assert_eq!((s.uid, s.start_ms, s.expire_ms), (5, 1000, 1100));
        acc.apply_session(s);
        let s = acc.plan_extend(&req, &alice, 1050, 100).unwrap();
        assert_eq!((s.start_ms, s.last_extend_ms, s.expire_ms), (1000, 1050, 1150));
        acc.apply_session(s);
        assert_eq!(acc.plan_extend(&req, &bob, 1060, 100).unwrap_err().code, StatusCode::PermissionDenied);
        assert!(acc.plan_extend(&req, &Principal::Cluster, 1060, 100).is_ok());
        let empty = ExtendClientSessionReq::default();
        assert_eq!(acc.plan_extend(&empty, &alice, 0, 1).unwrap_err().code, StatusCode::InvalidArgument);
        assert!(acc.expired(1149).is_empty());
        assert_eq!(acc.expired(1150), vec!["c1".to_string()]);
        acc.remove_sessions(&acc.expired(1150));
        assert_eq!(acc.sessions().count(), 0);
    }

    #[tokio::test]
    async fn load_round_trips_and_rejects_corrupt_records() {
        let db = t3fs_kv::mem::MemKv::new();
        let mut acc = Accounts::default();
        let c = acc.plan_add(&add(7, "carol"), "", 1).unwrap();
        let (mut sets, _) = acc.user_writes(&c);
        acc.apply_user(c);
        let s = ClientSession { client_id: "x".into(), uid: 7, expire_ms: 9, ..Default::default() };
        sets.push(session_write(&s));
        crate::store::persist(db.as_ref(), &sets).await.unwrap();
        let l = load(db.as_ref()).await.unwrap();
        assert_eq!(l.version(), 1);
        assert_eq!(l.users().cloned().collect::<Vec<_>>(), acc.users().cloned().collect::<Vec<_>>());
        assert_eq!(l.sessions().next(), Some(&s));

        let wrong = UserInfo { uid: 8, ..Default::default() };
        crate::store::persist(db.as_ref(), &[(keys::user(9), wrong.encode_to_vec())]).await.unwrap();
        assert!(load(db.as_ref()).await.unwrap_err().message.contains("does not match"));
    }
}
