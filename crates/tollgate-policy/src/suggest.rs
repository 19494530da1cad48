//! Least-privilege policy suggestions from observed traffic (`tollgate policy suggest`), and
//! the grants nobody used (`tollgate policy lint --observed`).
//!
//! The broker records, per device, a bounded set of what it was seen doing ([`Observed`]: the
//! device's identity at the time, publish / subscribe / retained publish, the topic or the
//! filter as subscribed, how often). [`Policy::suggest`] turns that record into the narrowest
//! policy that still permits every observed action the current policy allows, prints it as a
//! TOML file and as a diff against the current policy, and says what each change would have
//! denied. Everything here is pure: no I/O, and no input (however hostile) makes it panic.
//!
//! # How a suggestion is built
//!
//! 1. **Observations are checked against the current policy.** Identical observations are
//!    merged (counts added). An observation with an invalid topic or filter, an empty device id,
//!    or a topic level containing `${` (which a pattern cannot express literally: it would be
//!    read as a variable) is reported in [`Suggestion::skipped`]. One the current policy denies
//!    is reported in [`Suggestion::denied_seen`] and never granted: the suggestion is always a
//!    subset of the current policy.
//!
//! 2. **Each topic is generalised for the device that used it.** A level equal to the device
//!    id becomes `${device.id}` (`devices/s01/telemetry` → `devices/${device.id}/telemetry`); so
//!    does the id inside a level when it occurs there exactly once, delimited by the ends of
//!    the level or by characters that are not letters or digits (`plant/status-plc-01` →
//!    `plant/status-${device.id}` for device `plc-01`, but `v01x` stays literal for device
//!    `01`). A level equal to both the id and one of the device's groups stays literal, as
//!    does any level where the variable would not expand back to exactly the observed text for
//!    that device (e.g. an id containing `+` or starting with `$` in the first level). A
//!    subscription's own wildcards are kept: the filter as subscribed is what is granted.
//!
//! 3. **Shapes are placed in group or device rules.** A device's *shapes* are its generalised
//!    (action, pattern) pairs. For each shape a device used, among the device's groups:
//!    * a group qualifies if every observed member of the group has the same set of shapes, or
//!      the shape was seen from at least 2 members of it, or the shape uses `${device.id}` (it
//!      then gives every member only its own instance);
//!    * the qualifying group with the most members that used the shape wins (ties: the first
//!      name in sorted order), giving `[[allow]] id = "suggested-group-G"`, `who = "group:G"`;
//!    * otherwise (no qualifying group, or no group at all) the shape goes to
//!      `id = "suggested-device-ID"`, `who = "device:ID"`.
//!
//!    Every shape must also be within the current policy for every observed identity the
//!    chosen rule applies to (step 5): for a group rule every observed member of the group, for
//!    a device rule every set of groups the device was seen with. If it is not, the next
//!    candidate is tried: the device rule, then each of the identity's groups. If none fits (a
//!    device seen with several sets of groups, allowed the action with only some of them,
//!    which no `who` can express), the observation is reported in [`Suggestion::skipped`].
//!    With [`SuggestOptions::group`], only observations of that group's members are used, and
//!    only that group (and device rules for its members) are suggested.
//!
//! 4. **Wildcards only where the observations force them**, per rule and action, on the trie
//!    of its shapes, deepest levels first:
//!    * more than [`SuggestOptions::max_literal_siblings`] (default 8) distinct values at one
//!      level under the same prefix are merged into `+` (a backend commanding 20 sensors at
//!      `devices/s01/commands/reboot` ... gets `devices/+/commands/reboot`);
//!    * more than [`SuggestOptions::max_shapes_per_prefix`] (default 16) shapes left under one
//!      prefix become `prefix/#`;
//!    * never at the first level (a device that subscribed to `#` itself keeps its `#`), and
//!      never by default: a handful of values stays a handful of literal patterns.
//!
//!    Shapes deeper than 32 levels are not merged below level 32 (each stays literal, and a
//!    crowd of them under one 32-level prefix becomes `prefix/#`). The output is bounded: per
//!    rule and action, at most `max_shapes_per_prefix` patterns per distinct first level.
//!
//! 5. **Never broader than the current policy.** Every generalised or merged pattern is
//!    checked, for every observed identity the rule applies to, against the current policy:
//!    some single allow pattern must cover it and no deny pattern may intersect it (the
//!    [`CompiledPolicy::can_subscribe`] test, applied to each action's patterns). A merge that
//!    fails the check is not made (the narrower patterns stay). A pattern covered by another of
//!    the same rule and action is dropped.
//!
//! 6. **`${device.group}`** replaces a level equal to a group name (or the name inside a level,
//!    with the same delimiting rule as for ids) when that is exactly equivalent for every
//!    observed identity the rule applies to, i.e. they all have exactly that one group (a
//!    device in two groups would otherwise get both expansions).
//!
//! 7. **Denies and quarantine are kept.** The current `[[deny]]` rules (with their ids) and the
//!    `[quarantine]` section, if the file has one, are copied unchanged; only allows narrow.
//!    Output is deterministic: group rules sorted by name, then device rules by id, patterns
//!    sorted; every rule and pattern carries a comment saying what it is based on.
//!
//! For example, with the current policy `who = "*"`, `publish = ["#"]`, `subscribe = ["#"]`, 20
//! sensors of group `sensors` publishing `devices/<id>/telemetry` and subscribing
//! `devices/<id>/commands/#`, and a backend device subscribing `devices/+/telemetry`:
//!
//! ```toml
//! # seen from 20 of 20 observed devices of group sensors: 2 topic shapes, 2000 messages
//! [[allow]]
//! id = "suggested-group-sensors"
//! who = "group:sensors"
//! publish = [
//!     "devices/${device.id}/telemetry",  # 20 devices, 1980 messages
//! ]
//! subscribe = [
//!     "devices/${device.id}/commands/#",  # 20 devices, 20 messages
//! ]
//! ```
//!
//! and the diff says that `publish "#"` for `*` is narrowed, and would have denied, e.g.,
//! device `s01` publishing to `devices/s02/telemetry`.
//!
//! # What "would deny" means
//!
//! [`Change::would_deny`] lists probe actions that the current policy allows and the suggestion
//! denies. Probes are derived from each current allow pattern, instantiated for the observed
//! devices it applies to (at most 64 per rule): observed topics and filters of other devices
//! that the pattern lets this device use, the pattern with `+` replaced by a sibling device's
//! id or `other-device` and `#` by `x/y`, and for subscribe the pattern itself as a filter.
//! The counts are over this probe set, not over every possible topic.
//!
//! # Limitations
//!
//! A group rule also applies to members of the group that were not observed, and a device
//! rule to the device with groups it was not seen with; nothing is checked for them. The
//! probe set is a sample: `would_deny_count` is not a count of every topic. On pathological
//! input, merging stops after a million trie nodes per suggestion (what is left stays literal).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::compiled::{expand, rule_applies};
use crate::explain::who_text;
use crate::parse::RuleInternal;
use crate::pattern::{self, template_covers, Pattern, Template, TemplateLevel};
use crate::{Action, CompiledPolicy, Effect, Identity, Lint, Policy, Rule, Severity, Who};

/// One thing a device was seen doing: its identity at the time, the action, the topic (for
/// publish and retain) or the filter as subscribed (for subscribe), and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The device id (policy `device:ID`).
    pub device: String,
    /// The device's groups at the time (policy `group:NAME`).
    pub groups: Vec<String>,
    /// Publish, subscribe, or a publish with the retain flag set.
    pub action: Action,
    /// The concrete topic for publish and retain, the filter as subscribed for subscribe.
    pub topic: String,
    /// How many times it was seen (only reported; an entry with 0 still counts as seen).
    pub count: u64,
}

/// Knobs for [`Policy::suggest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestOptions {
    /// Only use observations of devices in this group, and only suggest rules for it (a group
    /// rule and device rules for its members).
    pub group: Option<String>,
    /// More distinct values than this at one level under the same prefix are merged into `+`
    /// (never at the first level). Default 8.
    pub max_literal_siblings: usize,
    /// More topic shapes than this under one prefix (after merging into `+`) become
    /// `prefix/#` (never at the first level). Default 16.
    pub max_shapes_per_prefix: usize,
}

