//! Named operators and the identity lifecycle, end to end over real TLS: a viewer reads but
//! changes nothing; a second admin acts under its own name (events and audit entries say so)
//! until it is revoked or demoted; renewal; the last admin stays; the server certificate is
//! renewed live; a device's groups change what its live MQTT connection may do; deletion
//! revokes and disconnects.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Server;

/// An operator's files, as `tollgate operator add --out DIR` writes them.
struct Creds {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add_operator(s: &Server, name: &str, role: &str) -> Creds {
    let dir = s.root.join("operators").join(name);
    let out = s.cli(&[
        "operator",
        "add",
        name,
        "--role",
        role,
        "--out",
        dir.to_str().unwrap(),
    ]);
    ok(&out, "operator add");
    let creds = Creds {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: dir.join("ca.crt"),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    creds
}

/// Call the admin API with `c`'s certificate (curl): (HTTP status, JSON body). Status 0 means
/// the TLS handshake itself was refused.
fn api_as(s: &Server, c: &Creds, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(&c.ca)
        .arg("--cert")
        .arg(&c.cert)
        .arg("--key")
        .arg(&c.key);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{}{path}", s.admin_port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (code.trim().parse().unwrap_or(0), v)
}

/// The CLI with an operator's credentials instead of the data directory's admin.
fn cli_as(s: &Server, c: &Creds, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .arg("--server")
        .arg(format!("https://127.0.0.1:{}", s.admin_port))
        .arg("--cert")
        .arg(&c.cert)
        .arg("--key")
        .arg(&c.key)
        .arg("--cacert")
        .arg(&c.ca)
        .output()
        .expect("run tollgate")
}

/// Every audit-log entry (the event as recorded), from the live log.
fn audit_entries(s: &Server) -> Vec<Value> {
    let (code, v) = s.admin_api("GET", "/api/v1/audit/entries?from=0&limit=10000", None);
    assert_eq!(code, 200, "{v}");
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"].clone())
        .collect()
}

#[test]
fn a_viewer_reads_everything_and_every_change_is_refused_and_recorded() {
    let s = Server::start();
    s.add_device("sensor-1", &["sensors"]);
    let vera = add_operator(&s, "vera", "viewer");
    for path in [
        "/api/v1/devices",
        "/api/v1/devices/sensor-1",
        "/api/v1/operators",
        "/api/v1/operators/vera",
        "/api/v1/ca",
        "/api/v1/policy",
        "/api/v1/connections",
    ] {
        let (code, v) = api_as(&s, &vera, "GET", path, None);
        assert_eq!(code, 200, "GET {path}: {v}");
    }
    let (_, me) = api_as(&s, &vera, "GET", "/api/v1/operators/vera", None);
    assert_eq!(
        (me["role"].as_str(), me["state"].as_str()),
        (Some("viewer"), Some("active"))
    );

    let csr = "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n";
    let changes: Vec<(&str, &str, Value)> = vec![
        ("POST", "/api/v1/devices", json!({"id": "x", "groups": []})),
        (
            "PATCH",
            "/api/v1/devices/sensor-1",
            json!({"groups": ["backend"]}),
        ),
        ("DELETE", "/api/v1/devices/sensor-1", json!({})),
        (
            "POST",
            "/api/v1/devices/sensor-1/revoke",
            json!({"reason": "x"}),
        ),
        (
            "POST",
            "/api/v1/devices/sensor-1/quarantine",
            json!({"reason": "x"}),
        ),
        ("POST", "/api/v1/devices/sensor-1/release", json!({})),
        ("POST", "/api/v1/devices/sensor-1/token", json!({})),
        (
            "POST",
            "/api/v1/suppliers",
            json!({"name": "acme", "ca_pem": ""}),
        ),
        (
            "POST",
            "/api/v1/operators",
            json!({"name": "eve", "role": "admin", "csr": csr}),
        ),
        (
            "POST",
            "/api/v1/operators/admin/revoke",
            json!({"reason": "x"}),
        ),
        (
            "POST",
            "/api/v1/operators/vera/role",
            json!({"role": "admin"}),
        ),
        ("POST", "/api/v1/operators/admin/renew", json!({"csr": csr})),
        ("POST", "/api/v1/ca/server/renew", json!({})),
        ("POST", "/api/v1/audit/checkpoint", json!({})),
    ];
    let before = s.count_events("admin_denied");
    for (method, path, body) in &changes {
        let (code, v) = api_as(&s, &vera, method, path, Some(body.clone()));
        assert_eq!(code, 403, "{method} {path} as a viewer: {v}");
    }
    let denied = s.wait_event("a viewer's refusal", |e| {
        e["type"] == "admin_denied"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("PATCH /api/v1/devices/sensor-1") && d.contains("vera"))
    });
    assert!(
        denied["detail"].as_str().unwrap().contains("viewer"),
        "{denied}"
    );
    assert!(s.count_events("admin_denied") > before);
    // Nothing changed.
    let dev = s.show("sensor-1");
    assert_eq!(
        (dev["state"].as_str(), dev["groups"].clone()),
        (Some("active"), json!(["sensors"]))
    );
    assert_eq!(s.count_events("operator_role_changed"), 0);

