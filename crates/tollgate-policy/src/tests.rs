//! Unit tests for the policy language.

use crate::*;

const EXAMPLE: &str = r##"# optional top-level
version = 1

[[allow]]
id = "sensors-telemetry"
description = "sensors publish their own data"
who = "group:sensors"
publish = ["devices/${device.id}/telemetry", "devices/${device.id}/events/#"]
subscribe = ["devices/${device.id}/commands/#"]

[[allow]]
who = "group:backend"
subscribe = ["devices/+/telemetry", "devices/+/events/#"]
publish = ["devices/+/commands/#"]

[[deny]]
who = "*"
publish = ["$SYS/#"]
"##;

fn policy(text: &str) -> Policy {
    match Policy::parse(text, "policy.toml") {
        Ok(p) => p,
        Err(e) => panic!("policy should parse:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match Policy::parse(text, "policy.toml") {
        Ok(p) => panic!("policy should not parse, got {:?}", p.rules()),
        Err(e) => {
            assert!(!e.diagnostics.is_empty());
            e.diagnostics
        }
    }
}

/// The single error of a file, checked for its line; returns the message.
fn single_error(text: &str, line: usize) -> String {
    let diags = errors(text);
    assert_eq!(diags.len(), 1, "expected exactly one error, got {diags:#?}");
    assert_eq!(diags[0].line, line, "wrong line for {}", diags[0]);
    diags[0].message.clone()
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn compile(p: &Policy, device: &str, group_names: &[&str]) -> CompiledPolicy {
    let g = groups(group_names);
    p.compile(&Identity {
        device_id: device,
        groups: &g,
    })
}

/// A policy with one allow rule for everyone.
fn allow_all(publish: &[&str], subscribe: &[&str]) -> Policy {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    policy(&format!(
        "[[allow]]\nwho = \"*\"\npublish = [{}]\nsubscribe = [{}]\n",
        list(publish),
        list(subscribe)
    ))
}

// ---------------------------------------------------------------- parsing

#[test]
fn parses_the_example() {
    let p = policy(EXAMPLE);
    let rules = p.rules();
    assert_eq!(rules.len(), 3);

    assert_eq!(rules[0].id, "sensors-telemetry");
    assert_eq!(rules[0].effect, Effect::Allow);
    assert_eq!(
        rules[0].description.as_deref(),
        Some("sensors publish their own data")
    );
    assert_eq!(rules[0].who, vec![Who::Group("sensors".into())]);
    assert_eq!(
        rules[0].publish,
        vec![
            "devices/${device.id}/telemetry".to_string(),
            "devices/${device.id}/events/#".to_string()
        ]
    );
    assert_eq!(rules[0].subscribe, vec!["devices/${device.id}/commands/#"]);
    assert_eq!(rules[0].line, 4);

    assert_eq!(rules[1].id, "allow[2]");
    assert_eq!(rules[1].description, None);
    assert_eq!(rules[1].line, 11);
    assert_eq!(rules[1].publish, vec!["devices/+/commands/#"]);

    assert_eq!(rules[2].id, "deny[1]");
    assert_eq!(rules[2].effect, Effect::Deny);
    assert_eq!(rules[2].who, vec![Who::Any]);
    assert_eq!(rules[2].line, 16);
    assert!(rules[2].subscribe.is_empty());
}

#[test]
fn rules_are_listed_in_file_order_with_who_arrays() {
    let p = policy(
        r##"
[[deny]]
who = ["device:pump-7", "group:a", "*"]
publish = ["x"]

[[allow]]
who = "device:pump-7"
publish = ["x"]

[[deny]]
id = "second-deny"
who = "*"
subscribe = ["y"]
"##,
    );
    let ids: Vec<&str> = p.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["deny[1]", "allow[1]", "second-deny"]);
    assert_eq!(
        p.rules()[0].who,
        vec![
            Who::Device("pump-7".into()),
            Who::Group("a".into()),
            Who::Any
        ]
    );
    let lines: Vec<usize> = p.rules().iter().map(|r| r.line).collect();
    assert_eq!(lines, [2, 6, 10]);
}

#[test]
fn inline_array_of_rules_is_accepted() {
    let p = policy("allow = [{ who = \"*\", publish = [\"a\"] }]\n");
    assert_eq!(p.rules().len(), 1);
    assert!(compile(&p, "d", &[]).can_publish("a"));
}

#[test]
fn empty_file_and_default_policy_deny_everything() {
    for text in ["", "version = 1\n", default_policy_toml()] {
        let p = policy(text);
        assert!(p.rules().is_empty());
        let c = compile(&p, "pump-7", &["sensors"]);
        assert!(c.is_empty());
        assert!(!c.can_publish("devices/pump-7/telemetry"));
        assert!(!c.can_subscribe("#"));
    }
}

#[test]
fn default_policy_mentions_the_example_commented_out() {
    let text = default_policy_toml();
    assert!(text.contains("# [[allow]]"));
    assert!(text.contains("# publish = [\"devices/${device.id}/telemetry\""));
    assert!(!text.lines().any(|l| l.trim_start().starts_with("[[")));
    // Uncommenting the example gives a valid policy with three rules.
    let (head, example) = text.split_once("# Example").unwrap_or_default();
    let uncommented: String = example
        .lines()
        .map(|l| {
            let t = l.strip_prefix("# ").unwrap_or(l);
            if t.starts_with("[[")
                || t.starts_with("who")
                || t.starts_with("publish")
                || t.starts_with("subscribe")
                || t.starts_with("id")
                || t.starts_with("description")
            {
                t.to_string()
            } else if l.starts_with('#') {
                String::new()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let p = policy(&format!("{head}\n{uncommented}"));
    assert_eq!(p.rules().len(), 3);
}

// ----------------------------------------------------------------- errors

#[test]
fn error_unknown_key_with_exact_position_and_display() {
    let text = r##"[[allow]]
who = "*"
publish = ["a"]

[[allow]]
who = "*"
    publsh = ["b"]
"##;
    let diags = errors(text);
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].line, 7);
    assert_eq!(diags[0].column, 5);
    assert_eq!(
        diags[0].to_string(),
        "policy.toml:7:5: unknown key `publsh` in rule allow[2]; expected one of id, \
         description, who, publish, subscribe, retain"
    );
}

#[test]
fn error_unknown_top_level_key() {
    let msg = single_error("version = 1\nallows = []\n", 2);
    assert!(msg.contains("unknown top-level key `allows`"), "{msg}");
}

#[test]
fn error_bad_who_forms() {
    for bad in ["grp:x", "device:", "group:", "", "everyone", " *"] {
        let text = format!("[[allow]]\npublish = [\"a\"]\nwho = {bad:?}\n");
        let msg = single_error(&text, 3);
        assert!(msg.contains("invalid `who` value"), "{bad}: {msg}");
    }
    // Inside an array: the bad entry's own line.
    let text = "[[deny]]\npublish = [\"a\"]\nwho = [\n  \"group:ok\",\n  \"gruop:typo\",\n]\n";
    let msg = single_error(text, 5);
    assert!(
        msg.contains("`gruop:typo`") && msg.contains("deny[1]"),
        "{msg}"
    );
    // Wrong types and empty arrays.
    let msg = single_error("[[allow]]\npublish = [\"a\"]\nwho = 5\n", 3);
    assert!(
        msg.contains("must be a string or an array of strings, found integer"),
        "{msg}"
    );
    let msg = single_error("[[allow]]\npublish = [\"a\"]\nwho = []\n", 3);
    assert!(msg.contains("must not be empty"), "{msg}");
}

#[test]
fn error_missing_who_points_at_rule_header() {
    let msg = single_error("version = 1\n\n[[allow]]\npublish = [\"a\"]\n", 3);
    assert!(msg.contains("rule allow[1] has no `who`"), "{msg}");
}

#[test]
fn error_invalid_filters() {
    let cases = [
        ("a/#/b", "`#` must be the last level"),
        ("a+", "`+` must be a whole level"),
        ("a/+b/c", "`+` must be a whole level"),
        ("#x", "`#` must be a whole level"),
        ("a/b#", "`#` must be a whole level"),
        ("", "the pattern is empty"),
    ];
    for (pattern, expected) in cases {
        let text =
            format!("[[allow]]\nwho = \"*\"\nsubscribe = [\n  \"ok/+\",\n  {pattern:?},\n]\n");
        let msg = single_error(&text, 5);
        assert!(msg.contains(expected), "{pattern}: {msg}");
        assert!(
            msg.contains("invalid subscribe pattern"),
            "{pattern}: {msg}"
        );
    }
}

#[test]
fn error_unknown_and_malformed_variables() {
    let msg = single_error(
        "[[allow]]\nwho = \"*\"\npublish = [\"devices/${device.name}/x\"]\n",
        3,
    );
    assert!(msg.contains("unknown variable `${device.name}`"), "{msg}");
    for bad in ["devices/${device.id", "devices/${", "x/a${device.group/y"] {
        let text = format!("[[allow]]\nwho = \"*\"\n\npublish = [{bad:?}]\n");
        let msg = single_error(&text, 4);
        assert!(msg.contains("unterminated variable"), "{bad}: {msg}");
    }
    let msg = single_error("[[allow]]\nwho = \"*\"\npublish = [\"${}\"]\n", 3);
    assert!(msg.contains("unknown variable `${}`"), "{msg}");
}

#[test]
fn error_toml_syntax_maps_to_line_and_column() {
    let text = "[[allow]]\nwho = \"*\"\npublish = [\"a\"\n\n[[deny]]\nwho = \"*\"\n";
    let diags = errors(text);
    assert!(
        diags[0].message.starts_with("TOML syntax error"),
        "{}",
        diags[0]
    );
    assert!(diags[0].line >= 3, "{}", diags[0]);

    let diags = errors("version = 1\nwho = = \"x\"\n");
    assert_eq!(diags[0].line, 2, "{}", diags[0]);
    assert!(diags[0].message.starts_with("TOML syntax error"));

    let diags = errors("a = 1\nb = 2\nc = \"unterminated\n");
    assert_eq!(diags[0].line, 3, "{}", diags[0]);
    assert!(diags[0].column >= 5, "{}", diags[0]);
}

#[test]
fn independent_syntax_errors_are_all_reported_once_per_line() {
    let text = "version = 1\nx = = 1\n\n[[allow]]\nwho = \"*\"\npublish = [\"a\"] junk\n";
    let diags = errors(text);
    let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
    assert_eq!(lines, [2, 6], "{diags:#?}");
    assert!(diags
        .iter()
        .all(|d| d.message.starts_with("TOML syntax error: ")));
}

#[test]
fn error_wrong_types() {
    let cases = [
        (
            "publish = \"a\"",
            "`publish` in rule allow[1] must be an array of strings, found string",
        ),
        (
            "subscribe = [1]",
            "`subscribe` entries in rule allow[1] must be strings, found integer",
        ),
        (
            "id = 3",
            "`id` in rule allow[1] must be a string, found integer",
        ),
        ("id = \"\"", "`id` in rule allow[1] must not be empty"),
        (
            "description = true",
            "`description` in rule allow[1] must be a string, found boolean",
        ),
    ];
    for (line, expected) in cases {
        let text = format!("[[allow]]\nwho = \"*\"\n{line}\n");
        let msg = single_error(&text, 3);
        assert_eq!(msg, expected);
    }
    let msg = single_error("[allow]\nwho = \"*\"\n", 1);
    assert!(msg.contains("must be an array of tables"), "{msg}");
    let msg = single_error("allow = [1]\n", 1);
    assert!(
        msg.contains("rule allow[1] must be a table") && msg.ends_with("found integer"),
        "{msg}"
    );
    let msg = single_error("version = \"1\"\n", 1);
    assert!(
        msg.contains("`version` must be an integer, found string"),
        "{msg}"
    );
    let msg = single_error("version = 2\n", 1);
    assert!(msg.contains("unsupported policy version"), "{msg}");
}

#[test]
fn error_duplicate_rule_ids() {
    let text = "[[allow]]\nid = \"x\"\nwho = \"*\"\npublish = [\"a\"]\n\n[[deny]]\nid = \"x\"\nwho = \"*\"\npublish = [\"a\"]\n";
    let msg = single_error(text, 7);
    assert!(
        msg.contains("duplicate rule id `x`") && msg.contains("line 1"),
        "{msg}"
    );
}

#[test]
fn multiple_errors_are_reported_at_once_in_file_order() {
    let text = r##"version = 1

[[allow]]
who = "grp:sensors"
publish = ["a/#/b", "devices/${device.nme}/x"]
subscribe = "oops"

[[deny]]
who = "*"
publsh = ["$SYS/#"]
"##;
    let err = match Policy::parse(text, "p.toml") {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.line).collect();
    assert_eq!(lines, [4, 5, 5, 6, 10], "{err}");
    let rendered = err.to_string();
    assert_eq!(rendered.lines().count(), 5);
    assert!(
        rendered.lines().all(|l| l.starts_with("p.toml:")),
        "{rendered}"
    );
    assert!(rendered.contains("p.toml:10:1: unknown key `publsh` in rule deny[1]"));
    assert!(rendered.contains("unknown variable `${device.nme}`"));
}

#[test]
fn weird_input_never_panics() {
    let inputs = [
        "\u{0}",
        "[[",
        "[[allow]]\nwho = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]",
        "allow = 1\ndeny = \"x\"",
        "[[allow]]\n[[allow.x]]\n",
        "[allow.x]\n",
        "version = 99999999999999999999999999",
        "version = 0x1\n",
        "[[allow]]\nwho=\"*\"\npublish=[\"\u{e9}/\u{0}/${device.id}\"]",
        "[[allow]]\nwho = \"*\"\npublish = [\"\u{1F600}${\"]\n",
        "\u{feff}[[allow]]\nwho = \"*\"\n",
    ];
    for text in inputs {
        let _ = Policy::parse(text, "x.toml").map(|p| p.lint());
    }
    // 0x1 is version 1.
    assert!(Policy::parse("version = 0x1\n", "x").is_ok());
}

// -------------------------------------------------------------- decisions

#[test]
fn example_decisions() {
    let p = policy(EXAMPLE);
    let sensor = compile(&p, "pump-7", &["sensors"]);
    assert!(sensor.can_publish("devices/pump-7/telemetry"));
    assert!(sensor.can_publish("devices/pump-7/events/alarm/high"));
    assert!(sensor.can_publish("devices/pump-7/events"));
    assert!(!sensor.can_publish("devices/pump-8/telemetry"));
    assert!(!sensor.can_publish("devices/pump-7/commands/x"));
    assert!(sensor.can_subscribe("devices/pump-7/commands/#"));
    assert!(sensor.can_subscribe("devices/pump-7/commands/+"));
    assert!(!sensor.can_subscribe("devices/+/commands/#"));
    assert!(!sensor.can_subscribe("devices/pump-8/commands/#"));
    assert!(!sensor.can_subscribe("devices/pump-7/telemetry"));

    let backend = compile(&p, "api-1", &["backend"]);
    assert!(backend.can_subscribe("devices/+/telemetry"));
    assert!(backend.can_subscribe("devices/pump-7/telemetry"));
    assert!(backend.can_subscribe("devices/+/events/#"));
    assert!(!backend.can_subscribe("devices/#"));
    assert!(!backend.can_subscribe("#"));
    assert!(backend.can_publish("devices/pump-7/commands/reboot"));
    assert!(!backend.can_publish("devices/pump-7/telemetry"));

    for c in [&sensor, &backend, &compile(&p, "x", &[])] {
        assert!(!c.can_publish("$SYS/x"));
    }
    let stranger = compile(&p, "stranger", &["visitors"]);
    assert!(stranger.is_empty());
    assert!(!stranger.can_publish("devices/stranger/telemetry"));
}

#[test]
fn deny_overrides_allow_and_sys_is_denied_even_when_explicitly_allowed() {
    let p = policy(
        r##"
[[allow]]
who = "*"
publish = ["$SYS/x", "a/#"]

[[deny]]
who = "*"
publish = ["$SYS/#", "a/secret"]
"##,
    );
    let c = compile(&p, "d", &[]);
    assert!(!c.can_publish("$SYS/x"));
    assert!(!c.can_publish("a/secret"));
    assert!(c.can_publish("a/public"));
    assert!(c.can_publish("a/secret/sub"));
}

#[test]
fn deny_all_denies_everything() {
    let p = Policy::deny_all();
    assert!(p.rules().is_empty());
    let c = compile(&p, "root", &["admin"]);
    assert!(c.is_empty());
    for t in ["a", "#", "$SYS/x", "/", "a/b/c"] {
        assert!(!c.can_publish(t));
        assert!(!c.can_subscribe(t));
    }
    let d = CompiledPolicy::default();
    assert!(d.is_empty());
    assert!(!d.can_publish("a") && !d.can_subscribe("#"));
    let e = p.explain(
        &Identity {
            device_id: "root",
            groups: &[],
        },
        Action::Publish,
        "a",
    );
    assert!(!e.allowed);
}

#[test]
fn is_empty_reflects_grants_only() {
    let p = policy("[[deny]]\nwho = \"*\"\npublish = [\"#\"]\n");
    assert!(compile(&p, "d", &[]).is_empty());
    let p = policy("[[allow]]\nwho = \"*\"\nsubscribe = [\"a\"]\n");
    assert!(!compile(&p, "d", &[]).is_empty());
}

#[test]
fn plus_versus_hash() {
    let c = compile(&allow_all(&["a/+/c", "b/#"], &[]), "d", &[]);
    assert!(c.can_publish("a/b/c"));
    assert!(c.can_publish("a//c"));
    assert!(!c.can_publish("a/b/x/c"));
    assert!(!c.can_publish("a/c"));
    assert!(!c.can_publish("a/b/c/d"));
    assert!(c.can_publish("b"));
    assert!(c.can_publish("b/x"));
    assert!(c.can_publish("b/x/y/z"));
    assert!(!c.can_publish("bb/x"));

    let c = compile(&allow_all(&["+"], &[]), "d", &[]);
    assert!(c.can_publish("a"));
    assert!(!c.can_publish("a/b"));
    assert!(!c.can_publish(""), "the empty topic is invalid");
}

#[test]
fn invalid_topics_and_filters_are_refused() {
    let c = compile(&allow_all(&["#"], &["#"]), "d", &[]);
    for t in ["", "a/+", "a/#", "+", "#", "a\u{0}b"] {
        assert!(!c.can_publish(t), "{t:?}");
    }
    for f in ["", "a/#/b", "a+", "#x", "a/b#", "x\u{0}"] {
        assert!(!c.can_subscribe(f), "{f:?}");
    }
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let c = compile(&allow_all(&["#", "+/x"], &["#", "+/#"]), "d", &[]);
    assert!(c.can_publish("a/b"));
    assert!(c.can_publish("a/x"));
    assert!(!c.can_publish("$SYS/x"));
    assert!(!c.can_publish("$SYS"));
    assert!(!c.can_publish("$x/x"));
    assert!(c.can_subscribe("#"));
    assert!(c.can_subscribe("+/x"));
    assert!(!c.can_subscribe("$SYS/#"));
    assert!(!c.can_subscribe("$SYS/+"));
    assert!(!c.can_subscribe("$SYS"));

    // An explicit `$` pattern does grant `$` topics...
    let c = compile(&allow_all(&["$SYS/#"], &["$SYS/#"]), "d", &[]);
    assert!(c.can_publish("$SYS/broker/load"));
    assert!(c.can_subscribe("$SYS/+/load"));
    assert!(c.can_subscribe("$SYS/#"));
    // ...but not a filter that starts with a wildcard (it matches no `$` topic,
    // and it does match non-`$` topics).
    assert!(!c.can_subscribe("#"));
    assert!(!c.can_subscribe("+/broker"));

    // A `$` level deeper in the topic is an ordinary level.
    let c = compile(&allow_all(&["a/+"], &["a/#"]), "d", &[]);
    assert!(c.can_publish("a/$x"));
    assert!(c.can_subscribe("a/$x/#"));
}

#[test]
fn dollar_deny_does_not_intersect_leading_wildcard_filter() {
    let p = policy(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"#\"]\n[[deny]]\nwho = \"*\"\nsubscribe = [\"$SYS/#\"]\n",
    );
    let c = compile(&p, "d", &[]);
    // "#" delivers no `$` topics, so it does not overlap "$SYS/#".
    assert!(c.can_subscribe("#"));
    assert!(c.can_subscribe("+/x"));

    let p = policy(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"$SYS/#\", \"#\"]\n[[deny]]\nwho = \"*\"\nsubscribe = [\"+/secret\", \"#\"]\n",
    );
    let c = compile(&p, "d", &[]);
    // The deny "#" covers all non-`$` topics but no `$` topic.
    assert!(!c.can_subscribe("a"));
    assert!(c.can_subscribe("$SYS/secret"));
    assert!(c.can_subscribe("$SYS/#"));
}

#[test]
fn empty_levels() {
    let c = compile(&allow_all(&["a//b", "/x", "y/"], &["a//+", "/#"]), "d", &[]);
    assert!(c.can_publish("a//b"));
    assert!(!c.can_publish("a/b"));
    assert!(!c.can_publish("a///b"));
    assert!(c.can_publish("/x"));
    assert!(!c.can_publish("x"));
    assert!(c.can_publish("y/"));
    assert!(!c.can_publish("y"));
    assert!(c.can_subscribe("a//+"));
    assert!(c.can_subscribe("a//c"));
    assert!(!c.can_subscribe("a/+/c"));
    assert!(c.can_subscribe("/"));
    assert!(c.can_subscribe("/a/+/#"));
    assert!(!c.can_subscribe("+/a"));

    let c = compile(&allow_all(&["+/+"], &[]), "d", &[]);
    assert!(c.can_publish("/"));
    assert!(!c.can_publish("a"));
}

#[test]
fn hash_matches_parent_level() {
    let c = compile(&allow_all(&["a/#"], &["a/#"]), "d", &[]);
    assert!(c.can_publish("a"));
    assert!(c.can_publish("a/"));
    assert!(c.can_publish("a/b/c"));
    assert!(!c.can_publish("ab"));
    assert!(!c.can_publish("b/a"));
    assert!(c.can_subscribe("a"));
    assert!(c.can_subscribe("a/b/+"));
    assert!(c.can_subscribe("a/#"));
    assert!(c.can_subscribe("a/+/#"));
    assert!(!c.can_subscribe("#"));
    assert!(!c.can_subscribe("+"));
    assert!(!c.can_subscribe("+/#"));
}

#[test]
fn subscription_coverage() {
    let c = compile(&allow_all(&[], &["devices/+/telemetry"]), "d", &[]);
    assert!(c.can_subscribe("devices/x/telemetry"));
    assert!(c.can_subscribe("devices/+/telemetry"));
    assert!(!c.can_subscribe("devices/#"));
    assert!(!c.can_subscribe("devices/+/#"));
    assert!(!c.can_subscribe("devices/+"));
    assert!(!c.can_subscribe("devices/+/telemetry/#"));
    assert!(!c.can_subscribe("+/x/telemetry"));

    // "a" does not cover "a/#" (which also matches "a/b").
    let c = compile(&allow_all(&[], &["a"]), "d", &[]);
    assert!(c.can_subscribe("a"));
    assert!(!c.can_subscribe("a/#"));
    assert!(!c.can_subscribe("+"));

    // Coverage is per pattern, not by the union of patterns.
    let c = compile(&allow_all(&[], &["a", "a/+/#"]), "d", &[]);
    assert!(!c.can_subscribe("a/#"));
    assert!(c.can_subscribe("a/b/#"));

    // "#" covers every non-$ filter.
    let c = compile(&allow_all(&[], &["#"]), "d", &[]);
    for f in ["#", "+", "a", "a/#", "+/+/#", "/", "a/$x"] {
        assert!(c.can_subscribe(f), "{f}");
    }
}

/// What `filter` gets, as text: "refused", "granted", or the withheld patterns with their rules.
fn decision(c: &CompiledPolicy, filter: &str) -> String {
    match c.subscription(filter) {
        SubscriptionDecision::Refused => "refused".to_owned(),
        SubscriptionDecision::Granted => "granted".to_owned(),
        SubscriptionDecision::Filtered(f) => {
            let parts: Vec<String> = f.withheld().map(|(p, r)| format!("{p} ({r})")).collect();
            format!("withheld: {}", parts.join(", "))
        }
    }
}

/// Issue 15: a filter covered by an allow rule that merely overlaps a deny rule is granted with
/// the denied topics withheld, instead of refused; only a filter a deny pattern covers entirely
/// is refused.
#[test]
fn subscription_overlapping_a_deny_rule_is_filtered_not_refused() {
    let p = policy(
        r##"
[[allow]]
who = "*"
subscribe = ["a/#"]

[[deny]]
id = "no-secret"
who = "*"
subscribe = ["a/b/secret"]
"##,
    );
    let c = compile(&p, "d", &[]);
    for f in ["a/#", "a/b/+", "a/+/secret", "a/b/#", "a/+/+", "a/+/+/#"] {
        assert_eq!(decision(&c, f), "withheld: a/b/secret (no-secret)", "{f}");
        assert!(c.can_subscribe(f), "{f}");
    }
    assert_eq!(decision(&c, "a/b/secret"), "refused");
    assert!(!c.can_subscribe("a/b/secret"));
    for f in [
        "a/c/#",
        "a/b/public",
        "a/b",
        "a/b/secret/x",
        "a/+",
        "a/+/+/+/#",
        "a",
    ] {
        assert_eq!(decision(&c, f), "granted", "{f}");
    }
    // Not covered by an allow rule: refused, deny or not.
    assert_eq!(decision(&c, "#"), "refused");
    assert_eq!(decision(&c, "b"), "refused");
    // The filter withholds exactly the denied topics.
    let SubscriptionDecision::Filtered(f) = c.subscription("a/#") else {
        panic!("a/# is filtered");
    };
    assert!(!f.admits("a/b/secret"));
    assert!(f.admits("a/b/secret/x"));
    assert!(f.admits("a/b"));
    assert!(f.admits("a/c/secret"));
    assert_eq!(
        f.to_string(),
        "messages matching a/b/secret are withheld (deny rule no-secret)"
    );

    // A deny with "#" also denies the parent: a filter inside it is refused.
    let p = policy(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"a/#\"]\n[[deny]]\nwho = \"*\"\nsubscribe = [\"a/b/#\"]\n",
    );
    let c = compile(&p, "d", &[]);
    assert_eq!(decision(&c, "a/b"), "refused");
    assert_eq!(decision(&c, "a/b/x/#"), "refused");
    assert_eq!(decision(&c, "a/+"), "withheld: a/b/# (deny[1])");
    assert_eq!(decision(&c, "a/#"), "withheld: a/b/# (deny[1])");
    assert_eq!(decision(&c, "a"), "granted");
    assert_eq!(decision(&c, "a/c/+"), "granted");
}

/// The example of the issue: `#` with `[[deny]] subscribe = ["secrets/#"]`.
#[test]
fn hash_subscriber_gets_everything_but_the_denied_topics() {
    let p = policy(concat!(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"#\"]\n",
        "[[deny]]\nid = \"no-secrets\"\nwho = \"*\"\nsubscribe = [\"secrets/#\", \"$SYS/#\"]\n",
    ));
    let c = compile(&p, "d", &[]);
    // `$SYS/#` cannot overlap `#` (no `$` topic matches a leading wildcard).
    assert_eq!(decision(&c, "#"), "withheld: secrets/# (no-secrets)");
    assert_eq!(decision(&c, "+/x"), "withheld: secrets/# (no-secrets)");
    assert_eq!(decision(&c, "secrets/#"), "refused");
    assert_eq!(decision(&c, "secrets"), "refused");
    assert_eq!(decision(&c, "other/#"), "granted");
    let SubscriptionDecision::Filtered(f) = c.subscription("#") else {
        panic!("# is filtered");
    };
    for t in ["a", "a/b", "secretsx/1", "x/secrets/1"] {
        assert!(f.admits(t), "{t}");
        assert!(c.can_read(t), "{t}");
    }
    for t in ["secrets", "secrets/1", "secrets/a/b"] {
        assert!(!f.admits(t), "{t}");
        assert!(!c.can_read(t), "{t}");
    }
    // Not granted by any allow: not readable either.
    assert!(!c.can_read("$SYS/x"));
    assert!(!c.can_read("a/+"), "a filter is not a topic name");
}

/// Delivery filters are compiled per identity: `${device.id}` and `${device.group}` deny
/// patterns are instantiated, and only the rules that apply to the device count.
#[test]
fn delivery_filters_instantiate_templates_and_follow_groups() {
    let p = policy(concat!(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"fleet/#\"]\n",
        "[[deny]]\nid = \"own-keys\"\nwho = \"*\"\nsubscribe = [\"fleet/${device.id}/keys\"]\n",
        "[[deny]]\nid = \"group-admin\"\nwho = \"group:field\"\nsubscribe = [\"fleet/${device.group}/admin/#\"]\n",
    ));
    let c = compile(&p, "pump-7", &[]);
    assert_eq!(
        decision(&c, "fleet/#"),
        "withheld: fleet/pump-7/keys (own-keys)"
    );
    assert_eq!(decision(&c, "fleet/pump-8/#"), "granted");
    assert_eq!(decision(&c, "fleet/pump-7/keys"), "refused");
    let c = compile(&p, "pump-7", &["field", "north"]);
    // `${device.group}` stands for each of the device's groups.
    assert_eq!(
        decision(&c, "fleet/#"),
        "withheld: fleet/pump-7/keys (own-keys), fleet/field/admin/# (group-admin), \
         fleet/north/admin/# (group-admin)"
    );
    assert_eq!(
        decision(&c, "fleet/+/admin/x"),
        "withheld: fleet/field/admin/# (group-admin), fleet/north/admin/# (group-admin)"
    );
    assert_eq!(decision(&c, "fleet/field/admin/#"), "refused");
    assert_eq!(decision(&c, "fleet/south/admin/#"), "granted");
    // Not in group field: the group rule does not apply.
    let c = compile(&p, "pump-7", &["north"]);
    assert_eq!(
        decision(&c, "fleet/#"),
        "withheld: fleet/pump-7/keys (own-keys)"
    );
    assert_eq!(decision(&c, "fleet/north/admin/#"), "granted");
    // A device id that is not a plain level never widens a deny into a wildcard.
    let c = compile(&p, "+", &[]);
    assert_eq!(decision(&c, "fleet/#"), "granted");
}

#[test]
fn explain_says_which_topics_a_granted_subscription_withholds() {
    let p = policy(concat!(
        "[[allow]]\nid = \"all\"\nwho = \"*\"\nsubscribe = [\"#\"]\n",
        "[[deny]]\nid = \"no-secrets\"\nwho = \"*\"\nsubscribe = [\"secrets/#\"]\n",
    ));
    let id = Identity {
        device_id: "d",
        groups: &[],
    };
    let e = p.explain(&id, Action::Subscribe, "#");
    assert!(e.allowed, "{e}");
    let verdict = e.steps.last().cloned().unwrap_or_default();
    assert_eq!(
        verdict,
        "=> ALLOWED by allow[1] (all); messages matching secrets/# are withheld (deny rule no-secrets)"
    );
    assert!(
        e.steps
            .iter()
            .any(|s| s.contains("overlaps the filter: matching messages are withheld")),
        "{e}"
    );
    let e = p.explain(&id, Action::Subscribe, "secrets/+");
    assert!(!e.allowed, "{e}");
    assert!(e.to_string().contains("covers the filter"), "{e}");
    assert_eq!(p.denied_by(&id, false, Action::Subscribe, "#"), None);
    assert_eq!(
        p.denied_by(&id, false, Action::Subscribe, "secrets/+"),
        Some("no-secrets")
    );
    let e = p.explain(&id, Action::Subscribe, "open/#");
    assert_eq!(
        e.steps.last().map(String::as_str),
        Some("=> ALLOWED by allow[1] (all)")
    );
}

#[test]
fn who_forms_apply_to_the_right_identities() {
    let p = policy(
        r##"
[[allow]]
who = ["device:pump-7", "group:ops"]
publish = ["x"]

[[deny]]
who = "group:quarantine"
publish = ["#"]
"##,
    );
    assert!(compile(&p, "pump-7", &[]).can_publish("x"));
    assert!(compile(&p, "other", &["ops"]).can_publish("x"));
    assert!(compile(&p, "other", &["a", "ops", "b"]).can_publish("x"));
    assert!(!compile(&p, "other", &["opsx"]).can_publish("x"));
    assert!(!compile(&p, "pump-77", &[]).can_publish("x"));
    assert!(!compile(&p, "pump-7", &["quarantine"]).can_publish("x"));
}

#[test]
fn group_variable_expands_per_group() {
    let p = policy(
        "[[allow]]\nwho = \"*\"\npublish = [\"site-${device.group}/${device.id}\"]\nsubscribe = [\"site-${device.group}/#\"]\n",
    );
    let c = compile(&p, "d1", &["north", "south"]);
    assert!(c.can_publish("site-north/d1"));
    assert!(c.can_publish("site-south/d1"));
    assert!(!c.can_publish("site-east/d1"));
    assert!(!c.can_publish("site-north/d2"));
    assert!(c.can_subscribe("site-south/+"));
    assert!(!c.can_subscribe("+/x"));

    let none = compile(&p, "d1", &[]);
    assert!(none.is_empty());
    assert!(!none.can_publish("site-/d1"));
}

// -------------------------------------------------- substitution safety

const SUBST: &str = r##"
[[allow]]
who = "*"
publish = ["devices/${device.id}/telemetry", "id-${device.id}", "${device.id}/own"]
subscribe = ["devices/${device.id}/commands/#", "g/${device.group}/#", "${device.group}"]
"##;

#[test]
fn substitution_never_widens_publish() {
    let p = policy(SUBST);
    for id in ["+", "#", "a/b", "x/#", "", "+/+", "a/+", "\u{0}"] {
        let c = compile(&p, id, &[]);
        for topic in [
            "devices/x/telemetry",
            "devices/a/b/telemetry",
            "devices/x/#/telemetry",
            "devices//telemetry",
            "devices/a/telemetry",
            "devices/x/y/telemetry",
            "id-",
            "id-a",
            "id-a/b",
            "x/own",
            "a/b/own",
            "own",
            "/own",
        ] {
            assert!(
                !c.can_publish(topic),
                "id {id:?} must not publish {topic:?}"
            );
        }
        assert!(c.is_empty(), "id {id:?}: every pattern must be dropped");
    }
    // A normal id works, and only for itself.
    let c = compile(&p, "pump-7", &[]);
    assert!(c.can_publish("devices/pump-7/telemetry"));
    assert!(c.can_publish("id-pump-7"));
    assert!(c.can_publish("pump-7/own"));
    assert!(!c.can_publish("devices/pump-8/telemetry"));
}

#[test]
fn substitution_never_widens_subscribe() {
    let p = policy(SUBST);
    for id in ["+", "#", "a/b", "x/#", ""] {
        let c = compile(&p, id, &[]);
        for filter in [
            "devices/+/commands/#",
            "devices/#",
            "#",
            "devices/x/commands/#",
            "devices/a/b/commands/#",
            "devices/+/+/commands/#",
            "devices//commands/#",
        ] {
            assert!(
                !c.can_subscribe(filter),
                "id {id:?} must not subscribe {filter:?}"
            );
        }
    }
    for group in ["+", "#", "a/b", "x/#", ""] {
        let g = [group];
        let c = compile(&p, "pump-7", &g);
        for filter in [
            "g/+/#", "g/#", "#", "+", "g/a/b/#", "g/x/#", "g//#", "g/a", "a",
        ] {
            assert!(
                !c.can_subscribe(filter),
                "group {group:?} must not subscribe {filter:?}"
            );
        }
        // The device's own commands are still fine.
        assert!(c.can_subscribe("devices/pump-7/commands/#"));
    }
    let c = compile(&p, "pump-7", &["ops"]);
    assert!(c.can_subscribe("g/ops/#"));
    assert!(c.can_subscribe("ops"));
    assert!(!c.can_subscribe("g/+/#"));
}

#[test]
fn substitution_cannot_introduce_dollar_topics() {
    let p = policy("[[allow]]\nwho = \"*\"\npublish = [\"${device.id}/#\", \"x/${device.id}\"]\n");
    let c = compile(&p, "$SYS", &[]);
    assert!(!c.can_publish("$SYS/broker"));
    assert!(!c.can_publish("$SYS"));
    // Deeper in the topic a `$` is an ordinary character.
    assert!(c.can_publish("x/$SYS"));
}

#[test]
fn literal_levels_match_literally_even_with_odd_text() {
    // Directly at the matcher level: a literal "+" / "#" / "a/b" never acts
    // as a wildcard, for publish, coverage or intersection.
    use crate::pattern::{covers, intersects, matches, Level};
    for odd in ["+", "#", "a/b", "x/#"] {
        let p = [Level::Literal("d".into()), Level::Literal(odd.into())];
        for t in ["d/x", "d/a/b", "d/a", "d"] {
            assert!(!matches(&p, t), "{odd} {t}");
        }
        for f in ["d/+", "d/#", "d/x", "d/a/b", "#", "+/+"] {
            assert!(!covers(&p, f), "{odd} covers {f}");
        }
        // Only the literal filter level equal to the text could intersect,
        // and such a filter level cannot exist (it would be invalid).
        assert!(!intersects(&p, "d/x"));
    }
}

#[test]
fn deny_substitution_only_narrows() {
    let p = policy(
        r##"
[[allow]]
who = "*"
publish = ["devices/#"]
subscribe = ["devices/#"]

[[deny]]
who = "*"
publish = ["devices/${device.id}/secret"]
subscribe = ["devices/${device.group}/secret"]
"##,
    );
    // Odd id: the deny can match no real topic, the allow still works.
    let c = compile(&p, "a/b", &["g"]);
    assert!(c.can_publish("devices/a/b/secret"));
    assert!(c.can_publish("devices/x/secret"));
    // Empty id: the deny applies to the empty level literally.
    let c = compile(&p, "", &["g"]);
    assert!(!c.can_publish("devices//secret"));
    assert!(c.can_publish("devices/x/secret"));
    // A deny that becomes the empty topic name matches nothing.
    let p2 = policy(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"#\"]\n[[deny]]\nwho = \"*\"\nsubscribe = [\"${device.id}\"]\n",
    );
    assert_eq!(decision(&compile(&p2, "", &[]), "+"), "granted");
    assert_eq!(
        decision(&compile(&p2, "x", &[]), "+"),
        "withheld: x (deny[1])"
    );
    assert_eq!(decision(&compile(&p2, "x", &[]), "x"), "refused");
    // Group deny applies per group.
    let c = compile(&p, "d", &["g", "h"]);
    assert_eq!(decision(&c, "devices/g/secret"), "refused");
    assert_eq!(
        decision(&c, "devices/h/#"),
        "withheld: devices/h/secret (deny[1])"
    );
    assert_eq!(
        decision(&c, "devices/+/secret"),
        "withheld: devices/g/secret (deny[1]), devices/h/secret (deny[1])"
    );
    assert_eq!(decision(&c, "devices/i/#"), "granted");
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_allowed_and_denied() {
    let p = policy(EXAMPLE);
    let g = groups(&["sensors"]);
    let sensor = Identity {
        device_id: "pump-7",
        groups: &g,
    };
    let e = p.explain(&sensor, Action::Publish, "devices/pump-7/telemetry");
    assert!(e.allowed);
    let text = e.to_string();
    assert!(
        text.ends_with("=> ALLOWED by allow[1] (sensors-telemetry)"),
        "{text}"
    );
    assert!(text.contains("devices/${device.id}/telemetry` -> `devices/pump-7/telemetry`: matches"));
    assert!(
        text.contains("allow[2], line 11: does not apply (who: group:backend)"),
        "{text}"
    );

    let e = p.explain(&sensor, Action::Publish, "$SYS/x");
    assert!(!e.allowed);
    assert!(e.to_string().ends_with("=> DENIED by deny[1]"), "{e}");

    let e = p.explain(&sensor, Action::Publish, "devices/pump-8/telemetry");
    assert!(!e.allowed);
    assert!(
        e.to_string()
            .ends_with("=> DENIED: no rule grants it (default deny)"),
        "{e}"
    );

    let g = groups(&["backend"]);
    let backend = Identity {
        device_id: "api",
        groups: &g,
    };
    let e = p.explain(&backend, Action::Subscribe, "devices/+/telemetry");
    assert!(e.allowed);
    assert!(e.to_string().ends_with("=> ALLOWED by allow[2]"), "{e}");
    let e = p.explain(&backend, Action::Subscribe, "devices/#");
    assert!(!e.allowed);
    let e = p.explain(&backend, Action::Subscribe, "a/#/b");
    assert!(!e.allowed);
    assert!(e.to_string().contains("invalid"), "{e}");
}

#[test]
fn explain_agrees_with_compiled_policy() {
    let p = policy(
        r##"
[[allow]]
who = "*"
publish = ["a/#", "${device.id}/+", "g/${device.group}/#"]
subscribe = ["a/#", "+/x", "g/${device.group}/#"]

[[deny]]
id = "secrets"
who = "group:g1"
publish = ["a/b/secret", "#"]
subscribe = ["a/b/secret"]
"##,
    );
    let topics = [
        "a",
        "a/b",
        "a/b/secret",
        "d/x",
        "d/x/y",
        "g/g1/z",
        "g/g2",
        "$SYS/x",
        "x",
        "a/+",
        "#",
        "a/#",
        "+/x",
        "g/+/#",
        "a/b/+",
    ];
    for (id, gs) in [
        ("d", vec!["g1"]),
        ("d", vec!["g2", "g3"]),
        ("+", vec![]),
        ("", vec![""]),
    ] {
        let g = groups(&gs);
        let identity = Identity {
            device_id: id,
            groups: &g,
        };
        let c = p.compile(&identity);
        for t in topics {
            let e = p.explain(&identity, Action::Publish, t);
            assert_eq!(e.allowed, c.can_publish(t), "publish {t} as {id}:\n{e}");
            let e = p.explain(&identity, Action::Subscribe, t);
            assert_eq!(e.allowed, c.can_subscribe(t), "subscribe {t} as {id}:\n{e}");
        }
    }
}

#[test]
fn explanation_display_adds_missing_verdict() {
    let e = Explanation {
        allowed: true,
        steps: vec!["step".into()],
    };
    assert_eq!(e.to_string(), "step\n=> ALLOWED");
    let e = Explanation {
        allowed: false,
        steps: vec![],
    };
    assert_eq!(e.to_string(), "=> DENIED");
}

// ------------------------------------------------------------------- lint

fn lint_messages(text: &str) -> Vec<String> {
    policy(text).lint().iter().map(|l| l.to_string()).collect()
}

#[test]
fn lint_broad_grant_to_everyone() {
    let lints = lint_messages(
        "[[allow]]\nwho = \"*\"\npublish = [\"#\"]\nsubscribe = [\"+/x\", \"a/#\"]\n",
    );
    assert_eq!(lints.len(), 2, "{lints:#?}");
    assert!(lints[0].starts_with("warning: line 1 (allow[1]): overly broad grant"));
    assert!(lints[0].contains("`#`"));
    assert!(lints[1].contains("`+/x`"));
    // Not for a group, and not for deny rules.
    let lints = lint_messages(
        "[[allow]]\nwho = \"group:backend\"\nsubscribe = [\"#\"]\n[[deny]]\nwho = \"*\"\npublish = [\"#\"]\n",
    );
    assert!(lints.is_empty(), "{lints:#?}");
}

#[test]
fn lint_rule_without_patterns() {
    let p =
        policy("[[allow]]\nid = \"noop\"\nwho = \"*\"\n\n[[deny]]\nwho = \"*\"\npublish = []\n");
    let lints = p.lint();
    assert_eq!(lints.len(), 2, "{lints:#?}");
    assert_eq!(lints[0].severity, Severity::Warning);
    assert_eq!(lints[0].rule, "noop");
    assert_eq!(lints[0].line, 1);
    assert!(lints[0]
        .message
        .contains("no `publish`, `subscribe` or `retain` patterns"));
    assert_eq!(lints[1].rule, "deny[1]");
    assert_eq!(lints[1].line, 5);
}

#[test]
fn lint_dead_grant() {
    let p = policy(
        r##"
[[allow]]
id = "dead"
who = "group:sensors"
publish = ["secret/${device.id}/x", "open/x"]
subscribe = ["secret/+/x"]

[[deny]]
who = ["group:sensors", "group:other"]
publish = ["secret/#"]
subscribe = ["secret/+/+"]
"##,
    );
    let lints = p.lint();
    let dead: Vec<&Lint> = lints
        .iter()
        .filter(|l| l.message.starts_with("dead grant"))
        .collect();
    assert_eq!(dead.len(), 2, "{lints:#?}");
    assert_eq!(dead[0].rule, "dead");
    assert_eq!(dead[0].line, 2);
    assert!(dead[0].message.contains("publish `secret/${device.id}/x`"));
    assert!(dead[1].message.contains("subscribe `secret/+/x`"));

    // A narrower deny `who` does not make the grant dead.
    let lints = lint_messages(
        "[[allow]]\nwho = \"*\"\npublish = [\"secret/x\"]\n[[deny]]\nwho = \"group:a\"\npublish = [\"secret/#\"]\n",
    );
    assert!(
        lints.iter().all(|l| !l.contains("dead grant")),
        "{lints:#?}"
    );
    // A deny that covers only part of the grant does not either.
    let lints = lint_messages(
        "[[allow]]\nwho = \"*\"\npublish = [\"secret/+\"]\n[[deny]]\nwho = \"*\"\npublish = [\"secret/x\"]\n",
    );
    assert!(
        lints.iter().all(|l| !l.contains("dead grant")),
        "{lints:#?}"
    );
    // "#" does not cover "$SYS/x".
    let lints = lint_messages(
        "[[allow]]\nwho = \"*\"\npublish = [\"$SYS/x\"]\n[[deny]]\nwho = \"*\"\npublish = [\"#\"]\n",
    );
    assert!(
        lints.iter().all(|l| !l.contains("dead grant")),
        "{lints:#?}"
    );
}

#[test]
fn lint_subscribe_overlap_is_info() {
    let p = policy(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"a/b/#\"]\n[[deny]]\nwho = \"*\"\nsubscribe = [\"a/b/secret\"]\n",
    );
    let lints = p.lint();
    assert_eq!(lints.len(), 1, "{lints:#?}");
    assert_eq!(lints[0].severity, Severity::Info);
    assert!(
        lints[0]
            .message
            .contains("is granted, but messages matching `a/b/secret` are withheld"),
        "{lints:#?}"
    );
}

#[test]
fn lint_finds_duplicate_and_redundant_grants_across_rules() {
    let lints = lint_messages(concat!(
        "[[allow]]\nid = \"a\"\nwho = [\"group:s\"]\npublish = [\"t/${device.id}/#\"]\n",
        "[[allow]]\nid = \"b\"\nwho = [\"group:s\"]\npublish = [\"t/${device.id}/#\"]\n",
        "[[allow]]\nid = \"c\"\nwho = [\"group:s\", \"group:o\"]\npublish = [\"t/${device.id}/x\"]\n",
        "[[allow]]\nid = \"d\"\nwho = [\"group:s\"]\npublish = [\"t/${device.id}/y\"]\n",
    ));
    // b repeats a: one warning, on the later rule only.
    let dup: Vec<_> = lints
        .iter()
        .filter(|l| l.contains("duplicate grant"))
        .collect();
    assert_eq!(dup.len(), 1, "{lints:#?}");
    assert!(
        dup[0].contains("(b)") && dup[0].contains("rule a"),
        "{dup:?}"
    );
    // d is inside a's grant for the same group; c is not (it also names group:o).
    let red: Vec<_> = lints
        .iter()
        .filter(|l| l.contains("redundant grant"))
        .collect();
    assert_eq!(red.len(), 1, "{lints:#?}");
    assert!(red[0].contains("(d)"), "{red:?}");
}

#[test]
fn lint_duplicates() {
    let lints = lint_messages(
        "[[allow]]\nwho = [\"group:a\", \"group:a\"]\npublish = [\"x\", \"y\", \"x\"]\nsubscribe = [\"x\"]\n",
    );
    assert_eq!(lints.len(), 2, "{lints:#?}");
    assert!(lints
        .iter()
        .any(|l| l.contains("duplicate publish pattern `x`")));
    assert!(lints
        .iter()
        .any(|l| l.contains("duplicate `who` entry `group:a`")));
}

#[test]
fn lint_no_allow_rule_is_info() {
    let p = policy("[[deny]]\nwho = \"*\"\npublish = [\"$SYS/#\"]\n");
    let lints = p.lint();
    assert_eq!(lints.len(), 1, "{lints:#?}");
    assert_eq!(lints[0].severity, Severity::Info);
    assert!(lints[0].to_string().starts_with("info: "));
    assert!(lints[0].message.contains("denies everything"));
    assert_eq!(Policy::deny_all().lint().len(), 1);
    assert!(
        policy(EXAMPLE).lint().is_empty(),
        "{:#?}",
        policy(EXAMPLE).lint()
    );
}

// ---------------------------------------------------------------- retain

const RETAIN: &str = r##"
[[allow]]
id = "sensors"
who = "group:sensors"
publish = ["devices/${device.id}/#"]
retain = ["devices/${device.id}/status"]

[[allow]]
id = "everyone"
who = "*"
publish = ["public/#"]

[[deny]]
id = "no-retained-alarms"
who = "*"
retain = ["devices/+/status/alarm"]

[quarantine]
publish = ["$tollgate/devices/${device.id}/inventory"]
"##;

#[test]
fn retain_needs_its_own_grant_on_top_of_publish() {
    let p = policy(RETAIN);
    let c = compile(&p, "s1", &["sensors"]);
    // Publishing is not retaining: a publish grant alone never allows the retain flag.
    assert!(c.can_publish("devices/s1/telemetry"));
    assert!(!c.can_retain("devices/s1/telemetry"));
    assert!(!c.can_publish_retained("devices/s1/telemetry"));
    assert!(c.can_publish_retained("devices/s1/status"));
    // Another device's topic: neither.
    assert!(!c.can_publish_retained("devices/s2/status"));
    // A rule that grants publish only (to everyone) grants no retain.
    assert!(c.can_publish("public/x"));
    assert!(!c.can_publish_retained("public/x"));
    // Invalid topics are never retained.
    assert!(!c.can_retain("devices/s1/+"));
    // The rule's id and patterns are listed as written.
    assert_eq!(p.rules()[0].retain, vec!["devices/${device.id}/status"]);
}

#[test]
fn a_deny_retain_pattern_forbids_the_retain_flag_only() {
    let p = policy(
        r##"
[[allow]]
who = "*"
publish = ["a/#"]
retain = ["a/#"]

[[deny]]
who = "*"
retain = ["a/secret/#"]
"##,
    );
    let c = compile(&p, "d", &[]);
    assert!(c.can_publish("a/secret/x"));
    assert!(!c.can_publish_retained("a/secret/x"));
    assert!(c.can_publish_retained("a/open"));
}

#[test]
fn quarantine_grants_no_retain_unless_written() {
    let p = policy(RETAIN);
    let g = groups(&["sensors"]);
    let id = Identity {
        device_id: "s1",
        groups: &g,
    };
    let q = p.compile_quarantined(&id);
    assert!(q.can_publish("$tollgate/devices/s1/inventory"));
    assert!(!q.can_publish_retained("$tollgate/devices/s1/inventory"));
    // The built-in default has no retain either.
    let q = Policy::deny_all().compile_quarantined(&id);
    assert!(q.can_publish("$tollgate/devices/s1/inventory"));
    assert!(!q.can_retain("$tollgate/devices/s1/inventory"));
    // Written down, it applies (and the file's deny rules still do).
    let p = policy(
        r##"
[[deny]]
who = "*"
retain = ["$tollgate/devices/+/inventory/secret"]

[quarantine]
publish = ["$tollgate/devices/${device.id}/inventory/#"]
retain = ["$tollgate/devices/${device.id}/inventory/#"]
"##,
    );
    let q = p.compile_quarantined(&id);
    assert!(q.can_publish_retained("$tollgate/devices/s1/inventory/x"));
    assert!(!q.can_publish_retained("$tollgate/devices/s1/inventory/secret"));
}

#[test]
fn retain_patterns_are_validated_like_the_others() {
    let msg = single_error("[[allow]]\nwho = \"*\"\nretain = [\"a/#/b\"]\n", 3);
    assert!(msg.contains("invalid retain pattern"), "{msg}");
    let msg = single_error("[[allow]]\nwho = \"*\"\nretain = \"a\"\n", 3);
    assert!(msg.contains("`retain`"), "{msg}");
    let msg = single_error("[quarantine]\nretian = []\n", 2);
    assert!(msg.contains("retain"), "{msg}");
}

#[test]
fn explain_retain_needs_both_grants_and_agrees_with_compiled_policy() {
    let p = policy(RETAIN);
    let g = groups(&["sensors"]);
    let id = Identity {
        device_id: "s1",
        groups: &g,
    };
    let e = p.explain(&id, Action::Retain, "devices/s1/status");
    assert!(e.allowed, "{e}");
    let e = p.explain(&id, Action::Retain, "devices/s1/telemetry");
    assert!(!e.allowed);
    assert!(e.to_string().contains("=> DENIED: retain"), "{e}");
    let e = p.explain(&id, Action::Retain, "devices/s1/status/alarm");
    assert!(!e.allowed);
    let c = p.compile(&id);
    for t in [
        "devices/s1/status",
        "devices/s1/status/alarm",
        "devices/s1/x",
        "public/x",
        "devices/s2/status",
        "a/+",
    ] {
        let e = p.explain(&id, Action::Retain, t);
        assert_eq!(e.allowed, c.can_publish_retained(t), "retain {t}:\n{e}");
    }
}

#[test]
fn lint_retain_without_publish_is_info_and_dead_retain_is_a_warning() {
    let lints = lint_messages(
        r##"
[[allow]]
who = "group:a"
publish = ["x/#"]
retain = ["x/y", "z/#"]

[[deny]]
who = "*"
retain = ["x/#"]
"##,
    );
    assert!(
        lints
            .iter()
            .any(|l| l.contains("retain `z/#` is not covered by a publish grant")),
        "{lints:#?}"
    );
    assert!(
        lints.iter().any(|l| l.contains("dead grant: retain `x/y`")),
        "{lints:#?}"
    );
}

// ---------------------------------------------------------------- suggestions from observations

fn seen(device: &str, group_names: &[&str], action: Action, topic: &str, count: u64) -> Observed {
    Observed {
        device: device.to_string(),
        groups: groups(group_names),
        action,
        topic: topic.to_string(),
        count,
    }
}

const EVENT_KINDS: [&str; 3] = ["alarm", "battery", "boot"];

fn sensor_ids() -> Vec<String> {
    (1..=20).map(|n| format!("s{n:02}")).collect()
}

/// A recorded fleet: 20 sensors, 2 backends, 3 PLCs, a gateway without a group.
fn fleet() -> Vec<Observed> {
    let mut v = Vec::new();
    for id in sensor_ids() {
        v.push(seen(
            &id,
            &["sensors"],
            Action::Publish,
            &format!("devices/{id}/telemetry"),
            100,
        ));
        for kind in EVENT_KINDS {
            v.push(seen(
                &id,
                &["sensors"],
                Action::Publish,
                &format!("devices/{id}/events/{kind}"),
                2,
            ));
        }
        v.push(seen(
            &id,
            &["sensors"],
            Action::Subscribe,
            &format!("devices/{id}/commands/#"),
            1,
        ));
    }
    for b in ["backend-1", "backend-2"] {
        v.push(seen(
            b,
            &["backend"],
            Action::Subscribe,
            "devices/+/telemetry",
            1,
        ));
        for id in sensor_ids() {
            v.push(seen(
                b,
                &["backend"],
                Action::Publish,
                &format!("devices/{id}/commands/reboot"),
                1,
            ));
        }
    }
    for (plc, line) in [
        ("plc-01", "line-a"),
        ("plc-02", "line-b"),
        ("plc-03", "line-c"),
    ] {
        v.push(seen(
            plc,
            &["plc"],
            Action::Retain,
            &format!("plant/status-{plc}"),
            5,
        ));
        v.push(seen(
            plc,
            &["plc"],
            Action::Publish,
            "groups/plc/heartbeat",
            50,
        ));
        v.push(seen(
            plc,
            &["plc"],
            Action::Publish,
            &format!("plant/{line}/counter"),
            500,
        ));
        v.push(seen(
            plc,
            &["plc"],
            Action::Subscribe,
            "plant/setpoints/#",
            1,
        ));
    }
    v.push(seen(
        "gw-1",
        &[],
        Action::Publish,
        "gateways/gw-1/uptime",
        10,
    ));
    v
}

const BROAD: &str = r##"
[[allow]]
id = "everything"
who = "*"
publish = ["#"]
subscribe = ["#"]
retain = ["#"]

[[deny]]
id = "no-sys"
who = "*"
publish = ["$SYS/#"]
subscribe = ["$SYS/#"]

[quarantine]
publish = ["$tollgate/devices/${device.id}/inventory"]
"##;

const GROUP_RULES: &str = r##"
[[allow]]
id = "sensors"
who = "group:sensors"
publish = ["devices/+/telemetry", "devices/+/events/#", "devices/+/debug/#"]
subscribe = ["devices/+/commands/#"]

[[allow]]
id = "backend"
who = "group:backend"
subscribe = ["devices/#"]
publish = ["devices/+/commands/#"]

[[allow]]
id = "plc"
who = "group:plc"
publish = ["plant/#", "groups/#"]
retain = ["plant/#"]
subscribe = ["plant/#"]

[[allow]]
id = "gateways"
who = "device:gw-1"
publish = ["gateways/#"]

[[allow]]
id = "legacy"
who = "group:legacy"
publish = ["legacy/#"]

[[deny]]
who = "*"
publish = ["$SYS/#"]
"##;

fn suggest(current: &Policy, observed: &[Observed]) -> Suggestion {
    current.suggest(observed, &SuggestOptions::default())
}

/// The suggestion's file, parsed the way the broker would load it.
fn reparsed(s: &Suggestion) -> Policy {
    match Policy::parse(&s.toml, "suggested.toml") {
        Ok(p) => p,
        Err(e) => panic!("the suggested policy must parse:\n{e}\n{}", s.toml),
    }
}

fn decide(p: &Policy, device: &str, group_names: &[String], action: Action, topic: &str) -> bool {
    let c = p.compile(&Identity {
        device_id: device,
        groups: group_names,
    });
    match action {
        Action::Publish => c.can_publish(topic),
        Action::Subscribe => c.can_subscribe(topic),
        Action::Retain => c.can_publish_retained(topic),
    }
}

/// Property 1: every observation the current policy allows, the suggestion allows.
fn assert_replays(current: &Policy, s: &Suggestion, observed: &[Observed]) {
    let new = reparsed(s);
    for o in observed {
        if s.skipped
            .iter()
            .any(|k| k.observed.device == o.device && k.observed.topic == o.topic)
        {
            continue;
        }
        if decide(current, &o.device, &o.groups, o.action, &o.topic) {
            assert!(
                decide(&new, &o.device, &o.groups, o.action, &o.topic),
                "the suggestion denies an allowed observation: {o:?}\n{}",
                s.toml
            );
        }
    }
}

/// Probe actions: every observed identity doing every observed topic / filter, and a few
/// synthetic ones.
fn probe_set(observed: &[Observed]) -> Vec<(String, Vec<String>, Action, String)> {
    let mut idents: Vec<(String, Vec<String>)> = observed
        .iter()
        .map(|o| (o.device.clone(), o.groups.clone()))
        .collect();
    idents.sort();
    idents.dedup();
    let mut topics: Vec<(Action, String)> = Vec::new();
    for o in observed {
        topics.push((o.action, o.topic.clone()));
        for a in [Action::Publish, Action::Retain] {
            topics.push((a, o.topic.replace('+', "other-device").replace('#', "x/y")));
        }
    }
    for t in [
        "#",
        "devices/#",
        "devices/+/commands/#",
        "plant/#",
        "x",
        "legacy/x",
    ] {
        topics.push((Action::Subscribe, t.to_string()));
        topics.push((Action::Publish, t.replace('#', "x/y")));
    }
    topics.sort_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
    topics.dedup();
    let mut out = Vec::new();
    for (d, g) in &idents {
        for (a, t) in &topics {
            out.push((d.clone(), g.clone(), *a, t.clone()));
        }
    }
    out
}

/// Property 2 (first half): nothing the suggestion allows is denied by the current policy.
fn assert_subset(current: &Policy, s: &Suggestion, observed: &[Observed]) {
    let new = reparsed(s);
    for (d, g, a, t) in probe_set(observed) {
        if decide(&new, &d, &g, a, &t) {
            assert!(
                decide(current, &d, &g, a, &t),
                "the suggestion allows what the current policy denies: {d} {a} {t}\n{}",
                s.toml
            );
        }
    }
}

fn allow_rule<'a>(s: &'a Suggestion, id: &str) -> &'a Rule {
    match s.rules.iter().find(|r| r.id == id) {
        Some(r) => r,
        None => panic!("no rule {id} in\n{}", s.toml),
    }
}

fn all_patterns(s: &Suggestion) -> Vec<String> {
    s.rules
        .iter()
        .flat_map(|r| r.publish.iter().chain(&r.subscribe).chain(&r.retain))
        .cloned()
        .collect()
}

#[test]
fn suggest_replays_every_allowed_observation_of_the_fleet() {
    for current in [BROAD, GROUP_RULES, EXAMPLE, RETAIN] {
        let current = policy(current);
        let observed = fleet();
        let s = suggest(&current, &observed);
        assert_replays(&current, &s, &observed);
        assert_subset(&current, &s, &observed);
    }
}

#[test]
fn suggest_fleet_rules_use_variables_where_the_observations_allow() {
    let s = suggest(&policy(BROAD), &fleet());
    let ids: Vec<&str> = s.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "suggested-group-backend",
            "suggested-group-plc",
            "suggested-group-sensors",
            "suggested-device-gw-1",
            "suggested-device-plc-01",
            "suggested-device-plc-02",
            "suggested-device-plc-03",
        ]
    );
    let sensors = allow_rule(&s, "suggested-group-sensors");
    assert_eq!(sensors.who, vec![Who::Group("sensors".into())]);
    assert_eq!(
        sensors.publish,
        [
            "devices/${device.id}/events/alarm",
            "devices/${device.id}/events/battery",
            "devices/${device.id}/events/boot",
            "devices/${device.id}/telemetry",
        ]
    );
    assert_eq!(sensors.subscribe, ["devices/${device.id}/commands/#"]);
    assert!(sensors.retain.is_empty());

    // 20 sensors commanded: the level is merged into `+` (more than 8 values), nowhere else.
    let backend = allow_rule(&s, "suggested-group-backend");
    assert_eq!(backend.publish, ["devices/+/commands/reboot"]);
    assert_eq!(backend.subscribe, ["devices/+/telemetry"]);

    // The id inside a level, the group as a whole level; retained publish gives both grants.
    let plc = allow_rule(&s, "suggested-group-plc");
    assert_eq!(
        plc.publish,
        [
            "groups/${device.group}/heartbeat",
            "plant/status-${device.id}"
        ]
    );
    assert_eq!(plc.retain, ["plant/status-${device.id}"]);
    assert_eq!(plc.subscribe, ["plant/setpoints/#"]);
    // Each PLC's own line stays its own.
    let plc1 = allow_rule(&s, "suggested-device-plc-01");
    assert_eq!(plc1.who, vec![Who::Device("plc-01".into())]);
    assert_eq!(plc1.publish, ["plant/line-a/counter"]);
    // A device without a group gets a device rule, with its id generalised.
    let gw = allow_rule(&s, "suggested-device-gw-1");
    assert_eq!(gw.publish, ["gateways/${device.id}/uptime"]);

    // Comments say what each rule is based on; the deny rules and quarantine are kept.
    assert!(
        s.toml.contains(
            "# seen from 20 of 20 observed devices of group sensors: 5 topic shapes, 2140 messages"
        ),
        "{}",
        s.toml
    );
    assert!(
        s.toml
            .contains("level 2 merged into `+`: 20 distinct values"),
        "{}",
        s.toml
    );
    let p = reparsed(&s);
    let denies: Vec<&str> = p
        .rules()
        .iter()
        .filter(|r| r.effect == Effect::Deny)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(denies, ["no-sys"]);
    assert_eq!(
        p.quarantine_rule().map(|q| q.publish.clone()),
        Some(vec!["$tollgate/devices/${device.id}/inventory".to_string()])
    );
}

