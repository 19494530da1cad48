//! The fleet page (`/dashboard/`): connections, message rates (a live chart), active alerts,
//! quarantined devices, the compliance summary, and the fleet's RTT and retransmissions.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{badge, blocking, events_table, failed, layout, when_ms, Page};
use crate::dashboard::{DashState, Signed};

pub(super) async fn page(State(s): State<DashState>, Signed(session): Signed) -> Response {
    let p = Page {
        key: "fleet",
        title: "Fleet".into(),
        session: &session,
        device: None,
    };
    let cp = Arc::clone(&s.src.cp);
    let devices = match blocking(move || cp.devices()).await {
        Ok(d) => d,
        Err((status, why)) => return failed(&p, status, &why),
    };
    let cp = Arc::clone(&s.src.cp);
    let report = blocking(move || cp.compliance_report(None))
        .await
        .unwrap_or_default();
    let mut compliance = std::collections::BTreeMap::<String, usize>::new();
    for d in &report {
        *compliance.entry(d.state.clone()).or_default() += 1;
    }
    let now = crate::dashboard::live::now_ms();
    let (alerts, fleet) = match s
        .src
        .detection
        .with_engine(move |e| (e.alerts(true), e.fleet_stats(now)))
        .await
    {
        Ok(x) => x,
        Err(e) => return failed(&p, StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    };
    let mut conns = s.src.broker.connections();
    conns.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    let quarantined: Vec<_> = devices
        .iter()
        .filter(|d| d.state == "quarantined")
        .collect();
    let revoked = devices.iter().filter(|d| d.state == "revoked").count();
    let f1 = |v: Option<f64>| v.map_or("—".to_owned(), |x| format!("{x:.1}"));
    let pct = |v: Option<f64>| v.map_or("—".to_owned(), |x| format!("{:.2} %", x * 100.0));
    let body = html! {
        section.cards #summary data-live {
            div.card { div.label { "Devices" } div.value #c-devices { (devices.len()) } div.sub { (revoked) " revoked" } }
            div.card { div.label { "Connected" } div.value #c-connections { (conns.len()) } div.sub { (fleet.online) " online in the window" } }
            div.card.warn[!quarantined.is_empty()] { div.label { "Quarantined" } div.value #c-quarantined { (quarantined.len()) } }
            div.card.warn[!alerts.is_empty()] { div.label { "Active alerts" } div.value #c-alerts { (alerts.len()) } }
            div.card { div.label { "Compliance" } div.value { (compliance_line(&compliance)) } }
        }
        section.grid2 {
            div.panel {
                h2 { "Message rates" }
                p.muted { "Messages per second, live (last five minutes)." }
                div #chart-rates.chart {}
            }
            div.panel {
                h2 { "Round-trip time and retransmissions" }
                p.muted { "Across online devices, from the kernel's TCP_INFO." }
                table.kv #rtt-panel data-live {
                    tr { th { "RTT p50" } td #rtt-p50 { (f1(fleet.rtt_ms_p50)) " ms" } }
                    tr { th { "RTT p99" } td #rtt-p99 { (f1(fleet.rtt_ms_p99)) " ms" } }
                    tr { th { "retransmitted p50" } td #retrans-p50 { (pct(fleet.retrans_ratio_p50)) } }
                    tr { th { "retransmitted p99" } td #retrans-p99 { (pct(fleet.retrans_ratio_p99)) } }
                }
                div #chart-rtt.chart {}
            }
        }
        section.grid2 {
            div.panel #active-alerts data-live {
                h2 { "Active alerts" }
                @if alerts.is_empty() {
                    p.muted { "None." }
                } @else {
                    table {
                        thead { tr { th { "raised" } th { "detector" } th { "device" } th { "severity" } th { "explanation" } } }
                        tbody {
                            @for a in &alerts {
                                tr.alert-row data-alert=(a.id) {
                                    td.nowrap { (when_ms(a.started_at_ms)) }
                                    td { a href={"/dashboard/alerts#" (a.id)} { (a.detector) } }
                                    td { @if let Some(d) = &a.device { a href={"/dashboard/devices/" (urlencode(d))} { (d) } } }
                                    td { (badge(&format!("{:?}", a.severity).to_lowercase())) }
                                    td { (a.explanation) }
                                }
                            }
                        }
                    }
                }
            }
            div.panel #quarantined data-live {
                h2 { "Quarantined devices" }
                @if quarantined.is_empty() {
                    p.muted { "None." }
                } @else {
                    table {
                        thead { tr { th { "device" } th { "by" } th { "reason" } } }
                        tbody {
                            @for d in &quarantined {
                                @for q in &d.quarantine {
                                    tr {
                                        td { a href={"/dashboard/devices/" (urlencode(&d.id))} { (d.id) } }
                                        td { (q.source) " (" (q.by) ")" }
                                        td { (q.reason) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel #connections data-live {
            h2 { "Connections" }
            @if conns.is_empty() {
                p.muted { "No device is connected." }
            } @else {
                table #connections-table {
                    thead { tr { th { "device" } th { "client id" } th { "address" } th { "since" } th.num { "in" } th.num { "out" } th.num { "denied" } th.num { "RTT ms" } } }
                    tbody {
                        @for c in &conns {
                            tr data-device=(c.device_id) {
                                td { a href={"/dashboard/devices/" (urlencode(&c.device_id))} { (c.device_id) } }
                                td { (c.client_id) }
                                td { @if let Some(a) = c.addr { (a) } }
                                td.nowrap { (when_ms(c.connected_at_ms)) }
                                td.num { (c.meter.messages_in) }
                                td.num { (c.meter.messages_out) }
                                td.num { (c.meter.denied()) }
                                td.num { @if let Some(t) = &c.transport { (format!("{:.1}", f64::from(t.rtt_us) / 1000.0)) } }
                            }
                        }
                    }
                }
            }
        }
        section.panel #recent data-live {
            h2 { "Recent events" }
            (events_table(&s.dash.live, 15, |_| true))
        }
    };
    layout(&p, body)
}

/// "compliant 12  non_compliant 1": devices per compliance state.
fn compliance_line(counts: &std::collections::BTreeMap<String, usize>) -> maud::Markup {
    html! {
        @if counts.is_empty() {
            span.muted { "no devices" }
        }
        @for (k, n) in counts {
            span.pair { (badge(k)) " " (n) }
        }
    }
}

/// Percent-encode one path segment.
pub(super) fn urlencode(s: &str) -> String {
    crate::client::path_escape(s)
}
