//! Detection end to end: a fleet of real paho-mqtt devices reports steadily over mTLS while
//! attacks are injected, one per device; each named detector must raise its alert for the
//! right device within 60 s of the attack's onset, its mitigation must happen (a quarantine
//! with a time-to-live lifts itself), quiet devices must raise nothing, alerts reach a webhook
//! receiver after a transient failure, `TCP_INFO` shows in `device stats`, and the live
//! `/metrics` passes `promtool check metrics`.
//!
//! Time is compressed honestly: 5-second buckets and a 1-second sampler, so a device's own
//! baseline is ready after 20 s of traffic instead of minutes; the 60-second detection bound is
//! real time.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::fleet::now_ms;

use serde_json::{json, Value};
use support::fleet::{device_spec, install_rules, Fleet, DETECTION, POLICY};
use support::Server;

/// The mitigations the defaults leave at `notify`, each given another action here so that all
/// five are seen working.
const MITIGATIONS: &str = r#"
[detectors.traffic_spike]
mitigation = "throttle"
throttle_per_second = 2
ttl = "30s"

[detectors.topic_scanning]
mitigation = "disconnect"

[detectors.inactive]
mitigation = "revoke"
"#;

fn alerts(s: &Server) -> Vec<Value> {
    s.events()
        .into_iter()
        .filter(|e| e["type"] == "alert")
        .collect()
}

/// A webhook receiver that answers 503 to its first request and 200 afterwards, keeping every
/// body it was sent.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<(u16, Value)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
        let b = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end().to_ascii_lowercase();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let status = if b.lock().unwrap().is_empty() {
                    503
                } else {
                    200
                };
                b.lock().unwrap().push((status, v));
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, bodies }
    }
}

