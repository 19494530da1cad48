//! `tollgate policy suggest`, `lint --observed` and `explain` without a file: clients of the
//! admin API's policy routes (what devices were seen doing, the policy it suggests, and the
//! live server's explanation of one decision).

use std::process::ExitCode;

use anyhow::{Context, Result};
use hyper::Method;
use serde_json::Value;
use tollgate_policy::suggest::Observed;
use tollgate_policy::Action;

use crate::client::{self, AdminClient};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// What devices did in the window, from the running server.
pub async fn observations(conn: &client::ConnectArgs, since: &str) -> Result<Vec<Observed>> {
    let v = AdminClient::new(conn)?
        .call(
            Method::GET,
            &format!(
                "/api/v1/policy/observations?since={}",
                client::path_escape(since)
            ),
            None,
        )
        .await?;
    Ok(v.get("observations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some(Observed {
                device: s(o, "device").to_owned(),
                groups: o
                    .get("groups")
                    .and_then(Value::as_array)?
                    .iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect(),
                action: match s(o, "action") {
                    "publish" => Action::Publish,
                    "retain" => Action::Retain,
                    "subscribe" => Action::Subscribe,
                    _ => return None,
                },
                topic: s(o, "topic").to_owned(),
                count: o.get("count").and_then(Value::as_u64).unwrap_or(1),
            })
        })
        .collect())
}

