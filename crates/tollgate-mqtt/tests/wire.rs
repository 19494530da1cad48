//! Byte-exact tests against hand-written wire bytes (MQTT 3.1.1 and 5.0 specifications).

use tollgate_mqtt::*;
use Protocol::{V311, V5};

const MAX: usize = 1 << 20;

fn bs(s: &'static str) -> ByteString {
    ByteString::from_static(s)
}

fn encoded(p: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(protocol, &mut buf).expect("encode");
    assert_eq!(buf.len(), p.encoded_len(protocol));
    buf.to_vec()
}

/// `wire` decodes to `p` and `p` encodes to exactly `wire`.
fn check(wire: &[u8], protocol: Option<Protocol>, encode_as: Protocol, p: &Packet) {
    let mut buf = BytesMut::from(wire);
    assert_eq!(decode(&mut buf, protocol, MAX), Ok(Some(p.clone())));
    assert!(buf.is_empty());
    assert_eq!(encoded(p, encode_as), wire, "{}", p.kind());
}

// ------------------------------------------------------------------------------------------
// CONNECT

#[test]
fn connect_v311() {
    #[rustfmt::skip]
    let wire = [
        0x10, 27,
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04,                               // protocol level 4
        0xC2,                               // user name, password, clean session
        0x00, 0x3C,                         // keep alive 60
        0x00, 0x03, b'a', b'b', b'c',       // client id
        0x00, 0x04, b'u', b's', b'e', b'r', // user name
        0x00, 0x04, b'p', b'a', b's', b's', // password
    ];
    let p = Packet::Connect(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 60,
        client_id: bs("abc"),
        will: None,
        username: Some(bs("user")),
        password: Some(Bytes::from_static(b"pass")),
        properties: ConnectProperties::default(),
    });
    check(&wire, None, V311, &p);
}

#[test]
fn connect_v311_with_will() {
    #[rustfmt::skip]
    let wire = [
        0x10, 22,
        0x00, 0x04, b'M', b'Q', b'T', b'T',
        0x04,
        0x2C,                          // will retain, will QoS 1, will flag; no clean session
        0x00, 0x00,                    // keep alive 0
        0x00, 0x00,                    // empty client id
        0x00, 0x03, b'w', b'/', b't',  // will topic
        0x00, 0x03, b'b', b'y', b'e',  // will payload
    ];
    let p = Packet::Connect(Connect {
        protocol: V311,
        clean_start: false,
        keep_alive: 0,
        client_id: ByteString::new(),
        will: Some(Will {
            topic: bs("w/t"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    });
    check(&wire, None, V311, &p);
}

#[test]
fn connect_v5() {
    #[rustfmt::skip]
    let wire = [
        0x10, 36,
        0x00, 0x04, b'M', b'Q', b'T', b'T',
        0x05,                                    // protocol level 5
        0x06,                                    // will flag, clean start
        0x00, 0x0A,                              // keep alive 10
        0x08,                                    // property length
        0x11, 0x00, 0x00, 0x00, 0x0A,            //   session expiry interval 10
        0x21, 0x00, 0x14,                        //   receive maximum 20
        0x00, 0x02, b'c', b'1',                  // client id
        0x05,                                    // will property length
        0x18, 0x00, 0x00, 0x00, 0x05,            //   will delay interval 5
        0x00, 0x03, b'w', b'/', b't',            // will topic
        0x00, 0x00,                              // will payload (empty)
        // no user name, no password
    ];
    assert_eq!(wire.len(), 2 + 36);
    let p = Packet::Connect(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        client_id: bs("c1"),
        will: Some(Will {
            topic: bs("w/t"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(5),
                ..WillProperties::default()
            },
        }),
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            receive_maximum: Some(20),
            ..ConnectProperties::default()
        },
    });
    check(&wire, None, V5, &p);
}

#[test]
fn connect_v5_user_properties_and_auth() {
    #[rustfmt::skip]
    let wire = [
        0x10, 34,
        0x00, 0x04, b'M', b'Q', b'T', b'T',
        0x05,
        0x02,
        0x00, 0x00,
        21,                                            // property length
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', //   authentication method
        0x16, 0x00, 0x02, 0xAB, 0xCD,                  //   authentication data
        0x26, 0x00, 0x01, b'k', 0x00, 0x02, b'v', b'1', //   user property k=v1
        0x00, 0x00,                                    // empty client id
    ];
    let p = Packet::Connect(Connect {
        protocol: V5,
        clean_start: true,
        properties: ConnectProperties {
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::from_static(&[0xAB, 0xCD])),
            user_properties: vec![("k".into(), "v1".into())],
            ..ConnectProperties::default()
        },
        ..Connect::default()
    });
    check(&wire, None, V5, &p);
}

