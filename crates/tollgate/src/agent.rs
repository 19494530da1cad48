//! The device-side enrollment agent: `tollgate agent enroll` and `tollgate agent renew`.
//!
//! The private key is generated on the device and never leaves it; the agent speaks EST to the
//! gateway's control listener and writes `ID.key`, `ID.crt` and `ca.crt` atomically (write to a
//! temporary file, fsync, rename), so a reader never sees half a certificate. A renewal that
//! rotates the key replaces key and certificate as one commit (`tollgate_control::files`): a
//! crash between the two can never leave a key that does not match its certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio_rustls::TlsConnector;

use crate::client::{https_request, parse_url};

use tollgate_control::files::{self, FileWrite};

/// Write a file atomically; keys get mode 0600 before any byte is written.
fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    files::write_file(path, contents, private)
        .with_context(|| format!("writing {}", path.display()))
}

/// The commit record of a key-and-certificate change in `out`.
fn journal(out: &Path) -> PathBuf {
    out.join(".tollgate-agent.commit")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn csr_for(id: &str, key: &rcgen::KeyPair) -> Result<Vec<u8>> {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, id);
    Ok(p.serialize_request(key)
        .context("building the certificate request")?
        .der()
        .to_vec())
}

fn est_path(label: Option<&str>, op: &str) -> String {
    match label {
        Some(l) => format!("/.well-known/est/{l}/{op}"),
        None => format!("/.well-known/est/{op}"),
    }
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    for c in crate::tls::load_certs(ca)? {
        r.add(c)?;
    }
    Ok(r)
}

/// The certificates of an EST reply: base64 (whitespace allowed) of a PKCS#7 certs-only message.
fn certs_only(reply: &[u8]) -> Result<Vec<Vec<u8>>> {
    let text: Vec<u8> = reply
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let p7 = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("the reply is not base64")?;
    tollgate_pki::parse_certs_only(&p7)
        .ok_or_else(|| anyhow!("the reply is not a PKCS#7 certs-only message"))
}

async fn post_csr(
    server: &str,
    tls: &TlsConnector,
    path: &str,
    auth: Option<String>,
    csr_der: &[u8],
) -> Result<Vec<u8>> {
    let (host, port) = parse_url(server)?;
    let mut headers = vec![
        ("content-type", "application/pkcs10".to_owned()),
        ("content-transfer-encoding", "base64".to_owned()),
    ];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let body = Bytes::from(base64::engine::general_purpose::STANDARD.encode(csr_der));
    let (status, reply) =
        https_request(&host, port, tls, Method::POST, path, &headers, body).await?;
    if status != StatusCode::OK {
        bail!("{status}: {}", String::from_utf8_lossy(&reply).trim());
    }
    certs_only(&reply)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the reply holds no certificate"))
}

/// How a first enrollment proves the device may have a certificate.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// A one-time token from `tollgate device token` (HTTP Basic `ID:TOKEN`).
    Token(&'a str),
    /// A supplier's bootstrap (manufacturing) certificate and its key, presented as the TLS
    /// client certificate; the supplier's CA must be registered with `tollgate supplier add`.
    Bootstrap { cert: &'a Path, key: &'a Path },
}

/// What a first enrollment wrote.
#[derive(Debug)]
pub struct Enrolled {
    /// `OUT/ID.crt`.
    pub cert: PathBuf,
    /// `OUT/ca.crt`: the root CA an MQTT client must trust (`--cafile`).
    pub ca: PathBuf,
    /// Set when the `--cacert` given was not a root (an issuing CA, say): what was done.
    pub note: Option<String>,
}

