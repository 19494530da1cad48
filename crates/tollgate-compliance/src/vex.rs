//! VEX statements: OpenVEX JSON documents, and CycloneDX BOMs or VEX documents whose
//! `vulnerabilities[]` carry an `analysis`, read into one [`Document`] shape.
//!
//! Owns the OpenVEX field names and shapes (0.2.0, and the 0.0.x string forms of
//! `vulnerability`, `products` and `subcomponents`), the OpenVEX rule that `not_affected` needs
//! a justification or an impact statement, and the CycloneDX `analysis.state` mapping to
//! [`Status`] (with `crate::sbom`'s CycloneDX reader). It must not decide whether a statement
//! applies to a device or silences an advisory: that is [`crate::evaluate`]. It does no I/O
//! and never panics on input; its bounds are the SBOM reader's (size, nesting, list items).

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sbom::cyclonedx;
use crate::sbom::json::{self, non_empty, List};
use crate::{ComplianceError, MAX_DOCUMENT_BYTES};

/// What a statement says of a vulnerability in a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The product is not affected (CycloneDX `not_affected`, `false_positive`).
    NotAffected,
    /// The product is affected (CycloneDX `exploitable`).
    Affected,
    /// The product contains a fix (CycloneDX `resolved`, `resolved_with_pedigree`).
    Fixed,
    /// Not known yet (CycloneDX `in_triage`).
    UnderInvestigation,
}

/// One VEX statement: a status of one vulnerability in some products or components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The vulnerability's id as given (`CVE-…`, `GHSA-…`, `PYSEC-…`).
    pub vulnerability: String,
    /// Other ids of the same vulnerability: OpenVEX `vulnerability.aliases`, CycloneDX
    /// `references[].id`.
    pub aliases: Vec<String>,
    /// The products as given (OpenVEX `products[].@id`, else `identifiers.purl`); empty for a
    /// CycloneDX statement, whose product is the BOM itself.
    pub products: Vec<String>,
    /// Component package URLs: OpenVEX `subcomponents[]` (`identifiers.purl`, else `@id`);
    /// CycloneDX `affects[].ref` resolved through the document's `bom-ref`s to package URLs,
    /// or kept as given when nothing matches.
    pub components: Vec<String>,
    /// The status.
    pub status: Status,
    /// Why the product is not affected, as given.
    pub justification: Option<String>,
    /// OpenVEX `impact_statement`, else `status_notes`; CycloneDX `analysis.detail`.
    pub detail: Option<String>,
    /// OpenVEX `action_statement`; CycloneDX `analysis.response[]` joined with `, `.
    pub action: Option<String>,
    /// The statement's timestamp (OpenVEX `timestamp`; CycloneDX `analysis.lastUpdated`, else
    /// `firstIssued`, else the vulnerability's `updated` or `published`), else the document's.
    pub timestamp: Option<String>,
}

/// A VEX document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// `"OpenVEX 0.2.0"` (the version from `@context`) or `"CycloneDX 1.5"`.
    pub format: String,
    /// OpenVEX `author`; CycloneDX the first of `metadata.authors`, else `metadata.supplier`.
    pub author: Option<String>,
    /// The document's timestamp.
    pub timestamp: Option<String>,
    /// Its statements in document order (CycloneDX vulnerabilities without an
    /// `analysis.state` are not statements and are left out).
    pub statements: Vec<Statement>,
}

