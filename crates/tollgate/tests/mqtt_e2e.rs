//! MQTT behaviour end to end: the real binary over mTLS, driven by mosquitto clients and paho.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::time::Duration;

use serde_json::json;
use support::{finish, Server};

#[test]
fn qos_0_1_2_reach_a_wildcard_subscriber_with_mosquitto_clients_v311_and_v5() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    for version in ["mqttv311", "mqttv5"] {
        let sub = s.mosquitto_sub(
            &backend,
            &[
                "-V",
                version,
                "-t",
                "devices/+/telemetry",
                "-q",
                "2",
                "-C",
                "3",
                "-v",
            ],
        );
        for qos in ["0", "1", "2"] {
            let out = s.mosquitto_pub(
                &sensor,
                &[
                    "-V",
                    version,
                    "-t",
                    "devices/sensor-1/telemetry",
                    "-q",
                    qos,
                    "-m",
                    &format!("m{qos}"),
                ],
            );
            assert!(
                out.status.success(),
                "pub qos {qos}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let got = finish(sub, Duration::from_secs(10));
        assert_eq!(
            got.lines().collect::<Vec<_>>(),
            vec![
                "devices/sensor-1/telemetry m0",
                "devices/sensor-1/telemetry m1",
                "devices/sensor-1/telemetry m2"
            ],
            "{version}"
        );
    }
}

#[test]
fn paho_qos_flows_and_v5_properties_are_forwarded() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let mut sub = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 2, "sub_id": 7},
            {"op": "expect", "count": 3, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    sub.wait_step(1);
    let r = s.paho(&sensor, json!([
        {"op": "connect", "client_id": "sensor-1"},
        {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "a", "qos": 1,
         "user_properties": [["site", "dock-3"]], "response_topic": "devices/sensor-1/events/reply", "correlation_data": "c-1"},
        {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "b", "qos": 2, "message_expiry": 300},
        {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "c", "qos": 1, "topic_alias": 3},
        {"op": "disconnect"}
    ]));
    assert_eq!(r[0]["rc"], 0);
    assert_eq!(r[1]["rc"], 0, "QoS 1 PUBACK success");
    assert_eq!(r[2]["rc"], 0, "QoS 2 PUBREC success");
    let got = sub.join().unwrap();
    assert_eq!(got[1]["codes"], json!([2]));
    let msgs = got[2]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    // paho hands a QoS 2 message to the application only after PUBREL, so find by payload.
    let by = |p: &str| {
        msgs.iter()
            .find(|m| m["payload"] == p)
            .unwrap_or_else(|| panic!("no {p}: {msgs:?}"))
    };
    let a = by("a");
    assert_eq!(a["qos"], 1);
    assert_eq!(a["user_properties"], json!([["site", "dock-3"]]));
    assert_eq!(a["response_topic"], "devices/sensor-1/events/reply");
    assert_eq!(a["correlation_data"], "c-1");
    assert_eq!(a["subscription_ids"], json!([7]));
    let b = by("b");
    assert_eq!(b["qos"], 2);
    let exp = b["message_expiry"].as_u64().unwrap();
    assert!((290..=300).contains(&exp), "remaining expiry {exp}");
    assert_eq!(
        by("c")["topic"],
        "devices/sensor-1/telemetry",
        "topic alias resolved"
    );
}

#[test]
fn retained_message_reaches_a_late_subscriber_and_empty_payload_clears_it() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-t",
            "devices/sensor-1/status",
            "-r",
            "-q",
            "1",
            "-m",
            "online",
        ],
    );
    assert!(out.status.success());
    for v in [3, 5] {
        let r = s.paho(
            &backend,
            json!([
                {"op": "connect", "client_id": "backend", "version": v},
                {"op": "subscribe", "filters": ["devices/+/status"], "qos": 1},
                {"op": "expect", "count": 1},
                {"op": "disconnect"}
            ]),
        );
        let m = &r[2]["messages"][0];
        assert_eq!(
            (m["payload"].as_str(), m["retain"].as_bool()),
            (Some("online"), Some(true)),
            "v{v}: {r:?}"
        );
    }
    let out = s.mosquitto_pub(
        &sensor,
        &["-t", "devices/sensor-1/status", "-r", "-q", "1", "-n"],
    );
    assert!(out.status.success());
    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/status"], "qos": 1},
            {"op": "expect", "count": 1, "timeout": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[2]["messages"], json!([]));
}

