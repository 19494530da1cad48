//! `tollgate serve`: wire the crates together, run until SIGINT/SIGTERM, shut down cleanly.
//!
//! Order matters: the data directory is locked first; the control plane opens (registry, CAs,
//! policy) and builds the first access snapshot; the broker is built with that snapshot (so
//! restored wills are authorized against real access, not deny-all) and attached to the
//! control plane as its data plane; then the listeners open.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tollgate_broker::{AccessSnapshot, Broker, Changed};
use tollgate_control::{Control, DataPlane, LiveConnection, Trust};
use tollgate_events::{EventBus, EventKind};
use tollgate_mqtt::ReasonCode;
use tollgate_registry::SqliteRegistry;
use tollgate_sessions::SqliteSessionStore;

use crate::config::Config;
use crate::datadir::{Addresses, DataDirLock, Layout};
use crate::detection::Detection;
use crate::listener::MqttListener;

/// The address the CLI should dial for a listener bound to `a`.
fn dialable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], a.port()))
    } else {
        a
    }
}

/// The broker as the control plane's data plane.
struct BrokerPlane(Broker);

impl DataPlane for BrokerPlane {
    fn publish(&self, snapshot: Arc<AccessSnapshot>, changed: Changed) -> usize {
        self.0.set_access(snapshot, &changed)
    }

    fn publish_devices(&self, snapshot: Arc<AccessSnapshot>, ids: &[String]) -> Vec<usize> {
        self.0.set_access_of(snapshot, ids)
    }

    fn close_device(&self, device: &str, reason: &str) -> usize {
        self.0
            .close_device(device, ReasonCode::ADMINISTRATIVE_ACTION, reason)
    }

    fn connections(&self) -> Vec<LiveConnection> {
        self.0
            .connections()
            .into_iter()
            .map(|c| LiveConnection {
                device_id: c.device_id,
                client_id: c.client_id,
                messages_in: c.meter.messages_in,
                messages_out: c.meter.messages_out,
                bytes_in: c.meter.bytes_in,
                bytes_out: c.meter.bytes_out,
                denied: c.meter.denied(),
                rtt_us: c.transport.map(|t| t.rtt_us),
                retransmits: c.transport.map(|t| t.retransmits),
                addr: c.addr,
                connected_at_ms: c.connected_at_ms,
            })
            .collect()
    }

    fn throttle(&self, device: &str, per_second: u32, until_unix_ms: i64) {
        self.0.set_throttle(device, per_second, until_unix_ms);
    }
}

/// Both listeners' TLS configurations, rebuilt together from the control plane's trust
/// material (rustls verifiers are immutable: a new CRL or supplier CA means a new config).
struct ListenerTls {
    layout: Layout,
    tls13_only: bool,
    revoked: crate::tls::RevocationCheck,
    /// Shared across rebuilds so a CRL change does not invalidate resumption tickets.
    mqtt_resumption: crate::tls::Resumption,
    control_resumption: crate::tls::Resumption,
}

/// The configurations in force, read by each listener at every accept.
struct TlsSlots {
    mqtt: Arc<ArcSwap<rustls::ServerConfig>>,
    control: Arc<ArcSwap<rustls::ServerConfig>>,
}

impl ListenerTls {
    fn new(
        layout: Layout,
        tls13_only: bool,
        revoked: crate::tls::RevocationCheck,
    ) -> Result<ListenerTls> {
        Ok(ListenerTls {
            layout,
            tls13_only,
            revoked,
            mqtt_resumption: crate::tls::Resumption::new()?,
            control_resumption: crate::tls::Resumption::new()?,
        })
    }

    fn slots(&self, trust: &Trust) -> Result<TlsSlots> {
        let (mqtt, control) = self.build(trust)?;
        Ok(TlsSlots {
            mqtt: Arc::new(ArcSwap::new(mqtt)),
            control: Arc::new(ArcSwap::new(control)),
        })
    }

