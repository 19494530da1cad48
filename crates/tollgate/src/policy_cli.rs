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
