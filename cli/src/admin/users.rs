//! User and session commands: `user-add`, `user-remove`, `user-set-token`, `user-list`,
//! `list-sessions`. mgmtd keeps only a hash of each token, so a token is printed once, when it is
//! made (`user-add`, `user-set-token`), and never again.
use anyhow::Context;
use serde_json::{Value, json};
use t3fs_common::proto;

use super::Ctx;
use super::output::{Table, print_json};

/// What `user-add` stores.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub uid: u32,
    pub name: String,
    pub gid: u32,
    pub gids: Vec<u32>,
    pub admin: bool,
    /// Empty: mgmtd generates one.
    pub token: String,
    /// Change an existing user's name, groups and admin flag (its token stays).
    pub update: bool,
}

fn user_json(u: &proto::UserInfo) -> Value {
    json!({
        "uid": u.uid,
        "name": u.name,
        "gid": u.gid,
        "gids": u.gids,
        "admin": u.admin,
        "created_ms": u.created_ms,
        "token_set_ms": u.token_set_ms,
    })
}

/// `t3fs admin user-add`.
pub async fn user_add(ctx: &Ctx, u: NewUser) -> anyhow::Result<()> {
    let req = proto::AddUserReq {
        header: Some(ctx.header()),
        uid: u.uid,
        name: u.name,
        gid: u.gid,
        gids: u.gids,
        admin: u.admin,
        token: u.token,
        update: u.update,
    };
    let rsp = ctx
        .mgmtd()
        .await?
        .add_user(req)
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .context("user-add")?
        .into_inner();
    let user = rsp.user.unwrap_or_default();
    if ctx.json {
        print_json(&json!({ "user": user_json(&user), "token": rsp.token }));
    } else if rsp.token.is_empty() {
        println!("user {} (uid {}) updated", user.name, user.uid);
    } else {
        println!("user {} (uid {}) added; its token (shown only now):", user.name, user.uid);
        println!("{}", rsp.token);
    }
    Ok(())
}

/// `t3fs admin user-remove UID`.
pub async fn user_remove(ctx: &Ctx, uid: u32) -> anyhow::Result<()> {
    let req = proto::RemoveUserReq { header: Some(ctx.header()), uid };
    ctx.mgmtd().await?.remove_user(req).await.map_err(|s| t3fs_common::Error::from_tonic(&s)).context("user-remove")?;
    if ctx.json {
        print_json(&json!({ "removed": uid }));
    } else {
        println!("user {uid} removed");
    }
    Ok(())
}

/// `t3fs admin user-set-token UID [--token T]`.
pub async fn user_set_token(ctx: &Ctx, uid: u32, token: String) -> anyhow::Result<()> {
    let req = proto::SetUserTokenReq { header: Some(ctx.header()), uid, token };
    let rsp = ctx
        .mgmtd()
        .await?
        .set_user_token(req)
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .context("user-set-token")?
        .into_inner();
    if ctx.json {
        print_json(&json!({ "uid": uid, "token": rsp.token }));
    } else {
        println!("new token of uid {uid} (shown only now; the old one no longer works):");
        println!("{}", rsp.token);
    }
    Ok(())
}

/// `t3fs admin user-list`.
pub async fn user_list(ctx: &Ctx) -> anyhow::Result<()> {
    let req = proto::ListUsersReq { header: Some(ctx.header()) };
    let users = ctx
        .mgmtd()
        .await?
        .list_users(req)
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .context("user-list")?
        .into_inner()
        .users;
    if ctx.json {
        print_json(&json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() }));
        return Ok(());
    }
    let mut t = Table::new(&["UID", "NAME", "GID", "GROUPS", "ADMIN"]);
    for u in &users {
        let gids: Vec<String> = u.gids.iter().map(u32::to_string).collect();
        t.row(vec![
            u.uid.to_string(),
            u.name.clone(),
            u.gid.to_string(),
            if gids.is_empty() { "-".into() } else { gids.join(",") },
            if u.admin { "yes".into() } else { "no".into() },
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `t3fs admin list-sessions`.
pub async fn list_sessions(ctx: &Ctx) -> anyhow::Result<()> {
    let req = proto::ListClientSessionsReq { header: Some(ctx.header()) };
    let sessions = ctx
        .mgmtd()
        .await?
        .list_client_sessions(req)
        .await
        .map_err(|s| t3fs_common::Error::from_tonic(&s))
        .context("list-sessions")?
        .into_inner()
        .sessions;
    if ctx.json {
        let v: Vec<Value> = sessions
            .iter()
            .map(|s| {
                json!({
                    "client_id": s.client_id,
                    "hostname": s.hostname,
                    "description": s.description,
                    "uid": s.uid,
                    "start_ms": s.start_ms,
                    "last_extend_ms": s.last_extend_ms,
                    "expire_ms": s.expire_ms,
                })
            })
            .collect();
        print_json(&json!({ "sessions": v }));
        return Ok(());
    }
    let now = t3fs_common::now_ms();
    let mut t = Table::new(&["CLIENT", "HOST", "UID", "UP", "EXPIRES IN", "DESCRIPTION"]);
    for s in &sessions {
        t.row(vec![
            s.client_id.clone(),
            s.hostname.clone(),
            s.uid.to_string(),
            format!("{:.0}s", now.saturating_sub(s.start_ms) as f64 / 1000.0),
            format!("{:.1}s", s.expire_ms.saturating_sub(now) as f64 / 1000.0),
            s.description.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
