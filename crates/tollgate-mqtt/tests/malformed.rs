//! Malformed-packet corpus: one test per decode error, asserting the error and the reason
//! code a broker would send for it.

use tollgate_mqtt::*;
use DecodeError as E;
use Protocol::{V311, V5};

const MAX: usize = 1 << 20;

/// A frame: first byte, remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

/// A CONNECT body: protocol name, level, flags, keep alive 0, then `rest`.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, name.len() as u8];
    v.extend_from_slice(name);
    v.extend_from_slice(&[level, flags, 0x00, 0x00]);
    v.extend_from_slice(rest);
    v
}

/// A v5 PUBLISH (QoS 0, topic "t") with the given property block content.
fn publish_v5_with_props(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b't', props.len() as u8];
    body.extend_from_slice(props);
    frame(0x30, &body)
}

/// A v5 CONNECT (clean start, empty client id) with the given property block content.
fn connect_v5_with_props(props: &[u8]) -> Vec<u8> {
    let mut rest = vec![props.len() as u8];
    rest.extend_from_slice(props);
    rest.extend_from_slice(&[0x00, 0x00]);
    frame(0x10, &connect_body(b"MQTT", 5, 0x02, &rest))
}

/// Decodes `wire`, expecting `err` with reason code `code`.
#[track_caller]
fn expect(wire: &[u8], protocol: Option<Protocol>, err: DecodeError, code: ReasonCode) {
    let mut buf = BytesMut::from(wire);
    let got = decode(&mut buf, protocol, MAX);
    assert_eq!(got, Err(err.clone()), "wire {wire:02X?}");
    assert_eq!(err.reason_code(), code, "{err}");
}

#[test]
fn malformed_remaining_length() {
    // The fifth length byte is never needed: four continuation bits are already an error.
    let wire = [0x30, 0xFF, 0xFF, 0xFF, 0xFF];
    expect(
        &wire,
        Some(V311),
        E::MalformedRemainingLength,
        ReasonCode::MALFORMED_PACKET,
    );
    // Nothing consumed.
    let mut buf = BytesMut::from(&wire[..]);
    let _ = decode(&mut buf, Some(V311), MAX);
    assert_eq!(buf.len(), wire.len());
}

