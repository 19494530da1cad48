//! Inventory and compliance routes of the admin API.
//!
//! `GET|POST /api/v1/models`; `GET|PUT /api/v1/devices/{id}/inventory`;
//! `GET /api/v1/advisories/modified` (every stored id with its `modified`);
//! `PATCH /api/v1/suppliers/{name}`; `GET|POST /api/v1/sboms` (the body is the SBOM file,
//! `?model=&firmware=[&supplier=]`); `GET|POST /api/v1/advisories` (a JSON array of OSV
//! records per batch; `GET ?q=&limit=`), `GET /api/v1/advisories/{id}/affected`;
//! `POST /api/v1/vex` (the body is the VEX file; `?model=[&supplier=][&firmware= |
//! &firmware_from=&firmware_before=]`); `GET /api/v1/compliance[?device=]`,
//! `GET /api/v1/compliance/status`, `POST /api/v1/compliance/evaluate`,
//! `GET|POST /api/v1/compliance/waivers`, `DELETE /api/v1/compliance/waivers/{id}`.
//! Documents are read with `admin.max_document_bytes` as their limit; everything else as the
//! rest of the admin API. Handlers only adapt: the control plane decides.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tollgate_control::compliance::{
    FirmwareScope, InventoryView, ModelView, SbomView, VexScope, WaiverView,
};
use tollgate_control::requests::{EvaluateRequest, SupplierUpdate, WaiverRequest};
use tollgate_control::{Control, ControlError};
use utoipa::{IntoParams, ToSchema};

use super::admin::{blocking, json_body, required, Admin, ApiError, AppState, Reader};
use super::openapi::{
    AdvisoriesImported, Advisory, Affected, ComplianceStatus, DeviceCompliance, Evaluation,
    ReadErrors, SbomImported, Supplier, WriteErrors,
};

/// Stored advisories matching a search.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AdvisoryList {
    /// The advisory database's digest.
    database: String,
    /// How many match in all.
    total: usize,
    /// The first `limit` of them.
    #[schema(value_type = Vec<Advisory>)]
    advisories: Vec<tollgate_control::compliance::AdvisoryView>,
}

/// Every stored advisory id with its `modified`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AdvisoryVersions {
    /// The advisory database's digest.
    database: String,
    /// Id to `modified`.
    records: std::collections::BTreeMap<String, String>,
}

/// What a VEX import stored.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VexImported {
    /// Statements stored.
    statements: usize,
}

/// Document media types accepted (JSON in every flavour producers label it).
const DOCUMENT_TYPES: &[&str] = &[
    "application/json",
    "application/vnd.cyclonedx+json",
    "application/spdx+json",
    "application/openvex+json",
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/suppliers/{name}", patch(update_supplier))
        .route("/api/v1/models", get(list_models).post(put_model))
        .route(
            "/api/v1/devices/{id}/inventory",
            get(get_inventory).put(set_inventory),
        )
        .route("/api/v1/sboms", get(list_sboms).post(import_sbom))
        .route(
            "/api/v1/advisories",
            get(list_advisories).post(import_advisories),
        )
        .route("/api/v1/advisories/modified", get(advisory_versions))
        .route("/api/v1/advisories/{id}/affected", get(advisory_affected))
        .route("/api/v1/vex", post(import_vex))
        .route("/api/v1/compliance", get(report))
        .route("/api/v1/compliance/status", get(status))
        .route("/api/v1/compliance/evaluate", post(evaluate))
        .route(
            "/api/v1/compliance/waivers",
            get(list_waivers).post(add_waiver),
        )
        .route("/api/v1/compliance/waivers/{id}", delete(remove_waiver))
}

/// Suppliers with their disclosure contact and support end.
pub(super) fn suppliers_with_info(cp: &Control) -> Result<Vec<serde_json::Value>, ControlError> {
    let info = cp.supplier_infos()?;
    Ok(cp
        .suppliers()
        .into_iter()
        .map(|s| {
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            if let Some(i) = info.get(&s.name) {
                v["disclosure_contact"] = i.disclosure_contact.clone().into();
                v["support_end"] = i.support_end.into();
            }
            v
        })
        .collect())
}

