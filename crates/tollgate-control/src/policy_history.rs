//! The policy's versions: every text that was put in force, kept under `policy-history/` in the
//! data directory, and the operations on them (update with a version check, rollback, diff,
//! validation, the groups the fleet and the policy name).
//!
//! Each version is a file `NNNNNN.toml` holding the exact text, and a line of `index.jsonl`
//! (version, time, operator, SHA-256, rule count). The text is written before its index line, so
//! an index line always has its text; a text without an index line (a crash between the two) is
//! overwritten by the next version. A policy file changed on disk (an editor, then SIGHUP or the
//! file watch) becomes a new version by `file` when it is loaded; an update through the API
//! writes the policy file atomically, records the version, then reloads exactly as a file reload
//! does. A rollback is a new version with an old text: history is never rewritten.
//!
//! This module owns the history and its files; it must not decide what a policy means (that is
//! `tollgate_policy`) nor talk HTTP.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tollgate_events::EventKind;
use tollgate_policy::{Policy, Who};

use crate::{Control, ControlError};

/// The history's directory, in the data directory.
pub const HISTORY_DIR: &str = "policy-history";
const INDEX: &str = "index.jsonl";

/// One version of the policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PolicyVersion {
    /// 1, 2, 3...: the order versions were put in force.
    pub version: u64,
    /// When, RFC 3339 (UTC).
    pub time: String,
    /// The operator who put it in force (`file` for a file changed on disk).
    pub by: String,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// How many rules it has.
    pub rules: usize,
    /// The version whose text this one restored, for a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
}

/// A rule in the policy's own syntax (as written in the file).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    /// Its `id`, or `allow[N]` / `deny[N]`.
    pub id: String,
    /// `allow` or `deny`.
    pub effect: String,
    /// Its description, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whom it applies to, as written: `*`, `group:NAME`, `device:ID`.
    pub who: Vec<String>,
    /// Publish patterns.
    pub publish: Vec<String>,
    /// Subscribe patterns.
    pub subscribe: Vec<String>,
    /// Where a publish may set the retain flag.
    pub retain: Vec<String>,
    /// The line of its `[[allow]]` / `[[deny]]` header.
    pub line: usize,
}

/// A lint finding about a policy.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LintView {
    /// `warning` or `info`.
    pub severity: String,
    /// The rule concerned (empty for the whole policy).
    pub rule: String,
    /// Its line (0 for the whole policy).
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The finding as one line of text.
    pub text: String,
}

/// A problem that keeps a policy text from parsing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyProblem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// What a policy text means: its rules and lint, or why it does not parse.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Validation {
    /// Whether it parses and validates.
    pub valid: bool,
    /// Every problem found, in file order (empty when valid).
    pub errors: Vec<PolicyProblem>,
    /// Its rules (empty when invalid).
    pub rules: Vec<RuleView>,
    /// Lint findings (empty when invalid).
    pub lint: Vec<LintView>,
}

/// A group, as the registry and the policy name it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    /// The group's name.
    pub name: String,
    /// Devices in it that are not revoked.
    pub devices: usize,
    /// Of those, how many are quarantined.
    pub quarantined: usize,
    /// Rules that name it (`group:NAME`).
    pub rules: Vec<String>,
}

/// The rules of `p` in the policy's own syntax.
pub fn rule_views(p: &Policy) -> Vec<RuleView> {
    p.rules()
        .iter()
        .map(|r| RuleView {
            id: r.id.clone(),
            effect: r.effect.to_string(),
            description: r.description.clone(),
            who: r.who.iter().map(ToString::to_string).collect(),
            publish: r.publish.clone(),
            subscribe: r.subscribe.clone(),
            retain: r.retain.clone(),
            line: r.line,
        })
        .collect()
}

/// The lint findings of `p`.
pub fn lint_views(p: &Policy) -> Vec<LintView> {
    p.lint()
        .iter()
        .map(|l| LintView {
            severity: l.severity.to_string(),
            rule: l.rule.clone(),
            line: l.line,
            message: l.message.clone(),
            text: l.to_string(),
        })
        .collect()
}

