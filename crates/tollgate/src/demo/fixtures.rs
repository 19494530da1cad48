//! The demo's world, written for it: three suppliers and their models and firmware, a CycloneDX
//! SBOM per firmware, one OSV advisory, the policy, the compliance profile, and the fleet plan
//! (which device runs what, which one is vulnerable, which one gets compromised).
//!
//! Everything here is our own fixture text. The advisory states public facts only: the id
//! GHSA-35jh-r3h4-6jhm (CVE-2021-23337, command injection in lodash's `template`), the affected
//! range (every version before 4.17.21) and its CVSS 3.1 vector. No network, no real data set.

use serde_json::{json, Value};

/// The policy: devices publish their own telemetry and status and read their own commands; the
/// warehouse system reads all telemetry and sends commands. Deny rules name what nobody may do.
pub const POLICY: &str = r#"# The demo's policy: least privilege per group, default deny.
version = 1

[[allow]]
id = "devices-own-topics"
who = ["group:scanners", "group:robots", "group:telematics"]
publish = ["devices/${device.id}/telemetry", "devices/${device.id}/status"]
subscribe = ["devices/${device.id}/commands/#"]
retain = ["devices/${device.id}/status"]

[[allow]]
id = "wms-reads-the-fleet"
who = "group:backend"
subscribe = ["devices/+/telemetry", "devices/+/status"]
publish = ["devices/+/commands/#"]

[[deny]]
id = "no-broker-internals"
who = "*"
publish = ["$SYS/#"]
subscribe = ["$SYS/#"]
"#;

/// The compliance profile: a known high or critical vulnerability in what a device runs
/// quarantines it (on its live connection) until it is fixed.
pub const COMPLIANCE: &str = r#"# The demo's compliance profile.
[[rule]]
id = "no-high-vulns"
description = "no known high or critical vulnerability in the running firmware"
max_severity = "medium"
action = "quarantine"

[[rule]]
id = "sbom-present"
description = "every device's firmware is described by an SBOM"
require_sbom = true
action = "report"
"#;

/// The one advisory the demo imports (OSV 1.6 format).
pub fn advisory() -> Value {
    json!({
        "schema_version": "1.6.0",
        "id": "GHSA-35jh-r3h4-6jhm",
        "modified": "2026-01-01T00:00:00Z",
        "published": "2021-02-15T00:00:00Z",
        "aliases": ["CVE-2021-23337"],
        "summary": "Command injection in lodash's template function",
        "severity": [
            {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"}
        ],
        "affected": [{
            "package": {"ecosystem": "npm", "name": "lodash", "purl": "pkg:npm/lodash"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}]
        }],
        "database_specific": {"severity": "HIGH", "note": "written for the Tollgate demo"}
    })
}

/// One supplier's product line in the demo.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    pub supplier: &'static str,
    pub model: &'static str,
    /// The policy group of its devices.
    pub group: &'static str,
    /// Device id prefix.
    pub prefix: &'static str,
    /// Firmware the fleet runs.
    pub firmware: &'static str,
    /// Components of that firmware: (package URL without version, version).
    pub components: &'static [(&'static str, &'static str)],
}

/// Handheld scanners, warehouse robots, truck telematics units.
pub const LINES: [Line; 3] = [
    Line {
        supplier: "acme",
        model: "Scanner-X2",
        group: "scanners",
        prefix: "acme-scanner",
        firmware: "1.4.0",
        components: &[
            ("pkg:generic/busybox", "1.36.1"),
            ("pkg:npm/express", "4.19.2"),
            ("pkg:npm/lodash", "4.17.21"),
        ],
    },
    Line {
        supplier: "globex",
        model: "RB-7",
        group: "robots",
        prefix: "globex-robot",
        firmware: "2.2.0",
        components: &[
            ("pkg:pypi/pyyaml", "6.0.1"),
            ("pkg:npm/lodash", "4.17.21"),
            ("pkg:generic/zlib", "1.3.1"),
        ],
    },
    Line {
        supplier: "initech",
        model: "TL-100",
        group: "telematics",
        prefix: "initech-tl",
        firmware: "3.0.1",
        components: &[
            ("pkg:generic/openssl", "3.0.13"),
            ("pkg:pypi/requests", "2.32.3"),
        ],
    },
];

