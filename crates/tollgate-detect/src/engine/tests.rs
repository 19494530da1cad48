//! Scenarios driven through the engine with a simulated fleet: steady jittered traffic from a
//! deterministic PRNG, then one attack or failure at a known time.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;

use super::*;
use crate::{Counters, LiveConn, Sketch, Transport};

const T0: i64 = 1_764_000_000_000;
const MIN: i64 = 60_000;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// 1 ± j.
    fn jitter(&mut self, j: f64) -> f64 {
        1.0 + j * (2.0 * self.unit() - 1.0)
    }
}

fn h(s: &str) -> u64 {
    let mut x = DefaultHasher::new();
    s.hash(&mut x);
    x.finish()
}

struct SimDev {
    id: String,
    model: String,
    per_min: f64,
    bytes_per_msg: f64,
    rtt_ms: f64,
    retrans: f64,
    counters: Counters,
    frac: f64,
    tcp: Transport,
    addr: IpAddr,
    extra_addr: Option<IpAddr>,
    online: bool,
    filters: Vec<String>,
}

struct Sim {
    eng: Engine,
    devs: Vec<SimDev>,
    now: i64,
    step: i64,
    rng: XorShift,
    raised: Vec<Alert>,
    cleared: Vec<Alert>,
    orders: Vec<Order>,
}

impl Sim {
    /// `n` devices spread over three models with 6, 20 and 60 messages a minute.
    fn new(config: DetectionConfig, n: usize, step: i64) -> Sim {
        let mut eng = Engine::new(config);
        let mut devs = Vec::new();
        let models = [("M0", 6.0, 25.0), ("M1", 20.0, 30.0), ("M2", 60.0, 40.0)];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in 0..n {
            let (model, rate, rtt) = models[i % 3];
            let id = format!("dev-{i:04}");
            eng.set_device(
                &id,
                DeviceInfo {
                    groups: vec![],
                    model: Some(model.to_owned()),
                },
            );
            let addr: IpAddr = format!("10.{}.{}.{}", i % 3, i / 250, 1 + i % 250)
                .parse()
                .unwrap();
            eng.observe(Observation::Connected {
                device: id.clone(),
                client_id: id.clone(),
                addr: Some(addr),
                at_ms: T0,
            });
            devs.push(SimDev {
                id,
                model: model.to_owned(),
                per_min: rate * rng.jitter(0.3),
                bytes_per_msg: 200.0 * rng.jitter(0.5),
                rtt_ms: rtt * rng.jitter(0.2),
                retrans: 0.001,
                counters: Counters::default(),
                frac: 0.0,
                tcp: Transport::default(),
                addr,
                extra_addr: None,
                online: true,
                filters: Vec::new(),
            });
        }
        Sim {
            eng,
            devs,
            now: T0,
            step,
            rng,
            raised: Vec::new(),
            cleared: Vec::new(),
            orders: Vec::new(),
        }
    }

    fn dev(&mut self, i: usize) -> &mut SimDev {
        &mut self.devs[i]
    }

    fn step(&mut self) {
        self.now += self.step;
        let mut samples = Vec::new();
        for d in &mut self.devs {
            if !d.online {
                continue;
            }
            let msgs = d.per_min * self.step as f64 / MIN as f64 * self.rng.jitter(0.25) + d.frac;
            let whole = msgs.floor();
            d.frac = msgs - whole;
            let m = whole as u64;
            d.counters.messages_in += m;
            d.counters.bytes_in += (whole * d.bytes_per_msg * self.rng.jitter(0.1)) as u64;
            d.counters.messages_out += m / 4;
            d.counters.bytes_out += m / 4 * 50;
            let sent = (whole * (d.bytes_per_msg + 60.0)) as u64 + 100;
            d.tcp.bytes_sent += sent;
            d.tcp.segs_out += m as u32 + 1;
            let rt = (sent as f64 * d.retrans * self.rng.unit() * 2.0) as u64;
            d.tcp.bytes_retrans += rt;
            d.tcp.total_retrans += u32::from(rt > 0);
            d.tcp.rtt_us = (d.rtt_ms * 1000.0 * self.rng.jitter(0.1)) as u32;
            let mut topics = Sketch::default();
            for t in 0..3 {
                topics.insert_hash(h(&format!("{}/t{t}", d.model)));
            }
            let mut filters = Sketch::default();
            for f in d.filters.drain(..) {
                filters.insert_hash(h(&f));
            }
            let mut connections = vec![LiveConn {
                client_id: d.id.clone(),
                addr: Some(d.addr),
                transport: Some(d.tcp),
            }];
            if let Some(a) = d.extra_addr {
                connections.push(LiveConn {
                    client_id: format!("{}-clone", d.id),
                    addr: Some(a),
                    transport: None,
                });
            }
            samples.push(Sample {
                device: d.id.clone(),
                counters: d.counters,
                topics,
                filters,
                connections,
                restarted: false,
                closed: Vec::new(),
            });
        }
        self.eng.sample(self.now, samples);
        let t = self.eng.tick(self.now);
        for a in t.changes {
            match a.state {
                AlertState::Active if a.started_at_ms == self.now => self.raised.push(a),
                AlertState::Cleared => self.cleared.push(a),
                _ => {}
            }
        }
        self.orders.extend(t.orders);
    }