#[test]
fn will_is_published_on_abnormal_disconnect_and_not_on_clean_disconnect_and_v5_delay_holds() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let sub = s.mosquitto_sub(
        &backend,
        &["-t", "devices/+/status", "-C", "2", "-v", "-W", "15"],
    );
    // Clean disconnect: no will.
    let r = s.paho(&sensor, json!([
        {"op": "connect", "client_id": "sensor-1", "will": {"topic": "devices/sensor-1/status", "payload": "clean-gone", "qos": 1}},
        {"op": "disconnect"}
    ]));
    assert_eq!(r[0]["rc"], 0);
    // Dropped connection: will (3.1.1).
    s.paho(&sensor, json!([
        {"op": "connect", "client_id": "sensor-1", "version": 3, "will": {"topic": "devices/sensor-1/status", "payload": "lost-v3", "qos": 1}},
        {"op": "drop"}
    ]));
    // v5 with will delay 2 s: not before the delay.
    let t0 = std::time::Instant::now();
    s.paho(&sensor, json!([
        {"op": "connect", "client_id": "sensor-1", "session_expiry": 10, "will": {"topic": "devices/sensor-1/status", "payload": "lost-v5", "qos": 1, "delay": 2}},
        {"op": "drop"}
    ]));
    let got = finish(sub, Duration::from_secs(15));
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        vec![
            "devices/sensor-1/status lost-v3",
            "devices/sensor-1/status lost-v5"
        ]
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "will delay not honoured: {:?}",
        t0.elapsed()
    );
    let ev = s.wait_event("will published", |e| {
        e["type"] == "disconnected" && e["will_published"] == true
    });
    assert_eq!(ev["device"], "sensor-1");
}

#[test]
fn persistent_session_resumes_with_queued_messages_v311_and_v5_and_clean_start_discards() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    for (v, connect) in [
        (
            3,
            json!({"op": "connect", "client_id": "backend", "version": 3, "clean": false}),
        ),
        (
            5,
            json!({"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 60}),
        ),
    ] {
        let r = s.paho(&backend, json!([connect.clone(), {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1}, {"op": "disconnect"}]));
        assert_eq!(r[1]["codes"], json!([1]), "v{v}");
        let out = s.mosquitto_pub(
            &sensor,
            &[
                "-t",
                "devices/sensor-1/telemetry",
                "-q",
                "1",
                "-m",
                &format!("while-away-{v}"),
            ],
        );
        assert!(out.status.success());
        let r = s.paho(
            &backend,
            json!([connect, {"op": "expect", "count": 1}, {"op": "disconnect"}]),
        );
        assert_eq!(r[0]["session_present"], true, "v{v}: {r:?}");
        assert_eq!(
            r[1]["messages"][0]["payload"],
            format!("while-away-{v}"),
            "v{v}"
        );
    }
    // Clean start throws the session away.
    let r = s.paho(
        &backend,
        json!([{"op": "connect", "client_id": "backend", "clean": true}, {"op": "disconnect"}]),
    );
    assert_eq!(r[0]["session_present"], false);
}

#[test]
fn session_takeover_disconnects_the_older_connection() {
    let s = Server::start();
    let backend = s.add_device("backend", &["backend"]);
    let mut first = s.paho_background(&backend, json!([{"op": "connect", "client_id": "backend"}, {"op": "wait_disconnect", "timeout": 10}]));
    assert_eq!(first.wait_step(0)["rc"], 0, "the first connection is up");
    let r = s.paho(
        &backend,
        json!([{"op": "connect", "client_id": "backend"}, {"op": "disconnect"}]),
    );
    assert_eq!(r[0]["rc"], 0);
    let old = first.join().unwrap();
    assert_eq!(old[1]["disconnect"]["rc"], 0x8E, "{old:?}");
    s.wait_event("takeover", |e| e["type"] == "session_taken_over");
}

#[test]
fn shared_subscription_splits_messages_between_members() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let b1 = s.add_device("backend-1", &["backend"]);
    let b2 = s.add_device("backend-2", &["backend"]);
    let subs: Vec<_> = [b1, b2]
        .iter()
        .map(|dev| {
            let mut c = s.paho_background(dev, json!([{"op": "connect", "client_id": dev.id}, {"op": "subscribe", "filters": ["$share/workers/devices/+/telemetry"], "qos": 1},
                              {"op": "expect", "count": 10, "timeout": 4}, {"op": "disconnect"}]));
            c.wait_step(1);
            c
        })
        .collect();
    let steps: Vec<_> = std::iter::once(json!({"op": "connect", "client_id": "sensor-1"}))
        .chain((0..10).map(|i| json!({"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": format!("{i}"), "qos": 1})))
        .chain(std::iter::once(json!({"op": "disconnect"})))
        .collect();
    s.paho(&sensor, json!(steps));
    let counts: Vec<usize> = subs
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r[1]["codes"], json!([1]), "{r:?}");
            r[2]["messages"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 10, "{counts:?}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "both members get work: {counts:?}"
    );
}

