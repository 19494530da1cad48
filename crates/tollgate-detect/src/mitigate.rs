//! Mitigation orders and their rate limit.
//!
//! Owns what an alert may order and how many orders any 60 s may carry. It must not carry
//! anything out (the runtime does) nor decide whether an alert is raised.
//!
//! Rules: an order is made only when a device alert is *raised* (never on an update), only when
//! its detector's mitigation is not `notify`, at most `max_mitigations_per_minute` in any
//! sliding 60 s (beyond that the alert notifies and its `mitigation` says so), never for a
//! cohort-wide alert, and never for a member of a cohort in which the detector is already active
//! on more than `cohort_mitigation_fraction` of the members (a cohort-wide anomaly never
//! mitigates every member).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::DeviceId;

/// What an alert does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mitigation {
    /// Nothing but the alert.
    Notify,
    /// Limit the device's publishes.
    Throttle,
    /// Confine the device to the quarantine policy.
    Quarantine,
    /// Close its connections.
    Disconnect,
    /// Revoke its certificate.
    Revoke,
}

impl Mitigation {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mitigation::Notify => "notify",
            Mitigation::Throttle => "throttle",
            Mitigation::Quarantine => "quarantine",
            Mitigation::Disconnect => "disconnect",
            Mitigation::Revoke => "revoke",
        }
    }

    /// The action it orders (`None` for notify).
    pub fn action(self, ttl_ms: i64, per_second: u32) -> Option<Action> {
        match self {
            Mitigation::Notify => None,
            Mitigation::Throttle => Some(Action::Throttle { per_second, ttl_ms }),
            Mitigation::Quarantine => Some(Action::Quarantine { ttl_ms }),
            Mitigation::Disconnect => Some(Action::Disconnect),
            Mitigation::Revoke => Some(Action::Revoke),
        }
    }
}

/// What the runtime must do to a device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Limit its publishes to `per_second` for `ttl_ms`.
    Throttle {
        /// Publishes per second allowed.
        per_second: u32,
        /// How long, ms.
        ttl_ms: i64,
    },
    /// Quarantine it for `ttl_ms`.
    Quarantine {
        /// How long, ms.
        ttl_ms: i64,
    },
    /// Close its connections.
    Disconnect,
    /// Revoke its certificate.
    Revoke,
}

/// One order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The alert that ordered it.
    pub alert_id: String,
    /// Its detector.
    pub detector: String,
    /// The device.
    pub device: DeviceId,
    /// What to do.
    pub action: Action,
}

/// Orders allowed in any sliding 60 s.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateLimiter {
    sent: VecDeque<i64>,
}

impl RateLimiter {
    /// Whether one more order may go at `now_ms`; records it if so.
    pub fn try_take(&mut self, now_ms: i64, per_minute: u32) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| *t <= now_ms.saturating_sub(60_000))
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= per_minute as usize {
            return false;
        }
        self.sent.push_back(now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_minute() {
        let mut r = RateLimiter::default();
        for i in 0..5 {
            assert!(r.try_take(1000 + i, 5));
        }
        assert!(!r.try_take(30_000, 5));
        assert!(!r.try_take(60_999, 5));
        // The order at 1000 is 60 s old at 61000: one slot frees.
        assert!(r.try_take(61_000, 5));
        assert!(!r.try_take(61_000, 5));
        assert!(!r.try_take(61_000, 0));
    }
}
