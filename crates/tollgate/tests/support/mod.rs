//! Shared test support: start the real `tollgate` binary on 127.0.0.1, enroll devices through
//! its CLI, and drive it with real MQTT clients (mosquitto_pub/sub, paho-mqtt) over mTLS.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// The example policy from the README.
pub const EXAMPLE_POLICY: &str = r#"
version = 1

[[allow]]
id = "sensors"
who = "group:sensors"
publish = ["devices/${device.id}/telemetry", "devices/${device.id}/events/#", "devices/${device.id}/status"]
subscribe = ["devices/${device.id}/commands/#"]

[[allow]]
id = "backend"
who = "group:backend"
subscribe = ["devices/+/telemetry", "devices/+/events/#", "devices/+/status", "$share/+/devices/+/telemetry"]
publish = ["devices/+/commands/#"]

[[deny]]
who = "*"
publish = ["$SYS/#"]
"#;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("tollgate-it-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A device's credentials on disk.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

pub struct Server {
    pub child: Option<Child>,
    pub root: PathBuf,
    pub data: PathBuf,
    pub mqtt_port: u16,
    pub admin_port: u16,
    /// Listen for MQTT on this port on every (re)start, so clients can reconnect.
    pub fixed_mqtt_port: Option<u16>,
}

impl Server {
    /// Initialise a data directory, apply `config_extra` (TOML appended to tollgate.toml,
    /// after a policy watch interval of 100 ms) and the example policy, and start serving.
    pub fn start() -> Server {
        Server::start_with(&[], EXAMPLE_POLICY)
    }

