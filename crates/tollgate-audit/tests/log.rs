//! The log on disk: append, checkpoints, proofs, crash recovery, export, and the offline
//! verifier locating every kind of tampering.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code: a panic is a failure

use std::path::{Path, PathBuf};

use tollgate_audit::entry;
use tollgate_audit::log::{Log, CHECKPOINT, CHECKPOINTS, ENTRIES};
use tollgate_audit::merkle::{self, verify_consistency, verify_inclusion};
use tollgate_audit::note::{Signer, Verifier};
use tollgate_audit::verify::{verify_dir, ProblemKind, Report};
use tollgate_events::{Event, EventKind};

const ORIGIN: &str = "test.example/audit";

struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!(
            "tollgate-audit-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event(seq: u64) -> Vec<u8> {
    let mut e = Event::now(EventKind::ControlAction {
        action: "revoke_device".into(),
        subject: format!("dev-{seq}"),
        by: "test".into(),
        detail: "é \"quoted\" \\ tab\t".into(),
    });
    e.seq = seq;
    e.ts = format!("2026-12-01T00:{:02}:{:02}Z", seq / 60 % 60, seq % 60);
    entry::event(&e)
}

fn key() -> Vec<u8> {
    Signer::generate_pkcs8().unwrap()
}

fn verifier(k: &[u8]) -> Verifier {
    Signer::from_pkcs8(ORIGIN, k).unwrap().verifier()
}

/// A log of a log start and `n` events, a checkpoint every `every` events.
fn build(dir: &Path, k: &[u8], n: u64, every: u64) -> Log {
    let (mut log, opened) = Log::open(dir, ORIGIN, k, None).unwrap();
    assert_eq!(
        opened.entries, 1,
        "a new log starts with its log_start entry"
    );
    for s in 1..=n {
        log.append(&event(s)).unwrap();
        if s % every == 0 {
            log.checkpoint().unwrap();
        }
    }
    log.checkpoint().unwrap();
    log
}

fn lines(dir: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(dir.join(ENTRIES)).unwrap();
    let mut v: Vec<Vec<u8>> = b.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(v.pop(), Some(Vec::new()));
    v
}

fn write_lines(dir: &Path, v: &[Vec<u8>]) {
    let mut b = Vec::new();
    for l in v {
        b.extend_from_slice(l);
        b.push(b'\n');
    }
    std::fs::write(dir.join(ENTRIES), b).unwrap();
}

fn export(log: &mut Log, name: &str) -> Tmp {
    let t = Tmp::new(name);
    log.export(&t.0).unwrap();
    t
}

fn only(r: &Report, kind: ProblemKind) -> &tollgate_audit::verify::Problem {
    assert!(
        r.problems.iter().any(|p| p.kind == kind),
        "expected {kind:?}, got {:#?}",
        r.problems
    );
    r.problems.iter().find(|p| p.kind == kind).unwrap()
}

#[test]
fn proofs_from_the_files_verify_against_signed_checkpoints() {
    let d = Tmp::new("proofs");
    let k = key();
    let mut log = build(&d.0, &k, 300, 37);
    let v = verifier(&k);
    let c = log.latest().cloned().unwrap();
    assert_eq!(c.size, 301);
    let cp = tollgate_audit::note::Checkpoint::open(&c.note, &v).unwrap();
    assert_eq!(cp.root, c.root);
    assert_eq!(cp.origin, ORIGIN);
    for i in [0u64, 1, 2, 150, 299, 300] {
        let p = log.inclusion_proof(i, c.size).unwrap();
        let leaf = merkle::leaf_hash(&log.entry(i).unwrap());
        verify_inclusion(&leaf, i, c.size, &p, &c.root).unwrap();
    }
    for old in [1u64, 2, 37, 38, 100, 256, 300, 301] {
        let p = log.consistency_proof(old, c.size).unwrap();
        let old_root = log.root_at(old).unwrap();
        verify_consistency(old, c.size, &old_root, &c.root, &p).unwrap();
    }
    // Entries read back are the bytes appended.
    assert_eq!(log.entry(5).unwrap(), event(5));
    let page = log.entries_range(298, 10).unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[2], event(300));
}

