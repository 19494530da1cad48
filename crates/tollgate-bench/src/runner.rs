//! The side-by-side runner: one CA and certificate set, each broker started fresh for each
//! scenario on CPU 0, the generator on CPU 1, brokers alternated and runs repeated; medians with
//! min–max written to `bench/results/<date>.md` plus the raw JSON.
#![allow(clippy::disallowed_methods)] // synchronous process orchestration, no async runtime here

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::brokers::{self, Kind, Setup, Tls};
use crate::report::{self, Sample};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Short runs (a smoke test that every scenario completes): under two minutes.
    #[arg(long)]
    pub quick: bool,
    /// Brokers to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tollgate,mosquitto,rumqttd"
    )]
    pub brokers: Vec<String>,
    /// Repetitions of every scenario (default 3, 1 with --quick).
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Only the scenarios whose label contains one of these words.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Idle connections for the connections scenario (default 10000, or what the hard open-file
    /// limit holds at one descriptor each; 300 with --quick).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Measured seconds per scenario (default 5, 1.5 with --quick).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Working directory for certificates, configurations and logs.
    #[arg(long, default_value = "target/bench-work")]
    pub work: PathBuf,
    /// Where results go (default bench/results; with --quick, WORK/results).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The tollgate binary (default: target/release/tollgate).
    #[arg(long, default_value = "target/release/tollgate")]
    pub tollgate: PathBuf,
    /// Exit non-zero if any scenario reported an error.
    #[arg(long)]
    pub check: bool,
    /// A second Tollgate binary (e.g. built from the commit before a change) to run side by
    /// side as broker `tollgate-baseline`; added to --brokers automatically.
    #[arg(long, value_name = "BIN")]
    pub baseline: Option<PathBuf>,
    /// Add the scale scenario with this many idle MQTT 5 connections from several 127.0.0.x
    /// addresses (e.g. 100000), with revocation timing on Tollgate (one device, then
    /// --revoke-batch at once). Its devices share one key pair (a distinct certificate each),
    /// registered in bulk. Off unless given.
    #[arg(long, value_name = "N")]
    pub scale: Option<usize>,
    /// Devices revoked at once in the scale scenario.
    #[arg(long, default_value_t = 1000)]
    pub revoke_batch: usize,
}

struct Spec {
    label: String,
    args: Vec<String>,
}

/// The device id prefix of the scale scenario's devices.
const SCALE_PREFIX: &str = "bench-x";

