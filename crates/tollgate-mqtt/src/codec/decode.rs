//! The frame decoder.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::cursor::Cursor;
use super::prop::*;
use crate::reason::{
    AUTH_CODES, CONNACK_CODES, DISCONNECT_CODES, PUBACK_CODES, PUBREL_CODES, SUBACK_CODES,
    UNSUBACK_CODES,
};
use crate::{
    topic, Auth, ConnAck, ConnAckProperties, Connect, ConnectProperties, DecodeError, Disconnect,
    Packet, Protocol, PubResp, Publish, PublishProperties, QoS, ReasonCode, SubAck, Subscribe,
    SubscriptionRequest, UnsubAck, Unsubscribe, UserProperties, Will, WillProperties,
};

/// Frame decoder.
///
/// `protocol` is `None` until CONNECT has been decoded: then the only acceptable packet is
/// CONNECT (anything else is [`DecodeError::FirstPacketNotConnect`]) and CONNECT reveals its
/// own protocol level ([`Connect::protocol`]). With `Some(protocol)` every packet type of that
/// version is decoded, in both directions (rejecting, say, a CONNACK sent by a client or a
/// second CONNECT is the broker's job).
///
/// Returns `Ok(None)` when `buf` does not yet hold a complete packet; nothing is consumed
/// then. The fixed header is checked as soon as its bytes are there: an unknown packet type,
/// bad flags, a non-CONNECT first packet or a remaining length of more than 4 bytes are
/// errors at once, and so is a packet whose total size (fixed header included) exceeds
/// `max_packet_size` ([`DecodeError::PacketTooLarge`]) without waiting for its body. None of
/// these consume anything either.
///
/// Once the whole packet is in `buf`, its bytes are split off and frozen (whether the body
/// then decodes or not), and topics, payloads and binary fields of the packet are zero-copy
/// slices of that frame.
///
/// Every decode error is fatal for the connection.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Option<Protocol>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    check_fixed_header(packet_type, flags, protocol)?;

    // Remaining length: a Variable Byte Integer of at most four bytes, peeked in place.
    let mut remaining: usize = 0;
    let mut header_len: usize = 1;
    let mut shift: u32 = 0;
    loop {
        if header_len > 4 {
            return Err(DecodeError::MalformedRemainingLength);
        }
        let Some(&b) = buf.get(header_len) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << shift;
        header_len += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }

    let total = header_len.saturating_add(remaining);
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    decode_frame(&frame, header_len, packet_type, flags, protocol).map(Some)
}

/// Packet type and flag checks that need only the first byte.
fn check_fixed_header(
    packet_type: u8,
    flags: u8,
    protocol: Option<Protocol>,
) -> Result<(), DecodeError> {
    match protocol {
        None if packet_type != 1 => return Err(DecodeError::FirstPacketNotConnect),
        Some(Protocol::V311) if packet_type == 15 => {
            return Err(DecodeError::UnknownPacketType(15));
        }
        _ => {}
    }
    let bad_flags = DecodeError::InvalidHeaderFlags { packet_type, flags };
    match packet_type {
        0 => Err(DecodeError::UnknownPacketType(0)),
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                Err(DecodeError::InvalidQoS(3))
            } else if qos == 0 && flags & 0x08 != 0 {
                // DUP set on a QoS 0 message.
                Err(bad_flags)
            } else {
                Ok(())
            }
        }
        6 | 8 | 10 if flags == 0b0010 => Ok(()),
        6 | 8 | 10 => Err(bad_flags),
        _ if flags == 0 => Ok(()),
        _ => Err(bad_flags),
    }
}

