//! The audit log end to end, on the real binary's data: an export verifies elsewhere with
//! only the public key; each kind of tampering with it is detected and located by the offline
//! verifier (exit 1), key and format problems are exit 2; a restored backup shows as a fork
//! against a checkpoint kept from earlier; a log truncated on disk refuses to sign and says so;
//! and revocations are written ahead: SIGKILL at random moments never leaves one in effect
//! without its entry, nor loses an entry it acknowledged.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, BIN};

/// A fresh, existing temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    let d = support::temp_dir(tag);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tollgate audit verify --export DIR --key KEY [--trusted-checkpoint F] --json`, run from
/// an unrelated directory with no server and no data directory in reach.
fn verify_offline(dir: &Path, key: &str, trusted: Option<&Path>) -> (i32, Value) {
    let elsewhere = temp_dir("verifier");
    let mut c = Command::new(BIN);
    c.current_dir(&elsewhere)
        .env_remove("TOLLGATE_DATA")
        .args(["audit", "verify", "--json", "--export"])
        .arg(dir)
        .args(["--key", key]);
    if let Some(t) = trusted {
        c.arg("--trusted-checkpoint").arg(t);
    }
    let out = c.output().unwrap();
    let _ = std::fs::remove_dir_all(&elsewhere);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

fn export(s: &Server, to: &Path) {
    ok(
        &s.cli(&["audit", "export", to.to_str().unwrap()]),
        "audit export",
    );
}

fn key(s: &Server) -> String {
    ok(&s.cli(&["audit", "key"]), "audit key").trim().to_owned()
}

/// A copy of an export with its entries rewritten by `f`.
fn tampered(clean: &Path, name: &str, f: impl Fn(&mut Vec<String>)) -> PathBuf {
    let d = temp_dir(name);
    for n in ["entries.jsonl", "checkpoint", "checkpoints.jsonl"] {
        std::fs::copy(clean.join(n), d.join(n)).unwrap();
    }
    let text = std::fs::read_to_string(d.join("entries.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(d.join("entries.jsonl"), out).unwrap();
    d
}

fn problem<'a>(v: &'a Value, kind: &str) -> &'a Value {
    v["problems"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["kind"] == kind))
        .unwrap_or_else(|| panic!("expected a {kind} problem: {v:#}"))
}

fn index_of(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no entry contains {needle}"))
}

