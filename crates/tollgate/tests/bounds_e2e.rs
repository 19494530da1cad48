//! Bounds under attack, end to end on the real binary: a subscriber that stops reading, a
//! packet that never finishes, retained messages that would fill memory and disk, a retained
//! publish the policy does not allow, subscriptions with huge filters, and the SUBACK reason
//! string for a filter that is too deep. Each test reproduces the attack on loopback with a
//! bounded number of messages and bounded time.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A raw MQTT 5 client over mTLS (Python's ssl, no MQTT library) that does what no
/// well-behaved client library would: stop reading, read slowly, send half a packet, or show
/// the SUBACK's reason string. It prints one JSON object per line as things happen.
const RAW: &str = r#"
import json, os, socket, ssl, struct, sys, time
a = json.loads(sys.argv[1])
def say(**kw):
    print(json.dumps(kw), flush=True)
def varint(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out
def s(b): return struct.pack(">H", len(b)) + b
def packet(first, body): return bytes([first]) + varint(len(body)) + body
ctx = ssl.create_default_context(cafile=a["ca"])
ctx.load_cert_chain(a["cert"], a["key"])
raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
if a.get("rcvbuf"):
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a["rcvbuf"])
raw.settimeout(10)
raw.connect(("127.0.0.1", a["port"]))
c = ctx.wrap_socket(raw, server_hostname="localhost")
buf = b""
def read_packet(timeout=10):
    global buf
    c.settimeout(timeout)
    while True:
        if len(buf) >= 2:
            n, mult, i = 0, 1, 1
            while i < len(buf) and i <= 4:
                n += (buf[i] & 0x7f) * mult; mult *= 128
                if not buf[i] & 0x80: break
                i += 1
            if i < len(buf) and len(buf) >= i + 1 + n:
                p = buf[:i + 1 + n]; buf = buf[i + 1 + n:]
                return p[0], p[i + 1:]
        chunk = c.recv(65536)
        if not chunk: return None
        buf += chunk
cid = a["client_id"].encode()
c.sendall(packet(0x10, s(b"MQTT") + bytes([5, 2]) + struct.pack(">H", a.get("keepalive", 0)) + b"\x00" + s(cid)))
kind, body = read_packet()
say(event="connack", code=body[1])
def props(body, at):
    n, mult, i = 0, 1, at
    while True:
        n += (body[i] & 0x7f) * mult; mult *= 128
        i += 1
        if not body[i - 1] & 0x80: break
    return body[i:i + n], i + n
if a.get("subscribe"):
    sub = b"".join(s(f.encode()) + bytes([a.get("qos", 1)]) for f in a["subscribe"])
    c.sendall(packet(0x82, struct.pack(">H", 1) + b"\x00" + sub))
    kind, body = read_packet()
    p, end = props(body, 2)
    reason = None
    if p[:1] == b"\x1f":
        (n,) = struct.unpack(">H", p[1:3]); reason = p[3:3 + n].decode()
    say(event="suback", codes=list(body[end:]), reason=reason)
mode = a["mode"]
if mode == "stall":
    # Stop reading; the test says when to look at the connection again.
    end = time.time() + a.get("timeout", 30)
    while not os.path.exists(a["until_file"]) and time.time() < end:
        time.sleep(0.02)
    got, eof = 0, False
    try:
        c.settimeout(10)
        while True:
            chunk = c.recv(65536)
            if not chunk: eof = True; break
            got += len(chunk)
    except Exception as e:
        eof = isinstance(e, (ConnectionResetError, ssl.SSLError))
    say(event="done", eof=eof, bytes=got)
elif mode == "slow":
    # Read a little at a time, acknowledging every QoS 1 PUBLISH, until the test says stop.
    end = time.time() + a.get("timeout", 30)
    msgs, closed = 0, False
    while not os.path.exists(a["until_file"]) and time.time() < end:
        time.sleep(a["interval"])
        try:
            c.settimeout(0.01)
            chunk = c.recv(a["chunk"])
            if not chunk: closed = True; break
            buf += chunk
        except (socket.timeout, ssl.SSLWantReadError):
            pass
        while True:
            if len(buf) < 2: break
            n, mult, i = 0, 1, 1
            while i < len(buf) and i <= 4:
                n += (buf[i] & 0x7f) * mult; mult *= 128
                if not buf[i] & 0x80: break
                i += 1
            if i >= len(buf) or len(buf) < i + 1 + n: break
            first, body = buf[0], buf[i + 1:i + 1 + n]
            buf = buf[i + 1 + n:]
            if first >> 4 == 14: closed = True; break
            if first >> 4 == 3:
                msgs += 1
                if (first >> 1) & 3 == 1:
                    (tl,) = struct.unpack(">H", body[:2])
                    c.sendall(packet(0x40, body[2 + tl:4 + tl]))
        if closed: break
    say(event="done", closed=closed, messages=msgs)