impl Default for SuggestOptions {
    /// No group filter, 8 literal siblings, 16 shapes per prefix.
    fn default() -> Self {
        SuggestOptions {
            group: None,
            max_literal_siblings: 8,
            max_shapes_per_prefix: 16,
        }
    }
}

/// A suggested policy: the file, its rules, and how it differs from the current policy.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// A complete policy file ([`Policy::parse`] accepts it): the suggested allow rules, the
    /// current deny rules and `[quarantine]`, with comments saying what each rule is based on.
    pub toml: String,
    /// `toml`, parsed.
    pub policy: Policy,
    /// The suggested allow rules (as parsed from `toml`, so with its line numbers).
    pub rules: Vec<Rule>,
    /// Per current allow pattern removed or narrowed, and per suggested pattern added: what
    /// changes and what it would have denied. Current patterns in file order, then additions.
    pub changes: Vec<Change>,
    /// A unified-style text diff of the current and suggested rules, one pattern per line:
    /// `- ` removed or narrowed, `+ ` added, two spaces kept; `  #` lines say what a removal
    /// would have denied.
    pub diff: String,
    /// Observations the current policy denies: never granted by the suggestion.
    pub denied_seen: Vec<Observed>,
    /// Observations that could not be used, with the reason.
    pub skipped: Vec<Skipped>,
}

/// An observation [`Policy::suggest`] could not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The observation (counts of identical observations added).
    pub observed: Observed,
    /// Why it was not used, in words.
    pub reason: String,
}

/// What kind of difference a [`Change`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A current allow pattern that no observation used: it is gone.
    Removed,
    /// A current allow pattern that observations used: it is replaced by narrower grants.
    Narrowed,
    /// A suggested allow pattern the current policy does not have as such.
    Added,
}

/// One difference between the current policy and a suggestion, for one pattern.
#[derive(Debug, Clone)]
pub struct Change {
    /// Removed, narrowed or added.
    pub kind: ChangeKind,
    /// The rule's id: in the current policy for removals and narrowings, in the suggestion
    /// for additions.
    pub rule: String,
    /// The rule's 1-based line in its file.
    pub line: usize,
    /// Whom the rule applies to.
    pub who: Vec<Who>,
    /// Which of the rule's pattern lists (`Action::Retain` for `retain`).
    pub action: Action,
    /// The pattern as written.
    pub pattern: String,
    /// What changes, in words.
    pub text: String,
    /// Up to 5 example probe actions the current policy allows and the suggestion denies
    /// (empty for additions).
    pub would_deny: Vec<Probe>,
    /// How many probe actions derived from this pattern the current policy allows and the
    /// suggestion denies.
    pub would_deny_count: usize,
}

/// A device action used to compare two policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The device id.
    pub device: String,
    /// The device's groups.
    pub groups: Vec<String>,
    /// Publish, subscribe, or a publish with the retain flag set.
    pub action: Action,
    /// The topic (publish, retain) or filter (subscribe).
    pub topic: String,
}

/// How many examples a change lists.
const MAX_EXAMPLES: usize = 5;
/// Observed identities a current rule is probed for.
const MAX_PROBE_IDENTITIES: usize = 64;
/// Observed topics (filters) per device in the pool of cross-device probes, most used first.
const POOL_PER_DEVICE: usize = 4;
/// Size of each pool of cross-device probes.
const POOL_MAX: usize = 256;
/// Cross-device probes per (pattern, identity).
const CROSS_PROBES: usize = 16;
/// Trie depth below which levels are never merged.
const MAX_TRIE_DEPTH: usize = 32;
/// Node visits allowed for the merging of one suggestion; past it, nothing more is merged.
const COLLAPSE_BUDGET: usize = 1_000_000;
/// Characters of a name shown in a comment.
const COMMENT_NAME_CHARS: usize = 80;

// ---------------------------------------------------------------- kinds and identities

/// A pattern list of a rule; a retained publish uses both `Publish` and `Retain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Publish,
    Subscribe,
    Retain,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Publish, Kind::Subscribe, Kind::Retain];

    fn name(self) -> &'static str {
        match self {
            Kind::Publish => "publish",
            Kind::Subscribe => "subscribe",
            Kind::Retain => "retain",
        }
    }

    fn action(self) -> Action {
        match self {
            Kind::Publish => Action::Publish,
            Kind::Subscribe => Action::Subscribe,
            Kind::Retain => Action::Retain,
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Publish => 0,
            Kind::Subscribe => 1,
            Kind::Retain => 2,
        }
    }

    fn templates(self, internal: &RuleInternal) -> &[Template] {
        match self {
            Kind::Publish => &internal.publish,
            Kind::Subscribe => &internal.subscribe,
            Kind::Retain => &internal.retain,
        }
    }

    fn raws(self, rule: &Rule) -> &[String] {
        match self {
            Kind::Publish => &rule.publish,
            Kind::Subscribe => &rule.subscribe,
            Kind::Retain => &rule.retain,
        }
    }
}

fn action_rank(action: Action) -> u8 {
    match action {
        Action::Publish => 0,
        Action::Subscribe => 1,
        Action::Retain => 2,
    }
}

fn action_of_rank(rank: u8) -> Action {
    match rank {
        0 => Action::Publish,
        1 => Action::Subscribe,
        _ => Action::Retain,
    }
}

/// One observed identity: a device id with the (sorted, deduplicated) groups it had.
#[derive(Debug, Clone)]
struct Ident {
    device: String,
    groups: Vec<String>,
}

impl Ident {
    fn identity(&self) -> Identity<'_> {
        Identity {
            device_id: &self.device,
            groups: &self.groups,
        }
    }

    /// Groups a rule can name (`group:` needs a non-empty name).
    fn named_groups(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().filter(|g| !g.is_empty())
    }
}

/// One aggregated observation.
#[derive(Debug, Clone)]
struct Obs {
    ident: usize,
    action: Action,
    topic: String,
    count: u64,
    /// The topic (filter) is valid for the action.
    valid: bool,
    /// The current policy allows it (implies `valid`).
    allowed: bool,
}

/// The observations, aggregated per identity, with the current policy's verdicts.
struct Prepared {
    idents: Vec<Ident>,
    obs: Vec<Obs>,
    current: Vec<CompiledPolicy>,
}

fn prepare(policy: &Policy, observed: &[Observed], group: Option<&str>) -> Prepared {
    let in_scope = |o: &&Observed| group.is_none_or(|g| o.groups.iter().any(|x| x == g));
    let key_of = |o: &Observed| {
        let mut groups = o.groups.clone();
        groups.sort();
        groups.dedup();
        (o.device.clone(), groups)
    };
    // Identities numbered in sorted order, so that everything downstream is deterministic.
    let mut ident_ids: BTreeMap<(String, Vec<String>), usize> = observed
        .iter()
        .filter(in_scope)
        .map(|o| (key_of(o), 0))
        .collect();
    let mut idents = Vec::with_capacity(ident_ids.len());
    for (n, ((device, groups), id)) in ident_ids.iter_mut().enumerate() {
        *id = n;
        idents.push(Ident {
            device: device.clone(),
            groups: groups.clone(),
        });
    }
    let mut counts: BTreeMap<(usize, u8, &str), u64> = BTreeMap::new();
    for o in observed.iter().filter(in_scope) {
        let Some(&ident) = ident_ids.get(&key_of(o)) else {
            continue;
        };
        let c = counts
            .entry((ident, action_rank(o.action), o.topic.as_str()))
            .or_insert(0);
        *c = c.saturating_add(o.count);
    }
    let current: Vec<CompiledPolicy> = idents
        .iter()
        .map(|i| policy.compile(&i.identity()))
        .collect();
    let obs: Vec<Obs> = counts
        .into_iter()
        .map(|((ident, rank, topic), count)| {
            let action = action_of_rank(rank);
            let valid = match action {
                Action::Subscribe => pattern::check_filter(topic).is_ok(),
                Action::Publish | Action::Retain => pattern::check_topic_name(topic).is_ok(),
            };
            let allowed = valid && current.get(ident).is_some_and(|c| allows(c, action, topic));
            Obs {
                ident,
                action,
                topic: topic.to_string(),
                count,
                valid,
                allowed,
            }
        })
        .collect();
    Prepared {
        idents,
        obs,
        current,
    }
}

