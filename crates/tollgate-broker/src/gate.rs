//! The gate: every authorization decision a connection needs, in one place.
//!
//! CONNECT (revoked serial, expired certificate, unknown device, will topic), PUBLISH,
//! SUBSCRIBE (with the delivery filter of a subscription that overlaps deny rules, which the
//! router then applies per message), redelivery of queued messages and the re-check after a snapshot change are all
//! decided here, against the policy compiled for the device in its current access state (the
//! normal policy, or the quarantine policy while any quarantine reason holds). A denial is
//! counted (fleet-wide [`crate::Stats`] and the connection's [`Meter`]) and becomes an event
//! here, so no caller can forget either. Decisions are allocation-free on the per-message path:
//! the policy is compiled once per connection and access change, never per message.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tollgate_events::{EventKind, RefusalReason};
use tollgate_mqtt::{QoS, ReasonCode};
use tollgate_policy::{AccessSnapshot, CompiledPolicy, DeliveryFilter, SubscriptionDecision};

use crate::meter::{Meter, TokenBucket};
use crate::{PeerIdentity, Shared};

/// A granted subscription's delivery filter: the topics deny rules withhold from it (`None`:
/// every message its filter matches may be delivered).
pub(crate) type Withholding = Option<Arc<DeliveryFilter>>;

/// Why CONNECT was refused by the gate.
pub(crate) type Refusal = (ReasonCode, RefusalReason, &'static str);

/// What a re-check found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recheck {
    /// The certificate is revoked: close (0x98).
    Revoked,
    /// The device is no longer registered: close (0x98).
    Unregistered,
    /// Still allowed; the compiled policy is current.
    Current {
        /// Quarantined now.
        quarantined: bool,
        /// Was quarantined before this re-check.
        was_quarantined: bool,
    },
}

/// One connection's authorization state.
#[derive(Debug)]
pub(crate) struct Gate {
    device: Arc<str>,
    serial: String,
    policy: CompiledPolicy,
    /// The quarantine reasons, while quarantined.
    quarantine: Option<Arc<str>>,
    /// The snapshot this state was compiled from.
    seen: Arc<AccessSnapshot>,
    /// The device's meter (shared by its connections).
    meter: Arc<Meter>,
    /// This connection's share of a mitigation throttle, while one is in force.
    bucket: TokenBucket,
    /// The topics and filters this connection already reported as seen.
    observer: crate::meter::Observer,
}

impl Gate {
    /// Admit a connection at CONNECT: its certificate's serial must not be revoked (TLS 1.3
    /// resumption skips the verifier, so this is checked for every connection), the
    /// certificate must not have expired, and the device must be registered and active.
    pub fn admit(shared: &Shared, peer: &PeerIdentity, now_unix: i64) -> Result<Gate, Refusal> {
        let seen = shared.access.load_full();
        if seen.revoked.contains(&peer.serial) {
            return Err((
                ReasonCode::NOT_AUTHORIZED,
                RefusalReason::Revoked,
                "certificate revoked",
            ));
        }
        if peer.cert_not_after.is_some_and(|na| na <= now_unix) {
            return Err((
                ReasonCode::NOT_AUTHORIZED,
                RefusalReason::Expired,
                "certificate expired",
            ));
        }
        let Some((policy, quarantine)) = compile(&seen, &peer.device_id) else {
            return Err((
                ReasonCode::NOT_AUTHORIZED,
                RefusalReason::UnknownDevice,
                "device not registered or revoked",
            ));
        };
        let device: Arc<str> = Arc::from(peer.device_id.as_str());
        Ok(Gate {
            meter: shared.meters.of(&device),
            device,
            serial: peer.serial.clone(),
            policy,
            quarantine,
            seen,
            bucket: TokenBucket::default(),
            observer: crate::meter::Observer::default(),
        })
    }

    /// The connection's meter.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Record an allowed publish (with `retain`) or subscription for policy suggestions.
    #[inline]
    pub fn observe(&mut self, action: crate::meter::SeenAction, topic: &str) {
        self.observer.observe(&self.meter, action, topic);
    }

