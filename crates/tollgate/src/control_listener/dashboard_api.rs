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
use utoipa::ToSchema;

use super::admin::{json_body, ApiError, AppState};
use super::auth::{CertificateOperator, OperatorRole};
use super::openapi::{DashboardLogin, WriteErrors};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/dashboard/logins", post(create_login))
}

/// What kind of dashboard session to sign in to.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    /// `admin` or `viewer` (default: the caller's own role; never above it).
    #[serde(default)]
    role: Option<String>,
    /// How long the one-time URL stays valid.
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// A one-time dashboard sign-in URL.
#[utoipa::path(post, path = "/api/v1/dashboard/logins", tag = "server",
    description = "Any operator with a client certificate (a dashboard session cannot mint sessions), for a role no higher than their own.",
    request_body(content = Option<LoginRequest>, content_type = "application/json"),
    responses((status = 201, description = "The URL, its expiry and role", body = DashboardLogin), WriteErrors))]
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
