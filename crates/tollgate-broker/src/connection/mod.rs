//! One client connection, split along its seams:
//!
//! - [`protocol`]: the MQTT state machine. `Conn` handles one packet at a given time and records
//!   its effects: responses into the [`outbox`], messages routed to subscribers' mailboxes
//!   ([`crate::fanout`]), changes handed to the durable store, events and meters through the
//!   [`crate::gate`]. No I/O, no clock of its own: it is unit-tested with a fake store.
//! - [`delivery`]: moving queued deliveries from the session's mailbox into the outbox within
//!   the in-flight window, and redelivery after a resumed session; each PUBLISH is encoded
//!   there, with the topic alias [`aliases`] chooses for it (MQTT 5 clients that allow them).
//! - [`aliases`]: the server-to-client topic alias table and its admission policy.
//! - [`outbox`]: the write buffer and the acknowledgements held until the store's watermark
//!   passes the changes they promise.
//! - [`driver`]: the tokio loop. It reads bytes, waits for the mailbox, the control channel,
//!   the store's watermark and one timer for every deadline (keep-alive, certificate expiry,
//!   a started packet's completion, the next socket-progress sample), and writes each batch
//!   of responses in one go (many packets, one TLS record batch).
//! - [`progress`]: whether the client still takes what we send, judged from the socket's
//!   unsent and unacknowledged data (sampled on a timer only while some is outstanding), not
//!   only from our own writes, which a client that stopped reading lets succeed for megabytes.
//! - session lifecycle (attach and takeover, wills, expiry; also used by restore) lives in
//!   [`crate::lifecycle`]; `finish` here hands the session back when the connection ends.
//!
//! Durability: for a persistent session every state change is handed to the store
//! ([`crate::persist`]) as it happens, and a packet that promises durability (PUBACK, PUBREC,
//! PUBCOMP, SUBACK, UNSUBACK, and a QoS 2 PUBLISH whose packet id a redelivery must reuse) is
//! held, in order, until the store's watermark passes the ticket of the changes it depends on.

mod aliases;
mod delivery;
mod driver;
mod outbox;
mod progress;
mod protocol;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tollgate_events::{EventKind, RefusalReason};
use tollgate_mqtt::{ByteString, Protocol, QoS, ReasonCode, Will};

use crate::gate::Gate;
use crate::lifecycle::{destroy_session, publish_will, schedule_expiry, schedule_will};
use crate::persist::{unix_ms, Op};
use crate::session::{Delivery, Handover, Session, SessionState};
use crate::{PeerIdentity, Shared};

pub(crate) use driver::run;

/// The time a packet is handled at: the state machine reads no clock of its own, so a test
/// can run it at any instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// Monotonic time (deadlines, message expiry).
    pub mono: Instant,
    /// Wall-clock Unix milliseconds (expiry as the durable store keeps it).
    pub unix_ms: i64,
}

impl Now {
    /// The current time.
    pub fn current() -> Now {
        Now {
            mono: Instant::now(),
            unix_ms: unix_ms(),
        }
    }
}
use outbox::Outbox;

const READ_CHUNK: usize = 16 * 1024;
const IDLE_CHUNK: usize = 256;
/// Most bytes encoded into the write buffer per mailbox pass.
const MAX_BATCH_BYTES: usize = 256 * 1024;
const MAX_BATCH: usize = 2048;

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
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
    /// The client's socket made no progress for the write timeout (it stopped reading): closed
    /// without a DISCONNECT, which could not get through.
    Stalled(String),
    /// A packet was started and not finished within the packet timeout.
    PacketTimeout(String),
    /// The control plane closed it (revocation, policy, shutdown): no will.
    Closed { code: ReasonCode, reason: String },
    /// A newer connection took the session over.
    TakenOver(Handover),
}

pub(crate) struct Conn {
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
    /// Topic aliases the client set (client to server).
    aliases: Vec<Option<ByteString>>,
    /// Topic aliases we may use towards the client (0: none).
    out_alias_max: u16,
    /// The aliases we set (server to client), made on the first PUBLISH when allowed.
    out_aliases: Option<Box<aliases::AliasTable>>,
    /// Boxed: most devices send no will, and every connection would carry its room.
    will: Option<Box<Will>>,
    problem_info: bool,
    /// What goes to the client, and what waits for the store first.
    out: Outbox,
    scratch: Vec<(u64, usize)>,
    batch: Vec<Delivery>,
    /// When the client certificate expires.
    cert_deadline: Option<Instant>,
    /// A message of ours found a subscriber's queue full: give the subscribers CPU before
    /// reading more from this publisher.
    congested: bool,
    /// The mailbox's next delivery waits for the store.
    wm_blocked: bool,
    /// Acknowledged deliveries to remove from the store: nothing waits for these, so they go
    /// to the store once per pass of the loop rather than once per acknowledgement.
    dequeued: Vec<Op>,
    /// Whether the client takes what we send (sampled off the per-message path).
    progress: progress::Progress,
}

type Refusal = (Protocol, ReasonCode, RefusalReason, String);

impl Conn {
    /// After the loop: hand the session back, publish the will if due, emit the event.
    pub(super) fn finish(mut self, end: End) {
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
            End::Stalled(detail) => {
                shared
                    .stats
                    .stalled_connections
                    .fetch_add(1, Ordering::Relaxed);
                (format!("write timeout: {detail}"), true, None)
            }
            End::PacketTimeout(detail) => {
                shared.stats.packet_timeouts.fetch_add(1, Ordering::Relaxed);
                shared.emit(EventKind::ProtocolViolation {
                    device: peer.device_id.clone(),
                    detail: format!("packet timeout: {detail}"),
                    reason_code: ReasonCode::KEEP_ALIVE_TIMEOUT.0,
                });
                (format!("packet timeout: {detail}"), true, None)
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
        let expiry = state.expiry_interval;
        // When the will goes out (MQTT 5 3.1.3.2.2): after its delay (at most the session's
        // expiry), unless the session ends first (publish now) or resumes first (drop it). A
        // takeover with clean start ends the old session; one without resumes it.
        let will = will.map(|w| *w).filter(|_| will_due).and_then(|w| {
            let delay = w.properties.will_delay_interval.unwrap_or(0).min(expiry);
            match &takeover {
                Some(h) if h.clean_start => Some((w, 0)),
                Some(_) if delay > 0 => None,
                _ => Some((w, delay)),
            }
        });
        let will_published = will.is_some();
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

        // The connection's last transport reading, for the detectors (TCP_INFO at close).
        let live = session.live.lock().take();
        if let Some(live) = live {
            if let Some(t) = live.transport.as_ref().and_then(|t| t.sample()) {
                live.meter
                    .connection_closed(Arc::clone(&session.client_id), t);
            }
        }
        // Detach.
        {
            let _reg = shared.sessions.lock();
            session.set_online(false);
            *session.control.lock() = None;
            *session.live.lock() = None;
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
        // A will due now goes out before the new connection is told the session is free.
        let will = match will {
            Some((w, 0)) => {
                publish_will(&shared, &session, &peer.serial, w);
                None
            }
            delayed => delayed,
        };
        if let Some(h) = takeover {
            let _ = h.ack.send(());
        }
        if let Some((w, delay)) = will {
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