fn decode_frame(
    frame: &Bytes,
    header_len: usize,
    packet_type: u8,
    flags: u8,
    protocol: Option<Protocol>,
) -> Result<Packet, DecodeError> {
    let mut cur = Cursor::new(frame, header_len);
    let cur = &mut cur;
    if packet_type == 1 {
        return connect(cur).map(Packet::Connect);
    }
    // `check_fixed_header` guarantees `protocol` is known for anything but CONNECT.
    let v5 = protocol == Some(Protocol::V5);
    let packet = match packet_type {
        2 => Packet::ConnAck(connack(cur, v5)?),
        3 => Packet::Publish(publish(cur, flags, v5)?),
        4 => Packet::PubAck(pub_resp(cur, v5, "PUBACK", PUBACK_CODES)?),
        5 => Packet::PubRec(pub_resp(cur, v5, "PUBREC", PUBACK_CODES)?),
        6 => Packet::PubRel(pub_resp(cur, v5, "PUBREL", PUBREL_CODES)?),
        7 => Packet::PubComp(pub_resp(cur, v5, "PUBCOMP", PUBREL_CODES)?),
        8 => Packet::Subscribe(subscribe(cur, v5)?),
        9 => Packet::SubAck(suback(cur, v5)?),
        10 => Packet::Unsubscribe(unsubscribe(cur, v5)?),
        11 => Packet::UnsubAck(unsuback(cur, v5)?),
        12 => {
            cur.finish()?;
            Packet::PingReq
        }
        13 => {
            cur.finish()?;
            Packet::PingResp
        }
        14 => Packet::Disconnect(disconnect(cur, v5)?),
        15 if v5 => Packet::Auth(auth(cur)?),
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    Ok(packet)
}

// ---------------------------------------------------------------------------------------------
// Properties

/// A decoded property value; the type follows from the identifier.
enum Prop {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(ByteString),
    Bin(Bytes),
    Pair(String, String),
}

#[derive(Clone, Copy)]
enum PropType {
    Byte,
    U16,
    U32,
    VarInt,
    Str,
    Bin,
    Pair,
}

fn prop_type(id: u8) -> Option<PropType> {
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR => PropType::Byte,
        MESSAGE_EXPIRY_INTERVAL => PropType::U32,
        CONTENT_TYPE => PropType::Str,
        RESPONSE_TOPIC => PropType::Str,
        CORRELATION_DATA => PropType::Bin,
        SUBSCRIPTION_IDENTIFIER => PropType::VarInt,
        SESSION_EXPIRY_INTERVAL => PropType::U32,
        ASSIGNED_CLIENT_IDENTIFIER => PropType::Str,
        SERVER_KEEP_ALIVE => PropType::U16,
        AUTHENTICATION_METHOD => PropType::Str,
        AUTHENTICATION_DATA => PropType::Bin,
        REQUEST_PROBLEM_INFORMATION => PropType::Byte,
        WILL_DELAY_INTERVAL => PropType::U32,
        REQUEST_RESPONSE_INFORMATION => PropType::Byte,
        RESPONSE_INFORMATION => PropType::Str,
        SERVER_REFERENCE => PropType::Str,
        REASON_STRING => PropType::Str,
        RECEIVE_MAXIMUM => PropType::U16,
        TOPIC_ALIAS_MAXIMUM => PropType::U16,
        TOPIC_ALIAS => PropType::U16,
        MAXIMUM_QOS => PropType::Byte,
        RETAIN_AVAILABLE => PropType::Byte,
        USER_PROPERTY => PropType::Pair,
        MAXIMUM_PACKET_SIZE => PropType::U32,
        WILDCARD_SUBSCRIPTION_AVAILABLE => PropType::Byte,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => PropType::Byte,
        SHARED_SUBSCRIPTION_AVAILABLE => PropType::Byte,
        _ => return None,
    })
}

/// Bit of a property identifier in a 64-bit set (all identifiers are below 64).
#[inline]
const fn bit(id: u8) -> u64 {
    match 1u64.checked_shl(id as u32) {
        Some(b) => b,
        None => 0,
    }
}

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0;
    let mut i = 0;
    while i < ids.len() {
        m |= bit(ids[i]);
        i += 1;
    }
    m
}

const USER_ONLY: u64 = bit(USER_PROPERTY);

