//! Tollgate's control plane, as a library.
//!
//! Owns device lifecycle (register, revoke, reactivate, quarantine and release, groups,
//! labels and deletion in [`lifecycle`]), the admin API's named operators and the server
//! certificate's renewal ([`operators`]), enrollment
//! (one-time tokens, supplier bootstrap certificates, re-enrollment), supplier trust and the
//! classification of control-listener peers, CA operations and CRL signing, policy loading and
//! reload, and the [`AccessSnapshot`] the data plane authorizes against.
//!
//! It reaches the data plane only through the small [`DataPlane`] trait (publish a snapshot with
//! the devices whose access changed; close a device's connections; list live connections), and
//! publishes trust material (issuing-CA anchors, CRLs, supplier CAs) through a `watch` channel
//! ([`Control::trust`]) so the TLS configurations are rebuilt in one place. The snapshot is
//! updated incrementally: each change reads the devices it touches (one, or a bulk
//! revocation's batch) from the registry and produces one new snapshot sharing the rest with
//! the old one.
//!
//! It must not hold sockets or format HTTP: errors are [`ControlError`] values that the binary
//! maps to statuses in one place. Calls may touch the disk (the registry, CA files): callers run
//! them on blocking threads, never on the per-message path.

#![forbid(unsafe_code)]

mod audit_facts;
pub mod ca;
pub mod compliance;
mod error;
pub mod explain;
pub mod files;
pub mod lifecycle;
pub mod observe;
pub mod operators;
pub mod policy_history;
pub mod requests;
pub mod timefmt;

pub use audit_facts::ControlFacts;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tollgate_events::{EventBus, EventKind};
use tollgate_pki::{CertProfile, Validity, WeakKeyList};
use tollgate_policy::{AccessSnapshot, Changed, DeviceAccess, Policy, Quarantine};
use tollgate_registry::{
    BootstrapRecord, CertKind, CertRecord, QuarantineReason, Registry, RegistryError, Supplier,
    TokenGrant,
};

pub use crate::ca::{Crls, InitOptions, InitReport, Layout};
pub use crate::error::ControlError;

/// The source name of quarantine reasons set by an operator.
pub const OPERATOR: &str = "operator";

/// What the control plane needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The data directory.
    pub data: PathBuf,
    /// The policy file.
    pub policy_file: PathBuf,
    /// Default device certificate lifetime.
    pub cert_lifetime: time::Duration,
    /// Per-group lifetimes (a device gets the shortest of its groups').
    pub group_lifetimes: BTreeMap<String, time::Duration>,
    /// Known-weak keys refused in CSRs.
    pub weak_keys: WeakKeyList,
    /// Default enrollment token lifetime.
    pub token_ttl: Duration,
    /// Longest lifetime a token may be given.
    pub max_token_ttl: Duration,
    /// How long a CRL is valid (re-signed at half of it).
    pub crl_validity: Duration,
    /// The compliance profile (`compliance.toml` in the data directory by default).
    pub compliance_file: PathBuf,
}

/// A live connection, as the data plane reports it: who, and what its meter and transport
/// say (the inputs of per-device behaviour and transport-health detection).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveConnection {
    /// Device id.
    pub device_id: String,
    /// MQTT client id.
    pub client_id: String,
    /// PUBLISH packets received since it connected.
    pub messages_in: u64,
    /// PUBLISH packets sent.
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Publishes and subscriptions refused.
    pub denied: u64,
    /// TCP smoothed round-trip time, microseconds (when the transport can tell).
    pub rtt_us: Option<u32>,
    /// TCP segments retransmitted over the connection's life (when the transport can tell).
    pub retransmits: Option<u32>,
    /// Remote address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<std::net::SocketAddr>,
    /// When it connected, Unix milliseconds.
    pub connected_at_ms: i64,
}

/// One device's cohorts: its id, groups and model (if its inventory names one).
pub type Cohorts = (String, Vec<String>, Option<String>);

/// The only way the control plane reaches the data plane (a cluster implements it over NATS).
pub trait DataPlane: Send + Sync {
    /// Swap in `snapshot`; re-check the live connections of the devices in `changed` only.
    /// Returns how many live connections were told to re-check.
    fn publish(&self, snapshot: Arc<AccessSnapshot>, changed: Changed) -> usize;
    /// [`DataPlane::publish`] with `changed` = the devices `ids`, counting per device: how many
    /// live connections of `ids[i]` were told to re-check.
    fn publish_devices(&self, snapshot: Arc<AccessSnapshot>, ids: &[String]) -> Vec<usize>;
    /// Close every live connection of `device` now (no will), saying `reason`. Returns how many.
    fn close_device(&self, device: &str, reason: &str) -> usize;
    /// Live connections.
    fn connections(&self) -> Vec<LiveConnection>;
    /// Cap `device`'s publishes at `per_second` until `until_unix_ms` (0 lifts it).
    fn throttle(&self, device: &str, per_second: u32, until_unix_ms: i64);
}

/// Trust material for the TLS layer, published whenever any of it changes.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Issuing CAs (current and retired but still trusted), DER: anchors for client certificates.
    pub issuing_anchors: Vec<Vec<u8>>,
    /// Their CRLs (DER), current CA first.
    pub crls: Vec<Arc<Vec<u8>>>,
    /// Supplier manufacturing CAs (DER): trusted on the control listener only.
    pub supplier_cas: Vec<Vec<u8>>,
}

/// A supplier as enrollment needs it.
#[derive(Debug, Clone)]
pub struct SupplierTrust {
    /// Name.
    pub name: String,
    /// Its CA certificates, DER.
    pub ca_ders: Vec<Vec<u8>>,
    /// Groups its devices get.
    pub groups: Vec<String>,
    /// Whether a hardware serial may enroll again.
    pub allow_reenroll: bool,
}

/// Who issued a verified client certificate on the control listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKind {
    /// No client certificate.
    Anonymous,
    /// Tollgate's issuing CA: an operational device or admin certificate.
    Operational,
    /// A supplier's manufacturing CA: a bootstrap certificate, good for enrollment only.
    Supplier(String),
}

/// A device, for the admin API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// Device id.
    pub id: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Labels (operator metadata, key=value).
    pub labels: BTreeMap<String, String>,
    /// `active`, `quarantined` or `revoked`.
    pub state: &'static str,
    /// The same as `state` (kept for clients of the first API version).
    pub status: &'static str,
    /// Quarantine reasons, while quarantined.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantine: Vec<QuarantineView>,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "timefmt::at")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "timefmt::at_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
    /// Whether a connection is live.
    pub connected: bool,
    /// When it last connected or disconnected; none if never.
    #[serde(serialize_with = "timefmt::at_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<i64>,
    /// The address of its last connection.
    pub last_address: Option<String>,
    /// Its device certificates, newest first.
    pub certificates: Vec<CertView>,
    /// Supplier, model and hardware serial, for devices enrolled with a bootstrap certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapView>,
    /// Supplier, model, serial, firmware and the SBOM of that firmware (one device's view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<compliance::InventoryView>,
    /// Its compliance: state, failing rules, findings, vulnerabilities (one device's view).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub compliance: Option<compliance::DeviceCompliance>,
}

/// One quarantine reason, for the admin API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuarantineView {
    /// Who holds it.
    pub source: String,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub by: String,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "timefmt::at")]
    #[schema(value_type = String, format = DateTime)]
    pub since: i64,
    /// When (RFC 3339 UTC) it lifts itself, when it has a time-to-live.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "timefmt::at_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<i64>,
}

/// Where a bootstrap-enrolled device came from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BootstrapView {
    /// Supplier.
    pub supplier: String,
    /// Model, if the certificate said.
    pub model: Option<String>,
    /// Hardware serial.
    pub hardware_serial: String,
}

/// A certificate, for the admin API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertView {
    /// Serial (hex).
    pub serial: String,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "timefmt::at")]
    #[schema(value_type = String, format = DateTime)]
    pub not_before: i64,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "timefmt::at")]
    #[schema(value_type = String, format = DateTime)]
    pub not_after: i64,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "timefmt::at_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
}

/// A device registered with a key generated here (`tollgate device add`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedDevice {
    /// Device id.
    pub id: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Certificate serial.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (shown once).
    pub key_pem: String,
    /// The root CA, PEM.
    pub ca_pem: String,
    /// Whether a revoked device was brought back.
    pub reactivated: bool,
}

/// The outcome of a revocation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// Device id.
    pub id: String,
    /// Serials revoked now.
    pub serials: Vec<String>,
    /// Live connections closed.
    pub sessions_closed: usize,
}

/// The outcome of a quarantine or release.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QuarantineOutcome {
    /// Device id.
    pub id: String,
    /// `active` or `quarantined`, after the change.
    pub state: &'static str,
    /// Reasons still holding.
    pub quarantine: Vec<QuarantineView>,
    /// Whether a live connection was affected.
    pub connected: bool,
}

