//! Request authentication shared by every daemon: the cluster token in `RequestHeader.token`.
//!
//! A daemon configured with an empty token accepts every request (single-user dev clusters);
//! otherwise a request whose header is missing or carries another token is refused with
//! `Unauthenticated` before it touches any state. Daemons that also admit user tokens (meta,
//! storage's bulk plane, mgmtd) use [`crate::users`] instead; this check stays for services that
//! take the cluster token only (storage's admin service).
use crate::proto::RequestHeader;
use crate::status::{Error, StatusCode};

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a request's token against the cluster token (`expected`; empty = no authentication).
pub fn check_token(expected: &str, given: &str) -> Result<(), Error> {
    if expected.is_empty() || constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Error::new(StatusCode::Unauthenticated, "bad or missing cluster token"))
    }
}

/// Checks the token of an optional header (a missing header carries no token).
pub fn check_header(expected: &str, header: Option<&RequestHeader>) -> Result<(), Error> {
    check_token(expected, header.map(|h| h.token.as_str()).unwrap_or(""))
}

/// The request id of an optional header ("" when missing), for tracing spans.
pub fn request_id(header: Option<&RequestHeader>) -> &str {
    header.map(|h| h.request_id.as_str()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(check_token("", "anything").is_ok());
        assert!(check_token("t", "t").is_ok());
        assert_eq!(check_token("t", "").unwrap_err().code, StatusCode::Unauthenticated);
        assert_eq!(check_header("t", None).unwrap_err().code, StatusCode::Unauthenticated);
        let h = RequestHeader { token: "t".into(), request_id: "r1".into(), ..Default::default() };
        assert!(check_header("t", Some(&h)).is_ok());
        assert_eq!(request_id(Some(&h)), "r1");
        assert_eq!(request_id(None), "");
    }
}
