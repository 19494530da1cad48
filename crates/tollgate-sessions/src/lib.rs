//! The durable session store: persistent MQTT sessions, their queued and in-flight QoS 1/2
//! messages, incoming QoS 2 packet ids, retained messages and wills, written by one thread with
//! group commit, in two places:
//!
//! - `sessions.db` (SQLite, WAL, `synchronous = FULL`): sessions, subscriptions, retained
//!   messages, wills and metadata;
//! - `sessions.db.journal/` (the `journal` module): an append-only log of the per-message
//!   changes: queued messages, their removal, QoS 2 delivery state and incoming QoS 2 packet
//!   ids. Appending a record costs a copy and a CRC, where a SQLite row costs a B-tree update.
//!
//! Connections hand changes over with [`Durability::submit`] (a channel send, never a disk
//! wait) and get a ticket. The writer thread takes everything queued and writes it as one group:
//! first the SQLite ops in one transaction (skipped when there are none, as on the hot path),
//! then the journal records and a commit record with one fsync; then it advances the watermark
//! that connections wait on before sending their acknowledgements. A message queued and
//! acknowledged within the same batch never reaches the disk at all.
//!
//! Crash points: nothing of a group is acknowledged before both writes are durable. A crash
//! after the SQLite commit but before the journal's leaves sessions, subscriptions, retained
//! messages and wills of the group without its messages, which were not acknowledged (a
//! resent retained PUBLISH writes the same row again); it never leaves an incoming QoS 2 id
//! without the fan-out it guards, because both are in the journal's one commit. On start the
//! journal is replayed (enqueues minus removals, per session in order), and entries of a
//! session SQLite no longer has are dropped; session ids are never reused (the highest is kept
//! in `meta`), so a dead session's records cannot come back to a new one.
//!
//! A store written before the journal (schema version 2, queue rows in SQLite) has its queue
//! and incoming QoS 2 rows moved into the journal once, on the first start.
//!
//! When a commit fails (a full disk, say) the writer keeps the batch, reports itself unhealthy
//! (the broker then refuses new messages that need the disk) and retries every 250 ms; nothing
//! that was acknowledged is lost, and the store recovers by itself when the disk has room.
//!
//! This crate owns the session store and nothing else: it implements the broker's persistence
//! port and knows nothing of devices, certificates or the registry (`tollgate-registry`), which
//! it must not depend on. Its I/O runs on its own writer thread, never on a connection's task.

#![forbid(unsafe_code)]

mod journal;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::watch;
use tollgate_broker::persist::{
    unix_ms, Durability, Op, Recovered, RecoveredEntry, RecoveredRetained, RecoveredSession,
    StoredMessage, StoredWill,
};

/// Errors from the session store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The store file does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An operating-system error outside the database.
    #[error("{0}")]
    Io(String),
    /// The message journal is damaged (a corrupt record before committed ones, a wrong magic
    /// or version, an absurd length) or unreadable.
    #[error("journal damaged: {0}")]
    Journal(String),
    /// The database was written by a newer Tollgate.
    #[error("database schema version {found} is newer than this binary understands ({supported})")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Version this binary writes.
        supported: i64,
    },
}

