//! Operators of the admin API and the gateway's own certificate: registering an operator and
//! issuing its certificate from a CSR, renewal, role changes and revocation, the per-request
//! check of an operator certificate, and renewing the server certificate in place.
//!
//! An operator certificate only names its operator (`urn:tollgate:operator:NAME`); the role is
//! the registry's and is read at every request ([`Control::operator_for_certificate`]), so a
//! role change or a revocation holds from the next request without a new certificate. Keys are
//! never made here: every certificate is issued for the public key of a CSR.
//!
//! This module must not know about HTTP or decide who may call what (the binary's auth module
//! does); it keeps the invariant that one active admin always remains.

use serde::Serialize;
use tollgate_events::EventKind;
use tollgate_pki::{CertProfile, Validity};
use tollgate_policy::Changed;
use tollgate_registry::{CertKind, CertRecord, Operator, OperatorRole, RegistryError};

use crate::ca::Layout;
use crate::files::{self, FileWrite};
use crate::{check_name, key_name, now, Control, ControlError};

/// Default lifetime of an operator certificate, days.
pub const DEFAULT_DAYS: u16 = 90;
/// Longest lifetime an operator certificate may be given, days.
pub const MAX_DAYS: u32 = 825;
/// Default (and longest) lifetime of a server certificate, days.
pub const SERVER_DAYS: u32 = 825;

/// One operator certificate, for the admin API.
#[derive(Debug, Serialize)]
pub struct OperatorCertView {
    /// Serial (hex).
    pub serial: String,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "crate::timefmt::at")]
    pub not_before: i64,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "crate::timefmt::at")]
    pub not_after: i64,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "crate::timefmt::at_opt")]
    pub revoked_at: Option<i64>,
}

/// An operator, for the admin API.
#[derive(Debug, Serialize)]
pub struct OperatorView {
    /// Name.
    pub name: String,
    /// `admin` or `viewer`.
    pub role: &'static str,
    /// `active` or `revoked`.
    pub state: &'static str,
    /// RFC 3339 UTC.
    #[serde(serialize_with = "crate::timefmt::at")]
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339 UTC.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timefmt::at_opt"
    )]
    pub revoked_at: Option<i64>,
    /// Who revoked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    /// Its certificates, newest first.
    pub certificates: Vec<OperatorCertView>,
}

/// A certificate issued to an operator.
#[derive(Debug, Serialize)]
pub struct IssuedOperator {
    /// Operator name.
    pub name: String,
    /// `admin` or `viewer`.
    pub role: &'static str,
    /// Serial (hex).
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// The certificate, PEM.
    pub certificate: String,
    /// The root CA to trust for the server, PEM.
    pub ca: String,
    /// Older certificates revoked with a renewal.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked_old: Vec<String>,
}

/// A renewed server certificate.
#[derive(Debug, Serialize)]
pub struct ServerRenewed {
    /// Serial (hex).
    pub serial: String,
    /// The serial of the certificate it replaced.
    pub previous: Option<String>,
    /// Unix seconds.
    pub not_after: i64,
    /// DNS names and IP addresses.
    pub names: Vec<String>,
}

/// `admin` or `viewer`, from a request.
pub fn parse_role(s: &str) -> Result<OperatorRole, ControlError> {
    OperatorRole::parse(s).ok_or_else(|| {
        ControlError::InvalidRequest(format!("role {s:?}: expected \"admin\" or \"viewer\""))
    })
}

fn days(v: Option<u32>, default: u32, max: u32) -> Result<time::Duration, ControlError> {
    let d = v.unwrap_or(default);
    if d == 0 || d > max {
        return Err(ControlError::InvalidRequest(format!(
            "validity_days must be between 1 and {max}; {d} was asked"
        )));
    }
    Ok(time::Duration::days(d.into()))
}

