//! Signing in and out: one-time URLs become session cookies.
//!
//! `POST /api/v1/dashboard/logins` (certificate holders only; the handler is in
//! `control_listener::dashboard_api` and calls [`issue`]) returns a URL
//! `https://HOST:PORT/dashboard/login?token=…`. `GET /dashboard/login?token=…` uses the token
//! up, creates a session, sets the `__Host-tollgate-session` cookie (`HttpOnly; Secure;
//! SameSite=Strict; Path=/`) and answers 303 to `/dashboard/`, so the token leaves the
//! address bar and the history. An unknown, used or expired token gets a 401 page saying so.
//! `POST /dashboard/logout` (session and CSRF token) ends the session and clears the cookie.
//!
//! This module turns sign-in into HTTP; the store of [`super::sessions`] decides.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use tollgate_events::EventKind;

use super::sessions::Role;
use super::{csrf, DashState, Dashboard, COOKIE};

/// What `POST /api/v1/dashboard/logins` answers: the URL and when it stops working.
pub fn issue(
    dash: &Dashboard,
    host: &str,
    by: &str,
    caller: Role,
    role: Option<&str>,
    ttl_secs: Option<u64>,
) -> Result<serde_json::Value, (StatusCode, String)> {
    let role = match role {
        None => caller,
        Some(r) => Role::parse(r).ok_or_else(|| {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("role {r:?} is not \"admin\" or \"viewer\""),
            )
        })?,
    };
    if role == Role::Admin && caller != Role::Admin {
        return Err((
            StatusCode::FORBIDDEN,
            format!("operator {by} has the viewer role and cannot sign anyone in as an admin"),
        ));
    }
    if !valid_host(host) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("the Host header {host:?} cannot be put in a URL"),
        ));
    }
    let (token, expires_at) = dash
        .issue_login(by, role, ttl_secs.map(Duration::from_secs))
        .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
    Ok(serde_json::json!({
        "url": format!("https://{host}/dashboard/login?token={token}"),
        "expires_at": expires_at,
        "role": role.as_str(),
    }))
}

/// A `Host` header worth putting in a URL: a name or address and a port, nothing else.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    token: Option<String>,
}

/// `GET /dashboard/login?token=…`.
pub async fn login(
    State(s): State<DashState>,
    parts: Parts,
    Query(q): Query<LoginQuery>,
) -> Response {
    let addr = super::peer_addr(&parts);
    let Some(token) = q.token else {
        return needed();
    };
    match s.dash.store.redeem(&token) {
        Ok((id, info, gone)) => {
            s.dash.ended(gone);
            s.dash.events.emit(EventKind::DashboardSignedIn {
                by: info.name.clone(),
                role: info.role.as_str().to_owned(),
                addr,
            });
            let cookie = format!(
                "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
                s.dash.settings.session_max.as_secs()
            );
            let mut resp = super::redirect("/dashboard/");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(why) => {
            let individual = addr.is_none_or(|a| {
                s.src
                    .refusals
                    .note_addr(a.ip(), "dashboard_sign_in", || why.as_str().to_owned())
            });
            if individual {
                s.dash.events.emit(EventKind::DashboardSignInRefused {
                    addr,
                    reason: why.as_str().to_owned(),
                });
            }
            page(
                StatusCode::UNAUTHORIZED,
                "Sign-in refused",
                &format!("Sign-in refused: {}.", why.as_str()),
            )
        }
    }
}

/// `POST /dashboard/logout`: needs the session and its CSRF token.
pub async fn logout(State(s): State<DashState>, parts: Parts) -> Response {
    let Some((id, info)) = s.dash.session(&parts.headers, false) else {
        return needed();
    };
    if let Err(why) = csrf::check(&parts.method, &parts.headers, &info) {
        s.dash.events.emit(EventKind::AdminDenied {
            addr: super::peer_addr(&parts),
            detail: format!("POST /dashboard/logout: {why}"),
        });
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    if let Some(g) = s.dash.store.remove(&id) {
        s.dash.ended([g]);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-tollgate-session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    resp
}

/// The 401 page for a request without a live session.
pub fn needed() -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "Sign-in needed",
        "This page needs a dashboard session, and this browser has none (or it has ended).",
    )
}

/// A small page for the signed-out: what happened and how to get in.
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Tollgate — " (title) }
                link rel="stylesheet" href=(super::assets::url("app.css"));
            }
            body.signin {
                main.signin-box {
                    h1 { "Tollgate" }
                    h2 { (title) }
                    p { (message) }
                    p { "An operator with a client certificate can issue a one-time sign-in URL:" }
                    pre { "tollgate dashboard login --data DIR            # admin\ntollgate dashboard login --role viewer --ttl 10m" }
                    p { "Open the printed URL in this browser within its lifetime; it works once." }
                }
            }
        }
    };
    let mut resp = (status, body.into_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}
