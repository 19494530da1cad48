//! Verdicts: a profile applied to one device's facts.
//!
//! Two steps, so a fleet is cheap to evaluate: [`assess`] matches one SBOM (a model's firmware)
//! against the advisory index and the VEX statements in scope, once for every device that runs
//! it; [`evaluate`] applies the profile's rules to one device, with its waivers and the times
//! its violations were first seen (grace periods count from those). Both are pure: the caller
//! gathers the facts, persists first-seen times and acts on the verdict. It must not decide
//! what a quarantine does or keep state between calls.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::osv::Index;
use crate::profile::{Action, Check, Profile, Rule};
use crate::sbom::{Gap, Sbom};
use crate::vex::{Statement, Status};
use crate::{purl, version, Severity};

/// A supplier's facts.
#[derive(Debug, Clone, Default)]
pub struct SupplierFacts {
    /// Name.
    pub name: String,
    /// Vulnerability-disclosure contact.
    pub disclosure_contact: Option<String>,
    /// Unix seconds its support ends.
    pub support_end: Option<i64>,
}

/// How a model's firmware versions are ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirmwareScheme {
    /// Semantic versioning.
    Semver,
    /// The listed order, oldest first (opaque version strings).
    Ordered(Vec<String>),
}

impl FirmwareScheme {
    /// Compare two firmware versions; `None` when either cannot be placed.
    pub fn compare(&self, a: &str, b: &str) -> Option<Ordering> {
        match self {
            FirmwareScheme::Semver => version::compare("SemVer", a, b).ok(),
            FirmwareScheme::Ordered(order) => {
                let ia = order.iter().position(|v| v == a)?;
                let ib = order.iter().position(|v| v == b)?;
                Some(ia.cmp(&ib))
            }
        }
    }
}

/// A model's facts.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    /// Name.
    pub name: String,
    /// Firmware ordering.
    pub scheme: FirmwareScheme,
    /// The lowest firmware accepted.
    pub min_firmware: Option<String>,
}

/// The device certificate's facts.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa` or what else the certificate says.
    pub key_algorithm: String,
    /// Key size in bits.
    pub key_bits: u32,
    /// notAfter − notBefore, seconds.
    pub lifetime_secs: i64,
}

/// VEX's word on one vulnerability of one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VexDecision {
    /// The status.
    pub status: Status,
    /// The justification or detail given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The statement's import sequence number, when the caller gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<i64>,
}

/// A vulnerability of one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vulnerability {
    /// Advisory id (a CVE when one of the aliased records names it).
    pub id: String,
    /// The other ids of the same vulnerability.
    pub aliases: Vec<String>,
    /// One line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Severity, when the records rate it.
    pub severity: Option<Severity>,
    /// CVSS base score, when a vector gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The component's package URL.
    pub component: String,
    /// Its version.
    pub version: Option<String>,
    /// The version that fixes it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// What VEX says, when a statement applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vex: Option<VexDecision>,
}

impl Vulnerability {
    /// Whether it still counts after VEX (`not_affected` and `fixed` statements clear it).
    pub fn counts(&self) -> bool {
        !matches!(
            self.vex.as_ref().map(|v| v.status),
            Some(Status::NotAffected | Status::Fixed)
        )
    }

    fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// A component whose vulnerability status cannot be decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Indeterminate {
    /// Package URL, or name when it has none.
    pub component: String,
    /// Why.
    pub detail: String,
}

/// One SBOM against the advisory database and the VEX statements in scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// The SBOM's format.
    pub format: String,
    /// Components listed.
    pub components: usize,
    /// Missing minimum elements.
    pub gaps: Vec<Gap>,
    /// Vulnerabilities found, VEX decisions attached, most severe first.
    pub vulnerabilities: Vec<Vulnerability>,
    /// Components that could not be decided.
    pub indeterminate: Vec<Indeterminate>,
    /// Package URLs with versions, for banned-component checks.
    #[serde(skip)]
    pub purls: Vec<(String, Option<String>)>,
}