const CONNECT_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    RECEIVE_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
    TOPIC_ALIAS_MAXIMUM,
    REQUEST_RESPONSE_INFORMATION,
    REQUEST_PROBLEM_INFORMATION,
    USER_PROPERTY,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
]);
const WILL_PROPS: u64 = mask(&[
    WILL_DELAY_INTERVAL,
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
]);
const CONNACK_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    RECEIVE_MAXIMUM,
    MAXIMUM_QOS,
    RETAIN_AVAILABLE,
    MAXIMUM_PACKET_SIZE,
    ASSIGNED_CLIENT_IDENTIFIER,
    TOPIC_ALIAS_MAXIMUM,
    REASON_STRING,
    USER_PROPERTY,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    SHARED_SUBSCRIPTION_AVAILABLE,
    SERVER_KEEP_ALIVE,
    RESPONSE_INFORMATION,
    SERVER_REFERENCE,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
]);
const PUBLISH_PROPS: u64 = mask(&[
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    TOPIC_ALIAS,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    USER_PROPERTY,
    SUBSCRIPTION_IDENTIFIER,
    CONTENT_TYPE,
]);
const PUBLISH_MULTI: u64 = mask(&[USER_PROPERTY, SUBSCRIPTION_IDENTIFIER]);
const ACK_PROPS: u64 = mask(&[REASON_STRING, USER_PROPERTY]);
const SUBSCRIBE_PROPS: u64 = mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
const DISCONNECT_PROPS: u64 = mask(&[
    SESSION_EXPIRY_INTERVAL,
    REASON_STRING,
    SERVER_REFERENCE,
    USER_PROPERTY,
]);
const AUTH_PROPS: u64 = mask(&[
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    REASON_STRING,
    USER_PROPERTY,
]);

/// Reads a property length and the properties it covers. For each property: unknown
/// identifier → `InvalidProperty`, not in `allowed` → `PropertyNotAllowed`, repeated and not
/// in `multi` → `DuplicateProperty`; then `f` stores (and validates) the value.
fn read_properties(
    cur: &mut Cursor<'_>,
    packet: &'static str,
    allowed: u64,
    multi: u64,
    mut f: impl FnMut(u8, Prop) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = cur.varint()?;
    let len = usize::try_from(len).map_err(|_| DecodeError::UnexpectedEof)?;
    let mut props = cur.sub(len)?;
    let mut seen: u64 = 0;
    while !props.is_empty() {
        // Identifiers are Variable Byte Integers, but every defined one is a single byte;
        // a byte >= 0x80 can only start an unknown identifier.
        let id = props.u8()?;
        let ty = prop_type(id).ok_or(DecodeError::InvalidProperty(id))?;
        let b = bit(id);
        if allowed & b == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                property: id,
                packet,
            });
        }
        if seen & b != 0 && multi & b == 0 {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= b;
        let value = match ty {
            PropType::Byte => Prop::Byte(props.u8()?),
            PropType::U16 => Prop::U16(props.u16()?),
            PropType::U32 => Prop::U32(props.u32()?),
            PropType::VarInt => Prop::VarInt(props.varint()?),
            PropType::Str => Prop::Str(props.string()?),
            PropType::Bin => Prop::Bin(props.binary()?),
            PropType::Pair => {
                let k = props.string_owned()?;
                let v = props.string_owned()?;
                Prop::Pair(k, v)
            }
        };
        f(id, value)?;
    }
    Ok(())
}

