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
//!
//! # Finding the messages a subscription matches
//!
//! The messages live in a sharded `DashMap` keyed by topic; beside it a trie of the *topics*
//! (one node per level, an immutable snapshot published through `arc-swap` like the router's)
//! lets a SUBSCRIBE find its retained messages without scanning them all
//! ([`RetainedStore::for_each_matching`]): a filter without wildcards is one map lookup, and a
//! wildcard filter walks only the branches it can match (`+` every child of one node, `#` one
//! subtree; neither enters a `$` topic at the first level). The trie changes only when a topic
//! gains its first retained message or loses it, under a writer mutex, with the map state
//! re-read inside the mutex so the two never disagree once the last change has synced. A
//! retained PUBLISH to a topic that already holds one (devices republishing their state) only
//! replaces the value in its map shard: no lock shared by all connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use parking_lot::Mutex;
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

/// One level of the topic trie: the topic that ends here (if one holds a retained message)
/// and the next levels. Persistent maps, so a new version shares all but the changed path.
#[derive(Clone, Default)]
struct TopicNode {
    children: imbl::GenericHashMap<
        Arc<str>,
        TopicNode,
        foldhash::fast::RandomState,
        imbl::shared_ptr::DefaultSharedPtr,
    >,
    topic: Option<ByteString>,
}

impl TopicNode {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.topic.is_none()
    }
}

/// Retained messages by topic, with their totals and each device's share, and the trie of
/// their topics.
#[derive(Default)]
pub(crate) struct RetainedStore {
    map: DashMap<ByteString, Retained>,
    bytes: AtomicUsize,
    per_device: DashMap<Arc<str>, Usage>,
    /// The topics that hold a retained message (eventually: see the module doc).
    topics: ArcSwap<TopicNode>,
    /// Serialises changes of `topics`.
    write: Mutex<()>,
}

