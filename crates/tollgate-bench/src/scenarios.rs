//! The load scenarios. Each connects real mTLS MQTT clients (one certificate per simulated
//! device), drives the broker for a warm-up and a measured window, and reports throughput,
//! latency percentiles, errors, and the CPU and memory the broker and the generator used.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};
use tollgate_mqtt::{
    decode, Bytes, BytesMut, Packet, Protocol, PubResp, Publish, QoS, Subscribe,
    SubscriptionRequest,
};

use crate::client::{self, DeviceTls};
use crate::procstat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    FanIn,
    FanOut,
    Pairs,
    Latency,
    Connections,
    Handshakes,
    TopicAliases,
    /// Many idle MQTT 5 connections from several source addresses, then revocation timing
    /// ([`crate::scale`]).
    Scale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeMode {
    Tls13,
    Tls12,
    Tls13Resumed,
    Tls12Resumed,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:8883")]
    pub addr: SocketAddr,
    /// Directory with ca.crt and one <device>.pem (certificate + key) per simulated device.
    #[arg(long)]
    pub certs: PathBuf,
    /// Broker process id, for CPU and memory figures.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Publishers (fan-in), subscribers (fan-out), pairs (pairs) or publishers (latency).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Messages per second per publisher; 0 = as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Idle connections to open (connections scenario).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    #[arg(long, value_enum, default_value = "tls13")]
    pub handshake: HandshakeMode,
    /// Concurrent connection attempts (connections, handshakes).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// QoS 1/2 messages in flight per publisher.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// MQTT 5 instead of 3.1.1.
    #[arg(long)]
    pub v5: bool,
    /// Subscribers keep persistent sessions (clean session 0): their QoS 1/2 messages must be
    /// on disk before the publisher's PUBACK, in brokers that keep that promise.
    #[arg(long)]
    pub persistent: bool,
    /// Source addresses (127.0.0.2 upwards) for the scale scenario; 0 = one per 12,500
    /// connections.
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// Device id prefix of the scale scenario's connections (`<prefix><n>`).
    #[arg(long, default_value = "bench-x")]
    pub prefix: String,
    /// A tollgate binary to revoke devices with (scale scenario: revocation timing), together
    /// with --data.
    #[arg(long, value_name = "BIN", requires = "data")]
    pub revoke_with: Option<PathBuf>,
    /// The broker's data directory (for `tollgate device revoke --data`).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Devices revoked at once in the scale scenario's batch.
    #[arg(long, default_value_t = 1000)]
    pub revoke_batch: usize,
    /// Seconds the idle-connections and scale scenarios wait, after the 1 s reading, before
    /// they read the broker's memory for the idle figure.
    #[arg(long, default_value_t = 15.0)]
    pub settle: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub throughput: f64,
    pub unit: &'static str,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub broker_cpu_s: Option<f64>,
    pub broker_peak_rss_kib: Option<u64>,
    pub broker_rss_per_conn_kib: Option<f64>,
    pub gen_cpu_s: Option<f64>,
    pub measured_s: f64,
    pub resumed: Option<u64>,
    /// Work done per second of broker CPU: the efficiency figure that stays meaningful when
    /// the generator, not the broker, is the bottleneck.
    pub per_broker_cpu_s: Option<f64>,
    /// topic-aliases: bytes the subscribers read per message without topic aliases...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_msg_plain: Option<f64>,
    /// ...and with them allowed...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_msg_aliased: Option<f64>,
    /// ...and the difference, in % of the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_saved_pct: Option<f64>,
    /// Broker RSS growth per connection 1 s after the last connect (idle connections and
    /// scale scenarios; the main figure is read after --settle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_per_conn_kib_1s: Option<f64>,
    /// Revocation timing (scale scenario, Tollgate only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<crate::scale::RevocationTiming>,
}

/// Keep-alive the simulated devices ask for (rumqttd refuses 0; runs are shorter than 1.5×).
pub(crate) const KEEP_ALIVE: u16 = 120;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Shared counters of one run.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) first_error: std::sync::Mutex<Option<String>>,
    pub(crate) stop: AtomicBool,
    pub(crate) measuring: AtomicBool,
}