    /// Is this publish over a mitigation throttle in force for the device? Counts it when it
    /// is. One relaxed load when no throttle is set.
    #[inline]
    pub fn throttled(&mut self, shared: &Shared, now_unix_ms: i64) -> bool {
        let Some(rate) = self.meter.throttle(now_unix_ms) else {
            return false;
        };
        if self.bucket.take(rate, now_unix_ms) {
            return false;
        }
        self.meter.throttled.fetch_add(1, Ordering::Relaxed);
        shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The quarantine reasons while the device is quarantined.
    pub fn quarantine(&self) -> Option<&str> {
        self.quarantine.as_deref()
    }

    /// A reason string for a refusal, naming the quarantine when that is why.
    pub fn denial_reason(&self, what: &str) -> String {
        match &self.quarantine {
            Some(q) => format!("{what} not allowed: device quarantined ({q})"),
            None => format!("{what} not authorized by policy"),
        }
    }

    /// May the device PUBLISH (or set as its will) `topic`, with the retain flag if `retain`?
    /// A retained PUBLISH needs the policy's `retain` grant on top of `publish`. Counts and
    /// reports a denial; `Err` says what was refused (`what`, or `"retain"` / `"will_retain"`
    /// when only the retain flag was).
    pub fn publish(
        &self,
        shared: &Shared,
        topic: &str,
        qos: QoS,
        retain: bool,
        what: &'static str,
    ) -> Result<(), &'static str> {
        let refused = if crate::reports::reserved_owner(topic).is_some() {
            // Reserved topics are consumed, never routed: only a device's own live PUBLISH to
            // its own report topic is taken ([`Gate::report`]); wills and anything else there
            // are refused whatever the policy says.
            what
        } else if !self.policy.can_publish(topic) {
            what
        } else if retain && !self.policy.can_retain(topic) {
            if what == "will" {
                "will_retain"
            } else {
                "retain"
            }
        } else {
            return Ok(());
        };
        Err(self.deny_publish(shared, topic, qos, refused))
    }