    fn run(&mut self, ms: i64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    fn observe(&mut self, o: Observation) {
        self.eng.observe(o);
    }

    fn summary(&self) -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for a in &self.raised {
            let who = a
                .device
                .clone()
                .or_else(|| a.cohort.clone())
                .unwrap_or_default();
            *m.entry((a.detector.clone(), who)).or_insert(0) += 1;
        }
        m
    }

    /// Learn for `minutes`, with nothing raised.
    fn learned(config: DetectionConfig, n: usize, minutes: i64) -> Sim {
        let mut s = Sim::new(config, n, 5_000);
        s.run(minutes * MIN);
        assert!(
            s.raised.is_empty(),
            "raised while learning: {:?}",
            s.summary()
        );
        s
    }

    /// Exactly one alert since `from`, of `detector` on `who`, raised within 60 s of `onset`.
    fn expect_one(&self, from: usize, detector: &str, who: &str, onset: i64) -> Alert {
        let new: Vec<&Alert> = self.raised[from..].iter().collect();
        let names: Vec<String> = new
            .iter()
            .map(|a| {
                format!(
                    "{} {:?} {:?} {}",
                    a.detector, a.device, a.cohort, a.explanation
                )
            })
            .collect();
        assert_eq!(
            new.len(),
            1,
            "expected one {detector} alert, got {names:#?}"
        );
        let a = new[0];
        assert_eq!(a.detector, detector, "{names:?}");
        assert_eq!(
            a.device.as_deref().or(a.cohort.as_deref()),
            Some(who),
            "{names:?}"
        );
        assert!(
            a.started_at_ms >= onset && a.started_at_ms <= onset + 60_000,
            "raised {} ms after onset",
            a.started_at_ms - onset
        );
        a.clone()
    }
}

fn cfg() -> DetectionConfig {
    DetectionConfig::default()
}

#[test]
fn steady_fleet_learns_and_stays_quiet() {
    let mut s = Sim::new(cfg(), 200, 15_000);
    s.run(2 * MIN);
    let st = s.eng.device_stats("dev-0001", s.now).unwrap();
    assert!(st.learning);
    assert!(st.online);
    s.run(5 * MIN);
    // learning_buckets = 5 online completed buckets: done within 7 minutes.
    let st = s.eng.device_stats("dev-0001", s.now).unwrap();
    assert!(
        !st.learning,
        "{} of {}",
        st.baseline_buckets, st.baseline_needed
    );
    assert_eq!(s.eng.fleet_stats(s.now).learning, 0);
    // Hours of steady jittered traffic: nothing.
    s.run(4 * 60 * MIN);
    assert!(s.raised.is_empty(), "{:?}", s.summary());
    let fleet = s.eng.fleet_stats(s.now);
    assert_eq!(fleet.devices, 200);
    assert_eq!(fleet.online, 200);
    assert_eq!(fleet.active_alerts, 0);
    assert!(fleet.rtt_ms_p50.is_some_and(|r| r > 20.0 && r < 45.0));
    assert_eq!(fleet.buckets.len(), 60);
    let st = s.eng.device_stats("dev-0002", s.now).unwrap();
    assert_eq!(st.baseline_buckets, 60);
    let mi = st
        .baseline
        .iter()
        .find(|b| b.metric == "messages_in")
        .unwrap();
    assert!(mi.median > 35.0 && mi.median < 85.0, "{mi:?}");
    assert!(st.rates.messages_in_per_min > 20.0);
    assert!(st.rates.distinct_topics > 2.5 && st.rates.distinct_topics < 3.5);
    assert_eq!(st.sources.len(), 1);
    assert!(st.transport.is_some());
    assert!(serde_json::to_string(&st).is_ok());
}

