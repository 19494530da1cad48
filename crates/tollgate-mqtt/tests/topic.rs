//! Topic names, filters, shared subscriptions and matching.

use proptest::prelude::*;
use tollgate_mqtt::topic::{is_valid_filter, is_valid_name, matches, parse_shared};

#[test]
fn names() {
    for ok in [
        "a",
        "a/b",
        "/",
        "a//b",
        "/a",
        "a/",
        "$SYS/x",
        "sport/tennis/player1",
        "é/😀",
        " ",
    ] {
        assert!(is_valid_name(ok), "{ok:?}");
    }
    for bad in ["", "a/+", "+", "#", "a/#", "a#", "a+b", "a\0b"] {
        assert!(!is_valid_name(bad), "{bad:?}");
    }
    assert!(is_valid_name(&"x".repeat(65_535)));
    assert!(!is_valid_name(&"x".repeat(65_536)));
}

#[test]
fn filters() {
    for ok in [
        "#",
        "+",
        "a",
        "a/#",
        "a/+",
        "+/+",
        "+/#",
        "a/+/b",
        "/#",
        "/+",
        "a//b",
        "$SYS/#",
        "sport/+/player1",
        "$share/g/a/#",
        "$share/group/+",
        "$share/g/#",
        "$share",
        "$sharex/a",
        "a/$share/b",
    ] {
        assert!(is_valid_filter(ok), "{ok:?}");
    }
    for bad in [
        "",
        "a#",
        "#/a",
        "a/#/b",
        "a/b#",
        "a+",
        "+a",
        "a/+b",
        "a\0",
        "$share/",
        "$share/g",
        "$share/g/",
        "$share//a",
        "$share/g+/a",
        "$share/g#/a",
        "$share/+/a",
        "$share/g/a#",
    ] {
        assert!(!is_valid_filter(bad), "{bad:?}");
    }
    assert!(is_valid_filter(&"x".repeat(65_535)));
    assert!(!is_valid_filter(&"x".repeat(65_536)));
}

#[test]
fn shared() {
    assert_eq!(parse_shared("$share/g/a/b"), Some(("g", "a/b")));
    assert_eq!(parse_shared("$share/group/#"), Some(("group", "#")));
    assert_eq!(parse_shared("$share/g/"), Some(("g", "")));
    assert_eq!(parse_shared("$share/g"), None);
    assert_eq!(parse_shared("$share"), None);
    assert_eq!(parse_shared("a/b"), None);
    assert_eq!(parse_shared("$SHARE/g/a"), None);
}

#[test]
fn plus_and_hash() {
    // '+' matches exactly one level.
    assert!(matches("a/+", "a/b"));
    assert!(!matches("a/+", "a/b/c"));
    assert!(!matches("a/+", "a"));
    assert!(matches("+/+", "a/b"));
    assert!(matches("+", "a"));
    assert!(!matches("+", "a/b"));
    assert!(matches("sport/tennis/+", "sport/tennis/player1"));
    assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
    assert!(matches("sport/+/player1", "sport/tennis/player1"));
    // '#' matches any number of levels, including the parent.
    assert!(matches("#", "a"));
    assert!(matches("#", "a/b/c"));
    assert!(matches("a/#", "a/b"));
    assert!(matches("a/#", "a/b/c"));
    assert!(matches("a/#", "a"));
    assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
    assert!(matches("sport/#", "sport"));
    assert!(!matches("a/#", "b"));
    assert!(!matches("a/#", "ab"));
    assert!(matches("+/#", "a"));
    assert!(matches("+/tennis/#", "sport/tennis"));
    // Literal levels.
    assert!(matches("a/b", "a/b"));
    assert!(!matches("a/b", "a/c"));
    assert!(!matches("a/b", "a/b/c"));
    assert!(!matches("a/b/c", "a/b"));
    assert!(!matches("a", "A"));
}

#[test]
fn dollar_topics() {
    assert!(!matches("#", "$SYS/x"));
    assert!(!matches("+/x", "$SYS/x"));
    assert!(!matches("+", "$SYS"));
    assert!(!matches("+/#", "$SYS/x"));
    assert!(matches("$SYS/#", "$SYS/x"));
    assert!(matches("$SYS/#", "$SYS"));
    assert!(matches("$SYS/+", "$SYS/x"));
    assert!(matches("$SYS/x", "$SYS/x"));
    // '$' not at the start of the topic is an ordinary character.
    assert!(matches("#", "a/$SYS"));
    assert!(matches("a/+", "a/$x"));
}

#[test]
fn empty_levels() {
    // "a//b" has three levels, the middle one empty.
    assert!(matches("a/+/b", "a//b"));
    assert!(!matches("a/b", "a//b"));
    assert!(matches("a//b", "a//b"));
    assert!(matches("+/+", "/a"));
    assert!(matches("/+", "/a"));
    assert!(!matches("+", "/a"));
    assert!(matches("a/+", "a/"));
    assert!(matches("+/+", "/"));
    assert!(matches("#", "/"));
    assert!(matches("/#", "/"));
    assert!(matches("a/#", "a/"));
    assert!(!matches("a/+/+", "a/"));
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof!["[ab]{0,2}", Just("$a".to_string())]
}

fn levels() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(level(), 1..5)
}

/// A straightforward reference matcher on collected levels.
fn reference(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", f)), Some((_, t))) => reference(f, t),
        (Some((fl, f)), Some((tl, t))) => fl == tl && reference(f, t),
        (None, None) => true,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// `matches` agrees with a reference implementation.
    #[test]
    fn matches_reference(
        topic in levels(),
        filter in proptest::collection::vec(
            prop_oneof![3 => level(), 1 => Just("+".to_string())], 1..5),
        hash in any::<bool>(),
    ) {
        let mut filter = filter;
        if hash {
            filter.push("#".to_string());
        }
        let f = filter.join("/");
        let t = topic.join("/");
        prop_assume!(is_valid_filter(&f) && is_valid_name(&t));
        let f_levels: Vec<&str> = f.split('/').collect();
        let t_levels: Vec<&str> = t.split('/').collect();
        let dollar = t.starts_with('$') && (f.starts_with('+') || f.starts_with('#'));
        prop_assert_eq!(matches(&f, &t), !dollar && reference(&f_levels, &t_levels), "{} vs {}", f, t);
    }

    /// Every valid topic name matches itself and '#' (unless it starts with '$').
    #[test]
    fn name_matches_itself(t in "[a-z/$]{1,12}") {
        prop_assume!(is_valid_name(&t));
        prop_assert!(matches(&t, &t));
        prop_assert_eq!(matches("#", &t), !t.starts_with('$'));
    }

    /// No panics on arbitrary strings.
    #[test]
    fn arbitrary_strings(f in "\\PC{0,12}", t in "\\PC{0,12}") {
        let _ = matches(&f, &t);
        let _ = is_valid_filter(&f);
        let _ = is_valid_name(&t);
        let _ = parse_shared(&f);
    }
}
