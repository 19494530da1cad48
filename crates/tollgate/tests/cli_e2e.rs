//! The CLI's listings: a table for people by default (aligned, with dates, not Unix seconds),
//! `--json` for scripts, on every listing command.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use serde_json::Value;
use support::Server;

fn run(s: &Server, args: &[&str]) -> String {
    let out = s.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_listing_prints_a_table_and_json_on_request() {
    let s = Server::start();
    s.add_device("sensor-1", &["sensors"]);
    run(
        &s,
        &[
            "supplier",
            "add",
            "acme",
            "--disclosure-contact",
            "mailto:psirt@acme.example",
        ],
    );
    run(&s, &["model", "add", "Scanner-X2", "--supplier", "acme"]);

    let listings: &[(&[&str], &str, &str)] = &[
        (&["device", "list"], "DEVICE", "sensor-1"),
        (
            &["supplier", "list"],
            "SUPPLIER",
            "mailto:psirt@acme.example",
        ),
        (&["model", "list"], "MODEL", "Scanner-X2"),
        (&["sbom", "list"], "", "no SBOMs"),
        (&["advisories", "list"], "", "0 advisories"),
        (&["compliance", "waivers"], "", "no waivers"),
        (&["alerts", "suppressions"], "", "no suppressions in force"),
        (&["audit", "suppressions"], "", "no suppressions"),
    ];
    for (args, header, expect) in listings {
        let text = run(&s, args);
        assert!(text.contains(expect), "{args:?}:\n{text}");
        if !header.is_empty() {
            assert!(text.starts_with(header), "{args:?}:\n{text}");
        }
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "{args:?} prints a table, not JSON:\n{text}"
        );
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let json = run(&s, &with_json);
        serde_json::from_str::<Value>(&json)
            .unwrap_or_else(|e| panic!("{with_json:?} is not JSON: {e}\n{json}"));
    }
    // A device that connected and left: when and from where, as the list shows it.
    let dev = support::Device {
        id: "sensor-1".into(),
        cert: s.root.join("devices/sensor-1/sensor-1.crt"),
        key: s.root.join("devices/sensor-1/sensor-1.key"),
        ca: s.root.join("devices/sensor-1/ca.crt"),
        dir: s.root.join("devices/sensor-1"),
    };
    assert!(s
        .mosquitto_pub(&dev, &["-t", "devices/sensor-1/telemetry", "-m", "1"])
        .status
        .success());
    s.wait_event("disconnected", |e| {
        e["type"] == "disconnected" && e["device"] == "sensor-1"
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v: Value = serde_json::from_str(&run(&s, &["device", "list", "--json"])).unwrap();
        let d = &v[0];
        if d["last_address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
            && d["last_seen"].as_str().is_some_and(|t| t.ends_with('Z'))
            && d["connected"] == false
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Times are dates in the table, not Unix seconds.
    let devices = run(&s, &["device", "list"]);
    assert!(
        devices.lines().next().unwrap().contains("LAST SEEN"),
        "{devices}"
    );
    assert!(devices.contains("127.0.0.1:"), "{devices}");
    let row = devices.lines().find(|l| l.starts_with("sensor-1")).unwrap();
    assert!(
        row.contains("CERT EXPIRES") || row.contains('Z'),
        "{devices}"
    );
    let year = time::OffsetDateTime::now_utc().year();
    assert!(
        row.contains(&format!("{year}-")) || row.contains(&format!("{}-", year + 1)),
        "{row}"
    );
    let entries = run(&s, &["audit", "entries", "--limit", "3", "--json"]);
    let v: Value = serde_json::from_str(&entries).unwrap();
    assert!(
        v["entries"].as_array().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
}
