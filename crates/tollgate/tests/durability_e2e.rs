//! Durable sessions, end to end: the real binary killed with SIGKILL and restarted, real
//! clients (mosquitto_sub/pub, paho-mqtt) checking that nothing acknowledged is lost.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Edit the message journal of a stopped server the way a crash or a bad disk would, with the
/// record layout written out here (not the store's code): `damage-blob` replaces the message of
/// the first queued-message record with bytes that are no PUBLISH (its CRC recomputed),
/// `flip` flips one byte of that record (its CRC now fails), `tear` appends half a record to
/// the last segment, as a crash in the middle of an append leaves it.
fn journal(s: &Server, action: &str) {
    const PY: &str = r#"
import os, struct, sys, zlib
d, action = sys.argv[1], sys.argv[2]
segs = sorted(f for f in os.listdir(d) if f.endswith('.seg'))
assert segs, 'no journal segments'
if action == 'tear':
    rec = struct.pack('<II', 1000, 0) + bytes(12)
    with open(os.path.join(d, segs[-1]), 'ab') as f:
        f.write(rec)
    sys.exit(0)
for name in segs:
    path = os.path.join(d, name)
    data = bytearray(open(path, 'rb').read())
    assert data[:8] == b'TGJOURNL', 'magic'
    off = 16
    while off + 8 <= len(data):
        n, crc = struct.unpack_from('<II', data, off)
        body = data[off + 8: off + 8 + n]
        if body[:1] == b'\x01':
            if action == 'flip':
                data[off + 8 + 10] ^= 0xFF
            else:
                subs = struct.unpack_from('<H', body, 29)[0]
                head = bytes(body[:31 + 4 * subs])
                new = head + b'\x00\xff'
                rec = struct.pack('<II', len(new), zlib.crc32(new)) + new
                data[off: off + 8 + n] = rec
            open(path, 'wb').write(data)
            sys.exit(0)
        off += 8 + n
sys.exit('no queued-message record found')
"#;
    let dir = s.data.join("sessions.db.journal");
    let out = Command::new("python3")
        .args(["-c", PY])
        .arg(&dir)
        .arg(action)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// mosquitto_sub as a persistent (clean session 0) QoS 1 subscriber to every device's telemetry,
/// with `extra` arguments.
fn persistent_sub(s: &Server, dev: &Device, extra: &[&str]) -> MosqSub {
    let mut args = vec!["-c", "-q", "1", "-t", "devices/+/telemetry"];
    args.extend_from_slice(extra);
    s.mosquitto_sub(dev, &args)
}

#[test]
fn retained_messages_and_persistent_subscriptions_survive_kill_9_and_restart() {
    let mut s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);

    // A persistent subscription (clean session 0), then the subscriber goes away.
    let sub = persistent_sub(&s, &backend, &["-E"]);
    finish(sub, Duration::from_secs(10));
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-t",
            "devices/sensor-1/status",
            "-m",
            "online",
            "-r",
            "-q",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-t",
            "devices/sensor-1/telemetry",
            "-m",
            "before-crash",
            "-q",
            "1",
        ],
    );
    assert!(out.status.success());

    // Crash: no shutdown, no flush.
    let before = s.count_events("sessions_restored");
    s.kill9();
    s.spawn();
    let restored = s.nth_event("sessions_restored", before);
    assert_eq!(restored["sessions"], 1, "{restored}");
    assert_eq!(restored["messages"], 1, "{restored}");
    assert_eq!(restored["retained"], 1, "{restored}");

    // Published while the subscriber is away: only the restored subscription can queue it.
    let out = s.mosquitto_pub(
        &sensor,
        &[
            "-t",
            "devices/sensor-1/telemetry",
            "-m",
            "after-restart",
            "-q",
            "1",
        ],
    );
    assert!(out.status.success());
    // And once more through a clean restart.
    s.stop();
    s.spawn();

    let sub = persistent_sub(&s, &backend, &["-C", "2", "-W", "10"]);
    let got = finish(sub, Duration::from_secs(12));
    assert_eq!(
        lines(&got),
        ["before-crash", "after-restart"],
        "{}",
        s.log()
    );

    // The retained message reaches a new subscriber after the restarts.
    let sub = s.mosquitto_sub(
        &backend,
        &["-t", "devices/sensor-1/status", "-C", "1", "-W", "10"],
    );
    assert_eq!(lines(&finish(sub, Duration::from_secs(12))), ["online"]);

    // The store checks out.
    let out = s.cli(&["store", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["integrity"], "ok");
    assert_eq!(report["retained"], 1);
}

