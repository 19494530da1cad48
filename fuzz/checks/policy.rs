//! Check for the `policy` fuzz target: arbitrary text into `tollgate_policy::Policy::parse`,
//! and for every policy that parses, lint, compile (normal and quarantined), decisions and
//! explanations for a handful of identities and topics, against a reference model written
//! here from the documented semantics.
//!
//! Shared by `fuzz/fuzz_targets/policy.rs` (libFuzzer) and
//! `crates/tollgate-policy/tests/fuzz_corpus.rs` (replays `fuzz/corpus/policy/` on stable),
//! so it uses nothing but `tollgate-policy`. Every broken invariant panics. See
//! docs/fuzzing.md.
//!
//! The invariants:
//! * parse errors carry at least one diagnostic, each at a 1-based line and column inside
//!   the text;
//! * PUBLISH decisions (normal and quarantined), and SUBSCRIBE decisions for filters without
//!   wildcards, equal the reference: some applicable allow pattern matches and no applicable
//!   deny pattern matches, a deny always beating an allow; an allow pattern is used only when
//!   every value substituted into it is non-empty, free of `/ + # NUL`, and does not make a
//!   `$` topic of it (substituted device ids and groups never widen a grant), a deny pattern
//!   whenever its substituted text can still name a topic;
//! * a granted wildcard subscription only covers topics that are themselves granted (so no
//!   topic it can deliver is matched by a deny);
//! * `explain` reaches the same verdict as the compiled policy, and ends with it.

use tollgate_policy::{Action, Effect, Identity, Policy, PolicyError, Rule, Who};

const MAX_IDENTITIES: usize = 8;
const MAX_TOPICS: usize = 48;

