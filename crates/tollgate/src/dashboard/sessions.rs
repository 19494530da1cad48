//! The dashboard's one-time sign-in tokens and its sessions, in memory.
//!
//! A sign-in token and a session id are 256 random bits (ring's system RNG), shown once to the
//! operator or the browser as unpadded base64url and kept here only as their SHA-256, so a
//! memory dump of the store yields nothing that signs in. A token is good once, until its
//! expiry; a session ends when unused for `session_idle`, `session_max` after sign-in, on
//! sign-out, or when evicted (least recently used) to make room. Both maps are bounded.
//!
//! This module decides nothing about HTTP (no cookies, no headers) and emits no event: it
//! answers with what happened, and [`super::Dashboard`] tells the event bus.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use parking_lot::Mutex;
use ring::rand::{SecureRandom, SystemRandom};

use super::Settings;

/// What a dashboard session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read and change everything (the same as an admin certificate).
    Admin,
    /// Read only.
    Viewer,
}

impl Role {
    /// `admin` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    /// From `admin` or `viewer`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// What a request learns about the session it carries.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The operator the session acts for: whoever issued the sign-in URL.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// This session's CSRF token (random, shown in every page; required on every change).
    pub csrf: String,
}

/// Why a session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Unused for longer than the idle timeout.
    Idle,
    /// Past its absolute lifetime.
    Expired,
    /// Ended by its user.
    SignedOut,
    /// Ended to make room for a newer one.
    Evicted,
}

impl Ended {
    /// The `reason` of a `dashboard_signed_out` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Idle => "idle",
            Ended::Expired => "expired",
            Ended::SignedOut => "signed_out",
            Ended::Evicted => "evicted",
        }
    }
}

/// Why a sign-in token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token this server issued (or one forgotten to make room).
    Unknown,
    /// Already used once.
    Used,
    /// Past its expiry.
    Expired,
    /// Not even shaped like a token.
    Malformed,
}

impl Refused {
    /// The `reason` of a `dashboard_sign_in_refused` event, and what the refusal page says.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown sign-in token",
            Refused::Used => "this sign-in URL was already used",
            Refused::Expired => "this sign-in URL has expired",
            Refused::Malformed => "malformed sign-in token",
        }
    }
}

/// A session that ended, for the event that says so.
#[derive(Debug, Clone)]
pub struct Gone {
    pub name: String,
    pub why: Ended,
}

type Digest = [u8; 32];

struct Pending {
    name: String,
    role: Role,
    issued: Instant,
    expires: Instant,
}

struct Session {
    name: String,
    role: Role,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

impl Session {
    fn ended(&self, s: &Settings, now: Instant) -> Option<Ended> {
        if now.duration_since(self.created) >= s.session_max {
            Some(Ended::Expired)
        } else if now.duration_since(self.last_used) >= s.session_idle {
            Some(Ended::Idle)
        } else {
            None
        }
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            name: self.name.clone(),
            role: self.role,
            csrf: self.csrf.clone(),
        }
    }
}

#[derive(Default)]
struct Inner {
    pending: HashMap<Digest, Pending>,
    /// Tokens used, until they would have expired: a replay is told so.
    used: HashMap<Digest, Instant>,
    sessions: HashMap<Digest, Session>,
}

/// Sign-in tokens and sessions.
pub struct Store {
    settings: Settings,
    rng: SystemRandom,
    inner: Mutex<Inner>,
}

/// Length of a token or session id as sent: 32 bytes in unpadded base64url.
const ENCODED_LEN: usize = 43;

