//! `tollgate.toml`: raw configuration, validated into [`Config`] before anything uses it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tollgate_broker::{BrokerConfig, ClientIdRule, QueueFull};

/// The whole configuration file. Every key is optional; unknown keys are errors.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub mqtt: MqttSection,
    pub admin: AdminSection,
    pub tls: TlsSection,
    pub policy: PolicySection,
    pub compliance: ComplianceSection,
    pub devices: DevicesSection,
    pub sessions: SessionsSection,
    pub log: LogSection,
    pub limits: LimitsSection,
    pub metrics: MetricsSection,
    pub detection: DetectionSection,
    pub alerts: AlertsSection,
    pub audit: AuditSection,
    pub dashboard: DashboardSection,
}

/// The web dashboard's sign-in and sessions (docs/dashboard.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSection {
    /// A one-time sign-in URL works this long unless asked otherwise, seconds.
    pub login_ttl_secs: u64,
    /// The longest a sign-in URL may be asked to work, seconds (at most 3600).
    pub max_login_ttl_secs: u64,
    /// A session unused this long ends, seconds.
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in whatever its use, seconds.
    pub session_max_secs: u64,
    /// Sessions at once; a new sign-in beyond it ends the least recently used one.
    pub max_sessions: usize,
    /// Sign-in URLs outstanding at once; beyond it the oldest stops working.
    pub max_pending_logins: usize,
    /// Live-update streams (server-sent events) at once.
    pub max_streams: usize,
}

impl Default for DashboardSection {
    fn default() -> Self {
        DashboardSection {
            login_ttl_secs: 300,
            max_login_ttl_secs: 3600,
            session_idle_secs: 1800,
            session_max_secs: 43_200,
            max_sessions: 64,
            max_pending_logins: 64,
            max_streams: 32,
        }
    }
}

/// The tamper-evident audit log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Keep the audit log (turning it off is a configuration-audit finding).
    pub enabled: bool,
    /// The log's directory (relative to the data directory).
    pub dir: PathBuf,
    /// The log's Ed25519 signing key, PKCS#8 (relative to the data directory; created 0600).
    pub key: PathBuf,
    /// The log's origin, the first line of every checkpoint and the key's name (no spaces, no
    /// `+`). By default `<host name>/tollgate-audit`.
    pub origin: Option<String>,
    /// A checkpoint is signed this often when entries were added, milliseconds.
    pub checkpoint_interval_ms: u64,
    /// Events queued for the log; beyond it they are missed, and the gap is an entry.
    pub queue: usize,
    /// The configuration audit runs this often, seconds (and on demand).
    pub config_interval_secs: u64,
    /// CA, server and admin certificates expiring within this many days are a finding.
    pub cert_expiry_days: i64,
    /// Certificates issued longer ago than this and still in use are a finding.
    pub max_cert_age_days: i64,
    /// Devices not seen for this many days are dormant.
    pub dormant_days: i64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            enabled: true,
            dir: PathBuf::from("audit"),
            key: PathBuf::from("audit.key"),
            origin: None,
            checkpoint_interval_ms: 5_000,
            queue: 65_536,
            config_interval_secs: 300,
            cert_expiry_days: 30,
            max_cert_age_days: 398,
            dormant_days: 30,
        }
    }
}

/// Resolved audit-log settings.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub enabled: bool,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub origin: String,
    pub checkpoint_interval: Duration,
    pub queue: usize,
    pub config_interval: Duration,
    pub thresholds: tollgate_audit::findings::Thresholds,
}

/// The default origin: `<host name>/tollgate-audit`, the host name reduced to what a key
/// name may hold.
fn default_origin() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    };
    format!("{host}/tollgate-audit")
}

/// The Prometheus metrics listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where `/metrics` is served: plain HTTP on a loopback address, HTTPS (the server
    /// certificate) on any other.
    pub listen: SocketAddr,
    /// Serve metrics at all.
    pub enabled: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 9898)),
            enabled: true,
        }
    }
}

/// Behaviour and transport-health detection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionSection {
    /// The detection rules (relative to the data directory); reloaded like the policy. A
    /// missing file means the built-in defaults (every named detector on).
    pub rules: PathBuf,
    /// Meters and `TCP_INFO` are read this often (and `TCP_INFO` at every close), milliseconds.
    pub sample_interval_ms: u64,
}

