//! Tollgate's anomaly detection, as a pure engine.
//!
//! Owns the per-device statistics (one ring of time buckets per device, [`stats`]), the robust
//! baselines learnt from them ([`baseline`]), the named detectors ([`detectors`]) and the
//! operator's custom rules ([`rules`]) configured by `detection.toml` ([`config`]), the alerts
//! with their lifecycle, verdicts and suppressions ([`alert`]), and the mitigation orders with
//! their rate limit ([`mitigate`]). [`Engine`] ties them together.
//!
//! It must not do I/O, read a clock, spawn tasks or depend on any other Tollgate crate: the
//! runtime feeds it [`Observation`]s from the security event bus and periodic [`Sample`]s of
//! the broker's meters, calls [`Engine::tick`] every few seconds with the current time
//! (`now_ms`, Unix milliseconds), and carries out the [`Order`]s it returns. It is never on the
//! per-message path. Nothing it is fed can make it panic: arithmetic saturates, indexing is
//! checked, and every collection it keeps is bounded.

#![forbid(unsafe_code)]

pub mod alert;
pub mod baseline;
pub mod config;
pub mod detectors;
mod engine;
mod error;
pub mod mitigate;
pub mod rules;
pub mod sketch;
pub mod stats;

pub use crate::alert::{Alert, AlertState, Suppression, SuppressionRequest, Verdict, VerdictKind};
pub use crate::config::DetectionConfig;
pub use crate::engine::{Engine, Tick};
pub use crate::error::DetectError;
pub use crate::mitigate::{Action, Mitigation, Order};
pub use crate::sketch::Sketch;
pub use crate::stats::{
    BaselineView, BucketView, DeviceStats, FleetStats, Metric, Rates, SourceView, TransportView,
};

use serde::{Deserialize, Serialize};

/// A device's identity (its certificate's device id).
pub type DeviceId = String;

/// How serious an alert is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Worth a look soon.
    Medium,
    /// Likely an attack or a failure.
    High,
    /// An attack in progress.
    Critical,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cohort membership, set by the runtime for each known device (from the registry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device's groups; each is a cohort `group:<name>`.
    pub groups: Vec<String>,
    /// The device's model; a cohort `model:<name>`.
    pub model: Option<String>,
}

/// One fact from the event bus.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A connection was accepted.
    Connected {
        /// The device.
        device: DeviceId,
        /// Its MQTT client id.
        client_id: String,
        /// The peer address.
        addr: Option<std::net::IpAddr>,
        /// When.
        at_ms: i64,
    },
    /// A connection ended.
    Disconnected {
        /// The device.
        device: DeviceId,
        /// Its MQTT client id.
        client_id: String,
        /// Why, as the broker names it.
        reason: String,
        /// When.
        at_ms: i64,
    },
    /// A connection refused at CONNECT for a device whose certificate was readable.
    Refused {
        /// The device.
        device: DeviceId,
        /// Why.
        reason: String,
        /// When.
        at_ms: i64,
    },
    /// A session was taken over by a new connection with the same client id.
    TakenOver {
        /// The device.
        device: DeviceId,
        /// The client id taken over.
        client_id: String,
        /// When.
        at_ms: i64,
    },
    /// `quarantined`: denied because the device is quarantined (not counted as probing).
    PublishDenied {
        /// The device.
        device: DeviceId,
        /// The topic refused.
        topic: String,
        /// Whether the denial is the quarantine policy's.
        quarantined: bool,
        /// When.
        at_ms: i64,
    },
    /// A subscription refused.
    SubscribeDenied {
        /// The device.
        device: DeviceId,
        /// The filter refused.
        filter: String,
        /// Whether the denial is the quarantine policy's.
        quarantined: bool,
        /// When.
        at_ms: i64,
    },
}

impl Observation {
    /// The device the fact is about.
    pub fn device(&self) -> &str {
        match self {
            Observation::Connected { device, .. }
            | Observation::Disconnected { device, .. }
            | Observation::Refused { device, .. }
            | Observation::TakenOver { device, .. }
            | Observation::PublishDenied { device, .. }
            | Observation::SubscribeDenied { device, .. } => device,
        }
    }

    /// When it happened.
    pub fn at_ms(&self) -> i64 {
        match self {
            Observation::Connected { at_ms, .. }
            | Observation::Disconnected { at_ms, .. }
            | Observation::Refused { at_ms, .. }
            | Observation::TakenOver { at_ms, .. }
            | Observation::PublishDenied { at_ms, .. }
            | Observation::SubscribeDenied { at_ms, .. } => *at_ms,
        }
    }
}

