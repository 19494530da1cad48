//! Parsing and validation of the TOML policy file.
//!
//! The file is read into toml's spanned document tree and walked by hand
//! (rather than through serde derive) so that *every* problem is reported,
//! each at the line and column of the offending key or value.

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use crate::error::{Diagnostics, PolicyError};
use crate::pattern::Template;
use crate::{Effect, Rule, Who};

/// The pre-parsed form of a rule, kept next to the public [`Rule`].
#[derive(Debug, Clone)]
pub(crate) struct RuleInternal {
    /// Position label: `allow[N]` / `deny[N]`, 1-based within its kind.
    pub(crate) label: String,
    pub(crate) publish: Vec<Template>,
    pub(crate) subscribe: Vec<Template>,
    /// Topics a retained PUBLISH (retain flag set) may go to, on top of `publish`.
    pub(crate) retain: Vec<Template>,
}

pub(crate) const RULE_KEYS: &str = "id, description, who, publish, subscribe, retain";

struct Parsed {
    offset: usize,
    id_offset: usize,
    rule: Rule,
    internal: RuleInternal,
}

/// What a policy file holds: its rules, and the quarantine section if it has one.
pub(crate) struct ParsedFile {
    pub(crate) rules: Vec<(Rule, RuleInternal)>,
    pub(crate) quarantine: Option<(Rule, RuleInternal)>,
}

/// The allow rule used for quarantined devices when the file has no `[quarantine]` section.
pub(crate) const DEFAULT_QUARANTINE: &str = r#"
[quarantine]
description = "built-in default: report inventory, receive firmware and commands"
publish = ["$tollgate/devices/${device.id}/inventory"]
subscribe = ["$tollgate/devices/${device.id}/firmware/#", "$tollgate/devices/${device.id}/commands/#"]
"#;

pub(crate) fn parse(text: &str, source: &str) -> Result<ParsedFile, PolicyError> {
    let mut diags = Diagnostics::new(text, source);
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // Error recovery tends to produce a cascade of follow-up errors for a
        // single mistake; keep the first one of each line.
        let mut lines_seen = Vec::new();
        for e in &syntax_errors {
            let offset = e.span().map_or(0, |s| s.start);
            let line = diags.line_of(offset);
            if lines_seen.contains(&line) {
                continue;
            }
            lines_seen.push(line);
            let message = e.message().trim().replace('\n', "; ");
            diags.error(offset, format!("TOML syntax error: {message}"));
        }
        return Err(diags.into_error());
    }

    let mut parsed = Vec::new();
    let mut quarantine = None;
    for (key, value) in document.get_ref().iter() {
        let key_name: &str = key.get_ref();
        match key_name {
            "version" => check_version(&mut diags, value),
            "allow" => parse_rules(&mut diags, Effect::Allow, value, &mut parsed),
            "deny" => parse_rules(&mut diags, Effect::Deny, value, &mut parsed),
            "quarantine" => quarantine = parse_quarantine(&mut diags, value),
            other => diags.error(
                key.span().start,
                format!(
                    "unknown top-level key `{other}`; expected one of version, allow, deny, quarantine"
                ),
            ),
        }
    }

    // File order, so listings and explanations follow what the operator wrote.
    parsed.sort_by_key(|p| p.offset);

    for (i, p) in parsed.iter().enumerate() {
        let earlier = parsed
            .iter()
            .take(i)
            .find(|other| other.rule.id == p.rule.id);
        if let Some(first) = earlier {
            diags.error(
                p.id_offset,
                format!(
                    "duplicate rule id `{}` in rule {}; already used by rule {} on line {}",
                    p.rule.id, p.internal.label, first.internal.label, first.rule.line
                ),
            );
        }
    }

    if diags.is_empty() {
        Ok(ParsedFile {
            rules: parsed.into_iter().map(|p| (p.rule, p.internal)).collect(),
            quarantine,
        })
    } else {
        Err(diags.into_error())
    }
}

fn check_version(diags: &mut Diagnostics<'_>, value: &Spanned<DeValue<'_>>) {
    match value.get_ref() {
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let number = i64::from_str_radix(digits.trim_start_matches('+'), i.radix()).ok();
            if number != Some(1) {
                diags.error(
                    value.span().start,
                    format!(
                        "unsupported policy version `{}`; this version of Tollgate reads version 1",
                        i.as_str()
                    ),
                );
            }
        }
        other => diags.error(
            value.span().start,
            format!("`version` must be an integer, found {}", other.type_str()),
        ),
    }
}

