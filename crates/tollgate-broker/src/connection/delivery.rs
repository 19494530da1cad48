//! Deliveries: from the session's mailbox into the outbox within the in-flight window, and
//! redelivery of what was in flight when a session resumes.

use std::sync::atomic::Ordering;

use tokio::time::Instant;
use tollgate_mqtt::{ByteString, Packet, Protocol, PubResp, Publish, PublishProperties, QoS};

use crate::persist::Op;
use crate::session::{Delivery, Message, Outbound};

use super::aliases::{AliasTable, Choice};
use super::{Conn, Now, MAX_BATCH, MAX_BATCH_BYTES};

impl Conn {
    pub(super) fn window_open(&self) -> bool {
        self.state.outbound.len() < self.inflight_limit
    }

    /// Move queued deliveries into the write buffer, within the in-flight window. Returns
    /// whether deliveries that could be sent now are still queued.
    pub(super) fn pump_mailbox(&mut self, now: Now) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        let wm = self.out.watermark();
        self.wm_blocked = false;
        let more = {
            let mut mb = self.session.mailbox.lock();
            let mut window = self
                .inflight_limit
                .saturating_sub(self.state.outbound.len());
            while batch.len() < MAX_BATCH && self.out.wbuf.len() < MAX_BATCH_BYTES {
                let Some(front) = mb.queue.front() else { break };
                if front.ready > wm {
                    // Not on disk yet (QoS 2 to a persistent session): wait for the store.
                    self.wm_blocked = true;
                    break;
                }
                if front.qos != QoS::AtMostOnce {
                    if window == 0 {
                        break;
                    }
                    window -= 1;
                }
                if let Some(d) = mb.queue.pop_front() {
                    mb.bytes = mb.bytes.saturating_sub(d.msg.size());
                    batch.push(d);
                }
            }
            batch.len() == MAX_BATCH && !mb.queue.is_empty()
        };
        let now = now.mono;
        let mut ops = Vec::new();
        let mut sends: Vec<(Delivery, u16)> = Vec::with_capacity(batch.len());
        for d in batch.drain(..) {
            if d.msg.expired(now) {
                self.shared
                    .stats
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.dequeue(&d);
                continue;
            }
            let packet_id = if d.qos == QoS::AtMostOnce {
                0
            } else {
                match self.state.alloc_packet_id() {
                    Some(id) => id,
                    None => {
                        self.shared
                            .stats
                            .messages_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        self.dequeue(&d);
                        continue;
                    }
                }
            };
            if d.durable && d.qos == QoS::ExactlyOnce {
                // A redelivery after a crash must reuse this packet id.
                ops.push(Op::Sent {
                    session: self.session.id,
                    seq: d.msg.seq,
                    packet_id,
                });
            }
            sends.push((d, packet_id));
        }
        let ticket = self.persist(ops);
        for (d, packet_id) in sends {
            let after = if d.durable && d.qos == QoS::ExactlyOnce {
                ticket
            } else {
                0
            };
            if self.encode_delivery(&d, packet_id, d.dup, now, after) {
                if d.qos != QoS::AtMostOnce {
                    self.state
                        .outbound
                        .insert(packet_id, Outbound::Published(d));
                }
            } else {
                self.dequeue(&d);
            }
        }
        self.batch = batch;
        more
    }

    /// The delivery left the session for good: remove it from the store (with the next pass).
    pub(super) fn dequeue(&mut self, d: &Delivery) {
        if d.durable {
            self.dequeued.push(Op::Dequeue {
                session: self.session.id,
                seq: d.msg.seq,
            });
        }
    }

    /// Encode one PUBLISH; false if it could not be sent (too large for the client).
    ///
    /// Its topic alias is chosen here, when it is encoded: the outbox never reorders packets, so
    /// a topic's first use (topic and alias) reaches the wire before its alias-only uses, held
    /// packets included. The size checked against the client's Maximum Packet Size is that of
    /// what is sent; a topic whose first use would not fit with its alias goes without one.
    pub(super) fn encode_delivery(
        &mut self,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Instant,
        after: u64,
    ) -> bool {
        let mut properties: PublishProperties = d.msg.props.clone();
        if self.protocol == Protocol::V5 {
            properties.subscription_identifiers.clone_from(&d.sub_ids);
            properties.message_expiry_interval = d.msg.expires_at.map(|t| {
                u32::try_from(t.saturating_duration_since(now).as_secs().max(1)).unwrap_or(u32::MAX)
            });
        }
        let mut p = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            packet_id,
            payload: d.msg.payload.clone(),
            properties,
        });
        let plain = p.encoded_len(self.protocol);
        let mut size = plain;
        let mut choice = Choice::Plain;
        if let (true, Packet::Publish(publish)) = (self.out_alias_max > 0, &mut p) {
            let max = self.out_alias_max;
            let table = self
                .out_aliases
                .get_or_insert_with(|| Box::new(AliasTable::new(max)));
            choice = table.choose(&d.msg.topic);
            match choice {
                Choice::Plain => {}
                Choice::Known(alias) => {
                    publish.topic = ByteString::new();
                    publish.properties.topic_alias = Some(alias);
                }
                Choice::Assign(alias) => publish.properties.topic_alias = Some(alias),
            }
            if choice != Choice::Plain {
                size = p.encoded_len(self.protocol);
            }
            if size > self.client_max_packet && matches!(choice, Choice::Assign(_)) {
                // The first use does not fit with its alias: the topic alone may.
                if let Packet::Publish(publish) = &mut p {
                    publish.properties.topic_alias = None;
                }
                choice = Choice::Plain;
                size = plain;
            }
        }
        if size > self.client_max_packet {
            // MQTT 5 3.1.2.25: discard, as if delivered.
            self.shared
                .stats
                .messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let stats = &self.shared.stats;
        if let (Some(table), false) = (self.out_aliases.as_mut(), choice == Choice::Plain) {
            table.commit(&d.msg.topic, choice);
            let saved = table.saved(plain, size);
            if saved > 0 {
                stats
                    .topic_alias_bytes_saved
                    .fetch_add(saved, Ordering::Relaxed);
            }
        }
        self.out.push_after(after, p);
        let q = d.qos as usize;
        if let (Some(m), Some(b)) = (stats.messages_out.get(q), stats.bytes_out.get(q)) {
            m.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(d.msg.payload.len() as u64, Ordering::Relaxed);
        }
        self.gate.meter().sent(d.msg.payload.len());
        true
    }

    /// Resend unacknowledged messages of a resumed session (DUP set), within the client's
    /// receive maximum; messages the device may no longer read are dropped, the excess goes back
    /// to the front of the mailbox.
    pub(super) fn resend_inflight(&mut self, now: Now) {
        let now = now.mono;
        let pending: Vec<(u16, Outbound)> = std::mem::take(&mut self.state.outbound)
            .into_iter()
            .collect();
        let mut excess = Vec::new();
        for (pid, o) in pending {
            match o {
                Outbound::Published(d) => {
                    if !self.gate.may_read(&d.msg.topic) {
                        self.shared
                            .stats
                            .messages_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        self.dequeue(&d);
                    } else if self.state.outbound.len() >= self.inflight_limit
                        && d.qos == QoS::AtLeastOnce
                    {
                        excess.push(d);
                    } else if self.encode_delivery(&d, pid, true, now, 0) {
                        self.state.outbound.insert(pid, Outbound::Published(d));
                    } else {
                        self.dequeue(&d);
                    }
                }
                Outbound::Released(seq) => {
                    self.out.push(Packet::PubRel(PubResp {
                        packet_id: pid,
                        ..Default::default()
                    }));
                    self.state.outbound.insert(pid, Outbound::Released(seq));
                }
            }
        }
        if !excess.is_empty() {
            self.session.requeue_front(excess);
        }
    }
}

/// A persistent subscriber acknowledged a QoS 1 message: the last one wakes the publisher,
/// whose PUBACK may now leave without waiting for the disk.
pub(super) fn acknowledged(msg: &Message) {
    if msg.publisher.is_none() {
        return;
    }
    if msg.unacked.fetch_sub(1, Ordering::AcqRel) == 1 {
        if let Some(p) = msg.publisher.as_ref().and_then(std::sync::Weak::upgrade) {
            p.notify.notify_one();
        }
    }
}
