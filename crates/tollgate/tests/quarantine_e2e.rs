//! Quarantine end to end: a quarantined device stays connected but is confined to the
//! quarantine policy (v5 and 3.1.1, live connections and reconnections, across a restart),
//! several sources may hold it, and a release restores its normal policy within a second.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{finish, Server};

/// The README's example policy, with the `$tollgate/devices/...` topics of the default
/// quarantine grant: sensors may hold their command subscriptions there too, and the backend
/// may read inventories and send commands and firmware there.
const POLICY: &str = r#"
version = 1

[[allow]]
id = "sensors"
who = "group:sensors"
publish = ["devices/${device.id}/telemetry", "devices/${device.id}/events/#", "devices/${device.id}/status"]
subscribe = ["devices/${device.id}/commands/#", "$tollgate/devices/${device.id}/commands/#"]

[[allow]]
id = "backend"
who = "group:backend"
subscribe = ["devices/+/telemetry", "devices/+/events/#", "devices/+/status", "$tollgate/devices/+/inventory"]
publish = ["devices/+/commands/#", "$tollgate/devices/+/commands/#", "$tollgate/devices/+/firmware/#"]

[[deny]]
who = "*"
publish = ["$SYS/#"]
"#;

const REASON: &str = "firmware 1.2 is vulnerable";