#[test]
fn suggest_is_strictly_narrower_and_says_what_it_would_deny() {
    let current = policy(BROAD);
    let observed = fleet();
    let s = suggest(&current, &observed);
    let new = reparsed(&s);
    let g = groups(&["sensors"]);
    // Sensor s01 may no longer publish to s02's telemetry, nor read everyone's commands.
    assert!(decide(
        &current,
        "s01",
        &g,
        Action::Publish,
        "devices/s02/telemetry"
    ));
    assert!(!decide(
        &new,
        "s01",
        &g,
        Action::Publish,
        "devices/s02/telemetry"
    ));
    assert!(!decide(
        &new,
        "s01",
        &g,
        Action::Subscribe,
        "devices/+/commands/#"
    ));
    assert!(decide(
        &new,
        "s01",
        &g,
        Action::Publish,
        "devices/s01/telemetry"
    ));

    let publish_all = s
        .changes
        .iter()
        .find(|c| c.rule == "everything" && c.action == Action::Publish)
        .expect("a change for publish \"#\"");
    assert_eq!(publish_all.kind, ChangeKind::Narrowed);
    assert_eq!(publish_all.pattern, "#");
    assert!(publish_all.would_deny_count > 0);
    assert!(!publish_all.would_deny.is_empty() && publish_all.would_deny.len() <= 5);
    // Every example really is allowed now and denied by the suggestion.
    for c in &s.changes {
        for p in &c.would_deny {
            assert!(
                decide(&current, &p.device, &p.groups, p.action, &p.topic),
                "{p:?}"
            );
            assert!(
                !decide(&new, &p.device, &p.groups, p.action, &p.topic),
                "{p:?}"
            );
        }
    }
    // The group-rule policy: the sensors' `devices/+/telemetry` would deny s01 -> s02.
    let current = policy(GROUP_RULES);
    let s = suggest(&current, &observed);
    let telemetry = s
        .changes
        .iter()
        .find(|c| c.rule == "sensors" && c.pattern == "devices/+/telemetry")
        .expect("a change for the sensors' telemetry");
    assert_eq!(telemetry.kind, ChangeKind::Narrowed);
    assert!(
        telemetry.would_deny.iter().any(|p| p.device == "s01"
            && p.action == Action::Publish
            && p.topic == "devices/s02/telemetry"),
        "{:#?}",
        telemetry.would_deny
    );
    assert!(
        telemetry.text.contains("suggested-group-sensors"),
        "{}",
        telemetry.text
    );
    // Unused grants are removals; additions come last and deny nothing.
    let debug = s
        .changes
        .iter()
        .find(|c| c.pattern == "devices/+/debug/#")
        .expect("a change for the unused debug grant");
    assert_eq!(debug.kind, ChangeKind::Removed);
    assert!(debug.would_deny_count > 0);
    let legacy = s
        .changes
        .iter()
        .find(|c| c.rule == "legacy")
        .expect("legacy");
    assert_eq!(legacy.kind, ChangeKind::Removed);
    let first_added = s
        .changes
        .iter()
        .position(|c| c.kind == ChangeKind::Added)
        .unwrap_or(0);
    assert!(s.changes[first_added..]
        .iter()
        .all(|c| c.kind == ChangeKind::Added && c.would_deny.is_empty()));
    // The strict part, on the probe set: something the current policy allows is denied.
    let new = reparsed(&s);
    let narrower = probe_set(&observed)
        .into_iter()
        .any(|(d, g, a, t)| decide(&current, &d, &g, a, &t) && !decide(&new, &d, &g, a, &t));
    assert!(narrower);
}

