//! Human-readable explanation of one decision (`tollgate policy explain`).

use std::fmt;

use crate::compiled::{expand, rule_applies};
use crate::parse::RuleInternal;
use crate::pattern::{self, Pattern};
use crate::{Action, Effect, Identity, Rule, Who};

/// The explanation of a decision: the verdict and the reasoning behind it.
///
/// `steps` lists, one line each, the identity and action, every rule and
/// whether it applies to the identity, and for applicable rules every pattern
/// of the action and whether it matched. The last step is always the verdict
/// line, which starts with `=> `.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub allowed: bool,
    pub steps: Vec<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(step)?;
        }
        let has_verdict = self.steps.last().is_some_and(|s| s.starts_with("=> "));
        if !has_verdict {
            if !self.steps.is_empty() {
                f.write_str("\n")?;
            }
            f.write_str(if self.allowed {
                "=> ALLOWED"
            } else {
                "=> DENIED"
            })?;
        }
        Ok(())
    }
}

/// `allow[1] (sensors-telemetry)`, or just `allow[1]` when the rule has no id.
pub(crate) fn rule_name(rule: &Rule, internal: &RuleInternal) -> String {
    if rule.id == internal.label {
        internal.label.clone()
    } else {
        format!("{} ({})", internal.label, rule.id)
    }
}

pub(crate) fn who_text(who: &Who) -> String {
    match who {
        Who::Any => "*".to_string(),
        Who::Device(id) => format!("device:{id}"),
        Who::Group(group) => format!("group:{group}"),
    }
}

pub(crate) fn explain(
    rules: &[(Rule, RuleInternal)],
    identity: &Identity<'_>,
    action: Action,
    topic: &str,
) -> Explanation {
    let mut steps = Vec::new();
    let groups = if identity.groups.is_empty() {
        "no groups".to_string()
    } else {
        format!("groups: {}", identity.groups.join(", "))
    };
    steps.push(format!(
        "identity: device `{}`, {groups}",
        identity.device_id
    ));
    let (verb, check) = match action {
        Action::Publish => ("publish to topic", pattern::check_topic_name(topic)),
        Action::Subscribe => ("subscribe to filter", pattern::check_filter(topic)),
        Action::Retain => (
            "publish with the retain flag to topic",
            pattern::check_topic_name(topic),
        ),
    };
    steps.push(format!("action: {verb} `{topic}`"));
    if let Err(why) = check {
        steps.push(format!("=> DENIED: `{topic}` is invalid: {why}"));
        return Explanation {
            allowed: false,
            steps,
        };
    }
    if rules.is_empty() {
        steps.push("the policy has no rules".to_string());
    }

    let verdict = |steps: &mut Vec<String>, key: Key| {
        let Evaluated {
            allowed_by,
            denied_by,
            withheld,
        } = evaluate(rules, identity, key, topic, steps);
        match (denied_by, allowed_by) {
            (Some(deny), _) => (false, format!("DENIED by {deny}")),
            (None, Some(allow)) if withheld.is_empty() => (true, format!("ALLOWED by {allow}")),
            // A subscription that overlaps deny rules without being covered by one: granted,
            // with those topics withheld at delivery (CompiledPolicy::subscription).
            (None, Some(allow)) => {
                let clauses: Vec<String> = withheld
                    .iter()
                    .map(|(pattern, rule)| {
                        format!("messages matching {pattern} are withheld (deny rule {rule})")
                    })
                    .collect();
                (true, format!("ALLOWED by {allow}; {}", clauses.join("; ")))
            }
            (None, None) => (
                false,
                "DENIED: no rule grants it (default deny)".to_string(),
            ),
        }
    };
    let (allowed, line) = match action {
        Action::Publish => verdict(&mut steps, Key::Publish),
        Action::Subscribe => verdict(&mut steps, Key::Subscribe),
        Action::Retain => {
            // A retained PUBLISH needs both grants: the publish, then the retain flag.
            let (publish_ok, publish_line) = verdict(&mut steps, Key::Publish);
            steps.push(format!("publish: {publish_line}"));
            let (retain_ok, retain_line) = verdict(&mut steps, Key::Retain);
            steps.push(format!("retain: {retain_line}"));
            match (publish_ok, retain_ok) {
                (true, true) => (
                    true,
                    "ALLOWED (publish and retain both granted)".to_string(),
                ),
                (false, _) => (false, format!("DENIED: publish {publish_line}")),
                (true, false) => (false, format!("DENIED: retain {retain_line}")),
            }
        }
    };
    steps.push(format!("=> {line}"));
    Explanation { allowed, steps }
}

/// Which patterns of a rule an evaluation reads, and how they decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Publish,
    Subscribe,
    Retain,
}

/// What walking the rules for one key found.
struct Evaluated {
    /// The first allow rule that decided.
    allowed_by: Option<String>,
    /// The first deny rule that decided.
    denied_by: Option<String>,
    /// Subscribe only: the deny patterns (instantiated) that overlap the filter without
    /// covering it, with their rule's id: their topics are withheld from a granted subscription.
    withheld: Vec<(String, String)>,
}

