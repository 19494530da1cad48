//! Least-privilege routes of the admin API: what devices were seen doing, and the policy it
//! suggests.
//!
//! `GET /api/v1/policy/observations?since=7d` (every topic published, retained and filter
//! subscribed to, per device, last seen within the window); `GET /api/v1/policy/suggest?since=7d[&group=G]`
//! (the narrowest policy allowing all of it: `toml`, `diff` against the policy in force,
//! `changes` with what each would have denied, `denied_seen`, `skipped`);
//! `GET /api/v1/policy/unused?since=7d` (grants nothing used). Handlers only adapt: the policy
//! crate decides.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_control::observe::action_name;
use tollgate_policy::suggest::{ChangeKind, Observed, Probe};

use super::admin::{ApiError, AppState, Reader};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/policy/observations", get(observations))
        .route("/api/v1/policy/suggest", get(suggest))
        .route("/api/v1/policy/unused", get(unused))
}

/// The default observation window.
const DEFAULT_WINDOW: &str = "7d";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

fn window_secs(w: &Window) -> Result<i64, ApiError> {
    let text = w.since.as_deref().unwrap_or(DEFAULT_WINDOW);
    tollgate_detect::config::parse_duration(text)
        .filter(|ms| *ms > 0)
        .map(|ms| ms / 1000)
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("since: {text:?} is not a duration (like \"24h\", \"7d\")"),
            )
        })
}

fn observed_json(o: &Observed) -> Value {
    json!({
        "device": o.device,
        "groups": o.groups,
        "action": action_name(o.action),
        "topic": o.topic,
        "count": o.count,
    })
}

fn probe_json(p: &Probe) -> Value {
    json!({
        "device": p.device,
        "groups": p.groups,
        "action": action_name(p.action),
        "topic": p.topic,
    })
}

async fn observations(
    State(s): State<AppState>,
    _a: Reader,
    Query(w): Query<Window>,
) -> Result<impl IntoResponse, ApiError> {
    let secs = window_secs(&w)?;
    let cp = Arc::clone(&s.cp);
    let list = super::admin::blocking(move || cp.observed(secs)).await?;
    Ok(Json(json!({
        "window_secs": secs,
        "observations": list.iter().map(observed_json).collect::<Vec<_>>(),
    })))
}

async fn suggest(
    State(s): State<AppState>,
    _a: Reader,
    Query(w): Query<Window>,
) -> Result<impl IntoResponse, ApiError> {
    let secs = window_secs(&w)?;
    let cp = Arc::clone(&s.cp);
    let group = w.group.clone();
    let sug = super::admin::blocking(move || cp.suggest_policy(secs, group.as_deref())).await?;
    let changes: Vec<Value> = sug
        .changes
        .iter()
        .map(|c| {
            json!({
                "kind": match c.kind {
                    ChangeKind::Removed => "removed",
                    ChangeKind::Narrowed => "narrowed",
                    ChangeKind::Added => "added",
                    #[allow(unreachable_patterns)]
                    _ => "changed",
                },
                "rule": c.rule,
                "line": c.line,
                "who": c.who.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "action": action_name(c.action),
                "pattern": c.pattern,
                "text": c.text,
                "would_deny": c.would_deny.iter().map(probe_json).collect::<Vec<_>>(),
                "would_deny_count": c.would_deny_count,
            })
        })
        .collect();
    Ok(Json(json!({
        "window_secs": secs,
        "group": w.group,
        "toml": sug.toml,
        "diff": sug.diff,
        "changes": changes,
        "denied_seen": sug.denied_seen.iter().map(observed_json).collect::<Vec<_>>(),
        "skipped": sug.skipped.iter().map(|k| json!({
            "observed": observed_json(&k.observed),
            "reason": k.reason,
        })).collect::<Vec<_>>(),
    })))
}

async fn unused(
    State(s): State<AppState>,
    _a: Reader,
    Query(w): Query<Window>,
) -> Result<impl IntoResponse, ApiError> {
    let secs = window_secs(&w)?;
    let cp = Arc::clone(&s.cp);
    let lints = super::admin::blocking(move || cp.unused_grants(secs)).await?;
    Ok(Json(json!({
        "window_secs": secs,
        "unused": lints.iter().map(|l| json!({
            "rule": l.rule,
            "line": l.line,
            "message": l.message,
        })).collect::<Vec<_>>(),
    })))
}
