//! `tollgate demo`: the whole product on one machine in a minute. A gateway starts in a
//! temporary data directory (in this process), is given three suppliers with their models,
//! firmware SBOMs and one known advisory, a policy and a compliance profile, and a simulated
//! fleet connects to it over mutual TLS. Within the first minute the robot still running
//! vulnerable firmware is quarantined by compliance, and a compromised scanner that starts
//! probing is detected and quarantined. The narrator prints what happens, from the event log,
//! as it happens. Ctrl-C stops the gateway gracefully and removes the directory.
//!
//! It sets the gateway up through the admin API, as an operator's CLI would; it holds no
//! business logic of its own. Modules: [`fixtures`] (the world), [`fleet`] (the devices),
//! [`narrate`] (the story from the event log).

mod fixtures;
mod fleet;
mod narrate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::Method;
use serde_json::json;

use crate::client::{self, AdminClient, ConnectArgs};
use crate::datadir::Addresses;

/// `tollgate demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Devices in the simulated fleet (the warehouse system included).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(12..=500))]
    pub devices: u16,
    /// Data directory for the demo (default: a new one under the system's temporary directory).
    /// It must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Keep the data directory when the demo stops (to look at the audit log, say).
    #[arg(long)]
    pub keep: bool,
    /// The admin listener (API and dashboard); default 127.0.0.1:8443, or any free port.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<std::net::SocketAddr>,
}

/// Run the demo until Ctrl-C (or SIGTERM).
pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let (dir, owned) = match &args.data {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id())),
            true,
        ),
    };
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{} exists and is not empty; the demo needs a fresh directory",
            dir.display()
        );
    }
    let result = demo(&args, &dir).await;
    if args.keep {
        eprintln!("The demo's data directory is kept: {}", dir.display());
    } else if owned || args.data.is_some() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("removing {}: {e}", dir.display());
        } else {
            eprintln!("Removed {}.", dir.display());
        }
    }
    result
}

async fn demo(args: &DemoArgs, dir: &Path) -> Result<ExitCode> {
    let started = Instant::now();
    let report = tollgate_control::ca::init(dir, &crate::init_options())?;
    drop(report);
    crate::write_detection_defaults(dir)?;
    let write = |name: &str, text: &str| {
        tollgate_control::files::write_file(&dir.join(name), text.as_bytes(), false)
            .with_context(|| format!("writing {name}"))
    };
    write("policy.toml", fixtures::POLICY)?;
    write("compliance.toml", fixtures::COMPLIANCE)?;
    let mut cfg = crate::config::Config::load(dir, None)?;
    let local = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    cfg.mqtt_listen = local(0);
    cfg.admin_listen = args.admin_listen.unwrap_or_else(|| {
        // The usual port when it is free, so the printed address is the familiar one.
        match std::net::TcpListener::bind(local(8443)) {
            Ok(_) => local(8443),
            Err(_) => local(0),
        }
    });
    cfg.observability.metrics_listen = Some(local(0));
    eprintln!("Starting a Tollgate gateway in {} ...", dir.display());
    let mut server = tokio::spawn(crate::serve::serve(cfg));
    let addresses = wait_for_addresses(dir, &mut server).await?;

    let api = AdminClient::new(&ConnectArgs {
        data: Some(dir.to_path_buf()),
        server: None,
        cert: None,
        key: None,
        cacert: None,
    })?;
    let plan = fixtures::fleet(usize::from(args.devices));
    let ready = tokio::select! {
        r = set_up(&api, dir, plan) => r?,
        r = &mut server => return ended(r),
    };
    let counters = Arc::new(fleet::Counters::default());
    let total = ready.len();
    let compromised = ready
        .iter()
        .find(|d| d.plan.compromised)
        .map(|d| d.plan.id.clone())
        .unwrap_or_default();
    let vulnerable = ready
        .iter()
        .find(|d| d.plan.firmware == Some(fixtures::VULNERABLE_FIRMWARE))
        .map(|d| d.plan.id.clone())
        .unwrap_or_default();
    let mut devices = fleet::start(addresses.mqtt, ready, &counters);
    print_intro(&addresses, dir, total, &vulnerable, &compromised);
    println!("{}\n", sign_in(&api, dir).await?);

    let mut story = narrate::Narrator::new(dir.join("events.log"), total, started);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let outcome = loop {
        tokio::select! {
            r = &mut server => break ended(r),
            _ = tick.tick() => story.advance(&counters),
        }
    };
    devices.abort_all();
    while devices.join_next().await.is_some() {}
    story.advance(&counters);
    println!(
        "\nThe gateway stopped after {}.",
        crate::human::span(started.elapsed().as_secs())
    );
    outcome
}

/// The server task's end: it stops on Ctrl-C or SIGTERM (its own signal handling).
fn ended(r: Result<Result<()>, tokio::task::JoinError>) -> Result<ExitCode> {
    match r {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(e.context("the demo's gateway")),
        Err(e) => bail!("the demo's gateway task failed: {e}"),
    }
}