    pub fn start_with(config_overrides: &[(&str, &str)], policy: &str) -> Server {
        let root = temp_dir("srv");
        let data = root.join("data");
        let out = Command::new(BIN)
            .args(["init", "--data"])
            .arg(&data)
            .output()
            .expect("run init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg_path = data.join("tollgate.toml");
        let mut cfg = std::fs::read_to_string(&cfg_path).unwrap();
        cfg = cfg.replace("watch_interval_ms = 1000", "watch_interval_ms = 100");
        for (from, to) in config_overrides {
            assert!(cfg.contains(from), "config has no {from:?}");
            cfg = cfg.replace(from, to);
        }
        std::fs::write(&cfg_path, cfg).unwrap();
        std::fs::write(data.join("policy.toml"), policy).unwrap();
        let mut s = Server {
            child: None,
            root,
            data,
            mqtt_port: 0,
            admin_port: 0,
            fixed_mqtt_port: None,
        };
        s.spawn();
        s
    }

    /// Start (or restart) the server process on fresh ports.
    pub fn spawn(&mut self) {
        let addr_file = self.data.join("run/addresses.json");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::File::create(self.root.join(format!(
            "server-{}.log",
            COUNTER.fetch_add(1, Ordering::SeqCst)
        )))
        .unwrap();
        let mqtt = format!("127.0.0.1:{}", self.fixed_mqtt_port.unwrap_or(0));
        let child = Command::new(BIN)
            .args(["serve", "--data"])
            .arg(&self.data)
            .args(["--mqtt-listen", &mqtt, "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tollgate serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    let port = |k: &str| {
                        v[k].as_str()
                            .unwrap()
                            .rsplit(':')
                            .next()
                            .unwrap()
                            .parse::<u16>()
                            .unwrap()
                    };
                    self.mqtt_port = port("mqtt");
                    self.admin_port = port("admin");
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited early: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stop the process with SIGTERM and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL the process: no shutdown, no flush, as in a crash or power cut.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        let mut all = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("server-") {
                    all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        all
    }

    /// Run the CLI against this server (`--data` is appended).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--data")
            .arg(&self.data)
            .output()
            .expect("run tollgate")
    }

    pub fn add_device(&self, id: &str, groups: &[&str]) -> Device {
        let dir = self.root.join("devices").join(id);
        let mut args = vec!["device", "add", id, "--out", dir.to_str().unwrap()];
        for g in groups {
            args.push("--group");
            args.push(g);
        }
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "device add {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Device {
            id: id.into(),
            cert: dir.join(format!("{id}.crt")),
            key: dir.join(format!("{id}.key")),
            ca: dir.join("ca.crt"),
            dir,
        }
    }

    pub fn revoke(&self, id: &str) -> Output {
        let out = self.cli(&["device", "revoke", id, "--reason", "test"]);
        assert!(
            out.status.success(),
            "revoke {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data.join("events.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until an event satisfying `pred` is in the log.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no event {what}; events:\n{:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn count_events(&self, ty: &str) -> usize {
        self.events().iter().filter(|e| e["type"] == ty).count()
    }

    /// Replace the policy file and wait until the server has loaded (or rejected) it.
    pub fn set_policy(&self, text: &str) -> bool {
        let before_ok = self.count_events("policy_reloaded");
        let before_err = self.count_events("policy_rejected");
        // Make the change visible to an mtime poll even within one timestamp tick.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(self.data.join("policy.toml"), text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.count_events("policy_reloaded") > before_ok {
                return true;
            }
            if self.count_events("policy_rejected") > before_err {
                return false;
            }
            assert!(Instant::now() < deadline, "policy change not noticed");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Arguments for mosquitto_pub/sub as `dev`.
    pub fn mosq_args(&self, dev: &Device) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.mqtt_port.to_string(),
            "--cafile".into(),
            dev.ca.display().to_string(),
            "--cert".into(),
            dev.cert.display().to_string(),
            "--key".into(),
            dev.key.display().to_string(),
            "-i".into(),
            dev.id.clone(),
        ]
    }

    pub fn mosquitto_pub(&self, dev: &Device, extra: &[&str]) -> Output {
        Command::new("mosquitto_pub")
            .args(self.mosq_args(dev))
            .args(extra)
            .output()
            .expect("mosquitto_pub")
    }

    /// Start mosquitto_sub in the background; returns once it is subscribed (it prints nothing
    /// until a message arrives, so we wait for the server to record the connection).
    pub fn mosquitto_sub(&self, dev: &Device, extra: &[&str]) -> Child {
        let before = self
            .events()
            .iter()
            .filter(|e| e["type"] == "connection_accepted" && e["device"] == dev.id.as_str())
            .count();
        let child = Command::new("mosquitto_sub")
            .args(self.mosq_args(dev))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .events()
            .iter()
            .filter(|e| e["type"] == "connection_accepted" && e["device"] == dev.id.as_str())
            .count()
            <= before
        {
            assert!(Instant::now() < deadline, "mosquitto_sub did not connect");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The SUBSCRIBE follows the CONNACK immediately.
        std::thread::sleep(Duration::from_millis(200));
        child
    }

    /// Run a paho-mqtt plan as `dev` (see support/paho_plan.py); returns one result per step.
    pub fn paho(&self, dev: &Device, steps: Value) -> Vec<Value> {
        run_paho(self.paho_plan(dev, steps))
    }

    /// The same on a background thread: a client that waits (to receive, or to be
    /// disconnected) while the test acts.
    pub fn paho_background(
        &self,
        dev: &Device,
        steps: Value,
    ) -> std::thread::JoinHandle<Vec<Value>> {
        let plan = self.paho_plan(dev, steps);
        std::thread::spawn(move || run_paho(plan))
    }

    fn paho_plan(&self, dev: &Device, steps: Value) -> Value {
        serde_json::json!({
            "host": "127.0.0.1",
            "port": self.mqtt_port,
            "ca": dev.ca,
            "cert": dev.cert,
            "key": dev.key,
            "steps": steps,
        })
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run_paho(plan: Value) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/paho_plan.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "paho plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("paho output {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Wait for a background mosquitto_sub to exit and return its stdout.
pub fn finish(mut child: Child, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("server log:\n{}", self.log());
        }
    }
}
