//! Check for the `csr` fuzz target: arbitrary bytes into what Tollgate's PKI reads off the
//! network — certificate signing requests (as raw DER, and as an EST body: ASCII whitespace
//! stripped, then base64), certificates (a peer's, a supplier's bootstrap certificate), the
//! PKCS#7 certs-only reply an enrolling agent reads, and the weak-key list and fingerprints.
//!
//! Shared by `fuzz/fuzz_targets/csr.rs` (libFuzzer) and
//! `crates/tollgate-pki/tests/fuzz_corpus.rs` (replays `fuzz/corpus/csr/` on stable), so it
//! uses only `tollgate-pki` and `base64`. Every broken invariant panics. See docs/fuzzing.md.

use base64::Engine as _;
use tollgate_pki::{
    bootstrap_identity, certs_only, check_csr, is_roca_vulnerable, parse_certificate,
    parse_certs_only, validate_device_id, vulnkey_fingerprint, CsrError, KeyKind, WeakKeyList,
};

/// Feed `data` to every reader above; panics on any broken invariant.
pub fn check(data: &[u8]) {
    let weak = WeakKeyList::default();
    csr(data, &weak);
    // The EST body path (RFC 7030: base64 DER, line breaks allowed), as the control listener
    // decodes it: whitespace stripped; raw DER (starting with SEQUENCE) is taken as it is.
    let text: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.first() != Some(&0x30) {
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&text) {
            csr(&der, &weak);
            certificate(&der);
        }
    }
    certificate(data);
    if let Some(certs) = parse_certs_only(data) {
        assert!(certs.iter().all(|c| !c.is_empty()), "an empty certificate");
        let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
        assert_eq!(
            parse_certs_only(&certs_only(&refs)).as_ref(),
            Some(&certs),
            "certs-only does not round-trip"
        );
    }
    let list = WeakKeyList::parse(&String::from_utf8_lossy(data));
    assert!(
        list.len() <= data.len() / 20,
        "more fingerprints than the text can hold"
    );
    assert_eq!(vulnkey_fingerprint(data).len(), 20);
    let _ = is_roca_vulnerable(data);
}

fn csr(der: &[u8], weak: &WeakKeyList) {
    let first = check_csr(der, weak);
    match &first {
        Ok(c) => {
            if let KeyKind::Rsa(bits) = c.key {
                assert!(bits >= 2048, "an RSA key of {bits} bits passed");
            }
            // A request that passed is one of these shapes, and the same bytes pass again.
            let again = check_csr(der, weak);
            assert!(
                again
                    .as_ref()
                    .is_ok_and(|a| a.key == c.key && a.common_name == c.common_name),
                "check_csr is not deterministic: {again:?}"
            );
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let CsrError::RsaTooSmall(bits) = e {
                assert!(*bits < 2048);
            }
        }
    }
}

fn certificate(der: &[u8]) {
    if let Ok(info) = parse_certificate(der) {
        assert!(
            info.serial
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "serial is not lower-case hex: {:?}",
            info.serial
        );
        assert_eq!(info.serial.len() % 2, 0, "serial of odd length");
    }
    if let Ok(b) = bootstrap_identity(der) {
        assert!(
            validate_device_id(&b.device_id).is_ok(),
            "bootstrap identity with an invalid device id {:?}",
            b.device_id
        );
    }
}
