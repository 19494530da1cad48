//! OSV advisory records, their index, and matching a component against them.
//!
//! Owns reading OSV JSON records (a lenient serde subset of the OSV schema, bounded in size
//! and nesting), reading them from a folder or an osv.dev `all.zip` ([`read_path`]), keeping
//! them in an [`Index`] updated incrementally by `modified`, and deciding whether a component
//! is affected exactly as the OSV specification's evaluation algorithm says
//! ([`Advisory::check`]). It must not fetch anything over the network, decide policy (what a
//! severity means for a device is the profile's business), or call a component clean when it
//! cannot tell: a missing or unparseable version is [`Match::Indeterminate`].
//!
//! Public functions: [`Advisory::parse`], [`Advisory::check`], [`Index::insert`],
//! [`Index::affecting`], [`Index::digest`], [`read_path`].

mod read;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::purl::{osv_key, Package, PackageKey};
use crate::{version, ComplianceError, Severity, MAX_RECORD_BYTES};

pub use read::{read_path, RawRecord, MAX_ARCHIVE_BYTES, MAX_RECORDS};

/// A severity rating of an advisory, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// The qualitative level.
    pub level: Severity,
    /// The CVSS base score, when the rating is a CVSS vector.
    pub score: Option<f64>,
    /// The CVSS vector as written.
    pub vector: Option<String>,
    /// `CVSS_V3`, `CVSS_V4`, `database_specific` or `ecosystem_specific`.
    pub source: String,
}

impl Rating {
    fn rank(&self) -> (Severity, i64) {
        // Scores are tenths; rounding to an integer of tenths keeps the comparison total.
        let tenths = self.score.map_or(-1, |s| (s * 10.0).round() as i64);
        (self.level, tenths)
    }
}

/// Keep the higher of two ratings (by level, then score).
fn higher(a: Option<Rating>, b: Option<Rating>) -> Option<Rating> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.rank() > a.rank() { b } else { a }),
        (a, None) => a,
        (None, b) => b,
    }
}

/// One range event of an affected entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeKind {
    Semver,
    Ecosystem,
    Git,
}

#[derive(Debug, Clone)]
struct Range {
    kind: RangeKind,
    events: Vec<Event>,
}

/// One normalised `affected[]` entry.
#[derive(Debug, Clone)]
struct Affected {
    key: PackageKey,
    /// The release of a distribution-scoped ecosystem (`Debian:12` → `12`).
    release: Option<String>,
    /// The ecosystem as written, used to order versions.
    ecosystem: String,
    versions: Vec<String>,
    ranges: Vec<Range>,
}

/// An OSV advisory record, normalised for matching.
#[derive(Debug, Clone)]
pub struct Advisory {
    /// The record's id (`GHSA-...`, `PYSEC-...`, `CVE-...`, `DSA-...`).
    pub id: String,
    /// When the record was last modified (RFC 3339), as written.
    pub modified: String,
    /// When it was published, as written.
    pub published: Option<String>,
    /// When it was withdrawn, as written; a withdrawn record never matches.
    pub withdrawn: Option<String>,
    /// Other ids of the same vulnerability.
    pub aliases: Vec<String>,
    /// The one-line summary.
    pub summary: Option<String>,
    /// The highest rating found (see [`Advisory::parse`]).
    pub severity: Option<Rating>,
    affected: Vec<Affected>,
}

/// The result of matching one advisory against one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "match", rename_all = "snake_case")]
pub enum Match {
    /// The advisory does not name the component's package, or its version is outside every
    /// range, or the record is withdrawn.
    NotAffected,
    /// The component's version is affected.
    Affected {
        /// The smallest fixed version above the component's version, when the record says.
        fixed: Option<String>,
    },
    /// The advisory names the package but whether the version is affected cannot be told.
    Indeterminate {
        /// Why (no version, a version that does not parse, an unknown ordering).
        detail: String,
    },
}

// ---- serde subset of the OSV schema -------------------------------------------------------

