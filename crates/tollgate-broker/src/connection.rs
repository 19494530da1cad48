//! One client connection: CONNECT, then the packet loop.
//!
//! The protocol decisions are synchronous methods on [`Conn`] that take a packet and append
//! responses to the write buffer; the async [`run`] loop only moves bytes, waits for the
//! mailbox, the control channel and the keep-alive deadline, and writes each batch of
//! responses with one `write_all` (many packets, one TLS record batch).
//!
//! Durability: for a persistent session every state change is handed to the store
//! ([`crate::persist`]) as it happens, and a packet that promises durability (PUBACK, PUBREC,
//! PUBCOMP, SUBACK, UNSUBACK, and a QoS 2 PUBLISH whose packet id a redelivery must reuse) is
//! held, in order, until the store's watermark passes the ticket of the changes it depends on.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout_at, Instant};
use tollgate_events::{EventKind, RefusalReason};
use tollgate_mqtt::{
    decode, topic, ByteString, BytesMut, ConnAck, ConnAckProperties, Connect, DecodeError,
    Disconnect, Packet, Protocol, PubResp, Publish, PublishProperties, QoS, ReasonCode, SubAck,
    Subscribe, UnsubAck, Unsubscribe, Will,
};

use crate::gate::{Gate, Recheck};
use crate::persist::{pack_opts, unix_ms, Op, StoredWill};
use crate::router::{SubOpts, Subscriber};
use crate::session::{
    props_size, session_key, Control, ControlInbox, Delivery, Message, Outbound, Session,
    SessionState,
};
use crate::{ClientIdRule, PeerIdentity, Shared};

const READ_CHUNK: usize = 16 * 1024;
const IDLE_CHUNK: usize = 256;
/// Most bytes encoded into the write buffer per mailbox pass.
const MAX_BATCH_BYTES: usize = 256 * 1024;
const MAX_BATCH: usize = 2048;

/// A packet waiting for the store.
struct Held {
    /// Leaves once the watermark reaches this ticket (0: with the packets before it).
    ticket: u64,
    packet: Packet,
    /// A QoS 1 PUBACK may also leave once every persistent subscriber acknowledged this.
    delivered: Option<Arc<Message>>,
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `will` when v5 asked for the will (0x04).
    Client { will: bool },
    /// The network closed or failed.
    Io(String),
    /// The client broke the protocol; DISCONNECT `code` already queued for v5.
    Protocol {
        code: ReasonCode,
        detail: String,
        malformed: bool,
    },
    /// No packet within 1.5 × keep-alive.
    KeepAlive,
    /// The control plane closed it (revocation, policy, shutdown): no will.
    Closed { code: ReasonCode, reason: String },
    /// A newer connection took the session over.
    TakenOver(tokio::sync::oneshot::Sender<()>),
}

pub(crate) async fn run<S>(shared: Arc<Shared>, stream: S, peer: PeerIdentity)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Idle connections are the common case in a fleet: start small, grow under load.
    let mut rbuf = BytesMut::with_capacity(IDLE_CHUNK);
    let deadline = peer
        .connect_deadline
        .unwrap_or_else(|| Instant::now() + shared.config.connect_timeout);
    let max_packet = shared.config.max_packet_size as usize;

    // 1. CONNECT, within the deadline.
    let connect = match timeout_at(
        deadline,
        Box::pin(read_connect(&mut rd, &mut rbuf, max_packet)),
    )
    .await
    {
        Err(_) => {
            refuse(
                &shared,
                &peer,
                RefusalReason::Timeout,
                "no CONNECT before the deadline".into(),
            );
            return;
        }
        Ok(Err(ReadError::Io(e))) => {
            refuse(
                &shared,
                &peer,
                RefusalReason::MalformedPacket,
                format!("closed before CONNECT: {e}"),
            );
            return;
        }
        Ok(Err(ReadError::Decode(e))) => {
            let reason = match e {
                DecodeError::UnsupportedProtocol(_) => RefusalReason::UnsupportedProtocol,
                _ => RefusalReason::MalformedPacket,
            };
            // The protocol level is unknown: answer like a 3.1.1 server would.
            if matches!(e, DecodeError::UnsupportedProtocol(_)) {
                let mut out = BytesMut::new();
                let ack = ConnAck {
                    code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                    ..Default::default()
                };
                if Packet::ConnAck(ack)
                    .encode(Protocol::V311, &mut out)
                    .is_ok()
                {
                    let _ = wr.write_all(&out).await;
                    let _ = wr.flush().await;
                }
            }
            shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            refuse(&shared, &peer, reason, e.to_string());
            return;
        }
        Ok(Ok(c)) => c,
    };
    if shared.shutting_down.load(Ordering::Acquire) {
        let _ = write_connack(
            &mut wr,
            connect.protocol,
            ReasonCode::SERVER_UNAVAILABLE,
            "server shutting down",
        )
        .await;
        refuse(
            &shared,
            &peer,
            RefusalReason::ShuttingDown,
            "server shutting down".into(),
        );
        return;
    }

    // 2. Identity, client id and session.
    let inbox = Arc::new(ControlInbox::default());
    let mut conn = match Box::pin(Conn::accept(&shared, &peer, connect, Arc::clone(&inbox))).await {
        Ok(c) => c,
        Err((protocol, code, reason, why)) => {
            let _ = write_connack(&mut wr, protocol, code, &why).await;
            refuse(&shared, &peer, reason, why);
            return;
        }
    };
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.stats.connects_total.fetch_add(1, Ordering::Relaxed);

    // 3. The packet loop.
    let end = conn.run_loop(&mut rd, &mut wr, &mut rbuf, &inbox).await;
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
    let _ = wr.shutdown().await;
    conn.finish(end);
}

fn refuse(shared: &Shared, peer: &PeerIdentity, reason: RefusalReason, detail: String) {
    tracing::debug!(device = %peer.device_id, ?reason, %detail, "connection refused");
    shared.emit(EventKind::ConnectionRefused {
        addr: peer.addr,
        device: Some(peer.device_id.clone()),
        reason,
        detail,
    });
}

async fn write_connack<W: AsyncWrite + Unpin>(
    wr: &mut W,
    protocol: Protocol,
    code: ReasonCode,
    why: &str,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let mut ack = ConnAck {
        code,
        ..Default::default()
    };
    if protocol == Protocol::V5 {
        ack.properties.reason_string = Some(why.to_owned());
    }
    if Packet::ConnAck(ack).encode(protocol, &mut out).is_ok() {
        wr.write_all(&out).await?;
        wr.flush().await?;
    }
    Ok(())
}

enum ReadError {
    Io(String),
    Decode(DecodeError),
}

async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    max_packet: usize,
) -> Result<Connect, ReadError> {
    loop {
        match decode(rbuf, None, max_packet) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(_)) => return Err(ReadError::Decode(DecodeError::FirstPacketNotConnect)),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Decode(e)),
        }
        rbuf.reserve(IDLE_CHUNK);
        match rd.read_buf(rbuf).await {
            Ok(0) => return Err(ReadError::Io("end of stream".into())),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e.to_string())),
        }
    }
}