/// A certificate issued through EST.
#[derive(Debug)]
pub struct Enrolled {
    /// Serial (hex).
    pub serial: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

/// A supplier, for the admin API.
#[derive(Debug, Serialize)]
pub struct SupplierView {
    /// Name.
    pub name: String,
    /// Groups its devices get.
    pub groups: Vec<String>,
    /// Whether a hardware serial may enroll again.
    pub allow_reenroll: bool,
    /// Why its stored CA cannot be used (its devices cannot enroll until it is fixed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_error: Option<String>,
}

struct PolicyState {
    policy: Arc<Policy>,
    modified: Option<(SystemTime, u64)>,
}

/// The control plane.
pub struct Control {
    registry: Arc<dyn Registry>,
    authority: ca::Authority,
    events: EventBus,
    cfg: ControlConfig,
    policy: Mutex<PolicyState>,
    /// The snapshot in force; its lock also serialises "change, then publish", so snapshots
    /// reach the data plane in the order they were made.
    access: Mutex<Arc<AccessSnapshot>>,
    /// The same snapshot, for lock-free readers.
    current: ArcSwap<AccessSnapshot>,
    data_plane: OnceLock<Arc<dyn DataPlane>>,
    crls: Mutex<Crls>,
    suppliers: ArcSwap<Vec<SupplierTrust>>,
    /// Suppliers whose stored CA does not parse, with the error (reported, never skipped
    /// silently).
    broken_suppliers: ArcSwap<Vec<SupplierView>>,
    trust: watch::Sender<Arc<Trust>>,
    /// Inventory and compliance state (slow path only).
    compliance: Mutex<compliance::State>,
    /// Held for the whole of a compliance evaluation that applies its verdicts (taken before
    /// `compliance`, never while holding it).
    evaluations: Mutex<()>,
    /// Serialises read-modify-write edits of a device's inventory (its own reports, operators,
    /// enrollment), so none is lost to another.
    inventory_edits: Mutex<()>,
    /// Serialises changes to the policy history ([`policy_history`]).
    policy_history: Mutex<()>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp_nanos()
        .checked_div(1_000_000)
        .and_then(|ms| i64::try_from(ms).ok())
        .unwrap_or(i64::MAX)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn check_name(what: &'static str, name: &str) -> Result<(), ControlError> {
    tollgate_pki::validate_device_id(name).map_err(|e| ControlError::InvalidName {
        what,
        detail: e.to_string(),
    })
}

fn check_groups(groups: &[String]) -> Result<(), ControlError> {
    for g in groups {
        check_name("group", g)?;
    }
    Ok(())
}

/// The SubjectPublicKeyInfo (DER) of the first certificate in a PEM document.
fn cert_spki(pem: &str) -> Option<Vec<u8>> {
    tollgate_pki::parse_pem_certificates(pem)
        .ok()?
        .into_iter()
        .next()
        .map(|c| c.spki)
}

/// How long a control action waits for its audit-log entry to be durable.
const WRITE_AHEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The SHA-256 of a file, hex (empty when it cannot be read).
fn file_digest(path: &std::path::Path) -> String {
    std::fs::read(path)
        .map(|b| {
            ring::digest::digest(&ring::digest::SHA256, &b)
                .as_ref()
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect()
        })
        .unwrap_or_default()
}

fn policy_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn view_reason(q: QuarantineReason) -> QuarantineView {
    QuarantineView {
        source: q.source,
        reason: q.reason,
        by: q.by,
        since: q.since,
        until: q.until,
    }
}

impl Control {
    /// Open the control plane on `registry`: load the CA hierarchy, suppliers, the policy
    /// (a broken one denies everything until fixed) and build the first snapshot. The data
    /// plane is attached afterwards ([`Control::attach`]), built with [`Control::snapshot`].
    pub fn open(
        cfg: ControlConfig,
        registry: Arc<dyn Registry>,
        events: EventBus,
    ) -> Result<Arc<Control>, ControlError> {
        let authority = ca::Authority::open(&Layout::new(&cfg.data))?;
        let (trust, _) = watch::channel(Arc::new(Trust::default()));
        let cp = Arc::new(Control {
            registry,
            authority,
            events,
            cfg,
            policy: Mutex::new(PolicyState {
                policy: Arc::new(Policy::deny_all()),
                modified: None,
            }),
            access: Mutex::new(Arc::new(AccessSnapshot::deny_all())),
            current: ArcSwap::from_pointee(AccessSnapshot::deny_all()),
            data_plane: OnceLock::new(),
            crls: Mutex::new(Crls::default()),
            suppliers: ArcSwap::from_pointee(Vec::new()),
            broken_suppliers: ArcSwap::from_pointee(Vec::new()),
            trust,
            compliance: Mutex::new(compliance::State::default()),
            evaluations: Mutex::new(()),
            inventory_edits: Mutex::new(()),
            policy_history: Mutex::new(()),
        });
        cp.load_suppliers()?;
        cp.regenerate_crl()?;
        if let Err(e) = cp.reload_policy() {
            tracing::error!("policy not loaded, denying everything until it is fixed:\n{e}");
        }
        cp.rebuild_snapshot()?;
        cp.load_compliance()?;
        Ok(cp)
    }

    /// Connect the data plane. Later snapshots are published to it.
    pub fn attach(&self, data_plane: Arc<dyn DataPlane>) {
        let snapshot = self.snapshot();
        if self.data_plane.set(Arc::clone(&data_plane)).is_ok() {
            data_plane.publish(snapshot, Changed::All);
        }
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<AccessSnapshot> {
        self.current.load_full()
    }

    /// Trust material now and whenever it changes.
    pub fn trust(&self) -> watch::Receiver<Arc<Trust>> {
        self.trust.subscribe()
    }

    fn publish_trust(&self) {
        let t = Trust {
            issuing_anchors: self.authority.issuing_anchors(),
            crls: self.crls.lock().issuing.clone(),
            supplier_cas: self
                .suppliers
                .load()
                .iter()
                .flat_map(|s| s.ca_ders.iter().cloned())
                .collect(),
        };
        self.trust.send_replace(Arc::new(t));
    }

    /// Build the whole snapshot from the registry (at start only).
    fn rebuild_snapshot(&self) -> Result<usize, ControlError> {
        let mut devices = imbl::HashMap::new();
        for d in self.registry.devices()? {
            if d.revoked_at.is_none() {
                devices.insert(
                    d.id,
                    DeviceAccess {
                        groups: d.groups,
                        quarantine: Vec::new(),
                    },
                );
            }
        }
        for (id, q) in self.registry.quarantines()? {
            if let Some(a) = devices.get_mut(&id) {
                a.quarantine.push(Quarantine {
                    source: q.source,
                    reason: q.reason,
                });
            }
        }
        let revoked: imbl::HashSet<String> = self.registry.revoked_serials()?.into_iter().collect();
        let policy = self.policy();
        Ok(self.update(Changed::All, move |s| {
            s.devices = devices;
            s.revoked = revoked;
            s.policy = policy;
        }))
    }

    /// Make the next snapshot with `f` and publish it, in order. Returns how many live
    /// connections were told to re-check.
    fn update(&self, changed: Changed, f: impl FnOnce(&mut AccessSnapshot)) -> usize {
        let mut cur = self.access.lock();
        let mut next = AccessSnapshot::clone(&cur);
        f(&mut next);
        let next = Arc::new(next);
        *cur = Arc::clone(&next);
        self.current.store(Arc::clone(&next));
        self.data_plane
            .get()
            .map_or(0, |dp| dp.publish(next, changed))
    }

    /// Re-read one device from the registry into the snapshot (and `revoked` serials). Returns
    /// how many of its live connections were told to re-check.
    fn refresh_device(&self, id: &str, revoked: &[String]) -> Result<usize, ControlError> {
        // Read under the snapshot lock, so a concurrent change to the same device cannot be
        // overwritten by this older read.
        let mut error = None;
        let told = self.update(Changed::Devices(vec![id.to_owned()]), |s| {
            match self.access_of(id) {
                Ok(Some(a)) => {
                    s.devices.insert(id.to_owned(), a);
                }
                Ok(None) => {
                    s.devices.remove(id);
                }
                Err(e) => error = Some(e),
            }
            for serial in revoked {
                s.revoked.insert(serial.clone());
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(told),
        }
    }

    /// [`Control::refresh_device`] for several devices in one snapshot: one swap, and only
    /// their live connections re-check. Returns, per id, how many were told to.
    fn refresh_devices(
        &self,
        ids: &[String],
        revoked: &[String],
    ) -> Result<Vec<usize>, ControlError> {
        let mut cur = self.access.lock();
        let mut next = AccessSnapshot::clone(&cur);
        for id in ids {
            match self.access_of(id)? {
                Some(a) => {
                    next.devices.insert(id.clone(), a);
                }
                None => {
                    next.devices.remove(id);
                }
            }
        }
        for serial in revoked {
            next.revoked.insert(serial.clone());
        }
        let next = Arc::new(next);
        *cur = Arc::clone(&next);
        self.current.store(Arc::clone(&next));
        Ok(self
            .data_plane
            .get()
            .map_or_else(|| vec![0; ids.len()], |dp| dp.publish_devices(next, ids)))
    }

    /// A device's access as the registry has it now: `None` unless it is active.
    fn access_of(&self, id: &str) -> Result<Option<DeviceAccess>, ControlError> {
        Ok(match self.registry.device(id)? {
            Some(d) if d.revoked_at.is_none() => Some(DeviceAccess {
                groups: d.groups,
                quarantine: self
                    .registry
                    .quarantine_of(id)?
                    .into_iter()
                    .map(|q| Quarantine {
                        source: q.source,
                        reason: q.reason,
                    })
                    .collect(),
            }),
            _ => None,
        })
    }

    fn connected(&self) -> HashSet<String> {
        self.data_plane
            .get()
            .map(|dp| dp.connections().into_iter().map(|c| c.device_id).collect())
            .unwrap_or_default()
    }

    /// Live connections (empty before the data plane is attached).
    pub fn connections(&self) -> Vec<LiveConnection> {
        self.data_plane
            .get()
            .map(|dp| dp.connections())
            .unwrap_or_default()
    }

    // ---- policy ---------------------------------------------------------------------------

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.lock().policy)
    }

    /// Load the policy file. On error the policy in force stays, and the error is returned.
    pub fn reload_policy(&self) -> Result<usize, ControlError> {
        let file = &self.cfg.policy_file;
        let source = file.display().to_string();
        let stamp = policy_stamp(file);
        let text = std::fs::read_to_string(file).map_err(|e| format!("{source}: {e}"));
        let result = text
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|text| Policy::parse(text, &source).map_err(|e| e.to_string()));
        // Written ahead: a policy that cannot be recorded is not put in force (the file is
        // looked at again at the next tick).
        if let Ok(p) = &result {
            let digest = file_digest(file);
            self.write_ahead(
                "reload_policy",
                &source,
                "file",
                &format!("sha256 {digest}, {} rules", p.rules().len()),
            )?;
        }
        let mut st = self.policy.lock();
        st.modified = stamp;
        match result {
            Ok(p) => {
                let rules = p.rules().len();
                // Lint runs on every load: a policy that grants `#` to everyone still goes
                // live (it is valid), but not silently.
                let warnings: Vec<tollgate_policy::Lint> = p
                    .lint()
                    .into_iter()
                    .filter(|l| l.severity == tollgate_policy::Severity::Warning)
                    .collect();
                st.policy = Arc::new(p);
                drop(st);
                if let Ok(text) = &text {
                    self.note_policy_loaded(text, rules);
                }
                self.events.emit(EventKind::PolicyReloaded {
                    source: source.clone(),
                    rules,
                    warnings: warnings.len(),
                });
                for w in warnings {
                    tracing::warn!(policy = %source, "{w}");
                    self.events.emit(EventKind::PolicyWarning {
                        source: source.clone(),
                        rule: w.rule,
                        line: w.line,
                        message: w.message,
                    });
                }
                Ok(rules)
            }
            Err(error) => {
                drop(st);
                self.events.emit(EventKind::PolicyRejected {
                    source,
                    error: error.clone(),
                });
                Err(ControlError::PolicyRejected(error))
            }
        }
    }

