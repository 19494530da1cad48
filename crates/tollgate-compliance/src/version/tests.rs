//! Ordering vectors written from published facts (semver.org §11, PEP 440's ordering summary,
//! Debian Policy §5.6.12, apk-tools' suffix rules, Maven's `ComparableVersion` documentation),
//! and property tests that comparing never panics and is antisymmetric.

use super::*;
use proptest::prelude::*;

fn assert_sorted(ecosystem: &str, list: &[&str]) {
    for pair in list.windows(2) {
        if let [a, b] = pair {
            assert_eq!(
                compare(ecosystem, a, b).unwrap_or_else(|e| panic!("{e}")),
                Ordering::Less,
                "{ecosystem}: expected {a} < {b}"
            );
            assert_eq!(
                compare(ecosystem, b, a).unwrap_or_else(|e| panic!("{e}")),
                Ordering::Greater,
                "{ecosystem}: expected {b} > {a}"
            );
        }
    }
    // Transitivity over the whole list, not only neighbours.
    for (i, a) in list.iter().enumerate() {
        for b in list.iter().skip(i + 1) {
            assert_eq!(
                compare(ecosystem, a, b).ok(),
                Some(Ordering::Less),
                "{ecosystem}: {a} < {b}"
            );
        }
    }
}

fn assert_equal(ecosystem: &str, list: &[&str]) {
    for a in list {
        for b in list {
            assert_eq!(
                compare(ecosystem, a, b).unwrap_or_else(|e| panic!("{e}")),
                Ordering::Equal,
                "{ecosystem}: expected {a} == {b}"
            );
        }
    }
}

#[test]
fn semver_precedence_of_semver_org_section_11() {
    assert_sorted(
        "SemVer",
        &[
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ],
    );
    assert_equal("SemVer", &["1.2", "1.2.0", "v1.2.0", "1.2.0+build.5"]);
    assert_equal("npm", &["1.0.0", "v1"]);
    assert_sorted("NuGet", &["1.2.3", "1.2.3.4", "1.2.4-beta1", "1.2.4"]);
    assert_sorted("crates.io", &["0.9.9", "0.10.0-pre", "0.10.0"]);
}

#[test]
fn go_versions_with_v_prefix_pseudo_versions_and_incompatible() {
    assert_sorted(
        "Go",
        &[
            "v0.0.0-20191109021931-daa7c04131f5",
            "v0.1.0",
            "v1.2.3",
            "v2.0.0+incompatible",
            "v2.0.1",
        ],
    );
    assert_equal("Go", &["v2.0.0+incompatible", "2.0.0", "v2.0.0"]);
}

#[test]
fn pypi_follows_the_pep_440_ordering_summary() {
    assert_sorted(
        "PyPI",
        &[
            "1.dev0",
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
        ],
    );
    assert_equal("PyPI", &["1", "1.0", "1.0.0"]);
    assert_equal("PyPI", &["1.0a1", "1.0alpha1", "1.0-a1", "1.0.a1"]);
    assert_equal("PyPI", &["1.0.post1", "1.0-1", "1.0post1"]);
    assert_sorted("PyPI", &["1.26.4", "1.26.5", "2.0.0"]);
}

#[test]
fn debian_follows_policy_5_6_12() {
    assert_sorted(
        "Debian",
        &[
            "1.0~~",
            "1.0~~a",
            "1.0~",
            "1.0~rc1",
            "1.0",
            "1.0a",
            "1.0+b1",
            "1.0.1",
            "1.1",
            "1.10",
            "1.10-1~bpo1",
            "1.10-1",
            "1.10-2",
            "1.10-10",
            "1:0.1",
            "2:0.0.1",
        ],
    );
    assert_sorted(
        "Debian:12",
        &["2.36-9+deb12u3", "2.36-9+deb12u4", "2.36-10"],
    );
    assert_equal("Debian", &["1.0", "0:1.0", "1.0-0", "1.000"]);
    assert!(parse("Debian", "a1.0").is_err());
    assert!(parse("Debian", "x:1.0").is_err());
    assert!(parse("Debian", "1.0-").is_err());
    assert!(parse("Debian", "1.0 beta").is_err());
}

#[test]
fn alpine_follows_apk_suffix_and_revision_rules() {
    assert_sorted(
        "Alpine",
        &[
            "1.0_alpha",
            "1.0_alpha1",
            "1.0_alpha2",
            "1.0_beta1",
            "1.0_pre1",
            "1.0_rc1",
            "1.0",
            "1.0-r1",
            "1.0-r2",
            "1.0-r10",
            "1.0_cvs",
            "1.0_svn",
            "1.0_git",
            "1.0_hg",
            "1.0_p1",
            "1.0_p2",
            "1.0_p10",
            "1.0a",
            "1.0b",
            "1.0.1",
            "1.01.1",
            "1.1",
            "1.2",
            "1.10",
        ],
    );
    assert_sorted(
        "Alpine:v3.19",
        &["3.0.8-r0", "3.0.8-r1", "3.0.9-r0", "3.1.0_alpha1-r0"],
    );
    assert_equal("Alpine", &["1.0", "01.0"]);
    assert!(parse("Alpine", "1.0_foo").is_err());
    assert!(parse("Alpine", "1.0-x1").is_err());
    assert!(parse("Alpine", "v1.0").is_err());
}

