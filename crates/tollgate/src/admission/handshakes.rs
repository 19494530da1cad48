//! Unfinished handshakes: bounded per source and overall, and fair under pressure.
//!
//! A newcomer that finds its source (or the whole listener) at the limit does not simply lose.
//! The listener parks it, unread, for a moment; if it speaks (a real client sends its
//! ClientHello at once) it is admitted with [`Handshakes::admit_evicting`], and the pending
//! handshake that has made the least progress is evicted to make room, provided it has had a
//! fair chance ([`HandshakeLimits::min_age`]). Least progress means: nothing received at all
//! first, oldest first; then the one that has been silent longest. A newcomer that stays silent
//! evicts nobody and is closed. So an attacker that holds the limit of its address with silent
//! or stalled sockets, re-opening each as it is closed, loses its own sockets to the neighbour
//! behind the same NAT, not the other way round, and its re-opened sockets (silent too) cannot
//! start a chain of evictions. Under pressure the handshake deadline is also shortened
//! ([`Admitted::pressure`]).
//!
//! Progress is read from the kernel (`TCP_INFO`: bytes received and time since the last data)
//! through [`Progress`], so measuring it costs nothing on the data path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Source;

/// What the kernel says about a pending connection's progress.
pub trait Progress: Send + Sync {
    /// Bytes received so far and milliseconds since the last data arrived; `None` when the
    /// socket cannot be read (it counts as no progress).
    fn progress(&self) -> Option<(u64, u32)>;
}

/// Limits on unfinished handshakes.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// Per source.
    pub per_source: usize,
    /// Overall.
    pub total: usize,
    /// A pending handshake younger than this is never evicted.
    pub min_age: Duration,
}

/// One pending handshake, as the table sees it.
struct Pending {
    id: u64,
    src: Source,
    started: Instant,
    probe: Option<Arc<dyn Progress>>,
    evicted: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    total: usize,
    by_source: HashMap<Source, Vec<Pending>>,
}

/// The pending handshakes of one listener.
pub struct Handshakes {
    limits: HandshakeLimits,
    table: Mutex<Table>,
}

/// Admission of one handshake: holds its place until dropped.
pub struct Admitted {
    handshakes: Arc<Handshakes>,
    id: u64,
    src: Source,
    /// Notified when this handshake is evicted to make room for a newcomer.
    pub evicted: Arc<Notify>,
    /// The source or the listener is at least half full: use a shorter deadline.
    pub pressure: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.handshakes.table.lock();
        let mut removed = false;
        if let Some(v) = t.by_source.get_mut(&self.src) {
            if let Some(i) = v.iter().position(|p| p.id == self.id) {
                v.swap_remove(i);
                removed = true;
            }
            if v.is_empty() {
                t.by_source.remove(&self.src);
            }
        }
        if removed {
            t.total = t.total.saturating_sub(1);
        }
    }
}

/// Rank for eviction: higher is a better victim.
fn staleness(p: &Pending, now: Instant) -> (bool, u128) {
    let age = now.saturating_duration_since(p.started).as_millis();
    match p.probe.as_ref().and_then(|pr| pr.progress()) {
        Some((0, _)) | None => (true, age),
        Some((_, idle_ms)) => (false, u128::from(idle_ms)),
    }
}

impl Handshakes {
    /// An empty table.
    pub fn new(limits: HandshakeLimits) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    /// Admit a handshake from `src` if neither its source nor the listener is at its limit.
    pub fn try_admit(
        self: &Arc<Self>,
        src: Source,
        probe: Option<Arc<dyn Progress>>,
        now: Instant,
    ) -> Option<Admitted> {
        let mut t = self.table.lock();
        let at_source = t.by_source.get(&src).map_or(0, Vec::len);
        if at_source >= self.limits.per_source || t.total >= self.limits.total {
            return None;
        }
        Some(self.insert(&mut t, src, probe, now))
    }

    /// Admit a handshake from `src` that has shown progress, evicting the least progressed one
    /// if a limit is reached; `None` when nothing can be evicted (every candidate is younger
    /// than `min_age`).
    pub fn admit_evicting(
        self: &Arc<Self>,
        src: Source,
        probe: Option<Arc<dyn Progress>>,
        now: Instant,
    ) -> Option<Admitted> {
        let mut t = self.table.lock();
        let at_source = t.by_source.get(&src).map_or(0, Vec::len);
        if at_source >= self.limits.per_source {
            self.evict_from(&mut t, src, now)?;
        } else if t.total >= self.limits.total {
            // The listener is full: take from the source holding the most.
            let busiest = t
                .by_source
                .iter()
                .max_by_key(|(_, v)| v.len())
                .map(|(s, _)| *s)?;
            self.evict_from(&mut t, busiest, now)?;
        }
        Some(self.insert(&mut t, src, probe, now))
    }

