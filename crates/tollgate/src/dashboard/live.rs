//! Live updates: every event of the bus and a statistics snapshot each second, to browsers, as
//! server-sent events on `GET /dashboard/events` (session required).
//!
//! One task ([`run`]) takes the dashboard's own consumer of the event bus (the dispatcher never
//! waits for it: when its queue is full it misses events and is told) and republishes each
//! event on a bounded broadcast channel, and while anyone listens computes a snapshot (broker
//! counters, fleet RTT and retransmissions from the detectors) once a second. A stream that
//! falls behind the broadcast loses the oldest messages and is sent `lagged` (the page then
//! reloads its data); nothing a browser does can slow the bus. It also keeps the last
//! [`RECENT`] events for the pages' "recent events", and sweeps ended sessions.
//!
//! Streams are bounded (`dashboard.max_streams`; beyond: 503). A stream does not count as use
//! of its session, and ends when the session does. With `?device=ID` it also carries that
//! device's live counters and RTT, for its page's charts.
//!
//! This module must not decide anything: it only relays.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tollgate_broker::Broker;
use tollgate_events::{Consumer, Delivery, Event};

use super::{DashState, Dashboard};

/// Events kept for the pages' "recent events".
pub const RECENT: usize = 1000;

/// Messages a stream may fall behind before it loses the oldest.
const BACKLOG: usize = 1024;

/// One message to every stream.
#[derive(Clone, Debug)]
pub enum Msg {
    /// An event, as its JSON line.
    Event(Arc<str>),
    /// A statistics snapshot.
    Stats(Arc<str>),
}

/// Where snapshots come from.
pub struct StatsSource {
    pub broker: Broker,
    pub detection: Arc<crate::detection::Detection>,
}

/// The relay's shared half.
pub struct Live {
    tx: broadcast::Sender<Msg>,
    recent: Mutex<VecDeque<Arc<Event>>>,
    streams: Arc<Semaphore>,
}

impl Live {
    pub fn new(max_streams: usize) -> Live {
        let (tx, _) = broadcast::channel(BACKLOG);
        Live {
            tx,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            streams: Arc::new(Semaphore::new(max_streams)),
        }
    }

    /// The most recent events (newest last) for which `keep` holds, at most `n`.
    pub fn recent(&self, n: usize, keep: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let g = self.recent.lock();
        let mut out: Vec<_> = g
            .iter()
            .rev()
            .filter(|e| keep(e))
            .take(n)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

/// The relay task: until shutdown, or until the bus ends.
pub async fn run(
    dash: Arc<Dashboard>,
    mut tap: Consumer,
    stats: StatsSource,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            d = tap.recv() => match d {
                Some(Delivery::Event(e)) | Some(Delivery::Durable(e, _)) => {
                    let line: Arc<str> = Arc::from(e.to_json());
                    {
                        let mut g = dash.live.recent.lock();
                        if g.len() >= RECENT {
                            g.pop_front();
                        }
                        g.push_back(e);
                    }
                    // No receiver is not an error: nobody is looking.
                    let _ = dash.live.tx.send(Msg::Event(line));
                }
                Some(Delivery::Gap { count, .. }) => {
                    tracing::debug!(count, "dashboard relay missed events");
                    let _ = dash.live.tx.send(Msg::Stats(Arc::from(
                        json!({ "gap": count }).to_string(),
                    )));
                }
                None => return,
            },
            _ = tick.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    dash.sweep();
                }
                if dash.live.tx.receiver_count() > 0 {
                    if let Some(s) = snapshot(&stats).await {
                        let _ = dash.live.tx.send(Msg::Stats(Arc::from(s.to_string())));
                    }
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Now, Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The fleet now: broker counters and the detectors' fleet figures.
async fn snapshot(s: &StatsSource) -> Option<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let now = now_ms();
    let fleet = s
        .detection
        .with_engine(move |e| e.fleet_stats(now))
        .await
        .ok()?;
    let st = s.broker.stats();
    Some(json!({
        "t": now,
        "connections": st.connections.load(Relaxed),
        "messages_in": st.messages_in_total(),
        "messages_out": st.messages_out_total(),
        "publish_denied": st.publish_denied.load(Relaxed),
        "subscribe_denied": st.subscribe_denied.load(Relaxed),
        "devices": fleet.devices,
        "online": fleet.online,
        "active_alerts": fleet.active_alerts,
        "rtt_ms_p50": fleet.rtt_ms_p50,
        "rtt_ms_p99": fleet.rtt_ms_p99,
        "retrans_ratio_p50": fleet.retrans_ratio_p50,
        "retrans_ratio_p99": fleet.retrans_ratio_p99,
    }))
}

/// One device's live connections, summed: counters and the latest TCP reading.
fn device_now(broker: &Broker, id: &str) -> Value {
    let conns: Vec<_> = broker
        .connections()
        .into_iter()
        .filter(|c| c.device_id == id)
        .collect();
    let first = conns.first();
    let rtt = conns
        .iter()
        .filter_map(|c| c.transport.as_ref())
        .map(|t| f64::from(t.rtt_us) / 1000.0)
        .reduce(f64::max);
    let retrans = conns
        .iter()
        .filter_map(|c| c.transport.as_ref())
        .map(|t| u64::from(t.retransmits))
        .sum::<u64>();
    json!({
        "t": now_ms(),
        "device": id,
        "online": !conns.is_empty(),
        "connections": conns.len(),
        // The meter is the device's, shared by its connections: read it once.
        "messages_in": first.map(|c| c.meter.messages_in),
        "messages_out": first.map(|c| c.meter.messages_out),
        "denied": first.map(|c| c.meter.denied()),
        "rtt_ms": rtt,
        "retransmits": retrans,
    })
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    device: Option<String>,
}

struct StreamState {
    rx: broadcast::Receiver<Msg>,
    dash: Arc<Dashboard>,
    broker: Broker,
    session: String,
    device: Option<String>,
    /// Released when the stream ends.
    _permit: OwnedSemaphorePermit,
    /// Messages already made, sent before reading more.
    pending: VecDeque<SseEvent>,
}

/// `GET /dashboard/events[?device=ID]`.
pub async fn stream(
    State(s): State<DashState>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let Some((session, _)) = s.dash.session(&headers, false) else {
        return super::signin::needed();
    };
    let Ok(permit) = Arc::clone(&s.dash.live.streams).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live-update streams (dashboard.max_streams)",
        )
            .into_response();
    };
    let st = StreamState {
        rx: s.dash.live.tx.subscribe(),
        dash: Arc::clone(&s.dash),
        broker: s.src.broker.clone(),
        session,
        device: q.device.filter(|d| !d.is_empty() && d.len() <= 256),
        _permit: permit,
        pending: VecDeque::from([SseEvent::default().event("hello").data("{}")]),
    };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), st));
            }
            match st.rx.recv().await {
                Ok(Msg::Event(line)) => {
                    st.pending
                        .push_back(SseEvent::default().event("tollgate").data(&*line));
                }
                Ok(Msg::Stats(snap)) => {
                    // The session is checked once a second, with the snapshot; not as use.
                    if let Err(gone) = st.dash.store.get(&st.session, false) {
                        st.dash.ended(gone);
                        return None;
                    }
                    st.pending
                        .push_back(SseEvent::default().event("stats").data(&*snap));
                    if let Some(d) = &st.device {
                        let v = device_now(&st.broker, d);
                        st.pending
                            .push_back(SseEvent::default().event("device").data(v.to_string()));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    st.pending.push_back(
                        SseEvent::default()
                            .event("lagged")
                            .data(json!({ "missed": n }).to_string()),
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
