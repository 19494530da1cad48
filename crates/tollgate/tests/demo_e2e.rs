//! `tollgate demo` end to end, as a newcomer runs it: within the first minute the robot on
//! vulnerable firmware is quarantined by compliance and the compromised scanner is detected
//! and quarantined; Ctrl-C stops the gateway gracefully and removes the data directory.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn the_demo_quarantines_the_vulnerable_and_the_compromised_device_within_a_minute_and_cleans_up() {
    let dir = support::temp_dir("demo");
    let mut child = Command::new(support::BIN)
        .args([
            "demo",
            "--devices",
            "16",
            "--admin-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let (mut compliance, mut detector, mut connected) = (false, false, false);
    while !(compliance && detector && connected) {
        let left = Duration::from_secs(120).saturating_sub(started.elapsed());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("not seen in time; stdout so far:\n{}", seen.join("\n"))
        });
        compliance |= line.contains("QUARANTINED globex-robot-03 by compliance")
            && line.contains("CVE-2021-23337");
        detector |= line.contains("QUARANTINED acme-scanner-04 by the detector")
            && line.contains("authorization_probing");
        connected |= line.contains("all 16 devices are connected");
        seen.push(line);
    }
    let text = seen.join("\n");
    assert!(text.contains("Admin API, dashboard"), "{text}");
    // The printed sign-in URL works: it becomes a session cookie.
    let url = seen
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("https://")
                .map(|u| format!("https://{u}"))
        })
        .unwrap_or_else(|| panic!("no sign-in URL:\n{text}"));
    assert!(url.contains("/dashboard/login?token="), "{url}");
    let out = Command::new("curl")
        .args(["-s", "-k", "-o", "/dev/null", "-D", "-", &url])
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(headers.contains("__Host-tollgate-session="), "{headers}");
    // The gateway's state agrees with the story (asked through the CLI, as the intro says).
    let list = Command::new(support::BIN)
        .args(["device", "show", "acme-scanner-04", "--data"])
        .arg(&dir)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{list:?}");
    assert!(shown.contains("quarantined"), "{shown}");
    // Ctrl-C: a graceful stop, and the directory is gone.
    let int = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(int.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("Removed"), "{stderr}");
    assert!(!dir.exists(), "the demo's directory is removed");
    // Only warnings or worse reach stderr from the gateway inside the demo.
    assert!(!stderr.contains(" INFO "), "{stderr}");
}