#[test]
fn traffic_spike_raises_once_then_clears() {
    let mut s = Sim::learned(cfg(), 30, 15);
    let onset = s.now;
    let before = s.devs[4].per_min;
    s.dev(4).per_min = before * 20.0;
    s.run(3 * MIN);
    let a = s.expect_one(0, "traffic_spike", "dev-0004", onset);
    assert_eq!(a.metric, "messages_in_per_min");
    assert_eq!(a.mitigation, "notify");
    assert!(a.baseline.is_some_and(|b| b > 10.0 && b < 30.0), "{a:?}");
    assert!(s.orders.is_empty());
    // Still active, updated without a new alert.
    let live = s.eng.alert(&a.id).unwrap();
    assert_eq!(live.state, AlertState::Active);
    assert!(live.updated_at_ms > a.started_at_ms);
    // Recovery: cleared within a few minutes, and no new alert.
    s.dev(4).per_min = before;
    s.run(4 * MIN);
    assert_eq!(s.raised.len(), 1);
    assert_eq!(s.cleared.len(), 1);
    assert_eq!(s.eng.alert(&a.id).unwrap().state, AlertState::Cleared);
    // The attack did not become the baseline.
    let st = s.eng.device_stats("dev-0004", s.now).unwrap();
    let mi = st
        .baseline
        .iter()
        .find(|b| b.metric == "messages_in")
        .unwrap();
    assert!(mi.median < before * 2.0, "{mi:?}");
}

#[test]
fn traffic_spike_while_learning_uses_the_cohort() {
    let mut s = Sim::new(cfg(), 30, 5_000);
    s.run(MIN + 30_000);
    let onset = s.now;
    s.dev(5).per_min *= 30.0;
    s.run(MIN);
    let a = s.expect_one(0, "traffic_spike", "dev-0005", onset);
    assert_eq!(a.cohort.as_deref(), Some("model:M2"));
}

#[test]
fn authorization_probing_quarantines() {
    let mut s = Sim::learned(cfg(), 30, 12);
    let onset = s.now;
    for k in 0..10 {
        s.observe(Observation::PublishDenied {
            device: "dev-0007".into(),
            topic: format!("plant/secret/{k}"),
            quarantined: false,
            at_ms: s.now + k,
        });
    }
    // Quarantine denials of another device do not count.
    for k in 0..50 {
        s.observe(Observation::PublishDenied {
            device: "dev-0008".into(),
            topic: format!("x/{k}"),
            quarantined: true,
            at_ms: s.now + k,
        });
    }
    s.run(MIN);
    let a = s.expect_one(0, "authorization_probing", "dev-0007", onset);
    assert_eq!(a.metric, "distinct_denied_topics");
    assert_eq!(a.mitigation, "quarantine");
    assert_eq!(
        s.orders,
        vec![Order {
            alert_id: a.id.clone(),
            detector: "authorization_probing".into(),
            device: "dev-0007".into(),
            action: crate::Action::Quarantine { ttl_ms: 15 * MIN },
        }]
    );
    // Repeated denials of the same topic: the count branch, on another device.
    let onset = s.now;
    for k in 0..25 {
        s.observe(Observation::SubscribeDenied {
            device: "dev-0009".into(),
            filter: "plant/secret".into(),
            quarantined: false,
            at_ms: s.now + k,
        });
    }
    s.run(MIN);
    let b = s.expect_one(1, "authorization_probing", "dev-0009", onset);
    assert_eq!(b.metric, "denied_per_min");
    assert_eq!(s.orders.len(), 2);
}

#[test]
fn topic_scanning_notifies() {
    let mut s = Sim::learned(cfg(), 30, 12);
    let onset = s.now;
    for k in 0..14 {
        s.dev(10).filters.push(format!("plant/{k}/#"));
    }
    s.run(MIN);
    let a = s.expect_one(0, "topic_scanning", "dev-0010", onset);
    assert!(a.observed >= 10.0 && a.observed <= 16.0, "{a:?}");
    assert!(s.orders.is_empty());
}

#[test]
fn cloned_certificate_by_addresses_and_takeovers() {
    let mut s = Sim::learned(cfg(), 30, 12);
    let onset = s.now;
    s.dev(11).extra_addr = Some("198.51.100.7".parse().unwrap());
    s.run(MIN);
    let a = s.expect_one(0, "cloned_certificate", "dev-0011", onset);
    assert_eq!(a.metric, "concurrent_addresses");
    assert_eq!(a.observed, 2.0);
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(s.orders.len(), 1);
    assert_eq!(
        s.orders[0].action,
        crate::Action::Quarantine { ttl_ms: 30 * MIN }
    );

    // Takeovers, with the reconnects they cause: cloned, not flapping.
    let onset = s.now;
    for k in 0..8 {
        let at = s.now + k * 3_000;
        s.observe(Observation::TakenOver {
            device: "dev-0012".into(),
            client_id: "dev-0012".into(),
            at_ms: at,
        });
        s.observe(Observation::Connected {
            device: "dev-0012".into(),
            client_id: "dev-0012".into(),
            addr: Some(s.devs[12].addr),
            at_ms: at,
        });
    }
    s.run(2 * MIN);
    let b = s.expect_one(1, "cloned_certificate", "dev-0012", onset);
    assert_eq!(b.metric, "takeovers_per_window");
}

