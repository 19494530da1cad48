//! The TLS front door: only valid, unrevoked certificates from our issuing CA get in.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{read_until_closed, write_device, Device, Server};
use tollgate_pki::{CertProfile, Issuer, Validity};

#[test]
fn connecting_by_ip_address_works() {
    // OpenSSL sends "127.0.0.1" as SNI; a strict server would refuse the handshake.
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let out = s.mosquitto_pub(
        &sensor,
        &["-t", "devices/sensor-1/telemetry", "-m", "by-ip", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = s.mosq_args(&sensor);
    args[1] = "localhost".into();
    let out = Command::new("mosquitto_pub")
        .args(&args)
        .args(["-t", "devices/sensor-1/telemetry", "-m", "by-name"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn handshake_is_refused_without_a_certificate_for_a_foreign_ca_and_for_an_expired_certificate() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    // No client certificate.
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.mqtt_port.to_string(),
            "--cafile",
        ])
        .arg(&sensor.ca)
        .args([
            "-i",
            "sensor-1",
            "-t",
            "devices/sensor-1/telemetry",
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    s.wait_event("no certificate", |e| {
        e["type"] == "connection_refused" && e["reason"] == "no_certificate"
    });

    // A certificate for the same device id from a CA we do not trust.
    let foreign_root = Issuer::new_root("Foreign Root").unwrap();
    let foreign = foreign_root.new_intermediate("Foreign Issuing").unwrap();
    let issued = foreign
        .issue(
            &CertProfile::Device { id: "sensor-1" },
            Validity::starting_now(time::Duration::days(1)),
            None,
        )
        .unwrap();
    let forged = write_device(
        &s.root.join("forged"),
        "sensor-1",
        &issued.cert_pem,
        issued.key_pem.as_deref().unwrap(),
        &sensor.ca,
    );
    let out = s.mosquitto_pub(&forged, &["-t", "devices/sensor-1/telemetry", "-m", "x"]);
    assert!(!out.status.success());
    s.wait_event("unknown CA", |e| {
        e["type"] == "connection_refused" && e["reason"] == "unknown_ca"
    });

    // An expired certificate from our own issuing CA.
    let old = s.expired_device("sensor-1", &s.root.join("expired"));
    let out = s.mosquitto_pub(&old, &["-t", "devices/sensor-1/telemetry", "-m", "x"]);
    assert!(!out.status.success());
    let ev = s.wait_event("expired", |e| {
        e["type"] == "connection_refused" && e["reason"] == "expired"
    });
    // When, as a date, not Unix seconds (regression).
    let detail = ev["detail"].as_str().unwrap();
    assert!(detail.contains("certificate expired at 20"), "{ev}");
    assert!(!detail.contains("UNIX"), "{ev}");

    // The admin certificate is not a device.
    let admin = write_device(
        &s.root.join("admin"),
        "admin",
        &std::fs::read_to_string(s.data.join("admin/admin.crt")).unwrap(),
        &std::fs::read_to_string(s.data.join("admin/admin.key")).unwrap(),
        &sensor.ca,
    );
    let out = s.mosquitto_pub(&admin, &["-t", "devices/sensor-1/telemetry", "-m", "x"]);
    assert!(!out.status.success());
}

#[test]
fn a_plaintext_mqtt_connect_is_never_answered_with_connack() {
    let s = Server::start();
    let mut tcp = TcpStream::connect(("127.0.0.1", s.mqtt_port)).unwrap();
    // MQTT 3.1.1 CONNECT, client id "x", clean session, keep-alive 60.
    tcp.write_all(&[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'x',
    ])
    .unwrap();
    // The server must close the connection (a timeout with nothing received is a failure).
    let buf = read_until_closed(&mut tcp, Duration::from_secs(5));
    assert!(
        !buf.starts_with(&[0x20]),
        "got something like a CONNACK: {buf:02x?}"
    );
    // Whatever came back (a TLS alert, or nothing) is not MQTT.
    assert!(buf.is_empty() || buf[0] == 0x15, "{buf:02x?}");
    s.wait_event("tls error", |e| {
        e["type"] == "connection_refused" && e["reason"] == "tls_error"
    });
}

#[test]
fn revocation_cuts_live_sessions_within_one_second_and_bites_after_restart() {
    let mut s = Server::start();
    let backend = s.add_device("backend", &["backend"]);
    let v311 = s.add_device("backend-3", &["backend"]);
    let run = |dev: &Device, version: u8| {
        let mut c = s.paho_background(
            dev,
            json!([{"op": "connect", "client_id": dev.id, "version": version},
                   {"op": "subscribe", "filters": ["devices/+/telemetry"]},
                   {"op": "wait_disconnect", "timeout": 15}]),
        );
        // Connected and subscribed (SUBACK received) before the revocation.
        assert_eq!(c.wait_step(1)["codes"], json!([0]), "v{version}");
        c
    };
    let h5 = run(&backend, 5);
    let h3 = run(&v311, 3);
    let t0 = std::time::SystemTime::now();
    s.revoke("backend");
    s.revoke("backend-3");
    let r5 = h5.join().unwrap();
    let r3 = h3.join().unwrap();
    assert_eq!(
        r5[2]["disconnect"]["rc"], 0x98,
        "v5 DISCONNECT administrative action: {r5:?}"
    );
    for r in [&r5, &r3] {
        let at = r[2]["disconnect"]["at"].as_f64().expect("disconnected");
        let t0s = t0
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(at - t0s < 1.0, "closed {:.3}s after revoke", at - t0s);
    }
    s.wait_event("revoked", |e| {
        e["type"] == "device_revoked" && e["device"] == "backend"
    });
    // Refused in the handshake from now on, and after a restart.
    let out = s.mosquitto_pub(&backend, &["-t", "devices/backend/x", "-m", "x"]);
    assert!(!out.status.success());
    s.wait_event("refused revoked", |e| {
        e["type"] == "connection_refused" && e["reason"] == "revoked"
    });
    s.stop();
    s.spawn();
    let out = s.mosquitto_pub(&backend, &["-t", "devices/backend/x", "-m", "x"]);
    assert!(!out.status.success());
    let list = s.cli(&["device", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("backend ") && l.contains("revoked")),
        "{text}"
    );
}

const RESUME_SCRIPT: &str = r#"
import json, socket, ssl, sys, time, subprocess
port, ca, cert, key, revoke_cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
CONNECT = bytes([0x10, 0x14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 8]) + b"backend1"
def session(sess=None):
    raw = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
    s.sendall(CONNECT)
    try:
        data = s.recv(4)
    except Exception as e:
        data = b""
    return s, data
s, ack = session()
time.sleep(0.2)
first = s.session
s.close()
subprocess.run(revoke_cmd, check=True, capture_output=True)
time.sleep(0.3)
s2, ack2 = session(first)
print(json.dumps({"first_ack": list(ack), "reused": s2.session_reused, "second_ack": list(ack2)}))
"#;

#[test]
fn a_revoked_device_cannot_get_back_in_by_tls_resumption() {
    let s = Server::start();
    let dev = s.add_device("backend1", &["backend"]);
    let mut revoke = vec![
        support::BIN.to_string(),
        "device".into(),
        "revoke".into(),
        "backend1".into(),
        "--data".into(),
    ];
    revoke.push(s.data.display().to_string());
    let out = Command::new("python3")
        .args(["-c", RESUME_SCRIPT, &s.mqtt_port.to_string()])
        .arg(&dev.ca)
        .arg(&dev.cert)
        .arg(&dev.key)
        .args(&revoke)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["first_ack"],
        json!([0x20, 2, 0, 0]),
        "first connection accepted: {v}"
    );
    assert_eq!(
        v["reused"], true,
        "the second handshake resumed the TLS session: {v}"
    );
    // The resumed connection skips certificate verification, so the broker's serial check
    // must refuse it: CONNACK 5 (not authorized), never 0.
    assert_eq!(v["second_ack"], json!([0x20, 2, 0, 5]), "{v}");
    s.wait_event("resumed refusal", |e| {
        e["type"] == "connection_refused" && e["reason"] == "revoked"
    });
}

#[test]
fn handshakes_that_stall_are_closed_and_bounded_per_source_address() {
    let s = Server::start_with(
        &[
            ("handshake_timeout_secs = 10", "handshake_timeout_secs = 1"),
            ("max_handshakes_per_ip = 64", "max_handshakes_per_ip = 2"),
        ],
        support::EXAMPLE_POLICY,
    );
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", s.mqtt_port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(("127.0.0.1", s.mqtt_port)).unwrap();
    // Over the limit, a newcomer is parked unread until it speaks; this one never does, so it
    // is closed at the end of the park window (the handshake timeout, 1 s here) without
    // evicting anybody. (A newcomer that speaks is attack_e2e's neighbour test.)
    let t_third = Instant::now();
    let got = read_until_closed(&mut third, Duration::from_secs(3));
    assert!(got.is_empty(), "third concurrent handshake: {got:02x?}");
    assert!(
        t_third.elapsed() < Duration::from_millis(1900),
        "third concurrent handshake closed at the end of the park window: {:?}",
        t_third.elapsed()
    );
    s.wait_event("too many", |e| {
        e["type"] == "connection_refused"
            && e["reason"] == "too_many_handshakes"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("sent nothing"))
    });
    let t0 = Instant::now();
    for mut c in idle {
        let got = read_until_closed(&mut c, Duration::from_secs(5));
        assert!(got.is_empty(), "stalled handshake: {got:02x?}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stalled handshakes closed after the timeout"
    );
    s.wait_event("timeout", |e| {
        e["type"] == "connection_refused" && e["reason"] == "timeout"
    });
}