struct Conn {
    shared: Arc<Shared>,
    peer: PeerIdentity,
    protocol: Protocol,
    session: Arc<Session>,
    state: SessionState,
    /// Every authorization decision of this connection.
    gate: Gate,
    keep_alive: Option<Duration>,
    inflight_limit: usize,
    client_max_packet: usize,
    aliases: Vec<Option<ByteString>>,
    will: Option<Will>,
    problem_info: bool,
    wbuf: BytesMut,
    scratch: Vec<(u64, usize)>,
    batch: Vec<Delivery>,
    /// When the client certificate expires.
    cert_deadline: Option<Instant>,
    /// A message of ours found a subscriber's queue full: give the subscribers CPU before
    /// reading more from this publisher.
    congested: bool,
    /// Packets waiting for the store's watermark to reach their ticket (0: behind the others).
    held: VecDeque<Held>,
    /// The store's watermark (no store: `None`).
    wm: Option<tokio::sync::watch::Receiver<u64>>,
    /// The mailbox's next delivery waits for the store.
    wm_blocked: bool,
    /// Acknowledged deliveries to remove from the store: nothing waits for these, so they go
    /// to the store once per pass of the loop rather than once per acknowledgement.
    dequeued: Vec<Op>,
}

type Refusal = (Protocol, ReasonCode, RefusalReason, String);

impl Conn {
    async fn accept(
        shared: &Arc<Shared>,
        peer: &PeerIdentity,
        c: Connect,
        ctrl: Arc<ControlInbox>,
    ) -> Result<Conn, Refusal> {
        let protocol = c.protocol;
        let cfg = &shared.config;
        let refuse = |code, reason, why: &str| Err((protocol, code, reason, why.to_owned()));

        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let gate = match Gate::admit(shared, peer, now_unix) {
            Ok(g) => g,
            Err((code, reason, why)) => return refuse(code, reason, why),
        };
        let cert_deadline = peer.cert_not_after.map(|na| {
            Instant::now()
                + Duration::from_secs(u64::try_from(na.saturating_sub(now_unix)).unwrap_or(0))
        });
        if c.properties.authentication_method.is_some() {
            return refuse(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                RefusalReason::BadAuthMethod,
                "identity is the client certificate; no enhanced authentication method is offered",
            );
        }

        // Client id rule: the certificate decides who this is; the client id must agree.
        let mut assigned = None;
        let client_id: String = if c.client_id.is_empty() {
            assigned = Some(peer.device_id.clone());
            peer.device_id.clone()
        } else {
            let cid: &str = &c.client_id;
            let ok = match cfg.client_id_rule {
                ClientIdRule::Exact => cid == peer.device_id,
                ClientIdRule::Prefix => {
                    cid == peer.device_id
                        || cid
                            .strip_prefix(peer.device_id.as_str())
                            .is_some_and(|r| r.starts_with('-') || r.starts_with(':'))
                }
                ClientIdRule::Any => true,
            };
            if !ok {
                return refuse(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    RefusalReason::ClientIdMismatch,
                    &format!(
                        "client id {cid:?} does not match certificate device id {:?}",
                        peer.device_id
                    ),
                );
            }
            cid.to_owned()
        };

        if let Some(w) = &c.will {
            if topic_levels(&w.topic) > cfg.max_topic_levels
                || !gate.publish(shared, &w.topic, w.qos, "will")
            {
                return refuse(
                    ReasonCode::NOT_AUTHORIZED,
                    RefusalReason::NotAuthorized,
                    "will topic not authorized",
                );
            }
        }

        let expiry = match protocol {
            Protocol::V5 => c.properties.session_expiry_interval.unwrap_or(0),
            Protocol::V311 if c.clean_start => 0,
            Protocol::V311 => cfg.max_session_expiry,
        };
        let capped_expiry = expiry.min(cfg.max_session_expiry);
        let mut server_keep_alive = None;
        let mut ka = c.keep_alive;
        if cfg.max_keep_alive > 0
            && (ka == 0 || ka > cfg.max_keep_alive)
            && protocol == Protocol::V5
        {
            ka = cfg.max_keep_alive;
            server_keep_alive = Some(ka);
        }

        let (session, mut state, present) =
            attach(shared, &peer.device_id, &client_id, c.clean_start, ctrl).await;
        state.expiry_interval = capped_expiry;
        if shared.store.is_some() {
            persist_attach(shared, &session, &state, c.will.as_ref(), &peer.serial);
        }

        let client_recv_max = c.properties.receive_maximum.unwrap_or(u16::MAX);
        let mut conn = Conn {
            shared: Arc::clone(shared),
            peer: peer.clone(),
            protocol,
            session,
            state,
            gate,
            keep_alive: (ka > 0).then(|| Duration::from_millis(u64::from(ka) * 1500)),
            inflight_limit: usize::from(client_recv_max.min(cfg.max_inflight)).max(1),
            client_max_packet: c
                .properties
                .maximum_packet_size
                .map_or(usize::MAX, |v| v as usize),
            aliases: Vec::new(),
            will: c.will,
            problem_info: c.properties.request_problem_information.unwrap_or(true),
            wbuf: BytesMut::new(),
            scratch: Vec::new(),
            batch: Vec::new(),
            cert_deadline,
            congested: false,
            held: VecDeque::new(),
            wm: shared.watermark(),
            wm_blocked: false,
            dequeued: Vec::new(),
        };

        let mut props = ConnAckProperties::default();
        if protocol == Protocol::V5 {
            props.receive_maximum = Some(cfg.receive_maximum);
            props.maximum_packet_size = Some(cfg.max_packet_size);
            props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            props.retain_available = Some(true);
            props.wildcard_subscription_available = Some(true);
            props.subscription_identifiers_available = Some(true);
            props.shared_subscription_available = Some(true);
            props.assigned_client_identifier = assigned;
            props.server_keep_alive = server_keep_alive;
            if capped_expiry != expiry {
                props.session_expiry_interval = Some(capped_expiry);
            }
        }
        *conn.session.meter.lock() = Some(Arc::clone(conn.gate.meter()));
        conn.push(Packet::ConnAck(ConnAck {
            session_present: present,
            code: ReasonCode::SUCCESS,
            properties: props,
        }));
        // A resumed session may hold subscriptions the policy no longer allows.
        conn.recheck_subscriptions();
        if present {
            conn.resend_inflight();
        }
        shared.emit(EventKind::ConnectionAccepted {
            device: peer.device_id.clone(),
            client_id: client_id.clone(),
            protocol: if protocol == Protocol::V5 {
                "5.0"
            } else {
                "3.1.1"
            },
            addr: peer.addr,
            serial: peer.serial.clone(),
            session_present: present,
            tls_resumed: peer.tls_resumed,
        });
        tracing::info!(device = %peer.device_id, client_id = %client_id, ?protocol, "connected");
        Ok(conn)
    }

