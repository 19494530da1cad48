//! Starting and stopping the brokers under test with equivalent settings: TLS 1.2+ with client
#![allow(clippy::disallowed_methods)] // synchronous process orchestration, no async runtime here
//! certificates required, no persistence, TCP_NODELAY, each pinned to CPU 0.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tollgate,
    /// Another Tollgate binary (`--baseline`), e.g. the build before a change, run side by side.
    Baseline,
    Mosquitto,
    Rumqttd,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "tollgate" => Kind::Tollgate,
            "tollgate-baseline" => Kind::Baseline,
            "mosquitto" => Kind::Mosquitto,
            "rumqttd" => Kind::Rumqttd,
            other => {
                bail!("unknown broker {other:?} (tollgate, tollgate-baseline, mosquitto, rumqttd)")
            }
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tollgate => "tollgate",
            Kind::Baseline => "tollgate-baseline",
            Kind::Mosquitto => "mosquitto",
            Kind::Rumqttd => "rumqttd",
        }
    }
}

/// Files every broker uses: server certificate chain and key, and the CA bundle for clients.
pub struct Tls {
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
    /// Issuing CA + root: what client certificates chain to.
    pub client_ca: PathBuf,
}

pub struct Running {
    pub kind: Kind,
    pub started: Instant,
    pub child: Child,
    pub addr: SocketAddr,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        log_stop(self.kind, self.started);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pinned(cmd: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c").arg(format!(
        "ulimit -n 1048576 2>/dev/null || ulimit -n 262144 2>/dev/null || ulimit -n $(ulimit -Hn); exec taskset -c 0 {cmd}"
    ));
    c
}

fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "broker exited with {status}; log {}:\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "broker did not listen on {addr} within 20 s (log {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub struct Setup {
    pub work: PathBuf,
    pub tls: Tls,
    pub tollgate_bin: PathBuf,
    pub tollgate_data: PathBuf,
    /// The baseline binary and its own copy of the data directory.
    pub baseline: Option<(PathBuf, PathBuf)>,
    pub rumqttd_bin: Option<PathBuf>,
}

/// Start `kind` on `port`. With `persistent`, Mosquitto gets `persistence true` (its default
/// autosave: it writes its state every 30 minutes and on exit, not per message) and Tollgate's
/// durable store (on by default) starts empty; rumqttd has no disk persistence.
pub fn start(kind: Kind, setup: &Setup, port: u16, persistent: bool) -> Result<Running> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let logs = setup.work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{}-{port}.log", kind.name()));
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = match kind {
        Kind::Tollgate | Kind::Baseline => {
            let (bin, data) = match (kind, &setup.baseline) {
                (Kind::Baseline, Some((bin, data))) => (bin, data),
                (Kind::Baseline, None) => bail!("tollgate-baseline needs --baseline BIN"),
                _ => (&setup.tollgate_bin, &setup.tollgate_data),
            };
            for f in ["sessions.db", "sessions.db-wal", "sessions.db-shm"] {
                let _ = std::fs::remove_file(data.join(f));
            }
            // The message journal beside it (since the append-only journal).
            let _ = std::fs::remove_dir_all(data.join("sessions.db.journal"));
            let mut c = pinned(&format!(
                "{} serve --data {} --mqtt-listen {addr} --admin-listen 127.0.0.1:0",
                bin.display(),
                data.display()
            ));
            c.env("RUST_LOG", "warn");
            c
        }
        Kind::Mosquitto => {
            let conf = setup.work.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\n\
                     cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                     require_certificate true\nuse_identity_as_username true\n\
                     tls_version tlsv1.2\n\
                     persistence {persist}\npersistence_location {persist_dir}/\n\
                     allow_anonymous false\nset_tcp_nodelay true\nuser root\n\
                     max_queued_messages 10000\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                    ca = setup.tls.client_ca.display(),
                    cert = setup.tls.server_chain.display(),
                    key = setup.tls.server_key.display(),
                    persist = persistent,
                    persist_dir = {
                        let d = setup.work.join("mosquitto-persist");
                        let _ = std::fs::remove_dir_all(&d);
                        std::fs::create_dir_all(&d)?;
                        d.display().to_string()
                    },
                ),
            )?;
            pinned(&format!("mosquitto -c {}", conf.display()))
        }
        Kind::Rumqttd => {
            let Some(bin) = &setup.rumqttd_bin else {
                bail!("rumqttd is not installed")
            };
            let conf = setup.work.join("rumqttd.toml");
            std::fs::write(
                &conf,
                format!(
                    r#"id = 0
[router]
id = 0
max_connections = 200000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{addr}"
next_connection_delay_ms = 0
    [v4.1.tls]
    capath = "{ca}"
    certpath = "{cert}"
    keypath = "{key}"
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 1024
    dynamic_filters = true
"#,
                    ca = setup.tls.client_ca.display(),
                    cert = setup.tls.server_chain.display(),
                    key = setup.tls.server_key.display(),
                ),
            )?;
            pinned(&format!("{} -c {}", bin.display(), conf.display()))
        }
    };
    let mut child = cmd
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", kind.name()))?;
    wait_ready(&mut child, addr, &log)?;
    // Let the broker finish start-up work before measuring its memory.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Running {
        kind,
        child,
        addr,
        started: Instant::now(),
    })
}

/// With TOLLGATE_BENCH_VERBOSE set, say how long each broker ran.
fn log_stop(kind: Kind, started: Instant) {
    if std::env::var_os("TOLLGATE_BENCH_VERBOSE").is_some() {
        eprintln!(
            "stopping {} after {:.1}s",
            kind.name(),
            started.elapsed().as_secs_f64()
        );
    }
}