/// `tollgate policy suggest`.
pub async fn suggest(
    since: &str,
    group: Option<&str>,
    out: Option<&std::path::Path>,
    json: bool,
    conn: &client::ConnectArgs,
) -> Result<ExitCode> {
    let mut path = format!(
        "/api/v1/policy/suggest?since={}",
        client::path_escape(since)
    );
    if let Some(g) = group {
        path.push_str(&format!("&group={}", client::path_escape(g)));
    }
    let v = AdminClient::new(conn)?
        .call(Method::GET, &path, None)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let toml = s(&v, "toml");
    match out {
        Some(p) => {
            std::fs::write(p, toml).with_context(|| format!("writing {}", p.display()))?;
            println!("# the suggested policy is in {}", p.display());
        }
        None => {
            println!("# ---- suggested policy (observed over {since}) ----");
            print!("{toml}");
        }
    }
    println!();
    println!("# ---- against the policy in force ----");
    for line in s(&v, "diff").lines() {
        println!("# {line}");
    }
    let changes = v
        .get("changes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !changes.is_empty() {
        println!();
        println!("# ---- what each change would have denied ----");
    }
    for c in &changes {
        println!("# {}", s(c, "text"));
        for p in c
            .get("would_deny")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            println!(
                "#     would deny {} {} {}",
                s(p, "device"),
                s(p, "action"),
                s(p, "topic")
            );
        }
    }
    let denied = v
        .get("denied_seen")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if denied > 0 {
        println!("# {denied} action(s) seen were denied by the policy in force and stay denied");
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy in force on the running server, its versions, and changing it.
#[derive(Debug, clap::Subcommand)]
pub enum VersionCommand {
    /// Show the policy in force on the running server: its version, rules and lint.
    Show {
        /// Print the policy file's text only.
        #[arg(long, conflicts_with = "json")]
        text: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// List every version of the policy: when, by whom, its SHA-256 and rule count.
    History {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// A unified diff between two versions (TO defaults to the version in force).
    Diff {
        /// The older version.
        from: u64,
        /// The newer version.
        to: Option<u64>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Put an earlier version's text in force again (as a new version).
    Rollback {
        /// The version to restore.
        #[arg(value_name = "VERSION")]
        restore: u64,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Validate FILE on the server, then put it in force live as the next version.
    Push {
        /// Policy file.
        file: std::path::PathBuf,
        /// The version FILE was written against (default: the version in force now). The push
        /// is refused if another version was put in force since.
        #[arg(long, value_name = "VERSION")]
        base: Option<u64>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn print_version(v: &Value) {
    let rollback = v
        .get("rollback_of")
        .and_then(Value::as_u64)
        .map(|r| format!(" (rollback to {r})"))
        .unwrap_or_default();
    println!(
        "{:>5}  {}  {:<12}  {:>5} rules  sha256 {}{rollback}",
        u(v, "version"),
        s(v, "time"),
        s(v, "by"),
        u(v, "rules"),
        s(v, "sha256").get(..16).unwrap_or(""),
    );
}

/// `tollgate policy show | history | diff | rollback | push`.
pub async fn versions(cmd: VersionCommand) -> Result<ExitCode> {
    match cmd {
        VersionCommand::Show { text, json, conn } => {
            let v = AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/policy", None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if text {
                print!("{}", s(&v, "text"));
            } else {
                println!(
                    "# policy version {} (by {}, {}), sha256 {}",
                    u(&v, "version"),
                    s(&v, "by"),
                    s(&v, "time"),
                    s(&v, "sha256")
                );
                for r in v
                    .get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let list = |k: &str| -> String {
                        r.get(k)
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default()
                    };
                    println!(
                        "line {:>3}  {:<5} {:<16} who [{}]  publish [{}]  subscribe [{}]  retain [{}]",
                        u(r, "line"),
                        s(r, "effect"),
                        s(r, "id"),
                        list("who"),
                        list("publish"),
                        list("subscribe"),
                        list("retain"),
                    );
                }
                for l in v
                    .get("lint")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    println!("{}", s(l, "text"));
                }
            }
        }
        VersionCommand::History { json, conn } => {
            let v = AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/policy/history", None)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in v
                    .get("versions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    print_version(e);
                }
                println!("# version {} is in force", u(&v, "current"));
            }
        }
        VersionCommand::Diff { from, to, conn } => {
            let mut path = format!("/api/v1/policy/diff?from={from}");
            if let Some(t) = to {
                path.push_str(&format!("&to={t}"));
            }
            let v = AdminClient::new(&conn)?
                .call(Method::GET, &path, None)
                .await?;
            print!("{}", s(&v, "diff"));
        }
        VersionCommand::Rollback {
            restore: version,
            conn,
        } => {
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    "/api/v1/policy/rollback",
                    Some(serde_json::json!({ "version": version })),
                )
                .await?;
            println!(
                "Version {} (the text of version {version}) is in force.",
                u(&v, "version")
            );
        }
        VersionCommand::Push { file, base, conn } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let api = AdminClient::new(&conn)?;
            let check = api
                .call_raw(
                    Method::POST,
                    "/api/v1/policy/validate",
                    "application/toml",
                    text.clone().into(),
                )
                .await?;
            if check.get("valid").and_then(Value::as_bool) != Some(true) {
                for e in check
                    .get("errors")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    eprintln!(
                        "{}:{}:{}: {}",
                        file.display(),
                        u(e, "line"),
                        u(e, "column"),
                        s(e, "message")
                    );
                }
                return Ok(ExitCode::from(1));
            }
            for l in check
                .get("lint")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                eprintln!("{}", s(l, "text"));
            }
            let base = match base {
                Some(b) => b,
                None => u(
                    &api.call(Method::GET, "/api/v1/policy", None).await?,
                    "version",
                ),
            };
            let v = api
                .call_with(
                    Method::PUT,
                    "/api/v1/policy",
                    "application/toml",
                    &[("if-match", format!("\"{base}\""))],
                    text.into(),
                )
                .await?;
            println!(
                "Version {} is in force ({} rules, replacing version {base}).",
                u(&v, "version"),
                u(&v, "rules")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tollgate groups`.
pub async fn groups(json: bool, conn: &client::ConnectArgs) -> Result<ExitCode> {
    let v = AdminClient::new(conn)?
        .call(Method::GET, "/api/v1/groups", None)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>8} {:>12}  rules",
        "GROUP", "DEVICES", "QUARANTINED"
    );
    for g in v.as_array().into_iter().flatten() {
        let rules = g
            .get("rules")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!(
            "{:<24} {:>8} {:>12}  {rules}",
            s(g, "name"),
            u(g, "devices"),
            u(g, "quarantined")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tollgate policy explain` without a file: the running server explains, with the device's
/// real groups and state. Exit 0 allowed, 3 denied.
pub async fn explain_live(
    conn: &client::ConnectArgs,
    device: &str,
    action: Action,
    topic: &str,
    json: bool,
) -> Result<ExitCode> {
    let v = AdminClient::new(conn)?
        .call(
            Method::GET,
            &format!(
                "/api/v1/policy/explain?device={}&action={}&topic={}",
                client::path_escape(device),
                tollgate_control::observe::action_name(action),
                client::path_escape(topic)
            ),
            None,
        )
        .await?;
    let allowed = v.get("allowed").and_then(Value::as_bool).unwrap_or(false);
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let groups: Vec<&str> = v
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "device `{device}` on the running server: state {}, groups: {}",
            s(&v, "state"),
            if groups.is_empty() {
                "none".to_owned()
            } else {
                groups.join(", ")
            }
        );
        for step in v
            .get("steps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            println!("{step}");
        }
    }
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
