//! The CA hierarchy and certificate issuance.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use crate::identity::validate_device_id;
use crate::PkiError;

/// URI SAN prefix naming a device.
pub const DEVICE_URI_PREFIX: &str = "urn:tollgate:device:";
/// URI SAN prefix naming an administrator (certificates made before named operators; still
/// accepted, read as an operator of that name).
pub const ADMIN_URI_PREFIX: &str = "urn:tollgate:admin:";
/// URI SAN prefix naming an operator of the admin API (its role lives in the registry).
pub const OPERATOR_URI_PREFIX: &str = "urn:tollgate:operator:";

/// A validity window.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not valid before this instant.
    pub not_before: OffsetDateTime,
    /// Not valid after this instant.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From now (minus five minutes of clock-skew allowance) for `lifetime`.
    pub fn starting_now(lifetime: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(5),
            not_after: now + lifetime,
        }
    }
}

/// A PEM certificate with its PEM private key.
#[derive(Clone)]
pub struct CertAndKey {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A freshly issued certificate, with the facts the registry records.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// Certificate and key (the key is `None` when the caller supplied only a public key).
    pub cert_pem: String,
    /// PEM private key, when this crate generated it.
    pub key_pem: Option<String>,
    /// Serial number as lower-case hex.
    pub serial: String,
    /// Validity window.
    pub validity: Validity,
}

/// What kind of certificate to issue.
#[derive(Debug, Clone)]
pub enum CertProfile<'a> {
    /// A TLS server certificate for the gateway.
    Server {
        /// DNS names.
        dns: &'a [String],
        /// IP addresses.
        ips: &'a [IpAddr],
        /// Where its issuer's CRL is served (CRL distribution points), if anywhere.
        crl_urls: &'a [String],
    },
    /// A device (MQTT client) certificate.
    Device {
        /// The device id (validated).
        id: &'a str,
    },
    /// An administrator client certificate for the admin API (the old form, SAN
    /// `urn:tollgate:admin:NAME`; kept for tools that make one).
    Admin {
        /// The administrator's name.
        name: &'a str,
    },
    /// An operator client certificate for the admin API (SAN `urn:tollgate:operator:NAME`):
    /// it names the operator only; the role is the registry's.
    Operator {
        /// The operator's name (the device-id alphabet).
        name: &'a str,
    },
}

/// Generate a P-256 key pair (the default key type).
pub fn generate_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn random_serial() -> Result<(SerialNumber, String), PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // Positive (top bit clear) and minimal in DER (first byte non-zero), so the hex we
    // record is exactly the hex a verifier reads back.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((SerialNumber::from_slice(&bytes), hex))
}

