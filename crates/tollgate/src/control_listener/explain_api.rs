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

use super::admin::{blocking, ApiError, AppState, Reader};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/policy/explain", get(explain))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    device: String,
    action: String,
    topic: String,
}

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
