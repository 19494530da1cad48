//! The devices page (`/dashboard/devices`, searchable and filtered on the server by the query
//! string: `q`, `state`, `supplier`, `model`, `group`, `compliance`) and the device page
//! (`/dashboard/devices/{id}`): identity and certificates, inventory and the SBOM's vulnerable
//! components, live message-rate and RTT charts, alerts, recent events, and the quarantine,
//! release and revoke buttons (admins only; each asks for confirmation).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::fleet::urlencode;
use super::{action, badge, blocking, can_act, events_table, failed, layout, when, when_ms, Page};
use crate::dashboard::{DashState, Signed};

#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    supplier: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    compliance: String,
}

struct Row {
    id: String,
    state: &'static str,
    connected: bool,
    groups: Vec<String>,
    supplier: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    compliance: String,
    expires: Option<i64>,
}

pub(super) async fn list(
    State(s): State<DashState>,
    Signed(session): Signed,
    Query(f): Query<Filter>,
) -> Response {
    let p = Page {
        key: "devices",
        title: "Devices".into(),
        session: &session,
        device: None,
    };
    let cp = Arc::clone(&s.src.cp);
    let got = blocking(move || Ok((cp.devices()?, cp.compliance_report(None)?))).await;
    let (devices, report) = match got {
        Ok(x) => x,
        Err((status, why)) => return failed(&p, status, &why),
    };
    let by_id: BTreeMap<_, _> = report.into_iter().map(|c| (c.device.clone(), c)).collect();
    let rows: Vec<Row> = devices
        .into_iter()
        .map(|d| {
            let c = by_id.get(&d.id);
            let inv = c.map(|c| &c.inventory);
            Row {
                supplier: inv
                    .and_then(|i| i.supplier.clone())
                    .or_else(|| d.bootstrap.as_ref().map(|b| b.supplier.clone())),
                model: inv
                    .and_then(|i| i.model.clone())
                    .or_else(|| d.bootstrap.as_ref().and_then(|b| b.model.clone())),
                firmware: inv.and_then(|i| i.firmware.clone()),
                compliance: c.map_or("unevaluated".into(), |c| c.state.clone()),
                expires: d
                    .certificates
                    .iter()
                    .find(|c| c.revoked_at.is_none())
                    .map(|c| c.not_after),
                state: d.state,
                connected: d.connected,
                groups: d.groups,
                id: d.id,
            }
        })
        .collect();
    let options = |get: &dyn Fn(&Row) -> Vec<String>| -> BTreeSet<String> {
        rows.iter().flat_map(get).collect()
    };
    let states = options(&|r| vec![r.state.to_owned()]);
    let suppliers = options(&|r| r.supplier.clone().into_iter().collect());
    let models = options(&|r| r.model.clone().into_iter().collect());
    let groups = options(&|r| r.groups.clone());
    let compliance = options(&|r| vec![r.compliance.clone()]);
    let q = f.q.to_lowercase();
    let shown: Vec<&Row> = rows
        .iter()
        .filter(|r| q.is_empty() || r.id.to_lowercase().contains(&q))
        .filter(|r| f.state.is_empty() || r.state == f.state)
        .filter(|r| f.supplier.is_empty() || r.supplier.as_deref() == Some(&f.supplier))
        .filter(|r| f.model.is_empty() || r.model.as_deref() == Some(&f.model))
        .filter(|r| f.group.is_empty() || r.groups.contains(&f.group))
        .filter(|r| f.compliance.is_empty() || r.compliance == f.compliance)
        .collect();
    let body = html! {
        form.filters method="get" action="/dashboard/devices" {
            input type="search" name="q" placeholder="device id contains…" value=(f.q);
            (select("state", "any state", &states, &f.state))
            (select("supplier", "any supplier", &suppliers, &f.supplier))
            (select("model", "any model", &models, &f.model))
            (select("group", "any group", &groups, &f.group))
            (select("compliance", "any compliance", &compliance, &f.compliance))
            button type="submit" { "Filter" }
            a.clear href="/dashboard/devices" { "clear" }
        }
        section.panel #device-list data-live {
            p.muted { (shown.len()) " of " (rows.len()) " devices" }
            table #devices-table {
                thead { tr { th { "device" } th { "state" } th { "connected" } th { "groups" } th { "supplier" } th { "model" } th { "firmware" } th { "compliance" } th { "certificate expires" } } }
                tbody {
                    @for r in &shown {
                        tr data-device=(r.id) {
                            td { a href={"/dashboard/devices/" (urlencode(&r.id))} { (r.id) } }
                            td { (badge(r.state)) }
                            td { @if r.connected { (badge("online")) } @else { span.muted { "no" } } }
                            td { (r.groups.join(", ")) }
                            td { (r.supplier.as_deref().unwrap_or("")) }
                            td { (r.model.as_deref().unwrap_or("")) }
                            td { (r.firmware.as_deref().unwrap_or("")) }
                            td { (badge(&r.compliance)) }
                            td.nowrap { @if let Some(t) = r.expires { (when(t)) } }
                        }
                    }
                }
            }
        }
    };
    layout(&p, body)
}

