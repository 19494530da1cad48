//! Inventory and compliance enforcement: the control plane's side of supply-chain gating.
//!
//! Owns the in-memory compliance state (the profile in force, the advisory index, parsed
//! SBOMs and their assessments, VEX statements with their scopes, waivers, grace clocks and
//! each device's last verdict), keeps it in step with the registry, and turns verdicts into
//! quarantine reasons (`compliance:<rule>`) through the control plane's one quarantine path,
//! so a device is confined live and released by itself once nothing holds it.
//!
//! Evaluation is incremental: an input change re-evaluates only the devices it can affect (an
//! advisory import: the SBOMs naming the packages it touched; a firmware report: that device).
//! SBOM assessments are cached per (supplier, model, firmware) and shared by every device
//! running it. All of this runs on the control plane's blocking threads, never on the
//! per-message path. It must not parse documents itself (that is `tollgate-compliance`) or
//! format HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tollgate_compliance::evaluate::{
    self, Assessment, CertFacts, DeviceFacts, FirmwareScheme, ModelFacts, SupplierFacts, Verdict,
};
use tollgate_compliance::osv::{Advisory, Index};
use tollgate_compliance::profile::Profile;
use tollgate_compliance::sbom::Sbom;
use tollgate_compliance::vex::{self, Statement};
use tollgate_compliance::{purl, ComplianceError};
use tollgate_events::EventKind;
use tollgate_registry::{
    AdvisoryRecord, Inventory, Model, QuarantineChange, QuarantineReason, RegistryError,
    SbomRecord, SupplierInfo, VexRecord, WaiverRecord,
};

use crate::{check_name, now, Control, ControlError};

/// The quarantine source prefix of compliance rules.
pub const SOURCE_PREFIX: &str = "compliance:";

/// The author of compliance's own quarantine reasons.
const BY: &str = "compliance";

/// An SBOM's identity: (supplier, model, firmware).
type SbomKey = (String, String, String);

/// Firmware versions a VEX statement covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FirmwareScope {
    /// Every firmware of the model, present and future: the decision carries over updates.
    All,
    /// Exactly this firmware.
    Exact {
        /// The version.
        version: String,
    },
    /// From `from` (inclusive) up to `before` (exclusive), either open.
    Range {
        /// Lowest covered.
        from: Option<String>,
        /// First not covered.
        before: Option<String>,
    },
}

/// What a VEX statement was imported for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VexScope {
    /// Supplier (any with the model name when absent).
    pub supplier: Option<String>,
    /// Model.
    pub model: String,
    /// Firmware versions.
    pub firmware: FirmwareScope,
    /// Imported from the SBOM of this exact firmware (replaced when that SBOM is re-imported).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embedded: bool,
}

impl VexScope {
    fn covers(&self, key: &SbomKey, scheme: &FirmwareScheme) -> bool {
        let (supplier, model, fw) = key;
        if self.model != *model || self.supplier.as_ref().is_some_and(|s| s != supplier) {
            return false;
        }
        match &self.firmware {
            FirmwareScope::All => true,
            FirmwareScope::Exact { version } => version == fw,
            FirmwareScope::Range { from, before } => {
                let ge = from.as_ref().is_none_or(|f| {
                    scheme
                        .compare(fw, f)
                        .is_some_and(|o| o != std::cmp::Ordering::Less)
                });
                let lt = before.as_ref().is_none_or(|b| {
                    scheme
                        .compare(fw, b)
                        .is_some_and(|o| o == std::cmp::Ordering::Less)
                });
                ge && lt
            }
        }
    }
}

/// The in-memory compliance state.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) profile: Arc<Profile>,
    pub(crate) profile_stamp: Option<(std::time::SystemTime, u64)>,
    pub(crate) profile_error: Option<String>,
    /// Whether a profile (or the absence of a file) was ever loaded: until then verdicts are
    /// not applied, so a profile broken at start releases nothing.
    profile_good: bool,
    /// Firmware ordering per (supplier, model), kept with the models.
    schemes: HashMap<(String, String), FirmwareScheme>,
    index: Index,
    digest: String,
    sboms: HashMap<SbomKey, Arc<Sbom>>,
    sbom_meta: HashMap<SbomKey, SbomMeta>,
    vex: Vec<(i64, VexScope, Statement)>,
    assessed: HashMap<SbomKey, Arc<Assessment>>,
    waivers: Vec<WaiverRecord>,
    first_seen: HashMap<String, HashMap<String, i64>>,
    verdicts: HashMap<String, Verdict>,
    /// Unix seconds of each device's next self-change (grace, waiver, support end).
    deadlines: HashMap<String, i64>,
    /// Waivers whose expiry has been announced.
    expired_waivers: HashSet<i64>,
}

#[derive(Debug, Clone)]
struct SbomMeta {
    format: String,
    sha256: String,
    imported_at: i64,
    imported_by: String,
}

// ---- views --------------------------------------------------------------------------------

/// A model, for the API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelView {
    /// Supplier.
    pub supplier: String,
    /// Name.
    pub name: String,
    /// `semver` or `ordered`.
    pub scheme: String,
    /// Firmware versions oldest first (`ordered` scheme).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firmware_order: Vec<String>,
    /// Lowest accepted firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_firmware: Option<String>,
    /// Firmware versions with an SBOM.
    #[serde(default)]
    pub sboms: Vec<String>,
    /// Devices of this model.
    #[serde(default)]
    pub devices: usize,
}

/// A device's inventory, for the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InventoryView {
    /// Supplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    /// Model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Hardware serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_serial: Option<String>,
    /// Running firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds of the device's last own report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<i64>,
    /// The SBOM of its model and firmware, when imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomView>,
}

/// An SBOM, for the API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SbomView {
    /// Supplier.
    pub supplier: String,
    /// Model.
    pub model: String,
    /// Firmware.
    pub firmware: String,
    /// Format.
    pub format: String,
    /// `sha256:` of the file.
    pub document: String,
    /// Components.
    pub components: usize,
    /// Vulnerabilities that count after VEX.
    pub vulnerabilities: usize,
    /// Indeterminate components.
    pub indeterminate: usize,
    /// Missing minimum elements.
    pub missing_elements: Vec<String>,
    /// Unix seconds.
    pub imported_at: i64,
    /// Who imported it.
    pub imported_by: String,
}

/// The outcome of an SBOM import.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SbomImported {
    /// The SBOM as stored.
    pub sbom: SbomView,
    /// CISA minimum elements missing (empty when complete).
    pub missing_elements: Vec<tollgate_compliance::sbom::Gap>,
    /// VEX statements embedded in it, imported with it.
    pub vex_statements: usize,
    /// Devices re-evaluated.
    pub reevaluated: usize,
}

/// The outcome of an advisory import batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdvisoriesImported {
    /// Records added.
    pub added: usize,
    /// Records replaced by newer ones.
    pub updated: usize,
    /// Records not newer than those stored.
    pub unchanged: usize,
    /// Records in the database now.
    pub total: usize,
    /// Content hash of the database.
    pub database: String,
    /// Devices re-evaluated.
    pub reevaluated: usize,
}

/// The advisory database, for the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdvisoryView {
    /// Id.
    pub id: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Modified (RFC 3339).
    pub modified: String,
    /// Withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    /// Summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<tollgate_compliance::Severity>,
    /// Packages it names (`Ecosystem/name`).
    pub packages: Vec<String>,
}

/// Who an advisory hits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Affected {
    /// The advisory.
    pub advisory: AdvisoryView,
    /// The advisory database it was matched against.
    pub database: String,
    /// Suppliers with an affected model.
    pub suppliers: Vec<String>,
    /// Affected (supplier, model, firmware, component, fixed) SBOMs.
    pub models: Vec<AffectedModel>,
    /// Devices running an affected firmware.
    pub devices: Vec<String>,
}

/// One affected firmware of a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AffectedModel {
    /// Supplier.
    pub supplier: String,
    /// Model.
    pub model: String,
    /// Firmware.
    pub firmware: String,
    /// The affected component.
    pub component: String,
    /// Fix version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// VEX status, when a statement applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vex: Option<vex::Status>,
}

