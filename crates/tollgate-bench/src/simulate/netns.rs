//! Link attacks: devices run as a child process (`tollgate-bench simulate-device`) in a network
//! namespace behind a veth pair (host 10.201.<k>.1/30, namespace .2), dialling the server on
//! 10.201.<k>.1 with TLS server name `localhost`. At onset the link is impaired: nftables in the
//! namespace drops 10 % of packets both ways (loss), or a 1 Mbit/s tbf queue with 400 ms of
//! latency is filled by a bulk TCP sender (delay). The devices subscribe to their own telemetry
//! so the broker sends them data and its retransmission and RTT figures move. A [`Link`]
//! removes its namespace, veth and children when dropped (errors and Ctrl-C included).
#![allow(clippy::disallowed_methods)] // short synchronous `ip`/`nft`/`tc` commands

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_mqtt::Protocol;

use super::attacks::{Kind, Planned};
use super::fleet::{Behaviour, Device, Fleet};
use crate::client;

/// Devices of a cohort link attack (more than half of an online cohort must degrade).
const COHORT_DEVICES: usize = 4;
/// Most link attacks in one run (one /30 and namespace each).
const MAX_LINKS: usize = 200;

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether link attacks can run here: root, `ip netns`, `nft` and `tc`.
pub fn available() -> std::result::Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    if uid.as_deref() != Some("0") {
        return Err("not running as root".into());
    }
    if !ok("ip", &["netns", "list"]) {
        return Err("`ip netns` unavailable".into());
    }
    if !ok("nft", &["--version"]) {
        return Err("`nft` unavailable".into());
    }
    if !ok("tc", &["-V"]) {
        return Err("`tc` unavailable".into());
    }
    Ok(())
}

/// The namespace devices of one link attack.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub kind: Kind,
    pub rep: usize,
    /// 1-based: the namespace `tgsim<k>` and subnet 10.201.<k>.0/30.
    pub k: usize,
    pub devices: Vec<(String, Vec<String>)>,
}

/// One namespace per planned link attack.
pub fn plan(plan: &[Planned]) -> Vec<LinkSpec> {
    plan.iter()
        .filter(|p| p.kind.needs_netns())
        .take(MAX_LINKS)
        .enumerate()
        .map(|(i, p)| {
            let k = i + 1;
            let devices = if p.kind == Kind::CohortLinkLoss {
                (0..COHORT_DEVICES)
                    .map(|j| {
                        (
                            format!("sim-site{k}-{j}"),
                            vec!["model-b".to_string(), format!("site-{k}")],
                        )
                    })
                    .collect()
            } else {
                vec![(format!("sim-link{k}"), vec!["model-a".to_string()])]
            };
            LinkSpec {
                kind: p.kind,
                rep: p.rep,
                k,
                devices,
            }
        })
        .collect()
}

/// A running namespace with its devices; cleaned up on drop.
pub struct Link {
    spec: LinkSpec,
    ns: String,
    host_if: String,
    ns_if: String,
    children: Vec<Child>,
    me: PathBuf,
    sink: Option<tokio::task::JoinHandle<()>>,
}

