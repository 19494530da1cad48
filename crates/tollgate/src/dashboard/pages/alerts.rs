//! The alerts page (`/dashboard/alerts`): active and recent alerts with their explanation
//! (metric, observed, baseline, threshold, mitigation), the operator's verdict, and the
//! suppressions in force; admins can record a verdict and suppress a detector on a device.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde_json::json;

use super::fleet::urlencode;
use super::{action, badge, can_act, failed, layout, when_ms, Page};
use crate::dashboard::{DashState, Signed};

/// Most alerts listed.
const SHOWN: usize = 200;

pub(super) async fn page(State(s): State<DashState>, Signed(session): Signed) -> Response {
    let p = Page {
        key: "alerts",
        title: "Alerts".into(),
        session: &session,
        device: None,
    };
    let now = crate::dashboard::live::now_ms();
    let got = s
        .src
        .detection
        .with_engine(move |e| {
            (
                e.alerts(false),
                serde_json::to_value(e.suppressions(now)).unwrap_or_default(),
            )
        })
        .await;
    let (mut alerts, suppressions) = match got {
        Ok(x) => x,
        Err(e) => return failed(&p, StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    };
    alerts.sort_by_key(|a| std::cmp::Reverse(a.started_at_ms));
    let admin = can_act(&session);
    let active: Vec<_> = alerts
        .iter()
        .filter(|a| a.cleared_at_ms.is_none())
        .collect();
    let recent: Vec<_> = alerts
        .iter()
        .filter(|a| a.cleared_at_ms.is_some())
        .take(SHOWN)
        .collect();
    let table = |list: &[&tollgate_detect::Alert]| {
        html! {
            table.alerts {
                thead { tr {
                    th { "raised" } th { "detector" } th { "device" } th { "severity" }
                    th { "metric" } th.num { "observed" } th.num { "baseline" } th.num { "threshold" }
                    th { "mitigation" } th { "verdict" } @if admin { th { "" } }
                } }
                tbody {
                    @for a in list {
                        tr.alert-row id=(a.id) data-alert=(a.id) {
                            td.nowrap { (when_ms(a.started_at_ms)) }
                            td { (a.detector) }
                            td { @if let Some(d) = &a.device { a href={"/dashboard/devices/" (urlencode(d))} { (d) } } @else { (a.cohort.as_deref().unwrap_or("")) } }
                            td { (badge(&format!("{:?}", a.severity).to_lowercase())) }
                            td { code { (a.metric) } }
                            td.num { (num(a.observed)) }
                            td.num { @if let Some(b) = a.baseline { (num(b)) } @else { "—" } }
                            td.num { (num(a.threshold)) }
                            td { (a.mitigation) }
                            td { @if let Some(v) = &a.verdict { (serde_json::to_value(v).ok().and_then(|v| v.get("verdict").and_then(|x| x.as_str().map(str::to_owned))).unwrap_or_default()) } }
                            @if admin {
                                td.actions {
                                    (action("True positive", "POST", &format!("/api/v1/alerts/{}/verdict", urlencode(&a.id)),
                                        json!({"verdict": "true_positive", "note": ""}),
                                        "Record this alert as a true positive?", Some("note")))
                                    (action("False positive", "POST", &format!("/api/v1/alerts/{}/verdict", urlencode(&a.id)),
                                        json!({"verdict": "false_positive", "note": ""}),
                                        "Record this alert as a false positive?", Some("note")))
                                    (action("Suppress 2 h", "POST", "/api/v1/alerts/suppressions",
                                        json!({"detector": a.detector, "device": a.device, "for": "2h", "reason": ""}),
                                        &format!("Suppress {} {} for two hours?", a.detector, a.device.as_deref().map(|d| format!("on {d}")).unwrap_or_default()),
                                        Some("reason")))
                                }
                            }
                        }
                        tr.explain { td colspan=(if admin { 11 } else { 10 }) { (a.explanation) } }
                    }
                }
            }
        }
    };
    let body = html! {
        section.panel #alerts-active data-live {
            h2 { "Active (" (active.len()) ")" }
            @if active.is_empty() { p.muted { "No alert is active." } } @else { (table(&active)) }
        }
        section.panel #alerts-recent data-live {
            h2 { "Recent" }
            @if recent.is_empty() { p.muted { "No alert has cleared yet." } } @else { (table(&recent)) }
        }
        section.panel #suppressions data-live {
            h2 { "Suppressions" }
            @match suppressions.as_array() {
                Some(list) if !list.is_empty() => {
                    table {
                        thead { tr { th { "detector" } th { "device" } th { "until" } th { "reason" } th { "by" } @if admin { th {} } } }
                        tbody {
                            @for x in list {
                                tr {
                                    td { (x["detector"].as_str().unwrap_or("any")) }
                                    td { (x["device"].as_str().unwrap_or("any")) }
                                    td.nowrap { @if let Some(u) = x["until_ms"].as_i64() { (when_ms(u)) } }
                                    td { (x["reason"].as_str().unwrap_or("")) }
                                    td { (x["by"].as_str().unwrap_or("")) }
                                    @if admin {
                                        @if let Some(id) = x["id"].as_str() {
                                            td { (action("Remove", "DELETE", &format!("/api/v1/alerts/suppressions/{}", urlencode(id)), json!(null), "Remove this suppression?", None)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                _ => { p.muted { "None." } }
            }
        }
    };
    layout(&p, body)
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}
