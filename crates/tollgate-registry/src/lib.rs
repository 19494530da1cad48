//! Tollgate's device registry.
//!
//! Owns the records of who may connect: devices (groups, revocation, quarantine reasons,
//! deletion), operators of the admin API,
//! every certificate issued and every revocation, one-time enrollment tokens, suppliers and
//! their bootstrap enrollments. Each aggregate is a trait ([`DeviceStore`], [`CertificateStore`],
//! [`TokenStore`], [`SupplierStore`], [`InventoryStore`] for models, what each device runs,
//! SBOMs, advisories, VEX, waivers and grace-period clocks, [`OperatorStore`] for the admin
//! API's named operators and their roles); [`Registry`] is all of them, and the control plane holds a
//! `dyn Registry`, so a PostgreSQL backend is one more implementation. The embedded backend is
//! [`SqliteRegistry`] (rusqlite, bundled, WAL); no SQL leaves this crate.
//!
//! It must not depend on the broker or the session store, and it makes no decisions: whether a
//! revoked device may come back, or a token may change a device's groups, is the control
//! plane's call. Calls are synchronous and may touch the disk: the control plane calls them
//! from blocking threads, never from the per-message path.

#![forbid(unsafe_code)]

mod inventory;
mod observations;
mod operators;

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

/// Errors from the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The record already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An enrollment token was refused.
    #[error("enrollment token refused: {0}")]
    Token(&'static str),
    /// The record is revoked (an operator), so it cannot be changed.
    #[error("{0} is revoked")]
    Revoked(String),
    /// The change would leave no active operator with the admin role.
    #[error("operator {0} is the last active admin")]
    LastAdmin(String),
    /// The database was written by a newer Tollgate.
    #[error("database schema version {found} is newer than this binary understands ({supported})")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Version this binary writes.
        supported: i64,
    },
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Device id (the certificate's identity).
    pub id: String,
    /// Groups the device belongs to (policy `group:NAME`).
    pub groups: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of revocation, if revoked.
    pub revoked_at: Option<i64>,
}

/// When a device was last connected or disconnected, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSeen {
    /// Unix seconds.
    pub at: i64,
    /// The address of its last connection.
    pub addr: Option<String>,
}

/// Why a device is quarantined: one reason per source, several may hold at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineReason {
    /// Who holds it: `operator`, `compliance:RULE`, `detector:NAME`... A device is released
    /// when no source holds it any more.
    pub source: String,
    /// Why, in words.
    pub reason: String,
    /// Who put it there (an admin name, or the component).
    pub by: String,
    /// Unix seconds.
    pub since: i64,
    /// Unix seconds at which this reason lifts itself (a detector's quarantine with a
    /// time-to-live); `None`: held until released.
    pub until: Option<i64>,
}

/// One device's quarantine changes, applied with others in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuarantineChange {
    /// Device id.
    pub device: String,
    /// Reasons to add or replace (per source).
    pub set: Vec<QuarantineReason>,
    /// Sources whose reasons to remove.
    pub remove: Vec<String>,
}

/// What a used enrollment token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// Groups for the device.
    pub groups: Vec<String>,
    /// Whether the groups replace those of a device that already exists (the operator asked
    /// for it explicitly when issuing the token); otherwise an existing device keeps its own.
    pub change_groups: bool,
}

/// What kind of subject a certificate was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// A device.
    Device,
    /// An operator of the admin API (stored as `admin`).
    Admin,
    /// The gateway itself.
    Server,
}

impl CertKind {
    fn as_str(self) -> &'static str {
        match self {
            CertKind::Device => "device",
            CertKind::Admin => "admin",
            CertKind::Server => "server",
        }
    }
    fn parse(s: &str) -> CertKind {
        match s {
            "admin" => CertKind::Admin,
            "server" => CertKind::Server,
            _ => CertKind::Device,
        }
    }
}

/// A certificate Tollgate issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Serial, lower-case hex.
    pub serial: String,
    /// Subject id (device id or admin name).
    pub subject: String,
    /// Kind.
    pub kind: CertKind,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds of revocation.
    pub revoked_at: Option<i64>,
    /// Reason given at revocation.
    pub revoke_reason: Option<String>,
    /// The certified key: `ecdsa-p256`, `ecdsa-p384`, `ed25519` or `rsa-<bits>` (unknown for
    /// certificates recorded before schema 5).
    pub key: Option<String>,
    /// The certified SubjectPublicKeyInfo, DER (none for certificates recorded before
    /// schema 7), for the configuration audit's key checks.
    pub spki: Option<Vec<u8>>,
    /// Serial of the CA certificate that issued it (none before schema 7).
    pub issuer: Option<String>,
}

/// A registered supplier (manufacturer) whose bootstrap certificates may enroll devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supplier {
    /// Name.
    pub name: String,
    /// Its manufacturing CA certificate(s), PEM.
    pub ca_pem: String,
    /// Groups given to devices it enrolls.
    pub groups: Vec<String>,
    /// Whether one hardware serial may enroll more than once.
    pub allow_reenroll: bool,
}

/// Where a device enrolled from with a bootstrap certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapRecord {
    /// Supplier name.
    pub supplier: String,
    /// Hardware serial from the bootstrap certificate.
    pub hardware_serial: String,
    /// Model, if the certificate said.
    pub model: Option<String>,
    /// Device id it enrolled as.
    pub device_id: String,
}

