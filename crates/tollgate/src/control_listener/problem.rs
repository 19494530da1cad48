//! RFC 9457 problem details: the one error format of the admin API.
//!
//! Every error the control listener gives on `/api/v1` is an `application/problem+json`
//! document ([`Problem`]): handler errors ([`super::admin::ApiError`] renders one), the body
//! reader's 408/413/415, axum's own rejections (a path or query that does not parse, 404 for an
//! unknown route, 405 for a wrong method), which [`layer`] rewrites into problems, and the
//! hand-written refusals of callers over a limit ([`Problem::to_bytes`], used by
//! `write_refusal`). [`layer`] also fills in `instance` with the request's path.
//!
//! This module owns the shape of an error, not its status: statuses are decided where errors
//! are translated ([`super::status_of`] and its siblings). It must not look at a request's
//! credentials or body.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of a problem document.
pub const MEDIA_TYPE: &str = "application/problem+json";

/// Where the problem types live: `{BASE}{slug}` names each kind of problem.
const BASE: &str = "https://tollgate.dev/problems/";

/// The longest body of a non-problem error response that is carried over into `detail`.
const MAX_CARRIED: usize = 16 * 1024;

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "https://tollgate.dev/problems/not-found",
    "title": "Not Found",
    "status": 404,
    "detail": "device \"sensor-9\" not found",
    "instance": "/api/v1/devices/sensor-9"
}))]
pub struct Problem {
    /// A URI naming the kind of problem (stable; one per status, or per refusal `code`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem (the status's reason phrase).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a person.
    pub detail: String,
    /// The request path the problem is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Why a connection was refused before any route ran (`rate_limited`,
    /// `connection_limit`, `source_connection_limit`, `anonymous_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The slug of a status's problem type.
fn slug(status: StatusCode) -> String {
    match status {
        StatusCode::BAD_REQUEST => "bad-request".into(),
        StatusCode::UNAUTHORIZED => "unauthorized".into(),
        StatusCode::FORBIDDEN => "forbidden".into(),
        StatusCode::NOT_FOUND => "not-found".into(),
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed".into(),
        StatusCode::REQUEST_TIMEOUT => "request-timeout".into(),
        StatusCode::CONFLICT => "conflict".into(),
        StatusCode::PRECONDITION_FAILED => "precondition-failed".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large".into(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type".into(),
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable-content".into(),
        StatusCode::PRECONDITION_REQUIRED => "precondition-required".into(),
        StatusCode::TOO_MANY_REQUESTS => "too-many-requests".into(),
        StatusCode::INTERNAL_SERVER_ERROR => "internal".into(),
        StatusCode::SERVICE_UNAVAILABLE => "unavailable".into(),
        s => format!("http-{}", s.as_u16()),
    }
}

impl Problem {
    /// A problem of the kind `status` names, with `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{BASE}{}", slug(status)),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            code: None,
        }
    }

    /// A refusal made before any route ran: its own type, named by `code`.
    pub fn refusal(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("{BASE}{}", code.replace('_', "-")),
            code: Some(code.to_owned()),
            ..Problem::new(status, detail)
        }
    }

    /// The document's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings and a number always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut r = (self.status_code(), self.to_bytes()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        // Kept for [`layer`], which adds the request path.
        r.extensions_mut().insert(self);
        r
    }
}

/// Middleware: every error response becomes a problem document naming the request's path.
pub async fn layer(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let mut problem = match parts.extensions.remove::<Problem>() {
        Some(p) => p,
        None => {
            // An error written by axum itself (a rejection, 404, 405): its text becomes `detail`.
            let limited = http_body_util::Limited::new(body, MAX_CARRIED);
            let text = match limited.collect().await {
                Ok(c) => String::from_utf8_lossy(&c.to_bytes()).trim().to_owned(),
                Err(_) => String::new(),
            };
            let detail = if text.is_empty() {
                default_detail(status)
            } else {
                text
            };
            Problem::new(status, detail)
        }
    };
    problem.instance = Some(path);
    let bytes = problem.to_bytes();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, bytes.len().into());
    Response::from_parts(parts, Body::from(bytes))
}

/// What to say when axum said nothing.
fn default_detail(status: StatusCode) -> String {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take that method".into(),
        StatusCode::NOT_FOUND => "no such endpoint".into(),
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    }
}
