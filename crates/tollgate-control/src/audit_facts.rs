//! What the configuration audit needs from the control plane: the CA hierarchy and every
//! certificate with its key, the key files of the data directory, the devices with their
//! inventory and SBOM coverage, and the policy's patterns and lint findings.
//!
//! It gathers facts only; the checks are `tollgate_audit::findings`. Listener addresses, the
//! audit log's state and what the detectors see are added by the binary, which holds them.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;

use tollgate_audit::findings::{
    CertFact, CertKind as FactKind, DeviceFact, GrantFact, KeyFact, KeyFile, LintFact,
};
use tollgate_pki::PublicKeyInfo;
use tollgate_registry::CertKind;

use crate::ca::Layout;
use crate::{Control, ControlError};

/// How long after their expiry certificates are still looked at (an expired one still in use
/// is a finding).
const EXPIRED_LOOKBACK_SECS: i64 = 30 * 24 * 3600;

/// The control plane's part of the facts.
#[derive(Debug, Default)]
pub struct ControlFacts {
    pub certs: Vec<CertFact>,
    pub key_files: Vec<KeyFile>,
    pub root_key_online: bool,
    pub devices: Vec<DeviceFact>,
    pub grants: Vec<GrantFact>,
    pub lints: Vec<LintFact>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key_fact(spki: &[u8], weak: &tollgate_pki::WeakKeyList) -> KeyFact {
    match tollgate_pki::describe_spki(spki) {
        PublicKeyInfo::Rsa { modulus, .. } => KeyFact::Rsa {
            blocklisted: tollgate_pki::is_blocklisted(weak, &modulus),
            modulus,
        },
        PublicKeyInfo::Ec { curve } => KeyFact::Ec { curve },
        PublicKeyInfo::Ed25519 => KeyFact::Ed25519,
        PublicKeyInfo::Other(o) => KeyFact::Other(o),
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

/// Facts of the certificates in a PEM file (the first one).
fn file_cert(
    path: &std::path::Path,
    kind: FactKind,
    weak: &tollgate_pki::WeakKeyList,
) -> Option<CertFact> {
    let pem = std::fs::read_to_string(path).ok()?;
    let c = tollgate_pki::parse_pem_certificates(&pem)
        .ok()?
        .into_iter()
        .next()?;
    Some(CertFact {
        kind,
        subject: c.common_name.clone().unwrap_or_else(|| c.subject.clone()),
        serial: c.serial,
        not_before: c.not_before,
        not_after: c.not_after,
        revoked: false,
        issuer_serial: String::new(),
        trusted_until: None,
        spki_sha256: sha256_hex(&c.spki),
        key: key_fact(&c.spki, weak),
    })
}

impl Control {
    /// Gather the control plane's facts for the configuration audit at `now` (Unix seconds).
    pub fn audit_facts(&self, now: i64) -> Result<ControlFacts, ControlError> {
        let l = Layout::new(&self.cfg.data);
        let weak = &self.cfg.weak_keys;
        let mut out = ControlFacts::default();
        // The hierarchy, from its files.
        for (path, kind) in [
            (l.root_ca_cert(), FactKind::RootCa),
            (l.issuing_ca_cert(), FactKind::IssuingCa),
            (l.server_cert(), FactKind::Server),
            (l.admin_cert(), FactKind::Admin),
        ] {
            if let Some(c) = file_cert(&path, kind, weak) {
                out.certs.push(c);
            }
        }
        let issuing_serial = out
            .certs
            .iter()
            .find(|c| c.kind == FactKind::IssuingCa)
            .map(|c| c.serial.clone())
            .unwrap_or_default();
        for (pem, _, meta) in crate::ca::retired_issuers(&l)? {
            if let Some(c) = tollgate_pki::parse_pem_certificates(&pem)
                .ok()
                .and_then(|v| v.into_iter().next())
            {
                out.certs.push(CertFact {
                    kind: FactKind::RetiredCa,
                    subject: c.common_name.clone().unwrap_or_else(|| c.subject.clone()),
                    serial: c.serial,
                    not_before: c.not_before,
                    not_after: c.not_after,
                    revoked: false,
                    issuer_serial: String::new(),
                    trusted_until: Some(meta.trusted_until),
                    spki_sha256: sha256_hex(&c.spki),
                    key: key_fact(&c.spki, weak),
                });
            }
        }
        // Device certificates, from the registry (which records the issuing CA in force).
        let retired_windows: Vec<(i64, String)> = out
            .certs
            .iter()
            .filter(|c| c.kind == FactKind::RetiredCa)
            .map(|c| (c.not_before, c.serial.clone()))
            .collect();
        let issuing_since = out
            .certs
            .iter()
            .find(|c| c.kind == FactKind::IssuingCa)
            .map_or(i64::MIN, |c| c.not_before);
        // Operator certificates: each active operator's newest unrevoked one (an older one
        // left to lapse after a renewal is not a finding), unless its file was read above.
        let active: HashSet<String> = self
            .registry
            .operators()?
            .into_iter()
            .filter(|o| o.revoked_at.is_none())
            .map(|o| o.name)
            .collect();
        let mut operator_certs: HashMap<String, tollgate_registry::CertRecord> = HashMap::new();
        for r in self
            .registry
            .certificates_since(now.saturating_sub(EXPIRED_LOOKBACK_SECS))?
        {
            if r.kind != CertKind::Admin || r.revoked_at.is_some() || !active.contains(&r.subject) {
                continue;
            }
            match operator_certs.get(&r.subject) {
                Some(known) if known.not_after >= r.not_after => {}
                _ => {
                    operator_certs.insert(r.subject.clone(), r);
                }
            }
        }
        let mut operator_certs: Vec<_> = operator_certs.into_values().collect();
        operator_certs.sort_by(|a, b| a.subject.cmp(&b.subject));
        for r in operator_certs {
            if out.certs.iter().any(|c| c.serial == r.serial) {
                continue;
            }
            let (spki_sha256, key) = match &r.spki {
                Some(spki) => (sha256_hex(spki), key_fact(spki, weak)),
                None => (
                    String::new(),
                    KeyFact::Other(r.key.clone().unwrap_or_else(|| "unknown".into())),
                ),
            };
            out.certs.push(CertFact {
                kind: FactKind::Admin,
                subject: r.subject,
                serial: r.serial,
                not_before: r.not_before,
                not_after: r.not_after,
                revoked: false,
                issuer_serial: r.issuer.unwrap_or_default(),
                trusted_until: None,
                spki_sha256,
                key,
            });
        }
        let mut newest_cert: HashMap<String, i64> = HashMap::new();
        for r in self
            .registry
            .certificates_since(now.saturating_sub(EXPIRED_LOOKBACK_SECS))?
        {
            if r.kind != CertKind::Device {
                continue;
            }
            let e = newest_cert.entry(r.subject.clone()).or_insert(r.not_before);
            *e = (*e).max(r.not_before);
            // Issued by the CA in force when it was made: the current issuing CA since its
            // start, else the newest retired one that started before it.
            let issuer_serial = if let Some(i) = &r.issuer {
                i.clone()
            } else if r.not_before >= issuing_since {
                issuing_serial.clone()
            } else {
                retired_windows
                    .iter()
                    .filter(|(start, _)| *start <= r.not_before)
                    .max_by_key(|(start, _)| *start)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default()
            };
            let (spki_sha256, key) = match &r.spki {
                Some(spki) => (sha256_hex(spki), key_fact(spki, weak)),
                None => (
                    String::new(),
                    KeyFact::Other(r.key.clone().unwrap_or_else(|| "unknown".into())),
                ),
            };
            out.certs.push(CertFact {
                kind: FactKind::Device,
                subject: r.subject,
                serial: r.serial,
                not_before: r.not_before,
                not_after: r.not_after,
                revoked: r.revoked_at.is_some(),
                issuer_serial,
                trusted_until: None,
                spki_sha256,
                key,
            });
        }
        // Key files.
        for path in [
            l.root_ca_key(),
            l.issuing_ca_key(),
            l.server_key(),
            l.admin_key(),
            self.cfg.data.join("audit.key"),
        ] {
            if let Ok(m) = std::fs::metadata(&path) {
                let rel = path
                    .strip_prefix(&self.cfg.data)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                out.key_files.push(KeyFile {
                    path: rel,
                    mode: m.permissions().mode() & 0o7777,
                });
            }
        }
        if let Ok(rd) = std::fs::read_dir(l.retired_dir()) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) == Some("key") {
                    if let Ok(m) = e.metadata() {
                        out.key_files.push(KeyFile {
                            path: p
                                .strip_prefix(&self.cfg.data)
                                .unwrap_or(&p)
                                .display()
                                .to_string(),
                            mode: m.permissions().mode() & 0o7777,
                        });
                    }
                }
            }
        }
        out.root_key_online = l.root_ca_key().exists();
        // Devices.
        let connected = self.connected();
        let inventories: HashMap<String, tollgate_registry::Inventory> = self
            .registry
            .inventories()?
            .into_iter()
            .map(|i| (i.device.clone(), i))
            .collect();
        let sboms: HashSet<(String, String)> = self
            .registry
            .sboms()?
            .into_iter()
            .map(|s| (s.model, s.firmware))
            .collect();
        for d in self.registry.devices()? {
            let inv = inventories.get(&d.id);
            let has_inventory = inv.is_some_and(|i| i.model.is_some() && i.firmware.is_some());
            let has_sbom = inv.is_some_and(|i| match (&i.model, &i.firmware) {
                (Some(m), Some(f)) => sboms.contains(&(m.clone(), f.clone())),
                _ => false,
            });
            // Seen: connected now, or a certificate issued to it (enrolment and renewal need
            // the device), or its own inventory report.
            let mut last_seen = newest_cert.get(&d.id).copied();
            if let Some(r) = inv.and_then(|i| i.reported_at) {
                last_seen = Some(last_seen.map_or(r, |s| s.max(r)));
            }
            if connected.contains(&d.id) {
                last_seen = Some(now);
            }
            out.devices.push(DeviceFact {
                id: d.id,
                groups: d.groups,
                revoked: d.revoked_at.is_some(),
                created_at: d.created_at,
                last_seen,
                has_inventory,
                has_sbom,
                live_addresses: Vec::new(),
                clone_alert: false,
            });
        }
        // The policy.
        let policy = self.policy();
        for r in policy.rules() {
            let allow = r.effect == tollgate_policy::Effect::Allow;
            let id = r.id.clone();
            for (action, patterns) in [
                ("publish", &r.publish),
                ("subscribe", &r.subscribe),
                ("retain", &r.retain),
            ] {
                for p in patterns {
                    out.grants.push(GrantFact {
                        rule: id.clone(),
                        allow,
                        who: r.who.iter().map(ToString::to_string).collect(),
                        action: action.to_owned(),
                        pattern: p.clone(),
                        line: r.line,
                    });
                }
            }
        }
        for lint in policy.lint() {
            out.lints.push(LintFact {
                rule: lint.rule.clone(),
                line: lint.line,
                message: lint.message.clone(),
                warning: lint.severity == tollgate_policy::Severity::Warning,
            });
        }
        Ok(out)
    }
}