// ------------------------------------------------------------------------------------------
// CONNACK

#[test]
fn connack_v311() {
    let ok = Packet::ConnAck(ConnAck::default());
    check(&[0x20, 0x02, 0x00, 0x00], Some(V311), V311, &ok);

    let present = Packet::ConnAck(ConnAck {
        session_present: true,
        ..ConnAck::default()
    });
    check(&[0x20, 0x02, 0x01, 0x00], Some(V311), V311, &present);

    let refused = Packet::ConnAck(ConnAck {
        code: ReasonCode::NOT_AUTHORIZED,
        ..ConnAck::default()
    });
    check(&[0x20, 0x02, 0x00, 0x05], Some(V311), V311, &refused);
}

#[test]
fn connack_v311_return_code_mapping() {
    for (code, rc) in [
        (ReasonCode::SUCCESS, 0u8),
        (ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, 1),
        (ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, 2),
        (ReasonCode::SERVER_UNAVAILABLE, 3),
        (ReasonCode::SERVER_BUSY, 3),
        (ReasonCode::SERVER_SHUTTING_DOWN, 3),
        (ReasonCode::UNSPECIFIED_ERROR, 3),
        (ReasonCode::QUOTA_EXCEEDED, 3),
        (ReasonCode::BAD_USER_NAME_OR_PASSWORD, 4),
        (ReasonCode::NOT_AUTHORIZED, 5),
        (ReasonCode::BANNED, 5),
    ] {
        let p = Packet::ConnAck(ConnAck {
            code,
            ..ConnAck::default()
        });
        assert_eq!(encoded(&p, V311), [0x20, 0x02, 0x00, rc], "{code}");
    }
    // Decoding 3.1.1 return codes.
    for (rc, code) in [
        (0u8, ReasonCode::SUCCESS),
        (1, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        (2, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (3, ReasonCode::SERVER_UNAVAILABLE),
        (4, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (5, ReasonCode::NOT_AUTHORIZED),
    ] {
        let mut buf = BytesMut::from(&[0x20, 0x02, 0x00, rc][..]);
        let Ok(Some(Packet::ConnAck(c))) = decode(&mut buf, Some(V311), MAX) else {
            panic!("{rc}");
        };
        assert_eq!(c.code, code);
    }
}

#[test]
fn connack_v5() {
    check(
        &[0x20, 0x03, 0x00, 0x00, 0x00],
        Some(V5),
        V5,
        &Packet::ConnAck(ConnAck::default()),
    );
    #[rustfmt::skip]
    let wire = [
        0x20, 0x10,
        0x01,                         // session present
        0x00,                         // success
        0x0D,                         // property length
        0x21, 0x00, 0x0A,             //   receive maximum 10
        0x24, 0x01,                   //   maximum QoS 1
        0x12, 0x00, 0x03, b'i', b'd', b'7', // assigned client identifier
        0x2A, 0x00,                   //   shared subscriptions not available
    ];
    let p = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            receive_maximum: Some(10),
            maximum_qos: Some(1),
            assigned_client_identifier: Some("id7".into()),
            shared_subscription_available: Some(false),
            ..ConnAckProperties::default()
        },
    });
    check(&wire, Some(V5), V5, &p);

    let banned = Packet::ConnAck(ConnAck {
        code: ReasonCode::BANNED,
        ..ConnAck::default()
    });
    check(&[0x20, 0x03, 0x00, 0x8A, 0x00], Some(V5), V5, &banned);
}

// ------------------------------------------------------------------------------------------
// PUBLISH

#[test]
fn publish_qos0() {
    let p = Packet::Publish(Publish {
        topic: bs("a/b"),
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    });
    check(
        &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        Some(V311),
        V311,
        &p,
    );
    // v5: an empty property block after the topic.
    check(
        &[0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'],
        Some(V5),
        V5,
        &p,
    );
}

#[test]
fn publish_qos1() {
    let p = Packet::Publish(Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: bs("a/b"),
        packet_id: 10,
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    });
    check(
        &[
            0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
        ],
        Some(V311),
        V311,
        &p,
    );
}

