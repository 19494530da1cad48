//! The control plane: device registry, issuance, revocation and the policy file, published to
//! the data plane as one immutable `AuthSnapshot`.
//!
//! Every change here (device added or revoked, policy reloaded) rebuilds the snapshot and hands
//! it to the broker, which pushes it to live sessions. Nothing here is called from the
//! per-message path.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use parking_lot::Mutex;
use serde::Serialize;
use tollgate_broker::{AuthSnapshot, Broker};
use tollgate_events::{EventBus, EventKind};
use tollgate_mqtt::ReasonCode;
use tollgate_pki::{CertProfile, Issuer, Validity};
use tollgate_policy::Policy;
use tollgate_store::{CertKind, CertRecord, Registry, SqliteRegistry, StoreError};

use crate::config::Config;
use crate::datadir::Layout;

/// Errors the admin API translates into HTTP statuses.
#[derive(Debug)]
pub enum ControlError {
    BadRequest(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    Internal(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::BadRequest(m)
            | ControlError::Forbidden(m)
            | ControlError::NotFound(m)
            | ControlError::Conflict(m)
            | ControlError::Internal(m) => f.write_str(m),
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ControlError::Conflict(format!("{m} already exists")),
            StoreError::NotFound(m) => ControlError::NotFound(format!("{m} not found")),
            other => ControlError::Internal(other.to_string()),
        }
    }
}

/// Told of every newly signed CRL (DER).
pub type CrlListener = Box<dyn Fn(Vec<Arc<Vec<u8>>>) + Send + Sync>;

struct PolicyState {
    policy: Arc<Policy>,
    modified: Option<(SystemTime, u64)>,
}

pub struct ControlPlane {
    registry: Arc<SqliteRegistry>,
    issuer: Issuer,
    /// Retired issuing CAs still trusted: (issuer, certificate DER, trusted until).
    retired: Vec<(Issuer, Vec<u8>, i64)>,
    /// The root CA, when its key is online (for the root's own CRL).
    root: Option<Issuer>,
    /// The root CA's CRL (DER; it revokes no issuing CA today).
    root_crl: Mutex<Arc<Vec<u8>>>,
    root_pem: String,
    broker: Broker,
    events: EventBus,
    policy_file: PathBuf,
    policy: Mutex<PolicyState>,
    cert_lifetime: time::Duration,
    /// Serialises "read the registry, then publish the snapshot": without it a slower
    /// publisher could store a snapshot read before a revocation, after it.
    publishing: Mutex<()>,
    group_lifetimes: std::collections::BTreeMap<String, time::Duration>,
    weak_keys: tollgate_pki::WeakKeyList,
    token_ttl: std::time::Duration,
    crl_validity: std::time::Duration,
    /// The current CRLs (DER) of each trusted issuing CA, current CA first, and when signed.
    crl: Mutex<(Vec<Arc<Vec<u8>>>, i64)>,
    /// Called with each new CRL (the TLS layer swaps in a verifier that uses it).
    crl_listeners: Mutex<Vec<CrlListener>>,
    cacerts_der: Vec<Vec<u8>>,
    /// Suppliers whose bootstrap certificates may enroll devices (CA certificates as DER).
    suppliers: arc_swap::ArcSwap<Vec<SupplierTrust>>,
    /// Told when the set of trusted supplier CAs changes (the control listener rebuilds TLS).
    trust_listeners: Mutex<Vec<TrustListener>>,
}

/// A supplier as the control listener needs it.
#[derive(Debug, Clone)]
pub struct SupplierTrust {
    pub name: String,
    pub ca_ders: Vec<Vec<u8>>,
    pub groups: Vec<String>,
    pub allow_reenroll: bool,
}

/// Told of the current supplier CAs (DER) whenever they change.
pub type TrustListener = Box<dyn Fn(&[Vec<u8>]) + Send + Sync>;

/// Who issued a client certificate on the control listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKind {
    /// No client certificate.
    Anonymous,
    /// Tollgate's issuing CA: an operational device or admin certificate.
    Operational,
    /// A supplier's manufacturing CA: a bootstrap certificate, good for enrollment only.
    Supplier(String),
}

#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub groups: Vec<String>,
    pub status: &'static str,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub connected: bool,
    pub certificates: Vec<CertView>,
    /// Supplier, model and hardware serial, for devices enrolled with a bootstrap certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapView>,
}

