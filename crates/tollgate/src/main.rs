//! `tollgate`: the binary. Command line, configuration, listeners and TLS, the control
//! listener's thin HTTP adapters (admin API, EST) and the wiring between the crates; the
//! business logic lives in the library crates (`tollgate-control` for the control plane).

#![forbid(unsafe_code)]

mod admission;
mod agent;
mod alerts_cli;
mod audit;
mod audit_cli;
mod client;
mod config;
mod config_audit;
mod control_listener;
mod dashboard;
mod dashboard_cli;
mod datadir;
mod demo;
mod detection;
mod eventlog;
mod human;
mod inventory_cli;
mod listener;
mod metrics;
mod mqtt_tls;
mod operator_cli;
mod policy_cli;
mod progress;
mod reports;
mod serve;
mod table;
mod tls;
mod webhook;

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("choose one allocator: the features mimalloc and jemalloc exclude each other");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hyper::Method;

/// Tollgate: the gateway machines talk through. An MQTT 3.1.1/5.0 broker that accepts only
/// mutually authenticated TLS, runs its own device PKI and authorizes every connect, publish
/// and subscribe against a default-deny policy.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: root and issuing CA, server and admin certificates,
    /// a commented tollgate.toml and a deny-all policy.toml.
    Init {
        /// Data directory to create (must not exist, or be empty).
        #[arg(long, env = "TOLLGATE_DATA", value_name = "DIR")]
        data: PathBuf,
        /// DNS name for the server certificate (repeatable; default: localhost).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// IP address for the server certificate (repeatable; default: 127.0.0.1).
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// Build on an existing root CA (certificate and key, PEM) instead of creating one.
        #[arg(long, num_args = 2, value_names = ["CERT", "KEY"])]
        import_ca: Option<Vec<PathBuf>>,
    },
    /// See the whole product work in a minute: a gateway in a temporary directory, a simulated
    /// fleet of 50 devices from three suppliers, a vulnerable device quarantined by compliance
    /// and a compromised one detected and quarantined. Ctrl-C stops it and cleans up.
    Demo(demo::DemoArgs),
    /// Run the gateway: MQTT over mTLS, and the admin API and EST enrollment over HTTPS.
    /// Initialises DIR first if it does not exist or is empty.
    Serve {
        /// Data directory.
        #[arg(long, env = "TOLLGATE_DATA", value_name = "DIR")]
        data: PathBuf,
        /// Configuration file (default: DIR/tollgate.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// MQTT listen address (overrides mqtt.listen; default 0.0.0.0:8883).
        #[arg(long, value_name = "ADDR")]
        mqtt_listen: Option<SocketAddr>,
        /// Control listener: admin API, EST and CRLs (overrides admin.listen; default 127.0.0.1:8443).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
        /// Prometheus metrics listener (overrides metrics.listen; default 127.0.0.1:9898).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Manage devices through the running server's admin API.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Check, lint and explain policy files (offline); show, push, diff and roll back the
    /// running server's policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Every group devices belong to or the policy names, with member counts.
    Groups {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Device-side enrollment agent: obtain and renew this device's certificate over EST.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Suppliers: manufacturing CAs whose bootstrap certificates may enroll devices, disclosure
    /// contacts and support periods.
    #[command(subcommand)]
    Supplier(SupplierCommand),
    /// Device models: firmware ordering and minimum firmware.
    #[command(subcommand)]
    Model(inventory_cli::ModelCommand),
    /// Software bills of materials, one per model firmware.
    #[command(subcommand)]
    Sbom(inventory_cli::SbomCommand),
    /// The offline OSV advisory database.
    #[command(subcommand)]
    Advisories(inventory_cli::AdvisoriesCommand),
    /// VEX statements: which vulnerabilities do not affect a model's firmware.
    #[command(subcommand)]
    Vex(inventory_cli::VexCommand),
    /// Compliance profiles: evaluate, report, waive.
    #[command(subcommand)]
    Compliance(inventory_cli::ComplianceCommand),
    /// Alerts of the behaviour and transport-health detectors: list them (--active for those
    /// in force), judge them, suppress detectors or devices for a while.
    Alerts(alerts_cli::AlertsArgs),
    /// The tamper-evident audit log: its key, checkpoints, entries, proofs, export and
    /// verification (offline too).
    #[command(subcommand)]
    Audit(audit_cli::AuditCommand),
    /// The web dashboard: print a one-time sign-in URL for a browser.
    #[command(subcommand)]
    Dashboard(dashboard_cli::DashboardCommand),
    /// The CA hierarchy: status, issuing-CA rotation, server-certificate renewal.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Operators of the admin API: add (with the admin or viewer role), list, show, revoke,
    /// renew, set-role.
    #[command(subcommand)]
    Operator(operator_cli::OperatorCommand),
    /// The durable session store (sessions.db): verify it, or compact it while the server is
    /// stopped.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Verify the store: SQLite integrity, every stored message decodes, rows that belong to
    /// no session. Prints a JSON report; exits 1 if the store is damaged.
    Check {
        /// Data directory.
        #[arg(long, env = "TOLLGATE_DATA", value_name = "DIR")]
        data: PathBuf,
        /// Configuration file (default: DIR/tollgate.toml), for sessions.file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove expired sessions and messages and orphaned rows, and rewrite the file compactly.
    /// Refuses to run while `tollgate serve` is running on the data directory.
    Compact {
        /// Data directory.
        #[arg(long, env = "TOLLGATE_DATA", value_name = "DIR")]
        data: PathBuf,
        /// Configuration file (default: DIR/tollgate.toml), for sessions.file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Show the root and issuing CAs, the server certificate and every operator's
    /// certificate with their expiry dates, and device and revocation counts.
    Status {
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Renew the server certificate (same names, plus any given) and swap it into both
    /// listeners of the running server, without a restart.
    RenewServer {
        /// A DNS name to add (repeatable).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address to add (repeatable).
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// Lifetime in days (default and longest: 825).
        #[arg(long, value_name = "DAYS")]
        validity_days: Option<u32>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Create a new issuing CA (signed by the root, whose key must be in DATA/ca/root.key). The
    /// old one stays trusted until its last certificate has expired. Restart `serve` afterwards.
    Rotate {
        /// Data directory.
        #[arg(long, env = "TOLLGATE_DATA", value_name = "DIR")]
        data: PathBuf,
        /// Configuration file (default: DIR/tollgate.toml), for certificate lifetimes.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum SupplierCommand {
    /// Register a supplier's manufacturing CA: a device whose bootstrap certificate chains to it
    /// may enroll once per hardware serial (EST simpleenroll with that certificate, no token).
    Add {
        /// Supplier name.
        name: String,
        /// The supplier's CA certificate(s), PEM. Without it the supplier is recorded for
        /// inventory and compliance only, and its devices enroll by token.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Where vulnerabilities in its products are reported (URL or address).
        #[arg(long, value_name = "CONTACT")]
        disclosure_contact: Option<String>,
        /// The day its support for its products ends (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        support_until: Option<i64>,
        /// Group(s) given to devices this supplier enrolls (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Allow a hardware serial to enroll again (e.g. after a factory reset).
        #[arg(long)]
        allow_reenroll: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// List registered suppliers.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Set a supplier's vulnerability-disclosure contact or support end.
    Set {
        /// Supplier name.
        name: String,
        /// Where vulnerabilities in its products are reported ("" clears it).
        #[arg(long, value_name = "CONTACT")]
        disclosure_contact: Option<String>,
        /// The day its support ends (YYYY-MM-DD, UTC).
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        support_until: Option<i64>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

/// `YYYY-MM-DD` as Unix seconds at 00:00 UTC.
fn parse_date(s: &str) -> Result<i64, String> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), &fmt)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|e| format!("{s:?} is not a date like 2027-12-31: {e}"))
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// First enrollment with a one-time token: generates the key here (it never leaves this
    /// machine), sends a CSR and writes OUT/ID.key, OUT/ID.crt and OUT/ca.crt.
    Enroll {
        /// The gateway's control listener, e.g. https://gateway.example:8443
        #[arg(long, value_name = "URL")]
        server: String,
        /// The one-time token from `tollgate device token`.
        #[arg(
            long,
            env = "TOLLGATE_TOKEN",
            hide_env_values = true,
            required_unless_present = "bootstrap_cert",
            conflicts_with = "bootstrap_cert"
        )]
        token: Option<String>,
        /// Instead of a token: the supplier's bootstrap (manufacturing) certificate, PEM; its
        /// CA must be registered with `tollgate supplier add --ca`.
        #[arg(long, value_name = "FILE", requires = "bootstrap_key")]
        bootstrap_cert: Option<PathBuf>,
        /// The bootstrap certificate's private key, PEM.
        #[arg(long, value_name = "FILE", requires = "bootstrap_cert")]
        bootstrap_key: Option<PathBuf>,
        /// This device's id (the token is bound to it; a bootstrap certificate names it).
        #[arg(long)]
        id: String,
        /// Directory for the key and certificates.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The gateway's root CA certificate, DATA/ca/root.crt (default: OUT/ca.crt). An
        /// issuing CA works too: the root is then fetched from the gateway and stored.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// EST label (enrollment profile).
        #[arg(long)]
        label: Option<String>,
    },
    /// Renew the certificate in OUT with the current one (EST simplereenroll).
    Renew {
        /// The gateway's control listener.
        #[arg(long, value_name = "URL")]
        server: String,
        /// Directory holding ID.key, ID.crt and ca.crt.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Keep running: renew at about two thirds of each certificate's lifetime (with jitter).
        #[arg(long)]
        daemon: bool,
        /// Generate a new key for the new certificate.
        #[arg(long)]
        rotate_key: bool,
        /// Command run after each renewal (e.g. to make a client reload its certificate).
        #[arg(long, value_name = "CMD")]
        reload: Option<String>,
        /// EST label (enrollment profile).
        #[arg(long)]
        label: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device and issue its key and certificate into --out:
    /// ID.key, ID.crt and ca.crt, ready for `mosquitto_pub --key --cert --cafile`.
    Add {
        /// Device id (letters, digits and . _ - :).
        id: String,
        /// Group the device belongs to (repeatable), used by policy `who = "group:NAME"`.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Directory for the device's files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The id belongs to a revoked device: bring it back (with a new certificate and these
        /// groups). Without this flag a revoked id is refused.
        #[arg(long)]
        reactivate: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// A device's live behaviour and transport health: current rates, TCP round-trip time and
    /// retransmissions, its baseline and learning state, source networks and active alerts.
    Stats {
        /// Device id.
        id: String,
        /// Print the full JSON (the last hour in buckets included).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Issue a one-time enrollment token for a device; prints the token alone on stdout.
    Token {
        /// Device id the token is bound to.
        id: String,
        /// Group(s) the device joins when it enrolls (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// How long the token stays valid: 90s, 30m, 1h, 2d (default: devices.token_ttl_secs;
        /// at most devices.max_token_ttl_secs).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// The device exists: let its enrollment replace its groups with --group. Without this
        /// flag a token for an existing device keeps its groups, and different --group values
        /// are refused.
        #[arg(long)]
        change_groups: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// List devices with their status and whether they are connected.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Show one device (JSON): state, certificates, supplier, model, serial, firmware, the SBOM
    /// of that firmware and its compliance findings.
    Show {
        /// Device id.
        id: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Show or set what a device is and runs: supplier, model, hardware serial, firmware and
    /// labels (devices also report their firmware themselves over MQTT). A change is
    /// re-evaluated for compliance at once.
    Inventory {
        /// Device id.
        id: String,
        /// Supplier (registered with `tollgate supplier add`).
        #[arg(long)]
        supplier: Option<String>,
        /// Model.
        #[arg(long)]
        model: Option<String>,
        /// Hardware serial.
        #[arg(long)]
        serial: Option<String>,
        /// Running firmware version.
        #[arg(long)]
        firmware: Option<String>,
        /// A label KEY=VALUE (repeatable; KEY= removes it).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Quarantine a device: it stays connected but may only do what the quarantine policy
    /// allows (report its inventory, receive firmware and commands) until released.
    Quarantine {
        /// Device id.
        id: String,
        /// Why (recorded, shown by `device show`, and named in refusals the device receives).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Release a device from the operator's quarantine; its normal policy applies to its live
    /// connection within a second (unless compliance or detection still hold it).
    Release {
        /// Device id.
        id: String,
        /// Remove every quarantine reason, including those set by compliance or detection.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Revoke every certificate of a device (or several) and close its live connections at once.
    /// Several devices are revoked together (`POST /api/v1/revocations`: one registry
    /// transaction, one CRL, their connections closed at once), all or none per request.
    Revoke {
        /// Device id(s).
        #[arg(required_unless_present = "from_file")]
        ids: Vec<String>,
        /// Also revoke the device ids in this file (one per line; blank lines and lines starting
        /// with # are skipped; - reads standard input).
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// Reason, recorded in the registry and the event log.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Replace a device's groups (comma-separated; "" for none). Its live connections are held
    /// to the policy of the new groups at once.
    SetGroups {
        /// Device id.
        id: String,
        /// Groups, comma-separated: sensors,dock-7
        groups: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Set a device's labels (KEY=VALUE, repeatable) or remove them (--remove KEY): free
    /// metadata, keys of a-z 0-9 _ . - (at most 63), values of at most 256 characters, 32 labels.
    Label {
        /// Device id.
        id: String,
        /// Labels to set, KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A label to remove (repeatable).
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Delete a device: revoke every certificate it holds, close its live connections and
    /// remove it from the fleet (its history stays in the event and audit logs; the id may be
    /// registered again). Asks for confirmation unless --yes.
    Delete {
        /// Device id.
        id: String,
        /// Why (recorded).
        #[arg(long, default_value = "deleted")]
        reason: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; prints every error with its line and exits non-zero.
    Check {
        /// Policy file.
        file: PathBuf,
    },
    /// Validate, then list warnings about overly broad or dead rules. With --observed, also
    /// the grants no device used in the observation window of a running server.
    Lint {
        /// Policy file.
        file: PathBuf,
        /// Also warn about grants nothing used (asks the running server what devices did).
        #[arg(long)]
        observed: bool,
        /// The observation window: 24h, 7d, 30d.
        #[arg(long, default_value = "7d", requires = "observed")]
        since: String,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Propose the narrowest policy that still allows everything devices were seen doing, as
    /// TOML, with a diff against the policy in force and what each change would have denied.
    Suggest {
        /// The observation window: 24h, 7d, 30d.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Only this group's devices and rules.
        #[arg(long)]
        group: Option<String>,
        /// Write the suggested policy to this file (the diff still goes to stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    /// Explain whether a device may publish or subscribe to a topic, and which rules decide.
    ///
    /// With a FILE, offline: that policy, for the groups given with --group. Without one, the
    /// running server (--data DIR or --server ...) explains with its policy in force and the
    /// device's real groups and state from the registry (a quarantined device is held to the
    /// [quarantine] grant; a revoked one may do nothing).
    Explain {
        /// Policy file (offline); omit it to ask the running server.
        file: Option<PathBuf>,
        /// Device id.
        #[arg(long)]
        device: String,
        /// Group of the device (repeatable; offline only: the server knows the real groups).
        #[arg(long = "group", requires = "file")]
        groups: Vec<String>,
        /// Topic to publish to.
        #[arg(
            long,
            conflicts_with = "subscribe",
            required_unless_present = "subscribe"
        )]
        publish: Option<String>,
        /// Topic filter to subscribe to.
        #[arg(long)]
        subscribe: Option<String>,
        /// With --publish: the PUBLISH has the retain flag set (needs a `retain` grant too).
        #[arg(long, requires = "publish")]
        retain: bool,
        /// Print JSON (with the server).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: client::ConnectArgs,
    },
    #[command(flatten)]
    Versions(policy_cli::VersionCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story on stdout; the gateway inside it logs only what is wrong.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: not in a journal, a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// `DATA/detection.toml` with every default and a comment per key, so operators find what they
/// can tune (the same as having no file).
fn write_detection_defaults(data: &std::path::Path) -> Result<()> {
    let path = data.join("detection.toml");
    if !path.exists() {
        tollgate_control::files::write_file(
            &path,
            tollgate_detect::DetectionConfig::default_toml().as_bytes(),
            false,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init {
            data,
            dns,
            ips,
            import_ca,
        } => {
            let mut opts = init_options();
            if let Some(paths) = import_ca {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                };
                if let [cert, key] = paths.as_slice() {
                    opts.import_root = Some((read(cert)?, read(key)?));
                }
            }
            if !dns.is_empty() {
                opts.dns_names = dns;
            }
            if !ips.is_empty() {
                opts.ips = ips;
            }
            opts.crl_urls = crl_urls(&opts.dns_names, &opts.ips);
            opts.config_toml = config::default_config_toml(&opts.dns_names, &opts.ips);
            let report = tollgate_control::ca::init(&data, &opts)?;
            write_detection_defaults(&data)?;
            print_init_report(&data, &report, None);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            data,
            config,
            mqtt_listen,
            admin_listen,
            metrics_listen,
        } => {
            // A missing or empty directory (systemd's StateDirectory= hands over an empty one)
            // is initialised; anything else is used as it is.
            let empty = std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none());
            let initialised = if empty {
                let report = tollgate_control::ca::init(&data, &init_options())?;
                write_detection_defaults(&data)?;
                Some(report)
            } else {
                None
            };
            let mut cfg = config::Config::load(&data, config.as_deref())?;
            if let Some(a) = mqtt_listen {
                cfg.mqtt_listen = a;
            }
            if let Some(report) = &initialised {
                print_init_report(&data, report, Some(cfg.mqtt_listen.port()));
            }
            if let Some(a) = admin_listen {
                cfg.admin_listen = a;
            }
            if let Some(a) = metrics_listen {
                cfg.observability.metrics_listen = Some(a);
            }
            runtime()?.block_on(serve::serve(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Device(cmd) => runtime()?.block_on(device(cmd)),
        Command::Policy(cmd) => policy(cmd),
        Command::Groups { json, conn } => runtime()?.block_on(policy_cli::groups(json, &conn)),
        Command::Agent(cmd) => runtime()?.block_on(agent_cmd(cmd)),
        Command::Supplier(cmd) => runtime()?.block_on(supplier_cmd(cmd)),
        Command::Model(cmd) => runtime()?.block_on(inventory_cli::model(cmd)),
        Command::Sbom(cmd) => runtime()?.block_on(inventory_cli::sbom(cmd)),
        Command::Advisories(cmd) => runtime()?.block_on(inventory_cli::advisories(cmd)),
        Command::Vex(cmd) => runtime()?.block_on(inventory_cli::vex(cmd)),
        Command::Alerts(args) => runtime()?.block_on(alerts_cli::alerts(args)),
        Command::Audit(cmd) => runtime()?.block_on(audit_cli::audit(cmd)),
        Command::Dashboard(cmd) => runtime()?.block_on(dashboard_cli::dashboard(cmd)),
        Command::Compliance(cmd) => match cmd {
            inventory_cli::ComplianceCommand::Check { .. } => {
                tokio::runtime::Builder::new_current_thread()
                    .build()?
                    .block_on(inventory_cli::compliance(cmd))
            }
            cmd => runtime()?.block_on(inventory_cli::compliance(cmd)),
        },
        Command::Ca(CaCommand::Status { conn }) => runtime()?.block_on(async {
            let v = client::AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/ca", None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }),
        Command::Ca(CaCommand::RenewServer {
            dns,
            ips,
            validity_days,
            conn,
        }) => runtime()?.block_on(operator_cli::renew_server(dns, ips, validity_days, &conn)),
        Command::Operator(cmd) => runtime()?.block_on(operator_cli::operator(cmd)),
        Command::Store(cmd) => store_cmd(cmd),
        Command::Ca(CaCommand::Rotate { data, config }) => {
            let cfg = config::Config::load(&data, config.as_deref())?;
            // Certificates issued by the old CA live at most this long; add a day of margin.
            let longest = cfg
                .group_lifetimes
                .values()
                .copied()
                .fold(cfg.cert_lifetime, time::Duration::max);
            let (name, until) =
                tollgate_control::ca::rotate(&data, longest + time::Duration::days(1))?;
            let left = u64::try_from(until - time::OffsetDateTime::now_utc().unix_timestamp())
                .unwrap_or(0);
            println!(
                "New issuing CA: {name}. The previous one stays trusted until {} ({} from now), when the last certificate it issued has expired.",
                tollgate_control::timefmt::rfc3339(until),
                human::span(left)
            );
            eprintln!("Restart `tollgate serve` to start issuing from it.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn store_cmd(cmd: StoreCommand) -> Result<ExitCode> {
    use tollgate_sessions as sessions;
    let (data, config, compact) = match cmd {
        StoreCommand::Check { data, config } => (data, config, false),
        StoreCommand::Compact { data, config } => (data, config, true),
    };
    let cfg = config::Config::load(&data, config.as_deref())?;
    let path = cfg
        .sessions_file
        .unwrap_or_else(|| datadir::Layout::new(&data).sessions());
    if compact {
        // The same lock `serve` holds: compacting under a running server is refused.
        let _lock = datadir::DataDirLock::acquire(&data, "store compact")?;
        let r =
            sessions::compact(&path).with_context(|| format!("compacting {}", path.display()))?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = sessions::check(&path).with_context(|| format!("checking {}", path.display()))?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    if r.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("the session store is damaged (see the report above)");
        Ok(ExitCode::from(1))
    }
}

/// The server certificate's CRL distribution point: the issuing CA's CRL on the control
/// listener's default port, at the certificate's first name.
fn crl_urls(dns: &[String], ips: &[IpAddr]) -> Vec<String> {
    let port = config::FileConfig::default().admin.listen.port();
    let host = match (dns.first(), ips.first()) {
        (Some(d), _) => d.clone(),
        (None, Some(IpAddr::V6(v6))) => format!("[{v6}]"),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => return Vec::new(),
    };
    vec![format!("https://{host}:{port}/crl")]
}

fn init_options() -> tollgate_control::InitOptions {
    let mut opts = tollgate_control::InitOptions::default();
    opts.crl_urls = crl_urls(&opts.dns_names, &opts.ips);
    opts.config_toml = config::default_config_toml(&opts.dns_names, &opts.ips);
    opts
}

/// What `init` (or the first `serve`) made, and what to do next. `serving`: the MQTT port of
/// the server that is starting now (the hint then does not tell the reader to start one).
fn print_init_report(
    data: &std::path::Path,
    report: &tollgate_control::InitReport,
    serving: Option<u16>,
) {
    eprintln!("Initialised {}:", data.display());
    for f in &report.files {
        eprintln!("  {}", f.display());
    }
    let d = data.display();
    let (first, port) = match serving {
        Some(port) => (
            "The server is starting. In another terminal, add a device and connect it:".to_owned(),
            port,
        ),
        None => (
            format!(
                "Next: start the server, add a device and connect it:\n  tollgate serve --data {d}"
            ),
            config::FileConfig::default().mqtt.listen.port(),
        ),
    };
    eprintln!(
        "\n{first}\n  \
         tollgate device add sensor-1 --group sensors --out ./sensor-1 --data {d}\n  \
         mosquitto_pub -h localhost -p {port} --cafile sensor-1/ca.crt --cert sensor-1/sensor-1.crt \
         --key sensor-1/sensor-1.key -i sensor-1 -t devices/sensor-1/telemetry -m hello\n\
         The policy in {d}/policy.toml denies everything until you write rules (docs/policy.md)."
    );
}

async fn device(cmd: DeviceCommand) -> Result<ExitCode> {
    match cmd {
        DeviceCommand::Add {
            id,
            groups,
            out,
            reactivate,
            conn,
        } => {
            let c = client::AdminClient::new(&conn)?;
            let v = c
                .call(
                    Method::POST,
                    "/api/v1/devices",
                    Some(
                        serde_json::json!({ "id": id, "groups": groups, "reactivate": reactivate }),
                    ),
                )
                .await?;
            let field = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let files = client::write_device_files(
                &out,
                &id,
                &field("cert_pem"),
                &field("key_pem"),
                &field("ca_pem"),
            )?;
            let again = if v.get("reactivated").and_then(|x| x.as_bool()) == Some(true) {
                " again (it was revoked)"
            } else {
                ""
            };
            eprintln!(
                "Device {id} registered{again} (serial {}).",
                field("serial")
            );
            for f in files {
                println!("{}", f.display());
            }
        }
        DeviceCommand::Token {
            id,
            groups,
            ttl,
            change_groups,
            conn,
        } => {
            let c = client::AdminClient::new(&conn)?;
            let v = c
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{id}/token"),
                    Some(serde_json::json!({ "groups": groups, "ttl_secs": ttl, "change_groups": change_groups })),
                )
                .await?;
            let token = v.get("token").and_then(|t| t.as_str()).unwrap_or_default();
            println!("{token}");
        }
        DeviceCommand::List { json, conn } => {
            let v = client::AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/devices", None)
                .await?;
            // The newest unrevoked certificate's expiry, as a column of its own.
            let mut items: Vec<serde_json::Value> = v.as_array().cloned().unwrap_or_default();
            for d in &mut items {
                let expiry = d
                    .get("certificates")
                    .and_then(|c| c.as_array())
                    .into_iter()
                    .flatten()
                    .filter(|c| c.get("revoked_at").is_none_or(|r| r.is_null()))
                    // RFC 3339 strings in UTC: the greatest is the latest.
                    .filter_map(|c| c.get("not_after").and_then(|n| n.as_str()))
                    .max()
                    .map(str::to_owned);
                d["cert_expires"] = expiry.into();
                let connected = d.get("connected").and_then(|x| x.as_bool()) == Some(true);
                d["connected_text"] = if connected { "yes" } else { "no" }.into();
                if connected {
                    d["last_seen_text"] = "now".into();
                } else {
                    d["last_seen_text"] =
                        table::when_secs(d.get("last_seen").unwrap_or(&serde_json::Value::Null))
                            .into();
                }
            }
            table::print_listing(
                json,
                &v,
                &items,
                &[
                    table::Col("DEVICE", "id", table::Shown::Text),
                    table::Col("STATE", "state", table::Shown::Text),
                    table::Col("CONNECTED", "connected_text", table::Shown::Text),
                    table::Col("LAST SEEN", "last_seen_text", table::Shown::Text),
                    table::Col("LAST ADDRESS", "last_address", table::Shown::Text),
                    table::Col("CERT EXPIRES", "cert_expires", table::Shown::Time),
                    table::Col("GROUPS", "groups", table::Shown::Text),
                ],
                "no devices",
            )?;
        }
        DeviceCommand::Stats { id, json, conn } => {
            return alerts_cli::device_stats(&id, json, &conn).await;
        }
        DeviceCommand::SetGroups { id, groups, conn } => {
            return operator_cli::set_groups(&id, &groups, &conn).await;
        }
        DeviceCommand::Label {
            id,
            set,
            remove,
            conn,
        } => return operator_cli::label(&id, &set, &remove, &conn).await,
        DeviceCommand::Delete {
            id,
            reason,
            yes,
            conn,
        } => return operator_cli::delete(&id, &reason, yes, &conn).await,
        DeviceCommand::Show { id, conn } => {
            let v = client::AdminClient::new(&conn)?
                .call(Method::GET, &format!("/api/v1/devices/{id}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DeviceCommand::Inventory {
            id,
            supplier,
            model,
            serial,
            firmware,
            labels,
            conn,
        } => {
            let client = client::AdminClient::new(&conn)?;
            let path = format!("/api/v1/devices/{id}/inventory");
            let unchanged = supplier.is_none()
                && model.is_none()
                && serial.is_none()
                && firmware.is_none()
                && labels.is_empty();
            let v = if unchanged {
                client.call(Method::GET, &path, None).await?
            } else {
                let mut map = serde_json::Map::new();
                for l in &labels {
                    let (k, v) = l
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("label {l:?}: expected KEY=VALUE"))?;
                    map.insert(k.to_owned(), v.into());
                }
                client
                    .call(
                        Method::PUT,
                        &path,
                        Some(serde_json::json!({
                            "supplier": supplier, "model": model, "hardware_serial": serial,
                            "firmware": firmware, "labels": map,
                        })),
                    )
                    .await?
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        DeviceCommand::Quarantine { id, reason, conn } => {
            let v = client::AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{id}/quarantine"),
                    Some(serde_json::json!({ "reason": reason })),
                )
                .await?;
            let live = if v.get("connected").and_then(|x| x.as_bool()) == Some(true) {
                "; its live connection is confined now"
            } else {
                ""
            };
            println!("Quarantined {id}{live}.");
        }
        DeviceCommand::Release { id, all, conn } => {
            let v = client::AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{id}/release"),
                    Some(serde_json::json!({ "all": all })),
                )
                .await?;
            let still: Vec<String> = v
                .get("quarantine")
                .and_then(|q| q.as_array())
                .into_iter()
                .flatten()
                .filter_map(|q| q.get("source").and_then(|s| s.as_str()).map(str::to_owned))
                .collect();
            if still.is_empty() {
                println!("Released {id}: its normal policy applies again.");
            } else {
                println!(
                    "Removed the operator's quarantine of {id}; still quarantined by: {}.",
                    still.join(", ")
                );
            }
        }
        DeviceCommand::Revoke {
            mut ids,
            from_file,
            reason,
            conn,
        } => {
            if let Some(f) = from_file {
                ids.extend(read_id_list(&f)?);
            }
            if ids.len() != 1 {
                return revoke_many(&client::AdminClient::new(&conn)?, &ids, &reason).await;
            }
            let id = ids.swap_remove(0);
            let v = client::AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    &format!("/api/v1/devices/{id}/revoke"),
                    Some(serde_json::json!({ "reason": reason })),
                )
                .await?;
            let closed = v
                .get("sessions_closed")
                .and_then(|x| x.as_u64())
                .unwrap_or(0);
            let serials = v
                .get("serials")
                .and_then(|x| x.as_array())
                .map_or(0, Vec::len);
            println!("Revoked {id}: {serials} certificate(s), {closed} live connection(s) closed.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Device ids from a file (or standard input for `-`): one per line, blank lines and `#`
/// comments skipped.
fn read_id_list(path: &Path) -> Result<Vec<String>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading ids from standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Revoke `ids` through `POST /api/v1/revocations`, in requests that fit the admin API's
/// default body limit (64 KiB): each request is all or nothing.
async fn revoke_many(
    admin: &client::AdminClient,
    ids: &[String],
    reason: &str,
) -> Result<ExitCode> {
    /// Bytes of ids per request, leaving room for the reason and JSON punctuation.
    const BATCH_BYTES: usize = 48 * 1024;
    if ids.is_empty() {
        anyhow::bail!("no device id given");
    }
    let (mut devices, mut certs, mut closed) = (0usize, 0usize, 0u64);
    let mut start = 0;
    while start < ids.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < ids.len() && (end == start || bytes + ids[end].len() + 3 <= BATCH_BYTES) {
            bytes += ids[end].len() + 3;
            end += 1;
        }
        let batch = &ids[start..end];
        let v = admin
            .call(
                Method::POST,
                "/api/v1/revocations",
                Some(serde_json::json!({ "devices": batch, "reason": reason })),
            )
            .await
            .with_context(|| {
                format!(
                    "revoking {} device(s) from {}; the {start} before it were revoked",
                    batch.len(),
                    batch.first().map_or("", String::as_str),
                )
            })?;
        for r in v.as_array().map_or(&[][..], Vec::as_slice) {
            devices += 1;
            certs += r
                .get("serials")
                .and_then(|x| x.as_array())
                .map_or(0, Vec::len);
            closed += r
                .get("sessions_closed")
                .and_then(|x| x.as_u64())
                .unwrap_or(0);
        }
        start = end;
    }
    println!(
        "Revoked {devices} device(s): {certs} certificate(s), {closed} live connection(s) closed."
    );
    Ok(ExitCode::SUCCESS)
}

/// "90s", "30m", "1h", "2d" or plain seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 1h or 2d"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

async fn supplier_cmd(cmd: SupplierCommand) -> Result<ExitCode> {
    match cmd {
        SupplierCommand::Add {
            name,
            ca,
            groups,
            allow_reenroll,
            disclosure_contact,
            support_until,
            conn,
        } => {
            let ca_pem = match &ca {
                Some(ca) => std::fs::read_to_string(ca)
                    .with_context(|| format!("reading {}", ca.display()))?,
                None => String::new(),
            };
            client::AdminClient::new(&conn)?
                .call(
                    Method::POST,
                    "/api/v1/suppliers",
                    Some(serde_json::json!({
                        "name": name, "ca_pem": ca_pem, "groups": groups,
                        "allow_reenroll": allow_reenroll,
                        "disclosure_contact": disclosure_contact, "support_end": support_until,
                    })),
                )
                .await?;
            println!("Supplier {name} registered.");
        }
        SupplierCommand::Set {
            name,
            disclosure_contact,
            support_until,
            conn,
        } => {
            let v = client::AdminClient::new(&conn)?
                .call(
                    Method::PATCH,
                    &format!("/api/v1/suppliers/{name}"),
                    Some(serde_json::json!({
                        "disclosure_contact": disclosure_contact, "support_end": support_until,
                    })),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        SupplierCommand::List { json, conn } => {
            let v = client::AdminClient::new(&conn)?
                .call(Method::GET, "/api/v1/suppliers", None)
                .await?;
            table::print_listing(
                json,
                &v,
                v.as_array().map_or(&[][..], Vec::as_slice),
                &[
                    table::Col("SUPPLIER", "name", table::Shown::Text),
                    table::Col("GROUPS", "groups", table::Shown::Text),
                    table::Col("RE-ENROLL", "allow_reenroll", table::Shown::Text),
                    table::Col(
                        "DISCLOSURE CONTACT",
                        "disclosure_contact",
                        table::Shown::Text,
                    ),
                    table::Col("SUPPORT UNTIL", "support_end", table::Shown::Time),
                ],
                "no suppliers",
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn agent_cmd(cmd: AgentCommand) -> Result<ExitCode> {
    match cmd {
        AgentCommand::Enroll {
            server,
            token,
            bootstrap_cert,
            bootstrap_key,
            id,
            out,
            cacert,
            label,
        } => {
            let proof = match (&token, &bootstrap_cert, &bootstrap_key) {
                (Some(t), _, _) => agent::Proof::Token(t),
                (None, Some(cert), Some(key)) => agent::Proof::Bootstrap { cert, key },
                _ => anyhow::bail!("pass --token, or --bootstrap-cert with --bootstrap-key"),
            };
            let done = agent::enroll(
                &server,
                proof,
                &id,
                &out,
                cacert.as_deref(),
                label.as_deref(),
            )
            .await?;
            if let Some(note) = &done.note {
                eprintln!("note: {note}");
            }
            eprintln!(
                "enrolled {id}: {}\nMQTT clients: --cert {} --key {} --cafile {}",
                done.cert.display(),
                done.cert.display(),
                out.join(format!("{id}.key")).display(),
                done.ca.display()
            );
        }
        AgentCommand::Renew {
            server,
            out,
            daemon,
            rotate_key,
            reload,
            label,
        } => {
            agent::renew(
                &server,
                &out,
                rotate_key,
                daemon,
                reload.as_deref(),
                label.as_deref(),
            )
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Read and parse a policy file: `Err` outside for a file that cannot be read, inside for one
/// that does not parse (printed by the caller, exit 1).
fn load(file: &Path) -> Result<Result<tollgate_policy::Policy, String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(
        tollgate_policy::Policy::parse(&text, &file.display().to_string())
            .map_err(|e| e.to_string()),
    )
}

fn policy(cmd: PolicyCommand) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Versions(cmd) => runtime()?.block_on(policy_cli::versions(cmd)),
        PolicyCommand::Check { file } => match load(&file)? {
            Ok(p) => {
                println!("{}: ok ({} rules)", file.display(), p.rules().len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        PolicyCommand::Suggest {
            since,
            group,
            out,
            json,
            conn,
        } => runtime()?.block_on(policy_cli::suggest(
            &since,
            group.as_deref(),
            out.as_deref(),
            json,
            &conn,
        )),
        PolicyCommand::Lint {
            file,
            observed,
            since,
            conn,
        } => match load(&file)? {
            Ok(p) => {
                let mut lints = p.lint();
                if observed {
                    let seen = runtime()?.block_on(policy_cli::observations(&conn, &since))?;
                    println!(
                        "# {} observation(s) over {since} from the running server",
                        seen.len()
                    );
                    lints.extend(p.unused_grants(&seen));
                }
                for l in &lints {
                    println!("{l}");
                }
                let warnings = lints
                    .iter()
                    .filter(|l| l.severity == tollgate_policy::Severity::Warning)
                    .count();
                println!(
                    "{}: {} rules, {warnings} warning(s)",
                    file.display(),
                    p.rules().len()
                );
                Ok(if warnings > 0 {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                })
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        PolicyCommand::Explain {
            file,
            device,
            groups,
            publish,
            subscribe,
            retain,
            json,
            conn,
        } => {
            let (action, topic) = match (publish, subscribe) {
                (Some(t), _) if retain => (tollgate_policy::Action::Retain, t),
                (Some(t), _) => (tollgate_policy::Action::Publish, t),
                (None, Some(t)) => (tollgate_policy::Action::Subscribe, t),
                (None, None) => anyhow::bail!("pass --publish TOPIC or --subscribe FILTER"),
            };
            let Some(file) = file else {
                return runtime()?.block_on(policy_cli::explain_live(
                    &conn, &device, action, &topic, json,
                ));
            };
            explain_offline(&file, &device, &groups, action, &topic)
        }
    }
}

/// `tollgate policy explain FILE`: the file's policy, for the groups given.
fn explain_offline(
    file: &Path,
    device: &str,
    groups: &[String],
    action: tollgate_policy::Action,
    topic: &str,
) -> Result<ExitCode> {
    match load(file)? {
        Ok(p) => {
            let id = tollgate_policy::Identity {
                device_id: device,
                groups,
            };
            let ex = p.explain(&id, action, topic);
            println!("{ex}");
            Ok(if ex.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand's arguments are consistent (clap checks this lazily, at parse time
    /// of that subcommand only: a clash would otherwise surface as a panic in front of a user).
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
