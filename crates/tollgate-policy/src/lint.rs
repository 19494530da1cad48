//! Static checks on a valid policy: things that parse but are probably not
//! what the operator meant.

use std::fmt;

use crate::explain::who_text;
use crate::parse::RuleInternal;
use crate::pattern::{template_covers, template_intersects, Template, TemplateLevel};
use crate::{Effect, Rule, Who};

/// One lint finding.
///
/// Displays as `warning: line 4 (allow[1]): message`; findings about the
/// whole policy have `line == 0` and display as `info: message`.
#[derive(Debug, Clone)]
pub struct Lint {
    pub severity: Severity,
    /// The id of the rule concerned (`allow[N]` / `deny[N]` when it has no
    /// id of its own); empty for findings about the whole policy.
    pub rule: String,
    pub line: usize,
    pub message: String,
}

/// How serious a lint finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Probably a mistake, possibly a security problem.
    Warning,
    /// Worth knowing, may well be intended.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.severity, self.message)
        } else {
            write!(
                f,
                "{}: line {} ({}): {}",
                self.severity, self.line, self.rule, self.message
            )
        }
    }
}

/// Does `deny_who` apply to (at least) everyone `allow_who` applies to?
fn who_at_least(deny_who: &[Who], allow_who: &[Who]) -> bool {
    deny_who.contains(&Who::Any) || allow_who.iter().all(|w| deny_who.contains(w))
}

fn actions<'a>(
    rule: &'a Rule,
    internal: &'a RuleInternal,
) -> [(&'static str, &'a [String], &'a [Template]); 3] {
    [
        ("publish", &rule.publish, &internal.publish),
        ("subscribe", &rule.subscribe, &internal.subscribe),
        ("retain", &rule.retain, &internal.retain),
    ]
}

/// A rule's templates for `action` (`publish`, `retain`, or `subscribe`), as [`actions`] names them.
fn templates_of<'a>(internal: &'a RuleInternal, action: &str) -> &'a [Template] {
    match action {
        "publish" => &internal.publish,
        "retain" => &internal.retain,
        _ => &internal.subscribe,
    }
}

pub(crate) fn lint(rules: &[(Rule, RuleInternal)]) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut push = |severity, rule: &Rule, message: String| {
        out.push(Lint {
            severity,
            rule: rule.id.clone(),
            line: rule.line,
            message,
        });
    };

    for (index, (rule, internal)) in rules.iter().enumerate() {
        if rule.publish.is_empty() && rule.subscribe.is_empty() && rule.retain.is_empty() {
            push(
                Severity::Warning,
                rule,
                "rule has no `publish`, `subscribe` or `retain` patterns; it has no effect"
                    .to_string(),
            );
        }
        if rule.effect == Effect::Allow {
            // A retained PUBLISH needs a publish grant too: a retain pattern no publish pattern
            // of an allow rule for the same devices covers is (at least partly) dead.
            for t in &internal.retain {
                let covered = rules.iter().any(|(r, i)| {
                    r.effect == Effect::Allow
                        && (r.who.contains(&Who::Any) || rule.who.iter().all(|w| r.who.contains(w)))
                        && i.publish.iter().any(|p| template_covers(p, t))
                });
                if !covered {
                    push(
                        Severity::Info,
                        rule,
                        format!(
                            "retain `{}` is not covered by a publish grant for the same devices; \
                             a retained PUBLISH needs both",
                            t.raw
                        ),
                    );
                }
            }
        }

        for (i, who) in rule.who.iter().enumerate() {
            if rule.who.iter().take(i).any(|w| w == who) {
                push(
                    Severity::Warning,
                    rule,
                    format!("duplicate `who` entry `{}`", who_text(who)),
                );
            }
        }
        if rule.who.contains(&Who::Any) && rule.who.len() > 1 {
            push(
                Severity::Info,
                rule,
                "`who` contains \"*\", which already includes every other entry".to_string(),
            );
        }

        for (action, raw, templates) in actions(rule, internal) {
            for (i, pattern) in raw.iter().enumerate() {
                if raw.iter().take(i).any(|p| p == pattern) {
                    push(
                        Severity::Warning,
                        rule,
                        format!("duplicate {action} pattern `{pattern}`"),
                    );
                }
            }
            if rule.effect == Effect::Allow && rule.who.contains(&Who::Any) {
                for template in templates {
                    if template.first_level_is_wildcard() {
                        push(
                            Severity::Warning,
                            rule,
                            format!(
                                "overly broad grant: every device may {action} `{}`, which starts \
                                 with a wildcard",
                                template.raw
                            ),
                        );
                    }
                }
            }
        }

        if rule.effect == Effect::Allow {
            lint_against_denies(rule, internal, rules, &mut push);
            lint_redundant_grants(index, rule, internal, rules, &mut push);
        }
    }

    if !rules.iter().any(|(r, _)| r.effect == Effect::Allow) {
        out.push(Lint {
            severity: Severity::Info,
            rule: String::new(),
            line: 0,
            message: "the policy has no allow rule: it denies everything".to_string(),
        });
    }
    out
}