/// Every named detector that a device's own traffic can trigger, each on its own device,
/// all in one fleet; quiet devices beside them.
#[test]
fn each_detector_fires_within_a_minute_on_the_attacked_device_and_mitigates() {
    let hook = Receiver::start();
    let hook_url = format!("webhooks = [\"http://127.0.0.1:{}/hook\"]", hook.port);
    let s = Server::start_with(
        &[
            ("sample_interval_ms = 10000", "sample_interval_ms = 1000"),
            ("webhooks = []", &hook_url),
        ],
        POLICY,
    );
    // Six mitigations within a minute here: lift the rate limit (5 a minute, unit-tested in
    // tollgate-detect) so that each is seen.
    let rules = DETECTION.replace(
        "learning_buckets = 4",
        "learning_buckets = 4\nmax_mitigations_per_minute = 10",
    );
    install_rules(&s, &format!("{rules}{MITIGATIONS}"));
    let plan_devices = [
        ("quiet-a1", "model-a", None),
        ("quiet-a2", "model-a", None),
        ("quiet-b1", "model-b", None),
        ("quiet-b2", "model-b", None),
        (
            "spiker",
            "model-a",
            Some(json!({"op": "spike", "x": 25, "secs": 60})),
        ),
        ("prober", "model-b", Some(json!({"op": "probe"}))),
        ("scanner", "model-a", Some(json!({"op": "scan"}))),
        (
            "flapper",
            "model-b",
            Some(json!({"op": "flap", "times": 9})),
        ),
        ("mute", "model-a", Some(json!({"op": "silence"}))),
        (
            "twin",
            "model-b",
            Some(json!({"op": "clone", "bind2": "127.0.0.2", "secs": 40})),
        ),
        (
            "mover",
            "model-a",
            Some(json!({"op": "new_source", "bind2": "127.0.5.2"})),
        ),
    ];
    let expected: BTreeMap<&str, &str> = [
        ("spiker", "traffic_spike"),
        ("prober", "authorization_probing"),
        ("scanner", "topic_scanning"),
        ("flapper", "connection_flapping"),
        ("mute", "inactive"),
        ("twin", "cloned_certificate"),
        ("mover", "new_source_address"),
    ]
    .into_iter()
    .collect();
    let mut specs = Vec::new();
    let mut attacks = Vec::new();
    let mut ca = None;
    for (i, (id, group, attack)) in plan_devices.iter().enumerate() {
        let d = s.add_device(id, &[group]);
        ca = Some(d.ca.clone());
        specs.push(device_spec(&d, json!({})));
        if let Some(mut a) = attack.clone() {
            a["device"] = json!(i);
            a["at"] = json!(30);
            attacks.push(a);
        }
    }
    let fleet = Fleet::start(json!({
        "host": "127.0.0.1",
        "port": s.mqtt_port,
        "ca": ca.unwrap(),
        "period": 0.5,
        "duration": 150,
        "devices": specs,
        "attacks": attacks,
    }));
    fleet.wait_ready();

    // Each attacked device's alert, within 60 s of its onset.
    let mut detected: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30 + 60 + 20);
    while detected.len() < expected.len() && Instant::now() < deadline {
        for a in alerts(&s) {
            let (Some(dev), Some(det)) = (a["device"].as_str(), a["detector"].as_str()) else {
                continue;
            };
            if a["state"] == "active"
                && expected.get(dev) == Some(&det)
                && !detected.contains_key(dev)
            {
                let onset = fleet.onset(dev).expect("an alert before its attack began");
                detected.insert(dev.to_owned(), now_ms() - onset);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = alerts(&s);
    for (dev, det) in &expected {
        let took = detected.get(*dev).copied();
        assert!(
            took.is_some_and(|ms| ms <= 60_000),
            "{det} on {dev}: detected after {took:?} ms (onset {:?}); alerts:\n{all:#?}",
            fleet.onset(dev)
        );
    }
    eprintln!("time to detect (ms): {detected:?}");
    for a in &all {
        eprintln!(
            "alert {} {} {} {}={} (baseline {}, threshold {}) -> {}",
            a["state"],
            a["detector"],
            a["device"],
            a["metric"],
            a["observed"],
            a["baseline"],
            a["threshold"],
            a["mitigation"]
        );
    }
    // Quiet devices raised nothing.
    for a in &all {
        let dev = a["device"].as_str().unwrap_or("");
        assert!(!dev.starts_with("quiet-"), "alert on a quiet device: {a:#}");
        // Every alert explains itself.
        for k in [
            "id",
            "detector",
            "severity",
            "state",
            "started_at",
            "metric",
            "observed",
            "threshold",
            "mitigation",
        ] {
            assert!(!a[k].is_null(), "alert without {k}: {a:#}");
        }
        assert!(
            a.get("baseline").is_some(),
            "alert without a baseline field: {a:#}"
        );
    }

    // Mitigation: the prober and the twin were quarantined by their detectors, and the
    // quarantine (20 s) lifted itself.
    for (dev, det) in [
        ("prober", "authorization_probing"),
        ("twin", "cloned_certificate"),
    ] {
        let source = format!("detector:{det}");
        let q = s.wait_event("detector quarantine", |e| {
            e["type"] == "device_quarantined" && e["device"] == dev && e["source"] == source
        });
        assert!(q["by"].as_str().unwrap().contains("alert"), "{q:#}");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let released = s.events().into_iter().any(|e| {
                e["type"] == "device_released"
                    && e["device"] == dev
                    && e["by"] == "ttl"
                    && e["sources"]
                        .as_array()
                        .is_some_and(|v| v.contains(&json!(source)))
            });
            if released {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{dev}'s quarantine did not lift itself"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Throttle: the spiker's publishes over 2/s were dropped while it held.
    let t = s.wait_event("throttle", |e| {
        e["type"] == "device_throttled" && e["device"] == "spiker"
    });
    assert_eq!(t["per_second"], 2, "{t:#}");
    // Disconnect: the scanner's connection was closed (it reconnects by itself).
    s.wait_event("disconnect", |e| {
        e["type"] == "device_disconnected" && e["device"] == "scanner" && e["connections"] == 1
    });
    // Revoke: the silent device's certificate is revoked by the detector.
    let r = s.wait_event("revoke", |e| {
        e["type"] == "device_revoked" && e["device"] == "mute"
    });
    assert!(
        r["by"].as_str().unwrap().starts_with("detector:inactive"),
        "{r:#}"
    );

    // The API lists the alerts, and an operator can judge one and suppress a detector.
    let (st, list) = s.admin_api("GET", "/api/v1/alerts", None);
    assert_eq!(st, 200);
    let spike = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["detector"] == "traffic_spike")
        .unwrap()
        .clone();
    assert!(spike["baseline"].as_f64().is_some(), "{spike:#}");
    let path = format!("/api/v1/alerts/{}/verdict", spike["id"].as_str().unwrap());
    let (st, judged) = s.admin_api("POST", &path, Some(json!({"verdict": "true_positive"})));
    assert_eq!(st, 200, "{judged}");
    assert_eq!(judged["verdict"]["kind"], "true_positive");
    let (st, bad) = s.admin_api("POST", &path, Some(json!({"verdict": "maybe"})));
    assert!(st == 400 || st == 422, "{st} {bad}");
    let (st, sup) = s.admin_api(
        "POST",
        "/api/v1/alerts/suppressions",
        Some(json!({"detector": "inactive", "for": "1h", "reason": "maintenance window"})),
    );
    assert_eq!(st, 201, "{sup}");
    for bad in [
        json!({"detector": "no_such_detector", "for": "1h", "reason": "x"}),
        json!({"detector": "inactive", "for": "soon", "reason": "x"}),
        json!({"detector": "inactive", "for": "100d", "reason": "x"}),
        json!({"for": "1h", "reason": "neither detector nor device"}),
    ] {
        let (st, body) = s.admin_api("POST", "/api/v1/alerts/suppressions", Some(bad.clone()));
        assert_eq!(st, 422, "{bad} -> {st} {body}");
        assert!(body["detail"].is_string(), "{body}");
    }
    let (st, _) = s.admin_api("GET", "/api/v1/alerts/alert-nope", None);
    assert_eq!(st, 404);
    let out = s.cli(&["alerts", "--active"]);
    assert!(out.status.success());

    // TCP_INFO of a live connection, in the CLI and the API.
    let out = s.cli(&["device", "stats", "quiet-a1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("transport (TCP_INFO at") && text.contains("rtt "),
        "{text}"
    );
    assert!(text.contains("baseline: ready"), "{text}");
    let (st, stats) = s.admin_api("GET", "/api/v1/devices/quiet-a1/stats", None);
    assert_eq!(st, 200);
    assert!(
        stats["transport"]["rtt_ms"].as_f64().unwrap() > 0.0,
        "{stats:#}"
    );
    assert!(!stats["buckets"].as_array().unwrap().is_empty());
    let (st, fleet_stats) = s.admin_api("GET", "/api/v1/stats", None);
    assert_eq!(st, 200);
    assert!(
        fleet_stats["online"].as_u64().unwrap() >= 8,
        "{fleet_stats:#}"
    );

    // The live /metrics passes promtool, and counts the alerts.
    let addrs: Value =
        serde_json::from_str(&std::fs::read_to_string(s.data.join("run/addresses.json")).unwrap())
            .unwrap();
    let metrics_url = format!("http://{}/metrics", addrs["metrics"].as_str().unwrap());
    let body = Command::new("curl")
        .args(["-sf", &metrics_url])
        .output()
        .unwrap();
    assert!(body.status.success());
    let text = String::from_utf8_lossy(&body.stdout).to_string();
    assert!(
        text.contains("tollgate_alerts_total{detector=\"traffic_spike\""),
        "{text}"
    );
    assert!(
        text.contains("tollgate_mitigations_total{action=\"quarantine\"}"),
        "{text}"
    );
    assert!(!text.contains("spiker"), "a device id as a label: {text}");
    let throttled = text
        .lines()
        .find(|l| l.starts_with("tollgate_messages_dropped_total{cause=\"throttled\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(throttled > 0.0, "no publish was throttled: {text}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The webhook got the alerts as Alertmanager JSON, the first one again after its 503.
    let bodies = hook.bodies.lock().unwrap().clone();
    assert!(bodies.len() >= 2, "{bodies:#?}");
    let (first_status, first) = &bodies[0];
    assert_eq!(*first_status, 503);
    assert_eq!(first["version"], "4");
    let first_id = first["alerts"][0]["annotations"]["alert_id"].clone();
    assert!(
        bodies[1..]
            .iter()
            .any(|(st, b)| *st == 200 && b["alerts"][0]["annotations"]["alert_id"] == first_id),
        "the notification refused with 503 was not retried: {bodies:#?}"
    );
    let labels = &first["alerts"][0]["labels"];
    assert!(
        labels["alertname"].is_string() && labels["severity"].is_string(),
        "{first:#}"
    );
    drop(fleet);
}

/// A broken `detection.toml` is refused with a line-precise error, and the rules in force stay.
#[test]
fn a_broken_detection_file_is_refused_and_the_previous_rules_stay() {
    let s = Server::start_with(&[], POLICY);
    install_rules(&s, DETECTION);
    let tmp = s.data.join("detection.toml.tmp");
    std::fs::write(
        &tmp,
        "[engine]\nbucket = \"5s\"\n\n[detectors.inactive]\ndeviations = 3.0\n",
    )
    .unwrap();
    std::fs::rename(&tmp, s.data.join("detection.toml")).unwrap();
    let e = s.wait_event("rules rejected", |e| {
        e["type"] == "detection_rules_rejected"
    });
    let err = e["error"].as_str().unwrap();
    assert!(err.contains("detection.toml:5:1"), "{err}");
    assert!(err.contains("deviations"), "{err}");
    // Still serving, with the previous rules.
    let (st, _) = s.admin_api("GET", "/api/v1/alerts", None);
    assert_eq!(st, 200);
    // A start with a broken file fails loudly instead of running without detection.
    let mut s = s;
    s.stop();
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--data"])
        .arg(&s.data)
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("detection.toml:5:1"), "{stderr}");
}