#[test]
fn a_reopened_log_rehashes_and_continues_and_a_torn_last_line_is_cut() {
    let d = Tmp::new("reopen");
    let k = key();
    let root = {
        let log = build(&d.0, &k, 50, 10);
        log.root()
    };
    // A crash in the middle of writing an entry.
    let mut b = std::fs::read(d.0.join(ENTRIES)).unwrap();
    b.extend_from_slice(b"{\"seq\":51,\"ts\":\"2026");
    std::fs::write(d.0.join(ENTRIES), b).unwrap();
    let (mut log, opened) = Log::open(&d.0, ORIGIN, &k, None).unwrap();
    assert_eq!(opened.entries, 51);
    assert!(opened.torn_bytes > 0);
    assert!(opened.refusing.is_none());
    assert_eq!(log.root(), root);
    assert_eq!(log.last_seq(), Some(50));
    log.append(&event(51)).unwrap();
    log.checkpoint().unwrap();
    let x = export(&mut log, "reopen-x");
    let r = verify_dir(&x.0, &verifier(&k), None).unwrap();
    assert!(r.clean(), "{r:#?}");
    assert_eq!(r.entries, 52);
}

#[test]
fn a_log_shorter_than_what_it_signed_refuses_to_sign() {
    let d = Tmp::new("short");
    let k = key();
    drop(build(&d.0, &k, 40, 10));
    let mut v = lines(&d.0);
    v.truncate(30);
    write_lines(&d.0, &v);
    let (mut log, opened) = Log::open(&d.0, ORIGIN, &k, None).unwrap();
    let why = opened.refusing.unwrap();
    assert!(why.contains("truncated"), "{why}");
    assert!(log.checkpoint().is_err());
    // It still records (the evidence is kept).
    log.append(&event(41)).unwrap();
    log.sync().unwrap();
    // An edit is caught the same way.
    let d2 = Tmp::new("edited");
    drop(build(&d2.0, &k, 40, 10));
    let mut v = lines(&d2.0);
    v[7] = event(99);
    write_lines(&d2.0, &v);
    let (_, opened) = Log::open(&d2.0, ORIGIN, &k, None).unwrap();
    assert!(opened.refusing.unwrap().contains("edited"));
}

