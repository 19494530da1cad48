//! SBOM documents: CycloneDX JSON 1.4–1.6 and SPDX 2.3 JSON (2.2 accepted too, its JSON shape
//! being the same for what is read here), read into one [`Sbom`] shape, and the CISA/NTIA
//! minimum elements that a document lacks ([`Sbom::minimum_elements`]).
//!
//! Owns format detection, the lenient reading of each format (unknown fields ignored, absent
//! fields defaulted, a present field of the wrong type refused with its JSON path, line and
//! column), component flattening and deduplication, and the embedded VEX of a CycloneDX BOM.
//! It must not judge components (vulnerabilities, licences, policy): that is [`crate::osv`],
//! [`crate::vex`] and [`crate::evaluate`]. It does no I/O and never panics on input: the size
//! is checked before reading, nesting is bounded by serde_json's recursion limit, and list
//! items and components are counted while reading (see `MAX_COMPONENTS`).

pub(crate) mod cyclonedx;
pub(crate) mod json;
mod spdx;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ComplianceError, MAX_DOCUMENT_BYTES};

/// The most components (CycloneDX components at any depth, SPDX packages) one document may
/// list; more is refused while reading.
pub const MAX_COMPONENTS: usize = 200_000;

/// One component an SBOM lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Its name (empty when the document gives none).
    pub name: String,
    /// Its version as written.
    pub version: Option<String>,
    /// Its package URL, as written.
    pub purl: Option<String>,
    /// Who supplies it (CycloneDX `supplier.name`, SPDX `supplier` without its
    /// `Organization:`/`Person:` prefix).
    pub supplier: Option<String>,
    /// Its CPE (CycloneDX `cpe`, SPDX `cpe23Type` reference, else `cpe22Type`).
    pub cpe: Option<String>,
}

/// An SBOM document, whatever its format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sbom {
    /// Format and version: `"CycloneDX 1.5"`, `"SPDX 2.3"`.
    pub format: String,
    /// Who made the SBOM data: CycloneDX `metadata.authors` (name, else e-mail); SPDX
    /// `creationInfo.creators` entries `Person:` and `Organization:`, prefix removed. Tools are
    /// never authors.
    pub authors: Vec<String>,
    /// The supplier of what the SBOM describes: CycloneDX `metadata.supplier`, else
    /// `metadata.component.supplier`; SPDX the described package's `supplier`.
    pub supplier: Option<String>,
    /// When the SBOM was made, as written.
    pub timestamp: Option<String>,
    /// The tools that produced it, `"name version"`.
    pub tools: Vec<String>,
    /// Every component at any depth, in document order, deduplicated by package URL (or by
    /// name and version when there is none). The described root (and its own sub-components)
    /// is not one of them.
    pub components: Vec<Component>,
    /// CycloneDX `vulnerabilities[]` that carry an `analysis.state` (embedded VEX).
    pub vex: Vec<crate::vex::Statement>,
}

/// A minimum element the SBOM lacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// `"author"`, `"supplier"`, `"timestamp"`, `"component name"`, `"component version"`,
    /// `"component identifier"` (neither package URL nor CPE) or `"component supplier"`.
    pub element: String,
    /// How many are missing: 1 for a document-level element, else the number of components.
    pub missing: usize,
    /// Up to [`Gap::MAX_EXAMPLES`] component names (or `name@version`) that lack it; empty for a
    /// document-level element.
    pub examples: Vec<String>,
}

impl Gap {
    /// The most examples a component-level gap gives.
    pub const MAX_EXAMPLES: usize = 5;
}

