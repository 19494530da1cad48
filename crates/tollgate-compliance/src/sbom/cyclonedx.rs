//! CycloneDX JSON 1.4–1.6: the subset of a BOM that an [`Sbom`] and its embedded VEX need.
//!
//! Owns the CycloneDX field names and shapes (tools as a 1.4 list or a 1.5+ object, nested
//! components, `bom-ref`s, `vulnerabilities[].analysis`) and their mapping to [`Sbom`] and
//! [`Statement`]. It must not decide what a statement means for a device (that is
//! [`crate::evaluate`]) nor accept another spec version than 1.4, 1.5 and 1.6.

use std::collections::HashMap;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::json::{describe, non_empty, string_field, ComponentList, List, Probe};
use super::{dedup, Component, Sbom};
use crate::vex::{Statement, Status};

/// The spec versions read.
pub(crate) const VERSIONS: [&str; 3] = ["1.4", "1.5", "1.6"];

/// Check `bomFormat` and `specVersion`; the version when both are right.
pub(crate) fn check_version(probe: &Probe) -> Result<String, String> {
    match string_field("bomFormat", probe.bom_format.as_ref())? {
        Some(f) if f == "CycloneDX" => {}
        Some(f) => return Err(format!("bomFormat is {f:?}, expected \"CycloneDX\"")),
        None => return Err("specVersion is present but bomFormat is missing".to_string()),
    }
    match string_field("specVersion", probe.spec_version.as_ref())? {
        Some(v) if VERSIONS.contains(&v.as_str()) => Ok(v),
        Some(v) => Err(format!(
            "specVersion {v:?} is not supported (1.4, 1.5 and 1.6 are)"
        )),
        None => Err(match &probe.spec_version {
            None => "specVersion is missing".to_string(),
            Some(other) => format!("specVersion must be a string, found {}", describe(other)),
        }),
    }
}