    /// Count and report a refused publish of `what`; returns `what`.
    fn deny_publish(
        &self,
        shared: &Shared,
        topic: &str,
        qos: QoS,
        what: &'static str,
    ) -> &'static str {
        shared.stats.publish_denied.fetch_add(1, Ordering::Relaxed);
        self.meter.publish_denied.fetch_add(1, Ordering::Relaxed);
        // Which deny rule refused it (none: nothing grants it); reserved topics are refused
        // whatever the policy says.
        let action = match what {
            "retain" | "will_retain" => Some(tollgate_policy::Action::Retain),
            "report" | "reserved" => None,
            _ => Some(tollgate_policy::Action::Publish),
        };
        let rule = action
            .and_then(|a| self.seen.denied_by(&self.device, a, topic))
            .map(str::to_owned);
        shared.emit(EventKind::PublishDenied {
            device: self.device.to_string(),
            topic: topic.to_owned(),
            qos: qos as u8,
            what,
            quarantine: self.quarantine.as_deref().map(str::to_owned),
            rule,
        });
        what
    }

    /// Whether `topic` is a reserved report topic, and if so whether this device may publish
    /// to it: `None` for an ordinary topic; `Some(Ok(()))` for the device's own
    /// `$tollgate/devices/<id>/inventory`, which every active device may use, quarantined or
    /// not; `Some(Err(_))` (counted and reported) for another device's.
    pub fn report(
        &self,
        shared: &Shared,
        topic: &str,
        qos: QoS,
    ) -> Option<Result<(), &'static str>> {
        let owner = crate::reports::reserved_owner(topic)?;
        if owner == &*self.device {
            return Some(Ok(()));
        }
        Some(Err(self.deny_publish(shared, topic, qos, "report")))
    }

    /// May the device SUBSCRIBE to `filter` (`inner`: without `$share/GROUP/`)? `Some` with the
    /// subscription's delivery filter when granted (a filter that overlaps deny rules is granted
    /// with their topics withheld); `None`, counted and reported, when refused.
    pub fn subscribe(&self, shared: &Shared, filter: &str, inner: &str) -> Option<Withholding> {
        self.meter.subscribed(inner);
        if let Some(w) = self.may_hold(inner) {
            return Some(w);
        }
        shared
            .stats
            .subscribe_denied
            .fetch_add(1, Ordering::Relaxed);
        self.meter.subscribe_denied.fetch_add(1, Ordering::Relaxed);
        let rule = self
            .seen
            .denied_by(&self.device, tollgate_policy::Action::Subscribe, inner)
            .map(str::to_owned);
        shared.emit(EventKind::SubscribeDenied {
            device: self.device.to_string(),
            filter: filter.to_owned(),
            quarantine: self.quarantine.as_deref().map(str::to_owned),
            rule,
        });
        None
    }

    /// May the device still hold the subscription `inner`, and with which delivery filter? (No
    /// event: the caller reports a removal with [`Gate::subscription_removed`].)
    pub fn may_hold(&self, inner: &str) -> Option<Withholding> {
        match self.policy.subscription(inner) {
            SubscriptionDecision::Refused => None,
            SubscriptionDecision::Granted => Some(None),
            SubscriptionDecision::Filtered(f) => Some(Some(Arc::new(f))),
        }
    }

    /// May a queued or in-flight message on `topic` still go to the device? (A message it may
    /// no longer read is dropped silently: its subscription's removal was reported.) A topic a
    /// deny `subscribe` rule matches may not be read, whatever subscription brought it.
    pub fn may_read(&self, topic: &str) -> bool {
        self.policy.can_read(topic)
    }

    /// Report a subscription granted or kept with topics withheld (`withholding`), or no longer
    /// withholding any (`None`). Once per subscription and change, never per message.
    pub fn subscription_filtered(&self, shared: &Shared, filter: &str, withholding: &Withholding) {
        let (withheld, rules) = withholding
            .iter()
            .flat_map(|f| f.withheld())
            .map(|(pattern, rule)| (pattern, rule.to_owned()))
            .unzip();
        shared.emit(EventKind::SubscriptionFiltered {
            device: self.device.to_string(),
            filter: filter.to_owned(),
            withheld,
            rules,
        });
    }

    /// Report a subscription removed because the device may no longer hold it.
    pub fn subscription_removed(&self, shared: &Shared, filter: &str) {
        shared.emit(EventKind::SubscriptionRevoked {
            device: self.device.to_string(),
            filter: filter.to_owned(),
            quarantine: self.quarantine.as_deref().map(str::to_owned),
        });
    }

    /// Whether the snapshot changed since this state was compiled.
    pub fn stale(&self, shared: &Shared) -> bool {
        !Arc::ptr_eq(&self.seen, &shared.access.load())
    }

    /// Re-check against the snapshot in force, recompiling the policy.
    pub fn recheck(&mut self, shared: &Shared) -> Recheck {
        let seen = shared.access.load_full();
        if seen.revoked.contains(&self.serial) {
            return Recheck::Revoked;
        }
        let Some((policy, quarantine)) = compile(&seen, &self.device) else {
            return Recheck::Unregistered;
        };
        let was_quarantined = self.quarantine.is_some();
        self.policy = policy;
        self.quarantine = quarantine;
        self.seen = seen;
        Recheck::Current {
            quarantined: self.quarantine.is_some(),
            was_quarantined,
        }
    }
}

/// The device's policy in its access state, with its quarantine reasons; `None` if inactive.
fn compile(seen: &AccessSnapshot, device: &str) -> Option<(CompiledPolicy, Option<Arc<str>>)> {
    let access = seen.device(device)?;
    let policy = seen.compile(device)?;
    let quarantine = access
        .is_quarantined()
        .then(|| Arc::from(access.quarantine_text()));
    Some((policy, quarantine))
}

/// The policy for a will published with no connection left (a delayed or restored will): the
/// device's access state at the moment it is published. `None` if the device is not active or
/// its certificate was revoked since.
pub(crate) fn will_policy(shared: &Shared, device: &str, serial: &str) -> Option<CompiledPolicy> {
    let seen = shared.access.load();
    if seen.revoked.contains(serial) {
        return None;
    }
    seen.compile(device)
}
