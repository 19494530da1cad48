//! The configuration audit: checks of Tollgate's own state, as findings.
//!
//! Owns the rules (ids, severities, remediation texts), the evaluation of a [`Facts`] snapshot
//! into [`Finding`]s, the finding lifecycle (first and last seen, resolution, suppressions with
//! a reason, an author and an expiry) and the SARIF rendering. It must not gather the facts
//! (the binary reads certificates, files, the policy and the registry) nor do I/O.

mod book;
mod evaluate;
mod roca;
mod rules;
mod sarif;
#[cfg(test)]
mod tests;

pub use book::{
    Changes, FindingBook, Suppression, Tracked, MAX_SUPPRESSION_SECS, RESOLVED_KEEP_COUNT,
    RESOLVED_KEEP_SECS,
};
pub use evaluate::evaluate;
pub use roca::has_roca_fingerprint;
pub use rules::{rule, rules, RuleInfo};
pub use sarif::sarif;

use serde::{Deserialize, Serialize};

/// How serious a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// A hardening step left out.
    Low,
    /// A weakness an attacker could use with other access.
    Medium,
    /// A weakness an attacker can use directly.
    High,
    /// Something is wrong now (a broken audit log, a known-broken key).
    Critical,
}

/// What kind of certificate a [`CertFact`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    /// The root CA.
    RootCa,
    /// The issuing CA in use.
    IssuingCa,
    /// An issuing CA replaced by a rotation, still trusted until `trusted_until`.
    RetiredCa,
    /// The gateway's TLS server certificate.
    Server,
    /// The admin client certificate.
    Admin,
    /// A device certificate.
    Device,
}

/// The public key of a certificate, as far as the checks need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyFact {
    /// RSA with its modulus (big-endian, no leading zero bytes needed).
    Rsa {
        /// The modulus.
        modulus: Vec<u8>,
        /// Whether the caller found it in the configured weak-key blocklist.
        blocklisted: bool,
    },
    /// An elliptic-curve key on the named curve (`P-256`, `P-384`, ...).
    Ec {
        /// Curve name.
        curve: String,
    },
    /// Ed25519.
    Ed25519,
    /// Anything else (named).
    Other(String),
}

/// One certificate Tollgate issued or trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFact {
    /// What it is.
    pub kind: CertKind,
    /// The device id for device certificates, otherwise the subject's common name.
    pub subject: String,
    /// Serial, hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Revoked (device certificates), or the CA was revoked / retired and should no longer be
    /// used to issue. For a CA the checks read it as *revoked* (distrusted, e.g. its key was
    /// compromised): a CA that was merely replaced by a rotation is a [`CertKind::RetiredCa`]
    /// with `revoked: false`, and a revoked CA still trusted is `ca-revoked-still-trusted`.
    pub revoked: bool,
    /// For a device certificate: the serial of the CA certificate that issued it.
    pub issuer_serial: String,
    /// For a retired CA: until when it is still trusted (Unix seconds).
    pub trusted_until: Option<i64>,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub spki_sha256: String,
    /// The key.
    pub key: KeyFact,
}

/// A key file in the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Path relative to the data directory (`ca/root.key`).
    pub path: String,
    /// Unix mode bits (`0o600`).
    pub mode: u32,
}

/// One device as the inventory and detection see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFact {
    /// Device id.
    pub id: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Revoked.
    pub revoked: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// When it last connected or was last seen connected (Unix seconds), if ever.
    pub last_seen: Option<i64>,
    /// Whether an inventory (model and firmware) is recorded.
    pub has_inventory: bool,
    /// Whether an SBOM is known for its model and firmware.
    pub has_sbom: bool,
    /// Distinct source addresses of its live connections right now.
    pub live_addresses: Vec<String>,
    /// Whether a `cloned_certificate` alert is active for it.
    pub clone_alert: bool,
}

/// One allow or deny pattern of the policy, for the permissiveness checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFact {
    /// The rule's id (`allow[3]` when unnamed).
    pub rule: String,
    /// Allow (true) or deny.
    pub allow: bool,
    /// The rule's `who` entries (`*`, `group:G`, `device:ID`).
    pub who: Vec<String>,
    /// `publish`, `subscribe` or `retain`.
    pub action: String,
    /// The pattern as written (with `${device.id}` / `${device.group}`).
    pub pattern: String,
    /// Line in the policy file.
    pub line: usize,
}

/// A policy lint finding, passed through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LintFact {
    /// The rule concerned.
    pub rule: String,
    /// Line.
    pub line: usize,
    /// The lint's message.
    pub message: String,
    /// Whether the lint says it is a warning (otherwise informational).
    pub warning: bool,
}

