//! Visibility routes of the admin API: per-device and fleet statistics, alerts, verdicts and
//! suppressions.
//!
//! `GET /api/v1/devices/{id}/stats` (the last hour in buckets, current rates, TCP health,
//! baseline and learning state, sources, active alerts); `GET /api/v1/stats` (fleet);
//! `GET /api/v1/alerts[?active=true]`, `GET /api/v1/alerts/{id}`,
//! `POST /api/v1/alerts/{id}/verdict` (`{"verdict": "true_positive" | "false_positive" |
//! "benign_positive", "note"}`); `GET|POST /api/v1/alerts/suppressions` (`{"detector",
//! "device", "for": "2h", "reason"}`), `DELETE /api/v1/alerts/suppressions/{id}`.
//! Handlers only adapt: the detection engine decides.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tollgate_detect::{Alert, DetectError, Suppression, SuppressionRequest, VerdictKind};
use tollgate_events::EventKind;
use utoipa::{IntoParams, ToSchema};

use super::admin::{required, Admin, ApiError, AppState, Reader};
use super::openapi::{DeviceStats, FleetStats, ReadErrors, WriteErrors};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices/{id}/stats", get(device_stats))
        .route("/api/v1/stats", get(fleet_stats))
        .route("/api/v1/alerts", get(list_alerts))
        .route(
            "/api/v1/alerts/suppressions",
            get(list_suppressions).post(add_suppression),
        )
        .route(
            "/api/v1/alerts/suppressions/{id}",
            delete(remove_suppression),
        )
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/verdict", post(set_verdict))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Record an operator's action in the audit log before it takes effect.
async fn write_ahead(
    s: &AppState,
    action: &'static str,
    subject: &str,
    by: &str,
    detail: &str,
) -> Result<u64, ApiError> {
    let cp = Arc::clone(&s.cp);
    let (subject, by, detail) = (subject.to_owned(), by.to_owned(), detail.to_owned());
    super::admin::blocking(move || cp.write_ahead(action, &subject, &by, &detail)).await
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

impl From<DetectError> for ApiError {
    fn from(e: DetectError) -> Self {
        ApiError(super::status_of_detect(&e), e.to_string())
    }
}

/// A device's statistics.
#[utoipa::path(get, path = "/api/v1/devices/{id}/stats", tag = "detection", description = "Read route (any operator). A device the detectors have not seen yet answers with `learning` and a `note`.",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The statistics", body = DeviceStats), ReadErrors))]
async fn device_stats(
    State(s): State<AppState>,
    _a: Reader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Known to the registry (404 otherwise), even if the detectors have not seen it yet.
    let cp = Arc::clone(&s.cp);
    let id2 = id.clone();
    super::admin::blocking(move || cp.device(&id2)).await?;
    let id2 = id.clone();
    let stats = s
        .detection
        .with_engine(move |e| e.device_stats(&id2, now_ms()))
        .await
        .map_err(internal)?;
    match stats {
        Some(st) => Ok(Json(serde_json::to_value(st).unwrap_or_default())),
        None => Ok(Json(serde_json::json!({
            "device": id,
            "learning": true,
            "online": false,
            "note": "no traffic seen from this device since the server started",
        }))),
    }
}

/// The fleet's statistics.
#[utoipa::path(get, path = "/api/v1/stats", tag = "detection", description = "Read route (any operator).",
    responses((status = 200, description = "The statistics", body = FleetStats), ReadErrors))]
async fn fleet_stats(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let st = s
        .detection
        .with_engine(|e| e.fleet_stats(now_ms()))
        .await
        .map_err(internal)?;
    Ok(Json(st))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AlertQuery {
    /// Only alerts still active.
    #[serde(default)]
    active: bool,
    /// Only this device's alerts.
    device: Option<String>,
    /// Only this detector's.
    detector: Option<String>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "detection", description = "Read route (any operator).",
    params(AlertQuery),
    responses((status = 200, description = "The alerts", body = Vec<Alert>), ReadErrors))]
async fn list_alerts(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<AlertQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let active = q.active;
    let all = s
        .detection
        .with_engine(move |e| e.alerts(active))
        .await
        .map_err(internal)?;
    let alerts: Vec<_> = all
        .into_iter()
        .filter(|a| q.device.is_none() || a.device == q.device)
        .filter(|a| q.detector.as_deref().is_none_or(|d| a.detector == d))
        .collect();
    Ok(Json(alerts))
}

/// One alert.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "detection", description = "Read route (any operator).",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, description = "The alert", body = Alert), ReadErrors))]
async fn get_alert(
    State(s): State<AppState>,
    _a: Reader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id2 = id.clone();
    let a = s
        .detection
        .with_engine(move |e| e.alert(&id2))
        .await
        .map_err(internal)?;
    a.map(Json)
        .ok_or_else(|| ApiError::from(DetectError::UnknownAlert(id)))
}

/// An operator's verdict on an alert.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VerdictBody {
    /// `true_positive`, `false_positive` or `benign_positive`.
    verdict: VerdictKind,
    /// A note for the record.
    #[serde(default)]
    note: Option<String>,
}