#[test]
fn malformed_var_int() {
    // Property length of five bytes.
    let wire = frame(
        0x30,
        &[0x00, 0x01, b't', 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0, 0, 0],
    );
    expect(
        &wire,
        Some(V5),
        E::MalformedVarInt,
        ReasonCode::MALFORMED_PACKET,
    );
    // Subscription identifier of five bytes.
    let wire = publish_v5_with_props(&[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]);
    expect(
        &wire,
        Some(V5),
        E::MalformedVarInt,
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn packet_too_large() {
    // Only the fixed header has arrived: remaining length 16383, total 16386.
    let wire = [0x30, 0xFF, 0x7F];
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        decode(&mut buf, Some(V311), 1024),
        Err(E::PacketTooLarge {
            size: 16386,
            max: 1024
        })
    );
    assert_eq!(buf.len(), 3, "nothing consumed");
    assert_eq!(
        E::PacketTooLarge {
            size: 16386,
            max: 1024
        }
        .reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
    // Applies to CONNECT too.
    let mut buf = BytesMut::from(&[0x10, 0x80, 0x01][..]);
    assert_eq!(
        decode(&mut buf, None, 100),
        Err(E::PacketTooLarge {
            size: 131,
            max: 100
        })
    );
}

#[test]
fn invalid_header_flags() {
    let cases: &[(&[u8], u8, u8)] = &[
        (&[0x41, 0x02, 0x00, 0x01], 4, 1),       // PUBACK with flags
        (&[0x60, 0x02, 0x00, 0x01], 6, 0),       // PUBREL without 0b0010
        (&[0x80, 0x02, 0x00, 0x01], 8, 0),       // SUBSCRIBE without 0b0010
        (&[0xA0, 0x02, 0x00, 0x01], 10, 0),      // UNSUBSCRIBE without 0b0010
        (&[0xC2, 0x00], 12, 2),                  // PINGREQ with flags
        (&[0xE8, 0x00], 14, 8),                  // DISCONNECT with flags
        (&[0x38, 0x03, 0x00, 0x01, b't'], 3, 8), // PUBLISH DUP with QoS 0
    ];
    for &(wire, packet_type, flags) in cases {
        expect(
            wire,
            Some(V311),
            E::InvalidHeaderFlags { packet_type, flags },
            ReasonCode::MALFORMED_PACKET,
        );
    }
    // Checked on the first byte alone.
    expect(
        &[0x12],
        None,
        E::InvalidHeaderFlags {
            packet_type: 1,
            flags: 2,
        },
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn unknown_packet_type() {
    expect(
        &[0x00, 0x00],
        Some(V5),
        E::UnknownPacketType(0),
        ReasonCode::MALFORMED_PACKET,
    );
    // AUTH does not exist in 3.1.1.
    expect(
        &[0xF0, 0x00],
        Some(V311),
        E::UnknownPacketType(15),
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn unexpected_eof() {
    // Topic length 10 in a frame of 3.
    expect(
        &[0x30, 0x03, 0x00, 0x0A, b'a'],
        Some(V311),
        E::UnexpectedEof,
        ReasonCode::MALFORMED_PACKET,
    );
    // Property length past the end of the frame.
    expect(
        &frame(0x30, &[0x00, 0x01, b't', 0x05, 0x01]),
        Some(V5),
        E::UnexpectedEof,
        ReasonCode::MALFORMED_PACKET,
    );
    // A property value past the end of the property block (but inside the frame).
    expect(
        &frame(
            0x30,
            &[0x00, 0x01, b't', 0x02, 0x02, 0x00, 0x00, 0x00, 0x00],
        ),
        Some(V5),
        E::UnexpectedEof,
        ReasonCode::MALFORMED_PACKET,
    );
    // PUBACK too short.
    expect(
        &[0x40, 0x01, 0x00],
        Some(V311),
        E::UnexpectedEof,
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn invalid_utf8() {
    expect(
        &[0x30, 0x03, 0x00, 0x01, 0xFF],
        Some(V311),
        E::InvalidUtf8,
        ReasonCode::MALFORMED_PACKET,
    );
    // Encoded surrogate U+D800.
    expect(
        &[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80],
        Some(V311),
        E::InvalidUtf8,
        ReasonCode::MALFORMED_PACKET,
    );
    // In a user property.
    expect(
        &publish_v5_with_props(&[0x26, 0x00, 0x01, 0xC3, 0x00, 0x00]),
        Some(V5),
        E::InvalidUtf8,
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn null_character() {
    expect(
        &[0x30, 0x04, 0x00, 0x02, b'a', 0x00],
        Some(V311),
        E::NullCharacter,
        ReasonCode::MALFORMED_PACKET,
    );
    // In the client id.
    expect(
        &frame(0x10, &connect_body(b"MQTT", 4, 0x02, &[0x00, 0x01, 0x00])),
        None,
        E::NullCharacter,
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn invalid_qos() {
    // PUBLISH QoS 3 (seen on the first byte).
    expect(
        &[0x36],
        Some(V311),
        E::InvalidQoS(3),
        ReasonCode::MALFORMED_PACKET,
    );
    // Will QoS 3.
    expect(
        &frame(0x10, &connect_body(b"MQTT", 4, 0x1E, &[])),
        None,
        E::InvalidQoS(3),
        ReasonCode::MALFORMED_PACKET,
    );
    // Subscription options QoS 3.
    expect(
        &frame(0x82, &[0x00, 0x01, 0x00, 0x01, b'a', 0x03]),
        Some(V311),
        E::InvalidQoS(3),
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn zero_packet_id() {
    expect(
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        Some(V311),
        E::ZeroPacketId,
        ReasonCode::MALFORMED_PACKET,
    );
    expect(
        &[0x40, 0x02, 0x00, 0x00],
        Some(V5),
        E::ZeroPacketId,
        ReasonCode::MALFORMED_PACKET,
    );
    expect(
        &frame(0x82, &[0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
        Some(V311),
        E::ZeroPacketId,
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn invalid_topic_name() {
    for topic in [&b"a/+"[..], b"#", b"a/#"] {
        let mut body = vec![0x00, topic.len() as u8];
        body.extend_from_slice(topic);
        expect(
            &frame(0x30, &body),
            Some(V311),
            E::InvalidTopicName,
            ReasonCode::TOPIC_NAME_INVALID,
        );
    }
    // Empty topic: never in 3.1.1, in v5 only with a topic alias.
    expect(
        &[0x30, 0x02, 0x00, 0x00],
        Some(V311),
        E::InvalidTopicName,
        ReasonCode::TOPIC_NAME_INVALID,
    );
    expect(
        &[0x30, 0x03, 0x00, 0x00, 0x00],
        Some(V5),
        E::InvalidTopicName,
        ReasonCode::TOPIC_NAME_INVALID,
    );
    // Wildcard in a will topic.
    expect(
        &frame(
            0x10,
            &connect_body(
                b"MQTT",
                4,
                0x06,
                &[0x00, 0x00, 0x00, 0x01, b'#', 0x00, 0x00],
            ),
        ),
        None,
        E::InvalidTopicName,
        ReasonCode::TOPIC_NAME_INVALID,
    );
    // Wildcard in a response topic.
    expect(
        &publish_v5_with_props(&[0x08, 0x00, 0x01, b'+']),
        Some(V5),
        E::InvalidTopicName,
        ReasonCode::TOPIC_NAME_INVALID,
    );
}

#[test]
fn invalid_topic_filter() {
    for filter in [
        &b"a#b"[..],
        b"a/#/b",
        b"a+",
        b"",
        b"$share/g",
        b"$share//a",
        b"$share/g+/a",
    ] {
        let mut body = vec![0x00, 0x01, 0x00, filter.len() as u8];
        body.extend_from_slice(filter);
        body.push(0x00);
        expect(
            &frame(0x82, &body),
            Some(V311),
            E::InvalidTopicFilter,
            ReasonCode::TOPIC_FILTER_INVALID,
        );
    }
    expect(
        &frame(0xA2, &[0x00, 0x01, 0x00, 0x02, b'#', b'a']),
        Some(V311),
        E::InvalidTopicFilter,
        ReasonCode::TOPIC_FILTER_INVALID,
    );
}

#[test]
fn empty_subscribe() {
    expect(
        &[0x82, 0x02, 0x00, 0x01],
        Some(V311),
        E::EmptySubscribe,
        ReasonCode::PROTOCOL_ERROR,
    );
    expect(
        &[0x82, 0x03, 0x00, 0x01, 0x00],
        Some(V5),
        E::EmptySubscribe,
        ReasonCode::PROTOCOL_ERROR,
    );
}

#[test]
fn empty_unsubscribe() {
    expect(
        &[0xA2, 0x02, 0x00, 0x01],
        Some(V311),
        E::EmptyUnsubscribe,
        ReasonCode::PROTOCOL_ERROR,
    );
    expect(
        &[0xA2, 0x03, 0x00, 0x01, 0x00],
        Some(V5),
        E::EmptyUnsubscribe,
        ReasonCode::PROTOCOL_ERROR,
    );
}

#[test]
fn invalid_protocol_name() {
    expect(
        &frame(0x10, &connect_body(b"MQTX", 4, 0x02, &[0x00, 0x00])),
        None,
        E::InvalidProtocolName,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
    );
}

#[test]
fn unsupported_protocol() {
    // MQTT 3.1.
    expect(
        &frame(0x10, &connect_body(b"MQIsdp", 3, 0x02, &[0x00, 0x00])),
        None,
        E::UnsupportedProtocol(3),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
    );
    for level in [0u8, 3, 6, 0xFF] {
        expect(
            &frame(0x10, &connect_body(b"MQTT", level, 0x02, &[0x00, 0x00])),
            None,
            E::UnsupportedProtocol(level),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        );
    }
}

#[test]
fn invalid_connect_flags() {
    for (level, flags) in [
        (4u8, 0x03u8), // reserved bit
        (5, 0x01),     // reserved bit
        (4, 0x08),     // will QoS without will flag
        (5, 0x20),     // will retain without will flag
        (4, 0x40),     // 3.1.1: password without user name
    ] {
        expect(
            &frame(
                0x10,
                &connect_body(b"MQTT", level, flags, &[0x00, 0x00, 0x00, 0x00]),
            ),
            None,
            E::InvalidConnectFlags,
            ReasonCode::MALFORMED_PACKET,
        );
    }
}

#[test]
fn invalid_connack_flags() {
    expect(
        &[0x20, 0x02, 0x02, 0x00],
        Some(V311),
        E::InvalidConnAckFlags,
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn invalid_property() {
    expect(
        &publish_v5_with_props(&[0x05, 0x00]),
        Some(V5),
        E::InvalidProperty(0x05),
        ReasonCode::MALFORMED_PACKET,
    );
    expect(
        &publish_v5_with_props(&[0x80, 0x01]),
        Some(V5),
        E::InvalidProperty(0x80),
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn duplicate_property() {
    expect(
        &publish_v5_with_props(&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
        Some(V5),
        E::DuplicateProperty(0x02),
        ReasonCode::PROTOCOL_ERROR,
    );
    expect(
        &connect_v5_with_props(&[0x21, 0x00, 0x01, 0x21, 0x00, 0x01]),
        None,
        E::DuplicateProperty(0x21),
        ReasonCode::PROTOCOL_ERROR,
    );
    // Subscription identifier may repeat in PUBLISH but not in SUBSCRIBE.
    expect(
        &frame(
            0x82,
            &[
                0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
            ],
        ),
        Some(V5),
        E::DuplicateProperty(0x0B),
        ReasonCode::PROTOCOL_ERROR,
    );
    // User properties may repeat.
    let mut buf = BytesMut::from(
        &publish_v5_with_props(&[
            0x26, 0x00, 0x01, b'k', 0x00, 0x00, 0x26, 0x00, 0x01, b'k', 0x00, 0x00,
        ])[..],
    );
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, Some(V5), MAX) else {
        panic!("repeated user property rejected");
    };
    assert_eq!(p.properties.user_properties.len(), 2);
}

#[test]
fn property_not_allowed() {
    // Session expiry interval in PUBLISH.
    expect(
        &publish_v5_with_props(&[0x11, 0, 0, 0, 1]),
        Some(V5),
        E::PropertyNotAllowed {
            property: 0x11,
            packet: "PUBLISH",
        },
        ReasonCode::PROTOCOL_ERROR,
    );
    // Topic alias in CONNECT.
    expect(
        &connect_v5_with_props(&[0x23, 0x00, 0x01]),
        None,
        E::PropertyNotAllowed {
            property: 0x23,
            packet: "CONNECT",
        },
        ReasonCode::PROTOCOL_ERROR,
    );
    // Subscription identifier in PUBACK.
    expect(
        &frame(0x40, &[0x00, 0x01, 0x00, 0x02, 0x0B, 0x01]),
        Some(V5),
        E::PropertyNotAllowed {
            property: 0x0B,
            packet: "PUBACK",
        },
        ReasonCode::PROTOCOL_ERROR,
    );
}

#[test]
fn invalid_property_value() {
    let cases: &[(&[u8], u8)] = &[
        (&[0x21, 0x00, 0x00], 0x21),             // receive maximum 0
        (&[0x27, 0x00, 0x00, 0x00, 0x00], 0x27), // maximum packet size 0
        (&[0x19, 0x02], 0x19),                   // request response information 2
        (&[0x17, 0x02], 0x17),                   // request problem information 2
    ];
    for &(props, id) in cases {
        expect(
            &connect_v5_with_props(props),
            None,
            E::InvalidPropertyValue(id),
            ReasonCode::PROTOCOL_ERROR,
        );
    }
    expect(
        &publish_v5_with_props(&[0x01, 0x02]),
        Some(V5),
        E::InvalidPropertyValue(0x01),
        ReasonCode::PROTOCOL_ERROR,
    );
    expect(
        &publish_v5_with_props(&[0x0B, 0x00]),
        Some(V5),
        E::InvalidPropertyValue(0x0B),
        ReasonCode::PROTOCOL_ERROR,
    );
    // Topic alias 0 is "topic alias invalid".
    expect(
        &publish_v5_with_props(&[0x23, 0x00, 0x00]),
        Some(V5),
        E::InvalidPropertyValue(0x23),
        ReasonCode::TOPIC_ALIAS_INVALID,
    );
}

#[test]
fn auth_data_without_method() {
    expect(
        &connect_v5_with_props(&[0x16, 0x00, 0x01, 0xAA]),
        None,
        E::AuthDataWithoutMethod,
        ReasonCode::PROTOCOL_ERROR,
    );
}

#[test]
fn invalid_reason_code() {
    expect(
        &[0x40, 0x03, 0x00, 0x01, 0x05],
        Some(V5),
        E::InvalidReasonCode {
            code: 0x05,
            packet: "PUBACK",
        },
        ReasonCode::PROTOCOL_ERROR,
    );
    expect(
        &[0x62, 0x03, 0x00, 0x01, 0x10],
        Some(V5),
        E::InvalidReasonCode {
            code: 0x10,
            packet: "PUBREL",
        },
        ReasonCode::PROTOCOL_ERROR,
    );
    expect(
        &[0xE0, 0x01, 0x05],
        Some(V5),
        E::InvalidReasonCode {
            code: 0x05,
            packet: "DISCONNECT",
        },
        ReasonCode::PROTOCOL_ERROR,
    );
    // 3.1.1 CONNACK return code 6.
    expect(
        &[0x20, 0x02, 0x00, 0x06],
        Some(V311),
        E::InvalidReasonCode {
            code: 0x06,
            packet: "CONNACK",
        },
        ReasonCode::PROTOCOL_ERROR,
    );
}

#[test]
fn invalid_retain_handling() {
    expect(
        &frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30]),
        Some(V5),
        E::InvalidRetainHandling(3),
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn invalid_subscription_options() {
    // 3.1.1: only the QoS bits.
    for options in [0x04u8, 0x08, 0x10, 0x80] {
        expect(
            &frame(0x82, &[0x00, 0x01, 0x00, 0x01, b'a', options]),
            Some(V311),
            E::InvalidSubscriptionOptions,
            ReasonCode::MALFORMED_PACKET,
        );
    }
    // v5: bits 6 and 7 reserved.
    for options in [0x40u8, 0x80] {
        expect(
            &frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', options]),
            Some(V5),
            E::InvalidSubscriptionOptions,
            ReasonCode::MALFORMED_PACKET,
        );
    }
}

#[test]
fn shared_subscription_no_local() {
    let mut body = vec![0x00, 0x01, 0x00, 0x00, 10];
    body.extend_from_slice(b"$share/g/a");
    body.push(0x04);
    expect(
        &frame(0x82, &body),
        Some(V5),
        E::SharedSubscriptionNoLocal,
        ReasonCode::PROTOCOL_ERROR,
    );
}

#[test]
fn trailing_bytes() {
    let cases: &[(&[u8], Protocol)] = &[
        (&[0xC0, 0x01, 0x00], V311),                       // PINGREQ with a body
        (&[0xD0, 0x01, 0x00], V5),                         // PINGRESP with a body
        (&[0x40, 0x03, 0x00, 0x01, 0x00], V311),           // 3.1.1 PUBACK with a reason code
        (&[0xE0, 0x01, 0x00], V311),                       // 3.1.1 DISCONNECT with a body
        (&[0x20, 0x03, 0x00, 0x00, 0x00], V311),           // 3.1.1 CONNACK with properties
        (&[0xB0, 0x03, 0x00, 0x01, 0x00], V311),           // 3.1.1 UNSUBACK with a payload
        (&[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], V5), // v5 PUBACK after properties
    ];
    for &(wire, protocol) in cases {
        expect(
            wire,
            Some(protocol),
            E::TrailingBytes,
            ReasonCode::MALFORMED_PACKET,
        );
    }
    // CONNECT with a byte after the last field.
    expect(
        &frame(0x10, &connect_body(b"MQTT", 4, 0x02, &[0x00, 0x00, 0x00])),
        None,
        E::TrailingBytes,
        ReasonCode::MALFORMED_PACKET,
    );
}

#[test]
fn first_packet_not_connect() {
    for wire in [
        &[0x30, 0x03, 0x00, 0x01, b't'][..],
        &[0xC0, 0x00],
        &[0x20],
        &[0xE0, 0x00],
    ] {
        expect(
            wire,
            None,
            E::FirstPacketNotConnect,
            ReasonCode::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn errors_display() {
    assert_eq!(
        E::PacketTooLarge { size: 10, max: 5 }.to_string(),
        "packet of 10 bytes exceeds the maximum of 5"
    );
    assert_eq!(
        E::PropertyNotAllowed {
            property: 0x11,
            packet: "PUBLISH"
        }
        .to_string(),
        "property 0x11 not allowed in PUBLISH"
    );
}