fn dn(cn: &str, ou: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tollgate");
    if let Some(ou) = ou {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// A CA that can sign: its certificate, parameters and key.
pub struct Issuer {
    cert_pem: String,
    key_pem: String,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").finish_non_exhaustive()
    }
}

impl Issuer {
    /// Create a self-signed root CA (ECDSA P-256, 10 years).
    pub fn new_root(common_name: &str) -> Result<Issuer, PkiError> {
        let key = generate_key()?;
        let mut params = ca_params(common_name, Some(1), Duration::days(3650))?;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Issuer {
            cert_pem,
            key_pem,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// Create an issuing (intermediate) CA signed by this CA, path length 0, 5 years.
    pub fn new_intermediate(&self, common_name: &str) -> Result<Issuer, PkiError> {
        let key = generate_key()?;
        let mut params = ca_params(common_name, Some(0), Duration::days(1825))?;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Issuer {
            cert_pem,
            key_pem,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// Load a CA from its PEM certificate and PEM private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Issuer, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Issuer {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issue a certificate for `profile`. With `public_key` None a fresh P-256 key is generated
    /// and returned with the certificate; otherwise the certificate binds the given key
    /// (only the key is taken from the caller: every other field comes from `profile`).
    pub fn issue(
        &self,
        profile: &CertProfile<'_>,
        validity: Validity,
        public_key: Option<&rcgen::SubjectPublicKeyInfo>,
    ) -> Result<IssuedCert, PkiError> {
        let (serial_number, serial) = random_serial()?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(serial_number);
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        match profile {
            CertProfile::Server { dns, ips, crl_urls } => {
                if !crl_urls.is_empty() {
                    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                        uris: crl_urls.to_vec(),
                    }];
                }
                params.distinguished_name =
                    dn(dns.first().map(String::as_str).unwrap_or("tollgate"), None);
                for name in dns.iter() {
                    params
                        .subject_alt_names
                        .push(SanType::DnsName(name.as_str().try_into()?));
                }
                for ip in ips.iter() {
                    params.subject_alt_names.push(SanType::IpAddress(*ip));
                }
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            CertProfile::Device { id } => {
                validate_device_id(id)?;
                params.distinguished_name = dn(id, Some("devices"));
                params
                    .subject_alt_names
                    .push(SanType::URI(format!("{DEVICE_URI_PREFIX}{id}").try_into()?));
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            CertProfile::Admin { name } => {
                validate_device_id(name)?;
                params.distinguished_name = dn(name, Some("administrators"));
                params.subject_alt_names.push(SanType::URI(
                    format!("{ADMIN_URI_PREFIX}{name}").try_into()?,
                ));
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            CertProfile::Operator { name } => {
                validate_device_id(name)?;
                params.distinguished_name = dn(name, Some("operators"));
                params.subject_alt_names.push(SanType::URI(
                    format!("{OPERATOR_URI_PREFIX}{name}").try_into()?,
                ));
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        let (cert, key_pem) = match public_key {
            Some(spki) => (params.signed_by(spki, &self.issuer)?, None),
            None => {
                let key = generate_key()?;
                (
                    params.signed_by(&key, &self.issuer)?,
                    Some(key.serialize_pem()),
                )
            }
        };
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem,
            serial,
            validity,
        })
    }
}

/// One revoked certificate, for a CRL.
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    /// Serial, lower-case hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// Whether the recorded reason was a key compromise.
    pub key_compromise: bool,
}

fn serial_from_hex(hex: &str) -> Option<SerialNumber> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    bytes.map(|b| SerialNumber::from_slice(&b))
}

impl Issuer {
    /// A signed CRL (DER) listing `revoked`, numbered `number`, valid until `next_update`.
    pub fn crl(
        &self,
        revoked: &[RevokedEntry],
        number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, PkiError> {
        let revoked_certs = revoked
            .iter()
            .filter_map(|r| {
                Some(rcgen::RevokedCertParams {
                    serial_number: serial_from_hex(&r.serial)?,
                    revocation_time: r.revoked_at,
                    reason_code: Some(if r.key_compromise {
                        rcgen::RevocationReason::KeyCompromise
                    } else {
                        rcgen::RevocationReason::Unspecified
                    }),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

fn ca_params(
    cn: &str,
    path_len: Option<u8>,
    life: Duration,
) -> Result<CertificateParams, PkiError> {
    let (serial_number, _) = random_serial()?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial_number);
    params.distinguished_name = dn(cn, None);
    params.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    let v = Validity::starting_now(life);
    params.not_before = v.not_before;
    params.not_after = v.not_after;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_pem_certificates, Role};

    #[test]
    fn device_certificate_names_the_device_and_is_not_a_ca() {
        let root = Issuer::new_root("Test Root").unwrap();
        let ica = root.new_intermediate("Test Issuing").unwrap();
        let issued = ica
            .issue(
                &CertProfile::Device { id: "pump-7" },
                Validity::starting_now(Duration::days(7)),
                None,
            )
            .unwrap();
        let info = &parse_pem_certificates(&issued.cert_pem).unwrap()[0];
        assert_eq!(info.role, Role::Device("pump-7".into()));
        assert_eq!(info.serial, issued.serial);
        assert!(!info.is_ca);
        let ica_info = &parse_pem_certificates(ica.cert_pem()).unwrap()[0];
        assert!(ica_info.is_ca);
    }

    #[test]
    fn operator_certificates_name_the_operator_in_either_uri_form() {
        let root = Issuer::new_root("Test Root").unwrap();
        let ica = root.new_intermediate("Test Issuing").unwrap();
        for profile in [
            CertProfile::Operator { name: "alice" },
            CertProfile::Admin { name: "alice" },
        ] {
            let issued = ica
                .issue(&profile, Validity::starting_now(Duration::days(7)), None)
                .unwrap();
            let info = &parse_pem_certificates(&issued.cert_pem).unwrap()[0];
            assert_eq!(info.role, Role::Admin("alice".into()), "{profile:?}");
        }
    }

    #[test]
    fn a_server_certificate_gives_back_the_names_it_was_issued_with() {
        let root = Issuer::new_root("Test Root").unwrap();
        let dns = vec!["gw.example".to_string(), "localhost".to_string()];
        let ips = vec![
            IpAddr::from([127, 0, 0, 1]),
            "::1".parse::<IpAddr>().unwrap(),
        ];
        let crl = vec!["https://gw.example:8443/crl".to_string()];
        let issued = root
            .issue(
                &CertProfile::Server {
                    dns: &dns,
                    ips: &ips,
                    crl_urls: &crl,
                },
                Validity::starting_now(Duration::days(7)),
                None,
            )
            .unwrap();
        let der = x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let names = crate::server_names(&der).unwrap();
        assert_eq!((names.dns, names.ips, names.crl_urls), (dns, ips, crl));
    }

    #[test]
    fn issuer_round_trips_through_pem() {
        let root = Issuer::new_root("Test Root").unwrap();
        let again = Issuer::from_pem(root.cert_pem(), root.key_pem()).unwrap();
        let ica = again.new_intermediate("x").unwrap();
        assert!(ica.cert_pem().contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn device_ids_outside_the_safe_alphabet_are_refused_at_issuance() {
        let root = Issuer::new_root("Test Root").unwrap();
        for bad in ["a/b", "+", "#", "a b", "", "\u{0}x"] {
            let r = root.issue(
                &CertProfile::Device { id: bad },
                Validity::starting_now(Duration::days(1)),
                None,
            );
            assert!(r.is_err(), "{bad:?} accepted");
        }
    }
}
