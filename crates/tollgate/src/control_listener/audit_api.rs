//! Audit-log routes of the admin API.
//!
//! `GET /api/v1/audit/key` (the verifier key); `GET /api/v1/audit/checkpoint` (the latest
//! signed checkpoint) and `POST /api/v1/audit/checkpoint` (sign one now over every entry);
//! `GET /api/v1/audit/checkpoints` (every signed checkpoint); `GET /api/v1/audit/entries?from=N&limit=M`
//! (entries with their exact bytes, `data`, and their leaf hashes);
//! `GET /api/v1/audit/proof/inclusion?index=N` and `GET /api/v1/audit/proof/consistency?from_size=M`
//! (against the latest checkpoint, signed first if it does not cover what is asked: JSON with
//! base64 hashes, plus the C2SP `tlog-proof` text in `text`); `GET /api/v1/audit/verify`
//! (the whole log re-hashed and checked against every checkpoint); `POST /api/v1/audit/rotate`
//! (archive the log under `archive/` in its directory and start a new one that commits to its
//! final checkpoint). Handlers only adapt: the log decides.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tollgate_audit::log::{CheckpointLine, Log, Signed, CHECKPOINTS};
use tollgate_audit::{merkle, note, AuditError};
use utoipa::{IntoParams, ToSchema};

use super::admin::{Admin, ApiError, AppState, Reader};
use super::openapi::{AuditCheckpoint, AuditVerifyReport, ReadErrors, WriteErrors};
use super::problem::Problem;
use crate::audit::Audit;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/audit/key", get(key))
        .route("/api/v1/audit/checkpoint", get(latest).post(sign_now))
        .route("/api/v1/audit/checkpoints", get(checkpoints))
        .route("/api/v1/audit/entries", get(entries))
        .route("/api/v1/audit/proof/inclusion", get(inclusion))
        .route("/api/v1/audit/proof/consistency", get(consistency))
        .route("/api/v1/audit/verify", get(verify))
        .route("/api/v1/audit/rotate", axum::routing::post(rotate))
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        ApiError(super::status_of_audit(&e), e.to_string())
    }
}

/// Most entries one page returns.
const MAX_PAGE: u64 = 10_000;

fn b64(h: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn audit_of(s: &AppState) -> Result<Arc<Audit>, ApiError> {
    s.audit.clone().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "the audit log is disabled ([audit] enabled = false)".into(),
        )
    })
}

/// Run `f` on the log, on a blocking thread.
async fn on_log<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Audit, &mut Log) -> Result<T, AuditError> + Send + 'static,
) -> Result<T, ApiError> {
    let a = audit_of(s)?;
    tokio::task::spawn_blocking(move || a.with_log(|l| f(&a, l)))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// A signed checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SignedCheckpoint {
    /// The log's origin line.
    origin: String,
    /// Entries it covers.
    size: u64,
    /// The Merkle root, base64.
    root: String,
    /// The signed note (C2SP checkpoint).
    note: String,
}

/// The verifier key.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VerifierKey {
    /// In the signed-note verifier key format.
    verifier_key: String,
}

/// The latest checkpoint and the log's size.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LatestCheckpoint {
    /// None before the first one is signed.
    checkpoint: Option<SignedCheckpoint>,
    /// Entries in the log.
    entries: u64,
    /// Why the log refuses to sign, when it does.
    refusing: Option<String>,
}

/// Every signed checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CheckpointList {
    #[schema(value_type = Vec<AuditCheckpoint>)]
    checkpoints: Vec<CheckpointLine>,
}

/// One entry.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EntryView {
    /// Its index, from 0.
    index: u64,
    /// Its leaf hash, base64.
    leaf_hash: String,
    /// The entry, parsed (null if its bytes are not JSON).
    #[schema(value_type = Object)]
    entry: Value,
    /// Its exact bytes.
    data: String,
}

/// A page of entries.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EntryPage {
    /// Entries in the log.
    size: u64,
    /// The first index asked for.
    from: u64,
    entries: Vec<EntryView>,
}

/// An inclusion proof.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct InclusionProof {
    index: u64,
    /// The tree size the proof is against.
    size: u64,
    /// Base64.
    leaf_hash: String,
    /// The entry's exact bytes.
    data: String,
    /// The proof's hashes, base64.
    proof: Vec<String>,
    /// The root, base64.
    root: String,
    /// The signed checkpoint note.
    checkpoint: String,
    /// The C2SP `tlog-proof` text.
    text: String,
}

