//! The event log end to end: every event has a sequence number, the numbers are contiguous
//! and continue across a graceful restart with nothing lost at shutdown, and an overflowing
//! event queue is recorded as an explicit loss without a hole in the numbering.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use serde_json::{json, Value};
use support::{Server, EXAMPLE_POLICY};

/// Every line of events.log, parsed (a line that is not JSON fails the test).
fn raw_events(s: &Server) -> Vec<Value> {
    std::fs::read_to_string(s.data.join("events.log"))
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("events.log line {}: {e}: {l:?}", i + 1))
        })
        .collect()
}

/// Check that the numbering is 1, 2, 3, ... in file order, where an `events_lost` line (no
/// `seq` of its own) covers `first_seq..=last_seq`. Returns the last number.
fn assert_contiguous(events: &[Value]) -> u64 {
    let mut next = 1u64;
    for (i, e) in events.iter().enumerate() {
        if let Some(seq) = e["seq"].as_u64() {
            assert_eq!(
                seq,
                next,
                "line {}: seq {seq}, expected {next}: {e}\n(around: {:#?})",
                i + 1,
                &events[i.saturating_sub(2)..(i + 2).min(events.len())]
            );
            next += 1;
        } else if e["type"] == "events_lost" {
            let (first, last) = (
                e["first_seq"].as_u64().unwrap(),
                e["last_seq"].as_u64().unwrap(),
            );
            assert_eq!(first, next, "line {}: {e}", i + 1);
            assert!(last >= first, "line {}: {e}", i + 1);
            assert_eq!(e["count"].as_u64(), Some(last - first + 1), "{e}");
            assert!(e["consumer"].is_string(), "{e}");
            next = last + 1;
        } else {
            panic!("line {} has no seq: {e}", i + 1);
        }
    }
    next - 1
}

fn position(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

#[test]
fn event_sequence_numbers_are_contiguous_and_continue_across_a_graceful_restart() {
    let mut s = Server::start();
    let sensor = s.add_device("sensor-1", &["sensors"]);
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "$SYS/first-run", "payload": "x", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0x87);
    // A client still connected at shutdown, and one last event just before it: the PUBACK
    // 0x87 comes after the publish_denied event was emitted, and the stop does not wait for
    // the event to reach the file.
    let mut live = s.paho_background(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "$SYS/last-before-stop", "payload": "x", "qos": 1},
            {"op": "wait_disconnect", "timeout": 15}
        ]),
    );
    assert_eq!(live.wait_step(1)["rc"], 0x87);
    s.stop();
    let r = live.join().unwrap();
    assert_eq!(r[2]["disconnect"]["rc"], 0x8B, "{r:?}");

    let first = raw_events(&s);
    let last_first_run = assert_contiguous(&first);
    assert!(
        position(&first, |e| e["type"] == "server_started").is_some(),
        "{first:#?}"
    );
    let stopping = position(&first, |e| e["type"] == "server_stopping")
        .unwrap_or_else(|| panic!("no server_stopping: {first:#?}"));
    assert!(
        position(&first, |e| e["type"] == "publish_denied"
            && e["topic"] == "$SYS/last-before-stop")
        .is_some(),
        "the last event before the stop is missing: {first:#?}"
    );
    // Events emitted during the shutdown itself (the live client's disconnection) are kept.
    assert!(
        first[stopping..]
            .iter()
            .any(|e| e["type"] == "disconnected" && e["device"] == "sensor-1"),
        "the disconnection during shutdown is missing: {:#?}",
        &first[stopping..]
    );

    s.spawn();
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish", "topic": "$SYS/second-run", "payload": "x", "qos": 1},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["rc"], 0x87);
    s.stop();
    let all = raw_events(&s);
    let last = assert_contiguous(&all);
    assert!(last > last_first_run, "{all:#?}");
    assert_eq!(
        all[first.len()]["seq"].as_u64(),
        Some(last_first_run + 1),
        "the restarted server continues the numbering: {}",
        all[first.len()]
    );
    assert_eq!(
        all.iter().filter(|e| e["type"] == "server_started").count(),
        2
    );
    assert_eq!(
        all.iter()
            .filter(|e| e["type"] == "server_stopping")
            .count(),
        2
    );
    assert!(all[first.len()..]
        .iter()
        .any(|e| e["type"] == "publish_denied" && e["topic"] == "$SYS/second-run"));
}

