//! The protocol state machine, driven packet by packet with no socket and no tokio driver:
//! a fake durable store stands in for the disk (it records every change and advances its
//! watermark only when told), and what the connection says to its client is decoded from its
//! outbox.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tollgate_events::{Consumer, Delivery as Ev, EventBus, RefusalReason};
use tollgate_mqtt::{
    decode, Bytes, BytesMut, Connect, ConnectProperties, Packet, Protocol, PubResp, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionRequest, Will,
};
use tollgate_policy::{AccessSnapshot, DeviceAccess, Policy, Quarantine};

use super::{Conn, End, Now};
use crate::persist::{Durability, Op};
use crate::session::{Control, ControlInbox};
use crate::{Broker, BrokerConfig, ClientIdRule, PeerIdentity};

const POLICY: &str = r#"
[[allow]]
id = "sensors"
who = "group:sensors"
publish = ["devices/${device.id}/telemetry", "devices/${device.id}/status"]
subscribe = ["devices/${device.id}/commands/#"]
retain = ["devices/${device.id}/status"]

[[allow]]
id = "backend"
who = "group:backend"
subscribe = ["devices/+/telemetry", "devices/+/status"]
publish = ["devices/+/commands/#", "$tollgate/devices/+/commands/#"]
"#;

/// The disk, as far as the state machine can tell: every change recorded; on disk only when
/// [`FakeStore::commit`] says so.
struct FakeStore {
    ops: Mutex<Vec<Op>>,
    next: AtomicU64,
    tx: tokio::sync::watch::Sender<u64>,
}

impl FakeStore {
    fn new() -> Arc<FakeStore> {
        Arc::new(FakeStore {
            ops: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            tx: tokio::sync::watch::channel(0).0,
        })
    }

    /// Everything submitted so far is on disk.
    fn commit(&self) {
        self.tx
            .send_replace(self.next.load(Ordering::SeqCst).saturating_sub(1));
    }

    fn count(&self, pred: impl Fn(&Op) -> bool) -> usize {
        self.ops.lock().iter().filter(|o| pred(o)).count()
    }
}

impl Durability for FakeStore {
    fn submit(&self, ops: Vec<Op>) -> u64 {
        self.ops.lock().extend(ops);
        self.next.fetch_add(1, Ordering::SeqCst)
    }
    fn watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tx.subscribe()
    }
    fn healthy(&self) -> bool {
        true
    }
}

fn access(quarantined: &[&str]) -> Arc<AccessSnapshot> {
    let mut s = AccessSnapshot::deny_all();
    s.policy = Arc::new(Policy::parse(POLICY, "test-policy.toml").expect("test policy parses"));
    for (id, group) in [("s1", "sensors"), ("s2", "sensors"), ("be", "backend")] {
        s.devices.insert(
            id.to_owned(),
            DeviceAccess {
                groups: vec![group.to_owned()],
                quarantine: quarantined
                    .contains(&id)
                    .then(|| Quarantine {
                        source: "operator".into(),
                        reason: "suspicious firmware".into(),
                    })
                    .into_iter()
                    .collect(),
            },
        );
    }
    Arc::new(s)
}

struct World {
    broker: Broker,
    events: Consumer,
    store: Option<Arc<FakeStore>>,
}

impl World {
    fn new(quarantined: &[&str], durable: bool) -> World {
        let (bus, mut dispatcher) = EventBus::new(1024, 1);
        let events = dispatcher.consumer("test", 1024);
        tokio::spawn(dispatcher.run());
        let store = durable.then(FakeStore::new);
        let broker = match &store {
            Some(s) => {
                let port: Arc<dyn Durability> = s.clone();
                Broker::build(
                    BrokerConfig::default(),
                    bus,
                    access(quarantined),
                    Some(port),
                )
            }
            None => Broker::new(BrokerConfig::default(), bus, access(quarantined)),
        };
        World {
            broker,
            events,
            store,
        }
    }

    async fn connect(&self, device: &str, c: Connect) -> (Conn, Arc<ControlInbox>) {
        let peer = PeerIdentity {
            device_id: device.to_owned(),
            serial: format!("serial-{device}"),
            addr: None,
            tls_resumed: false,
            connect_deadline: None,
            cert_not_after: None,
            transport: None,
        };
        let inbox = Arc::new(ControlInbox::default());
        match Conn::accept(&self.broker.shared, &peer, c, Arc::clone(&inbox)).await {
            Ok(conn) => (conn, inbox),
            Err((_, code, reason, why)) => panic!("CONNECT refused: {code:?} {reason:?} {why}"),
        }
    }

    /// The next event of type `ty` (waiting for the dispatcher, at most a second).
    async fn event(&mut self, ty: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let d = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {ty} event"));
            if let Some(Ev::Event(e)) = d {
                let v: serde_json::Value =
                    serde_json::from_str(&e.to_json()).expect("events are JSON");
                if v["type"] == ty {
                    return v;
                }
            }
        }
    }
}

fn connect_packet(client: &str, protocol: Protocol) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 0,
        client_id: client.into(),
        ..Default::default()
    }
}

fn persistent(client: &str) -> Connect {
    Connect {
        clean_start: false,
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            ..Default::default()
        },
        ..connect_packet(client, Protocol::V5)
    }
}

fn publish(topic: &str, qos: QoS, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(b"21.5"),
        properties: Default::default(),
    })
}

fn subscribe(packet_id: u16, filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|f| SubscriptionRequest {
                filter: (*f).into(),
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            })
            .collect(),
        ..Default::default()
    })
}

/// What the connection has written for its client since the last call.
fn sent(conn: &mut Conn) -> Vec<Packet> {
    conn.out.release_held();
    let mut buf: BytesMut = std::mem::take(&mut conn.out.wbuf);
    let mut out = Vec::new();
    while let Some(p) =
        decode(&mut buf, Some(conn.protocol), usize::MAX).expect("we encode valid packets")
    {
        out.push(p);
    }
    out
}

