//! Custom rules: one metric of one device compared with a threshold.
//!
//! Owns the judgment of a [`crate::config::Rule`] for one device at one tick. It must not keep
//! state (the consecutive-datapoint counting is the alert book's) nor order anything.
//!
//! The metric's value over the rule's window: counters are summed over the window (sliding, see
//! [`crate::stats`]) and reported per window; `rtt_ms` and `retrans_ratio` are means over the
//! window; `distinct_topics` and `distinct_filters` are sketch estimates over the window; `lost`
//! is the largest reading in the window; `source_addresses` is the number of distinct addresses
//! of the device's live connections now. A metric without a reading (rtt of an offline device)
//! is not judged.
//!
//! The threshold is one of: an absolute `threshold`; `factor` × the `percentile` of the other
//! online devices of the device's `model` (or of each of its groups: the most conservative, the
//! highest for `>`/`>=` and the lowest for `<`/`<=`), used only with at least
//! `cohort_min_devices` of them; or `deviations` robust deviations from the device's own
//! baseline (median ± deviations·sigma_eff; for counters the per-minute baseline is scaled to
//! the window), used only once the baseline is ready.

use crate::alert::Subject;
use crate::config::{CohortKind, Judge, Rule};
use crate::detectors::{num, others_percentile, show_window, Finding};
use crate::stats::Device;

/// Per cohort id, the sorted values of its online members for one rule (empty when unused).
pub(crate) type RuleCohorts = Vec<Vec<f64>>;

/// Judge `rule` for `dev` at `now`. `own` is the device's value (computed once by the caller);
/// `cohorts` the sorted values per cohort id when the rule compares with a cohort.
pub(crate) fn evaluate(
    rule: &Rule,
    dev: &Device,
    own: Option<f64>,
    cohorts: &RuleCohorts,
    cohort_names: &[String],
    cohort_min: usize,
    learning_buckets: usize,
) -> Option<Finding> {
    let value = own?;
    if !value.is_finite() {
        return None;
    }
    let up = rule.comparison.upward();
    let (threshold, baseline, cohort) = match rule.judge {
        Judge::Threshold(t) => (t, None, None),
        Judge::Cohort {
            kind,
            percentile,
            factor,
        } => {
            let prefix = match kind {
                CohortKind::Model => "model:",
                CohortKind::Group => "group:",
            };
            let mine = dev.online().then_some(value);
            let mut best: Option<(f64, f64, usize)> = None;
            for &cid in &dev.cohort_ids {
                let Some(name) = cohort_names.get(cid) else {
                    continue;
                };
                if !name.starts_with(prefix) {
                    continue;
                }
                let Some(sorted) = cohorts.get(cid) else {
                    continue;
                };
                let others = sorted.len().saturating_sub(usize::from(mine.is_some()));
                if others < cohort_min {
                    continue;
                }
                let Some(p) = others_percentile(sorted, mine, percentile) else {
                    continue;
                };
                let t = factor * p;
                let median = others_percentile(sorted, mine, 50.0).unwrap_or(0.0);
                let better = match best {
                    None => true,
                    Some((b, _, _)) => (up && t > b) || (!up && t < b),
                };
                if better {
                    best = Some((t, median, cid));
                }
            }
            let (t, median, cid) = best?;
            (t, Some(median), cohort_names.get(cid).cloned())
        }
        Judge::Deviations(k) => {
            let b = dev.baseline(rule.metric)?;
            if !b.ready(learning_buckets) {
                return None;
            }
            let scale = if rule.metric.is_counter() {
                rule.window_ms as f64 / 60_000.0
            } else {
                1.0
            };
            let median = b.median * scale;
            let sigma = b.sigma_eff(rule.metric.sigma_floor()) * scale;
            let t = if up {
                median + k * sigma
            } else {
                median - k * sigma
            };
            (t, Some(median), None)
        }
    };
    if !rule.comparison.breaches(value, threshold) {
        return None;
    }
    let against = match (&cohort, baseline) {
        (Some(c), _) => format!(" (from the other online devices of {c})"),
        (None, Some(m)) => format!(" (from its baseline of {})", num(m)),
        _ => String::new(),
    };
    Some(Finding {
        detector: rule.detector(),
        subject: Subject::Device(dev.id.clone()),
        cohort,
        metric: rule.metric.name().to_owned(),
        observed: value,
        baseline,
        threshold,
        explanation: format!(
            "{}'s {} over {} was {}, {} {}{}, which rule {} flags.",
            dev.id,
            rule.metric.name(),
            show_window(rule.window_ms),
            num(value),
            rule.comparison.as_str(),
            num(threshold),
            against,
            rule.name
        ),
    })
}
