//! Bounded, path-reporting JSON reading shared by the SBOM and VEX parsers.
//!
//! Owns the limits every document parser applies beyond `MAX_DOCUMENT_BYTES` (list items in
//! total, components in total; nesting of what is read is serde_json's recursion limit of 128,
//! while fields nobody reads are skipped by serde_json without recursion) and the wording
//! of a JSON error: the JSON path of the offending value, then serde_json's line and column.
//! It must not know any SBOM or VEX format: those live in the sibling modules and in `vex`.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::sbom::MAX_COMPONENTS;

/// The most list items of any kind (components, authors, references, statements…) that one
/// document may hold in total. Bounds memory: an empty item costs 3 bytes of input but a few
/// hundred bytes once read.
pub(crate) const MAX_ITEMS: usize = 1_000_000;

thread_local! {
    /// (items left, components left) for the parse running on this thread. Set by
    /// [`parse_as`] before it reads and only read during that call.
    static BUDGET: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// The top-level fields that tell the formats apart. Everything else is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Probe {
    /// CycloneDX: `"CycloneDX"`.
    #[serde(rename = "bomFormat")]
    pub bom_format: Option<Value>,
    /// CycloneDX: `"1.5"`.
    #[serde(rename = "specVersion")]
    pub spec_version: Option<Value>,
    /// SPDX 2: `"SPDX-2.3"`.
    #[serde(rename = "spdxVersion")]
    pub spdx_version: Option<Value>,
    /// OpenVEX and SPDX 3 (JSON-LD).
    #[serde(rename = "@context")]
    pub context: Option<Value>,
}

/// A short description of what a non-JSON or non-object input looks like, or of the JSON error.
pub(crate) fn probe(bytes: &[u8]) -> Result<Probe, String> {
    let first = bytes.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("the document is empty".to_string()),
        Some(b'<') => return Err("this is XML; only the JSON encodings are supported".to_string()),
        Some(b'{') => {}
        Some(b'[') => {
            return Err(
                "the document is a JSON array; expected a JSON object at the top level".to_string(),
            )
        }
        Some(_) => {
            if bytes.starts_with(b"SPDXVersion:") || contains(bytes, b"\nSPDXVersion:") {
                return Err("this is SPDX tag-value; only SPDX JSON is supported".to_string());
            }
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let probe = Probe::deserialize(&mut de).map_err(|e| format!("not valid JSON: {e}"))?;
    de.end().map_err(|e| format!("not valid JSON: {e}"))?;
    Ok(probe)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Read `bytes` as a `T`, within the item and component budgets. The error names the JSON path
/// of the offending value and its line and column.
pub(crate) fn parse_as<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    BUDGET.with(|b| b.set((MAX_ITEMS, MAX_COMPONENTS)));
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = serde_path_to_error::deserialize::<_, T>(&mut de);
    BUDGET.with(|b| b.set((0, 0)));
    let value = result.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("at {path}: {inner}")
        }
    })?;
    de.end().map_err(|e| format!("after the document: {e}"))?;
    Ok(value)
}

/// Describe a JSON value's type and, when short, the value, for error messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("{s:?}"),
        Value::String(_) => "a long string".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// A JSON list read within the document's item budget; `null` reads as empty. `COMPONENTS`
/// also counts each item against the component budget.
#[derive(Debug, Clone)]
pub(crate) struct List<T, const COMPONENTS: bool = false>(pub Vec<T>);

impl<T, const C: bool> Default for List<T, C> {
    fn default() -> Self {
        List(Vec::new())
    }
}

/// A list of components or packages, counted against [`MAX_COMPONENTS`].
pub(crate) type ComponentList<T> = List<T, true>;

impl<'de, T: Deserialize<'de>, const C: bool> Deserialize<'de> for List<T, C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListVisitor::<T, C>(PhantomData))
    }
}

struct ListVisitor<T, const C: bool>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const C: bool> Visitor<'de> for ListVisitor<T, C> {
    type Value = List<T, C>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(List(Vec::new()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(List(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            take::<A::Error>(C)?;
            out.push(item);
        }
        Ok(List(out))
    }
}

fn take<E: de::Error>(component: bool) -> Result<(), E> {
    BUDGET.with(|b| {
        let (items, components) = b.get();
        if items == 0 {
            return Err(E::custom(format!(
                "more than {MAX_ITEMS} list items in the document"
            )));
        }
        if component && components == 0 {
            return Err(E::custom(format!(
                "more than {MAX_COMPONENTS} components in the document"
            )));
        }
        b.set((
            items - 1,
            if component {
                components - 1
            } else {
                components
            },
        ));
        Ok(())
    })
}

/// The string value of an optional JSON value, or what it was instead.
pub(crate) fn string_field(name: &str, value: Option<&Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{name} must be a string, found {}",
            describe(other)
        )),
    }
}

/// Keep `Some` only for a value with visible text.
pub(crate) fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}
