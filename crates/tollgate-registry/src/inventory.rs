//! The inventory aggregate: what suppliers ship (models, their firmware and SBOMs), what each
//! device runs, the advisory database, VEX statements, compliance waivers and the first-seen
//! times that grace periods count from.
//!
//! Documents (parsed SBOMs, advisory records, VEX statements) are stored as the JSON the
//! compliance crate reads back, so the registry never interprets them; it only keeps them
//! together and in order. Bulk writes (an advisory batch, a VEX document) are one transaction:
//! all of it or none.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use crate::{RegistryError, SqliteRegistry};

/// What the registry knows of a supplier beyond its manufacturing CA.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SupplierInfo {
    /// Supplier name.
    pub name: String,
    /// Where vulnerabilities are reported (a URL or an address).
    pub disclosure_contact: Option<String>,
    /// Unix seconds at which the supplier's support for its products ends.
    pub support_end: Option<i64>,
}

/// A device model as a supplier sells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Supplier name.
    pub supplier: String,
    /// Model name, as the supplier's manufacturing certificates spell it.
    pub name: String,
    /// `semver`, or `ordered` (the order of `firmware_order`).
    pub scheme: String,
    /// Firmware versions oldest first, for the `ordered` scheme.
    pub firmware_order: Vec<String>,
    /// The lowest firmware the operator accepts.
    pub min_firmware: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a device is and runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    /// Device id.
    pub device: String,
    /// Supplier name.
    pub supplier: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Hardware serial.
    pub hardware_serial: Option<String>,
    /// The firmware it runs.
    pub firmware: Option<String>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of the last firmware report from the device itself.
    pub reported_at: Option<i64>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

/// An imported SBOM, for one (supplier, model, firmware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomRecord {
    /// Supplier name.
    pub supplier: String,
    /// Model name.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
    /// Format and version, e.g. `CycloneDX 1.5`.
    pub format: String,
    /// `sha256:<hex>` of the file as imported.
    pub document_sha256: String,
    /// The parsed document, JSON.
    pub parsed: String,
    /// Unix seconds.
    pub imported_at: i64,
    /// Who imported it.
    pub imported_by: String,
}

/// One OSV advisory record as imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryRecord {
    /// OSV id.
    pub id: String,
    /// Its `modified` time (RFC 3339).
    pub modified: String,
    /// The record, JSON bytes.
    pub record: Vec<u8>,
}

/// One VEX statement with the scope it was imported for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VexRecord {
    /// Import order (assigned by the registry).
    pub seq: i64,
    /// The scope, JSON (model, supplier, firmware range).
    pub scope: String,
    /// The statement, JSON.
    pub statement: String,
    /// Unix seconds.
    pub imported_at: i64,
    /// Who imported it.
    pub imported_by: String,
}

/// An exception to one compliance rule for a device or a model, until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaiverRecord {
    /// Id (assigned by the registry).
    pub id: i64,
    /// Rule id.
    pub rule: String,
    /// The device it covers.
    pub device: Option<String>,
    /// The model it covers (every device of that model).
    pub model: Option<String>,
    /// Why.
    pub reason: String,
    /// Who granted it.
    pub author: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Inventory, SBOMs, advisories, VEX, waivers and grace-period clocks.