#[derive(Deserialize)]
struct RawAdvisory {
    id: String,
    modified: String,
    published: Option<String>,
    withdrawn: Option<String>,
    aliases: Option<Vec<String>>,
    summary: Option<String>,
    severity: Option<Vec<RawSeverity>>,
    affected: Option<Vec<RawAffected>>,
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawSeverity {
    #[serde(rename = "type")]
    kind: String,
    score: String,
}

#[derive(Deserialize)]
struct RawAffected {
    package: Option<RawPackage>,
    ranges: Option<Vec<RawRange>>,
    versions: Option<Vec<String>>,
    ecosystem_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawPackage {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    events: Option<Vec<RawEvent>>,
}

#[derive(Deserialize)]
struct RawEvent {
    introduced: Option<String>,
    fixed: Option<String>,
    last_affected: Option<String>,
    limit: Option<String>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<serde_json::Value>,
}

/// A severity written as a word in `database_specific` / `ecosystem_specific`.
fn word_rating(v: Option<&serde_json::Value>, source: &str) -> Option<Rating> {
    let word = v?.get("severity")?.as_str()?;
    Some(Rating {
        level: Severity::parse(word)?,
        score: None,
        vector: None,
        source: source.to_string(),
    })
}

fn cvss_rating(kind: &str, vector: &str) -> Option<Rating> {
    if kind != "CVSS_V3" && kind != "CVSS_V4" {
        return None;
    }
    let parsed = cvss::Cvss::from_str(vector.trim()).ok()?;
    let score = parsed.score();
    if !score.is_finite() {
        return None;
    }
    Some(Rating {
        level: Severity::from_score(score),
        score: Some(score),
        vector: Some(vector.trim().to_string()),
        source: kind.to_string(),
    })
}

fn osv_error(origin: &str, id: Option<&str>, detail: impl std::fmt::Display) -> ComplianceError {
    let origin = match id {
        Some(id) if !id.is_empty() => format!("{origin} ({id})"),
        _ => origin.to_string(),
    };
    ComplianceError::Osv {
        origin,
        detail: detail.to_string(),
    }
}

/// Parse an RFC 3339 time, for ordering `modified`.
fn timestamp(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()
}

impl Advisory {
    /// Parse one OSV record (JSON). Unknown fields are ignored; `null` lists read as empty.
    ///
    /// Severity: the highest of the record's `CVSS_V3` and `CVSS_V4` vectors (scored with the
    /// `cvss` crate); when it has none, the highest of `database_specific.severity` and every
    /// `affected[].ecosystem_specific.severity` word (GitHub's `HIGH`, `MODERATE`, ...).
    ///
    /// Errors (naming `origin`, the id when known, and what is wrong) on a record over
    /// [`MAX_RECORD_BYTES`], JSON that does not parse or nests deeper than 128 levels, wrong
    /// types, an empty id or a `modified` that is not RFC 3339.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Advisory, ComplianceError> {
        let size = bytes.len() as u64;
        if size > MAX_RECORD_BYTES {
            return Err(ComplianceError::TooLarge {
                what: format!("OSV record {origin}"),
                size,
                limit: MAX_RECORD_BYTES,
            });
        }
        let raw: RawAdvisory = serde_json::from_slice(bytes).map_err(|e| {
            let id = serde_json::from_slice::<IdOnly>(bytes)
                .ok()
                .and_then(|i| i.id)
                .and_then(|v| v.as_str().map(str::to_string));
            osv_error(origin, id.as_deref(), e)
        })?;
        let id = raw.id.trim().to_string();
        if id.is_empty() {
            return Err(osv_error(origin, None, "the id is empty"));
        }
        if timestamp(&raw.modified).is_none() {
            return Err(osv_error(
                origin,
                Some(&id),
                format!("modified {:?} is not an RFC 3339 time", raw.modified),
            ));
        }
        let mut cvss = None;
        for s in raw.severity.unwrap_or_default() {
            cvss = higher(cvss, cvss_rating(&s.kind, &s.score));
        }
        let mut words = word_rating(raw.database_specific.as_ref(), "database_specific");
        let mut affected = Vec::new();
        for a in raw.affected.unwrap_or_default() {
            words = higher(
                words,
                word_rating(a.ecosystem_specific.as_ref(), "ecosystem_specific"),
            );
            let Some(p) = a.package else {
                // An entry without a package (a bare GIT range) can only match by commit.
                continue;
            };
            let (key, release) = osv_key(&p.ecosystem, &p.name);
            let mut ranges = Vec::new();
            for r in a.ranges.unwrap_or_default() {
                let kind = match r.kind.as_str() {
                    "SEMVER" => RangeKind::Semver,
                    "ECOSYSTEM" => RangeKind::Ecosystem,
                    "GIT" => RangeKind::Git,
                    other => {
                        return Err(osv_error(
                            origin,
                            Some(&id),
                            format!("unknown range type {other:?}"),
                        ))
                    }
                };
                let mut events = Vec::new();
                for e in r.events.unwrap_or_default() {
                    let ev = match (e.introduced, e.fixed, e.last_affected, e.limit) {
                        (Some(v), None, None, None) => Event::Introduced(v),
                        (None, Some(v), None, None) => Event::Fixed(v),
                        (None, None, Some(v), None) => Event::LastAffected(v),
                        (None, None, None, Some(v)) => Event::Limit(v),
                        _ => {
                            return Err(osv_error(
                                origin,
                                Some(&id),
                                "a range event must have exactly one of introduced, fixed, last_affected, limit",
                            ))
                        }
                    };
                    events.push(ev);
                }
                ranges.push(Range { kind, events });
            }
            affected.push(Affected {
                key,
                release,
                ecosystem: p.ecosystem.trim().to_string(),
                versions: a.versions.unwrap_or_default(),
                ranges,
            });
        }
        let mut aliases: Vec<String> = raw
            .aliases
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty() && *a != id)
            .collect();
        aliases.sort();
        aliases.dedup();
        Ok(Advisory {
            id,
            modified: raw.modified,
            published: raw.published,
            withdrawn: raw.withdrawn,
            aliases,
            summary: raw.summary,
            severity: cvss.or(words),
            affected,
        })
    }