/// Match `sbom` against `index`, applying `vex` (in scope for this model and firmware, oldest
/// first: a later statement overrides an earlier one; each with its sequence number).
pub fn assess(sbom: &Sbom, index: &Index, vex: &[(i64, &Statement)]) -> Assessment {
    let mut vulnerabilities = Vec::new();
    let mut indeterminate = Vec::new();
    let mut purls = Vec::with_capacity(sbom.components.len());
    for c in &sbom.components {
        let Some(p) = c.purl.as_deref() else {
            indeterminate.push(Indeterminate {
                component: c.name.clone(),
                detail: "no package URL: it cannot be matched (no fuzzy CPE matching)".into(),
            });
            continue;
        };
        purls.push((p.to_owned(), c.version.clone()));
        let pkg = match purl::package(p) {
            Ok(pkg) => pkg,
            Err(e) => {
                indeterminate.push(Indeterminate {
                    component: p.to_owned(),
                    detail: e.to_string(),
                });
                continue;
            }
        };
        let mut undecided: Option<String> = None;
        for hit in index.affecting(&pkg) {
            if let Some(why) = hit.indeterminate {
                undecided.get_or_insert(format!("{why} (named by {})", hit.id));
                continue;
            }
            let mut v = Vulnerability {
                id: hit.id,
                aliases: hit.aliases,
                summary: hit.summary,
                severity: hit.severity.as_ref().map(|r| r.level),
                score: hit.severity.as_ref().and_then(|r| r.score),
                component: p.to_owned(),
                version: pkg.version.clone(),
                fixed: hit.fixed,
                vex: None,
            };
            v.vex = vex_decision(&v, p, vex);
            vulnerabilities.push(v);
        }
        if let Some(detail) = undecided {
            indeterminate.push(Indeterminate {
                component: p.to_owned(),
                detail,
            });
        }
    }
    vulnerabilities.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
    Assessment {
        format: sbom.format.clone(),
        components: sbom.components.len(),
        gaps: sbom.minimum_elements(),
        vulnerabilities,
        indeterminate,
        purls,
    }
}

/// The latest statement about this vulnerability of this component.
fn vex_decision(v: &Vulnerability, purl: &str, vex: &[(i64, &Statement)]) -> Option<VexDecision> {
    vex.iter()
        .rev()
        .find(|(_, s)| {
            let names_vuln = std::iter::once(s.vulnerability.as_str())
                .chain(s.aliases.iter().map(String::as_str))
                .any(|id| v.ids().any(|x| x.eq_ignore_ascii_case(id)));
            names_vuln
                && (s.components.is_empty() || s.components.iter().any(|c| purl_matches(c, purl)))
        })
        .map(|(seq, s)| VexDecision {
            status: s.status,
            justification: s.justification.clone().or_else(|| s.detail.clone()),
            statement: Some(*seq),
        })
}

/// Whether `pattern` (a package URL, with or without version; a trailing `*` is a prefix)
/// names the component `purl`. Qualifiers and subpaths are ignored on both sides.
pub fn purl_matches(pattern: &str, purl: &str) -> bool {
    let strip = |s: &str| -> String {
        let s = s.split(['?', '#']).next().unwrap_or(s);
        s.to_ascii_lowercase()
    };
    let (pat, comp) = (strip(pattern), strip(purl));
    if let Some(prefix) = pat.strip_suffix('*') {
        return comp.starts_with(prefix);
    }
    if pat.contains('@') {
        return pat == comp;
    }
    let comp_name = comp.split('@').next().unwrap_or(&comp);
    pat == comp_name
}

/// A waiver as evaluation needs it.
#[derive(Debug, Clone)]
pub struct Waiver {
    /// Id.
    pub id: i64,
    /// Rule id.
    pub rule: String,
    /// Device it covers.
    pub device: Option<String>,
    /// Model it covers.
    pub model: Option<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Everything known about one device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// Device id.
    pub id: &'a str,
    /// Groups.
    pub groups: &'a [String],
    /// Supplier name, when known.
    pub supplier_name: Option<&'a str>,
    /// The supplier's facts, when it is registered.
    pub supplier: Option<&'a SupplierFacts>,
    /// Model name, when known.
    pub model_name: Option<&'a str>,
    /// The model's facts, when it is registered.
    pub model: Option<&'a ModelFacts>,
    /// Running firmware, when known.
    pub firmware: Option<&'a str>,
    /// The assessment of the SBOM of its model and firmware, when there is one.
    pub sbom: Option<&'a Assessment>,
    /// Its current certificate, when known.
    pub certificate: Option<&'a CertFacts>,
}

/// Where a finding stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum FindingState {
    /// The rule is violated: its action applies.
    Violation,
    /// Violated, but within its grace period.
    Grace {
        /// Unix seconds the grace period ends.
        until: i64,
    },
    /// Violated, but waived.
    Waived {
        /// The waiver.
        waiver: i64,
        /// Unix seconds it expires.
        until: i64,
    },
}