    async fn run_loop<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        rbuf: &mut BytesMut,
        ctrl: &ControlInbox,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let max_packet = self.shared.config.max_packet_size as usize;
        let mut last_rx = Instant::now();
        let session = Arc::clone(&self.session);
        // A revocation or policy change published while this connection was attaching never
        // reached it as a Recheck: compare snapshots once now.
        if self.gate.stale(&self.shared) {
            if let Some(end) = self.recheck() {
                let _ = self.flush(wr).await;
                return end;
            }
        }
        // Packets that arrived with CONNECT.
        if let Some(end) = self.process_input(rbuf, max_packet) {
            let _ = self.flush(wr).await;
            return end;
        }
        let cert_deadline = self.cert_deadline;
        let mut wm = self.wm.clone();
        loop {
            if self.pump_mailbox() {
                // More is queued than one batch: come back for it without waiting.
                session.notify.notify_one();
            }
            if !self.dequeued.is_empty() {
                let ops = std::mem::take(&mut self.dequeued);
                self.persist(ops);
            }
            self.release_held();
            let wait_store = !self.held.is_empty() || self.wm_blocked;
            if let Err(e) = self.flush(wr).await {
                return End::Io(e.to_string());
            }
            let window_open = self.window_open();
            let ka_deadline = self.keep_alive.map(|ka| last_rx + ka);
            if rbuf.capacity() == rbuf.len() {
                rbuf.reserve(IDLE_CHUNK);
            }
            let spare = rbuf.capacity() - rbuf.len();
            tokio::select! {
                biased;
                c = ctrl.recv() => match c {
                    Control::Recheck => {
                        if let Some(end) = self.recheck() {
                            let _ = self.flush(wr).await;
                            return end;
                        }
                    }
                    Control::Close { code, reason } => {
                        self.push_disconnect(code, Some(reason.clone()));
                        let _ = self.flush(wr).await;
                        return End::Closed { code, reason };
                    }
                    Control::TakeOver(ack) => {
                        self.push_disconnect(ReasonCode::SESSION_TAKEN_OVER, Some("session taken over".into()));
                        let _ = self.flush(wr).await;
                        return End::TakenOver(ack);
                    }
                },
                r = rd.read_buf(rbuf) => match r {
                    Ok(0) => return End::Io("connection closed by peer".into()),
                    Ok(n) => {
                        last_rx = Instant::now();
                        if let Some(end) = self.process_input(rbuf, max_packet) {
                            let _ = self.flush(wr).await;
                            return end;
                        }
                        // A read that filled the buffer means a busy client: read in big
                        // chunks. A quiet one keeps (or goes back to) a small buffer.
                        let busy = n >= spare;
                        if !busy && rbuf.is_empty() && rbuf.capacity() > 4 * READ_CHUNK {
                            *rbuf = BytesMut::new();
                        }
                                                let want = if busy { READ_CHUNK } else { IDLE_CHUNK };
                        if rbuf.capacity() - rbuf.len() < want / 2 {
                            rbuf.reserve(want);
                        }
                        if std::mem::take(&mut self.congested) {
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => return End::Io(e.to_string()),
                },
                _ = session.notify.notified(), if window_open => {}
                _ = async { if let Some(w) = wm.as_mut() { let _ = w.changed().await; } }, if wait_store && wm.is_some() => {}
                _ = async { if let Some(d) = ka_deadline { sleep_until(d).await } }, if ka_deadline.is_some() => {
                                        self.push_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, Some("keep-alive timeout".into()));
                    let _ = self.flush(wr).await;
                    return End::KeepAlive;
                }
                _ = async { if let Some(d) = cert_deadline { sleep_until(d).await } }, if cert_deadline.is_some() => {
                    let reason = "client certificate expired".to_owned();
                    self.push_disconnect(ReasonCode::NOT_AUTHORIZED, Some(reason.clone()));
                    let _ = self.flush(wr).await;
                    return End::Closed { code: ReasonCode::NOT_AUTHORIZED, reason };
                }
            }
        }
    }

