//! The finding lifecycle: which findings are open since when, which were resolved when, and
//! the suppressions in force. Serialisable, so the caller keeps it as a JSON file between runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::evaluate::sort_findings;
use super::rules::rule;
use super::{days, Finding, Severity};
use crate::AuditError;

/// Resolved findings are kept for this long (30 days) ...
pub const RESOLVED_KEEP_SECS: i64 = 30 * 86_400;
/// ... and at most this many (the most recently resolved).
pub const RESOLVED_KEEP_COUNT: usize = 1000;
/// A suppression lasts at most this long (365 days).
pub const MAX_SUPPRESSION_SECS: i64 = 365 * 86_400;

/// A finding followed over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracked {
    /// The finding's id ([`Finding::id`]: rule and resource).
    pub id: String,
    /// The finding as last seen.
    #[serde(flatten)]
    pub finding: Finding,
    /// When it was first seen (since it last opened), Unix seconds.
    pub first_seen: i64,
    /// When it was last seen, Unix seconds.
    pub last_seen: i64,
    /// When it was no longer seen, for a resolved finding.
    #[serde(default)]
    pub resolved_at: Option<i64>,
    /// The suppression that applies to it, if one does.
    #[serde(default)]
    pub suppressed: Option<Suppression>,
}

/// An operator's decision to accept a finding (or every finding of a rule) for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// Its id (`sup-3`).
    pub id: String,
    /// The rule.
    pub rule: String,
    /// The resource; `None`: every resource of the rule.
    pub resource: Option<String>,
    /// Why.
    pub reason: String,
    /// Who decided.
    pub author: String,
    /// When, Unix seconds.
    pub created_at: i64,
    /// Until when (exclusive), Unix seconds.
    pub until: i64,
}

impl Suppression {
    /// Whether it covers `f` at `now`.
    pub fn covers(&self, f: &Finding, now: i64) -> bool {
        self.until > now
            && self.rule == f.rule
            && self.resource.as_ref().is_none_or(|r| *r == f.resource)
    }
}

/// What an [`FindingBook::update`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Findings seen for the first time (or again after they were resolved).
    pub opened: Vec<Tracked>,
    /// Findings no longer seen.
    pub resolved: Vec<Tracked>,
}

/// The open and recently resolved findings, and the suppressions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingBook {
    /// Open findings.
    #[serde(default)]
    open: Vec<Tracked>,
    /// Resolved findings, kept for [`RESOLVED_KEEP_SECS`], at most [`RESOLVED_KEEP_COUNT`].
    #[serde(default)]
    resolved: Vec<Tracked>,
    /// Suppressions (expired ones are dropped at the next change).
    #[serde(default)]
    suppressions: Vec<Suppression>,
    /// The number of the last suppression id handed out.
    #[serde(default)]
    last_suppression: u64,
    /// The time of the last update or suppression: the time suppressions are judged at by
    /// [`FindingBook::list`] and [`FindingBook::highest_severity`].
    #[serde(default)]
    as_of: i64,
}

/// Open ones by severity (highest first), rule, resource; resolved ones after them, the most
/// recently resolved first.
fn sort_tracked(v: &mut [Tracked]) {
    v.sort_by(|a, b| {
        a.resolved_at
            .is_some()
            .cmp(&b.resolved_at.is_some())
            .then_with(|| b.resolved_at.cmp(&a.resolved_at))
            .then_with(|| b.finding.severity.cmp(&a.finding.severity))
            .then_with(|| a.finding.rule.cmp(&b.finding.rule))
            .then_with(|| a.finding.resource.cmp(&b.finding.resource))
    });
}

fn refused(detail: impl Into<String>) -> AuditError {
    AuditError::malformed("suppression", detail)
}

impl FindingBook {
    /// An empty book.
    pub fn new() -> FindingBook {
        FindingBook::default()
    }

    /// Record the findings of an evaluation at `now`: new ones open (first seen now), those
    /// seen before stay open (last seen now, the finding's text updated), those no longer seen
    /// are resolved. A finding that comes back after it was resolved opens again, with a new
    /// first-seen time. Expired suppressions and old resolved findings are dropped.
    pub fn update(&mut self, now: i64, current: Vec<Finding>) -> Changes {
        self.as_of = now;
        self.suppressions.retain(|s| s.until > now);
        let mut seen: BTreeMap<String, Finding> = BTreeMap::new();
        for f in current {
            match seen.get_mut(&f.id()) {
                Some(prev) if prev.severity >= f.severity => {}
                Some(prev) => *prev = f,
                None => {
                    seen.insert(f.id(), f);
                }
            }
        }
        let mut changes = Changes::default();
        let mut open = Vec::with_capacity(seen.len());
        for mut t in std::mem::take(&mut self.open) {
            match seen.remove(&t.id) {
                Some(f) => {
                    t.finding = f;
                    t.last_seen = now;
                    open.push(t);
                }
                None => {
                    t.resolved_at = Some(now);
                    changes.resolved.push(t.clone());
                    self.resolved.push(t);
                }
            }
        }
        if !seen.is_empty() {
            self.resolved.retain(|r| !seen.contains_key(&r.id));
        }
        for (id, finding) in seen {
            let t = Tracked {
                id,
                finding,
                first_seen: now,
                last_seen: now,
                resolved_at: None,
                suppressed: None,
            };
            changes.opened.push(t.clone());
            open.push(t);
        }
        self.open = open;
        self.prune(now);
        self.mark();
        for t in changes.opened.iter_mut().chain(changes.resolved.iter_mut()) {
            t.suppressed = self.suppression_for(&t.finding).cloned();
        }
        sort_tracked(&mut changes.opened);
        sort_tracked(&mut changes.resolved);
        changes
    }

