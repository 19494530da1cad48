//! The one error type of the crate. It must not carry anything but what a caller needs to
//! report the problem (no engine state).

/// Why a configuration, verdict or suppression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// The input is larger than the limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// `detection.toml` could not be loaded: every problem, each as `source:line:col: message`.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),
    /// No alert has this id.
    #[error("no alert {0:?}")]
    UnknownAlert(String),
    /// No suppression has this id.
    #[error("no suppression {0:?}")]
    UnknownSuppression(String),
    /// A suppression request is not valid.
    #[error("invalid suppression: {0}")]
    InvalidSuppression(String),
}
