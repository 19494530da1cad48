//! The policy's routes of the admin API, versioned, and the groups it names.
//!
//! `GET /api/v1/policy` (the version in force: its text, rules in the policy's own syntax, lint,
//! with an `ETag`); `PUT /api/v1/policy` (a new text, with `If-Match` naming the version in
//! force: 428 without it, 412 when stale); `POST /api/v1/policy/validate` (what a text means;
//! changes nothing); `GET /api/v1/policy/history`, `GET /api/v1/policy/history/{version}`,
//! `GET /api/v1/policy/diff?from=V[&to=W]`, `POST /api/v1/policy/rollback` (`{"version": V}`:
//! V's text becomes a new version); `GET /api/v1/groups`. Handlers only adapt: the control
//! plane keeps the history, writes ahead and reloads ([`tollgate_control::policy_history`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_control::policy_history::{
    self, GroupView, LintView, PolicyVersion, RuleView, Validation,
};
use utoipa::{IntoParams, ToSchema};

use super::admin::{blocking, required, Admin, ApiError, AppState, Reader};
use super::problem::Problem;

/// Media types a policy text may be sent as.
const TEXT_TYPES: &[&str] = &["application/toml", "text/plain", "text/x-toml"];

/// The largest policy text accepted.
const MAX_POLICY_BYTES: usize = 1024 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/policy", get(current).put(update))
        .route("/api/v1/policy/validate", post(validate))
        .route("/api/v1/policy/history", get(history))
        .route("/api/v1/policy/history/{version}", get(version))
        .route("/api/v1/policy/diff", get(diff))
        .route("/api/v1/policy/rollback", post(rollback))
        .route("/api/v1/groups", get(groups))
}

/// The policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PolicyDoc {
    /// The version in force (also the `ETag`).
    version: u64,
    /// SHA-256 of `text`, hex.
    sha256: String,
    /// When it was put in force, RFC 3339.
    time: String,
    /// Who put it in force (`file` for a file changed on disk).
    by: String,
    /// The policy file's own TOML.
    text: String,
    /// Its rules, in the policy's own syntax.
    rules: Vec<RuleView>,
    /// Lint findings.
    lint: Vec<LintView>,
}

/// One version of the policy, with its text.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PolicyVersionText {
    #[serde(flatten)]
    meta: PolicyVersion,
    /// The text of that version.
    text: String,
}

/// Every version of the policy.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PolicyHistory {
    /// The version in force.
    current: u64,
    /// Every version, oldest first.
    versions: Vec<PolicyVersion>,
}

/// A unified diff between two versions.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PolicyDiff {
    /// The older side.
    from: u64,
    /// The newer side.
    to: u64,
    /// The unified diff of the two texts (empty when they are the same).
    diff: String,
}

/// Which version to put in force again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackRequest {
    /// A version from the history.
    version: u64,
}

/// Which versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DiffQuery {
    /// The older version.
    from: u64,
    /// The newer version (default: the version in force).
    #[serde(default)]
    to: Option<u64>,
}

fn with_etag<T: Serialize>(version: u64, status: StatusCode, body: T) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&policy_history::etag(version)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// A policy text from the body.
async fn policy_text(s: &AppState, headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    super::body::media_type(headers, TEXT_TYPES)?;
    let bytes = super::body::read(
        body,
        headers,
        s.limits.max_document_bytes.min(MAX_POLICY_BYTES),
        s.limits.document_timeout,
    )
    .await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "the policy text must be UTF-8".into(),
        )
    })
}

