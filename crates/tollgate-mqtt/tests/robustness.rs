//! Property tests on hostile input: `decode` never panics, never consumes a partial packet,
//! and whatever it accepts re-encodes to something that decodes to the same packet.

mod common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use tollgate_mqtt::*;

const PROTOCOLS: [Option<Protocol>; 3] = [None, Some(Protocol::V311), Some(Protocol::V5)];

/// Decodes packets from `bytes` until `Ok(None)` or an error, checking each decoded packet
/// re-encodes and decodes to itself and that `Ok(None)` consumed nothing.
fn decode_all(bytes: &[u8], protocol: Option<Protocol>, max: usize) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    let mut protocol = protocol;
    loop {
        let before = buf.clone();
        match decode(&mut buf, protocol, max) {
            Ok(None) => {
                prop_assert_eq!(&buf, &before, "Ok(None) consumed bytes");
                return Ok(());
            }
            Err(_) => return Ok(()),
            Ok(Some(p)) => {
                let consumed = before.len() - buf.len();
                prop_assert!(consumed >= 2 && consumed <= max);
                if let Packet::Connect(c) = &p {
                    protocol = Some(c.protocol);
                }
                let Some(proto) = protocol else {
                    return Err(TestCaseError::fail("non-CONNECT decoded without protocol"));
                };
                reencode(&p, proto)?;
            }
        }
    }
}

/// A decoded packet is valid: it encodes (with an exact `encoded_len`) and decodes back.
fn reencode(p: &Packet, protocol: Protocol) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    let r = p.encode(protocol, &mut out);
    prop_assert_eq!(r, Ok(()), "{:?}", p);
    prop_assert_eq!(out.len(), p.encoded_len(protocol));
    prop_assert_eq!(
        decode(&mut out, Some(protocol), usize::MAX),
        Ok(Some(p.clone()))
    );
    prop_assert!(out.is_empty());
    Ok(())
}

/// Random bytes with a plausible first byte now and then.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        (0u8..16, vec(any::<u8>(), 0..256)).prop_map(|(t, mut v)| {
            if let Some(b) = v.first_mut() {
                *b = (t << 4) | (*b & 0x0F);
            }
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(bytes in noise(), max in prop_oneof![Just(MAX), 0usize..64]) {
        for protocol in PROTOCOLS {
            decode_all(&bytes, protocol, max)?;
        }
    }

    /// A valid packet with bytes flipped / truncated / extended.
    #[test]
    fn mutated_packets_never_panic(
        (protocol, p) in any_packet(),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        extra in vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = encode(&p, protocol).to_vec();
        for (i, x) in &flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes.extend_from_slice(&extra);
        for proto in PROTOCOLS {
            decode_all(&bytes, proto, MAX)?;
        }
    }

    /// Any strict prefix of a valid packet is `Ok(None)` and consumes nothing; the whole
    /// packet then decodes.
    #[test]
    fn prefixes_are_incomplete((protocol, p) in any_packet()) {
        let wire = encode(&p, protocol);
        let proto = decode_protocol(&p, protocol);
        for n in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..n]);
            prop_assert_eq!(decode(&mut buf, proto, MAX), Ok(None), "prefix {}", n);
            prop_assert_eq!(&buf[..], &wire[..n]);
        }
        let mut buf = wire.clone();
        prop_assert_eq!(decode(&mut buf, proto, MAX), Ok(Some(p)));
    }

    /// The size limit: a packet larger than the maximum is refused as soon as its fixed
    /// header is readable, whatever else has arrived; otherwise it decodes.
    #[test]
    fn max_packet_size((protocol, p) in any_packet(), max in 0usize..128) {
        let wire = encode(&p, protocol);
        let proto = decode_protocol(&p, protocol);
        // Length of the fixed header.
        let header = 1 + wire[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
        for n in header..=wire.len() {
            let mut buf = BytesMut::from(&wire[..n]);
            let r = decode(&mut buf, proto, max);
            if wire.len() > max {
                prop_assert_eq!(r, Err(DecodeError::PacketTooLarge { size: wire.len(), max }));
                prop_assert_eq!(buf.len(), n);
            } else if n < wire.len() {
                prop_assert_eq!(r, Ok(None));
            } else {
                prop_assert_eq!(r, Ok(Some(p.clone())));
            }
        }
    }

    /// Every decode error maps to an error reason code.
    #[test]
    fn errors_map_to_error_codes(bytes in noise()) {
        for protocol in PROTOCOLS {
            let mut buf = BytesMut::from(&bytes[..]);
            if let Err(e) = decode(&mut buf, protocol, MAX) {
                prop_assert!(e.reason_code().is_error());
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// All packets (and the error, if any) decoded from `bytes` in one go.
fn decode_whole(bytes: &[u8], start: Option<Protocol>) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(bytes);
    let mut protocol = start;
    let mut packets = Vec::new();
    loop {
        match decode(&mut buf, protocol, MAX) {
            Ok(None) => return (packets, None),
            Err(e) => return (packets, Some(e)),
            Ok(Some(p)) => {
                if let Packet::Connect(c) = &p {
                    protocol = Some(c.protocol);
                }
                packets.push(p);
            }
        }
    }
}

/// The same bytes arriving in chunks of `chunk` bytes.
fn decode_chunked(
    bytes: &[u8],
    start: Option<Protocol>,
    chunk: usize,
) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut protocol = start;
    let mut packets = Vec::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decode(&mut buf, protocol, MAX) {
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
                Ok(Some(p)) => {
                    if let Packet::Connect(c) = &p {
                        protocol = Some(c.protocol);
                    }
                    packets.push(p);
                }
            }
        }
    }
    (packets, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Decoding does not depend on how the bytes are split into reads: a stream of (possibly
    /// corrupted) packets gives the same packets and the same error whether it arrives at
    /// once or in chunks.
    #[test]
    fn chunking_does_not_matter(
        (protocol, packets) in prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]
            .prop_flat_map(|p| (Just(p), vec(packet(p), 1..5))),
        flip in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
        chunk in 1usize..16,
    ) {
        let mut bytes = Vec::new();
        for p in &packets {
            bytes.extend_from_slice(&encode(p, protocol));
        }
        if let Some((i, x)) = flip {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        for start in PROTOCOLS {
            let whole = decode_whole(&bytes, start);
            prop_assert_eq!(&whole, &decode_chunked(&bytes, start, chunk));
            if flip.is_none() && start == Some(protocol) {
                prop_assert_eq!(&whole, &(packets.clone(), None));
            }
        }
    }
}
