//! What devices were seen doing, kept for least-privilege policy suggestions: the broker's
//! meters report each topic and filter a connection uses for the first time, the detection
//! sampler hands them here, and they are kept per device (bounded) in the registry.

use tollgate_policy::suggest::{Observed, SuggestOptions, Suggestion};
use tollgate_policy::{Action, Lint};

use crate::{now, Control, ControlError};

/// An observation's action as stored.
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Publish => "publish",
        Action::Retain => "retain",
        Action::Subscribe => "subscribe",
    }
}

fn action_of(name: &str) -> Option<Action> {
    match name {
        "publish" => Some(Action::Publish),
        "retain" => Some(Action::Retain),
        "subscribe" => Some(Action::Subscribe),
        _ => None,
    }
}

impl Control {
    /// Record what devices were seen doing: `(device, action, topic or filter)`. Returns how
    /// many were not kept (a device at its bound).
    pub fn record_observations(
        &self,
        seen: &[(String, Action, String)],
    ) -> Result<usize, ControlError> {
        if seen.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(String, String, String)> = seen
            .iter()
            .map(|(d, a, t)| (d.clone(), action_name(*a).to_owned(), t.clone()))
            .collect();
        Ok(self.registry.record_observations(&rows, now())?)
    }

    /// Every observation of the last `window_secs`, with each device's groups (revoked
    /// devices left out).
    pub fn observed(&self, window_secs: i64) -> Result<Vec<Observed>, ControlError> {
        let since = now().saturating_sub(window_secs.max(0));
        let devices: std::collections::HashMap<String, Vec<String>> = self
            .registry
            .devices()?
            .into_iter()
            .filter(|d| d.revoked_at.is_none())
            .map(|d| (d.id, d.groups))
            .collect();
        Ok(self
            .registry
            .observations(since)?
            .into_iter()
            .filter_map(|o| {
                let groups = devices.get(&o.device)?.clone();
                Some(Observed {
                    device: o.device,
                    groups,
                    action: action_of(&o.action)?,
                    topic: o.topic,
                    count: u64::try_from(o.count).unwrap_or(0),
                })
            })
            .collect())
    }

    /// The narrowest policy that still allows everything seen in the last `window_secs`
    /// (only for `group`'s devices when given), against the policy in force.
    pub fn suggest_policy(
        &self,
        window_secs: i64,
        group: Option<&str>,
    ) -> Result<Suggestion, ControlError> {
        let observed = self.observed(window_secs)?;
        let opts = SuggestOptions {
            group: group.map(str::to_owned),
            ..SuggestOptions::default()
        };
        Ok(self.policy().suggest(&observed, &opts))
    }

    /// Grants of the policy in force that nothing seen in the last `window_secs` used.
    pub fn unused_grants(&self, window_secs: i64) -> Result<Vec<Lint>, ControlError> {
        let observed = self.observed(window_secs)?;
        Ok(self.policy().unused_grants(&observed))
    }
}