fn touch(p: &Path) {
    std::fs::write(p, b"go").unwrap();
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn quarantine(s: &Server, id: &str, reason: &str) -> String {
    let out = s.cli(&["device", "quarantine", id, "--reason", reason]);
    assert!(
        out.status.success(),
        "quarantine {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn release(s: &Server, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["device", "release", id];
    args.extend_from_slice(extra);
    let out = s.cli(&args);
    assert!(
        out.status.success(),
        "release {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn payloads(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {v}"))
        .iter()
        .map(|m| m["payload"].as_str().unwrap().to_owned())
        .collect()
}

fn quarantine_list_is_empty(show: &Value) -> bool {
    show["quarantine"].as_array().is_none_or(|a| a.is_empty())
}

#[test]
fn a_quarantined_v5_device_stays_connected_and_is_confined_to_the_quarantine_policy() {
    let s = Server::start_with(&[], POLICY);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let ops = s.add_device("ops", &["backend"]);
    let other = s.add_device("sensor-2", &["sensors"]);
    let go = s.root.join("go");

    // The backend reads telemetry and (tries to read) inventories.
    let mut reader = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry", "$tollgate/devices/+/inventory"], "qos": 1},
            {"op": "expect", "count": 2, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(reader.wait_step(1)["codes"], json!([1, 1]));
    let mut dev = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#", "$tollgate/devices/sensor-1/commands/#"], "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "before", "qos": 1},
            {"op": "wait_file", "path": go, "timeout": 15},
            // 4: outside the quarantine policy (allowed by the normal one).
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "during", "qos": 1},
            // 5: inside.
            {"op": "publish", "topic": "$tollgate/devices/sensor-1/inventory", "payload": "inv-1", "qos": 1},
            // 6, 7: a new subscription outside it, and one inside.
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#"], "qos": 1},
            {"op": "subscribe", "filters": ["$tollgate/devices/sensor-1/firmware/#"], "qos": 1},
            // 8: the backend's commands: only the one inside the quarantine policy arrives.
            {"op": "expect", "count": 1, "timeout": 10},
            {"op": "check_connected"},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(dev.wait_step(1)["codes"], json!([1, 1]));
    assert_eq!(dev.wait_step(2)["rc"], 0, "allowed before the quarantine");

    let out = quarantine(&s, "sensor-1", REASON);
    assert!(out.contains("Quarantined sensor-1"), "{out}");
    touch(&go);
    assert_eq!(dev.wait_step(7)["codes"], json!([1]), "firmware is inside");
    // A command on the normal topic (its subscription was removed) and one inside.
    for topic in [
        "devices/sensor-1/commands/normal",
        "$tollgate/devices/sensor-1/commands/reboot",
    ] {
        let out = s.mosquitto_pub(&ops, &["-t", topic, "-q", "1", "-m", topic]);
        assert!(
            out.status.success(),
            "{topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = dev.join().unwrap();
    assert_eq!(r[4]["rc"], 0x87, "publish outside: PUBACK 0x87: {r:?}");
    let why = r[4]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("quarantined") && why.contains(REASON),
        "the reason string names the quarantine and its reason: {r:?}"
    );
    assert_eq!(r[5]["rc"], 0, "inventory is inside: {r:?}");
    assert_eq!(r[6]["codes"], json!([0x87]), "new SUBSCRIBE outside: {r:?}");
    assert_eq!(
        payloads(&r[8]),
        ["$tollgate/devices/sensor-1/commands/reboot"],
        "only the command inside the quarantine policy arrives: {r:?}"
    );
    assert_eq!(r[9]["connected"], true, "never disconnected: {r:?}");

    // The backend got the message from before and another sensor's marker, never the refused
    // one nor the inventory report (consumed by the gateway, never routed): either would have
    // come between them.
    let out = s.mosquitto_pub(
        &other,
        &[
            "-t",
            "devices/sensor-2/telemetry",
            "-q",
            "1",
            "-m",
            "marker",
        ],
    );
    assert!(out.status.success());
    let got = reader.join().unwrap();
    assert_eq!(payloads(&got[2]), ["before", "marker"], "{got:?}");

    // QoS 2 outside the quarantine policy: PUBREC 0x87, as mosquitto_pub reports it.
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-V",
            "mqttv5",
            "-t",
            "devices/sensor-1/telemetry",
            "-q",
            "2",
            "-m",
            "qos2",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Not authorized"),
        "{out:?}"
    );

    // Recorded.
    let q = s.wait_event("device_quarantined", |e| e["type"] == "device_quarantined");
    assert_eq!(q["device"], "sensor-1", "{q}");
    assert_eq!(q["source"], "operator", "{q}");
    assert_eq!(q["reason"], REASON, "{q}");
    assert_eq!(q["reasons"], 1, "{q}");
    assert!(q["by"].as_str().is_some_and(|b| !b.is_empty()), "{q}");
    let tag = format!("operator: {REASON}");
    let ev = s.wait_event("subscription revoked by the quarantine", |e| {
        e["type"] == "subscription_revoked" && e["device"] == "sensor-1"
    });
    assert_eq!(ev["filter"], "devices/sensor-1/commands/#", "{ev}");
    assert_eq!(ev["quarantine"], tag.as_str(), "{ev}");
    let ev = s.wait_event("publish denied by the quarantine", |e| {
        e["type"] == "publish_denied" && e["device"] == "sensor-1"
    });
    assert_eq!(ev["topic"], "devices/sensor-1/telemetry", "{ev}");
    assert_eq!(ev["quarantine"], tag.as_str(), "{ev}");
    let ev = s.wait_event("subscribe denied by the quarantine", |e| {
        e["type"] == "subscribe_denied" && e["device"] == "sensor-1"
    });
    assert_eq!(ev["quarantine"], tag.as_str(), "{ev}");
    assert_eq!(
        s.events()
            .iter()
            .filter(|e| e["type"] == "subscription_revoked"
                && e["filter"] == "$tollgate/devices/sensor-1/commands/#")
            .count(),
        0,
        "the subscription inside the quarantine policy stays"
    );

    let v = s.show("sensor-1");
    assert_eq!(v["state"], "quarantined", "{v}");
    assert_eq!(v["status"], "quarantined", "{v}");
    let reasons = v["quarantine"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{v}");
    assert_eq!(reasons[0]["source"], "operator", "{v}");
    assert_eq!(reasons[0]["reason"], REASON, "{v}");
    assert!(
        reasons[0]["by"].as_str().is_some_and(|b| !b.is_empty()),
        "{v}"
    );
    assert!(
        reasons[0]["since"].as_str().unwrap().starts_with("20"),
        "{v}"
    );
}

#[test]
fn a_quarantined_mqtt_311_device_gets_a_normal_puback_but_nothing_outside_is_delivered() {
    let s = Server::start_with(&[], POLICY);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let ops = s.add_device("ops", &["backend"]);
    let other = s.add_device("sensor-2", &["sensors"]);
    let go = s.root.join("go");

    let mut reader = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry", "$tollgate/devices/+/inventory"], "qos": 1},
            {"op": "expect", "count": 2, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(reader.wait_step(1)["codes"], json!([1, 1]));
    let mut dev = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "version": 3},
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#", "$tollgate/devices/sensor-1/commands/#"], "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "before", "qos": 1},
            {"op": "wait_file", "path": go, "timeout": 15},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "during", "qos": 1},
            {"op": "publish", "topic": "$tollgate/devices/sensor-1/inventory", "payload": "inv-1", "qos": 1},
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#"], "qos": 1},
            {"op": "expect", "count": 1, "timeout": 10},
            {"op": "check_connected"},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(dev.wait_step(1)["codes"], json!([1, 1]));
    assert_eq!(dev.wait_step(2)["rc"], 0);
    quarantine(&s, "sensor-1", REASON);
    touch(&go);
    assert_eq!(
        dev.wait_step(6)["codes"],
        json!([0x80]),
        "3.1.1 SUBACK failure"
    );
    s.wait_event("3.1.1 subscription removed", |e| {
        e["type"] == "subscription_revoked"
            && e["device"] == "sensor-1"
            && e["filter"] == "devices/sensor-1/commands/#"
            && e["quarantine"] == format!("operator: {REASON}").as_str()
    });
    for topic in [
        "devices/sensor-1/commands/normal",
        "$tollgate/devices/sensor-1/commands/reboot",
    ] {
        let out = s.mosquitto_pub(&ops, &["-t", topic, "-q", "1", "-m", topic]);
        assert!(out.status.success());
    }
    let r = dev.join().unwrap();
    assert_eq!(r[4]["rc"], 0, "3.1.1: a normal PUBACK: {r:?}");
    assert_eq!(r[5]["rc"], 0, "{r:?}");
    assert_eq!(
        payloads(&r[7]),
        ["$tollgate/devices/sensor-1/commands/reboot"],
        "{r:?}"
    );
    assert_eq!(r[8]["connected"], true, "never disconnected: {r:?}");
    let out = s.mosquitto_pub(
        &other,
        &[
            "-t",
            "devices/sensor-2/telemetry",
            "-q",
            "1",
            "-m",
            "marker",
        ],
    );
    assert!(out.status.success());
    let got = reader.join().unwrap();
    assert_eq!(
        payloads(&got[2]),
        ["before", "marker"],
        "the acknowledged message was dropped, the inventory report consumed: {got:?}"
    );

    // A new 3.1.1 connection of the quarantined device (mosquitto clients): QoS 1 outside is
    // acknowledged (mosquitto_pub succeeds) and dropped; the inventory report that follows it
    // is consumed; another sensor's marker is the first thing the subscriber gets.
    let sub = s.mosquitto_sub(
        &backend,
        &[
            "-V",
            "mqttv311",
            "-t",
            "devices/+/telemetry",
            "-t",
            "$tollgate/devices/+/inventory",
            "-q",
            "1",
            "-C",
            "1",
            "-v",
            "-W",
            "10",
        ],
    );
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-V",
            "mqttv311",
            "-t",
            "devices/sensor-1/telemetry",
            "-q",
            "1",
            "-m",
            "fresh",
        ],
    );
    assert!(
        out.status.success(),
        "acknowledged: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-V",
            "mqttv311",
            "-t",
            "$tollgate/devices/sensor-1/inventory",
            "-q",
            "1",
            "-m",
            "inv-2",
        ],
    );
    assert!(out.status.success());
    let out = s.mosquitto_pub(
        &other,
        &[
            "-V",
            "mqttv311",
            "-t",
            "devices/sensor-2/telemetry",
            "-q",
            "1",
            "-m",
            "marker",
        ],
    );
    assert!(out.status.success());
    assert_eq!(
        finish(sub, Duration::from_secs(12)).trim(),
        "devices/sensor-2/telemetry marker"
    );
    let ev = s.wait_event("publish denied", |e| {
        e["type"] == "publish_denied"
            && e["device"] == "sensor-1"
            && e["topic"] == "devices/sensor-1/telemetry"
    });
    assert_eq!(
        ev["quarantine"],
        format!("operator: {REASON}").as_str(),
        "{ev}"
    );
}