    async fn flush<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let write = async {
            wr.write_all(&self.wbuf).await?;
            wr.flush().await
        };
        match tokio::time::timeout(self.shared.config.write_timeout, write).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client stopped reading",
                ))
            }
        }
        self.wbuf.clear();
        if self.wbuf.capacity() > 256 * 1024 {
            self.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// Queue a packet for the client (behind any packet still waiting for the store).
    fn push(&mut self, p: Packet) {
        if self.held.is_empty() {
            self.encode(&p);
        } else {
            self.held.push_back(Held {
                ticket: 0,
                packet: p,
                delivered: None,
            });
        }
    }

    /// Queue a packet that may leave only once the store's watermark reaches `ticket`.
    fn push_after(&mut self, ticket: u64, p: Packet) {
        self.push_after_or_delivered(ticket, p, None);
    }

    /// Like [`Conn::push_after`], or once every durable delivery of `msg` is acknowledged.
    fn push_after_or_delivered(&mut self, ticket: u64, p: Packet, msg: Option<Arc<Message>>) {
        if ticket == 0 || (self.held.is_empty() && ticket <= self.watermark()) {
            self.push(p);
        } else {
            self.held.push_back(Held {
                ticket,
                packet: p,
                delivered: msg,
            });
        }
    }

    fn watermark(&self) -> u64 {
        self.wm.as_ref().map_or(u64::MAX, |w| *w.borrow())
    }

    /// Move packets whose changes are on disk into the write buffer, in order.
    fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let wm = self
            .wm
            .as_mut()
            .map_or(u64::MAX, |w| *w.borrow_and_update());
        while self.held.front().is_some_and(|h| {
            h.ticket <= wm
                || h.delivered
                    .as_ref()
                    .is_some_and(|m| m.unacked.load(Ordering::Acquire) == 0)
        }) {
            if let Some(h) = self.held.pop_front() {
                self.encode(&h.packet);
            }
        }
    }

    fn encode(&mut self, p: &Packet) {
        if let Err(e) = p.encode(self.protocol, &mut self.wbuf) {
            tracing::warn!(error = %e, kind = p.kind(), "cannot encode packet");
        }
    }

    /// Hand `ops` to the store if this session is persistent; returns the ticket (0: none).
    fn persist(&self, ops: Vec<Op>) -> u64 {
        if self.session.durable.load(Ordering::Acquire) {
            self.shared.persist(ops)
        } else {
            0
        }
    }

    /// A DISCONNECT goes out at once: whatever waits for the store is not sent.
    fn push_disconnect(&mut self, code: ReasonCode, reason: Option<String>) {
        if self.protocol == Protocol::V5 {
            self.encode(&Packet::Disconnect(Disconnect {
                code,
                reason_string: reason,
                ..Default::default()
            }));
        }
    }

    fn reason(&self, s: &str) -> Option<String> {
        self.problem_info.then(|| s.to_owned())
    }

    /// Decode and handle every complete packet in `rbuf`.
    fn process_input(&mut self, rbuf: &mut BytesMut, max_packet: usize) -> Option<End> {
        loop {
            match decode(rbuf, Some(self.protocol), max_packet) {
                Ok(Some(p)) => {
                    if let Some(end) = self.handle(p) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    let code = e.reason_code();
                    self.shared
                        .stats
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.push_disconnect(code, Some(e.to_string()));
                    return Some(End::Protocol {
                        code,
                        detail: e.to_string(),
                        malformed: true,
                    });
                }
            }
        }
    }

    fn protocol_error(&mut self, code: ReasonCode, detail: &str) -> Option<End> {
        self.shared
            .stats
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        self.push_disconnect(code, Some(detail.to_owned()));
        Some(End::Protocol {
            code,
            detail: detail.to_owned(),
            malformed: false,
        })
    }

    fn handle(&mut self, p: Packet) -> Option<End> {
        match p {
            Packet::Publish(p) => return self.on_publish(p),
            Packet::PubAck(r) => {
                if matches!(self.state.outbound.get(&r.packet_id), Some(Outbound::Published(d)) if d.qos == QoS::AtLeastOnce)
                {
                    if let Some(Outbound::Published(d)) = self.state.outbound.remove(&r.packet_id) {
                        if d.durable && d.msg.qos == QoS::AtLeastOnce {
                            acknowledged(&d.msg);
                        }
                        self.dequeue(&d);
                    }
                }
            }
            Packet::PubRec(r) => match self.state.outbound.get(&r.packet_id) {
                Some(Outbound::Published(d)) if d.qos == QoS::ExactlyOnce => {
                    let durable = d.durable.then_some(d.msg.seq);
                    if r.code.is_error() {
                        if let Some(Outbound::Published(d)) =
                            self.state.outbound.remove(&r.packet_id)
                        {
                            self.dequeue(&d);
                        }
                    } else {
                        self.state
                            .outbound
                            .insert(r.packet_id, Outbound::Released(durable));
                        // A crash must not resend a PUBLISH the client already has: the PUBREL
                        // leaves once "released" is on disk.
                        let ticket = match durable {
                            Some(seq) => self.persist(vec![Op::Released {
                                session: self.session.id,
                                seq,
                            }]),
                            None => 0,
                        };
                        self.push_after(
                            ticket,
                            Packet::PubRel(PubResp {
                                packet_id: r.packet_id,
                                ..Default::default()
                            }),
                        );
                    }
                }
                _ => {
                    let code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                    self.push(Packet::PubRel(PubResp {
                        packet_id: r.packet_id,
                        code,
                        ..Default::default()
                    }));
                }
            },
            Packet::PubRel(r) => {
                let found = self.state.inbound_qos2.remove(&r.packet_id);
                let code = if found || self.protocol == Protocol::V311 {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                // Once PUBCOMP is out the client may reuse the packet id: the release must be
                // on disk first, or a restart would take the next message for a duplicate.
                let ticket = if found {
                    self.persist(vec![Op::Inbound {
                        session: self.session.id,
                        packet_id: r.packet_id,
                        present: false,
                    }])
                } else {
                    0
                };
                self.push_after(
                    ticket,
                    Packet::PubComp(PubResp {
                        packet_id: r.packet_id,
                        code,
                        ..Default::default()
                    }),
                );
            }
            Packet::PubComp(r) => {
                if let Some(Outbound::Released(durable)) = self.state.outbound.get(&r.packet_id) {
                    let durable = *durable;
                    self.state.outbound.remove(&r.packet_id);
                    if let Some(seq) = durable {
                        self.dequeued.push(Op::Dequeue {
                            session: self.session.id,
                            seq,
                        });
                    }
                }
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => self.push(Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(exp) = d.session_expiry_interval {
                    if self.state.expiry_interval == 0 && exp != 0 {
                        return self.protocol_error(
                            ReasonCode::PROTOCOL_ERROR,
                            "session expiry set on DISCONNECT after 0 at CONNECT",
                        );
                    }
                    self.state.expiry_interval = exp.min(self.shared.config.max_session_expiry);
                }
                return Some(End::Client {
                    will: d.code == ReasonCode::DISCONNECT_WITH_WILL,
                });
            }
            Packet::Connect(_) => {
                return self.protocol_error(ReasonCode::PROTOCOL_ERROR, "second CONNECT")
            }
            Packet::Auth(_) => {
                return self.protocol_error(
                    ReasonCode::PROTOCOL_ERROR,
                    "AUTH without an authentication method",
                )
            }
            other => {
                let what = format!("{} is not sent by clients", other.kind());
                return self.protocol_error(ReasonCode::PROTOCOL_ERROR, &what);
            }
        }
        None
    }

    fn on_publish(&mut self, mut p: Publish) -> Option<End> {
        self.shared
            .stats
            .messages_in
            .fetch_add(1, Ordering::Relaxed);
        self.gate.meter().received(p.payload.len());
        // Topic aliases (v5).
        if let Some(alias) = p.properties.topic_alias.take() {
            let max = self.shared.config.topic_alias_maximum;
            if alias != 0 && alias <= max && self.aliases.is_empty() {
                self.aliases = vec![None; usize::from(max) + 1];
            }
            let Some(slot) = self
                .aliases
                .get_mut(usize::from(alias))
                .filter(|_| alias != 0)
            else {
                return self
                    .protocol_error(ReasonCode::TOPIC_ALIAS_INVALID, "topic alias out of range");
            };
            if p.topic.is_empty() {
                match slot {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return self
                            .protocol_error(ReasonCode::PROTOCOL_ERROR, "unknown topic alias")
                    }
                }
            } else {
                *slot = Some(p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return self
                .protocol_error(ReasonCode::TOPIC_NAME_INVALID, "empty topic without alias");
        }
        if topic_levels(&p.topic) > self.shared.config.max_topic_levels {
            return self
                .protocol_error(ReasonCode::TOPIC_NAME_INVALID, "topic has too many levels");
        }
        let pid = p.packet_id;
        if p.qos == QoS::ExactlyOnce {
            if self.state.inbound_qos2.contains(&pid) {
                // Duplicate of a message we already routed: acknowledge again, route nothing.
                self.push(Packet::PubRec(PubResp {
                    packet_id: pid,
                    ..Default::default()
                }));
                return None;
            }
            if self.state.inbound_qos2.len() >= usize::from(self.shared.config.receive_maximum) {
                return self.protocol_error(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    "receive maximum exceeded",
                );
            }
        }

        if !self.gate.publish(&self.shared, &p.topic, p.qos, "publish") {
            let v5 = self.protocol == Protocol::V5;
            let code = if v5 {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            };
            let reason_string = if v5 {
                self.reason(&self.gate.denial_reason("publish"))
            } else {
                None
            };
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.push(Packet::PubAck(PubResp {
                    packet_id: pid,
                    code,
                    reason_string,
                    ..Default::default()
                })),
                QoS::ExactlyOnce => {
                    if !v5 {
                        self.state.inbound_qos2.insert(pid);
                    }
                    self.push(Packet::PubRec(PubResp {
                        packet_id: pid,
                        code,
                        reason_string,
                        ..Default::default()
                    }));
                }
            }
            return None;
        }

        let expiry = p.properties.message_expiry_interval;
        let expires_at = expiry.map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        let expires_at_ms = expiry.map(|s| unix_ms().saturating_add(i64::from(s) * 1000));
        let mut props = std::mem::take(&mut p.properties);
        props.subscription_identifiers.clear();
        props.message_expiry_interval = None;
        let size = p.topic.len() + p.payload.len() + props_size(&props);
        let msg = Arc::new(Message {
            topic: p.topic,
            payload: p.payload,
            props,
            qos: p.qos,
            retain: p.retain,
            expires_at,
            expires_at_ms,
            seq: self.shared.new_seq(),
            from_session: self.session.id,
            unacked: std::sync::atomic::AtomicU32::new(0),
            publisher: Some(Arc::downgrade(&self.session)),
            size,
        });
        // A persistent publisher's QoS 2 packet id is written with the fan-out.
        let inbound = (p.qos == QoS::ExactlyOnce && self.session.durable.load(Ordering::Acquire))
            .then_some(Op::Inbound {
                session: self.session.id,
                packet_id: pid,
                present: true,
            });
        let routed = self.shared.route(&msg, &mut self.scratch, true, inbound);
        if routed.storage_refused {
            // Acknowledging would promise what the disk cannot keep: refuse instead.
            if self.protocol == Protocol::V311 {
                let reason = "durable store unavailable".to_owned();
                return Some(End::Closed {
                    code: ReasonCode::SERVER_BUSY,
                    reason,
                });
            }
            let resp = PubResp {
                packet_id: pid,
                code: ReasonCode::QUOTA_EXCEEDED,
                reason_string: self.reason("durable store unavailable (disk full?)"),
                ..Default::default()
            };
            self.push(if p.qos == QoS::AtLeastOnce {
                Packet::PubAck(resp)
            } else {
                Packet::PubRec(resp)
            });
            return None;
        }
        let mut ticket = routed.ticket;
        if msg.retain {
            ticket = ticket.max(self.shared.retain(&msg));
        }
        if routed.refused > 0 {
            self.congested = true;
        }
        // MQTT 5 publishers learn that a subscriber's queue was full.
        let code = if routed.refused > 0 && self.protocol == Protocol::V5 {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode::SUCCESS
        };
        let reason_string = (code != ReasonCode::SUCCESS)
            .then(|| self.reason("a subscriber's queue is full"))
            .flatten();
        // A retained message's own record must reach the disk: no early acknowledgement.
        let delivered = (!msg.retain).then(|| Arc::clone(&msg));
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.push_after_or_delivered(
                ticket,
                Packet::PubAck(PubResp {
                    packet_id: pid,
                    code,
                    reason_string,
                    ..Default::default()
                }),
                delivered,
            ),
            QoS::ExactlyOnce => {
                self.state.inbound_qos2.insert(pid);
                self.push_after(
                    ticket,
                    Packet::PubRec(PubResp {
                        packet_id: pid,
                        code,
                        reason_string,
                        ..Default::default()
                    }),
                );
            }
        }
        None
    }

    fn on_subscribe(&mut self, s: Subscribe) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_for: Vec<(String, SubOpts)> = Vec::new();
        let mut ops = Vec::new();
        for req in s.filters {
            let (group, inner) = match topic::parse_shared(&req.filter) {
                Some((g, f)) => (Some(g.to_owned()), f.to_owned()),
                None => (None, req.filter.to_string()),
            };
            if topic_levels(&inner) > self.shared.config.max_topic_levels {
                codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
            if self.state.subscriptions.len() >= self.shared.config.max_subscriptions_per_session
                && !self.state.subscriptions.contains_key(&req.filter)
            {
                codes.push(ReasonCode::QUOTA_EXCEEDED);
                continue;
            }
            if !self.gate.subscribe(&self.shared, &req.filter, &inner) {
                codes.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            let opts = SubOpts {
                qos: req.qos,
                no_local: req.no_local,
                retain_as_published: req.retain_as_published,
                retain_handling: req.retain_handling,
                sub_id: s.subscription_identifier,
            };
            let existed = self
                .state
                .subscriptions
                .insert(req.filter.clone(), opts)
                .is_some();
            ops.push(Op::Subscribe {
                session: self.session.id,
                filter: req.filter.to_string(),
                opts: pack_opts(&opts),
                sub_id: opts.sub_id.unwrap_or(0),
            });
            self.shared.router.subscribe(
                &inner,
                group.as_deref(),
                Subscriber {
                    session: Arc::clone(&self.session),
                    opts,
                },
            );
            codes.push(ReasonCode(req.qos as u8));
            let send_retained = group.is_none()
                && (opts.retain_handling == 0 || (opts.retain_handling == 1 && !existed));
            if send_retained {
                retained_for.push((inner, opts));
            }
        }
        let reason_string = if codes.iter().any(|c| c.is_error()) && self.protocol == Protocol::V5 {
            let why = if self.gate.quarantine().is_some() {
                self.gate.denial_reason("one or more subscriptions")
            } else {
                "one or more filters not authorized by policy".to_owned()
            };
            self.reason(&why)
        } else {
            None
        };
        // A persistent subscription is acknowledged once it is on disk: a message published
        // after the SUBACK must find it even across a crash.
        let ticket = self.persist(ops);
        self.push_after(
            ticket,
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                codes,
                reason_string,
                ..Default::default()
            }),
        );
        // Retained messages follow the SUBACK (queued to our own mailbox, in order).
        let now = Instant::now();
        for (filter, opts) in retained_for {
            let mut expired = Vec::new();
            for entry in self.shared.retained.iter() {
                let msg = entry.value();
                if !topic::matches(&filter, &msg.topic) {
                    continue;
                }
                if msg.expired(now) {
                    expired.push(msg.topic.clone());
                    continue;
                }
                // Not written to the store: a retained copy is re-sent on a new subscription,
                // not on a restart (documented in docs/durability.md).
                let d = Delivery {
                    msg: Arc::clone(msg),
                    qos: opts.qos.min(msg.qos),
                    retain: true,
                    sub_ids: opts.sub_id.into_iter().collect(),
                    durable: false,
                    ready: 0,
                    dup: false,
                };
                let cfg = &self.shared.config;
                if self
                    .session
                    .deliver(
                        d,
                        cfg.max_queued_messages,
                        cfg.max_queued_bytes,
                        cfg.queue_full,
                    )
                    .is_err()
                {
                    self.shared
                        .stats
                        .messages_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            for t in expired {
                self.shared.retained.remove_if(&t, |_, m| m.expired(now));
            }
        }
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut ops = Vec::new();
        for f in u.filters {
            let existed = self.state.subscriptions.remove(&f).is_some();
            if existed {
                self.unroute(&f);
                ops.push(Op::Unsubscribe {
                    session: self.session.id,
                    filter: f.to_string(),
                });
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let ticket = self.persist(ops);
        self.push_after(
            ticket,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                codes,
                ..Default::default()
            }),
        );
    }

    fn unroute(&self, filter: &str) {
        unroute(&self.shared, filter, self.session.id);
    }

    fn window_open(&self) -> bool {
        self.state.outbound.len() < self.inflight_limit
    }

    /// Move queued deliveries into the write buffer, within the in-flight window. Returns
    /// whether deliveries that could be sent now are still queued.
    fn pump_mailbox(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        let wm = self.watermark();
        self.wm_blocked = false;
        let more = {
            let mut mb = self.session.mailbox.lock();
            let mut window = self
                .inflight_limit
                .saturating_sub(self.state.outbound.len());
            while batch.len() < MAX_BATCH && self.wbuf.len() < MAX_BATCH_BYTES {
                let Some(front) = mb.queue.front() else { break };
                if front.ready > wm {
                    // Not on disk yet (QoS 2 to a persistent session): wait for the store.
                    self.wm_blocked = true;
                    break;
                }
                if front.qos != QoS::AtMostOnce {
                    if window == 0 {
                        break;
                    }
                    window -= 1;
                }
                if let Some(d) = mb.queue.pop_front() {
                    mb.bytes = mb.bytes.saturating_sub(d.msg.size());
                    batch.push(d);
                }
            }
            batch.len() == MAX_BATCH && !mb.queue.is_empty()
        };
        let now = Instant::now();
        let mut ops = Vec::new();
        let mut sends: Vec<(Delivery, u16)> = Vec::with_capacity(batch.len());
        for d in batch.drain(..) {
            if d.msg.expired(now) {
                self.shared
                    .stats
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.dequeue(&d);
                continue;
            }
            let packet_id = if d.qos == QoS::AtMostOnce {
                0
            } else {
                match self.state.alloc_packet_id() {
                    Some(id) => id,
                    None => {
                        self.shared
                            .stats
                            .messages_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        self.dequeue(&d);
                        continue;
                    }
                }
            };
            if d.durable && d.qos == QoS::ExactlyOnce {
                // A redelivery after a crash must reuse this packet id.
                ops.push(Op::Sent {
                    session: self.session.id,
                    seq: d.msg.seq,
                    packet_id,
                });
            }
            sends.push((d, packet_id));
        }
        let ticket = self.persist(ops);
        for (d, packet_id) in sends {
            let after = if d.durable && d.qos == QoS::ExactlyOnce {
                ticket
            } else {
                0
            };
            if self.encode_delivery(&d, packet_id, d.dup, now, after) {
                if d.qos != QoS::AtMostOnce {
                    self.state
                        .outbound
                        .insert(packet_id, Outbound::Published(d));
                }
            } else {
                self.dequeue(&d);
            }
        }
        self.batch = batch;
        more
    }

    /// The delivery left the session for good: remove it from the store (with the next pass).
    fn dequeue(&mut self, d: &Delivery) {
        if d.durable {
            self.dequeued.push(Op::Dequeue {
                session: self.session.id,
                seq: d.msg.seq,
            });
        }
    }

    /// Encode one PUBLISH; false if it could not be sent (too large for the client).
    fn encode_delivery(
        &mut self,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Instant,
        after: u64,
    ) -> bool {
        let mut properties: PublishProperties = d.msg.props.clone();
        if self.protocol == Protocol::V5 {
            properties.subscription_identifiers.clone_from(&d.sub_ids);
            properties.message_expiry_interval = d.msg.expires_at.map(|t| {
                u32::try_from(t.saturating_duration_since(now).as_secs().max(1)).unwrap_or(u32::MAX)
            });
        }
        let p = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            packet_id,
            payload: d.msg.payload.clone(),
            properties,
        });
        if p.encoded_len(self.protocol) > self.client_max_packet {
            // MQTT 5 3.1.2.25: discard, as if delivered.
            self.shared
                .stats
                .messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.push_after(after, p);
        self.shared
            .stats
            .messages_out
            .fetch_add(1, Ordering::Relaxed);
        self.gate.meter().sent(d.msg.payload.len());
        true
    }

    /// Resend unacknowledged messages of a resumed session (DUP set), within the client's
    /// receive maximum; messages the device may no longer read are dropped, the excess goes back
    /// to the front of the mailbox.
    fn resend_inflight(&mut self) {
        let now = Instant::now();
        let pending: Vec<(u16, Outbound)> = std::mem::take(&mut self.state.outbound)
            .into_iter()
            .collect();
        let mut excess = Vec::new();
        for (pid, o) in pending {
            match o {
                Outbound::Published(d) => {
                    if !self.gate.may_read(&d.msg.topic) {
                        self.shared
                            .stats
                            .messages_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        self.dequeue(&d);
                    } else if self.state.outbound.len() >= self.inflight_limit
                        && d.qos == QoS::AtLeastOnce
                    {
                        excess.push(d);
                    } else if self.encode_delivery(&d, pid, true, now, 0) {
                        self.state.outbound.insert(pid, Outbound::Published(d));
                    } else {
                        self.dequeue(&d);
                    }
                }
                Outbound::Released(seq) => {
                    self.push(Packet::PubRel(PubResp {
                        packet_id: pid,
                        ..Default::default()
                    }));
                    self.state.outbound.insert(pid, Outbound::Released(seq));
                }
            }
        }
        if !excess.is_empty() {
            self.session.requeue_front(excess);
        }
    }

    /// Authorization inputs changed: re-check with the gate. A revoked or unregistered device
    /// is closed; a quarantined one stays connected, confined (its subscriptions outside the
    /// quarantine policy are suspended and their queued messages dropped); a released one gets
    /// its suspended subscriptions back where its policy allows them.
    fn recheck(&mut self) -> Option<End> {
        let (quarantined, was_quarantined) = match self.gate.recheck(&self.shared) {
            Recheck::Revoked => return Some(self.close_admin("certificate revoked")),
            Recheck::Unregistered => return Some(self.close_admin("device no longer registered")),
            Recheck::Current {
                quarantined,
                was_quarantined,
            } => (quarantined, was_quarantined),
        };
        let removed = self.recheck_subscriptions();
        if !quarantined {
            self.restore_suspended();
        }
        if was_quarantined && !quarantined {
            tracing::info!(device = %self.peer.device_id, "released from quarantine");
        }
        // Outside quarantine a v5 client whose subscriptions the policy took away is told so by
        // being disconnected (it resubscribes with what it may still read); a quarantined one
        // stays connected so it can report its inventory and receive updates.
        if removed > 0 && !quarantined && self.protocol == Protocol::V5 {
            let reason = format!("{removed} subscription(s) no longer authorized by policy");
            self.push_disconnect(ReasonCode::NOT_AUTHORIZED, Some(reason.clone()));
            return Some(End::Closed {
                code: ReasonCode::NOT_AUTHORIZED,
                reason,
            });
        }
        None
    }

    fn close_admin(&mut self, reason: &str) -> End {
        self.push_disconnect(ReasonCode::ADMINISTRATIVE_ACTION, Some(reason.to_owned()));
        End::Closed {
            code: ReasonCode::ADMINISTRATIVE_ACTION,
            reason: reason.to_owned(),
        }
    }

    /// Drop subscriptions the device may no longer hold, and queued messages it may no longer
    /// read. While it is quarantined they are suspended rather than forgotten, to come back on
    /// release. Returns how many subscriptions were removed.
    fn recheck_subscriptions(&mut self) -> usize {
        let denied: Vec<ByteString> = self
            .state
            .subscriptions
            .keys()
            .filter(|f| {
                let inner = topic::parse_shared(f).map_or(&***f, |(_, i)| i);
                !self.gate.may_hold(inner)
            })
            .cloned()
            .collect();
        let quarantined = self.gate.quarantine().is_some();
        let mut ops = Vec::new();
        for f in &denied {
            if let Some(opts) = self.state.subscriptions.remove(f) {
                if quarantined {
                    self.state.suspended.insert(f.clone(), opts);
                }
            }
            self.unroute(f);
            ops.push(Op::Unsubscribe {
                session: self.session.id,
                filter: f.to_string(),
            });
            self.gate.subscription_removed(&self.shared, f);
        }
        if !denied.is_empty() || quarantined {
            let gate = &self.gate;
            let dropped = self.session.retain_queued(|d| gate.may_read(&d.msg.topic));
            ops.extend(dropped.into_iter().map(|seq| Op::Dequeue {
                session: self.session.id,
                seq,
            }));
        }
        self.persist(ops);
        denied.len()
    }

    /// Out of quarantine: put back the subscriptions it suspended, where the policy allows.
    fn restore_suspended(&mut self) {
        if self.state.suspended.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        for (filter, opts) in std::mem::take(&mut self.state.suspended) {
            let (group, inner) = match topic::parse_shared(&filter) {
                Some((g, f)) => (Some(g.to_owned()), f.to_owned()),
                None => (None, filter.to_string()),
            };
            if !self.gate.may_hold(&inner) || self.state.subscriptions.contains_key(&filter) {
                continue;
            }
            ops.push(Op::Subscribe {
                session: self.session.id,
                filter: filter.to_string(),
                opts: pack_opts(&opts),
                sub_id: opts.sub_id.unwrap_or(0),
            });
            self.shared.router.subscribe(
                &inner,
                group.as_deref(),
                Subscriber {
                    session: Arc::clone(&self.session),
                    opts,
                },
            );
            self.state.subscriptions.insert(filter, opts);
        }
        self.persist(ops);
    }

    /// After the loop: hand the session back, publish the will if due, emit the event.
    fn finish(mut self, end: End) {
        let ops = std::mem::take(&mut self.dequeued);
        self.persist(ops);
        let Conn {
            shared,
            peer,
            session,
            mut state,
            will,
            ..
        } = self;
        let (reason, will_due, takeover) = match end {
            End::Client { will } => ("client disconnect".to_owned(), will, None),
            End::Io(e) => (format!("network: {e}"), true, None),
            End::Protocol {
                code,
                detail,
                malformed,
            } => {
                if malformed {
                    shared.emit(EventKind::MalformedPacket {
                        device: peer.device_id.clone(),
                        addr: peer.addr,
                        error: detail.clone(),
                        reason_code: code.0,
                    });
                } else {
                    shared.emit(EventKind::ProtocolViolation {
                        device: peer.device_id.clone(),
                        detail: detail.clone(),
                        reason_code: code.0,
                    });
                }
                (format!("protocol error: {detail}"), true, None)
            }
            End::KeepAlive => {
                shared.emit(EventKind::ProtocolViolation {
                    device: peer.device_id.clone(),
                    detail: "keep-alive timeout".into(),
                    reason_code: ReasonCode::KEEP_ALIVE_TIMEOUT.0,
                });
                ("keep-alive timeout".to_owned(), true, None)
            }
            End::Closed { code, reason } => {
                shared.emit(EventKind::SessionClosed {
                    device: peer.device_id.clone(),
                    client_id: session.client_id.to_string(),
                    reason: format!("{reason} (0x{:02x})", code.0),
                });
                (reason, false, None)
            }
            End::TakenOver(ack) => {
                shared.emit(EventKind::SessionTakenOver {
                    device: peer.device_id.clone(),
                    client_id: session.client_id.to_string(),
                });
                ("session taken over".to_owned(), true, Some(ack))
            }
        };
        let will = will.filter(|_| will_due);
        let will_published = will.is_some();
        let expiry = state.expiry_interval;
        let generation = session.generation.load(Ordering::Acquire);
        if session.durable.load(Ordering::Acquire) && (expiry > 0 || takeover.is_some()) {
            // The expiry clock starts now; a will that is not due is forgotten.
            let mut ops = vec![Op::Session {
                id: session.id,
                device_id: Arc::clone(&session.device_id),
                client_id: Arc::clone(&session.client_id),
                expiry_secs: expiry,
                expires_at_ms: Some(unix_ms().saturating_add(i64::from(expiry) * 1000)),
            }];
            if will.is_none() {
                ops.push(Op::Will {
                    session: session.id,
                    will: None,
                });
            }
            shared.persist(ops);
        }

        // Detach.
        {
            let _reg = shared.sessions.lock();
            session.set_online(false);
            *session.control.lock() = None;
            *session.meter.lock() = None;
            // QoS 0 messages are not kept for offline sessions.
            session.retain_queued(|d| d.qos != QoS::AtMostOnce);
            state.inbound_qos2.shrink_to_fit();
            let subs: Vec<ByteString> = state.subscriptions.keys().cloned().collect();
            *session.state.lock() = Some(state);
            if expiry == 0 && takeover.is_none() {
                drop(_reg);
                destroy_session(&shared, &session, &subs);
            }
        }
        if let Some(ack) = takeover {
            let _ = ack.send(());
        }
        if let Some(w) = will {
            let delay = w.properties.will_delay_interval.unwrap_or(0).min(expiry);
            schedule_will(&shared, &session, peer.serial.clone(), w, delay, generation);
        }
        if expiry > 0 {
            schedule_expiry(
                &shared,
                &session,
                Duration::from_secs(u64::from(expiry)),
                generation,
            );
        }
        tracing::info!(device = %peer.device_id, %reason, will_published, "disconnected");
        shared.emit(EventKind::Disconnected {
            device: peer.device_id,
            client_id: session.client_id.to_string(),
            reason,
            will_published,
        });
    }
}