fn specs(connections: usize, scale: Option<usize>, revoke_batch: usize, settle: f64) -> Vec<Spec> {
    let s = |label: &str, args: &[&str]| Spec {
        label: label.to_owned(),
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    let conns = connections.to_string();
    let mut v = vec![
        s(
            "fan-in q0 8→1",
            &["--scenario", "fan-in", "--qos", "0", "--clients", "8"],
        ),
        s(
            "fan-in q1 8→1",
            &["--scenario", "fan-in", "--qos", "1", "--clients", "8"],
        ),
        s(
            "fan-in q0 8×5k/s",
            &[
                "--scenario",
                "fan-in",
                "--qos",
                "0",
                "--clients",
                "8",
                "--rate",
                "5000",
            ],
        ),
        s(
            "fan-out q0 1→16",
            &["--scenario", "fan-out", "--qos", "0", "--clients", "16"],
        ),
        s(
            "topic-aliases q0 1→16 v5",
            &[
                "--scenario",
                "topic-aliases",
                "--qos",
                "0",
                "--clients",
                "16",
                "--rate",
                "2000",
            ],
        ),
        s(
            "pairs q1 ×8",
            &["--scenario", "pairs", "--qos", "1", "--clients", "8"],
        ),
        s(
            "pairs q1 ×8 persistent",
            &[
                "--scenario",
                "pairs",
                "--qos",
                "1",
                "--clients",
                "8",
                "--persistent",
            ],
        ),
        s(
            "latency q0 8×1k/s",
            &[
                "--scenario",
                "latency",
                "--qos",
                "0",
                "--clients",
                "8",
                "--rate",
                "1000",
            ],
        ),
        Spec {
            label: "connections idle".into(),
            args: vec![
                "--scenario".into(),
                "connections".into(),
                "--connections".into(),
                conns,
                "--concurrency".into(),
                "32".into(),
                "--settle".into(),
                settle.to_string(),
            ],
        },
        s(
            "handshakes tls1.3 full",
            &[
                "--scenario",
                "handshakes",
                "--handshake",
                "tls13",
                "--concurrency",
                "8",
            ],
        ),
        s(
            "handshakes tls1.2 full",
            &[
                "--scenario",
                "handshakes",
                "--handshake",
                "tls12",
                "--concurrency",
                "8",
            ],
        ),
        s(
            "handshakes tls1.3 resumed",
            &[
                "--scenario",
                "handshakes",
                "--handshake",
                "tls13-resumed",
                "--concurrency",
                "8",
            ],
        ),
        s(
            "handshakes tls1.2 resumed",
            &[
                "--scenario",
                "handshakes",
                "--handshake",
                "tls12-resumed",
                "--concurrency",
                "8",
            ],
        ),
    ];
    if let Some(n) = scale {
        v.push(Spec {
            label: format!("scale {n} connections + revocation"),
            args: vec![
                "--scenario".into(),
                "scale".into(),
                "--connections".into(),
                n.to_string(),
                "--concurrency".into(),
                "64".into(),
                "--prefix".into(),
                SCALE_PREFIX.into(),
                "--revoke-batch".into(),
                revoke_batch.to_string(),
            ],
        });
    }
    v
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let mut kinds: Vec<Kind> = a
        .brokers
        .iter()
        .map(|b| Kind::parse(b))
        .collect::<Result<_>>()?;
    if a.baseline.is_some() && !kinds.contains(&Kind::Baseline) {
        kinds.push(Kind::Baseline);
    }
    let repeat = a.repeat.unwrap_or(if a.quick { 1 } else { 3 });
    let connections = a.connections.unwrap_or_else(|| {
        if a.quick {
            300
        } else {
            fitting_connections(10_000)
        }
    });
    // The broker holds a descriptor per connection: beyond the hard open-file limit the
    // scale scenario would measure refusals (a container may cap it below what 100,000 need).
    let scale = a.scale.map(fitting_connections);
    let duration = a.duration.unwrap_or(if a.quick { 1.5 } else { 5.0 });
    let warmup = if a.quick { 0.5 } else { 1.0 };
    let work = absolute(&a.work)?;
    std::fs::create_dir_all(&work)?;
    let tollgate_bin = absolute(&a.tollgate)?;
    if kinds.contains(&Kind::Tollgate) && !tollgate_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p tollgate`",
            tollgate_bin.display()
        );
    }
    ensure_tools(&kinds)?;
    let rumqttd_bin = if kinds.contains(&Kind::Rumqttd) {
        Some(ensure_rumqttd(&work)?)
    } else {
        None
    };
    let mut setup = prepare(&work, &tollgate_bin, connections.max(64), rumqttd_bin)?;
    if let Some(n) = scale {
        prepare_scale(&setup, n)?;
    }
    if let Some(bin) = &a.baseline {
        setup.baseline = Some((absolute(bin)?, baseline_data(&setup.tollgate_data, &work)?));
    }
    let me = std::env::current_exe()?;

    let mut samples: Vec<Sample> = Vec::new();
    let specs: Vec<Spec> = specs(
        connections,
        scale,
        a.revoke_batch,
        if a.quick { 2.0 } else { 15.0 },
    )
    .into_iter()
    .filter(|s| a.only.is_empty() || a.only.iter().any(|o| s.label.contains(o.as_str())))
    .collect();
    let mut port = 28_000u16;
    for rep in 0..repeat {
        for spec in &specs {
            // Alternate the order of brokers between repetitions.
            let mut order = kinds.clone();
            if rep % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                port = if port > 60_000 { 28_000 } else { port + 1 };
                eprint!(
                    "[{}/{}] {:<28} {:<10} ",
                    rep + 1,
                    repeat,
                    spec.label,
                    kind.name()
                );
                let persistent = spec.args.iter().any(|a| a == "--persistent");
                let scale = spec.args.iter().any(|a| a == "scale");
                if scale && kind == Kind::Tollgate {
                    // The previous repetition revoked some: bring them back first.
                    reinstate_revoked(&setup, SCALE_PREFIX)?;
                }
                let broker = brokers::start(kind, &setup, port, persistent)?;
                let mut cmd = Command::new("bash");
                let mut line = format!(
                    "ulimit -n 1048576 2>/dev/null || ulimit -n 262144 2>/dev/null || ulimit -n $(ulimit -Hn); exec taskset -c 1 {} load --addr {} --certs {} --broker-pid {} --duration {duration} --warmup {warmup}",
                    me.display(),
                    broker.addr,
                    setup.work.join("certs").display(),
                    broker.pid(),
                );
                for arg in &spec.args {
                    line.push(' ');
                    line.push_str(arg);
                }
                if scale && kind == Kind::Tollgate {
                    // Revocation timing, through the CLI an operator would use.
                    line.push_str(&format!(
                        " --revoke-with {} --data {}",
                        setup.tollgate_bin.display(),
                        setup.tollgate_data.display()
                    ));
                }
                cmd.arg("-c").arg(line);
                let out = cmd.output().context("running the load generator")?;
                broker.stop();
                let outcome: serde_json::Value = if out.status.success() {
                    serde_json::from_slice(&out.stdout).context("parsing the generator's output")?
                } else {
                    serde_json::json!({"errors": 1, "first_error": String::from_utf8_lossy(&out.stderr).trim().to_string(), "throughput": 0.0})
                };
                eprintln!("{}", report::one_line(&outcome));
                samples.push(Sample {
                    label: spec.label.clone(),
                    broker: kind.name().to_string(),
                    outcome,
                });
            }
        }
    }

    let out_dir = match &a.out {
        Some(o) => o.clone(),
        None if a.quick => work.join("results"),
        None => PathBuf::from("bench/results"),
    };
    std::fs::create_dir_all(&out_dir)?;
    let date = time::OffsetDateTime::now_utc().date().to_string();
    let md = report::markdown(&samples, &kinds, repeat, duration, connections);
    let md_path = out_dir.join(format!("{date}{}.md", if a.quick { "-quick" } else { "" }));
    std::fs::write(&md_path, &md)?;
    std::fs::write(
        md_path.with_extension("json"),
        serde_json::to_string_pretty(&samples)?,
    )?;
    println!("{md}");
    eprintln!("wrote {}", md_path.display());
    let errors: u64 = samples
        .iter()
        .map(|s| s.outcome["errors"].as_u64().unwrap_or(1))
        .sum();
    if a.check && errors > 0 {
        eprintln!("{errors} error(s) reported");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `wanted` idle connections, or fewer if the hard open-file limit cannot hold them: Tollgate
/// holds one descriptor per MQTT connection (its `TCP_INFO` probe reads the socket's own) and sizes its
/// connection budget from the limit, so beyond it the scenario would measure refusals.
fn fitting_connections(wanted: usize) -> usize {
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<usize>().ok());
    match hard {
        Some(h) if h.saturating_sub(400) < wanted => {
            let fit = h.saturating_sub(400) / 100 * 100;
            eprintln!(
                "connections: {fit}, not {wanted} (the hard open-file limit is {h}: raise it to hold more; pass --connections or --scale to choose)"
            );
            fit.max(100)
        }
        _ => wanted,
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

fn ensure_tools(kinds: &[Kind]) -> Result<()> {
    let mut missing = Vec::new();
    if !have("taskset") {
        missing.push("util-linux");
    }
    if kinds.contains(&Kind::Mosquitto) && !have("mosquitto") {
        missing.push("mosquitto");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {}", missing.join(" "));
    let sudo = if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
    {
        ""
    } else {
        "sudo "
    };
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{sudo}apt-get update -qq && DEBIAN_FRONTEND=noninteractive {sudo}apt-get install -y -qq {}", missing.join(" ")))
        .status()?;
    if !status.success() {
        bail!("could not install {}", missing.join(" "));
    }
    Ok(())
}

/// rumqttd with client-certificate verification (it does no client authentication without the
/// `verify-client-cert` feature). Installed without `--locked`: its lock file pins
/// `metrics 0.22.1`, which no longer builds on current Rust; cargo's resolution picks a
/// compatible release that does.
fn ensure_rumqttd(work: &Path) -> Result<PathBuf> {
    let root = work.join("tools");
    let bin = root.join("bin/rumqttd");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("building rumqttd (once) into {}", root.display());
    let status = Command::new("cargo")
        .args([
            "install",
            "rumqttd",
            "--features",
            "verify-client-cert",
            "--root",
        ])
        .arg(&root)
        .status()
        .context("cargo install rumqttd")?;
    if !status.success() {
        bail!("cargo install rumqttd failed");
    }
    Ok(bin)
}

/// One CA and certificate set for every broker: Tollgate's data directory provides the CA; the
/// same server certificate and client CA bundle configure Mosquitto and rumqttd.
fn prepare(
    work: &Path,
    tollgate_bin: &Path,
    connections: usize,
    rumqttd_bin: Option<PathBuf>,
) -> Result<Setup> {
    let data = work.join("tollgate-data");
    let certs = work.join("certs");
    let marker = certs.join(format!("ready-{connections}"));
    if !data.join("ca/issuing.key").exists() {
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_dir_all(&certs);
        let st = Command::new(tollgate_bin)
            .args(["init", "--data"])
            .arg(&data)
            .stderr(std::process::Stdio::null())
            .status()?;
        if !st.success() {
            bail!("tollgate init failed");
        }
    }
    // Benchmark configuration: equivalent limits to the peers (which have no per-source connect
    // rate or handshake limits; the load generator opens every connection from one address).
    std::fs::write(data.join("tollgate.toml"), BENCH_CONFIG)?;
    std::fs::write(
        data.join("policy.toml"),
        r#"version = 1
# Exactly the benchmark's topics.
[[allow]]
id = "bench"
who = "group:bench"
publish = ["bench/${device.id}/t", "bench/pair/${device.id}", "bench/bcast", "plants/#"]
subscribe = ["bench/+/t", "bench/pair/+", "bench/bcast", "plants/#"]
"#,
    )?;
    let tls = Tls {
        server_chain: data.join("server/server.crt"),
        server_key: data.join("server/server.key"),
        client_ca: work.join("client-ca.pem"),
    };
    let issuing_pem = std::fs::read_to_string(data.join("ca/issuing.crt"))?;
    let root_pem = std::fs::read_to_string(data.join("ca/root.crt"))?;
    std::fs::write(&tls.client_ca, format!("{issuing_pem}{root_pem}"))?;
    if !marker.exists() {
        eprintln!("issuing benchmark certificates (1 per simulated device)...");
        std::fs::create_dir_all(&certs)?;
        std::fs::write(certs.join("ca.crt"), &root_pem)?;
        // Certificates come from the control plane itself, exactly as `tollgate device add`
        // makes them (registered devices, recorded certificates).
        let groups = vec!["bench".to_string()];
        let ids = (0..64)
            .map(|i| format!("bench-p{i}"))
            .chain((0..64).map(|i| format!("bench-s{i}")))
            .chain((0..connections).map(|i| format!("bench-c{i}")))
            .map(|id| (id, groups.clone()));
        issue_devices(&data, ids, &certs)?;
        std::fs::write(&marker, "")?;
    }
    Ok(Setup {
        work: work.to_path_buf(),
        tls,
        tollgate_bin: tollgate_bin.to_path_buf(),
        tollgate_data: data,
        baseline: None,
        rumqttd_bin,
    })
}

/// The scale scenario's devices, `bench-x0` … `bench-x{n-1}`: registered in bulk with one
/// shared key pair and a distinct certificate each (issuing 100,000 takes seconds instead of
/// minutes of key generation; acceptable for a benchmark, never for a fleet). Devices already
/// registered with a certificate file are kept.
fn prepare_scale(setup: &Setup, n: usize) -> Result<()> {
    let certs = setup.work.join("certs");
    let marker = certs.join(format!("ready-scale-{n}"));
    if marker.exists() {
        return Ok(());
    }
    let data = &setup.tollgate_data;
    let registry: std::sync::Arc<dyn tollgate_registry::Registry> = std::sync::Arc::new(
        tollgate_registry::SqliteRegistry::open(&data.join("registry.db"))?,
    );
    let (events, _dispatcher) = tollgate_events::EventBus::new(64, 1);
    let control = tollgate_control::Control::open(
        control_config(data, time::Duration::days(365)),
        std::sync::Arc::clone(&registry),
        events,
    )?;
    let existing: std::collections::HashSet<String> =
        registry.devices()?.into_iter().map(|d| d.id).collect();
    let groups = vec!["bench".to_string()];
    let missing: Vec<(String, Vec<String>)> = (0..n)
        .map(|i| format!("{SCALE_PREFIX}{i}"))
        .filter(|id| !existing.contains(id))
        .map(|id| (id, groups.clone()))
        .collect();
    eprintln!(
        "registering {} scale devices in bulk (one shared key, a certificate each)...",
        missing.len()
    );
    let t0 = std::time::Instant::now();
    for chunk in missing.chunks(10_000) {
        let (key_pem, issued) = control
            .add_devices_with_shared_key(chunk, "bench")
            .context("registering the scale scenario's devices")?;
        for d in issued {
            std::fs::write(
                certs.join(format!("{}.pem", d.id)),
                format!("{}{key_pem}", d.cert_pem),
            )?;
        }
    }
    eprintln!("registered in {:.1}s", t0.elapsed().as_secs_f64());
    drop(control);
    reinstate_revoked(setup, SCALE_PREFIX)?;
    std::fs::write(&marker, "")?;
    Ok(())
}

/// Bring back the devices named `<prefix>…` that a scale run revoked (or whose certificate
/// file is missing), each with a new certificate, through the control plane of the data
/// directory (no server running).
fn reinstate_revoked(setup: &Setup, prefix: &str) -> Result<()> {
    let data = &setup.tollgate_data;
    let certs = setup.work.join("certs");
    let registry: std::sync::Arc<dyn tollgate_registry::Registry> = std::sync::Arc::new(
        tollgate_registry::SqliteRegistry::open(&data.join("registry.db"))?,
    );
    let back: Vec<String> = registry
        .devices()?
        .into_iter()
        .filter(|d| d.id.starts_with(prefix))
        .filter(|d| d.revoked_at.is_some() || !certs.join(format!("{}.pem", d.id)).exists())
        .map(|d| d.id)
        .collect();
    if back.is_empty() {
        return Ok(());
    }
    let (events, _dispatcher) = tollgate_events::EventBus::new(64, 1);
    let control = tollgate_control::Control::open(
        control_config(data, time::Duration::days(365)),
        std::sync::Arc::clone(&registry),
        events,
    )?;
    eprintln!("reinstating {} revoked scale devices...", back.len());
    let groups = vec!["bench".to_string()];
    for id in back {
        if registry
            .device(&id)?
            .is_some_and(|d| d.revoked_at.is_none())
        {
            control.revoke_device(&id, "benchmark key file missing", "bench")?;
        }
        let c = control
            .add_device(&id, &groups, true, "bench")
            .with_context(|| format!("reinstating {id}"))?;
        std::fs::write(
            certs.join(format!("{id}.pem")),
            format!("{}{}", c.cert_pem, c.key_pem),
        )?;
    }
    Ok(())
}

/// Tollgate's configuration under benchmark.
const BENCH_CONFIG: &str = "[mqtt]
max_handshakes_per_ip = 100000
max_connections = 200000

[limits]
connect_rate_per_source = 0
max_handshakes = 100000

[metrics]
# Any free port: runs side by side (and other servers on the machine) must not collide.
listen = \"127.0.0.1:0\"
";

/// The baseline build's configuration: the same limits, in keys it knows.
const BASELINE_CONFIG: &str = "[mqtt]
max_handshakes_per_ip = 100000
max_connections = 200000

[metrics]
listen = \"127.0.0.1:0\"
";

/// The baseline's own copy of the data directory: the same CA, server certificate, policy and
/// registered benchmark devices, so the same client certificates work against both builds.
/// What a newer build adds that an older one refuses is taken out of the copy: tollgate.toml
/// holds only keys older builds know, and the session store is left out. (Baselines must be
/// from registry schema 4 on, the control-plane step of 2026-12-01.)
fn baseline_data(data: &Path, work: &Path) -> Result<PathBuf> {
    let copy = work.join("tollgate-data-baseline");
    let _ = std::fs::remove_dir_all(&copy);
    let st = Command::new("cp").arg("-a").arg(data).arg(&copy).status()?;
    if !st.success() {
        bail!("copying {} for the baseline failed", data.display());
    }
    let _ = std::fs::remove_file(copy.join("run/lock"));
    // Only the keys every build since the benchmarks began knows.
    std::fs::write(copy.join("tollgate.toml"), BASELINE_CONFIG)?;
    // The session store starts empty (benchmark sessions are throw-away), so a baseline from
    // before a session-store schema change opens it.
    for f in ["sessions.db", "sessions.db-wal", "sessions.db-shm"] {
        let _ = std::fs::remove_file(copy.join(f));
    }
    // The message journal beside it (since the append-only journal).
    let _ = std::fs::remove_dir_all(copy.join("sessions.db.journal"));
    Ok(copy)
}

/// Register devices and issue their certificates through the control plane of a data directory
/// whose server is not running (as `tollgate device add` does: registered devices, recorded
/// certificates). Writes `OUT/<id>.pem` (certificate then key) and `OUT/ca.crt`; a device whose
/// file exists is kept, one whose file was lost gets a new certificate.
pub(crate) fn issue_devices(
    data: &Path,
    devices: impl IntoIterator<Item = (String, Vec<String>)>,
    out: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let root_pem = std::fs::read_to_string(data.join("ca/root.crt"))
        .with_context(|| format!("reading {}/ca/root.crt", data.display()))?;
    std::fs::write(out.join("ca.crt"), &root_pem)?;
    let registry: std::sync::Arc<dyn tollgate_registry::Registry> = std::sync::Arc::new(
        tollgate_registry::SqliteRegistry::open(&data.join("registry.db"))?,
    );
    let (events, _dispatcher) = tollgate_events::EventBus::new(64, 1);
    let control = tollgate_control::Control::open(
        control_config(data, time::Duration::days(365)),
        std::sync::Arc::clone(&registry),
        events,
    )?;
    let existing: std::collections::HashSet<String> =
        registry.devices()?.into_iter().map(|d| d.id).collect();
    for (id, groups) in devices {
        let path = out.join(format!("{id}.pem"));
        if path.exists() && existing.contains(&id) {
            continue;
        }
        // A device whose key file was lost gets a new certificate: revoke, then bring back.
        let again = existing.contains(&id);
        if again {
            control.revoke_device(&id, "benchmark key file missing", "bench")?;
        }
        let c = control
            .add_device(&id, &groups, again, "bench")
            .with_context(|| format!("issuing a certificate to {id}"))?;
        std::fs::write(&path, format!("{}{}", c.cert_pem, c.key_pem))?;
    }
    Ok(())
}

/// The control plane's configuration for a benchmark data directory.
pub(crate) fn control_config(
    data: &Path,
    cert_lifetime: time::Duration,
) -> tollgate_control::ControlConfig {
    tollgate_control::ControlConfig {
        data: data.to_path_buf(),
        policy_file: data.join("policy.toml"),
        cert_lifetime,
        group_lifetimes: Default::default(),
        weak_keys: Default::default(),
        token_ttl: std::time::Duration::from_secs(3600),
        max_token_ttl: std::time::Duration::from_secs(3600),
        crl_validity: std::time::Duration::from_secs(2 * 86400),
        compliance_file: data.join("compliance.toml"),
    }
}