    /// The packages this record names, each once, sorted.
    pub fn keys(&self) -> Vec<PackageKey> {
        let set: BTreeSet<&PackageKey> = self.affected.iter().map(|a| &a.key).collect();
        set.into_iter().cloned().collect()
    }

    /// Match this record against one component, following the OSV evaluation algorithm.
    ///
    /// An entry whose ecosystem names a release (`Debian:12`) applies only to a component
    /// built for that same release: a component whose purl gives no release does not match a
    /// release-scoped entry. For each applicable entry: membership in `versions[]` first, then
    /// each `SEMVER` or `ECOSYSTEM` range (events sorted by version; `introduced` "0" is the
    /// start; `fixed` is exclusive, `last_affected` inclusive, `limit` an exclusive upper
    /// bound); `GIT` ranges count only through `versions[]`. Any entry saying affected wins;
    /// otherwise an entry that cannot be evaluated (no version, a version that does not
    /// parse) gives [`Match::Indeterminate`]. A withdrawn record never matches.
    pub fn check(&self, pkg: &Package) -> Match {
        if self.withdrawn.is_some() {
            return Match::NotAffected;
        }
        let mut affected = false;
        let mut fixed: Option<(version::Version, String)> = None;
        let mut indeterminate: Option<String> = None;
        for entry in self.affected.iter().filter(|a| a.key == pkg.key) {
            if let Some(rel) = &entry.release {
                if pkg.release.as_deref() != Some(rel.as_str()) {
                    continue;
                }
            }
            match entry.evaluate(pkg.version.as_deref()) {
                Eval::Not => {}
                Eval::Unknown(d) => {
                    indeterminate.get_or_insert(d);
                }
                Eval::Affected(f) => {
                    affected = true;
                    if let Some((fv, fs)) = f {
                        if fixed.as_ref().is_none_or(|(cur, _)| fv < *cur) {
                            fixed = Some((fv, fs));
                        }
                    }
                }
            }
        }
        if affected {
            Match::Affected {
                fixed: fixed.map(|(_, s)| s),
            }
        } else if let Some(detail) = indeterminate {
            Match::Indeterminate {
                detail: format!("{}: {detail}", self.id),
            }
        } else {
            Match::NotAffected
        }
    }
}

enum Eval {
    Not,
    Affected(Option<(version::Version, String)>),
    Unknown(String),
}