fn handle(conn: &mut Conn, p: Packet) -> Option<End> {
    conn.handle(p, Now::current())
}

/// The subscriber's deliveries, moved into its outbox and decoded.
fn deliveries(conn: &mut Conn) -> Vec<Publish> {
    conn.pump_mailbox(Now::current());
    sent(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn ack(p: &Packet) -> (&'static str, u16, ReasonCode) {
    match p {
        Packet::PubAck(r) => ("puback", r.packet_id, r.code),
        Packet::PubRec(r) => ("pubrec", r.packet_id, r.code),
        Packet::PubRel(r) => ("pubrel", r.packet_id, r.code),
        Packet::PubComp(r) => ("pubcomp", r.packet_id, r.code),
        other => panic!("not an acknowledgement: {other:?}"),
    }
}

#[tokio::test]
async fn publish_at_each_qos_is_acknowledged_and_routed_once() {
    let w = World::new(&[], false);
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    assert!(matches!(sent(&mut be)[..], [Packet::ConnAck(_)]));
    assert!(matches!(sent(&mut s1)[..], [Packet::ConnAck(_)]));
    assert!(handle(&mut be, subscribe(1, &["devices/+/telemetry"])).is_none());
    assert!(matches!(&sent(&mut be)[..], [Packet::SubAck(a)] if a.codes == [ReasonCode(1)]));

    // QoS 0: no acknowledgement.
    handle(&mut s1, publish("devices/s1/telemetry", QoS::AtMostOnce, 0));
    assert!(sent(&mut s1).is_empty());
    // QoS 1: PUBACK.
    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::AtLeastOnce, 7),
    );
    let out = sent(&mut s1);
    assert_eq!(
        out.iter().map(ack).collect::<Vec<_>>(),
        [("puback", 7, ReasonCode::SUCCESS)]
    );
    // QoS 2: PUBREC; a duplicate before PUBREL is acknowledged again but not routed again;
    // PUBREL gets PUBCOMP.
    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::ExactlyOnce, 8),
    );
    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::ExactlyOnce, 8),
    );
    handle(
        &mut s1,
        Packet::PubRel(PubResp {
            packet_id: 8,
            ..Default::default()
        }),
    );
    let acks: Vec<_> = sent(&mut s1).iter().map(ack).collect();
    assert_eq!(
        acks,
        [
            ("pubrec", 8, ReasonCode::SUCCESS),
            ("pubrec", 8, ReasonCode::SUCCESS),
            ("pubcomp", 8, ReasonCode::SUCCESS)
        ]
    );
    let got = deliveries(&mut be);
    assert_eq!(
        got.iter().map(|p| p.qos).collect::<Vec<_>>(),
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::AtLeastOnce],
        "one delivery per publish, at the subscription's QoS (1) at most"
    );
    assert!(got.iter().all(|p| &*p.topic == "devices/s1/telemetry"));
    // The meters counted it: three messages in (the QoS 2 retransmission is not a fourth),
    // three out.
    assert_eq!(s1.gate.meter().read().messages_in, 3);
    assert_eq!(be.gate.meter().read().messages_out, 3);
}

#[tokio::test]
async fn a_durable_puback_waits_for_the_store_and_then_leaves() {
    let w = World::new(&[], true);
    let store = w.store.clone().expect("durable world");
    let (mut be, _) = w.connect("be", persistent("be")).await;
    store.commit();
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    sent(&mut s1);
    handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
    // The SUBACK of a persistent session promises the subscription is on disk.
    assert!(sent(&mut be)
        .iter()
        .all(|p| !matches!(p, Packet::SubAck(_))));
    store.commit();
    assert!(sent(&mut be).iter().any(|p| matches!(p, Packet::SubAck(_))));

    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::AtLeastOnce, 3),
    );
    assert!(
        sent(&mut s1).is_empty(),
        "PUBACK before the message is on disk"
    );
    assert_eq!(store.count(|o| matches!(o, Op::Enqueue { .. })), 1);
    store.commit();
    assert_eq!(
        sent(&mut s1).iter().map(ack).collect::<Vec<_>>(),
        [("puback", 3, ReasonCode::SUCCESS)]
    );
}