    fn build(
        &self,
        trust: &Trust,
    ) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> {
        let l = &self.layout;
        // MQTT: Tollgate's issuing CAs only, with their CRLs. Supplier CAs are trusted on the
        // control listener only (bootstrap enrollment): a bootstrap certificate cannot open MQTT.
        let mqtt = crate::tls::server_config(
            &l.server_cert(),
            &l.server_key(),
            &trust.issuing_anchors,
            self.tls13_only,
            Arc::clone(&self.revoked),
            &crate::tls::ClientAuth {
                optional: false,
                crls: trust.crls.clone(),
                resumption: Some(self.mqtt_resumption.clone()),
                extra_roots: Vec::new(),
            },
        )?;
        // The control listener serves the admin API (admin certificate) and EST (a token, the
        // device's current certificate, or a supplier's bootstrap certificate): client
        // certificates are optional at the TLS layer and required per route.
        let control = crate::tls::server_config(
            &l.server_cert(),
            &l.server_key(),
            &trust.issuing_anchors,
            false,
            Arc::clone(&self.revoked),
            &crate::tls::ClientAuth {
                optional: true,
                crls: Vec::new(),
                resumption: Some(self.control_resumption.clone()),
                extra_roots: trust.supplier_cas.clone(),
            },
        )?;
        Ok((mqtt, control))
    }

    /// Rebuild both configurations whenever the trust material changes.
    async fn follow(self, slots: TlsSlots, mut trust: tokio::sync::watch::Receiver<Arc<Trust>>) {
        while trust.changed().await.is_ok() {
            let t = Arc::clone(&trust.borrow_and_update());
            match self.build(&t) {
                Ok((mqtt, control)) => {
                    slots.mqtt.store(mqtt);
                    slots.control.store(control);
                }
                Err(e) => tracing::error!(
                    "rebuilding the TLS configurations with new trust material (the previous ones stay): {e:#}"
                ),
            }
        }
    }
}

/// Raise the descriptor limit and fit both listeners' connection limits into it.
fn descriptor_budgets(cfg: &Config) -> crate::admission::Budgets {
    let nofile = match tollgate_sys::raise_nofile_limit() {
        Ok(l) => {
            if l.soft > l.before {
                tracing::info!(
                    from = l.before,
                    to = l.soft,
                    "raised the open-file limit to its hard limit"
                );
            }
            l.soft
        }
        Err(e) => {
            tracing::warn!("cannot read the open-file limit ({e}); assuming 1024");
            1024
        }
    };
    let b = crate::admission::Budgets::fit(
        nofile,
        cfg.max_connections,
        cfg.control_limits.max_connections,
    );
    if b.mqtt < cfg.max_connections || b.control < cfg.control_limits.max_connections {
        tracing::warn!(
            nofile,
            mqtt = b.mqtt,
            control = b.control,
            "the open-file limit is too low for the configured connection limits; they are lowered to fit (raise it with `ulimit -n` or LimitNOFILE=)"
        );
    }
    tracing::info!(
        nofile,
        mqtt = b.mqtt,
        control = b.control,
        control_refusing = b.control_refusing,
        "connection budgets"
    );
    b
}

