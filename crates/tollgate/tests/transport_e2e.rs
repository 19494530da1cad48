//! Transport health end to end: real paho-mqtt devices run inside network namespaces joined to
//! the host by veth pairs, and nftables drops a share of their packets (`numgen random`; `tc
//! netem` is not available on every kernel). Loss on one device of a cohort raises
//! `link_degradation` for that device; the same loss on most of a cohort raises one
//! `network_degradation` for the cohort instead of one alert per device, and mitigates nothing.
//!
//! Needs root, `ip netns` and `nft`; without them it says so and passes vacuously.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::fleet::{device_spec, install_rules, Fleet, DETECTION, POLICY};
use support::Server;

/// A network namespace with a veth pair to the host; removed on drop.
struct Netns {
    name: String,
    host_if: String,
    pub host_ip: String,
}

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    fn new(tag: &str, subnet: u8) -> Option<Netns> {
        let id = std::process::id() % 100_000;
        let name = format!("tg{id}{tag}");
        let host_if = format!("tg{id}{tag}h");
        let ns_if = format!("tg{id}{tag}d");
        let host_ip = format!("10.213.{subnet}.1");
        let ns_ip = format!("10.213.{subnet}.2/30");
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
        };
        let ok = run(&["ip", "netns", "add", &name])
            && run(&[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns",
                &name,
            ])
            && run(&[
                "ip",
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &host_if,
            ])
            && run(&["ip", "link", "set", &host_if, "up"])
            && run(&["ip", "-n", &name, "addr", "add", &ns_ip, "dev", &ns_if])
            && run(&["ip", "-n", &name, "link", "set", &ns_if, "up"])
            && run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    /// Drop `percent` % of the namespace's packets, both ways.
    fn lose(&self, percent: u8) -> bool {
        let nft = |rule: &str| {
            run(&[
                "ip",
                "netns",
                "exec",
                &self.name,
                "sh",
                "-c",
                &format!("nft {rule}"),
            ])
        };
        nft("add table inet loss")
            && nft("'add chain inet loss in { type filter hook input priority 0; }'")
            && nft("'add chain inet loss out { type filter hook output priority 0; }'")
            && nft(&format!(
                "add rule inet loss in numgen random mod 100 '<' {percent} drop"
            ))
            && nft(&format!(
                "add rule inet loss out numgen random mod 100 '<' {percent} drop"
            ))
    }

    fn exec(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

fn can_use_netns() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        return Err("not root".into());
    }
    for tool in ["ip", "nft"] {
        if !run(&["sh", "-c", &format!("command -v {tool} >/dev/null")]) {
            return Err(format!("{tool} is missing"));
        }
    }
    Ok(())
}

fn alerts(s: &Server) -> Vec<Value> {
    s.events()
        .into_iter()
        .filter(|e| e["type"] == "alert")
        .collect()
}