/// The audit log's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLogFact {
    /// `[audit] enabled`.
    pub enabled: bool,
    /// Why it refuses to sign, if it does.
    pub refusing: Option<String>,
    /// Entries in the log.
    pub entries: u64,
    /// Size of the latest checkpoint.
    pub checkpoint_size: Option<u64>,
    /// When the latest checkpoint was signed (Unix seconds).
    pub checkpoint_at: Option<i64>,
    /// The configured checkpoint interval, seconds.
    pub checkpoint_interval_secs: u64,
}

/// Everything the checks look at, gathered by the caller at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Unix seconds.
    pub now: i64,
    /// Every CA, server, admin and (non-expired or recently expired) device certificate.
    pub certs: Vec<CertFact>,
    /// Key files in the data directory.
    pub key_files: Vec<KeyFile>,
    /// Whether the root CA's private key is in the data directory.
    pub root_key_online: bool,
    /// Devices.
    pub devices: Vec<DeviceFact>,
    /// The policy's patterns.
    pub grants: Vec<GrantFact>,
    /// The policy's lint findings.
    pub lints: Vec<LintFact>,
    /// `[mqtt] client_id`: `exact` (the default), `prefix` or `any`.
    pub client_id_mode: String,
    /// `[tls] min_version = "1.3"` (the resolved configuration's `tls13_only`).
    pub tls13_only: bool,
    /// The admin listener's address.
    pub admin_listen: String,
    /// Whether it is a loopback address.
    pub admin_loopback: bool,
    /// The metrics listener's address, when enabled.
    pub metrics_listen: Option<String>,
    /// Whether it is a loopback address.
    pub metrics_loopback: bool,
    /// The audit log.
    pub audit: AuditLogFact,
    /// Thresholds.
    pub thresholds: Thresholds,
}

/// Thresholds of the checks (configurable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// CA, server and admin certificates expiring within this many days are a finding.
    pub expiry_days: i64,
    /// Certificates issued longer ago than this many days and still in use are a finding.
    pub max_cert_age_days: i64,
    /// Devices not seen for this many days are dormant.
    pub dormant_days: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            expiry_days: 30,
            max_cert_age_days: 398,
            dormant_days: 30,
        }
    }
}

/// One finding of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's id (`cert-expiring`, `policy-broad-grant`, ...).
    pub rule: String,
    /// How serious.
    pub severity: Severity,
    /// What it is about (`device:pump-7`, `cert:<serial>`, `file:ca/root.key`, `policy:allow[2]`,
    /// `config:[tls] min_version`).
    pub resource: String,
    /// What was seen, in words, with the figures.
    pub evidence: String,
    /// What to do about it.
    pub remediation: String,
}

impl Finding {
    /// The finding's stable id: the rule and the resource.
    pub fn id(&self) -> String {
        format!("{}:{}", self.rule, self.resource)
    }
}

/// The exit code of `tollgate audit` for the highest severity among the findings it counts:
/// 0 when there is none (or only informational ones), 2 low, 3 medium, 4 high, 5 critical.
/// (1 is reserved for "the audit could not run".)
pub fn exit_code(highest: Option<Severity>) -> u8 {
    match highest {
        None | Some(Severity::Info) => 0,
        Some(Severity::Low) => 2,
        Some(Severity::Medium) => 3,
        Some(Severity::High) => 4,
        Some(Severity::Critical) => 5,
    }
}

impl Severity {
    /// The lowercase name (`high`), as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
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

/// Seconds in a day.
const DAY: i64 = 86_400;

/// `d` days in seconds, saturating.
fn days(d: i64) -> i64 {
    d.saturating_mul(DAY)
}

/// Unix seconds as an RFC 3339 UTC time (`2026-03-01T12:00:00Z`), for evidence texts. Any
/// `i64` is accepted (years far outside 0..9999 are printed as they come).
fn fmt_time(t: i64) -> String {
    let secs = t.rem_euclid(DAY);
    let z = t.div_euclid(DAY) + 719_468;
    // Days to civil date (proleptic Gregorian), after H. Hinnant's public-domain algorithm.
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A duration in seconds as whole days, hours or minutes (`3 d`, `5 h`, `12 min`).
fn fmt_span(secs: i128) -> String {
    let day = i128::from(DAY);
    if secs.unsigned_abs() >= day.unsigned_abs() {
        format!("{} d", secs / day)
    } else if secs.unsigned_abs() >= 3600 {
        format!("{} h", secs / 3600)
    } else {
        format!("{} min", secs / 60)
    }
}

/// A digest in hex, normalised for comparison: lowercase, without `:` separators or spaces.
fn norm_digest(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Hex text normalised for comparison: lowercase, without `:` separators, spaces or leading
/// zeros (`00:A1` and `a1` are the same serial).
fn norm_hex(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    let trimmed = t.trim_start_matches('0');
    if trimmed.is_empty() && !t.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}