/// A document body, with the larger limit.
async fn document(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    super::body::media_type(headers, DOCUMENT_TYPES)?;
    let bytes = super::body::read(
        body,
        headers,
        s.limits.max_document_bytes,
        s.limits.document_timeout,
    )
    .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "this route needs the document as its body".into(),
        ));
    }
    Ok(bytes.to_vec())
}

/// Change a supplier's disclosure contact or support end.
#[utoipa::path(patch, path = "/api/v1/suppliers/{name}", tag = "suppliers",
    description = "Admin route. An empty contact or a `support_end` of 0 clears it.",
    params(("name" = String, Path, description = "Supplier name")),
    request_body(content = SupplierUpdate, content_type = "application/json"),
    responses((status = 200, description = "The supplier", body = Supplier), WriteErrors))]
async fn update_supplier(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: SupplierUpdate = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || {
            // An unknown supplier here is a missing resource (404), not a refused enrollment.
            if !cp.suppliers().iter().any(|s| s.name == name) {
                return Err(ControlError::NotFound(format!("supplier {name:?}")));
            }
            let cur = cp.supplier_infos()?.remove(&name).unwrap_or_default();
            let contact = match req.disclosure_contact {
                Some(c) if c.trim().is_empty() => None,
                Some(c) => Some(c),
                None => cur.disclosure_contact,
            };
            let end = match req.support_end {
                Some(0) => None,
                Some(e) => Some(e),
                None => cur.support_end,
            };
            cp.set_supplier_info(&name, contact, end, &who)?;
            suppliers_with_info(&cp)?
                .into_iter()
                .find(|v| v["name"] == name.as_str())
                .ok_or_else(|| ControlError::UnknownSupplier(name.clone()))
        })
        .await?,
    ))
}

/// Every device model.
#[utoipa::path(get, path = "/api/v1/models", tag = "suppliers", description = "Read route (any operator).",
    responses((status = 200, description = "Every model", body = Vec<ModelView>), ReadErrors))]
async fn list_models(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.models()).await?))
}

/// Record a device model (or change one).
#[utoipa::path(post, path = "/api/v1/models", tag = "suppliers", description = "Admin route.",
    request_body(content = ModelView, content_type = "application/json"),
    responses((status = 201, description = "The model", body = ModelView), WriteErrors))]
async fn put_model(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: ModelView = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let v = blocking(move || cp.put_model(&req, &who)).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// A device's inventory.
#[utoipa::path(get, path = "/api/v1/devices/{id}/inventory", tag = "compliance", description = "Read route (any operator).",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The inventory", body = InventoryView), ReadErrors))]
async fn get_inventory(
    State(s): State<AppState>,
    _a: Reader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || {
            cp.device(&id)?;
            cp.inventory(&id)
        })
        .await?,
    ))
}

/// Set a device's inventory.
#[utoipa::path(put, path = "/api/v1/devices/{id}/inventory", tag = "compliance", description = "Admin route.",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = InventoryView, content_type = "application/json"),
    responses((status = 200, description = "The inventory", body = InventoryView), WriteErrors))]
async fn set_inventory(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: InventoryView = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || cp.set_inventory(&id, &req, &who)).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SbomQuery {
    model: String,
    firmware: String,
    #[serde(default)]
    supplier: Option<String>,
}

/// Every stored SBOM.
#[utoipa::path(get, path = "/api/v1/sboms", tag = "compliance", description = "Read route (any operator).",
    responses((status = 200, description = "Every SBOM", body = Vec<SbomView>), ReadErrors))]
async fn list_sboms(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || Ok(cp.sboms())).await?))
}

