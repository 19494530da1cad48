//! RubyGems version ordering (`Gem::Version`): segments split at `.` and at digit/letter
//! transitions (`-` reads as `.pre.`); numbers compare numerically, a letter segment marks a
//! pre-release and sorts below any number; trailing zeros of the release and of the
//! pre-release part are ignored. Owns nothing else: no I/O.

use std::cmp::Ordering;

use super::debian::cmp_digits;

#[derive(Debug, Clone)]
enum Seg {
    Num(String),
    Str(String),
}

/// A parsed RubyGems version.
#[derive(Debug, Clone)]
pub(crate) struct GemVersion(Vec<Seg>);

/// Parse a gem version: digits, letters, `.` and `-`, starting with a digit.
pub(crate) fn parse(v: &str) -> Result<GemVersion, String> {
    let v = v.trim();
    if !v.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return Err("does not start with a digit".into());
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
    {
        return Err(format!("{c:?} is not allowed"));
    }
    let v = v.replace('-', ".pre.");
    let mut segs = Vec::new();
    for part in v.split('.') {
        if part.is_empty() {
            return Err("empty segment".into());
        }
        let mut cur = String::new();
        let mut digit = None;
        for c in part.chars() {
            let d = c.is_ascii_digit();
            if digit.is_some_and(|x| x != d) {
                segs.push(seg(std::mem::take(&mut cur), digit == Some(true)));
            }
            digit = Some(d);
            cur.push(c);
        }
        segs.push(seg(cur, digit == Some(true)));
    }
    // Canonical segments: drop trailing zeros of the release part and of the pre-release part.
    let split = segs
        .iter()
        .position(|s| matches!(s, Seg::Str(_)))
        .unwrap_or(segs.len());
    let pre = segs.split_off(split);
    let mut release = segs;
    trim_zeros(&mut release);
    let mut pre = pre;
    trim_zeros(&mut pre);
    release.extend(pre);
    Ok(GemVersion(release))
}

fn seg(s: String, digit: bool) -> Seg {
    if digit {
        Seg::Num(s.trim_start_matches('0').to_string())
    } else {
        Seg::Str(s)
    }
}

fn trim_zeros(v: &mut Vec<Seg>) {
    while matches!(v.last(), Some(Seg::Num(n)) if n.is_empty()) {
        v.pop();
    }
}

impl Ord for GemVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let zero = Seg::Num(String::new());
        let n = self.0.len().max(other.0.len());
        for k in 0..n {
            let a = self.0.get(k).unwrap_or(&zero);
            let b = other.0.get(k).unwrap_or(&zero);
            let o = match (a, b) {
                (Seg::Num(x), Seg::Num(y)) => cmp_digits(x.as_bytes(), y.as_bytes()),
                (Seg::Str(_), Seg::Num(_)) => Ordering::Less,
                (Seg::Num(_), Seg::Str(_)) => Ordering::Greater,
                (Seg::Str(x), Seg::Str(y)) => x.cmp(y),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for GemVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for GemVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for GemVersion {}
