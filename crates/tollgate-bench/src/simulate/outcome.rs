//! Judging: alerts tailed from `events.log`, matched against the attacks launched; the report
//! (Markdown and JSON).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::attacks::Kind;

/// Alerts remembered at most (beyond, the rest are counted, not kept).
const MAX_ALERTS: usize = 100_000;

/// One alert as first seen `active` in the events log.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: String,
    pub detector: String,
    pub device: Option<String>,
    pub cohort: Option<String>,
    pub severity: String,
    pub explanation: String,
    /// Seconds since the fleet started, when the tailer read it (polled every 200 ms).
    pub at_s: f64,
}

#[derive(Default)]
pub struct Seen {
    pub alerts: Vec<Alert>,
    pub dropped: u64,
    ids: HashSet<String>,
}

/// Follow `events.log` from its current end; every new `active` alert goes to `seen`.
pub fn tail(path: PathBuf, t0: Instant, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut partial = String::new();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // rotated or truncated
            }
            if len == pos || f.seek(SeekFrom::Start(pos)).is_err() {
                continue;
            }
            let mut buf = Vec::new();
            // At most 16 MiB per poll.
            if (&mut f).take(16 << 20).read_to_end(&mut buf).is_err() {
                continue;
            }
            pos += buf.len() as u64;
            partial.push_str(&String::from_utf8_lossy(&buf));
            let at_s = t0.elapsed().as_secs_f64();
            while let Some(nl) = partial.find('\n') {
                let line: String = partial.drain(..=nl).collect();
                if let Some(a) = parse(&line, at_s) {
                    if let Ok(mut s) = seen.lock() {
                        if s.ids.insert(a.id.clone()) {
                            if s.alerts.len() < MAX_ALERTS {
                                s.alerts.push(a);
                            } else {
                                s.dropped += 1;
                            }
                        }
                    }
                }
            }
        }
    })
}

fn parse(line: &str, at_s: f64) -> Option<Alert> {
    if !line.contains("\"alert\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["type"] != "alert" || v["state"] != "active" {
        return None;
    }
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    Some(Alert {
        id: s("id")?,
        detector: s("detector")?,
        device: s("device"),
        cohort: s("cohort"),
        severity: s("severity").unwrap_or_default(),
        explanation: s("explanation").unwrap_or_default(),
        at_s,
    })
}

/// One launched attack and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attack: Kind,
    pub rep: usize,
    pub detector: &'static str,
    /// The attacked device (none for a cohort attack).
    pub device: Option<String>,
    /// Devices whose alerts are the attack's doing (the device, or the cohort's members).
    #[serde(skip)]
    pub involved: Vec<String>,
    pub cohort: Option<String>,
    /// Seconds since the fleet started.
    pub onset_s: f64,
    pub skipped: Option<String>,
    pub detected_after_s: Option<f64>,
    pub alert: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub attack: Kind,
    pub detector: &'static str,
    pub attempted: usize,
    pub detected: usize,
    pub skipped: usize,
    pub skip_reason: Option<String>,
    pub recall: Option<f64>,
    pub ttd_median_s: Option<f64>,
    pub ttd_max_s: Option<f64>,
    pub devices: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub devices: usize,
    pub bucket_s: u64,
    pub compression: f64,
    pub period_ms: u64,
    pub learning_s: f64,
    /// Real seconds the fleet ran (from the first connect to the end).
    pub real_duration_s: f64,
    /// Connected device-seconds integrated every second, in hours.
    pub device_hours_real: f64,
    pub device_hours_simulated: f64,
    pub false_alarms: usize,
    pub false_alarms_per_1000_device_hours_real: Option<f64>,
    pub false_alarms_per_1000_device_hours_simulated: Option<f64>,
    /// Alerts on attacked devices other than the detection itself (another detector, or a
    /// second alert): side effects of the attack, not false alarms.
    pub collateral: Vec<Alert>,
    pub false_alarm_alerts: Vec<Alert>,
    pub summaries: Vec<Summary>,
    pub attempts: Vec<Attempt>,
    pub messages_published: u64,
    pub connects: u64,
    pub client_errors: u64,
    pub last_client_error: Option<String>,
    pub alerts_not_kept: u64,
}

impl Report {
    /// Every attempted attack detected, and no false alarm.
    pub fn passed(&self) -> bool {
        self.false_alarms == 0
            && self
                .attempts
                .iter()
                .all(|a| a.skipped.is_some() || a.detected_after_s.is_some())
    }
}