impl std::fmt::Debug for RetainedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.map.len())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
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

    /// Call `f` with every retained message whose topic `filter` (a valid topic filter, without
    /// `$share/GROUP/`) matches. A filter without wildcards is one lookup; a wildcard filter
    /// walks only the trie branches it can match. Returns how many trie nodes were visited
    /// (what a test measures the walk by).
    pub fn for_each_matching(&self, filter: &str, mut f: impl FnMut(&Retained)) -> usize {
        if !filter.split('/').any(|l| l == "+" || l == "#") {
            if let Some(r) = self.map.get(filter) {
                f(r.value());
            }
            return 0;
        }
        let root = self.topics.load();
        let mut visited = 0;
        let mut found = |topic: &ByteString| {
            if let Some(r) = self.map.get(topic) {
                f(r.value());
            }
        };
        walk(&root, filter, true, &mut visited, &mut found);
        visited
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
        match self.map.insert(topic.clone(), Retained { msg, owner }) {
            Some(old) => self.uncount(&old),
            // A new topic: the only case that changes the trie.
            None => self.sync_topic(&topic),
        }
    }

    /// Clear `topic`; returns what it held.
    pub fn remove(&self, topic: &str) -> Option<Retained> {
        let (key, old) = self.map.remove(topic)?;
        self.uncount(&old);
        self.sync_topic(&key);
        Some(old)
    }

    /// Clear `topic` if what it holds satisfies `pred`.
    pub fn remove_if(&self, topic: &str, pred: impl FnOnce(&Retained) -> bool) {
        if let Some((key, old)) = self.map.remove_if(topic, |_, r| pred(r)) {
            self.uncount(&old);
            self.sync_topic(&key);
        }
    }

    /// Make the trie agree with the map about `topic` after the map gained or lost it. The map
    /// is read again under the writer mutex, so of racing inserts and removals of one topic the
    /// last to sync leaves the trie as the map is.
    fn sync_topic(&self, topic: &ByteString) {
        let _w = self.write.lock();
        let present = self.map.contains_key(topic);
        let current = self.topics.load();
        let mut root = TopicNode::clone(&current);
        let changed = if present {
            add_topic(&mut root, topic)
        } else {
            remove_topic(&mut root, &mut topic.split('/'))
        };
        if changed {
            self.topics.store(Arc::new(root));
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

/// Add `topic` to the trie; returns whether it was missing.
fn add_topic(root: &mut TopicNode, topic: &ByteString) -> bool {
    let mut node = root;
    for level in topic.split('/') {
        node = node.children.entry(Arc::from(level)).or_default();
    }
    if node.topic.is_some() {
        return false;
    }
    node.topic = Some(topic.clone());
    true
}

/// Remove the topic whose remaining levels are `levels`, pruning emptied nodes; returns
/// whether it was there.
fn remove_topic<'a>(node: &mut TopicNode, levels: &mut impl Iterator<Item = &'a str>) -> bool {
    match levels.next() {
        None => node.topic.take().is_some(),
        Some(level) => {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = remove_topic(child, levels);
            if removed && child.is_empty() {
                node.children.remove(level);
            }
            removed
        }
    }
}

/// Visit the topics under `node` that the rest of a filter (`rest`) matches. `first`: `node`
/// is the root, where wildcards do not enter `$` topics.
fn walk(
    node: &TopicNode,
    rest: &str,
    first: bool,
    visited: &mut usize,
    found: &mut impl FnMut(&ByteString),
) {
    *visited += 1;
    let (level, tail) = match rest.split_once('/') {
        Some((l, t)) => (l, Some(t)),
        None => (rest, None),
    };
    match level {
        "#" => {
            // `a/#` matches `a` too (never the root: no topic is empty).
            if let Some(t) = &node.topic {
                found(t);
            }
            for (name, child) in node.children.iter() {
                if !(first && name.starts_with('$')) {
                    subtree(child, visited, found);
                }
            }
        }
        "+" => {
            for (name, child) in node.children.iter() {
                if !(first && name.starts_with('$')) {
                    step(child, tail, visited, found);
                }
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                step(child, tail, visited, found);
            }
        }
    }
}

/// Continue at `child`, the node of the level just matched: the filter ends there, or goes on.
fn step(
    child: &TopicNode,
    tail: Option<&str>,
    visited: &mut usize,
    found: &mut impl FnMut(&ByteString),
) {
    match tail {
        Some(t) => walk(child, t, false, visited, found),
        None => {
            *visited += 1;
            if let Some(t) = &child.topic {
                found(t);
            }
        }
    }
}

/// Every topic in `node`'s subtree.
fn subtree(node: &TopicNode, visited: &mut usize, found: &mut impl FnMut(&ByteString)) {
    *visited += 1;
    if let Some(t) = &node.topic {
        found(t);
    }
    for child in node.children.values() {
        subtree(child, visited, found);
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

#[cfg(test)]
mod trie_tests {
    use super::*;
    use tollgate_mqtt::{Bytes, QoS};

    fn msg(topic: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: ByteString::from(topic),
            payload: Bytes::from_static(b"x"),
            props: Default::default(),
            qos: QoS::AtMostOnce,
            retain: true,
            expires_at: None,
            expires_at_ms: None,
            seq: 0,
            from_session: 0,
            unacked: Default::default(),
            publisher: None,
            size: topic.len() + 1,
        })
    }

    fn matching(s: &RetainedStore, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        s.for_each_matching(filter, |r| out.push(r.msg.topic.to_string()));
        out.sort();
        out
    }

    /// What a full scan with the MQTT matcher finds: the reference the trie must agree with.
    fn scanned(s: &RetainedStore, filter: &str) -> Vec<String> {
        let mut out: Vec<String> = s
            .map
            .iter()
            .filter(|e| tollgate_mqtt::topic::matches(filter, e.key()))
            .map(|e| e.key().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn wildcards_exact_filters_and_dollar_topics_agree_with_a_full_scan() {
        let s = RetainedStore::default();
        for t in [
            "a", "a/b", "a/b/c", "a//c", "/a", "b/b/c", "$SYS/x", "$SYS/x/y", "a/$x", "c",
        ] {
            s.insert(msg(t), None);
        }
        for f in [
            "#", "+", "a/#", "a/+", "a/+/c", "+/b/c", "/+", "+/+", "$SYS/#", "$SYS/+", "+/#", "a",
            "a/b", "a//c", "nope/#", "a/b/c/#", "+/$x", "/#",
        ] {
            assert_eq!(matching(&s, f), scanned(&s, f), "filter {f}");
        }
        assert_eq!(matching(&s, "#").len(), 8, "no $ topic under #");
        assert_eq!(
            matching(&s, "a/#"),
            vec!["a", "a/$x", "a//c", "a/b", "a/b/c"]
        );
    }

    #[test]
    fn clearing_prunes_the_trie_and_a_new_value_for_a_held_topic_keeps_it() {
        let s = RetainedStore::default();
        s.insert(msg("x/y/z"), None);
        s.insert(msg("x/y/z"), None);
        assert_eq!(matching(&s, "x/#"), vec!["x/y/z"]);
        assert!(s.remove("x/y/z").is_some());
        assert_eq!(matching(&s, "#"), Vec::<String>::new());
        assert!(s.topics.load().is_empty(), "emptied branches are pruned");
        s.insert(msg("x/y"), None);
        s.remove_if("x/y", |_| false);
        assert_eq!(matching(&s, "x/+"), vec!["x/y"]);
        s.remove_if("x/y", |_| true);
        assert_eq!(matching(&s, "x/+"), Vec::<String>::new());
    }

    /// A wildcard subscription walks only the branches it can match: 100,000 retained topics on
    /// other branches cost it nothing.
    #[test]
    fn a_wildcard_walk_visits_only_matching_branches() {
        let s = RetainedStore::default();
        for i in 0..100_000 {
            s.insert(msg(&format!("fleet/d{i}/state")), None);
        }
        for i in 0..5 {
            s.insert(msg(&format!("home/room{i}/temp")), None);
        }
        let mut got = 0;
        let visited = s.for_each_matching("home/+/temp", |_| got += 1);
        assert_eq!(got, 5);
        // root, home, five rooms and five temps: 12 nodes, whatever `fleet` holds.
        assert!(visited <= 12, "visited {visited} nodes");
        let visited = s.for_each_matching("home/#", |_| {});
        assert!(visited <= 12, "visited {visited} nodes");
        // An exact filter is one lookup.
        let mut exact = 0;
        assert_eq!(s.for_each_matching("fleet/d77/state", |_| exact += 1), 0);
        assert_eq!(exact, 1);
    }
}