/// First enrollment, with a one-time token or a supplier's bootstrap certificate.
///
/// `ca.crt` is written with the gateway's **root** CA, the anchor an MQTT client needs:
/// `--cacert` may name an issuing CA (enough to authenticate the gateway here, not for
/// OpenSSL-based clients, which want a self-signed root), so the root is taken from the
/// gateway's EST `/cacerts` over the connection that `--cacert` authenticated.
pub async fn enroll(
    server: &str,
    proof: Proof<'_>,
    id: &str,
    out: &Path,
    cacert: Option<&Path>,
    label: Option<&str>,
) -> Result<Enrolled> {
    tollgate_pki::validate_device_id(id)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca = match cacert {
        Some(c) => c.to_path_buf(),
        None if out.join("ca.crt").exists() => out.join("ca.crt"),
        None => bail!("pass --cacert with the gateway's root CA certificate (ca.crt from the gateway's data directory, or `tollgate ca status`): enrollment must know whom it talks to"),
    };
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&ca)?);
    let (cfg, auth) = match proof {
        Proof::Token(token) => {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"));
            (
                builder.with_no_client_auth(),
                Some(format!("Basic {basic}")),
            )
        }
        Proof::Bootstrap { cert, key } => (
            builder
                .with_client_auth_cert(crate::tls::load_certs(cert)?, crate::tls::load_key(key)?)
                .with_context(|| {
                    format!(
                        "loading the bootstrap certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?,
            None,
        ),
    };
    let tls = TlsConnector::from(Arc::new(cfg));
    let key = tollgate_pki::generate_key()?;
    let csr = csr_for(id, &key)?;
    let cert = post_csr(server, &tls, &est_path(label, "simpleenroll"), auth, &csr)
        .await
        .context("EST simpleenroll")?;
    let (root, note) = root_ca(server, &tls, label, &ca).await?;
    write_atomic(
        &out.join(format!("{id}.key")),
        key.serialize_pem().as_bytes(),
        true,
    )?;
    write_atomic(
        &out.join(format!("{id}.crt")),
        pem("CERTIFICATE", &cert).as_bytes(),
        false,
    )?;
    write_atomic(&out.join("ca.crt"), root.as_bytes(), false)?;
    Ok(Enrolled {
        cert: out.join(format!("{id}.crt")),
        ca: out.join("ca.crt"),
        note,
    })
}

/// The gateway's root CA as PEM: `given` itself when it holds a self-signed certificate,
/// otherwise the self-signed one(s) among the gateway's EST `/cacerts` (fetched over `tls`,
/// which `given` authenticates), with a note saying so.
async fn root_ca(
    server: &str,
    tls: &TlsConnector,
    label: Option<&str>,
    given: &Path,
) -> Result<(String, Option<String>)> {
    let given_pem =
        std::fs::read_to_string(given).with_context(|| format!("reading {}", given.display()))?;
    let given_certs = crate::tls::load_certs(given)?;
    let self_signed = |der: &[u8]| {
        tollgate_pki::parse_certificate(der).is_ok_and(|c| c.is_ca && c.issuer == c.subject)
    };
    if given_certs.iter().any(|c| self_signed(c)) {
        return Ok((given_pem, None));
    }
    let (host, port) = parse_url(server)?;
    let (status, reply) = https_request(
        &host,
        port,
        tls,
        Method::GET,
        &est_path(label, "cacerts"),
        &[],
        Bytes::new(),
    )
    .await
    .context("EST cacerts")?;
    if status != StatusCode::OK {
        bail!(
            "EST cacerts: {status}: {}",
            String::from_utf8_lossy(&reply).trim()
        );
    }
    let certs = certs_only(&reply).context("the cacerts reply")?;
    let roots: String = certs
        .iter()
        .filter(|c| self_signed(c))
        .map(|c| pem("CERTIFICATE", c))
        .collect();
    if roots.is_empty() {
        bail!(
            "{} is not a root CA and the gateway's /cacerts names none; pass the gateway's root CA (ca/root.crt) with --cacert",
            given.display()
        );
    }
    Ok((
        roots,
        Some(format!(
            "{} is not a root CA (an issuing CA?): ca.crt holds the gateway's root CA from its /cacerts instead; pass that file to MQTT clients",
            given.display()
        )),
    ))
}

/// The device's certificate in `out` (the one `*.crt` that is not `ca.crt`), after finishing a
/// key-and-certificate change that a crash interrupted.
fn current(out: &Path) -> Result<(String, PathBuf, PathBuf)> {
    files::recover(&journal(out)).context("finishing an interrupted key rotation")?;
    let mut found = Vec::new();
    for e in std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) == Some("crt")
            && p.file_name().and_then(|n| n.to_str()) != Some("ca.crt")
        {
            found.push(p);
        }
    }
    let [crt] = found.as_slice() else {
        bail!(
            "expected exactly one device certificate (*.crt besides ca.crt) in {}",
            out.display()
        );
    };
    let id = crt
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("bad file name"))?
        .to_owned();
    Ok((id.clone(), crt.clone(), out.join(format!("{id}.key"))))
}

