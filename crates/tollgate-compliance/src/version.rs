//! Version ordering per OSV ecosystem, and the version constraints operators write.
//!
//! Owns parsing and comparing versions: SemVer 2.0 precedence (also used, leniently, for npm,
//! crates.io, NuGet, Pub, Hex, Packagist and Go), PEP 440 for PyPI (through `pep440_rs`),
//! and our own comparators for Debian (dpkg), Alpine (apk), Maven (`ComparableVersion`) and
//! RubyGems. It must not guess: a version that does not parse in its ecosystem is an error,
//! and an ecosystem it does not know is an error, so callers can report "indeterminate"
//! rather than "clean". No I/O, no state.
//!
//! Public functions: [`compare`], [`parse`], [`Constraint::parse`], [`Constraint::matches`].

mod alpine;
mod debian;
mod gem;
mod maven;

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::ComplianceError;

/// The longest version string accepted, in bytes.
const MAX_VERSION_BYTES: usize = 1024;

/// How an ecosystem orders its versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    SemVer,
    PyPI,
    Debian,
    Alpine,
    Maven,
    RubyGems,
}

/// The ordering an OSV ecosystem name uses (`Debian:12` is `Debian`).
fn kind(ecosystem: &str) -> Option<Kind> {
    let base = ecosystem.split(':').next().unwrap_or("").trim();
    let k = match base.to_ascii_lowercase().as_str() {
        "semver" | "npm" | "crates.io" | "nuget" | "pub" | "hex" | "packagist" | "go" => {
            Kind::SemVer
        }
        "pypi" => Kind::PyPI,
        "debian" | "ubuntu" => Kind::Debian,
        "alpine" => Kind::Alpine,
        "maven" => Kind::Maven,
        "rubygems" => Kind::RubyGems,
        _ => return None,
    };
    Some(k)
}

/// A lenient SemVer: an optional leading `v`, one to four numeric components (missing ones
/// are 0), a SemVer pre-release, and build metadata that is ignored (Go's `+incompatible`).
#[derive(Debug, Clone)]
struct Lenient {
    core: [u64; 4],
    pre: semver::Prerelease,
}

fn parse_lenient(v: &str) -> Result<Lenient, String> {
    let v = v.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let v = v.split_once('+').map_or(v, |(head, _)| head);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let mut nums = [0u64; 4];
    for (count, part) in core.split('.').enumerate() {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{part:?} is not a number"));
        }
        let slot = nums
            .get_mut(count)
            .ok_or_else(|| "more than four numeric components".to_string())?;
        *slot = part
            .parse::<u64>()
            .map_err(|_| format!("{part} is too large"))?;
    }
    let pre = match pre {
        Some(p) => semver::Prerelease::new(p).map_err(|e| format!("pre-release {p:?}: {e}"))?,
        None => semver::Prerelease::EMPTY,
    };
    Ok(Lenient { core: nums, pre })
}

#[derive(Debug, Clone)]
enum Repr {
    SemVer(Lenient),
    PyPI(Box<pep440_rs::Version>),
    Debian(debian::DebVersion),
    Alpine(alpine::ApkVersion),
    Maven(maven::MavenVersion),
    RubyGems(gem::GemVersion),
}

/// A version parsed in its ecosystem. Versions of one ecosystem are totally ordered as that
/// ecosystem orders them; versions of different orderings compare by ordering kind first (a
/// fixed, meaningless order that only keeps `Ord` total).
#[derive(Debug, Clone)]
pub struct Version {
    repr: Repr,
    text: String,
}

