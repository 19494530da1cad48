//! Who may call the admin API, and as whom: the one place a request becomes a [`Caller`].
//!
//! Two extractors guard every `/api/v1` handler: [`Reader`] for routes that only read (any
//! operator role), and [`Admin`] for routes that change something (the `admin` role). Both are
//! decided before a body is read. A caller is proved by a client certificate from Tollgate's own
//! CA naming an operator that the registry knows, is not revoked, and holds that certificate
//! unrevoked; the role is the registry's ([`super::operators_api::operator_of_certificate`]). A
//! supplier's CA never counts (it could write any SAN). Failing that, by a dashboard session
//! cookie (and, for a change, the session's CSRF token and our origin), which
//! [`crate::dashboard::Dashboard::api_caller`] checks; the session's operator must still be
//! active, and acts with the lesser of the session's role and its role now. A refusal is a 403
//! with the reason and an `admin_denied` event (summarised per source when repeated).
//!
//! This module decides identity and role only; it must not look at what the request asks for.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use tollgate_control::PeerKind;
use tollgate_events::EventKind;
use tollgate_pki::Role;

use super::admin::{ApiError, AppState};
use super::Peer;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OperatorRole {
    /// Read and change everything.
    Admin,
    /// Read only.
    Viewer,
}

/// An authenticated operator: the name every event and audit entry records as `by`.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub name: String,
    pub role: OperatorRole,
}

/// Extractor: any operator (routes that only read).
pub(super) struct Reader(pub(super) Caller);

/// Extractor: an operator with the `admin` role (routes that change state); holds the name.
pub(super) struct Admin(pub(super) String);

/// The operator a request comes from: `Ok(None)` when it shows no credential at all, `Err`
/// with the reason when it shows one that does not hold.
fn caller(parts: &Parts, state: &AppState) -> Result<Option<Caller>, String> {
    match certificate_caller(parts, state) {
        Some(c) => Ok(Some(c)),
        None => session_caller(parts, state),
    }
}

/// The dashboard's path: a session cookie (see [`crate::dashboard`]).
fn session_caller(parts: &Parts, state: &AppState) -> Result<Option<Caller>, String> {
    use crate::dashboard::Role;
    let Some((name, role)) = state.dashboard.api_caller(&parts.method, &parts.headers)? else {
        return Ok(None);
    };
    // The operator behind the session, as the registry has it now: revoked (or demoted) since
    // the sign-in, the session no longer carries what it had.
    let now = match registry_read(|| state.cp.operator_role(&name)) {
        Ok(Some(role)) => role,
        Ok(None) => return Err(format!("operator {name} is revoked")),
        Err(e) => return Err(format!("operator {name}: {e}")),
    };
    let role = match (role, now) {
        (Role::Admin, tollgate_registry::OperatorRole::Admin) => OperatorRole::Admin,
        _ => OperatorRole::Viewer,
    };
    Ok(Some(Caller { name, role }))
}

/// Run a small registry read from a request's extractor, off the async worker where the
/// runtime allows it (the registry's lock may be held by a long write).
pub(super) fn registry_read<T>(read: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read),
        _ => read(),
    }
}

/// Extractor: an operator proved by a client certificate, never by a session (the routes that
/// sign browsers in: a session must not mint sessions).
pub(super) struct CertificateOperator(pub(super) Caller);

/// The operator a request's client certificate names, if the registry holds it active with
/// that certificate unrevoked.
fn certificate_caller(parts: &Parts, state: &AppState) -> Option<Caller> {
    match parts.extensions.get::<Peer>() {
        Some(Peer {
            role: Role::Admin(name),
            kind: PeerKind::Operational,
            serial: Some(serial),
            ..
        }) => super::operators_api::operator_of_certificate(state, name, serial),
        _ => None,
    }
}

/// Refuse a request: a 403 and an `admin_denied` event (repeats from one source summarised).
fn deny(parts: &Parts, state: &AppState, why: &str) -> ApiError {
    refuse(state, parts, why)
}

/// [`deny`] for a handler whose decision needs the request's path (whose certificate an
/// operator may renew): the same 403 and `admin_denied` event.
pub(super) fn refuse(state: &AppState, parts: &Parts, why: &str) -> ApiError {
    let addr = parts.extensions.get::<Peer>().map(|p| p.addr);
    let detail = format!("{} {}: {why}", parts.method, parts.uri.path());
    let individual = addr.is_none_or(|a| {
        state
            .refusals
            .control
            .note_addr(a.ip(), "not_admin", || detail.clone())
    });
    if individual {
        state.events.emit(EventKind::AdminDenied { addr, detail });
    }
    ApiError(StatusCode::FORBIDDEN, why.to_owned())
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        caller(parts, state)
            .map_err(|why| deny(parts, state, &why))?
            .map(Reader)
            .ok_or_else(|| deny(parts, state, "an operator client certificate is required"))
    }
}

impl FromRequestParts<AppState> for CertificateOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        certificate_caller(parts, state).map(CertificateOperator).ok_or_else(|| {
            deny(
                parts,
                state,
                "an operator client certificate is required (a dashboard session cannot sign browsers in)",
            )
        })
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match caller(parts, state).map_err(|why| deny(parts, state, &why))? {
            Some(Caller {
                name,
                role: OperatorRole::Admin,
            }) => Ok(Admin(name)),
            Some(c) => Err(deny(
                parts,
                state,
                &format!(
                    "operator {} has the viewer role, which cannot change anything",
                    c.name
                ),
            )),
            None => Err(deny(
                parts,
                state,
                "an admin client certificate is required",
            )),
        }
    }
}
