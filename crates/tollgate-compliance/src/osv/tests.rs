//! Matching, index and reading tests over fixtures written here (ids and ranges are real
//! advisory facts; the JSON around them is ours).

use super::*;
use crate::purl::package;

fn adv(json: &str) -> Advisory {
    Advisory::parse(json.as_bytes(), "test").unwrap_or_else(|e| panic!("{e}"))
}

fn pkg(purl: &str) -> Package {
    package(purl).unwrap_or_else(|e| panic!("{e}"))
}

const URLLIB3_PYSEC: &str = r#"{
  "id": "PYSEC-2021-108", "modified": "2021-06-30T00:00:00Z", "published": "2021-06-29T11:15:00Z",
  "aliases": ["CVE-2021-33503", "GHSA-q2q7-5pp4-w6pg"],
  "summary": "urllib3 ReDoS in the authority part of a URL",
  "affected": [{ "package": {"ecosystem": "PyPI", "name": "urllib3"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.26.5"}]}],
    "versions": ["1.26.4"] }],
  "some_future_field": {"ignored": [1, 2, 3]}
}"#;

const URLLIB3_GHSA: &str = r#"{
  "id": "GHSA-q2q7-5pp4-w6pg", "modified": "2021-07-01T00:00:00Z",
  "aliases": ["CVE-2021-33503"],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
  "database_specific": {"severity": "HIGH"},
  "affected": [{ "package": {"ecosystem": "PyPI", "name": "urllib3"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.25.4"}, {"fixed": "1.26.5"}]}] }]
}"#;

const URLLIB3_CVE: &str = r#"{
  "id": "CVE-2021-33503", "modified": "2021-07-02T00:00:00Z",
  "affected": [{ "package": {"ecosystem": "PyPI", "name": "URLLib3"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.26.5"}]}] }]
}"#;

fn range_record(events: &str) -> Advisory {
    adv(&format!(
        r#"{{"id": "TEST-1", "modified": "2024-01-01T00:00:00Z",
        "affected": [{{"package": {{"ecosystem": "PyPI", "name": "demo"}},
        "ranges": [{{"type": "ECOSYSTEM", "events": {events}}}]}}]}}"#
    ))
}

fn at(a: &Advisory, v: &str) -> Match {
    a.check(&pkg(&format!("pkg:pypi/demo@{v}")))
}

fn affected(fixed: Option<&str>) -> Match {
    Match::Affected {
        fixed: fixed.map(str::to_string),
    }
}

#[test]
fn urllib3_pysec_2021_108_matches_below_1_26_5() {
    let a = adv(URLLIB3_PYSEC);
    assert_eq!(a.keys(), vec![osv_key("PyPI", "urllib3").0]);
    assert_eq!(
        a.check(&pkg("pkg:pypi/urllib3@1.26.4")),
        affected(Some("1.26.5"))
    );
    assert_eq!(a.check(&pkg("pkg:pypi/urllib3@1.26.5")), Match::NotAffected);
    assert_eq!(a.check(&pkg("pkg:pypi/requests@1.0")), Match::NotAffected);
}

#[test]
fn introduced_fixed_pairs_and_introduced_zero() {
    let a = range_record(
        r#"[{"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"}, {"fixed": "2.5"}]"#,
    );
    assert_eq!(at(&a, "0.1"), affected(Some("1.0")));
    assert_eq!(at(&a, "1.0"), Match::NotAffected);
    assert_eq!(at(&a, "1.5"), Match::NotAffected);
    assert_eq!(at(&a, "2.0"), affected(Some("2.5")));
    assert_eq!(at(&a, "2.4.9"), affected(Some("2.5")));
    assert_eq!(at(&a, "2.5"), Match::NotAffected);
    assert_eq!(at(&a, "3.0"), Match::NotAffected);
    // Event order in the record does not matter: events are sorted by version.
    let b = range_record(r#"[{"fixed": "2.5"}, {"introduced": "2.0"}]"#);
    assert_eq!(at(&b, "2.1"), affected(Some("2.5")));
    assert_eq!(at(&b, "1.9"), Match::NotAffected);
}

#[test]
fn last_affected_is_inclusive_and_limit_is_an_upper_bound() {
    let a = range_record(r#"[{"introduced": "1.0"}, {"last_affected": "1.4"}]"#);
    assert_eq!(at(&a, "1.4"), affected(None));
    assert_eq!(at(&a, "1.4.1"), Match::NotAffected);
    assert_eq!(at(&a, "0.9"), Match::NotAffected);
    let b = range_record(r#"[{"introduced": "0"}, {"limit": "3.0"}]"#);
    assert_eq!(at(&b, "2.9"), affected(None));
    assert_eq!(at(&b, "3.0"), Match::NotAffected);
    let c = range_record(r#"[{"introduced": "1.0"}]"#);
    assert_eq!(at(&c, "99"), affected(None));
    assert_eq!(at(&c, "0.1"), Match::NotAffected);
}

#[test]
fn semver_ranges_use_semver_order() {
    let a = adv(
        r#"{"id": "GHSA-test-semv-er00", "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "Go", "name": "golang.org/x/net"},
        "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.7.0"}]}]}]}"#,
    );
    assert_eq!(
        a.check(&pkg("pkg:golang/golang.org/x/net@v0.6.0")),
        affected(Some("0.7.0"))
    );
    assert_eq!(
        a.check(&pkg("pkg:golang/golang.org/x/net@v0.7.0")),
        Match::NotAffected
    );
}