impl Version {
    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn kind(&self) -> Kind {
        match self.repr {
            Repr::SemVer(_) => Kind::SemVer,
            Repr::PyPI(_) => Kind::PyPI,
            Repr::Debian(_) => Kind::Debian,
            Repr::Alpine(_) => Kind::Alpine,
            Repr::Maven(_) => Kind::Maven,
            Repr::RubyGems(_) => Kind::RubyGems,
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.repr, &other.repr) {
            (Repr::SemVer(a), Repr::SemVer(b)) => {
                a.core.cmp(&b.core).then_with(|| a.pre.cmp(&b.pre))
            }
            (Repr::PyPI(a), Repr::PyPI(b)) => a.cmp(b),
            (Repr::Debian(a), Repr::Debian(b)) => a.cmp(b),
            (Repr::Alpine(a), Repr::Alpine(b)) => a.cmp(b),
            (Repr::Maven(a), Repr::Maven(b)) => a.cmp(b),
            (Repr::RubyGems(a), Repr::RubyGems(b)) => a.cmp(b),
            _ => self.kind().cmp(&other.kind()),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn version_error(ecosystem: &str, v: &str, detail: impl Into<String>) -> ComplianceError {
    let mut shown = v.to_string();
    if shown.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    ComplianceError::Version {
        ecosystem: ecosystem.to_string(),
        version: shown,
        detail: detail.into(),
    }
}

/// Parse `v` as a version of `ecosystem` (an OSV ecosystem name; a `:release` suffix is
/// ignored). Errors when the ecosystem is unknown or the version does not parse there.
pub fn parse(ecosystem: &str, v: &str) -> Result<Version, ComplianceError> {
    let k = kind(ecosystem).ok_or_else(|| {
        version_error(
            ecosystem,
            v,
            "no version ordering is known for this ecosystem",
        )
    })?;
    if v.len() > MAX_VERSION_BYTES {
        return Err(version_error(ecosystem, v, "longer than 1024 bytes"));
    }
    if v.trim().is_empty() {
        return Err(version_error(ecosystem, v, "empty version"));
    }
    let repr = match k {
        Kind::SemVer => parse_lenient(v).map(Repr::SemVer),
        Kind::PyPI => pep440_rs::Version::from_str(v.trim())
            .map(|p| Repr::PyPI(Box::new(p)))
            .map_err(|e| e.to_string()),
        Kind::Debian => debian::parse(v).map(Repr::Debian),
        Kind::Alpine => alpine::parse(v).map(Repr::Alpine),
        Kind::Maven => maven::parse(v).map(Repr::Maven),
        Kind::RubyGems => gem::parse(v).map(Repr::RubyGems),
    }
    .map_err(|d| version_error(ecosystem, v, d))?;
    Ok(Version {
        repr,
        text: v.to_string(),
    })
}

/// Compare two versions of `ecosystem`. Errors when either does not parse.
pub fn compare(ecosystem: &str, a: &str, b: &str) -> Result<Ordering, ComplianceError> {
    Ok(parse(ecosystem, a)?.cmp(&parse(ecosystem, b)?))
}

/// A comparison operator in a [`Constraint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "=",
            Op::Ne => "!=",
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
        }
    }
}

/// A constraint written by operators, e.g. `"< 5.4"`, `">=1.0, <2.0"`, `"=1.2.3"`, `"*"`:
/// comma-separated comparators (`<`, `<=`, `>`, `>=`, `=`/`==`, `!=`; a bare version means
/// `=`), all of which must hold. `*` (or an empty string) matches every version. Versions are
/// kept as written and parsed in the ecosystem of the version being matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    terms: Vec<(Op, String)>,
}

impl Constraint {
    /// Parse a constraint. Errors on an empty comparator or a missing version.
    pub fn parse(s: &str) -> Result<Constraint, ComplianceError> {
        let err = |detail: String| ComplianceError::Version {
            ecosystem: "constraint".into(),
            version: s.to_string(),
            detail,
        };
        if s.len() > MAX_VERSION_BYTES {
            return Err(err("longer than 1024 bytes".into()));
        }
        let t = s.trim();
        if t.is_empty() || t == "*" {
            return Ok(Constraint { terms: Vec::new() });
        }
        let mut terms = Vec::new();
        for part in t.split(',') {
            let p = part.trim();
            if p.is_empty() {
                return Err(err("an empty comparator between commas".into()));
            }
            let (op, rest) = if let Some(r) = p.strip_prefix("<=") {
                (Op::Le, r)
            } else if let Some(r) = p.strip_prefix(">=") {
                (Op::Ge, r)
            } else if let Some(r) = p.strip_prefix("==") {
                (Op::Eq, r)
            } else if let Some(r) = p.strip_prefix("!=") {
                (Op::Ne, r)
            } else if let Some(r) = p.strip_prefix('<') {
                (Op::Lt, r)
            } else if let Some(r) = p.strip_prefix('>') {
                (Op::Gt, r)
            } else if let Some(r) = p.strip_prefix('=') {
                (Op::Eq, r)
            } else {
                (Op::Eq, p)
            };
            let v = rest.trim();
            if v.is_empty() {
                return Err(err(format!("{p:?} names no version")));
            }
            if v.contains(char::is_whitespace) || v.starts_with(['<', '>', '=', '!']) {
                return Err(err(format!("{p:?} is not one comparator and one version")));
            }
            terms.push((op, v.to_string()));
        }
        Ok(Constraint { terms })
    }

    /// Whether `version` of `ecosystem` satisfies every comparator. Errors when the version or
    /// a bound does not parse in that ecosystem.
    pub fn matches(&self, ecosystem: &str, version: &str) -> Result<bool, ComplianceError> {
        let v = parse(ecosystem, version)?;
        for (op, bound) in &self.terms {
            let b = parse(ecosystem, bound)?;
            if !op.holds(v.cmp(&b)) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("*");
        }
        for (i, (op, v)) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", op.as_str(), v)?;
        }
        Ok(())
    }
}

impl FromStr for Constraint {
    type Err = ComplianceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Constraint::parse(s)
    }
}

#[cfg(test)]
mod tests;
