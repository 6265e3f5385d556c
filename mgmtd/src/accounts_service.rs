//! The user and client-session RPCs: [`Cluster`] methods that plan with [`crate::accounts`],
//! persist under the lease ([`Cluster::write`]) and only then install the change in memory (and
//! in the token directory admission uses), plus the gRPC handler bodies.
//!
//! Access: user administration and `ListClientSessions` need an admin (cluster token or admin
//! user); `GetUserTable` (token hashes) the cluster token; `ExtendClientSession` any valid token.
//! Refused requests change nothing.
use t3fs_common::proto;
use t3fs_common::users::Principal;
use t3fs_common::{Error, now_ms};
use tonic::{Response, Status};

use crate::accounts::{UserChange, session_write};
use crate::keys;
use crate::service::{Cluster, MgmtdService, request_id};

impl Cluster {
    /// Persists and installs a planned user change; returns the stored user (hash cleared).
    async fn commit_user(
        &self,
        plan: impl FnOnce(&crate::accounts::Accounts, &str) -> Result<UserChange, Error>,
    ) -> Result<(Option<proto::UserInfo>, String), Error> {
        let mut inner = self.lock_primary().await?;
        let change = plan(&inner.accounts, &self.token)?;
        let (sets, clears) = inner.accounts.user_writes(&change);
        self.write(&mut inner, &sets, &clears).await?;
        let user = change.user.clone().map(|u| proto::UserInfo { token_sha256: Default::default(), ..u });
        let token = change.token.clone();
        inner.accounts.apply_user(change);
        self.set_users(&inner.accounts);
        Ok((user, token))
    }

    pub async fn add_user(&self, req: &proto::AddUserReq) -> Result<proto::AddUserRsp, Error> {
        let (user, token) = self.commit_user(|acc, cluster| acc.plan_add(req, cluster, now_ms())).await?;
        Ok(proto::AddUserRsp { user, token })
    }

    pub async fn remove_user(&self, uid: u32) -> Result<(), Error> {
        self.commit_user(|acc, _| acc.plan_remove(uid)).await.map(|_| ())
    }

    pub async fn set_user_token(&self, uid: u32, token: &str) -> Result<String, Error> {
        let (_, token) = self.commit_user(|acc, cluster| acc.plan_set_token(uid, token, cluster, now_ms())).await?;
        Ok(token)
    }

    /// Every user, without token hashes, by uid.
    pub async fn list_users(&self) -> Result<Vec<proto::UserInfo>, Error> {
        let inner = self.lock_primary().await?;
        Ok(inner.accounts.users().map(|u| proto::UserInfo { token_sha256: Default::default(), ..u.clone() }).collect())
    }

    /// The user table with token hashes, unless `known_version` is current.
    pub async fn user_table(&self, known_version: u64) -> Result<Option<proto::UserTable>, Error> {
        let inner = self.lock_primary().await?;
        let version = inner.accounts.version();
        Ok((version != known_version)
            .then(|| proto::UserTable { version, users: inner.accounts.users().cloned().collect() }))
    }

    pub async fn extend_session(
        &self,
        req: &proto::ExtendClientSessionReq,
        caller: &Principal,
    ) -> Result<proto::ClientSession, Error> {
        let mut inner = self.lock_primary().await?;
        let timeout = u64::try_from(self.session_timeout.as_millis()).unwrap_or(u64::MAX);
        let session = inner.accounts.plan_extend(req, caller, now_ms(), timeout)?;
        self.write(&mut inner, &[session_write(&session)], &[]).await?;
        inner.accounts.apply_session(session.clone());
        Ok(session)
    }

    pub async fn list_sessions(&self) -> Result<Vec<proto::ClientSession>, Error> {
        let inner = self.lock_primary().await?;
        Ok(inner.accounts.sessions().cloned().collect())
    }

