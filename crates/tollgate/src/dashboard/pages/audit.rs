//! The audit-log page (`/dashboard/audit`): entries a page at a time (`?from=N`, newest page
//! by default) or searched (`?q=text`, over the latest entries), and for each a button that
//! checks its inclusion proof against the latest signed checkpoint in the browser: our script
//! fetches the entry, the proof and the checkpoint from `/api/v1/audit/...`, recomputes the
//! RFC 9162 leaf hash and the root with WebCrypto SHA-256, and compares.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::{failed, layout, Page};
use crate::dashboard::{DashState, Signed};

/// Entries a page shows.
const PAGE: u64 = 50;
/// Entries a search reads, newest first.
const SEARCHED: u64 = 20_000;

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    from: Option<u64>,
    #[serde(default)]
    q: String,
}

struct Entry {
    index: u64,
    value: Value,
}

pub(super) async fn page(
    State(s): State<DashState>,
    Signed(session): Signed,
    Query(q): Query<AuditQuery>,
) -> Response {
    let p = Page {
        key: "audit",
        title: "Audit log".into(),
        session: &session,
        device: None,
    };
    let Some(audit) = s.src.audit.clone() else {
        return failed(
            &p,
            StatusCode::NOT_FOUND,
            "The audit log is disabled ([audit] enabled = false).",
        );
    };
    let needle = q.q.clone();
    let from = q.from;
    let got = tokio::task::spawn_blocking(move || {
        audit.with_log(|l| -> Result<_, tollgate_audit::AuditError> {
            let size = l.size();
            let latest = l.latest().map(|c| c.size);
            let parse = |i: u64, data: &[u8]| Entry {
                index: i,
                value: serde_json::from_slice(data).unwrap_or(Value::Null),
            };
            let entries = if needle.is_empty() {
                let start = from.unwrap_or(size.saturating_sub(PAGE)).min(size);
                let list = if start >= size {
                    Vec::new()
                } else {
                    l.entries_range(start, PAGE)?
                };
                list.iter()
                    .enumerate()
                    .map(|(i, d)| parse(start + i as u64, d))
                    .collect::<Vec<_>>()
            } else {
                let lo = size.saturating_sub(SEARCHED);
                let needle = needle.to_lowercase();
                let mut found = Vec::new();
                let mut hi = size;
                while hi > lo && found.len() < PAGE as usize {
                    let start = hi.saturating_sub(1000).max(lo);
                    let chunk = l.entries_range(start, hi - start)?;
                    for (i, d) in chunk.iter().enumerate().rev() {
                        if String::from_utf8_lossy(d).to_lowercase().contains(&needle) {
                            found.push(parse(start + i as u64, d));
                            if found.len() >= PAGE as usize {
                                break;
                            }
                        }
                    }
                    hi = start;
                }
                found.reverse();
                found
            };
            Ok((size, latest, entries))
        })
    })
    .await;
    let (size, latest, entries) = match got {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return failed(&p, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => return failed(&p, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let first = entries.first().map_or(0, |e| e.index);
    let prev = first.saturating_sub(PAGE);
    let next = first + PAGE;
    let searching = !q.q.is_empty();
    let body = html! {
        section.panel {
            p {
                (size) " entries; latest signed checkpoint covers "
                @if let Some(c) = latest { (c) } @else { "none yet" }
                ". Each entry's proof is checked here, in this browser, against that checkpoint."
            }
            form.filters method="get" action="/dashboard/audit" {
                input type="search" name="q" placeholder="search the latest entries…" value=(q.q);
                button type="submit" { "Search" }
                a.clear href="/dashboard/audit" { "newest" }
            }
            @if !searching {
                nav.pager {
                    @if first > 0 { a href={"/dashboard/audit?from=" (prev)} { "← older" } }
                    @if next < size { a href={"/dashboard/audit?from=" (next)} { "newer →" } }
                }
            }
        }
        section.panel #audit-entries {
            @if entries.is_empty() {
                p.muted { "No entries." }
            } @else {
                table #audit-table {
                    thead { tr { th.num { "index" } th { "time" } th { "type" } th { "by" } th { "detail" } th { "proof" } } }
                    tbody {
                        @for e in entries.iter().rev() {
                            tr data-index=(e.index) {
                                td.num { (e.index) }
                                td.nowrap { (super::short_ts(e.value["ts"].as_str().unwrap_or(""))) }
                                td { code { (e.value["type"].as_str().unwrap_or("")) } }
                                td { (e.value["by"].as_str().unwrap_or("")) }
                                td.detail { (summary(&e.value)) }
                                td.proof {
                                    button.check-proof type="button" data-index=(e.index) { "Check proof" }
                                    output.proof-result {}
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&p, body)
}

/// The entry's members other than its envelope.
fn summary(v: &Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "seq" | "ts" | "type" | "by"))
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .unwrap_or_default()
}