    /// Reload and publish if the file changed since the last look.
    pub fn reload_if_changed(&self) {
        if policy_stamp(&self.cfg.policy_file) == self.policy.lock().modified {
            return;
        }
        self.reload_and_publish();
    }

    /// Reload the policy and, if it is good, publish it (every live connection re-checks).
    pub fn reload_and_publish(&self) {
        match self.reload_policy() {
            Ok(rules) => {
                tracing::info!(rules, "policy reloaded");
                let policy = self.policy();
                self.update(Changed::All, |s| s.policy = policy);
            }
            Err(e) => tracing::error!("policy rejected, the previous policy stays in force:\n{e}"),
        }
    }

    // ---- devices --------------------------------------------------------------------------

    /// Register a device and issue it a key and certificate made here. An id that belongs to a
    /// revoked device is refused unless `reactivate` says to bring it back.
    pub fn add_device(
        &self,
        id: &str,
        groups: &[String],
        reactivate: bool,
        by: &str,
    ) -> Result<IssuedDevice, ControlError> {
        check_name("device id", id)?;
        check_groups(groups)?;
        let existing = self.registry.device(id)?;
        match &existing {
            Some(d) if d.revoked_at.is_none() => {
                return Err(ControlError::DeviceExists(id.to_owned()))
            }
            Some(_) if !reactivate => {
                return Err(ControlError::ReactivationRequired(id.to_owned()))
            }
            _ => {}
        }
        self.write_ahead("add_device", id, by, &format!("groups {groups:?}"))?;
        let reactivated = match existing {
            None => {
                self.registry.create_device(id, groups, now())?;
                false
            }
            Some(d) if d.revoked_at.is_none() => {
                return Err(ControlError::DeviceExists(id.to_owned()))
            }
            Some(_) if !reactivate => {
                return Err(ControlError::ReactivationRequired(id.to_owned()))
            }
            Some(d) => {
                self.registry.reactivate_device(id, groups, now())?;
                self.events.emit(EventKind::DeviceReactivated {
                    device: id.to_owned(),
                    groups_before: d.groups,
                    groups: groups.to_vec(),
                    by: by.to_owned(),
                });
                true
            }
        };
        let issued = self.issue_device(id, groups, None, "ecdsa-p256")?;
        self.refresh_device(id, &[])?;
        self.evaluate_new(id);
        self.events.emit(EventKind::DeviceAdded {
            device: id.to_owned(),
            groups: groups.to_vec(),
            serial: issued.serial.clone(),
            by: by.to_owned(),
        });
        Ok(IssuedDevice {
            id: id.to_owned(),
            groups: groups.to_vec(),
            serial: issued.serial,
            not_after: issued.validity.not_after.unix_timestamp(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem.unwrap_or_default(),
            ca_pem: self.authority.root_pem.clone(),
            reactivated,
        })
    }

    /// Register many new devices at once for **load testing**: one ECDSA P-256 key pair is
    /// made and every device gets its own certificate (its own serial and identity) for that
    /// same public key, so issuing a hundred thousand takes seconds instead of a key
    /// generation each. A fleet whose devices share a private key is one stolen key away from
    /// all of them: this is for benchmarks only, and neither the admin API nor the CLI offers
    /// it. Otherwise it is [`Control::add_device`] for each device with the work shared: each
    /// registration is written ahead as its own `add_device` control action, the devices and
    /// certificates are stored in one registry transaction (all or none: an id that exists is
    /// `DeviceExists`), one snapshot change admits them, and each gets its `device_added`
    /// event. Returns the shared private key (PEM) and each device's certificate, in order.
    pub fn add_devices_with_shared_key(
        &self,
        devices: &[(String, Vec<String>)],
        by: &str,
    ) -> Result<(String, Vec<IssuedDevice>), ControlError> {
        for (id, groups) in devices {
            check_name("device id", id)?;
            check_groups(groups)?;
        }
        let key = tollgate_pki::generate_key()?;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        )
        .map_err(|e| ControlError::Pki(tollgate_pki::PkiError::from(e)))?;
        self.events
            .emit_durable_all(
                devices
                    .iter()
                    .map(|(id, groups)| EventKind::ControlAction {
                        action: "add_device".to_owned(),
                        subject: id.clone(),
                        by: by.to_owned(),
                        detail: format!("groups {groups:?} (shared benchmark key)"),
                    })
                    .collect(),
                WRITE_AHEAD_TIMEOUT,
            )
            .map_err(|e| ControlError::AuditUnavailable(e.to_string()))?;
        let issuer = self.issuer_serial();
        let mut issued = Vec::with_capacity(devices.len());
        let mut records = Vec::with_capacity(devices.len());
        for (id, groups) in devices {
            let (cert, record) =
                self.sign_device(id, groups, Some(&spki), "ecdsa-p256", issuer.clone())?;
            issued.push(cert);
            records.push(record);
        }
        self.registry
            .create_devices_with_certificates(devices, &records, now())
            .map_err(|e| match e {
                RegistryError::Conflict(what) => ControlError::DeviceExists(
                    what.strip_prefix("device ").unwrap_or(&what).to_owned(),
                ),
                other => other.into(),
            })?;
        let ids: Vec<String> = devices.iter().map(|(id, _)| id.clone()).collect();
        self.refresh_devices(&ids, &[])?;
        if let Err(e) = self.evaluate_fleet(Some(ids.as_slice()), "enrollment", None) {
            tracing::error!("evaluating compliance of {} new devices: {e}", ids.len());
        }
        let ca_pem = self.authority.root_pem.clone();
        let out = devices
            .iter()
            .zip(issued)
            .map(|((id, groups), cert)| {
                self.events.emit(EventKind::DeviceAdded {
                    device: id.clone(),
                    groups: groups.clone(),
                    serial: cert.serial.clone(),
                    by: by.to_owned(),
                });
                IssuedDevice {
                    id: id.clone(),
                    groups: groups.clone(),
                    serial: cert.serial,
                    not_after: cert.validity.not_after.unix_timestamp(),
                    cert_pem: cert.cert_pem,
                    key_pem: String::new(),
                    ca_pem: ca_pem.clone(),
                    reactivated: false,
                }
            })
            .collect();
        Ok((key.serialize_pem(), out))
    }

    /// Record a control action in the audit log before it takes effect (a `control_action`
    /// event, waited for until it is durable). An error means the action must not happen.
    pub fn write_ahead(
        &self,
        action: &str,
        subject: &str,
        by: &str,
        detail: &str,
    ) -> Result<u64, ControlError> {
        self.events
            .emit_durable(
                EventKind::ControlAction {
                    action: action.to_owned(),
                    subject: subject.to_owned(),
                    by: by.to_owned(),
                    detail: detail.to_owned(),
                },
                WRITE_AHEAD_TIMEOUT,
            )
            .map_err(|e| ControlError::AuditUnavailable(e.to_string()))
    }

    /// What revoking and deleting a device share: the device must exist; the action is
    /// written ahead; `registry_op` revokes its certificates (returning their serials); the new
    /// snapshot refuses the serials at the next handshake and CONNECT while every live
    /// connection of the device re-checks against it and closes (0x98: the count of
    /// connections told is the count closed); the CRL is re-signed. Returns the serials and
    /// the connections closed.
    pub(crate) fn end_device(
        &self,
        action: &str,
        id: &str,
        reason: &str,
        by: &str,
        registry_op: impl FnOnce(i64) -> Result<Vec<String>, RegistryError>,
    ) -> Result<(Vec<String>, usize), ControlError> {
        if self.registry.device(id)?.is_none() {
            return Err(ControlError::DeviceNotFound(id.to_owned()));
        }
        self.write_ahead(action, id, by, reason)?;
        let serials = registry_op(now()).map_err(|e| match e {
            RegistryError::NotFound(_) => ControlError::DeviceNotFound(id.to_owned()),
            other => other.into(),
        })?;
        let sessions_closed = self.refresh_device(id, &serials)?;
        if let Err(e) = self.regenerate_crl() {
            tracing::error!("re-signing the CRL after {action}: {e}");
        }
        Ok((serials, sessions_closed))
    }