/// Devices: registration, groups, revocation and quarantine.
pub trait DeviceStore: Send + Sync {
    /// Register a new device. Conflict if the id exists at all (active or revoked).
    fn create_device(&self, id: &str, groups: &[String], now: i64) -> Result<(), RegistryError>;
    /// Bring a revoked device back with `groups`. NotFound if absent, Conflict if active.
    fn reactivate_device(&self, id: &str, groups: &[String], now: i64)
        -> Result<(), RegistryError>;
    /// Replace an existing device's groups. NotFound if absent.
    fn set_groups(&self, id: &str, groups: &[String]) -> Result<(), RegistryError>;
    /// Record that `id` was seen at `at` (Unix seconds): connected, or disconnected, from
    /// `addr` when given (otherwise the last address stays). Unknown devices are ignored.
    fn record_seen(&self, id: &str, at: i64, addr: Option<&str>) -> Result<(), RegistryError>;
    /// When `id` was last seen and from where, if ever.
    fn last_seen(&self, id: &str) -> Result<Option<LastSeen>, RegistryError>;
    /// One device.
    fn device(&self, id: &str) -> Result<Option<Device>, RegistryError>;
    /// All devices, by id.
    fn devices(&self) -> Result<Vec<Device>, RegistryError>;
    /// Delete a device: revoke every unrevoked certificate it holds (the certificate records
    /// stay, for the CRL and its history), and remove the device with its quarantine reasons,
    /// token, inventory and observations, so its id can be registered again as a new device.
    /// Bootstrap records stay (a hardware serial that enrolled stays spent). Returns the
    /// serials revoked now. NotFound if absent.
    fn delete_device(&self, id: &str, reason: &str, now: i64)
        -> Result<Vec<String>, RegistryError>;
    /// Revoke a device and every unrevoked certificate it holds; returns the serials revoked.
    fn revoke_device(&self, id: &str, reason: &str, now: i64)
        -> Result<Vec<String>, RegistryError>;
    /// Revoke several devices and every unrevoked certificate they hold, in one transaction:
    /// all of them or none (NotFound names the first id that does not exist). Returns, per id
    /// in the order given, the serials revoked now. An id given twice is revoked once (its
    /// second entry has no serials).
    fn revoke_devices(
        &self,
        ids: &[String],
        reason: &str,
        now: i64,
    ) -> Result<Vec<Vec<String>>, RegistryError>;
    /// Register several new devices with their certificates in one transaction (bulk
    /// provisioning): all of them or none. Conflict names the first id that exists already.
    fn create_devices_with_certificates(
        &self,
        devices: &[(String, Vec<String>)],
        certs: &[CertRecord],
        now: i64,
    ) -> Result<(), RegistryError>;
    /// Add (or replace) the quarantine reason of `reason.source`. NotFound if no such device.
    fn quarantine(&self, device: &str, reason: &QuarantineReason) -> Result<(), RegistryError>;
    /// Remove `source`'s reason if its time-to-live ended by `now` (Unix seconds): checked
    /// and removed in one transaction, so a reason renewed meanwhile stays. Returns it.
    fn release_expired(
        &self,
        device: &str,
        source: &str,
        now: i64,
    ) -> Result<Option<QuarantineReason>, RegistryError>;
    /// Remove the reasons of `source` (every source with `None`); returns those removed.
    fn release(
        &self,
        device: &str,
        source: Option<&str>,
    ) -> Result<Vec<QuarantineReason>, RegistryError>;
    /// Several devices' quarantine changes in one transaction (a fleet-wide compliance
    /// evaluation): per device, set the reasons given (replacing those of the same source) and
    /// remove the sources listed. Devices that no longer exist are skipped.
    fn apply_quarantines(&self, changes: &[QuarantineChange]) -> Result<(), RegistryError>;
    /// Quarantine reasons of every device, by device id (for the first snapshot).
    fn quarantines(&self) -> Result<Vec<(String, QuarantineReason)>, RegistryError>;
    /// Quarantine reasons of one device.
    fn quarantine_of(&self, device: &str) -> Result<Vec<QuarantineReason>, RegistryError>;
}

/// Certificates issued, revocations and CRL numbering.
pub trait CertificateStore: Send + Sync {
    /// Record an issued certificate.
    fn record_certificate(&self, cert: &CertRecord) -> Result<(), RegistryError>;
    /// Certificates of one subject, newest first.
    fn certificates_of(&self, subject: &str) -> Result<Vec<CertRecord>, RegistryError>;
    /// Every revoked serial.
    fn revoked_serials(&self) -> Result<Vec<String>, RegistryError>;
    /// Revoked certificates with time and reason, for CRLs.
    fn revoked_certificates(&self) -> Result<Vec<CertRecord>, RegistryError>;
    /// Every certificate that has not yet expired at `now` or expired after `since`, for
    /// the configuration audit.
    fn certificates_since(&self, since: i64) -> Result<Vec<CertRecord>, RegistryError>;
    /// The next CRL number (monotonic).
    fn next_crl_number(&self) -> Result<u64, RegistryError>;
}

