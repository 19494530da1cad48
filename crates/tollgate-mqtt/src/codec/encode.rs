//! The encoder.
//!
//! Every packet body is written once, generically over [`Out`]: a [`Counter`] computes the
//! exact length (used for the remaining length, the property lengths and
//! [`Packet::encoded_len`]) and a [`Writer`] appends the bytes. Both walk the same code, so the
//! length and the bytes cannot disagree.

use bytes::{BufMut, BytesMut};

use super::prop::*;
use super::varint_len;
use crate::limits::MAX_VARINT;
use crate::{
    Auth, ConnAck, ConnAckProperties, Connect, ConnectProperties, Disconnect, EncodeError, Packet,
    Protocol, PubResp, Publish, PublishProperties, QoS, ReasonCode, SubAck, Subscribe, UnsubAck,
    Unsubscribe, UserProperties, WillProperties,
};

/// A sink for packet fields.
trait Out {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    /// Variable Byte Integer.
    fn varint(&mut self, v: usize);
    /// Bytes without a length prefix.
    fn raw(&mut self, b: &[u8]);
    /// Two-byte length then the bytes; `err` if longer than 65 535.
    fn prefixed(&mut self, b: &[u8], err: EncodeError);
    /// Records an error (the first one wins); the counter ignores it.
    fn fail(&mut self, e: EncodeError);

    #[inline]
    fn str(&mut self, s: &str) {
        self.prefixed(s.as_bytes(), EncodeError::StringTooLong);
    }
    #[inline]
    fn bin(&mut self, b: &[u8]) {
        self.prefixed(b, EncodeError::BinaryTooLong);
    }
}

/// Counts bytes.
struct Counter(usize);

impl Out for Counter {
    #[inline]
    fn u8(&mut self, _: u8) {
        self.0 = self.0.saturating_add(1);
    }
    #[inline]
    fn u16(&mut self, _: u16) {
        self.0 = self.0.saturating_add(2);
    }
    #[inline]
    fn u32(&mut self, _: u32) {
        self.0 = self.0.saturating_add(4);
    }
    #[inline]
    fn varint(&mut self, v: usize) {
        self.0 = self.0.saturating_add(varint_len(v));
    }
    #[inline]
    fn raw(&mut self, b: &[u8]) {
        self.0 = self.0.saturating_add(b.len());
    }
    #[inline]
    fn prefixed(&mut self, b: &[u8], _: EncodeError) {
        self.0 = self.0.saturating_add(2).saturating_add(b.len());
    }
    #[inline]
    fn fail(&mut self, _: EncodeError) {}
}

/// Appends to a buffer, remembering the first error.
struct Writer<'a> {
    buf: &'a mut BytesMut,
    err: Option<EncodeError>,
}