/// Parse `data` as a policy file and check everything above; panics on any broken invariant.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::parse(text, "fuzz") {
        Ok(p) => p,
        Err(e) => return check_error(text, &e),
    };
    for lint in policy.lint() {
        assert!(!lint.to_string().is_empty());
    }
    let rules = policy.rules();
    let quarantine: Vec<Rule> = policy
        .quarantine_rule()
        .into_iter()
        .cloned()
        .chain(rules.iter().filter(|r| r.effect == Effect::Deny).cloned())
        .collect();
    let identities = identities(rules);
    let topics = topics(rules, &identities);
    for (device_id, groups) in &identities {
        let identity = Identity { device_id, groups };
        let compiled = policy.compile(&identity);
        let quarantined = policy.compile_quarantined(&identity);
        for topic in &topics {
            let publish = compiled.can_publish(topic);
            let subscribe = compiled.can_subscribe(topic);
            let why = || format!("identity {device_id:?} {groups:?}, topic {topic:?}");
            assert_eq!(
                publish,
                reference(rules, &identity, Action::Publish, topic),
                "publish differs from the reference: {}",
                why()
            );
            assert_eq!(
                quarantined.can_publish(topic),
                reference(&quarantine, &identity, Action::Publish, topic),
                "quarantined publish differs from the reference: {}",
                why()
            );
            let retain = compiled.can_retain(topic);
            assert_eq!(
                retain,
                reference(rules, &identity, Action::Retain, topic),
                "retain differs from the reference: {}",
                why()
            );
            assert_eq!(
                quarantined.can_retain(topic),
                reference(&quarantine, &identity, Action::Retain, topic),
                "quarantined retain differs from the reference: {}",
                why()
            );
            assert_eq!(
                compiled.can_publish_retained(topic),
                publish && retain,
                "a retained publish needs both grants: {}",
                why()
            );
            if is_topic_name(topic) {
                assert_eq!(
                    subscribe,
                    reference(rules, &identity, Action::Subscribe, topic),
                    "subscribe differs from the reference: {}",
                    why()
                );
                assert_eq!(
                    quarantined.can_subscribe(topic),
                    reference(&quarantine, &identity, Action::Subscribe, topic),
                    "quarantined subscribe differs from the reference: {}",
                    why()
                );
            }
            if subscribe {
                // Everything a granted filter delivers must be grantable on its own.
                for t in topics.iter().chain(&concretize(topic)) {
                    if is_topic_name(t) && mqtt_match(topic, t) {
                        assert!(
                            compiled.can_subscribe(t),
                            "subscription {topic:?} granted but {t:?}, which it matches, is not: \
                             identity {device_id:?} {groups:?}"
                        );
                    }
                }
            }
            if compiled.is_empty() {
                assert!(
                    !publish && !subscribe && !compiled.can_publish_retained(topic),
                    "an empty policy granted: {}",
                    why()
                );
            }
            for (action, verdict) in [
                (Action::Publish, publish),
                (Action::Subscribe, subscribe),
                (Action::Retain, retain),
            ] {
                let e = policy.explain(&identity, action, topic);
                assert_eq!(e.allowed, verdict, "explain({action}) disagrees: {}", why());
                assert!(
                    e.steps.last().is_some_and(|s| s.starts_with("=> ")),
                    "explanation does not end with its verdict: {e:?}"
                );
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

fn check_error(text: &str, e: &PolicyError) {
    assert!(!e.diagnostics.is_empty(), "an error without a diagnostic");
    let lines = text.matches('\n').count() + 1;
    for d in &e.diagnostics {
        assert!(
            d.line >= 1 && d.line <= lines && d.column >= 1,
            "diagnostic outside the text ({lines} lines): {d}"
        );
        assert!(!d.message.is_empty(), "diagnostic without a message: {d:?}");
    }
    assert!(!e.to_string().is_empty());
}

/// A few identities: some named by the rules, a plain one and hostile ones whose id or groups
/// look like wildcards, levels or `$` topics.
fn identities(rules: &[Rule]) -> Vec<(String, Vec<String>)> {
    let mut devices = Vec::new();
    let mut groups = Vec::new();
    for who in rules.iter().flat_map(|r| &r.who) {
        match who {
            Who::Device(d) if !devices.contains(d) => devices.push(d.clone()),
            Who::Group(g) if !groups.contains(g) => groups.push(g.clone()),
            _ => {}
        }
    }
    groups.truncate(3);
    let mut out = vec![
        ("pump-7".to_string(), vec!["sensors".to_string()]),
        ("+".to_string(), vec!["#".to_string(), String::new()]),
        ("a/b".to_string(), Vec::new()),
        ("$SYS".to_string(), vec!["$g".to_string(), "x".to_string()]),
    ];
    if let Some(g) = groups.first() {
        out.push(("dev".to_string(), vec![g.clone()]));
    }
    for d in devices.into_iter().take(3) {
        out.push((d, groups.clone()));
    }
    out.truncate(MAX_IDENTITIES);
    out
}

/// Topics and filters to ask about: every pattern of the rules as written and as substituted
/// for each identity, concrete topics they match, and a few fixed ones.
fn topics(rules: &[Rule], identities: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out: Vec<String> = [
        "a",
        "a/b",
        "/",
        "x/",
        "$SYS/x",
        "#",
        "+",
        "a/+/c",
        "+/#",
        "devices/pump-7/telemetry",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut push = |t: String| {
        if !out.contains(&t) {
            out.push(t);
        }
    };
    for rule in rules {
        for pattern in rule.publish.iter().chain(&rule.subscribe) {
            push(pattern.clone());
            for (id, groups) in identities.iter().take(3) {
                for s in substitutions(pattern, id, groups) {
                    concretize(&s.text).into_iter().for_each(&mut push);
                    push(s.text);
                }
            }
        }
    }
    out.truncate(MAX_TOPICS);
    out
}

/// Concrete topics a filter matches (wildcards filled in a few ways).
fn concretize(filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (single, multi) in [("x", None), ("zz", Some("q")), ("", Some("q/r"))] {
        let mut levels: Vec<&str> = Vec::new();
        for level in filter.split('/') {
            match level {
                "+" => levels.push(single),
                "#" => {
                    if let Some(m) = multi {
                        levels.push(m);
                    }
                }
                l => levels.push(l),
            }
        }
        let t = levels.join("/");
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn is_topic_name(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0'])
}

/// MQTT matching of a topic name by a filter, written independently of the crate.
fn mqtt_match(filter: &str, topic: &str) -> bool {
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f, t) {
            (["#"], _) => true,
            ([], []) => true,
            (["+", fr @ ..], [_, tr @ ..]) => go(fr, tr),
            ([a, fr @ ..], [b, tr @ ..]) => a == b && go(fr, tr),
            _ => false,
        }
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && matches!(f.first(), Some(&"+") | Some(&"#")) {
        return false;
    }
    go(&f, &t)
}

/// A pattern with the identity substituted (literally).
struct Substituted {
    text: String,
    /// An allow rule may use it: every value is non-empty, free of `/ + # NUL`, and none
    /// starts the pattern with `$`.
    allow: bool,
    /// A deny rule may use it: no value holds `/ + # NUL` (such text can never equal a topic
    /// level, so the pattern matches nothing).
    deny: bool,
}

/// Every way of substituting the identity into a pattern: one per group when it uses
/// `${device.group}` (none without groups), otherwise one.
fn substitutions(pattern: &str, id: &str, groups: &[String]) -> Vec<Substituted> {
    let uses_group = pattern.contains("${device.group}");
    let choices: Vec<Option<&str>> = if uses_group {
        groups.iter().map(|g| Some(g.as_str())).collect()
    } else {
        vec![None]
    };
    choices
        .into_iter()
        .map(|group| {
            let mut text = String::new();
            let (mut allow, mut deny) = (true, true);
            let mut rest = pattern;
            while !rest.is_empty() {
                let (value, len) = if rest.starts_with("${device.id}") {
                    (Some(id), "${device.id}".len())
                } else if rest.starts_with("${device.group}") {
                    (Some(group.unwrap_or_default()), "${device.group}".len())
                } else {
                    (None, rest.chars().next().map_or(1, char::len_utf8))
                };
                match value {
                    Some(v) => {
                        let shape = v.contains(['/', '+', '#', '\0']);
                        deny &= !shape;
                        allow &=
                            !(shape || v.is_empty() || (text.is_empty() && v.starts_with('$')));
                        text.push_str(v);
                    }
                    None => text.push_str(&rest[..len]),
                }
                rest = &rest[len..];
            }
            Substituted { text, allow, deny }
        })
        .collect()
}

fn applies(rule: &Rule, identity: &Identity<'_>) -> bool {
    rule.who.iter().any(|w| match w {
        Who::Any => true,
        Who::Device(d) => d == identity.device_id,
        Who::Group(g) => identity.groups.contains(g),
    })
}

/// The reference decision for a topic name (for SUBSCRIBE, a filter without wildcards, which
/// an allow covers and a deny overlaps exactly when it matches it).
fn reference(rules: &[Rule], identity: &Identity<'_>, action: Action, topic: &str) -> bool {
    if !is_topic_name(topic) {
        return false;
    }
    let hit = |effect: Effect| {
        rules
            .iter()
            .filter(|r| r.effect == effect && applies(r, identity))
            .flat_map(|r| match action {
                Action::Publish => &r.publish,
                Action::Subscribe => &r.subscribe,
                Action::Retain => &r.retain,
            })
            .flat_map(|p| substitutions(p, identity.device_id, identity.groups))
            .any(|s| {
                let usable = match effect {
                    Effect::Allow => s.allow,
                    Effect::Deny => s.deny,
                };
                usable && mqtt_match(&s.text, topic)
            })
    };
    hit(Effect::Allow) && !hit(Effect::Deny)
}