// Typed accessors. A type mismatch cannot happen (the type comes from the identifier) but is
// reported rather than assumed.
impl Prop {
    fn byte(self, id: u8) -> Result<u8, DecodeError> {
        match self {
            Prop::Byte(v) => Ok(v),
            _ => Err(DecodeError::InvalidProperty(id)),
        }
    }
    /// A byte that must be 0 or 1.
    fn flag(self, id: u8) -> Result<bool, DecodeError> {
        match self.byte(id)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue(id)),
        }
    }
    /// A byte that must be 0 or 1, kept as a byte.
    fn zero_one(self, id: u8) -> Result<u8, DecodeError> {
        self.flag(id).map(u8::from)
    }
    fn u16(self, id: u8) -> Result<u16, DecodeError> {
        match self {
            Prop::U16(v) => Ok(v),
            _ => Err(DecodeError::InvalidProperty(id)),
        }
    }
    fn nonzero_u16(self, id: u8) -> Result<u16, DecodeError> {
        match self.u16(id)? {
            0 => Err(DecodeError::InvalidPropertyValue(id)),
            v => Ok(v),
        }
    }
    fn u32(self, id: u8) -> Result<u32, DecodeError> {
        match self {
            Prop::U32(v) => Ok(v),
            _ => Err(DecodeError::InvalidProperty(id)),
        }
    }
    fn nonzero_u32(self, id: u8) -> Result<u32, DecodeError> {
        match self.u32(id)? {
            0 => Err(DecodeError::InvalidPropertyValue(id)),
            v => Ok(v),
        }
    }
    /// A subscription identifier: Variable Byte Integer, not 0.
    fn subscription_id(self, id: u8) -> Result<u32, DecodeError> {
        match self {
            Prop::VarInt(0) => Err(DecodeError::InvalidPropertyValue(id)),
            Prop::VarInt(v) => Ok(v),
            _ => Err(DecodeError::InvalidProperty(id)),
        }
    }
    fn string(self, id: u8) -> Result<ByteString, DecodeError> {
        match self {
            Prop::Str(v) => Ok(v),
            _ => Err(DecodeError::InvalidProperty(id)),
        }
    }
    fn owned(self, id: u8) -> Result<String, DecodeError> {
        self.string(id).map(|s| String::from(&*s))
    }
    /// A response topic: a valid topic name.
    fn topic_name(self, id: u8) -> Result<ByteString, DecodeError> {
        let s = self.string(id)?;
        if topic::is_valid_name(&s) {
            Ok(s)
        } else {
            Err(DecodeError::InvalidTopicName)
        }
    }
    fn bin(self, id: u8) -> Result<Bytes, DecodeError> {
        match self {
            Prop::Bin(v) => Ok(v),
            _ => Err(DecodeError::InvalidProperty(id)),
        }
    }
    fn push_user(self, id: u8, to: &mut UserProperties) -> Result<(), DecodeError> {
        match self {
            Prop::Pair(k, v) => {
                to.push((k, v));
                Ok(())
            }
            _ => Err(DecodeError::InvalidProperty(id)),
        }
    }
}

/// Reason string and user properties (the acknowledgements).
fn ack_properties(
    cur: &mut Cursor<'_>,
    packet: &'static str,
    reason_string: &mut Option<String>,
    user_properties: &mut UserProperties,
) -> Result<(), DecodeError> {
    read_properties(cur, packet, ACK_PROPS, USER_ONLY, |id, v| {
        match id {
            REASON_STRING => *reason_string = Some(v.owned(id)?),
            _ => v.push_user(id, user_properties)?,
        }
        Ok(())
    })
}

fn reason_code(code: u8, allowed: &[u8], packet: &'static str) -> Result<ReasonCode, DecodeError> {
    if allowed.contains(&code) {
        Ok(ReasonCode(code))
    } else {
        Err(DecodeError::InvalidReasonCode { code, packet })
    }
}

