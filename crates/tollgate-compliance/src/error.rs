//! The one error type of the crate.

/// Why a document, record, profile or version was refused. Every variant says where and why
/// precisely enough to fix the input.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ComplianceError {
    /// The input is larger than the limit for its kind.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An SBOM could not be read.
    #[error("SBOM ({format}): {detail}")]
    Sbom {
        /// The format as far as it was recognised (`CycloneDX`, `SPDX`, or `unknown`).
        format: String,
        /// What is wrong, and where (a JSON path or line and column).
        detail: String,
    },
    /// An OSV record could not be read.
    #[error("OSV record {origin}: {detail}")]
    Osv {
        /// Where it came from (file or archive entry, and id when known).
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// A VEX document could not be read.
    #[error("VEX ({format}): {detail}")]
    Vex {
        /// `OpenVEX`, `CycloneDX` or `unknown`.
        format: String,
        /// What is wrong.
        detail: String,
    },
    /// A compliance profile could not be loaded: every problem, each with line and column.
    #[error("{}", .0.join("\n"))]
    Profile(Vec<String>),
    /// A version string does not parse in its ecosystem.
    #[error("{ecosystem} version {version:?}: {detail}")]
    Version {
        /// The ecosystem.
        ecosystem: String,
        /// The version as given.
        version: String,
        /// Why.
        detail: String,
    },
    /// A package URL does not parse, or names no ecosystem OSV knows.
    #[error("package URL {purl:?}: {detail}")]
    Purl {
        /// The package URL as given.
        purl: String,
        /// Why.
        detail: String,
    },
    /// A file or archive could not be read.
    #[error("{path}: {detail}")]
    Read {
        /// The path (and archive entry).
        path: String,
        /// Why.
        detail: String,
    },
}
