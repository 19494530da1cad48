//! Check for the `compliance` fuzz target: arbitrary bytes as every document the compliance
//! crate reads — an SBOM (`Sbom::parse`, then its minimum elements and an assessment), a VEX
//! document (`vex::parse`), an OSV record (`Advisory::parse`, then indexing and matching), a
//! compliance profile (`Profile::parse`), a package URL, and two version strings per ecosystem
//! with a constraint.
//!
//! Shared by `fuzz/fuzz_targets/compliance.rs` (libFuzzer) and
//! `crates/tollgate-compliance/tests/fuzz_corpus.rs` (replays `fuzz/corpus/compliance/` on
//! stable), so it uses nothing but `tollgate-compliance`. Every broken invariant panics. See
//! docs/fuzzing.md.
//!
//! The invariants:
//! * every error renders to a non-empty message; profile errors each start with the file name
//!   and a 1-based line and column;
//! * an SBOM that parses reports at most 5 examples per missing element and is assessed with
//!   one entry per component at most;
//! * an OSV record that parses has an id, indexes once (a second insert of the same bytes is
//!   `Unchanged`), and matching never panics, for versions present, absent and odd;
//! * a profile that parses has unique rule ids;
//! * version comparison is antisymmetric where both orders parse.

use tollgate_compliance::osv::{Advisory, Index, Inserted};
use tollgate_compliance::profile::Profile;
use tollgate_compliance::purl::Package;
use tollgate_compliance::sbom::Sbom;
use tollgate_compliance::{evaluate, purl, version, vex};

const ECOSYSTEMS: [&str; 9] = [
    "SemVer",
    "npm",
    "crates.io",
    "Go",
    "PyPI",
    "Debian",
    "Alpine",
    "Maven",
    "RubyGems",
];

/// Feed `data` to every reader; panics on any broken invariant.
pub fn check(data: &[u8]) {
    let index = match Advisory::parse(data, "fuzz") {
        Ok(a) => check_advisory(a, data),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            Index::default()
        }
    };
    match Sbom::parse(data) {
        Ok(s) => {
            for g in s.minimum_elements() {
                assert!(!g.element.is_empty());
                assert!(g.examples.len() <= 5, "{g:?}");
                assert!(g.missing >= g.examples.len(), "{g:?}");
            }
            let a = evaluate::assess(&s, &index, &[]);
            assert_eq!(a.components, s.components.len());
            assert!(a.indeterminate.len() <= s.components.len());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match vex::parse(data) {
        Ok(d) => assert!(!d.format.is_empty()),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Profile::parse(text, "fuzz.toml") {
        Ok(p) => {
            let mut ids: Vec<&str> = p.rules.iter().map(|r| r.id.as_str()).collect();
            ids.sort_unstable();
            let n = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), n, "duplicate rule ids accepted");
        }
        Err(e) => {
            for line in e.to_string().lines() {
                let rest = line
                    .strip_prefix("fuzz.toml:")
                    .unwrap_or_else(|| panic!("no file name: {line}"));
                let mut parts = rest.splitn(3, ':');
                let l: usize = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                let c: usize = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                // A file over the size limit is refused as a whole, without a position.
                if !line.contains("over the limit") {
                    assert!(l >= 1 && c >= 1, "no line and column: {line}");
                }
            }
        }
    }
    if let Err(e) = purl::package(text) {
        assert!(!e.to_string().is_empty());
    }
    let (a, b) = text.split_once('\n').unwrap_or((text, "1.0.0"));
    for eco in ECOSYSTEMS {
        if let (Ok(ab), Ok(ba)) = (version::compare(eco, a, b), version::compare(eco, b, a)) {
            assert_eq!(ab, ba.reverse(), "{eco}: {a:?} vs {b:?}");
        }
        if let Ok(c) = version::Constraint::parse(a) {
            let _ = c.matches(eco, b);
            assert!(!c.to_string().is_empty());
        }
    }
}

fn check_advisory(a: Advisory, data: &[u8]) -> Index {
    assert!(!a.id.is_empty());
    let keys = a.keys();
    let mut index = Index::default();
    let first = index.insert(a, data);
    assert!(matches!(first, Inserted::Added { .. }), "{first:?}");
    if let Ok(again) = Advisory::parse(data, "fuzz") {
        assert_eq!(index.insert(again, data), Inserted::Unchanged);
    }
    assert_eq!(index.len(), 1);
    assert!(index.digest().starts_with("sha256:"));
    for key in keys.into_iter().take(8) {
        for version in [
            Some("0"),
            Some("1.0.0"),
            Some("1:2.3-4~rc1"),
            Some("v1.2.3+x"),
            Some(""),
            None,
        ] {
            for release in [None, Some("12")] {
                let pkg = Package {
                    key: key.clone(),
                    version: version.map(str::to_owned),
                    release: release.map(str::to_owned),
                };
                for hit in index.affecting(&pkg) {
                    assert!(!hit.id.is_empty());
                }
            }
        }
    }
    index
}
