//! Cross-check of the Merkle maths against an independent implementation: the tree heads,
//! inclusion proofs and consistency proofs this crate makes, for every tree size from 1 to 64
//! and twenty random larger ones, are checked by `independent_verify.py`, a stand-alone Python
//! verifier written from RFC 9162 (stdlib `hashlib` only) that computes the heads from the
//! entries itself. Deliberately corrupted proofs must be rejected by both; proofs with a
//! perturbed index or size must get the same verdict from both.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures
#![allow(clippy::too_many_arguments)] // one argument per field of a check line

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tollgate_audit::merkle::{
    self, consistency_proof, inclusion_proof, leaf_hash, verify_consistency, verify_inclusion,
    Frontier, Hash, MemoryTree,
};

/// What both verifiers must say about one check.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A genuine proof or head: both accept it.
    Ok,
    /// A corrupted one: both reject it.
    Bad,
    /// A perturbed index or size, which RFC 9162 does not always detect (a path of the same
    /// shape hashes the same way): both must give the same verdict.
    Agree,
}

struct Case {
    line: Value,
    expect: Expect,
    /// This crate's verdict.
    rust_ok: bool,
    what: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hexes(proof: &[Hash]) -> Vec<String> {
    proof.iter().map(|h| hex(h)).collect()
}

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Cases {
    tree: MemoryTree,
    roots: Vec<Hash>,
    cases: Vec<Case>,
}

impl Cases {
    fn inclusion(
        &mut self,
        leaf: &Hash,
        index: u64,
        size: u64,
        proof: &[Hash],
        root: &Hash,
        expect: Expect,
        what: String,
    ) {
        self.cases.push(Case {
            line: json!({
                "kind": "inclusion", "leaf": hex(leaf), "index": index, "size": size,
                "proof": hexes(proof), "root": hex(root),
            }),
            expect,
            rust_ok: verify_inclusion(leaf, index, size, proof, root).is_ok(),
            what,
        });
    }

    fn consistency(
        &mut self,
        old: u64,
        new: u64,
        r1: &Hash,
        r2: &Hash,
        proof: &[Hash],
        expect: Expect,
        what: String,
    ) {
        self.cases.push(Case {
            line: json!({
                "kind": "consistency", "old_size": old, "new_size": new,
                "old_root": hex(r1), "new_root": hex(r2), "proof": hexes(proof),
            }),
            expect,
            rust_ok: verify_consistency(old, new, r1, r2, proof).is_ok(),
            what,
        });
    }

    fn root(&mut self, size: u64) {
        let head = merkle::root(&self.tree, size).unwrap();
        let entries: Vec<String> = (0..size).map(|i| hex(&entry(i))).collect();
        self.cases.push(Case {
            line: json!({"kind": "root", "leaves": entries, "root": hex(&head)}),
            expect: Expect::Ok,
            rust_ok: true,
            what: format!("head of size {size}"),
        });
        if size > 0 {
            // One entry changed: the head no longer matches.
            let mut entries = entries;
            let i = (size / 2) as usize;
            entries[i] = hex(b"edited");
            self.cases.push(Case {
                line: json!({"kind": "root", "leaves": entries, "root": hex(&head)}),
                expect: Expect::Bad,
                rust_ok: false,
                what: format!("head of size {size} with entry {i} edited"),
            });
        }
    }

