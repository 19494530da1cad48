//! Configuration-audit routes of the admin API.
//!
//! `GET /api/v1/findings[?all=true][&refresh=true]` (the findings, open ones first; `refresh`
//! evaluates now first; `all` includes resolved ones), `POST /api/v1/findings/scan` (evaluate
//! now: the findings and what opened and resolved), `GET /api/v1/findings/sarif[?refresh=true]`
//! (SARIF 2.1.0), `GET|POST /api/v1/findings/suppressions` (`{"rule", "resource", "reason",
//! "for": "30d"}`), `DELETE /api/v1/findings/suppressions/{id}`. Suppressions are written
//! ahead to the audit log. Handlers only adapt: `tollgate_audit::findings` decides.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_audit::findings::{exit_code, sarif, Suppression, Tracked};
use tollgate_events::EventKind;
use utoipa::{IntoParams, ToSchema};

use super::admin::{required, Admin, ApiError, AppState, Reader};
use super::openapi::{Finding, FindingSuppression, ReadErrors, Sarif, WriteErrors};
use super::problem::Problem;
use crate::config_audit::{severity_name, ConfigAudit};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/findings", get(list))
        .route("/api/v1/findings/scan", post(scan))
        .route("/api/v1/findings/sarif", get(sarif_doc))
        .route(
            "/api/v1/findings/suppressions",
            get(suppressions).post(suppress),
        )
        .route("/api/v1/findings/suppressions/{id}", delete(unsuppress))
}

fn audit_of(s: &AppState) -> Result<Arc<ConfigAudit>, ApiError> {
    s.config_audit.clone().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the configuration audit is not running".into(),
        )
    })
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Run the audit now, on a blocking thread.
async fn refresh(a: &Arc<ConfigAudit>) -> Result<tollgate_audit::findings::Changes, ApiError> {
    let a = Arc::clone(a);
    tokio::task::spawn_blocking(move || a.run())
        .await
        .map_err(internal)?
        .map_err(|e| internal(format!("{e:#}")))
}

/// Counts over the open findings.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct FindingSummary {
    /// Open findings.
    open: usize,
    /// Of those, suppressed.
    suppressed: usize,
    /// The highest severity open and not suppressed.
    highest: Option<&'static str>,
    /// The exit code `tollgate audit config` would give.
    exit_code: u8,
}

/// The findings with their summary.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct FindingList {
    summary: FindingSummary,
    #[schema(value_type = Vec<Finding>)]
    findings: Vec<Tracked>,
}

/// The findings after a scan, and what it opened and resolved.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ScanResult {
    summary: FindingSummary,
    #[schema(value_type = Vec<Finding>)]
    findings: Vec<Tracked>,
    /// Findings the scan opened.
    #[schema(value_type = Vec<Finding>)]
    opened: Vec<Tracked>,
    /// Findings the scan resolved.
    #[schema(value_type = Vec<Finding>)]
    resolved: Vec<Tracked>,
}

fn summary(list: &[Tracked]) -> FindingSummary {
    let open: Vec<&Tracked> = list.iter().filter(|t| t.resolved_at.is_none()).collect();
    let highest = open
        .iter()
        .filter(|t| t.suppressed.is_none())
        .map(|t| t.finding.severity)
        .max();
    FindingSummary {
        open: open.len(),
        suppressed: open.iter().filter(|t| t.suppressed.is_some()).count(),
        highest: highest.map(severity_name),
        exit_code: exit_code(highest),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    refresh: bool,
}

/// Configuration findings, open ones first.
#[utoipa::path(get, path = "/api/v1/findings", tag = "findings", description = "Read route (any operator). 503 when the configuration audit is not running.",
    params(ListQuery),
    responses((status = 200, description = "The findings", body = FindingList), ReadErrors,
        (status = 503, description = "The configuration audit is not running", body = Problem, content_type = "application/problem+json")))]
async fn list(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = audit_of(&s)?;
    if q.refresh {
        refresh(&a).await?;
    }
    let findings = a.list(q.all);
    Ok(Json(FindingList {
        summary: summary(&findings),
        findings,
    }))
}

/// Evaluate the configuration now.
#[utoipa::path(post, path = "/api/v1/findings/scan", tag = "findings", description = "Admin route.",
    responses((status = 200, description = "The findings and what changed", body = ScanResult), WriteErrors))]
