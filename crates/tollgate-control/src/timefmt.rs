//! Times in the admin API's JSON: RFC 3339 UTC strings (`2026-12-01T18:36:42Z`), which a
//! person can read and every language parses, for the instants a person reads (device,
//! certificate, quarantine and operator times, `ca status`). The Rust types keep Unix seconds;
//! only their JSON form is text. A time out of range is written as its number of seconds.

use serde::Serializer;

/// Unix seconds as RFC 3339 UTC (second precision); the number itself when out of range.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// `#[serde(serialize_with = "timefmt::at")]` for an `i64` of Unix seconds.
pub fn at<S: Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*secs))
}

/// `#[serde(serialize_with = "timefmt::at_opt")]` for an `Option<i64>` of Unix seconds.
pub fn at_opt<S: Serializer>(secs: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match secs {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_are_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_147_341), "2026-12-01T17:49:01Z");
        assert_eq!(super::rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
