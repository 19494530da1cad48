//! Every event type the code can emit is documented in the events table of
//! `docs/configuration.md`, the table operators read to write alerts and parsers against.
//!
//! The list of types is read from `EventKind` itself (its variants, in `src/lib.rs`), so a new
//! variant fails this test until the table names it.

use std::path::Path;

/// The `snake_case` names of `EventKind`'s variants, as serde writes them in `"type"`.
fn event_types() -> Vec<String> {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("reading src/lib.rs");
    let start = src
        .find("pub enum EventKind {")
        .expect("EventKind is defined in src/lib.rs");
    let mut depth = 0usize;
    let mut names = Vec::new();
    for line in src[start..].lines() {
        // A variant starts at depth 1 with four spaces of indentation and a capital letter.
        if depth == 1 {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if indent == 4 && trimmed.starts_with(|c: char| c.is_ascii_uppercase()) {
                let name: String = trimmed
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                names.push(snake_case(&name));
            }
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if depth == 0 && !names.is_empty() {
            break;
        }
    }
    names
}

fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn every_event_type_the_code_can_emit_is_in_the_configuration_events_table() {
    let types = event_types();
    // A floor, so a parsing slip that finds nothing cannot pass.
    assert!(types.len() >= 50, "found only {types:?}");
    assert!(types.contains(&"connection_accepted".to_owned()));
    assert!(types.contains(&"events_dropped".to_owned()));
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).expect("reading docs/configuration.md");
    let table_start = doc
        .find("| `connection_accepted`")
        .expect("the events table starts with connection_accepted");
    let table_end = doc[table_start..]
        .find("\n\n")
        .map_or(doc.len(), |n| table_start + n);
    let table = &doc[table_start..table_end];
    let missing: Vec<&String> = types
        .iter()
        .filter(|t| !table.contains(&format!("`{t}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "event types missing from the events table in docs/configuration.md: {missing:?}"
    );
}

#[test]
fn snake_case_matches_serde() {
    assert_eq!(snake_case("ConnectionAccepted"), "connection_accepted");
    assert_eq!(snake_case("Alert"), "alert");
}