#[test]
fn maven_follows_comparable_version_qualifier_order() {
    assert_sorted(
        "Maven",
        &[
            "1-alpha2snapshot",
            "1-alpha2",
            "1-alpha-123",
            "1-beta-2",
            "1-beta123",
            "1-m2",
            "1-m11",
            "1-rc",
            "1-cr2",
            "1-rc123",
            "1-SNAPSHOT",
            "1",
            "1-sp",
            "1-sp2",
            "1-sp123",
            "1-abc",
            "1-def",
            "1-pom-1",
            "1-1-snapshot",
            "1-1",
            "1-2",
            "1-123",
        ],
    );
    assert_sorted(
        "Maven",
        &[
            "2.0", "2.0.a", "2-1", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c", "2.1-1",
            "2.1.0.1", "2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11",
            "11", "11.a", "11b", "11c", "11m",
        ],
    );
    assert_equal(
        "Maven",
        &[
            "1",
            "1.0",
            "1.0.0",
            "1-0",
            "1ga",
            "1-GA",
            "1.final",
            "1-release",
        ],
    );
    assert_equal("Maven", &["1a1", "1-a1", "1-alpha-1", "1alpha1"]);
    assert_equal("Maven", &["1cr1", "1rc1", "1-rc-1"]);
    assert_sorted(
        "Maven",
        &["2.13.4", "2.13.4.1", "2.13.4.2", "2.14.0-rc1", "2.14.0"],
    );
}

#[test]
fn rubygems_prerelease_letters_sort_before_the_release() {
    assert_sorted(
        "RubyGems",
        &["1.0.a", "1.0.b1", "1.0.rc1", "1.0", "1.0.1", "1.1", "1.10"],
    );
    assert_equal("RubyGems", &["1", "1.0", "1.0.0"]);
}

#[test]
fn unknown_ecosystems_and_bad_versions_are_errors() {
    assert!(compare("Nonesuch", "1", "2").is_err());
    assert!(parse("SemVer", "one").is_err());
    assert!(parse("SemVer", "1.2.3.4.5").is_err());
    assert!(parse("PyPI", "not a version").is_err());
    assert!(parse("SemVer", "").is_err());
    assert!(parse("Maven", &"1.".repeat(2000)).is_err());
}

#[test]
fn constraints_parse_match_and_display() {
    let c = Constraint::parse(">=1.0, <2.0").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.to_string(), ">= 1.0, < 2.0");
    assert_eq!(c.matches("SemVer", "1.5.0").ok(), Some(true));
    assert_eq!(c.matches("SemVer", "2.0.0").ok(), Some(false));
    assert_eq!(c.matches("SemVer", "0.9").ok(), Some(false));
    let lt = Constraint::parse("< 5.4").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lt.matches("Debian", "5.3-1").ok(), Some(true));
    assert_eq!(lt.matches("Debian", "5.4-1").ok(), Some(false));
    let eq = Constraint::parse("=1.2.3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(eq.matches("npm", "v1.2.3").ok(), Some(true));
    assert_eq!(Constraint::parse("1.2.3").ok(), Some(eq));
    let any = Constraint::parse("*").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(any.to_string(), "*");
    assert_eq!(any.matches("PyPI", "0.1").ok(), Some(true));
    assert!(any.matches("PyPI", "bogus version").is_err());
    assert_eq!(
        Constraint::parse("!=1.0")
            .ok()
            .map(|c| c.matches("PyPI", "1.0.0").ok()),
        Some(Some(false))
    );
    assert!(Constraint::parse(">=1.0,,<2").is_err());
    assert!(Constraint::parse("<").is_err());
    assert!(Constraint::parse("< 1 2").is_err());
    assert!(Constraint::parse(">=1.0")
        .ok()
        .is_some_and(|c| c.matches("SemVer", "x").is_err()));
}

const ECOSYSTEMS: [&str; 8] = [
    "SemVer", "Go", "PyPI", "Debian", "Alpine", "Maven", "RubyGems", "npm",
];

proptest! {
    #[test]
    fn compare_never_panics_and_is_antisymmetric(
        a in "\\PC{0,16}",
        b in "[0-9a-zA-Z.~+_:-]{0,14}",
        c in "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}([-_~+.][a-z]{0,5}[0-9]{0,2}){0,2}",
    ) {
        for eco in ECOSYSTEMS {
            for (x, y) in [(&a, &b), (&b, &c), (&a, &c), (&c, &c)] {
                let xy = compare(eco, x, y);
                let yx = compare(eco, y, x);
                if let (Ok(xy), Ok(yx)) = (xy, yx) {
                    prop_assert_eq!(xy, yx.reverse(), "{} {:?} {:?}", eco, x, y);
                }
            }
            if let Ok(o) = compare(eco, &c, &c) {
                prop_assert_eq!(o, Ordering::Equal);
            }
        }
    }
}
