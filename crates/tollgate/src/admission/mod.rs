//! Admission: what a connection may claim before anyone knows who it is.
//!
//! Both listeners accept TCP from anybody, so everything an unauthenticated peer can make the
//! server hold is bounded here, keyed by [`Source`] (an address prefix, so one host cannot
//! evade a limit with a handful of addresses from its /64): the connect rate
//! ([`ConnectRate`]), connection slots overall and per source ([`Slots`]), unfinished MQTT
//! handshakes with eviction of the least progressed ([`handshakes`]), the records of refusals,
//! individual at first and then summarised per source and reason ([`refusals`]), and the
//! descriptor budgets each listener gets from the process's file limit ([`Budgets`]).
//!
//! It must not do TLS, HTTP or MQTT: the listeners ask it whether to go on, and it answers.

pub mod handshakes;
pub mod refusals;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};

/// Prefix lengths that make one source: /32 and /64 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixes {
    /// IPv4 prefix length (0-32).
    pub v4: u8,
    /// IPv6 prefix length (0-128).
    pub v6: u8,
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes { v4: 32, v6: 64 }
    }
}

/// One source of connections: an address masked to its prefix. IPv4-mapped IPv6 addresses
/// count as the IPv4 address they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    net: IpAddr,
    len: u8,
}

impl Source {
    /// The source `ip` belongs to.
    pub fn of(ip: IpAddr, p: Prefixes) -> Source {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let len = p.v4.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Source {
                    net: IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = p.v6.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Source {
                    net: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    len,
                }
            }
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// Sources a listener's connect-rate table tracks at once.
pub const MAX_TRACKED_SOURCES: usize = 65_536;

/// A token bucket per source: `rate` connects a second on average, `burst` at once. A rate of
/// 0 admits everything. The table is bounded: buckets that have refilled are forgotten first,
/// and a source that finds the table full of busy ones is admitted untracked (failing open
/// for new sources rather than locking everyone out; the other limits still hold).
pub struct ConnectRate {
    per_sec: u32,
    rate: f64,
    burst: f64,
    max_sources: usize,
    table: Mutex<HashMap<Source, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ConnectRate {
    /// `rate` connects per second, `burst` at once, at most `max_sources` tracked.
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> ConnectRate {
        ConnectRate {
            per_sec: rate,
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            max_sources: max_sources.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// The sustained rate, connections a second (0: unlimited).
    pub fn rate_per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Whether `src` may open one more connection now.
    pub fn admit(&self, src: Source, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let mut t = self.table.lock();
        if t.len() >= self.max_sources && !t.contains_key(&src) {
            let (rate, burst) = (self.rate, self.burst);
            t.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if t.len() >= self.max_sources {
                return true;
            }
        }
        let b = t.entry(src).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Which limit a connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The listener's overall limit.
    Overall,
    /// The limit for one source.
    Source,
}

/// Connection slots: at most `total` at once, at most `per_source` from one source.
pub struct Slots {
    total: usize,
    per_source: usize,
    table: Mutex<SlotTable>,
}

#[derive(Default)]
struct SlotTable {
    total: usize,
    by_source: HashMap<Source, usize>,
}

/// Holds one slot until dropped.
pub struct Slot {
    slots: Arc<Slots>,
    src: Source,
}

impl Slots {
    /// At most `total` connections, `per_source` from one source.
    pub fn new(total: usize, per_source: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            per_source,
            table: Mutex::new(SlotTable::default()),
        })
    }

    /// Take a slot for `src`, or say which limit is reached.
    pub fn enter(self: &Arc<Self>, src: Source) -> Result<Slot, Full> {
        let mut t = self.table.lock();
        if t.total >= self.total {
            return Err(Full::Overall);
        }
        let n = t.by_source.entry(src).or_insert(0);
        if *n >= self.per_source {
            return Err(Full::Source);
        }
        *n += 1;
        t.total += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            src,
        })
    }

    /// Connections holding a slot now.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.table.lock().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.table.lock();
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.by_source.get_mut(&self.src) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.by_source.remove(&self.src);
            }
        }
    }
}

/// Descriptors kept back for everything that is not a connection: the stores, the event log,
/// the policy and CA files, the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// How many connections each listener may hold, sized from the process's file limit so that
/// one listener can never take the descriptors another needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// MQTT connections (one descriptor each: the transport probe reads the socket's own).
    pub mqtt: usize,
    /// Control-listener connections (one descriptor each).
    pub control: usize,
    /// Control-listener connections answered with a 503/429 beyond `control`.
    pub control_refusing: usize,
}

