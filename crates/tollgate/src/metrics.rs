//! Prometheus metrics: fleet-wide figures only (no device, topic or client label: their
//! cardinality is unbounded), served at `/metrics` on the metrics listener in the Prometheus
//! text format.
//!
//! Most figures are read at scrape time from the counters the components already keep
//! (the broker's `Stats`, the event bus, the refusal records, the durable store's commit
//! statistics, the access snapshot, webhooks), so the per-message path does no extra work for
//! metrics. Histograms that need an observation (TLS handshake time, fleet RTT and
//! retransmission ratio) are observed off the per-message path: at handshake, and by the
//! detection sampler.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tollgate_broker::Broker;
use tollgate_control::Control;
use tollgate_events::EventBus;

type Labels = Vec<(&'static str, String)>;

/// The metrics observed by components (the rest is read at scrape time by [`Live`]).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// MQTT listener TLS handshakes, seconds.
    pub handshake_seconds: Histogram,
    /// Completed handshakes by `resumed` = "true" | "false".
    pub handshakes: Family<Labels, Counter>,
    /// Alerts raised by detector and severity.
    pub alerts: Family<Labels, Counter>,
    /// Active alerts by severity (set by the detection runtime after each evaluation).
    pub alerts_active: Family<Labels, Gauge>,
    /// Mitigations carried out by action, and those held back by the rate limit.
    pub mitigations: Family<Labels, Counter>,
    /// Smoothed TCP round-trip time of live connections at each sample, seconds.
    pub rtt_seconds: Histogram,
    /// Bytes retransmitted / bytes sent per connection between two samples (when data moved).
    pub retransmission_ratio: Histogram,
    /// Devices the detectors still learn (their own baseline is not ready).
    pub devices_learning: Gauge,
}

impl Metrics {
    /// The registry with the observed metrics; add [`Live`] with [`Metrics::with_live`].
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let handshake_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        registry.register(
            "tollgate_tls_handshake_seconds",
            "Time from accepting an MQTT connection to a completed TLS handshake",
            handshake_seconds.clone(),
        );
        let handshakes = Family::<Labels, Counter>::default();
        registry.register(
            "tollgate_tls_handshakes",
            "Completed MQTT TLS handshakes, by whether the TLS session was resumed",
            handshakes.clone(),
        );
        let alerts = Family::<Labels, Counter>::default();
        registry.register(
            "tollgate_alerts",
            "Alerts raised, by detector and severity",
            alerts.clone(),
        );
        let alerts_active = Family::<Labels, Gauge>::default();
        registry.register(
            "tollgate_alerts_active",
            "Alerts active now, by severity",
            alerts_active.clone(),
        );
        let mitigations = Family::<Labels, Counter>::default();
        registry.register(
            "tollgate_mitigations",
            "Mitigations by action (notify_rate_limited: held back by the rate limit)",
            mitigations.clone(),
        );
        let rtt_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "tollgate_connection_rtt_seconds",
            "Smoothed TCP round-trip time of live MQTT connections, one observation per connection and sample",
            rtt_seconds.clone(),
        );
        let retransmission_ratio =
            Histogram::new([0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        registry.register(
            "tollgate_connection_retransmission_ratio",
            "Bytes retransmitted per byte sent on live MQTT connections between two samples",
            retransmission_ratio.clone(),
        );
        let devices_learning = Gauge::default();
        registry.register(
            "tollgate_detection_devices_learning",
            "Devices whose own behaviour baseline is still being learned",
            devices_learning.clone(),
        );
        Metrics {
            registry,
            handshake_seconds,
            handshakes,
            alerts,
            alerts_active,
            mitigations,
            rtt_seconds,
            retransmission_ratio,
            devices_learning,
        }
    }

    /// Add the figures read at scrape time.
    pub fn with_live(mut self, live: Live) -> Metrics {
        self.registry.register_collector(Box::new(live));
        self
    }

    /// Count one completed MQTT TLS handshake.
    pub fn handshake(&self, took: std::time::Duration, resumed: bool) {
        self.handshake_seconds.observe(took.as_secs_f64());
        self.handshakes
            .get_or_create(&vec![("resumed", resumed.to_string())])
            .inc();
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }
}

/// Everything read at scrape time.
pub struct Live {
    pub broker: Broker,
    pub control: Arc<Control>,
    pub events: EventBus,
    pub store: Option<Arc<tollgate_sessions::SqliteSessionStore>>,
    pub refusals: crate::admission::refusals::Refusals,
    pub webhooks: Vec<Arc<crate::webhook::Webhook>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let f = m.encode_family(labels)?;
        if kind == MetricType::Gauge {
            ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(f)?;
        } else {
            ConstCounter::new(*v).encode(f)?;
        }
    }
    Ok(())
}

