//! The demo's narrator: reads the gateway's event log as it grows and tells, in one line each,
//! what an operator would want to see: the fleet connected, quarantines and releases with their
//! reasons, alerts with what was measured against what was expected, revocations and operator
//! actions. Only reads; a line it cannot parse is skipped.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::Value;

use super::fleet::Counters;

pub struct Narrator {
    path: PathBuf,
    offset: u64,
    partial: String,
    total: usize,
    connected: std::collections::BTreeSet<String>,
    all_connected: bool,
    started: Instant,
    /// The backend's deliveries when last told.
    told_received: u64,
    last_count: Instant,
}

impl Narrator {
    pub fn new(path: PathBuf, total: usize, started: Instant) -> Narrator {
        Narrator {
            path,
            offset: 0,
            partial: String::new(),
            total,
            connected: Default::default(),
            all_connected: false,
            started,
            told_received: 0,
            last_count: Instant::now(),
        }
    }

    /// Read what was appended since last time and tell it.
    pub fn advance(&mut self, counters: &Counters) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut text = String::new();
        let Ok(n) = f.read_to_string(&mut text) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&text);
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                self.event(&v);
            }
        }
        let received = counters.received.load(Ordering::Relaxed);
        if self.all_connected && self.last_count.elapsed().as_secs() >= 15 {
            self.last_count = Instant::now();
            let new = received - self.told_received.min(received);
            self.told_received = received;
            self.say(&format!(
                "the warehouse system received {new} telemetry messages in the last 15 s ({received} in all)"
            ));
        }
    }

    fn say(&self, what: &str) {
        let t = self.started.elapsed().as_secs();
        println!("[{:>2}:{:02}] {what}", t / 60, t % 60);
    }

    fn event(&mut self, e: &Value) {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
        match s("type") {
            "connection_accepted" => {
                self.connected.insert(s("device").to_owned());
                if !self.all_connected && self.connected.len() >= self.total {
                    self.all_connected = true;
                    self.say(&format!(
                        "all {} devices are connected over mutual TLS (MQTT 5), each by its own certificate",
                        self.total
                    ));
                }
            }
            "device_quarantined" => {
                let who = match s("source") {
                    src if src.starts_with("compliance:") => format!("by compliance ({src})"),
                    src if src.starts_with("detector:") => format!("by the detector ({src})"),
                    src => format!("by {} ({src})", s("by")),
                };
                self.say(&format!(
                    "QUARANTINED {} {who}: {}. It stays connected, confined to the quarantine policy.",
                    s("device"),
                    s("reason").trim_end_matches('.')
                ));
            }
            "device_released" => {
                let remaining = e
                    .get("remaining")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if remaining == 0 {
                    self.say(&format!("released {} (by {})", s("device"), s("by")));
                }
            }
            "alert" if s("state") == "active" => {
                let device = e
                    .get("device")
                    .and_then(Value::as_str)
                    .unwrap_or("a cohort");
                self.say(&format!(
                    "ALERT {} ({}) on {device}: {}",
                    s("detector"),
                    s("severity"),
                    s("explanation")
                ));
            }
            "device_revoked" => {
                self.say(&format!(
                    "revoked {} (by {}); its live connections were closed",
                    s("device"),
                    s("by")
                ));
            }
            "dashboard_signed_in" => {
                self.say(&format!(
                    "{} signed in to the dashboard ({})",
                    s("by"),
                    s("role")
                ));
            }
            _ => {}
        }
    }
}