pub async fn serve(cfg: Config) -> Result<()> {
    // One server per data directory: a second one would share the stores and the event log.
    let _lock = DataDirLock::acquire(&cfg.data, "serve")?;
    let budgets = descriptor_budgets(&cfg);
    let l = Layout::new(&cfg.data);
    // The audit log first: the event numbering continues from whichever of it and the event
    // file got further.
    let audit = if cfg.audit.enabled {
        Some(crate::audit::Audit::open(&cfg.audit)?)
    } else {
        tracing::warn!("the audit log is disabled ([audit] enabled = false): security decisions are not provable");
        None
    };
    let first = crate::eventlog::last_seq(&cfg.events_file)
        .max(audit.as_ref().and_then(|(a, _)| a.last_seq()))
        .map_or(1, |s| s + 1);
    let (events, mut dispatcher) = EventBus::new(cfg.event_queue, first);
    // The audit log is the durable consumer: control actions wait for their entry.
    let audit_writer = match &audit {
        Some((a, refusing)) => {
            let consumer = dispatcher.durable_consumer("audit", cfg.audit.queue, 256);
            if let Some(reason) = refusing {
                events.emit(EventKind::AuditLogInconsistent {
                    reason: reason.clone(),
                });
            }
            Some(a.start_writer(consumer)?)
        }
        None => None,
    };
    let audit = audit.map(|(a, _)| a);
    let log = dispatcher.consumer("log", cfg.event_queue);
    // Connections are evaluated for compliance as they are accepted (off the data path).
    let dispatcher_compliance = dispatcher.consumer("compliance", cfg.event_queue);
    // Behaviour detection takes the connection, refusal and denial events.
    let detection_events = dispatcher.consumer("detection", cfg.event_queue);
    // The dashboard's live updates: a tap that misses events rather than slow the bus.
    let dashboard_events = dispatcher.consumer("dashboard", cfg.event_queue.min(4096));
    let dispatcher_task = tokio::spawn(dispatcher.run());
    let event_writer = tokio::spawn(crate::eventlog::run(log, cfg.events_file.clone()));

    let registry = Arc::new(SqliteRegistry::open(&l.registry()).context("opening the registry")?);
    let control = Control::open(cfg.control(), registry, events.clone())
        .context("opening the control plane")?;
    let (broker, store) = open_broker(&cfg, &events, control.snapshot())?;
    control.attach(Arc::new(BrokerPlane(broker.clone())));
    let reports = crate::reports::start(Arc::clone(&control), &broker);
    let compliance_consumer = dispatcher_compliance;
    let connects = tokio::spawn(crate::reports::evaluate_on_connect(
        Arc::clone(&control),
        compliance_consumer,
    ));

    let revoked: crate::tls::RevocationCheck = {
        let b = broker.clone();
        Arc::new(move |serial: &str| b.access().revoked.contains(serial))
    };
    let trust = control.trust();
    let tls = ListenerTls::new(l.clone(), cfg.tls13_only, revoked)?;
    let slots = tls.slots(&trust.borrow())?;
    let (mqtt_tls, control_tls) = (Arc::clone(&slots.mqtt), Arc::clone(&slots.control));
    let tls_task = tokio::spawn(tls.follow(slots, trust));

    let mqtt = TcpListener::bind(cfg.mqtt_listen)
        .await
        .with_context(|| format!("binding MQTT listener {}", cfg.mqtt_listen))?;
    let admin = TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("binding admin listener {}", cfg.admin_listen))?;
    let mqtt_addr = mqtt.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let metrics_listener = match cfg.observability.metrics_listen {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(m) => Some(m.local_addr()?),
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refusals = crate::admission::refusals::Refusals::new(&cfg.limits, &events);
    let obs = &cfg.observability;
    let webhooks = start_webhooks(obs, &l)?;
    let metrics = Arc::new(
        crate::metrics::Metrics::new().with_live(crate::metrics::Live {
            broker: broker.clone(),
            control: Arc::clone(&control),
            events: events.clone(),
            store: store.clone(),
            refusals: refusals.clone(),
            webhooks: webhooks.clone(),
        }),
    );
    let (detection, detection_tasks) = crate::detection::Detection::start(
        crate::detection::Settings {
            rules_file: obs.rules_file.clone(),
            sample_interval: obs.sample_interval,
            external_url: format!("https://{}", dialable(admin_addr)),
        },
        Arc::clone(&control),
        broker.clone(),
        events.clone(),
        detection_events,
        Arc::clone(&metrics),
        webhooks,
    )
    .context("loading the detection rules")?;
    let metrics_task = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let tls = if addr.ip().is_loopback() {
                None
            } else {
                Some(crate::tls::server_only_config(
                    &l.server_cert(),
                    &l.server_key(),
                )?)
            };
            tracing::info!(%addr, tls = tls.is_some(), "metrics at /metrics");
            Some(tokio::spawn(crate::metrics::serve(
                Arc::clone(&metrics),
                listener,
                tls,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let config_audit = crate::config_audit::ConfigAudit::new(
        &cfg.data,
        crate::config_audit::Settings::new(&cfg, admin_addr, metrics_addr),
        Arc::clone(&control),
        broker.clone(),
        Arc::clone(&detection),
        audit.clone(),
        events.clone(),
    );
    let config_audit_task = tokio::spawn(Arc::clone(&config_audit).every(stop_rx.clone()));
    let checkpoint_task = audit.as_ref().map(|a| {
        tokio::spawn(Arc::clone(a).checkpoints(cfg.audit.checkpoint_interval, stop_rx.clone()))
    });
    let mqtt_task = tokio::spawn(
        MqttListener::new(
            mqtt,
            mqtt_tls,
            broker.clone(),
            events.clone(),
            &cfg,
            budgets.mqtt,
            Arc::clone(&refusals.mqtt),
        )
        .with_metrics(Arc::clone(&metrics))
        .run(stop_rx.clone()),
    );
    let dashboard = crate::dashboard::Dashboard::start(
        cfg.dashboard,
        events.clone(),
        dashboard_events,
        crate::dashboard::live::StatsSource {
            broker: broker.clone(),
            detection: Arc::clone(&detection),
        },
        stop_rx.clone(),
    );
    let admin_task = tokio::spawn(crate::control_listener::serve(
        crate::control_listener::ControlListener {
            listener: admin,
            tls: control_tls,
            cp: Arc::clone(&control),
            broker: broker.clone(),
            events: events.clone(),
            settings: crate::control_listener::Settings {
                limits: cfg.control_limits,
                max_connections: budgets.control,
                refusing: budgets.control_refusing,
                admission: cfg.limits,
            },
            refusals,
            detection: Arc::clone(&detection),
            audit: audit.clone(),
            config_audit: Some(Arc::clone(&config_audit)),
            dashboard,
        },
        stop_rx,
    ));
    let watcher = tokio::spawn(watch_policy(
        Arc::clone(&control),
        Arc::clone(&detection),
        cfg.policy_watch,
    ));
    // Verdicts (for reports, and quarantines whose inputs changed while the server was down)
    // from the state on disk, in the background.
    {
        let cp = Arc::clone(&control);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = cp.evaluate_fleet(None, "startup", None) {
                tracing::error!("evaluating compliance at start: {e}");
            }
        });
    }

    // The readiness signal, written last: whoever waits for it (the CLI, tests, the demo) may
    // then change files the server watches (the policy, detection.toml) and be sure the change
    // is seen as a change, not read as the starting state.
    crate::datadir::write_addresses(
        &cfg.data,
        &Addresses {
            mqtt: dialable(mqtt_addr),
            admin: dialable(admin_addr),
            metrics: metrics_addr.map(dialable),
            pid: std::process::id(),
        },
    )?;
    events.emit(EventKind::ServerStarted {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
    });
    tracing::info!(mqtt = %mqtt_addr, admin = %admin_addr, data = %cfg.data.display(), "tollgate is serving (MQTT over mTLS only)");
    eprintln!("tollgate: MQTT (mTLS) on {mqtt_addr}, admin API (HTTPS) on https://{admin_addr}");

    wait_for_signal().await;
    events.emit(EventKind::ServerStopping {
        reason: "signal".to_string(),
    });
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    broker.shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while broker.stats().connections.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(l.addresses());
    watcher.abort();
    for t in detection_tasks {
        t.abort();
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    tls_task.abort();
    reports.abort();
    connects.abort();
    let _ = mqtt_task.await;
    let _ = admin_task.await;
    if let Some(store) = store {
        // Write what the last connections handed over before the process ends.
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
    // Forward everything queued, then let the writer flush and fsync.
    events.shutdown().await;
    let _ = dispatcher_task.await;
    let _ = event_writer.await;
    config_audit_task.abort();
    if let Some(t) = checkpoint_task {
        let _ = t.await;
    }
    if let Some(w) = audit_writer {
        // The writer ends with the bus, after a last fsync and checkpoint.
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    Ok(())
}

/// One delivery queue per configured alert webhook.
fn start_webhooks(
    obs: &crate::config::Observability,
    l: &Layout,
) -> Result<Vec<Arc<crate::webhook::Webhook>>> {
    if obs.webhooks.is_empty() {
        return Ok(Vec::new());
    }
    // `https://` receivers are verified against `webhook_ca`, or else Tollgate's own CA chain.
    let ca = obs.webhook_ca.clone().unwrap_or_else(|| l.root_ca_cert());
    let tls = if obs.webhooks.iter().any(|r| r.url.starts_with("https://")) {
        Some(crate::webhook::client_tls(&ca).context("alerts.webhook_ca")?)
    } else {
        None
    };
    let settings = crate::webhook::Settings {
        queue: obs.webhook_queue,
        attempts: obs.webhook_attempts,
        timeout: obs.webhook_timeout,
        tls,
    };
    Ok(obs
        .webhooks
        .iter()
        .map(|r| crate::webhook::Webhook::start(r.clone(), settings.clone()))
        .collect())
}

/// The broker, with its durable session store unless sessions are configured in-memory.
fn open_broker(
    cfg: &Config,
    events: &EventBus,
    access: Arc<AccessSnapshot>,
) -> Result<(Broker, Option<Arc<SqliteSessionStore>>)> {
    let Some(path) = &cfg.sessions_file else {
        tracing::warn!("sessions.durable = false: persistent sessions live in memory only");
        let b = Broker::new(cfg.broker.clone(), events.clone(), access);
        return Ok((b, None));
    };
    let ev = events.clone();
    let hook: tollgate_sessions::HealthHook = Box::new(move |r| {
        ev.emit(match r {
            Err(error) => EventKind::StorageUnavailable { error },
            Ok(d) => EventKind::StorageRecovered {
                after_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
        });
    });
    let (store, recovered) = SqliteSessionStore::open(path, hook)
        .with_context(|| format!("opening the session store {}", path.display()))?;
    let durable: Arc<dyn tollgate_broker::persist::Durability> = store.clone();
    let b = Broker::with_store(
        cfg.broker.clone(),
        events.clone(),
        access,
        durable,
        recovered,
    );
    Ok((b, Some(store)))
}

/// Watch the policy file (polling its modification time and size) and SIGHUP; re-sign CRLs
/// when due.
async fn watch_policy(cp: Arc<Control>, detection: Arc<Detection>, every: Duration) {
    let mut hup = hangup_listener();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hup_fut = hangup(&mut hup);
        let cp = Arc::clone(&cp);
        let det = Arc::clone(&detection);
        tokio::select! {
            _ = tick.tick() => {
                let _ = tokio::task::spawn_blocking(move || {
                    cp.reload_if_changed();
                    cp.reload_compliance_if_changed();
                    det.reload_if_changed();
                    cp.compliance_tick();
                    if let Err(e) = cp.expire_quarantines() {
                        tracing::error!("lifting quarantines whose time is up: {e}");
                    }
                    cp.refresh_crl_if_due();
                })
                .await;
            }
            _ = hup_fut => {
                tracing::info!("SIGHUP: reloading the policy and the compliance profile");
                let _ = tokio::task::spawn_blocking(move || {
                    det.reload();
                    cp.reload_and_publish();
                    if let Err(e) = cp.reload_compliance() {
                        tracing::error!("compliance profile refused, the previous one stays:\n{e}");
                    } else if let Err(e) = cp.evaluate_fleet(None, "profile_change", None) {
                        tracing::error!("evaluating compliance after SIGHUP: {e}");
                    }
                })
                .await;
            }
        }
    }
}

/// SIGHUP's listener: `None` where there is none (another platform, or it could not be set up).
#[cfg(unix)]
pub(crate) type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(crate) type Hangup = Option<()>;

/// A listener for SIGHUP (each listener is told of every signal).
pub(crate) fn hangup_listener() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP; never, without a listener.
pub(crate) async fn hangup(h: &mut Hangup) {
    #[cfg(unix)]
    if let Some(h) = h.as_mut() {
        h.recv().await;
        return;
    }
    let _ = h;
    std::future::pending::<()>().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
