//! The engine: devices, observations, samples, ticks, alerts and orders together.
//!
//! Owns the state of every device and alert and the order of a tick: prune and refresh
//! baselines (once per completed bucket), compute each device's window values and the cohort
//! percentiles, judge the named detectors and the custom rules, fold link degradation into
//! cohort-wide `network_degradation` where a cohort degrades at once, apply the alert lifecycle
//! and suppressions, order mitigations within their limits, and mark the buckets under active
//! alerts so attacks never become baselines. It must not read a clock, do I/O or block: time
//! comes in as `now_ms`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::alert::{
    Alert, AlertState, Book, Subject, Suppression, SuppressionRequest, Verdict, VerdictKind,
};
use crate::config::{Common, DetectionConfig};
use crate::detectors::{self, CohortAcc, Ctx, Finding, NETWORK_DEGRADATION, TRAFFIC};
use crate::mitigate::{Mitigation, Order, RateLimiter};
use crate::rules::{self, RuleCohorts};
use crate::stats::{
    network_of, Device, DeviceStats, FleetStats, Keep, Metric, Rates, SourceView, MAX_SOURCES,
};
use crate::{DetectError, DeviceInfo, Observation, Sample, Severity};

/// What a tick changed.
#[derive(Debug, Default)]
pub struct Tick {
    /// Alerts raised, cleared, or whose observed value changed.
    pub changes: Vec<Alert>,
    /// Mitigations to carry out.
    pub orders: Vec<Order>,
}

/// The anomaly-detection engine. See the crate docs.
#[derive(Debug)]
pub struct Engine {
    config: DetectionConfig,
    devices: Vec<Device>,
    index: HashMap<String, usize>,
    cohort_names: Vec<String>,
    cohort_lookup: HashMap<String, usize>,
    book: Book,
    limiter: RateLimiter,
    keep: Keep,
    baseline_metrics: Vec<Metric>,
    now_ms: i64,
    tick_no: u64,
    sample_seq: u64,
    scratch: Vec<f64>,
}

/// How an alert of a detector lives.
struct Params {
    alarm_after: u32,
    clear_ticks: u32,
    clear_after_ms: i64,
    severity: Severity,
    mitigation: Mitigation,
    ttl_ms: i64,
    per_second: u32,
}

fn hash_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn derive(config: &DetectionConfig) -> (Keep, Vec<Metric>) {
    let e = &config.engine;
    let d = &config.detectors;
    let mut longest = e
        .window_ms
        .max(d.topic_scanning.window_ms)
        .max(d.authorization_probing.window_ms);
    for r in &config.rules {
        longest = longest.max(r.window_ms);
    }
    let keep = Keep {
        history: e.history,
        sketch_buckets: longest.div_euclid(e.bucket_ms).saturating_add(1),
    };
    let mut metrics = vec![
        Metric::MessagesIn,
        Metric::BytesIn,
        Metric::MessagesOut,
        Metric::BytesOut,
        Metric::RttMs,
    ];
    for r in &config.rules {
        if matches!(r.judge, crate::config::Judge::Deviations(_)) && !metrics.contains(&r.metric) {
            metrics.push(r.metric);
        }
    }
    (keep, metrics)
}

impl Engine {
    /// An engine with no devices.
    pub fn new(config: DetectionConfig) -> Engine {
        let (keep, baseline_metrics) = derive(&config);
        Engine {
            config,
            devices: Vec::new(),
            index: HashMap::new(),
            cohort_names: Vec::new(),
            cohort_lookup: HashMap::new(),
            book: Book::default(),
            limiter: RateLimiter::default(),
            keep,
            baseline_metrics,
            now_ms: i64::MIN,
            tick_no: 0,
            sample_seq: 0,
            scratch: Vec::new(),
        }
    }

    /// Swap the rules (a reload); statistics, baselines and alerts are kept. A different bucket
    /// width makes the old buckets meaningless: they are dropped and devices learn again.
    pub fn set_config(&mut self, config: DetectionConfig) {
        if config.engine.bucket_ms != self.config.engine.bucket_ms {
            for d in &mut self.devices {
                d.buckets.clear();
                d.sketches.clear();
                d.denied.clear();
                d.reasons.clear();
            }
        }
        let (keep, metrics) = derive(&config);
        self.keep = keep;
        self.baseline_metrics = metrics;
        for d in &mut self.devices {
            d.baselines_at = None;
        }
        self.config = config;
    }

