//! Per-device meters: what each device did, counted on the per-message path at the cost of a
//! few relaxed atomic operations, and read off it by the control plane and the detectors.
//!
//! One [`Meter`] per device, shared by all of the device's live connections (found once, when a
//! connection is admitted, never per message). It holds cumulative counters, two bounded
//! distinct-count bitmaps (topics published, wildcard filters asked for) that the reader
//! resets, the mitigation throttle that the gate applies to the device's publishes, and the last
//! transport reading of each connection that closed since the last read.
//!
//! It also collects what each device was seen doing, for least-privilege policy suggestions:
//! every topic a connection publishes to (and whether retained) and every filter it subscribes
//! to, the first time that connection uses it ([`Observer`], the connection's own memory, no
//! lock), handed to the meter's small queue that the reader drains.
//!
//! It must not take a lock or allocate on the per-message path (a topic new to the connection
//! takes the meter's lock once), and it judges nothing: the detectors turn readings into
//! baselines and alerts, the control plane observations into suggestions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::TransportSample;

/// Words in a distinct-count bitmap (512 bits: counts up to a few thousand distinct values).
pub const SKETCH_WORDS: usize = 8;

/// A linear-counting bitmap, set with relaxed atomics: bit `hash % 512` for each value seen.
#[derive(Debug, Default)]
pub struct AtomicSketch([AtomicU64; SKETCH_WORDS]);

impl AtomicSketch {
    /// Record `value`. A bit already set costs one relaxed load (no write to a shared line).
    #[inline]
    pub fn insert(&self, value: &[u8]) {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::with_seed(0x7011_6a7e).hash_one(value);
        let bit = (h % (SKETCH_WORDS as u64 * 64)) as usize;
        if let Some(word) = self.0.get(bit / 64) {
            let mask = 1u64 << (bit % 64);
            if word.load(Ordering::Relaxed) & mask == 0 {
                word.fetch_or(mask, Ordering::Relaxed);
            }
        }
    }

    /// The bits set since the last take, cleared.
    pub fn take(&self) -> [u64; SKETCH_WORDS] {
        let mut out = [0u64; SKETCH_WORDS];
        for (o, w) in out.iter_mut().zip(&self.0) {
            *o = w.swap(0, Ordering::Relaxed);
        }
        out
    }
}

/// What a device was seen doing, for policy suggestions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenAction {
    /// Published (allowed) to the topic.
    Publish,
    /// Published with the retain flag (allowed).
    Retain,
    /// Subscribed (allowed) to the filter.
    Subscribe,
}

/// Distinct topics and filters one connection remembers having reported; beyond it the
/// connection stops reporting and says so ([`Drained::observations_overflowed`]).
pub const OBSERVED_PER_CONNECTION: usize = 1024;
/// Observations a meter holds between two drains.
pub const OBSERVED_PER_DRAIN: usize = 512;

/// One connection's memory of the topics and filters it already reported (hashes, in the
/// connection's own state: the per-message check is a hash-set lookup without a lock). Boxed,
/// and only once the connection publishes or subscribes: an idle connection pays one pointer.
#[derive(Debug, Default)]
pub struct Observer(Option<Box<Seen>>);

#[derive(Debug, Default)]
struct Seen {
    set: std::collections::HashSet<u64, foldhash::fast::FixedState>,
    full: bool,
}

impl Observer {
    /// Report `topic` for `action` to `meter` if this connection has not yet.
    #[inline]
    pub fn observe(&mut self, meter: &Meter, action: SeenAction, topic: &str) {
        use std::hash::BuildHasher;
        let me = self.0.get_or_insert_with(Box::default);
        if me.full {
            return;
        }
        let h = foldhash::fast::FixedState::with_seed(0x0b5e_7e55).hash_one((action as u8, topic));
        if me.set.contains(&h) {
            return;
        }
        if me.set.len() >= OBSERVED_PER_CONNECTION {
            me.full = true;
            meter.observations_overflowed.store(true, Ordering::Relaxed);
            return;
        }
        me.set.insert(h);
        let mut q = meter.observed.lock();
        if q.len() < OBSERVED_PER_DRAIN {
            q.push((action, Arc::from(topic)));
        } else {
            // Not reported: forget it so that a later use reports it again.
            me.set.remove(&h);
            meter.observations_overflowed.store(true, Ordering::Relaxed);
        }
    }
}

/// Numbers meters, so a reader can tell a device's new meter from its old one.
static NEXT_METER: AtomicU64 = AtomicU64::new(1);

