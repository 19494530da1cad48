//! The message journal: an append-only log of the hot, per-message changes (queued messages,
//! their removal, QoS 2 delivery state, and incoming QoS 2 packet ids), in segment files beside
//! `sessions.db`.
//!
//! Layout: `<store file>.journal/` holds segments named `<20-digit number>.seg`. A segment starts
//! with a 16-byte header (the magic `TGJOURNL`, a little-endian `u32` format version, a reserved
//! `u32`), followed by records: a `u32` body length, the body's CRC-32 (both little-endian), and
//! the body, whose first byte is the record kind. Every group commit appends its records and a
//! `Commit` record, then fsyncs once: on replay, records count only once a `Commit` follows
//! them, so a group commit is all-or-nothing.
//!
//! Damage: a torn tail (a crash in the middle of an append: a short record, a zeroed or
//! CRC-failing record in the last group, or a group without its commit) is truncated at the
//! last committed record with a warning. Each group is fsynced before the next is written, so
//! only the last group can be torn: a record that fails its CRC with a later complete group
//! after it, a record in an older segment that fails, a wrong
//! magic or version, an unknown record kind, and a length above [`MAX_RECORD_BYTES`] are a
//! [`StoreError::Journal`]: the journal never guesses, never panics, and never allocates more
//! than a record's checked length.
//!
//! Space: a segment is deleted once it and every older segment hold no live record (a queued
//! message or an incoming QoS 2 id still present); segments are deleted oldest first, so a
//! removal record is never deleted while the record it removes survives. When more than
//! [`Limits::max_segments`] segments exist and their dead records exceed `max_segments`
//! segments' worth, the live records of the oldest one are rewritten into the current segment
//! and the oldest is deleted, so the journal stays within about `(max_segments + 2) ×
//! segment_bytes` plus the live records themselves (a journal of mostly live records is not
//! rewritten over and over).
//!
//! This module does file I/O only; it runs on the store's writer thread (and in `open`,
//! `check` and `compact`), never on a connection's task.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tollgate_broker::persist::{Op, StoredMessage};

use crate::StoreError;

/// First bytes of every segment.
pub(crate) const MAGIC: &[u8; 8] = b"TGJOURNL";
/// The segment format this binary reads and writes.
pub(crate) const VERSION: u32 = 1;
/// Segment header length.
pub(crate) const HEADER_BYTES: u64 = 16;
/// Largest record body accepted: an MQTT packet (256 MiB) plus the record's own fields.
pub(crate) const MAX_RECORD_BYTES: u32 = 256 * 1024 * 1024 + 64 * 1024;

const K_ENQUEUE: u8 = 1;
const K_DEQUEUE: u8 = 2;
const K_SENT: u8 = 3;
const K_RELEASED: u8 = 4;
const K_INBOUND: u8 = 5;
const K_COMMIT: u8 = 6;

/// Segment size and count bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A segment at least this long is closed and a new one started.
    pub segment_bytes: u64,
    /// Above this many segments, the oldest one's live records are rewritten forward.
    pub max_segments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            segment_bytes: 64 * 1024 * 1024,
            max_segments: 8,
        }
    }
}

/// The journal directory of the store at `db`.
pub(crate) fn dir_for(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn corrupt(path: &Path, offset: u64, why: &str) -> StoreError {
    StoreError::Journal(format!("{} at byte {offset}: {why}", path.display()))
}

/// A queued message as the journal knows it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub msg: StoredMessage,
    pub packet_id: Option<u16>,
    pub released: bool,
}

/// One decoded record.
#[derive(Debug)]
enum Record {
    Enqueue(u64, u64, Entry),
    Dequeue(u64, u64),
    Sent(u64, u64, u16),
    Released(u64, u64),
    Inbound(u64, u16, bool),
    Commit,
}

/// Append the record for a journal op to `out`; false (nothing written) for ops that live in
/// SQLite.
pub(crate) fn encode_op(op: &Op, out: &mut Vec<u8>) -> bool {
    match op {
        Op::Enqueue {
            session,
            seq,
            qos,
            retain,
            sub_ids,
            msg,
        } => encode_enqueue(
            out,
            *session,
            *seq,
            &EntryRef {
                qos: *qos,
                retain: *retain,
                sub_ids,
                blob: &msg.blob,
                expires_at_ms: msg.expires_at_ms,
                packet_id: None,
                released: false,
            },
        ),
        Op::Dequeue { session, seq } => frame(out, |b| {
            b.push(K_DEQUEUE);
            b.extend_from_slice(&session.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
        }),
        Op::Sent {
            session,
            seq,
            packet_id,
        } => frame(out, |b| {
            b.push(K_SENT);
            b.extend_from_slice(&session.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&packet_id.to_le_bytes());
        }),
        Op::Released { session, seq } => frame(out, |b| {
            b.push(K_RELEASED);
            b.extend_from_slice(&session.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
        }),
        Op::Inbound {
            session,
            packet_id,
            present,
        } => frame(out, |b| {
            b.push(K_INBOUND);
            b.extend_from_slice(&session.to_le_bytes());
            b.extend_from_slice(&packet_id.to_le_bytes());
            b.push(u8::from(*present));
        }),
        _ => return false,
    }
    true
}

/// Whether an op belongs in the journal (the rest go to SQLite).
pub(crate) fn is_journal_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Enqueue { .. }
            | Op::Dequeue { .. }
            | Op::Sent { .. }
            | Op::Released { .. }
            | Op::Inbound { .. }
    )
}

