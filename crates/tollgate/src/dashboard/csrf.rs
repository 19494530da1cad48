//! Cross-site request forgery: what a request carried by a session cookie must also show
//! before it may change anything.
//!
//! The session cookie is `SameSite=Strict`, which already keeps other sites' requests from
//! carrying it in current browsers; this is the second lock. A request with any method other
//! than GET, HEAD or OPTIONS must send the session's CSRF token in `X-CSRF-Token` (our pages
//! embed it in `<meta name="csrf-token">` and our script sends it; another site cannot read
//! it), compared in constant time, and, when the browser sends an `Origin`, that origin must
//! be this listener's own (`https://` and the `Host` the request was sent to).
//!
//! This module only checks; it must not look at what the request asks for, nor read a body.

use axum::http::{HeaderMap, Method};

use super::sessions::{same_secret, SessionInfo};

/// The header our script sends the token in.
pub const HEADER: &str = "x-csrf-token";

/// Whether `method` only reads (and so needs no token).
pub fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Check a request through `session`; `Err` says why it is refused.
pub fn check(method: &Method, headers: &HeaderMap, session: &SessionInfo) -> Result<(), String> {
    if safe(method) {
        return Ok(());
    }
    let sent = headers.get(HEADER).and_then(|v| v.to_str().ok());
    match sent {
        None => {
            return Err(
                "a change through a dashboard session needs its CSRF token (X-CSRF-Token)".into(),
            )
        }
        Some(t) if !same_secret(t, &session.csrf) => {
            return Err("the CSRF token (X-CSRF-Token) is not this session's".into())
        }
        Some(_) => {}
    }
    if let Some(origin) = headers.get("origin") {
        let host = headers.get("host").and_then(|h| h.to_str().ok());
        let ours = host.map(|h| format!("https://{h}"));
        let theirs = origin.to_str().ok();
        if ours.is_none()
            || theirs.map(|o| o.eq_ignore_ascii_case(ours.as_deref().unwrap_or(""))) != Some(true)
        {
            return Err(format!(
                "the request's Origin {} is not this listener's",
                theirs.unwrap_or("(unreadable)")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::sessions::Role;

    fn session() -> SessionInfo {
        SessionInfo {
            name: "ops".into(),
            role: Role::Admin,
            csrf: "t0ken".into(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn reads_pass_and_changes_need_the_token_and_our_origin() {
        let s = session();
        assert!(check(&Method::GET, &HeaderMap::new(), &s).is_ok());
        assert!(check(&Method::POST, &HeaderMap::new(), &s).is_err());
        assert!(check(&Method::POST, &headers(&[(HEADER, "wrong")]), &s).is_err());
        let host = ("host", "127.0.0.1:8443");
        assert!(check(&Method::POST, &headers(&[(HEADER, "t0ken"), host]), &s).is_ok());
        let ours = ("origin", "https://127.0.0.1:8443");
        assert!(check(
            &Method::DELETE,
            &headers(&[(HEADER, "t0ken"), host, ours]),
            &s
        )
        .is_ok());
        let foreign = ("origin", "https://evil.example");
        assert!(check(
            &Method::POST,
            &headers(&[(HEADER, "t0ken"), host, foreign]),
            &s
        )
        .is_err());
        let null = ("origin", "null");
        assert!(check(
            &Method::POST,
            &headers(&[(HEADER, "t0ken"), host, null]),
            &s
        )
        .is_err());
    }
}
