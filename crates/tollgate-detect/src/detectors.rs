//! The named detectors: what each one measures and when it breaches.
//!
//! Owns the judgment of one device (or one cohort) at one tick, as [`Finding`]s. It must not
//! raise, update or clear alerts, nor order mitigations: [`crate::alert`] and the engine do,
//! from the findings. Every threshold comes from [`crate::config::Detectors`].
//!
//! * **cloned_certificate**: the last [`crate::CONCURRENT_SAMPLES`] samples in a row show live
//!   connections of the device from two or more different IP addresses at once (connections
//!   silent for [`crate::STALE_CONNECTION_MS`] left out: a device mid-move is not a clone;
//!   metric `concurrent_addresses`), or at least
//!   `takeovers` session takeovers within `window` (metric `takeovers_per_window`).
//! * **authorization_probing**: within `window`, denied publishes and subscriptions observed
//!   (quarantine denials excluded) ≥ `denied` (metric `denied_per_min`, the count scaled to a
//!   minute), or distinct denied topics and filters ≥ `distinct_topics` (metric
//!   `distinct_denied_topics`; at most 256 remembered per device per bucket).
//! * **topic_scanning**: distinct wildcard filters within `window` ≥ `distinct_filters` (metric
//!   `distinct_filters`). The count is the larger of the merged filter sketch's estimate
//!   (rounded to the nearest integer) and the number of distinct denied wildcard filters
//!   observed: the broker's sketch already counts denied filters under its own hash, so the
//!   maximum is the best deduplication available without that hash.
//! * **traffic_spike** (`messages_in`, `bytes_in`, `messages_out`, `bytes_out` per minute over
//!   the engine window; the first that breaches is reported): observed ≥ `min_per_minute`
//!   (× 1 KiB for bytes) and, when the device's own baseline is ready, observed > median +
//!   `deviations`·sigma_eff and observed > `factor`·median; while it learns, observed >
//!   `cohort_factor` × the `cohort_percentile` of the other online members of one of its
//!   cohorts with at least `cohort_min_devices` of them (the highest such threshold, so the
//!   most conservative cohort, is used); otherwise no judgment.
//! * **connection_flapping**: ≥ `connects` connections within `window` (metric
//!   `connects_per_window`), unless cloned_certificate is breaching or active for the device.
//! * **new_source_address**: a connection, after the device's `learning` period, from a network
//!   (IPv4 /`ipv4_prefix`, IPv6 /`ipv6_prefix`) it never used (metric `source_network`, observed
//!   = networks known before it). The network is learnt at once; the alert clears after
//!   `clear_after` without a new one.
//! * **link_degradation** over the engine window: mean rtt > `rtt_factor`·median and >
//!   median + `rtt_deviations`·sigma_eff (rtt baseline ready) and ≥ `min_rtt_ms` (metric
//!   `rtt_ms`), or, with at least `min_segments` segments sent, retransmitted/sent bytes ≥
//!   `retrans_ratio` (metric `retrans_ratio`). When more than `cohort_fraction` of an online
//!   cohort with at least `cohort_min_devices` online members breaches in the same tick, one
//!   `network_degradation` alert is raised for the cohort (device none, never mitigating) and
//!   its members get no per-device alert (theirs are cleared).
//! * **inactive**: a device whose `messages_in` baseline is ready with a median ≥ 1 per minute
//!   expects a message every `60 s / median`; silence (time since the last sample in which
//!   `messages_in` increased; offline counts as silent) ≥ max(`missed_reports` × interval,
//!   `min_silence`) breaches (metric `silence_s`). It clears at the first tick with messages.

use crate::alert::Subject;
use crate::baseline::percentile_without;
use crate::config::DetectionConfig;
use crate::stats::{Device, Metric};

