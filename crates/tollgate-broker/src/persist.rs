//! The durability port: what the broker asks of a durable store, and what it gets back on start.
//!
//! The broker decides *what* must be durable and *when* a packet may leave (a PUBACK only once
//! the message and its fan-out to persistent sessions are on disk); a store crate decides *how*
//! (engine, schema, group commit). The store numbers every [`Durability::submit`] with a ticket
//! and publishes a watermark: the highest ticket such that it and every lower ticket are on disk.
//!
//! Messages are stored as encoded MQTT 5 PUBLISH packets (topic, payload, properties, QoS and
//! retain flag in one blob): the codec that reads them off the network reads them back.

use std::sync::Arc;

use tollgate_mqtt::{
    decode, Bytes, BytesMut, Packet, Protocol, Publish, PublishProperties, Will, WillProperties,
};

/// A message as stored: an encoded MQTT 5 PUBLISH, and when it expires (Unix milliseconds).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The PUBLISH packet, MQTT 5 encoding (message expiry interval not included).
    pub blob: Bytes,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: Option<i64>,
}

impl StoredMessage {
    /// Encode a PUBLISH for storage.
    pub fn encode(
        p: &Publish,
        expires_at_ms: Option<i64>,
    ) -> Result<StoredMessage, tollgate_mqtt::EncodeError> {
        let mut out = BytesMut::new();
        Packet::Publish(p.clone()).encode(Protocol::V5, &mut out)?;
        Ok(StoredMessage {
            blob: out.freeze(),
            expires_at_ms,
        })
    }

    /// Decode the stored PUBLISH; `None` if the blob is not one (a damaged store).
    pub fn decode(&self) -> Option<Publish> {
        let mut buf = BytesMut::from(&self.blob[..]);
        match decode(&mut buf, Some(Protocol::V5), usize::MAX) {
            Ok(Some(Packet::Publish(p))) if buf.is_empty() => Some(p),
            _ => None,
        }
    }
}

/// A will waiting for its session's connection to end (or its delay to pass).
#[derive(Debug, Clone)]
pub struct StoredWill {
    /// The will as a PUBLISH.
    pub msg: StoredMessage,
    /// Will delay, seconds.
    pub delay_secs: u32,
    /// Serial of the certificate that connected (a revoked device's will is not published).
    pub serial: String,
}

impl StoredWill {
    /// A will as stored (its message expiry interval travels in the PUBLISH properties).
    pub fn from_will(w: &Will, serial: &str) -> Result<StoredWill, tollgate_mqtt::EncodeError> {
        let p = Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: w.topic.clone(),
            packet_id: u16::from(w.qos != tollgate_mqtt::QoS::AtMostOnce),
            payload: w.payload.clone(),
            properties: PublishProperties {
                payload_format_indicator: w.properties.payload_format_indicator,
                message_expiry_interval: w.properties.message_expiry_interval,
                response_topic: w.properties.response_topic.clone(),
                correlation_data: w.properties.correlation_data.clone(),
                user_properties: w.properties.user_properties.clone(),
                content_type: w.properties.content_type.clone(),
                ..Default::default()
            },
        };
        Ok(StoredWill {
            msg: StoredMessage::encode(&p, None)?,
            delay_secs: w.properties.will_delay_interval.unwrap_or(0),
            serial: serial.to_owned(),
        })
    }

    /// The will back; `None` if the blob is damaged.
    pub fn to_will(&self) -> Option<Will> {
        let p = self.msg.decode()?;
        Some(Will {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: WillProperties {
                will_delay_interval: Some(self.delay_secs),
                payload_format_indicator: p.properties.payload_format_indicator,
                message_expiry_interval: p.properties.message_expiry_interval,
                content_type: p.properties.content_type,
                response_topic: p.properties.response_topic,
                correlation_data: p.properties.correlation_data,
                user_properties: p.properties.user_properties,
            },
        })
    }
}

