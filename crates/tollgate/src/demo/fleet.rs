//! The demo's simulated devices: each a real mTLS MQTT 5 connection (the `tollgate-client`
//! crate) that reports its firmware on its reserved topic, then publishes telemetry every few
//! seconds; the backend subscribes to the fleet's telemetry; the compromised device starts
//! probing topics it may not touch. A device whose connection ends (a revocation from the
//! dashboard, say) stays down: what happened is in the event log, which the narrator reads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;
use tollgate_client::{self as client, DeviceTls};
use tollgate_mqtt::{Packet, Protocol, Publish, QoS, Subscribe, SubscriptionRequest};

use super::fixtures::Planned;

/// When the compromised device starts probing, after it connected.
pub const PROBE_AFTER: Duration = Duration::from_secs(20);

/// Messages the backend received, for the narrator.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
}

/// A device ready to run: its plan and TLS credentials.
pub struct Ready {
    pub plan: Planned,
    pub tls: DeviceTls,
}

/// Start every device; they run until the set is dropped or aborted.
pub fn start(addr: SocketAddr, devices: Vec<Ready>, counters: &Arc<Counters>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for (i, d) in devices.into_iter().enumerate() {
        let counters = Arc::clone(counters);
        // Spread the connects over a second or two.
        let delay = Duration::from_millis(30 * i as u64);
        set.spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = run(addr, &d, &counters, i as u64).await {
                tracing::debug!(device = %d.plan.id, "demo device stopped: {e}");
            }
        });
    }
    set
}

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: Vec<u8>) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from(payload),
        ..Default::default()
    })
}

async fn run(
    addr: SocketAddr,
    d: &Ready,
    counters: &Arc<Counters>,
    seed: u64,
) -> Result<(), client::ClientError> {
    let id = &d.plan.id;
    let (conn, _) = client::connect(addr, &d.tls, Protocol::V5, 60).await?;
    let client::Conn {
        mut rd,
        mut wr,
        rbuf,
        protocol,
    } = conn;
    // Read everything the broker sends (acknowledgements, deliveries) on its own task; the
    // backend counts what it receives.
    let is_backend = d.plan.line.is_none();
    let reader = {
        let counters = is_backend.then(|| Arc::clone(counters));
        let mut rbuf: BytesMut = rbuf;
        async move {
            loop {
                match client::read_packet(&mut rd, &mut rbuf, protocol).await {
                    Ok(Packet::Publish(_)) => {
                        if let Some(c) = &counters {
                            c.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }
    };
    let mut packet_id: u16 = 0;
    let mut next_id = || {
        packet_id = packet_id.wrapping_add(1).max(1);
        packet_id
    };
    if is_backend {
        let sub = Packet::Subscribe(Subscribe {
            packet_id: next_id(),
            filters: ["devices/+/telemetry", "devices/+/status"]
                .iter()
                .map(|f| SubscriptionRequest {
                    filter: (*f).into(),
                    qos: QoS::AtMostOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect(),
            ..Default::default()
        });
        client::write_packet(&mut wr, protocol, &sub).await?;
        // The backend publishes nothing: it keeps its connection alive while its reader counts.
        let reader = tokio::spawn(reader);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            if reader.is_finished() {
                return Err(client::ClientError::Closed);
            }
            client::write_packet(&mut wr, protocol, &Packet::PingReq).await?;
        }
    }
    let reader = tokio::spawn(reader);
    if let Some(fw) = d.plan.firmware {
        let report = serde_json::json!({ "firmware": fw })
            .to_string()
            .into_bytes();
        let topic = format!("$tollgate/devices/{id}/inventory");
        client::write_packet(
            &mut wr,
            protocol,
            &publish(&topic, QoS::AtLeastOnce, next_id(), report),
        )
        .await?;
    }
    let status = format!("devices/{id}/status");
    let mut p = publish(&status, QoS::AtLeastOnce, next_id(), b"online".to_vec());
    if let Packet::Publish(ref mut p) = p {
        p.retain = true;
    }
    client::write_packet(&mut wr, protocol, &p).await?;
    let telemetry = format!("devices/{id}/telemetry");
    // Each device reports every 2 to 4 seconds, a little differently from the others.
    let period = Duration::from_millis(2_000 + (seed * 137) % 2_000);
    let started = tokio::time::Instant::now();
    let mut probed = false;
    let mut n: u64 = 0;
    loop {
        if reader.is_finished() {
            return Err(client::ClientError::Closed);
        }
        n += 1;
        let reading = serde_json::json!({
            "seq": n,
            "temperature_c": 18.0 + ((seed + n) % 70) as f64 / 10.0,
            "battery_pct": 100 - (n % 100),
        })
        .to_string()
        .into_bytes();
        client::write_packet(
            &mut wr,
            protocol,
            &publish(&telemetry, QoS::AtMostOnce, 0, reading),
        )
        .await?;
        if d.plan.compromised && !probed && started.elapsed() >= PROBE_AFTER {
            probed = true;
            // What an intruder on a scanner tries: other devices' commands, the backend's
            // topics, broker internals. Every one is denied.
            for (k, topic) in probe_topics(id).iter().enumerate() {
                client::write_packet(
                    &mut wr,
                    protocol,
                    &publish(topic, QoS::AtLeastOnce, next_id(), b"x".to_vec()),
                )
                .await?;
                if k % 8 == 7 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// The topics the compromised device probes: 40, all outside its grant.
pub fn probe_topics(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for n in 1..=12 {
        out.push(format!("devices/globex-robot-{n:02}/commands/stop"));
        out.push(format!("devices/initech-tl-{n:02}/commands/unlock"));
    }
    for t in [
        "$SYS/broker/clients",
        "$SYS/broker/config",
        "wms/orders/new",
        "wms/orders/cancel",
        "plc/line-1/setpoint",
        "plc/line-2/setpoint",
        "firmware/push",
        "devices/wms-1/telemetry",
    ] {
        out.push(t.to_owned());
    }
    for n in 1..=8 {
        out.push(format!("devices/acme-scanner-{n:02}/telemetry"));
    }
    out.retain(|t| !t.contains(id));
    out
}
