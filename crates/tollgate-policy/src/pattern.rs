//! Topic patterns: parsing of pattern templates (with `${...}` variables),
//! per-identity expansion into level matchers, and the three set operations
//! the decisions need — match, coverage and intersection.
//!
//! Everything here works on borrowed `&str` and pre-split level slices; the
//! functions used on the per-message path ([`matches`], [`covers`],
//! [`intersects`], [`check_topic_name`], [`check_filter`]) never allocate.

use std::fmt;

/// One level of a compiled (variable-free) pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Level {
    /// Matches exactly this text, compared byte for byte. Substituted
    /// variables always end up here, so a value such as `+` or `a/#` stays
    /// literal text and never becomes a wildcard or an extra level.
    Literal(String),
    /// `+`: exactly one level, whatever it is.
    Single,
    /// `#`: zero or more trailing levels (only ever the last level).
    Multi,
}

impl Level {
    fn is_wildcard(&self) -> bool {
        matches!(self, Level::Single | Level::Multi)
    }
}

/// A compiled pattern: the levels of one topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    pub(crate) levels: Box<[Level]>,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match level {
                Level::Literal(s) => f.write_str(s)?,
                Level::Single => f.write_str("+")?,
                Level::Multi => f.write_str("#")?,
            }
        }
        Ok(())
    }
}

/// A piece of a pattern level as written in the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    DeviceId,
    DeviceGroup,
}

/// One level of a pattern as written in the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateLevel {
    Single,
    Multi,
    /// Literal text, possibly containing variables. Never empty as a list of
    /// pieces unless the level itself is empty (`a//b`), in which case it is
    /// an empty vector.
    Text(Vec<Piece>),
}

impl TemplateLevel {
    fn is_wildcard(&self) -> bool {
        matches!(self, TemplateLevel::Single | TemplateLevel::Multi)
    }

    /// Whether the level, as written, starts with a literal `$`.
    fn starts_with_literal_dollar(&self) -> bool {
        match self {
            TemplateLevel::Text(pieces) => {
                matches!(pieces.first(), Some(Piece::Text(t)) if t.starts_with('$'))
            }
            _ => false,
        }
    }
}

/// A validated pattern as written in the policy file, before the identity's
/// variables are substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) raw: String,
    pub(crate) levels: Vec<TemplateLevel>,
}

/// Why a pattern could not be parsed. Each variant renders as the tail of a
/// diagnostic message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatternProblem {
    Empty,
    Nul,
    HashNotWholeLevel(String),
    HashNotLast,
    PlusNotWholeLevel(String),
    UnknownVariable(String),
    Unterminated(String),
}

impl fmt::Display for PatternProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternProblem::Empty => f.write_str("the pattern is empty"),
            PatternProblem::Nul => f.write_str("the pattern contains a NUL character"),
            PatternProblem::HashNotWholeLevel(level) => write!(
                f,
                "`#` must be a whole level on its own, found level `{level}`"
            ),
            PatternProblem::HashNotLast => f.write_str("`#` must be the last level"),
            PatternProblem::PlusNotWholeLevel(level) => write!(
                f,
                "`+` must be a whole level on its own, found level `{level}`"
            ),
            PatternProblem::UnknownVariable(name) => write!(
                f,
                "unknown variable `${{{name}}}`; expected ${{device.id}} or ${{device.group}}"
            ),
            PatternProblem::Unterminated(rest) => {
                write!(f, "unterminated variable `{rest}` (missing `}}`)")
            }
        }
    }
}

impl Template {
    /// Parse and validate a pattern. Returns every problem found.
    pub(crate) fn parse(raw: &str) -> Result<Template, Vec<PatternProblem>> {
        if raw.is_empty() {
            return Err(vec![PatternProblem::Empty]);
        }
        let mut problems = Vec::new();
        if raw.contains('\0') {
            problems.push(PatternProblem::Nul);
        }
        let level_count = raw.split('/').count();
        let mut levels = Vec::with_capacity(level_count);
        for (i, level) in raw.split('/').enumerate() {
            let is_last = i + 1 == level_count;
            if level == "#" {
                if !is_last {
                    problems.push(PatternProblem::HashNotLast);
                }
                levels.push(TemplateLevel::Multi);
                continue;
            }
            if level == "+" {
                levels.push(TemplateLevel::Single);
                continue;
            }
            if level.contains('#') {
                problems.push(PatternProblem::HashNotWholeLevel(level.to_string()));
                continue;
            }
            if level.contains('+') {
                problems.push(PatternProblem::PlusNotWholeLevel(level.to_string()));
                continue;
            }
            match parse_pieces(level) {
                Ok(pieces) => levels.push(TemplateLevel::Text(pieces)),
                Err(p) => problems.push(p),
            }
        }
        if problems.is_empty() {
            Ok(Template {
                raw: raw.to_string(),
                levels: normalize_template_levels(levels),
            })
        } else {
            problems.dedup();
            Err(problems)
        }
    }