pub trait InventoryStore: Send + Sync {
    /// Set a supplier's disclosure contact and support end. NotFound if no such supplier.
    fn set_supplier_info(&self, info: &SupplierInfo) -> Result<(), RegistryError>;
    /// Every supplier's information (suppliers without any have defaults).
    fn supplier_infos(&self) -> Result<Vec<SupplierInfo>, RegistryError>;
    /// Add or replace a model. NotFound if its supplier does not exist.
    fn put_model(&self, model: &Model) -> Result<(), RegistryError>;
    /// Every model, by supplier and name.
    fn models(&self) -> Result<Vec<Model>, RegistryError>;
    /// Add or replace a device's inventory. NotFound if no such device.
    fn set_inventory(&self, inv: &Inventory) -> Result<(), RegistryError>;
    /// One device's inventory.
    fn inventory(&self, device: &str) -> Result<Option<Inventory>, RegistryError>;
    /// Every device's inventory.
    fn inventories(&self) -> Result<Vec<Inventory>, RegistryError>;
    /// Add or replace the SBOM of a (supplier, model, firmware).
    fn put_sbom(&self, sbom: &SbomRecord) -> Result<(), RegistryError>;
    /// Every SBOM.
    fn sboms(&self) -> Result<Vec<SbomRecord>, RegistryError>;
    /// Store advisory records (replacing those with the same id), in one transaction.
    fn put_advisories(&self, records: &[AdvisoryRecord]) -> Result<(), RegistryError>;
    /// Every advisory record.
    fn advisories(&self) -> Result<Vec<AdvisoryRecord>, RegistryError>;
    /// Append VEX statements in one transaction; returns their sequence numbers.
    fn add_vex(&self, records: &[VexRecord]) -> Result<Vec<i64>, RegistryError>;
    /// Every VEX statement, in import order.
    fn vex(&self) -> Result<Vec<VexRecord>, RegistryError>;
    /// Remove VEX statements by sequence number, in one transaction.
    fn remove_vex(&self, seqs: &[i64]) -> Result<(), RegistryError>;
    /// Add a waiver; returns its id.
    fn add_waiver(&self, waiver: &WaiverRecord) -> Result<i64, RegistryError>;
    /// Remove a waiver; whether it existed.
    fn remove_waiver(&self, id: i64) -> Result<bool, RegistryError>;
    /// Every waiver, expired ones included, by id.
    fn waivers(&self) -> Result<Vec<WaiverRecord>, RegistryError>;
    /// When each violation (device, key) was first seen.
    fn first_seen(&self) -> Result<Vec<(String, String, i64)>, RegistryError>;
    /// Replace the first-seen times of several devices' violations, in one transaction.
    fn set_first_seen(&self, changes: &[(String, Vec<(String, i64)>)])
        -> Result<(), RegistryError>;
}

pub(crate) const SCHEMA_V5: &str = "BEGIN;
     ALTER TABLE suppliers ADD COLUMN disclosure_contact TEXT;
     ALTER TABLE suppliers ADD COLUMN support_end INTEGER;
     ALTER TABLE certificates ADD COLUMN key TEXT;
     CREATE TABLE IF NOT EXISTS models (
         supplier TEXT NOT NULL,
         name TEXT NOT NULL,
         scheme TEXT NOT NULL,
         firmware_order TEXT NOT NULL DEFAULT '[]',
         min_firmware TEXT,
         created_at INTEGER NOT NULL,
         PRIMARY KEY (supplier, name)
     );
     CREATE TABLE IF NOT EXISTS inventory (
         device_id TEXT PRIMARY KEY,
         supplier TEXT,
         model TEXT,
         hardware_serial TEXT,
         firmware TEXT,
         labels TEXT NOT NULL DEFAULT '{}',
         reported_at INTEGER,
         updated_at INTEGER NOT NULL
     );
     CREATE TABLE IF NOT EXISTS sboms (
         supplier TEXT NOT NULL,
         model TEXT NOT NULL,
         firmware TEXT NOT NULL,
         format TEXT NOT NULL,
         document_sha256 TEXT NOT NULL,
         parsed TEXT NOT NULL,
         imported_at INTEGER NOT NULL,
         imported_by TEXT NOT NULL,
         PRIMARY KEY (supplier, model, firmware)
     );
     CREATE TABLE IF NOT EXISTS advisories (
         id TEXT PRIMARY KEY,
         modified TEXT NOT NULL,
         record BLOB NOT NULL
     );
     CREATE TABLE IF NOT EXISTS vex (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         scope TEXT NOT NULL,
         statement TEXT NOT NULL,
         imported_at INTEGER NOT NULL,
         imported_by TEXT NOT NULL
     );
     CREATE TABLE IF NOT EXISTS waivers (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         rule TEXT NOT NULL,
         device TEXT,
         model TEXT,
         reason TEXT NOT NULL,
         author TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL
     );
     CREATE TABLE IF NOT EXISTS compliance_seen (
         device_id TEXT NOT NULL,
         key TEXT NOT NULL,
         since INTEGER NOT NULL,
         PRIMARY KEY (device_id, key)
     );
     PRAGMA user_version = 5;
     COMMIT;";

fn labels_to_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