#[tokio::test]
async fn a_subscription_the_policy_denies_gets_0x87_and_an_event_and_the_rest_are_granted() {
    let mut w = World::new(&[], false);
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    sent(&mut s1);
    handle(
        &mut s1,
        subscribe(4, &["devices/s1/commands/#", "devices/+/telemetry"]),
    );
    let out = sent(&mut s1);
    let [Packet::SubAck(a)] = &out[..] else {
        panic!("expected one SUBACK, got {out:?}")
    };
    assert_eq!(a.codes, [ReasonCode(1), ReasonCode::NOT_AUTHORIZED]);
    assert!(a
        .reason_string
        .as_deref()
        .is_some_and(|r| r.contains("not authorized")));
    let ev = w.event("subscribe_denied").await;
    assert_eq!(
        (ev["device"].as_str(), ev["filter"].as_str()),
        (Some("s1"), Some("devices/+/telemetry"))
    );
    assert!(ev.get("quarantine").is_none());
    assert_eq!(w.broker.stats().subscribe_denied.load(Ordering::Relaxed), 1);
    assert_eq!(s1.gate.meter().read().denied(), 1);
    // A publish outside the policy: 0x87 for v5, with the policy named.
    handle(
        &mut s1,
        publish("devices/s2/telemetry", QoS::AtLeastOnce, 5),
    );
    let out = sent(&mut s1);
    let [Packet::PubAck(r)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(r.code, ReasonCode::NOT_AUTHORIZED);
    let ev = w.event("publish_denied").await;
    assert_eq!(ev["topic"], "devices/s2/telemetry");
}

/// A report sink that keeps what it is given.
#[derive(Default)]
struct Reports(parking_lot::Mutex<Vec<(String, bytes::Bytes)>>);

impl crate::reports::ReportSink for Reports {
    fn report(&self, device: &str, payload: bytes::Bytes) -> bool {
        self.0.lock().push((device.to_owned(), payload));
        true
    }
}

#[tokio::test]
async fn a_quarantined_device_is_confined_and_told_why() {
    let mut w = World::new(&["s1"], false);
    let reports = Arc::new(Reports::default());
    w.broker
        .set_report_sink(Arc::clone(&reports) as Arc<dyn crate::reports::ReportSink>);
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    sent(&mut be);
    sent(&mut s1);
    handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
    sent(&mut be);
    // Its normal grant no longer works, and the refusal names the quarantine.
    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::AtLeastOnce, 1),
    );
    let out = sent(&mut s1);
    let [Packet::PubAck(r)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(r.code, ReasonCode::NOT_AUTHORIZED);
    let why = r.reason_string.clone().unwrap_or_default();
    assert!(
        why.contains("quarantined") && why.contains("suspicious firmware"),
        "{why}"
    );
    let ev = w.event("publish_denied").await;
    assert_eq!(ev["quarantine"], "operator: suspicious firmware");
    assert!(
        deliveries(&mut be).is_empty(),
        "a confined publish is never delivered"
    );
    // Its own inventory report always works: consumed by the sink, never routed; another
    // device's report topic is refused.
    handle(&mut be, subscribe(2, &["$tollgate/devices/+/inventory"]));
    sent(&mut be);
    handle(
        &mut s1,
        publish("$tollgate/devices/s1/inventory", QoS::AtLeastOnce, 2),
    );
    assert_eq!(
        sent(&mut s1).iter().map(ack).collect::<Vec<_>>(),
        [("puback", 2, ReasonCode::SUCCESS)]
    );
    assert_eq!(reports.0.lock().len(), 1, "handed to the sink");
    assert_eq!(reports.0.lock()[0].0, "s1");
    assert!(deliveries(&mut be).is_empty(), "a report is never routed");
    handle(
        &mut s1,
        publish("$tollgate/devices/s2/inventory", QoS::AtLeastOnce, 3),
    );
    assert_eq!(
        sent(&mut s1).iter().map(ack).collect::<Vec<_>>(),
        [("puback", 3, ReasonCode::NOT_AUTHORIZED)]
    );
    assert_eq!(reports.0.lock().len(), 1);
    handle(
        &mut s1,
        subscribe(
            3,
            &["$tollgate/devices/s1/commands/#", "devices/s1/commands/#"],
        ),
    );
    let out = sent(&mut s1);
    let [Packet::SubAck(a)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(a.codes, [ReasonCode(1), ReasonCode::NOT_AUTHORIZED]);
    handle(
        &mut be,
        publish("$tollgate/devices/s1/commands/update", QoS::AtMostOnce, 0),
    );
    assert_eq!(deliveries(&mut s1).len(), 1);
}

#[tokio::test]
async fn release_from_quarantine_restores_the_policy_and_suspended_subscriptions_live() {
    let w = World::new(&[], false);
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    sent(&mut be);
    sent(&mut s1);
    handle(&mut s1, subscribe(1, &["devices/s1/commands/#"]));
    sent(&mut s1);
    // Quarantined while connected: the subscription is suspended, the connection stays.
    w.broker
        .set_access(access(&["s1"]), &crate::Changed::Devices(vec!["s1".into()]));
    assert!(s1.recheck().is_none(), "quarantine does not disconnect");
    assert!(s1.state.subscriptions.is_empty());
    handle(
        &mut be,
        publish("devices/s1/commands/x", QoS::AtMostOnce, 0),
    );
    assert!(deliveries(&mut s1).is_empty());
    // Released: the subscription is back without the device doing anything.
    w.broker
        .set_access(access(&[]), &crate::Changed::Devices(vec!["s1".into()]));
    assert!(s1.recheck().is_none());
    handle(
        &mut be,
        publish("devices/s1/commands/x", QoS::AtMostOnce, 0),
    );
    assert_eq!(deliveries(&mut s1).len(), 1);
    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::AtLeastOnce, 9),
    );
    assert_eq!(
        sent(&mut s1).iter().map(ack).collect::<Vec<_>>(),
        [("puback", 9, ReasonCode::SUCCESS)]
    );
}

#[tokio::test]
async fn a_second_connection_takes_the_session_over_from_the_live_one() {
    let w = World::new(&[], false);
    let (first, inbox) = w.connect("s1", persistent("s1")).await;
    let shared = Arc::clone(&w.broker.shared);
    let second = tokio::spawn(async move {
        let peer = PeerIdentity {
            device_id: "s1".into(),
            serial: "serial-s1".into(),
            addr: None,
            tls_resumed: false,
            connect_deadline: None,
            cert_not_after: None,
            transport: None,
        };
        Conn::accept(&shared, &peer, persistent("s1"), Arc::default())
            .await
            .map_err(|e| format!("{e:?}"))
    });
    // The live connection is asked to hand over, and does (the driver would say 0x8E).
    let Control::TakeOver(ack) = tokio::time::timeout(Duration::from_secs(1), inbox.recv())
        .await
        .expect("a takeover request")
    else {
        panic!("expected TakeOver")
    };
    first.finish(End::TakenOver(ack));
    let mut second = tokio::time::timeout(Duration::from_secs(1), second)
        .await
        .expect("takeover completes")
        .expect("task")
        .expect("accepted");
    let out = sent(&mut second);
    let [Packet::ConnAck(c)] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(
        c.session_present,
        "the session was handed over, not recreated"
    );
    assert_eq!(w.broker.session_count(), 1);
}