elif mode == "partial":
    # Start a PUBLISH of `size` payload bytes, send `send` bytes of it, then stop.
    topic = a["topic"].encode()
    body = s(topic) + b"\x00" + b"x" * a["size"]
    whole = packet(0x30, body)
    c.sendall(whole[:a["send"]])
    t0 = time.time()
    rest = b""
    try:
        c.settimeout(a.get("timeout", 20))
        while True:
            chunk = c.recv(4096)
            if not chunk: break
            rest += chunk
    except Exception as e:
        say(event="error", error=type(e).__name__)
    say(event="done", after=list(rest[:64]), closed_after=time.time() - t0, total=len(whole))
elif mode == "none":
    say(event="done")
"#;

/// A running raw client; its lines arrive on `lines`.
struct Raw {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Raw {
    fn spawn(s: &Server, dev: &Device, mut args: Value) -> Raw {
        args["port"] = json!(s.mqtt_port);
        args["ca"] = json!(dev.ca);
        args["cert"] = json!(dev.cert);
        args["key"] = json!(dev.key);
        if args.get("client_id").is_none() {
            args["client_id"] = json!(dev.id);
        }
        let mut child = Command::new("python3")
            .args(["-c", RAW, &args.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Raw { child, lines: rx }
    }

    /// Wait (at most `within`) for the line whose `event` is `what`.
    fn wait(&mut self, what: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == what => return v,
                Ok(_) => {}
                Err(e) => panic!("raw client: no {what} within {within:?} ({e})"),
            }
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A publisher (paho, QoS 1) sending ~1 KB telemetry every `interval` s until `stop` exists.
fn publisher(s: &Server, dev: &Device, stop: &std::path::Path, interval: f64) -> PahoClient {
    s.paho_background(
        dev,
        json!([
            {"op": "connect", "client_id": dev.id},
            {"op": "publish_repeat", "topic": format!("devices/{}/telemetry", dev.id),
             "payload": "x".repeat(1000), "qos": 1, "interval": interval, "until_file": stop,
             "timeout": 40},
            {"op": "disconnect"}
        ]),
    )
}

fn disconnected_of(s: &Server, device: &str) -> Option<Value> {
    s.events()
        .into_iter()
        .find(|e| e["type"] == "disconnected" && e["device"] == device)
}

#[test]
fn a_qos1_subscriber_that_stops_reading_is_disconnected_within_the_write_timeout() {
    let s = Server::start_with(
        &[("write_timeout_secs = 30", "write_timeout_secs = 3")],
        EXAMPLE_POLICY,
    );
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let stop = s.root.join("stop");
    // A small receive buffer: its window closes after a few KB, and everything else stays in
    // the server's send queue while every write of the server's still succeeds.
    let mut sub = Raw::spawn(
        &s,
        &backend,
        json!({"subscribe": ["devices/+/telemetry"], "qos": 1, "rcvbuf": 4096,
               "mode": "stall", "until_file": stop, "timeout": 40}),
    );
    assert_eq!(
        sub.wait("suback", Duration::from_secs(10))["codes"],
        json!([1])
    );
    let ready = Instant::now();
    let mut publ = publisher(&s, &sensor, &stop, 0.002);
    let deadline = ready + Duration::from_secs(3 + 6);
    let event = loop {
        if let Some(e) = disconnected_of(&s, "backend") {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the subscriber that stopped reading is still connected after {:?}:\n{}",
            ready.elapsed(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = ready.elapsed();
    assert!(
        took >= Duration::from_millis(2900),
        "closed before the write timeout: {took:?} {event}"
    );
    let reason = event["reason"].as_str().unwrap();
    assert!(reason.starts_with("write timeout: "), "{event}");
    // The publisher was never held up: it is still publishing once the subscriber is gone.
    let sent_before = publ.wait_step(0);
    assert!(sent_before["rc"] == 0, "{sent_before}");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&stop, "").unwrap();
    let r = publ.join().unwrap();
    assert!(
        r[1]["sent"].as_u64().unwrap() > 100,
        "publisher: {:?}",
        r[1]
    );
    // The connection really is closed: once the client reads again it comes to an end.
    let done = sub.wait("done", Duration::from_secs(20));
    assert_eq!(done["eof"], true, "{done}");
    eprintln!(
        "stalled subscriber closed after {took:?}: {reason}; publisher sent {}",
        r[1]["sent"]
    );
}

#[test]
fn a_slow_subscriber_that_keeps_reading_keeps_its_connection() {
    let s = Server::start_with(
        &[("write_timeout_secs = 30", "write_timeout_secs = 3")],
        EXAMPLE_POLICY,
    );
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let stop = s.root.join("stop");
    // Reads 4 KB every 100 ms (40 KB/s) while ~1 KB messages arrive much faster: its window is
    // closed most of the time, but it moves.
    let mut sub = Raw::spawn(
        &s,
        &backend,
        json!({"subscribe": ["devices/+/telemetry"], "qos": 1, "rcvbuf": 4096,
               "mode": "slow", "interval": 0.1, "chunk": 4096, "until_file": stop,
               "timeout": 40}),
    );
    assert_eq!(
        sub.wait("suback", Duration::from_secs(10))["codes"],
        json!([1])
    );
    let publ = publisher(&s, &sensor, &stop, 0.005);
    // 2.5 write timeouts.
    std::thread::sleep(Duration::from_millis(7500));
    assert!(
        disconnected_of(&s, "backend").is_none(),
        "a slow reader was disconnected: {:?}\n{}",
        disconnected_of(&s, "backend"),
        s.log()
    );
    std::fs::write(&stop, "").unwrap();
    let done = sub.wait("done", Duration::from_secs(10));
    assert_eq!(done["closed"], false, "{done}");
    assert!(done["messages"].as_u64().unwrap() > 50, "{done}");
    publ.join().unwrap();
}

#[test]
fn a_half_sent_packet_is_closed_after_the_packet_timeout_even_with_keep_alive_0() {
    let s = Server::start_with(
        &[("packet_timeout_secs = 30", "packet_timeout_secs = 2")],
        EXAMPLE_POLICY,
    );
    let sensor = s.add_device("sensor-1", &["sensors"]);
    // 900 KB of a 1 MB PUBLISH, keep-alive 0 (no keep-alive timeout at all), then nothing.
    let mut c = Raw::spawn(
        &s,
        &sensor,
        json!({"keepalive": 0, "mode": "partial", "topic": "devices/sensor-1/telemetry",
               "size": 1_000_000, "send": 900_000, "timeout": 20}),
    );
    assert_eq!(c.wait("connack", Duration::from_secs(10))["code"], 0);
    let done = c.wait("done", Duration::from_secs(25));
    let t = done["closed_after"].as_f64().unwrap();
    assert!((1.5..6.0).contains(&t), "closed after {t} s: {done}");
    // MQTT 5 DISCONNECT 0x8D with a reason string.
    assert_eq!(done["after"][0], 0xE0, "{done}");
    assert_eq!(done["after"][2], 0x8D, "{done}");
    let e = s.wait_event("packet timeout", |e| {
        e["type"] == "protocol_violation"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("packet timeout"))
    });
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("900000 of {} bytes", done["total"])),
        "{e}"
    );
    let d = s.wait_event("disconnected", |e| e["type"] == "disconnected");
    assert!(
        d["reason"].as_str().unwrap().starts_with("packet timeout"),
        "{d}"
    );
}

#[test]
fn suback_0x8f_for_a_filter_that_is_too_deep_says_so_not_policy() {
    let s = Server::start();
    let backend = s.add_device("backend", &["backend"]);
    let deep = format!("devices/+/telemetry{}", "/x".repeat(200));
    let mut c = Raw::spawn(
        &s,
        &backend,
        json!({"subscribe": [deep, "devices/+/telemetry"], "qos": 1, "mode": "none"}),
    );
    let ack = c.wait("suback", Duration::from_secs(10));
    assert_eq!(ack["codes"], json!([0x8F, 1]), "{ack}");
    let reason = ack["reason"].as_str().unwrap();
    assert!(reason.contains("more than 128 levels"), "{reason}");
    assert!(!reason.contains("policy"), "{reason}");
}

#[test]
fn subscription_filter_bytes_are_capped_per_session_and_per_filter() {
    let s = Server::start_with(
        &[
            (
                "max_subscription_bytes_per_session = 131072",
                "max_subscription_bytes_per_session = 1000",
            ),
            ("max_filter_bytes = 1024", "max_filter_bytes = 300"),
        ],
        EXAMPLE_POLICY,
    );
    let backend = s.add_device("backend", &["backend"]);
    // Filters of 200 bytes each: five fit in 1000 bytes, the sixth does not.
    let filter = |i: usize| format!("devices/{}{i}/telemetry", "d".repeat(200 - 18 - 1));
    assert_eq!(filter(1).len(), 200);
    let filters: Vec<String> = (0..6).map(filter).collect();
    for v in [5, 3] {
        let r = s.paho(
            &backend,
            json!([
                {"op": "connect", "client_id": "backend", "version": v},
                {"op": "subscribe", "filters": filters, "qos": 1},
                {"op": "subscribe", "filters": [format!("devices/{}/telemetry", "e".repeat(290))], "qos": 1},
                {"op": "disconnect"}
            ]),
        );
        let quota = if v == 5 { 0x97 } else { 0x80 };
        assert_eq!(r[1]["codes"], json!([1, 1, 1, 1, 1, quota]), "v{v}: {r:?}");
        // One filter longer than 300 bytes: refused on its own (0x8F; 3.1.1 has only 0x80).
        let invalid = if v == 5 { 0x8F } else { 0x80 };
        assert_eq!(r[2]["codes"], json!([invalid]), "v{v}: {r:?}");
    }
    // A reason string says which cap it was.
    let mut c = Raw::spawn(
        &s,
        &backend,
        json!({"subscribe": filters, "qos": 1, "mode": "none"}),
    );
    let ack = c.wait("suback", Duration::from_secs(10));
    assert_eq!(ack["codes"], json!([1, 1, 1, 1, 1, 0x97]), "{ack}");
    assert!(
        ack["reason"]
            .as_str()
            .unwrap()
            .contains("1000 bytes of filters per session"),
        "{ack}"
    );
}

/// The example policy with a tree of status topics per device (`devices/ID/status/#`) that
/// sensors may publish and retain and the backend may read.
fn status_tree_policy() -> String {
    EXAMPLE_POLICY.replace("/status\"", "/status/#\"")
}

#[test]
fn retained_publishes_over_the_per_device_cap_are_refused_with_0x97_across_a_restart() {
    let mut s = Server::start_with(
        &[(
            "max_retained_per_device = 1000",
            "max_retained_per_device = 2",
        )],
        &status_tree_policy(),
    );
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let publish = |t: &str| {
        json!({"op": "publish", "topic": format!("devices/sensor-1/status/{t}"), "payload": t,
               "qos": 1, "retain": true})
    };
    let sub = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/status/#"], "qos": 1},
            {"op": "expect", "count": 5, "timeout": 5},
            {"op": "disconnect"}
        ]),
    );
    let mut sub = sub;
    sub.wait_step(1);
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            publish("a"), publish("b"), publish("c"),
            // Updating one it owns is fine; clearing one frees its place.
            publish("a"),
            {"op": "publish", "topic": "devices/sensor-1/status/b", "payload": "", "qos": 1, "retain": true},
            publish("c"),
            {"op": "disconnect"}
        ]),
    );
    let codes: Vec<&Value> = r[1..7].iter().map(|x| &x["rc"]).collect();
    assert_eq!(codes, [0, 0, 0x97, 0, 0, 0], "{r:?}");
    assert!(
        r[3]["reason"]
            .as_str()
            .unwrap()
            .contains("retained message quota exceeded (2 messages per device)"),
        "{r:?}"
    );
    // Refused as a whole: the live subscriber never got "c" the first time.
    let got = sub.join().unwrap();
    let payloads: Vec<&str> = got[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["a", "b", "a", "", "c"], "{got:?}");
    let e = s.wait_event("retain quota", |e| {
        e["type"] == "publish_denied" && e["what"] == "retain_quota"
    });
    assert_eq!(e["topic"], "devices/sensor-1/status/c", "{e}");

    // The owner is kept on disk: after a restart the device still holds two.
    s.stop();
    s.spawn();
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            publish("d"),
            publish("a"),
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(
        (&r[1]["rc"], &r[2]["rc"]),
        (&json!(0x97), &json!(0)),
        "{r:?}"
    );
}