async fn scan(State(s): State<AppState>, _a: Admin) -> Result<impl IntoResponse, ApiError> {
    let a = audit_of(&s)?;
    let changes = refresh(&a).await?;
    let findings = a.list(false);
    Ok(Json(ScanResult {
        summary: summary(&findings),
        findings,
        opened: changes.opened,
        resolved: changes.resolved,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SarifQuery {
    #[serde(default)]
    refresh: bool,
}

/// Open findings as SARIF 2.1.0.
#[utoipa::path(get, path = "/api/v1/findings/sarif", tag = "findings", description = "Read route (any operator).",
    params(SarifQuery),
    responses((status = 200, description = "The SARIF log", body = Sarif), ReadErrors,
        (status = 503, description = "The configuration audit is not running", body = Problem, content_type = "application/problem+json")))]
async fn sarif_doc(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<SarifQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = audit_of(&s)?;
    if q.refresh {
        refresh(&a).await?;
    }
    Ok(Json(sarif(&a.list(false))))
}

/// Finding suppressions in force.
#[utoipa::path(get, path = "/api/v1/findings/suppressions", tag = "findings", description = "Read route (any operator).",
    responses((status = 200, description = "The suppressions", body = Vec<FindingSuppression>), ReadErrors,
        (status = 503, description = "The configuration audit is not running", body = Problem, content_type = "application/problem+json")))]
async fn suppressions(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let a = audit_of(&s)?;
    let list = a.with_book(|b| b.suppressions(now())).map_err(internal)?;
    Ok(Json(list))
}

/// A finding rule to suppress, where, for how long and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = FindingSuppressionRequest)]
pub(super) struct SuppressBody {
    rule: String,
    #[serde(default)]
    resource: Option<String>,
    reason: String,
    /// How long: "30m", "2h", "30d".
    #[serde(rename = "for")]
    duration: String,
}

/// Suppress a finding rule (on one resource, or everywhere) for a while.
#[utoipa::path(post, path = "/api/v1/findings/suppressions", tag = "findings", description = "Admin route. Written ahead to the audit log.",
    request_body(content = SuppressBody, content_type = "application/json"),
    responses((status = 201, description = "The suppression", body = FindingSuppression), WriteErrors))]
async fn suppress(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: SuppressBody = required(&s, &headers, body).await?;
    let a = audit_of(&s)?;
    let ms = tollgate_detect::config::parse_duration(&req.duration)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "\"for\": {:?} is not a duration (like \"12h\", \"30d\")",
                    req.duration
                ),
            )
        })?;
    let now = now();
    let until = now.saturating_add(ms / 1000);
    // Checked before it is written ahead: an invalid request is not an action.
    a.with_book(|b| {
        b.clone()
            .suppress(
                &req.rule,
                req.resource.as_deref(),
                &req.reason,
                &who,
                now,
                until,
            )
            .map(|_| ())
    })
    .map_err(internal)?
    .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let cp = Arc::clone(&s.cp);
    let (rule, resource, reason, by) = (
        req.rule.clone(),
        req.resource.clone(),
        req.reason.clone(),
        who.clone(),
    );
    super::admin::blocking(move || {
        cp.write_ahead(
            "suppress_finding",
            &format!(
                "{rule} on {}",
                resource.as_deref().unwrap_or("every resource")
            ),
            &by,
            &reason,
        )
    })
    .await?;
    let sup = a
        .with_book(|b| {
            b.suppress(
                &req.rule,
                req.resource.as_deref(),
                &req.reason,
                &who,
                now,
                until,
            )
        })
        .map_err(internal)?
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    announce(&s, &sup, "added", who);
    Ok((StatusCode::CREATED, Json(sup)))
}

/// Remove a finding suppression.
#[utoipa::path(delete, path = "/api/v1/findings/suppressions/{id}", tag = "findings", description = "Admin route. Written ahead to the audit log.",
    params(("id" = String, Path, description = "Suppression id")),
    responses((status = 200, description = "The suppression removed", body = FindingSuppression), WriteErrors))]
async fn unsuppress(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let a = audit_of(&s)?;
    let exists = a
        .with_book(|b| b.suppressions(now()).iter().any(|x| x.id == id))
        .map_err(internal)?;
    if !exists {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no suppression {id:?}"),
        ));
    }
    let cp = Arc::clone(&s.cp);
    let (id2, by) = (id.clone(), who.clone());
    super::admin::blocking(move || cp.write_ahead("unsuppress_finding", &id2, &by, "")).await?;
    let sup = a
        .with_book(|b| b.unsuppress(&id))
        .map_err(internal)?
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    announce(&s, &sup, "removed", who);
    Ok(Json(sup))
}

/// The event of a suppression added or removed.
fn announce(s: &AppState, sup: &Suppression, change: &'static str, by: String) {
    s.events.emit(EventKind::FindingSuppression {
        id: sup.id.clone(),
        rule: sup.rule.clone(),
        resource: sup.resource.clone(),
        change,
        reason: sup.reason.clone(),
        by,
        until: crate::human::rfc3339_ms(sup.until.saturating_mul(1000)),
    });
}