#[tokio::test]
async fn a_will_goes_out_when_the_network_drops_but_not_after_a_clean_disconnect() {
    let w = World::new(&[], false);
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    sent(&mut be);
    handle(&mut be, subscribe(1, &["devices/+/status"]));
    sent(&mut be);
    let with_will = |client: &str| Connect {
        will: Some(Will {
            topic: "devices/s1/status".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        }),
        ..connect_packet(client, Protocol::V5)
    };
    let (s1, _) = w.connect("s1", with_will("s1")).await;
    s1.finish(End::Client { will: false });
    assert!(deliveries(&mut be).is_empty(), "no will after DISCONNECT");
    let (s1, _) = w.connect("s1", with_will("s1")).await;
    s1.finish(End::Io("connection reset".into()));
    let got = deliveries(&mut be);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (&*got[0].topic, &got[0].payload[..]),
        ("devices/s1/status", &b"gone"[..])
    );
}

#[tokio::test]
async fn a_will_topic_the_policy_denies_refuses_the_connect() {
    let mut w = World::new(&[], false);
    let peer = PeerIdentity {
        device_id: "s1".into(),
        serial: "serial-s1".into(),
        addr: None,
        tls_resumed: false,
        connect_deadline: None,
        cert_not_after: None,
        transport: None,
    };
    let c = Connect {
        will: Some(Will {
            topic: "devices/s2/status".into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        }),
        ..connect_packet("s1", Protocol::V5)
    };
    let Err((_, code, _, _)) = Conn::accept(&w.broker.shared, &peer, c, Arc::default()).await
    else {
        panic!("accepted a will the policy denies")
    };
    assert_eq!(code, ReasonCode::NOT_AUTHORIZED);
    let ev = w.event("publish_denied").await;
    assert_eq!(ev["what"], "will");
}

#[tokio::test]
async fn a_message_that_cannot_be_encoded_for_the_store_is_refused_not_stored_as_an_empty_record() {
    let w = World::new(&[], true);
    let store = w.store.clone().expect("durable world");
    let (mut be, _) = w.connect("be", persistent("be")).await;
    handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
    store.commit();
    sent(&mut be);
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    sent(&mut s1);
    // A property longer than MQTT can encode (it cannot arrive off the wire; it stands for any
    // message the store's encoder refuses).
    let mut p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/s1/telemetry".into(),
        packet_id: 11,
        payload: Bytes::from_static(b"x"),
        properties: Default::default(),
    };
    p.properties
        .user_properties
        .push(("k".into(), "v".repeat(70_000)));
    handle(&mut s1, Packet::Publish(p));
    store.commit();
    let out = sent(&mut s1);
    assert_eq!(
        out.iter().map(ack).collect::<Vec<_>>(),
        [("puback", 11, ReasonCode::QUOTA_EXCEEDED)],
        "the publisher is told, not acknowledged"
    );
    assert_eq!(
        store.count(|o| matches!(o, Op::Enqueue { .. })),
        0,
        "nothing empty was stored"
    );
    assert!(deliveries(&mut be).is_empty());
    assert_eq!(w.broker.stats().storage_refused.load(Ordering::Relaxed), 1);
}

fn retained(topic: &str, packet_id: u16) -> Packet {
    match publish(topic, QoS::AtLeastOnce, packet_id) {
        Packet::Publish(p) => Packet::Publish(Publish { retain: true, ..p }),
        other => other,
    }
}

#[tokio::test]
async fn a_retained_publish_needs_the_retain_grant_and_fits_the_retained_caps_or_is_refused_whole()
{
    let (bus, mut dispatcher) = EventBus::new(1024, 1);
    let events = dispatcher.consumer("test", 1024);
    tokio::spawn(dispatcher.run());
    // Room for one 21-byte retained message (17-byte topic, 4-byte payload), not two.
    let config = BrokerConfig {
        max_retained_bytes: 30,
        ..BrokerConfig::default()
    };
    let mut w = World {
        broker: Broker::new(config, bus, access(&[])),
        events,
        store: None,
    };
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    let (mut s2, _) = w.connect("s2", connect_packet("s2", Protocol::V5)).await;
    for c in [&mut be, &mut s1, &mut s2] {
        sent(c);
    }
    assert!(handle(
        &mut be,
        subscribe(1, &["devices/+/status", "devices/+/telemetry"])
    )
    .is_none());
    sent(&mut be);

    // Publish is granted on telemetry, retain is not: refused like a publish denial.
    assert!(handle(&mut s1, retained("devices/s1/telemetry", 1)).is_none());
    let out = sent(&mut s1);
    assert_eq!(ack(&out[0]), ("puback", 1, ReasonCode::NOT_AUTHORIZED));
    assert!(
        matches!(&out[0], Packet::PubAck(r) if r.reason_string.as_deref() == Some("retain not authorized by policy")),
        "{out:?}"
    );
    let e = w.event("publish_denied").await;
    assert_eq!(
        (&e["what"], &e["topic"]),
        (&"retain".into(), &"devices/s1/telemetry".into())
    );

    // Within the caps: retained and delivered.
    assert!(handle(&mut s1, retained("devices/s1/status", 2)).is_none());
    assert_eq!(ack(&sent(&mut s1)[0]), ("puback", 2, ReasonCode::SUCCESS));
    assert_eq!(w.broker.retained_bytes(), 21);
    // Over the total: refused whole (0x97), neither retained nor delivered.
    assert!(handle(&mut s2, retained("devices/s2/status", 3)).is_none());
    let out = sent(&mut s2);
    assert_eq!(ack(&out[0]), ("puback", 3, ReasonCode::QUOTA_EXCEEDED));
    assert!(
        matches!(&out[0], Packet::PubAck(r) if r.reason_string.as_deref() == Some("retained message quota exceeded (30 bytes)")),
        "{out:?}"
    );
    let e = w.event("publish_denied").await;
    assert_eq!(e["what"], "retain_quota");
    let got: Vec<String> = deliveries(&mut be)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(got, ["devices/s1/status"]);
    assert_eq!(w.broker.retained_count(), 1);
    assert_eq!(w.broker.stats().retained_dropped.load(Ordering::Relaxed), 1);
    // Clearing is always allowed, and frees the room.
    let clear = match retained("devices/s1/status", 4) {
        Packet::Publish(p) => Packet::Publish(Publish {
            payload: Bytes::new(),
            ..p
        }),
        other => other,
    };
    assert!(handle(&mut s1, clear).is_none());
    assert_eq!(ack(&sent(&mut s1)[0]), ("puback", 4, ReasonCode::SUCCESS));
    assert_eq!(w.broker.retained_bytes(), 0);
    assert!(handle(&mut s2, retained("devices/s2/status", 5)).is_none());
    assert_eq!(ack(&sent(&mut s2)[0]), ("puback", 5, ReasonCode::SUCCESS));
}

