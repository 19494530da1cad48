//! Typed security events and the bus that carries them.
//!
//! Owns the [`Event`] vocabulary (every security decision Tollgate makes: connections accepted
//! and refused with their reason, authorization denials, revocations, policy reloads, malformed
//! input) and [`EventBus`], a bounded channel that never blocks the emitter: when it is full the
//! event is dropped and counted. Consumers (the JSON log writer today; the audit log and the
//! detectors later) subscribe with [`EventBus::subscribe`].
//!
//! It must not do I/O itself: writing lines to a file is the consumer's job.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to Tollgate's issuing CA.
    UnknownCa,
    /// The certificate is outside its validity period.
    Expired,
    /// The certificate's serial is revoked.
    Revoked,
    /// The certificate is valid but names no device we know.
    UnknownDevice,
    /// Any other certificate problem.
    BadCertificate,
    /// The TLS handshake failed for a reason that is not about the certificate.
    TlsError,
    /// The MQTT client id does not agree with the certificate's device id.
    ClientIdMismatch,
    /// The first packet was malformed or not a CONNECT.
    MalformedPacket,
    /// Unsupported MQTT protocol version.
    UnsupportedProtocol,
    /// TLS handshake plus CONNECT did not finish in time.
    Timeout,
    /// Too many handshakes in progress from one source address.
    TooManyHandshakes,
    /// The client asked for an authentication method we do not offer.
    BadAuthMethod,
    /// The device is not allowed to connect by policy (it is granted nothing at all... reserved).
    NotAuthorized,
    /// The server is shutting down.
    ShuttingDown,
}

/// One security-relevant fact.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A device completed TLS and CONNECT.
    ConnectionAccepted {
        /// Device id from the certificate.
        device: String,
        /// MQTT client id.
        client_id: String,
        /// "3.1.1" or "5.0".
        protocol: &'static str,
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Certificate serial (hex).
        serial: String,
        /// Whether an existing session was resumed.
        session_present: bool,
        /// Whether the TLS session was resumed.
        tls_resumed: bool,
    },
    /// A connection was refused, at TLS or at CONNECT.
    ConnectionRefused {
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Device id, when the certificate was readable.
        device: Option<String>,
        /// Why.
        reason: RefusalReason,
        /// Detail for the operator.
        detail: String,
    },
    /// A connection ended.
    Disconnected {
        /// Device id.
        device: String,
        /// MQTT client id.
        client_id: String,
        /// Why, in words (e.g. "client disconnect", "keep-alive timeout").
        reason: String,
        /// Whether the will message was published.
        will_published: bool,
    },
    /// A PUBLISH was refused by policy.
    PublishDenied {
        /// Device id.
        device: String,
        /// Topic.
        topic: String,
        /// QoS of the refused message.
        qos: u8,
        /// "publish", "will" or "redelivery".
        what: &'static str,
        /// The quarantine reasons, when the device was denied because it is quarantined.
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantine: Option<String>,
    },
    /// A SUBSCRIBE filter was refused by policy.
    SubscribeDenied {
        /// Device id.
        device: String,
        /// Filter.
        filter: String,
        /// The quarantine reasons, when the device was denied because it is quarantined.
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantine: Option<String>,
    },
    /// A live subscription was removed because the policy no longer allows it.
    SubscriptionRevoked {
        /// Device id.
        device: String,
        /// Filter.
        filter: String,
        /// The quarantine reasons, when it was removed because the device was quarantined.
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantine: Option<String>,
    },
    /// Malformed or oversized input from a connected client.
    MalformedPacket {
        /// Device id.
        device: String,
        /// Remote address.
        addr: Option<SocketAddr>,
        /// What was wrong.
        error: String,
        /// MQTT reason code sent (0 when the connection was simply closed).
        reason_code: u8,
    },
    /// A protocol violation that is not malformed bytes (keep-alive timeout, receive maximum exceeded...).
    ProtocolViolation {
        /// Device id.
        device: String,
        /// What happened.
        detail: String,
        /// MQTT reason code sent.
        reason_code: u8,
    },
    /// A session was taken over by a new connection with the same client id.
    SessionTakenOver {
        /// Device id.
        device: String,
        /// Client id.
        client_id: String,
    },
    /// A device was registered and a certificate issued.
    DeviceAdded {
        /// Device id.
        device: String,
        /// Its groups.
        groups: Vec<String>,
        /// Serial of the certificate issued.
        serial: String,
        /// Who asked.
        by: String,
    },
    /// A device's certificates were revoked.
    DeviceRevoked {
        /// Device id.
        device: String,
        /// Revoked serials.
        serials: Vec<String>,
        /// Reason given.
        reason: String,
        /// Who asked.
        by: String,
        /// Live connections closed because of it.
        sessions_closed: usize,
    },
    /// A live connection was closed by the control plane.
    SessionClosed {
        /// Device id.
        device: String,
        /// Client id.
        client_id: String,
        /// Why.
        reason: String,
    },
    /// A new policy was loaded and is in force.
    PolicyReloaded {
        /// Source file.
        source: String,
        /// Number of rules.
        rules: usize,
    },
    /// A new policy file was rejected; the last good one stays in force.
    PolicyRejected {
        /// Source file.
        source: String,
        /// Line-precise errors.
        error: String,
    },
    /// A one-time enrollment token was issued.
    EnrollmentTokenIssued {
        /// Device the token is for.
        device: String,
        /// Unix seconds.
        expires_at: i64,
        /// Who asked.
        by: String,
    },
    /// A device obtained a certificate through EST.
    DeviceEnrolled {
        /// Device id.
        device: String,
        /// Serial of the new certificate.
        serial: String,
        /// "token", "bootstrap" or "reenroll".
        method: &'static str,
        /// Whether this renewed an existing certificate.
        renewal: bool,
    },
    /// A supplier's manufacturing CA was registered for bootstrap enrollment.
    SupplierAdded {
        /// Supplier name.
        supplier: String,
        /// Who asked.
        by: String,
    },
    /// An EST request was refused.
    EnrollmentRefused {
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Device, when known.
        device: Option<String>,
        /// Why.
        reason: String,
    },
    /// An admin API request was refused.
    AdminDenied {
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Why.
        detail: String,
    },
    /// A session's message queue reached its limit (reported once until it drains).
    QueueFull {
        /// Device id.
        device: String,
        /// Client id.
        client_id: String,
        /// "rejected" (new messages refused) or "dropped_oldest".
        action: &'static str,
    },
    /// The durable store cannot write (a full disk, say): QoS 1/2 messages for persistent
    /// sessions are refused until it can.
    StorageUnavailable {
        /// The store's error.
        error: String,
    },
    /// The durable store writes again.
    StorageRecovered {
        /// How long it was unavailable, milliseconds.
        after_ms: u64,
    },
    /// Persistent sessions, queues and retained messages were restored on start.
    SessionsRestored {
        /// Sessions restored.
        sessions: usize,
        /// Queued messages restored.
        messages: usize,
        /// Retained messages restored.
        retained: usize,
        /// Sessions dropped because they expired while the broker was down.
        expired: usize,
    },
    /// A revoked device was brought back by an operator (explicitly).
    DeviceReactivated {
        /// Device id.
        device: String,
        /// Its groups before it was revoked.
        groups_before: Vec<String>,
        /// Its groups now.
        groups: Vec<String>,
        /// Who asked.
        by: String,
    },
    /// An existing device's groups were changed (by an enrollment token issued for that).
    DeviceGroupsChanged {
        /// Device id.
        device: String,
        /// Groups before.
        from: Vec<String>,
        /// Groups after.
        to: Vec<String>,
        /// Who or what changed them.
        by: String,
    },
    /// A device was quarantined (or a quarantine reason updated): it stays connected, confined
    /// to the quarantine policy.
    DeviceQuarantined {
        /// Device id.
        device: String,
        /// Who holds this reason: `operator`, `compliance:RULE`, `detector:NAME`.
        source: String,
        /// Why.
        reason: String,
        /// Who asked.
        by: String,
        /// Reasons holding now.
        reasons: usize,
    },
    /// Quarantine reasons were removed; the device is released once none remains.
    DeviceReleased {
        /// Device id.
        device: String,
        /// Sources whose reasons were removed.
        sources: Vec<String>,
        /// Sources still holding it (empty: released).
        remaining: Vec<String>,
        /// Who asked.
        by: String,
    },
}

