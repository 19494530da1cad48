//! Enrollment regressions, end to end with curl and openssl: supplier bootstrap certificates
//! never bring a revoked device back and cannot claim another supplier's (or an operator's)
//! device; tokens for existing devices keep their groups unless told to change them; every
//! refusal is recorded with its real reason.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::{
    add_supplier, bootstrap_cert, csr, curl_post, device_files, p7_to_pem, supplier_ca, token,
    Server, P256,
};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn cert_count(s: &Server, id: &str) -> usize {
    s.show(id)["certificates"].as_array().unwrap().len()
}

/// The enrollment_refused events whose reason contains `what`.
fn refusals(s: &Server, what: &str) -> Vec<Value> {
    s.events()
        .into_iter()
        .filter(|e| {
            e["type"] == "enrollment_refused"
                && e["reason"].as_str().is_some_and(|r| r.contains(what))
        })
        .collect()
}

/// Enroll `serial`'s operational certificate with its bootstrap certificate `boot`; the CSR's
/// key is DIR/NAME.key.
fn bootstrap_enroll(
    s: &Server,
    dir: &Path,
    name: &str,
    serial: &str,
    boot: &[&str],
) -> (u16, String) {
    let req = csr(dir, name, serial, P256, "");
    curl_post(s, "simpleenroll", &req, boot)
}

#[test]
fn bootstrap_enrollment_never_reactivates_a_revoked_device_even_with_allow_reenroll() {
    let s = Server::start();
    let dir = s.root.join("boot");
    let ca = supplier_ca(&dir, "acme");
    let boot = bootstrap_cert(&dir, "acme", "idev", "ACME-0042", "");
    add_supplier(
        &s,
        "acme",
        &ca,
        &["--group", "sensors", "--allow-reenroll"],
        &boot,
    );
    let boot = strs(&boot);
    let (code, body) = bootstrap_enroll(&s, &dir, "op1", "ACME-0042", &boot);
    assert_eq!(code, 200, "{body}");
    // --allow-reenroll works while the device is active, so a refusal below is the revocation's.
    let (code, body) = bootstrap_enroll(&s, &dir, "op2", "ACME-0042", &boot);
    assert_eq!(code, 200, "re-enrollment allowed by the supplier: {body}");
    let crt = p7_to_pem(&dir, &body, "op2");
    std::fs::rename(dir.join("op2.key"), dir.join("ACME-0042.key")).unwrap();
    let dev = device_files(&s, &dir, "ACME-0042", &crt);

    let out = s.revoke("ACME-0042");
    assert!(out.status.success());
    let certs = cert_count(&s, "ACME-0042");
    let (code, body) = bootstrap_enroll(&s, &dir, "op3", "ACME-0042", &boot);
    assert_eq!(
        code, 403,
        "a revoked device must not come back through bootstrap enrollment: {body}"
    );
    let v = s.show("ACME-0042");
    assert_eq!(v["state"], "revoked", "{v}");
    assert!(
        v["revoked_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    assert_eq!(
        v["certificates"].as_array().unwrap().len(),
        certs,
        "no certificate issued: {v}"
    );
    assert!(
        v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked_at"].as_str().is_some()),
        "every certificate stays revoked: {v}"
    );
    s.wait_event("refusal", |e| {
        e["type"] == "enrollment_refused"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("(HTTP 403)"))
    });
    // And the device's last operational certificate stays out of MQTT.
    assert!(!s
        .mosquitto_pub(&dev, &["-t", "devices/ACME-0042/telemetry", "-m", "x"])
        .status
        .success());
}

#[test]
fn supplier_b_cannot_claim_a_device_that_supplier_a_enrolled() {
    let s = Server::start();
    let dir = s.root.join("two");
    let acme_ca = supplier_ca(&dir, "acme");
    let globex_ca = supplier_ca(&dir, "globex");
    let acme = bootstrap_cert(&dir, "acme", "acme-idev", "ACME-0042", "");
    let globex = bootstrap_cert(&dir, "globex", "globex-idev", "ACME-0042", "");
    // Both may re-enroll their serials: only the binding can refuse globex.
    add_supplier(
        &s,
        "acme",
        &acme_ca,
        &["--group", "sensors", "--allow-reenroll"],
        &acme,
    );
    add_supplier(
        &s,
        "globex",
        &globex_ca,
        &["--group", "backend", "--allow-reenroll"],
        &globex,
    );
    let (code, body) = bootstrap_enroll(&s, &dir, "a1", "ACME-0042", &strs(&acme));
    assert_eq!(code, 200, "{body}");
    let certs = cert_count(&s, "ACME-0042");

    let (code, body) = bootstrap_enroll(&s, &dir, "g1", "ACME-0042", &strs(&globex));
    assert_eq!(
        code, 403,
        "globex's bootstrap certificate claimed acme's device: {body}"
    );
    let v = s.show("ACME-0042");
    assert_eq!(v["bootstrap"]["supplier"], "acme", "{v}");
    assert_eq!(v["groups"], json!(["sensors"]), "{v}");
    assert_eq!(v["state"], "active", "{v}");
    assert_eq!(v["certificates"].as_array().unwrap().len(), certs, "{v}");
    // The supplier it is bound to still may.
    let (code, body) = bootstrap_enroll(&s, &dir, "a2", "ACME-0042", &strs(&acme));
    assert_eq!(code, 200, "{body}");
    s.wait_event("refusal", |e| {
        e["type"] == "enrollment_refused"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("(HTTP 403)"))
    });
}