/// The policy in force: its text, rules and lint.
#[utoipa::path(get, path = "/api/v1/policy", tag = "policy",
    description = "Read route (any operator). The version in force, with its `ETag` (send it back as `If-Match` to change it).",
    responses(
        (status = 200, description = "The policy in force", body = PolicyDoc,
            headers(("ETag" = String, description = "The version in force, quoted"))),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No valid policy was ever loaded (the file does not parse; everything is denied)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The history could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
async fn current(State(s): State<AppState>, _a: Reader) -> Result<Response, ApiError> {
    let cp = Arc::clone(&s.cp);
    let (v, text, meaning) = blocking(move || {
        let (v, text) = cp.policy_current()?;
        let meaning = policy_history::validate(&text, "policy.toml");
        Ok((v, text, meaning))
    })
    .await?;
    let doc = PolicyDoc {
        version: v.version,
        sha256: v.sha256,
        time: v.time,
        by: v.by,
        text,
        rules: meaning.rules,
        lint: meaning.lint,
    };
    Ok(with_etag(v.version, StatusCode::OK, doc))
}

/// Put a new policy text in force.
#[utoipa::path(put, path = "/api/v1/policy", tag = "policy",
    description = "Admin route. Validates the text, writes the policy file atomically, records a new version and reloads it live (every open connection is re-checked). Needs `If-Match` with the version in force.",
    params(("If-Match" = String, Header, description = "The version in force, as its ETag gave it (`\"0\"` when no valid policy was ever loaded)")),
    request_body(description = "The policy file's TOML", content(
        (String = "application/toml"),
        (String = "text/plain"),
    )),
    responses(
        (status = 200, description = "The new version, in force", body = PolicyVersion,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "The text does not parse (every problem, with its line)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` names a version that is no longer in force", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The text is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a text media type", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No `If-Match`", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The file or history could not be written", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The audit log could not record the change; nothing changed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(tag) = headers
        .get(header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or_default().to_owned())
    else {
        return Err(ApiError(
            StatusCode::PRECONDITION_REQUIRED,
            "send If-Match with the version in force (the ETag of GET /api/v1/policy)".into(),
        ));
    };
    let text = policy_text(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let v = blocking(move || cp.update_policy(&text, &tag, &who)).await?;
    Ok(with_etag(v.version, StatusCode::OK, v))
}

/// What a policy text means; changes nothing.
#[utoipa::path(post, path = "/api/v1/policy/validate", tag = "policy",
    description = "Read route (any operator). Parses the text: its problems with line numbers, or its rules and lint findings. Changes nothing.",
    request_body(description = "A policy file's TOML", content(
        (String = "application/toml"),
        (String = "text/plain"),
    )),
    responses(
        (status = 200, description = "What the text means (`valid` says whether it would be accepted)", body = Validation),
        (status = 400, description = "The body is not UTF-8", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The text is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a text media type", body = Problem, content_type = "application/problem+json"),
    ))]
async fn validate(
    State(s): State<AppState>,
    _a: Reader,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Validation>, ApiError> {
    let text = policy_text(&s, &headers, body).await?;
    // Parsing is CPU work on up to a megabyte: off the runtime's threads.
    Ok(Json(
        blocking(move || Ok(policy_history::validate(&text, "policy.toml"))).await?,
    ))
}

/// Every version of the policy.
#[utoipa::path(get, path = "/api/v1/policy/history", tag = "policy",
    description = "Read route (any operator). Every version, oldest first, with time, operator, SHA-256 and rule count.",
    responses(
        (status = 200, description = "The history", body = PolicyHistory),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The history could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
async fn history(State(s): State<AppState>, _a: Reader) -> Result<Json<PolicyHistory>, ApiError> {
    let cp = Arc::clone(&s.cp);
    let versions = blocking(move || cp.policy_history()).await?;
    let current = versions.last().map_or(0, |v| v.version);
    Ok(Json(PolicyHistory { current, versions }))
}

/// One version of the policy, with its text.
#[utoipa::path(get, path = "/api/v1/policy/history/{version}", tag = "policy",
    description = "Read route (any operator).",
    params(("version" = u64, Path, description = "A version number")),
    responses(
        (status = 200, description = "That version and its text", body = PolicyVersionText),
        (status = 400, description = "Not a version number", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The history could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
async fn version(
    State(s): State<AppState>,
    _a: Reader,
    Path(version): Path<u64>,
) -> Result<Json<PolicyVersionText>, ApiError> {
    let cp = Arc::clone(&s.cp);
    let (meta, text) = blocking(move || cp.policy_version(version)).await?;
    Ok(Json(PolicyVersionText { meta, text }))
}

/// A unified diff between two versions.
#[utoipa::path(get, path = "/api/v1/policy/diff", tag = "policy",
    description = "Read route (any operator).",
    params(DiffQuery),
    responses(
        (status = 200, description = "The diff", body = PolicyDiff),
        (status = 400, description = "A version is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The history could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
async fn diff(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<DiffQuery>,
) -> Result<Json<PolicyDiff>, ApiError> {
    let cp = Arc::clone(&s.cp);
    let (to, diff) = blocking(move || {
        let to = match q.to {
            Some(t) => t,
            None => cp.policy_current()?.0.version,
        };
        Ok((to, cp.policy_diff(q.from, Some(to))?))
    })
    .await?;
    Ok(Json(PolicyDiff {
        from: q.from,
        to,
        diff,
    }))
}

/// Put an earlier version's text in force again, as a new version.
#[utoipa::path(post, path = "/api/v1/policy/rollback", tag = "policy",
    description = "Admin route. The text of `version` becomes a new version (history is never rewritten), written ahead to the audit log and reloaded live.",
    request_body(content = RollbackRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The new version, in force", body = PolicyVersion,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "No body, malformed JSON, or the old text no longer parses", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The JSON does not say which version", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The file or history could not be written", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The audit log could not record the change; nothing changed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rollback(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: RollbackRequest = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let v = blocking(move || cp.rollback_policy(req.version, &who)).await?;
    Ok(with_etag(v.version, StatusCode::OK, v))
}

/// Every group named by a device or by the policy.
#[utoipa::path(get, path = "/api/v1/groups", tag = "devices",
    description = "Read route (any operator). Every group a device belongs to or a rule names, with how many devices (not revoked) are in it, how many of them are quarantined, and the rules that name it.",
    responses(
        (status = 200, description = "The groups, by name", body = Vec<GroupView>),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The registry could not be read", body = Problem, content_type = "application/problem+json"),
    ))]
async fn groups(State(s): State<AppState>, _a: Reader) -> Result<Json<Vec<GroupView>>, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.groups()).await?))
}
