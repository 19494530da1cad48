//! The configuration audit on the real server: for each check that a live server can be put
//! into, make the condition, see the finding appear (with its event), fix it, see it resolve.
//! Checks whose condition the product itself refuses to create (a weak key, an expiring CA, a
//! dormant device after 30 days) are covered by the unit tests of `tollgate_audit::findings`.
//! Also: `--sarif` is SARIF 2.1.0, the exit code follows the highest severity, suppressions
//! need a reason and are written ahead to the audit log.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use serde_json::{json, Value};
use support::{csr, curl_post, token, Server, P256};

/// `POST /api/v1/findings/scan`: the open findings' ids, and the whole answer.
fn scan(s: &Server) -> (Vec<String>, Value) {
    let (code, v) = s.admin_api("POST", "/api/v1/findings/scan", None);
    assert_eq!(code, 200, "{v}");
    let ids = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, v)
}

fn has(ids: &[String], id: &str) -> bool {
    ids.iter().any(|i| i == id)
}

fn rule_open(ids: &[String], rule: &str) -> bool {
    ids.iter().any(|i| i.starts_with(&format!("{rule}:")))
}

/// Make, see, fix, see resolved: the finding's events too.
fn appears_then_resolves(s: &Server, id: &str, make: impl FnOnce(), fix: impl FnOnce()) {
    make();
    let (ids, v) = scan(s);
    assert!(has(&ids, id), "{id} expected after making it: {v:#}");
    s.wait_event(&format!("finding_opened {id}"), |e| {
        e["type"] == "finding_opened" && e["id"] == id
    });
    fix();
    let (ids, v) = scan(s);
    assert!(!has(&ids, id), "{id} expected resolved: {v:#}");
    s.wait_event(&format!("finding_resolved {id}"), |e| {
        e["type"] == "finding_resolved" && e["id"] == id
    });
}

const BROAD: &str = r##"
[[allow]]
id = "everyone-everything"
who = "*"
publish = ["#"]
subscribe = ["#"]
"##;

const NARROW: &str = r##"
[[allow]]
id = "own-telemetry"
who = "*"
publish = ["devices/${device.id}/telemetry"]
subscribe = ["devices/${device.id}/commands/#"]
"##;

const DEAD_DENY: &str = r##"
[[allow]]
id = "own-telemetry"
who = "*"
publish = ["devices/${device.id}/telemetry", "secret/${device.id}/x"]

[[deny]]
id = "no-secrets"
who = "*"
publish = ["secret/#"]
"##;

