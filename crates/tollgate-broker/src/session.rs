//! Sessions: the state that outlives a connection, and the mailbox publishers deliver into.
//!
//! A [`Session`] is shared between the connection that owns it and every publisher whose
//! message matches one of its subscriptions. Publishers touch only the session's own mailbox
//! lock (never a lock shared by all connections), push a [`Delivery`] and wake the owner.
//!
//! Sessions live in memory in this version. The seam for durability is this module: a durable
//! store persists `SessionState` changes and mailbox entries of persistent sessions.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_mqtt::{ByteString, Bytes, PublishProperties, QoS, ReasonCode};

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
    /// Session that published it (for no-local).
    pub from_session: u64,
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
}

/// Outgoing QoS 1/2 state for one packet id.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published(Delivery),
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
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
}

/// What the control plane (or a newer connection) asks of a live connection.
#[derive(Debug)]
pub(crate) enum Control {
    /// Authorization inputs changed: re-check identity and subscriptions.
    Recheck,
    /// Close now with this reason (v5 DISCONNECT), without publishing the will.
    Close { code: ReasonCode, reason: String },
    /// A new connection takes this session over; reply once state is handed back.
    TakeOver(tokio::sync::oneshot::Sender<()>),
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
    /// Will-delay and expiry timers of the last disconnect; aborted when the session reattaches,
    /// so reconnect loops cannot pile them up.
    pub timers: Mutex<Vec<tokio::task::AbortHandle>>,
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
    /// Mailbox at its limit.
    Full,
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
            timers: Mutex::new(Vec::new()),
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
    pub fn deliver(&self, d: Delivery, max_msgs: usize, max_bytes: usize) -> Result<(), Refused> {
        if d.qos == QoS::AtMostOnce && !self.is_online() {
            return Err(Refused::Offline);
        }
        let size = d.msg.size();
        {
            let mut mb = self.mailbox.lock();
            if mb.queue.len() >= max_msgs || mb.bytes.saturating_add(size) > max_bytes {
                return Err(Refused::Full);
            }
            mb.bytes += size;
            mb.queue.push_back(d);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Drop queued QoS 0 messages (on disconnect) and those `keep` rejects.
    pub fn retain_queued(&self, mut keep: impl FnMut(&Delivery) -> bool) {
        let mut mb = self.mailbox.lock();
        let mut bytes = 0;
        mb.queue.retain(|d| {
            let k = keep(d);
            if k {
                bytes += d.msg.size();
            }
            k
        });
        mb.bytes = bytes;
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