#[test]
fn no_supplier_can_claim_a_device_added_by_an_operator() {
    let s = Server::start();
    let dir = s.root.join("op");
    let dev = s.add_device("pump-7", &["sensors"]);
    let ca = supplier_ca(&dir, "acme");
    let boot = bootstrap_cert(&dir, "acme", "idev", "pump-7", "");
    add_supplier(
        &s,
        "acme",
        &ca,
        &["--group", "backend", "--allow-reenroll"],
        &boot,
    );
    let (code, body) = bootstrap_enroll(&s, &dir, "claim", "pump-7", &strs(&boot));
    assert_eq!(
        code, 403,
        "a supplier claimed a device an operator added: {body}"
    );
    let v = s.show("pump-7");
    assert!(v["bootstrap"].is_null(), "{v}");
    assert_eq!(v["groups"], json!(["sensors"]), "{v}");
    assert_eq!(v["certificates"].as_array().unwrap().len(), 1, "{v}");
    // The operator's device is untouched.
    let out = s.mosquitto_pub(
        &dev,
        &["-t", "devices/pump-7/telemetry", "-m", "x", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_token_for_an_existing_device_does_not_change_its_groups_without_change_groups() {
    let s = Server::start();
    let dir = s.root.join("groups");
    s.add_device("sensor-1", &["sensors"]);

    // Different groups without the flag: 409, and the CLI fails.
    let out = s.cli(&["device", "token", "sensor-1", "--group", "backend"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409"), "{err}");
    assert!(out.stdout.is_empty(), "no token printed: {out:?}");
    // The same groups need no flag.
    token(&s, "sensor-1", &["--group", "sensors"]);

    // With --change-groups, the enrollment changes them.
    let t = token(&s, "sensor-1", &["--group", "backend", "--change-groups"]);
    let req = csr(&dir, "sensor-1", "sensor-1", P256, "");
    let (code, body) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("sensor-1:{t}")]);
    assert_eq!(code, 200, "{body}");
    let ev = s.wait_event("groups changed", |e| e["type"] == "device_groups_changed");
    assert_eq!(ev["device"], "sensor-1", "{ev}");
    assert_eq!(ev["from"], json!(["sensors"]), "{ev}");
    assert_eq!(ev["to"], json!(["backend"]), "{ev}");
    assert!(ev["by"].as_str().is_some_and(|b| !b.is_empty()), "{ev}");
    assert_eq!(s.show("sensor-1")["groups"], json!(["backend"]));
    // The new certificate acts with the new groups.
    let crt = p7_to_pem(&dir, &body, "changed");
    let dev = device_files(&s, &dir, "sensor-1", &crt);
    let r = s.paho(
        &dev,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "devices/pump-1/commands/start", "payload": "x", "qos": 1},
            {"op": "publish", "topic": "devices/sensor-1/telemetry", "payload": "x", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0, "backend may send commands: {r:?}");
    assert_eq!(r[2]["rc"], 0x87, "no longer a sensor: {r:?}");

    // A token without --group keeps the groups the device has.
    let t = token(&s, "sensor-1", &[]);
    let req = csr(&dir, "again", "sensor-1", P256, "");
    let (code, body) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("sensor-1:{t}")]);
    assert_eq!(code, 200, "{body}");
    s.wait_event("re-enrolled", |e| {
        e["type"] == "device_enrolled" && e["device"] == "sensor-1"
    });
    assert_eq!(s.show("sensor-1")["groups"], json!(["backend"]));
    assert_eq!(s.count_events("device_groups_changed"), 1);
}

#[test]
fn enrollment_refusals_record_the_real_reason_and_status() {
    let s = Server::start();
    let dir = s.root.join("refusals");
    let t = token(&s, "sensor-1", &["--group", "sensors"]);
    let req = csr(&dir, "a", "sensor-1", P256, "");

    // No credentials: 401, recorded too.
    let (code, _) = curl_post(&s, "simpleenroll", &req, &[]);
    assert_eq!(code, 401);
    s.wait_event("no credentials", |e| {
        e["type"] == "enrollment_refused"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("(HTTP 401)"))
    });

    // A wrong token.
    let wrong = format!("{}{}", if t.starts_with('0') { "1" } else { "0" }, &t[1..]);
    let (code, _) = curl_post(
        &s,
        "simpleenroll",
        &req,
        &["-u", &format!("sensor-1:{wrong}")],
    );
    assert_eq!(code, 403);
    s.wait_event("wrong token", |e| {
        e["type"] == "enrollment_refused"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("wrong token") && r.contains("(HTTP 403)"))
    });

    // A used token.
    let (code, body) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("sensor-1:{t}")]);
    assert_eq!(code, 200, "{body}");
    let (code, _) = curl_post(&s, "simpleenroll", &req, &["-u", &format!("sensor-1:{t}")]);
    assert_eq!(code, 403);
    s.wait_event("used token", |e| {
        e["type"] == "enrollment_refused"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("token already used") && r.contains("(HTTP 403)"))
    });

    // A weak key: the event says what the client was told.
    let t = token(&s, "weak-1", &["--group", "sensors"]);
    let weak = csr(&dir, "weak", "weak-1", "-newkey rsa:1024", "");
    let (code, body) = curl_post(&s, "simpleenroll", &weak, &["-u", &format!("weak-1:{t}")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("at least 2048 bits"), "{body}");
    let ev = s.wait_event("weak key", |e| {
        e["type"] == "enrollment_refused"
            && e["reason"].as_str().is_some_and(|r| r.contains("2048"))
    });
    assert!(
        ev["reason"]
            .as_str()
            .unwrap()
            .ends_with(&format!("(HTTP {code})")),
        "{ev}"
    );
    // One event per refusal, each with its status.
    let all = refusals(&s, "");
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(
        all.iter()
            .all(|e| e["reason"].as_str().unwrap().contains("(HTTP ")),
        "{all:#?}"
    );
}

