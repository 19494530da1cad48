//! The retained-message store, with its caps: how many messages, how many bytes in all, and how
//! many messages and bytes one device may own.
//!
//! Each retained message keeps the device that published it (its owner), so a device's share can
//! be counted; the owner is written to the durable store with the message, so the count survives
//! a restart. A retained PUBLISH that would go over a cap is refused as a whole (not routed, not
//! retained), as AWS IoT Core refuses a publish over its retained-message quota: a publisher
//! that can be told (MQTT 5, QoS 1/2) gets 0x97 Quota exceeded. Clearing (an empty payload) is
//! always allowed.
//!
//! The checks read counters that other publishers may change at the same moment, so the caps
//! can be overshot by at most one message per publisher racing past the check; they bound
//! memory, they are not a ledger. Only retained publishes touch this store: the per-message
//! path of ordinary messages never does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tollgate_mqtt::ByteString;

use crate::session::Message;

/// One retained message and the device that published it.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    pub msg: Arc<Message>,
    /// The publishing device (`None`: restored from a store written before owners were kept).
    pub owner: Option<Arc<str>>,
}

/// A device's share of the retained store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub count: usize,
    pub bytes: usize,
}

/// The caps a retained message is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_per_device: usize,
    pub max_bytes_per_device: usize,
}

/// Which cap a retained PUBLISH would have gone over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Messages(usize),
    Bytes(usize),
    DeviceMessages(usize),
    DeviceBytes(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Messages(n) => write!(f, "retained message quota exceeded ({n} messages)"),
            Refused::Bytes(n) => write!(f, "retained message quota exceeded ({n} bytes)"),
            Refused::DeviceMessages(n) => write!(
                f,
                "retained message quota exceeded ({n} messages per device)"
            ),
            Refused::DeviceBytes(n) => {
                write!(f, "retained message quota exceeded ({n} bytes per device)")
            }
        }
    }
}

/// Retained messages by topic, with their totals and each device's share.
#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    map: DashMap<ByteString, Retained>,
    bytes: AtomicUsize,
    per_device: DashMap<Arc<str>, Usage>,
}

impl RetainedStore {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes held (topic, payload and properties of every retained message).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A device's share.
    pub fn usage(&self, device: &str) -> Usage {
        self.per_device.get(device).map(|u| *u).unwrap_or_default()
    }