/// One change to durable state.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create or update a persistent session.
    Session {
        id: u64,
        device_id: Arc<str>,
        client_id: Arc<str>,
        expiry_secs: u32,
        /// When an offline session expires (Unix ms); `None` while connected.
        expires_at_ms: Option<i64>,
    },
    /// Remove a session and everything it holds.
    DeleteSession { id: u64 },
    /// Add or replace a subscription. `opts` packs QoS (bits 0-1), no-local (2),
    /// retain-as-published (3) and retain handling (4-5), as in SUBSCRIBE.
    Subscribe {
        session: u64,
        filter: String,
        opts: u8,
        sub_id: u32,
    },
    /// Remove a subscription.
    Unsubscribe { session: u64, filter: String },
    /// Queue a message for a session.
    Enqueue {
        session: u64,
        seq: u64,
        qos: u8,
        retain: bool,
        sub_ids: Vec<u32>,
        msg: StoredMessage,
    },
    /// The message left the session (acknowledged, expired, evicted or refused).
    Dequeue { session: u64, seq: u64 },
    /// A QoS 2 message was sent with this packet id (a redelivery must reuse it).
    Sent {
        session: u64,
        seq: u64,
        packet_id: u16,
    },
    /// A QoS 2 message was received by the client (PUBREC): only PUBREL remains.
    Released { session: u64, seq: u64 },
    /// An incoming QoS 2 packet id was received (`true`) or released (`false`).
    Inbound {
        session: u64,
        packet_id: u16,
        present: bool,
    },
    /// Set (`Some`) or clear a retained message; `device` published it (its owner, counted
    /// against the per-device retained caps).
    Retain {
        topic: String,
        msg: Option<StoredMessage>,
        device: Option<String>,
    },
    /// Set or clear a session's will.
    Will {
        session: u64,
        will: Option<StoredWill>,
    },
}

/// A durable store with group commit.
pub trait Durability: Send + Sync + 'static {
    /// Hand `ops` to the next group commit. Returns their ticket: once the watermark reaches
    /// it, they are on disk. Never blocks on disk.
    fn submit(&self, ops: Vec<Op>) -> u64;
    /// The highest ticket such that it and all lower tickets are on disk.
    fn watermark(&self) -> tokio::sync::watch::Receiver<u64>;
    /// False while the last commit failed (a full disk, say): new messages that need the disk
    /// are refused until a commit succeeds again.
    fn healthy(&self) -> bool;
}

/// A queued message of a recovered session.
#[derive(Debug, Clone)]
pub struct RecoveredEntry {
    pub seq: u64,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    pub msg: StoredMessage,
    /// QoS 2: the packet id it was sent with.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC received, PUBREL outstanding.
    pub released: bool,
}

/// A persistent session read back on start.
#[derive(Debug, Clone)]
pub struct RecoveredSession {
    pub id: u64,
    pub device_id: String,
    pub client_id: String,
    pub expiry_secs: u32,
    pub expires_at_ms: Option<i64>,
    /// (filter, packed options, subscription identifier or 0).
    pub subscriptions: Vec<(String, u8, u32)>,
    /// In sequence order.
    pub queue: Vec<RecoveredEntry>,
    pub inbound_qos2: Vec<u16>,
    pub will: Option<StoredWill>,
}

/// A retained message read back on start.
#[derive(Debug, Clone)]
pub struct RecoveredRetained {
    pub topic: String,
    pub msg: StoredMessage,
    /// The device that published it (`None` in a store written before owners were kept).
    pub device: Option<String>,
}

/// Everything a store gives back on start.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub sessions: Vec<RecoveredSession>,
    pub retained: Vec<RecoveredRetained>,
    /// Highest message sequence number in use.
    pub max_seq: u64,
    /// Highest session id in use.
    pub max_session_id: u64,
}

/// Pack subscription options as in a SUBSCRIBE packet's options byte.
pub(crate) fn pack_opts(o: &crate::router::SubOpts) -> u8 {
    (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling & 3) << 4)
}

/// The inverse of [`pack_opts`].
pub(crate) fn unpack_opts(b: u8, sub_id: u32) -> crate::router::SubOpts {
    crate::router::SubOpts {
        qos: qos_from(b & 3),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: (b >> 4) & 3,
        sub_id: (sub_id != 0).then_some(sub_id),
    }
}

pub(crate) fn qos_from(b: u8) -> tollgate_mqtt::QoS {
    match b {
        0 => tollgate_mqtt::QoS::AtMostOnce,
        1 => tollgate_mqtt::QoS::AtLeastOnce,
        _ => tollgate_mqtt::QoS::ExactlyOnce,
    }
}

/// Wall-clock now, Unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
