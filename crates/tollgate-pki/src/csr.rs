//! Certificate signing requests: parse, verify, and hold them to our key policy.
//!
//! Only the verified public key and the requested common name leave this module; every other
//! field of an issued certificate comes from Tollgate's own records (rcgen would otherwise copy
//! `is_ca` and the SANs straight out of the request).

use std::collections::HashSet;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Why a CSR was refused. Each message is meant for the operator of the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not a PKCS#10 request.
    #[error("not a valid PKCS#10 certificate request: {0}")]
    Malformed(String),
    /// The request's self-signature does not verify.
    #[error("the certificate request's signature does not verify")]
    BadSignature,
    /// Signed with SHA-1, MD5 or another broken algorithm.
    #[error("the certificate request is signed with {0}, which is refused; use SHA-256 or better")]
    WeakSignature(&'static str),
    /// A key type Tollgate does not issue for.
    #[error("unsupported key type {0}; use ECDSA P-256 (default), P-384, Ed25519 or RSA of 2048 bits or more")]
    UnsupportedKey(String),
    /// RSA below 2048 bits.
    #[error("RSA key of {0} bits refused: at least 2048 bits are required")]
    RsaTooSmall(usize),
    /// A key known to be weak (ROCA, a blocklist such as Debian's 2008 OpenSSL keys).
    #[error("weak key refused: {0}")]
    WeakKey(String),
    /// The request asks for a CA certificate.
    #[error("requests for CA certificates are refused")]
    CaRequested,
}

/// The key in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
    /// RSA with this many modulus bits.
    Rsa(usize),
}

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// Key type.
    pub key: KeyKind,
    /// The verified public key, ready for issuance.
    pub public_key: rcgen::SubjectPublicKeyInfo,
}

/// Known-weak RSA keys, as openssl-vulnkey fingerprints: the last 20 hex digits of
/// SHA-1("Modulus=" + upper-case hex modulus + "\n"), one per line (Debian's 2008 OpenSSL
/// blocklist uses this format).
#[derive(Debug, Clone, Default)]
pub struct WeakKeyList {
    fingerprints: HashSet<String>,
}

impl WeakKeyList {
    /// Parse a blocklist file's contents (comments with `#`, blank lines ignored).
    pub fn parse(text: &str) -> WeakKeyList {
        let fingerprints = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let l = l.to_ascii_lowercase();
                (l.len() >= 20 && l.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| l[l.len() - 20..].to_owned())
            })
            .collect();
        WeakKeyList { fingerprints }
    }

    /// Entries in the list.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    fn contains_modulus(&self, modulus: &[u8]) -> bool {
        !self.fingerprints.is_empty() && self.fingerprints.contains(&vulnkey_fingerprint(modulus))
    }
}

/// openssl-vulnkey's fingerprint of an RSA modulus (big-endian bytes, leading zeros ignored).
pub fn vulnkey_fingerprint(modulus: &[u8]) -> String {
    let m = strip_zeros(modulus);
    let mut text = String::with_capacity(m.len() * 2 + 10);
    text.push_str("Modulus=");
    for b in m {
        text.push_str(&format!("{b:02X}"));
    }
    text.push('\n');
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    hex[hex.len() - 20..].to_owned()
}

fn strip_zeros(m: &[u8]) -> &[u8] {
    let first = m.iter().position(|&b| b != 0).unwrap_or(m.len());
    m.get(first..).unwrap_or(&[])
}

fn rsa_bits(modulus: &[u8]) -> usize {
    let m = strip_zeros(modulus);
    match m.first() {
        None => 0,
        Some(&top) => m.len() * 8 - top.leading_zeros() as usize,
    }
}

/// The ROCA fingerprint (CVE-2017-15361, Infineon RSALib): such moduli are 65537^a modulo every
/// small prime. A modulus whose residue mod each of these primes lies in the subgroup generated
/// by 65537 is (with negligible false positives) a ROCA key.
pub fn is_roca_vulnerable(modulus: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    let m = strip_zeros(modulus);
    if m.is_empty() {
        return false;
    }
    PRIMES.iter().all(|&p| {
        let r = m
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % p);
        // Walk the subgroup generated by 65537 mod p.
        let g = 65537 % p;
        let mut x = 1 % p;
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 % p {
                break;
            }
        }
        x == r
    })
}

/// A public key, as the configuration audit needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyInfo {
    /// RSA, with its modulus (big-endian).
    Rsa {
        /// The modulus.
        modulus: Vec<u8>,
        /// Its size in bits.
        bits: usize,
    },
    /// ECDSA on the named curve (`P-256`, `P-384`, or the curve's OID).
    Ec {
        /// The curve.
        curve: String,
    },
    /// Ed25519.
    Ed25519,
    /// Another algorithm (its OID).
    Other(String),
}

/// Describe a DER SubjectPublicKeyInfo (from [`crate::CertInfo::spki`]).
pub fn describe_spki(der: &[u8]) -> PublicKeyInfo {
    use x509_parser::x509::SubjectPublicKeyInfo;
    let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(der) else {
        return PublicKeyInfo::Other("unreadable".into());
    };
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.10045.2.1" => {
            let oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            let curve = match oid.as_str() {
                "1.2.840.10045.3.1.7" => "P-256".to_owned(),
                "1.3.132.0.34" => "P-384".to_owned(),
                "1.3.132.0.35" => "P-521".to_owned(),
                _ => oid,
            };
            PublicKeyInfo::Ec { curve }
        }
        "1.3.101.112" => PublicKeyInfo::Ed25519,
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => PublicKeyInfo::Rsa {
                modulus: strip_zeros(rsa.modulus).to_vec(),
                bits: rsa_bits(rsa.modulus),
            },
            _ => PublicKeyInfo::Other("unreadable RSA key".into()),
        },
        other => PublicKeyInfo::Other(other.to_owned()),
    }
}