fn digest(secret: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `s` could be one of our secrets (checked before hashing anything a client sent).
pub fn well_formed(s: &str) -> bool {
    s.len() == ENCODED_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Compare two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    // Hashing first makes the lengths equal and the comparison's timing meaningless.
    let (a, b) = (digest(a), digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Store {
    pub fn new(settings: Settings) -> Store {
        Store {
            settings,
            rng: SystemRandom::new(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// 256 random bits as unpadded base64url.
    fn secret(&self) -> Result<String, String> {
        let mut b = [0u8; 32];
        self.rng
            .fill(&mut b)
            .map_err(|_| "the system random number generator failed".to_owned())?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
    }

    /// Issue a sign-in token for `name` with `role`, good for `ttl` (the configured default
    /// when `None`; at most the configured maximum). Returns the token and its expiry.
    pub fn issue(
        &self,
        name: &str,
        role: Role,
        ttl: Option<Duration>,
    ) -> Result<(String, SystemTime), String> {
        let ttl = ttl.unwrap_or(self.settings.login_ttl);
        if ttl.is_zero() || ttl > self.settings.max_login_ttl {
            return Err(format!(
                "ttl_secs must be between 1 and {} (dashboard.max_login_ttl_secs)",
                self.settings.max_login_ttl.as_secs()
            ));
        }
        let token = self.secret()?;
        let now = Instant::now();
        // The expiry is stated to the second: it is exactly that second (up to `ttl`, not past it).
        let now_sys = SystemTime::now();
        let stated = (now_sys + ttl)
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| std::time::UNIX_EPOCH + Duration::from_secs(d.as_secs()))
            .unwrap_or(now_sys + ttl);
        let life = stated.duration_since(now_sys).unwrap_or(ttl);
        let mut g = self.inner.lock();
        g.pending.retain(|_, p| p.expires > now);
        g.used.retain(|_, until| *until > now);
        while g.pending.len() >= self.settings.max_pending_logins {
            let Some(oldest) = g
                .pending
                .iter()
                .min_by_key(|(_, p)| p.issued)
                .map(|(k, _)| *k)
            else {
                break;
            };
            g.pending.remove(&oldest);
        }
        g.pending.insert(
            digest(&token),
            Pending {
                name: name.to_owned(),
                role,
                issued: now,
                expires: now + life,
            },
        );
        Ok((token, stated))
    }

    /// Use a sign-in token: a new session (its id, for the cookie, and what it is), and the
    /// sessions ended to make room for it.
    pub fn redeem(&self, token: &str) -> Result<(String, SessionInfo, Vec<Gone>), Refused> {
        if !well_formed(token) {
            return Err(Refused::Malformed);
        }
        let key = digest(token);
        let now = Instant::now();
        let mut g = self.inner.lock();
        let Some(p) = g.pending.remove(&key) else {
            return Err(match g.used.get(&key) {
                Some(until) if *until > now => Refused::Used,
                _ => Refused::Unknown,
            });
        };
        if p.expires <= now {
            return Err(Refused::Expired);
        }
        g.used.insert(key, p.expires);
        let id = self.secret().map_err(|_| Refused::Unknown)?;
        let csrf = self.secret().map_err(|_| Refused::Unknown)?;
        let mut gone = sweep(&mut g, &self.settings, now);
        while g.sessions.len() >= self.settings.max_sessions {
            let Some((k, name)) = g
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, s)| (*k, s.name.clone()))
            else {
                break;
            };
            g.sessions.remove(&k);
            gone.push(Gone {
                name,
                why: Ended::Evicted,
            });
        }
        let s = Session {
            name: p.name,
            role: p.role,
            csrf,
            created: now,
            last_used: now,
        };
        let info = s.info();
        g.sessions.insert(digest(&id), s);
        Ok((id, info, gone))
    }

    /// The session with id `id`, if it is live; `touch` counts this as use (pages and API
    /// calls do; the live-update stream does not, so an open tab still times out). A session
    /// found over comes back as `Err(Some(..))`, and is forgotten.
    pub fn get(&self, id: &str, touch: bool) -> Result<SessionInfo, Option<Gone>> {
        if !well_formed(id) {
            return Err(None);
        }
        let key = digest(id);
        let now = Instant::now();
        let mut g = self.inner.lock();
        let Some(s) = g.sessions.get_mut(&key) else {
            return Err(None);
        };
        if let Some(why) = s.ended(&self.settings, now) {
            let name = s.name.clone();
            g.sessions.remove(&key);
            return Err(Some(Gone { name, why }));
        }
        if touch {
            s.last_used = now;
        }
        Ok(s.info())
    }

    /// End the session with id `id` (sign-out).
    pub fn remove(&self, id: &str) -> Option<Gone> {
        if !well_formed(id) {
            return None;
        }
        self.inner
            .lock()
            .sessions
            .remove(&digest(id))
            .map(|s| Gone {
                name: s.name,
                why: Ended::SignedOut,
            })
    }

    /// Forget what is over: expired tokens and sessions (the latter returned, for events).
    pub fn sweep(&self) -> Vec<Gone> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        g.pending.retain(|_, p| p.expires > now);
        g.used.retain(|_, until| *until > now);
        sweep(&mut g, &self.settings, now)
    }

    /// Live sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().sessions.len()
    }
}

fn sweep(g: &mut Inner, s: &Settings, now: Instant) -> Vec<Gone> {
    let mut gone = Vec::new();
    g.sessions.retain(|_, sess| match sess.ended(s, now) {
        Some(why) => {
            gone.push(Gone {
                name: sess.name.clone(),
                why,
            });
            false
        }
        None => true,
    });
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            login_ttl: Duration::from_secs(60),
            max_login_ttl: Duration::from_secs(3600),
            session_idle: Duration::from_secs(60),
            session_max: Duration::from_secs(600),
            max_sessions: 2,
            max_pending_logins: 2,
            max_streams: 4,
        }
    }

    #[test]
    fn a_token_signs_in_once() {
        let st = Store::new(settings());
        let (t, _) = st.issue("ops", Role::Viewer, None).unwrap();
        assert!(well_formed(&t));
        let (id, info, gone) = st.redeem(&t).unwrap();
        assert!(gone.is_empty());
        assert_eq!((info.name.as_str(), info.role), ("ops", Role::Viewer));
        assert!(st.get(&id, true).is_ok());
        assert_eq!(st.redeem(&t).unwrap_err(), Refused::Used);
        assert_eq!(st.redeem(&"A".repeat(43)).unwrap_err(), Refused::Unknown);
        assert_eq!(st.redeem("short").unwrap_err(), Refused::Malformed);
    }

    #[test]
    fn ttl_is_bounded_and_sessions_are_evicted_least_recently_used_first() {
        let st = Store::new(settings());
        assert!(st
            .issue("ops", Role::Admin, Some(Duration::from_secs(3601)))
            .is_err());
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (t, _) = st.issue("ops", Role::Admin, None).unwrap();
            let (id, _, gone) = st.redeem(&t).unwrap();
            ids.push((id, gone.len()));
        }
        assert_eq!(ids[2].1, 1, "the third sign-in evicts one session");
        assert_eq!(st.len(), 2);
        assert!(st.get(&ids[0].0, false).is_err());
        assert_eq!(st.remove(&ids[2].0).unwrap().why, Ended::SignedOut);
    }

    #[test]
    fn secrets_compare_in_full() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
