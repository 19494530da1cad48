//! Fan-out: routing one message to every matching subscription (one copy per session, at the
//! highest QoS of its overlapping subscriptions, never through a subscription whose delivery
//! filter withholds the topic), handing durable deliveries to the store
//! before any subscriber can see them, and the retained-message store. The payload is shared
//! (`Arc<Message>`), never copied per subscriber; each delivery touches only the receiving
//! session's own mailbox lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tollgate_events::EventKind;
use tollgate_mqtt::QoS;

use crate::persist::{Op, StoredMessage};
use crate::retained;
use crate::router;
use crate::session::{Delivery, Message, Refused, Session};
use crate::{Routed, Shared};

impl Shared {
    /// Route a message to every matching subscription. `scratch` is reused between calls.
    ///
    /// QoS 1/2 deliveries to persistent sessions are handed to the durable store before any
    /// subscriber can see them (so an acknowledgement can never reach the store before the
    /// message it acknowledges). QoS 1 deliveries may be sent before they are on disk (a crash
    /// then makes the publisher resend: at least once); QoS 2 deliveries wait for the disk, so
    /// a crash can never make one arrive twice. With `refusable`, a message that needs the store
    /// while it cannot write is not routed at all. `with` goes into the same store transaction
    /// as the fan-out (the publisher's QoS 2 packet id: a crash must keep both or neither, or a
    /// resent PUBLISH would be routed twice).
    pub(crate) fn route(
        &self,
        msg: &Arc<Message>,
        scratch: &mut Vec<(u64, usize)>,
        refusable: bool,
        with: Option<Op>,
    ) -> Routed {
        let guard = self.router.snapshot();
        let mut targets: Vec<router::Match<'_>> = Vec::new();
        let mut withheld: u64 = 0;
        self.router.for_each_match(&guard, &msg.topic, &mut |m| {
            if m.withheld {
                withheld += 1;
            } else {
                targets.push(m);
            }
        });
        if withheld > 0 {
            // Subscriptions whose delivery filter (a deny rule they overlap) withholds the topic.
            self.stats
                .messages_filtered
                .fetch_add(withheld, Ordering::Relaxed);
        }
        let mut out = Routed::default();
        if targets.is_empty() {
            out.ticket = with.map_or(0, |op| self.persist(vec![op]));
            return out;
        }
        // De-duplicate overlapping subscriptions of one session: one copy at the highest QoS
        // with every subscription identifier (MQTT 5 3.3.4).
        scratch.clear();
        scratch.extend(
            targets
                .iter()
                .enumerate()
                .map(|(i, m)| (m.sub.session.id, i)),
        );
        scratch.sort_unstable();
        let mut plan: Vec<(&Arc<Session>, Delivery)> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut stored: Option<Result<StoredMessage, tollgate_mqtt::EncodeError>> = None;
        let mut unstorable = false;
        let mut i = 0;
        while i < scratch.len() {
            let (sid, first) = scratch[i];
            let mut j = i + 1;
            while j < scratch.len() && scratch[j].0 == sid {
                j += 1;
            }
            let Some(head) = targets.get(first) else {
                break;
            };
            let session = &head.sub.session;
            let mut qos = QoS::AtMostOnce;
            let mut retain = false;
            let mut sub_ids = Vec::new();
            let mut any = false;
            for &(_, idx) in &scratch[i..j] {
                let Some(m) = targets.get(idx) else { continue };
                if m.sub.opts.no_local && !m.shared && msg.from_session == sid {
                    continue;
                }
                any = true;
                qos = qos.max(m.sub.opts.qos);
                retain |= m.sub.opts.retain_as_published && msg.retain;
                if let Some(id) = m.sub.opts.sub_id {
                    sub_ids.push(id);
                }
            }
            i = j;
            if !any {
                continue;
            }
            let qos = qos.min(msg.qos);
            let durable = qos != QoS::AtMostOnce
                && self.store.is_some()
                && session.durable.load(Ordering::Acquire);
            if durable {
                match stored.get_or_insert_with(|| msg.stored()) {
                    Ok(blob) => ops.push(Op::Enqueue {
                        session: sid,
                        seq: msg.seq,
                        qos: qos as u8,
                        retain,
                        sub_ids: sub_ids.clone(),
                        msg: blob.clone(),
                    }),
                    Err(_) => unstorable = true,
                }
            }
            plan.push((
                session,
                Delivery {
                    msg: Arc::clone(msg),
                    qos,
                    retain,
                    sub_ids,
                    durable,
                    ready: 0,
                    dup: false,
                },
            ));
        }
        if let Some(Err(e)) = &stored {
            // Never swallowed: storing an empty record would lose an acknowledged message on
            // the next restart. A publisher that can be told is refused (0x97).
            tracing::error!(topic = %msg.topic, error = %e, "a message cannot be encoded for the durable store");
            if refusable && unstorable {
                self.stats.storage_refused.fetch_add(1, Ordering::Relaxed);
                out.storage_refused = true;
                return out;
            }
        }
        if let (Some(store), false) = (&self.store, ops.is_empty()) {
            if refusable && !store.healthy() {
                self.stats.storage_refused.fetch_add(1, Ordering::Relaxed);
                out.storage_refused = true;
                return out;
            }
            self.stats
                .messages_persisted
                .fetch_add(ops.len() as u64, Ordering::Relaxed);
            ops.extend(with);
            out.ticket = store.submit(ops);
        } else if let Some(op) = with {
            out.ticket = self.persist(vec![op]);
        }
        let mut undo: Vec<Op> = Vec::new();
        let cfg = &self.config;
        if msg.qos == QoS::AtLeastOnce && out.ticket != 0 {
            // Set before any subscriber can see (and acknowledge) the message.
            let n = plan.iter().filter(|(_, d)| d.durable).count();
            msg.unacked
                .store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Release);
        }
        for (session, mut d) in plan {
            if d.durable && d.qos == QoS::ExactlyOnce {
                d.ready = out.ticket;
            }
            let durable = d.durable;
            match session.deliver(
                d,
                cfg.max_queued_messages,
                cfg.max_queued_bytes,
                cfg.queue_full,
            ) {
                Ok(q) => {
                    if q.evicted_count > 0 {
                        self.stats
                            .queue_full
                            .fetch_add(q.evicted_count as u64, Ordering::Relaxed);
                        self.stats
                            .messages_dropped
                            .fetch_add(q.evicted_count as u64, Ordering::Relaxed);
                    }
                    undo.extend(q.evicted.into_iter().map(|seq| Op::Dequeue {
                        session: session.id,
                        seq,
                    }));
                    if q.became_full {
                        self.queue_full_event(session, "dropped_oldest");
                    }
                }
                Err((why, first)) => {
                    self.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                    if why == Refused::Full {
                        self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                        out.refused += 1;
                        if first {
                            self.queue_full_event(session, "rejected");
                        }
                    }
                    if durable {
                        // Never delivered there: nothing to wait for from that session.
                        if msg.qos == QoS::AtLeastOnce {
                            msg.unacked.fetch_sub(1, Ordering::AcqRel);
                        }
                        undo.push(Op::Dequeue {
                            session: session.id,
                            seq: msg.seq,
                        });
                    }
                }
            }
        }
        if let (Some(store), false) = (&self.store, undo.is_empty()) {
            store.submit(undo);
        }
        out
    }

    fn queue_full_event(&self, session: &Session, action: &'static str) {
        self.emit(EventKind::QueueFull {
            device: session.device_id.to_string(),
            client_id: session.client_id.to_string(),
            action,
        });
    }

    /// The caps a retained message is checked against.
    fn retained_limits(&self) -> retained::Limits {
        let c = &self.config;
        retained::Limits {
            max_messages: c.max_retained_messages,
            max_bytes: c.max_retained_bytes,
            max_per_device: c.max_retained_per_device,
            max_bytes_per_device: c.max_retained_bytes_per_device,
        }
    }

    /// May `owner` retain `msg`? Clearing (an empty payload) always may. A refusal is counted
    /// and reported (a `publish_denied` event with `what = "retain_quota"`).
    pub(crate) fn retain_check(&self, msg: &Message, owner: &str) -> Result<(), retained::Refused> {
        if msg.payload.is_empty() {
            return Ok(());
        }
        self.retained
            .check(&self.retained_limits(), msg, Some(owner))
            .inspect_err(|why| self.retain_refused(msg, owner, *why))
    }

    fn retain_refused(&self, msg: &Message, owner: &str, why: retained::Refused) {
        self.stats.retained_dropped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(device = owner, topic = %msg.topic, %why, "retained publish refused");
        self.emit(EventKind::PublishDenied {
            device: owner.to_owned(),
            topic: msg.topic.to_string(),
            qos: msg.qos as u8,
            what: "retain_quota",
            quarantine: None,
            rule: None,
        });
    }

    /// Store or clear a retained message published by `owner`. Returns the store ticket of the
    /// change (0: none), or the cap it would go over (counted and reported; nothing stored).
    pub(crate) fn retain(
        &self,
        msg: &Arc<Message>,
        owner: &Arc<str>,
    ) -> Result<u64, retained::Refused> {
        let op = if msg.payload.is_empty() {
            self.retained.remove(&msg.topic).map(|_| None)
        } else {
            self.retain_check(msg, owner)?;
            self.retained
                .insert(Arc::clone(msg), Some(Arc::clone(owner)));
            match msg.stored() {
                Ok(s) => Some(Some(s)),
                Err(e) => {
                    tracing::error!(topic = %msg.topic, error = %e, "a retained message cannot be encoded for the durable store; it is kept in memory only");
                    None
                }
            }
        };
        Ok(match op {
            Some(stored) if self.store.is_some() => {
                let device = stored.as_ref().map(|_| owner.to_string());
                self.persist(vec![Op::Retain {
                    topic: msg.topic.to_string(),
                    msg: stored,
                    device,
                }])
            }
            _ => 0,
        })
    }
}