    /// Revoke every certificate of a device, close its live connections and re-sign the CRL.
    pub fn revoke_device(&self, id: &str, reason: &str, by: &str) -> Result<Revoked, ControlError> {
        let (serials, sessions_closed) =
            self.end_device("revoke_device", id, reason, by, |now| {
                self.registry.revoke_device(id, reason, now)
            })?;
        self.events.emit(EventKind::DeviceRevoked {
            device: id.to_owned(),
            serials: serials.clone(),
            reason: reason.to_owned(),
            by: by.to_owned(),
            sessions_closed,
        });
        Ok(Revoked {
            id: id.to_owned(),
            serials,
            sessions_closed,
        })
    }

    /// Revoke several devices at once (a lost batch, a compromised production run): what
    /// [`Control::revoke_device`] does for each, with the work shared. Every id must name a
    /// device (else nothing happens: `DeviceNotFound` names the first that does not); an id
    /// given twice counts once. Each revocation is written ahead as its own `revoke_device`
    /// control action (stored together, one group commit per 128), the registry revokes them
    /// all in one transaction, one new snapshot carries them to the data plane (only these
    /// devices' live connections re-check, and close with 0x98), one CRL is signed, and each
    /// device gets its `device_revoked` event. Returns one [`Revoked`] per device, in order.
    pub fn revoke_devices(
        &self,
        ids: &[String],
        reason: &str,
        by: &str,
    ) -> Result<Vec<Revoked>, ControlError> {
        let mut seen = HashSet::new();
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .cloned()
            .collect();
        if ids.is_empty() {
            return Err(ControlError::InvalidRequest(
                "no device to revoke: give at least one id".into(),
            ));
        }
        for id in &ids {
            if self.registry.device(id)?.is_none() {
                return Err(ControlError::DeviceNotFound(id.clone()));
            }
        }
        self.events
            .emit_durable_all(
                ids.iter()
                    .map(|id| EventKind::ControlAction {
                        action: "revoke_device".to_owned(),
                        subject: id.clone(),
                        by: by.to_owned(),
                        detail: reason.to_owned(),
                    })
                    .collect(),
                WRITE_AHEAD_TIMEOUT,
            )
            .map_err(|e| ControlError::AuditUnavailable(e.to_string()))?;
        let serials = self
            .registry
            .revoke_devices(&ids, reason, now())
            .map_err(|e| match e {
                RegistryError::NotFound(what) => ControlError::DeviceNotFound(
                    what.strip_prefix("device ").unwrap_or(&what).to_owned(),
                ),
                other => other.into(),
            })?;
        let all: Vec<String> = serials.iter().flatten().cloned().collect();
        let closed = self.refresh_devices(&ids, &all)?;
        if let Err(e) = self.regenerate_crl() {
            tracing::error!(
                "re-signing the CRL after revoking {} devices: {e}",
                ids.len()
            );
        }
        Ok(ids
            .into_iter()
            .zip(serials)
            .zip(closed)
            .map(|((id, serials), sessions_closed)| {
                self.events.emit(EventKind::DeviceRevoked {
                    device: id.clone(),
                    serials: serials.clone(),
                    reason: reason.to_owned(),
                    by: by.to_owned(),
                    sessions_closed,
                });
                Revoked {
                    id,
                    serials,
                    sessions_closed,
                }
            })
            .collect())
    }

    /// Quarantine a device for `source` (another source's reasons stay). Its live connections
    /// are confined to the quarantine policy at once, not closed.
    pub fn quarantine(
        &self,
        id: &str,
        source: &str,
        reason: &str,
        by: &str,
    ) -> Result<QuarantineOutcome, ControlError> {
        self.quarantine_until(id, source, reason, by, None)
    }

    /// [`Control::quarantine`], lifting itself at `until` (Unix seconds) when given: a
    /// detector's mitigation with a time-to-live ([`Control::expire_quarantines`] lifts it,
    /// also after a restart).
    pub fn quarantine_until(
        &self,
        id: &str,
        source: &str,
        reason: &str,
        by: &str,
        until: Option<i64>,
    ) -> Result<QuarantineOutcome, ControlError> {
        if reason.trim().is_empty() {
            return Err(ControlError::InvalidRequest(
                "a quarantine needs a reason".into(),
            ));
        }
        match self.registry.device(id)? {
            None => return Err(ControlError::DeviceNotFound(id.to_owned())),
            Some(d) if d.revoked_at.is_some() => {
                return Err(ControlError::DeviceRevoked(id.to_owned()))
            }
            Some(_) => {}
        }
        let detail = match until {
            Some(u) => format!("{source}: {reason} (until {u})"),
            None => format!("{source}: {reason}"),
        };
        self.write_ahead("quarantine", id, by, &detail)?;
        self.registry.quarantine(
            id,
            &QuarantineReason {
                source: source.to_owned(),
                reason: reason.to_owned(),
                by: by.to_owned(),
                since: now(),
                until,
            },
        )?;
        self.refresh_device(id, &[])?;
        let out = self.quarantine_outcome(id)?;
        self.events.emit(EventKind::DeviceQuarantined {
            device: id.to_owned(),
            source: source.to_owned(),
            reason: reason.to_owned(),
            by: by.to_owned(),
            reasons: out.quarantine.len(),
        });
        Ok(out)
    }

    /// Every active device with its cohorts (groups, and the model its inventory names), for
    /// the detectors' cohort baselines.
    pub fn cohorts(&self) -> Result<Vec<Cohorts>, ControlError> {
        let models: std::collections::HashMap<String, String> = self
            .registry
            .inventories()?
            .into_iter()
            .filter_map(|i| Some((i.device, i.model?)))
            .collect();
        let snap = self.snapshot();
        Ok(snap
            .devices
            .iter()
            .map(|(id, a)| (id.clone(), a.groups.clone(), models.get(id).cloned()))
            .collect())
    }

    /// Lift every quarantine reason whose time-to-live has run out; returns how many.
    pub fn expire_quarantines(&self) -> Result<usize, ControlError> {
        let now = now();
        let due: Vec<(String, String)> = self
            .registry
            .quarantines()?
            .into_iter()
            .filter(|(_, q)| q.until.is_some_and(|u| u <= now))
            .map(|(d, q)| (d, q.source))
            .collect();
        let mut lifted = 0;
        for (device, source) in due {
            // Checked again in the registry's transaction: a reason renewed since the list was
            // read (the detector quarantined the device again) stays.
            self.write_ahead("release", &device, "ttl", &source)?;
            let Some(removed) = self.registry.release_expired(&device, &source, now)? else {
                continue;
            };
            lifted += 1;
            self.refresh_device(&device, &[])?;
            let out = self.quarantine_outcome(&device)?;
            self.events.emit(EventKind::DeviceReleased {
                device: device.clone(),
                sources: vec![removed.source],
                remaining: out.quarantine.iter().map(|q| q.source.clone()).collect(),
                by: "ttl".to_owned(),
            });
        }
        Ok(lifted)
    }

    /// Cap a device's publishes at `per_second` for `ttl` (a mitigation): its live and future
    /// connections' publishes over the rate are refused until the throttle lifts itself.
    pub fn throttle(
        &self,
        id: &str,
        per_second: u32,
        ttl: Duration,
        by: &str,
    ) -> Result<(), ControlError> {
        if self.registry.device(id)?.is_none() {
            return Err(ControlError::DeviceNotFound(id.to_owned()));
        }
        let until_ms = now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        self.write_ahead(
            "throttle",
            id,
            by,
            &format!("{per_second}/s for {} s", ttl.as_secs()),
        )?;
        if let Some(dp) = self.data_plane.get() {
            dp.throttle(id, per_second, until_ms);
        }
        self.events.emit(EventKind::DeviceThrottled {
            device: id.to_owned(),
            per_second,
            ttl_secs: ttl.as_secs(),
            by: by.to_owned(),
        });
        Ok(())
    }

    /// Close a device's live connections now (no will; it may reconnect): a mitigation.
    pub fn disconnect(&self, id: &str, reason: &str, by: &str) -> Result<usize, ControlError> {
        if self.registry.device(id)?.is_none() {
            return Err(ControlError::DeviceNotFound(id.to_owned()));
        }
        self.write_ahead("disconnect", id, by, reason)?;
        let closed = self
            .data_plane
            .get()
            .map(|dp| dp.close_device(id, reason))
            .unwrap_or(0);
        self.events.emit(EventKind::DeviceDisconnected {
            device: id.to_owned(),
            connections: closed,
            reason: reason.to_owned(),
            by: by.to_owned(),
        });
        Ok(closed)
    }

    /// Remove the quarantine reasons of `source` (all with `None`). The device gets its normal
    /// policy back, on its live connections too, once no reason remains.
    pub fn release(
        &self,
        id: &str,
        source: Option<&str>,
        by: &str,
    ) -> Result<QuarantineOutcome, ControlError> {
        if self.registry.device(id)?.is_none() {
            return Err(ControlError::DeviceNotFound(id.to_owned()));
        }
        self.write_ahead("release", id, by, source.unwrap_or("all reasons"))?;
        let removed = self.registry.release(id, source)?;
        if removed.is_empty() {
            return Err(ControlError::NotQuarantined {
                device: id.to_owned(),
                by: source.map(|s| format!(" by {s}")).unwrap_or_default(),
            });
        }
        self.refresh_device(id, &[])?;
        let out = self.quarantine_outcome(id)?;
        let compliance_released = removed
            .iter()
            .any(|q| q.source.starts_with(compliance::SOURCE_PREFIX));
        self.events.emit(EventKind::DeviceReleased {
            device: id.to_owned(),
            sources: removed.into_iter().map(|q| q.source).collect(),
            remaining: out.quarantine.iter().map(|q| q.source.clone()).collect(),
            by: by.to_owned(),
        });
        if compliance_released {
            // Compliance decides its own reasons: a rule that still fails holds the device
            // again at once (a waiver is the way to exempt it).
            if let Err(e) = self.evaluate_fleet(Some(&[id.to_owned()]), "operator_release", None) {
                tracing::error!(device = id, "re-evaluating compliance after a release: {e}");
            }
            return self.quarantine_outcome(id);
        }
        Ok(out)
    }