#[test]
fn publish_qos2_v5_with_properties() {
    #[rustfmt::skip]
    let wire = [
        0x34, 18,
        0x00, 0x01, b't',        // topic
        0x12, 0x34,              // packet id
        0x0A,                    // property length
        0x01, 0x01,              //   payload format indicator: UTF-8
        0x23, 0x00, 0x07,        //   topic alias 7
        0x0B, 0x81, 0x01,        //   subscription identifier 129
        0x0B, 0x02,              //   subscription identifier 2
        b'{', b'}',              // payload
    ];
    let p = Packet::Publish(Publish {
        qos: QoS::ExactlyOnce,
        topic: bs("t"),
        packet_id: 0x1234,
        payload: Bytes::from_static(b"{}"),
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            topic_alias: Some(7),
            subscription_identifiers: vec![129, 2],
            ..PublishProperties::default()
        },
        ..Publish::default()
    });
    check(&wire, Some(V5), V5, &p);
}

#[test]
fn publish_v5_empty_topic_with_alias() {
    let wire = [0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b'x'];
    let p = Packet::Publish(Publish {
        topic: ByteString::new(),
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties {
            topic_alias: Some(1),
            ..PublishProperties::default()
        },
        ..Publish::default()
    });
    check(&wire, Some(V5), V5, &p);
}

// ------------------------------------------------------------------------------------------
// PUBACK / PUBREC / PUBREL / PUBCOMP

#[test]
fn pub_responses() {
    let r = PubResp {
        packet_id: 1,
        ..PubResp::default()
    };
    for (first, p) in [
        (0x40, Packet::PubAck(r.clone())),
        (0x50, Packet::PubRec(r.clone())),
        (0x62, Packet::PubRel(r.clone())),
        (0x70, Packet::PubComp(r.clone())),
    ] {
        check(&[first, 0x02, 0x00, 0x01], Some(V311), V311, &p);
        // v5 success without properties: remaining length 2.
        check(&[first, 0x02, 0x00, 0x01], Some(V5), V5, &p);
    }
}

#[test]
fn puback_v5_with_reason() {
    let p = Packet::PubAck(PubResp {
        packet_id: 1,
        code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..PubResp::default()
    });
    check(&[0x40, 0x03, 0x00, 0x01, 0x10], Some(V5), V5, &p);
    // The reason code is v5 only.
    assert_eq!(encoded(&p, V311), [0x40, 0x02, 0x00, 0x01]);

    let p = Packet::PubRec(PubResp {
        packet_id: 2,
        code: ReasonCode::SUCCESS,
        reason_string: Some("ok".into()),
        user_properties: vec![],
    });
    check(
        &[
            0x50, 0x09, 0x00, 0x02, 0x00, 0x05, 0x1F, 0x00, 0x02, b'o', b'k',
        ],
        Some(V5),
        V5,
        &p,
    );
    // Reason code with an explicit empty property block decodes the same as without.
    let mut buf = BytesMut::from(&[0x40, 0x04, 0x00, 0x01, 0x10, 0x00][..]);
    assert_eq!(
        decode(&mut buf, Some(V5), MAX),
        Ok(Some(Packet::PubAck(PubResp {
            packet_id: 1,
            code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..PubResp::default()
        })))
    );
}

// ------------------------------------------------------------------------------------------
// SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK

fn sub(filter: &'static str, qos: QoS) -> SubscriptionRequest {
    SubscriptionRequest {
        filter: bs(filter),
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
    }
}

#[test]
fn subscribe_v311() {
    // The example of MQTT 3.1.1 section 3.8.3.
    #[rustfmt::skip]
    let wire = [
        0x82, 0x0E,
        0x00, 0x0A,
        0x00, 0x03, b'a', b'/', b'b', 0x01,
        0x00, 0x03, b'c', b'/', b'd', 0x02,
    ];
    let p = Packet::Subscribe(Subscribe {
        packet_id: 10,
        filters: vec![sub("a/b", QoS::AtLeastOnce), sub("c/d", QoS::ExactlyOnce)],
        ..Subscribe::default()
    });
    check(&wire, Some(V311), V311, &p);
}

