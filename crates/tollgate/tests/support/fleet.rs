//! A fleet of real paho-mqtt devices with attacks on a schedule (`detect_fleet.py`), and the
//! detection settings the detection tests share.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{Device, Server};

pub const POLICY: &str = r#"
version = 1

[[allow]]
id = "devices"
who = "*"
publish = ["telemetry/${device.id}/#"]
subscribe = ["commands/${device.id}/#", "telemetry/${device.id}/#"]
"#;

/// 5-second buckets: baselines after 4 buckets online (20 s); short mitigation lifetimes.
pub const DETECTION: &str = r#"
[engine]
bucket = "5s"
learning_buckets = 4

[detectors.new_source_address]
learning = "15s"

[detectors.authorization_probing]
ttl = "20s"

[detectors.cloned_certificate]
ttl = "20s"
"#;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Write `DATA/detection.toml` and wait until the server has loaded it.
pub fn install_rules(s: &Server, text: &str) {
    let before = s.count_events("detection_rules_reloaded");
    let tmp = s.data.join("detection.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, s.data.join("detection.toml")).unwrap();
    s.wait_event_for(
        "detection rules reloaded",
        std::time::Duration::from_secs(30),
        |_| s.count_events("detection_rules_reloaded") > before,
    );
}

/// A running fleet driver (tests/support/detect_fleet.py).
pub struct Fleet {
    child: std::process::Child,
    pub onsets: Arc<Mutex<BTreeMap<String, i64>>>,
    ready: std::sync::mpsc::Receiver<()>,
}

impl Fleet {
    pub fn start(plan: Value) -> Fleet {
        Fleet::start_in(&[], plan)
    }

    /// [`Fleet::start`] under `wrapper` (e.g. `ip netns exec NS`).
    pub fn start_in(wrapper: &[&str], plan: Value) -> Fleet {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/detect_fleet.py");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg("python3");
                c
            }
            None => Command::new("python3"),
        };
        let mut child = cmd
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(plan.to_string().as_bytes())
            .unwrap();
        let onsets = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, ready) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let o = Arc::clone(&onsets);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let parts: Vec<&str> = line.split_whitespace().collect();
                match parts.as_slice() {
                    ["ONSET", _op, device, ms] => {
                        o.lock()
                            .unwrap()
                            .insert(device.to_string(), ms.parse().unwrap_or(0));
                    }
                    ["READY", _] => {
                        let _ = tx.send(());
                    }
                    _ => eprintln!("fleet: {line}"),
                }
            }
        });
        Fleet {
            child,
            onsets,
            ready,
        }
    }

    pub fn wait_ready(&self) {
        self.ready
            .recv_timeout(Duration::from_secs(60))
            .expect("fleet ready");
    }

    pub fn onset(&self, device: &str) -> Option<i64> {
        self.onsets.lock().unwrap().get(device).copied()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn device_spec(d: &Device, extra: Value) -> Value {
    let mut v = json!({ "id": d.id, "cert": d.cert, "key": d.key });
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            m.insert(k.clone(), x.clone());
        }
    }
    v
}
