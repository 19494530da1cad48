//! Typed security events and the bus that carries them, numbered for an audit log.
//!
//! Owns the [`Event`] vocabulary (every security decision Tollgate makes: connections accepted
//! and refused with their reason, authorization denials, revocations, policy reloads, malformed
//! input, server start and stop) and its transport:
//!
//! - [`EventBus`], the emitting side: cheap to clone, used from many threads at once. `emit`
//!   never blocks and takes no lock (a `try_send` plus atomic counters): when the queue is full,
//!   or the bus is shutting down, the event is dropped and counted.
//! - [`Dispatcher`], one task that takes events off the bus in order, gives each its sequence
//!   number (contiguous and increasing in the order events are forwarded), records every loss
//!   as an explicit [`EventKind::EventsDropped`] event, and hands each event to every
//!   [`Consumer`].
//! - [`Consumer`], one bounded queue per reader (the JSON log writer today; the audit log and
//!   the detectors later). The dispatcher never waits on a consumer: a consumer whose queue is
//!   full misses events, and is told exactly which ones with a [`Delivery::Gap`].
//!
//! - [`EventBus::emit_durable`], for control actions that must be *written ahead*: the event
//!   takes the same path and the same numbering, but the caller waits until the one *durable*
//!   consumer (the audit log, registered with [`Dispatcher::durable_consumer`]) has made it
//!   durable, and learns its sequence number; if it cannot be recorded the caller is told and
//!   must not act. Only the control plane uses it, never a session.
//!
//! [`EventBus::shutdown`] ends it all without losing anything already queued.
//!
//! It must not do I/O itself: writing lines to a file is the consumer's job.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch, Notify};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to Tollgate's issuing CA.
    UnknownCa,
    /// The certificate is outside its validity period.
    Expired,
    /// The certificate's serial is revoked.
    Revoked,
    /// The certificate is valid but names no device we know.
    UnknownDevice,
    /// Any other certificate problem.
    BadCertificate,
    /// The TLS handshake failed for a reason that is not about the certificate.
    TlsError,
    /// The MQTT client id does not agree with the certificate's device id.
    ClientIdMismatch,
    /// The MQTT client id is refused whatever the certificate: an MQTT 3.1.1 zero-length client
    /// id with CleanSession = 0 (a session that outlives the connection needs a name the client
    /// can ask for again; MQTT-3.1.3-8).
    ClientIdRejected,
    /// The first packet was malformed or not a CONNECT.
    MalformedPacket,
    /// Unsupported MQTT protocol version.
    UnsupportedProtocol,
    /// TLS handshake plus CONNECT did not finish in time.
    Timeout,
    /// Too many handshakes in progress from one source (address prefix), or overall; or this
    /// handshake made the least progress of its source's when a newcomer needed the slot.
    TooManyHandshakes,
    /// The source (address prefix) opened connections faster than its connect rate.
    RateLimited,
    /// The listener is at its connection limit (overall or for this source).
    ConnectionLimit,
    /// The client asked for an authentication method we do not offer.
    BadAuthMethod,
    /// The device is not allowed to connect by policy (it is granted nothing at all... reserved).
    NotAuthorized,
    /// The server is shutting down.
    ShuttingDown,
}

impl RefusalReason {
    /// The reason's name, as it appears in events (`"too_many_handshakes"`).
    pub fn as_str(self) -> &'static str {
        use RefusalReason as R;
        match self {
            R::NoCertificate => "no_certificate",
            R::UnknownCa => "unknown_ca",
            R::Expired => "expired",
            R::Revoked => "revoked",
            R::UnknownDevice => "unknown_device",
            R::BadCertificate => "bad_certificate",
            R::TlsError => "tls_error",
            R::ClientIdMismatch => "client_id_mismatch",
            R::ClientIdRejected => "client_id_rejected",
            R::MalformedPacket => "malformed_packet",
            R::UnsupportedProtocol => "unsupported_protocol",
            R::Timeout => "timeout",
            R::TooManyHandshakes => "too_many_handshakes",
            R::RateLimited => "rate_limited",
            R::ConnectionLimit => "connection_limit",
            R::BadAuthMethod => "bad_auth_method",
            R::NotAuthorized => "not_authorized",
            R::ShuttingDown => "shutting_down",
        }
    }
}