    /// Apply several devices' quarantine changes (from a compliance evaluation) in one
    /// registry transaction and one snapshot, then report each as the quarantine and release
    /// events an operator's action would give.
    pub(crate) fn apply_quarantine_changes(
        &self,
        changes: &[tollgate_registry::QuarantineChange],
    ) -> Result<(), ControlError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.registry.apply_quarantines(changes)?;
        let ids: Vec<String> = changes.iter().map(|c| c.device.clone()).collect();
        // Each device is read from the registry under the snapshot lock (see refresh_device).
        self.update(Changed::Devices(ids.clone()), |s| {
            for id in &ids {
                match self.access_of(id) {
                    Ok(Some(a)) => {
                        s.devices.insert(id.clone(), a);
                    }
                    Ok(None) => {
                        s.devices.remove(id);
                    }
                    Err(e) => tracing::error!(device = %id, "reading a device's access: {e}"),
                }
            }
        });
        let snap = self.snapshot();
        for c in changes {
            let remaining: Vec<String> = snap
                .device(&c.device)
                .map(|a| a.quarantine.iter().map(|q| q.source.clone()).collect())
                .unwrap_or_default();
            for r in &c.set {
                self.events.emit(EventKind::DeviceQuarantined {
                    device: c.device.clone(),
                    source: r.source.clone(),
                    reason: r.reason.clone(),
                    by: r.by.clone(),
                    reasons: remaining.len(),
                });
            }
            if !c.remove.is_empty() {
                self.events.emit(EventKind::DeviceReleased {
                    device: c.device.clone(),
                    sources: c.remove.clone(),
                    remaining,
                    by: "compliance".into(),
                });
            }
        }
        Ok(())
    }

    fn quarantine_outcome(&self, id: &str) -> Result<QuarantineOutcome, ControlError> {
        let quarantine: Vec<QuarantineView> = self
            .registry
            .quarantine_of(id)?
            .into_iter()
            .map(view_reason)
            .collect();
        Ok(QuarantineOutcome {
            id: id.to_owned(),
            state: if quarantine.is_empty() {
                "active"
            } else {
                "quarantined"
            },
            quarantine,
            connected: self.connected().contains(id),
        })
    }

    /// Every device.
    pub fn devices(&self) -> Result<Vec<DeviceView>, ControlError> {
        let connected = self.connected();
        self.registry
            .devices()?
            .into_iter()
            .map(|d| self.view(d, &connected))
            .collect()
    }

    /// One device.
    pub fn device(&self, id: &str) -> Result<DeviceView, ControlError> {
        let connected = self.connected();
        let d = self
            .registry
            .device(id)?
            .ok_or_else(|| ControlError::DeviceNotFound(id.to_owned()))?;
        let revoked = d.revoked_at.is_some();
        let mut v = self.view(d, &connected)?;
        v.inventory = Some(self.inventory(id)?);
        if !revoked {
            v.compliance = self.compliance_report(Some(id))?.into_iter().next();
        }
        Ok(v)
    }

    fn view(
        &self,
        d: tollgate_registry::Device,
        connected: &HashSet<String>,
    ) -> Result<DeviceView, ControlError> {
        let certificates = self
            .registry
            .certificates_of(&d.id)?
            .into_iter()
            .filter(|c| c.kind == CertKind::Device)
            .map(|c| CertView {
                serial: c.serial,
                not_before: c.not_before,
                not_after: c.not_after,
                revoked_at: c.revoked_at,
            })
            .collect();
        let bootstrap = self.registry.bootstrap_of(&d.id)?.map(|b| BootstrapView {
            supplier: b.supplier,
            model: b.model,
            hardware_serial: b.hardware_serial,
        });
        let quarantine: Vec<QuarantineView> = if d.revoked_at.is_some() {
            Vec::new()
        } else {
            self.registry
                .quarantine_of(&d.id)?
                .into_iter()
                .map(view_reason)
                .collect()
        };
        let labels = self
            .registry
            .inventory(&d.id)?
            .map(|i| i.labels)
            .unwrap_or_default();
        let state = if d.revoked_at.is_some() {
            "revoked"
        } else if !quarantine.is_empty() {
            "quarantined"
        } else {
            "active"
        };
        let seen = self.registry.last_seen(&d.id)?;
        Ok(DeviceView {
            bootstrap,
            connected: connected.contains(&d.id),
            last_seen: seen.as_ref().map(|l| l.at),
            last_address: seen.and_then(|l| l.addr),
            state,
            status: state,
            quarantine,
            id: d.id,
            groups: d.groups,
            labels,
            created_at: d.created_at,
            revoked_at: d.revoked_at,
            certificates,
            inventory: None,
            compliance: None,
        })
    }

    /// Record that a device connected (from `addr`) or disconnected, now: its last-seen time and
    /// address, shown by `device list` and read by the configuration audit's dormancy rule.
    pub fn record_seen(&self, device: &str, addr: Option<&str>) -> Result<(), ControlError> {
        Ok(self.registry.record_seen(device, now(), addr)?)
    }

    /// Issue a device certificate (for `public_key`, or with a fresh key) with the lifetime of
    /// its groups, and record it. The one place device certificates are made.
    fn issue_device(
        &self,
        id: &str,
        groups: &[String],
        public_key: Option<&rcgen::SubjectPublicKeyInfo>,
        key: &str,
    ) -> Result<tollgate_pki::IssuedCert, ControlError> {
        let issuer = self.issuer_serial();
        let (issued, record) = self.sign_device(id, groups, public_key, key, issuer)?;
        self.registry.record_certificate(&record)?;
        Ok(issued)
    }

    /// Sign a device certificate and make its registry record (not stored yet).
    fn sign_device(
        &self,
        id: &str,
        groups: &[String],
        public_key: Option<&rcgen::SubjectPublicKeyInfo>,
        key: &str,
        issuer: Option<String>,
    ) -> Result<(tollgate_pki::IssuedCert, CertRecord), ControlError> {
        let issued = self.authority.issuer.issue(
            &CertProfile::Device { id },
            Validity::starting_now(self.lifetime_for(groups)),
            public_key,
        )?;
        let record = CertRecord {
            serial: issued.serial.clone(),
            subject: id.to_owned(),
            kind: CertKind::Device,
            not_before: issued.validity.not_before.unix_timestamp(),
            not_after: issued.validity.not_after.unix_timestamp(),
            revoked_at: None,
            revoke_reason: None,
            key: Some(key.to_owned()),
            spki: cert_spki(&issued.cert_pem),
            issuer,
        };
        Ok((issued, record))
    }

    /// Lifetime for a device in `groups`: the shortest of its groups' overrides, else the default.
    fn lifetime_for(&self, groups: &[String]) -> time::Duration {
        groups
            .iter()
            .filter_map(|g| self.cfg.group_lifetimes.get(g))
            .min()
            .copied()
            .unwrap_or(self.cfg.cert_lifetime)
    }

    // ---- enrollment -----------------------------------------------------------------------

    /// Issue a one-time enrollment token for `id`. For a device that exists, the token keeps
    /// its groups unless `change_groups` says to replace them with `groups`. Returns the token
    /// (shown once) and its expiry.
    pub fn create_token(
        &self,
        id: &str,
        groups: &[String],
        change_groups: bool,
        ttl: Option<Duration>,
        by: &str,
    ) -> Result<(String, i64), ControlError> {
        check_name("device id", id)?;
        check_groups(groups)?;
        if let Some(d) = self.registry.device(id)? {
            if d.revoked_at.is_some() {
                return Err(ControlError::DeviceRevoked(id.to_owned()));
            }
            let differ = !groups.is_empty() && d.groups != groups;
            if differ && !change_groups {
                return Err(ControlError::GroupChangeRequired {
                    device: id.to_owned(),
                    current: d.groups,
                    requested: groups.to_vec(),
                });
            }
        }
        let ttl = ttl.unwrap_or(self.cfg.token_ttl);
        if ttl > self.cfg.max_token_ttl || ttl.is_zero() {
            return Err(ControlError::InvalidRequest(format!(
                "a token lifetime must be between 1 second and {} seconds (devices.max_token_ttl_secs); {} was asked",
                self.cfg.max_token_ttl.as_secs(),
                ttl.as_secs()
            )));
        }
        self.write_ahead(
            "create_token",
            id,
            by,
            &format!("groups {groups:?}, valid {} s", ttl.as_secs()),
        )?;
        let token = tollgate_pki::generate_token()?;
        let expires_at = now().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        self.registry.create_token(
            id,
            &TokenGrant {
                groups: groups.to_vec(),
                change_groups,
            },
            &tollgate_pki::hash_token(&token),
            expires_at,
            now(),
        )?;
        self.events.emit(EventKind::EnrollmentTokenIssued {
            device: id.to_owned(),
            expires_at,
            by: by.to_owned(),
        });
        Ok((token, expires_at))
    }

