//! What an entry of the log is, byte for byte.
//!
//! Owns the canonical serialisation of the three kinds of entry; it must not decide when they
//! are written (that is the binary's writer) nor how they are stored (that is [`crate::log`]).
//!
//! Every entry is one line of UTF-8 JSON without its newline, exactly the bytes hashed as the
//! Merkle leaf (`SHA-256(0x00 || entry)`). The JSON is compact (no whitespace), keys appear in
//! a fixed order, strings are escaped as JSON requires (no raw control characters, so an entry
//! never contains a newline), numbers are integers:
//!
//! * **an event**: exactly its line in the event log, `{"seq":N,"ts":"<RFC 3339>","type":"…",…}`
//!   (keys: `seq`, `ts`, `type`, then the event's fields in the documented order);
//! * **a gap** `{"type":"audit_gap","ts":…,"first_seq":A,"last_seq":B,"count":C,"reason":"…"}`:
//!   events `A..=B` never reached the log (its queue was full, or the server stopped before they
//!   were written). A loss is never silent: the sequence numbers stay contiguous across it;
//! * **a log start** `{"type":"log_start","ts":…,"origin":"…","previous":null|{"origin":…,
//!   "size":N,"root":"<base64>","checkpoint":"<the signed note>"}}`: the first entry of every
//!   log; after a rotation it commits to the previous log's final signed checkpoint.

use serde::Serialize;

/// Why a [`gap`] entry was written.
pub const GAP_QUEUE_FULL: &str = "queue_full";
/// Events numbered before a restart that the log never received.
pub const GAP_RESTART: &str = "not_received_before_restart";

/// The entry of an event: its event-log line.
pub fn event(e: &tollgate_events::Event) -> Vec<u8> {
    e.to_json().into_bytes()
}

#[derive(Serialize)]
struct Gap<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: &'a str,
    first_seq: u64,
    last_seq: u64,
    count: u64,
    reason: &'a str,
}

/// The entry recording that events `first_seq..=last_seq` were not received.
pub fn gap(ts: &str, first_seq: u64, last_seq: u64, reason: &str) -> Vec<u8> {
    to_vec(&Gap {
        kind: "audit_gap",
        ts,
        first_seq,
        last_seq,
        count: last_seq.saturating_sub(first_seq).saturating_add(1),
        reason,
    })
}

/// The previous log a new log commits to.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Previous {
    /// Its origin (key name).
    pub origin: String,
    /// Its final size.
    pub size: u64,
    /// Its final root, base64.
    pub root: String,
    /// Its final signed checkpoint note.
    pub checkpoint: String,
}

#[derive(Serialize)]
struct Start<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts: &'a str,
    origin: &'a str,
    previous: Option<&'a Previous>,
}

/// The first entry of a log.
pub fn log_start(ts: &str, origin: &str, previous: Option<&Previous>) -> Vec<u8> {
    to_vec(&Start {
        kind: "log_start",
        ts,
        origin,
        previous,
    })
}

fn to_vec(v: &impl Serialize) -> Vec<u8> {
    // These structs hold only strings and integers: serialising cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The time now, RFC 3339 UTC, as events carry it.
pub fn now_rfc3339() -> String {
    tollgate_events::Event::now(tollgate_events::EventKind::ServerStopping {
        reason: String::new(),
    })
    .ts
}

/// What the sequence check of a verifier needs from an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// An event with its `seq`.
    Event(u64),
    /// A gap over `first..=last`.
    Gap(u64, u64),
    /// A log start.
    Start,
    /// No numbering (not JSON, or none of the above).
    None,
}

/// Read the numbering of an entry.
pub fn numbering(entry: &[u8]) -> Numbering {
    #[derive(serde::Deserialize)]
    struct Probe {
        seq: Option<u64>,
        #[serde(rename = "type")]
        kind: Option<String>,
        first_seq: Option<u64>,
        last_seq: Option<u64>,
    }
    let Ok(p) = serde_json::from_slice::<Probe>(entry) else {
        return Numbering::None;
    };
    match (p.kind.as_deref(), p.seq, p.first_seq, p.last_seq) {
        (Some("audit_gap"), _, Some(a), Some(b)) if a <= b => Numbering::Gap(a, b),
        (Some("log_start"), None, _, _) => Numbering::Start,
        (Some(_), Some(s), _, _) => Numbering::Event(s),
        _ => Numbering::None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn entries_are_one_line_of_compact_json_in_a_fixed_key_order() {
        let g = gap("2026-12-01T00:00:00Z", 5, 7, GAP_QUEUE_FULL);
        assert_eq!(
            String::from_utf8(g.clone()).unwrap(),
            r#"{"type":"audit_gap","ts":"2026-12-01T00:00:00Z","first_seq":5,"last_seq":7,"count":3,"reason":"queue_full"}"#
        );
        assert_eq!(numbering(&g), Numbering::Gap(5, 7));
        let p = Previous {
            origin: "o".into(),
            size: 3,
            root: "AA==".into(),
            checkpoint: "o\n3\nAA==\n\n— o x\n".into(),
        };
        let s = log_start("t", "o", Some(&p));
        assert!(!s.contains(&b'\n'));
        assert_eq!(numbering(&s), Numbering::Start);
        let mut e = tollgate_events::Event::now(tollgate_events::EventKind::ServerStopping {
            reason: "x\ny".into(),
        });
        e.seq = 9;
        let line = event(&e);
        assert!(!line.contains(&b'\n'));
        assert_eq!(numbering(&line), Numbering::Event(9));
        assert_eq!(numbering(b"not json"), Numbering::None);
    }
}