/// One way a device falls short of one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Rule id.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's action.
    pub action: Action,
    /// Where it stands.
    #[serde(flatten)]
    pub state: FindingState,
    /// What is wrong, in words.
    pub message: String,
    /// Advisory ids involved (of the worst few, every alias).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<String>,
    /// Component involved (the worst one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Fix version (of the worst item), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// Items aggregated into this finding (vulnerabilities, components, missing elements).
    pub count: usize,
}

/// A device's verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Findings, by rule order.
    pub findings: Vec<Finding>,
    /// When the verdict changes by itself (a grace period or waiver ends, support ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_change: Option<i64>,
    /// Grace-period clocks in use: (`rule/advisory/component`, first seen), for the caller
    /// to keep; a clock not listed here any more can be forgotten.
    #[serde(skip)]
    pub clocks: Vec<(String, i64)>,
}

impl Verdict {
    /// Whether no finding is in force (waived and grace findings do not count).
    pub fn compliant(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| f.state == FindingState::Violation)
    }

    /// Rules whose `quarantine` action is in force, with their findings.
    pub fn quarantining(&self) -> BTreeMap<&str, Vec<&Finding>> {
        let mut out: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            if f.action == Action::Quarantine && f.state == FindingState::Violation {
                out.entry(f.rule.as_str()).or_default().push(f);
            }
        }
        out
    }

    /// Rules violated (in force), quarantining or reporting.
    pub fn failing_rules(&self) -> BTreeSet<&str> {
        self.findings
            .iter()
            .filter(|f| f.state == FindingState::Violation)
            .map(|f| f.rule.as_str())
            .collect()
    }

    fn soonest(&mut self, at: i64) {
        self.next_change = Some(self.next_change.map_or(at, |n| n.min(at)));
    }
}

/// Apply `profile` to a device. `first_seen(key)` is when a violation was first seen (grace
/// periods count from it; `None`: now). `now` is Unix seconds.
pub fn evaluate(
    profile: &Profile,
    d: &DeviceFacts<'_>,
    waivers: &[Waiver],
    first_seen: &dyn Fn(&str) -> Option<i64>,
    now: i64,
) -> Verdict {
    let mut verdict = Verdict::default();
    for rule in &profile.rules {
        if !rule.scope.covers(d.supplier_name, d.model_name, d.groups) {
            continue;
        }
        let mut raw = Vec::new();
        check(rule, d, now, first_seen, &mut raw, &mut verdict);
        let waiver = waivers
            .iter()
            .filter(|w| w.rule == rule.id && w.expires_at > now)
            .filter(|w| {
                w.device.as_deref() == Some(d.id)
                    || (w.model.is_some() && w.model.as_deref() == d.model_name)
            })
            .max_by_key(|w| w.expires_at);
        for r in raw {
            let mut state = match r.grace_until {
                Some(until) => {
                    verdict.soonest(until);
                    FindingState::Grace { until }
                }
                None => FindingState::Violation,
            };
            if let Some(w) = waiver {
                state = FindingState::Waived {
                    waiver: w.id,
                    until: w.expires_at,
                };
                verdict.soonest(w.expires_at);
            }
            verdict.findings.push(Finding {
                rule: rule.id.clone(),
                severity: rule.severity,
                action: rule.action,
                state,
                message: r.message,
                count: r.count,
                advisories: r.advisories,
                component: r.component,
                fixed: r.fixed,
            });
        }
    }
    verdict
}

/// At most this many advisory ids (worst first) are named in one finding; the assessment
/// lists them all.
pub const ADVISORIES_PER_FINDING: usize = 10;

/// A finding before waivers: one per rule (items of a kind are aggregated).
struct Raw {
    message: String,
    count: usize,
    advisories: Vec<String>,
    component: Option<String>,
    fixed: Option<String>,
    /// Within its grace period until then (only when nothing in it is past its grace).
    grace_until: Option<i64>,
}

impl Raw {
    fn simple(message: String) -> Raw {
        Raw {
            message,
            count: 1,
            advisories: Vec::new(),
            component: None,
            fixed: None,
            grace_until: None,
        }
    }

