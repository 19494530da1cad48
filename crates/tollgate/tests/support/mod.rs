//! Shared test support: start the real `tollgate` binary on 127.0.0.1, enroll devices through
//! its CLI, and drive it with real MQTT clients (mosquitto_pub/sub, paho-mqtt) over mTLS.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod fleet;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// The example policy from the README.
pub const EXAMPLE_POLICY: &str = r#"
version = 1

[[allow]]
id = "sensors"
who = "group:sensors"
publish = ["devices/${device.id}/telemetry", "devices/${device.id}/events/#", "devices/${device.id}/status"]
subscribe = ["devices/${device.id}/commands/#"]
retain = ["devices/${device.id}/status"]

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

impl Device {
    /// A device whose credentials are already on disk.
    pub fn from_files(
        id: &str,
        dir: &Path,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Device {
        Device {
            id: id.into(),
            dir: dir.into(),
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        }
    }
}

/// Write a certificate and key (PEM) into `dir` as c.crt and c.key: a device presenting them.
pub fn write_device(dir: &Path, id: &str, cert_pem: &str, key_pem: &str, ca: &Path) -> Device {
    std::fs::create_dir_all(dir).unwrap();
    let d = Device::from_files(id, dir, dir.join("c.crt"), dir.join("c.key"), ca);
    std::fs::write(&d.cert, cert_pem).unwrap();
    std::fs::write(&d.key, key_pem).unwrap();
    d
}

pub struct Server {
    pub child: Option<Child>,
    pub root: PathBuf,
    pub data: PathBuf,
    pub mqtt_port: u16,
    pub admin_port: u16,
    /// Listen for MQTT on this port on every (re)start, so clients can reconnect.
    pub fixed_mqtt_port: Option<u16>,
    /// A command the server is started under (`prlimit --nofile=1100`, say).
    pub wrapper: Vec<String>,
    /// The MQTT listener's address (127.0.0.1 unless a test needs another).
    pub mqtt_host: String,
    /// The admin and metrics listeners' address (127.0.0.1 unless a test needs another).
    pub admin_host: String,
}

impl Server {
    /// Initialise a data directory, apply `config_extra` (TOML appended to tollgate.toml,
    /// after a policy watch interval of 100 ms) and the example policy, and start serving.
    pub fn start() -> Server {
        Server::start_with(&[], EXAMPLE_POLICY)
    }

    pub fn start_with(config_overrides: &[(&str, &str)], policy: &str) -> Server {
        Server::start_wrapped(&[], config_overrides, policy)
    }

    /// [`Server::start_with`], with the server started under `wrapper`.
    pub fn start_wrapped(
        wrapper: &[&str],
        config_overrides: &[(&str, &str)],
        policy: &str,
    ) -> Server {
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
            wrapper: wrapper.iter().map(|w| w.to_string()).collect(),
            mqtt_host: "127.0.0.1".into(),
            admin_host: "127.0.0.1".into(),
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
        let mqtt = format!("{}:{}", self.mqtt_host, self.fixed_mqtt_port.unwrap_or(0));
        let mut cmd = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["serve", "--data"])
            .arg(&self.data)
            .args(["--mqtt-listen", &mqtt])
            .args(["--admin-listen", &format!("{}:0", self.admin_host)])
            .args(["--metrics-listen", &format!("{}:0", self.admin_host)])
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
        self.wait_event_for(what, Duration::from_secs(10), pred)
    }

