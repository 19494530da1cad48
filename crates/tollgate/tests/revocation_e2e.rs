//! Bulk revocation, end to end: `tollgate device revoke A B ...` (and `POST
//! /api/v1/revocations`) revokes several devices in one request, closes exactly their live
//! connections with DISCONNECT 0x98, writes each revocation ahead in the audit trail, and is
//! all or nothing.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use serde_json::{json, Value};
use support::Server;

/// A background MQTT 5 client that stays connected until told otherwise by `sentinel`, then
/// reports whether the server had disconnected it.
fn live_client(
    s: &Server,
    dev: &support::Device,
    sentinel: &std::path::Path,
) -> support::PahoClient {
    s.paho_background(
        dev,
        json!([
            {"op": "connect", "client_id": dev.id, "version": 5},
            {"op": "wait_file", "path": sentinel, "timeout": 60},
            {"op": "check_connected"},
        ]),
    )
}

#[test]
fn revoking_several_devices_at_once_closes_exactly_their_connections_with_0x98() {
    let s = Server::start();
    let sentinel = s.root.join("done");
    let devs: Vec<_> = ["lost-1", "lost-2", "kept"]
        .iter()
        .map(|id| s.add_device(id, &["backend"]))
        .collect();
    s.add_device("lost-idle", &["backend"]);
    let mut clients: Vec<_> = devs.iter().map(|d| live_client(&s, d, &sentinel)).collect();
    for c in &mut clients {
        assert_eq!(c.wait_step(0)["rc"], 0, "connect");
    }

    // One request for three devices (one of them not connected), one named twice.
    let out = s.cli(&[
        "device",
        "revoke",
        "lost-1",
        "lost-2",
        "lost-idle",
        "lost-1",
        "--reason",
        "lost shipment",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Revoked 3 device(s): 3 certificate(s), 2 live connection(s) closed."),
        "{text}"
    );

    // Their clients were told why; the other one is still connected.
    std::fs::write(&sentinel, "").unwrap();
    let results: Vec<Vec<Value>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for r in &results[..2] {
        assert_eq!(r[2]["connected"], false, "{r:?}");
        assert_eq!(r[2]["disconnect"]["rc"], 0x98, "{r:?}");
    }
    assert_eq!(results[2][2]["connected"], true, "{:?}", results[2]);

    // Each device: its own write-ahead, then its own device_revoked with its count.
    for (id, closed) in [("lost-1", 1), ("lost-2", 1), ("lost-idle", 0)] {
        let ev = s.wait_event("revoked", |e| {
            e["type"] == "device_revoked" && e["device"] == id
        });
        assert_eq!(ev["sessions_closed"], closed, "{ev}");
        assert_eq!(ev["reason"], "lost shipment", "{ev}");
        let events = s.events();
        let wa = events.iter().position(|e| {
            e["type"] == "control_action" && e["action"] == "revoke_device" && e["subject"] == id
        });
        let done = events
            .iter()
            .position(|e| e["type"] == "device_revoked" && e["device"] == id);
        assert!(
            wa.is_some() && wa < done,
            "write-ahead of {id}: {wa:?}, done: {done:?}"
        );
        assert_eq!(s.show(id)["state"], "revoked");
    }
    assert_eq!(
        s.count_events("device_revoked"),
        3,
        "lost-1 is revoked once"
    );

    // A revoked certificate no longer connects; the kept one still does.
    assert!(!s
        .mosquitto_pub(&devs[0], &["-t", "devices/lost-1/telemetry", "-m", "x"])
        .status
        .success());
    let out = s.mosquitto_pub(&devs[2], &["-t", "devices/kept/telemetry", "-m", "x"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bulk_revocation_naming_an_unknown_device_revokes_nothing() {
    let s = Server::start();
    s.add_device("a", &["backend"]);
    s.add_device("b", &["backend"]);
    let (code, v) = s.admin_api(
        "POST",
        "/api/v1/revocations",
        Some(json!({"devices": ["a", "ghost", "b"], "reason": "x"})),
    );
    assert_eq!(code, 404, "{v}");
    assert!(v.to_string().contains("ghost"), "{v}");
    assert_eq!(s.show("a")["state"], "active");
    assert_eq!(s.show("b")["state"], "active");
    let (code, v) = s.admin_api("POST", "/api/v1/revocations", Some(json!({"devices": []})));
    assert_eq!(code, 400, "{v}");

    // From a file: comments and blank lines skipped.
    let list = s.root.join("ids.txt");
    std::fs::write(&list, "# retired\na\n\nb\n").unwrap();
    let out = s.cli(&["device", "revoke", "--from-file", list.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Revoked 2 device(s)"), "{text}");
    let (code, v) = s.admin_api("GET", "/api/v1/devices/b", None);
    assert_eq!((code, &v["state"]), (200, &json!("revoked")), "{v}");
}