/// `connect_packet` for an MQTT 5 client that allows `max` server topic aliases.
fn with_aliases(c: Connect, max: u16) -> Connect {
    Connect {
        properties: ConnectProperties {
            topic_alias_maximum: Some(max),
            ..c.properties
        },
        ..c
    }
}

/// Each delivery's topic as sent (empty for an alias alone) and its alias.
fn wire_topics(ps: &[Publish]) -> Vec<(String, Option<u16>)> {
    ps.iter()
        .map(|p| (p.topic.to_string(), p.properties.topic_alias))
        .collect()
}

#[tokio::test]
async fn a_3_1_1_empty_client_id_with_clean_session_0_is_rejected_in_every_client_id_mode() {
    for rule in [ClientIdRule::Exact, ClientIdRule::Prefix, ClientIdRule::Any] {
        let (bus, mut dispatcher) = EventBus::new(64, 1);
        let config = BrokerConfig {
            client_id_rule: rule,
            ..BrokerConfig::default()
        };
        let w = World {
            broker: Broker::new(config, bus, access(&[])),
            events: dispatcher.consumer("test", 64),
            store: None,
        };
        let peer = PeerIdentity {
            device_id: "s1".into(),
            serial: "serial-s1".into(),
            addr: None,
            tls_resumed: false,
            connect_deadline: None,
            cert_not_after: None,
            transport: None,
        };
        let persistent_311 = Connect {
            clean_start: false,
            ..connect_packet("", Protocol::V311)
        };
        match Conn::accept(&w.broker.shared, &peer, persistent_311, Arc::default()).await {
            Err((Protocol::V311, code, RefusalReason::ClientIdRejected, why)) => {
                assert_eq!(code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, "{rule:?}");
                assert!(why.contains("MQTT-3.1.3-8"), "{why}");
            }
            Err(e) => panic!("{rule:?}: refused for another reason: {e:?}"),
            Ok(_) => panic!("{rule:?}: accepted"),
        }
        assert_eq!(w.broker.session_count(), 0, "no session was made");
        // A clean session with an empty id is fine (the device id is used), and so is an
        // MQTT 5 client with an empty id whatever Clean Start says.
        for c in [
            connect_packet("", Protocol::V311),
            Connect {
                clean_start: false,
                ..connect_packet("", Protocol::V5)
            },
        ] {
            let protocol = c.protocol;
            let mut conn = match Conn::accept(&w.broker.shared, &peer, c, Arc::default()).await {
                Ok(conn) => conn,
                Err(e) => panic!("{rule:?} {protocol:?}: refused: {e:?}"),
            };
            let out = sent(&mut conn);
            assert!(
                matches!(&out[..], [Packet::ConnAck(a)] if a.code == ReasonCode::SUCCESS),
                "{out:?}"
            );
            conn.finish(End::Client { will: false });
        }
    }
}

#[tokio::test]
async fn server_topic_aliases_send_each_topic_once_then_the_alias_alone_within_the_client_maximum()
{
    let w = World::new(&[], false);
    let (mut be, _) = w
        .connect("be", with_aliases(connect_packet("be", Protocol::V5), 2))
        .await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    let (mut s2, _) = w.connect("s2", connect_packet("s2", Protocol::V5)).await;
    sent(&mut be);
    handle(
        &mut be,
        subscribe(1, &["devices/+/telemetry", "devices/+/status"]),
    );
    sent(&mut be);
    let (t1, t2, t3) = (
        "devices/s1/telemetry",
        "devices/s1/status",
        "devices/s2/telemetry",
    );
    for topic in [t1, t2, t1, t2, t3, t3, t3, t2] {
        let publisher = if topic == t3 { &mut s2 } else { &mut s1 };
        handle(publisher, publish(topic, QoS::AtMostOnce, 0));
    }
    let got = deliveries(&mut be);
    let s = |t: &str| t.to_owned();
    assert_eq!(
        wire_topics(&got),
        [
            (s(t1), Some(1)),
            (s(t2), Some(2)),
            (s(""), Some(1)),
            (s(""), Some(2)),
            // Both aliases taken: seen once, sent plain; seen again, it takes the least
            // recently used alias (t1's), with its name.
            (s(t3), None),
            (s(t3), Some(1)),
            (s(""), Some(1)),
            (s(""), Some(2)),
        ]
    );
    // Every alias-only PUBLISH saved its topic less the 3-byte property; the 3 bytes each of
    // the three first uses are paid back first.
    let saved = w
        .broker
        .stats()
        .topic_alias_bytes_saved
        .load(Ordering::Relaxed);
    let gross = (t1.len() - 3) + 2 * (t2.len() - 3) + (t3.len() - 3);
    assert_eq!(saved, (gross - 3 * 3) as u64);
}

