//! The fleet simulator against the real `tollgate` binary: 200 devices enrolled through
//! Tollgate's own PKI report steadily over mTLS for a time-compressed run (6-second buckets,
//! 10x), and no detector raises an alert. Detection of each attack is checked in the `tollgate`
//! crate's `detection_e2e` and `transport_e2e` tests, and measured over repetitions by
//! `tollgate-bench simulate` (bench/results/detection/).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

use std::path::PathBuf;
use std::process::Command;

/// The `tollgate` binary of the same build (`cargo test --workspace` builds it beside ours).
fn tollgate_bin() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_tollgate-bench"));
    let bin = exe.with_file_name("tollgate");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo test --workspace) first",
        bin.display()
    );
    bin
}

#[test]
fn an_attack_free_fleet_of_200_devices_raises_no_alert() {
    let work = std::env::temp_dir().join(format!("tollgate-sim-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let json = work.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-bench"))
        .args([
            "simulate",
            "--no-attacks",
            "--devices",
            "200",
            "--duration",
            "150",
        ])
        .arg("--tollgate")
        .arg(tollgate_bin())
        .arg("--work")
        .arg(&work)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null);
    assert!(
        out.status.success(),
        "simulate failed ({}):\n{stderr}\n{report:#}",
        out.status
    );
    assert_eq!(report["devices"], 200, "{report:#}");
    assert_eq!(report["false_alarms"], 0, "{report:#}");
    assert_eq!(report["client_errors"], 0, "{report:#}");
    assert!(
        report["messages_published"].as_u64().unwrap() > 200 * 100,
        "{report:#}"
    );
    eprintln!(
        "attack-free: {} devices, {:.1} real device-hours ({:.0} simulated), {} false alarms",
        report["devices"],
        report["device_hours_real"].as_f64().unwrap_or(0.0),
        report["device_hours_simulated"].as_f64().unwrap_or(0.0),
        report["false_alarms"]
    );
    let _ = std::fs::remove_dir_all(&work);
}
