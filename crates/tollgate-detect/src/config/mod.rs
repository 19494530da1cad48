//! `detection.toml`: the engine's settings, the named detectors' settings and custom rules.
//!
//! Owns the format and its validation into an immutable [`DetectionConfig`]. Every problem is
//! reported with `source:line:col`, all at once, and a file with any problem is refused whole
//! (the caller keeps the last good configuration). Unknown keys are errors, including a key
//! that belongs to another detector. It must not evaluate anything.
//!
//! Durations are `"30s"`, `"10m"`, `"2h"`, `"1d"`, or a bare integer of seconds. The default
//! file, with every key and its meaning, is [`DetectionConfig::default_toml`].

use serde::Deserialize;
use toml::{Spanned, Value};

use crate::mitigate::Mitigation;
use crate::stats::Metric;
use crate::{DetectError, Severity};

/// The largest `detection.toml` read, in bytes.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// The most custom rules a file may hold.
pub const MAX_RULES: usize = 1000;
/// The longest ttl, clear_after or learning period: 7 days.
pub const MAX_TTL_MS: i64 = 7 * 86_400_000;

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;

/// The engine's settings (`[engine]`).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Bucket width, ms (1 s – 1 h).
    pub bucket_ms: i64,
    /// Completed buckets kept per device.
    pub history: usize,
    /// Default evaluation window of rate metrics, ms.
    pub window_ms: i64,
    /// Online buckets needed before a device's own baseline is used.
    pub learning_buckets: usize,
    /// Other online devices needed in a cohort before a cohort percentile is used.
    pub cohort_min_devices: usize,
    /// Mitigation orders allowed in any 60 s; beyond it alerts only notify.
    pub max_mitigations_per_minute: u32,
    /// A detector active on more than this fraction of a cohort mitigates no further member.
    pub cohort_mitigation_fraction: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            bucket_ms: MINUTE,
            history: 60,
            window_ms: MINUTE,
            learning_buckets: 5,
            cohort_min_devices: 3,
            max_mitigations_per_minute: 5,
            cohort_mitigation_fraction: 0.5,
        }
    }
}

/// The keys every detector and rule has.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// Whether it runs.
    pub enabled: bool,
    /// The severity of its alerts.
    pub severity: Severity,
    /// What a raised alert orders.
    pub mitigation: Mitigation,
    /// How long a quarantine or throttle lasts, ms.
    pub ttl_ms: i64,
    /// The rate a throttle allows.
    pub throttle_per_second: u32,
    /// How long without recurrence before an alert clears, ms (on top of three non-breaching
    /// ticks); 0 for window-based detectors.
    pub clear_after_ms: i64,
}

impl Common {
    fn new(severity: Severity, mitigation: Mitigation, ttl_ms: i64) -> Common {
        Common {
            enabled: true,
            severity,
            mitigation,
            ttl_ms,
            throttle_per_second: 5,
            clear_after_ms: 0,
        }
    }
}

/// Two or more addresses at once, or repeated session takeovers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClonedCertificate {
    /// Common keys.
    pub common: Common,
    /// Takeovers within `window_ms` that breach.
    pub takeovers: u32,
    /// Window, ms.
    pub window_ms: i64,
}

/// Denied publishes and subscriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizationProbing {
    /// Common keys.
    pub common: Common,
    /// Denials within the window that breach.
    pub denied: u32,
    /// Distinct denied topics or filters within the window that breach.
    pub distinct_topics: u32,
    /// Window, ms.
    pub window_ms: i64,
}

/// Many distinct wildcard filters.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicScanning {
    /// Common keys.
    pub common: Common,
    /// Distinct wildcard filters within the window that breach.
    pub distinct_filters: u32,
    /// Window, ms.
    pub window_ms: i64,
}

/// Traffic far above the device's baseline or its cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSpike {
    /// Common keys.
    pub common: Common,
    /// Robust deviations above the median.
    pub deviations: f64,
    /// Factor of the median.
    pub factor: f64,
    /// Cohort percentile used while the device learns.
    pub cohort_percentile: f64,
    /// Factor of that percentile.
    pub cohort_factor: f64,
    /// Below this many messages per minute (KiB per minute for bytes) nothing breaches.
    pub min_per_minute: f64,
}