/// One security-relevant fact.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A device completed TLS and CONNECT.
    ConnectionAccepted {
        /// Device id from the certificate.
        device: String,
        /// MQTT client id.
        client_id: String,
        /// "3.1.1" or "5.0".
        protocol: &'static str,
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Certificate serial (hex).
        serial: String,
        /// Whether an existing session was resumed.
        session_present: bool,
        /// Whether the TLS session was resumed.
        tls_resumed: bool,
    },
    /// A connection was refused, at TLS or at CONNECT.
    ConnectionRefused {
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Device id, when the certificate was readable.
        device: Option<String>,
        /// Why.
        reason: RefusalReason,
        /// Detail for the operator.
        detail: String,
    },
    /// A connection ended.
    Disconnected {
        /// Device id.
        device: String,
        /// MQTT client id.
        client_id: String,
        /// Why, in words (e.g. "client disconnect", "keep-alive timeout").
        reason: String,
        /// Whether the will message was published.
        will_published: bool,
    },
    /// A PUBLISH was refused by policy.
    PublishDenied {
        /// Device id.
        device: String,
        /// Topic.
        topic: String,
        /// QoS of the refused message.
        qos: u8,
        /// "publish", "will" or "redelivery".
        what: &'static str,
        /// The quarantine reasons, when the device was denied because it is quarantined.
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantine: Option<String>,
        /// The id of the deny rule that refused it (`allow[N]`/`deny[N]` for a rule without
        /// an id); absent when no rule grants it (the default deny) or for a cap, not a rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// A SUBSCRIBE filter was refused by policy.
    SubscribeDenied {
        /// Device id.
        device: String,
        /// Filter.
        filter: String,
        /// The quarantine reasons, when the device was denied because it is quarantined.
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantine: Option<String>,
        /// The id of the deny rule that refused it (`allow[N]`/`deny[N]` for a rule without
        /// an id); absent when no rule grants it (the default deny) or for a cap, not a rule.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    /// A live subscription was removed because the policy no longer allows it.
    SubscriptionRevoked {
        /// Device id.
        device: String,
        /// Filter.
        filter: String,
        /// The quarantine reasons, when it was removed because the device was quarantined.
        #[serde(skip_serializing_if = "Option::is_none")]
        quarantine: Option<String>,
    },
    /// A subscription was granted, or kept after a policy or access change, with topics
    /// withheld: its filter overlaps deny rules, so messages on the topics they match are never
    /// delivered through it. Once per SUBSCRIBE or change of what it withholds, never per
    /// message (withheld messages are counted in `tollgate_messages_filtered_total`).
    SubscriptionFiltered {
        /// Device id.
        device: String,
        /// Filter, as subscribed (`$share/GROUP/...` included).
        filter: String,
        /// The deny patterns it withholds, instantiated for the device (`secrets/#`); empty when
        /// a change made it unfiltered again.
        withheld: Vec<String>,
        /// The deny rule of each withheld pattern, in the same order.
        rules: Vec<String>,
    },
    /// Malformed or oversized input from a connected client.
    MalformedPacket {
        /// Device id.
        device: String,
        /// Remote address.
        addr: Option<SocketAddr>,
        /// What was wrong.
        error: String,
        /// MQTT reason code sent (0 when the connection was simply closed).
        reason_code: u8,
    },
    /// A protocol violation that is not malformed bytes (keep-alive timeout, receive maximum exceeded...).
    ProtocolViolation {
        /// Device id.
        device: String,
        /// What happened.
        detail: String,
        /// MQTT reason code sent.
        reason_code: u8,
    },
    /// A session was taken over by a new connection with the same client id.
    SessionTakenOver {
        /// Device id.
        device: String,
        /// Client id.
        client_id: String,
    },
    /// A device was registered and a certificate issued.
    DeviceAdded {
        /// Device id.
        device: String,
        /// Its groups.
        groups: Vec<String>,
        /// Serial of the certificate issued.
        serial: String,
        /// Who asked.
        by: String,
    },
    /// A device's certificates were revoked.
    DeviceRevoked {
        /// Device id.
        device: String,
        /// Revoked serials.
        serials: Vec<String>,
        /// Reason given.
        reason: String,
        /// Who asked.
        by: String,
        /// Live connections closed because of it.
        sessions_closed: usize,
    },
    /// A live connection was closed by the control plane.
    SessionClosed {
        /// Device id.
        device: String,
        /// Client id.
        client_id: String,
        /// Why.
        reason: String,
    },
    /// A new policy was loaded and is in force.
    PolicyReloaded {
        /// Source file.
        source: String,
        /// Number of rules.
        rules: usize,
        /// Lint warnings in the policy now in force (each is a `policy_warning` event).
        #[serde(default)]
        warnings: usize,
    },
    /// A lint warning about the policy just put in force (it is valid, but probably not what
    /// was meant: a grant of `#` to everyone, a dead or duplicate grant...).
    PolicyWarning {
        /// Source file.
        source: String,
        /// The rule concerned (`allow[N]` without an id).
        rule: String,
        /// Its line in the file.
        line: usize,
        /// What lint says.
        message: String,
    },
    /// An operator put a new policy version in force through the admin API (an update or a
    /// rollback); a `policy_reloaded` event precedes it.
    PolicyUpdated {
        /// The new version.
        version: u64,
        /// SHA-256 of its text, hex.
        sha256: String,
        /// Number of rules.
        rules: usize,
        /// The version whose text it restored, for a rollback.
        #[serde(skip_serializing_if = "Option::is_none")]
        rollback_of: Option<u64>,
        /// The operator.
        by: String,
    },
    /// A new policy file was rejected; the last good one stays in force.
    PolicyRejected {
        /// Source file.
        source: String,
        /// Line-precise errors.
        error: String,
    },
    /// A one-time enrollment token was issued.
    EnrollmentTokenIssued {
        /// Device the token is for.
        device: String,
        /// Unix seconds.
        expires_at: i64,
        /// Who asked.
        by: String,
    },
    /// A device obtained a certificate through EST.
    DeviceEnrolled {
        /// Device id.
        device: String,
        /// Serial of the new certificate.
        serial: String,
        /// "token", "bootstrap" or "reenroll".
        method: &'static str,
        /// Whether this renewed an existing certificate.
        renewal: bool,
    },
    /// A supplier's manufacturing CA was registered for bootstrap enrollment.
    SupplierAdded {
        /// Supplier name.
        supplier: String,
        /// Who asked.
        by: String,
    },
    /// An EST request was refused.
    EnrollmentRefused {
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Device, when known.
        device: Option<String>,
        /// Why.
        reason: String,
    },
    /// An admin API request was refused.
    AdminDenied {
        /// Remote address.
        addr: Option<SocketAddr>,
        /// Why.
        detail: String,
    },
    /// An operator issued a one-time dashboard sign-in URL (`tollgate dashboard login`).
    DashboardLoginIssued {
        /// The operator who asked for it (the session will act in this name).
        by: String,
        /// `admin` or `viewer`.
        role: String,
        /// When the URL stops working, RFC 3339.
        expires_at: String,
    },
    /// A browser signed in to the dashboard with a one-time URL and got a session.
    DashboardSignedIn {
        /// The operator the session acts for (who issued the URL).
        by: String,
        /// `admin` or `viewer`.
        role: String,
        /// The browser's address.
        addr: Option<SocketAddr>,
    },
    /// A dashboard sign-in was refused (unknown, used or expired token).
    DashboardSignInRefused {
        /// The browser's address.
        addr: Option<SocketAddr>,
        /// Why.
        reason: String,
    },
    /// A dashboard session ended: signed out, idle too long, past its lifetime, or evicted.
    DashboardSignedOut {
        /// The operator the session acted for.
        by: String,
        /// `signed_out`, `idle`, `expired` or `evicted`.
        reason: String,
    },
    /// A session's message queue reached its limit (reported once until it drains).
    QueueFull {
        /// Device id.
        device: String,
        /// Client id.
        client_id: String,
        /// "rejected" (new messages refused) or "dropped_oldest".
        action: &'static str,
    },
    /// The durable store cannot write (a full disk, say): QoS 1/2 messages for persistent
    /// sessions are refused until it can.
    StorageUnavailable {
        /// The store's error.
        error: String,
    },
    /// The durable store writes again.
    StorageRecovered {
        /// How long it was unavailable, milliseconds.
        after_ms: u64,
    },
    /// Persistent sessions, queues and retained messages were restored on start.
    SessionsRestored {
        /// Sessions restored.
        sessions: usize,
        /// Queued messages restored.
        messages: usize,
        /// Retained messages restored.
        retained: usize,
        /// Sessions dropped because they expired while the broker was down.
        expired: usize,
    },
    /// A revoked device was brought back by an operator (explicitly).
    DeviceReactivated {
        /// Device id.
        device: String,
        /// Its groups before it was revoked.
        groups_before: Vec<String>,
        /// Its groups now.
        groups: Vec<String>,
        /// Who asked.
        by: String,
    },
    /// An existing device's groups were changed (by an operator, or by an enrollment token
    /// issued for that); its live connections were re-checked against them.
    DeviceGroupsChanged {
        /// Device id.
        device: String,
        /// Groups before.
        from: Vec<String>,
        /// Groups after.
        to: Vec<String>,
        /// Who or what changed them.
        by: String,
    },
    /// An operator changed a device's labels (free key=value metadata).
    DeviceLabelsChanged {
        /// Device id.
        device: String,
        /// Labels set (added or replaced), key to value.
        set: std::collections::BTreeMap<String, String>,
        /// Keys removed.
        removed: Vec<String>,
        /// Who.
        by: String,
    },
    /// A device was deleted: its certificates revoked, its live connections closed, its
    /// record removed (its id may be registered again as a new device).
    DeviceDeleted {
        /// Device id.
        device: String,
        /// Serials revoked now.
        serials: Vec<String>,
        /// Why.
        reason: String,
        /// Who.
        by: String,
        /// Live connections closed.
        sessions_closed: usize,
    },
    /// An operator of the admin API was registered and given a certificate.
    OperatorAdded {
        /// Operator name.
        operator: String,
        /// `admin` or `viewer`.
        role: String,
        /// Serial of its certificate.
        serial: String,
        /// Unix seconds.
        not_after: i64,
        /// Who.
        by: String,
    },
    /// An operator was revoked, with every certificate it held.
    OperatorRevoked {
        /// Operator name.
        operator: String,
        /// Serials revoked.
        serials: Vec<String>,
        /// Why.
        reason: String,
        /// Who.
        by: String,
    },
    /// An operator was given a new certificate.
    OperatorRenewed {
        /// Operator name.
        operator: String,
        /// Serial of the new certificate.
        serial: String,
        /// Unix seconds.
        not_after: i64,
        /// Older certificates revoked with the renewal (none unless asked).
        revoked_old: Vec<String>,
        /// Who.
        by: String,
    },
    /// An operator's role changed (in force from its next request).
    OperatorRoleChanged {
        /// Operator name.
        operator: String,
        /// Role before.
        from: String,
        /// Role after.
        to: String,
        /// Who.
        by: String,
    },
    /// The gateway's server certificate was renewed and swapped into both listeners.
    ServerCertificateRenewed {
        /// Serial of the new certificate.
        serial: String,
        /// Serial of the one it replaced, when readable.
        previous: Option<String>,
        /// Unix seconds.
        not_after: i64,
        /// DNS names and IP addresses it carries.
        names: Vec<String>,
        /// Who.
        by: String,
    },
    /// A device was quarantined (or a quarantine reason updated): it stays connected, confined
    /// to the quarantine policy.
    DeviceQuarantined {
        /// Device id.
        device: String,
        /// Who holds this reason: `operator`, `compliance:RULE`, `detector:NAME`.
        source: String,
        /// Why.
        reason: String,
        /// Who asked.
        by: String,
        /// Reasons holding now.
        reasons: usize,
    },
    /// Quarantine reasons were removed; the device is released once none remains.
    DeviceReleased {
        /// Device id.
        device: String,
        /// Sources whose reasons were removed.
        sources: Vec<String>,
        /// Sources still holding it (empty: released).
        remaining: Vec<String>,
        /// Who asked.
        by: String,
    },
    /// A device's publishes were capped (a mitigation); the throttle lifts itself after
    /// `ttl_secs`.
    DeviceThrottled {
        /// Device id.
        device: String,
        /// Publishes per second allowed.
        per_second: u32,
        /// How long it holds, seconds.
        ttl_secs: u64,
        /// Who asked (`detector:NAME alert ID`, or an operator).
        by: String,
    },
    /// A device's live connections were closed (a mitigation; it may reconnect).
    DeviceDisconnected {
        /// Device id.
        device: String,
        /// Connections closed.
        connections: usize,
        /// Why.
        reason: String,
        /// Who asked.
        by: String,
    },
    /// A detector's alert was raised, changed or cleared.
    Alert {
        /// Alert id (stable across its updates).
        id: String,
        /// Detector name (`cloned_certificate`, ..., `network_degradation`, `rule:NAME`).
        detector: String,
        /// Device id; null for a fleet- or cohort-wide alert.
        device: Option<String>,
        /// `low`, `medium`, `high` or `critical`.
        severity: String,
        /// `active` or `cleared`.
        state: String,
        /// RFC 3339 time the alert started.
        started_at: String,
        /// What was measured.
        metric: String,
        /// The value seen.
        observed: f64,
        /// The baseline it was judged against (median of the device or of its cohort), if any.
        baseline: Option<f64>,
        /// The threshold it crossed.
        threshold: f64,
        /// What was done: `notify`, `throttle`, `quarantine`, `disconnect`, `revoke` (with why
        /// not, when a mitigation was held back).
        mitigation: String,
        /// The cohort it was judged against or concerns, e.g. `model:Scanner-X2`.
        #[serde(skip_serializing_if = "Option::is_none")]
        cohort: Option<String>,
        /// One sentence: what was seen against what was expected.
        explanation: String,
    },
    /// An operator judged an alert.
    AlertVerdict {
        /// Alert id.
        id: String,
        /// `true_positive`, `false_positive` or `benign_positive`.
        verdict: String,
        /// Who.
        by: String,
    },
    /// An alert suppression was added or removed.
    AlertSuppression {
        /// Suppression id.
        id: String,
        /// Detector it covers (null: all).
        detector: Option<String>,
        /// Device it covers (null: all).
        device: Option<String>,
        /// RFC 3339 expiry.
        until: String,
        /// `added` or `removed`.
        change: &'static str,
        /// Who.
        by: String,
    },
    /// The detection rules (`detection.toml`) were loaded.
    DetectionRulesReloaded {
        /// Custom rules in force.
        rules: usize,
        /// Named detectors enabled.
        detectors: usize,
    },
    /// A new detection rules file was rejected; the previous rules stay in force.
    DetectionRulesRejected {
        /// Why.
        error: String,
    },
    /// A device's compliance verdict changed: the rules it fails now (in force, not waived or
    /// within a grace period), with the advisories behind them and the advisory database they
    /// were matched against.
    ComplianceChanged {
        /// Device id.
        device: String,
        /// Whether no rule is violated now.
        compliant: bool,
        /// Rules violated now.
        failing: Vec<String>,
        /// Rules violated before.
        previously_failing: Vec<String>,
        /// Of `failing`, the rules whose action is `quarantine`.
        quarantining: Vec<String>,
        /// Advisory ids behind the violations.
        advisories: Vec<String>,
        /// Content hash of the advisory database (`sha256:...`).
        database: String,
        /// What triggered the evaluation (`connect`, `firmware_report`, `advisory_import`...).
        trigger: String,
    },
    /// A device's inventory changed (by its own report or by an operator).
    InventoryChanged {
        /// Device id.
        device: String,
        /// Firmware before.
        #[serde(skip_serializing_if = "Option::is_none")]
        firmware_before: Option<String>,
        /// Firmware now.
        #[serde(skip_serializing_if = "Option::is_none")]
        firmware: Option<String>,
        /// Model now.
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// `device` (its own report) or the operator's name.
        by: String,
    },
    /// An SBOM was imported for a model's firmware.
    SbomImported {
        /// Supplier.
        supplier: String,
        /// Model.
        model: String,
        /// Firmware version.
        firmware: String,
        /// Format and version.
        format: String,
        /// Components listed.
        components: usize,
        /// `sha256:` of the file.
        document: String,
        /// Who imported it.
        by: String,
    },
    /// OSV advisories were imported.
    AdvisoriesImported {
        /// New records.
        added: usize,
        /// Records replaced by a newer `modified`.
        updated: usize,
        /// Records skipped (not newer than the stored ones).
        unchanged: usize,
        /// Content hash of the database after the import.
        database: String,
        /// Devices re-evaluated because the import could affect them.
        reevaluated: usize,
        /// Who imported them.
        by: String,
    },
    /// VEX statements were imported.
    VexImported {
        /// Statements.
        statements: usize,
        /// The format.
        format: String,
        /// The model they are scoped to.
        model: String,
        /// Who imported them.
        by: String,
    },
    /// A compliance waiver was granted, removed or expired.
    WaiverChanged {
        /// Waiver id.
        id: i64,
        /// Rule.
        rule: String,
        /// The device or `model:NAME` it covers.
        covers: String,
        /// `added`, `removed` or `expired`.
        change: &'static str,
        /// Who (the author, or `compliance` for an expiry).
        by: String,
    },
    /// The compliance profile was loaded.
    ComplianceProfileReloaded {
        /// The file.
        source: String,
        /// Rules in it.
        rules: usize,
    },
    /// The compliance profile was refused; the previous one stays in force.
    ComplianceProfileRejected {
        /// The file.
        source: String,
        /// Every problem, with line and column.
        error: String,
    },
    /// The server is up: its listeners are bound.
    ServerStarted {
        /// Tollgate's version.
        version: String,
        /// Process id.
        pid: u32,
    },
    /// The server is shutting down.
    ServerStopping {
        /// Why (e.g. "signal").
        reason: String,
    },
    /// Refusals that repeated: after the first few from one source for one reason in an
    /// interval are recorded individually, the rest are counted, and this record gives the count
    /// when the interval ends. Individual records plus summaries account for every refusal.
    RefusalsSummarized {
        /// "mqtt" or "control".
        listener: &'static str,
        /// The source: an address prefix (`203.0.113.7/32`, `2001:db8:1:2::/64`), or `*` for
        /// sources beyond the aggregator's table.
        source: String,
        /// The refusal reason (as in `connection_refused`, or the HTTP status and reason for the
        /// control listener).
        reason: String,
        /// Refusals counted and not recorded individually in this interval.
        count: u64,
        /// Length of the interval, seconds.
        interval_secs: u64,
        /// The last refusal's detail, as an example.
        example: String,
    },
    /// A control action is about to take effect (revocation, quarantine, release, policy or
    /// profile change, CA operation, admin action). Written ahead: the action waits until this
    /// entry is durable in the audit log, and does not happen if it cannot be recorded. The
    /// event that reports the outcome follows.
    ControlAction {
        /// What is done (`revoke_device`, `quarantine`, `release`, `reload_policy`, ...).
        action: String,
        /// What it is done to (a device id, a file, a supplier...).
        subject: String,
        /// Who asked (an operator's certificate name, `detector:<name>`, `ttl`, `file`).
        by: String,
        /// Why, or what exactly (a reason, a file's SHA-256): free text.
        detail: String,
    },
    /// The audit log contradicts a checkpoint it signed (it was truncated, edited or restored
    /// from an older copy): it keeps recording but refuses to sign until an operator acts.
    /// Critical.
    AuditLogInconsistent {
        /// What was found.
        reason: String,
    },
    /// The configuration audit found something new (or something came back).
    FindingOpened {
        /// `<rule>:<resource>`.
        id: String,
        /// The rule (`key-file-permissions`, `policy-broad-grant`, ...).
        rule: String,
        /// `info`, `low`, `medium`, `high` or `critical`.
        severity: String,
        /// What it is about.
        resource: String,
        /// What was seen.
        evidence: String,
    },
    /// A finding of the configuration audit no longer holds.
    FindingResolved {
        /// `<rule>:<resource>`.
        id: String,
        /// The rule.
        rule: String,
        /// What it was about.
        resource: String,
    },
    /// A suppression of configuration-audit findings was added or removed.
    FindingSuppression {
        /// The suppression's id.
        id: String,
        /// The rule it silences.
        rule: String,
        /// The resource, or every resource of the rule.
        resource: Option<String>,
        /// `added` or `removed`.
        change: &'static str,
        /// Why.
        reason: String,
        /// Who.
        by: String,
        /// Until when (RFC 3339).
        until: String,
    },
    /// Events were lost: the bus was full (or shutting down) when they were emitted. Inserted by
    /// the dispatcher, with its own sequence number, before the next event it forwards (or at
    /// shutdown), so a loss is never silent.
    EventsDropped {
        /// How many events were lost.
        count: u64,
        /// The last sequence number forwarded before the loss (the loss lies between it and
        /// this record's own `seq`); `first_seq - 1` (0 on a fresh log) when nothing was
        /// forwarded yet.
        after_seq: u64,
    },
}

/// An event with its sequence number and time stamp.
///
/// Serialized as one JSON object with `seq` first: `{"seq":12,"ts":"...","type":"...",...}`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Position in the event log, given by the [`Dispatcher`]: contiguous and increasing in the
    /// order events are forwarded. 0 for an event that was never dispatched ([`Event::now`]).
    pub seq: u64,
    /// RFC 3339 UTC time, taken when the event was emitted. Emitters run concurrently, so two
    /// events close in time may carry time stamps out of `seq` order.
    pub ts: String,
    /// The fact.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// Stamp `kind` with the current time; `seq` is 0 (not yet dispatched).
    pub fn now(kind: EventKind) -> Event {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Event { seq: 0, ts, kind }
    }

    /// One JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"type\":\"unserializable\",\"error\":\"{e}\"}}"))
    }
}

