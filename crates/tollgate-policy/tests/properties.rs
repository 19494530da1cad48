//! Property tests: the policy's publish matching, subscription coverage and
//! deny intersection agree with a brute-force reference over every topic of
//! a small universe, and variable substitution never widens a grant.

use proptest::prelude::*;
use tollgate_policy::{CompiledPolicy, Identity, Policy, SubscriptionDecision};

// ------------------------------------------------------ reference model

/// Reference MQTT matcher on plain strings (filter must be valid, topic a
/// valid topic name). Written independently of the crate.
fn ref_match(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    let leading_wildcard = matches!(f.first(), Some(&"+") | Some(&"#"));
    if topic.starts_with('$') && leading_wildcard {
        return false;
    }
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f, t) {
            (["#"], _) => true,
            ([], []) => true,
            (["+", fr @ ..], [_, tr @ ..]) => go(fr, tr),
            ([a, fr @ ..], [b, tr @ ..]) => a == b && go(fr, tr),
            _ => false,
        }
    }
    go(&f, &t)
}

fn ref_valid_filter(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let levels: Vec<&str> = s.split('/').collect();
    let n = levels.len();
    levels.iter().enumerate().all(|(i, l)| {
        if *l == "#" {
            i + 1 == n
        } else {
            *l == "+" || !(l.contains('+') || l.contains('#'))
        }
    })
}

fn ref_valid_topic(s: &str) -> bool {
    !s.is_empty() && !s.contains('+') && !s.contains('#')
}

/// Every (valid) topic of 1..=max_levels levels drawn from `alphabet`.
fn universe(alphabet: &[String], max_levels: usize) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    let mut current: Vec<String> = alphabet.to_vec();
    for _ in 0..max_levels {
        all.extend(current.iter().cloned());
        let mut next = Vec::new();
        for prefix in &current {
            for level in alphabet {
                next.push(format!("{prefix}/{level}"));
            }
        }
        current = next;
    }
    // A single empty level is the empty string, which is not a topic name.
    all.retain(|t| ref_valid_topic(t));
    all
}

/// Literal levels of the given filters plus one level ("z") they never use:
/// enough to find a witness for every non-coverage / intersection.
fn alphabet_for(filters: &[&str]) -> Vec<String> {
    let mut levels: Vec<String> = vec!["z".to_string()];
    for f in filters {
        for l in f.split('/') {
            if l != "+" && l != "#" && !levels.iter().any(|x| x == l) {
                levels.push(l.to_string());
            }
        }
    }
    levels
}

fn level_count(s: &str) -> usize {
    s.split('/').count()
}

// ------------------------------------------------------------ policies

fn toml_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn compile_text(text: &str, device_id: &str, groups: &[String]) -> Option<CompiledPolicy> {
    let policy = Policy::parse(text, "prop.toml").ok()?;
    Some(policy.compile(&Identity { device_id, groups }))
}

fn allow_deny(
    allow_pub: &[&str],
    allow_sub: &[&str],
    deny_pub: &[&str],
    deny_sub: &[&str],
) -> Option<CompiledPolicy> {
    let text = format!(
        "[[allow]]\nwho = \"*\"\npublish = [{}]\nsubscribe = [{}]\n\n\
         [[deny]]\nwho = \"*\"\npublish = [{}]\nsubscribe = [{}]\n",
        toml_list(allow_pub),
        toml_list(allow_sub),
        toml_list(deny_pub),
        toml_list(deny_sub)
    );
    compile_text(&text, "device", &[])
}

// ----------------------------------------------------------- strategies

/// A valid filter over the alphabet {a, b, $, +, #, /}, 1 to 3 levels.
fn filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        3 => "[ab$]{0,2}",
        2 => Just("+".to_string()),
    ];
    (prop::collection::vec(level, 1..=3), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash {
                if let Some(last) = levels.last_mut() {
                    *last = "#".to_string();
                }
            }
            levels.join("/")
        })
        .prop_filter("the empty string is not a filter", |s| !s.is_empty())
}