    pub fn iter(&self) -> dashmap::iter::Iter<'_, ByteString, Retained> {
        self.map.iter()
    }

    /// May `owner` retain `msg` (replacing what its topic holds)?
    pub fn check(
        &self,
        limits: &Limits,
        msg: &Message,
        owner: Option<&str>,
    ) -> Result<(), Refused> {
        let (old_size, old_mine) = match self.map.get(&msg.topic) {
            Some(old) => (
                Some(old.msg.size),
                old.owner.as_deref().is_some_and(|o| Some(o) == owner),
            ),
            None => (None, false),
        };
        if old_size.is_none() && self.map.len() >= limits.max_messages {
            return Err(Refused::Messages(limits.max_messages));
        }
        let total = self
            .bytes()
            .saturating_sub(old_size.unwrap_or(0))
            .saturating_add(msg.size);
        if total > limits.max_bytes {
            return Err(Refused::Bytes(limits.max_bytes));
        }
        if let Some(owner) = owner {
            let u = self.usage(owner);
            let (count, bytes) = if old_mine {
                (
                    u.count,
                    u.bytes
                        .saturating_sub(old_size.unwrap_or(0))
                        .saturating_add(msg.size),
                )
            } else {
                (u.count.saturating_add(1), u.bytes.saturating_add(msg.size))
            };
            if count > limits.max_per_device {
                return Err(Refused::DeviceMessages(limits.max_per_device));
            }
            if bytes > limits.max_bytes_per_device {
                return Err(Refused::DeviceBytes(limits.max_bytes_per_device));
            }
        }
        Ok(())
    }

    /// Retain `msg` for `owner`, replacing (and uncounting) what its topic held.
    pub fn insert(&self, msg: Arc<Message>, owner: Option<Arc<str>>) {
        let size = msg.size;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(o) = &owner {
            let mut u = self.per_device.entry(Arc::clone(o)).or_default();
            u.count += 1;
            u.bytes += size;
        }
        let topic = msg.topic.clone();
        if let Some(old) = self.map.insert(topic, Retained { msg, owner }) {
            self.uncount(&old);
        }
    }

    /// Clear `topic`; returns what it held.
    pub fn remove(&self, topic: &str) -> Option<Retained> {
        let (_, old) = self.map.remove(topic)?;
        self.uncount(&old);
        Some(old)
    }

    /// Clear `topic` if what it holds satisfies `pred`.
    pub fn remove_if(&self, topic: &str, pred: impl FnOnce(&Retained) -> bool) {
        if let Some((_, old)) = self.map.remove_if(topic, |_, r| pred(r)) {
            self.uncount(&old);
        }
    }

    fn uncount(&self, old: &Retained) {
        let size = old.msg.size;
        // Never below zero, whatever the interleaving.
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(size))
            });
        if let Some(o) = &old.owner {
            let empty = match self.per_device.get_mut(o) {
                Some(mut u) => {
                    u.count = u.count.saturating_sub(1);
                    u.bytes = u.bytes.saturating_sub(size);
                    u.count == 0
                }
                None => false,
            };
            if empty {
                self.per_device.remove_if(o, |_, u| u.count == 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_mqtt::{Bytes, QoS};

    fn msg(topic: &str, payload: usize) -> Arc<Message> {
        Arc::new(Message {
            topic: ByteString::from(topic),
            payload: Bytes::from(vec![b'x'; payload]),
            props: Default::default(),
            qos: QoS::AtLeastOnce,
            retain: true,
            expires_at: None,
            expires_at_ms: None,
            seq: 0,
            from_session: 0,
            unacked: Default::default(),
            publisher: None,
            size: topic.len() + payload,
        })
    }

    const LIMITS: Limits = Limits {
        max_messages: 4,
        max_bytes: 1000,
        max_per_device: 2,
        max_bytes_per_device: 500,
    };

    #[test]
    fn caps_count_total_bytes_and_each_devices_share() {
        let s = RetainedStore::default();
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        // Per-device bytes: 499 + 1 topic byte = 500 fits, one more byte does not.
        assert_eq!(s.check(&LIMITS, &msg("t", 499), Some("a")), Ok(()));
        assert_eq!(
            s.check(&LIMITS, &msg("t", 500), Some("a")),
            Err(Refused::DeviceBytes(500))
        );
        s.insert(msg("t", 99), Some(Arc::clone(&a)));
        s.insert(msg("u", 99), Some(Arc::clone(&a)));
        assert_eq!(
            s.usage("a"),
            Usage {
                count: 2,
                bytes: 200
            }
        );
        // A third topic of a's is over its count; replacing one of its own is not.
        assert_eq!(
            s.check(&LIMITS, &msg("v", 1), Some("a")),
            Err(Refused::DeviceMessages(2))
        );
        assert_eq!(s.check(&LIMITS, &msg("u", 300), Some("a")), Ok(()));
        // b takes over a's topic: the share moves.
        s.insert(msg("u", 9), Some(Arc::clone(&b)));
        assert_eq!(
            s.usage("a"),
            Usage {
                count: 1,
                bytes: 100
            }
        );
        assert_eq!(
            s.usage("b"),
            Usage {
                count: 1,
                bytes: 10
            }
        );
        assert_eq!(s.bytes(), 110);
        // Total bytes.
        s.insert(msg("w", 399), Some(Arc::clone(&b)));
        let c: Arc<str> = Arc::from("c");
        s.insert(msg("x", 399), Some(Arc::clone(&c)));
        assert_eq!(s.bytes(), 910);
        // c replacing its own 400 bytes with 500 fits its share but not the total.
        assert_eq!(
            s.check(&LIMITS, &msg("x", 499), Some("c")),
            Err(Refused::Bytes(1000))
        );
        // Total count (4 held).
        assert_eq!(
            s.check(&LIMITS, &msg("z", 1), None),
            Err(Refused::Messages(4))
        );
        // Clearing gives everything back.
        for t in ["t", "u", "w", "x"] {
            assert!(s.remove(t).is_some());
        }
        assert_eq!((s.len(), s.bytes()), (0, 0));
        assert_eq!(s.usage("a"), Usage::default());
        assert!(s.per_device.is_empty());
    }
}
