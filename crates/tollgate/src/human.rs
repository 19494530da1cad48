//! Times and durations as people read them: RFC 3339 UTC instants, and "3 min 20 s" spans.

/// Unix milliseconds as an RFC 3339 UTC time (second precision); the number itself when it is
/// out of range.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    if time::OffsetDateTime::from_unix_timestamp(secs).is_err() {
        return ms.to_string();
    }
    tollgate_control::timefmt::rfc3339(secs)
}

/// A span in words: "45 s", "3 min 20 s", "2 h 5 min", "3 d 4 h".
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) if s == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_read_well() {
        assert_eq!(super::span(45), "45 s");
        assert_eq!(super::span(200), "3 min 20 s");
        assert_eq!(super::span(7500), "2 h 5 min");
        assert_eq!(super::span(3 * 86_400 + 4 * 3600), "3 d 4 h");
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00Z");
    }
}
