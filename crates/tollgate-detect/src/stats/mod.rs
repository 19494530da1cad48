//! Per-device statistics: a ring of time buckets per device, sliding-window values, baselines,
//! and the views the API serves.
//!
//! Owns what is remembered about each device and how it is summed. It must not judge anything
//! (that is [`crate::detectors`] and [`crate::rules`]) nor keep anything unbounded: a device
//! keeps at most `history` completed buckets plus the current one, the sketches of the buckets
//! its longest window needs, at most 256 denied topics per bucket, 64 source networks and 256
//! disconnect reasons.
//!
//! **Buckets.** Time is cut into buckets of width `bucket` aligned to multiples of the width
//! since the epoch (bucket index `⌊t / width⌋`). A bucket holds the counter deltas of the
//! samples taken in it (the delta between consecutive samples' cumulative counters; a device's
//! first sample only sets the reference; a decrease means the meter restarted and the new value
//! is the delta), the events observed in it (connects, disconnects by reason, takeovers,
//! refusals, denied publishes and subscriptions), the OR of the topic and filter sketches, the
//! TCP readings (sum and count of rtt for a mean; the increase of `bytes_retrans`, `bytes_sent`,
//! `segs_out` and `total_retrans` per connection, keyed by client id, a decrease meaning a new
//! connection; the largest `lost`), and whether a sample saw the device online. Buckets are
//! stored sparsely: a bucket in which nothing happened is not stored and counts as zero.
//!
//! **Sliding window.** The value of a counter at time `t` over a window `W` is the current,
//! partial bucket plus each earlier bucket weighted by the fraction of it inside `[t − W,
//! bucket start)`: complete buckets count whole, the oldest overlapping one by its overlap.
//! Rates are reported per minute: `value × 60 s / W`. A mean (rtt) is the weighted sum of the
//! readings over the weighted count; the retransmission ratio is the weighted retransmitted
//! bytes over the weighted sent bytes (segments when no bytes were counted). Distinct counts
//! merge the sketches of every bucket that overlaps the window.
//!
//! **Baselines.** Per device and metric, the median and MAD (see [`crate::baseline`]) of the
//! per-bucket value (per minute for counters) of the device's *completed, online* buckets in
//! history, leaving out buckets marked as overlapping an active alert on that metric (an attack
//! must not become the baseline), and, for a regular reporter, the buckets of a silence in
//! progress from its `messages_in` and `bytes_in` baselines (a silence must not be learnt
//! before `inactive` judges it). They are recomputed once per completed bucket, not per tick.
//! A device is *learning* while fewer than `learning_buckets` such buckets back its
//! `messages_in` baseline.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use serde::Serialize;

use crate::alert::Alert;
use crate::baseline::Baseline;
use crate::sketch::Sketch;
use crate::{Counters, DeviceId, DeviceInfo, LiveConn, Transport};

/// Denied topics remembered per device per bucket.
pub const MAX_DENIED_PER_BUCKET: usize = 256;
/// Source networks remembered per device (the least recently seen is forgotten first).
pub const MAX_SOURCES: usize = 64;
/// Disconnect-reason entries remembered per device.
pub const MAX_REASONS: usize = 256;
/// Live connections remembered per device.
pub const MAX_CONNS: usize = 64;

/// A metric rules can name (and detectors use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Messages published by the device.
    MessagesIn,
    /// Messages delivered to it.
    MessagesOut,
    /// Payload bytes published.
    BytesIn,
    /// Payload bytes delivered.
    BytesOut,
    /// Publishes denied (counter, including quarantine denials).
    PublishDenied,
    /// Subscriptions denied (counter).
    SubscribeDenied,
    /// Both.
    Denied,
    /// Publishes refused by a throttle.
    Throttled,
    /// Connections accepted.
    Connects,
    /// Connections ended.
    Disconnects,
    /// Session takeovers.
    Takeovers,
    /// Connections refused.
    Refusals,
    /// Distinct topics published.
    DistinctTopics,
    /// Distinct wildcard filters asked for.
    DistinctFilters,
    /// Mean smoothed round-trip time, ms.
    RttMs,
    /// Retransmitted / sent bytes.
    RetransRatio,
    /// The largest `lost` reading.
    Lost,
    /// Distinct addresses of the live connections now.
    SourceAddresses,
}

impl Metric {
    /// Every metric, in the order the documentation lists them.
    pub const RULE_METRICS: [Metric; 18] = [
        Metric::MessagesIn,
        Metric::MessagesOut,
        Metric::BytesIn,
        Metric::BytesOut,
        Metric::PublishDenied,
        Metric::SubscribeDenied,
        Metric::Denied,
        Metric::Throttled,
        Metric::Connects,
        Metric::Disconnects,
        Metric::Takeovers,
        Metric::Refusals,
        Metric::DistinctTopics,
        Metric::DistinctFilters,
        Metric::RttMs,
        Metric::RetransRatio,
        Metric::Lost,
        Metric::SourceAddresses,
    ];

