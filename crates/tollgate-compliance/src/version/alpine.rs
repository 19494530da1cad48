//! Alpine (apk) version ordering: `digits{.digits}[letter]{_suffix[digits]}[~hash][-rN]`,
//! compared token by token as apk-tools does. Pre-release suffixes (`_alpha`, `_beta`, `_pre`,
//! `_rc`) sort before the bare version, post-release ones (`_cvs`, `_svn`, `_git`, `_hg`,
//! `_p`) after it; when one version runs out of tokens first, it is the greater unless the
//! other continues with a pre-release suffix. Owns nothing else: no I/O.

use std::cmp::Ordering;

use super::debian::cmp_digits;

const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

/// One token; the variant order is apk's token-type order (an earlier type means "more
/// version to come", which ranks the version higher when the other has ended).
#[derive(Debug, Clone)]
enum Token {
    /// A dot-separated number; `first` is the leading component (compared numerically; later
    /// components with a leading zero compare as decimal fractions).
    Digit {
        digits: String,
        first: bool,
    },
    Letter(u8),
    /// A suffix's rank: negative for pre-release, positive for post-release.
    Suffix(i8),
    SuffixNo(String),
    Hash(String),
    Revision(String),
}

impl Token {
    fn kind(&self) -> u8 {
        match self {
            Token::Digit { .. } => 1,
            Token::Letter(_) => 2,
            Token::Suffix(_) => 3,
            Token::SuffixNo(_) => 4,
            Token::Hash(_) => 5,
            Token::Revision(_) => 6,
        }
    }
}

/// The kind number of the end of a version.
const END: u8 = 7;

/// A parsed apk version.
#[derive(Debug, Clone)]
pub(crate) struct ApkVersion(Vec<Token>);

fn take_digits(s: &[u8], i: &mut usize) -> String {
    let start = *i;
    while s.get(*i).is_some_and(|c| c.is_ascii_digit()) {
        *i += 1;
    }
    String::from_utf8_lossy(s.get(start..*i).unwrap_or_default()).into_owned()
}

/// Parse an apk version string.
pub(crate) fn parse(v: &str) -> Result<ApkVersion, String> {
    let s = v.trim().as_bytes();
    let mut i = 0usize;
    let mut tokens = Vec::new();
    let d = take_digits(s, &mut i);
    if d.is_empty() {
        return Err("does not start with a digit".into());
    }
    tokens.push(Token::Digit {
        digits: d,
        first: true,
    });
    while s.get(i) == Some(&b'.') {
        i += 1;
        let d = take_digits(s, &mut i);
        if d.is_empty() {
            return Err("a '.' is not followed by a number".into());
        }
        tokens.push(Token::Digit {
            digits: d,
            first: false,
        });
    }
    if let Some(&c) = s.get(i).filter(|c| c.is_ascii_lowercase()) {
        tokens.push(Token::Letter(c));
        i += 1;
    }
    while s.get(i) == Some(&b'_') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(|c| c.is_ascii_lowercase()) {
            i += 1;
        }
        let name = std::str::from_utf8(s.get(start..i).unwrap_or_default()).unwrap_or("");
        let rank = if let Some(p) = PRE.iter().position(|x| *x == name) {
            i8::try_from(p).unwrap_or(0) - 4
        } else if let Some(p) = POST.iter().position(|x| *x == name) {
            i8::try_from(p).unwrap_or(0) + 1
        } else {
            return Err(format!("unknown suffix _{name}"));
        };
        tokens.push(Token::Suffix(rank));
        let n = take_digits(s, &mut i);
        if !n.is_empty() {
            tokens.push(Token::SuffixNo(n));
        }
    }
    if s.get(i) == Some(&b'~') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(|c| c.is_ascii_hexdigit()) {
            i += 1;
        }
        if i == start {
            return Err("'~' is not followed by a commit hash".into());
        }
        let h = String::from_utf8_lossy(s.get(start..i).unwrap_or_default()).into_owned();
        tokens.push(Token::Hash(h));
    }
    if s.get(i) == Some(&b'-') {
        if s.get(i + 1) != Some(&b'r') {
            return Err("'-' is not followed by 'r'".into());
        }
        i += 2;
        let n = take_digits(s, &mut i);
        if n.is_empty() {
            return Err("'-r' is not followed by a number".into());
        }
        tokens.push(Token::Revision(n));
    }
    if i != s.len() {
        return Err(format!("unexpected text at byte {i}"));
    }
    Ok(ApkVersion(tokens))
}

fn cmp_same(a: &Token, b: &Token) -> Ordering {
    match (a, b) {
        (
            Token::Digit {
                digits: x,
                first: fx,
            },
            Token::Digit { digits: y, .. },
        ) => {
            if !*fx && (x.starts_with('0') || y.starts_with('0')) {
                // A fraction: compare as strings.
                x.cmp(y)
            } else {
                cmp_digits(x.as_bytes(), y.as_bytes())
            }
        }
        (Token::Letter(x), Token::Letter(y)) => x.cmp(y),
        (Token::Suffix(x), Token::Suffix(y)) => x.cmp(y),
        (Token::SuffixNo(x), Token::SuffixNo(y)) | (Token::Revision(x), Token::Revision(y)) => {
            cmp_digits(x.as_bytes(), y.as_bytes())
        }
        (Token::Hash(x), Token::Hash(y)) => x.cmp(y),
        _ => a.kind().cmp(&b.kind()),
    }
}

impl Ord for ApkVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let mut a = self.0.iter();
        let mut b = other.0.iter();
        loop {
            let (x, y) = (a.next(), b.next());
            let (x, y) = match (x, y) {
                (None, None) => return Ordering::Equal,
                (Some(x), Some(y)) if x.kind() == y.kind() => {
                    let o = cmp_same(x, y);
                    if o != Ordering::Equal {
                        return o;
                    }
                    continue;
                }
                (x, y) => (x, y),
            };
            // The token types differ: a pre-release suffix ranks lower; otherwise the version
            // whose token type is further along (closer to its end) is the lesser.
            if matches!(x, Some(Token::Suffix(r)) if *r < 0) {
                return Ordering::Less;
            }
            if matches!(y, Some(Token::Suffix(r)) if *r < 0) {
                return Ordering::Greater;
            }
            let kx = x.map_or(END, Token::kind);
            let ky = y.map_or(END, Token::kind);
            return ky.cmp(&kx);
        }
    }
}

impl PartialOrd for ApkVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ApkVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ApkVersion {}