#[test]
fn denied_publish_gets_0x87_in_v5_is_never_delivered_and_is_recorded() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let sub = s.mosquitto_sub(
        &backend,
        &[
            "-t",
            "devices/+/telemetry",
            "-t",
            "devices/+/status",
            "-v",
            "-W",
            "4",
        ],
    );
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-2/telemetry", "payload": "spoof", "qos": 1},
            {"op": "publish", "topic": "devices/sensor-2/telemetry", "payload": "spoof2", "qos": 2},
            {"op": "publish", "topic": "$SYS/broker/x", "payload": "sys", "qos": 1},
            {"op": "publish", "topic": "devices/sensor-2/status", "payload": "spoof0", "qos": 0},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0x87, "QoS 1: PUBACK 0x87");
    // paho ignores a PUBREC's reason code and sends PUBREL anyway; the flow ended at our
    // PUBREC 0x87, so the PUBREL gets PUBCOMP 0x92, which is what paho reports.
    assert_eq!(r[2]["rc"], 0x92, "QoS 2 flow ended by PUBREC 0x87");
    assert_eq!(r[3]["rc"], 0x87);
    // mosquitto_pub reads the PUBREC reason code: QoS 2 refused with 0x87 "Not authorized".
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-V",
            "mqttv5",
            "-t",
            "devices/sensor-2/telemetry",
            "-q",
            "2",
            "-m",
            "spoof4",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Not authorized"),
        "{out:?}"
    );
    // 3.1.1 has no reason codes: the message is acknowledged and dropped.
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-V",
            "mqttv311",
            "-t",
            "devices/sensor-9/telemetry",
            "-q",
            "1",
            "-m",
            "spoof3",
        ],
    );
    assert!(out.status.success());
    let got = finish(sub, Duration::from_secs(6));
    assert_eq!(got, "", "nothing denied may be delivered");
    let ev = s.wait_event("publish denied", |e| {
        e["type"] == "publish_denied" && e["topic"] == "$SYS/broker/x"
    });
    assert_eq!(ev["device"], "sensor-1");
    // The event names the deny rule that decided (the example policy's one unnamed deny rule).
    assert_eq!(ev["rule"], "deny[1]", "{ev}");
    // A topic no rule grants is the default deny: no rule to name.
    let ev = s.wait_event("publish denied by the default deny", |e| {
        e["type"] == "publish_denied" && e["topic"] == "devices/sensor-2/telemetry"
    });
    assert!(ev.get("rule").is_none(), "{ev}");
    assert!(s.count_events("publish_denied") >= 5);
}