/// Many connections in a short time.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionFlapping {
    /// Common keys.
    pub common: Common,
    /// Connects within the window that breach.
    pub connects: u32,
    /// Window, ms.
    pub window_ms: i64,
}

/// A connection from a network the device never used.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSourceAddress {
    /// Common keys (`clear_after` defaults to 10 minutes).
    pub common: Common,
    /// After a device's first connection, networks are learnt silently for this long, ms.
    pub learning_ms: i64,
    /// IPv4 network prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 network prefix length.
    pub ipv6_prefix: u8,
}

/// Round-trip time or retransmissions far above normal.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkDegradation {
    /// Common keys.
    pub common: Common,
    /// Robust deviations above the rtt median.
    pub rtt_deviations: f64,
    /// Factor of the rtt median.
    pub rtt_factor: f64,
    /// Below this rtt nothing breaches, ms.
    pub min_rtt_ms: f64,
    /// Retransmitted/sent bytes that breach.
    pub retrans_ratio: f64,
    /// Segments sent within the window needed to judge retransmissions.
    pub min_segments: u64,
    /// More than this fraction of an online cohort breaching is one `network_degradation`.
    pub cohort_fraction: f64,
}

/// A regularly reporting device fell silent.
#[derive(Debug, Clone, PartialEq)]
pub struct Inactive {
    /// Common keys.
    pub common: Common,
    /// Expected reports missed before alarming.
    pub missed_reports: u32,
    /// Never alarm before this much silence, ms.
    pub min_silence_ms: i64,
}

/// The named detectors' settings (`[detectors.*]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Detectors {
    /// `cloned_certificate`.
    pub cloned_certificate: ClonedCertificate,
    /// `authorization_probing`.
    pub authorization_probing: AuthorizationProbing,
    /// `topic_scanning`.
    pub topic_scanning: TopicScanning,
    /// `traffic_spike`.
    pub traffic_spike: TrafficSpike,
    /// `connection_flapping`.
    pub connection_flapping: ConnectionFlapping,
    /// `new_source_address`.
    pub new_source_address: NewSourceAddress,
    /// `link_degradation`.
    pub link_degradation: LinkDegradation,
    /// `inactive`.
    pub inactive: Inactive,
}

impl Default for Detectors {
    fn default() -> Self {
        use Mitigation::{Notify, Quarantine};
        use Severity::{Critical, High, Low, Medium};
        Detectors {
            cloned_certificate: ClonedCertificate {
                common: Common::new(Critical, Quarantine, 30 * MINUTE),
                takeovers: 3,
                window_ms: 2 * MINUTE,
            },
            authorization_probing: AuthorizationProbing {
                common: Common::new(High, Quarantine, 15 * MINUTE),
                denied: 20,
                distinct_topics: 8,
                window_ms: MINUTE,
            },
            topic_scanning: TopicScanning {
                common: Common::new(Medium, Notify, 10 * MINUTE),
                distinct_filters: 10,
                window_ms: MINUTE,
            },
            traffic_spike: TrafficSpike {
                common: Common::new(High, Notify, 10 * MINUTE),
                deviations: 8.0,
                factor: 4.0,
                cohort_percentile: 99.0,
                cohort_factor: 3.0,
                min_per_minute: 30.0,
            },
            connection_flapping: ConnectionFlapping {
                common: Common::new(Medium, Notify, 10 * MINUTE),
                connects: 6,
                window_ms: 2 * MINUTE,
            },
            new_source_address: NewSourceAddress {
                common: Common {
                    clear_after_ms: 10 * MINUTE,
                    ..Common::new(Medium, Notify, 10 * MINUTE)
                },
                learning_ms: 10 * MINUTE,
                ipv4_prefix: 24,
                ipv6_prefix: 64,
            },
            link_degradation: LinkDegradation {
                common: Common::new(Low, Notify, 10 * MINUTE),
                rtt_deviations: 8.0,
                rtt_factor: 3.0,
                min_rtt_ms: 20.0,
                retrans_ratio: 0.02,
                min_segments: 20,
                cohort_fraction: 0.5,
            },
            inactive: Inactive {
                common: Common::new(Low, Notify, 10 * MINUTE),
                missed_reports: 4,
                min_silence_ms: 30 * SECOND,
            },
        }
    }
}