/// A valid topic name over the alphabet {a, b, $, /}, 1 to 4 levels.
fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec("[ab$]{0,2}", 1..=4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("the empty string is not a topic", |s| !s.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Sanity check of the reference itself against the brief's examples.
    #[test]
    fn reference_is_sane(t in topic()) {
        prop_assert!(ref_match("#", &t) != t.starts_with('$'));
        prop_assert!(ref_match(&t, &t));
    }

    /// can_subscribe(F) with a single allow pattern P is exactly "every topic
    /// matched by F is matched by P" — and then every such topic may also be
    /// published under the same pattern.
    #[test]
    fn coverage_is_sound_and_exact(p in filter(), f in filter()) {
        let c = allow_deny(&[&p], &[&p], &[], &[]);
        prop_assert!(c.is_some(), "pattern {} must parse", p);
        let c = c.unwrap_or_default();
        let alphabet = alphabet_for(&[&p, &f]);
        let max = level_count(&p).max(level_count(&f)) + 1;
        let topics = universe(&alphabet, max);
        let covered = c.can_subscribe(&f);
        let brute = topics.iter().all(|t| !ref_match(&f, t) || ref_match(&p, t));
        prop_assert_eq!(covered, brute, "P={} F={}", p, f);
        if covered {
            for t in topics.iter().filter(|t| ref_match(&f, t)) {
                prop_assert!(ref_match(&p, t), "F={} covered by P={} but {} escapes", f, p, t);
                prop_assert!(c.can_publish(t), "F={} covered by P={} but cannot publish {}", f, p, t);
            }
        }
    }

    /// With F itself allowed and a deny pattern D: F is refused exactly when every topic F
    /// matches is matched by D (nothing could be delivered), granted unfiltered exactly when
    /// no topic is matched by both, and otherwise granted with a delivery filter that admits
    /// exactly the topics D does not match.
    #[test]
    fn deny_coverage_and_filtering_are_exact(d in filter(), f in filter()) {
        let c = allow_deny(&[], &[&f], &[], &[&d]);
        prop_assert!(c.is_some());
        let c = c.unwrap_or_default();
        let alphabet = alphabet_for(&[&d, &f]);
        let max = level_count(&d).max(level_count(&f)) + 1;
        let topics = universe(&alphabet, max);
        let of_f: Vec<&String> = topics.iter().filter(|t| ref_match(&f, t)).collect();
        prop_assume!(!of_f.is_empty());
        let overlap = of_f.iter().any(|t| ref_match(&d, t));
        let covered = of_f.iter().all(|t| ref_match(&d, t));
        prop_assert_eq!(c.can_subscribe(&f), !covered, "D={} F={}", d, f);
        match c.subscription(&f) {
            SubscriptionDecision::Refused => prop_assert!(covered, "D={} F={}", d, f),
            SubscriptionDecision::Granted => {
                prop_assert!(!overlap, "D={} F={}", d, f)
            }
            SubscriptionDecision::Filtered(filter) => {
                prop_assert!(overlap && !covered, "D={} F={}", d, f);
                for t in &of_f {
                    prop_assert_eq!(filter.admits(t), !ref_match(&d, t), "D={} F={} T={}", d, f, t);
                    prop_assert_eq!(c.can_read(t), !ref_match(&d, t), "D={} F={} T={}", d, f, t);
                }
            }
        }
    }

    /// Publish decisions equal "allow matches and deny does not".
    #[test]
    fn publish_matches_reference(p in filter(), d in filter(), t in topic()) {
        let c = allow_deny(&[&p], &[], &[&d], &[]);
        prop_assert!(c.is_some());
        let c = c.unwrap_or_default();
        prop_assert_eq!(
            c.can_publish(&t),
            ref_match(&p, &t) && !ref_match(&d, &t),
            "P={} D={} T={}", p, d, t
        );
    }

    /// Arbitrary strings over the alphabet: never panics, and nothing invalid
    /// is ever allowed.
    #[test]
    fn arbitrary_strings_are_validated(s in "[ab$+#/]{0,8}") {
        let c = allow_deny(&["#", "$/#", "$a/#", "$b/#"], &["#"], &[], &[]);
        prop_assert!(c.is_some());
        let c = c.unwrap_or_default();
        if c.can_subscribe(&s) {
            prop_assert!(ref_valid_filter(&s), "{:?}", s);
        }
        if c.can_publish(&s) {
            prop_assert!(ref_valid_topic(&s), "{:?}", s);
        }
        if ref_valid_filter(&s) && !s.starts_with('$') {
            prop_assert!(c.can_subscribe(&s), "{:?}", s);
        }
        // As a pattern: parses iff it is a valid filter.
        let text = format!("[[allow]]\nwho = \"*\"\npublish = [{s:?}]\n");
        prop_assert_eq!(Policy::parse(&text, "x").is_ok(), ref_valid_filter(&s), "{:?}", s);
    }

    /// A device id or group name containing `+`, `#`, `/`, `$` or nothing at
    /// all never grants more than the literal reading of the pattern.
    #[test]
    fn substitution_never_widens(value in "[ab+#/$]{0,4}", f in filter(), t in topic()) {
        let text = "[[allow]]\nwho = \"*\"\n\
                    publish = [\"d/${device.id}/t\", \"g/${device.group}/#\"]\n\
                    subscribe = [\"d/${device.id}/t\", \"g/${device.group}/#\"]\n";
        let groups = vec![value.clone()];
        let c = compile_text(text, &value, &groups);
        prop_assert!(c.is_some());
        let c = c.unwrap_or_default();
        let safe = !value.is_empty() && !value.contains(['+', '#', '/']);
        let own = format!("d/{value}/t");
        let group_root = format!("g/{value}");
        // What the grant is meant to be: the id's own topic, the group's tree.
        let intended = |topic: &str| {
            safe && (topic == own
                || topic == group_root
                || topic.strip_prefix(&group_root).is_some_and(|r| r.starts_with('/')))
        };
        prop_assert_eq!(c.can_publish(&t), intended(&t), "value={:?} T={}", value, t);
        for candidate in [own.as_str(), group_root.as_str()] {
            if ref_valid_topic(candidate) {
                prop_assert_eq!(c.can_publish(candidate), safe, "value={:?}", value);
            }
        }
        if c.can_subscribe(&f) {
            let mut alphabet = alphabet_for(&[&f]);
            for l in ["d", "t", "g"].into_iter().chain(value.split('/')) {
                if !alphabet.iter().any(|x| x == l) {
                    alphabet.push(l.to_string());
                }
            }
            for topic in universe(&alphabet, level_count(&f) + 1) {
                if ref_match(&f, &topic) {
                    prop_assert!(intended(&topic), "value={:?} F={} leaks {}", value, f, topic);
                }
            }
        }
    }

    /// Parsing never panics on arbitrary input.
    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        if let Ok(p) = Policy::parse(&text, "fuzz.toml") {
            let _ = p.lint();
        }
    }

    /// Parsing never panics on TOML-shaped input either.
    #[test]
    fn parse_never_panics_on_tomlish(
        lines in prop::collection::vec(
            prop_oneof![
                Just("[[allow]]".to_string()),
                Just("[[deny]]".to_string()),
                Just("[allow]".to_string()),
                "(who|publish|subscribe|id|version|x) = \\[?\"[a-z${}.:*+#/]{0,12}\"\\]?",
                "(who|publish|subscribe) = [0-9]{1,3}",
            ],
            0..8,
        )
    ) {
        let text = lines.join("\n");
        match Policy::parse(&text, "fuzz.toml") {
            Ok(p) => {
                let _ = p.lint();
                let g = vec!["g".to_string()];
                let c = p.compile(&Identity { device_id: "d", groups: &g });
                let _ = c.can_publish("a/b");
                let _ = c.can_subscribe("a/#");
            }
            Err(e) => {
                for d in &e.diagnostics {
                    prop_assert!(d.line >= 1 && d.column >= 1);
                    prop_assert!(d.line <= text.lines().count().max(1) + 1, "{}", d);
                }
            }
        }
    }
}