#[test]
fn subscribe_v5() {
    #[rustfmt::skip]
    let wire = [
        0x82, 0x0B,
        0x00, 0x0A,
        0x02, 0x0B, 0x05,                 // subscription identifier 5
        0x00, 0x03, b'a', b'/', b'#',
        0x2D,                             // retain handling 2, RAP, no local, QoS 1
    ];
    let p = Packet::Subscribe(Subscribe {
        packet_id: 10,
        filters: vec![SubscriptionRequest {
            filter: bs("a/#"),
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: 2,
        }],
        subscription_identifier: Some(5),
        user_properties: vec![],
    });
    check(&wire, Some(V5), V5, &p);
}

#[test]
fn suback() {
    let p = Packet::SubAck(SubAck {
        packet_id: 10,
        codes: vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::UNSPECIFIED_ERROR,
        ],
        ..SubAck::default()
    });
    check(
        &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80],
        Some(V311),
        V311,
        &p,
    );
    check(
        &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x00, 0x02, 0x80],
        Some(V5),
        V5,
        &p,
    );

    // 3.1.1 has a single failure code: every v5 error becomes 0x80.
    let p = Packet::SubAck(SubAck {
        packet_id: 10,
        codes: vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::NOT_AUTHORIZED,
            ReasonCode::TOPIC_FILTER_INVALID,
        ],
        ..SubAck::default()
    });
    assert_eq!(
        encoded(&p, V311),
        [0x90, 0x05, 0x00, 0x0A, 0x01, 0x80, 0x80]
    );
    assert_eq!(
        encoded(&p, V5),
        [0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x87, 0x8F]
    );
}

#[test]
fn unsubscribe_and_unsuback() {
    let p = Packet::Unsubscribe(Unsubscribe {
        packet_id: 11,
        filters: vec![bs("a/b")],
        ..Unsubscribe::default()
    });
    check(
        &[0xA2, 0x07, 0x00, 0x0B, 0x00, 0x03, b'a', b'/', b'b'],
        Some(V311),
        V311,
        &p,
    );
    check(
        &[0xA2, 0x08, 0x00, 0x0B, 0x00, 0x00, 0x03, b'a', b'/', b'b'],
        Some(V5),
        V5,
        &p,
    );

    let p = Packet::UnsubAck(UnsubAck {
        packet_id: 11,
        codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        ..UnsubAck::default()
    });
    check(
        &[0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11],
        Some(V5),
        V5,
        &p,
    );
    // 3.1.1 UNSUBACK has no payload.
    assert_eq!(encoded(&p, V311), [0xB0, 0x02, 0x00, 0x0B]);
}

// ------------------------------------------------------------------------------------------
// PINGREQ / PINGRESP / DISCONNECT / AUTH

#[test]
fn ping() {
    for protocol in [V311, V5] {
        check(&[0xC0, 0x00], Some(protocol), protocol, &Packet::PingReq);
        check(&[0xD0, 0x00], Some(protocol), protocol, &Packet::PingResp);
    }
}

#[test]
fn disconnect() {
    let normal = Packet::Disconnect(Disconnect::default());
    check(&[0xE0, 0x00], Some(V311), V311, &normal);
    check(&[0xE0, 0x00], Some(V5), V5, &normal);

    let with_will = Packet::Disconnect(Disconnect {
        code: ReasonCode::DISCONNECT_WITH_WILL,
        ..Disconnect::default()
    });
    check(&[0xE0, 0x01, 0x04], Some(V5), V5, &with_will);

    // A 3.1.1 DISCONNECT is always E0 00, whatever the reason.
    let taken_over = Packet::Disconnect(Disconnect {
        code: ReasonCode::SESSION_TAKEN_OVER,
        reason_string: Some("bye".into()),
        ..Disconnect::default()
    });
    assert_eq!(encoded(&taken_over, V311), [0xE0, 0x00]);
    #[rustfmt::skip]
    check(
        &[
            0xE0, 0x08,
            0x8E,                           // session taken over
            0x06,                           // property length
            0x1F, 0x00, 0x03, b'b', b'y', b'e', // reason string
        ],
        Some(V5),
        V5,
        &taken_over,
    );
}