fn lint_against_denies(
    rule: &Rule,
    internal: &RuleInternal,
    rules: &[(Rule, RuleInternal)],
    push: &mut impl FnMut(Severity, &Rule, String),
) {
    for (action, _, templates) in actions(rule, internal) {
        for template in templates {
            let mut dead = false;
            for (deny, deny_internal) in rules {
                if deny.effect != Effect::Deny || !who_at_least(&deny.who, &rule.who) {
                    continue;
                }
                let deny_templates = templates_of(deny_internal, action);
                if let Some(d) = deny_templates.iter().find(|d| template_covers(d, template)) {
                    push(
                        Severity::Warning,
                        rule,
                        format!(
                            "dead grant: {action} `{}` is entirely covered by `{}` in deny rule {} \
                             (line {}), so it never allows anything",
                            template.raw, d.raw, deny.id, deny.line
                        ),
                    );
                    dead = true;
                    break;
                }
            }
            if dead || action != "subscribe" || !has_wildcard(template) {
                continue;
            }
            for (deny, deny_internal) in rules {
                if deny.effect != Effect::Deny || !who_at_least(&deny.who, &rule.who) {
                    continue;
                }
                if let Some(d) = deny_internal
                    .subscribe
                    .iter()
                    .find(|d| template_intersects(d, template))
                {
                    push(
                        Severity::Info,
                        rule,
                        format!(
                            "a subscription to `{}` is granted, but messages matching `{}` are \
                             withheld from it by deny rule {} (line {}); a filter inside `{}` is \
                             refused",
                            template.raw, d.raw, deny.id, deny.line, d.raw
                        ),
                    );
                    break;
                }
            }
        }
    }
}

/// Grants another allow rule already makes, for at least the same devices: the same pattern
/// again (a duplicate across rules, reported on the later rule), or a narrower one (redundant).
/// Neither widens anything, but they make a policy harder to review and to tighten: removing
/// one of two identical grants changes nothing.
fn lint_redundant_grants(
    index: usize,
    rule: &Rule,
    internal: &RuleInternal,
    rules: &[(Rule, RuleInternal)],
    push: &mut impl FnMut(Severity, &Rule, String),
) {
    for (action, _, templates) in actions(rule, internal) {
        for template in templates {
            let other = rules.iter().enumerate().find_map(|(j, (r, i))| {
                if j == index || r.effect != Effect::Allow || !who_at_least(&r.who, &rule.who) {
                    return None;
                }
                let theirs = templates_of(i, action);
                let found = theirs.iter().find(|p| template_covers(p, template))?;
                let same = found.raw == template.raw && who_at_least(&rule.who, &r.who);
                // Two rules granting each other's pattern: report the later one only.
                if same && j > index {
                    return None;
                }
                Some((r, found, same))
            });
            if let Some((r, found, same)) = other {
                let message = if same {
                    format!(
                        "duplicate grant: {action} `{}` is also granted by rule {} (line {}) to \
                         the same devices",
                        template.raw, r.id, r.line
                    )
                } else {
                    format!(
                        "redundant grant: {action} `{}` is already covered by `{}` in rule {} \
                         (line {})",
                        template.raw, found.raw, r.id, r.line
                    )
                };
                push(
                    if same {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    rule,
                    message,
                );
            }
        }
    }
}

fn has_wildcard(template: &Template) -> bool {
    template
        .levels
        .iter()
        .any(|l| !matches!(l, TemplateLevel::Text(_)))
}