#[test]
fn suggest_diff_is_readable() {
    let s = suggest(&policy(GROUP_RULES), &fleet());
    let d = &s.diff;
    assert!(
        d.starts_with("--- current policy\n+++ suggested policy\n"),
        "{d}"
    );
    assert!(
        d.contains(
            "- allow group:sensors publish \"devices/+/telemetry\"  # rule sensors, narrowed"
        ),
        "{d}"
    );
    assert!(
        d.contains("  #     device s01 publish \"devices/s02/telemetry\""),
        "{d}"
    );
    assert!(
        d.contains("- allow group:legacy publish \"legacy/#\"  # rule legacy, unused"),
        "{d}"
    );
    assert!(
        d.contains(
            "+ allow group:sensors publish \"devices/${device.id}/telemetry\"  # rule \
             suggested-group-sensors: 20 devices, 2000 messages"
        ),
        "{d}"
    );
    assert!(
        d.contains("  deny * publish \"$SYS/#\"  # rule deny[1], kept"),
        "{d}"
    );
    // Every line is a header, a change, a kept line or a comment on a change.
    for line in d.lines().skip(2) {
        assert!(
            line.starts_with("- ") || line.starts_with("+ ") || line.starts_with("  "),
            "{line}"
        );
    }
}

#[test]
fn suggest_keeps_identical_grants_unchanged() {
    let current = policy(
        r##"
[[allow]]
id = "own"
who = "group:sensors"
publish = ["devices/${device.id}/telemetry"]
"##,
    );
    let observed: Vec<Observed> = ["s1", "s2"]
        .iter()
        .map(|d| {
            seen(
                d,
                &["sensors"],
                Action::Publish,
                &format!("devices/{d}/telemetry"),
                1,
            )
        })
        .collect();
    let s = suggest(&current, &observed);
    assert!(s.changes.is_empty(), "{:#?}", s.changes);
    assert!(
        s.diff.contains(
            "  allow group:sensors publish \"devices/${device.id}/telemetry\"  # rule own, kept"
        ),
        "{}",
        s.diff
    );
    assert_replays(&current, &s, &observed);
}