/// How a rule compares its metric with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Comparison {
    /// Whether `observed` breaches `threshold`.
    pub fn breaches(self, observed: f64, threshold: f64) -> bool {
        match self {
            Comparison::Gt => observed > threshold,
            Comparison::Ge => observed >= threshold,
            Comparison::Lt => observed < threshold,
            Comparison::Le => observed <= threshold,
        }
    }

    /// Whether it looks for values above the threshold.
    pub fn upward(self) -> bool {
        matches!(self, Comparison::Gt | Comparison::Ge)
    }

    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
        }
    }
}

/// Which cohort a rule compares a device with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortKind {
    /// Devices of the same model.
    Model,
    /// Devices sharing a group (each of the device's groups).
    Group,
}

/// What a rule's threshold is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judge {
    /// An absolute value.
    Threshold(f64),
    /// `factor` × the `percentile` of the other online devices of the cohort.
    Cohort {
        /// Model or group.
        kind: CohortKind,
        /// 0–100.
        percentile: f64,
        /// Factor (default 1.0).
        factor: f64,
    },
    /// Robust deviations from the device's own baseline.
    Deviations(f64),
}

/// Which devices a rule applies to: every non-empty list must match (OR within a list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Group names.
    pub groups: Vec<String>,
    /// Model names.
    pub models: Vec<String>,
    /// Device ids.
    pub devices: Vec<String>,
}

impl Scope {
    /// Whether the device is in scope.
    pub fn covers(&self, device: &str, model: Option<&str>, groups: &[String]) -> bool {
        (self.devices.is_empty() || self.devices.iter().any(|d| d == device))
            && (self.models.is_empty() || model.is_some_and(|m| self.models.iter().any(|x| x == m)))
            && (self.groups.is_empty() || groups.iter().any(|g| self.groups.contains(g)))
    }
}

/// A custom rule (`[[rule]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name; its alerts' detector is `rule:<name>`.
    pub name: String,
    /// The metric compared.
    pub metric: Metric,
    /// How.
    pub comparison: Comparison,
    /// Against what.
    pub judge: Judge,
    /// Window, ms.
    pub window_ms: i64,
    /// Consecutive breaching ticks to raise.
    pub datapoints_to_alarm: u32,
    /// Consecutive non-breaching ticks to clear.
    pub datapoints_to_clear: u32,
    /// Which devices.
    pub scope: Scope,
    /// Common keys (`clear_after` is not used: rules clear by `datapoints_to_clear`).
    pub common: Common,
    /// Line of the rule in its file (0 when built in code).
    pub line: usize,
}

impl Rule {
    /// `rule:<name>`.
    pub fn detector(&self) -> String {
        format!("rule:{}", self.name)
    }
}

/// A loaded `detection.toml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectionConfig {
    /// `[engine]`.
    pub engine: EngineConfig,
    /// `[detectors.*]`.
    pub detectors: Detectors,
    /// `[[rule]]`, in file order.
    pub rules: Vec<Rule>,
}

impl DetectionConfig {
    /// A commented `detection.toml` that parses to exactly [`DetectionConfig::default`].
    pub fn default_toml() -> &'static str {
        include_str!("../default_detection.toml")
    }

    /// Parse and validate; `source` names the file in errors (`detection.toml`).
    pub fn parse(text: &str, source: &str) -> Result<DetectionConfig, DetectError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(DetectError::TooLarge {
                what: source.to_owned(),
                size: text.len() as u64,
                limit: MAX_CONFIG_BYTES as u64,
            });
        }
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, col) = line_col(text, offset);
            DetectError::Config(vec![format!(
                "{source}:{line}:{col}: {}",
                e.message().trim().replace('\n', "; ")
            )])
        })?;
        let mut cx = Cx {
            text,
            source,
            errors: Vec::new(),
        };
        let config = cx.resolve(raw);
        if cx.errors.is_empty() {
            Ok(config)
        } else {
            Err(DetectError::Config(cx.errors))
        }
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Parse a duration: `"30s"`, `"10m"`, `"2h"`, `"1d"` or a whole number of seconds. Returns ms.
pub fn parse_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (t.get(..i)?, t.get(i..)?),
        None => (t, "s"),
    };
    if num.is_empty() {
        return None;
    }
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "s" => SECOND,
        "m" => MINUTE,
        "h" => 60 * MINUTE,
        "d" => 24 * 60 * MINUTE,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line, col)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    engine: Option<RawEngine>,
    detectors: Option<RawDetectors>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