#[derive(Debug, Serialize)]
pub struct BootstrapView {
    pub supplier: String,
    pub model: Option<String>,
    pub hardware_serial: String,
}

#[derive(Debug, Serialize)]
pub struct CertView {
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct IssuedDevice {
    pub id: String,
    pub groups: Vec<String>,
    pub serial: String,
    pub not_after: i64,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

#[derive(Debug, Serialize)]
pub struct Revoked {
    pub id: String,
    pub serials: Vec<String>,
    pub sessions_closed: usize,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn valid_group(g: &str) -> bool {
    tollgate_pki::validate_device_id(g).is_ok()
}

impl ControlPlane {
    pub fn open(cfg: &Config, broker: Broker, events: EventBus) -> Result<Arc<ControlPlane>> {
        let l = Layout::new(&cfg.data);
        let registry =
            Arc::new(SqliteRegistry::open(&l.registry()).context("opening the registry")?);
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let issuing_pem = read(l.issuing_ca_cert())?;
        let root_pem = read(l.root_ca_cert())?;
        let mut retired = Vec::new();
        for (cert, key, meta) in crate::datadir::retired_issuers(&l)? {
            let issuer = Issuer::from_pem(&cert, &key).context("loading a retired issuing CA")?;
            retired.push((issuer, pem_to_der(&cert)?, meta.trusted_until));
        }
        // /cacerts: the current issuing CA, the retired ones still trusted, then the root.
        let mut cacerts_der = vec![pem_to_der(&issuing_pem)?];
        cacerts_der.extend(retired.iter().map(|r| r.1.clone()));
        cacerts_der.push(pem_to_der(&root_pem)?);
        let issuer = Issuer::from_pem(&issuing_pem, &read(l.issuing_ca_key())?)
            .context("loading the issuing CA")?;
        let root = match std::fs::read_to_string(l.root_ca_key()) {
            Ok(key) => Some(Issuer::from_pem(&root_pem, &key).context("loading the root CA")?),
            Err(_) => None, // kept offline: its CRL is signed wherever the key lives
        };
        let cp = Arc::new(ControlPlane {
            registry,
            issuer,
            retired,
            root,
            root_crl: Mutex::new(Arc::new(Vec::new())),
            root_pem: read(l.root_ca_cert())?,
            broker,
            events,
            policy_file: cfg.policy_file.clone(),
            policy: Mutex::new(PolicyState {
                policy: Arc::new(Policy::deny_all()),
                modified: None,
            }),
            cert_lifetime: cfg.cert_lifetime,
            publishing: Mutex::new(()),
            group_lifetimes: cfg.group_lifetimes.clone(),
            weak_keys: cfg.weak_keys.clone(),
            token_ttl: cfg.token_ttl,
            crl_validity: cfg.crl_validity,
            crl: Mutex::new((Vec::new(), 0)),
            crl_listeners: Mutex::new(Vec::new()),
            cacerts_der,
            suppliers: arc_swap::ArcSwap::from_pointee(Vec::new()),
            trust_listeners: Mutex::new(Vec::new()),
        });
        cp.load_suppliers().context("loading suppliers")?;
        cp.regenerate_crl().context("signing the CRL")?;
        if let Err(e) = cp.reload_policy() {
            tracing::error!("policy not loaded, denying everything until it is fixed:\n{e}");
        }
        cp.publish()?;
        Ok(cp)
    }

    /// Rebuild the authorization snapshot from the registry and the policy; push it.
    pub fn publish(&self) -> Result<()> {
        let _one_at_a_time = self.publishing.lock();
        let devices: HashMap<String, Vec<String>> = self
            .registry
            .devices()?
            .into_iter()
            .filter(|d| d.revoked_at.is_none())
            .map(|d| (d.id, d.groups))
            .collect();
        let revoked: HashSet<String> = self.registry.revoked_serials()?.into_iter().collect();
        let policy = Arc::clone(&self.policy.lock().policy);
        self.broker.set_auth(AuthSnapshot {
            policy,
            devices,
            revoked,
        });
        Ok(())
    }

    /// Load the policy file. On error the policy in force stays, and the error is returned.
    pub fn reload_policy(&self) -> Result<usize, String> {
        let source = self.policy_file.display().to_string();
        let stamp = policy_stamp(&self.policy_file);
        let result = std::fs::read_to_string(&self.policy_file)
            .map_err(|e| format!("{source}: {e}"))
            .and_then(|text| Policy::parse(&text, &source).map_err(|e| e.to_string()));
        let mut st = self.policy.lock();
        st.modified = stamp;
        match result {
            Ok(p) => {
                let rules = p.rules().len();
                st.policy = Arc::new(p);
                drop(st);
                self.events
                    .emit(EventKind::PolicyReloaded { source, rules });
                Ok(rules)
            }
            Err(error) => {
                drop(st);
                self.events.emit(EventKind::PolicyRejected {
                    source,
                    error: error.clone(),
                });
                Err(error)
            }
        }
    }

    /// Reload and publish if the file changed since the last look.
    pub fn reload_if_changed(&self) {
        let stamp = policy_stamp(&self.policy_file);
        if stamp == self.policy.lock().modified {
            return;
        }
        self.reload_and_publish();
    }

    pub fn reload_and_publish(&self) {
        match self.reload_policy() {
            Ok(rules) => {
                tracing::info!(rules, "policy reloaded");
                if let Err(e) = self.publish() {
                    tracing::error!("publishing the new policy: {e:#}");
                }
            }
            Err(e) => tracing::error!("policy rejected, the previous policy stays in force:\n{e}"),
        }
    }

    pub fn add_device(
        &self,
        id: &str,
        groups: &[String],
        by: &str,
    ) -> Result<IssuedDevice, ControlError> {
        tollgate_pki::validate_device_id(id)
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        if let Some(g) = groups.iter().find(|g| !valid_group(g)) {
            return Err(ControlError::BadRequest(format!(
                "invalid group {g:?}: only letters, digits and . _ - : are allowed"
            )));
        }
        self.registry.upsert_device(id, groups, now())?;
        let issued = self.issue_device(id, groups, None)?;
        self.publish()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
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
            ca_pem: self.root_pem.clone(),
        })
    }

    pub fn revoke_device(&self, id: &str, reason: &str, by: &str) -> Result<Revoked, ControlError> {
        let serials = self.registry.revoke_device(id, reason, now())?;
        // Publishing the snapshot makes every live session of the device re-check and close
        // (DISCONNECT 0x98); the TLS verifier refuses the serials from now on.
        self.publish()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        // A fresh CRL for everyone who reads it (and for the TLS verifier).
        if let Err(e) = self.regenerate_crl() {
            tracing::error!("re-signing the CRL after a revocation: {e:#}");
        }
        let sessions_closed =
            self.broker
                .close_device(id, ReasonCode::ADMINISTRATIVE_ACTION, "certificate revoked");
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

    pub fn devices(&self) -> Result<Vec<DeviceView>, ControlError> {
        let connected: HashSet<String> = self
            .broker
            .connections()
            .into_iter()
            .map(|c| c.device_id)
            .collect();
        self.registry
            .devices()?
            .into_iter()
            .map(|d| self.view(d, &connected))
            .collect()
    }

    pub fn device(&self, id: &str) -> Result<DeviceView, ControlError> {
        let connected: HashSet<String> = self
            .broker
            .connections()
            .into_iter()
            .map(|c| c.device_id)
            .collect();
        let d = self
            .registry
            .device(id)?
            .ok_or_else(|| ControlError::NotFound(format!("device {id} not found")))?;
        self.view(d, &connected)
    }

    fn view(
        &self,
        d: tollgate_store::Device,
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
        Ok(DeviceView {
            bootstrap,
            connected: connected.contains(&d.id),
            status: if d.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            id: d.id,
            groups: d.groups,
            created_at: d.created_at,
            revoked_at: d.revoked_at,
            certificates,
        })
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.lock().policy)
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    Ok(
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("reading a CA certificate: {e}"))?
            .to_vec(),
    )
}

/// A certificate issued through EST.
#[derive(Debug)]
pub struct Enrolled {
    pub serial: String,
    pub cert_der: Vec<u8>,
}

fn csr_error(e: tollgate_pki::CsrError) -> ControlError {
    ControlError::BadRequest(e.to_string())
}

impl ControlPlane {
    /// Issue a device certificate (for `public_key`, or with a fresh key) with the lifetime of
    /// its groups, and record it. The one place device certificates are made.
    fn issue_device(
        &self,
        id: &str,
        groups: &[String],
        public_key: Option<&rcgen::SubjectPublicKeyInfo>,
    ) -> Result<tollgate_pki::IssuedCert, ControlError> {
        let issued = self
            .issuer
            .issue(
                &CertProfile::Device { id },
                Validity::starting_now(self.lifetime_for(groups)),
                public_key,
            )
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        self.registry.record_certificate(&CertRecord {
            serial: issued.serial.clone(),
            subject: id.to_owned(),
            kind: CertKind::Device,
            not_before: issued.validity.not_before.unix_timestamp(),
            not_after: issued.validity.not_after.unix_timestamp(),
            revoked_at: None,
            revoke_reason: None,
        })?;
        Ok(issued)
    }

