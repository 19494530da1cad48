//! `tollgate-bench simulate`: a fleet of mTLS MQTT devices against a Tollgate server with its
//! detection engine in compressed time, with attacks injected on chosen devices; reports the
//! time each attack took to be detected, recall, and false alarms per 1,000 device-hours.
//!
//! Modules: [`server`] (data directory, configuration, enrollment, the server process),
//! [`fleet`] (the steady devices), [`attacks`] (what each attack does, the schedule),
//! [`netns`] (link attacks in a network namespace), [`outcome`] (alerts, verdicts, report).

mod attacks;
mod fleet;
mod netns;
mod outcome;
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::{sleep, sleep_until, Instant};
use tollgate_mqtt::Protocol;

use crate::client;
use crate::rng::Rng;
use attacks::{Kind, Requested};
use fleet::{Behaviour, Device, Fleet};
use outcome::{Attempt, Seen};

pub use netns::{device_main, DeviceArgs};

/// Most devices one simulator runs.
const MAX_DEVICES: usize = 5_000;
const GROUPS: [&str; 3] = ["model-a", "model-b", "model-c"];

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The tollgate binary (default: target/release/tollgate, else `tollgate` on PATH).
    #[arg(long)]
    pub tollgate: Option<PathBuf>,
    /// Attach to the running server of this data directory instead of starting one (its
    /// policy and detection.toml are overwritten; tollgate.toml is not: set
    /// `[detection] sample_interval_ms = 1000` there yourself).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Working directory (data directory, certificates, server log).
    #[arg(long, default_value = "target/sim-work")]
    pub work: PathBuf,
    /// Simulated devices (at most 5000).
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Statistics bucket in seconds; 6 = 10× time compression (a simulated minute in 6 s).
    #[arg(long, default_value_t = 6)]
    pub bucket: u64,
    /// Telemetry period of every device, milliseconds (±20 % jitter).
    #[arg(long, default_value_t = 1000)]
    pub period_ms: u64,
    /// An attack, NAME or NAME@SECONDS (onset after the learning phase); repeatable. Default:
    /// each attack once, spaced so their alerts do not overlap.
    #[arg(long = "attack", value_name = "NAME[@SECONDS]")]
    pub attacks: Vec<Requested>,
    /// Run the attack schedule this many times (different devices each time).
    #[arg(long, default_value_t = 1)]
    pub repetitions: usize,
    /// No attacks: run the fleet for --duration and count false alarms.
    #[arg(long)]
    pub no_attacks: bool,
    /// Real seconds of an attack-free run (after the learning phase).
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
    /// Real seconds before the first attack (default: the scaled new-source learning period
    /// plus a margin, at least 10 buckets).
    #[arg(long)]
    pub learning: Option<f64>,
    /// Seconds between default attack onsets (at least each attack's own duration + 10 s).
    #[arg(long, default_value_t = 40.0)]
    pub spacing: f64,
    /// An attack not detected within this many seconds is missed.
    #[arg(long, default_value_t = 120.0)]
    pub detect_timeout: f64,
    /// Write the report as Markdown here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Device ids are PREFIX-00000, PREFIX-00001, ... (attaching to a server that already has
    /// them registered from another work directory needs another prefix).
    #[arg(long, default_value = "sim")]
    pub id_prefix: String,
    /// Seed of the device behaviour and the choice of attacked devices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(a: SimulateArgs) -> Result<ExitCode> {
    if a.devices == 0 || a.devices > MAX_DEVICES {
        bail!("--devices must be 1 to {MAX_DEVICES}");
    }
    if !(1..=60).contains(&a.bucket) {
        bail!("--bucket must be 1 to 60 seconds");
    }
    if !(50..=600_000).contains(&a.period_ms) {
        bail!("--period-ms must be 50 to 600000");
    }
    if a.id_prefix.is_empty()
        || a.id_prefix.len() > 32
        || !a
            .id_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--id-prefix must be 1 to 32 of a-z, A-Z, 0-9, '-' and '_'");
    }
    if a.repetitions == 0 || a.repetitions > 20 {
        bail!("--repetitions must be 1 to 20");
    }
    if !(1.0..=7.0 * 86_400.0).contains(&a.duration) {
        bail!("--duration must be 1 s to 7 days");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Ctrl-C drops the simulation: the server, the namespaces and their children are cleaned up
    // by their guards.
    let result = rt.block_on(async {
        tokio::select! {
            r = simulate(a) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn tollgate_bin(a: &SimulateArgs) -> Result<PathBuf> {
    if let Some(b) = &a.tollgate {
        return absolute(b);
    }
    let release = PathBuf::from("target/release/tollgate");
    if release.exists() {
        return absolute(&release);
    }
    Ok(PathBuf::from("tollgate"))
}

async fn simulate(a: SimulateArgs) -> Result<ExitCode> {
    let bin = tollgate_bin(&a)?;
    let work = absolute(&a.work)?;
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let certs = work.join("certs");
    let mut rng = Rng(a.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);

    // The plan first: what runs where.
    let plan = if a.no_attacks {
        Vec::new()
    } else {
        attacks::schedule(&a.attacks, a.repetitions, a.spacing)
    };
    let link_wanted = plan.iter().any(|p| p.kind.needs_netns());
    let link_ok = if link_wanted {
        match netns::available() {
            Ok(()) => true,
            Err(why) => {
                eprintln!("link attacks skipped: needs root, ip netns and nftables ({why})");
                false
            }
        }
    } else {
        false
    };

    // Devices: the steady fleet, plus those that run in a namespace for link attacks.
    let mut roster: Vec<(String, Vec<String>)> = (0..a.devices)
        .map(|i| {
            (
                format!("{}-{i:05}", a.id_prefix),
                vec![GROUPS[i % GROUPS.len()].to_string()],
            )
        })
        .collect();
    let link_plan: Vec<netns::LinkSpec> = if link_ok {
        netns::plan(&plan)
    } else {
        Vec::new()
    };
    for l in &link_plan {
        for (id, groups) in &l.devices {
            roster.push((id.clone(), groups.clone()));
        }
    }

    // The server.
    let server = match &a.data {
        Some(data) => {
            let data = absolute(data)?;
            server::write_rules(&data, a.bucket)?;
            let s = server::attach(&data)?;
            eprintln!("attached to the server of {} at {}", data.display(), s.mqtt);
            server::enroll_online(&bin, &data, &roster, &certs)?;
            s
        }
        None => {
            let data = work.join("data");
            eprintln!("initialising {} with {}", data.display(), bin.display());
            server::init(&bin, &data, a.bucket)?;
            eprintln!(
                "enrolling {} devices through the control plane",
                roster.len()
            );
            let _ = std::fs::remove_dir_all(&certs);
            crate::runner::issue_devices(&data, roster.iter().cloned(), &certs)?;
            let listen = if link_ok { "0.0.0.0:0" } else { "127.0.0.1:0" };
            let s = server::start(&bin, &data, listen, &work.join("server.log")).await?;
            eprintln!("tollgate serve (pid {}) listening on {}", s.pid, s.mqtt);
            s
        }
    };

    // TLS identities.
    let ca_pem = std::fs::read_to_string(certs.join("ca.crt"))
        .with_context(|| format!("reading {}/ca.crt", certs.display()))?;
    let roots = root_store(&ca_pem)?;
    let mut devices = Vec::with_capacity(a.devices);
    for (i, (id, _groups)) in roster.iter().take(a.devices).enumerate() {
        let pem = std::fs::read_to_string(certs.join(format!("{id}.pem")))
            .with_context(|| format!("reading the certificate of {id}"))?;
        devices.push(Device {
            id: id.clone(),
            tls: client::device_tls(id, &pem, &roots, true, false)?,
            protocol: if i % 2 == 0 {
                Protocol::V5
            } else {
                Protocol::V311
            },
        });
    }
    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();

    // Alerts.
    let t0 = Instant::now();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tailer = outcome::tail(server.data.join("events.log"), t0, Arc::clone(&seen));

    // The fleet.
    let period = Duration::from_millis(a.period_ms);
    let mut behaviour = Behaviour::new(server.mqtt, period);
    behaviour.stagger = Duration::from_secs(10).min(period * 10);
    eprintln!(
        "starting {} devices ({} groups, MQTT 5 and 3.1.1), telemetry every {} ms",
        devices.len(),
        GROUPS.len(),
        a.period_ms
    );
    let fleet = Fleet::start(devices, &behaviour, a.seed);
    let stats = Arc::clone(&fleet.stats);

    // Link devices (child processes in namespaces).
    let me = std::env::current_exe().context("the simulator's own path")?;
    let mut links = Vec::new();
    for l in &link_plan {
        match netns::Link::start(l, &me, server.mqtt.port(), &certs, a.period_ms) {
            Ok(link) => links.push(link),
            Err(e) => eprintln!("{}: could not set up the namespace: {e:#}", l.kind.name()),
        }
    }

    // Device-hours and progress.
    let dev_seconds = Arc::new(Mutex::new(0.0f64));
    let meter = {
        let (stats, seen, dev_seconds) = (
            Arc::clone(&stats),
            Arc::clone(&seen),
            Arc::clone(&dev_seconds),
        );
        let extra = link_plan.iter().map(|l| l.devices.len()).sum::<usize>() as f64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_pub = 0u64;
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let connected = stats.connected.load(Ordering::Relaxed) as f64 + extra;
                if let Ok(mut d) = dev_seconds.lock() {
                    *d += connected;
                }
                n += 1;
                if n.is_multiple_of(10) {
                    let published = stats.published.load(Ordering::Relaxed);
                    let alerts = seen.lock().map(|s| s.alerts.len()).unwrap_or(0);
                    eprintln!(
                        "[{:>5.0} s] connected {:>5}  msg/s {:>7.1}  alerts {:>3}  client errors {}",
                        t0.elapsed().as_secs_f64(),
                        stats.connected.load(Ordering::Relaxed),
                        (published - last_pub) as f64 / 10.0,
                        alerts,
                        stats.errors.load(Ordering::Relaxed),
                    );
                    last_pub = published;
                }
            }
        })
    };

    // Learning phase.
    let nsa_learning = (600 * a.bucket / 60) as f64;
    let learning = a.learning.unwrap_or(
        (nsa_learning + 15.0).max(10.0 * a.bucket as f64) + behaviour.stagger.as_secs_f64(),
    );
    let attack_t0 = t0 + Duration::from_secs_f64(learning);
    eprintln!("learning phase: {learning:.0} s");
    // A spinner on a terminal: which phase, and for how long.
    let progress =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        progress.set_style(style);
    }
    progress.enable_steady_tick(Duration::from_millis(200));
    let phases = {
        let progress = progress.clone();
        let devices = fleet.handles.len();
        tokio::spawn(async move {
            loop {
                progress.set_message(if Instant::now() < attack_t0 {
                    format!("{devices} devices: learning baselines")
                } else {
                    format!("{devices} devices: attacks and detection")
                });
                sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let mut attempts: Vec<Attempt> = Vec::new();
    let mut attack_tasks = Vec::new();
    let stop_at = if a.no_attacks {
        attack_t0 + Duration::from_secs_f64(a.duration)
    } else {
        // Targets: distinct steady devices, chosen at random.
        let mut pool: Vec<usize> = (0..fleet.handles.len()).collect();
        let mut k = 0usize;
        for p in &plan {
            let onset = attack_t0 + Duration::from_secs_f64(p.onset_s);
            sleep_until(onset).await;
            let onset_s = onset.duration_since(t0).as_secs_f64();
            let mut at = Attempt {
                attack: p.kind,
                rep: p.rep,
                detector: p.kind.detector(),
                device: None,
                involved: Vec::new(),
                cohort: None,
                onset_s,
                skipped: None,
                detected_after_s: None,
                alert: None,
            };
            if p.kind.needs_netns() {
                match links
                    .iter_mut()
                    .find(|l| l.kind() == p.kind && l.rep() == p.rep)
                {
                    Some(link) => {
                        at.involved = link.device_ids();
                        if p.kind == Kind::CohortLinkLoss {
                            at.cohort = Some(link.cohort());
                        } else {
                            at.device = at.involved.first().cloned();
                        }
                        if let Err(e) = link.impair().await {
                            at.skipped = Some(format!("impairment failed: {e:#}"));
                        }
                    }
                    None if link_ok => {
                        at.skipped = Some("skipped: the namespace could not be set up".into());
                    }
                    None => {
                        at.skipped = Some("skipped: needs root, ip netns and nftables".into());
                    }
                }
                eprintln!(
                    "[{onset_s:>5.0} s] {} {}",
                    p.kind.name(),
                    at.skipped.as_deref().unwrap_or("started")
                );
                attempts.push(at);
                continue;
            }
            if pool.is_empty() {
                bail!("more attacks than devices");
            }
            let target = &fleet.handles[pool.swap_remove(rng.below(pool.len()))];
            at.device = Some(target.device.id.clone());
            at.involved = vec![target.device.id.clone()];
            k += 1;
            match attacks::launch(p.kind, target, &ids, server.mqtt, k).await {
                Ok(Some(task)) => attack_tasks.push(task),
                Ok(None) => {}
                Err(e) => at.skipped = Some(format!("could not launch: {e:#}")),
            }
            eprintln!(
                "[{onset_s:>5.0} s] {} on {} (rep {})",
                p.kind.name(),
                target.device.id,
                p.rep + 1
            );
            attempts.push(at);
        }
        // Wait for the last detections (or the timeout).
        let last = attempts.iter().map(|a| a.onset_s).fold(0.0, f64::max);
        let deadline = t0 + Duration::from_secs_f64(last + a.detect_timeout);
        loop {
            let all = {
                let s = seen
                    .lock()
                    .map_err(|_| anyhow::anyhow!("alert list poisoned"))?;
                let mut tmp = attempts.clone();
                outcome::judge(&mut tmp, &s.alerts, a.detect_timeout);
                tmp.iter()
                    .all(|x| x.skipped.is_some() || x.detected_after_s.is_some())
            };
            if all || Instant::now() >= deadline {
                break;
            }
            sleep(Duration::from_millis(500)).await;
        }
        // A few more seconds so late side effects are seen.
        Instant::now() + Duration::from_secs(5)
    };
    sleep_until(stop_at).await;
    sleep(Duration::from_millis(500)).await; // the tailer's last poll
    phases.abort();
    progress.finish_and_clear();
    let real = t0.elapsed().as_secs_f64();
    meter.abort();
    tailer.abort();
    for t in attack_tasks {
        t.abort();
    }
    for l in links {
        l.stop();
    }
    fleet.stop(Duration::from_secs(5)).await;
    drop(server);

    // Verdicts.
    let (alerts, dropped) = {
        let s = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("alert list poisoned"))?;
        (s.alerts.clone(), s.dropped)
    };
    let (collateral, false_alarm_alerts) = outcome::judge(&mut attempts, &alerts, a.detect_timeout);
    let dev_h = dev_seconds.lock().map(|d| *d).unwrap_or(0.0) / 3600.0;
    let compression = 60.0 / a.bucket as f64;
    let per_1000 = |h: f64| (h > 0.0).then(|| false_alarm_alerts.len() as f64 * 1000.0 / h);
    let report = outcome::Report {
        devices: a.devices + link_plan.iter().map(|l| l.devices.len()).sum::<usize>(),
        bucket_s: a.bucket,
        compression,
        period_ms: a.period_ms,
        learning_s: learning,
        real_duration_s: real,
        device_hours_real: dev_h,
        device_hours_simulated: dev_h * compression,
        false_alarms: false_alarm_alerts.len(),
        false_alarms_per_1000_device_hours_real: per_1000(dev_h),
        false_alarms_per_1000_device_hours_simulated: per_1000(dev_h * compression),
        collateral,
        false_alarm_alerts,
        summaries: outcome::summarize(&attempts),
        attempts,
        messages_published: stats.published.load(Ordering::Relaxed),
        connects: stats.connects.load(Ordering::Relaxed),
        client_errors: stats.errors.load(Ordering::Relaxed),
        last_client_error: stats.last_error.lock().ok().and_then(|e| e.clone()),
        alerts_not_kept: dropped,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let md = outcome::markdown(&report, &command);
    println!("{md}");
    if let Some(p) = &a.report {
        std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn root_store(ca_pem: &str) -> Result<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("parsing ca.crt")?)?;
    }
    Ok(roots)
}
