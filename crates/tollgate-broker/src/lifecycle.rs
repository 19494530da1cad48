//! Session lifecycle: attaching a connection to its session (taking it over from a live
//! connection), wills (immediate or delayed), expiry, and destroying a session. Used by
//! connections when they start and end, and by [`crate::restore`] after a restart.
//!
//! A will with a delay waits in its session ([`Session::pending_will`]) and follows MQTT 5
//! 3.1.3.2.2: it is published when the delay elapses or the session ends, whichever comes
//! first (a clean-start connection to the same session, a clean-start takeover of a live one,
//! expiry), and dropped if a connection resumes the session before the delay elapses.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tollgate_events::EventKind;
use tollgate_mqtt::{topic, ByteString, PublishProperties, Will};

use crate::persist::{pack_opts, unix_ms, Op, StoredWill};
use crate::session::{
    props_size, session_key, Control, ControlInbox, Handover, Message, PendingWill, Session,
    SessionState,
};
use crate::Shared;

/// Publish `w` for `session` after `delay` seconds, unless the session reattaches first (then
/// it is dropped) or ends first (then it is published at once: see [`end_pending_will`]).
pub(crate) fn schedule_will(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    serial: String,
    w: Will,
    delay: u32,
    generation: u64,
) {
    if delay == 0 {
        publish_will(shared, session, &serial, w);
        return;
    }
    *session.pending_will.lock() = Some(Box::new(PendingWill { will: w, serial }));
    let shared2 = Arc::clone(shared);
    let session2 = Arc::clone(session);
    let t = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
        if session2.generation.load(Ordering::Acquire) == generation && !session2.is_online() {
            end_pending_will(&shared2, &session2);
        }
    });
    session.timers.lock().push(t.abort_handle());
}

/// The session ended (or its will delay elapsed): publish the will still waiting, if any.
pub(crate) fn end_pending_will(shared: &Shared, session: &Session) {
    let pending = session.pending_will.lock().take();
    if let Some(p) = pending {
        publish_will(shared, session, &p.serial, p.will);
    }
}

/// Destroy `session` after `after`, unless it reattaches first.
pub(crate) fn schedule_expiry(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    after: Duration,
    generation: u64,
) {
    let shared2 = Arc::clone(shared);
    let session2 = Arc::clone(session);
    let t = tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if session2.generation.load(Ordering::Acquire) == generation && !session2.is_online() {
            let subs: Vec<ByteString> = session2
                .state
                .lock()
                .as_ref()
                .map(|s| s.subscriptions.keys().cloned().collect())
                .unwrap_or_default();
            destroy_session(&shared2, &session2, &subs);
        }
    });
    session.timers.lock().push(t.abort_handle());
}

/// Write a (re)attached session's record, and its will, to the store.
pub(crate) fn persist_attach(
    shared: &Shared,
    session: &Session,
    state: &SessionState,
    will: Option<&Will>,
    serial: &str,
) {
    let was = session.durable.load(Ordering::Acquire);
    let now = state.expiry_interval > 0;
    session.durable.store(now, Ordering::Release);
    let mut ops = Vec::new();
    if !now {
        if was {
            ops.push(Op::DeleteSession { id: session.id });
        }
        shared.persist(ops);
        return;
    }
    ops.push(Op::Session {
        id: session.id,
        device_id: Arc::clone(&session.device_id),
        client_id: Arc::clone(&session.client_id),
        expiry_secs: state.expiry_interval,
        expires_at_ms: None,
    });
    if !was {
        // Becoming persistent: what the session already holds becomes durable from here on.
        for (f, o) in &state.subscriptions {
            ops.push(Op::Subscribe {
                session: session.id,
                filter: f.to_string(),
                opts: pack_opts(o),
                sub_id: o.sub_id.unwrap_or(0),
            });
        }
    }
    // A will is kept so that a crash (which drops every connection) still publishes it.
    ops.push(Op::Will {
        session: session.id,
        will: will.and_then(|w| match StoredWill::from_will(w, serial) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(topic = %w.topic, error = %e, "a will cannot be encoded for the durable store; it survives disconnects but not a crash");
                None
            }
        }),
    });
    shared.persist(ops);
}

pub(crate) fn unroute(shared: &Shared, filter: &str, session_id: u64) {
    match topic::parse_shared(filter) {
        Some((g, inner)) => shared.router.unsubscribe(inner, Some(g), session_id),
        None => shared.router.unsubscribe(filter, None, session_id),
    };
}

/// Remove a session and all its subscriptions, if it is still the registered one.
pub(crate) fn destroy_session(shared: &Shared, session: &Arc<Session>, subs: &[ByteString]) {
    {
        let mut reg = shared.sessions.lock();
        match reg.get(&session.key) {
            Some(s) if Arc::ptr_eq(s, session) && !s.is_online() => {
                reg.remove(&session.key);
            }
            _ => return,
        }
    }
    // The session ends: a will still waiting for its delay is due now.
    end_pending_will(shared, session);
    for f in subs {
        unroute(shared, f, session.id);
    }
    session.retain_queued(|_| false);
    if session.durable.swap(false, Ordering::AcqRel) {
        shared.persist(vec![Op::DeleteSession { id: session.id }]);
    }
}

