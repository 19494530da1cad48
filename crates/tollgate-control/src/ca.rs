//! The CA hierarchy on disk: the data directory's layout, `init`, issuing-CA rotation, and the
//! loaded [`Authority`] that issues device certificates and signs CRLs.
//!
//! Files that must agree (a CA certificate and its key; a rotation's five files) are written as
//! one commit through [`crate::files`], so a crash can never leave a server that cannot start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tollgate_pki::{CertProfile, Issuer, RevokedEntry, Validity};
use tollgate_registry::{
    CertKind, CertRecord, CertificateStore, OperatorRole, OperatorStore, SqliteRegistry,
};

use crate::files::{self, FileWrite};
use crate::ControlError;

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The directory.
    pub root: PathBuf,
}

#[allow(missing_docs)]
impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("tollgate.toml")
    }
    pub fn policy(&self) -> PathBuf {
        self.root.join("policy.toml")
    }
    pub fn root_ca_cert(&self) -> PathBuf {
        self.root.join("ca/root.crt")
    }
    pub fn root_ca_key(&self) -> PathBuf {
        self.root.join("ca/root.key")
    }
    pub fn issuing_ca_cert(&self) -> PathBuf {
        self.root.join("ca/issuing.crt")
    }
    pub fn issuing_ca_key(&self) -> PathBuf {
        self.root.join("ca/issuing.key")
    }
    /// The commit record of a CA rotation in progress (see [`crate::files`]).
    pub fn ca_journal(&self) -> PathBuf {
        self.root.join("ca/.commit")
    }
    pub fn retired_dir(&self) -> PathBuf {
        self.root.join("ca/retired")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server/server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server/server.key")
    }
    /// The commit record of a server-certificate renewal in progress.
    pub fn server_journal(&self) -> PathBuf {
        self.root.join("server/.commit")
    }
    pub fn admin_cert(&self) -> PathBuf {
        self.root.join("admin/admin.crt")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.root.join("admin/admin.key")
    }
    pub fn registry(&self) -> PathBuf {
        self.root.join("registry.db")
    }
    /// The durable session store (persistent sessions, queued messages, retained messages).
    pub fn sessions(&self) -> PathBuf {
        self.root.join("sessions.db")
    }
    pub fn addresses(&self) -> PathBuf {
        self.root.join("run/addresses.json")
    }
    /// The exclusive lock a running server (or `store compact`) holds on the directory.
    pub fn lock(&self) -> PathBuf {
        self.root.join("run/lock")
    }
}

fn read(p: &Path) -> Result<String, ControlError> {
    std::fs::read_to_string(p).map_err(|e| ControlError::io(format!("reading {}", p.display()), e))
}

fn write(p: &Path, contents: &[u8], private: bool) -> Result<(), ControlError> {
    files::write_file(p, contents, private)
        .map_err(|e| ControlError::io(format!("writing {}", p.display()), e))
}

/// Options for `tollgate init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// DNS names of the server certificate.
    pub dns_names: Vec<String>,
    /// IP addresses of the server certificate.
    pub ips: Vec<IpAddr>,
    /// An existing root CA (certificate PEM, key PEM) to build on.
    pub import_root: Option<(String, String)>,
    /// Where the issuing CA's CRL is served (`https://NAME:8443/crl`), written into the server
    /// certificate as its CRL distribution point.
    pub crl_urls: Vec<String>,
    /// The commented configuration file to write as `tollgate.toml`.
    pub config_toml: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            dns_names: vec!["localhost".into()],
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            import_root: None,
            crl_urls: vec!["https://localhost:8443/crl".into()],
            config_toml: String::new(),
        }
    }
}

/// What `init` created, for the summary printed to the operator.
#[derive(Debug)]
pub struct InitReport {
    /// Every file written.
    pub files: Vec<PathBuf>,
}

