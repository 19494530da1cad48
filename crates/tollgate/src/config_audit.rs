//! The configuration audit at run time: gathers the facts (the control plane's, plus what only
//! the binary holds: the configuration, the listeners, the audit log, the detectors and the
//! live connections), evaluates them with `tollgate_audit::findings`, keeps the findings'
//! lifecycle in `DATA/findings.json`, and announces new and resolved findings as events.
//! Runs every `[audit] config_interval_secs` and on demand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use parking_lot::Mutex;
use tollgate_audit::findings::{
    evaluate, AuditLogFact, Changes, Facts, FindingBook, Thresholds, Tracked,
};
use tollgate_broker::{Broker, ClientIdRule};
use tollgate_control::Control;
use tollgate_events::{EventBus, EventKind};

use crate::audit::Audit;
use crate::config::Config;
use crate::detection::Detection;

/// What the facts need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub client_id: ClientIdRule,
    pub tls13_only: bool,
    pub admin_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub checkpoint_interval_secs: u64,
    pub thresholds: Thresholds,
    pub interval: std::time::Duration,
}

impl Settings {
    pub fn new(cfg: &Config, admin: SocketAddr, metrics: Option<SocketAddr>) -> Settings {
        Settings {
            client_id: cfg.broker.client_id_rule,
            tls13_only: cfg.tls13_only,
            admin_listen: admin,
            metrics_listen: metrics,
            checkpoint_interval_secs: cfg.audit.checkpoint_interval.as_secs().max(1),
            thresholds: cfg.audit.thresholds.clone(),
            interval: cfg.audit.config_interval,
        }
    }
}

/// The running configuration audit.
pub struct ConfigAudit {
    settings: Settings,
    control: Arc<Control>,
    broker: Broker,
    detection: Arc<Detection>,
    audit: Option<Arc<Audit>>,
    events: EventBus,
    book: Mutex<FindingBook>,
    path: PathBuf,
    /// One evaluation at a time.
    running: Mutex<()>,
}