/// Append a `Commit` record.
pub(crate) fn encode_commit(out: &mut Vec<u8>) {
    frame(out, |b| b.push(K_COMMIT));
}

pub(crate) struct EntryRef<'a> {
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: &'a [u32],
    pub blob: &'a [u8],
    pub expires_at_ms: Option<i64>,
    pub packet_id: Option<u16>,
    pub released: bool,
}

pub(crate) fn encode_enqueue(out: &mut Vec<u8>, session: u64, seq: u64, e: &EntryRef<'_>) {
    frame(out, |b| {
        b.push(K_ENQUEUE);
        b.extend_from_slice(&session.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        b.push(e.qos);
        b.push(
            u8::from(e.retain)
                | (u8::from(e.expires_at_ms.is_some()) << 1)
                | (u8::from(e.packet_id.is_some()) << 2)
                | (u8::from(e.released) << 3),
        );
        b.extend_from_slice(&e.expires_at_ms.unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&e.packet_id.unwrap_or(0).to_le_bytes());
        let n = u16::try_from(e.sub_ids.len()).unwrap_or(u16::MAX);
        b.extend_from_slice(&n.to_le_bytes());
        for id in e.sub_ids.iter().take(usize::from(n)) {
            b.extend_from_slice(&id.to_le_bytes());
        }
        b.extend_from_slice(e.blob);
    });
}

/// Write `body` framed: length, CRC, body (the length and CRC are filled in afterwards, so the
/// body is written once, straight into `out`).
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    body(out);
    let Some(b) = out.get(start + 8..) else {
        return;
    };
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(b);
    if let Some(h) = out.get_mut(start..start + 8) {
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A little-endian reader over a record body.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)?.try_into().ok().map(i64::from_le_bytes)
    }
}

fn decode_body(body: &[u8]) -> Option<Record> {
    let mut c = Cursor(body);
    let r = match c.u8()? {
        K_ENQUEUE => {
            let session = c.u64()?;
            let seq = c.u64()?;
            let qos = c.u8()?;
            let flags = c.u8()?;
            let expires = c.i64()?;
            let packet_id = c.u16()?;
            let n = c.u16()?;
            let mut sub_ids = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                sub_ids.push(c.u32()?);
            }
            let blob = tollgate_mqtt::Bytes::copy_from_slice(c.0);
            c.0 = &[];
            Record::Enqueue(
                session,
                seq,
                Entry {
                    qos,
                    retain: flags & 1 != 0,
                    sub_ids,
                    msg: StoredMessage {
                        blob,
                        expires_at_ms: (flags & 2 != 0).then_some(expires),
                    },
                    packet_id: (flags & 4 != 0).then_some(packet_id),
                    released: flags & 8 != 0,
                },
            )
        }
        K_DEQUEUE => Record::Dequeue(c.u64()?, c.u64()?),
        K_SENT => Record::Sent(c.u64()?, c.u64()?, c.u16()?),
        K_RELEASED => Record::Released(c.u64()?, c.u64()?),
        K_INBOUND => Record::Inbound(c.u64()?, c.u16()?, c.u8()? != 0),
        K_COMMIT => Record::Commit,
        _ => return None,
    };
    // Trailing bytes mean a record this binary does not understand.
    c.0.is_empty().then_some(r)
}

/// What replaying the journal gave back.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Queued messages by (session, seq), with the segment their record is in.
    pub entries: BTreeMap<(u64, u64), (Entry, u64)>,
    /// Incoming QoS 2 ids by (session, packet id), with their segment.
    pub inbound: BTreeMap<(u64, u16), u64>,
    /// Segment numbers found, oldest first.
    pub segments: Vec<u64>,
    /// Highest message sequence number seen.
    pub max_seq: u64,
    /// Bytes cut off a torn tail (0 when the journal ended cleanly).
    pub torn_bytes: u64,
}

/// List the segment numbers in `dir`, oldest first (a missing directory has none).
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", dir, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| io("reading", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Apply one committed record to the replay state.
fn apply(rep: &mut Replayed, seg: u64, r: Record) {
    match r {
        Record::Enqueue(s, q, e) => {
            rep.max_seq = rep.max_seq.max(q);
            rep.entries.insert((s, q), (e, seg));
        }
        Record::Dequeue(s, q) => {
            rep.entries.remove(&(s, q));
        }
        Record::Sent(s, q, pid) => {
            if let Some((e, _)) = rep.entries.get_mut(&(s, q)) {
                e.packet_id = Some(pid);
            }
        }
        Record::Released(s, q) => {
            if let Some((e, _)) = rep.entries.get_mut(&(s, q)) {
                e.released = true;
            }
        }
        Record::Inbound(s, pid, true) => {
            rep.inbound.insert((s, pid), seg);
        }
        Record::Inbound(s, pid, false) => {
            rep.inbound.remove(&(s, pid));
        }
        Record::Commit => {}
    }
}

