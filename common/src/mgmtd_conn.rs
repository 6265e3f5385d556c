//! Following the primary mgmtd: [`MgmtdConn`] holds the list of mgmtd addresses, a connection to
//! the current target, and moves to another mgmtd when the target is not (or no longer) primary.
//!
//! Several mgmtd share one KV store; exactly one holds the lease and serves (see docs/mgmtd.md).
//! A standby refuses every request with [`StatusCode::NotPrimary`] and names the primary in the
//! message as `primary=HOST:PORT` ([`not_primary`] writes it, [`primary_hint`] reads it). So:
//!
//! - `NotPrimary` naming a primary: switch to that address (even one not in the configured list)
//!   and retry at once; without a name: the next configured address.
//! - `Unavailable` / `Timeout` (the target is down or unreachable): the next configured address.
//! - Any other error is the answer and is returned.
//!
//! One [`MgmtdConn::call`] tries at most `addresses + 2` times without sleeping; when no mgmtd is
//! primary (a takeover is under way) it fails with the last error, which is retryable, and the
//! caller's own retry loop tries again later. `mgmtd_addr` in every config is a comma-separated
//! list of addresses ([`parse_addrs`]). The list grows with the mgmtd that routing info lists
//! ([`MgmtdConn::learn`], called by `RoutingCache::refresh_via`), so a client configured with one
//! address still finds the standbys when that one goes down; addresses are never dropped.
use std::sync::{Arc, Mutex};

use crate::routing::{MgmtdClient, connect_mgmtd};
use crate::status::{Error, StatusCode};

/// The marker before the primary's address in a `NotPrimary` message.
const PRIMARY_MARK: &str = "primary=";

/// The `NotPrimary` error a standby answers with; names the primary when it is known.
pub fn not_primary(primary: Option<&str>) -> Error {
    match primary {
        Some(addr) if !addr.is_empty() => {
            Error::new(StatusCode::NotPrimary, format!("this mgmtd is not the primary; {PRIMARY_MARK}{addr}"))
        }
        _ => Error::new(StatusCode::NotPrimary, "this mgmtd is not the primary; the primary is unknown"),
    }
}

/// The primary's address named by a `NotPrimary` error, if any.
pub fn primary_hint(e: &Error) -> Option<String> {
    if e.code != StatusCode::NotPrimary {
        return None;
    }
    let start = e.message.find(PRIMARY_MARK)? + PRIMARY_MARK.len();
    let addr: String = e.message[start..].chars().take_while(|c| !c.is_whitespace() && *c != ';').collect();
    (!addr.is_empty()).then_some(addr)
}

/// Splits a comma-separated address list, trimming blanks and dropping empty entries and repeats.
pub fn parse_addrs(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if !out.iter().any(|o| o == a) {
            out.push(a.to_string());
        }
    }
    out
}

struct State {
    /// The configured addresses, then the learned ones.
    addrs: Vec<String>,
    /// Where requests go now: a configured address or a primary some mgmtd named.
    target: String,
    /// Index of the configured address tried last (the next one follows it).
    idx: usize,
    client: Option<MgmtdClient>,
}

/// A connection to whichever mgmtd is primary. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct MgmtdConn {
    state: Arc<Mutex<State>>,
}

impl MgmtdConn {
    /// `list`: one or more mgmtd addresses, comma-separated (`host:port` or `http://host:port`).
    /// Connects lazily.
    pub fn new(list: &str) -> Result<Self, Error> {
        let addrs = parse_addrs(list);
        let first = addrs.first().cloned().ok_or_else(|| Error::invalid("mgmtd_addr lists no address"))?;
        Ok(Self { state: Arc::new(Mutex::new(State { addrs, target: first, idx: 0, client: None })) })
    }

    /// The addresses tried in turn: the configured ones, then the learned ones.
    pub fn addrs(&self) -> Vec<String> {
        self.lock().addrs.clone()
    }

