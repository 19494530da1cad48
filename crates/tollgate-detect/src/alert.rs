//! Alerts, their lifecycle, verdicts and suppressions.
//!
//! Owns the alert records and the book that keeps them: one active alert per (detector, device
//! or cohort); a re-breach updates it (observed value, `updated_at_ms`) without a new alert or a
//! new order; a clear moves it to a bounded history (the last [`MAX_CLEARED`] cleared alerts).
//! It must not judge breaches nor order mitigations.
//!
//! Lifecycle: a named detector raises on its first breaching evaluation and clears after three
//! consecutive non-breaching ones *and* `clear_after` since its last breach (event-based
//! detectors set `clear_after`; `inactive` clears on the first evaluation with messages); a
//! custom rule raises after `datapoints_to_alarm` consecutive breaching evaluations and clears
//! after `datapoints_to_clear` non-breaching ones. An unexpired suppression that matches the
//! detector and/or the device prevents raising (and so mitigating); existing alerts stay.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::{DetectError, DeviceId, Severity};

/// Cleared alerts kept.
pub const MAX_CLEARED: usize = 10_000;
/// Suppressions kept (expired ones are dropped first).
pub const MAX_SUPPRESSIONS: usize = 10_000;

/// Whether an alert is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Still breaching (or not yet cleared).
    Active,
    /// Cleared.
    Cleared,
}

/// An operator's judgment of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// A real attack or failure.
    TruePositive,
    /// Nothing happened.
    FalsePositive,
    /// It happened, but it was expected.
    BenignPositive,
}

/// A verdict with who gave it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    /// The judgment.
    pub kind: VerdictKind,
    /// Who.
    pub by: String,
    /// When.
    pub at_ms: i64,
    /// Why.
    pub note: Option<String>,
}

/// One alert.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// Unique: `alert-<started_at_ms base36>-<counter>`.
    pub id: String,
    /// A named detector, `network_degradation`, or `rule:<name>`.
    pub detector: String,
    /// The device; `None` for a cohort-wide alert.
    #[schema(value_type = Option<String>)]
    pub device: Option<DeviceId>,
    /// `model:X` / `group:Y` when judged against a cohort or cohort-wide.
    pub cohort: Option<String>,
    /// How serious.
    pub severity: Severity,
    /// Active or cleared.
    pub state: AlertState,
    /// Raised at.
    pub started_at_ms: i64,
    /// Last changed at.
    pub updated_at_ms: i64,
    /// Cleared at.
    pub cleared_at_ms: Option<i64>,
    /// What was measured, e.g. `messages_in_per_min`, `rtt_ms`.
    pub metric: String,
    /// Its value at the latest breach.
    pub observed: f64,
    /// The device's or cohort's median when one was used.
    pub baseline: Option<f64>,
    /// The value it breached.
    pub threshold: f64,
    /// What was done: `notify`, `throttle`, `quarantine`, `disconnect`, `revoke`, or notify
    /// with the reason no order was made.
    pub mitigation: String,
    /// What was seen against what was expected, in one sentence.
    pub explanation: String,
    /// The operator's verdict.
    pub verdict: Option<Verdict>,
    #[serde(skip)]
    pub(crate) seq: u64,
}

/// A request to suppress alerts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SuppressionRequest {
    /// A detector name (all devices when `device` is `None`).
    pub detector: Option<String>,
    /// A device (all detectors when `detector` is `None`).
    pub device: Option<DeviceId>,
    /// Until when.
    pub until_ms: i64,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
}

/// An active suppression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = AlertSuppression)]
pub struct Suppression {
    /// Unique: `supp-<created_at_ms base36>-<counter>`.
    pub id: String,
    /// Detector matched (any when `None`).
    pub detector: Option<String>,
    /// Device matched (any when `None`).
    #[schema(value_type = Option<String>)]
    pub device: Option<DeviceId>,
    /// Until when.
    pub until_ms: i64,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// When it was made.
    pub created_at_ms: i64,
}

impl Suppression {
    /// Whether it stops `detector` on `device` at `now_ms`. A device suppression also covers a
    /// cohort-wide alert only when it names no device.
    pub fn matches(&self, detector: &str, device: Option<&str>, now_ms: i64) -> bool {
        now_ms < self.until_ms
            && self.detector.as_deref().is_none_or(|d| d == detector)
            && self.device.as_deref().is_none_or(|d| Some(d) == device)
    }
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Subject {
    Device(DeviceId),
    Cohort(String),
}

/// An alert's lifecycle state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Track {
    pub breaches: u32,
    pub oks: u32,
    pub last_breach_ms: i64,
    /// The tick that last breached.
    pub breached_tick: u64,
    /// The active alert's id.
    pub active: Option<String>,
}

/// Every alert the engine holds.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub active: HashMap<String, Alert>,
    pub tracks: HashMap<(String, Subject), Track>,
    pub cleared: VecDeque<Alert>,
    pub counter: u64,
    pub suppressions: Vec<Suppression>,
}