/// Named detector: cloned certificate.
pub const CLONED_CERTIFICATE: &str = "cloned_certificate";
/// Named detector: authorization probing.
pub const AUTHORIZATION_PROBING: &str = "authorization_probing";
/// Named detector: topic scanning.
pub const TOPIC_SCANNING: &str = "topic_scanning";
/// Named detector: traffic spike.
pub const TRAFFIC_SPIKE: &str = "traffic_spike";
/// Named detector: connection flapping.
pub const CONNECTION_FLAPPING: &str = "connection_flapping";
/// Named detector: new source address.
pub const NEW_SOURCE_ADDRESS: &str = "new_source_address";
/// Named detector: link degradation.
pub const LINK_DEGRADATION: &str = "link_degradation";
/// Named detector: inactive.
pub const INACTIVE: &str = "inactive";
/// The cohort-wide form of link degradation.
pub const NETWORK_DEGRADATION: &str = "network_degradation";

/// Every named detector.
pub const NAMED: [&str; 8] = [
    CLONED_CERTIFICATE,
    AUTHORIZATION_PROBING,
    TOPIC_SCANNING,
    TRAFFIC_SPIKE,
    CONNECTION_FLAPPING,
    NEW_SOURCE_ADDRESS,
    LINK_DEGRADATION,
    INACTIVE,
];

/// Whether `name` can be an alert's detector (a named one, `network_degradation`, or
/// `rule:<name>`).
pub fn is_detector_name(name: &str) -> bool {
    NAMED.contains(&name)
        || name == NETWORK_DEGRADATION
        || name
            .strip_prefix("rule:")
            .is_some_and(|r| !r.is_empty() && r.len() <= 64)
}

/// The traffic metrics of traffic_spike, in the order they are judged.
pub(crate) const TRAFFIC: [Metric; 4] = [
    Metric::MessagesIn,
    Metric::BytesIn,
    Metric::MessagesOut,
    Metric::BytesOut,
];

/// One breach.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub detector: String,
    pub subject: Subject,
    pub cohort: Option<String>,
    pub metric: String,
    pub observed: f64,
    pub baseline: Option<f64>,
    pub threshold: f64,
    pub explanation: String,
}

impl Finding {
    fn device(detector: &str, dev: &Device, metric: &str) -> Finding {
        Finding {
            detector: detector.to_owned(),
            subject: Subject::Device(dev.id.clone()),
            cohort: None,
            metric: metric.to_owned(),
            observed: 0.0,
            baseline: None,
            threshold: 0.0,
            explanation: String::new(),
        }
    }
}

/// A cohort's members and the online members' current values, for one tick.
#[derive(Debug, Default)]
pub(crate) struct CohortAcc {
    pub members: usize,
    pub online: usize,
    /// Sorted traffic values (per minute) of online members, per [`TRAFFIC`] metric.
    pub traffic: [Vec<f64>; 4],
}

/// What a tick knows besides the device.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a DetectionConfig,
    pub now: i64,
    pub cohorts: &'a [CohortAcc],
    pub cohort_names: &'a [String],
}

/// A number for a sentence.
pub(crate) fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The `p`-th percentile of the *other* online members of a cohort, given the sorted values
/// and this device's own value when it is among them.
pub(crate) fn others_percentile(sorted: &[f64], own: Option<f64>, p: f64) -> Option<f64> {
    match own {
        Some(v) => {
            let pos = sorted.partition_point(|x| x.total_cmp(&v).is_lt());
            percentile_without(sorted, pos, p)
        }
        None => crate::baseline::percentile(sorted, p),
    }
}