/// One device's compliance, for reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceCompliance {
    /// Device id.
    pub device: String,
    /// `compliant`, `noncompliant` (a report-only rule fails) or `quarantined` (a quarantine
    /// rule fails).
    pub state: String,
    /// Supplier, model and firmware.
    pub inventory: InventoryView,
    /// Rules failing now.
    pub failing_rules: Vec<String>,
    /// Every finding (in force, in grace, waived).
    pub findings: Vec<serde_json::Value>,
    /// Vulnerabilities of its firmware, VEX decisions attached.
    pub vulnerabilities: Vec<serde_json::Value>,
    /// When the verdict changes by itself (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_change: Option<i64>,
}

/// A change an evaluation makes (or would make, in a dry run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transition {
    /// Device id.
    pub device: String,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
    /// Rules failing after.
    pub failing_rules: Vec<String>,
    /// Rules that quarantine after.
    pub quarantining: Vec<String>,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// Whether nothing was applied.
    pub dry_run: bool,
    /// Devices evaluated.
    pub devices: usize,
    /// Devices failing a rule.
    pub noncompliant: usize,
    /// Devices a quarantine rule holds.
    pub quarantined: usize,
    /// Devices whose state changes.
    pub changes: Vec<Transition>,
    /// The advisory database.
    pub database: String,
    /// Rules in the profile evaluated.
    pub rules: usize,
    /// Milliseconds taken.
    pub elapsed_ms: u64,
}

/// A waiver, for the API.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaiverView {
    /// Id.
    pub id: i64,
    /// Rule id.
    pub rule: String,
    /// Device covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Model covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Why.
    pub reason: String,
    /// Who granted it.
    pub author: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Whether it has expired.
    pub expired: bool,
}

/// What a device may say on its inventory topic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    firmware: String,
    #[serde(default)]
    model: Option<String>,
}

fn state_name(v: Option<&Verdict>) -> &'static str {
    match v {
        None => "unevaluated",
        Some(v) if !v.quarantining().is_empty() => "quarantined",
        Some(v) if !v.compliant() => "noncompliant",
        Some(_) => "compliant",
    }
}