/// Validity of the current certificate (Unix seconds).
fn validity(crt: &Path) -> Result<(i64, i64)> {
    let pem = std::fs::read_to_string(crt)?;
    let info = tollgate_pki::parse_pem_certificates(&pem)?;
    let c = info
        .first()
        .ok_or_else(|| anyhow!("no certificate in {}", crt.display()))?;
    Ok((c.not_before, c.not_after))
}

/// Renew once with the current certificate; returns the new notAfter.
pub async fn renew_once(
    server: &str,
    out: &Path,
    rotate_key: bool,
    label: Option<&str>,
) -> Result<i64> {
    let (id, crt, key_path) = current(out)?;
    let ca = out.join("ca.crt");
    let cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&ca)?)
        .with_client_auth_cert(
            crate::tls::load_certs(&crt)?,
            crate::tls::load_key(&key_path)?,
        )?;
    let old_key_pem = std::fs::read_to_string(&key_path)?;
    let key = if rotate_key {
        tollgate_pki::generate_key()?
    } else {
        rcgen::KeyPair::from_pem(&old_key_pem)?
    };
    let csr = csr_for(&id, &key)?;
    let cert = post_csr(
        server,
        &TlsConnector::from(Arc::new(cfg)),
        &est_path(label, "simplereenroll"),
        None,
        &csr,
    )
    .await
    .context("EST simplereenroll")?;
    let cert_pem = pem("CERTIFICATE", &cert);
    if rotate_key {
        let key_pem = key.serialize_pem();
        files::commit(
            &journal(out),
            &[
                FileWrite {
                    path: key_path.clone(),
                    contents: key_pem.as_bytes(),
                    private: true,
                },
                FileWrite {
                    path: crt.clone(),
                    contents: cert_pem.as_bytes(),
                    private: false,
                },
            ],
        )
        .context("replacing the key and certificate")?;
    } else {
        write_atomic(&crt, cert_pem.as_bytes(), false)?;
    }
    Ok(validity(&crt)?.1)
}

fn run_reload(cmd: &str) {
    match std::process::Command::new("sh").arg("-c").arg(cmd).status() {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!("reload command exited with {s}"),
        Err(e) => tracing::warn!("reload command: {e}"),
    }
}

/// When to renew: at about two thirds of the lifetime, with ±5% jitter so a fleet enrolled at
/// the same moment does not renew at the same moment.
fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let life = (not_after - not_before).max(60);
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let jitter = (i64::from(u16::from_be_bytes(b)) - 32768) * life / 20 / 32768;
    not_before + life * 2 / 3 + jitter
}

/// `agent renew`: once, or as a daemon that renews before each certificate expires.
pub async fn renew(
    server: &str,
    out: &Path,
    rotate_key: bool,
    daemon: bool,
    reload: Option<&str>,
    label: Option<&str>,
) -> Result<()> {
    if !daemon {
        let na = renew_once(server, out, rotate_key, label).await?;
        eprintln!("renewed; valid until {}", fmt_time(na));
        if let Some(cmd) = reload {
            run_reload(cmd);
        }
        return Ok(());
    }
    let mut backoff = Duration::from_secs(30);
    loop {
        let (_, crt, _) = current(out)?;
        let (nb, na) = validity(&crt)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let at = renew_at(nb, na);
        if at > now {
            tracing::info!("next renewal at {}", fmt_time(at));
            tokio::time::sleep(Duration::from_secs(u64::try_from(at - now).unwrap_or(0))).await;
        }
        match renew_once(server, out, rotate_key, label).await {
            Ok(na) => {
                tracing::info!("renewed; valid until {}", fmt_time(na));
                backoff = Duration::from_secs(30);
                if let Some(cmd) = reload {
                    run_reload(cmd);
                }
            }
            Err(e) => {
                tracing::warn!("renewal failed, retrying in {}s: {e:#}", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(600));
            }
        }
    }
}

fn fmt_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_lands_near_two_thirds_of_the_lifetime() {
        for _ in 0..100 {
            let at = renew_at(0, 3000);
            assert!((1850..=2150).contains(&at), "{at}");
        }
    }
}