impl Budgets {
    /// Fit the configured limits into `nofile` descriptors: the control listener gets at most
    /// an eighth of what is left after the reserve, MQTT the rest.
    pub fn fit(nofile: u64, mqtt_wanted: usize, control_wanted: usize) -> Budgets {
        let usable = nofile.saturating_sub(RESERVED_DESCRIPTORS);
        let usable = usize::try_from(usable).unwrap_or(usize::MAX);
        let control = control_wanted.min(usable / 8).max(1);
        let control_refusing = (control / 8).clamp(1, 32);
        let left = usable.saturating_sub(control + control_refusing);
        let mqtt = mqtt_wanted.min(left).max(1);
        Budgets {
            mqtt,
            control,
            control_refusing,
        }
    }
}

/// Rate-limits a repeating warning (accept errors under descriptor exhaustion, say) to one
/// line per interval with the count of what it stands for.
pub struct Throttled {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttled {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Count one occurrence; `Some(n)` when a line is due, `n` occurrences since the last one.
    pub fn tick(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock();
        s.1 += 1;
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => None,
            _ => {
                let n = s.1;
                *s = (Some(now), 0);
                Some(n)
            }
        }
    }
}

/// Accept the next connection. Accept errors (descriptors exhausted and the like) are waited
/// out 50 ms at a time and logged at most once a second, with how many there were; `listener`
/// names the listener in that line.
pub async fn accept(
    tcp: &TcpListener,
    errors: &Throttled,
    listener: &str,
) -> (TcpStream, SocketAddr) {
    loop {
        match tcp.accept().await {
            Ok(x) => return x,
            Err(e) => {
                if let Some(n) = errors.tick(Instant::now()) {
                    tracing::warn!(listener, count = n, "accept: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_prefixes() {
        let p = Prefixes::default();
        assert_eq!(Source::of(ip("10.1.2.3"), p).to_string(), "10.1.2.3/32");
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1"), p),
            Source::of(ip("2001:db8:1:2:bbbb::9"), p)
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1"), p).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1"), p),
            Source::of(ip("2001:db8:1:3::1"), p)
        );
        // A v4-mapped address is its IPv4 address.
        assert_eq!(
            Source::of(ip("::ffff:10.1.2.3"), p),
            Source::of(ip("10.1.2.3"), p)
        );
        let wide = Prefixes { v4: 24, v6: 48 };
        assert_eq!(Source::of(ip("10.1.2.3"), wide).to_string(), "10.1.2.0/24");
        let zero = Prefixes { v4: 0, v6: 0 };
        assert_eq!(Source::of(ip("10.1.2.3"), zero).to_string(), "0.0.0.0/0");
        assert_eq!(Source::of(ip("2001:db8::1"), zero).to_string(), "::/0");
    }

    #[test]
    fn connect_rate_allows_a_burst_then_the_rate() {
        let r = ConnectRate::new(10, 5, 100);
        let a = Source::of(ip("10.0.0.1"), Prefixes::default());
        let b = Source::of(ip("10.0.0.2"), Prefixes::default());
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| r.admit(a, t0)).count(), 5);
        assert!(r.admit(b, t0), "another source has its own bucket");
        assert!(!r.admit(a, t0));
        assert!(
            r.admit(a, t0 + Duration::from_millis(110)),
            "refilled at 10/s"
        );
        assert!(!r.admit(a, t0 + Duration::from_millis(110)));
        assert!(ConnectRate::new(0, 0, 1).admit(a, t0), "0 is unlimited");
    }

    #[test]
    fn slots_cap_overall_and_per_source_and_come_back() {
        let s = Slots::new(3, 2);
        let a = Source::of(ip("10.0.0.1"), Prefixes::default());
        let b = Source::of(ip("10.0.0.2"), Prefixes::default());
        let a1 = s.enter(a).unwrap();
        let _a2 = s.enter(a).unwrap();
        assert_eq!(s.enter(a).err(), Some(Full::Source));
        let _b1 = s.enter(b).unwrap();
        assert_eq!(s.enter(b).err(), Some(Full::Overall));
        drop(a1);
        assert_eq!(s.in_use(), 2);
        assert!(s.enter(b).is_ok());
    }

    #[test]
    fn budgets_fit_the_file_limit() {
        let b = Budgets::fit(1100, 100_000, 256);
        assert_eq!(b.control, (1100 - 64) / 8);
        assert!(
            b.mqtt + b.control + b.control_refusing + 64 <= 1100,
            "{b:?}"
        );
        assert!(b.mqtt > 800, "{b:?}");
        let big = Budgets::fit(1 << 20, 100_000, 256);
        assert_eq!((big.mqtt, big.control), (100_000, 256));
    }

    #[test]
    fn throttled_lines_carry_their_counts() {
        let t = Throttled::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.tick(t0), Some(1));
        assert_eq!(t.tick(t0), None);
        assert_eq!(t.tick(t0 + Duration::from_millis(500)), None);
        assert_eq!(t.tick(t0 + Duration::from_millis(1001)), Some(3));
    }
}
