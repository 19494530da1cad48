//! The compliance page (`/dashboard/compliance`: each advisory that hits the fleet with the
//! suppliers, models and devices it hits; each device's state, failing rules and
//! vulnerabilities; the waivers) and the configuration-findings page (`/dashboard/findings`:
//! open findings with their evidence and remediation, and their suppressions).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde_json::json;

use super::fleet::urlencode;
use super::{action, badge, blocking, can_act, failed, layout, when, Page};
use crate::dashboard::{DashState, Signed};

/// Advisories detailed at most.
const ADVISORIES: usize = 100;

pub(super) async fn page(State(s): State<DashState>, Signed(session): Signed) -> Response {
    let p = Page {
        key: "compliance",
        title: "Compliance".into(),
        session: &session,
        device: None,
    };
    let cp = Arc::clone(&s.src.cp);
    let got = blocking(move || {
        let report = cp.compliance_report(None)?;
        let ids: BTreeSet<String> = report
            .iter()
            .flat_map(|d| d.vulnerabilities.iter())
            .filter_map(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
            .collect();
        let affected: Vec<_> = ids
            .iter()
            .take(ADVISORIES)
            .filter_map(|id| cp.advisory_affected(id).ok())
            .collect();
        Ok((report, affected, cp.waivers(), cp.compliance_status()))
    })
    .await;
    let (report, affected, waivers, status) = match got {
        Ok(x) => x,
        Err((st, why)) => return failed(&p, st, &why),
    };
    let admin = can_act(&session);
    let body = html! {
        section.panel {
            p.muted {
                "Profile " code { (status["profile"]["file"].as_str().unwrap_or("")) } ", "
                (status["profile"]["rules"].as_array().map_or(0, Vec::len)) " rules; "
                (status["advisories"]["records"]) " advisories; "
                (status["sboms"]) " SBOMs; " (status["vex_statements"]) " VEX statements."
                @if let Some(e) = status["profile"]["error"].as_str() { " " span.error { (e) } }
            }
        }
        section.panel #by-advisory data-live {
            h2 { "By advisory" }
            @if affected.is_empty() {
                p.muted { "No known advisory affects a device's firmware." }
            } @else {
                table {
                    thead { tr { th { "advisory" } th { "severity" } th { "summary" } th { "suppliers" } th { "models (firmware, component, fixed in)" } th { "devices" } } }
                    tbody {
                        @for a in &affected {
                            tr id=(a.advisory.id) {
                                td {
                                    strong { (a.advisory.id) }
                                    @for alias in &a.advisory.aliases { br; span.muted id=(alias) { (alias) } }
                                }
                                td { @if let Some(sev) = &a.advisory.severity { (badge(&format!("{sev:?}").to_lowercase())) } }
                                td { (a.advisory.summary.as_deref().unwrap_or("")) }
                                td { (a.suppliers.join(", ")) }
                                td {
                                    @for m in &a.models {
                                        div { (m.supplier) " " (m.model) " " (m.firmware) ": " (m.component) @if let Some(f) = &m.fixed { " → " (f) } }
                                    }
                                }
                                td {
                                    @for d in &a.devices {
                                        a href={"/dashboard/devices/" (urlencode(d))} { (d) } " "
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel #by-device data-live {
            h2 { "By device" }
            table {
                thead { tr { th { "device" } th { "state" } th { "supplier" } th { "model" } th { "firmware" } th { "failing rules" } th.num { "vulnerabilities" } } }
                tbody {
                    @for d in &report {
                        tr {
                            td { a href={"/dashboard/devices/" (urlencode(&d.device))} { (d.device) } }
                            td { (badge(&d.state)) }
                            td { (d.inventory.supplier.as_deref().unwrap_or("")) }
                            td { (d.inventory.model.as_deref().unwrap_or("")) }
                            td { (d.inventory.firmware.as_deref().unwrap_or("")) }
                            td { (d.failing_rules.join(", ")) }
                            td.num { (d.vulnerabilities.len()) }
                        }
                    }
                }
            }
        }
        section.panel #waivers data-live {
            h2 { "Waivers" }
            @if waivers.is_empty() {
                p.muted { "None." }
            } @else {
                table {
                    thead { tr { th { "rule" } th { "device" } th { "model" } th { "reason" } th { "by" } th { "expires" } @if admin { th {} } } }
                    tbody {
                        @for w in &waivers {
                            tr.expired[w.expired] {
                                td { (w.rule) }
                                td { (w.device.as_deref().unwrap_or("any")) }
                                td { (w.model.as_deref().unwrap_or("any")) }
                                td { (w.reason) }
                                td { (w.author) }
                                td.nowrap { (when(w.expires_at)) @if w.expired { " (expired)" } }
                                @if admin {
                                    td { (action("Remove", "DELETE", &format!("/api/v1/compliance/waivers/{}", w.id), json!(null), "Remove this waiver? The rule applies again at the next evaluation.", None)) }
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

pub(super) async fn findings(State(s): State<DashState>, Signed(session): Signed) -> Response {
    let p = Page {
        key: "findings",
        title: "Configuration findings".into(),
        session: &session,
        device: None,
    };
    let Some(a) = s.src.config_audit.clone() else {
        return failed(
            &p,
            StatusCode::SERVICE_UNAVAILABLE,
            "The configuration audit is not running.",
        );
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let got = tokio::task::spawn_blocking(move || {
        let list = a.list(false);
        let sup = a.with_book(|b| b.suppressions(now));
        (list, sup)
    })
    .await;
    let (list, suppressions) = match got {
        Ok((l, Ok(s))) => (l, s),
        Ok((_, Err(e))) => return failed(&p, StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
        Err(e) => return failed(&p, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let admin = can_act(&session);
    let body = html! {
        section.panel #findings-open data-live {
            h2 { "Open (" (list.len()) ")" }
            @if list.is_empty() {
                p.muted { "No open finding." }
            } @else {
                table {
                    thead { tr { th { "severity" } th { "rule" } th { "resource" } th { "evidence" } th { "remediation" } th { "since" } @if admin { th {} } } }
                    tbody {
                        @for t in &list {
                            tr.suppressed[t.suppressed.is_some()] {
                                td { (badge(&format!("{:?}", t.finding.severity).to_lowercase())) }
                                td { code { (t.finding.rule) } }
                                td { (t.finding.resource) }
                                td { (t.finding.evidence) }
                                td { (t.finding.remediation) }
                                td.nowrap { (when(t.first_seen)) }
                                @if admin {
                                    td { @if t.suppressed.is_none() {
                                        (action("Suppress 30 d", "POST", "/api/v1/findings/suppressions",
                                            json!({"rule": t.finding.rule, "resource": t.finding.resource, "for": "30d", "reason": ""}),
                                            &format!("Suppress {} on {} for 30 days?", t.finding.rule, t.finding.resource), Some("reason")))
                                    } @else { span.muted { "suppressed" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel #findings-suppressions data-live {
            h2 { "Suppressions" }
            @if suppressions.is_empty() {
                p.muted { "None." }
            } @else {
                table {
                    thead { tr { th { "rule" } th { "resource" } th { "reason" } th { "by" } th { "until" } @if admin { th {} } } }
                    tbody {
                        @for x in &suppressions {
                            tr {
                                td { code { (x.rule) } }
                                td { (x.resource.as_deref().unwrap_or("any")) }
                                td { (x.reason) }
                                td { (x.author) }
                                td.nowrap { (when(x.until)) }
                                @if admin {
                                    td { (action("Remove", "DELETE", &format!("/api/v1/findings/suppressions/{}", urlencode(&x.id)), json!(null), "Remove this suppression?", None)) }
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
