//! EST (RFC 7030, with the RFC 8951 clarifications) on the HTTPS control listener.
//!
//! - `GET  /.well-known/est[/<label>]/cacerts`       CA certificates, base64 PKCS#7 certs-only
//! - `POST /.well-known/est[/<label>]/simpleenroll`  base64 DER PKCS#10 in; authorised by a
//!   one-time token (HTTP Basic `ID:TOKEN` or `Bearer TOKEN`)
//! - `POST /.well-known/est[/<label>]/simplereenroll` authorised by the current, valid,
//!   unrevoked client certificate
//! - `GET  /.well-known/est[/<label>]/csrattrs`      what a CSR should contain
//! - `GET  /crl`, `GET /crl/root`                    the issuing and root CAs' CRLs (DER)
//!
//! Errors are plain-text reasons with EST-conformant statuses (400 bad request, 401 no
//! credentials, 403 refused, 404 unknown label, 405, 408 body too slow, 413 body too large,
//! 415 not `application/pkcs10`). Credentials (the token in the headers, the client
//! certificate) are checked before a byte of the body is read, and the body is read with the
//! CSR limit and the body deadline.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use base64::Engine;
use tollgate_events::{EventBus, EventKind};
use tollgate_pki::Role;

use tollgate_control::{Control, ControlError, PeerKind};

use super::Peer;
use crate::admission::refusals::RefusalLog;
use crate::config::ControlLimits;

#[derive(Clone)]
pub(super) struct EstState {
    pub cp: Arc<Control>,
    pub events: EventBus,
    pub refusals: Arc<RefusalLog>,
    pub limits: ControlLimits,
}

/// The CSR of a request whose credentials were accepted: media type, size and deadline first.
async fn csr_body(s: &EstState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Refusal> {
    let bad = |e: super::body::BodyError| Refusal::new(e.status, e.reason);
    super::body::media_type(headers, &["application/pkcs10"]).map_err(bad)?;
    let bytes = super::body::read(body, headers, s.limits.max_csr_bytes, s.limits.body_timeout)
        .await
        .map_err(bad)?;
    decode_csr(&bytes)
}

const PKCS7: &str = "application/pkcs7-mime; smime-type=certs-only";

fn b64_body(der: &[u8]) -> String {
    // One line, no breaks: RFC 8951 allows either, and some EST clients (strongSwan's
    // `pki --est`) only decode unbroken base64.
    let mut b = base64::engine::general_purpose::STANDARD.encode(der);
    b.push('\n');
    b
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut r = (status, body).into_response();
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if content_type.starts_with("application/") {
        r.headers_mut().insert(
            "content-transfer-encoding",
            header::HeaderValue::from_static("base64"),
        );
    }
    r
}

fn error(status: StatusCode, why: impl Into<String>) -> Response {
    let mut why = why.into();
    why.push('\n');
    reply(status, "text/plain; charset=utf-8", why)
}

/// An EST refusal: its status and the reason sent and recorded in the event log.
struct Refusal {
    status: StatusCode,
    reason: String,
    /// Ask for credentials (401 with `WWW-Authenticate`).
    challenge: bool,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            challenge: false,
        }
    }

    fn response(&self) -> Response {
        let mut r = error(self.status, self.reason.clone());
        if self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"tollgate-est\""),
            );
        }
        r
    }
}

impl From<ControlError> for Refusal {
    fn from(e: ControlError) -> Refusal {
        Refusal::new(super::status_of(&e), e.to_string())
    }
}

/// Labels name enrollment profiles; Tollgate has one profile today, `default`, and accepts any
/// label made of the device-id alphabet so devices can be configured ahead of new profiles.
fn check_label(label: &str) -> Result<(), Refusal> {
    tollgate_pki::validate_device_id(label).map_err(|_| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            format!("unknown EST label {label:?}"),
        )
    })
}

fn decode_csr(body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.first() == Some(&0x30) {
        // Raw DER is not what RFC 7030 says, but it is unambiguous: accept it.
        return Ok(body.to_vec());
    }
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the body must be a base64 DER PKCS#10 request: {e}"),
            )
        })
}

