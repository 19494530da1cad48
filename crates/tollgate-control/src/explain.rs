//! Explaining a decision for a registered device as the live server would make it: with the
//! device's groups and access state from the registry (quarantine included), not groups an
//! operator types in. The policy crate does the explaining; this module only picks the rules
//! that apply to the device now. It changes nothing.

use serde::Serialize;
use tollgate_policy::{Action, Identity};

use crate::{Control, ControlError};

/// A device's access state, as an explanation states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainedState {
    /// Held to the policy's rules.
    Active,
    /// Confined to the `[quarantine]` grant (and the deny rules) while any reason holds.
    Quarantined,
    /// Revoked: it cannot connect, so it may do nothing.
    Revoked,
}

/// An explanation of one decision for a registered device.
#[derive(Debug, Clone, Serialize)]
pub struct LiveExplanation {
    pub device: String,
    /// The groups the registry gives the device.
    pub groups: Vec<String>,
    pub state: ExplainedState,
    /// The quarantine reasons (`source: reason`), while quarantined.
    pub quarantine: Vec<String>,
    /// `publish`, `subscribe` or `retain`.
    pub action: &'static str,
    pub topic: String,
    pub allowed: bool,
    /// The deny rule that refuses it, if one does (`None` with `allowed == false`: nothing
    /// grants it, or the device is revoked).
    pub denied_by: Option<String>,
    /// The steps of the evaluation, ending with the verdict.
    pub steps: Vec<String>,
}

impl Control {
    /// Explain whether `device` may do `action` on `topic` under the policy in force, in its
    /// current state: the normal rules, the quarantine grant while quarantined, nothing once
    /// revoked. Unknown devices are an error ([`ControlError::DeviceNotFound`]).
    pub fn explain(
        &self,
        device: &str,
        action: Action,
        topic: &str,
    ) -> Result<LiveExplanation, ControlError> {
        let action_name = crate::observe::action_name(action);
        let snapshot = self.snapshot();
        let Some(access) = snapshot.device(device) else {
            let Some(d) = self.registry.device(device)? else {
                return Err(ControlError::DeviceNotFound(device.to_owned()));
            };
            return Ok(LiveExplanation {
                device: device.to_owned(),
                groups: d.groups,
                state: ExplainedState::Revoked,
                quarantine: Vec::new(),
                action: action_name,
                topic: topic.to_owned(),
                allowed: false,
                denied_by: None,
                steps: vec![format!(
                    "=> DENIED: device `{device}` is revoked; its certificates are refused at \
                     connect, so no rule applies"
                )],
            });
        };
        let identity = Identity {
            device_id: device,
            groups: &access.groups,
        };
        let quarantined = access.is_quarantined();
        let policy = &snapshot.policy;
        let mut ex = if quarantined {
            policy.explain_quarantined(&identity, action, topic)
        } else {
            policy.explain(&identity, action, topic)
        };
        if quarantined {
            ex.steps.insert(
                0,
                format!(
                    "state: quarantined ({}): the [quarantine] grant and the deny rules apply",
                    access.quarantine_text()
                ),
            );
        }
        let denied_by = (!ex.allowed)
            .then(|| policy.denied_by(&identity, quarantined, action, topic))
            .flatten()
            .map(str::to_owned);
        Ok(LiveExplanation {
            device: device.to_owned(),
            groups: access.groups.clone(),
            state: if quarantined {
                ExplainedState::Quarantined
            } else {
                ExplainedState::Active
            },
            quarantine: access
                .quarantine
                .iter()
                .map(|q| format!("{}: {}", q.source, q.reason))
                .collect(),
            action: action_name,
            topic: topic.to_owned(),
            allowed: ex.allowed,
            denied_by,
            steps: ex.steps,
        })
    }
}