    fn all_inclusion(&mut self, index: u64, size: u64) {
        let root = self.roots[size as usize];
        let leaf = self.tree.leaves()[index as usize];
        let proof = inclusion_proof(&self.tree, index, size).unwrap();
        let at = format!("leaf {index} of {size}");
        self.inclusion(&leaf, index, size, &proof, &root, Expect::Ok, at.clone());

        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i][31] ^= 1;
            self.inclusion(
                &leaf,
                index,
                size,
                &bad,
                &root,
                Expect::Bad,
                format!("{at}, hash {i} flipped"),
            );
        }
        if let Some((_, short)) = proof.split_last() {
            self.inclusion(
                &leaf,
                index,
                size,
                short,
                &root,
                Expect::Bad,
                format!("{at}, one short"),
            );
        }
        let mut long = proof.clone();
        long.push(root);
        self.inclusion(
            &leaf,
            index,
            size,
            &long,
            &root,
            Expect::Bad,
            format!("{at}, one long"),
        );
        let other = leaf_hash(b"not an entry");
        self.inclusion(
            &other,
            index,
            size,
            &proof,
            &root,
            Expect::Bad,
            format!("{at}, wrong leaf"),
        );
        self.inclusion(
            &leaf,
            index,
            size,
            &proof,
            &other,
            Expect::Bad,
            format!("{at}, wrong root"),
        );
        self.inclusion(
            &leaf,
            index ^ 1,
            size,
            &proof,
            &root,
            Expect::Bad,
            format!("{at}, as index {}", index ^ 1),
        );
        self.inclusion(
            &leaf,
            size,
            size,
            &proof,
            &root,
            Expect::Bad,
            format!("{at}, index = size"),
        );
        for i in [
            index.wrapping_sub(1),
            index + 1,
            index ^ 2,
            index ^ 4,
            u64::MAX,
        ] {
            self.inclusion(
                &leaf,
                i,
                size,
                &proof,
                &root,
                Expect::Agree,
                format!("{at}, as index {i}"),
            );
        }
        for s in [size - 1, size + 1, size * 2, size / 2, size + 7, u64::MAX] {
            self.inclusion(
                &leaf,
                index,
                s,
                &proof,
                &root,
                Expect::Agree,
                format!("{at}, as size {s}"),
            );
        }
    }

    fn all_consistency(&mut self, old: u64, new: u64) {
        let (r1, r2) = (self.roots[old as usize], self.roots[new as usize]);
        let proof = consistency_proof(&self.tree, old, new).unwrap();
        let at = format!("{old} to {new}");
        self.consistency(old, new, &r1, &r2, &proof, Expect::Ok, at.clone());
        if old == 0 {
            return;
        }
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i][0] ^= 0x80;
            self.consistency(
                old,
                new,
                &r1,
                &r2,
                &bad,
                Expect::Bad,
                format!("{at}, hash {i} flipped"),
            );
        }
        if let Some((_, short)) = proof.split_last() {
            self.consistency(
                old,
                new,
                &r1,
                &r2,
                short,
                Expect::Bad,
                format!("{at}, one short"),
            );
        }
        let mut long = proof.clone();
        long.push(r2);
        self.consistency(
            old,
            new,
            &r1,
            &r2,
            &long,
            Expect::Bad,
            format!("{at}, one long"),
        );
        let other = leaf_hash(b"another head");
        self.consistency(
            old,
            new,
            &other,
            &r2,
            &proof,
            Expect::Bad,
            format!("{at}, wrong old head"),
        );
        self.consistency(
            old,
            new,
            &r1,
            &other,
            &proof,
            Expect::Bad,
            format!("{at}, wrong new head"),
        );
        if old != new {
            self.consistency(
                new,
                old,
                &r2,
                &r1,
                &proof,
                Expect::Bad,
                format!("{at}, backwards"),
            );
            self.consistency(
                old,
                new,
                &r2,
                &r1,
                &proof,
                Expect::Bad,
                format!("{at}, heads swapped"),
            );
            self.consistency(
                old,
                new,
                &r1,
                &r2,
                &[],
                Expect::Bad,
                format!("{at}, empty proof"),
            );
        }
        for (o, n) in [
            (old - 1, new),
            (old + 1, new),
            (old ^ 2, new),
            (old, new - 1),
            (old, new + 1),
            (old, new * 2),
            (old, u64::MAX),
        ] {
            self.consistency(
                o,
                n,
                &r1,
                &r2,
                &proof,
                Expect::Agree,
                format!("{at}, as {o} to {n}"),
            );
        }
    }
}

#[test]
fn proofs_and_heads_agree_with_an_independent_rfc_9162_verifier() {
    let mut rng = Rng(0x7011_6a7e_a0d1_7109);
    let mut random_sizes: Vec<u64> = (0..20).map(|_| 65 + rng.below(5000 - 65)).collect();
    random_sizes.extend([128, 1024, 4095, 4096, 4097]);
    let max = random_sizes.iter().copied().max().unwrap();

    let mut tree = MemoryTree::new();
    let mut frontier = Frontier::new();
    let mut roots = vec![frontier.root()];
    for i in 0..max {
        let leaf = leaf_hash(&entry(i));
        tree.push(leaf);
        frontier.push(leaf);
        roots.push(frontier.root());
    }
    for (size, head) in roots.iter().enumerate() {
        assert_eq!(
            *head,
            merkle::root(&tree, size as u64).unwrap(),
            "size {size}"
        );
    }
    let mut c = Cases {
        tree,
        roots,
        cases: Vec::new(),
    };

    c.root(0);
    for size in 1..=64u64 {
        c.root(size);
        for index in 0..size {
            c.all_inclusion(index, size);
        }
        for old in 0..=size {
            c.all_consistency(old, size);
        }
    }
    for &size in &random_sizes {
        c.root(size);
        let mut indices = vec![0, size - 1, size / 2];
        indices.extend((0..5).map(|_| rng.below(size)));
        for index in indices {
            c.all_inclusion(index, size);
        }
        let mut olds = vec![1, size - 1, size, size / 2 + 1];
        olds.extend((0..5).map(|_| 1 + rng.below(size)));
        for old in olds {
            c.all_consistency(old, size);
        }
    }

    // One Python process for every case.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/independent_verify.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 must be installed to run the independent cross-check");
    let mut input = String::new();
    for case in &c.cases {
        input.push_str(&case.line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "the verifier failed: {output:?}");
    let verdicts: Vec<&str> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(verdicts.len(), c.cases.len(), "one verdict per case");

    let (mut ok, mut bad, mut agreed, mut accepted_perturbed) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (case, verdict) in c.cases.iter().zip(&verdicts) {
        let python_ok = match *verdict {
            "ok" => true,
            "bad" => false,
            other => panic!("unexpected verdict {other:?} for {}", case.what),
        };
        let right = match case.expect {
            Expect::Ok => python_ok && case.rust_ok,
            Expect::Bad => !python_ok && !case.rust_ok,
            Expect::Agree => python_ok == case.rust_ok,
        };
        if !right {
            failures.push(format!(
                "{} ({:?}): python {verdict}, rust {}",
                case.what,
                case.expect,
                if case.rust_ok { "ok" } else { "bad" }
            ));
        }
        match case.expect {
            Expect::Ok => ok += 1,
            Expect::Bad => bad += 1,
            Expect::Agree => {
                agreed += 1;
                accepted_perturbed += usize::from(python_ok);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    eprintln!(
        "cross-checked {} cases: {ok} genuine accepted, {bad} corrupted rejected, {agreed} perturbed \
         with the same verdict ({accepted_perturbed} of them accepted by both)",
        c.cases.len()
    );
    assert!(ok > 4000 && bad > 20000);
}