    /// Deletes the sessions that expired (the checker calls it every tick). A standby has none.
    pub async fn expire_sessions(&self) -> Result<usize, Error> {
        let mut inner = self.inner_if_primary().await;
        let Some(inner) = inner.as_mut() else { return Ok(0) };
        let expired = inner.accounts.expired(now_ms());
        if expired.is_empty() {
            return Ok(0);
        }
        let clears: Vec<Vec<u8>> = expired.iter().map(|id| keys::session(id)).collect();
        self.write(inner, &[], &clears).await?;
        inner.accounts.remove_sessions(&expired);
        for id in &expired {
            tracing::info!(client_id = %id, "client session expired");
        }
        Ok(expired.len())
    }
}

pub(crate) async fn add_user(
    svc: &MgmtdService,
    req: proto::AddUserReq,
) -> Result<Response<proto::AddUserRsp>, Status> {
    let span = tracing::info_span!("add_user", req = %request_id(&req.header), uid = req.uid, update = req.update);
    svc.handle("add_user", span, async {
        svc.cluster.admit(&req.header)?;
        let rsp = svc.cluster.add_user(&req).await?;
        tracing::info!(name = %req.name, admin = req.admin, "user stored");
        Ok(rsp)
    })
    .await
}

pub(crate) async fn remove_user(
    svc: &MgmtdService,
    req: proto::RemoveUserReq,
) -> Result<Response<proto::RemoveUserRsp>, Status> {
    let span = tracing::info_span!("remove_user", req = %request_id(&req.header), uid = req.uid);
    svc.handle("remove_user", span, async {
        svc.cluster.admit(&req.header)?;
        svc.cluster.remove_user(req.uid).await?;
        tracing::info!("user removed");
        Ok(proto::RemoveUserRsp {})
    })
    .await
}

pub(crate) async fn set_user_token(
    svc: &MgmtdService,
    req: proto::SetUserTokenReq,
) -> Result<Response<proto::SetUserTokenRsp>, Status> {
    let span = tracing::info_span!("set_user_token", req = %request_id(&req.header), uid = req.uid);
    svc.handle("set_user_token", span, async {
        svc.cluster.admit(&req.header)?;
        let token = svc.cluster.set_user_token(req.uid, &req.token).await?;
        tracing::info!("user token replaced");
        Ok(proto::SetUserTokenRsp { token })
    })
    .await
}

pub(crate) async fn list_users(
    svc: &MgmtdService,
    req: proto::ListUsersReq,
) -> Result<Response<proto::ListUsersRsp>, Status> {
    let span = tracing::debug_span!("list_users", req = %request_id(&req.header));
    svc.handle("list_users", span, async {
        svc.cluster.admit(&req.header)?;
        Ok(proto::ListUsersRsp { users: svc.cluster.list_users().await? })
    })
    .await
}

pub(crate) async fn get_user_table(
    svc: &MgmtdService,
    req: proto::GetUserTableReq,
) -> Result<Response<proto::GetUserTableRsp>, Status> {
    let span = tracing::debug_span!("get_user_table", req = %request_id(&req.header), known = req.known_version);
    svc.handle("get_user_table", span, async {
        svc.cluster.admit_cluster(&req.header)?;
        Ok(proto::GetUserTableRsp { table: svc.cluster.user_table(req.known_version).await? })
    })
    .await
}

pub(crate) async fn extend_client_session(
    svc: &MgmtdService,
    req: proto::ExtendClientSessionReq,
) -> Result<Response<proto::ExtendClientSessionRsp>, Status> {
    let span = tracing::debug_span!("extend_client_session", req = %request_id(&req.header), client = %req.client_id);
    svc.handle("extend_client_session", span, async {
        let caller = svc.cluster.admit_any(&req.header)?;
        let session = svc.cluster.extend_session(&req, &caller).await?;
        Ok(proto::ExtendClientSessionRsp { session: Some(session) })
    })
    .await
}

pub(crate) async fn list_client_sessions(
    svc: &MgmtdService,
    req: proto::ListClientSessionsReq,
) -> Result<Response<proto::ListClientSessionsRsp>, Status> {
    let span = tracing::debug_span!("list_client_sessions", req = %request_id(&req.header));
    svc.handle("list_client_sessions", span, async {
        svc.cluster.admit(&req.header)?;
        Ok(proto::ListClientSessionsRsp { sessions: svc.cluster.list_sessions().await? })
    })
    .await
}