/// One device's counters, written by its connections (relaxed atomics, no lock) and read by
/// [`crate::Broker::read_devices`].
#[derive(Debug)]
pub struct Meter {
    /// This meter's number (unique in the process).
    pub id: u64,
    /// PUBLISH packets received.
    pub messages_in: AtomicU64,
    /// Payload bytes received.
    pub bytes_in: AtomicU64,
    /// PUBLISH packets sent.
    pub messages_out: AtomicU64,
    /// Payload bytes sent.
    pub bytes_out: AtomicU64,
    /// Publishes refused by policy (wills and reports to another device's topic included).
    pub publish_denied: AtomicU64,
    /// Subscriptions refused by policy.
    pub subscribe_denied: AtomicU64,
    /// Subscription filters with a wildcard asked for, granted or not.
    pub wildcard_subscribes: AtomicU64,
    /// Publishes refused by a mitigation throttle.
    pub throttled: AtomicU64,
    /// Distinct topics published since the last read.
    pub topics: AtomicSketch,
    /// Distinct wildcard filters asked for since the last read.
    pub filters: AtomicSketch,
    /// Publishes per second allowed while throttled (0: not throttled).
    throttle_per_second: AtomicU32,
    /// Unix milliseconds at which the throttle lifts itself.
    throttle_until_ms: AtomicI64,
    /// The last transport reading of each connection that closed since the last read.
    closed: Mutex<Vec<(Arc<str>, TransportSample)>>,
    /// Topics and filters first used by one of its connections since the last drain.
    observed: Mutex<Vec<(SeenAction, Arc<str>)>>,
    /// Some were not recorded (a connection's or this queue's bound was reached).
    observations_overflowed: std::sync::atomic::AtomicBool,
}

/// A reading of a [`Meter`]: cumulative counters, and the distinct-count bitmaps and closed
/// connections' transport readings gathered since the previous reading.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct MeterReading {
    /// PUBLISH packets received.
    pub messages_in: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// PUBLISH packets sent.
    pub messages_out: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Publishes refused by policy.
    pub publish_denied: u64,
    /// Subscriptions refused by policy.
    pub subscribe_denied: u64,
    /// Wildcard subscription filters asked for.
    pub wildcard_subscribes: u64,
    /// Publishes refused by a mitigation throttle.
    pub throttled: u64,
}

impl MeterReading {
    /// Publishes and subscriptions refused by policy.
    pub fn denied(&self) -> u64 {
        self.publish_denied.saturating_add(self.subscribe_denied)
    }
}

/// What [`Meter::drain`] hands over besides the counters.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// Distinct topics published since the previous drain (bitmap).
    pub topics: [u64; SKETCH_WORDS],
    /// Distinct wildcard filters asked for since the previous drain (bitmap).
    pub filters: [u64; SKETCH_WORDS],
    /// Connections that closed since the previous drain: client id and last transport reading.
    pub closed: Vec<(Arc<str>, TransportSample)>,
    /// Topics published and filters subscribed to, each new to one of its connections.
    pub observed: Vec<(SeenAction, Arc<str>)>,
    /// Whether some were left out since the previous drain (bounds reached).
    pub observations_overflowed: bool,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            id: NEXT_METER.fetch_add(1, Ordering::Relaxed),
            messages_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            publish_denied: AtomicU64::new(0),
            subscribe_denied: AtomicU64::new(0),
            wildcard_subscribes: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            topics: AtomicSketch::default(),
            filters: AtomicSketch::default(),
            throttle_per_second: AtomicU32::new(0),
            throttle_until_ms: AtomicI64::new(0),
            closed: Mutex::new(Vec::new()),
            observed: Mutex::new(Vec::new()),
            observations_overflowed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Meter {
    /// The counters now (the bitmaps and closed connections are left for [`Meter::drain`]).
    pub fn read(&self) -> MeterReading {
        MeterReading {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            publish_denied: self.publish_denied.load(Ordering::Relaxed),
            subscribe_denied: self.subscribe_denied.load(Ordering::Relaxed),
            wildcard_subscribes: self.wildcard_subscribes.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }

    /// Take the bitmaps and the closed connections' readings gathered since the last drain
    /// (one reader, the detection sampler, should drain).
    pub fn drain(&self) -> Drained {
        Drained {
            topics: self.topics.take(),
            filters: self.filters.take(),
            closed: std::mem::take(&mut *self.closed.lock()),
            observed: std::mem::take(&mut *self.observed.lock()),
            observations_overflowed: self.observations_overflowed.swap(false, Ordering::Relaxed),
        }
    }

    #[inline]
    pub(crate) fn received(&self, topic: &str, payload: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(payload as u64, Ordering::Relaxed);
        self.topics.insert(topic.as_bytes());
    }

    #[inline]
    pub(crate) fn sent(&self, payload: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(payload as u64, Ordering::Relaxed);
    }

    pub(crate) fn subscribed(&self, filter: &str) {
        if filter.contains(['#', '+']) {
            self.wildcard_subscribes.fetch_add(1, Ordering::Relaxed);
            self.filters.insert(filter.as_bytes());
        }
    }

    pub(crate) fn connection_closed(&self, client_id: Arc<str>, last: TransportSample) {
        let mut closed = self.closed.lock();
        // Bounded: a reader that stopped draining must not let reconnect loops grow this.
        if closed.len() < 64 {
            closed.push((client_id, last));
        }
    }

    /// The throttle in force at `now_ms`: publishes per second, if any.
    #[inline]
    pub(crate) fn throttle(&self, now_ms: i64) -> Option<u32> {
        let rate = self.throttle_per_second.load(Ordering::Relaxed);
        if rate == 0 || self.throttle_until_ms.load(Ordering::Relaxed) <= now_ms {
            return None;
        }
        Some(rate)
    }

    /// Throttle the device's publishes to `per_second` until `until_ms` (0 per second lifts it).
    pub(crate) fn set_throttle(&self, per_second: u32, until_ms: i64) {
        self.throttle_until_ms.store(until_ms, Ordering::Relaxed);
        self.throttle_per_second
            .store(per_second, Ordering::Relaxed);
    }

    /// The throttle's rate and end, if one was set and has not ended by `now_ms`.
    pub fn throttle_state(&self, now_ms: i64) -> Option<(u32, i64)> {
        self.throttle(now_ms)
            .map(|r| (r, self.throttle_until_ms.load(Ordering::Relaxed)))
    }
}

/// Every device's meter, keyed by device id. Looked up when a connection is admitted (never per
/// message); a meter outlives its connections until a reader has seen it idle.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    map: Mutex<HashMap<Arc<str>, Arc<Meter>>>,
}

