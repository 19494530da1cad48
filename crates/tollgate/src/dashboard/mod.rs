//! The web dashboard, served by the control listener under `/dashboard/`.
//!
//! Owns the browser's side of the operator surface: sign-in with one-time URLs and sessions
//! ([`sessions`], [`signin`]), the CSRF lock on changes made through a session ([`csrf`]),
//! the server-rendered pages ([`pages`]), the live-update stream ([`live`]) and the static
//! files, our script and the vendored uPlot ([`assets`]). Every response under `/dashboard/`
//! carries a strict Content-Security-Policy and the other headers of [`headers`].
//!
//! What it must not do: decide anything itself. Pages read through the same control-plane,
//! detection and audit calls as the admin API, and every button calls an `/api/v1` route, so
//! a change made in a browser passes the same checks and leaves the same events (`by` names
//! the operator who issued the sign-in URL) as one made with the CLI. Which operator a request
//! comes from is decided in `control_listener::auth`; this module answers only for sessions.

pub mod assets;
pub mod csrf;
pub mod live;
mod pages;
pub mod sessions;
pub mod signin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tollgate_broker::Broker;
use tollgate_control::Control;
use tollgate_events::{EventBus, EventKind};

pub use sessions::{Role, SessionInfo};

/// The session cookie. `__Host-` makes browsers insist on `Secure`, `Path=/` and no `Domain`.
pub const COOKIE: &str = "__Host-tollgate-session";

/// Resolved `[dashboard]` settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub login_ttl: Duration,
    pub max_login_ttl: Duration,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub max_sessions: usize,
    pub max_pending_logins: usize,
    pub max_streams: usize,
}

/// Sessions, the event tap and the stream bound: one per server.
pub struct Dashboard {
    pub(crate) settings: Settings,
    pub(crate) store: sessions::Store,
    events: EventBus,
    pub(crate) live: live::Live,
}

impl Dashboard {
    /// The dashboard of a server whose events reach it through `tap` (a consumer of the bus).
    pub fn start(
        settings: Settings,
        events: EventBus,
        tap: tollgate_events::Consumer,
        stats: live::StatsSource,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Dashboard> {
        let d = Arc::new(Dashboard {
            settings,
            store: sessions::Store::new(settings),
            events,
            live: live::Live::new(settings.max_streams),
        });
        tokio::spawn(live::run(Arc::clone(&d), tap, stats, shutdown));
        d
    }

    /// Issue a one-time sign-in URL's token for operator `by`; `Err` says why not.
    pub fn issue_login(
        &self,
        by: &str,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<(String, String), String> {
        let (token, expires) = self.store.issue(by, role, ttl)?;
        let expires_at = rfc3339(expires);
        self.events.emit(EventKind::DashboardLoginIssued {
            by: by.to_owned(),
            role: role.as_str().to_owned(),
            expires_at: expires_at.clone(),
        });
        Ok((token, expires_at))
    }

    /// Tell the bus about sessions that ended.
    fn ended(&self, gone: impl IntoIterator<Item = sessions::Gone>) {
        for g in gone {
            self.events.emit(EventKind::DashboardSignedOut {
                by: g.name,
                reason: g.why.as_str().to_owned(),
            });
        }
    }

    /// The live session a request's cookie names, if any (`touch`: counts as use).
    pub fn session(&self, headers: &HeaderMap, touch: bool) -> Option<(String, SessionInfo)> {
        let id = session_cookie(headers)?;
        match self.store.get(&id, touch) {
            Ok(info) => Some((id, info)),
            Err(gone) => {
                self.ended(gone);
                None
            }
        }
    }

    /// The session path of the admin API's caller: `Ok(None)` when the request carries no
    /// session cookie; the operator and role when it carries a live one and (for a change) its
    /// CSRF token and our origin; `Err` with the reason otherwise.
    pub fn api_caller(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Option<(String, Role)>, String> {
        if session_cookie(headers).is_none() {
            return Ok(None);
        }
        let Some((_, s)) = self.session(headers, true) else {
            return Err("the dashboard session is over or unknown: sign in again".into());
        };
        csrf::check(method, headers, &s)?;
        Ok(Some((s.name, s.role)))
    }

    /// Forget expired tokens and sessions (the latter with an event each).
    pub fn sweep(&self) {
        let gone = self.store.sweep();
        self.ended(gone);
    }
}

/// The value of our session cookie, from every `Cookie` header of the request.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What the pages read from: the same parts of the server the admin API's handlers use.
#[derive(Clone)]
pub struct Sources {
    pub cp: Arc<Control>,
    pub broker: Broker,
    pub detection: Arc<crate::detection::Detection>,
    pub audit: Option<Arc<crate::audit::Audit>>,
    pub config_audit: Option<Arc<crate::config_audit::ConfigAudit>>,
    /// The control listener's refusal record (repeated sign-in refusals are summarised).
    pub refusals: Arc<crate::admission::refusals::RefusalLog>,
}

/// The state of every dashboard route.
#[derive(Clone)]
pub struct DashState {
    pub dash: Arc<Dashboard>,
    pub src: Sources,
}

/// The header our script sets on the page fetches it makes by itself (live refreshes), which
/// do not count as use of the session: an open tab left alone still reaches the idle timeout.
pub const REFRESH_HEADER: &str = "x-tollgate-refresh";

/// A request from a browser with a live session (pages; counts as use unless it is one of
/// our script's automatic refreshes).
pub struct Signed(pub SessionInfo);

impl FromRequestParts<DashState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &DashState) -> Result<Self, Response> {
        let touch = !parts.headers.contains_key(REFRESH_HEADER);
        match s.dash.session(&parts.headers, touch) {
            Some((_, info)) => Ok(Signed(info)),
            None => Err(signin::needed()),
        }
    }
}

/// The remote address of a request, as the TLS layer saw it.
pub fn peer_addr(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<crate::control_listener::Peer>()
        .map(|p| p.addr)
}

/// Every dashboard route. Merged into the control listener's router.
pub fn router(state: DashState) -> Router {
    Router::new()
        .route("/dashboard", get(|| async { redirect("/dashboard/") }))
        .route("/dashboard/login", get(signin::login))
        .route("/dashboard/logout", post(signin::logout))
        .route("/dashboard/events", get(live::stream))
        .route("/dashboard/static/{version}/{file}", get(assets::serve))
        .merge(pages::routes())
        .layer(axum::middleware::from_fn(headers::secure))
        .with_state(state)
}

/// A 303 to `to`.
pub fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// The headers every dashboard response carries.
pub mod headers {
    use super::*;

    /// The Content-Security-Policy: our own files only, nothing inline, no framing.
    pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

    /// Middleware: the CSP, `nosniff`, no referrer, and `no-store` unless the route set its
    /// own caching (the versioned static files).
    pub async fn secure(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
        let mut resp = next.run(req).await;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        resp
    }
}