    /// Lifetime for a device in `groups`: the shortest of its groups' overrides, else the default.
    fn lifetime_for(&self, groups: &[String]) -> time::Duration {
        groups
            .iter()
            .filter_map(|g| self.group_lifetimes.get(g))
            .min()
            .copied()
            .unwrap_or(self.cert_lifetime)
    }

    /// The CA certificates (issuing, root) as DER, for /cacerts.
    pub fn cacerts_der(&self) -> &[Vec<u8>] {
        &self.cacerts_der
    }

    /// Issue a one-time enrollment token for `id`. Returns the token (shown once) and its expiry.
    pub fn create_token(
        &self,
        id: &str,
        groups: &[String],
        ttl: Option<std::time::Duration>,
        by: &str,
    ) -> Result<(String, i64), ControlError> {
        tollgate_pki::validate_device_id(id)
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        if let Some(g) = groups.iter().find(|g| !valid_group(g)) {
            return Err(ControlError::BadRequest(format!(
                "invalid group {g:?}: only letters, digits and . _ - : are allowed"
            )));
        }
        let token =
            tollgate_pki::generate_token().map_err(|e| ControlError::Internal(e.to_string()))?;
        let ttl = ttl.unwrap_or(self.token_ttl);
        let expires_at = now() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        self.registry.create_token(
            id,
            groups,
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

    fn issue_from_csr(
        &self,
        id: &str,
        groups: &[String],
        csr: &tollgate_pki::CheckedCsr,
    ) -> Result<Enrolled, ControlError> {
        let issued = self.issue_device(id, groups, Some(&csr.public_key))?;
        let cert_der =
            pem_to_der(&issued.cert_pem).map_err(|e| ControlError::Internal(e.to_string()))?;
        Ok(Enrolled {
            serial: issued.serial,
            cert_der,
        })
    }

    /// EST simpleenroll authorised by a one-time token.
    pub fn enroll_with_token(
        &self,
        id: Option<&str>,
        token: &str,
        csr_der: &[u8],
    ) -> Result<Enrolled, ControlError> {
        let csr = tollgate_pki::check_csr(csr_der, &self.weak_keys).map_err(csr_error)?;
        let cn = csr.common_name.clone().unwrap_or_default();
        // With Bearer auth the device is named by the CSR; with Basic, both must agree.
        let id = id.unwrap_or(&cn).to_owned();
        tollgate_pki::validate_device_id(&id)
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        if cn != id {
            return Err(ControlError::Forbidden(format!(
                "the request's subject CN {cn:?} does not name device {id:?}, which the token is for"
            )));
        }
        let groups = self
            .registry
            .consume_token(&id, &tollgate_pki::hash_token(token), now())
            .map_err(|e| match e {
                StoreError::Token(why) => {
                    ControlError::Forbidden(format!("enrollment token refused: {why}"))
                }
                other => ControlError::from(other),
            })?;
        self.registry.ensure_device(&id, &groups, now())?;
        let out = self.issue_from_csr(&id, &groups, &csr)?;
        self.publish()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
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
        let auth = self.broker.auth();
        if auth.revoked.contains(presented_serial) {
            return Err(ControlError::Forbidden(
                "the presented certificate is revoked".into(),
            ));
        }
        let Some(groups) = auth.devices.get(device).cloned() else {
            return Err(ControlError::Forbidden(format!(
                "device {device:?} is not registered or is revoked"
            )));
        };
        let csr = tollgate_pki::check_csr(csr_der, &self.weak_keys).map_err(csr_error)?;
        if csr.common_name.as_deref() != Some(device) {
            return Err(ControlError::Forbidden(format!(
                "the request's subject CN {:?} does not name the authenticated device {device:?}",
                csr.common_name.unwrap_or_default()
            )));
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

    /// The current issuing CA's CRL (DER).
    pub fn crl(&self) -> Arc<Vec<u8>> {
        self.crl.lock().0.first().cloned().unwrap_or_default()
    }

    /// The root CA's CRL (empty when the root key is offline).
    pub fn root_crl(&self) -> Arc<Vec<u8>> {
        Arc::clone(&self.root_crl.lock())
    }

    /// Every trusted issuing CA's CRL.
    pub fn crls(&self) -> Vec<Arc<Vec<u8>>> {
        self.crl.lock().0.clone()
    }

    /// Be told of every new set of CRLs (called at once with the current one).
    pub fn on_crl(&self, f: CrlListener) {
        f(self.crls());
        self.crl_listeners.lock().push(f);
    }

    /// Trust anchors for client certificates: the current and still-trusted retired issuing CAs.
    pub fn issuing_anchors(&self) -> Vec<Vec<u8>> {
        let mut v = vec![self.cacerts_der.first().cloned().unwrap_or_default()];
        v.extend(self.retired.iter().map(|r| r.1.clone()));
        v
    }

    /// The hierarchy, for `tollgate ca status`.
    pub fn ca_status(&self) -> Result<serde_json::Value, ControlError> {
        let describe = |der: &[u8]| -> serde_json::Value {
            match tollgate_pki::parse_certificate(der) {
                Ok(i) => {
                    serde_json::json!({ "subject": i.subject, "serial": i.serial, "not_before": i.not_before, "not_after": i.not_after })
                }
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            }
        };
        let mut issuing = vec![{
            let mut v = describe(
                self.cacerts_der
                    .first()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            );
            v["current"] = true.into();
            v
        }];
        for (_, der, until) in &self.retired {
            let mut v = describe(der);
            v["current"] = false.into();
            v["trusted_until"] = (*until).into();
            issuing.push(v);
        }
        let devices = self.registry.devices()?;
        let active = devices.iter().filter(|d| d.revoked_at.is_none()).count();
        Ok(serde_json::json!({
            "root": describe(self.cacerts_der.last().map(Vec::as_slice).unwrap_or_default()),
            "issuing": issuing,
            "devices": { "active": active, "revoked": devices.len() - active },
            "revoked_certificates": self.registry.revoked_serials()?.len(),
            "suppliers": self.suppliers().len(),
        }))
    }

    /// Sign a fresh CRL from the registry and hand it to the listeners.
    pub fn regenerate_crl(&self) -> Result<()> {
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
        let this_update = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
        let next_update = this_update
            + time::Duration::try_from(self.crl_validity).unwrap_or(time::Duration::hours(48));
        let mut crls = vec![Arc::new(self.issuer.crl(
            &revoked,
            number,
            this_update,
            next_update,
        )?)];
        for (issuer, _, _) in &self.retired {
            crls.push(Arc::new(issuer.crl(
                &revoked,
                number,
                this_update,
                next_update,
            )?));
        }
        if let Some(root) = &self.root {
            *self.root_crl.lock() = Arc::new(root.crl(&[], number, this_update, next_update)?);
        }
        *self.crl.lock() = (crls.clone(), now());
        for l in self.crl_listeners.lock().iter() {
            l(crls.clone());
        }
        Ok(())
    }

    /// Re-sign the CRL when half its validity has passed.
    pub fn refresh_crl_if_due(&self) {
        let signed_at = self.crl.lock().1;
        let half = i64::try_from(self.crl_validity.as_secs() / 2).unwrap_or(3600);
        if now() - signed_at >= half {
            if let Err(e) = self.regenerate_crl() {
                tracing::error!("re-signing the CRL: {e:#}");
            }
        }
    }
}

fn pem_certs_to_der(pem: &str) -> Result<Vec<Vec<u8>>, ControlError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| ControlError::BadRequest(format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ControlError::BadRequest(
            "no certificate in the supplier CA file".into(),
        ));
    }
    for c in &certs {
        let info = tollgate_pki::parse_certificate(c)
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        if !info.is_ca {
            return Err(ControlError::BadRequest(format!(
                "{} is not a CA certificate",
                info.subject
            )));
        }
    }
    Ok(certs)
}

impl ControlPlane {
    fn load_suppliers(&self) -> Result<()> {
        let list: Vec<SupplierTrust> = self
            .registry
            .suppliers()?
            .into_iter()
            .filter_map(|s| {
                let ca_ders = pem_certs_to_der(&s.ca_pem).ok()?;
                Some(SupplierTrust {
                    name: s.name,
                    ca_ders,
                    groups: s.groups,
                    allow_reenroll: s.allow_reenroll,
                })
            })
            .collect();
        let all: Vec<Vec<u8>> = list
            .iter()
            .flat_map(|s| s.ca_ders.iter().cloned())
            .collect();
        self.suppliers.store(Arc::new(list));
        for l in self.trust_listeners.lock().iter() {
            l(&all);
        }
        Ok(())
    }

    /// Be told of the supplier CAs now and whenever they change.
    pub fn on_trust_change(&self, f: TrustListener) {
        let all: Vec<Vec<u8>> = self
            .suppliers
            .load()
            .iter()
            .flat_map(|s| s.ca_ders.iter().cloned())
            .collect();
        f(&all);
        self.trust_listeners.lock().push(f);
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
        tollgate_pki::validate_device_id(name)
            .map_err(|e| ControlError::BadRequest(format!("supplier name: {e}")))?;
        if let Some(g) = groups.iter().find(|g| !valid_group(g)) {
            return Err(ControlError::BadRequest(format!("invalid group {g:?}")));
        }
        pem_certs_to_der(ca_pem)?;
        self.registry.add_supplier(
            &tollgate_store::Supplier {
                name: name.to_owned(),
                ca_pem: ca_pem.to_owned(),
                groups: groups.to_vec(),
                allow_reenroll,
            },
            now(),
        )?;
        self.load_suppliers()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        self.events.emit(EventKind::SupplierAdded {
            supplier: name.to_owned(),
            by: by.to_owned(),
        });
        Ok(SupplierView {
            name: name.to_owned(),
            groups: groups.to_vec(),
            allow_reenroll,
        })
    }

    pub fn suppliers(&self) -> Vec<SupplierView> {
        self.suppliers
            .load()
            .iter()
            .map(|s| SupplierView {
                name: s.name.clone(),
                groups: s.groups.clone(),
                allow_reenroll: s.allow_reenroll,
            })
            .collect()
    }

    /// Who issued a verified client certificate.
    pub fn classify(&self, cert_der: &[u8]) -> PeerKind {
        if self
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

    /// EST simpleenroll authorised by a supplier's bootstrap certificate.
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
            .ok_or_else(|| ControlError::Forbidden(format!("unknown supplier {supplier:?}")))?;
        let ident = tollgate_pki::bootstrap_identity(bootstrap_der)
            .map_err(|e| ControlError::Forbidden(e.to_string()))?;
        let csr = tollgate_pki::check_csr(csr_der, &self.weak_keys).map_err(csr_error)?;
        if csr.common_name.as_deref() != Some(ident.device_id.as_str()) {
            return Err(ControlError::Forbidden(format!(
                "the request's subject CN {:?} does not name device {:?}, which the bootstrap certificate is for",
                csr.common_name.unwrap_or_default(),
                ident.device_id
            )));
        }
        self.registry
            .record_bootstrap(
                &tollgate_store::BootstrapRecord {
                    supplier: sup.name.clone(),
                    hardware_serial: ident.hardware_serial.clone(),
                    model: ident.model.clone(),
                    device_id: ident.device_id.clone(),
                },
                sup.allow_reenroll,
                now(),
            )
            .map_err(|e| match e {
                StoreError::Conflict(m) => ControlError::Forbidden(format!(
                    "{m}; the supplier does not allow re-enrollment"
                )),
                other => ControlError::from(other),
            })?;
        self.registry
            .ensure_device(&ident.device_id, &sup.groups, now())?;
        let out = self.issue_from_csr(&ident.device_id, &sup.groups, &csr)?;
        self.publish()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        self.events.emit(EventKind::DeviceEnrolled {
            device: ident.device_id,
            serial: out.serial.clone(),
            method: "bootstrap",
            renewal: false,
        });
        Ok(out)
    }
}

#[derive(Debug, Serialize)]
pub struct SupplierView {
    pub name: String,
    pub groups: Vec<String>,
    pub allow_reenroll: bool,
}

fn policy_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watch the policy file (polling its modification time and size) and SIGHUP.
pub async fn watch_policy(cp: Arc<ControlPlane>, every: std::time::Duration) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        {
            let hup_fut = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {
                    let cp = Arc::clone(&cp);
                    let _ = tokio::task::spawn_blocking(move || {
                        cp.reload_if_changed();
                        cp.refresh_crl_if_due();
                    })
                    .await;
                }
                _ = hup_fut => {
                    tracing::info!("SIGHUP: reloading the policy");
                    let cp = Arc::clone(&cp);
                    let _ = tokio::task::spawn_blocking(move || cp.reload_and_publish()).await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            tick.tick().await;
            cp.reload_if_changed();
        }
    }
}