#[test]
fn the_offline_verifier_locates_every_kind_of_tampering() {
    let d = Tmp::new("tamper");
    let k = key();
    let v = verifier(&k);
    let mut log = build(&d.0, &k, 200, 20);
    let clean = export(&mut log, "clean");
    let kept = std::fs::read_to_string(clean.0.join(CHECKPOINT)).unwrap();
    let r = verify_dir(&clean.0, &v, None).unwrap();
    assert!(r.clean(), "{r:#?}");
    assert_eq!(r.entries, 201);
    assert!(r.checkpoints >= 10);

    let tampered = |name: &str, f: &dyn Fn(&mut Vec<Vec<u8>>)| -> Report {
        let t = Tmp::new(name);
        for f in [ENTRIES, CHECKPOINT, CHECKPOINTS] {
            std::fs::copy(clean.0.join(f), t.0.join(f)).unwrap();
        }
        let mut l = lines(&t.0);
        f(&mut l);
        write_lines(&t.0, &l);
        let r = verify_dir(&t.0, &v, None).unwrap();
        drop(t);
        r
    };

    // An edited entry (same seq): located to the checkpoint interval that holds it.
    let r = tampered("edit", &|l| {
        let s = String::from_utf8(l[45].clone())
            .unwrap()
            .replace("dev-45", "dev-46");
        l[45] = s.into_bytes();
    });
    let p = only(&r, ProblemKind::RootMismatch);
    assert_eq!((p.from, p.to), (Some(41), Some(61)), "{p:?}");
    // A deleted entry: located at its index.
    let r = tampered("delete", &|l| {
        l.remove(120);
    });
    assert_eq!(only(&r, ProblemKind::Sequence).index, Some(120));
    // Two entries swapped.
    let r = tampered("reorder", &|l| l.swap(77, 78));
    assert_eq!(only(&r, ProblemKind::Sequence).index, Some(77));
    // Truncated.
    let r = tampered("truncate", &|l| l.truncate(150));
    assert_eq!(only(&r, ProblemKind::Truncated).index, Some(150));
    // A line that is not an entry.
    let r = tampered("garbage", &|l| l[10] = b"rm -rf /".to_vec());
    assert_eq!(only(&r, ProblemKind::NotAnEntry).index, Some(10));

    // A forked log: the same key re-signed a different history (a compromised gateway). Only
    // the checkpoint the verifier kept from earlier reveals it.
    let f = Tmp::new("fork");
    let mut forked = {
        let (mut log, _) = Log::open(&f.0, ORIGIN, &k, None).unwrap();
        for s in 1..=220 {
            let e = if s == 33 { event(1_000) } else { event(s) };
            let e = if s == 33 {
                // Same seq, different content.
                String::from_utf8(e)
                    .unwrap()
                    .replace("\"seq\":1000", "\"seq\":33")
                    .replace("dev-1000", "dev-xx")
                    .into_bytes()
            } else {
                e
            };
            log.append(&e).unwrap();
        }
        log.checkpoint().unwrap();
        log
    };
    let fx = export(&mut forked, "fork-x");
    let r = verify_dir(&fx.0, &v, None).unwrap();
    assert!(r.clean(), "a fork is self-consistent: {r:#?}");
    let r = verify_dir(&fx.0, &v, Some(&kept)).unwrap();
    let p = only(&r, ProblemKind::Fork);
    assert_eq!(p.to, Some(201));

    // A checkpoint edited by hand no longer verifies.
    let t = Tmp::new("badcp");
    for f in [ENTRIES, CHECKPOINT] {
        std::fs::copy(clean.0.join(f), t.0.join(f)).unwrap();
    }
    let note = std::fs::read_to_string(t.0.join(CHECKPOINT)).unwrap();
    std::fs::write(t.0.join(CHECKPOINT), note.replacen("201", "200", 1)).unwrap();
    let r = verify_dir(&t.0, &v, None).unwrap();
    only(&r, ProblemKind::BadCheckpoint);

    // The wrong key: nothing verifies.
    let other = verifier(&key());
    let r = verify_dir(&clean.0, &other, None).unwrap();
    only(&r, ProblemKind::BadCheckpoint);
    // A trusted checkpoint that is not by this key is an error, not a finding.
    assert!(verify_dir(&clean.0, &other, Some(&kept)).is_err());
    // A missing file is an error.
    let empty = Tmp::new("empty");
    assert!(verify_dir(&empty.0, &v, None).is_err());
}

#[test]
fn rotation_starts_a_log_that_commits_to_the_previous_final_checkpoint() {
    let d = Tmp::new("rotate");
    let k = key();
    let mut new = build(&d.0, &k, 30, 10);
    let archive = d.0.join("archive-1");
    let last = new.rotate(&archive).unwrap();
    assert_eq!(last.size, 31);
    assert_eq!(new.size(), 1);
    let first = new.entry(0).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(v["type"], "log_start");
    assert_eq!(v["previous"]["size"], 31);
    assert_eq!(v["previous"]["checkpoint"], last.note.as_str());
    // The archive verifies on its own.
    let r = verify_dir(&archive, &verifier(&k), None).unwrap();
    assert!(r.clean(), "{r:#?}");
    assert_eq!(r.entries, 31);
    new.append(&event(31)).unwrap();
    new.checkpoint().unwrap();
    let x = export(&mut new, "rotate-x");
    assert!(verify_dir(&x.0, &verifier(&k), None).unwrap().clean());
}

#[test]
fn gap_entries_keep_the_numbering_whole() {
    let d = Tmp::new("gaps");
    let k = key();
    let (mut log, _) = Log::open(&d.0, ORIGIN, &k, None).unwrap();
    log.append(&event(1)).unwrap();
    log.append(&entry::gap("t", 2, 9, entry::GAP_QUEUE_FULL))
        .unwrap();
    log.append(&event(10)).unwrap();
    log.checkpoint().unwrap();
    assert_eq!(log.last_seq(), Some(10));
    let x = export(&mut log, "gaps-x");
    let r = verify_dir(&x.0, &verifier(&k), None).unwrap();
    assert!(r.clean(), "{r:#?}");
}