/// A persistent subscriber acknowledged a QoS 1 message: the last one wakes the publisher,
/// whose PUBACK may now leave without waiting for the disk.
fn acknowledged(msg: &Message) {
    if msg.publisher.is_none() {
        return;
    }
    if msg.unacked.fetch_sub(1, Ordering::AcqRel) == 1 {
        if let Some(p) = msg.publisher.as_ref().and_then(std::sync::Weak::upgrade) {
            p.notify.notify_one();
        }
    }
}

/// Publish `w` for `session` after `delay` seconds, unless the session reattaches first.
pub(crate) fn schedule_will(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    serial: String,
    w: Will,
    delay: u32,
    generation: u64,
) {
    if delay == 0 {
        publish_will(shared, session, &serial, w);
        return;
    }
    let shared2 = Arc::clone(shared);
    let session2 = Arc::clone(session);
    let t = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
        if session2.generation.load(Ordering::Acquire) == generation && !session2.is_online() {
            publish_will(&shared2, &session2, &serial, w);
        }
    });
    session.timers.lock().push(t.abort_handle());
}

/// Destroy `session` after `after`, unless it reattaches first.
pub(crate) fn schedule_expiry(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    after: Duration,
    generation: u64,
) {
    let shared2 = Arc::clone(shared);
    let session2 = Arc::clone(session);
    let t = tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if session2.generation.load(Ordering::Acquire) == generation && !session2.is_online() {
            let subs: Vec<ByteString> = session2
                .state
                .lock()
                .as_ref()
                .map(|s| s.subscriptions.keys().cloned().collect())
                .unwrap_or_default();
            destroy_session(&shared2, &session2, &subs);
        }
    });
    session.timers.lock().push(t.abort_handle());
}