fn event_version(e: &Event) -> &str {
    match e {
        Event::Introduced(v) | Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => v,
    }
}

impl Affected {
    fn evaluate(&self, version: Option<&str>) -> Eval {
        let Some(v) = version else {
            return Eval::Unknown(format!(
                "{} {} has no version to compare",
                self.key.ecosystem, self.key.name
            ));
        };
        if self.ranges.is_empty() && self.versions.is_empty() {
            return Eval::Unknown("the record lists neither versions nor ranges".into());
        }
        let eco_version = version::parse(&self.ecosystem, v);
        // versions[] first: exact spelling, or equal in the ecosystem's order.
        let listed = self.versions.iter().any(|l| {
            l.trim() == v.trim()
                || eco_version
                    .as_ref()
                    .is_ok_and(|ev| version::parse(&self.ecosystem, l).is_ok_and(|lv| lv == *ev))
        });
        let mut unknown = None;
        let mut in_range = false;
        let mut fixed: Option<(version::Version, String)> = None;
        for r in &self.ranges {
            let eco = match r.kind {
                RangeKind::Git => continue,
                RangeKind::Semver => "SemVer",
                RangeKind::Ecosystem => self.ecosystem.as_str(),
            };
            match range_includes(eco, r, v) {
                Ok((inside, f)) => {
                    in_range |= inside;
                    if let Some((fv, fs)) = f {
                        if fixed.as_ref().is_none_or(|(cur, _)| fv < *cur) {
                            fixed = Some((fv, fs));
                        }
                    }
                }
                Err(e) => {
                    unknown.get_or_insert(e.to_string());
                }
            }
        }
        if listed || in_range {
            return Eval::Affected(fixed);
        }
        if let Some(d) = unknown {
            return Eval::Unknown(d);
        }
        let evaluated = self.ranges.iter().any(|r| r.kind != RangeKind::Git);
        if !evaluated {
            // Only versions[] could say: a version we cannot order is undecided.
            if let Err(e) = eco_version {
                return Eval::Unknown(e.to_string());
            }
        }
        Eval::Not
    }
}

/// Evaluate one range for `v` in `eco`'s ordering: whether it includes `v`, and the smallest
/// `fixed` above `v`.
#[allow(clippy::type_complexity)]
fn range_includes(
    eco: &str,
    r: &Range,
    v: &str,
) -> Result<(bool, Option<(version::Version, String)>), ComplianceError> {
    let v = version::parse(eco, v)?;
    // Sort events by version; "introduced: 0" is before everything.
    let mut events = Vec::with_capacity(r.events.len());
    for e in &r.events {
        let at = match e {
            Event::Introduced(x) if x.trim() == "0" => None,
            other => Some(version::parse(eco, event_version(other))?),
        };
        let rank = match e {
            Event::Introduced(_) => 0,
            Event::Fixed(_) => 1,
            Event::LastAffected(_) => 2,
            Event::Limit(_) => 3,
        };
        events.push((at, rank, e));
    }
    events.sort_by(|a, b| match (&a.0, &b.0) {
        (None, None) => a.1.cmp(&b.1),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y).then(a.1.cmp(&b.1)),
    });
    let mut affected = false;
    let mut fixed: Option<(version::Version, String)> = None;
    let mut limits = Vec::new();
    for (at, _, e) in &events {
        match (e, at) {
            (Event::Introduced(_), None) => affected = true,
            (Event::Introduced(_), Some(x)) if v >= *x => affected = true,
            (Event::Fixed(s), Some(x)) => {
                if v >= *x {
                    affected = false;
                } else if fixed.is_none() {
                    // Events are sorted, so the first fixed above v is the smallest.
                    fixed = Some((x.clone(), s.clone()));
                }
            }
            (Event::LastAffected(_), Some(x)) if v > *x => affected = false,
            (Event::Limit(_), Some(x)) => limits.push(x),
            _ => {}
        }
    }
    if !limits.is_empty() && limits.iter().all(|l| v >= **l) {
        affected = false;
    }
    Ok((affected, if affected { fixed } else { None }))
}

// ---- the index ----------------------------------------------------------------------------

