//! The scale scenario: many idle mTLS connections (100,000 in `bench/run.sh --scale 100000`),
//! then revocation timing among them.
//!
//! Connections are MQTT 5 (so a revoked client can be told why: DISCONNECT 0x98) and come from
//! several loopback source addresses, 127.0.0.2 upwards, each socket bound before it connects:
//! one address has about 28,000 ephemeral ports (`net.ipv4.ip_local_port_range`), so 100,000
//! connections need at least four. The generator raises its own open-file limit; the runner
//! starts the broker with a limit that holds one descriptor per connection and some to spare.
//!
//! Measured: the broker's resident memory growth per connection once every connection is up
//! (RSS after − RSS before, ÷ connections; 1 s after the last connect, and again after
//! `--settle` seconds, when the allocator has returned what connect-time work freed), the
//! connect rate and the broker's CPU seconds
//! while connecting; then, with a Tollgate binary and its data directory given, revocation
//! latency from the request to the client seeing the close: one device, then a batch (1,000
//! by default) in one request. The request is made by running `tollgate device revoke` (the
//! CLI every operator uses, one process: its start-up and its admin-API handshake are inside
//! the figure, so the figure is an upper bound of the server's part).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::Semaphore;
use tollgate_mqtt::{BytesMut, Packet, Protocol};

use crate::client::{self, Dial};
use crate::procstat;
use crate::scenarios::{Counters, Devices, LoadArgs, Outcome, KEEP_ALIVE};

/// Connections per source address (a quarter of the ephemeral range, so a few addresses carry
/// any load without running out of ports).
const PER_SOURCE: usize = 12_500;

/// Revocation figures, in milliseconds from the request.
#[derive(Debug, Default, serde::Serialize)]
pub struct RevocationTiming {
    /// One device revoked alone: until its client saw the close.
    pub one_ms: Option<f64>,
    /// How many devices the batch revoked.
    pub batch: usize,
    /// Clients of the batch that saw their connection closed within 10 s.
    pub batch_closed: usize,
    /// Of those, how many were told DISCONNECT 0x98 (administrative action) first.
    pub batch_0x98: usize,
    /// Until the last client of the batch saw the close.
    pub batch_max_ms: Option<f64>,
    /// Median client of the batch.
    pub batch_p50_ms: Option<f64>,
    /// How long the revoking command itself took (request to its exit), one and batch.
    pub cli_one_ms: Option<f64>,
    pub cli_batch_ms: Option<f64>,
}

/// The source address of connection `i` among `sources`.
fn source(i: usize, sources: usize) -> IpAddr {
    let k = u8::try_from(i % sources.max(1)).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(k)))
}

pub async fn run(a: &LoadArgs, devices: &Devices) -> Result<Outcome> {
    if let Ok(l) = tollgate_sys::raise_nofile_limit() {
        if (l.soft as usize) < a.connections + 256 {
            bail!(
                "the open-file limit ({}) is too low for {} connections: raise it (ulimit -n)",
                l.soft,
                a.connections
            );
        }
    }
    let sources = if a.sources == 0 {
        a.connections.div_ceil(PER_SOURCE).max(1)
    } else {
        a.sources
    };
    if sources > 250 {
        bail!("at most 250 source addresses (127.0.0.2-251)");
    }
    let pid = a.broker_pid;
    let rss0 = pid.and_then(procstat::rss_kib);
    let cpu0 = pid.and_then(procstat::cpu_seconds);
    let counters = Arc::new(Counters::default());
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let dev = devices.get(&format!("{}{i}", a.prefix), true, false)?;
        let permit = Arc::clone(&sem).acquire_owned().await?;
        let (c, addr) = (Arc::clone(&counters), a.addr);
        let dial = Dial {
            local: Some(source(i, sources)),
            ..Dial::default()
        };
        tasks.push(tokio::spawn(async move {
            let r = client::connect_with(addr, &dev, Protocol::V5, KEEP_ALIVE, &dial).await;
            drop(permit);
            match r {
                Ok((mut conn, _)) => {
                    c.received.fetch_add(1, Ordering::Relaxed);
                    // Idle from now on: do not hold the read buffer the handshake grew.
                    if conn.rbuf.is_empty() {
                        conn.rbuf = BytesMut::new();
                    }
                    Some(conn)
                }
                Err(e) => {
                    c.error(format!("connection {i}: {e:#}"));
                    None
                }
            }
        }));
    }
    let mut held = Vec::with_capacity(a.connections);
    for t in tasks {
        held.push(t.await.ok().flatten());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(procstat::cpu_seconds);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_early = pid.and_then(procstat::rss_kib);
    // Connect-time work (each connection's last-seen record and compliance check, off the
    // connection path) frees memory the allocator returns only after its decay time: the
    // idle figure is taken once that has passed.
    tokio::time::sleep(Duration::from_secs_f64(a.settle.max(0.0))).await;
    let rss1 = pid.and_then(procstat::rss_kib);
    let open = counters.received.load(Ordering::Relaxed);
    eprint!("[{open} connected in {elapsed:.1}s] ");

    let revocation = match (&a.revoke_with, &a.data) {
        (Some(bin), Some(data)) => Some(revoke_timing(a, bin, data, &mut held).await?),
        _ => None,
    };

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
        measured_s: elapsed,
        broker_rss_per_conn_kib_1s: rss0
            .zip(rss_early)
            .map(|(r0, r1)| (r1.saturating_sub(r0)) as f64 / open.max(1) as f64),
        revocation,
        ..Default::default()
    })
}