#[test]
fn qos_1_and_2_messages_survive_repeated_sigkill_with_none_lost() {
    let kills: usize = std::env::var("TOLLGATE_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut seed: u64 = std::env::var("TOLLGATE_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos: {kills} kills, seed {seed} (TOLLGATE_CHAOS_KILLS, TOLLGATE_CHAOS_SEED)");
    let mut rand = move |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };

    let mut s = Server::start();
    let port = free_port();
    s.fixed_mqtt_port = Some(port);
    s.stop();
    s.spawn();
    let publishers: Vec<Device> = ["sensor-1", "sensor-2"]
        .iter()
        .map(|d| s.add_device(d, &["sensors"]))
        .collect();
    let subscribers: Vec<Device> = ["backend-a", "backend-b"]
        .iter()
        .map(|d| s.add_device(d, &["backend"]))
        .collect();
    let dev = |d: &Device| json!({"id": d.id, "cert": d.cert, "key": d.key});
    let stop_file = s.root.join("chaos.stop");
    let plan = json!({
        "host": "127.0.0.1",
        "port": port,
        "ca": publishers[0].ca,
        "stop_file": stop_file,
        "topic_fmt": "devices/{id}/telemetry",
        "filter": "devices/+/telemetry",
        "publishers": publishers.iter().map(dev).collect::<Vec<_>>(),
        "subscribers": subscribers.iter().map(dev).collect::<Vec<_>>(),
        "interval_ms": 2,
        "inflight": 20,
        "drain_secs": 60,
    });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/chaos.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(plan.to_string().as_bytes())
            .unwrap();
    }
    // Wait until the subscribers hold their subscriptions (SUBACK) and the publishers are
    // connected: chaos.py says so on stderr.
    let stderr = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr_reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut rest = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line == "CHAOS-READY" {
                let _ = ready_tx.send(());
            } else {
                rest.push_str(&line);
                rest.push('\n');
            }
        }
        rest
    });
    assert!(
        ready_rx.recv_timeout(Duration::from_secs(45)).is_ok(),
        "chaos clients did not connect and subscribe:\n{}",
        s.log()
    );
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rand(150, 900)));
        s.kill9();
        // Sometimes come back at once (clients still mid-reconnect), sometimes after a pause.
        std::thread::sleep(Duration::from_millis(rand(0, 300)));
        s.spawn();
        if k % 5 == 4 {
            eprintln!("chaos: {} kills", k + 1);
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(&stop_file, b"stop").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert!(out.status.success(), "chaos clients failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!(
        "chaos report after {kills} SIGKILLs: sent {}, acknowledged {} ({} QoS 2), delivered {}, \
         duplicated {} ({} QoS 2), lost {}, still pending {}",
        report["sent"],
        report["acknowledged"],
        report["acknowledged_qos2"],
        report["delivered"],
        report["duplicated"],
        report["duplicated_qos2"],
        report["lost"],
        report["still_pending"]
    );
    assert_eq!(report["lost"], 0, "acknowledged messages lost: {report}");
    assert_eq!(
        report["duplicated_qos2"], 0,
        "QoS 2 delivered twice: {report}"
    );
    assert!(
        report["acknowledged"].as_u64().unwrap() >= 200,
        "too little traffic to mean anything: {report}"
    );
    assert!(report["acknowledged_qos2"].as_u64().unwrap() >= 100);
    // Every acknowledged message reached both subscribers.
    assert!(
        report["delivered"].as_u64().unwrap() >= 2 * report["acknowledged"].as_u64().unwrap(),
        "{report}"
    );
    let out = s.cli(&["store", "check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_full_queue_refuses_with_0x97_or_drops_the_oldest_as_configured() {
    for policy in ["reject", "drop-oldest"] {
        let s = Server::start_with(
            &[
                ("max_queued_messages = 10000", "max_queued_messages = 2"),
                (
                    "queue_full = \"reject\"",
                    &format!("queue_full = \"{policy}\""),
                ),
            ],
            EXAMPLE_POLICY,
        );
        let sensor = s.add_device("sensor-1", &["sensors"]);
        let backend = s.add_device("backend", &["backend"]);
        // A persistent v5 subscriber that goes offline.
        let r = s.paho(
            &backend,
            json!([
                {"op": "connect", "client_id": "backend", "clean": true, "session_expiry": 600},
                {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1},
                {"op": "disconnect"},
            ]),
        );
        assert_eq!(r[1]["codes"], json!([1]));
        let r = s.paho(
            &sensor,
            json!([
                {"op": "connect", "client_id": "sensor-1"},
                {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "m1", "qos": 1},
                {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "m2", "qos": 1},
                {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "m3", "qos": 1},
                {"op": "disconnect"},
            ]),
        );
        let (third, expected) = if policy == "reject" {
            (0x97, ["m1", "m2"])
        } else {
            (0, ["m2", "m3"])
        };
        assert_eq!(r[1]["rc"], 0, "{policy}: {r:?}");
        assert_eq!(r[2]["rc"], 0, "{policy}: {r:?}");
        assert_eq!(r[3]["rc"], third, "{policy}: {r:?}");
        let ev = s.wait_event("queue_full", |e| e["type"] == "queue_full");
        let action = if policy == "reject" {
            "rejected"
        } else {
            "dropped_oldest"
        };
        assert_eq!(ev["action"], action);
        let r = s.paho(
            &backend,
            json!([
                {"op": "connect", "client_id": "backend", "clean": false, "session_expiry": 600},
                {"op": "expect", "count": 2, "timeout": 5},
                {"op": "sleep", "seconds": 0.3},
                {"op": "expect", "count": 1, "timeout": 0.2},
                {"op": "disconnect"},
            ]),
        );
        assert_eq!(r[0]["session_present"], true);
        let got: Vec<&str> = r[1]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["payload"].as_str().unwrap())
            .collect();
        assert_eq!(got, expected, "{policy}");
        assert_eq!(r[3]["messages"], json!([]), "{policy}: nothing more");
    }
}

/// A size-limited file system for the store: tmpfs (the tests run as root, as in CI).
struct SmallFs {
    dir: std::path::PathBuf,
}

impl SmallFs {
    fn mount(dir: std::path::PathBuf, size: &str) -> SmallFs {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { dir }
    }

    /// Fill the file system with `name` until the disk is full.
    fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join(name)).unwrap();
        let block = vec![0u8; 16 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_refuses_new_qos_1_messages_with_0x97_and_recovers_by_itself() {
    let root = temp_dir("diskfull");
    let fs = SmallFs::mount(root.join("small"), "2m");
    let store = fs.dir.join("sessions.db");
    let store_line = format!("file = {:?}", store.display().to_string());
    let mut s = Server::start_with(&[("file = \"sessions.db\"", &store_line)], EXAMPLE_POLICY);
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let sensor2 = s.add_device("sensor-2", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let sub = persistent_sub(&s, &backend, &["-E"]);
    finish(sub, Duration::from_secs(10));
    // The subscriber's disconnect writes its session record; let that commit land before the
    // disk fills, or the store is already unhealthy when the publish below arrives.
    s.wait_event("subscriber gone", |e| {
        e["type"] == "disconnected" && e["device"] == "backend"
    });
    std::thread::sleep(Duration::from_millis(300));

    fs.fill("filler");
    // Accepted for writing when the disk fills: not acknowledged while it cannot be written
    // (and, acknowledgements being in order, nothing after it on that connection either).
    let held = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload_size": 300000, "qos": 1, "timeout": 2},
            {"op": "disconnect"},
        ]),
    );
    assert_eq!(
        held[1]["rc"],
        Value::Null,
        "acknowledged without the disk: {held:?}"
    );
    let ev = s.nth_event("storage_unavailable", 0);
    // The store knows it cannot write: new QoS 1 messages are refused at once with 0x97.
    let r = s.paho(
        &sensor2,
        json!([
            {"op": "connect", "client_id": "sensor-2"},
            {"op": "publish", "topic": "devices/sensor-2/telemetry", "payload_size": 1000, "qos": 1, "timeout": 3},
            {"op": "disconnect"},
        ]),
    );
    assert_eq!(r[1]["rc"], 0x97, "{r:?}\n{}", s.log());
    assert!(ev["error"].as_str().unwrap().contains("full"), "{ev}");

    // Space comes back: the store retries and recovers without a restart.
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    s.nth_event("storage_recovered", 0);
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload_size": 2000, "qos": 1},
            {"op": "disconnect"},
        ]),
    );
    assert_eq!(r[1]["rc"], 0, "{r:?}");

    // Across a crash: the message held during the outage was written once space came back;
    // the refused one was never queued.
    s.kill9();
    s.spawn();
    let sub = persistent_sub(&s, &backend, &["-C", "2", "-W", "10", "-F", "%l"]);
    let got = finish(sub, Duration::from_secs(12));
    assert_eq!(lines(&got), ["300000", "2000"], "{}", s.log());
    s.stop();
    drop(fs);
}