    /// The configuration in use.
    pub fn config(&self) -> &DetectionConfig {
        &self.config
    }

    fn device_index(&mut self, device: &str) -> usize {
        if let Some(i) = self.index.get(device) {
            return *i;
        }
        let i = self.devices.len();
        self.devices.push(Device::new(device));
        self.index.insert(device.to_owned(), i);
        i
    }

    /// Set a device's cohorts (creates the device if unknown).
    pub fn set_device(&mut self, device: &str, info: DeviceInfo) {
        let i = self.device_index(device);
        let Some(dev) = self.devices.get_mut(i) else {
            return;
        };
        dev.set_info(info);
        let mut ids = Vec::with_capacity(dev.cohorts.len());
        for c in &dev.cohorts {
            let id = match self.cohort_lookup.get(c) {
                Some(id) => *id,
                None => {
                    let id = self.cohort_names.len();
                    self.cohort_names.push(c.clone());
                    self.cohort_lookup.insert(c.clone(), id);
                    id
                }
            };
            ids.push(id);
        }
        dev.cohort_ids = ids;
    }

    /// Forget a device: its statistics go, its active alerts are cleared and returned (to be
    /// announced like any other clear).
    pub fn remove_device(&mut self, device: &str) -> Vec<Alert> {
        let Some(i) = self.index.remove(device) else {
            return Vec::new();
        };
        if i >= self.devices.len() {
            return Vec::new();
        }
        self.devices.swap_remove(i);
        if let Some(moved) = self.devices.get(i) {
            self.index.insert(moved.id.clone(), i);
        }
        let now = self.now_ms.max(0);
        let ids: Vec<String> = self
            .book
            .active
            .values()
            .filter(|a| a.device.as_deref() == Some(device))
            .map(|a| a.id.clone())
            .collect();
        let cleared: Vec<Alert> = ids
            .iter()
            .filter_map(|id| self.book.clear(id, now))
            .collect();
        self.book
            .tracks
            .retain(|(_, s), _| *s != Subject::Device(device.to_owned()));
        cleared
    }

    /// Record one fact from the event bus.
    pub fn observe(&mut self, obs: Observation) {
        let at = obs.at_ms();
        let bucket_ms = self.config.engine.bucket_ms;
        let idx = at.div_euclid(bucket_ms);
        if self.now_ms != i64::MIN {
            let oldest = self
                .now_ms
                .div_euclid(bucket_ms)
                .saturating_sub(self.keep.history as i64);
            if idx < oldest {
                return;
            }
        }
        let nsa = self.config.detectors.new_source_address.clone();
        let i = self.device_index(obs.device());
        let Some(dev) = self.devices.get_mut(i) else {
            return;
        };
        match obs {
            Observation::Connected { addr, .. } => {
                dev.with_bucket(idx, |b| b.connects = b.connects.saturating_add(1));
                let first = *dev.first_connect_ms.get_or_insert(at);
                if let Some(addr) = addr {
                    let network = network_of(addr, nsa.ipv4_prefix, nsa.ipv6_prefix);
                    if let Some(s) = dev.sources.iter_mut().find(|s| s.network == network) {
                        s.last_seen_ms = s.last_seen_ms.max(at);
                        s.connects = s.connects.saturating_add(1);
                    } else {
                        let known = dev.sources.len();
                        if at.saturating_sub(first) >= nsa.learning_ms {
                            dev.new_sources.push((network.clone(), known, at));
                            if dev.new_sources.len() > 16 {
                                dev.new_sources.remove(0);
                            }
                        }
                        if dev.sources.len() >= MAX_SOURCES {
                            if let Some(pos) = dev
                                .sources
                                .iter()
                                .enumerate()
                                .min_by_key(|(_, s)| s.last_seen_ms)
                                .map(|(p, _)| p)
                            {
                                dev.sources.remove(pos);
                            }
                        }
                        dev.sources.push(SourceView {
                            network,
                            first_seen_ms: at,
                            last_seen_ms: at,
                            connects: 1,
                        });
                    }
                }
            }
            Observation::Disconnected { reason, .. } => {
                dev.with_bucket(idx, |b| b.disconnects = b.disconnects.saturating_add(1));
                dev.record_reason(idx, &reason);
            }
            Observation::Refused { .. } => {
                dev.with_bucket(idx, |b| b.refusals = b.refusals.saturating_add(1));
            }
            Observation::TakenOver { .. } => {
                dev.with_bucket(idx, |b| b.takeovers = b.takeovers.saturating_add(1));
            }
            Observation::PublishDenied {
                topic, quarantined, ..
            } => {
                if !quarantined {
                    dev.with_bucket(idx, |b| b.denied_obs = b.denied_obs.saturating_add(1));
                    dev.record_denied(idx, hash_str(&topic), false);
                }
            }
            Observation::SubscribeDenied {
                filter,
                quarantined,
                ..
            } => {
                if !quarantined {
                    dev.with_bucket(idx, |b| b.denied_obs = b.denied_obs.saturating_add(1));
                    let wildcard = filter.contains('+') || filter.contains('#');
                    dev.record_denied(idx, hash_str(&filter), wildcard);
                }
            }
        }
    }