impl std::fmt::Debug for ConfigAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigAudit")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl ConfigAudit {
    /// Load the findings' state from `DATA/findings.json` (a broken file starts afresh, with a
    /// warning: findings come back at the next evaluation).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        data: &std::path::Path,
        settings: Settings,
        control: Arc<Control>,
        broker: Broker,
        detection: Arc<Detection>,
        audit: Option<Arc<Audit>>,
        events: EventBus,
    ) -> Arc<ConfigAudit> {
        let path = data.join("findings.json");
        let book = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!("{}: {e}; the findings start afresh", path.display());
                FindingBook::default()
            }),
            Err(_) => FindingBook::default(),
        };
        Arc::new(ConfigAudit {
            settings,
            control,
            broker,
            detection,
            audit,
            events,
            book: Mutex::new(book),
            path,
            running: Mutex::new(()),
        })
    }

    /// Every fact, now. Blocking (reads files and the registry).
    fn facts(&self, now: i64) -> Result<Facts> {
        let c = self
            .control
            .audit_facts(now)
            .context("gathering the control plane's facts")?;
        let mut devices = c.devices;
        // What the detectors and the data plane see.
        let mut addrs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.broker.connections() {
            if let Some(a) = s.addr {
                let list = addrs.entry(s.device_id.clone()).or_default();
                let ip = a.ip().to_string();
                if !list.contains(&ip) {
                    list.push(ip);
                }
            }
        }
        let clones: std::collections::HashSet<String> = self
            .detection
            .alerts_now(true)
            .into_iter()
            .filter(|a| a.detector == tollgate_detect::detectors::CLONED_CERTIFICATE)
            .filter_map(|a| a.device)
            .collect();
        for d in &mut devices {
            d.live_addresses = addrs.remove(&d.id).unwrap_or_default();
            d.clone_alert = clones.contains(&d.id);
        }
        let audit = match &self.audit {
            Some(a) => a.with_log(|l| AuditLogFact {
                enabled: true,
                refusing: l.refusing().map(str::to_owned),
                entries: l.size(),
                checkpoint_size: l.latest().map(|c| c.size),
                checkpoint_at: a.last_checkpoint_at(),
                checkpoint_interval_secs: self.settings.checkpoint_interval_secs,
            }),
            None => AuditLogFact {
                enabled: false,
                refusing: None,
                entries: 0,
                checkpoint_size: None,
                checkpoint_at: None,
                checkpoint_interval_secs: self.settings.checkpoint_interval_secs,
            },
        };
        let s = &self.settings;
        Ok(Facts {
            now,
            certs: c.certs,
            key_files: c.key_files,
            root_key_online: c.root_key_online,
            devices,
            grants: c.grants,
            lints: c.lints,
            client_id_mode: match s.client_id {
                ClientIdRule::Exact => "exact",
                ClientIdRule::Prefix => "prefix",
                ClientIdRule::Any => "any",
            }
            .to_owned(),
            tls13_only: s.tls13_only,
            admin_listen: s.admin_listen.to_string(),
            admin_loopback: s.admin_listen.ip().is_loopback(),
            metrics_listen: s.metrics_listen.map(|a| a.to_string()),
            metrics_loopback: s.metrics_listen.is_none_or(|a| a.ip().is_loopback()),
            audit,
            thresholds: s.thresholds.clone(),
        })
    }

    /// Evaluate now: update the findings, persist them, announce what opened and resolved.
    /// Blocking.
    pub fn run(&self) -> Result<Changes> {
        let _one = self.running.lock();
        let now = now();
        let facts = self.facts(now)?;
        let current = evaluate(&facts);
        let (changes, snapshot) = {
            let mut book = self.book.lock();
            let changes = book.update(now, current);
            (changes, serde_json::to_vec_pretty(&*book)?)
        };
        tollgate_control::files::write_file(&self.path, &snapshot, true)
            .with_context(|| format!("writing {}", self.path.display()))?;
        for t in &changes.opened {
            // Events and log lines stay short (a merged evidence can run to kilobytes); the
            // whole of it is in the API and `tollgate audit config`.
            let evidence = brief(&t.finding.evidence, EVENT_EVIDENCE);
            tracing::warn!(rule = %t.finding.rule, resource = %brief(&t.finding.resource, 120), "finding: {evidence}");
            self.events.emit(EventKind::FindingOpened {
                id: brief(&t.id, 200),
                rule: t.finding.rule.clone(),
                severity: severity_name(t.finding.severity).to_owned(),
                resource: brief(&t.finding.resource, 120),
                evidence,
            });
        }
        for t in &changes.resolved {
            tracing::info!(rule = %t.finding.rule, resource = %brief(&t.finding.resource, 120), "finding resolved");
            self.events.emit(EventKind::FindingResolved {
                id: brief(&t.id, 200),
                rule: t.finding.rule.clone(),
                resource: brief(&t.finding.resource, 120),
            });
        }
        Ok(changes)
    }

    /// Run `f` on the findings' state (and persist it if `f` changed it).
    pub fn with_book<T>(&self, f: impl FnOnce(&mut FindingBook) -> T) -> Result<T> {
        let (out, snapshot) = {
            let mut book = self.book.lock();
            let out = f(&mut book);
            (out, serde_json::to_vec_pretty(&*book)?)
        };
        tollgate_control::files::write_file(&self.path, &snapshot, true)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(out)
    }

    /// The findings (open ones, and resolved ones too with `all`).
    pub fn list(&self, all: bool) -> Vec<Tracked> {
        self.book.lock().list(all)
    }

    /// Evaluate every `[audit] config_interval_secs` until `stop`.
    pub async fn every(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.run()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("configuration audit: {e:#}"),
                Err(e) => tracing::error!("configuration audit task: {e}"),
            }
        }
    }
}

/// The longest evidence an event carries.
const EVENT_EVIDENCE: usize = 300;

/// `s` cut to at most `max` bytes (at a character boundary), with an ellipsis when cut.
fn brief(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// A severity's name, as events and the API write it.
pub fn severity_name(s: tollgate_audit::findings::Severity) -> &'static str {
    use tollgate_audit::findings::Severity as S;
    match s {
        S::Info => "info",
        S::Low => "low",
        S::Medium => "medium",
        S::High => "high",
        S::Critical => "critical",
    }
}
