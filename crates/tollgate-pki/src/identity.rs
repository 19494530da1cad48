//! Reading an identity out of a certificate, and the device-id alphabet.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::hierarchy::{ADMIN_URI_PREFIX, DEVICE_URI_PREFIX, OPERATOR_URI_PREFIX};
use crate::PkiError;

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A device, by id.
    Device(String),
    /// An operator of the admin API, by name (`urn:tollgate:operator:NAME`, or the older
    /// `urn:tollgate:admin:NAME`). What it may do is the registry's to say, not the certificate's.
    Admin(String),
    /// A CA or a certificate naming neither (server certificates).
    Other,
}

/// What Tollgate needs to know about a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Serial number, lower-case hex of its DER content bytes.
    pub serial: String,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// Device or admin identity.
    pub role: Role,
    /// Whether basicConstraints marks it as a CA.
    pub is_ca: bool,
    /// Validity start, seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity end, seconds since the Unix epoch.
    pub not_after: i64,
    /// Issuer distinguished name, as text.
    pub issuer: String,
    /// Subject distinguished name, as text.
    pub subject: String,
    /// The SubjectPublicKeyInfo, DER (see [`crate::describe_spki`]).
    pub spki: Vec<u8>,
}

/// Check a device id against the safe alphabet: 1 to 128 characters of `A-Z a-z 0-9 . _ - :`,
/// not starting with `$` (implied) or `.`. No `/`, `+`, `#`, whitespace or control characters can
/// appear, so an id can never widen a topic pattern it is substituted into.
pub fn validate_device_id(id: &str) -> Result<(), PkiError> {
    // The id in the error is escaped and cut short: it may have come off the network (a
    // certificate's SAN) on its way to a log line.
    let err = |why| {
        Err(PkiError::InvalidDeviceId {
            id: id.chars().take(64).flat_map(char::escape_default).collect(),
            why,
        })
    };
    if id.is_empty() {
        return err("empty");
    }
    if id.len() > 128 {
        return err("longer than 128 characters");
    }
    if id.starts_with('.') || id.starts_with('-') {
        return err("must start with a letter, digit, '_' or ':'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return err("only letters, digits and . _ - : are allowed");
    }
    Ok(())
}

/// Parse one DER certificate.
pub fn parse_certificate(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let serial = cert
        .tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut role = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                // Checked here, before the id reaches a registry lookup or a log line.
                if let Some(id) = uri.strip_prefix(DEVICE_URI_PREFIX) {
                    validate_device_id(id)?;
                    role = Some(Role::Device(id.to_owned()));
                    break;
                }
                if let Some(id) = uri
                    .strip_prefix(OPERATOR_URI_PREFIX)
                    .or_else(|| uri.strip_prefix(ADMIN_URI_PREFIX))
                {
                    validate_device_id(id)?;
                    role = Some(Role::Admin(id.to_owned()));
                    break;
                }
            }
        }
    }
    let is_ca = cert.is_ca();
    let role = match role {
        Some(r) => r,
        None if is_ca => Role::Other,
        None => match &common_name {
            Some(cn) if validate_device_id(cn).is_ok() => Role::Device(cn.clone()),
            _ => Role::Other,
        },
    };
    Ok(CertInfo {
        serial,
        common_name,
        role,
        is_ca,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        spki: cert.tbs_certificate.subject_pki.raw.to_vec(),
    })
}

/// The names a server certificate carries: DNS names, IP addresses and the URIs of its CRL
/// distribution points (what a renewal must keep).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerNames {
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// IP address subject alternative names.
    pub ips: Vec<std::net::IpAddr>,
    /// CRL distribution point URIs.
    pub crl_urls: Vec<String>,
}

