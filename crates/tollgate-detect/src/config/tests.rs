use super::*;

fn err(text: &str) -> String {
    match DetectionConfig::parse(text, "detection.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn default_toml_is_the_default() {
    let parsed = DetectionConfig::parse(DetectionConfig::default_toml(), "default").unwrap();
    assert_eq!(parsed, DetectionConfig::default());
    // And an empty file is the default too.
    assert_eq!(
        DetectionConfig::parse("", "empty").unwrap(),
        DetectionConfig::default()
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Some(30_000));
    assert_eq!(parse_duration("10m"), Some(600_000));
    assert_eq!(parse_duration("2h"), Some(7_200_000));
    assert_eq!(parse_duration("1d"), Some(86_400_000));
    assert_eq!(parse_duration("45"), Some(45_000));
    assert_eq!(parse_duration("5 m"), None);
    assert_eq!(parse_duration("m"), None);
    assert_eq!(parse_duration("10w"), None);
    assert_eq!(parse_duration(""), None);
    assert_eq!(parse_duration("99999999999999999999s"), None);
    let c = DetectionConfig::parse("[engine]\nbucket = 6\nwindow = \"30s\"\n", "t").unwrap();
    assert_eq!(c.engine.bucket_ms, 6000);
    assert_eq!(c.engine.window_ms, 30_000);
}

#[test]
fn unknown_key_is_located() {
    let e = err("[engine]\nbucket = \"1m\"\nbuckets = 3\n");
    assert!(
        e.starts_with("detection.toml:3:1: unknown field `buckets`"),
        "{e}"
    );
}

#[test]
fn key_of_another_detector_is_an_error() {
    let e = err("[detectors.inactive]\nmissed_reports = 4\ndeviations = 8.0\n");
    assert!(
        e.starts_with("detection.toml:3:1: unknown field `deviations`"),
        "{e}"
    );
    let e = err("[detectors.traffc_spike]\n");
    assert!(e.contains("unknown field `traffc_spike`"), "{e}");
}

#[test]
fn unknown_metric_is_located() {
    let text =
        "[[rule]]\nname = \"bulk\"\nmetric = \"byts_in\"\ncomparison = \">\"\nthreshold = 1.0\n";
    let e = err(text);
    assert!(
        e.starts_with("detection.toml:3:10: unknown metric \"byts_in\" (expected one of messages_in, messages_out, bytes_in,"),
        "{e}"
    );
}

#[test]
fn two_thresholds_are_refused() {
    let text = "[[rule]]\nname = \"bulk\"\nmetric = \"bytes_in\"\ncomparison = \">\"\nthreshold = 1.0\ndeviations = 3.0\n";
    let e = err(text);
    assert!(
        e.starts_with("detection.toml:6:14: rule `bulk` has both `threshold` and `deviations`"),
        "{e}"
    );
    let none = "[[rule]]\nname = \"bulk\"\nmetric = \"bytes_in\"\ncomparison = \">\"\n";
    assert!(err(none).contains("needs exactly one of"));
}

#[test]
fn bad_duration_is_located() {
    let e = err("[detectors.cloned_certificate]\nttl = \"30 minutes\"\n");
    assert!(
        e.starts_with("detection.toml:2:7: `ttl`: \"30 minutes\" is not a duration"),
        "{e}"
    );
    let e = err("[detectors.cloned_certificate]\nttl = \"8d\"\n");
    assert!(
        e.contains("detection.toml:2:7: `ttl` must be between 1s and 7d"),
        "{e}"
    );
    let e = err("[engine]\nbucket = \"2h\"\n");
    assert!(
        e.contains("detection.toml:2:10: `bucket` must be between 1s and 1h"),
        "{e}"
    );
}

#[test]
fn every_problem_at_once() {
    let text = "[engine]\nhistory = 1\n[[rule]]\nname = \"Bad Name\"\nmetric = \"rtt_ms\"\ncomparison = \"=>\"\nthreshold = 1.0\n";
    let e = err(text);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(lines[0].starts_with("detection.toml:2:11: `history` must be between 2"));
    assert!(lines[1].starts_with("detection.toml:4:8: rule name \"Bad Name\""));
    assert!(lines[2].starts_with("detection.toml:6:14: unknown comparison \"=>\""));
}

#[test]
fn rules_parse() {
    let text = r#"
[[rule]]
name = "bulk-upload"
metric = "bytes_in"
comparison = ">"
threshold = 1_000_000.0
scope = { groups = ["scanners"], models = ["Scanner-X2"], devices = [] }
mitigation = "throttle"
throttle_per_second = 5

[[rule]]
name = "quiet"
metric = "messages_in"
comparison = "<"
cohort = "model"
percentile = 10
factor = 0.5
window = "5m"
datapoints_to_alarm = 2

[[rule]]
name = "chatty"
metric = "messages_out"
comparison = ">="
deviations = 6
"#;
    let c = DetectionConfig::parse(text, "t").unwrap();
    assert_eq!(c.rules.len(), 3);
    let r = &c.rules[0];
    assert_eq!(r.metric, Metric::BytesIn);
    assert_eq!(r.judge, Judge::Threshold(1_000_000.0));
    assert_eq!(r.common.mitigation, Mitigation::Throttle);
    assert!(r
        .scope
        .covers("d", Some("Scanner-X2"), &["scanners".to_owned()]));
    assert!(!r.scope.covers("d", Some("Scanner-X2"), &[]));
    assert_eq!(r.line, 2);
    assert_eq!(
        c.rules[1].judge,
        Judge::Cohort {
            kind: CohortKind::Model,
            percentile: 10.0,
            factor: 0.5
        }
    );
    assert_eq!(c.rules[1].window_ms, 300_000);
    assert_eq!(c.rules[1].datapoints_to_alarm, 2);
    assert_eq!(c.rules[2].judge, Judge::Deviations(6.0));
    let dup = "[[rule]]\nname = \"a\"\nmetric = \"lost\"\ncomparison = \">\"\nthreshold = 1.0\n[[rule]]\nname = \"a\"\nmetric = \"lost\"\ncomparison = \">\"\nthreshold = 1.0\n";
    assert!(err(dup).contains("detection.toml:7:8: duplicate rule name `a`"));
    let dev = "[[rule]]\nname = \"a\"\nmetric = \"source_addresses\"\ncomparison = \">\"\ndeviations = 1.0\n";
    assert!(err(dev).contains("detection.toml:5:14: `deviations` needs a per-bucket baseline"));
}

#[test]
fn too_large_is_refused() {
    let big = "#".repeat(MAX_CONFIG_BYTES + 1);
    assert!(matches!(
        DetectionConfig::parse(&big, "t"),
        Err(DetectError::TooLarge { .. })
    ));
}
