//! The security event log: one JSON object per line, appended to the events file and echoed
//! to the process log. A burst of events becomes one write; the file is fsynced when the stream
//! ends. Every event line carries its `seq`; a restarted server continues the numbering from
//! [`last_seq`]. On SIGHUP the file is synced, closed and opened again by name, so a log
//! rotator can `mv` it away and signal (logrotate's `create` + `postrotate kill -HUP`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tollgate_events::{Consumer, Delivery};

/// Most deliveries gathered into one write.
const BATCH: usize = 512;

/// How much of the end of the events file [`last_seq`] reads at most.
const TAIL: u64 = 64 * 1024;

/// The line written when this consumer missed events (its queue was full).
#[derive(Serialize)]
struct LostLine {
    #[serde(rename = "type")]
    kind: &'static str,
    consumer: &'static str,
    first_seq: u64,
    last_seq: u64,
    count: u64,
    /// Events lost on the bus that `events_dropped` records inside this gap reported.
    #[serde(skip_serializing_if = "is_zero")]
    dropped_within: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Write every delivery of `consumer` to `path` until the stream ends, then flush and fsync.
pub async fn run(mut consumer: Consumer, path: PathBuf) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A line torn by a crash must not swallow the first new one: start on a fresh line.
    let mut torn = ends_mid_line(&path);
    // A plain file append lands in the page cache: one short write per batch on this task is
    // cheaper than handing every batch to tokio's blocking pool (a thread switch each).
    let mut file = open(&path);
    let mut hup = crate::serve::hangup_listener();
    let mut buf = String::new();
    loop {
        let hangup = crate::serve::hangup(&mut hup);
        // Both are cancel-safe: a delivery not taken stays queued.
        let first = tokio::select! {
            d = consumer.recv() => match d {
                Some(d) => d,
                None => break,
            },
            _ = hangup => {
                if let Some(f) = file.as_mut() {
                    if let Err(e) = f.flush().and_then(|()| f.sync_all()) {
                        tracing::error!("syncing the event log {}: {e}", path.display());
                    }
                }
                file = open(&path);
                torn = ends_mid_line(&path);
                tracing::info!("SIGHUP: event log {} reopened", path.display());
                continue;
            }
        };
        if torn {
            buf.push('\n');
            torn = false;
        }
        let mut next = Some(first);
        let mut n = 0;
        while let Some(d) = next {
            let line = match d {
                // Only the audit log is handed durable deliveries; written like any event.
                Delivery::Event(e) | Delivery::Durable(e, _) => {
                    let line = e.to_json();
                    tracing::info!(target: "tollgate::event", "{line}");
                    line
                }
                Delivery::Gap {
                    first_seq,
                    last_seq,
                    count,
                    dropped_within,
                } => {
                    let lost = LostLine {
                        kind: "events_lost",
                        consumer: consumer.name(),
                        first_seq,
                        last_seq,
                        count,
                        dropped_within,
                    };
                    let line = serde_json::to_string(&lost).unwrap_or_else(|e| {
                        format!("{{\"type\":\"events_lost\",\"count\":{count},\"error\":\"{e}\"}}")
                    });
                    tracing::warn!(target: "tollgate::event", "{line}");
                    line
                }
            };
            buf.push_str(&line);
            buf.push('\n');
            n += 1;
            next = if n < BATCH { consumer.try_recv() } else { None };
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(buf.as_bytes()) {
                tracing::error!("writing the event log: {e}");
                // Part of the batch may have landed: the next write starts on a fresh line.
                torn = true;
            }
        }
        buf.clear();
    }
    if let Some(f) = file.as_mut() {
        if let Err(e) = f.flush().and_then(|()| f.sync_all()) {
            tracing::error!("syncing the event log {}: {e}", path.display());
        }
    }
}

/// Open the events file for appending, creating it; `None` (said on the process log) when it
/// cannot be, and events go to the process log only.
fn open(path: &Path) -> Option<File> {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(
                "cannot open the event log {}: {e}; events go to the process log only",
                path.display()
            );
            None
        }
    }
}

/// Whether `path` exists, is not empty, and does not end with a newline.
fn ends_mid_line(path: &Path) -> bool {
    let last_byte = || -> std::io::Result<Option<u8>> {
        let mut f = File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Ok(None);
        }
        f.seek(SeekFrom::End(-1))?;
        let mut b = [0u8; 1];
        f.read_exact(&mut b)?;
        Ok(Some(b[0]))
    };
    matches!(last_byte(), Ok(Some(b)) if b != b'\n')
}