/// What a [`Consumer`] receives.
#[derive(Debug)]
pub enum Delivery {
    /// The next event, in `seq` order.
    Event(Arc<Event>),
    /// The next event, in `seq` order, whose emitter waits until it is durable: only the
    /// durable consumer receives these (others get [`Delivery::Event`]); it calls
    /// [`Ack::durable`] once the event is on stable storage.
    Durable(Arc<Event>, Ack),
    /// This consumer's queue was full: it missed the `count` events numbered `first_seq` to
    /// `last_seq` (inclusive; other consumers may have received them). Comes before any later
    /// event.
    Gap {
        /// First missed sequence number.
        first_seq: u64,
        /// Last missed sequence number.
        last_seq: u64,
        /// How many events were missed (`last_seq - first_seq + 1`).
        count: u64,
        /// Among them, `events_dropped` records: the sum of their counts (events lost on the
        /// bus that this consumer would otherwise never hear of), so no loss goes unaccounted.
        dropped_within: u64,
    },
}

/// An event on its way from an emitter to the dispatcher.
#[derive(Debug)]
struct Queued {
    event: Event,
    /// The bus's drop counter just before this event was queued: drops up to this count are
    /// recorded before the event.
    dropped_before: u64,
    /// Set for [`EventBus::emit_durable`].
    ack: Option<Ack>,
}