/// What a compiled policy says about one action.
fn allows(c: &CompiledPolicy, action: Action, topic: &str) -> bool {
    match action {
        Action::Publish => c.can_publish(topic),
        Action::Subscribe => c.can_subscribe(topic),
        Action::Retain => c.can_publish_retained(topic),
    }
}

fn observed_of(prep: &Prepared, o: &Obs) -> Observed {
    let ident = prep.idents.get(o.ident);
    Observed {
        device: ident.map(|i| i.device.clone()).unwrap_or_default(),
        groups: ident.map(|i| i.groups.clone()).unwrap_or_default(),
        action: o.action,
        topic: o.topic.clone(),
        count: o.count,
    }
}

/// Does `template` (a pattern of the list `kind`), for this identity, match (cover) what the
/// observed action did? `topic` must be valid for `action`.
fn pattern_used(
    template: &Template,
    kind: Kind,
    identity: &Identity<'_>,
    action: Action,
    topic: &str,
) -> bool {
    let relevant = matches!(
        (kind, action),
        (Kind::Publish, Action::Publish | Action::Retain)
            | (Kind::Retain, Action::Retain)
            | (Kind::Subscribe, Action::Subscribe)
    );
    relevant
        && expand(template, Effect::Allow, identity)
            .into_iter()
            .flatten()
            .any(|p| match kind {
                Kind::Subscribe => pattern::covers(&p.levels, topic),
                Kind::Publish | Kind::Retain => pattern::matches(&p.levels, topic),
            })
}

// ---------------------------------------------------------------- unused grants

