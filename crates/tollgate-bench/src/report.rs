//! Turning raw outcomes into a table of medians with min–max, and ratios against the peers.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::brokers::Kind;

#[derive(Debug, Serialize)]
pub struct Sample {
    pub label: String,
    pub broker: String,
    pub outcome: serde_json::Value,
}

fn f(v: &serde_json::Value, k: &str) -> Option<f64> {
    v.get(k).and_then(|x| x.as_f64())
}

pub fn one_line(o: &serde_json::Value) -> String {
    let mut s = format!(
        "{:>12.0} {}",
        f(o, "throughput").unwrap_or(0.0),
        o["unit"].as_str().unwrap_or("")
    );
    if let Some(p99) = f(o, "p99_us") {
        let _ = write!(
            s,
            "  p50 {:.0}µs p99 {:.0}µs",
            f(o, "p50_us").unwrap_or(0.0),
            p99
        );
    }
    if let Some(k) = f(o, "broker_rss_per_conn_kib") {
        let _ = write!(s, "  {k:.1} KiB/conn");
    }
    if let Some(c) = f(o, "broker_cpu_s") {
        let _ = write!(s, "  broker cpu {c:.2}s");
    }
    if let Some(c) = f(o, "gen_cpu_s") {
        let _ = write!(s, "  gen cpu {c:.2}s");
    }
    let errors = o["errors"].as_u64().unwrap_or(0);
    if errors > 0 {
        let _ = write!(
            s,
            "  ERRORS {errors}: {}",
            o["first_error"].as_str().unwrap_or("")
        );
    }
    s
}

fn median(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((med, v[0], v[n - 1]))
}

fn cell(samples: &[&Sample], key: &str, scale: f64, digits: usize) -> String {
    let vals: Vec<f64> = samples
        .iter()
        .filter_map(|s| f(&s.outcome, key))
        .map(|x| x * scale)
        .collect();
    match median(vals) {
        None => "–".into(),
        Some((m, lo, hi)) if (hi - lo).abs() < f64::EPSILON => format!("{m:.digits$}"),
        Some((m, lo, hi)) => format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})"),
    }
}

