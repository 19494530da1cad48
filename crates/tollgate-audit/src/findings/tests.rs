//! Tests of the configuration audit's rules, lifecycle, ROCA fingerprint and SARIF output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::roca::{bit_len, residue, subgroup, PRIMES};
use super::*;

const NOW: i64 = 1_800_000_000;
const D: i64 = 86_400;

// ---------------------------------------------------------------------------------------------
// Building facts
// ---------------------------------------------------------------------------------------------

fn cert(kind: CertKind, subject: &str, serial: &str, not_before: i64, not_after: i64) -> CertFact {
    CertFact {
        kind,
        subject: subject.into(),
        serial: serial.into(),
        not_before,
        not_after,
        revoked: false,
        issuer_serial: if kind == CertKind::RootCa {
            String::new()
        } else if kind == CertKind::IssuingCa || kind == CertKind::RetiredCa {
            "01".into()
        } else {
            "02".into()
        },
        trusted_until: None,
        spki_sha256: format!("{:0>64}", format!("{serial}5eed")),
        key: KeyFact::Ec {
            curve: "P-256".into(),
        },
    }
}

fn device(id: &str) -> DeviceFact {
    DeviceFact {
        id: id.into(),
        groups: vec!["sensors".into()],
        revoked: false,
        created_at: NOW - 20 * D,
        last_seen: Some(NOW - 60),
        has_inventory: true,
        has_sbom: true,
        live_addresses: vec!["10.0.0.7".into()],
        clone_alert: false,
    }
}

fn device_cert(id: &str, serial: &str, not_before: i64, not_after: i64) -> CertFact {
    cert(CertKind::Device, id, serial, not_before, not_after)
}

fn grant(rule: &str, who: &[&str], action: &str, pattern: &str, line: usize) -> GrantFact {
    GrantFact {
        rule: rule.into(),
        allow: true,
        who: who.iter().map(|w| w.to_string()).collect(),
        action: action.into(),
        pattern: pattern.into(),
        line,
    }
}

/// A clean gateway: valid CAs, server, admin and one renewing device, private key files,
/// a policy confined to each device's own topics, loopback listeners, TLS 1.3 only, client ids
/// tied to device ids (`exact`, the default), an audit log with a fresh checkpoint.
fn baseline() -> Facts {
    Facts {
        now: NOW,
        certs: vec![
            cert(
                CertKind::RootCa,
                "Tollgate Root CA",
                "01",
                NOW - 100 * D,
                NOW + 3000 * D,
            ),
            cert(
                CertKind::IssuingCa,
                "Tollgate Issuing CA",
                "02",
                NOW - 100 * D,
                NOW + 1500 * D,
            ),
            cert(
                CertKind::Server,
                "localhost",
                "10",
                NOW - 10 * D,
                NOW + 300 * D,
            ),
            cert(CertKind::Admin, "admin", "11", NOW - 10 * D, NOW + 300 * D),
            device_cert("pump-7", "d1", NOW - D, NOW + 6 * D),
        ],
        key_files: vec![
            KeyFile {
                path: "ca/issuing.key".into(),
                mode: 0o600,
            },
            KeyFile {
                path: "server/server.key".into(),
                mode: 0o100600,
            },
            KeyFile {
                path: "audit.key".into(),
                mode: 0o400,
            },
        ],
        root_key_online: false,
        devices: vec![device("pump-7")],
        grants: vec![
            grant(
                "telemetry",
                &["*"],
                "publish",
                "devices/${device.id}/telemetry",
                3,
            ),
            grant(
                "commands",
                &["*"],
                "subscribe",
                "devices/${device.id}/cmd/#",
                8,
            ),
            grant(
                "backend",
                &["device:backend"],
                "subscribe",
                "devices/+/telemetry",
                13,
            ),
        ],
        lints: vec![],
        client_id_mode: "exact".into(),
        tls13_only: true,
        admin_listen: "127.0.0.1:8443".into(),
        admin_loopback: true,
        metrics_listen: Some("127.0.0.1:9898".into()),
        metrics_loopback: true,
        audit: AuditLogFact {
            enabled: true,
            refusing: None,
            entries: 120,
            checkpoint_size: Some(118),
            checkpoint_at: Some(NOW - 5),
            checkpoint_interval_secs: 5,
        },
        thresholds: Thresholds::default(),
    }
}

fn ids(v: &[Finding]) -> Vec<String> {
    v.iter().map(Finding::id).collect()
}

/// Evaluate and expect exactly one finding, of `rule` on `resource`.
fn only(f: &Facts, rule: &str, resource: &str) -> Finding {
    let v = evaluate(f);
    assert_eq!(
        ids(&v),
        vec![format!("{rule}:{resource}")],
        "findings: {v:#?}"
    );
    let finding = v.into_iter().next().unwrap();
    assert!(!finding.evidence.is_empty());
    assert!(!finding.remediation.is_empty());
    assert_eq!(rules::rule(rule).unwrap().id, rule);
    finding
}

/// The finding opens with `bad` and resolves with `good` (the baseline, by default).
fn lifecycle(bad: &Facts, good: &Facts) {
    let mut book = FindingBook::new();
    let found = evaluate(bad);
    let c = book.update(NOW, found.clone());
    assert_eq!(
        ids(&c
            .opened
            .iter()
            .map(|t| t.finding.clone())
            .collect::<Vec<_>>()),
        ids(&found)
    );
    assert!(c.resolved.is_empty());
    let c = book.update(NOW + 60, evaluate(good));
    assert!(c.opened.is_empty(), "{:#?}", c.opened);
    let resolved: Vec<String> = c.resolved.iter().map(|t| t.id.clone()).collect();
    assert_eq!(resolved, ids(&found));
    assert!(c.resolved.iter().all(|t| t.resolved_at == Some(NOW + 60)));
    assert!(book.list(false).is_empty());
    assert_eq!(book.list(true).len(), found.len());
    assert_eq!(book.highest_severity(true), None);
}

// ---------------------------------------------------------------------------------------------
// Baseline, empty and catalogue
// ---------------------------------------------------------------------------------------------

#[test]
fn baseline_has_no_findings() {
    assert_eq!(evaluate(&baseline()), vec![]);
}

#[test]
fn empty_facts_have_only_the_findings_their_settings_imply() {
    let mut f = baseline();
    f.certs.clear();
    f.key_files.clear();
    f.devices.clear();
    f.grants.clear();
    f.lints.clear();
    assert_eq!(evaluate(&f), vec![]);
    // Everything zero or false: the audit log off, the admin listener anywhere, TLS 1.2.
    let zero = Facts {
        now: 0,
        certs: vec![],
        key_files: vec![],
        root_key_online: false,
        devices: vec![],
        grants: vec![],
        lints: vec![],
        client_id_mode: String::new(),
        tls13_only: false,
        admin_listen: String::new(),
        admin_loopback: false,
        metrics_listen: None,
        metrics_loopback: false,
        audit: AuditLogFact {
            enabled: false,
            refusing: None,
            entries: 0,
            checkpoint_size: None,
            checkpoint_at: None,
            checkpoint_interval_secs: 0,
        },
        thresholds: Thresholds::default(),
    };
    assert_eq!(
        ids(&evaluate(&zero)),
        vec![
            "audit-log-disabled:config:[audit] enabled",
            "admin-listener-exposed:config:[admin] listen",
            "tls12-allowed:config:[tls] min_version",
        ]
    );
}