#[test]
fn connection_flapping() {
    let mut s = Sim::learned(cfg(), 30, 12);
    let onset = s.now;
    for k in 0..7 {
        let at = s.now + k * 4_000;
        s.observe(Observation::Disconnected {
            device: "dev-0013".into(),
            client_id: "dev-0013".into(),
            reason: "keep-alive timeout".into(),
            at_ms: at,
        });
        s.observe(Observation::Connected {
            device: "dev-0013".into(),
            client_id: "dev-0013".into(),
            addr: Some(s.devs[13].addr),
            at_ms: at + 1,
        });
    }
    s.run(MIN);
    let a = s.expect_one(0, "connection_flapping", "dev-0013", onset);
    assert_eq!(a.metric, "connects_per_window");
    let st = s.eng.device_stats("dev-0013", s.now).unwrap();
    assert_eq!(st.disconnect_reasons.get("keep-alive timeout"), Some(&7));
}

#[test]
fn new_source_address_after_learning() {
    let mut s = Sim::learned(cfg(), 30, 12);
    // Same /24: nothing.
    s.observe(Observation::Connected {
        device: "dev-0014".into(),
        client_id: "dev-0014".into(),
        addr: Some("10.2.0.200".parse().unwrap()),
        at_ms: s.now,
    });
    s.run(30_000);
    assert!(s.raised.is_empty());
    let onset = s.now;
    s.observe(Observation::Connected {
        device: "dev-0014".into(),
        client_id: "dev-0014".into(),
        addr: Some("203.0.113.9".parse().unwrap()),
        at_ms: s.now,
    });
    s.run(MIN);
    let a = s.expect_one(0, "new_source_address", "dev-0014", onset);
    assert!(
        a.explanation.contains("203.0.113.0/24"),
        "{}",
        a.explanation
    );
    assert_eq!(a.observed, 1.0);
    // Learnt: the same network again raises nothing new, and the alert clears after 10 min.
    s.observe(Observation::Connected {
        device: "dev-0014".into(),
        client_id: "dev-0014".into(),
        addr: Some("203.0.113.10".parse().unwrap()),
        at_ms: s.now,
    });
    s.run(5 * MIN);
    assert_eq!(s.raised.len(), 1);
    assert_eq!(s.eng.alert(&a.id).unwrap().state, AlertState::Active);
    s.run(6 * MIN);
    assert_eq!(s.eng.alert(&a.id).unwrap().state, AlertState::Cleared);
    let st = s.eng.device_stats("dev-0014", s.now).unwrap();
    assert_eq!(st.sources.len(), 2);
}

#[test]
fn link_degradation_of_one_device() {
    let mut s = Sim::learned(cfg(), 30, 15);
    let onset = s.now;
    s.dev(15).rtt_ms *= 10.0;
    s.run(MIN);
    let a = s.expect_one(0, "link_degradation", "dev-0015", onset);
    assert_eq!(a.metric, "rtt_ms");
    assert_eq!(a.severity, Severity::Low);
    // Retransmissions on another device.
    let onset = s.now;
    s.dev(16).retrans = 0.2;
    s.run(MIN);
    let b = s.expect_one(1, "link_degradation", "dev-0016", onset);
    assert_eq!(b.metric, "retrans_ratio");
}

#[test]
fn cohort_wide_rtt_rise_is_one_network_degradation() {
    let mut s = Sim::learned(cfg(), 30, 15);
    let onset = s.now;
    for i in (0..30).filter(|i| i % 3 == 1) {
        s.dev(i).rtt_ms *= 20.0;
    }
    s.run(3 * MIN);
    let a = s.expect_one(0, "network_degradation", "model:M1", onset);
    assert_eq!(a.device, None);
    assert_eq!(a.mitigation, "notify (cohort-wide)");
    assert!(s.orders.is_empty());
    // The rtt rise did not become the members' baseline.
    let st = s.eng.device_stats("dev-0001", s.now).unwrap();
    let rtt = st.baseline.iter().find(|b| b.metric == "rtt_ms").unwrap();
    assert!(rtt.median < 50.0, "{rtt:?}");
}

#[test]
fn inactive_device() {
    let mut s = Sim::learned(cfg(), 30, 12);
    let onset = s.now;
    s.dev(17).per_min = 0.0;
    s.run(MIN);
    let a = s.expect_one(0, "inactive", "dev-0017", onset);
    assert_eq!(a.metric, "silence_s");
    // Offline devices are silent too.
    let onset = s.now;
    s.dev(18).online = false;
    s.run(MIN);
    s.expect_one(1, "inactive", "dev-0018", onset);
    // Messages again: cleared at once.
    s.dev(17).per_min = 60.0;
    s.run(10_000);
    assert_eq!(s.eng.alert(&a.id).unwrap().state, AlertState::Cleared);
}