    // The CLI as a viewer: lists work, changes are refused.
    let out = cli_as(&s, &vera, &["operator", "list"]);
    let table = ok(&out, "operator list as a viewer");
    assert!(
        table.contains("vera") && table.contains("viewer"),
        "{table}"
    );
    let out = cli_as(&s, &vera, &["device", "set-groups", "sensor-1", "backend"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
}

#[test]
fn a_second_admin_acts_under_its_own_name_until_demoted_or_revoked() {
    let s = Server::start();
    s.add_device("sensor-1", &["sensors"]);
    let bob = add_operator(&s, "bob", "admin");
    let added = s.wait_event("bob added", |e| {
        e["type"] == "operator_added" && e["operator"] == "bob"
    });
    assert_eq!(
        (added["role"].as_str(), added["by"].as_str()),
        (Some("admin"), Some("admin"))
    );

    let (code, v) = api_as(
        &s,
        &bob,
        "POST",
        "/api/v1/devices/sensor-1/quarantine",
        Some(json!({"reason": "checked by bob"})),
    );
    assert_eq!(code, 200, "{v}");
    let q = s.wait_event("bob's quarantine", |e| e["type"] == "device_quarantined");
    assert_eq!(q["by"], "bob", "{q}");
    // The audit log recorded it ahead, under bob's name too.
    let entries = audit_entries(&s);
    let ahead = entries
        .iter()
        .find(|e| e["type"] == "control_action" && e["action"] == "quarantine")
        .unwrap_or_else(|| panic!("no quarantine entry: {entries:#?}"));
    assert_eq!(ahead["by"], "bob", "{ahead}");
    assert!(entries
        .iter()
        .any(|e| e["type"] == "device_quarantined" && e["by"] == "bob"));
    // Every entry after bob's first action that names who acted names bob.
    let from = entries
        .iter()
        .position(|e| e["type"] == "control_action" && e["action"] == "quarantine")
        .unwrap();
    let by: Vec<&Value> = entries[from..].iter().filter_map(|e| e.get("by")).collect();
    assert!(
        !by.is_empty() && by.iter().all(|b| *b == "bob"),
        "{entries:#?}"
    );

    // Demoted: the next request is refused, with the same certificate.
    let out = s.cli(&["operator", "set-role", "bob", "viewer"]);
    ok(&out, "set-role");
    let (code, _) = api_as(
        &s,
        &bob,
        "POST",
        "/api/v1/devices/sensor-1/release",
        Some(json!({})),
    );
    assert_eq!(code, 403);
    let (code, _) = api_as(&s, &bob, "GET", "/api/v1/devices", None);
    assert_eq!(code, 200, "a viewer still reads");
    let ev = s.wait_event("role change", |e| e["type"] == "operator_role_changed");
    assert_eq!(
        (ev["from"].as_str(), ev["to"].as_str(), ev["by"].as_str()),
        (Some("admin"), Some("viewer"), Some("admin"))
    );
    ok(
        &s.cli(&["operator", "set-role", "bob", "admin"]),
        "set-role back",
    );
    let (code, v) = api_as(
        &s,
        &bob,
        "POST",
        "/api/v1/devices/sensor-1/release",
        Some(json!({})),
    );
    assert_eq!(code, 200, "{v}");

    // Revoked: its next request is refused (at the handshake or with 403), and it lands in
    // the CRL.
    let out = s.cli(&["operator", "revoke", "bob", "--reason", "left the team"]);
    let text = ok(&out, "operator revoke");
    assert!(text.contains("Revoked operator bob"), "{text}");
    let (code, v) = api_as(&s, &bob, "GET", "/api/v1/devices", None);
    assert!(
        code == 0 || code == 403,
        "a revoked operator was served: {code} {v}"
    );
    let ev = s.wait_event("bob revoked", |e| e["type"] == "operator_revoked");
    assert_eq!(
        (ev["operator"].as_str(), ev["by"].as_str()),
        (Some("bob"), Some("admin"))
    );
    let serial = ev["serials"][0].as_str().unwrap().to_owned();
    let crl = s.root.join("crl.der");
    let got = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(s.data.join("ca/root.crt"))
        .arg("-o")
        .arg(&crl)
        .arg(format!("https://127.0.0.1:{}/crl", s.admin_port))
        .status()
        .unwrap();
    assert!(got.success());
    let text = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_uppercase();
    assert!(
        text.contains(&serial.to_uppercase()),
        "serial {serial} not in the CRL:\n{text}"
    );
    let shown: Value =
        serde_json::from_str(&ok(&s.cli(&["operator", "show", "bob"]), "show")).unwrap();
    assert_eq!(
        (
            shown["state"].as_str(),
            shown["revoked_by"].as_str(),
            shown["revoke_reason"].as_str()
        ),
        (Some("revoked"), Some("admin"), Some("left the team"))
    );
}

#[test]
fn the_last_active_admin_cannot_be_revoked_or_demoted() {
    let s = Server::start();
    let (code, v) = s.admin_api(
        "POST",
        "/api/v1/operators/admin/revoke",
        Some(json!({"reason": "oops"})),
    );
    assert_eq!(code, 409, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("last active admin"),
        "{v}"
    );
    let (code, v) = s.admin_api(
        "POST",
        "/api/v1/operators/admin/role",
        Some(json!({"role": "viewer"})),
    );
    assert_eq!(code, 409, "{v}");
    // Still in charge.
    let (code, _) = s.admin_api("GET", "/api/v1/operators/admin", None);
    assert_eq!(code, 200);
    // With a second admin, the first may go; then the second is the last one.
    let carol = add_operator(&s, "carol", "admin");
    let (code, v) = api_as(
        &s,
        &carol,
        "POST",
        "/api/v1/operators/admin/revoke",
        Some(json!({"reason": "handover"})),
    );
    assert_eq!(code, 200, "{v}");
    let (code, v) = api_as(
        &s,
        &carol,
        "POST",
        "/api/v1/operators/carol/revoke",
        Some(json!({"reason": "x"})),
    );
    assert_eq!(code, 409, "{v}");
    let list: Value = serde_json::from_str(&ok(
        &cli_as(&s, &carol, &["operator", "list", "--json"]),
        "list",
    ))
    .unwrap();
    let states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("admin".into(), "revoked".into()),
            ("carol".into(), "active".into())
        ]
    );
}

#[test]
fn renewal_gives_a_working_certificate_and_revokes_the_old_only_when_asked() {
    let s = Server::start();
    let dave = add_operator(&s, "dave", "viewer");
    let old_pem = std::fs::read_to_string(&dave.cert).unwrap();
    // A viewer renews itself (in place: the credentials it runs with).
    let out = cli_as(&s, &dave, &["operator", "renew"]);
    ok(&out, "renew dave");
    let new_pem = std::fs::read_to_string(&dave.cert).unwrap();
    assert_ne!(old_pem, new_pem, "the certificate file was replaced");
    let (code, v) = api_as(&s, &dave, "GET", "/api/v1/operators/dave", None);
    assert_eq!(code, 200, "the renewed certificate works: {v}");
    assert_eq!(v["certificates"].as_array().unwrap().len(), 2);
    let ev = s.wait_event("renewed", |e| {
        e["type"] == "operator_renewed" && e["operator"] == "dave"
    });
    assert_eq!(ev["by"], "dave");
    // Without --revoke-old the older certificate stays valid until it expires.
    assert_eq!(ev["revoked_old"], json!([]));
    assert!(
        v["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked_at"].is_null()),
        "{v}"
    );
    // A viewer may not renew another operator.
    let (code, v) = api_as(
        &s,
        &dave,
        "POST",
        "/api/v1/operators/admin/renew",
        Some(json!({"csr": "x"})),
    );
    assert_eq!(code, 403, "{v}");

