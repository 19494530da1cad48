//! The outbox: the write buffer, and the packets held until the durable store's watermark
//! passes the changes they promise (in order: a packet never overtakes one held before it).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tollgate_mqtt::{BytesMut, Disconnect, Packet, Protocol, ReasonCode};

use crate::session::Message;

/// A packet waiting for the store.
pub(crate) struct Held {
    /// Leaves once the watermark reaches this ticket (0: with the packets before it).
    ticket: u64,
    packet: Packet,
    /// A QoS 1 PUBACK may also leave once every persistent subscriber acknowledged this.
    delivered: Option<Arc<Message>>,
}

/// What a connection has to say to its client.
pub(crate) struct Outbox {
    pub protocol: Protocol,
    /// Encoded packets ready to write.
    pub wbuf: BytesMut,
    /// Packets waiting for the store's watermark to reach their ticket (0: behind the others).
    pub held: VecDeque<Held>,
    /// The store's watermark (no store: `None`).
    pub wm: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Outbox {
    pub fn new(protocol: Protocol, wm: Option<tokio::sync::watch::Receiver<u64>>) -> Outbox {
        Outbox {
            protocol,
            wbuf: BytesMut::new(),
            held: VecDeque::new(),
            wm,
        }
    }

    /// Queue a packet for the client (behind any packet still waiting for the store).
    pub fn push(&mut self, p: Packet) {
        if self.held.is_empty() {
            self.encode(&p);
        } else {
            self.held.push_back(Held {
                ticket: 0,
                packet: p,
                delivered: None,
            });
        }
    }

    /// Queue a packet that may leave only once the store's watermark reaches `ticket`.
    pub fn push_after(&mut self, ticket: u64, p: Packet) {
        self.push_after_or_delivered(ticket, p, None);
    }

    /// Like [`Outbox::push_after`], or once every durable delivery of `msg` is acknowledged.
    pub fn push_after_or_delivered(&mut self, ticket: u64, p: Packet, msg: Option<Arc<Message>>) {
        if ticket == 0 || (self.held.is_empty() && ticket <= self.watermark()) {
            self.push(p);
        } else {
            self.held.push_back(Held {
                ticket,
                packet: p,
                delivered: msg,
            });
        }
    }

    pub fn watermark(&self) -> u64 {
        self.wm.as_ref().map_or(u64::MAX, |w| *w.borrow())
    }

    /// Move packets whose changes are on disk into the write buffer, in order.
    pub fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let wm = self
            .wm
            .as_mut()
            .map_or(u64::MAX, |w| *w.borrow_and_update());
        while self.held.front().is_some_and(|h| {
            h.ticket <= wm
                || h.delivered
                    .as_ref()
                    .is_some_and(|m| m.unacked.load(Ordering::Acquire) == 0)
        }) {
            if let Some(h) = self.held.pop_front() {
                self.encode(&h.packet);
            }
        }
    }

    pub fn encode(&mut self, p: &Packet) {
        if let Err(e) = p.encode(self.protocol, &mut self.wbuf) {
            tracing::warn!(error = %e, kind = p.kind(), "cannot encode packet");
        }
    }

    /// A DISCONNECT goes out at once: whatever waits for the store is not sent.
    pub fn push_disconnect(&mut self, code: ReasonCode, reason: Option<String>) {
        if self.protocol == Protocol::V5 {
            self.encode(&Packet::Disconnect(Disconnect {
                code,
                reason_string: reason,
                ..Default::default()
            }));
        }
    }
}
