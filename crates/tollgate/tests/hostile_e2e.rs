//! Hostile input: malformed packets end in a clean disconnect with the right reason code and
//! an event, never a crash; a client that never sends CONNECT is closed.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::Server;

/// Connect over mTLS, send CONNECT (v5 or 3.1.1), then `bad` bytes; report what came back.
const PROBE: &str = r#"
import json, socket, ssl, sys, time
port, ca, cert, key, version, bad_hex, send_connect = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
raw = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
s = ctx.wrap_socket(raw, server_hostname="localhost")
cid = b"sensor-1"
if version == "5":
    connect = bytes([0x10, 21, 0, 4]) + b"MQTT" + bytes([5, 2, 0, 60, 0, 0, len(cid)]) + cid
else:
    connect = bytes([0x10, 20, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, len(cid)]) + cid
out = {}
if send_connect == "1":
    s.sendall(connect)
    out["connack"] = list(s.recv(64))
else:
    time.sleep(float(bad_hex))
    bad_hex = ""
t0 = time.time()
try:
    s.sendall(bytes.fromhex(bad_hex))
except Exception as e:
    out["send_error"] = str(e)
rest = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
except Exception as e:
    out["recv_error"] = type(e).__name__
out["after"] = list(rest)
out["closed_after"] = time.time() - t0
print(json.dumps(out))
"#;