/// Quarantine a live `version` connection, release it, and measure how long after the release
/// command returns the device publishes successfully and receives on its restored subscription.
fn release_within_one_second(version: u8) {
    let s = Server::start_with(&[], POLICY);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let ops = s.add_device("ops", &["backend"]);
    let quarantined = s.root.join("quarantined");
    let released = s.root.join("released");
    let stop = s.root.join("stop");

    let mut reader = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1},
            {"op": "expect", "count": 1, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(reader.wait_step(1)["codes"], json!([1]));
    let mut dev = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "version": version},
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#"], "qos": 1},
            {"op": "wait_file", "path": quarantined, "timeout": 15},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "confined", "qos": 1},
            {"op": "wait_file", "path": released, "timeout": 15},
            // 5: the first successful publish (v5 tells; a 3.1.1 PUBACK always succeeds).
            {"op": "publish_until_ok", "topic": "devices/sensor-1/telemetry", "payload": "after", "timeout": 5},
            // 6: the first command on the subscription the quarantine suspended.
            {"op": "expect", "count": 1, "timeout": 5},
            {"op": "check_connected"},
            // 8: keep publishing, so that a 3.1.1 subscriber gets one whenever the release bites.
            {"op": "publish_repeat", "topic": "devices/sensor-1/telemetry", "payload": "after", "until_file": stop, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(dev.wait_step(1)["codes"], json!([1]));
    let mut sender = s.paho_background(
        &ops,
        json!([
            {"op": "connect", "client_id": "ops"},
            {"op": "wait_file", "path": released, "timeout": 15},
            {"op": "publish_repeat", "topic": "devices/sensor-1/commands/ping", "payload": "cmd", "until_file": stop, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(sender.wait_step(0)["rc"], 0);

    quarantine(&s, "sensor-1", REASON);
    touch(&quarantined);
    let confined = dev.wait_step(3);
    if version == 5 {
        assert_eq!(confined["rc"], 0x87, "confined: {confined}");
    }
    s.wait_event("subscription suspended", |e| {
        e["type"] == "subscription_revoked" && e["device"] == "sensor-1"
    });

    let out = release(&s, "sensor-1", &[]);
    let t0 = now_secs();
    touch(&released);
    assert!(out.contains("Released sensor-1"), "{out}");
    let cmd = dev.wait_step(6);
    let first = reader.wait_step(2);
    touch(&stop);
    let r = dev.join().unwrap();
    let _ = sender.join().unwrap();
    let _ = reader.join().unwrap();

    let msgs = cmd["messages"].as_array().unwrap();
    assert!(
        !msgs.is_empty(),
        "v{version}: the suspended subscription was not restored: {r:?}"
    );
    let took = msgs[0]["at"].as_f64().unwrap() - t0;
    assert!(
        took < 1.0,
        "v{version}: first command delivered {took:.3}s after the release"
    );
    let msgs = first["messages"].as_array().unwrap();
    assert!(
        !msgs.is_empty(),
        "v{version}: nothing the device published reached the subscriber after the release: {r:?}"
    );
    assert_eq!(
        msgs[0]["payload"], "after",
        "v{version}: the publish made while quarantined was delivered: {first}"
    );
    let took = msgs[0]["at"].as_f64().unwrap() - t0;
    assert!(
        took < 1.0,
        "v{version}: first publish delivered {took:.3}s after the release"
    );
    if version == 5 {
        assert_eq!(r[5]["rc"], 0, "{r:?}");
        let took = r[5]["at"].as_f64().unwrap() - t0;
        assert!(
            took < 1.0,
            "v5: first successful PUBACK {took:.3}s after the release: {r:?}"
        );
    }
    assert_eq!(
        r[7]["connected"], true,
        "v{version}: a release does not disconnect: {r:?}"
    );
    let v = s.show("sensor-1");
    assert_eq!(v["state"], "active", "{v}");
    assert!(quarantine_list_is_empty(&v), "{v}");
    let ev = s.wait_event("released", |e| e["type"] == "device_released");
    assert_eq!(ev["device"], "sensor-1", "{ev}");
    assert_eq!(ev["sources"], json!(["operator"]), "{ev}");
    assert_eq!(ev["remaining"], json!([]), "{ev}");
    assert!(ev["by"].as_str().is_some_and(|b| !b.is_empty()), "{ev}");
}

#[test]
fn release_restores_the_normal_policy_and_suspended_subscriptions_within_one_second_v5() {
    release_within_one_second(5);
}

#[test]
fn release_restores_the_normal_policy_and_suspended_subscriptions_within_one_second_v311() {
    release_within_one_second(3);
}

#[test]
fn quarantine_survives_a_restart_and_a_reconnecting_device_is_still_confined() {
    let mut s = Server::start_with(&[], POLICY);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let ops = s.add_device("ops", &["backend"]);
    // A persistent session with a command subscription, and a command queued while it is away.
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "clean": false, "session_expiry": 300},
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#"], "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["codes"], json!([1]), "{r:?}");
    let out = s.mosquitto_pub(
        &ops,
        &[
            "-t",
            "devices/sensor-1/commands/while-away",
            "-q",
            "1",
            "-m",
            "queued",
        ],
    );
    assert!(out.status.success());
    let out = quarantine(&s, "sensor-1", REASON);
    assert!(out.contains("Quarantined sensor-1"), "{out}");

    s.stop();
    s.spawn();
    let v = s.show("sensor-1");
    assert_eq!(v["state"], "quarantined", "after a restart: {v}");
    assert_eq!(v["quarantine"][0]["reason"], REASON, "{v}");

    let go = s.root.join("go");
    let mut dev = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "clean": false, "session_expiry": 300},
            {"op": "subscribe", "filters": ["$tollgate/devices/sensor-1/commands/#"], "qos": 1},
            {"op": "wait_file", "path": go, "timeout": 15},
            // 3: the queued command was for a subscription outside the quarantine policy: it
            // must not come before this one (sent after the reconnection, inside the policy).
            {"op": "expect", "count": 1, "timeout": 10},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "x", "qos": 1},
            {"op": "publish", "topic": "$tollgate/devices/sensor-1/inventory", "payload": "inv", "qos": 1},
            {"op": "check_connected"},
            {"op": "disconnect"}
        ]),
    );
    let c = dev.wait_step(0);
    assert_eq!(c["session_present"], true, "{c}");
    assert_eq!(dev.wait_step(1)["codes"], json!([1]));
    let out = s.mosquitto_pub(
        &ops,
        &[
            "-t",
            "$tollgate/devices/sensor-1/commands/check",
            "-q",
            "1",
            "-m",
            "inside",
        ],
    );
    assert!(out.status.success());
    touch(&go);
    let r = dev.join().unwrap();
    assert_eq!(
        payloads(&r[3]),
        ["inside"],
        "the queued command outside the quarantine policy was dropped: {r:?}"
    );
    assert_eq!(r[4]["rc"], 0x87, "still confined after the restart: {r:?}");
    assert!(
        r[4]["reason"]
            .as_str()
            .is_some_and(|w| w.contains("quarantined") && w.contains(REASON)),
        "{r:?}"
    );
    assert_eq!(r[5]["rc"], 0, "{r:?}");
    assert_eq!(r[6]["connected"], true, "{r:?}");
    s.wait_event("restored subscription removed", |e| {
        e["type"] == "subscription_revoked"
            && e["device"] == "sensor-1"
            && e["filter"] == "devices/sensor-1/commands/#"
            && e["quarantine"].is_string()
    });

    // Released after the restart, it may publish again.
    release(&s, "sensor-1", &[]);
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "free", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0, "{r:?}");
}

