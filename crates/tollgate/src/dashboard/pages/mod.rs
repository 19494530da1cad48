//! The dashboard's pages: server-rendered HTML (maud escapes everything it interpolates), one
//! module per page, the shared layout and helpers here.
//!
//! A page reads through the same calls as the admin API's handlers (the control plane, the
//! detectors, the audit log, the configuration audit) and renders; it changes nothing. Parts
//! that change live are marked `data-live` with an id: our script fetches the page again when
//! an event arrives and swaps those parts. Buttons that act name an `/api/v1` route and are
//! left out for viewer sessions. No inline script or style anywhere (the CSP forbids them).

mod alerts;
mod audit;
mod compliance;
mod devices;
mod fleet;
mod policy;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use tollgate_control::ControlError;

use super::{assets, DashState, Role, SessionInfo};

pub(super) fn routes() -> Router<DashState> {
    Router::new()
        .route("/dashboard/", get(fleet::page))
        .route("/dashboard/devices", get(devices::list))
        .route("/dashboard/devices/{id}", get(devices::detail))
        .route("/dashboard/alerts", get(alerts::page))
        .route("/dashboard/compliance", get(compliance::page))
        .route("/dashboard/findings", get(compliance::findings))
        .route("/dashboard/policy", get(policy::page))
        .route("/dashboard/audit", get(audit::page))
        .route("/dashboard/{*rest}", get(not_found))
}

/// The navigation: path, label, page key.
const NAV: &[(&str, &str, &str)] = &[
    ("/dashboard/", "Fleet", "fleet"),
    ("/dashboard/devices", "Devices", "devices"),
    ("/dashboard/alerts", "Alerts", "alerts"),
    ("/dashboard/compliance", "Compliance", "compliance"),
    ("/dashboard/findings", "Findings", "findings"),
    ("/dashboard/policy", "Policy", "policy"),
    ("/dashboard/audit", "Audit log", "audit"),
];

/// What a page says about itself to the layout and the script.
pub(super) struct Page<'a> {
    pub key: &'static str,
    pub title: String,
    pub session: &'a SessionInfo,
    /// A device the page is about (its live stream carries that device's figures).
    pub device: Option<&'a str>,
}

/// The whole document around `body`.
pub(super) fn layout(p: &Page<'_>, body: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(p.session.csrf);
                meta name="tollgate-role" content=(p.session.role.as_str());
                title { (p.title) " — Tollgate" }
                link rel="stylesheet" href=(assets::url("uPlot.min.css"));
                link rel="stylesheet" href=(assets::url("app.css"));
                script src=(assets::url("uPlot.iife.min.js")) defer {}
                script src=(assets::url("app.js")) defer {}
            }
            body data-page=(p.key) data-device=[p.device] {
                header.top {
                    a.brand href="/dashboard/" { "Tollgate" }
                    nav {
                        @for (href, label, key) in NAV {
                            a href=(href) class=[(*key == p.key).then_some("active")] { (label) }
                        }
                    }
                    span.who {
                        span #live-status.live-status title="live updates" { "●" }
                        (p.session.name) " · " (p.session.role.as_str())
                        button #signout type="button" { "Sign out" }
                    }
                }
                main {
                    h1 { (p.title) }
                    (body)
                }
                dialog #confirm {
                    p #confirm-text {}
                    label #confirm-field-label.hidden {
                        span #confirm-field-name {}
                        input #confirm-field type="text" maxlength="200";
                    }
                    div.buttons {
                        button #confirm-cancel type="button" { "Cancel" }
                        button #confirm-ok.danger type="button" { "Confirm" }
                    }
                }
                div #toast role="status" {}
            }
        }
    };
    html_response(StatusCode::OK, doc)
}

pub(super) fn html_response(status: StatusCode, doc: Markup) -> Response {
    let mut r = (status, doc.into_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Whether the session may act (buttons are rendered only then).
pub(super) fn can_act(s: &SessionInfo) -> bool {
    s.role == Role::Admin
}

/// A button that calls an `/api/v1` route after a confirmation. `field`: a text the dialog
/// asks for, sent as that member of the JSON body.
pub(super) fn action(
    label: &str,
    method: &str,
    url: &str,
    body: serde_json::Value,
    confirm: &str,
    field: Option<&str>,
) -> Markup {
    html! {
        button.act type="button" data-method=(method) data-url=(url)
            data-body=(body.to_string()) data-confirm=(confirm) data-field=[field] { (label) }
    }
}

/// Unix seconds as people read them.
pub(super) fn when(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// Unix milliseconds as people read them.
pub(super) fn when_ms(ms: i64) -> String {
    when(ms.div_euclid(1000))
}

/// A state as a coloured badge.
pub(super) fn badge(state: &str) -> Markup {
    let class = match state {
        "active" | "compliant" | "ok" | "online" | "allowed" => "badge good",
        "quarantined" | "non_compliant" | "high" | "critical" | "denied" => "badge bad",
        "revoked" => "badge dead",
        _ => "badge",
    };
    html! { span class=(class) { (state) } }
}

/// A page that could not be made: the reason, in the layout.
pub(super) fn failed(p: &Page<'_>, status: StatusCode, why: &str) -> Response {
    let mut r = layout(p, html! { p.error { (why) } });
    *r.status_mut() = status;
    r
}

/// Run a control-plane call on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, (StatusCode, String)> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((crate::control_listener::status_of(&e), e.to_string())),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The recent events that `keep` selects, newest first, as a table.
pub(super) fn events_table(
    live: &super::live::Live,
    n: usize,
    keep: impl Fn(&tollgate_events::Event) -> bool,
) -> Markup {
    let list = live.recent(n, keep);
    html! {
        @if list.is_empty() {
            p.muted { "No events since the server started." }
        } @else {
            table.events {
                thead { tr { th { "seq" } th { "time" } th { "event" } th { "detail" } } }
                tbody {
                    @for e in list.iter().rev() {
                        @let v = serde_json::to_value(&**e).unwrap_or_default();
                        tr {
                            td.num { (e.seq) }
                            td.nowrap { (short_ts(&e.ts)) }
                            td { code { (v["type"].as_str().unwrap_or("")) } }
                            td.detail { (detail_of(&v)) }
                        }
                    }
                }
            }
        }
    }
}

/// An RFC 3339 time stamp to the second, as people read it.
pub(super) fn short_ts(ts: &str) -> String {
    match (ts.get(..10), ts.get(11..19)) {
        (Some(d), Some(t)) => format!("{d} {t}"),
        _ => ts.to_owned(),
    }
}

/// An event's members other than its envelope, as `key=value` text.
fn detail_of(v: &serde_json::Value) -> String {
    let Some(o) = v.as_object() else {
        return String::new();
    };
    o.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "seq" | "ts" | "type"))
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// Whether an event concerns device `id`.
pub(super) fn about_device(e: &tollgate_events::Event, id: &str) -> bool {
    let v = serde_json::to_value(e).unwrap_or_default();
    v.get("device").and_then(|d| d.as_str()) == Some(id)
        || v.get("subject").and_then(|d| d.as_str()) == Some(id)
}

async fn not_found(super::Signed(s): super::Signed) -> Response {
    let p = Page {
        key: "",
        title: "Not found".into(),
        session: &s,
        device: None,
    };
    failed(
        &p,
        StatusCode::NOT_FOUND,
        "There is no such dashboard page.",
    )
}
