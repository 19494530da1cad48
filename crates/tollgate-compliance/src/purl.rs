//! Package URLs mapped to OSV package identities.
//!
//! Owns the mapping from a purl (`pkg:pypi/...`, `pkg:deb/debian/...`) to the OSV ecosystem,
//! the package name as OSV spells it, normalised the same way on both sides so that a
//! component and an advisory's `affected[].package` compare equal ([`package`], [`osv_key`]),
//! and the distribution release a component was built for. It must not match versions or
//! read advisories, and it must not guess an ecosystem for a purl type OSV has no ecosystem
//! for: such purls are errors.
//!
//! Public functions: [`package`], [`osv_key`].

use std::str::FromStr;

use packageurl::PackageUrl;
use serde::{Deserialize, Serialize};

use crate::ComplianceError;

/// The longest package URL accepted, in bytes.
const MAX_PURL_BYTES: usize = 4096;

/// An OSV package identity: the base ecosystem as OSV spells it (`PyPI`, `npm`, `crates.io`,
/// `Go`, `Maven`, `Debian`, `Alpine`, `NuGet`, `RubyGems`, `Packagist`, `Hex`, `Pub`, ...),
/// without any `:release` suffix, and the name normalised for that ecosystem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageKey {
    /// The OSV ecosystem, without a release suffix.
    pub ecosystem: String,
    /// The package name, normalised for the ecosystem.
    pub name: String,
}

/// A component to match: its key, its version as written (`None` when the SBOM gave none), and
/// the distribution release it was built for when the purl says (Debian `12`, Alpine `v3.19`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Ecosystem and normalised name.
    pub key: PackageKey,
    /// The version as written in the purl.
    pub version: Option<String>,
    /// The distribution release (`12` for Debian bookworm, `v3.19` for Alpine 3.19).
    pub release: Option<String>,
}

fn purl_error(purl: &str, detail: impl Into<String>) -> ComplianceError {
    let mut shown = purl.to_string();
    if shown.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    ComplianceError::Purl {
        purl: shown,
        detail: detail.into(),
    }
}

/// The OSV spelling of an ecosystem name given in any case, or the name as given.
fn canonical_ecosystem(base: &str) -> String {
    const KNOWN: [&str; 14] = [
        "PyPI",
        "npm",
        "crates.io",
        "Go",
        "Maven",
        "Debian",
        "Alpine",
        "NuGet",
        "RubyGems",
        "Packagist",
        "Hex",
        "Pub",
        "Ubuntu",
        "SwiftURL",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(base))
        .map_or_else(|| base.to_string(), |k| (*k).to_string())
}

/// Normalise a package name for an ecosystem: PEP 503 for PyPI (lower case, runs of `-`, `_`
/// and `.` become one `-`); lower case for ecosystems whose names are case-insensitive or
/// which purl lower-cases (npm, crates.io, Go, NuGet, Packagist, Hex, Pub, Debian, Alpine);
/// unchanged otherwise (Maven, RubyGems). Go module paths are compared in lower case because
/// purl parsers lower-case the namespace; two modules differing only in case are then one key.
fn normalise_name(ecosystem: &str, name: &str) -> String {
    let name = name.trim();
    match ecosystem {
        "PyPI" => {
            let mut out = String::with_capacity(name.len());
            let mut in_sep = false;
            for c in name.chars() {
                if matches!(c, '-' | '_' | '.') {
                    if !in_sep {
                        out.push('-');
                    }
                    in_sep = true;
                } else {
                    out.extend(c.to_lowercase());
                    in_sep = false;
                }
            }
            out
        }
        "npm" | "crates.io" | "Go" | "NuGet" | "Packagist" | "Hex" | "Pub" | "Debian"
        | "Alpine" | "Ubuntu" => name.to_lowercase(),
        _ => name.to_string(),
    }
}

/// Normalise an OSV `affected[].package`: `ecosystem` may carry a release (`Debian:12`,
/// `Alpine:v3.19`), returned separately; the name is normalised exactly as [`package`] does.
pub fn osv_key(ecosystem: &str, name: &str) -> (PackageKey, Option<String>) {
    let (base, release) = match ecosystem.split_once(':') {
        Some((b, r)) => (
            b.trim(),
            Some(r.trim().to_string()).filter(|r| !r.is_empty()),
        ),
        None => (ecosystem.trim(), None),
    };
    let ecosystem = canonical_ecosystem(base);
    let name = normalise_name(&ecosystem, name);
    (PackageKey { ecosystem, name }, release)
}

