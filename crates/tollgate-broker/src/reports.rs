//! Reserved report topics: `$tollgate/devices/<device id>/inventory`.
//!
//! A device tells the gateway what it runs (`{"firmware": "1.3.0"}`) by publishing to its own
//! report topic. The broker consumes such a publish: it is handed to a [`ReportSink`] (the
//! control plane, wired by the binary), acknowledged, and never routed to subscribers or
//! retained. Every active device may use its own topic, quarantined or not, so a confined
//! device can always say it has been updated; another device's topic is refused. This module
//! only recognises the topic and carries the bytes: it does not parse the report.

use bytes::Bytes;

/// The prefix of every device's reserved topics.
pub const PREFIX: &str = "$tollgate/devices/";

/// The last level of the inventory report topic.
pub const INVENTORY: &str = "inventory";

/// The largest report payload taken, in bytes.
pub const MAX_REPORT_BYTES: usize = 4096;

/// The inventory report topic of `device`.
pub fn inventory_topic(device: &str) -> String {
    format!("{PREFIX}{device}/{INVENTORY}")
}

/// The device whose reserved report topic `topic` is, or `None` for any other topic.
pub fn reserved_owner(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix(PREFIX)?;
    let owner = rest.strip_suffix(INVENTORY)?.strip_suffix('/')?;
    (!owner.is_empty() && !owner.contains('/')).then_some(owner)
}

/// Takes the reports devices publish. Called on the connection's task: it must not block
/// (queue the report and return).
pub trait ReportSink: Send + Sync {
    /// Take `payload` from `device`; `false` when it cannot be taken now (the publish is
    /// refused with 0x97, Quota exceeded, so the device retries).
    fn report(&self, device: &str, payload: Bytes) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_inventory_topic_is_reserved() {
        assert_eq!(
            reserved_owner("$tollgate/devices/scanner-1/inventory"),
            Some("scanner-1")
        );
        assert_eq!(reserved_owner(&inventory_topic("pump-7")), Some("pump-7"));
        for t in [
            "$tollgate/devices//inventory",
            "$tollgate/devices/a/b/inventory",
            "$tollgate/devices/a/inventory/x",
            "$tollgate/devices/a/inventoryx",
            "$tollgate/devices/a/firmware/1",
            "devices/a/inventory",
        ] {
            assert_eq!(reserved_owner(t), None, "{t}");
        }
    }
}
