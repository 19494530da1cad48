//! The MQTT state machine: CONNECT acceptance, then one packet at a time. Every decision that
//! involves authorization goes through the connection's [`Gate`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tollgate_events::{EventKind, RefusalReason};
use tollgate_mqtt::{
    decode, topic, ByteString, BytesMut, ConnAck, ConnAckProperties, Connect, Packet, Protocol,
    PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

use crate::gate::{Gate, Recheck, Withholding};
use crate::meter::SeenAction;
use crate::persist::{pack_opts, Op};
use crate::router::{SubOpts, Subscriber};
use crate::session::{props_size, ControlInbox, Delivery, Message, Outbound};
use crate::{ClientIdRule, PeerIdentity, Shared};

use super::delivery::acknowledged;
use super::outbox::Outbox;
use super::{Conn, End, Now, Refusal};
use crate::lifecycle::{attach, persist_attach, unroute};

impl Conn {
    pub(super) async fn accept(
        shared: &Arc<Shared>,
        peer: &PeerIdentity,
        c: Connect,
        ctrl: Arc<ControlInbox>,
    ) -> Result<Conn, Refusal> {
        let protocol = c.protocol;
        let cfg = &shared.config;
        let refuse = |code, reason, why: &str| Err((protocol, code, reason, why.to_owned()));

        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let gate = match Gate::admit(shared, peer, now_unix) {
            Ok(g) => g,
            Err((code, reason, why)) => return refuse(code, reason, why),
        };
        let cert_deadline = peer.cert_not_after.map(|na| {
            Instant::now()
                + Duration::from_secs(u64::try_from(na.saturating_sub(now_unix)).unwrap_or(0))
        });
        if c.properties.authentication_method.is_some() {
            return refuse(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                RefusalReason::BadAuthMethod,
                "identity is the client certificate; no enhanced authentication method is offered",
            );
        }

        // MQTT-3.1.3-8: a 3.1.1 client with no client id must ask for a clean session, in every
        // client id mode (a v5 server may assign one whatever Clean Start says, and does below).
        if c.client_id.is_empty() && protocol == Protocol::V311 && !c.clean_start {
            return refuse(
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                RefusalReason::ClientIdRejected,
                "MQTT 3.1.1: a zero-length client id requires CleanSession = 1 (MQTT-3.1.3-8)",
            );
        }
        // Client id rule: the certificate decides who this is; the client id must agree.
        let mut assigned = None;
        let client_id: String = if c.client_id.is_empty() {
            assigned = Some(peer.device_id.clone());
            peer.device_id.clone()
        } else {
            let cid: &str = &c.client_id;
            let ok = match cfg.client_id_rule {
                ClientIdRule::Exact => cid == peer.device_id,
                ClientIdRule::Prefix => {
                    cid == peer.device_id
                        || cid
                            .strip_prefix(peer.device_id.as_str())
                            .is_some_and(|r| r.starts_with('-') || r.starts_with(':'))
                }
                ClientIdRule::Any => true,
            };
            if !ok {
                return refuse(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    RefusalReason::ClientIdMismatch,
                    &format!(
                        "client id {cid:?} does not match certificate device id {:?}",
                        peer.device_id
                    ),
                );
            }
            cid.to_owned()
        };

        if let Some(w) = &c.will {
            if topic_levels(&w.topic) > cfg.max_topic_levels
                || gate
                    .publish(shared, &w.topic, w.qos, w.retain, "will")
                    .is_err()
            {
                return refuse(
                    ReasonCode::NOT_AUTHORIZED,
                    RefusalReason::NotAuthorized,
                    "will topic not authorized",
                );
            }
        }

        let expiry = match protocol {
            Protocol::V5 => c.properties.session_expiry_interval.unwrap_or(0),
            Protocol::V311 if c.clean_start => 0,
            Protocol::V311 => cfg.max_session_expiry,
        };
        let capped_expiry = expiry.min(cfg.max_session_expiry);
        let mut server_keep_alive = None;
        let mut ka = c.keep_alive;
        if cfg.max_keep_alive > 0
            && (ka == 0 || ka > cfg.max_keep_alive)
            && protocol == Protocol::V5
        {
            ka = cfg.max_keep_alive;
            server_keep_alive = Some(ka);
        }

        let (session, mut state, present) =
            attach(shared, &peer.device_id, &client_id, c.clean_start, ctrl).await;
        state.expiry_interval = capped_expiry;
        if shared.store.is_some() {
            persist_attach(shared, &session, &state, c.will.as_ref(), &peer.serial);
        }

        let client_recv_max = c.properties.receive_maximum.unwrap_or(u16::MAX);
        let mut conn = Conn {
            shared: Arc::clone(shared),
            peer: peer.clone(),
            protocol,
            session,
            state,
            gate,
            keep_alive: (ka > 0).then(|| Duration::from_millis(u64::from(ka) * 1500)),
            inflight_limit: usize::from(client_recv_max.min(cfg.max_inflight)).max(1),
            client_max_packet: c
                .properties
                .maximum_packet_size
                .map_or(usize::MAX, |v| v as usize),
            aliases: Vec::new(),
            out_alias_max: match protocol {
                Protocol::V5 => c
                    .properties
                    .topic_alias_maximum
                    .unwrap_or(0)
                    .min(cfg.max_outbound_topic_aliases),
                Protocol::V311 => 0,
            },
            out_aliases: None,
            will: c.will.map(Box::new),
            problem_info: c.properties.request_problem_information.unwrap_or(true),
            out: Outbox::new(protocol, shared.watermark()),
            scratch: Vec::new(),
            batch: Vec::new(),
            cert_deadline,
            congested: false,
            wm_blocked: false,
            dequeued: Vec::new(),
            progress: super::progress::Progress::new(cfg.write_timeout, Instant::now()),
        };

        let mut props = ConnAckProperties::default();
        if protocol == Protocol::V5 {
            props.receive_maximum = Some(cfg.receive_maximum);
            props.maximum_packet_size = Some(cfg.max_packet_size);
            props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            props.retain_available = Some(true);
            props.wildcard_subscription_available = Some(true);
            props.subscription_identifiers_available = Some(true);
            props.shared_subscription_available = Some(true);
            props.assigned_client_identifier = assigned;
            props.server_keep_alive = server_keep_alive;
            if capped_expiry != expiry {
                props.session_expiry_interval = Some(capped_expiry);
            }
        }
        *conn.session.live.lock() = Some(crate::session::LiveConnection {
            meter: Arc::clone(conn.gate.meter()),
            transport: peer.transport.clone(),
            addr: peer.addr,
            since_ms: crate::persist::unix_ms(),
        });
        conn.out.push(Packet::ConnAck(ConnAck {
            session_present: present,
            code: ReasonCode::SUCCESS,
            properties: props,
        }));
        // A resumed session may hold subscriptions the policy no longer allows.
        conn.recheck_subscriptions();
        // Released while it was away: its suspended subscriptions come back now.
        if conn.gate.quarantine().is_none() {
            conn.restore_suspended();
        }
        if present {
            conn.resend_inflight(Now::current());
        }
        shared.emit(EventKind::ConnectionAccepted {
            device: peer.device_id.clone(),
            client_id: client_id.clone(),
            protocol: if protocol == Protocol::V5 {
                "5.0"
            } else {
                "3.1.1"
            },
            addr: peer.addr,
            serial: peer.serial.clone(),
            session_present: present,
            tls_resumed: peer.tls_resumed,
        });
        tracing::info!(device = %peer.device_id, client_id = %client_id, ?protocol, "connected");
        Ok(conn)
    }

    /// Hand `ops` to the store if this session is persistent; returns the ticket (0: none).
    pub(super) fn persist(&self, ops: Vec<Op>) -> u64 {
        if self.session.durable.load(Ordering::Acquire) {
            self.shared.persist(ops)
        } else {
            0
        }
    }

    pub(super) fn reason(&self, s: &str) -> Option<String> {
        self.problem_info.then(|| s.to_owned())
    }

    /// Decode and handle every complete packet in `rbuf`.
    pub(super) fn process_input(
        &mut self,
        rbuf: &mut BytesMut,
        max_packet: usize,
        now: Now,
    ) -> Option<End> {
        loop {
            match decode(rbuf, Some(self.protocol), max_packet) {
                Ok(Some(p)) => {
                    if let Some(end) = self.handle(p, now) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    let code = e.reason_code();
                    self.shared
                        .stats
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    self.out.push_disconnect(code, Some(e.to_string()));
                    return Some(End::Protocol {
                        code,
                        detail: e.to_string(),
                        malformed: true,
                    });
                }
            }
        }
    }

    pub(super) fn protocol_error(&mut self, code: ReasonCode, detail: &str) -> Option<End> {
        self.shared
            .stats
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        self.out.push_disconnect(code, Some(detail.to_owned()));
        Some(End::Protocol {
            code,
            detail: detail.to_owned(),
            malformed: false,
        })
    }

    /// Handle one packet from the client at `now`.
    pub(super) fn handle(&mut self, p: Packet, now: Now) -> Option<End> {
        match p {
            Packet::Publish(p) => return self.on_publish(p, now),
            Packet::PubAck(r) => {
                if matches!(self.state.outbound.get(&r.packet_id), Some(Outbound::Published(d)) if d.qos == QoS::AtLeastOnce)
                {
                    if let Some(Outbound::Published(d)) = self.state.outbound.remove(&r.packet_id) {
                        if d.durable && d.msg.qos == QoS::AtLeastOnce {
                            acknowledged(&d.msg);
                        }
                        self.dequeue(&d);
                    }
                }
            }
            Packet::PubRec(r) => match self.state.outbound.get(&r.packet_id) {
                Some(Outbound::Published(d)) if d.qos == QoS::ExactlyOnce => {
                    let durable = d.durable.then_some(d.msg.seq);
                    if r.code.is_error() {
                        if let Some(Outbound::Published(d)) =
                            self.state.outbound.remove(&r.packet_id)
                        {
                            self.dequeue(&d);
                        }
                    } else {
                        self.state
                            .outbound
                            .insert(r.packet_id, Outbound::Released(durable));
                        // A crash must not resend a PUBLISH the client already has: the PUBREL
                        // leaves once "released" is on disk.
                        let ticket = match durable {
                            Some(seq) => self.persist(vec![Op::Released {
                                session: self.session.id,
                                seq,
                            }]),
                            None => 0,
                        };
                        self.out.push_after(
                            ticket,
                            Packet::PubRel(PubResp {
                                packet_id: r.packet_id,
                                ..Default::default()
                            }),
                        );
                    }
                }
                _ => {
                    let code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                    self.out.push(Packet::PubRel(PubResp {
                        packet_id: r.packet_id,
                        code,
                        ..Default::default()
                    }));
                }
            },
            Packet::PubRel(r) => {
                let found = self.state.inbound_qos2.remove(&r.packet_id);
                let code = if found || self.protocol == Protocol::V311 {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                // Once PUBCOMP is out the client may reuse the packet id: the release must be
                // on disk first, or a restart would take the next message for a duplicate.
                let ticket = if found {
                    self.persist(vec![Op::Inbound {
                        session: self.session.id,
                        packet_id: r.packet_id,
                        present: false,
                    }])
                } else {
                    0
                };
                self.out.push_after(
                    ticket,
                    Packet::PubComp(PubResp {
                        packet_id: r.packet_id,
                        code,
                        ..Default::default()
                    }),
                );
            }
            Packet::PubComp(r) => {
                if let Some(Outbound::Released(durable)) = self.state.outbound.get(&r.packet_id) {
                    let durable = *durable;
                    self.state.outbound.remove(&r.packet_id);
                    if let Some(seq) = durable {
                        self.dequeued.push(Op::Dequeue {
                            session: self.session.id,
                            seq,
                        });
                    }
                }
            }
            Packet::Subscribe(s) => self.on_subscribe(s, now),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => self.out.push(Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(exp) = d.session_expiry_interval {
                    if self.state.expiry_interval == 0 && exp != 0 {
                        return self.protocol_error(
                            ReasonCode::PROTOCOL_ERROR,
                            "session expiry set on DISCONNECT after 0 at CONNECT",
                        );
                    }
                    self.state.expiry_interval = exp.min(self.shared.config.max_session_expiry);
                }
                return Some(End::Client {
                    will: d.code == ReasonCode::DISCONNECT_WITH_WILL,
                });
            }
            Packet::Connect(_) => {
                return self.protocol_error(ReasonCode::PROTOCOL_ERROR, "second CONNECT")
            }
            Packet::Auth(_) => {
                return self.protocol_error(
                    ReasonCode::PROTOCOL_ERROR,
                    "AUTH without an authentication method",
                )
            }
            other => {
                let what = format!("{} is not sent by clients", other.kind());
                return self.protocol_error(ReasonCode::PROTOCOL_ERROR, &what);
            }
        }
        None
    }

    pub(super) fn on_publish(&mut self, mut p: Publish, now: Now) -> Option<End> {
        // Topic aliases (v5).
        if let Some(alias) = p.properties.topic_alias.take() {
            let max = self.shared.config.topic_alias_maximum;
            if alias != 0 && alias <= max && self.aliases.is_empty() {
                self.aliases = vec![None; usize::from(max) + 1];
            }
            let Some(slot) = self
                .aliases
                .get_mut(usize::from(alias))
                .filter(|_| alias != 0)
            else {
                return self
                    .protocol_error(ReasonCode::TOPIC_ALIAS_INVALID, "topic alias out of range");
            };
            if p.topic.is_empty() {
                match slot {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return self
                            .protocol_error(ReasonCode::PROTOCOL_ERROR, "unknown topic alias")
                    }
                }
            } else {
                *slot = Some(p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return self
                .protocol_error(ReasonCode::TOPIC_NAME_INVALID, "empty topic without alias");
        }
        if topic_levels(&p.topic) > self.shared.config.max_topic_levels {
            return self
                .protocol_error(ReasonCode::TOPIC_NAME_INVALID, "topic has too many levels");
        }
        let pid = p.packet_id;
        if p.qos == QoS::ExactlyOnce {
            if self.state.inbound_qos2.contains(&pid) {
                // Duplicate of a message we already routed: acknowledge again, route nothing.
                self.out.push(Packet::PubRec(PubResp {
                    packet_id: pid,
                    ..Default::default()
                }));
                return None;
            }
            if self.state.inbound_qos2.len() >= usize::from(self.shared.config.receive_maximum) {
                return self.protocol_error(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    "receive maximum exceeded",
                );
            }
        }
        // Counted once per message (a QoS 2 retransmission was answered above).
        let stats = &self.shared.stats;
        let q = p.qos as usize;
        if let (Some(m), Some(b)) = (stats.messages_in.get(q), stats.bytes_in.get(q)) {
            m.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
        }
        self.gate.meter().received(&p.topic, p.payload.len());

        match self.gate.report(&self.shared, &p.topic, p.qos) {
            None => {}
            Some(Ok(())) => return self.on_report(p),
            Some(Err(_)) => {
                let why = "a device reports only its own inventory on $tollgate/devices/<its id>/inventory";
                self.refuse_publish(pid, p.qos, ReasonCode::NOT_AUTHORIZED, why);
                return None;
            }
        }
        if let Err(what) = self
            .gate
            .publish(&self.shared, &p.topic, p.qos, p.retain, "publish")
        {
            let why = self.gate.denial_reason(what);
            self.refuse_publish(pid, p.qos, ReasonCode::NOT_AUTHORIZED, &why);
            return None;
        }
        if self.gate.throttled(&self.shared, now.unix_ms) {
            let why = "publish rate throttled by a mitigation";
            self.refuse_publish(pid, p.qos, ReasonCode::QUOTA_EXCEEDED, why);
            return None;
        }
        let seen = if p.retain {
            SeenAction::Retain
        } else {
            SeenAction::Publish
        };
        self.gate.observe(seen, &p.topic);

        let expiry = p.properties.message_expiry_interval;
        let expires_at = expiry.map(|s| now.mono + Duration::from_secs(u64::from(s)));
        let expires_at_ms = expiry.map(|s| now.unix_ms.saturating_add(i64::from(s) * 1000));
        let mut props = std::mem::take(&mut p.properties);
        props.subscription_identifiers.clear();
        props.message_expiry_interval = None;
        let size = p.topic.len() + p.payload.len() + props_size(&props);
        let msg = Arc::new(Message {
            topic: p.topic,
            payload: p.payload,
            props,
            qos: p.qos,
            retain: p.retain,
            expires_at,
            expires_at_ms,
            seq: self.shared.new_seq(),
            from_session: self.session.id,
            unacked: std::sync::atomic::AtomicU32::new(0),
            publisher: Some(Arc::downgrade(&self.session)),
            size,
        });
        // A retained message over a retained cap is refused as a whole (not routed either).
        if msg.retain {
            if let Err(why) = self.shared.retain_check(&msg, &self.session.device_id) {
                self.refuse_publish(pid, p.qos, ReasonCode::QUOTA_EXCEEDED, &why.to_string());
                return None;
            }
        }
        // A persistent publisher's QoS 2 packet id is written with the fan-out.
        let inbound = (p.qos == QoS::ExactlyOnce && self.session.durable.load(Ordering::Acquire))
            .then_some(Op::Inbound {
                session: self.session.id,
                packet_id: pid,
                present: true,
            });
        let routed = self.shared.route(&msg, &mut self.scratch, true, inbound);
        if routed.storage_refused {
            // Acknowledging would promise what the disk cannot keep: refuse instead.
            if self.protocol == Protocol::V311 {
                let reason = "durable store unavailable".to_owned();
                return Some(End::Closed {
                    code: ReasonCode::SERVER_BUSY,
                    reason,
                });
            }
            let resp = PubResp {
                packet_id: pid,
                code: ReasonCode::QUOTA_EXCEEDED,
                reason_string: self.reason("durable store unavailable (disk full?)"),
                ..Default::default()
            };
            self.out.push(if p.qos == QoS::AtLeastOnce {
                Packet::PubAck(resp)
            } else {
                Packet::PubRec(resp)
            });
            return None;
        }
        let mut ticket = routed.ticket;
        if msg.retain {
            // Checked above; only a publisher racing past the same cap can be refused here
            // (counted; the message was routed).
            if let Ok(t) = self.shared.retain(&msg, &self.session.device_id) {
                ticket = ticket.max(t);
            }
        }
        if routed.refused > 0 {
            self.congested = true;
        }
        // MQTT 5 publishers learn that a subscriber's queue was full.
        let code = if routed.refused > 0 && self.protocol == Protocol::V5 {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode::SUCCESS
        };
        let reason_string = (code != ReasonCode::SUCCESS)
            .then(|| self.reason("a subscriber's queue is full"))
            .flatten();
        // A retained message's own record must reach the disk: no early acknowledgement.
        let delivered = (!msg.retain).then(|| Arc::clone(&msg));
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.out.push_after_or_delivered(
                ticket,
                Packet::PubAck(PubResp {
                    packet_id: pid,
                    code,
                    reason_string,
                    ..Default::default()
                }),
                delivered,
            ),
            QoS::ExactlyOnce => {
                self.state.inbound_qos2.insert(pid);
                self.out.push_after(
                    ticket,
                    Packet::PubRec(PubResp {
                        packet_id: pid,
                        code,
                        reason_string,
                        ..Default::default()
                    }),
                );
            }
        }
        None
    }

    /// A device's report on its own reserved topic: handed to the report sink (the control
    /// plane), acknowledged, never routed or retained.
    fn on_report(&mut self, p: Publish) -> Option<End> {
        let pid = p.packet_id;
        let refused = if p.payload.len() > crate::reports::MAX_REPORT_BYTES {
            Some((
                ReasonCode::PAYLOAD_FORMAT_INVALID,
                format!(
                    "an inventory report is at most {} bytes",
                    crate::reports::MAX_REPORT_BYTES
                ),
            ))
        } else {
            match self.shared.reports.get() {
                Some(sink) if sink.report(&self.session.device_id, p.payload) => None,
                Some(_) => Some((
                    ReasonCode::QUOTA_EXCEEDED,
                    "inventory reports are arriving faster than they are processed; retry later"
                        .to_owned(),
                )),
                None => Some((
                    ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                    "this server takes no inventory reports".to_owned(),
                )),
            }
        };
        if let Some((code, why)) = refused {
            self.refuse_publish(pid, p.qos, code, &why);
            return None;
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.out.push(Packet::PubAck(PubResp {
                packet_id: pid,
                ..Default::default()
            })),
            QoS::ExactlyOnce => {
                self.state.inbound_qos2.insert(pid);
                self.out.push(Packet::PubRec(PubResp {
                    packet_id: pid,
                    ..Default::default()
                }));
            }
        }
        None
    }

    /// Refuse a PUBLISH: MQTT 5 gets PUBACK/PUBREC `code` with `why`; MQTT 3.1.1 has no way
    /// to say no, so its message is acknowledged and dropped. QoS 0 is dropped.
    fn refuse_publish(&mut self, pid: u16, qos: QoS, code: ReasonCode, why: &str) {
        let v5 = self.protocol == Protocol::V5;
        let (code, reason_string) = if v5 {
            (code, self.reason(why))
        } else {
            (ReasonCode::SUCCESS, None)
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.out.push(Packet::PubAck(PubResp {
                packet_id: pid,
                code,
                reason_string,
                ..Default::default()
            })),
            QoS::ExactlyOnce => {
                if !v5 {
                    self.state.inbound_qos2.insert(pid);
                }
                self.out.push(Packet::PubRec(PubResp {
                    packet_id: pid,
                    code,
                    reason_string,
                    ..Default::default()
                }));
            }
        }
    }

    pub(super) fn on_subscribe(&mut self, s: Subscribe, now: Now) {
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_for: Vec<(String, SubOpts, Withholding)> = Vec::new();
        let mut ops = Vec::new();
        // Why filters were refused, and which granted ones have topics withheld, in words, once
        // each (the SUBACK's reason string).
        let mut why: Vec<String> = Vec::new();
        let refuse = |why: &mut Vec<String>, codes: &mut Vec<ReasonCode>, code, reason: String| {
            codes.push(code);
            if !why.contains(&reason) {
                why.push(reason);
            }
        };
        let cfg = &self.shared.config;
        let (max_levels, max_filter, max_subs, max_bytes) = (
            cfg.max_topic_levels,
            cfg.max_filter_bytes,
            cfg.max_subscriptions_per_session,
            cfg.max_subscription_bytes_per_session,
        );
        // Bytes of filters the session holds (counted once per SUBSCRIBE, not per message).
        let mut held_bytes: usize = self.state.subscriptions.keys().map(|f| f.len()).sum();
        for req in s.filters {
            let (group, inner) = match topic::parse_shared(&req.filter) {
                Some((g, f)) => (Some(g.to_owned()), f.to_owned()),
                None => (None, req.filter.to_string()),
            };
            if req.filter.len() > max_filter {
                refuse(
                    &mut why,
                    &mut codes,
                    ReasonCode::TOPIC_FILTER_INVALID,
                    format!("filter longer than {max_filter} bytes"),
                );
                continue;
            }
            if topic_levels(&inner) > max_levels {
                refuse(
                    &mut why,
                    &mut codes,
                    ReasonCode::TOPIC_FILTER_INVALID,
                    format!("filter has more than {max_levels} levels"),
                );
                continue;
            }
            let existing = self.state.subscriptions.contains_key(&req.filter);
            if !existing && self.state.subscriptions.len() >= max_subs {
                refuse(
                    &mut why,
                    &mut codes,
                    ReasonCode::QUOTA_EXCEEDED,
                    format!("subscription quota exceeded ({max_subs} per session)"),
                );
                continue;
            }
            if !existing && held_bytes.saturating_add(req.filter.len()) > max_bytes {
                refuse(
                    &mut why,
                    &mut codes,
                    ReasonCode::QUOTA_EXCEEDED,
                    format!(
                        "subscription quota exceeded ({max_bytes} bytes of filters per session)"
                    ),
                );
                continue;
            }
            let Some(withholding) = self.gate.subscribe(&self.shared, &req.filter, &inner) else {
                let reason = if self.gate.quarantine().is_some() {
                    self.gate.denial_reason("one or more subscriptions")
                } else {
                    "one or more filters not authorized by policy".to_owned()
                };
                refuse(&mut why, &mut codes, ReasonCode::NOT_AUTHORIZED, reason);
                continue;
            };
            if let Some(f) = &withholding {
                // Granted, filtered: said once in the SUBACK's reason string (v5) and the log;
                // no event per withheld message.
                let text = format!("{}: {f}", req.filter);
                tracing::info!(device = %self.peer.device_id, filter = %req.filter, withheld = %f, "subscription granted with topics withheld by deny rules");
                if !why.contains(&text) {
                    why.push(text);
                }
                self.gate
                    .subscription_filtered(&self.shared, &req.filter, &withholding);
            }
            self.gate.observe(SeenAction::Subscribe, &inner);
            let opts = SubOpts {
                qos: req.qos,
                no_local: req.no_local,
                retain_as_published: req.retain_as_published,
                retain_handling: req.retain_handling,
                sub_id: s.subscription_identifier,
            };
            let len = req.filter.len();
            let existed = self.add_subscription(
                req.filter.clone(),
                &inner,
                group.as_deref(),
                opts,
                withholding.clone(),
                &mut ops,
            );
            if !existed {
                held_bytes = held_bytes.saturating_add(len);
            }
            codes.push(ReasonCode(req.qos as u8));
            let send_retained = group.is_none()
                && (opts.retain_handling == 0 || (opts.retain_handling == 1 && !existed));
            if send_retained {
                retained_for.push((inner, opts, withholding));
            }
        }
        let reason_string = if !why.is_empty() && self.protocol == Protocol::V5 {
            self.reason(&why.join("; "))
        } else {
            None
        };
        // A persistent subscription is acknowledged once it is on disk: a message published
        // after the SUBACK must find it even across a crash.
        let ticket = self.persist(ops);
        self.out.push_after(
            ticket,
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                codes,
                reason_string,
                ..Default::default()
            }),
        );
        // Retained messages follow the SUBACK (queued to our own mailbox, in order), through
        // the subscription's delivery filter. The retained store's topic trie walks only the
        // branches the filter can match.
        let now = now.mono;
        for (filter, opts, withholding) in retained_for {
            let mut expired = Vec::new();
            let mut due = Vec::new();
            self.shared.retained.for_each_matching(&filter, |r| {
                let msg = &r.msg;
                if msg.expired(now) {
                    expired.push(msg.topic.clone());
                } else if withholding.as_ref().is_some_and(|f| !f.admits(&msg.topic)) {
                    self.shared
                        .stats
                        .messages_filtered
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    due.push(Arc::clone(msg));
                }
            });
            for msg in due {
                // Not written to the store: a retained copy is re-sent on a new subscription,
                // not on a restart (documented in docs/durability.md).
                let d = Delivery {
                    qos: opts.qos.min(msg.qos),
                    msg,
                    retain: true,
                    sub_ids: opts.sub_id.into_iter().collect(),
                    durable: false,
                    ready: 0,
                    dup: false,
                };
                let cfg = &self.shared.config;
                if self
                    .session
                    .deliver(
                        d,
                        cfg.max_queued_messages,
                        cfg.max_queued_bytes,
                        cfg.queue_full,
                    )
                    .is_err()
                {
                    self.shared
                        .stats
                        .messages_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            for t in expired {
                self.shared.retained.remove_if(&t, |r| r.msg.expired(now));
            }
        }
    }

    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut ops = Vec::new();
        for f in u.filters {
            let existed = self.state.subscriptions.remove(&f).is_some();
            if existed {
                self.unroute(&f);
                ops.push(Op::Unsubscribe {
                    session: self.session.id,
                    filter: f.to_string(),
                });
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        let ticket = self.persist(ops);
        self.out.push_after(
            ticket,
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                codes,
                ..Default::default()
            }),
        );
    }

    pub(super) fn unroute(&self, filter: &str) {
        unroute(&self.shared, filter, self.session.id);
    }

    /// Authorization inputs changed: re-check with the gate. A revoked or unregistered device
    /// is closed; a quarantined one stays connected, confined (its subscriptions outside the
    /// quarantine policy are suspended and their queued messages dropped); a released one gets
    /// its suspended subscriptions back where its policy allows them.
    pub(super) fn recheck(&mut self) -> Option<End> {
        let (quarantined, was_quarantined) = match self.gate.recheck(&self.shared) {
            Recheck::Revoked => return Some(self.close_admin("certificate revoked")),
            Recheck::Unregistered => return Some(self.close_admin("device no longer registered")),
            Recheck::Current {
                quarantined,
                was_quarantined,
            } => (quarantined, was_quarantined),
        };
        let removed = self.recheck_subscriptions();
        if !quarantined {
            self.restore_suspended();
        }
        if was_quarantined && !quarantined {
            tracing::info!(device = %self.peer.device_id, "released from quarantine");
        }
        // Outside quarantine a v5 client whose subscriptions the policy took away is told so by
        // being disconnected (it resubscribes with what it may still read); a quarantined one
        // stays connected so it can report its inventory and receive updates.
        if removed > 0 && !quarantined && self.protocol == Protocol::V5 {
            let reason = format!("{removed} subscription(s) no longer authorized by policy");
            self.out
                .push_disconnect(ReasonCode::NOT_AUTHORIZED, Some(reason.clone()));
            return Some(End::Closed {
                code: ReasonCode::NOT_AUTHORIZED,
                reason,
            });
        }
        None
    }

    pub(super) fn close_admin(&mut self, reason: &str) -> End {
        self.out
            .push_disconnect(ReasonCode::ADMINISTRATIVE_ACTION, Some(reason.to_owned()));
        End::Closed {
            code: ReasonCode::ADMINISTRATIVE_ACTION,
            reason: reason.to_owned(),
        }
    }

    /// Drop subscriptions the device may no longer hold, and queued messages it may no longer
    /// read. While it is quarantined they are suspended rather than forgotten, to come back on
    /// release. A subscription it still holds gets its delivery filter recomputed, and its
    /// router entry replaced when that changed (a deny rule added, removed or edited). Returns
    /// how many subscriptions were removed.
    pub(super) fn recheck_subscriptions(&mut self) -> usize {
        let mut denied: Vec<ByteString> = Vec::new();
        let mut refiltered: Vec<(ByteString, SubOpts, Withholding, bool)> = Vec::new();
        for (f, opts) in &self.state.subscriptions {
            let (group, inner) = match topic::parse_shared(f) {
                Some((g, i)) => (Some(g), i),
                None => (None, &**f),
            };
            match self.gate.may_hold(inner) {
                None => denied.push(f.clone()),
                Some(w) => {
                    let routed = self
                        .shared
                        .router
                        .delivery_filter(inner, group, self.session.id);
                    if routed.as_ref() != Some(&w) {
                        // Said when it withholds something now, or withheld something before.
                        let tell = w.is_some() || routed.is_some_and(|r| r.is_some());
                        refiltered.push((f.clone(), *opts, w, tell));
                    }
                }
            }
        }
        let quarantined = self.gate.quarantine().is_some();
        let mut ops = Vec::new();
        for f in &denied {
            if let Some(opts) = self.state.subscriptions.remove(f) {
                if quarantined {
                    self.state.suspended.insert(f.clone(), opts);
                }
            }
            self.unroute(f);
            ops.push(Op::Unsubscribe {
                session: self.session.id,
                filter: f.to_string(),
            });
            self.gate.subscription_removed(&self.shared, f);
        }
        for (f, opts, w, tell) in &refiltered {
            self.route(f, *opts, w.clone());
            if *tell {
                self.gate.subscription_filtered(&self.shared, f, w);
            }
        }
        if !denied.is_empty() || !refiltered.is_empty() || quarantined {
            let gate = &self.gate;
            let dropped = self.session.retain_queued(|d| gate.may_read(&d.msg.topic));
            ops.extend(dropped.into_iter().map(|seq| Op::Dequeue {
                session: self.session.id,
                seq,
            }));
        }
        self.persist(ops);
        denied.len()
    }

    /// Out of quarantine: put back the subscriptions it suspended, where the policy allows.
    pub(super) fn restore_suspended(&mut self) {
        if self.state.suspended.is_empty() {
            return;
        }
        let mut ops = Vec::new();
        for (filter, opts) in std::mem::take(&mut self.state.suspended) {
            let (group, inner) = match topic::parse_shared(&filter) {
                Some((g, f)) => (Some(g.to_owned()), f.to_owned()),
                None => (None, filter.to_string()),
            };
            if self.state.subscriptions.contains_key(&filter) {
                continue;
            }
            let Some(withholding) = self.gate.may_hold(&inner) else {
                continue;
            };
            if withholding.is_some() {
                self.gate
                    .subscription_filtered(&self.shared, &filter, &withholding);
            }
            self.add_subscription(
                filter,
                &inner,
                group.as_deref(),
                opts,
                withholding,
                &mut ops,
            );
        }
        self.persist(ops);
    }

    /// Record a granted subscription: in the session, for the store (`ops`), in the router
    /// with its delivery filter. Returns whether the session already had one with that filter.
    fn add_subscription(
        &mut self,
        filter: ByteString,
        inner: &str,
        group: Option<&str>,
        opts: SubOpts,
        withholding: Withholding,
        ops: &mut Vec<Op>,
    ) -> bool {
        ops.push(Op::Subscribe {
            session: self.session.id,
            filter: filter.to_string(),
            opts: pack_opts(&opts),
            sub_id: opts.sub_id.unwrap_or(0),
        });
        self.shared.router.subscribe(
            inner,
            group,
            Subscriber {
                session: Arc::clone(&self.session),
                opts,
                filter: withholding,
            },
        );
        self.state.subscriptions.insert(filter, opts).is_some()
    }

    /// (Re)place this session's router entry for `filter` (as written, `$share/...` included).
    fn route(&self, filter: &str, opts: SubOpts, withholding: Withholding) {
        let (group, inner) = match topic::parse_shared(filter) {
            Some((g, i)) => (Some(g), i),
            None => (None, filter),
        };
        self.shared.router.subscribe(
            inner,
            group,
            Subscriber {
                session: Arc::clone(&self.session),
                opts,
                filter: withholding,
            },
        );
    }
}

/// Number of levels in a topic name or filter.
fn topic_levels(t: &str) -> usize {
    t.bytes().filter(|&b| b == b'/').count() + 1
}