/// Whether an RSA modulus is on `list` (openssl-vulnkey fingerprints).
pub fn is_blocklisted(list: &WeakKeyList, modulus: &[u8]) -> bool {
    list.contains_modulus(modulus)
}

fn weak_signature(oid: &str) -> Option<&'static str> {
    match oid {
        "1.2.840.113549.1.1.5" => Some("SHA-1 with RSA"),
        "1.2.840.113549.1.1.4" => Some("MD5 with RSA"),
        "1.2.840.113549.1.1.2" => Some("MD2 with RSA"),
        "1.2.840.10045.4.1" => Some("ECDSA with SHA-1"),
        "1.2.840.10040.4.3" => Some("DSA with SHA-1"),
        "1.3.14.3.2.29" => Some("SHA-1 with RSA (OIW)"),
        _ => None,
    }
}

/// Parse, verify and check a DER PKCS#10 request against the key policy.
pub fn check_csr(der: &[u8], weak: &WeakKeyList) -> Result<CheckedCsr, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(
            "trailing bytes after the request".into(),
        ));
    }
    let sig_oid = csr.signature_algorithm.algorithm.to_id_string();
    if let Some(name) = weak_signature(&sig_oid) {
        return Err(CsrError::WeakSignature(name));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let alg = spki.algorithm.algorithm.to_id_string();
    let key = match alg.as_str() {
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => KeyKind::EcP256,
                "1.3.132.0.34" => KeyKind::EcP384,
                other => return Err(CsrError::UnsupportedKey(format!("ECDSA on curve {other}"))),
            }
        }
        "1.3.101.112" => KeyKind::Ed25519,
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let bits = rsa_bits(rsa.modulus);
                if bits < 2048 {
                    return Err(CsrError::RsaTooSmall(bits));
                }
                if is_roca_vulnerable(rsa.modulus) {
                    return Err(CsrError::WeakKey(
                        "the RSA modulus has the ROCA fingerprint (CVE-2017-15361)".into(),
                    ));
                }
                if weak.contains_modulus(rsa.modulus) {
                    return Err(CsrError::WeakKey(
                        "the RSA key is on the weak-key blocklist".into(),
                    ));
                }
                KeyKind::Rsa(bits)
            }
            _ => return Err(CsrError::Malformed("unreadable RSA public key".into())),
        },
        other => return Err(CsrError::UnsupportedKey(other.to_owned())),
    };
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::BasicConstraints(bc) = ext {
                if bc.ca {
                    return Err(CsrError::CaRequested);
                }
            }
        }
    }
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CsrError::UnsupportedKey(e.to_string()))?;
    Ok(CheckedCsr {
        common_name,
        key,
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(key: &rcgen::KeyPair, cn: &str, ca: bool) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.serialize_request(key).unwrap().der().to_vec()
    }

    #[test]
    fn good_requests_pass_and_name_their_subject() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let c = check_csr(&csr_for(&key, "pump-7", false), &WeakKeyList::default()).unwrap();
            assert_eq!(c.common_name.as_deref(), Some("pump-7"));
        }
    }

    #[test]
    fn ca_requests_garbage_and_tampering_are_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert_eq!(
            check_csr(&csr_for(&key, "x", true), &WeakKeyList::default()).unwrap_err(),
            CsrError::CaRequested
        );
        assert!(matches!(
            check_csr(b"\x30\x03\x02\x01\x00", &WeakKeyList::default()),
            Err(CsrError::Malformed(_))
        ));
        let mut der = csr_for(&key, "pump-7", false);
        // Flip a byte of the common name: the signature no longer verifies.
        let pos = der.windows(6).position(|w| w == b"pump-7").unwrap();
        der[pos] = b'q';
        assert_eq!(
            check_csr(&der, &WeakKeyList::default()).unwrap_err(),
            CsrError::BadSignature
        );
    }

    #[test]
    fn roca_fingerprint_flags_powers_of_65537_and_not_random_moduli() {
        // The detector judges a modulus only by its residues: 65537 itself is 65537^1 modulo
        // every fingerprint prime, so it must be flagged; 65537 * 2 is not (its residue mod 3
        // is 1 * 2 = 2 = 65537 mod 3... so use a residue outside the subgroup mod 11 instead).
        assert!(is_roca_vulnerable(&65537u32.to_be_bytes()));
        let mut rnd = [0u8; 256];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd).unwrap();
        rnd[0] |= 0x80;
        assert!(
            !is_roca_vulnerable(&rnd),
            "false positive on a random modulus"
        );
    }

    #[test]
    fn blocklist_uses_the_openssl_vulnkey_fingerprint() {
        let modulus = [0x00u8, 0xC3, 0x5A, 0x01];
        let fp = vulnkey_fingerprint(&modulus);
        assert_eq!(fp.len(), 20);
        let list = WeakKeyList::parse(&format!("# comment\n\n{}\n", fp.to_uppercase()));
        assert_eq!(list.len(), 1);
        assert!(list.contains_modulus(&modulus));
        assert!(!WeakKeyList::parse("zz\n").contains_modulus(&modulus));
    }

    #[test]
    fn rsa_bit_length_ignores_leading_zero() {
        assert_eq!(rsa_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(rsa_bits(&[0x01, 0x00]), 9);
        assert_eq!(rsa_bits(&[]), 0);
    }
}
