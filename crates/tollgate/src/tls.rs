//! TLS: server configurations for the MQTT and admin listeners, the client-certificate
//! verifier that also consults the live revocation set, and the admin client configuration.

use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use tollgate_events::RefusalReason;

/// Answers "is this serial revoked right now?" from the control plane's live snapshot.
pub type RevocationCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// ring's provider with AES-128-GCM/SHA-256 suites preferred: 128-bit security, and SHA-256
/// (used by the handshake's key schedule) has hardware support where SHA-384 does not, which
/// makes handshakes measurably cheaper. AES-256 and ChaCha20 stay available.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    Arc::new(p)
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading private key {}", path.display()))
}

fn roots(paths: &[&Path]) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for p in paths {
        for c in load_certs(p)? {
            store
                .add(c)
                .with_context(|| format!("adding {} as a trust anchor", p.display()))?;
        }
    }
    Ok(store)
}

/// Client-certificate verification: WebPKI chain and validity checks against the issuing CA,
/// then the certificate's serial against the live revocation set.
#[derive(Debug)]
struct RevocationAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevocationCheckDebug,
}

struct RevocationCheckDebug(RevocationCheck);

impl std::fmt::Debug for RevocationCheckDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevocationCheck")
    }
}

impl ClientCertVerifier for RevocationAwareVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = tollgate_pki::parse_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if (self.revoked.0)(&info.serial) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How a listener treats client certificates.
#[derive(Clone, Default)]
pub struct ClientAuth {
    /// Accept connections without a client certificate (the EST/admin listener: enrollment
    /// with a token has none yet; each route decides what it requires).
    pub optional: bool,
    /// The issuing CAs' current CRLs (DER): checked for the end-entity certificate, and their
    /// nextUpdate is enforced.
    pub crls: Vec<Arc<Vec<u8>>>,
    /// Ticket key and session cache shared by every configuration built for one listener, so
    /// swapping in a new CRL does not invalidate the whole fleet's resumption tickets.
    pub resumption: Option<Resumption>,
    /// More trust anchors (DER): the suppliers' manufacturing CAs on the control listener.
    pub extra_roots: Vec<Vec<u8>>,
}

/// Resumption state that outlives one `ServerConfig`.
#[derive(Clone)]
pub struct Resumption {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Resumption {
    pub fn new() -> Result<Resumption> {
        Ok(Resumption {
            ticketer: rustls::crypto::ring::Ticketer::new()
                .context("creating the session ticket key")?,
            cache: rustls::server::ServerSessionMemoryCache::new(1024),
        })
    }
}

/// A server configuration that verifies client certificates issued by the CAs in `anchors`
/// (DER), plus `auth.extra_roots`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    anchors_der: &[Vec<u8>],
    tls13_only: bool,
    revoked: RevocationCheck,
    auth: &ClientAuth,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let mut anchors = RootCertStore::empty();
    for der in anchors_der.iter().chain(&auth.extra_roots) {
        anchors
            .add(CertificateDer::from(der.clone()))
            .context("adding a supplier CA as a trust anchor")?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(anchors), Arc::clone(&provider));
    if auth.optional {
        builder = builder.allow_unauthenticated();
    }
    let crls: Vec<_> = auth
        .crls
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| rustls::pki_types::CertificateRevocationListDer::from(c.as_ref().clone()))
        .collect();
    if !crls.is_empty() {
        builder = builder
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .enforce_revocation_expiration();
    }
    let inner = builder
        .build()
        .context("building the client certificate verifier")?;
    let verifier = Arc::new(RevocationAwareVerifier {
        inner,
        revoked: RevocationCheckDebug(revoked),
    });
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .context("loading the server certificate and key")?;
    // Our suite order (AES-128-GCM first), not the client's.
    cfg.ignore_client_order = true;
    // Resumption stays on (it is what makes reconnect storms cheap) with stateless tickets, so
    // the server keeps no per-session state; every connection's serial and expiry, resumed or
    // not, is checked against the live snapshot after the handshake.
    let resumption = match &auth.resumption {
        Some(r) => r.clone(),
        None => Resumption::new()?,
    };
    cfg.ticketer = resumption.ticketer;
    cfg.session_storage = resumption.cache;
    Ok(Arc::new(cfg))
}

/// A server configuration with no client authentication (the metrics listener on a
/// non-loopback address: fleet-wide figures, encrypted in transit).
pub fn server_only_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .context("loading the server certificate and key")?;
    Ok(Arc::new(cfg))
}

/// Client configuration for the CLI talking to the admin API.
pub fn admin_client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots(&[ca])?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .context("loading the admin certificate and key")?;
    Ok(Arc::new(cfg))
}

/// Map a failed handshake to a refusal reason for the event log.
pub fn classify_handshake_error(e: &io::Error) -> (RefusalReason, String) {
    let detail = e.to_string();
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return (RefusalReason::TlsError, detail);
    };
    // rustls says when in Unix seconds; people read dates.
    let detail = match err {
        rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { time, not_after }) => {
            format!(
                "certificate expired at {} ({} before this handshake)",
                tollgate_control::timefmt::rfc3339(
                    i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX)
                ),
                crate::human::span(time.as_secs().saturating_sub(not_after.as_secs()))
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time,
            not_before,
        }) => format!(
            "certificate not valid before {} ({} after this handshake; is a clock wrong?)",
            tollgate_control::timefmt::rfc3339(
                i64::try_from(not_before.as_secs()).unwrap_or(i64::MAX)
            ),
            crate::human::span(not_before.as_secs().saturating_sub(time.as_secs()))
        ),
        _ => detail,
    };
    let reason = match err {
        rustls::Error::NoCertificatesPresented => RefusalReason::NoCertificate,
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer => RefusalReason::UnknownCa,
            CertificateError::Revoked => RefusalReason::Revoked,
            CertificateError::Expired | CertificateError::NotValidYet => RefusalReason::Expired,
            CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYetContext { .. } => RefusalReason::Expired,
            _ => RefusalReason::BadCertificate,
        },
        _ => RefusalReason::TlsError,
    };
    (reason, detail)
}
