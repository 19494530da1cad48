//! Link attacks: devices run in a network namespace behind a veth pair, impaired with
//! nftables (loss) or tc (delay). Not implemented yet: every link attack is skipped.

use std::path::Path;

use anyhow::{bail, Result};

use super::attacks::{Kind, Planned};

/// Whether link attacks can run here.
pub fn available() -> std::result::Result<(), String> {
    Err("not implemented yet".into())
}

/// The namespace devices of one link attack.
pub struct LinkSpec {
    pub kind: Kind,
    pub rep: usize,
    pub devices: Vec<(String, Vec<String>)>,
}

pub fn plan(_plan: &[Planned]) -> Vec<LinkSpec> {
    Vec::new()
}

pub struct Link {
    kind: Kind,
    rep: usize,
    ids: Vec<String>,
}

impl Link {
    pub fn start(
        _s: &LinkSpec,
        _me: &Path,
        _port: u16,
        _certs: &Path,
        _period_ms: u64,
    ) -> Result<Link> {
        bail!("not implemented yet")
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn rep(&self) -> usize {
        self.rep
    }
    pub fn device_ids(&self) -> Vec<String> {
        self.ids.clone()
    }
    pub fn cohort(&self) -> String {
        String::new()
    }
    pub async fn impair(&mut self) -> Result<()> {
        bail!("not implemented yet")
    }
    pub fn stop(self) {}
}

/// Arguments of the hidden `simulate-device` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {}

pub fn device_main(_a: DeviceArgs) -> Result<std::process::ExitCode> {
    bail!("not implemented yet")
}