/// Parse `text` and say what it means; changes nothing.
pub fn validate(text: &str, source: &str) -> Validation {
    match Policy::parse(text, source) {
        Ok(p) => Validation {
            valid: true,
            errors: Vec::new(),
            rules: rule_views(&p),
            lint: lint_views(&p),
        },
        Err(e) => Validation {
            valid: false,
            errors: e
                .diagnostics
                .into_iter()
                .map(|d| PolicyProblem {
                    line: d.line,
                    column: d.column,
                    message: d.message,
                })
                .collect(),
            rules: Vec::new(),
            lint: Vec::new(),
        },
    }
}

/// A unified diff from `a` to `b`, with the two versions' names as file names.
pub fn unified_diff(a: &str, b: &str, a_name: &str, b_name: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(a_name, b_name)
        .to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The history's files.
struct History {
    dir: PathBuf,
}

impl History {
    fn index(&self) -> PathBuf {
        self.dir.join(INDEX)
    }

    fn text_path(&self, version: u64) -> PathBuf {
        self.dir.join(format!("{version:06}.toml"))
    }

    /// Every recorded version, oldest first (lines that do not parse are skipped).
    fn versions(&self) -> Result<Vec<PolicyVersion>, ControlError> {
        let path = self.index();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ControlError::io(path.display().to_string(), e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<PolicyVersion>(l).ok())
            .collect())
    }

    fn text(&self, version: u64) -> Result<String, ControlError> {
        let path = self.text_path(version);
        std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ControlError::NotFound(format!("policy version {version}"))
            } else {
                ControlError::io(path.display().to_string(), e)
            }
        })
    }

    /// Record `text` as the next version.
    fn record(
        &self,
        text: &str,
        rules: usize,
        by: &str,
        rollback_of: Option<u64>,
    ) -> Result<PolicyVersion, ControlError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| ControlError::io(self.dir.display().to_string(), e))?;
        let version = self.versions()?.last().map_or(1, |v| v.version + 1);
        let v = PolicyVersion {
            version,
            time: now_rfc3339(),
            by: by.to_owned(),
            sha256: sha256_hex(text.as_bytes()),
            rules,
            rollback_of,
        };
        let path = self.text_path(version);
        crate::files::write_file(&path, text.as_bytes(), false)
            .map_err(|e| ControlError::io(path.display().to_string(), e))?;
        let index = self.index();
        let line = serde_json::to_string(&v)
            .map_err(|e| ControlError::InvalidRequest(format!("policy version record: {e}")))?;
        // A line torn by a crash has no newline: end it, so this record stays a line of its own.
        let torn = std::fs::read(&index).is_ok_and(|b| !b.is_empty() && !b.ends_with(b"\n"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index)
            .map_err(|e| ControlError::io(index.display().to_string(), e))?;
        let record = format!("{}{line}\n", if torn { "\n" } else { "" });
        f.write_all(record.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| ControlError::io(index.display().to_string(), e))?;
        Ok(v)
    }
}

/// The ETag of a policy version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Whether an `If-Match` header value names `version` (or is `*`).
pub fn if_match(header: &str, version: u64) -> bool {
    header.split(',').map(str::trim).any(|tag| {
        tag == "*" || {
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.trim_matches('"') == version.to_string()
        }
    })
}

impl Control {
    fn history(&self) -> History {
        History {
            dir: self.cfg.data.join(HISTORY_DIR),
        }
    }