/// Wait until the gateway writes where it listens (it binds before writing).
async fn wait_for_addresses(
    dir: &Path,
    server: &mut tokio::task::JoinHandle<Result<()>>,
) -> Result<Addresses> {
    let path = crate::datadir::Layout::new(dir).addresses();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(a) = serde_json::from_str::<Addresses>(&text) {
                return Ok(a);
            }
        }
        if server.is_finished() {
            ended(server.await)?;
            bail!("the demo's gateway stopped before it listened");
        }
        if Instant::now() > deadline {
            bail!("the demo's gateway did not start within a minute");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Suppliers, models, SBOMs, the advisory, and every device with its inventory; returns the
/// devices with their credentials.
async fn set_up(
    api: &AdminClient,
    dir: &Path,
    plan: Vec<fixtures::Planned>,
) -> Result<Vec<fleet::Ready>> {
    for line in fixtures::LINES {
        api.call(
            Method::POST,
            "/api/v1/suppliers",
            Some(json!({
                "name": line.supplier,
                "disclosure_contact": format!("mailto:psirt@{}.example", line.supplier),
            })),
        )
        .await
        .with_context(|| format!("adding supplier {}", line.supplier))?;
        api.call(
            Method::POST,
            "/api/v1/models",
            Some(json!({ "supplier": line.supplier, "name": line.model, "scheme": "semver" })),
        )
        .await
        .with_context(|| format!("adding model {}", line.model))?;
        let mut sboms = vec![(line.firmware, line.components)];
        if line.group == "robots" {
            sboms.push((
                fixtures::VULNERABLE_FIRMWARE,
                fixtures::VULNERABLE_COMPONENTS,
            ));
        }
        for (fw, comps) in sboms {
            let doc = serde_json::to_vec(&fixtures::sbom(&line, fw, comps))?;
            api.call_raw(
                Method::POST,
                &format!(
                    "/api/v1/sboms?supplier={}&model={}&firmware={}",
                    client::path_escape(line.supplier),
                    client::path_escape(line.model),
                    client::path_escape(fw)
                ),
                "application/vnd.cyclonedx+json",
                bytes::Bytes::from(doc),
            )
            .await
            .with_context(|| format!("importing the SBOM of {} {fw}", line.model))?;
        }
    }
    api.call_raw(
        Method::POST,
        "/api/v1/advisories",
        "application/json",
        bytes::Bytes::from(serde_json::to_vec(&vec![fixtures::advisory()])?),
    )
    .await
    .context("importing the advisory")?;

    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for c in crate::tls::load_certs(&dir.join("ca/root.crt"))? {
            r.add(c)?;
        }
        r
    };
    let mut ready = Vec::with_capacity(plan.len());
    for (n, p) in plan.into_iter().enumerate() {
        let v = api
            .call(
                Method::POST,
                "/api/v1/devices",
                Some(json!({ "id": p.id, "groups": [p.group] })),
            )
            .await
            .with_context(|| format!("adding device {}", p.id))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
        let pem = format!("{}{}", field("cert_pem"), field("key_pem"));
        let tls = tollgate_client::device_tls(&p.id, &pem, &roots, true, true)
            .with_context(|| format!("credentials of {}", p.id))?;
        if let Some(line) = p.line {
            api.call(
                Method::PUT,
                &format!("/api/v1/devices/{}/inventory", client::path_escape(&p.id)),
                Some(json!({
                    "supplier": line.supplier,
                    "model": line.model,
                    "hardware_serial": format!("{}-{:05}", line.supplier.to_uppercase(), 1000 + n),
                })),
            )
            .await
            .with_context(|| format!("recording the inventory of {}", p.id))?;
        }
        ready.push(fleet::Ready { plan: p, tls });
    }
    Ok(ready)
}

fn print_intro(a: &Addresses, dir: &Path, total: usize, vulnerable: &str, compromised: &str) {
    println!(
        "\nTollgate demo: a gateway with {total} simulated devices from three suppliers (acme \
         scanners, globex robots, initech telematics) and a warehouse system.\n\
         \n  MQTT over mutual TLS   {mqtt}\n  Admin API, dashboard   https://{admin}\n  \
         Data directory         {data}\n\
         \nWhat to watch, within the first minute:\n  \
         - {vulnerable} runs firmware {fw}, whose SBOM bundles lodash 4.17.20 \
         (GHSA-35jh-r3h4-6jhm, CVE-2021-23337, high):\n    compliance quarantines it on its live \
         connection.\n  \
         - {compromised} is compromised: after {probe} s it probes other devices' command topics \
         and broker internals;\n    the authorization_probing detector raises an alert and \
         quarantines it.\n\
         \nTry, in another terminal:\n  \
         tollgate device list --data {data}\n  \
         tollgate alerts --data {data}\n  \
         tollgate policy explain --data {data} --device {compromised} --publish devices/globex-robot-01/commands/stop\n  \
         tollgate audit verify --data {data}\n\
         \nCtrl-C stops the gateway and removes the data directory (--keep keeps it).\n",
        mqtt = a.mqtt,
        admin = a.admin,
        data = dir.display(),
        fw = fixtures::VULNERABLE_FIRMWARE,
        probe = fleet::PROBE_AFTER.as_secs(),
    );
}

/// How to open the dashboard: a one-time sign-in URL (valid for an hour), and how to get
/// another.
async fn sign_in(api: &AdminClient, dir: &Path) -> Result<String> {
    let v = api
        .call(
            Method::POST,
            "/api/v1/dashboard/logins",
            Some(json!({ "role": "admin", "ttl_secs": 3600 })),
        )
        .await
        .context("asking for a dashboard sign-in URL")?;
    Ok(format!(
        "Open the live dashboard (it works once, within the hour; the browser will warn about the \
         gateway's own CA, which docs/dashboard.md says how to trust):\n  {}\n\
         Another sign-in URL: tollgate dashboard login --data {}",
        v.get("url").and_then(|u| u.as_str()).unwrap_or_default(),
        dir.display()
    ))
}