#[test]
fn suggest_with_no_observations_allows_nothing() {
    for text in [BROAD, GROUP_RULES, "", EXAMPLE] {
        let current = policy(text);
        let s = suggest(&current, &[]);
        let p = reparsed(&s);
        assert!(s.rules.is_empty());
        assert!(p.rules().iter().all(|r| r.effect == Effect::Deny));
        assert_eq!(
            p.rules().len(),
            current
                .rules()
                .iter()
                .filter(|r| r.effect == Effect::Deny)
                .count()
        );
        assert!(
            s.toml.contains("this suggestion allows nothing"),
            "{}",
            s.toml
        );
        assert!(compile(&p, "s01", &["sensors"]).is_empty());
        assert!(s.changes.iter().all(|c| c.kind == ChangeKind::Removed));
        assert_eq!(
            s.changes.len(),
            current
                .rules()
                .iter()
                .filter(|r| r.effect == Effect::Allow)
                .map(|r| r.publish.len() + r.subscribe.len() + r.retain.len())
                .sum::<usize>()
        );
    }
    // The quarantine section is copied only when the file has one.
    let s = suggest(&policy(BROAD), &[]);
    assert!(s.toml.contains("\n[quarantine]\n"), "{}", s.toml);
    assert!(s.diff.contains("[quarantine] kept"));
    let s = suggest(&policy(GROUP_RULES), &[]);
    assert!(!s.toml.contains("\n[quarantine]\n"), "{}", s.toml);
    assert!(!s.diff.contains("[quarantine]"));
}