    pub(crate) fn uses_group(&self) -> bool {
        self.levels.iter().any(|l| match l {
            TemplateLevel::Text(pieces) => pieces.contains(&Piece::DeviceGroup),
            _ => false,
        })
    }

    pub(crate) fn has_variables(&self) -> bool {
        self.levels.iter().any(|l| match l {
            TemplateLevel::Text(pieces) => pieces.iter().any(|p| !matches!(p, Piece::Text(_))),
            _ => false,
        })
    }

    pub(crate) fn first_level_is_wildcard(&self) -> bool {
        self.levels.first().is_some_and(TemplateLevel::is_wildcard)
    }

    /// Expand for an allow rule. Any substituted value that could change the
    /// shape of the pattern (empty, contains `/`, `+`, `#` or NUL, or would
    /// turn the pattern into a `$` topic) makes the whole pattern unusable:
    /// a grant is never widened by an odd identity.
    pub(crate) fn expand_allow(
        &self,
        device_id: &str,
        group: Option<&str>,
    ) -> Result<Pattern, Unusable> {
        let mut levels = Vec::with_capacity(self.levels.len());
        for (index, level) in self.levels.iter().enumerate() {
            match level {
                TemplateLevel::Single => levels.push(Level::Single),
                TemplateLevel::Multi => levels.push(Level::Multi),
                TemplateLevel::Text(pieces) => {
                    let mut text = String::new();
                    for (piece_index, piece) in pieces.iter().enumerate() {
                        let value = match piece {
                            Piece::Text(t) => {
                                text.push_str(t);
                                continue;
                            }
                            Piece::DeviceId => (device_id, Var::DeviceId),
                            Piece::DeviceGroup => match group {
                                Some(g) => (g, Var::DeviceGroup),
                                None => return Err(Unusable::NoGroup),
                            },
                        };
                        check_value(value.0, value.1)?;
                        if index == 0 && piece_index == 0 && value.0.starts_with('$') {
                            return Err(Unusable::Dollar(value.1));
                        }
                        text.push_str(value.0);
                    }
                    levels.push(Level::Literal(text));
                }
            }
        }
        Ok(Pattern {
            levels: normalize_levels(levels).into_boxed_slice(),
        })
    }

    /// Expand for a deny rule. Values are substituted literally (a deny can
    /// only narrow what is allowed); a pattern whose literal text can never
    /// equal a real topic level (contains `/`, `+`, `#` or NUL) matches
    /// nothing and is dropped.
    pub(crate) fn expand_deny(
        &self,
        device_id: &str,
        group: Option<&str>,
    ) -> Result<Pattern, Unusable> {
        let mut levels = Vec::with_capacity(self.levels.len());
        for level in &self.levels {
            match level {
                TemplateLevel::Single => levels.push(Level::Single),
                TemplateLevel::Multi => levels.push(Level::Multi),
                TemplateLevel::Text(pieces) => {
                    let mut text = String::new();
                    for piece in pieces {
                        match piece {
                            Piece::Text(t) => text.push_str(t),
                            Piece::DeviceId => text.push_str(device_id),
                            Piece::DeviceGroup => match group {
                                Some(g) => text.push_str(g),
                                None => return Err(Unusable::NoGroup),
                            },
                        }
                    }
                    if text.contains(['/', '+', '#', '\0']) {
                        return Err(Unusable::NeverMatches);
                    }
                    levels.push(Level::Literal(text));
                }
            }
        }
        // A single empty level is the empty string: not a topic name.
        if matches!(levels.as_slice(), [Level::Literal(t)] if t.is_empty()) {
            return Err(Unusable::NeverMatches);
        }
        Ok(Pattern {
            levels: normalize_levels(levels).into_boxed_slice(),
        })
    }
}

fn parse_pieces(level: &str) -> Result<Vec<Piece>, PatternProblem> {
    let mut pieces = Vec::new();
    let mut rest = level;
    while let Some(start) = rest.find("${") {
        let (before, after_dollar) = rest.split_at(start);
        if !before.is_empty() {
            pieces.push(Piece::Text(before.to_string()));
        }
        let after_open = after_dollar.get(2..).unwrap_or("");
        let Some(end) = after_open.find('}') else {
            return Err(PatternProblem::Unterminated(after_dollar.to_string()));
        };
        let name = after_open.get(..end).unwrap_or("");
        match name {
            "device.id" => pieces.push(Piece::DeviceId),
            "device.group" => pieces.push(Piece::DeviceGroup),
            other => return Err(PatternProblem::UnknownVariable(other.to_string())),
        }
        rest = after_open.get(end + 1..).unwrap_or("");
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// Which variable a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    DeviceId,
    DeviceGroup,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::DeviceId => f.write_str("the device id"),
            Var::DeviceGroup => f.write_str("the group name"),
        }
    }
}