#[test]
fn versions_only_and_git_ranges_count_through_versions() {
    let a = adv(r#"{"id": "OSV-2020-1", "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "demo"},
        "ranges": [{"type": "GIT", "repo": "https://example.invalid/demo",
                    "events": [{"introduced": "abc123"}, {"fixed": "def456"}]}],
        "versions": ["1.2", "1.3"]}]}"#);
    assert_eq!(at(&a, "1.2"), affected(None));
    assert_eq!(at(&a, "1.2.0"), affected(None));
    assert_eq!(at(&a, "1.4"), Match::NotAffected);
    let b = adv(r#"{"id": "OSV-2020-2", "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "demo"}, "versions": ["0.9"]}]}"#);
    assert_eq!(at(&b, "0.9"), affected(None));
    assert_eq!(at(&b, "1.0"), Match::NotAffected);
}

#[test]
fn missing_and_unparseable_versions_are_indeterminate() {
    let a = adv(URLLIB3_PYSEC);
    assert!(matches!(
        a.check(&pkg("pkg:pypi/urllib3")),
        Match::Indeterminate { .. }
    ));
    assert!(matches!(
        a.check(&pkg("pkg:pypi/urllib3@not.a.version!")),
        Match::Indeterminate { .. }
    ));
    let mut idx = Index::default();
    idx.insert(a, URLLIB3_PYSEC.as_bytes());
    let hits = idx.affecting(&pkg("pkg:pypi/urllib3"));
    assert_eq!(hits.len(), 1);
    assert!(hits.first().is_some_and(|h| h.indeterminate.is_some()));
}

#[test]
fn withdrawn_records_never_match() {
    let a = adv(
        r#"{"id": "GHSA-xxxx-yyyy-zzzz", "modified": "2024-01-01T00:00:00Z",
        "withdrawn": "2024-02-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "demo"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}"#,
    );
    assert_eq!(at(&a, "1.0"), Match::NotAffected);
    assert_eq!(a.check(&pkg("pkg:pypi/demo")), Match::NotAffected);
    let mut idx = Index::default();
    idx.insert(a, b"withdrawn");
    assert!(idx.affecting(&pkg("pkg:pypi/demo@1.0")).is_empty());
}

#[test]
fn debian_release_scoping() {
    // DSA-5417-1 (openssl, bookworm) fixed in 3.0.9-1; the record is scoped to Debian:12.
    let a = adv(
        r#"{"id": "DSA-5417-1", "modified": "2023-06-01T00:00:00Z", "aliases": ["CVE-2023-2650"],
        "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.9-1"}]}]}]}"#,
    );
    let bookworm = pkg("pkg:deb/debian/libssl3@3.0.8-1?upstream=openssl&distro=debian-12");
    assert_eq!(a.check(&bookworm), affected(Some("3.0.9-1")));
    let bullseye = pkg("pkg:deb/debian/libssl3@3.0.8-1?upstream=openssl&distro=bullseye");
    assert_eq!(a.check(&bullseye), Match::NotAffected);
    let unscoped = pkg("pkg:deb/debian/openssl@3.0.8-1");
    assert_eq!(a.check(&unscoped), Match::NotAffected);
    let fixed = pkg("pkg:deb/debian/openssl@3.0.9-1?distro=bookworm");
    assert_eq!(a.check(&fixed), Match::NotAffected);
}