#[test]
fn store_check_finds_damage_and_compact_refuses_a_running_server() {
    let mut s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let sub = persistent_sub(&s, &backend, &["-E"]);
    finish(sub, Duration::from_secs(10));
    for m in ["a", "b"] {
        let out = s.mosquitto_pub(
            &sensor,
            &["-t", "devices/sensor-1/telemetry", "-m", m, "-q", "1"],
        );
        assert!(out.status.success());
    }
    let out = s.cli(&["store", "compact"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop();

    let out = s.cli(&["store", "check"]);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sessions"], 1);
    assert_eq!(report["queued_messages"], 2);
    assert_eq!(report["undecodable"], 0);

    // Damage one stored message (a well-formed journal record whose message is not a
    // PUBLISH): check reports it and fails.
    journal(&s, "damage-blob");
    let out = s.cli(&["store", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["undecodable"], 1);

    let out = s.cli(&["store", "compact"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["bytes_after"].as_u64().is_some());

    // The damaged message is skipped on start; the good one is still delivered.
    s.spawn();
    let sub = persistent_sub(&s, &backend, &["-C", "1", "-W", "10"]);
    assert_eq!(lines(&finish(sub, Duration::from_secs(12))), ["b"]);
}

#[test]
fn a_torn_journal_tail_after_kill_9_is_cut_and_queued_messages_survive() {
    let mut s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let sub = persistent_sub(&s, &backend, &["-E"]);
    finish(sub, Duration::from_secs(10));
    let out = s.mosquitto_pub(
        &sensor,
        &["-t", "devices/sensor-1/telemetry", "-m", "kept", "-q", "1"],
    );
    assert!(out.status.success());

    // A crash in the middle of an append: half a record at the end of the journal.
    s.kill9();
    journal(&s, "tear");
    let out = s.cli(&["store", "check"]);
    assert!(
        out.status.success(),
        "a torn tail is not damage: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["journal"], "ok");
    assert_eq!(report["journal_torn_bytes"], 20);
    assert_eq!(report["queued_messages"], 1);

    s.spawn();
    assert!(
        s.log().contains("journal ends in a torn write"),
        "{}",
        s.log()
    );
    let sub = persistent_sub(&s, &backend, &["-C", "1", "-W", "10"]);
    assert_eq!(lines(&finish(sub, Duration::from_secs(12))), ["kept"]);
    s.stop();
    let out = s.cli(&["store", "check"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["journal_torn_bytes"], 0, "{report}");
}

#[test]
fn a_corrupt_journal_record_stops_the_server_with_a_clear_error() {
    let mut s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let sub = persistent_sub(&s, &backend, &["-E"]);
    finish(sub, Duration::from_secs(10));
    for m in ["a", "b"] {
        let out = s.mosquitto_pub(
            &sensor,
            &["-t", "devices/sensor-1/telemetry", "-m", m, "-q", "1"],
        );
        assert!(out.status.success());
    }
    s.stop();

    // Bit rot in a committed record, with later groups after it: not a torn tail.
    journal(&s, "flip");
    let out = s.cli(&["store", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = report["journal"].as_str().unwrap();
    assert!(why.contains("CRC mismatch"), "{report}");

    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.spawn()));
    assert!(started.is_err(), "the server started on a corrupt journal");
    let log = s.log();
    assert!(log.contains("journal damaged"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