impl Sbom {
    /// Read a CycloneDX JSON (spec 1.4, 1.5, 1.6) or SPDX JSON (2.3, or 2.2) document.
    ///
    /// Anything else is refused with what was found: another version, another encoding (XML,
    /// tag-value), another kind of document (OpenVEX, SPDX 3), malformed JSON, a field of the
    /// wrong type (with its JSON path, line and column), input over [`MAX_DOCUMENT_BYTES`],
    /// nesting past serde_json's limit, or more than [`MAX_COMPONENTS`] components.
    pub fn parse(bytes: &[u8]) -> Result<Sbom, ComplianceError> {
        let size = bytes.len() as u64;
        if size > MAX_DOCUMENT_BYTES {
            return Err(ComplianceError::TooLarge {
                what: "SBOM document".to_string(),
                size,
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        let unknown = |detail: String| ComplianceError::Sbom {
            format: "unknown".to_string(),
            detail,
        };
        let probe = json::probe(bytes).map_err(unknown)?;
        if probe.bom_format.is_some() || probe.spec_version.is_some() {
            let error = |detail: String| ComplianceError::Sbom {
                format: "CycloneDX".to_string(),
                detail,
            };
            let version = cyclonedx::check_version(&probe).map_err(error)?;
            let bom = json::parse_as::<cyclonedx::Bom>(bytes).map_err(error)?;
            return Ok(cyclonedx::to_sbom(bom, version));
        }
        if let Some(found) = &probe.spdx_version {
            let error = |detail: String| ComplianceError::Sbom {
                format: "SPDX".to_string(),
                detail,
            };
            let version = spdx::check_version(found).map_err(error)?;
            let doc = json::parse_as::<spdx::Document>(bytes).map_err(error)?;
            return Ok(spdx::to_sbom(doc, version));
        }
        Err(unknown(match &probe.context {
            Some(context) if mentions(context, "openvex") => {
                "this is an OpenVEX document, not an SBOM (read it with vex::parse)".to_string()
            }
            Some(context) if mentions(context, "spdx.org/rdf/3") => {
                "this is SPDX 3 JSON-LD; only SPDX 2.3 (and 2.2) JSON is supported".to_string()
            }
            _ => "neither CycloneDX JSON (no bomFormat/specVersion) nor SPDX JSON (no spdxVersion)"
                .to_string(),
        }))
    }

    /// The CISA/NTIA minimum elements this SBOM lacks; empty when all are present.
    ///
    /// Document level: `author`, `supplier`, `timestamp`. Component level, each counting the
    /// components that lack it: `component name`, `component version`, `component identifier`
    /// (package URL or CPE) and `component supplier`. Dependency relationships are not checked.
    pub fn minimum_elements(&self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let document = |element: &str| Gap {
            element: element.to_string(),
            missing: 1,
            examples: Vec::new(),
        };
        if self.authors.iter().all(|a| a.trim().is_empty()) {
            gaps.push(document("author"));
        }
        if blank(&self.supplier) {
            gaps.push(document("supplier"));
        }
        if blank(&self.timestamp) {
            gaps.push(document("timestamp"));
        }
        let checks: [(&str, Lacks); 4] = [
            ("component name", |c| c.name.trim().is_empty()),
            ("component version", |c| blank(&c.version)),
            ("component identifier", |c| blank(&c.purl) && blank(&c.cpe)),
            ("component supplier", |c| blank(&c.supplier)),
        ];
        for (element, lacks) in checks {
            let lacking: Vec<&Component> = self.components.iter().filter(|c| lacks(c)).collect();
            if lacking.is_empty() {
                continue;
            }
            gaps.push(Gap {
                element: element.to_string(),
                missing: lacking.len(),
                examples: lacking
                    .iter()
                    .take(Gap::MAX_EXAMPLES)
                    .map(|c| example(c))
                    .collect(),
            });
        }
        gaps
    }
}

/// Whether a component lacks an element.
type Lacks = fn(&Component) -> bool;

fn blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(|s| s.trim().is_empty())
}

fn example(c: &Component) -> String {
    let name = if c.name.trim().is_empty() {
        c.purl.as_deref().unwrap_or("(unnamed)")
    } else {
        c.name.as_str()
    };
    match c.version.as_deref().filter(|v| !v.trim().is_empty()) {
        Some(v) => format!("{name}@{v}"),
        None => name.to_string(),
    }
}

fn mentions(context: &Value, needle: &str) -> bool {
    match context {
        Value::String(s) => s.to_ascii_lowercase().contains(needle),
        Value::Array(items) => items.iter().any(|i| mentions(i, needle)),
        _ => false,
    }
}

/// Components in order, without repeats: the key is the package URL, else name and version.
/// `skip` holds keys (the described root's) that are not components.
pub(crate) fn dedup(components: Vec<Component>, skip: &[Component]) -> Vec<Component> {
    let key = |c: &Component| match c.purl.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => format!("purl\u{0}{p}"),
        None => format!(
            "nv\u{0}{}\u{0}{}",
            c.name,
            c.version.as_deref().unwrap_or_default()
        ),
    };
    let mut seen: HashSet<String> = skip.iter().map(key).collect();
    components
        .into_iter()
        .filter(|c| seen.insert(key(c)))
        .collect()
}