    fn policy_source(&self) -> String {
        self.cfg.policy_file.file_name().map_or_else(
            || "policy.toml".into(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Record `text` (a policy just loaded from the file) as a new version by `by` unless it is
    /// the latest one already. Called with the history lock held.
    fn note_policy_locked(
        &self,
        h: &History,
        text: &str,
        rules: usize,
        by: &str,
    ) -> Result<PolicyVersion, ControlError> {
        let sha = sha256_hex(text.as_bytes());
        match h.versions()?.pop() {
            Some(last) if last.sha256 == sha => Ok(last),
            _ => h.record(text, rules, by, None),
        }
    }

    /// Record a policy text that was just put in force from the file (a reload).
    pub(crate) fn note_policy_loaded(&self, text: &str, rules: usize) {
        let _g = self.policy_history.lock();
        if let Err(e) = self.note_policy_locked(&self.history(), text, rules, "file") {
            tracing::warn!("the policy history could not record the reloaded policy: {e}");
        }
    }

    /// The version in force, recording the policy file's text as the first version when there
    /// is no history yet (a data directory from before it existed) and the file parses. `None`:
    /// no valid policy was ever loaded (the server denies everything). History lock held.
    fn current_locked(&self, h: &History) -> Result<Option<PolicyVersion>, ControlError> {
        if let Some(last) = h.versions()?.pop() {
            return Ok(Some(last));
        }
        let file = &self.cfg.policy_file;
        let text = std::fs::read_to_string(file)
            .map_err(|e| ControlError::io(file.display().to_string(), e))?;
        match Policy::parse(&text, &self.policy_source()) {
            Ok(p) => Ok(Some(self.note_policy_locked(
                h,
                &text,
                p.rules().len(),
                "file",
            )?)),
            Err(_) => Ok(None),
        }
    }

    /// The version in force and its text. A policy file that changed on disk but was not
    /// reloaded yet (or was rejected) is not the version in force; the one last loaded is.
    pub fn policy_current(&self) -> Result<(PolicyVersion, String), ControlError> {
        let _g = self.policy_history.lock();
        let h = self.history();
        let v = self.current_locked(&h)?.ok_or_else(|| {
            ControlError::NotFound(
                "a valid policy (the policy file does not parse; everything is denied until it is fixed or a policy is pushed with If-Match \"0\")".into(),
            )
        })?;
        let text = h.text(v.version)?;
        Ok((v, text))
    }

    /// Every version, oldest first.
    pub fn policy_history(&self) -> Result<Vec<PolicyVersion>, ControlError> {
        let _g = self.policy_history.lock();
        let h = self.history();
        self.current_locked(&h)?;
        h.versions()
    }

    /// One version and its text.
    pub fn policy_version(&self, version: u64) -> Result<(PolicyVersion, String), ControlError> {
        let list = self.policy_history()?;
        let v = list
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| ControlError::NotFound(format!("policy version {version}")))?;
        let _g = self.policy_history.lock();
        let text = self.history().text(version)?;
        Ok((v, text))
    }

    /// A unified diff between two versions (`to` defaults to the version in force).
    pub fn policy_diff(&self, from: u64, to: Option<u64>) -> Result<String, ControlError> {
        let to = match to {
            Some(t) => t,
            None => self.policy_current()?.0.version,
        };
        let (_, a) = self.policy_version(from)?;
        let (_, b) = self.policy_version(to)?;
        Ok(unified_diff(
            &a,
            &b,
            &format!("policy version {from}"),
            &format!("policy version {to}"),
        ))
    }

    /// Put `text` in force as the next version, if the version in force is `expected`
    /// (`None`: a rollback, which names its version instead). Written ahead to the audit log,
    /// then the policy file is replaced atomically, the version recorded, and the policy
    /// reloaded and published exactly as a file reload does.
    fn put_policy_text(
        &self,
        text: &str,
        expected: Option<&str>,
        rollback_of: Option<u64>,
        by: &str,
    ) -> Result<PolicyVersion, ControlError> {
        let source = self.policy_source();
        let parsed = Policy::parse(text, &source)
            .map_err(|e| ControlError::PolicyRejected(e.to_string()))?;
        let rules = parsed.rules().len();
        let version = {
            let _g = self.policy_history.lock();
            let h = self.history();
            // Version 0: no valid policy was ever loaded.
            let current = self.current_locked(&h)?.map_or(0, |v| v.version);
            if let Some(tag) = expected {
                if !if_match(tag, current) {
                    return Err(ControlError::StaleVersion { current });
                }
            }
            let sha = sha256_hex(text.as_bytes());
            let action = if rollback_of.is_some() {
                "rollback_policy"
            } else {
                "update_policy"
            };
            let detail = match rollback_of {
                Some(old) => format!(
                    "sha256 {sha}, {rules} rules, the text of version {old}, replacing version {current}"
                ),
                None => format!("sha256 {sha}, {rules} rules, replacing version {current}"),
            };
            self.write_ahead(action, &source, by, &detail)?;
            let file = &self.cfg.policy_file;
            crate::files::write_file(file, text.as_bytes(), false)
                .map_err(|e| ControlError::io(file.display().to_string(), e))?;
            h.record(text, rules, by, rollback_of)?
        };
        // The same path as a file reload: parse the file, put it in force, publish it to every
        // live connection (which re-checks its subscriptions).
        self.reload_and_publish();
        self.events.emit(EventKind::PolicyUpdated {
            version: version.version,
            sha256: version.sha256.clone(),
            rules,
            rollback_of,
            by: by.to_owned(),
        });
        Ok(version)
    }

    /// Put a new policy text in force if `if_match` (an `If-Match` value) names the version in
    /// force; [`ControlError::StaleVersion`] otherwise.
    pub fn update_policy(
        &self,
        text: &str,
        if_match: &str,
        by: &str,
    ) -> Result<PolicyVersion, ControlError> {
        self.put_policy_text(text, Some(if_match), None, by)
    }

    /// Put the text of `version` in force again, as a new version.
    pub fn rollback_policy(&self, version: u64, by: &str) -> Result<PolicyVersion, ControlError> {
        let (_, text) = self.policy_version(version)?;
        self.put_policy_text(&text, None, Some(version), by)
    }

    /// Every group named by a device or by the policy, with its members.
    pub fn groups(&self) -> Result<Vec<GroupView>, ControlError> {
        let mut groups: BTreeMap<String, GroupView> = BTreeMap::new();
        fn entry<'a>(groups: &'a mut BTreeMap<String, GroupView>, name: &str) -> &'a mut GroupView {
            groups.entry(name.to_owned()).or_insert_with(|| GroupView {
                name: name.to_owned(),
                devices: 0,
                quarantined: 0,
                rules: Vec::new(),
            })
        }
        for d in self.devices()? {
            if d.state == "revoked" {
                continue;
            }
            for g in &d.groups {
                let v = entry(&mut groups, g);
                v.devices += 1;
                if d.state == "quarantined" {
                    v.quarantined += 1;
                }
            }
        }
        for r in self.policy().rules() {
            for w in &r.who {
                if let Who::Group(g) = w {
                    let v = entry(&mut groups, g);
                    if !v.rules.contains(&r.id) {
                        v.rules.push(r.id.clone());
                    }
                }
            }
        }
        Ok(groups.into_values().collect())
    }
}

