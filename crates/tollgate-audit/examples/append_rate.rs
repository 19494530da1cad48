//! How fast the audit log takes events, and at what cost in memory and disk: appends
//! `--events` realistic event entries in group commits of `--batch` (each batch written and
//! fsynced, as the server's writer does), signs a checkpoint every `--checkpoint-ms`, and
//! prints one JSON line: events per second, batch commit latency (p50, p99, max), peak
//! resident memory growth, bytes on disk per million events, and the time to reopen
//! (re-hash) the log.
//!
//! `cargo run --release -p tollgate-audit --example append_rate -- --events 1000000`
//! (`bench/audit.sh` runs it several times and reports medians).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // a benchmark: a panic is a failure

use std::time::{Duration, Instant};

use tollgate_audit::log::Log;
use tollgate_audit::note::Signer;

fn vm(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn du(dir: &std::path::Path) -> (u64, u64) {
    let mut entries = 0;
    let mut all = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        all += len;
        if e.file_name() == "entries.jsonl" {
            entries = len;
        }
    }
    (entries, all)
}

fn main() {
    let n = arg("--events", 1_000_000);
    let batch = arg("--batch", 512).max(1);
    let every = Duration::from_millis(arg("--checkpoint-ms", 5_000));
    let dir = std::env::temp_dir().join(format!("tollgate-audit-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = Signer::generate_pkcs8().unwrap();
    let (mut log, _) = Log::open(&dir, "bench.example/audit", &key, None).unwrap();
    let rss0 = vm("VmRSS:");
    let mut lat: Vec<u64> = Vec::with_capacity((n / batch + 1) as usize);
    let start = Instant::now();
    let mut last_cp = Instant::now();
    let mut checkpoints = 0;
    let mut seq = 0u64;
    while seq < n {
        let t = Instant::now();
        for _ in 0..batch.min(n - seq) {
            seq += 1;
            // The size and shape of a connection_accepted event.
            let line = format!(
                r#"{{"seq":{seq},"ts":"2026-12-01T12:00:00.{:09}Z","type":"connection_accepted","device":"sensor-{:05}","client_id":"sensor-{:05}","protocol":"5.0","addr":"10.1.{}.{}:{}","serial":"{:032x}","session_present":false,"tls_resumed":true}}"#,
                seq % 1_000_000_000,
                seq % 50_000,
                seq % 50_000,
                (seq / 250) % 250,
                seq % 250,
                30_000 + seq % 30_000,
                u128::from(seq).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
            );
            log.append(line.as_bytes()).unwrap();
        }
        log.sync().unwrap();
        lat.push(t.elapsed().as_micros() as u64);
        if last_cp.elapsed() >= every {
            log.checkpoint().unwrap();
            checkpoints += 1;
            last_cp = Instant::now();
        }
    }
    log.checkpoint().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let rss_peak = vm("VmHWM:");
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    let (entries_bytes, all_bytes) = du(&dir);
    drop(log);
    let t = Instant::now();
    let (log, opened) = Log::open(&dir, "bench.example/audit", &key, None).unwrap();
    let reopen = t.elapsed().as_secs_f64();
    assert!(opened.refusing.is_none());
    assert_eq!(log.size(), n + 1);
    drop(log);
    let per_million = |b: u64| b as f64 * 1e6 / n as f64 / 1e6;
    println!(
        "{{\"events\":{n},\"batch\":{batch},\"events_per_s\":{:.0},\"commit_us_p50\":{},\"commit_us_p99\":{},\"commit_us_max\":{},\"checkpoints\":{checkpoints},\"rss_growth_kib\":{},\"entries_mb_per_million\":{:.1},\"disk_mb_per_million\":{:.1},\"reopen_s\":{:.2}}}",
        n as f64 / secs,
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0),
        rss_peak.saturating_sub(rss0),
        per_million(entries_bytes),
        per_million(all_bytes),
        reopen,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
