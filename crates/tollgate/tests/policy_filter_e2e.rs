//! Per-message policy filtering end to end (issue 15): a subscription covered by an allow rule
//! that overlaps a deny rule is granted, and the denied topics are withheld at delivery; the
//! real binary over mTLS, driven by mosquitto clients (3.1.1 and 5) and paho-mqtt.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{finish, Server};

/// `pub` may publish (and retain) anywhere; watchers may read everything but `secrets/...`.
const POLICY: &str = r##"
[[allow]]
id = "publisher"
who = "device:pub"
publish = ["#"]
retain = ["#"]

[[allow]]
id = "watchers"
who = "group:watchers"
subscribe = ["#"]

[[deny]]
id = "no-secrets"
who = "*"
subscribe = ["secrets/#"]
"##;

/// The same, before the deny rule was written.
const POLICY_WITHOUT_DENY: &str = r##"
[[allow]]
id = "publisher"
who = "device:pub"
publish = ["#"]
retain = ["#"]

[[allow]]
id = "watchers"
who = "group:watchers"
subscribe = ["#"]
"##;

fn publish(s: &Server, dev: &support::Device, topic: &str, payload: &str, retain: bool) {
    let mut args = vec!["-t", topic, "-m", payload, "-q", "1"];
    if retain {
        args.push("-r");
    }
    let out = s.mosquitto_pub(dev, &args);
    assert!(
        out.status.success(),
        "publish {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(s: &Server, name: &str) -> u64 {
    let addrs: Value =
        serde_json::from_str(&std::fs::read_to_string(s.data.join("run/addresses.json")).unwrap())
            .unwrap();
    let url = format!("http://{}/metrics", addrs["metrics"].as_str().unwrap());
    let body = Command::new("curl").args(["-sf", &url]).output().unwrap();
    assert!(body.status.success());
    let text = String::from_utf8_lossy(&body.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn hash_subscriber_with_a_deny_rule_receives_everything_but_the_denied_topics_v311_and_v5() {
    let s = Server::start_with(&[], POLICY);
    let publisher = s.add_device("pub", &[]);
    let watcher = s.add_device("watcher", &["watchers"]);
    // Retained before anyone subscribes: the open one arrives on SUBSCRIBE, the secret one
    // must not.
    publish(&s, &publisher, "secrets/vault", "retained-secret", true);
    publish(&s, &publisher, "open/state", "retained-open", true);
    for version in ["mqttv311", "5"] {
        let sub = s.mosquitto_sub(
            &watcher,
            &["-V", version, "-t", "#", "-q", "1", "-v", "-C", "4"],
        );
        for (topic, payload) in [
            ("secrets/x", "s1"),
            ("a/b", "m1"),
            ("secrets", "s2"),
            ("secrets/deep/er", "s3"),
            ("secretsx/1", "m2"),
            ("done", "end"),
        ] {
            publish(&s, &publisher, topic, payload, false);
        }
        // `-C 4`: a withheld message that slipped through would take a place before `done`.
        let got = finish(sub, Duration::from_secs(10));
        assert_eq!(
            got.lines().collect::<Vec<_>>(),
            vec![
                "open/state retained-open",
                "a/b m1",
                "secretsx/1 m2",
                "done end"
            ],
            "MQTT {version}"
        );
    }
    // Withheld deliveries are counted: three live secrets per run plus the retained one.
    assert!(metric(&s, "tollgate_messages_filtered_total") >= 8);
    // No subscription was refused; each was reported filtered once, with no event per withheld
    // message.
    assert_eq!(s.count_events("subscribe_denied"), 0);
    let e = s.wait_event("subscription_filtered", |e| {
        e["type"] == "subscription_filtered"
    });
    assert_eq!(e["withheld"], json!(["secrets/#"]), "{e}");
    assert_eq!(e["rules"], json!(["no-secrets"]), "{e}");
    assert_eq!(s.count_events("subscription_filtered"), 2);
}

#[test]
fn a_filter_inside_a_deny_rule_or_outside_every_allow_is_still_refused() {
    let s = Server::start_with(&[], POLICY);
    let watcher = s.add_device("watcher", &["watchers"]);
    let outsider = s.add_device("outsider", &[]);
    for (version, refused) in [(5, 0x87), (311, 0x80)] {
        let r = s.paho(
            &watcher,
            json!([
                {"op": "connect", "client_id": "watcher", "version": version},
                {"op": "subscribe", "filters": ["secrets/#", "secrets/+/x", "#", "open/#"], "qos": 1},
                {"op": "disconnect"}
            ]),
        );
        assert_eq!(r[0]["rc"], 0, "{r:?}");
        assert_eq!(
            r[1]["codes"],
            json!([refused, refused, 1, 1]),
            "MQTT {version}: {r:?}"
        );
        let r = s.paho(
            &outsider,
            json!([
                {"op": "connect", "client_id": "outsider", "version": version},
                {"op": "subscribe", "filters": ["a/b"], "qos": 0},
                {"op": "disconnect"}
            ]),
        );
        assert_eq!(r[1]["codes"], json!([refused]), "MQTT {version}: {r:?}");
    }
    // The refusals name the deny rule, or none for the default deny.
    let denied = s.wait_event("subscribe_denied secrets/#", |e| {
        e["type"] == "subscribe_denied" && e["filter"] == "secrets/#"
    });
    assert_eq!(denied["rule"], "no-secrets", "{denied}");
    let outside = s.wait_event("subscribe_denied a/b", |e| {
        e["type"] == "subscribe_denied" && e["filter"] == "a/b"
    });
    assert!(outside.get("rule").is_none_or(Value::is_null), "{outside}");
}

/// A policy reload that adds a deny rule filters a live `#` subscription instead of dropping
/// it (the MQTT 5 client stays connected), and removing the rule lets the topics through again.
#[test]
fn a_reload_adding_a_deny_rule_filters_a_live_subscription_without_closing_it() {
    let s = Server::start_with(&[], POLICY_WITHOUT_DENY);
    let publisher = s.add_device("pub", &[]);
    let watcher = s.add_device("watcher", &["watchers"]);
    let mut sub = s.paho_background(
        &watcher,
        json!([
            {"op": "connect", "client_id": "watcher"},
            {"op": "subscribe", "filters": ["#"], "qos": 1},
            {"op": "expect", "count": 1, "timeout": 10},
            {"op": "wait_file", "path": s.data.join("go-1").display().to_string(), "timeout": 20},
            {"op": "expect", "count": 2, "timeout": 10},
            {"op": "check_connected"},
            {"op": "wait_file", "path": s.data.join("go-2").display().to_string(), "timeout": 20},
            {"op": "expect", "count": 2, "timeout": 10},
            {"op": "disconnect"}
        ]),
    );
    sub.wait_step(1);
    publish(&s, &publisher, "secrets/x", "before", false);
    sub.wait_step(2);
    assert!(s.set_policy(POLICY));
    // The live subscription's re-check has its delivery filter (the readiness signal).
    let e = s.wait_event("subscription_filtered", |e| {
        e["type"] == "subscription_filtered" && e["withheld"] == json!(["secrets/#"])
    });
    assert_eq!(e["rules"], json!(["no-secrets"]), "{e}");
    assert_eq!(e["filter"], "#", "{e}");
    publish(&s, &publisher, "secrets/x", "withheld", false);
    publish(&s, &publisher, "a/b", "m1", false);
    publish(&s, &publisher, "done", "1", false);
    std::fs::write(s.data.join("go-1"), "").unwrap();
    sub.wait_step(5);
    assert!(s.set_policy(POLICY_WITHOUT_DENY));
    s.wait_event("subscription_filtered (no longer)", |e| {
        e["type"] == "subscription_filtered" && e["withheld"] == json!([])
    });
    publish(&s, &publisher, "secrets/x", "after", false);
    publish(&s, &publisher, "done", "2", false);
    std::fs::write(s.data.join("go-2"), "").unwrap();
    let r = sub.join().unwrap();
    let topics = |i: usize| -> Vec<String> {
        r[i]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    m["topic"].as_str().unwrap(),
                    m["payload"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(topics(2), vec!["secrets/x before"]);
    assert_eq!(topics(4), vec!["a/b m1", "done 1"]);
    assert_eq!(r[5]["connected"], true, "{r:?}");
    assert_eq!(topics(7), vec!["secrets/x after", "done 2"]);
    assert_eq!(s.count_events("subscription_revoked"), 0);
}

/// `policy explain` (against the running server and offline) says what a granted subscription
/// withholds, and `policy lint` describes the filtering instead of a refusal.
#[test]
fn explain_and_lint_describe_a_filtered_subscription() {
    let s = Server::start_with(&[], POLICY);
    s.add_device("watcher", &["watchers"]);
    let withheld = "=> ALLOWED by allow[2] (watchers); messages matching secrets/# are withheld \
                    (deny rule no-secrets)";
    let out = s.cli(&[
        "policy",
        "explain",
        "--device",
        "watcher",
        "--subscribe",
        "#",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(withheld), "{text}");
    let out = s.cli(&[
        "policy",
        "explain",
        "--device",
        "watcher",
        "--subscribe",
        "secrets/+/keys",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(out.status.code(), Some(3), "{v:#}");
    assert_eq!(v["denied_by"], "no-secrets", "{v:#}");

    let file = s.data.join("policy.toml");
    let file = file.to_str().unwrap();
    let out = s.cli(&[
        "policy",
        "explain",
        file,
        "--device",
        "watcher",
        "--group",
        "watchers",
        "--subscribe",
        "#",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(withheld), "{text}");

    let out = s.cli(&["policy", "lint", file]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(
            "a subscription to `#` is granted, but messages matching `secrets/#` are withheld \
             from it by deny rule no-secrets"
        ),
        "{text}"
    );
    assert!(!text.contains("will be refused"), "{text}");
}