pub(crate) fn unused_grants(policy: &Policy, observed: &[Observed]) -> Vec<Lint> {
    let prep = prepare(policy, observed, None);
    let mut out = Vec::new();
    for (rule, internal) in &policy.internal {
        if rule.effect != Effect::Allow {
            continue;
        }
        let applies: Vec<usize> = prep
            .idents
            .iter()
            .enumerate()
            .filter(|(_, i)| rule_applies(rule, &i.identity()).is_some())
            .map(|(n, _)| n)
            .collect();
        for kind in Kind::ALL {
            for (raw, template) in kind.raws(rule).iter().zip(kind.templates(internal)) {
                let used = prep.obs.iter().any(|o| {
                    o.allowed
                        && applies.binary_search(&o.ident).is_ok()
                        && prep.idents.get(o.ident).is_some_and(|i| {
                            pattern_used(template, kind, &i.identity(), o.action, &o.topic)
                        })
                });
                if used {
                    continue;
                }
                let why = if applies.is_empty() {
                    " (no device it applies to was observed)"
                } else {
                    ""
                };
                out.push(Lint {
                    severity: Severity::Warning,
                    rule: rule.id.clone(),
                    line: rule.line,
                    message: format!(
                        "allow rule '{}' grants {} {:?} but no device used it in the \
                         observation window{why}",
                        rule.id,
                        kind.name(),
                        raw
                    ),
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------- current grants per identity

/// The current policy's expanded patterns for one identity, per list.
struct Grants {
    allow: [Vec<Pattern>; 3],
    deny: [Vec<Pattern>; 3],
}

fn grants(policy: &Policy, identity: &Identity<'_>) -> Grants {
    let mut g = Grants {
        allow: [Vec::new(), Vec::new(), Vec::new()],
        deny: [Vec::new(), Vec::new(), Vec::new()],
    };
    for (rule, internal) in &policy.internal {
        if rule_applies(rule, identity).is_none() {
            continue;
        }
        let lists = match rule.effect {
            Effect::Allow => &mut g.allow,
            Effect::Deny => &mut g.deny,
        };
        for kind in Kind::ALL {
            if let Some(list) = lists.get_mut(kind.index()) {
                for t in kind.templates(internal) {
                    list.extend(expand(t, rule.effect, identity).into_iter().flatten());
                }
            }
        }
    }
    g
}

/// Is everything `text` (a pattern, possibly with variables) grants, for each of these
/// identities, already granted by the current policy? Some single allow pattern of the same
/// list must cover each expansion, and no deny pattern may intersect it.
fn within(scope: &[(&Ident, &Grants)], kind: Kind, text: &str) -> bool {
    let Ok(template) = Template::parse(text) else {
        return false;
    };
    let i = kind.index();
    for (ident, g) in scope {
        for expanded in expand(&template, Effect::Allow, &ident.identity()) {
            // An expansion that fails grants nothing to this identity.
            let Ok(p) = expanded else { continue };
            let filter = p.to_string();
            if pattern::check_filter(&filter).is_err() {
                return false;
            }
            let allowed = g
                .allow
                .get(i)
                .is_some_and(|l| l.iter().any(|a| pattern::covers(&a.levels, &filter)));
            let denied = g
                .deny
                .get(i)
                .is_some_and(|l| l.iter().any(|d| pattern::intersects(&d.levels, &filter)));
            if !allowed || denied {
                return false;
            }
        }
    }
    true
}

// ---------------------------------------------------------------- generalisation

/// Replace `value` in `level` by `var`: the whole level, or one delimited occurrence.
fn substitute(level: &str, value: &str, var: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    if level == value {
        return Some(var.to_string());
    }
    let start = level.find(value)?;
    let end = start + value.len();
    // Exactly one occurrence, overlapping ones included.
    let next = start + level.get(start..)?.chars().next()?.len_utf8();
    if level.get(next..).is_some_and(|rest| rest.contains(value)) {
        return None;
    }
    let before = level.get(..start)?;
    let after = level.get(end..)?;
    let delimited = before
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric())
        && after.chars().next().is_none_or(|c| !c.is_alphanumeric());
    delimited.then(|| format!("{before}{var}{after}"))
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// The expansions of a pattern for an identity, or `None` if it does not parse.
fn expansions(text: &str, ident: &Ident) -> Option<Vec<Result<Pattern, pattern::Unusable>>> {
    let t = Template::parse(text).ok()?;
    Some(expand(&t, Effect::Allow, &ident.identity()))
}

/// The shape of one observed topic or filter for the identity that used it: levels, with
/// `${device.id}` where that is exact. `None` if a level contains `${`.
fn generalise(ident: &Ident, topic: &str) -> Option<Vec<String>> {
    let literal: Vec<String> = topic.split('/').map(str::to_string).collect();
    if literal.iter().any(|l| l.contains("${")) {
        return None;
    }
    let id = ident.device.as_str();
    let mut shape = literal.clone();
    let mut changed = false;
    for level in shape.iter_mut() {
        if is_wild(level) || (level.as_str() == id && ident.groups.iter().any(|g| g == id)) {
            continue;
        }
        if let Some(s) = substitute(level, id, "${device.id}") {
            *level = s;
            changed = true;
        }
    }
    let literal_expansion = expansions(topic, ident)?;
    if !changed {
        return Some(literal);
    }
    match expansions(&shape.join("/"), ident) {
        Some(e) if e == literal_expansion => Some(shape),
        _ => Some(literal),
    }
}

/// `${device.group}` for `group` in `text`, if exactly equivalent for every identity.
fn with_group_var(text: &str, group: &str, scope: &[&Ident]) -> String {
    let mut changed = false;
    let levels: Vec<String> = text
        .split('/')
        .map(|level| {
            if is_wild(level) || level.contains("${") {
                return level.to_string();
            }
            match substitute(level, group, "${device.group}") {
                Some(s) => {
                    changed = true;
                    s
                }
                None => level.to_string(),
            }
        })
        .collect();
    if !changed {
        return text.to_string();
    }
    let candidate = levels.join("/");
    let (Ok(new), Ok(old)) = (Template::parse(&candidate), Template::parse(text)) else {
        return text.to_string();
    };
    let same = scope.iter().all(|ident| {
        let identity = ident.identity();
        expand(&new, Effect::Allow, &identity) == expand(&old, Effect::Allow, &identity)
    });
    if same {
        candidate
    } else {
        text.to_string()
    }
}

// ---------------------------------------------------------------- merging (the trie)

#[derive(Debug, Clone, Default)]
struct Node {
    /// Shapes ending exactly here.
    end: Vec<usize>,
    /// Shapes with `#` here.
    multi: Vec<usize>,
    /// Shapes longer than [`MAX_TRIE_DEPTH`], kept whole.
    deep: Vec<usize>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, levels: &[String], src: usize) {
        let mut node = self;
        if levels.len() > MAX_TRIE_DEPTH {
            for level in levels.iter().take(MAX_TRIE_DEPTH) {
                node = node.children.entry(level.clone()).or_default();
            }
            node.deep.push(src);
            return;
        }
        let last = levels.len().saturating_sub(1);
        for (i, level) in levels.iter().enumerate() {
            if level == "#" && i == last {
                node.multi.push(src);
                return;
            }
            node = node.children.entry(level.clone()).or_default();
        }
        node.end.push(src);
    }

    fn merge(&mut self, other: Node) {
        self.end.extend(other.end);
        self.multi.extend(other.multi);
        self.deep.extend(other.deep);
        for (k, child) in other.children {
            self.children.entry(k).or_default().merge(child);
        }
    }

    fn sources(&self, out: &mut Vec<usize>) {
        out.extend(&self.end);
        out.extend(&self.multi);
        out.extend(&self.deep);
        for child in self.children.values() {
            child.sources(out);
        }
    }
}

/// A pattern produced by merging, with the shapes it stands for.
#[derive(Debug, Clone)]
struct Merged {
    levels: Vec<String>,
    sources: Vec<usize>,
    note: Option<String>,
}

struct Collapser<'a> {
    shapes: &'a [Vec<String>],
    max_siblings: usize,
    max_shapes: usize,
    budget: &'a mut usize,
    within: &'a dyn Fn(&str) -> bool,
}

impl Collapser<'_> {
    fn collapse(&mut self, node: Node, prefix: &[String]) -> Vec<Merged> {
        *self.budget = self.budget.saturating_sub(1);
        let depth = prefix.len();
        let with = |level: &str| {
            let mut v = prefix.to_vec();
            v.push(level.to_string());
            v
        };
        if !node.multi.is_empty() {
            // `prefix/#` covers everything below it, and the prefix itself.
            let mut sources = Vec::new();
            node.sources(&mut sources);
            return vec![Merged {
                levels: with("#"),
                sources,
                note: None,
            }];
        }
        let mut out = Vec::new();
        if !node.end.is_empty() {
            out.push(Merged {
                levels: prefix.to_vec(),
                sources: node.end.clone(),
                note: None,
            });
        }
        for &src in &node.deep {
            if let Some(shape) = self.shapes.get(src) {
                out.push(Merged {
                    levels: shape.clone(),
                    sources: vec![src],
                    note: None,
                });
            }
        }
        let literal = node.children.keys().filter(|k| !is_wild(k)).count();
        let mut merged_ok = false;
        if (1..MAX_TRIE_DEPTH).contains(&depth) && literal > self.max_siblings && *self.budget > 0 {
            let mut merged = Node::default();
            for child in node.children.values() {
                merged.merge(child.clone());
            }
            let mut result = self.collapse(merged, &with("+"));
            if result.iter().all(|m| (self.within)(&m.levels.join("/"))) {
                for m in &mut result {
                    m.note.get_or_insert_with(|| {
                        format!(
                            "level {} merged into `+`: {literal} distinct values",
                            depth + 1
                        )
                    });
                }
                out.extend(result);
                merged_ok = true;
            }
        }
        if !merged_ok {
            for (level, child) in node.children {
                out.extend(self.collapse(child, &with(&level)));
            }
        }
        if depth >= 1 && out.len() > self.max_shapes && *self.budget > 0 {
            let levels = with("#");
            if (self.within)(&levels.join("/")) {
                let shapes = out.len();
                let sources = out.into_iter().flat_map(|m| m.sources).collect();
                return vec![Merged {
                    levels,
                    sources,
                    note: Some(format!(
                        "{shapes} topic shapes under `{}` merged into `#`",
                        prefix.join("/")
                    )),
                }];
            }
        }
        out
    }
}

// ---------------------------------------------------------------- placement

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Group(String),
    Device(String),
}

impl Subject {
    fn who(&self) -> String {
        match self {
            Subject::Group(g) => format!("group:{g}"),
            Subject::Device(d) => format!("device:{d}"),
        }
    }

    fn base_id(&self) -> String {
        match self {
            Subject::Group(g) => format!("suggested-group-{g}"),
            Subject::Device(d) => format!("suggested-device-{d}"),
        }
    }
}

type ShapeKey = (Kind, Vec<String>);

/// One identity's use of a shape: how often, and the topic (filter) it stands for.
#[derive(Debug, Clone)]
struct Use {
    count: u64,
    topic: String,
}

/// Which identities used a shape.
type Uses = BTreeMap<usize, Use>;

/// Shapes per rule subject.
type Placed = BTreeMap<Subject, BTreeMap<ShapeKey, Uses>>;

/// A suggested pattern with what it is based on.
#[derive(Debug, Clone)]
struct Grant {
    text: String,
    devices: BTreeSet<String>,
    messages: u64,
    note: Option<String>,
}

/// A suggested allow rule.
#[derive(Debug, Clone)]
struct SuggestedRule {
    subject: Subject,
    id: String,
    comment: String,
    grants: BTreeMap<Kind, Vec<Grant>>,
}

/// What the observations come to before placement.
struct Seen {
    uses: BTreeMap<ShapeKey, Uses>,
    denied_seen: Vec<Observed>,
    skipped: Vec<Skipped>,
}

/// Everything [`suggest`] computes from the observations, shared by its steps.
struct Context<'a> {
    prep: &'a Prepared,
    /// The current policy's grants, per identity (parallel to `prep.idents`).
    grants: Vec<Grants>,
    /// Observed members (device ids) of each group that may get a rule.
    members: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// The identities of each device and of each group.
    by_device: BTreeMap<&'a str, Vec<usize>>,
    by_group: BTreeMap<&'a str, Vec<usize>>,
}

impl<'a> Context<'a> {
    fn new(policy: &Policy, prep: &'a Prepared, group_filter: Option<&str>) -> Context<'a> {
        let mut members: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut by_device: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (n, ident) in prep.idents.iter().enumerate() {
            by_device.entry(&ident.device).or_default().push(n);
            for g in &ident.groups {
                by_group.entry(g).or_default().push(n);
                if !g.is_empty() && group_filter.is_none_or(|f| f == g) {
                    members.entry(g).or_default().insert(&ident.device);
                }
            }
        }
        Context {
            prep,
            grants: prep
                .idents
                .iter()
                .map(|i| grants(policy, &i.identity()))
                .collect(),
            members,
            by_device,
            by_group,
        }
    }

    /// The identities a rule for `subject` applies to.
    fn scope(&self, subject: &Subject) -> Vec<(&Ident, &Grants)> {
        let list = match subject {
            Subject::Group(g) => self.by_group.get(g.as_str()),
            Subject::Device(d) => self.by_device.get(d.as_str()),
        };
        list.into_iter()
            .flatten()
            .filter_map(|&i| Some((self.prep.idents.get(i)?, self.grants.get(i)?)))
            .collect()
    }

    fn within(&self, subject: &Subject, key: &ShapeKey) -> bool {
        within(&self.scope(subject), key.0, &key.1.join("/"))
    }
}

/// Step 1: the current policy's verdict on each observation, and the shapes of the allowed.
fn observe(prep: &Prepared) -> Seen {
    let mut seen = Seen {
        uses: BTreeMap::new(),
        denied_seen: Vec::new(),
        skipped: Vec::new(),
    };
    for o in &prep.obs {
        let Some(ident) = prep.idents.get(o.ident) else {
            continue;
        };
        let reason = if ident.device.is_empty() {
            Some("the device id is empty, so no rule can name the device")
        } else if !o.valid {
            Some(match o.action {
                Action::Subscribe => "not a valid topic filter",
                Action::Publish | Action::Retain => "not a valid topic name",
            })
        } else {
            None
        };
        if let Some(reason) = reason {
            seen.skipped.push(Skipped {
                observed: observed_of(prep, o),
                reason: reason.to_string(),
            });
            continue;
        }
        if !o.allowed {
            seen.denied_seen.push(observed_of(prep, o));
            continue;
        }
        let Some(shape) = generalise(ident, &o.topic) else {
            seen.skipped.push(Skipped {
                observed: observed_of(prep, o),
                reason: "a level contains `${`, which a pattern would read as a variable"
                    .to_string(),
            });
            continue;
        };
        let kinds: &[Kind] = match o.action {
            Action::Publish => &[Kind::Publish],
            Action::Subscribe => &[Kind::Subscribe],
            Action::Retain => &[Kind::Publish, Kind::Retain],
        };
        for &kind in kinds {
            let u = seen
                .uses
                .entry((kind, shape.clone()))
                .or_default()
                .entry(o.ident)
                .or_insert_with(|| Use {
                    count: 0,
                    topic: o.topic.clone(),
                });
            u.count = u.count.saturating_add(o.count);
        }
    }
    seen
}

fn add_use(placed: &mut Placed, subject: Subject, key: &ShapeKey, ident: usize, u: Use) {
    let slot = placed
        .entry(subject)
        .or_default()
        .entry(key.clone())
        .or_default()
        .entry(ident)
        .or_insert_with(|| Use {
            count: 0,
            topic: u.topic.clone(),
        });
    slot.count = slot.count.saturating_add(u.count);
}

/// Step 2: which rule each (shape, identity) goes to. Shapes that no rule can grant without
/// exceeding the current policy for another identity are added to `skipped`.
fn place(ctx: &Context<'_>, uses: &BTreeMap<ShapeKey, Uses>, skipped: &mut Vec<Skipped>) -> Placed {
    let idents = &ctx.prep.idents;
    let mut device_shapes: BTreeMap<&str, BTreeSet<&ShapeKey>> = BTreeMap::new();
    let mut observers: BTreeMap<&ShapeKey, BTreeSet<&str>> = BTreeMap::new();
    for (key, by) in uses {
        for ident in by.keys().filter_map(|&i| idents.get(i)) {
            device_shapes.entry(&ident.device).or_default().insert(key);
            observers.entry(key).or_default().insert(&ident.device);
        }
    }
    let no_shapes = BTreeSet::new();
    let all_same: BTreeMap<&str, bool> = ctx
        .members
        .iter()
        .map(|(g, devices)| {
            let mut sets = devices
                .iter()
                .map(|d| device_shapes.get(d).unwrap_or(&no_shapes));
            let first = sets.next();
            (*g, sets.all(|s| Some(s) == first))
        })
        .collect();

    // The preferred rule: a qualifying group, else the device.
    let mut preferred: Placed = BTreeMap::new();
    for (key, by) in uses {
        let shape_observers = observers.get(key);
        let uses_id = key.1.iter().any(|l| l.contains("${device.id}"));
        for (&i, u) in by {
            let Some(ident) = idents.get(i) else {
                continue;
            };
            let mut best: Option<(&str, usize)> = None;
            for g in ident.named_groups() {
                let Some(devices) = ctx.members.get(g.as_str()) else {
                    continue;
                };
                let n = shape_observers.map_or(0, |o| o.intersection(devices).count());
                let same = all_same.get(g.as_str()).copied().unwrap_or(false);
                if (same || n >= 2 || uses_id) && best.is_none_or(|(_, m)| n > m) {
                    best = Some((g, n));
                }
            }
            let subject = match best {
                Some((g, _)) => Subject::Group(g.to_string()),
                None => Subject::Device(ident.device.clone()),
            };
            add_use(&mut preferred, subject, key, i, u.clone());
        }
    }

    // Every rule must stay within the current policy for every identity it applies to: a
    // group rule for every observed member, a device rule for every identity the device was
    // seen with. Otherwise: the device rule, then any of the identity's groups, else nothing.
    let mut placed: Placed = BTreeMap::new();
    let mut ok: BTreeMap<(Subject, &ShapeKey), bool> = BTreeMap::new();
    let mut fits = |subject: &Subject, key: &ShapeKey| -> bool {
        let found = uses.get_key_value(key).map(|(k, _)| k);
        match found {
            Some(k) => *ok
                .entry((subject.clone(), k))
                .or_insert_with(|| ctx.within(subject, key)),
            None => false,
        }
    };
    for (subject, shapes) in preferred {
        for (key, by) in shapes {
            for (i, u) in by {
                let Some(ident) = idents.get(i) else {
                    continue;
                };
                let device = Subject::Device(ident.device.clone());
                let mut candidates = vec![subject.clone()];
                if subject != device {
                    candidates.push(device);
                }
                candidates.extend(
                    ident
                        .named_groups()
                        .filter(|g| ctx.members.contains_key(g.as_str()))
                        .map(|g| Subject::Group(g.clone())),
                );
                match candidates.into_iter().find(|c| fits(c, &key)) {
                    Some(target) => add_use(&mut placed, target, &key, i, u),
                    None => skipped.push(Skipped {
                        observed: Observed {
                            device: ident.device.clone(),
                            groups: ident.groups.clone(),
                            action: key.0.action(),
                            topic: u.topic,
                            count: u.count,
                        },
                        reason: "the device was seen with other groups for which the current \
                                 policy does not allow this, and no rule can grant it to this \
                                 identity only"
                            .to_string(),
                    }),
                }
            }
        }
    }
    placed
}

/// Step 3: per rule and list, merge the shapes into patterns, use `${device.group}` where
/// exact, drop covered patterns, and describe what the rule is based on.
fn build_rules(
    ctx: &Context<'_>,
    placed: &Placed,
    opts: &SuggestOptions,
    budget: &mut usize,
) -> Vec<SuggestedRule> {
    let mut rules = Vec::new();
    for (subject, shapes) in placed {
        let scope = ctx.scope(subject);
        let scope_idents: Vec<&Ident> = scope.iter().map(|(i, _)| *i).collect();
        let group_var = match subject {
            Subject::Group(g) => Some(g.clone()),
            Subject::Device(_) => {
                // The device's one group, if every identity it was seen with has just that one.
                let mut gs = scope_idents.iter().map(|i| i.groups.as_slice());
                match gs.next() {
                    Some([g]) if gs.all(|x| x.len() == 1 && x.first() == Some(g)) => {
                        Some(g.clone())
                    }
                    _ => None,
                }
            }
        };
        let mut by_kind: BTreeMap<Kind, Vec<Grant>> = BTreeMap::new();
        let mut all_devices: BTreeSet<&str> = BTreeSet::new();
        let mut all_messages = 0u64;
        for kind in Kind::ALL {
            let entries: Vec<(&Vec<String>, &Uses)> = shapes
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, s), u)| (s, u))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let shape_list: Vec<Vec<String>> = entries.iter().map(|(s, _)| (*s).clone()).collect();
            let mut root = Node::default();
            for (n, s) in shape_list.iter().enumerate() {
                root.insert(s, n);
            }
            let check = |text: &str| within(&scope, kind, text);
            let mut collapser = Collapser {
                shapes: &shape_list,
                max_siblings: opts.max_literal_siblings,
                max_shapes: opts.max_shapes_per_prefix,
                budget: &mut *budget,
                within: &check,
            };
            let merged = collapser.collapse(root, &[]);
            let mut grants: BTreeMap<String, Grant> = BTreeMap::new();
            for m in merged {
                let raw = m.levels.join("/");
                let text = match &group_var {
                    Some(g) => with_group_var(&raw, g, &scope_idents),
                    None => raw,
                };
                let g = grants.entry(text.clone()).or_insert_with(|| Grant {
                    text,
                    devices: BTreeSet::new(),
                    messages: 0,
                    note: None,
                });
                if g.note.is_none() {
                    g.note = m.note;
                }
                for (_, by) in m.sources.iter().filter_map(|&src| entries.get(src)) {
                    for (&i, u) in by.iter() {
                        if let Some(ident) = ctx.prep.idents.get(i) {
                            g.devices.insert(ident.device.clone());
                            all_devices.insert(&ident.device);
                        }
                        g.messages = g.messages.saturating_add(u.count);
                        all_messages = all_messages.saturating_add(u.count);
                    }
                }
            }
            let list = prune_covered(grants.into_values().collect());
            if !list.is_empty() {
                by_kind.insert(kind, list);
            }
        }
        if by_kind.is_empty() {
            continue;
        }
        let basis = format!(
            "{} topic shape{}, {} message{}",
            shapes.len(),
            plural(shapes.len()),
            all_messages,
            plural_u64(all_messages),
        );
        let comment = match subject {
            Subject::Group(g) => format!(
                "seen from {} of {} observed devices of group {}: {basis}",
                all_devices.len(),
                ctx.members.get(g.as_str()).map_or(0, BTreeSet::len),
                comment_text(g),
            ),
            Subject::Device(d) => {
                let groups: BTreeSet<&str> = scope_idents
                    .iter()
                    .flat_map(|i| i.named_groups().map(String::as_str))
                    .collect();
                let group_text = if groups.is_empty() {
                    " (no group)".to_string()
                } else {
                    let names: Vec<String> = groups
                        .iter()
                        .map(|g| format!("group {}", comment_text(g)))
                        .collect();
                    format!(" (not shared with other members of {})", names.join(", "))
                };
                format!(
                    "seen from device {} only{group_text}: {basis}",
                    comment_text(d)
                )
            }
        };
        rules.push(SuggestedRule {
            id: subject.base_id(),
            subject: subject.clone(),
            comment,
            grants: by_kind,
        });
    }
    rules
}