/// How a segment read ended.
enum End {
    /// At a committed record boundary, at the end of the file.
    Clean,
    /// A torn tail starts at this offset.
    Torn(u64, &'static str),
}

const ZEROED: &str = "zeroed record header";

/// Whether everything left in `r` is zero bytes (a zero-filled tail, as a crash while the
/// file grew can leave).
fn rest_is_zero(r: &mut impl Read, path: &Path) -> Result<bool, StoreError> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = r.read(&mut chunk).map_err(|e| io("reading", path, e))?;
        let Some(got) = chunk.get(..n) else {
            return Ok(false);
        };
        if n == 0 {
            return Ok(true);
        }
        if got.iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// Read one record at the reader's position: `Ok(None)` at a clean end of file.
fn read_record(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    path: &Path,
    offset: u64,
    remaining: u64,
) -> Result<Result<Option<Record>, &'static str>, StoreError> {
    if remaining == 0 {
        return Ok(Ok(None));
    }
    if remaining < 8 {
        return Ok(Err("short record header"));
    }
    let mut h = [0u8; 8];
    r.read_exact(&mut h).map_err(|e| io("reading", path, e))?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len == 0 && crc == 0 {
        return Ok(Err(ZEROED));
    }
    if len > MAX_RECORD_BYTES {
        return Err(corrupt(
            path,
            offset,
            &format!("record length {len} is above the limit of {MAX_RECORD_BYTES}"),
        ));
    }
    if u64::from(len) > remaining - 8 {
        return Ok(Err("record runs past the end of the file"));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    r.read_exact(buf).map_err(|e| io("reading", path, e))?;
    if crc32fast::hash(buf) != crc {
        return Ok(Err("CRC mismatch"));
    }
    match decode_body(buf) {
        Some(rec) => Ok(Ok(Some(rec))),
        None => Err(corrupt(path, offset, "record of unknown kind or shape")),
    }
}

fn header_is_zero(f: &mut File, path: &Path) -> Result<bool, StoreError> {
    let mut h = [0u8; HEADER_BYTES as usize];
    f.read_exact(&mut h).map_err(|e| io("reading", path, e))?;
    f.seek(SeekFrom::Start(0))
        .map_err(|e| io("seeking", path, e))?;
    Ok(h.iter().all(|b| *b == 0))
}

fn check_header(f: &mut File, path: &Path, len: u64) -> Result<(), StoreError> {
    if len < HEADER_BYTES {
        return Err(corrupt(path, 0, "file shorter than a segment header"));
    }
    let mut h = [0u8; HEADER_BYTES as usize];
    f.read_exact(&mut h).map_err(|e| io("reading", path, e))?;
    if &h[..8] != MAGIC {
        return Err(corrupt(path, 0, "not a journal segment (wrong magic)"));
    }
    let v = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if v != VERSION {
        return Err(corrupt(
            path,
            8,
            &format!("segment format version {v}; this binary reads version {VERSION}"),
        ));
    }
    Ok(())
}

/// Replay one segment into `rep`. Only the last segment may end in a torn tail.
fn replay_segment(
    rep: &mut Replayed,
    path: &Path,
    seg: u64,
    last: bool,
) -> Result<End, StoreError> {
    let mut f = File::open(path).map_err(|e| io("opening", path, e))?;
    let len = f.metadata().map_err(|e| io("reading", path, e))?.len();
    if last && (len < HEADER_BYTES || header_is_zero(&mut f, path)?) {
        // Created, but its header never reached the disk: a crash while starting a segment.
        return Ok(End::Torn(0, "segment header incomplete"));
    }
    check_header(&mut f, path, len)?;
    let mut r = std::io::BufReader::with_capacity(256 * 1024, f);
    let mut offset = HEADER_BYTES;
    let mut committed = HEADER_BYTES;
    let mut pending: Vec<Record> = Vec::new();
    let mut buf = Vec::new();
    loop {
        match read_record(&mut r, &mut buf, path, offset, len - offset)? {
            Ok(None) => break,
            Ok(Some(Record::Commit)) => {
                offset += 8 + buf.len() as u64;
                committed = offset;
                for rec in pending.drain(..) {
                    apply(rep, seg, rec);
                }
            }
            Ok(Some(rec)) => {
                offset += 8 + buf.len() as u64;
                pending.push(rec);
            }
            Err(why) => {
                if !last {
                    return Err(corrupt(path, offset, why));
                }
                // A bad record is a torn tail only if no later group follows it.
                if why == ZEROED && !rest_is_zero(&mut r, path)? {
                    return Err(corrupt(
                        path,
                        offset,
                        "zeroed record header followed by data",
                    ));
                }
                if why == "CRC mismatch" {
                    let next = offset + 8 + buf.len() as u64;
                    if committed_after(&mut r, path, next, len)? {
                        return Err(corrupt(
                            path,
                            offset,
                            "CRC mismatch in a record followed by later committed groups",
                        ));
                    }
                }
                return Ok(End::Torn(committed, why));
            }
        }
    }
    if committed < len {
        return Ok(End::Torn(committed, "records after the last commit"));
    }
    Ok(End::Clean)
}

/// Whether a later group than the damaged record's own follows it: two well-formed `Commit`
/// records (scanning by length from `offset`). Each group is fsynced before the next one is
/// written, so a crash can only tear the last group; damage with a complete group after it
/// was on disk already.
fn committed_after(
    r: &mut impl Read,
    path: &Path,
    mut offset: u64,
    len: u64,
) -> Result<bool, StoreError> {
    let mut buf = Vec::new();
    let mut commits = 0;
    loop {
        match read_record(r, &mut buf, path, offset, len - offset) {
            Ok(Ok(Some(rec))) => {
                offset += 8 + buf.len() as u64;
                if matches!(rec, Record::Commit) {
                    commits += 1;
                    if commits >= 2 {
                        return Ok(true);
                    }
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return Ok(false),
        }
    }
}

/// Replay every segment in `dir`. With `repair`, a torn tail is truncated (with a warning);
/// without, it is only reported in [`Replayed::torn_bytes`].
pub(crate) fn replay(dir: &Path, repair: bool) -> Result<Replayed, StoreError> {
    let mut rep = Replayed {
        segments: list_segments(dir)?,
        ..Replayed::default()
    };
    let segs = rep.segments.clone();
    for (i, &n) in segs.iter().enumerate() {
        let path = seg_path(dir, n);
        let last = i + 1 == segs.len();
        if !repair && !path.exists() {
            // `store check` beside a running server: the writer deleted a dead segment.
            continue;
        }
        if let End::Torn(at, why) = replay_segment(&mut rep, &path, n, last)? {
            let size = std::fs::metadata(&path)
                .map_err(|e| io("reading", &path, e))?
                .len();
            rep.torn_bytes = size.saturating_sub(at);
            if repair {
                tracing::warn!(
                    segment = %path.display(),
                    offset = at,
                    bytes = rep.torn_bytes,
                    reason = why,
                    "journal ends in a torn write; truncating it at the last committed record"
                );
                if at < HEADER_BYTES {
                    std::fs::remove_file(&path).map_err(|e| io("deleting", &path, e))?;
                    rep.segments.pop();
                    continue;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("opening", &path, e))?;
                f.set_len(at).map_err(|e| io("truncating", &path, e))?;
                f.sync_all().map_err(|e| io("syncing", &path, e))?;
            }
        }
    }
    Ok(rep)
}

/// A live queued message: the segment its record is in, and its QoS 2 delivery state (kept
/// here so a rewrite carries it forward).
#[derive(Debug, Clone, Copy)]
struct Live {
    seg: u64,
    packet_id: Option<u16>,
    released: bool,
    /// Bytes of its record.
    size: u32,
}

/// Bytes of an incoming-QoS 2 record.
const INBOUND_RECORD_BYTES: u32 = 8 + 12;

/// Bytes of a queued-message record.
fn enqueue_record_bytes(sub_ids: usize, blob: usize) -> u32 {
    u32::try_from(8 + 31 + 4 * sub_ids.min(usize::from(u16::MAX)) + blob).unwrap_or(u32::MAX)
}

/// Live records per segment.
#[derive(Debug, Default, Clone, Copy)]
struct SegInfo {
    live: u64,
    live_bytes: u64,
    bytes: u64,
}

/// The journal's writing side, owned by the writer thread: the open segment, and which
/// segments still hold live records.
pub(crate) struct Journal {
    dir: PathBuf,
    limits: Limits,
    file: File,
    current: u64,
    /// Length of the current segment up to its last committed record.
    len: u64,
    /// A failed append may have left bytes past `len`: cut them before the next one.
    dirty: bool,
    /// Live queued messages: (session, seq) → where their record is, and their QoS 2 state.
    entries: BTreeMap<(u64, u64), Live>,
    /// Live incoming QoS 2 ids: (session, packet id) → segment of their record.
    inbound: BTreeMap<(u64, u16), u64>,
    segs: BTreeMap<u64, SegInfo>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

fn create_segment(dir: &Path, n: u64) -> Result<File, StoreError> {
    let path = seg_path(dir, n);
    let mut f = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io("creating", &path, e))?;
    let mut h = [0u8; HEADER_BYTES as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    f.write_all(&h).map_err(|e| io("writing", &path, e))?;
    f.sync_all().map_err(|e| io("syncing", &path, e))?;
    sync_dir(dir)?;
    Ok(f)
}

impl Journal {
    /// Start writing after a replay: `rep` (already cross-checked against the sessions) says
    /// what is live. Writing always starts in a new segment; segments with nothing live
    /// before the first live one are deleted.
    pub(crate) fn start(dir: &Path, rep: &Replayed, limits: Limits) -> Result<Journal, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let current = rep.segments.last().map_or(1, |n| n + 1);
        let file = create_segment(dir, current)?;
        let mut segs: BTreeMap<u64, SegInfo> = rep
            .segments
            .iter()
            .map(|&n| (n, SegInfo::default()))
            .collect();
        for (e, seg) in rep.entries.values() {
            let s = segs.entry(*seg).or_default();
            s.live += 1;
            s.live_bytes += u64::from(enqueue_record_bytes(e.sub_ids.len(), e.msg.blob.len()));
        }
        for seg in rep.inbound.values() {
            let s = segs.entry(*seg).or_default();
            s.live += 1;
            s.live_bytes += u64::from(INBOUND_RECORD_BYTES);
        }
        for (n, info) in segs.iter_mut() {
            info.bytes = std::fs::metadata(seg_path(dir, *n)).map_or(0, |m| m.len());
        }
        segs.insert(
            current,
            SegInfo {
                live: 0,
                live_bytes: 0,
                bytes: HEADER_BYTES,
            },
        );
        let mut j = Journal {
            dir: dir.to_path_buf(),
            limits,
            file,
            current,
            len: HEADER_BYTES,
            dirty: false,
            entries: rep
                .entries
                .iter()
                .map(|(k, (e, s))| {
                    (
                        *k,
                        Live {
                            seg: *s,
                            packet_id: e.packet_id,
                            released: e.released,
                            size: enqueue_record_bytes(e.sub_ids.len(), e.msg.blob.len()),
                        },
                    )
                })
                .collect(),
            inbound: rep.inbound.clone(),
            segs,
        };
        j.delete_dead_prefix();
        Ok(j)
    }

    /// Append `buf` (whole records ending in a `Commit`) and fsync it.
    pub(crate) fn append(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        let path = seg_path(&self.dir, self.current);
        if self.dirty {
            self.file
                .set_len(self.len)
                .map_err(|e| io("truncating", &path, e))?;
            self.dirty = false;
        }
        self.file
            .seek(SeekFrom::Start(self.len))
            .map_err(|e| io("seeking", &path, e))?;
        let r = self
            .file
            .write_all(buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = r {
            self.dirty = true;
            return Err(io("appending to", &path, e));
        }
        self.len += buf.len() as u64;
        if let Some(s) = self.segs.get_mut(&self.current) {
            s.bytes = self.len;
        }
        Ok(())
    }

    /// Record what a committed op did to the live set (called after [`Journal::append`]).
    pub(crate) fn note(&mut self, op: &Op) {
        let cur = self.current;
        match op {
            Op::Enqueue {
                session,
                seq,
                sub_ids,
                msg,
                ..
            } => {
                let live = Live {
                    seg: cur,
                    packet_id: None,
                    released: false,
                    size: enqueue_record_bytes(sub_ids.len(), msg.blob.len()),
                };
                let old = self.entries.insert((*session, *seq), live);
                self.bump(cur, live.size, old.map(|l| (l.seg, l.size)));
            }
            Op::Dequeue { session, seq } => {
                let old = self.entries.remove(&(*session, *seq));
                self.drop_live(old.map(|l| (l.seg, l.size)));
            }
            Op::Sent {
                session,
                seq,
                packet_id,
            } => {
                if let Some(l) = self.entries.get_mut(&(*session, *seq)) {
                    l.packet_id = Some(*packet_id);
                }
            }
            Op::Released { session, seq } => {
                if let Some(l) = self.entries.get_mut(&(*session, *seq)) {
                    l.released = true;
                }
            }
            Op::Inbound {
                session,
                packet_id,
                present: true,
            } => {
                let old = self.inbound.insert((*session, *packet_id), cur);
                self.bump(
                    cur,
                    INBOUND_RECORD_BYTES,
                    old.map(|s| (s, INBOUND_RECORD_BYTES)),
                );
            }
            Op::Inbound {
                session,
                packet_id,
                present: false,
            } => {
                let old = self.inbound.remove(&(*session, *packet_id));
                self.drop_live(old.map(|s| (s, INBOUND_RECORD_BYTES)));
            }
            Op::DeleteSession { id } => {
                let keys: Vec<(u64, u64)> = self
                    .entries
                    .range((*id, 0)..=(*id, u64::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    let old = self.entries.remove(&k);
                    self.drop_live(old.map(|l| (l.seg, l.size)));
                }
                let keys: Vec<(u64, u16)> = self
                    .inbound
                    .range((*id, 0)..=(*id, u16::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    let old = self.inbound.remove(&k);
                    self.drop_live(old.map(|s| (s, INBOUND_RECORD_BYTES)));
                }
            }
            _ => {}
        }
    }

    /// A live record of `size` bytes in `seg`, replacing `old` (segment, size).
    fn bump(&mut self, seg: u64, size: u32, old: Option<(u64, u32)>) {
        let s = self.segs.entry(seg).or_default();
        s.live += 1;
        s.live_bytes += u64::from(size);
        self.drop_live(old);
    }

    fn drop_live(&mut self, old: Option<(u64, u32)>) {
        if let Some((seg, size)) = old {
            if let Some(s) = self.segs.get_mut(&seg) {
                s.live = s.live.saturating_sub(1);
                s.live_bytes = s.live_bytes.saturating_sub(u64::from(size));
            }
        }
    }

    /// Whether the journal holds enough dead bytes to rewrite the oldest segment forward:
    /// more than `max_segments` segments, and more than `max_segments` segments' worth of
    /// dead records (so a journal whose records are mostly live is not rewritten over and
    /// over).
    fn should_rewrite(&self) -> bool {
        if self.segs.len() <= self.limits.max_segments {
            return false;
        }
        let total: u64 = self.segs.values().map(|s| s.bytes).sum();
        let live: u64 = self.segs.values().map(|s| s.live_bytes).sum();
        let slack = self.limits.segment_bytes * self.limits.max_segments as u64;
        total.saturating_sub(live) > slack
    }

    /// After a commit: start a new segment when this one is full, delete dead segments, and
    /// rewrite the oldest one forward when too many are kept. Failures here lose nothing
    /// (everything is already durable); they are logged and retried after the next commit.
    pub(crate) fn housekeep(&mut self) {
        if let Err(e) = self.try_housekeep() {
            tracing::warn!(error = %e, "journal housekeeping failed; will retry");
        }
    }

    fn try_housekeep(&mut self) -> Result<(), StoreError> {
        if self.len >= self.limits.segment_bytes {
            self.rotate()?;
        }
        self.delete_dead_prefix();
        if self.should_rewrite() {
            self.rewrite_oldest()?;
            self.delete_dead_prefix();
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        let next = self.current + 1;
        self.file = create_segment(&self.dir, next)?;
        self.current = next;
        self.len = HEADER_BYTES;
        self.dirty = false;
        self.segs.insert(
            next,
            SegInfo {
                live: 0,
                live_bytes: 0,
                bytes: HEADER_BYTES,
            },
        );
        Ok(())
    }

    /// Delete segments, oldest first, while they hold nothing live (never the current one).
    fn delete_dead_prefix(&mut self) {
        while let Some((&n, info)) = self.segs.first_key_value() {
            if n == self.current || info.live > 0 {
                break;
            }
            let path = seg_path(&self.dir, n);
            match std::fs::remove_file(&path) {
                // One removal at a time reaches the disk, oldest first: a crash can bring
                // back a dead segment only with every newer one still there.
                Ok(()) => {
                    if let Err(e) = sync_dir(&self.dir) {
                        tracing::warn!(error = %e, "cannot sync the journal directory");
                        self.segs.pop_first();
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete a dead journal segment");
                    break;
                }
            }
            self.segs.pop_first();
        }
    }

    /// Copy the live records of the oldest segment into the current one (one commit, one
    /// fsync), so the oldest holds nothing live and can go.
    fn rewrite_oldest(&mut self) -> Result<(), StoreError> {
        let Some((&oldest, _)) = self.segs.first_key_value() else {
            return Ok(());
        };
        if oldest == self.current {
            return Ok(());
        }
        let mut rep = Replayed::default();
        let path = seg_path(&self.dir, oldest);
        replay_segment(&mut rep, &path, oldest, false)?;
        let mut buf = Vec::new();
        let mut moved_entries = Vec::new();
        let mut moved_inbound = Vec::new();
        for ((s, q), (e, _)) in &rep.entries {
            if let Some(l) = self.entries.get(&(*s, *q)).filter(|l| l.seg == oldest) {
                let mut e = e.clone();
                e.packet_id = l.packet_id;
                e.released = l.released;
                moved_entries.push(((*s, *q), e));
            }
        }
        for (k, seg) in &rep.inbound {
            if *seg == oldest && self.inbound.get(k) == Some(&oldest) {
                moved_inbound.push(*k);
            }
        }
        for ((s, q), e) in &moved_entries {
            encode_enqueue(
                &mut buf,
                *s,
                *q,
                &EntryRef {
                    qos: e.qos,
                    retain: e.retain,
                    sub_ids: &e.sub_ids,
                    blob: &e.msg.blob,
                    expires_at_ms: e.msg.expires_at_ms,
                    packet_id: e.packet_id,
                    released: e.released,
                },
            );
        }
        for (s, pid) in &moved_inbound {
            frame(&mut buf, |b| {
                b.push(K_INBOUND);
                b.extend_from_slice(&s.to_le_bytes());
                b.extend_from_slice(&pid.to_le_bytes());
                b.push(1);
            });
        }
        encode_commit(&mut buf);
        self.append(&buf)?;
        let cur = self.current;
        for (k, _) in moved_entries {
            let moved = self.entries.get_mut(&k).map(|l| {
                let old = (l.seg, l.size);
                l.seg = cur;
                old
            });
            if let Some(old) = moved {
                self.bump(cur, old.1, Some(old));
            }
        }
        for k in moved_inbound {
            let old = self.inbound.insert(k, cur);
            self.bump(
                cur,
                INBOUND_RECORD_BYTES,
                old.map(|s| (s, INBOUND_RECORD_BYTES)),
            );
        }
        tracing::debug!(segment = oldest, "journal segment rewritten forward");
        Ok(())
    }

    /// Segments on disk now.
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segs.len()
    }
}

/// Write `entries` and `inbound` into one new segment after the existing ones and fsync it;
/// with `delete_old`, then delete the older segments (`store compact`, which passes everything
/// live). Migration keeps them.
pub(crate) fn rewrite_all(
    dir: &Path,
    entries: &BTreeMap<(u64, u64), Entry>,
    inbound: &[(u64, u16)],
    delete_old: bool,
) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let old = list_segments(dir)?;
    let n = old.last().map_or(1, |n| n + 1);
    let mut f = create_segment(dir, n)?;
    let mut buf = Vec::new();
    for ((s, q), e) in entries {
        encode_enqueue(
            &mut buf,
            *s,
            *q,
            &EntryRef {
                qos: e.qos,
                retain: e.retain,
                sub_ids: &e.sub_ids,
                blob: &e.msg.blob,
                expires_at_ms: e.msg.expires_at_ms,
                packet_id: e.packet_id,
                released: e.released,
            },
        );
    }
    for (s, pid) in inbound {
        frame(&mut buf, |b| {
            b.push(K_INBOUND);
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&pid.to_le_bytes());
            b.push(1);
        });
    }
    encode_commit(&mut buf);
    let path = seg_path(dir, n);
    f.write_all(&buf)
        .and_then(|()| f.sync_data())
        .map_err(|e| io("writing", &path, e))?;
    for o in old.into_iter().filter(|_| delete_old) {
        let p = seg_path(dir, o);
        std::fs::remove_file(&p).map_err(|e| io("deleting", &p, e))?;
    }
    sync_dir(dir)
}

/// Total size of the journal's segments, bytes.
pub(crate) fn bytes(dir: &Path) -> u64 {
    list_segments(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| std::fs::metadata(seg_path(dir, *n)).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_mqtt::{Publish, QoS};

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tollgate-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn enqueue(session: u64, seq: u64, payload: &'static str) -> Op {
        let p = Publish {
            qos: QoS::AtLeastOnce,
            topic: "t/1".into(),
            packet_id: 1,
            payload: tollgate_mqtt::Bytes::from_static(payload.as_bytes()),
            ..Default::default()
        };
        Op::Enqueue {
            session,
            seq,
            qos: 1,
            retain: false,
            sub_ids: vec![4, 5],
            msg: StoredMessage::encode(&p, Some(1234)).unwrap(),
        }
    }

    fn header() -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        h
    }

    /// A committed batch of `ops`.
    fn batch(ops: &[Op]) -> Vec<u8> {
        let mut b = Vec::new();
        for op in ops {
            assert!(encode_op(op, &mut b));
        }
        encode_commit(&mut b);
        b
    }

    fn write_seg(dir: &Path, n: u64, parts: &[&[u8]]) -> PathBuf {
        let p = seg_path(dir, n);
        std::fs::write(&p, parts.concat()).unwrap();
        p
    }

    fn payload(e: &Entry) -> Vec<u8> {
        e.msg.decode().unwrap().payload.to_vec()
    }

    #[test]
    fn committed_records_replay_in_order_and_removals_apply() {
        let dir = tmp("replay");
        let b1 = batch(&[enqueue(1, 1, "a"), enqueue(1, 2, "b"), enqueue(2, 3, "c")]);
        let b2 = batch(&[
            Op::Dequeue { session: 1, seq: 1 },
            Op::Sent {
                session: 1,
                seq: 2,
                packet_id: 77,
            },
            Op::Released { session: 1, seq: 2 },
            Op::Inbound {
                session: 2,
                packet_id: 9,
                present: true,
            },
        ]);
        write_seg(&dir, 1, &[&header(), &b1]);
        write_seg(&dir, 2, &[&header(), &b2]);
        let rep = replay(&dir, true).unwrap();
        assert_eq!(rep.torn_bytes, 0);
        let keys: Vec<_> = rep.entries.keys().copied().collect();
        assert_eq!(keys, [(1, 2), (2, 3)]);
        let (e, seg) = &rep.entries[&(1, 2)];
        assert_eq!(*seg, 1);
        assert_eq!(payload(e), b"b");
        assert_eq!((e.packet_id, e.released), (Some(77), true));
        assert_eq!(e.sub_ids, [4, 5]);
        assert_eq!(e.msg.expires_at_ms, Some(1234));
        assert_eq!(rep.inbound.get(&(2, 9)), Some(&2));
        assert_eq!(rep.max_seq, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_truncated_at_the_last_committed_record() {
        let dir = tmp("torn");
        let good = batch(&[enqueue(1, 1, "kept")]);
        // An uncommitted, complete record, then half of another one.
        let mut uncommitted = Vec::new();
        encode_op(&enqueue(1, 2, "lost"), &mut uncommitted);
        let mut half = Vec::new();
        encode_op(&enqueue(1, 3, "torn"), &mut half);
        half.truncate(half.len() / 2);
        let p = write_seg(&dir, 1, &[&header(), &good, &uncommitted, &half]);
        let clean_len = (header().len() + good.len()) as u64;

        // `check` reports it without cutting.
        let rep = replay(&dir, false).unwrap();
        assert_eq!(rep.torn_bytes, (uncommitted.len() + half.len()) as u64);
        assert!(std::fs::metadata(&p).unwrap().len() > clean_len);

        let rep = replay(&dir, true).unwrap();
        assert_eq!(rep.entries.len(), 1);
        assert_eq!(payload(&rep.entries[&(1, 1)].0), b"kept");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), clean_len);
        // Replaying again finds a clean end.
        assert_eq!(replay(&dir, true).unwrap().torn_bytes, 0);

        // A CRC mismatch in the last record, and a zeroed tail, are torn too.
        let mut bad = batch(&[enqueue(1, 4, "flipped")]);
        let last = bad.len() - 20;
        bad[last] ^= 0xff;
        write_seg(&dir, 2, &[&header(), &bad, &[0u8; 64]]);
        let rep = replay(&dir, true).unwrap();
        assert_eq!(rep.entries.keys().copied().collect::<Vec<_>>(), [(1, 1)]);
        // A segment whose header never reached the disk is removed.
        write_seg(&dir, 3, &[&[0u8; 5]]);
        let rep = replay(&dir, true).unwrap();
        assert_eq!(rep.segments, [1, 2]);
        assert!(!seg_path(&dir, 3).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_record_before_committed_ones_is_an_error() {
        let dir = tmp("corrupt");
        let mut b1 = batch(&[enqueue(1, 1, "a")]);
        let b2 = batch(&[enqueue(1, 2, "b")]);
        b1[20] ^= 0x01;
        write_seg(&dir, 1, &[&header(), &b1, &b2]);
        let e = replay(&dir, true).unwrap_err();
        assert!(matches!(e, StoreError::Journal(_)), "{e}");
        assert!(e.to_string().contains("CRC mismatch"), "{e}");
        // Nothing was cut.
        assert_eq!(
            std::fs::metadata(seg_path(&dir, 1)).unwrap().len(),
            (header().len() + b1.len() + b2.len()) as u64
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damage_in_an_older_segment_is_an_error_not_a_torn_tail() {
        let dir = tmp("older");
        let mut half = batch(&[enqueue(1, 1, "a")]);
        half.truncate(10);
        write_seg(&dir, 1, &[&header(), &half]);
        write_seg(&dir, 2, &[&header(), &batch(&[enqueue(1, 2, "b")])]);
        let e = replay(&dir, true).unwrap_err();
        assert!(matches!(e, StoreError::Journal(_)), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wrong_magic_or_version_is_an_error() {
        let dir = tmp("magic");
        let mut h = header();
        h[0] = b'X';
        write_seg(&dir, 1, &[&h, &batch(&[enqueue(1, 1, "a")])]);
        let e = replay(&dir, true).unwrap_err();
        assert!(e.to_string().contains("wrong magic"), "{e}");

        let mut h = header();
        h[8..12].copy_from_slice(&99u32.to_le_bytes());
        write_seg(&dir, 1, &[&h, &batch(&[enqueue(1, 1, "a")])]);
        let e = replay(&dir, true).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_absurd_record_length_is_an_error_and_is_never_allocated() {
        let dir = tmp("absurd");
        let mut rec = u32::MAX.to_le_bytes().to_vec();
        rec.extend_from_slice(&[1, 2, 3, 4]);
        rec.extend_from_slice(&[0; 32]);
        write_seg(&dir, 1, &[&header(), &rec]);
        let e = replay(&dir, true).unwrap_err();
        assert!(e.to_string().contains("above the limit"), "{e}");

        // A record of an unknown kind with a valid CRC is damage too.
        let mut unknown = Vec::new();
        frame(&mut unknown, |b| b.push(200));
        encode_commit(&mut unknown);
        write_seg(&dir, 1, &[&header(), &unknown]);
        let e = replay(&dir, true).unwrap_err();
        assert!(e.to_string().contains("unknown kind"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dead_segments_are_deleted_and_a_pinned_one_is_rewritten_forward() {
        let dir = tmp("compact");
        let limits = Limits {
            segment_bytes: 512,
            max_segments: 3,
        };
        let mut j = Journal::start(&dir, &Replayed::default(), limits).unwrap();
        let commit = |j: &mut Journal, ops: &[Op]| {
            j.append(&batch(ops)).unwrap();
            for op in ops {
                j.note(op);
            }
            j.housekeep();
        };
        // One message that stays queued (QoS 2, sent and PUBREC'd), and an incoming id.
        commit(
            &mut j,
            &[
                enqueue(1, 1, "pinned"),
                Op::Inbound {
                    session: 1,
                    packet_id: 5,
                    present: true,
                },
            ],
        );
        commit(
            &mut j,
            &[
                Op::Sent {
                    session: 1,
                    seq: 1,
                    packet_id: 42,
                },
                Op::Released { session: 1, seq: 1 },
            ],
        );
        let mut most = 0;
        for seq in 2..400 {
            commit(&mut j, &[enqueue(2, seq, "transient")]);
            commit(&mut j, &[Op::Dequeue { session: 2, seq }]);
            most = most.max(list_segments(&dir).unwrap().len());
        }
        assert!(most <= limits.max_segments + 1, "{most} segments");
        assert_eq!(list_segments(&dir).unwrap().len(), j.segment_count());
        drop(j);
        let rep = replay(&dir, true).unwrap();
        assert_eq!(rep.entries.keys().copied().collect::<Vec<_>>(), [(1, 1)]);
        let (e, _) = &rep.entries[&(1, 1)];
        assert_eq!(payload(e), b"pinned");
        assert_eq!((e.packet_id, e.released), (Some(42), true));
        assert_eq!(rep.inbound.keys().copied().collect::<Vec<_>>(), [(1, 5)]);
        assert!(rep.segments.first() > Some(&1), "{:?}", rep.segments);

        // Deleting the session frees everything.
        let mut j = Journal::start(&dir, &rep, limits).unwrap();
        j.note(&Op::DeleteSession { id: 1 });
        j.housekeep();
        assert_eq!(list_segments(&dir).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