impl Link {
    /// Create the namespace and veth pair and start its devices.
    pub fn start(
        spec: &LinkSpec,
        me: &Path,
        port: u16,
        certs: &Path,
        period_ms: u64,
    ) -> Result<Link> {
        let k = spec.k;
        let ns = format!("tgsim{k}");
        let host_if = format!("tgsimh{k}");
        let ns_if = format!("tgsimn{k}");
        // Leftovers of an earlier run that did not clean up.
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let mut link = Link {
            spec: spec.clone(),
            ns: ns.clone(),
            host_if: host_if.clone(),
            ns_if: ns_if.clone(),
            children: Vec::new(),
            me: me.to_path_buf(),
            sink: None,
        };
        let host_ip = format!("10.201.{k}.1");
        let ns_ip = format!("10.201.{k}.2");
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        run(Command::new("ip").args([
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]))?;
        run(Command::new("ip").args(["link", "set", &ns_if, "netns", &ns]))?;
        run(Command::new("ip").args(["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]))?;
        run(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
        let nsx = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns]).args(args);
            c
        };
        run(&mut nsx(&[
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]))?;
        run(&mut nsx(&["ip", "link", "set", &ns_if, "up"]))?;
        run(&mut nsx(&["ip", "link", "set", "lo", "up"]))?;
        let mut cmd = nsx(&[]);
        cmd.arg(me)
            .arg("simulate-device")
            .args(["--addr", &format!("{host_ip}:{port}")])
            .args(["--local", &ns_ip])
            .args(["--server-name", "localhost"])
            .arg("--certs")
            .arg(certs)
            .args(["--period-ms", &period_ms.to_string()]);
        for (id, _) in &spec.devices {
            cmd.args(["--id", id]);
        }
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting simulate-device in the namespace")?;
        link.children.push(child);
        Ok(link)
    }

    pub fn kind(&self) -> Kind {
        self.spec.kind
    }

    pub fn rep(&self) -> usize {
        self.spec.rep
    }

    pub fn device_ids(&self) -> Vec<String> {
        self.spec.devices.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The cohort a cohort attack degrades (as alerts name it).
    pub fn cohort(&self) -> String {
        format!("group:site-{}", self.spec.k)
    }

    /// Impair the link from now on (until the namespace is removed).
    pub async fn impair(&mut self) -> Result<()> {
        match self.spec.kind {
            Kind::LinkLoss | Kind::CohortLinkLoss => {
                let script = "table inet sim {
  chain in { type filter hook input priority 0; policy accept; numgen random mod 100 < 10 drop; }
  chain out { type filter hook output priority 0; policy accept; numgen random mod 100 < 10 drop; }
}
";
                let mut child = Command::new("ip")
                    .args(["netns", "exec", &self.ns, "nft", "-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .context("running nft")?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(script.as_bytes())?;
                }
                let out = child.wait_with_output()?;
                if !out.status.success() {
                    bail!(
                        "nft failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
            Kind::LinkDelay => {
                run(Command::new("ip").args([
                    "netns",
                    "exec",
                    &self.ns,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    &self.ns_if,
                    "root",
                    "tbf",
                    "rate",
                    "1mbit",
                    "burst",
                    "1540",
                    "latency",
                    "400ms",
                ]))?;
                // A bulk TCP flow from the namespace to a sink here fills the queue; the
                // devices' packets (and their ACKs of the broker's data) wait behind it.
                let host_ip = Ipv4Addr::new(10, 201, self.spec.k as u8, 1);
                let listener =
                    tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(host_ip), 0))
                        .await
                        .context("binding the bulk sink")?;
                let sink_addr = listener.local_addr()?;
                self.sink = Some(tokio::spawn(async move {
                    while let Ok((mut s, _)) = listener.accept().await {
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 64 * 1024];
                            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                        });
                    }
                }));
                let bulk = Command::new("ip")
                    .args(["netns", "exec", &self.ns])
                    .arg(&self.me)
                    .arg("simulate-device")
                    .args(["--bulk-to", &sink_addr.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting the bulk sender")?;
                self.children.push(bulk);
            }
            other => bail!("{} is not a link attack", other.name()),
        }
        Ok(())
    }

    pub fn stop(self) {}
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(s) = self.sink.take() {
            s.abort();
        }
        for mut c in self.children.drain(..) {
            drop(c.stdin.take()); // the child exits when its stdin closes
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .output();
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes started by `ip netns exec` were the children themselves; the namespace
        // and the veth pair (both ends) go with `netns del`.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Arguments of the hidden `simulate-device` subcommand: steady devices (until stdin closes),
/// or a bulk TCP sender.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// The server's MQTT address.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Local address to bind.
    #[arg(long)]
    local: Option<IpAddr>,
    /// TLS server name to verify.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Directory of `<id>.pem` and `ca.crt`.
    #[arg(long)]
    certs: Option<PathBuf>,
    /// Device ids (at most 64).
    #[arg(long = "id")]
    ids: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    period_ms: u64,
    /// Instead: send bulk data to this TCP address until stdin closes (at most an hour).
    #[arg(long)]
    bulk_to: Option<SocketAddr>,
}

pub fn device_main(a: DeviceArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // The parent holds our stdin: when it closes (the parent stopped us, or died), stop.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        let stdin_closed = async {
            let _ = rx.await;
        };
        if let Some(to) = a.bulk_to {
            let bulk = async {
                let mut s = tokio::net::TcpStream::connect(to)
                    .await
                    .with_context(|| format!("bulk connect {to}"))?;
                let buf = vec![0x42u8; 64 * 1024];
                loop {
                    s.write_all(&buf).await?;
                }
                #[allow(unreachable_code)]
                Ok::<(), anyhow::Error>(())
            };
            tokio::select! {
                r = bulk => r?,
                _ = stdin_closed => {}
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
            return Ok(ExitCode::SUCCESS);
        }
        let addr = a.addr.context("--addr is required")?;
        let certs = a.certs.context("--certs is required")?;
        if a.ids.is_empty() || a.ids.len() > 64 {
            bail!("1 to 64 --id");
        }
        let ca = std::fs::read_to_string(certs.join("ca.crt"))
            .with_context(|| format!("reading {}/ca.crt", certs.display()))?;
        let roots = super::root_store(&ca)?;
        let mut devices = Vec::new();
        for id in &a.ids {
            let pem = std::fs::read_to_string(certs.join(format!("{id}.pem")))
                .with_context(|| format!("reading the certificate of {id}"))?;
            devices.push(Device {
                id: id.clone(),
                tls: client::device_tls(id, &pem, &roots, true, false)?,
                protocol: Protocol::V5,
            });
        }
        let mut b = Behaviour::new(addr, Duration::from_millis(a.period_ms.clamp(50, 600_000)));
        b.local = a.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        b.server_name = Some(a.server_name.clone());
        b.echo = true;
        b.noise_one_in = 0;
        b.stagger = Duration::from_secs(1);
        let fleet = Fleet::start(devices, &b, 7);
        stdin_closed.await;
        fleet.stop(Duration::from_secs(2)).await;
        Ok(ExitCode::SUCCESS)
    })
}
