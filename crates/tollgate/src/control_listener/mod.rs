//! The control listener: HTTPS for the admin API, EST enrollment and CRLs.
//!
//! This module owns the TLS accept loop and what bounds it (the connect rate and connection
//! slots per source and overall, from [`crate::admission`]; deadlines for the handshake, the
//! headers and the body; a small header buffer), the answers to callers over a limit (503 or
//! 429 with a problem document naming the reason, from a few extra slots kept for saying no), the classification of each peer by which CA actually
//! signed its client certificate (Tollgate's issuing CA, a registered supplier's manufacturing
//! CA, or none), the [`Peer`] every handler sees, the admin, EST and dashboard routers, and the one place
//! control-plane errors become HTTP statuses ([`status_of`]). Client certificates are optional
//! at the TLS layer and required per route. It holds no business logic: handlers call
//! [`tollgate_control::Control`] on a blocking thread and translate the result.

mod admin;
mod audit_api;
mod auth;
mod body;
mod compliance_api;
mod dashboard_api;
mod detection_api;
mod est;
mod explain_api;
mod findings_api;
mod lifecycle_api;
mod openapi;
mod operators_api;
mod policy_api;
mod policy_versions_api;
mod problem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tollgate_broker::Broker;
use tollgate_control::{Control, ControlError, PeerKind};
use tollgate_events::{EventBus, EventKind};
use tollgate_pki::Role;

use crate::admission::refusals::{RefusalLog, Refusals};
use crate::admission::{ConnectRate, Full, Slots, Source, Throttled};
use crate::config::{ControlLimits, Limits};

/// Who is calling, as the TLS layer proved it (`Role::Other` without a client certificate).
#[derive(Clone, Debug)]
pub struct Peer {
    pub role: Role,
    pub addr: SocketAddr,
    /// Serial of the verified client certificate.
    pub serial: Option<String>,
    /// Which CA issued it: ours (operational) or a supplier's (bootstrap only).
    pub kind: PeerKind,
    /// The client certificate (DER), for bootstrap enrollment.
    pub cert_der: Option<Vec<u8>>,
}

