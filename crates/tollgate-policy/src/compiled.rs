//! The per-identity form of a policy, used for every PUBLISH and SUBSCRIBE, and the delivery
//! filter a granted subscription carries when it overlaps a deny rule.

use std::fmt;
use std::sync::Arc;

use crate::parse::RuleInternal;
use crate::pattern::{self, Pattern, Template, Unusable};
use crate::{Effect, Identity, Rule, Who};

/// A policy compiled for one identity: the patterns of the rules that apply
/// to it, with `${device.id}` / `${device.group}` already substituted and
/// every pattern pre-split into level matchers.
///
/// Decisions ([`can_publish`](Self::can_publish),
/// [`can_subscribe`](Self::can_subscribe), [`can_read`](Self::can_read)) walk the borrowed
/// topic with `split('/')` and never allocate; [`subscription`](Self::subscription) allocates
/// only the [`DeliveryFilter`] of a subscription that overlaps a deny rule.
/// `CompiledPolicy::default()` denies everything.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    allow_publish: Vec<Pattern>,
    deny_publish: Vec<Pattern>,
    allow_subscribe: Vec<Pattern>,
    /// With the id of the (first) deny rule that brought each pattern.
    deny_subscribe: Vec<Withheld>,
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

    /// May this identity SUBSCRIBE to `filter`? (Possibly with some of its messages withheld:
    /// see [`subscription`](Self::subscription).)
    ///
    /// `true` iff `filter` is a valid topic filter, it is covered by some applicable allow
    /// pattern (every topic it can match is matched by that pattern) and no applicable deny
    /// pattern covers it (some topic it matches may be delivered). A deny pattern that only
    /// overlaps the filter does not refuse it: it filters its deliveries. For shared
    /// subscriptions pass the inner filter (without `$share/GROUP/`). Allocation-free.
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
                .any(|w| pattern::covers(&w.pattern.levels, filter))
    }

    /// What a SUBSCRIBE to `filter` gets: [`SubscriptionDecision::Refused`] when no
    /// applicable allow pattern covers it or a deny pattern covers it (nothing could ever be
    /// delivered), [`SubscriptionDecision::Granted`] when no deny pattern overlaps it, and
    /// otherwise [`SubscriptionDecision::Filtered`] with the deny patterns it overlaps: a
    /// message on a topic one of them matches is never delivered through it. Once per
    /// SUBSCRIBE (and re-check), never per message.
    pub fn subscription(&self, filter: &str) -> SubscriptionDecision {
        if !self.can_subscribe(filter) {
            return SubscriptionDecision::Refused;
        }
        let withheld: Vec<Withheld> = self
            .deny_subscribe
            .iter()
            .filter(|w| pattern::intersects(&w.pattern.levels, filter))
            .cloned()
            .collect();
        if withheld.is_empty() {
            SubscriptionDecision::Granted
        } else {
            SubscriptionDecision::Filtered(DeliveryFilter {
                withheld: withheld.into_boxed_slice(),
            })
        }
    }

    /// May a message on the topic name `topic` be delivered to this identity? `true` iff some
    /// applicable allow `subscribe` pattern matches it and no deny `subscribe` pattern does:
    /// what [`subscription`](Self::subscription) and [`DeliveryFilter::admits`] decide
    /// together for a message that reached the identity through any of its subscriptions. Used
    /// for messages already queued when the policy changes. Allocation-free.
    pub fn can_read(&self, topic: &str) -> bool {
        if pattern::check_topic_name(topic).is_err() {
            return false;
        }
        self.allow_subscribe
            .iter()
            .any(|p| pattern::matches(&p.levels, topic))
            && !self
                .deny_subscribe
                .iter()
                .any(|w| pattern::matches(&w.pattern.levels, topic))
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

/// What a SUBSCRIBE to one filter gets ([`CompiledPolicy::subscription`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionDecision {
    /// No allow rule covers the filter, or a deny rule covers it entirely.
    Refused,
    /// Granted; no deny rule overlaps it, so every message it matches is delivered.
    Granted,
    /// Granted, but messages on topics the filter's deny patterns match are withheld.
    Filtered(DeliveryFilter),
}

/// One deny pattern (instantiated for the identity) with the deny rule it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Withheld {
    pattern: Pattern,
    rule: Arc<str>,
}

/// The deny patterns a granted subscription overlaps: messages on the topics they match are
/// never delivered through it. Compiled once per subscription; [`admits`](Self::admits)
/// runs per message and never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFilter {
    withheld: Box<[Withheld]>,
}

impl DeliveryFilter {
    /// May a message on the topic name `topic` (one the subscription's filter matches) be
    /// delivered through this subscription? `false` iff one of the deny patterns matches it
    /// (MQTT's `$` rule included: a deny pattern starting with a wildcard never matches a `$`
    /// topic).
    #[inline]
    pub fn admits(&self, topic: &str) -> bool {
        !self
            .withheld
            .iter()
            .any(|w| pattern::matches(&w.pattern.levels, topic))
    }

    /// The deny patterns (as instantiated for the identity) and the id of the deny rule each
    /// came from, for explanations, events and logs.
    pub fn withheld(&self) -> impl Iterator<Item = (String, &str)> + '_ {
        self.withheld
            .iter()
            .map(|w| (w.pattern.to_string(), &*w.rule))
    }
}

/// "messages matching `secrets/#` are withheld (deny rule no-secrets)", one clause per deny
/// pattern, joined with "; ".
impl fmt::Display for DeliveryFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.withheld.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "messages matching {} are withheld (deny rule {})",
                w.pattern, w.rule
            )?;
        }
        Ok(())
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
    let add = |target: &mut Vec<Pattern>, templates: &[Template], effect: Effect| {
        for template in templates {
            for pattern in expand(template, effect, identity).into_iter().flatten() {
                if !target.contains(&pattern) {
                    target.push(pattern);
                }
            }
        }
    };
    for (rule, internal) in rules {
        if rule_applies(rule, identity).is_none() {
            continue;
        }
        match rule.effect {
            Effect::Allow => {
                add(&mut compiled.allow_publish, &internal.publish, rule.effect);
                add(
                    &mut compiled.allow_subscribe,
                    &internal.subscribe,
                    rule.effect,
                );
                add(&mut compiled.allow_retain, &internal.retain, rule.effect);
            }
            Effect::Deny => {
                add(&mut compiled.deny_publish, &internal.publish, rule.effect);
                add(&mut compiled.deny_retain, &internal.retain, rule.effect);
                // One shared copy of the rule's id for all its patterns.
                let mut id: Option<Arc<str>> = None;
                for template in &internal.subscribe {
                    for pattern in expand(template, rule.effect, identity)
                        .into_iter()
                        .flatten()
                    {
                        if compiled.deny_subscribe.iter().any(|w| w.pattern == pattern) {
                            continue;
                        }
                        let id = id.get_or_insert_with(|| Arc::from(rule.id.as_str()));
                        compiled.deny_subscribe.push(Withheld {
                            pattern,
                            rule: Arc::clone(id),
                        });
                    }
                }
            }
        }
    }
    compiled
}
