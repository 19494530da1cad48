//! The audit log at run time: the writer that appends every event to the Merkle-tree log
//! ([`tollgate_audit`]), makes it durable in batches and confirms written-ahead control
//! actions; the timer that signs checkpoints; and the shared handle the admin API reads
//! proofs, entries and checkpoints through.
//!
//! The writer runs on a thread of its own, fed by the event bus's durable consumer: a session
//! never waits for it. A burst of events becomes one write and one `fsync` (group commit);
//! a control action's `emit_durable` returns only after the `fsync` that covers it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::Mutex;
use tollgate_audit::entry;
use tollgate_audit::log::{load_or_create_key, Log, Signed};
use tollgate_events::{Ack, Consumer, Delivery};

use crate::config::AuditSettings;

/// Most deliveries gathered into one write and one fsync.
const BATCH: usize = 4096;

/// Counters of the writer, for metrics and status.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries appended since start.
    pub entries: AtomicU64,
    /// `fsync`s of the entries file.
    pub syncs: AtomicU64,
    /// Gap entries written (events the log missed).
    pub gaps: AtomicU64,
    /// Events the gaps cover.
    pub missed: AtomicU64,
    /// Appends or syncs that failed.
    pub failures: AtomicU64,
    /// Checkpoints signed.
    pub checkpoints: AtomicU64,
}

/// The running audit log.
#[derive(Debug)]
pub struct Audit {
    log: Mutex<Log>,
    /// When the latest checkpoint was signed (Unix seconds; 0: none known).
    checkpoint_at: std::sync::atomic::AtomicI64,
    verifier_key: String,
    pub counters: Counters,
}

impl Audit {
    /// Open the log (creating it and its key on first use). A log that contradicts its own
    /// checkpoints is opened anyway, refusing to sign; the reason is returned, to be reported
    /// as a critical event.
    pub fn open(s: &AuditSettings) -> Result<(Arc<Audit>, Option<String>)> {
        let (key, created) = load_or_create_key(&s.key)
            .with_context(|| format!("the audit log's key {}", s.key.display()))?;
        if created {
            tracing::info!(key = %s.key.display(), "created the audit log's signing key");
        }
        let (log, opened) = Log::open(&s.dir, &s.origin, &key, None)
            .with_context(|| format!("opening the audit log in {}", s.dir.display()))?;
        let verifier_key = log.signer().verifier_key();
        tracing::info!(
            entries = opened.entries,
            origin = %s.origin,
            key = %verifier_key,
            "audit log open"
        );
        if let Some(reason) = &opened.refusing {
            tracing::error!("the audit log refuses to sign: {reason}");
        }
        Ok((
            Arc::new(Audit {
                checkpoint_at: std::sync::atomic::AtomicI64::new(
                    std::fs::metadata(s.dir.join(tollgate_audit::log::CHECKPOINT))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
                ),
                log: Mutex::new(log),
                verifier_key,
                counters: Counters::default(),
            }),
            opened.refusing,
        ))
    }

    /// The sequence number the event bus should continue from (the log may be ahead of the
    /// event file after a crash).
    pub fn last_seq(&self) -> Option<u64> {
        self.log.lock().last_seq()
    }

    /// When the latest checkpoint was signed (Unix seconds), if known.
    pub fn last_checkpoint_at(&self) -> Option<i64> {
        Some(self.checkpoint_at.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// The log's public key, in the signed-note verifier-key form.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Run `f` with the log locked (on a blocking thread: it may read files).
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.log.lock())
    }

    /// Sign a checkpoint if entries were added since the last one.
    pub fn checkpoint(&self) -> Result<Signed, tollgate_audit::AuditError> {
        let before = self.log.lock().latest().map(|s| s.size);
        let s = self.log.lock().checkpoint()?;
        if before != Some(s.size) {
            self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            self.checkpoint_at.store(
                time::OffsetDateTime::now_utc().unix_timestamp(),
                Ordering::Relaxed,
            );
        }
        Ok(s)
    }

    /// Start the writer thread on `consumer` (the event bus's durable consumer). It ends when
    /// the bus does, after a last sync and checkpoint.
    pub fn start_writer(
        self: &Arc<Self>,
        consumer: Consumer,
    ) -> Result<std::thread::JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || me.write(consumer))
            .context("starting the audit-log writer")
    }

    fn write(&self, mut consumer: Consumer) {
        let mut next_seq = self.last_seq().map(|s| s.saturating_add(1));
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut acks: Vec<Ack> = Vec::new();
        while let Some(first) = consumer.blocking_recv() {
            let mut d = Some(first);
            while let Some(delivery) = d.take() {
                self.take(delivery, &mut next_seq, &mut batch, &mut acks);
                if batch.len() < BATCH {
                    d = consumer.try_recv();
                }
            }
            self.commit(&mut batch, &mut acks);
        }
        self.commit(&mut batch, &mut acks);
        match self.checkpoint() {
            Ok(s) => tracing::info!(size = s.size, "audit log closed with a signed checkpoint"),
            Err(e) => tracing::warn!("audit log closed without a final checkpoint: {e}"),
        }
    }

    /// Turn one delivery into entries.
    fn take(
        &self,
        d: Delivery,
        next_seq: &mut Option<u64>,
        batch: &mut Vec<Vec<u8>>,
        acks: &mut Vec<Ack>,
    ) {
        let (event, ack) = match d {
            Delivery::Event(e) => (e, None),
            Delivery::Durable(e, a) => (e, Some(a)),
            Delivery::Gap {
                first_seq,
                last_seq,
                ..
            } => {
                batch.push(entry::gap(
                    &entry::now_rfc3339(),
                    first_seq,
                    last_seq,
                    entry::GAP_QUEUE_FULL,
                ));
                self.counters.gaps.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .missed
                    .fetch_add(last_seq.saturating_sub(first_seq) + 1, Ordering::Relaxed);
                *next_seq = last_seq.checked_add(1);
                return;
            }
        };
        if let Some(want) = *next_seq {
            if event.seq > want {
                // Numbered before a restart, never received (the event file was ahead).
                batch.push(entry::gap(
                    &event.ts,
                    want,
                    event.seq - 1,
                    entry::GAP_RESTART,
                ));
                self.counters.gaps.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .missed
                    .fetch_add(event.seq - want, Ordering::Relaxed);
            }
        }
        *next_seq = event.seq.checked_add(1);
        batch.push(entry::event(&event));
        if let Some(a) = ack {
            acks.push(a);
        }
    }

    /// Append and fsync the batch, then release the written-ahead actions it holds. On a
    /// failure their acks are dropped: those actions are refused.
    fn commit(&self, batch: &mut Vec<Vec<u8>>, acks: &mut Vec<Ack>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let result = {
            let mut log = self.log.lock();
            batch
                .iter()
                .try_for_each(|e| log.append(e).map(|_| ()))
                .and_then(|()| log.sync())
        };
        batch.clear();
        match result {
            Ok(()) => {
                self.counters.entries.fetch_add(n, Ordering::Relaxed);
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                for a in acks.drain(..) {
                    a.durable();
                }
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("writing the audit log: {e}");
                acks.clear();
            }
        }
    }

    /// Sign a checkpoint every `interval` while entries are added, until `stop`.
    pub async fn checkpoints(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.checkpoint()).await {
                Ok(Ok(_)) => warned = false,
                Ok(Err(e)) => {
                    if !warned {
                        tracing::error!("the audit log signs no checkpoint: {e}");
                        warned = true;
                    }
                }
                Err(e) => tracing::error!("audit checkpoint task: {e}"),
            }
        }
    }
}
