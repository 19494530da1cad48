//! The steady fleet: one tokio task per device that connects over mTLS, subscribes to its
//! command topic, publishes telemetry every period (±20 %), reconnects now and then, and obeys
//! the commands an attack sends it (go silent, spike, flap, move to another address, probe).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tollgate_mqtt::{Bytes, Packet, Protocol, Publish, QoS, Subscribe, SubscriptionRequest};

use crate::client::{self, DeviceTls, Dial};
use crate::rng::Rng;

/// MQTT keep-alive of simulated devices, seconds.
pub const KEEP_ALIVE: u16 = 60;
/// Longest a connect (TCP + TLS + CONNECT) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A device reconnects on its own after a clean disconnect with this chance per period.
pub const NOISE_RECONNECT_ONE_IN: usize = 2000;
/// Commands waiting for one device.
const COMMAND_QUEUE: usize = 8;

/// One simulated device.
pub struct Device {
    pub id: String,
    pub tls: DeviceTls,
    pub protocol: Protocol,
}

/// How every steady device behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub addr: SocketAddr,
    pub period: Duration,
    /// Local address the device binds (its source address at the broker).
    pub local: IpAddr,
    /// TLS server name when it differs from `localhost`.
    pub server_name: Option<String>,
    /// Also subscribe to its own telemetry, so the broker sends it data (link attacks).
    pub echo: bool,
    /// Spread the first connects over this long.
    pub stagger: Duration,
    /// Reconnect noise (1 in N periods); 0 disables it.
    pub noise_one_in: usize,
}

impl Behaviour {
    pub fn new(addr: SocketAddr, period: Duration) -> Behaviour {
        Behaviour {
            addr,
            period,
            local: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_name: None,
            echo: false,
            stagger: Duration::from_secs(10),
            noise_one_in: NOISE_RECONNECT_ONE_IN,
        }
    }
}

/// What an attack makes a device do.
#[derive(Debug, Clone)]
pub enum Cmd {
    /// Publish nothing for `dur`; stay connected (pings) or disconnect for that long.
    Silence { dur: Duration, disconnect: bool },
    /// Publish `factor` times as often with `payload_factor` times larger payloads for `dur`.
    Spike {
        factor: u32,
        payload_factor: usize,
        dur: Duration,
    },
    /// Disconnect cleanly and reconnect `times` times, spread over `over`.
    Flap { times: u32, over: Duration },
    /// Disconnect and reconnect from another local address (and stay there).
    MoveTo(IpAddr),
    /// Publish to these topics and subscribe to these filters, `gap` apart.
    Probe {
        topics: Vec<String>,
        filters: Vec<String>,
        gap: Duration,
    },
}

/// Fleet-wide counters.
#[derive(Default)]
pub struct Stats {
    pub connected: AtomicUsize,
    pub published: AtomicU64,
    pub connects: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, id: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(format!("{id}: {e:#}"));
        }
    }
}

/// A running device: its identity and its command queue.
pub struct Handle {
    pub device: Arc<Device>,
    pub tx: mpsc::Sender<Cmd>,
}

pub struct Fleet {
    pub handles: Vec<Handle>,
    pub stats: Arc<Stats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Start every device (staggered over `behaviour.stagger`).
    pub fn start(devices: Vec<Device>, behaviour: &Behaviour, seed: u64) -> Fleet {
        let stats = Arc::new(Stats::default());
        let n = devices.len().max(1) as u32;
        let mut handles = Vec::with_capacity(devices.len());
        let mut tasks = Vec::with_capacity(devices.len());
        for (i, d) in devices.into_iter().enumerate() {
            let device = Arc::new(d);
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let delay = behaviour.stagger * i as u32 / n;
            let run = Run {
                device: Arc::clone(&device),
                b: behaviour.clone(),
                stats: Arc::clone(&stats),
                rng: Rng(seed ^ (0x9E37_79B9 * (i as u64 + 1))),
                st: State::default(),
            };
            tasks.push(tokio::spawn(run.run(rx, delay)));
            handles.push(Handle { device, tx });
        }
        Fleet {
            handles,
            stats,
            tasks,
        }
    }