fn packet_id(cur: &mut Cursor<'_>) -> Result<u16, DecodeError> {
    match cur.u16()? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

// ---------------------------------------------------------------------------------------------
// Packets

fn connect(cur: &mut Cursor<'_>) -> Result<Connect, DecodeError> {
    let name = cur.binary_slice()?;
    let level = cur.u8()?;
    match name {
        b"MQTT" => {}
        // MQTT 3.1 ("MQIsdp", level 3): answered with "unacceptable protocol version".
        b"MQIsdp" => return Err(DecodeError::UnsupportedProtocol(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    }
    let protocol = Protocol::from_level(level).ok_or(DecodeError::UnsupportedProtocol(level))?;
    let v5 = protocol == Protocol::V5;

    let flags = cur.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::InvalidConnectFlags);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::InvalidConnectFlags);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS(will_qos))?;
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::InvalidConnectFlags);
    }
    let keep_alive = cur.u16()?;

    let mut properties = ConnectProperties::default();
    if v5 {
        let p = &mut properties;
        read_properties(cur, "CONNECT", CONNECT_PROPS, USER_ONLY, |id, v| {
            match id {
                SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(v.u32(id)?),
                RECEIVE_MAXIMUM => p.receive_maximum = Some(v.nonzero_u16(id)?),
                MAXIMUM_PACKET_SIZE => p.maximum_packet_size = Some(v.nonzero_u32(id)?),
                TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(v.u16(id)?),
                REQUEST_RESPONSE_INFORMATION => p.request_response_information = Some(v.flag(id)?),
                REQUEST_PROBLEM_INFORMATION => p.request_problem_information = Some(v.flag(id)?),
                AUTHENTICATION_METHOD => p.authentication_method = Some(v.owned(id)?),
                AUTHENTICATION_DATA => p.authentication_data = Some(v.bin(id)?),
                _ => v.push_user(id, &mut p.user_properties)?,
            }
            Ok(())
        })?;
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::AuthDataWithoutMethod);
        }
    }

    let client_id = cur.string()?;

    let will = if will_flag {
        let mut wp = WillProperties::default();
        if v5 {
            let p = &mut wp;
            read_properties(cur, "WILL", WILL_PROPS, USER_ONLY, |id, v| {
                match id {
                    WILL_DELAY_INTERVAL => p.will_delay_interval = Some(v.u32(id)?),
                    PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(v.zero_one(id)?),
                    MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(v.u32(id)?),
                    CONTENT_TYPE => p.content_type = Some(v.owned(id)?),
                    RESPONSE_TOPIC => p.response_topic = Some(v.topic_name(id)?),
                    CORRELATION_DATA => p.correlation_data = Some(v.bin(id)?),
                    _ => v.push_user(id, &mut p.user_properties)?,
                }
                Ok(())
            })?;
        }
        let topic = cur.string()?;
        if !topic::is_valid_name(&topic) {
            return Err(DecodeError::InvalidTopicName);
        }
        let payload = cur.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties: wp,
        })
    } else {
        None
    };

    let username = if username_flag {
        Some(cur.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(cur.binary()?)
    } else {
        None
    };
    cur.finish()?;

    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(cur: &mut Cursor<'_>, v5: bool) -> Result<ConnAck, DecodeError> {
    let ack_flags = cur.u8()?;
    if ack_flags & 0xFE != 0 {
        return Err(DecodeError::InvalidConnAckFlags);
    }
    let rc = cur.u8()?;
    let mut properties = ConnAckProperties::default();
    let code = if v5 {
        let code = reason_code(rc, CONNACK_CODES, "CONNACK")?;
        let p = &mut properties;
        read_properties(cur, "CONNACK", CONNACK_PROPS, USER_ONLY, |id, v| {
            match id {
                SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(v.u32(id)?),
                RECEIVE_MAXIMUM => p.receive_maximum = Some(v.nonzero_u16(id)?),
                MAXIMUM_QOS => p.maximum_qos = Some(v.zero_one(id)?),
                RETAIN_AVAILABLE => p.retain_available = Some(v.flag(id)?),
                MAXIMUM_PACKET_SIZE => p.maximum_packet_size = Some(v.nonzero_u32(id)?),
                ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(v.owned(id)?),
                TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(v.u16(id)?),
                REASON_STRING => p.reason_string = Some(v.owned(id)?),
                WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    p.wildcard_subscription_available = Some(v.flag(id)?)
                }
                SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    p.subscription_identifiers_available = Some(v.flag(id)?)
                }
                SHARED_SUBSCRIPTION_AVAILABLE => {
                    p.shared_subscription_available = Some(v.flag(id)?)
                }
                SERVER_KEEP_ALIVE => p.server_keep_alive = Some(v.u16(id)?),
                RESPONSE_INFORMATION => p.response_information = Some(v.owned(id)?),
                SERVER_REFERENCE => p.server_reference = Some(v.owned(id)?),
                AUTHENTICATION_METHOD => p.authentication_method = Some(v.owned(id)?),
                AUTHENTICATION_DATA => p.authentication_data = Some(v.bin(id)?),
                _ => v.push_user(id, &mut p.user_properties)?,
            }
            Ok(())
        })?;
        code
    } else {
        match rc {
            0 => ReasonCode::SUCCESS,
            1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            3 => ReasonCode::SERVER_UNAVAILABLE,
            4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            5 => ReasonCode::NOT_AUTHORIZED,
            code => {
                return Err(DecodeError::InvalidReasonCode {
                    code,
                    packet: "CONNACK",
                })
            }
        }
    };
    cur.finish()?;
    Ok(ConnAck {
        session_present: ack_flags & 0x01 != 0,
        code,
        properties,
    })
}