    // With --revoke-old, the previous certificate is refused from then on.
    let kept = s.root.join("dave-kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::copy(&dave.cert, kept.join("dave.crt")).unwrap();
    std::fs::copy(&dave.key, kept.join("dave.key")).unwrap();
    let previous = Creds {
        cert: kept.join("dave.crt"),
        key: kept.join("dave.key"),
        ca: dave.ca.clone(),
    };
    let (code, _) = api_as(&s, &previous, "GET", "/api/v1/devices", None);
    assert_eq!(code, 200);
    let out = cli_as(&s, &dave, &["operator", "renew", "--revoke-old"]);
    ok(&out, "renew --revoke-old");
    let (code, _) = api_as(&s, &dave, "GET", "/api/v1/devices", None);
    assert_eq!(code, 200, "the newest certificate works");
    let (code, v) = api_as(&s, &previous, "GET", "/api/v1/devices", None);
    assert!(
        code == 0 || code == 403,
        "a revoked renewal's predecessor was served: {code} {v}"
    );

    // The data directory's admin renews in place, and keeps working.
    let before = std::fs::read_to_string(s.data.join("admin/admin.crt")).unwrap();
    ok(&s.cli(&["operator", "renew"]), "renew --data");
    let after = std::fs::read_to_string(s.data.join("admin/admin.crt")).unwrap();
    assert_ne!(before, after);
    let (code, v) = s.admin_api("GET", "/api/v1/ca", None);
    assert_eq!(code, 200, "{v}");
    let ops = v["operators"].as_array().unwrap();
    let admin = ops.iter().find(|o| o["name"] == "admin").unwrap();
    assert!(
        admin["not_after"].as_str().unwrap().starts_with("20"),
        "{v}"
    );
    assert!(
        v["server"]["not_after"].as_str().unwrap().starts_with("20"),
        "{v}"
    );
}

/// The serial of the certificate a listener presents now (a fresh TLS handshake).
fn presented_serial(port: u16, ca: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -CAfile {} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            ca.display()
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

#[test]
fn the_server_certificate_is_renewed_and_swapped_in_live() {
    let s = Server::start();
    let ca = s.data.join("ca/root.crt");
    let before_admin = presented_serial(s.admin_port, &ca);
    let before_mqtt = presented_serial(s.mqtt_port, &ca);
    assert!(!before_admin.is_empty());
    assert_eq!(before_admin, before_mqtt);
    let dev = s.add_device("sensor-1", &["sensors"]);

    let out = s.cli(&["ca", "renew-server", "--dns", "gw.example"]);
    let text = ok(&out, "ca renew-server");
    let ev = s.wait_event("renewed", |e| e["type"] == "server_certificate_renewed");
    let serial = ev["serial"].as_str().unwrap().to_owned();
    assert_eq!(ev["by"], "admin");
    assert_eq!(ev["previous"].as_str(), Some(before_admin.as_str()));
    assert!(text.contains(&serial), "{text}");
    let names: Vec<&str> = ev["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"localhost")
            && names.contains(&"gw.example")
            && names.contains(&"127.0.0.1"),
        "{names:?}"
    );
    // Both listeners present it to new handshakes, without a restart (the swap follows the
    // API's answer within moments).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (a, m) = (
            presented_serial(s.admin_port, &ca),
            presented_serial(s.mqtt_port, &ca),
        );
        if a == serial && m == serial {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still presenting {a} / {m}, not {serial}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // It verifies for clients, and devices connect through it.
    let out = s.mosquitto_pub(
        &dev,
        &["-t", "devices/sensor-1/telemetry", "-m", "x", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, v) = s.admin_api("GET", "/api/v1/ca", None);
    assert_eq!(code, 200);
    assert_eq!(v["server"]["serial"].as_str(), Some(serial.as_str()), "{v}");
    // A restart keeps it (it was written to the data directory).
    let mut s = s;
    s.stop();
    s.spawn();
    assert_eq!(presented_serial(s.admin_port, &ca), serial);
}

#[test]
fn changing_a_device_s_groups_changes_what_its_live_connection_may_publish() {
    let s = Server::start();
    let dev = s.add_device("mover", &["backend"]);
    let go = s.root.join("go");
    let mut live = s.paho_background(
        &dev,
        json!([
            {"op": "connect", "client_id": "mover"},
            // 1: the backend group may not publish telemetry as itself.
            {"op": "publish", "topic": "devices/mover/telemetry", "payload": "before", "qos": 1},
            {"op": "wait_file", "path": go, "timeout": 15},
            // 3: as a sensor it may; 4: and no longer send commands.
            {"op": "publish", "topic": "devices/mover/telemetry", "payload": "after", "qos": 1},
            {"op": "publish", "topic": "devices/other/commands/x", "payload": "c", "qos": 1},
            {"op": "check_connected"},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(live.wait_step(1)["rc"], 0x87, "denied before the change");
    let out = s.cli(&["device", "set-groups", "mover", "sensors"]);
    let text = ok(&out, "set-groups");
    assert!(text.contains("sensors"), "{text}");
    let ev = s.wait_event("groups changed", |e| e["type"] == "device_groups_changed");
    assert_eq!(
        (ev["from"].clone(), ev["to"].clone(), ev["by"].clone()),
        (json!(["backend"]), json!(["sensors"]), json!("admin"))
    );
    std::fs::write(&go, "").unwrap();
    let r = live.join().unwrap();
    assert_eq!(
        r[3]["rc"], 0,
        "allowed by the new groups on the same connection: {r:?}"
    );
    assert_eq!(r[4]["rc"], 0x87, "the old group's grant is gone: {r:?}");
    assert_eq!(r[5]["connected"], true, "never disconnected: {r:?}");

    // Labels: set, shown, removed, bounded.
    ok(
        &s.cli(&["device", "label", "mover", "site=dock-7", "owner=ops"]),
        "label",
    );
    let shown = s.show("mover");
    assert_eq!(shown["labels"], json!({"owner": "ops", "site": "dock-7"}));
    ok(
        &s.cli(&["device", "label", "mover", "--remove", "owner"]),
        "label --remove",
    );
    let list: Value =
        serde_json::from_str(&ok(&s.cli(&["device", "list", "--json"]), "list")).unwrap();
    assert_eq!(list[0]["labels"], json!({"site": "dock-7"}));
    let (code, v) = s.admin_api(
        "PATCH",
        "/api/v1/devices/mover",
        Some(json!({"labels": {"Bad Key": "x"}})),
    );
    assert_eq!(code, 400, "{v}");
    // Labels and groups in one request: a bad part refuses the whole, nothing is written.
    let (code, v) = s.admin_api(
        "PATCH",
        "/api/v1/devices/mover",
        Some(json!({"labels": {"rack": "r1"}, "groups": ["no/slash"]})),
    );
    assert_eq!(code, 400, "{v}");
    assert_eq!(s.show("mover")["labels"], json!({"site": "dock-7"}));
    let ev = s.wait_event("labels", |e| {
        e["type"] == "device_labels_changed" && e["removed"] == json!(["owner"])
    });
    assert_eq!(ev["by"], "admin");
}

#[test]
fn deleting_a_device_revokes_its_certificates_disconnects_it_and_frees_its_id() {
    let s = Server::start();
    let dev = s.add_device("doomed", &["sensors"]);
    let mut live = s.paho_background(
        &dev,
        json!([
            {"op": "connect", "client_id": "doomed"},
            {"op": "subscribe", "filters": ["devices/doomed/commands/#"], "qos": 1},
            {"op": "wait_disconnect", "timeout": 10}
        ]),
    );
    assert_eq!(live.wait_step(1)["codes"], json!([1]));
    // Without --yes it asks, and a "no" changes nothing.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["device", "delete", "doomed", "--data"])
        .arg(&s.data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"n\n").unwrap();
    assert!(!child.wait_with_output().unwrap().status.success());
    assert_eq!(s.show("doomed")["state"], "active");

    let out = s.cli(&[
        "device",
        "delete",
        "doomed",
        "--reason",
        "decommissioned",
        "--yes",
    ]);
    let text = ok(&out, "delete");
    assert!(
        text.contains("1 certificate(s) revoked, 1 live connection(s) closed"),
        "{text}"
    );
    let r = live.join().unwrap();
    assert_eq!(r[2]["disconnect"]["rc"], 0x98, "{r:?}");
    let ev = s.wait_event("deleted", |e| e["type"] == "device_deleted");
    assert_eq!(
        (
            ev["by"].as_str(),
            ev["reason"].as_str(),
            ev["sessions_closed"].as_u64()
        ),
        (Some("admin"), Some("decommissioned"), Some(1))
    );
    // Gone from the fleet; its certificate no longer opens MQTT.
    let (code, _) = s.admin_api("GET", "/api/v1/devices/doomed", None);
    assert_eq!(code, 404);
    assert!(!s
        .mosquitto_pub(&dev, &["-t", "devices/doomed/telemetry", "-m", "x"])
        .status
        .success());
    // The id may be registered again, as a new device with a new certificate.
    let again = s.add_device("doomed", &["sensors"]);
    let out = s.mosquitto_pub(
        &again,
        &["-t", "devices/doomed/telemetry", "-m", "x", "-q", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(audit_entries(&s)
        .iter()
        .any(|e| e["type"] == "control_action"
            && e["action"] == "delete_device"
            && e["by"] == "admin"));
}

#[test]
fn an_operator_certificate_the_registry_never_recorded_is_refused() {
    let s = Server::start();
    // Signed by Tollgate's own issuing CA (as a stolen CA key, or a bug, would make one), naming
    // operator admin, but not one of admin's recorded certificates; and one naming nobody.
    let dir = s.root.join("forged");
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = s.issuer();
    let mut forged = Vec::new();
    for name in ["admin", "ghost"] {
        let issued = issuer
            .issue(
                &tollgate_pki::CertProfile::Operator { name },
                tollgate_pki::Validity::starting_now(time::Duration::days(1)),
                None,
            )
            .unwrap();
        let c = Creds {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: s.data.join("ca/root.crt"),
        };
        std::fs::write(&c.cert, &issued.cert_pem).unwrap();
        std::fs::write(&c.key, issued.key_pem.unwrap()).unwrap();
        forged.push(c);
    }
    for c in &forged {
        let (code, v) = api_as(&s, c, "GET", "/api/v1/devices", None);
        assert_eq!(code, 403, "{}: {v}", c.cert.display());
    }
    // The real one works.
    let (code, _) = s.admin_api("GET", "/api/v1/devices", None);
    assert_eq!(code, 200);
}

#[test]
fn a_data_directory_from_before_operators_keeps_its_admin() {
    let mut s = Server::start();
    s.stop();
    // Make it look like the previous release left it: registry schema 7 (without operators or
    // the last-seen columns of schema 9), and
    // an admin certificate of the old form (urn:tollgate:admin:admin), recorded as the only
    // admin certificate.
    let issued = s
        .issuer()
        .issue(
            &tollgate_pki::CertProfile::Admin { name: "admin" },
            tollgate_pki::Validity::starting_now(time::Duration::days(365)),
            None,
        )
        .unwrap();
    std::fs::write(s.data.join("admin/admin.crt"), &issued.cert_pem).unwrap();
    std::fs::write(s.data.join("admin/admin.key"), issued.key_pem.unwrap()).unwrap();
    let sql = format!(
        "DROP TABLE operators; DELETE FROM certificates WHERE kind = 'admin';
         INSERT INTO certificates (serial, subject, kind, not_before, not_after)
             VALUES ('{}', 'admin', 'admin', {}, {});
         ALTER TABLE devices DROP COLUMN last_seen_at;
         ALTER TABLE devices DROP COLUMN last_addr;
         PRAGMA user_version = 7;",
        issued.serial,
        issued.validity.not_before.unix_timestamp(),
        issued.validity.not_after.unix_timestamp()
    );
    let out = Command::new("sqlite3")
        .arg(s.data.join("registry.db"))
        .arg(&sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.spawn();
    // The old certificate still administers the gateway, as operator admin.
    s.add_device("sensor-1", &["sensors"]);
    let ev = s.wait_event("added", |e| e["type"] == "device_added");
    assert_eq!(ev["by"], "admin");
    let list: Value =
        serde_json::from_str(&ok(&s.cli(&["operator", "list", "--json"]), "list")).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        (
            list[0]["name"].as_str(),
            list[0]["role"].as_str(),
            list[0]["created_by"].as_str()
        ),
        (Some("admin"), Some("admin"), Some("migration"))
    );
    assert_eq!(
        list[0]["certificates"][0]["serial"].as_str(),
        Some(issued.serial.as_str())
    );
    // And it renews into the new form.
    ok(&s.cli(&["operator", "renew"]), "renew");
    let pem = std::fs::read_to_string(s.data.join("admin/admin.crt")).unwrap();
    let info = &tollgate_pki::parse_pem_certificates(&pem).unwrap()[0];
    assert_eq!(info.role, tollgate_pki::Role::Admin("admin".into()));
    let (code, _) = s.admin_api("GET", "/api/v1/operators", None);
    assert_eq!(code, 200);
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(s.data.join("admin/admin.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("urn:tollgate:operator:admin"));
}
