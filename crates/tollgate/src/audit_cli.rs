//! `tollgate audit ...`: the audit log's key, checkpoints, entries, proofs, export and
//! verification. Every subcommand is a client of the admin API, except `verify --export`,
//! which needs nothing but the exported files and the public key (exit code 0 clean,
//! 1 tampered, 2 a key or format problem).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;
use tollgate_audit::log::{CHECKPOINT, CHECKPOINTS, ENTRIES};
use tollgate_audit::note::Verifier;
use tollgate_audit::verify::{verify_dir_with_progress, Report};

use crate::client::{self, AdminClient};
use crate::table::{Col, Shown};

/// `tollgate audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the log's public key in the signed-note verifier-key form
    /// (`<name>+<key id>+<base64 key>`): give it to whoever verifies exports.
    Key {
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Sign a checkpoint over every entry now and print it.
    Checkpoint {
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Print entries (one JSON object per line).
    Entries {
        /// First index.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Print JSON (each entry with its index and leaf data).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// An inclusion proof (`--index N`) or a consistency proof (`--from-size M`), against the
    /// latest checkpoint. Printed as the C2SP tlog-proof text unless `--json`.
    Proof(ProofArgs),
    /// Check the log. With `--export DIR --key KEY`, offline: nothing but the exported files
    /// and the public key is used. Otherwise the running server re-hashes its log in full.
    Verify(VerifyArgs),
    /// The configuration audit, now: every finding with its severity, resource, evidence and
    /// remediation. Exit code by the highest severity not suppressed: 0 none (or info only),
    /// 2 low, 3 medium, 4 high, 5 critical (1: it could not run).
    Config {
        /// Print JSON.
        #[arg(long, conflicts_with = "sarif")]
        json: bool,
        /// Print SARIF 2.1.0 (for code-scanning dashboards).
        #[arg(long)]
        sarif: bool,
        /// Include resolved findings.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Suppress a configuration-audit rule, on one resource or all, for a while, with a reason
    /// (recorded, and written to the audit log).
    Suppress {
        /// The rule id (`tls12-allowed`, `device-no-sbom`, ...).
        rule: String,
        /// Only this resource (`device:pump-7`, `file:ca/root.key`, ...).
        #[arg(long)]
        resource: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// How long: 12h, 30d (at most a year).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Suppressions of configuration-audit findings in force.
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
    /// Archive the log (under `archive/` in its directory, verifiable on its own) and start a
    /// new one whose first entry commits to the archived log's final checkpoint.
    Rotate {
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Write an export: DIR/entries.jsonl (each line exactly the hashed leaf data),
    /// DIR/checkpoint (the latest signed checkpoint), DIR/checkpoints.jsonl (all of them).
    Export {
        /// The directory to write (created; existing files are replaced).
        dir: PathBuf,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

#[derive(Debug, Args)]
pub struct ProofArgs {
    /// Prove that entry N is in the log.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "from_size",
        required_unless_present = "from_size"
    )]
    pub index: Option<u64>,
    /// Prove that the log of M entries is a prefix of the current one.
    #[arg(long, value_name = "M")]
    pub from_size: Option<u64>,
    /// Print JSON (base64 hashes) instead of the tlog-proof text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: client::ConnectArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify this export offline (no server, no data directory).
    #[arg(long, value_name = "DIR", requires = "key")]
    pub export: Option<PathBuf>,
    /// The log's public key: the verifier-key text, or a file holding it.
    #[arg(long, value_name = "PUBKEY")]
    pub key: Option<String>,
    /// A checkpoint note you kept from earlier: the export must extend it.
    #[arg(long, value_name = "FILE", requires = "export")]
    pub trusted_checkpoint: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Online: the data directory of a local server (its address and admin credentials).
    #[arg(
        long,
        env = "TOLLGATE_DATA",
        value_name = "DIR",
        conflicts_with = "export"
    )]
    pub data: Option<PathBuf>,
    /// Online: the admin API URL (with --cert, --admin-key, --cacert).
    #[arg(long, value_name = "URL", conflicts_with = "export")]
    pub server: Option<String>,
    /// Online: admin client certificate (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "export")]
    pub cert: Option<PathBuf>,
    /// Online: admin client key (PEM). (`--key` is the log's public key here.)
    #[arg(long, value_name = "FILE", conflicts_with = "export")]
    pub admin_key: Option<PathBuf>,
    /// Online: CA certificate that signed the server (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "export")]
    pub cacert: Option<PathBuf>,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub async fn audit(cmd: AuditCommand) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Key { conn } => {
            let v = AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/audit/key", None)
                .await?;
            println!("{}", s(&v, "verifier_key"));
        }
        AuditCommand::Checkpoint { conn } => {
            let v = AdminClient::new(&conn)?
                .call(Method::POST, "/api/v1/audit/checkpoint", None)
                .await?;
            print!("{}", s(&v, "note"));
        }
        AuditCommand::Entries {
            from,
            limit,
            json,
            conn,
        } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::GET,
                    &format!("/api/v1/audit/entries?from={from}&limit={limit}"),
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            for e in v
                .get("entries")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!(
                    "{:>8}  {}",
                    e.get("index").and_then(Value::as_u64).unwrap_or(0),
                    s(e, "data")
                );
            }
        }
        AuditCommand::Proof(p) => {
            let path = match (p.index, p.from_size) {
                (Some(i), _) => format!("/api/v1/audit/proof/inclusion?index={i}"),
                (None, Some(m)) => format!("/api/v1/audit/proof/consistency?from_size={m}"),
                (None, None) => bail!("give --index N or --from-size M"),
            };
            let v = AdminClient::new(&p.conn)?
                .call(Method::GET, &path, None)
                .await?;
            if p.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", s(&v, "text"));
            }
        }
        AuditCommand::Verify(a) => return verify(a).await,
        AuditCommand::Config {
            json,
            sarif,
            all,
            conn,
        } => {
            let c = AdminClient::new(&conn)?;
            let v = c.call(Method::POST, "/api/v1/findings/scan", None).await?;
            let code = v
                .pointer("/summary/exit_code")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if sarif {
                let doc = c.call(Method::GET, "/api/v1/findings/sarif", None).await?;
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                let v = if all {
                    c.call(Method::GET, "/api/v1/findings?all=true", None)
                        .await?
                } else {
                    v
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_findings(&v);
                }
            }
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        AuditCommand::Suppress {
            rule,
            resource,
            reason,
            duration,
            conn,
        } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    "/api/v1/findings/suppressions",
                    Some(serde_json::json!({
                        "rule": rule, "resource": resource, "reason": reason, "for": duration,
                    })),
                )
                .await?;
            println!(
                "suppressed {} on {} until {} ({})",
                s(&v, "rule"),
                v.get("resource")
                    .and_then(Value::as_str)
                    .unwrap_or("every resource"),
                v.get("until")
                    .and_then(Value::as_i64)
                    .map(|t| crate::human::rfc3339_ms(t.saturating_mul(1000)))
                    .unwrap_or_default(),
                s(&v, "id")
            );
        }
        AuditCommand::Suppressions { json, conn } => {
            let v = AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/findings/suppressions", None)
                .await?;
            let mut list = v.as_array().cloned().unwrap_or_default();
            for x in &mut list {
                if x.get("resource").is_none_or(Value::is_null) {
                    x["resource"] = "every resource".into();
                }
            }
            crate::table::print_listing(
                json,
                &v,
                &list,
                &[
                    Col("ID", "id", Shown::Text),
                    Col("RULE", "rule", Shown::Text),
                    Col("RESOURCE", "resource", Shown::Text),
                    Col("UNTIL", "until", Shown::Time),
                    Col("BY", "author", Shown::Text),
                    Col("REASON", "reason", Shown::Text),
                ],
                "no suppressions",
            )?;
        }
        AuditCommand::Unsuppress { id, conn } => {
            AdminClient::new(&conn)?
                .call(
                    Method::DELETE,
                    &format!("/api/v1/findings/suppressions/{}", client::path_escape(&id)),
                    None,
                )
                .await?;
            println!("suppression {id} removed");
        }
        AuditCommand::Rotate { conn } => {
            let v = AdminClient::new(&conn)?
                .call(Method::POST, "/api/v1/audit/rotate", None)
                .await?;
            println!(
                "archived {} entries in {}; the new log starts by committing to its final checkpoint",
                v.pointer("/final/size").and_then(Value::as_u64).unwrap_or(0),
                s(&v, "archive")
            );
        }
        AuditCommand::Export { dir, conn } => {
            let c = AdminClient::new(&conn)?;
            let n = export(&c, &dir).await?;
            println!(
                "exported {n} entries to {}; verify with: tollgate audit verify --export {} --key \"$(tollgate audit key)\"",
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Findings for people: one block each, most severe first.
fn print_findings(v: &Value) {
    let list = v
        .get("findings")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        println!("no findings");
        return;
    }
    for f in &list {
        let sev = s(f, "severity").to_uppercase();
        let state = if f.get("resolved_at").is_some_and(|r| !r.is_null()) {
            " (resolved)"
        } else if f.get("suppressed").is_some_and(|x| !x.is_null()) {
            " (suppressed)"
        } else {
            ""
        };
        println!("{sev:<8} {}  {}{state}", s(f, "rule"), s(f, "resource"));
        println!("         {}", s(f, "evidence"));
        println!("         fix: {}", s(f, "remediation"));
        let since = f
            .get("first_seen")
            .and_then(Value::as_i64)
            .map(|t| crate::human::rfc3339_ms(t.saturating_mul(1000)))
            .unwrap_or_default();
        println!("         since {since}");
    }
    let sum = v.get("summary").cloned().unwrap_or(Value::Null);
    println!(
        "{} open finding(s), {} suppressed; highest: {}",
        sum.get("open").and_then(Value::as_u64).unwrap_or(0),
        sum.get("suppressed").and_then(Value::as_u64).unwrap_or(0),
        sum.get("highest").and_then(Value::as_str).unwrap_or("none")
    );
}

/// Fetch everything an offline verifier needs into `dir`. Returns the entries written.
async fn export(c: &AdminClient, dir: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A checkpoint over everything first, so that the export is covered to its end.
    let cp = c
        .call(Method::POST, "/api/v1/audit/checkpoint", None)
        .await
        .context("signing a checkpoint for the export")?;
    let size = cp.get("size").and_then(Value::as_u64).unwrap_or(0);
    let path = dir.join(ENTRIES);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut from = 0u64;
    let progress = crate::progress::bar(size, "exporting");
    while from < size {
        progress.set_position(from);
        let v = c
            .call(
                Method::GET,
                &format!("/api/v1/audit/entries?from={from}&limit=10000"),
                None,
            )
            .await?;
        let list = v
            .get("entries")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if list.is_empty() {
            bail!("the server returned no entries from {from} of {size}");
        }
        for e in &list {
            if from >= size {
                break;
            }
            out.write_all(s(e, "data").as_bytes())?;
            out.write_all(b"\n")?;
            from += 1;
        }
    }
    progress.finish_and_clear();
    out.flush()?;
    std::fs::write(dir.join(CHECKPOINT), s(&cp, "note"))?;
    let all = c
        .call(Method::GET, "/api/v1/audit/checkpoints", None)
        .await?;
    let mut lines = String::new();
    for l in all
        .get("checkpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // Only checkpoints the export covers.
        if l.get("size").and_then(Value::as_u64).unwrap_or(u64::MAX) <= size {
            lines.push_str(&serde_json::to_string(l)?);
            lines.push('\n');
        }
    }
    std::fs::write(dir.join(CHECKPOINTS), lines)?;
    Ok(size)
}

/// Read a verifier key given as text or as a file holding it.
fn read_key(k: &str) -> Result<Verifier, String> {
    let text = if Path::new(k).is_file() {
        std::fs::read_to_string(k).map_err(|e| format!("{k}: {e}"))?
    } else {
        k.to_owned()
    };
    Verifier::parse(text.trim()).map_err(|e| format!("the key: {e}"))
}

async fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let Some(dir) = a.export else {
        let conn = client::ConnectArgs {
            data: a.data,
            server: a.server,
            cert: a.cert,
            key: a.admin_key,
            cacert: a.cacert,
        };
        let v = AdminClient::new(&conn)?
            .call(Method::GET, "/api/v1/audit/verify", None)
            .await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        let report: Report = Report {
            entries: v
                .pointer("/report/entries")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            ..Report::default()
        };
        let clean = v.get("clean").and_then(Value::as_bool).unwrap_or(false);
        if !a.json {
            if let Some(r) = v.get("refusing").and_then(Value::as_str) {
                println!("the log refuses to sign: {r}");
            }
            for p in v
                .pointer("/report/problems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!("TAMPERED: {}", s(p, "detail"));
            }
            if clean {
                println!(
                    "audit log verified: {} entries re-hashed, {} checkpoints checked",
                    report.entries,
                    v.pointer("/report/checkpoints")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                );
            }
        }
        return Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    };
    // Offline: exit 2 for key and format problems.
    let fail = |m: String| {
        eprintln!("error: {m}");
        Ok(ExitCode::from(2))
    };
    let Some(k) = a.key else {
        return fail("--export needs --key PUBKEY".into());
    };
    let v = match read_key(&k) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let trusted = match &a.trusted_checkpoint {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => return fail(format!("{}: {e}", p.display())),
        },
        None => None,
    };
    let size = std::fs::metadata(dir.join(ENTRIES)).map_or(0, |m| m.len());
    let progress = crate::progress::bar(size, "verifying");
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:32}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let report = verify_dir_with_progress(&dir, &v, trusted.as_deref(), &mut |n| progress.inc(n));
    progress.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("TAMPERED: {}", p.detail);
        }
        if report.clean() {
            println!(
                "verified: {} entries re-hashed, {} signed checkpoints checked{}{}",
                report.entries,
                report.checkpoints,
                report
                    .trusted_size
                    .map(|s| format!(", consistent with your checkpoint of {s} entries"))
                    .unwrap_or_default(),
                if report.uncovered > 0 {
                    format!(
                        "; the last {} entries are not covered by a checkpoint yet",
                        report.uncovered
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