/// Walk the rules for one key, recording a step per rule and pattern.
fn evaluate(
    rules: &[(Rule, RuleInternal)],
    identity: &Identity<'_>,
    key: Key,
    topic: &str,
    steps: &mut Vec<String>,
) -> Evaluated {
    let mut allowed_by = None;
    let mut denied_by = None;
    let mut withheld: Vec<(String, String)> = Vec::new();
    for (rule, internal) in rules {
        let name = rule_name(rule, internal);
        let Some(who) = rule_applies(rule, identity) else {
            let whos: Vec<String> = rule.who.iter().map(who_text).collect();
            steps.push(format!(
                "{name}, line {}: does not apply (who: {})",
                rule.line,
                whos.join(", ")
            ));
            continue;
        };
        let (templates, action_key) = match key {
            Key::Publish => (&internal.publish, "publish"),
            Key::Subscribe => (&internal.subscribe, "subscribe"),
            Key::Retain => (&internal.retain, "retain"),
        };
        if templates.is_empty() {
            steps.push(format!(
                "{name}, line {}: applies (who {}), but has no {action_key} patterns",
                rule.line,
                who_text(who)
            ));
            continue;
        }
        steps.push(format!(
            "{name}, line {}: applies (who {})",
            rule.line,
            who_text(who)
        ));
        let action = match key {
            Key::Subscribe => Action::Subscribe,
            Key::Publish | Key::Retain => Action::Publish,
        };
        let mut hit = false;
        for template in templates {
            for expanded in expand(template, rule.effect, identity) {
                match expanded {
                    Err(why) => steps.push(format!(
                        "  {action_key} `{}`: not usable for this identity: {why}",
                        template.raw
                    )),
                    Ok(p) => {
                        let (ok, verdict) = judge(&p, rule.effect, action, topic);
                        hit |= ok;
                        let shown = p.to_string();
                        if !ok
                            && rule.effect == Effect::Deny
                            && action == Action::Subscribe
                            && pattern::intersects(&p.levels, topic)
                            && !withheld.iter().any(|(w, _)| *w == shown)
                        {
                            withheld.push((shown.clone(), rule.id.clone()));
                        }
                        if !template.has_variables() {
                            steps.push(format!("  {action_key} `{}`: {verdict}", template.raw));
                        } else if shown == template.raw {
                            steps.push(format!("  {action_key} `{shown}`: {verdict}"));
                        } else {
                            steps.push(format!(
                                "  {action_key} `{}` -> `{shown}`: {verdict}",
                                template.raw
                            ));
                        }
                    }
                }
            }
        }
        if hit {
            match rule.effect {
                Effect::Allow => {
                    allowed_by.get_or_insert_with(|| name.clone());
                }
                Effect::Deny => {
                    denied_by.get_or_insert_with(|| name.clone());
                }
            }
        }
    }
    Evaluated {
        allowed_by,
        denied_by,
        withheld,
    }
}

/// Whether one expanded pattern decides the action, with the wording.
/// The first deny rule that refuses `action` on `topic` for this identity, by id; `None` when no
/// deny rule does (so a refusal was the default deny: no allow rule grants it). For
/// [`Action::Retain`] both the publish and the retain patterns of deny rules are read. No
/// step text is built: this names the rule in a denial event, on the refusal path only, and
/// reads only deny rules (usually few), so a flood of refused messages costs little.
pub(crate) fn denied_by<'r>(
    rules: &'r [(Rule, RuleInternal)],
    identity: &Identity<'_>,
    action: Action,
    topic: &str,
) -> Option<&'r str> {
    for (rule, internal) in rules {
        if rule.effect != Effect::Deny || rule_applies(rule, identity).is_none() {
            continue;
        }
        let lists: [&[crate::pattern::Template]; 2] = match action {
            Action::Publish => [&internal.publish, &[]],
            Action::Subscribe => [&internal.subscribe, &[]],
            Action::Retain => [&internal.publish, &internal.retain],
        };
        for template in lists.into_iter().flatten() {
            for p in expand(template, Effect::Deny, identity)
                .into_iter()
                .flatten()
            {
                if judge(&p, Effect::Deny, action, topic).0 {
                    return Some(&rule.id);
                }
            }
        }
    }
    None
}

fn judge(p: &Pattern, effect: Effect, action: Action, topic: &str) -> (bool, &'static str) {
    match (action, effect) {
        (Action::Publish | Action::Retain, _) => {
            if pattern::matches(&p.levels, topic) {
                (true, "matches")
            } else {
                (false, "does not match")
            }
        }
        (Action::Subscribe, Effect::Allow) => {
            if pattern::covers(&p.levels, topic) {
                (true, "covers the filter")
            } else {
                (false, "does not cover the filter")
            }
        }
        // Only a deny pattern that covers the filter refuses it; one that overlaps it withholds
        // the matching messages from the granted subscription.
        (Action::Subscribe, Effect::Deny) => {
            if pattern::covers(&p.levels, topic) {
                (true, "covers the filter")
            } else if pattern::intersects(&p.levels, topic) {
                (false, "overlaps the filter: matching messages are withheld")
            } else {
                (false, "does not overlap the filter")
            }
        }
    }
}
