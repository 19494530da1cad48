//! The record of refusals: complete in counts, bounded in bytes.
//!
//! The first few refusals from one source for one reason in an interval are recorded
//! individually (an event and a log line each, by the caller); after that they are only
//! counted, and when the interval ends one `refusals_summarized` event and one log line give
//! the count. A flood of connect-and-reset therefore writes a few lines per source and interval
//! instead of one per connection, and every refusal is still accounted for. The table of
//! sources is bounded; beyond it refusals are counted under the source `*`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tollgate_events::{EventBus, EventKind};

use super::{Prefixes, Source};

/// How refusals are aggregated.
#[derive(Debug, Clone, Copy)]
pub struct Aggregation {
    /// Refusals recorded individually per source, reason and interval.
    pub individual: u32,
    /// Length of an interval.
    pub interval: Duration,
    /// Sources tracked at once; beyond it, refusals count under `*`.
    pub max_sources: usize,
}

impl Default for Aggregation {
    fn default() -> Self {
        Aggregation {
            individual: 5,
            interval: Duration::from_secs(10),
            max_sources: 4096,
        }
    }
}

type Key = (Option<Source>, &'static str);

#[derive(Default)]
struct Entry {
    individual: u32,
    counted: u64,
    example: String,
}

/// Both listeners' refusal records.
#[derive(Clone)]
pub struct Refusals {
    /// The MQTT listener's.
    pub mqtt: Arc<RefusalLog>,
    /// The control listener's.
    pub control: Arc<RefusalLog>,
}

impl Refusals {
    /// Both records, as configured.
    pub fn new(limits: &crate::config::Limits, events: &EventBus) -> Refusals {
        Refusals {
            mqtt: RefusalLog::new("mqtt", limits.refusals, limits.prefixes, events.clone()),
            control: RefusalLog::new("control", limits.refusals, limits.prefixes, events.clone()),
        }
    }
}

/// One listener's refusal record.
pub struct RefusalLog {
    listener: &'static str,
    cfg: Aggregation,
    prefixes: Prefixes,
    events: EventBus,
    table: Mutex<HashMap<Key, Entry>>,
    total: AtomicU64,
    by_reason: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl RefusalLog {
    /// The record for `listener` ("mqtt", "control").
    pub fn new(
        listener: &'static str,
        cfg: Aggregation,
        prefixes: Prefixes,
        events: EventBus,
    ) -> Arc<RefusalLog> {
        Arc::new(RefusalLog {
            listener,
            cfg,
            prefixes,
            events,
            table: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            by_reason: Mutex::default(),
        })
    }

    /// Note one refusal. `true`: record it individually now (the caller emits its event and
    /// log line); `false`: it is counted, and the interval's summary will say so. `detail` is
    /// called only when the refusal becomes the summary's example.
    pub fn note(&self, src: Source, reason: &'static str, detail: impl FnOnce() -> String) -> bool {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self.by_reason.lock().entry(reason).or_default() += 1;
        let mut t = self.table.lock();
        let key = if t.len() >= self.cfg.max_sources && !t.contains_key(&(Some(src), reason)) {
            (None, reason)
        } else {
            (Some(src), reason)
        };
        let e = t.entry(key).or_default();
        if key.0.is_some() && e.individual < self.cfg.individual {
            e.individual += 1;
            return true;
        }
        e.counted += 1;
        if e.example.is_empty() {
            e.example = detail();
        }
        false
    }

    /// Refusals noted since start, individual and summarised.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Refusals noted since start, by reason.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        self.by_reason
            .lock()
            .iter()
            .map(|(r, n)| (*r, *n))
            .collect()
    }

    /// [`RefusalLog::note`] for a caller known by its address.
    pub fn note_addr(
        &self,
        ip: std::net::IpAddr,
        reason: &'static str,
        detail: impl FnOnce() -> String,
    ) -> bool {
        self.note(Source::of(ip, self.prefixes), reason, detail)
    }

    /// End the interval: one summary per source and reason that had refusals counted.
    pub fn flush(&self) -> u64 {
        let table = std::mem::take(&mut *self.table.lock());
        let mut total = 0;
        for ((src, reason), e) in table {
            if e.counted == 0 {
                continue;
            }
            total += e.counted;
            let source = src.map_or_else(|| "*".to_owned(), |s| s.to_string());
            tracing::warn!(
                listener = self.listener,
                %source,
                reason,
                count = e.counted,
                interval_secs = self.cfg.interval.as_secs(),
                example = %e.example,
                "refusals summarized"
            );
            self.events.emit(EventKind::RefusalsSummarized {
                listener: self.listener,
                source,
                reason: reason.to_owned(),
                count: e.counted,
                interval_secs: self.cfg.interval.as_secs(),
                example: e.example,
            });
        }
        total
    }

    /// Flush every interval until `shutdown` flips, then once more.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => { self.flush(); }
                _ = shutdown.changed() => break,
            }
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Prefixes;

    #[tokio::test]
    async fn the_first_few_are_individual_the_rest_summarised_and_every_one_counted() {
        let (bus, mut dispatcher) = EventBus::new(1024, 1);
        let mut consumer = dispatcher.consumer("test", 1024);
        let run = tokio::spawn(dispatcher.run());
        let cfg = Aggregation {
            individual: 3,
            interval: Duration::from_secs(10),
            max_sources: 2,
        };
        let log = RefusalLog::new("mqtt", cfg, Prefixes::default(), bus.clone());
        let src = |s: &str| Source::of(s.parse().unwrap(), Prefixes::default());
        let individual = (0..100)
            .filter(|_| log.note(src("10.0.0.1"), "tls_error", || "reset".into()))
            .count();
        assert_eq!(individual, 3);
        // Another reason from the same source has its own allowance.
        assert!(log.note(src("10.0.0.1"), "timeout", String::new));
        // Beyond the table, sources count under `*`, never individually.
        assert!(!log.note(src("10.0.0.9"), "tls_error", || "x".into()));
        assert_eq!(log.flush(), 97 + 1);
        // A new interval starts afresh.
        assert!(log.note(src("10.0.0.1"), "tls_error", String::new));
        bus.shutdown().await;
        run.await.unwrap();
        let mut summaries = Vec::new();
        while let Some(d) = consumer.recv().await {
            if let tollgate_events::Delivery::Event(e) = d {
                if let EventKind::RefusalsSummarized {
                    source,
                    count,
                    example,
                    ..
                } = &e.kind
                {
                    summaries.push((source.clone(), *count, example.clone()));
                }
            }
        }
        summaries.sort();
        assert_eq!(
            summaries,
            vec![
                ("*".to_owned(), 1, "x".to_owned()),
                ("10.0.0.1/32".to_owned(), 97, "reset".to_owned())
            ]
        );
    }
}
