//! Alert webhooks: each alert change is POSTed to every configured receiver as
//! Alertmanager-compatible JSON (the version 4 webhook payload, so anything that takes
//! Alertmanager's webhooks takes ours), from a bounded queue per receiver, retried with
//! exponential backoff. A receiver that is down never slows detection: its queue fills and
//! drops its oldest notification (counted in the metrics), and nothing else waits for it.
//!
//! Plain `http://` is accepted for loopback receivers only (a local relay); anything else must
//! be `https://`, verified against the configured CA file.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A webhook receiver's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    /// As configured.
    pub url: String,
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Receiver {
    /// Parse `http://HOST[:PORT]/PATH` (loopback hosts only) or `https://HOST[:PORT]/PATH`.
    pub fn parse(url: &str) -> Result<Receiver> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("alerts.webhooks: {url:?} must start with https:// (or http:// for a loopback receiver)");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            // [v6]:port
            let (h, p) = h
                .split_once(']')
                .with_context(|| format!("alerts.webhooks: bad address in {url:?}"))?;
            (h.to_owned(), p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() {
            bail!("alerts.webhooks: no host in {url:?}");
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .with_context(|| format!("alerts.webhooks: bad port in {url:?}"))?,
            None if tls => 443,
            None => 80,
        };
        if !tls {
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!("alerts.webhooks: {url:?}: plain http:// is allowed to a loopback receiver only; use https://");
            }
        }
        Ok(Receiver {
            url: url.to_owned(),
            tls,
            host,
            port,
            path: path.to_owned(),
        })
    }
}

/// Counters of one receiver.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Notifications delivered (a 2xx answer).
    pub delivered: AtomicU64,
    /// Attempts that failed (and were retried while attempts remained).
    pub failed_attempts: AtomicU64,
    /// Notifications given up on: attempts exhausted, or dropped from a full queue.
    pub dropped: AtomicU64,
}

/// How notifications are delivered.
#[derive(Debug, Clone)]
pub struct Settings {
    pub queue: usize,
    pub attempts: u32,
    pub timeout: Duration,
    /// Trust for `https://` receivers.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// One receiver's queue and its delivery task.
#[derive(Debug)]
pub struct Webhook {
    pub receiver: Receiver,
    queue: Mutex<VecDeque<Bytes>>,
    wake: Notify,
    pub stats: WebhookStats,
    settings: Settings,
}

impl Webhook {
    /// Start delivering to `receiver`.
    pub fn start(receiver: Receiver, settings: Settings) -> Arc<Webhook> {
        let w = Arc::new(Webhook {
            receiver,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            stats: WebhookStats::default(),
            settings,
        });
        tokio::spawn(Arc::clone(&w).run());
        w
    }

