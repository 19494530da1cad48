//! Decode and encode errors.

use crate::ReasonCode;

/// Why a frame could not be decoded. Every decode error is fatal for the connection; use
/// [`DecodeError::reason_code`] for the v5 DISCONNECT (or CONNACK when it happened on CONNECT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The remaining length of the fixed header has more than 4 bytes.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// A Variable Byte Integer inside the packet (property length, subscription identifier)
    /// has more than 4 bytes.
    #[error("malformed variable byte integer")]
    MalformedVarInt,
    /// The whole packet (fixed header included) is larger than the allowed maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// Flag bits of the fixed header not allowed for this packet type.
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidHeaderFlags { packet_type: u8, flags: u8 },
    /// Packet type 0, or 15 (AUTH) outside MQTT 5.
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// A declared length runs past the end of the frame (or of the property block).
    #[error("a declared length runs past the end of the packet")]
    UnexpectedEof,
    /// A UTF-8 string field is not valid UTF-8.
    #[error("invalid UTF-8 in a string")]
    InvalidUtf8,
    /// A UTF-8 string field contains U+0000.
    #[error("U+0000 in a string")]
    NullCharacter,
    /// QoS 3 (in the PUBLISH header, the will flags or subscription options).
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    /// A packet identifier of 0 where a non-zero one is required.
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A PUBLISH/will/response topic that is not a valid topic name (empty without a topic
    /// alias, or with a wildcard).
    #[error("invalid topic name")]
    InvalidTopicName,
    /// A SUBSCRIBE/UNSUBSCRIBE topic filter that is not valid.
    #[error("invalid topic filter")]
    InvalidTopicFilter,
    /// SUBSCRIBE without any topic filter.
    #[error("SUBSCRIBE without topic filters")]
    EmptySubscribe,
    /// UNSUBSCRIBE without any topic filter.
    #[error("UNSUBSCRIBE without topic filters")]
    EmptyUnsubscribe,
    /// CONNECT protocol name is neither "MQTT" nor "MQIsdp".
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// CONNECT protocol level other than 4 (3.1.1) and 5 (5.0), including MQIsdp 3.1 (level 3).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocol(u8),
    /// CONNECT flags: reserved bit set, will QoS/retain without will flag, or (3.1.1)
    /// password without user name.
    #[error("invalid CONNECT flags")]
    InvalidConnectFlags,
    /// CONNACK acknowledge flags with reserved bits set.
    #[error("invalid CONNACK flags")]
    InvalidConnAckFlags,
    /// Unknown property identifier.
    #[error("unknown property identifier {0:#04x}")]
    InvalidProperty(u8),
    /// A property that may appear only once appeared again.
    #[error("duplicate property {0:#04x}")]
    DuplicateProperty(u8),
    /// A known property that this packet may not carry.
    #[error("property {property:#04x} not allowed in {packet}")]
    PropertyNotAllowed { property: u8, packet: &'static str },
    /// A property with a value the specification forbids (0 receive maximum, 0 maximum packet
    /// size, 0 topic alias, 0 subscription identifier, a boolean/indicator other than 0/1, …).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u8),
    /// Authentication data without an authentication method in CONNECT.
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
    /// A reason code (or 3.1.1 return code) not allowed in this packet.
    #[error("reason code {code:#04x} not allowed in {packet}")]
    InvalidReasonCode { code: u8, packet: &'static str },
    /// Subscription option retain handling 3.
    #[error("invalid retain handling {0}")]
    InvalidRetainHandling(u8),
    /// Reserved subscription option bits set.
    #[error("invalid subscription options")]
    InvalidSubscriptionOptions,
    /// A shared subscription with the no local option (MQTT 5 protocol error).
    #[error("no local on a shared subscription")]
    SharedSubscriptionNoLocal,
    /// Bytes left in the frame after the last field.
    #[error("trailing bytes after the packet")]
    TrailingBytes,
    /// The first packet of a connection is not CONNECT.
    #[error("first packet is not CONNECT")]
    FirstPacketNotConnect,
}

impl DecodeError {
    /// The reason code to send in a v5 DISCONNECT (or CONNACK if it happened on the CONNECT).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocol(_) | InvalidProtocolName => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            InvalidTopicName => ReasonCode::TOPIC_NAME_INVALID,
            InvalidTopicFilter => ReasonCode::TOPIC_FILTER_INVALID,
            // Topic Alias 0: "the receiver uses DISCONNECT with Reason Code 0x94".
            InvalidPropertyValue(0x23) => ReasonCode::TOPIC_ALIAS_INVALID,
            FirstPacketNotConnect
            | DuplicateProperty(_)
            | PropertyNotAllowed { .. }
            | InvalidPropertyValue(_)
            | AuthDataWithoutMethod
            | InvalidReasonCode { .. }
            // MQTT 5 3.8.3 / 3.10.3: a SUBSCRIBE or UNSUBSCRIBE without a filter is a Protocol Error.
            | EmptySubscribe
            | EmptyUnsubscribe
            | SharedSubscriptionNoLocal => ReasonCode::PROTOCOL_ERROR,
            MalformedRemainingLength
            | MalformedVarInt
            | InvalidHeaderFlags { .. }
            | UnknownPacketType(_)
            | UnexpectedEof
            | InvalidUtf8
            | NullCharacter
            | InvalidQoS(_)
            | ZeroPacketId
            | InvalidConnectFlags
            | InvalidConnAckFlags
            | InvalidProperty(_)
            | InvalidRetainHandling(_)
            | InvalidSubscriptionOptions
            | TrailingBytes => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet could not be encoded. On error nothing is appended to the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The remaining length would exceed 268 435 455 bytes; `size` is the whole packet.
    #[error("packet of {size} bytes is too large for MQTT")]
    PacketTooLarge { size: usize },
    /// A UTF-8 string longer than 65 535 bytes.
    #[error("string longer than 65535 bytes")]
    StringTooLong,
    /// A binary field longer than 65 535 bytes.
    #[error("binary data longer than 65535 bytes")]
    BinaryTooLong,
    /// A Variable Byte Integer field (subscription identifier) above 268 435 455.
    #[error("value too large for a variable byte integer")]
    ValueTooLarge,
    /// A field with a value that cannot be put on the wire (e.g. retain handling 3).
    #[error("invalid value for {0}")]
    InvalidField(&'static str),
    /// A 3.1.1 CONNECT with a password but no user name.
    #[error("password without user name in MQTT 3.1.1")]
    PasswordWithoutUsername,
    /// The packet does not exist in that protocol version (AUTH in 3.1.1).
    #[error("{0} does not exist in MQTT 3.1.1")]
    NotInProtocol(&'static str),
}