fn scheme_of(m: &Model) -> FirmwareScheme {
    if m.scheme == "ordered" {
        FirmwareScheme::Ordered(m.firmware_order.clone())
    } else {
        FirmwareScheme::Semver
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::from("sha256:");
    for b in d.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn bad(e: ComplianceError) -> ControlError {
    ControlError::InvalidDocument(e.to_string())
}

/// Facts gathered for a fleet evaluation (read once from the registry).
struct Fleet {
    devices: Vec<tollgate_registry::Device>,
    inventory: HashMap<String, Inventory>,
    suppliers: HashMap<String, SupplierFacts>,
    models: HashMap<(String, String), Model>,
    certs: HashMap<String, CertFacts>,
    quarantine: HashMap<String, Vec<QuarantineReason>>,
}

impl Control {
    // ---- loading ------------------------------------------------------------------------

    /// Load the compliance state from the registry and the profile file (at start).
    pub(crate) fn load_compliance(&self) -> Result<(), ControlError> {
        let mut st = self.compliance.lock();
        for r in self.registry.advisories()? {
            match Advisory::parse(&r.record, &r.id) {
                Ok(a) => {
                    st.index.insert(a, &r.record);
                }
                Err(e) => tracing::error!("stored advisory {} does not parse: {e}", r.id),
            }
        }
        st.digest = st.index.digest();
        for s in self.registry.sboms()? {
            match serde_json::from_str::<Sbom>(&s.parsed) {
                Ok(sbom) => {
                    let key = (s.supplier.clone(), s.model.clone(), s.firmware.clone());
                    st.sboms.insert(key.clone(), Arc::new(sbom));
                    st.sbom_meta.insert(
                        key,
                        SbomMeta {
                            format: s.format,
                            sha256: s.document_sha256,
                            imported_at: s.imported_at,
                            imported_by: s.imported_by,
                        },
                    );
                }
                Err(e) => tracing::error!(
                    "stored SBOM of {} {} {} does not read back: {e}",
                    s.supplier,
                    s.model,
                    s.firmware
                ),
            }
        }
        for v in self.registry.vex()? {
            match (
                serde_json::from_str::<VexScope>(&v.scope),
                serde_json::from_str::<Statement>(&v.statement),
            ) {
                (Ok(scope), Ok(stmt)) => st.vex.push((v.seq, scope, stmt)),
                _ => tracing::error!("stored VEX statement {} does not read back", v.seq),
            }
        }
        st.waivers = self.registry.waivers()?;
        st.schemes = self
            .registry
            .models()?
            .iter()
            .map(|m| ((m.supplier.clone(), m.name.clone()), scheme_of(m)))
            .collect();
        for (device, key, since) in self.registry.first_seen()? {
            st.first_seen.entry(device).or_default().insert(key, since);
        }
        drop(st);
        if let Err(e) = self.reload_compliance() {
            tracing::error!("compliance profile not loaded: {e}");
        }
        Ok(())
    }

    /// Load the compliance profile. A missing file is an empty profile (nothing is required);
    /// a broken one is refused and the profile in force stays.
    pub fn reload_compliance(&self) -> Result<usize, ControlError> {
        let file = &self.cfg.compliance_file;
        let source = file.display().to_string();
        let stamp = crate::policy_stamp(file);
        // (profile, its text to keep as the last good one; None for "no file")
        let result: Result<(Profile, Option<String>), String> = match std::fs::read(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Profile::default(), None)),
            Err(e) => Err(format!("{source}: {e}")),
            Ok(bytes) if bytes.len() > tollgate_compliance::profile::MAX_PROFILE_BYTES => {
                Err(format!(
                    "{source}: {} bytes, over the limit of {}",
                    bytes.len(),
                    tollgate_compliance::profile::MAX_PROFILE_BYTES
                ))
            }
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|e| format!("{source}: not UTF-8: {e}"))
                .and_then(|t| match Profile::parse(&t, &source) {
                    Ok(p) => Ok((p, Some(t))),
                    Err(e) => Err(e.to_string()),
                }),
        };
        let last_good = self.cfg.data.join("run").join("compliance.last-good.toml");
        // Written ahead: a profile that cannot be recorded is not put in force (the file is
        // looked at again at the next tick).
        if let Ok((p, _)) = &result {
            self.write_ahead(
                "reload_compliance_profile",
                &source,
                "file",
                &format!("{} rules", p.rules.len()),
            )?;
        }
        let mut st = self.compliance.lock();
        st.profile_stamp = stamp;
        match result {
            Ok((p, text)) => {
                let rules = p.rules.len();
                st.profile = Arc::new(p);
                st.profile_error = None;
                st.profile_good = true;
                drop(st);
                // Kept so that a profile broken while the server was down does not leave it
                // with no rule at the next start.
                let kept = match &text {
                    Some(t) => std::fs::create_dir_all(self.cfg.data.join("run"))
                        .and_then(|()| crate::files::write_file(&last_good, t.as_bytes(), false)),
                    None => match std::fs::remove_file(&last_good) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    },
                };
                if let Err(e) = kept {
                    tracing::warn!("keeping the last good compliance profile: {e}");
                }
                self.events
                    .emit(EventKind::ComplianceProfileReloaded { source, rules });
                Ok(rules)
            }
            Err(error) => {
                st.profile_error = Some(error.clone());
                if !st.profile_good {
                    // At start: the profile in force when the server last ran.
                    let kept = std::fs::read_to_string(&last_good)
                        .ok()
                        .and_then(|t| Profile::parse(&t, &last_good.display().to_string()).ok());
                    match kept {
                        Some(p) => {
                            tracing::warn!(
                                rules = p.rules.len(),
                                "the compliance profile is broken; the last good one stays in force"
                            );
                            st.profile = Arc::new(p);
                            st.profile_good = true;
                        }
                        None => tracing::error!(
                            "the compliance profile is broken and no earlier one is known: verdicts are not applied until it is fixed"
                        ),
                    }
                }
                drop(st);
                self.events.emit(EventKind::ComplianceProfileRejected {
                    source,
                    error: error.clone(),
                });
                Err(ControlError::ProfileRejected(error))
            }
        }
    }

    /// Reload the profile if its file changed, and re-evaluate the fleet with it.
    pub fn reload_compliance_if_changed(&self) {
        let stamp = crate::policy_stamp(&self.cfg.compliance_file);
        if stamp == self.compliance.lock().profile_stamp {
            return;
        }
        match self.reload_compliance() {
            Ok(rules) => {
                tracing::info!(rules, "compliance profile reloaded");
                if let Err(e) = self.evaluate_fleet(None, "profile_change", None) {
                    tracing::error!("evaluating compliance after a profile change: {e}");
                }
            }
            Err(e) => tracing::error!("compliance profile refused, the previous one stays:\n{e}"),
        }
    }

    // ---- inventory ----------------------------------------------------------------------

    /// Set a supplier's disclosure contact and support end.
    pub fn set_supplier_info(
        &self,
        name: &str,
        disclosure_contact: Option<String>,
        support_end: Option<i64>,
        by: &str,
    ) -> Result<(), ControlError> {
        self.write_ahead(
            "set_supplier_info",
            name,
            by,
            &format!("disclosure {disclosure_contact:?}, support until {support_end:?}"),
        )?;
        self.registry
            .set_supplier_info(&SupplierInfo {
                name: name.to_owned(),
                disclosure_contact,
                support_end,
            })
            .map_err(|e| match e {
                RegistryError::NotFound(_) => ControlError::UnknownSupplier(name.to_owned()),
                other => other.into(),
            })?;
        tracing::info!(supplier = name, by, "supplier information updated");
        self.evaluate_fleet(None, "supplier_change", None)?;
        Ok(())
    }

    /// Suppliers' disclosure contacts and support ends.
    pub fn supplier_infos(&self) -> Result<HashMap<String, SupplierInfo>, ControlError> {
        Ok(self
            .registry
            .supplier_infos()?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect())
    }

    /// Add or replace a model.
    pub fn put_model(&self, m: &ModelView, by: &str) -> Result<ModelView, ControlError> {
        check_name("model name", &m.name)?;
        let scheme = match m.scheme.as_str() {
            "" | "semver" => "semver",
            "ordered" => "ordered",
            other => {
                return Err(ControlError::InvalidRequest(format!(
                    "firmware scheme {other:?}: expected \"semver\" or \"ordered\""
                )))
            }
        };
        if scheme == "ordered" && m.firmware_order.is_empty() {
            return Err(ControlError::InvalidRequest(
                "the \"ordered\" scheme needs firmware_order (oldest first)".into(),
            ));
        }
        let model = Model {
            supplier: m.supplier.clone(),
            name: m.name.clone(),
            scheme: scheme.to_owned(),
            firmware_order: m.firmware_order.clone(),
            min_firmware: m.min_firmware.clone(),
            created_at: now(),
        };
        if let (Some(min), FirmwareScheme::Semver) = (&model.min_firmware, scheme_of(&model)) {
            tollgate_compliance::version::parse("SemVer", min).map_err(bad)?;
        }
        if let (Some(min), FirmwareScheme::Ordered(order)) =
            (&model.min_firmware, scheme_of(&model))
        {
            if !order.contains(min) {
                return Err(ControlError::InvalidRequest(format!(
                    "min_firmware {min:?} is not in firmware_order"
                )));
            }
        }
        self.write_ahead(
            "put_model",
            &m.name,
            by,
            &format!("supplier {:?}, scheme {scheme}", m.supplier),
        )?;
        self.registry.put_model(&model).map_err(|e| match e {
            RegistryError::NotFound(_) => ControlError::UnknownSupplier(m.supplier.clone()),
            other => other.into(),
        })?;
        // VEX firmware ranges are read with the model's scheme: its assessments are stale.
        {
            let mut st = self.compliance.lock();
            st.schemes.insert(
                (model.supplier.clone(), model.name.clone()),
                scheme_of(&model),
            );
            st.assessed
                .retain(|k, _| !(k.0 == m.supplier && k.1 == m.name));
        }
        tracing::info!(supplier = %m.supplier, model = %m.name, by, "model recorded");
        self.evaluate_fleet(None, "model_change", None)?;
        Ok(self
            .models()?
            .into_iter()
            .find(|v| v.supplier == m.supplier && v.name == m.name)
            .unwrap_or_else(|| m.clone()))
    }

    /// Every model, with its SBOMs and device count.
    pub fn models(&self) -> Result<Vec<ModelView>, ControlError> {
        let inv = self.registry.inventories()?;
        let st = self.compliance.lock();
        Ok(self
            .registry
            .models()?
            .into_iter()
            .map(|m| {
                let mut sboms: Vec<String> = st
                    .sboms
                    .keys()
                    .filter(|(s, n, _)| *s == m.supplier && *n == m.name)
                    .map(|(_, _, f)| f.clone())
                    .collect();
                sboms.sort();
                ModelView {
                    devices: inv
                        .iter()
                        .filter(|i| {
                            i.supplier.as_deref() == Some(&m.supplier)
                                && i.model.as_deref() == Some(&m.name)
                        })
                        .count(),
                    supplier: m.supplier,
                    name: m.name,
                    scheme: m.scheme,
                    firmware_order: m.firmware_order,
                    min_firmware: m.min_firmware,
                    sboms,
                }
            })
            .collect())
    }

    /// A device's inventory.
    pub fn inventory(&self, device: &str) -> Result<InventoryView, ControlError> {
        let inv = self.registry.inventory(device)?.unwrap_or_default();
        let st = self.compliance.lock();
        let sbom = match (&inv.supplier, &inv.model, &inv.firmware) {
            (Some(s), Some(m), Some(f)) => {
                let key = (s.clone(), m.clone(), f.clone());
                sbom_view(&st, &key)
            }
            _ => None,
        };
        Ok(InventoryView {
            supplier: inv.supplier,
            model: inv.model,
            hardware_serial: inv.hardware_serial,
            firmware: inv.firmware,
            labels: inv.labels,
            reported_at: inv.reported_at,
            sbom,
        })
    }

    /// Set a device's inventory fields (those given), as an operator; re-evaluates it.
    pub fn set_inventory(
        &self,
        device: &str,
        update: &InventoryView,
        by: &str,
    ) -> Result<InventoryView, ControlError> {
        let Some(d) = self.registry.device(device)? else {
            return Err(ControlError::DeviceNotFound(device.to_owned()));
        };
        self.write_ahead(
            "set_inventory",
            device,
            by,
            &[
                ("supplier", &update.supplier),
                ("model", &update.model),
                ("hardware serial", &update.hardware_serial),
                ("firmware", &update.firmware),
            ]
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k} {v}")))
            .collect::<Vec<_>>()
            .join(", "),
        )?;
        let edit = self.inventory_edits.lock();
        let mut inv = self.registry.inventory(device)?.unwrap_or(Inventory {
            device: device.to_owned(),
            ..Default::default()
        });
        let before = inv.firmware.clone();
        if let Some(s) = &update.supplier {
            if !self.registry.suppliers()?.iter().any(|x| &x.name == s) {
                return Err(ControlError::UnknownSupplier(s.clone()));
            }
            inv.supplier = Some(s.clone());
        }
        for (field, value) in [
            ("model", &update.model),
            ("hardware serial", &update.hardware_serial),
            ("firmware", &update.firmware),
        ] {
            if let Some(v) = value {
                check_field(field, v)?;
            }
        }
        if update.model.is_some() {
            inv.model = update.model.clone();
        }
        if update.hardware_serial.is_some() {
            inv.hardware_serial = update.hardware_serial.clone();
        }
        if update.firmware.is_some() {
            inv.firmware = update.firmware.clone();
        }
        for (k, v) in &update.labels {
            check_field("label", k)?;
            if v.is_empty() {
                inv.labels.remove(k);
            } else {
                inv.labels.insert(k.clone(), v.clone());
            }
        }
        inv.updated_at = now();
        self.registry.set_inventory(&inv)?;
        drop(edit);
        self.events.emit(EventKind::InventoryChanged {
            device: device.to_owned(),
            firmware_before: before,
            firmware: inv.firmware.clone(),
            model: inv.model.clone(),
            by: by.to_owned(),
        });
        if d.revoked_at.is_none() {
            self.evaluate_fleet(Some(&[device.to_owned()]), "inventory_change", None)?;
        }
        self.inventory(device)
    }

    /// Record what a bootstrap certificate says about a device (supplier, model, serial).
    pub(crate) fn record_bootstrap_inventory(
        &self,
        device: &str,
        supplier: &str,
        model: Option<&str>,
        serial: &str,
    ) -> Result<(), ControlError> {
        let _edit = self.inventory_edits.lock();
        let mut inv = self.registry.inventory(device)?.unwrap_or(Inventory {
            device: device.to_owned(),
            ..Default::default()
        });
        inv.supplier = Some(supplier.to_owned());
        if let Some(m) = model {
            inv.model = Some(m.to_owned());
        }
        inv.hardware_serial = Some(serial.to_owned());
        inv.updated_at = now();
        self.registry.set_inventory(&inv)?;
        Ok(())
    }

    /// A device's own report from its inventory topic (`{"firmware": "1.3.0"}`, optional
    /// `model`). A changed firmware is recorded and the device re-evaluated at once.
    pub fn report_inventory(&self, device: &str, payload: &[u8]) -> Result<bool, ControlError> {
        let report: Report = serde_json::from_slice(payload).map_err(|e| {
            ControlError::InvalidRequest(format!(
                "inventory report from {device}: {e}; expected {{\"firmware\": \"1.3.0\"}} with an optional \"model\""
            ))
        })?;
        check_field("firmware", &report.firmware)?;
        if let Some(m) = &report.model {
            check_field("model", m)?;
        }
        let edit = self.inventory_edits.lock();
        let mut inv = self.registry.inventory(device)?.unwrap_or(Inventory {
            device: device.to_owned(),
            ..Default::default()
        });
        let before = inv.firmware.clone();
        // A device may name its model only while none is recorded: the model from its
        // manufacturing certificate or from an operator is not the device's to change (it
        // would choose which SBOM judges it).
        let model = report.model.filter(|_| inv.model.is_none());
        let changed = before.as_deref() != Some(report.firmware.as_str()) || model.is_some();
        inv.firmware = Some(report.firmware);
        if model.is_some() {
            inv.model = model;
        }
        inv.reported_at = Some(now());
        inv.updated_at = now();
        self.registry.set_inventory(&inv)?;
        drop(edit);
        if changed {
            self.events.emit(EventKind::InventoryChanged {
                device: device.to_owned(),
                firmware_before: before,
                firmware: inv.firmware.clone(),
                model: inv.model.clone(),
                by: "device".into(),
            });
            self.evaluate_fleet(Some(&[device.to_owned()]), "firmware_report", None)?;
        }
        Ok(changed)
    }

    // ---- documents ----------------------------------------------------------------------

    /// Import an SBOM for (supplier, model, firmware). The model must be recorded (or be the
    /// model of a bootstrap-enrolled device); `supplier` disambiguates a model name two
    /// suppliers use. A bad document stores nothing.
    pub fn import_sbom(
        &self,
        supplier: Option<&str>,
        model: &str,
        firmware: &str,
        document: &[u8],
        by: &str,
    ) -> Result<SbomImported, ControlError> {
        check_field("firmware", firmware)?;
        let supplier = self.resolve_model(supplier, model)?;
        let sbom = Sbom::parse(document).map_err(bad)?;
        let gaps = sbom.minimum_elements();
        let sha = sha256_hex(document);
        self.write_ahead(
            "import_sbom",
            &format!("{model} {firmware}"),
            by,
            &format!("sha256 {sha}"),
        )?;
        let parsed = serde_json::to_string(&sbom)
            .map_err(|e| ControlError::InvalidDocument(format!("SBOM does not serialise: {e}")))?;
        let key = (supplier.clone(), model.to_owned(), firmware.to_owned());
        let embedded: Vec<Statement> = sbom.vex.clone();
        self.registry.put_sbom(&SbomRecord {
            supplier: supplier.clone(),
            model: model.to_owned(),
            firmware: firmware.to_owned(),
            format: sbom.format.clone(),
            document_sha256: sha.clone(),
            parsed,
            imported_at: now(),
            imported_by: by.to_owned(),
        })?;
        let components = sbom.components.len();
        let format = sbom.format.clone();
        {
            let mut st = self.compliance.lock();
            st.sboms.insert(key.clone(), Arc::new(sbom));
            st.sbom_meta.insert(
                key.clone(),
                SbomMeta {
                    format: format.clone(),
                    sha256: sha.clone(),
                    imported_at: now(),
                    imported_by: by.to_owned(),
                },
            );
            st.assessed.remove(&key);
        }
        let vex_statements = embedded.len();
        let scope = VexScope {
            supplier: Some(supplier.clone()),
            model: model.to_owned(),
            firmware: FirmwareScope::Exact {
                version: firmware.to_owned(),
            },
            embedded: true,
        };
        // The statements a previous version of this SBOM carried go with it.
        let stale: Vec<i64> = self
            .compliance
            .lock()
            .vex
            .iter()
            .filter(|(_, sc, _)| *sc == scope)
            .map(|(seq, _, _)| *seq)
            .collect();
        if !stale.is_empty() {
            self.registry.remove_vex(&stale)?;
            let mut st = self.compliance.lock();
            st.vex.retain(|(seq, _, _)| !stale.contains(seq));
            st.assessed.remove(&key);
        }
        if !embedded.is_empty() {
            self.store_vex(
                embedded.into_iter().map(|s| (scope.clone(), s)).collect(),
                by,
            )?;
        }
        self.events.emit(EventKind::SbomImported {
            supplier: supplier.clone(),
            model: model.to_owned(),
            firmware: firmware.to_owned(),
            format,
            components,
            document: sha,
            by: by.to_owned(),
        });
        let devices = self.devices_running(|k| *k == key)?;
        let reevaluated = devices.len();
        self.evaluate_fleet(Some(&devices), "sbom_import", None)?;
        let st = self.compliance.lock();
        let sbom = sbom_view(&st, &key).ok_or_else(|| {
            ControlError::InvalidDocument("the SBOM vanished while it was imported".into())
        })?;
        Ok(SbomImported {
            sbom,
            missing_elements: gaps,
            vex_statements,
            reevaluated,
        })
    }

    /// Every SBOM.
    pub fn sboms(&self) -> Vec<SbomView> {
        let mut st = self.compliance.lock();
        let keys: Vec<SbomKey> = st.sboms.keys().cloned().collect();
        let mut out: Vec<SbomView> = keys
            .iter()
            .filter_map(|k| {
                self.assessment(&mut st, k);
                sbom_view(&st, k)
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.supplier, &a.model, &a.firmware).cmp(&(&b.supplier, &b.model, &b.firmware))
        });
        out
    }

    /// The supplier of `model` (unique among suppliers unless `supplier` says which).
    fn resolve_model(&self, supplier: Option<&str>, model: &str) -> Result<String, ControlError> {
        check_field("model", model)?;
        let mut owners: BTreeSet<String> = self
            .registry
            .models()?
            .into_iter()
            .filter(|m| m.name == model)
            .map(|m| m.supplier)
            .collect();
        // A model named by a supplier's manufacturing certificates counts as recorded.
        for inv in self.registry.inventories()? {
            if inv.model.as_deref() == Some(model) {
                if let Some(s) = inv.supplier {
                    owners.insert(s);
                }
            }
        }
        match supplier {
            Some(s) if owners.contains(s) => Ok(s.to_owned()),
            Some(s) => {
                if self.registry.suppliers()?.iter().any(|x| x.name == s) {
                    Err(ControlError::UnknownModel(format!(
                        "supplier {s:?} has no model {model:?}; record it with `tollgate model add --supplier {s} {model}`"
                    )))
                } else {
                    Err(ControlError::UnknownSupplier(s.to_owned()))
                }
            }
            None => match owners.len() {
                1 => Ok(owners.into_iter().next().unwrap_or_default()),
                0 => Err(ControlError::UnknownModel(format!(
                    "no supplier has a model {model:?}; record it with `tollgate model add --supplier SUPPLIER {model}`"
                ))),
                _ => Err(ControlError::InvalidRequest(format!(
                    "model {model:?} belongs to several suppliers ({}); say which with --supplier",
                    owners.into_iter().collect::<Vec<_>>().join(", ")
                ))),
            },
        }
    }

    /// Import a batch of OSV records (raw JSON each). Records not newer than those stored are
    /// skipped; a record that does not parse fails the whole batch, storing nothing. Only the
    /// devices running an SBOM that names a touched package are re-evaluated.
    pub fn import_advisories(
        &self,
        records: &[Vec<u8>],
        by: &str,
    ) -> Result<AdvisoriesImported, ControlError> {
        let mut parsed = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let a = Advisory::parse(r, &format!("#{}", i + 1)).map_err(bad)?;
            parsed.push((a, r));
        }
        self.write_ahead(
            "import_advisories",
            &format!("{} records", parsed.len()),
            by,
            "",
        )?;
        let mut out = AdvisoriesImported::default();
        let mut touched: HashSet<purl::PackageKey> = HashSet::new();
        let mut rows = Vec::new();
        {
            let mut st = self.compliance.lock();
            // Stage on a copy of what changes: nothing is applied unless the registry write
            // succeeds.
            let mut staged: Vec<(Advisory, &Vec<u8>)> = Vec::new();
            for (a, raw) in parsed {
                match st.index.get(&a.id).filter(|old| old.id == a.id) {
                    Some(old) if !tollgate_compliance::osv::newer(&a.modified, &old.modified) => {
                        out.unchanged += 1;
                    }
                    Some(_) => {
                        out.updated += 1;
                        rows.push(AdvisoryRecord {
                            id: a.id.clone(),
                            modified: a.modified.clone(),
                            record: raw.clone(),
                        });
                        staged.push((a, raw));
                    }
                    _ => {
                        out.added += 1;
                        rows.push(AdvisoryRecord {
                            id: a.id.clone(),
                            modified: a.modified.clone(),
                            record: raw.clone(),
                        });
                        staged.push((a, raw));
                    }
                }
            }
            self.registry.put_advisories(&rows)?;
            for (a, raw) in staged {
                let ins = st.index.insert(a, raw);
                touched.extend(ins.keys().iter().cloned());
            }
            st.digest = st.index.digest();
            out.total = st.index.len();
            out.database = st.digest.clone();
            // Assessments of SBOMs naming a touched package are stale.
            let stale: Vec<SbomKey> = st
                .sboms
                .iter()
                .filter(|(_, s)| sbom_names_any(s, &touched))
                .map(|(k, _)| k.clone())
                .collect();
            for k in &stale {
                st.assessed.remove(k);
            }
            drop(st);
            let stale: HashSet<SbomKey> = stale.into_iter().collect();
            let devices = self.devices_running(|k| stale.contains(k))?;
            out.reevaluated = devices.len();
            if !devices.is_empty() {
                self.evaluate_fleet(Some(&devices), "advisory_import", None)?;
            }
        }
        self.events.emit(EventKind::AdvisoriesImported {
            added: out.added,
            updated: out.updated,
            unchanged: out.unchanged,
            database: out.database.clone(),
            reevaluated: out.reevaluated,
            by: by.to_owned(),
        });
        Ok(out)
    }

    /// The advisory database: its hash, size and (up to `limit`) records matching `query`
    /// (an id, alias or package name substring).
    pub fn advisories(
        &self,
        query: Option<&str>,
        limit: usize,
    ) -> (String, usize, Vec<AdvisoryView>) {
        let st = self.compliance.lock();
        let q = query.map(str::to_ascii_lowercase);
        let list = st
            .index
            .advisories()
            .filter(|a| {
                q.as_deref().is_none_or(|q| {
                    a.id.to_ascii_lowercase().contains(q)
                        || a.aliases.iter().any(|x| x.to_ascii_lowercase().contains(q))
                        || a.keys()
                            .iter()
                            .any(|k| k.name.to_ascii_lowercase().contains(q))
                })
            })
            .take(limit)
            .map(advisory_view)
            .collect();
        (st.digest.clone(), st.index.len(), list)
    }

    /// Every stored record's id and `modified`, so an importer can skip what would not change.
    pub fn advisory_versions(&self) -> (String, BTreeMap<String, String>) {
        let st = self.compliance.lock();
        let map = st
            .index
            .advisories()
            .map(|a| (a.id.clone(), a.modified.clone()))
            .collect();
        (st.digest.clone(), map)
    }

    /// The suppliers, models and devices an advisory (by id or alias) hits.
    pub fn advisory_affected(&self, id: &str) -> Result<Affected, ControlError> {
        let mut st = self.compliance.lock();
        let advisory = st
            .index
            .get(id)
            .map(advisory_view)
            .ok_or_else(|| ControlError::NotFound(format!("advisory {id}")))?;
        let ids: HashSet<String> = std::iter::once(advisory.id.clone())
            .chain(advisory.aliases.iter().cloned())
            .map(|s| s.to_ascii_uppercase())
            .collect();
        let keys: Vec<SbomKey> = st.sboms.keys().cloned().collect();
        let mut models = Vec::new();
        for k in &keys {
            let a = self.assessment(&mut st, k);
            for v in &a.vulnerabilities {
                let hit = std::iter::once(&v.id)
                    .chain(v.aliases.iter())
                    .any(|x| ids.contains(&x.to_ascii_uppercase()));
                if hit {
                    models.push(AffectedModel {
                        supplier: k.0.clone(),
                        model: k.1.clone(),
                        firmware: k.2.clone(),
                        component: v.component.clone(),
                        fixed: v.fixed.clone(),
                        vex: v.vex.as_ref().map(|d| d.status),
                    });
                }
            }
        }
        let database = st.digest.clone();
        drop(st);
        let hit: HashSet<SbomKey> = models
            .iter()
            .filter(|m| !matches!(m.vex, Some(vex::Status::NotAffected | vex::Status::Fixed)))
            .map(|m| (m.supplier.clone(), m.model.clone(), m.firmware.clone()))
            .collect();
        let devices = self.devices_running(|k| hit.contains(k))?;
        let suppliers: BTreeSet<String> = models.iter().map(|m| m.supplier.clone()).collect();
        Ok(Affected {
            advisory,
            database,
            suppliers: suppliers.into_iter().collect(),
            models,
            devices,
        })
    }

    /// Import a VEX document (OpenVEX, or CycloneDX with `vulnerabilities`), scoped to a model
    /// and firmware. Statements whose products name a model themselves
    /// (`pkg:generic/<supplier>/<model>@<firmware>`) may leave the scope out.
    pub fn import_vex(
        &self,
        document: &[u8],
        scope: Option<VexScope>,
        by: &str,
    ) -> Result<usize, ControlError> {
        let doc = vex::parse(document).map_err(bad)?;
        if doc.statements.is_empty() {
            return Err(ControlError::InvalidDocument(
                "the VEX document has no statements".into(),
            ));
        }
        if let Some(s) = &scope {
            self.resolve_model(s.supplier.as_deref(), &s.model)?;
        }
        self.write_ahead(
            "import_vex",
            scope.as_ref().map_or("", |s| s.model.as_str()),
            by,
            &format!(
                "{} statements, sha256 {}",
                doc.statements.len(),
                sha256_hex(document)
            ),
        )?;
        let mut scoped = Vec::with_capacity(doc.statements.len());
        for (i, stmt) in doc.statements.into_iter().enumerate() {
            let sc = match &scope {
                Some(s) => s.clone(),
                None => product_scope(&stmt).ok_or_else(|| {
                    ControlError::InvalidDocument(format!(
                        "VEX statement {} ({}) names no model as its product (pkg:generic/<supplier>/<model>[@<firmware>]); give the scope with --model",
                        i + 1,
                        stmt.vulnerability
                    ))
                })?,
            };
            scoped.push((sc, stmt));
        }
        let model = scoped
            .first()
            .map(|(s, _)| s.model.clone())
            .unwrap_or_default();
        let n = scoped.len();
        self.store_vex(scoped, by)?;
        self.events.emit(EventKind::VexImported {
            statements: n,
            format: doc.format,
            model,
            by: by.to_owned(),
        });
        Ok(n)
    }

    fn store_vex(&self, scoped: Vec<(VexScope, Statement)>, by: &str) -> Result<(), ControlError> {
        let mut rows = Vec::with_capacity(scoped.len());
        for (scope, stmt) in &scoped {
            rows.push(VexRecord {
                seq: 0,
                scope: serde_json::to_string(scope)
                    .map_err(|e| ControlError::InvalidDocument(e.to_string()))?,
                statement: serde_json::to_string(stmt)
                    .map_err(|e| ControlError::InvalidDocument(e.to_string()))?,
                imported_at: now(),
                imported_by: by.to_owned(),
            });
        }
        let seqs = self.registry.add_vex(&rows)?;
        let models: HashSet<String> = scoped.iter().map(|(s, _)| s.model.clone()).collect();
        {
            let mut st = self.compliance.lock();
            for (seq, (scope, stmt)) in seqs.into_iter().zip(scoped) {
                st.vex.push((seq, scope, stmt));
            }
            // Import order decides which statement is later, whatever order threads came in.
            st.vex.sort_by_key(|(seq, _, _)| *seq);
            st.assessed.retain(|k, _| !models.contains(&k.1));
        }
        let devices = self.devices_running(|k| models.contains(&k.1))?;
        self.evaluate_fleet(Some(&devices), "vex_import", None)?;
        Ok(())
    }

    // ---- waivers ------------------------------------------------------------------------

    /// Grant a waiver of `rule` for a device or a model until `expires_at`.
    pub fn add_waiver(
        &self,
        rule: &str,
        device: Option<&str>,
        model: Option<&str>,
        reason: &str,
        expires_at: i64,
        author: &str,
    ) -> Result<WaiverView, ControlError> {
        if device.is_some() == model.is_some() {
            return Err(ControlError::InvalidRequest(
                "a waiver covers one device or one model: give exactly one".into(),
            ));
        }
        if reason.trim().is_empty() {
            return Err(ControlError::InvalidRequest(
                "a waiver needs a reason".into(),
            ));
        }
        if expires_at <= now() {
            return Err(ControlError::InvalidRequest(
                "a waiver must expire in the future".into(),
            ));
        }
        if let Some(d) = device {
            if self.registry.device(d)?.is_none() {
                return Err(ControlError::DeviceNotFound(d.to_owned()));
            }
        }
        if self.compliance.lock().profile.rule(rule).is_none() {
            tracing::warn!(
                rule,
                "waiver granted for a rule the profile in force does not have"
            );
        }
        self.write_ahead(
            "add_waiver",
            device.or(model).unwrap_or_default(),
            author,
            &format!("rule {rule} until {expires_at}: {reason}"),
        )?;
        let mut w = WaiverRecord {
            id: 0,
            rule: rule.to_owned(),
            device: device.map(str::to_owned),
            model: model.map(str::to_owned),
            reason: reason.to_owned(),
            author: author.to_owned(),
            created_at: now(),
            expires_at,
        };
        w.id = self.registry.add_waiver(&w)?;
        self.compliance.lock().waivers.push(w.clone());
        self.events.emit(EventKind::WaiverChanged {
            id: w.id,
            rule: w.rule.clone(),
            covers: covers(&w),
            change: "added",
            by: author.to_owned(),
        });
        let affected = self.waiver_devices(&w)?;
        self.evaluate_fleet(Some(&affected), "waiver", None)?;
        Ok(waiver_view(&w, now()))
    }

    /// Remove a waiver.
    pub fn remove_waiver(&self, id: i64, by: &str) -> Result<(), ControlError> {
        let w = self
            .compliance
            .lock()
            .waivers
            .iter()
            .find(|w| w.id == id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("waiver {id}")))?;
        self.write_ahead("remove_waiver", &format!("waiver {id}"), by, &w.rule)?;
        self.registry.remove_waiver(id)?;
        self.compliance.lock().waivers.retain(|w| w.id != id);
        self.events.emit(EventKind::WaiverChanged {
            id,
            rule: w.rule.clone(),
            covers: covers(&w),
            change: "removed",
            by: by.to_owned(),
        });
        let affected = self.waiver_devices(&w)?;
        self.evaluate_fleet(Some(&affected), "waiver", None)?;
        Ok(())
    }

    /// Every waiver.
    pub fn waivers(&self) -> Vec<WaiverView> {
        let t = now();
        self.compliance
            .lock()
            .waivers
            .iter()
            .map(|w| waiver_view(w, t))
            .collect()
    }

    fn waiver_devices(&self, w: &WaiverRecord) -> Result<Vec<String>, ControlError> {
        if let Some(d) = &w.device {
            return Ok(vec![d.clone()]);
        }
        Ok(self
            .registry
            .inventories()?
            .into_iter()
            .filter(|i| i.model.is_some() && i.model == w.model)
            .map(|i| i.device)
            .collect())
    }

    // ---- evaluation ---------------------------------------------------------------------

    fn devices_running(&self, f: impl Fn(&SbomKey) -> bool) -> Result<Vec<String>, ControlError> {
        Ok(self
            .registry
            .inventories()?
            .into_iter()
            .filter_map(|i| match (i.supplier, i.model, i.firmware) {
                (Some(s), Some(m), Some(fw)) => f(&(s, m, fw)).then_some(i.device),
                _ => None,
            })
            .collect())
    }

    /// The assessment of an SBOM, computed once and cached until an input changes.
    fn assessment(&self, st: &mut State, key: &SbomKey) -> Arc<Assessment> {
        if let Some(a) = st.assessed.get(key) {
            return Arc::clone(a);
        }
        let Some(sbom) = st.sboms.get(key).cloned() else {
            return Arc::new(Assessment {
                format: String::new(),
                components: 0,
                gaps: Vec::new(),
                vulnerabilities: Vec::new(),
                indeterminate: Vec::new(),
                purls: Vec::new(),
            });
        };
        let scheme = st
            .schemes
            .get(&(key.0.clone(), key.1.clone()))
            .cloned()
            .unwrap_or(FirmwareScheme::Semver);
        let vex: Vec<(i64, &Statement)> = st
            .vex
            .iter()
            .filter(|(_, scope, _)| scope.covers(key, &scheme))
            .map(|(seq, _, s)| (*seq, s))
            .collect();
        let a = Arc::new(evaluate::assess(&sbom, &st.index, &vex));
        st.assessed.insert(key.clone(), Arc::clone(&a));
        a
    }

    fn gather(&self, only: Option<&[String]>, profile: &Profile) -> Result<Fleet, ControlError> {
        // A few devices (a report, a connect, an enrollment) are read one by one; a fleet
        // evaluation reads each table once.
        let few = only.filter(|o| o.len() <= 64);
        let mut devices = Vec::new();
        let mut inventory = HashMap::new();
        let mut quarantine: HashMap<String, Vec<QuarantineReason>> = HashMap::new();
        match few {
            Some(ids) => {
                for id in ids {
                    if let Some(d) = self.registry.device(id)? {
                        if let Some(i) = self.registry.inventory(id)? {
                            inventory.insert(id.clone(), i);
                        }
                        quarantine.insert(id.clone(), self.registry.quarantine_of(id)?);
                        devices.push(d);
                    }
                }
            }
            None => {
                devices = self.registry.devices()?;
                if let Some(only) = only {
                    let set: HashSet<&String> = only.iter().collect();
                    devices.retain(|d| set.contains(&d.id));
                }
                inventory = self
                    .registry
                    .inventories()?
                    .into_iter()
                    .map(|i| (i.device.clone(), i))
                    .collect();
                for (id, q) in self.registry.quarantines()? {
                    quarantine.entry(id).or_default().push(q);
                }
            }
        }
        devices.retain(|d| d.revoked_at.is_none());
        let suppliers = self
            .registry
            .supplier_infos()?
            .into_iter()
            .map(|s| {
                (
                    s.name.clone(),
                    SupplierFacts {
                        name: s.name,
                        disclosure_contact: s.disclosure_contact,
                        support_end: s.support_end,
                    },
                )
            })
            .collect();
        let models = self
            .registry
            .models()?
            .into_iter()
            .map(|m| ((m.supplier.clone(), m.name.clone()), m))
            .collect();
        let mut certs = HashMap::new();
        let want_certs = profile.rules.iter().any(needs_cert);
        for d in &devices {
            if !want_certs {
                break;
            }
            if let Some(c) =
                self.registry.certificates_of(&d.id)?.into_iter().find(|c| {
                    c.revoked_at.is_none() && c.kind == tollgate_registry::CertKind::Device
                })
            {
                let (alg, bits) = split_key(c.key.as_deref());
                certs.insert(
                    d.id.clone(),
                    CertFacts {
                        key_algorithm: alg,
                        key_bits: bits,
                        lifetime_secs: c.not_after - c.not_before,
                    },
                );
            }
        }
        Ok(Fleet {
            devices,
            inventory,
            suppliers,
            models,
            certs,
            quarantine,
        })
    }

    /// Evaluate devices (`only`, or the whole fleet) against the profile in force (or
    /// `candidate`, which is never applied), and apply the result unless it is a dry run:
    /// quarantine reasons per failing `quarantine` rule, releases, events, grace clocks.
    pub fn evaluate_fleet(
        &self,
        only: Option<&[String]>,
        trigger: &str,
        candidate: Option<&Profile>,
    ) -> Result<Evaluation, ControlError> {
        let started = Instant::now();
        let dry_run = candidate.is_some();
        // One evaluation at a time, from reading the registry to applying the verdicts: an
        // evaluation that read older inputs must not apply its verdicts after a newer one.
        let _serial = (!dry_run).then(|| self.evaluations.lock());
        let profile = match candidate {
            Some(p) => Arc::new(p.clone()),
            None => Arc::clone(&self.compliance.lock().profile),
        };
        let fleet = self.gather(only, &profile)?;
        let t = now();
        let mut st = self.compliance.lock();
        let waivers: Vec<evaluate::Waiver> = st
            .waivers
            .iter()
            .map(|w| evaluate::Waiver {
                id: w.id,
                rule: w.rule.clone(),
                device: w.device.clone(),
                model: w.model.clone(),
                expires_at: w.expires_at,
            })
            .collect();
        // Announce waivers that expired since the last look.
        let newly_expired: Vec<WaiverRecord> = st
            .waivers
            .iter()
            .filter(|w| w.expires_at <= t && !st.expired_waivers.contains(&w.id))
            .cloned()
            .collect();
        let mut verdicts: Vec<(String, Verdict)> = Vec::with_capacity(fleet.devices.len());
        for d in &fleet.devices {
            let inv = fleet.inventory.get(&d.id);
            let supplier_name = inv.and_then(|i| i.supplier.as_deref());
            let model_name = inv.and_then(|i| i.model.as_deref());
            let firmware = inv.and_then(|i| i.firmware.as_deref());
            let model = match (supplier_name, model_name) {
                (Some(s), Some(m)) => fleet.models.get(&(s.to_owned(), m.to_owned())),
                _ => None,
            };
            let model_facts = model.map(|m| ModelFacts {
                name: m.name.clone(),
                scheme: scheme_of(m),
                min_firmware: m.min_firmware.clone(),
            });
            let assessment = match (supplier_name, model_name, firmware) {
                (Some(s), Some(m), Some(f)) => {
                    let key = (s.to_owned(), m.to_owned(), f.to_owned());
                    st.sboms
                        .contains_key(&key)
                        .then(|| self.assessment(&mut st, &key))
                }
                _ => None,
            };
            let seen = st.first_seen.get(&d.id);
            let first_seen = |k: &str| seen.and_then(|m| m.get(k).copied());
            let facts = DeviceFacts {
                id: &d.id,
                groups: &d.groups,
                supplier_name,
                supplier: supplier_name.and_then(|s| fleet.suppliers.get(s)),
                model_name,
                model: model_facts.as_ref(),
                firmware,
                sbom: assessment.as_deref(),
                certificate: fleet.certs.get(&d.id),
            };
            let v = evaluate::evaluate(&profile, &facts, &waivers, &first_seen, t);
            verdicts.push((d.id.clone(), v));
        }
        let database = st.digest.clone();
        let mut changes = Vec::new();
        let mut q_changes = Vec::new();
        let mut events = Vec::new();
        let mut seen_updates = Vec::new();
        let mut noncompliant = 0;
        let mut quarantined = 0;
        for (id, v) in &verdicts {
            let before = st.verdicts.get(id);
            let from = state_name(before);
            let to = state_name(Some(v));
            if !v.compliant() {
                noncompliant += 1;
            }
            let quarantining: Vec<String> =
                v.quarantining().keys().map(|r| r.to_string()).collect();
            if !quarantining.is_empty() {
                quarantined += 1;
            }
            let failing: Vec<String> = v.failing_rules().into_iter().map(str::to_owned).collect();
            let before_failing: Vec<String> = before
                .map(|b| b.failing_rules().into_iter().map(str::to_owned).collect())
                .unwrap_or_default();
            if from != to || failing != before_failing {
                changes.push(Transition {
                    device: id.clone(),
                    from: from.to_owned(),
                    to: to.to_owned(),
                    failing_rules: failing.clone(),
                    quarantining: quarantining.clone(),
                });
            }
            if dry_run {
                continue;
            }
            // Quarantine reasons: one per failing quarantine rule; stale ones released.
            let held: HashMap<&str, &QuarantineReason> = fleet
                .quarantine
                .get(id)
                .map(|qs| {
                    qs.iter()
                        .filter(|q| q.source.starts_with(SOURCE_PREFIX))
                        .map(|q| (q.source.as_str(), q))
                        .collect()
                })
                .unwrap_or_default();
            let mut change = QuarantineChange {
                device: id.clone(),
                ..Default::default()
            };
            let mut wanted = HashSet::new();
            for (rule, findings) in v.quarantining() {
                let source = format!("{SOURCE_PREFIX}{rule}");
                let reason = quarantine_reason(&findings, &database);
                if held.get(source.as_str()).map(|q| q.reason.as_str()) != Some(reason.as_str()) {
                    change.set.push(QuarantineReason {
                        source: source.clone(),
                        reason,
                        by: BY.into(),
                        since: t,
                        until: None,
                    });
                }
                wanted.insert(source);
            }
            for source in held.keys() {
                if !wanted.contains(*source) {
                    change.remove.push((*source).to_owned());
                }
            }
            if !change.set.is_empty() || !change.remove.is_empty() {
                q_changes.push(change);
            }
            if from != to || failing != before_failing || before.is_none() {
                let advisories: BTreeSet<String> = v
                    .findings
                    .iter()
                    .filter(|f| f.state == evaluate::FindingState::Violation)
                    .flat_map(|f| f.advisories.iter().cloned())
                    .collect();
                events.push(EventKind::ComplianceChanged {
                    device: id.clone(),
                    compliant: v.compliant(),
                    failing: failing.clone(),
                    previously_failing: before_failing,
                    quarantining,
                    advisories: advisories.into_iter().collect(),
                    database: database.clone(),
                    trigger: trigger.to_owned(),
                });
            }
            // Grace clocks: keep the first-seen time of every graced violation still present.
            let old = st.first_seen.get(id);
            let next: HashMap<String, i64> = v.clocks.iter().cloned().collect();
            if old.map_or(!next.is_empty(), |o| *o != next) {
                seen_updates.push((id.clone(), next));
            }
        }
        let rules = profile.rules.len();
        let apply = !dry_run && st.profile_good;
        drop(st);
        if apply {
            // The registry first: should a write fail, memory still says what the registry
            // says, and the next evaluation tries again.
            if !seen_updates.is_empty() {
                let changes: Vec<(String, Vec<(String, i64)>)> = seen_updates
                    .iter()
                    .map(|(id, next)| {
                        (
                            id.clone(),
                            next.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                        )
                    })
                    .collect();
                self.registry.set_first_seen(&changes)?;
            }
            self.apply_quarantine_changes(&q_changes)?;
            let mut st = self.compliance.lock();
            for (id, v) in verdicts {
                match v.next_change {
                    Some(at) => st.deadlines.insert(id.clone(), at),
                    None => st.deadlines.remove(&id),
                };
                st.verdicts.insert(id, v);
            }
            // Devices asked for that are gone (revoked, unknown) keep no verdict or deadline.
            if let Some(only) = only {
                let present: HashSet<&String> = fleet.devices.iter().map(|d| &d.id).collect();
                for id in only.iter().filter(|id| !present.contains(id)) {
                    st.deadlines.remove(id);
                    st.verdicts.remove(id);
                }
            }
            for w in &newly_expired {
                st.expired_waivers.insert(w.id);
            }
            for (id, next) in seen_updates {
                st.first_seen.insert(id, next);
            }
            drop(st);
            for w in newly_expired {
                self.events.emit(EventKind::WaiverChanged {
                    id: w.id,
                    rule: w.rule.clone(),
                    covers: covers(&w),
                    change: "expired",
                    by: BY.into(),
                });
            }
            for e in events {
                self.events.emit(e);
            }
        } else if !dry_run {
            tracing::warn!(
                "compliance verdicts not applied: no compliance profile has loaded yet (fix {})",
                self.cfg.compliance_file.display()
            );
        }
        Ok(Evaluation {
            dry_run,
            devices: fleet.devices.len(),
            noncompliant,
            quarantined,
            changes,
            database,
            rules,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Re-evaluate the devices whose verdict changes by itself now (a grace period or a
    /// waiver ended, a supplier's support ran out). Called every second or so.
    pub fn compliance_tick(&self) {
        let t = now();
        let due: Vec<String> = self
            .compliance
            .lock()
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= t)
            .map(|(d, _)| d.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        if let Err(e) = self.evaluate_fleet(Some(&due), "deadline", None) {
            tracing::error!("re-evaluating compliance at a deadline: {e}");
        }
    }

    /// Evaluate one device as it connects (its verdict may depend on time: certificates,
    /// support periods).
    pub fn evaluate_on_connect(&self, device: &str) {
        if self.compliance.lock().profile.rules.is_empty() {
            return;
        }
        if let Err(e) = self.evaluate_fleet(Some(&[device.to_owned()]), "connect", None) {
            tracing::error!(device, "evaluating compliance at connect: {e}");
        }
    }

    /// A dry run of `profile_text` (or the profile in force) over the whole fleet.
    pub fn evaluate_dry_run(&self, profile_text: Option<&str>) -> Result<Evaluation, ControlError> {
        let candidate = match profile_text {
            Some(text) => Profile::parse(text, "candidate profile")
                .map_err(|e| ControlError::ProfileRejected(e.to_string()))?,
            None => Profile::clone(&self.compliance.lock().profile),
        };
        self.evaluate_fleet(None, "dry_run", Some(&candidate))
    }

    /// Per device: state, failing rules, findings, vulnerabilities (with fix versions).
    pub fn compliance_report(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<DeviceCompliance>, ControlError> {
        let ids: Option<Vec<String>> = only.map(|d| vec![d.to_owned()]);
        let profile = Arc::clone(&self.compliance.lock().profile);
        let fleet = self.gather(ids.as_deref(), &profile)?;
        if let Some(d) = only {
            if fleet.devices.is_empty() {
                return Err(ControlError::DeviceNotFound(d.to_owned()));
            }
        }
        let mut out = Vec::new();
        for d in &fleet.devices {
            let inventory = self.inventory(&d.id)?;
            let mut st = self.compliance.lock();
            let verdict = st.verdicts.get(&d.id).cloned();
            let vulnerabilities = match (&inventory.supplier, &inventory.model, &inventory.firmware)
            {
                (Some(s), Some(m), Some(f)) => {
                    let key = (s.clone(), m.clone(), f.clone());
                    if st.sboms.contains_key(&key) {
                        let a = self.assessment(&mut st, &key);
                        a.vulnerabilities
                            .iter()
                            .filter_map(|v| serde_json::to_value(v).ok())
                            .collect()
                    } else {
                        Vec::new()
                    }
                }
                _ => Vec::new(),
            };
            drop(st);
            out.push(DeviceCompliance {
                device: d.id.clone(),
                state: state_name(verdict.as_ref()).to_owned(),
                failing_rules: verdict
                    .as_ref()
                    .map(|v| v.failing_rules().into_iter().map(str::to_owned).collect())
                    .unwrap_or_default(),
                findings: verdict
                    .as_ref()
                    .map(|v| {
                        v.findings
                            .iter()
                            .filter_map(|f| serde_json::to_value(f).ok())
                            .collect()
                    })
                    .unwrap_or_default(),
                next_change: verdict.as_ref().and_then(|v| v.next_change),
                vulnerabilities,
                inventory,
            });
        }
        Ok(out)
    }

    /// The profile in force, its last load error, the advisory database hash and size.
    pub fn compliance_status(&self) -> serde_json::Value {
        let st = self.compliance.lock();
        serde_json::json!({
            "profile": {
                "file": self.cfg.compliance_file.display().to_string(),
                "rules": &st.profile.rules,
                "error": st.profile_error,
            },
            "advisories": { "database": st.digest, "records": st.index.len() },
            "sboms": st.sboms.len(),
            "vex_statements": st.vex.len(),
            "waivers": st.waivers.iter().filter(|w| w.expires_at > now()).count(),
        })
    }
}

fn needs_cert(r: &tollgate_compliance::profile::Rule) -> bool {
    matches!(
        r.check,
        tollgate_compliance::profile::Check::KeyAlgorithm { .. }
            | tollgate_compliance::profile::Check::MaxCertificateLifetime { .. }
    )
}

/// `ecdsa-p256` → (`ecdsa-p256`, 256); `rsa-3072` → (`rsa`, 3072); unknown → (`unknown`, 0).
fn split_key(k: Option<&str>) -> (String, u32) {
    match k {
        Some("ecdsa-p256") => ("ecdsa-p256".into(), 256),
        Some("ecdsa-p384") => ("ecdsa-p384".into(), 384),
        Some("ed25519") => ("ed25519".into(), 255),
        Some(k) if k.starts_with("rsa-") => ("rsa".into(), k[4..].parse().unwrap_or(0)),
        _ => ("unknown".into(), 0),
    }
}

fn quarantine_reason(findings: &[&evaluate::Finding], database: &str) -> String {
    let first = findings
        .first()
        .map(|f| f.message.as_str())
        .unwrap_or_default();
    let more = if findings.len() > 1 {
        format!(" (+{} more)", findings.len() - 1)
    } else {
        String::new()
    };
    let db = if findings.iter().any(|f| !f.advisories.is_empty()) {
        format!(" [advisories {}]", database.get(..19).unwrap_or(database))
    } else {
        String::new()
    };
    let rule = findings
        .first()
        .map(|f| f.rule.as_str())
        .unwrap_or_default();
    format!("{rule}: {first}{more}{db}")
}

fn sbom_names_any(s: &Sbom, keys: &HashSet<purl::PackageKey>) -> bool {
    s.components.iter().any(|c| {
        c.purl
            .as_deref()
            .and_then(|p| purl::package(p).ok())
            .is_some_and(|p| keys.contains(&p.key))
    })
}

fn sbom_view(st: &State, key: &SbomKey) -> Option<SbomView> {
    let meta = st.sbom_meta.get(key)?;
    let sbom = st.sboms.get(key)?;
    let a = st.assessed.get(key);
    Some(SbomView {
        supplier: key.0.clone(),
        model: key.1.clone(),
        firmware: key.2.clone(),
        format: meta.format.clone(),
        document: meta.sha256.clone(),
        components: sbom.components.len(),
        vulnerabilities: a.map_or(0, |a| {
            a.vulnerabilities.iter().filter(|v| v.counts()).count()
        }),
        indeterminate: a.map_or(0, |a| a.indeterminate.len()),
        missing_elements: sbom
            .minimum_elements()
            .into_iter()
            .map(|g| g.element)
            .collect(),
        imported_at: meta.imported_at,
        imported_by: meta.imported_by.clone(),
    })
}

fn advisory_view(a: &Advisory) -> AdvisoryView {
    AdvisoryView {
        id: a.id.clone(),
        aliases: a.aliases.clone(),
        modified: a.modified.clone(),
        withdrawn: a.withdrawn.clone(),
        summary: a.summary.clone(),
        severity: a.severity.as_ref().map(|r| r.level),
        packages: a
            .keys()
            .into_iter()
            .map(|k| format!("{}/{}", k.ecosystem, k.name))
            .collect(),
    }
}

fn covers(w: &WaiverRecord) -> String {
    match (&w.device, &w.model) {
        (Some(d), _) => d.clone(),
        (None, Some(m)) => format!("model:{m}"),
        _ => String::new(),
    }
}

fn waiver_view(w: &WaiverRecord, t: i64) -> WaiverView {
    WaiverView {
        id: w.id,
        rule: w.rule.clone(),
        device: w.device.clone(),
        model: w.model.clone(),
        reason: w.reason.clone(),
        author: w.author.clone(),
        created_at: w.created_at,
        expires_at: w.expires_at,
        expired: w.expires_at <= t,
    }
}

/// A VEX statement's own scope, from a product `pkg:<type>/<supplier>/<model>[@<firmware>]`.
fn product_scope(s: &Statement) -> Option<VexScope> {
    let p = s.products.first()?;
    let rest = p.strip_prefix("pkg:")?;
    let rest = rest.split(['?', '#']).next()?;
    let (path, version) = match rest.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (rest, None),
    };
    let mut parts = path.split('/').skip(1);
    let first = parts.next()?;
    let (supplier, model) = match parts.next() {
        Some(m) => (Some(first.to_owned()), m.to_owned()),
        None => (None, first.to_owned()),
    };
    Some(VexScope {
        supplier,
        model,
        firmware: match version {
            Some(v) => FirmwareScope::Exact {
                version: v.to_owned(),
            },
            None => FirmwareScope::All,
        },
        embedded: false,
    })
}

/// Inventory fields are short printable text.
fn check_field(what: &str, v: &str) -> Result<(), ControlError> {
    if v.is_empty() || v.len() > 128 || v.chars().any(|c| c.is_control()) {
        return Err(ControlError::InvalidRequest(format!(
            "{what} must be 1 to 128 printable characters"
        )));
    }
    Ok(())
}