    /// Samples of every device with a live connection (devices absent are offline now).
    pub fn sample(&mut self, now_ms: i64, samples: Vec<Sample>) {
        self.now_ms = self.now_ms.max(now_ms);
        self.sample_seq = self.sample_seq.wrapping_add(1);
        let seq = self.sample_seq;
        let idx = now_ms.div_euclid(self.config.engine.bucket_ms);
        for s in samples {
            let i = self.device_index(&s.device);
            if let Some(dev) = self.devices.get_mut(i) {
                dev.seen_seq = seq;
                dev.record_sample(
                    idx,
                    now_ms,
                    s.counters,
                    s.restarted,
                    &s.topics,
                    &s.filters,
                    s.connections,
                    &s.closed,
                );
            }
        }
        for dev in &mut self.devices {
            if dev.seen_seq != seq && !dev.conns.is_empty() {
                dev.conns.clear();
                dev.tcp.clear();
            }
        }
    }

    fn params(&self, detector: &str) -> Params {
        let d = &self.config.detectors;
        let from = |c: &Common, alarm: u32, clear: u32| Params {
            alarm_after: alarm,
            clear_ticks: clear,
            clear_after_ms: c.clear_after_ms,
            severity: c.severity,
            mitigation: c.mitigation,
            ttl_ms: c.ttl_ms,
            per_second: c.throttle_per_second,
        };
        match detector {
            detectors::CLONED_CERTIFICATE => from(&d.cloned_certificate.common, 1, 3),
            detectors::AUTHORIZATION_PROBING => from(&d.authorization_probing.common, 1, 3),
            detectors::TOPIC_SCANNING => from(&d.topic_scanning.common, 1, 3),
            detectors::TRAFFIC_SPIKE => from(&d.traffic_spike.common, 1, 3),
            detectors::CONNECTION_FLAPPING => from(&d.connection_flapping.common, 1, 3),
            detectors::NEW_SOURCE_ADDRESS => from(&d.new_source_address.common, 1, 3),
            detectors::LINK_DEGRADATION => from(&d.link_degradation.common, 1, 3),
            detectors::INACTIVE => from(&d.inactive.common, 1, 1),
            NETWORK_DEGRADATION => Params {
                mitigation: Mitigation::Notify,
                ..from(&d.link_degradation.common, 1, 3)
            },
            other => match other
                .strip_prefix("rule:")
                .and_then(|n| self.config.rule(n))
            {
                Some(r) => from(&r.common, r.datapoints_to_alarm, r.datapoints_to_clear),
                None => Params {
                    alarm_after: u32::MAX,
                    clear_ticks: 1,
                    clear_after_ms: 0,
                    severity: Severity::Low,
                    mitigation: Mitigation::Notify,
                    ttl_ms: 0,
                    per_second: 0,
                },
            },
        }
    }

