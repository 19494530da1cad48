//! Check for the `admin_bodies` fuzz target: arbitrary bytes as the body of every admin API
//! request that takes one, through `tollgate_control::requests::parse`, then the name and
//! certificate checks the control plane applies to what parsed.
//!
//! Shared by `fuzz/fuzz_targets/admin_bodies.rs` (libFuzzer) and
//! `crates/tollgate-control/tests/fuzz_corpus.rs` (replays `fuzz/corpus/admin_bodies/` on
//! stable), so it uses only `tollgate-control`, `tollgate-pki` and `serde_json`. Every broken
//! invariant panics. See docs/fuzzing.md.

use serde::de::DeserializeOwned;
use tollgate_control::requests::{
    parse, AddDevice, AddOperator, AddSupplier, DeleteDevice, OperatorRoleRequest, PatchDevice,
    QuarantineRequest, ReleaseRequest, RenewOperator, RenewServer, RequestError, RevokeOperator,
    RevokeRequest, TokenRequest,
};

/// Parse `data` as each request body; panics on any broken invariant.
pub fn check(data: &[u8]) {
    if let Some(r) = parsed::<AddDevice>(data) {
        name(&r.id);
        names(&r.groups);
    }
    if let Some(r) = parsed::<TokenRequest>(data) {
        names(&r.groups);
    }
    // Reasons and sources are free text the control plane stores as they are: only the parse
    // contract applies to these.
    let _ = parsed::<QuarantineRequest>(data);
    let _ = parsed::<ReleaseRequest>(data);
    let _ = parsed::<RevokeRequest>(data);
    if let Some(r) = parsed::<AddSupplier>(data) {
        name(&r.name);
        names(&r.groups);
        supplier_ca(&r.ca_pem);
    }
    // Operators and the device lifecycle: the parse contract, then the same name check the
    // control plane applies (a role that is neither admin nor viewer is refused, never read).
    if let Some(r) = parsed::<AddOperator>(data) {
        name(&r.name);
        let _ = tollgate_control::operators::parse_role(&r.role);
    }
    if let Some(r) = parsed::<OperatorRoleRequest>(data) {
        let _ = tollgate_control::operators::parse_role(&r.role);
    }
    let _ = parsed::<RenewOperator>(data);
    let _ = parsed::<RevokeOperator>(data);
    let _ = parsed::<RenewServer>(data);
    let _ = parsed::<DeleteDevice>(data);
    if let Some(r) = parsed::<PatchDevice>(data) {
        if let Some(groups) = &r.groups {
            names(groups);
        }
    }
}

/// `parse::<T>`, with the invariants of its result; the request when one parsed.
fn parsed<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    let blank = data.iter().all(u8::is_ascii_whitespace);
    // JSON is UTF-8 text; `Value` checks every string (skipping one with `IgnoredAny` would
    // not).
    let json = std::str::from_utf8(data).is_ok()
        && serde_json::from_slice::<serde_json::Value>(data).is_ok();
    match parse::<T>(data) {
        Ok(None) => {
            assert!(blank, "a body with content parsed as no body");
            None
        }
        Ok(Some(r)) => {
            assert!(
                !blank && json,
                "a request parsed from a body that is not JSON"
            );
            Some(r)
        }
        Err(e) => {
            assert!(!blank, "a blank body was refused: {e}");
            match e {
                RequestError::Syntax(_) => {
                    assert!(!json, "valid JSON reported as a syntax error: {e}")
                }
                RequestError::Shape(_) => {
                    assert!(
                        json,
                        "a body that is not JSON reported as the wrong shape: {e}"
                    )
                }
                _ => {}
            }
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// The control plane's name check (device ids, group and supplier names), against an
/// independent statement of the alphabet.
fn name(n: &str) {
    let expected = !n.is_empty()
        && n.len() <= 128
        && !n.starts_with(['.', '-'])
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    let got = tollgate_pki::validate_device_id(n);
    assert_eq!(got.is_ok(), expected, "validate_device_id({n:?}) = {got:?}");
    if let Err(e) = got {
        assert!(!e.to_string().is_empty());
    }
}

fn names(groups: &[String]) {
    for g in groups {
        name(g);
    }
}

/// A supplier's CA bundle, as the control plane reads it (every certificate must parse).
fn supplier_ca(pem: &str) {
    if let Ok(certs) = tollgate_pki::parse_pem_certificates(pem) {
        assert!(!certs.is_empty(), "Ok with no certificate");
        for c in certs {
            assert!(c
                .serial
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}