/// A regular reporter that falls silent is judged against its rate from before the silence:
/// the silence must neither erase that rate (no inactive alert) nor, once its buckets
/// outnumber the reporting ones, make the still-recent reports look like a spike; nor must
/// the silence, once alerted on, make the device's return look like one. Compressed time as
/// in the end-to-end test (5-second buckets, a 1-second sampler), at every phase of a bucket.
#[test]
fn a_silence_is_not_learnt_as_the_baseline_nor_makes_a_spike() {
    let text = "[engine]\nbucket = \"5s\"\nlearning_buckets = 4\n";
    for phase in 0..5 {
        let config = DetectionConfig::parse(text, "t").unwrap();
        let mut s = Sim::new(config, 12, 1_000);
        s.dev(8).per_min = 120.0;
        s.run(30_000 + phase * 1_000);
        let onset = s.now;
        s.dev(8).per_min = 0.0;
        s.run(60_000);
        let on_8 = |s: &Sim, from: usize| -> Vec<String> {
            s.raised[from..]
                .iter()
                .filter(|a| a.device.as_deref() == Some("dev-0008"))
                .map(|a| format!("{} {}", a.detector, a.explanation))
                .collect()
        };
        let seen = on_8(&s, 0);
        assert_eq!(seen.len(), 1, "phase {phase}: {seen:#?}");
        assert!(seen[0].starts_with("inactive"), "phase {phase}: {seen:#?}");
        let a = s
            .raised
            .iter()
            .find(|a| a.detector == "inactive" && a.device.as_deref() == Some("dev-0008"))
            .unwrap();
        assert!(a.started_at_ms - onset <= 40_000, "phase {phase}");
        assert_eq!(a.baseline.map(|b| b > 60.0), Some(true), "{a:?}");
        // Back at its usual rate after a long silence: no spike.
        let from = s.raised.len();
        s.dev(8).per_min = 120.0;
        s.run(120_000);
        let seen = on_8(&s, from);
        assert!(seen.is_empty(), "phase {phase}: {seen:#?}");
    }
}

fn probe(s: &mut Sim, i: usize) {
    for k in 0..25 {
        let id = s.devs[i].id.clone();
        s.observe(Observation::PublishDenied {
            device: id,
            topic: format!("t/{k}"),
            quarantined: false,
            at_ms: s.now,
        });
    }
}

#[test]
fn mitigation_rate_limit() {
    let mut s = Sim::learned(cfg(), 30, 12);
    // Eight attackers, at most three of a model (of ten): only the rate limit applies.
    for i in 0..8 {
        probe(&mut s, i);
    }
    s.run(10_000);
    assert_eq!(s.raised.len(), 8);
    assert_eq!(s.orders.len(), 5);
    let limited: Vec<&Alert> = s
        .raised
        .iter()
        .filter(|a| a.mitigation == "notify (mitigation rate limit reached)")
        .collect();
    assert_eq!(limited.len(), 3);
    // A minute later the limit has room again.
    s.run(MIN);
    probe(&mut s, 9);
    s.run(10_000);
    assert_eq!(s.orders.len(), 6);
}

#[test]
fn cohort_mitigation_fraction_never_mitigates_every_member() {
    let mut config = cfg();
    config.engine.max_mitigations_per_minute = 100;
    let mut s = Sim::learned(config, 12, 12);
    // All four devices of model M1 probe at once.
    for i in [1, 4, 7, 10] {
        probe(&mut s, i);
    }
    s.run(10_000);
    assert_eq!(s.raised.len(), 4);
    assert_eq!(s.orders.len(), 2, "{:?}", s.orders);
    assert_eq!(
        s.raised
            .iter()
            .filter(|a| a.mitigation == "notify (cohort-wide)")
            .count(),
        2
    );
}

#[test]
fn suppression_prevents_raising() {
    let mut s = Sim::learned(cfg(), 30, 12);
    let sup = s
        .eng
        .suppress(
            SuppressionRequest {
                detector: Some("authorization_probing".into()),
                device: Some("dev-0003".into()),
                until_ms: s.now + 5 * MIN,
                reason: "pen test".into(),
                by: "alice".into(),
            },
            s.now,
        )
        .unwrap();
    assert_eq!(s.eng.suppressions(s.now).len(), 1);
    probe(&mut s, 3);
    s.run(30_000);
    assert!(s.raised.is_empty());
    assert!(s.orders.is_empty());
    // Another device is not covered.
    probe(&mut s, 4);
    s.run(10_000);
    assert_eq!(s.summary().len(), 1);
    // Lifted: the still-breaching device raises.
    s.eng.unsuppress(&sup.id).unwrap();
    probe(&mut s, 3);
    s.run(10_000);
    assert!(s
        .raised
        .iter()
        .any(|a| a.device.as_deref() == Some("dev-0003")));
    assert!(matches!(
        s.eng.unsuppress(&sup.id),
        Err(DetectError::UnknownSuppression(_))
    ));
    let bad = SuppressionRequest {
        detector: None,
        device: None,
        until_ms: s.now + 1,
        reason: String::new(),
        by: String::new(),
    };
    assert!(s.eng.suppress(bad, s.now).is_err());
    let bad = SuppressionRequest {
        detector: Some("trafic_spike".into()),
        device: None,
        until_ms: s.now + 1,
        reason: String::new(),
        by: String::new(),
    };
    assert!(s.eng.suppress(bad, s.now).is_err());
}