#[tokio::test]
async fn no_server_topic_alias_goes_to_a_client_that_did_not_allow_them() {
    let off = BrokerConfig {
        max_outbound_topic_aliases: 0,
        ..BrokerConfig::default()
    };
    for (c, config) in [
        (connect_packet("be", Protocol::V5), BrokerConfig::default()),
        (
            with_aliases(connect_packet("be", Protocol::V5), 0),
            BrokerConfig::default(),
        ),
        (
            with_aliases(connect_packet("be", Protocol::V311), 8),
            BrokerConfig::default(),
        ),
        // The client allows them; the server's cap is 0.
        (with_aliases(connect_packet("be", Protocol::V5), 8), off),
    ] {
        let what = format!("{:?} {:?}", c.protocol, c.properties.topic_alias_maximum);
        let (bus, mut dispatcher) = EventBus::new(64, 1);
        let w = World {
            broker: Broker::new(config, bus, access(&[])),
            events: dispatcher.consumer("test", 64),
            store: None,
        };
        let (mut be, _) = w.connect("be", c).await;
        let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
        sent(&mut be);
        handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
        sent(&mut be);
        for _ in 0..3 {
            handle(&mut s1, publish("devices/s1/telemetry", QoS::AtMostOnce, 0));
        }
        let got = deliveries(&mut be);
        assert_eq!(
            wire_topics(&got),
            vec![("devices/s1/telemetry".to_owned(), None); 3],
            "{what}"
        );
        assert!(be.out_aliases.is_none(), "{what}: no table was made");
        assert_eq!(
            w.broker
                .stats()
                .topic_alias_bytes_saved
                .load(Ordering::Relaxed),
            0
        );
    }
}

