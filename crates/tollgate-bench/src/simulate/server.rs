//! The server under test: a fresh data directory (init, configuration, policy, detection rules,
//! devices enrolled through Tollgate's own PKI) and a `tollgate serve` child stopped on drop; or
//! a running server's data directory to attach to.
#![allow(clippy::disallowed_methods)] // process orchestration before and after the fleet runs

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Longest wait for `run/addresses.json`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    child: Option<Child>,
    pub data: PathBuf,
    /// Where devices dial (loopback even when the listener is on 0.0.0.0).
    pub mqtt: SocketAddr,
    pub pid: u32,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..50 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The configuration the simulator runs with: 1-second samples, prefix client ids (the
/// concurrent clone connects as `<id>:clone`), metrics on a free port (set here rather than
/// with `--metrics-listen`, which older builds lack).
pub const TOLLGATE_TOML: &str = "[mqtt]
client_id = \"prefix\"

[metrics]
listen = \"127.0.0.1:0\"

[detection]
sample_interval_ms = 1000
";

/// Devices may publish their own telemetry and subscribe to their own commands (and read back
/// their own telemetry), nothing else: so probing gets denials.
pub const POLICY_TOML: &str = r#"version = 1
# tollgate-bench simulate: each device its own telemetry and command topics, nothing else.
[[allow]]
id = "sim-devices"
who = "*"
publish = ["telemetry/${device.id}/#"]
subscribe = ["commands/${device.id}/#", "telemetry/${device.id}/#"]
"#;

/// detection.toml for a run compressed `60 / bucket` times: statistics buckets of `bucket`
/// seconds, learning scaled, every mitigation `notify` (the simulator measures detection;
/// a quarantine would change the attacked device's later behaviour).
pub fn detection_toml(bucket_s: u64) -> String {
    let learning = (600 * bucket_s / 60).max(bucket_s);
    let mut s = format!(
        "# Written by tollgate-bench simulate: {bucket_s}-second buckets ({}x time compression).
[engine]
bucket = \"{bucket_s}s\"
learning_buckets = 5

[detectors.new_source_address]
learning = \"{learning}s\"    # 10 minutes, compressed
clear_after = \"{learning}s\"
mitigation = \"notify\"
",
        60 / bucket_s.max(1)
    );
    for d in [
        "cloned_certificate",
        "authorization_probing",
        "topic_scanning",
        "traffic_spike",
        "connection_flapping",
        "link_degradation",
        "inactive",
    ] {
        s.push_str(&format!("\n[detectors.{d}]\nmitigation = \"notify\"\n"));
    }
    s
}

/// Write the simulator's policy and detection rules into a data directory.
pub fn write_rules(data: &Path, bucket_s: u64) -> Result<()> {
    std::fs::write(data.join("policy.toml"), POLICY_TOML)
        .with_context(|| format!("writing {}/policy.toml", data.display()))?;
    std::fs::write(data.join("detection.toml"), detection_toml(bucket_s))
        .with_context(|| format!("writing {}/detection.toml", data.display()))?;
    Ok(())
}

/// `tollgate init` a fresh data directory (removing an earlier one) and write the simulator's
/// configuration.
pub fn init(bin: &Path, data: &Path, bucket_s: u64) -> Result<()> {
    if data.exists() {
        std::fs::remove_dir_all(data).with_context(|| format!("removing {}", data.display()))?;
    }
    let out = Command::new(bin)
        .args(["init", "--data"])
        .arg(data)
        .output()
        .with_context(|| format!("running {} init", bin.display()))?;
    if !out.status.success() {
        bail!(
            "tollgate init failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::write(data.join("tollgate.toml"), TOLLGATE_TOML)?;
    write_rules(data, bucket_s)
}

/// Start `tollgate serve` on the data directory and wait for `run/addresses.json`.
pub async fn start(bin: &Path, data: &Path, mqtt_listen: &str, log: &Path) -> Result<Server> {
    let ready = data.join("run/addresses.json");
    let _ = std::fs::remove_file(&ready);
    let logf = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(bin)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--mqtt-listen", mqtt_listen])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .with_context(|| format!("starting {} serve", bin.display()))?;
    let mut server = Server {
        pid: child.id(),
        child: Some(child),
        data: data.to_path_buf(),
        mqtt: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
    };
    let until = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        if ready.exists() {
            if let Ok((mqtt, _)) = addresses(data) {
                server.mqtt = mqtt;
                return Ok(server);
            }
        }
        if let Some(c) = server.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                bail!("tollgate serve exited ({st}); see {}", log.display());
            }
        }
        if std::time::Instant::now() > until {
            bail!(
                "tollgate serve not ready after {} s; see {}",
                READY_TIMEOUT.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Attach to a running server: its MQTT address from `run/addresses.json`.
pub fn attach(data: &Path) -> Result<Server> {
    let (mqtt, pid) = addresses(data)?;
    Ok(Server {
        child: None,
        data: data.to_path_buf(),
        mqtt,
        pid,
    })
}

/// (MQTT address to dial, server pid) from `run/addresses.json`.
fn addresses(data: &Path) -> Result<(SocketAddr, u32)> {
    let path = data.join("run/addresses.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mqtt: SocketAddr = v["mqtt"]
        .as_str()
        .context("no \"mqtt\" address in addresses.json")?
        .parse()
        .context("the \"mqtt\" address in addresses.json")?;
    let mqtt = if mqtt.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), mqtt.port())
    } else {
        mqtt
    };
    let pid = v["pid"].as_u64().unwrap_or(0) as u32;
    Ok((mqtt, pid))
}

/// Enroll devices through a running server's admin API (`tollgate device add`), writing
/// `OUT/<id>.pem` (certificate then key) and `OUT/ca.crt`; devices with a file are kept.
pub fn enroll_online(
    bin: &Path,
    data: &Path,
    devices: &[(String, Vec<String>)],
    out: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    for (id, groups) in devices {
        let pem = out.join(format!("{id}.pem"));
        if pem.exists() {
            continue;
        }
        let mut cmd = Command::new(bin);
        cmd.args(["device", "add", id]);
        for g in groups {
            cmd.args(["--group", g]);
        }
        let o = cmd
            .arg("--out")
            .arg(out)
            .arg("--data")
            .arg(data)
            .output()
            .with_context(|| format!("tollgate device add {id}"))?;
        if !o.status.success() {
            bail!(
                "tollgate device add {id}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let crt = std::fs::read_to_string(out.join(format!("{id}.crt")))?;
        let key = std::fs::read_to_string(out.join(format!("{id}.key")))?;
        std::fs::write(&pem, format!("{crt}{key}"))?;
    }
    Ok(())
}