/// The HTTP status of a control-plane error: the one place this mapping is made.
pub fn status_of(e: &ControlError) -> StatusCode {
    use ControlError as E;
    match e {
        E::InvalidName { .. }
        | E::InvalidRequest(_)
        | E::InvalidSupplierCa(_)
        | E::CsrRefused(_)
        | E::PolicyRejected(_) => StatusCode::BAD_REQUEST,
        E::ProfileRejected(_) | E::InvalidDocument(_) => StatusCode::UNPROCESSABLE_ENTITY,
        E::SubjectMismatch { .. }
        | E::TokenRefused(_)
        | E::BootstrapRefused(_)
        | E::UnknownSupplier(_)
        | E::SupplierMismatch { .. }
        | E::AlreadyEnrolled { .. }
        | E::DeviceRevoked(_)
        | E::NotActive(_) => StatusCode::FORBIDDEN,
        E::DeviceNotFound(_) | E::UnknownModel(_) | E::NotFound(_) | E::OperatorNotFound(_) => {
            StatusCode::NOT_FOUND
        }
        E::OperatorExists(_) | E::OperatorRevoked(_) | E::LastAdmin(_) => StatusCode::CONFLICT,
        E::DeviceExists(_)
        | E::ReactivationRequired(_)
        | E::GroupChangeRequired { .. }
        | E::SupplierExists(_)
        | E::NotQuarantined { .. } => StatusCode::CONFLICT,
        E::StaleVersion { .. } => StatusCode::PRECONDITION_FAILED,
        E::Registry(_) | E::Pki(_) | E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        // Not done, and safe to retry once the audit log is writable again.
        E::AuditUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        // A new error kind is a server-side problem until it is given a status here.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status of a detection error (the other half of the one mapping).
pub fn status_of_detect(e: &tollgate_detect::DetectError) -> StatusCode {
    use tollgate_detect::DetectError as E;
    match e {
        E::UnknownAlert(_) | E::UnknownSuppression(_) => StatusCode::NOT_FOUND,
        E::InvalidSuppression(_) | E::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
        E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status of an audit-log error (the third part of the one mapping).
pub fn status_of_audit(e: &tollgate_audit::AuditError) -> StatusCode {
    use tollgate_audit::AuditError as E;
    match e {
        E::OutOfRange { .. } | E::Malformed { .. } => StatusCode::BAD_REQUEST,
        // The log contradicts its own checkpoints: it refuses to sign until an operator acts.
        E::Inconsistent(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The one error format of the control listener's JSON routes: an RFC 9457 problem document
/// ([`problem::Problem`]).
pub fn json_error(status: StatusCode, reason: impl Into<String>) -> Response {
    problem::Problem::new(status, reason).into_response()
}

/// Run `f` (a control-plane call that may touch the disk) on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<Result<T, ControlError>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

/// What the control listener may hold.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Deadlines and body limits.
    pub limits: ControlLimits,
    /// Connections served at once (the configured limit, fitted to the file limit).
    pub max_connections: usize,
    /// Connections beyond that answered with 503/429 at once.
    pub refusing: usize,
    /// Source prefixes, connect rate, refusal aggregation.
    pub admission: Limits,
}

/// What every connection task shares.
struct Shared {
    tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    cp: Arc<Control>,
    events: EventBus,
    refusals: Arc<RefusalLog>,
    settings: Settings,
    /// Connections without a client certificate (token enrollment) may hold at most three
    /// quarters of the slots: a flood of anonymous ones leaves room for administrators, devices
    /// and suppliers, who prove who they are in the handshake.
    anonymous: Arc<Semaphore>,
}

impl Shared {
    /// Record one refusal: individually while few, then counted in the summary.
    fn refused(&self, src: Source, addr: SocketAddr, reason: &'static str, detail: String) {
        if self.refusals.note(src, reason, || detail.clone()) {
            tracing::info!(%addr, reason, %detail, "control connection refused");
            self.events.emit(EventKind::AdminDenied {
                addr: Some(addr),
                detail: format!("{reason}: {detail}"),
            });
        }
    }
}

/// Everything the control listener serves with.
pub struct ControlListener {
    /// The bound socket.
    pub listener: TcpListener,
    /// The TLS configuration in force (swapped when trust material changes).
    pub tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    /// The control plane.
    pub cp: Arc<Control>,
    /// The data plane, for health and connections.
    pub broker: Broker,
    /// Where events go.
    pub events: EventBus,
    /// Limits.
    pub settings: Settings,
    /// Both listeners' refusal records.
    pub refusals: Refusals,
    /// Statistics and alerts.
    pub detection: Arc<crate::detection::Detection>,
    /// The audit log, when enabled.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// The configuration audit.
    pub config_audit: Option<Arc<crate::config_audit::ConfigAudit>>,
    /// The web dashboard's sessions and live updates.
    pub dashboard: Arc<crate::dashboard::Dashboard>,
}

/// Serve the control listener until `shutdown` flips.
pub async fn serve(this: ControlListener, mut shutdown: watch::Receiver<bool>) {
    let ControlListener {
        listener,
        tls,
        cp,
        broker,
        events,
        settings,
        refusals: all_refusals,
        detection,
        audit,
        config_audit,
        dashboard,
    } = this;
    let adm = settings.admission;
    let refusals = Arc::clone(&all_refusals.control);
    tokio::spawn(Arc::clone(&refusals).run(shutdown.clone()));
    let shared = Arc::new(Shared {
        tls,
        cp: Arc::clone(&cp),
        events: events.clone(),
        refusals: Arc::clone(&refusals),
        settings,
        anonymous: Arc::new(Semaphore::new(anonymous_share(settings.max_connections))),
    });
    let dash = crate::dashboard::router(crate::dashboard::DashState {
        dash: Arc::clone(&dashboard),
        src: crate::dashboard::Sources {
            cp: Arc::clone(&cp),
            broker: broker.clone(),
            detection: Arc::clone(&detection),
            audit: audit.clone(),
            config_audit: config_audit.clone(),
            refusals: Arc::clone(&refusals),
        },
    });
    let app = admin::router(admin::AdminState {
        cp: Arc::clone(&cp),
        broker,
        events: events.clone(),
        refusals: all_refusals,
        limits: settings.limits,
        detection,
        audit,
        config_audit,
        dashboard,
    })
    .merge(dash)
    .merge(est::router(est::EstState {
        cp: Arc::clone(&cp),
        events: events.clone(),
        refusals: Arc::clone(&refusals),
        limits: settings.limits,
    }));
    let rate = ConnectRate::new(
        adm.connect_rate,
        adm.connect_burst,
        crate::admission::MAX_TRACKED_SOURCES,
    );
    let slots = Slots::new(
        settings.max_connections,
        settings.limits.max_connections_per_source,
    );
    let refusing = Arc::new(Semaphore::new(settings.refusing));
    let accept_errors = Throttled::new(Duration::from_secs(1));
    loop {
        let (tcp, addr) = tokio::select! {
            x = crate::admission::accept(&listener, &accept_errors, "control") => x,
            _ = shutdown.changed() => return,
        };
        let src = Source::of(addr.ip(), adm.prefixes);
        if !rate.admit(src, Instant::now()) {
            shared.refused(
                src,
                addr,
                "rate_limited",
                format!(
                    "more than {} new connections a second from {src}",
                    adm.connect_rate
                ),
            );
            continue;
        }
        let slot = match slots.enter(src) {
            Ok(slot) => slot,
            Err(full) => {
                let (status, reason, text) = match full {
                    Full::Overall => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "connection_limit",
                        format!(
                            "the control listener is at its limit of {} connections",
                            settings.max_connections
                        ),
                    ),
                    Full::Source => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "source_connection_limit",
                        format!(
                            "{src} holds {} connections to the control listener, its limit",
                            settings.limits.max_connections_per_source
                        ),
                    ),
                };
                shared.refused(src, addr, reason, text.clone());
                if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        shared.answer_busy(tcp, status, reason, text).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        let app = app.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            shared.connection(tcp, addr, src, app).await;
            drop(slot);
        });
    }
}

impl Shared {
    /// Answer a caller over a limit with `status` and a reason, within two seconds, and close.
    async fn answer_busy(
        &self,
        tcp: TcpStream,
        status: StatusCode,
        code: &'static str,
        reason: String,
    ) {
        let acceptor = TlsAcceptor::from(self.tls.load_full());
        let _ = tokio::time::timeout(Duration::from_secs(2), async move {
            let mut tls = acceptor.accept(tcp).await.ok()?;
            write_refusal(&mut tls, status, code, &reason).await
        })
        .await;
    }

    /// One admitted connection: TLS within the header deadline, then HTTP/1.1 with deadlines.
    async fn connection(&self, tcp: TcpStream, addr: SocketAddr, src: Source, app: axum::Router) {
        let limits = self.settings.limits;
        let acceptor = TlsAcceptor::from(self.tls.load_full());
        let mut tls = match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.refused(src, addr, "tls_error", format!("TLS: {e}"));
                return;
            }
            Err(_) => {
                self.refused(
                    src,
                    addr,
                    "tls_timeout",
                    "TLS handshake did not finish in time".into(),
                );
                return;
            }
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
            .map_or(PeerKind::Anonymous, |d| self.cp.classify(d));
        let (role, serial) = match info {
            Some(i) => (i.role, Some(i.serial)),
            None => (Role::Other, None),
        };
        let _anonymous = if der.is_none() {
            match Arc::clone(&self.anonymous).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let why = format!(
                        "the control listener holds its limit of {} connections without a client certificate",
                        anonymous_share(self.settings.max_connections)
                    );
                    self.refused(src, addr, "anonymous_limit", why.clone());
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        write_refusal(
                            &mut tls,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "anonymous_limit",
                            &why,
                        ),
                    )
                    .await;
                    return;
                }
            }
        } else {
            None
        };
        let peer = Peer {
            role,
            addr,
            serial,
            kind,
            cert_der: der,
        };
        let svc = TowerToHyperService::new(app.layer(Extension(peer)));
        // The header deadline also bounds the wait for the next request on a kept-alive
        // connection; the header buffer is small (no route needs large headers).
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(tls), svc)
            .await
        {
            tracing::debug!(%addr, "control connection: {e}");
        }
    }
}

/// How many control-listener connections may be without a client certificate.
fn anonymous_share(max_connections: usize) -> usize {
    (max_connections * 3 / 4).max(1)
}

/// Write a refusal (a problem document with its `code`) as a complete HTTP/1.1 response, then
/// close the stream.
async fn write_refusal<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    status: StatusCode,
    code: &str,
    reason: &str,
) -> Option<()> {
    let body = problem::Problem::refusal(status, code, reason).to_bytes();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        problem::MEDIA_TYPE,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(&body).await.ok()?;
    stream.shutdown().await.ok()
}
