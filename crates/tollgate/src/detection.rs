//! Wiring of the detection engine (`tollgate-detect`): feeds it the security events and the
//! broker's per-device meters and `TCP_INFO` readings, runs its evaluation, carries out the
//! mitigations it orders through the control plane, and sends its alerts to the event log,
//! the metrics and the webhooks. The engine decides; this module only moves facts and orders.
//!
//! It never touches the per-message path: meters are read by one sampler task every
//! `[detection] sample_interval_ms`, events arrive on their own bounded consumer queue.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tollgate_broker::Broker;
use tollgate_control::Control;
use tollgate_detect::{
    Action, Alert, AlertState, Counters, DetectionConfig, DeviceInfo, Engine, LiveConn,
    Observation, Order, Sample, Sketch, Transport,
};
use tollgate_events::{Consumer, Delivery, EventBus, EventKind};

use crate::metrics::Metrics;
use crate::webhook::Webhook;

/// A connection: device and client id.
type ConnKey = (Arc<str>, String);

/// The detection runtime, shared with the admin API.
pub struct Detection {
    engine: Mutex<Engine>,
    control: Arc<Control>,
    broker: Broker,
    events: EventBus,
    metrics: Arc<Metrics>,
    webhooks: Vec<Arc<Webhook>>,
    rules_file: PathBuf,
    rules_stamp: Mutex<Option<(SystemTime, u64)>>,
    /// Where the admin API is, for the alerts' links.
    external_url: String,
    /// Active alerts already announced (raised events and webhooks are sent once).
    announced: Mutex<HashSet<String>>,
    /// Per connection: bytes sent and retransmitted at the previous sample.
    prev_tcp: Mutex<HashMap<ConnKey, (u64, u64)>>,
    /// Per device: the broker meter read last (a new one means its counters restarted). One
    /// entry per registered device that has connected; removed when the device is revoked.
    meter_ids: Mutex<HashMap<Arc<str>, u64>>,
}

/// One fact from the event consumer, applied in arrival order.
enum Fact {
    Observe(Observation),
    Forget(String),
}

impl std::fmt::Debug for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detection").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Settings of the runtime.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules_file: PathBuf,
    pub sample_interval: Duration,
    pub external_url: String,
}