/// What [`Index::insert`] did, with the packages whose results may have changed (the old
/// record's keys and the new one's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A record with a new id.
    Added {
        /// The packages it names.
        keys: Vec<PackageKey>,
    },
    /// A newer version of a stored record replaced it.
    Updated {
        /// The packages the old or the new version names.
        keys: Vec<PackageKey>,
    },
    /// The record was not newer than the stored one (by `modified`) and was ignored.
    Unchanged,
}

impl Inserted {
    /// The packages whose results may have changed (empty when unchanged).
    pub fn keys(&self) -> &[PackageKey] {
        match self {
            Inserted::Added { keys } | Inserted::Updated { keys } => keys,
            Inserted::Unchanged => &[],
        }
    }
}

/// One vulnerability affecting a component: records that alias each other merged into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The preferred id: a CVE id when any record or alias has one, else the smallest id.
    pub id: String,
    /// Every other id and alias of the merged records, sorted.
    pub aliases: Vec<String>,
    /// A summary from the merged records.
    pub summary: Option<String>,
    /// The highest rating among the merged records.
    pub severity: Option<Rating>,
    /// The smallest fixed version above the component's, when any record says.
    pub fixed: Option<String>,
    /// Set when no merged record could say the component is affected but at least one could
    /// not tell: why.
    pub indeterminate: Option<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    advisory: Advisory,
    hash: [u8; 32],
}

/// The advisory database: records by id, with lookups by package and by alias.
#[derive(Debug, Default, Clone)]
pub struct Index {
    records: BTreeMap<String, Stored>,
    by_key: HashMap<PackageKey, BTreeSet<String>>,
    by_alias: HashMap<String, BTreeSet<String>>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Whether `new` is strictly newer than `old` (RFC 3339; text order when either does not parse):
/// the rule by which an import replaces a stored record.
pub fn newer(new: &str, old: &str) -> bool {
    match (timestamp(new), timestamp(old)) {
        (Some(n), Some(o)) => n > o,
        _ => new > old,
    }
}

impl Index {
    /// Add a record, or replace the stored one with the same id when this one's `modified` is
    /// later. `record_bytes` are the record as read; their hash feeds [`Index::digest`].
    pub fn insert(&mut self, a: Advisory, record_bytes: &[u8]) -> Inserted {
        let hash = sha256(record_bytes);
        let new_keys = a.keys();
        let outcome = match self.records.get(&a.id) {
            Some(old) if !newer(&a.modified, &old.advisory.modified) => return Inserted::Unchanged,
            Some(_) => {
                let old = self.remove(&a.id);
                let mut keys: BTreeSet<PackageKey> = old.into_iter().collect();
                keys.extend(new_keys.iter().cloned());
                Inserted::Updated {
                    keys: keys.into_iter().collect(),
                }
            }
            None => Inserted::Added {
                keys: new_keys.clone(),
            },
        };
        for k in new_keys {
            self.by_key.entry(k).or_default().insert(a.id.clone());
        }
        for al in &a.aliases {
            self.by_alias
                .entry(al.clone())
                .or_default()
                .insert(a.id.clone());
        }
        self.records
            .insert(a.id.clone(), Stored { advisory: a, hash });
        outcome
    }

