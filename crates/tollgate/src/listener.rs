//! The MQTT listener: TCP accept, limits on unfinished handshakes, TLS with client
//! certificates, identity from the verified certificate, then the broker takes over.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tollgate_broker::{Broker, PeerIdentity};
use tollgate_events::{EventBus, EventKind, RefusalReason};
use tollgate_pki::Role;

use crate::config::Config;

/// Counts unfinished handshakes per source address.
#[derive(Default)]
struct Pending {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

struct PendingGuard {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    fn enter(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<PendingGuard> {
        let mut m = self.by_ip.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PendingGuard {
            pending: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut m = self.pending.by_ip.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

pub struct MqttListener {
    pub listener: TcpListener,
    /// Current TLS configuration (swapped when a new CRL is signed).
    pub tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    pub broker: Broker,
    pub events: EventBus,
    pub handshake_timeout: Duration,
    pub max_handshakes_per_ip: usize,
    pub connections: Arc<Semaphore>,
}

impl MqttListener {
    pub fn new(
        listener: TcpListener,
        tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
        broker: Broker,
        events: EventBus,
        cfg: &Config,
    ) -> Self {
        MqttListener {
            listener,
            tls,
            broker,
            events,
            handshake_timeout: cfg.handshake_timeout,
            max_handshakes_per_ip: cfg.max_handshakes_per_ip,
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let pending = Arc::new(Pending::default());
        let this = Arc::new(self);
        loop {
            let (tcp, addr) = tokio::select! {
                r = this.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let Some(guard) = pending.enter(addr.ip(), this.max_handshakes_per_ip) else {
                this.refuse(
                    addr,
                    None,
                    RefusalReason::TooManyHandshakes,
                    "too many unfinished handshakes from this address".into(),
                );
                continue;
            };
            let Ok(permit) = Arc::clone(&this.connections).try_acquire_owned() else {
                tracing::warn!(%addr, "connection limit reached");
                continue;
            };
            let this = Arc::clone(&this);
            // The handshake and CONNECT futures are boxed inside `handle` and `serve`, so this
            // task's own state stays small for the long idle life of a device connection.
            tokio::spawn(async move {
                this.handle(tcp, addr, guard).await;
                drop(permit);
            });
        }
    }

    fn refuse(
        &self,
        addr: SocketAddr,
        device: Option<String>,
        reason: RefusalReason,
        detail: String,
    ) {
        tracing::info!(%addr, ?reason, %detail, "connection refused");
        self.events.emit(EventKind::ConnectionRefused {
            addr: Some(addr),
            device,
            reason,
            detail,
        });
    }

    async fn handle(&self, tcp: TcpStream, addr: SocketAddr, guard: PendingGuard) {
        let _ = tcp.set_nodelay(true);
        // A second descriptor for the same socket, so its TCP_INFO can be sampled while the
        // connection task owns the stream; closed with the connection.
        let transport = TcpProbe::of(&tcp);
        let started = tokio::time::Instant::now();
        let tls = match tokio::time::timeout(
            self.handshake_timeout,
            Box::pin(TlsAcceptor::from(self.tls.load_full()).accept(tcp)),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let (reason, detail) = crate::tls::classify_handshake_error(&e);
                self.refuse(addr, None, reason, detail);
                return;
            }
            Err(_) => {
                self.refuse(
                    addr,
                    None,
                    RefusalReason::Timeout,
                    "TLS handshake did not finish in time".into(),
                );
                return;
            }
        };
        drop(guard);
        let conn = tls.get_ref().1;
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let info = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| tollgate_pki::parse_certificate(c));
        let info = match info {
            Some(Ok(i)) => i,
            Some(Err(e)) => {
                self.refuse(addr, None, RefusalReason::BadCertificate, e.to_string());
                return;
            }
            None => {
                self.refuse(
                    addr,
                    None,
                    RefusalReason::NoCertificate,
                    "no client certificate".into(),
                );
                return;
            }
        };
        let device_id = match info.role {
            Role::Device(id) => id,
            Role::Admin(name) => {
                self.refuse(
                    addr,
                    Some(name),
                    RefusalReason::BadCertificate,
                    "admin certificates cannot connect to MQTT".into(),
                );
                return;
            }
            Role::Other => {
                self.refuse(
                    addr,
                    None,
                    RefusalReason::BadCertificate,
                    "certificate names no device".into(),
                );
                return;
            }
        };
        let peer = PeerIdentity {
            device_id,
            serial: info.serial,
            addr: Some(addr),
            tls_resumed: resumed,
            connect_deadline: Some(started + self.handshake_timeout),
            cert_not_after: Some(info.not_after),
            transport,
        };
        // Boxed: the connection's long-lived state is allocated once at its real size instead of
        // inflating this task to the largest state of every future it ever awaited.
        Box::pin(self.broker.serve(tls, peer)).await;
    }
}

/// Samples a connection's TCP socket (`TCP_INFO`) through a duplicate of its descriptor. The
/// duplicate keeps the socket's number from being reused while the probe lives, so a sample can
/// never read another connection's socket.
#[derive(Debug)]
struct TcpProbe(std::os::fd::OwnedFd);

impl TcpProbe {
    fn of(tcp: &TcpStream) -> Option<std::sync::Arc<dyn tollgate_broker::TransportProbe>> {
        use std::os::fd::AsFd;
        let fd = tcp.as_fd().try_clone_to_owned().ok()?;
        Some(std::sync::Arc::new(TcpProbe(fd)))
    }
}

impl tollgate_broker::TransportProbe for TcpProbe {
    fn sample(&self) -> Option<tollgate_broker::TransportSample> {
        use std::os::fd::AsFd;
        let i = tollgate_sys::tcp_info(self.0.as_fd()).ok()?;
        Some(tollgate_broker::TransportSample {
            rtt_us: i.rtt_us,
            rttvar_us: i.rttvar_us,
            retransmits: i.total_retrans,
            lost: i.lost,
            unacked: i.unacked,
            unsent_bytes: i.notsent_bytes,
        })
    }
}