#[test]
fn subscriptions_broader_than_the_policy_are_refused_so_no_wildcard_leaks() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let other = s.add_device("sensor-2", &["sensors"]);
    let r = s.paho(&sensor, json!([
        {"op": "connect", "client_id": "sensor-1"},
        {"op": "subscribe", "filters": ["devices/#"], "qos": 1},
        {"op": "subscribe", "filters": ["devices/+/commands/#"], "qos": 1},
        {"op": "subscribe", "filters": ["#"], "qos": 1},
        {"op": "subscribe", "filters": ["devices/sensor-1/commands/#", "devices/sensor-2/commands/#"], "qos": 1},
        {"op": "disconnect"}
    ]));
    assert_eq!(r[1]["codes"], json!([0x87]));
    assert_eq!(r[2]["codes"], json!([0x87]));
    assert_eq!(r[3]["codes"], json!([0x87]));
    assert_eq!(r[4]["codes"], json!([1, 0x87]));
    // A filter deeper than max_topic_levels (128) is refused before it reaches the router.
    let deep = format!("devices/sensor-1/commands/{}x", "+/".repeat(200));
    let r2 = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "subscribe", "filters": [deep], "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r2[1]["codes"], json!([0x8F]), "{r2:?}");
    // 3.1.1 gets 0x80.
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "version": 3},
            {"op": "subscribe", "filters": ["devices/+/commands/#"], "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["codes"], json!([0x80]));
    // And a command for sensor-2 never reaches sensor-1 through any wildcard.
    let backend = s.add_device("backend", &["backend"]);
    let sub = s.mosquitto_sub(
        &sensor,
        &[
            "-t",
            "devices/sensor-1/commands/#",
            "-t",
            "devices/+/commands/#",
            "-t",
            "#",
            "-v",
            "-W",
            "4",
        ],
    );
    let out = s.mosquitto_pub(
        &backend,
        &[
            "-t",
            "devices/sensor-2/commands/reboot",
            "-q",
            "1",
            "-m",
            "x",
        ],
    );
    assert!(out.status.success());
    let out = s.mosquitto_pub(
        &backend,
        &[
            "-t",
            "devices/sensor-1/commands/ping",
            "-q",
            "1",
            "-m",
            "mine",
        ],
    );
    assert!(out.status.success());
    let got = finish(sub, Duration::from_secs(6));
    assert_eq!(got.trim(), "devices/sensor-1/commands/ping mine");
    let _ = other;
    assert!(s.count_events("subscribe_denied") >= 6);
}

#[test]
fn client_id_must_match_the_certificate() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let r = s.paho(&sensor, json!([{"op": "connect", "client_id": "sensor-2"}]));
    assert_eq!(r[0]["rc"], 0x85, "{r:?}");
    // paho reports the 3.1.1 return code 2 (identifier rejected) as its v5 equivalent 0x85.
    let r = s.paho(
        &sensor,
        json!([{"op": "connect", "client_id": "sensor-2", "version": 3}]),
    );
    assert_eq!(r[0]["rc"], 0x85, "3.1.1 identifier rejected: {r:?}");
    // An empty client id is given the device id.
    let r = s.paho(
        &sensor,
        json!([{"op": "connect", "client_id": ""}, {"op": "disconnect"}]),
    );
    assert_eq!(
        (r[0]["rc"].as_i64(), r[0]["assigned"].as_str()),
        (Some(0), Some("sensor-1")),
        "{r:?}"
    );
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-i",
            "not-me",
            "-t",
            "devices/sensor-1/telemetry",
            "-m",
            "x",
        ],
    );
    assert!(!out.status.success());
    s.wait_event("mismatch", |e| {
        e["type"] == "connection_refused" && e["reason"] == "client_id_mismatch"
    });
}