    /// Remove a record from every map; returns its keys.
    fn remove(&mut self, id: &str) -> Vec<PackageKey> {
        let Some(old) = self.records.remove(id) else {
            return Vec::new();
        };
        let keys = old.advisory.keys();
        for k in &keys {
            if let Some(set) = self.by_key.get_mut(k) {
                set.remove(id);
                if set.is_empty() {
                    self.by_key.remove(k);
                }
            }
        }
        for al in &old.advisory.aliases {
            if let Some(set) = self.by_alias.get_mut(al) {
                set.remove(id);
                if set.is_empty() {
                    self.by_alias.remove(al);
                }
            }
        }
        keys
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the index holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A record by its id, or else by an alias some record lists (the smallest such id).
    pub fn get(&self, id: &str) -> Option<&Advisory> {
        if let Some(s) = self.records.get(id) {
            return Some(&s.advisory);
        }
        let first = self.by_alias.get(id)?.iter().next()?;
        self.records.get(first).map(|s| &s.advisory)
    }

    /// Every record, by id.
    pub fn advisories(&self) -> impl Iterator<Item = &Advisory> {
        self.records.values().map(|s| &s.advisory)
    }

    /// Every non-withdrawn record that affects `pkg`, or cannot tell, as hits; records linked
    /// through ids and aliases (in either direction, or by a shared alias) are merged into one
    /// hit. Sorted by hit id.
    pub fn affecting(&self, pkg: &Package) -> Vec<Hit> {
        let Some(ids) = self.by_key.get(&pkg.key) else {
            return Vec::new();
        };
        let mut matched: Vec<(&Advisory, Match)> = Vec::new();
        for id in ids {
            let Some(s) = self.records.get(id) else {
                continue;
            };
            match s.advisory.check(pkg) {
                Match::NotAffected => {}
                m => matched.push((&s.advisory, m)),
            }
        }
        // Union-find over the matched records, linked by any shared name (id or alias).
        let mut parent: Vec<usize> = (0..matched.len()).collect();
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while let Some(&p) = parent.get(i) {
                if p == i {
                    break;
                }
                let gp = parent.get(p).copied().unwrap_or(p);
                if let Some(slot) = parent.get_mut(i) {
                    *slot = gp;
                }
                i = p;
            }
            i
        }
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (i, (a, _)) in matched.iter().enumerate() {
            for name in std::iter::once(&a.id).chain(a.aliases.iter()) {
                match owner.get(name.as_str()) {
                    Some(&j) => {
                        let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                        if ri != rj {
                            if let Some(slot) = parent.get_mut(ri) {
                                *slot = rj;
                            }
                        }
                    }
                    None => {
                        owner.insert(name.as_str(), i);
                    }
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..matched.len() {
            let r = find(&mut parent, i);
            groups.entry(r).or_default().push(i);
        }
        let mut hits: Vec<Hit> = groups
            .values()
            .map(|members| self.merge(pkg, &matched, members))
            .collect();
        hits.sort_by(|a, b| a.id.cmp(&b.id));
        hits
    }

    fn merge(&self, pkg: &Package, matched: &[(&Advisory, Match)], members: &[usize]) -> Hit {
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        let mut summary = None;
        let mut severity = None;
        let mut affected = false;
        let mut fixed: Option<String> = None;
        let mut details: Vec<String> = Vec::new();
        let eco = pkg.key.ecosystem.as_str();
        for (a, m) in members.iter().filter_map(|&i| matched.get(i)) {
            ids.insert(a.id.as_str());
            names.insert(a.id.clone());
            names.extend(a.aliases.iter().cloned());
            if summary.is_none() {
                summary.clone_from(&a.summary);
            }
            severity = higher(severity, a.severity.clone());
            match m {
                Match::Affected { fixed: f } => {
                    affected = true;
                    if let Some(f) = f {
                        let smaller = match &fixed {
                            None => true,
                            Some(cur) => version::compare(eco, f, cur)
                                .map(|o| o == Ordering::Less)
                                .unwrap_or(f < cur),
                        };
                        if smaller {
                            fixed = Some(f.clone());
                        }
                    }
                }
                Match::Indeterminate { detail } => details.push(detail.clone()),
                Match::NotAffected => {}
            }
        }
        let id = names
            .iter()
            .find(|n| n.starts_with("CVE-"))
            .map(String::as_str)
            .or_else(|| ids.iter().next().copied())
            .unwrap_or("")
            .to_string();
        names.remove(&id);
        Hit {
            id,
            aliases: names.into_iter().collect(),
            summary,
            severity,
            fixed,
            indeterminate: if affected {
                None
            } else {
                Some(details.join("; "))
            },
        }
    }

    /// `sha256:<hex>` over every record (sorted by id) as its id and the hash of its bytes: the
    /// same records give the same digest whatever order they were inserted in.
    pub fn digest(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for (id, s) in &self.records {
            ctx.update(&(id.len() as u64).to_be_bytes());
            ctx.update(id.as_bytes());
            ctx.update(&s.hash);
        }
        format!("sha256:{}", hex(ctx.finish().as_ref()))
    }
}
