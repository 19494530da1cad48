//! Tollgate's authorization policy language.
//!
//! This crate owns the policy language and nothing else:
//!
//! * **parse** and **validate** a TOML policy file ([`Policy::parse`]),
//!   reporting every problem with its line and column ([`PolicyError`]);
//! * **compile** the policy for one device identity ([`Policy::compile`]),
//!   substituting `${device.id}` / `${device.group}` and pre-splitting every
//!   pattern, so that per-message decisions ([`CompiledPolicy::can_publish`],
//!   [`CompiledPolicy::can_subscribe`]) are allocation-free;
//! * **decide** publish (topic matching) and subscribe (filter coverage) exactly, including
//!   MQTT's `$`-topic rule; a subscription that overlaps a deny rule without being covered by
//!   it is granted with a [`DeliveryFilter`] ([`CompiledPolicy::subscription`]) that withholds
//!   the denied topics per message, without allocating;
//! * **explain** a decision ([`Policy::explain`]) and **lint** a policy
//!   ([`Policy::lint`]) for operators;
//! * **suggest** the narrowest policy that still permits the traffic actually observed
//!   ([`Policy::suggest`]; the rules are in the [`suggest` module](crate::suggest)), and
//!   flag grants nobody used ([`Policy::unused_grants`]).
//!
//! It must not know about sockets, TLS, certificates, sessions or storage:
//! the broker extracts an [`Identity`] from a certificate, reads the policy
//! file, and asks this crate yes/no questions. Nothing here performs I/O, and
//! nothing panics on any policy file content.
//!
//! # The language
//!
//! ```toml
//! version = 1                       # optional
//!
//! [[allow]]
//! id = "sensors-telemetry"          # optional; defaults to "allow[N]"
//! description = "..."               # optional
//! who = "group:sensors"             # or ["group:sensors", "device:pump-7"], or "*"
//! publish = ["devices/${device.id}/telemetry", "devices/${device.id}/events/#"]
//! subscribe = ["devices/${device.id}/commands/#"]
//! retain = ["devices/${device.id}/status"]  # where the retain flag may be set (needs publish too)
//!
//! [[deny]]
//! who = "*"
//! publish = ["$SYS/#"]
//!
//! [quarantine]                      # optional; what a quarantined device may still do
//! publish = ["$tollgate/devices/${device.id}/inventory"]
//! subscribe = ["$tollgate/devices/${device.id}/firmware/#"]
//! ```
//!
//! A quarantined device is confined to the `[quarantine]` grants (the file's deny rules still
//! apply); without the section a built-in default lets it publish its inventory to
//! `$tollgate/devices/${device.id}/inventory` and read `$tollgate/devices/${device.id}/firmware/#`
//! and `.../commands/#`. [`AccessSnapshot`] carries, for the data plane, who is who and in
//! which access state (active or quarantined with reasons), with the revoked serials.
//!
//! A PUBLISH with the retain flag set needs a `retain` grant as well as a `publish` grant
//! ([`CompiledPolicy::can_retain`]): no rule allows retaining unless it says so, and a deny
//! rule's `retain` patterns forbid it (its `publish` patterns forbid the publish itself). The
//! `[quarantine]` grant retains nothing unless it has its own `retain` key.
//!
//! Default deny; a deny rule that applies overrides any allow. For `subscribe` that means: a
//! filter a deny pattern covers is refused, and a filter a deny pattern merely overlaps (`#`
//! against `secrets/#`) is granted, but messages on the denied topics are never delivered
//! through it (AWS IoT separates `Subscribe` from `Receive` the same way). Patterns are
//! MQTT topic filters. Substituted variable values are literal text inside a
//! level: a device id such as `+`, `#`, `a/b` or an empty group can never
//! widen a grant (an allow pattern that would need such a value is dropped
//! for that identity).

#![forbid(unsafe_code)]

use std::fmt;

mod access;
mod compiled;
mod error;
mod explain;
mod lint;
mod parse;
mod pattern;
pub mod suggest;

#[cfg(test)]
mod tests;

pub use access::{AccessSnapshot, Changed, DeviceAccess, Quarantine};
pub use compiled::{CompiledPolicy, DeliveryFilter, SubscriptionDecision};
pub use error::{Diagnostic, PolicyError};
pub use explain::Explanation;
pub use lint::{Lint, Severity};
pub use suggest::{Change, ChangeKind, Observed, Probe, Skipped, SuggestOptions, Suggestion};

use parse::RuleInternal;

/// A parsed and validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Public view of the rules, in file order.
    rules: Vec<Rule>,
    /// Pre-parsed patterns, parallel to `rules`.
    internal: Vec<(Rule, RuleInternal)>,
    /// What applies to a quarantined device: the quarantine grant, then the deny rules.
    quarantine: Vec<(Rule, RuleInternal)>,
    /// Whether the file has its own `[quarantine]` section (rather than the built-in default).
    quarantine_written: bool,
}

/// Who a device is, as far as the policy is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub device_id: &'a str,
    pub groups: &'a [String],
}

/// What a device wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
    /// A PUBLISH with the retain flag set: it needs both a `publish` and a `retain` grant.
    Retain,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Retain => "retain",
        })
    }
}

/// One `[[allow]]` or `[[deny]]` rule as written in the file.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's `id`, or `allow[N]` / `deny[N]` (1-based within its kind).
    pub id: String,
    pub effect: Effect,
    pub description: Option<String>,
    pub who: Vec<Who>,
    /// Publish patterns, as written.
    pub publish: Vec<String>,
    /// Subscribe patterns, as written.
    pub subscribe: Vec<String>,
    /// Retain patterns, as written: where a PUBLISH may set the retain flag (it also needs a
    /// `publish` grant).
    pub retain: Vec<String>,
    /// 1-based line of the rule's `[[allow]]` / `[[deny]]` header.
    pub line: usize,
}

