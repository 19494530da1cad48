//! `tollgate dashboard login`: a client of `POST /api/v1/dashboard/logins` that prints a
//! one-time sign-in URL for a browser (docs/dashboard.md).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Subcommand;
use hyper::Method;

use crate::client::{self, AdminClient};

#[derive(Debug, Subcommand)]
pub enum DashboardCommand {
    /// Print a one-time URL that signs a browser in to the dashboard (it works once, for
    /// --ttl). The session acts in your name; run it with your operator certificate.
    Login {
        /// admin (read and act) or viewer (read only); not above your own role.
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: Option<String>,
        /// How long the URL works: "90s", "10m", "1h" (default: dashboard.login_ttl_secs; at
        /// most dashboard.max_login_ttl_secs, itself at most an hour).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Print the JSON answer instead of the URL alone.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

pub async fn dashboard(cmd: DashboardCommand) -> Result<ExitCode> {
    match cmd {
        DashboardCommand::Login {
            role,
            ttl,
            json,
            conn,
        } => {
            let ttl_secs = match ttl.as_deref() {
                None => None,
                Some(t) => match tollgate_detect::config::parse_duration(t) {
                    Some(ms) if ms >= 1000 => u64::try_from(ms / 1000).ok(),
                    _ => bail!("--ttl {t:?} is not a duration like \"90s\", \"10m\" or \"1h\""),
                },
            };
            let v = AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    "/api/v1/dashboard/logins",
                    Some(serde_json::json!({ "role": role, "ttl_secs": ttl_secs })),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", v["url"].as_str().unwrap_or_default());
                eprintln!(
                    "Open it in a browser before {} ({} session; it works once).",
                    v["expires_at"].as_str().unwrap_or("it expires"),
                    v["role"].as_str().unwrap_or("a")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