/// Read the names of a (server) certificate, DER.
pub fn server_names(der: &[u8]) -> Result<ServerNames, PkiError> {
    use x509_parser::extensions::{DistributionPointName, ParsedExtension};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut out = ServerNames::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.dns.push((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let mut a = [0u8; 4];
                        a.copy_from_slice(b);
                        out.ips.push(std::net::IpAddr::from(a));
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        out.ips.push(std::net::IpAddr::from(a));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n {
                            out.crl_urls.push((*u).to_owned());
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Parse every certificate in a PEM document.
pub fn parse_pem_certificates(pem: &str) -> Result<Vec<CertInfo>, PkiError> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let item = item.map_err(|e| PkiError::Parse(e.to_string()))?;
        if item.label == "CERTIFICATE" {
            out.push(parse_certificate(&item.contents)?);
        }
    }
    if out.is_empty() {
        return Err(PkiError::NoCertificate);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_alphabet() {
        for ok in ["pump-7", "a", "scanner_01.dock-3", "urn:x", "A9"] {
            assert!(validate_device_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "a+b",
            "#",
            "a b",
            "tab\t",
            "$SYS",
            ".hidden",
            "-x",
            "é",
            &"x".repeat(129),
        ] {
            assert!(validate_device_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_uri_san_outside_the_device_id_alphabet_is_refused_and_escaped() {
        let long = "a".repeat(4096);
        for bad in ["dev\u{0}ice", long.as_str(), "a/b", "+", "#", "x y"] {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.subject_alt_names = vec![rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(format!("{DEVICE_URI_PREFIX}{bad}")).unwrap(),
            )];
            let key = rcgen::KeyPair::generate().unwrap();
            let der = p.self_signed(&key).unwrap().der().to_vec();
            let e = parse_certificate(&der).expect_err(bad);
            let text = e.to_string();
            assert!(!text.contains('\u{0}'), "{text:?}");
            assert!(text.len() < 400, "{} bytes: {text:.80}", text.len());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_certificate(&[0x30, 0x82, 0xff]).is_err());
        assert!(parse_pem_certificates("not pem").is_err());
    }
}

/// Whether `cert_der` carries a valid signature by the CA in `ca_der` (and names it as issuer).
/// Used to tell an operational certificate from a supplier's bootstrap certificate after TLS
/// has already verified the chain to one of several trust anchors.
pub fn is_issued_by(cert_der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(cert_der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// What a supplier's bootstrap (IEEE 802.1AR IDevID-style) certificate says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapIdentity {
    /// The device id it may enroll as: the subject serialNumber attribute, else the CN.
    pub device_id: String,
    /// Hardware serial number (subject serialNumber, else the certificate serial).
    pub hardware_serial: String,
    /// Model (subject OU or title, if present).
    pub model: Option<String>,
    /// Manufacturer (subject O, if present).
    pub manufacturer: Option<String>,
}

/// Read the bootstrap identity out of a manufacturing certificate.
pub fn bootstrap_identity(der: &[u8]) -> Result<BootstrapIdentity, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let subject = cert.subject();
    let first = |oid: &x509_parser::der_parser::oid::Oid<'_>| {
        subject
            .iter_by_oid(oid)
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
    };
    use x509_parser::oid_registry::{
        OID_X509_COMMON_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_ORGANIZATION_NAME,
        OID_X509_SERIALNUMBER, OID_X509_TITLE,
    };
    let hw = first(&OID_X509_SERIALNUMBER);
    let cn = first(&OID_X509_COMMON_NAME);
    let device_id = hw.clone().or(cn).ok_or_else(|| {
        PkiError::Parse("the bootstrap certificate names no device (no serialNumber or CN)".into())
    })?;
    validate_device_id(&device_id)?;
    let hardware_serial = hw.unwrap_or_else(|| {
        cert.tbs_certificate
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    });
    Ok(BootstrapIdentity {
        device_id,
        hardware_serial,
        model: first(&OID_X509_ORGANIZATIONAL_UNIT).or_else(|| first(&OID_X509_TITLE)),
        manufacturer: first(&OID_X509_ORGANIZATION_NAME),
    })
}