    /// Make sure an enrolling device exists and may enroll: create it, or find it active.
    /// Enrollment never brings a revoked device back.
    fn enrolling_device(
        &self,
        id: &str,
        groups: &[String],
        change_groups: bool,
        by: &str,
    ) -> Result<Vec<String>, ControlError> {
        match self.registry.device(id)? {
            None => {
                self.registry.create_device(id, groups, now())?;
                Ok(groups.to_vec())
            }
            Some(d) if d.revoked_at.is_some() => Err(ControlError::DeviceRevoked(id.to_owned())),
            Some(d) if change_groups && d.groups != groups => {
                self.registry.set_groups(id, groups)?;
                self.events.emit(EventKind::DeviceGroupsChanged {
                    device: id.to_owned(),
                    from: d.groups,
                    to: groups.to_vec(),
                    by: by.to_owned(),
                });
                Ok(groups.to_vec())
            }
            Some(d) => Ok(d.groups),
        }
    }

    fn issue_from_csr(
        &self,
        id: &str,
        groups: &[String],
        csr: &tollgate_pki::CheckedCsr,
    ) -> Result<Enrolled, ControlError> {
        let issued = self.issue_device(id, groups, Some(&csr.public_key), &key_name(&csr.key))?;
        Ok(Enrolled {
            serial: issued.serial,
            cert_der: ca::pem_to_der(&issued.cert_pem)?,
        })
    }

    /// Whether `token` is a live enrollment token (for device `id`, when the request names
    /// one): checked from the request's headers before its body is read, so a caller without
    /// a token cannot make the server read a CSR. Consumes nothing; [`Control::enroll_with_token`]
    /// decides.
    pub fn check_token(&self, id: Option<&str>, token: &str) -> Result<(), ControlError> {
        if let Some(id) = id {
            check_name("device id", id)?;
        }
        self.registry
            .check_token(id, &tollgate_pki::hash_token(token), now())
            .map_err(|e| match e {
                RegistryError::Token(why) => ControlError::TokenRefused(why),
                other => ControlError::from(other),
            })
    }

    /// EST simpleenroll authorised by a one-time token.
    pub fn enroll_with_token(
        &self,
        id: Option<&str>,
        token: &str,
        csr_der: &[u8],
    ) -> Result<Enrolled, ControlError> {
        let csr = tollgate_pki::check_csr(csr_der, &self.cfg.weak_keys)?;
        let cn = csr.common_name.clone().unwrap_or_default();
        // With Bearer auth the device is named by the CSR; with Basic, both must agree.
        let id = id.unwrap_or(&cn).to_owned();
        check_name("device id", &id)?;
        if cn != id {
            return Err(ControlError::SubjectMismatch {
                cn,
                device: id,
                why: "which the token is for",
            });
        }
        let grant = self
            .registry
            .consume_token(&id, &tollgate_pki::hash_token(token), now())
            .map_err(|e| match e {
                RegistryError::Token(why) => ControlError::TokenRefused(why),
                other => ControlError::from(other),
            })?;
        let groups = self.enrolling_device(&id, &grant.groups, grant.change_groups, "token")?;
        let out = self.issue_from_csr(&id, &groups, &csr)?;
        self.refresh_device(&id, &[])?;
        self.evaluate_new(&id);
        self.events.emit(EventKind::DeviceEnrolled {
            device: id,
            serial: out.serial.clone(),
            method: "token",
            renewal: false,
        });
        Ok(out)
    }

    /// EST simplereenroll: the device authenticated with its current certificate.
    pub fn reenroll(
        &self,
        device: &str,
        presented_serial: &str,
        csr_der: &[u8],
    ) -> Result<Enrolled, ControlError> {
        let access = self.snapshot();
        if access.revoked.contains(presented_serial) {
            return Err(ControlError::NotActive(
                "the presented certificate is revoked".into(),
            ));
        }
        let Some(groups) = access.device(device).map(|d| d.groups.clone()) else {
            return Err(ControlError::NotActive(format!(
                "device {device:?} is not registered or is revoked"
            )));
        };
        let csr = tollgate_pki::check_csr(csr_der, &self.cfg.weak_keys)?;
        if csr.common_name.as_deref() != Some(device) {
            return Err(ControlError::SubjectMismatch {
                cn: csr.common_name.unwrap_or_default(),
                device: device.to_owned(),
                why: "the authenticated device",
            });
        }
        let out = self.issue_from_csr(device, &groups, &csr)?;
        self.events.emit(EventKind::DeviceEnrolled {
            device: device.to_owned(),
            serial: out.serial.clone(),
            method: "reenroll",
            renewal: true,
        });
        Ok(out)
    }

    // ---- suppliers ------------------------------------------------------------------------

    fn load_suppliers(&self) -> Result<(), ControlError> {
        let mut list = Vec::new();
        let mut broken = Vec::new();
        for s in self.registry.suppliers()? {
            let parsed = if s.ca_pem.trim().is_empty() {
                // A supplier recorded for inventory only: its devices enroll by token.
                Ok(Vec::new())
            } else {
                pem_certs_to_der(&s.ca_pem)
            };
            match parsed {
                Ok(ca_ders) => list.push(SupplierTrust {
                    name: s.name,
                    ca_ders,
                    groups: s.groups,
                    allow_reenroll: s.allow_reenroll,
                }),
                // Reported, not swallowed: the supplier's devices cannot enroll until fixed.
                Err(e) => {
                    tracing::error!(
                        supplier = %s.name,
                        "the stored CA of supplier {} does not parse; its devices cannot enroll: {e}",
                        s.name
                    );
                    broken.push(SupplierView {
                        name: s.name,
                        groups: s.groups,
                        allow_reenroll: s.allow_reenroll,
                        ca_error: Some(e.to_string()),
                    });
                }
            }
        }
        self.suppliers.store(Arc::new(list));
        self.broken_suppliers.store(Arc::new(broken));
        self.publish_trust();
        Ok(())
    }

    /// Register a supplier's manufacturing CA.
    pub fn add_supplier(
        &self,
        name: &str,
        ca_pem: &str,
        groups: &[String],
        allow_reenroll: bool,
        by: &str,
    ) -> Result<SupplierView, ControlError> {
        check_name("supplier name", name)?;
        check_groups(groups)?;
        if !ca_pem.trim().is_empty() {
            pem_certs_to_der(ca_pem)?;
        }
        self.write_ahead(
            "add_supplier",
            name,
            by,
            &format!("groups {groups:?}, re-enrolment {allow_reenroll}"),
        )?;
        self.registry
            .add_supplier(
                &Supplier {
                    name: name.to_owned(),
                    ca_pem: ca_pem.to_owned(),
                    groups: groups.to_vec(),
                    allow_reenroll,
                },
                now(),
            )
            .map_err(|e| match e {
                RegistryError::Conflict(_) => ControlError::SupplierExists(name.to_owned()),
                other => other.into(),
            })?;
        self.load_suppliers()?;
        self.events.emit(EventKind::SupplierAdded {
            supplier: name.to_owned(),
            by: by.to_owned(),
        });
        Ok(SupplierView {
            name: name.to_owned(),
            groups: groups.to_vec(),
            allow_reenroll,
            ca_error: None,
        })
    }

