//! MQTT conformance end to end: the real binary over mTLS, driven by paho-mqtt and the repo's own
//! client. The 3.1.1 zero-length client id rule (MQTT-3.1.3-8), server-to-client topic aliases
//! (MQTT 5 3.3.2.3.4) received by a real MQTT 5 client, and a delayed will on a clean-start
//! takeover (MQTT 5 3.1.3.2.2).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Device, Server};
use tollgate_client::{ClientError, Dial};
use tollgate_mqtt::{Protocol, ReasonCode};

/// The repo's own client for `dev`: paho and mosquitto_pub both refuse to send a zero-length
/// client id with CleanSession = 0, so the refusal is exercised with it.
fn own_client(dev: &Device) -> tollgate_client::DeviceTls {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&dev.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let pem =
        std::fs::read_to_string(&dev.cert).unwrap() + &std::fs::read_to_string(&dev.key).unwrap();
    tollgate_client::device_tls(&dev.id, &pem, &roots, true, false).unwrap()
}

fn metric(s: &Server, name: &str) -> f64 {
    let addrs: Value =
        serde_json::from_str(&std::fs::read_to_string(s.data.join("run/addresses.json")).unwrap())
            .unwrap();
    let url = format!("http://{}/metrics", addrs["metrics"].as_str().unwrap());
    let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
    assert!(out.status.success(), "curl {url}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn a_3_1_1_empty_client_id_with_clean_session_0_gets_return_code_2_and_with_clean_session_1_connects(
) {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let tls = own_client(&sensor);
    let addr = format!("127.0.0.1:{}", s.mqtt_port).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(tollgate_client::connect_with(
        addr,
        &tls,
        Protocol::V311,
        30,
        &Dial {
            client_id: Some(String::new()),
            persistent: true,
            ..Dial::default()
        },
    ));
    // 3.1.1 return code 2 decodes as 0x85 (client identifier not valid).
    match refused {
        Err(ClientError::Refused(name)) => {
            assert_eq!(name, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID.name())
        }
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("an empty client id with CleanSession = 0 was accepted"),
    }
    let e = s.wait_event("connection_refused", |e| {
        e["type"] == "connection_refused" && e["device"] == "sensor-1"
    });
    assert_eq!(e["reason"], "client_id_rejected", "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("MQTT-3.1.3-8"),
        "{e}"
    );

    // CleanSession = 1 with an empty id connects (paho, a real 3.1.1 client), as itself.
    let r = s.paho(
        &sensor,
        json!([{"op": "connect", "version": 3, "client_id": "", "clean": true}, {"op": "disconnect"}]),
    );
    assert_eq!(r[0]["rc"], 0, "{r:?}");
    let e = s.wait_event("connection_accepted", |e| {
        e["type"] == "connection_accepted" && e["device"] == "sensor-1"
    });
    assert_eq!(
        (&e["client_id"], &e["protocol"]),
        (&json!("sensor-1"), &json!("3.1.1"))
    );
}

const LONG_TOPICS: [&str; 3] = [
    "devices/sensor-1/events/plants/berlin-3/lines/packaging-07/machines/filler-0042/temperature",
    "devices/sensor-1/events/plants/berlin-3/lines/packaging-07/machines/filler-0042/pressure",
    "devices/sensor-1/events/plants/berlin-3/lines/packaging-07/machines/capper-0017/torque",
];

/// Resolve a subscriber's messages as an MQTT 5 client must: an alias with a topic sets the
/// mapping, an alias alone uses it. Returns (topic, payload) per message and how many came
/// by alias alone.
fn resolve(messages: &[Value]) -> (Vec<(String, String)>, usize) {
    let mut aliases: HashMap<u64, String> = HashMap::new();
    let mut alias_only = 0;
    let out = messages
        .iter()
        .map(|m| {
            let wire = m["topic"].as_str().unwrap().to_owned();
            let topic = match m["topic_alias"].as_u64() {
                None => wire,
                Some(a) if wire.is_empty() => {
                    alias_only += 1;
                    aliases
                        .get(&a)
                        .unwrap_or_else(|| panic!("alias {a} used before it was set: {m}"))
                        .clone()
                }
                Some(a) => {
                    aliases.insert(a, wire.clone());
                    wire
                }
            };
            (topic, m["payload"].as_str().unwrap().to_owned())
        })
        .collect();
    (out, alias_only)
}

#[test]
fn server_topic_aliases_reach_a_paho_mqtt_5_client_with_the_right_topic_on_every_message() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let aliased = s.add_device("backend", &["backend"]);
    let plain = s.add_device("backend-2", &["backend"]);
    // Three long topics sent round and round, with one-off topics in between: the client allows
    // 3 aliases, so a one-off takes a free alias at first and is replaced by the third hot topic
    // on its second sighting; later one-offs go plain and evict nothing.
    let mut sent: Vec<(String, String)> = Vec::new();
    for i in 0..30 {
        let topic = LONG_TOPICS[i % 3].to_owned();
        sent.push((topic, format!("m{i}")));
        if i % 7 == 0 {
            sent.push((
                format!("devices/sensor-1/events/one-off/{i}"),
                format!("o{i}"),
            ));
        }
    }
    let n = sent.len();
    let subscriber = |dev: &Device, alias_max: Option<u64>| {
        let mut connect = json!({"op": "connect", "client_id": dev.id});
        if let Some(m) = alias_max {
            connect["topic_alias_maximum"] = json!(m);
        }
        s.paho_background(
            dev,
            json!([connect,
                   {"op": "subscribe", "filters": ["devices/+/events/#"], "qos": 1},
                   {"op": "expect", "count": n, "timeout": 20},
                   {"op": "disconnect"}]),
        )
    };
    let saved_before = metric(&s, "tollgate_topic_alias_bytes_saved_total");
    let mut with = subscriber(&aliased, Some(3));
    let mut without = subscriber(&plain, None);
    with.wait_step(1);
    without.wait_step(1);
    let steps: Vec<Value> = std::iter::once(json!({"op": "connect", "client_id": "sensor-1"}))
        .chain(
            sent.iter()
                .map(|(t, p)| json!({"op": "publish", "topic": t, "payload": p, "qos": 1})),
        )
        .chain(std::iter::once(json!({"op": "disconnect"})))
        .collect();
    let r = s.paho(&sensor, json!(steps));
    assert!(r[1..=n].iter().all(|a| a["rc"] == 0), "{r:?}");

    let got = with.join().unwrap();
    let messages = got[2]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), n, "{got:?}");
    let (resolved, alias_only) = resolve(messages);
    assert_eq!(resolved, sent, "every message with its own topic, in order");
    assert!(
        alias_only >= 20,
        "topic aliases were used: {alias_only} of {n} came by alias alone"
    );
    assert!(messages
        .iter()
        .filter_map(|m| m["topic_alias"].as_u64())
        .all(|a| (1..=3).contains(&a)));

    // A client that allowed none gets none.
    let got = without.join().unwrap();
    let messages = got[2]["messages"].as_array().unwrap();
    assert!(messages.iter().all(|m| m.get("topic_alias").is_none()));
    let named: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(named, sent);

    // Saved: at least the topic names not sent, less the alias property, on each alias alone.
    let saved = metric(&s, "tollgate_topic_alias_bytes_saved_total") - saved_before;
    let shortest = LONG_TOPICS.iter().map(|t| t.len()).min().unwrap() as f64;
    assert!(
        saved >= alias_only as f64 * (shortest - 3.0) - 3.0 * 6.0,
        "saved {saved} bytes for {alias_only} alias-only messages"
    );
}

