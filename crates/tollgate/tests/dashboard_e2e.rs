//! The dashboard's security, end to end with curl against the real server over TLS: no access
//! without a session, one-time URLs that cannot be replayed or used late, CSRF refused, idle
//! sessions ended, the cookie's flags exactly, the CSP and the other headers on every
//! dashboard response, and a viewer session that can read but not change.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Server, EXAMPLE_POLICY};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One response: status, headers (lower-case names; repeated ones joined by "\n"), body.
struct Resp {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// curl without a client certificate (a browser), with `args` before the URL.
fn curl(s: &Server, path: &str, args: &[&str]) -> Resp {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "--max-time", "10", "--cacert"])
        .arg(s.data.join("ca/root.crt"))
        .args(args)
        .arg(format!("https://127.0.0.1:{}{path}", s.admin_port))
        .output()
        .expect("curl");
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn parse(text: &str) -> Resp {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = BTreeMap::<String, String>::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let e = headers.entry(k.trim().to_ascii_lowercase()).or_default();
            if !e.is_empty() {
                e.push('\n');
            }
            e.push_str(v.trim());
        }
    }
    Resp {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A sign-in URL's path and query, from the API with the admin certificate.
fn login_path(s: &Server, body: Value) -> String {
    let (code, v) = s.admin_api("POST", "/api/v1/dashboard/logins", Some(body));
    assert_eq!(code, 201, "{v}");
    let url = v["url"].as_str().unwrap();
    let prefix = format!("https://127.0.0.1:{}", s.admin_port);
    assert!(url.starts_with(&prefix), "{url}");
    url[prefix.len()..].to_owned()
}

/// A signed-in browser: its session cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

impl Browser {
    fn sign_in(s: &Server, role: &str) -> Browser {
        let r = curl(s, &login_path(s, json!({ "role": role })), &[]);
        assert_eq!(r.status, 303, "{}", r.body);
        let set = r.header("set-cookie");
        let value = set
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("__Host-tollgate-session=")
            .unwrap();
        let cookie = format!("__Host-tollgate-session={value}");
        let page = curl(s, "/dashboard/", &["-H", &format!("Cookie: {cookie}")]);
        assert_eq!(page.status, 200);
        let csrf = page
            .body
            .split(r#"<meta name="csrf-token" content=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        Browser { cookie, csrf }
    }

    /// A request through this session, with `extra` curl arguments.
    fn call(&self, s: &Server, method: &str, path: &str, extra: &[&str]) -> Resp {
        let cookie = format!("Cookie: {}", self.cookie);
        let mut args = vec!["-X", method, "-H", cookie.as_str()];
        args.extend_from_slice(extra);
        curl(s, path, &args)
    }

    fn csrf_header(&self) -> String {
        format!("X-CSRF-Token: {}", self.csrf)
    }
}

fn origin(s: &Server) -> String {
    format!("Origin: https://127.0.0.1:{}", s.admin_port)
}

fn assert_dashboard_headers(r: &Resp, what: &str) {
    assert_eq!(r.header("content-security-policy"), CSP, "{what}");
    assert_eq!(r.header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(r.header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(r.header("x-frame-options"), "DENY", "{what}");
}

#[test]
fn nothing_is_reachable_without_a_session() {
    let s = Server::start_with(&[], EXAMPLE_POLICY);
    s.add_device("cam-1", &["sensors"]);
    for page in [
        "/dashboard/",
        "/dashboard/devices",
        "/dashboard/devices/cam-1",
        "/dashboard/alerts",
        "/dashboard/audit",
        "/dashboard/policy",
        "/dashboard/events",
    ] {
        let r = curl(&s, page, &[]);
        assert_eq!(r.status, 401, "{page}");
        assert!(r.body.contains("Sign-in needed"), "{page}: {}", r.body);
        assert!(!r.body.contains("cam-1"), "{page} leaks data");
        assert_dashboard_headers(&r, page);
    }
    // The API: 403 without a certificate, with a made-up cookie, and with a malformed one.
    for cookie in [
        "",
        "Cookie: __Host-tollgate-session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Cookie: __Host-tollgate-session=../../etc",
    ] {
        let args: Vec<&str> = if cookie.is_empty() {
            vec![]
        } else {
            vec!["-H", cookie]
        };
        let r = curl(&s, "/api/v1/devices", &args);
        assert_eq!(r.status, 403, "{cookie}: {}", r.body);
        let mut post = args.clone();
        post.extend([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
        ]);
        let r = curl(&s, "/api/v1/devices/cam-1/release", &post);
        assert_eq!(r.status, 403, "{cookie}: {}", r.body);
    }
    // Minting a sign-in URL needs a certificate.
    let r = curl(
        &s,
        "/api/v1/dashboard/logins",
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
        ],
    );
    assert_eq!(r.status, 403, "{}", r.body);
}

#[test]
fn a_sign_in_url_works_once_and_not_after_it_expires() {
    let s = Server::start_with(&[], EXAMPLE_POLICY);
    // The CLI prints a URL for this server.
    let out = s.cli(&["dashboard", "login", "--role", "viewer", "--ttl", "2m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        url.starts_with(&format!(
            "https://127.0.0.1:{}/dashboard/login?token=",
            s.admin_port
        )),
        "{url}"
    );
    let token = url.rsplit('=').next().unwrap();
    assert_eq!(token.len(), 43, "256 bits in base64url");
    let issued = s.wait_event("login issued", |e| e["type"] == "dashboard_login_issued");
    assert_eq!(issued["role"], "viewer");
    assert_eq!(issued["by"], "admin");
    // Used once: a session; the cookie's flags exactly.
    let path = &url[url.find("/dashboard").unwrap()..];
    let first = curl(&s, path, &[]);
    assert_eq!(first.status, 303);
    assert_eq!(first.header("location"), "/dashboard/");
    assert_dashboard_headers(&first, "sign-in");
    assert_eq!(first.header("cache-control"), "no-store");
    let set = first.header("set-cookie");
    let parts: Vec<&str> = set.split("; ").collect();
    assert_eq!(parts.len(), 6, "{set}");
    let value = parts[0].strip_prefix("__Host-tollgate-session=").unwrap();
    assert_eq!(value.len(), 43, "{set}");
    assert_ne!(value, token, "the session id is not the token");
    assert_eq!(
        &parts[1..],
        [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=43200"
        ],
        "{set}"
    );
    assert!(!set.to_ascii_lowercase().contains("domain"), "{set}");
    let signed = s.wait_event("signed in", |e| e["type"] == "dashboard_signed_in");
    assert_eq!(signed["by"], "admin");
    assert_eq!(signed["role"], "viewer");
    assert!(signed["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    // Replayed: refused.
    let again = curl(&s, path, &[]);
    assert_eq!(again.status, 401);
    assert!(again.header("set-cookie").is_empty());
    assert!(again.body.contains("already used"), "{}", again.body);
    assert_dashboard_headers(&again, "replay");
    s.wait_event("replay refused", |e| {
        e["type"] == "dashboard_sign_in_refused"
            && e["reason"].as_str().unwrap().contains("already used")
    });
    // An unknown token and a malformed one: refused.
    let unknown = curl(
        &s,
        "/dashboard/login?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &[],
    );
    assert_eq!(unknown.status, 401);
    assert_eq!(
        curl(&s, "/dashboard/login?token=%3Cscript%3E", &[]).status,
        401
    );
    // Expired: a one-second URL, used after its expiry.
    let (code, v) = s.admin_api(
        "POST",
        "/api/v1/dashboard/logins",
        Some(json!({ "ttl_secs": 1 })),
    );
    assert_eq!(code, 201, "{v}");
    let expires = time::OffsetDateTime::parse(
        v["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // Expiry is a matter of time passing: wait until the stated instant is behind us.
    while time::OffsetDateTime::now_utc() <= expires + time::Duration::milliseconds(200) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = v["url"].as_str().unwrap();
    let late = curl(&s, &url[url.find("/dashboard").unwrap()..], &[]);
    assert_eq!(late.status, 401);
    assert!(late.body.contains("expired"), "{}", late.body);
    s.wait_event("expired refused", |e| {
        e["type"] == "dashboard_sign_in_refused"
            && e["reason"].as_str().unwrap().contains("expired")
    });
    // Lifetimes are bounded: over an hour is refused, and so is a role that does not exist.
    let (code, _) = s.admin_api(
        "POST",
        "/api/v1/dashboard/logins",
        Some(json!({ "ttl_secs": 3601 })),
    );
    assert_eq!(code, 422);
    let (code, _) = s.admin_api(
        "POST",
        "/api/v1/dashboard/logins",
        Some(json!({ "role": "root" })),
    );
    assert_eq!(code, 422);
}

#[test]
fn changes_through_a_session_need_the_csrf_token_and_our_origin() {
    let s = Server::start_with(&[], EXAMPLE_POLICY);
    s.add_device("cam-1", &["sensors"]);
    let b = Browser::sign_in(&s, "admin");
    let path = "/api/v1/devices/cam-1/quarantine";
    let json_ct = "Content-Type: application/json";
    let body = r#"{"reason":"csrf test"}"#;
    let csrf = b.csrf_header();
    let ours = origin(&s);
    let refusals: [(&str, Vec<&str>); 4] = [
        ("no token", vec!["-H", json_ct, "-d", body]),
        (
            "a wrong token",
            vec![
                "-H",
                "X-CSRF-Token: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "-H",
                json_ct,
                "-d",
                body,
            ],
        ),
        (
            "a foreign origin",
            vec![
                "-H",
                &csrf,
                "-H",
                "Origin: https://evil.example",
                "-H",
                json_ct,
                "-d",
                body,
            ],
        ),
        (
            "the null origin",
            vec!["-H", &csrf, "-H", "Origin: null", "-H", json_ct, "-d", body],
        ),
    ];
    for (what, args) in &refusals {
        let r = b.call(&s, "POST", path, args);
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        assert!(
            r.json()["detail"]
                .as_str()
                .is_some_and(|e| e.contains("CSRF") || e.contains("Origin")),
            "{what}: {}",
            r.body
        );
    }
    assert_eq!(
        s.show("cam-1")["state"],
        "active",
        "no refused request acted"
    );
    let denied = s
        .events()
        .into_iter()
        .filter(|e| {
            e["type"] == "admin_denied" && e["detail"].as_str().unwrap_or("").contains(path)
        })
        .count();
    assert!(denied >= 1, "refusals are admin_denied events");
    // Reads need no token; sign-out needs it too.
    assert_eq!(b.call(&s, "GET", "/api/v1/devices/cam-1", &[]).status, 200);
    assert_eq!(b.call(&s, "POST", "/dashboard/logout", &[]).status, 403);
    // A session cannot mint sessions, even with its token.
    let r = b.call(
        &s,
        "POST",
        "/api/v1/dashboard/logins",
        &["-H", &csrf, "-H", json_ct, "-d", "{}"],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // With the token and our origin: done, in the operator's name.
    let r = b.call(
        &s,
        "POST",
        path,
        &["-H", &csrf, "-H", &ours, "-H", json_ct, "-d", body],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let q = s.wait_event("quarantined", |e| e["type"] == "device_quarantined");
    assert_eq!(q["by"], "admin");
    assert_eq!(q["reason"], "csrf test");
    // Signed out: the cookie no longer works, for pages or the API.
    let out = b.call(&s, "POST", "/dashboard/logout", &["-H", &csrf]);
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(b.call(&s, "GET", "/dashboard/", &[]).status, 401);
    assert_eq!(b.call(&s, "GET", "/api/v1/devices", &[]).status, 403);
    s.wait_event("signed out", |e| {
        e["type"] == "dashboard_signed_out" && e["reason"] == "signed_out"
    });
}

#[test]
fn an_idle_session_ends() {
    let s = Server::start_with(
        &[("session_idle_secs = 1800", "session_idle_secs = 2")],
        EXAMPLE_POLICY,
    );
    let b = Browser::sign_in(&s, "admin");
    // Used within the idle time: still good (each use restarts the clock).
    for _ in 0..3 {
        let used = Instant::now();
        assert_eq!(b.call(&s, "GET", "/dashboard/devices", &[]).status, 200);
        while used.elapsed() < Duration::from_millis(800) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Then idle for longer than that (automatic refreshes aside): over, for pages and the API
    // alike.
    let last = Instant::now();
    assert_eq!(b.call(&s, "GET", "/api/v1/devices", &[]).status, 200);
    // The page's own automatic refresh, meanwhile, is served but is not use.
    while last.elapsed() < Duration::from_millis(1200) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let refresh = b.call(&s, "GET", "/dashboard/", &["-H", "X-Tollgate-Refresh: 1"]);
    assert_eq!(refresh.status, 200);
    while last.elapsed() < Duration::from_millis(2300) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = b.call(&s, "GET", "/dashboard/", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(b.call(&s, "GET", "/api/v1/devices", &[]).status, 403);
    s.wait_event("idle session ended", |e| {
        e["type"] == "dashboard_signed_out" && e["reason"] == "idle" && e["by"] == "admin"
    });
}

#[test]
fn every_dashboard_response_carries_the_csp_and_a_viewer_cannot_change_anything() {
    let s = Server::start_with(&[], EXAMPLE_POLICY);
    s.add_device("cam-1", &["sensors"]);
    let b = Browser::sign_in(&s, "viewer");
    let pages = [
        "/dashboard/",
        "/dashboard/devices?state=active&q=cam",
        "/dashboard/devices/cam-1",
        "/dashboard/devices/no-such-device",
        "/dashboard/alerts",
        "/dashboard/compliance",
        "/dashboard/findings",
        "/dashboard/policy?device=cam-1&action=publish&topic=devices/cam-1/telemetry",
        "/dashboard/audit",
        "/dashboard/audit?q=device_added",
        "/dashboard/nowhere",
    ];
    for p in pages {
        let r = b.call(&s, "GET", p, &[]);
        assert!(matches!(r.status, 200 | 404), "{p}: {}", r.status);
        assert_dashboard_headers(&r, p);
        assert_eq!(r.header("cache-control"), "no-store", "{p}");
        assert!(r.header("content-type").starts_with("text/html"), "{p}");
        // No inline script or style: every script and stylesheet is a file of ours.
        assert!(!r.body.contains("<script>"), "{p}: inline script");
        assert!(!r.body.contains("<style"), "{p}: inline style");
        assert!(!r.body.contains(" style="), "{p}: inline style attribute");
        // A viewer is shown no buttons that act.
        assert!(
            !r.body.contains("class=\"act\""),
            "{p}: a viewer sees an action button"
        );
    }
    // The static files: versioned URLs, cached for good, same headers.
    let page = b.call(&s, "GET", "/dashboard/", &[]);
    let js = page
        .body
        .split("src=\"")
        .filter_map(|x| x.split('"').next())
        .find(|u| u.ends_with("/app.js"))
        .unwrap()
        .to_owned();
    let r = curl(&s, &js, &[]);
    assert_eq!(r.status, 200);
    assert_dashboard_headers(&r, &js);
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(r.header("content-type").starts_with("text/javascript"));
    let stale = js.replace("/static/", "/static/0").to_owned();
    assert_eq!(curl(&s, &stale, &[]).status, 404);
    // The live stream: an SSE response with the same headers (read its first event only).
    let r = b.call(&s, "GET", "/dashboard/events", &["--max-time", "3"]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/event-stream"));
    assert!(r.body.contains("event: hello"), "{}", r.body);
    assert_dashboard_headers(&r, "events");
    // The viewer reads the API, and changes nothing, CSRF token or not.
    assert_eq!(b.call(&s, "GET", "/api/v1/devices", &[]).status, 200);
    let csrf = b.csrf_header();
    let json_ct = "Content-Type: application/json";
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/devices/cam-1/quarantine",
            r#"{"reason":"x"}"#,
        ),
        ("POST", "/api/v1/devices/cam-1/revoke", "{}"),
        ("POST", "/api/v1/devices", r#"{"id":"new-1"}"#),
        ("POST", "/api/v1/audit/checkpoint", ""),
        ("DELETE", "/api/v1/alerts/suppressions/x", ""),
    ] {
        let r = b.call(&s, method, path, &["-H", &csrf, "-H", json_ct, "-d", body]);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
        assert!(r.body.contains("viewer"), "{}", r.body);
    }
    assert_eq!(s.show("cam-1")["state"], "active");
}

/// A session acts for the operator who issued its sign-in URL, as that operator is *now*: after
/// a demotion its changes are refused, and once the operator is revoked the session reads
/// nothing either.
#[test]
fn a_session_loses_what_its_operator_loses() {
    let s = Server::start();
    s.add_device("d1", &["sensors"]);
    let dir = s.root.join("bob");
    let out = s.cli(&[
        "operator",
        "add",
        "bob",
        "--role",
        "admin",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    // bob mints his own sign-in URL with his certificate.
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(dir.join("ca.crt"))
        .arg("--cert")
        .arg(dir.join("bob.crt"))
        .arg("--key")
        .arg(dir.join("bob.key"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"role":"admin"}"#,
        ])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/dashboard/logins",
            s.admin_port
        ))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let url = v["url"].as_str().unwrap();
    let path = &url[format!("https://127.0.0.1:{}", s.admin_port).len()..];
    let r = curl(&s, path, &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.header("set-cookie").split(';').next().unwrap().to_owned();
    let page = curl(&s, "/dashboard/", &["-H", &format!("Cookie: {cookie}")]);
    let csrf = page
        .body
        .split(r#"<meta name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let bob = Browser { cookie, csrf };
    let change = |b: &Browser| {
        b.call(
            &s,
            "POST",
            "/api/v1/devices/d1/quarantine",
            &[
                "-H",
                &b.csrf_header(),
                "-H",
                &origin(&s),
                "-H",
                "Content-Type: application/json",
                "--data",
                r#"{"reason":"from bob's session"}"#,
            ],
        )
    };
    let r = change(&bob);
    assert_eq!(r.status, 200, "{}", r.body);
    let q = s.wait_event("quarantined by bob", |e| {
        e["type"] == "device_quarantined" && e["device"] == "d1"
    });
    assert_eq!(q["by"], "bob", "{q}");
    // Demoted: the session can still read, but not change.
    let out = s.cli(&["operator", "set-role", "bob", "viewer"]);
    assert!(out.status.success(), "{out:?}");
    let r = change(&bob);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(bob.call(&s, "GET", "/api/v1/devices", &[]).status, 200);
    // Revoked: nothing at all.
    let out = s.cli(&["operator", "revoke", "bob", "--reason", "left the company"]);
    assert!(out.status.success(), "{out:?}");
    let r = bob.call(&s, "GET", "/api/v1/devices", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);
}

/// The policy page shows the policy's history and what a version changed.
#[test]
fn the_policy_page_shows_the_history_and_each_versions_diff() {
    let s = Server::start();
    let file = s.root.join("next-policy.toml");
    let next = format!(
        "{}\n[[allow]]\nid = \"dashboard-diff-marker\"\nwho = \"group:backend\"\nsubscribe = [\"devices/+/status\"]\n",
        support::EXAMPLE_POLICY
    );
    std::fs::write(&file, next).unwrap();
    let out = s.cli(&["policy", "push", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let viewer = Browser::sign_in(&s, "viewer");
    let page = viewer.call(&s, "GET", "/dashboard/policy", &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("History"), "{}", page.body);
    assert!(
        page.body.contains("/dashboard/policy?diff=2"),
        "{}",
        page.body
    );
    let diff = viewer.call(&s, "GET", "/dashboard/policy?diff=2", &[]);
    assert_eq!(diff.status, 200);
    assert!(
        diff.body.contains("Version 2 against version 1"),
        "{}",
        diff.body
    );
    assert!(
        diff.body
            .contains(r#"<span class="diff-add">+id = &quot;dashboard-diff-marker&quot;</span>"#)
            || diff
                .body
                .contains(r#"<span class="diff-add">+id = "dashboard-diff-marker"</span>"#),
        "{}",
        diff.body
    );
    assert_dashboard_headers(&diff, "policy diff");
}