fn l(k: &'static str, v: impl Into<String>) -> Labels {
    vec![(k, v.into())]
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut enc;
        let st = self.broker.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let open = load(&st.connections);
        let v5 = load(&st.connections_v5);
        family(
            e,
            "tollgate_connections",
            "Live MQTT connections past CONNECT, by protocol version",
            MetricType::Gauge,
            &[
                (l("protocol", "3.1.1"), open.saturating_sub(v5)),
                (l("protocol", "5.0"), v5),
            ],
        )?;
        let total = load(&st.connects_total);
        let v5_total = load(&st.connects_v5_total);
        family(
            e,
            "tollgate_connections_accepted",
            "MQTT connections accepted (CONNACK 0), by protocol version",
            MetricType::Counter,
            &[
                (l("protocol", "3.1.1"), total.saturating_sub(v5_total)),
                (l("protocol", "5.0"), v5_total),
            ],
        )?;
        let mut refusals: Vec<(Labels, u64)> = Vec::new();
        for (stage, log) in [
            ("tls", &self.refusals.mqtt),
            ("control", &self.refusals.control),
        ] {
            for (reason, n) in log.by_reason() {
                refusals.push((vec![("stage", stage.into()), ("reason", reason.into())], n));
            }
        }
        for (reason, n) in st.connect_refused.lock().iter() {
            refusals.push((
                vec![("stage", "connect".into()), ("reason", (*reason).into())],
                *n,
            ));
        }
        family(
            e,
            "tollgate_connection_refusals",
            "Connections refused, by stage (tls: MQTT listener before CONNECT, connect: at CONNECT, control: admin/EST listener) and reason",
            MetricType::Counter,
            &refusals,
        )?;
        let by_qos = |arrs: [(&'static str, &[std::sync::atomic::AtomicU64; 3]); 2]| {
            let mut rows = Vec::new();
            for (dir, arr) in arrs {
                for (qos, c) in arr.iter().enumerate() {
                    rows.push((
                        vec![("direction", dir.into()), ("qos", qos.to_string())],
                        load(c),
                    ));
                }
            }
            rows
        };
        let msgs = by_qos([("in", &st.messages_in), ("out", &st.messages_out)]);
        let bytes = by_qos([("in", &st.bytes_in), ("out", &st.bytes_out)]);
        family(
            e,
            "tollgate_messages",
            "PUBLISH packets received (in) and sent (out), by QoS",
            MetricType::Counter,
            &msgs,
        )?;
        family(
            e,
            "tollgate_payload_bytes",
            "Payload bytes received (in) and sent (out), by QoS",
            MetricType::Counter,
            &bytes,
        )?;
        family(
            e,
            "tollgate_denials",
            "Publishes and subscriptions refused by policy",
            MetricType::Counter,
            &[
                (l("action", "publish"), load(&st.publish_denied)),
                (l("action", "subscribe"), load(&st.subscribe_denied)),
            ],
        )?;
        family(
            e,
            "tollgate_messages_dropped",
            "Deliveries not made, by cause",
            MetricType::Counter,
            &[
                (l("cause", "queue_full"), load(&st.queue_full)),
                (l("cause", "other"), load(&st.messages_dropped)),
                (l("cause", "storage_unavailable"), load(&st.storage_refused)),
                (l("cause", "retained_cap"), load(&st.retained_dropped)),
                (l("cause", "throttled"), load(&st.throttled)),
            ],
        )?;
        counter(
            e,
            "tollgate_protocol_errors",
            "Malformed or protocol-violating packets",
            load(&st.protocol_errors),
        )?;
        counter(
            e,
            "tollgate_stalled_connections",
            "Connections closed because their socket made no progress",
            load(&st.stalled_connections),
        )?;
        counter(
            e,
            "tollgate_packet_timeouts",
            "Connections closed because a started packet was not completed in time",
            load(&st.packet_timeouts),
        )?;
        counter(
            e,
            "tollgate_topic_alias_bytes_saved",
            "Bytes not sent to MQTT 5 clients thanks to server-to-client topic aliases (net of the alias on each first use)",
            load(&st.topic_alias_bytes_saved),
        )?;
        counter(
            e,
            "tollgate_messages_filtered",
            "Deliveries withheld by a subscription's delivery filter (a deny subscribe rule the granted subscription overlaps)",
            load(&st.messages_filtered),
        )?;
        counter(
            e,
            "tollgate_messages_persisted",
            "Messages written to the durable store (one per persistent session queued for)",
            load(&st.messages_persisted),
        )?;
        let (queued, queued_bytes) = self.broker.queued();
        gauge(
            e,
            "tollgate_queued_messages",
            "Messages queued for delivery in all sessions",
            i64::try_from(queued).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "tollgate_queued_bytes",
            "Bytes queued for delivery in all sessions",
            i64::try_from(queued_bytes).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "tollgate_sessions",
            "Sessions held (online, and offline persistent ones)",
            i64::try_from(self.broker.session_count()).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "tollgate_retained_messages",
            "Retained messages held",
            i64::try_from(self.broker.retained_count()).unwrap_or(i64::MAX),
        )?;
        counter(
            e,
            "tollgate_events_emitted",
            "Security events accepted onto the event bus",
            self.events.emitted(),
        )?;
        counter(
            e,
            "tollgate_events_dropped",
            "Security events dropped because the bus was full (each drop is recorded in events.log)",
            self.events.dropped(),
        )?;
        let snap = self.control.snapshot();
        let quarantined = snap.devices.values().filter(|d| d.is_quarantined()).count();
        gauge(
            e,
            "tollgate_devices",
            "Active (not revoked) devices",
            i64::try_from(snap.devices.len()).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "tollgate_quarantined_devices",
            "Devices quarantined now (for any reason)",
            i64::try_from(quarantined).unwrap_or(i64::MAX),
        )?;
        if let Some(store) = &self.store {
            let cs = store.stats();
            counter(
                e,
                "tollgate_store_commits",
                "Durable-store group commits",
                load(&cs.commits),
            )?;
            counter(
                e,
                "tollgate_store_commit_failures",
                "Durable-store commits that failed (and were retried)",
                load(&cs.failures),
            )?;
            let mut cumulative = 0u64;
            let mut buckets = Vec::with_capacity(cs.commit_buckets.len());
            for (i, b) in cs.commit_buckets.iter().enumerate() {
                cumulative += load(b);
                let upper = tollgate_sessions::COMMIT_BUCKETS_SECS
                    .get(i)
                    .copied()
                    .unwrap_or(f64::INFINITY);
                buckets.push((upper, cumulative));
            }
            let sum = load(&cs.commit_micros) as f64 / 1e6;
            let mut m = e.encode_descriptor(
                "tollgate_store_commit_seconds",
                "Durable-store group-commit latency (transaction and fsync)",
                None,
                MetricType::Histogram,
            )?;
            m.encode_histogram::<NoLabelSet>(sum, cumulative, &buckets, None)?;
        }
        if !self.webhooks.is_empty() {
            // Summed over receivers (a receiver URL is configuration, not a label we want in
            // every series).
            let sum = |f: fn(&crate::webhook::WebhookStats) -> &std::sync::atomic::AtomicU64| {
                self.webhooks.iter().map(|w| load(f(&w.stats))).sum::<u64>()
            };
            family(
                e,
                "tollgate_webhook_notifications",
                "Alert webhook notifications, by outcome",
                MetricType::Counter,
                &[
                    (l("outcome", "delivered"), sum(|s| &s.delivered)),
                    (l("outcome", "failed_attempt"), sum(|s| &s.failed_attempts)),
                    (l("outcome", "dropped"), sum(|s| &s.dropped)),
                ],
            )?;
        }
        Ok(())
    }
}

