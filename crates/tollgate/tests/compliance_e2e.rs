//! Supply-chain compliance end to end: a supplier and its manufacturing CA, a device enrolled
//! with its bootstrap certificate (supplier, model and serial recorded), which reports its
//! firmware over MQTT; SBOMs made at test time by `cyclonedx-py` over real virtual
//! environments; an OSV record for a real advisory; live quarantine of the connected device,
//! and its release within a second of reporting a fixed firmware. Then VEX, a waiver that
//! expires by itself, a report-only rule that never quarantines, dry runs and reports.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    add_supplier, bootstrap_cert, csr, curl_post, device_files, p7_to_pem, supplier_ca, Server,
    P256,
};

const POLICY: &str = r#"
version = 1

[[allow]]
id = "scanners"
who = "group:scanners"
publish = ["devices/${device.id}/telemetry"]

[[allow]]
id = "backend"
who = "group:backend"
subscribe = ["devices/+/telemetry", "$tollgate/devices/+/inventory"]
"#;

const PROFILE: &str = r#"
[[rule]]
id = "no-high-vulns"
max_severity = "medium"    # a vulnerability rated high or critical violates the rule
action = "quarantine"

[[rule]]
id = "sbom-elements"
sbom_minimum_elements = true
action = "report"
severity = "low"
"#;

/// PYSEC-2021-108 (CVE-2021-33503, GHSA-q2q7-5pp4-w6pg): urllib3 before 1.26.5, a ReDoS in URL
/// authority parsing. The identifiers, range and vector are facts from the published advisory;
/// the record is written here in the OSV format.
const OSV: &str = r#"{
  "schema_version": "1.6.0",
  "id": "PYSEC-2021-108",
  "modified": "2021-06-15T12:00:00Z",
  "published": "2021-06-29T11:15:00Z",
  "aliases": ["CVE-2021-33503", "GHSA-q2q7-5pp4-w6pg"],
  "summary": "urllib3 URL authority parsing is vulnerable to catastrophic backtracking",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
  "affected": [{
    "package": {"ecosystem": "PyPI", "name": "urllib3", "purl": "pkg:pypi/urllib3"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.26.5"}]}]
  }]
}"#;

const SERIAL: &str = "SCN-0001";
const MODEL: &str = "Scanner-X2";

