//! The data directory: where every file lives, and `tollgate init`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tollgate_pki::{CertProfile, Issuer, Validity};
use tollgate_store::{CertKind, CertRecord, Registry, SqliteRegistry};

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

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
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server/server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server/server.key")
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
}

/// Where a running server listens; written by `serve`, read by the CLI.
#[derive(Debug, Serialize, Deserialize)]
pub struct Addresses {
    pub mqtt: SocketAddr,
    pub admin: SocketAddr,
    pub pid: u32,
}

/// The pid of a `tollgate serve` running on `data`, if one is.
pub fn running_server(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(Layout::new(data).addresses()).ok()?;
    let a: Addresses = serde_json::from_str(&text).ok()?;
    Path::new(&format!("/proc/{}", a.pid))
        .exists()
        .then_some(a.pid)
}

/// Write `contents` to `path` (creating parent directories). Private keys get mode 0600 from
/// the moment the file exists.
pub fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    f.sync_all()?;
    Ok(())
}

/// Options for `tollgate init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// An existing root CA (certificate PEM, key PEM) to build on.
    pub import_root: Option<(String, String)>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            dns_names: vec!["localhost".into()],
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            import_root: None,
        }
    }
}

/// What `init` created, for the summary printed to the operator.
#[derive(Debug)]
pub struct InitReport {
    pub files: Vec<PathBuf>,
}

/// Create a data directory. Refuses to touch an existing, non-empty one.
pub fn init(data: &Path, opts: &InitOptions) -> Result<InitReport> {
    if data.exists() {
        let non_empty = std::fs::read_dir(data)
            .with_context(|| format!("reading {}", data.display()))?
            .next()
            .is_some();
        if non_empty {
            bail!(
                "{} already exists and is not empty; refusing to overwrite it (choose another --data directory)",
                data.display()
            );
        }
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    }
    let l = Layout::new(data);
    let mut files = Vec::new();
    let mut put = |path: PathBuf, contents: &str, private: bool| -> Result<()> {
        write_file(&path, contents.as_bytes(), private)?;
        files.push(path);
        Ok(())
    };

    let root = match &opts.import_root {
        Some((cert, key)) => {
            let info = tollgate_pki::parse_pem_certificates(cert)
                .context("reading the imported CA certificate")?;
            if !info.first().is_some_and(|i| i.is_ca) {
                bail!("the imported certificate is not a CA certificate");
            }
            Issuer::from_pem(cert, key)
                .context("loading the imported CA (certificate and key must match)")?
        }
        None => Issuer::new_root("Tollgate Root CA").context("creating the root CA")?,
    };
    let issuing = root
        .new_intermediate("Tollgate Issuing CA 1")
        .context("creating the issuing CA")?;
    put(l.root_ca_cert(), root.cert_pem(), false)?;
    put(l.root_ca_key(), root.key_pem(), true)?;
    put(l.issuing_ca_cert(), issuing.cert_pem(), false)?;
    put(l.issuing_ca_key(), issuing.key_pem(), true)?;

    let server = issuing
        .issue(
            &CertProfile::Server {
                dns: &opts.dns_names,
                ips: &opts.ips,
            },
            Validity::starting_now(time::Duration::days(825)),
            None,
        )
        .context("issuing the server certificate")?;
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

    let admin = issuing
        .issue(
            &CertProfile::Admin { name: "admin" },
            Validity::starting_now(time::Duration::days(365)),
            None,
        )
        .context("issuing the admin certificate")?;
    put(l.admin_cert(), &admin.cert_pem, false)?;
    put(
        l.admin_key(),
        admin.key_pem.as_deref().unwrap_or_default(),
        true,
    )?;

    put(
        l.config(),
        &crate::config::default_config_toml(&opts.dns_names, &opts.ips),
        false,
    )?;
    put(l.policy(), tollgate_policy::default_policy_toml(), false)?;

    let reg = SqliteRegistry::open(&l.registry()).context("creating the registry")?;
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
        })?;
    }
    files.push(l.registry());
    Ok(InitReport { files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_keys_0600_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("tollgate-init-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let report = init(&dir, &InitOptions::default()).unwrap();
        assert!(report.files.len() >= 10);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let l = Layout::new(&dir);
            for key in [
                l.root_ca_key(),
                l.issuing_ca_key(),
                l.server_key(),
                l.admin_key(),
            ] {
                let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        tollgate_policy::Policy::parse(
            &std::fs::read_to_string(dir.join("policy.toml")).unwrap(),
            "policy.toml",
        )
        .unwrap();
        let err = init(&dir, &InitOptions::default()).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A retired issuing CA: still trusted (and still signing its CRL) until `trusted_until`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RetiredMeta {
    pub trusted_until: i64,
    pub retired_at: i64,
}

impl Layout {
    pub fn retired_dir(&self) -> PathBuf {
        self.root.join("ca/retired")
    }
}

/// Retired issuing CAs still within their trust window: (cert PEM, key PEM, meta).
pub fn retired_issuers(l: &Layout) -> Result<Vec<(String, String, RetiredMeta)>> {
    let mut out = Vec::new();
    let dir = l.retired_dir();
    if !dir.exists() {
        return Ok(out);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let meta: RetiredMeta = serde_json::from_str(&std::fs::read_to_string(&p)?)
            .with_context(|| format!("reading {}", p.display()))?;
        if meta.trusted_until <= now {
            continue;
        }
        let cert = std::fs::read_to_string(p.with_extension("crt"))?;
        let key = std::fs::read_to_string(p.with_extension("key"))?;
        out.push((cert, key, meta));
    }
    Ok(out)
}

/// `tollgate ca rotate`: a new issuing CA signed by the root. The old one moves to
/// `ca/retired/` and stays trusted for `keep_trusted` (the longest certificate lifetime), so
/// every certificate it issued keeps working until it expires.
pub fn rotate_ca(data: &Path, keep_trusted: time::Duration) -> Result<(String, i64)> {
    let l = Layout::new(data);
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let root = Issuer::from_pem(&read(l.root_ca_cert())?, &read(l.root_ca_key())?)
        .context("loading the root CA (its key must be in DATA/ca/root.key to rotate)")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let n = std::fs::read_dir(l.retired_dir())
        .map(|d| d.count())
        .unwrap_or(0)
        / 3
        + 2;
    let fresh = root
        .new_intermediate(&format!("Tollgate Issuing CA {n}"))
        .context("creating the new issuing CA")?;
    let stem = l.retired_dir().join(format!("issuing-{now}"));
    std::fs::create_dir_all(l.retired_dir())?;
    write_file(
        &stem.with_extension("crt"),
        read(l.issuing_ca_cert())?.as_bytes(),
        false,
    )?;
    write_file(
        &stem.with_extension("key"),
        read(l.issuing_ca_key())?.as_bytes(),
        true,
    )?;
    let until = now + keep_trusted.whole_seconds();
    let meta = RetiredMeta {
        trusted_until: until,
        retired_at: now,
    };
    write_file(
        &stem.with_extension("json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
        false,
    )?;
    write_file(&l.issuing_ca_cert(), fresh.cert_pem().as_bytes(), false)?;
    write_file(&l.issuing_ca_key(), fresh.key_pem().as_bytes(), true)?;
    Ok((format!("Tollgate Issuing CA {n}"), until))
}
