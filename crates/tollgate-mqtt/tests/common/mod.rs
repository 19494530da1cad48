//! Shared proptest strategies: arbitrary *valid* packets for each protocol version.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use tollgate_mqtt::*;

pub const MAX: usize = 1 << 20;

pub const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// The 3.1.1 return codes 0..=5 as the v5 codes they decode to.
pub const CONNACK_CODES_V311: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
pub const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
pub const PUBREL_CODES: &[u8] = &[0x00, 0x92];
pub const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
pub const SUBACK_CODES_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
pub const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
pub const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
pub const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

/// Any UTF-8 string without U+0000 (multi-byte characters included).
pub fn string() -> impl Strategy<Value = String> {
    prop_oneof![16 => "[^\\x00]{0,8}", 1 => "[^\\x00]{100,200}"]
}

pub fn bstring() -> impl Strategy<Value = ByteString> {
    string().prop_map(ByteString::from)
}

pub fn bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..24),
        1 => vec(any::<u8>(), 100..400),
    ]
    .prop_map(Bytes::from)
}

pub fn user_props() -> impl Strategy<Value = UserProperties> {
    vec((string(), string()), 0..3)
}

pub fn code(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    select(codes).prop_map(ReasonCode)
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

pub fn topic_name() -> impl Strategy<Value = ByteString> {
    "[a-z0-9é€😀 $/_-]{1,16}"
        .prop_filter("valid topic name", |t| topic::is_valid_name(t))
        .prop_map(ByteString::from)
}

pub fn topic_filter() -> impl Strategy<Value = ByteString> {
    (
        of("[a-z0-9]{1,4}"),
        vec(prop_oneof![Just("+".to_string()), "[a-z0-9é]{0,3}"], 1..4),
        any::<bool>(),
    )
        .prop_map(|(share, levels, hash)| {
            let mut f = String::new();
            if let Some(group) = share {
                f.push_str("$share/");
                f.push_str(&group);
                f.push('/');
            }
            f.push_str(&levels.join("/"));
            if hash {
                f.push_str("/#");
            }
            f
        })
        .prop_filter("valid topic filter", |f| topic::is_valid_filter(f))
        .prop_map(ByteString::from)
}

// ------------------------------------------------------------------------------------------
// MQTT 5

pub fn connect_props() -> impl Strategy<Value = ConnectProperties> {
    (
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(1..=u32::MAX),
        of(any::<u16>()),
        of(any::<bool>()),
        of(any::<bool>()),
        user_props(),
        of((string(), of(bytes()))),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, user, auth)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: user,
                authentication_method: auth.as_ref().map(|a| a.0.clone()),
                authentication_data: auth.and_then(|a| a.1),
            },
        )
}

pub fn will_props() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        of(0..=1u8),
        of(any::<u32>()),
        of(string()),
        of(topic_name()),
        of(bytes()),
        user_props(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, user)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: user,
        })
}

pub fn will(v5: bool) -> impl Strategy<Value = Will> {
    let props = if v5 {
        will_props().boxed()
    } else {
        Just(WillProperties::default()).boxed()
    };
    (topic_name(), bytes(), qos(), any::<bool>(), props).prop_map(
        |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        },
    )
}

pub fn connect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = protocol == Protocol::V5;
    let props = if v5 {
        connect_props().boxed()
    } else {
        Just(ConnectProperties::default()).boxed()
    };
    (
        any::<bool>(),
        any::<u16>(),
        bstring(),
        of(will(v5)),
        of(bstring()),
        of(bytes()),
        props,
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1: a password requires a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                })
            },
        )
}

pub fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            of(any::<u32>()),
            of(1..=u16::MAX),
            of(0..=1u8),
            of(any::<bool>()),
            of(1..=u32::MAX),
            of(string()),
            of(any::<u16>()),
            of(string()),
            user_props(),
        ),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<u16>()),
            of(string()),
            of(string()),
            of(string()),
            of(bytes()),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs, user), (wsa, sia, ssa, ska, ri, sr, am, ad))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: user,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        )
}

pub fn connack(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let (codes, props) = match protocol {
        Protocol::V5 => (CONNACK_CODES, connack_props().boxed()),
        Protocol::V311 => (
            CONNACK_CODES_V311,
            Just(ConnAckProperties::default()).boxed(),
        ),
    };
    (any::<bool>(), code(codes), props).prop_map(|(session_present, code, properties)| {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            properties,
        })
    })
}

pub fn publish_props() -> impl Strategy<Value = PublishProperties> {
    (
        of(0..=1u8),
        of(any::<u32>()),
        of(1..=u16::MAX),
        of(topic_name()),
        of(bytes()),
        user_props(),
        vec(1..=268_435_455u32, 0..3),
        of(string()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, user, ids, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: user,
            subscription_identifiers: ids,
            content_type: ct,
        })
}

pub fn publish(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = protocol == Protocol::V5;
    let props = if v5 {
        publish_props().boxed()
    } else {
        Just(PublishProperties::default()).boxed()
    };
    let topic = if v5 {
        // An empty topic (with a topic alias, forced below) now and then.
        prop_oneof![4 => topic_name(), 1 => Just(ByteString::new())].boxed()
    } else {
        topic_name().boxed()
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic,
        packet_id(),
        bytes(),
        props,
    )
        .prop_map(|(dup, qos, retain, topic, id, payload, mut properties)| {
            if topic.is_empty() && properties.topic_alias.is_none() {
                properties.topic_alias = Some(1);
            }
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { 0 } else { id },
                payload,
                properties,
            })
        })
}