#[test]
fn auth() {
    check(&[0xF0, 0x00], Some(V5), V5, &Packet::Auth(Auth::default()));
    #[rustfmt::skip]
    let wire = [
        0xF0, 0x0A,
        0x18,                                   // continue authentication
        0x08,                                   // property length
        0x15, 0x00, 0x02, b'm', b'1',           //   authentication method
        0x16, 0x00, 0x00,                       //   authentication data (empty)
    ];
    let p = Packet::Auth(Auth {
        code: ReasonCode::CONTINUE_AUTHENTICATION,
        authentication_method: Some("m1".into()),
        authentication_data: Some(Bytes::new()),
        ..Auth::default()
    });
    check(&wire, Some(V5), V5, &p);
}

// ------------------------------------------------------------------------------------------
// Framing

#[test]
fn multi_byte_remaining_length() {
    let payload = vec![0x55u8; 200];
    let p = Packet::Publish(Publish {
        topic: bs("t"),
        payload: Bytes::from(payload.clone()),
        ..Publish::default()
    });
    let wire = encoded(&p, V311);
    // remaining length 203 = 0xCB 0x01
    assert_eq!(&wire[..5], &[0x30, 0xCB, 0x01, 0x00, 0x01]);
    assert_eq!(wire.len(), 3 + 203);
    check(&wire, Some(V311), V311, &p);
}

#[test]
fn non_minimal_remaining_length_is_accepted() {
    // 0x80 0x00 is a (non-minimal) encoding of 0.
    let mut buf = BytesMut::from(&[0xC0, 0x80, 0x00][..]);
    assert_eq!(decode(&mut buf, Some(V311), MAX), Ok(Some(Packet::PingReq)));
}

#[test]
fn incomplete_packets_consume_nothing() {
    let wire = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    for n in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..n]);
        assert_eq!(decode(&mut buf, Some(V311), MAX), Ok(None), "prefix {n}");
        assert_eq!(&buf[..], &wire[..n]);
    }
}

#[test]
fn exactly_max_packet_size_is_accepted() {
    let wire = [0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
    let mut buf = BytesMut::from(&wire[..]);
    assert!(matches!(
        decode(&mut buf, Some(V311), wire.len()),
        Ok(Some(Packet::Publish(_)))
    ));
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(
        decode(&mut buf, Some(V311), wire.len() - 1),
        Err(DecodeError::PacketTooLarge {
            size: wire.len(),
            max: wire.len() - 1
        })
    );
}

#[test]
fn kind_names() {
    assert_eq!(Packet::PingReq.kind(), "PINGREQ");
    assert_eq!(Packet::Connect(Connect::default()).kind(), "CONNECT");
    assert_eq!(Packet::Publish(Publish::default()).kind(), "PUBLISH");
    assert_eq!(Packet::PubRel(PubResp::default()).kind(), "PUBREL");
    assert_eq!(Packet::UnsubAck(UnsubAck::default()).kind(), "UNSUBACK");
    assert_eq!(Packet::Auth(Auth::default()).kind(), "AUTH");
}

#[test]
fn reason_codes() {
    assert_eq!(ReasonCode::default(), ReasonCode::SUCCESS);
    assert!(!ReasonCode::SUCCESS.is_error());
    assert!(!ReasonCode::REAUTHENTICATE.is_error());
    assert!(ReasonCode::UNSPECIFIED_ERROR.is_error());
    assert!(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED.is_error());
    assert_eq!(ReasonCode::NOT_AUTHORIZED.name(), "not authorized");
    assert_eq!(ReasonCode::BANNED.name(), "banned");
    assert_eq!(ReasonCode(0x03).name(), "unknown reason code");
    assert_eq!(
        ReasonCode::PACKET_TOO_LARGE.to_string(),
        "packet too large (0x95)"
    );
    assert!(ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_for("PUBACK"));
    assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_for("PUBREL"));
    // Every defined code has a name.
    for c in 0..=255u8 {
        let named = ReasonCode(c).name() != "unknown reason code";
        let defined = matches!(c, 0x00..=0x02 | 0x04 | 0x10 | 0x11 | 0x18 | 0x19 | 0x80..=0xA2);
        assert_eq!(named, defined, "{c:#04x}");
    }
}

#[test]
fn qos_from_u8() {
    assert_eq!(QoS::from_u8(0), Some(QoS::AtMostOnce));
    assert_eq!(QoS::from_u8(1), Some(QoS::AtLeastOnce));
    assert_eq!(QoS::from_u8(2), Some(QoS::ExactlyOnce));
    assert_eq!(QoS::from_u8(3), None);
    assert!(QoS::AtMostOnce < QoS::ExactlyOnce);
}