/// Write a (re)attached session's record, and its will, to the store.
fn persist_attach(
    shared: &Shared,
    session: &Session,
    state: &SessionState,
    will: Option<&Will>,
    serial: &str,
) {
    let was = session.durable.load(Ordering::Acquire);
    let now = state.expiry_interval > 0;
    session.durable.store(now, Ordering::Release);
    let mut ops = Vec::new();
    if !now {
        if was {
            ops.push(Op::DeleteSession { id: session.id });
        }
        shared.persist(ops);
        return;
    }
    ops.push(Op::Session {
        id: session.id,
        device_id: Arc::clone(&session.device_id),
        client_id: Arc::clone(&session.client_id),
        expiry_secs: state.expiry_interval,
        expires_at_ms: None,
    });
    if !was {
        // Becoming persistent: what the session already holds becomes durable from here on.
        for (f, o) in &state.subscriptions {
            ops.push(Op::Subscribe {
                session: session.id,
                filter: f.to_string(),
                opts: pack_opts(o),
                sub_id: o.sub_id.unwrap_or(0),
            });
        }
    }
    // A will is kept so that a crash (which drops every connection) still publishes it.
    ops.push(Op::Will {
        session: session.id,
        will: will.and_then(|w| StoredWill::from_will(w, serial)),
    });
    shared.persist(ops);
}