#[tokio::test]
async fn a_first_use_that_would_exceed_the_clients_maximum_packet_size_goes_without_an_alias() {
    let w = World::new(&[], false);
    let topic = "devices/s1/telemetry";
    // Exactly the size of the plain delivery: the topic with its alias is 3 bytes over.
    let plain = Packet::Publish(Publish {
        topic: topic.into(),
        payload: Bytes::from_static(b"21.5"),
        ..Default::default()
    })
    .encoded_len(Protocol::V5);
    let mut c = with_aliases(connect_packet("be", Protocol::V5), 4);
    c.properties.maximum_packet_size = u32::try_from(plain).ok();
    let (mut be, _) = w.connect("be", c).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    sent(&mut be);
    handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
    sent(&mut be);
    for _ in 0..3 {
        handle(&mut s1, publish(topic, QoS::AtMostOnce, 0));
    }
    let got = deliveries(&mut be);
    assert_eq!(
        wire_topics(&got),
        vec![(topic.to_owned(), None); 3],
        "every message delivered, none with an alias the client was never told"
    );
    assert_eq!(w.broker.stats().messages_dropped.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_first_use_held_for_the_store_still_reaches_the_wire_before_its_alias_only_uses() {
    let w = World::new(&[], true);
    let store = w.store.clone().expect("durable world");
    let (mut be, _) = w.connect("be", with_aliases(persistent("be"), 4)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    store.commit();
    sent(&mut be);
    sent(&mut s1);
    // The SUBACK waits for the store; what follows waits behind it, in order.
    handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
    for _ in 0..3 {
        handle(&mut s1, publish("devices/s1/telemetry", QoS::AtMostOnce, 0));
    }
    be.pump_mailbox(Now::current());
    assert!(sent(&mut be).is_empty(), "all held behind the SUBACK");
    store.commit();
    let out = sent(&mut be);
    assert!(matches!(out.first(), Some(Packet::SubAck(_))), "{out:?}");
    let got: Vec<Publish> = out
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    let t = "devices/s1/telemetry".to_owned();
    assert_eq!(
        wire_topics(&got),
        [
            (t, Some(1)),
            (String::new(), Some(1)),
            (String::new(), Some(1))
        ]
    );
}

#[tokio::test]
async fn a_resumed_session_starts_a_new_alias_table_and_resends_topic_names() {
    let w = World::new(&[], false);
    let (mut be, _) = w.connect("be", with_aliases(persistent("be"), 4)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    sent(&mut be);
    handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
    sent(&mut be);
    for pid in 1..=2 {
        handle(
            &mut s1,
            publish("devices/s1/telemetry", QoS::AtLeastOnce, pid),
        );
    }
    let t = "devices/s1/telemetry".to_owned();
    assert_eq!(
        wire_topics(&deliveries(&mut be)),
        [(t.clone(), Some(1)), (String::new(), Some(1))]
    );
    // Not acknowledged; the connection drops and the session resumes on a new one.
    be.finish(End::Io("connection reset".into()));
    let (mut be, _) = w.connect("be", with_aliases(persistent("be"), 4)).await;
    let out = sent(&mut be);
    let resent: Vec<Publish> = out
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(resent.iter().all(|p| p.dup), "{resent:?}");
    assert_eq!(
        wire_topics(&resent),
        [(t, Some(1)), (String::new(), Some(1))],
        "the new connection's first use names the topic again"
    );
}

/// A v5 CONNECT for `client` with a will on `devices/<client>/status` delayed `delay` seconds
/// and a session that outlives the connection.
fn with_delayed_will(client: &str, clean_start: bool, delay: u32) -> Connect {
    Connect {
        clean_start,
        will: Some(Will {
            topic: format!("devices/{client}/status").into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: tollgate_mqtt::WillProperties {
                will_delay_interval: Some(delay),
                ..Default::default()
            },
        }),
        ..persistent(client)
    }
}

/// Take the session of the live connection `first` over with `second`, as the driver would.
async fn take_over(w: &World, first: Conn, inbox: &ControlInbox, second: Connect) -> Conn {
    let shared = Arc::clone(&w.broker.shared);
    let new = tokio::spawn(async move {
        let peer = PeerIdentity {
            device_id: "s1".into(),
            serial: "serial-s1".into(),
            addr: None,
            tls_resumed: false,
            connect_deadline: None,
            cert_not_after: None,
            transport: None,
        };
        Conn::accept(&shared, &peer, second, Arc::default())
            .await
            .map_err(|e| format!("{e:?}"))
    });
    let Control::TakeOver(h) = tokio::time::timeout(Duration::from_secs(1), inbox.recv())
        .await
        .expect("a takeover request")
    else {
        panic!("expected TakeOver")
    };
    first.finish(End::TakenOver(h));
    tokio::time::timeout(Duration::from_secs(1), new)
        .await
        .expect("takeover completes")
        .expect("task")
        .expect("accepted")
}

/// A backend subscribed to every status topic, its SUBACK read.
async fn status_watcher(w: &World) -> Conn {
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    sent(&mut be);
    handle(&mut be, subscribe(1, &["devices/+/status"]));
    sent(&mut be);
    be
}

#[tokio::test(start_paused = true)]
async fn a_clean_start_takeover_publishes_the_old_connections_delayed_will_at_once() {
    let w = World::new(&[], false);
    let mut be = status_watcher(&w).await;
    let (first, inbox) = w.connect("s1", with_delayed_will("s1", false, 300)).await;
    let _second = take_over(&w, first, &inbox, connect_packet("s1", Protocol::V5)).await;
    let got = deliveries(&mut be);
    assert_eq!(
        got.iter()
            .map(|p| (p.topic.to_string(), p.payload.clone()))
            .collect::<Vec<_>>(),
        [("devices/s1/status".to_owned(), Bytes::from_static(b"gone"))],
        "the old session ended with the takeover: its will is due now, not in 300 s"
    );
    // Timers start when first polled: let them, then let the will delay pass.
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(301)).await;
    tokio::task::yield_now().await;
    assert!(deliveries(&mut be).is_empty(), "published once");
}

#[tokio::test(start_paused = true)]
async fn a_takeover_that_resumes_the_session_cancels_the_delayed_will() {
    let w = World::new(&[], false);
    let mut be = status_watcher(&w).await;
    let (first, inbox) = w.connect("s1", with_delayed_will("s1", false, 300)).await;
    let second = take_over(&w, first, &inbox, persistent("s1")).await;
    assert!(deliveries(&mut be).is_empty());
    // Timers start when first polled: let them, then let the will delay pass.
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(301)).await;
    tokio::task::yield_now().await;
    assert!(
        deliveries(&mut be).is_empty(),
        "the session went on: no will, now or after the delay"
    );
    assert!(second.session.pending_will.lock().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_delayed_will_waiting_in_an_offline_session_goes_out_when_a_clean_start_ends_it() {
    let w = World::new(&[], false);
    let mut be = status_watcher(&w).await;
    // The network drops: the will waits for its delay.
    let (first, _) = w.connect("s1", with_delayed_will("s1", false, 300)).await;
    first.finish(End::Io("connection reset".into()));
    tokio::task::yield_now().await;
    assert!(deliveries(&mut be).is_empty(), "delayed");
    // A connection resuming the session drops it...
    let (again, _) = w.connect("s1", persistent("s1")).await;
    assert!(again.session.pending_will.lock().is_none());
    // Timers start when first polled: let them, then let the will delay pass.
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(301)).await;
    tokio::task::yield_now().await;
    assert!(deliveries(&mut be).is_empty(), "resumed in time: no will");
    again.finish(End::Client { will: false });
    // ...one starting clean ends the session, and with it the wait.
    let (first, _) = w.connect("s1", with_delayed_will("s1", false, 300)).await;
    first.finish(End::Io("connection reset".into()));
    tokio::task::yield_now().await;
    assert!(deliveries(&mut be).is_empty(), "delayed");
    let (_clean, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    let got = deliveries(&mut be);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&*got[0].topic, "devices/s1/status");
}

#[tokio::test(start_paused = true)]
async fn a_will_delayed_past_the_session_expiry_goes_out_once_when_the_session_ends() {
    let w = World::new(&[], false);
    let mut be = status_watcher(&w).await;
    let mut c = with_delayed_will("s1", false, 600);
    c.properties.session_expiry_interval = Some(300);
    let (first, _) = w.connect("s1", c).await;
    first.finish(End::Io("connection reset".into()));
    // Let the timers start (their sleeps begin when first polled).
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(299)).await;
    tokio::task::yield_now().await;
    assert!(deliveries(&mut be).is_empty(), "not yet");
    // The will timer and the expiry timer both end at 300 s: whichever runs first publishes.
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    let got = deliveries(&mut be);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        w.broker.session_count(),
        1,
        "only the watcher's session is left"
    );
}

/// The delivery filter `be`'s subscription to `devices/+/telemetry` is routed with.
fn routed(w: &World, be: &Conn) -> Option<Option<Arc<tollgate_policy::DeliveryFilter>>> {
    w.broker
        .shared
        .router
        .delivery_filter("devices/+/telemetry", None, be.session.id)
}

/// The test policy with `deny` (TOML) appended.
fn access_with(deny: &str) -> Arc<AccessSnapshot> {
    let mut a = AccessSnapshot::clone(&access(&[]));
    a.policy = Arc::new(
        Policy::parse(&format!("{POLICY}\n{deny}"), "test-policy.toml").expect("test policy"),
    );
    Arc::new(a)
}

const DENY_S2: &str =
    "[[deny]]\nid = \"not-s2\"\nwho = \"group:backend\"\nsubscribe = [\"devices/s2/#\"]\n";

/// Issue 15: a filter covered by an allow rule that overlaps a deny rule is granted (SUBACK at
/// the requested QoS, the withheld topics in the v5 reason string) and the denied topics are
/// withheld per message, retained messages included; the rest is delivered.
#[tokio::test]
async fn a_subscription_overlapping_a_deny_rule_is_granted_and_withholds_the_denied_topics() {
    let mut w = World::new(&[], false);
    w.broker
        .set_access(access_with(DENY_S2), &crate::Changed::All);
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    let (mut s2, _) = w.connect("s2", connect_packet("s2", Protocol::V5)).await;
    for c in [&mut be, &mut s1, &mut s2] {
        sent(c);
    }
    handle(&mut s2, retained("devices/s2/status", 1));
    handle(&mut s1, retained("devices/s1/status", 1));
    sent(&mut s1);
    sent(&mut s2);
    handle(
        &mut be,
        subscribe(
            1,
            &[
                "devices/+/telemetry",
                "devices/+/status",
                "devices/s2/telemetry",
            ],
        ),
    );
    let out = sent(&mut be);
    let Some(Packet::SubAck(a)) = out.first() else {
        panic!("expected a SUBACK first, got {out:?}")
    };
    assert_eq!(
        a.codes,
        [ReasonCode(1), ReasonCode(1), ReasonCode::NOT_AUTHORIZED]
    );
    let why = a.reason_string.clone().unwrap_or_default();
    assert!(
        why.contains(
            "devices/+/telemetry: messages matching devices/s2/# are withheld (deny rule not-s2)"
        ),
        "{why}"
    );
    let ev = w.event("subscription_filtered").await;
    assert_eq!(ev["filter"], "devices/+/telemetry");
    assert_eq!(ev["withheld"], serde_json::json!(["devices/s2/#"]));
    assert_eq!(ev["rules"], serde_json::json!(["not-s2"]));
    // Only s1's retained status arrives with the SUBACK.
    let retained_topics: Vec<String> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic.to_string()),
            _ => None,
        })
        .chain(deliveries(&mut be).into_iter().map(|p| p.topic.to_string()))
        .collect();
    assert_eq!(retained_topics, ["devices/s1/status"]);
    handle(
        &mut s2,
        publish("devices/s2/telemetry", QoS::AtLeastOnce, 2),
    );
    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::AtLeastOnce, 2),
    );
    let got: Vec<String> = deliveries(&mut be)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(got, ["devices/s1/telemetry"]);
    // Counted: the retained one and the live one.
    assert_eq!(
        w.broker.stats().messages_filtered.load(Ordering::Relaxed),
        2
    );
    assert_eq!(w.broker.stats().subscribe_denied.load(Ordering::Relaxed), 1);
}