/// Why a pattern cannot be used for a particular identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unusable {
    NoGroup,
    Empty(Var),
    Forbidden(Var, char),
    Dollar(Var),
    NeverMatches,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NoGroup => f.write_str("the device has no group"),
            Unusable::Empty(v) => write!(f, "{v} is empty"),
            Unusable::Forbidden(v, '\0') => write!(f, "{v} contains a NUL character"),
            Unusable::Forbidden(v, c) => write!(f, "{v} contains `{c}`"),
            Unusable::Dollar(v) => {
                write!(f, "{v} starts with `$` and would name a `$` topic")
            }
            Unusable::NeverMatches => {
                f.write_str("the substituted text can never match a topic level")
            }
        }
    }
}

fn check_value(value: &str, var: Var) -> Result<(), Unusable> {
    if value.is_empty() {
        return Err(Unusable::Empty(var));
    }
    if let Some(c) = value.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
        return Err(Unusable::Forbidden(var, c));
    }
    Ok(())
}

/// Check that `topic` is a valid MQTT topic name (what PUBLISH carries).
pub(crate) fn check_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("a topic name must not be empty");
    }
    if topic.contains(['+', '#']) {
        return Err("a topic name must not contain wildcards");
    }
    if topic.contains('\0') {
        return Err("a topic name must not contain NUL");
    }
    Ok(())
}

/// Check that `filter` is a valid MQTT topic filter (what SUBSCRIBE carries).
pub(crate) fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("a topic filter must not be empty");
    }
    if filter.contains('\0') {
        return Err("a topic filter must not contain NUL");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return Err("`#` must be the last level"),
            "#" | "+" => {}
            l if l.contains('#') => return Err("`#` must be a whole level"),
            l if l.contains('+') => return Err("`+` must be a whole level"),
            _ => {}
        }
    }
    Ok(())
}

/// The empty string is not a topic name, so the "zero levels" reading of a
/// `#` can produce a non-topic in two places: `#` (no level at all) and `/#`
/// (the single empty level, i.e. ""). Rewriting them to `+/#` and `/+/#`,
/// which match exactly the same topic names, makes the level-by-level
/// coverage and intersection algorithms exact.
fn normalize_filter(filter: &str) -> &str {
    match filter {
        "#" => "+/#",
        "/#" => "/+/#",
        other => other,
    }
}

/// [`normalize_filter`] for compiled pattern levels.
fn normalize_levels(mut levels: Vec<Level>) -> Vec<Level> {
    match levels.as_slice() {
        [Level::Multi] => levels.insert(0, Level::Single),
        [Level::Literal(first), Level::Multi] if first.is_empty() => {
            levels.insert(1, Level::Single)
        }
        _ => {}
    }
    levels
}

/// [`normalize_filter`] for template levels.
fn normalize_template_levels(mut levels: Vec<TemplateLevel>) -> Vec<TemplateLevel> {
    match levels.as_slice() {
        [TemplateLevel::Multi] => levels.insert(0, TemplateLevel::Single),
        [TemplateLevel::Text(first), TemplateLevel::Multi] if first.is_empty() => {
            levels.insert(1, TemplateLevel::Single)
        }
        _ => {}
    }
    levels
}

/// A level of a (validated) subscription filter.
#[derive(Clone, Copy)]
enum FilterLevel<'a> {
    Literal(&'a str),
    Single,
    Multi,
}

fn filter_level(level: &str) -> FilterLevel<'_> {
    match level {
        "+" => FilterLevel::Single,
        "#" => FilterLevel::Multi,
        other => FilterLevel::Literal(other),
    }
}

/// Does `pattern` match the topic name `topic`? (`topic` must be valid.)
///
/// MQTT rule: a pattern whose first level is a wildcard does not match a
/// topic starting with `$`.
pub(crate) fn matches(pattern: &[Level], topic: &str) -> bool {
    if topic.starts_with('$') && pattern.first().is_some_and(Level::is_wildcard) {
        return false;
    }
    let mut levels = topic.split('/');
    for p in pattern {
        match p {
            Level::Multi => return true,
            Level::Single => {
                if levels.next().is_none() {
                    return false;
                }
            }
            Level::Literal(text) => match levels.next() {
                Some(level) if level == text => {}
                _ => return false,
            },
        }
    }
    levels.next().is_none()
}

