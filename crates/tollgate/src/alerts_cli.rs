//! `tollgate alerts ...` and `tollgate device stats`: clients of the admin API's visibility
//! routes, printing for people (or JSON with `--json`).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::client::{self, AdminClient};
use crate::table::{Col, Shown};

/// `tollgate alerts`: list alerts, or act on one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub cmd: Option<AlertsCommand>,
    /// Only alerts that are active now.
    #[arg(long)]
    pub active: bool,
    /// Only this device's alerts.
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: client::ConnectArgs,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// One alert in full (JSON).
    Show {
        /// Alert id.
        id: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Record your judgement of an alert.
    Verdict {
        /// Alert id.
        id: String,
        /// true-positive, false-positive or benign-positive (real, but expected here).
        #[arg(value_parser = ["true-positive", "false-positive", "benign-positive"])]
        verdict: String,
        /// Why.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Silence a detector, a device, or a detector on a device, for a while. Alerts already
    /// raised stay; no new ones are raised or mitigated until it expires.
    Suppress {
        /// Detector name (e.g. traffic_spike, rule:bulk-upload); all detectors if omitted.
        #[arg(long)]
        detector: Option<String>,
        /// Device id; all devices if omitted.
        #[arg(long)]
        device: Option<String>,
        /// How long: 30m, 2h, 7d (at most 90 days).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (recorded with the suppression and in the event log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Suppressions in force.
    Suppressions {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// End a suppression now.
    Unsuppress {
        /// Suppression id.
        id: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// A figure with at most three significant decimals, no trailing zeros.
fn fig(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        let t = format!("{x:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn when(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_i64)
        .map(crate::human::rfc3339_ms)
        .unwrap_or_else(|| "-".into())
}

fn print_alert_line(a: &Value) {
    let who = a
        .get("device")
        .and_then(Value::as_str)
        .or_else(|| a.get("cohort").and_then(Value::as_str))
        .unwrap_or("fleet");
    let started = a.get("started_at_ms").and_then(Value::as_i64).unwrap_or(0);
    let ended = a
        .get("cleared_at_ms")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        });
    let lasted = u64::try_from(ended.saturating_sub(started) / 1000).unwrap_or(0);
    println!(
        "{}  {:<8} {:<8} {:<22} {:<20} since {} ({})",
        s(a, "id"),
        s(a, "state"),
        s(a, "severity"),
        s(a, "detector"),
        who,
        when(a, "started_at_ms"),
        crate::human::span(lasted),
    );
    println!(
        "    {}: observed {}, threshold {}{}; mitigation: {}",
        s(a, "metric"),
        num(a, "observed").map(fig).unwrap_or_default(),
        num(a, "threshold").map(fig).unwrap_or_default(),
        num(a, "baseline")
            .map(|b| format!(", baseline {}", fig(b)))
            .unwrap_or_default(),
        s(a, "mitigation"),
    );
    println!("    {}", s(a, "explanation"));
    if let Some(v) = a.get("verdict").filter(|v| !v.is_null()) {
        println!("    verdict: {} by {}", s(v, "kind"), s(v, "by"));
    }
}

pub async fn alerts(args: AlertsArgs) -> Result<ExitCode> {
    match args.cmd {
        None => {
            let mut path = format!("/api/v1/alerts?active={}", args.active);
            if let Some(d) = &args.device {
                path.push_str(&format!("&device={}", client::path_escape(d)));
            }
            let v = AdminClient::new(&args.conn)?
                .call(Method::GET, &path, None)
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no {}alerts", if args.active { "active " } else { "" });
            }
            for a in &list {
                print_alert_line(a);
            }
        }
        Some(AlertsCommand::Show { id, conn }) => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::GET,
                    &format!("/api/v1/alerts/{}", client::path_escape(&id)),
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Some(AlertsCommand::Verdict {
            id,
            verdict,
            note,
            conn,
        }) => {
            let body = serde_json::json!({ "verdict": verdict.replace('-', "_"), "note": note });
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    &format!("/api/v1/alerts/{}/verdict", client::path_escape(&id)),
                    Some(body),
                )
                .await?;
            print_alert_line(&v);
        }
        Some(AlertsCommand::Suppress {
            detector,
            device,
            duration,
            reason,
            conn,
        }) => {
            let body = serde_json::json!({
                "detector": detector, "device": device, "for": duration, "reason": reason,
            });
            let v = AdminClient::new(&conn)?
                .call(Method::POST, "/api/v1/alerts/suppressions", Some(body))
                .await?;
            println!("suppression {} until {}", s(&v, "id"), when(&v, "until_ms"));
        }
        Some(AlertsCommand::Suppressions { json, conn }) => {
            let v = AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/alerts/suppressions", None)
                .await?;
            let mut list = v.as_array().cloned().unwrap_or_default();
            for x in &mut list {
                x["until_text"] = when(x, "until_ms").into();
            }
            crate::table::print_listing(
                json,
                &v,
                &list,
                &[
                    Col("ID", "id", Shown::Text),
                    Col("DETECTOR", "detector", Shown::Text),
                    Col("DEVICE", "device", Shown::Text),
                    Col("UNTIL", "until_text", Shown::Text),
                    Col("BY", "by", Shown::Text),
                    Col("REASON", "reason", Shown::Text),
                ],
                "no suppressions in force",
            )?;
        }
        Some(AlertsCommand::Unsuppress { id, conn }) => {
            AdminClient::new(&conn)?
                .call(
                    Method::DELETE,
                    &format!("/api/v1/alerts/suppressions/{}", client::path_escape(&id)),
                    None,
                )
                .await?;
            println!("suppression {id} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tollgate device stats ID`.
pub async fn device_stats(id: &str, json: bool, conn: &client::ConnectArgs) -> Result<ExitCode> {
    let v = AdminClient::new(conn)?
        .call(
            Method::GET,
            &format!("/api/v1/devices/{}/stats", client::path_escape(id)),
            None,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let online = v.get("online").and_then(Value::as_bool).unwrap_or(false);
    println!(
        "{id}: {}{}",
        if online { "online" } else { "offline" },
        v.get("connections")
            .and_then(Value::as_u64)
            .filter(|n| *n > 1)
            .map(|n| format!(" ({n} connections)"))
            .unwrap_or_default()
    );
    let learning = v.get("learning").and_then(Value::as_bool).unwrap_or(true);
    let have = v
        .get("baseline_buckets")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let need = v
        .get("baseline_needed")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if learning {
        println!("baseline: learning ({have} of {need} buckets)");
    } else {
        println!("baseline: ready ({have} buckets)");
    }
    if let Some(r) = v.get("rates") {
        println!(
            "rates (per minute): {} messages in ({} B), {} out ({} B), {} denied; {} topics; {} connects",
            fig(num(r, "messages_in_per_min").unwrap_or(0.0)),
            fig(num(r, "bytes_in_per_min").unwrap_or(0.0)),
            fig(num(r, "messages_out_per_min").unwrap_or(0.0)),
            fig(num(r, "bytes_out_per_min").unwrap_or(0.0)),
            fig(num(r, "denied_per_min").unwrap_or(0.0)),
            fig(num(r, "distinct_topics").unwrap_or(0.0)),
            fig(num(r, "connects").unwrap_or(0.0)),
        );
    }
    match v.get("transport").filter(|t| !t.is_null()) {
        Some(t) => println!(
            "transport (TCP_INFO at {}): rtt {} ms (var {}, min {}), retransmissions {}, lost {}, delivery rate {} B/s",
            when(t, "sampled_at_ms"),
            fig(num(t, "rtt_ms").unwrap_or(0.0)),
            fig(num(t, "rttvar_ms").unwrap_or(0.0)),
            fig(num(t, "min_rtt_ms").unwrap_or(0.0)),
            num(t, "retrans_ratio")
                .map(|r| format!("{}%", fig(r * 100.0)))
                .unwrap_or_else(|| "-".into()),
            t.get("lost").and_then(Value::as_u64).unwrap_or(0),
            t.get("delivery_rate").and_then(Value::as_u64).unwrap_or(0),
        ),
        None => println!("transport: no TCP reading yet"),
    }
    for b in v
        .get("baseline")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  baseline {}: median {}, MAD {} ({} samples)",
            s(b, "metric"),
            fig(num(b, "median").unwrap_or(0.0)),
            fig(num(b, "mad").unwrap_or(0.0)),
            b.get("samples").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    for src in v
        .get("sources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  source {}: {} connects, last {}",
            s(src, "network"),
            src.get("connects").and_then(Value::as_u64).unwrap_or(0),
            when(src, "last_seen_ms")
        );
    }
    let alerts = v
        .get("alerts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if alerts.is_empty() {
        println!("no active alerts");
    }
    for a in &alerts {
        print_alert_line(a);
    }
    Ok(ExitCode::SUCCESS)
}
