//! Compliance profiles: `compliance.toml`.
//!
//! Owns the profile format and its validation: rules with ids, a severity, an action
//! (`quarantine` or `report`), a scope (suppliers, models, groups) and exactly one check. Every
//! problem is reported with its line and column, all at once, so an operator fixes a file in
//! one go; a file with any problem is refused whole (the caller keeps the last good one). It
//! must not evaluate anything: [`crate::evaluate`] applies a [`Profile`] to a device's facts.
//!
//! ```toml
//! [[rule]]
//! id = "no-high-vulns"
//! max_severity = "medium"    # a vulnerability rated high or critical violates the rule
//! action = "quarantine"
//! grace = { high = "72h" }   # optional: how long each severity may stay before it counts
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::version::Constraint;
use crate::{ComplianceError, Severity};

/// The largest profile read, in bytes.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;

/// What a violated rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Confine the device to the quarantine policy until nothing holds it.
    Quarantine,
    /// Report only.
    Report,
}

impl Action {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Quarantine => "quarantine",
            Action::Report => "report",
        }
    }
}

/// Which devices a rule applies to: every list that is not empty must match (a device's
/// supplier is one of `suppliers`, and its model one of `models`, and it is in one of
/// `groups`); all empty means every device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Supplier names.
    pub suppliers: Vec<String>,
    /// Model names.
    pub models: Vec<String>,
    /// Group names.
    pub groups: Vec<String>,
}

impl Scope {
    /// Whether a device with this supplier, model and groups is in scope.
    pub fn covers(&self, supplier: Option<&str>, model: Option<&str>, groups: &[String]) -> bool {
        let one_of = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
        };
        one_of(&self.suppliers, supplier)
            && one_of(&self.models, model)
            && (self.groups.is_empty() || groups.iter().any(|g| self.groups.contains(g)))
    }
}

/// A component no device may carry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Banned {
    /// A package URL without version (`pkg:pypi/pyyaml`); a trailing `*` matches any name
    /// that starts with what precedes it (`pkg:npm/@evil/*`).
    pub purl: String,
    /// Versions banned (all when absent), e.g. `< 5.4`.
    #[serde(serialize_with = "constraint_text")]
    pub versions: Option<Constraint>,
    /// Why, shown in findings.
    pub reason: Option<String>,
}

fn constraint_text<S: serde::Serializer>(c: &Option<Constraint>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_str(&c.to_string()),
        None => s.serialize_none(),
    }
}

/// What a rule checks. Exactly one per rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "check")]
pub enum Check {
    /// The device's (model, firmware) has an SBOM.
    SbomRequired,
    /// That SBOM has the CISA minimum elements.
    SbomMinimumElements,
    /// The device runs at least the minimum firmware of its model (the model's own minimum,
    /// or the one the rule sets per model).
    MinFirmware {
        /// Per-model minimums that override the models' own.
        per_model: BTreeMap<String, String>,
    },
    /// None of these components.
    BannedComponents {
        /// The banned components.
        components: Vec<Banned>,
    },
    /// No vulnerability above `max` (after VEX), each severity after its grace period.
    MaxSeverity {
        /// The highest severity allowed.
        max: Severity,
        /// Seconds a vulnerability of a severity may stay before it violates the rule.
        grace: BTreeMap<Severity, i64>,
    },
    /// No component whose vulnerability status cannot be decided (missing or unparseable
    /// version, unknown package URL type).
    NoIndeterminate,
    /// The device certificate's key is one of these algorithms, of at least these sizes.
    KeyAlgorithm {
        /// Allowed: `ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa`.
        allowed: Vec<String>,
        /// The smallest RSA modulus allowed, in bits.
        min_rsa_bits: u32,
    },
    /// The device certificate's lifetime is at most this many seconds.
    MaxCertificateLifetime {
        /// Seconds.
        seconds: i64,
    },
    /// The device's supplier is one of these.
    SupplierAllowlist {
        /// Supplier names.
        suppliers: Vec<String>,
    },
    /// The supplier's support period has not ended.
    SupplierSupported,
    /// The supplier has a vulnerability-disclosure contact.
    SupplierDisclosureContact,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Unique id (quarantine reasons are held per rule: `compliance:<id>`).
    pub id: String,
    /// What it is for.
    pub description: Option<String>,
    /// How serious a violation is (default `high`).
    pub severity: Severity,
    /// What a violation does.
    pub action: Action,
    /// Which devices it applies to.
    pub scope: Scope,
    /// What it checks.
    pub check: Check,
    /// Line of the rule in the file.
    pub line: usize,
}