pub fn markdown(
    samples: &[Sample],
    kinds: &[Kind],
    repeat: usize,
    duration: f64,
    connections: usize,
) -> String {
    let mut by: BTreeMap<(usize, String), Vec<&Sample>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for s in samples {
        if !order.contains(&s.label) {
            order.push(s.label.clone());
        }
    }
    for s in samples {
        let idx = order.iter().position(|l| l == &s.label).unwrap_or(0);
        by.entry((idx, s.broker.clone())).or_default().push(s);
    }
    let mut out = String::new();
    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "# Tollgate benchmark — {}\n",
        time::OffsetDateTime::now_utc().date()
    );
    let _ = writeln!(
        out,
        "Machine: {host}, {} CPUs. Broker pinned to CPU 0, generator to CPU 1. mTLS (client certificates required, one per simulated device), \
         MQTT 3.1.1, 64-byte payloads, {duration} s measured per run after warm-up, {repeat} run(s) per cell, brokers alternated. \
         Cells are medians with (min–max). Idle connections: {connections}.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(out, "| scenario | broker | throughput | per broker CPU-second | p50 / p99 / p99.9 µs | broker CPU s | broker peak RSS MiB | KiB / idle conn (at 1 s) | generator CPU s | errors |");
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for ((idx, broker), ss) in &by {
        let label = &order[*idx];
        let unit = ss
            .first()
            .and_then(|s| s.outcome["unit"].as_str())
            .unwrap_or("");
        let lat =
            if ss.iter().any(|s| f(&s.outcome, "p99_us").is_some()) && label.contains("latency") {
                format!(
                    "{} / {} / {}",
                    cell(ss, "p50_us", 1.0, 0),
                    cell(ss, "p99_us", 1.0, 0),
                    cell(ss, "p999_us", 1.0, 0)
                )
            } else {
                "".into()
            };
        let errors: u64 = ss
            .iter()
            .map(|s| s.outcome["errors"].as_u64().unwrap_or(1))
            .sum();
        let per_conn = if ss
            .iter()
            .any(|s| f(&s.outcome, "broker_rss_per_conn_kib_1s").is_some())
        {
            format!(
                "{} ({})",
                cell(ss, "broker_rss_per_conn_kib", 1.0, 1),
                cell(ss, "broker_rss_per_conn_kib_1s", 1.0, 1)
            )
        } else {
            cell(ss, "broker_rss_per_conn_kib", 1.0, 1)
        };
        let _ = writeln!(
            out,
            "| {label} | {broker} | {} {unit} | {} | {lat} | {} | {} | {} | {} | {errors} |",
            cell(ss, "throughput", 1.0, 0),
            cell(ss, "per_broker_cpu_s", 1.0, 0),
            cell(ss, "broker_cpu_s", 1.0, 2),
            cell(ss, "broker_peak_rss_kib", 1.0 / 1024.0, 1),
            per_conn,
            cell(ss, "gen_cpu_s", 1.0, 2),
        );
    }
    revocation_table(&mut out, &by, &order);
    if kinds.contains(&Kind::Tollgate) && kinds.len() > 1 {
        let _ = writeln!(out, "\n## Ratios (Tollgate ÷ peer, medians)\n");
        let peers: Vec<&Kind> = kinds.iter().filter(|k| **k != Kind::Tollgate).collect();
        let _ = write!(out, "| scenario | metric |");
        for p in &peers {
            let _ = write!(out, " vs {} |", p.name());
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "| --- | --- |{}", " --- |".repeat(peers.len()));
        for (idx, label) in order.iter().enumerate() {
            let metric = if label.contains("latency") {
                "p99_us"
            } else if label.contains("connections") {
                "broker_rss_per_conn_kib"
            } else if label.contains("handshakes") {
                // The generator saturates before the broker here: compare work per broker CPU.
                "per_broker_cpu_s"
            } else {
                "throughput"
            };
            let med = |b: &str| {
                by.get(&(idx, b.to_string()))
                    .and_then(|ss| {
                        median(ss.iter().filter_map(|s| f(&s.outcome, metric)).collect())
                    })
                    .map(|m| m.0)
            };
            let _ = write!(out, "| {label} | {metric} |");
            for p in &peers {
                match (med("tollgate"), med(p.name())) {
                    (Some(t), Some(o)) if o > 0.0 => {
                        let _ = write!(out, " {} |", ratio(t / o));
                    }
                    _ => {
                        let _ = write!(out, " – |");
                    }
                }
            }
            let _ = writeln!(out);
        }
    }
    out
}

/// The scale scenario's revocation timing (Tollgate only), when it ran: milliseconds from
/// the revocation request (`tollgate device revoke` started) to the client seeing its
/// connection end, medians of the repetitions with (min–max).
fn revocation_table(
    out: &mut String,
    by: &BTreeMap<(usize, String), Vec<&Sample>>,
    order: &[String],
) {
    let rows: Vec<(&String, &String, Vec<Sample>)> = by
        .iter()
        .filter_map(|((idx, broker), ss)| {
            let label = order.get(*idx)?;
            let flat: Vec<Sample> = ss
                .iter()
                .filter_map(|s| {
                    let r = s.outcome.get("revocation")?;
                    let mut o = r.clone();
                    o["connect_s"] = s.outcome["measured_s"].clone();
                    Some(Sample {
                        label: s.label.clone(),
                        broker: s.broker.clone(),
                        outcome: o,
                    })
                })
                .collect();
            (!flat.is_empty()).then_some((label, broker, flat))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Revocation at scale (ms from the request to the client seeing the close)\n"
    );
    let _ = writeln!(out, "| scenario | broker | connect s | one device | batch: devices | closed within 10 s | told 0x98 | batch p50 | batch last | CLI one / batch |");
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (label, broker, ss) in rows {
        let refs: Vec<&Sample> = ss.iter().collect();
        let _ = writeln!(
            out,
            "| {label} | {broker} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            cell(&refs, "connect_s", 1.0, 1),
            cell(&refs, "one_ms", 1.0, 0),
            cell(&refs, "batch", 1.0, 0),
            cell(&refs, "batch_closed", 1.0, 0),
            cell(&refs, "batch_0x98", 1.0, 0),
            cell(&refs, "batch_p50_ms", 1.0, 0),
            cell(&refs, "batch_max_ms", 1.0, 0),
            cell(&refs, "cli_one_ms", 1.0, 0),
            cell(&refs, "cli_batch_ms", 1.0, 0),
        );
    }
}

/// A ratio with two decimals, or three significant digits when small.
fn ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.3}×")
    }
}