#[test]
fn suggest_for_one_group_limits_the_output() {
    let current = policy(GROUP_RULES);
    let observed = fleet();
    let opts = SuggestOptions {
        group: Some("plc".into()),
        ..SuggestOptions::default()
    };
    let s = current.suggest(&observed, &opts);
    let ids: Vec<&str> = s.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "suggested-group-plc",
            "suggested-device-plc-01",
            "suggested-device-plc-02",
            "suggested-device-plc-03"
        ]
    );
    assert!(s.toml.contains("Only group plc is covered"), "{}", s.toml);
    // Only the current rules that apply to the group's members are compared.
    let rules: std::collections::BTreeSet<&str> = s
        .changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Added)
        .map(|c| c.rule.as_str())
        .collect();
    assert_eq!(rules, std::collections::BTreeSet::from(["plc"]));
    assert!(!s.diff.contains("group:sensors"), "{}", s.diff);
    let plc: Vec<Observed> = observed
        .iter()
        .filter(|o| o.groups.iter().any(|g| g == "plc"))
        .cloned()
        .collect();
    assert_replays(&current, &s, &plc);
    assert_subset(&current, &s, &plc);
    // An unknown group: nothing observed, nothing suggested.
    let opts = SuggestOptions {
        group: Some("nobody".into()),
        ..SuggestOptions::default()
    };
    let s = current.suggest(&observed, &opts);
    assert!(s.rules.is_empty());
    assert!(s.changes.is_empty());
    assert!(s.toml.contains("allows nothing"));
}