fn view(op: Operator, certs: Vec<CertRecord>) -> OperatorView {
    OperatorView {
        role: op.role.as_str(),
        state: if op.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        },
        name: op.name,
        created_at: op.created_at,
        created_by: op.created_by,
        revoked_at: op.revoked_at,
        revoked_by: op.revoked_by,
        revoke_reason: op.revoke_reason,
        certificates: certs
            .into_iter()
            .filter(|c| c.kind == CertKind::Admin)
            .map(|c| OperatorCertView {
                serial: c.serial,
                not_before: c.not_before,
                not_after: c.not_after,
                revoked_at: c.revoked_at,
            })
            .collect(),
    }
}

impl Control {
    /// The role of the operator a verified operator certificate names, if it may act now:
    /// the operator exists and is not revoked, and `serial` is one of its certificates and is
    /// not revoked. One registry read (the admin API asks at every request).
    /// An active operator's role now (`None`: unknown or revoked): one registry read, for a
    /// dashboard session at every request.
    pub fn operator_role(&self, name: &str) -> Result<Option<OperatorRole>, ControlError> {
        Ok(self
            .registry
            .operator(name)?
            .filter(|o| o.revoked_at.is_none())
            .map(|o| o.role))
    }

    pub fn operator_for_certificate(
        &self,
        name: &str,
        serial: &str,
    ) -> Result<Option<OperatorRole>, ControlError> {
        Ok(self
            .registry
            .operator_credential(name, serial)?
            .filter(|c| !c.operator_revoked && c.serial_known && !c.serial_revoked)
            .map(|c| c.role))
    }

    /// Every operator.
    pub fn operators(&self) -> Result<Vec<OperatorView>, ControlError> {
        self.registry
            .operators()?
            .into_iter()
            .map(|op| {
                let certs = self.registry.certificates_of(&op.name)?;
                Ok(view(op, certs))
            })
            .collect()
    }

    /// One operator.
    pub fn operator(&self, name: &str) -> Result<OperatorView, ControlError> {
        let op = self
            .registry
            .operator(name)?
            .ok_or_else(|| ControlError::OperatorNotFound(name.to_owned()))?;
        let certs = self.registry.certificates_of(name)?;
        Ok(view(op, certs))
    }

    fn active_operator(&self, name: &str) -> Result<Operator, ControlError> {
        let op = self
            .registry
            .operator(name)?
            .ok_or_else(|| ControlError::OperatorNotFound(name.to_owned()))?;
        if op.revoked_at.is_some() {
            return Err(ControlError::OperatorRevoked(name.to_owned()));
        }
        Ok(op)
    }

    /// Whether `name` is the only active admin (checked again in the registry's transaction).
    fn last_admin(&self, name: &str) -> Result<bool, ControlError> {
        Ok(!self
            .registry
            .operators()?
            .iter()
            .any(|o| o.name != name && o.role == OperatorRole::Admin && o.revoked_at.is_none()))
    }

    /// Check an operator's CSR (PEM): a good key, and the subject CN naming the operator.
    fn operator_csr(
        &self,
        name: &str,
        csr_pem: &str,
    ) -> Result<tollgate_pki::CheckedCsr, ControlError> {
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
                .map_err(|e| {
                    ControlError::InvalidRequest(format!("csr: not a PEM certificate request: {e}"))
                })?;
        let csr = tollgate_pki::check_csr(der.as_ref(), &self.cfg.weak_keys)?;
        if csr.common_name.as_deref() != Some(name) {
            return Err(ControlError::InvalidRequest(format!(
                "the request's subject CN {:?} does not name operator {name:?}",
                csr.common_name.unwrap_or_default()
            )));
        }
        Ok(csr)
    }

    /// Issue an operator certificate for a checked CSR and record it.
    fn issue_operator(
        &self,
        name: &str,
        csr: &tollgate_pki::CheckedCsr,
        lifetime: time::Duration,
    ) -> Result<tollgate_pki::IssuedCert, ControlError> {
        let issued = self.authority.issuer.issue(
            &CertProfile::Operator { name },
            Validity::starting_now(lifetime),
            Some(&csr.public_key),
        )?;
        self.registry.record_certificate(&CertRecord {
            serial: issued.serial.clone(),
            subject: name.to_owned(),
            kind: CertKind::Admin,
            not_before: issued.validity.not_before.unix_timestamp(),
            not_after: issued.validity.not_after.unix_timestamp(),
            revoked_at: None,
            revoke_reason: None,
            key: Some(key_name(&csr.key)),
            spki: crate::cert_spki(&issued.cert_pem),
            issuer: self.issuer_serial(),
        })?;
        Ok(issued)
    }