    fn insert(
        self: &Arc<Self>,
        t: &mut Table,
        src: Source,
        probe: Option<Arc<dyn Progress>>,
        now: Instant,
    ) -> Admitted {
        t.next_id += 1;
        let id = t.next_id;
        let evicted = Arc::new(Notify::new());
        let v = t.by_source.entry(src).or_default();
        v.push(Pending {
            id,
            src,
            started: now,
            probe,
            evicted: Arc::clone(&evicted),
        });
        let at_source = v.len();
        t.total += 1;
        let pressure = at_source * 2 > self.limits.per_source || t.total * 2 > self.limits.total;
        Admitted {
            handshakes: Arc::clone(self),
            id,
            src,
            evicted,
            pressure,
        }
    }

    fn evict_from(&self, t: &mut Table, src: Source, now: Instant) -> Option<()> {
        let v = t.by_source.get_mut(&src)?;
        let (i, _) = v
            .iter()
            .enumerate()
            .filter(|(_, p)| now.saturating_duration_since(p.started) >= self.limits.min_age)
            .max_by_key(|(_, p)| staleness(p, now))?;
        let victim = v.swap_remove(i);
        debug_assert_eq!(victim.src, src);
        if v.is_empty() {
            t.by_source.remove(&src);
        }
        t.total = t.total.saturating_sub(1);
        // `notify_one` stores a permit: the victim sees it even if it is not waiting yet.
        victim.evicted.notify_one();
        Some(())
    }

    /// Handshakes pending now.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.table.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Prefixes;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Fake(AtomicU64, AtomicU64);
    impl Progress for Fake {
        fn progress(&self) -> Option<(u64, u32)> {
            Some((
                self.0.load(Ordering::Relaxed),
                u32::try_from(self.1.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            ))
        }
    }

    fn src(s: &str) -> Source {
        Source::of(s.parse().unwrap(), Prefixes::default())
    }

    fn limits(per_source: usize, total: usize) -> HandshakeLimits {
        HandshakeLimits {
            per_source,
            total,
            min_age: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_newcomer_evicts_the_silent_not_the_talking() {
        let h = Handshakes::new(limits(3, 100));
        let t0 = Instant::now();
        let talking = Arc::new(Fake(AtomicU64::new(300), AtomicU64::new(5)));
        let a = h
            .try_admit(
                src("10.0.0.1"),
                Some(talking.clone() as Arc<dyn Progress>),
                t0,
            )
            .unwrap();
        let silent: Vec<_> = (0..2)
            .map(|_| {
                let p = Arc::new(Fake(AtomicU64::new(0), AtomicU64::new(0)));
                h.try_admit(src("10.0.0.1"), Some(p as Arc<dyn Progress>), t0)
                    .unwrap()
            })
            .collect();
        assert!(silent[1].pressure);
        // At the limit: no admission without eviction; and too young to evict.
        assert!(
            h.try_admit(src("10.0.0.9"), None, t0).is_some(),
            "another source"
        );
        assert!(h.try_admit(src("10.0.0.1"), None, t0).is_none());
        assert!(h.admit_evicting(src("10.0.0.1"), None, t0).is_none());
        let later = t0 + Duration::from_millis(200);
        let newcomer = h.admit_evicting(src("10.0.0.1"), None, later).unwrap();
        assert_eq!(h.pending(), 3);
        // One of the silent ones was told to go; the talking one was not.
        let told = |n: &Arc<Notify>| futures_lite_now(n.notified());
        assert!(!told(&a.evicted));
        assert_eq!(silent.iter().filter(|s| told(&s.evicted)).count(), 1);
        // Its guard dropping later does not free a second place.
        drop(silent);
        assert_eq!(h.pending(), 2);
        drop((a, newcomer));
        assert_eq!(h.pending(), 0);
    }

    #[test]
    fn a_full_listener_takes_from_the_busiest_source() {
        let h = Handshakes::new(limits(10, 4));
        let t0 = Instant::now();
        let busy: Vec<_> = (0..3)
            .map(|_| h.try_admit(src("10.0.0.1"), None, t0).unwrap())
            .collect();
        let quiet = h.try_admit(src("10.0.0.2"), None, t0).unwrap();
        let later = t0 + Duration::from_secs(1);
        assert!(h.try_admit(src("10.0.0.3"), None, later).is_none());
        let _n = h.admit_evicting(src("10.0.0.3"), None, later).unwrap();
        assert!(!futures_lite_now(quiet.evicted.notified()));
        assert_eq!(
            busy.iter()
                .filter(|b| futures_lite_now(b.evicted.notified()))
                .count(),
            1
        );
    }

    /// Whether a `notified()` future is ready right away.
    fn futures_lite_now(f: tokio::sync::futures::Notified<'_>) -> bool {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.as_mut().poll(&mut cx).is_ready()
    }
    use std::future::Future;
}