    /// One finding for `items` (each a message, component), or none when empty.
    fn aggregate(what: &str, items: Vec<(String, Option<String>)>) -> Option<Raw> {
        let count = items.len();
        let mut it = items.into_iter();
        let (first, component) = it.next()?;
        let message = if count == 1 {
            first
        } else {
            format!("{first} (+{} more {what})", count - 1)
        };
        Some(Raw {
            message,
            count,
            component,
            ..Raw::simple(String::new())
        })
    }
}

fn check(
    rule: &Rule,
    d: &DeviceFacts<'_>,
    now: i64,
    first_seen: &dyn Fn(&str) -> Option<i64>,
    out: &mut Vec<Raw>,
    verdict: &mut Verdict,
) {
    let what = || {
        format!(
            "{} {} firmware {}",
            d.supplier_name.unwrap_or("(no supplier)"),
            d.model_name.unwrap_or("(no model)"),
            d.firmware.unwrap_or("(not reported)")
        )
    };
    match &rule.check {
        Check::SbomRequired => {
            if d.sbom.is_none() {
                let why = if d.model_name.is_none() {
                    "the device has no model recorded".to_owned()
                } else if d.firmware.is_none() {
                    "the device has not reported its firmware".to_owned()
                } else {
                    format!("no SBOM was imported for {}", what())
                };
                out.push(Raw::simple(format!("no SBOM: {why}")));
            }
        }
        Check::SbomMinimumElements => {
            if let Some(a) = d.sbom {
                let items = a
                    .gaps
                    .iter()
                    .map(|g| {
                        let examples = if g.examples.is_empty() {
                            String::new()
                        } else {
                            format!(" (e.g. {})", g.examples.join(", "))
                        };
                        (
                            format!(
                                "the SBOM of {} lacks the minimum element \"{}\" ({} missing){examples}",
                                what(),
                                g.element,
                                g.missing
                            ),
                            None,
                        )
                    })
                    .collect();
                out.extend(Raw::aggregate("missing elements", items));
            }
        }
        Check::MinFirmware { per_model } => {
            let min = d
                .model_name
                .and_then(|m| per_model.get(m).cloned())
                .or_else(|| d.model.and_then(|m| m.min_firmware.clone()));
            let Some(min) = min else { return };
            let scheme = d.model.map_or(FirmwareScheme::Semver, |m| m.scheme.clone());
            match d.firmware {
                None => out.push(Raw::simple(format!(
                    "firmware not reported; at least {min} is required"
                ))),
                Some(fw) => match scheme.compare(fw, &min) {
                    Some(Ordering::Less) => out.push(Raw {
                        fixed: Some(min.clone()),
                        ..Raw::simple(format!("firmware {fw} is older than the minimum {min}"))
                    }),
                    Some(_) => {}
                    None => out.push(Raw::simple(format!(
                        "firmware {fw} cannot be compared with the minimum {min}"
                    ))),
                },
            }
        }
        Check::BannedComponents { components } => {
            let Some(a) = d.sbom else {
                out.extend(unassessable(d));
                return;
            };
            let mut items = Vec::new();
            for b in components {
                for (purl, v) in &a.purls {
                    if !purl_matches(&b.purl, purl) {
                        continue;
                    }
                    let banned = match (&b.versions, v) {
                        (None, _) => true,
                        (Some(c), Some(v)) => {
                            let eco = purl::package(purl).map(|p| p.key.ecosystem).ok();
                            eco.and_then(|e| c.matches(&e, v).ok()).unwrap_or(true)
                        }
                        // A banned range and no version: cannot be cleared.
                        (Some(_), None) => true,
                    };
                    if banned {
                        let why = b
                            .reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default();
                        items.push((format!("banned component {purl}{why}"), Some(purl.clone())));
                    }
                }
            }
            out.extend(Raw::aggregate("banned components", items));
        }
        Check::MaxSeverity { max, grace } => {
            let Some(a) = d.sbom else {
                out.extend(unassessable(d));
                return;
            };
            // Worst first (the assessment is sorted so), unrated taken as critical.
            let mut over: Vec<(&Vulnerability, Severity)> = a
                .vulnerabilities
                .iter()
                .filter(|v| v.counts())
                .map(|v| (v, v.severity.unwrap_or(Severity::Critical)))
                .filter(|(_, sev)| sev > max)
                .collect();
            over.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.id.cmp(&y.0.id)));
            let mut violating = Vec::new();
            let mut in_grace: Option<i64> = None;
            let mut graced = 0usize;
            for (v, sev) in &over {
                match grace.get(sev).copied().filter(|g| *g > 0) {
                    Some(g) => {
                        let key = clock_key(&rule.id, v);
                        let since = first_seen(&key).unwrap_or(now);
                        verdict.clocks.push((key, since));
                        let until = since.saturating_add(g);
                        if until > now {
                            graced += 1;
                            in_grace = Some(in_grace.map_or(until, |u| u.min(until)));
                            continue;
                        }
                        violating.push((*v, *sev));
                    }
                    None => violating.push((*v, *sev)),
                }
            }
            let describe = |v: &Vulnerability, sev: Severity| {
                let rated = match v.severity {
                    Some(_) => sev.to_string(),
                    None => "unrated, taken as critical".into(),
                };
                let fix = v
                    .fixed
                    .as_deref()
                    .map(|f| format!(", fixed in {f}"))
                    .unwrap_or_default();
                format!("{} ({rated}) in {}{fix}", v.id, v.component)
            };
            let list = if violating.is_empty() {
                &over
            } else {
                &violating
            };
            let Some((worst, sev)) = list.first().copied() else {
                return;
            };
            let more = if list.len() > 1 {
                format!(" and {} more", list.len() - 1)
            } else {
                String::new()
            };
            let mut message = format!("{}{more}; above the allowed {max}", describe(worst, sev));
            if !violating.is_empty() && graced > 0 {
                message.push_str(&format!(" ({graced} more within their grace period)"));
                if let Some(u) = in_grace {
                    verdict.soonest(u);
                }
            }
            let mut advisories: Vec<String> = Vec::new();
            for (v, _) in list.iter().take(ADVISORIES_PER_FINDING) {
                advisories.extend(v.ids().map(str::to_owned));
            }
            out.push(Raw {
                message,
                count: list.len(),
                advisories,
                component: Some(worst.component.clone()),
                fixed: worst.fixed.clone(),
                grace_until: if violating.is_empty() { in_grace } else { None },
            });
        }
        Check::NoIndeterminate => {
            let Some(a) = d.sbom else {
                out.extend(unassessable(d));
                return;
            };
            let items = a
                .indeterminate
                .iter()
                .map(|i| {
                    (
                        format!("{} cannot be matched: {}", i.component, i.detail),
                        Some(i.component.clone()),
                    )
                })
                .collect();
            out.extend(Raw::aggregate("indeterminate components", items));
        }
        Check::KeyAlgorithm {
            allowed,
            min_rsa_bits,
        } => {
            // A key recorded before Tollgate kept keys is not known: no finding either way.
            let Some(c) = d.certificate.filter(|c| c.key_algorithm != "unknown") else {
                return;
            };
            let ok = allowed.contains(&c.key_algorithm)
                && (c.key_algorithm != "rsa" || c.key_bits >= *min_rsa_bits);
            if !ok {
                out.push(Raw::simple(format!(
                    "certificate key {} ({} bits) is not allowed (allowed: {}; RSA at least {} bits)",
                    c.key_algorithm,
                    c.key_bits,
                    allowed.join(", "),
                    min_rsa_bits
                )));
            }
        }
        Check::MaxCertificateLifetime { seconds } => {
            if let Some(c) = d.certificate.filter(|c| c.lifetime_secs > *seconds) {
                out.push(Raw::simple(format!(
                    "certificate lifetime {} is longer than the allowed {}",
                    human_secs(c.lifetime_secs),
                    human_secs(*seconds)
                )));
            }
        }
        Check::SupplierAllowlist { suppliers } => {
            let ok = d
                .supplier_name
                .is_some_and(|s| suppliers.iter().any(|x| x == s));
            if !ok {
                out.push(Raw::simple(format!(
                    "supplier {} is not on the allowlist ({})",
                    d.supplier_name.unwrap_or("(none recorded)"),
                    suppliers.join(", ")
                )));
            }
        }
        Check::SupplierSupported => match d.supplier.and_then(|s| s.support_end) {
            Some(end) if end <= now => out.push(Raw::simple(format!(
                "supplier {}'s support period ended",
                d.supplier_name.unwrap_or_default()
            ))),
            Some(end) => verdict.soonest(end),
            None if d.supplier.is_none() => out.push(Raw::simple(
                "no registered supplier: its support period is unknown".into(),
            )),
            None => {}
        },
        Check::SupplierDisclosureContact => {
            let has = d
                .supplier
                .and_then(|s| s.disclosure_contact.as_deref())
                .is_some_and(|c| !c.trim().is_empty());
            if !has {
                out.push(Raw::simple(format!(
                    "supplier {} has no vulnerability-disclosure contact",
                    d.supplier_name.unwrap_or("(none recorded)")
                )));
            }
        }
    }
}