/// The promise a durable consumer keeps to an [`EventBus::emit_durable`] caller: call
/// [`Ack::durable`] once the event is on stable storage. Dropping it unfulfilled tells the
/// caller the event was not recorded.
#[derive(Debug)]
pub struct Ack {
    tx: std::sync::mpsc::SyncSender<u64>,
    seq: u64,
}

impl Ack {
    /// The event is durable: release its emitter.
    pub fn durable(self) {
        // The emitter may have given up waiting; nothing to do then.
        let _ = self.tx.try_send(self.seq);
    }
}

/// Why [`EventBus::emit_durable`] could not confirm its event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotRecorded {
    /// The bus is shutting down or gone.
    #[error("the event bus is shut down")]
    Closed,
    /// The durable consumer could not take the event (its queue was full) or failed to store it.
    #[error("the audit log could not record the event")]
    Refused,
    /// No confirmation within the time allowed (the event may still be recorded later).
    #[error("the audit log did not confirm the event within {0:?}")]
    Timeout(std::time::Duration),
}

/// State shared by every bus handle and the dispatcher. Atomics only: emitters never lock.
#[derive(Debug, Default)]
struct Shared {
    /// Set by [`EventBus::shutdown`]: emits are refused from then on.
    closed: AtomicBool,
    /// Wakes the dispatcher when `closed` is set.
    close: Notify,
    dropped: AtomicU64,
    emitted: AtomicU64,
    /// Set when a durable consumer is registered: only then do durable emits wait.
    durable: AtomicBool,
}

/// The emitting side of the bus: cheap to clone, never blocks, takes no lock.
#[derive(Clone, Debug)]
pub struct EventBus {
    tx: mpsc::Sender<Queued>,
    /// Durable emits: unbounded (their emitters wait, so they are few), never dropped.
    durable_tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
    /// Becomes true when the dispatcher has finished (or is gone: the sender is dropped).
    finished: watch::Receiver<bool>,
}

