//! The MQTT listener: TCP accept, the connect rate and unfinished-handshake limits per source
//! (from [`crate::admission`]), TLS with client certificates, identity from the verified
//! certificate, then the broker takes over. Refusals are recorded through a [`RefusalLog`], so
//! a flood of them is summarised instead of written line by line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tollgate_broker::{Broker, PeerIdentity};
use tollgate_events::{EventBus, EventKind, RefusalReason};
use tollgate_pki::Role;

use crate::admission::handshakes::{Admitted, HandshakeLimits, Handshakes, Progress};
use crate::admission::refusals::RefusalLog;
use crate::admission::{ConnectRate, Prefixes, Slots, Source, Throttled};
use crate::config::Config;
use crate::mqtt_tls::TlsStream;

pub struct MqttListener {
    pub listener: TcpListener,
    /// Current TLS configuration (swapped when a new CRL is signed).
    pub tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    pub broker: Broker,
    pub events: EventBus,
    pub handshake_timeout: Duration,
    pub connections: Arc<Semaphore>,
    pub max_connections: usize,
    handshakes: Arc<Handshakes>,
    /// Newcomers waiting to show progress while their source is full.
    parked: Arc<Slots>,
    rate: ConnectRate,
    prefixes: Prefixes,
    refusals: Arc<RefusalLog>,
    /// Handshake latency and resumption, when metrics are served.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl MqttListener {
    /// Count handshakes (time and resumption) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn new(
        listener: TcpListener,
        tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
        broker: Broker,
        events: EventBus,
        cfg: &Config,
        max_connections: usize,
        refusals: Arc<RefusalLog>,
    ) -> Self {
        let adm = cfg.limits;
        MqttListener {
            metrics: None,
            listener,
            tls,
            refusals,
            broker,
            events,
            handshake_timeout: cfg.handshake_timeout,
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            handshakes: Handshakes::new(HandshakeLimits {
                per_source: cfg.max_handshakes_per_ip,
                total: adm.max_handshakes,
                min_age: Duration::from_millis(250),
            }),
            parked: Slots::new(
                (adm.max_handshakes / 4).max(1),
                cfg.max_handshakes_per_ip.max(1),
            ),
            rate: ConnectRate::new(
                adm.connect_rate,
                adm.connect_burst,
                crate::admission::MAX_TRACKED_SOURCES,
            ),
            prefixes: adm.prefixes,
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tokio::spawn(Arc::clone(&self.refusals).run(shutdown.clone()));
        let this = Arc::new(self);
        let accept_errors = Throttled::new(Duration::from_secs(1));
        loop {
            let (tcp, addr) = tokio::select! {
                x = crate::admission::accept(&this.listener, &accept_errors, "mqtt") => x,
                _ = shutdown.changed() => return,
            };
            let now = Instant::now();
            let src = Source::of(addr.ip(), this.prefixes);
            if !this.rate.admit(src, now) {
                this.refuse(
                    addr,
                    None,
                    RefusalReason::RateLimited,
                    format!(
                        "more than {} new connections a second from {src}",
                        this.rate.rate_per_sec()
                    ),
                );
                continue;
            }
            let Ok(permit) = Arc::clone(&this.connections).try_acquire_owned() else {
                this.refuse(
                    addr,
                    None,
                    RefusalReason::ConnectionLimit,
                    format!(
                        "the MQTT listener is at its limit of {} connections",
                        this.max_connections
                    ),
                );
                continue;
            };
            // The socket's TCP_INFO is sampled while the connection task owns the stream
            // (handshake progress now, transport health later), through a probe that stops
            // reading when the socket closes.
            let tcp = tollgate_sys::ProbedSocket::new(tcp);
            let probe = Arc::new(TcpProbe(Arc::clone(tcp.probe())));
            let progress = Some(Arc::clone(&probe) as Arc<dyn Progress>);
            let admitted = this.handshakes.try_admit(src, progress.clone(), now);
            let parked = match admitted {
                Some(_) => None,
                None => match this.parked.enter(src) {
                    Ok(slot) => Some(slot),
                    Err(_) => {
                        this.refuse(
                            addr,
                            None,
                            RefusalReason::TooManyHandshakes,
                            format!("too many unfinished handshakes from {src}"),
                        );
                        continue;
                    }
                },
            };
            let this = Arc::clone(&this);
            // The handshake and CONNECT futures are boxed inside `handle` and `serve`, so this
            // task's own state stays small for the long idle life of a device connection.
            tokio::spawn(async move {
                // Each phase is boxed and freed when it ends, so what the task keeps for the long
                // idle life of a device connection is the served connection alone.
                let admitted = match (admitted, parked) {
                    (Some(a), _) => a,
                    (None, parked) => {
                        let a = Box::pin(this.unpark(&tcp, addr, src, progress)).await;
                        drop(parked);
                        match a {
                            Some(a) => a,
                            None => return,
                        }
                    }
                };
                let transport = Some(probe as Arc<dyn tollgate_broker::TransportProbe>);
                // The handshake hands back the connection's future already boxed: a moved-from
                // stream held in this task would keep its space for the connection's life.
                let serve = Box::pin(this.handshake(tcp, addr, admitted, transport)).await;
                if let Some(serve) = serve {
                    serve.await;
                }
                drop(permit);
            });
        }
    }

    /// A newcomer that found its source or the listener full of unfinished handshakes: wait
    /// (without reading) for it to speak. A client that sends its ClientHello takes the place
    /// of the least progressed pending handshake; one that stays silent is closed, evicting
    /// nobody.
    async fn unpark(
        &self,
        tcp: &TcpStream,
        addr: SocketAddr,
        src: Source,
        progress: Option<Arc<dyn Progress>>,
    ) -> Option<Admitted> {
        let window = self.handshake_timeout.min(Duration::from_secs(2));
        // `peek` waits for a byte without taking it (`readable` alone may wake spuriously).
        let mut first = [0u8; 1];
        let spoke = matches!(
            tokio::time::timeout(window, tcp.peek(&mut first)).await,
            Ok(Ok(n)) if n > 0
        );
        let admitted = if spoke {
            self.handshakes
                .admit_evicting(src, progress, Instant::now())
        } else {
            None
        };
        if admitted.is_none() {
            self.refuse(
                addr,
                None,
                RefusalReason::TooManyHandshakes,
                if spoke {
                    format!("too many unfinished handshakes from {src}, all of them recent")
                } else {
                    format!("too many unfinished handshakes from {src}, and this one sent nothing in {} s", window.as_secs())
                },
            );
        }
        admitted
    }

    /// Record a refusal: individually while few from this source, then in its summary.
    fn refuse(
        &self,
        addr: SocketAddr,
        device: Option<String>,
        reason: RefusalReason,
        detail: String,
    ) {
        if !self
            .refusals
            .note_addr(addr.ip(), reason.as_str(), || detail.clone())
        {
            return;
        }
        tracing::info!(%addr, ?reason, %detail, "connection refused");
        self.events.emit(EventKind::ConnectionRefused {
            addr: Some(addr),
            device,
            reason,
            detail,
        });
    }

    /// The TLS handshake and the identity in the client's certificate: the connection's boxed
    /// future, or `None` after recording why it was refused.
    async fn handshake(
        &self,
        tcp: tollgate_sys::ProbedSocket<TcpStream>,
        addr: SocketAddr,
        admitted: Admitted,
        transport: Option<Arc<dyn tollgate_broker::TransportProbe>>,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let _ = tcp.set_nodelay(true);
        let started = tokio::time::Instant::now();
        // Under pressure (the source or the listener half full of unfinished handshakes) a
        // handshake gets a quarter of the usual time, at least two seconds.
        let deadline = if admitted.pressure {
            (self.handshake_timeout / 4).max(Duration::from_secs(2))
        } else {
            self.handshake_timeout
        };
        let accept = Box::pin(TlsStream::accept(tcp, self.tls.load_full()));
        let outcome = tokio::select! {
            r = tokio::time::timeout(deadline, accept) => Some(r),
            _ = admitted.evicted.notified() => None,
        };
        let tls = match outcome {
            Some(Ok(Ok(tls))) => tls,
            Some(Ok(Err(e))) => {
                let (reason, detail) = crate::tls::classify_handshake_error(&e);
                self.refuse(addr, None, reason, detail);
                return None;
            }
            Some(Err(_)) => {
                self.refuse(
                    addr,
                    None,
                    RefusalReason::Timeout,
                    format!(
                        "TLS handshake did not finish within {} s",
                        deadline.as_secs()
                    ),
                );
                return None;
            }
            None => {
                self.refuse(
                    addr,
                    None,
                    RefusalReason::TooManyHandshakes,
                    "evicted: its handshake had made the least progress of its source's when a newcomer needed the place".into(),
                );
                return None;
            }
        };
        drop(admitted);
        let conn = tls.connection();
        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        if let Some(m) = &self.metrics {
            m.handshake(started.elapsed(), resumed);
        }
        let info = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| tollgate_pki::parse_certificate(c));
        let info = match info {
            Some(Ok(i)) => i,
            Some(Err(e)) => {
                self.refuse(addr, None, RefusalReason::BadCertificate, e.to_string());
                return None;
            }
            None => {
                self.refuse(
                    addr,
                    None,
                    RefusalReason::NoCertificate,
                    "no client certificate".into(),
                );
                return None;
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
                return None;
            }
            Role::Other => {
                self.refuse(
                    addr,
                    None,
                    RefusalReason::BadCertificate,
                    "certificate names no device".into(),
                );
                return None;
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
        Some(Box::pin(self.broker.serve(tls, peer)))
    }
}

/// Samples a connection's TCP socket (`TCP_INFO`) through its [`tollgate_sys::TcpInfoProbe`],
/// which reads nothing once the socket is closed.
#[derive(Debug)]
struct TcpProbe(Arc<tollgate_sys::TcpInfoProbe>);

impl Progress for TcpProbe {
    fn progress(&self) -> Option<(u64, u32)> {
        let i = self.0.read()?.ok()?;
        Some((i.bytes_received, i.last_data_recv_ms))
    }
}

impl tollgate_broker::TransportProbe for TcpProbe {
    fn sample(&self) -> Option<tollgate_broker::TransportSample> {
        let i = self.0.read()?.ok()?;
        Some(tollgate_broker::TransportSample {
            rtt_us: i.rtt_us,
            rttvar_us: i.rttvar_us,
            min_rtt_us: i.min_rtt_us,
            retransmits: i.total_retrans,
            segs_out: i.segs_out,
            lost: i.lost,
            unacked: i.unacked,
            unsent_bytes: i.notsent_bytes,
            bytes_sent: i.bytes_sent,
            bytes_retrans: i.bytes_retrans,
            delivery_rate: i.delivery_rate,
            last_recv_ms: i.last_data_recv_ms,
        })
    }
}
