//! Hostile compliance input against the real binary: malformed, truncated, huge (100 MB) and
//! deeply nested SBOM, OSV and VEX files and compliance profiles get a clear error, the server's
//! memory stays bounded, and nothing changes: no SBOM, advisory or statement is stored, and the
//! last good profile stays in force.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::Server;

const GOOD_PROFILE: &str =
    "[[rule]]\nid = \"no-high-vulns\"\nmax_severity = \"medium\"\naction = \"quarantine\"\n";

fn cli_err(s: &Server, args: &[&str]) -> String {
    let out = s.cli(args);
    assert!(
        !out.status.success(),
        "tollgate {args:?} must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// POST a file to the admin API with curl (as any client could, bypassing the CLI's checks).
fn upload(s: &Server, path: &str, file: &Path) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(s.data.join("ca/root.crt"))
        .arg("--cert")
        .arg(s.data.join("admin/admin.crt"))
        .arg("--key")
        .arg(s.data.join("admin/admin.key"))
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("https://127.0.0.1:{}{path}", s.admin_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn status(s: &Server) -> Value {
    let (code, v) = s.admin_api("GET", "/api/v1/compliance/status", None);
    assert_eq!(code, 200, "{v}");
    v
}

fn nothing_stored(s: &Server) {
    let v = status(s);
    assert_eq!(v["sboms"], 0, "{v}");
    assert_eq!(v["advisories"]["records"], 0, "{v}");
    assert_eq!(v["vex_statements"], 0, "{v}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn huge(dir: &Path, name: &str) -> std::path::PathBuf {
    // 100 MB of a syntactically plausible document: a JSON array that never ends.
    let p = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    f.write_all(b"{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.5\",\"components\":[")
        .unwrap();
    let chunk =
        b"{\"type\":\"library\",\"name\":\"x\",\"version\":\"1\",\"purl\":\"pkg:pypi/x@1\"},";
    let mut written = 0;
    while written < 100 * 1024 * 1024 {
        f.write_all(chunk).unwrap();
        written += chunk.len();
    }
    f.flush().unwrap();
    p
}

#[test]
fn hostile_documents_and_profiles_are_refused_clearly_and_change_nothing() {
    let s = Server::start();
    let dir = s.root.join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(s.data.join("compliance.toml"), GOOD_PROFILE).unwrap();
    s.wait_event("profile", |e| {
        e["type"] == "compliance_profile_reloaded" && e["rules"] == 1
    });
    let out = s.cli(&["supplier", "add", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.cli(&["model", "add", "Scanner-X2", "--supplier", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hwm_before = s.status_kib("VmHWM:");

    let sbom = |file: &Path| -> String {
        cli_err(
            &s,
            &[
                "sbom",
                "import",
                "--model",
                "Scanner-X2",
                "--firmware",
                "1.0.0",
                file.to_str().unwrap(),
            ],
        )
    };
    let good = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"metadata":{"timestamp":"2026-11-30T00:00:00Z"},"components":[{"type":"library","name":"urllib3","version":"1.26.4","purl":"pkg:pypi/urllib3@1.26.4"}]}"#;

    // Malformed, truncated, wrong-typed, unsupported version, deeply nested.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed.json",
            b"{\"bomFormat\": CycloneDX}".to_vec(),
            "SBOM",
        ),
        ("truncated.json", good[..good.len() / 2].to_vec(), "SBOM"),
        (
            "wrong-type.json",
            br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[{"name":7}]}"#.to_vec(),
            "components",
        ),
        (
            "old.json",
            br#"{"bomFormat":"CycloneDX","specVersion":"1.2","components":[]}"#.to_vec(),
            "1.2",
        ),
        (
            "nested.json",
            format!(
                "{{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.5\",\"components\":{}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
            "SBOM",
        ),
        (
            "not-an-sbom.json",
            b"{\"hello\": \"world\"}".to_vec(),
            "SBOM",
        ),
    ];
    for (name, bytes, what) in &cases {
        let p = write(&dir, name, bytes);
        let err = sbom(&p);
        assert!(err.contains(what), "{name}: {err}");
        // The server refuses it too, precisely, when the CLI's check is bypassed.
        let (code, body) = upload(&s, "/api/v1/sboms?model=Scanner-X2&firmware=1.0.0", &p);
        assert_eq!(code, 422, "{name}: {body}");
        assert!(body.contains("SBOM"), "{name}: {body}");
    }
    // 100 MB: the CLI refuses it before reading it; the server from its Content-Length.
    let big = huge(&dir, "huge.json");
    let err = sbom(&big);
    assert!(err.contains("over the limit"), "{err}");
    let (code, body) = upload(&s, "/api/v1/sboms?model=Scanner-X2&firmware=1.0.0", &big);
    assert_eq!(code, 413, "{body}");
    let (code, body) = upload(&s, "/api/v1/vex?model=Scanner-X2", &big);
    assert_eq!(code, 413, "{body}");
    let (code, body) = upload(&s, "/api/v1/advisories", &big);
    assert_eq!(code, 413, "{body}");
    std::fs::remove_file(&big).unwrap();
    nothing_stored(&s);

    // OSV: a folder with one bad record among good ones stores none of them.
    let osv = dir.join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    for i in 0..5 {
        write(
            &osv,
            &format!("GOOD-{i}.json"),
            format!(
                r#"{{"id":"GOOD-{i}","modified":"2026-01-01T00:00:00Z","affected":[{{"package":{{"ecosystem":"PyPI","name":"x{i}"}},"versions":["1.0"]}}]}}"#
            )
            .as_bytes(),
        );
    }
    write(&osv, "BAD-1.json", br#"{"id":"BAD-1","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"y"},"ranges":[{"type":"ECOSYSTEM","events":"#);
    let err = cli_err(&s, &["advisories", "import", osv.to_str().unwrap()]);
    assert!(err.contains("BAD-1.json"), "the bad record is named: {err}");
    let nested = format!(
        r#"{{"id":"DEEP","modified":"2026-01-01T00:00:00Z","affected":{}{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    std::fs::remove_file(osv.join("BAD-1.json")).unwrap();
    write(&osv, "DEEP.json", nested.as_bytes());
    let err = cli_err(&s, &["advisories", "import", osv.to_str().unwrap()]);
    assert!(err.contains("DEEP.json"), "{err}");
    // Bypassing the CLI: one bad record fails the batch, none is stored.
    let batch = format!(
        "[{}, {{\"id\": \"X\", \"modified\": 5}}]",
        std::fs::read_to_string(osv.join("GOOD-0.json")).unwrap()
    );
    let p = write(&dir, "batch.json", batch.as_bytes());
    let (code, body) = upload(&s, "/api/v1/advisories", &p);
    assert_eq!(code, 422, "{body}");
    nothing_stored(&s);

    // VEX: malformed, truncated, a not_affected statement without justification.
    for (name, doc) in [
        ("vex-malformed.json", "{\"@context\": \"https://openvex.dev/ns/v0.2.0\", \"statements\": [}".to_owned()),
        ("vex-truncated.json", "{\"@context\": \"https://openvex.dev/ns/v0.2.0\", \"statements\": [{\"vulnerability\": {\"name\": \"CVE-2021-33503\"}".to_owned()),
        ("vex-unjustified.json", "{\"@context\": \"https://openvex.dev/ns/v0.2.0\", \"@id\": \"x\", \"author\": \"a\", \"timestamp\": \"2026-11-30T00:00:00Z\", \"version\": 1, \"statements\": [{\"vulnerability\": {\"name\": \"CVE-2021-33503\"}, \"products\": [{\"@id\": \"pkg:generic/acme/Scanner-X2\"}], \"status\": \"not_affected\"}]}".to_owned()),
    ] {
        let p = write(&dir, name, doc.as_bytes());
        let err = cli_err(&s, &["vex", "import", p.to_str().unwrap(), "--model", "Scanner-X2"]);
        assert!(err.contains("VEX"), "{name}: {err}");
        let (code, body) = upload(&s, "/api/v1/vex?model=Scanner-X2", &p);
        assert_eq!(code, 422, "{name}: {body}");
    }
    nothing_stored(&s);

    // Profiles: a broken one is refused with its line, the good one stays in force.
    for (i, bad) in [
        "[[rule]]\nid = \"x\"\nmax_severity = \"severe\"\naction = \"quarantine\"\n".to_owned(),
        "[[rule]]\nid = \"x\"\naction = \"quarantine\"\n".to_owned(),
        format!("x = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        "#".repeat(2 * 1024 * 1024),
        "[[rule]\nid = ".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        // Written whole then renamed in place, as editors and config tools do: the watcher
        // must never see a half-written file.
        let tmp = s.data.join("compliance.toml.tmp");
        std::fs::write(&tmp, bad).unwrap();
        std::fs::rename(&tmp, s.data.join("compliance.toml")).unwrap();
        let ev = s.wait_event("rejected", |e| {
            e["type"] == "compliance_profile_rejected"
                && s.count_events("compliance_profile_rejected") > i
        });
        assert!(
            ev["error"].as_str().unwrap().contains("compliance.toml"),
            "{ev}"
        );
        let st = status(&s);
        assert_eq!(
            st["profile"]["rules"].as_array().unwrap().len(),
            1,
            "the last good profile stays: {st}"
        );
        assert_eq!(st["profile"]["rules"][0]["id"], "no-high-vulns", "{st}");
        assert!(st["profile"]["error"].is_string(), "{st}");
        let p = write(&dir, &format!("bad-{i}.toml"), bad.as_bytes());
        let out = s.cli(&["compliance", "check", p.to_str().unwrap()]);
        assert!(!out.status.success());
    }
    let e = s
        .events()
        .into_iter()
        .find(|e| e["type"] == "compliance_profile_rejected")
        .unwrap();
    assert!(
        e["error"].as_str().unwrap().contains("compliance.toml:3:"),
        "line-precise: {e}"
    );

    // Bounded memory: nothing above was held whole beyond its limit.
    let hwm = s.status_kib("VmHWM:");
    assert!(
        hwm < hwm_before + 64 * 1024,
        "peak memory grew from {hwm_before} KiB to {hwm} KiB"
    );
    // And the server still works.
    let p = write(&dir, "good.json", good);
    let out = s.cli(&[
        "sbom",
        "import",
        "--model",
        "Scanner-X2",
        "--firmware",
        "1.0.0",
        p.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&s)["sboms"], 1);
}