#[test]
fn policy_reload_that_tightens_access_takes_effect_on_live_sessions() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let v5 = s.add_device("backend-5", &["backend"]);
    // A 3.1.1 subscriber loses its subscription silently; a v5 subscriber is told (DISCONNECT 0x87).
    let sub = s.mosquitto_sub(
        &backend,
        &[
            "-V",
            "mqttv311",
            "-t",
            "devices/+/telemetry",
            "-v",
            "-W",
            "8",
        ],
    );
    let mut v5_thread = s.paho_background(&v5, json!([{"op": "connect", "client_id": "backend-5"}, {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 0},
                          {"op": "wait_disconnect", "timeout": 10}]));
    assert_eq!(v5_thread.wait_step(1)["codes"], json!([0]));
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-t",
            "devices/sensor-1/telemetry",
            "-q",
            "1",
            "-m",
            "before",
        ],
    );
    assert!(out.status.success());
    let tightened = support::EXAMPLE_POLICY.replace(
        r#"subscribe = ["devices/+/telemetry", "devices/+/events/#", "devices/+/status", "$share/+/devices/+/telemetry"]"#,
        r#"subscribe = ["devices/+/events/#"]"#,
    );
    assert!(s.set_policy(&tightened));
    s.wait_event("subscription revoked", |e| {
        e["type"] == "subscription_revoked" && e["device"] == "backend"
    });
    let out = s.mosquitto_pub(
        &sensor,
        &["-t", "devices/sensor-1/telemetry", "-q", "1", "-m", "after"],
    );
    assert!(out.status.success());
    let got = finish(sub, Duration::from_secs(10));
    assert_eq!(got.trim(), "devices/sensor-1/telemetry before");
    let r = v5_thread.join().unwrap();
    assert_eq!(r[2]["disconnect"]["rc"], 0x87, "{r:?}");
}

#[test]
fn a_broken_policy_is_rejected_with_its_line_and_the_last_good_one_stays() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let broken = format!(
        "{}\n[[allow]]\nwho = \"group:x\"\npublsh = [\"a\"]\n",
        support::EXAMPLE_POLICY
    );
    assert!(!s.set_policy(&broken));
    let ev = s.wait_event("rejected", |e| e["type"] == "policy_rejected");
    let lines = broken.lines().count();
    assert!(
        ev["error"]
            .as_str()
            .unwrap()
            .contains(&format!(":{lines}:")),
        "line-precise: {ev}"
    );
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-t",
            "devices/sensor-1/telemetry",
            "-q",
            "1",
            "-m",
            "still-allowed",
        ],
    );
    assert!(out.status.success(), "last good policy still in force");
    // The CLI gives the same error and a non-zero exit.
    let f = s.root.join("broken.toml");
    std::fs::write(&f, &broken).unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["policy", "check"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("broken.toml:{lines}:")) && err.contains("publsh"),
        "{err}"
    );
    let good = s.root.join("good.toml");
    std::fs::write(&good, support::EXAMPLE_POLICY).unwrap();
    let out = std::process::Command::new(support::BIN)
        .args(["policy", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn v5_session_expiry_ends_a_session_and_keep_alive_is_enforced() {
    let s = Server::start();
    let backend = s.add_device("backend", &["backend"]);
    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 1},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1},
            {"op": "disconnect"},
            {"op": "sleep", "seconds": 2.5},
            {"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(
        r[4]["session_present"], false,
        "the session expired while away: {r:?}"
    );
    // Within its expiry, the session is still there.
    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 30},
            {"op": "disconnect"},
            {"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 30},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[2]["session_present"], true, "{r:?}");
}

#[test]
fn shutdown_tells_v5_clients_the_server_is_going_away() {
    let mut s = Server::start();
    let backend = s.add_device("backend", &["backend"]);
    let mut h = s.paho_background(&backend, json!([{"op": "connect", "client_id": "backend"}, {"op": "wait_disconnect", "timeout": 10}]));
    assert_eq!(h.wait_step(0)["rc"], 0);
    s.stop();
    let r = h.join().unwrap();
    assert_eq!(
        r[1]["disconnect"]["rc"], 0x8B,
        "server shutting down: {r:?}"
    );
}

