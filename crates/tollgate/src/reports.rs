//! Wiring between the data plane and the control plane's compliance side.
//!
//! Devices' inventory reports arrive from the broker's reserved topic on the connection's task;
//! [`start`] gives the broker a sink that only queues them (bounded: a full queue refuses the
//! publish with 0x97 so the device retries) and one task that hands them, in order, to the
//! control plane on a blocking thread. [`evaluate_on_connect`] follows the event bus and has
//! each accepted connection's device evaluated, so compliance is decided at CONNECT without
//! the connection waiting for it. Nothing here decides anything.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tollgate_broker::reports::ReportSink;
use tollgate_broker::Broker;
use tollgate_control::Control;
use tollgate_events::{Consumer, Delivery, EventKind};

/// Reports queued at most; beyond, devices are told to retry.
const QUEUE: usize = 1024;

struct Queue(mpsc::Sender<(String, Bytes)>);

impl ReportSink for Queue {
    fn report(&self, device: &str, payload: Bytes) -> bool {
        self.0.try_send((device.to_owned(), payload)).is_ok()
    }
}

/// Give the broker its report sink; returns the task that applies the reports.
pub fn start(cp: Arc<Control>, broker: &Broker) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(QUEUE);
    broker.set_report_sink(Arc::new(Queue(tx)));
    tokio::spawn(async move {
        while let Some((device, payload)) = rx.recv().await {
            let cp = Arc::clone(&cp);
            let d = device.clone();
            let r = tokio::task::spawn_blocking(move || cp.report_inventory(&d, &payload)).await;
            match r {
                Ok(Ok(changed)) => {
                    tracing::debug!(device, changed, "inventory report");
                }
                Ok(Err(e)) => tracing::warn!(device, "inventory report refused: {e}"),
                Err(e) => tracing::error!(device, "inventory report task failed: {e}"),
            }
        }
    })
}

/// Evaluate each device as its connection is accepted, and record when each device was last
/// seen (connected or disconnected) and from which address.
pub async fn evaluate_on_connect(cp: Arc<Control>, mut events: Consumer) {
    while let Some(d) = events.recv().await {
        let Delivery::Event(e) = d else { continue };
        let cp = Arc::clone(&cp);
        match &e.kind {
            EventKind::ConnectionAccepted { device, addr, .. } => {
                let device = device.clone();
                let addr = addr.map(|a| a.to_string());
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(err) = cp.record_seen(&device, addr.as_deref()) {
                        tracing::warn!(device, "recording when it was last seen: {err}");
                    }
                    cp.evaluate_on_connect(&device)
                })
                .await;
            }
            EventKind::Disconnected { device, .. } => {
                let device = device.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(err) = cp.record_seen(&device, None) {
                        tracing::warn!(device, "recording when it was last seen: {err}");
                    }
                })
                .await;
            }
            _ => {}
        }
    }
}
