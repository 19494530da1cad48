//! Is the client still taking what we send? Our own writes are not enough to tell: a client that
//! stopped reading can leave megabytes in the kernel's buffers (ours and its own) while every
//! write of ours succeeds, and a QoS 1 subscriber's in-flight window then holds the rest. So
//! while the kernel holds data for the client, the driver samples the socket (`TCP_INFO`
//! through the [`TransportProbe`](crate::TransportProbe)) on a timer, and this decides whether
//! the data moved.
//!
//! Progress means the kernel's unsent bytes went down by more than what we added since the last
//! sample (we count plaintext; TLS adds a few bytes per record, so a client has to take at
//! least that much to count as reading). Nothing outstanding (no unsent and no unacknowledged
//! data) disarms the timer: an idle connection costs nothing, and the per-message path only
//! adds the bytes it flushed to a counter. No I/O here, and no clock of its own.

use std::time::Duration;

use tokio::time::Instant;

use crate::TransportSample;

/// What a sample says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing outstanding (or nothing to tell from): the timer is off until the next write.
    Idle,
    /// Data is outstanding; sample again at [`Progress::next_sample`].
    Watching,
    /// Data has been outstanding without moving for the timeout.
    Stalled {
        /// Bytes the kernel still holds unsent.
        unsent: u32,
    },
}

/// The progress watch of one connection.
#[derive(Debug)]
pub(crate) struct Progress {
    timeout: Duration,
    period: Duration,
    /// When to sample next; `None` while nothing is outstanding.
    next: Option<Instant>,
    last_progress: Instant,
    /// Unsent bytes at the previous sample (`None`: no sample since the timer was armed).
    prev_unsent: Option<u32>,
    /// Bytes we flushed since the previous sample.
    written: u64,
}

impl Progress {
    /// A watch that calls a connection stalled after `timeout` without progress.
    pub fn new(timeout: Duration, now: Instant) -> Progress {
        Progress {
            timeout,
            period: (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
            next: None,
            last_progress: now,
            prev_unsent: None,
            written: 0,
        }
    }

    /// We handed `n` bytes to the socket at `now`: arm the timer if it is off.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        self.written = self.written.saturating_add(n as u64);
        if self.next.is_none() {
            self.next = Some(now + self.period);
            self.last_progress = now;
            self.prev_unsent = None;
        }
    }

    /// When to sample next, if data may be outstanding.
    pub fn next_sample(&self) -> Option<Instant> {
        self.next
    }

    /// Judge a sample taken at `now` (`None`: the transport cannot tell).
    pub fn sample(&mut self, s: Option<TransportSample>, now: Instant) -> Verdict {
        let Some(s) = s.filter(|s| s.unsent_bytes > 0 || s.unacked > 0) else {
            self.next = None;
            self.written = 0;
            return Verdict::Idle;
        };
        let moved = match self.prev_unsent {
            None => true,
            Some(prev) => u64::from(s.unsent_bytes) < u64::from(prev).saturating_add(self.written),
        };
        self.prev_unsent = Some(s.unsent_bytes);
        self.written = 0;
        if moved {
            self.last_progress = now;
        } else if now.saturating_duration_since(self.last_progress) >= self.timeout {
            self.next = None;
            return Verdict::Stalled {
                unsent: s.unsent_bytes,
            };
        }
        self.next = Some(now + self.period);
        Verdict::Watching
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(unsent: u32, unacked: u32) -> Option<TransportSample> {
        Some(TransportSample {
            unsent_bytes: unsent,
            unacked,
            ..Default::default()
        })
    }

    #[test]
    fn data_that_does_not_move_for_the_timeout_is_a_stall() {
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(4), t0);
        assert_eq!(p.next_sample(), None, "off until something is written");
        p.wrote(1_000_000, t0);
        assert_eq!(p.next_sample(), Some(t0 + Duration::from_secs(1)));
        let at = |secs| t0 + Duration::from_secs(secs);
        // The first sample is the baseline.
        assert_eq!(p.sample(s(900_000, 0), at(1)), Verdict::Watching);
        // Nothing written since, nothing moved.
        assert_eq!(p.sample(s(900_000, 0), at(2)), Verdict::Watching);
        // More written (and its TLS overhead), nothing moved: still no progress.
        p.wrote(1000, at(2));
        assert_eq!(p.sample(s(901_030, 0), at(3)), Verdict::Watching);
        assert_eq!(p.sample(s(901_030, 0), at(4)), Verdict::Watching);
        assert_eq!(
            p.sample(s(901_030, 0), at(5)),
            Verdict::Stalled { unsent: 901_030 }
        );
        assert_eq!(p.next_sample(), None);
    }

    #[test]
    fn a_slow_reader_makes_progress_and_an_idle_connection_disarms() {
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(2), t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        p.wrote(500_000, t0);
        assert_eq!(p.sample(s(400_000, 3), at(500)), Verdict::Watching);
        for i in 1..40u32 {
            // We add 10 KB per period; the reader takes 12 KB.
            p.wrote(10_000, at(u64::from(i) * 500));
            let unsent = 400_000 - i * 2_000;
            assert_eq!(
                p.sample(s(unsent, 3), at(u64::from(i + 1) * 500)),
                Verdict::Watching,
                "period {i}"
            );
        }
        // Everything taken: the timer goes off.
        assert_eq!(p.sample(s(0, 0), at(30_000)), Verdict::Idle);
        assert_eq!(p.next_sample(), None);
        // A transport that cannot tell never stalls anything.
        p.wrote(10, at(30_000));
        assert_eq!(p.sample(None, at(31_000)), Verdict::Idle);
    }

    #[test]
    fn unacknowledged_data_that_stays_unacknowledged_is_a_stall() {
        // The peer vanished: everything is sent, nothing acknowledged, nothing more written.
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(1), t0);
        p.wrote(100, t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(p.sample(s(0, 2), at(250)), Verdict::Watching);
        assert_eq!(p.sample(s(0, 2), at(500)), Verdict::Watching);
        assert_eq!(p.sample(s(0, 2), at(1250)), Verdict::Stalled { unsent: 0 });
    }
}
