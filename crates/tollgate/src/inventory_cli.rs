//! The CLI's inventory and compliance commands: `model`, `sbom`, `advisories`, `vex` and
//! `compliance`, each a client of the admin API.
//!
//! Documents are checked here before anything is sent (size, then a full parse with the same
//! code the server uses), so a bad file is reported precisely and nothing of it reaches the
//! server; the server checks again. Advisory folders and `all.zip` archives are read twice:
//! once to validate every record, once to send them in bounded batches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Subcommand;
use hyper::Method;
use tollgate_compliance::{osv, sbom::Sbom, vex, MAX_DOCUMENT_BYTES};

use crate::client::{self, AdminClient};
use crate::table::{self, Col, Shown};

/// Records per advisory batch, and the batch's byte budget.
const BATCH_RECORDS: usize = 2000;
const BATCH_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Record a supplier's device model: how its firmware versions are ordered and the lowest
    /// firmware accepted.
    Add {
        /// Model name, as the supplier's manufacturing certificates spell it.
        name: String,
        /// The supplier that makes it.
        #[arg(long)]
        supplier: String,
        /// `semver`, or `ordered` with --firmware-order for opaque version strings.
        #[arg(long, default_value = "semver")]
        scheme: String,
        /// Firmware versions oldest first, comma-separated (the `ordered` scheme).
        #[arg(long, value_delimiter = ',', value_name = "V1,V2,...")]
        firmware_order: Vec<String>,
        /// The lowest firmware accepted (used by `min_firmware = true` rules).
        #[arg(long, value_name = "VERSION")]
        min_firmware: Option<String>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// List models with their SBOMs and device counts.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SbomCommand {
    /// Import a model firmware's SBOM (CycloneDX JSON 1.4–1.6 or SPDX 2.3 JSON); reports the
    /// CISA minimum elements it lacks. Devices running that firmware are re-evaluated.
    Import {
        /// The SBOM file.
        file: PathBuf,
        /// Model name as recorded (for a bootstrap-enrolled device, the one from its
        /// manufacturing certificate).
        #[arg(long)]
        model: String,
        /// Firmware version the SBOM describes.
        #[arg(long)]
        firmware: String,
        /// The supplier, when two suppliers use the model name.
        #[arg(long)]
        supplier: Option<String>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// List imported SBOMs.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdvisoriesCommand {
    /// Import OSV advisories from a folder of JSON records or an osv.dev `all.zip`, offline.
    /// Records not newer (by `modified`) than those stored are skipped; every record is
    /// checked before any is sent.
    Import {
        /// Folder or .zip.
        path: PathBuf,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Search the advisory database (id, alias or package name).
    List {
        /// Text to look for.
        query: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,

        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// The suppliers, models and devices an advisory hits.
    Affected {
        /// Advisory id or alias (PYSEC-..., GHSA-..., CVE-...).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum VexCommand {
    /// Import VEX statements (OpenVEX, or CycloneDX VEX) for a model. Without --model, each
    /// statement's product must name it: pkg:generic/SUPPLIER/MODEL[@FIRMWARE].
    Import {
        /// The VEX file.
        file: PathBuf,
        /// The model the statements are about.
        #[arg(long)]
        model: Option<String>,
        /// The supplier, when two suppliers use the model name.
        #[arg(long, requires = "model")]
        supplier: Option<String>,
        /// Only this firmware (default: every firmware, so decisions carry over updates).
        #[arg(long, requires = "model", conflicts_with_all = ["firmware_from", "firmware_before"])]
        firmware: Option<String>,
        /// Firmware from this version on (inclusive).
        #[arg(long, requires = "model")]
        firmware_from: Option<String>,
        /// Firmware before this version (exclusive).
        #[arg(long, requires = "model")]
        firmware_before: Option<String>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// Evaluate the fleet against the profile in force and apply the verdicts; with --dry-run
    /// (or --profile) show what would change and apply nothing.
    Evaluate {
        /// Apply nothing.
        #[arg(long)]
        dry_run: bool,
        /// A candidate profile to try instead of the one in force (implies --dry-run).
        #[arg(long, value_name = "FILE")]
        profile: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Per device: state, failing rules, vulnerabilities with severity and fix version.
    Report {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// The profile in force (or why it was refused), the advisory database and counts.
    Status {
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Check a profile file offline: prints every error with its line and column.
    Check {
        /// The profile.
        file: PathBuf,
    },
    /// Waive a rule for one device or one model until the waiver expires.
    Waive {
        /// Rule id.
        #[arg(long)]
        rule: String,
        /// The device.
        #[arg(long, conflicts_with = "model", required_unless_present = "model")]
        device: Option<String>,
        /// Every device of this model.
        #[arg(long)]
        model: Option<String>,
        /// Why (recorded with your name).
        #[arg(long)]
        reason: String,
        /// How long: 90s, 30m, 72h, 30d.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: u64,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// List waivers.
    Waivers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Remove a waiver.
    Unwaive {
        /// Waiver id.
        id: i64,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

fn parse_duration(s: &str) -> Result<u64, String> {
    tollgate_compliance::profile::parse_duration(s)
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a duration like 90s, 30m, 72h or 30d"))
}

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Read a document, refusing one over the limit before reading it.
fn read_document(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_DOCUMENT_BYTES {
        bail!(
            "{}: {len} bytes, over the limit of {MAX_DOCUMENT_BYTES} bytes",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Read the records at `path` into JSON-array batches of at most [`BATCH_RECORDS`] records and
/// about [`BATCH_BYTES`], handing each to `tx`; records not newer than the `stored` ones are
/// left out. Returns how many were left out.
fn read_batches(
    path: &Path,
    stored: &HashMap<String, String>,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    progress: &indicatif::ProgressBar,
) -> Result<u64, tollgate_compliance::ComplianceError> {
    let mut batch: Vec<u8> = Vec::new();
    let mut in_batch = 0usize;
    let mut skipped = 0u64;
    osv::read_path(path, |r| {
        progress.inc(1);
        let a = osv::Advisory::parse(&r.bytes, &r.origin)?;
        if stored
            .get(&a.id)
            .is_some_and(|old| !osv::newer(&a.modified, old))
        {
            skipped += 1;
            return Ok(());
        }
        if in_batch > 0 && (in_batch >= BATCH_RECORDS || batch.len() + r.bytes.len() > BATCH_BYTES)
        {
            batch.push(b']');
            let _ = tx.blocking_send(std::mem::take(&mut batch));
            in_batch = 0;
        }
        batch.push(if in_batch == 0 { b'[' } else { b',' });
        batch.extend_from_slice(&r.bytes);
        in_batch += 1;
        Ok(())
    })?;
    if in_batch > 0 {
        batch.push(b']');
        let _ = tx.blocking_send(batch);
    }
    Ok(skipped)
}

/// GET a JSON document from the admin API.
async fn get(conn: &client::ConnectArgs, path: &str) -> Result<serde_json::Value> {
    AdminClient::new(conn)?.call(Method::GET, path, None).await
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn model(cmd: ModelCommand) -> Result<ExitCode> {
    match cmd {
        ModelCommand::Add {
            name,
            supplier,
            scheme,
            firmware_order,
            min_firmware,
            conn,
        } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    "/api/v1/models",
                    Some(serde_json::json!({
                        "supplier": supplier, "name": name, "scheme": scheme,
                        "firmware_order": firmware_order, "min_firmware": min_firmware,
                    })),
                )
                .await?;
            print_json(&v)?;
        }
        ModelCommand::List { json, conn } => {
            let v = get(&conn, "/api/v1/models").await?;
            table::print_listing(
                json,
                &v,
                v.as_array().map_or(&[][..], Vec::as_slice),
                &[
                    Col("MODEL", "name", Shown::Text),
                    Col("SUPPLIER", "supplier", Shown::Text),
                    Col("SCHEME", "scheme", Shown::Text),
                    Col("MIN FIRMWARE", "min_firmware", Shown::Text),
                    Col("SBOMS", "sboms", Shown::Text),
                    Col("DEVICES", "devices", Shown::Text),
                ],
                "no models",
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn sbom(cmd: SbomCommand) -> Result<ExitCode> {
    match cmd {
        SbomCommand::Import {
            file,
            model,
            firmware,
            supplier,
            conn,
        } => {
            let step = crate::progress::spinner("reading and checking the SBOM");
            let doc = read_document(&file)?;
            let parsed = Sbom::parse(&doc).with_context(|| format!("{}", file.display()));
            step.finish_and_clear();
            let parsed = parsed?;
            let path = format!(
                "/api/v1/sboms{}",
                query(&[
                    ("model", Some(&model)),
                    ("firmware", Some(&firmware)),
                    ("supplier", supplier.as_deref()),
                ])
            );
            let step = crate::progress::spinner(&format!(
                "uploading {} components; the server matches them against the advisories",
                parsed.components.len()
            ));
            let v = AdminClient::new(&conn)?
                .call_raw(Method::POST, &path, "application/json", Bytes::from(doc))
                .await;
            step.finish_and_clear();
            let v = v?;
            eprintln!(
                "Imported {} ({} components) for {model} firmware {firmware}.",
                parsed.format,
                parsed.components.len()
            );
            let gaps = v["missing_elements"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if gaps.is_empty() {
                eprintln!("It has every CISA minimum element.");
            } else {
                eprintln!("Missing CISA minimum elements:");
                for g in gaps {
                    eprintln!(
                        "  {}: {} missing{}",
                        g["element"].as_str().unwrap_or_default(),
                        g["missing"],
                        g["examples"]
                            .as_array()
                            .filter(|e| !e.is_empty())
                            .map(|e| format!(
                                " (e.g. {})",
                                e.iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                            .unwrap_or_default()
                    );
                }
            }
            print_json(&v)?;
        }
        SbomCommand::List { json, conn } => {
            let v = get(&conn, "/api/v1/sboms").await?;
            table::print_listing(
                json,
                &v,
                v.as_array().map_or(&[][..], Vec::as_slice),
                &[
                    Col("MODEL", "model", Shown::Text),
                    Col("FIRMWARE", "firmware", Shown::Text),
                    Col("SUPPLIER", "supplier", Shown::Text),
                    Col("FORMAT", "format", Shown::Text),
                    Col("COMPONENTS", "components", Shown::Text),
                    Col("VULNERABLE", "vulnerabilities", Shown::Text),
                    Col("IMPORTED", "imported_at", Shown::Time),
                    Col("BY", "imported_by", Shown::Text),
                ],
                "no SBOMs",
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn advisories(cmd: AdvisoriesCommand) -> Result<ExitCode> {
    match cmd {
        AdvisoriesCommand::Import { path, conn } => {
            // First pass: every record must parse, or nothing is sent.
            let checking = crate::progress::spinner("checking records");
            let checked = osv::read_path(&path, |r| {
                checking.inc(1);
                osv::Advisory::parse(&r.bytes, &r.origin).map(|_| ())
            })
            .with_context(|| format!("checking {}", path.display()));
            checking.finish_and_clear();
            let checked = checked?;
            let client = AdminClient::new(&conn)?;
            // What the server has: records not newer than those are not sent at all.
            let stored = client
                .call(Method::GET, "/api/v1/advisories/modified", None)
                .await?;
            let stored: HashMap<String, String> =
                serde_json::from_value(stored["records"].clone()).unwrap_or_default();
            // Second pass: batches of raw records (their bytes unchanged: the database hash is
            // over what the files say), read on a thread and sent as they fill.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
            let progress = crate::progress::bar(checked as u64, "importing");
            let reader = {
                let path = path.clone();
                let progress = progress.clone();
                std::thread::spawn(move || read_batches(&path, &stored, &tx, &progress))
            };
            let mut total =
                serde_json::json!({"added": 0, "updated": 0, "unchanged": 0, "reevaluated": 0});
            let mut last = serde_json::Value::Null;
            let mut sent = 0usize;
            let mut failed: Option<anyhow::Error> = None;
            while let Some(b) = rx.recv().await {
                if failed.is_some() {
                    continue; // drain, so the reader finishes
                }
                match client
                    .call_raw(
                        Method::POST,
                        "/api/v1/advisories",
                        "application/json",
                        Bytes::from(b),
                    )
                    .await
                {
                    Ok(v) => {
                        for k in ["added", "updated", "unchanged", "reevaluated"] {
                            let sum = total[k].as_u64().unwrap_or(0) + v[k].as_u64().unwrap_or(0);
                            total[k] = sum.into();
                        }
                        last = v;
                        sent += 1;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            progress.finish_and_clear();
            let skipped = match reader.join() {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => bail!("reading {}: {e}", path.display()),
                Err(_) => bail!("reading {}: the reader thread failed", path.display()),
            };
            let unchanged = total["unchanged"].as_u64().unwrap_or(0) + skipped;
            total["unchanged"] = unchanged.into();
            if let Some(e) = failed {
                return Err(e.context(format!(
                    "importing advisories ({sent} batches of up to {BATCH_RECORDS} records were stored before the failure; importing again skips them)"
                )));
            }
            total["records"] = checked.into();
            if !last.is_null() {
                total["total"] = last["total"].clone();
                total["database"] = last["database"].clone();
            }
            eprintln!(
                "{checked} records read: {} added, {} updated, {} unchanged; {} devices re-evaluated.",
                total["added"], total["updated"], total["unchanged"], total["reevaluated"]
            );
            print_json(&total)?;
        }
        AdvisoriesCommand::List {
            query: q,
            json,
            limit,
            conn,
        } => {
            let limit = limit.to_string();
            let path = format!(
                "/api/v1/advisories{}",
                query(&[("q", q.as_deref()), ("limit", Some(&limit))])
            );
            let v = get(&conn, &path).await?;
            if !json {
                println!(
                    "{} advisories in the database {}",
                    v.get("total")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0),
                    v.get("database")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                );
            }
            table::print_listing(
                json,
                &v,
                v.get("advisories")
                    .and_then(serde_json::Value::as_array)
                    .map_or(&[][..], Vec::as_slice),
                &[
                    Col("ID", "id", Shown::Text),
                    Col("ALIASES", "aliases", Shown::Text),
                    Col("SEVERITY", "severity", Shown::Text),
                    Col("MODIFIED", "modified", Shown::Time),
                    Col("SUMMARY", "summary", Shown::Text),
                ],
                "no advisories match",
            )?;
        }
        AdvisoriesCommand::Affected { id, json, conn } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::GET,
                    &format!("/api/v1/advisories/{}/affected", enc(&id)),
                    None,
                )
                .await?;
            if json {
                print_json(&v)?;
            } else {
                let a = &v["advisory"];
                println!(
                    "{} ({}) {}",
                    a["id"].as_str().unwrap_or_default(),
                    a["severity"].as_str().unwrap_or("unrated"),
                    a["summary"].as_str().unwrap_or_default()
                );
                println!("database {}", v["database"].as_str().unwrap_or_default());
                let list = |k: &str| -> String {
                    v[k].as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "none".into())
                };
                println!("suppliers: {}", list("suppliers"));
                println!("models:");
                for m in v["models"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "  {} {} firmware {}: {}{}{}",
                        m["supplier"].as_str().unwrap_or_default(),
                        m["model"].as_str().unwrap_or_default(),
                        m["firmware"].as_str().unwrap_or_default(),
                        m["component"].as_str().unwrap_or_default(),
                        m["fixed"]
                            .as_str()
                            .map(|f| format!(", fixed in {f}"))
                            .unwrap_or_default(),
                        m["vex"]
                            .as_str()
                            .map(|s| format!(" (VEX: {s})"))
                            .unwrap_or_default(),
                    );
                }
                println!("devices: {}", list("devices"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn vex(cmd: VexCommand) -> Result<ExitCode> {
    let VexCommand::Import {
        file,
        model,
        supplier,
        firmware,
        firmware_from,
        firmware_before,
        conn,
    } = cmd;
    let doc = read_document(&file)?;
    let parsed = vex::parse(&doc).with_context(|| format!("{}", file.display()))?;
    let path = format!(
        "/api/v1/vex{}",
        query(&[
            ("model", model.as_deref()),
            ("supplier", supplier.as_deref()),
            ("firmware", firmware.as_deref()),
            ("firmware_from", firmware_from.as_deref()),
            ("firmware_before", firmware_before.as_deref()),
        ])
    );
    let v = AdminClient::new(&conn)?
        .call_raw(Method::POST, &path, "application/json", Bytes::from(doc))
        .await?;
    eprintln!(
        "Imported {} statement(s) from {} ({}).",
        v["statements"],
        file.display(),
        parsed.format
    );
    Ok(ExitCode::SUCCESS)
}

fn print_evaluation(v: &serde_json::Value) {
    let dry = v["dry_run"].as_bool().unwrap_or(false);
    println!(
        "{} devices against {} rules ({} ms): {} noncompliant, {} quarantined{}.",
        v["devices"],
        v["rules"],
        v["elapsed_ms"],
        v["noncompliant"],
        v["quarantined"],
        if dry {
            " (dry run: nothing applied)"
        } else {
            ""
        }
    );
    let changes = v["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("No device changes state.");
    }
    for c in changes {
        println!(
            "  {}: {} -> {}{}",
            c["device"].as_str().unwrap_or_default(),
            c["from"].as_str().unwrap_or_default(),
            c["to"].as_str().unwrap_or_default(),
            c["failing_rules"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(|a| format!(
                    " (fails {})",
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .unwrap_or_default()
        );
    }
}

fn print_report(v: &serde_json::Value) {
    let devices = v.as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        println!("No devices.");
    }
    for d in devices {
        let inv = &d["inventory"];
        println!(
            "{}  {}  {} {} firmware {}",
            d["device"].as_str().unwrap_or_default(),
            d["state"].as_str().unwrap_or_default(),
            inv["supplier"].as_str().unwrap_or("-"),
            inv["model"].as_str().unwrap_or("-"),
            inv["firmware"].as_str().unwrap_or("-"),
        );
        for f in d["findings"].as_array().cloned().unwrap_or_default() {
            let state = match f["state"].as_str() {
                Some("grace") => format!("in grace until {}", human_time(f["until"].as_i64())),
                Some("waived") => format!("waived until {}", human_time(f["until"].as_i64())),
                Some(s) => s.to_owned(),
                None => String::new(),
            };
            println!(
                "    [{}] {} ({}, {}): {}",
                f["rule"].as_str().unwrap_or_default(),
                state,
                f["severity"].as_str().unwrap_or_default(),
                f["action"].as_str().unwrap_or_default(),
                f["message"].as_str().unwrap_or_default()
            );
        }
        for x in d["vulnerabilities"].as_array().cloned().unwrap_or_default() {
            println!(
                "    {} {} in {}{}{}",
                x["id"].as_str().unwrap_or_default(),
                x["severity"].as_str().unwrap_or("unrated"),
                x["component"].as_str().unwrap_or_default(),
                x["fixed"]
                    .as_str()
                    .map(|f| format!(", fixed in {f}"))
                    .unwrap_or_default(),
                x["vex"]["status"]
                    .as_str()
                    .map(|s| format!(" (VEX: {s})"))
                    .unwrap_or_default(),
            );
        }
    }
}

/// Unix seconds as an RFC 3339 UTC time.
fn human_time(t: Option<i64>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "?".into())
}

pub async fn compliance(cmd: ComplianceCommand) -> Result<ExitCode> {
    match cmd {
        ComplianceCommand::Evaluate {
            dry_run,
            profile,
            json,
            conn,
        } => {
            let text = match &profile {
                Some(p) => {
                    let t = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    tollgate_compliance::profile::Profile::parse(&t, &p.display().to_string())?;
                    Some(t)
                }
                None => None,
            };
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    "/api/v1/compliance/evaluate",
                    Some(serde_json::json!({ "dry_run": dry_run || text.is_some(), "profile": text })),
                )
                .await?;
            if json {
                print_json(&v)?;
            } else {
                print_evaluation(&v);
            }
        }
        ComplianceCommand::Report { device, json, conn } => {
            let path = format!(
                "/api/v1/compliance{}",
                query(&[("device", device.as_deref())])
            );
            let v = AdminClient::new(&conn)?
                .call(Method::GET, &path, None)
                .await?;
            if json {
                print_json(&v)?;
            } else {
                print_report(&v);
            }
        }
        ComplianceCommand::Status { conn } => {
            print_json(&get(&conn, "/api/v1/compliance/status").await?)?;
        }
        ComplianceCommand::Check { file } => {
            let t = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            match tollgate_compliance::profile::Profile::parse(&t, &file.display().to_string()) {
                Ok(p) => println!("{}: {} rules, OK", file.display(), p.rules.len()),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        ComplianceCommand::Waive {
            rule,
            device,
            model,
            reason,
            duration,
            conn,
        } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    "/api/v1/compliance/waivers",
                    Some(serde_json::json!({
                        "rule": rule, "device": device, "model": model,
                        "reason": reason, "expires_in_secs": duration,
                    })),
                )
                .await?;
            eprintln!(
                "Waiver {} granted until {}.",
                v["id"],
                human_time(v["expires_at"].as_i64())
            );
            print_json(&v)?;
        }
        ComplianceCommand::Waivers { json, conn } => {
            let v = get(&conn, "/api/v1/compliance/waivers").await?;
            table::print_listing(
                json,
                &v,
                v.as_array().map_or(&[][..], Vec::as_slice),
                &[
                    Col("ID", "id", Shown::Text),
                    Col("RULE", "rule", Shown::Text),
                    Col("DEVICE", "device", Shown::Text),
                    Col("MODEL", "model", Shown::Text),
                    Col("UNTIL", "expires_at", Shown::Time),
                    Col("EXPIRED", "expired", Shown::Text),
                    Col("BY", "author", Shown::Text),
                    Col("REASON", "reason", Shown::Text),
                ],
                "no waivers",
            )?;
        }
        ComplianceCommand::Unwaive { id, conn } => {
            AdminClient::new(&conn)?
                .call(
                    Method::DELETE,
                    &format!("/api/v1/compliance/waivers/{id}"),
                    None,
                )
                .await?;
            eprintln!("Waiver {id} removed.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
