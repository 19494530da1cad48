//! Tollgate's device PKI.
//!
//! Owns the certificate hierarchy (a root CA and an issuing CA), the issuance of server, admin and
//! device certificates, and reading an identity back out of a verified certificate.
//!
//! It works on PEM/DER in memory and never touches the file system, sockets or MQTT; the binary
//! decides where keys live (0600 files in the data directory).
//!
//! Identity rules, shared by issuance and verification:
//! - a device certificate carries the URI SAN `urn:tollgate:device:<id>` and `CN=<id>`;
//! - an operator certificate carries `urn:tollgate:operator:<name>` (older ones
//!   `urn:tollgate:admin:<name>`, still read as the operator of that name); it names the operator,
//!   and the operator's role comes from the registry;
//! - the device id of a verified certificate is its `urn:tollgate:device:` SAN if present, else its CN;
//! - serial numbers are 16 random bytes (positive, non-zero first byte), written as lower-case hex.

#![forbid(unsafe_code)]

mod csr;
mod hierarchy;
mod identity;
mod pkcs7;
mod token;

pub use csr::{
    check_csr, describe_spki, is_blocklisted, is_roca_vulnerable, vulnkey_fingerprint, CheckedCsr,
    CsrError, KeyKind, PublicKeyInfo, WeakKeyList,
};
pub use hierarchy::RevokedEntry;
pub use pkcs7::{certs_only, parse_certs_only};
pub use token::{generate_token, hash_token, token_matches};

pub use hierarchy::{
    generate_key, CertAndKey, CertProfile, IssuedCert, Issuer, Validity, ADMIN_URI_PREFIX,
    DEVICE_URI_PREFIX, OPERATOR_URI_PREFIX,
};
pub use identity::{
    bootstrap_identity, is_issued_by, parse_certificate, parse_pem_certificates, server_names,
    validate_device_id, BootstrapIdentity, CertInfo, Role, ServerNames,
};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("cannot parse certificate: {0}")]
    Parse(String),
    /// A PEM document held no certificate, or was not PEM.
    #[error("no certificate found in PEM input")]
    NoCertificate,
    /// A device id contains characters outside the safe alphabet or is too long.
    #[error("invalid device id {id:?}: {why}")]
    InvalidDeviceId {
        /// The offending id.
        id: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// A random number could not be drawn from the operating system.
    #[error("system random number generator failed")]
    Random,
}