fn select(name: &str, any: &str, options: &BTreeSet<String>, chosen: &str) -> Markup {
    html! {
        select name=(name) {
            option value="" { (any) }
            @for o in options {
                option value=(o) selected[o == chosen] { (o) }
            }
        }
    }
}

pub(super) async fn detail(
    State(s): State<DashState>,
    Signed(session): Signed,
    Path(id): Path<String>,
) -> Response {
    let mut p = Page {
        key: "devices",
        title: format!("Device {id}"),
        session: &session,
        device: Some(&id),
    };
    let cp = Arc::clone(&s.src.cp);
    let id2 = id.clone();
    let d = match blocking(move || cp.device(&id2)).await {
        Ok(d) => d,
        Err((status, why)) => {
            p.device = None;
            return failed(&p, status, &why);
        }
    };
    let id2 = id.clone();
    let now = crate::dashboard::live::now_ms();
    let (stats, alerts) = match s
        .src
        .detection
        .with_engine(move |e| {
            let alerts: Vec<_> = e
                .alerts(false)
                .into_iter()
                .filter(|a| a.device.as_deref() == Some(id2.as_str()))
                .collect();
            (e.device_stats(&id2, now), alerts)
        })
        .await
    {
        Ok(x) => x,
        Err(e) => return failed(&p, StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    };
    let admin = can_act(&session);
    let base = format!("/api/v1/devices/{}", urlencode(&id));
    let inv = d
        .inventory
        .as_ref()
        .map(|i| serde_json::to_value(i).unwrap_or_default())
        .unwrap_or_default();
    let vulns = d
        .compliance
        .as_ref()
        .map(|c| c.vulnerabilities.clone())
        .unwrap_or_default();
    let body = html! {
        section.panel #device-state data-live {
            div.state-line {
                span.label { "State " }
                span #device-state-badge { (badge(d.state)) }
                " "
                @if d.connected { (badge("online")) } @else { span.muted { "offline" } }
            }
            @for q in &d.quarantine {
                p.quarantine { "Quarantined by " strong { (q.source) } " (" (q.by) ", " (when(q.since)) "): " (q.reason) }
            }
            @if admin && d.state != "revoked" {
                div.actions #device-actions {
                    @if d.state != "quarantined" || !d.quarantine.iter().any(|q| q.source == "operator") {
                        (action("Quarantine", "POST", &format!("{base}/quarantine"), json!({"reason": ""}),
                            &format!("Quarantine {id}? Its live connections are confined at once: it may publish and subscribe to nothing until released."),
                            Some("reason")))
                    }
                    @if d.state == "quarantined" {
                        (action("Release", "POST", &format!("{base}/release"), json!({}),
                            &format!("Release {id} from the operator's quarantine?"), None))
                    }
                    (action("Revoke", "POST", &format!("{base}/revoke"), json!({"reason": ""}),
                        &format!("Revoke {id}? Its certificates are revoked and its connections closed; this cannot be undone."),
                        Some("reason")))
                }
            }
        }
        section.grid2 {
            div.panel {
                h2 { "Identity and certificates" }
                table.kv {
                    tr { th { "id" } td { (d.id) } }
                    tr { th { "groups" } td { (d.groups.join(", ")) } }
                    tr { th { "registered" } td { (when(d.created_at)) } }
                    @if let Some(b) = &d.bootstrap {
                        tr { th { "enrolled by" } td { "supplier " (b.supplier) @if let Some(m) = &b.model { ", model " (m) } ", serial " (b.hardware_serial) } }
                    }
                }
                table {
                    thead { tr { th { "serial" } th { "valid from" } th { "until" } th { "revoked" } } }
                    tbody {
                        @for c in &d.certificates {
                            tr {
                                td { code { (c.serial) } }
                                td.nowrap { (when(c.not_before)) }
                                td.nowrap { (when(c.not_after)) }
                                td.nowrap { @if let Some(r) = c.revoked_at { (when(r)) } }
                            }
                        }
                    }
                }
            }
            div.panel {
                h2 { "Inventory" }
                @if ["supplier", "model", "firmware"].iter().all(|k| inv.get(k).is_none()) {
                    p.muted { "No inventory reported." }
                } @else {
                    table.kv {
                        @for k in ["supplier", "model", "hardware_serial", "firmware"] {
                            @if let Some(v) = inv.get(k).and_then(|v| v.as_str()) {
                                tr { th { (k.replace('_', " ")) } td { (v) } }
                            }
                        }
                        @if let Some(sb) = inv.get("sbom") {
                            tr { th { "SBOM" } td { (sb["format"].as_str().unwrap_or("")) ", " (sb["components"]) " components, " (sb["vulnerabilities"]) " vulnerable" } }
                        }
                    }
                }
                @if let Some(c) = &d.compliance {
                    p { "Compliance: " (badge(&c.state)) }
                    @if !c.failing_rules.is_empty() {
                        p { "Failing rules: " (c.failing_rules.join(", ")) }
                    }
                }
            }
        }
        section.panel {
            h2 { "Vulnerable SBOM components" }
            @if vulns.is_empty() {
                p.muted { "None known." }
            } @else {
                table {
                    thead { tr { th { "component" } th { "version" } th { "advisory" } th { "severity" } th { "fixed in" } th { "summary" } } }
                    tbody {
                        @for v in &vulns {
                            tr {
                                td { (v["component"].as_str().unwrap_or("")) }
                                td { (v["version"].as_str().unwrap_or("")) }
                                td { a href={"/dashboard/compliance#" (v["id"].as_str().unwrap_or(""))} { (v["id"].as_str().unwrap_or("")) } }
                                td { (badge(&v["severity"].as_str().unwrap_or("").to_lowercase())) }
                                td { (v["fixed"].as_str().unwrap_or("")) }
                                td { (v["summary"].as_str().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        section.grid2 {
            div.panel {
                h2 { "Messages per second" }
                div #chart-device-rates.chart {}
            }
            div.panel {
                h2 { "Round-trip time (ms)" }
                div #chart-device-rtt.chart {}
                @if let Some(t) = stats.as_ref().and_then(|st| st.transport.as_ref()) {
                    @let t = serde_json::to_value(t).unwrap_or_default();
                    table.kv #transport-now {
                        @if let Some(o) = t.as_object() {
                            @for (k, v) in o {
                                tr { th { (transport_label(k)) } td { (transport_value(k, v)) } }
                            }
                        }
                    }
                }
            }
        }
        section.panel #device-alerts data-live {
            h2 { "Alerts" }
            @if alerts.is_empty() {
                p.muted { "None." }
            } @else {
                table {
                    thead { tr { th { "raised" } th { "detector" } th { "state" } th { "explanation" } } }
                    tbody {
                        @for a in alerts.iter().rev() {
                            tr {
                                td.nowrap { (when_ms(a.started_at_ms)) }
                                td { a href={"/dashboard/alerts#" (a.id)} { (a.detector) } }
                                td { (badge(&format!("{:?}", a.state).to_lowercase())) }
                                td { (a.explanation) }
                            }
                        }
                    }
                }
            }
        }
        section.panel #device-events data-live {
            h2 { "Recent events" }
            (events_table(&s.dash.live, 30, |e| super::about_device(e, &id)))
        }
    };
    layout(&p, body)
}

/// A transport-health field's name for people (`rtt_ms` → `rtt`, units go with the value).
fn transport_label(k: &str) -> String {
    let k = k
        .strip_suffix("_at_ms")
        .map(|b| format!("{b} at"))
        .or_else(|| k.strip_suffix("_ms").map(str::to_owned))
        .unwrap_or_else(|| k.to_owned());
    k.replace('_', " ")
}

/// A transport-health value with its unit: milliseconds, a time, a rate, a ratio.
fn transport_value(k: &str, v: &serde_json::Value) -> String {
    let n = v.as_f64();
    match (k, n) {
        (k, Some(ms)) if k.ends_with("_at_ms") => when_ms(ms as i64),
        (k, Some(ms)) if k.ends_with("_ms") => format!("{ms:.2} ms"),
        ("delivery_rate", Some(b)) => human_rate(b),
        (k, Some(r)) if k.ends_with("_ratio") => format!("{:.2} %", r * 100.0),
        _ => match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

/// Bytes a second as bits a second, in the unit that reads best.
fn human_rate(bytes_per_sec: f64) -> String {
    let bits = bytes_per_sec * 8.0;
    let (v, unit) = if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else if bits >= 1e3 {
        (bits / 1e3, "kbit/s")
    } else {
        (bits, "bit/s")
    };
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod transport_tests {
    use super::*;

    #[test]
    fn transport_health_reads_with_units() {
        assert_eq!(transport_label("rtt_ms"), "rtt");
        assert_eq!(transport_label("sampled_at_ms"), "sampled at");
        assert_eq!(
            transport_value("rtt_ms", &serde_json::json!(8.979)),
            "8.98 ms"
        );
        assert_eq!(
            transport_value("delivery_rate", &serde_json::json!(5_056_000_000u64)),
            "40.4 Gbit/s"
        );
        assert_eq!(
            transport_value("retrans_ratio", &serde_json::json!(0.012)),
            "1.20 %"
        );
        assert!(transport_value("sampled_at_ms", &serde_json::json!(0)).starts_with("1970-01-01"));
        assert_eq!(transport_value("lost", &serde_json::json!(0)), "0");
    }
}