/// The policy-history directory of a data directory.
pub fn history_dir(data: &Path) -> PathBuf {
    data.join(HISTORY_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_quoted_bare_weak_and_star() {
        assert!(if_match("\"3\"", 3));
        assert!(if_match("3", 3));
        assert!(if_match("W/\"3\"", 3));
        assert!(if_match("\"1\", \"3\"", 3));
        assert!(if_match("*", 3));
        assert!(!if_match("\"2\"", 3));
        assert!(!if_match("", 3));
    }

    #[test]
    fn validation_reports_lines_and_rules_in_the_policys_own_syntax() {
        let bad = validate(
            "[[allow]]\nwho = [\"group:a\"]\npublish = [\"a/#/b\"]\n",
            "p.toml",
        );
        assert!(!bad.valid);
        assert!(bad.errors.iter().any(|e| e.line == 3), "{bad:?}");
        let good = validate(
            "[[allow]]\nwho = [\"group:sensors\", \"*\"]\npublish = [\"t/#\"]\n",
            "p.toml",
        );
        assert!(good.valid, "{good:?}");
        assert_eq!(good.rules[0].who, vec!["group:sensors", "*"]);
        assert_eq!(good.rules[0].effect, "allow");
    }

    #[test]
    fn the_history_numbers_versions_keeps_texts_and_skips_a_torn_index_line() {
        let dir =
            std::env::temp_dir().join(format!("tollgate-policy-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let h = History { dir: dir.clone() };
        assert!(h.versions().unwrap().is_empty());
        let v1 = h.record("a = 1\n", 0, "file", None).unwrap();
        let v2 = h.record("a = 2\n", 1, "alice", None).unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(v2.by, "alice");
        assert_eq!(v1.sha256, sha256_hex(b"a = 1\n"));
        // A crash in the middle of an index line: that line is skipped, the others stay.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(h.index())
            .unwrap();
        f.write_all(b"{\"version\": 3, \"ti").unwrap();
        drop(f);
        let v3 = h.record("a = 1\n", 0, "bob", Some(1)).unwrap();
        let list = h.versions().unwrap();
        assert_eq!(
            list.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "{list:?}"
        );
        assert_eq!(v3.rollback_of, Some(1));
        assert_eq!(h.text(2).unwrap(), "a = 2\n");
        assert!(matches!(h.text(9), Err(ControlError::NotFound(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn diff_is_unified() {
        let d = unified_diff("a\nb\n", "a\nc\n", "v1", "v2");
        assert!(d.contains("--- v1") && d.contains("+++ v2"), "{d}");
        assert!(d.contains("-b\n") && d.contains("+c\n"), "{d}");
    }
}
