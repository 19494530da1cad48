//! Request bodies, read only after the caller's credentials were checked, bounded in size and
//! time. Routes take the raw [`Body`] and call [`read`] themselves, so nothing reads a body
//! before the handler has decided the caller may send one.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;

/// Why a body was not read.
#[derive(Debug)]
pub struct BodyError {
    /// 408, 413, 415 or 400.
    pub status: StatusCode,
    /// What to tell the caller.
    pub reason: String,
}

/// Refuse a body whose declared media type is not one of `accepted` (a missing type is
/// accepted: the route's parser then decides).
pub fn media_type(headers: &HeaderMap, accepted: &[&str]) -> Result<(), BodyError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = v
        .to_str()
        .ok()
        .and_then(|s| s.split(';').next())
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if accepted.contains(&essence.as_str()) {
        Ok(())
    } else {
        Err(BodyError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: format!(
                "this route takes {} (Content-Type), not {essence:?}",
                accepted.join(" or ")
            ),
        })
    }
}

/// Read at most `limit` bytes of body within `deadline`. A declared `Content-Length` over the
/// limit is refused before a byte is read.
pub async fn read(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let too_large = || BodyError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        reason: format!("the body is larger than this route's limit of {limit} bytes"),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(BodyError {
            status: StatusCode::REQUEST_TIMEOUT,
            reason: format!(
                "the body did not arrive within {} s",
                deadline.as_secs_f32()
            ),
        }),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(BodyError {
            status: StatusCode::BAD_REQUEST,
            reason: format!("the body could not be read: {e}"),
        }),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}
