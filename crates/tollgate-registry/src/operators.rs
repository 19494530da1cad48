//! Operators of the admin API: who they are, their role, and when (and by whom) they were
//! created and revoked. Their certificates are ordinary rows of `certificates` (kind `admin`,
//! subject the operator's name), so they are revoked, listed and put in CRLs the way device
//! certificates are.
//!
//! This module stores; it decides nothing but the one invariant it can keep atomically: a
//! change that would leave no active admin is refused inside the same transaction
//! ([`RegistryError::LastAdmin`]), so two concurrent revocations cannot both pass.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::{RegistryError, SqliteRegistry};

/// What an operator may do on the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorRole {
    /// Read and change everything.
    Admin,
    /// Read only.
    Viewer,
}

impl OperatorRole {
    /// `admin` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Admin => "admin",
            OperatorRole::Viewer => "viewer",
        }
    }

    /// From `admin` or `viewer`.
    pub fn parse(s: &str) -> Option<OperatorRole> {
        match s {
            "admin" => Some(OperatorRole::Admin),
            "viewer" => Some(OperatorRole::Viewer),
            _ => None,
        }
    }
}

/// A registered operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Name (the device-id alphabet); the name certificates carry.
    pub name: String,
    /// Role.
    pub role: OperatorRole,
    /// Unix seconds.
    pub created_at: i64,
    /// Who created it (an operator, `init`, or `migration` for the admin of an older directory).
    pub created_by: String,
    /// Unix seconds of revocation.
    pub revoked_at: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Why.
    pub revoke_reason: Option<String>,
}

/// What the registry says about one operator certificate presented to the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorCredential {
    /// The operator's role.
    pub role: OperatorRole,
    /// Whether the operator is revoked.
    pub operator_revoked: bool,
    /// Whether this serial is recorded as one of the operator's certificates.
    pub serial_known: bool,
    /// Whether this serial is revoked.
    pub serial_revoked: bool,
}

/// Operators and their roles.
pub trait OperatorStore: Send + Sync {
    /// Register an operator. Conflict if the name exists (a revoked name stays taken).
    fn create_operator(
        &self,
        name: &str,
        role: OperatorRole,
        by: &str,
        now: i64,
    ) -> Result<(), RegistryError>;
    /// One operator.
    fn operator(&self, name: &str) -> Result<Option<Operator>, RegistryError>;
    /// Every operator, by name.
    fn operators(&self) -> Result<Vec<Operator>, RegistryError>;
    /// Change an active operator's role. NotFound if absent, Revoked if revoked; LastAdmin if it would
    /// leave no active admin.
    fn set_operator_role(&self, name: &str, role: OperatorRole) -> Result<(), RegistryError>;
    /// Revoke an operator and every unrevoked certificate it holds; returns the serials.
    /// NotFound if absent, Revoked if already revoked, LastAdmin if it is the last active
    /// admin.
    fn revoke_operator(
        &self,
        name: &str,
        reason: &str,
        by: &str,
        now: i64,
    ) -> Result<Vec<String>, RegistryError>;
    /// Revoke some of an operator's certificates (its old ones after a renewal); returns the
    /// serials that were not revoked before.
    fn revoke_operator_certificates(
        &self,
        name: &str,
        serials: &[String],
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, RegistryError>;
    /// The operator `name` and certificate `serial` in one read (the admin API asks at every
    /// request); `None` if there is no such operator.
    fn operator_credential(
        &self,
        name: &str,
        serial: &str,
    ) -> Result<Option<OperatorCredential>, RegistryError>;
}

/// Schema 8: operators. The admin certificates of an older data directory become operators
/// with the admin role, so existing credentials keep working.
pub(crate) const SCHEMA_V8: &str = "BEGIN;
     CREATE TABLE IF NOT EXISTS operators (
         name TEXT PRIMARY KEY,
         role TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         created_by TEXT NOT NULL,
         revoked_at INTEGER,
         revoked_by TEXT,
         revoke_reason TEXT
     );
     INSERT OR IGNORE INTO operators (name, role, created_at, created_by)
         SELECT subject, 'admin', MIN(not_before), 'migration'
         FROM certificates WHERE kind = 'admin' GROUP BY subject;
     PRAGMA user_version = 8;
     COMMIT;";

const COLUMNS: &str = "name, role, created_at, created_by, revoked_at, revoked_by, revoke_reason";

fn operator_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Operator> {
    let role: String = r.get(1)?;
    Ok(Operator {
        name: r.get(0)?,
        // A role this binary does not know reads as the lesser one.
        role: OperatorRole::parse(&role).unwrap_or(OperatorRole::Viewer),
        created_at: r.get(2)?,
        created_by: r.get(3)?,
        revoked_at: r.get(4)?,
        revoked_by: r.get(5)?,
        revoke_reason: r.get(6)?,
    })
}

/// Active admins other than `name`.
fn other_admins(tx: &Transaction<'_>, name: &str) -> Result<i64, RegistryError> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM operators WHERE role = 'admin' AND revoked_at IS NULL AND name != ?1",
        [name],
        |r| r.get(0),
    )?)
}