#[test]
fn verdicts_on_active_and_cleared_alerts() {
    let mut s = Sim::learned(cfg(), 30, 12);
    s.dev(17).per_min = 0.0;
    s.run(MIN);
    let id = s.raised[0].id.clone();
    let a = s
        .eng
        .set_verdict(
            &id,
            VerdictKind::TruePositive,
            "bob",
            Some("cable".into()),
            s.now,
        )
        .unwrap();
    assert_eq!(a.verdict.as_ref().unwrap().kind, VerdictKind::TruePositive);
    s.dev(17).per_min = 20.0;
    s.run(20_000);
    assert_eq!(s.eng.alert(&id).unwrap().state, AlertState::Cleared);
    let a = s
        .eng
        .set_verdict(&id, VerdictKind::BenignPositive, "carol", None, s.now)
        .unwrap();
    assert_eq!(a.verdict.as_ref().unwrap().by, "carol");
    assert_eq!(
        s.eng.alerts(false)[0].verdict.as_ref().unwrap().kind,
        VerdictKind::BenignPositive
    );
    assert!(s.eng.alerts(true).is_empty());
    assert!(matches!(
        s.eng
            .set_verdict("alert-nope", VerdictKind::FalsePositive, "x", None, s.now),
        Err(DetectError::UnknownAlert(_))
    ));
    let json = serde_json::to_value(s.eng.alert(&id).unwrap()).unwrap();
    assert_eq!(json["state"], "cleared");
    assert_eq!(json["verdict"]["kind"], "benign_positive");
    assert_eq!(json["severity"], "low");
}

#[test]
fn reload_keeps_baselines_and_alerts() {
    let mut s = Sim::learned(cfg(), 30, 12);
    s.dev(17).per_min = 0.0;
    s.run(MIN);
    assert_eq!(s.raised.len(), 1);
    let before = s.eng.device_stats("dev-0002", s.now).unwrap();
    let text = "[[rule]]\nname = \"big-out\"\nmetric = \"messages_in\"\ncomparison = \">\"\nthreshold = 500.0\ndatapoints_to_alarm = 2\nscope = { models = [\"M2\"] }\nmitigation = \"throttle\"\n";
    s.eng
        .set_config(DetectionConfig::parse(text, "detection.toml").unwrap());
    s.eng.tick(s.now);
    let after = s.eng.device_stats("dev-0002", s.now).unwrap();
    assert!(!after.learning);
    assert_eq!(before.baseline, after.baseline);
    assert_eq!(s.eng.alerts(true).len(), 1);
    // The new rule works: model M2 only, after two breaching ticks, with a throttle.
    let onset = s.now;
    s.dev(2).per_min = 2000.0;
    s.dev(3).per_min = 2000.0; // model M0: out of scope, but a traffic spike
    s.run(MIN);
    let rule: Vec<&Alert> = s
        .raised
        .iter()
        .filter(|a| a.detector == "rule:big-out")
        .collect();
    assert_eq!(rule.len(), 1, "{:?}", s.summary());
    assert_eq!(rule[0].device.as_deref(), Some("dev-0002"));
    assert!(rule[0].started_at_ms >= onset + 2 * 5_000 && rule[0].started_at_ms <= onset + MIN);
    assert_eq!(rule[0].mitigation, "throttle");
    assert!(s.orders.iter().any(|o| o.action
        == crate::Action::Throttle {
            per_second: 5,
            ttl_ms: 10 * MIN
        }));
}

#[test]
fn cohort_and_deviation_rules() {
    let text = r#"
[[rule]]
name = "quiet"
metric = "messages_in"
comparison = "<"
cohort = "model"
percentile = 10
factor = 0.3
datapoints_to_clear = 2

[[rule]]
name = "chatty-out"
metric = "messages_out"
comparison = ">"
deviations = 10
"#;
    let config = DetectionConfig::parse(text, "t").unwrap();
    let mut s = Sim::learned(config, 30, 12);
    let onset = s.now;
    s.dev(20).per_min *= 0.05; // M2: far below its cohort
    s.run(MIN);
    let names: BTreeSet<String> = s.raised.iter().map(|a| a.detector.clone()).collect();
    assert!(names.contains("rule:quiet"), "{names:?}");
    let q = s
        .raised
        .iter()
        .find(|a| a.detector == "rule:quiet")
        .unwrap();
    assert_eq!(q.device.as_deref(), Some("dev-0020"));
    assert_eq!(q.cohort.as_deref(), Some("model:M2"));
    assert!(q.started_at_ms <= onset + MIN);
}