impl Out for Writer<'_> {
    #[inline]
    fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }
    #[inline]
    fn varint(&mut self, v: usize) {
        if v > MAX_VARINT as usize {
            self.fail(EncodeError::ValueTooLarge);
            return;
        }
        let mut v = v;
        loop {
            // Truncation intended: the low seven bits.
            let mut b = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                b |= 0x80;
            }
            self.buf.put_u8(b);
            if v == 0 {
                break;
            }
        }
    }
    #[inline]
    fn raw(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
    }
    #[inline]
    fn prefixed(&mut self, b: &[u8], err: EncodeError) {
        match u16::try_from(b.len()) {
            Ok(n) => {
                self.buf.put_u16(n);
                self.buf.put_slice(b);
            }
            Err(_) => self.fail(err),
        }
    }
    #[inline]
    fn fail(&mut self, e: EncodeError) {
        if self.err.is_none() {
            self.err = Some(e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Something written as an MQTT 5 property block.
trait Props {
    /// Writes the properties, without the property length.
    fn write<O: Out>(&self, o: &mut O);

    /// Byte length of the properties, without the property length.
    fn byte_len(&self) -> usize {
        let mut c = Counter(0);
        self.write(&mut c);
        c.0
    }
}

/// Property length then the properties.
#[inline]
fn put_props<O: Out, P: Props>(o: &mut O, p: &P) {
    o.varint(p.byte_len());
    p.write(o);
}

#[inline]
fn p_u8<O: Out>(o: &mut O, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        o.u8(id);
        o.u8(v);
    }
}
#[inline]
fn p_bool<O: Out>(o: &mut O, id: u8, v: Option<bool>) {
    p_u8(o, id, v.map(u8::from));
}
#[inline]
fn p_u16<O: Out>(o: &mut O, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        o.u8(id);
        o.u16(v);
    }
}
#[inline]
fn p_u32<O: Out>(o: &mut O, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        o.u8(id);
        o.u32(v);
    }
}
#[inline]
fn p_str<O: Out>(o: &mut O, id: u8, v: Option<&str>) {
    if let Some(v) = v {
        o.u8(id);
        o.str(v);
    }
}
#[inline]
fn p_bin<O: Out>(o: &mut O, id: u8, v: Option<&[u8]>) {
    if let Some(v) = v {
        o.u8(id);
        o.bin(v);
    }
}
#[inline]
fn p_subscription_id<O: Out>(o: &mut O, v: u32) {
    if v == 0 {
        o.fail(EncodeError::InvalidField("subscription_identifier"));
    }
    o.u8(SUBSCRIPTION_IDENTIFIER);
    o.varint(v as usize);
}
#[inline]
fn p_user<O: Out>(o: &mut O, user: &UserProperties) {
    for (k, v) in user {
        o.u8(USER_PROPERTY);
        o.str(k);
        o.str(v);
    }
}