/// Import the SBOM of a model's firmware.
#[utoipa::path(post, path = "/api/v1/sboms", tag = "compliance",
    description = "Admin route. The body is the SBOM file (CycloneDX or SPDX JSON).",
    params(SbomQuery),
    request_body(content = Object, description = "The SBOM document", content_type = "application/json"),
    responses((status = 201, description = "What was stored", body = SbomImported), WriteErrors))]
async fn import_sbom(
    State(s): State<AppState>,
    Admin(who): Admin,
    Query(q): Query<SbomQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let doc = document(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let v =
        blocking(move || cp.import_sbom(q.supplier.as_deref(), &q.model, &q.firmware, &doc, &who))
            .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AdvisoryQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Stored advisories.
#[utoipa::path(get, path = "/api/v1/advisories", tag = "compliance", description = "Read route (any operator).",
    params(AdvisoryQuery),
    responses((status = 200, description = "Matching advisories", body = AdvisoryList), ReadErrors))]
async fn list_advisories(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<AdvisoryQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    let (database, total, advisories) =
        blocking(move || Ok(cp.advisories(q.q.as_deref(), q.limit.unwrap_or(100).min(10_000))))
            .await?;
    Ok(Json(AdvisoryList {
        database,
        total,
        advisories,
    }))
}

/// Import a batch of OSV advisories.
#[utoipa::path(post, path = "/api/v1/advisories", tag = "compliance",
    description = "Admin route. The body is a JSON array of OSV records.",
    request_body(content = Vec<Object>, description = "OSV records", content_type = "application/json"),
    responses((status = 200, description = "What was stored", body = AdvisoriesImported), WriteErrors))]
async fn import_advisories(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let doc = document(&s, &headers, body).await?;
    // The records' own bytes, unchanged: the database hash is over what the files said.
    let records: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&doc).map_err(|e| {
            ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the body must be a JSON array of OSV records: {e}"),
            )
        })?;
    let records: Vec<Vec<u8>> = records
        .into_iter()
        .map(|r| r.get().as_bytes().to_vec())
        .collect();
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || cp.import_advisories(&records, &who)).await?,
    ))
}

/// Every stored advisory id with its `modified`.
#[utoipa::path(get, path = "/api/v1/advisories/modified", tag = "compliance", description = "Read route (any operator).",
    responses((status = 200, description = "The ids and versions", body = AdvisoryVersions), ReadErrors))]
async fn advisory_versions(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    let (database, records) = blocking(move || Ok(cp.advisory_versions())).await?;
    Ok(Json(AdvisoryVersions { database, records }))
}

/// What an advisory hits.
#[utoipa::path(get, path = "/api/v1/advisories/{id}/affected", tag = "compliance", description = "Read route (any operator).",
    params(("id" = String, Path, description = "Advisory id")),
    responses((status = 200, description = "Suppliers, models and devices hit", body = Affected), ReadErrors))]
async fn advisory_affected(
    State(s): State<AppState>,
    _a: Reader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.advisory_affected(&id)).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct VexQuery {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    supplier: Option<String>,
    #[serde(default)]
    firmware: Option<String>,
    #[serde(default)]
    firmware_from: Option<String>,
    #[serde(default)]
    firmware_before: Option<String>,
}

impl VexQuery {
    fn scope(self) -> Result<Option<VexScope>, ApiError> {
        let Some(model) = self.model else {
            if self.supplier.is_some()
                || self.firmware.is_some()
                || self.firmware_from.is_some()
                || self.firmware_before.is_some()
            {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "a VEX scope needs the model".into(),
                ));
            }
            return Ok(None);
        };
        let firmware = match (self.firmware, self.firmware_from, self.firmware_before) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "give either firmware or a firmware_from/firmware_before range".into(),
                ))
            }
            (Some(v), None, None) => FirmwareScope::Exact { version: v },
            (None, None, None) => FirmwareScope::All,
            (None, from, before) => FirmwareScope::Range { from, before },
        };
        Ok(Some(VexScope {
            supplier: self.supplier,
            model,
            firmware,
            embedded: false,
        }))
    }
}

