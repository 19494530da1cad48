//! The admin API: HTTPS with an admin client certificate, JSON in and out.
//!
//! Routes (all under `/api/v1`): `GET /health`, `GET /devices`, `POST /devices`,
//! `GET /devices/{id}`, `POST /devices/{id}/revoke`, `POST /revocations` (several devices at
//! once), `POST /devices/{id}/quarantine`,
//! `POST /devices/{id}/release`, `POST /devices/{id}/token`, `GET /connections`, `GET /policy`,
//! `GET|POST /suppliers`, `GET /ca`, the inventory and compliance routes of
//! [`super::compliance_api`], the operators' routes and server-certificate renewal of
//! [`super::operators_api`], and `PATCH|DELETE /devices/{id}` of [`super::lifecycle_api`].
//! Errors come back as RFC 9457 problem documents ([`super::problem`]) with the status
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
    self, AddDevice, AddSupplier, QuarantineRequest, ReleaseRequest, RequestError, RevokeDevices,
    RevokeRequest, TokenRequest,
};
use tollgate_control::{
    Control, ControlError, DeviceView, IssuedDevice, QuarantineOutcome, Revoked, OPERATOR,
};
use tollgate_events::EventBus;

pub(super) use super::auth::{Admin, Reader};
use super::openapi::{CaStatus, Connection, ReadErrors, Supplier, WriteErrors};
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

/// A new enrollment token.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct TokenIssued {
    /// The one-time token (give it to the device; it is shown once).
    token: String,
    /// When it expires, Unix seconds.
    expires_at: i64,
}

/// Issue an enrollment token for a device id.
#[utoipa::path(post, path = "/api/v1/devices/{id}/token", tag = "devices",
    description = "Admin route. A one-time enrollment token for `id` (EST `simpleenroll` with HTTP Basic `id:token`).",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Option<TokenRequest>, content_type = "application/json"),
    responses((status = 201, description = "The token", body = TokenIssued), WriteErrors))]
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
    Ok((StatusCode::CREATED, Json(TokenIssued { token, expires_at })))
}

/// Refusals counted per listener.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct RefusalCounts {
    /// By the MQTT listener.
    mqtt: u64,
    /// By the control listener.
    control: u64,
}

/// The server's health and counters.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// Always `ok` when the server answers.
    status: &'static str,
    /// The server's version.
    version: &'static str,
    connections: u64,
    sessions: usize,
    messages_in: u64,
    messages_out: u64,
    messages_dropped: u64,
    publish_denied: u64,
    subscribe_denied: u64,
    queue_full: u64,
    messages_persisted: u64,
    storage_refused: u64,
    retained: usize,
    retained_bytes: usize,
    retained_refused: u64,
    stalled_connections: u64,
    packet_timeouts: u64,
    refusals: RefusalCounts,
    events_dropped: u64,
}

/// Whether the server is up, with its counters.
#[utoipa::path(get, path = "/api/v1/health", tag = "server", security(()),
    description = "Open to every caller (no certificate needed): liveness and counters.",
    responses((status = 200, description = "Up", body = Health)))]
async fn health(State(s): State<AppState>) -> Json<Health> {
    let st = s.broker.stats();
    use std::sync::atomic::Ordering::Relaxed;
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        connections: st.connections.load(Relaxed),
        sessions: s.broker.session_count(),
        messages_in: st.messages_in_total(),
        messages_out: st.messages_out_total(),
        messages_dropped: st.messages_dropped.load(Relaxed),
        publish_denied: st.publish_denied.load(Relaxed),
        subscribe_denied: st.subscribe_denied.load(Relaxed),
        queue_full: st.queue_full.load(Relaxed),
        messages_persisted: st.messages_persisted.load(Relaxed),
        storage_refused: st.storage_refused.load(Relaxed),
        retained: s.broker.retained_count(),
        retained_bytes: s.broker.retained_bytes(),
        retained_refused: st.retained_dropped.load(Relaxed),
        stalled_connections: st.stalled_connections.load(Relaxed),
        packet_timeouts: st.packet_timeouts.load(Relaxed),
        refusals: RefusalCounts {
            mqtt: s.refusals.mqtt.total(),
            control: s.refusals.control.total(),
        },
        events_dropped: s.events.dropped(),
    })
}

/// Every device.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", description = "Read route (any operator).",
    responses((status = 200, description = "Every device", body = Vec<DeviceView>), ReadErrors))]
async fn list_devices(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.devices()).await?))
}

/// One device.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", description = "Read route (any operator).",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device", body = DeviceView), ReadErrors))]
async fn get_device(
    State(s): State<AppState>,
    _a: Reader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.device(&id)).await?))
}

