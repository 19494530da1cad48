//! Recovery: rebuild persistent sessions, their queues and in-flight state, retained messages
//! and pending wills from what the durable store gave back on start. Restored subscriptions
//! are routed with the delivery filters of the policy in force at start.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tollgate_events::EventKind;
use tollgate_mqtt::{ByteString, QoS};
use tollgate_policy::SubscriptionDecision;

use crate::lifecycle::{schedule_expiry, schedule_will};
use crate::persist::{qos_from, unix_ms, Op, Recovered, RecoveredSession};
use crate::router::Subscriber;
use crate::session::{Delivery, Message, Outbound, Session, SessionState};
use crate::Shared;

pub(crate) fn restore(shared: &Arc<Shared>, rec: Recovered) {
    shared
        .next_seq
        .store(rec.max_seq.saturating_add(1), Ordering::Relaxed);
    shared
        .next_session_id
        .store(rec.max_session_id.saturating_add(1), Ordering::Relaxed);
    let now_ms = unix_ms();
    let mut ops = Vec::new();
    let (mut sessions, mut messages, mut expired) = (0, 0, 0);
    for rs in rec.sessions {
        if rs.expires_at_ms.is_some_and(|t| t <= now_ms) || rs.expiry_secs == 0 {
            ops.push(Op::DeleteSession { id: rs.id });
            expired += 1;
            continue;
        }
        sessions += 1;
        messages += restore_session(shared, rs, now_ms, &mut ops);
    }
    let mut retained = 0;
    for r in rec.retained {
        let msg = r
            .msg
            .decode()
            .and_then(|p| Message::from_stored(0, p, r.msg.expires_at_ms));
        match msg {
            Some(m) => {
                retained += 1;
                // Restored whatever the caps say now: they bound new retained messages.
                shared
                    .retained
                    .insert(Arc::new(m), r.device.map(|d| Arc::from(d.as_str())));
            }
            None => ops.push(Op::Retain {
                topic: r.topic,
                msg: None,
                device: None,
            }),
        }
    }
    shared.persist(ops);
    tracing::info!(
        sessions,
        messages,
        retained,
        expired,
        "restored durable state"
    );
    shared.emit(EventKind::SessionsRestored {
        sessions,
        messages,
        retained,
        expired,
    });
}

/// Rebuild one offline session; returns how many queued messages it got back.
fn restore_session(
    shared: &Arc<Shared>,
    rs: RecoveredSession,
    now_ms: i64,
    ops: &mut Vec<Op>,
) -> usize {
    let session = Arc::new(Session::new(rs.id, &rs.device_id, &rs.client_id));
    session.durable.store(true, Ordering::Release);
    let mut state = SessionState {
        expiry_interval: rs.expiry_secs,
        ..Default::default()
    };
    for (filter, opts, sub_id) in rs.subscriptions {
        state.subscriptions.insert(
            ByteString::from(filter.as_str()),
            crate::persist::unpack_opts(opts, sub_id),
        );
    }
    state.inbound_qos2.extend(rs.inbound_qos2);
    let mut restored = 0;
    {
        let mut mb = session.mailbox.lock();
        for e in rs.queue {
            let Some(msg) = e
                .msg
                .decode()
                .and_then(|p| Message::from_stored(e.seq, p, e.msg.expires_at_ms))
            else {
                // Expired while the broker was down (or unreadable): gone.
                ops.push(Op::Dequeue {
                    session: rs.id,
                    seq: e.seq,
                });
                continue;
            };
            restored += 1;
            let d = Delivery {
                msg: Arc::new(msg),
                qos: qos_from(e.qos),
                retain: e.retain,
                sub_ids: e.sub_ids,
                durable: true,
                ready: 0,
                // It may have been sent before the crash.
                dup: true,
            };
            match (e.packet_id, e.released) {
                (Some(pid), true) => {
                    state.outbound.insert(pid, Outbound::Released(Some(e.seq)));
                }
                (Some(pid), false) if d.qos == QoS::ExactlyOnce => {
                    state.outbound.insert(pid, Outbound::Published(d));
                }
                _ => {
                    mb.bytes += d.msg.size();
                    mb.queue.push_back(d);
                }
            }
        }
    }
    if let Some(pid) = state.outbound.keys().next_back() {
        state.next_packet_id = *pid;
    }
    // Routed with the delivery filters of the device's policy in its access state now (the
    // control plane's first snapshot); a filter it may not hold now is not routed (the session
    // keeps it: the re-check when the device connects drops or suspends it and says so).
    let policy = shared.access.load().compile(&rs.device_id);
    for (filter, opts) in &state.subscriptions {
        let (group, inner) = match tollgate_mqtt::topic::parse_shared(filter) {
            Some((g, inner)) => (Some(g), inner),
            None => (None, &**filter),
        };
        let withholding = match policy.as_ref().map(|p| p.subscription(inner)) {
            None | Some(SubscriptionDecision::Refused) => continue,
            Some(SubscriptionDecision::Granted) => None,
            Some(SubscriptionDecision::Filtered(f)) => Some(Arc::new(f)),
        };
        let sub = Subscriber {
            session: Arc::clone(&session),
            opts: *opts,
            filter: withholding,
        };
        shared.router.subscribe(inner, group, sub);
    }
    *session.state.lock() = Some(state);
    let generation = session.generation.load(Ordering::Acquire);
    // A session that was connected when the broker stopped starts its expiry clock now.
    let expires_at_ms = rs
        .expires_at_ms
        .unwrap_or_else(|| now_ms.saturating_add(i64::from(rs.expiry_secs) * 1000));
    if rs.expires_at_ms.is_none() {
        ops.push(Op::Session {
            id: rs.id,
            device_id: Arc::clone(&session.device_id),
            client_id: Arc::clone(&session.client_id),
            expiry_secs: rs.expiry_secs,
            expires_at_ms: Some(expires_at_ms),
        });
    }
    let remaining = u64::try_from(expires_at_ms.saturating_sub(now_ms)).unwrap_or(0);
    schedule_expiry(
        shared,
        &session,
        Duration::from_millis(remaining),
        generation,
    );
    // The connection ended with the broker: its will is due after its delay, authorized against
    // the access snapshot of that moment (the broker starts with the control plane's first).
    if let Some((stored, w)) = rs.will.as_ref().and_then(|s| s.to_will().map(|w| (s, w))) {
        let delay = stored.delay_secs.min(rs.expiry_secs).max(1);
        // Waits in the session like any delayed will: a clean-start connection publishes it at
        // once, a resuming one drops it.
        schedule_will(
            shared,
            &session,
            stored.serial.clone(),
            w,
            delay,
            generation,
        );
    }
    shared
        .sessions
        .lock()
        .insert(Arc::clone(&session.key), session);
    restored
}
