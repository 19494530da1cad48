//! Verification of a log from its files alone: an export, or a live log directory.
//!
//! Owns the checks an auditor runs with nothing but the files and the log's public key; it
//! must not trust anything derived (no `tree.*`, no index): every entry is re-hashed.
//!
//! 1. Every checkpoint (`checkpoint`, and each line of `checkpoints.jsonl` when present) must
//!    carry a valid signature by the key; two checkpoints of one size must agree.
//! 2. The entries are re-hashed in order; the root after each checkpoint's size must be the
//!    signed one. A mismatch locates a change to the *checkpoint interval* `[from, to)`: the
//!    entries between the last checkpoint that still matched and the first that no longer does.
//! 3. Sequence numbers must run on without a hole (gap entries account for missed events): a
//!    removed, inserted or reordered event is located at its *index*.
//! 4. A log shorter than a size it signed was truncated (located at its end).
//! 5. A checkpoint the verifier kept from earlier (`--trusted-checkpoint`) must be a prefix of
//!    this log: if not, the log was replaced by a fork of its history.
//!
//! Key and format problems (an unreadable key, a missing file, a trusted checkpoint that does
//! not verify) are errors; what the log's contents show is a [`Report`] with [`Problem`]s.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;

use crate::entry::{self, Numbering};
use crate::log::{read_text, CheckpointLine, CHECKPOINT, CHECKPOINTS, ENTRIES, MAX_ENTRY};
use crate::merkle::{self, Frontier, Hash};
use crate::note::{Checkpoint, Verifier};
use crate::AuditError;

/// What kind of tampering a [`Problem`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A checkpoint does not verify with the key, or two checkpoints of one size disagree.
    BadCheckpoint,
    /// The entries no longer give a signed root: something in `[from, to)` changed.
    RootMismatch,
    /// An event is missing, extra or out of order at `index`.
    Sequence,
    /// A line is not an entry (not JSON, or cut short) at `index`.
    NotAnEntry,
    /// The log is shorter than a size it signed.
    Truncated,
    /// The log is not an extension of the checkpoint the verifier kept.
    Fork,
}

/// One finding of the verifier, located as precisely as the evidence allows.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What it is.
    pub kind: ProblemKind,
    /// The first bad entry, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The checkpoint interval `[from, to)` it lies in, when the index is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// See `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// In words.
    pub detail: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Entries re-hashed.
    pub entries: u64,
    /// Signed checkpoints checked.
    pub checkpoints: usize,
    /// Size of the latest valid checkpoint.
    pub latest_size: Option<u64>,
    /// Root of the whole log as re-hashed (base64).
    pub root: String,
    /// Entries after the latest checkpoint, not yet covered by any signature.
    pub uncovered: u64,
    /// Size of the trusted checkpoint checked against, if one was given.
    pub trusted_size: Option<u64>,
    /// Everything found, in the order found.
    pub problems: Vec<Problem>,
}