fn unroute(shared: &Shared, filter: &str, session_id: u64) {
    match topic::parse_shared(filter) {
        Some((g, inner)) => shared.router.unsubscribe(inner, Some(g), session_id),
        None => shared.router.unsubscribe(filter, None, session_id),
    };
}

/// Remove a session and all its subscriptions, if it is still the registered one.
fn destroy_session(shared: &Shared, session: &Arc<Session>, subs: &[ByteString]) {
    {
        let mut reg = shared.sessions.lock();
        match reg.get(&session.key) {
            Some(s) if Arc::ptr_eq(s, session) && !s.is_online() => {
                reg.remove(&session.key);
            }
            _ => return,
        }
    }
    for f in subs {
        unroute(shared, f, session.id);
    }
    session.retain_queued(|_| false);
    if session.durable.swap(false, Ordering::AcqRel) {
        shared.persist(vec![Op::DeleteSession { id: session.id }]);
    }
}

pub(crate) fn publish_will(shared: &Shared, session: &Session, serial: &str, w: Will) {
    // A device revoked (or removed) since it disconnected does not get its will out; one
    // quarantined since gets it out only where the quarantine policy allows.
    let Some(policy) = crate::gate::will_policy(shared, &session.device_id, serial) else {
        return;
    };
    if !policy.can_publish(&w.topic) {
        shared.stats.publish_denied.fetch_add(1, Ordering::Relaxed);
        shared.emit(EventKind::PublishDenied {
            device: session.device_id.to_string(),
            topic: w.topic.to_string(),
            qos: w.qos as u8,
            what: "will",
            quarantine: None,
        });
        return;
    }
    let now = Instant::now();
    let props = PublishProperties {
        payload_format_indicator: w.properties.payload_format_indicator,
        content_type: w.properties.content_type,
        response_topic: w.properties.response_topic,
        correlation_data: w.properties.correlation_data,
        user_properties: w.properties.user_properties,
        ..Default::default()
    };
    let size = w.topic.len() + w.payload.len() + props_size(&props);
    let expiry = w.properties.message_expiry_interval;
    let msg = Arc::new(Message {
        topic: w.topic,
        payload: w.payload,
        props,
        qos: w.qos,
        retain: w.retain,
        expires_at: expiry.map(|s| now + Duration::from_secs(u64::from(s))),
        expires_at_ms: expiry.map(|s| unix_ms().saturating_add(i64::from(s) * 1000)),
        seq: shared.new_seq(),
        from_session: session.id,
        unacked: std::sync::atomic::AtomicU32::new(0),
        publisher: None,
        size,
    });
    if msg.retain {
        shared.retain(&msg);
    }
    shared.route(&msg, &mut Vec::new(), false, None);
    if session.durable.load(Ordering::Acquire) {
        shared.persist(vec![Op::Will {
            session: session.id,
            will: None,
        }]);
    }
}