impl EventBus {
    /// A bus holding at most `capacity` events not yet taken by the dispatcher, and its
    /// dispatcher, which numbers events from `first_seq` (0 is reserved for undispatched events:
    /// a `first_seq` of 0 counts as 1). Register consumers on the dispatcher, then spawn
    /// [`Dispatcher::run`].
    pub fn new(capacity: usize, first_seq: u64) -> (EventBus, Dispatcher) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (durable_tx, durable_rx) = mpsc::unbounded_channel();
        let (finished_tx, finished) = watch::channel(false);
        let shared = Arc::new(Shared::default());
        let first_seq = first_seq.max(1);
        let bus = EventBus {
            tx,
            durable_tx,
            shared: Arc::clone(&shared),
            finished,
        };
        let dispatcher = Dispatcher {
            rx,
            durable_rx,
            durable: None,
            shared,
            finished: finished_tx,
            consumers: Vec::new(),
            next_seq: first_seq,
            last_seq: first_seq - 1,
            reported_drops: 0,
        };
        (bus, dispatcher)
    }

    /// Emit an event, time-stamped now. Never blocks: a full bus, or one that is shutting down,
    /// drops the event and counts it (the dispatcher then records the loss in the stream).
    pub fn emit(&self, kind: EventKind) {
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let event = Event::now(kind);
        let dropped_before = s.dropped.load(Ordering::Relaxed);
        match self.tx.try_send(Queued {
            event,
            dropped_before,
            ack: None,
        }) {
            Ok(()) => {
                s.emitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Emit an event and wait, blocking this thread for at most `timeout`, until the durable
    /// consumer has stored it; returns its sequence number. With no durable consumer registered
    /// (no audit log: the control plane used as a library offline, or the log disabled) it is
    /// an ordinary [`EventBus::emit`] and returns 0 at once. For control actions written ahead
    /// of their effect: on an error the caller must not act. Never call it from a session or an
    /// async task (it blocks the thread).
    pub fn emit_durable(
        &self,
        kind: EventKind,
        timeout: std::time::Duration,
    ) -> Result<u64, NotRecorded> {
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(NotRecorded::Closed);
        }
        if !s.durable.load(Ordering::Acquire) {
            self.emit(kind);
            return Ok(0);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let queued = Queued {
            event: Event::now(kind),
            dropped_before: s.dropped.load(Ordering::Relaxed),
            ack: Some(Ack { tx, seq: 0 }),
        };
        if self.durable_tx.send(queued).is_err() {
            return Err(NotRecorded::Closed);
        }
        s.emitted.fetch_add(1, Ordering::Relaxed);
        match rx.recv_timeout(timeout) {
            Ok(seq) => Ok(seq),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(NotRecorded::Timeout(timeout)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(NotRecorded::Refused),
        }
    }

    /// [`EventBus::emit_durable`] for several events at once: they are queued 128 at a time
    /// and each chunk is waited for together (the durable consumer's group commit stores a
    /// chunk in one write and one `fsync` instead of one each), so the durable consumer's queue
    /// must hold 128; `timeout` bounds the whole wait. Returns their sequence numbers, in
    /// order. On an error some of them may have been stored: the caller must not act on any.
    pub fn emit_durable_all(
        &self,
        kinds: Vec<EventKind>,
        timeout: std::time::Duration,
    ) -> Result<Vec<u64>, NotRecorded> {
        /// Events in flight at once: well within a durable consumer's reserve, so a large
        /// batch cannot overflow its queue and be refused.
        const CHUNK: usize = 128;
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(NotRecorded::Closed);
        }
        if !s.durable.load(Ordering::Acquire) {
            let n = kinds.len();
            for kind in kinds {
                self.emit(kind);
            }
            return Ok(vec![0; n]);
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut seqs = Vec::with_capacity(kinds.len());
        let mut kinds = kinds.into_iter().peekable();
        while kinds.peek().is_some() {
            let mut waits = Vec::with_capacity(CHUNK);
            for kind in kinds.by_ref().take(CHUNK) {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let queued = Queued {
                    event: Event::now(kind),
                    dropped_before: s.dropped.load(Ordering::Relaxed),
                    ack: Some(Ack { tx, seq: 0 }),
                };
                if self.durable_tx.send(queued).is_err() {
                    return Err(NotRecorded::Closed);
                }
                s.emitted.fetch_add(1, Ordering::Relaxed);
                waits.push(rx);
            }
            for rx in waits {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(seq) => seqs.push(seq),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        return Err(NotRecorded::Timeout(timeout))
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(NotRecorded::Refused)
                    }
                }
            }
        }
        Ok(seqs)
    }

    /// Stop the bus and wait for the dispatcher to finish.
    ///
    /// From the moment this is called (before the future is first polled) the bus refuses new
    /// events: later emits, from any clone, are dropped and counted. The dispatcher forwards
    /// everything already queued, records any loss in a final [`EventKind::EventsDropped`],
    /// closes every consumer's queue (each consumer then drains it and sees the end), and
    /// finishes; the future resolves then, or at once if the dispatcher is gone. Await the
    /// consumers' own tasks afterwards. Emits that race with the very end of the dispatcher
    /// are counted in [`EventBus::dropped`] but no longer recorded in the stream.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.close.notify_one();
        let mut finished = self.finished.clone();
        async move {
            // An error means the dispatcher is gone, which is finished too.
            let _ = finished.wait_for(|done| *done).await;
        }
    }

    /// Events dropped because the bus was full or shutting down.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Events accepted onto the bus.
    pub fn emitted(&self) -> u64 {
        self.shared.emitted.load(Ordering::Relaxed)
    }
}

/// The single task that numbers events and hands them to every [`Consumer`].
#[derive(Debug)]
pub struct Dispatcher {
    rx: mpsc::Receiver<Queued>,
    durable_rx: mpsc::UnboundedReceiver<Queued>,
    /// The index in `consumers` of the durable consumer, if one is registered.
    durable: Option<usize>,
    shared: Arc<Shared>,
    finished: watch::Sender<bool>,
    consumers: Vec<Outlet>,
    next_seq: u64,
    /// The last sequence number given out (`first_seq - 1` before the first).
    last_seq: u64,
    /// Drops already recorded in an [`EventKind::EventsDropped`].
    reported_drops: u64,
}

impl Dispatcher {
    /// Register a consumer named `name` whose queue holds up to `capacity` deliveries. It
    /// receives every event forwarded from now on, in `seq` order, unless its queue is full:
    /// then it misses events and is told with a [`Delivery::Gap`] before the next one it gets.
    pub fn consumer(&mut self, name: &'static str, capacity: usize) -> Consumer {
        // One slot more than asked, kept free for the gap notice that may be pending at
        // shutdown: events use a slot only when another stays free.
        let (tx, rx) = mpsc::channel(capacity.max(1) + 1);
        let skipped = Arc::new(AtomicU64::new(0));
        self.consumers.push(Outlet {
            tx: Some(tx),
            gap: None,
            skipped: Arc::clone(&skipped),
            reserve: 0,
        });
        Consumer { name, rx, skipped }
    }

    /// Register the durable consumer (at most one: a second call replaces the first's role):
    /// like [`Dispatcher::consumer`], and it also receives the events of
    /// [`EventBus::emit_durable`] as [`Delivery::Durable`], for which `reserve` more slots are
    /// kept in its queue that ordinary events never take.
    pub fn durable_consumer(
        &mut self,
        name: &'static str,
        capacity: usize,
        reserve: usize,
    ) -> Consumer {
        // The reserve has one slot more, for a gap notice that must precede a durable event.
        let reserve = reserve.max(1) + 1;
        self.shared.durable.store(true, Ordering::Release);
        let (tx, rx) = mpsc::channel(capacity.max(1) + 1 + reserve);
        let skipped = Arc::new(AtomicU64::new(0));
        self.durable = Some(self.consumers.len());
        self.consumers.push(Outlet {
            tx: Some(tx),
            gap: None,
            skipped: Arc::clone(&skipped),
            reserve,
        });
        Consumer { name, rx, skipped }
    }

    /// Forward events until [`EventBus::shutdown`] (or until every bus handle is gone), then
    /// forward what is still queued, record any final loss, and close the consumers' queues.
    pub async fn run(mut self) {
        loop {
            // The flag covers a wake-up consumed by a `notified()` dropped by `select!`.
            if self.shared.closed.load(Ordering::Acquire) {
                break;
            }
            tokio::select! {
                biased;
                q = self.durable_rx.recv() => {
                    if let Some(q) = q {
                        self.forward(q);
                    }
                }
                q = self.rx.recv() => match q {
                    Some(q) => self.forward(q),
                    None => break,
                },
                () = self.shared.close.notified() => {}
            }
        }
        // Refuse further sends (a racing emit fails and is counted), then forward everything
        // that made it onto the queue: `recv` ends only once the queue is empty.
        self.rx.close();
        self.durable_rx.close();
        while let Ok(q) = self.durable_rx.try_recv() {
            self.forward(q);
        }
        while let Some(q) = self.rx.recv().await {
            self.forward(q);
        }
        let dropped = self.shared.dropped.load(Ordering::Acquire);
        self.record_drops(dropped);
        for c in &mut self.consumers {
            c.finish();
        }
        // Dropping the senders closes the consumers' queues.
        self.consumers.clear();
        self.finished.send_replace(true);
    }