/// 2: `retained.device`, the device that published each retained message (per-device caps).
/// 3: queued messages and incoming QoS 2 ids live in the journal (`queue` and `inbound_qos2`
/// stay, empty, for migration); `meta.max_session_id` keeps session ids from being reused.
const SCHEMA_VERSION: i64 = 3;
/// Most ops applied in one transaction (bounds a commit's latency under a flood).
const MAX_BATCH_OPS: usize = 64 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    expiry_secs INTEGER NOT NULL,
    expires_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS subscriptions (
    session INTEGER NOT NULL,
    filter TEXT NOT NULL,
    opts INTEGER NOT NULL,
    sub_id INTEGER NOT NULL,
    PRIMARY KEY (session, filter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    session INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    sub_ids BLOB NOT NULL,
    msg BLOB NOT NULL,
    expires_at_ms INTEGER,
    packet_id INTEGER,
    released INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbound_qos2 (
    session INTEGER NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (session, packet_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY,
    msg BLOB NOT NULL,
    expires_at_ms INTEGER,
    device TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS wills (
    session INTEGER PRIMARY KEY,
    msg BLOB NOT NULL,
    delay_secs INTEGER NOT NULL,
    serial TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// What connections send the writer.
enum Msg {
    Ops(u64, Vec<Op>),
    /// Write what is queued, then stop.
    Close,
}

/// Called from the writer thread when the store stops (`Err`) or starts again (`Ok`) writing.
pub type HealthHook = Box<dyn Fn(Result<Duration, String>) + Send + 'static>;

/// Group-commit counters.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Ops written (after cancelling those acknowledged within their batch).
    pub ops_written: AtomicU64,
    /// Ops that cancelled out within a batch (queued and acknowledged before the commit).
    pub ops_cancelled: AtomicU64,
    /// Commits that failed (and were retried).
    pub failures: AtomicU64,
    /// Successful commits by duration: counts per bucket of [`COMMIT_BUCKETS_SECS`] (not
    /// cumulative), the last one for anything longer.
    pub commit_buckets: [AtomicU64; COMMIT_BUCKETS_SECS.len() + 1],
    /// Total duration of successful commits, microseconds.
    pub commit_micros: AtomicU64,
}

/// Upper bounds of the commit-duration buckets, seconds.
pub const COMMIT_BUCKETS_SECS: [f64; 12] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl CommitStats {
    fn observe_commit(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = COMMIT_BUCKETS_SECS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS_SECS.len());
        if let Some(b) = self.commit_buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.commit_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The SQLite session store. Cheap to share (`Arc`); dropping the last handle stops the writer
/// after it has written everything submitted.
pub struct SqliteSessionStore {
    /// Lock-free for senders (`std::sync::mpsc` is a lock-free queue): no lock shared by all
    /// connections on the per-message path.
    tx: Sender<Msg>,
    next_ticket: AtomicU64,
    watermark: watch::Receiver<u64>,
    healthy: Arc<AtomicBool>,
    stats: Arc<CommitStats>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteSessionStore").finish_non_exhaustive()
    }
}

fn open_db(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    conn.execute_batch(SCHEMA)?;
    if version < 2 && !has_column(&conn, "retained", "device")? {
        // Version 1 kept no owner: its retained messages count towards the totals only.
        conn.execute_batch("ALTER TABLE retained ADD COLUMN device TEXT")?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(conn)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, StoreError> {
    let mut st = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let mut rows = st.query([table])?;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        if name == column {
            return Ok(true);
        }
    }
    Ok(false)
}

impl SqliteSessionStore {
    /// Open (or create) the store at `path`, read back everything in it, and start the writer.
    pub fn open(
        path: &Path,
        on_health: HealthHook,
    ) -> Result<(Arc<SqliteSessionStore>, Recovered), StoreError> {
        Self::open_with(path, on_health, journal::Limits::default())
    }

    fn open_with(
        path: &Path,
        on_health: HealthHook,
        limits: journal::Limits,
    ) -> Result<(Arc<SqliteSessionStore>, Recovered), StoreError> {
        let mut conn = open_db(path)?;
        let dir = journal::dir_for(path);
        migrate_queue(&mut conn, &dir)?;
        // Every session id in use counts as used (a store from before `meta` kept it).
        conn.execute(SYNC_MAX_SESSION_ID, [])?;
        let (recovered, replayed) = load(&conn, &dir)?;
        let journal = journal::Journal::start(&dir, &replayed, limits)?;
        drop(replayed);
        let (tx, rx) = std::sync::mpsc::channel();
        let (wm_tx, wm_rx) = watch::channel(0u64);
        let healthy = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(CommitStats::default());
        let writer = Writer {
            conn,
            rx,
            watermark: wm_tx,
            healthy: Arc::clone(&healthy),
            stats: Arc::clone(&stats),
            on_health,
            committed_upto: 0,
            out_of_order: BTreeSet::new(),
            journal,
            buf: Vec::new(),
            sqlite_done: false,
        };
        let handle = std::thread::Builder::new()
            .name("tollgate-store".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Io(format!("starting the store writer: {e}")))?;
        Ok((
            Arc::new(SqliteSessionStore {
                tx,
                next_ticket: AtomicU64::new(1),
                watermark: wm_rx,
                healthy,
                stats,
                writer: Mutex::new(Some(handle)),
            }),
            recovered,
        ))
    }

    /// Group-commit counters.
    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// Write what was submitted so far and stop the writer thread (blocks until it has; a
    /// store that cannot write gives up after one more attempt).
    pub fn close(&self) {
        let _ = self.tx.send(Msg::Close);
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        let st = &self.stats;
        tracing::info!(
            commits = st.commits.load(Ordering::Relaxed),
            ops_written = st.ops_written.load(Ordering::Relaxed),
            ops_cancelled = st.ops_cancelled.load(Ordering::Relaxed),
            failures = st.failures.load(Ordering::Relaxed),
            "durable store closed"
        );
    }
}

impl Durability for SqliteSessionStore {
    fn submit(&self, ops: Vec<Op>) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Msg::Ops(ticket, ops)).is_err() {
            self.healthy.store(false, Ordering::Release);
        }
        ticket
    }

    fn watermark(&self) -> watch::Receiver<u64> {
        self.watermark.clone()
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

struct Writer {
    conn: Connection,
    rx: Receiver<Msg>,
    watermark: watch::Sender<u64>,
    healthy: Arc<AtomicBool>,
    stats: Arc<CommitStats>,
    on_health: HealthHook,
    /// Every ticket up to this one is on disk.
    committed_upto: u64,
    /// Committed tickets above a gap (a ticket taken but not yet sent).
    out_of_order: BTreeSet<u64>,
    journal: journal::Journal,
    /// The journal records of a group, reused from group to group.
    buf: Vec<u8>,
    /// The SQLite part of the group being retried is already committed.
    sqlite_done: bool,
}

/// Add a message's changes to the batch; false for [`Msg::Close`].
fn take(m: Msg, tickets: &mut Vec<u64>, ops: &mut Vec<Op>) -> bool {
    match m {
        Msg::Ops(t, o) => {
            tickets.push(t);
            ops.extend(o);
            true
        }
        Msg::Close => false,
    }
}

impl Writer {
    fn run(mut self) {
        let mut tickets: Vec<u64> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut failing_since: Option<Instant> = None;
        let mut open = true;
        while open || !ops.is_empty() {
            // Wait for work (or, while failing, for the retry interval).
            if ops.is_empty() {
                match self.rx.recv() {
                    Ok(m) => open &= take(m, &mut tickets, &mut ops),
                    Err(_) => break,
                }
            } else if failing_since.is_some() {
                match self.rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(m) => open &= take(m, &mut tickets, &mut ops),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }
            // Take everything else already queued: one transaction, one fsync.
            while ops.len() < MAX_BATCH_OPS {
                match self.rx.try_recv() {
                    Ok(m) => open &= take(m, &mut tickets, &mut ops),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let started = Instant::now();
            match self.commit(&ops) {
                Ok(()) => {
                    self.stats.observe_commit(started.elapsed());
                    ops.clear();
                    self.advance(&mut tickets);
                    if let Some(since) = failing_since.take() {
                        self.healthy.store(true, Ordering::Release);
                        tracing::warn!("durable store writes again");
                        (self.on_health)(Ok(since.elapsed()));
                    }
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        self.healthy.store(false, Ordering::Release);
                        tracing::error!(error = %e, "durable store cannot write; retrying");
                        (self.on_health)(Err(e.to_string()));
                    }
                    if !open {
                        // Shutting down with a disk that cannot take the batch: give up.
                        break;
                    }
                }
            }
        }
    }

    fn advance(&mut self, tickets: &mut Vec<u64>) {
        self.out_of_order.extend(tickets.drain(..));
        while self.out_of_order.first() == Some(&(self.committed_upto + 1)) {
            self.out_of_order.pop_first();
            self.committed_upto += 1;
        }
        let _ = self.watermark.send_replace(self.committed_upto);
    }

    fn commit(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        // Cancel messages queued and acknowledged within this batch.
        let mut enq: HashMap<(u64, u64), usize> = HashMap::new();
        let mut skip = vec![false; ops.len()];
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Enqueue { session, seq, .. } => {
                    enq.insert((*session, *seq), i);
                }
                Op::Dequeue { session, seq } => {
                    if let Some(j) = enq.remove(&(*session, *seq)) {
                        skip[j] = true;
                        skip[i] = true;
                    }
                }
                _ => {}
            }
        }
        let cancelled = skip.iter().filter(|s| **s).count();
        // SQLite first: a crash before the journal's fsync then leaves only changes that are
        // safe without their messages (see the crate doc). Skipped when the group has none.
        if !self.sqlite_done {
            let live = || ops.iter().zip(&skip).filter(|(_, s)| !**s).map(|(o, _)| o);
            if live().any(|o| !journal::is_journal_op(o)) {
                let tx = self.conn.transaction()?;
                for op in live().filter(|o| !journal::is_journal_op(o)) {
                    apply(&tx, op)?;
                }
                tx.commit()?;
            }
            self.sqlite_done = true;
        }
        self.buf.clear();
        let mut records = 0usize;
        for (op, _) in ops.iter().zip(&skip).filter(|(_, s)| !**s) {
            records += usize::from(journal::encode_op(op, &mut self.buf));
        }
        if records > 0 {
            journal::encode_commit(&mut self.buf);
            self.journal.append(&self.buf)?;
        }
        self.sqlite_done = false;
        for (op, _) in ops.iter().zip(&skip).filter(|(_, s)| !**s) {
            self.journal.note(op);
        }
        if self.buf.capacity() > BUF_KEEP_BYTES {
            self.buf = Vec::new();
        }
        self.journal.housekeep();
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .ops_written
            .fetch_add((ops.len() - cancelled) as u64, Ordering::Relaxed);
        self.stats
            .ops_cancelled
            .fetch_add(cancelled as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Record the highest session id in the table as used.
const SYNC_MAX_SESSION_ID: &str = "INSERT INTO meta (key, value)
    SELECT 'max_session_id', COALESCE(MAX(id), 0) FROM sessions WHERE true
    ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)";

/// A group's journal buffer above this capacity is freed after the group (a flood's batch
/// does not stay allocated).
const BUF_KEEP_BYTES: usize = 16 * 1024 * 1024;

fn sub_ids_from(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn apply(tx: &rusqlite::Transaction<'_>, op: &Op) -> Result<(), rusqlite::Error> {
    match op {
        Op::Session {
            id,
            device_id,
            client_id,
            expiry_secs,
            expires_at_ms,
        } => {
            tx.prepare_cached(
                "INSERT INTO sessions (id, device_id, client_id, expiry_secs, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET expiry_secs = ?4, expires_at_ms = ?5",
            )?
            .execute(params![
                i(*id),
                &**device_id,
                &**client_id,
                expiry_secs,
                expires_at_ms
            ])?;
            // Session ids are never reused: journal records of a deleted session must not
            // come back to a new one.
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('max_session_id', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            )?
            .execute([i(*id)])?;
        }
        Op::DeleteSession { id } => {
            for sql in [
                "DELETE FROM sessions WHERE id = ?1",
                "DELETE FROM subscriptions WHERE session = ?1",
                "DELETE FROM queue WHERE session = ?1",
                "DELETE FROM inbound_qos2 WHERE session = ?1",
                "DELETE FROM wills WHERE session = ?1",
            ] {
                tx.prepare_cached(sql)?.execute([i(*id)])?;
            }
        }
        Op::Subscribe {
            session,
            filter,
            opts,
            sub_id,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO subscriptions (session, filter, opts, sub_id)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![i(*session), filter, opts, sub_id])?;
        }
        Op::Unsubscribe { session, filter } => {
            tx.prepare_cached("DELETE FROM subscriptions WHERE session = ?1 AND filter = ?2")?
                .execute(params![i(*session), filter])?;
        }
        // Journal ops never reach SQLite.
        Op::Enqueue { .. }
        | Op::Dequeue { .. }
        | Op::Sent { .. }
        | Op::Released { .. }
        | Op::Inbound { .. } => {}
        Op::Retain { topic, msg, device } => match msg {
            Some(m) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO retained (topic, msg, expires_at_ms, device) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![topic, &m.blob[..], m.expires_at_ms, device])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
                    .execute([topic])?;
            }
        },
        Op::Will { session, will } => match will {
            Some(w) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO wills (session, msg, delay_secs, serial)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    i(*session),
                    &w.msg.blob[..],
                    w.delay_secs,
                    w.serial
                ])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM wills WHERE session = ?1")?
                    .execute([i(*session)])?;
            }
        },
    }
    Ok(())
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn bytes(v: Vec<u8>) -> tollgate_mqtt::Bytes {
    tollgate_mqtt::Bytes::from(v)
}

/// Move the queue and incoming QoS 2 rows of a store written before the journal into it (one
/// new segment, fsynced), then delete them from SQLite. A crash in between repeats the move on
/// the next start: the records are keyed, so a second copy replaces the first.
fn migrate_queue(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    let mut entries = std::collections::BTreeMap::new();
    {
        let mut st = conn.prepare(
            "SELECT session, seq, qos, retain, sub_ids, msg, expires_at_ms, packet_id, released
             FROM queue",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let sub_ids: Vec<u8> = r.get(4)?;
            entries.insert(
                (u(r.get(0)?), u(r.get(1)?)),
                journal::Entry {
                    qos: r.get(2)?,
                    retain: r.get(3)?,
                    sub_ids: sub_ids_from(&sub_ids),
                    msg: StoredMessage {
                        blob: bytes(r.get(5)?),
                        expires_at_ms: r.get(6)?,
                    },
                    packet_id: r.get(7)?,
                    released: r.get(8)?,
                },
            );
        }
    }
    let mut inbound = Vec::new();
    {
        let mut st = conn.prepare("SELECT session, packet_id FROM inbound_qos2")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            inbound.push((u(r.get(0)?), r.get::<_, u16>(1)?));
        }
    }
    if entries.is_empty() && inbound.is_empty() {
        return Ok(());
    }
    journal::rewrite_all(dir, &entries, &inbound, false)?;
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM queue", [])?;
    tx.execute("DELETE FROM inbound_qos2", [])?;
    tx.commit()?;
    tracing::info!(
        messages = entries.len(),
        inbound_qos2 = inbound.len(),
        "moved queued messages from sessions.db into the journal"
    );
    Ok(())
}

/// Read everything back: sessions and the rest from SQLite, queues and incoming QoS 2 ids
/// from the journal (repairing a torn tail). Journal entries of sessions SQLite does not have
/// are dropped (and left out of what the journal keeps live).
fn load(conn: &Connection, dir: &Path) -> Result<(Recovered, journal::Replayed), StoreError> {
    let mut rec = Recovered::default();
    let mut index: HashMap<u64, usize> = HashMap::new();
    {
        let mut st = conn.prepare(
            "SELECT id, device_id, client_id, expiry_secs, expires_at_ms FROM sessions ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(RecoveredSession {
                id: u(r.get(0)?),
                device_id: r.get(1)?,
                client_id: r.get(2)?,
                expiry_secs: r.get(3)?,
                expires_at_ms: r.get(4)?,
                subscriptions: Vec::new(),
                queue: Vec::new(),
                inbound_qos2: Vec::new(),
                will: None,
            })
        })?;
        for s in rows {
            let s = s?;
            rec.max_session_id = rec.max_session_id.max(s.id);
            index.insert(s.id, rec.sessions.len());
            rec.sessions.push(s);
        }
    }
    let kept: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'max_session_id'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    rec.max_session_id = rec.max_session_id.max(kept.map_or(0, u));
    {
        let mut st = conn.prepare("SELECT session, filter, opts, sub_id FROM subscriptions")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            if let Some(&k) = index.get(&u(r.get(0)?)) {
                rec.sessions[k]
                    .subscriptions
                    .push((r.get(1)?, r.get(2)?, r.get(3)?));
            }
        }
    }
    let mut rep = journal::replay(dir, true)?;
    rec.max_seq = rep.max_seq;
    let mut dropped = 0usize;
    rep.entries.retain(|(session, seq), (e, _)| {
        let Some(&k) = index.get(session) else {
            dropped += 1;
            return false;
        };
        // BTreeMap order: by session, then sequence, so each queue comes out in order.
        rec.sessions[k].queue.push(RecoveredEntry {
            seq: *seq,
            qos: e.qos,
            retain: e.retain,
            sub_ids: e.sub_ids.clone(),
            msg: e.msg.clone(),
            packet_id: e.packet_id,
            released: e.released,
        });
        true
    });
    rep.inbound.retain(|(session, pid), _| {
        let Some(&k) = index.get(session) else {
            dropped += 1;
            return false;
        };
        rec.sessions[k].inbound_qos2.push(*pid);
        true
    });
    if dropped > 0 {
        tracing::info!(
            records = dropped,
            "journal records of sessions that no longer exist dropped"
        );
    }
    {
        let mut st = conn.prepare("SELECT session, msg, delay_secs, serial FROM wills")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            if let Some(&k) = index.get(&u(r.get(0)?)) {
                rec.sessions[k].will = Some(StoredWill {
                    msg: StoredMessage {
                        blob: bytes(r.get(1)?),
                        expires_at_ms: None,
                    },
                    delay_secs: r.get(2)?,
                    serial: r.get(3)?,
                });
            }
        }
    }
    {
        let mut st = conn.prepare("SELECT topic, msg, expires_at_ms, device FROM retained")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            rec.retained.push(RecoveredRetained {
                topic: r.get(0)?,
                msg: StoredMessage {
                    blob: bytes(r.get(1)?),
                    expires_at_ms: r.get(2)?,
                },
                device: r.get(3)?,
            });
        }
    }
    Ok((rec, rep))
}