impl Detection {
    /// Load the rules (a broken file stops the start: the operator must know), and start the
    /// event consumer and the sampler.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: Settings,
        control: Arc<Control>,
        broker: Broker,
        events: EventBus,
        consumer: Consumer,
        metrics: Arc<Metrics>,
        webhooks: Vec<Arc<Webhook>>,
    ) -> anyhow::Result<(Arc<Detection>, Vec<tokio::task::JoinHandle<()>>)> {
        let config = load_rules(&settings.rules_file)?;
        let d = Arc::new(Detection {
            engine: Mutex::new(Engine::new(config)),
            control,
            broker,
            events,
            metrics,
            webhooks,
            rules_stamp: Mutex::new(stamp(&settings.rules_file)),
            rules_file: settings.rules_file,
            external_url: settings.external_url,
            announced: Mutex::new(HashSet::new()),
            prev_tcp: Mutex::new(HashMap::new()),
            meter_ids: Mutex::new(HashMap::new()),
        });
        d.refresh_devices();
        let tasks = vec![
            tokio::spawn(Arc::clone(&d).consume(consumer)),
            tokio::spawn(Arc::clone(&d).sample_loop(settings.sample_interval)),
        ];
        Ok((d, tasks))
    }

    /// Reload `detection.toml` if it changed on disk; a broken file keeps the rules in force
    /// (and says why, as an event).
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.rules_file);
        {
            let mut st = self.rules_stamp.lock();
            if *st == now {
                return;
            }
            *st = now;
        }
        self.reload();
    }

    /// Reload `detection.toml` now.
    pub fn reload(&self) {
        match load_rules(&self.rules_file) {
            Ok(cfg) => {
                let rules = cfg.rules.len();
                let detectors = enabled_detectors(&cfg);
                self.engine.lock().set_config(cfg);
                tracing::info!(rules, detectors, "detection rules loaded");
                self.events
                    .emit(EventKind::DetectionRulesReloaded { rules, detectors });
            }
            Err(e) => {
                tracing::error!("detection rules refused, the previous ones stay:\n{e:#}");
                self.events.emit(EventKind::DetectionRulesRejected {
                    error: format!("{e:#}"),
                });
            }
        }
    }

    /// Give the engine every device's cohorts (groups and model).
    pub fn refresh_devices(&self) {
        match self.control.cohorts() {
            Ok(all) => {
                let mut e = self.engine.lock();
                for (id, groups, model) in all {
                    e.set_device(&id, DeviceInfo { groups, model });
                }
            }
            Err(e) => tracing::error!("reading device cohorts for detection: {e}"),
        }
    }

    /// Run `f` on the engine on a blocking thread: an evaluation holds the engine for up to a
    /// few hundred milliseconds at 100,000 devices, which must not stall an async worker.
    /// The alerts now (active ones only with `active`), from a blocking context.
    pub fn alerts_now(&self, active: bool) -> Vec<tollgate_detect::Alert> {
        self.engine.lock().alerts(active)
    }

    pub async fn with_engine<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&mut me.engine.lock()))
            .await
            .map_err(|e| anyhow::anyhow!("detection engine task: {e}"))
    }

    async fn consume(self: Arc<Self>, mut consumer: Consumer) {
        while let Some(first) = consumer.recv().await {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match consumer.try_recv() {
                    Some(d) => batch.push(d),
                    None => break,
                }
            }
            let mut facts = Vec::with_capacity(batch.len());
            let mut refresh = false;
            let at = now_ms();
            for d in batch {
                let Delivery::Event(ev) = d else { continue };
                match fact_of(&ev.kind, at) {
                    Some(f) => facts.push(f),
                    None => {
                        refresh |= matches!(
                            ev.kind,
                            EventKind::DeviceAdded { .. }
                                | EventKind::DeviceEnrolled { .. }
                                | EventKind::DeviceGroupsChanged { .. }
                                | EventKind::InventoryChanged { .. }
                                | EventKind::DeviceReactivated { .. }
                        )
                    }
                }
            }
            if facts.is_empty() && !refresh {
                continue;
            }
            let me = Arc::clone(&self);
            // Off the async workers: the engine may be in the middle of an evaluation.
            let _ = tokio::task::spawn_blocking(move || {
                let mut cleared = Vec::new();
                {
                    let mut e = me.engine.lock();
                    for f in facts {
                        match f {
                            Fact::Observe(o) => e.observe(o),
                            Fact::Forget(device) => {
                                me.meter_ids.lock().remove(device.as_str());
                                cleared.extend(e.remove_device(&device));
                            }
                        }
                    }
                }
                for a in &cleared {
                    me.announce(a);
                }
                if refresh {
                    me.refresh_devices();
                }
            })
            .await;
        }
    }

    async fn sample_loop(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = Arc::clone(&self);
            // Reading thousands of meters and TCP_INFOs, and evaluating: off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.sample_and_evaluate()).await;
        }
    }

    /// One round: read every device's meter and connections, evaluate, act.
    pub fn sample_and_evaluate(&self) {
        let now = now_ms();
        let readings = self.broker.read_devices(now);
        let mut samples = Vec::with_capacity(readings.len());
        // What devices were seen doing, for policy suggestions.
        let mut observed: Vec<(String, tollgate_policy::Action, String)> = Vec::new();
        {
            let mut prev = self.prev_tcp.lock();
            let mut seen: HashSet<ConnKey> = HashSet::new();
            for r in readings {
                let mut connections = Vec::with_capacity(r.connections.len());
                for c in &r.connections {
                    let transport = c.transport.map(|t| {
                        self.metrics.rtt_seconds.observe(f64::from(t.rtt_us) / 1e6);
                        let key = (Arc::clone(&r.device), c.client_id.clone());
                        if let Some((sent, retr)) = prev.get(&key) {
                            let ds = t.bytes_sent.saturating_sub(*sent);
                            if ds > 0 {
                                let dr = t.bytes_retrans.saturating_sub(*retr);
                                self.metrics
                                    .retransmission_ratio
                                    .observe(dr as f64 / ds as f64);
                            }
                        }
                        prev.insert(key.clone(), (t.bytes_sent, t.bytes_retrans));
                        seen.insert(key);
                        transport_of(&t)
                    });
                    connections.push(LiveConn {
                        client_id: c.client_id.clone(),
                        addr: c.addr.map(|a| a.ip()),
                        transport,
                    });
                }
                for (action, topic) in &r.drained.observed {
                    let a = match action {
                        tollgate_broker::meter::SeenAction::Publish => {
                            tollgate_policy::Action::Publish
                        }
                        tollgate_broker::meter::SeenAction::Retain => {
                            tollgate_policy::Action::Retain
                        }
                        tollgate_broker::meter::SeenAction::Subscribe => {
                            tollgate_policy::Action::Subscribe
                        }
                    };
                    observed.push((r.device.to_string(), a, topic.to_string()));
                }
                if r.drained.observations_overflowed {
                    tracing::debug!(device = %r.device, "some topics were not recorded for policy suggestions (bounds reached)");
                }
                let m = &r.meter;
                let restarted = {
                    let mut ids = self.meter_ids.lock();
                    let before = ids.insert(Arc::clone(&r.device), r.meter_id);
                    before.is_some_and(|b| b != r.meter_id)
                };
                samples.push(Sample {
                    device: r.device.to_string(),
                    counters: Counters {
                        messages_in: m.messages_in,
                        bytes_in: m.bytes_in,
                        messages_out: m.messages_out,
                        bytes_out: m.bytes_out,
                        publish_denied: m.publish_denied,
                        subscribe_denied: m.subscribe_denied,
                        wildcard_subscribes: m.wildcard_subscribes,
                        throttled: m.throttled,
                    },
                    topics: Sketch(r.drained.topics),
                    filters: Sketch(r.drained.filters),
                    connections,
                    restarted,
                    // Connections that closed since the last round, with the TCP_INFO read at
                    // close: short connections count too.
                    closed: r
                        .drained
                        .closed
                        .iter()
                        .map(|(client, t)| (client.to_string(), transport_of(t)))
                        .collect(),
                });
                for (_, t) in &r.drained.closed {
                    self.metrics.rtt_seconds.observe(f64::from(t.rtt_us) / 1e6);
                }
            }
            prev.retain(|k, _| seen.contains(k));
        }
        if !observed.is_empty() {
            match self.control.record_observations(&observed) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(n, "observations not kept: devices at their bound"),
                Err(e) => tracing::warn!("recording what devices were seen doing: {e}"),
            }
        }

        let (tick, learning, by_severity) = {
            let mut e = self.engine.lock();
            e.sample(now, samples);
            let tick = e.tick(now);
            let fleet = e.fleet_stats(now);
            let mut by_severity: HashMap<&'static str, i64> = HashMap::new();
            for a in e.alerts(true) {
                *by_severity.entry(a.severity.as_str()).or_default() += 1;
            }
            (tick, fleet.learning, by_severity)
        };
        self.metrics
            .devices_learning
            .set(i64::try_from(learning).unwrap_or(i64::MAX));
        for sev in ["low", "medium", "high", "critical"] {
            self.metrics
                .alerts_active
                .get_or_create(&vec![("severity", sev.to_owned())])
                .set(by_severity.get(sev).copied().unwrap_or(0));
        }
        for a in &tick.changes {
            self.announce(a);
        }
        for o in tick.orders {
            self.carry_out(&o);
        }
    }

    /// An alert raised or cleared: the event, the metrics and the webhooks (once each).
    fn announce(&self, a: &Alert) {
        let raised = match a.state {
            AlertState::Active => self.announced.lock().insert(a.id.clone()),
            AlertState::Cleared => self.announced.lock().remove(&a.id),
        };
        if !raised && a.state == AlertState::Active {
            return; // an update of an alert already announced
        }
        if a.state == AlertState::Active {
            self.metrics
                .alerts
                .get_or_create(&vec![
                    ("detector", a.detector.clone()),
                    ("severity", a.severity.as_str().to_owned()),
                ])
                .inc();
            tracing::warn!(id = %a.id, detector = %a.detector, device = ?a.device, "alert: {}", a.explanation);
        } else {
            tracing::info!(id = %a.id, detector = %a.detector, device = ?a.device, "alert cleared");
        }
        self.events.emit(alert_event(a));
        let body = crate::webhook::alertmanager_body(a, &self.external_url);
        for w in &self.webhooks {
            w.send(body.clone());
        }
    }

    /// Carry out one mitigation through the control plane (each is an event there).
    fn carry_out(&self, o: &Order) {
        let by = format!("detector:{} alert {}", o.detector, o.alert_id);
        let source = format!("detector:{}", o.detector);
        let reason = self
            .engine
            .lock()
            .alert(&o.alert_id)
            .map(|a| a.explanation)
            .unwrap_or_else(|| format!("{} alert {}", o.detector, o.alert_id));
        let (action, outcome) = match o.action {
            Action::Quarantine { ttl_ms } => {
                let until = (now_ms().saturating_add(ttl_ms)) / 1000;
                (
                    "quarantine",
                    self.control
                        .quarantine_until(&o.device, &source, &reason, &by, Some(until))
                        .map(|_| ()),
                )
            }
            Action::Throttle { per_second, ttl_ms } => (
                "throttle",
                self.control.throttle(
                    &o.device,
                    per_second,
                    Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
                    &by,
                ),
            ),
            Action::Disconnect => (
                "disconnect",
                self.control.disconnect(&o.device, &reason, &by).map(|_| ()),
            ),
            Action::Revoke => (
                "revoke",
                self.control
                    .revoke_device(&o.device, &reason, &by)
                    .map(|_| ()),
            ),
        };
        self.metrics
            .mitigations
            .get_or_create(&vec![("action", action.to_owned())])
            .inc();
        if let Err(e) = outcome {
            tracing::error!(device = %o.device, action, "mitigation failed: {e}");
        }
    }
}

