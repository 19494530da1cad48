//! The admin API: HTTPS with an admin client certificate, JSON in and out.
//!
//! Routes (all under `/api/v1`): `GET /health`, `GET /devices`, `POST /devices`,
//! `GET /devices/{id}`, `POST /devices/{id}/revoke`, `GET /connections`, `GET /policy`.
//! Errors come back as `{"error": "..."}` with a fitting status; this module is the one place
//! control-plane errors become HTTP statuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tollgate_broker::Broker;
use tollgate_events::{EventBus, EventKind};
use tollgate_pki::Role;

use crate::control::{ControlError, ControlPlane};

#[derive(Clone)]
struct AppState {
    cp: Arc<ControlPlane>,
    broker: Broker,
    events: EventBus,
}

/// Who the client certificate says is calling (`Role::Other` without one).
#[derive(Clone, Debug)]
pub struct Peer {
    pub role: Role,
    pub addr: SocketAddr,
    /// Serial of the verified client certificate.
    pub serial: Option<String>,
    /// Which CA issued it: ours (operational) or a supplier's (bootstrap only).
    pub kind: crate::control::PeerKind,
    /// The client certificate (DER), for bootstrap enrollment.
    pub cert_der: Option<Vec<u8>>,
}

/// Extractor: the caller is an administrator.
struct Admin(String);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<Peer>().cloned();
        match peer {
            // Only an admin certificate from Tollgate's own CA: a supplier CA could write any SAN.
            Some(Peer {
                role: Role::Admin(name),
                kind: crate::control::PeerKind::Operational,
                ..
            }) => Ok(Admin(name)),
            other => {
                let addr = other.as_ref().map(|p| p.addr);
                let detail = format!(
                    "{} {}: client certificate is not an admin certificate",
                    parts.method,
                    parts.uri.path()
                );
                state.events.emit(EventKind::AdminDenied { addr, detail });
                Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "an admin client certificate is required".into(),
                ))
            }
        }
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDevice {
    id: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

async fn create_token(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    body: Option<Json<TokenRequest>>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    let req = body.map(|b| b.0).unwrap_or_default();
    let (token, expires_at) = blocking(move || {
        cp.create_token(
            &id,
            &req.groups,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    reason: Option<String>,
}

async fn health(State(s): State<AppState>) -> Json<serde_json::Value> {
    let st = s.broker.stats();
    use std::sync::atomic::Ordering::Relaxed;
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "connections": st.connections.load(Relaxed),
        "sessions": s.broker.session_count(),
        "messages_in": st.messages_in.load(Relaxed),
        "messages_out": st.messages_out.load(Relaxed),
        "messages_dropped": st.messages_dropped.load(Relaxed),
        "publish_denied": st.publish_denied.load(Relaxed),
        "subscribe_denied": st.subscribe_denied.load(Relaxed),
        "queue_full": st.queue_full.load(Relaxed),
        "messages_persisted": st.messages_persisted.load(Relaxed),
        "storage_refused": st.storage_refused.load(Relaxed),
        "retained": s.broker.retained_count(),
        "events_dropped": s.events.dropped(),
    }))
}

async fn list_devices(State(s): State<AppState>, _a: Admin) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.devices()).await?))
}

async fn get_device(
    State(s): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.device(&id)).await?))
}

async fn add_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    Json(req): Json<AddDevice>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    let issued = blocking(move || cp.add_device(&req.id, &req.groups, &who)).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

async fn revoke_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    body: Option<Json<RevokeRequest>>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    let reason = body
        .and_then(|b| b.0.reason)
        .unwrap_or_else(|| "unspecified".into());
    Ok(Json(
        blocking(move || cp.revoke_device(&id, &reason, &who)).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSupplier {
    name: String,
    ca_pem: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    allow_reenroll: bool,
}

async fn add_supplier(
    State(s): State<AppState>,
    Admin(who): Admin,
    Json(req): Json<AddSupplier>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    let v = blocking(move || {
        cp.add_supplier(
            &req.name,
            &req.ca_pem,
            &req.groups,
            req.allow_reenroll,
            &who,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn ca_status(State(s): State<AppState>, _a: Admin) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.ca_status()).await?))
}

async fn list_suppliers(State(s): State<AppState>, _a: Admin) -> impl IntoResponse {
    Json(s.cp.suppliers())
}

async fn connections(State(s): State<AppState>, _a: Admin) -> impl IntoResponse {
    Json(s.broker.connections())
}

async fn policy(State(s): State<AppState>, _a: Admin) -> impl IntoResponse {
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

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/devices", get(list_devices).post(add_device))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/revoke", post(revoke_device))
        .route("/api/v1/devices/{id}/token", post(create_token))
        .route("/api/v1/connections", get(connections))
        .route("/api/v1/policy", get(policy))
        .route("/api/v1/suppliers", get(list_suppliers).post(add_supplier))
        .route("/api/v1/ca", get(ca_status))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(state)
}

/// Serve the admin API until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    cp: Arc<ControlPlane>,
    broker: Broker,
    events: EventBus,
    mut shutdown: watch::Receiver<bool>,
) {
    let est = crate::est::router(crate::est::EstState {
        cp: Arc::clone(&cp),
        events: events.clone(),
    });
    let cp_peer = Arc::clone(&cp);
    let app = router(AppState {
        cp,
        broker,
        events: events.clone(),
    })
    .merge(est);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("admin accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = TlsAcceptor::from(tls.load_full());
        let app = app.clone();
        let cp_for_peer = Arc::clone(&cp_peer);
        let events = events.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        events.emit(EventKind::AdminDenied {
                            addr: Some(addr),
                            detail: format!("TLS: {e}"),
                        });
                        return;
                    }
                    Err(_) => return,
                };
            let der = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            let info = der
                .as_deref()
                .and_then(|c| tollgate_pki::parse_certificate(c).ok());
            let kind = der
                .as_deref()
                .map_or(crate::control::PeerKind::Anonymous, |d| {
                    cp_for_peer.classify(d)
                });
            let (role, serial) = match info {
                Some(i) => (i.role, Some(i.serial)),
                None => (Role::Other, None),
            };
            let peer = Peer {
                role,
                addr,
                serial,
                kind,
                cert_der: der,
            };
            let svc = TowerToHyperService::new(app.layer(Extension(peer)));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!("admin connection: {e}");
            }
        });
    }
}