    /// Evaluate every detector and rule; returns what changed and the mitigations to carry out.
    pub fn tick(&mut self, now_ms: i64) -> Tick {
        self.now_ms = self.now_ms.max(now_ms);
        self.tick_no = self.tick_no.wrapping_add(1);
        let bucket_ms = self.config.engine.bucket_ms;
        let cur = now_ms.div_euclid(bucket_ms);
        let w = self.config.engine.window_ms;
        let per_min = 60_000.0 / w as f64;

        // 1. Prune, refresh baselines, window traffic, cohorts.
        let mut cohorts: Vec<CohortAcc> = Vec::new();
        cohorts.resize_with(self.cohort_names.len(), CohortAcc::default);
        let mut traffic: Vec<[f64; 4]> = Vec::with_capacity(self.devices.len());
        for dev in &mut self.devices {
            dev.prune(cur, &self.keep);
            dev.refresh_baselines(
                cur,
                bucket_ms,
                self.config.engine.learning_buckets,
                &self.baseline_metrics,
                &mut self.scratch,
            );
            let mut t = [0.0; 4];
            for (slot, m) in t.iter_mut().zip(TRAFFIC) {
                *slot = dev.window_sum(now_ms, w, bucket_ms, |b| b.counter(m)) * per_min;
            }
            let online = dev.online();
            for &cid in &dev.cohort_ids {
                if let Some(acc) = cohorts.get_mut(cid) {
                    acc.members += 1;
                    if online {
                        acc.online += 1;
                        for (list, v) in acc.traffic.iter_mut().zip(t) {
                            list.push(v);
                        }
                    }
                }
            }
            traffic.push(t);
        }
        for acc in &mut cohorts {
            for list in &mut acc.traffic {
                list.sort_unstable_by(f64::total_cmp);
            }
        }

        // 2. Named detectors.
        let mut findings: Vec<Finding> = Vec::new();
        let mut links: Vec<(usize, Finding)> = Vec::new();
        {
            let cx = Ctx {
                cfg: &self.config,
                now: now_ms,
                cohorts: &cohorts,
                cohort_names: &self.cohort_names,
            };
            // Devices with an active cloned_certificate alert (few): no flapping alert for them.
            let cloned: std::collections::HashSet<&str> = self
                .book
                .active
                .values()
                .filter(|a| a.detector == detectors::CLONED_CERTIFICATE)
                .filter_map(|a| a.device.as_deref())
                .collect();
            for (i, dev) in self.devices.iter_mut().enumerate() {
                let cloned_active = !cloned.is_empty() && cloned.contains(dev.id.as_str());
                let t = traffic.get(i).copied().unwrap_or_default();
                let mut link = None;
                detectors::evaluate(&cx, dev, &t, cloned_active, &mut findings, &mut link);
                if let Some(l) = link {
                    links.push((i, l));
                }
            }
        }

        // 3. Link degradation: per device, or one network_degradation per degraded cohort.
        let mut forced_clear: Vec<(String, Subject)> = Vec::new();
        let ld = &self.config.detectors.link_degradation;
        if ld.common.enabled {
            let mut breaching = vec![0usize; cohorts.len()];
            let mut rtts: Vec<Vec<f64>> = vec![Vec::new(); cohorts.len()];
            for (i, f) in &links {
                if let Some(dev) = self.devices.get(*i) {
                    for &cid in &dev.cohort_ids {
                        if let Some(b) = breaching.get_mut(cid) {
                            *b += 1;
                        }
                        if let Some(r) = rtts.get_mut(cid) {
                            r.push(f.observed);
                        }
                    }
                }
            }
            let mut degraded = vec![false; cohorts.len()];
            for (cid, acc) in cohorts.iter().enumerate() {
                let n = breaching.get(cid).copied().unwrap_or(0);
                if acc.online >= self.config.engine.cohort_min_devices
                    && acc.online > 0
                    && n as f64 > ld.cohort_fraction * acc.online as f64
                {
                    if let Some(d) = degraded.get_mut(cid) {
                        *d = true;
                    }
                    let name = self.cohort_names.get(cid).cloned().unwrap_or_default();
                    let fraction = n as f64 / acc.online as f64;
                    findings.push(Finding {
                        detector: NETWORK_DEGRADATION.to_owned(),
                        subject: Subject::Cohort(name.clone()),
                        cohort: Some(name.clone()),
                        metric: "degraded_fraction".to_owned(),
                        observed: fraction,
                        baseline: None,
                        threshold: ld.cohort_fraction,
                        explanation: format!(
                            "{n} of the {} online devices of {name} ({:.0}%) show a degraded link at once, above the {:.0}% that points at the network rather than the devices.",
                            acc.online,
                            fraction * 100.0,
                            ld.cohort_fraction * 100.0
                        ),
                    });
                }
            }
            // Members of a degraded cohort: no per-device alert, and theirs clear.
            let in_degraded = |dev: &Device| {
                dev.cohort_ids
                    .iter()
                    .any(|c| degraded.get(*c).copied().unwrap_or(false))
            };
            if degraded.iter().any(|d| *d) {
                for dev in &self.devices {
                    if in_degraded(dev) {
                        forced_clear.push((
                            detectors::LINK_DEGRADATION.to_owned(),
                            Subject::Device(dev.id.clone()),
                        ));
                    }
                }
            }
            for (i, f) in links {
                if self.devices.get(i).is_some_and(|d| !in_degraded(d)) {
                    findings.push(f);
                }
            }
        }

        // 4. Custom rules.
        let learning = self.config.engine.learning_buckets;
        let cohort_min = self.config.engine.cohort_min_devices;
        for rule in &self.config.rules {
            if !rule.common.enabled {
                continue;
            }
            let values: Vec<Option<f64>> = self
                .devices
                .iter()
                .map(|d| d.metric_value(rule.metric, now_ms, rule.window_ms, bucket_ms))
                .collect();
            let mut rc: RuleCohorts = Vec::new();
            if matches!(rule.judge, crate::config::Judge::Cohort { .. }) {
                rc = vec![Vec::new(); self.cohort_names.len()];
                for (dev, v) in self.devices.iter().zip(&values) {
                    if let (true, Some(v)) = (dev.online(), v) {
                        for &cid in &dev.cohort_ids {
                            if let Some(list) = rc.get_mut(cid) {
                                list.push(*v);
                            }
                        }
                    }
                }
                for list in &mut rc {
                    list.sort_unstable_by(f64::total_cmp);
                }
            }
            for (dev, v) in self.devices.iter().zip(&values) {
                if !rule
                    .scope
                    .covers(&dev.id, dev.info.model.as_deref(), &dev.info.groups)
                {
                    continue;
                }
                if let Some(f) =
                    rules::evaluate(rule, dev, *v, &rc, &self.cohort_names, cohort_min, learning)
                {
                    findings.push(f);
                }
            }
        }

        // 5. Lifecycle.
        let mut tick = Tick::default();
        self.apply(findings, forced_clear, now_ms, &mut tick);

        // 6. Buckets under active alerts stay out of baselines.
        self.mark_exclusions(now_ms);
        tick
    }

