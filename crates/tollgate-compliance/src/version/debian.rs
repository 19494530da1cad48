//! Debian version ordering (Debian Policy §5.6.12, as dpkg implements it): epoch, then the
//! upstream version, then the Debian revision, each part compared as alternating runs of
//! non-digits (where `~` sorts before everything, even the end of the string, and letters
//! before other characters) and digits (compared numerically). Owns nothing else: no I/O.

use std::cmp::Ordering;

/// A parsed Debian version.
#[derive(Debug, Clone)]
pub(crate) struct DebVersion {
    epoch: u64,
    upstream: String,
    revision: String,
}

/// Parse `[epoch:]upstream[-revision]`.
pub(crate) fn parse(v: &str) -> Result<DebVersion, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err("empty version".into());
    }
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the epoch is not a number".into());
            }
            let epoch = e
                .parse::<u64>()
                .map_err(|_| "the epoch is too large".to_string())?;
            (epoch, rest)
        }
        None => (0, v),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    if upstream.is_empty() {
        return Err("empty upstream version".into());
    }
    if !upstream.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return Err("the upstream version does not start with a digit".into());
    }
    if let Some(c) = upstream
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-' | ':')))
    {
        return Err(format!("{c:?} is not allowed in an upstream version"));
    }
    if rest.contains('-') && revision.is_empty() {
        return Err("empty Debian revision after '-'".into());
    }
    if let Some(c) = revision
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~')))
    {
        return Err(format!("{c:?} is not allowed in a Debian revision"));
    }
    Ok(DebVersion {
        epoch,
        upstream: upstream.to_string(),
        revision: revision.to_string(),
    })
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream.as_bytes(), other.upstream.as_bytes()))
            .then_with(|| verrevcmp(self.revision.as_bytes(), other.revision.as_bytes()))
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The weight of one non-digit character; `None` is the end of the string.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// Compare numeric runs without overflow: leading zeros dropped, then length, then digits.
pub(crate) fn cmp_digits(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
    let a = a.get(strip(a)..).unwrap_or_default();
    let b = b.get(strip(b)..).unwrap_or_default();
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0usize, 0usize);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(|c| c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        // The non-digit prefix.
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        // The digit run.
        let si = i;
        while digit(a, i) {
            i += 1;
        }
        let sj = j;
        while digit(b, j) {
            j += 1;
        }
        let ord = cmp_digits(
            a.get(si..i).unwrap_or_default(),
            b.get(sj..j).unwrap_or_default(),
        );
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

impl PartialEq for DebVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for DebVersion {}
