//! Check for the `decode` fuzz target: arbitrary bytes into `tollgate_mqtt::decode`.
//!
//! Shared by `fuzz/fuzz_targets/decode.rs` (libFuzzer) and
//! `crates/tollgate-mqtt/tests/fuzz_corpus.rs` (replays `fuzz/corpus/decode/` on stable), so it
//! uses nothing but `tollgate-mqtt`. Every broken invariant panics. See docs/fuzzing.md.

use tollgate_mqtt::{decode, BytesMut, DecodeError, Packet, Protocol};

const MAX_PACKET_SIZE: usize = 1 << 20;

/// Decode `data` as a connection's first bytes and with the protocol already known, one-shot
/// and byte by byte; panics on any broken invariant.
pub fn check(data: &[u8]) {
    for start in [None, Some(Protocol::V311), Some(Protocol::V5)] {
        let whole = decode_whole(data, start);
        let trickled = decode_trickled(data, start);
        assert_eq!(whole, trickled, "one-shot and byte-by-byte decoding differ");
    }
}

/// The protocol to decode the next packet with, after `packet` was decoded.
fn next_protocol(protocol: Option<Protocol>, packet: &Packet) -> Option<Protocol> {
    match packet {
        Packet::Connect(c) => Some(c.protocol),
        _ => protocol,
    }
}

/// Everything in the buffer at once, until `Ok(None)` or an error. Returns the packets and
/// the error, if any.
fn decode_whole(data: &[u8], start: Option<Protocol>) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(data);
    let mut protocol = start;
    let mut packets = Vec::new();
    loop {
        let before = buf.len();
        match decode(&mut buf, protocol, MAX_PACKET_SIZE) {
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return (packets, None);
            }
            Err(e) => {
                assert!(e.reason_code().is_error(), "{e:?} maps to a non-error code");
                return (packets, Some(e));
            }
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "a packet was decoded from nothing");
                protocol = next_protocol(protocol, &packet);
                let Some(p) = protocol else {
                    panic!("{} decoded before CONNECT", packet.kind());
                };
                reencode(&packet, p);
                packets.push(packet);
            }
        }
    }
}

/// The same bytes arriving one at a time, as from a slow socket.
fn decode_trickled(data: &[u8], start: Option<Protocol>) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut protocol = start;
    let mut packets = Vec::new();
    for &byte in data {
        buf.extend_from_slice(&[byte]);
        loop {
            match decode(&mut buf, protocol, MAX_PACKET_SIZE) {
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
                Ok(Some(packet)) => {
                    protocol = next_protocol(protocol, &packet);
                    packets.push(packet);
                }
            }
        }
    }
    (packets, None)
}

/// A decoded packet re-encodes, with an exact `encoded_len`, and decodes back to itself.
fn reencode(packet: &Packet, protocol: Protocol) {
    let mut out = BytesMut::new();
    if let Err(e) = packet.encode(protocol, &mut out) {
        panic!("decoded {packet:?} does not re-encode: {e}");
    }
    assert_eq!(
        out.len(),
        packet.encoded_len(protocol),
        "encoded_len is off"
    );
    match decode(&mut out, Some(protocol), usize::MAX) {
        Ok(Some(again)) => assert_eq!(&again, packet, "re-encoded packet decodes differently"),
        other => panic!("re-encoded {packet:?} does not decode: {other:?}"),
    }
    assert!(out.is_empty(), "re-encoded packet has trailing bytes");
}