/// A consistency proof.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConsistencyProof {
    old_size: u64,
    /// Base64.
    old_root: String,
    size: u64,
    /// Base64.
    root: String,
    /// Base64 hashes.
    proof: Vec<String>,
    /// The signed checkpoint note.
    checkpoint: String,
    /// The C2SP `tlog-proof` text.
    text: String,
}

/// The whole log checked.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Verification {
    /// Whether everything checked and the log is not refusing.
    clean: bool,
    refusing: Option<String>,
    #[schema(value_type = AuditVerifyReport)]
    report: Value,
}

/// A rotation.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Rotated {
    /// Where the old log was archived.
    archive: String,
    /// Its final checkpoint.
    #[serde(rename = "final")]
    last: SignedCheckpoint,
    /// Entries in the new log.
    entries: u64,
}

fn signed_json(origin: &str, s: &Signed) -> SignedCheckpoint {
    SignedCheckpoint {
        origin: origin.to_owned(),
        size: s.size,
        root: b64(&s.root),
        note: s.note.clone(),
    }
}

/// The audit log's verifier key.
#[utoipa::path(get, path = "/api/v1/audit/key", tag = "audit", description = "Read route (any operator). 404 when the audit log is disabled.",
    responses((status = 200, description = "The key", body = VerifierKey), ReadErrors))]
async fn key(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let a = audit_of(&s)?;
    Ok(Json(VerifierKey {
        verifier_key: a.verifier_key().to_string(),
    }))
}

/// The latest signed checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit", description = "Read route (any operator).",
    responses((status = 200, description = "The checkpoint and the log's size", body = LatestCheckpoint), ReadErrors))]
async fn latest(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let v = on_log(&s, |_, l| {
        let refusing = l.refusing().map(str::to_owned);
        let signed = l.latest().map(|c| signed_json(l.origin(), c));
        Ok(LatestCheckpoint {
            checkpoint: signed,
            entries: l.size(),
            refusing,
        })
    })
    .await?;
    Ok(Json(v))
}

/// Sign a checkpoint over every entry now.
#[utoipa::path(post, path = "/api/v1/audit/checkpoint", tag = "audit", description = "Admin route.",
    responses((status = 200, description = "The checkpoint", body = SignedCheckpoint), WriteErrors))]
async fn sign_now(State(s): State<AppState>, _a: Admin) -> Result<impl IntoResponse, ApiError> {
    let v = on_log(&s, |_, l| {
        let c = l.checkpoint()?;
        Ok(signed_json(l.origin(), &c))
    })
    .await?;
    Ok(Json(v))
}

/// Every signed checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", description = "Read route (any operator).",
    responses((status = 200, description = "The checkpoints", body = CheckpointList), ReadErrors))]
async fn checkpoints(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let v = on_log(&s, |_, l| {
        let path = l.dir().join(CHECKPOINTS);
        let text = std::fs::read_to_string(&path).map_err(|e| AuditError::io(&path, e))?;
        let list: Vec<CheckpointLine> = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        Ok(CheckpointList { checkpoints: list })
    })
    .await?;
    Ok(Json(v))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    100
}

/// A page of entries, with their exact bytes and leaf hashes.
#[utoipa::path(get, path = "/api/v1/audit/entries", tag = "audit", description = "Read route (any operator).",
    params(Page),
    responses((status = 200, description = "The entries", body = EntryPage), ReadErrors))]
async fn entries(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<Page>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let v = on_log(&s, move |_, l| {
        let size = l.size();
        let list = if q.from >= size {
            Vec::new()
        } else {
            l.entries_range(q.from, limit)?
        };
        let out: Vec<EntryView> = list
            .into_iter()
            .enumerate()
            .map(|(i, data)| EntryView {
                index: q.from + i as u64,
                leaf_hash: b64(&merkle::leaf_hash(&data)),
                entry: serde_json::from_slice::<Value>(&data).unwrap_or(Value::Null),
                data: String::from_utf8_lossy(&data).into_owned(),
            })
            .collect();
        Ok(EntryPage {
            size,
            from: q.from,
            entries: out,
        })
    })
    .await?;
    Ok(Json(v))
}