#[test]
fn loss_on_one_device_is_link_degradation_and_on_a_cohort_one_network_degradation() {
    if let Err(why) = can_use_netns() {
        eprintln!("SKIPPED: packet-loss injection needs root, ip netns and nftables ({why})");
        return;
    }
    let mut s = Server::start_with(
        &[("sample_interval_ms = 10000", "sample_interval_ms = 1000")],
        POLICY,
    );
    // Devices in the namespaces dial the host side of their veth.
    s.stop();
    s.mqtt_host = "0.0.0.0".into();
    s.spawn();
    install_rules(&s, DETECTION);
    let (Some(cohort_ns), Some(single_ns)) = (Netns::new("c", 1), Netns::new("s", 2)) else {
        panic!("creating the network namespaces failed (root and ip netns are there)");
    };
    // Cohort "plc": three of its four devices behind the lossy namespace; cohort "scan": one
    // of four.
    let mut groups: Vec<(&str, &str, Option<&Netns>)> = Vec::new();
    for i in 1..=3 {
        groups.push((["plc-1", "plc-2", "plc-3"][i - 1], "plc", Some(&cohort_ns)));
    }
    groups.push(("plc-4", "plc", None));
    groups.push(("scan-1", "scan", Some(&single_ns)));
    for id in ["scan-2", "scan-3", "scan-4"] {
        groups.push((id, "scan", None));
    }
    let mut fleets = Vec::new();
    let mut local = Vec::new();
    let mut ca = None;
    let mut in_ns: Vec<(&Netns, Vec<Value>)> = vec![(&cohort_ns, vec![]), (&single_ns, vec![])];
    for (id, group, ns) in &groups {
        let d = s.add_device(id, &[group]);
        ca = Some(d.ca.clone());
        let spec = device_spec(&d, json!({ "echo": true }));
        match ns {
            Some(n) => in_ns
                .iter_mut()
                .find(|(x, _)| x.name == n.name)
                .unwrap()
                .1
                .push(spec),
            None => local.push(spec),
        }
    }
    let ca = ca.unwrap();
    let plan = |host: &str, devices: Vec<Value>| {
        json!({
            "host": host, "port": s.mqtt_port, "ca": ca, "server_name": "localhost",
            "period": 0.25, "duration": 140, "devices": devices, "attacks": [],
        })
    };
    fleets.push(Fleet::start(plan("127.0.0.1", local)));
    for (ns, devices) in in_ns {
        let exec = ns.exec();
        let exec: Vec<&str> = exec.iter().map(String::as_str).collect();
        fleets.push(Fleet::start_in(&exec, plan(&ns.host_ip, devices)));
    }
    for f in &fleets {
        f.wait_ready();
    }
    // Learn for 30 s, then lose 10 % of the packets in both namespaces.
    std::thread::sleep(Duration::from_secs(30));
    assert!(cohort_ns.lose(10) && single_ns.lose(10), "nft rules");
    let onset = Instant::now();
    let deadline = onset + Duration::from_secs(60);
    let (mut single, mut cohort) = (None, None);
    while Instant::now() < deadline && (single.is_none() || cohort.is_none()) {
        for a in alerts(&s) {
            if a["state"] != "active" {
                continue;
            }
            if a["detector"] == "link_degradation" && a["device"] == "scan-1" && single.is_none() {
                single = Some((onset.elapsed(), a.clone()));
            }
            if a["detector"] == "network_degradation" && cohort.is_none() {
                cohort = Some((onset.elapsed(), a.clone()));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let all = alerts(&s);
    let (took, a) =
        single.unwrap_or_else(|| panic!("no link_degradation for scan-1 within 60 s:\n{all:#?}"));
    eprintln!("link_degradation after {took:?}: {}", a["explanation"]);
    let (took, c) =
        cohort.unwrap_or_else(|| panic!("no network_degradation within 60 s:\n{all:#?}"));
    eprintln!("network_degradation after {took:?}: {}", c["explanation"]);
    assert!(c["device"].is_null(), "{c:#}");
    assert_eq!(c["cohort"], "group:plc", "{c:#}");
    assert!(
        c["mitigation"].as_str().unwrap().starts_with("notify"),
        "{c:#}"
    );
    // One cohort alert, not one per device, and nothing on the clean devices.
    let raised = |det: &str| {
        all.iter()
            .filter(|a| a["detector"] == det && a["state"] == "active")
            .map(|a| a["id"].as_str().unwrap_or("").to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(raised("network_degradation").len(), 1, "{all:#?}");
    // Members that crossed the threshold a tick before the cohort did may have had a
    // per-device alert; the cohort alert clears them.
    let early: Vec<&Value> = all
        .iter()
        .filter(|a| a["detector"] == "link_degradation")
        .filter(|a| a["device"].as_str().is_some_and(|d| d.starts_with("plc-")))
        .collect();
    eprintln!(
        "per-device alerts in the degraded cohort before it was judged as one: {}",
        early.len()
    );
    for a in &all {
        let dev = a["device"].as_str().unwrap_or("");
        assert!(
            !["plc-4", "scan-2", "scan-3", "scan-4"].contains(&dev),
            "alert on a device with a clean link: {a:#}"
        );
    }
    // The degraded devices' stats show the retransmissions.
    let (st, stats) = s.admin_api("GET", "/api/v1/devices/scan-1/stats", None);
    assert_eq!(st, 200);
    let ratio = stats["transport"]["retrans_ratio"].as_f64().unwrap_or(0.0);
    assert!(ratio > 0.0, "{stats:#}");
    drop(fleets);
}