/// Match alerts to attempts: the first `active` alert of the expected detector on the device
/// (or, for a cohort, the cohort-wide alert) within `timeout` after onset detects it. An
/// alert on an attacked device (after its onset) that detected nothing is collateral; any
/// other alert is a false alarm.
pub fn judge(attempts: &mut [Attempt], alerts: &[Alert], timeout: f64) -> (Vec<Alert>, Vec<Alert>) {
    let mut used: HashSet<&str> = HashSet::new();
    for a in attempts.iter_mut().filter(|a| a.skipped.is_none()) {
        let hit = alerts.iter().find(|al| {
            !used.contains(al.id.as_str())
                && al.detector == a.detector
                && al.at_s >= a.onset_s - 0.5
                && al.at_s <= a.onset_s + timeout
                && match &a.device {
                    Some(d) => al.device.as_deref() == Some(d.as_str()),
                    None => al.device.is_none(),
                }
        });
        if let Some(al) = hit {
            used.insert(al.id.as_str());
            a.detected_after_s = Some((al.at_s - a.onset_s).max(0.0));
            a.alert = Some(al.id.clone());
        }
    }
    let mut collateral = Vec::new();
    let mut false_alarms = Vec::new();
    for al in alerts.iter().filter(|al| !used.contains(al.id.as_str())) {
        let attacked = attempts.iter().any(|a| {
            a.skipped.is_none()
                && al.at_s >= a.onset_s - 0.5
                && match &al.device {
                    Some(d) => a.involved.iter().any(|i| i == d),
                    None => a.device.is_none(),
                }
        });
        if attacked {
            collateral.push(al.clone());
        } else {
            false_alarms.push(al.clone());
        }
    }
    (collateral, false_alarms)
}

pub fn summarize(attempts: &[Attempt]) -> Vec<Summary> {
    let mut by: BTreeMap<Kind, Vec<&Attempt>> = BTreeMap::new();
    for a in attempts {
        by.entry(a.attack).or_default().push(a);
    }
    by.into_iter()
        .map(|(kind, v)| {
            let tried: Vec<&&Attempt> = v.iter().filter(|a| a.skipped.is_none()).collect();
            let mut ttd: Vec<f64> = tried.iter().filter_map(|a| a.detected_after_s).collect();
            ttd.sort_by(f64::total_cmp);
            Summary {
                attack: kind,
                detector: kind.detector(),
                attempted: tried.len(),
                detected: ttd.len(),
                skipped: v.len() - tried.len(),
                skip_reason: v.iter().find_map(|a| a.skipped.clone()),
                recall: (!tried.is_empty()).then(|| ttd.len() as f64 / tried.len() as f64),
                ttd_median_s: median(&ttd),
                ttd_max_s: ttd.last().copied(),
                devices: v
                    .iter()
                    .map(|a| {
                        a.device
                            .clone()
                            .or_else(|| a.cohort.clone())
                            .unwrap_or_default()
                    })
                    .collect(),
            }
        })
        .collect()
}

fn median(sorted: &[f64]) -> Option<f64> {
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("–".into(), |s| format!("{s:.1} s"))
}