/// Create a data directory. Refuses to touch an existing, non-empty one.
pub fn init(data: &Path, opts: &InitOptions) -> Result<InitReport, ControlError> {
    if data.exists() {
        let non_empty = std::fs::read_dir(data)
            .map_err(|e| ControlError::io(format!("reading {}", data.display()), e))?
            .next()
            .is_some();
        if non_empty {
            return Err(ControlError::InvalidRequest(format!(
                "{} already exists and is not empty; refusing to overwrite it (choose another --data directory)",
                data.display()
            )));
        }
    }
    std::fs::create_dir_all(data)
        .map_err(|e| ControlError::io(format!("creating {}", data.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ControlError::io(format!("securing {}", data.display()), e))?;
    }
    let l = Layout::new(data);
    let mut written = Vec::new();
    let mut put = |path: PathBuf, contents: &str, private: bool| -> Result<(), ControlError> {
        write(&path, contents.as_bytes(), private)?;
        written.push(path);
        Ok(())
    };

    let root = match &opts.import_root {
        Some((cert, key)) => {
            let info = tollgate_pki::parse_pem_certificates(cert)?;
            if !info.first().is_some_and(|i| i.is_ca) {
                return Err(ControlError::InvalidRequest(
                    "the imported certificate is not a CA certificate".into(),
                ));
            }
            Issuer::from_pem(cert, key)?
        }
        None => Issuer::new_root("Tollgate Root CA")?,
    };
    let issuing = root.new_intermediate("Tollgate Issuing CA 1")?;
    put(l.root_ca_cert(), root.cert_pem(), false)?;
    put(l.root_ca_key(), root.key_pem(), true)?;
    put(l.issuing_ca_cert(), issuing.cert_pem(), false)?;
    put(l.issuing_ca_key(), issuing.key_pem(), true)?;

    let server = issuing.issue(
        &CertProfile::Server {
            dns: &opts.dns_names,
            ips: &opts.ips,
            crl_urls: &opts.crl_urls,
        },
        Validity::starting_now(time::Duration::days(825)),
        None,
    )?;
    // The server presents its certificate followed by the issuing CA.
    put(
        l.server_cert(),
        &format!("{}{}", server.cert_pem, issuing.cert_pem()),
        false,
    )?;
    put(
        l.server_key(),
        server.key_pem.as_deref().unwrap_or_default(),
        true,
    )?;
    let admin = issuing.issue(
        &CertProfile::Operator { name: "admin" },
        Validity::starting_now(time::Duration::days(crate::operators::DEFAULT_DAYS.into())),
        None,
    )?;
    put(l.admin_cert(), &admin.cert_pem, false)?;
    put(
        l.admin_key(),
        admin.key_pem.as_deref().unwrap_or_default(),
        true,
    )?;
    put(l.config(), &opts.config_toml, false)?;
    put(l.policy(), tollgate_policy::default_policy_toml(), false)?;

    let reg = SqliteRegistry::open(&l.registry())?;
    reg.create_operator(
        "admin",
        OperatorRole::Admin,
        "init",
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )?;
    for (serial, subject, kind, v) in [
        (
            &server.serial,
            "tollgate",
            CertKind::Server,
            server.validity,
        ),
        (&admin.serial, "admin", CertKind::Admin, admin.validity),
    ] {
        reg.record_certificate(&CertRecord {
            serial: serial.clone(),
            subject: subject.into(),
            kind,
            not_before: v.not_before.unix_timestamp(),
            not_after: v.not_after.unix_timestamp(),
            revoked_at: None,
            revoke_reason: None,
            key: None,
            spki: None,
            issuer: None,
        })?;
    }
    written.push(l.registry());
    Ok(InitReport { files: written })
}

/// A retired issuing CA: still trusted (and still signing its CRL) until `trusted_until`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RetiredMeta {
    /// Unix seconds.
    pub trusted_until: i64,
    /// Unix seconds.
    pub retired_at: i64,
}

/// Retired issuing CAs still within their trust window: (cert PEM, key PEM, meta).
pub fn retired_issuers(l: &Layout) -> Result<Vec<(String, String, RetiredMeta)>, ControlError> {
    let mut out = Vec::new();
    let dir = l.retired_dir();
    if !dir.exists() {
        return Ok(out);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| ControlError::io(format!("reading {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let meta: RetiredMeta = serde_json::from_str(&read(&p)?).map_err(|e| {
            ControlError::io(format!("reading {}", p.display()), std::io::Error::other(e))
        })?;
        if meta.trusted_until <= now {
            continue;
        }
        let cert = read(&p.with_extension("crt"))?;
        let key = read(&p.with_extension("key"))?;
        out.push((cert, key, meta));
    }
    Ok(out)
}

/// `tollgate ca rotate`: a new issuing CA signed by the root. The old one moves to
/// `ca/retired/` and stays trusted for `keep_trusted` (the longest certificate lifetime), so
/// every certificate it issued keeps working until it expires. All five files change in one
/// commit: a crash leaves either the old CA in force or the new one, never a mismatched pair.
pub fn rotate(data: &Path, keep_trusted: time::Duration) -> Result<(String, i64), ControlError> {
    let l = Layout::new(data);
    files::recover(&l.ca_journal())
        .map_err(|e| ControlError::io("finishing an interrupted CA change", e))?;
    let root = Issuer::from_pem(&read(&l.root_ca_cert())?, &read(&l.root_ca_key())?)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let n = std::fs::read_dir(l.retired_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("json"))
                .count()
        })
        .unwrap_or(0)
        + 2;
    let name = format!("Tollgate Issuing CA {n}");
    let fresh = root.new_intermediate(&name)?;
    let stem = l.retired_dir().join(format!("issuing-{now}"));
    let until = now + keep_trusted.whole_seconds();
    let meta = serde_json::to_vec_pretty(&RetiredMeta {
        trusted_until: until,
        retired_at: now,
    })
    .map_err(|e| ControlError::io("encoding the retired CA record", std::io::Error::other(e)))?;
    let (old_cert, old_key) = (read(&l.issuing_ca_cert())?, read(&l.issuing_ca_key())?);
    std::fs::create_dir_all(l.retired_dir())
        .map_err(|e| ControlError::io(format!("creating {}", l.retired_dir().display()), e))?;
    files::commit(
        &l.ca_journal(),
        &[
            FileWrite {
                path: stem.with_extension("crt"),
                contents: old_cert.as_bytes(),
                private: false,
            },
            FileWrite {
                path: stem.with_extension("key"),
                contents: old_key.as_bytes(),
                private: true,
            },
            FileWrite {
                path: stem.with_extension("json"),
                contents: &meta,
                private: false,
            },
            FileWrite {
                path: l.issuing_ca_key(),
                contents: fresh.key_pem().as_bytes(),
                private: true,
            },
            FileWrite {
                path: l.issuing_ca_cert(),
                contents: fresh.cert_pem().as_bytes(),
                private: false,
            },
        ],
    )
    .map_err(|e| ControlError::io("writing the rotated CA", e))?;
    Ok((name, until))
}

