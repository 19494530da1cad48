//! The CLI's client for the admin API (HTTPS with the admin certificate).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::datadir::{Addresses, Layout};

/// Where and how to reach the admin API.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Data directory of a local server: its address and admin credentials are read from there.
    #[arg(long, env = "TOLLGATE_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Admin API URL, e.g. https://gateway.example:8443 (with --cert, --key, --cacert).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Admin client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Admin client key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA certificate that signed the server (PEM).
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

pub struct AdminClient {
    host: String,
    port: u16,
    tls: TlsConnector,
}

impl AdminClient {
    pub fn new(args: &ConnectArgs) -> Result<AdminClient> {
        let layout = args.data.as_deref().map(Layout::new);
        let pick = |given: &Option<PathBuf>,
                    from_data: fn(&Layout) -> PathBuf,
                    what: &str|
         -> Result<PathBuf> {
            given
                .clone()
                .or_else(|| layout.as_ref().map(from_data))
                .ok_or_else(|| {
                    anyhow!(
                        "no {what}: pass --data DIR, or --server with --cert, --key and --cacert"
                    )
                })
        };
        let cert = pick(&args.cert, Layout::admin_cert, "admin certificate")?;
        let key = pick(&args.key, Layout::admin_key, "admin key")?;
        let ca = pick(&args.cacert, Layout::root_ca_cert, "CA certificate")?;
        let (host, port) = match (&args.server, &layout) {
            (Some(url), _) => parse_url(url)?,
            (None, Some(l)) => {
                let text = std::fs::read_to_string(l.addresses()).with_context(|| {
                    format!(
                        "reading {} (is `tollgate serve --data {}` running?)",
                        l.addresses().display(),
                        l.root.display()
                    )
                })?;
                let a: Addresses =
                    serde_json::from_str(&text).context("parsing the server's address file")?;
                (a.admin.ip().to_string(), a.admin.port())
            }
            (None, None) => bail!("pass --data DIR or --server URL"),
        };
        let cfg = crate::tls::admin_client_config(&ca, &cert, &key)?;
        Ok(AdminClient {
            host,
            port,
            tls: TlsConnector::from(cfg),
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let body_bytes = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        self.call_raw(method, path, "application/json", body_bytes)
            .await
    }

    /// A request whose body is given as it is (a document upload).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<serde_json::Value> {
        self.call_with(method, path, content_type, &[], body).await
    }

    /// A request with extra headers (`If-Match`).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        extra: &[(&str, String)],
        body: Bytes,
    ) -> Result<serde_json::Value> {
        let mut headers = vec![("content-type", content_type.to_owned())];
        headers.extend(extra.iter().cloned());
        self.send(method, path, &headers, body).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<serde_json::Value> {
        let (status, bytes) = https_request(
            &self.host, self.port, &self.tls, method, path, headers, body,
        )
        .await
        .context("calling the admin API")?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        if !status.is_success() {
            // An RFC 9457 problem document: `detail` says what went wrong.
            let msg = value
                .get("detail")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {msg}");
        }
        Ok(value)
    }
}

/// One HTTPS request over a fresh connection.
pub async fn https_request(
    host: &str,
    port: u16,
    tls: &TlsConnector,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<(StatusCode, Bytes)> {
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let name =
        ServerName::try_from(host.to_owned()).map_err(|e| anyhow!("server name {host}: {e}"))?;
    let tls = tls
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {host}:{port}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{host}:{port}"));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let resp = sender
        .send_request(req.body(Full::new(body))?)
        .await
        .context("HTTPS request")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

pub fn parse_url(url: &str) -> Result<(String, u16)> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("the admin API is HTTPS only: {url:?}");
    }
    let host = uri.host().ok_or_else(|| anyhow!("no host in {url:?}"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(8443)))
}

/// Write a device's files for `mosquitto_pub --cert --key --cafile`.
pub fn write_device_files(
    out: &Path,
    id: &str,
    cert: &str,
    key: &str,
    ca: &str,
) -> Result<Vec<PathBuf>> {
    let files = [
        (out.join(format!("{id}.crt")), cert, false),
        (out.join(format!("{id}.key")), key, true),
        (out.join("ca.crt"), ca, false),
    ];
    for (p, c, private) in &files {
        tollgate_control::files::write_file(p, c.as_bytes(), *private)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(files.into_iter().map(|f| f.0).collect())
}

/// Percent-encode `s` for one path segment or query value (everything but RFC 3986's
/// unreserved characters).
pub fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