fn credentials(headers: &HeaderMap) -> Option<(Option<String>, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(b) = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (id, token) = s.split_once(':')?;
        return Some((Some(id.to_owned()), token.to_owned()));
    }
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some((None, t.trim().to_owned()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, Refusal> {
    match super::blocking(f).await {
        Ok(r) => r.map_err(Refusal::from),
        Err(e) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

fn issued(e: tollgate_control::Enrolled) -> Response {
    reply(
        StatusCode::OK,
        PKCS7,
        b64_body(&tollgate_pki::certs_only(&[&e.cert_der])),
    )
}

async fn cacerts(State(s): State<EstState>) -> Response {
    let certs: Vec<&[u8]> = s.cp.cacerts_der().iter().map(Vec::as_slice).collect();
    reply(
        StatusCode::OK,
        PKCS7,
        b64_body(&tollgate_pki::certs_only(&certs)),
    )
}

async fn cacerts_l(s: State<EstState>, Path(label): Path<String>) -> Response {
    if let Err(r) = check_label(&label) {
        return r.response();
    }
    cacerts(s).await
}

async fn csrattrs() -> Response {
    // CsrAttrs ::= SEQUENCE OF AttrOrOID: ecdsa-with-SHA256 (P-256 keys are the default).
    let der = [
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
    ];
    reply(StatusCode::OK, "application/csrattrs", b64_body(&der))
}

async fn csrattrs_l(Path(label): Path<String>) -> Response {
    if let Err(r) = check_label(&label) {
        return r.response();
    }
    csrattrs().await
}

async fn simpleenroll(
    State(s): State<EstState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let creds = credentials(&headers);
    let device = creds.as_ref().and_then(|c| c.0.clone());
    let result = async {
        // A supplier's bootstrap certificate (IDevID) authorises enrollment on its own.
        if let (None, PeerKind::Supplier(supplier), Some(der)) =
            (&creds, &peer.kind, &peer.cert_der)
        {
            let csr = csr_body(&s, &headers, body).await?;
            let (cp, supplier, der) = (Arc::clone(&s.cp), supplier.clone(), der.clone());
            return blocking(move || cp.enroll_with_bootstrap(&supplier, &der, &csr)).await;
        }
        let Some((id, token)) = creds else {
            let mut r = Refusal::new(
                StatusCode::UNAUTHORIZED,
                "enrollment needs a one-time token: HTTP Basic ID:TOKEN or Bearer TOKEN",
            );
            r.challenge = true;
            return Err(r);
        };
        // The token is checked from the headers before the body is read.
        let (cp, i, t) = (Arc::clone(&s.cp), id.clone(), token.clone());
        blocking(move || cp.check_token(i.as_deref(), &t)).await?;
        let csr = csr_body(&s, &headers, body).await?;
        let cp = Arc::clone(&s.cp);
        blocking(move || cp.enroll_with_token(id.as_deref(), &token, &csr)).await
    }
    .await;
    match result {
        Ok(e) => issued(e),
        Err(r) => refused(&s, &peer, device, r),
    }
}

async fn simpleenroll_l(
    s: State<EstState>,
    p: Extension<Peer>,
    Path(label): Path<String>,
    h: HeaderMap,
    b: Body,
) -> Response {
    if let Err(r) = check_label(&label) {
        return refused(&s, &p, None, r);
    }
    simpleenroll(s, p, h, b).await
}

async fn simplereenroll(
    State(s): State<EstState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let operational = peer.kind == PeerKind::Operational;
    let (Role::Device(device), Some(serial), true) =
        (peer.role.clone(), peer.serial.clone(), operational)
    else {
        let r = Refusal::new(
            StatusCode::FORBIDDEN,
            "re-enrollment needs the device's current certificate as the TLS client certificate",
        );
        return refused(&s, &peer, None, r);
    };
    let result = async {
        let csr = csr_body(&s, &headers, body).await?;
        let cp = Arc::clone(&s.cp);
        let dev = device.clone();
        blocking(move || cp.reenroll(&dev, &serial, &csr)).await
    }
    .await;
    match result {
        Ok(e) => issued(e),
        Err(r) => refused(&s, &peer, Some(device), r),
    }
}

async fn simplereenroll_l(
    s: State<EstState>,
    p: Extension<Peer>,
    Path(label): Path<String>,
    h: HeaderMap,
    b: Body,
) -> Response {
    if let Err(r) = check_label(&label) {
        return refused(&s, &p, None, r);
    }
    simplereenroll(s, p, h, b).await
}

/// Record an EST refusal with its real reason (and its status), then answer with it. Repeated
/// refusals from one source are counted into a summary instead of recorded one by one.
fn refused(s: &EstState, peer: &Peer, device: Option<String>, r: Refusal) -> Response {
    let reason = format!("{} (HTTP {})", r.reason, r.status.as_u16());
    let key = match r.status.as_u16() {
        400 => "est_bad_request",
        401 => "est_no_credentials",
        403 => "est_forbidden",
        404 => "est_unknown_label",
        408 => "est_body_timeout",
        413 => "est_body_too_large",
        415 => "est_media_type",
        _ => "est_error",
    };
    if s.refusals.note_addr(peer.addr.ip(), key, || reason.clone()) {
        s.events.emit(EventKind::EnrollmentRefused {
            addr: Some(peer.addr),
            device,
            reason,
        });
    }
    r.response()
}

async fn root_crl(State(s): State<EstState>) -> Response {
    der_crl(s.cp.root_crl())
}

async fn crl(State(s): State<EstState>) -> Response {
    der_crl(s.cp.crl())
}

fn der_crl(der: Arc<Vec<u8>>) -> Response {
    if der.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "no CRL: the root CA's key is kept offline",
        );
    }
    let mut r = (StatusCode::OK, der.as_ref().clone()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/pkix-crl"),
    );
    r
}

pub(super) fn router(state: EstState) -> Router {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/csrattrs", get(csrattrs))
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route("/.well-known/est/{label}/cacerts", get(cacerts_l))
        .route("/.well-known/est/{label}/csrattrs", get(csrattrs_l))
        .route(
            "/.well-known/est/{label}/simpleenroll",
            post(simpleenroll_l),
        )
        .route(
            "/.well-known/est/{label}/simplereenroll",
            post(simplereenroll_l),
        )
        .route("/crl", get(crl))
        .route("/crl/root", get(root_crl))
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "this EST endpoint does not take that method",
            )
        })
        .with_state(state)
}