fn parse_rules(
    diags: &mut Diagnostics<'_>,
    effect: Effect,
    value: &Spanned<DeValue<'_>>,
    out: &mut Vec<Parsed>,
) {
    let kind = effect_name(effect);
    let DeValue::Array(items) = value.get_ref() else {
        diags.error(
            value.span().start,
            format!(
                "`{kind}` must be an array of tables (write each rule as `[[{kind}]]`), found {}",
                value.get_ref().type_str()
            ),
        );
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let label = format!("{kind}[{}]", i + 1);
        match item.get_ref() {
            DeValue::Table(table) => {
                if let Some(p) = parse_rule(diags, effect, label, item.span().start, table) {
                    out.push(p);
                }
            }
            other => diags.error(
                item.span().start,
                format!(
                    "rule {label} must be a table (write it as `[[{kind}]]`), found {}",
                    other.type_str()
                ),
            ),
        }
    }
}

/// `[quarantine]`: what a quarantined device may still do. An allow rule for every device
/// (`who = "*"` implied); the file's deny rules still apply on top of it.
fn parse_quarantine(
    diags: &mut Diagnostics<'_>,
    value: &Spanned<DeValue<'_>>,
) -> Option<(Rule, RuleInternal)> {
    let label = "quarantine".to_owned();
    let DeValue::Table(table) = value.get_ref() else {
        diags.error(
            value.span().start,
            format!(
                "`quarantine` must be a table (write it as `[quarantine]`), found {}",
                value.get_ref().type_str()
            ),
        );
        return None;
    };
    let offset = value.span().start;
    let line = diags.line_of(offset);
    let mut description = None;
    let mut publish = (Vec::new(), Vec::new());
    let mut subscribe = (Vec::new(), Vec::new());
    let mut retain = (Vec::new(), Vec::new());
    let mut ok = true;
    for (key, v) in table.iter() {
        let key_name: &str = key.get_ref();
        match key_name {
            "description" => match v.get_ref() {
                DeValue::String(s) => description = Some(s.to_string()),
                other => {
                    diags.error(
                        v.span().start,
                        format!(
                            "`description` in [quarantine] must be a string, found {}",
                            other.type_str()
                        ),
                    );
                    ok = false;
                }
            },
            "publish" | "subscribe" | "retain" => {
                match parse_patterns(diags, &label, key_name, v) {
                    Some(p) if key_name == "publish" => publish = p,
                    Some(p) if key_name == "subscribe" => subscribe = p,
                    Some(p) => retain = p,
                    None => ok = false,
                }
            }
            other => {
                diags.error(
                    key.span().start,
                    format!(
                        "unknown key `{other}` in [quarantine]; expected one of description, publish, subscribe, retain"
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then(|| {
        (
            Rule {
                id: label.clone(),
                effect: Effect::Allow,
                description,
                who: vec![Who::Any],
                publish: publish.0,
                subscribe: subscribe.0,
                retain: retain.0,
                line,
            },
            RuleInternal {
                label,
                publish: publish.1,
                subscribe: subscribe.1,
                retain: retain.1,
            },
        )
    })
}

pub(crate) fn effect_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}

fn parse_rule(
    diags: &mut Diagnostics<'_>,
    effect: Effect,
    label: String,
    offset: usize,
    table: &DeTable<'_>,
) -> Option<Parsed> {
    let line = diags.line_of(offset);
    let mut id = None;
    let mut id_offset = offset;
    let mut description = None;
    let mut who: Option<Vec<Who>> = None;
    let mut publish = (Vec::new(), Vec::new());
    let mut subscribe = (Vec::new(), Vec::new());
    let mut retain = (Vec::new(), Vec::new());
    let mut ok = true;

    for (key, value) in table.iter() {
        let key_name: &str = key.get_ref();
        let at = value.span().start;
        match key_name {
            "id" => match value.get_ref() {
                DeValue::String(s) if s.trim().is_empty() => {
                    diags.error(at, format!("`id` in rule {label} must not be empty"));
                    ok = false;
                }
                DeValue::String(s) => {
                    id = Some(s.to_string());
                    id_offset = at;
                }
                other => {
                    diags.error(
                        at,
                        format!(
                            "`id` in rule {label} must be a string, found {}",
                            other.type_str()
                        ),
                    );
                    ok = false;
                }
            },
            "description" => match value.get_ref() {
                DeValue::String(s) => description = Some(s.to_string()),
                other => {
                    diags.error(
                        at,
                        format!(
                            "`description` in rule {label} must be a string, found {}",
                            other.type_str()
                        ),
                    );
                    ok = false;
                }
            },
            "who" => match parse_who_value(diags, &label, value) {
                Some(w) => who = Some(w),
                None => {
                    ok = false;
                    who = Some(Vec::new());
                }
            },
            "publish" | "subscribe" | "retain" => {
                match parse_patterns(diags, &label, key_name, value) {
                    Some(p) if key_name == "publish" => publish = p,
                    Some(p) if key_name == "subscribe" => subscribe = p,
                    Some(p) => retain = p,
                    None => ok = false,
                }
            }
            other => {
                diags.error(
                    key.span().start,
                    format!("unknown key `{other}` in rule {label}; expected one of {RULE_KEYS}"),
                );
                ok = false;
            }
        }
    }

    let Some(who) = who else {
        diags.error(
            offset,
            format!(
                "rule {label} has no `who`; say whom it applies to, e.g. who = \"group:NAME\", \
                 \"device:ID\" or \"*\""
            ),
        );
        return None;
    };
    if !ok {
        return None;
    }
    Some(Parsed {
        offset,
        id_offset,
        rule: Rule {
            id: id.unwrap_or_else(|| label.clone()),
            effect,
            description,
            who,
            publish: publish.0,
            subscribe: subscribe.0,
            retain: retain.0,
            line,
        },
        internal: RuleInternal {
            label,
            publish: publish.1,
            subscribe: subscribe.1,
            retain: retain.1,
        },
    })
}

fn parse_who_value(
    diags: &mut Diagnostics<'_>,
    label: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Vec<Who>> {
    match value.get_ref() {
        DeValue::String(s) => parse_who(diags, label, value.span().start, s).map(|w| vec![w]),
        DeValue::Array(items) => parse_who_array(diags, label, value, items),
        other => {
            diags.error(
                value.span().start,
                format!(
                    "`who` in rule {label} must be a string or an array of strings, found {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

fn parse_who_array(
    diags: &mut Diagnostics<'_>,
    label: &str,
    value: &Spanned<DeValue<'_>>,
    items: &DeArray<'_>,
) -> Option<Vec<Who>> {
    if items.is_empty() {
        diags.error(
            value.span().start,
            format!("`who` in rule {label} must not be empty"),
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(s) => match parse_who(diags, label, item.span().start, s) {
                Some(w) => out.push(w),
                None => ok = false,
            },
            other => {
                diags.error(
                    item.span().start,
                    format!(
                        "`who` entries in rule {label} must be strings, found {}",
                        other.type_str()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn parse_who(diags: &mut Diagnostics<'_>, label: &str, at: usize, s: &str) -> Option<Who> {
    if s == "*" {
        return Some(Who::Any);
    }
    if let Some(id) = s.strip_prefix("device:") {
        if !id.is_empty() {
            return Some(Who::Device(id.to_string()));
        }
    } else if let Some(group) = s.strip_prefix("group:") {
        if !group.is_empty() {
            return Some(Who::Group(group.to_string()));
        }
    }
    diags.error(
        at,
        format!(
            "invalid `who` value `{s}` in rule {label}; expected \"device:ID\", \"group:NAME\" or \"*\""
        ),
    );
    None
}

type Patterns = (Vec<String>, Vec<Template>);

fn parse_patterns(
    diags: &mut Diagnostics<'_>,
    label: &str,
    action: &str,
    value: &Spanned<DeValue<'_>>,
) -> Option<Patterns> {
    let DeValue::Array(items) = value.get_ref() else {
        diags.error(
            value.span().start,
            format!(
                "`{action}` in rule {label} must be an array of strings, found {}",
                value.get_ref().type_str()
            ),
        );
        return None;
    };
    let mut raw = Vec::with_capacity(items.len());
    let mut templates = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items.iter() {
        let at = item.span().start;
        match item.get_ref() {
            DeValue::String(s) => match Template::parse(s) {
                Ok(t) => {
                    raw.push(s.to_string());
                    templates.push(t);
                }
                Err(problems) => {
                    for problem in problems {
                        diags.error(
                            at,
                            format!("invalid {action} pattern `{s}` in rule {label}: {problem}"),
                        );
                    }
                    ok = false;
                }
            },
            other => {
                diags.error(
                    at,
                    format!(
                        "`{action}` entries in rule {label} must be strings, found {}",
                        other.type_str()
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some((raw, templates))
}