/// One-time enrollment tokens (only their hashes are stored).
pub trait TokenStore: Send + Sync {
    /// Store a token for a device; replaces an unused one.
    fn create_token(
        &self,
        device: &str,
        grant: &TokenGrant,
        hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), RegistryError>;
    /// Whether a token with this hash could be used now (for `device`, when given), without
    /// using it: `Err(RegistryError::Token(why))` with the same reasons as `consume_token`.
    fn check_token(&self, device: Option<&str>, hash: &str, now: i64) -> Result<(), RegistryError>;
    /// Use a token: succeeds once, for that device, before it expires.
    fn consume_token(
        &self,
        device: &str,
        hash: &str,
        now: i64,
    ) -> Result<TokenGrant, RegistryError>;
}

/// Suppliers and the devices their bootstrap certificates enrolled.
pub trait SupplierStore: Send + Sync {
    /// Register a supplier. Conflict if the name exists.
    fn add_supplier(&self, s: &Supplier, now: i64) -> Result<(), RegistryError>;
    /// All suppliers.
    fn suppliers(&self) -> Result<Vec<Supplier>, RegistryError>;
    /// Record a bootstrap enrollment; Conflict if this hardware serial already enrolled and the
    /// supplier does not allow re-enrollment.
    fn record_bootstrap(
        &self,
        r: &BootstrapRecord,
        allow_reenroll: bool,
        now: i64,
    ) -> Result<(), RegistryError>;
    /// The first bootstrap record of a device (the supplier it is bound to), if it enrolled
    /// that way.
    fn bootstrap_of(&self, device_id: &str) -> Result<Option<BootstrapRecord>, RegistryError>;
}

/// The whole registry: every aggregate's store.
pub trait Registry:
    DeviceStore
    + CertificateStore
    + TokenStore
    + SupplierStore
    + InventoryStore
    + ObservationStore
    + OperatorStore
{
}

impl<
        T: DeviceStore
            + CertificateStore
            + TokenStore
            + SupplierStore
            + InventoryStore
            + ObservationStore
            + OperatorStore,
    > Registry for T
{
}

pub use crate::operators::{Operator, OperatorCredential, OperatorRole, OperatorStore};

pub use crate::observations::{ObservationRecord, ObservationStore, MAX_PER_DEVICE};

pub use crate::inventory::{
    AdvisoryRecord, Inventory, InventoryStore, Model, SbomRecord, SupplierInfo, VexRecord,
    WaiverRecord,
};

const SCHEMA_VERSION: i64 = 9;

/// The embedded SQLite registry.
pub struct SqliteRegistry {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRegistry").finish_non_exhaustive()
    }
}

impl SqliteRegistry {
    /// Open (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteRegistry, RegistryError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory registry (tests).
    pub fn open_in_memory() -> Result<SqliteRegistry, RegistryError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<SqliteRegistry, RegistryError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(RegistryError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS devices (
                     id TEXT PRIMARY KEY,
                     groups TEXT NOT NULL DEFAULT '',
                     created_at INTEGER NOT NULL,
                     revoked_at INTEGER
                 );
                 CREATE TABLE IF NOT EXISTS certificates (
                     serial TEXT PRIMARY KEY,
                     subject TEXT NOT NULL,
                     kind TEXT NOT NULL,
                     not_before INTEGER NOT NULL,
                     not_after INTEGER NOT NULL,
                     revoked_at INTEGER,
                     revoke_reason TEXT
                 );
                                  CREATE INDEX IF NOT EXISTS certificates_subject ON certificates(subject);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        if version < 2 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS tokens (
                     device_id TEXT PRIMARY KEY,
                     groups TEXT NOT NULL DEFAULT '',
                     hash TEXT NOT NULL,
                     created_at INTEGER NOT NULL,
                     expires_at INTEGER NOT NULL,
                     used_at INTEGER
                 );
                 CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
                                  PRAGMA user_version = 2;
                 COMMIT;",
            )?;
        }
        if version < 3 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS suppliers (
                     name TEXT PRIMARY KEY,
                     ca_pem TEXT NOT NULL,
                     groups TEXT NOT NULL DEFAULT '',
                     allow_reenroll INTEGER NOT NULL DEFAULT 0,
                     added_at INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS bootstrap_enrollments (
                     supplier TEXT NOT NULL,
                     hardware_serial TEXT NOT NULL,
                     device_id TEXT NOT NULL,
                     model TEXT,
                     enrolled_at INTEGER NOT NULL,
                     PRIMARY KEY (supplier, hardware_serial)
                 );
                 PRAGMA user_version = 3;
                 COMMIT;",
            )?;
        }
        if version < 4 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS quarantine (
                     device_id TEXT NOT NULL,
                     source TEXT NOT NULL,
                     reason TEXT NOT NULL,
                     by TEXT NOT NULL,
                     since INTEGER NOT NULL,
                     PRIMARY KEY (device_id, source)
                 );
                 ALTER TABLE tokens ADD COLUMN change_groups INTEGER NOT NULL DEFAULT 0;
                 CREATE INDEX IF NOT EXISTS bootstrap_device ON bootstrap_enrollments(device_id);
                 PRAGMA user_version = 4;
                 COMMIT;",
            )?;
        }
        if version < 5 {
            conn.execute_batch(inventory::SCHEMA_V5)?;
        }
        if version < 6 {
            conn.execute_batch(
                "BEGIN;
                 ALTER TABLE quarantine ADD COLUMN until INTEGER;
                 PRAGMA user_version = 6;
                 COMMIT;",
            )?;
        }
        if version < 7 {
            conn.execute_batch(
                "BEGIN;
                 ALTER TABLE certificates ADD COLUMN spki BLOB;
                 ALTER TABLE certificates ADD COLUMN issuer TEXT;
                 PRAGMA user_version = 7;
                 COMMIT;",
            )?;
        }
        if version < 8 {
            conn.execute_batch(operators::SCHEMA_V8)?;
        }
        if version < 9 {
            conn.execute_batch(
                "BEGIN;
                 ALTER TABLE devices ADD COLUMN last_seen_at INTEGER;
                 ALTER TABLE devices ADD COLUMN last_addr TEXT;
                 PRAGMA user_version = 9;
                 COMMIT;",
            )?;
        }
        // Created on every open (a new table, no data to migrate).
        conn.execute_batch(observations::SCHEMA)?;
        Ok(SqliteRegistry {
            conn: Mutex::new(conn),
        })
    }
}