fn publish(cur: &mut Cursor<'_>, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let qos_bits = (flags >> 1) & 0x03;
    let qos = QoS::from_u8(qos_bits).ok_or(DecodeError::InvalidQoS(qos_bits))?;
    let topic = cur.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(cur)?
    };
    let mut properties = PublishProperties::default();
    if v5 {
        let p = &mut properties;
        read_properties(cur, "PUBLISH", PUBLISH_PROPS, PUBLISH_MULTI, |id, v| {
            match id {
                PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(v.zero_one(id)?),
                MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(v.u32(id)?),
                TOPIC_ALIAS => p.topic_alias = Some(v.nonzero_u16(id)?),
                RESPONSE_TOPIC => p.response_topic = Some(v.topic_name(id)?),
                CORRELATION_DATA => p.correlation_data = Some(v.bin(id)?),
                SUBSCRIPTION_IDENTIFIER => p.subscription_identifiers.push(v.subscription_id(id)?),
                CONTENT_TYPE => p.content_type = Some(v.owned(id)?),
                _ => v.push_user(id, &mut p.user_properties)?,
            }
            Ok(())
        })?;
    }
    let topic_ok = if topic.is_empty() {
        v5 && properties.topic_alias.is_some()
    } else {
        topic::is_valid_name(&topic)
    };
    if !topic_ok {
        return Err(DecodeError::InvalidTopicName);
    }
    let payload = cur.rest()?;
    Ok(Publish {
        dup: flags & 0x08 != 0,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        payload,
        properties,
    })
}

fn pub_resp(
    cur: &mut Cursor<'_>,
    v5: bool,
    packet: &'static str,
    codes: &[u8],
) -> Result<PubResp, DecodeError> {
    let mut r = PubResp {
        packet_id: packet_id(cur)?,
        ..PubResp::default()
    };
    // v5: remaining length 2 = success without properties; 3 = reason code only.
    if v5 && !cur.is_empty() {
        r.code = reason_code(cur.u8()?, codes, packet)?;
        if !cur.is_empty() {
            ack_properties(cur, packet, &mut r.reason_string, &mut r.user_properties)?;
        }
    }
    cur.finish()?;
    Ok(r)
}

fn subscribe(cur: &mut Cursor<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let mut s = Subscribe {
        packet_id: packet_id(cur)?,
        ..Subscribe::default()
    };
    if v5 {
        let (sub_id, user) = (&mut s.subscription_identifier, &mut s.user_properties);
        read_properties(cur, "SUBSCRIBE", SUBSCRIBE_PROPS, USER_ONLY, |id, v| {
            match id {
                SUBSCRIPTION_IDENTIFIER => *sub_id = Some(v.subscription_id(id)?),
                _ => v.push_user(id, user)?,
            }
            Ok(())
        })?;
    }
    while !cur.is_empty() {
        let filter = cur.string()?;
        let options = cur.u8()?;
        if !topic::is_valid_filter(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if options & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let qos_bits = options & 0x03;
        let qos = QoS::from_u8(qos_bits).ok_or(DecodeError::InvalidQoS(qos_bits))?;
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::InvalidRetainHandling(3));
        }
        let no_local = options & 0x04 != 0;
        if no_local && topic::parse_shared(&filter).is_some() {
            return Err(DecodeError::SharedSubscriptionNoLocal);
        }
        s.filters.push(SubscriptionRequest {
            filter,
            qos,
            no_local,
            retain_as_published: options & 0x08 != 0,
            retain_handling,
        });
    }
    if s.filters.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    Ok(s)
}

