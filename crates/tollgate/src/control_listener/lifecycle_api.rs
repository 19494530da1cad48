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

use super::admin::{blocking, json_body, required, Admin, ApiError, AppState};

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
#[derive(Debug, Deserialize, Default)]
struct DeleteQuery {
    reason: Option<String>,
}

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