    pub(crate) fn issuer_serial(&self) -> Option<String> {
        tollgate_pki::parse_pem_certificates(self.authority.issuer.cert_pem())
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| c.serial)
    }

    /// Put revoked serials into the snapshot (refused at the next TLS handshake) and the CRL.
    fn publish_revoked(&self, serials: &[String]) {
        if serials.is_empty() {
            return;
        }
        self.update(Changed::Devices(Vec::new()), |s| {
            for serial in serials {
                s.revoked.insert(serial.clone());
            }
        });
        if let Err(e) = self.regenerate_crl() {
            tracing::error!("re-signing the CRL after revoking operator certificates: {e}");
        }
    }

    /// Register an operator with `role` and issue its certificate for the key of `csr_pem`.
    pub fn add_operator(
        &self,
        name: &str,
        role: OperatorRole,
        csr_pem: &str,
        validity_days: Option<u32>,
        by: &str,
    ) -> Result<IssuedOperator, ControlError> {
        check_name("operator name", name)?;
        let lifetime = days(validity_days, DEFAULT_DAYS.into(), MAX_DAYS)?;
        let csr = self.operator_csr(name, csr_pem)?;
        if self.registry.operator(name)?.is_some() {
            return Err(ControlError::OperatorExists(name.to_owned()));
        }
        self.write_ahead("add_operator", name, by, &format!("role {}", role.as_str()))?;
        self.registry
            .create_operator(name, role, by, now())
            .map_err(|e| match e {
                RegistryError::Conflict(_) => ControlError::OperatorExists(name.to_owned()),
                other => other.into(),
            })?;
        let issued = self.issue_operator(name, &csr, lifetime)?;
        let not_after = issued.validity.not_after.unix_timestamp();
        self.events.emit(EventKind::OperatorAdded {
            operator: name.to_owned(),
            role: role.as_str().to_owned(),
            serial: issued.serial.clone(),
            not_after,
            by: by.to_owned(),
        });
        Ok(IssuedOperator {
            name: name.to_owned(),
            role: role.as_str(),
            serial: issued.serial,
            not_after,
            certificate: issued.cert_pem,
            ca: self.authority.root_pem.clone(),
            revoked_old: Vec::new(),
        })
    }

    /// A new certificate for an active operator; its older ones stay valid until they expire
    /// unless `revoke_old` says otherwise.
    pub fn renew_operator(
        &self,
        name: &str,
        csr_pem: &str,
        validity_days: Option<u32>,
        revoke_old: bool,
        by: &str,
    ) -> Result<IssuedOperator, ControlError> {
        let op = self.active_operator(name)?;
        let lifetime = days(validity_days, DEFAULT_DAYS.into(), MAX_DAYS)?;
        let csr = self.operator_csr(name, csr_pem)?;
        self.write_ahead(
            "renew_operator",
            name,
            by,
            if revoke_old {
                "older certificates revoked"
            } else {
                "older certificates kept until they expire"
            },
        )?;
        let old: Vec<String> = self
            .registry
            .certificates_of(name)?
            .into_iter()
            .filter(|c| c.kind == CertKind::Admin && c.revoked_at.is_none())
            .map(|c| c.serial)
            .collect();
        let issued = self.issue_operator(name, &csr, lifetime)?;
        let revoked_old = if revoke_old {
            let r = self.registry.revoke_operator_certificates(
                name,
                &old,
                "superseded by a renewal",
                now(),
            )?;
            self.publish_revoked(&r);
            r
        } else {
            Vec::new()
        };
        let not_after = issued.validity.not_after.unix_timestamp();
        self.events.emit(EventKind::OperatorRenewed {
            operator: name.to_owned(),
            serial: issued.serial.clone(),
            not_after,
            revoked_old: revoked_old.clone(),
            by: by.to_owned(),
        });
        Ok(IssuedOperator {
            name: name.to_owned(),
            role: op.role.as_str(),
            serial: issued.serial,
            not_after,
            certificate: issued.cert_pem,
            ca: self.authority.root_pem.clone(),
            revoked_old,
        })
    }

    /// Change an operator's role; from its next request on. The last active admin keeps it.
    pub fn set_operator_role(
        &self,
        name: &str,
        role: OperatorRole,
        by: &str,
    ) -> Result<OperatorView, ControlError> {
        let op = self.active_operator(name)?;
        if op.role == OperatorRole::Admin && role != OperatorRole::Admin && self.last_admin(name)? {
            return Err(ControlError::LastAdmin(name.to_owned()));
        }
        self.write_ahead(
            "set_operator_role",
            name,
            by,
            &format!("{} -> {}", op.role.as_str(), role.as_str()),
        )?;
        self.registry
            .set_operator_role(name, role)
            .map_err(|e| self.operator_error(name, e))?;
        self.events.emit(EventKind::OperatorRoleChanged {
            operator: name.to_owned(),
            from: op.role.as_str().to_owned(),
            to: role.as_str().to_owned(),
            by: by.to_owned(),
        });
        self.operator(name)
    }

    /// Revoke an operator and its certificates (they land in the CRL). The last active admin
    /// cannot be revoked.
    pub fn revoke_operator(
        &self,
        name: &str,
        reason: &str,
        by: &str,
    ) -> Result<OperatorView, ControlError> {
        let op = self.active_operator(name)?;
        if op.role == OperatorRole::Admin && self.last_admin(name)? {
            return Err(ControlError::LastAdmin(name.to_owned()));
        }
        self.write_ahead("revoke_operator", name, by, reason)?;
        let serials = self
            .registry
            .revoke_operator(name, reason, by, now())
            .map_err(|e| self.operator_error(name, e))?;
        self.publish_revoked(&serials);
        self.events.emit(EventKind::OperatorRevoked {
            operator: name.to_owned(),
            serials,
            reason: reason.to_owned(),
            by: by.to_owned(),
        });
        self.operator(name)
    }

    fn operator_error(&self, name: &str, e: RegistryError) -> ControlError {
        match e {
            RegistryError::NotFound(_) => ControlError::OperatorNotFound(name.to_owned()),
            RegistryError::Revoked(_) => ControlError::OperatorRevoked(name.to_owned()),
            other => other.into(),
        }
    }

    /// Renew the gateway's server certificate: the same DNS names, IP addresses and CRL
    /// distribution points (plus `extra_dns` and `extra_ips`), from the current issuing CA,
    /// written to the data directory as one commit and handed to both listeners (through the
    /// trust channel, which rebuilds their TLS configurations): new handshakes present it at
    /// once, without a restart; connections already open keep theirs.
    pub fn renew_server(
        &self,
        extra_dns: &[String],
        extra_ips: &[std::net::IpAddr],
        validity_days: Option<u32>,
        by: &str,
    ) -> Result<ServerRenewed, ControlError> {
        let lifetime = days(validity_days, SERVER_DAYS, SERVER_DAYS)?;
        let l = Layout::new(&self.cfg.data);
        let current = std::fs::read_to_string(l.server_cert())
            .map_err(|e| ControlError::io(format!("reading {}", l.server_cert().display()), e))?;
        let der = crate::ca::pem_to_der(&current)?;
        let previous = tollgate_pki::parse_certificate(&der).ok().map(|i| i.serial);
        let mut names = tollgate_pki::server_names(&der)?;
        for d in extra_dns {
            if d.is_empty()
                || d.len() > 253
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*'))
            {
                return Err(ControlError::InvalidRequest(format!(
                    "{d:?} is not a DNS name"
                )));
            }
            if !names.dns.contains(d) {
                names.dns.push(d.clone());
            }
        }
        for ip in extra_ips {
            if !names.ips.contains(ip) {
                names.ips.push(*ip);
            }
        }
        if names.dns.is_empty() && names.ips.is_empty() {
            return Err(ControlError::InvalidRequest(
                "the server certificate would carry no name".into(),
            ));
        }
        let shown: Vec<String> = names
            .dns
            .iter()
            .cloned()
            .chain(names.ips.iter().map(|i| i.to_string()))
            .collect();
        self.write_ahead(
            "renew_server_certificate",
            "tollgate",
            by,
            &shown.join(", "),
        )?;
        let issued = self.authority.issuer.issue(
            &CertProfile::Server {
                dns: &names.dns,
                ips: &names.ips,
                crl_urls: &names.crl_urls,
            },
            Validity::starting_now(lifetime),
            None,
        )?;
        let chain = format!("{}{}", issued.cert_pem, self.authority.issuer.cert_pem());
        let key = issued.key_pem.clone().unwrap_or_default();
        files::commit(
            &l.server_journal(),
            &[
                FileWrite {
                    path: l.server_key(),
                    contents: key.as_bytes(),
                    private: true,
                },
                FileWrite {
                    path: l.server_cert(),
                    contents: chain.as_bytes(),
                    private: false,
                },
            ],
        )
        .map_err(|e| ControlError::io("writing the renewed server certificate", e))?;
        let not_after = issued.validity.not_after.unix_timestamp();
        self.registry.record_certificate(&CertRecord {
            serial: issued.serial.clone(),
            subject: "tollgate".into(),
            kind: CertKind::Server,
            not_before: issued.validity.not_before.unix_timestamp(),
            not_after,
            revoked_at: None,
            revoke_reason: None,
            key: Some("ecdsa-p256".into()),
            spki: crate::cert_spki(&issued.cert_pem),
            issuer: self.issuer_serial(),
        })?;
        // The listeners rebuild their configurations from the files on every trust change.
        self.publish_trust();
        self.events.emit(EventKind::ServerCertificateRenewed {
            serial: issued.serial.clone(),
            previous: previous.clone(),
            not_after,
            names: shown.clone(),
            by: by.to_owned(),
        });
        Ok(ServerRenewed {
            serial: issued.serial,
            previous,
            not_after,
            names: shown,
        })
    }

    /// The server certificate in force and every active operator's newest certificate, with
    /// their expiry (for `ca status`).
    pub(crate) fn certificate_expiry(&self) -> Result<serde_json::Value, ControlError> {
        let l = Layout::new(&self.cfg.data);
        let server = match std::fs::read_to_string(l.server_cert())
            .map_err(|e| e.to_string())
            .and_then(|pem| tollgate_pki::parse_pem_certificates(&pem).map_err(|e| e.to_string()))
        {
            Ok(certs) => match certs.into_iter().next() {
                Some(i) => serde_json::json!({
                    "subject": i.subject, "serial": i.serial,
                    "not_before": crate::timefmt::rfc3339(i.not_before),
                    "not_after": crate::timefmt::rfc3339(i.not_after),
                }),
                None => serde_json::json!({ "error": "no certificate" }),
            },
            Err(e) => serde_json::json!({ "error": e }),
        };
        let mut operators = Vec::new();
        for op in self.operators()? {
            if op.state != "active" {
                continue;
            }
            let newest = op
                .certificates
                .iter()
                .filter(|c| c.revoked_at.is_none())
                .max_by_key(|c| c.not_after);
            operators.push(serde_json::json!({
                "name": op.name,
                "role": op.role,
                "serial": newest.map(|c| c.serial.clone()),
                "not_after": newest.map(|c| crate::timefmt::rfc3339(c.not_after)),
            }));
        }
        Ok(serde_json::json!({ "server": server, "operators": operators }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_bounded() {
        assert_eq!(days(None, 90, 825).unwrap(), time::Duration::days(90));
        assert_eq!(days(Some(7), 90, 825).unwrap(), time::Duration::days(7));
        assert!(days(Some(0), 90, 825).is_err());
        assert!(days(Some(826), 90, 825).is_err());
        assert!(parse_role("root").is_err());
        assert_eq!(parse_role("viewer").unwrap(), OperatorRole::Viewer);
    }
}