/// Is every topic matched by `filter` also matched by `pattern`?
/// (`filter` must be a valid filter.)
pub(crate) fn covers(pattern: &[Level], filter: &str) -> bool {
    // A filter starting with a literal `$` matches only `$` topics, which a
    // pattern with a leading wildcard never matches.
    if filter.starts_with('$') && pattern.first().is_some_and(Level::is_wildcard) {
        return false;
    }
    let filter = normalize_filter(filter);
    let mut levels = filter.split('/').map(filter_level);
    for p in pattern {
        match p {
            Level::Multi => return true,
            Level::Single => match levels.next() {
                Some(FilterLevel::Literal(_) | FilterLevel::Single) => {}
                Some(FilterLevel::Multi) | None => return false,
            },
            Level::Literal(text) => match levels.next() {
                Some(FilterLevel::Literal(level)) if level == text => {}
                _ => return false,
            },
        }
    }
    levels.next().is_none()
}

/// Is there at least one topic matched by both `pattern` and `filter`?
/// (`filter` must be a valid filter.)
pub(crate) fn intersects(pattern: &[Level], filter: &str) -> bool {
    let filter_first_wild = matches!(
        filter.split('/').next().map(filter_level),
        Some(FilterLevel::Single | FilterLevel::Multi)
    );
    let pattern_first_wild = pattern.first().is_some_and(Level::is_wildcard);
    let pattern_dollar = matches!(pattern.first(), Some(Level::Literal(t)) if t.starts_with('$'));
    // One side only matches `$` topics, the other only non-`$` topics.
    if (filter.starts_with('$') && pattern_first_wild) || (pattern_dollar && filter_first_wild) {
        return false;
    }
    let filter = normalize_filter(filter);
    let mut levels = filter.split('/').map(filter_level);
    for p in pattern {
        let f = levels.next();
        match (p, f) {
            (Level::Multi, _) | (_, Some(FilterLevel::Multi)) => return true,
            (_, None) => return false,
            (Level::Single, Some(_)) => {}
            (Level::Literal(_), Some(FilterLevel::Single)) => {}
            (Level::Literal(text), Some(FilterLevel::Literal(level))) => {
                if level != text {
                    return false;
                }
            }
        }
    }
    matches!(levels.next(), None | Some(FilterLevel::Multi))
}

/// Symbolic coverage between two templates (used by lint): is every topic
/// that `inner` can match, for any identity, also matched by `outer` for the
/// same identity? Sound but not complete: levels with text must be written
/// identically.
pub(crate) fn template_covers(outer: &Template, inner: &Template) -> bool {
    if inner
        .levels
        .first()
        .is_some_and(TemplateLevel::starts_with_literal_dollar)
        && outer.first_level_is_wildcard()
    {
        return false;
    }
    let mut levels = inner.levels.iter();
    for o in &outer.levels {
        match o {
            TemplateLevel::Multi => return true,
            TemplateLevel::Single => match levels.next() {
                Some(TemplateLevel::Single | TemplateLevel::Text(_)) => {}
                Some(TemplateLevel::Multi) | None => return false,
            },
            TemplateLevel::Text(text) => match levels.next() {
                Some(TemplateLevel::Text(t)) if t == text => {}
                _ => return false,
            },
        }
    }
    levels.next().is_none()
}

/// Symbolic intersection between two templates (used by lint). Levels with
/// text only intersect when written identically (or against a wildcard).
pub(crate) fn template_intersects(a: &Template, b: &Template) -> bool {
    let a_first = a.levels.first();
    let b_first = b.levels.first();
    let dollar_vs_wild = |x: Option<&TemplateLevel>, y: Option<&TemplateLevel>| {
        x.is_some_and(TemplateLevel::starts_with_literal_dollar)
            && y.is_some_and(TemplateLevel::is_wildcard)
    };
    if dollar_vs_wild(a_first, b_first) || dollar_vs_wild(b_first, a_first) {
        return false;
    }
    let mut bl = b.levels.iter();
    for x in &a.levels {
        match (x, bl.next()) {
            (TemplateLevel::Multi, _) | (_, Some(TemplateLevel::Multi)) => return true,
            (_, None) => return false,
            (TemplateLevel::Single, Some(_)) | (_, Some(TemplateLevel::Single)) => {}
            (TemplateLevel::Text(t1), Some(TemplateLevel::Text(t2))) => {
                if t1 != t2 {
                    return false;
                }
            }
        }
    }
    matches!(bl.next(), None | Some(TemplateLevel::Multi))
}
