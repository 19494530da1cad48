//! `tollgate serve`: wire the crates together, run until SIGINT/SIGTERM, shut down cleanly.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tollgate_broker::{AuthSnapshot, Broker};
use tollgate_events::{EventBus, EventKind};
use tollgate_store::sessions::SqliteSessionStore;

use crate::config::Config;
use crate::control::ControlPlane;
use crate::datadir::{Addresses, Layout};
use crate::listener::MqttListener;

/// The address the CLI should dial for a listener bound to `a`.
fn dialable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], a.port()))
    } else {
        a
    }
}

pub async fn serve(cfg: Config) -> Result<()> {
    let l = Layout::new(&cfg.data);
    let first = crate::eventlog::last_seq(&cfg.events_file).map_or(1, |s| s + 1);
    let (events, mut dispatcher) = EventBus::new(16 * 1024, first);
    let log = dispatcher.consumer("log", 16 * 1024);
    let dispatcher_task = tokio::spawn(dispatcher.run());
    let event_writer = tokio::spawn(crate::eventlog::run(log, cfg.events_file.clone()));

    let (broker, store) = open_broker(&cfg, &events)?;
    let cp = ControlPlane::open(&cfg, broker.clone(), events.clone())?;

    let revoked: crate::tls::RevocationCheck = {
        let b = broker.clone();
        Arc::new(move |serial: &str| b.auth().revoked.contains(serial))
    };
    let anchors = cp.issuing_anchors();
    // The MQTT listener's configuration is swapped whenever a new CRL is signed (rustls's
    // verifier is immutable), so every new handshake checks the current CRL.
    let resumption = crate::tls::Resumption::new()?;
    let mqtt_tls = Arc::new(arc_swap::ArcSwap::from(crate::tls::server_config(
        &l.server_cert(),
        &l.server_key(),
        &anchors,
        cfg.tls13_only,
        Arc::clone(&revoked),
        &crate::tls::ClientAuth {
            optional: false,
            crls: cp.crls(),
            resumption: Some(resumption.clone()),
            extra_roots: Vec::new(),
        },
    )?));
    {
        let anchors2 = anchors.clone();
        let (slot, l, revoked, tls13) = (
            Arc::clone(&mqtt_tls),
            l.clone(),
            Arc::clone(&revoked),
            cfg.tls13_only,
        );
        cp.on_crl(Box::new(move |crls| {
            let auth = crate::tls::ClientAuth {
                optional: false,
                crls,
                resumption: Some(resumption.clone()),
                extra_roots: Vec::new(),
            };
            match crate::tls::server_config(
                &l.server_cert(),
                &l.server_key(),
                &anchors2,
                tls13,
                Arc::clone(&revoked),
                &auth,
            ) {
                Ok(c) => slot.store(c),
                Err(e) => {
                    tracing::error!("rebuilding the MQTT TLS configuration with the new CRL: {e:#}")
                }
            }
        }));
    }
    // The control listener serves the admin API (admin certificate) and EST (a token, or the
    // device's current certificate): client certificates are optional at the TLS layer.
    let admin_resumption = crate::tls::Resumption::new()?;
    let admin_auth = move |extra_roots: Vec<Vec<u8>>| crate::tls::ClientAuth {
        optional: true,
        crls: Vec::new(),
        resumption: Some(admin_resumption.clone()),
        extra_roots,
    };
    let admin_tls = Arc::new(arc_swap::ArcSwap::from(crate::tls::server_config(
        &l.server_cert(),
        &l.server_key(),
        &anchors,
        false,
        Arc::clone(&revoked),
        &admin_auth(Vec::new()),
    )?));
    {
        // Supplier CAs are trusted on the control listener only (bootstrap enrollment), never
        // on the MQTT listener: a bootstrap certificate cannot open the MQTT port.
        let anchors2 = anchors.clone();
        let (slot, l, revoked) = (Arc::clone(&admin_tls), l.clone(), Arc::clone(&revoked));
        cp.on_trust_change(Box::new(move |suppliers| {
            match crate::tls::server_config(
                &l.server_cert(),
                &l.server_key(),
                &anchors2,
                false,
                Arc::clone(&revoked),
                &admin_auth(suppliers.to_vec()),
            ) {
                Ok(c) => slot.store(c),
                Err(e) => {
                    tracing::error!("rebuilding the control listener's TLS configuration: {e:#}")
                }
            }
        }));
    }

    let mqtt = TcpListener::bind(cfg.mqtt_listen)
        .await
        .with_context(|| format!("binding MQTT listener {}", cfg.mqtt_listen))?;
    let admin = TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("binding admin listener {}", cfg.admin_listen))?;
    let mqtt_addr = mqtt.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let addrs = Addresses {
        mqtt: dialable(mqtt_addr),
        admin: dialable(admin_addr),
        pid: std::process::id(),
    };
    crate::datadir::write_file(
        &l.addresses(),
        serde_json::to_string_pretty(&addrs)?.as_bytes(),
        false,
    )?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mqtt_task = tokio::spawn(
        MqttListener::new(mqtt, mqtt_tls, broker.clone(), events.clone(), &cfg)
            .run(stop_rx.clone()),
    );
    let admin_task = tokio::spawn(crate::admin::serve(
        admin,
        Arc::clone(&admin_tls),
        Arc::clone(&cp),
        broker.clone(),
        events.clone(),
        stop_rx,
    ));
    let watcher = tokio::spawn(crate::control::watch_policy(
        Arc::clone(&cp),
        cfg.policy_watch,
    ));

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
    Ok(())
}

/// The broker, with its durable session store unless sessions are configured in-memory.
fn open_broker(
    cfg: &Config,
    events: &EventBus,
) -> Result<(Broker, Option<Arc<SqliteSessionStore>>)> {
    let Some(path) = &cfg.sessions_file else {
        tracing::warn!("sessions.durable = false: persistent sessions live in memory only");
        let b = Broker::new(cfg.broker.clone(), events.clone(), AuthSnapshot::deny_all());
        return Ok((b, None));
    };
    let ev = events.clone();
    let hook: tollgate_store::sessions::HealthHook = Box::new(move |r| {
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
        AuthSnapshot::deny_all(),
        durable,
        recovered,
    );
    Ok((b, Some(store)))
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
