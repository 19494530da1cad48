//! The per-identity form of a policy, used for every PUBLISH and SUBSCRIBE.

use crate::parse::RuleInternal;
use crate::pattern::{self, Pattern, Template, Unusable};
use crate::{Effect, Identity, Rule, Who};

/// A policy compiled for one identity: the patterns of the rules that apply
/// to it, with `${device.id}` / `${device.group}` already substituted and
/// every pattern pre-split into level matchers.
///
/// Decisions ([`can_publish`](Self::can_publish),
/// [`can_subscribe`](Self::can_subscribe)) walk the borrowed topic with
/// `split('/')` and never allocate. `CompiledPolicy::default()` denies
/// everything.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    allow_publish: Vec<Pattern>,
    deny_publish: Vec<Pattern>,
    allow_subscribe: Vec<Pattern>,
    deny_subscribe: Vec<Pattern>,
    allow_retain: Vec<Pattern>,
    deny_retain: Vec<Pattern>,
}

impl CompiledPolicy {
    /// May this identity PUBLISH to `topic`?
    ///
    /// `true` iff `topic` is a valid topic name (non-empty, no wildcards, no
    /// NUL), some applicable allow pattern matches it and no applicable deny
    /// pattern matches it.
    pub fn can_publish(&self, topic: &str) -> bool {
        if pattern::check_topic_name(topic).is_err() {
            return false;
        }
        self.allow_publish
            .iter()
            .any(|p| pattern::matches(&p.levels, topic))
            && !self
                .deny_publish
                .iter()
                .any(|p| pattern::matches(&p.levels, topic))
    }

    /// May this identity SUBSCRIBE to `filter`?
    ///
    /// `true` iff `filter` is a valid topic filter, it is covered by some
    /// applicable allow pattern (every topic it can match is matched by that
    /// pattern) and it intersects no applicable deny pattern (no topic is
    /// matched by both). For shared subscriptions pass the inner filter
    /// (without `$share/GROUP/`).
    pub fn can_subscribe(&self, filter: &str) -> bool {
        if pattern::check_filter(filter).is_err() {
            return false;
        }
        self.allow_subscribe
            .iter()
            .any(|p| pattern::covers(&p.levels, filter))
            && !self
                .deny_subscribe
                .iter()
                .any(|p| pattern::intersects(&p.levels, filter))
    }

    /// May this identity set the retain flag on a PUBLISH to `topic`?
    ///
    /// `true` iff `topic` is a valid topic name, some applicable allow `retain` pattern matches
    /// it and no applicable deny `retain` pattern does. This is on top of
    /// [`can_publish`](Self::can_publish): a retained PUBLISH needs both
    /// ([`can_publish_retained`](Self::can_publish_retained)).
    pub fn can_retain(&self, topic: &str) -> bool {
        if pattern::check_topic_name(topic).is_err() {
            return false;
        }
        self.allow_retain
            .iter()
            .any(|p| pattern::matches(&p.levels, topic))
            && !self
                .deny_retain
                .iter()
                .any(|p| pattern::matches(&p.levels, topic))
    }

    /// May this identity PUBLISH to `topic` with the retain flag set? Both `publish` and
    /// `retain` must allow it.
    pub fn can_publish_retained(&self, topic: &str) -> bool {
        self.can_publish(topic) && self.can_retain(topic)
    }

    /// Whether this compiled policy grants nothing at all.
    pub fn is_empty(&self) -> bool {
        self.allow_publish.is_empty() && self.allow_subscribe.is_empty()
    }
}

/// Does a rule's `who` apply to this identity?
pub(crate) fn who_applies(who: &Who, identity: &Identity<'_>) -> bool {
    match who {
        Who::Any => true,
        Who::Device(id) => id == identity.device_id,
        Who::Group(group) => identity.groups.iter().any(|g| g == group),
    }
}

/// The first `who` entry of a rule that applies to the identity.
pub(crate) fn rule_applies<'r>(rule: &'r Rule, identity: &Identity<'_>) -> Option<&'r Who> {
    rule.who.iter().find(|w| who_applies(w, identity))
}

/// Expand one template for one identity: one result per group when the
/// template uses `${device.group}`, otherwise exactly one.
pub(crate) fn expand(
    template: &Template,
    effect: Effect,
    identity: &Identity<'_>,
) -> Vec<Result<Pattern, Unusable>> {
    let one = |group: Option<&str>| match effect {
        Effect::Allow => template.expand_allow(identity.device_id, group),
        Effect::Deny => template.expand_deny(identity.device_id, group),
    };
    if template.uses_group() {
        if identity.groups.is_empty() {
            vec![Err(Unusable::NoGroup)]
        } else {
            identity.groups.iter().map(|g| one(Some(g))).collect()
        }
    } else {
        vec![one(None)]
    }
}

pub(crate) fn compile(rules: &[(Rule, RuleInternal)], identity: &Identity<'_>) -> CompiledPolicy {
    let mut compiled = CompiledPolicy::default();
    for (rule, internal) in rules {
        if rule_applies(rule, identity).is_none() {
            continue;
        }
        let (publish, subscribe, retain) = match rule.effect {
            Effect::Allow => (
                &mut compiled.allow_publish,
                &mut compiled.allow_subscribe,
                &mut compiled.allow_retain,
            ),
            Effect::Deny => (
                &mut compiled.deny_publish,
                &mut compiled.deny_subscribe,
                &mut compiled.deny_retain,
            ),
        };
        for (templates, target) in [
            (&internal.publish, publish),
            (&internal.subscribe, subscribe),
            (&internal.retain, retain),
        ] {
            for template in templates {
                for pattern in expand(template, rule.effect, identity)
                    .into_iter()
                    .flatten()
                {
                    if !target.contains(&pattern) {
                        target.push(pattern);
                    }
                }
            }
        }
    }
    compiled
}