#[test]
fn several_sources_can_hold_a_device_and_release_without_all_removes_only_the_operators() {
    let s = Server::start_with(&[], POLICY);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let (code, body) = s.admin_api(
        "POST",
        "/api/v1/devices/sensor-1/quarantine",
        Some(json!({"reason": "CVE-2024-0001 unpatched", "source": "compliance"})),
    );
    assert!((200..300).contains(&code), "{code} {body}");
    quarantine(&s, "sensor-1", "operator hold");
    let v = s.show("sensor-1");
    let mut sources: Vec<&str> = v["quarantine"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["source"].as_str().unwrap())
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, ["compliance", "operator"], "{v}");
    let ev = s.wait_event("second reason", |e| {
        e["type"] == "device_quarantined" && e["source"] == "operator"
    });
    assert_eq!(ev["reasons"], 2, "{ev}");

    // Without --all: only the operator's reason goes.
    let out = release(&s, "sensor-1", &[]);
    assert!(
        out.contains("compliance"),
        "still held by compliance: {out}"
    );
    let v = s.show("sensor-1");
    assert_eq!(v["state"], "quarantined", "{v}");
    assert_eq!(v["quarantine"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["quarantine"][0]["source"], "compliance", "{v}");
    let ev = s.wait_event("operator released", |e| e["type"] == "device_released");
    assert_eq!(ev["sources"], json!(["operator"]), "{ev}");
    assert_eq!(ev["remaining"], json!(["compliance"]), "{ev}");
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "x", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0x87, "still confined: {r:?}");
    assert!(
        r[1]["reason"]
            .as_str()
            .is_some_and(|w| w.contains("CVE-2024-0001 unpatched")),
        "{r:?}"
    );
    // Another release without --all cannot remove the compliance reason.
    let _ = s.cli(&["device", "release", "sensor-1"]);
    assert_eq!(s.show("sensor-1")["state"], "quarantined");

    // The admin API releases one named source.
    let (code, body) = s.admin_api(
        "POST",
        "/api/v1/devices/sensor-1/quarantine",
        Some(json!({"reason": "beaconing", "source": "detection"})),
    );
    assert!((200..300).contains(&code), "{code} {body}");
    let (code, body) = s.admin_api(
        "POST",
        "/api/v1/devices/sensor-1/release",
        Some(json!({"source": "detection", "all": false})),
    );
    assert!((200..300).contains(&code), "{code} {body}");
    let ev = s.wait_event("detection released", |e| {
        e["type"] == "device_released" && e["sources"] == json!(["detection"])
    });
    assert_eq!(ev["remaining"], json!(["compliance"]), "{ev}");
    assert_eq!(s.show("sensor-1")["state"], "quarantined");

    // --all removes every reason.
    let out = release(&s, "sensor-1", &["--all"]);
    assert!(out.contains("Released sensor-1"), "{out}");
    let v = s.show("sensor-1");
    assert_eq!(v["state"], "active", "{v}");
    assert!(quarantine_list_is_empty(&v), "{v}");
    let ev = s.wait_event("all released", |e| {
        e["type"] == "device_released" && e["remaining"] == json!([])
    });
    assert_eq!(ev["sources"], json!(["compliance"]), "{ev}");
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "x", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0, "{r:?}");
}