/// A policy change recomputes a live subscription's delivery filter: granted unfiltered, then
/// filtered (messages already queued on the denied topics dropped; the connection stays), then
/// unfiltered again, then refused outright (removed; an MQTT 5 client is told by DISCONNECT).
#[tokio::test]
async fn recheck_recomputes_a_live_subscriptions_delivery_filter() {
    let mut w = World::new(&[], false);
    let (mut be, _) = w.connect("be", connect_packet("be", Protocol::V5)).await;
    let (mut s1, _) = w.connect("s1", connect_packet("s1", Protocol::V5)).await;
    let (mut s2, _) = w.connect("s2", connect_packet("s2", Protocol::V5)).await;
    for c in [&mut be, &mut s1, &mut s2] {
        sent(c);
    }
    handle(&mut be, subscribe(1, &["devices/+/telemetry"]));
    sent(&mut be);
    assert_eq!(routed(&w, &be), Some(None), "granted without a filter");
    // Queued for `be` before the change, not yet sent.
    handle(
        &mut s2,
        publish("devices/s2/telemetry", QoS::AtLeastOnce, 1),
    );
    handle(
        &mut s1,
        publish("devices/s1/telemetry", QoS::AtLeastOnce, 1),
    );

    w.broker
        .set_access(access_with(DENY_S2), &crate::Changed::All);
    assert!(be.recheck().is_none(), "filtering does not disconnect");
    assert!(routed(&w, &be).is_some_and(|f| f.is_some()));
    let ev = w.event("subscription_filtered").await;
    assert_eq!(ev["withheld"], serde_json::json!(["devices/s2/#"]));
    handle(
        &mut s2,
        publish("devices/s2/telemetry", QoS::AtLeastOnce, 2),
    );
    let got: Vec<String> = deliveries(&mut be)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(
        got,
        ["devices/s1/telemetry"],
        "the queued s2 message was dropped"
    );

    // The deny rule goes: unfiltered again, said with an empty `withheld`.
    w.broker.set_access(access(&[]), &crate::Changed::All);
    assert!(be.recheck().is_none());
    assert_eq!(routed(&w, &be), Some(None));
    let ev = w.event("subscription_filtered").await;
    assert_eq!(ev["withheld"], serde_json::json!([]));
    handle(
        &mut s2,
        publish("devices/s2/telemetry", QoS::AtLeastOnce, 3),
    );
    assert_eq!(deliveries(&mut be).len(), 1);

    // A deny rule that covers the filter: refused now, removed.
    w.broker.set_access(
        access_with("[[deny]]\nwho = \"*\"\nsubscribe = [\"devices/+/telemetry\"]\n"),
        &crate::Changed::All,
    );
    assert!(matches!(be.recheck(), Some(End::Closed { .. })));
    assert_eq!(routed(&w, &be), None);
    assert!(be.state.subscriptions.is_empty());
    let ev = w.event("subscription_revoked").await;
    assert_eq!(ev["filter"], "devices/+/telemetry");
}