/// The older robot firmware one device still runs: it bundles a lodash before the fix.
pub const VULNERABLE_FIRMWARE: &str = "2.1.0";
pub const VULNERABLE_COMPONENTS: &[(&str, &str)] = &[
    ("pkg:pypi/pyyaml", "6.0.1"),
    ("pkg:npm/lodash", "4.17.20"),
    ("pkg:generic/zlib", "1.3.1"),
];

/// The warehouse management system: the one backend subscriber.
pub const BACKEND: &str = "wms-1";

/// A CycloneDX 1.5 SBOM for one firmware, with the CISA minimum elements.
pub fn sbom(line: &Line, firmware: &str, components: &[(&str, &str)]) -> Value {
    let comps: Vec<Value> = components
        .iter()
        .map(|(purl, version)| {
            let name = purl.rsplit('/').next().unwrap_or(purl);
            json!({
                "type": "library",
                "name": name,
                "version": version,
                "purl": format!("{purl}@{version}"),
                "supplier": {"name": line.supplier},
                "bom-ref": format!("{purl}@{version}"),
            })
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": "2026-11-01T00:00:00Z",
            "authors": [{"name": format!("{} firmware team", line.supplier)}],
            "supplier": {"name": line.supplier},
            "component": {"type": "firmware", "name": line.model, "version": firmware}
        },
        "components": comps
    })
}

/// One device of the demo fleet.
#[derive(Debug, Clone)]
pub struct Planned {
    pub id: String,
    pub line: Option<Line>,
    pub group: &'static str,
    pub firmware: Option<&'static str>,
    /// Starts probing what it may not touch, some seconds in.
    pub compromised: bool,
}

/// The fleet: `devices` devices (the backend included) spread over the three lines; one robot
/// runs the vulnerable firmware and one scanner is compromised.
pub fn fleet(devices: usize) -> Vec<Planned> {
    let mut out = vec![Planned {
        id: BACKEND.to_owned(),
        line: None,
        group: "backend",
        firmware: None,
        compromised: false,
    }];
    let mut counts = [0usize; 3];
    for i in 0..devices.saturating_sub(1) {
        let k = i % LINES.len();
        counts[k] += 1;
        let line = LINES[k];
        let n = counts[k];
        out.push(Planned {
            id: format!("{}-{n:02}", line.prefix),
            line: Some(line),
            group: line.group,
            // The third robot was never updated.
            firmware: Some(if k == 1 && n == 3 {
                VULNERABLE_FIRMWARE
            } else {
                line.firmware
            }),
            // The fourth scanner was tampered with.
            compromised: k == 0 && n == 4,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_has_one_vulnerable_robot_one_compromised_scanner_and_a_backend() {
        let f = fleet(50);
        assert_eq!(f.len(), 50);
        assert_eq!(f.iter().filter(|d| d.compromised).count(), 1);
        assert_eq!(
            f.iter()
                .filter(|d| d.firmware == Some(VULNERABLE_FIRMWARE))
                .count(),
            1
        );
        assert_eq!(f.iter().filter(|d| d.group == "backend").count(), 1);
        let mut ids: Vec<&str> = f.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 50, "ids are unique");
        for d in &f {
            tollgate_pki::validate_device_id(&d.id).unwrap();
        }
    }

    #[test]
    fn the_fixtures_parse() {
        tollgate_policy::Policy::parse(POLICY, "demo policy").unwrap();
        assert!(tollgate_policy::Policy::parse(POLICY, "demo policy")
            .unwrap()
            .lint()
            .iter()
            .all(|l| l.severity != tollgate_policy::Severity::Warning));
        tollgate_compliance::profile::Profile::parse(COMPLIANCE, "demo profile").unwrap();
        let doc = serde_json::to_vec(&sbom(&LINES[1], VULNERABLE_FIRMWARE, VULNERABLE_COMPONENTS))
            .unwrap();
        tollgate_compliance::sbom::Sbom::parse(&doc).unwrap();
        let adv = serde_json::to_vec(&advisory()).unwrap();
        tollgate_compliance::osv::Advisory::parse(&adv, "demo").unwrap();
    }
}
