//! Property tests: every valid packet of either protocol survives encode → decode unchanged,
//! and `encoded_len` is exactly the number of bytes written.

mod common;

use common::*;
use proptest::prelude::*;
use tollgate_mqtt::*;

/// Encode, check the length, decode (as the first packet for CONNECT, else with the
/// protocol known), compare.
fn round_trip(p: &Packet, protocol: Protocol) -> Result<(), TestCaseError> {
    let mut buf = encode(p, protocol);
    let len = buf.len();
    let decoded = decode(&mut buf, decode_protocol(p, protocol), MAX);
    prop_assert_eq!(decoded, Ok(Some(p.clone())), "protocol {:?}", protocol);
    prop_assert!(buf.is_empty());

    // With the protocol already known the result is the same (CONNECT included: rejecting a
    // second CONNECT is the broker's job).
    let mut buf = encode(p, protocol);
    prop_assert_eq!(decode(&mut buf, Some(protocol), len), Ok(Some(p.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

macro_rules! round_trip_tests {
    ($($name:ident: $protocol:expr => $strategy:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            $(
                #[test]
                fn $name(p in $strategy) {
                    round_trip(&p, $protocol)?;
                }
            )*
        }
    };
}

use Protocol::{V311, V5};

round_trip_tests! {
    connect_v311: V311 => connect(V311);
    connect_v5: V5 => connect(V5);
    connack_v311: V311 => connack(V311);
    connack_v5: V5 => connack(V5);
    publish_v311: V311 => publish(V311);
    publish_v5: V5 => publish(V5);
    puback_v311: V311 => pub_resp(V311, PUBACK_CODES).prop_map(Packet::PubAck);
    puback_v5: V5 => pub_resp(V5, PUBACK_CODES).prop_map(Packet::PubAck);
    pubrec_v311: V311 => pub_resp(V311, PUBACK_CODES).prop_map(Packet::PubRec);
    pubrec_v5: V5 => pub_resp(V5, PUBACK_CODES).prop_map(Packet::PubRec);
    pubrel_v311: V311 => pub_resp(V311, PUBREL_CODES).prop_map(Packet::PubRel);
    pubrel_v5: V5 => pub_resp(V5, PUBREL_CODES).prop_map(Packet::PubRel);
    pubcomp_v311: V311 => pub_resp(V311, PUBREL_CODES).prop_map(Packet::PubComp);
    pubcomp_v5: V5 => pub_resp(V5, PUBREL_CODES).prop_map(Packet::PubComp);
    subscribe_v311: V311 => subscribe(V311);
    subscribe_v5: V5 => subscribe(V5);
    suback_v311: V311 => suback(V311);
    suback_v5: V5 => suback(V5);
    unsubscribe_v311: V311 => unsubscribe(V311);
    unsubscribe_v5: V5 => unsubscribe(V5);
    unsuback_v311: V311 => unsuback(V311);
    unsuback_v5: V5 => unsuback(V5);
    pingreq_v311: V311 => Just(Packet::PingReq);
    pingreq_v5: V5 => Just(Packet::PingReq);
    pingresp_v311: V311 => Just(Packet::PingResp);
    pingresp_v5: V5 => Just(Packet::PingResp);
    disconnect_v311: V311 => disconnect(V311);
    disconnect_v5: V5 => disconnect(V5);
    auth_v5: V5 => auth();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Several packets back to back in one buffer (as read from a socket) decode one by one;
    /// encoding appends after what is already in the buffer.
    #[test]
    fn stream_of_packets(
        (protocol, packets) in prop_oneof![Just(V311), Just(V5)]
            .prop_flat_map(|p| (Just(p), proptest::collection::vec(packet(p), 1..6)))
    ) {
        let mut buf = BytesMut::new();
        for p in &packets {
            let before = buf.len();
            p.encode(protocol, &mut buf).expect("encode");
            prop_assert_eq!(buf.len() - before, p.encoded_len(protocol));
        }
        for p in &packets {
            prop_assert_eq!(decode(&mut buf, Some(protocol), MAX), Ok(Some(p.clone())));
        }
        prop_assert_eq!(decode(&mut buf, Some(protocol), MAX), Ok(None));
        prop_assert!(buf.is_empty());
    }

    /// Decoding shares the frame's memory: the payload and topic point into one allocation.
    #[test]
    fn publish_is_zero_copy(p in publish(V5)) {
        let buf = encode(&p, V5);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let mut buf = buf;
        let Ok(Some(Packet::Publish(d))) = decode(&mut buf, Some(V5), MAX) else {
            return Err(TestCaseError::fail("not a publish"));
        };
        if !d.payload.is_empty() {
            prop_assert!(range.contains(&(d.payload.as_ptr() as usize)));
        }
        if !d.topic.is_empty() {
            prop_assert!(range.contains(&(d.topic.as_ptr() as usize)));
        }
    }

    /// v5-only fields are dropped when encoding for 3.1.1; what is left decodes as the
    /// 3.1.1 view of the packet.
    #[test]
    fn v5_publish_encoded_as_v311_drops_properties(p in publish(V5)) {
        let Packet::Publish(mut publish) = p else { unreachable!() };
        if publish.topic.is_empty() {
            publish.topic = ByteString::from_static("t");
        }
        let p = Packet::Publish(publish.clone());
        let mut buf = encode(&p, V311);
        publish.properties = PublishProperties::default();
        prop_assert_eq!(decode(&mut buf, Some(V311), MAX), Ok(Some(Packet::Publish(publish))));
    }
}

#[test]
fn auth_cannot_be_encoded_for_v311() {
    let mut buf = BytesMut::from(&b"xy"[..]);
    let p = Packet::Auth(Auth::default());
    assert_eq!(
        p.encode(V311, &mut buf),
        Err(EncodeError::NotInProtocol("AUTH"))
    );
    assert_eq!(&buf[..], b"xy");
    assert_eq!(p.encoded_len(V311), 0);
}

#[test]
fn encode_errors_leave_the_buffer_untouched() {
    let long = "x".repeat(65_536);
    let cases: Vec<(Packet, Protocol, EncodeError)> = vec![
        (
            Packet::Publish(Publish {
                topic: ByteString::from(long.clone()),
                ..Publish::default()
            }),
            V5,
            EncodeError::StringTooLong,
        ),
        (
            Packet::Publish(Publish {
                topic: ByteString::from_static("t"),
                properties: PublishProperties {
                    correlation_data: Some(Bytes::from(vec![0u8; 65_536])),
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            V5,
            EncodeError::BinaryTooLong,
        ),
        (
            Packet::Publish(Publish {
                topic: ByteString::from_static("t"),
                properties: PublishProperties {
                    subscription_identifiers: vec![268_435_456],
                    ..PublishProperties::default()
                },
                ..Publish::default()
            }),
            V5,
            EncodeError::ValueTooLarge,
        ),
        (
            Packet::Publish(Publish {
                topic: ByteString::from_static("t"),
                payload: Bytes::from(vec![0u8; 268_435_456]),
                ..Publish::default()
            }),
            V311,
            EncodeError::PacketTooLarge {
                size: 1 + 4 + 3 + 268_435_456,
            },
        ),
        (
            Packet::Publish(Publish {
                topic: ByteString::from_static("t"),
                qos: QoS::AtLeastOnce,
                packet_id: 0,
                ..Publish::default()
            }),
            V311,
            EncodeError::InvalidField("packet_id"),
        ),
        (
            Packet::Publish(Publish::default()),
            V311,
            EncodeError::InvalidField("topic"),
        ),
        (
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                ..Subscribe::default()
            }),
            V5,
            EncodeError::InvalidField("filters"),
        ),
        (
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![SubscriptionRequest {
                    filter: ByteString::from_static("a"),
                    qos: QoS::AtMostOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 3,
                }],
                ..Subscribe::default()
            }),
            V5,
            EncodeError::InvalidField("retain_handling"),
        ),
        (
            Packet::Connect(Connect {
                password: Some(Bytes::from_static(b"pw")),
                ..Connect::default()
            }),
            V311,
            EncodeError::PasswordWithoutUsername,
        ),
    ];
    for (p, protocol, err) in cases {
        let mut buf = BytesMut::from(&b"prefix"[..]);
        assert_eq!(p.encode(protocol, &mut buf), Err(err), "{}", p.kind());
        assert_eq!(&buf[..], b"prefix", "{}", p.kind());
    }
}

#[test]
fn v5_connect_password_without_username_is_fine() {
    let p = Packet::Connect(Connect {
        protocol: V5,
        password: Some(Bytes::from_static(b"pw")),
        ..Connect::default()
    });
    let mut buf = encode(&p, V5);
    assert_eq!(decode(&mut buf, None, MAX), Ok(Some(p)));
}

#[test]
fn dup_is_never_sent_on_qos0() {
    let p = Packet::Publish(Publish {
        dup: true,
        topic: ByteString::from_static("t"),
        ..Publish::default()
    });
    let buf = encode(&p, V311);
    assert_eq!(buf[0], 0x30);
}

/// Remaining lengths at every Variable Byte Integer boundary.
#[test]
fn remaining_length_boundaries() {
    for remaining in [
        0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 2_100_000,
    ] {
        // PUBLISH QoS 0 with topic "t": 3 bytes of topic, the rest payload.
        let Some(payload_len) = remaining.checked_sub(3) else {
            continue;
        };
        let p = Packet::Publish(Publish {
            topic: ByteString::from_static("t"),
            payload: Bytes::from(vec![7u8; payload_len]),
            ..Publish::default()
        });
        let mut buf = encode(&p, V311);
        let header = buf.len() - remaining;
        let expected_header = 1 + match remaining {
            0..=127 => 1,
            128..=16_383 => 2,
            16_384..=2_097_151 => 3,
            _ => 4,
        };
        assert_eq!(header, expected_header, "{remaining}");
        assert_eq!(decode(&mut buf, Some(V311), usize::MAX), Ok(Some(p)));
    }
}

/// Strings and binary fields of exactly 65 535 bytes are fine.
#[test]
fn longest_strings() {
    let long = "é".repeat(32_767) + "x"; // 65 535 bytes
    assert_eq!(long.len(), 65_535);
    let p = Packet::Connect(Connect {
        protocol: V5,
        client_id: ByteString::from(long.clone()),
        username: Some(ByteString::from(long.clone())),
        password: Some(Bytes::from(vec![1u8; 65_535])),
        will: Some(Will {
            topic: ByteString::from(long.clone()),
            payload: Bytes::from(vec![2u8; 65_535]),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: WillProperties {
                content_type: Some(long.clone()),
                ..WillProperties::default()
            },
        }),
        properties: ConnectProperties {
            user_properties: vec![(long.clone(), long.clone())],
            ..ConnectProperties::default()
        },
        ..Connect::default()
    });
    let mut buf = encode(&p, V5);
    assert_eq!(decode(&mut buf, None, usize::MAX), Ok(Some(p)));
}