#[test]
fn suggest_is_never_broader_than_the_current_policy() {
    // The backend may command only some sensors, by name: 20 values do not become `+`.
    let mut text =
        String::from("[[allow]]\nid = \"backend\"\nwho = \"group:backend\"\npublish = [");
    for id in sensor_ids() {
        text.push_str(&format!("\"devices/{id}/commands/#\", "));
    }
    text.push_str("]\n");
    // Two sensors may publish to a shared topic, the others may not.
    text.push_str(
        r##"
[[allow]]
id = "own"
who = "group:sensors"
publish = ["devices/${device.id}/#"]

[[allow]]
id = "shared"
who = ["device:s01", "device:s02"]
publish = ["shared/x"]
"##,
    );
    let current = policy(&text);
    let mut observed = fleet();
    observed.push(seen("s01", &["sensors"], Action::Publish, "shared/x", 1));
    observed.push(seen("s02", &["sensors"], Action::Publish, "shared/x", 1));
    let s = suggest(&current, &observed);
    assert_replays(&current, &s, &observed);
    assert_subset(&current, &s, &observed);
    let backend = allow_rule(&s, "suggested-group-backend");
    assert_eq!(backend.publish.len(), 20, "{}", s.toml);
    assert!(backend.publish.iter().all(|p| !p.contains('+')));
    // Seen from 2 sensors, but not allowed to the others: device rules, not a group rule.
    let sensors = allow_rule(&s, "suggested-group-sensors");
    assert!(
        !sensors.publish.contains(&"shared/x".to_string()),
        "{}",
        s.toml
    );
    assert_eq!(allow_rule(&s, "suggested-device-s01").publish, ["shared/x"]);
    assert_eq!(allow_rule(&s, "suggested-device-s02").publish, ["shared/x"]);
}

#[test]
fn suggest_reports_denied_and_unusable_observations_and_grants_neither() {
    let current = policy(GROUP_RULES);
    let mut observed = fleet();
    observed.push(seen(
        "s01",
        &["sensors"],
        Action::Publish,
        "$SYS/broker/load",
        3,
    ));
    observed.push(seen("s01", &["sensors"], Action::Subscribe, "devices/#", 1));
    observed.push(seen(
        "s01",
        &["sensors"],
        Action::Retain,
        "devices/s01/telemetry",
        1,
    ));
    observed.push(seen(
        "s01",
        &["sensors"],
        Action::Publish,
        "devices/+/bad",
        1,
    ));
    observed.push(seen(
        "gw-1",
        &[],
        Action::Publish,
        "gateways/${device.id}/x",
        1,
    ));
    let s = suggest(&current, &observed);
    let denied: Vec<(Action, &str)> = s
        .denied_seen
        .iter()
        .map(|o| (o.action, o.topic.as_str()))
        .collect();
    assert_eq!(
        denied,
        [
            (Action::Publish, "$SYS/broker/load"),
            (Action::Subscribe, "devices/#"),
            (Action::Retain, "devices/s01/telemetry"),
        ]
    );
    let skipped: Vec<&str> = s
        .skipped
        .iter()
        .map(|k| k.observed.topic.as_str())
        .collect();
    assert_eq!(skipped, ["gateways/${device.id}/x", "devices/+/bad"]);
    assert!(s.skipped.iter().all(|k| !k.reason.is_empty()));
    assert!(s
        .toml
        .contains("3 observed actions denied by the current policy are not granted"));
    let new = reparsed(&s);
    let g = groups(&["sensors"]);
    assert!(!decide(&new, "s01", &g, Action::Subscribe, "devices/#"));
    assert!(!decide(
        &new,
        "s01",
        &g,
        Action::Retain,
        "devices/s01/telemetry"
    ));
    assert!(all_patterns(&s).iter().all(|p| !p.contains("SYS")));
    assert_replays(&current, &s, &observed);
}

