//! # tollgate-mqtt
//!
//! The MQTT wire codec of Tollgate. This crate owns the MQTT 3.1.1 and 5.0 **packets**:
//!
//! * their types ([`Packet`] and one struct per packet kind),
//! * **decoding** ([`decode`]): bytes in, packets out, with every structural rule of both
//!   specifications enforced (fixed-header flags, lengths, UTF-8, properties, subscription
//!   options, …) and a hard [`max_packet_size`](decode) limit checked before the body is waited for,
//! * **encoding** ([`Packet::encode`], [`Packet::encoded_len`]) into either wire format,
//! * **limits** ([`limits`]) and MQTT 5 **reason codes** ([`ReasonCode`]), including the
//!   reason code every decode error maps to ([`DecodeError::reason_code`]),
//! * **topic** name/filter validation and matching ([`topic`]).
//!
//! It is pure: bytes in, packets out. It must not do I/O, spawn tasks, read clocks, log, hold
//! session state or make policy decisions (authentication, authorization, topic-alias
//! resolution, "second CONNECT", direction checks such as "a client must not send CONNACK" or
//! "a client PUBLISH must not carry a subscription identifier" are the broker's job). It must
//! never panic on any input and never use `unsafe`.
//!
//! Decoding is zero-copy: the frame is split off the caller's [`BytesMut`] and frozen, and
//! topics, payloads and binary fields of the decoded packet are slices of that frame.
//!
//! ```
//! use tollgate_mqtt::{decode, BytesMut, Packet, Protocol, PubResp};
//!
//! // A 3.1.1 CONNECT, as the first bytes of a connection.
//! let mut buf = BytesMut::from(&b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1"[..]);
//! let Some(Packet::Connect(connect)) = decode(&mut buf, None, 1 << 20)? else { panic!() };
//! assert_eq!(connect.protocol, Protocol::V311);
//! assert_eq!(&connect.client_id[..], "c1");
//! assert!(buf.is_empty());
//!
//! // Replies are encoded for the connection's protocol.
//! let puback = Packet::PubAck(PubResp { packet_id: 7, ..PubResp::default() });
//! let mut out = BytesMut::new();
//! puback.encode(connect.protocol, &mut out)?;
//! assert_eq!(&out[..], b"\x40\x02\x00\x07");
//! assert_eq!(out.len(), puback.encoded_len(connect.protocol));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod codec;
mod error;
mod packet;
mod reason;
pub mod topic;

pub use bytes::{Bytes, BytesMut};
pub use bytestring::ByteString;

pub use codec::decode::decode;
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use reason::ReasonCode;

/// Protocol-level limits.
pub mod limits {
    /// Largest value of a Variable Byte Integer (and so of the remaining length).
    pub const MAX_VARINT: u32 = 268_435_455;
    /// Largest possible MQTT packet: 1 byte of packet type, 4 bytes of remaining length and
    /// the largest remaining length.
    pub const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_VARINT as usize;
    /// Longest UTF-8 string or binary field (two-byte length prefix).
    pub const MAX_STRING_LEN: usize = u16::MAX as usize;
    /// Largest subscription identifier.
    pub const MAX_SUBSCRIPTION_IDENTIFIER: u32 = MAX_VARINT;
}