#[test]
fn the_cli_reaches_the_admin_api_by_url_and_serve_initialises_a_missing_data_directory() {
    let s = Server::start();
    let url = format!("https://127.0.0.1:{}", s.admin_port);
    let out = std::process::Command::new(support::BIN)
        .args(["device", "list", "--json", "--server", &url, "--cert"])
        .arg(s.data.join("admin/admin.crt"))
        .arg("--key")
        .arg(s.data.join("admin/admin.key"))
        .arg("--cacert")
        .arg(s.data.join("ca/root.crt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        json!([])
    );
    // A device certificate is not an admin certificate.
    let dev = s.add_device("sensor-1", &["sensors"]);
    let out = std::process::Command::new(support::BIN)
        .args(["device", "list", "--server", &url, "--cert"])
        .arg(&dev.cert)
        .arg("--key")
        .arg(&dev.key)
        .arg("--cacert")
        .arg(&dev.ca)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait_event("admin denied", |e| e["type"] == "admin_denied");
    // Bad requests get clear errors.
    let out = s.cli(&["device", "add", "bad/id", "--out", "/tmp/never"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid device id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&["device", "add", "sensor-1", "--out", "/tmp/never"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&["device", "revoke", "nobody"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `serve` on a directory that does not exist initialises it and says how to connect.
    let dir = support::temp_dir("fresh").join("data");
    let child = std::process::Command::new(support::BIN)
        .args(["serve", "--data"])
        .arg(&dir)
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !dir.join("run/addresses.json").exists() {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Initialised") && err.contains("ca/root.key") && err.contains("mosquitto_pub"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn a_session_cannot_hold_more_subscriptions_than_its_quota() {
    let s = Server::start_with(
        &[(
            "max_subscriptions_per_session = 1000",
            "max_subscriptions_per_session = 2",
        )],
        support::EXAMPLE_POLICY,
    );
    let backend = s.add_device("backend", &["backend"]);
    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/a/telemetry", "devices/b/telemetry", "devices/c/telemetry"], "qos": 0},
            {"op": "subscribe", "filters": ["devices/a/telemetry"], "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["codes"], json!([0, 0, 0x97]), "{r:?}");
    assert_eq!(
        r[2]["codes"],
        json!([1]),
        "re-subscribing to a held filter is not a new one: {r:?}"
    );
}

#[test]
fn messages_larger_than_the_clients_maximum_packet_size_are_not_sent_to_it() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let mut sub = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend", "maximum_packet_size": 128, "receive_maximum": 1},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1},
            {"op": "expect", "count": 3, "timeout": 4},
            {"op": "disconnect"}
        ]),
    );
    sub.wait_step(1);
    let big = "x".repeat(300);
    s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "small-1", "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": big, "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "small-2", "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "small-3", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    let r = sub.join().unwrap();
    let payloads: Vec<&str> = r[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    // MQTT 5 3.1.2.25: discarded as if delivered; with a receive maximum of 1 the rest still flow.
    assert_eq!(payloads, vec!["small-1", "small-2", "small-3"], "{r:?}");
}

/// Regression: a policy that grants `#` to everyone went live with no warning. It still goes
/// live (it is valid), but lint runs on every reload: each warning is a `policy_warning` event
/// and a line on stderr, which carries no colour codes when it is not a terminal.
#[test]
fn a_reload_to_a_policy_granting_everything_to_everyone_is_warned_about() {
    let s = Server::start();
    assert!(s.set_policy(
        "[[allow]]\nid = \"everything\"\nwho = \"*\"\npublish = [\"#\"]\nsubscribe = [\"#\"]\n"
    ));
    let reloaded = s.wait_event("policy_reloaded with warnings", |e| {
        e["type"] == "policy_reloaded" && e["warnings"].as_u64().is_some_and(|n| n >= 2)
    });
    assert_eq!(reloaded["rules"], 1, "{reloaded}");
    let w = s.wait_event("policy_warning", |e| {
        e["type"] == "policy_warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("overly broad grant"))
    });
    assert_eq!(w["rule"], "everything", "{w}");
    assert_eq!(w["line"], 1, "{w}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s.log().contains("overly broad grant") {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !s.log().contains('\u{1b}'),
        "no ANSI escapes in a non-terminal log"
    );
    // The example policy is clean: its reload carries no warnings.
    assert!(s.set_policy(support::EXAMPLE_POLICY));
    let last = s
        .events()
        .into_iter()
        .rev()
        .find(|e| e["type"] == "policy_reloaded")
        .unwrap();
    assert_eq!(last["warnings"], 0, "{last}");
}
