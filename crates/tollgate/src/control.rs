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
    NotFound(String),
    Conflict(String),
    Internal(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::BadRequest(m)
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

struct PolicyState {
    policy: Arc<Policy>,
    modified: Option<(SystemTime, u64)>,
}

pub struct ControlPlane {
    registry: Arc<SqliteRegistry>,
    issuer: Issuer,
    root_pem: String,
    broker: Broker,
    events: EventBus,
    policy_file: PathBuf,
    policy: Mutex<PolicyState>,
    cert_lifetime: time::Duration,
    /// Serialises "read the registry, then publish the snapshot": without it a slower
    /// publisher could store a snapshot read before a revocation, after it.
    publishing: Mutex<()>,
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
        let issuer = Issuer::from_pem(&read(l.issuing_ca_cert())?, &read(l.issuing_ca_key())?)
            .context("loading the issuing CA")?;
        let cp = Arc::new(ControlPlane {
            registry,
            issuer,
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
        });
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
        let issued = self
            .issuer
            .issue(
                &CertProfile::Device { id },
                Validity::starting_now(self.cert_lifetime),
                None,
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
        Ok(DeviceView {
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
                    let _ = tokio::task::spawn_blocking(move || cp.reload_if_changed()).await;
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