    /// Stop every device (they disconnect cleanly when their queue closes) within `grace`.
    pub async fn stop(self, grace: Duration) {
        drop(self.handles);
        let deadline = Instant::now() + grace;
        for t in self.tasks {
            let abort = t.abort_handle();
            if timeout(deadline.saturating_duration_since(Instant::now()), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

#[derive(Default)]
struct State {
    silent_until: Option<Instant>,
    offline_until: Option<Instant>,
    spike_until: Option<Instant>,
    spike_factor: u32,
    payload_factor: usize,
    flaps_left: u32,
    flap_gap: Duration,
    next_flap: Option<Instant>,
    seq: u64,
    /// Probe packets still to send, one every `probe_gap` (the device keeps reading meanwhile).
    probes: std::collections::VecDeque<Packet>,
    probe_gap: Duration,
    next_probe: Option<Instant>,
}

/// How a session ended.
enum Ended {
    /// We disconnected; reconnect after this.
    Clean(Duration),
    /// The broker closed it or it failed.
    Dropped,
    /// The fleet is stopping.
    Stop,
}

struct Run {
    device: Arc<Device>,
    b: Behaviour,
    stats: Arc<Stats>,
    rng: Rng,
    st: State,
}

impl Run {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, delay: Duration) {
        sleep(delay).await;
        let mut backoff = Duration::from_millis(500);
        loop {
            if let Some(t) = self.st.offline_until.take() {
                sleep_until(t).await;
            }
            let dial = Dial {
                local: Some(self.b.local),
                server_name: self.b.server_name.clone(),
                ..Dial::default()
            };
            let d = &self.device;
            let conn = match timeout(
                CONNECT_TIMEOUT,
                client::connect_with(self.b.addr, &d.tls, d.protocol, KEEP_ALIVE, &dial),
            )
            .await
            {
                Ok(Ok((c, _))) => c,
                Ok(Err(e)) => {
                    self.stats.error(&d.id, format!("connect: {e:#}"));
                    sleep(backoff.mul_f64(self.rng.range(1.0, 2.0))).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
                Err(_) => {
                    self.stats.error(&d.id, "connect timed out");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(500);
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            self.stats.connected.fetch_add(1, Ordering::Relaxed);
            let ended = self.session(conn, &mut rx).await;
            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
            match ended {
                Ended::Clean(after) => sleep(after).await,
                // Kicked (a takeover) or a broken link: back in 1 to 2 s.
                Ended::Dropped => sleep(Duration::from_secs_f64(self.rng.range(1.0, 2.0))).await,
                Ended::Stop => return,
            }
        }
    }

    async fn session(&mut self, conn: client::Conn, rx: &mut mpsc::Receiver<Cmd>) -> Ended {
        let client::Conn {
            mut rd,
            mut wr,
            mut rbuf,
            protocol,
        } = conn;
        let id = self.device.id.clone();
        let mut filters = vec![format!("commands/{id}/#")];
        if self.b.echo {
            filters.push(format!("telemetry/{id}/#"));
        }
        let sub = subscribe(1, &filters);
        if let Err(e) = client::write_packet(&mut wr, protocol, &sub).await {
            self.stats.error(&id, format!("subscribe: {e:#}"));
            return Ended::Dropped;
        }
        let period = self.b.period;
        let mut next_pub = Instant::now() + period.mul_f64(self.rng.unit());
        let mut last_sent = Instant::now();
        let mut pid: u16 = 1;
        loop {
            tokio::select! {
                _ = sleep_until(next_pub) => {
                    let now = Instant::now();
                    let spiking = self.st.spike_until.is_some_and(|t| now < t);
                    let silent = self.st.silent_until.is_some_and(|t| now < t);
                    if !silent {
                        let p = self.telemetry(spiking);
                        if let Err(e) = client::write_packet(&mut wr, protocol, &p).await {
                            self.stats.error(&id, format!("publish: {e:#}"));
                            return Ended::Dropped;
                        }
                        self.stats.published.fetch_add(1, Ordering::Relaxed);
                        last_sent = now;
                    } else if now.duration_since(last_sent) > Duration::from_secs(u64::from(KEEP_ALIVE) / 3) {
                        if client::write_packet(&mut wr, protocol, &Packet::PingReq).await.is_err() {
                            return Ended::Dropped;
                        }
                        last_sent = now;
                    }
                    let step = if spiking {
                        period / self.st.spike_factor.max(1)
                    } else {
                        period
                    };
                    next_pub += step.mul_f64(self.rng.range(0.8, 1.2));
                    if next_pub < now {
                        next_pub = now + step;
                    }
                    if self.st.flaps_left > 0 && self.st.next_flap.is_some_and(|t| now >= t) {
                        self.st.flaps_left -= 1;
                        self.st.next_flap = Some(now + self.st.flap_gap);
                        disconnect(&mut wr, protocol).await;
                        return Ended::Clean(Duration::from_millis(100));
                    }
                    if self.b.noise_one_in > 0 && !spiking && !silent
                        && self.rng.below(self.b.noise_one_in) == 0
                    {
                        disconnect(&mut wr, protocol).await;
                        return Ended::Clean(Duration::from_secs_f64(self.rng.range(0.2, 2.0)));
                    }
                }
                _ = sleep_until(self.st.next_probe.unwrap_or(next_pub)), if !self.st.probes.is_empty() => {
                    if let Some(p) = self.st.probes.pop_front() {
                        if client::write_packet(&mut wr, protocol, &p).await.is_err() {
                            return Ended::Dropped;
                        }
                    }
                    self.st.next_probe = Some(Instant::now() + self.st.probe_gap);
                }
                p = client::read_packet(&mut rd, &mut rbuf, protocol) => {
                    if p.is_err() {
                        return Ended::Dropped;
                    }
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else {
                        disconnect(&mut wr, protocol).await;
                        return Ended::Stop;
                    };
                    let now = Instant::now();
                    match cmd {
                        Cmd::Silence { dur, disconnect: off } => {
                            self.st.silent_until = Some(now + dur);
                            if off {
                                self.st.offline_until = Some(now + dur);
                                disconnect(&mut wr, protocol).await;
                                return Ended::Clean(Duration::ZERO);
                            }
                        }
                        Cmd::Spike { factor, payload_factor, dur } => {
                            self.st.spike_until = Some(now + dur);
                            self.st.spike_factor = factor.max(1);
                            self.st.payload_factor = payload_factor.max(1);
                            next_pub = now;
                        }
                        Cmd::Flap { times, over } => {
                            self.st.flaps_left = times;
                            self.st.flap_gap = over / times.max(1);
                            self.st.next_flap = Some(now);
                            next_pub = now;
                        }
                        Cmd::MoveTo(ip) => {
                            self.b.local = ip;
                            disconnect(&mut wr, protocol).await;
                            return Ended::Clean(Duration::from_millis(200));
                        }
                        Cmd::Probe { topics, filters, gap } => {
                            for t in &topics {
                                pid = pid.wrapping_add(1).max(2);
                                self.st.probes.push_back(publish(t, QoS::AtLeastOnce, pid, Bytes::from_static(b"{\"probe\":1}")));
                            }
                            for f in &filters {
                                pid = pid.wrapping_add(1).max(2);
                                self.st.probes.push_back(subscribe(pid, std::slice::from_ref(f)));
                            }
                            self.st.probe_gap = gap;
                            self.st.next_probe = Some(now);
                        }
                    }
                }
            }
        }
    }

    /// A telemetry message of realistic size (about 200 bytes, a little more or less; four
    /// times larger during a spike).
    fn telemetry(&mut self, spiking: bool) -> Packet {
        self.st.seq += 1;
        let r = &mut self.rng;
        let mut body = format!(
            "{{\"seq\":{},\"temp\":{:.2},\"humidity\":{:.1},\"voltage\":{:.3},\"rssi\":{},\"status\":\"ok\",\"fw\":\"2.4.1\",\"uptime\":{}",
            self.st.seq,
            r.range(18.0, 26.0),
            r.range(30.0, 60.0),
            r.range(3.2, 3.4),
            -40 - r.below(50) as i64,
            self.st.seq * u64::try_from(self.b.period.as_millis()).unwrap_or(1000) / 1000,
        );
        let target = 160 + r.below(80);
        let target = if spiking {
            target * self.st.payload_factor.max(1)
        } else {
            target
        };
        body.push_str(",\"pad\":\"");
        while body.len() + 2 < target {
            body.push(char::from(b'a' + (r.below(26) as u8)));
        }
        body.push_str("\"}");
        publish(
            &format!("telemetry/{}/state", self.device.id),
            QoS::AtMostOnce,
            0,
            Bytes::from(body),
        )
    }
}

pub fn publish(topic: &str, qos: QoS, packet_id: u16, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id,
        payload,
        ..Default::default()
    })
}

pub fn subscribe(packet_id: u16, filters: &[String]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|f| SubscriptionRequest {
                filter: f.as_str().into(),
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            })
            .collect(),
        ..Default::default()
    })
}

async fn disconnect(wr: &mut tokio::io::WriteHalf<client::Stream>, protocol: Protocol) {
    let _ = timeout(
        Duration::from_secs(2),
        client::write_packet(wr, protocol, &Packet::Disconnect(Default::default())),
    )
    .await;
}

/// Read and discard packets until the connection closes or `limit` passes; true if it closed.
pub async fn hold(conn: &mut client::Conn, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        match timeout(until.saturating_duration_since(Instant::now()), conn.next()).await {
            Err(_) => return false,
            Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Connect a device identity once with a timeout (attacks use it).
pub async fn dial(addr: SocketAddr, dev: &Device, d: &Dial) -> Result<client::Conn> {
    match timeout(
        CONNECT_TIMEOUT,
        client::connect_with(addr, &dev.tls, dev.protocol, KEEP_ALIVE, d),
    )
    .await
    {
        Ok(r) => Ok(r?.0),
        Err(_) => anyhow::bail!("connect timed out"),
    }
}
