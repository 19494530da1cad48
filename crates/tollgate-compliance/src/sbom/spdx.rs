//! SPDX 2.3 JSON (and 2.2, whose JSON shape is the same for the fields read here): the subset
//! of a document that an [`Sbom`] needs.
//!
//! Owns the SPDX field names, the `Person:`/`Organization:`/`Tool:` creator prefixes, package
//! URL and CPE external references, and which packages the document describes (its root, not a
//! component). It must not read SPDX 3 (JSON-LD) or the tag-value and RDF encodings.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use super::json::{non_empty, string_field, ComponentList, List};
use super::{dedup, Component, Sbom};

/// Check `spdxVersion`; the version number (`2.3`) when it is read.
pub(crate) fn check_version(found: &Value) -> Result<String, String> {
    match string_field("spdxVersion", Some(found))? {
        Some(v) if v == "SPDX-2.3" || v == "SPDX-2.2" => {
            Ok(v.trim_start_matches("SPDX-").to_string())
        }
        Some(v) => Err(format!(
            "spdxVersion {v:?} is not supported (SPDX-2.3 and SPDX-2.2 are)"
        )),
        None => Err("spdxVersion is null".to_string()),
    }
}

/// An SPDX document.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Document {
    #[serde(rename = "SPDXID")]
    spdx_id: Option<String>,
    #[serde(rename = "creationInfo")]
    creation_info: Option<CreationInfo>,
    #[serde(rename = "documentDescribes")]
    document_describes: List<String>,
    packages: ComponentList<Package>,
    relationships: List<Relationship>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreationInfo {
    created: Option<String>,
    creators: List<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: Option<String>,
    name: Option<String>,
    #[serde(rename = "versionInfo")]
    version_info: Option<String>,
    supplier: Option<String>,
    #[serde(rename = "externalRefs")]
    external_refs: List<ExternalRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExternalRef {
    #[serde(rename = "referenceCategory")]
    category: Option<String>,
    #[serde(rename = "referenceType")]
    kind: Option<String>,
    #[serde(rename = "referenceLocator")]
    locator: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Relationship {
    #[serde(rename = "spdxElementId")]
    element: Option<String>,
    #[serde(rename = "relationshipType")]
    kind: Option<String>,
    #[serde(rename = "relatedSpdxElement")]
    related: Option<String>,
}

/// An actor without its `Person:`/`Organization:` prefix; `None` for `NOASSERTION` or a tool.
fn actor(s: &str) -> Option<String> {
    let s = s.trim();
    let rest = s
        .strip_prefix("Person:")
        .or_else(|| s.strip_prefix("Organization:"))?;
    non_empty(Some(rest.to_string()))
}

fn supplier(s: Option<&str>) -> Option<String> {
    let s = s?.trim();
    if s.eq_ignore_ascii_case("NOASSERTION") || s.is_empty() {
        return None;
    }
    actor(s).or_else(|| Some(s.to_string()))
}

fn reference(p: &Package, categories: &[&str], kind: &str) -> Option<String> {
    p.external_refs
        .0
        .iter()
        .filter(|r| {
            r.category
                .as_deref()
                .is_some_and(|c| categories.iter().any(|k| c.eq_ignore_ascii_case(k)))
                && r.kind.as_deref() == Some(kind)
        })
        .find_map(|r| non_empty(r.locator.clone()))
}

fn component(p: &Package) -> Component {
    let managers = ["PACKAGE-MANAGER", "PACKAGE_MANAGER"];
    let security = ["SECURITY"];
    Component {
        name: p.name.clone().unwrap_or_default(),
        version: non_empty(p.version_info.clone()).filter(|v| v != "NOASSERTION"),
        purl: reference(p, &managers, "purl"),
        supplier: supplier(p.supplier.as_deref()),
        cpe: reference(p, &security, "cpe23Type").or_else(|| reference(p, &security, "cpe22Type")),
    }
}

/// The [`Sbom`] of a document whose `spdxVersion` is `SPDX-{version}`.
pub(crate) fn to_sbom(doc: Document, version: String) -> Sbom {
    let document_id = doc.spdx_id.as_deref().unwrap_or("SPDXRef-DOCUMENT");
    let mut described: HashSet<&str> = doc
        .document_describes
        .0
        .iter()
        .map(String::as_str)
        .collect();
    for r in &doc.relationships.0 {
        match (
            r.element.as_deref(),
            r.kind.as_deref(),
            r.related.as_deref(),
        ) {
            (Some(e), Some("DESCRIBES"), Some(related)) if e == document_id => {
                described.insert(related);
            }
            (Some(e), Some("DESCRIBED_BY"), Some(related)) if related == document_id => {
                described.insert(e);
            }
            _ => {}
        }
    }
    let is_root = |p: &Package| {
        p.spdx_id
            .as_deref()
            .is_some_and(|id| described.contains(id))
    };
    let roots: Vec<Component> = doc
        .packages
        .0
        .iter()
        .filter(|p| is_root(p))
        .map(component)
        .collect();
    let components = doc
        .packages
        .0
        .iter()
        .filter(|p| !is_root(p))
        .map(component)
        .collect();
    let info = doc.creation_info.as_ref();
    let creators = info.map(|i| i.creators.0.as_slice()).unwrap_or_default();
    Sbom {
        format: format!("SPDX {version}"),
        authors: creators.iter().filter_map(|c| actor(c)).collect(),
        supplier: roots.iter().find_map(|r| r.supplier.clone()),
        timestamp: info.and_then(|i| non_empty(i.created.clone())),
        tools: creators
            .iter()
            .filter_map(|c| c.trim().strip_prefix("Tool:"))
            .filter_map(|t| non_empty(Some(t.to_string())))
            .collect(),
        components: dedup(components, &[]),
        vex: Vec::new(),
    }
}
