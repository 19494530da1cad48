//! `GET /api/v1/policy/explain?device=ID&action=publish|subscribe|retain&topic=T`: may this
//! registered device do this now, and which rules decide? The device's groups and state
//! (quarantine included) come from the registry, so the answer is the live server's. Only
//! adapts: [`tollgate_control::Control::explain`] decides.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tollgate_policy::Action;
use utoipa::IntoParams;

use super::admin::{blocking, ApiError, AppState, Reader};
use super::openapi::{Explanation, ReadErrors};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/policy/explain", get(explain))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExplainQuery {
    /// A registered device's id.
    device: String,
    /// `publish`, `subscribe` or `retain`.
    action: String,
    /// A topic (publish, retain) or a filter (subscribe).
    topic: String,
}

/// Whether a registered device may do this now, and which rules decide.
#[utoipa::path(get, path = "/api/v1/policy/explain", tag = "policy",
    description = "Read route (any operator). Uses the device's real groups and state (quarantine included) from the registry.",
    params(ExplainQuery),
    responses((status = 200, description = "The decision and its steps", body = Explanation), ReadErrors))]
async fn explain(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<ExplainQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let action = match q.action.as_str() {
        "publish" => Action::Publish,
        "subscribe" => Action::Subscribe,
        "retain" => Action::Retain,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("action: {other:?} is not one of publish, subscribe, retain"),
            ))
        }
    };
    let cp = Arc::clone(&s.cp);
    let ex = blocking(move || cp.explain(&q.device, action, &q.topic)).await?;
    Ok(Json(ex))
}