    fn apply(
        &mut self,
        findings: Vec<Finding>,
        forced_clear: Vec<(String, Subject)>,
        now: i64,
        tick: &mut Tick,
    ) {
        let tick_no = self.tick_no;
        // Active alerts per (detector, cohort id), built on the first mitigation decision.
        let mut cohort_active: Option<HashMap<(String, usize), usize>> = None;
        let mut members: Option<Vec<usize>> = None;
        for f in findings {
            let params = self.params(&f.detector);
            let key = (f.detector.clone(), f.subject.clone());
            let track = self.book.tracks.entry(key).or_default();
            track.breaches = track.breaches.saturating_add(1);
            track.oks = 0;
            track.last_breach_ms = now;
            track.breached_tick = tick_no;
            if let Some(id) = track.active.clone() {
                if let Some(a) = self.book.active.get_mut(&id) {
                    let changed = a.observed != f.observed;
                    a.observed = f.observed;
                    a.threshold = f.threshold;
                    a.baseline = f.baseline;
                    a.explanation = f.explanation;
                    if f.cohort.is_some() {
                        a.cohort = f.cohort;
                    }
                    if changed {
                        a.updated_at_ms = now;
                        tick.changes.push(a.clone());
                    }
                }
                continue;
            }
            if track.breaches < params.alarm_after {
                continue;
            }
            let device = match &f.subject {
                Subject::Device(d) => Some(d.clone()),
                Subject::Cohort(_) => None,
            };
            if self.book.suppressed(&f.detector, device.as_deref(), now) {
                continue;
            }
            let (id, seq) = self.book.next_id("alert", now);
            if let Some(t) = self
                .book
                .tracks
                .get_mut(&(f.detector.clone(), f.subject.clone()))
            {
                t.active = Some(id.clone());
            }
            // Mitigation.
            let mitigation = match (&device, params.mitigation) {
                (None, _) => "notify (cohort-wide)".to_owned(),
                (Some(_), Mitigation::Notify) => "notify".to_owned(),
                (Some(dev_id), m) => {
                    let counts = cohort_active.get_or_insert_with(|| self.cohort_active_counts());
                    let cohort_ids: Vec<usize> = self
                        .index
                        .get(dev_id)
                        .and_then(|i| self.devices.get(*i))
                        .map(|d| d.cohort_ids.clone())
                        .unwrap_or_default();
                    let members = members.get_or_insert_with(|| self.cohort_members());
                    let mut cohort_wide = false;
                    for cid in &cohort_ids {
                        let members = members.get(*cid).copied().unwrap_or(0);
                        let n = counts
                            .get(&(f.detector.clone(), *cid))
                            .copied()
                            .unwrap_or(0)
                            + 1;
                        if members >= self.config.engine.cohort_min_devices
                            && n as f64
                                > self.config.engine.cohort_mitigation_fraction * members as f64
                        {
                            cohort_wide = true;
                        }
                    }
                    // The whole fleet is a cohort too (devices without group or model, and
                    // cohorts too small to judge, are covered by it).
                    let fleet = self.devices.len();
                    let fleet_active = self
                        .book
                        .active
                        .values()
                        .filter(|a| a.detector == f.detector && a.device.is_some())
                        .count()
                        + 1;
                    if fleet >= self.config.engine.cohort_min_devices
                        && fleet_active as f64
                            > self.config.engine.cohort_mitigation_fraction * fleet as f64
                    {
                        cohort_wide = true;
                    }
                    if cohort_wide {
                        "notify (cohort-wide)".to_owned()
                    } else if !self
                        .limiter
                        .try_take(now, self.config.engine.max_mitigations_per_minute)
                    {
                        "notify (mitigation rate limit reached)".to_owned()
                    } else if let Some(action) = m.action(params.ttl_ms, params.per_second) {
                        tick.orders.push(Order {
                            alert_id: id.clone(),
                            detector: f.detector.clone(),
                            device: dev_id.clone(),
                            action,
                        });
                        m.as_str().to_owned()
                    } else {
                        "notify".to_owned()
                    }
                }
            };
            if let (Some(dev_id), Some(counts)) = (&device, cohort_active.as_mut()) {
                if let Some(d) = self.index.get(dev_id).and_then(|i| self.devices.get(*i)) {
                    for cid in &d.cohort_ids {
                        *counts.entry((f.detector.clone(), *cid)).or_insert(0) += 1;
                    }
                }
            }
            let alert = Alert {
                id: id.clone(),
                detector: f.detector,
                device,
                cohort: f.cohort,
                severity: params.severity,
                state: AlertState::Active,
                started_at_ms: now,
                updated_at_ms: now,
                cleared_at_ms: None,
                metric: f.metric,
                observed: f.observed,
                baseline: f.baseline,
                threshold: f.threshold,
                mitigation,
                explanation: f.explanation,
                verdict: None,
                seq,
            };
            tick.changes.push(alert.clone());
            self.book.active.insert(id, alert);
        }
        for key in forced_clear {
            if let Some(t) = self.book.tracks.remove(&key) {
                if let Some(id) = t.active {
                    if let Some(a) = self.book.clear(&id, now) {
                        tick.changes.push(a);
                    }
                }
            }
        }
        // Tracks that did not breach this tick.
        let mut to_clear: Vec<String> = Vec::new();
        let mut params_cache: HashMap<String, (u32, i64)> = HashMap::new();
        let mut tracks = std::mem::take(&mut self.book.tracks);
        tracks.retain(|(detector, _), t| {
            if t.breached_tick == tick_no {
                return true;
            }
            t.breaches = 0;
            t.oks = t.oks.saturating_add(1);
            let Some(id) = &t.active else { return false };
            let (clear_ticks, clear_after) =
                *params_cache.entry(detector.clone()).or_insert_with(|| {
                    let p = self.params(detector);
                    (p.clear_ticks, p.clear_after_ms)
                });
            if t.oks >= clear_ticks && now.saturating_sub(t.last_breach_ms) >= clear_after {
                to_clear.push(id.clone());
                return false;
            }
            true
        });
        self.book.tracks = tracks;
        for id in to_clear {
            if let Some(a) = self.book.clear(&id, now) {
                tick.changes.push(a);
            }
        }
    }