#[test]
fn the_policy_files_quarantine_table_replaces_the_default_and_its_deny_rules_still_apply() {
    let policy = format!(
        "{POLICY}\n[quarantine]\ndescription = \"report and wait\"\n\
         publish = [\"quarantine/${{device.id}}/report\", \"$SYS/quarantine/${{device.id}}\"]\n\
         subscribe = [\"quarantine/${{device.id}}/orders\"]\n"
    );
    let s = Server::start_with(&[], &policy);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    quarantine(&s, "sensor-1", REASON);
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "quarantine/sensor-1/report", "payload": "x", "qos": 1},
            {"op": "publish", "topic": "$SYS/quarantine/sensor-1", "payload": "x", "qos": 1},
            {"op": "publish", "topic": "$tollgate/devices/sensor-1/inventory", "payload": "x", "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "x", "qos": 1},
            {"op": "publish", "topic": "quarantine/sensor-2/report", "payload": "x", "qos": 1},
            {"op": "subscribe", "filters": ["quarantine/sensor-1/orders"], "qos": 1},
            {"op": "subscribe", "filters": ["$tollgate/devices/sensor-1/firmware/#"], "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[0]["rc"], 0, "{r:?}");
    assert_eq!(r[1]["rc"], 0, "the file's quarantine grant: {r:?}");
    assert_eq!(r[2]["rc"], 0x87, "the deny rule still applies: {r:?}");
    assert_eq!(
        r[3]["rc"], 0,
        "the inventory report topic is reserved: every device may report, whatever the grant: {r:?}"
    );
    assert_eq!(r[4]["rc"], 0x87, "{r:?}");
    assert_eq!(
        r[5]["rc"], 0x87,
        "templates bind the device's own id: {r:?}"
    );
    assert_eq!(r[6]["codes"], json!([1]), "{r:?}");
    assert_eq!(r[7]["codes"], json!([0x87]), "{r:?}");
}

#[test]
fn a_persistent_session_gets_its_suspended_subscriptions_back_when_released_while_offline() {
    let s = Server::start_with(&[], POLICY);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let ops = s.add_device("ops", &["backend"]);
    let go = s.root.join("go");
    // Quarantined while connected: its command subscription is suspended. Then it goes away.
    let mut dev = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "clean": false, "session_expiry": 300},
            {"op": "subscribe", "filters": ["devices/sensor-1/commands/#"], "qos": 1},
            {"op": "wait_file", "path": go, "timeout": 15},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(dev.wait_step(1)["codes"], json!([1]));
    quarantine(&s, "sensor-1", REASON);
    s.wait_event("suspended", |e| {
        e["type"] == "subscription_revoked" && e["device"] == "sensor-1"
    });
    touch(&go);
    dev.join().unwrap();
    s.wait_event("offline", |e| {
        e["type"] == "disconnected" && e["device"] == "sensor-1"
    });
    // Released while offline; it comes back to its persistent session.
    release(&s, "sensor-1", &[]);
    let go2 = s.root.join("go2");
    let mut dev = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "clean": false, "session_expiry": 300},
            {"op": "wait_file", "path": go2, "timeout": 15},
            {"op": "expect", "count": 1, "timeout": 5},
            {"op": "disconnect"}
        ]),
    );
    let c = dev.wait_step(0);
    assert_eq!(c["session_present"], true, "{c}");
    let out = s.mosquitto_pub(
        &ops,
        &[
            "-t",
            "devices/sensor-1/commands/ping",
            "-q",
            "1",
            "-m",
            "back",
        ],
    );
    assert!(out.status.success());
    touch(&go2);
    let r = dev.join().unwrap();
    assert_eq!(
        payloads(&r[2]),
        ["back"],
        "the subscription the quarantine suspended was not put back on release: {r:?}"
    );
}