/// The highest sequence number on the last line of the events file that has one (an event's
/// `seq`, or an `events_lost` line's `last_seq`: those numbers were given out too), reading only
/// the file's last 64 KiB. A restarted server numbers on from there.
///
/// None when the file is missing, empty, or no line in its tail parses with a number. A torn
/// last line (a crash mid-write) or garbage is skipped, never a panic. A last line that is
/// complete JSON but lacks its newline counts: [`run`] ends it before appending.
pub fn last_seq(path: &Path) -> Option<u64> {
    #[derive(Deserialize)]
    struct Line {
        seq: Option<u64>,
        #[serde(rename = "type")]
        kind: Option<String>,
        last_seq: Option<u64>,
    }
    let mut f = File::open(path).ok()?;
    let start = f.metadata().ok()?.len().saturating_sub(TAIL);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.take(TAIL).read_to_end(&mut tail).ok()?;
    let mut lines = tail.as_slice();
    if start > 0 {
        // The window starts mid-line: skip that partial line.
        let nl = lines.iter().position(|&b| b == b'\n')?;
        lines = &lines[nl + 1..];
    }
    lines.split(|&b| b == b'\n').rev().find_map(|line| {
        let l: Line = serde_json::from_slice(line).ok()?;
        match (l.seq, l.kind.as_deref(), l.last_seq) {
            (Some(seq), _, _) => Some(seq),
            (None, Some("events_lost"), Some(last)) => Some(last),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file `name` holding `content`, in a directory of its own (tests run in parallel).
    fn file_with(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("tollgate-eventlog-test-{}", std::process::id()))
            .join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn last_seq_reads_the_last_line_with_a_number() {
        let normal = file_with(
            "normal",
            b"{\"seq\":1,\"ts\":\"t\",\"type\":\"server_started\",\"version\":\"0.1.0\",\"pid\":1}\n\
              {\"seq\":2,\"ts\":\"t\",\"type\":\"subscribe_denied\",\"device\":\"d\",\"filter\":\"#\"}\n\
              {\"type\":\"events_lost\",\"consumer\":\"log\",\"first_seq\":3,\"last_seq\":3,\"count\":1}\n",
        );
        assert_eq!(
            last_seq(&normal),
            Some(3),
            "numbers lost by the log were given out too"
        );

        let torn = file_with(
            "torn",
            b"{\"seq\":41,\"ts\":\"t\",\"type\":\"server_stopping\",\"reason\":\"signal\"}\n\
              {\"seq\":42,\"ts\":\"t\",\"type\":\"server_stopping\",\"reason\":\"signal\"}\n\
              {\"seq\":43,\"ts\":\"t\",\"type\":\"subscr",
        );
        assert_eq!(last_seq(&torn), Some(42));
        assert!(ends_mid_line(&torn));
        assert!(!ends_mid_line(&normal));

        let unterminated = file_with("unterminated", b"{\"seq\":7,\"type\":\"x\"}\n{\"seq\":8}");
        assert_eq!(last_seq(&unterminated), Some(8));

        let empty = file_with("empty", b"");
        assert_eq!(last_seq(&empty), None);
        assert!(!ends_mid_line(&empty));

        let garbage = file_with(
            "garbage",
            b"\xff\xfe not json\n{\"seq\":\"nine\"}\n[1,2]\n\n{{{",
        );
        assert_eq!(last_seq(&garbage), None);
        let garbage_after = file_with(
            "garbage-after",
            b"{\"seq\":5}\n\xff\xfe\x00 junk\n{\"seq\":-1}\n",
        );
        assert_eq!(last_seq(&garbage_after), Some(5));

        let missing = normal.with_file_name("does-not-exist");
        assert_eq!(last_seq(&missing), None);
        for p in [normal, torn, unterminated, empty, garbage, garbage_after] {
            let _ = std::fs::remove_dir_all(p.parent().unwrap());
        }
    }

    #[test]
    fn last_seq_reads_only_the_tail_of_a_huge_file() {
        let line = |seq: u64| {
            format!("{{\"seq\":{seq},\"ts\":\"2025-01-01T00:00:00Z\",\"type\":\"subscribe_denied\",\"device\":\"d\",\"filter\":\"#\"}}\n")
        };
        let mut content = String::new();
        let mut seq = 0;
        while content.len() < 3 * TAIL as usize {
            seq += 1;
            content.push_str(&line(seq));
        }
        let path = file_with("huge", content.as_bytes());
        assert_eq!(last_seq(&path), Some(seq));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
        // A single line longer than the window has no readable start: None, not a wrong number.
        let mut long = line(1);
        long.push_str(&format!(
            "{{\"seq\":2,\"detail\":\"{}\"}}\n",
            "x".repeat(2 * TAIL as usize)
        ));
        let path = file_with("long-line", long.as_bytes());
        assert_eq!(last_seq(&path), None);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn the_writer_numbers_lines_reports_gaps_and_ends_a_torn_line() {
        let path = file_with("written", b"{\"seq\":9,\"type\":\"x\"}\n{\"seq\":10,\"ty");
        let first = last_seq(&path).map_or(1, |s| s + 1);
        assert_eq!(first, 10);
        let (bus, mut dispatcher) = tollgate_events::EventBus::new(64, first);
        let log = dispatcher.consumer("log", 2);
        let dispatcher_task = tokio::spawn(dispatcher.run());
        for n in 0..5 {
            bus.emit(tollgate_events::EventKind::ServerStopping {
                reason: n.to_string(),
            });
        }
        // The dispatcher runs before the writer here: the writer's queue of 2 overflows.
        tokio::task::yield_now().await;
        let writer = tokio::spawn(run(log, path.clone()));
        bus.shutdown().await;
        dispatcher_task.await.unwrap();
        writer.await.unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "{\"seq\":10,\"ty", "the torn line stays alone");
        assert!(lines[2].starts_with("{\"seq\":10,\"ts\":"), "{text}");
        assert!(lines[3].starts_with("{\"seq\":11,\"ts\":"), "{text}");
        assert_eq!(
            lines[4],
            r#"{"type":"events_lost","consumer":"log","first_seq":12,"last_seq":14,"count":3}"#
        );
        assert_eq!(lines.len(), 5);
        assert!(text.ends_with('\n'));
        assert_eq!(last_seq(&path), Some(14));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
