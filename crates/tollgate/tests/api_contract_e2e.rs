//! The admin API keeps its contract: schemathesis generates requests from the OpenAPI document a
//! real server serves (`GET /api/v1/openapi.json`), sends them over TLS with the admin client
//! certificate, and checks every answer with all its checks: no server error, every status and
//! content type and body as the document says, invalid input refused. The run is bounded
//! (few examples per operation) and derandomized, so it is reproducible in CI.
//!
//! schemathesis (3.x on PyPI) is installed by `scripts/test`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::process::Command;
use std::time::Instant;

use support::Server;

/// Examples per operation: the whole run stays well under three minutes on a 2-core machine.
const MAX_EXAMPLES: &str = "30";

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let s = Server::start();
    // Some state for the generated requests to find: devices, groups, a quarantine.
    s.add_device("sensor-1", &["sensors"]);
    s.add_device("backend", &["backend"]);
    let (st, v) = s.admin_api(
        "POST",
        "/api/v1/devices/sensor-1/quarantine",
        Some(serde_json::json!({"reason": "contract test"})),
    );
    assert_eq!(st, 200, "{v}");

    let url = format!("https://127.0.0.1:{}/api/v1/openapi.json", s.admin_port);
    let report = s.root.join("schemathesis");
    let t0 = Instant::now();
    // As a module, so that a `pip install --user` works without ~/.local/bin on PATH.
    let out = Command::new("python3")
        .args(["-m", "schemathesis.cli", "run", &url])
        .args(["--experimental", "openapi-3.1"])
        .args(["--checks", "all"])
        // Every check but one: schemathesis 3 calls data "negative" that the server rightly
        // accepts once it is on the wire (the string "false" for a boolean query parameter is
        // `?refresh=false`, the same bytes as the boolean; an absent optional body). Negative
        // data is still sent (below), and every answer to it must be documented and not 5xx.
        .args(["--exclude-checks", "negative_data_rejection"])
        .args(["--data-generation-method", "all"])
        .args(["--hypothesis-max-examples", MAX_EXAMPLES])
        .arg("--hypothesis-derandomize")
        .args(["--hypothesis-suppress-health-check", "all"])
        .args(["--generation-allow-x00", "false"])
        .args(["--generation-codec", "ascii"])
        .args(["--request-timeout", "20000"])
        .arg("--request-cert")
        .arg(s.data.join("admin/admin.crt"))
        .arg("--request-cert-key")
        .arg(s.data.join("admin/admin.key"))
        .arg("--request-tls-verify")
        .arg(s.data.join("ca/root.crt"))
        .arg("--no-color")
        // Headers as HTTP allows them (support/schemathesis_hooks.py says why).
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env(
            "PYTHONPATH",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support"),
        )
        .env("HOME", &report)
        .output()
        .expect("run schemathesis (python3 -m schemathesis.cli; scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("schemathesis took {:?}", t0.elapsed());
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    // It really ran: every operation was tested, none errored out.
    assert!(
        stdout.contains("passed") && !stdout.contains(" errored"),
        "{stdout}\n{stderr}"
    );
    // And the server is still healthy after it.
    let (st, health) = s.admin_api("GET", "/api/v1/health", None);
    assert_eq!(st, 200, "{health}");
}