/// The detection fact an event carries, if any.
fn fact_of(kind: &EventKind, at: i64) -> Option<Fact> {
    Some(Fact::Observe(match kind {
        EventKind::ConnectionAccepted {
            device,
            client_id,
            addr,
            ..
        } => Observation::Connected {
            device: device.clone(),
            client_id: client_id.clone(),
            addr: addr.map(|a| a.ip()),
            at_ms: at,
        },
        EventKind::Disconnected {
            device,
            client_id,
            reason,
            ..
        } => Observation::Disconnected {
            device: device.clone(),
            client_id: client_id.clone(),
            reason: reason.clone(),
            at_ms: at,
        },
        EventKind::ConnectionRefused {
            device: Some(device),
            reason,
            ..
        } => Observation::Refused {
            device: device.clone(),
            reason: reason.as_str().to_owned(),
            at_ms: at,
        },
        EventKind::SessionTakenOver { device, client_id } => Observation::TakenOver {
            device: device.clone(),
            client_id: client_id.clone(),
            at_ms: at,
        },
        EventKind::PublishDenied {
            device,
            topic,
            quarantine,
            ..
        } => Observation::PublishDenied {
            device: device.clone(),
            topic: topic.clone(),
            quarantined: quarantine.is_some(),
            at_ms: at,
        },
        EventKind::SubscribeDenied {
            device,
            filter,
            quarantine,
            ..
        } => Observation::SubscribeDenied {
            device: device.clone(),
            filter: filter.clone(),
            quarantined: quarantine.is_some(),
            at_ms: at,
        },
        EventKind::DeviceRevoked { device, .. } => return Some(Fact::Forget(device.clone())),
        _ => return None,
    }))
}

