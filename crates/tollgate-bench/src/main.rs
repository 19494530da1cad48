//! `tollgate-bench`: the load generator (`load`) and the side-by-side runner (`run`) that puts
//! Tollgate, Mosquitto and rumqttd through the same mTLS scenarios on the same machine; the
//! detection simulator (`simulate`).
//!
//! Not needed at run time: nothing in the product depends on this crate.

#![forbid(unsafe_code)]

mod brokers;
// The MQTT client is a library crate now (the demo drives devices with it too).
use tollgate_client as client;
mod compliance;
mod procstat;
mod report;
mod rng;
mod runner;
mod scale;
mod scenarios;
mod simulate;
mod topic_aliases;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tollgate-bench", version, max_term_width = 100)]
/// Benchmarks for Tollgate against its peers, over mutual TLS, with one certificate per device.
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every scenario against each broker, alternating, and write a table of medians.
    Run(runner::RunArgs),
    /// Run one scenario against one broker and print the outcome as JSON.
    Load(scenarios::LoadArgs),
    /// Time a fleet's supply-chain compliance evaluation (10,000 devices, 200 SBOMs of 500
    /// components, 50,000 advisories by default) and what an advisory import re-evaluates.
    Compliance(compliance::ComplianceArgs),
    /// Run a simulated device fleet against a Tollgate server in compressed time, inject
    /// attacks, and report time to detect, recall and false alarms per 1,000 device-hours.
    /// Exits 1 unless every attack was detected and no false alarm was raised.
    Simulate(simulate::SimulateArgs),
    /// One steady device (run by `simulate` inside a network namespace for link attacks).
    #[command(hide = true)]
    SimulateDevice(simulate::DeviceArgs),
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => runner::run(args),
        Command::Load(args) => load(args),
        Command::Compliance(args) => compliance::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::SimulateDevice(args) => simulate::device_main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(args: scenarios::LoadArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let out = rt.block_on(scenarios::run(args))?;
    println!("{}", serde_json::to_string(&out)?);
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(ExitCode::SUCCESS)
}
