//! The systemd units under `dist/` are valid (`systemd-analyze verify`), and the gateway's
//! unit starts the real binary the way systemd would (its `Environment=` and `ExecStart=`
//! arguments) and stops gracefully on its `KillSignal` within its `TimeoutStopSec`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

fn dist(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dist/systemd")
        .join(name)
}

/// `Key=value` lines of a unit (the last wins, as in systemd for these keys).
fn setting(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_systemd_units_verify() {
    let dir = support::temp_dir("units");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["tollgate.service", "tollgate-agent.service"] {
        let text = std::fs::read_to_string(dist(name)).unwrap();
        assert!(text.contains("/usr/local/bin/tollgate"), "{name}");
        // verify checks that ExecStart's program exists: point it at the binary under test.
        let unit = dir.join(name);
        std::fs::write(&unit, text.replace("/usr/local/bin/tollgate", BIN)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .expect("systemd-analyze (Debian: systemd)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_gateway_unit_starts_the_server_and_stops_it_gracefully() {
    let unit = std::fs::read_to_string(dist("tollgate.service")).unwrap();
    let exec = setting(&unit, "ExecStart").pop().unwrap();
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/tollgate"));
    let args: Vec<&str> = words.collect();
    assert_eq!(
        args,
        ["serve"],
        "the data directory comes from the environment"
    );
    assert_eq!(
        setting(&unit, "Environment"),
        ["TOLLGATE_DATA=/var/lib/tollgate"]
    );
    assert_eq!(setting(&unit, "StateDirectory"), ["tollgate"]);
    assert_eq!(setting(&unit, "KillSignal"), ["SIGTERM"]);
    let stop_within: u64 = setting(&unit, "TimeoutStopSec")[0].parse().unwrap();

    // The state directory as systemd would hand it over: present, empty.
    let data = support::temp_dir("unit-data");
    std::fs::create_dir_all(&data).unwrap();
    let free = || format!("127.0.0.1:{}", support::free_port());
    let mqtt_port = support::free_port();
    let mut child = Command::new(BIN)
        .args(&args)
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")])
        .args(["--admin-listen", &free()])
        .args(["--metrics-listen", &free()])
        .env("TOLLGATE_DATA", &data)
        .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    let addresses = data.join("run/addresses.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !addresses.exists() {
        assert!(
            Instant::now() < deadline,
            "not started: {}",
            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
        );
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first start initialised the state directory, and its hint fits a running server
    // (regression: it said "start the server" and named port 8883 whatever was given).
    assert!(data.join("ca/root.crt").exists());
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("The server is starting"), "{log}");
    assert!(!log.contains("Next: start the server"), "{log}");
    assert!(log.contains(&format!("-p {mqtt_port} ")), "{log}");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(stop_within);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "not stopped within TimeoutStopSec"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&data);
}