/// Register a device and issue its key and certificate here.
#[utoipa::path(post, path = "/api/v1/devices", tag = "devices",
    description = "Admin route. Registers a device and returns its certificate and private key (shown once). An id that belongs to a revoked device needs `reactivate`.",
    request_body(content = AddDevice, content_type = "application/json"),
    responses((status = 201, description = "The device, with its credentials", body = IssuedDevice), WriteErrors))]
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

/// Revoke a device.
#[utoipa::path(post, path = "/api/v1/devices/{id}/revoke", tag = "devices",
    description = "Admin route. Revokes every certificate of the device, closes its connections and re-signs the CRL.",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Option<RevokeRequest>, content_type = "application/json"),
    responses((status = 200, description = "What was revoked", body = Revoked), WriteErrors))]
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

/// Revoke several devices at once.
#[utoipa::path(post, path = "/api/v1/revocations", tag = "devices",
    description = "Admin route. Revokes every certificate of each device named, closes their connections and re-signs the CRL once: one registry transaction, one snapshot swap (only these devices' connections re-check). All or nothing: an unknown id is 404 and nothing is revoked. Each device is written ahead and reported as if revoked alone.",
    request_body(content = RevokeDevices, content_type = "application/json"),
    responses((status = 200, description = "What was revoked, per device, in the order given", body = Vec<Revoked>), WriteErrors))]
async fn revoke_devices(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: RevokeDevices = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let reason = req.reason.unwrap_or_else(|| "unspecified".into());
    Ok(Json(
        blocking(move || cp.revoke_devices(&req.devices, &reason, &who)).await?,
    ))
}

/// Quarantine a device.
#[utoipa::path(post, path = "/api/v1/devices/{id}/quarantine", tag = "devices",
    description = "Admin route. Confines the device (its live connection included) to the policy's quarantine rules.",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = QuarantineRequest, content_type = "application/json"),
    responses((status = 200, description = "The device's new state", body = QuarantineOutcome), WriteErrors))]
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

/// Release a device from quarantine.
#[utoipa::path(post, path = "/api/v1/devices/{id}/release", tag = "devices",
    description = "Admin route. Removes the operator's quarantine reason (or the named `source`'s, or `all`).",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Option<ReleaseRequest>, content_type = "application/json"),
    responses((status = 200, description = "The device's new state", body = QuarantineOutcome), WriteErrors))]
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

/// Register a supplier and its manufacturing CA.
#[utoipa::path(post, path = "/api/v1/suppliers", tag = "suppliers",
    description = "Admin route. Devices with a certificate from the supplier's CA may enroll without a token.",
    request_body(content = AddSupplier, content_type = "application/json"),
    responses((status = 201, description = "The supplier", body = Supplier), WriteErrors))]
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

/// The CA hierarchy.
#[utoipa::path(get, path = "/api/v1/ca", tag = "server", description = "Read route (any operator).",
    responses((status = 200, description = "The CA hierarchy", body = CaStatus), ReadErrors))]
async fn ca_status(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.ca_status()).await?))
}

/// Every supplier.
#[utoipa::path(get, path = "/api/v1/suppliers", tag = "suppliers", description = "Read route (any operator).",
    responses((status = 200, description = "Every supplier", body = Vec<Supplier>), ReadErrors))]
async fn list_suppliers(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || super::compliance_api::suppliers_with_info(&cp)).await?,
    ))
}

/// Live MQTT connections.
#[utoipa::path(get, path = "/api/v1/connections", tag = "server", description = "Read route (any operator).",
    responses((status = 200, description = "Every live connection", body = Vec<Connection>), ReadErrors))]
async fn connections(State(s): State<AppState>, _a: Reader) -> impl IntoResponse {
    Json(s.broker.connections())
}

pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(super::openapi::openapi_json))
        .route("/api/v1/devices", get(list_devices).post(add_device))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/revoke", post(revoke_device))
        .route("/api/v1/revocations", post(revoke_devices))
        .route("/api/v1/devices/{id}/quarantine", post(quarantine_device))
        .route("/api/v1/devices/{id}/release", post(release_device))
        .route("/api/v1/devices/{id}/token", post(create_token))
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/suppliers", get(list_suppliers).post(add_supplier))
        .route("/api/v1/ca", get(ca_status))
        .merge(super::compliance_api::routes())
        .merge(super::detection_api::routes())
        .merge(super::audit_api::routes())
        .merge(super::findings_api::routes())
        .merge(super::policy_api::routes())
        .merge(super::policy_versions_api::routes())
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
        .layer(axum::middleware::from_fn(super::problem::layer))
        .with_state(state)
}