    /// [`Server::wait_event`] with a time limit of `within` (for waits that share the machine
    /// with a heavy test and a file watcher's tick).
    pub fn wait_event_for(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
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

    /// Wait for the event of type `ty` that comes after the first `skip` of them.
    pub fn nth_event(&self, ty: &str, skip: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .filter(|e| e["type"] == ty)
                .nth(skip)
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no new {ty} event:\n{}",
                self.log()
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
        // Written beside it and renamed over it: a poll between an in-place rewrite's truncation
        // and its write would load an empty (deny-all) policy and count as the reload.
        let tmp = self.data.join("policy.toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.data.join("policy.toml")).unwrap();
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

    /// `tollgate device show ID` as JSON.
    pub fn show(&self, id: &str) -> Value {
        let out = self.cli(&["device", "show", id]);
        assert!(
            out.status.success(),
            "device show {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Call the admin API with the admin certificate (curl); returns (HTTP status, JSON body or
    /// the body as a string).
    pub fn admin_api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--cacert",
        ])
        .arg(self.data.join("ca/root.crt"))
        .arg("--cert")
        .arg(self.data.join("admin/admin.crt"))
        .arg("--key")
        .arg(self.data.join("admin/admin.key"));
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{}{path}", self.admin_port))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
        (code.trim().parse().unwrap_or(0), v)
    }

    /// The issuing CA, to make certificates the server would not issue (expired ones, say).
    pub fn issuer(&self) -> tollgate_pki::Issuer {
        tollgate_pki::Issuer::from_pem(
            &std::fs::read_to_string(self.data.join("ca/issuing.crt")).unwrap(),
            &std::fs::read_to_string(self.data.join("ca/issuing.key")).unwrap(),
        )
        .unwrap()
    }

    /// A certificate for device `id` from our own issuing CA that expired a day ago.
    pub fn expired_device(&self, id: &str, dir: &Path) -> Device {
        let now = time::OffsetDateTime::now_utc();
        let expired = self
            .issuer()
            .issue(
                &tollgate_pki::CertProfile::Device { id },
                tollgate_pki::Validity {
                    not_before: now - time::Duration::days(10),
                    not_after: now - time::Duration::days(1),
                },
                None,
            )
            .unwrap();
        write_device(
            dir,
            id,
            &expired.cert_pem,
            expired.key_pem.as_deref().unwrap(),
            &self.data.join("ca/root.crt"),
        )
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

    /// Start mosquitto_sub in the background; returns once it has its SUBACK. It runs with
    /// `-d` (under `stdbuf -oL`, so each line arrives as it is printed): its debug output says
    /// "received SUBACK", the signal that the server holds the subscription. `finish` returns
    /// its output without the debug lines.
    pub fn mosquitto_sub(&self, dev: &Device, extra: &[&str]) -> MosqSub {
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-d"])
            .args(self.mosq_args(dev))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (under stdbuf)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sub = MosqSub {
            child,
            lines: rx,
            seen: Vec::new(),
            reader: Some(reader),
            debug_prefix: format!("Client {} ", dev.id),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if sub.seen.iter().any(|l| l.contains("received SUBACK")) {
                return sub;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match sub.lines.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(l) => sub.seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(
                        Instant::now() < deadline,
                        "mosquitto_sub got no SUBACK within 10 s; output so far:\n{}",
                        sub.seen.join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // It ended. A resumed persistent session may get its queued messages before
                    // the SUBACK, and `-C N` may end it with them: fine if it succeeded.
                    let status = sub.child.wait().unwrap();
                    if status.success() {
                        return sub;
                    }
                    let mut err = String::new();
                    if let Some(mut e) = sub.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "mosquitto_sub failed ({status}) before its SUBACK:\n{}\n{err}",
                        sub.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Run a paho-mqtt plan as `dev` (see support/paho_plan.py); returns one result per step.
    pub fn paho(&self, dev: &Device, steps: Value) -> Vec<Value> {
        run_paho(self.paho_plan(dev, steps))
    }

    /// The same in the background: a client that waits (to receive, or to be disconnected)
    /// while the test acts. `wait_step(i)` blocks until step `i` is done (a readiness signal:
    /// after a `subscribe` step the server has sent the SUBACK), `join()` gives every result.
    pub fn paho_background(&self, dev: &Device, steps: Value) -> PahoClient {
        PahoClient::spawn(self.paho_plan(dev, steps))
    }

    pub fn paho_plan(&self, dev: &Device, steps: Value) -> Value {
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

/// Read from `stream` until the peer closes it (end of stream, or a reset) and return what
/// came before. A read that times out is not a close: it fails the test.
pub fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> Vec<u8> {
    use std::io::ErrorKind;
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the connection was still open after {within:?} (received {got:02x?})"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
                ) =>
            {
                return got
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "the connection was still open after {within:?} (read timed out; received {got:02x?})"
            ),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the connection failed with {e} ({:?})", e.kind()),
        }
    }
}

pub fn run_paho(plan: Value) -> Vec<Value> {
    PahoClient::spawn(plan).join().unwrap()
}

/// A paho-mqtt plan running in its own python3 process, reporting each step as it completes.
pub struct PahoClient {
    child: Option<Child>,
    progress: mpsc::Receiver<(usize, Value)>,
    done: Vec<Option<Value>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

const PROGRESS: &str = "PAHO-STEP ";

impl PahoClient {
    pub fn spawn(mut plan: Value) -> PahoClient {
        plan["progress"] = Value::Bool(true);
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
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let text = Arc::new(Mutex::new(String::new()));
        let text2 = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                match line.strip_prefix(PROGRESS) {
                    Some(json) => {
                        let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                        let i = v["step"].as_u64().unwrap_or(u64::MAX) as usize;
                        let _ = tx.send((i, v["result"].clone()));
                    }
                    None => {
                        let mut t = text2.lock().unwrap();
                        t.push_str(&line);
                        t.push('\n');
                    }
                }
            }
        });
        PahoClient {
            child: Some(child),
            progress: rx,
            done: Vec::new(),
            stderr: text,
            stderr_reader: Some(reader),
        }
    }

    /// Wait (at most 20 s) until step `i` has completed; returns its result.
    pub fn wait_step(&mut self, i: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Some(v)) = self.done.get(i) {
                return v.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.progress.recv_timeout(left) {
                Ok((n, v)) => {
                    if self.done.len() <= n {
                        self.done.resize(n + 1, None);
                    }
                    self.done[n] = Some(v);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "paho step {i} not done within 20 s; done: {:?}\n{}",
                    self.done,
                    self.stderr.lock().unwrap()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "paho plan ended before step {i}; done: {:?}\n{}",
                    self.done,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Wait (at most 60 s) for the plan to end; one result per step. (A `Result`, like a
    /// thread's join: the plan's own failures panic here.)
    pub fn join(mut self) -> std::thread::Result<Vec<Value>> {
        let mut child = self.child.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "paho plan still running after 60 s\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = out_reader.join().unwrap();
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
        assert!(
            status.success(),
            "paho plan failed: {}",
            self.stderr.lock().unwrap()
        );
        Ok(serde_json::from_slice::<Vec<Value>>(&out)
            .unwrap_or_else(|e| panic!("paho output {e}: {}", String::from_utf8_lossy(&out))))
    }
}

impl Drop for PahoClient {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A background mosquitto_sub (see [`Server::mosquitto_sub`]).
pub struct MosqSub {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    debug_prefix: String,
}

impl MosqSub {
    fn is_debug(&self, line: &str) -> bool {
        line.starts_with(&self.debug_prefix) || line.starts_with("Subscribed (mid:")
    }
}

/// Wait for a background mosquitto_sub to exit (killing it after `within`) and return what it
/// printed, without its debug lines.
pub fn finish(mut sub: MosqSub, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if sub.child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = sub.child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = sub.child.wait();
    if let Some(r) = sub.reader.take() {
        let _ = r.join();
    }
    while let Ok(l) = sub.lines.try_recv() {
        sub.seen.push(l);
    }
    let mut out = String::new();
    for l in &sub.seen {
        if !sub.is_debug(l) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

impl Drop for MosqSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `script` with bash in `dir`.
pub fn sh(dir: &Path, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap()
}

pub const P256: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256";

/// An openssl CSR (base64 DER, as EST wants it) for `cn` with `keyopts`; returns its path. The
/// key is written to DIR/NAME.key.
pub fn csr(dir: &Path, name: &str, cn: &str, keyopts: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = sh(
        dir,
        &format!(
            "openssl req -new {keyopts} -nodes -keyout {name}.key -subj /CN={cn} {extra} -outform DER -out {name}.der \
             && base64 -w0 {name}.der > {name}.b64"
        ),
    );
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(format!("{name}.b64"))
}

/// POST a CSR to the EST endpoint `op` with curl; returns (HTTP status, body). A failed TLS
/// handshake gives status 0.
pub fn curl_post(s: &Server, op: &str, csr: &Path, auth: &[&str]) -> (u16, String) {
    let url = format!("https://127.0.0.1:{}/.well-known/est/{op}", s.admin_port);
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(s.data.join("ca/root.crt"))
        .args(auth)
        .args(["-H", "Content-Type: application/pkcs10", "--data-binary"])
        .arg(format!("@{}", csr.display()))
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Turn an EST reply (base64 PKCS#7) into a PEM certificate file with openssl.
pub fn p7_to_pem(dir: &Path, body: &str, name: &str) -> PathBuf {
    std::fs::write(dir.join(format!("{name}.p7.b64")), body).unwrap();
    let out = sh(
        dir,
        &format!(
            "base64 -d {name}.p7.b64 | openssl pkcs7 -inform DER -print_certs -out {name}.crt"
        ),
    );
    assert!(
        out.status.success(),
        "openssl pkcs7: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(format!("{name}.crt"))
}

/// A device enrolled over EST: its key DIR/ID.key, certificate `crt`, and the root CA copied
/// to DIR/ca.crt.
pub fn device_files(s: &Server, dir: &Path, id: &str, crt: &Path) -> Device {
    std::fs::copy(s.data.join("ca/root.crt"), dir.join("ca.crt")).unwrap();
    Device::from_files(
        id,
        dir,
        crt,
        dir.join(format!("{id}.key")),
        dir.join("ca.crt"),
    )
}

/// `tollgate device token ID EXTRA...`: the token, alone on stdout.
pub fn token(s: &Server, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["device", "token", id];
    args.extend_from_slice(extra);
    let out = s.cli(&args);
    assert!(
        out.status.success(),
        "device token {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap();
    assert_eq!(t.trim().len(), 64, "the token alone on stdout: {t:?}");
    t.trim().to_owned()
}

/// A supplier's manufacturing CA, made with openssl like a factory would: DIR/NAME-ca.crt and
/// DIR/NAME-ca.key.
pub fn supplier_ca(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = sh(
        dir,
        &format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}-ca.key -out {name}-ca.crt -days 30 \
               -subj '/O={name}/CN={name} Manufacturing CA' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(format!("{name}-ca.crt"))
}

/// A bootstrap (IDevID) certificate from supplier `ca` (made by [`supplier_ca`]) for the
/// hardware serial `serial`, with `san` as its subjectAltName extension value (or none):
/// DIR/STEM.crt and DIR/STEM.key. Returns the curl arguments that present it.
pub fn bootstrap_cert(dir: &Path, ca: &str, stem: &str, serial: &str, san: &str) -> Vec<String> {
    let ext = if san.is_empty() {
        String::new()
    } else {
        format!("\\nsubjectAltName={san}")
    };
    let out = sh(
        dir,
        &format!(
            "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {stem}.key -out {stem}.csr \
               -subj '/O={ca}/OU=Scanner-X2/serialNumber={serial}/CN=scanner' \
             && openssl x509 -req -in {stem}.csr -CA {ca}-ca.crt -CAkey {ca}-ca.key -CAcreateserial -out {stem}.crt -days 30 \
               -extfile <(printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth{ext}')"
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    vec![
        "--cert".into(),
        dir.join(format!("{stem}.crt")).display().to_string(),
        "--key".into(),
        dir.join(format!("{stem}.key")).display().to_string(),
    ]
}

/// `tollgate supplier add NAME --ca CA EXTRA...`, then wait until the control listener's TLS
/// trusts the supplier: a handshake with `boot` (curl arguments presenting one of its bootstrap
/// certificates) completes (curl reports an HTTP status, whatever it is).
pub fn add_supplier(s: &Server, name: &str, ca: &Path, extra: &[&str], boot: &[String]) {
    let mut args = vec!["supplier", "add", name, "--ca", ca.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = s.cli(&args);
    assert!(
        out.status.success(),
        "supplier add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(s.data.join("ca/root.crt"))
            .args(boot)
            .arg(format!(
                "https://127.0.0.1:{}/.well-known/est/cacerts",
                s.admin_port
            ))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if code != "000" && !code.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the control listener did not come to trust supplier {name}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of `s` that are not empty.
pub fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.is_empty()).collect()
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

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// A field of the server's /proc/PID/status (`"VmRSS:"`, `"VmHWM:"`), KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
    }
}