impl Counters {
    pub(crate) fn error(&self, e: impl std::fmt::Display) {
        if self.stop.load(Ordering::Relaxed) {
            return; // failures while tearing down are not the broker's
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
    }
}

pub struct Devices {
    ca: rustls::RootCertStore,
    dir: PathBuf,
}

impl Devices {
    pub fn open(dir: &std::path::Path) -> Result<Devices> {
        use rustls_pki_types::pem::PemObject;
        let mut ca = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("ca.crt"))? {
            ca.add(c?)?;
        }
        Ok(Devices {
            ca,
            dir: dir.to_path_buf(),
        })
    }

    pub fn get(&self, id: &str, tls13: bool, resumption: bool) -> Result<DeviceTls> {
        let pem = std::fs::read_to_string(self.dir.join(format!("{id}.pem")))
            .with_context(|| format!("certificate for {id}"))?;
        Ok(client::device_tls(id, &pem, &self.ca, tls13, resumption)?)
    }
}

pub async fn run(a: LoadArgs) -> Result<Outcome> {
    let _ = base();
    let devices = Devices::open(&a.certs)?;
    let gen_cpu0 = procstat::cpu_seconds(std::process::id());
    let mut out = match a.scenario {
        // The latency scenario is fan-in at a fixed rate: same topology, different load.
        Scenario::FanIn | Scenario::Latency => {
            let pubs = (0..a.clients)
                .map(|i| (format!("bench-p{i}"), format!("bench/bench-p{i}/t")))
                .collect();
            pubsub(
                &a,
                &devices,
                pubs,
                vec![("bench-s0".into(), "bench/+/t".into())],
            )
            .await?
        }
        Scenario::FanOut => {
            let subs = (0..a.clients)
                .map(|i| (format!("bench-s{i}"), "bench/bcast".to_string()))
                .collect();
            pubsub(
                &a,
                &devices,
                vec![("bench-p0".into(), "bench/bcast".into())],
                subs,
            )
            .await?
        }
        Scenario::Pairs => {
            let pubs = (0..a.clients)
                .map(|i| (format!("bench-p{i}"), format!("bench/pair/bench-p{i}")))
                .collect();
            let subs = (0..a.clients)
                .map(|i| (format!("bench-s{i}"), format!("bench/pair/bench-p{i}")))
                .collect();
            pubsub(&a, &devices, pubs, subs).await?
        }
        Scenario::Connections => connections(&a, &devices).await?,
        Scenario::Handshakes => handshakes(&a, &devices).await?,
        Scenario::TopicAliases => crate::topic_aliases::run(&a, &devices).await?,
        Scenario::Scale => crate::scale::run(&a, &devices).await?,
    };
    out.scenario = format!("{:?}", a.scenario);
    out.per_broker_cpu_s = out
        .broker_cpu_s
        .filter(|c| *c > 0.0)
        .map(|c| out.received as f64 / c);
    if let (Some(c0), Some(c1)) = (gen_cpu0, procstat::cpu_seconds(std::process::id())) {
        out.gen_cpu_s = Some(c1 - c0);
    }
    Ok(out)
}

fn protocol(a: &LoadArgs) -> Protocol {
    if a.v5 {
        Protocol::V5
    } else {
        Protocol::V311
    }
}