/// Judge every per-device named detector for `dev`. Findings go to `out`; link degradation
/// candidates to `link` (the engine decides whether they are cohort-wide). `traffic` holds the
/// device's per-minute traffic rates; `cloned_active` says whether a cloned_certificate alert is
/// active for the device.
pub(crate) fn evaluate(
    cx: &Ctx<'_>,
    dev: &mut Device,
    traffic: &[f64; 4],
    cloned_active: bool,
    out: &mut Vec<Finding>,
    link: &mut Option<Finding>,
) {
    let d = &cx.cfg.detectors;
    let bucket_ms = cx.cfg.engine.bucket_ms;
    let now = cx.now;

    // cloned_certificate
    let mut cloned = false;
    if d.cloned_certificate.common.enabled {
        let c = &d.cloned_certificate;
        let addrs = if dev.conns.len() >= 2 {
            dev.live_addresses()
        } else {
            Vec::new()
        };
        if addrs.len() >= 2 && dev.concurrent_samples >= crate::CONCURRENT_SAMPLES {
            let mut f = Finding::device(CLONED_CERTIFICATE, dev, "concurrent_addresses");
            f.observed = addrs.len() as f64;
            f.threshold = 2.0;
            let list: Vec<String> = addrs.iter().take(4).map(|a| a.to_string()).collect();
            f.explanation = format!(
                "{} is connected from {} different addresses at once ({}), where one certificate should connect from one place.",
                dev.id,
                addrs.len(),
                list.join(", ")
            );
            out.push(f);
            cloned = true;
        } else {
            let t = dev.window_sum(now, c.window_ms, bucket_ms, |b| f64::from(b.takeovers));
            if t >= f64::from(c.takeovers) {
                let mut f = Finding::device(CLONED_CERTIFICATE, dev, "takeovers_per_window");
                f.observed = t.round();
                f.threshold = f64::from(c.takeovers);
                f.explanation = format!(
                    "{} had its session taken over {} times in {}, where at least {} means two clients share one certificate.",
                    dev.id,
                    num(t.round()),
                    show_window(c.window_ms),
                    c.takeovers
                );
                out.push(f);
                cloned = true;
            }
        }
    }

    // connection_flapping
    if d.connection_flapping.common.enabled && !cloned && !cloned_active {
        let c = &d.connection_flapping;
        let n = dev.window_sum(now, c.window_ms, bucket_ms, |b| f64::from(b.connects));
        if n >= f64::from(c.connects) {
            let mut f = Finding::device(CONNECTION_FLAPPING, dev, "connects_per_window");
            f.observed = n.round();
            f.threshold = f64::from(c.connects);
            f.explanation = format!(
                "{} connected {} times in {}, at or above the {} that mean its connection keeps failing.",
                dev.id,
                num(n.round()),
                show_window(c.window_ms),
                c.connects
            );
            out.push(f);
        }
    }

    // authorization_probing
    if d.authorization_probing.common.enabled {
        let c = &d.authorization_probing;
        let denied = dev.window_sum(now, c.window_ms, bucket_ms, |b| f64::from(b.denied_obs));
        let per_min = 60_000.0 / c.window_ms as f64;
        if denied >= f64::from(c.denied) {
            let mut f = Finding::device(AUTHORIZATION_PROBING, dev, "denied_per_min");
            f.observed = denied * per_min;
            f.threshold = f64::from(c.denied) * per_min;
            f.explanation = format!(
                "{} was denied {} publishes or subscriptions in {}, at or above the {} that mean it is probing its permissions.",
                dev.id,
                num(denied.round()),
                show_window(c.window_ms),
                c.denied
            );
            out.push(f);
        } else if denied > 0.0 {
            let (distinct, _) = dev.window_denied_distinct(now, c.window_ms, bucket_ms);
            if distinct >= c.distinct_topics as usize {
                let mut f = Finding::device(AUTHORIZATION_PROBING, dev, "distinct_denied_topics");
                f.observed = distinct as f64;
                f.threshold = f64::from(c.distinct_topics);
                f.explanation = format!(
                    "{} was denied on {} distinct topics or filters in {}, at or above the {} that mean it is probing its permissions.",
                    dev.id,
                    distinct,
                    show_window(c.window_ms),
                    c.distinct_topics
                );
                out.push(f);
            }
        }
    }

    // topic_scanning
    if d.topic_scanning.common.enabled {
        let c = &d.topic_scanning;
        let (_, filters) = dev.window_sketches(now, c.window_ms, bucket_ms);
        let (_, wild) = if dev.denied.is_empty() {
            (0, 0)
        } else {
            dev.window_denied_distinct(now, c.window_ms, bucket_ms)
        };
        let n = filters.estimate().round().max(wild as f64);
        if n >= f64::from(c.distinct_filters) {
            let mut f = Finding::device(TOPIC_SCANNING, dev, "distinct_filters");
            f.observed = n;
            f.threshold = f64::from(c.distinct_filters);
            f.explanation = format!(
                "{} asked for about {} distinct wildcard filters in {}, at or above the {} that mean it is mapping the topic space.",
                dev.id,
                num(n),
                show_window(c.window_ms),
                c.distinct_filters
            );
            out.push(f);
        }
    }

    // new_source_address
    let pending = std::mem::take(&mut dev.new_sources);
    if d.new_source_address.common.enabled {
        if let Some((network, known, at)) = pending.last() {
            let mut f = Finding::device(NEW_SOURCE_ADDRESS, dev, "source_network");
            f.observed = *known as f64;
            f.threshold = *known as f64;
            f.explanation = format!(
                "{} connected from {network} at {at} ms, a network it had not used (it knew {known} network{}).",
                dev.id,
                if *known == 1 { "" } else { "s" }
            );
            out.push(f);
        }
    }

    // traffic_spike
    if d.traffic_spike.common.enabled {
        if let Some(f) = traffic_spike(cx, dev, traffic) {
            out.push(f);
        }
    }

    // link_degradation (candidate)
    if d.link_degradation.common.enabled {
        *link = link_degradation(cx, dev);
    }

    // inactive
    if d.inactive.common.enabled {
        let c = &d.inactive;
        if let (Some(b), Some(last)) = (dev.baseline(Metric::MessagesIn), dev.last_message_ms) {
            if b.ready(cx.cfg.engine.learning_buckets) && b.median >= 1.0 {
                let interval_ms = 60_000.0 / b.median;
                let limit_ms =
                    (f64::from(c.missed_reports) * interval_ms).max(c.min_silence_ms as f64);
                let silence_ms = now.saturating_sub(last) as f64;
                if silence_ms >= limit_ms {
                    let mut f = Finding::device(INACTIVE, dev, "silence_s");
                    f.observed = (silence_ms / 1000.0).floor();
                    f.threshold = limit_ms / 1000.0;
                    f.baseline = Some(b.median);
                    f.explanation = format!(
                        "{} sent nothing for {} s, where its usual {} messages a minute mean one every {} s and {} missed reports allow {} s.",
                        dev.id,
                        num(f.observed),
                        num(b.median),
                        num(interval_ms / 1000.0),
                        c.missed_reports,
                        num(f.threshold)
                    );
                    out.push(f);
                }
            }
        }
    }
}

