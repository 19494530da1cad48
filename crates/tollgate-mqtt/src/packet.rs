//! Packet types.

use bytes::Bytes;
use bytestring::ByteString;

use crate::ReasonCode;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Protocol {
    /// The protocol level byte of CONNECT.
    #[inline]
    pub fn level(self) -> u8 {
        match self {
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        }
    }

    /// The protocol for a CONNECT protocol level byte (4 or 5).
    #[inline]
    pub fn from_level(level: u8) -> Option<Protocol> {
        match level {
            4 => Some(Protocol::V311),
            5 => Some(Protocol::V5),
            _ => None,
        }
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `0`, `1`, `2` to a QoS; anything else is `None`.
    #[inline]
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The wire value.
    #[inline]
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// MQTT 5 user properties, in wire order (names may repeat).
pub type UserProperties = Vec<(String, String)>;

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5 only.
    Auth(Auth),
}

impl Packet {
    /// Upper-case packet name as in the specification: `"CONNECT"`, `"PUBLISH"`, …
    pub fn kind(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }

    /// The control packet type (high nibble of the first byte), 1 to 15.
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }
}

/// CONNECT.
///
/// When encoding, the wire protocol level comes from the `protocol` argument of
/// [`Packet::encode`], not from [`Connect::protocol`]. When decoding, `protocol` is the level
/// found on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connect {
    pub protocol: Protocol,
    /// "Clean session" in 3.1.1.
    pub clean_start: bool,
    pub keep_alive: u16,
    /// May be empty (the broker decides whether to assign one or refuse).
    pub client_id: ByteString,
    pub will: Option<Will>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    /// Empty for 3.1.1.
    pub properties: ConnectProperties,
}

/// CONNECT properties (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    pub session_expiry_interval: Option<u32>,
    /// Never `Some(0)` after decoding.
    pub receive_maximum: Option<u16>,
    /// Never `Some(0)` after decoding.
    pub maximum_packet_size: Option<u32>,
    pub topic_alias_maximum: Option<u16>,
    pub request_response_information: Option<bool>,
    pub request_problem_information: Option<bool>,
    pub user_properties: UserProperties,
    pub authentication_method: Option<String>,
    /// Only present together with `authentication_method` after decoding.
    pub authentication_data: Option<Bytes>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// A valid topic name (no wildcards) after decoding.
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Empty for 3.1.1.
    pub properties: WillProperties,
}

/// Will properties (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    pub will_delay_interval: Option<u32>,
    /// 0 or 1 after decoding.
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    /// A valid topic name after decoding.
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
}

/// CONNACK.
///
/// In 3.1.1 the return code is mapped to and from a v5 reason code (see [`Packet::encode`]);
/// decoding a 3.1.1 return code gives 0→`SUCCESS`, 1→`UNSUPPORTED_PROTOCOL_VERSION`,
/// 2→`CLIENT_IDENTIFIER_NOT_VALID`, 3→`SERVER_UNAVAILABLE`, 4→`BAD_USER_NAME_OR_PASSWORD`,
/// 5→`NOT_AUTHORIZED`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ReasonCode,
    /// Empty for 3.1.1.
    pub properties: ConnAckProperties,
}

/// CONNACK properties (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    pub session_expiry_interval: Option<u32>,
    pub receive_maximum: Option<u16>,
    /// 0 or 1 after decoding.
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<bool>,
    pub maximum_packet_size: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub topic_alias_maximum: Option<u16>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifiers_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
    pub server_keep_alive: Option<u16>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// A valid topic name, or empty in v5 when `properties.topic_alias` is set.
    pub topic: ByteString,
    /// 0 for QoS 0 (not on the wire); non-zero for QoS 1 and 2 after decoding.
    pub packet_id: u16,
    pub payload: Bytes,
    /// Empty for 3.1.1.
    pub properties: PublishProperties,
}

/// PUBLISH properties (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// 0 or 1 after decoding.
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    /// Never `Some(0)` after decoding.
    pub topic_alias: Option<u16>,
    /// A valid topic name after decoding.
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: UserProperties,
    /// Each in `1..=268_435_455` after decoding.
    pub subscription_identifiers: Vec<u32>,
    pub content_type: Option<String>,
}

impl PublishProperties {
    /// `true` when no property is set (nothing but the zero property length on the wire).
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
            && self.subscription_identifiers.is_empty()
            && self.content_type.is_none()
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP.
///
/// In 3.1.1 only `packet_id` is on the wire (`code` decodes as `SUCCESS`). In v5 the reason
/// code and properties are omitted when `code == SUCCESS` and there are no properties
/// (remaining length 2), and the property length is omitted when there are no properties
/// (remaining length 3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PubResp {
    /// Non-zero after decoding.
    pub packet_id: u16,
    pub code: ReasonCode,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// Non-zero after decoding.
    pub packet_id: u16,
    /// At least one after decoding.
    pub filters: Vec<SubscriptionRequest>,
    /// v5 only; in `1..=268_435_455` after decoding.
    pub subscription_identifier: Option<u32>,
    pub user_properties: UserProperties,
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// A valid topic filter (possibly `$share/{group}/{filter}`) after decoding.
    pub filter: ByteString,
    pub qos: QoS,
    /// v5 only.
    pub no_local: bool,
    /// v5 only.
    pub retain_as_published: bool,
    /// v5 only; 0, 1 or 2.
    pub retain_handling: u8,
}

/// SUBACK. In 3.1.1 a code below `0x80` is written as is (0, 1, 2) and any error as `0x80`;
/// 3.1.1 failure `0x80` decodes as `UNSPECIFIED_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubAck {
    pub packet_id: u16,
    pub codes: Vec<ReasonCode>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    /// Non-zero after decoding.
    pub packet_id: u16,
    /// At least one, each a valid topic filter, after decoding.
    pub filters: Vec<ByteString>,
    pub user_properties: UserProperties,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubAck {
    pub packet_id: u16,
    /// v5 only; empty (and ignored when encoding) in 3.1.1.
    pub codes: Vec<ReasonCode>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}

/// DISCONNECT. In 3.1.1 it is always the two bytes `E0 00`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub code: ReasonCode,
    pub session_expiry_interval: Option<u32>,
    pub reason_string: Option<String>,
    pub server_reference: Option<String>,
    pub user_properties: UserProperties,
}

/// AUTH (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub code: ReasonCode,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub reason_string: Option<String>,
    pub user_properties: UserProperties,
}