fn join_groups(groups: &[String]) -> String {
    groups.join(",")
}

fn split_groups(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Maps `serial, subject, kind, not_before, not_after, revoked_at, revoke_reason, key`.
fn cert_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRecord> {
    let kind: String = r.get(2)?;
    Ok(CertRecord {
        serial: r.get(0)?,
        subject: r.get(1)?,
        kind: CertKind::parse(&kind),
        not_before: r.get(3)?,
        not_after: r.get(4)?,
        revoked_at: r.get(5)?,
        revoke_reason: r.get(6)?,
        key: r.get(7)?,
        spki: r.get(8)?,
        issuer: r.get(9)?,
    })
}

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    let groups: String = row.get(1)?;
    Ok(Device {
        id: row.get(0)?,
        groups: split_groups(&groups),
        created_at: row.get(2)?,
        revoked_at: row.get(3)?,
    })
}

fn quarantine_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineReason> {
    Ok(QuarantineReason {
        source: r.get(0)?,
        reason: r.get(1)?,
        by: r.get(2)?,
        since: r.get(3)?,
        until: r.get(4)?,
    })
}

impl DeviceStore for SqliteRegistry {
    fn create_device(&self, id: &str, groups: &[String], now: i64) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO devices (id, groups, created_at) VALUES (?1, ?2, ?3)",
            params![id, join_groups(groups), now],
        )?;
        if n == 0 {
            return Err(RegistryError::Conflict(format!("device {id}")));
        }
        Ok(())
    }

    fn reactivate_device(
        &self,
        id: &str,
        groups: &[String],
        now: i64,
    ) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let existing: Option<Option<i64>> = tx
            .query_row("SELECT revoked_at FROM devices WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        match existing {
            None => return Err(RegistryError::NotFound(format!("device {id}"))),
            Some(None) => return Err(RegistryError::Conflict(format!("device {id}"))),
            Some(Some(_)) => {
                tx.execute(
                    "UPDATE devices SET groups = ?2, revoked_at = NULL, created_at = ?3 WHERE id = ?1",
                    params![id, join_groups(groups), now],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn set_groups(&self, id: &str, groups: &[String]) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "UPDATE devices SET groups = ?2 WHERE id = ?1",
            params![id, join_groups(groups)],
        )?;
        if n == 0 {
            return Err(RegistryError::NotFound(format!("device {id}")));
        }
        Ok(())
    }

    fn record_seen(&self, id: &str, at: i64, addr: Option<&str>) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        conn.execute(
            "UPDATE devices SET last_seen_at = MAX(COALESCE(last_seen_at, 0), ?2),
                                last_addr = COALESCE(?3, last_addr)
             WHERE id = ?1",
            params![id, at, addr],
        )?;
        Ok(())
    }

    fn last_seen(&self, id: &str) -> Result<Option<LastSeen>, RegistryError> {
        let conn = self.conn.lock();
        let row: Option<(Option<i64>, Option<String>)> = conn
            .query_row(
                "SELECT last_seen_at, last_addr FROM devices WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(at, addr)| at.map(|at| LastSeen { at, addr })))
    }

    fn device(&self, id: &str) -> Result<Option<Device>, RegistryError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                "SELECT id, groups, created_at, revoked_at FROM devices WHERE id = ?1",
                [id],
                device_from_row,
            )
            .optional()?)
    }

    fn devices(&self) -> Result<Vec<Device>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare("SELECT id, groups, created_at, revoked_at FROM devices ORDER BY id")?;
        let rows = stmt.query_map([], device_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_device(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM devices WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(RegistryError::NotFound(format!("device {id}")));
        }
        let serials: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT serial FROM certificates WHERE subject = ?1 AND kind = 'device' AND revoked_at IS NULL",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "UPDATE certificates SET revoked_at = ?2, revoke_reason = ?3
             WHERE subject = ?1 AND kind = 'device' AND revoked_at IS NULL",
            params![id, now, reason],
        )?;
        for sql in [
            "DELETE FROM devices WHERE id = ?1",
            "DELETE FROM quarantine WHERE device_id = ?1",
            "DELETE FROM tokens WHERE device_id = ?1",
            "DELETE FROM inventory WHERE device_id = ?1",
            "DELETE FROM compliance_seen WHERE device_id = ?1",
            "DELETE FROM observations WHERE device = ?1",
        ] {
            tx.execute(sql, [id])?;
        }
        tx.commit()?;
        Ok(serials)
    }

    fn revoke_device(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id, now],
        )?;
        if n == 0 {
            return Err(RegistryError::NotFound(format!("device {id}")));
        }
        let serials: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT serial FROM certificates WHERE subject = ?1 AND kind = 'device' AND revoked_at IS NULL",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "UPDATE certificates SET revoked_at = ?2, revoke_reason = ?3
             WHERE subject = ?1 AND kind = 'device' AND revoked_at IS NULL",
            params![id, now, reason],
        )?;
        tx.commit()?;
        Ok(serials)
    }

    fn revoke_devices(
        &self,
        ids: &[String],
        reason: &str,
        now: i64,
    ) -> Result<Vec<Vec<String>>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(ids.len());
        {
            let mut revoke = tx.prepare(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            )?;
            let mut select = tx.prepare(
                "SELECT serial FROM certificates WHERE subject = ?1 AND kind = 'device' AND revoked_at IS NULL",
            )?;
            let mut revoke_certs = tx.prepare(
                "UPDATE certificates SET revoked_at = ?2, revoke_reason = ?3
                 WHERE subject = ?1 AND kind = 'device' AND revoked_at IS NULL",
            )?;
            for id in ids {
                if revoke.execute(params![id, now])? == 0 {
                    // Dropping the transaction rolls every earlier revocation back.
                    return Err(RegistryError::NotFound(format!("device {id}")));
                }
                let serials: Vec<String> = select
                    .query_map([id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                revoke_certs.execute(params![id, now, reason])?;
                out.push(serials);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn create_devices_with_certificates(
        &self,
        devices: &[(String, Vec<String>)],
        certs: &[CertRecord],
        now: i64,
    ) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut add = tx.prepare(
                "INSERT OR IGNORE INTO devices (id, groups, created_at) VALUES (?1, ?2, ?3)",
            )?;
            for (id, groups) in devices {
                if add.execute(params![id, join_groups(groups), now])? == 0 {
                    return Err(RegistryError::Conflict(format!("device {id}")));
                }
            }
            let mut record = tx.prepare(
                "INSERT INTO certificates (serial, subject, kind, not_before, not_after, revoked_at, revoke_reason, key, spki, issuer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for c in certs {
                record.execute(params![
                    c.serial,
                    c.subject,
                    c.kind.as_str(),
                    c.not_before,
                    c.not_after,
                    c.revoked_at,
                    c.revoke_reason,
                    c.key,
                    c.spki,
                    c.issuer
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn quarantine(&self, device: &str, r: &QuarantineReason) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let exists: Option<String> = tx
            .query_row("SELECT id FROM devices WHERE id = ?1", [device], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Err(RegistryError::NotFound(format!("device {device}")));
        }
        tx.execute(
            "INSERT INTO quarantine (device_id, source, reason, by, since, until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(device_id, source) DO UPDATE SET reason = excluded.reason, by = excluded.by,
                 until = excluded.until",
            params![device, r.source, r.reason, r.by, r.since, r.until],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn release_expired(
        &self,
        device: &str,
        source: &str,
        now: i64,
    ) -> Result<Option<QuarantineReason>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let due = tx
            .query_row(
                "SELECT source, reason, by, since, until FROM quarantine
                 WHERE device_id = ?1 AND source = ?2 AND until IS NOT NULL AND until <= ?3",
                params![device, source, now],
                quarantine_from_row,
            )
            .optional()?;
        if due.is_some() {
            tx.execute(
                "DELETE FROM quarantine WHERE device_id = ?1 AND source = ?2",
                params![device, source],
            )?;
        }
        tx.commit()?;
        Ok(due)
    }

    fn release(
        &self,
        device: &str,
        source: Option<&str>,
    ) -> Result<Vec<QuarantineReason>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let removed: Vec<QuarantineReason> = {
            let mut stmt = tx.prepare(
                "SELECT source, reason, by, since, until FROM quarantine
                 WHERE device_id = ?1 AND (?2 IS NULL OR source = ?2) ORDER BY since, source",
            )?;
            let rows = stmt.query_map(params![device, source], quarantine_from_row)?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "DELETE FROM quarantine WHERE device_id = ?1 AND (?2 IS NULL OR source = ?2)",
            params![device, source],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    fn apply_quarantines(&self, changes: &[QuarantineChange]) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut set = tx.prepare(
                "INSERT INTO quarantine (device_id, source, reason, by, since, until)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM devices WHERE id = ?1)
                 ON CONFLICT(device_id, source) DO UPDATE SET reason = excluded.reason, by = excluded.by,
                     until = excluded.until",
            )?;
            let mut remove =
                tx.prepare("DELETE FROM quarantine WHERE device_id = ?1 AND source = ?2")?;
            for c in changes {
                for r in &c.set {
                    set.execute(params![
                        c.device, r.source, r.reason, r.by, r.since, r.until
                    ])?;
                }
                for source in &c.remove {
                    remove.execute(params![c.device, source])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn quarantines(&self) -> Result<Vec<(String, QuarantineReason)>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT source, reason, by, since, until, device_id FROM quarantine ORDER BY device_id, since, source",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(5)?, quarantine_from_row(r)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn quarantine_of(&self, device: &str) -> Result<Vec<QuarantineReason>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT source, reason, by, since, until FROM quarantine WHERE device_id = ?1 ORDER BY since, source",
        )?;
        let rows = stmt.query_map([device], quarantine_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl CertificateStore for SqliteRegistry {
    fn record_certificate(&self, c: &CertRecord) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO certificates (serial, subject, kind, not_before, not_after, revoked_at, revoke_reason, key, spki, issuer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![c.serial, c.subject, c.kind.as_str(), c.not_before, c.not_after, c.revoked_at, c.revoke_reason, c.key, c.spki, c.issuer],
        )?;
        Ok(())
    }

    fn certificates_of(&self, subject: &str) -> Result<Vec<CertRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT serial, subject, kind, not_before, not_after, revoked_at, revoke_reason, key, spki, issuer
             FROM certificates WHERE subject = ?1 ORDER BY not_before DESC, serial",
        )?;
        let rows = stmt.query_map([subject], cert_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoked_serials(&self) -> Result<Vec<String>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare("SELECT serial FROM certificates WHERE revoked_at IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoked_certificates(&self) -> Result<Vec<CertRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT serial, subject, kind, not_before, not_after, revoked_at, revoke_reason, key, spki, issuer
             FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at, serial",
        )?;
        let rows = stmt.query_map([], cert_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn certificates_since(&self, since: i64) -> Result<Vec<CertRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT serial, subject, kind, not_before, not_after, revoked_at, revoke_reason, key, spki, issuer
             FROM certificates WHERE not_after >= ?1 ORDER BY subject, not_before DESC, serial",
        )?;
        let rows = stmt.query_map([since], cert_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn next_crl_number(&self) -> Result<u64, RegistryError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('crl', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
            [],
        )?;
        let v: i64 = conn.query_row("SELECT value FROM counters WHERE name = 'crl'", [], |r| {
            r.get(0)
        })?;
        Ok(u64::try_from(v).unwrap_or(0))
    }
}

/// Whether a stored token (its hash, expiry and use) can be used now by a caller whose token
/// hashes to `hash`.
fn token_usable(
    stored: &str,
    hash: &str,
    expires_at: i64,
    used_at: Option<i64>,
    now: i64,
) -> Result<(), RegistryError> {
    // Same length hex strings; the hash, not the token, is compared, in constant time.
    if stored.len() != hash.len()
        || !stored
            .bytes()
            .zip(hash.bytes())
            .fold(true, |ok, (a, b)| ok & (a == b))
    {
        return Err(RegistryError::Token("wrong token"));
    }
    if used_at.is_some() {
        return Err(RegistryError::Token("token already used"));
    }
    if expires_at <= now {
        return Err(RegistryError::Token("token expired"));
    }
    Ok(())
}

impl TokenStore for SqliteRegistry {
    fn create_token(
        &self,
        device: &str,
        grant: &TokenGrant,
        hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO tokens (device_id, groups, hash, created_at, expires_at, change_groups) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(device_id) DO UPDATE SET groups = excluded.groups, hash = excluded.hash,
                 created_at = excluded.created_at, expires_at = excluded.expires_at, used_at = NULL,
                 change_groups = excluded.change_groups",
            params![device, join_groups(&grant.groups), hash, now, expires_at, grant.change_groups],
        )?;
        Ok(())
    }

    fn check_token(&self, device: Option<&str>, hash: &str, now: i64) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let row: Option<(String, i64, Option<i64>)> = match device {
            Some(d) => conn
                .query_row(
                    "SELECT hash, expires_at, used_at FROM tokens WHERE device_id = ?1",
                    [d],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?,
            None => conn
                .query_row(
                    "SELECT hash, expires_at, used_at FROM tokens WHERE hash = ?1",
                    [hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?,
        };
        let Some((stored, expires_at, used_at)) = row else {
            return Err(RegistryError::Token(if device.is_some() {
                "no token was issued for this device"
            } else {
                "wrong token"
            }));
        };
        token_usable(&stored, hash, expires_at, used_at, now)
    }

    fn consume_token(
        &self,
        device: &str,
        hash: &str,
        now: i64,
    ) -> Result<TokenGrant, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let row: Option<(String, String, i64, Option<i64>, bool)> = tx
            .query_row(
                "SELECT groups, hash, expires_at, used_at, change_groups FROM tokens WHERE device_id = ?1",
                [device],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((groups, stored, expires_at, used_at, change_groups)) = row else {
            return Err(RegistryError::Token("no token was issued for this device"));
        };
        token_usable(&stored, hash, expires_at, used_at, now)?;
        tx.execute(
            "UPDATE tokens SET used_at = ?2 WHERE device_id = ?1",
            params![device, now],
        )?;
        tx.commit()?;
        Ok(TokenGrant {
            groups: split_groups(&groups),
            change_groups,
        })
    }
}

impl SupplierStore for SqliteRegistry {
    fn add_supplier(&self, s: &Supplier, now: i64) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO suppliers (name, ca_pem, groups, allow_reenroll, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.name, s.ca_pem, join_groups(&s.groups), s.allow_reenroll, now],
        )?;
        if n == 0 {
            return Err(RegistryError::Conflict(format!("supplier {}", s.name)));
        }
        Ok(())
    }

    fn suppliers(&self) -> Result<Vec<Supplier>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT name, ca_pem, groups, allow_reenroll FROM suppliers ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            let groups: String = r.get(2)?;
            Ok(Supplier {
                name: r.get(0)?,
                ca_pem: r.get(1)?,
                groups: split_groups(&groups),
                allow_reenroll: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn record_bootstrap(
        &self,
        r: &BootstrapRecord,
        allow_reenroll: bool,
        now: i64,
    ) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let sql = if allow_reenroll {
            "INSERT OR REPLACE INTO bootstrap_enrollments (supplier, hardware_serial, device_id, model, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)"
        } else {
            "INSERT OR IGNORE INTO bootstrap_enrollments (supplier, hardware_serial, device_id, model, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        let n = conn.execute(
            sql,
            params![r.supplier, r.hardware_serial, r.device_id, r.model, now],
        )?;
        if n == 0 {
            return Err(RegistryError::Conflict(format!(
                "hardware serial {} of supplier {} already enrolled",
                r.hardware_serial, r.supplier
            )));
        }
        Ok(())
    }

    fn bootstrap_of(&self, device_id: &str) -> Result<Option<BootstrapRecord>, RegistryError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                "SELECT supplier, hardware_serial, model, device_id FROM bootstrap_enrollments WHERE device_id = ?1 ORDER BY enrolled_at, rowid LIMIT 1",
                [device_id],
                |r| Ok(BootstrapRecord { supplier: r.get(0)?, hardware_serial: r.get(1)?, model: r.get(2)?, device_id: r.get(3)? }),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str, subject: &str) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            subject: subject.into(),
            kind: CertKind::Device,
            not_before: 1,
            not_after: 2,
            revoked_at: None,
            revoke_reason: None,
            key: None,
            spki: None,
            issuer: None,
        }
    }

    #[test]
    fn revocation_covers_every_certificate_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("tollgate-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.db");
        let _ = std::fs::remove_file(&path);
        {
            let reg = SqliteRegistry::open(&path).unwrap();
            reg.create_device("pump-7", &["sensors".into()], 10)
                .unwrap();
            reg.record_certificate(&cert("aa", "pump-7")).unwrap();
            reg.record_certificate(&cert("bb", "pump-7")).unwrap();
            reg.record_certificate(&cert("cc", "other")).unwrap();
            let mut revoked = reg.revoke_device("pump-7", "key compromise", 20).unwrap();
            revoked.sort();
            assert_eq!(revoked, vec!["aa", "bb"]);
        }
        let reg = SqliteRegistry::open(&path).unwrap();
        let mut serials = reg.revoked_serials().unwrap();
        serials.sort();
        assert_eq!(serials, vec!["aa", "bb"]);
        assert_eq!(reg.device("pump-7").unwrap().unwrap().revoked_at, Some(20));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bulk_revocation_is_all_or_nothing_and_says_which_serials_each_device_lost() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        for (id, serial) in [("a", "01"), ("b", "02"), ("c", "03")] {
            reg.create_device(id, &[], 10).unwrap();
            reg.record_certificate(&cert(serial, id)).unwrap();
        }
        // One unknown id: nothing is revoked.
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            reg.revoke_devices(&ids(&["a", "nope", "b"]), "r", 20),
            Err(RegistryError::NotFound(m)) if m.contains("nope")
        ));
        assert!(reg.revoked_serials().unwrap().is_empty());
        assert_eq!(reg.device("a").unwrap().unwrap().revoked_at, None);
        // Every id exists: each loses its own serials, once.
        let out = reg.revoke_devices(&ids(&["b", "a", "b"]), "r", 20).unwrap();
        assert_eq!(out, vec![vec!["02".to_string()], vec!["01".into()], vec![]]);
        assert_eq!(reg.device("a").unwrap().unwrap().revoked_at, Some(20));
        assert_eq!(reg.device("c").unwrap().unwrap().revoked_at, None);
        let mut serials = reg.revoked_serials().unwrap();
        serials.sort();
        assert_eq!(serials, vec!["01", "02"]);
    }

    #[test]
    fn bulk_registration_is_all_or_nothing() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        reg.create_device("taken", &[], 1).unwrap();
        let devices = vec![
            ("n1".to_string(), vec!["g".to_string()]),
            ("taken".to_string(), vec![]),
        ];
        assert!(matches!(
            reg.create_devices_with_certificates(&devices, &[cert("01", "n1")], 5),
            Err(RegistryError::Conflict(m)) if m.contains("taken")
        ));
        assert_eq!(reg.device("n1").unwrap(), None);
        assert!(reg.certificates_of("n1").unwrap().is_empty());
        reg.create_devices_with_certificates(&devices[..1], &[cert("01", "n1")], 5)
            .unwrap();
        assert_eq!(reg.device("n1").unwrap().unwrap().groups, vec!["g"]);
        assert_eq!(reg.certificates_of("n1").unwrap()[0].serial, "01");
    }

    #[test]
    fn a_deleted_device_s_certificates_stay_revoked_and_its_id_is_free_again() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        reg.create_device("pump-7", &["sensors".into()], 10)
            .unwrap();
        reg.record_certificate(&cert("aa", "pump-7")).unwrap();
        reg.quarantine(
            "pump-7",
            &QuarantineReason {
                source: "operator".into(),
                reason: "r".into(),
                by: "t".into(),
                since: 1,
                until: None,
            },
        )
        .unwrap();
        assert_eq!(
            reg.delete_device("pump-7", "decommissioned", 20).unwrap(),
            vec!["aa".to_string()]
        );
        assert_eq!(reg.device("pump-7").unwrap(), None);
        assert!(reg.quarantine_of("pump-7").unwrap().is_empty());
        let certs = reg.certificates_of("pump-7").unwrap();
        assert_eq!(certs[0].revoked_at, Some(20));
        assert_eq!(reg.revoked_serials().unwrap(), vec!["aa".to_string()]);
        assert!(matches!(
            reg.delete_device("pump-7", "again", 21),
            Err(RegistryError::NotFound(_))
        ));
        reg.create_device("pump-7", &[], 30).unwrap();
        assert!(reg.device("pump-7").unwrap().unwrap().revoked_at.is_none());
    }

    #[test]
    fn tokens_work_once_for_their_device_until_they_expire() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        let grant = |groups: Vec<String>| TokenGrant {
            groups,
            change_groups: false,
        };
        reg.create_token("d1", &grant(vec!["g".into()]), "h1", 100, 10)
            .unwrap();
        assert!(reg.check_token(None, "h1", 20).is_ok());
        assert!(reg.check_token(Some("d1"), "h1", 20).is_ok());
        let why = |r: Result<(), RegistryError>| match r {
            Err(RegistryError::Token(w)) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(reg.check_token(Some("d2"), "h1", 20)),
            "no token was issued for this device"
        );
        assert_eq!(why(reg.check_token(Some("d1"), "nope", 20)), "wrong token");
        assert_eq!(why(reg.check_token(None, "nope", 20)), "wrong token");
        assert_eq!(why(reg.check_token(None, "h1", 100)), "token expired");
        assert!(matches!(
            reg.consume_token("d2", "h1", 20),
            Err(RegistryError::Token(_))
        ));
        assert!(matches!(
            reg.consume_token("d1", "nope", 20),
            Err(RegistryError::Token("wrong token"))
        ));
        assert_eq!(
            reg.consume_token("d1", "h1", 20).unwrap(),
            grant(vec!["g".to_string()])
        );
        assert!(matches!(
            reg.consume_token("d1", "h1", 21),
            Err(RegistryError::Token("token already used"))
        ));
        assert!(matches!(
            reg.check_token(None, "h1", 21),
            Err(RegistryError::Token("token already used"))
        ));
        reg.create_token("d1", &grant(vec![]), "h2", 100, 30)
            .unwrap();
        assert!(matches!(
            reg.consume_token("d1", "h2", 100),
            Err(RegistryError::Token("token expired"))
        ));
        assert_eq!(
            reg.next_crl_number().unwrap() + 1,
            reg.next_crl_number().unwrap()
        );
    }

    #[test]
    fn devices_are_created_once_and_only_reactivated_explicitly() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        reg.create_device("a", &[], 1).unwrap();
        assert!(matches!(
            reg.create_device("a", &[], 2),
            Err(RegistryError::Conflict(_))
        ));
        assert!(matches!(
            reg.reactivate_device("a", &[], 2),
            Err(RegistryError::Conflict(_))
        ));
        reg.revoke_device("a", "x", 3).unwrap();
        // A revoked id is still taken: creating it again is a conflict, not a reactivation.
        assert!(matches!(
            reg.create_device("a", &[], 4),
            Err(RegistryError::Conflict(_))
        ));
        reg.reactivate_device("a", &["g".into()], 4).unwrap();
        let d = reg.device("a").unwrap().unwrap();
        assert_eq!((d.groups, d.revoked_at), (vec!["g".to_string()], None));
        assert!(matches!(
            reg.revoke_device("nope", "x", 1),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn quarantine_reasons_accumulate_per_source_and_release_by_source() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        reg.create_device("d", &[], 1).unwrap();
        let reason = |source: &str| QuarantineReason {
            source: source.into(),
            reason: format!("because {source}"),
            by: "test".into(),
            since: 5,
            until: None,
        };
        reg.quarantine("d", &reason("operator")).unwrap();
        reg.quarantine("d", &reason("compliance:no-high-vulns"))
            .unwrap();
        reg.quarantine("d", &reason("operator")).unwrap();
        assert_eq!(reg.quarantine_of("d").unwrap().len(), 2);
        assert!(matches!(
            reg.quarantine("ghost", &reason("operator")),
            Err(RegistryError::NotFound(_))
        ));
        let removed = reg.release("d", Some("operator")).unwrap();
        assert_eq!(removed, vec![reason("operator")]);
        assert_eq!(
            reg.quarantines().unwrap(),
            vec![("d".to_string(), reason("compliance:no-high-vulns"))]
        );
        assert_eq!(reg.release("d", None).unwrap().len(), 1);
        assert!(reg.quarantine_of("d").unwrap().is_empty());
    }
}