/// Whether a rule grants or forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(parse::effect_name(*self))
    }
}

/// Whom a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `"*"`: every authenticated device.
    Any,
    /// `"device:ID"`: the device with exactly this id.
    Device(String),
    /// `"group:NAME"`: every device in this group.
    Group(String),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&explain::who_text(self))
    }
}

impl Policy {
    /// Parse and validate. `source` is the file name used in error messages
    /// (e.g. "policy.toml"). On failure returns all the problems found, each
    /// with a 1-based line and column.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let file = parse::parse(text, source)?;
        let internal = file.rules;
        let quarantine_written = file.quarantine.is_some();
        let grant = match file.quarantine {
            Some(q) => q,
            None => default_quarantine(),
        };
        let mut quarantine = vec![grant];
        quarantine.extend(
            internal
                .iter()
                .filter(|(r, _)| r.effect == Effect::Deny)
                .cloned(),
        );
        Ok(Policy {
            rules: internal.iter().map(|(r, _)| r.clone()).collect(),
            internal,
            quarantine,
            quarantine_written,
        })
    }

    /// The empty policy: no rules, denies everything (the default quarantine grant still
    /// lets a quarantined device report its inventory).
    pub fn deny_all() -> Policy {
        Policy {
            rules: Vec::new(),
            internal: Vec::new(),
            quarantine: vec![default_quarantine()],
            quarantine_written: false,
        }
    }

    /// The quarantine grant in force (the file's `[quarantine]`, or the built-in default).
    pub fn quarantine_rule(&self) -> Option<&Rule> {
        self.quarantine.first().map(|(r, _)| r)
    }

    /// Compile what a quarantined identity may do: the quarantine grant, minus the file's
    /// deny rules. Like [`Policy::compile`], once per connection and access change.
    pub fn compile_quarantined(&self, identity: &Identity<'_>) -> CompiledPolicy {
        compiled::compile(&self.quarantine, identity)
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Compile the policy for one identity. Do this once per connection (and
    /// again when the policy is reloaded), not per message.
    pub fn compile(&self, identity: &Identity<'_>) -> CompiledPolicy {
        compiled::compile(&self.internal, identity)
    }

    /// Static checks for likely mistakes.
    pub fn lint(&self) -> Vec<Lint> {
        lint::lint(&self.internal)
    }

    /// Explain a decision: which rules applied to the identity, which
    /// patterns matched, and the verdict. The verdict always agrees with
    /// [`CompiledPolicy`].
    pub fn explain(&self, identity: &Identity<'_>, action: Action, topic: &str) -> Explanation {
        explain::explain(&self.internal, identity, action, topic)
    }

    /// The id of the deny rule that refuses `action` on `topic` for `identity` (in its normal
    /// state, or quarantined: the file's deny rules apply to both); `None` when no deny rule
    /// does, i.e. a refusal came from the default deny (nothing grants it). Named in
    /// `publish_denied` / `subscribe_denied` events.
    pub fn denied_by(
        &self,
        identity: &Identity<'_>,
        quarantined: bool,
        action: Action,
        topic: &str,
    ) -> Option<&str> {
        let rules = if quarantined {
            &self.quarantine
        } else {
            &self.internal
        };
        explain::denied_by(rules, identity, action, topic)
    }

    /// Explain a decision for a quarantined identity: the `[quarantine]` grant, then the file's
    /// deny rules, as the broker decides while any quarantine reason holds.
    pub fn explain_quarantined(
        &self,
        identity: &Identity<'_>,
        action: Action,
        topic: &str,
    ) -> Explanation {
        explain::explain(&self.quarantine, identity, action, topic)
    }

    /// Propose the narrowest policy that still permits every observed action this policy
    /// allows: the allow rules are replaced by rules built from the observations (generalised
    /// with `${device.id}` / `${device.group}` where the observations allow, and never broader
    /// than this policy for an observed device), the deny rules and `[quarantine]` are kept,
    /// and the result comes with a diff saying what each change would have denied. Pure: the
    /// caller collects the observations. The rules are in the [`suggest` module](crate::suggest).
    pub fn suggest(&self, observed: &[Observed], opts: &SuggestOptions) -> Suggestion {
        suggest::suggest(self, observed, opts)
    }

    /// Grants (each pattern of each allow rule) that no observation used, as warnings for
    /// `tollgate policy lint --observed`. A pattern is used when it matches (publish,
    /// retain) or covers (subscribe) an observed action of a device the rule applies to,
    /// and the policy allowed that action.
    pub fn unused_grants(&self, observed: &[Observed]) -> Vec<Lint> {
        suggest::unused_grants(self, observed)
    }
}

fn default_quarantine() -> (Rule, RuleInternal) {
    // The built-in text is a constant that the tests parse; an error here is a bug in it, and
    // the fallback (an empty grant) still denies rather than allows.
    parse::parse(parse::DEFAULT_QUARANTINE, "built-in quarantine")
        .ok()
        .and_then(|f| f.quarantine)
        .unwrap_or_else(|| {
            (
                Rule {
                    id: "quarantine".into(),
                    effect: Effect::Allow,
                    description: None,
                    who: vec![Who::Any],
                    publish: Vec::new(),
                    subscribe: Vec::new(),
                    retain: Vec::new(),
                    line: 0,
                },
                RuleInternal {
                    label: "quarantine".into(),
                    publish: Vec::new(),
                    subscribe: Vec::new(),
                    retain: Vec::new(),
                },
            )
        })
}

/// A commented policy file with no rules (it denies everything), suitable
/// as the starting point written by `tollgate init`.
pub fn default_policy_toml() -> &'static str {
    include_str!("default_policy.toml")
}