/// Serve `/metrics` on `addr`: plain HTTP on loopback, HTTPS with `tls` otherwise.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // A scraper needs one connection; a few cover several scrapers and a curl. Beyond them a
    // connection is closed at once, so nobody can pile up descriptors here.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors, say: do not spin; try again shortly.
                tracing::warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let m = Arc::clone(&metrics);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let m = Arc::clone(&m);
                async move {
                    // Reading every counter (and scanning session queues) is off the async
                    // workers.
                    let wanted = req.uri().path() == "/metrics"
                        && (req.method() == hyper::Method::GET
                            || req.method() == hyper::Method::HEAD);
                    let body = if wanted {
                        tokio::task::spawn_blocking(move || m.encode()).await.ok()
                    } else {
                        None
                    };
                    Ok::<_, std::convert::Infallible>(respond(&req, body))
                }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let timeout = std::time::Duration::from_secs(30);
            match tls {
                Some(cfg) => {
                    let accept = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp);
                    if let Ok(Ok(s)) = tokio::time::timeout(timeout, accept).await {
                        let io = hyper_util::rt::TokioIo::new(s);
                        let _ =
                            tokio::time::timeout(timeout, http.serve_connection(io, service)).await;
                    }
                }
                None => {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = tokio::time::timeout(timeout, http.serve_connection(io, service)).await;
                }
            }
        });
    }
}

/// Connections the metrics listener serves at once.
const MAX_CONNECTIONS: usize = 8;

fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    body: Option<String>,
) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
        *resp.body_mut() = Full::new(Bytes::from_static(b"only /metrics is served here\n"));
        return resp;
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        *resp.status_mut() = hyper::StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    let Some(body) = body else {
        *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        return resp;
    };
    *resp.body_mut() = Full::new(Bytes::from(body));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        ),
    );
    resp
}

/// Bind the metrics listener; `Some(tls)` is needed unless `addr` is a loopback address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr} ([metrics] listen)"))
}