#[test]
fn an_event_queue_overflow_is_recorded_as_events_dropped_and_seq_stays_contiguous() {
    let mut s = Server::start_with(
        &[("event_queue = 16384", "event_queue = 4")],
        EXAMPLE_POLICY,
    );
    let sensor = s.add_device("sensor-1", &["sensors"]);
    const FLOOD: u64 = 2000;
    let r = s.paho(
        &sensor,
        json!([
            {"op": "connect", "client_id": "sensor-1"},
            {"op": "publish_many", "topic": "$SYS/flood", "count": FLOOD},
            // Acknowledged after every flood message was handled (one connection, in order).
            {"op": "publish", "topic": "$SYS/sync", "payload": "x", "qos": 1, "timeout": 30},
            {"op": "disconnect"}
        ]),
    );
    assert_eq!(r[1]["sent"], FLOOD, "{r:?}");
    assert_eq!(r[2]["rc"], 0x87, "{r:?}");
    let ev = s.wait_event("events_dropped", |e| e["type"] == "events_dropped");
    assert!(ev["count"].as_u64().unwrap() >= 1, "{ev}");
    assert!(ev["after_seq"].as_u64().is_some(), "{ev}");
    assert!(ev["after_seq"].as_u64().unwrap() < ev["seq"].as_u64().unwrap());
    // Flush everything, then check the whole file.
    s.stop();
    let all = raw_events(&s);
    assert_contiguous(&all);
    // Nothing is lost silently: every flood event is in the file, or counted as dropped (on
    // the bus) or lost (by the log writer).
    let in_file = all
        .iter()
        .filter(|e| e["type"] == "publish_denied" && e["topic"] == "$SYS/flood")
        .count() as u64;
    let dropped: u64 = all
        .iter()
        .filter(|e| e["type"] == "events_dropped")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    // A gap may hold `events_dropped` records: it says how many drops they reported.
    let lost: u64 = all
        .iter()
        .filter(|e| e["type"] == "events_lost")
        .map(|e| e["count"].as_u64().unwrap() + e["dropped_within"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        dropped > 0,
        "an overflow of a 4-event queue was not recorded"
    );
    assert!(
        in_file + dropped + lost >= FLOOD,
        "{FLOOD} denied publishes: {in_file} in the file, {dropped} dropped, {lost} lost"
    );
}

/// Regression: `events.log` could not be rotated: after `mv` and SIGHUP, events still went to
/// the old file. Now SIGHUP reopens it by name; the numbering runs on across the two files.
#[test]
fn events_log_is_reopened_on_sighup_so_it_can_be_rotated() {
    let s = Server::start_with(&[], EXAMPLE_POLICY);
    s.add_device("before-rotation", &["sensors"]);
    s.wait_event("device_added before", |e| {
        e["type"] == "device_added" && e["device"] == "before-rotation"
    });
    let old = s.data.join("events.log.1");
    std::fs::rename(s.data.join("events.log"), &old).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // The new file appears when the writer reopens it (before any new event).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.data.join("events.log").exists() {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.add_device("after-rotation", &["sensors"]);
    let added = s.wait_event("device_added after, in the new file", |e| {
        e["type"] == "device_added" && e["device"] == "after-rotation"
    });
    let old_text = std::fs::read_to_string(&old).unwrap();
    assert!(old_text.contains("before-rotation"));
    assert!(
        !old_text.contains("after-rotation"),
        "nothing new goes to the rotated file"
    );
    let last_old: Value = serde_json::from_str(old_text.lines().last().unwrap()).unwrap();
    assert!(
        added["seq"].as_u64().unwrap() > last_old["seq"].as_u64().unwrap(),
        "{added} after {last_old}"
    );
}