/// Publishers and subscribers; throughput is deliveries per second at the subscribers.
async fn pubsub(
    a: &LoadArgs,
    devices: &Devices,
    pubs: Vec<(String, String)>,
    subs: Vec<(String, String)>,
) -> Result<Outcome> {
    let counters = Arc::new(Counters::default());
    let qos = QoS::from_u8(a.qos).context("qos must be 0, 1 or 2")?;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut tasks = Vec::new();
    for (id, filter) in subs {
        let dev = devices.get(&id, true, false)?;
        if a.persistent {
            // Start from an empty session: a clean connect discards what an earlier run left.
            let (mut c, _) = client::connect(a.addr, &dev, protocol(a), KEEP_ALIVE)
                .await
                .with_context(|| format!("subscriber {id}"))?;
            c.send(&Packet::Disconnect(Default::default())).await?;
        }
        let (mut conn, _) =
            client::connect_session(a.addr, &dev, protocol(a), KEEP_ALIVE, a.persistent)
                .await
                .with_context(|| format!("subscriber {id}"))?;
        conn.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscriptionRequest {
                filter: filter.as_str().into(),
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
            other => anyhow::bail!("subscribe {filter} as {id}: {other:?}"),
        }
        let (c, h) = (Arc::clone(&counters), Arc::clone(&hist));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = subscriber_loop(conn, &c, h).await {
                c.error(format!("subscriber: {e:#}"));
            }
        }));
    }
    let mut pub_tasks = Vec::new();
    let paced = if a.rate > 0 && qos == QoS::AtMostOnce {
        let mut devs = Vec::with_capacity(pubs.len());
        for (id, topic) in &pubs {
            devs.push((devices.get(id, true, false)?, topic.clone()));
        }
        let pace = Pace {
            addr: a.addr,
            protocol: protocol(a),
            rate: a.rate,
            payload: a.payload.max(8),
        };
        Some(spawn_paced(pace, devs, Arc::clone(&counters))?)
    } else {
        None
    };
    for (id, topic) in pubs.into_iter().filter(|_| paced.is_none()) {
        let dev = devices.get(&id, true, false)?;
        let (conn, _) = client::connect(a.addr, &dev, protocol(a), KEEP_ALIVE)
            .await
            .with_context(|| format!("publisher {id}"))?;
        let c = Arc::clone(&counters);
        let (rate, payload, window) = (a.rate, a.payload.max(8), a.window.max(1));
        pub_tasks.push(tokio::spawn(async move {
            if let Err(e) = publisher_loop(conn, &topic, qos, rate, payload, window, &c).await {
                c.error(format!("publisher: {e:#}"));
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let pid = a.broker_pid;
    let sampler = pid.map(procstat::RssSampler::start);
    let cpu0 = pid.and_then(procstat::cpu_seconds);
    let (recv0, sent0) = (
        counters.received.load(Ordering::Relaxed),
        counters.sent.load(Ordering::Relaxed),
    );
    counters.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    counters.measuring.store(false, Ordering::Relaxed);
    let received = counters.received.load(Ordering::Relaxed) - recv0;
    let sent = counters.sent.load(Ordering::Relaxed) - sent0;
    let cpu1 = pid.and_then(procstat::cpu_seconds);
    counters.stop.store(true, Ordering::Relaxed);
    if let Some(h) = paced {
        // The pacing thread sees `stop` within one period.
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
    for t in pub_tasks.into_iter().chain(tasks) {
        t.abort();
    }
    let h = hist.lock().await;
    let pct = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64);
    let first_error = counters.first_error.lock().ok().and_then(|f| f.clone());
    Ok(Outcome {
        throughput: received as f64 / elapsed,
        unit: "msg/s",
        sent,
        received,
        errors: counters.errors.load(Ordering::Relaxed),
        first_error,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        broker_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        broker_peak_rss_kib: sampler.map(|s| s.finish()),
        measured_s: elapsed,
        ..Default::default()
    })
}

async fn subscriber_loop(
    mut conn: client::Conn,
    c: &Counters,
    hist: Arc<Mutex<Histogram<u64>>>,
) -> Result<()> {
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut acks = BytesMut::new();
    let mut last_flush = Instant::now();
    loop {
        conn.rbuf.reserve(64 * 1024);
        if conn.rd.read_buf(&mut conn.rbuf).await? == 0 {
            anyhow::bail!("closed by broker");
        }
        let mut n = 0u64;
        while let Some(p) = decode(&mut conn.rbuf, Some(conn.protocol), usize::MAX)? {
            match p {
                Packet::Publish(p) => {
                    n += 1;
                    if c.measuring.load(Ordering::Relaxed) {
                        if let Some(ts) =
                            p.payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok())
                        {
                            let sent = u64::from_be_bytes(ts);
                            let _ = local.record((now_ns().saturating_sub(sent) / 1000).max(1));
                        }
                    }
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => Packet::PubAck(PubResp {
                            packet_id: p.packet_id,
                            ..Default::default()
                        })
                        .encode(conn.protocol, &mut acks)?,
                        QoS::ExactlyOnce => Packet::PubRec(PubResp {
                            packet_id: p.packet_id,
                            ..Default::default()
                        })
                        .encode(conn.protocol, &mut acks)?,
                    }
                }
                Packet::PubRel(r) => Packet::PubComp(PubResp {
                    packet_id: r.packet_id,
                    ..Default::default()
                })
                .encode(conn.protocol, &mut acks)?,
                _ => {}
            }
        }
        c.received.fetch_add(n, Ordering::Relaxed);
        if !acks.is_empty() {
            conn.wr.write_all(&acks).await?;
            conn.wr.flush().await?;
            acks.clear();
        }
        if last_flush.elapsed() > Duration::from_millis(200) {
            hist.lock().await.add(&local)?;
            local.reset();
            last_flush = Instant::now();
        }
    }
}

async fn publisher_loop(
    conn: client::Conn,
    topic: &str,
    qos: QoS,
    rate: u64,
    payload: usize,
    window: usize,
    c: &Counters,
) -> Result<()> {
    let client::Conn {
        rd,
        mut wr,
        rbuf,
        protocol,
    } = conn;
    let permits = Arc::new(Semaphore::new(if qos == QoS::AtMostOnce {
        0
    } else {
        window
    }));
    // Acknowledgements come back on the read half.
    let reader = {
        let permits = Arc::clone(&permits);
        let mut conn_rd = (rd, rbuf);
        tokio::spawn(async move {
            let (rd, rbuf) = &mut conn_rd;
            let mut out = BytesMut::new();
            loop {
                rbuf.reserve(16 * 1024);
                match rd.read_buf(rbuf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut done = 0;
                while let Ok(Some(p)) = decode(rbuf, Some(protocol), usize::MAX) {
                    match p {
                        Packet::PubAck(_) | Packet::PubComp(_) => done += 1,
                        Packet::PubRec(r) => {
                            let _ = Packet::PubRel(PubResp {
                                packet_id: r.packet_id,
                                ..Default::default()
                            })
                            .encode(protocol, &mut out);
                        }
                        _ => {}
                    }
                }
                permits.add_permits(done);
                if !out.is_empty() {
                    // Cannot write from here (the writer owns the write half): PUBRELs are rare
                    // in these scenarios (QoS 2 is not benchmarked), so drop them.
                    out.clear();
                }
            }
        })
    };
    let body = vec![0x5Au8; payload];
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut pid: u16 = 0;
    let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let mut next = Instant::now();
    let batch_max = if rate > 0 { 1 } else { 64 };
    let result: Result<()> = async {
        loop {
            if c.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Some(iv) = interval {
                next += iv;
                let now = Instant::now();
                if next > now {
                    tokio::time::sleep(next - now).await;
                }
            }
            let mut n = 0;
            while n < batch_max {
                if qos != QoS::AtMostOnce {
                    if n == 0 {
                        permits.acquire().await?.forget();
                    } else if let Ok(p) = permits.try_acquire() {
                        p.forget();
                    } else {
                        break;
                    }
                    pid = pid.wrapping_add(1).max(1);
                }
                let mut payload = body.clone();
                payload[..8].copy_from_slice(&now_ns().to_be_bytes());
                Packet::Publish(Publish {
                    qos,
                    topic: topic.into(),
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
                    payload: Bytes::from(payload),
                    ..Default::default()
                })
                .encode(protocol, &mut buf)?;
                n += 1;
            }
            wr.write_all(&buf).await?;
            wr.flush().await?;
            buf.clear();
            c.sent.fetch_add(n, Ordering::Relaxed);
        }
    }
    .await;
    reader.abort();
    result
}

/// How paced publishers send.
struct Pace {
    addr: SocketAddr,
    protocol: Protocol,
    /// Messages per second per publisher.
    rate: u64,
    payload: usize,
}

/// QoS 0 publishers at a fixed rate, spread evenly in time: one thread of their own, with its
/// own runtime, sends each connection's next message in turn, `1 / (rate × publishers)` seconds
/// apart. On the runtime's millisecond timer every publisher would wake on the same tick and
/// their messages would leave in bursts and queue behind each other (in the broker and in the
/// generator's own subscriber, which shares the scheduler with them): the latency figure would
/// then measure the generator's bursts as much as the broker. The thread sleeps between sends
/// (`std::thread::sleep`, microsecond resolution), so the subscriber has the rest of the CPU.
/// Returns once every publisher is connected.
fn spawn_paced(
    pace: Pace,
    devs: Vec<(DeviceTls, String)>,
    c: Arc<Counters>,
) -> Result<std::thread::JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let handle = std::thread::Builder::new()
        .name("paced-publishers".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let mut conns = Vec::with_capacity(devs.len());
                for (dev, topic) in devs {
                    match client::connect(pace.addr, &dev, pace.protocol, KEEP_ALIVE).await {
                        Ok((conn, _)) => conns.push((conn, topic)),
                        Err(e) => {
                            let e = anyhow::Error::from(e).context(format!("publisher {}", dev.id));
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let n = conns.len().max(1);
                let period = Duration::from_secs_f64(1.0 / (pace.rate.max(1) as f64 * n as f64));
                let body = vec![0x5Au8; pace.payload];
                let mut buf = BytesMut::with_capacity(4096);
                let mut next = Instant::now();
                let mut turn = 0usize;
                while !c.stop.load(Ordering::Relaxed) {
                    next += period;
                    let now = Instant::now();
                    if next > now {
                        // This thread's runtime runs only these publishers: blocking it is the
                        // point (tokio's timer has millisecond resolution).
                        #[allow(clippy::disallowed_methods)]
                        std::thread::sleep(next - now);
                    }
                    let Some((conn, topic)) = conns.get_mut(turn % n) else {
                        return;
                    };
                    turn = turn.wrapping_add(1);
                    let mut payload = body.clone();
                    payload[..8].copy_from_slice(&now_ns().to_be_bytes());
                    let sent = async {
                        Packet::Publish(Publish {
                            topic: topic.as_str().into(),
                            payload: Bytes::from(payload),
                            ..Default::default()
                        })
                        .encode(pace.protocol, &mut buf)?;
                        conn.wr.write_all(&buf).await?;
                        conn.wr.flush().await?;
                        buf.clear();
                        anyhow::Ok(())
                    }
                    .await;
                    match sent {
                        Ok(()) => {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            c.error(format!("publisher: {e:#}"));
                            return;
                        }
                    }
                }
            });
        })?;
    ready_rx
        .recv()
        .context("the paced publishers' thread ended before connecting")??;
    Ok(handle)
}

/// K idle connections; reports the broker's resident memory per connection.
async fn connections(a: &LoadArgs, devices: &Devices) -> Result<Outcome> {
    let pid = a.broker_pid;
    let rss0 = pid.and_then(procstat::rss_kib);
    let cpu0 = pid.and_then(procstat::cpu_seconds);
    let counters = Arc::new(Counters::default());
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let held = Arc::new(Mutex::new(Vec::with_capacity(a.connections)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.connections {
        let dev = devices.get(&format!("bench-c{i}"), true, false)?;
        let permit = Arc::clone(&sem).acquire_owned().await?;
        let (c, held, addr, proto) = (
            Arc::clone(&counters),
            Arc::clone(&held),
            a.addr,
            protocol(a),
        );
        tasks.push(tokio::spawn(async move {
            match client::connect(addr, &dev, proto, KEEP_ALIVE).await {
                Ok((conn, _)) => {
                    c.received.fetch_add(1, Ordering::Relaxed);
                    held.lock().await.push(conn);
                }
                Err(e) => c.error(format!("connection: {e:#}")),
            }
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_early = pid.and_then(procstat::rss_kib);
    let cpu1 = pid.and_then(procstat::cpu_seconds);
    // What the handshakes freed stays resident until the allocator returns it (jemalloc's decay
    // is 10 s; glibc's malloc may keep it): the idle figure is read after `--settle` seconds,
    // the same wait for every broker, and the 1 s reading is kept beside it.
    tokio::time::sleep(Duration::from_secs_f64(a.settle.max(0.0))).await;
    let rss1 = pid.and_then(procstat::rss_kib);
    let open = counters.received.load(Ordering::Relaxed);
    counters.stop.store(true, Ordering::Relaxed);
    drop(held);
    let first_error = counters.first_error.lock().ok().and_then(|f| f.clone());
    Ok(Outcome {
        throughput: open as f64 / elapsed,
        unit: "conn/s",
        sent: a.connections as u64,
        received: open,
        errors: counters.errors.load(Ordering::Relaxed),
        first_error,
        broker_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        broker_peak_rss_kib: rss1,
        broker_rss_per_conn_kib: rss0
            .zip(rss1)
            .map(|(r0, r1)| (r1.saturating_sub(r0)) as f64 / open.max(1) as f64),
        broker_rss_per_conn_kib_1s: rss0
            .zip(rss_early)
            .map(|(r0, r1)| (r1.saturating_sub(r0)) as f64 / open.max(1) as f64),
        measured_s: elapsed,
        ..Default::default()
    })
}

/// Full (or resumed) mTLS handshakes + CONNECT/CONNACK per second.
async fn handshakes(a: &LoadArgs, devices: &Devices) -> Result<Outcome> {
    let (tls13, resumption) = match a.handshake {
        HandshakeMode::Tls13 => (true, false),
        HandshakeMode::Tls12 => (false, false),
        HandshakeMode::Tls13Resumed => (true, true),
        HandshakeMode::Tls12Resumed => (false, true),
    };
    let counters = Arc::new(Counters::default());
    let resumed = Arc::new(AtomicU64::new(0));
    // The generator has one CPU, like the broker, and a client's full handshake costs about
    // what the server's does (most of it the chain's signature checks): learn the broker's
    // certificate once over a fully verified handshake and pin it, so the generator does less
    // work per handshake than the broker and the figure measures the broker.
    let server = client::server_certificate(a.addr, &devices.get("bench-p0", tls13, false)?, None)
        .await
        .context("learning the broker's certificate")?;
    let mut tasks = Vec::new();
    for i in 0..a.concurrency.max(1) {
        let dev = client::pinned(
            &devices.get(&format!("bench-p{i}"), tls13, resumption)?,
            server.clone(),
        );
        let (c, r, addr, proto) = (
            Arc::clone(&counters),
            Arc::clone(&resumed),
            a.addr,
            protocol(a),
        );
        tasks.push(tokio::spawn(async move {
            while !c.stop.load(Ordering::Relaxed) {
                match client::connect(addr, &dev, proto, KEEP_ALIVE).await {
                    Ok((mut conn, was_resumed)) => {
                        if c.measuring.load(Ordering::Relaxed) {
                            c.received.fetch_add(1, Ordering::Relaxed);
                            if was_resumed {
                                r.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        let _ = conn.send(&Packet::Disconnect(Default::default())).await;
                        let _ = conn.wr.shutdown().await;
                    }
                    Err(e) => c.error(format!("handshake: {e:#}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let pid = a.broker_pid;
    let cpu0 = pid.and_then(procstat::cpu_seconds);
    counters.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(procstat::cpu_seconds);
    counters.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let n = counters.received.load(Ordering::Relaxed);
    let first_error = counters.first_error.lock().ok().and_then(|f| f.clone());
    Ok(Outcome {
        throughput: n as f64 / elapsed,
        unit: "handshakes/s",
        received: n,
        errors: counters.errors.load(Ordering::Relaxed),
        first_error,
        broker_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        measured_s: elapsed,
        resumed: Some(resumed.load(Ordering::Relaxed)),
        ..Default::default()
    })
}