#[test]
fn aliases_merge_cve_ghsa_and_pysec_into_one_hit() {
    let mut idx = Index::default();
    for r in [URLLIB3_PYSEC, URLLIB3_GHSA, URLLIB3_CVE] {
        let out = idx.insert(adv(r), r.as_bytes());
        assert!(matches!(out, Inserted::Added { .. }));
    }
    assert_eq!(idx.len(), 3);
    let hits = idx.affecting(&pkg("pkg:pypi/urllib3@1.26.4"));
    assert_eq!(hits.len(), 1, "{hits:?}");
    let h = hits.first().cloned().unwrap_or_else(|| panic!("no hit"));
    assert_eq!(h.id, "CVE-2021-33503");
    assert_eq!(h.aliases, vec!["GHSA-q2q7-5pp4-w6pg", "PYSEC-2021-108"]);
    assert_eq!(h.fixed.as_deref(), Some("1.26.5"));
    assert_eq!(h.indeterminate, None);
    let sev = h.severity.unwrap_or_else(|| panic!("no severity"));
    assert_eq!(sev.level, Severity::High);
    assert_eq!(sev.score, Some(7.5));
    assert_eq!(sev.source, "CVSS_V3");
    assert!(idx.affecting(&pkg("pkg:pypi/urllib3@1.26.5")).is_empty());
    assert_eq!(
        idx.get("GHSA-q2q7-5pp4-w6pg").map(|a| a.id.as_str()),
        Some("GHSA-q2q7-5pp4-w6pg")
    );
    assert!(idx.get("CVE-2021-33503").is_some());
    assert!(idx.get("CVE-0000-0000").is_none());
}

#[test]
fn severity_falls_back_to_database_specific_then_ecosystem_specific() {
    let a = adv(
        r#"{"id": "GHSA-aaaa-bbbb-cccc", "modified": "2024-01-01T00:00:00Z",
        "database_specific": {"severity": "MODERATE"}, "affected": []}"#,
    );
    let s = a.severity.unwrap_or_else(|| panic!("none"));
    assert_eq!(
        (s.level, s.source.as_str()),
        (Severity::Medium, "database_specific")
    );
    let b = adv(r#"{"id": "X-1", "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "demo"}, "versions": ["1"],
                      "ecosystem_specific": {"severity": "critical"}}]}"#);
    assert_eq!(b.severity.map(|s| s.level), Some(Severity::Critical));
    let c = adv(r#"{"id": "X-2", "modified": "2024-01-01T00:00:00Z",
        "severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]}"#);
    let s = c.severity.unwrap_or_else(|| panic!("none"));
    assert_eq!(
        (s.level, s.source.as_str()),
        (Severity::Critical, "CVSS_V4")
    );
}

#[test]
fn insert_is_incremental_by_modified() {
    let mut idx = Index::default();
    let v1 = r#"{"id": "TEST-9", "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "old-name"}, "versions": ["1"]}]}"#;
    let v2 = r#"{"id": "TEST-9", "modified": "2024-03-01T00:00:00+01:00",
        "affected": [{"package": {"ecosystem": "PyPI", "name": "new_name"}, "versions": ["1"]}]}"#;
    assert_eq!(
        idx.insert(adv(v1), v1.as_bytes()),
        Inserted::Added {
            keys: vec![osv_key("PyPI", "old-name").0]
        }
    );
    let d1 = idx.digest();
    assert_eq!(idx.insert(adv(v1), v1.as_bytes()), Inserted::Unchanged);
    assert_eq!(idx.digest(), d1);
    let out = idx.insert(adv(v2), v2.as_bytes());
    assert_eq!(
        out,
        Inserted::Updated {
            keys: vec![osv_key("PyPI", "new-name").0, osv_key("PyPI", "old-name").0]
        }
    );
    assert_eq!(out.keys().len(), 2);
    assert_ne!(idx.digest(), d1);
    assert!(idx.digest().starts_with("sha256:"));
    // An older record after a newer one changes nothing.
    assert_eq!(idx.insert(adv(v1), v1.as_bytes()), Inserted::Unchanged);
    assert_eq!(idx.len(), 1);
    assert!(idx.affecting(&pkg("pkg:pypi/old-name@1")).is_empty());
    assert_eq!(idx.affecting(&pkg("pkg:pypi/New.Name@1")).len(), 1);
    // The digest does not depend on insertion order.
    let mut a = Index::default();
    let mut b = Index::default();
    for r in [URLLIB3_PYSEC, URLLIB3_GHSA] {
        a.insert(adv(r), r.as_bytes());
    }
    for r in [URLLIB3_GHSA, URLLIB3_PYSEC] {
        b.insert(adv(r), r.as_bytes());
    }
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.advisories().count(), 2);
    assert!(!a.is_empty());
}