fn traffic_spike(cx: &Ctx<'_>, dev: &Device, traffic: &[f64; 4]) -> Option<Finding> {
    let c = &cx.cfg.detectors.traffic_spike;
    let online = dev.online();
    for (i, m) in TRAFFIC.iter().enumerate() {
        let observed = *traffic.get(i)?;
        let is_bytes = matches!(m, Metric::BytesIn | Metric::BytesOut);
        let min = if is_bytes {
            c.min_per_minute * 1024.0
        } else {
            c.min_per_minute
        };
        if observed.is_nan() || observed < min {
            continue;
        }
        let name = format!("{}_per_min", m.name());
        if let Some(b) = dev
            .baseline(*m)
            .filter(|b| b.ready(cx.cfg.engine.learning_buckets))
        {
            let sigma = b.sigma_eff(m.sigma_floor());
            let by_dev = b.median + c.deviations * sigma;
            let by_factor = c.factor * b.median;
            let threshold = by_dev.max(by_factor);
            if observed > threshold {
                let mut f = Finding::device(TRAFFIC_SPIKE, dev, &name);
                f.observed = observed;
                f.threshold = threshold;
                f.baseline = Some(b.median);
                f.explanation = format!(
                    "{} sent {} {} a minute, where its baseline is {} (MAD {}) and more than {} is a spike.",
                    dev.id,
                    num(observed),
                    unit(*m),
                    num(b.median),
                    num(b.mad),
                    num(threshold)
                );
                return Some(f);
            }
            continue;
        }
        // While learning: the most conservative cohort with enough other online members.
        let own = online.then_some(observed);
        let mut best: Option<(f64, f64, usize)> = None;
        for &cid in &dev.cohort_ids {
            let Some(acc) = cx.cohorts.get(cid) else {
                continue;
            };
            let others = acc.online.saturating_sub(usize::from(online));
            if others < cx.cfg.engine.cohort_min_devices {
                continue;
            }
            let Some(sorted) = acc.traffic.get(i) else {
                continue;
            };
            let Some(p) = others_percentile(sorted, own, c.cohort_percentile) else {
                continue;
            };
            let median = others_percentile(sorted, own, 50.0).unwrap_or(0.0);
            let threshold = c.cohort_factor * p;
            if best.is_none_or(|(t, _, _)| threshold > t) {
                best = Some((threshold, median, cid));
            }
        }
        if let Some((threshold, median, cid)) = best {
            if observed > threshold {
                let cohort = cx.cohort_names.get(cid).cloned();
                let mut f = Finding::device(TRAFFIC_SPIKE, dev, &name);
                f.observed = observed;
                f.threshold = threshold;
                f.baseline = Some(median);
                f.explanation = format!(
                    "{} sent {} {} a minute while still learning its own baseline, above {} × the {}th percentile of the other online devices of {} ({}).",
                    dev.id,
                    num(observed),
                    unit(*m),
                    num(c.cohort_factor),
                    num(c.cohort_percentile),
                    cohort.as_deref().unwrap_or("its cohort"),
                    num(threshold)
                );
                f.cohort = cohort;
                return Some(f);
            }
        }
    }
    None
}

