//! The control listener: HTTPS for the admin API, EST enrollment and CRLs.
//!
//! This module owns the TLS accept loop, the classification of each peer by which CA actually
//! signed its client certificate (Tollgate's issuing CA, a registered supplier's manufacturing
//! CA, or none), the [`Peer`] every handler sees, the admin and EST routers, and the one place
//! control-plane errors become HTTP statuses ([`status_of`]). Client certificates are optional
//! at the TLS layer and required per route. It holds no business logic: handlers call
//! [`tollgate_control::Control`] on a blocking thread and translate the result.

mod admin;
mod est;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Extension;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tollgate_broker::Broker;
use tollgate_control::{Control, ControlError, PeerKind};
use tollgate_events::{EventBus, EventKind};
use tollgate_pki::Role;

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
        E::SubjectMismatch { .. }
        | E::TokenRefused(_)
        | E::BootstrapRefused(_)
        | E::UnknownSupplier(_)
        | E::SupplierMismatch { .. }
        | E::AlreadyEnrolled { .. }
        | E::DeviceRevoked(_)
        | E::NotActive(_) => StatusCode::FORBIDDEN,
        E::DeviceNotFound(_) => StatusCode::NOT_FOUND,
        E::DeviceExists(_)
        | E::ReactivationRequired(_)
        | E::GroupChangeRequired { .. }
        | E::SupplierExists(_)
        | E::NotQuarantined { .. } => StatusCode::CONFLICT,
        E::Registry(_) | E::Pki(_) | E::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        // A new error kind is a server-side problem until it is given a status here.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Run `f` (a control-plane call that may touch the disk) on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<Result<T, ControlError>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

/// Serve the control listener until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    cp: Arc<Control>,
    broker: Broker,
    events: EventBus,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = admin::router(admin::AdminState {
        cp: Arc::clone(&cp),
        broker,
        events: events.clone(),
    })
    .merge(est::router(est::EstState {
        cp: Arc::clone(&cp),
        events: events.clone(),
    }));
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("control listener accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let acceptor = TlsAcceptor::from(tls.load_full());
        let app = app.clone();
        let cp = Arc::clone(&cp);
        let events = events.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        events.emit(EventKind::AdminDenied {
                            addr: Some(addr),
                            detail: format!("TLS: {e}"),
                        });
                        return;
                    }
                    Err(_) => return,
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
                .map_or(PeerKind::Anonymous, |d| cp.classify(d));
            let (role, serial) = match info {
                Some(i) => (i.role, Some(i.serial)),
                None => (Role::Other, None),
            };
            let peer = Peer {
                role,
                addr,
                serial,
                kind,
                cert_der: der,
            };
            let svc = TowerToHyperService::new(app.layer(Extension(peer)));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}
