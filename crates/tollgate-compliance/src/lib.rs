//! Tollgate's supply-chain compliance, as pure functions over data.
//!
//! Owns the formats and the rules: SBOM documents (CycloneDX JSON 1.4–1.6, SPDX 2.3 JSON) and
//! their CISA minimum elements ([`sbom`]); package URLs mapped to OSV ecosystems and
//! normalised names ([`purl`]); per-ecosystem version ordering ([`version`]); OSV advisory
//! records, their index and matching exactly as the OSV specification says ([`osv`]); VEX
//! statements, OpenVEX and CycloneDX ([`vex`]); compliance profiles from `compliance.toml`
//! ([`profile`]) and the verdict of a profile over a device's facts ([`evaluate`]).
//!
//! It must not do I/O beyond reading the files it is given, keep state between calls, or know
//! about devices' connections, the registry or the broker: the control plane feeds it facts
//! and acts on its verdicts. Every parser bounds what it accepts (size, nesting, counts) and
//! returns a [`ComplianceError`] rather than panicking on any input.

#![forbid(unsafe_code)]

mod error;
pub mod evaluate;
pub mod osv;
pub mod profile;
pub mod purl;
pub mod sbom;
pub mod version;
pub mod vex;

pub use crate::error::ComplianceError;

use serde::{Deserialize, Serialize};

/// The largest SBOM, VEX or advisory archive read, in bytes. Larger inputs are refused before
/// they are read.
pub const MAX_DOCUMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The largest single OSV record, in bytes.
pub const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// A vulnerability's qualitative severity (CVSS v3/v4 bands; `none` for a score of 0).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// CVSS 0.0, or a record that says so.
    #[default]
    None,
    /// 0.1–3.9.
    Low,
    /// 4.0–6.9.
    Medium,
    /// 7.0–8.9.
    High,
    /// 9.0–10.0.
    Critical,
}

impl Severity {
    /// The band a CVSS base score falls in.
    pub fn from_score(score: f64) -> Severity {
        if score >= 9.0 {
            Severity::Critical
        } else if score >= 7.0 {
            Severity::High
        } else if score >= 4.0 {
            Severity::Medium
        } else if score > 0.0 {
            Severity::Low
        } else {
            Severity::None
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parse a name as records and profiles write it (`moderate` is GitHub's `medium`).
    pub fn parse(s: &str) -> Option<Severity> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Severity::None),
            "low" => Some(Severity::Low),
            "medium" | "moderate" => Some(Severity::Medium),
            "high" | "important" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
