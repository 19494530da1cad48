//! The log on disk: append, make durable, sign checkpoints, prove, export.
//!
//! Owns the files of one log directory; it must not decide what to log (the binary's writer
//! does) nor run on a session's path (it does blocking file I/O: call it from a thread of its
//! own or a blocking task).
//!
//! | file | what | trust |
//! | --- | --- | --- |
//! | `entries.jsonl` | every entry, one per line, each line exactly the leaf data | the source of truth; fsynced before any checkpoint covers it |
//! | `entries.idx` | the byte offset of each entry (8 bytes, little-endian) | derived, rebuilt at every open |
//! | `tree.<level>` | the hashes of the complete subtrees of `2^level` leaves, in order (32 bytes each) | derived, rebuilt at every open |
//! | `checkpoints.jsonl` | every signed checkpoint: `{"size":N,"time":"…","note":"…"}` | fsynced |
//! | `checkpoint` | the latest signed checkpoint note | replaced atomically |
//!
//! **Crash safety.** An entry is durable once [`Log::sync`] returns; a checkpoint is signed only
//! over durable entries. At open the whole of `entries.jsonl` is re-hashed (a line torn by a
//! crash, never acknowledged, is cut off) and the tree is compared with the latest checkpoint:
//! a log shorter than a size it signed, or whose entries no longer give a root it signed (a
//! truncation, an edit, a restored backup), *refuses to sign* ([`Log::refusing`]) and keeps
//! appending, so the evidence is kept and the operator is told.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::entry::{self, Numbering, Previous};
use crate::merkle::{self, Frontier, Hash, Subtrees};
use crate::note::{Checkpoint, Signer};
use crate::AuditError;

/// The entries file's name, in a log directory and in an export.
pub const ENTRIES: &str = "entries.jsonl";
/// The file of every signed checkpoint, in a log directory and in an export.
pub const CHECKPOINTS: &str = "checkpoints.jsonl";
/// The latest signed checkpoint note, in a log directory and in an export.
pub const CHECKPOINT: &str = "checkpoint";
const INDEX: &str = "entries.idx";
/// The largest entry accepted (an event is far smaller).
pub const MAX_ENTRY: usize = 1 << 20;

/// A signed checkpoint of this log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Tree size it commits to.
    pub size: u64,
    /// Root hash at that size.
    pub root: Hash,
    /// The signed note.
    pub note: String,
}

/// One line of `checkpoints.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointLine {
    /// Tree size.
    pub size: u64,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// The signed note.
    pub note: String,
}

/// What opening a log found.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// Entries in the log.
    pub entries: u64,
    /// Bytes of a torn last line cut off (an entry a crash interrupted; never acknowledged).
    pub torn_bytes: u64,
    /// Why the log refuses to sign, if it does.
    pub refusing: Option<String>,
}

/// The hashes of complete subtrees, read from the `tree.<level>` files.
#[derive(Debug, Default)]
struct TreeFiles {
    read: Vec<File>,
}

impl Subtrees for TreeFiles {
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, AuditError> {
        let f = self
            .read
            .get(level as usize)
            .ok_or(AuditError::OutOfRange {
                what: "tree level",
                value: u64::from(level),
                size: self.read.len() as u64,
            })?;
        let mut h = [0u8; 32];
        let at = index.checked_mul(32).ok_or(AuditError::OutOfRange {
            what: "subtree index",
            value: index,
            size: u64::MAX / 32,
        })?;
        f.read_exact_at(&mut h, at)
            .map_err(|e| AuditError::io(format!("tree.{level}"), e))?;
        Ok(h)
    }
}

/// An open log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    signer: Signer,
    /// The signer's PKCS#8, to start the next log with after a rotation.
    key: Vec<u8>,
    entries: BufWriter<File>,
    entries_read: File,
    entries_bytes: u64,
    index: BufWriter<File>,
    index_read: File,
    levels: Vec<BufWriter<File>>,
    tree: TreeFiles,
    frontier: Frontier,
    synced: u64,
    last: Option<Signed>,
    refusing: Option<String>,
    checkpoints: File,
    last_seq: Option<u64>,
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AuditError::io(path, e))
}

fn open_fresh(path: &Path) -> Result<(BufWriter<File>, File), AuditError> {
    let w = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AuditError::io(path, e))?;
    let r = File::open(path).map_err(|e| AuditError::io(path, e))?;
    Ok((BufWriter::with_capacity(64 * 1024, w), r))
}