    /// Known members per cohort id.
    fn cohort_members(&self) -> Vec<usize> {
        let mut m = vec![0; self.cohort_names.len()];
        for d in &self.devices {
            for cid in &d.cohort_ids {
                if let Some(n) = m.get_mut(*cid) {
                    *n += 1;
                }
            }
        }
        m
    }

    fn cohort_active_counts(&self) -> HashMap<(String, usize), usize> {
        let mut m = HashMap::new();
        for a in self.book.active.values() {
            let Some(dev) = a
                .device
                .as_ref()
                .and_then(|d| self.index.get(d))
                .and_then(|i| self.devices.get(*i))
            else {
                continue;
            };
            for cid in &dev.cohort_ids {
                *m.entry((a.detector.clone(), *cid)).or_insert(0) += 1;
            }
        }
        m
    }

    fn mark_exclusions(&mut self, now: i64) {
        let bucket_ms = self.config.engine.bucket_ms;
        let w = self.config.engine.window_ms;
        let traffic_mask = TRAFFIC.iter().fold(0, |m, x| m | x.bit());
        let link_mask = Metric::RttMs.bit() | Metric::RetransRatio.bit();
        // (device, metrics, window; `None`: since the device's last message)
        let mut marks: Vec<(usize, u32, Option<i64>)> = Vec::new();
        for a in self.book.active.values() {
            let (mask, window) = match a.detector.as_str() {
                detectors::TRAFFIC_SPIKE => (traffic_mask, Some(w)),
                detectors::LINK_DEGRADATION => (link_mask, Some(w)),
                // The whole silence, however long: the device's return must not look like a
                // spike against a baseline the silence dragged down.
                detectors::INACTIVE => (Metric::MessagesIn.bit() | Metric::BytesIn.bit(), None),
                NETWORK_DEGRADATION => {
                    if let Some(cid) = a.cohort.as_ref().and_then(|c| self.cohort_lookup.get(c)) {
                        for (i, d) in self.devices.iter().enumerate() {
                            if d.cohort_ids.contains(cid) {
                                marks.push((i, link_mask, Some(w)));
                            }
                        }
                    }
                    continue;
                }
                other => match other
                    .strip_prefix("rule:")
                    .and_then(|n| self.config.rule(n))
                {
                    Some(r) => (r.metric.bit(), Some(r.window_ms)),
                    None => continue,
                },
            };
            if let Some(i) = a.device.as_ref().and_then(|d| self.index.get(d)) {
                marks.push((*i, mask, window));
            }
        }
        for (i, mask, window) in marks {
            if let Some(d) = self.devices.get_mut(i) {
                let from = match window {
                    Some(w) => now.saturating_sub(w),
                    None => d.last_message_ms.unwrap_or(now.saturating_sub(w)),
                };
                d.exclude(from, now, bucket_ms, mask);
            }
        }
    }