fn active_operator(tx: &Transaction<'_>, name: &str) -> Result<Operator, RegistryError> {
    let op = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM operators WHERE name = ?1"),
            [name],
            operator_from_row,
        )
        .optional()?
        .ok_or_else(|| RegistryError::NotFound(format!("operator {name}")))?;
    if op.revoked_at.is_some() {
        return Err(RegistryError::Revoked(format!("operator {name}")));
    }
    Ok(op)
}

impl OperatorStore for SqliteRegistry {
    fn create_operator(
        &self,
        name: &str,
        role: OperatorRole,
        by: &str,
        now: i64,
    ) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO operators (name, role, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), now, by],
        )?;
        if n == 0 {
            return Err(RegistryError::Conflict(format!("operator {name}")));
        }
        Ok(())
    }

    fn operator(&self, name: &str) -> Result<Option<Operator>, RegistryError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM operators WHERE name = ?1"),
                [name],
                operator_from_row,
            )
            .optional()?)
    }

    fn operators(&self) -> Result<Vec<Operator>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM operators ORDER BY name"))?;
        let rows = stmt.query_map([], operator_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_operator_role(&self, name: &str, role: OperatorRole) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let op = active_operator(&tx, name)?;
        if op.role == OperatorRole::Admin
            && role != OperatorRole::Admin
            && other_admins(&tx, name)? == 0
        {
            return Err(RegistryError::LastAdmin(name.to_owned()));
        }
        tx.execute(
            "UPDATE operators SET role = ?2 WHERE name = ?1",
            params![name, role.as_str()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn revoke_operator(
        &self,
        name: &str,
        reason: &str,
        by: &str,
        now: i64,
    ) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let op = active_operator(&tx, name)?;
        if op.role == OperatorRole::Admin && other_admins(&tx, name)? == 0 {
            return Err(RegistryError::LastAdmin(name.to_owned()));
        }
        tx.execute(
            "UPDATE operators SET revoked_at = ?2, revoked_by = ?3, revoke_reason = ?4 WHERE name = ?1",
            params![name, now, by, reason],
        )?;
        let serials: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT serial FROM certificates WHERE subject = ?1 AND kind = 'admin' AND revoked_at IS NULL",
            )?;
            let rows = stmt.query_map([name], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "UPDATE certificates SET revoked_at = ?2, revoke_reason = ?3
             WHERE subject = ?1 AND kind = 'admin' AND revoked_at IS NULL",
            params![name, now, reason],
        )?;
        tx.commit()?;
        Ok(serials)
    }

    fn revoke_operator_certificates(
        &self,
        name: &str,
        serials: &[String],
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut revoked = Vec::new();
        {
            let mut stmt = tx.prepare(
                "UPDATE certificates SET revoked_at = ?3, revoke_reason = ?4
                 WHERE serial = ?1 AND subject = ?2 AND kind = 'admin' AND revoked_at IS NULL",
            )?;
            for s in serials {
                if stmt.execute(params![s, name, now, reason])? > 0 {
                    revoked.push(s.clone());
                }
            }
        }
        tx.commit()?;
        Ok(revoked)
    }

    fn operator_credential(
        &self,
        name: &str,
        serial: &str,
    ) -> Result<Option<OperatorCredential>, RegistryError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                "SELECT o.role, o.revoked_at IS NOT NULL, c.serial IS NOT NULL, c.revoked_at IS NOT NULL
                 FROM operators o
                 LEFT JOIN certificates c ON c.serial = ?2 AND c.subject = o.name AND c.kind = 'admin'
                 WHERE o.name = ?1",
                params![name, serial],
                |r| {
                    let role: String = r.get(0)?;
                    Ok(OperatorCredential {
                        role: OperatorRole::parse(&role).unwrap_or(OperatorRole::Viewer),
                        operator_revoked: r.get(1)?,
                        serial_known: r.get(2)?,
                        serial_revoked: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertKind, CertRecord, CertificateStore};

    fn cert(serial: &str, subject: &str) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            subject: subject.into(),
            kind: CertKind::Admin,
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
    fn the_last_active_admin_can_be_neither_revoked_nor_demoted() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        reg.create_operator("admin", OperatorRole::Admin, "init", 1)
            .unwrap();
        reg.create_operator("vera", OperatorRole::Viewer, "admin", 2)
            .unwrap();
        assert!(matches!(
            reg.revoke_operator("admin", "x", "admin", 3),
            Err(RegistryError::LastAdmin(_))
        ));
        assert!(matches!(
            reg.set_operator_role("admin", OperatorRole::Viewer),
            Err(RegistryError::LastAdmin(_))
        ));
        // A second admin makes the first one revocable, and then the second is the last.
        reg.set_operator_role("vera", OperatorRole::Admin).unwrap();
        reg.revoke_operator("admin", "left", "vera", 4).unwrap();
        assert!(matches!(
            reg.revoke_operator("vera", "x", "vera", 5),
            Err(RegistryError::LastAdmin(_))
        ));
        let admin = reg.operator("admin").unwrap().unwrap();
        assert_eq!(
            (admin.revoked_at, admin.revoked_by.as_deref()),
            (Some(4), Some("vera"))
        );
        // Revoked: no role change, no second revocation, and the name stays taken.
        assert!(matches!(
            reg.set_operator_role("admin", OperatorRole::Admin),
            Err(RegistryError::Revoked(_))
        ));
        assert!(matches!(
            reg.revoke_operator("admin", "again", "vera", 5),
            Err(RegistryError::Revoked(_))
        ));
        assert!(matches!(
            reg.create_operator("admin", OperatorRole::Admin, "vera", 6),
            Err(RegistryError::Conflict(_))
        ));
        assert!(matches!(
            reg.revoke_operator("nobody", "x", "vera", 6),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn revoking_an_operator_revokes_its_certificates_and_its_credential_says_so() {
        let reg = SqliteRegistry::open_in_memory().unwrap();
        reg.create_operator("admin", OperatorRole::Admin, "init", 1)
            .unwrap();
        reg.create_operator("bob", OperatorRole::Admin, "admin", 1)
            .unwrap();
        reg.record_certificate(&cert("b1", "bob")).unwrap();
        reg.record_certificate(&cert("b2", "bob")).unwrap();
        let cred = reg.operator_credential("bob", "b1").unwrap().unwrap();
        assert_eq!(
            cred,
            OperatorCredential {
                role: OperatorRole::Admin,
                operator_revoked: false,
                serial_known: true,
                serial_revoked: false
            }
        );
        // Another operator's serial is not bob's.
        reg.record_certificate(&cert("a1", "admin")).unwrap();
        assert!(
            !reg.operator_credential("bob", "a1")
                .unwrap()
                .unwrap()
                .serial_known
        );
        assert_eq!(reg.operator_credential("carol", "b1").unwrap(), None);
        // Renewal's --revoke-old: only the serials named, only once.
        assert_eq!(
            reg.revoke_operator_certificates("bob", &["b1".into(), "a1".into()], "renewed", 2)
                .unwrap(),
            vec!["b1".to_string()]
        );
        assert!(
            reg.operator_credential("bob", "b1")
                .unwrap()
                .unwrap()
                .serial_revoked
        );
        let mut serials = reg.revoke_operator("bob", "gone", "admin", 3).unwrap();
        serials.sort();
        assert_eq!(serials, vec!["b2".to_string()]);
        let cred = reg.operator_credential("bob", "b2").unwrap().unwrap();
        assert!(cred.operator_revoked && cred.serial_revoked);
        assert!(reg.revoked_serials().unwrap().contains(&"b2".to_string()));
    }

    #[test]
    fn an_older_directory_s_admin_certificate_becomes_an_admin_operator() {
        let dir = std::env::temp_dir().join(format!("tollgate-ops-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.db");
        let _ = std::fs::remove_file(&path);
        {
            // A schema-7 database, as `tollgate init` of the previous release left it (no
            // operators, no last-seen columns).
            let reg = SqliteRegistry::open(&path).unwrap();
            reg.record_certificate(&cert("a1", "admin")).unwrap();
            let conn = reg.conn.lock();
            conn.execute_batch(
                "DROP TABLE operators;
                 ALTER TABLE devices DROP COLUMN last_seen_at;
                 ALTER TABLE devices DROP COLUMN last_addr;
                 PRAGMA user_version = 7;",
            )
            .unwrap();
        }
        let reg = SqliteRegistry::open(&path).unwrap();
        let ops = reg.operators().unwrap();
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(
            (
                ops[0].name.as_str(),
                ops[0].role,
                ops[0].created_by.as_str()
            ),
            ("admin", OperatorRole::Admin, "migration")
        );
        assert!(
            reg.operator_credential("admin", "a1")
                .unwrap()
                .unwrap()
                .serial_known
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