fn probe(
    s: &Server,
    dev: &support::Device,
    version: &str,
    bad_hex: &str,
    send_connect: bool,
) -> Value {
    let out = Command::new("python3")
        .args(["-c", PROBE, &s.mqtt_port.to_string()])
        .arg(&dev.ca)
        .arg(&dev.cert)
        .arg(&dev.key)
        .args([version, bad_hex, if send_connect { "1" } else { "0" }])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_corpus_of_malformed_packets_each_ends_in_a_clean_disconnect_and_an_event() {
    let s = Server::start();
    let dev = s.add_device("sensor-1", &["sensors"]);
    // (name, bytes after CONNECT, expected v5 DISCONNECT reason code)
    let corpus: &[(&str, &str, u8)] = &[
        (
            "SUBSCRIBE with reserved flags 0000",
            "8008000100000161 00".trim_end(),
            0x81,
        ),
        ("remaining length longer than 4 bytes", "30ffffffff7f", 0x81),
        ("PUBLISH with QoS 3", "3605000161000100", 0x81),
        ("packet larger than the maximum", "3080897a", 0x95),
        ("topic that is not UTF-8", "30060003fffefd00", 0x81),
        ("wildcard in a PUBLISH topic", "30060003612f2300", 0x90),
        ("QoS 1 PUBLISH with packet id 0", "3206000161000000", 0x81),
        (
            "second CONNECT",
            "101500044d515454050200 3c0000 0873656e736f722d31",
            0x82,
        ),
        ("reserved packet type 0", "0000", 0x81),
        ("SUBSCRIBE with no filter", "82030001 00", 0x82),
        (
            "property not allowed in PUBLISH (session expiry)",
            "300900016105110000000a",
            0x82,
        ),
    ];
    for (name, hex, code) in corpus {
        let hex: String = hex.split_whitespace().collect();
        let r = probe(&s, &dev, "5", &hex, true);
        assert_eq!(r["connack"][0], 0x20, "{name}: {r}");
        let after = r["after"].as_array().unwrap();
        assert!(after.len() >= 3, "{name}: expected a DISCONNECT, got {r}");
        assert_eq!(after[0], 0xE0, "{name}: {r}");
        assert_eq!(after[2], *code as u64, "{name}: reason code, got {r}");
    }
    // 3.1.1 has no server DISCONNECT: the connection is simply closed.
    let r = probe(&s, &dev, "4", "30ffffffff7f", true);
    assert_eq!(r["connack"], json!([0x20, 2, 0, 0]), "{r}");
    assert_eq!(r["after"], json!([]), "{r}");
    let malformed = s
        .events()
        .iter()
        .filter(|e| e["type"] == "malformed_packet")
        .count();
    let violations = s
        .events()
        .iter()
        .filter(|e| e["type"] == "protocol_violation")
        .count();
    assert!(
        malformed + violations > corpus.len(),
        "one event per bad packet: {malformed} + {violations}"
    );
    // The broker is still serving.
    let out = s.mosquitto_pub(
        &dev,
        &["-t", "devices/sensor-1/telemetry", "-m", "alive", "-q", "1"],
    );
    assert!(out.status.success());
}

#[test]
fn a_client_that_completes_tls_but_never_sends_connect_is_closed() {
    let s = Server::start_with(
        &[("handshake_timeout_secs = 10", "handshake_timeout_secs = 1")],
        support::EXAMPLE_POLICY,
    );
    let dev = s.add_device("sensor-1", &["sensors"]);
    let r = probe(&s, &dev, "5", "0.1", false);
    assert_eq!(r["after"], json!([]), "{r}");
    assert!(r["closed_after"].as_f64().unwrap() < 3.0, "{r}");
    s.wait_event("connect timeout", |e| {
        e["type"] == "connection_refused" && e["reason"] == "timeout"
    });
}

#[test]
fn a_silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let s = Server::start();
    let dev = s.add_device("sensor-1", &["sensors"]);
    // CONNECT v5 with keep-alive 1 s, then silence: an empty "bad" payload sends nothing.
    let script = PROBE.replace(
        "bytes([5, 2, 0, 60, 0, 0, len(cid)])",
        "bytes([5, 2, 0, 1, 0, 0, len(cid)])",
    );
    let out = Command::new("python3")
        .args(["-c", &script, &s.mqtt_port.to_string()])
        .arg(&dev.ca)
        .arg(&dev.cert)
        .arg(&dev.key)
        .args(["5", "", "1"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["after"][0], 0xE0, "{r}");
    assert_eq!(r["after"][2], 0x8D, "keep-alive timeout: {r}");
    let t = r["closed_after"].as_f64().unwrap();
    assert!((1.3..3.0).contains(&t), "closed after {t}s");
}

#[test]
fn server_keep_alive_receive_maximum_and_packet_size_are_advertised_and_enforced() {
    let s = Server::start_with(
        &[
            ("max_keep_alive = 0 ", "max_keep_alive = 5 "),
            ("receive_maximum = 1024", "receive_maximum = 2"),
        ],
        support::EXAMPLE_POLICY,
    );
    let dev = s.add_device("sensor-1", &["sensors"]);
    let r = s.paho(
        &dev,
        json!([{"op": "connect", "client_id": "sensor-1", "keepalive": 60}, {"op": "disconnect"}]),
    );
    assert_eq!(r[0]["server_keep_alive"], 5, "{r:?}");
    assert_eq!(r[0]["receive_maximum"], 2, "{r:?}");
    assert_eq!(r[0]["maximum_packet_size"], 1_048_576, "{r:?}");
    // Three unreleased QoS 2 messages against a receive maximum of 2: DISCONNECT 0x93.
    let topic = b"devices/sensor-1/telemetry";
    let mut hex = String::new();
    for id in 1u8..=3 {
        let mut p = vec![
            0x34,
            (2 + topic.len() + 2 + 1 + 1) as u8,
            0x00,
            topic.len() as u8,
        ];
        p.extend_from_slice(topic);
        p.extend_from_slice(&[0x00, id, 0x00, b'x']);
        hex.push_str(&p.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    let r = probe(&s, &dev, "5", &hex, true);
    let after = r["after"].as_array().unwrap();
    let disconnect = after.iter().position(|b| b == 0xE0).expect("a DISCONNECT");
    assert_eq!(after[disconnect + 2], 0x93, "receive maximum exceeded: {r}");
}