fn topics_seen(device: &str, topics: &[String]) -> Vec<Observed> {
    topics
        .iter()
        .map(|t| seen(device, &[], Action::Publish, t, 1))
        .collect()
}

#[test]
fn suggest_merges_levels_only_when_the_observations_force_it() {
    let current = policy(BROAD);
    let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("logs/v{i}")).collect() };
    // 8 values stay 8 literal patterns; 9 become `+`.
    let s = suggest(&current, &topics_seen("d", &names(8)));
    assert_eq!(allow_rule(&s, "suggested-device-d").publish, names(8));
    let s = suggest(&current, &topics_seen("d", &names(9)));
    assert_eq!(allow_rule(&s, "suggested-device-d").publish, ["logs/+"]);
    // Configurable.
    let opts = SuggestOptions {
        max_literal_siblings: 20,
        ..SuggestOptions::default()
    };
    let s = current.suggest(&topics_seen("d", &names(9)), &opts);
    assert_eq!(allow_rule(&s, "suggested-device-d").publish.len(), 9);
    // Never at the first level.
    let firsts: Vec<String> = (0..30).map(|i| format!("top{i:02}/x")).collect();
    let s = suggest(&current, &topics_seen("d", &firsts));
    assert_eq!(allow_rule(&s, "suggested-device-d").publish, firsts);
    // A middle level: the shape below it is kept.
    let mids: Vec<String> = (0..12).map(|i| format!("a/m{i:02}/z")).collect();
    let s = suggest(&current, &topics_seen("d", &mids));
    assert_eq!(allow_rule(&s, "suggested-device-d").publish, ["a/+/z"]);
    // Many shapes of different depths under one prefix: `#`.
    let varied: Vec<String> = (0..20)
        .map(|i| format!("a/b/{}", vec!["c"; i + 1].join("/")))
        .collect();
    let s = suggest(&current, &topics_seen("d", &varied));
    let publish = &allow_rule(&s, "suggested-device-d").publish;
    assert!(publish.len() <= 16, "{publish:?}");
    assert!(publish.iter().any(|p| p.ends_with("/#")), "{publish:?}");
    assert!(s.toml.contains("merged into `#`"), "{}", s.toml);
    let observed = topics_seen("d", &varied);
    assert_replays(&current, &s, &observed);
    // With a larger limit they stay literal.
    let opts = SuggestOptions {
        max_shapes_per_prefix: 100,
        ..SuggestOptions::default()
    };
    let s = current.suggest(&observed, &opts);
    assert_eq!(allow_rule(&s, "suggested-device-d").publish.len(), 20);
}

#[test]
fn suggest_substitutes_ids_only_when_unambiguous() {
    let current = policy(BROAD);
    let cases = [
        ("plc-01", "plant/status-plc-01", "plant/status-${device.id}"),
        ("plc-01", "plant/plc-01", "plant/${device.id}"),
        ("01", "fw/v01x", "fw/v01x"),
        ("01", "fw/01-01", "fw/01-01"),
        ("aa", "x/aaa", "x/aaa"),
        // Equal to both the id and the group: not the id; the group rule may use the group.
        ("sensors", "g/sensors", "g/${device.group}"),
        ("d+", "x/d+", "x/d+"),
    ];
    for (device, topic, expected) in cases {
        let group = if device == "sensors" {
            vec!["sensors"]
        } else {
            vec![]
        };
        let observed = vec![seen(device, &group, Action::Publish, topic, 1)];
        let s = current.suggest(&observed, &SuggestOptions::default());
        let patterns = all_patterns(&s);
        if device == "d+" {
            // An id that cannot be substituted is not granted through a variable.
            assert!(s.skipped.len() + s.denied_seen.len() + patterns.len() >= 1);
            assert!(patterns.iter().all(|p| !p.contains("${")), "{patterns:?}");
            continue;
        }
        assert_eq!(patterns, [expected], "{device} {topic}");
        assert_replays(&current, &s, &observed);
    }
    // An id starting with `$` is not substituted into the first level.
    let observed = vec![seen("$d", &[], Action::Publish, "$d/x", 1)];
    let s = suggest(
        &policy("[[allow]]\nwho = \"*\"\npublish = [\"$d/#\"]\n"),
        &observed,
    );
    assert_eq!(all_patterns(&s), ["$d/x"]);
}

#[test]
fn suggest_group_variable_only_when_exactly_equivalent() {
    let current = policy(BROAD);
    // Both in exactly one group: `${device.group}`.
    let observed = vec![
        seen(
            "a1",
            &["line1"],
            Action::Subscribe,
            "groups/line1/config",
            1,
        ),
        seen(
            "a2",
            &["line1"],
            Action::Subscribe,
            "groups/line1/config",
            1,
        ),
    ];
    let s = suggest(&current, &observed);
    assert_eq!(
        allow_rule(&s, "suggested-group-line1").subscribe,
        ["groups/${device.group}/config"]
    );
    // A member in two groups would get both expansions: the name stays literal.
    let observed = vec![
        seen(
            "a1",
            &["line1"],
            Action::Subscribe,
            "groups/line1/config",
            1,
        ),
        seen(
            "a2",
            &["line1", "line2"],
            Action::Subscribe,
            "groups/line1/config",
            1,
        ),
    ];
    let s = suggest(&current, &observed);
    assert_eq!(
        allow_rule(&s, "suggested-group-line1").subscribe,
        ["groups/line1/config"]
    );
    assert_replays(&current, &s, &observed);
}

#[test]
fn suggest_places_shapes_in_the_group_that_shares_them() {
    let current = policy(BROAD);
    let observed = vec![
        // m1 is in both groups; the shape is shared with the members of `b`.
        seen("m1", &["a", "b"], Action::Publish, "shared/b", 1),
        seen("m2", &["b"], Action::Publish, "shared/b", 1),
        seen("m3", &["b"], Action::Publish, "shared/b", 1),
        seen("m3", &["b"], Action::Publish, "only/thing", 1),
        seen("m4", &["a"], Action::Publish, "only/x4", 1),
        seen("m5", &["a"], Action::Publish, "other/x5", 1),
        // A shape with the id, from a single member, goes to its group.
        seen("m2", &["b"], Action::Publish, "debug/m2", 1),
    ];
    let s = suggest(&current, &observed);
    let b = allow_rule(&s, "suggested-group-b");
    assert_eq!(b.publish, ["debug/${device.id}", "shared/b"]);
    // Seen from one member of `b` (and not by id): a device rule.
    assert_eq!(
        allow_rule(&s, "suggested-device-m3").publish,
        ["only/thing"]
    );
    assert_eq!(allow_rule(&s, "suggested-device-m4").publish, ["only/x4"]);
    assert!(
        !s.rules.iter().any(|r| r.id == "suggested-group-a"),
        "{}",
        s.toml
    );
    assert_replays(&current, &s, &observed);
    assert_subset(&current, &s, &observed);
}

#[test]
fn suggest_output_is_deterministic() {
    let current = policy(GROUP_RULES);
    let observed = fleet();
    let a = suggest(&current, &observed);
    let mut reversed = observed.clone();
    reversed.reverse();
    let b = suggest(&current, &reversed);
    assert_eq!(a.toml, b.toml);
    assert_eq!(a.diff, b.diff);
    assert_eq!(a.changes.len(), b.changes.len());
    // Duplicate observations add up instead of adding rules.
    let mut doubled = observed.clone();
    doubled.extend(observed.iter().cloned());
    let c = suggest(&current, &doubled);
    assert_eq!(a.rules.len(), c.rules.len());
    assert!(c.toml.contains("2000 messages") || c.toml.contains("4000 messages"));
}

#[test]
fn suggest_rule_ids_do_not_collide_with_kept_denies() {
    let current = policy(
        r##"
[[allow]]
who = "*"
publish = ["#"]

[[deny]]
id = "suggested-device-d"
who = "*"
publish = ["secret/#"]
"##,
    );
    let observed = vec![seen("d", &[], Action::Publish, "t/x", 1)];
    let s = suggest(&current, &observed);
    assert_eq!(allow_rule(&s, "suggested-device-d-2").publish, ["t/x"]);
    assert_replays(&current, &s, &observed);
}

#[test]
fn suggest_survives_hostile_observations() {
    let current = policy(BROAD);
    let huge = "L".repeat(100_000);
    let deep = vec!["d"; 5_000].join("/");
    let mut observed = vec![
        seen("e", &[], Action::Publish, "", 1),
        seen("e", &[], Action::Subscribe, "", 1),
        seen("e", &[], Action::Subscribe, "#", 1),
        seen("e", &[], Action::Subscribe, "+/#", 1),
        seen("e", &[], Action::Subscribe, "a/#/b", 1),
        seen("e", &[], Action::Publish, "/", 1),
        seen("e", &[], Action::Publish, "a//b", 1),
        seen("", &["g"], Action::Publish, "x", 1),
        seen("+", &["+"], Action::Subscribe, "devices/+/x", 1),
        seen("#", &["#"], Action::Publish, "devices/#/x", 1),
        seen("a/b", &["a/b"], Action::Publish, "devices/a/b/x", 1),
        seen(
            "q\"uote\\",
            &["new\nline"],
            Action::Publish,
            "q/q\"uote\\/x",
            u64::MAX,
        ),
        seen(
            "q\"uote\\",
            &["new\nline"],
            Action::Publish,
            "q/q\"uote\\/x",
            u64::MAX,
        ),
        seen("nul\0", &["\u{7f}"], Action::Publish, "n/nul\0", 1),
        seen("ctl\u{1}", &[""], Action::Retain, "c/ctl\u{1}", 1),
        seen("$dollar", &[], Action::Publish, "$dollar/x", 1),
        seen("v", &["g"], Action::Publish, "v/${device.id}", 1),
        seen("v", &["g"], Action::Publish, "v/${nope", 1),
        seen("huge", &["g"], Action::Publish, &format!("h/{huge}"), 1),
        seen("huge", &["g"], Action::Publish, &format!("{huge}/x"), 1),
        seen("deep", &["g"], Action::Publish, &deep, 1),
        seen("deep", &["g"], Action::Subscribe, &format!("{deep}/#"), 1),
    ];
    // 10,000 distinct topics from one device.
    for i in 0..10_000 {
        observed.push(seen(
            "chatty",
            &["g"],
            Action::Publish,
            &format!("data/{i}/{}", i % 7),
            1,
        ));
    }
    for i in 0..300 {
        observed.push(seen(
            "chain",
            &[],
            Action::Publish,
            &vec!["c"; i + 1].join("/"),
            1,
        ));
    }
    let s = suggest(&current, &observed);
    assert_replays(&current, &s, &observed);
    // Bounded output.
    let chatty = allow_rule(&s, "suggested-device-chatty");
    // 10,000 values at level 2 merge into `+`; the 7 values at level 3 stay literal.
    let expected: Vec<String> = (0..7).map(|i| format!("data/+/{i}")).collect();
    assert_eq!(chatty.publish, expected);
    let chain = allow_rule(&s, "suggested-device-chain");
    assert!(chain.publish.len() <= 17, "{}", chain.publish.len());
    assert!(s.toml.len() < 2_000_000, "{}", s.toml.len());
    assert!(s.skipped.iter().any(|k| k.observed.device.is_empty()));
    assert!(s
        .skipped
        .iter()
        .any(|k| k.observed.topic == "v/${device.id}"));
    // The same against other policies, with every option at its extremes.
    for text in [GROUP_RULES, EXAMPLE, RETAIN, ""] {
        let current = policy(text);
        for opts in [
            SuggestOptions::default(),
            SuggestOptions {
                group: Some("g".into()),
                max_literal_siblings: 0,
                max_shapes_per_prefix: 0,
            },
            SuggestOptions {
                group: Some(String::new()),
                max_literal_siblings: usize::MAX,
                max_shapes_per_prefix: usize::MAX,
            },
        ] {
            let s = current.suggest(&observed[..40], &opts);
            let _ = reparsed(&s);
        }
    }
    let _ = current.unused_grants(&observed);
}

