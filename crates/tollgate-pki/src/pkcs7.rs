//! PKCS#7 / CMS "certs-only" SignedData (RFC 5652, degenerate: no content, no signers): the
//! format EST (RFC 7030) returns certificates in. Small enough to write by hand in DER.

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let n = bytes.len() - first;
        out.push(0x80 | n as u8);
        out.extend_from_slice(&bytes[first..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];

/// DER `ContentInfo` holding a certs-only `SignedData` with `certs` (each a DER certificate).
pub fn certs_only(certs: &[&[u8]]) -> Vec<u8> {
    let mut signed = Vec::new();
    signed.extend_from_slice(&[0x02, 0x01, 0x01]); // version 1
    signed.extend_from_slice(&[0x31, 0x00]); // digestAlgorithms: empty SET
    signed.extend(tlv(0x30, OID_DATA)); // encapContentInfo: data, no content
    let all: Vec<u8> = certs.iter().flat_map(|c| c.iter().copied()).collect();
    signed.extend(tlv(0xa0, &all)); // certificates [0] IMPLICIT
    signed.extend_from_slice(&[0x31, 0x00]); // signerInfos: empty SET
    let signed_data = tlv(0x30, &signed);
    let mut ci = Vec::new();
    ci.extend_from_slice(OID_SIGNED_DATA);
    ci.extend(tlv(0xa0, &signed_data)); // [0] EXPLICIT
    tlv(0x30, &ci)
}

/// The certificates of a certs-only SignedData, as DER (for the enrollment agent).
pub fn parse_certs_only(der: &[u8]) -> Option<Vec<Vec<u8>>> {
    use x509_parser::der_parser::ber::BerObjectContent;
    use x509_parser::der_parser::parse_der;
    let (_, ci) = parse_der(der).ok()?;
    let BerObjectContent::Sequence(items) = &ci.content else {
        return None;
    };
    let explicit = items.get(1)?;
    let inner = explicit.as_slice().ok()?;
    let (_, signed) = parse_der(inner).ok()?;
    let BerObjectContent::Sequence(fields) = &signed.content else {
        return None;
    };
    let certs_field = fields
        .iter()
        .find(|f| f.header.tag().0 == 0 && f.header.is_contextspecific())?;
    let mut raw = certs_field.as_slice().ok()?;
    let mut out = Vec::new();
    while !raw.is_empty() {
        let (rest, obj) = parse_der(raw).ok()?;
        let len = raw.len() - rest.len();
        out.push(raw.get(..len)?.to_vec());
        let _ = obj;
        raw = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_encodes_long_lengths() {
        let a = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let b = tlv(0x30, &vec![0x04; 300]);
        let p7 = certs_only(&[&a, &b]);
        assert_eq!(p7[0], 0x30);
        let back = parse_certs_only(&p7).unwrap();
        assert_eq!(back, vec![a, b]);
        assert!(parse_certs_only(&[0x30, 0x00]).is_none());
    }
}