/// Import a VEX document.
#[utoipa::path(post, path = "/api/v1/vex", tag = "compliance",
    description = "Admin route. The body is the VEX file (OpenVEX or CycloneDX VEX); the query scopes it to a model and firmware.",
    params(VexQuery),
    request_body(content = Object, description = "The VEX document", content_type = "application/json"),
    responses((status = 201, description = "How many statements were stored", body = VexImported), WriteErrors))]
async fn import_vex(
    State(s): State<AppState>,
    Admin(who): Admin,
    Query(q): Query<VexQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let scope = q.scope()?;
    let doc = document(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let n = blocking(move || cp.import_vex(&doc, scope, &who)).await?;
    Ok((StatusCode::CREATED, Json(VexImported { statements: n })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReportQuery {
    #[serde(default)]
    device: Option<String>,
}

/// The fleet's (or one device's) compliance.
#[utoipa::path(get, path = "/api/v1/compliance", tag = "compliance", description = "Read route (any operator).",
    params(ReportQuery),
    responses((status = 200, description = "Each device's compliance", body = Vec<DeviceCompliance>), ReadErrors))]
async fn report(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<ReportQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || cp.compliance_report(q.device.as_deref())).await?,
    ))
}

/// The compliance profile and summary.
#[utoipa::path(get, path = "/api/v1/compliance/status", tag = "compliance", description = "Read route (any operator).",
    responses((status = 200, description = "The status", body = ComplianceStatus), ReadErrors))]
async fn status(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || Ok(cp.compliance_status())).await?))
}

/// Evaluate the fleet now (or try a profile without applying it).
#[utoipa::path(post, path = "/api/v1/compliance/evaluate", tag = "compliance",
    description = "Admin route. Applies verdicts (quarantine, release) unless `dry_run` or a `profile` text is given.",
    request_body(content = Option<EvaluateRequest>, content_type = "application/json"),
    responses((status = 200, description = "The evaluation", body = Evaluation), WriteErrors))]
async fn evaluate(
    State(s): State<AppState>,
    _a: Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: EvaluateRequest = json_body(&s, &headers, body).await?.unwrap_or_default();
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || {
            if req.dry_run || req.profile.is_some() {
                cp.evaluate_dry_run(req.profile.as_deref())
            } else {
                cp.evaluate_fleet(None, "operator", None)
            }
        })
        .await?,
    ))
}

/// Every compliance waiver.
#[utoipa::path(get, path = "/api/v1/compliance/waivers", tag = "compliance", description = "Read route (any operator).",
    responses((status = 200, description = "Every waiver", body = Vec<WaiverView>), ReadErrors))]
async fn list_waivers(
    State(s): State<AppState>,
    _a: Reader,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || Ok(cp.waivers())).await?))
}

/// Waive a compliance rule for a device or model.
#[utoipa::path(post, path = "/api/v1/compliance/waivers", tag = "compliance", description = "Admin route.",
    request_body(content = WaiverRequest, content_type = "application/json"),
    responses((status = 201, description = "The waiver", body = WaiverView), WriteErrors))]
async fn add_waiver(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: WaiverRequest = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let v = blocking(move || {
        let secs = i64::try_from(req.expires_in_secs).unwrap_or(i64::MAX);
        let expires_at = time::OffsetDateTime::now_utc()
            .unix_timestamp()
            .saturating_add(secs);
        cp.add_waiver(
            &req.rule,
            req.device.as_deref(),
            req.model.as_deref(),
            &req.reason,
            expires_at,
            &who,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Remove a compliance waiver.
#[utoipa::path(delete, path = "/api/v1/compliance/waivers/{id}", tag = "compliance", description = "Admin route.",
    params(("id" = i64, Path, description = "Waiver id")),
    responses((status = 204, description = "Removed"), WriteErrors))]
async fn remove_waiver(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    blocking(move || cp.remove_waiver(id, &who)).await?;
    Ok(StatusCode::NO_CONTENT)
}
