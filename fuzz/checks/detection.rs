//! Check for the `detection` fuzz target: arbitrary bytes as a `detection.toml`
//! (`DetectionConfig::parse`), and as a stream of facts fed to the detection engine (samples
//! with hostile counters, bitmaps, addresses and TCP readings; observations with odd topics
//! and times), with ticks in between.
//!
//! Shared by `fuzz/fuzz_targets/detection.rs` (libFuzzer) and
//! `crates/tollgate-detect/tests/fuzz_corpus.rs` (replays `fuzz/corpus/detection/` on stable),
//! so it uses nothing but `tollgate-detect`. Every broken invariant panics. See
//! docs/fuzzing.md.
//!
//! The invariants:
//! * a configuration error renders, and each of its lines names the file with a 1-based line
//!   and column;
//! * a configuration that parses survives being given to an engine;
//! * whatever the engine is fed (counters that jump or go backwards, times that go backwards,
//!   saturated bitmaps, zero or huge round-trip times), no alert carries a non-finite
//!   `observed` or `threshold`, an alert's id is unique, and every mitigation order names a
//!   device that exists in the stream.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use tollgate_detect::{
    Counters, DetectionConfig, DeviceInfo, Engine, LiveConn, Observation, Sample, Sketch, Transport,
};

const COMPRESSED: &str = "[engine]\nbucket = \"2s\"\nlearning_buckets = 2\n";

/// Feed `data` as a configuration and as an engine's input; panics on any broken invariant.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match DetectionConfig::parse(&text, "detection.toml") {
        Ok(cfg) => {
            let _ = Engine::new(cfg);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            for line in msg.lines().filter(|l| l.starts_with("detection.toml:")) {
                let mut parts = line.splitn(4, ':');
                let _file = parts.next();
                let l: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let c: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                assert!(l >= 1 && c >= 1, "bad position in {line:?}");
            }
        }
    }
    run_engine(data);
}

/// Bytes as a little stream of engine inputs.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..8 {
            v = (v << 8) | u64::from(self.byte()?);
        }
        Some(v)
    }

    fn u32(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            v = (v << 8) | u32::from(self.byte()?);
        }
        Some(v)
    }
}

fn run_engine(data: &[u8]) {
    let Ok(cfg) = DetectionConfig::parse(COMPRESSED, "detection.toml") else {
        panic!("the check's own configuration does not parse");
    };
    let mut engine = Engine::new(cfg);
    let devices = ["d0", "d1", "d2", "d3"];
    for (i, d) in devices.iter().enumerate() {
        engine.set_device(
            d,
            DeviceInfo {
                groups: vec![format!("g{}", i % 2)],
                model: (i % 3 == 0).then(|| "m".to_owned()),
            },
        );
    }
    let mut r = Reader(data);
    let mut now: i64 = 1_700_000_000_000;
    let mut ids = BTreeSet::new();
    let mut steps = 0;
    while let Some(op) = r.byte() {
        steps += 1;
        if steps > 2_000 {
            break;
        }
        let dev = devices[usize::from(op >> 6)].to_owned();
        match op % 8 {
            0 => {
                // Time moves, mostly forward, sometimes back.
                let dt = i64::from(r.byte().unwrap_or(0)) * 250;
                now = if op & 0x20 != 0 { now - dt } else { now + dt };
            }
            1 => {
                let counters = Counters {
                    messages_in: r.u64().unwrap_or(0),
                    bytes_in: r.u64().unwrap_or(0),
                    messages_out: u64::from(r.u32().unwrap_or(0)),
                    bytes_out: u64::from(r.u32().unwrap_or(0)),
                    publish_denied: u64::from(r.byte().unwrap_or(0)),
                    subscribe_denied: u64::from(r.byte().unwrap_or(0)),
                    wildcard_subscribes: u64::from(r.byte().unwrap_or(0)),
                    throttled: u64::from(r.byte().unwrap_or(0)),
                };
                let mut bits = [0u64; 8];
                for b in bits.iter_mut().take(usize::from(op >> 3 & 7)) {
                    *b = r.u64().unwrap_or(u64::MAX);
                }
                let transport = (op & 0x10 != 0).then(|| Transport {
                    rtt_us: r.u32().unwrap_or(0),
                    rttvar_us: r.u32().unwrap_or(0),
                    min_rtt_us: r.u32().unwrap_or(0),
                    total_retrans: r.u32().unwrap_or(0),
                    segs_out: r.u32().unwrap_or(0),
                    lost: r.u32().unwrap_or(0),
                    bytes_sent: r.u64().unwrap_or(0),
                    bytes_retrans: r.u64().unwrap_or(0),
                    delivery_rate: r.u64().unwrap_or(0),
                    last_recv_ms: r.u32().unwrap_or(0),
                });
                let addr = IpAddr::V4(Ipv4Addr::new(10, 0, r.byte().unwrap_or(0), 1));
                let mut connections = vec![LiveConn {
                    client_id: dev.clone(),
                    addr: Some(addr),
                    transport,
                }];
                if op & 0x08 != 0 {
                    connections.push(LiveConn {
                        client_id: format!("{dev}:b"),
                        addr: None,
                        transport: None,
                    });
                }
                engine.sample(
                    now,
                    vec![Sample {
                        device: dev.clone(),
                        counters,
                        topics: Sketch(bits),
                        filters: Sketch(bits),
                        connections,
                        restarted: op & 0x20 != 0,
                        closed: transport
                            .map(|t| vec![(format!("{dev}:old"), t)])
                            .unwrap_or_default(),
                    }],
                );
            }
            2 => engine.observe(Observation::Connected {
                device: dev.clone(),
                client_id: dev.clone(),
                addr: Some(IpAddr::V4(Ipv4Addr::new(r.byte().unwrap_or(0), 1, 2, 3))),
                at_ms: now,
            }),
            3 => engine.observe(Observation::Disconnected {
                device: dev.clone(),
                client_id: dev.clone(),
                reason: String::from_utf8_lossy(r.0.get(..4).unwrap_or_default()).into_owned(),
                at_ms: now,
            }),
            4 => engine.observe(Observation::PublishDenied {
                device: dev.clone(),
                topic: format!("t/{}", r.byte().unwrap_or(0)),
                quarantined: op & 0x20 != 0,
                at_ms: now,
            }),
            5 => engine.observe(Observation::SubscribeDenied {
                device: dev.clone(),
                filter: format!("+/{}/#", r.byte().unwrap_or(0)),
                quarantined: false,
                at_ms: now,
            }),
            6 => engine.observe(Observation::TakenOver {
                device: dev.clone(),
                client_id: dev.clone(),
                at_ms: now,
            }),
            _ => {
                let tick = engine.tick(now);
                for a in &tick.changes {
                    assert!(a.observed.is_finite(), "{a:?}");
                    assert!(a.threshold.is_finite(), "{a:?}");
                    assert!(a.baseline.is_none_or(f64::is_finite), "{a:?}");
                    if a.state == tollgate_detect::AlertState::Active
                        && a.started_at_ms == a.updated_at_ms
                    {
                        ids.insert(a.id.clone());
                    }
                }
                for o in &tick.orders {
                    assert!(devices.contains(&o.device.as_str()), "{o:?}");
                }
            }
        }
    }
    let _ = engine.fleet_stats(now);
    for d in devices {
        let _ = engine.device_stats(d, now);
    }
    let listed: Vec<String> = engine.alerts(false).into_iter().map(|a| a.id).collect();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "duplicate alert ids: {listed:?}"
    );
}