    /// Registered suppliers, those whose CA cannot be used included (with `ca_error`).
    pub fn suppliers(&self) -> Vec<SupplierView> {
        let mut v: Vec<SupplierView> = self
            .suppliers
            .load()
            .iter()
            .map(|s| SupplierView {
                name: s.name.clone(),
                groups: s.groups.clone(),
                allow_reenroll: s.allow_reenroll,
                ca_error: None,
            })
            .collect();
        v.extend(self.broken_suppliers.load().iter().map(|b| SupplierView {
            name: b.name.clone(),
            groups: b.groups.clone(),
            allow_reenroll: b.allow_reenroll,
            ca_error: b.ca_error.clone(),
        }));
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Who issued a verified client certificate.
    pub fn classify(&self, cert_der: &[u8]) -> PeerKind {
        if self
            .authority
            .issuing_anchors()
            .iter()
            .any(|issuing| tollgate_pki::is_issued_by(cert_der, issuing))
        {
            return PeerKind::Operational;
        }
        for s in self.suppliers.load().iter() {
            if s.ca_ders
                .iter()
                .any(|ca| tollgate_pki::is_issued_by(cert_der, ca))
            {
                return PeerKind::Supplier(s.name.clone());
            }
        }
        PeerKind::Anonymous
    }

    /// EST simpleenroll authorised by a supplier's bootstrap certificate. A device id is bound
    /// to the supplier that first enrolled it, and enrollment never reactivates a revoked one.
    pub fn enroll_with_bootstrap(
        &self,
        supplier: &str,
        bootstrap_der: &[u8],
        csr_der: &[u8],
    ) -> Result<Enrolled, ControlError> {
        let sup = self
            .suppliers
            .load()
            .iter()
            .find(|s| s.name == supplier)
            .cloned()
            .ok_or_else(|| ControlError::UnknownSupplier(supplier.to_owned()))?;
        let ident = tollgate_pki::bootstrap_identity(bootstrap_der)
            .map_err(|e| ControlError::BootstrapRefused(e.to_string()))?;
        let csr = tollgate_pki::check_csr(csr_der, &self.cfg.weak_keys)?;
        if csr.common_name.as_deref() != Some(ident.device_id.as_str()) {
            return Err(ControlError::SubjectMismatch {
                cn: csr.common_name.unwrap_or_default(),
                device: ident.device_id,
                why: "which the bootstrap certificate is for",
            });
        }
        let id = ident.device_id.clone();
        if let Some(d) = self.registry.device(&id)? {
            if d.revoked_at.is_some() {
                return Err(ControlError::DeviceRevoked(id));
            }
            match self.registry.bootstrap_of(&id)? {
                Some(b) if b.supplier == sup.name => {}
                Some(b) => {
                    return Err(ControlError::SupplierMismatch {
                        device: id,
                        bound: format!("supplier {:?}", b.supplier),
                        supplier: sup.name,
                    })
                }
                None => {
                    return Err(ControlError::SupplierMismatch {
                        device: id,
                        bound: "no supplier (it was registered by an operator)".into(),
                        supplier: sup.name,
                    })
                }
            }
        }
        self.registry
            .record_bootstrap(
                &BootstrapRecord {
                    supplier: sup.name.clone(),
                    hardware_serial: ident.hardware_serial.clone(),
                    model: ident.model.clone(),
                    device_id: id.clone(),
                },
                sup.allow_reenroll,
                now(),
            )
            .map_err(|e| match e {
                RegistryError::Conflict(_) => ControlError::AlreadyEnrolled {
                    serial: ident.hardware_serial.clone(),
                    supplier: sup.name.clone(),
                },
                other => other.into(),
            })?;
        let groups = self.enrolling_device(&id, &sup.groups, false, &sup.name)?;
        let out = self.issue_from_csr(&id, &groups, &csr)?;
        self.record_bootstrap_inventory(
            &id,
            &sup.name,
            ident.model.as_deref(),
            &ident.hardware_serial,
        )?;
        self.refresh_device(&id, &[])?;
        self.evaluate_new(&id);
        self.events.emit(EventKind::DeviceEnrolled {
            device: id,
            serial: out.serial.clone(),
            method: "bootstrap",
            renewal: false,
        });
        Ok(out)
    }

    /// Evaluate a device that was just added or enrolled (a failure is logged: the device
    /// exists either way, and the next input change evaluates it again).
    fn evaluate_new(&self, id: &str) {
        if let Err(e) = self.evaluate_fleet(Some(&[id.to_owned()]), "enrollment", None) {
            tracing::error!(device = id, "evaluating compliance of a new device: {e}");
        }
    }

    // ---- CA and CRLs ----------------------------------------------------------------------

    /// The CA certificates (issuing, retired, root) as DER, for /cacerts.
    pub fn cacerts_der(&self) -> &[Vec<u8>] {
        &self.authority.cacerts_der
    }

    /// The current issuing CA's CRL (DER).
    pub fn crl(&self) -> Arc<Vec<u8>> {
        self.crls
            .lock()
            .issuing
            .first()
            .cloned()
            .unwrap_or_default()
    }

    /// The root CA's CRL (empty when the root key is offline).
    pub fn root_crl(&self) -> Arc<Vec<u8>> {
        Arc::clone(&self.crls.lock().root)
    }

    /// The hierarchy, for `tollgate ca status`.
    pub fn ca_status(&self) -> Result<serde_json::Value, ControlError> {
        let describe = |der: &[u8]| -> serde_json::Value {
            match tollgate_pki::parse_certificate(der) {
                Ok(i) => {
                    serde_json::json!({
                        "subject": i.subject,
                        "serial": i.serial,
                        "not_before": timefmt::rfc3339(i.not_before),
                        "not_after": timefmt::rfc3339(i.not_after),
                    })
                }
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            }
        };
        let cacerts = &self.authority.cacerts_der;
        let mut issuing = vec![{
            let mut v = describe(cacerts.first().map(Vec::as_slice).unwrap_or_default());
            v["current"] = true.into();
            v
        }];
        for (_, der, until) in &self.authority.retired {
            let mut v = describe(der);
            v["current"] = false.into();
            v["trusted_until"] = timefmt::rfc3339(*until).into();
            issuing.push(v);
        }
        let devices = self.registry.devices()?;
        let active = devices.iter().filter(|d| d.revoked_at.is_none()).count();
        let expiry = self.certificate_expiry()?;
        Ok(serde_json::json!({
            "root": describe(cacerts.last().map(Vec::as_slice).unwrap_or_default()),
            "issuing": issuing,
            "server": expiry["server"],
            "operators": expiry["operators"],
            "devices": { "active": active, "revoked": devices.len() - active },
            "revoked_certificates": self.registry.revoked_serials()?.len(),
            "suppliers": self.suppliers.load().len(),
        }))
    }

    /// Sign fresh CRLs from the registry and publish them.
    pub fn regenerate_crl(&self) -> Result<(), ControlError> {
        let revoked: Vec<tollgate_pki::RevokedEntry> = self
            .registry
            .revoked_certificates()?
            .into_iter()
            .filter(|c| c.kind != CertKind::Server)
            .map(|c| tollgate_pki::RevokedEntry {
                serial: c.serial,
                revoked_at: time::OffsetDateTime::from_unix_timestamp(c.revoked_at.unwrap_or(0))
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                key_compromise: c
                    .revoke_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("compromise")),
            })
            .collect();
        let number = self.registry.next_crl_number()?;
        let crls = self
            .authority
            .sign_crls(&revoked, number, self.cfg.crl_validity)?;
        *self.crls.lock() = crls;
        self.publish_trust();
        Ok(())
    }