/// Labels as stored; a value that does not read back is empty (it was written by us).
fn labels_from_json(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn order_to_json(order: &[String]) -> String {
    serde_json::to_string(order).unwrap_or_else(|_| "[]".into())
}

fn order_from_json(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn inventory_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Inventory> {
    let labels: String = r.get(5)?;
    Ok(Inventory {
        device: r.get(0)?,
        supplier: r.get(1)?,
        model: r.get(2)?,
        hardware_serial: r.get(3)?,
        firmware: r.get(4)?,
        labels: labels_from_json(&labels),
        reported_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

const INVENTORY_COLUMNS: &str =
    "device_id, supplier, model, hardware_serial, firmware, labels, reported_at, updated_at";

impl InventoryStore for SqliteRegistry {
    fn set_supplier_info(&self, info: &SupplierInfo) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "UPDATE suppliers SET disclosure_contact = ?2, support_end = ?3 WHERE name = ?1",
            params![info.name, info.disclosure_contact, info.support_end],
        )?;
        if n == 0 {
            return Err(RegistryError::NotFound(format!("supplier {}", info.name)));
        }
        Ok(())
    }

    fn supplier_infos(&self) -> Result<Vec<SupplierInfo>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT name, disclosure_contact, support_end FROM suppliers ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(SupplierInfo {
                name: r.get(0)?,
                disclosure_contact: r.get(1)?,
                support_end: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_model(&self, m: &Model) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let exists: Option<String> = conn
            .query_row(
                "SELECT name FROM suppliers WHERE name = ?1",
                [&m.supplier],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Err(RegistryError::NotFound(format!("supplier {}", m.supplier)));
        }
        conn.execute(
            "INSERT INTO models (supplier, name, scheme, firmware_order, min_firmware, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (supplier, name) DO UPDATE SET scheme = excluded.scheme,
                 firmware_order = excluded.firmware_order, min_firmware = excluded.min_firmware",
            params![
                m.supplier,
                m.name,
                m.scheme,
                order_to_json(&m.firmware_order),
                m.min_firmware,
                m.created_at
            ],
        )?;
        Ok(())
    }

    fn models(&self) -> Result<Vec<Model>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT supplier, name, scheme, firmware_order, min_firmware, created_at FROM models ORDER BY supplier, name",
        )?;
        let rows = stmt.query_map([], |r| {
            let order: String = r.get(3)?;
            Ok(Model {
                supplier: r.get(0)?,
                name: r.get(1)?,
                scheme: r.get(2)?,
                firmware_order: order_from_json(&order),
                min_firmware: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_inventory(&self, inv: &Inventory) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        let exists: Option<String> = conn
            .query_row("SELECT id FROM devices WHERE id = ?1", [&inv.device], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Err(RegistryError::NotFound(format!("device {}", inv.device)));
        }
        conn.execute(
            &format!("INSERT OR REPLACE INTO inventory ({INVENTORY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                inv.device,
                inv.supplier,
                inv.model,
                inv.hardware_serial,
                inv.firmware,
                labels_to_json(&inv.labels),
                inv.reported_at,
                inv.updated_at
            ],
        )?;
        Ok(())
    }

    fn inventory(&self, device: &str) -> Result<Option<Inventory>, RegistryError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {INVENTORY_COLUMNS} FROM inventory WHERE device_id = ?1"),
                [device],
                inventory_from_row,
            )
            .optional()?)
    }

    fn inventories(&self) -> Result<Vec<Inventory>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {INVENTORY_COLUMNS} FROM inventory ORDER BY device_id"
        ))?;
        let rows = stmt.query_map([], inventory_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_sbom(&self, s: &SbomRecord) -> Result<(), RegistryError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT OR REPLACE INTO sboms (supplier, model, firmware, format, document_sha256, parsed, imported_at, imported_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![s.supplier, s.model, s.firmware, s.format, s.document_sha256, s.parsed, s.imported_at, s.imported_by],
        )?;
        Ok(())
    }

    fn sboms(&self) -> Result<Vec<SbomRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT supplier, model, firmware, format, document_sha256, parsed, imported_at, imported_by
             FROM sboms ORDER BY supplier, model, firmware",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SbomRecord {
                supplier: r.get(0)?,
                model: r.get(1)?,
                firmware: r.get(2)?,
                format: r.get(3)?,
                document_sha256: r.get(4)?,
                parsed: r.get(5)?,
                imported_at: r.get(6)?,
                imported_by: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_advisories(&self, records: &[AdvisoryRecord]) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT OR REPLACE INTO advisories (id, modified, record) VALUES (?1, ?2, ?3)",
            )?;
            for r in records {
                stmt.execute(params![r.id, r.modified, r.record])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn advisories(&self) -> Result<Vec<AdvisoryRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT id, modified, record FROM advisories ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(AdvisoryRecord {
                id: r.get(0)?,
                modified: r.get(1)?,
                record: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_vex(&self, records: &[VexRecord]) -> Result<Vec<i64>, RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut seqs = Vec::with_capacity(records.len());
        {
            let mut stmt = tx.prepare(
                "INSERT INTO vex (scope, statement, imported_at, imported_by) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for r in records {
                stmt.execute(params![r.scope, r.statement, r.imported_at, r.imported_by])?;
                seqs.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    fn vex(&self) -> Result<Vec<VexRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, scope, statement, imported_at, imported_by FROM vex ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(VexRecord {
                seq: r.get(0)?,
                scope: r.get(1)?,
                statement: r.get(2)?,
                imported_at: r.get(3)?,
                imported_by: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn remove_vex(&self, seqs: &[i64]) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare("DELETE FROM vex WHERE seq = ?1")?;
            for seq in seqs {
                stmt.execute([seq])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn add_waiver(&self, w: &WaiverRecord) -> Result<i64, RegistryError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO waivers (rule, device, model, reason, author, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                w.rule,
                w.device,
                w.model,
                w.reason,
                w.author,
                w.created_at,
                w.expires_at
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn remove_waiver(&self, id: i64) -> Result<bool, RegistryError> {
        let conn = self.conn.lock();
        Ok(conn.execute("DELETE FROM waivers WHERE id = ?1", [id])? > 0)
    }

    fn waivers(&self) -> Result<Vec<WaiverRecord>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT id, rule, device, model, reason, author, created_at, expires_at FROM waivers ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(WaiverRecord {
                id: r.get(0)?,
                rule: r.get(1)?,
                device: r.get(2)?,
                model: r.get(3)?,
                reason: r.get(4)?,
                author: r.get(5)?,
                created_at: r.get(6)?,
                expires_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn first_seen(&self) -> Result<Vec<(String, String, i64)>, RegistryError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT device_id, key, since FROM compliance_seen")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_first_seen(
        &self,
        changes: &[(String, Vec<(String, i64)>)],
    ) -> Result<(), RegistryError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut clear = tx.prepare("DELETE FROM compliance_seen WHERE device_id = ?1")?;
            let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO compliance_seen (device_id, key, since) VALUES (?1, ?2, ?3)",
            )?;
            for (device, seen) in changes {
                clear.execute([device])?;
                for (key, since) in seen {
                    insert.execute(params![device, key, since])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceStore, Supplier, SupplierStore};

    #[test]
    fn inventory_round_trips_and_bulk_writes_are_all_or_nothing() {
        let reg = SqliteRegistry::open_in_memory().expect("open");
        reg.add_supplier(
            &Supplier {
                name: "acme".into(),
                ca_pem: String::new(),
                groups: vec![],
                allow_reenroll: false,
            },
            1,
        )
        .expect("supplier");
        reg.set_supplier_info(&SupplierInfo {
            name: "acme".into(),
            disclosure_contact: Some("security@acme.example".into()),
            support_end: Some(2_000_000_000),
        })
        .expect("info");
        assert!(matches!(
            reg.set_supplier_info(&SupplierInfo {
                name: "nobody".into(),
                ..Default::default()
            }),
            Err(RegistryError::NotFound(_))
        ));
        let model = Model {
            supplier: "acme".into(),
            name: "scanner-x".into(),
            scheme: "ordered".into(),
            firmware_order: vec!["r1".into(), "r2 \"quoted\"".into()],
            min_firmware: Some("r1".into()),
            created_at: 2,
        };
        reg.put_model(&model).expect("model");
        assert_eq!(reg.models().expect("models"), vec![model]);
        reg.create_device("scanner-1", &[], 3).expect("device");
        let mut inv = Inventory {
            device: "scanner-1".into(),
            supplier: Some("acme".into()),
            model: Some("scanner-x".into()),
            firmware: Some("1.2.0".into()),
            updated_at: 4,
            ..Default::default()
        };
        inv.labels.insert("site".into(), "dock \"7\"".into());
        reg.set_inventory(&inv).expect("inventory");
        assert_eq!(reg.inventory("scanner-1").expect("read"), Some(inv));
        let ids = reg
            .add_vex(&[
                VexRecord {
                    seq: 0,
                    scope: "{}".into(),
                    statement: "{}".into(),
                    imported_at: 5,
                    imported_by: "t".into(),
                },
                VexRecord {
                    seq: 0,
                    scope: "{}".into(),
                    statement: "{}".into(),
                    imported_at: 5,
                    imported_by: "t".into(),
                },
            ])
            .expect("vex");
        assert_eq!(ids.len(), 2);
        assert!(ids[0] < ids[1]);
        reg.set_first_seen(&[("scanner-1".into(), vec![("no-high-vulns/CVE-1".into(), 9)])])
            .expect("seen");
        assert_eq!(reg.first_seen().expect("seen").len(), 1);
        reg.set_first_seen(&[("scanner-1".into(), vec![])])
            .expect("cleared");
        assert!(reg.first_seen().expect("seen").is_empty());
    }
}
