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

#[test]
fn subscription_deny_intersection() {
    let p = policy(
        r##"
[[allow]]
who = "*"
subscribe = ["a/#"]

[[deny]]
who = "*"
subscribe = ["a/b/secret"]
"##,
    );
    let c = compile(&p, "d", &[]);
    assert!(!c.can_subscribe("a/#"));
    assert!(!c.can_subscribe("a/b/+"));
    assert!(!c.can_subscribe("a/+/secret"));
    assert!(!c.can_subscribe("a/b/#"));
    assert!(!c.can_subscribe("a/+/+"));
    assert!(!c.can_subscribe("a/b/secret"));
    assert!(c.can_subscribe("a/c/#"));
    assert!(c.can_subscribe("a/b/public"));
    assert!(c.can_subscribe("a/b"));
    assert!(c.can_subscribe("a/b/secret/x"));
    assert!(c.can_subscribe("a/+"));
    assert!(!c.can_subscribe("a/+/+/#"), "`#` also matches zero levels");
    assert!(c.can_subscribe("a/+/+/+/#"));
    assert!(c.can_subscribe("a"));

    // A deny with "#" also denies the parent.
    let p = policy(
        "[[allow]]\nwho = \"*\"\nsubscribe = [\"a/#\"]\n[[deny]]\nwho = \"*\"\nsubscribe = [\"a/b/#\"]\n",
    );
    let c = compile(&p, "d", &[]);
    assert!(!c.can_subscribe("a/b"));
    assert!(!c.can_subscribe("a/+"));
    assert!(c.can_subscribe("a"));
    assert!(c.can_subscribe("a/c/+"));
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
    assert!(compile(&p2, "", &[]).can_subscribe("+"));
    assert!(!compile(&p2, "x", &[]).can_subscribe("+"));
    // Group deny applies per group.
    let c = compile(&p, "d", &["g", "h"]);
    assert!(!c.can_subscribe("devices/g/secret"));
    assert!(!c.can_subscribe("devices/h/#"));
    assert!(!c.can_subscribe("devices/+/secret"));
    assert!(c.can_subscribe("devices/i/#"));
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
    assert!(lints[0].message.contains("will be refused"));
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