/// Regression: `agent enroll` could not use a supplier's bootstrap certificate (the docs say
/// such devices need no token), and it copied whatever `--cacert` it was given into `ca.crt`,
/// so an issuing-CA file gave a device that could not connect (OpenSSL clients want a root).
/// Now it enrolls with the bootstrap certificate, stores the gateway's root, says so, and the
/// result publishes with mosquitto_pub.
#[test]
fn the_agent_enrolls_with_a_bootstrap_certificate_and_stores_the_root_ca() {
    let s = Server::start();
    let dir = s.root.join("boot");
    let ca = supplier_ca(&dir, "acme");
    let boot = bootstrap_cert(&dir, "acme", "idev", "ACME-0077", "");
    add_supplier(&s, "acme", &ca, &["--group", "sensors"], &boot);
    let out_dir = s.root.join("agent-boot");
    let url = format!("https://127.0.0.1:{}", s.admin_port);
    let out = std::process::Command::new(support::BIN)
        .args(["agent", "enroll", "--server", &url, "--id", "ACME-0077"])
        .arg("--bootstrap-cert")
        .arg(dir.join("idev.crt"))
        .arg("--bootstrap-key")
        .arg(dir.join("idev.key"))
        .arg("--out")
        .arg(&out_dir)
        // The issuing CA, not the root: enough to authenticate the gateway.
        .arg("--cacert")
        .arg(s.data.join("ca/issuing.crt"))
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is not a root CA"), "{stderr}");
    assert!(stderr.contains("--cafile"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("ca.crt")).unwrap(),
        std::fs::read_to_string(s.data.join("ca/root.crt")).unwrap(),
        "ca.crt holds the root"
    );
    let dev = support::Device::from_files(
        "ACME-0077",
        &out_dir,
        out_dir.join("ACME-0077.crt"),
        out_dir.join("ACME-0077.key"),
        out_dir.join("ca.crt"),
    );
    let out = s.mosquitto_pub(
        &dev,
        &["-t", "devices/ACME-0077/telemetry", "-m", "1", "-q", "1"],
    );
    assert!(out.status.success(), "{out:?}");
    let v = s.show("ACME-0077");
    assert_eq!(v["bootstrap"]["supplier"], "acme", "{v}");
    // Neither a token nor a bootstrap certificate: clap says what is missing.
    let out = std::process::Command::new(support::BIN)
        .args(["agent", "enroll", "--server", &url, "--id", "x", "--out"])
        .arg(&out_dir)
        .env_remove("TOLLGATE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token"),
        "{out:?}"
    );
}