/// `n` in base 36 (lower case; negative with a leading `-`).
pub(crate) fn base36(n: i64) -> String {
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    let mut out = Vec::new();
    loop {
        let d = (v % 36) as u8;
        out.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        v /= 36;
        if v == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

impl Book {
    pub fn next_id(&mut self, prefix: &str, at_ms: i64) -> (String, u64) {
        self.counter = self.counter.wrapping_add(1);
        (
            format!("{prefix}-{}-{}", base36(at_ms), self.counter),
            self.counter,
        )
    }

    pub fn suppressed(&self, detector: &str, device: Option<&str>, now_ms: i64) -> bool {
        self.suppressions
            .iter()
            .any(|s| s.matches(detector, device, now_ms))
    }

    /// Move an active alert to the cleared history.
    pub fn clear(&mut self, id: &str, now_ms: i64) -> Option<Alert> {
        let mut a = self.active.remove(id)?;
        a.state = AlertState::Cleared;
        a.cleared_at_ms = Some(now_ms);
        a.updated_at_ms = now_ms;
        if self.cleared.len() >= MAX_CLEARED {
            self.cleared.pop_front();
        }
        self.cleared.push_back(a.clone());
        Some(a)
    }

    pub fn list(&self, active_only: bool) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.active.values().cloned().collect();
        if !active_only {
            v.extend(self.cleared.iter().cloned());
        }
        v.sort_by(|a, b| {
            b.started_at_ms
                .cmp(&a.started_at_ms)
                .then(b.seq.cmp(&a.seq))
        });
        v
    }

    pub fn get(&self, id: &str) -> Option<&Alert> {
        self.active
            .get(id)
            .or_else(|| self.cleared.iter().rev().find(|a| a.id == id))
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Alert> {
        if self.active.contains_key(id) {
            return self.active.get_mut(id);
        }
        self.cleared.iter_mut().rev().find(|a| a.id == id)
    }

    pub fn set_verdict(&mut self, id: &str, verdict: Verdict) -> Result<Alert, DetectError> {
        let a = self
            .get_mut(id)
            .ok_or_else(|| DetectError::UnknownAlert(id.to_owned()))?;
        a.verdict = Some(verdict);
        Ok(a.clone())
    }

    pub fn suppress(
        &mut self,
        s: SuppressionRequest,
        now_ms: i64,
    ) -> Result<Suppression, DetectError> {
        if s.detector.is_none() && s.device.is_none() {
            return Err(DetectError::InvalidSuppression(
                "name a detector, a device, or both".into(),
            ));
        }
        if s.until_ms <= now_ms {
            return Err(DetectError::InvalidSuppression(format!(
                "until_ms {} is not in the future (now {now_ms})",
                s.until_ms
            )));
        }
        if let Some(d) = &s.detector {
            if !crate::detectors::is_detector_name(d) {
                return Err(DetectError::InvalidSuppression(format!(
                    "unknown detector {d:?} (expected one of {}, network_degradation, or rule:<name>)",
                    crate::detectors::NAMED.join(", ")
                )));
            }
        }
        if s.reason.len() > 1024 || s.by.len() > 256 {
            return Err(DetectError::InvalidSuppression(
                "reason (1024) or by (256) too long".into(),
            ));
        }
        self.suppressions.retain(|x| x.until_ms > now_ms);
        if self.suppressions.len() >= MAX_SUPPRESSIONS {
            return Err(DetectError::InvalidSuppression(format!(
                "{MAX_SUPPRESSIONS} suppressions already active"
            )));
        }
        let (id, _) = self.next_id("supp", now_ms);
        let sup = Suppression {
            id,
            detector: s.detector,
            device: s.device,
            until_ms: s.until_ms,
            reason: s.reason,
            by: s.by,
            created_at_ms: now_ms,
        };
        self.suppressions.push(sup.clone());
        Ok(sup)
    }

    pub fn unsuppress(&mut self, id: &str) -> Result<Suppression, DetectError> {
        let pos = self
            .suppressions
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| DetectError::UnknownSuppression(id.to_owned()))?;
        Ok(self.suppressions.remove(pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_round() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(-36), "-10");
        assert_eq!(
            i64::from_str_radix(&base36(1_764_585_243_000), 36).unwrap(),
            1_764_585_243_000
        );
    }

    #[test]
    fn suppression_matching() {
        let s = Suppression {
            id: "s".into(),
            detector: Some("traffic_spike".into()),
            device: None,
            until_ms: 100,
            reason: String::new(),
            by: String::new(),
            created_at_ms: 0,
        };
        assert!(s.matches("traffic_spike", Some("d1"), 50));
        assert!(s.matches("traffic_spike", None, 50));
        assert!(!s.matches("inactive", Some("d1"), 50));
        assert!(!s.matches("traffic_spike", Some("d1"), 100));
        let s = Suppression {
            detector: None,
            device: Some("d1".into()),
            ..s
        };
        assert!(s.matches("inactive", Some("d1"), 50));
        assert!(!s.matches("inactive", Some("d2"), 50));
        assert!(!s.matches("network_degradation", None, 50));
    }
}