/// Cumulative counters of one device since the process started (monotonic; a decrease means
/// a restart of the meter: the new value is taken as the delta).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// PUBLISH packets received from the device.
    pub messages_in: u64,
    /// Their payload bytes.
    pub bytes_in: u64,
    /// PUBLISH packets delivered to the device.
    pub messages_out: u64,
    /// Their payload bytes.
    pub bytes_out: u64,
    /// Publishes refused by policy.
    pub publish_denied: u64,
    /// Subscriptions refused by policy.
    pub subscribe_denied: u64,
    /// SUBSCRIBE filters with a wildcard that the device asked for (granted or not).
    pub wildcard_subscribes: u64,
    /// Publishes refused by a mitigation throttle.
    pub throttled: u64,
}

impl Counters {
    /// The increase from `prev` to `self`; if any counter went down, the meter restarted and
    /// `self` is the increase.
    pub fn delta_since(&self, prev: &Counters) -> Counters {
        let restarted = self.messages_in < prev.messages_in
            || self.bytes_in < prev.bytes_in
            || self.messages_out < prev.messages_out
            || self.bytes_out < prev.bytes_out
            || self.publish_denied < prev.publish_denied
            || self.subscribe_denied < prev.subscribe_denied
            || self.wildcard_subscribes < prev.wildcard_subscribes
            || self.throttled < prev.throttled;
        if restarted {
            return *self;
        }
        Counters {
            messages_in: self.messages_in - prev.messages_in,
            bytes_in: self.bytes_in - prev.bytes_in,
            messages_out: self.messages_out - prev.messages_out,
            bytes_out: self.bytes_out - prev.bytes_out,
            publish_denied: self.publish_denied - prev.publish_denied,
            subscribe_denied: self.subscribe_denied - prev.subscribe_denied,
            wildcard_subscribes: self.wildcard_subscribes - prev.wildcard_subscribes,
            throttled: self.throttled - prev.throttled,
        }
    }
}

/// One TCP_INFO reading of one connection (cumulative counters are per connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Transport {
    /// Smoothed round-trip time, µs.
    pub rtt_us: u32,
    /// Its variance, µs.
    pub rttvar_us: u32,
    /// The smallest round-trip time seen, µs.
    pub min_rtt_us: u32,
    /// Segments retransmitted (cumulative).
    pub total_retrans: u32,
    /// Segments sent (cumulative).
    pub segs_out: u32,
    /// Segments currently considered lost.
    pub lost: u32,
    /// Bytes sent (cumulative).
    pub bytes_sent: u64,
    /// Bytes retransmitted (cumulative).
    pub bytes_retrans: u64,
    /// Delivery rate, bytes/s.
    pub delivery_rate: u64,
    /// Milliseconds since data last arrived from the peer (0 when unknown). A connection
    /// silent for longer than [`STALE_CONNECTION_MS`] is not counted as a live address (a
    /// half-open connection of a device that moved).
    pub last_recv_ms: u32,
}

/// A connection from which nothing arrived for this long is treated as stale, not live, when
/// judging concurrent addresses (MQTT clients send at least a PINGREQ per keep-alive).
pub const STALE_CONNECTION_MS: u32 = 90_000;

/// Consecutive samples that must show a device at two or more addresses before
/// `cloned_certificate` says so (one sample can catch a device mid-move).
pub const CONCURRENT_SAMPLES: u32 = 3;

/// One live connection of a device.
#[derive(Debug, Clone)]
pub struct LiveConn {
    /// Its MQTT client id.
    pub client_id: String,
    /// The peer address.
    pub addr: Option<std::net::IpAddr>,
    /// Its TCP_INFO reading, when one could be taken.
    pub transport: Option<Transport>,
}

/// A reading of one device, taken by the runtime's sampler for every device with a live
/// connection or a meter.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The device.
    pub device: DeviceId,
    /// Its cumulative counters.
    pub counters: Counters,
    /// Topics published since the previous sample (the broker resets its bitmap on each read).
    pub topics: Sketch,
    /// Wildcard filters asked for since the previous sample.
    pub filters: Sketch,
    /// Its live connections.
    pub connections: Vec<LiveConn>,
    /// The counters restarted from zero since the previous sample (the broker made a new meter
    /// for the device): they are all new, whatever their value.
    pub restarted: bool,
    /// Connections that closed since the previous sample, with their last TCP reading (taken
    /// at close): their retransmissions and bytes count, they are not live.
    pub closed: Vec<(String, Transport)>,
}