impl Default for DetectionSection {
    fn default() -> Self {
        DetectionSection {
            rules: PathBuf::from("detection.toml"),
            sample_interval_ms: 10_000,
        }
    }
}

/// Where alerts go besides `events.log` and the admin API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsSection {
    /// Webhook receivers, sent Alertmanager-compatible (version 4) JSON. `http://` only to a
    /// loopback address; `https://` verified against `webhook_ca` (PEM; by default Tollgate's
    /// root CA).
    pub webhooks: Vec<String>,
    /// CA certificates (PEM) that `https://` receivers are verified against.
    pub webhook_ca: Option<PathBuf>,
    /// Notifications waiting for delivery per receiver; beyond it the oldest is dropped (and
    /// counted).
    pub webhook_queue: usize,
    /// Attempts per notification (retried with exponential backoff from 1 s, capped at 60 s).
    pub webhook_attempts: u32,
    /// One attempt's time limit, seconds.
    pub webhook_timeout_secs: u64,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            webhooks: Vec::new(),
            webhook_ca: None,
            webhook_queue: 1024,
            webhook_attempts: 8,
            webhook_timeout_secs: 5,
        }
    }
}

/// Resolved detection, metrics and alert settings.
#[derive(Debug, Clone)]
pub struct Observability {
    /// The metrics listener, when enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// `detection.toml`.
    pub rules_file: PathBuf,
    /// Meter and `TCP_INFO` sampling interval.
    pub sample_interval: Duration,
    /// Webhook receivers.
    pub webhooks: Vec<crate::webhook::Receiver>,
    /// CA certificates for `https://` receivers (PEM).
    pub webhook_ca: Option<PathBuf>,
    pub webhook_queue: usize,
    pub webhook_attempts: u32,
    pub webhook_timeout: Duration,
}

/// What an unauthenticated source may claim, on both listeners.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Addresses in one IPv4 prefix of this length count as one source.
    pub source_prefix_v4: u8,
    /// Addresses in one IPv6 prefix of this length count as one source.
    pub source_prefix_v6: u8,
    /// New connections per second from one source, per listener (0: unlimited).
    pub connect_rate_per_source: u32,
    /// New connections one source may open at once before the rate applies.
    pub connect_burst_per_source: u32,
    /// Unfinished MQTT handshakes overall.
    pub max_handshakes: usize,
    /// Refusals recorded one by one per source, reason and interval; the rest are summarized.
    pub refusals_logged_per_source: u32,
    /// Length of a refusal summary interval, seconds.
    pub refusal_summary_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            source_prefix_v4: 32,
            source_prefix_v6: 64,
            connect_rate_per_source: 50,
            connect_burst_per_source: 200,
            max_handshakes: 4096,
            refusals_logged_per_source: 5,
            refusal_summary_secs: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Keep persistent sessions, their QoS 1/2 messages, retained messages and wills on disk.
    pub durable: bool,
    /// The store file, relative to the data directory.
    pub file: PathBuf,
}