/// What `tollgate store check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    /// SQLite's own integrity check ("ok" when sound).
    pub integrity: String,
    /// Persistent sessions.
    pub sessions: u64,
    /// Sessions whose expiry has passed (removed on the next start or compact).
    pub expired_sessions: u64,
    /// Subscriptions.
    pub subscriptions: u64,
    /// Queued messages.
    pub queued_messages: u64,
    /// Retained messages.
    pub retained: u64,
    /// Wills pending.
    pub wills: u64,
    /// Rows that belong to no session (removed by compact).
    pub orphans: u64,
    /// Stored messages that do not decode as MQTT PUBLISH packets.
    pub undecodable: u64,
    /// File size, bytes (database plus WAL plus journal).
    pub bytes: u64,
    /// The message journal: "ok" when every committed record reads back, else what is wrong.
    pub journal: String,
    /// Bytes of an uncommitted journal tail (a crash mid-write, or a write in progress while
    /// the server runs); cut on the next start, not damage.
    pub journal_torn_bytes: u64,
}

impl CheckReport {
    /// Whether the store is sound (orphans and expired sessions are housekeeping, not damage).
    pub fn ok(&self) -> bool {
        self.integrity == "ok" && self.undecodable == 0 && self.journal == "ok"
    }
}

fn file_bytes(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum::<u64>()
        + journal::bytes(&journal::dir_for(path))
}