#[test]
fn hostile_records_are_errors_not_panics() {
    let truncated = &URLLIB3_GHSA.as_bytes()[..URLLIB3_GHSA.len() / 2];
    assert!(Advisory::parse(truncated, "t").is_err());
    let deep = format!(
        r#"{{"id": "DEEP-1", "modified": "2024-01-01T00:00:00Z", "database_specific": {}{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let e = Advisory::parse(deep.as_bytes(), "deep.json")
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("deep.json"), "{e}");
    let big = vec![b' '; usize::try_from(MAX_RECORD_BYTES).unwrap_or(0) + 1];
    assert!(matches!(
        Advisory::parse(&big, "big"),
        Err(ComplianceError::TooLarge { .. })
    ));
    let wrong = r#"{"id": "WRONG-1", "modified": "2024-01-01T00:00:00Z", "aliases": "CVE-1"}"#;
    let e = Advisory::parse(wrong.as_bytes(), "wrong.json")
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("WRONG-1"), "{e}");
    assert!(Advisory::parse(br#"{"id": 5, "modified": "x"}"#, "t").is_err());
    assert!(Advisory::parse(br#"{"id": "A", "modified": "yesterday"}"#, "t").is_err());
    assert!(Advisory::parse(br#"[]"#, "t").is_err());
    let two_events = r#"{"id": "E-1", "modified": "2024-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "PyPI", "name": "a"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1"}]}]}]}"#;
    assert!(Advisory::parse(two_events.as_bytes(), "t").is_err());
    // Nulls where lists are expected read as empty.
    assert!(Advisory::parse(
        br#"{"id": "N-1", "modified": "2024-01-01T00:00:00Z", "aliases": null, "affected": null}"#,
        "t"
    )
    .is_ok());
}

#[test]
fn unparseable_range_bounds_are_indeterminate() {
    let a = range_record(r#"[{"introduced": "0"}, {"fixed": "not/a/version"}]"#);
    assert!(matches!(at(&a, "1.0"), Match::Indeterminate { .. }));
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-osv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

use std::path::PathBuf;

#[test]
fn reads_a_folder_recursively_in_path_order() {
    let d = temp_dir("folder");
    std::fs::create_dir_all(d.join("PyPI/sub")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("PyPI/b.json"), URLLIB3_GHSA).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("PyPI/sub/a.json"), URLLIB3_PYSEC).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("PyPI/notes.txt"), "ignored").unwrap_or_else(|e| panic!("{e}"));
    let mut ids = Vec::new();
    let n = read_path(&d, |r| {
        ids.push(Advisory::parse(&r.bytes, &r.origin)?.id);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 2);
    assert_eq!(ids, vec!["GHSA-q2q7-5pp4-w6pg", "PYSEC-2021-108"]);
    // The first error stops the walk.
    std::fs::write(d.join("PyPI/0-bad.json"), "{").unwrap_or_else(|e| panic!("{e}"));
    let mut seen = 0;
    let r = read_path(&d, |r| {
        seen += 1;
        Advisory::parse(&r.bytes, &r.origin).map(|_| ())
    });
    assert!(r.is_err());
    assert_eq!(seen, 1);
    let _ = std::fs::remove_dir_all(&d);
}

fn build_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap_or_else(|e| panic!("{e}"));
        w.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    w.finish().unwrap_or_else(|e| panic!("{e}")).into_inner()
}

#[test]
fn reads_an_all_zip_and_bounds_each_entry() {
    let d = temp_dir("zip");
    let zip_path = d.join("all.zip");
    std::fs::write(
        &zip_path,
        build_zip(&[
            ("PYSEC-2021-108.json", URLLIB3_PYSEC.as_bytes()),
            ("CVE-2021-33503.json", URLLIB3_CVE.as_bytes()),
            ("README.txt", b"ignored"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut idx = Index::default();
    let n = read_path(&zip_path, |r| {
        assert!(r.origin.contains("all.zip!"));
        let a = Advisory::parse(&r.bytes, &r.origin)?;
        idx.insert(a, &r.bytes);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 2);
    assert_eq!(idx.affecting(&pkg("pkg:pypi/urllib3@1.25.0")).len(), 1);
    // A highly compressible entry over the record limit is refused (zip bomb).
    let bomb = vec![b' '; usize::try_from(MAX_RECORD_BYTES).unwrap_or(0) + 10];
    let bomb_path = d.join("bomb.zip");
    std::fs::write(&bomb_path, build_zip(&[("bomb.json", &bomb)]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        read_path(&bomb_path, |_| Ok(())),
        Err(ComplianceError::TooLarge { .. })
    ));
    // Garbage that starts like a zip is an error.
    let junk = d.join("junk.zip");
    std::fs::write(&junk, b"PK\x03\x04garbage").unwrap_or_else(|e| panic!("{e}"));
    assert!(read_path(&junk, |_| Ok(())).is_err());
    assert!(read_path(&d.join("missing"), |_| Ok(())).is_err());
    let _ = std::fs::remove_dir_all(&d);
}
