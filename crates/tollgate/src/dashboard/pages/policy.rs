//! The policy page (`/dashboard/policy`): the rules in force, in the policy's own syntax, its
//! lint warnings, and the explain tool: `?device=ID&action=publish|subscribe|retain&topic=T`
//! answers "may this device do that?" as the live server would (the control plane's explain:
//! the device's real groups and state from the registry, quarantine included); and the
//! policy's history, each version with who made it and when, and `?diff=V` showing what
//! version V changed from the one before.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_policy::{Action, Who};

use super::{badge, blocking, layout, Page};
use crate::dashboard::{DashState, Signed};

#[derive(Debug, Default, Deserialize)]
pub(super) struct ExplainQuery {
    #[serde(default)]
    device: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    topic: String,
    /// Show what this version changed from the one before.
    #[serde(default)]
    diff: Option<u64>,
}

fn who_text(w: &Who) -> String {
    match w {
        Who::Any => "*".into(),
        Who::Device(id) => format!("device:{id}"),
        Who::Group(g) => format!("group:{g}"),
    }
}

pub(super) async fn page(
    State(s): State<DashState>,
    Signed(session): Signed,
    Query(q): Query<ExplainQuery>,
) -> Response {
    let p = Page {
        key: "policy",
        title: "Policy".into(),
        session: &session,
        device: None,
    };
    let policy = s.src.cp.policy();
    let asked = !q.device.is_empty() && !q.topic.is_empty();
    let explained = if asked {
        let cp = Arc::clone(&s.src.cp);
        let action = match q.action.as_str() {
            "subscribe" => Action::Subscribe,
            "retain" => Action::Retain,
            _ => Action::Publish,
        };
        let (id, topic) = (q.device.clone(), q.topic.clone());
        Some(blocking(move || cp.explain(&id, action, &topic)).await)
    } else {
        None
    };
    let lint: Vec<String> = policy.lint().iter().map(|l| l.to_string()).collect();
    let history = {
        let cp = Arc::clone(&s.src.cp);
        blocking(move || cp.policy_history()).await
    };
    let diff = match q.diff {
        Some(v) if v > 1 => {
            let cp = Arc::clone(&s.src.cp);
            Some((v, blocking(move || cp.policy_diff(v - 1, Some(v))).await))
        }
        _ => None,
    };
    let body = html! {
        section.panel {
            h2 { "May a device do this?" }
            form.filters #explain-form method="get" action="/dashboard/policy" {
                input type="text" name="device" placeholder="device id" value=(q.device) required;
                select name="action" {
                    @for a in ["publish", "subscribe", "retain"] {
                        option value=(a) selected[q.action == a] { (a) }
                    }
                }
                input type="text" name="topic" placeholder="topic or filter" value=(q.topic) required;
                button type="submit" { "Explain" }
            }
            @match &explained {
                None => {}
                Some(Err((_, why))) => { p.error { (why) } }
                Some(Ok(e)) => {
                    div #explain-result {
                        p {
                            (badge(if e.allowed { "allowed" } else { "denied" }))
                            " " (e.device) " (" (e.groups.join(", ")) "), "
                            (badge(&serde_json::to_value(e.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()))
                            @if let Some(d) = &e.denied_by { " — denied by " code { (d) } }
                        }
                        @for r in &e.quarantine { p.quarantine { "Quarantined: " (r) } }
                        pre.explain { (e.steps.join("\n")) }
                    }
                }
            }
        }
        @if !lint.is_empty() {
            section.panel {
                h2 { "Warnings" }
                ul { @for l in &lint { li { (l) } } }
            }
        }
        section.panel #history {
            h2 { "History" }
            @match &history {
                Err((_, why)) => { p.error { (why) } }
                Ok(versions) if versions.is_empty() => { p.muted { "No version recorded yet." } }
                Ok(versions) => {
                    table {
                        thead { tr { th.num { "version" } th { "time" } th { "by" } th.num { "rules" } th { "sha256" } th { "" } } }
                        tbody {
                            @for v in versions.iter().rev() {
                                tr {
                                    td.num { (v.version) }
                                    td.nowrap { (v.time) }
                                    td { (v.by) @if let Some(r) = v.rollback_of { " (rollback to " (r) ")" } }
                                    td.num { (v.rules) }
                                    td { code { (v.sha256.get(..12).unwrap_or(&v.sha256)) } }
                                    td {
                                        @if v.version > 1 {
                                            a href={"/dashboard/policy?diff=" (v.version) "#history"} { "what changed" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some((v, d)) = &diff {
                h3 { "Version " (v) " against version " (v - 1) }
                @match d {
                    Err((_, why)) => { p.error { (why) } }
                    Ok(text) => {
                        pre.diff #policy-diff {
                            @for line in text.lines() {
                                @let class = if line.starts_with("+++") || line.starts_with("---") {
                                    "diff-file"
                                } else if line.starts_with('+') {
                                    "diff-add"
                                } else if line.starts_with('-') {
                                    "diff-del"
                                } else if line.starts_with("@@") {
                                    "diff-hunk"
                                } else {
                                    "diff-ctx"
                                };
                                span class=(class) { (line) }
                            }
                        }
                    }
                }
            }
        }
        section.panel #rules {
            h2 { "Rules in force (" (policy.rules().len()) ")" }
            p.muted { "In order of the file; a deny that matches wins over any allow." }
            table {
                thead { tr { th.num { "line" } th { "effect" } th { "id" } th { "who" } th { "publish" } th { "subscribe" } th { "retain" } } }
                tbody {
                    @for r in policy.rules() {
                        tr {
                            td.num { (r.line) }
                            td { (badge(&format!("{:?}", r.effect).to_lowercase())) }
                            td { (r.id) @if let Some(d) = &r.description { br; span.muted { (d) } } }
                            td { (r.who.iter().map(who_text).collect::<Vec<_>>().join(", ")) }
                            td { @for t in &r.publish { code { (t) } " " } }
                            td { @for t in &r.subscribe { code { (t) } " " } }
                            td { @for t in &r.retain { code { (t) } " " } }
                        }
                    }
                }
            }
        }
    };
    layout(&p, body)
}