/// Client A holds sensor-1's session with a will delayed 300 s; client B takes the session over
/// with `clean_start`. Returns how long after B's CONNACK the status subscriber saw its next
/// message, and that message.
fn takeover(clean_start: bool) -> (Duration, Value) {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);
    let mut watcher = s.paho_background(
        &backend,
        json!([{"op": "connect", "client_id": "backend"},
               {"op": "subscribe", "filters": ["devices/+/status"], "qos": 1},
               {"op": "expect", "count": 1, "timeout": 30},
               {"op": "disconnect"}]),
    );
    watcher.wait_step(1);
    let mut a = s.paho_background(
        &sensor,
        json!([{"op": "connect", "client_id": "sensor-1", "clean": true, "session_expiry": 600,
                "will": {"topic": "devices/sensor-1/status", "payload": "gone", "qos": 1, "delay": 300}},
               {"op": "wait_disconnect", "timeout": 30}]),
    );
    assert_eq!(a.wait_step(0)["rc"], 0);
    let t0 = Instant::now();
    // B resumes (clean start 0) or ends (clean start 1) A's session, then says it is here: a
    // will published at the takeover reaches the watcher before this marker.
    let b = s.paho(
        &sensor,
        json!([{"op": "connect", "client_id": "sensor-1", "clean": clean_start, "session_expiry": 600},
               {"op": "publish", "topic": "devices/sensor-1/status", "payload": "marker", "qos": 1},
               {"op": "disconnect"}]),
    );
    assert_eq!(b[0]["rc"], 0, "{b:?}");
    assert_eq!(b[0]["session_present"], !clean_start, "{b:?}");
    let dropped = a.wait_step(1);
    assert_eq!(
        dropped["disconnect"]["rc"], 0x8E,
        "session taken over: {dropped}"
    );
    let got = watcher.join().unwrap();
    let first = got[2]["messages"][0].clone();
    (t0.elapsed(), first)
}

#[test]
fn a_clean_start_takeover_publishes_the_old_connections_delayed_will_at_once() {
    let (after, first) = takeover(true);
    assert_eq!(first["payload"], "gone", "{first}");
    assert_eq!(first["topic"], "devices/sensor-1/status");
    assert!(
        after < Duration::from_secs(60),
        "the will came after {after:?}, not at the takeover"
    );
}

#[test]
fn a_takeover_that_resumes_the_session_publishes_no_delayed_will() {
    let (_, first) = takeover(false);
    assert_eq!(
        first["payload"], "marker",
        "the session went on: the will is not due ({first})"
    );
}