/// One device publishes `n` retained 1 MB messages to topics of its own; returns (accepted,
/// refused, server RSS growth in KiB, sessions.db + WAL in KiB).
fn retained_flood(config: &[(&str, &str)], n: usize) -> (usize, usize, u64, u64) {
    let s = Server::start_with(config, &status_tree_policy());
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let rss_before = s.status_kib("VmRSS:");
    let steps: Vec<Value> = std::iter::once(json!({"op": "connect", "client_id": "sensor-1"}))
        .chain((0..n).map(|i| {
            json!({"op": "publish", "topic": format!("devices/sensor-1/status/{i}"),
                   "payload_size": 1_000_000, "qos": 1, "retain": true, "timeout": 20})
        }))
        .chain(std::iter::once(json!({"op": "disconnect"})))
        .collect();
    let r = s.paho(&sensor, json!(steps));
    let accepted = r[1..=n].iter().filter(|x| x["rc"] == 0).count();
    let refused = r[1..=n].iter().filter(|x| x["rc"] == 0x97).count();
    let rss = s.status_kib("VmRSS:").saturating_sub(rss_before);
    let db = std::fs::metadata(s.data.join("sessions.db")).map_or(0, |m| m.len())
        + std::fs::metadata(s.data.join("sessions.db-wal")).map_or(0, |m| m.len());
    (accepted, refused, rss, db / 1024)
}