impl Props for ConnectProperties {
    fn write<O: Out>(&self, o: &mut O) {
        p_u32(o, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        p_u16(o, RECEIVE_MAXIMUM, self.receive_maximum);
        p_u32(o, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        p_u16(o, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        p_bool(
            o,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        p_bool(
            o,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        p_str(
            o,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        );
        p_bin(o, AUTHENTICATION_DATA, self.authentication_data.as_deref());
        p_user(o, &self.user_properties);
    }
}

impl Props for WillProperties {
    fn write<O: Out>(&self, o: &mut O) {
        p_u32(o, WILL_DELAY_INTERVAL, self.will_delay_interval);
        p_u8(o, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        p_u32(o, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        p_str(o, CONTENT_TYPE, self.content_type.as_deref());
        p_str(o, RESPONSE_TOPIC, self.response_topic.as_deref());
        p_bin(o, CORRELATION_DATA, self.correlation_data.as_deref());
        p_user(o, &self.user_properties);
    }
}

impl Props for ConnAckProperties {
    fn write<O: Out>(&self, o: &mut O) {
        p_u32(o, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        p_u16(o, RECEIVE_MAXIMUM, self.receive_maximum);
        p_u8(o, MAXIMUM_QOS, self.maximum_qos);
        p_bool(o, RETAIN_AVAILABLE, self.retain_available);
        p_u32(o, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        p_str(
            o,
            ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier.as_deref(),
        );
        p_u16(o, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        p_str(o, REASON_STRING, self.reason_string.as_deref());
        p_bool(
            o,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        p_bool(
            o,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        p_bool(
            o,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        p_u16(o, SERVER_KEEP_ALIVE, self.server_keep_alive);
        p_str(
            o,
            RESPONSE_INFORMATION,
            self.response_information.as_deref(),
        );
        p_str(o, SERVER_REFERENCE, self.server_reference.as_deref());
        p_str(
            o,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        );
        p_bin(o, AUTHENTICATION_DATA, self.authentication_data.as_deref());
        p_user(o, &self.user_properties);
    }
}

impl Props for PublishProperties {
    fn write<O: Out>(&self, o: &mut O) {
        p_u8(o, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        p_u32(o, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        if self.topic_alias == Some(0) {
            o.fail(EncodeError::InvalidField("topic_alias"));
        }
        p_u16(o, TOPIC_ALIAS, self.topic_alias);
        p_str(o, RESPONSE_TOPIC, self.response_topic.as_deref());
        p_bin(o, CORRELATION_DATA, self.correlation_data.as_deref());
        p_user(o, &self.user_properties);
        for &id in &self.subscription_identifiers {
            p_subscription_id(o, id);
        }
        p_str(o, CONTENT_TYPE, self.content_type.as_deref());
    }
}

/// Reason string and user properties of the acknowledgements.
struct AckProps<'a> {
    reason_string: Option<&'a str>,
    user_properties: &'a UserProperties,
}

impl AckProps<'_> {
    fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl Props for AckProps<'_> {
    fn write<O: Out>(&self, o: &mut O) {
        p_str(o, REASON_STRING, self.reason_string);
        p_user(o, self.user_properties);
    }
}

struct SubscribeProps<'a>(&'a Subscribe);

impl Props for SubscribeProps<'_> {
    fn write<O: Out>(&self, o: &mut O) {
        if let Some(id) = self.0.subscription_identifier {
            p_subscription_id(o, id);
        }
        p_user(o, &self.0.user_properties);
    }
}

impl Props for Disconnect {
    fn write<O: Out>(&self, o: &mut O) {
        p_u32(o, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        p_str(o, REASON_STRING, self.reason_string.as_deref());
        p_str(o, SERVER_REFERENCE, self.server_reference.as_deref());
        p_user(o, &self.user_properties);
    }
}

impl Props for Auth {
    fn write<O: Out>(&self, o: &mut O) {
        p_str(
            o,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        );
        p_bin(o, AUTHENTICATION_DATA, self.authentication_data.as_deref());
        p_str(o, REASON_STRING, self.reason_string.as_deref());
        p_user(o, &self.user_properties);
    }
}

// ---------------------------------------------------------------------------------------------
// Packets

/// 3.1.1 CONNACK return code for a v5 reason code.
fn connack_return_code_v311(code: ReasonCode) -> u8 {
    match code {
        ReasonCode::SUCCESS => 0,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED => 5,
        _ => 3,
    }
}

/// 3.1.1 SUBACK return code for a v5 reason code.
fn suback_return_code_v311(code: ReasonCode) -> u8 {
    match code.0 {
        c @ 0..=2 => c,
        _ => 0x80,
    }
}

fn put_packet_id<O: Out>(o: &mut O, id: u16) {
    if id == 0 {
        o.fail(EncodeError::InvalidField("packet_id"));
    }
    o.u16(id);
}

fn connect<O: Out>(c: &Connect, v5: bool, o: &mut O) {
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos.as_u8() << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    if !v5 && c.password.is_some() && c.username.is_none() {
        o.fail(EncodeError::PasswordWithoutUsername);
    }
    o.str("MQTT");
    o.u8(if v5 { 5 } else { 4 });
    o.u8(flags);
    o.u16(c.keep_alive);
    if v5 {
        put_props(o, &c.properties);
    }
    o.str(&c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            put_props(o, &w.properties);
        }
        o.str(&w.topic);
        o.bin(&w.payload);
    }
    if let Some(u) = &c.username {
        o.str(u);
    }
    if let Some(p) = &c.password {
        o.bin(p);
    }
}

fn connack<O: Out>(c: &ConnAck, v5: bool, o: &mut O) {
    o.u8(u8::from(c.session_present));
    if v5 {
        o.u8(c.code.0);
        put_props(o, &c.properties);
    } else {
        o.u8(connack_return_code_v311(c.code));
    }
}

fn publish<O: Out>(p: &Publish, v5: bool, o: &mut O) {
    if p.topic.is_empty() && !(v5 && p.properties.topic_alias.is_some()) {
        o.fail(EncodeError::InvalidField("topic"));
    }
    o.str(&p.topic);
    if p.qos != QoS::AtMostOnce {
        put_packet_id(o, p.packet_id);
    }
    if v5 {
        put_props(o, &p.properties);
    }
    o.raw(&p.payload);
}

fn pub_resp<O: Out>(r: &PubResp, v5: bool, o: &mut O) {
    put_packet_id(o, r.packet_id);
    if v5 {
        let props = AckProps {
            reason_string: r.reason_string.as_deref(),
            user_properties: &r.user_properties,
        };
        if !props.is_empty() {
            o.u8(r.code.0);
            put_props(o, &props);
        } else if r.code != ReasonCode::SUCCESS {
            o.u8(r.code.0);
        }
    }
}

fn subscribe<O: Out>(s: &Subscribe, v5: bool, o: &mut O) {
    put_packet_id(o, s.packet_id);
    if s.filters.is_empty() {
        o.fail(EncodeError::InvalidField("filters"));
    }
    if v5 {
        put_props(o, &SubscribeProps(s));
    }
    for f in &s.filters {
        o.str(&f.filter);
        let mut options = f.qos.as_u8();
        if v5 {
            if f.retain_handling > 2 {
                o.fail(EncodeError::InvalidField("retain_handling"));
            }
            if f.no_local {
                options |= 0x04;
            }
            if f.retain_as_published {
                options |= 0x08;
            }
            options |= (f.retain_handling & 0x03) << 4;
        }
        o.u8(options);
    }
}

fn suback<O: Out>(s: &SubAck, v5: bool, o: &mut O) {
    put_packet_id(o, s.packet_id);
    if v5 {
        put_props(
            o,
            &AckProps {
                reason_string: s.reason_string.as_deref(),
                user_properties: &s.user_properties,
            },
        );
        for c in &s.codes {
            o.u8(c.0);
        }
    } else {
        for &c in &s.codes {
            o.u8(suback_return_code_v311(c));
        }
    }
}

fn unsubscribe<O: Out>(u: &Unsubscribe, v5: bool, o: &mut O) {
    put_packet_id(o, u.packet_id);
    if u.filters.is_empty() {
        o.fail(EncodeError::InvalidField("filters"));
    }
    if v5 {
        put_props(
            o,
            &AckProps {
                reason_string: None,
                user_properties: &u.user_properties,
            },
        );
    }
    for f in &u.filters {
        o.str(f);
    }
}

fn unsuback<O: Out>(u: &UnsubAck, v5: bool, o: &mut O) {
    put_packet_id(o, u.packet_id);
    if v5 {
        put_props(
            o,
            &AckProps {
                reason_string: u.reason_string.as_deref(),
                user_properties: &u.user_properties,
            },
        );
        for c in &u.codes {
            o.u8(c.0);
        }
    }
}

fn disconnect<O: Out>(d: &Disconnect, v5: bool, o: &mut O) {
    if !v5 {
        return;
    }
    let props_empty = d.session_expiry_interval.is_none()
        && d.reason_string.is_none()
        && d.server_reference.is_none()
        && d.user_properties.is_empty();
    if !props_empty {
        o.u8(d.code.0);
        put_props(o, d);
    } else if d.code != ReasonCode::SUCCESS {
        o.u8(d.code.0);
    }
}

fn auth<O: Out>(a: &Auth, o: &mut O) {
    let props_empty = a.authentication_method.is_none()
        && a.authentication_data.is_none()
        && a.reason_string.is_none()
        && a.user_properties.is_empty();
    // The reason code and property length are omitted together or not at all.
    if a.code != ReasonCode::SUCCESS || !props_empty {
        o.u8(a.code.0);
        put_props(o, a);
    }
}

impl Packet {
    /// First byte of the fixed header.
    fn first_byte(&self) -> u8 {
        match self {
            Packet::Publish(p) => {
                let mut b = 0x30 | (p.qos.as_u8() << 1);
                // DUP must be 0 for QoS 0; never send it.
                if p.dup && p.qos != QoS::AtMostOnce {
                    b |= 0x08;
                }
                if p.retain {
                    b |= 0x01;
                }
                b
            }
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => {
                (self.packet_type() << 4) | 0b0010
            }
            _ => self.packet_type() << 4,
        }
    }

    fn body<O: Out>(&self, protocol: Protocol, o: &mut O) {
        let v5 = protocol == Protocol::V5;
        match self {
            Packet::Connect(c) => connect(c, v5, o),
            Packet::ConnAck(c) => connack(c, v5, o),
            Packet::Publish(p) => publish(p, v5, o),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                pub_resp(r, v5, o)
            }
            Packet::Subscribe(s) => subscribe(s, v5, o),
            Packet::SubAck(s) => suback(s, v5, o),
            Packet::Unsubscribe(u) => unsubscribe(u, v5, o),
            Packet::UnsubAck(u) => unsuback(u, v5, o),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => disconnect(d, v5, o),
            Packet::Auth(a) => {
                if v5 {
                    auth(a, o)
                } else {
                    o.fail(EncodeError::NotInProtocol("AUTH"))
                }
            }
        }
    }

    fn remaining_len(&self, protocol: Protocol) -> usize {
        let mut c = Counter(0);
        self.body(protocol, &mut c);
        c.0
    }

    /// Appends the encoding to `buf`.
    ///
    /// `protocol` selects the 3.1.1 or 5.0 wire format: v5-only fields are dropped for 3.1.1
    /// (properties, PUBACK/PUBREC/PUBREL/PUBCOMP and UNSUBACK reason codes; a DISCONNECT is
    /// the two bytes `E0 00`). A CONNACK's v5 reason code maps to a 3.1.1 return code:
    /// `0x00`→0, `0x84`→1, `0x85`→2, `0x86`→4, `0x87`/`0x8A`→5, anything else→3. A SUBACK code
    /// 0, 1 or 2 is written as is and anything else as `0x80`. CONNECT's protocol level comes
    /// from `protocol`, not from [`Connect::protocol`]. DUP is never set on QoS 0.
    ///
    /// Refuses (with nothing appended to `buf`) what cannot be put on the wire or would be a
    /// malformed packet: too large, strings/binary over 65 535 bytes, packet identifier 0
    /// where one is needed, an empty PUBLISH topic without a v5 topic alias, topic alias 0,
    /// subscription identifier 0 or above 268 435 455, retain handling 3, SUBSCRIBE or
    /// UNSUBSCRIBE without filters, a 3.1.1 password without user name, AUTH in 3.1.1.
    pub fn encode(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining = self.remaining_len(protocol);
        let total = 1usize
            .saturating_add(varint_len(remaining))
            .saturating_add(remaining);
        if remaining > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge { size: total });
        }
        if let Packet::Auth(_) = self {
            if protocol == Protocol::V311 {
                return Err(EncodeError::NotInProtocol("AUTH"));
            }
        }
        buf.reserve(total);
        let start = buf.len();
        let mut w = Writer { buf, err: None };
        w.u8(self.first_byte());
        w.varint(remaining);
        self.body(protocol, &mut w);
        match w.err {
            None => Ok(()),
            Some(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Exact encoded size in bytes (fixed header included) for `protocol`, without encoding.
    /// For a packet [`encode`](Self::encode) refuses, this is the size it would have had
    /// (0 for AUTH in 3.1.1).
    pub fn encoded_len(&self, protocol: Protocol) -> usize {
        if let (Packet::Auth(_), Protocol::V311) = (self, protocol) {
            return 0;
        }
        let remaining = self.remaining_len(protocol);
        1usize
            .saturating_add(varint_len(remaining))
            .saturating_add(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(v: usize) -> Vec<u8> {
        let mut buf = BytesMut::new();
        let mut w = Writer {
            buf: &mut buf,
            err: None,
        };
        w.varint(v);
        assert!(w.err.is_none());
        buf.to_vec()
    }

    #[test]
    fn varint_boundaries() {
        for (v, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xFF, 0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (268_435_455, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            assert_eq!(varint_bytes(v), bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
    }

    #[test]
    fn varint_too_large_is_an_error() {
        let mut buf = BytesMut::new();
        let mut w = Writer {
            buf: &mut buf,
            err: None,
        };
        w.varint(268_435_456);
        assert_eq!(w.err, Some(EncodeError::ValueTooLarge));
        assert!(buf.is_empty());
    }
}
