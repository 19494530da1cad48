//! The admin API: HTTPS with an admin client certificate, JSON in and out.
//!
//! Routes (all under `/api/v1`): `GET /health`, `GET /devices`, `POST /devices`,
//! `GET /devices/{id}`, `POST /devices/{id}/revoke`, `POST /devices/{id}/quarantine`,
//! `POST /devices/{id}/release`, `POST /devices/{id}/token`, `GET /connections`, `GET /policy`,
//! `GET|POST /suppliers`, `GET /ca`, the inventory and compliance routes of
//! [`super::compliance_api`], the operators' routes and server-certificate renewal of
//! [`super::operators_api`], and `PATCH|DELETE /devices/{id}` of [`super::lifecycle_api`]. Errors come back as `{"error": "..."}` with the status
//! [`super::status_of`] gives, and so do the listener's own (400, 404, 405, 408, 413, 415,
//! 422). The caller's certificate is checked before a body is read; bodies are read with the
//! route's limit and deadline ([`super::body`]) and parsed by [`tollgate_control::requests`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tollgate_broker::Broker;
use tollgate_control::requests::{
    self, AddDevice, AddSupplier, QuarantineRequest, ReleaseRequest, RequestError, RevokeRequest,
    TokenRequest,
};
use tollgate_control::{Control, ControlError, OPERATOR};
use tollgate_events::EventBus;

pub(super) use super::auth::{Admin, Reader};
use crate::admission::refusals::Refusals;
use crate::config::ControlLimits;

#[derive(Clone)]
pub(super) struct AdminState {
    pub cp: Arc<Control>,
    pub broker: Broker,
    pub events: EventBus,
    /// Both listeners' refusal records (the control one for admin denials; both for health).
    pub refusals: Refusals,
    pub limits: ControlLimits,
    /// Statistics and alerts.
    pub detection: Arc<crate::detection::Detection>,
    /// The audit log, when enabled.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// The configuration audit.
    pub config_audit: Option<Arc<crate::config_audit::ConfigAudit>>,
    /// The web dashboard (its sessions are one way to be a caller).
    pub dashboard: Arc<crate::dashboard::Dashboard>,
}

pub(super) type AppState = AdminState;

pub(super) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        super::json_error(self.0, self.1)
    }
}

impl From<super::body::BodyError> for ApiError {
    fn from(e: super::body::BodyError) -> Self {
        ApiError(e.status, e.reason)
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let status = match e {
            RequestError::Syntax(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError(status, e.to_string())
    }
}

/// Read and parse a JSON body (after the caller was found to be an admin); `None` when empty.
pub(super) async fn json_body<T: DeserializeOwned>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<T>, ApiError> {
    super::body::media_type(headers, &["application/json"])?;
    let bytes = super::body::read(
        body,
        headers,
        s.limits.max_body_bytes,
        s.limits.body_timeout,
    )
    .await?;
    Ok(requests::parse(&bytes)?)
}

/// A JSON body the route cannot do without.
pub(super) async fn required<T: DeserializeOwned>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    json_body(s, headers, body).await?.ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "this route needs a JSON body".into(),
        )
    })
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(super::status_of(&e), e.to_string())
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    super::blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn create_token(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: TokenRequest = json_body(&s, &headers, body).await?.unwrap_or_default();
    let cp = Arc::clone(&s.cp);
    let (token, expires_at) = blocking(move || {
        cp.create_token(
            &id,
            &req.groups,
            req.change_groups,
            req.ttl_secs.map(Duration::from_secs),
            &who,
        )
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "token": token, "expires_at": expires_at })),
    ))
}