#[test]
fn each_live_check_appears_when_made_and_resolves_when_fixed() {
    let s = Server::start_with(&[], NARROW);
    let data = s.data.clone();

    // A key readable by others.
    let key = data.join("ca/issuing.key");
    appears_then_resolves(
        &s,
        "key-file-permissions:file:ca/issuing.key",
        || {
            support::sh(&data, "chmod 644 ca/issuing.key")
                .status
                .success()
                .then_some(())
                .unwrap()
        },
        || {
            support::sh(&data, "chmod 600 ca/issuing.key")
                .status
                .success()
                .then_some(())
                .unwrap()
        },
    );
    assert!(key.exists());

    // The root CA key online (as `init` leaves it), then moved offline.
    let (ids, _) = scan(&s);
    assert!(rule_open(&ids, "root-ca-key-online"), "{ids:?}");
    let offline = s.root.join("root.key.offline");
    std::fs::rename(data.join("ca/root.key"), &offline).unwrap();
    let (ids, _) = scan(&s);
    assert!(!rule_open(&ids, "root-ca-key-online"), "{ids:?}");
    std::fs::rename(&offline, data.join("ca/root.key")).unwrap();

    // A grant that reaches every device's topics.
    appears_then_resolves(
        &s,
        "policy-broad-grant:policy:everyone-everything",
        || assert!(s.set_policy(BROAD)),
        || assert!(s.set_policy(NARROW)),
    );

    // A grant a deny rule makes meaningless (dead): a lint warning, as a finding.
    assert!(s.set_policy(DEAD_DENY));
    let (ids, v) = scan(&s);
    assert!(rule_open(&ids, "policy-lint"), "{v:#}");
    assert!(s.set_policy(NARROW));
    let (ids, _) = scan(&s);
    assert!(!rule_open(&ids, "policy-lint"), "{ids:?}");

    // A device without inventory.
    s.add_device("inv-1", &[]);
    let (ids, _) = scan(&s);
    assert!(has(&ids, "device-no-inventory:device:inv-1"), "{ids:?}");
    s.revoke("inv-1");
    let (ids, _) = scan(&s);
    assert!(!has(&ids, "device-no-inventory:device:inv-1"), "{ids:?}");

    // Two devices enrolled with the same key pair.
    let dir = s.root.join("dup");
    let t1 = token(&s, "twin-a", &[]);
    let t2 = token(&s, "twin-b", &[]);
    let a = csr(&dir, "a", "twin-a", P256, "");
    let b = csr(&dir, "b", "twin-b", "-key a.key", "");
    let (code, body) = curl_post(&s, "simpleenroll", &a, &["-u", &format!("twin-a:{t1}")]);
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl_post(&s, "simpleenroll", &b, &["-u", &format!("twin-b:{t2}")]);
    assert_eq!(code, 200, "{body}");
    let (ids, v) = scan(&s);
    let dup = ids
        .iter()
        .find(|i| i.starts_with("duplicate-public-key:"))
        .unwrap_or_else(|| panic!("duplicate key expected: {v:#}"))
        .clone();
    s.revoke("twin-b");
    let (ids, _) = scan(&s);
    assert!(!has(&ids, &dup), "{ids:?}");

    // SARIF, the exit code, and suppressions (which need a reason, and are written ahead).
    let out = s.cli(&["audit", "config", "--sarif"]);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(results
        .iter()
        .any(|r| r["ruleId"] == "root-ca-key-online" && r["level"] == "warning"));
    assert!(
        sarif["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .len()
            >= 20
    );
    let out = s.cli(&["audit", "config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("root-ca-key-online"), "{text}");
    let code = out.status.code().unwrap();
    assert!(
        (2..=5).contains(&code),
        "exit code by severity, got {code}: {text}"
    );
    let (code, _) = s.admin_api(
        "POST",
        "/api/v1/findings/suppressions",
        Some(json!({"rule": "root-ca-key-online", "reason": "", "for": "7d"})),
    );
    assert_eq!(code, 422);
    let (code, _) = s.admin_api(
        "POST",
        "/api/v1/findings/suppressions",
        Some(json!({"rule": "no-such-rule", "reason": "x", "for": "7d"})),
    );
    assert_eq!(code, 422);
    let out = s.cli(&[
        "audit",
        "suppress",
        "root-ca-key-online",
        "--reason",
        "the root key goes offline at the next maintenance window",
        "--for",
        "7d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.wait_event("finding_suppression", |e| {
        e["type"] == "finding_suppression" && e["change"] == "added"
    });
    let (_, entries) = s.admin_api("GET", "/api/v1/audit/entries?from=0&limit=10000", None);
    assert!(entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["entry"]["action"] == "suppress_finding"));
    let (_, v) = scan(&s);
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "root-ca-key-online")
        .unwrap()
        .clone();
    assert!(!f["suppressed"].is_null(), "{f:#}");
}

#[test]
fn settings_checks_follow_the_configuration_across_restarts() {
    let mut s = Server::start_with(
        &[
            ("client_id = \"exact\"", "client_id = \"any\""),
            ("on disk.\nenabled = true", "on disk.\nenabled = false"),
        ],
        NARROW,
    );
    s.stop();
    s.admin_host = "0.0.0.0".into();
    s.spawn();
    let (ids, v) = scan(&s);
    for rule in [
        "client-id-any",
        "tls12-allowed",
        "audit-log-disabled",
        "admin-listener-exposed",
        "metrics-listener-exposed",
    ] {
        assert!(rule_open(&ids, rule), "{rule}: {v:#}");
    }
    // Fixed: the defaults again.
    s.stop();
    let cfg = s.data.join("tollgate.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("client_id = \"any\"", "client_id = \"exact\"")
        .replace("min_version = \"1.2\"", "min_version = \"1.3\"")
        .replace("on disk.\nenabled = false", "on disk.\nenabled = true");
    std::fs::write(&cfg, text).unwrap();
    s.admin_host = "127.0.0.1".into();
    s.spawn();
    let (ids, v) = scan(&s);
    for rule in [
        "client-id-any",
        "tls12-allowed",
        "audit-log-disabled",
        "admin-listener-exposed",
        "metrics-listener-exposed",
    ] {
        assert!(!rule_open(&ids, rule), "{rule}: {v:#}");
    }
    let resolved = s
        .events()
        .into_iter()
        .filter(|e| e["type"] == "finding_resolved")
        .count();
    assert!(resolved >= 5, "resolutions are events");

    // A truncated audit log: critical; rotating it away resolves it.
    s.stop();
    let entries = s.data.join("audit/entries.jsonl");
    let text = std::fs::read_to_string(&entries).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&entries, lines[..lines.len() - 3].join("\n") + "\n").unwrap();
    s.spawn();
    let (ids, v) = scan(&s);
    assert!(rule_open(&ids, "audit-log-inconsistent"), "{v:#}");
    assert_eq!(v["summary"]["highest"], "critical");
    let out = s.cli(&["audit", "config"]);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn device_certificates_under_a_retired_issuing_ca_are_found_until_renewed_or_revoked() {
    let mut s = Server::start_with(&[], NARROW);
    s.add_device("old-1", &[]);
    s.stop();
    let out = s.cli(&["ca", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.spawn();
    let (ids, v) = scan(&s);
    assert!(
        has(&ids, "device-cert-under-retired-ca:device:old-1"),
        "{v:#}"
    );
    s.revoke("old-1");
    let (ids, _) = scan(&s);
    assert!(
        !has(&ids, "device-cert-under-retired-ca:device:old-1"),
        "{ids:?}"
    );
}
