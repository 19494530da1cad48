//! The catalogue of the audit's rules: ids (an interface: suppressions, SARIF and scripts name
//! them), default severities, titles and remediations.
//!
//! A remediation may hold the placeholders `<device-id>` and `<file>`; a finding's own
//! remediation has them replaced by the device and the file concerned.

use super::Severity;

/// One rule of the configuration audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule's id (`cert-expiring`), stable.
    pub id: &'static str,
    /// Its usual severity (some findings of the rule are raised or lowered: see the title).
    pub severity: Severity,
    /// What the rule finds, in one line.
    pub title: &'static str,
    /// What to do about a finding, with concrete commands where there are some.
    pub remediation: &'static str,
}

/// The catalogue.
static RULES: &[RuleInfo] = &[
    RuleInfo {
        id: "audit-log-inconsistent",
        severity: Severity::Critical,
        title: "The audit log contradicts a checkpoint it signed and refuses to sign",
        remediation: "Export the log for the investigation (`tollgate audit export DIR`), then \
            start a new log with `tollgate audit rotate` (or move DATA/audit aside and restart \
            `tollgate serve`). Find out what truncated, edited or restored the log.",
    },
    RuleInfo {
        id: "cert-expired",
        severity: Severity::High,
        title: "A certificate in use has expired",
        remediation:
            "Issuing CA: `tollgate ca rotate --data DATA`, then restart `tollgate serve`. \
            Root CA, server or admin certificate: there is no in-place renewal; build a new data \
            directory on the root CA (`tollgate init --data NEW --import-ca root.crt root.key`). \
            Device: it can no longer renew itself; issue a token \
            (`tollgate device token <device-id>`) and run `tollgate agent enroll` on the device.",
    },
    RuleInfo {
        id: "ca-revoked-still-trusted",
        severity: Severity::High,
        title: "A revoked CA is still trusted",
        remediation: "Stop trusting it: remove its files from DATA/ca/retired/ (a revoked issuing \
            CA: `tollgate ca rotate --data DATA` first) and restart `tollgate serve`; re-enroll \
            the devices it issued (`tollgate device token <device-id>`, `tollgate agent enroll`).",
    },
    RuleInfo {
        id: "duplicate-public-key",
        severity: Severity::High,
        title: "Several devices present certificates with the same public key",
        remediation: "A key shared by devices (a cloned image?) lets each impersonate the others. \
            Revoke the devices that should not hold it (`tollgate device revoke <device-id>`) and \
            give every device its own key (`tollgate agent renew --rotate-key` on each device).",
    },
    RuleInfo {
        id: "weak-key",
        severity: Severity::High,
        title: "A certificate has a weak key (RSA under 2048 bits, blocklisted, or ROCA: critical)",
        remediation: "Replace the key. Device: revoke it (`tollgate device revoke <device-id>`) \
            and re-enroll it with a key generated on a sound library (P-256 is the default), or \
            `tollgate agent renew --rotate-key` for a short key not known to be broken. Issuing \
            CA: `tollgate ca rotate --data DATA`.",
    },
    RuleInfo {
        id: "device-concurrent-addresses",
        severity: Severity::High,
        title: "A device is connected from several addresses at once, or a clone alert is active",
        remediation: "Find out which connection is the real device. If its key was copied, \
            revoke it (`tollgate device revoke <device-id>`) and re-enroll the device with a \
            new key.",
    },
    RuleInfo {
        id: "policy-broad-grant",
        severity: Severity::High,
        title: "A policy rule lets every device (high) or a group (medium) reach other devices' \
            topics",
        remediation: "Narrow the pattern to the device's own topics with `${device.id}` \
            (`devices/${device.id}/telemetry`), or grant the wildcard only to the backend's own \
            identity (`who = [\"device:backend\"]`). Check with \
            `tollgate policy explain policy.toml ...`.",
    },
    RuleInfo {
        id: "audit-log-disabled",
        severity: Severity::High,
        title: "The tamper-evident audit log is off",
        remediation: "Set `[audit] enabled = true` in tollgate.toml and restart `tollgate serve`.",
    },
    RuleInfo {
        id: "key-file-permissions",
        severity: Severity::High,
        title: "A private key file is readable or writable by group or others",
        remediation: "`chmod 600 DATA/<file>` (and make the service user its owner).",
    },
    RuleInfo {
        id: "cert-expiring",
        severity: Severity::Medium,
        title: "A certificate expires soon (a device's: its renewal is not happening)",
        remediation: "Issuing CA: `tollgate ca rotate --data DATA` before it expires. Root CA, \
            server or admin certificate: plan a new data directory on the root CA \
            (`tollgate init --data NEW --import-ca root.crt root.key`). Device: make sure its \
            agent runs (`tollgate agent renew --daemon --server URL --out DIR`); renew once by \
            hand with `tollgate agent renew --server URL --out DIR`.",
    },
    RuleInfo {
        id: "device-cert-under-retired-ca",
        severity: Severity::Medium,
        title: "A device still uses a certificate from a retired CA (high when its trust ends \
            soon)",
        remediation: "Renew the device under the current issuing CA before the retired one \
            stops being trusted: `tollgate agent renew --server URL --out DIR` on \
            <device-id>.",
    },
    RuleInfo {
        id: "client-id-any",
        severity: Severity::Medium,
        title: "MQTT client ids are not tied to the certificate's device id",
        remediation: "Set `[mqtt] client_id = \"exact\"` in tollgate.toml (or `\"prefix\"` for \
            devices that run several clients) and restart `tollgate serve`.",
    },
    RuleInfo {
        id: "audit-log-no-recent-checkpoint",
        severity: Severity::Medium,
        title: "The audit log has entries no recent signed checkpoint covers",
        remediation: "Sign one now (`tollgate audit checkpoint`) and look in the server's log \
            for why checkpoints are not signed (the key DATA/audit.key, the disk).",
    },
    RuleInfo {
        id: "admin-listener-exposed",
        severity: Severity::Medium,
        title: "The admin listener is not on a loopback address",
        remediation: "Set `[admin] listen = \"127.0.0.1:8443\"` in tollgate.toml, or restrict \
            who can reach it with a firewall (devices need it only for EST enrollment).",
    },
    RuleInfo {
        id: "root-ca-key-online",
        severity: Severity::Medium,
        title: "The root CA's private key is on the gateway",
        remediation: "Move `ca/root.key` offline (an encrypted copy on removable media or an \
            HSM); bring it back only for `tollgate ca rotate`.",
    },
    RuleInfo {
        id: "policy-lint",
        severity: Severity::Low,
        title: "The policy linter reports a problem (medium for warnings)",
        remediation: "Run `tollgate policy lint policy.toml` and fix the rule: remove dead or \
            shadowed patterns, narrow broad ones.",
    },
    RuleInfo {
        id: "metrics-listener-exposed",
        severity: Severity::Low,
        title: "The metrics listener is not on a loopback address",
        remediation: "Set `[metrics] listen = \"127.0.0.1:9898\"` in tollgate.toml (or \
            `enabled = false`), or firewall it to the Prometheus server.",
    },
    RuleInfo {
        id: "tls12-allowed",
        severity: Severity::Low,
        title: "TLS 1.2 is accepted",
        remediation: "Set `[tls] min_version = \"1.3\"` in tollgate.toml once every device \
            speaks TLS 1.3, and restart `tollgate serve`.",
    },
    RuleInfo {
        id: "cert-too-old",
        severity: Severity::Low,
        title: "A server, admin or device certificate was issued long ago and is still in use",
        remediation: "Re-issue it. Device: `tollgate agent renew --rotate-key --server URL \
            --out DIR`, and check the device group's certificate lifetime \
            (`[devices] cert_lifetime_days`). Server or admin certificate: a new data directory \
            on the root CA (`tollgate init --data NEW --import-ca root.crt root.key`).",
    },
    RuleInfo {
        id: "device-dormant",
        severity: Severity::Low,
        title: "A device has not been seen for a long time",
        remediation: "If it is out of service, revoke it: `tollgate device revoke <device-id>`.",
    },
    RuleInfo {
        id: "device-no-inventory",
        severity: Severity::Low,
        title: "A device has no inventory (model and firmware)",
        remediation: "Record it: `tollgate device inventory <device-id> --supplier S --model M \
            --firmware V`.",
    },
    RuleInfo {
        id: "device-no-sbom",
        severity: Severity::Low,
        title: "No SBOM is known for a device's model and firmware",
        remediation: "Import the supplier's SBOM: `tollgate sbom import FILE --model M \
            --firmware V`.",
    },
];

/// Every rule, in a fixed order (their index is SARIF's `ruleIndex`).
pub fn rules() -> &'static [RuleInfo] {
    RULES
}

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}

/// Where the rule is in [`rules`].
pub(super) fn rule_index(id: &str) -> Option<usize> {
    RULES.iter().position(|r| r.id == id)
}