type Dur = Option<Spanned<Value>>;
type Num<T> = Option<Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    bucket: Dur,
    history: Num<i64>,
    window: Dur,
    learning_buckets: Num<i64>,
    cohort_min_devices: Num<i64>,
    max_mitigations_per_minute: Num<i64>,
    cohort_mitigation_fraction: Num<f64>,
}

macro_rules! raw_detector {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            enabled: Option<bool>,
            severity: Option<Severity>,
            mitigation: Option<Mitigation>,
            ttl: Dur,
            throttle_per_second: Num<i64>,
            clear_after: Dur,
            $($field: $ty,)*
        }
        impl HasCommon for $name {
            fn raw_common(&self) -> RawCommon<'_> {
                RawCommon {
                    enabled: self.enabled,
                    severity: self.severity,
                    mitigation: self.mitigation,
                    ttl: &self.ttl,
                    throttle_per_second: &self.throttle_per_second,
                    clear_after: &self.clear_after,
                }
            }
        }
    };
}

struct RawCommon<'a> {
    enabled: Option<bool>,
    severity: Option<Severity>,
    mitigation: Option<Mitigation>,
    ttl: &'a Dur,
    throttle_per_second: &'a Num<i64>,
    clear_after: &'a Dur,
}

trait HasCommon {
    fn raw_common(&self) -> RawCommon<'_>;
}

raw_detector!(RawCloned { takeovers: Num<i64>, window: Dur });
raw_detector!(RawProbing { denied: Num<i64>, distinct_topics: Num<i64>, window: Dur });
raw_detector!(RawScanning { distinct_filters: Num<i64>, window: Dur });
raw_detector!(RawSpike {
    deviations: Num<f64>,
    factor: Num<f64>,
    cohort_percentile: Num<f64>,
    cohort_factor: Num<f64>,
    min_per_minute: Num<f64>,
});
raw_detector!(RawFlapping { connects: Num<i64>, window: Dur });
raw_detector!(RawNewSource { learning: Dur, ipv4_prefix: Num<i64>, ipv6_prefix: Num<i64> });
raw_detector!(RawLink {
    rtt_deviations: Num<f64>,
    rtt_factor: Num<f64>,
    min_rtt_ms: Num<f64>,
    retrans_ratio: Num<f64>,
    min_segments: Num<i64>,
    cohort_fraction: Num<f64>,
});
raw_detector!(RawInactive { missed_reports: Num<i64>, min_silence: Dur });

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetectors {
    cloned_certificate: Option<RawCloned>,
    authorization_probing: Option<RawProbing>,
    topic_scanning: Option<RawScanning>,
    traffic_spike: Option<RawSpike>,
    connection_flapping: Option<RawFlapping>,
    new_source_address: Option<RawNewSource>,
    link_degradation: Option<RawLink>,
    inactive: Option<RawInactive>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScope {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    devices: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    metric: Spanned<String>,
    comparison: Spanned<String>,
    threshold: Num<f64>,
    cohort: Num<String>,
    percentile: Num<f64>,
    factor: Num<f64>,
    deviations: Num<f64>,
    window: Dur,
    datapoints_to_alarm: Num<i64>,
    datapoints_to_clear: Num<i64>,
    scope: Option<RawScope>,
    enabled: Option<bool>,
    severity: Option<Severity>,
    mitigation: Option<Mitigation>,
    ttl: Dur,
    throttle_per_second: Num<i64>,
}

struct Cx<'a> {
    text: &'a str,
    source: &'a str,
    errors: Vec<String>,
}