#[test]
fn an_export_verifies_elsewhere_with_only_the_key_and_every_tampering_is_located() {
    let s = Server::start();
    let devs: Vec<_> = (0..6)
        .map(|i| s.add_device(&format!("d{i}"), &[]))
        .collect();
    // Data-plane events too: accepted connections and a denial.
    let out = s.mosquitto_pub(&devs[1], &["-t", "not/allowed", "-m", "x", "-q", "1"]);
    let _ = out;
    s.revoke("d0");
    let clean = temp_dir("export");
    export(&s, &clean);
    let k = key(&s);
    assert!(k.contains("/tollgate-audit+"), "{k}");
    let (code, v) = verify_offline(&clean, &k, None);
    assert_eq!(code, 0, "{v:#}");
    let n = v["entries"].as_u64().unwrap();
    assert!(n >= 15, "{v:#}");
    let lines: Vec<String> = std::fs::read_to_string(clean.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len() as u64, n);
    // The revocation and its write-ahead entry are there, in that order.
    let wa = index_of(&lines, r#""action":"revoke_device","subject":"d0""#);
    let done = index_of(&lines, r#""type":"device_revoked","device":"d0""#);
    assert!(wa < done);

    // Anyone can re-check it in a few lines of another language: the documented Python
    // verifier (standard library for the hashes, `cryptography` for the signature if present).
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/examples/verify_export.py"
    );
    let py = |dir: &Path| {
        Command::new("python3")
            .arg(script)
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = py(&clean);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Edit one entry (the revocation's reason), keeping it valid JSON with the same seq.
    let d = tampered(&clean, "edit", |l| {
        l[done] = l[done].replace(r#""reason":"test""#, r#""reason":"none""#)
    });
    let (code, v) = verify_offline(&d, &k, None);
    assert_eq!(code, 1, "{v:#}");
    assert!(
        !py(&d).status.success(),
        "the Python verifier sees the edit too"
    );
    let p = problem(&v, "root_mismatch");
    let (from, to) = (p["from"].as_u64().unwrap(), p["to"].as_u64().unwrap());
    assert!(from <= done as u64 && (done as u64) < to, "{p:#} vs {done}");
    // Delete an entry.
    let d = tampered(&clean, "delete", |l| {
        l.remove(wa);
    });
    let (code, v) = verify_offline(&d, &k, None);
    assert_eq!(code, 1);
    assert_eq!(problem(&v, "sequence")["index"], wa as u64);
    // Reorder: the revocation before its write-ahead entry.
    let d = tampered(&clean, "reorder", |l| l.swap(wa, done));
    let (code, v) = verify_offline(&d, &k, None);
    assert_eq!(code, 1);
    assert_eq!(problem(&v, "sequence")["index"], wa as u64);
    // Truncate.
    let d = tampered(&clean, "truncate", |l| l.truncate(l.len() - 3));
    let (code, v) = verify_offline(&d, &k, None);
    assert_eq!(code, 1);
    assert_eq!(problem(&v, "truncated")["index"], n - 3);
    // A checkpoint edited.
    let d = tampered(&clean, "checkpoint", |_| {});
    let note = std::fs::read_to_string(d.join("checkpoint")).unwrap();
    let mut parts: Vec<&str> = note.splitn(3, '\n').collect();
    let bumped = (parts[1].parse::<u64>().unwrap() - 1).to_string();
    parts[1] = &bumped;
    std::fs::write(d.join("checkpoint"), parts.join("\n")).unwrap();
    let (code, v) = verify_offline(&d, &k, None);
    assert_eq!(code, 1);
    problem(&v, "bad_checkpoint");

    // Key and format problems: exit 2.
    let (code, _) = verify_offline(&clean, "not-a-key", None);
    assert_eq!(code, 2);
    let (code, _) = verify_offline(&clean.join("nowhere"), &k, None);
    assert_eq!(code, 2);
    let bad_trusted = clean.join("not-a-note");
    std::fs::write(&bad_trusted, "hello\n").unwrap();
    let (code, _) = verify_offline(&clean, &k, Some(&bad_trusted));
    assert_eq!(code, 2);

    // The online verification of the live log agrees, and proofs come out in both forms.
    let out = s.cli(&["audit", "verify"]);
    assert!(ok(&out, "audit verify").contains("verified"));
    let text = ok(
        &s.cli(&["audit", "proof", "--index", &done.to_string()]),
        "proof",
    );
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex "), "{text}");
    let (code, v) = s.admin_api(
        "GET",
        &format!("/api/v1/audit/proof/inclusion?index={done}"),
        None,
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["proof"].as_array().is_some_and(|p| !p.is_empty()));
    let (code, v) = s.admin_api("GET", "/api/v1/audit/proof/consistency?from_size=3", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["old_size"], 3);
    // Bad requests are 400s, not failures.
    let (code, _) = s.admin_api("GET", "/api/v1/audit/proof/inclusion?index=999999", None);
    assert_eq!(code, 400);
    let (code, _) = s.admin_api("GET", "/api/v1/audit/proof/inclusion?index=x", None);
    assert_eq!(code, 400);
}

#[test]
fn a_restored_backup_is_a_fork_and_a_truncated_log_refuses_to_sign() {
    let mut s = Server::start();
    s.add_device("a1", &[]);
    s.stop();
    let backup = temp_dir("backup");
    let audit_dir = s.data.join("audit");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&audit_dir)
        .arg(backup.join("audit"))
        .status()
        .unwrap()
        .success());
    s.spawn();
    s.add_device("a2", &[]);
    s.revoke("a2");
    let first = temp_dir("first");
    export(&s, &first);
    let k = key(&s);
    let kept = first.join("checkpoint");
    // The gateway is restored from the backup and goes on: a different history.
    s.stop();
    std::fs::remove_dir_all(&audit_dir).unwrap();
    assert!(Command::new("cp")
        .arg("-a")
        .arg(backup.join("audit"))
        .arg(&audit_dir)
        .status()
        .unwrap()
        .success());
    s.spawn();
    for i in 0..6 {
        s.add_device(&format!("b{i}"), &[]);
    }
    let second = temp_dir("second");
    export(&s, &second);
    let (code, v) = verify_offline(&second, &k, None);
    assert_eq!(code, 0, "on its own the restored log is consistent: {v:#}");
    let (code, v) = verify_offline(&second, &k, Some(&kept));
    assert_eq!(code, 1, "{v:#}");
    problem(&v, "fork");

    // Entries cut off on disk while the server is down: it refuses to sign, and says so.
    s.stop();
    let entries = audit_dir.join("entries.jsonl");
    let text = std::fs::read_to_string(&entries).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines[..lines.len() - 4].join("\n") + "\n";
    std::fs::write(&entries, keep).unwrap();
    s.spawn();
    let e = s.wait_event("audit_log_inconsistent", |e| {
        e["type"] == "audit_log_inconsistent"
    });
    assert!(e["reason"].as_str().unwrap().contains("truncated"), "{e}");
    let (code, v) = s.admin_api("POST", "/api/v1/audit/checkpoint", None);
    assert_eq!(code, 409, "{v}");
    let out = s.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    // It still records.
    s.add_device("c1", &[]);
}

#[test]
fn rotation_archives_a_verifiable_log_and_the_new_one_commits_to_it() {
    let s = Server::start();
    s.add_device("x1", &[]);
    let out = ok(&s.cli(&["audit", "rotate"]), "audit rotate");
    assert!(out.contains("archived"), "{out}");
    let archives: Vec<_> = std::fs::read_dir(s.data.join("audit/archive"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(archives.len(), 1);
    let k = key(&s);
    let (code, v) = verify_offline(&archives[0], &k, None);
    assert_eq!(code, 0, "{v:#}");
    s.add_device("x2", &[]);
    let (code, v) = s.admin_api("GET", "/api/v1/audit/entries?from=0&limit=1", None);
    assert_eq!(code, 200);
    let first = &v["entries"][0]["entry"];
    assert_eq!(first["type"], "log_start");
    let archived_cp = std::fs::read_to_string(archives[0].join("checkpoint")).unwrap();
    assert_eq!(first["previous"]["checkpoint"], archived_cp.as_str());
    let now = temp_dir("after-rotate");
    export(&s, &now);
    let (code, v) = verify_offline(&now, &k, None);
    assert_eq!(code, 0, "{v:#}");
}

/// All `control_action` revoke entries in the live log, by device.
fn written_ahead(s: &Server) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from = 0u64;
    loop {
        let (code, v) = s.admin_api(
            "GET",
            &format!("/api/v1/audit/entries?from={from}&limit=10000"),
            None,
        );
        assert_eq!(code, 200, "{v}");
        let list = v["entries"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return out;
        }
        for e in &list {
            let e = &e["entry"];
            if e["type"] == "control_action" && e["action"] == "revoke_device" {
                out.insert(e["subject"].as_str().unwrap().to_owned());
            }
        }
        from += list.len() as u64;
    }
}

#[test]
fn sigkill_during_revocations_never_leaves_one_without_its_entry() {
    let mut s = Server::start();
    let (rounds, per_worker) = (4, 10);
    let n = rounds * 2 * per_worker;
    for i in 0..n {
        s.add_device(&format!("r{i:02}"), &[]);
    }
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut next = 0;
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut interrupted = 0;
    for round in 0..rounds {
        // Two clients revoke one device after another; the server is killed meanwhile.
        let mut workers = Vec::new();
        for w in 0..2 {
            let ids: Vec<String> = (0..per_worker)
                .map(|j| format!("r{:02}", next + w * per_worker + j))
                .collect();
            let data = s.data.clone();
            let acked = Arc::clone(&acknowledged);
            workers.push(std::thread::spawn(move || {
                for id in ids {
                    let out = Command::new(BIN)
                        .args(["device", "revoke", &id, "--reason", "sigkill test"])
                        .arg("--data")
                        .arg(&data)
                        .output()
                        .unwrap();
                    if out.status.success() {
                        acked.lock().unwrap().insert(id);
                    }
                }
            }));
        }
        next += 2 * per_worker;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Each revocation takes a few tens of milliseconds: this lands inside the stream.
        let wait = Duration::from_millis(40 + seed % 300);
        let t0 = Instant::now();
        while t0.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(10));
        }
        s.kill9();
        for w in workers {
            w.join().unwrap();
        }
        s.spawn();
        let logged = written_ahead(&s);
        let (code, v) = s.admin_api("GET", "/api/v1/devices", None);
        assert_eq!(code, 200);
        let revoked: BTreeSet<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["state"] == "revoked")
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        let missing: Vec<_> = revoked.difference(&logged).collect();
        assert!(
            missing.is_empty(),
            "round {round}: revoked without an audit entry: {missing:?}"
        );
        let acked = acknowledged.lock().unwrap().clone();
        let lost: Vec<_> = acked.difference(&logged).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but not logged: {lost:?}"
        );
        eprintln!(
            "round {round}: killed after {wait:?}; {} acknowledged, {} revoked, {} written ahead (of {next} asked so far)",
            acked.len(),
            revoked.len(),
            logged.len()
        );
        if acked.len() < next {
            interrupted += 1;
        }
    }
    assert!(
        interrupted >= 2,
        "the kills must land in the middle of the stream of revocations"
    );
    // And the log as a whole still verifies after four crashes.
    let out = s.cli(&["audit", "verify"]);
    assert!(ok(&out, "audit verify").contains("verified"));
}