/// Regression: `policy explain` used to ignore the registry, so without `--group` it denied
/// what the live server allowed. Against the running server it uses the device's real groups
/// and state: allowed while active, confined while quarantined, nothing once revoked.
#[test]
fn policy_explain_against_the_server_uses_the_devices_real_groups_and_state() {
    let s = Server::start();
    s.add_device("sensor-1", &["sensors"]);
    let explain = |extra: &[&str]| {
        let mut args = vec!["policy", "explain", "--device", "sensor-1"];
        args.extend_from_slice(extra);
        let out = s.cli(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = explain(&["--publish", "devices/sensor-1/telemetry"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("state active, groups: sensors"), "{text}");
    assert!(text.contains("ALLOWED by allow[1] (sensors)"), "{text}");
    // The deny rule is named.
    let (code, text) = explain(&["--publish", "$SYS/x", "--json"]);
    assert_eq!(code, Some(3), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["allowed"], false, "{v}");
    assert_eq!(v["denied_by"], "deny[1]", "{v}");
    // Offline, the file's policy with the groups given (as before).
    let file = s.data.join("policy.toml");
    let out = s.cli(&[
        "policy",
        "explain",
        file.to_str().unwrap(),
        "--device",
        "sensor-1",
        "--publish",
        "devices/sensor-1/telemetry",
    ]);
    assert_eq!(out.status.code(), Some(3), "no --group: no grant offline");

    quarantine(&s, "sensor-1", REASON);
    let (code, text) = explain(&["--publish", "devices/sensor-1/telemetry"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("state quarantined"), "{text}");
    assert!(text.contains(REASON), "{text}");
    // The quarantine grant still lets it report its inventory.
    let (code, text) = explain(&["--publish", "$tollgate/devices/sensor-1/inventory"]);
    assert_eq!(code, Some(0), "{text}");

    s.revoke("sensor-1");
    let (code, text) = explain(&["--subscribe", "devices/sensor-1/commands/#"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("state revoked"), "{text}");
    let (code, _) = explain(&["--device-typo"]);
    assert_eq!(code, Some(2), "clap refuses unknown flags");
    let out = s.cli(&["policy", "explain", "--device", "nobody", "--publish", "a"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nobody"),
        "{out:?}"
    );
}
