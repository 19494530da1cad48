//! Control-plane regressions, end to end: revocation counts the connections it closes, a
//! revoked id comes back only when asked, one server per data directory, and wills restored
//! after a crash are published.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Device, Server};

#[test]
fn revoking_a_connected_device_reports_its_live_connection_as_closed() {
    let s = Server::start();
    let backend = s.add_device("backend", &["backend"]);
    s.add_device("idle", &["backend"]);
    let mut live = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1},
            {"op": "wait_disconnect", "timeout": 10}
        ]),
    );
    assert_eq!(live.wait_step(1)["codes"], json!([1]));
    let out = s.revoke("backend");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 live connection(s) closed"),
        "revoke output: {text}"
    );
    let ev = s.wait_event("revoked", |e| {
        e["type"] == "device_revoked" && e["device"] == "backend"
    });
    assert_eq!(ev["sessions_closed"], 1, "{ev}");
    let r = live.join().unwrap();
    assert_eq!(r[2]["disconnect"]["rc"], 0x98, "{r:?}");
    // A device with no connection: none closed.
    let out = s.revoke("idle");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 live connection(s) closed"), "{text}");
    let ev = s.wait_event("idle revoked", |e| {
        e["type"] == "device_revoked" && e["device"] == "idle"
    });
    assert_eq!(ev["sessions_closed"], 0, "{ev}");
}

#[test]
fn device_add_of_a_revoked_id_is_refused_unless_reactivate_is_given() {
    let s = Server::start();
    let old = s.add_device("sensor-1", &["sensors"]);
    s.revoke("sensor-1");

    let again = s.root.join("again");
    let out = s.cli(&[
        "device",
        "add",
        "sensor-1",
        "--group",
        "sensors",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a revoked id was silently reused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409"), "{err}");
    assert!(!again.join("sensor-1.crt").exists());
    assert_eq!(s.show("sensor-1")["state"], "revoked");
    assert_eq!(s.count_events("device_reactivated"), 0);

    let back = s.root.join("back");
    let out = s.cli(&[
        "device",
        "add",
        "sensor-1",
        "--group",
        "backend",
        "--out",
        back.to_str().unwrap(),
        "--reactivate",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = s.wait_event("reactivated", |e| e["type"] == "device_reactivated");
    assert_eq!(ev["device"], "sensor-1", "{ev}");
    assert_eq!(ev["groups"], json!(["backend"]), "{ev}");
    assert!(ev["by"].as_str().is_some_and(|b| !b.is_empty()), "{ev}");
    let v = s.show("sensor-1");
    assert_eq!(v["state"], "active", "{v}");
    assert_eq!(v["groups"], json!(["backend"]), "{v}");
    // The new certificate connects; the revoked one still does not.
    let new = Device::from_files(
        "sensor-1",
        &back,
        back.join("sensor-1.crt"),
        back.join("sensor-1.key"),
        back.join("ca.crt"),
    );
    let out = s.mosquitto_pub(
        &new,
        &["-t", "devices/sensor-1/commands/x", "-m", "x", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!s
        .mosquitto_pub(&old, &["-t", "devices/sensor-1/telemetry", "-m", "x"])
        .status
        .success());
}

#[test]
fn a_second_serve_on_the_same_data_directory_exits_and_the_first_keeps_serving() {
    let s = Server::start();
    let dev = s.add_device("sensor-1", &["sensors"]);
    let addresses = s.data.join("run/addresses.json");
    let before = std::fs::read_to_string(&addresses).unwrap();
    let mut second = Command::new(support::BIN)
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
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second serve on the same data directory was still running after 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    assert!(err.contains("is running on"), "{err}");

    // The first server is untouched: still running, its addresses file still there (and still
    // its own), the CLI still reaches it, and devices still publish.
    assert!(
        s.child.as_ref().is_some_and(|c| c.id() > 0),
        "first server handle"
    );
    assert!(
        addresses.exists(),
        "the first server's run/addresses.json was removed by the second serve"
    );
    assert_eq!(std::fs::read_to_string(&addresses).unwrap(), before);
    let list = s.cli(&["device", "list", "--json"]);
    assert!(
        list.status.success(),
        "the CLI no longer reaches the first server: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["id"], "sensor-1", "{v}");
    let out = s.mosquitto_pub(
        &dev,
        &["-t", "devices/sensor-1/telemetry", "-m", "x", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_restored_will_is_published_after_a_kill_9_and_restart() {
    let mut s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    // A persistent subscriber, offline, allowed to read the will.
    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 300},
            {"op": "subscribe", "filters": ["devices/+/status"], "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["codes"], json!([1]), "{r:?}");
    // A persistent v5 session with a will delayed by 1 s, connected when the server dies.
    let mut dev = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "clean": false, "session_expiry": 60,
             "will": {"topic": "devices/sensor-1/status", "payload": "sensor-1 lost", "qos": 1, "delay": 1}},
            // A persistent subscription is acknowledged once on disk: the session (and its will,
            // written before it) is durable from its SUBACK on.
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#"], "qos": 1},
            {"op": "wait_disconnect", "timeout": 20}
        ]),
    );
    assert_eq!(dev.wait_step(0)["rc"], 0);
    assert_eq!(dev.wait_step(1)["codes"], json!([1]));
    let before = s.count_events("sessions_restored");
    s.kill9();
    let _ = dev.join().unwrap();
    s.spawn();
    let restored = s.nth_event("sessions_restored", before);
    assert_eq!(restored["sessions"], 2, "{restored}");

    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 300},
            {"op": "expect", "count": 1, "timeout": 8},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[0]["session_present"], true, "{r:?}");
    let msgs = r[1]["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        1,
        "the restored will was not published after the restart: {r:?}\n{}",
        s.log()
    );
    assert_eq!(msgs[0]["topic"], "devices/sensor-1/status");
    assert_eq!(msgs[0]["payload"], "sensor-1 lost");
}