fn transport_of(t: &tollgate_broker::TransportSample) -> Transport {
    Transport {
        rtt_us: t.rtt_us,
        rttvar_us: t.rttvar_us,
        min_rtt_us: t.min_rtt_us,
        total_retrans: t.retransmits,
        segs_out: t.segs_out,
        lost: t.lost,
        bytes_sent: t.bytes_sent,
        bytes_retrans: t.bytes_retrans,
        delivery_rate: t.delivery_rate,
        last_recv_ms: t.last_recv_ms,
    }
}

/// The `alert` event of an alert.
pub fn alert_event(a: &Alert) -> EventKind {
    EventKind::Alert {
        id: a.id.clone(),
        detector: a.detector.clone(),
        device: a.device.clone(),
        severity: a.severity.as_str().to_owned(),
        state: match a.state {
            AlertState::Active => "active",
            AlertState::Cleared => "cleared",
        }
        .to_owned(),
        started_at: crate::human::rfc3339_ms(a.started_at_ms),
        metric: a.metric.clone(),
        observed: a.observed,
        baseline: a.baseline,
        threshold: a.threshold,
        mitigation: a.mitigation.clone(),
        cohort: a.cohort.clone(),
        explanation: a.explanation.clone(),
    }
}

/// How many named detectors are on.
fn enabled_detectors(cfg: &DetectionConfig) -> usize {
    let d = &cfg.detectors;
    [
        d.cloned_certificate.common.enabled,
        d.authorization_probing.common.enabled,
        d.topic_scanning.common.enabled,
        d.traffic_spike.common.enabled,
        d.connection_flapping.common.enabled,
        d.new_source_address.common.enabled,
        d.link_degradation.common.enabled,
        d.inactive.common.enabled,
    ]
    .into_iter()
    .filter(|e| *e)
    .count()
}

/// `detection.toml`, or the built-in defaults when there is none.
pub fn load_rules(path: &std::path::Path) -> anyhow::Result<DetectionConfig> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))?;
            Ok(DetectionConfig::parse(&text, &path.display().to_string())?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DetectionConfig::default()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}