/// Find or create the session for (device, client id), taking it over from a live connection.
async fn attach(
    shared: &Arc<Shared>,
    device_id: &str,
    client_id: &str,
    clean_start: bool,
    ctrl: Arc<ControlInbox>,
) -> (Arc<Session>, SessionState, bool) {
    let key = session_key(device_id, client_id);
    for _ in 0..10 {
        // A live connection holds the session: ask it to hand over, and wait.
        let live = {
            let reg = shared.sessions.lock();
            reg.get(&key).filter(|s| s.is_online()).cloned()
        };
        if let Some(s) = live {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if s.send_control(Control::TakeOver(tx)) {
                let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        let mut reg = shared.sessions.lock();
        let existing = reg.get(&key).cloned();
        match existing {
            Some(s) if s.is_online() => continue,
            Some(s) if !clean_start => {
                let state = s.state.lock().take().unwrap_or_default();
                s.cancel_timers();
                s.generation.fetch_add(1, Ordering::AcqRel);
                *s.control.lock() = Some(ctrl);
                s.set_online(true);
                return (s, state, true);
            }
            Some(s) => {
                reg.remove(&key);
                drop(reg);
                s.cancel_timers();
                let subs: Vec<ByteString> = s
                    .state
                    .lock()
                    .take()
                    .map(|st| st.subscriptions.into_keys().collect())
                    .unwrap_or_default();
                for f in &subs {
                    unroute(shared, f, s.id);
                }
                s.retain_queued(|_| false);
                if s.durable.swap(false, Ordering::AcqRel) {
                    shared.persist(vec![Op::DeleteSession { id: s.id }]);
                }
                reg = shared.sessions.lock();
                if reg.contains_key(&key) {
                    continue;
                }
                return insert_new(shared, &mut reg, key, device_id, client_id, ctrl);
            }
            None => return insert_new(shared, &mut reg, key, device_id, client_id, ctrl),
        }
    }
    // Could not settle a takeover race: start afresh under a new session object.
    let mut reg = shared.sessions.lock();
    insert_new(shared, &mut reg, key, device_id, client_id, ctrl)
}

fn insert_new(
    shared: &Shared,
    reg: &mut std::collections::HashMap<Arc<str>, Arc<Session>>,
    key: Arc<str>,
    device_id: &str,
    client_id: &str,
    ctrl: Arc<ControlInbox>,
) -> (Arc<Session>, SessionState, bool) {
    let s = Arc::new(Session::new(shared.new_session_id(), device_id, client_id));
    let state = s.state.lock().take().unwrap_or_default();
    s.generation.fetch_add(1, Ordering::AcqRel);
    *s.control.lock() = Some(ctrl);
    s.set_online(true);
    reg.insert(key, Arc::clone(&s));
    (s, state, false)
}

/// Number of levels in a topic name or filter.
fn topic_levels(t: &str) -> usize {
    t.bytes().filter(|&b| b == b'/').count() + 1
}