#[test]
fn remove_device_clears_its_alerts() {
    let mut s = Sim::learned(cfg(), 30, 12);
    s.dev(17).per_min = 0.0;
    s.run(MIN);
    let id = s.raised[0].id.clone();
    let cleared = s.eng.remove_device("dev-0017");
    assert_eq!(
        cleared.len(),
        1,
        "the cleared alert is handed back to be announced"
    );
    assert_eq!(cleared[0].id, id);
    assert_eq!(cleared[0].state, AlertState::Cleared);
    assert!(s.eng.device_stats("dev-0017", s.now).is_none());
    assert_eq!(s.eng.alert(&id).unwrap().state, AlertState::Cleared);
    assert!(s.eng.alerts(true).is_empty());
    // Other devices are intact (the index moved one into the hole).
    assert!(s.eng.device_stats("dev-0029", s.now).is_some());
    s.devs.remove(17);
    s.run(MIN);
    assert_eq!(s.raised.len(), 1);
}

#[test]
fn compressed_buckets() {
    // Six-second buckets: time compressed tenfold, windows too.
    let text = "[engine]\nbucket = \"6s\"\nwindow = \"6s\"\n[detectors.traffic_spike]\nmin_per_minute = 300.0\n";
    let config = DetectionConfig::parse(text, "t").unwrap();
    let mut s = Sim::new(config, 30, 1_000);
    s.run(2 * MIN);
    assert!(s.raised.is_empty(), "{:?}", s.summary());
    assert!(!s.eng.device_stats("dev-0000", s.now).unwrap().learning);
    let onset = s.now;
    s.dev(8).per_min *= 20.0;
    s.run(10_000);
    s.expect_one(0, "traffic_spike", "dev-0008", onset);
}

#[test]
fn extreme_inputs_do_not_panic() {
    let mut eng = Engine::new(cfg());
    let big = Counters {
        messages_in: u64::MAX,
        bytes_in: u64::MAX,
        messages_out: u64::MAX,
        bytes_out: u64::MAX,
        publish_denied: u64::MAX,
        subscribe_denied: u64::MAX,
        wildcard_subscribes: u64::MAX,
        throttled: u64::MAX,
    };
    let tr = Transport {
        rtt_us: u32::MAX,
        rttvar_us: u32::MAX,
        min_rtt_us: u32::MAX,
        total_retrans: u32::MAX,
        segs_out: u32::MAX,
        lost: u32::MAX,
        bytes_sent: u64::MAX,
        bytes_retrans: u64::MAX,
        delivery_rate: u64::MAX,
        last_recv_ms: u32::MAX,
    };
    for at in [i64::MIN, -1, 0, 1, i64::MAX] {
        eng.observe(Observation::Connected {
            device: "d".into(),
            client_id: "c".into(),
            addr: Some("::1".parse().unwrap()),
            at_ms: at,
        });
        eng.observe(Observation::SubscribeDenied {
            device: "d".into(),
            filter: "#".into(),
            quarantined: false,
            at_ms: at,
        });
        for counters in [big, Counters::default(), big] {
            eng.sample(
                at,
                vec![Sample {
                    device: "d".into(),
                    counters,
                    topics: Sketch([u64::MAX; 8]),
                    filters: Sketch([u64::MAX; 8]),
                    connections: vec![
                        LiveConn {
                            client_id: "c".into(),
                            addr: Some("192.0.2.1".parse().unwrap()),
                            transport: Some(tr),
                        },
                        LiveConn {
                            client_id: "c2".into(),
                            addr: None,
                            transport: Some(Transport::default()),
                        },
                    ],
                    restarted: counters == big,
                    closed: vec![("c".into(), tr)],
                }],
            );
            let _ = eng.tick(at);
        }
        let _ = eng.device_stats("d", at);
        let _ = eng.fleet_stats(at);
    }
}

fn one(device: &str, counters: Counters, conns: Vec<LiveConn>) -> Sample {
    Sample {
        device: device.into(),
        counters,
        topics: Sketch::default(),
        filters: Sketch::default(),
        connections: conns,
        restarted: false,
        closed: Vec::new(),
    }
}

fn conn(client: &str, addr: &str, last_recv_ms: u32) -> LiveConn {
    LiveConn {
        client_id: client.into(),
        addr: Some(addr.parse().unwrap()),
        transport: Some(Transport {
            last_recv_ms,
            ..Transport::default()
        }),
    }
}