impl Report {
    /// No tampering found.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a checkpoint size must give.
#[derive(Debug, Clone, Copy)]
struct Expect {
    root: Hash,
    trusted: bool,
}

/// Verify the log whose files are in `dir` with the key `v`, and against `trusted` (a
/// checkpoint note the verifier kept), if given.
pub fn verify_dir(dir: &Path, v: &Verifier, trusted: Option<&str>) -> Result<Report, AuditError> {
    verify_dir_with_progress(dir, v, trusted, &mut |_| {})
}

/// [`verify_dir`], telling `progress` how many bytes of `entries.jsonl` each step re-hashed
/// (for a progress bar: the file's size is the whole).
pub fn verify_dir_with_progress(
    dir: &Path,
    v: &Verifier,
    trusted: Option<&str>,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, AuditError> {
    let mut report = Report::default();
    let mut expect: BTreeMap<u64, Expect> = BTreeMap::new();
    let mut add = |size: u64, e: Expect, problems: &mut Vec<Problem>| match expect.get(&size) {
        Some(o) if o.root != e.root => problems.push(Problem {
            kind: if e.trusted || o.trusted {
                ProblemKind::Fork
            } else {
                ProblemKind::BadCheckpoint
            },
            index: None,
            from: None,
            to: Some(size),
            detail: format!(
                "two signed checkpoints of size {size} have different roots: the log was forked"
            ),
        }),
        Some(o) => {
            let trusted = o.trusted || e.trusted;
            expect.insert(size, Expect { trusted, ..e });
        }
        None => {
            expect.insert(size, e);
        }
    };

    if let Some(t) = trusted {
        let c = Checkpoint::open(t, v).map_err(|e| {
            AuditError::BadSignature(format!(
                "the trusted checkpoint does not verify with this key: {e}"
            ))
        })?;
        report.trusted_size = Some(c.size);
        add(
            c.size,
            Expect {
                root: c.root,
                trusted: true,
            },
            &mut report.problems,
        );
    }

    let latest_path = dir.join(CHECKPOINT);
    if !latest_path.exists() {
        return Err(AuditError::malformed(
            "export",
            format!("{} is missing", latest_path.display()),
        ));
    }
    let latest = read_text(&latest_path)?;
    match Checkpoint::open(&latest, v) {
        Ok(c) => {
            report.checkpoints += 1;
            report.latest_size = Some(c.size);
            add(
                c.size,
                Expect {
                    root: c.root,
                    trusted: false,
                },
                &mut report.problems,
            );
        }
        Err(e) => report.problems.push(Problem {
            kind: ProblemKind::BadCheckpoint,
            index: None,
            from: None,
            to: None,
            detail: format!("{CHECKPOINT} does not verify: {e}"),
        }),
    }
    for (n, line) in read_text(&dir.join(CHECKPOINTS))?.lines().enumerate() {
        let opened = serde_json::from_str::<CheckpointLine>(line)
            .map_err(|e| AuditError::malformed("checkpoint line", e.to_string()))
            .and_then(|l| Checkpoint::open(&l.note, v));
        match opened {
            Ok(c) => {
                report.checkpoints += 1;
                report.latest_size = Some(report.latest_size.unwrap_or(0).max(c.size));
                add(
                    c.size,
                    Expect {
                        root: c.root,
                        trusted: false,
                    },
                    &mut report.problems,
                );
            }
            Err(e) => report.problems.push(Problem {
                kind: ProblemKind::BadCheckpoint,
                index: None,
                from: None,
                to: None,
                detail: format!("line {} of {CHECKPOINTS} does not verify: {e}", n + 1),
            }),
        }
    }

    // Re-hash every entry.
    let path = dir.join(ENTRIES);
    let f = File::open(&path).map_err(|e| AuditError::io(&path, e))?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let mut frontier = Frontier::new();
    let mut line = Vec::new();
    let mut next_seq: Option<u64> = None;
    let mut seq_reported = false;
    let mut last_good = 0u64;
    let mut root_reported = false;
    let mut pending = expect.iter().peekable();
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| AuditError::io(&path, e))?;
        if n == 0 {
            break;
        }
        progress(n as u64);
        let index = frontier.size();
        let Some(data) = line.strip_suffix(b"\n") else {
            report.problems.push(Problem {
                kind: ProblemKind::NotAnEntry,
                index: Some(index),
                from: None,
                to: None,
                detail: format!("the file ends in the middle of entry {index}"),
            });
            break;
        };
        if data.len() > MAX_ENTRY {
            report.problems.push(Problem {
                kind: ProblemKind::NotAnEntry,
                index: Some(index),
                from: None,
                to: None,
                detail: format!("entry {index} is {} bytes, over {MAX_ENTRY}", data.len()),
            });
        }
        frontier.push(merkle::leaf_hash(data));
        // Numbering.
        let (first, last) = match entry::numbering(data) {
            Numbering::Event(s) => (Some(s), Some(s)),
            Numbering::Gap(a, b) => (Some(a), Some(b)),
            Numbering::Start => (None, None),
            Numbering::None => {
                if !seq_reported {
                    seq_reported = true;
                    report.problems.push(Problem {
                        kind: ProblemKind::NotAnEntry,
                        index: Some(index),
                        from: None,
                        to: None,
                        detail: format!("entry {index} is not an audit entry"),
                    });
                }
                (None, None)
            }
        };
        if let (Some(a), Some(b)) = (first, last) {
            if let Some(want) = next_seq {
                if a != want && !seq_reported {
                    seq_reported = true;
                    report.problems.push(Problem {
                        kind: ProblemKind::Sequence,
                        index: Some(index),
                        from: None,
                        to: None,
                        detail: format!(
                            "entry {index} carries seq {a} where {want} was due: an entry was removed, inserted or moved here"
                        ),
                    });
                }
            }
            next_seq = b.checked_add(1);
        }
        // Checkpoints at this size.
        let size = frontier.size();
        while let Some((&s, e)) = pending.peek() {
            if s > size {
                break;
            }
            if s == size {
                let root = frontier.root();
                if root == e.root {
                    if !e.trusted {
                        last_good = s;
                    }
                } else if e.trusted {
                    report.problems.push(Problem {
                        kind: ProblemKind::Fork,
                        index: None,
                        from: Some(0),
                        to: Some(s),
                        detail: format!(
                            "the first {s} entries are not those of the checkpoint you kept: the log was replaced by a different history"
                        ),
                    });
                } else if !root_reported {
                    root_reported = true;
                    report.problems.push(Problem {
                        kind: ProblemKind::RootMismatch,
                        index: None,
                        from: Some(last_good),
                        to: Some(s),
                        detail: format!(
                            "entries {last_good} to {} no longer give the root signed at size {s}: one of them was changed, inserted, removed or moved",
                            s - 1
                        ),
                    });
                }
            }
            pending.next();
        }
    }
    let n = frontier.size();
    report.entries = n;
    report.root = crate::log::Log::b64(&frontier.root());
    if let Some((&s, e)) = expect.iter().next_back() {
        if s > n {
            report.problems.push(Problem {
                kind: if e.trusted {
                    ProblemKind::Fork
                } else {
                    ProblemKind::Truncated
                },
                index: Some(n),
                from: None,
                to: Some(s),
                detail: format!(
                    "the log ends after {n} entries but a checkpoint covers {s}: entries from {n} on were removed"
                ),
            });
        }
    }
    report.uncovered = n.saturating_sub(report.latest_size.unwrap_or(0));
    Ok(report)
}
