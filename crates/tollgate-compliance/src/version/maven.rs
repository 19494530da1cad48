//! Maven version ordering, after the rules Maven's `ComparableVersion` documents: a version is
//! a list of items (numbers and qualifiers) split at `.`, `-` and digit/letter transitions,
//! where `-` and transitions open a nested list; trailing "null" items (0, "", `ga`, `final`,
//! `release`) are dropped; qualifiers order `alpha < beta < milestone < rc = cr < snapshot <
//! "" = ga = final = release < sp < any other (alphabetically)`; a number ranks above a
//! qualifier and a list. Owns nothing else: no I/O.

use std::cmp::Ordering;

use super::debian::cmp_digits;

/// The largest nesting of lists built from one version (a bound against hostile input).
const MAX_ITEMS: usize = 256;

#[derive(Debug, Clone)]
enum Item {
    /// A number, as its digits without leading zeros.
    Int(String),
    /// A qualifier: its rank and, for unknown qualifiers (rank 7), its text.
    Str(u8, String),
    List(Vec<Item>),
}

const KNOWN: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];
const RELEASE: u8 = 5;

impl Item {
    fn int(s: &str) -> Item {
        Item::Int(s.trim_start_matches('0').to_string())
    }

    fn string(s: &str, followed_by_digit: bool) -> Item {
        let s = match s {
            "a" if followed_by_digit => "alpha",
            "b" if followed_by_digit => "beta",
            "m" if followed_by_digit => "milestone",
            "ga" | "final" | "release" => "",
            "cr" => "rc",
            other => other,
        };
        match KNOWN.iter().position(|k| *k == s) {
            Some(p) => Item::Str(u8::try_from(p).unwrap_or(7), String::new()),
            None => Item::Str(7, s.to_string()),
        }
    }

    fn is_null(&self) -> bool {
        match self {
            Item::Int(d) => d.is_empty(),
            Item::Str(r, _) => *r == RELEASE,
            Item::List(l) => l.is_empty(),
        }
    }

    /// Compare with an absent item.
    fn cmp_null(&self) -> Ordering {
        match self {
            Item::Int(d) => {
                if d.is_empty() {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                }
            }
            Item::Str(r, s) => (*r, s.as_str()).cmp(&(RELEASE, "")),
            Item::List(l) => l.first().map_or(Ordering::Equal, Item::cmp_null),
        }
    }

    fn cmp_item(&self, other: &Item) -> Ordering {
        match (self, other) {
            (Item::Int(a), Item::Int(b)) => cmp_digits(a.as_bytes(), b.as_bytes()),
            (Item::Int(_), _) => Ordering::Greater,
            (Item::Str(..), Item::Int(_)) => Ordering::Less,
            (Item::Str(r, a), Item::Str(q, b)) => (r, a).cmp(&(q, b)),
            (Item::Str(..), Item::List(_)) => Ordering::Less,
            (Item::List(_), Item::Int(_)) => Ordering::Less,
            (Item::List(_), Item::Str(..)) => Ordering::Greater,
            (Item::List(a), Item::List(b)) => cmp_lists(a, b),
        }
    }
}

fn cmp_lists(a: &[Item], b: &[Item]) -> Ordering {
    let n = a.len().max(b.len());
    for k in 0..n {
        let o = match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => x.cmp_item(y),
            (Some(x), None) => x.cmp_null(),
            (None, Some(y)) => y.cmp_null().reverse(),
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn normalize(list: &mut Vec<Item>) {
    let mut k = list.len();
    while k > 0 {
        k -= 1;
        let Some(item) = list.get(k) else { break };
        if item.is_null() {
            list.remove(k);
        } else if !matches!(item, Item::List(_)) {
            break;
        }
    }
}

/// A parsed Maven version.
#[derive(Debug, Clone)]
pub(crate) struct MavenVersion(Vec<Item>);

fn parse_item(is_digit: bool, s: &str) -> Item {
    if is_digit {
        Item::int(s)
    } else {
        Item::string(s, false)
    }
}

/// The root list and a stack of open nested lists; the innermost is last. Closing folds each
/// list into its parent.
struct Builder {
    root: Vec<Item>,
    stack: Vec<Vec<Item>>,
}

impl Builder {
    fn top(&mut self) -> &mut Vec<Item> {
        match self.stack.last_mut() {
            Some(l) => l,
            None => &mut self.root,
        }
    }

    fn add(&mut self, item: Item) {
        self.top().push(item);
    }

    fn open(&mut self) -> Result<(), String> {
        if self.stack.len() >= MAX_ITEMS {
            return Err("too many version components".into());
        }
        self.stack.push(Vec::new());
        Ok(())
    }

    fn finish(mut self) -> Vec<Item> {
        while let Some(mut inner) = self.stack.pop() {
            normalize(&mut inner);
            self.add(Item::List(inner));
        }
        normalize(&mut self.root);
        self.root
    }
}

/// Parse a Maven version (any string is a version; only empty and oversized ones are refused).
pub(crate) fn parse(v: &str) -> Result<MavenVersion, String> {
    let v = v.trim().to_lowercase();
    if v.is_empty() {
        return Err("empty version".into());
    }
    if v.len() > 1024 {
        return Err("longer than 1024 bytes".into());
    }
    let mut b = Builder {
        root: Vec::new(),
        stack: Vec::new(),
    };
    let mut is_digit = false;
    let mut start = 0usize;
    let slice = |a: usize, z: usize| v.get(a..z).unwrap_or("");
    for (i, c) in v.char_indices() {
        if c == '.' || c == '-' {
            if i == start {
                b.add(Item::Int(String::new()));
            } else {
                b.add(parse_item(is_digit, slice(start, i)));
            }
            start = i + c.len_utf8();
            if c == '-' {
                b.open()?;
            }
        } else if c.is_ascii_digit() {
            if !is_digit && i > start {
                // ".X1" is treated as "-X1".
                if !b.top().is_empty() {
                    b.open()?;
                }
                b.add(Item::string(slice(start, i), true));
                start = i;
                b.open()?;
            }
            is_digit = true;
        } else {
            if is_digit && i > start {
                b.add(parse_item(true, slice(start, i)));
                start = i;
                b.open()?;
            }
            is_digit = false;
        }
    }
    if v.len() > start {
        if !is_digit && !b.top().is_empty() {
            b.open()?;
        }
        b.add(parse_item(is_digit, slice(start, v.len())));
    }
    Ok(MavenVersion(b.finish()))
}

impl Ord for MavenVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_lists(&self.0, &other.0)
    }
}

impl PartialOrd for MavenVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MavenVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MavenVersion {}
