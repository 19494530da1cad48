//! Least privilege from observed traffic, end to end: a small fleet (sensors, a backend) talks
//! through a deliberately broad policy with mosquitto clients; `tollgate policy suggest`
//! proposes a narrower one from what the broker saw; the same traffic replayed against the
//! suggestion is all allowed, while what only the broad policy allowed (a sensor writing
//! another sensor's telemetry) is now denied; `policy lint --observed` names the grant nobody
//! used.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::time::{Duration, Instant};

use support::{Device, Server};

const BROAD: &str = r#"
[[allow]]
id = "sensors-anything"
who = "group:sensors"
publish = ["devices/#"]
subscribe = ["devices/#"]

[[allow]]
id = "backend-anything"
who = "group:backend"
publish = ["devices/#"]
subscribe = ["devices/#"]

[[allow]]
id = "legacy-never-used"
who = "group:sensors"
publish = ["legacy/#"]
"#;

fn publish(s: &Server, d: &Device, topic: &str) {
    let out = s.mosquitto_pub(d, &["-V", "5", "-q", "1", "-t", topic, "-m", "x"]);
    assert!(
        out.status.success(),
        "{} publish {topic}: {}",
        d.id,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn subscribe(s: &Server, d: &Device, filter: &str) {
    // Subscribe, wait a moment for nothing, and leave.
    let out = std::process::Command::new("mosquitto_sub")
        .args(s.mosq_args(d))
        .args(["-V", "5", "-t", filter, "-W", "1"])
        .output()
        .unwrap();
    // -W ends it with a timeout exit code; what matters is the SUBACK, seen in the events.
    let _ = out;
}

/// The fleet's traffic.
fn traffic(s: &Server, sensors: &[Device], backend: &Device) {
    for d in sensors {
        publish(s, d, &format!("devices/{}/telemetry", d.id));
        publish(s, d, &format!("devices/{}/events/boot", d.id));
        subscribe(s, d, &format!("devices/{}/commands/#", d.id));
    }
    subscribe(s, backend, "devices/+/telemetry");
    publish(
        s,
        backend,
        &format!("devices/{}/commands/reboot", sensors[0].id),
    );
}

fn denials(s: &Server) -> usize {
    s.count_events("publish_denied") + s.count_events("subscribe_denied")
}

#[test]
fn a_suggested_policy_allows_all_observed_traffic_and_less_than_before() {
    let s = Server::start_with(
        &[("sample_interval_ms = 10000", "sample_interval_ms = 500")],
        BROAD,
    );
    let sensors: Vec<Device> = (1..=4)
        .map(|i| s.add_device(&format!("sensor-{i}"), &["sensors"]))
        .collect();
    let backend = s.add_device("backend-1", &["backend"]);
    traffic(&s, &sensors, &backend);
    assert_eq!(denials(&s), 0, "the broad policy allows it all");

    // The sampler hands what the broker saw to the registry.
    let want = sensors.len() * 3 + 2;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, v) = s.admin_api("GET", "/api/v1/policy/observations?since=1h", None);
        assert_eq!(code, 200, "{v}");
        let n = v["observations"].as_array().unwrap().len();
        if n >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {want} observations: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The grant nobody used.
    let policy_file = s.data.join("policy.toml");
    let out = s.cli(&[
        "policy",
        "lint",
        policy_file.to_str().unwrap(),
        "--observed",
        "--since",
        "1h",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("legacy-never-used") && text.contains("no device used it"),
        "{text}"
    );

    // The suggestion.
    let file = s.root.join("suggested.toml");
    let out = s.cli(&[
        "policy",
        "suggest",
        "--since",
        "1h",
        "--out",
        file.to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(&file).unwrap();
    assert!(toml.contains("${device.id}"), "{toml}");
    assert!(!toml.contains("legacy/#"), "{toml}");
    assert!(report.contains("would deny"), "{report}");
    let out = std::process::Command::new(support::BIN)
        .args(["policy", "check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{toml}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Replay the same traffic against it: nothing is denied.
    assert!(s.set_policy(&toml), "the suggestion loads");
    let before = denials(&s);
    traffic(&s, &sensors, &backend);
    assert_eq!(
        denials(&s),
        before,
        "observed traffic replays under the suggestion"
    );

    // Less than before: a sensor may no longer write another sensor's telemetry.
    let out = s.mosquitto_pub(
        &sensors[0],
        &[
            "-V",
            "5",
            "-q",
            "1",
            "-t",
            "devices/sensor-2/telemetry",
            "-m",
            "x",
        ],
    );
    let _ = out;
    s.wait_event("the cross-device publish denied", |e| {
        e["type"] == "publish_denied" && e["topic"] == "devices/sensor-2/telemetry"
    });
}