    /// Alerts, newest first (active ones and, unless `active_only`, the last cleared ones).
    pub fn alerts(&self, active_only: bool) -> Vec<Alert> {
        self.book.list(active_only)
    }

    /// One alert by id.
    pub fn alert(&self, id: &str) -> Option<Alert> {
        self.book.get(id).cloned()
    }

    /// Record an operator's verdict on an active or cleared alert.
    pub fn set_verdict(
        &mut self,
        id: &str,
        verdict: VerdictKind,
        by: &str,
        note: Option<String>,
        now_ms: i64,
    ) -> Result<Alert, DetectError> {
        self.book.set_verdict(
            id,
            Verdict {
                kind: verdict,
                by: by.to_owned(),
                at_ms: now_ms,
                note,
            },
        )
    }

    /// Stop a detector and/or a device from raising alerts until `until_ms`.
    pub fn suppress(
        &mut self,
        s: SuppressionRequest,
        now_ms: i64,
    ) -> Result<Suppression, DetectError> {
        self.book.suppress(s, now_ms)
    }

    /// Remove a suppression.
    pub fn unsuppress(&mut self, id: &str) -> Result<Suppression, DetectError> {
        self.book.unsuppress(id)
    }

    /// Unexpired suppressions.
    pub fn suppressions(&self, now_ms: i64) -> Vec<Suppression> {
        self.book
            .suppressions
            .iter()
            .filter(|s| s.until_ms > now_ms)
            .cloned()
            .collect()
    }

    /// One device's statistics.
    pub fn device_stats(&self, device: &str, now_ms: i64) -> Option<DeviceStats> {
        let dev = self.index.get(device).and_then(|i| self.devices.get(*i))?;
        let alerts: Vec<Alert> = self
            .book
            .list(true)
            .into_iter()
            .filter(|a| a.device.as_deref() == Some(device))
            .collect();
        Some(dev.stats(now_ms, &self.config.engine, alerts))
    }

