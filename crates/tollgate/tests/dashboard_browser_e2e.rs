//! The dashboard in a real browser: Debian's Chromium driven by Playwright for Python
//! (tests/support/dashboard_browser.py) against the real server, with real MQTT clients.
//!
//! The story: an operator signs in with a one-time URL; a device that connects appears on the
//! fleet page without a reload; quarantining it from its page (click, confirm) confines its live
//! MQTT connection (its publishes are refused and reach no subscriber) and the page shows it;
//! an authorization-probing attack raises an alert that appears live; an audit entry's
//! inclusion proof checks in the page; a viewer sees no buttons and the API refuses it.
//! Screenshots of every page are left in `target/dashboard-screenshots/`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use support::fleet::{install_rules, DETECTION};
use support::{Server, EXAMPLE_POLICY};

/// Where the screenshots go: `target/dashboard-screenshots/` beside the test binary's target.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    target.join("dashboard-screenshots")
}

/// PYSEC-2021-108 (CVE-2021-33503): urllib3 before 1.26.5, a ReDoS in URL authority parsing;
/// the facts of the published advisory, written here in the OSV format.
const OSV: &str = r#"{
  "schema_version": "1.6.0",
  "id": "PYSEC-2021-108",
  "modified": "2021-06-15T12:00:00Z",
  "aliases": ["CVE-2021-33503"],
  "summary": "urllib3 URL authority parsing is vulnerable to catastrophic backtracking",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
  "affected": [{
    "package": {"ecosystem": "PyPI", "name": "urllib3", "purl": "pkg:pypi/urllib3"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.26.5"}]}]
  }]
}"#;

/// cam-1 is a Scanner-X2 from supplier acme running firmware 1.2.0, whose SBOM lists
/// urllib3 1.26.4, which PYSEC-2021-108 affects: the compliance and device pages have an
/// advisory to show.
fn give_cam_a_vulnerable_firmware(s: &Server) {
    let dir = s.root.join("compliance");
    let ca = support::supplier_ca(&dir, "acme");
    support::add_supplier(s, "acme", &ca, &[], &[]);
    let (code, v) = s.admin_api(
        "POST",
        "/api/v1/models",
        Some(json!({ "supplier": "acme", "name": "Scanner-X2", "scheme": "semver" })),
    );
    assert!(code == 200 || code == 201, "{code} {v}");
    let (code, v) = s.admin_api(
        "PUT",
        "/api/v1/devices/cam-1/inventory",
        Some(json!({ "supplier": "acme", "model": "Scanner-X2", "firmware": "1.2.0" })),
    );
    assert_eq!(code, 200, "{v}");
    let sbom = dir.join("sbom.json");
    std::fs::write(
        &sbom,
        json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "version": 1,
            "metadata": { "component": { "type": "firmware", "name": "Scanner-X2", "version": "1.2.0" } },
            "components": [
                { "type": "library", "name": "urllib3", "version": "1.26.4", "purl": "pkg:pypi/urllib3@1.26.4" },
                { "type": "library", "name": "idna", "version": "3.7", "purl": "pkg:pypi/idna@3.7" }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let out = s.cli(&[
        "sbom",
        "import",
        "--model",
        "Scanner-X2",
        "--firmware",
        "1.2.0",
        sbom.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let osv = dir.join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    std::fs::write(osv.join("PYSEC-2021-108.json"), OSV).unwrap();
    let out = s.cli(&["advisories", "import", osv.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, v) = s.admin_api("GET", "/api/v1/compliance?device=cam-1", None);
    assert!(
        v.to_string().contains("PYSEC-2021-108"),
        "cam-1's firmware is affected: {v}"
    );
}

/// What the browser did is already done when these are read; the time allows for a machine
/// busy with other builds and tests.
const EVENTS_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

#[test]
fn an_operator_sees_the_fleet_live_quarantines_from_the_browser_and_a_viewer_cannot_act() {
    let s = Server::start_with(
        &[("sample_interval_ms = 10000", "sample_interval_ms = 1000")],
        EXAMPLE_POLICY,
    );
    install_rules(&s, DETECTION);
    let mut devices = serde_json::Map::new();
    for (id, group) in [
        ("cam-1", "sensors"),
        ("backend-1", "backend"),
        ("prober-1", "sensors"),
    ] {
        let d = s.add_device(id, &[group]);
        devices.insert(
            id.into(),
            json!({ "cert": d.cert, "key": d.key, "ca": d.ca }),
        );
    }
    give_cam_a_vulnerable_firmware(&s);
    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);
    let args = json!({
        "bin": support::BIN,
        "data": s.data,
        "admin_port": s.admin_port,
        "mqtt_port": s.mqtt_port,
        "shots": shots,
        "devices": devices,
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/dashboard_browser.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(args.to_string())
        .output()
        .expect("python3 with playwright (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        s.log()
    );
    println!("screenshots in {}", shots.display());
    for name in [
        "01-fleet",
        "03-device-quarantined",
        "04-alerts",
        "05-audit",
        "10-viewer-device",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "no {name}.png");
    }

    // What the browser did is on the record, in the operator's name.
    let signed_in: Vec<_> = s
        .events()
        .into_iter()
        .filter(|e| e["type"] == "dashboard_signed_in")
        .collect();
    assert_eq!(signed_in.len(), 2, "{signed_in:?}");
    assert_eq!(signed_in[0]["by"], "admin");
    assert_eq!(signed_in[1]["role"], "viewer");
    let q = s.wait_event_for("cam-1 quarantined by the operator", EVENTS_WITHIN, |e| {
        e["type"] == "device_quarantined" && e["device"] == "cam-1"
    });
    assert_eq!(q["by"], "admin", "{q}");
    s.wait_event_for(
        "cam-1's publish refused as quarantined",
        EVENTS_WITHIN,
        |e| e["type"] == "publish_denied" && e["device"] == "cam-1" && e["quarantine"].is_string(),
    );
    s.wait_event_for("the probing alert", EVENTS_WITHIN, |e| {
        e["type"] == "alert"
            && e["detector"] == "authorization_probing"
            && e["device"] == "prober-1"
    });
    s.wait_event_for("the viewer's refusal", EVENTS_WITHIN, |e| {
        e["type"] == "admin_denied"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("/api/v1/devices/cam-1/release"))
    });
    s.wait_event_for("the sign-out", EVENTS_WITHIN, |e| {
        e["type"] == "dashboard_signed_out" && e["reason"] == "signed_out"
    });
}