/// How a watched connection ended.
struct Seen {
    at: Instant,
    disconnect_0x98: bool,
}

/// Wait for the server to end an idle connection; when it did, and whether with 0x98.
fn watch(mut conn: client::Conn) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let r = conn.next().await;
        let at = Instant::now();
        let disconnect_0x98 = matches!(
            r,
            Ok(Packet::Disconnect(ref d)) if d.code == tollgate_mqtt::ReasonCode::ADMINISTRATIVE_ACTION
        );
        Seen {
            at,
            disconnect_0x98,
        }
    })
}

/// Run `tollgate device revoke` with `ids`; returns when it exits.
async fn revoke(bin: &Path, data: &Path, ids: Vec<String>) -> Result<()> {
    let (bin, data) = (bin.to_path_buf(), data.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        let list =
            std::env::temp_dir().join(format!("tollgate-bench-revoke-{}.txt", std::process::id()));
        std::fs::write(&list, ids.join("\n"))?;
        std::process::Command::new(&bin)
            .args(["device", "revoke", "--reason", "benchmark", "--data"])
            .arg(&data)
            .arg("--from-file")
            .arg(&list)
            .output()
            .context("running tollgate device revoke")
    })
    .await??;
    if !out.status.success() {
        bail!(
            "tollgate device revoke failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Revoke the last connected device alone, then a batch of the ones before it, timing each
/// from the request to its clients seeing the close.
async fn revoke_timing(
    a: &LoadArgs,
    bin: &Path,
    data: &Path,
    held: &mut [Option<client::Conn>],
) -> Result<RevocationTiming> {
    // Victims: connected devices from the end, the single one first.
    let mut victims = held
        .iter_mut()
        .enumerate()
        .rev()
        .filter_map(|(i, c)| c.take().map(|c| (format!("{}{i}", a.prefix), c)));
    let mut t = RevocationTiming::default();

    let Some((one_id, one_conn)) = victims.next() else {
        bail!("no connection to revoke");
    };
    let w = watch(one_conn);
    let start = Instant::now();
    revoke(bin, data, vec![one_id]).await?;
    t.cli_one_ms = Some(start.elapsed().as_secs_f64() * 1e3);
    if let Ok(Ok(seen)) = tokio::time::timeout(Duration::from_secs(10), w).await {
        t.one_ms = Some(seen.at.duration_since(start).as_secs_f64() * 1e3);
    }

    let batch: Vec<(String, client::Conn)> = victims.take(a.revoke_batch).collect();
    t.batch = batch.len();
    let (ids, watchers): (Vec<String>, Vec<_>) =
        batch.into_iter().map(|(id, c)| (id, watch(c))).unzip();
    let start = Instant::now();
    revoke(bin, data, ids).await?;
    t.cli_batch_ms = Some(start.elapsed().as_secs_f64() * 1e3);
    let deadline = start + Duration::from_secs(10);
    let mut lat = Vec::with_capacity(watchers.len());
    for w in watchers {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(seen)) = tokio::time::timeout(left, w).await {
            lat.push(seen.at.duration_since(start).as_secs_f64() * 1e3);
            if seen.disconnect_0x98 {
                t.batch_0x98 += 1;
            }
        }
    }
    t.batch_closed = lat.len();
    lat.sort_by(f64::total_cmp);
    t.batch_max_ms = lat.last().copied();
    t.batch_p50_ms = lat.get(lat.len() / 2).copied();
    Ok(t)
}
