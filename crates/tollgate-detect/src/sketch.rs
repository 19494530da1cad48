//! Linear-counting sketches of distinct topics and filters.
//!
//! Owns the 512-bit bitmap the broker fills (bit `hash % 512` per topic) and its estimate. It
//! must not hash topics itself: the broker's hash decides the bits, and sketches from different
//! hash functions cannot be merged.
//!
//! Estimate (linear counting, Whang et al. 1990): with `m = 512` bits of which a fraction `V`
//! is still zero, the number of distinct items is `n ≈ −m·ln(V)`. A full bitmap (`V = 0`) has
//! no finite estimate; it saturates at `m·ln(m)` (≈ 3,194), the value one zero bit would give.
//! The standard error stays within a few percent up to a few hundred items.

/// Bits in a sketch.
pub const SKETCH_BITS: u32 = 512;

/// A linear-counting bitmap of 512 bits; mergeable by OR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sketch(pub [u64; 8]);

impl Sketch {
    /// An empty sketch.
    pub const EMPTY: Sketch = Sketch([0; 8]);

    /// OR `other` into `self`.
    pub fn merge(&mut self, other: &Sketch) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
    }

    /// Set the bit of a hash (what the broker does for each topic).
    pub fn insert_hash(&mut self, hash: u64) {
        let bit = hash % u64::from(SKETCH_BITS);
        let word = (bit / 64) as usize;
        if let Some(w) = self.0.get_mut(word) {
            *w |= 1u64 << (bit % 64);
        }
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Bits set.
    pub fn ones(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// Estimated distinct items: `−m·ln(V)`, saturating at `m·ln(m)` when full.
    pub fn estimate(&self) -> f64 {
        let m = f64::from(SKETCH_BITS);
        let zeros = SKETCH_BITS.saturating_sub(self.ones());
        if zeros == 0 {
            return m * m.ln();
        }
        let v = f64::from(zeros) / m;
        -m * v.ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{DefaultHasher, Hash, Hasher};

    fn h(s: &str) -> u64 {
        let mut x = DefaultHasher::new();
        s.hash(&mut x);
        x.finish()
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Sketch::default().estimate(), 0.0);
    }

    #[test]
    fn hundred_distinct_within_ten_percent() {
        let mut s = Sketch::default();
        for i in 0..100 {
            s.insert_hash(h(&format!("plant/line-{i}/temperature")));
        }
        let e = s.estimate();
        assert!((90.0..=110.0).contains(&e), "estimate {e}");
        // Repeats change nothing.
        let before = s;
        for i in 0..100 {
            s.insert_hash(h(&format!("plant/line-{i}/temperature")));
        }
        assert_eq!(s, before);
    }

    #[test]
    fn merge_is_union() {
        let mut a = Sketch::default();
        let mut b = Sketch::default();
        for i in 0..50 {
            a.insert_hash(h(&format!("a/{i}")));
            b.insert_hash(h(&format!("a/{}", i + 25)));
        }
        a.merge(&b);
        let e = a.estimate();
        assert!((67.0..=83.0).contains(&e), "estimate {e}");
    }

    #[test]
    fn full_saturates() {
        let s = Sketch([u64::MAX; 8]);
        let e = s.estimate();
        assert!(e.is_finite() && e > 3000.0, "{e}");
    }
}