/// The session ids in the store.
fn session_ids(conn: &Connection) -> Result<std::collections::HashSet<u64>, StoreError> {
    let mut st = conn.prepare("SELECT id FROM sessions")?;
    let rows = st.query_map([], |r| r.get::<_, i64>(0))?;
    let mut out = std::collections::HashSet::new();
    for r in rows {
        out.insert(u(r?));
    }
    Ok(out)
}

/// Verify the store at `path`: SQLite integrity, the journal reads back, every stored message
/// decodes, and rows and journal records that belong to no session. Changes nothing (a torn
/// journal tail is reported, not cut).
pub fn check(path: &Path) -> Result<CheckReport, StoreError> {
    if !path.exists() {
        return Err(StoreError::NotFound(path.display().to_string()));
    }
    let conn = open_db(path)?;
    let count = |sql: &str| -> Result<u64, StoreError> {
        Ok(u(conn.query_row(sql, [], |r| r.get::<_, i64>(0))?))
    };
    let integrity: Vec<String> = {
        let mut st = conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut undecodable = 0;
    let ids = session_ids(&conn)?;
    let (journal, journal_torn_bytes, queued, journal_orphans) =
        match journal::replay(&journal::dir_for(path), false) {
            Ok(rep) => {
                let mut orphans = 0u64;
                for ((s, _), (e, _)) in &rep.entries {
                    if e.msg.decode().is_none() {
                        undecodable += 1;
                    }
                    orphans += u64::from(!ids.contains(s));
                }
                orphans += rep.inbound.keys().filter(|(s, _)| !ids.contains(s)).count() as u64;
                (
                    "ok".to_owned(),
                    rep.torn_bytes,
                    rep.entries.len() as u64,
                    orphans,
                )
            }
            Err(e) => (e.to_string(), 0, 0, 0),
        };
    for sql in [
        "SELECT msg FROM queue",
        "SELECT msg FROM retained",
        "SELECT msg FROM wills",
    ] {
        let mut st = conn.prepare(sql)?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let m = StoredMessage {
                blob: bytes(r.get(0)?),
                expires_at_ms: None,
            };
            if m.decode().is_none() {
                undecodable += 1;
            }
        }
    }
    let now = unix_ms();
    Ok(CheckReport {
        integrity: integrity.join("; "),
        sessions: count("SELECT COUNT(*) FROM sessions")?,
        expired_sessions: u(conn.query_row(
            "SELECT COUNT(*) FROM sessions WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
            [now],
            |r| r.get::<_, i64>(0),
        )?),
        subscriptions: count("SELECT COUNT(*) FROM subscriptions")?,
        queued_messages: count("SELECT COUNT(*) FROM queue")? + queued,
        retained: count("SELECT COUNT(*) FROM retained")?,
        wills: count("SELECT COUNT(*) FROM wills")?,
        orphans: count(ORPHANS_COUNT)? + journal_orphans,
        undecodable,
        bytes: file_bytes(path),
        journal,
        journal_torn_bytes,
    })
}