pub fn pub_resp(protocol: Protocol, codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    let extra = match protocol {
        Protocol::V5 => (code(codes), of(string()), user_props()).boxed(),
        Protocol::V311 => Just((ReasonCode::SUCCESS, None, Vec::new())).boxed(),
    };
    (packet_id(), extra).prop_map(
        |(packet_id, (code, reason_string, user_properties))| PubResp {
            packet_id,
            code,
            reason_string,
            user_properties,
        },
    )
}

pub fn subscription(v5: bool) -> impl Strategy<Value = SubscriptionRequest> {
    (topic_filter(), qos(), any::<bool>(), any::<bool>(), 0..=2u8).prop_map(
        move |(filter, qos, no_local, rap, rh)| {
            let shared = topic::parse_shared(&filter).is_some();
            SubscriptionRequest {
                no_local: v5 && no_local && !shared,
                retain_as_published: v5 && rap,
                retain_handling: if v5 { rh } else { 0 },
                filter,
                qos,
            }
        },
    )
}

pub fn subscribe(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = protocol == Protocol::V5;
    let extra = if v5 {
        (of(1..=268_435_455u32), user_props()).boxed()
    } else {
        Just((None, Vec::new())).boxed()
    };
    (packet_id(), vec(subscription(v5), 1..4), extra).prop_map(
        |(packet_id, filters, (subscription_identifier, user_properties))| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                subscription_identifier,
                user_properties,
            })
        },
    )
}

pub fn suback(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let extra = match protocol {
        Protocol::V5 => (vec(code(SUBACK_CODES), 0..4), of(string()), user_props()).boxed(),
        Protocol::V311 => (
            vec(code(SUBACK_CODES_V311), 0..4),
            Just(None),
            Just(Vec::new()),
        )
            .boxed(),
    };
    (packet_id(), extra).prop_map(|(packet_id, (codes, reason_string, user_properties))| {
        Packet::SubAck(SubAck {
            packet_id,
            codes,
            reason_string,
            user_properties,
        })
    })
}

pub fn unsubscribe(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let user = match protocol {
        Protocol::V5 => user_props().boxed(),
        Protocol::V311 => Just(Vec::new()).boxed(),
    };
    (packet_id(), vec(topic_filter(), 1..4), user).prop_map(
        |(packet_id, filters, user_properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                user_properties,
            })
        },
    )
}

pub fn unsuback(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let extra = match protocol {
        Protocol::V5 => (vec(code(UNSUBACK_CODES), 0..4), of(string()), user_props()).boxed(),
        Protocol::V311 => Just((Vec::new(), None, Vec::new())).boxed(),
    };
    (packet_id(), extra).prop_map(|(packet_id, (codes, reason_string, user_properties))| {
        Packet::UnsubAck(UnsubAck {
            packet_id,
            codes,
            reason_string,
            user_properties,
        })
    })
}

pub fn disconnect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    match protocol {
        Protocol::V5 => (
            code(DISCONNECT_CODES),
            of(any::<u32>()),
            of(string()),
            of(string()),
            user_props(),
        )
            .prop_map(|(code, sei, rs, sr, user)| {
                Packet::Disconnect(Disconnect {
                    code,
                    session_expiry_interval: sei,
                    reason_string: rs,
                    server_reference: sr,
                    user_properties: user,
                })
            })
            .boxed(),
        Protocol::V311 => Just(Packet::Disconnect(Disconnect::default())).boxed(),
    }
}

pub fn auth() -> impl Strategy<Value = Packet> {
    (
        code(AUTH_CODES),
        of(string()),
        of(bytes()),
        of(string()),
        user_props(),
    )
        .prop_map(|(code, am, ad, rs, user)| {
            Packet::Auth(Auth {
                code,
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: user,
            })
        })
}

/// Any valid packet of `protocol` (AUTH only for v5).
pub fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(protocol),
        connack(protocol),
        publish(protocol),
        pub_resp(protocol, PUBACK_CODES).prop_map(Packet::PubAck),
        pub_resp(protocol, PUBACK_CODES).prop_map(Packet::PubRec),
        pub_resp(protocol, PUBREL_CODES).prop_map(Packet::PubRel),
        pub_resp(protocol, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(protocol),
        suback(protocol),
        unsubscribe(protocol),
        unsuback(protocol),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(protocol),
    ];
    match protocol {
        Protocol::V5 => prop_oneof![14 => common, 1 => auth()].boxed(),
        Protocol::V311 => common.boxed(),
    }
}

/// Any valid packet of either protocol, with its protocol.
pub fn any_packet() -> impl Strategy<Value = (Protocol, Packet)> {
    prop_oneof![
        packet(Protocol::V311).prop_map(|p| (Protocol::V311, p)),
        packet(Protocol::V5).prop_map(|p| (Protocol::V5, p)),
    ]
}

/// Encodes `p`, asserting success and that `encoded_len` is exact.
pub fn encode(p: &Packet, protocol: Protocol) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(protocol, &mut buf).expect("encode");
    assert_eq!(buf.len(), p.encoded_len(protocol), "encoded_len of {p:?}");
    buf
}

/// The protocol to pass to `decode` for a packet encoded with `protocol`: `None` for CONNECT
/// (the first packet of a connection), `Some(protocol)` otherwise.
pub fn decode_protocol(p: &Packet, protocol: Protocol) -> Option<Protocol> {
    match p {
        Packet::Connect(_) => None,
        _ => Some(protocol),
    }
}