/// A loaded profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Profile {
    /// Rules, in file order.
    pub rules: Vec<Rule>,
}

impl Profile {
    /// Parse a profile; `source` names it in errors (`compliance.toml`).
    pub fn parse(text: &str, source: &str) -> Result<Profile, ComplianceError> {
        if text.len() > MAX_PROFILE_BYTES {
            return Err(ComplianceError::TooLarge {
                what: source.to_owned(),
                size: text.len() as u64,
                limit: MAX_PROFILE_BYTES as u64,
            });
        }
        let at = |offset: usize| {
            let (line, col) = line_col(text, offset);
            format!("{source}:{line}:{col}")
        };
        let file: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            ComplianceError::Profile(vec![format!(
                "{}: {}",
                at(offset),
                e.message().trim().replace('\n', "; ")
            )])
        })?;
        let mut errors = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        let mut ids: Vec<(String, usize)> = Vec::new();
        for raw in file.rule {
            let offset = raw.span().start;
            let (line, _) = line_col(text, offset);
            let raw = raw.into_inner();
            let id = raw.id.get_ref().clone();
            let mut err =
                |offset: usize, msg: String| errors.push(format!("{}: {msg}", at(offset)));
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                err(
                    raw.id.span().start,
                    format!("rule id {id:?} must be letters, digits, '-', '_' or '.'"),
                );
            }
            if let Some((_, first)) = ids.iter().find(|(i, _)| *i == id) {
                err(
                    raw.id.span().start,
                    format!("duplicate rule id `{id}`; already used by the rule on line {first}"),
                );
            }
            ids.push((id.clone(), line));
            match raw.check(&mut err, offset) {
                Some(check) => rules.push(Rule {
                    id,
                    description: raw.description,
                    severity: raw.severity.unwrap_or(Severity::High),
                    action: raw.action,
                    scope: Scope {
                        suppliers: raw.suppliers,
                        models: raw.models,
                        groups: raw.groups,
                    },
                    check,
                    line,
                }),
                None => continue,
            }
        }
        if errors.is_empty() {
            Ok(Profile { rules })
        } else {
            Err(ComplianceError::Profile(errors))
        }
    }

    /// A rule by id.
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MinFirmware {
    Models(bool),
    PerModel(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBanned {
    purl: String,
    versions: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    description: Option<String>,
    severity: Option<Severity>,
    action: Action,
    #[serde(default)]
    suppliers: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    require_sbom: Option<Spanned<bool>>,
    sbom_minimum_elements: Option<Spanned<bool>>,
    min_firmware: Option<Spanned<MinFirmware>>,
    banned_components: Option<Spanned<Vec<Spanned<RawBanned>>>>,
    max_severity: Option<Spanned<Severity>>,
    grace: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    allow_indeterminate: Option<Spanned<bool>>,
    key_algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    min_rsa_bits: Option<Spanned<u32>>,
    max_certificate_lifetime: Option<Spanned<String>>,
    supplier_allowlist: Option<Spanned<Vec<String>>>,
    supplier_supported: Option<Spanned<bool>>,
    supplier_disclosure_contact: Option<Spanned<bool>>,
}

/// The key algorithms a `key_algorithms` list may name.
pub const KEY_ALGORITHMS: [&str; 4] = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa"];

impl RawRule {
    /// The one check this rule makes, or `None` after reporting why not.
    fn check(&self, err: &mut dyn FnMut(usize, String), rule_offset: usize) -> Option<Check> {
        let mut found: Vec<(&'static str, usize, Option<Check>)> = Vec::new();
        let flag = |v: &Option<Spanned<bool>>,
                    name: &'static str,
                    check: Check,
                    found: &mut Vec<(&'static str, usize, Option<Check>)>,
                    err: &mut dyn FnMut(usize, String)| {
            if let Some(v) = v {
                if *v.get_ref() {
                    found.push((name, v.span().start, Some(check)));
                } else {
                    err(
                        v.span().start,
                        format!(
                            "`{name} = false` checks nothing; remove the rule or set it to true"
                        ),
                    );
                    found.push((name, v.span().start, None));
                }
            }
        };
        flag(
            &self.require_sbom,
            "require_sbom",
            Check::SbomRequired,
            &mut found,
            err,
        );
        flag(
            &self.sbom_minimum_elements,
            "sbom_minimum_elements",
            Check::SbomMinimumElements,
            &mut found,
            err,
        );
        flag(
            &self.supplier_supported,
            "supplier_supported",
            Check::SupplierSupported,
            &mut found,
            err,
        );
        flag(
            &self.supplier_disclosure_contact,
            "supplier_disclosure_contact",
            Check::SupplierDisclosureContact,
            &mut found,
            err,
        );
        if let Some(v) = &self.allow_indeterminate {
            if *v.get_ref() {
                err(
                    v.span().start,
                    "`allow_indeterminate = true` checks nothing; indeterminate components are allowed unless a rule says `allow_indeterminate = false`".into(),
                );
                found.push(("allow_indeterminate", v.span().start, None));
            } else {
                found.push((
                    "allow_indeterminate",
                    v.span().start,
                    Some(Check::NoIndeterminate),
                ));
            }
        }
        if let Some(v) = &self.min_firmware {
            let check = match v.get_ref() {
                MinFirmware::Models(true) => Some(Check::MinFirmware {
                    per_model: BTreeMap::new(),
                }),
                MinFirmware::Models(false) => {
                    err(
                        v.span().start,
                        "`min_firmware = false` checks nothing".into(),
                    );
                    None
                }
                MinFirmware::PerModel(m) => Some(Check::MinFirmware {
                    per_model: m.clone(),
                }),
            };
            found.push(("min_firmware", v.span().start, check));
        }
        if let Some(v) = &self.banned_components {
            let mut components = Vec::new();
            let mut ok = true;
            for b in v.get_ref() {
                let raw = b.get_ref();
                if !raw.purl.starts_with("pkg:") || raw.purl.contains('@') {
                    err(
                        b.span().start,
                        format!(
                            "banned component {:?} must be a package URL without version (`pkg:pypi/pyyaml`); put versions in `versions`",
                            raw.purl
                        ),
                    );
                    ok = false;
                    continue;
                }
                let versions = match raw.versions.as_deref().map(Constraint::parse) {
                    None => None,
                    Some(Ok(c)) => Some(c),
                    Some(Err(e)) => {
                        err(
                            b.span().start,
                            format!("banned component {:?}: {e}", raw.purl),
                        );
                        ok = false;
                        continue;
                    }
                };
                components.push(Banned {
                    purl: raw.purl.clone(),
                    versions,
                    reason: raw.reason.clone(),
                });
            }
            if components.is_empty() && ok {
                err(v.span().start, "`banned_components` is empty".into());
                ok = false;
            }
            found.push((
                "banned_components",
                v.span().start,
                ok.then_some(Check::BannedComponents { components }),
            ));
        }
        if let Some(v) = &self.max_severity {
            let mut grace = BTreeMap::new();
            let mut ok = true;
            if let Some(g) = &self.grace {
                for (name, d) in g.get_ref() {
                    let Some(sev) = Severity::parse(name) else {
                        err(
                            d.span().start,
                            format!("grace: {name:?} is not a severity (none, low, medium, high, critical)"),
                        );
                        ok = false;
                        continue;
                    };
                    match parse_duration(d.get_ref()) {
                        Some(secs) => {
                            grace.insert(sev, secs);
                        }
                        None => {
                            err(
                                d.span().start,
                                format!("grace.{name}: {:?} is not a duration such as \"0s\", \"30m\", \"72h\" or \"7d\"", d.get_ref()),
                            );
                            ok = false;
                        }
                    }
                }
            }
            found.push((
                "max_severity",
                v.span().start,
                ok.then(|| Check::MaxSeverity {
                    max: *v.get_ref(),
                    grace,
                }),
            ));
        } else if let Some(g) = &self.grace {
            err(
                g.span().start,
                "`grace` applies to `max_severity` only".into(),
            );
        }
        if let Some(v) = &self.key_algorithms {
            let mut ok = true;
            for a in v.get_ref() {
                if !KEY_ALGORITHMS.contains(&a.get_ref().as_str()) {
                    err(
                        a.span().start,
                        format!(
                            "unknown key algorithm {:?}; expected one of {}",
                            a.get_ref(),
                            KEY_ALGORITHMS.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
            found.push((
                "key_algorithms",
                v.span().start,
                ok.then(|| Check::KeyAlgorithm {
                    allowed: v.get_ref().iter().map(|a| a.get_ref().clone()).collect(),
                    min_rsa_bits: self.min_rsa_bits.as_ref().map_or(2048, |b| *b.get_ref()),
                }),
            ));
        } else if let Some(b) = &self.min_rsa_bits {
            err(
                b.span().start,
                "`min_rsa_bits` applies to `key_algorithms` only".into(),
            );
        }
        if let Some(v) = &self.max_certificate_lifetime {
            let check = parse_duration(v.get_ref())
                .map(|seconds| Check::MaxCertificateLifetime { seconds });
            if check.is_none() {
                err(
                    v.span().start,
                    format!("max_certificate_lifetime: {:?} is not a duration such as \"24h\" or \"30d\"", v.get_ref()),
                );
            }
            found.push(("max_certificate_lifetime", v.span().start, check));
        }
        if let Some(v) = &self.supplier_allowlist {
            found.push((
                "supplier_allowlist",
                v.span().start,
                Some(Check::SupplierAllowlist {
                    suppliers: v.get_ref().clone(),
                }),
            ));
        }
        found.sort_by_key(|f| f.1);
        match found.len() {
            0 => {
                err(
                    rule_offset,
                    format!(
                        "rule `{}` checks nothing; give it one of: require_sbom, sbom_minimum_elements, min_firmware, banned_components, max_severity, allow_indeterminate, key_algorithms, max_certificate_lifetime, supplier_allowlist, supplier_supported, supplier_disclosure_contact",
                        self.id.get_ref()
                    ),
                );
                None
            }
            1 => found.pop().and_then(|(_, _, c)| c),
            _ => {
                let names: Vec<&str> = found.iter().map(|f| f.0).collect();
                let second = found.get(1).map_or(rule_offset, |f| f.1);
                err(
                    second,
                    format!(
                        "rule `{}` has {} checks ({}); a rule makes exactly one: split it into several rules",
                        self.id.get_ref(),
                        names.len(),
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }
}

/// `"72h"`, `"30m"`, `"0s"`, `"7d"`, `"2w"` (or a plain number of seconds) in seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// 1-based line and column of a byte offset (clamped; never panics).
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match Profile::parse(text, "compliance.toml") {
            Err(ComplianceError::Profile(v)) => v,
            other => panic!("expected profile errors, got {other:?}"),
        }
    }

    #[test]
    fn the_issue_example_works_exactly_as_written() {
        let p = Profile::parse(
            r#"
[[rule]]
id = "no-high-vulns"
max_severity = "medium"    # a vulnerability rated high or critical violates the rule
action = "quarantine"
"#,
            "compliance.toml",
        )
        .expect("parses");
        assert_eq!(p.rules.len(), 1);
        let r = &p.rules[0];
        assert_eq!(r.id, "no-high-vulns");
        assert_eq!(r.action, Action::Quarantine);
        assert_eq!(r.line, 2);
        assert_eq!(
            r.check,
            Check::MaxSeverity {
                max: Severity::Medium,
                grace: BTreeMap::new()
            }
        );
        assert!(r.scope.covers(None, None, &[]));
    }

    #[test]
    fn every_check_parses_with_scope_and_grace() {
        let p = Profile::parse(
            r#"
[[rule]]
id = "sbom"
require_sbom = true
action = "report"
severity = "low"
[[rule]]
id = "elements"
sbom_minimum_elements = true
action = "report"
[[rule]]
id = "firmware"
min_firmware = { "scanner-x" = "1.3.0" }
action = "quarantine"
models = ["scanner-x"]
[[rule]]
id = "banned"
banned_components = [{ purl = "pkg:pypi/pyyaml", versions = "< 5.4", reason = "CVE-2020-14343" }]
action = "quarantine"
[[rule]]
id = "vulns"
max_severity = "medium"
grace = { high = "72h", critical = "0s" }
action = "quarantine"
suppliers = ["acme"]
groups = ["dock"]
[[rule]]
id = "indeterminate"
allow_indeterminate = false
action = "report"
[[rule]]
id = "keys"
key_algorithms = ["ecdsa-p256", "rsa"]
min_rsa_bits = 3072
action = "report"
[[rule]]
id = "lifetime"
max_certificate_lifetime = "30d"
action = "report"
[[rule]]
id = "allow"
supplier_allowlist = ["acme"]
action = "quarantine"
[[rule]]
id = "support"
supplier_supported = true
action = "report"
[[rule]]
id = "contact"
supplier_disclosure_contact = true
action = "report"
"#,
            "compliance.toml",
        )
        .expect("parses");
        assert_eq!(p.rules.len(), 11);
        let vulns = p.rule("vulns").expect("vulns");
        match &vulns.check {
            Check::MaxSeverity { grace, .. } => {
                assert_eq!(grace.get(&Severity::High), Some(&(72 * 3600)));
                assert_eq!(grace.get(&Severity::Critical), Some(&0));
            }
            other => panic!("{other:?}"),
        }
        assert!(vulns.scope.covers(Some("acme"), None, &["dock".into()]));
        assert!(!vulns.scope.covers(Some("acme"), None, &["yard".into()]));
        assert!(!vulns.scope.covers(None, None, &["dock".into()]));
        assert_eq!(p.rule("sbom").map(|r| r.severity), Some(Severity::Low));
        assert_eq!(p.rule("elements").map(|r| r.severity), Some(Severity::High));
    }

    #[test]
    fn problems_are_reported_with_line_and_column_all_at_once() {
        let e = errors(
            "[[rule]]\nid = \"a\"\naction = \"quarantine\"\n\n[[rule]]\nid = \"a\"\nmax_severity = \"high\"\nrequire_sbom = true\naction = \"report\"\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("compliance.toml:1:1: rule `a` checks nothing"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("compliance.toml:6:6: duplicate rule id `a`"),
            "{e:?}"
        );
        assert!(
            e[2].contains(":8:") && e[2].contains("exactly one"),
            "{e:?}"
        );

        let e =
            errors("[[rule]]\nid = \"x\"\nmax_severity = \"severe\"\naction = \"quarantine\"\n");
        assert!(e[0].starts_with("compliance.toml:3:"), "{e:?}");
        let e = errors("[[rule]]\nid = \"x\"\nmax_severity = \"high\"\naction = \"ban\"\n");
        assert!(e[0].starts_with("compliance.toml:4:"), "{e:?}");
        let e = errors("[[rule]]\nid = \"x\"\nmax_sevrity = \"high\"\naction = \"report\"\n");
        assert!(
            e[0].contains(":3:") && e[0].contains("max_sevrity"),
            "{e:?}"
        );
        let e = errors(
            "[[rule]]\nid = \"x\"\nmax_severity = \"high\"\ngrace = { high = \"soon\" }\naction = \"report\"\n",
        );
        assert!(
            e[0].starts_with("compliance.toml:4:") && e[0].contains("soon"),
            "{e:?}"
        );
        let e = errors("[[rule]]\nid = \"x\"\nbanned_components = [{ purl = \"pkg:pypi/a@1.0\" }]\naction = \"report\"\n");
        assert!(
            e[0].contains(":3:") && e[0].contains("without version"),
            "{e:?}"
        );
        let e = errors("[[rule]\nid = 1");
        assert!(e[0].starts_with("compliance.toml:1:"), "{e:?}");
    }

    #[test]
    fn hostile_profiles_are_refused_without_panicking() {
        let deep = format!("x = {}{}", "[".repeat(100_000), "]".repeat(100_000));
        let big = "#".repeat(MAX_PROFILE_BYTES + 1);
        for text in [
            deep.as_str(),
            big.as_str(),
            "\u{0}",
            "[[rule]]\nid = \"\u{202e}\"\naction = \"report\"\nrequire_sbom = true\n",
        ] {
            let r = std::thread::Builder::new()
                .stack_size(8 << 20)
                .spawn({
                    let t = text.to_owned();
                    move || Profile::parse(&t, "p").is_err()
                })
                .expect("thread")
                .join();
            assert_eq!(r.ok(), Some(true));
        }
        assert_eq!(parse_duration("99999999999999999999d"), None);
        assert_eq!(parse_duration("72h"), Some(259_200));
    }
}