const ORPHANS_COUNT: &str = "SELECT
    (SELECT COUNT(*) FROM subscriptions WHERE session NOT IN (SELECT id FROM sessions)) +
    (SELECT COUNT(*) FROM queue WHERE session NOT IN (SELECT id FROM sessions)) +
    (SELECT COUNT(*) FROM inbound_qos2 WHERE session NOT IN (SELECT id FROM sessions)) +
    (SELECT COUNT(*) FROM wills WHERE session NOT IN (SELECT id FROM sessions))";

/// What `tollgate store compact` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactReport {
    /// Expired sessions removed.
    pub expired_sessions: u64,
    /// Expired messages removed (queued and retained).
    pub expired_messages: u64,
    /// Rows that belonged to no session, removed.
    pub orphans: u64,
    /// Bytes before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
}

/// Drop expired sessions and messages and orphaned rows, then rewrite the file compactly and
/// the journal into one segment of its live records. Run it while the broker is stopped.
pub fn compact(path: &Path) -> Result<CompactReport, StoreError> {
    if !path.exists() {
        return Err(StoreError::NotFound(path.display().to_string()));
    }
    let bytes_before = file_bytes(path);
    let mut conn = open_db(path)?;
    let dir = journal::dir_for(path);
    migrate_queue(&mut conn, &dir)?;
    let now = unix_ms();
    let tx = conn.transaction()?;
    let expired: Vec<i64> = {
        let mut st = tx.prepare(
            "SELECT id FROM sessions WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
        )?;
        let rows = st.query_map([now], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in &expired {
        apply(&tx, &Op::DeleteSession { id: u(*id) })?;
    }
    let orphans = u(tx.query_row(ORPHANS_COUNT, [], |r| r.get::<_, i64>(0))?);
    for t in ["subscriptions", "queue", "inbound_qos2", "wills"] {
        tx.execute(
            &format!("DELETE FROM {t} WHERE session NOT IN (SELECT id FROM sessions)"),
            [],
        )?;
    }
    let mut expired_messages = 0;
    for t in ["queue", "retained"] {
        expired_messages += tx.execute(
            &format!("DELETE FROM {t} WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1"),
            [now],
        )? as u64;
    }
    tx.commit()?;
    let ids = session_ids(&conn)?;
    let mut orphans = orphans;
    if !journal::list_segments(&dir)?.is_empty() {
        let rep = journal::replay(&dir, true)?;
        let mut entries = std::collections::BTreeMap::new();
        for ((s, q), (e, _)) in rep.entries {
            if !ids.contains(&s) {
                orphans += 1;
            } else if e.msg.expires_at_ms.is_some_and(|t| t <= now) {
                expired_messages += 1;
            } else {
                entries.insert((s, q), e);
            }
        }
        let mut inbound = Vec::new();
        for (s, pid) in rep.inbound.into_keys() {
            if ids.contains(&s) {
                inbound.push((s, pid));
            } else {
                orphans += 1;
            }
        }
        journal::rewrite_all(&dir, &entries, &inbound, true)?;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")?;
    drop(conn);
    Ok(CompactReport {
        expired_sessions: expired.len() as u64,
        expired_messages,
        orphans,
        bytes_before,
        bytes_after: file_bytes(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_mqtt::{Publish, QoS};

    fn msg(payload: &'static str) -> StoredMessage {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: "t/1".into(),
            packet_id: 1,
            payload: tollgate_mqtt::Bytes::from_static(payload.as_bytes()),
            ..Default::default()
        };
        StoredMessage::encode(&p, None).unwrap()
    }

    fn enqueue(seq: u64, payload: &'static str) -> Op {
        Op::Enqueue {
            session: 7,
            seq,
            qos: 1,
            retain: false,
            sub_ids: vec![3],
            msg: msg(payload),
        }
    }

    #[test]
    fn changes_survive_a_reopen_and_an_acknowledged_message_never_reaches_the_disk() {
        let dir = std::env::temp_dir().join(format!("tollgate-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessions.db");
        let (store, rec) = SqliteSessionStore::open(&path, Box::new(|_| {})).unwrap();
        assert!(rec.sessions.is_empty());
        store.submit(vec![Op::Session {
            id: 7,
            device_id: "d".into(),
            client_id: "c".into(),
            expiry_secs: 600,
            expires_at_ms: None,
        }]);
        // Queued and acknowledged in one batch: cancels out.
        let t = store.submit(vec![
            enqueue(1, "gone"),
            enqueue(2, "kept"),
            Op::Dequeue { session: 7, seq: 1 },
            Op::Inbound {
                session: 7,
                packet_id: 9,
                present: true,
            },
        ]);
        wait(&store, t);
        assert!(store.stats().ops_cancelled.load(Ordering::Relaxed) >= 2);
        store.close();

        let (_store, rec) = SqliteSessionStore::open(&path, Box::new(|_| {})).unwrap();
        assert_eq!(rec.sessions.len(), 1);
        let s = &rec.sessions[0];
        assert_eq!((s.id, s.expiry_secs), (7, 600));
        assert_eq!(s.queue.len(), 1);
        assert_eq!(s.queue[0].seq, 2);
        assert_eq!(s.queue[0].sub_ids, vec![3]);
        assert_eq!(&s.queue[0].msg.decode().unwrap().payload[..], b"kept");
        assert_eq!(s.inbound_qos2, vec![9]);
        assert_eq!(rec.max_seq, 2);
        let report = check(&path).unwrap();
        assert!(report.ok(), "{report:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_version_1_store_gains_retained_owners_and_keeps_its_retained_messages() {
        let dir = std::env::temp_dir().join(format!("tollgate-store-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessions.db");
        {
            // What version 1 wrote: no owner column.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE retained (topic TEXT PRIMARY KEY, msg BLOB NOT NULL, expires_at_ms INTEGER) WITHOUT ROWID;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO retained (topic, msg) VALUES ('t/old', ?1)",
                [&msg("old").blob[..]],
            )
            .unwrap();
        }
        let (store, rec) = SqliteSessionStore::open(&path, Box::new(|_| {})).unwrap();
        assert_eq!(rec.retained.len(), 1);
        assert_eq!(
            (
                rec.retained[0].topic.as_str(),
                rec.retained[0].device.as_deref()
            ),
            ("t/old", None)
        );
        let t = store.submit(vec![Op::Retain {
            topic: "t/new".into(),
            msg: Some(msg("new")),
            device: Some("sensor-1".into()),
        }]);
        let mut wm = store.watermark();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), wm.wait_for(|w| *w >= t))
                .await
                .unwrap()
                .unwrap();
        });
        store.close();
        let (_store, rec) = SqliteSessionStore::open(&path, Box::new(|_| {})).unwrap();
        let mut got: Vec<(String, Option<String>)> = rec
            .retained
            .iter()
            .map(|r| (r.topic.clone(), r.device.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("t/new".to_owned(), Some("sensor-1".to_owned())),
                ("t/old".to_owned(), None)
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn wait(store: &SqliteSessionStore, t: u64) {
        let mut wm = store.watermark();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), wm.wait_for(|w| *w >= t))
                .await
                .unwrap()
                .unwrap();
        });
    }

    fn session(id: u64) -> Op {
        Op::Session {
            id,
            device_id: "d".into(),
            client_id: format!("c{id}").into(),
            expiry_secs: 600,
            expires_at_ms: None,
        }
    }

    #[test]
    fn a_version_2_store_keeps_its_queued_messages_by_moving_them_into_the_journal() {
        let dir = std::env::temp_dir().join(format!("tollgate-store-v2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessions.db");
        {
            // What version 2 wrote: the queue and incoming QoS 2 ids in SQLite.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO sessions (id, device_id, client_id, expiry_secs) VALUES (7, 'd', 'c', 600);
                 INSERT INTO inbound_qos2 (session, packet_id) VALUES (7, 11);",
            )
            .unwrap();
            for (seq, body, pid) in [(5i64, "first", Some(3i64)), (6, "second", None)] {
                conn.execute(
                    "INSERT INTO queue (session, seq, qos, retain, sub_ids, msg, expires_at_ms, packet_id, released)
                     VALUES (7, ?1, 2, 0, ?2, ?3, NULL, ?4, 1)",
                    params![seq, vec![0u8, 0, 0, 9], &msg(body).blob[..], pid],
                )
                .unwrap();
            }
        }
        for round in 0..2 {
            let (store, rec) = SqliteSessionStore::open(&path, Box::new(|_| {})).unwrap();
            assert_eq!(rec.sessions.len(), 1, "round {round}");
            let q = &rec.sessions[0].queue;
            type Row = (u64, Vec<u8>, Option<u16>, bool, Vec<u32>);
            let got: Vec<Row> = q
                .iter()
                .map(|e| {
                    (
                        e.seq,
                        e.msg.decode().unwrap().payload.to_vec(),
                        e.packet_id,
                        e.released,
                        e.sub_ids.clone(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    (5, b"first".to_vec(), Some(3), true, vec![9]),
                    (6, b"second".to_vec(), None, true, vec![9])
                ],
                "round {round}"
            );
            assert_eq!(rec.sessions[0].inbound_qos2, [11], "round {round}");
            assert_eq!(rec.max_seq, 6);
            store.close();
            // Moved, not copied: SQLite's queue is empty after the first start.
            let conn = Connection::open(&path).unwrap();
            let n: i64 = conn
                .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0);
        }
        let report = check(&path).unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.queued_messages, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queued_messages_of_a_deleted_session_do_not_come_back_to_a_new_one() {
        let dir = std::env::temp_dir().join(format!("tollgate-store-del-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sessions.db");
        let (store, _) = SqliteSessionStore::open(&path, Box::new(|_| {})).unwrap();
        store.submit(vec![session(6), session(7)]);
        store.submit(vec![enqueue(1, "of the old session 7")]);
        let mut e6 = enqueue(2, "of session 6");
        if let Op::Enqueue { session, .. } = &mut e6 {
            *session = 6;
        }
        let t = store.submit(vec![e6]);
        wait(&store, t);
        let t = store.submit(vec![Op::DeleteSession { id: 7 }]);
        wait(&store, t);
        store.close();

        let (store, rec) = SqliteSessionStore::open(&path, Box::new(|_| {})).unwrap();
        assert_eq!(rec.sessions.len(), 1);
        assert_eq!(rec.sessions[0].queue.len(), 1);
        // The broker numbers the next session after this: 7 is never handed out again.
        assert_eq!(rec.max_session_id, 7);
        let report = check(&path).unwrap();
        assert!(report.ok(), "{report:?}");
        // The old session's record is still in the journal (its segment is pinned by
        // session 6), and counted as an orphan until a compact.
        assert_eq!(report.orphans, 1, "{report:?}");
        store.close();
        let c = compact(&path).unwrap();
        assert_eq!(c.orphans, 1, "{c:?}");
        let report = check(&path).unwrap();
        assert_eq!(
            (report.orphans, report.queued_messages),
            (0, 1),
            "{report:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