/// Record an operator's verdict on an alert.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/verdict", tag = "detection", description = "Admin route. Written ahead to the audit log.",
    params(("id" = String, Path, description = "Alert id")),
    request_body(content = VerdictBody, content_type = "application/json"),
    responses((status = 200, description = "The alert", body = Alert), WriteErrors))]
async fn set_verdict(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: VerdictBody = required(&s, &headers, body).await?;
    write_ahead(
        &s,
        "alert_verdict",
        &id,
        &who,
        &format!("{:?}", req.verdict),
    )
    .await?;
    let (kind, by, note) = (req.verdict, who.clone(), req.note);
    let a = s
        .detection
        .with_engine(move |e| e.set_verdict(&id, kind, &by, note, now_ms()))
        .await
        .map_err(internal)??;
    let verdict = serde_json::to_value(req.verdict)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    s.events.emit(EventKind::AlertVerdict {
        id: a.id.clone(),
        verdict,
        by: who,
    });
    Ok(Json(a))
}

/// What to suppress, for how long, and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlertSuppressionRequest)]
pub(super) struct SuppressBody {
    /// A detector name (`rule:NAME` for a rule); every detector when absent.
    #[serde(default)]
    detector: Option<String>,
    /// A device id; every device when absent (one of the two is needed).
    #[serde(default)]
    device: Option<String>,
    /// How long: "30m", "2h", "7d" or seconds.
    #[serde(rename = "for")]
    duration: String,
    reason: String,
}

/// Longest suppression: a forgotten one must not silence a detector for good.
const MAX_SUPPRESSION_MS: i64 = 90 * 24 * 3600 * 1000;

/// Suppress a detector's alerts (on a device, or everywhere) for a while.
#[utoipa::path(post, path = "/api/v1/alerts/suppressions", tag = "detection", description = "Admin route. Written ahead to the audit log; at most 90 days.",
    request_body(content = SuppressBody, content_type = "application/json"),
    responses((status = 201, description = "The suppression", body = Suppression), WriteErrors))]
async fn add_suppression(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: SuppressBody = required(&s, &headers, body).await?;
    let bad = |m: String| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m);
    let ms = tollgate_detect::config::parse_duration(&req.duration)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            bad(format!(
                "\"for\": {:?} is not a duration (like \"30m\", \"2h\", \"7d\")",
                req.duration
            ))
        })?;
    if ms > MAX_SUPPRESSION_MS {
        return Err(bad("\"for\": a suppression lasts at most 90 days".into()));
    }
    if let Some(d) = &req.detector {
        if !tollgate_detect::detectors::is_detector_name(d)
            && d != "network_degradation"
            && !d.starts_with("rule:")
        {
            return Err(bad(format!("unknown detector {d:?}")));
        }
    }
    write_ahead(
        &s,
        "suppress_alerts",
        &format!(
            "{} on {}",
            req.detector.as_deref().unwrap_or("every detector"),
            req.device.as_deref().unwrap_or("every device")
        ),
        &who,
        &format!("for {}: {}", req.duration, req.reason),
    )
    .await?;
    let now = now_ms();
    let request = SuppressionRequest {
        detector: req.detector,
        device: req.device,
        until_ms: now.saturating_add(ms),
        reason: req.reason,
        by: who.clone(),
    };
    let sup = s
        .detection
        .with_engine(move |e| e.suppress(request, now))
        .await
        .map_err(internal)??;
    s.events.emit(EventKind::AlertSuppression {
        id: sup.id.clone(),
        detector: sup.detector.clone(),
        device: sup.device.clone(),
        until: crate::human::rfc3339_ms(sup.until_ms),
        change: "added",
        by: who,
    });
    Ok((StatusCode::CREATED, Json(sup)))
}

/// Alert suppressions in force.
#[utoipa::path(get, path = "/api/v1/alerts/suppressions", tag = "detection", description = "Read route (any operator).",
    responses((status = 200, description = "The suppressions", body = Vec<Suppression>), ReadErrors))]
async fn list_suppressions(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let list = s
        .detection
        .with_engine(|e| e.suppressions(now_ms()))
        .await
        .map_err(internal)?;
    Ok(Json(list))
}

/// Remove an alert suppression.
#[utoipa::path(delete, path = "/api/v1/alerts/suppressions/{id}", tag = "detection", description = "Admin route. Written ahead to the audit log.",
    params(("id" = String, Path, description = "Suppression id")),
    responses((status = 200, description = "The suppression removed", body = Suppression), WriteErrors))]
async fn remove_suppression(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    write_ahead(&s, "unsuppress_alerts", &id, &who, "").await?;
    let sup = s
        .detection
        .with_engine(move |e| e.unsuppress(&id))
        .await
        .map_err(internal)??;
    s.events.emit(EventKind::AlertSuppression {
        id: sup.id.clone(),
        detector: sup.detector.clone(),
        device: sup.device.clone(),
        until: crate::human::rfc3339_ms(sup.until_ms),
        change: "removed",
        by: who,
    });
    Ok(Json(sup))
}