/// Rule ids must not collide with the deny rules kept.
fn unique_ids(policy: &Policy, rules: &mut [SuggestedRule]) {
    let mut used: BTreeSet<String> = policy
        .internal
        .iter()
        .filter(|(r, _)| r.effect == Effect::Deny)
        .map(|(r, _)| r.id.clone())
        .collect();
    for rule in rules {
        let mut id = rule.id.clone();
        let mut n = 2u64;
        while used.contains(&id) {
            id = format!("{}-{n}", rule.id);
            n = n.saturating_add(1);
        }
        used.insert(id.clone());
        rule.id = id;
    }
}

pub(crate) fn suggest(policy: &Policy, observed: &[Observed], opts: &SuggestOptions) -> Suggestion {
    let group_filter = opts.group.as_deref();
    let prep = prepare(policy, observed, group_filter);
    let ctx = Context::new(policy, &prep, group_filter);

    let Seen {
        uses,
        denied_seen,
        mut skipped,
    } = observe(&prep);
    let placed = place(&ctx, &uses, &mut skipped);
    let mut budget = COLLAPSE_BUDGET;
    let mut rules = build_rules(&ctx, &placed, opts, &mut budget);
    unique_ids(policy, &mut rules);

    let devices: BTreeSet<&str> = prep.idents.iter().map(|i| i.device.as_str()).collect();
    let toml = write_toml(
        policy,
        &rules,
        prep.obs.len(),
        devices.len(),
        group_filter,
        denied_seen.len(),
        skipped.len(),
    );
    let (toml, parsed) = match Policy::parse(&toml, "suggested policy") {
        Ok(p) => (toml, p),
        Err(e) => {
            // Not expected: every string is escaped and every pattern comes from a valid topic.
            // Fall back to a file that grants nothing rather than one that does not load.
            let fallback = write_toml(policy, &[], 0, 0, group_filter, 0, 0);
            let header = format!(
                "# The suggestion could not be written as a valid policy ({}); this file grants \
                 nothing.\n",
                comment_text(&e.to_string())
            );
            let text = format!("{header}{fallback}");
            match Policy::parse(&text, "suggested policy") {
                Ok(p) => (text, p),
                Err(_) => (header, Policy::deny_all()),
            }
        }
    };

    let notes: BTreeMap<(String, Kind, String), String> = rules
        .iter()
        .flat_map(|r| {
            r.grants.iter().flat_map(move |(kind, list)| {
                list.iter()
                    .map(move |g| ((r.id.clone(), *kind, g.text.clone()), grant_comment(g)))
            })
        })
        .collect();
    let (changes, diff) = compare(policy, &parsed, &prep, group_filter.is_some(), &notes);
    let suggested_rules = parsed
        .rules()
        .iter()
        .filter(|r| r.effect == Effect::Allow)
        .cloned()
        .collect();
    Suggestion {
        toml,
        rules: suggested_rules,
        policy: parsed,
        changes,
        diff,
        denied_seen,
        skipped,
    }
}

