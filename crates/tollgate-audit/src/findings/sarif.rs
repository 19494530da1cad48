//! Findings as a SARIF 2.1.0 log (OASIS Static Analysis Results Interchange Format), for code
//! scanning dashboards.

use serde_json::{json, Value};

use super::rules::{rule_index, rules};
use super::{Severity, Tracked};

/// The SARIF level of a severity: critical and high are errors, medium a warning, the rest
/// notes.
fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// The `security-severity` score code scanning services sort by (CVSS-like, 0 to 10).
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

/// The policy file line of a policy finding: from the evidence (`policy.toml line 12: ...`),
/// else from a `policy:<rule>:<line>` resource.
fn policy_line(t: &Tracked) -> Option<u64> {
    if !t.finding.rule.starts_with("policy-") {
        return None;
    }
    let from_evidence = t
        .finding
        .evidence
        .strip_prefix("policy.toml line ")
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        });
    from_evidence
        .or_else(|| {
            t.finding
                .resource
                .rsplit(':')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .filter(|&n| n >= 1)
}

/// One result.
fn result(t: &Tracked) -> Value {
    let f = &t.finding;
    let mut location = json!({
        "logicalLocations": [{ "fullyQualifiedName": f.resource }],
    });
    if let Some(line) = policy_line(t) {
        if let Some(obj) = location.as_object_mut() {
            obj.insert(
                "physicalLocation".into(),
                json!({
                    "artifactLocation": { "uri": "policy.toml" },
                    "region": { "startLine": line },
                }),
            );
        }
    }
    let suppressions: Vec<Value> = t
        .suppressed
        .iter()
        .map(|s| {
            json!({
                "kind": "external",
                "status": "accepted",
                "justification": s.reason,
                "properties": {
                    "id": s.id,
                    "author": s.author,
                    "createdAt": s.created_at,
                    "until": s.until,
                },
            })
        })
        .collect();
    let mut r = json!({
        "ruleId": f.rule,
        "level": level(f.severity),
        "message": { "text": f.evidence },
        "locations": [location],
        "partialFingerprints": { "tollgateFindingId/v1": t.id },
        "suppressions": suppressions,
        "properties": {
            "severity": f.severity.as_str(),
            "remediation": f.remediation,
            "firstSeen": t.first_seen,
            "lastSeen": t.last_seen,
        },
    });
    if let Some(obj) = r.as_object_mut() {
        if let Some(i) = rule_index(&f.rule) {
            obj.insert("ruleIndex".into(), json!(i));
        }
        if let Some(at) = t.resolved_at {
            // Present before, absent now.
            obj.insert("baselineState".into(), json!("absent"));
            if let Some(p) = obj.get_mut("properties").and_then(Value::as_object_mut) {
                p.insert("resolvedAt".into(), json!(at));
            }
        }
    }
    r
}

/// The findings as a SARIF 2.1.0 log: one run of the tool `tollgate` whose driver lists every
/// rule of the catalogue, and one result per finding (suppressed ones carry an `external`
/// suppression with its justification; resolved ones have `baselineState: "absent"`).
pub fn sarif(findings: &[Tracked]) -> Value {
    let rule_list: Vec<Value> = rules()
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.title },
                "help": { "text": r.remediation },
                "defaultConfiguration": { "level": level(r.severity) },
                "properties": {
                    "severity": r.severity.as_str(),
                    "security-severity": security_severity(r.severity),
                    "tags": ["security", "configuration"],
                },
            })
        })
        .collect();
    let results: Vec<Value> = findings.iter().map(result).collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "tollgate",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": env!("CARGO_PKG_REPOSITORY"),
                    "rules": rule_list,
                },
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}
