//! Topic names, topic filters and matching (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7/4.8).
//!
//! Everything here works on borrowed `&str` and never allocates.

use crate::limits::MAX_STRING_LEN;

const SHARE_PREFIX: &str = "$share/";

/// Valid topic name for PUBLISH: non-empty, no `+` or `#`, no U+0000, at most 65 535 bytes.
pub fn is_valid_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_STRING_LEN
        && !topic.bytes().any(|b| b == b'+' || b == b'#' || b == 0)
}

/// Valid topic filter: non-empty, at most 65 535 bytes, no U+0000, `#` only as the whole last
/// level, `+` only as a whole level.
///
/// A filter starting with `$share/` is a shared subscription `$share/{group}/{filter}`: the
/// group must be non-empty without `/`, `+` or `#`, and the filter itself valid (and
/// non-empty).
pub fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_STRING_LEN || filter.as_bytes().contains(&0) {
        return false;
    }
    if filter.starts_with(SHARE_PREFIX) {
        return match parse_shared(filter) {
            Some((group, inner)) => {
                !group.is_empty()
                    && !group.bytes().any(|b| b == b'+' || b == b'#')
                    && is_valid_plain_filter(inner)
            }
            None => false,
        };
    }
    is_valid_plain_filter(filter)
}

/// Wildcard placement rules for a non-shared filter.
fn is_valid_plain_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let multi = level.contains('#');
        let single = level.contains('+');
        if multi && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if single && level != "+" {
            return false;
        }
    }
    true
}

/// If `filter` is `$share/{group}/{filter}`, returns `Some((group, filter))`.
///
/// Only splits: `"$share//a"` gives `Some(("", "a"))` and `"$share/g/"` gives
/// `Some(("g", ""))`; [`is_valid_filter`] rejects those. `"$share/g"` (no filter part) is
/// `None`.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix(SHARE_PREFIX)?.split_once('/')
}

/// MQTT matching of a topic name against a (non-shared) topic filter, on borrowed slices,
/// without allocating.
///
/// * `+` matches exactly one level, `#` any number of levels including none: `"a/#"`
///   matches `"a"`, `"a/b"` and `"a/b/c"`.
/// * Topics beginning with `$` are not matched by a filter whose first level is `+` or `#`
///   (`"#"` does not match `"$SYS/x"`, `"$SYS/#"` does).
/// * Empty levels are levels: `"a//b"` has three levels and is matched by `"a/+/b"`.
///
/// The filter is assumed valid ([`is_valid_filter`]); for an invalid one the result is
/// unspecified (but there is no panic).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}