/// Drop patterns another pattern of the same list covers.
fn prune_covered(grants: Vec<Grant>) -> Vec<Grant> {
    let templates: Vec<Option<Template>> = grants
        .iter()
        .map(|g| Template::parse(&g.text).ok())
        .collect();
    let first_level = |t: &Option<Template>| -> Option<String> {
        match t.as_ref()?.levels.first()? {
            TemplateLevel::Text(_) => t
                .as_ref()
                .and_then(|t| t.raw.split('/').next().map(str::to_string)),
            TemplateLevel::Single | TemplateLevel::Multi => None,
        }
    };
    let mut buckets: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
    for (i, t) in templates.iter().enumerate() {
        buckets.entry(first_level(t)).or_default().push(i);
    }
    let wild: Vec<usize> = buckets.get(&None).cloned().unwrap_or_default();
    let mut removed = vec![false; grants.len()];
    let mut into: Vec<Option<usize>> = vec![None; grants.len()];
    for (i, t) in templates.iter().enumerate() {
        let Some(inner) = t else { continue };
        let candidates = buckets
            .get(&first_level(t))
            .into_iter()
            .flatten()
            .chain(wild.iter());
        for &j in candidates {
            if j == i || removed.get(j).copied().unwrap_or(true) {
                continue;
            }
            if let Some(Some(outer)) = templates.get(j) {
                if template_covers(outer, inner) {
                    if let Some(r) = removed.get_mut(i) {
                        *r = true;
                    }
                    if let Some(slot) = into.get_mut(i) {
                        *slot = Some(j);
                    }
                    break;
                }
            }
        }
    }
    // Keep what the dropped patterns were based on, in the pattern that covers them.
    let mut out: Vec<Option<Grant>> = grants.into_iter().map(Some).collect();
    for i in 0..out.len() {
        let Some(Some(j)) = into.get(i).copied() else {
            continue;
        };
        let Some(dropped) = out.get_mut(i).and_then(Option::take) else {
            continue;
        };
        // Follow the chain to a pattern that stays.
        let mut target = j;
        let mut hops = 0;
        while let Some(Some(next)) = into.get(target).copied() {
            target = next;
            hops += 1;
            if hops > out.len() {
                break;
            }
        }
        if let Some(Some(keep)) = out.get_mut(target) {
            keep.devices.extend(dropped.devices);
            keep.messages = keep.messages.saturating_add(dropped.messages);
        }
    }
    out.into_iter().flatten().collect()
}

