//! The one error type of the crate. It carries what a caller needs to report the problem and,
//! for a verification failure, where the log stops being trustworthy.

use std::path::PathBuf;

/// Why an audit-log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading or writing a file of the log failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A note, checkpoint, key, proof or entry is not in its documented format.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being read ("checkpoint", "verifier key", "entry 17", ...).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An index or size is outside the tree.
    #[error("{what} {value} is outside a tree of size {size}")]
    OutOfRange {
        /// "index", "old size", ...
        what: &'static str,
        /// The value asked for.
        value: u64,
        /// The tree's size.
        size: u64,
    },
    /// A proof does not lead to the root it was checked against.
    #[error("proof does not verify: {0}")]
    ProofFailed(String),
    /// A signed note carries no valid signature by the expected key.
    #[error("{0}")]
    BadSignature(String),
    /// A key could not be generated, read or used.
    #[error("key: {0}")]
    Key(String),
    /// The stored log contradicts itself or a checkpoint it signed (a truncation, an edit, a
    /// restored backup): the log refuses to sign until an operator acts.
    #[error("the audit log is inconsistent: {0}")]
    Inconsistent(String),
}

impl AuditError {
    /// A [`AuditError::Malformed`].
    pub fn malformed(what: impl Into<String>, detail: impl Into<String>) -> AuditError {
        AuditError::Malformed {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// An [`AuditError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}