#[test]
fn catalogue_has_every_rule_once_with_its_severity() {
    let expected = [
        ("cert-expired", Severity::High),
        ("cert-expiring", Severity::Medium),
        ("ca-revoked-still-trusted", Severity::High),
        ("device-cert-under-retired-ca", Severity::Medium),
        ("duplicate-public-key", Severity::High),
        ("weak-key", Severity::High),
        ("device-concurrent-addresses", Severity::High),
        ("policy-broad-grant", Severity::High),
        ("policy-lint", Severity::Low),
        ("client-id-any", Severity::Medium),
        ("audit-log-disabled", Severity::High),
        ("audit-log-inconsistent", Severity::Critical),
        ("audit-log-no-recent-checkpoint", Severity::Medium),
        ("admin-listener-exposed", Severity::Medium),
        ("metrics-listener-exposed", Severity::Low),
        ("tls12-allowed", Severity::Low),
        ("key-file-permissions", Severity::High),
        ("root-ca-key-online", Severity::Medium),
        ("cert-too-old", Severity::Low),
        ("device-dormant", Severity::Low),
        ("device-no-inventory", Severity::Low),
        ("device-no-sbom", Severity::Low),
    ];
    assert_eq!(rules().len(), expected.len());
    for (id, sev) in expected {
        let r = rule(id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(r.severity, sev, "{id}");
        assert_eq!(rules().iter().filter(|x| x.id == id).count(), 1);
        assert!(!r.title.is_empty() && !r.remediation.is_empty());
        assert!(!r.remediation.contains("  "), "{id}: {}", r.remediation);
    }
    assert!(rule("no-such-rule").is_none());
}

// ---------------------------------------------------------------------------------------------
// One test per rule
// ---------------------------------------------------------------------------------------------

#[test]
fn cert_expired_server_and_device() {
    let mut f = baseline();
    f.certs[2].not_after = NOW - 1;
    let x = only(&f, "cert-expired", "cert:10");
    assert_eq!(x.severity, Severity::High);
    assert!(x.evidence.contains("server"), "{}", x.evidence);
    lifecycle(&f, &baseline());

    let mut f = baseline();
    f.certs[4] = device_cert("pump-7", "d1", NOW - 8 * D, NOW - D);
    let x = only(&f, "cert-expired", "device:pump-7");
    assert!(
        x.remediation.contains("tollgate device token pump-7"),
        "{}",
        x.remediation
    );
    lifecycle(&f, &baseline());

    // A newer valid certificate makes an expired one harmless.
    let mut ok = f.clone();
    ok.certs
        .push(device_cert("pump-7", "d2", NOW - D, NOW + 6 * D));
    assert_eq!(evaluate(&ok), vec![]);
    // A revoked device's expired certificate is no finding; nor a revoked certificate.
    let mut ok = f.clone();
    ok.devices[0].revoked = true;
    assert_eq!(evaluate(&ok), vec![]);
    let mut ok = f.clone();
    ok.certs[4].revoked = true;
    assert_eq!(evaluate(&ok), vec![]);
    // At not_after exactly, still valid.
    let mut ok = baseline();
    ok.certs[2].not_after = NOW;
    assert!(ids(&evaluate(&ok))
        .iter()
        .all(|i| !i.starts_with("cert-expired")));
}

#[test]
fn cert_expiring_ca_and_device() {
    let mut f = baseline();
    f.certs[1].not_after = NOW + 10 * D;
    let x = only(&f, "cert-expiring", "cert:02");
    assert_eq!(x.severity, Severity::Medium);
    assert!(x.remediation.contains("tollgate ca rotate"));
    lifecycle(&f, &baseline());

    // A 7-day device certificate with a day left: renewal (at two thirds) did not happen.
    let mut f = baseline();
    f.certs[4] = device_cert("pump-7", "d1", NOW - 6 * D, NOW + D);
    let x = only(&f, "cert-expiring", "device:pump-7");
    assert_eq!(x.severity, Severity::Medium);
    assert!(x.remediation.contains("tollgate agent renew"));
    lifecycle(&f, &baseline());

    // Short-lived and renewing on time: 3 of 7 days left is normal.
    let mut ok = baseline();
    ok.certs[4] = device_cert("pump-7", "d1", NOW - 4 * D, NOW + 3 * D);
    assert_eq!(evaluate(&ok), vec![]);
    // A newer certificate already issued: the old one running out is fine.
    let mut ok = f.clone();
    ok.certs
        .push(device_cert("pump-7", "d2", NOW - 60, NOW + 7 * D));
    assert_eq!(evaluate(&ok), vec![]);
    // A year-long device certificate with 40 days left: more than the 30-day threshold.
    let mut ok = baseline();
    ok.certs[4] = device_cert("pump-7", "d1", NOW - 325 * D, NOW + 40 * D);
    assert_eq!(evaluate(&ok), vec![]);
    // ... with 20 days left: under a third and under 30 days.
    let mut bad = baseline();
    bad.certs[4] = device_cert("pump-7", "d1", NOW - 345 * D, NOW + 20 * D);
    only(&bad, "cert-expiring", "device:pump-7");
    // A retired CA is meant to lapse.
    let mut ok = baseline();
    let mut retired = cert(
        CertKind::RetiredCa,
        "Old CA",
        "03",
        NOW - 900 * D,
        NOW + 5 * D,
    );
    retired.trusted_until = Some(NOW + 5 * D);
    ok.certs.push(retired);
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn ca_revoked_still_trusted() {
    let mut retired = cert(
        CertKind::RetiredCa,
        "Old CA",
        "03",
        NOW - 900 * D,
        NOW + 900 * D,
    );
    retired.revoked = true;
    retired.trusted_until = Some(NOW + 10 * D);
    let mut f = baseline();
    f.certs.push(retired.clone());
    let x = only(&f, "ca-revoked-still-trusted", "cert:03");
    assert_eq!(x.severity, Severity::High);
    lifecycle(&f, &baseline());

    let mut f2 = baseline();
    retired.trusted_until = None;
    f2.certs.push(retired.clone());
    only(&f2, "ca-revoked-still-trusted", "cert:03");
    // Trust over: nothing to do.
    let mut ok = baseline();
    retired.trusted_until = Some(NOW - 1);
    ok.certs.push(retired);
    assert_eq!(evaluate(&ok), vec![]);
    // A revoked issuing CA too.
    let mut f3 = baseline();
    f3.certs[1].revoked = true;
    only(&f3, "ca-revoked-still-trusted", "cert:02");
}

#[test]
fn device_cert_under_retired_ca() {
    let mut retired = cert(
        CertKind::RetiredCa,
        "Old CA",
        "0A",
        NOW - 900 * D,
        NOW + 900 * D,
    );
    retired.trusted_until = Some(NOW + 60 * D);
    let mut f = baseline();
    f.certs.push(retired.clone());
    f.certs[4].issuer_serial = "00:0a".into();
    let x = only(&f, "device-cert-under-retired-ca", "device:pump-7");
    assert_eq!(x.severity, Severity::Medium);
    assert!(x.remediation.contains("pump-7"));
    let mut good = baseline();
    good.certs.push(retired.clone());
    lifecycle(&f, &good);

    // Trust ends within the expiry threshold: high.
    let mut soon = f.clone();
    soon.certs[5].trusted_until = Some(NOW + 5 * D);
    assert_eq!(
        only(&soon, "device-cert-under-retired-ca", "device:pump-7").severity,
        Severity::High
    );
    // Already renewed under the current CA.
    let mut ok = f.clone();
    ok.certs
        .push(device_cert("pump-7", "d2", NOW - 60, NOW + 7 * D));
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn duplicate_public_key() {
    let mut f = baseline();
    f.devices.push(device("pump-8"));
    let mut c = device_cert("pump-8", "d8", NOW - D, NOW + 6 * D);
    c.spki_sha256 = f.certs[4].spki_sha256.to_uppercase();
    f.certs.push(c);
    let key = norm_digest(&f.certs[4].spki_sha256);
    let x = only(&f, "duplicate-public-key", &format!("key:{}", &key[..16]));
    assert_eq!(x.severity, Severity::High);
    assert!(x.evidence.contains("\"pump-7\"") && x.evidence.contains("\"pump-8\""));
    let mut good = f.clone();
    good.certs[5].spki_sha256 = "ff".repeat(32);
    lifecycle(&f, &good);

    // The same device renewing with the same key is fine; a revoked twin too.
    let mut ok = baseline();
    let mut again = device_cert("pump-7", "d2", NOW - 60, NOW + 7 * D);
    again.spki_sha256 = ok.certs[4].spki_sha256.clone();
    ok.certs.push(again);
    assert_eq!(evaluate(&ok), vec![]);
    let mut ok = f.clone();
    ok.devices[1].revoked = true;
    assert_eq!(evaluate(&ok), vec![]);
}

fn rsa(modulus: Vec<u8>, blocklisted: bool) -> KeyFact {
    KeyFact::Rsa {
        modulus,
        blocklisted,
    }
}

#[test]
fn weak_key_short_blocklisted_and_roca() {
    let mut f = baseline();
    f.certs[2].key = rsa(openssl_modulus()[..128].to_vec(), false);
    let x = only(&f, "weak-key", "cert:10");
    assert_eq!(x.severity, Severity::High);
    assert!(x.evidence.contains("1024 bits"), "{}", x.evidence);
    lifecycle(&f, &baseline());

    let mut f = baseline();
    f.certs[4].key = rsa(openssl_modulus(), true);
    let x = only(&f, "weak-key", "cert:d1");
    assert_eq!(x.severity, Severity::High);
    assert!(x.evidence.contains("blocklist"));
    assert!(x.remediation.contains("tollgate device revoke pump-7"));

    let mut f = baseline();
    f.certs[4].key = rsa(roca_positive(7), false);
    let x = only(&f, "weak-key", "cert:d1");
    assert_eq!(x.severity, Severity::Critical);
    assert!(x.evidence.contains("ROCA"));
    lifecycle(&f, &baseline());

    let mut f = baseline();
    f.certs[1].key = rsa(hex(MOD03_ROCA), false);
    assert_eq!(only(&f, "weak-key", "cert:02").severity, Severity::Critical);

    // A sound 2048-bit key from openssl.
    let mut ok = baseline();
    ok.certs[2].key = rsa(openssl_modulus(), false);
    assert_eq!(evaluate(&ok), vec![]);
    // A weak key on a revoked certificate is not in use.
    let mut ok = baseline();
    ok.certs[4].key = rsa(vec![0xff; 64], false);
    ok.certs[4].revoked = true;
    ok.certs
        .push(device_cert("pump-7", "d2", NOW - 60, NOW + 7 * D));
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn device_concurrent_addresses() {
    let mut f = baseline();
    f.devices[0].live_addresses = vec!["10.0.0.7".into(), "203.0.113.9".into()];
    let x = only(&f, "device-concurrent-addresses", "device:pump-7");
    assert_eq!(x.severity, Severity::High);
    assert!(x.evidence.contains("203.0.113.9"));
    assert!(x.remediation.contains("tollgate device revoke pump-7"));
    lifecycle(&f, &baseline());

    let mut f = baseline();
    f.devices[0].clone_alert = true;
    only(&f, "device-concurrent-addresses", "device:pump-7");
    // The same address twice is one address; a revoked device is not looked at.
    let mut ok = baseline();
    ok.devices[0].live_addresses = vec!["10.0.0.7".into(), "10.0.0.7".into(), " ".into()];
    assert_eq!(evaluate(&ok), vec![]);
    let mut ok = f.clone();
    ok.devices[0].revoked = true;
    ok.certs.truncate(4);
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn policy_broad_grant() {
    let mut f = baseline();
    f.grants.push(grant(
        "all-telemetry",
        &["*"],
        "subscribe",
        "devices/+/telemetry",
        20,
    ));
    let x = only(&f, "policy-broad-grant", "policy:all-telemetry");
    assert_eq!(x.severity, Severity::High);
    assert!(
        x.evidence.starts_with("policy.toml line 20:"),
        "{}",
        x.evidence
    );
    assert!(
        x.evidence.contains("devices/${device.id}/telemetry"),
        "{}",
        x.evidence
    );
    lifecycle(&f, &baseline());

    let mut f = baseline();
    f.grants.push(grant(
        "sensors",
        &["group:sensors"],
        "subscribe",
        "devices/#",
        21,
    ));
    assert_eq!(
        only(&f, "policy-broad-grant", "policy:sensors").severity,
        Severity::Medium
    );
    let mut f = baseline();
    f.grants
        .push(grant("everything", &["group:x", "*"], "publish", "#", 22));
    assert_eq!(
        only(&f, "policy-broad-grant", "policy:everything").severity,
        Severity::High
    );
    let mut f = baseline();
    f.grants
        .push(grant("first", &["*"], "subscribe", "+/status", 23));
    only(&f, "policy-broad-grant", "policy:first");
    // Two broad patterns of one rule: one finding naming both.
    let mut f = baseline();
    f.grants.push(grant("two", &["*"], "subscribe", "#", 24));
    f.grants
        .push(grant("two", &["*"], "publish", "devices/+/cmd/x", 25));
    let x = only(&f, "policy-broad-grant", "policy:two");
    assert!(x.evidence.contains("line 24") && x.evidence.contains("line 25"));

    for ok_grant in [
        // Not per-device: nothing in the policy has ${device.id} at that level.
        grant("fleet", &["*"], "subscribe", "fleet/+/announcements", 30),
        // Pinned to the device's own subtree.
        grant("own", &["*"], "subscribe", "devices/${device.id}/#", 30),
        grant("own2", &["group:g"], "subscribe", "+/${device.id}", 30),
        // A device identity, not everyone or a group.
        grant("backend2", &["device:backend"], "subscribe", "#", 30),
        // The literal prefix differs.
        grant("other", &["*"], "subscribe", "sites/+/telemetry", 30),
    ] {
        let mut ok = baseline();
        ok.grants.push(ok_grant);
        assert_eq!(evaluate(&ok), vec![], "{:?}", ok.grants.last());
    }
    // A deny is never a broad grant.
    let mut ok = baseline();
    let mut deny = grant("deny", &["*"], "subscribe", "#", 31);
    deny.allow = false;
    ok.grants.push(deny);
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn policy_lint() {
    let mut f = baseline();
    f.lints.push(LintFact {
        rule: "telemetry".into(),
        line: 3,
        message: "shadowed by rule \"deny-all\"".into(),
        warning: true,
    });
    let x = only(&f, "policy-lint", "policy:telemetry:3");
    assert_eq!(x.severity, Severity::Medium);
    lifecycle(&f, &baseline());
    f.lints[0].warning = false;
    assert_eq!(
        only(&f, "policy-lint", "policy:telemetry:3").severity,
        Severity::Low
    );
    // Two lints on one line: one finding with both messages.
    f.lints.push(LintFact {
        rule: "telemetry".into(),
        line: 3,
        message: "dead grant".into(),
        warning: true,
    });
    let x = only(&f, "policy-lint", "policy:telemetry:3");
    assert_eq!(x.severity, Severity::Medium);
    assert!(x.evidence.contains("shadowed") && x.evidence.contains("dead grant"));
}

#[test]
fn client_id_any() {
    let mut f = baseline();
    f.client_id_mode = "any".into();
    let x = only(&f, "client-id-any", "config:[mqtt] client_id");
    assert_eq!(x.severity, Severity::Medium);
    assert!(x.remediation.contains("client_id = \"exact\""));
    lifecycle(&f, &baseline());
    let mut ok = baseline();
    ok.client_id_mode = "prefix".into();
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn audit_log_disabled() {
    let mut f = baseline();
    f.audit.enabled = false;
    f.audit.checkpoint_at = None;
    assert_eq!(
        only(&f, "audit-log-disabled", "config:[audit] enabled").severity,
        Severity::High
    );
    lifecycle(&f, &baseline());
}

#[test]
fn audit_log_inconsistent() {
    let mut f = baseline();
    f.audit.refusing = Some("the log is shorter than checkpoint 118".into());
    f.audit.checkpoint_at = Some(NOW - 3600);
    let x = only(&f, "audit-log-inconsistent", "audit:log");
    assert_eq!(x.severity, Severity::Critical);
    assert!(x.evidence.contains("shorter"));
    assert!(x.remediation.contains("tollgate audit rotate"));
    lifecycle(&f, &baseline());
}

#[test]
fn audit_log_no_recent_checkpoint() {
    let mut f = baseline();
    f.audit.checkpoint_at = Some(NOW - 3600);
    let x = only(&f, "audit-log-no-recent-checkpoint", "audit:checkpoint");
    assert_eq!(x.severity, Severity::Medium);
    lifecycle(&f, &baseline());

    // Within max(10 × 5 s, 60 s).
    let mut ok = baseline();
    ok.audit.checkpoint_at = Some(NOW - 59);
    assert_eq!(evaluate(&ok), vec![]);
    // Old but covering every entry: nothing to sign.
    let mut ok = baseline();
    ok.audit.checkpoint_at = Some(NOW - 3600);
    ok.audit.checkpoint_size = Some(120);
    assert_eq!(evaluate(&ok), vec![]);
    // A long interval.
    let mut ok = baseline();
    ok.audit.checkpoint_at = Some(NOW - 3600);
    ok.audit.checkpoint_interval_secs = 600;
    assert_eq!(evaluate(&ok), vec![]);
    ok.audit.checkpoint_interval_secs = u64::MAX;
    assert_eq!(evaluate(&ok), vec![]);
    // None at all.
    let mut bad = baseline();
    bad.audit.checkpoint_at = None;
    bad.audit.checkpoint_size = None;
    only(&bad, "audit-log-no-recent-checkpoint", "audit:checkpoint");
    bad.audit.entries = 1;
    assert_eq!(evaluate(&bad), vec![]);
}

#[test]
fn admin_listener_exposed() {
    let mut f = baseline();
    f.admin_listen = "0.0.0.0:8443".into();
    f.admin_loopback = false;
    let x = only(&f, "admin-listener-exposed", "config:[admin] listen");
    assert_eq!(x.severity, Severity::Medium);
    assert!(x.evidence.contains("0.0.0.0:8443"));
    lifecycle(&f, &baseline());
}

#[test]
fn metrics_listener_exposed() {
    let mut f = baseline();
    f.metrics_listen = Some("0.0.0.0:9898".into());
    f.metrics_loopback = false;
    let x = only(&f, "metrics-listener-exposed", "config:[metrics] listen");
    assert_eq!(x.severity, Severity::Low);
    lifecycle(&f, &baseline());
    // Metrics off.
    let mut ok = f.clone();
    ok.metrics_listen = None;
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn tls12_allowed() {
    let mut f = baseline();
    f.tls13_only = false;
    let x = only(&f, "tls12-allowed", "config:[tls] min_version");
    assert_eq!(x.severity, Severity::Low);
    assert!(x.remediation.contains("min_version = \"1.3\""));
    lifecycle(&f, &baseline());
}

#[test]
fn key_file_permissions() {
    let mut f = baseline();
    f.key_files[0].mode = 0o100640;
    let x = only(&f, "key-file-permissions", "file:ca/issuing.key");
    assert_eq!(x.severity, Severity::High);
    assert!(x.evidence.contains("0640"), "{}", x.evidence);
    assert!(x.remediation.contains("chmod 600 DATA/ca/issuing.key"));
    lifecycle(&f, &baseline());
    let mut f = baseline();
    f.key_files[2].mode = 0o604;
    only(&f, "key-file-permissions", "file:audit.key");
}

#[test]
fn root_ca_key_online() {
    let mut f = baseline();
    f.root_key_online = true;
    let x = only(&f, "root-ca-key-online", "file:ca/root.key");
    assert_eq!(x.severity, Severity::Medium);
    assert!(x.remediation.contains("ca/root.key"));
    lifecycle(&f, &baseline());
}

#[test]
fn cert_too_old() {
    let mut f = baseline();
    f.certs[3].not_before = NOW - 400 * D;
    let x = only(&f, "cert-too-old", "cert:11");
    assert_eq!(x.severity, Severity::Low);
    lifecycle(&f, &baseline());
    // CAs are long-lived by design.
    let mut ok = baseline();
    ok.certs[0].not_before = NOW - 3000 * D;
    ok.certs[1].not_before = NOW - 1000 * D;
    assert_eq!(evaluate(&ok), vec![]);
}

#[test]
fn device_dormant() {
    let mut f = baseline();
    f.devices[0].last_seen = Some(NOW - 31 * D);
    let x = only(&f, "device-dormant", "device:pump-7");
    assert_eq!(x.severity, Severity::Low);
    assert!(x.remediation.contains("tollgate device revoke pump-7"));
    lifecycle(&f, &baseline());
    // Never seen: judged by its creation.
    let mut f = baseline();
    f.devices[0].last_seen = None;
    f.devices[0].created_at = NOW - 40 * D;
    only(&f, "device-dormant", "device:pump-7");
    f.devices[0].created_at = NOW - 2 * D;
    assert_eq!(evaluate(&f), vec![]);
}

#[test]
fn device_no_inventory() {
    let mut f = baseline();
    f.devices[0].has_inventory = false;
    f.devices[0].has_sbom = false;
    let x = only(&f, "device-no-inventory", "device:pump-7");
    assert_eq!(x.severity, Severity::Low);
    assert!(x.remediation.contains("tollgate device inventory pump-7"));
    lifecycle(&f, &baseline());
}

#[test]
fn device_no_sbom() {
    let mut f = baseline();
    f.devices[0].has_sbom = false;
    assert_eq!(
        only(&f, "device-no-sbom", "device:pump-7").severity,
        Severity::Low
    );
    lifecycle(&f, &baseline());
}

// ---------------------------------------------------------------------------------------------
// Order, determinism, hostile input
// ---------------------------------------------------------------------------------------------

/// Many findings at once.
fn messy() -> Facts {
    let mut f = baseline();
    f.tls13_only = false;
    f.client_id_mode = "any".into();
    f.root_key_online = true;
    f.audit.refusing = Some("x".into());
    f.key_files[0].mode = 0o644;
    f.certs[2].not_after = NOW - 1;
    f.certs[4].key = rsa(roca_positive(1), false);
    f.devices.push(DeviceFact {
        has_inventory: false,
        ..device("valve-2")
    });
    f.grants.push(grant(
        "all",
        &["group:ops"],
        "subscribe",
        "devices/+/telemetry",
        40,
    ));
    f.lints.push(LintFact {
        rule: "all".into(),
        line: 40,
        message: "broad".into(),
        warning: false,
    });
    f
}

#[test]
fn findings_are_sorted_unique_and_deterministic() {
    let f = messy();
    let v = evaluate(&f);
    assert!(v.len() >= 9, "{v:#?}");
    assert_eq!(v[0].severity, Severity::Critical);
    for w in v.windows(2) {
        let key = |x: &Finding| {
            (
                std::cmp::Reverse(x.severity),
                x.rule.clone(),
                x.resource.clone(),
            )
        };
        assert!(key(&w[0]) < key(&w[1]), "{:?} before {:?}", w[0], w[1]);
    }
    let mut reversed = f.clone();
    reversed.certs.reverse();
    reversed.devices.reverse();
    reversed.grants.reverse();
    reversed.key_files.reverse();
    assert_eq!(evaluate(&reversed), v);
    assert_eq!(evaluate(&f), v);
}

#[test]
fn hostile_facts_do_not_panic() {
    let mut f = messy();
    let times = [
        i64::MIN,
        i64::MIN + 1,
        -1,
        0,
        1,
        NOW,
        i64::MAX - 1,
        i64::MAX,
    ];
    let moduli: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![1],
        vec![0xff],
        vec![0; 300],
        vec![0xff; 16 * 1024],
        roca_positive(3),
    ];
    let mut n = 0;
    for &a in &times {
        for &b in &times {
            for m in &moduli {
                n += 1;
                let mut c = cert(
                    [
                        CertKind::RootCa,
                        CertKind::IssuingCa,
                        CertKind::RetiredCa,
                        CertKind::Server,
                        CertKind::Admin,
                        CertKind::Device,
                    ][n % 6],
                    if n % 2 == 0 { "pump-7" } else { "" },
                    &format!("{n:x}"),
                    a,
                    b,
                );
                c.trusted_until = [None, Some(a), Some(b)][n % 3];
                c.issuer_serial = ["", "03", "zz", "::"][n % 4].into();
                c.revoked = n % 5 == 0;
                c.spki_sha256 = ["", "é", "ab"][n % 3].into();
                c.key = rsa(m.clone(), n % 7 == 0);
                f.certs.push(c);
            }
        }
    }
    for (i, p) in [
        "",
        "#",
        "+",
        "+/+/#",
        "${device.id}",
        "/",
        "//",
        "#/+",
        "a/+/${device.id}/#",
        "${device.id}${device.id}/+",
        "é/+/ü",
        "${device.group}/+",
    ]
    .iter()
    .enumerate()
    {
        f.grants.push(grant(p, &["*", "group:", ""], "", p, i));
        f.grants.push(grant(p, &[], "publish", p, usize::MAX));
    }
    f.lints.push(LintFact {
        rule: String::new(),
        line: usize::MAX,
        message: String::new(),
        warning: true,
    });
    for (i, &t) in times.iter().enumerate() {
        f.devices.push(DeviceFact {
            id: format!("d{}", i % 3),
            groups: vec![],
            revoked: i % 4 == 0,
            created_at: t,
            last_seen: if i % 2 == 0 { Some(t) } else { None },
            has_inventory: i % 3 == 0,
            has_sbom: false,
            live_addresses: vec![String::new(); i],
            clone_alert: i % 2 == 1,
        });
    }
    f.key_files.push(KeyFile {
        path: String::new(),
        mode: u32::MAX,
    });
    f.audit.checkpoint_interval_secs = u64::MAX;
    f.audit.entries = u64::MAX;
    for now in times {
        for th in [i64::MIN, -1, 0, 1, i64::MAX] {
            f.now = now;
            f.thresholds = Thresholds {
                expiry_days: th,
                max_cert_age_days: th,
                dormant_days: th,
            };
            f.audit.checkpoint_at = Some(now.wrapping_neg());
            let v = evaluate(&f);
            let mut seen = std::collections::BTreeSet::new();
            assert!(v.iter().all(|x| seen.insert(x.id())));
            let mut book = FindingBook::new();
            book.update(now, v.clone());
            book.update(now.saturating_add(1), v);
            let _ = sarif(&book.list(true));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The finding book
// ---------------------------------------------------------------------------------------------

fn finding(rule: &str, resource: &str, severity: Severity) -> Finding {
    Finding {
        rule: rule.into(),
        severity,
        resource: resource.into(),
        evidence: format!("{rule} on {resource}"),
        remediation: "do something".into(),
    }
}

#[test]
fn book_tracks_first_and_last_seen_and_reopens() {
    let mut book = FindingBook::new();
    let a = finding("cert-expiring", "cert:02", Severity::Medium);
    let b = finding("weak-key", "cert:10", Severity::High);
    let c = book.update(100, vec![a.clone(), b.clone()]);
    assert_eq!(c.opened.len(), 2);
    assert_eq!(c.opened[0].id, "weak-key:cert:10", "highest first");
    let c = book.update(200, vec![b.clone(), a.clone(), a.clone()]);
    assert_eq!(c, Changes::default());
    let l = book.list(false);
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|t| t.first_seen == 100 && t.last_seen == 200));
    assert_eq!(book.highest_severity(false), Some(Severity::High));
    // The evidence is refreshed.
    let mut a2 = a.clone();
    a2.evidence = "now in 3 d".into();
    book.update(250, vec![a2.clone(), b.clone()]);
    assert_eq!(book.list(false)[1].finding.evidence, "now in 3 d");

    let c = book.update(300, vec![a2.clone()]);
    assert_eq!(c.resolved.len(), 1);
    assert_eq!(c.resolved[0].id, "weak-key:cert:10");
    assert_eq!(c.resolved[0].resolved_at, Some(300));
    assert_eq!(book.highest_severity(false), Some(Severity::Medium));
    let all = book.list(true);
    assert_eq!(all.len(), 2);
    assert!(all[0].resolved_at.is_none() && all[1].resolved_at == Some(300));

    let c = book.update(400, vec![a2, b]);
    assert_eq!(c.opened.len(), 1);
    assert_eq!(
        c.opened[0].first_seen, 400,
        "a new first_seen when it comes back"
    );
    assert_eq!(book.list(true).len(), 2, "the resolved record is replaced");
    assert_eq!(book.open_findings().len(), 2);
}

#[test]
fn book_keeps_resolved_findings_for_a_bounded_time_and_count() {
    let mut book = FindingBook::new();
    let many: Vec<Finding> = (0..1500)
        .map(|i| finding("device-dormant", &format!("device:d{i}"), Severity::Low))
        .collect();
    book.update(0, many);
    let c = book.update(10, vec![]);
    assert_eq!(c.resolved.len(), 1500);
    assert_eq!(book.list(true).len(), RESOLVED_KEEP_COUNT);
    book.update(20, vec![finding("tls12-allowed", "x", Severity::Low)]);
    book.update(30, vec![]);
    assert_eq!(book.list(true).len(), RESOLVED_KEEP_COUNT);
    assert_eq!(
        book.list(true)[0].id,
        "tls12-allowed:x",
        "the most recent is kept"
    );
    book.update(30 + RESOLVED_KEEP_SECS, vec![]);
    assert_eq!(book.list(true).len(), 1);
    book.update(31 + RESOLVED_KEEP_SECS, vec![]);
    assert!(book.list(true).is_empty());
}

#[test]
fn suppressions_mark_findings_and_expire() {
    let mut book = FindingBook::new();
    let hi = finding("weak-key", "cert:10", Severity::High);
    let lo = finding("device-dormant", "device:a", Severity::Low);
    let lo2 = finding("device-dormant", "device:b", Severity::Low);
    book.update(NOW, vec![hi.clone(), lo.clone(), lo2.clone()]);
    let s = book
        .suppress(
            "weak-key",
            Some("cert:10"),
            " lab key, replaced Friday ",
            "alice",
            NOW,
            NOW + D,
        )
        .unwrap();
    assert_eq!(s.reason, "lab key, replaced Friday");
    assert_eq!(s.author, "alice");
    let l = book.list(false);
    let t = l.iter().find(|t| t.id == hi.id()).unwrap();
    assert_eq!(
        t.suppressed.as_ref().map(|x| x.id.as_str()),
        Some(s.id.as_str())
    );
    assert_eq!(book.highest_severity(false), Some(Severity::Low));
    assert_eq!(book.highest_severity(true), Some(Severity::High));
    // Every resource of a rule.
    let all = book
        .suppress(
            "device-dormant",
            None,
            "seasonal sensors",
            "bob",
            NOW,
            NOW + 2 * D,
        )
        .unwrap();
    assert_ne!(all.id, s.id);
    assert_eq!(book.highest_severity(false), None);
    assert_eq!(book.suppressions(NOW).len(), 2);
    assert_eq!(
        book.suppressions(NOW + D).len(),
        1,
        "the first one has expired"
    );
    // Expired at the next update: the finding counts again.
    let c = book.update(NOW + D, vec![hi.clone(), lo.clone(), lo2.clone()]);
    assert_eq!(c, Changes::default());
    assert_eq!(book.highest_severity(false), Some(Severity::High));
    assert!(book
        .list(false)
        .iter()
        .all(|t| (t.finding.rule == "weak-key") == t.suppressed.is_none()));
    // Removed.
    assert_eq!(book.unsuppress(&all.id).unwrap(), all);
    assert!(book.unsuppress(&all.id).is_err());
    assert_eq!(book.highest_severity(false), Some(Severity::High));
    assert!(book.list(false).iter().all(|t| t.suppressed.is_none()));
    // A new finding opened under a suppression comes marked.
    book.suppress(
        "cert-expired",
        None,
        "migration",
        "carol",
        NOW + D,
        NOW + 3 * D,
    )
    .unwrap();
    let c = book.update(
        NOW + D + 1,
        vec![finding("cert-expired", "cert:99", Severity::High)],
    );
    assert!(c.opened[0].suppressed.is_some());
    assert!(c.resolved.iter().all(|t| t.suppressed.is_none()));
    // Same rule and resource: replaced.
    let again = book
        .suppress(
            "cert-expired",
            None,
            "longer",
            "carol",
            NOW + D,
            NOW + 4 * D,
        )
        .unwrap();
    assert_eq!(book.suppressions(NOW + D + 1), vec![again]);
}

#[test]
fn suppress_refuses_bad_requests() {
    let mut book = FindingBook::new();
    let bad = [
        ("no-such-rule", Some("x"), "reason", NOW + D),
        ("weak-key", Some("x"), "  ", NOW + D),
        ("weak-key", Some(""), "reason", NOW + D),
        ("weak-key", Some("x"), "reason", NOW),
        ("weak-key", Some("x"), "reason", NOW - 1),
        ("weak-key", Some("x"), "reason", NOW + 365 * D + 1),
        ("weak-key", Some("x"), "reason", i64::MAX),
    ];
    for (rule, res, reason, until) in bad {
        let e = book.suppress(rule, res, reason, "alice", NOW, until);
        assert!(e.is_err(), "{rule} {res:?} {reason:?} {until}");
    }
    assert!(book
        .suppress("weak-key", Some("x"), "r", "a", i64::MIN, i64::MAX)
        .is_err());
    assert!(book
        .suppress("weak-key", Some("x"), "r", "a", NOW, NOW + 365 * D)
        .is_ok());
    assert!(book.unsuppress("sup-999").is_err());
}

#[test]
fn book_round_trips_through_json() {
    let mut book = FindingBook::new();
    book.update(NOW, evaluate(&messy()));
    book.suppress(
        "tls12-allowed",
        None,
        "old devices",
        "alice",
        NOW,
        NOW + 30 * D,
    )
    .unwrap();
    book.update(NOW + 10, evaluate(&baseline()));
    book.update(NOW + 20, evaluate(&messy()));
    book.update(
        NOW + 30,
        evaluate(&{
            let mut f = messy();
            f.tls13_only = true;
            f
        }),
    );
    let json = serde_json::to_string_pretty(&book).unwrap();
    let back: FindingBook = serde_json::from_str(&json).unwrap();
    assert_eq!(back, book);
    assert_eq!(back.list(true), book.list(true));
    // Tracked flattens the finding.
    let t = serde_json::to_value(&book.list(false)[0]).unwrap();
    assert_eq!(t["severity"], "critical");
    assert!(t["rule"].is_string() && t["resource"].is_string() && t["first_seen"].is_i64());
    let t2: Tracked = serde_json::from_value(t).unwrap();
    assert_eq!(t2, book.list(false)[0]);
    // An empty object is an empty book.
    let empty: FindingBook = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, FindingBook::new());
}

// ---------------------------------------------------------------------------------------------
// SARIF and exit codes
// ---------------------------------------------------------------------------------------------

#[test]
fn sarif_has_the_2_1_0_shape() {
    let mut book = FindingBook::new();
    book.update(NOW, evaluate(&messy()));
    book.suppress("tls12-allowed", None, "old devices", "alice", NOW, NOW + D)
        .unwrap();
    let list = book.list(true);
    let s = sarif(&list);
    assert_eq!(
        s["$schema"],
        "https://json.schemastore.org/sarif-2.1.0.json"
    );
    assert_eq!(s["version"], "2.1.0");
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "tollgate");
    assert!(driver["informationUri"].is_string());
    let rs = driver["rules"].as_array().unwrap();
    assert_eq!(rs.len(), rules().len());
    for (r, info) in rs.iter().zip(rules()) {
        assert_eq!(r["id"], info.id);
        assert_eq!(r["shortDescription"]["text"], info.title);
        assert_eq!(r["help"]["text"], info.remediation);
        assert!(["error", "warning", "note"]
            .contains(&r["defaultConfiguration"]["level"].as_str().unwrap()));
    }
    let results = runs[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), list.len());
    for (r, t) in results.iter().zip(&list) {
        assert_eq!(r["ruleId"], t.finding.rule.as_str());
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rs[i]["id"], t.finding.rule.as_str());
        let level = match t.finding.severity {
            Severity::Critical | Severity::High => "error",
            Severity::Medium => "warning",
            _ => "note",
        };
        assert_eq!(r["level"], level);
        assert_eq!(r["message"]["text"], t.finding.evidence.as_str());
        assert_eq!(
            r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"],
            t.finding.resource.as_str()
        );
        assert_eq!(r["properties"]["severity"], t.finding.severity.as_str());
        let sup = r["suppressions"].as_array().unwrap();
        if t.finding.rule == "tls12-allowed" {
            assert_eq!(sup.len(), 1);
            assert_eq!(sup[0]["kind"], "external");
            assert_eq!(sup[0]["justification"], "old devices");
        } else {
            assert!(sup.is_empty());
        }
        let phys = &r["locations"][0]["physicalLocation"];
        if t.finding.rule.starts_with("policy-") {
            assert_eq!(phys["artifactLocation"]["uri"], "policy.toml");
            assert_eq!(phys["region"]["startLine"], 40);
        } else {
            assert!(phys.is_null());
        }
    }
    assert!(results.iter().any(|r| r["ruleId"] == "policy-broad-grant"));
    assert!(results.iter().any(|r| r["ruleId"] == "policy-lint"));
    // Resolved findings are absent from the baseline.
    book.update(NOW + 1, vec![]);
    let s = sarif(&book.list(true));
    assert!(s["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["baselineState"] == "absent"));
    assert_eq!(sarif(&[])["runs"][0]["results"], serde_json::json!([]));
}

#[test]
fn exit_codes() {
    assert_eq!(exit_code(None), 0);
    assert_eq!(exit_code(Some(Severity::Info)), 0);
    assert_eq!(exit_code(Some(Severity::Low)), 2);
    assert_eq!(exit_code(Some(Severity::Medium)), 3);
    assert_eq!(exit_code(Some(Severity::High)), 4);
    assert_eq!(exit_code(Some(Severity::Critical)), 5);
    let mut book = FindingBook::new();
    book.update(NOW, evaluate(&messy()));
    assert_eq!(exit_code(book.highest_severity(false)), 5);
}

#[test]
fn times_and_hex_are_formatted() {
    assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
    assert_eq!(fmt_time(NOW), "2027-01-15T08:00:00Z");
    assert_eq!(fmt_time(-1), "1969-12-31T23:59:59Z");
    assert_eq!(fmt_time(951_782_400), "2000-02-29T00:00:00Z");
    let _ = (fmt_time(i64::MIN), fmt_time(i64::MAX));
    assert_eq!(fmt_span(3 * i128::from(D) + 5), "3 d");
    assert_eq!(norm_hex("00:0A"), "a");
    assert_eq!(norm_hex("000"), "0");
    assert_eq!(norm_hex(""), "");
}

// ---------------------------------------------------------------------------------------------
// ROCA
// ---------------------------------------------------------------------------------------------

/// A public ROCA-vulnerable 2048-bit modulus: `mod03.txt` of the test data published with the
/// paper's detector (github.com/crocs-muni/roca, `roca/tests/data/mod03.txt`).
const MOD03_ROCA: &str = "9dcd7420e420c270a68060eb8b5aa7457a9f6648f86fafed2775cc1f79ae962f1e63f1b9e51c55f9ea6fdc7332e9b0058c9ff2eb1fc89855029cf6aafe21e689feb38ac9ffb12f1ce371bb5d0e9aae64161abce74b4244bf68f1edb4411f756a097c8929c14740245ea355f8332d1aa36bb50c7dcb4505da8de02e4e53d38f8df06097da7524df0df93db48eac8cc4af2d3a16257eb2b2adca6ba464e5974fa92550d31b1babf161e7692d00b86e3dd886ecab4abfbe1a8f8cc263ff4af55cdb45f4249a5193925f5e983d762f0b6800943eb0267b08f42ed311ce1f5c86eacbc8ce4d3cb7a2fee1ef5641423a1cf4114e5ecf50034a60a412523af9e6f4aa11";

/// The modulus of a 2048-bit key made with `openssl genrsa 2048` (OpenSSL 3.0) for this test.
const OPENSSL_2048: &str = "c14a0c16063ea762f3425e2583da259bc27672782978a2a4968854bb8c6dc682e81bccc6f0e7f554dbcf9cca58c20b214f356022f6dd22be6acc2ce318e96da7cd06ebe5ff0219a4848f5327f628b665ae989c48982185a771eb8935712753bf72ecb5d298abc72f4b3da7ae31aad4563adecaedf911ba3213391b8c1aa188f17be3becf9cf6b0b45b1bc7e63228026ec79262ee20680a7416620103679a26c64c0a3221d52fa5a3ba836181f76c31bd2ee13fcc8fe86189aa6a21133d10ab5849a7ad5be031f841f57843f2250a10299e6fcbe3d5eddd94533337783950774d481c3f2cc9629a22a22dd18904c47b018fbb1e48c11051a15e49373cfbbc8201";

/// The fingerprint as the paper's detector publishes it: for each prime of [`PRIMES`], a bit
/// set of the residues allowed (bit `k` set: `N mod p == k` is allowed). Decimal.
const PUBLISHED_PRINTS: [&str; 38] = [
    "6",
    "30",
    "126",
    "1026",
    "5658",
    "107286",
    "199410",
    "8388606",
    "536870910",
    "2147483646",
    "67109890",
    "2199023255550",
    "8796093022206",
    "140737488355326",
    "5310023542746834",
    "576460752303423486",
    "1455791217086302986",
    "147573952589676412926",
    "20052041432995567486",
    "6041388139249378920330",
    "207530445072488465666",
    "9671406556917033397649406",
    "618970019642690137449562110",
    "79228162521181866724264247298",
    "2535301200456458802993406410750",
    "1760368345969468176824550810518",
    "50079290986288516948354744811034",
    "473022961816146413042658758988474",
    "10384593717069655257060992658440190",
    "144390480366845522447407333004847678774",
    "2722258935367507707706996859454145691646",
    "174224571863520493293247799005065324265470",
    "696898287454081973172991196020261297061886",
    "713623846352979940529142984724747568191373310",
    "1800793591454480341970779146165214289059119882",
    "126304807362733370595828809000324029340048915994",
    "11692013098647223345629478661730264157247460343806",
    "187072209578355573530071658587684226515959365500926",
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn openssl_modulus() -> Vec<u8> {
    hex(OPENSSL_2048)
}

/// SplitMix64: a small deterministic generator for test numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random number of `limbs` 32-bit limbs with its top bit set.
    fn big(&mut self, limbs: usize, odd: bool) -> Big {
        let mut v: Big = (0..limbs).map(|_| self.next() as u32).collect();
        if let Some(top) = v.last_mut() {
            *top |= 0x8000_0000;
        }
        if odd {
            v[0] |= 1;
        }
        v
    }
}

/// A little-endian unsigned integer in 32-bit limbs (just enough arithmetic for the tests).
type Big = Vec<u32>;

fn mul_small(a: &Big, m: u32) -> Big {
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u64;
    for &x in a {
        let t = u64::from(x) * u64::from(m) + carry;
        out.push(t as u32);
        carry = t >> 32;
    }
    out.push(carry as u32);
    out
}

fn add(a: &Big, b: &Big) -> Big {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0u64;
    for i in 0..a.len().max(b.len()) {
        let t = u64::from(*a.get(i).unwrap_or(&0)) + u64::from(*b.get(i).unwrap_or(&0)) + carry;
        out.push(t as u32);
        carry = t >> 32;
    }
    out.push(carry as u32);
    out
}

fn mul(a: &Big, b: &Big) -> Big {
    let mut out = vec![0u32; a.len() + b.len()];
    for (i, &x) in a.iter().enumerate() {
        let mut carry = 0u64;
        for (j, &y) in b.iter().enumerate() {
            let t = u64::from(out[i + j]) + u64::from(x) * u64::from(y) + carry;
            out[i + j] = t as u32;
            carry = t >> 32;
        }
        out[i + b.len()] = carry as u32;
    }
    out
}

fn to_bytes(a: &Big) -> Vec<u8> {
    let mut out: Vec<u8> = a.iter().rev().flat_map(|x| x.to_be_bytes()).collect();
    let first = out.iter().position(|&b| b != 0).unwrap_or(out.len());
    out.drain(..first);
    out
}

fn from_decimal(s: &str) -> Big {
    s.bytes().fold(vec![0], |acc, d| {
        add(&mul_small(&acc, 10), &vec![u32::from(d - b'0')])
    })
}

fn bit(a: &Big, k: usize) -> bool {
    a.get(k / 32).is_some_and(|x| x >> (k % 32) & 1 == 1)
}

/// The members of 65537's subgroup modulo `p`.
fn members(p: u32) -> Vec<u32> {
    let set = subgroup(p);
    (0..p).filter(|&x| set[x as usize]).collect()
}

/// A 2048-bit-plus modulus with the fingerprint, built by the Chinese remainder theorem:
/// residues picked in the subgroup for each prime, combined (Garner), then lifted by a random
/// multiple of the primes' product. `off` names a prime whose residue is put outside the
/// subgroup instead.
fn crt_modulus(seed: u64, off: Option<u32>) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut r: Big = vec![0];
    let mut m: Big = vec![1];
    for &p in &PRIMES {
        let inside = members(p);
        let a = if off == Some(p) {
            (1..p).find(|x| !inside.contains(x)).unwrap()
        } else {
            inside[(rng.next() % inside.len() as u64) as usize]
        };
        let (rr, mm) = (residue(&to_bytes(&r), p), residue(&to_bytes(&m), p));
        let t = (0..p).find(|t| (rr + mm * t) % p == a).unwrap();
        r = add(&r, &mul_small(&m, t));
        m = mul_small(&m, p);
    }
    let y = rng.big(58, false);
    to_bytes(&add(&mul(&m, &y), &r))
}

fn roca_positive(seed: u64) -> Vec<u8> {
    crt_modulus(seed, None)
}

#[test]
fn roca_subgroups_match_the_published_fingerprint() {
    for (&p, print) in PRIMES.iter().zip(PUBLISHED_PRINTS) {
        let published = from_decimal(print);
        let set = subgroup(p);
        for (k, &allowed) in set.iter().enumerate() {
            assert_eq!(allowed, bit(&published, k), "prime {p}, residue {k}");
        }
        // A subgroup: its size divides p - 1, and it holds 1 and 65537 mod p.
        let size = members(p).len() as u32;
        assert_eq!((p - 1) % size, 0);
        assert!(set[1] && set[(65_537 % p) as usize]);
    }
}

#[test]
fn roca_flags_constructed_and_published_vulnerable_moduli() {
    for seed in 0..16 {
        let n = roca_positive(seed);
        assert!(bit_len(&n) >= 2048, "{}", bit_len(&n));
        for &p in &PRIMES {
            assert!(subgroup(p)[residue(&n, p) as usize]);
        }
        assert!(has_roca_fingerprint(&n), "seed {seed}");
        // With leading zero bytes too.
        let mut padded = vec![0, 0];
        padded.extend_from_slice(&n);
        assert!(has_roca_fingerprint(&padded));
    }
    assert!(has_roca_fingerprint(&hex(MOD03_ROCA)));
    // One residue outside its subgroup is enough to clear a modulus.
    let proper: Vec<u32> = PRIMES
        .iter()
        .copied()
        .filter(|&p| members(p).len() < p as usize - 1)
        .collect();
    assert!(proper.len() >= 15, "{proper:?}");
    for p in proper {
        assert!(!has_roca_fingerprint(&crt_modulus(5, Some(p))), "prime {p}");
    }
}

#[test]
fn roca_does_not_flag_ordinary_moduli() {
    assert!(!has_roca_fingerprint(&openssl_modulus()));
    let mut rng = Rng(0x5eed);
    for _ in 0..200 {
        let n = to_bytes(&mul(&rng.big(32, true), &rng.big(32, true)));
        assert!(bit_len(&n) >= 2047);
        assert!(!has_roca_fingerprint(&n));
    }
    for m in [
        vec![],
        vec![0],
        vec![1],
        vec![0xff; 16 * 1024],
        vec![0; 512],
        vec![1; 40],
    ] {
        assert!(!has_roca_fingerprint(&m));
    }
}

#[test]
fn residues_and_bit_lengths() {
    let n: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
    for &p in &PRIMES {
        assert_eq!(u128::from(residue(&n.to_be_bytes(), p)), n % u128::from(p));
    }
    assert_eq!(residue(&[], 7), 0);
    assert_eq!(residue(&[5], 0), 0);
    assert_eq!(bit_len(&[]), 0);
    assert_eq!(bit_len(&[0, 0]), 0);
    assert_eq!(bit_len(&[1]), 1);
    assert_eq!(bit_len(&[0, 0x80, 0]), 16);
    assert_eq!(bit_len(&openssl_modulus()), 2048);
}