impl Default for SessionsSection {
    fn default() -> Self {
        SessionsSection {
            durable: true,
            file: PathBuf::from("sessions.db"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    pub listen: SocketAddr,
    pub max_packet_size: u32,
    pub receive_maximum: u16,
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub queue_full: String,
    pub topic_alias_maximum: u16,
    pub max_outbound_topic_aliases: u16,
    pub max_keep_alive: u16,
    pub max_session_expiry_secs: u32,
    pub client_id: String,
    pub handshake_timeout_secs: u64,
    pub max_handshakes_per_ip: usize,
    pub max_connections: usize,
    pub max_topic_levels: usize,
    pub max_retained_messages: usize,
    pub write_timeout_secs: u64,
    pub max_subscriptions_per_session: usize,
    pub max_retained_bytes: usize,
    pub max_retained_per_device: usize,
    pub max_retained_bytes_per_device: usize,
    pub max_subscription_bytes_per_session: usize,
    pub max_filter_bytes: usize,
    pub packet_timeout_secs: u64,
}

impl Default for MqttSection {
    fn default() -> Self {
        let b = BrokerConfig::default();
        MqttSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            max_packet_size: b.max_packet_size,
            receive_maximum: b.receive_maximum,
            max_inflight: b.max_inflight,
            max_queued_messages: b.max_queued_messages,
            max_queued_bytes: b.max_queued_bytes,
            queue_full: "reject".into(),
            topic_alias_maximum: b.topic_alias_maximum,
            max_outbound_topic_aliases: b.max_outbound_topic_aliases,
            max_keep_alive: b.max_keep_alive,
            max_session_expiry_secs: b.max_session_expiry,
            client_id: "exact".into(),
            handshake_timeout_secs: 10,
            max_handshakes_per_ip: 64,
            max_connections: 100_000,
            max_topic_levels: b.max_topic_levels,
            max_retained_messages: b.max_retained_messages,
            write_timeout_secs: b.write_timeout.as_secs(),
            max_subscriptions_per_session: b.max_subscriptions_per_session,
            max_retained_bytes: b.max_retained_bytes,
            max_retained_per_device: b.max_retained_per_device,
            max_retained_bytes_per_device: b.max_retained_bytes_per_device,
            max_subscription_bytes_per_session: b.max_subscription_bytes_per_session,
            max_filter_bytes: b.max_filter_bytes,
            packet_timeout_secs: b.packet_timeout.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: SocketAddr,
    /// Concurrent control-listener connections (lowered to fit the file limit).
    pub max_connections: usize,
    /// Concurrent control-listener connections from one source.
    pub max_connections_per_source: usize,
    /// The TLS handshake, and then each request's line and headers (also the wait for the next
    /// request on a kept-alive connection), must arrive within this, seconds.
    pub header_timeout_secs: u64,
    /// A request body must arrive within this, seconds.
    pub body_timeout_secs: u64,
    /// Largest admin API request body, bytes.
    pub max_body_bytes: usize,
    /// Largest EST request body (a base64 PKCS#10 request), bytes.
    pub max_csr_bytes: usize,
    /// Largest document uploaded to the admin API (an SBOM, a VEX file, a batch of OSV
    /// advisories), bytes.
    pub max_document_bytes: usize,
    /// A document body must arrive within this, seconds.
    pub document_timeout_secs: u64,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            max_connections: 256,
            max_connections_per_source: 16,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            max_body_bytes: 64 * 1024,
            max_csr_bytes: 16 * 1024,
            max_document_bytes: 64 * 1024 * 1024,
            document_timeout_secs: 120,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub min_version: String,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            min_version: "1.2".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    pub file: PathBuf,
    pub watch_interval_ms: u64,
}

/// Supply-chain compliance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComplianceSection {
    /// The compliance profile (relative to the data directory); reloaded like the policy.
    pub profile: PathBuf,
}

impl Default for ComplianceSection {
    fn default() -> Self {
        ComplianceSection {
            profile: PathBuf::from("compliance.toml"),
        }
    }
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            file: PathBuf::from("policy.toml"),
            watch_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesSection {
    pub cert_lifetime_days: u32,
    /// Per-group certificate lifetime, days (a device in several groups gets the shortest).
    pub group_lifetime_days: std::collections::BTreeMap<String, u32>,
    /// Optional blocklist of weak RSA keys (openssl-vulnkey fingerprints, one per line).
    pub weak_key_blocklist: Option<PathBuf>,
    /// Lifetime of enrollment tokens when `device token` gives no --ttl, seconds.
    pub token_ttl_secs: u64,
    /// Longest lifetime a token may be given, seconds.
    pub max_token_ttl_secs: u64,
    /// Hours until a CRL's nextUpdate; CRLs are re-signed at half this interval.
    pub crl_validity_hours: u32,
}

impl Default for DevicesSection {
    fn default() -> Self {
        DevicesSection {
            cert_lifetime_days: 7,
            group_lifetime_days: Default::default(),
            weak_key_blocklist: None,
            token_ttl_secs: 3600,
            max_token_ttl_secs: 7 * 24 * 3600,
            crl_validity_hours: 48,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub events_file: PathBuf,
    /// Events the bus holds before the dispatcher takes them; beyond it events are dropped and
    /// an `events_dropped` record says how many.
    pub event_queue: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            events_file: PathBuf::from("events.log"),
            event_queue: 16 * 1024,
        }
    }
}

/// Validated, resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data: PathBuf,
    pub mqtt_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub broker: BrokerConfig,
    pub handshake_timeout: Duration,
    pub max_handshakes_per_ip: usize,
    pub max_connections: usize,
    pub tls13_only: bool,
    pub policy_file: PathBuf,
    pub policy_watch: Duration,
    pub compliance_file: PathBuf,
    pub cert_lifetime: time::Duration,
    pub group_lifetimes: std::collections::BTreeMap<String, time::Duration>,
    pub weak_keys: tollgate_pki::WeakKeyList,
    pub token_ttl: Duration,
    pub crl_validity: Duration,
    pub events_file: PathBuf,
    /// Capacity of the event bus (and of each consumer's queue).
    pub event_queue: usize,
    /// The durable session store, when sessions are durable.
    pub sessions_file: Option<PathBuf>,
    /// Limits of the control listener.
    pub control_limits: ControlLimits,
    /// Limits on what an unauthenticated source may claim.
    pub limits: Limits,
    /// Longest enrollment-token lifetime.
    pub max_token_ttl: Duration,
    /// Metrics, detection and alerts.
    pub observability: Observability,
    /// The audit log.
    pub audit: AuditSettings,
    /// The web dashboard.
    pub dashboard: crate::dashboard::Settings,
}

/// Limits of the control listener.
#[derive(Debug, Clone, Copy)]
pub struct ControlLimits {
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_csr_bytes: usize,
    pub max_document_bytes: usize,
    pub document_timeout: Duration,
}

/// Limits on sources, both listeners.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub prefixes: crate::admission::Prefixes,
    pub connect_rate: u32,
    pub connect_burst: u32,
    pub max_handshakes: usize,
    pub refusals: crate::admission::refusals::Aggregation,
}

impl Config {
    /// What the control plane needs of it.
    pub fn control(&self) -> tollgate_control::ControlConfig {
        tollgate_control::ControlConfig {
            data: self.data.clone(),
            policy_file: self.policy_file.clone(),
            compliance_file: self.compliance_file.clone(),
            cert_lifetime: self.cert_lifetime,
            group_lifetimes: self.group_lifetimes.clone(),
            weak_keys: self.weak_keys.clone(),
            token_ttl: self.token_ttl,
            max_token_ttl: self.max_token_ttl,
            crl_validity: self.crl_validity,
        }
    }

    /// Read `file` (or `DATA/tollgate.toml` when present) and resolve paths against `data`.
    pub fn load(data: &Path, file: Option<&Path>) -> Result<Config> {
        let default_path = data.join("tollgate.toml");
        let path = file
            .map(Path::to_path_buf)
            .or_else(|| default_path.exists().then_some(default_path));
        let raw: FileConfig = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => FileConfig::default(),
        };
        Config::resolve(data, raw)
    }

    fn resolve(data: &Path, raw: FileConfig) -> Result<Config> {
        let m = raw.mqtt;
        let client_id_rule = match m.client_id.as_str() {
            "exact" => ClientIdRule::Exact,
            "prefix" => ClientIdRule::Prefix,
            "any" => ClientIdRule::Any,
            other => {
                bail!("mqtt.client_id: {other:?} is not one of \"exact\", \"prefix\", \"any\"")
            }
        };
        if m.max_packet_size < 64 {
            bail!("mqtt.max_packet_size must be at least 64 bytes");
        }
        if m.receive_maximum == 0 || m.max_inflight == 0 {
            bail!("mqtt.receive_maximum and mqtt.max_inflight must be at least 1");
        }
        if m.handshake_timeout_secs == 0 {
            bail!("mqtt.handshake_timeout_secs must be at least 1");
        }
        let queue_full = match m.queue_full.as_str() {
            "reject" => QueueFull::Reject,
            "drop-oldest" => QueueFull::DropOldest,
            other => bail!("mqtt.queue_full: {other:?} is not \"reject\" or \"drop-oldest\""),
        };
        let tls13_only = match raw.tls.min_version.as_str() {
            "1.2" => false,
            "1.3" => true,
            other => bail!("tls.min_version: {other:?} is not \"1.2\" or \"1.3\""),
        };
        let handshake_timeout = Duration::from_secs(m.handshake_timeout_secs);
        let a = &raw.admin;
        if a.header_timeout_secs == 0 || a.body_timeout_secs == 0 {
            bail!("admin.header_timeout_secs and admin.body_timeout_secs must be at least 1");
        }
        let l = &raw.limits;
        if l.source_prefix_v4 > 32 || l.source_prefix_v6 > 128 {
            bail!("limits.source_prefix_v4 must be at most 32 and limits.source_prefix_v6 at most 128");
        }
        if l.refusal_summary_secs == 0 {
            bail!("limits.refusal_summary_secs must be at least 1");
        }
        if raw.devices.token_ttl_secs > raw.devices.max_token_ttl_secs {
            bail!(
                "devices.token_ttl_secs ({}) is longer than devices.max_token_ttl_secs ({})",
                raw.devices.token_ttl_secs,
                raw.devices.max_token_ttl_secs
            );
        }
        let control_limits = ControlLimits {
            max_connections: a.max_connections.max(1),
            max_connections_per_source: a.max_connections_per_source.max(1),
            header_timeout: Duration::from_secs(a.header_timeout_secs),
            body_timeout: Duration::from_secs(a.body_timeout_secs),
            max_body_bytes: a.max_body_bytes.max(1024),
            max_csr_bytes: a.max_csr_bytes.max(1024),
            max_document_bytes: a.max_document_bytes.max(1024),
            document_timeout: Duration::from_secs(a.document_timeout_secs.max(1)),
        };
        let limits = Limits {
            prefixes: crate::admission::Prefixes {
                v4: l.source_prefix_v4,
                v6: l.source_prefix_v6,
            },
            connect_rate: l.connect_rate_per_source,
            connect_burst: l.connect_burst_per_source.max(1),
            max_handshakes: l.max_handshakes.max(1),
            refusals: crate::admission::refusals::Aggregation {
                individual: l.refusals_logged_per_source,
                interval: Duration::from_secs(l.refusal_summary_secs),
                ..Default::default()
            },
        };
        let broker = BrokerConfig {
            max_packet_size: m.max_packet_size,
            receive_maximum: m.receive_maximum,
            max_inflight: m.max_inflight,
            max_queued_messages: m.max_queued_messages.max(1),
            max_queued_bytes: m.max_queued_bytes.max(1024),
            queue_full,
            topic_alias_maximum: m.topic_alias_maximum,
            max_outbound_topic_aliases: m.max_outbound_topic_aliases,
            max_keep_alive: m.max_keep_alive,
            max_session_expiry: m.max_session_expiry_secs,
            client_id_rule,
            connect_timeout: handshake_timeout,
            max_topic_levels: m.max_topic_levels.clamp(1, 4096),
            max_retained_messages: m.max_retained_messages,
            write_timeout: Duration::from_secs(m.write_timeout_secs.max(1)),
            max_subscriptions_per_session: m.max_subscriptions_per_session.max(1),
            max_retained_bytes: m.max_retained_bytes,
            max_retained_per_device: m.max_retained_per_device,
            max_retained_bytes_per_device: m.max_retained_bytes_per_device,
            max_subscription_bytes_per_session: m.max_subscription_bytes_per_session.max(1),
            max_filter_bytes: m.max_filter_bytes.clamp(1, 65535),
            packet_timeout: Duration::from_secs(m.packet_timeout_secs.max(1)),
        };
        let d = &raw.dashboard;
        if d.login_ttl_secs == 0 || d.session_idle_secs == 0 || d.session_max_secs == 0 {
            bail!("dashboard.login_ttl_secs, session_idle_secs and session_max_secs must be at least 1");
        }
        if d.max_login_ttl_secs > 3600 || d.login_ttl_secs > d.max_login_ttl_secs {
            bail!(
                "dashboard.login_ttl_secs must be at most max_login_ttl_secs, itself at most 3600"
            );
        }
        let dashboard = crate::dashboard::Settings {
            login_ttl: Duration::from_secs(d.login_ttl_secs),
            max_login_ttl: Duration::from_secs(d.max_login_ttl_secs),
            session_idle: Duration::from_secs(d.session_idle_secs),
            session_max: Duration::from_secs(d.session_max_secs),
            max_sessions: d.max_sessions.max(1),
            max_pending_logins: d.max_pending_logins.max(1),
            max_streams: d.max_streams.max(1),
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { data.join(p) };
        Ok(Config {
            dashboard,
            data: data.to_path_buf(),
            mqtt_listen: m.listen,
            admin_listen: raw.admin.listen,
            broker,
            handshake_timeout,
            max_handshakes_per_ip: m.max_handshakes_per_ip.max(1),
            max_connections: m.max_connections.max(1),
            tls13_only,
            policy_file: resolve(raw.policy.file),
            compliance_file: resolve(raw.compliance.profile),
            policy_watch: Duration::from_millis(raw.policy.watch_interval_ms.max(50)),
            cert_lifetime: time::Duration::days(i64::from(raw.devices.cert_lifetime_days.max(1))),
            group_lifetimes: raw
                .devices
                .group_lifetime_days
                .iter()
                .map(|(g, d)| (g.clone(), time::Duration::days(i64::from((*d).max(1)))))
                .collect(),
            weak_keys: match &raw.devices.weak_key_blocklist {
                Some(p) => {
                    let p = resolve(p.clone());
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("devices.weak_key_blocklist {}", p.display()))?;
                    tollgate_pki::WeakKeyList::parse(&text)
                }
                None => tollgate_pki::WeakKeyList::default(),
            },
            token_ttl: Duration::from_secs(raw.devices.token_ttl_secs.max(1)),
            crl_validity: Duration::from_secs(
                u64::from(raw.devices.crl_validity_hours.max(2)) * 3600,
            ),
            events_file: resolve(raw.log.events_file),
            event_queue: raw.log.event_queue.max(1),
            sessions_file: raw.sessions.durable.then(|| resolve(raw.sessions.file)),
            control_limits,
            limits,
            max_token_ttl: Duration::from_secs(raw.devices.max_token_ttl_secs.max(1)),
            audit: AuditSettings {
                enabled: raw.audit.enabled,
                dir: resolve(raw.audit.dir),
                key: resolve(raw.audit.key),
                origin: match raw.audit.origin {
                    Some(o) => {
                        if o.is_empty()
                            || o.contains('+')
                            || o.chars().any(|c| c.is_whitespace() || c.is_control())
                        {
                            bail!("audit.origin {o:?} must be non-empty, without spaces or '+'");
                        }
                        o
                    }
                    None => default_origin(),
                },
                checkpoint_interval: Duration::from_millis(
                    raw.audit.checkpoint_interval_ms.max(100),
                ),
                queue: raw.audit.queue.max(16),
                config_interval: Duration::from_secs(raw.audit.config_interval_secs.max(1)),
                thresholds: tollgate_audit::findings::Thresholds {
                    expiry_days: raw.audit.cert_expiry_days.max(0),
                    max_cert_age_days: raw.audit.max_cert_age_days.max(1),
                    dormant_days: raw.audit.dormant_days.max(1),
                },
            },
            observability: Observability {
                metrics_listen: raw.metrics.enabled.then_some(raw.metrics.listen),
                rules_file: resolve(raw.detection.rules),
                sample_interval: Duration::from_millis(raw.detection.sample_interval_ms.max(100)),
                webhooks: raw
                    .alerts
                    .webhooks
                    .iter()
                    .map(|u| crate::webhook::Receiver::parse(u))
                    .collect::<Result<_>>()?,
                webhook_ca: raw.alerts.webhook_ca.map(resolve),
                webhook_queue: raw.alerts.webhook_queue.max(1),
                webhook_attempts: raw.alerts.webhook_attempts.max(1),
                webhook_timeout: Duration::from_secs(raw.alerts.webhook_timeout_secs.max(1)),
            },
        })
    }
}

/// The commented default configuration written by `tollgate init`.
pub fn default_config_toml(names: &[String], ips: &[IpAddr]) -> String {
    let names = names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let ips = ips
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# Tollgate configuration. Every key is optional; the values shown are the defaults.
# Full reference: docs/configuration.md. Command-line flags override this file.
#
# The server certificate was issued for DNS names [{names}] and IP addresses [{ips}].
# (Re-issue it with `tollgate init` on a new data directory if you need other names.)

[mqtt]
# MQTT over TLS with client certificates. There is no plaintext listener.
listen = "0.0.0.0:8883"
max_packet_size = 1048576        # bytes; larger packets get DISCONNECT 0x95
receive_maximum = 1024           # unreleased incoming QoS 2 messages per client
max_inflight = 1024              # unacknowledged outgoing QoS 1/2 messages per client
max_queued_messages = 10000      # per session (queued for an offline or slow client)
max_queued_bytes = 67108864      # per session
queue_full = "reject"            # full queue: "reject" the new message (MQTT 5 publishers get
                                 # PUBACK 0x97) or "drop-oldest"; counted and reported as events
topic_alias_maximum = 64         # MQTT 5 topic aliases a client may use
max_outbound_topic_aliases = 64  # MQTT 5 topic aliases Tollgate uses towards a client that
                                 # allows them (its most sent topics); 0 = none
max_keep_alive = 0               # seconds; 0 accepts the client's value
max_session_expiry_secs = 604800 # cap on session expiry; also 3.1.1 persistent sessions
client_id = "exact"              # "exact": client id = certificate device id; "prefix"; "any"
handshake_timeout_secs = 10      # TLS handshake + CONNECT must finish within this
max_handshakes_per_ip = 64       # concurrent unfinished handshakes per source (address prefix,
                                 # see [limits]); a newcomer evicts the least progressed one
max_connections = 100000
max_topic_levels = 128           # deeper topics and filters are refused
max_retained_messages = 100000   # retained publishes to new topics beyond this are refused
max_retained_bytes = 268435456   # all retained messages together; over it: refused (v5: 0x97)
max_retained_per_device = 1000   # retained messages one device may have published
max_retained_bytes_per_device = 4194304   # retained bytes one device may have published
write_timeout_secs = 30          # a client that takes nothing we send for this long is disconnected
max_subscriptions_per_session = 1000   # more get SUBACK 0x97 (quota exceeded)
max_subscription_bytes_per_session = 131072   # bytes of topic filters per session; more: 0x97
max_filter_bytes = 1024          # longest topic filter; longer ones get SUBACK 0x8F
packet_timeout_secs = 30         # a packet that has started must be complete within this



[admin]
# The control listener: admin API (admin client certificate), EST enrollment and CRLs, HTTPS.
listen = "127.0.0.1:8443"
max_connections = 256            # concurrent connections (lowered to fit the file limit)
max_connections_per_source = 16  # concurrent connections from one source; beyond: 429
header_timeout_secs = 10         # TLS handshake, then each request's headers (and keep-alive idle)
body_timeout_secs = 10           # a request body must arrive within this
max_body_bytes = 65536           # admin API request bodies
max_csr_bytes = 16384            # EST request bodies (base64 PKCS#10)
max_document_bytes = 67108864    # SBOM, VEX and advisory-batch uploads (64 MiB)
document_timeout_secs = 120      # a document upload must arrive within this

[tls]
min_version = "1.2"              # "1.2" (ECDHE + AEAD suites only) or "1.3"

[policy]
file = "policy.toml"             # reloaded on change and on SIGHUP
watch_interval_ms = 1000

[compliance]
profile = "compliance.toml"      # supply-chain rules (docs/compliance.md); none: nothing required

[devices]
cert_lifetime_days = 7           # device certificates are short-lived; `tollgate agent renew` renews them
# group_lifetime_days = {{ partners = 1, plcs = 30 }}
# weak_key_blocklist = "weak-keys.txt"   # openssl-vulnkey fingerprints (e.g. Debian 2008 keys)
token_ttl_secs = 3600            # default lifetime of `tollgate device token`
max_token_ttl_secs = 604800      # no token lives longer than this (7 days)
crl_validity_hours = 48          # CRL nextUpdate; re-signed every half interval and on revocation

[sessions]
# Persistent sessions (clean session 0 / session expiry > 0), their QoS 1/2 messages, retained
# messages and wills are kept on disk: a QoS 1/2 PUBACK is sent only once the message is there.
durable = true
file = "sessions.db"

[log]
events_file = "events.log"       # security events, one JSON object per line, numbered by "seq"
event_queue = 16384              # events buffered; an overflow is recorded as "events_dropped"

[metrics]
# Prometheus metrics at http://LISTEN/metrics: fleet-wide figures only, never a device label.
# Plain HTTP on a loopback address only; any other address is served over HTTPS with the
# server certificate.
listen = "127.0.0.1:9898"
enabled = true

[detection]
rules = "detection.toml"         # detectors and rules (docs/detection.md); none: built-in defaults
sample_interval_ms = 10000       # meters and TCP_INFO are read this often (TCP_INFO also at close)

[alerts]
# Alerts go to events.log and GET /api/v1/alerts; also to these webhooks, as Alertmanager
# (version 4) JSON. http:// only to loopback; https:// verified against webhook_ca.
webhooks = []
# webhook_ca = "receiver-ca.pem"
webhook_queue = 1024             # notifications waiting per receiver; beyond: the oldest dropped
webhook_attempts = 8             # retried with backoff from 1 s (capped at 60 s)
webhook_timeout_secs = 5

[audit]
# Every security event, in a tamper-evident Merkle-tree log with signed checkpoints
# (docs/audit.md). Control actions take effect only once their entry is on disk.
enabled = true
dir = "audit"                    # entries.jsonl, checkpoints, the tree
key = "audit.key"                # Ed25519 signing key, created 0600; `tollgate audit key` prints the public key
# origin = "gateway-1.example/tollgate-audit"   # default: <host name>/tollgate-audit
checkpoint_interval_ms = 5000    # a signed checkpoint this often when entries were added
queue = 65536                    # events waiting to be written; an overflow is an audit_gap entry
# The configuration audit (`tollgate audit config`, GET /api/v1/findings) runs this often:
config_interval_secs = 300
cert_expiry_days = 30            # CA, server and admin certificates expiring sooner are a finding
max_cert_age_days = 398          # certificates in use for longer are a finding
dormant_days = 30                # devices not seen for longer are a finding

[limits]
# What a source may claim before it has authenticated, on both listeners.
source_prefix_v4 = 32            # one source = one IPv4 /32 ...
source_prefix_v6 = 64            # ... or one IPv6 /64
connect_rate_per_source = 50     # new connections per second per source and listener (0: no limit)
connect_burst_per_source = 200   # ... after a burst of this many
max_handshakes = 4096            # unfinished MQTT handshakes overall
refusals_logged_per_source = 5   # refusals logged one by one per source, reason and interval;
refusal_summary_secs = 10        # the rest are counted in a "refusals_summarized" event

[dashboard]
# The web dashboard at https://ADMIN-LISTEN/dashboard/ (docs/dashboard.md). Browsers sign in
# with a one-time URL from `tollgate dashboard login`, which becomes a session cookie.
login_ttl_secs = 300             # a sign-in URL works this long (--ttl asks for another) ...
max_login_ttl_secs = 3600        # ... and never longer than this (at most an hour)
session_idle_secs = 1800         # a session unused this long ends
session_max_secs = 43200         # a session ends this long after sign-in, used or not
max_sessions = 64                # beyond: a new sign-in ends the least recently used session
max_pending_logins = 64          # sign-in URLs outstanding; beyond: the oldest stops working
max_streams = 32                 # live-update streams (server-sent events) at once
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses_to_the_defaults() {
        let raw: FileConfig =
            toml::from_str(&default_config_toml(&["localhost".into()], &[])).unwrap();
        let c = Config::resolve(Path::new("/d"), raw).unwrap();
        assert_eq!(c.mqtt_listen.port(), 8883);
        assert_eq!(c.policy_file, Path::new("/d/policy.toml"));
        assert!(!c.tls13_only);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<FileConfig>("[mqtt]\nlisten_addr = 1").is_err());
        let raw: FileConfig = toml::from_str("[mqtt]\nclient_id = \"sometimes\"").unwrap();
        assert!(Config::resolve(Path::new("/d"), raw).is_err());
    }
}
