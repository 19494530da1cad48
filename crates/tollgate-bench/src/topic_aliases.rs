//! The `topic-aliases` scenario: fan-out of long telemetry topics to MQTT 5 subscribers, once
//! with server-to-client topic aliases refused by the subscribers (no Topic Alias Maximum in
//! their CONNECT) and once allowed, in one invocation. It counts the bytes the subscribers
//! read (MQTT bytes, after TLS) per message in each phase and reports the bytes saved.
//!
//! The subscribers resolve aliases as an MQTT 5 client must (an alias with a topic sets the
//! mapping, an alias alone uses it) and count as an error any message whose topic does not
//! resolve to one the publisher sent. A broker that does not send aliases saves 0 %.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_mqtt::{
    decode, ByteString, Bytes, BytesMut, Connect, ConnectProperties, Packet, Protocol, Publish,
    QoS, Subscribe, SubscriptionRequest,
};

use crate::client::{self, DeviceTls};
use crate::procstat;
use crate::scenarios::{Devices, LoadArgs, Outcome};

/// Long telemetry topics, 74 to 77 bytes, as a plant's machines publish them.
fn topics() -> Vec<ByteString> {
    let kinds = ["temperature", "pressure", "vibration", "humidity"];
    (0..8)
        .map(|i| {
            format!(
                "plants/berlin-3/lines/packaging-07/machines/filler-{:04}/telemetry/{}",
                40 + i,
                kinds[i % kinds.len()]
            )
            .into()
        })
        .collect()
}

/// Aliases the subscribers allow in the aliased phase (more than the topics: all get one).
const ALIAS_MAXIMUM: u16 = 16;

#[derive(Default)]
struct Phase {
    received: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    measuring: AtomicBool,
    stop: AtomicBool,
}

impl Phase {
    fn error(&self, e: impl std::fmt::Display) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

/// What one phase measured.
struct Measured {
    received: u64,
    bytes: u64,
    sent: u64,
    elapsed: f64,
    errors: u64,
    first_error: Option<String>,
}

impl Measured {
    fn bytes_per_msg(&self) -> Option<f64> {
        (self.received > 0).then(|| self.bytes as f64 / self.received as f64)
    }
}

pub async fn run(a: &LoadArgs, devices: &Devices) -> Result<Outcome> {
    let pid = a.broker_pid;
    let sampler = pid.map(procstat::RssSampler::start);
    let cpu0 = pid.and_then(procstat::cpu_seconds);
    let plain = phase(a, devices, None).await?;
    let aliased = phase(a, devices, Some(ALIAS_MAXIMUM)).await?;
    let cpu1 = pid.and_then(procstat::cpu_seconds);
    let (bp, ba) = (plain.bytes_per_msg(), aliased.bytes_per_msg());
    let saved_pct = bp.zip(ba).map(|(p, q)| 100.0 * (1.0 - q / p));
    Ok(Outcome {
        throughput: aliased.received as f64 / aliased.elapsed,
        unit: "msg/s",
        sent: plain.sent + aliased.sent,
        received: plain.received + aliased.received,
        errors: plain.errors + aliased.errors,
        first_error: plain.first_error.or(aliased.first_error),
        broker_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        broker_peak_rss_kib: sampler.map(|s| s.finish()),
        measured_s: plain.elapsed + aliased.elapsed,
        bytes_per_msg_plain: bp,
        bytes_per_msg_aliased: ba,
        bytes_saved_pct: saved_pct,
        ..Default::default()
    })
}

/// One phase: subscribers allowing `alias_max` aliases (none: no Topic Alias Maximum).
async fn phase(a: &LoadArgs, devices: &Devices, alias_max: Option<u16>) -> Result<Measured> {
    let st = Arc::new(Phase::default());
    let qos = QoS::from_u8(a.qos).context("qos must be 0, 1 or 2")?;
    let topics = topics();
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let id = format!("bench-s{i}");
        let dev = devices.get(&id, true, false)?;
        let mut conn = connect(a.addr, &dev, alias_max)
            .await
            .with_context(|| format!("subscriber {id}"))?;
        conn.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscriptionRequest {
                filter: "plants/#".into(),
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            }],
            ..Default::default()
        }))
        .await?;
        match conn.next().await? {
            Packet::SubAck(s) if s.codes.iter().all(|c| !c.is_error()) => {}
            other => bail!("subscribe plants/# as {id}: {other:?}"),
        }
        let (st, topics) = (Arc::clone(&st), topics.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = subscriber(conn, &st, &topics).await {
                st.error(format!("subscriber: {e:#}"));
            }
        }));
    }
    let dev = devices.get("bench-p0", true, false)?;
    let publisher = connect(a.addr, &dev, None).await.context("publisher")?;
    let sent = Arc::new(AtomicU64::new(0));
    let (st2, sent2) = (Arc::clone(&st), Arc::clone(&sent));
    let (rate, payload) = (a.rate, a.payload.max(8));
    let p = tokio::spawn(async move {
        if let Err(e) = publish(publisher, &topics, rate, payload, &sent2, &st2).await {
            st2.error(format!("publisher: {e:#}"));
        }
    });
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let (r0, b0, s0) = (
        st.received.load(Ordering::Relaxed),
        st.bytes.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    st.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (r1, b1, s1) = (
        st.received.load(Ordering::Relaxed),
        st.bytes.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    st.stop.store(true, Ordering::Relaxed);
    for t in tasks.into_iter().chain(std::iter::once(p)) {
        t.abort();
    }
    let first_error = st.first_error.lock().ok().and_then(|f| f.clone());
    Ok(Measured {
        received: r1 - r0,
        bytes: b1 - b0,
        sent: s1 - s0,
        elapsed,
        errors: st.errors.load(Ordering::Relaxed),
        first_error,
    })
}

/// TCP + TLS + an MQTT 5 CONNECT that allows `alias_max` server topic aliases.
async fn connect(
    addr: SocketAddr,
    dev: &DeviceTls,
    alias_max: Option<u16>,
) -> Result<client::Conn> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&dev.config))
        .connect(name, tcp)
        .await?;
    let (rd, wr) = tokio::io::split(tls);
    let mut c = client::Conn {
        rd,
        wr,
        rbuf: BytesMut::with_capacity(64 * 1024),
        protocol: Protocol::V5,
    };
    c.send(&Packet::Connect(Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 120,
        client_id: dev.id.as_str().into(),
        properties: ConnectProperties {
            topic_alias_maximum: alias_max,
            ..Default::default()
        },
        ..Default::default()
    }))
    .await?;
    match c.next().await? {
        Packet::ConnAck(a) if !a.code.is_error() => Ok(c),
        other => bail!("CONNECT: {other:?}"),
    }
}

