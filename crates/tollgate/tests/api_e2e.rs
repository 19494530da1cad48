//! The admin API's contract, end to end against the real binary over TLS with curl, the CLI and
//! real MQTT clients: every error is an RFC 9457 problem document, the OpenAPI document is
//! served as committed, and the policy is versioned (push, live effect, diff, rollback, stale
//! `If-Match` refused).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::Server;

/// One request with the admin certificate (or none); returns (status, headers, body).
fn curl(s: &Server, cert: bool, args: &[&str], path: &str) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-D", "-", "-o", "-", "--cacert"])
        .arg(s.data.join("ca/root.crt"));
    if cert {
        cmd.arg("--cert")
            .arg(s.data.join("admin/admin.crt"))
            .arg("--key")
            .arg(s.data.join("admin/admin.key"));
    }
    let out = cmd
        .args(args)
        .arg(format!("https://127.0.0.1:{}{path}", s.admin_port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

/// The response is a problem document for `status` about `path`.
fn assert_problem(status: u16, head: &str, body: &str, want: u16, path: &str) -> Value {
    assert_eq!(status, want, "{head}{body}");
    assert_eq!(
        header(head, "content-type"),
        Some("application/problem+json"),
        "{head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["status"], want, "{v}");
    assert_eq!(v["instance"], path, "{v}");
    assert!(
        v["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://tollgate.dev/problems/")),
        "{v}"
    );
    assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    assert!(v["detail"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    v
}

#[test]
fn every_admin_api_error_is_a_problem_document() {
    let s = Server::start();
    // Wrong method: axum's own 405 (it used to come back with an empty body).
    for (method, path) in [
        ("DELETE", "/api/v1/devices"),
        ("PUT", "/api/v1/health"),
        ("PATCH", "/api/v1/policy/history"),
    ] {
        let (st, head, body) = curl(&s, true, &["-X", method], path);
        let v = assert_problem(st, &head, &body, 405, path);
        assert_eq!(v["title"], "Method Not Allowed", "{v}");
        assert!(header(&head, "allow").is_some(), "405 keeps Allow: {head}");
    }
    // An unknown route.
    let (st, head, body) = curl(&s, true, &[], "/api/v1/no-such-thing");
    let v = assert_problem(st, &head, &body, 404, "/api/v1/no-such-thing");
    assert_eq!(v["type"], "https://tollgate.dev/problems/not-found");
    // A path parameter that does not parse (axum's rejection was text/plain).
    let (st, head, body) = curl(
        &s,
        true,
        &["-X", "DELETE"],
        "/api/v1/compliance/waivers/not-a-number",
    );
    assert_problem(
        st,
        &head,
        &body,
        400,
        "/api/v1/compliance/waivers/not-a-number",
    );
    // A query that does not parse.
    let (st, head, body) = curl(&s, true, &[], "/api/v1/audit/entries?from=minus-one");
    assert_problem(st, &head, &body, 400, "/api/v1/audit/entries");
    let (st, head, body) = curl(&s, true, &[], "/api/v1/policy/diff?from=1&bogus=2");
    assert_problem(st, &head, &body, 400, "/api/v1/policy/diff");
    // Malformed JSON, wrong shape, wrong media type.
    let (st, head, body) = curl(
        &s,
        true,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{\"id\": ",
        ],
        "/api/v1/devices",
    );
    assert_problem(st, &head, &body, 400, "/api/v1/devices");
    let (st, head, body) = curl(
        &s,
        true,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "[1, 2]",
        ],
        "/api/v1/devices",
    );
    assert_problem(st, &head, &body, 422, "/api/v1/devices");
    let (st, head, body) = curl(
        &s,
        true,
        &["-H", "Content-Type: text/csv", "--data-binary", "a,b"],
        "/api/v1/devices",
    );
    assert_problem(st, &head, &body, 415, "/api/v1/devices");
    // A handler's own error, and a caller without a certificate.
    let (st, head, body) = curl(&s, true, &[], "/api/v1/devices/nobody");
    let v = assert_problem(st, &head, &body, 404, "/api/v1/devices/nobody");
    assert!(v["detail"].as_str().unwrap().contains("nobody"), "{v}");
    let (st, head, body) = curl(&s, false, &[], "/api/v1/devices");
    assert_problem(st, &head, &body, 403, "/api/v1/devices");
    // The CLI reads `detail`.
    let out = s.cli(&["device", "show", "nobody"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("nobody"), "{err}");
    // EST keeps RFC 7030's plain-text errors.
    let (st, head, _) = curl(&s, false, &["-X", "PUT"], "/.well-known/est/cacerts");
    assert_eq!(st, 405, "{head}");
    assert_ne!(
        header(&head, "content-type"),
        Some("application/problem+json")
    );
}

#[test]
fn the_openapi_document_is_served_as_committed() {
    let s = Server::start();
    let (st, head, body) = curl(&s, true, &[], "/api/v1/openapi.json");
    assert_eq!(st, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
    )
    .unwrap();
    assert_eq!(body, committed, "served and committed documents differ");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["mutualTLS"]["type"],
        "mutualTLS"
    );
    // An operator certificate is needed to read it.
    let (st, head, body) = curl(&s, false, &[], "/api/v1/openapi.json");
    assert_problem(st, &head, &body, 403, "/api/v1/openapi.json");
}

const BACKEND_SUBSCRIBE: &str = r#"subscribe = ["devices/+/telemetry", "devices/+/events/#", "devices/+/status", "$share/+/devices/+/telemetry"]"#;

#[test]
fn a_pushed_policy_changes_live_rights_shows_in_the_diff_and_rolls_back() {
    let s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let backend = s.add_device("backend", &["backend"]);

    // Version 1: the file the server started with, rules in the policy's own syntax.
    let (st, head, body) = curl(&s, true, &[], "/api/v1/policy");
    assert_eq!(st, 200, "{body}");
    assert_eq!(header(&head, "etag"), Some("\"1\""), "{head}");
    let v1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["by"], "file");
    assert_eq!(v1["text"], support::EXAMPLE_POLICY);
    assert_eq!(v1["rules"][0]["who"], json!(["group:sensors"]), "{v1}");
    assert_eq!(v1["rules"][2]["who"], json!(["*"]), "{v1}");
    assert_eq!(v1["rules"][2]["effect"], "deny", "{v1}");

    // A live MQTT v5 subscriber with a right the next version takes away.
    let mut live = s.paho_background(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 0},
            {"op": "wait_disconnect", "timeout": 20}
        ]),
    );
    assert_eq!(live.wait_step(1)["codes"], json!([0]));

    // Validation changes nothing, and says where a text is wrong.
    let broken = format!(
        "{}\n[[allow]]\nwho = \"group:x\"\npublsh = [\"a\"]\n",
        support::EXAMPLE_POLICY
    );
    let lines = broken.lines().count();
    let (st, _, body) = curl(
        &s,
        true,
        &[
            "-H",
            "Content-Type: application/toml",
            "--data-binary",
            &broken,
        ],
        "/api/v1/policy/validate",
    );
    assert_eq!(st, 200, "{body}");
    let check: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(check["valid"], false, "{check}");
    assert!(
        check["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["line"] == lines),
        "line {lines}: {check}"
    );

    // Version 2, pushed with the CLI: backend may no longer subscribe to telemetry.
    let tightened =
        support::EXAMPLE_POLICY.replace(BACKEND_SUBSCRIBE, r#"subscribe = ["devices/+/events/#"]"#);
    assert_ne!(tightened, support::EXAMPLE_POLICY);
    let file = s.root.join("tightened.toml");
    std::fs::write(&file, &tightened).unwrap();
    let out = s.cli(&["policy", "push", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Version 2 is in force"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The live connection lost the right (MQTT v5: DISCONNECT 0x87, not authorized).
    s.wait_event("subscription revoked", |e| {
        e["type"] == "subscription_revoked" && e["device"] == "backend"
    });
    let r = live.join().unwrap();
    assert_eq!(r[2]["disconnect"]["rc"], 0x87, "{r:?}");
    // Written ahead, then announced, naming the operator.
    let ahead = s.wait_event("written ahead", |e| {
        e["type"] == "control_action" && e["action"] == "update_policy"
    });
    assert_eq!(ahead["by"], "admin", "{ahead}");
    let updated = s.wait_event("policy updated", |e| e["type"] == "policy_updated");
    assert_eq!(updated["version"], 2, "{updated}");
    assert_eq!(updated["by"], "admin", "{updated}");
    assert_eq!(
        std::fs::read_to_string(s.data.join("policy.toml")).unwrap(),
        tightened
    );

    // A push written against version 1 is refused now that 2 is in force.
    let out = s.cli(&["policy", "push", file.to_str().unwrap(), "--base", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("412") && err.contains("version 2"), "{err}");

    // The diff shows exactly the change.
    let out = s.cli(&["policy", "diff", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("--- policy version 1"), "{diff}");
    assert!(diff.contains("+++ policy version 2"), "{diff}");
    assert!(diff.contains(&format!("-{BACKEND_SUBSCRIBE}")), "{diff}");
    assert!(
        diff.contains("+subscribe = [\"devices/+/events/#\"]"),
        "{diff}"
    );

    // A stale If-Match is refused (412), a missing one too (428); nothing changes.
    for (args, want) in [(vec!["-H", "If-Match: \"1\""], 412), (vec![], 428)] {
        let mut a = vec![
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/toml",
            "--data-binary",
            support::EXAMPLE_POLICY,
        ];
        a.extend(args);
        let (st, head, body) = curl(&s, true, &a, "/api/v1/policy");
        assert_problem(st, &head, &body, want, "/api/v1/policy");
    }
    let (_, head, _) = curl(&s, true, &[], "/api/v1/policy");
    assert_eq!(header(&head, "etag"), Some("\"2\""), "{head}");

    // Rollback to version 1 is a new version 3 with version 1's text; the right is back.
    let out = s.cli(&["policy", "rollback", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, hist) = s.admin_api("GET", "/api/v1/policy/history", None);
    assert_eq!(hist["current"], 3, "{hist}");
    let versions = hist["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{hist}");
    assert_eq!(versions[2]["rollback_of"], 1, "{hist}");
    assert_eq!(versions[2]["sha256"], versions[0]["sha256"], "{hist}");
    assert_eq!(versions[1]["by"], "admin", "{hist}");
    let (st, old) = s.admin_api("GET", "/api/v1/policy/history/2", None);
    assert_eq!(st, 200, "{old}");
    assert_eq!(old["text"], tightened);
    let (st, missing) = s.admin_api("GET", "/api/v1/policy/history/99", None);
    assert_eq!(st, 404, "{missing}");
    let r = s.paho(
        &backend,
        json!([
            {"op": "connect", "client_id": "backend"},
            {"op": "subscribe", "filters": ["devices/+/telemetry"], "qos": 0}
        ]),
    );
    assert_eq!(r[1]["codes"], json!([0]), "{r:?}");
    let out = s.mosquitto_pub(&sensor, &["-t", "devices/sensor-1/telemetry", "-m", "x"]);
    assert!(out.status.success());

    // Groups named by devices and by the policy.
    let out = s.cli(&["groups", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sensors = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "sensors")
        .unwrap_or_else(|| panic!("{groups}"));
    assert_eq!(sensors["devices"], 1, "{groups}");
    assert_eq!(sensors["rules"], json!(["sensors"]), "{groups}");
}

#[test]
fn a_server_started_with_a_broken_policy_takes_a_pushed_one_as_version_1() {
    let s = Server::start_with(&[], "[[allow]]\nwho = \"group:x\"\npublsh = [\"a\"]\n");
    // No valid policy was ever loaded: no version is in force.
    let (st, head, body) = curl(&s, true, &[], "/api/v1/policy");
    assert_problem(st, &head, &body, 404, "/api/v1/policy");
    let (st, hist) = s.admin_api("GET", "/api/v1/policy/history", None);
    assert_eq!(st, 200, "{hist}");
    assert_eq!(hist["versions"], json!([]), "{hist}");
    // A push against version 0 fixes it, live.
    let (st, _, body) = curl(
        &s,
        true,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: text/plain",
            "-H",
            "If-Match: \"0\"",
            "--data-binary",
            support::EXAMPLE_POLICY,
        ],
        "/api/v1/policy",
    );
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], 1, "{v}");
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let out = s.mosquitto_pub(
        &sensor,
        &["-t", "devices/sensor-1/telemetry", "-q", "1", "-m", "x"],
    );
    assert!(out.status.success(), "the pushed policy is in force");
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_a_408_problem() {
    let s = Server::start_with(
        &[("body_timeout_secs = 10", "body_timeout_secs = 1")],
        support::EXAMPLE_POLICY,
    );
    // Python's ssl: a real TLS client that announces 100 bytes of body and sends 10.
    let script = r#"
import socket, ssl, sys
port, ca, cert, key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.check_hostname = False
with socket.create_connection(("127.0.0.1", int(port)), timeout=20) as raw:
    with ctx.wrap_socket(raw) as tls:
        tls.sendall(b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\": \"a")
        got = b""
        while True:
            chunk = tls.recv(4096)
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got and got.rstrip().endswith(b"}"):
                break
        sys.stdout.write(got.decode("utf-8", "replace"))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &s.admin_port.to_string()])
        .arg(s.data.join("ca/root.crt"))
        .arg(s.data.join("admin/admin.crt"))
        .arg(s.data.join("admin/admin.key"))
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let v = assert_problem(
        status,
        &head.to_ascii_lowercase(),
        body,
        408,
        "/api/v1/devices",
    );
    assert!(v["detail"].as_str().unwrap().contains("1 s"), "{v}");
}