/// A BOM (or a BOM used as a VEX document).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Bom {
    metadata: Option<Metadata>,
    components: ComponentList<Comp>,
    vulnerabilities: List<Vulnerability>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    timestamp: Option<String>,
    tools: Option<Tools>,
    authors: List<Contact>,
    supplier: Option<Organization>,
    component: Option<Comp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Contact {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Organization {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Comp {
    #[serde(rename = "bom-ref")]
    bom_ref: Option<String>,
    name: Option<String>,
    version: Option<String>,
    purl: Option<String>,
    cpe: Option<String>,
    supplier: Option<Organization>,
    components: ComponentList<Comp>,
}

/// `metadata.tools`: a list of tools (1.4, deprecated in 1.5) or `{components, services}`.
#[derive(Debug, Default)]
struct Tools(Vec<Tool>);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tool {
    name: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolsObject {
    components: List<Tool>,
    services: List<Tool>,
}

impl<'de> Deserialize<'de> for Tools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ToolsVisitor;
        impl<'de> Visitor<'de> for ToolsVisitor {
            type Value = Tools;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of tools or an object with components and services")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Tools, E> {
                Ok(Tools::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Tools, A::Error> {
                let list: List<Tool> =
                    Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Tools(list.0))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Tools, A::Error> {
                let object = ToolsObject::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Tools(
                    object
                        .components
                        .0
                        .into_iter()
                        .chain(object.services.0)
                        .collect(),
                ))
            }
        }
        deserializer.deserialize_any(ToolsVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Vulnerability {
    id: Option<String>,
    references: List<Reference>,
    analysis: Option<Analysis>,
    affects: List<Affects>,
    published: Option<String>,
    updated: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Reference {
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Affects {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Analysis {
    state: Option<State>,
    justification: Option<String>,
    response: List<String>,
    detail: Option<String>,
    #[serde(rename = "firstIssued")]
    first_issued: Option<String>,
    #[serde(rename = "lastUpdated")]
    last_updated: Option<String>,
}

/// `analysis.state`, every value CycloneDX 1.4–1.6 defines.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Resolved,
    ResolvedWithPedigree,
    Exploitable,
    InTriage,
    FalsePositive,
    NotAffected,
}

impl State {
    fn status(self) -> Status {
        match self {
            State::NotAffected | State::FalsePositive => Status::NotAffected,
            State::Exploitable => Status::Affected,
            State::Resolved | State::ResolvedWithPedigree => Status::Fixed,
            State::InTriage => Status::UnderInvestigation,
        }
    }
}

fn tool_name(tool: Tool) -> Option<String> {
    match (non_empty(tool.name), non_empty(tool.version)) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (Some(n), None) => Some(n),
        (None, _) => None,
    }
}

fn component(c: &Comp) -> Component {
    Component {
        name: c.name.clone().unwrap_or_default(),
        version: non_empty(c.version.clone()),
        purl: non_empty(c.purl.clone()),
        supplier: c.supplier.as_ref().and_then(|s| non_empty(s.name.clone())),
        cpe: non_empty(c.cpe.clone()),
    }
}

/// Every component at any depth, depth first in document order, without recursion.
fn flatten<'a>(roots: &'a [Comp], out: &mut Vec<&'a Comp>) {
    let mut stack: Vec<&'a Comp> = roots.iter().rev().collect();
    while let Some(c) = stack.pop() {
        out.push(c);
        stack.extend(c.components.0.iter().rev());
    }
}

impl Bom {
    /// Who made the document: authors' names (else e-mails), else the supplier's name.
    pub(crate) fn author(&self) -> Option<String> {
        let meta = self.metadata.as_ref()?;
        authors(meta).into_iter().next().or_else(|| {
            meta.supplier
                .as_ref()
                .and_then(|s| non_empty(s.name.clone()))
        })
    }

    /// `metadata.timestamp`.
    pub(crate) fn timestamp(&self) -> Option<String> {
        self.metadata
            .as_ref()
            .and_then(|m| non_empty(m.timestamp.clone()))
    }

    /// Every component, the described root and its sub-components included.
    fn all_components(&self) -> Vec<&Comp> {
        let mut all = Vec::new();
        if let Some(root) = self.metadata.as_ref().and_then(|m| m.component.as_ref()) {
            all.push(root);
            flatten(&root.components.0, &mut all);
        }
        flatten(&self.components.0, &mut all);
        all
    }

    /// The vulnerabilities that carry an analysis state, as VEX statements: `affects[].ref`
    /// resolved through the document's `bom-ref`s to package URLs (a BOM-Link's fragment too),
    /// kept as given when nothing matches.
    pub(crate) fn statements(&self) -> Vec<Statement> {
        let purls: HashMap<&str, &str> = self
            .all_components()
            .into_iter()
            .filter_map(|c| Some((c.bom_ref.as_deref()?, c.purl.as_deref()?)))
            .collect();
        let resolve = |r: &str| -> String {
            let fragment = r
                .strip_prefix("urn:cdx:")
                .and_then(|rest| rest.split_once('#'))
                .map(|(_, f)| f);
            purls
                .get(r)
                .or_else(|| fragment.and_then(|f| purls.get(f)))
                .map_or_else(|| r.to_string(), |p| (*p).to_string())
        };
        let document_time = self.timestamp();
        let mut out = Vec::new();
        for v in &self.vulnerabilities.0 {
            let Some(analysis) = &v.analysis else {
                continue;
            };
            let Some(state) = analysis.state else {
                continue;
            };
            let Some(id) = non_empty(v.id.clone()) else {
                continue;
            };
            let responses: Vec<&str> = analysis
                .response
                .0
                .iter()
                .map(|r| r.trim())
                .filter(|r| !r.is_empty())
                .collect();
            out.push(Statement {
                vulnerability: id,
                aliases: v
                    .references
                    .0
                    .iter()
                    .filter_map(|r| non_empty(r.id.clone()))
                    .collect(),
                products: Vec::new(),
                components: v
                    .affects
                    .0
                    .iter()
                    .filter_map(|a| non_empty(a.reference.clone()))
                    .map(|r| resolve(&r))
                    .collect(),
                status: state.status(),
                justification: non_empty(analysis.justification.clone()),
                detail: non_empty(analysis.detail.clone()),
                action: (!responses.is_empty()).then(|| responses.join(", ")),
                timestamp: non_empty(analysis.last_updated.clone())
                    .or_else(|| non_empty(analysis.first_issued.clone()))
                    .or_else(|| non_empty(v.updated.clone()))
                    .or_else(|| non_empty(v.published.clone()))
                    .or_else(|| document_time.clone()),
            });
        }
        out
    }

    /// The index of the first vulnerability with an analysis state but no `id` (left out of
    /// [`Bom::statements`]), for the VEX reader to refuse.
    pub(crate) fn unnamed_vulnerability(&self) -> Option<usize> {
        self.vulnerabilities.0.iter().position(|v| {
            v.analysis.as_ref().is_some_and(|a| a.state.is_some())
                && non_empty(v.id.clone()).is_none()
        })
    }
}

fn authors(meta: &Metadata) -> Vec<String> {
    meta.authors
        .0
        .iter()
        .filter_map(|a| non_empty(a.name.clone()).or_else(|| non_empty(a.email.clone())))
        .collect()
}

/// The [`Sbom`] of a BOM whose `specVersion` is `version`.
pub(crate) fn to_sbom(mut bom: Bom, version: String) -> Sbom {
    let vex = bom.statements();
    let meta = bom.metadata.take().unwrap_or_default();
    let root = meta.component.as_ref().map(component);
    let supplier = meta
        .supplier
        .as_ref()
        .and_then(|s| non_empty(s.name.clone()))
        .or_else(|| root.as_ref().and_then(|r| r.supplier.clone()));
    // The root's own sub-components (cargo-cyclonedx lists the crate's targets there) are
    // parts of what is described, not components it contains.
    let mut flat = Vec::new();
    flatten(&bom.components.0, &mut flat);
    let components = dedup(flat.into_iter().map(component).collect(), root.as_slice());
    Sbom {
        format: format!("CycloneDX {version}"),
        authors: authors(&meta),
        supplier,
        timestamp: non_empty(meta.timestamp.clone()),
        tools: meta
            .tools
            .map(|t| t.0.into_iter().filter_map(tool_name).collect())
            .unwrap_or_default(),
        components,
        vex,
    }
}