pub fn markdown(r: &Report, command: &str) -> String {
    let mut s = String::new();
    s.push_str("# tollgate-bench simulate\n\n");
    s.push_str(&format!("`{command}`\n\n"));
    s.push_str(&format!(
        "{} devices, telemetry every {} ms (±20 %), statistics buckets of {} s: {:.0}× time compression (a simulated minute is {} real seconds). Learning phase {:.0} s real.\n\n",
        r.devices, r.period_ms, r.bucket_s, r.compression, r.bucket_s, r.learning_s
    ));
    if !r.summaries.is_empty() {
        s.push_str("## Attacks\n\n| attack | detector | attempted | detected | recall | time to detect (median) | (max) | devices |\n|---|---|---:|---:|---:|---:|---:|---|\n");
        for x in &r.summaries {
            let recall = match (x.recall, &x.skip_reason) {
                (Some(rc), _) => format!("{:.0} %", rc * 100.0),
                (None, Some(why)) => why.clone(),
                _ => "–".into(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                x.attack.name(),
                x.detector,
                x.attempted,
                x.detected,
                recall,
                secs(x.ttd_median_s),
                secs(x.ttd_max_s),
                x.devices.join(", ")
            ));
        }
        s.push_str("\nTime to detect: from the attack's onset to the tailer reading the first `active` alert of the expected detector for that device in `events.log` (polled every 200 ms); missed if none within the timeout. Real seconds (not compressed).\n\n");
    }
    s.push_str("## False alarms\n\n");
    s.push_str(&format!(
        "| real duration | device-hours (real) | device-hours (simulated, ×{:.0}) | false alarms | per 1,000 device-hours (real) | per 1,000 device-hours (simulated) |\n|---:|---:|---:|---:|---:|---:|\n| {:.0} s | {:.2} | {:.1} | {} | {} | {} |\n\n",
        r.compression,
        r.real_duration_s,
        r.device_hours_real,
        r.device_hours_simulated,
        r.false_alarms,
        r.false_alarms_per_1000_device_hours_real
            .map_or("–".into(), |v| format!("{v:.1}")),
        r.false_alarms_per_1000_device_hours_simulated
            .map_or("–".into(), |v| format!("{v:.2}")),
    ));
    for a in &r.false_alarm_alerts {
        s.push_str(&format!(
            "- false alarm at {:.0} s: {} on {} — {}\n",
            a.at_s,
            a.detector,
            a.device.as_deref().or(a.cohort.as_deref()).unwrap_or("?"),
            a.explanation
        ));
    }
    if !r.collateral.is_empty() {
        s.push_str(
            "\nOther alerts on attacked devices (side effects, not counted as false alarms):\n\n",
        );
        for a in &r.collateral {
            s.push_str(&format!(
                "- at {:.0} s: {} on {} — {}\n",
                a.at_s,
                a.detector,
                a.device.as_deref().or(a.cohort.as_deref()).unwrap_or("?"),
                a.explanation
            ));
        }
    }
    s.push_str(&format!(
        "\nFleet: {} messages published, {} connects, {} client errors{}.\n",
        r.messages_published,
        r.connects,
        r.client_errors,
        r.last_client_error
            .as_deref()
            .map(|e| format!(" (last: {e})"))
            .unwrap_or_default()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, detector: &str, device: Option<&str>, at_s: f64) -> Alert {
        Alert {
            id: id.into(),
            detector: detector.into(),
            device: device.map(Into::into),
            cohort: None,
            severity: "low".into(),
            explanation: String::new(),
            at_s,
        }
    }

    fn attempt(kind: Kind, device: Option<&str>, onset_s: f64) -> Attempt {
        Attempt {
            attack: kind,
            rep: 0,
            detector: kind.detector(),
            device: device.map(Into::into),
            involved: device.map(|d| vec![d.to_string()]).unwrap_or_default(),
            cohort: None,
            onset_s,
            skipped: None,
            detected_after_s: None,
            alert: None,
        }
    }

    #[test]
    fn alerts_are_detections_side_effects_or_false_alarms() {
        let mut attempts = vec![
            attempt(Kind::TrafficSpike, Some("d1"), 100.0),
            attempt(Kind::Inactive, Some("d2"), 200.0),
        ];
        let alerts = vec![
            alert("a0", "traffic_spike", Some("d1"), 50.0), // before onset: false alarm
            alert("a1", "traffic_spike", Some("d1"), 103.0), // detection
            alert("a2", "link_degradation", Some("d1"), 110.0), // side effect
            alert("a3", "inactive", Some("d3"), 150.0),     // another device: false alarm
            alert("a4", "inactive", Some("d2"), 400.0),     // too late: side effect
        ];
        let (collateral, false_alarms) = judge(&mut attempts, &alerts, 120.0);
        assert_eq!(attempts[0].detected_after_s, Some(3.0));
        assert_eq!(attempts[1].detected_after_s, None);
        let ids = |v: &[Alert]| v.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&collateral), ["a2", "a4"]);
        assert_eq!(ids(&false_alarms), ["a0", "a3"]);
        let s = summarize(&attempts);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].recall, Some(1.0));
    }

    #[test]
    fn only_active_alert_lines_parse() {
        let l = r#"{"seq":3,"ts":"t","type":"alert","id":"x","detector":"inactive","device":"d","severity":"low","state":"active"}"#;
        assert_eq!(parse(l, 1.0).map(|a| a.id), Some("x".into()));
        assert!(parse(&l.replace("active", "cleared"), 1.0).is_none());
        assert!(parse("{\"type\":\"connection_accepted\"}", 1.0).is_none());
    }
}