    /// The name used in `detection.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::MessagesIn => "messages_in",
            Metric::MessagesOut => "messages_out",
            Metric::BytesIn => "bytes_in",
            Metric::BytesOut => "bytes_out",
            Metric::PublishDenied => "publish_denied",
            Metric::SubscribeDenied => "subscribe_denied",
            Metric::Denied => "denied",
            Metric::Throttled => "throttled",
            Metric::Connects => "connects",
            Metric::Disconnects => "disconnects",
            Metric::Takeovers => "takeovers",
            Metric::Refusals => "refusals",
            Metric::DistinctTopics => "distinct_topics",
            Metric::DistinctFilters => "distinct_filters",
            Metric::RttMs => "rtt_ms",
            Metric::RetransRatio => "retrans_ratio",
            Metric::Lost => "lost",
            Metric::SourceAddresses => "source_addresses",
        }
    }

    /// By name.
    pub fn parse(name: &str) -> Option<Metric> {
        Metric::RULE_METRICS.into_iter().find(|m| m.name() == name)
    }

    /// Whether it is a counter summed over a window (else a gauge: a mean, a maximum or a
    /// distinct count).
    pub fn is_counter(self) -> bool {
        !matches!(
            self,
            Metric::DistinctTopics
                | Metric::DistinctFilters
                | Metric::RttMs
                | Metric::RetransRatio
                | Metric::Lost
                | Metric::SourceAddresses
        )
    }

    /// Whether a per-bucket value (and so a baseline) exists.
    pub fn has_baseline(self) -> bool {
        self != Metric::SourceAddresses
    }

    /// The smallest effective sigma of its baseline (1 per minute for counts, 1 ms for rtt).
    pub fn sigma_floor(self) -> f64 {
        match self {
            Metric::RetransRatio => 0.001,
            _ => 1.0,
        }
    }

    /// Its bit in a bucket's exclusion mask.
    pub fn bit(self) -> u32 {
        1u32 << (self as u32)
    }
}

/// One bucket of one device.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    pub idx: i64,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub publish_denied: u32,
    pub subscribe_denied: u32,
    pub wildcard_subscribes: u32,
    pub throttled: u32,
    pub connects: u32,
    pub disconnects: u32,
    pub takeovers: u32,
    pub refusals: u32,
    /// Denied publishes and subscriptions observed, quarantine denials excluded.
    pub denied_obs: u32,
    pub rtt_sum_us: u64,
    pub rtt_n: u32,
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
    pub segs_out: u32,
    pub total_retrans: u32,
    pub lost_max: u32,
    pub topics_est: f32,
    pub filters_est: f32,
    pub online: bool,
    /// Metrics (bits of [`Metric::bit`]) whose baseline must leave this bucket out.
    pub excluded: u32,
}

fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Bucket {
    fn new(idx: i64) -> Bucket {
        Bucket {
            idx,
            ..Bucket::default()
        }
    }

    fn add_counters(&mut self, d: &Counters) {
        self.messages_in = self.messages_in.saturating_add(d.messages_in);
        self.bytes_in = self.bytes_in.saturating_add(d.bytes_in);
        self.messages_out = self.messages_out.saturating_add(d.messages_out);
        self.bytes_out = self.bytes_out.saturating_add(d.bytes_out);
        self.publish_denied = self.publish_denied.saturating_add(sat32(d.publish_denied));
        self.subscribe_denied = self
            .subscribe_denied
            .saturating_add(sat32(d.subscribe_denied));
        self.wildcard_subscribes = self
            .wildcard_subscribes
            .saturating_add(sat32(d.wildcard_subscribes));
        self.throttled = self.throttled.saturating_add(sat32(d.throttled));
    }

    /// The value of a counter metric in this bucket (0 for gauges).
    pub fn counter(&self, m: Metric) -> f64 {
        (match m {
            Metric::MessagesIn => self.messages_in,
            Metric::MessagesOut => self.messages_out,
            Metric::BytesIn => self.bytes_in,
            Metric::BytesOut => self.bytes_out,
            Metric::PublishDenied => u64::from(self.publish_denied),
            Metric::SubscribeDenied => u64::from(self.subscribe_denied),
            Metric::Denied => u64::from(self.publish_denied) + u64::from(self.subscribe_denied),
            Metric::Throttled => u64::from(self.throttled),
            Metric::Connects => u64::from(self.connects),
            Metric::Disconnects => u64::from(self.disconnects),
            Metric::Takeovers => u64::from(self.takeovers),
            Metric::Refusals => u64::from(self.refusals),
            _ => 0,
        }) as f64
    }

    /// The per-bucket value a baseline is made of: per minute for counters, the bucket's gauge
    /// otherwise; `None` when the bucket has no reading of it.
    pub fn baseline_value(&self, m: Metric, bucket_ms: i64) -> Option<f64> {
        if m.is_counter() {
            return Some(self.counter(m) * 60_000.0 / bucket_ms as f64);
        }
        match m {
            Metric::DistinctTopics => Some(f64::from(self.topics_est)),
            Metric::DistinctFilters => Some(f64::from(self.filters_est)),
            Metric::RttMs => self.rtt_ms(),
            Metric::RetransRatio => self.retrans_ratio(),
            Metric::Lost => Some(f64::from(self.lost_max)),
            _ => None,
        }
    }

    fn rtt_ms(&self) -> Option<f64> {
        (self.rtt_n > 0).then(|| self.rtt_sum_us as f64 / f64::from(self.rtt_n) / 1000.0)
    }

    fn retrans_ratio(&self) -> Option<f64> {
        ratio(
            self.bytes_retrans as f64,
            self.bytes_sent as f64,
            f64::from(self.total_retrans),
            f64::from(self.segs_out),
        )
    }
}

