//! A registered device's lifecycle on the admin API: `PATCH /api/v1/devices/{id}` (groups
//! and labels) and `DELETE /api/v1/devices/{id}` (revoke everything, disconnect, remove).
//!
//! Thin adapters: the admin's name goes to the control plane as `by`; the control plane
//! records, applies and reports ([`tollgate_control::lifecycle`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::patch;
use axum::{Json, Router};
use serde::Deserialize;
use tollgate_control::requests::{DeleteDevice, PatchDevice};
use tollgate_control::DeviceView;
use utoipa::IntoParams;

use super::admin::{blocking, json_body, required, Admin, ApiError, AppState};
use super::openapi::{DeletedDevice, WriteErrors};

/// Change a device's groups or labels.
#[utoipa::path(patch, path = "/api/v1/devices/{id}", tag = "devices",
    description = "Admin route. Both parts are checked before either is written; live connections are re-checked against the new groups.",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = PatchDevice, content_type = "application/json"),
    responses((status = 200, description = "The device", body = DeviceView), WriteErrors))]
async fn patch_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: PatchDevice = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let view = blocking(move || {
        // Both parts are checked before either is written.
        if let Some(groups) = &req.groups {
            tollgate_control::lifecycle::validate_groups(groups)?;
        }
        if let Some(labels) = &req.labels {
            cp.set_device_labels(&id, labels, &who)?;
        }
        if let Some(groups) = &req.groups {
            cp.set_device_groups(&id, groups, &who)?;
        }
        cp.device(&id)
    })
    .await?;
    Ok(Json(view))
}

/// `?reason=` (the body may give it too).
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeleteQuery {
    /// Why (recorded with the revocation).
    reason: Option<String>,
}

/// Delete a device: revoke its certificates, close its connections, remove it.
#[utoipa::path(delete, path = "/api/v1/devices/{id}", tag = "devices", description = "Admin route.",
    params(("id" = String, Path, description = "Device id"), DeleteQuery),
    request_body(content = Option<DeleteDevice>, content_type = "application/json"),
    responses((status = 200, description = "What was deleted", body = DeletedDevice), WriteErrors))]
async fn delete_device(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: DeleteDevice = json_body(&s, &headers, body).await?.unwrap_or_default();
    let reason = req.reason.or(q.reason).unwrap_or_else(|| "deleted".into());
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || cp.delete_device(&id, &reason, &who)).await?,
    ))
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/devices/{id}",
        patch(patch_device).delete(delete_device),
    )
}