/// Read deliveries, counting bytes and messages, resolving each topic (alias or name).
async fn subscriber(mut conn: client::Conn, st: &Phase, topics: &[ByteString]) -> Result<()> {
    let mut aliases: HashMap<u16, ByteString> = HashMap::new();
    let mut acks = BytesMut::new();
    loop {
        conn.rbuf.reserve(64 * 1024);
        let n = conn.rd.read_buf(&mut conn.rbuf).await?;
        if n == 0 {
            bail!("closed by broker");
        }
        st.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let mut msgs = 0u64;
        while let Some(p) = decode(&mut conn.rbuf, Some(Protocol::V5), usize::MAX)? {
            let Packet::Publish(p) = p else { continue };
            msgs += 1;
            let topic = match p.properties.topic_alias {
                None => p.topic,
                Some(a) if p.topic.is_empty() => match aliases.get(&a) {
                    Some(t) => t.clone(),
                    None => bail!("topic alias {a} used before it was set"),
                },
                Some(a) => {
                    aliases.insert(a, p.topic.clone());
                    p.topic
                }
            };
            if !topics.contains(&topic) {
                bail!("a message on {topic:?}, which was not published");
            }
            if p.qos == QoS::AtLeastOnce {
                Packet::PubAck(tollgate_mqtt::PubResp {
                    packet_id: p.packet_id,
                    ..Default::default()
                })
                .encode(Protocol::V5, &mut acks)?;
            }
        }
        st.received.fetch_add(msgs, Ordering::Relaxed);
        if !acks.is_empty() {
            conn.wr.write_all(&acks).await?;
            conn.wr.flush().await?;
            acks.clear();
        }
    }
}

/// QoS 0 on the topics in turn, `rate` messages per second (0: as fast as the broker takes).
async fn publish(
    conn: client::Conn,
    topics: &[ByteString],
    rate: u64,
    payload: usize,
    sent: &AtomicU64,
    st: &Phase,
) -> Result<()> {
    let client::Conn { rd, mut wr, .. } = conn;
    // Nothing comes back for QoS 0; keep the read half open.
    let _rd = rd;
    let body = Bytes::from(vec![0x5Au8; payload]);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let batch = if rate > 0 { 1 } else { 64 };
    let mut next = Instant::now();
    let mut i = 0usize;
    while !st.stop.load(Ordering::Relaxed) {
        if let Some(iv) = interval {
            next += iv;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep(next - now).await;
            }
        }
        for _ in 0..batch {
            let topic = topics
                .get(i % topics.len().max(1))
                .cloned()
                .unwrap_or_default();
            i = i.wrapping_add(1);
            Packet::Publish(Publish {
                topic,
                payload: body.clone(),
                ..Default::default()
            })
            .encode(Protocol::V5, &mut buf)?;
        }
        wr.write_all(&buf).await?;
        wr.flush().await?;
        buf.clear();
        sent.fetch_add(batch as u64, Ordering::Relaxed);
    }
    Ok(())
}