impl Log {
    /// Open (or create) the log in `dir`, signing with the Ed25519 key `pkcs8` under the key
    /// name `origin` (the log's origin). A new log's first entry is a log start committing to
    /// `previous` (after a rotation).
    pub fn open(
        dir: &Path,
        origin: &str,
        pkcs8: &[u8],
        previous: Option<&Previous>,
    ) -> Result<(Log, Opened), AuditError> {
        let signer = Signer::from_pkcs8(origin, pkcs8)?;
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        let entries_path = dir.join(ENTRIES);
        let mut opened = Opened::default();
        // Re-hash every entry, rebuilding the derived files.
        let (mut index, index_read) = open_fresh(&dir.join(INDEX))?;
        let mut log_levels: Vec<BufWriter<File>> = Vec::new();
        let mut tree = TreeFiles::default();
        let mut frontier = Frontier::new();
        let mut good_bytes = 0u64;
        let mut last_seq = None;
        {
            let f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .mode(0o600)
                .open(&entries_path)
                .map_err(|e| AuditError::io(&entries_path, e))?;
            let total = f
                .metadata()
                .map_err(|e| AuditError::io(&entries_path, e))?
                .len();
            let mut r = BufReader::with_capacity(256 * 1024, f);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = r
                    .read_until(b'\n', &mut line)
                    .map_err(|e| AuditError::io(&entries_path, e))?;
                if n == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    break; // torn
                }
                let data = line.get(..line.len() - 1).unwrap_or_default();
                index
                    .write_all(&good_bytes.to_le_bytes())
                    .map_err(|e| AuditError::io(dir.join(INDEX), e))?;
                for (level, _, h) in frontier.push(merkle::leaf_hash(data)) {
                    write_level(dir, &mut log_levels, &mut tree, level, &h)?;
                }
                match entry::numbering(data) {
                    Numbering::Event(s) => last_seq = Some(s),
                    Numbering::Gap(_, b) => last_seq = Some(b),
                    _ => {}
                }
                good_bytes += n as u64;
            }
            if good_bytes < total {
                opened.torn_bytes = total - good_bytes;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&entries_path)
                    .map_err(|e| AuditError::io(&entries_path, e))?;
                f.set_len(good_bytes)
                    .and_then(|()| f.sync_data())
                    .map_err(|e| AuditError::io(&entries_path, e))?;
                tracing::warn!(
                    bytes = opened.torn_bytes,
                    "the audit log's last entry was torn by a crash (never acknowledged as durable): cut off"
                );
            }
        }
        let entries_w = open_append(&entries_path)?;
        let entries_read =
            File::open(&entries_path).map_err(|e| AuditError::io(&entries_path, e))?;
        let checkpoints = open_append(&dir.join(CHECKPOINTS))?;
        let mut log = Log {
            dir: dir.to_owned(),
            signer,
            key: pkcs8.to_vec(),
            entries: BufWriter::with_capacity(256 * 1024, entries_w),
            entries_read,
            entries_bytes: good_bytes,
            index,
            index_read,
            levels: log_levels,
            tree,
            frontier,
            synced: 0,
            last: None,
            refusing: None,
            checkpoints,
            last_seq,
        };
        log.synced = log.size();
        log.flush_derived()?;
        log.load_checkpoints()?;
        if log.size() == 0 && log.refusing.is_none() {
            let origin = log.signer.name().to_owned();
            log.append(&entry::log_start(&entry::now_rfc3339(), &origin, previous))?;
            log.sync()?;
        }
        opened.entries = log.size();
        opened.refusing = log.refusing.clone();
        Ok((log, opened))
    }

    /// Read the signed checkpoints and compare the latest with the entries.
    fn load_checkpoints(&mut self) -> Result<(), AuditError> {
        let verifier = self.signer.verifier();
        let mut latest: Option<Signed> = None;
        let mut bad = 0usize;
        let consider =
            |note: &str, latest: &mut Option<Signed>, bad: &mut usize| match Checkpoint::open(
                note, &verifier,
            ) {
                Ok(c) => {
                    if latest.as_ref().is_none_or(|l| c.size > l.size) {
                        *latest = Some(Signed {
                            size: c.size,
                            root: c.root,
                            note: note.to_owned(),
                        });
                    }
                }
                Err(_) => *bad += 1,
            };
        let path = self.dir.join(CHECKPOINTS);
        let text = read_text(&path)?;
        for line in text.lines() {
            match serde_json::from_str::<CheckpointLine>(line) {
                Ok(l) => consider(&l.note, &mut latest, &mut bad),
                Err(_) => bad += 1,
            }
        }
        let single = read_text(&self.dir.join(CHECKPOINT))?;
        if !single.is_empty() {
            consider(&single, &mut latest, &mut bad);
        }
        let size = self.size();
        if bad > 0 {
            tracing::warn!(
                count = bad,
                "the audit log holds checkpoints that do not verify with its key"
            );
        }
        if let Some(l) = &latest {
            if size < l.size {
                self.refusing = Some(format!(
                    "the log holds {size} entries but it signed a checkpoint of {} entries: it was truncated or restored from an older copy",
                    l.size
                ));
            } else {
                let root = merkle::root(&self.tree, l.size)?;
                if root != l.root {
                    self.refusing = Some(format!(
                        "the first {} entries no longer hash to the root the log signed: an entry was edited, removed, inserted or reordered",
                        l.size
                    ));
                }
            }
        }
        self.last = latest;
        Ok(())
    }

    /// Entries in the log (durable or not).
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Entries known to be on stable storage.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The log's origin (its key name).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The signing key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The latest signed checkpoint.
    pub fn latest(&self) -> Option<&Signed> {
        self.last.as_ref()
    }

    /// Why the log refuses to sign, if it does (see the module documentation).
    pub fn refusing(&self) -> Option<&str> {
        self.refusing.as_deref()
    }

    /// The sequence number of the last event (or gap) entry.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append one entry (not yet durable: see [`Log::sync`]); returns its index.
    pub fn append(&mut self, data: &[u8]) -> Result<u64, AuditError> {
        if data.contains(&b'\n') {
            return Err(AuditError::malformed("entry", "contains a newline"));
        }
        if data.len() > MAX_ENTRY {
            return Err(AuditError::malformed(
                "entry",
                format!("{} bytes, over {MAX_ENTRY}", data.len()),
            ));
        }
        let idx = self.size();
        let path = || self.dir.join(ENTRIES);
        self.entries
            .write_all(data)
            .and_then(|()| self.entries.write_all(b"\n"))
            .map_err(|e| AuditError::io(path(), e))?;
        self.index
            .write_all(&self.entries_bytes.to_le_bytes())
            .map_err(|e| AuditError::io(self.dir.join(INDEX), e))?;
        self.entries_bytes += data.len() as u64 + 1;
        for (level, _, h) in self.frontier.push(merkle::leaf_hash(data)) {
            write_level(&self.dir, &mut self.levels, &mut self.tree, level, &h)?;
        }
        match entry::numbering(data) {
            Numbering::Event(s) => self.last_seq = Some(s),
            Numbering::Gap(_, b) => self.last_seq = Some(b),
            _ => {}
        }
        Ok(idx)
    }

    /// Make every appended entry durable (write and fsync the entries file).
    pub fn sync(&mut self) -> Result<(), AuditError> {
        if self.synced == self.size() {
            return Ok(());
        }
        let path = self.dir.join(ENTRIES);
        self.entries
            .flush()
            .and_then(|()| self.entries.get_ref().sync_data())
            .map_err(|e| AuditError::io(path, e))?;
        self.synced = self.size();
        self.flush_derived()
    }

    fn flush_derived(&mut self) -> Result<(), AuditError> {
        self.index
            .flush()
            .map_err(|e| AuditError::io(self.dir.join(INDEX), e))?;
        for (i, l) in self.levels.iter_mut().enumerate() {
            l.flush()
                .map_err(|e| AuditError::io(self.dir.join(format!("tree.{i}")), e))?;
        }
        Ok(())
    }

    /// Make the entries durable and sign a checkpoint of them, unless nothing was added since
    /// the latest one (which is returned then). Refused while the log is inconsistent.
    pub fn checkpoint(&mut self) -> Result<Signed, AuditError> {
        if let Some(r) = &self.refusing {
            return Err(AuditError::Inconsistent(r.clone()));
        }
        self.sync()?;
        let size = self.size();
        if let Some(l) = &self.last {
            if l.size == size {
                return Ok(l.clone());
            }
        }
        let root = self.root();
        let body = Checkpoint {
            origin: self.signer.name().to_owned(),
            size,
            root,
            extensions: Vec::new(),
        };
        let note = self.signer.sign(&body.to_text())?;
        let line = CheckpointLine {
            size,
            time: entry::now_rfc3339(),
            note: note.clone(),
        };
        let mut text = serde_json::to_string(&line)
            .map_err(|e| AuditError::malformed("checkpoint line", e.to_string()))?;
        text.push('\n');
        let path = self.dir.join(CHECKPOINTS);
        self.checkpoints
            .write_all(text.as_bytes())
            .and_then(|()| self.checkpoints.sync_data())
            .map_err(|e| AuditError::io(&path, e))?;
        write_atomic(&self.dir.join(CHECKPOINT), note.as_bytes())?;
        let signed = Signed { size, root, note };
        self.last = Some(signed.clone());
        Ok(signed)
    }

    /// The root at `size` (≤ the log's size).
    pub fn root_at(&mut self, size: u64) -> Result<Hash, AuditError> {
        self.check_size("size", size)?;
        self.flush_derived()?;
        merkle::root(&self.tree, size)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size("size", size)?;
        self.flush_derived()?;
        merkle::inclusion_proof(&self.tree, index, size)
    }

    /// The consistency proof from the tree of `old_size` to the tree of `new_size` entries.
    pub fn consistency_proof(
        &mut self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, AuditError> {
        self.check_size("size", new_size)?;
        self.flush_derived()?;
        merkle::consistency_proof(&self.tree, old_size, new_size)
    }

    fn check_size(&self, what: &'static str, v: u64) -> Result<(), AuditError> {
        if v > self.size() {
            return Err(AuditError::OutOfRange {
                what,
                value: v,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// Entry `index`'s data.
    pub fn entry(&mut self, index: u64) -> Result<Vec<u8>, AuditError> {
        Ok(self.entries_range(index, 1)?.pop().unwrap_or_default())
    }

    /// Up to `limit` entries from `from`.
    pub fn entries_range(&mut self, from: u64, limit: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        if from >= self.size() {
            return Err(AuditError::OutOfRange {
                what: "index",
                value: from,
                size: self.size(),
            });
        }
        let end = from.saturating_add(limit).min(self.size());
        let path = self.dir.join(ENTRIES);
        self.entries.flush().map_err(|e| AuditError::io(&path, e))?;
        self.flush_derived()?;
        let start = self.offset(from)?;
        let stop = if end >= self.size() {
            self.entries_bytes
        } else {
            self.offset(end)?
        };
        let len = usize::try_from(stop.saturating_sub(start))
            .map_err(|_| AuditError::malformed("range", "too large"))?;
        let mut buf = vec![0u8; len];
        self.entries_read
            .read_exact_at(&mut buf, start)
            .map_err(|e| AuditError::io(&path, e))?;
        Ok(buf
            .split(|b| *b == b'\n')
            .take((end - from) as usize)
            .map(<[u8]>::to_vec)
            .collect())
    }

    fn offset(&self, index: u64) -> Result<u64, AuditError> {
        let mut b = [0u8; 8];
        self.index_read
            .read_exact_at(&mut b, index.saturating_mul(8))
            .map_err(|e| AuditError::io(self.dir.join(INDEX), e))?;
        Ok(u64::from_le_bytes(b))
    }

    /// Write an export to `out`: the entries up to the latest checkpoint (a new one is signed
    /// first if the log is consistent), `checkpoint` and `checkpoints.jsonl`. Returns the
    /// checkpoint the export ends at.
    pub fn export(&mut self, out: &Path) -> Result<Signed, AuditError> {
        let signed = match self.checkpoint() {
            Ok(s) => s,
            // An inconsistent log still exports, so that the verifier can show where.
            Err(AuditError::Inconsistent(_)) => {
                self.sync()?;
                self.last.clone().ok_or_else(|| {
                    AuditError::Inconsistent("no checkpoint was ever signed".into())
                })?
            }
            Err(e) => return Err(e),
        };
        std::fs::create_dir_all(out).map_err(|e| AuditError::io(out, e))?;
        // Every complete line: past the checkpoint too, when the log is inconsistent (the
        // verifier reports what no signature covers).
        let src = self.dir.join(ENTRIES);
        let mut r = File::open(&src).map_err(|e| AuditError::io(&src, e))?;
        let dst = out.join(ENTRIES);
        let mut w = BufWriter::new(File::create(&dst).map_err(|e| AuditError::io(&dst, e))?);
        let mut left = self.entries_bytes;
        let mut buf = vec![0u8; 256 * 1024];
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let chunk = buf.get_mut(..want).unwrap_or_default();
            r.read_exact(chunk).map_err(|e| AuditError::io(&src, e))?;
            w.write_all(chunk).map_err(|e| AuditError::io(&dst, e))?;
            left -= want as u64;
        }
        w.flush().map_err(|e| AuditError::io(&dst, e))?;
        write_atomic(&out.join(CHECKPOINT), signed.note.as_bytes())?;
        let cps = read_text(&self.dir.join(CHECKPOINTS))?;
        write_atomic(&out.join(CHECKPOINTS), cps.as_bytes())?;
        Ok(signed)
    }

    /// Re-hash the whole log from its files, as an offline verifier would, with its own key.
    pub fn verify(&mut self) -> Result<crate::verify::Report, AuditError> {
        self.sync()?;
        let path = self.dir.join(ENTRIES);
        self.entries.flush().map_err(|e| AuditError::io(&path, e))?;
        crate::verify::verify_dir(&self.dir, &self.signer.verifier(), None)
    }

    /// The base64 of a hash, as checkpoints and proofs print it.
    pub fn b64(h: &Hash) -> String {
        base64::engine::general_purpose::STANDARD.encode(h)
    }

    /// Rotate: sign a final checkpoint, move this log's files into `archive` (created; must
    /// not exist), and go on with a new log in the same directory whose first entry commits to
    /// that final checkpoint. Returns the final checkpoint of the archived log.
    pub fn rotate(&mut self, archive: &Path) -> Result<Signed, AuditError> {
        let last = self.checkpoint()?;
        if archive.exists() {
            return Err(AuditError::malformed(
                "archive directory",
                format!("{} already exists", archive.display()),
            ));
        }
        std::fs::create_dir_all(archive).map_err(|e| AuditError::io(archive, e))?;
        let previous = Previous {
            origin: self.signer.name().to_owned(),
            size: last.size,
            root: Log::b64(&last.root),
            checkpoint: last.note.clone(),
        };
        let names = std::fs::read_dir(&self.dir).map_err(|e| AuditError::io(&self.dir, e))?;
        for n in names.flatten() {
            let p = n.path();
            if p.is_file() {
                let to = archive.join(n.file_name());
                std::fs::rename(&p, &to).map_err(|e| AuditError::io(&p, e))?;
            }
        }
        let origin = self.signer.name().to_owned();
        let key = self.key.clone();
        let (log, _) = Log::open(&self.dir, &origin, &key, Some(&previous))?;
        *self = log;
        Ok(last)
    }
}

fn write_level(
    dir: &Path,
    levels: &mut Vec<BufWriter<File>>,
    tree: &mut TreeFiles,
    level: u32,
    h: &Hash,
) -> Result<(), AuditError> {
    while levels.len() <= level as usize {
        let (w, r) = open_fresh(&dir.join(format!("tree.{}", levels.len())))?;
        levels.push(w);
        tree.read.push(r);
    }
    let w = levels
        .get_mut(level as usize)
        .ok_or(AuditError::OutOfRange {
            what: "tree level",
            value: u64::from(level),
            size: 64,
        })?;
    w.write_all(h)
        .map_err(|e| AuditError::io(dir.join(format!("tree.{level}")), e))
}

/// Read a whole text file; a missing file is empty.
pub(crate) fn read_text(path: &Path) -> Result<String, AuditError> {
    match File::open(path) {
        Ok(mut f) => {
            let mut s = String::new();
            f.read_to_string(&mut s)
                .map_err(|e| AuditError::io(path, e))?;
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(AuditError::io(path, e)),
    }
}

/// Write a file by writing a temporary beside it, fsyncing it and renaming it over.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), AuditError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| AuditError::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_data())
        .map_err(|e| AuditError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AuditError::io(path, e))
}

/// Load the log's signing key from `path` (PKCS#8), creating a new one (mode 0600) if there is
/// none. Returns the key and whether it was created.
pub fn load_or_create_key(path: &Path) -> Result<(Vec<u8>, bool), AuditError> {
    match std::fs::read(path) {
        Ok(k) => Ok((k, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = Signer::generate_pkcs8()?;
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| AuditError::io(d, e))?;
            }
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| AuditError::io(path, e))?;
            f.write_all(&k)
                .and_then(|()| f.sync_all())
                .map_err(|e| AuditError::io(path, e))?;
            Ok((k, true))
        }
        Err(e) => Err(AuditError::io(path, e)),
    }
}
