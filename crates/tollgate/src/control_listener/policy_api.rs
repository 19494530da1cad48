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
use serde::{Deserialize, Serialize};
use tollgate_control::observe::action_name;
use tollgate_policy::suggest::{ChangeKind, Observed, Probe};
use utoipa::{IntoParams, ToSchema};

use super::admin::{ApiError, AppState, Reader};
use super::openapi::ReadErrors;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/policy/observations", get(observations))
        .route("/api/v1/policy/suggest", get(suggest))
        .route("/api/v1/policy/unused", get(unused))
}

/// The default observation window.
const DEFAULT_WINDOW: &str = "7d";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Window {
    /// How far back: `24h`, `7d` (default `7d`).
    #[serde(default)]
    since: Option<String>,
    /// Only this group's devices (suggest).
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

/// Traffic a device was seen sending or asking for.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ObservedView {
    device: String,
    groups: Vec<String>,
    /// `publish`, `retain` or `subscribe`.
    action: &'static str,
    /// A topic, or a subscription filter.
    topic: String,
    /// How many times.
    count: u64,
}

/// A request a suggested change would deny.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProbeView {
    device: String,
    groups: Vec<String>,
    action: &'static str,
    topic: String,
}

/// One change the suggestion makes to the policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ChangeView {
    /// `removed`, `narrowed`, `added` or `changed`.
    kind: &'static str,
    rule: String,
    line: usize,
    /// Whom the rule is for, in the policy's syntax.
    who: Vec<String>,
    action: &'static str,
    pattern: String,
    /// The change, as a line of text.
    text: String,
    /// Requests seen in the window that it would deny (a sample).
    would_deny: Vec<ProbeView>,
    /// How many in all.
    would_deny_count: usize,
}

/// Traffic left out of the suggestion, and why.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SkippedView {
    observed: ObservedView,
    reason: String,
}

/// Everything seen in the window.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Observations {
    window_secs: i64,
    observations: Vec<ObservedView>,
}

/// The narrowest policy allowing what was seen.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SuggestionView {
    window_secs: i64,
    /// Only this group's devices.
    group: Option<String>,
    /// The suggested policy file.
    toml: String,
    /// A unified diff against the policy in force.
    diff: String,
    changes: Vec<ChangeView>,
    /// Denied requests seen in the window.
    denied_seen: Vec<ObservedView>,
    skipped: Vec<SkippedView>,
}

/// A grant nothing used.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UnusedGrant {
    rule: String,
    line: usize,
    message: String,
}

/// Grants nothing used in the window.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Unused {
    window_secs: i64,
    unused: Vec<UnusedGrant>,
}

fn observed_json(o: &Observed) -> ObservedView {
    ObservedView {
        device: o.device.clone(),
        groups: o.groups.clone(),
        action: action_name(o.action),
        topic: o.topic.clone(),
        count: o.count,
    }
}

fn probe_json(p: &Probe) -> ProbeView {
    ProbeView {
        device: p.device.clone(),
        groups: p.groups.clone(),
        action: action_name(p.action),
        topic: p.topic.clone(),
    }
}

/// What devices were seen doing.
#[utoipa::path(get, path = "/api/v1/policy/observations", tag = "policy", description = "Read route (any operator).",
    params(Window),
    responses((status = 200, description = "The observations", body = Observations), ReadErrors))]
async fn observations(
    State(s): State<AppState>,
    _a: Reader,
    Query(w): Query<Window>,
) -> Result<impl IntoResponse, ApiError> {
    let secs = window_secs(&w)?;
    let cp = Arc::clone(&s.cp);
    let list = super::admin::blocking(move || cp.observed(secs)).await?;
    Ok(Json(Observations {
        window_secs: secs,
        observations: list.iter().map(observed_json).collect(),
    }))
}

/// The narrowest policy allowing what was seen.
#[utoipa::path(get, path = "/api/v1/policy/suggest", tag = "policy", description = "Read route (any operator). Changes nothing.",
    params(Window),
    responses((status = 200, description = "The suggestion", body = SuggestionView), ReadErrors))]
async fn suggest(
    State(s): State<AppState>,
    _a: Reader,
    Query(w): Query<Window>,
) -> Result<impl IntoResponse, ApiError> {
    let secs = window_secs(&w)?;
    let cp = Arc::clone(&s.cp);
    let group = w.group.clone();
    let sug = super::admin::blocking(move || cp.suggest_policy(secs, group.as_deref())).await?;
    let changes: Vec<ChangeView> = sug
        .changes
        .iter()
        .map(|c| ChangeView {
            kind: match c.kind {
                ChangeKind::Removed => "removed",
                ChangeKind::Narrowed => "narrowed",
                ChangeKind::Added => "added",
                #[allow(unreachable_patterns)]
                _ => "changed",
            },
            rule: c.rule.clone(),
            line: c.line,
            who: c.who.iter().map(ToString::to_string).collect(),
            action: action_name(c.action),
            pattern: c.pattern.clone(),
            text: c.text.clone(),
            would_deny: c.would_deny.iter().map(probe_json).collect(),
            would_deny_count: c.would_deny_count,
        })
        .collect();
    Ok(Json(SuggestionView {
        window_secs: secs,
        group: w.group,
        toml: sug.toml,
        diff: sug.diff,
        changes,
        denied_seen: sug.denied_seen.iter().map(observed_json).collect(),
        skipped: sug
            .skipped
            .iter()
            .map(|k| SkippedView {
                observed: observed_json(&k.observed),
                reason: k.reason.clone(),
            })
            .collect(),
    }))
}

/// Grants nothing used in the window.
#[utoipa::path(get, path = "/api/v1/policy/unused", tag = "policy", description = "Read route (any operator).",
    params(Window),
    responses((status = 200, description = "The unused grants", body = Unused), ReadErrors))]
async fn unused(
    State(s): State<AppState>,
    _a: Reader,
    Query(w): Query<Window>,
) -> Result<impl IntoResponse, ApiError> {
    let secs = window_secs(&w)?;
    let cp = Arc::clone(&s.cp);
    let lints = super::admin::blocking(move || cp.unused_grants(secs)).await?;
    Ok(Json(Unused {
        window_secs: secs,
        unused: lints
            .iter()
            .map(|l| UnusedGrant {
                rule: l.rule.clone(),
                line: l.line,
                message: l.message.clone(),
            })
            .collect(),
    }))
}