async fn health(State(s): State<AppState>) -> Json<serde_json::Value> {
    let st = s.broker.stats();
    use std::sync::atomic::Ordering::Relaxed;
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "connections": st.connections.load(Relaxed),
        "sessions": s.broker.session_count(),
        "messages_in": st.messages_in_total(),
        "messages_out": st.messages_out_total(),
        "messages_dropped": st.messages_dropped.load(Relaxed),
        "publish_denied": st.publish_denied.load(Relaxed),
        "subscribe_denied": st.subscribe_denied.load(Relaxed),
        "queue_full": st.queue_full.load(Relaxed),
        "messages_persisted": st.messages_persisted.load(Relaxed),
        "storage_refused": st.storage_refused.load(Relaxed),
        "retained": s.broker.retained_count(),
        "retained_bytes": s.broker.retained_bytes(),
        "retained_refused": st.retained_dropped.load(Relaxed),
        "stalled_connections": st.stalled_connections.load(Relaxed),
        "packet_timeouts": st.packet_timeouts.load(Relaxed),
        "refusals": {
            "mqtt": s.refusals.mqtt.total(),
            "control": s.refusals.control.total(),
        },
        "events_dropped": s.events.dropped(),
    }))
}

async fn list_devices(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.devices()).await?))
}

async fn get_device(
    State(s): State<AppState>,
    _a: Reader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.device(&id)).await?))
}

async fn add_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: AddDevice = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let issued =
        blocking(move || cp.add_device(&req.id, &req.groups, req.reactivate, &who)).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

async fn revoke_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: Option<RevokeRequest> = json_body(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let reason = req
        .and_then(|r| r.reason)
        .unwrap_or_else(|| "unspecified".into());
    Ok(Json(
        blocking(move || cp.revoke_device(&id, &reason, &who)).await?,
    ))
}

async fn quarantine_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: QuarantineRequest = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let source = req.source.unwrap_or_else(|| OPERATOR.to_owned());
    Ok(Json(
        blocking(move || cp.quarantine(&id, &source, &req.reason, &who)).await?,
    ))
}

async fn release_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: ReleaseRequest = json_body(&s, &headers, body).await?.unwrap_or_default();
    let cp = Arc::clone(&s.cp);
    let source = (!req.all).then(|| req.source.unwrap_or_else(|| OPERATOR.to_owned()));
    Ok(Json(
        blocking(move || cp.release(&id, source.as_deref(), &who)).await?,
    ))
}

async fn add_supplier(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: AddSupplier = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let v = blocking(move || {
        let v = cp.add_supplier(
            &req.name,
            &req.ca_pem,
            &req.groups,
            req.allow_reenroll,
            &who,
        )?;
        if req.disclosure_contact.is_some() || req.support_end.is_some() {
            cp.set_supplier_info(&req.name, req.disclosure_contact, req.support_end, &who)?;
        }
        Ok(v)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn ca_status(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.ca_status()).await?))
}

async fn list_suppliers(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || super::compliance_api::suppliers_with_info(&cp)).await?,
    ))
}

async fn connections(State(s): State<AppState>, _a: Reader) -> impl IntoResponse {
    Json(s.broker.connections())
}

async fn policy(State(s): State<AppState>, _a: Reader) -> impl IntoResponse {
    let p = s.cp.policy();
    let rules: Vec<_> = p
        .rules()
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "effect": format!("{:?}", r.effect).to_lowercase(),
                "who": r.who.iter().map(|w| format!("{w:?}")).collect::<Vec<_>>(),
                "publish": r.publish,
                "subscribe": r.subscribe,
                "line": r.line,
            })
        })
        .collect();
    let lint: Vec<String> = p.lint().iter().map(|l| l.to_string()).collect();
    Json(serde_json::json!({ "rules": rules, "lint": lint }))
}

pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/devices", get(list_devices).post(add_device))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/revoke", post(revoke_device))
        .route("/api/v1/devices/{id}/quarantine", post(quarantine_device))
        .route("/api/v1/devices/{id}/release", post(release_device))
        .route("/api/v1/devices/{id}/token", post(create_token))
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/policy", get(policy))
        .route("/api/v1/suppliers", get(list_suppliers).post(add_supplier))
        .route("/api/v1/ca", get(ca_status))
        .merge(super::compliance_api::routes())
        .merge(super::detection_api::routes())
        .merge(super::audit_api::routes())
        .merge(super::findings_api::routes())
        .merge(super::policy_api::routes())
        .merge(super::explain_api::routes())
        .merge(super::dashboard_api::routes())
        .merge(super::operators_api::routes())
        .merge(super::lifecycle_api::routes())
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method".into(),
            )
        })
        .with_state(state)
}