fn cloned_alerts(eng: &Engine) -> usize {
    eng.alerts(false)
        .iter()
        .filter(|a| a.detector == detectors::CLONED_CERTIFICATE)
        .count()
}

#[test]
fn regression_a_device_caught_mid_move_or_with_a_stale_connection_is_not_a_clone() {
    let mut eng = Engine::new(cfg());
    let mut now = T0;
    // One sample at two addresses (the new connection before the old one timed out), then one.
    for conns in [
        vec![conn("c", "10.0.0.1", 0), conn("c2", "10.9.0.1", 0)],
        vec![conn("c2", "10.9.0.1", 0)],
        vec![conn("c2", "10.9.0.1", 0)],
    ] {
        now += 10_000;
        eng.sample(now, vec![one("d", Counters::default(), conns)]);
        let _ = eng.tick(now);
    }
    assert_eq!(cloned_alerts(&eng), 0);
    // A half-open connection that has received nothing for minutes, beside the live one.
    for _ in 0..5 {
        now += 10_000;
        let conns = vec![conn("c", "10.0.0.1", 300_000), conn("c2", "10.9.0.1", 0)];
        eng.sample(now, vec![one("d", Counters::default(), conns)]);
        let _ = eng.tick(now);
    }
    assert_eq!(cloned_alerts(&eng), 0);
    // Two live addresses for CONCURRENT_SAMPLES samples in a row: a clone.
    for i in 0..crate::CONCURRENT_SAMPLES {
        now += 10_000;
        let conns = vec![conn("c", "10.0.0.1", 500), conn("c2", "10.9.0.1", 0)];
        eng.sample(now, vec![one("d", Counters::default(), conns)]);
        let _ = eng.tick(now);
        let expect = usize::from(i + 1 == crate::CONCURRENT_SAMPLES);
        assert_eq!(cloned_alerts(&eng), expect, "after {} samples", i + 1);
    }
}

#[test]
fn regression_an_anomaly_on_most_of_a_fleet_without_cohorts_does_not_mitigate_most_of_it() {
    // Devices with no group and no model: the whole fleet is their cohort.
    let mut eng = Engine::new(cfg());
    let devices: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
    let mut now = T0;
    // Every device starts probing at once (a policy change that denies everyone, say).
    for d in &devices {
        for t in 0..30 {
            eng.observe(Observation::PublishDenied {
                device: d.clone(),
                topic: format!("t/{t}"),
                quarantined: false,
                at_ms: now,
            });
        }
    }
    now += 1_000;
    let tick = eng.tick(now);
    let raised = tick
        .changes
        .iter()
        .filter(|a| a.detector == detectors::AUTHORIZATION_PROBING)
        .count();
    assert_eq!(raised, 6);
    assert!(
        tick.orders.len() <= 3,
        "{} of 6 devices mitigated: {:?}",
        tick.orders.len(),
        tick.orders
    );
    assert!(tick
        .changes
        .iter()
        .any(|a| a.mitigation == "notify (cohort-wide)"));
}

#[test]
fn a_closed_connections_last_reading_and_a_restarted_meter_are_counted() {
    let mut eng = Engine::new(cfg());
    let t = |sent: u64, retrans: u64| Transport {
        bytes_sent: sent,
        bytes_retrans: retrans,
        segs_out: u32::try_from(sent / 100).unwrap(),
        ..Transport::default()
    };
    let mut now = T0;
    let live = |tr: Transport| LiveConn {
        client_id: "c".into(),
        addr: None,
        transport: Some(tr),
    };
    let c = |n: u64| Counters {
        messages_in: n,
        ..Counters::default()
    };
    eng.sample(now, vec![one("d", c(1000), vec![live(t(10_000, 0))])]);
    now += 5_000;
    // The connection closed: only its final reading (taken at close) says 5 % was resent.
    let mut s = one("d", c(1100), vec![]);
    s.closed = vec![("c".into(), t(30_000, 1_000))];
    eng.sample(now, vec![s]);
    now += 5_000;
    // A new meter (the device was forgotten and came back): its counters are all new.
    let mut s = one("d", c(40), vec![live(t(100, 0))]);
    s.restarted = true;
    eng.sample(now, vec![s]);
    let st = eng.device_stats("d", now).unwrap();
    let sent: u64 = st.buckets.iter().map(|b| b.bytes_sent).sum();
    let retrans: u64 = st.buckets.iter().map(|b| b.bytes_retrans).sum();
    let msgs: u64 = st.buckets.iter().map(|b| b.messages_in).sum();
    // A connection's first reading counts everything since it opened.
    assert_eq!((sent, retrans), (10_000 + 20_000 + 100, 1_000));
    assert_eq!(msgs, 100 + 40);
}