impl Meters {
    /// The meter of `device`, made on first use.
    pub fn of(&self, device: &Arc<str>) -> Arc<Meter> {
        Arc::clone(self.map.lock().entry(Arc::clone(device)).or_default())
    }

    /// Every meter, and forget those nobody else holds that are neither throttled nor hold
    /// unread closed-connection readings (their counters were read by this call, for the last
    /// time: a device that comes back starts from zero, which readers treat as a restart).
    pub fn all(&self, now_ms: i64) -> Vec<(Arc<str>, Arc<Meter>)> {
        let mut map = self.map.lock();
        let out: Vec<(Arc<str>, Arc<Meter>)> = map
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect();
        map.retain(|_, m| {
            Arc::strong_count(m) > 2 // the map, `out`, and someone else
                || m.throttle(now_ms).is_some()
                || !m.closed.lock().is_empty()
                || !m.observed.lock().is_empty()
        });
        out
    }
}

/// A per-connection token bucket for a device's throttle: `rate` publishes per second, with a
/// burst of one second's worth.
#[derive(Debug, Default)]
pub(crate) struct TokenBucket {
    tokens: f64,
    at_ms: i64,
    rate: u32,
}

impl TokenBucket {
    /// Take one token at `now_ms` for a throttle of `rate` per second; false when none is left.
    pub fn take(&mut self, rate: u32, now_ms: i64) -> bool {
        let cap = f64::from(rate.max(1));
        if self.rate != rate {
            // A new throttle starts with a full burst.
            self.rate = rate;
            self.tokens = cap;
            self.at_ms = now_ms;
        }
        let elapsed = (now_ms.saturating_sub(self.at_ms)).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(cap);
        self.at_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sketch_sets_one_bit_per_distinct_value_and_take_clears_it() {
        let s = AtomicSketch::default();
        for i in 0..50 {
            s.insert(format!("plant/line/{}", i % 10).as_bytes());
        }
        let bits: u32 = s.take().iter().map(|w| w.count_ones()).sum();
        assert!((8..=10).contains(&bits), "{bits} bits for 10 topics");
        assert_eq!(s.take(), [0; SKETCH_WORDS]);
    }

    #[test]
    fn a_token_bucket_allows_its_rate_and_refills() {
        let mut b = TokenBucket::default();
        let allowed = (0..100).filter(|_| b.take(5, 1_000)).count();
        assert_eq!(allowed, 5, "a burst of one second's worth");
        assert!(!b.take(5, 1_100));
        assert!(b.take(5, 1_300), "refilled 1.5 tokens in 300 ms");
    }

    #[test]
    fn a_throttle_lifts_itself_at_its_end() {
        let m = Meter::default();
        m.set_throttle(10, 5_000);
        assert_eq!(m.throttle(4_999), Some(10));
        assert_eq!(m.throttle(5_000), None);
    }

    #[test]
    fn an_idle_meter_is_forgotten_after_it_was_read_once_more() {
        let meters = Meters::default();
        let d: Arc<str> = Arc::from("dev-1");
        let held = meters.of(&d);
        assert_eq!(meters.all(0).len(), 1);
        assert_eq!(meters.all(0).len(), 1, "still held by a connection");
        drop(held);
        assert_eq!(meters.all(0).len(), 1, "read one last time");
        assert_eq!(meters.all(0).len(), 0);
    }
}