/// The latest checkpoint, signed now if it does not cover `need` entries.
fn covering(l: &mut Log, need: u64) -> Result<Signed, AuditError> {
    match l.latest() {
        Some(c) if c.size >= need => Ok(c.clone()),
        _ => l.checkpoint(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InclusionQuery {
    index: u64,
}

/// An entry's inclusion proof against the latest checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/proof/inclusion", tag = "audit", description = "Read route (any operator). Signs a checkpoint first if the latest does not cover the entry.",
    params(InclusionQuery),
    responses((status = 200, description = "The proof", body = InclusionProof), ReadErrors,
        (status = 409, description = "The log contradicts its checkpoints", body = Problem, content_type = "application/problem+json")))]
async fn inclusion(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<InclusionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let v = on_log(&s, move |_, l| {
        if q.index >= l.size() {
            return Err(AuditError::OutOfRange {
                what: "index",
                value: q.index,
                size: l.size(),
            });
        }
        let c = covering(l, q.index + 1)?;
        let proof = l.inclusion_proof(q.index, c.size)?;
        let data = l.entry(q.index)?;
        Ok(InclusionProof {
            index: q.index,
            size: c.size,
            leaf_hash: b64(&merkle::leaf_hash(&data)),
            data: String::from_utf8_lossy(&data).into_owned(),
            proof: proof.iter().map(|h| b64(h)).collect(),
            root: b64(&c.root),
            text: note::inclusion_proof_text(q.index, &proof, &c.note),
            checkpoint: c.note,
        })
    })
    .await?;
    Ok(Json(v))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ConsistencyQuery {
    from_size: u64,
}

/// A consistency proof from an earlier size to the latest checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/proof/consistency", tag = "audit", description = "Read route (any operator).",
    params(ConsistencyQuery),
    responses((status = 200, description = "The proof", body = ConsistencyProof), ReadErrors,
        (status = 409, description = "The log contradicts its checkpoints", body = Problem, content_type = "application/problem+json")))]
async fn consistency(
    State(s): State<AppState>,
    _a: Reader,
    Query(q): Query<ConsistencyQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let v = on_log(&s, move |_, l| {
        let c = covering(l, q.from_size)?;
        if q.from_size > c.size {
            return Err(AuditError::OutOfRange {
                what: "from_size",
                value: q.from_size,
                size: c.size,
            });
        }
        let proof = l.consistency_proof(q.from_size, c.size)?;
        let old_root = l.root_at(q.from_size)?;
        Ok(ConsistencyProof {
            old_size: q.from_size,
            old_root: b64(&old_root),
            size: c.size,
            root: b64(&c.root),
            proof: proof.iter().map(|h| b64(h)).collect(),
            text: note::consistency_proof_text(q.from_size, &proof, &c.note),
            checkpoint: c.note,
        })
    })
    .await?;
    Ok(Json(v))
}

/// Re-hash the whole log and check it against every checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", description = "Read route (any operator).",
    responses((status = 200, description = "The report", body = Verification), ReadErrors))]
async fn verify(State(s): State<AppState>, _a: Reader) -> Result<impl IntoResponse, ApiError> {
    let v = on_log(&s, |_, l| {
        let refusing = l.refusing().map(str::to_owned);
        let report = l.verify()?;
        Ok(Verification {
            clean: report.clean() && refusing.is_none(),
            refusing,
            report: serde_json::to_value(&report).unwrap_or_default(),
        })
    })
    .await?;
    Ok(Json(v))
}

/// Archive the log and start a new one that commits to its final checkpoint.
#[utoipa::path(post, path = "/api/v1/audit/rotate", tag = "audit", description = "Admin route.",
    responses((status = 200, description = "Where the old log went, and its final checkpoint", body = Rotated), WriteErrors))]
async fn rotate(
    State(s): State<AppState>,
    Admin(who): Admin,
) -> Result<impl IntoResponse, ApiError> {
    let v = on_log(&s, move |_, l| {
        let stamp = tollgate_audit::entry::now_rfc3339()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(15)
            .collect::<String>();
        let archive = l
            .dir()
            .join("archive")
            .join(format!("{stamp}-{}", l.size()));
        let last = l.rotate(&archive)?;
        tracing::info!(by = %who, archive = %archive.display(), size = last.size, "audit log rotated");
        Ok(Rotated {
            archive: archive.display().to_string(),
            last: signed_json(l.origin(), &last),
            entries: l.size(),
        })
    })
    .await?;
    Ok(Json(v))
}