impl Cx<'_> {
    fn err(&mut self, offset: usize, msg: impl std::fmt::Display) {
        let (line, col) = line_col(self.text, offset);
        self.errors
            .push(format!("{}:{line}:{col}: {msg}", self.source));
    }

    /// A duration key within `[min, max]` ms, or `default`.
    fn dur(&mut self, v: &Dur, key: &str, min: i64, max: i64, default: i64) -> i64 {
        let Some(v) = v else { return default };
        let ms = match v.get_ref() {
            Value::Integer(secs) => secs.checked_mul(SECOND),
            Value::String(s) => parse_duration(s),
            _ => None,
        };
        let Some(ms) = ms else {
            self.err(
                v.span().start,
                format_args!(
                    "`{key}`: {} is not a duration such as \"30s\", \"10m\", \"2h\", \"1d\" or a number of seconds",
                    v.get_ref()
                ),
            );
            return default;
        };
        if ms < min || ms > max {
            self.err(
                v.span().start,
                format_args!(
                    "`{key}` must be between {} and {}",
                    show_ms(min),
                    show_ms(max)
                ),
            );
            return default;
        }
        ms
    }

    /// An integer key within `[min, max]`, or `default`.
    fn int(&mut self, v: &Num<i64>, key: &str, min: i64, max: i64, default: i64) -> i64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        if n < min || n > max {
            self.err(
                v.span().start,
                format_args!("`{key}` must be between {min} and {max}, not {n}"),
            );
            return default;
        }
        n
    }

    /// A number key within `[min, max]` (and finite), or `default`. `min_open`: `min` itself
    /// is excluded.
    fn num(
        &mut self,
        v: &Num<f64>,
        key: &str,
        min: f64,
        min_open: bool,
        max: f64,
        default: f64,
    ) -> f64 {
        let Some(v) = v else { return default };
        let n = *v.get_ref();
        let low_ok = if min_open { n > min } else { n >= min };
        if !n.is_finite() || !low_ok || n > max {
            let lo = if min_open { "above" } else { "at least" };
            self.err(
                v.span().start,
                format_args!("`{key}` must be {lo} {min} and at most {max}, not {n}"),
            );
            return default;
        }
        n
    }

    fn common(&mut self, raw: &RawCommon<'_>, default: &Common) -> Common {
        let mut c = default.clone();
        if let Some(e) = raw.enabled {
            c.enabled = e;
        }
        if let Some(s) = raw.severity {
            c.severity = s;
        }
        if let Some(m) = raw.mitigation {
            c.mitigation = m;
        }
        c.ttl_ms = self.dur(raw.ttl, "ttl", SECOND, MAX_TTL_MS, c.ttl_ms);
        c.throttle_per_second = self.int(
            raw.throttle_per_second,
            "throttle_per_second",
            1,
            1_000_000,
            i64::from(c.throttle_per_second),
        ) as u32;
        c.clear_after_ms = self.dur(
            raw.clear_after,
            "clear_after",
            0,
            MAX_TTL_MS,
            c.clear_after_ms,
        );
        c
    }

    fn window(&mut self, v: &Dur, key: &str, engine: &EngineConfig, default: i64) -> i64 {
        let max = engine
            .bucket_ms
            .saturating_mul(engine.history as i64)
            .max(engine.bucket_ms);
        // The default fits any engine whose history covers it; clamp it otherwise.
        self.dur(
            v,
            key,
            engine.bucket_ms,
            max,
            default.clamp(engine.bucket_ms, max),
        )
    }

    fn resolve(&mut self, raw: RawFile) -> DetectionConfig {
        let engine = match &raw.engine {
            Some(e) => self.engine(e),
            None => EngineConfig::default(),
        };
        let detectors = match &raw.detectors {
            Some(d) => self.detectors(d, &engine),
            None => {
                let mut d = Detectors::default();
                self.fit_windows(&mut d, &engine);
                d
            }
        };
        if raw.rule.len() > MAX_RULES {
            self.err(
                0,
                format_args!(
                    "{} rules, more than the {MAX_RULES} allowed",
                    raw.rule.len()
                ),
            );
        }
        let mut rules: Vec<Rule> = Vec::new();
        for r in &raw.rule {
            if let Some(rule) = self.rule(r, &engine) {
                if let Some(first) = rules.iter().find(|x| x.name == rule.name) {
                    let at = r.get_ref().name.span().start;
                    let first_line = first.line;
                    self.err(
                        at,
                        format_args!(
                            "duplicate rule name `{}`; already used by the rule on line {first_line}",
                            rule.name
                        ),
                    );
                    continue;
                }
                rules.push(rule);
            }
        }
        DetectionConfig {
            engine,
            detectors,
            rules,
        }
    }

    fn engine(&mut self, e: &RawEngine) -> EngineConfig {
        let d = EngineConfig::default();
        let bucket_ms = self.dur(&e.bucket, "bucket", SECOND, 60 * MINUTE, d.bucket_ms);
        let history = self.int(&e.history, "history", 2, 10_080, d.history as i64) as usize;
        let span = bucket_ms.saturating_mul(history as i64);
        let window_ms = self.dur(
            &e.window,
            "window",
            bucket_ms,
            span,
            d.window_ms.clamp(bucket_ms, span),
        );
        let learning_buckets = self.int(
            &e.learning_buckets,
            "learning_buckets",
            1,
            history as i64,
            (d.learning_buckets as i64).min(history as i64),
        ) as usize;
        let cohort_min_devices = self.int(
            &e.cohort_min_devices,
            "cohort_min_devices",
            1,
            1_000_000,
            d.cohort_min_devices as i64,
        ) as usize;
        let max_mitigations_per_minute = self.int(
            &e.max_mitigations_per_minute,
            "max_mitigations_per_minute",
            0,
            1_000_000,
            i64::from(d.max_mitigations_per_minute),
        ) as u32;
        let cohort_mitigation_fraction = self.num(
            &e.cohort_mitigation_fraction,
            "cohort_mitigation_fraction",
            0.0,
            true,
            1.0,
            d.cohort_mitigation_fraction,
        );
        EngineConfig {
            bucket_ms,
            history,
            window_ms,
            learning_buckets,
            cohort_min_devices,
            max_mitigations_per_minute,
            cohort_mitigation_fraction,
        }
    }

    /// Clamp default windows into what the engine's history can hold.
    fn fit_windows(&mut self, d: &mut Detectors, engine: &EngineConfig) {
        let max = engine.bucket_ms.saturating_mul(engine.history as i64);
        for w in [
            &mut d.cloned_certificate.window_ms,
            &mut d.authorization_probing.window_ms,
            &mut d.topic_scanning.window_ms,
            &mut d.connection_flapping.window_ms,
        ] {
            *w = (*w).clamp(engine.bucket_ms, max.max(engine.bucket_ms));
        }
    }

    fn detectors(&mut self, r: &RawDetectors, engine: &EngineConfig) -> Detectors {
        let mut d = Detectors::default();
        self.fit_windows(&mut d, engine);
        if let Some(x) = &r.cloned_certificate {
            let t = &mut d.cloned_certificate;
            t.common = self.common(&x.raw_common(), &t.common);
            t.takeovers = self.int(
                &x.takeovers,
                "takeovers",
                1,
                1_000_000,
                i64::from(t.takeovers),
            ) as u32;
            t.window_ms = self.window(&x.window, "window", engine, t.window_ms);
        }
        if let Some(x) = &r.authorization_probing {
            let t = &mut d.authorization_probing;
            t.common = self.common(&x.raw_common(), &t.common);
            t.denied = self.int(&x.denied, "denied", 1, 1_000_000, i64::from(t.denied)) as u32;
            t.distinct_topics = self.int(
                &x.distinct_topics,
                "distinct_topics",
                1,
                256,
                i64::from(t.distinct_topics),
            ) as u32;
            t.window_ms = self.window(&x.window, "window", engine, t.window_ms);
        }
        if let Some(x) = &r.topic_scanning {
            let t = &mut d.topic_scanning;
            t.common = self.common(&x.raw_common(), &t.common);
            t.distinct_filters = self.int(
                &x.distinct_filters,
                "distinct_filters",
                1,
                3000,
                i64::from(t.distinct_filters),
            ) as u32;
            t.window_ms = self.window(&x.window, "window", engine, t.window_ms);
        }
        if let Some(x) = &r.traffic_spike {
            let t = &mut d.traffic_spike;
            t.common = self.common(&x.raw_common(), &t.common);
            t.deviations = self.num(&x.deviations, "deviations", 0.0, true, 1e6, t.deviations);
            t.factor = self.num(&x.factor, "factor", 0.0, true, 1e6, t.factor);
            t.cohort_percentile = self.num(
                &x.cohort_percentile,
                "cohort_percentile",
                0.0,
                false,
                100.0,
                t.cohort_percentile,
            );
            t.cohort_factor = self.num(
                &x.cohort_factor,
                "cohort_factor",
                0.0,
                true,
                1e6,
                t.cohort_factor,
            );
            t.min_per_minute = self.num(
                &x.min_per_minute,
                "min_per_minute",
                0.0,
                false,
                1e12,
                t.min_per_minute,
            );
        }
        if let Some(x) = &r.connection_flapping {
            let t = &mut d.connection_flapping;
            t.common = self.common(&x.raw_common(), &t.common);
            t.connects =
                self.int(&x.connects, "connects", 1, 1_000_000, i64::from(t.connects)) as u32;
            t.window_ms = self.window(&x.window, "window", engine, t.window_ms);
        }
        if let Some(x) = &r.new_source_address {
            let t = &mut d.new_source_address;
            t.common = self.common(&x.raw_common(), &t.common);
            t.learning_ms = self.dur(&x.learning, "learning", 0, 30 * 86_400_000, t.learning_ms);
            t.ipv4_prefix = self.int(
                &x.ipv4_prefix,
                "ipv4_prefix",
                0,
                32,
                i64::from(t.ipv4_prefix),
            ) as u8;
            t.ipv6_prefix = self.int(
                &x.ipv6_prefix,
                "ipv6_prefix",
                0,
                128,
                i64::from(t.ipv6_prefix),
            ) as u8;
        }
        if let Some(x) = &r.link_degradation {
            let t = &mut d.link_degradation;
            t.common = self.common(&x.raw_common(), &t.common);
            t.rtt_deviations = self.num(
                &x.rtt_deviations,
                "rtt_deviations",
                0.0,
                true,
                1e6,
                t.rtt_deviations,
            );
            t.rtt_factor = self.num(&x.rtt_factor, "rtt_factor", 0.0, true, 1e6, t.rtt_factor);
            t.min_rtt_ms = self.num(&x.min_rtt_ms, "min_rtt_ms", 0.0, false, 1e7, t.min_rtt_ms);
            t.retrans_ratio = self.num(
                &x.retrans_ratio,
                "retrans_ratio",
                0.0,
                true,
                1.0,
                t.retrans_ratio,
            );
            t.min_segments = self.int(
                &x.min_segments,
                "min_segments",
                1,
                1_000_000_000,
                t.min_segments as i64,
            ) as u64;
            t.cohort_fraction = self.num(
                &x.cohort_fraction,
                "cohort_fraction",
                0.0,
                true,
                1.0,
                t.cohort_fraction,
            );
        }
        if let Some(x) = &r.inactive {
            let t = &mut d.inactive;
            t.common = self.common(&x.raw_common(), &t.common);
            t.missed_reports = self.int(
                &x.missed_reports,
                "missed_reports",
                1,
                1_000_000,
                i64::from(t.missed_reports),
            ) as u32;
            t.min_silence_ms = self.dur(
                &x.min_silence,
                "min_silence",
                SECOND,
                MAX_TTL_MS,
                t.min_silence_ms,
            );
        }
        d
    }

    fn rule(&mut self, spanned: &Spanned<RawRule>, engine: &EngineConfig) -> Option<Rule> {
        let before = self.errors.len();
        let (line, _) = line_col(self.text, spanned.span().start);
        let r = spanned.get_ref();
        let name = r.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            self.err(
                r.name.span().start,
                format_args!("rule name {name:?} must be 1 to 64 of a-z, 0-9, '-' and '_'"),
            );
        }
        let metric = Metric::parse(r.metric.get_ref());
        if metric.is_none() {
            self.err(
                r.metric.span().start,
                format_args!(
                    "unknown metric {:?} (expected one of {})",
                    r.metric.get_ref(),
                    Metric::RULE_METRICS
                        .iter()
                        .map(|m| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let comparison = match r.comparison.get_ref().as_str() {
            ">" => Some(Comparison::Gt),
            ">=" => Some(Comparison::Ge),
            "<" => Some(Comparison::Lt),
            "<=" => Some(Comparison::Le),
            other => {
                self.err(
                    r.comparison.span().start,
                    format_args!("unknown comparison {other:?} (expected one of >, >=, <, <=)"),
                );
                None
            }
        };
        // Exactly one of threshold | cohort | deviations.
        let mut given: Vec<(&str, usize)> = Vec::new();
        if let Some(t) = &r.threshold {
            given.push(("threshold", t.span().start));
        }
        if let Some(c) = &r.cohort {
            given.push(("cohort", c.span().start));
        }
        if let Some(d) = &r.deviations {
            given.push(("deviations", d.span().start));
        }
        given.sort_by_key(|(_, at)| *at);
        let mut judge = None;
        match given.as_slice() {
            [] => self.err(
                spanned.span().start,
                format_args!("rule `{name}` needs exactly one of `threshold`, `cohort` (with `percentile`) or `deviations`"),
            ),
            [(first, _), (second, at), ..] => {
                let (first, second, at) = (*first, *second, *at);
                self.err(
                    at,
                    format_args!("rule `{name}` has both `{first}` and `{second}`; give exactly one of `threshold`, `cohort` or `deviations`"),
                )
            }
            [_] => {
                if let Some(t) = &r.threshold {
                    if t.get_ref().is_finite() {
                        judge = Some(Judge::Threshold(*t.get_ref()));
                    } else {
                        self.err(t.span().start, "`threshold` must be a finite number");
                    }
                } else if let Some(c) = &r.cohort {
                    let kind = match c.get_ref().as_str() {
                        "model" => Some(CohortKind::Model),
                        "group" => Some(CohortKind::Group),
                        other => {
                            self.err(
                                c.span().start,
                                format_args!("unknown cohort {other:?} (expected \"model\" or \"group\")"),
                            );
                            None
                        }
                    };
                    let percentile = match &r.percentile {
                        Some(_) => Some(self.num(&r.percentile, "percentile", 0.0, false, 100.0, 50.0)),
                        None => {
                            self.err(c.span().start, "`cohort` needs a `percentile` (0-100)");
                            None
                        }
                    };
                    let factor = self.num(&r.factor, "factor", 0.0, true, 1e6, 1.0);
                    if let (Some(kind), Some(percentile)) = (kind, percentile) {
                        judge = Some(Judge::Cohort {
                            kind,
                            percentile,
                            factor,
                        });
                    }
                } else if let Some(d) = &r.deviations {
                    let k = self.num(&r.deviations, "deviations", 0.0, true, 1e6, 1.0);
                    if metric.is_some_and(|m| !m.has_baseline()) {
                        self.err(
                            d.span().start,
                            format_args!(
                                "`deviations` needs a per-bucket baseline, which {} has not; use `threshold` or `cohort`",
                                r.metric.get_ref()
                            ),
                        );
                    } else {
                        judge = Some(Judge::Deviations(k));
                    }
                }
            }
        }
        if r.cohort.is_none() {
            for (key, v) in [("percentile", &r.percentile), ("factor", &r.factor)] {
                if let Some(v) = v {
                    self.err(
                        v.span().start,
                        format_args!("`{key}` only goes with `cohort`"),
                    );
                }
            }
        }
        let window_ms = self.window(&r.window, "window", engine, engine.window_ms);
        let datapoints_to_alarm =
            self.int(&r.datapoints_to_alarm, "datapoints_to_alarm", 1, 10_000, 1) as u32;
        let datapoints_to_clear =
            self.int(&r.datapoints_to_clear, "datapoints_to_clear", 1, 10_000, 3) as u32;
        let raw_common = RawCommon {
            enabled: r.enabled,
            severity: r.severity,
            mitigation: r.mitigation,
            ttl: &r.ttl,
            throttle_per_second: &r.throttle_per_second,
            clear_after: &None,
        };
        let common = self.common(
            &raw_common,
            &Common::new(Severity::Medium, Mitigation::Notify, 10 * MINUTE),
        );
        let scope = r.scope.as_ref().map_or_else(Scope::default, |s| Scope {
            groups: s.groups.clone(),
            models: s.models.clone(),
            devices: s.devices.clone(),
        });
        if self.errors.len() != before {
            return None;
        }
        Some(Rule {
            name,
            metric: metric?,
            comparison: comparison?,
            judge: judge?,
            window_ms,
            datapoints_to_alarm,
            datapoints_to_clear,
            scope,
            common,
            line,
        })
    }
}

fn show_ms(ms: i64) -> String {
    if ms % 86_400_000 == 0 && ms != 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 && ms != 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % MINUTE == 0 && ms != 0 {
        format!("{}m", ms / MINUTE)
    } else if ms % SECOND == 0 {
        format!("{}s", ms / SECOND)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests;