fn suback(cur: &mut Cursor<'_>, v5: bool) -> Result<SubAck, DecodeError> {
    let mut s = SubAck {
        packet_id: packet_id(cur)?,
        ..SubAck::default()
    };
    if v5 {
        ack_properties(cur, "SUBACK", &mut s.reason_string, &mut s.user_properties)?;
    }
    let raw = cur.take(cur.remaining())?;
    s.codes.reserve_exact(raw.len());
    for &c in raw {
        let code = if v5 {
            reason_code(c, SUBACK_CODES, "SUBACK")?
        } else {
            reason_code(c, &[0x00, 0x01, 0x02, 0x80], "SUBACK")?
        };
        s.codes.push(code);
    }
    Ok(s)
}

fn unsubscribe(cur: &mut Cursor<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let mut u = Unsubscribe {
        packet_id: packet_id(cur)?,
        ..Unsubscribe::default()
    };
    if v5 {
        let user = &mut u.user_properties;
        read_properties(cur, "UNSUBSCRIBE", USER_ONLY, USER_ONLY, |id, v| {
            v.push_user(id, user)
        })?;
    }
    while !cur.is_empty() {
        let filter = cur.string()?;
        if !topic::is_valid_filter(&filter) {
            return Err(DecodeError::InvalidTopicFilter);
        }
        u.filters.push(filter);
    }
    if u.filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(u)
}

fn unsuback(cur: &mut Cursor<'_>, v5: bool) -> Result<UnsubAck, DecodeError> {
    let mut u = UnsubAck {
        packet_id: packet_id(cur)?,
        ..UnsubAck::default()
    };
    if v5 {
        ack_properties(
            cur,
            "UNSUBACK",
            &mut u.reason_string,
            &mut u.user_properties,
        )?;
        let raw = cur.take(cur.remaining())?;
        u.codes.reserve_exact(raw.len());
        for &c in raw {
            u.codes.push(reason_code(c, UNSUBACK_CODES, "UNSUBACK")?);
        }
    }
    cur.finish()?;
    Ok(u)
}

fn disconnect(cur: &mut Cursor<'_>, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    // v5: remaining length 0 = normal disconnection; 1 = reason code only.
    if v5 && !cur.is_empty() {
        d.code = reason_code(cur.u8()?, DISCONNECT_CODES, "DISCONNECT")?;
        if !cur.is_empty() {
            let p = &mut d;
            read_properties(cur, "DISCONNECT", DISCONNECT_PROPS, USER_ONLY, |id, v| {
                match id {
                    SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(v.u32(id)?),
                    REASON_STRING => p.reason_string = Some(v.owned(id)?),
                    SERVER_REFERENCE => p.server_reference = Some(v.owned(id)?),
                    _ => v.push_user(id, &mut p.user_properties)?,
                }
                Ok(())
            })?;
        }
    }
    cur.finish()?;
    Ok(d)
}

fn auth(cur: &mut Cursor<'_>) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    // Remaining length 0 = success without properties.
    if !cur.is_empty() {
        a.code = reason_code(cur.u8()?, AUTH_CODES, "AUTH")?;
        if !cur.is_empty() {
            let p = &mut a;
            read_properties(cur, "AUTH", AUTH_PROPS, USER_ONLY, |id, v| {
                match id {
                    AUTHENTICATION_METHOD => p.authentication_method = Some(v.owned(id)?),
                    AUTHENTICATION_DATA => p.authentication_data = Some(v.bin(id)?),
                    REASON_STRING => p.reason_string = Some(v.owned(id)?),
                    _ => v.push_user(id, &mut p.user_properties)?,
                }
                Ok(())
            })?;
        }
    }
    cur.finish()?;
    Ok(a)
}