    /// Adds mgmtd addresses (from routing info) to the list; returns how many were new.
    pub fn learn<'a>(&self, addrs: impl IntoIterator<Item = &'a str>) -> usize {
        let mut s = self.lock();
        let mut added = 0;
        for a in addrs.into_iter().map(str::trim).filter(|a| !a.is_empty()) {
            if !s.addrs.iter().any(|o| o == a) {
                tracing::debug!(addr = a, "learned a mgmtd address");
                s.addrs.push(a.to_string());
                added += 1;
            }
        }
        added
    }

    /// The address requests go to now.
    pub fn current(&self) -> String {
        self.lock().target.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client connected to the current target (connecting if needed).
    pub async fn client(&self) -> Result<(String, MgmtdClient), Error> {
        let target = {
            let s = self.lock();
            if let Some(c) = &s.client {
                return Ok((s.target.clone(), c.clone()));
            }
            s.target.clone()
        };
        let client = connect_mgmtd(&target).await?;
        let mut s = self.lock();
        if s.target == target && s.client.is_none() {
            s.client = Some(client.clone());
        }
        Ok((target, client))
    }

    /// Reports that a request to `target` failed with `e`: moves to the primary `e` names or to the
    /// next configured address when `e` says the target is not primary or unreachable. Returns
    /// whether it moved (so a retry may succeed). A report about a target that is no longer current
    /// (another task already moved) only says to retry.
    pub fn report(&self, target: &str, e: &Error) -> bool {
        let hint = primary_hint(e);
        let unreachable = matches!(e.code, StatusCode::Unavailable | StatusCode::Timeout);
        if e.code != StatusCode::NotPrimary && !unreachable {
            return false;
        }
        let mut s = self.lock();
        if s.target != target {
            return true;
        }
        match hint {
            Some(primary) if primary != target => {
                s.client = None;
                s.target = primary;
            }
            _ => Self::next(&mut s),
        }
        tracing::debug!(from = %target, to = %s.target, error = %e, "following the primary mgmtd");
        true
    }

    /// Moves from `target` (if still current) to the next configured address.
    fn advance(&self, target: &str) {
        let mut s = self.lock();
        if s.target == target {
            Self::next(&mut s);
        }
    }

    fn next(s: &mut State) {
        s.client = None;
        s.idx = (s.idx + 1) % s.addrs.len();
        s.target = s.addrs[s.idx].clone();
    }

    /// Runs `f` against the primary mgmtd: on `NotPrimary` / `Unavailable` / `Timeout` it moves
    /// (see [`Self::report`]) and tries again, at most `addresses + 2` times in all. Any other
    /// result is returned as is.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Error>
    where
        F: FnMut(MgmtdClient) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let tries = self.lock().addrs.len() + 2;
        let mut last = Error::unavailable("no mgmtd tried");
        for _ in 0..tries {
            let (target, client) = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    // Not connectable (down, or a malformed address): try the next one.
                    let target = self.current();
                    self.advance(&target);
                    last = Error::new(e.code, format!("mgmtd {target}: {}", e.message));
                    continue;
                }
            };
            match f(client).await {
                Ok(v) => return Ok(v),
                Err(st) => {
                    let e = Error::from_tonic(&st);
                    if !self.report(&target, &e) {
                        return Err(e);
                    }
                    last = Error::new(e.code, format!("mgmtd {target}: {}", e.message));
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip() {
        let e = not_primary(Some("10.0.0.2:8000"));
        assert_eq!(e.code, StatusCode::NotPrimary);
        assert_eq!(primary_hint(&e).as_deref(), Some("10.0.0.2:8000"));
        let e = Error::from_tonic(&e.to_tonic());
        assert_eq!(primary_hint(&e).as_deref(), Some("10.0.0.2:8000"));
        assert_eq!(primary_hint(&not_primary(None)), None);
        assert_eq!(primary_hint(&not_primary(Some(""))), None);
        // Only NotPrimary carries a hint.
        assert_eq!(primary_hint(&Error::unavailable("primary=1.2.3.4:5")), None);
        let e = Error::new(StatusCode::NotPrimary, "lease lost; primary=h:1; term 4");
        assert_eq!(primary_hint(&e).as_deref(), Some("h:1"));
    }

    #[test]
    fn address_lists() {
        assert_eq!(parse_addrs("a:1"), vec!["a:1"]);
        assert_eq!(parse_addrs(" a:1, b:2 ,,a:1,c:3 "), vec!["a:1", "b:2", "c:3"]);
        assert!(parse_addrs(" , ").is_empty());
        assert!(MgmtdConn::new("").is_err());
        assert_eq!(MgmtdConn::new("x:1,y:2").unwrap().addrs(), ["x:1", "y:2"]);
    }

    #[test]
    fn learned_addresses_join_the_rotation() {
        let c = MgmtdConn::new("a:1").unwrap();
        assert_eq!(c.learn(["a:1", " b:2", "", "b:2", "c:3"]), 2);
        assert_eq!(c.addrs(), ["a:1", "b:2", "c:3"]);
        assert_eq!(c.learn(["c:3"]), 0);
        assert!(c.report("a:1", &Error::unavailable("down")));
        assert_eq!(c.current(), "b:2");
        assert!(c.report("b:2", &not_primary(None)));
        assert_eq!(c.current(), "c:3");
    }

    #[test]
    fn reports_move_the_target() {
        let c = MgmtdConn::new("a:1,b:2,c:3").unwrap();
        assert_eq!(c.current(), "a:1");
        // Unreachable: the next address, wrapping around.
        assert!(c.report("a:1", &Error::unavailable("down")));
        assert_eq!(c.current(), "b:2");
        // NotPrimary naming the primary: go there, even if it is not in the list.
        assert!(c.report("b:2", &not_primary(Some("z:9"))));
        assert_eq!(c.current(), "z:9");
        // NotPrimary without a name: the next configured address.
        assert!(c.report("z:9", &not_primary(None)));
        assert_eq!(c.current(), "c:3");
        assert!(c.report("c:3", &Error::new(StatusCode::Timeout, "slow")));
        assert_eq!(c.current(), "a:1");
        // A stale report (another task moved already) changes nothing.
        assert!(c.report("b:2", &Error::unavailable("down")));
        assert_eq!(c.current(), "a:1");
        // Other errors are answers, not reasons to move.
        assert!(!c.report("a:1", &Error::not_found("no such node")));
        assert_eq!(c.current(), "a:1");
    }

    #[tokio::test]
    async fn malformed_addresses_are_skipped() {
        let c = MgmtdConn::new("bad address with spaces,also bad").unwrap();
        let r: Result<(), Error> = c.call(|_client| async { Ok(()) }).await;
        assert!(r.is_err());
        assert_eq!(c.current(), "bad address with spaces", "went round the list: 4 tries over 2 addresses");
    }

    #[tokio::test]
    async fn call_gives_up_after_trying_every_address() {
        // Nothing listens on these ports (bound then dropped): every try is Unavailable.
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.push(l.local_addr().unwrap().to_string());
        }
        let c = MgmtdConn::new(&addrs.join(",")).unwrap();
        let mut calls = 0;
        let r: Result<(), Error> = c
            .call(|_client| {
                calls += 1;
                async { Ok(()) }
            })
            .await;
        let e = r.unwrap_err();
        assert_eq!(e.code, StatusCode::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(calls, 0, "never connected, so never called");
    }
}