#[test]
fn suggest_device_seen_with_different_groups_is_never_widened() {
    // d1 was seen in g1 and g2, then in g1 only; the current policy lets only g2 use x/y.
    let current = policy(
        r##"
[[allow]]
who = "group:g2"
subscribe = ["x/#"]

[[allow]]
who = "group:g1"
publish = ["t/#"]
"##,
    );
    let observed = vec![
        seen("d1", &["g1", "g2"], Action::Subscribe, "x/y", 1),
        seen("d1", &["g1"], Action::Publish, "t/1", 1),
    ];
    let s = suggest(&current, &observed);
    // A device rule would also apply to d1 in g1 only: the grant goes to group g2 instead.
    assert_eq!(allow_rule(&s, "suggested-group-g2").subscribe, ["x/y"]);
    assert_replays(&current, &s, &observed);
    assert_subset(&current, &s, &observed);
    // If no rule can grant it to that identity only, it is reported, not granted.
    let mut observed = observed;
    observed.push(seen("d2", &["g2"], Action::Publish, "t/2", 1));
    let current = policy(
        r##"
[[allow]]
who = "group:g2"
subscribe = ["x/#"]
publish = ["t/#"]

[[allow]]
who = "group:g1"
publish = ["t/#"]

[[deny]]
who = "device:d2"
subscribe = ["x/y"]
"##,
    );
    let s = suggest(&current, &observed);
    assert!(
        s.skipped
            .iter()
            .any(|k| k.observed.topic == "x/y" && k.reason.contains("other groups")),
        "{:#?}\n{}",
        s.skipped,
        s.toml
    );
    assert_subset(&current, &s, &observed);
}

#[test]
fn suggest_scales_to_large_fleets() {
    let current = policy(GROUP_RULES);
    let mut observed = Vec::new();
    for n in 0..3_000 {
        let id = format!("s{n:05}");
        observed.push(seen(
            &id,
            &["sensors"],
            Action::Publish,
            &format!("devices/{id}/telemetry"),
            1,
        ));
    }
    for n in 0..300 {
        let gw = format!("gw{n:05}");
        observed.push(seen(
            &gw,
            &[],
            Action::Publish,
            &format!("gateways/{gw}/up"),
            1,
        ));
    }
    let s = suggest(&current, &observed);
    assert_eq!(
        allow_rule(&s, "suggested-group-sensors").publish,
        ["devices/${device.id}/telemetry"]
    );
    // The current policy lets only gw-1 use `gateways/#`: the others were denied.
    assert_eq!(s.denied_seen.len(), 300);
    assert_eq!(s.rules.len(), 1);
    let unused = current.unused_grants(&observed);
    assert!(unused.iter().any(|l| l.rule == "backend"));
    // Under the broad policy, every gateway gets its own device rule.
    let current = policy(BROAD);
    let s = suggest(&current, &observed);
    assert_eq!(s.rules.len(), 301);
    assert_eq!(
        allow_rule(&s, "suggested-device-gw00299").publish,
        ["gateways/${device.id}/up"]
    );
    assert!(s.changes.iter().any(|c| c.would_deny_count > 0));
}

// ---------------------------------------------------------------- unused grants

#[test]
fn unused_grants_flag_exactly_the_patterns_nobody_used() {
    let p = policy(
        r##"
[[allow]]
id = "used"
who = "group:sensors"
publish = ["devices/${device.id}/telemetry", "devices/${device.id}/debug"]
subscribe = ["devices/${device.id}/commands/#"]

[[allow]]
id = "unused"
who = "group:sensors"
publish = ["legacy/#"]

[[allow]]
id = "nobody-here"
who = "device:ghost"
publish = ["ghost/#"]

[[allow]]
id = "retained"
who = "*"
publish = ["status/#"]
retain = ["status/#", "other/#"]

[[deny]]
who = "*"
publish = ["devices/+/telemetry/secret"]
"##,
    );
    let observed = vec![
        // Only one sensor ever used its telemetry: that instantiation is enough.
        seen(
            "s1",
            &["sensors"],
            Action::Publish,
            "devices/s1/telemetry",
            1,
        ),
        seen(
            "s2",
            &["sensors"],
            Action::Subscribe,
            "devices/s2/commands/reboot",
            1,
        ),
        // Another sensor's debug topic is not this pattern's use (it is denied).
        seen("s1", &["sensors"], Action::Publish, "devices/s2/debug", 1),
        seen("s3", &["sensors"], Action::Retain, "status/s3", 1),
    ];
    let lints = p.unused_grants(&observed);
    let found: Vec<(&str, &str)> = lints
        .iter()
        .map(|l| (l.rule.as_str(), l.message.as_str()))
        .collect();
    let messages: Vec<String> = lints.iter().map(|l| l.to_string()).collect();
    assert_eq!(lints.len(), 4, "{messages:#?}");
    assert!(lints.iter().all(|l| l.severity == Severity::Warning));
    assert_eq!(found[0].0, "used");
    assert_eq!(
        found[0].1,
        "allow rule 'used' grants publish \"devices/${device.id}/debug\" but no device used it \
         in the observation window"
    );
    assert_eq!(found[1].0, "unused");
    assert!(found[1].1.contains("publish \"legacy/#\""));
    assert_eq!(found[2].0, "nobody-here");
    assert!(found[2]
        .1
        .ends_with("(no device it applies to was observed)"));
    assert_eq!(found[3].0, "retained");
    assert!(found[3].1.contains("retain \"other/#\""));
    assert_eq!(lints[1].line, 8);
    assert!(messages[1].starts_with("warning: line 8 (unused): allow rule 'unused'"));

    // Nothing observed: every grant is unused; everything used: nothing flagged.
    assert_eq!(p.unused_grants(&[]).len(), 8);
    let all = vec![
        seen(
            "s1",
            &["sensors"],
            Action::Publish,
            "devices/s1/telemetry",
            1,
        ),
        seen("s1", &["sensors"], Action::Publish, "devices/s1/debug", 1),
        seen(
            "s1",
            &["sensors"],
            Action::Subscribe,
            "devices/s1/commands/#",
            1,
        ),
        seen("s1", &["sensors"], Action::Publish, "legacy/x", 1),
        seen("ghost", &[], Action::Publish, "ghost/x", 1),
        seen("ghost", &[], Action::Retain, "status/x", 1),
        seen("ghost", &[], Action::Publish, "other/x", 1),
    ];
    let lints = p.unused_grants(&all);
    assert_eq!(
        lints.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        [
            "allow rule 'retained' grants retain \"other/#\" but no device used it in the \
          observation window"
        ]
    );
}

mod suggest_properties {
    //! Random fleets against random policies: the suggestion always parses, replays every
    //! allowed observation, and allows nothing the current policy denies.

    use super::*;
    use proptest::prelude::*;

    const DEVICES: [&str; 4] = ["d0", "d1", "d2", "g1"];
    const GROUPS: [&str; 2] = ["g1", "g2"];

    fn pattern_level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a",
            "b",
            "d0",
            "g1",
            "${device.id}",
            "${device.group}",
            "x-${device.id}",
            "+",
        ])
    }

    fn pattern() -> impl Strategy<Value = String> {
        (prop::collection::vec(pattern_level(), 1..4), any::<bool>()).prop_map(|(levels, hash)| {
            let mut p = levels.join("/");
            if hash {
                p.push_str("/#");
            }
            p
        })
    }

    fn rule() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop::sample::select(vec!["*", "group:g1", "group:g2", "device:d0", "device:g1"]),
            prop::collection::vec(pattern(), 0..3),
            prop::collection::vec(pattern(), 0..3),
            prop::collection::vec(pattern(), 0..2),
        )
            .prop_map(|(deny, who, publish, subscribe, retain)| {
                format!(
                    "[[{}]]\nwho = {who:?}\npublish = {publish:?}\nsubscribe = {subscribe:?}\n\
                     retain = {retain:?}\n\n",
                    if deny { "deny" } else { "allow" }
                )
            })
    }

    fn policy_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(BROAD.to_string()),
            Just(GROUP_RULES.to_string()),
            prop::collection::vec(rule(), 0..5).prop_map(|r| r.concat()),
            // A broad grant, then random narrowing denies and extra grants.
            prop::collection::vec(rule(), 0..4).prop_map(|r| format!("{BROAD}\n{}", r.concat())),
        ]
    }

    fn topic_level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a", "b", "d0", "d1", "d2", "g1", "g2", "x-d0", "x-d1", "x-g1",
        ])
    }

    fn observation() -> impl Strategy<Value = Observed> {
        (
            prop::sample::select(DEVICES.to_vec()),
            prop::sample::subsequence(GROUPS.to_vec(), 0..=2),
            prop::sample::select(vec![Action::Publish, Action::Subscribe, Action::Retain]),
            prop::collection::vec(topic_level(), 1..5),
            prop::sample::select(vec!["", "+", "#", "$s"]),
        )
            .prop_map(|(device, group_names, action, levels, extra)| {
                let mut topic = levels.join("/");
                match (extra, action) {
                    ("$s", _) => topic = format!("$s/{topic}"),
                    ("+", Action::Subscribe) => topic = format!("{topic}/+/a"),
                    ("#", Action::Subscribe) => topic.push_str("/#"),
                    _ => {}
                }
                seen(device, &group_names, action, &topic, 1)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn suggestions_replay_and_never_widen(
            text in policy_text(),
            observed in prop::collection::vec(observation(), 0..40),
            siblings in 0usize..4,
            shapes in 0usize..6,
            group in prop::option::of(prop::sample::select(GROUPS.to_vec())),
        ) {
            let current = policy(&text);
            let opts = SuggestOptions {
                group: group.map(str::to_string),
                max_literal_siblings: siblings,
                max_shapes_per_prefix: shapes,
            };
            let s = current.suggest(&observed, &opts);
            let in_scope: Vec<Observed> = observed
                .iter()
                .filter(|o| opts.group.as_ref().is_none_or(|g| o.groups.contains(g)))
                .cloned()
                .collect();
            assert_replays(&current, &s, &in_scope);
            assert_subset(&current, &s, &in_scope);
            let new = reparsed(&s);
            for c in &s.changes {
                prop_assert!(c.would_deny.len() <= 5);
                for p in &c.would_deny {
                    prop_assert!(decide(&current, &p.device, &p.groups, p.action, &p.topic));
                    prop_assert!(!decide(&new, &p.device, &p.groups, p.action, &p.topic));
                }
            }
            // Used grants are exactly those some allowed observation needed.
            let unused = current.unused_grants(&observed);
            prop_assert!(unused.iter().all(|l| l.severity == Severity::Warning));
        }
    }
}

#[test]
fn denied_by_names_the_deny_rule_or_none_for_the_default_deny() {
    let p = policy(concat!(
        "[[allow]]\nwho = \"*\"\npublish = [\"#\"]\nsubscribe = [\"#\"]\n",
        "[[deny]]\nid = \"no-secrets\"\nwho = \"group:s\"\npublish = [\"secrets/#\"]\nsubscribe = [\"secrets/#\"]\n",
        "[[deny]]\nwho = \"*\"\nretain = [\"r/#\"]\n",
        "[quarantine]\npublish = [\"q/${device.id}\"]\n",
    ));
    let groups = vec!["s".to_owned()];
    let id = Identity {
        device_id: "d1",
        groups: &groups,
    };
    assert_eq!(
        p.denied_by(&id, false, Action::Publish, "secrets/x"),
        Some("no-secrets")
    );
    // A filter inside the denied topics (one that merely overlaps them is granted, filtered).
    assert_eq!(
        p.denied_by(&id, false, Action::Subscribe, "secrets/+"),
        Some("no-secrets")
    );
    assert_eq!(p.denied_by(&id, false, Action::Subscribe, "#"), None);
    assert_eq!(p.denied_by(&id, false, Action::Publish, "open/x"), None);
    // A rule without an id is named by its position.
    assert_eq!(
        p.denied_by(&id, false, Action::Retain, "r/1"),
        Some("deny[2]")
    );
    // Not in group s: the deny rule does not apply.
    let other = Identity {
        device_id: "d2",
        groups: &[],
    };
    assert_eq!(
        p.denied_by(&other, false, Action::Publish, "secrets/x"),
        None
    );
    // Quarantined: the deny rules still apply on top of the quarantine grant; a topic the
    // grant does not cover is the default deny.
    assert_eq!(
        p.denied_by(&id, true, Action::Publish, "secrets/x"),
        Some("no-secrets")
    );
    assert_eq!(p.denied_by(&id, true, Action::Publish, "open/x"), None);
    assert!(p.explain_quarantined(&id, Action::Publish, "q/d1").allowed);
    assert!(
        !p.explain_quarantined(&id, Action::Publish, "open/x")
            .allowed
    );
}