/// A device whose model and firmware are known but whose firmware has no SBOM cannot be
/// assessed: unknown is never clean. (Devices with no model or firmware recorded are left to
/// `require_sbom` rules.)
fn unassessable(d: &DeviceFacts<'_>) -> Option<Raw> {
    match (d.model_name, d.firmware) {
        (Some(m), Some(fw)) => Some(Raw::simple(format!(
            "{} {m} firmware {fw} has no SBOM: its components cannot be assessed",
            d.supplier_name.unwrap_or("(no supplier)")
        ))),
        _ => None,
    }
}

/// A grace clock's identity that survives what does not change the flaw or the component: the
/// smallest of the vulnerability's ids (a CVE alias added later does not restart it) and the
/// package URL without version or qualifiers (an update that stays vulnerable does not either).
fn clock_key(rule: &str, v: &Vulnerability) -> String {
    let id = v.ids().min().unwrap_or(&v.id);
    let component = v
        .component
        .split(['@', '?', '#'])
        .next()
        .unwrap_or(&v.component);
    format!("{rule}/{id}/{component}")
}

/// Seconds in words: `72h`, `30d`, `90s`.
pub fn human_secs(s: i64) -> String {
    if s % 86_400 == 0 && s != 0 {
        format!("{}d", s / 86_400)
    } else if s % 3600 == 0 && s != 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 && s != 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osv::Advisory;
    use crate::sbom::Component;

    const URLLIB3: &str = r#"{"id": "PYSEC-2021-108", "modified": "2021-06-15T12:00:00Z",
      "aliases": ["CVE-2021-33503", "GHSA-q2q7-5pp4-w6pg"],
      "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
      "affected": [{"package": {"ecosystem": "PyPI", "name": "urllib3"},
        "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.26.5"}]}]}]}"#;

    fn sbom(components: &[(&str, Option<&str>, Option<&str>)]) -> Sbom {
        Sbom {
            format: "CycloneDX 1.5".into(),
            authors: vec!["acme".into()],
            supplier: Some("acme".into()),
            timestamp: Some("2026-11-30T00:00:00Z".into()),
            tools: vec![],
            components: components
                .iter()
                .map(|(name, version, purl)| Component {
                    name: (*name).into(),
                    version: version.map(str::to_owned),
                    purl: purl.map(str::to_owned),
                    supplier: Some("upstream".into()),
                    cpe: None,
                })
                .collect(),
            vex: vec![],
        }
    }

    fn index() -> Index {
        let mut i = Index::default();
        let a = Advisory::parse(URLLIB3.as_bytes(), "test").expect("parses");
        i.insert(a, URLLIB3.as_bytes());
        i
    }

    fn profile(text: &str) -> Profile {
        Profile::parse(text, "compliance.toml").expect("profile")
    }

    fn facts<'a>(a: Option<&'a Assessment>) -> DeviceFacts<'a> {
        DeviceFacts {
            id: "scanner-1",
            groups: &[],
            supplier_name: Some("acme"),
            supplier: None,
            model_name: Some("Scanner-X2"),
            model: None,
            firmware: Some("1.2.0"),
            sbom: a,
            certificate: None,
        }
    }

    fn statement(status: Status, component: &str) -> Statement {
        Statement {
            vulnerability: "CVE-2021-33503".into(),
            aliases: vec![],
            products: vec![],
            components: vec![component.into()],
            status,
            justification: Some("vulnerable_code_not_in_execute_path".into()),
            detail: None,
            action: None,
            timestamp: None,
        }
    }

    #[test]
    fn a_vulnerable_component_violates_max_severity_and_the_fixed_one_does_not() {
        let idx = index();
        let p =
            profile("[[rule]]\nid = \"v\"\nmax_severity = \"medium\"\naction = \"quarantine\"\n");
        let bad = assess(
            &sbom(&[("urllib3", Some("1.26.4"), Some("pkg:pypi/urllib3@1.26.4"))]),
            &idx,
            &[],
        );
        assert_eq!(bad.vulnerabilities.len(), 1, "{bad:?}");
        assert_eq!(bad.vulnerabilities[0].fixed.as_deref(), Some("1.26.5"));
        assert_eq!(bad.vulnerabilities[0].severity, Some(Severity::High));
        let v = evaluate(&p, &facts(Some(&bad)), &[], &|_| None, 1000);
        assert!(!v.compliant());
        assert_eq!(v.quarantining().keys().copied().collect::<Vec<_>>(), ["v"]);
        let f = &v.findings[0];
        assert!(f.advisories.iter().any(|a| a == "CVE-2021-33503"), "{f:?}");
        assert!(f.message.contains("fixed in 1.26.5"), "{f:?}");

        let good = assess(
            &sbom(&[("urllib3", Some("1.26.5"), Some("pkg:pypi/urllib3@1.26.5"))]),
            &idx,
            &[],
        );
        assert!(good.vulnerabilities.is_empty());
        assert!(evaluate(&p, &facts(Some(&good)), &[], &|_| None, 1000).compliant());
    }

    #[test]
    fn vex_not_affected_clears_and_a_later_affected_statement_overrides_it() {
        let idx = index();
        let s = sbom(&[("urllib3", Some("1.26.4"), Some("pkg:pypi/urllib3@1.26.4"))]);
        let p =
            profile("[[rule]]\nid = \"v\"\nmax_severity = \"medium\"\naction = \"quarantine\"\n");
        let na = statement(Status::NotAffected, "pkg:pypi/urllib3");
        let a = assess(&s, &idx, &[(1, &na)]);
        assert!(!a.vulnerabilities[0].counts());
        assert!(evaluate(&p, &facts(Some(&a)), &[], &|_| None, 0).compliant());
        let aff = statement(Status::Affected, "pkg:pypi/urllib3@1.26.4");
        let a = assess(&s, &idx, &[(1, &na), (2, &aff)]);
        assert!(a.vulnerabilities[0].counts(), "the later statement wins");
        assert!(!evaluate(&p, &facts(Some(&a)), &[], &|_| None, 0).compliant());
        // A statement about another component does not apply.
        let other = statement(Status::NotAffected, "pkg:pypi/requests");
        let a = assess(&s, &idx, &[(3, &other)]);
        assert!(a.vulnerabilities[0].counts());
    }

    #[test]
    fn grace_periods_count_from_first_seen_and_waivers_expire() {
        let idx = index();
        let s = sbom(&[("urllib3", Some("1.26.4"), Some("pkg:pypi/urllib3@1.26.4"))]);
        let a = assess(&s, &idx, &[]);
        let p = profile("[[rule]]\nid = \"v\"\nmax_severity = \"medium\"\ngrace = { high = \"72h\" }\naction = \"quarantine\"\n");
        let now = 1_000_000;
        let v = evaluate(&p, &facts(Some(&a)), &[], &|_| None, now);
        assert_eq!(
            v.findings[0].state,
            FindingState::Grace {
                until: now + 72 * 3600
            }
        );
        assert!(v.compliant(), "within grace");
        assert_eq!(v.next_change, Some(now + 72 * 3600));
        assert_eq!(v.clocks.len(), 1, "{v:?}");
        let key = v.clocks[0].0.clone();
        let seen = move |k: &str| (k == key).then_some(now);
        let later = evaluate(&p, &facts(Some(&a)), &[], &seen, now + 72 * 3600);
        assert_eq!(later.findings[0].state, FindingState::Violation);

        let w = Waiver {
            id: 7,
            rule: "v".into(),
            device: Some("scanner-1".into()),
            model: None,
            expires_at: now + 10,
        };
        let p =
            profile("[[rule]]\nid = \"v\"\nmax_severity = \"medium\"\naction = \"quarantine\"\n");
        let v = evaluate(
            &p,
            &facts(Some(&a)),
            std::slice::from_ref(&w),
            &|_| None,
            now,
        );
        assert_eq!(
            v.findings[0].state,
            FindingState::Waived {
                waiver: 7,
                until: now + 10
            }
        );
        assert!(v.quarantining().is_empty());
        assert_eq!(v.next_change, Some(now + 10));
        let v = evaluate(&p, &facts(Some(&a)), &[w], &|_| None, now + 10);
        assert_eq!(v.findings[0].state, FindingState::Violation, "expired");
    }

    #[test]
    fn a_known_firmware_without_an_sbom_is_not_clean_and_grace_clocks_survive_updates() {
        let p = profile("[[rule]]\nid = \"v\"\nmax_severity = \"medium\"\ngrace = { high = \"72h\" }\naction = \"quarantine\"\n");
        let v = evaluate(&p, &facts(None), &[], &|_| None, 0);
        assert!(!v.compliant(), "no SBOM for a known firmware: {v:?}");
        assert!(v.findings[0].message.contains("has no SBOM"), "{v:?}");
        let mut unknown = facts(None);
        unknown.firmware = None;
        assert!(
            evaluate(&p, &unknown, &[], &|_| None, 0).compliant(),
            "nothing recorded: left to require_sbom"
        );
        // The same flaw in the next (still vulnerable) version keeps its clock.
        let idx = index();
        let a1 = assess(
            &sbom(&[("urllib3", Some("1.26.3"), Some("pkg:pypi/urllib3@1.26.3"))]),
            &idx,
            &[],
        );
        let a2 = assess(
            &sbom(&[(
                "urllib3",
                Some("1.26.4"),
                Some("pkg:pypi/urllib3@1.26.4?x=1"),
            )]),
            &idx,
            &[],
        );
        let k1 = evaluate(&p, &facts(Some(&a1)), &[], &|_| None, 0).clocks;
        let k2 = evaluate(&p, &facts(Some(&a2)), &[], &|_| None, 0).clocks;
        assert_eq!(k1.len(), 1);
        assert_eq!(k1[0].0, k2[0].0, "one clock across versions");
        assert_eq!(k1[0].0, "v/CVE-2021-33503/pkg:pypi/urllib3");
    }

    #[test]
    fn report_rules_never_quarantine_and_indeterminate_components_are_never_clean() {
        let idx = index();
        let s = sbom(&[
            ("urllib3", None, Some("pkg:pypi/urllib3")),
            ("blob", Some("1"), None),
        ]);
        let a = assess(&s, &idx, &[]);
        assert_eq!(a.indeterminate.len(), 2, "{a:?}");
        let p = profile("[[rule]]\nid = \"i\"\nallow_indeterminate = false\naction = \"report\"\n");
        let v = evaluate(&p, &facts(Some(&a)), &[], &|_| None, 0);
        assert!(!v.compliant());
        assert!(v.quarantining().is_empty(), "report only");
    }

    #[test]
    fn firmware_supplier_banned_and_sbom_rules() {
        let idx = index();
        let s = sbom(&[("pyyaml", Some("5.3.1"), Some("pkg:pypi/pyyaml@5.3.1"))]);
        let a = assess(&s, &idx, &[]);
        let p = profile(
            r#"
[[rule]]
id = "fw"
min_firmware = true
action = "quarantine"
[[rule]]
id = "banned"
banned_components = [{ purl = "pkg:pypi/pyyaml", versions = "< 5.4" }]
action = "quarantine"
[[rule]]
id = "allow"
supplier_allowlist = ["globex"]
action = "report"
[[rule]]
id = "support"
supplier_supported = true
action = "report"
[[rule]]
id = "contact"
supplier_disclosure_contact = true
action = "report"
[[rule]]
id = "sbom"
require_sbom = true
action = "quarantine"
"#,
        );
        let model = ModelFacts {
            name: "Scanner-X2".into(),
            scheme: FirmwareScheme::Semver,
            min_firmware: Some("1.3.0".into()),
        };
        let supplier = SupplierFacts {
            name: "acme".into(),
            disclosure_contact: None,
            support_end: Some(500),
        };
        let mut f = facts(Some(&a));
        f.model = Some(&model);
        f.supplier = Some(&supplier);
        let v = evaluate(&p, &f, &[], &|_| None, 1000);
        let failing: Vec<&str> = v.failing_rules().into_iter().collect();
        assert_eq!(
            failing,
            ["allow", "banned", "contact", "fw", "support"],
            "{v:?}"
        );
        let v = evaluate(&p, &f, &[], &|_| None, 100);
        assert!(!v.failing_rules().contains("support"));
        assert_eq!(v.next_change, Some(500), "support end is a deadline");
        f.sbom = None;
        assert!(evaluate(&p, &f, &[], &|_| None, 100)
            .failing_rules()
            .contains("sbom"));
        let ordered = FirmwareScheme::Ordered(vec!["r1".into(), "r10".into(), "r2".into()]);
        assert_eq!(ordered.compare("r10", "r2"), Some(Ordering::Less));
        assert_eq!(ordered.compare("r3", "r2"), None);
    }
}