pub(crate) fn pem_to_der(pem: &str) -> Result<Vec<u8>, ControlError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| ControlError::Pki(tollgate_pki::PkiError::Parse(e.to_string())))
}

/// The CRLs of the moment: one per trusted issuing CA (current first), the root's, and when
/// they were signed.
#[derive(Debug, Clone, Default)]
pub struct Crls {
    /// DER, current issuing CA first.
    pub issuing: Vec<Arc<Vec<u8>>>,
    /// The root CA's CRL (empty while its key is offline).
    pub root: Arc<Vec<u8>>,
    /// Unix seconds.
    pub signed_at: i64,
}

/// The loaded hierarchy: the issuing CA that signs, the retired ones still trusted, the root.
pub(crate) struct Authority {
    pub issuer: Issuer,
    /// Retired issuing CAs still trusted: (issuer, certificate DER, trusted until).
    pub retired: Vec<(Issuer, Vec<u8>, i64)>,
    /// The root CA, when its key is online (for the root's own CRL).
    pub root: Option<Issuer>,
    pub root_pem: String,
    /// /cacerts: the current issuing CA, the retired ones still trusted, then the root.
    pub cacerts_der: Vec<Vec<u8>>,
}

impl Authority {
    pub fn open(l: &Layout) -> Result<Authority, ControlError> {
        files::recover(&l.ca_journal())
            .map_err(|e| ControlError::io("finishing an interrupted CA change", e))?;
        files::recover(&l.server_journal()).map_err(|e| {
            ControlError::io("finishing an interrupted server-certificate renewal", e)
        })?;
        let issuing_pem = read(&l.issuing_ca_cert())?;
        let root_pem = read(&l.root_ca_cert())?;
        let mut retired = Vec::new();
        for (cert, key, meta) in retired_issuers(l)? {
            let issuer = Issuer::from_pem(&cert, &key)?;
            retired.push((issuer, pem_to_der(&cert)?, meta.trusted_until));
        }
        let mut cacerts_der = vec![pem_to_der(&issuing_pem)?];
        cacerts_der.extend(retired.iter().map(|r| r.1.clone()));
        cacerts_der.push(pem_to_der(&root_pem)?);
        let issuer = Issuer::from_pem(&issuing_pem, &read(&l.issuing_ca_key())?)?;
        let root = match std::fs::read_to_string(l.root_ca_key()) {
            Ok(key) => Some(Issuer::from_pem(&root_pem, &key)?),
            // Kept offline: its CRL is signed wherever the key lives.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ControlError::io(
                    format!(
                        "reading {} (remove it to keep the root key offline)",
                        l.root_ca_key().display()
                    ),
                    e,
                ))
            }
        };
        Ok(Authority {
            issuer,
            retired,
            root,
            root_pem,
            cacerts_der,
        })
    }

    /// Trust anchors for client certificates: the current and still-trusted retired issuing CAs.
    pub fn issuing_anchors(&self) -> Vec<Vec<u8>> {
        let mut v = vec![self.cacerts_der.first().cloned().unwrap_or_default()];
        v.extend(self.retired.iter().map(|r| r.1.clone()));
        v
    }

    /// Sign CRLs listing `revoked` with CRL number `number`, valid for `validity`.
    pub fn sign_crls(
        &self,
        revoked: &[RevokedEntry],
        number: u64,
        validity: std::time::Duration,
    ) -> Result<Crls, ControlError> {
        let this_update = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
        let next_update =
            this_update + time::Duration::try_from(validity).unwrap_or(time::Duration::hours(48));
        let mut issuing = vec![Arc::new(self.issuer.crl(
            revoked,
            number,
            this_update,
            next_update,
        )?)];
        for (issuer, _, _) in &self.retired {
            issuing.push(Arc::new(issuer.crl(
                revoked,
                number,
                this_update,
                next_update,
            )?));
        }
        let root = match &self.root {
            Some(root) => Arc::new(root.crl(&[], number, this_update, next_update)?),
            None => Arc::new(Vec::new()),
        };
        Ok(Crls {
            issuing,
            root,
            signed_at: time::OffsetDateTime::now_utc().unix_timestamp(),
        })
    }
}
