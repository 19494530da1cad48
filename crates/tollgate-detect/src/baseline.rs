//! Robust statistics: median, MAD, percentiles, and a device's baseline of one metric.
//!
//! Owns the maths only; it must not decide which buckets make a baseline (that is
//! [`crate::stats`]) nor what breaches (that is [`crate::detectors`] and [`crate::rules`]).
//!
//! * **Median** of `n` values: the middle value of the sorted values, or the mean of the two
//!   middle ones when `n` is even.
//! * **MAD** (median absolute deviation): the median of `|xᵢ − median|`. For normally
//!   distributed data `1.4826·MAD` estimates the standard deviation, but unlike it one attack
//!   bucket among many cannot move it: the *robust sigma* is `1.4826·MAD`.
//! * **Effective sigma**: a flat baseline has a MAD of 0 and would alarm on any noise, so
//!   `sigma_eff = max(1.4826·MAD, 0.1·median, floor)` with `floor` = 1 per minute for counts,
//!   1 ms for round-trip times (see [`crate::stats::Metric::sigma_floor`]).
//! * **Percentile** `p` (0–100) of `n` sorted values, by linear interpolation between closest
//!   ranks: rank `r = p/100·(n−1)`, value `x[⌊r⌋] + (r−⌊r⌋)·(x[⌊r⌋+1] − x[⌊r⌋])`.
//!
//! NaN values never enter: callers drop non-finite values before calling.

use serde::Serialize;

/// The factor that turns a MAD into a standard-deviation estimate for normal data.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// The median of `values` (reordered in place), or `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    // The largest of the lower half.
    let lower = values
        .get(..mid)
        .and_then(|low| low.iter().copied().max_by(f64::total_cmp))
        .unwrap_or(upper);
    Some((lower + upper) / 2.0)
}

/// The median and MAD of `values` (reordered and overwritten), or `None` when empty.
pub fn median_mad(values: &mut [f64]) -> Option<(f64, f64)> {
    let med = median(values)?;
    for v in values.iter_mut() {
        *v = (*v - med).abs();
    }
    let mad = median(values)?;
    Some((med, mad))
}

/// The `p`-th percentile (0–100, clamped) of `sorted` (ascending), by linear interpolation.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    percentile_of(sorted.len(), p, |i| sorted.get(i).copied())
}

/// The `p`-th percentile of `sorted` without the element at `skip` (one device's own value,
/// so that a device is judged against the *others* of its cohort).
pub fn percentile_without(sorted: &[f64], skip: usize, p: f64) -> Option<f64> {
    let n = if skip < sorted.len() {
        sorted.len() - 1
    } else {
        sorted.len()
    };
    percentile_of(n, p, |i| {
        if i < skip {
            sorted.get(i).copied()
        } else {
            sorted.get(i.saturating_add(1)).copied()
        }
    })
}

fn percentile_of(n: usize, p: f64, at: impl Fn(usize) -> Option<f64>) -> Option<f64> {
    if n == 0 || p.is_nan() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = p / 100.0 * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let frac = rank - rank.floor();
    let a = at(lo)?;
    if frac == 0.0 || lo + 1 >= n {
        return Some(a);
    }
    let b = at(lo + 1)?;
    Some(a + frac * (b - a))
}

/// A device's baseline of one metric: the median and MAD of its per-bucket values (per minute
/// for counters) over the completed, online buckets of its history that overlap no alert on
/// the metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Baseline {
    /// The median.
    pub median: f64,
    /// The median absolute deviation.
    pub mad: f64,
    /// How many buckets it was computed from.
    pub samples: usize,
}

impl Baseline {
    /// Compute from values (reordered and overwritten).
    pub fn from_values(values: &mut [f64]) -> Baseline {
        match median_mad(values) {
            Some((median, mad)) => Baseline {
                median,
                mad,
                samples: values.len(),
            },
            None => Baseline::default(),
        }
    }

    /// `max(1.4826·MAD, 0.1·median, floor)`.
    pub fn sigma_eff(&self, floor: f64) -> f64 {
        (MAD_TO_SIGMA * self.mad).max(0.1 * self.median).max(floor)
    }

    /// Whether enough buckets back it.
    pub fn ready(&self, needed: usize) -> bool {
        self.samples >= needed && self.samples > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [7.0]), Some(7.0));
    }

    #[test]
    fn mad_ignores_one_outlier() {
        let mut v = [10.0, 11.0, 9.0, 10.0, 12.0, 8.0, 10.0, 1000.0];
        let (m, mad) = median_mad(&mut v).unwrap();
        assert_eq!(m, 10.0);
        assert_eq!(mad, 1.0);
        let b = Baseline::from_values(&mut [10.0, 10.0, 10.0]);
        assert_eq!(b.mad, 0.0);
        assert_eq!(b.sigma_eff(1.0), 1.0);
        let b = Baseline::from_values(&mut [100.0, 100.0, 100.0]);
        assert_eq!(b.sigma_eff(1.0), 10.0);
    }

    #[test]
    fn percentile_interpolates() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 100.0), Some(5.0));
        assert_eq!(percentile(&v, 25.0), Some(2.0));
        assert_eq!(percentile(&v, 90.0), Some(4.6));
        assert_eq!(percentile(&[], 50.0), None);
        // Without index 4 (5.0): [1,2,3,4], p50 = 2.5.
        assert_eq!(percentile_without(&v, 4, 50.0), Some(2.5));
        // Without index 0: [2,3,4,5], p100 = 5.
        assert_eq!(percentile_without(&v, 0, 100.0), Some(5.0));
        assert_eq!(percentile_without(&[1.0], 0, 50.0), None);
    }
}
