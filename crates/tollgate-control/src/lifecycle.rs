//! A device's lifecycle after registration: changing its groups (which changes the policy it
//! is held to, on its live connections too), its labels (free key=value metadata), and
//! deleting it (every certificate revoked, live connections closed, the record removed).
//!
//! Each change is written ahead to the audit log, applied to the registry, pushed into the
//! access snapshot (so live connections re-check at once, the way a quarantine reaches them)
//! and reported as an event naming who asked. This module must not hold sockets or format
//! HTTP.

use std::collections::BTreeMap;

use serde::Serialize;
use tollgate_events::EventKind;
use tollgate_registry::Inventory;

use crate::{check_groups, now, Control, ControlError, DeviceView};

/// Most labels one device may carry.
pub const MAX_LABELS: usize = 32;
/// Longest label key.
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value, characters.
pub const MAX_LABEL_VALUE: usize = 256;

/// The outcome of a deletion.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// Device id.
    pub id: String,
    /// Serials revoked now.
    pub serials: Vec<String>,
    /// Live connections closed.
    pub sessions_closed: usize,
}

/// A label key: 1 to 63 characters of `a-z 0-9 _ . -`.
fn check_label_key(k: &str) -> Result<(), ControlError> {
    if k.is_empty()
        || k.len() > MAX_LABEL_KEY
        || !k.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
    {
        return Err(ControlError::InvalidRequest(format!(
            "label key {:?}: 1 to {MAX_LABEL_KEY} characters of a-z 0-9 _ . -",
            k.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// A label value: at most 256 characters, no control characters.
fn check_label_value(k: &str, v: &str) -> Result<(), ControlError> {
    if v.chars().count() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
        return Err(ControlError::InvalidRequest(format!(
            "label {k}: a value is at most {MAX_LABEL_VALUE} characters, without control characters"
        )));
    }
    Ok(())
}

/// Apply `changes` (a value sets, `None` removes) to `labels`, within the bounds; returns
/// what was set and what was removed.
fn apply_labels(
    labels: &mut BTreeMap<String, String>,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<(BTreeMap<String, String>, Vec<String>), ControlError> {
    let mut set = BTreeMap::new();
    let mut removed = Vec::new();
    for (k, v) in changes {
        check_label_key(k)?;
        match v {
            Some(v) => {
                check_label_value(k, v)?;
                if labels.get(k) != Some(v) {
                    labels.insert(k.clone(), v.clone());
                    set.insert(k.clone(), v.clone());
                }
            }
            None => {
                if labels.remove(k).is_some() {
                    removed.push(k.clone());
                }
            }
        }
    }
    if labels.len() > MAX_LABELS {
        return Err(ControlError::InvalidRequest(format!(
            "a device carries at most {MAX_LABELS} labels; this would make {}",
            labels.len()
        )));
    }
    Ok((set, removed))
}

/// Check group names as [`Control::set_device_groups`] will, so a request that changes labels
/// and groups together can be refused before either is written.
pub fn validate_groups(groups: &[String]) -> Result<(), ControlError> {
    check_groups(groups)
}

impl Control {
    /// Replace an active device's groups. Its live connections re-check against the policy
    /// for its new groups at once (subscriptions no longer allowed are dropped; the next
    /// publish is judged by the new groups); compliance re-evaluates it.
    pub fn set_device_groups(
        &self,
        id: &str,
        groups: &[String],
        by: &str,
    ) -> Result<DeviceView, ControlError> {
        check_groups(groups)?;
        let d = match self.registry.device(id)? {
            None => return Err(ControlError::DeviceNotFound(id.to_owned())),
            Some(d) if d.revoked_at.is_some() => {
                return Err(ControlError::DeviceRevoked(id.to_owned()))
            }
            Some(d) => d,
        };
        let mut groups = groups.to_vec();
        groups.sort();
        groups.dedup();
        if d.groups != groups {
            self.write_ahead(
                "set_groups",
                id,
                by,
                &format!("{:?} -> {groups:?}", d.groups),
            )?;
            self.registry.set_groups(id, &groups)?;
            let rechecked = self.refresh_device(id, &[])?;
            tracing::info!(device = id, rechecked, "groups changed");
            self.events.emit(EventKind::DeviceGroupsChanged {
                device: id.to_owned(),
                from: d.groups,
                to: groups,
                by: by.to_owned(),
            });
            if let Err(e) = self.evaluate_fleet(Some(&[id.to_owned()]), "groups_change", None) {
                tracing::error!(
                    device = id,
                    "evaluating compliance after a group change: {e}"
                );
            }
        }
        self.device(id)
    }

    /// Set (a value) or remove (`None`) a device's labels; returns its labels after.
    pub fn set_device_labels(
        &self,
        id: &str,
        changes: &BTreeMap<String, Option<String>>,
        by: &str,
    ) -> Result<BTreeMap<String, String>, ControlError> {
        if self.registry.device(id)?.is_none() {
            return Err(ControlError::DeviceNotFound(id.to_owned()));
        }
        // Checked before anything is recorded; applied again under the edit lock below.
        let current = self
            .registry
            .inventory(id)?
            .map(|i| i.labels)
            .unwrap_or_default();
        let (set, removed) = apply_labels(&mut current.clone(), changes)?;
        if set.is_empty() && removed.is_empty() {
            return Ok(current);
        }
        self.write_ahead(
            "set_labels",
            id,
            by,
            &format!("set {set:?}, removed {removed:?}"),
        )?;
        let edit = self.inventory_edits.lock();
        let mut inv = self.registry.inventory(id)?.unwrap_or(Inventory {
            device: id.to_owned(),
            ..Default::default()
        });
        let (set, removed) = apply_labels(&mut inv.labels, changes)?;
        inv.updated_at = now();
        self.registry.set_inventory(&inv)?;
        drop(edit);
        self.events.emit(EventKind::DeviceLabelsChanged {
            device: id.to_owned(),
            set,
            removed,
            by: by.to_owned(),
        });
        Ok(inv.labels)
    }

    /// Delete a device: revoke every certificate it holds (into the CRL), close its live
    /// connections, and remove its record, quarantine reasons, token, inventory and
    /// observations. Its history stays in the event and audit logs; its id may be registered
    /// again, as a new device.
    pub fn delete_device(&self, id: &str, reason: &str, by: &str) -> Result<Deleted, ControlError> {
        // The device leaves the snapshot: its live connections re-check, find it gone and
        // close; its serials are refused at the next handshake.
        let (serials, sessions_closed) =
            self.end_device("delete_device", id, reason, by, |now| {
                self.registry.delete_device(id, reason, now)
            })?;
        self.events.emit(EventKind::DeviceDeleted {
            device: id.to_owned(),
            serials: serials.clone(),
            reason: reason.to_owned(),
            by: by.to_owned(),
            sessions_closed,
        });
        Ok(Deleted {
            id: id.to_owned(),
            serials,
            sessions_closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(kv: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn labels_are_bounded_in_key_value_and_count() {
        let mut labels = BTreeMap::new();
        let (set, removed) = apply_labels(
            &mut labels,
            &changes(&[("site", Some("dock-7")), ("x", None)]),
        )
        .unwrap();
        assert_eq!(set.len(), 1);
        assert!(removed.is_empty());
        for bad in ["", "Site", "a b", "a/b", &"k".repeat(64)] {
            assert!(
                apply_labels(&mut labels.clone(), &changes(&[(bad, Some("v"))])).is_err(),
                "{bad:?}"
            );
        }
        let long = "v".repeat(257);
        assert!(apply_labels(&mut labels.clone(), &changes(&[("k", Some(&long))])).is_err());
        assert!(apply_labels(&mut labels.clone(), &changes(&[("k", Some("a\nb"))])).is_err());
        let many: Vec<(String, Option<String>)> = (0..32)
            .map(|i| (format!("k{i}"), Some("v".to_string())))
            .collect();
        let many: BTreeMap<_, _> = many.into_iter().collect();
        // 32 new ones on top of `site` make 33.
        assert!(apply_labels(&mut labels.clone(), &many).is_err());
        let (_, removed) = apply_labels(&mut labels, &changes(&[("site", None)])).unwrap();
        assert_eq!(removed, vec!["site".to_string()]);
        assert!(apply_labels(&mut labels, &many).is_ok());
    }
}
