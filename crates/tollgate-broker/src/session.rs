//! Sessions: the state that outlives a connection, and the mailbox publishers deliver into.
//!
//! A [`Session`] is shared between the connection that owns it and every publisher whose
//! message matches one of its subscriptions. Publishers touch only the session's own mailbox
//! lock (never a lock shared by all connections), push a [`Delivery`] and wake the owner.
//!
//! Sessions live in memory; a persistent session's state is mirrored to the durable store
//! through [`crate::persist`] (see `connection.rs` for when each change is written).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_mqtt::{ByteString, Bytes, Publish, PublishProperties, QoS, ReasonCode, Will};

use crate::persist::{unix_ms, StoredMessage};
use crate::router::SubOpts;

/// A message as routed: shared by every subscriber it goes to (never copied per subscriber).
#[derive(Debug)]
pub(crate) struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// Properties to forward (topic alias and subscription identifiers stripped).
    pub props: PublishProperties,
    pub qos: QoS,
    pub retain: bool,
    pub expires_at: Option<Instant>,
    /// The same expiry on the wall clock (Unix ms), for the durable store.
    pub expires_at_ms: Option<i64>,
    /// Sequence number, unique per broker (keys durable queue entries).
    pub seq: u64,
    /// Session that published it (for no-local).
    pub from_session: u64,
    /// QoS 1 only: durable deliveries not yet acknowledged by their subscribers. When every
    /// persistent session has acknowledged the message, the publisher's PUBACK need not wait
    /// for the disk (the promise is kept: they all have it).
    pub unacked: std::sync::atomic::AtomicU32,
    /// The publisher's session, woken when `unacked` reaches 0.
    pub publisher: Option<std::sync::Weak<Session>>,
    /// Bytes it holds (topic, payload and properties), for queue limits.
    pub size: usize,
}

/// Approximate bytes held by forwarded properties.
pub(crate) fn props_size(p: &PublishProperties) -> usize {
    p.user_properties
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        + p.response_topic.as_ref().map_or(0, |t| t.len())
        + p.correlation_data.as_ref().map_or(0, |c| c.len())
        + p.content_type.as_ref().map_or(0, |c| c.len())
}

impl Message {
    pub fn size(&self) -> usize {
        self.size
    }

    /// The message as the durable store keeps it.
    pub fn stored(&self) -> Result<StoredMessage, tollgate_mqtt::EncodeError> {
        let p = Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            packet_id: u16::from(self.qos != QoS::AtMostOnce),
            payload: self.payload.clone(),
            properties: self.props.clone(),
        };
        StoredMessage::encode(&p, self.expires_at_ms)
    }

    /// A message read back from the store; `None` if it has expired.
    pub fn from_stored(seq: u64, p: Publish, expires_at_ms: Option<i64>) -> Option<Message> {
        let now_ms = unix_ms();
        let expires_at = match expires_at_ms {
            Some(t) if t <= now_ms => return None,
            Some(t) => Some(
                Instant::now()
                    + std::time::Duration::from_millis(u64::try_from(t - now_ms).unwrap_or(0)),
            ),
            None => None,
        };
        let size = p.topic.len() + p.payload.len() + props_size(&p.properties);
        Some(Message {
            topic: p.topic,
            payload: p.payload,
            props: p.properties,
            qos: p.qos,
            retain: p.retain,
            expires_at,
            expires_at_ms,
            seq,
            from_session: 0,
            unacked: std::sync::atomic::AtomicU32::new(0),
            publisher: None,
            size,
        })
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Mirrored in the durable store (a persistent session's QoS 1/2 message): every change
    /// to it is written there too.
    pub durable: bool,
    /// Not to be sent before the store's watermark reaches this ticket (0: at once).
    pub ready: u64,
    /// May have been sent before (recovered after a restart): send with DUP set.
    pub dup: bool,
}

/// Outgoing QoS 1/2 state for one packet id.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published(Delivery),
    /// PUBREL sent, waiting for PUBCOMP; the durable sequence number if the message is in the
    /// store.
    Released(Option<u64>),
}

/// Everything a persistent session keeps between connections.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// Filter as the client wrote it (including `$share/...`) -> options.
    pub subscriptions: HashMap<ByteString, SubOpts>,
    pub outbound: BTreeMap<u16, Outbound>,
    pub next_packet_id: u16,
    /// Incoming QoS 2 packet ids received but not yet released.
    pub inbound_qos2: HashSet<u16>,
    /// Seconds the session outlives its connection.
    pub expiry_interval: u32,
    /// Subscriptions suspended while the device is quarantined, restored on release (in memory
    /// only: a restart while quarantined forgets them).
    pub suspended: HashMap<ByteString, SubOpts>,
}

