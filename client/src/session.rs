//! The client session: every connected [`crate::Client`] tells mgmtd it is alive
//! (`ExtendClientSession`) every `session_extend_ms`, under a random client id, with its hostname
//! and program. mgmtd drops a session `client_session_timeout_ms` (default 60 s) after its last
//! extension; `t3fs admin list-sessions` shows the live ones (and meta will use them to prune the
//! write sessions of clients that died, issue 5).
//!
//! Failures are logged and retried at the next tick: a client keeps working while mgmtd is away.
use std::time::Duration;

use t3fs_common::mgmtd_conn::MgmtdConn;
use t3fs_common::proto;
use tokio_util::sync::CancellationToken;

/// A fresh client id: 16 random bytes as hex.
pub fn new_client_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// `prog pid N` for the session description.
pub fn describe_process() -> String {
    let prog = std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "?".into());
    format!("{prog} pid {}", std::process::id())
}

/// Extends the session once.
pub async fn extend(conn: &MgmtdConn, token: &str, client_id: &str) -> t3fs_common::Result<proto::ClientSession> {
    let req = |header| proto::ExtendClientSessionReq {
        header: Some(header),
        client_id: client_id.to_string(),
        hostname: t3fs_common::config::hostname(),
        description: describe_process(),
    };
    let rsp = conn
        .call(|mut c| {
            let header = proto::RequestHeader {
                request_id: t3fs_common::new_request_id(),
                token: token.to_string(),
                ..Default::default()
            };
            let r = req(header);
            async move { c.extend_client_session(r).await }
        })
        .await?
        .into_inner();
    rsp.session.ok_or_else(|| t3fs_common::Error::internal("ExtendClientSession answered without a session"))
}

/// Extends the session now and then every `every` until `cancel` fires.
pub fn spawn(
    conn: MgmtdConn,
    token: String,
    client_id: String,
    every: Duration,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    t3fs_common::periodic::spawn_every(
        t3fs_common::periodic::First::Now,
        move || every,
        cancel,
        move || {
            let (conn, token, client_id) = (conn.clone(), token.clone(), client_id.clone());
            async move {
                if let Err(e) = extend(&conn, &token, &client_id).await {
                    tracing::debug!(error = %e, client_id = %client_id, "extending the client session failed");
                }
            }
        },
    )
}
