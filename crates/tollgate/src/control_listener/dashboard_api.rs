//! The admin API's dashboard route: `POST /api/v1/dashboard/logins` (`{"role": "admin" |
//! "viewer", "ttl_secs": N}`, both optional) returns `{"url", "expires_at", "role"}`, a one-time
//! sign-in URL for a browser (`tollgate dashboard login`). Only an operator with a client
//! certificate may ask (a session must not mint sessions), and not for a role above their own.
//! The handler only adapts: [`crate::dashboard::signin::issue`] decides.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::admin::{json_body, ApiError, AppState};
use super::auth::{CertificateOperator, OperatorRole};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/dashboard/logins", post(create_login))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

async fn create_login(
    State(s): State<AppState>,
    CertificateOperator(who): CertificateOperator,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: LoginRequest = json_body(&s, &headers, body).await?.unwrap_or_default();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "the request has no Host header to build the URL from".into(),
            )
        })?;
    let caller = match who.role {
        OperatorRole::Admin => crate::dashboard::Role::Admin,
        OperatorRole::Viewer => crate::dashboard::Role::Viewer,
    };
    let v = crate::dashboard::signin::issue(
        &s.dashboard,
        host,
        &who.name,
        caller,
        req.role.as_deref(),
        req.ttl_secs,
    )
    .map_err(|(status, why)| ApiError(status, why))?;
    Ok((StatusCode::CREATED, Json(v)))
}