impl SessionState {
    /// Next free packet id, or None when all 65535 are in flight.
    pub fn alloc_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            if !self.outbound.contains_key(&self.next_packet_id) {
                return Some(self.next_packet_id);
            }
        }
        None
    }
}

/// Messages waiting for the connection.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    pub queue: VecDeque<Delivery>,
    pub bytes: usize,
    /// A queue-full event was emitted and the queue has not drained since.
    pub full_reported: bool,
}

/// What the control plane (or a newer connection) asks of a live connection.
#[derive(Debug)]
pub(crate) enum Control {
    /// Authorization inputs changed: re-check identity and subscriptions.
    Recheck,
    /// Close now with this reason (v5 DISCONNECT), without publishing the will.
    Close { code: ReasonCode, reason: String },
    /// A new connection takes this session over; reply once state is handed back.
    TakeOver(Handover),
}

/// A takeover request: what the new connection asks for, and where to say the old one is done.
#[derive(Debug)]
pub(crate) struct Handover {
    /// Told once the old connection has handed its state back (and published its will if due).
    pub ack: tokio::sync::oneshot::Sender<()>,
    /// The new connection starts clean (Clean Start = 1, 3.1.1 CleanSession = 1): the old
    /// session ends with the takeover, so a delayed will is due at once (MQTT 5 3.1.3.2.2).
    pub clean_start: bool,
}

/// A will waiting for its delay after the connection ended (MQTT 5 Will Delay Interval).
#[derive(Debug)]
pub(crate) struct PendingWill {
    pub will: Will,
    /// The serial of the certificate the connection used (the will is authorized against it).
    pub serial: String,
}

/// The live connection's control inbox: a queue and a wake-up, allocated only when used
/// (an idle fleet has thousands of these; a channel would cost a block of slots each).
#[derive(Debug, Default)]
pub(crate) struct ControlInbox {
    queue: Mutex<VecDeque<Control>>,
    notify: Notify,
}

impl ControlInbox {
    pub fn send(&self, c: Control) {
        self.queue.lock().push_back(c);
        self.notify.notify_one();
    }

    /// Next control message. Cancel-safe: nothing is taken from the queue until it is returned.
    pub async fn recv(&self) -> Control {
        loop {
            if let Some(c) = self.queue.lock().pop_front() {
                return c;
            }
            self.notify.notified().await;
        }
    }
}

/// A session, shared by its connection and its publishers.
pub(crate) struct Session {
    pub id: u64,
    pub key: Arc<str>,
    pub device_id: Arc<str>,
    pub client_id: Arc<str>,
    online: AtomicBool,
    /// Bumped on every attach; timers (will delay, expiry) act only if it has not moved.
    pub generation: AtomicU64,
    pub mailbox: Mutex<Mailbox>,
    pub notify: Notify,
    pub control: Mutex<Option<Arc<ControlInbox>>>,
    pub state: Mutex<Option<SessionState>>,
    /// Persistent (session expiry > 0): its state and QoS 1/2 messages are written to the store.
    pub durable: AtomicBool,
    /// Will-delay and expiry timers of the last disconnect; aborted when the session reattaches,
    /// so reconnect loops cannot pile them up.
    pub timers: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The will of the last connection while it waits for its delay: published by its timer,
    /// or at once when the session ends first (clean-start takeover, expiry), or dropped when
    /// the session resumes. Whoever takes it out publishes it, so it goes out at most once.
    pub pending_will: Mutex<Option<Box<PendingWill>>>,
    /// The live connection's meter and transport (read by the control plane; the meter is
    /// written only by the connection).
    pub live: Mutex<Option<LiveConnection>>,
}

/// What the control plane may read of a live connection.
#[derive(Debug, Clone)]
pub(crate) struct LiveConnection {
    pub meter: Arc<crate::meter::Meter>,
    pub transport: Option<Arc<dyn crate::TransportProbe>>,
    pub addr: Option<std::net::SocketAddr>,
    /// When it connected, Unix milliseconds.
    pub since_ms: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// QoS 0 to an offline session.
    Offline,
    /// Mailbox at its limit (and the policy is to refuse new messages).
    Full,
}