// ---------------------------------------------------------------- writing TOML

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn plural_u64(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Text safe inside a TOML comment: one line, no control characters, not too long.
fn comment_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(COMMENT_NAME_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(COMMENT_NAME_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn grant_comment(g: &Grant) -> String {
    let mut s = format!(
        "{} device{}, {} message{}",
        g.devices.len(),
        plural(g.devices.len()),
        g.messages,
        plural_u64(g.messages)
    );
    if let Some(note) = &g.note {
        s.push_str("; ");
        s.push_str(note);
    }
    comment_line(&s)
}

/// A whole comment (which may quote topics): no control characters.
fn comment_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn write_patterns(out: &mut String, key: &str, patterns: &[String]) {
    if patterns.is_empty() {
        return;
    }
    let list: Vec<String> = patterns.iter().map(|p| toml_string(p)).collect();
    let _ = writeln!(out, "{key} = [{}]", list.join(", "));
}

fn write_copied(out: &mut String, rule: &Rule, internal: &RuleInternal) {
    let _ = writeln!(out, "# copied from the current policy (line {})", rule.line);
    let _ = writeln!(out, "[[deny]]");
    if rule.id != internal.label {
        let _ = writeln!(out, "id = {}", toml_string(&rule.id));
    }
    if let Some(d) = &rule.description {
        let _ = writeln!(out, "description = {}", toml_string(d));
    }
    let who: Vec<String> = rule.who.iter().map(|w| toml_string(&who_text(w))).collect();
    let _ = writeln!(out, "who = [{}]", who.join(", "));
    write_patterns(out, "publish", &rule.publish);
    write_patterns(out, "subscribe", &rule.subscribe);
    write_patterns(out, "retain", &rule.retain);
    out.push('\n');
}

fn write_toml(
    policy: &Policy,
    rules: &[SuggestedRule],
    observations: usize,
    devices: usize,
    group: Option<&str>,
    denied: usize,
    skipped: usize,
) -> String {
    let mut out = String::new();
    let scope = match group {
        Some(g) => format!(" of group {}", comment_text(g)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "# Suggested least-privilege policy (tollgate policy suggest), from {observations} \
         distinct observation{} of {devices} device{}{scope}.",
        plural(observations),
        plural(devices)
    );
    out.push_str(
        "# Allow rules grant only what was seen, with ${device.id} / ${device.group} where the\n\
         # observations allow, and nothing broader than the current policy for an observed device.\n\
         # The deny rules and [quarantine] of the current policy are kept unchanged.\n",
    );
    if let Some(g) = group {
        let _ = writeln!(
            out,
            "# Only group {} is covered: merge these rules into the full policy by hand.",
            comment_text(g)
        );
    }
    if rules.is_empty() {
        out.push_str(
            "# No usable observations: this suggestion allows nothing (only the current deny \
             rules and [quarantine] are kept).\n",
        );
    }
    if denied > 0 {
        let _ = writeln!(
            out,
            "# {denied} observed action{} denied by the current policy {} not granted here.",
            plural(denied),
            if denied == 1 { "is" } else { "are" }
        );
    }
    if skipped > 0 {
        let _ = writeln!(
            out,
            "# {skipped} observation{} could not be used (see the report).",
            plural(skipped)
        );
    }
    out.push_str("version = 1\n\n");

    for rule in rules {
        let _ = writeln!(out, "# {}", comment_line(&rule.comment));
        out.push_str("[[allow]]\n");
        let _ = writeln!(out, "id = {}", toml_string(&rule.id));
        let _ = writeln!(out, "who = {}", toml_string(&rule.subject.who()));
        for (kind, grants) in &rule.grants {
            let _ = writeln!(out, "{} = [", kind.name());
            for g in grants {
                let _ = writeln!(out, "    {},  # {}", toml_string(&g.text), grant_comment(g));
            }
            out.push_str("]\n");
        }
        out.push('\n');
    }

    for (rule, internal) in &policy.internal {
        if rule.effect == Effect::Deny {
            write_copied(&mut out, rule, internal);
        }
    }
    if policy.quarantine_written {
        if let Some((q, _)) = policy.quarantine.first() {
            out.push_str("# copied from the current policy\n[quarantine]\n");
            if let Some(d) = &q.description {
                let _ = writeln!(out, "description = {}", toml_string(d));
            }
            write_patterns(&mut out, "publish", &q.publish);
            write_patterns(&mut out, "subscribe", &q.subscribe);
            write_patterns(&mut out, "retain", &q.retain);
        }
    }
    out
}

// ---------------------------------------------------------------- comparing

fn who_key(who: &[Who]) -> String {
    let mut v: Vec<String> = who.iter().map(who_text).collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

/// Valid as a single topic level (a probe value).
fn level_value(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

/// Concrete probes from one expanded pattern: `+` → `value`, `#` → `x/y` (or kept as `#` in a
/// filter when `keep_multi`).
fn instantiate(p: &Pattern, value: &str, keep_multi: bool) -> String {
    p.levels
        .iter()
        .map(|l| match l {
            pattern::Level::Literal(t) => t.as_str(),
            pattern::Level::Single => value,
            pattern::Level::Multi if keep_multi => "#",
            pattern::Level::Multi => "x/y",
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Rules of `policy` whose `kind` patterns grant the observed action to this identity.
fn granting_rules(
    policy: &Policy,
    ident: &Ident,
    kind: Kind,
    action: Action,
    topic: &str,
) -> Vec<String> {
    let identity = ident.identity();
    policy
        .internal
        .iter()
        .filter(|(r, _)| r.effect == Effect::Allow && rule_applies(r, &identity).is_some())
        .filter(|(_, i)| {
            kind.templates(i)
                .iter()
                .any(|t| pattern_used(t, kind, &identity, action, topic))
        })
        .map(|(r, _)| r.id.clone())
        .collect()
}

fn compare(
    current: &Policy,
    suggested: &Policy,
    prep: &Prepared,
    partial: bool,
    notes: &BTreeMap<(String, Kind, String), String>,
) -> (Vec<Change>, String) {
    // The suggestion compiled for the identities that will be probed.
    let mut probed: BTreeSet<usize> = BTreeSet::new();
    for (rule, _) in current
        .internal
        .iter()
        .filter(|(r, _)| r.effect == Effect::Allow)
    {
        probed.extend(
            prep.idents
                .iter()
                .enumerate()
                .filter(|(_, i)| rule_applies(rule, &i.identity()).is_some())
                .map(|(n, _)| n)
                .take(MAX_PROBE_IDENTITIES),
        );
    }
    let sugg: BTreeMap<usize, CompiledPolicy> = probed
        .into_iter()
        .filter_map(|n| Some((n, suggested.compile(&prep.idents.get(n)?.identity()))))
        .collect();
    let key_set = |p: &Policy| -> BTreeSet<(String, Kind, String)> {
        p.internal
            .iter()
            .filter(|(r, _)| r.effect == Effect::Allow)
            .flat_map(|(r, _)| {
                Kind::ALL.into_iter().flat_map(move |k| {
                    k.raws(r)
                        .iter()
                        .map(move |raw| (who_key(&r.who), k, raw.clone()))
                })
            })
            .collect()
    };
    let current_keys = key_set(current);
    let suggested_keys = key_set(suggested);

    // Pools of cross-device probes: each device's most used topics and filters.
    let mut topic_pool: Vec<&str> = Vec::new();
    let mut filter_pool: Vec<&str> = Vec::new();
    {
        let mut per_device: BTreeMap<(&str, bool), Vec<&Obs>> = BTreeMap::new();
        for o in prep.obs.iter().filter(|o| o.valid) {
            if let Some(ident) = prep.idents.get(o.ident) {
                let sub = o.action == Action::Subscribe;
                per_device.entry((&ident.device, sub)).or_default().push(o);
            }
        }
        for ((_, sub), mut list) in per_device {
            list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.topic.cmp(&b.topic)));
            let pool = if sub {
                &mut filter_pool
            } else {
                &mut topic_pool
            };
            for o in list.into_iter().take(POOL_PER_DEVICE) {
                if pool.len() < POOL_MAX && !pool.contains(&o.topic.as_str()) {
                    pool.push(&o.topic);
                }
            }
        }
    }
    let devices: Vec<&str> = {
        let set: BTreeSet<&str> = prep
            .idents
            .iter()
            .map(|i| i.device.as_str())
            .filter(|d| level_value(d))
            .collect();
        set.into_iter().collect()
    };
    let sibling = |device: &str| -> Option<&str> {
        let pos = devices.iter().position(|d| *d == device);
        let next = match pos {
            Some(p) => devices.get(p + 1).or_else(|| devices.first()),
            None => devices.first(),
        };
        next.copied().filter(|d| *d != device)
    };

    let mut changes = Vec::new();
    let mut diff = String::from("--- current policy\n+++ suggested policy\n");
    for (rule, internal) in &current.internal {
        let who = who_key(&rule.who);
        let applies: Vec<usize> = prep
            .idents
            .iter()
            .enumerate()
            .filter(|(_, i)| rule_applies(rule, &i.identity()).is_some())
            .map(|(n, _)| n)
            .collect();
        if rule.effect == Effect::Deny {
            for kind in Kind::ALL {
                for raw in kind.raws(rule) {
                    let _ = writeln!(
                        diff,
                        "  deny {who} {} {}  # rule {}, kept",
                        kind.name(),
                        toml_string(raw),
                        comment_line(&rule.id)
                    );
                }
            }
            continue;
        }
        if partial && applies.is_empty() {
            continue;
        }
        for kind in Kind::ALL {
            for (raw, template) in kind.raws(rule).iter().zip(kind.templates(internal)) {
                let line = format!("allow {who} {} {}", kind.name(), toml_string(raw));
                if suggested_keys.contains(&(who.clone(), kind, raw.clone())) {
                    let _ = writeln!(diff, "  {line}  # rule {}, kept", comment_line(&rule.id));
                    continue;
                }
                // Observations this pattern granted, and the suggested rules that grant them.
                let mut used = 0usize;
                let mut replaced_by: BTreeSet<String> = BTreeSet::new();
                for o in prep.obs.iter().filter(|o| o.allowed) {
                    let Some(ident) = prep.idents.get(o.ident) else {
                        continue;
                    };
                    if applies.binary_search(&o.ident).is_err()
                        || !pattern_used(template, kind, &ident.identity(), o.action, &o.topic)
                    {
                        continue;
                    }
                    used += 1;
                    if replaced_by.len() < 8 {
                        replaced_by
                            .extend(granting_rules(suggested, ident, kind, o.action, &o.topic));
                    }
                }
                let (would_deny, would_deny_count) = probe(
                    template,
                    kind,
                    &applies,
                    prep,
                    &sugg,
                    &topic_pool,
                    &filter_pool,
                    &sibling,
                );
                let change_kind = if used == 0 {
                    ChangeKind::Removed
                } else {
                    ChangeKind::Narrowed
                };
                let mut text = match change_kind {
                    ChangeKind::Removed => format!(
                        "allow rule '{}' ({who}): {} {} removed: no observed device used it",
                        rule.id,
                        kind.name(),
                        toml_string(raw)
                    ),
                    _ => format!(
                        "allow rule '{}' ({who}): {} {} narrowed: the {used} observed action{} it \
                         granted {} now granted by {}",
                        rule.id,
                        kind.name(),
                        toml_string(raw),
                        plural(used),
                        if used == 1 { "is" } else { "are" },
                        if replaced_by.is_empty() {
                            "(none)".to_string()
                        } else {
                            replaced_by.iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                };
                let _ = write!(
                    text,
                    "; would have denied {would_deny_count} probe action{}",
                    plural(would_deny_count)
                );
                if !would_deny.is_empty() {
                    let examples: Vec<String> = would_deny.iter().map(probe_text).collect();
                    let _ = write!(text, ", e.g. {}", examples.join("; "));
                }
                let status = match change_kind {
                    ChangeKind::Removed => "unused",
                    _ => "narrowed",
                };
                let _ = writeln!(
                    diff,
                    "- {line}  # rule {}, {status}",
                    comment_line(&rule.id)
                );
                let _ = writeln!(
                    diff,
                    "  #   would have denied {would_deny_count} probe action{}",
                    plural(would_deny_count)
                );
                for p in &would_deny {
                    let _ = writeln!(diff, "  #     {}", comment_line(&probe_text(p)));
                }
                changes.push(Change {
                    kind: change_kind,
                    rule: rule.id.clone(),
                    line: rule.line,
                    who: rule.who.clone(),
                    action: kind.action(),
                    pattern: raw.clone(),
                    text: comment_line(&text),
                    would_deny,
                    would_deny_count,
                });
            }
        }
    }
    for (rule, _) in &suggested.internal {
        if rule.effect != Effect::Allow {
            continue;
        }
        let who = who_key(&rule.who);
        for kind in Kind::ALL {
            for raw in kind.raws(rule) {
                if current_keys.contains(&(who.clone(), kind, raw.clone())) {
                    continue;
                }
                let note = notes
                    .get(&(rule.id.clone(), kind, raw.clone()))
                    .cloned()
                    .unwrap_or_default();
                let _ = writeln!(
                    diff,
                    "+ allow {who} {} {}  # rule {}: {note}",
                    kind.name(),
                    toml_string(raw),
                    comment_line(&rule.id)
                );
                changes.push(Change {
                    kind: ChangeKind::Added,
                    rule: rule.id.clone(),
                    line: rule.line,
                    who: rule.who.clone(),
                    action: kind.action(),
                    pattern: raw.clone(),
                    text: comment_line(&format!(
                        "allow rule '{}' ({who}) grants {} {}: {note}",
                        rule.id,
                        kind.name(),
                        toml_string(raw)
                    )),
                    would_deny: Vec::new(),
                    would_deny_count: 0,
                });
            }
        }
    }
    if current.quarantine_written {
        diff.push_str("  [quarantine] kept\n");
    }
    (changes, diff)
}

fn probe_text(p: &Probe) -> String {
    let verb = match p.action {
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::Retain => "publish retained",
    };
    format!("device {} {verb} {}", p.device, toml_string(&p.topic))
}

/// Probe actions derived from one current pattern for the identities it applies to: the
/// examples (up to [`MAX_EXAMPLES`], one per device first) and how many the current policy
/// allows and the suggestion denies.
#[allow(clippy::too_many_arguments)]
fn probe<'a>(
    template: &Template,
    kind: Kind,
    applies: &[usize],
    prep: &Prepared,
    sugg: &BTreeMap<usize, CompiledPolicy>,
    topic_pool: &[&str],
    filter_pool: &[&str],
    sibling: &dyn Fn(&str) -> Option<&'a str>,
) -> (Vec<Probe>, usize) {
    let action = kind.action();
    let mut denied: Vec<(usize, String)> = Vec::new();
    let mut seen: BTreeSet<(usize, String)> = BTreeSet::new();
    for &i in applies.iter().take(MAX_PROBE_IDENTITIES) {
        let (Some(ident), Some(cur), Some(new)) =
            (prep.idents.get(i), prep.current.get(i), sugg.get(&i))
        else {
            continue;
        };
        let mut topics: Vec<String> = Vec::new();
        for p in expand(template, Effect::Allow, &ident.identity())
            .into_iter()
            .flatten()
        {
            let pool = if kind == Kind::Subscribe {
                filter_pool
            } else {
                topic_pool
            };
            topics.extend(
                pool.iter()
                    .filter(|t| match kind {
                        Kind::Subscribe => pattern::covers(&p.levels, t),
                        Kind::Publish | Kind::Retain => pattern::matches(&p.levels, t),
                    })
                    .take(CROSS_PROBES)
                    .map(|t| t.to_string()),
            );
            let mut values = Vec::new();
            if let Some(s) = sibling(&ident.device) {
                values.push(s);
            }
            values.push("other-device");
            for v in values {
                topics.push(instantiate(&p, v, false));
                if kind == Kind::Subscribe {
                    topics.push(instantiate(&p, v, true));
                }
            }
            if kind == Kind::Subscribe {
                topics.push(p.to_string());
            }
        }
        for t in topics {
            if !seen.insert((i, t.clone())) {
                continue;
            }
            if allows(cur, action, &t) && !allows(new, action, &t) {
                denied.push((i, t));
            }
        }
    }
    let count = denied.len();
    let mut examples: Vec<Probe> = Vec::new();
    let mut picked = vec![false; denied.len()];
    let mut devices_shown: BTreeSet<&str> = BTreeSet::new();
    for pass in 0..2 {
        for (n, (i, t)) in denied.iter().enumerate() {
            if examples.len() >= MAX_EXAMPLES {
                break;
            }
            let Some(ident) = prep.idents.get(*i) else {
                continue;
            };
            if picked.get(n).copied().unwrap_or(true)
                || (pass == 0 && devices_shown.contains(ident.device.as_str()))
            {
                continue;
            }
            if let Some(p) = picked.get_mut(n) {
                *p = true;
            }
            devices_shown.insert(&ident.device);
            examples.push(Probe {
                device: ident.device.clone(),
                groups: ident.groups.clone(),
                action,
                topic: t.clone(),
            });
        }
    }
    (examples, count)
}