fn run(dir: &Path, cmd: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An SBOM of a virtual environment holding urllib3 `version`, made by cyclonedx-py.
fn sbom_of_venv(dir: &Path, version: &str) -> PathBuf {
    let venv = dir.join(format!("venv-{version}"));
    run(
        dir,
        &format!(
            "python3 -m venv {v} && {v}/bin/pip install -q --no-deps --disable-pip-version-check urllib3=={version} \
             && cyclonedx-py environment --sv 1.5 -o sbom-{version}.json {v}/bin/python",
            v = venv.display()
        ),
    );
    let path = dir.join(format!("sbom-{version}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(&format!("pkg:pypi/urllib3@{version}")),
        "cyclonedx-py lists urllib3 {version}: {text}"
    );
    path
}

fn cli_ok(s: &Server, args: &[&str]) -> String {
    let out = s.cli(args);
    assert!(
        out.status.success(),
        "tollgate {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `n`th (0-based) event of `ty` for the device whose `source` field (if given) matches.
fn wait_nth(s: &Server, ty: &str, source: Option<&str>, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let matching: Vec<Value> = s
            .events()
            .into_iter()
            .filter(|e| e["type"] == ty && e["device"] == SERIAL)
            .filter(|e| {
                source.is_none_or(|src| {
                    e["source"] == src
                        || e["sources"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == src))
                })
            })
            .collect();
        if let Some(e) = matching.get(n) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {ty} #{n} for {SERIAL} ({source:?}); events: {:#?}",
            s.events()
                .iter()
                .filter(|e| e["device"] == SERIAL)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn compliance_of(s: &Server) -> Value {
    let v = cli_ok(s, &["compliance", "report", "--json", "--device", SERIAL]);
    let v: Value = serde_json::from_str(&v).unwrap();
    v[0].clone()
}

const Q: &str = "compliance:no-high-vulns";

#[test]
fn a_noncompliant_device_is_quarantined_live_and_released_when_it_reports_a_fixed_firmware() {
    let s = Server::start_with(&[], POLICY);
    std::fs::write(s.data.join("compliance.toml"), PROFILE).unwrap();
    s.wait_event("the profile is loaded", |e| {
        e["type"] == "compliance_profile_reloaded" && e["rules"] == 2
    });

    // A supplier and its manufacturing CA; a device enrolled with its bootstrap certificate.
    let dir = s.root.join("supply");
    let ca = supplier_ca(&dir, "acme");
    let boot = bootstrap_cert(&dir, "acme", "idev", SERIAL, "");
    add_supplier(
        &s,
        "acme",
        &ca,
        &[
            "--group",
            "scanners",
            "--disclosure-contact",
            "https://acme.example/security",
        ],
        &boot,
    );
    let boot: Vec<&str> = boot.iter().map(String::as_str).collect();
    let req = csr(&dir, "op", SERIAL, P256, "");
    let (code, body) = curl_post(&s, "simpleenroll", &req, &boot);
    assert_eq!(code, 200, "{body}");
    let crt = p7_to_pem(&dir, &body, "op");
    std::fs::rename(dir.join("op.key"), dir.join(format!("{SERIAL}.key"))).unwrap();
    let dev = device_files(&s, &dir, SERIAL, &crt);
    let inv = &s.show(SERIAL)["inventory"];
    assert_eq!(inv["supplier"], "acme", "{inv}");
    assert_eq!(inv["model"], MODEL, "the model from the IDevID: {inv}");
    assert_eq!(inv["hardware_serial"], SERIAL, "{inv}");

    let backend = s.add_device("backend", &["backend"]);
    let mut reader = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry", "$tollgate/devices/+/inventory"], "qos": 1},
            {"op": "expect", "count": 2, "timeout": 20},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(reader.wait_step(1)["codes"], json!([1, 1]));

    let quarantined = s.root.join("quarantined");
    let inventory = format!("$tollgate/devices/{SERIAL}/inventory");
    let mut scanner = s.paho_background(
        &dev,
        json!([
            {"op": "connect", "client_id": SERIAL},
            {"op": "publish", "topic": format!("devices/{SERIAL}/telemetry"), "payload": "before", "qos": 1},
            {"op": "publish", "topic": inventory, "payload": "{\"firmware\": \"1.2.0\"}", "qos": 1},
            {"op": "wait_file", "path": quarantined, "timeout": 60},
            // 4: normal telemetry, refused while quarantined.
            {"op": "publish", "topic": format!("devices/{SERIAL}/telemetry"), "payload": "during", "qos": 1},
            // 5: the inventory topic still works: the fixed firmware.
            {"op": "publish", "topic": inventory, "payload": "{\"firmware\": \"1.3.0\"}", "qos": 1},
            // 6: telemetry flows again once released.
            {"op": "publish_until_ok", "topic": format!("devices/{SERIAL}/telemetry"), "payload": "after", "timeout": 5, "interval": 0.02},
            {"op": "check_connected"},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(scanner.wait_step(1)["rc"], 0, "compliant so far");
    assert_eq!(scanner.wait_step(2)["rc"], 0, "the report is taken");
    let ev = wait_nth(&s, "inventory_changed", None, 0);
    assert_eq!(ev["firmware"], "1.2.0", "{ev}");
    assert_eq!(ev["by"], "device", "{ev}");
    // A known model and firmware with no SBOM cannot be assessed: not clean, so held.
    let q = wait_nth(&s, "device_quarantined", Some(Q), 0);
    assert!(q["reason"].as_str().unwrap().contains("has no SBOM"), "{q}");

    // SBOMs made now by a real producer, for both firmware versions, and the advisory.
    let vuln_sbom = sbom_of_venv(&dir, "1.26.4");
    let fixed_sbom = sbom_of_venv(&dir, "1.26.5");
    let out = cli_ok(
        &s,
        &[
            "sbom",
            "import",
            "--model",
            MODEL,
            "--firmware",
            "1.3.0",
            fixed_sbom.to_str().unwrap(),
        ],
    );
    let imported: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(imported["sbom"]["supplier"], "acme", "{imported}");
    assert!(
        imported["sbom"]["format"]
            .as_str()
            .unwrap()
            .starts_with("CycloneDX 1.5"),
        "{imported}"
    );
    cli_ok(
        &s,
        &[
            "sbom",
            "import",
            "--model",
            MODEL,
            "--firmware",
            "1.2.0",
            vuln_sbom.to_str().unwrap(),
        ],
    );
    // Assessed now, and no advisory yet: released.
    wait_nth(&s, "device_released", Some(Q), 0);
    let osv = dir.join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    std::fs::write(osv.join("PYSEC-2021-108.json"), OSV).unwrap();
    let out = cli_ok(&s, &["advisories", "import", osv.to_str().unwrap()]);
    let imported: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(imported["added"], 1, "{imported}");
    assert_eq!(
        imported["reevaluated"], 1,
        "only the device whose SBOM names urllib3"
    );
    let database = imported["database"].as_str().unwrap().to_owned();
    assert!(database.starts_with("sha256:"), "{database}");
    // Incremental: the same folder again sends nothing and changes nothing.
    let out = cli_ok(&s, &["advisories", "import", osv.to_str().unwrap()]);
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["added"], 0, "{again}");
    assert_eq!(again["unchanged"], 1, "{again}");
    assert_eq!(
        s.count_events("advisories_imported"),
        1,
        "nothing was sent: {again}"
    );

    // Quarantined while connected, with the rule, advisory and database named.
    let q = wait_nth(&s, "device_quarantined", Some(Q), 1);
    let reason = q["reason"].as_str().unwrap();
    assert!(
        reason.contains("CVE-2021-33503") && reason.contains("pkg:pypi/urllib3@1.26.4"),
        "{q}"
    );
    assert!(reason.contains("fixed in 1.26.5"), "{q}");
    let changed = s.wait_event("compliance_changed", |e| {
        e["type"] == "compliance_changed"
            && e["device"] == SERIAL
            && e["quarantining"] == json!(["no-high-vulns"])
            && e["trigger"] == "advisory_import"
    });
    assert_eq!(changed["database"], database.as_str(), "{changed}");
    assert_eq!(
        changed["quarantining"],
        json!(["no-high-vulns"]),
        "{changed}"
    );
    assert!(
        changed["advisories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "CVE-2021-33503"),
        "{changed}"
    );
    let c = compliance_of(&s);
    assert_eq!(c["state"], "quarantined", "{c}");
    let v = &c["vulnerabilities"][0];
    assert_eq!(v["severity"], "high", "{c}");
    assert_eq!(v["fixed"], "1.26.5", "{c}");
    std::fs::write(&quarantined, b"go").unwrap();

    let r = scanner.join().unwrap();
    assert_eq!(
        r[4]["rc"], 0x87,
        "telemetry refused while quarantined: {r:?}"
    );
    assert!(
        r[4]["reason"].as_str().unwrap_or_default().contains(Q),
        "{r:?}"
    );
    assert_eq!(
        r[5]["rc"], 0,
        "the inventory topic works while quarantined: {r:?}"
    );
    assert_eq!(r[6]["rc"], 0, "released: {r:?}");
    let latency = r[6]["at"].as_f64().unwrap() - r[5]["at"].as_f64().unwrap();
    assert!(
        latency < 1.0,
        "released within a second of the report, took {latency:.3}s: {r:?}"
    );
    eprintln!("released {latency:.3}s after the fixed firmware was reported");
    assert_eq!(r[7]["connected"], true, "never disconnected: {r:?}");
    let rel = wait_nth(&s, "device_released", Some(Q), 1);
    assert_eq!(rel["remaining"], json!([]), "{rel}");
    let got = reader.join().unwrap();
    let payloads: Vec<&str> = got[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(
        payloads.first(),
        Some(&"before"),
        "inventory reports are consumed, never routed; the refused telemetry never arrives: {got:?}"
    );
    assert!(
        payloads.iter().skip(1).all(|p| *p == "after"),
        "{payloads:?}"
    );

    // Who the advisory hits.
    let out = cli_ok(
        &s,
        &["advisories", "affected", "GHSA-q2q7-5pp4-w6pg", "--json"],
    );
    let a: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a["suppliers"], json!(["acme"]), "{a}");
    assert_eq!(a["models"][0]["firmware"], "1.2.0", "{a}");
    assert_eq!(a["devices"], json!([]), "it runs 1.3.0 now: {a}");

    // The report-only rule fails (cyclonedx-py's SBOM lacks suppliers) but never quarantines.
    let c = compliance_of(&s);
    assert_eq!(c["state"], "noncompliant", "{c}");
    assert_eq!(c["failing_rules"], json!(["sbom-elements"]), "{c}");
    assert!(
        s.events()
            .iter()
            .all(|e| e["source"] != "compliance:sbom-elements"),
        "a report-only rule never quarantines"
    );

    // Back to 1.2.0: quarantined again; a VEX `not_affected` statement releases it.
    let report = |fw: &str| {
        let r = s.paho(
            &dev,
            json!([
                {"op": "connect", "client_id": SERIAL},
                {"op": "publish", "topic": inventory, "payload": format!("{{\"firmware\": \"{fw}\"}}"), "qos": 1},
                {"op": "disconnect"}
            ]),
        );
        assert_eq!(r[1]["rc"], 0, "{r:?}");
    };
    report("1.2.0");
    wait_nth(&s, "device_quarantined", Some(Q), 2);
    let vex = |status: &str, name: &str| -> PathBuf {
        let extra = if status == "not_affected" {
            r#", "justification": "vulnerable_code_not_in_execute_path""#
        } else {
            r#", "action_statement": "update to firmware 1.3.0""#
        };
        let doc = format!(
            r#"{{"@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://acme.example/vex/{name}",
               "author": "ACME PSIRT", "timestamp": "2026-11-30T10:00:00Z", "version": 1,
               "statements": [{{"vulnerability": {{"name": "CVE-2021-33503"}},
                 "products": [{{"@id": "pkg:generic/acme/{MODEL}",
                   "subcomponents": [{{"@id": "pkg:pypi/urllib3"}}]}}],
                 "status": "{status}"{extra}}}]}}"#
        );
        let p = dir.join(format!("{name}.json"));
        std::fs::write(&p, doc).unwrap();
        p
    };
    let not_affected = vex("not_affected", "vex-1");
    cli_ok(
        &s,
        &[
            "vex",
            "import",
            not_affected.to_str().unwrap(),
            "--model",
            MODEL,
        ],
    );
    wait_nth(&s, "device_released", Some(Q), 2);
    let c = compliance_of(&s);
    assert_eq!(
        c["vulnerabilities"][0]["vex"]["status"], "not_affected",
        "{c}"
    );

    // A later statement overrides it: affected again, quarantined; a waiver releases it until it
    // expires, by itself.
    let affected = vex("affected", "vex-2");
    cli_ok(&s, &["vex", "import", affected.to_str().unwrap()]);
    wait_nth(&s, "device_quarantined", Some(Q), 3);
    let out = cli_ok(
        &s,
        &[
            "compliance",
            "waive",
            "--rule",
            "no-high-vulns",
            "--device",
            SERIAL,
            "--reason",
            "ACME ships 1.3.0 to this site on Friday",
            "--for",
            "3s",
        ],
    );
    let w: Value = serde_json::from_str(&out).unwrap();
    wait_nth(&s, "device_released", Some(Q), 3);
    let c = compliance_of(&s);
    assert_eq!(c["state"], "noncompliant", "waived, not clean: {c}");
    assert!(
        c["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "no-high-vulns"
                && f["state"] == "waived"
                && f["waiver"] == w["id"]),
        "{c}"
    );
    let expired = s.wait_event("the waiver expires", |e| {
        e["type"] == "waiver_changed" && e["change"] == "expired"
    });
    assert_eq!(expired["id"], w["id"], "{expired}");
    wait_nth(&s, "device_quarantined", Some(Q), 4);

    // A dry run of a stricter profile shows the change and applies nothing.
    let strict = dir.join("strict.toml");
    std::fs::write(
        &strict,
        "[[rule]]\nid = \"acme-only-before-2020\"\nsupplier_allowlist = [\"globex\"]\naction = \"quarantine\"\n",
    )
    .unwrap();
    let before = s.count_events("device_quarantined");
    let out = cli_ok(
        &s,
        &[
            "compliance",
            "evaluate",
            "--profile",
            strict.to_str().unwrap(),
            "--json",
        ],
    );
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["dry_run"], true, "{e}");
    assert!(
        e["changes"].as_array().unwrap().iter().any(
            |c| c["device"] == SERIAL && c["failing_rules"] == json!(["acme-only-before-2020"])
        ),
        "{e}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.count_events("device_quarantined"),
        before,
        "nothing applied"
    );

    // `device show` carries supplier, model, serial, firmware, SBOM and findings.
    let v = s.show(SERIAL);
    assert_eq!(v["inventory"]["firmware"], "1.2.0", "{v}");
    assert_eq!(v["inventory"]["sbom"]["firmware"], "1.2.0", "{v}");
    assert_eq!(v["compliance"]["state"], "quarantined", "{v}");
}