/// What a full queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueFull {
    /// Refuse the new message: MQTT 5 publishers get 0x97 (Quota exceeded).
    #[default]
    Reject,
    /// Drop the oldest queued messages to make room.
    DropOldest,
}

/// The outcome of queuing one delivery.
#[derive(Debug, Default)]
pub(crate) struct Queued {
    /// Durable sequence numbers evicted to make room (drop-oldest).
    pub evicted: Vec<u64>,
    /// Messages evicted in all.
    pub evicted_count: usize,
    /// The queue just became full (first time since it last drained).
    pub became_full: bool,
}

impl Session {
    pub fn new(id: u64, device_id: &str, client_id: &str) -> Session {
        Session {
            id,
            key: session_key(device_id, client_id),
            device_id: Arc::from(device_id),
            client_id: Arc::from(client_id),
            online: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            mailbox: Mutex::new(Mailbox::default()),
            notify: Notify::new(),
            control: Mutex::new(None),
            state: Mutex::new(Some(SessionState::default())),
            durable: AtomicBool::new(false),
            timers: Mutex::new(Vec::new()),
            pending_will: Mutex::new(None),
            live: Mutex::new(None),
        }
    }

    #[cfg(test)]
    pub fn new_for_test(id: u64) -> Session {
        Session::new(id, "d", &id.to_string())
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Queue a delivery, within the given bounds. Never blocks on anything but this session's
    /// own mailbox lock.
    pub fn deliver(
        &self,
        d: Delivery,
        max_msgs: usize,
        max_bytes: usize,
        when_full: QueueFull,
    ) -> Result<Queued, (Refused, bool)> {
        if d.qos == QoS::AtMostOnce && !self.is_online() {
            return Err((Refused::Offline, false));
        }
        let size = d.msg.size();
        let mut out = Queued::default();
        {
            let mut mb = self.mailbox.lock();
            let full = |mb: &Mailbox| {
                mb.queue.len() >= max_msgs || mb.bytes.saturating_add(size) > max_bytes
            };
            if full(&mb) {
                let first = !std::mem::replace(&mut mb.full_reported, true);
                if when_full == QueueFull::Reject || size > max_bytes {
                    return Err((Refused::Full, first));
                }
                out.became_full = first;
                while full(&mb) {
                    let Some(old) = mb.queue.pop_front() else {
                        break;
                    };
                    mb.bytes = mb.bytes.saturating_sub(old.msg.size());
                    out.evicted_count += 1;
                    if old.durable {
                        out.evicted.push(old.msg.seq);
                    }
                }
            } else if mb.full_reported && mb.queue.len() < max_msgs / 2 {
                mb.full_reported = false;
            }
            mb.bytes += size;
            mb.queue.push_back(d);
        }
        self.notify.notify_one();
        Ok(out)
    }

    /// Drop queued messages `keep` rejects. Returns the durable sequence numbers dropped.
    pub fn retain_queued(&self, mut keep: impl FnMut(&Delivery) -> bool) -> Vec<u64> {
        let mut mb = self.mailbox.lock();
        let mut bytes = 0;
        let mut dropped = Vec::new();
        mb.queue.retain(|d| {
            let k = keep(d);
            if k {
                bytes += d.msg.size();
            } else if d.durable {
                dropped.push(d.msg.seq);
            }
            k
        });
        mb.bytes = bytes;
        dropped
    }

    /// Cancel pending will and expiry timers (the session is back).
    pub fn cancel_timers(&self) {
        for t in self.timers.lock().drain(..) {
            t.abort();
        }
    }

    /// Put deliveries back at the front of the queue, in order.
    pub fn requeue_front(&self, ds: Vec<Delivery>) {
        let mut mb = self.mailbox.lock();
        for d in ds.into_iter().rev() {
            mb.bytes += d.msg.size();
            mb.queue.push_front(d);
        }
    }

    pub fn send_control(&self, c: Control) -> bool {
        let inbox = self.control.lock().clone();
        match inbox {
            Some(inbox) => {
                inbox.send(c);
                true
            }
            None => false,
        }
    }
}

/// Sessions are keyed by device and client id together, so no device can take over (or read)
/// another device's session by choosing its client id.
pub(crate) fn session_key(device_id: &str, client_id: &str) -> Arc<str> {
    Arc::from(format!("{device_id}\u{0}{client_id}"))
}