pub(crate) fn publish_will(shared: &Shared, session: &Session, serial: &str, w: Will) {
    // A device revoked (or removed) since it disconnected does not get its will out; one
    // quarantined since gets it out only where the quarantine policy allows.
    let Some(policy) = crate::gate::will_policy(shared, &session.device_id, serial) else {
        return;
    };
    let denied = if !policy.can_publish(&w.topic) {
        Some("will")
    } else if w.retain && !policy.can_retain(&w.topic) {
        Some("will_retain")
    } else {
        None
    };
    if let Some(what) = denied {
        shared.stats.publish_denied.fetch_add(1, Ordering::Relaxed);
        shared.emit(EventKind::PublishDenied {
            device: session.device_id.to_string(),
            topic: w.topic.to_string(),
            qos: w.qos as u8,
            what,
            quarantine: None,
            rule: shared
                .access
                .load()
                .denied_by(
                    &session.device_id,
                    if what == "will_retain" {
                        tollgate_policy::Action::Retain
                    } else {
                        tollgate_policy::Action::Publish
                    },
                    &w.topic,
                )
                .map(str::to_owned),
        });
        return;
    }
    let now = Instant::now();
    let props = PublishProperties {
        payload_format_indicator: w.properties.payload_format_indicator,
        content_type: w.properties.content_type,
        response_topic: w.properties.response_topic,
        correlation_data: w.properties.correlation_data,
        user_properties: w.properties.user_properties,
        ..Default::default()
    };
    let size = w.topic.len() + w.payload.len() + props_size(&props);
    let expiry = w.properties.message_expiry_interval;
    let msg = Arc::new(Message {
        topic: w.topic,
        payload: w.payload,
        props,
        qos: w.qos,
        retain: w.retain,
        expires_at: expiry.map(|s| now + Duration::from_secs(u64::from(s))),
        expires_at_ms: expiry.map(|s| unix_ms().saturating_add(i64::from(s) * 1000)),
        seq: shared.new_seq(),
        from_session: session.id,
        unacked: std::sync::atomic::AtomicU32::new(0),
        publisher: None,
        size,
    });
    // A will over a retained cap is refused as a whole, like any retained PUBLISH.
    let refused = msg.retain && shared.retain(&msg, &session.device_id).is_err();
    if !refused {
        shared.route(&msg, &mut Vec::new(), false, None);
    }
    if session.durable.load(Ordering::Acquire) {
        shared.persist(vec![Op::Will {
            session: session.id,
            will: None,
        }]);
    }
}

/// Find or create the session for (device, client id), taking it over from a live connection.
pub(crate) async fn attach(
    shared: &Arc<Shared>,
    device_id: &str,
    client_id: &str,
    clean_start: bool,
    ctrl: Arc<ControlInbox>,
) -> (Arc<Session>, SessionState, bool) {
    let key = session_key(device_id, client_id);
    for _ in 0..10 {
        // A live connection holds the session: ask it to hand over, and wait.
        let live = {
            let reg = shared.sessions.lock();
            reg.get(&key).filter(|s| s.is_online()).cloned()
        };
        if let Some(s) = live {
            let (ack, rx) = tokio::sync::oneshot::channel();
            if s.send_control(Control::TakeOver(Handover { ack, clean_start })) {
                let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        let mut reg = shared.sessions.lock();
        let existing = reg.get(&key).cloned();
        match existing {
            Some(s) if s.is_online() => continue,
            Some(s) if !clean_start => {
                let state = s.state.lock().take().unwrap_or_default();
                s.cancel_timers();
                // The session resumes before the will delay elapsed: no will (MQTT 5 3.1.3.2.2).
                *s.pending_will.lock() = None;
                s.generation.fetch_add(1, Ordering::AcqRel);
                *s.control.lock() = Some(ctrl);
                s.set_online(true);
                return (s, state, true);
            }
            Some(s) => {
                reg.remove(&key);
                drop(reg);
                s.cancel_timers();
                // Clean start ends the old session: a will waiting for its delay is due now.
                end_pending_will(shared, &s);
                let subs: Vec<ByteString> = s
                    .state
                    .lock()
                    .take()
                    .map(|st| st.subscriptions.into_keys().collect())
                    .unwrap_or_default();
                for f in &subs {
                    unroute(shared, f, s.id);
                }
                s.retain_queued(|_| false);
                if s.durable.swap(false, Ordering::AcqRel) {
                    shared.persist(vec![Op::DeleteSession { id: s.id }]);
                }
                reg = shared.sessions.lock();
                if reg.contains_key(&key) {
                    continue;
                }
                return insert_new(shared, &mut reg, key, device_id, client_id, ctrl);
            }
            None => return insert_new(shared, &mut reg, key, device_id, client_id, ctrl),
        }
    }
    // Could not settle a takeover race: start afresh under a new session object.
    let mut reg = shared.sessions.lock();
    insert_new(shared, &mut reg, key, device_id, client_id, ctrl)
}

pub(crate) fn insert_new(
    shared: &Shared,
    reg: &mut std::collections::HashMap<Arc<str>, Arc<Session>>,
    key: Arc<str>,
    device_id: &str,
    client_id: &str,
    ctrl: Arc<ControlInbox>,
) -> (Arc<Session>, SessionState, bool) {
    let s = Arc::new(Session::new(shared.new_session_id(), device_id, client_id));
    let state = s.state.lock().take().unwrap_or_default();
    s.generation.fetch_add(1, Ordering::AcqRel);
    *s.control.lock() = Some(ctrl);
    s.set_online(true);
    reg.insert(key, Arc::clone(&s));
    (s, state, false)
}
