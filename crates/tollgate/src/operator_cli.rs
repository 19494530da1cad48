//! `tollgate operator ...`, `tollgate ca renew-server` and the device lifecycle commands
//! (`device set-groups`, `device label`, `device delete`): clients of the admin API.
//!
//! Operator keys are generated here and never leave this machine: the API gets a CSR and
//! returns the certificate. This module owns argument shapes, key and file handling and
//! printing; it decides nothing the server decides.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{self, path_escape, AdminClient, ConnectArgs};
use crate::datadir::Layout;

/// Operators of the admin API: named people or tools with the `admin` or `viewer` role.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Register an operator: generates its key here, sends a CSR, and writes OUT/NAME.key
    /// (0600), OUT/NAME.crt and OUT/ca.crt, ready for `--cert --key --cacert`.
    Add {
        /// Operator name (letters, digits and . _ - :).
        name: String,
        /// What it may do: admin (everything) or viewer (read only).
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// Directory for its files (default: the current directory).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Certificate lifetime in days (default 90).
        #[arg(long, value_name = "DAYS")]
        validity_days: Option<u32>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List operators: role, state and when their newest certificate expires.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Show one operator (JSON), with its certificates.
    Show {
        /// Operator name.
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Revoke an operator and every certificate it holds (they land in the CRL); its next
    /// request is refused. The last active admin cannot be revoked.
    Revoke {
        /// Operator name.
        name: String,
        /// Why (recorded in the registry and the event and audit logs).
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// A new certificate (and key) for an operator; the old certificate stays valid until it
    /// expires unless --revoke-old. Without NAME: the operator of the credentials in use, whose
    /// files are replaced in place (with --data: DATA/admin/admin.crt and admin.key).
    Renew {
        /// Operator name (default: the operator of the current credentials).
        name: Option<String>,
        /// Write OUT/NAME.crt and OUT/NAME.key instead of replacing the credentials in use.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Revoke the operator's older certificates now.
        #[arg(long)]
        revoke_old: bool,
        /// Certificate lifetime in days (default 90).
        #[arg(long, value_name = "DAYS")]
        validity_days: Option<u32>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Change an operator's role; it holds from the operator's next request.
    SetRole {
        /// Operator name.
        name: String,
        /// admin or viewer.
        #[arg(value_parser = ["admin", "viewer"])]
        role: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

/// A fresh P-256 key and a CSR naming `name`, both PEM.
fn key_and_csr(name: &str) -> Result<(String, String)> {
    let key = tollgate_pki::generate_key().context("generating a key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .context("making the certificate request")?
        .pem()
        .context("encoding the certificate request")?;
    Ok((key.serialize_pem(), csr))
}

fn field(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn date(secs: Option<i64>) -> String {
    secs.map_or_else(
        || "-".into(),
        |s| crate::human::rfc3339_ms(s.saturating_mul(1000)),
    )
}

/// The certificate and key files a command's credentials come from.
fn credential_files(conn: &ConnectArgs) -> Result<(PathBuf, PathBuf)> {
    let layout = conn.data.as_deref().map(Layout::new);
    let cert = conn
        .cert
        .clone()
        .or_else(|| layout.as_ref().map(Layout::admin_cert))
        .ok_or_else(|| anyhow!("no credentials: pass --data DIR, or --cert and --key"))?;
    let key = conn
        .key
        .clone()
        .or_else(|| layout.as_ref().map(Layout::admin_key))
        .ok_or_else(|| anyhow!("no credentials: pass --data DIR, or --cert and --key"))?;
    Ok((cert, key))
}

/// The operator a certificate file names.
fn operator_of(cert: &Path) -> Result<String> {
    let pem =
        std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
    let info = tollgate_pki::parse_pem_certificates(&pem)
        .with_context(|| format!("parsing {}", cert.display()))?;
    match info.into_iter().next().map(|i| i.role) {
        Some(tollgate_pki::Role::Admin(name)) => Ok(name),
        _ => bail!("{} is not an operator certificate", cert.display()),
    }
}

fn print_usage(name: &str, crt: &Path, key: &Path, ca: &Path, conn: &ConnectArgs) {
    let server = conn
        .server
        .clone()
        .unwrap_or_else(|| "https://HOST:8443".into());
    eprintln!(
        "Use them with any command: tollgate device list --server {server} --cert {} --key {} --cacert {}\n\
         or with curl: curl --cert {} --key {} --cacert {} {server}/api/v1/health\n\
         Keep {} private: it is {name}'s identity.",
        crt.display(),
        key.display(),
        ca.display(),
        crt.display(),
        key.display(),
        ca.display(),
        key.display(),
    );
}

pub async fn operator(cmd: OperatorCommand) -> Result<ExitCode> {
    match cmd {
        OperatorCommand::Add {
            name,
            role,
            out,
            validity_days,
            conn,
        } => {
            let c = AdminClient::new(&conn)?;
            let (key, csr) = key_and_csr(&name)?;
            let v = c
                .call(
                    Method::POST,
                    "/api/v1/operators",
                    Some(json!({
                        "name": name, "role": role, "csr": csr, "validity_days": validity_days,
                    })),
                )
                .await?;
            let files = client::write_device_files(
                &out,
                &name,
                &field(&v, "certificate"),
                &key,
                &field(&v, "ca"),
            )?;
            eprintln!(
                "Operator {name} added with the {role} role (serial {}, valid until {}).",
                field(&v, "serial"),
                date(v.get("not_after").and_then(Value::as_i64))
            );
            for f in &files {
                println!("{}", f.display());
            }
            if let [crt, key, ca] = files.as_slice() {
                print_usage(&name, crt, key, ca, &conn);
            }
        }
        OperatorCommand::List { json, conn } => {
            let v = AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/operators", None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut rows: Vec<Value> = v.as_array().cloned().unwrap_or_default();
                for o in &mut rows {
                    // RFC 3339 strings in UTC: the greatest is the latest.
                    let newest = o
                        .get("certificates")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|c| c.get("revoked_at").is_none_or(Value::is_null))
                        .filter_map(|c| c.get("not_after").and_then(Value::as_str))
                        .max()
                        .map(str::to_owned);
                    o["cert_expires"] = newest.into();
                }
                crate::table::from_json(
                    &rows,
                    &[
                        crate::table::Col("OPERATOR", "name", crate::table::Shown::Text),
                        crate::table::Col("ROLE", "role", crate::table::Shown::Text),
                        crate::table::Col("STATE", "state", crate::table::Shown::Text),
                        crate::table::Col(
                            "CERT EXPIRES",
                            "cert_expires",
                            crate::table::Shown::Time,
                        ),
                        crate::table::Col("CREATED BY", "created_by", crate::table::Shown::Text),
                    ],
                )
                .print();
            }
        }
        OperatorCommand::Show { name, conn } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::GET,
                    &format!("/api/v1/operators/{}", path_escape(&name)),
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OperatorCommand::Revoke { name, reason, conn } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    &format!("/api/v1/operators/{}/revoke", path_escape(&name)),
                    Some(json!({ "reason": reason })),
                )
                .await?;
            let n = v
                .get("certificates")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            println!("Revoked operator {name} and its {n} certificate(s).");
        }
        OperatorCommand::SetRole { name, role, conn } => {
            AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    &format!("/api/v1/operators/{}/role", path_escape(&name)),
                    Some(json!({ "role": role })),
                )
                .await?;
            println!("Operator {name} now has the {role} role (from its next request).");
        }
        OperatorCommand::Renew {
            name,
            out,
            revoke_old,
            validity_days,
            conn,
        } => renew(name, out, revoke_old, validity_days, &conn).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn renew(
    name: Option<String>,
    out: Option<PathBuf>,
    revoke_old: bool,
    validity_days: Option<u32>,
    conn: &ConnectArgs,
) -> Result<()> {
    let (cred_cert, cred_key) = credential_files(conn)?;
    let own = operator_of(&cred_cert)?;
    let name = name.unwrap_or_else(|| own.clone());
    // Another operator's files are never written over the credentials in use.
    let in_place = out.is_none() && name == own;
    let c = AdminClient::new(conn)?;
    let (key, csr) = key_and_csr(&name)?;
    let v = c
        .call(
            Method::POST,
            &format!("/api/v1/operators/{}/renew", path_escape(&name)),
            Some(json!({ "csr": csr, "revoke_old": revoke_old, "validity_days": validity_days })),
        )
        .await?;
    let cert = field(&v, "certificate");
    let (crt_path, key_path) = if in_place {
        // Key and certificate change together (one commit), so the credentials are never a
        // mismatched pair.
        let dir = cred_cert
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        tollgate_control::files::commit(
            &dir.join(".renew-commit"),
            &[
                tollgate_control::files::FileWrite {
                    path: cred_key.clone(),
                    contents: key.as_bytes(),
                    private: true,
                },
                tollgate_control::files::FileWrite {
                    path: cred_cert.clone(),
                    contents: cert.as_bytes(),
                    private: false,
                },
            ],
        )
        .with_context(|| format!("replacing {}", cred_cert.display()))?;
        (cred_cert, cred_key)
    } else {
        let dir = out.unwrap_or_else(|| PathBuf::from("."));
        let files = client::write_device_files(&dir, &name, &cert, &key, &field(&v, "ca"))?;
        (
            files.first().cloned().unwrap_or_default(),
            files.get(1).cloned().unwrap_or_default(),
        )
    };
    let revoked = v
        .get("revoked_old")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    eprintln!(
        "Renewed operator {name}: serial {}, valid until {}{}.",
        field(&v, "serial"),
        date(v.get("not_after").and_then(Value::as_i64)),
        if revoke_old {
            format!("; {revoked} older certificate(s) revoked")
        } else {
            "; the older certificate stays valid until it expires".into()
        }
    );
    println!("{}", crt_path.display());
    println!("{}", key_path.display());
    Ok(())
}

/// `tollgate ca renew-server`.
pub async fn renew_server(
    dns: Vec<String>,
    ips: Vec<std::net::IpAddr>,
    validity_days: Option<u32>,
    conn: &ConnectArgs,
) -> Result<ExitCode> {
    let v = AdminClient::new(conn)?
        .call(
            Method::POST,
            "/api/v1/ca/server/renew",
            Some(json!({ "dns": dns, "ips": ips, "validity_days": validity_days })),
        )
        .await?;
    let names: Vec<String> = v
        .get("names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    println!(
        "Server certificate renewed: serial {}, valid until {}, for {}. Both listeners present it from now on.",
        field(&v, "serial"),
        date(v.get("not_after").and_then(Value::as_i64)),
        names.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `tollgate device set-groups ID g1,g2` (an empty list removes every group).
pub async fn set_groups(id: &str, groups: &str, conn: &ConnectArgs) -> Result<ExitCode> {
    let groups: Vec<&str> = groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    let v = AdminClient::new(conn)?
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{}", path_escape(id)),
            Some(json!({ "groups": groups })),
        )
        .await?;
    let now: Vec<String> = v
        .get("groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    let live = if v.get("connected").and_then(Value::as_bool) == Some(true) {
        "; its live connection is held to them now"
    } else {
        ""
    };
    println!("Device {id} is in groups: {}{live}.", now.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// `tollgate device label ID k=v ... [--remove k]`.
pub async fn label(
    id: &str,
    set: &[String],
    remove: &[String],
    conn: &ConnectArgs,
) -> Result<ExitCode> {
    let mut labels = serde_json::Map::new();
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("label {kv:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_owned(), v.into());
    }
    for k in remove {
        labels.insert(k.clone(), Value::Null);
    }
    let v = AdminClient::new(conn)?
        .call(
            Method::PATCH,
            &format!("/api/v1/devices/{}", path_escape(id)),
            Some(json!({ "labels": labels })),
        )
        .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(v.get("labels").unwrap_or(&Value::Null))?
    );
    Ok(ExitCode::SUCCESS)
}

/// `tollgate device delete ID [--reason] [--yes]`.
pub async fn delete(id: &str, reason: &str, yes: bool, conn: &ConnectArgs) -> Result<ExitCode> {
    if !yes {
        eprint!(
            "Delete device {id}? Every certificate it holds is revoked, its live connections are \
             closed and its record is removed (its history stays in the logs). [y/N] "
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("Not deleted.");
            return Ok(ExitCode::from(1));
        }
    }
    let v = AdminClient::new(conn)?
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{}", path_escape(id)),
            Some(json!({ "reason": reason })),
        )
        .await?;
    let serials = v
        .get("serials")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let closed = v
        .get("sessions_closed")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    println!("Deleted {id}: {serials} certificate(s) revoked, {closed} live connection(s) closed.");
    Ok(ExitCode::SUCCESS)
}