    /// Queue one JSON body; never waits. A full queue drops its oldest notification.
    pub fn send(&self, body: Bytes) {
        {
            let mut q = self.queue.lock();
            if q.len() >= self.settings.queue {
                q.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(body);
        }
        self.wake.notify_one();
    }

    async fn run(self: Arc<Self>) {
        loop {
            let next = self.queue.lock().pop_front();
            let Some(body) = next else {
                self.wake.notified().await;
                continue;
            };
            let mut backoff = Duration::from_secs(1);
            let mut attempt = 1;
            loop {
                match tokio::time::timeout(self.settings.timeout, self.post(body.clone())).await {
                    Ok(Ok(())) => {
                        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(url = %self.receiver.url, attempt, "alert webhook failed: {e:#}");
                    }
                    Err(_) => {
                        tracing::warn!(url = %self.receiver.url, attempt, "alert webhook timed out");
                    }
                }
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                if attempt >= self.settings.attempts {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(url = %self.receiver.url, "alert webhook: giving up on a notification after {attempt} attempts");
                    break;
                }
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<()> {
        let r = &self.receiver;
        let tcp = TcpStream::connect((r.host.as_str(), r.port))
            .await
            .with_context(|| format!("connecting to {}:{}", r.host, r.port))?;
        let _ = tcp.set_nodelay(true);
        if r.tls {
            let Some(cfg) = self.settings.tls.clone() else {
                bail!("no CA configured for https:// receivers (alerts.webhook_ca)");
            };
            let name = rustls_pki_types::ServerName::try_from(r.host.clone())
                .with_context(|| format!("{:?} is not a valid server name", r.host))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .context("TLS handshake")?;
            self.request(tls, body).await
        } else {
            self.request(tcp, body).await
        }
    }

    async fn request<S>(&self, io: S, body: Bytes) -> Result<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let r = &self.receiver;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .context("HTTP handshake")?;
        let driver = tokio::spawn(conn);
        // An IPv6 literal is bracketed in the Host header (RFC 9110, 7.2).
        let name = if r.host.contains(':') {
            format!("[{}]", r.host)
        } else {
            r.host.clone()
        };
        let host = if (r.tls && r.port == 443) || (!r.tls && r.port == 80) {
            name
        } else {
            format!("{name}:{}", r.port)
        };
        let req = hyper::Request::post(r.path.as_str())
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("tollgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .context("building the request")?;
        let resp = sender.send_request(req).await.context("sending")?;
        driver.abort();
        if !resp.status().is_success() {
            bail!("the receiver answered {}", resp.status());
        }
        Ok(())
    }
}

/// The trust for `https://` receivers: the certificates in `ca` (PEM).
pub fn client_tls(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading {}", ca.display()))?
    {
        let c = c.with_context(|| format!("parsing {}", ca.display()))?;
        roots
            .add(c)
            .with_context(|| format!("a certificate in {}", ca.display()))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The Alertmanager webhook (version 4) body for one alert change.
pub fn alertmanager_body(a: &tollgate_detect::Alert, external_url: &str) -> Bytes {
    let firing = a.state == tollgate_detect::AlertState::Active;
    let status = if firing { "firing" } else { "resolved" };
    let name = a.detector.as_str();
    let mut labels = serde_json::json!({
        "alertname": name,
        "detector": name,
        "severity": a.severity.as_str(),
        "service": "tollgate",
    });
    if let Some(d) = &a.device {
        labels["device"] = serde_json::json!(d);
    }
    if let Some(c) = &a.cohort {
        labels["cohort"] = serde_json::json!(c);
    }
    let annotations = serde_json::json!({
        "summary": format!("{name} on {}", a.device.as_deref().or(a.cohort.as_deref()).unwrap_or("the fleet")),
        "description": a.explanation,
        "metric": a.metric,
        "observed": a.observed.to_string(),
        "baseline": a.baseline.map(|b| b.to_string()).unwrap_or_default(),
        "threshold": a.threshold.to_string(),
        "mitigation": a.mitigation,
        "alert_id": a.id,
    });
    let ends = match a.cleared_at_ms {
        Some(ms) if !firing => crate::human::rfc3339_ms(ms),
        _ => "0001-01-01T00:00:00Z".to_owned(),
    };
    let fingerprint = {
        let d = ring::digest::digest(&ring::digest::SHA256, a.id.as_bytes());
        d.as_ref()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let alert = serde_json::json!({
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": crate::human::rfc3339_ms(a.started_at_ms),
        "endsAt": ends,
        "generatorURL": format!("{external_url}/api/v1/alerts/{}", a.id),
        "fingerprint": fingerprint,
    });
    let body = serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "tollgate",
        "groupLabels": { "alertname": name },
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_need_https_unless_on_loopback() {
        let r = Receiver::parse("http://127.0.0.1:9093/hook").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.path.as_str(), r.tls),
            ("127.0.0.1", 9093, "/hook", false)
        );
        assert!(Receiver::parse("http://localhost/x").is_ok());
        assert!(Receiver::parse("http://[::1]:80/x").is_ok());
        let e = Receiver::parse("http://10.0.0.5/hook")
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
        let r = Receiver::parse("https://alerts.example.com").unwrap();
        assert_eq!((r.port, r.path.as_str()), (443, "/"));
        assert!(Receiver::parse("ftp://x").is_err());
        assert!(Receiver::parse("https://host:notaport/").is_err());
    }
}