    fn forward(&mut self, q: Queued) {
        self.record_drops(q.dropped_before);
        match q.ack {
            None => self.dispatch(q.event),
            Some(ack) => self.dispatch_durable(q.event, ack),
        }
    }

    /// Number `event`, hand it to every consumer, and to the durable one with its `ack` (or
    /// confirm it at once when there is no durable consumer).
    fn dispatch_durable(&mut self, mut event: Event, mut ack: Ack) {
        event.seq = self.next_seq;
        self.last_seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        ack.seq = event.seq;
        let event = Arc::new(event);
        let durable = self.durable;
        let mut ack = Some(ack);
        for (i, c) in self.consumers.iter_mut().enumerate() {
            if Some(i) == durable && c.tx.is_some() {
                if let Some(a) = ack.take() {
                    // A durable event the consumer cannot take is missed like any other (and
                    // its emitter hears so when the ack is dropped).
                    c.offer_durable(&event, a);
                }
            } else {
                c.offer(&event);
            }
        }
        // No durable consumer: numbered is all there is to wait for. A durable consumer that is
        // gone: the ack is dropped, and the emitter must not act.
        if let (None, Some(a)) = (durable, ack) {
            a.durable();
        }
    }

    /// Record the drops counted up to `dropped` that are not recorded yet.
    fn record_drops(&mut self, dropped: u64) {
        if dropped <= self.reported_drops {
            return;
        }
        let count = dropped - self.reported_drops;
        self.reported_drops = dropped;
        let after_seq = self.last_seq;
        self.dispatch(Event::now(EventKind::EventsDropped { count, after_seq }));
    }

    fn dispatch(&mut self, mut event: Event) {
        event.seq = self.next_seq;
        self.last_seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let event = Arc::new(event);
        for c in &mut self.consumers {
            c.offer(&event);
        }
    }
}

/// Events one consumer missed and has not been told about yet.
#[derive(Debug, Clone, Copy)]
struct PendingGap {
    first_seq: u64,
    last_seq: u64,
    count: u64,
    dropped_within: u64,
}

impl PendingGap {
    fn delivery(self) -> Delivery {
        Delivery::Gap {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            count: self.count,
            dropped_within: self.dropped_within,
        }
    }
}

/// The dispatcher's end of one consumer's queue.
#[derive(Debug)]
struct Outlet {
    /// None once the consumer is gone.
    tx: Option<mpsc::Sender<Delivery>>,
    /// Slots only durable events may take.
    reserve: usize,
    /// Events missed and not yet reported.
    gap: Option<PendingGap>,
    skipped: Arc<AtomicU64>,
}

impl Outlet {
    /// Queue `event`, or count it as missed. Never waits. Events only take a slot when another
    /// stays free, so while a gap is pending there is always room to report it at the end.
    fn offer(&mut self, event: &Arc<Event>) {
        if let Some(gap) = self.gap {
            if self.free() >= 2 + self.reserve && self.send(gap.delivery()) {
                self.gap = None;
            }
        }
        if self.gap.is_none()
            && self.free() >= 2 + self.reserve
            && self.send(Delivery::Event(Arc::clone(event)))
        {
            return;
        }
        self.missed(event);
    }

    /// Queue a durable `event` with its `ack`, using the reserve if needed; or count it as
    /// missed (dropping the ack tells its emitter).
    fn offer_durable(&mut self, event: &Arc<Event>, ack: Ack) {
        if let Some(gap) = self.gap {
            if self.free() >= 3 && self.send(gap.delivery()) {
                self.gap = None;
            }
        }
        if self.gap.is_none()
            && self.free() >= 2
            && self.send(Delivery::Durable(Arc::clone(event), ack))
        {
            return;
        }
        self.missed(event);
    }

    /// Count `event` as missed, in the pending gap.
    fn missed(&mut self, event: &Arc<Event>) {
        if self.tx.is_none() {
            return;
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        let dropped = match event.kind {
            EventKind::EventsDropped { count, .. } => count,
            _ => 0,
        };
        self.gap = Some(match self.gap {
            Some(g) => PendingGap {
                last_seq: event.seq,
                count: g.count + 1,
                dropped_within: g.dropped_within + dropped,
                ..g
            },
            None => PendingGap {
                first_seq: event.seq,
                last_seq: event.seq,
                count: 1,
                dropped_within: dropped,
            },
        });
    }

    /// Free slots in the consumer's queue (the dispatcher is its only sender).
    fn free(&self) -> usize {
        self.tx.as_ref().map_or(0, mpsc::Sender::capacity)
    }

    /// Report a pending gap in the slot kept free for it.
    fn finish(&mut self) {
        if let Some(gap) = self.gap.take() {
            self.send(gap.delivery());
        }
    }

    /// True if queued. A consumer that is gone is forgotten.
    fn send(&mut self, d: Delivery) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(d) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Closed(_)) => {
                self.tx = None;
                self.gap = None;
                false
            }
        }
    }
}

/// One reader of the event stream, with its own bounded queue.
#[derive(Debug)]
pub struct Consumer {
    name: &'static str,
    rx: mpsc::Receiver<Delivery>,
    skipped: Arc<AtomicU64>,
}

impl Consumer {
    /// The next delivery; None once the dispatcher has finished and the queue is drained.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// The next delivery, blocking this thread (for a consumer on a thread of its own, outside
    /// the async runtime); None once the dispatcher has finished and the queue is drained.
    pub fn blocking_recv(&mut self) -> Option<Delivery> {
        self.rx.blocking_recv()
    }

    /// The next delivery if one is already queued (lets a writer batch a burst into one write).
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// The name given at registration.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Events this consumer missed so far because its queue was full.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reason_names_are_their_serialized_names() {
        use RefusalReason as R;
        for r in [
            R::NoCertificate,
            R::UnknownCa,
            R::Expired,
            R::Revoked,
            R::UnknownDevice,
            R::BadCertificate,
            R::TlsError,
            R::ClientIdMismatch,
            R::MalformedPacket,
            R::UnsupportedProtocol,
            R::Timeout,
            R::TooManyHandshakes,
            R::RateLimited,
            R::ConnectionLimit,
            R::BadAuthMethod,
            R::NotAuthorized,
            R::ShuttingDown,
        ] {
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
    }

    fn denied(device: &str, n: usize) -> EventKind {
        EventKind::SubscribeDenied {
            rule: None,
            device: device.into(),
            filter: n.to_string(),
            quarantine: None,
        }
    }