/// Read an OpenVEX document (an `@context` naming openvex) or a CycloneDX JSON 1.4–1.6 BOM or
/// VEX document.
///
/// Refused with what was found: another kind of document, malformed JSON, a field of the wrong
/// type or an unknown status (with its JSON path, line and column), an OpenVEX `not_affected`
/// statement without a justification or an impact statement, a statement without a
/// vulnerability id (both with the statement's index), input over [`MAX_DOCUMENT_BYTES`],
/// nesting past serde_json's limit, or too many list items.
pub fn parse(bytes: &[u8]) -> Result<Document, ComplianceError> {
    let size = bytes.len() as u64;
    if size > MAX_DOCUMENT_BYTES {
        return Err(ComplianceError::TooLarge {
            what: "VEX document".to_string(),
            size,
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let error = |format: &str| {
        let format = format.to_string();
        move |detail: String| ComplianceError::Vex {
            format: format.clone(),
            detail,
        }
    };
    let probe = json::probe(bytes).map_err(error("unknown"))?;
    if let Some(version) = probe.context.as_ref().and_then(openvex_version) {
        let doc = json::parse_as::<OpenVex>(bytes).map_err(error("OpenVEX"))?;
        return openvex(doc, version).map_err(error("OpenVEX"));
    }
    if probe.bom_format.is_some() || probe.spec_version.is_some() {
        let version = cyclonedx::check_version(&probe).map_err(error("CycloneDX"))?;
        let bom = json::parse_as::<cyclonedx::Bom>(bytes).map_err(error("CycloneDX"))?;
        if let Some(index) = bom.unnamed_vulnerability() {
            return Err(error("CycloneDX")(format!(
                "vulnerabilities[{index}] has an analysis but no id"
            )));
        }
        return Ok(Document {
            format: format!("CycloneDX {version}"),
            author: bom.author(),
            timestamp: bom.timestamp(),
            statements: bom.statements(),
        });
    }
    Err(error("unknown")(if probe.spdx_version.is_some() {
        "this is an SPDX document, which carries no VEX; expected OpenVEX or CycloneDX".to_string()
    } else {
        "neither OpenVEX (no @context naming openvex) nor CycloneDX (no bomFormat/specVersion)"
            .to_string()
    }))
}

/// The OpenVEX version an `@context` names (`0.2.0` of `https://openvex.dev/ns/v0.2.0`), or
/// `None` when it names no OpenVEX context.
fn openvex_version(context: &Value) -> Option<String> {
    match context {
        Value::String(s) => {
            let rest = s.split_once("openvex.dev/ns")?.1;
            let version = rest.trim_start_matches('/').trim_start_matches('v');
            Some(if version.is_empty() {
                String::new()
            } else {
                format!(" {version}")
            })
        }
        Value::Array(items) => items.iter().find_map(openvex_version),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OpenVex {
    author: Option<String>,
    timestamp: Option<String>,
    statements: List<OpenVexStatement>,
}

#[derive(Debug, Deserialize)]
struct OpenVexStatement {
    #[serde(default)]
    vulnerability: Option<Vulnerability>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    products: List<Product>,
    status: Status,
    #[serde(default)]
    status_notes: Option<String>,
    #[serde(default)]
    justification: Option<String>,
    #[serde(default)]
    impact_statement: Option<String>,
    #[serde(default)]
    action_statement: Option<String>,
}

/// `vulnerability`: an object (0.2.0) or a bare id (0.0.x).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct VulnerabilityObject {
    #[serde(rename = "@id")]
    id: Option<String>,
    name: Option<String>,
    aliases: List<String>,
}

#[derive(Debug, Default)]
struct Vulnerability(VulnerabilityObject);

/// A product or subcomponent: an object (0.2.0) or a bare identifier (0.0.x).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProductObject {
    #[serde(rename = "@id")]
    id: Option<String>,
    identifiers: Option<Identifiers>,
    subcomponents: List<Product>,
}

#[derive(Debug, Default)]
struct Product(ProductObject);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Identifiers {
    purl: Option<String>,
    cpe23: Option<String>,
    cpe22: Option<String>,
}

/// Deserialize `T` from an object, or build it from a bare string.
struct StringOrObject<T>(fn(String) -> T, &'static str);

impl<'de, T: Deserialize<'de>> Visitor<'de> for StringOrObject<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de> Deserialize<'de> for Vulnerability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = StringOrObject::<VulnerabilityObject>(
            |name| VulnerabilityObject {
                name: Some(name),
                ..VulnerabilityObject::default()
            },
            "a vulnerability object or id",
        );
        deserializer.deserialize_any(visitor).map(Vulnerability)
    }
}

impl<'de> Deserialize<'de> for Product {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let visitor = StringOrObject::<ProductObject>(
            |id| ProductObject {
                id: Some(id),
                ..ProductObject::default()
            },
            "a product object or identifier",
        );
        deserializer.deserialize_any(visitor).map(Product)
    }
}

impl ProductObject {
    fn purl(&self) -> Option<String> {
        self.identifiers
            .as_ref()
            .and_then(|i| non_empty(i.purl.clone()))
    }

    fn other_identifier(&self) -> Option<String> {
        self.identifiers
            .as_ref()
            .and_then(|i| non_empty(i.cpe23.clone()).or_else(|| non_empty(i.cpe22.clone())))
    }
}

fn openvex(doc: OpenVex, version: String) -> Result<Document, String> {
    let document_time = non_empty(doc.timestamp);
    let mut statements = Vec::with_capacity(doc.statements.0.len());
    for (index, s) in doc.statements.0.into_iter().enumerate() {
        let vulnerability = s.vulnerability.unwrap_or_default().0;
        let Some(id) = non_empty(vulnerability.name).or_else(|| non_empty(vulnerability.id)) else {
            return Err(format!(
                "statements[{index}]: the vulnerability has no name or @id"
            ));
        };
        let justification = non_empty(s.justification);
        let impact = non_empty(s.impact_statement);
        if s.status == Status::NotAffected && justification.is_none() && impact.is_none() {
            return Err(format!(
                "statements[{index}] ({id}): status not_affected needs a justification or an \
                 impact_statement"
            ));
        }
        let products = s
            .products
            .0
            .iter()
            .filter_map(|p| {
                non_empty(p.0.id.clone())
                    .or_else(|| p.0.purl())
                    .or_else(|| p.0.other_identifier())
            })
            .collect();
        let components = s
            .products
            .0
            .iter()
            .flat_map(|p| p.0.subcomponents.0.iter())
            .filter_map(|c| {
                c.0.purl()
                    .or_else(|| non_empty(c.0.id.clone()))
                    .or_else(|| c.0.other_identifier())
            })
            .collect();
        statements.push(Statement {
            vulnerability: id,
            aliases: vulnerability
                .aliases
                .0
                .into_iter()
                .filter_map(|a| non_empty(Some(a)))
                .collect(),
            products,
            components,
            status: s.status,
            justification,
            detail: impact.or_else(|| non_empty(s.status_notes)),
            action: non_empty(s.action_statement),
            timestamp: non_empty(s.timestamp).or_else(|| document_time.clone()),
        });
    }
    Ok(Document {
        format: format!("OpenVEX{version}"),
        author: non_empty(doc.author),
        timestamp: document_time,
        statements,
    })
}