    /// Drop resolved findings older than [`RESOLVED_KEEP_SECS`] and all but the
    /// [`RESOLVED_KEEP_COUNT`] most recent.
    fn prune(&mut self, now: i64) {
        let oldest = now.saturating_sub(RESOLVED_KEEP_SECS);
        self.resolved
            .retain(|t| t.resolved_at.unwrap_or(i64::MIN) >= oldest);
        if self.resolved.len() > RESOLVED_KEEP_COUNT {
            self.resolved.sort_by_key(|t| t.resolved_at);
            let excess = self.resolved.len() - RESOLVED_KEEP_COUNT;
            self.resolved.drain(..excess);
        }
    }

    /// The suppression in force for `f` (the one lasting longest, if several do).
    fn suppression_for(&self, f: &Finding) -> Option<&Suppression> {
        self.suppressions
            .iter()
            .filter(|s| s.covers(f, self.as_of))
            .max_by(|a, b| a.until.cmp(&b.until).then_with(|| b.id.cmp(&a.id)))
    }

    /// Set every tracked finding's `suppressed` from the suppressions in force.
    fn mark(&mut self) {
        let marks: Vec<Option<Suppression>> = self
            .open
            .iter()
            .chain(self.resolved.iter())
            .map(|t| self.suppression_for(&t.finding).cloned())
            .collect();
        for (t, m) in self
            .open
            .iter_mut()
            .chain(self.resolved.iter_mut())
            .zip(marks)
        {
            t.suppressed = m;
        }
    }

    /// The findings: open ones first (by severity, highest first, then rule and resource), then,
    /// with `include_resolved`, the resolved ones (most recently resolved first). Suppressed
    /// findings are listed too, with their suppression.
    pub fn list(&self, include_resolved: bool) -> Vec<Tracked> {
        let mut v: Vec<Tracked> = self.open.clone();
        if include_resolved {
            v.extend(self.resolved.iter().cloned());
        }
        for t in &mut v {
            t.suppressed = self.suppression_for(&t.finding).cloned();
        }
        sort_tracked(&mut v);
        v
    }

    /// The open findings' findings, in the order of [`FindingBook::list`].
    pub fn open_findings(&self) -> Vec<Finding> {
        let mut v: Vec<Finding> = self.open.iter().map(|t| t.finding.clone()).collect();
        sort_findings(&mut v);
        v
    }

    /// The highest severity among the open findings; suppressed ones count only with
    /// `include_suppressed`.
    pub fn highest_severity(&self, include_suppressed: bool) -> Option<Severity> {
        self.open
            .iter()
            .filter(|t| include_suppressed || self.suppression_for(&t.finding).is_none())
            .map(|t| t.finding.severity)
            .max()
    }

    /// Suppress `rule`'s findings on `resource` (`None`: on every resource) from `now` until
    /// `until`. Refused: an unknown rule, an empty reason or resource, `until` not after `now`
    /// or more than [`MAX_SUPPRESSION_SECS`] after it. A suppression of the same rule and
    /// resource replaces the earlier one.
    pub fn suppress(
        &mut self,
        rule_id: &str,
        resource: Option<&str>,
        reason: &str,
        author: &str,
        now: i64,
        until: i64,
    ) -> Result<Suppression, AuditError> {
        if rule(rule_id).is_none() {
            return Err(refused(format!("there is no rule {rule_id:?}")));
        }
        if reason.trim().is_empty() {
            return Err(refused("a reason is required"));
        }
        if resource.is_some_and(|r| r.trim().is_empty()) {
            return Err(refused(
                "the resource is empty (give none to suppress every resource of the rule)",
            ));
        }
        if until <= now {
            return Err(refused("it must end after it starts"));
        }
        let span = i128::from(until) - i128::from(now);
        if span > i128::from(MAX_SUPPRESSION_SECS) {
            return Err(refused(format!(
                "it may last at most {} days",
                MAX_SUPPRESSION_SECS / days(1)
            )));
        }
        self.as_of = now;
        self.suppressions.retain(|s| s.until > now);
        self.suppressions
            .retain(|s| !(s.rule == rule_id && s.resource.as_deref() == resource));
        let id = loop {
            self.last_suppression = self.last_suppression.wrapping_add(1);
            let id = format!("sup-{}", self.last_suppression);
            if !self.suppressions.iter().any(|s| s.id == id) {
                break id;
            }
        };
        let s = Suppression {
            id,
            rule: rule_id.to_string(),
            resource: resource.map(str::to_string),
            reason: reason.trim().to_string(),
            author: author.to_string(),
            created_at: now,
            until,
        };
        self.suppressions.push(s.clone());
        self.mark();
        Ok(s)
    }

    /// Remove a suppression by id; returns it.
    pub fn unsuppress(&mut self, id: &str) -> Result<Suppression, AuditError> {
        let Some(pos) = self.suppressions.iter().position(|s| s.id == id) else {
            return Err(refused(format!("there is no suppression {id:?}")));
        };
        let s = self.suppressions.remove(pos);
        self.mark();
        Ok(s)
    }

    /// The suppressions in force at `now`, oldest first.
    pub fn suppressions(&self, now: i64) -> Vec<Suppression> {
        let mut v: Vec<Suppression> = self
            .suppressions
            .iter()
            .filter(|s| s.until > now)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        v
    }
}
