//! Who is who, and in which access state: the snapshot the data plane authorizes against.
//!
//! The control plane builds an [`AccessSnapshot`] (the policy in force, every active device with
//! its groups and quarantine reasons, the revoked certificate serials) and swaps it in
//! atomically; the data plane only reads it. Updates are incremental: the device map and the
//! revoked set are persistent (`imbl`) structures, so changing one device costs O(log n) and
//! shares the rest with the previous snapshot. [`Changed`] says whose access moved, so only
//! those devices' live connections are re-checked.

use std::sync::Arc;

use crate::{CompiledPolicy, Identity, Policy};

/// One reason a device is quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// Who holds it (`operator`, `compliance:RULE`, `detector:NAME`).
    pub source: String,
    /// Why, in words.
    pub reason: String,
}

/// An active device's access: its groups, and the reasons it is quarantined (none: normal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAccess {
    /// Groups (policy `group:NAME`).
    pub groups: Vec<String>,
    /// Quarantine reasons; the device is confined to the quarantine policy while any holds.
    pub quarantine: Vec<Quarantine>,
}

impl DeviceAccess {
    /// Whether any quarantine reason holds.
    pub fn is_quarantined(&self) -> bool {
        !self.quarantine.is_empty()
    }

    /// The reasons, for a reason string or an event: "operator: stolen; compliance:x: y".
    pub fn quarantine_text(&self) -> String {
        self.quarantine
            .iter()
            .map(|q| format!("{}: {}", q.source, q.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Whose access changed with a new snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Everyone's (a new policy): re-check every live connection.
    All,
    /// These devices only.
    Devices(Vec<String>),
}

/// What the data plane authorizes against. Cheap to clone (structural sharing).
#[derive(Debug, Clone)]
pub struct AccessSnapshot {
    /// The policy in force.
    pub policy: Arc<Policy>,
    /// Active devices (not revoked). A certificate for a device not listed is refused.
    pub devices: imbl::HashMap<String, DeviceAccess>,
    /// Revoked certificate serials (lower-case hex).
    pub revoked: imbl::HashSet<String>,
}

impl AccessSnapshot {
    /// Nothing allowed, nobody known.
    pub fn deny_all() -> AccessSnapshot {
        AccessSnapshot {
            policy: Arc::new(Policy::deny_all()),
            devices: imbl::HashMap::new(),
            revoked: imbl::HashSet::new(),
        }
    }

    /// The access of an active device.
    pub fn device(&self, id: &str) -> Option<&DeviceAccess> {
        self.devices.get(id)
    }

    /// The deny rule that refuses `action` on `topic` for `device` in its current access state
    /// ([`Policy::denied_by`]); `None` for the default deny or an unknown device.
    pub fn denied_by(&self, device: &str, action: crate::Action, topic: &str) -> Option<&str> {
        let access = self.devices.get(device)?;
        let identity = Identity {
            device_id: device,
            groups: &access.groups,
        };
        self.policy
            .denied_by(&identity, access.is_quarantined(), action, topic)
    }

    /// The policy compiled for `device` in its current access state: the normal policy, or
    /// the quarantine policy while it is quarantined. `None` for a device that is not active.
    pub fn compile(&self, device: &str) -> Option<CompiledPolicy> {
        let access = self.devices.get(device)?;
        let identity = Identity {
            device_id: device,
            groups: &access.groups,
        };
        Some(if access.is_quarantined() {
            self.policy.compile_quarantined(&identity)
        } else {
            self.policy.compile(&identity)
        })
    }
}