    /// Every delivery until the end of the stream.
    async fn drain(c: &mut Consumer) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some(d) = c.recv().await {
            out.push(d);
        }
        out
    }

    fn event(d: &Delivery) -> &Event {
        match d {
            Delivery::Event(e) | Delivery::Durable(e, _) => e,
            Delivery::Gap { .. } => panic!("expected an event, got {d:?}"),
        }
    }

    fn drops(e: &Event) -> Option<(u64, u64)> {
        match e.kind {
            EventKind::EventsDropped { count, after_seq } => Some((count, after_seq)),
            _ => None,
        }
    }

    /// Emits `per_thread` events from each of 4 threads while the dispatcher runs on a
    /// multi-thread runtime; returns the bus and everything the one consumer received.
    fn emit_from_four_threads(bus_capacity: usize, per_thread: usize) -> (EventBus, Vec<Delivery>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let (bus, mut dispatcher) = EventBus::new(bus_capacity, 1);
        let mut consumer = dispatcher.consumer("all", 8 * per_thread + 16);
        let dispatcher_task = rt.spawn(dispatcher.run());
        let collector = rt.spawn(async move { drain(&mut consumer).await });
        std::thread::scope(|s| {
            for t in 0..4 {
                let bus = bus.clone();
                s.spawn(move || {
                    for n in 0..per_thread {
                        bus.emit(denied(&format!("t{t}"), n));
                    }
                });
            }
        });
        rt.block_on(bus.shutdown());
        rt.block_on(dispatcher_task).unwrap();
        let got = rt.block_on(collector).unwrap();
        (bus, got)
    }

    /// Sequence numbers run 1, 2, 3... with no hole, and each thread's events keep its order
    /// (with none missing when `lossless`).
    fn check_contiguous_and_ordered(got: &[Delivery], lossless: bool) {
        let mut last_per_thread = std::collections::HashMap::new();
        for (i, d) in got.iter().enumerate() {
            let e = event(d);
            assert_eq!(e.seq, i as u64 + 1, "seq hole at delivery {i}");
            if let EventKind::SubscribeDenied { device, filter, .. } = &e.kind {
                let n: i64 = filter.parse().unwrap();
                let last = last_per_thread.insert(device.clone(), n).unwrap_or(-1);
                if lossless {
                    assert_eq!(n, last + 1, "{device}'s events out of order");
                } else {
                    assert!(n > last, "{device}'s events out of order");
                }
            }
        }
    }

    #[test]
    fn sequence_numbers_are_contiguous_across_four_emitting_threads() {
        // Room for all 10,000: nothing may be lost.
        let (bus, got) = emit_from_four_threads(10_000, 2_500);
        assert_eq!(bus.emitted(), 10_000);
        assert_eq!(bus.dropped(), 0);
        assert_eq!(got.len(), 10_000);
        check_contiguous_and_ordered(&got, true);
        assert!(got.iter().all(|d| drops(event(d)).is_none()));
    }

    #[test]
    fn drops_under_contention_are_all_recorded_in_sequence() {
        // A tiny bus: 40,000 events from 4 threads overflow it, by an amount that varies.
        let (bus, got) = emit_from_four_threads(64, 10_000);
        assert_eq!(bus.emitted() + bus.dropped(), 40_000);
        assert!(
            bus.dropped() > 0,
            "the bus never overflowed; the test proves nothing"
        );
        check_contiguous_and_ordered(&got, false);
        let (mut forwarded, mut recorded) = (0, 0);
        for d in &got {
            let e = event(d);
            match drops(e) {
                Some((count, after_seq)) => {
                    assert!(count > 0);
                    assert_eq!(after_seq, e.seq - 1);
                    recorded += count;
                }
                None => forwarded += 1,
            }
        }
        assert_eq!(forwarded, bus.emitted());
        assert_eq!(recorded, bus.dropped());
    }

    #[test]
    fn a_full_bus_drops_and_counts_instead_of_blocking() {
        let (bus, _dispatcher) = EventBus::new(2, 1);
        for n in 0..5 {
            bus.emit(denied("d", n));
        }
        assert_eq!(bus.emitted(), 2);
        assert_eq!(bus.dropped(), 3);
    }

    #[tokio::test]
    async fn an_overflow_becomes_exactly_one_events_dropped_record_before_the_next_event() {
        let (bus, mut dispatcher) = EventBus::new(4, 1);
        let mut log = dispatcher.consumer("log", 100);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        // The dispatcher has not run yet (current-thread runtime): 4 fit, 6 are dropped.
        for n in 0..10 {
            bus.emit(denied("d", n));
        }
        assert_eq!((bus.emitted(), bus.dropped()), (4, 6));
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(log.recv().await.unwrap());
        }
        bus.emit(denied("d", 10));
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
        got.extend(drain(&mut log).await);

        let seqs: Vec<u64> = got.iter().map(|d| event(d).seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        let records: Vec<_> = got.iter().filter_map(|d| drops(event(d))).collect();
        assert_eq!(records, [(6, 4)], "one record: 6 lost after seq 4");
        assert!(
            drops(event(&got[4])).is_some(),
            "recorded before the next event"
        );
        assert!(
            matches!(&event(&got[5]).kind, EventKind::SubscribeDenied { filter, .. } if filter == "10")
        );
        let line = event(&got[4]).to_json();
        assert!(
            line.starts_with(r#"{"seq":5,"ts":""#)
                && line.contains(r#""type":"events_dropped","count":6,"after_seq":4"#),
            "{line}"
        );
    }

    #[tokio::test]
    async fn shutdown_loses_nothing_queued_and_counts_later_emits() {
        let (bus, mut dispatcher) = EventBus::new(100, 1);
        let elsewhere = bus.clone(); // a handle still alive elsewhere must not hold shutdown up
        let mut log = dispatcher.consumer("log", 100);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        for n in 0..50 {
            bus.emit(denied("d", n));
        }
        let stopped = bus.shutdown();
        elsewhere.emit(denied("late", 0));
        assert_eq!(bus.dropped(), 1, "refused as soon as shutdown() is called");
        stopped.await;
        assert!(dispatcher_task.is_finished());
        elsewhere.emit(denied("later", 0));
        assert_eq!((bus.emitted(), bus.dropped()), (50, 2));

        let got = drain(&mut log).await;
        assert_eq!(got.len(), 51);
        for (i, d) in got[..50].iter().enumerate() {
            let e = event(d);
            assert_eq!(e.seq, i as u64 + 1);
            assert!(
                matches!(&e.kind, EventKind::SubscribeDenied { filter, .. } if *filter == i.to_string())
            );
        }
        // The emit refused during shutdown is still recorded; the one after it cannot be.
        assert_eq!(event(&got[50]).seq, 51);
        assert_eq!(drops(event(&got[50])), Some((1, 50)));
        assert!(log.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_restarted_log_continues_numbering_and_records_a_loss_before_any_event() {
        let (bus, mut dispatcher) = EventBus::new(8, 101);
        let mut log = dispatcher.consumer("log", 8);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        let stopped = bus.shutdown();
        bus.emit(denied("d", 0));
        stopped.await;
        dispatcher_task.await.unwrap();
        let got = drain(&mut log).await;
        assert_eq!(got.len(), 1);
        assert_eq!(event(&got[0]).seq, 101);
        assert_eq!(drops(event(&got[0])), Some((1, 100)));
    }

    fn action(n: u32) -> EventKind {
        EventKind::ControlAction {
            action: "revoke_device".into(),
            subject: format!("d{n}"),
            by: "test".into(),
            detail: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_durable_emit_returns_only_once_the_durable_consumer_has_stored_it() {
        let (bus, mut dispatcher) = EventBus::new(8, 1);
        let mut audit = dispatcher.durable_consumer("audit", 4, 2);
        let mut log = dispatcher.consumer("log", 8);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        bus.emit(denied("d", 1));
        // Sequenced before the durable event is emitted (a queued durable event goes first).
        let first = log.recv().await.unwrap();
        let b = bus.clone();
        let waiter = std::thread::spawn(move || {
            b.emit_durable(action(2), std::time::Duration::from_secs(10))
        });
        // The audit log sees the ordinary event, then the durable one with its ack, in order.
        assert_eq!(event(&audit.recv().await.unwrap()).seq, 1);
        let d = audit.recv().await.unwrap();
        let Delivery::Durable(e, ack) = d else {
            panic!("expected a durable delivery, got {d:?}");
        };
        assert_eq!(e.seq, 2);
        // Other consumers get it as an ordinary event.
        assert_eq!(event(&first).seq, 1);
        assert!(matches!(log.recv().await.unwrap(), Delivery::Event(e) if e.seq == 2));
        // Not confirmed until stored.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        ack.durable();
        assert_eq!(waiter.join().unwrap(), Ok(2));
        // An ack dropped unfulfilled (the store failed) refuses the action.
        let b = bus.clone();
        let waiter = std::thread::spawn(move || {
            b.emit_durable(action(3), std::time::Duration::from_secs(10))
        });
        drop(audit.recv().await.unwrap());
        assert_eq!(waiter.join().unwrap(), Err(NotRecorded::Refused));
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
        assert_eq!(
            bus.emit_durable(action(4), std::time::Duration::from_secs(1)),
            Err(NotRecorded::Closed)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_events_use_the_reserve_a_flood_of_ordinary_ones_cannot_take() {
        let (bus, mut dispatcher) = EventBus::new(100, 1);
        let mut audit = dispatcher.durable_consumer("audit", 3, 1);
        // Sees every event once it is sequenced: the durable event below must come after all
        // ten ordinary ones (the dispatcher takes a queued durable event first, by design).
        let mut log = dispatcher.consumer("log", 100);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        for n in 1..=10 {
            bus.emit(denied("d", n));
        }
        for _ in 1..=10 {
            log.recv().await.unwrap();
        }
        let b = bus.clone();
        let waiter = std::thread::spawn(move || {
            b.emit_durable(action(11), std::time::Duration::from_secs(10))
        });
        // 3 ordinary events fit and 7 are missed; the gap notice and the durable event take
        // the reserve.
        let mut got = Vec::new();
        while got.len() < 5 {
            got.push(audit.recv().await.unwrap());
        }
        assert!(
            matches!(
                got[3],
                Delivery::Gap {
                    first_seq: 4,
                    last_seq: 10,
                    count: 7,
                    ..
                }
            ),
            "{got:?}"
        );
        let mut durable = None;
        for d in got {
            if let Delivery::Durable(e, ack) = d {
                durable = Some(e.seq);
                ack.durable();
            }
        }
        let r = waiter.join().unwrap();
        match durable {
            Some(seq) => assert_eq!(r, Ok(seq)),
            None => assert_eq!(r, Err(NotRecorded::Refused)),
        }
        assert_eq!(durable, Some(11));
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_durable_emits_larger_than_the_consumer_s_queue_is_stored_whole() {
        let (bus, mut dispatcher) = EventBus::new(8, 1);
        // A queue smaller than the batch (but larger than one chunk): the batch must not
        // overflow it.
        let mut audit = dispatcher.durable_consumer("audit", 200, 8);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        let b = bus.clone();
        let waiter = std::thread::spawn(move || {
            b.emit_durable_all(
                (0..300).map(action).collect(),
                std::time::Duration::from_secs(30),
            )
        });
        let mut stored = Vec::new();
        while stored.len() < 300 {
            match audit.recv().await.unwrap() {
                Delivery::Durable(e, ack) => {
                    stored.push(e.seq);
                    ack.durable();
                }
                other => panic!("expected only durable deliveries, got {other:?}"),
            }
        }
        let seqs = waiter.join().unwrap().unwrap();
        assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
        assert_eq!(stored, seqs);
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
    }

    #[tokio::test]
    async fn without_a_durable_consumer_a_durable_emit_is_an_ordinary_one() {
        let (bus, mut dispatcher) = EventBus::new(8, 5);
        let mut log = dispatcher.consumer("log", 8);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        let b = bus.clone();
        let r = tokio::task::spawn_blocking(move || {
            b.emit_durable(action(1), std::time::Duration::from_secs(10))
        })
        .await
        .unwrap();
        assert_eq!(r, Ok(0), "nothing to wait for");
        assert_eq!(event(&log.recv().await.unwrap()).seq, 5);
        // A dispatcher that never runs cannot hold an offline caller up either.
        let (bus2, _never_run) = EventBus::new(8, 1);
        let r = tokio::task::spawn_blocking(move || {
            bus2.emit_durable(action(2), std::time::Duration::from_secs(10))
        })
        .await
        .unwrap();
        assert_eq!(r, Ok(0));
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
    }

    #[tokio::test]
    async fn a_stalled_consumer_gets_an_exact_gap_and_the_others_everything() {
        let (bus, mut dispatcher) = EventBus::new(100, 1);
        let mut slow = dispatcher.consumer("slow", 2);
        let mut fast = dispatcher.consumer("fast", 100);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        let mut all = Vec::new();
        for n in 1..=5 {
            bus.emit(denied("d", n));
        }
        for _ in 1..=5 {
            all.push(fast.recv().await.unwrap());
        }
        // `slow` holds 1 and 2; 3 to 5 missed it. The gap is told before the next event.
        assert_eq!(event(&slow.try_recv().unwrap()).seq, 1);
        assert_eq!(event(&slow.try_recv().unwrap()).seq, 2);
        assert!(slow.try_recv().is_none());
        assert_eq!(slow.skipped(), 3);
        bus.emit(denied("d", 6));
        all.push(fast.recv().await.unwrap());
        assert!(matches!(
            slow.try_recv(),
            Some(Delivery::Gap {
                first_seq: 3,
                last_seq: 5,
                count: 3,
                dropped_within: 0
            })
        ));
        assert_eq!(event(&slow.try_recv().unwrap()).seq, 6);

        // Stalled again at shutdown: the gap still arrives, in the slot kept for it.
        for n in 7..=9 {
            bus.emit(denied("d", n));
        }
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
        all.extend(drain(&mut fast).await);
        let rest = drain(&mut slow).await;
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert_eq!(event(&rest[0]).seq, 7);
        assert_eq!(event(&rest[1]).seq, 8);
        assert!(matches!(
            rest[2],
            Delivery::Gap {
                first_seq: 9,
                last_seq: 9,
                count: 1,
                dropped_within: 0
            }
        ));
        assert_eq!(slow.skipped(), 4);
        assert_eq!(fast.skipped(), 0);
        let seqs: Vec<u64> = all.iter().map(|d| event(d).seq).collect();
        assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_consumer_that_goes_away_does_not_disturb_the_others() {
        let (bus, mut dispatcher) = EventBus::new(100, 1);
        let gone = dispatcher.consumer("gone", 1);
        let mut log = dispatcher.consumer("log", 100);
        drop(gone);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        for n in 0..10 {
            bus.emit(denied("d", n));
        }
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
        assert_eq!(drain(&mut log).await.len(), 10);
    }

    #[tokio::test]
    async fn shutdown_returns_when_the_dispatcher_never_ran() {
        let (bus, dispatcher) = EventBus::new(4, 1);
        bus.emit(denied("d", 0));
        drop(dispatcher);
        bus.shutdown().await;
    }

    #[test]
    fn events_serialize_as_one_json_line_with_seq_first_and_type_tag() {
        let mut ev = Event::now(EventKind::PublishDenied {
            rule: None,
            device: "pump-7".into(),
            topic: "a/b".into(),
            qos: 1,
            what: "publish",
            quarantine: None,
        });
        assert_eq!(ev.seq, 0);
        ev.seq = 12;
        let line = ev.to_json();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"seq":12,"ts":""#), "{line}");
        let type_at = line.find(r#","type":"publish_denied""#).unwrap();
        assert!(type_at > line.find(r#""ts""#).unwrap());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 12);
        assert_eq!(v["type"], "publish_denied");
        assert_eq!(v["device"], "pump-7");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn new_kinds_have_their_wire_names() {
        let cases = [
            (
                EventKind::ServerStarted {
                    version: "0.1.0".into(),
                    pid: 42,
                },
                r#""type":"server_started","version":"0.1.0","pid":42}"#,
            ),
            (
                EventKind::ServerStopping {
                    reason: "signal".into(),
                },
                r#""type":"server_stopping","reason":"signal"}"#,
            ),
            (
                EventKind::EventsDropped {
                    count: 3,
                    after_seq: 9,
                },
                r#""type":"events_dropped","count":3,"after_seq":9}"#,
            ),
        ];
        for (kind, tail) in cases {
            let line = Event::now(kind).to_json();
            assert!(line.ends_with(tail), "{line}");
        }
    }
}