/// The Debian major release a `distro` qualifier names (`debian-12`, `debian-12.4`, `12`,
/// `bookworm`, `debian-bookworm`).
fn debian_release(distro: &str) -> Option<String> {
    let d = distro.trim().to_ascii_lowercase();
    let d = d.strip_prefix("debian-").unwrap_or(&d);
    if d.starts_with(|c: char| c.is_ascii_digit()) {
        let major = d.split('.').next().unwrap_or(d);
        return major
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| major.to_string());
    }
    let r = match d {
        "buster" => "10",
        "bullseye" => "11",
        "bookworm" => "12",
        "trixie" => "13",
        "forky" => "14",
        _ => return None,
    };
    Some(r.to_string())
}

/// The Alpine release a `distro` qualifier names, as OSV spells it (`alpine-3.19.1` → `v3.19`).
fn alpine_release(distro: &str) -> Option<String> {
    let d = distro.trim().to_ascii_lowercase();
    let d = d.strip_prefix("alpine-").unwrap_or(&d);
    let d = d.strip_prefix('v').unwrap_or(d);
    let mut parts = d.split('.');
    let major = parts.next().filter(|p| !p.is_empty())?;
    let minor = parts.next().filter(|p| !p.is_empty())?;
    if !(major.bytes().all(|b| b.is_ascii_digit()) && minor.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(format!("v{major}.{minor}"))
}

/// Map a package URL to the OSV package it names, with its version and distribution release.
///
/// Errors when the purl does not parse, names a type OSV has no ecosystem for, or lacks what
/// its type needs (a Maven group, a Debian or Alpine namespace OSV covers).
pub fn package(purl: &str) -> Result<Package, ComplianceError> {
    if purl.len() > MAX_PURL_BYTES {
        return Err(purl_error(purl, "longer than 4096 bytes"));
    }
    let p = PackageUrl::from_str(purl.trim()).map_err(|e| purl_error(purl, e.to_string()))?;
    let ns = p.namespace().map(str::trim).filter(|n| !n.is_empty());
    let name = p.name();
    let q = |k: &str| p.qualifiers().get(k).map(|v| v.as_ref());
    let mut release = None;
    let (ecosystem, raw_name) = match p.ty() {
        "pypi" => ("PyPI", name.to_string()),
        "npm" => match ns {
            Some(scope) if scope.starts_with('@') => ("npm", format!("{scope}/{name}")),
            Some(scope) => ("npm", format!("@{scope}/{name}")),
            None => ("npm", name.to_string()),
        },
        "cargo" => ("crates.io", name.to_string()),
        "golang" => match ns {
            Some(ns) => ("Go", format!("{ns}/{name}")),
            None => ("Go", name.to_string()),
        },
        "maven" => match ns {
            Some(group) => ("Maven", format!("{group}:{name}")),
            None => return Err(purl_error(purl, "a Maven purl needs a group (namespace)")),
        },
        "deb" => {
            if !ns.is_some_and(|n| n.eq_ignore_ascii_case("debian")) {
                return Err(purl_error(
                    purl,
                    "only Debian (pkg:deb/debian/...) is mapped to an OSV ecosystem",
                ));
            }
            if let Some(d) = q("distro") {
                release = Some(
                    debian_release(d).ok_or_else(|| {
                        purl_error(purl, format!("distro {d:?} names no Debian release"))
                    })?,
                );
            }
            // OSV's Debian records name source packages.
            let source = match q("upstream").map(str::trim).filter(|u| !u.is_empty()) {
                Some(u) => match u.split_once(" (") {
                    Some((src, _)) => src.trim().to_string(),
                    None => u.to_string(),
                },
                None => name.to_string(),
            };
            ("Debian", source)
        }
        "apk" => {
            if !ns.is_some_and(|n| n.eq_ignore_ascii_case("alpine")) {
                return Err(purl_error(
                    purl,
                    "only Alpine (pkg:apk/alpine/...) is mapped to an OSV ecosystem",
                ));
            }
            if let Some(d) = q("distro") {
                release = Some(alpine_release(d).ok_or_else(|| {
                    purl_error(purl, format!("distro {d:?} names no Alpine release"))
                })?);
            }
            ("Alpine", name.to_string())
        }
        "nuget" => ("NuGet", name.to_string()),
        "gem" => ("RubyGems", name.to_string()),
        "composer" => match ns {
            Some(vendor) => ("Packagist", format!("{vendor}/{name}")),
            None => ("Packagist", name.to_string()),
        },
        "hex" => ("Hex", name.to_string()),
        "pub" => ("Pub", name.to_string()),
        other => {
            return Err(purl_error(
                purl,
                format!("purl type {other:?} has no OSV ecosystem here (known: pypi, npm, cargo, golang, maven, deb, apk, nuget, gem, composer, hex, pub)"),
            ))
        }
    };
    let (key, _) = osv_key(ecosystem, &raw_name);
    let version = p
        .version()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    Ok(Package {
        key,
        version,
        release,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(p: &str) -> Package {
        package(p).unwrap_or_else(|e| panic!("{e}"))
    }

    fn key(e: &str, n: &str) -> PackageKey {
        PackageKey {
            ecosystem: e.into(),
            name: n.into(),
        }
    }

    #[test]
    fn pypi_names_are_pep_503_normalised_on_both_sides() {
        let p = pkg("pkg:pypi/Zope.Interface@5.4.0");
        assert_eq!(p.key, key("PyPI", "zope-interface"));
        assert_eq!(p.version.as_deref(), Some("5.4.0"));
        assert_eq!(osv_key("PyPI", "zope_interface").0, p.key);
        assert_eq!(osv_key("PyPI", "Zope__.-Interface").0, p.key);
        assert_eq!(
            pkg("pkg:pypi/urllib3@1.26.4").key,
            osv_key("PyPI", "urllib3").0
        );
    }

    #[test]
    fn npm_scopes_cargo_go_and_maven() {
        assert_eq!(
            pkg("pkg:npm/%40babel/core@7.0.0").key,
            key("npm", "@babel/core")
        );
        assert_eq!(pkg("pkg:npm/lodash@4.17.20").key, key("npm", "lodash"));
        assert_eq!(pkg("pkg:cargo/tokio@1.0.0").key, key("crates.io", "tokio"));
        let go = pkg("pkg:golang/golang.org/x/net@v0.7.0");
        assert_eq!(go.key, key("Go", "golang.org/x/net"));
        assert_eq!(go.version.as_deref(), Some("v0.7.0"));
        assert_eq!(
            pkg("pkg:golang/github.com/BurntSushi/toml@v1.0.0").key,
            osv_key("Go", "github.com/BurntSushi/toml").0
        );
        assert_eq!(
            pkg("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1").key,
            key("Maven", "org.apache.logging.log4j:log4j-core")
        );
        assert!(package("pkg:maven/log4j-core@2.14.1").is_err());
        assert_eq!(
            pkg("pkg:nuget/Newtonsoft.Json@12.0.1").key,
            osv_key("NuGet", "newtonsoft.json").0
        );
        assert_eq!(pkg("pkg:gem/rails@7.0.0").key, key("RubyGems", "rails"));
        assert_eq!(
            pkg("pkg:composer/laravel/framework@9.0.0").key,
            key("Packagist", "laravel/framework")
        );
        assert_eq!(pkg("pkg:hex/plug@1.0.0").key, key("Hex", "plug"));
        assert_eq!(pkg("pkg:pub/http@0.13.0").key, key("Pub", "http"));
    }

    #[test]
    fn debian_uses_the_source_package_and_the_release() {
        let p = pkg("pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&upstream=openssl%20%283.0.11-1~deb12u2%29&distro=debian-12.4");
        assert_eq!(p.key, key("Debian", "openssl"));
        assert_eq!(p.release.as_deref(), Some("12"));
        assert_eq!(p.version.as_deref(), Some("3.0.11-1~deb12u2"));
        let q = pkg("pkg:deb/debian/curl@7.74.0-1.3?distro=bullseye");
        assert_eq!(q.key, key("Debian", "curl"));
        assert_eq!(q.release.as_deref(), Some("11"));
        assert_eq!(
            pkg("pkg:deb/debian/zlib@1.2?distro=debian-bookworm")
                .release
                .as_deref(),
            Some("12")
        );
        assert_eq!(pkg("pkg:deb/debian/bash@5.2").release, None);
        assert!(package("pkg:deb/debian/bash@5.2?distro=sid-ish").is_err());
        assert!(package("pkg:deb/ubuntu/bash@5.2").is_err());
        assert_eq!(
            osv_key("Debian:12", "openssl"),
            (key("Debian", "openssl"), Some("12".into()))
        );
    }

    #[test]
    fn alpine_release_is_spelled_as_osv_does() {
        let p = pkg("pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1");
        assert_eq!(p.key, key("Alpine", "busybox"));
        assert_eq!(p.release.as_deref(), Some("v3.19"));
        assert_eq!(
            osv_key("Alpine:v3.19", "busybox"),
            (p.key, Some("v3.19".into()))
        );
    }

    #[test]
    fn unknown_types_and_garbage_are_clear_errors() {
        let e = package("pkg:rpm/fedora/curl@7.0")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("rpm"), "{e}");
        assert!(package("not a purl").is_err());
        assert!(package("pkg:").is_err());
        assert!(package(&format!("pkg:pypi/{}", "a".repeat(5000))).is_err());
        assert!(package("pkg:pypi/%ZZ").is_ok() || package("pkg:pypi/%ZZ").is_err());
    }

    #[test]
    fn a_missing_version_is_none() {
        assert_eq!(pkg("pkg:pypi/requests").version, None);
    }
}