fn link_degradation(cx: &Ctx<'_>, dev: &Device) -> Option<Finding> {
    let c = &cx.cfg.detectors.link_degradation;
    let bucket_ms = cx.cfg.engine.bucket_ms;
    let w = cx.cfg.engine.window_ms;
    if let (Some(rtt), Some(b)) = (
        dev.window_rtt_ms(cx.now, w, bucket_ms),
        dev.baseline(Metric::RttMs)
            .filter(|b| b.ready(cx.cfg.engine.learning_buckets)),
    ) {
        let sigma = b.sigma_eff(Metric::RttMs.sigma_floor());
        let threshold = (c.rtt_factor * b.median)
            .max(b.median + c.rtt_deviations * sigma)
            .max(c.min_rtt_ms);
        if rtt > threshold {
            let mut f = Finding::device(LINK_DEGRADATION, dev, "rtt_ms");
            f.observed = rtt;
            f.threshold = threshold;
            f.baseline = Some(b.median);
            f.explanation = format!(
                "{}'s round-trip time averaged {} ms over {}, where its baseline is {} ms and more than {} ms is degraded.",
                dev.id,
                num(rtt),
                show_window(w),
                num(b.median),
                num(threshold)
            );
            return Some(f);
        }
    }
    let (ratio, segs) = dev.window_retrans(cx.now, w, bucket_ms);
    if let Some(ratio) = ratio {
        if segs >= c.min_segments as f64 && ratio >= c.retrans_ratio {
            let mut f = Finding::device(LINK_DEGRADATION, dev, "retrans_ratio");
            f.observed = ratio;
            f.threshold = c.retrans_ratio;
            f.explanation = format!(
                "{} retransmitted {:.1}% of what it sent over {}, at or above the {:.1}% that means a lossy link.",
                dev.id,
                ratio * 100.0,
                show_window(w),
                c.retrans_ratio * 100.0
            );
            return Some(f);
        }
    }
    None
}

fn unit(m: Metric) -> &'static str {
    match m {
        Metric::BytesIn | Metric::BytesOut => "bytes",
        _ => "messages",
    }
}

/// A window as a person writes it.
pub(crate) fn show_window(ms: i64) -> String {
    if ms % 60_000 == 0 {
        let m = ms / 60_000;
        if m == 1 {
            "1 minute".to_owned()
        } else {
            format!("{m} minutes")
        }
    } else {
        format!("{} s", ms / 1000)
    }
}