/// Retransmitted over sent bytes, or segments when no bytes were counted.
fn ratio(bytes_retrans: f64, bytes_sent: f64, retrans: f64, segs: f64) -> Option<f64> {
    if bytes_sent > 0.0 {
        Some(bytes_retrans / bytes_sent)
    } else if segs > 0.0 {
        Some(retrans / segs)
    } else {
        None
    }
}

/// A network a device connected from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceView {
    /// `a.b.c.0/24` or `x:y::/64`.
    pub network: String,
    /// First connection from it.
    pub first_seen_ms: i64,
    /// Latest connection from it.
    pub last_seen_ms: i64,
    /// Connections from it.
    pub connects: u64,
}

/// The network of an address at a prefix length, as text.
pub fn network_of(addr: IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    match addr {
        IpAddr::V4(a) => {
            let p = u32::from(v4_prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            format!("{}/{p}", std::net::Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let p = u32::from(v6_prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            format!("{}/{p}", std::net::Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// A denied topic or filter remembered for distinct counting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeniedEntry {
    pub idx: i64,
    pub hash: u64,
    /// A subscription filter with a wildcard.
    pub wildcard: bool,
}

/// Everything remembered about one device.
#[derive(Debug, Clone, Default)]
pub(crate) struct Device {
    pub id: DeviceId,
    pub info: DeviceInfo,
    /// `model:<m>` and `group:<g>` for each group.
    pub cohorts: Vec<String>,
    /// The engine's ids of `cohorts`.
    pub cohort_ids: Vec<usize>,
    /// The sample batch that last saw the device.
    pub seen_seq: u64,
    pub buckets: VecDeque<Bucket>,
    /// Topic and filter sketches of recent buckets.
    pub sketches: VecDeque<(i64, Sketch, Sketch)>,
    pub denied: VecDeque<DeniedEntry>,
    pub reasons: VecDeque<(i64, String)>,
    pub last_counters: Option<Counters>,
    pub conns: Vec<LiveConn>,
    /// Last TCP reading per client id.
    pub tcp: Vec<(String, Transport)>,
    pub latest_transport: Option<(Transport, i64)>,
    pub last_sample_ms: Option<i64>,
    /// When a sample last showed `messages_in` increase (or the first sample).
    pub last_message_ms: Option<i64>,
    pub first_connect_ms: Option<i64>,
    pub sources: Vec<SourceView>,
    /// Consecutive samples that showed live connections from two or more addresses.
    pub concurrent_samples: u32,
    /// New networks seen after learning, waiting for the next tick: (network, known before, at).
    pub new_sources: Vec<(String, usize, i64)>,
    pub baselines: Vec<(Metric, Baseline)>,
    /// The current bucket index when the baselines were computed (`None`: recompute).
    pub baselines_at: Option<i64>,
}

impl Device {
    pub fn new(id: &str) -> Device {
        Device {
            id: id.to_owned(),
            ..Device::default()
        }
    }

    pub fn set_info(&mut self, info: DeviceInfo) {
        let mut cohorts = Vec::with_capacity(info.groups.len() + 1);
        if let Some(m) = &info.model {
            cohorts.push(format!("model:{m}"));
        }
        for g in &info.groups {
            let c = format!("group:{g}");
            if !cohorts.contains(&c) {
                cohorts.push(c);
            }
        }
        self.cohorts = cohorts;
        self.info = info;
    }

    pub fn online(&self) -> bool {
        !self.conns.is_empty()
    }

    /// Apply `f` to the bucket `idx`, created if needed (buckets are kept in index order; a
    /// late event for a completed bucket makes the baselines recompute).
    pub fn with_bucket(&mut self, idx: i64, f: impl FnOnce(&mut Bucket)) {
        let pos = match self.buckets.binary_search_by_key(&idx, |b| b.idx) {
            Ok(p) => p,
            Err(p) => {
                self.buckets.insert(p, Bucket::new(idx));
                p
            }
        };
        if pos + 1 < self.buckets.len() {
            self.baselines_at = None;
        }
        if let Some(b) = self.buckets.get_mut(pos) {
            f(b);
        }
    }

    /// Forget what is older than what the engine keeps.
    pub fn prune(&mut self, cur: i64, keep: &Keep) {
        let oldest = cur.saturating_sub(keep.history as i64);
        while self.buckets.front().is_some_and(|b| b.idx < oldest) {
            self.buckets.pop_front();
        }
        let oldest_sketch = cur.saturating_sub(keep.sketch_buckets);
        while self.sketches.front().is_some_and(|s| s.0 < oldest_sketch) {
            self.sketches.pop_front();
        }
        while self.denied.front().is_some_and(|d| d.idx < oldest_sketch) {
            self.denied.pop_front();
        }
        while self.reasons.front().is_some_and(|r| r.0 < oldest) {
            self.reasons.pop_front();
        }
    }

    /// Record a sample. `restarted`: the counters began again from zero since the previous
    /// sample; `closed`: connections that closed since, with their last TCP reading.
    #[allow(clippy::too_many_arguments)]
    pub fn record_sample(
        &mut self,
        idx: i64,
        now_ms: i64,
        counters: Counters,
        restarted: bool,
        topics: &Sketch,
        filters: &Sketch,
        conns: Vec<LiveConn>,
        closed: &[(String, Transport)],
    ) {
        let delta = match self.last_counters {
            Some(_) if restarted => Some(counters),
            Some(prev) => Some(counters.delta_since(&prev)),
            None => None,
        };
        self.last_counters = Some(counters);
        match delta {
            Some(d) if d.messages_in > 0 => self.last_message_ms = Some(now_ms),
            None => self.last_message_ms = self.last_message_ms.or(Some(now_ms)),
            _ => {}
        }
        self.last_sample_ms = Some(now_ms);
        // TCP deltas per connection.
        let mut tcp_delta = (0u64, 0u64, 0u64, 0u64, 0u64, 0u32, 0u32);
        let mut tcp_next: Vec<(String, Transport)> = Vec::new();
        let mut latest: Option<Transport> = None;
        // Closed connections first: their final reading counts against their previous one,
        // and they are then forgotten.
        let finals = closed
            .iter()
            .take(MAX_CONNS)
            .map(|(id, t)| (id.as_str(), Some(*t), false));
        let live = conns
            .iter()
            .take(MAX_CONNS)
            .map(|c| (c.client_id.as_str(), c.transport, true));
        for (client_id, t, is_live) in finals.chain(live) {
            let Some(t) = t else { continue };
            let prev = self
                .tcp
                .iter()
                .find(|(id, _)| id == client_id)
                .map(|(_, p)| *p);
            let restarted = prev.is_none_or(|p| {
                t.bytes_sent < p.bytes_sent
                    || t.bytes_retrans < p.bytes_retrans
                    || t.segs_out < p.segs_out
                    || t.total_retrans < p.total_retrans
            });
            let base = if restarted {
                Transport::default()
            } else {
                prev.unwrap_or_default()
            };
            tcp_delta.0 = tcp_delta.0.saturating_add(t.bytes_sent - base.bytes_sent);
            tcp_delta.1 = tcp_delta
                .1
                .saturating_add(t.bytes_retrans - base.bytes_retrans);
            tcp_delta.2 = tcp_delta
                .2
                .saturating_add(u64::from(t.segs_out - base.segs_out));
            tcp_delta.3 = tcp_delta
                .3
                .saturating_add(u64::from(t.total_retrans - base.total_retrans));
            tcp_delta.4 = tcp_delta.4.saturating_add(u64::from(t.rtt_us));
            tcp_delta.5 = tcp_delta.5.saturating_add(1);
            tcp_delta.6 = tcp_delta.6.max(t.lost);
            if is_live {
                tcp_next.push((client_id.to_owned(), t));
                latest = Some(t);
            } else {
                // A live connection of the same client id that opened since starts afresh.
                self.tcp.retain(|(id, _)| id != client_id);
            }
        }
        self.tcp = tcp_next;
        if let Some(t) = latest {
            self.latest_transport = Some((t, now_ms));
        }
        let online = !conns.is_empty();
        let mut conns = conns;
        conns.truncate(MAX_CONNS);
        self.conns = conns;
        if self.live_addresses().len() >= 2 {
            self.concurrent_samples = self.concurrent_samples.saturating_add(1);
        } else {
            self.concurrent_samples = 0;
        }
        // Sketches of the bucket.
        if !topics.is_empty() || !filters.is_empty() {
            match self.sketches.iter_mut().rev().find(|s| s.0 == idx) {
                Some(s) => {
                    s.1.merge(topics);
                    s.2.merge(filters);
                }
                None => {
                    let pos = self
                        .sketches
                        .iter()
                        .rposition(|s| s.0 < idx)
                        .map_or(0, |p| p + 1);
                    self.sketches.insert(pos, (idx, *topics, *filters));
                }
            }
        }
        let merged = self
            .sketches
            .iter()
            .rev()
            .find(|s| s.0 == idx)
            .map(|s| (s.1.estimate() as f32, s.2.estimate() as f32));
        self.with_bucket(idx, |b| {
            if let Some(d) = delta {
                b.add_counters(&d);
            }
            if let Some((t, f)) = merged {
                b.topics_est = t;
                b.filters_est = f;
            }
            b.online |= online;
            b.bytes_sent = b.bytes_sent.saturating_add(tcp_delta.0);
            b.bytes_retrans = b.bytes_retrans.saturating_add(tcp_delta.1);
            b.segs_out = b.segs_out.saturating_add(sat32(tcp_delta.2));
            b.total_retrans = b.total_retrans.saturating_add(sat32(tcp_delta.3));
            b.rtt_sum_us = b.rtt_sum_us.saturating_add(tcp_delta.4);
            b.rtt_n = b.rtt_n.saturating_add(tcp_delta.5);
            b.lost_max = b.lost_max.max(tcp_delta.6);
        });
    }

    /// Remember a denied topic or filter (bounded per bucket).
    pub fn record_denied(&mut self, idx: i64, hash: u64, wildcard: bool) {
        let in_bucket = self
            .denied
            .iter()
            .rev()
            .take_while(|d| d.idx == idx)
            .count();
        if in_bucket >= MAX_DENIED_PER_BUCKET {
            return;
        }
        if self
            .denied
            .iter()
            .rev()
            .take_while(|d| d.idx == idx)
            .any(|d| d.hash == hash)
        {
            return;
        }
        let pos = self
            .denied
            .iter()
            .rposition(|d| d.idx <= idx)
            .map_or(0, |p| p + 1);
        self.denied.insert(
            pos,
            DeniedEntry {
                idx,
                hash,
                wildcard,
            },
        );
    }

    pub fn record_reason(&mut self, idx: i64, reason: &str) {
        if self.reasons.len() >= MAX_REASONS {
            self.reasons.pop_front();
        }
        let reason: String = reason.chars().take(128).collect();
        self.reasons.push_back((idx, reason));
    }

    /// Weighted sum of `f` over the window `[now − w, now)` (see the module docs).
    pub fn window_sum(&self, now: i64, w: i64, bucket_ms: i64, f: impl Fn(&Bucket) -> f64) -> f64 {
        let cur = now.div_euclid(bucket_ms);
        let cur_start = cur.saturating_mul(bucket_ms);
        let t0 = now.saturating_sub(w);
        let mut sum = 0.0;
        for b in self.buckets.iter().rev() {
            if b.idx > cur {
                continue;
            }
            if b.idx == cur {
                sum += f(b);
                continue;
            }
            let s = b.idx.saturating_mul(bucket_ms);
            let e = s.saturating_add(bucket_ms).min(cur_start);
            if e <= t0 {
                break;
            }
            let overlap = e - s.max(t0);
            if overlap > 0 {
                sum += f(b) * overlap as f64 / bucket_ms as f64;
            }
        }
        sum
    }

    /// Buckets overlapping the window, newest first (unweighted).
    fn window_buckets(&self, now: i64, w: i64, bucket_ms: i64) -> impl Iterator<Item = &Bucket> {
        let cur = now.div_euclid(bucket_ms);
        let first = now.saturating_sub(w).div_euclid(bucket_ms);
        self.buckets
            .iter()
            .rev()
            .skip_while(move |b| b.idx > cur)
            .take_while(move |b| b.idx >= first)
    }

    /// Merged topic and filter sketches over the window.
    pub fn window_sketches(&self, now: i64, w: i64, bucket_ms: i64) -> (Sketch, Sketch) {
        let cur = now.div_euclid(bucket_ms);
        let first = now.saturating_sub(w).div_euclid(bucket_ms);
        let mut t = Sketch::EMPTY;
        let mut f = Sketch::EMPTY;
        for s in self.sketches.iter().rev() {
            if s.0 > cur {
                continue;
            }
            if s.0 < first {
                break;
            }
            t.merge(&s.1);
            f.merge(&s.2);
        }
        (t, f)
    }

    /// Distinct denied topics and filters, and distinct denied wildcard filters, over the window.
    pub fn window_denied_distinct(&self, now: i64, w: i64, bucket_ms: i64) -> (usize, usize) {
        if self.denied.is_empty() {
            return (0, 0);
        }
        let cur = now.div_euclid(bucket_ms);
        let first = now.saturating_sub(w).div_euclid(bucket_ms);
        let mut all: Vec<(u64, bool)> = self
            .denied
            .iter()
            .filter(|d| d.idx >= first && d.idx <= cur)
            .map(|d| (d.hash, d.wildcard))
            .collect();
        all.sort_unstable();
        all.dedup();
        let wild = all.iter().filter(|d| d.1).count();
        all.dedup_by_key(|d| d.0);
        (all.len(), wild)
    }

    /// Weighted mean rtt (ms) over the window.
    pub fn window_rtt_ms(&self, now: i64, w: i64, bucket_ms: i64) -> Option<f64> {
        let n = self.window_sum(now, w, bucket_ms, |b| f64::from(b.rtt_n));
        if n <= 0.0 {
            return None;
        }
        let sum = self.window_sum(now, w, bucket_ms, |b| b.rtt_sum_us as f64);
        Some(sum / n / 1000.0)
    }

    /// Retransmission ratio and segments sent over the window.
    pub fn window_retrans(&self, now: i64, w: i64, bucket_ms: i64) -> (Option<f64>, f64) {
        let sent = self.window_sum(now, w, bucket_ms, |b| b.bytes_sent as f64);
        let retrans = self.window_sum(now, w, bucket_ms, |b| b.bytes_retrans as f64);
        let segs = self.window_sum(now, w, bucket_ms, |b| f64::from(b.segs_out));
        let seg_retrans = self.window_sum(now, w, bucket_ms, |b| f64::from(b.total_retrans));
        (ratio(retrans, sent, seg_retrans, segs), segs)
    }

    /// Distinct addresses of the live connections.
    /// The addresses of the device's live connections, leaving out stale ones (nothing
    /// received for [`crate::STALE_CONNECTION_MS`]).
    pub fn live_addresses(&self) -> Vec<IpAddr> {
        let mut a: Vec<IpAddr> = self
            .conns
            .iter()
            .filter(|c| {
                c.transport
                    .is_none_or(|t| t.last_recv_ms < crate::STALE_CONNECTION_MS)
            })
            .filter_map(|c| c.addr)
            .collect();
        a.sort_unstable();
        a.dedup();
        a
    }

    /// The value of a metric over a window, as rules compare it: counters summed (per
    /// window), gauges as documented on [`Metric`]; `None` when there is no reading.
    pub fn metric_value(&self, m: Metric, now: i64, w: i64, bucket_ms: i64) -> Option<f64> {
        if m.is_counter() {
            return Some(self.window_sum(now, w, bucket_ms, |b| b.counter(m)));
        }
        match m {
            Metric::DistinctTopics => Some(self.window_sketches(now, w, bucket_ms).0.estimate()),
            Metric::DistinctFilters => {
                let f = self.window_sketches(now, w, bucket_ms).1.estimate();
                let (_, wild) = self.window_denied_distinct(now, w, bucket_ms);
                Some(f.max(wild as f64))
            }
            Metric::RttMs => self.window_rtt_ms(now, w, bucket_ms),
            Metric::RetransRatio => self.window_retrans(now, w, bucket_ms).0,
            Metric::Lost => Some(
                self.window_buckets(now, w, bucket_ms)
                    .map(|b| f64::from(b.lost_max))
                    .fold(0.0, f64::max),
            ),
            Metric::SourceAddresses => Some(self.live_addresses().len() as f64),
            _ => None,
        }
    }

    /// Recompute the baselines of `metrics` from completed buckets before `cur`, if the current
    /// bucket changed since they were computed. `scratch` is reused across devices.
    /// `learning_buckets` decides whether the device is a regular reporter (see below).
    pub fn refresh_baselines(
        &mut self,
        cur: i64,
        bucket_ms: i64,
        learning_buckets: usize,
        metrics: &[Metric],
        scratch: &mut Vec<f64>,
    ) {
        if self.baselines_at == Some(cur) {
            return;
        }
        self.baselines_at = Some(cur);
        // A regular reporter's silence in progress is left out of its publishing baselines:
        // the inactive detector judges the silence against the rate from before it, and the
        // silent buckets must not drag the baseline down until the reports still inside the
        // window look like a spike. When the device reports again they count, unless an
        // inactive alert marked them.
        let regular = self
            .baseline(Metric::MessagesIn)
            .is_some_and(|b| b.ready(learning_buckets) && b.median >= 1.0);
        let silent_after = self
            .last_message_ms
            .filter(|_| regular)
            .map(|t| t.div_euclid(bucket_ms));
        self.baselines.clear();
        for &m in metrics {
            scratch.clear();
            let publishing = matches!(m, Metric::MessagesIn | Metric::BytesIn);
            for b in &self.buckets {
                if b.idx >= cur || !b.online || b.excluded & m.bit() != 0 {
                    continue;
                }
                if publishing && silent_after.is_some_and(|s| b.idx > s) {
                    continue;
                }
                if let Some(v) = b.baseline_value(m, bucket_ms) {
                    if v.is_finite() {
                        scratch.push(v);
                    }
                }
            }
            self.baselines.push((m, Baseline::from_values(scratch)));
        }
    }

    pub fn baseline(&self, m: Metric) -> Option<&Baseline> {
        self.baselines.iter().find(|(x, _)| *x == m).map(|(_, b)| b)
    }

    /// Online completed buckets backing the `messages_in` baseline.
    pub fn baseline_buckets(&self) -> usize {
        self.baseline(Metric::MessagesIn).map_or(0, |b| b.samples)
    }

    /// Mark the buckets overlapping `[from, to]` as not to be used by the baselines of `mask`.
    pub fn exclude(&mut self, from_ms: i64, to_ms: i64, bucket_ms: i64, mask: u32) {
        let first = from_ms.div_euclid(bucket_ms);
        let last = to_ms.div_euclid(bucket_ms);
        let mut changed = false;
        for b in self.buckets.iter_mut().rev() {
            if b.idx < first {
                break;
            }
            if b.idx <= last && b.excluded & mask != mask {
                b.excluded |= mask;
                changed = true;
            }
        }
        if changed {
            self.baselines_at = None;
        }
    }

    pub fn rates(&self, now: i64, w: i64, bucket_ms: i64) -> Rates {
        let per_min = 60_000.0 / w as f64;
        let s = |m: Metric| self.window_sum(now, w, bucket_ms, |b| b.counter(m));
        Rates {
            messages_in_per_min: s(Metric::MessagesIn) * per_min,
            bytes_in_per_min: s(Metric::BytesIn) * per_min,
            messages_out_per_min: s(Metric::MessagesOut) * per_min,
            bytes_out_per_min: s(Metric::BytesOut) * per_min,
            denied_per_min: s(Metric::Denied) * per_min,
            connects: s(Metric::Connects),
            distinct_topics: self.window_sketches(now, w, bucket_ms).0.estimate(),
        }
    }

    pub fn bucket_view(b: &Bucket, bucket_ms: i64) -> BucketView {
        BucketView {
            start_ms: b.idx.saturating_mul(bucket_ms),
            online: b.online,
            messages_in: b.messages_in,
            bytes_in: b.bytes_in,
            messages_out: b.messages_out,
            bytes_out: b.bytes_out,
            publish_denied: u64::from(b.publish_denied),
            subscribe_denied: u64::from(b.subscribe_denied),
            wildcard_subscribes: u64::from(b.wildcard_subscribes),
            throttled: u64::from(b.throttled),
            connects: u64::from(b.connects),
            disconnects: u64::from(b.disconnects),
            takeovers: u64::from(b.takeovers),
            refusals: u64::from(b.refusals),
            denied_events: u64::from(b.denied_obs),
            distinct_topics: f64::from(b.topics_est),
            distinct_filters: f64::from(b.filters_est),
            rtt_ms: b.rtt_ms(),
            retrans_ratio: b.retrans_ratio(),
            rtt_readings: u64::from(b.rtt_n),
            bytes_sent: b.bytes_sent,
            bytes_retrans: b.bytes_retrans,
        }
    }

    pub fn stats(
        &self,
        now: i64,
        cfg: &crate::config::EngineConfig,
        alerts: Vec<Alert>,
    ) -> DeviceStats {
        let bucket_ms = cfg.bucket_ms;
        let w = cfg.window_ms;
        let hour_start = now.saturating_sub(3_600_000);
        let buckets: Vec<BucketView> = self
            .buckets
            .iter()
            .filter(|b| b.idx.saturating_add(1).saturating_mul(bucket_ms) > hour_start)
            .map(|b| Device::bucket_view(b, bucket_ms))
            .collect();
        let first_idx = hour_start.div_euclid(bucket_ms);
        let mut disconnect_reasons = BTreeMap::new();
        for (idx, r) in &self.reasons {
            if *idx >= first_idx {
                *disconnect_reasons.entry(r.clone()).or_insert(0u64) += 1;
            }
        }
        let transport = self.latest_transport.map(|(t, at)| TransportView {
            rtt_ms: f64::from(t.rtt_us) / 1000.0,
            rttvar_ms: f64::from(t.rttvar_us) / 1000.0,
            min_rtt_ms: f64::from(t.min_rtt_us) / 1000.0,
            retrans_ratio: self.window_retrans(now, w, bucket_ms).0,
            lost: t.lost,
            delivery_rate: t.delivery_rate,
            sampled_at_ms: at,
        });
        let needed = cfg.learning_buckets;
        DeviceStats {
            device: self.id.clone(),
            learning: self.baseline_buckets() < needed,
            baseline_buckets: self.baseline_buckets(),
            baseline_needed: needed,
            online: self.online(),
            connections: self.conns.len(),
            rates: self.rates(now, w, bucket_ms),
            transport,
            baseline: self
                .baselines
                .iter()
                .map(|(m, b)| BaselineView {
                    metric: m.name().to_owned(),
                    median: b.median,
                    mad: b.mad,
                    samples: b.samples,
                })
                .collect(),
            buckets,
            disconnect_reasons,
            sources: self.sources.clone(),
            alerts,
        }
    }
}

/// What the engine keeps per device, derived from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keep {
    pub history: usize,
    /// Buckets of sketches and denied topics kept (the longest window that needs them).
    pub sketch_buckets: i64,
}

/// Rates over the evaluation window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Messages published per minute.
    pub messages_in_per_min: f64,
    /// Bytes published per minute.
    pub bytes_in_per_min: f64,
    /// Messages delivered per minute.
    pub messages_out_per_min: f64,
    /// Bytes delivered per minute.
    pub bytes_out_per_min: f64,
    /// Publishes and subscriptions denied per minute.
    pub denied_per_min: f64,
    /// Connections in the window.
    pub connects: f64,
    /// Distinct topics in the window (estimate).
    pub distinct_topics: f64,
}

impl Rates {
    pub(crate) fn add(&mut self, o: &Rates) {
        self.messages_in_per_min += o.messages_in_per_min;
        self.bytes_in_per_min += o.bytes_in_per_min;
        self.messages_out_per_min += o.messages_out_per_min;
        self.bytes_out_per_min += o.bytes_out_per_min;
        self.denied_per_min += o.denied_per_min;
        self.connects += o.connects;
        self.distinct_topics += o.distinct_topics;
    }
}

/// The latest TCP reading of a device.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TransportView {
    /// Smoothed rtt, ms.
    pub rtt_ms: f64,
    /// Its variance, ms.
    pub rttvar_ms: f64,
    /// Smallest rtt, ms.
    pub min_rtt_ms: f64,
    /// Retransmitted/sent bytes over the window (segments when no bytes were counted).
    pub retrans_ratio: Option<f64>,
    /// Segments considered lost.
    pub lost: u32,
    /// Bytes per second.
    pub delivery_rate: u64,
    /// When it was read.
    pub sampled_at_ms: i64,
}

/// One metric's baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineView {
    /// Metric name (per minute for counters).
    pub metric: String,
    /// Median.
    pub median: f64,
    /// Median absolute deviation.
    pub mad: f64,
    /// Buckets behind it.
    pub samples: usize,
}

/// One bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BucketView {
    /// Start, Unix ms.
    pub start_ms: i64,
    /// A sample saw the device online (fleet: devices online).
    pub online: bool,
    /// Counter deltas.
    pub messages_in: u64,
    /// Counter delta.
    pub bytes_in: u64,
    /// Counter delta.
    pub messages_out: u64,
    /// Counter delta.
    pub bytes_out: u64,
    /// Counter delta.
    pub publish_denied: u64,
    /// Counter delta.
    pub subscribe_denied: u64,
    /// Counter delta.
    pub wildcard_subscribes: u64,
    /// Counter delta.
    pub throttled: u64,
    /// Connections observed.
    pub connects: u64,
    /// Disconnections observed.
    pub disconnects: u64,
    /// Takeovers observed.
    pub takeovers: u64,
    /// Refusals observed.
    pub refusals: u64,
    /// Denied publishes and subscriptions observed (quarantine denials excluded).
    pub denied_events: u64,
    /// Distinct topics (estimate; fleet: sum of the devices').
    pub distinct_topics: f64,
    /// Distinct wildcard filters (estimate).
    pub distinct_filters: f64,
    /// Mean rtt of the readings, ms.
    pub rtt_ms: Option<f64>,
    /// Retransmitted / sent bytes.
    pub retrans_ratio: Option<f64>,
    /// TCP readings.
    pub rtt_readings: u64,
    /// Bytes sent (TCP).
    pub bytes_sent: u64,
    /// Bytes retransmitted (TCP).
    pub bytes_retrans: u64,
}

/// A device's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStats {
    /// The device.
    pub device: DeviceId,
    /// Its own baseline is not ready yet.
    pub learning: bool,
    /// Buckets in the baseline so far.
    pub baseline_buckets: usize,
    /// Buckets needed.
    pub baseline_needed: usize,
    /// A live connection now.
    pub online: bool,
    /// Live connections.
    pub connections: usize,
    /// Over the evaluation window.
    pub rates: Rates,
    /// The latest TCP reading.
    pub transport: Option<TransportView>,
    /// Per metric.
    pub baseline: Vec<BaselineView>,
    /// The last hour, oldest first (buckets in which nothing happened are left out).
    pub buckets: Vec<BucketView>,
    /// Disconnect reasons in the last hour.
    pub disconnect_reasons: BTreeMap<String, u64>,
    /// Networks connected from.
    pub sources: Vec<SourceView>,
    /// Its active alerts.
    pub alerts: Vec<Alert>,
}

/// The fleet's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStats {
    /// Devices known.
    pub devices: usize,
    /// Devices online.
    pub online: usize,
    /// Devices learning.
    pub learning: usize,
    /// Sums of the devices' rates.
    pub rates: Rates,
    /// Median of the online devices' window rtt.
    pub rtt_ms_p50: Option<f64>,
    /// 99th percentile.
    pub rtt_ms_p99: Option<f64>,
    /// Median of the devices' window retransmission ratio.
    pub retrans_ratio_p50: Option<f64>,
    /// 99th percentile.
    pub retrans_ratio_p99: Option<f64>,
    /// Active alerts.
    pub active_alerts: usize,
    /// Fleet sums per bucket, last hour, oldest first.
    pub buckets: Vec<BucketView>,
}

#[cfg(test)]
mod tests;