    /// Re-sign the CRL when half its validity has passed.
    pub fn refresh_crl_if_due(&self) {
        let signed_at = self.crls.lock().signed_at;
        let half = i64::try_from(self.cfg.crl_validity.as_secs() / 2).unwrap_or(3600);
        if now() - signed_at >= half {
            if let Err(e) = self.regenerate_crl() {
                tracing::error!("re-signing the CRL: {e}");
            }
        }
    }
}

/// The key name compliance profiles use (`key_algorithms`).
fn key_name(k: &tollgate_pki::KeyKind) -> String {
    match k {
        tollgate_pki::KeyKind::EcP256 => "ecdsa-p256".into(),
        tollgate_pki::KeyKind::EcP384 => "ecdsa-p384".into(),
        tollgate_pki::KeyKind::Ed25519 => "ed25519".into(),
        tollgate_pki::KeyKind::Rsa(bits) => format!("rsa-{bits}"),
    }
}

fn pem_certs_to_der(pem: &str) -> Result<Vec<Vec<u8>>, ControlError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| ControlError::InvalidSupplierCa(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ControlError::InvalidSupplierCa(
            "no certificate in the supplier CA file".into(),
        ));
    }
    for c in &certs {
        let info = tollgate_pki::parse_certificate(c)
            .map_err(|e| ControlError::InvalidSupplierCa(e.to_string()))?;
        if !info.is_ca {
            return Err(ControlError::InvalidSupplierCa(format!(
                "{} is not a CA certificate",
                info.subject
            )));
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_registry::{SqliteRegistry, SupplierStore};

    fn data_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-control-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        ca::init(&d, &InitOptions::default()).expect("init");
        d
    }

    fn config(data: &std::path::Path) -> ControlConfig {
        ControlConfig {
            data: data.to_path_buf(),
            policy_file: data.join("policy.toml"),
            cert_lifetime: time::Duration::days(7),
            group_lifetimes: BTreeMap::new(),
            weak_keys: WeakKeyList::default(),
            token_ttl: Duration::from_secs(3600),
            max_token_ttl: Duration::from_secs(7 * 24 * 3600),
            crl_validity: Duration::from_secs(48 * 3600),
            compliance_file: data.join("compliance.toml"),
        }
    }

    fn open(data: &std::path::Path) -> Result<Arc<Control>, ControlError> {
        let registry = Arc::new(SqliteRegistry::open(&data.join("registry.db")).expect("registry"));
        Control::open(config(data), registry, EventBus::new(64, 1).0)
    }

    #[test]
    fn a_supplier_whose_stored_ca_does_not_parse_is_reported_not_silently_skipped() {
        let data = data_dir("broken-supplier");
        let reg = SqliteRegistry::open(&data.join("registry.db")).expect("registry");
        reg.add_supplier(
            &Supplier {
                name: "acme".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
                    .into(),
                groups: vec!["scanners".into()],
                allow_reenroll: false,
            },
            1,
        )
        .expect("stored");
        drop(reg);
        let cp = open(&data).expect("the control plane still opens");
        let listed = cp.suppliers();
        assert_eq!(
            listed.len(),
            1,
            "the broken supplier is listed, not dropped"
        );
        assert_eq!(listed[0].name, "acme");
        assert!(listed[0].ca_error.is_some(), "{listed:?}");
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    #[test]
    fn a_root_key_that_cannot_be_read_is_an_error_not_taken_for_an_offline_key() {
        let data = data_dir("root-key");
        let l = Layout::new(&data);
        // Present but unreadable (a directory stands in for a permission problem, which root
        // would not see): refusing to start is right, pretending the key is offline is not.
        std::fs::remove_file(l.root_ca_key()).expect("remove");
        std::fs::create_dir(l.root_ca_key()).expect("mkdir");
        let err = open(&data).expect_err("must not start");
        assert!(err.to_string().contains("root.key"), "{err}");
        // Truly absent is the documented way to keep the root offline: that starts.
        std::fs::remove_dir(l.root_ca_key()).expect("rmdir");
        let cp = open(&data).expect("an offline root key is fine");
        assert!(cp.root_crl().is_empty());
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    fn operator_csr(name: &str) -> String {
        let key = tollgate_pki::generate_key().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.serialize_request(&key).expect("csr").pem().expect("pem")
    }

    #[test]
    fn an_operator_s_role_and_revocation_hold_at_its_next_request() {
        use tollgate_registry::OperatorRole as R;
        let data = data_dir("operators");
        let cp = open(&data).expect("open");
        // `init` registered its admin; its certificate is recorded and accepted.
        let admin_pem = std::fs::read_to_string(Layout::new(&data).admin_cert()).expect("admin");
        let admin_serial = tollgate_pki::parse_pem_certificates(&admin_pem).expect("parse")[0]
            .serial
            .clone();
        assert_eq!(
            cp.operator_for_certificate("admin", &admin_serial)
                .expect("read"),
            Some(R::Admin)
        );
        // A CSR must name the operator.
        assert!(matches!(
            cp.add_operator("bob", R::Viewer, &operator_csr("mallory"), None, "admin"),
            Err(ControlError::InvalidRequest(_))
        ));
        let bob = cp
            .add_operator("bob", R::Viewer, &operator_csr("bob"), Some(7), "admin")
            .expect("add");
        assert!(matches!(
            cp.add_operator("bob", R::Admin, &operator_csr("bob"), None, "admin"),
            Err(ControlError::OperatorExists(_))
        ));
        assert_eq!(
            cp.operator_for_certificate("bob", &bob.serial)
                .expect("read"),
            Some(R::Viewer)
        );
        // Another operator's serial does not make bob.
        assert_eq!(
            cp.operator_for_certificate("bob", &admin_serial)
                .expect("read"),
            None
        );
        cp.set_operator_role("bob", R::Admin, "admin")
            .expect("promote");
        assert_eq!(
            cp.operator_for_certificate("bob", &bob.serial)
                .expect("read"),
            Some(R::Admin)
        );
        let renewed = cp
            .renew_operator("bob", &operator_csr("bob"), None, true, "bob")
            .expect("renew");
        assert_eq!(renewed.revoked_old, vec![bob.serial.clone()]);
        assert_eq!(
            cp.operator_for_certificate("bob", &bob.serial)
                .expect("read"),
            None
        );
        assert!(
            cp.snapshot().revoked.contains(&bob.serial),
            "refused at the handshake too"
        );
        cp.revoke_operator("admin", "handover", "bob")
            .expect("revoke admin");
        assert_eq!(
            cp.operator_for_certificate("admin", &admin_serial)
                .expect("read"),
            None
        );
        assert!(matches!(
            cp.revoke_operator("bob", "x", "bob"),
            Err(ControlError::LastAdmin(_))
        ));
        assert!(matches!(
            cp.set_operator_role("admin", R::Admin, "bob"),
            Err(ControlError::OperatorRevoked(_))
        ));
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    /// A data plane that records what it was told.
    #[derive(Default)]
    struct Recorder {
        published: Mutex<Vec<Vec<String>>>,
    }

    impl DataPlane for Recorder {
        fn publish(&self, _: Arc<AccessSnapshot>, changed: Changed) -> usize {
            if let Changed::Devices(ids) = changed {
                self.published.lock().push(ids);
            }
            0
        }
        fn publish_devices(&self, _: Arc<AccessSnapshot>, ids: &[String]) -> Vec<usize> {
            self.published.lock().push(ids.to_vec());
            // One live connection each.
            vec![1; ids.len()]
        }
        fn close_device(&self, _: &str, _: &str) -> usize {
            0
        }
        fn connections(&self) -> Vec<LiveConnection> {
            Vec::new()
        }
        fn throttle(&self, _: &str, _: u32, _: i64) {}
    }

    #[test]
    fn a_bulk_revocation_is_one_snapshot_change_for_exactly_those_devices() {
        let data = data_dir("bulk-revoke");
        let cp = open(&data).expect("open");
        let serial = |id: &str| {
            cp.add_device(id, &["plcs".into()], false, "test")
                .expect("add")
                .serial
        };
        let (a, b, c) = (serial("a"), serial("b"), serial("c"));
        let dp = Arc::new(Recorder::default());
        cp.attach(Arc::clone(&dp) as Arc<dyn DataPlane>);
        let crl_before = cp.crl();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        // An unknown id: nothing happens at all.
        assert!(matches!(
            cp.revoke_devices(&ids(&["a", "ghost"]), "lost", "test"),
            Err(ControlError::DeviceNotFound(id)) if id == "ghost"
        ));
        assert!(cp.snapshot().device("a").is_some());
        assert!(dp.published.lock().is_empty());
        assert!(matches!(
            cp.revoke_devices(&[], "lost", "test"),
            Err(ControlError::InvalidRequest(_))
        ));

        // Two devices (one named twice): one publication naming just them.
        let out = cp
            .revoke_devices(&ids(&["b", "a", "b"]), "lost", "test")
            .expect("revoke");
        let got: Vec<(&str, &[String], usize)> = out
            .iter()
            .map(|r| (r.id.as_str(), r.serials.as_slice(), r.sessions_closed))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b", std::slice::from_ref(&b), 1),
                ("a", std::slice::from_ref(&a), 1)
            ]
        );
        assert_eq!(*dp.published.lock(), vec![ids(&["b", "a"])]);
        let snap = cp.snapshot();
        assert!(snap.device("a").is_none() && snap.device("b").is_none());
        assert!(snap.device("c").is_some());
        assert!(snap.revoked.contains(&a) && snap.revoked.contains(&b));
        assert!(!snap.revoked.contains(&c));
        // One new CRL, naming both.
        assert_ne!(cp.crl(), crl_before);
        for id in ["a", "b"] {
            assert!(cp.device(id).expect("device").revoked_at.is_some());
        }
        assert!(cp.device("c").expect("device").revoked_at.is_none());
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    #[test]
    fn a_deleted_device_leaves_the_snapshot_and_its_serial_is_refused() {
        let data = data_dir("delete");
        let cp = open(&data).expect("open");
        let d = cp
            .add_device("pump-7", &["plcs".into()], false, "test")
            .expect("add");
        let out = cp
            .delete_device("pump-7", "decommissioned", "test")
            .expect("delete");
        assert_eq!(out.serials, vec![d.serial.clone()]);
        assert!(cp.snapshot().device("pump-7").is_none());
        assert!(cp.snapshot().revoked.contains(&d.serial));
        assert!(matches!(
            cp.device("pump-7"),
            Err(ControlError::DeviceNotFound(_))
        ));
        // The id is free again, without --reactivate.
        cp.add_device("pump-7", &[], false, "test").expect("again");
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    #[test]
    fn enrollment_never_reactivates_a_revoked_device_and_add_needs_the_flag() {
        let data = data_dir("revoked");
        let cp = open(&data).expect("open");
        cp.add_device("pump-7", &["plcs".into()], false, "test")
            .expect("add");
        cp.revoke_device("pump-7", "stolen", "test")
            .expect("revoke");
        assert!(matches!(
            cp.create_token("pump-7", &[], false, None, "test"),
            Err(ControlError::DeviceRevoked(_))
        ));
        assert!(matches!(
            cp.add_device("pump-7", &["plcs".into()], false, "test"),
            Err(ControlError::ReactivationRequired(_))
        ));
        assert!(cp.snapshot().device("pump-7").is_none());
        let again = cp
            .add_device("pump-7", &["plcs".into()], true, "test")
            .expect("reactivate");
        assert!(again.reactivated);
        assert!(cp.snapshot().device("pump-7").is_some());
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    #[test]
    fn a_profile_broken_while_down_leaves_the_last_good_one_in_force_and_releases_nothing() {
        let data = data_dir("last-good");
        std::fs::write(
            data.join("compliance.toml"),
            "[[rule]]\nid = \"keys\"\nsupplier_allowlist = [\"acme\"]\naction = \"quarantine\"\n",
        )
        .expect("profile");
        let cp = open(&data).expect("open");
        cp.add_device("pump-7", &["plcs".into()], false, "test")
            .expect("add");
        assert!(
            cp.snapshot()
                .device("pump-7")
                .expect("active")
                .is_quarantined(),
            "no supplier: held by the allowlist rule"
        );
        drop(cp);
        std::fs::write(data.join("compliance.toml"), "[[rule]\nid = ").expect("broken");
        let cp = open(&data).expect("reopen");
        let e = cp.evaluate_fleet(None, "startup", None).expect("evaluate");
        assert_eq!(e.rules, 1, "the last good profile is in force");
        assert!(
            cp.snapshot()
                .device("pump-7")
                .expect("active")
                .is_quarantined(),
            "a broken profile released nothing"
        );
        std::fs::remove_dir_all(&data).expect("cleanup");
    }

    #[test]
    fn quarantine_reasons_from_several_sources_release_only_when_none_remains() {
        let data = data_dir("quarantine");
        let cp = open(&data).expect("open");
        cp.add_device("scanner-1", &["scanners".into()], false, "test")
            .expect("add");
        cp.quarantine("scanner-1", OPERATOR, "stolen badge reader", "admin")
            .expect("q1");
        cp.quarantine(
            "scanner-1",
            "compliance:no-high-vulns",
            "CVE-2024-0001",
            "compliance",
        )
        .expect("q2");
        let snap = cp.snapshot();
        let access = snap.device("scanner-1").expect("active");
        assert_eq!(access.quarantine.len(), 2);
        let out = cp
            .release("scanner-1", Some(OPERATOR), "admin")
            .expect("release");
        assert_eq!(out.state, "quarantined", "compliance still holds it");
        assert!(matches!(
            cp.release("scanner-1", Some(OPERATOR), "admin"),
            Err(ControlError::NotQuarantined { .. })
        ));
        let out = cp.release("scanner-1", None, "admin").expect("release all");
        assert_eq!(out.state, "active");
        assert!(!cp
            .snapshot()
            .device("scanner-1")
            .expect("active")
            .is_quarantined());
        // It survives a restart of the control plane (the registry keeps it).
        cp.quarantine("scanner-1", OPERATOR, "again", "admin")
            .expect("q3");
        drop(cp);
        let cp = open(&data).expect("reopen");
        assert!(cp
            .snapshot()
            .device("scanner-1")
            .expect("active")
            .is_quarantined());
        assert_eq!(cp.device("scanner-1").expect("view").state, "quarantined");
        std::fs::remove_dir_all(&data).expect("cleanup");
    }
}