    /// The fleet's statistics.
    pub fn fleet_stats(&self, now_ms: i64) -> FleetStats {
        let e = &self.config.engine;
        let bucket_ms = e.bucket_ms;
        let mut rates = Rates::default();
        let mut rtts = Vec::new();
        let mut retrans = Vec::new();
        let mut online = 0;
        let mut learning = 0;
        let first = now_ms
            .saturating_sub(3_600_000)
            .div_euclid(bucket_ms)
            .saturating_add(1);
        let cur = now_ms.div_euclid(bucket_ms);
        let span = usize::try_from(cur.saturating_sub(first).saturating_add(1))
            .unwrap_or(0)
            .min(e.history + 1);
        let first = cur.saturating_sub(span as i64).saturating_add(1);
        let mut sums: Vec<crate::stats::BucketView> = (0..span)
            .map(|k| crate::stats::BucketView {
                start_ms: first.saturating_add(k as i64).saturating_mul(bucket_ms),
                ..Default::default()
            })
            .collect();
        let mut rtt_acc = vec![(0u64, 0u64); span];
        for d in &self.devices {
            rates.add(&d.rates(now_ms, e.window_ms, bucket_ms));
            if d.online() {
                online += 1;
                if let Some(r) = d.window_rtt_ms(now_ms, e.window_ms, bucket_ms) {
                    rtts.push(r);
                }
                if let Some(r) = d.window_retrans(now_ms, e.window_ms, bucket_ms).0 {
                    retrans.push(r);
                }
            }
            if d.baseline_buckets() < e.learning_buckets {
                learning += 1;
            }
            for b in d.buckets.iter().rev() {
                if b.idx < first {
                    break;
                }
                let Ok(k) = usize::try_from(b.idx - first) else {
                    continue;
                };
                let (Some(s), Some(r)) = (sums.get_mut(k), rtt_acc.get_mut(k)) else {
                    continue;
                };
                let v = Device::bucket_view(b, bucket_ms);
                s.online |= v.online;
                s.messages_in = s.messages_in.saturating_add(v.messages_in);
                s.bytes_in = s.bytes_in.saturating_add(v.bytes_in);
                s.messages_out = s.messages_out.saturating_add(v.messages_out);
                s.bytes_out = s.bytes_out.saturating_add(v.bytes_out);
                s.publish_denied = s.publish_denied.saturating_add(v.publish_denied);
                s.subscribe_denied = s.subscribe_denied.saturating_add(v.subscribe_denied);
                s.wildcard_subscribes = s.wildcard_subscribes.saturating_add(v.wildcard_subscribes);
                s.throttled = s.throttled.saturating_add(v.throttled);
                s.connects = s.connects.saturating_add(v.connects);
                s.disconnects = s.disconnects.saturating_add(v.disconnects);
                s.takeovers = s.takeovers.saturating_add(v.takeovers);
                s.refusals = s.refusals.saturating_add(v.refusals);
                s.denied_events = s.denied_events.saturating_add(v.denied_events);
                s.distinct_topics += v.distinct_topics;
                s.distinct_filters += v.distinct_filters;
                s.rtt_readings = s.rtt_readings.saturating_add(v.rtt_readings);
                s.bytes_sent = s.bytes_sent.saturating_add(v.bytes_sent);
                s.bytes_retrans = s.bytes_retrans.saturating_add(v.bytes_retrans);
                r.0 = r.0.saturating_add(b.rtt_sum_us);
                r.1 = r.1.saturating_add(u64::from(b.rtt_n));
            }
        }
        for (s, r) in sums.iter_mut().zip(&rtt_acc) {
            if r.1 > 0 {
                s.rtt_ms = Some(r.0 as f64 / r.1 as f64 / 1000.0);
            }
            if s.bytes_sent > 0 {
                s.retrans_ratio = Some(s.bytes_retrans as f64 / s.bytes_sent as f64);
            }
        }
        rtts.sort_unstable_by(f64::total_cmp);
        retrans.sort_unstable_by(f64::total_cmp);
        let pct = |v: &[f64], p| crate::baseline::percentile(v, p);
        FleetStats {
            devices: self.devices.len(),
            online,
            learning,
            rates,
            rtt_ms_p50: pct(&rtts, 50.0),
            rtt_ms_p99: pct(&rtts, 99.0),
            retrans_ratio_p50: pct(&retrans, 50.0),
            retrans_ratio_p99: pct(&retrans, 99.0),
            active_alerts: self.book.active.len(),
            buckets: sums,
        }
    }
}

#[cfg(test)]
mod tests;
