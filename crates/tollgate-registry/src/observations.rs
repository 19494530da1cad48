//! What devices were seen doing (topics published, with or without retain, and filters
//! subscribed to), kept per device as a bounded set with first and last sighting, for
//! least-privilege policy suggestions and unused-grant lints.

use rusqlite::params;

use crate::{RegistryError, SqliteRegistry};

/// Distinct topics and filters kept per device; beyond it new ones are not recorded (and the
/// caller is told, so that a suggestion does not narrow what it never saw).
pub const MAX_PER_DEVICE: i64 = 2_000;

/// One observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationRecord {
    /// Device id.
    pub device: String,
    /// `publish`, `retain` or `subscribe`.
    pub action: String,
    /// The topic (publish, retain) or filter (subscribe).
    pub topic: String,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds.
    pub last_seen: i64,
    /// Times reported (once per connection that used it).
    pub count: i64,
}

/// The observation store.
pub trait ObservationStore: Send + Sync {
    /// Record `(device, action, topic)` seen at `now`, in one transaction; returns how many
    /// were not recorded because their device is at [`MAX_PER_DEVICE`].
    fn record_observations(
        &self,
        seen: &[(String, String, String)],
        now: i64,
    ) -> Result<usize, RegistryError>;
    /// Every observation last seen at or after `since`.
    fn observations(&self, since: i64) -> Result<Vec<ObservationRecord>, RegistryError>;
}

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS observations (
    device TEXT NOT NULL,
    action TEXT NOT NULL,
    topic TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (device, action, topic)
);";

impl ObservationStore for SqliteRegistry {
    fn record_observations(
        &self,
        seen: &[(String, String, String)],
        now: i64,
    ) -> Result<usize, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut refused = 0;
        {
            let mut update = tx.prepare_cached(
                "UPDATE observations SET last_seen = ?4, count = count + 1
                 WHERE device = ?1 AND action = ?2 AND topic = ?3",
            )?;
            let mut count =
                tx.prepare_cached("SELECT COUNT(*) FROM observations WHERE device = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO observations (device, action, topic, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
            )?;
            for (device, action, topic) in seen {
                if update.execute(params![device, action, topic, now])? > 0 {
                    continue;
                }
                let n: i64 = count.query_row([device], |r| r.get(0))?;
                if n >= MAX_PER_DEVICE {
                    refused += 1;
                    continue;
                }
                insert.execute(params![device, action, topic, now])?;
            }
        }
        tx.commit()?;
        Ok(refused)
    }

    fn observations(&self, since: i64) -> Result<Vec<ObservationRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT device, action, topic, first_seen, last_seen, count FROM observations
             WHERE last_seen >= ?1 ORDER BY device, action, topic",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(ObservationRecord {
                device: r.get(0)?,
                action: r.get(1)?,
                topic: r.get(2)?,
                first_seen: r.get(3)?,
                last_seen: r.get(4)?,
                count: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::disallowed_methods)]
    use super::*;

    #[test]
    fn observations_are_upserted_bounded_per_device_and_filtered_by_time() {
        let dir = std::env::temp_dir().join(format!("tollgate-obs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let reg = SqliteRegistry::open(&dir.join("r.db")).unwrap();
        let s = |d: &str, a: &str, t: &str| (d.to_owned(), a.to_owned(), t.to_owned());
        assert_eq!(
            reg.record_observations(
                &[s("d1", "publish", "a/b"), s("d1", "subscribe", "c/#")],
                100
            )
            .unwrap(),
            0
        );
        reg.record_observations(&[s("d1", "publish", "a/b")], 200)
            .unwrap();
        let all = reg.observations(0).unwrap();
        assert_eq!(all.len(), 2);
        let ab = all.iter().find(|o| o.topic == "a/b").unwrap();
        assert_eq!((ab.first_seen, ab.last_seen, ab.count), (100, 200, 2));
        assert_eq!(reg.observations(150).unwrap().len(), 1);
        let many: Vec<_> = (0..MAX_PER_DEVICE + 5)
            .map(|i| s("d2", "publish", &format!("t/{i}")))
            .collect();
        assert_eq!(reg.record_observations(&many, 300).unwrap(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
