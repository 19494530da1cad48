//! The operators' routes and the server certificate's renewal, and the certificate half of
//! deciding who calls the admin API ([`operator_of_certificate`], used by [`super::auth`]).
//!
//! Routes (under `/api/v1`): `GET|POST /operators`, `GET /operators/{name}`,
//! `POST /operators/{name}/revoke`, `POST /operators/{name}/renew` (the operator itself or an
//! admin), `POST /operators/{name}/role`, `POST /ca/server/renew`. Each handler passes the
//! caller's name to the control plane as `by`; the control plane writes the action ahead to
//! the audit log, does it, and emits its event. Thin adapters only: no decisions beyond
//! "may this caller renew that operator".

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tollgate_control::operators::parse_role;
use tollgate_control::requests::{
    AddOperator, OperatorRoleRequest, RenewOperator, RenewServer, RevokeOperator,
};

use super::admin::{blocking, json_body, required, Admin, ApiError, AppState, Reader};
use super::auth::{Caller, OperatorRole};
use super::openapi::{IssuedOperator, Operator, ReadErrors, ServerRenewed, WriteErrors};

/// The caller a verified operator certificate stands for: the operator it names must exist,
/// not be revoked, and hold `serial` unrevoked; its role is the registry's. `None` otherwise
/// (the reason is logged; the caller gets the generic refusal).
pub(super) fn operator_of_certificate(
    state: &AppState,
    name: &str,
    serial: &str,
) -> Option<Caller> {
    let cp = &state.cp;
    let found = super::auth::registry_read(|| cp.operator_for_certificate(name, serial));
    match found {
        Ok(Some(role)) => Some(Caller {
            name: name.to_owned(),
            role: match role {
                tollgate_registry::OperatorRole::Admin => OperatorRole::Admin,
                tollgate_registry::OperatorRole::Viewer => OperatorRole::Viewer,
            },
        }),
        Ok(None) => {
            tracing::info!(
                operator = name,
                serial,
                "operator certificate refused: unknown or revoked operator, or a certificate it does not hold (revoked or never issued)"
            );
            None
        }
        Err(e) => {
            tracing::error!(
                operator = name,
                "reading the operator from the registry: {e}"
            );
            None
        }
    }
}

/// Every operator.
#[utoipa::path(get, path = "/api/v1/operators", tag = "operators", description = "Read route (any operator).",
    responses((status = 200, description = "Every operator", body = Vec<Operator>), ReadErrors))]
async fn list(State(s): State<AppState>, _r: Reader) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.operators()).await?))
}

/// One operator.
#[utoipa::path(get, path = "/api/v1/operators/{name}", tag = "operators", description = "Read route (any operator).",
    params(("name" = String, Path, description = "Operator name")),
    responses((status = 200, description = "The operator", body = Operator), ReadErrors))]
async fn show(
    State(s): State<AppState>,
    _r: Reader,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let cp = Arc::clone(&s.cp);
    Ok(Json(blocking(move || cp.operator(&name)).await?))
}

/// Add a named operator and issue its certificate from its CSR.
#[utoipa::path(post, path = "/api/v1/operators", tag = "operators", description = "Admin route.",
    request_body(content = AddOperator, content_type = "application/json"),
    responses((status = 201, description = "The operator and its certificate", body = IssuedOperator), WriteErrors))]
async fn add(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: AddOperator = required(&s, &headers, body).await?;
    let role = parse_role(&req.role)?;
    let cp = Arc::clone(&s.cp);
    let issued =
        blocking(move || cp.add_operator(&req.name, role, &req.csr, req.validity_days, &who))
            .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Revoke an operator and its certificates.
#[utoipa::path(post, path = "/api/v1/operators/{name}/revoke", tag = "operators", description = "Admin route. The last active admin cannot be revoked.",
    params(("name" = String, Path, description = "Operator name")),
    request_body(content = Option<RevokeOperator>, content_type = "application/json"),
    responses((status = 200, description = "The operator", body = Operator), WriteErrors))]
async fn revoke(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: RevokeOperator = json_body(&s, &headers, body).await?.unwrap_or_default();
    let reason = req.reason.unwrap_or_else(|| "unspecified".into());
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || cp.revoke_operator(&name, &reason, &who)).await?,
    ))
}

/// Renew an operator's certificate from a new CSR.
#[utoipa::path(post, path = "/api/v1/operators/{name}/renew", tag = "operators", description = "The operator itself, or an admin.",
    params(("name" = String, Path, description = "Operator name")),
    request_body(content = RenewOperator, content_type = "application/json"),
    responses((status = 201, description = "The new certificate", body = IssuedOperator), WriteErrors))]
async fn renew(
    State(s): State<AppState>,
    Reader(caller): Reader,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<impl IntoResponse, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = parts.headers.clone();
    // An operator renews itself; renewing another takes the admin role.
    if caller.name != name && caller.role != OperatorRole::Admin {
        return Err(super::auth::refuse(
            &s,
            &parts,
            &format!(
                "operator {} may renew only its own certificate; renewing {name} takes the admin role",
                caller.name
            ),
        ));
    }
    let req: RenewOperator = required(&s, &headers, body).await?;
    let cp = Arc::clone(&s.cp);
    let issued = blocking(move || {
        cp.renew_operator(
            &name,
            &req.csr,
            req.validity_days,
            req.revoke_old,
            &caller.name,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Change an operator's role.
#[utoipa::path(post, path = "/api/v1/operators/{name}/role", tag = "operators", description = "Admin route.",
    params(("name" = String, Path, description = "Operator name")),
    request_body(content = OperatorRoleRequest, content_type = "application/json"),
    responses((status = 200, description = "The operator", body = Operator), WriteErrors))]
async fn set_role(
    State(s): State<AppState>,
    Admin(who): Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: OperatorRoleRequest = required(&s, &headers, body).await?;
    let role = parse_role(&req.role)?;
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || cp.set_operator_role(&name, role, &who)).await?,
    ))
}

/// Renew the gateway's own TLS certificate.
#[utoipa::path(post, path = "/api/v1/ca/server/renew", tag = "server", description = "Admin route. Both listeners use the new certificate for new connections.",
    request_body(content = Option<RenewServer>, content_type = "application/json"),
    responses((status = 200, description = "The new certificate", body = ServerRenewed), WriteErrors))]
async fn renew_server(
    State(s): State<AppState>,
    Admin(who): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: RenewServer = json_body(&s, &headers, body).await?.unwrap_or_default();
    let cp = Arc::clone(&s.cp);
    Ok(Json(
        blocking(move || cp.renew_server(&req.dns, &req.ips, req.validity_days, &who)).await?,
    ))
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/operators", get(list).post(add))
        .route("/api/v1/operators/{name}", get(show))
        .route("/api/v1/operators/{name}/revoke", post(revoke))
        .route("/api/v1/operators/{name}/renew", post(renew))
        .route("/api/v1/operators/{name}/role", post(set_role))
        .route("/api/v1/ca/server/renew", post(renew_server))
}