/// An event with its time stamp.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// RFC 3339 UTC time.
    pub ts: String,
    /// The fact.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// Stamp `kind` with the current time.
    pub fn now(kind: EventKind) -> Event {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Event { ts, kind }
    }

    /// One JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"type\":\"unserializable\",\"error\":\"{e}\"}}"))
    }
}

/// The emitting side of the bus: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: mpsc::Sender<Event>,
    fanout: broadcast::Sender<Arc<Event>>,
    dropped: Arc<AtomicU64>,
    emitted: Arc<AtomicU64>,
}

/// Receives every event that made it onto the bus, in order, for the JSON log writer.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    fanout: broadcast::Sender<Arc<Event>>,
}

impl EventStream {
    /// Next event; forwards it to broadcast subscribers too. None when every bus handle is gone.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        let ev = Arc::new(self.rx.recv().await?);
        // No subscriber is fine: send only fails when nobody listens.
        let _ = self.fanout.send(Arc::clone(&ev));
        Some(ev)
    }

    /// The next event if one is already queued (lets a writer batch a burst into one write).
    pub fn try_next(&mut self) -> Option<Arc<Event>> {
        let ev = Arc::new(self.rx.try_recv().ok()?);
        let _ = self.fanout.send(Arc::clone(&ev));
        Some(ev)
    }
}

impl EventBus {
    /// A bus holding at most `capacity` undelivered events.
    pub fn new(capacity: usize) -> (EventBus, EventStream) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (fanout, _) = broadcast::channel(capacity.max(16));
        let bus = EventBus {
            tx,
            fanout: fanout.clone(),
            dropped: Arc::default(),
            emitted: Arc::default(),
        };
        (bus, EventStream { rx, fanout })
    }

    /// Emit an event. Never blocks: a full bus drops the event and counts it.
    pub fn emit(&self, kind: EventKind) {
        match self.tx.try_send(Event::now(kind)) {
            Ok(()) => {
                self.emitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Subscribe to events after the log writer has seen them (a slow subscriber lags and loses
    /// events; it never slows the writer).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.fanout.subscribe()
    }

    /// Events dropped because the bus was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events accepted onto the bus.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bus_drops_and_counts_instead_of_blocking() {
        let (bus, _stream) = EventBus::new(2);
        for _ in 0..5 {
            bus.emit(EventKind::SubscribeDenied {
                device: "d".into(),
                filter: "#".into(),
                quarantine: None,
            });
        }
        assert_eq!(bus.emitted(), 2);
        assert_eq!(bus.dropped(), 3);
    }

    #[test]
    fn events_serialize_as_one_json_line_with_type_tag() {
        let ev = Event::now(EventKind::PublishDenied {
            device: "pump-7".into(),
            topic: "a/b".into(),
            qos: 1,
            what: "publish",
            quarantine: None,
        });
        let line = ev.to_json();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "publish_denied");
        assert_eq!(v["device"], "pump-7");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }
}