#[test]
fn a_device_flooding_retained_1_mb_messages_is_capped_in_memory_and_on_disk() {
    let n = 30;
    // Caps raised out of the way: what the attack cost before they existed.
    let (all, _, rss_uncapped, db_uncapped) = retained_flood(
        &[(
            "max_retained_bytes_per_device = 4194304",
            "max_retained_bytes_per_device = 1073741824",
        )],
        n,
    );
    assert_eq!(all, n);
    // The defaults: 4 MiB per device, so four 1 MB messages.
    let (accepted, refused, rss, db) = retained_flood(&[], n);
    eprintln!(
        "retained flood, {n} x 1 MB from one device: uncapped {all} kept, RSS +{rss_uncapped} KiB, \
         sessions.db+WAL {db_uncapped} KiB; default caps {accepted} kept ({refused} refused), \
         RSS +{rss} KiB, sessions.db+WAL {db} KiB"
    );
    assert_eq!((accepted, refused), (4, n - 4));
    assert!(
        rss < rss_uncapped / 2 && db < db_uncapped / 2,
        "capped: RSS +{rss} KiB, db {db} KiB; uncapped: RSS +{rss_uncapped} KiB, db {db_uncapped} KiB"
    );
}

#[test]
fn a_retained_publish_without_a_retain_grant_is_refused_like_a_publish_denial() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let mut sub = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1},
            {"op": "expect", "count": 2, "timeout": 3},
            {"op": "disconnect"}
        ]),
    );
    sub.wait_step(1);
    // Telemetry may be published, not retained: the sensors rule grants retain on status only.
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "kept", "qos": 1, "retain": true},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "plain", "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/status", "payload": "online", "qos": 1, "retain": true},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0x87, "{r:?}");
    assert_eq!(r[1]["reason"], "retain not authorized by policy", "{r:?}");
    assert_eq!((&r[2]["rc"], &r[3]["rc"]), (&json!(0), &json!(0)), "{r:?}");
    let got = sub.join().unwrap();
    let payloads: Vec<&str> = got[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(
        payloads,
        ["plain"],
        "the refused message is not delivered: {got:?}"
    );
    let e = s.wait_event("retain denied", |e| {
        e["type"] == "publish_denied" && e["what"] == "retain"
    });
    assert_eq!(e["topic"], "devices/sensor-1/telemetry", "{e}");
    // 3.1.1 cannot be told: acknowledged and dropped, still nothing retained.
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1", "version": 3},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "v3", "qos": 1, "retain": true},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0, "{r:?}");
    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 1},
            {"op": "expect", "count": 1, "timeout": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[2]["messages"], json!([]), "nothing retained: {r:?}");
}
