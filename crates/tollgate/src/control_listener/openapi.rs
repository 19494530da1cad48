//! The OpenAPI 3.1 document of the admin API, generated from the handlers' `#[utoipa::path]`
//! annotations, served at `GET /api/v1/openapi.json` and committed as `docs/openapi.json`.
//!
//! This module owns the document's frame: the list of documented operations, the security
//! scheme (`mutualTLS`: an operator's client certificate from Tollgate's CA), the reusable
//! error responses (every error is a [`Problem`]) and the schemas of values whose shape is
//! owned by another crate and described here only as an object. It must not change what a
//! route does. The test at the bottom fails when `docs/openapi.json` differs from what the
//! code generates (`UPDATE_OPENAPI=1 cargo test -p tollgate openapi` rewrites it), and when a
//! route under `/api/v1` is not in the document.

use std::borrow::Cow;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::SecurityScheme;
use utoipa::openapi::{ObjectBuilder, RefOr, Schema};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::admin::Reader;
use super::problem::Problem;

/// A value whose shape another crate owns: documented as a JSON object with a description.
macro_rules! opaque_object {
    ($($name:ident => $doc:literal,)*) => {$(
        #[doc = $doc]
        #[allow(dead_code)] // a schema only: never built
        pub(super) struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new().description(Some($doc)).into()
            }
        }
        impl utoipa::ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    )*};
}

opaque_object! {
    Supplier => "A supplier: name, groups its devices get, whether re-enrollment is allowed, disclosure contact and support end.",
    CaStatus => "The CA hierarchy: each certificate's subject, serial and validity, and where its key is.",
    Connection => "A live MQTT connection: device, client id, address, counters, round-trip time.",
    SbomImported => "What an SBOM import stored.",
    Advisory => "An advisory (OSV): id, summary, severity, affected packages.",
    AdvisoriesImported => "What an advisory import stored, updated and skipped.",
    Affected => "What an advisory hits: suppliers, models and devices.",
    DeviceCompliance => "One device's compliance: its verdict and findings.",
    ComplianceStatus => "The compliance profile in force and the fleet's summary.",
    Evaluation => "A compliance evaluation: each device's verdict, and what changed.",
    DeviceStats => "A device's last hour in buckets, current rates, TCP health, baseline and learning state, sources and active alerts.",
    FleetStats => "Fleet statistics: connections, rates, alerts, round-trip times.",
    Finding => "A configuration finding with its state (open, resolved, suppressed).",
    FindingSuppression => "A configuration finding suppression: rule, resource, reason, until, by.",
    Sarif => "A SARIF 2.1.0 log of the open configuration findings.",
    AuditCheckpoint => "A checkpoint line of the audit log: size, root and the signed note.",
    AuditVerifyReport => "The audit log re-hashed and checked against every checkpoint.",
    Explanation => "Whether a device may publish, retain or subscribe: `allowed`, the device's `state` and `groups`, and the `steps` (rules) that decided.",
    DashboardLogin => "A one-time dashboard sign-in URL: `url`, `expires_at`, `role`.",
    DeletedDevice => "What deleting a device did: the serials revoked and the connections closed.",
    Operator => "A named operator: name, role (`admin`, `viewer`), state, certificates.",
    IssuedOperator => "An operator's certificate just issued: the operator and the certificate (PEM).",
    ServerRenewed => "The gateway's new TLS certificate: serial, names, validity.",
}

/// Errors of a route that only reads.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum ReadErrors {
    /// A path or query parameter that does not parse.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Not an operator.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// What the path names does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The server could not answer.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}

/// Errors of a route that changes something.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum WriteErrors {
    /// A body that is not JSON, or a path or query parameter that does not parse.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Not an admin.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// What the path or body names does not exist.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// The body did not arrive in time.
    #[response(status = 408, content_type = "application/problem+json")]
    Timeout(Problem),
    /// The change conflicts with the current state.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The body is larger than the route's limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body's media type is not one the route takes.
    #[response(status = 415, content_type = "application/problem+json")]
    MediaType(Problem),
    /// The body is JSON of the wrong shape, or asks for something invalid.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// The server could not do it.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The audit log could not record the action first; nothing was done (retry later).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "mutualTLS",
            SecurityScheme::MutualTls {
                description: Some(
                    "An operator's client certificate issued by Tollgate's CA (`admin/admin.crt` in the data directory, or a named operator's). Read routes take any operator; admin routes (those that change something) need the `admin` role."
                        .into(),
                ),
                extensions: None,
            },
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "The admin API of a Tollgate gateway, on its control listener (HTTPS, port 8443 by default). Every caller proves itself with a client certificate (`mutualTLS`). Routes that only read take any operator; routes that change something need an admin. Every error is an RFC 9457 problem document (`application/problem+json`). See docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    security(("mutualTLS" = [])),
    modifiers(&Security),
    components(schemas(Problem)),
    tags(
        (name = "server", description = "Health, the CA, live connections, this document"),
        (name = "devices", description = "Devices, their lifecycle, tokens and groups"),
        (name = "operators", description = "Named operators, their roles and certificates"),
        (name = "suppliers", description = "Suppliers and device models"),
        (name = "policy", description = "The policy, its versions, and least-privilege suggestions"),
        (name = "compliance", description = "Inventory, SBOMs, advisories, VEX, compliance and waivers"),
        (name = "detection", description = "Statistics, alerts and their suppressions"),
        (name = "findings", description = "Configuration findings and their suppressions"),
        (name = "audit", description = "The tamper-evident audit log: entries, proofs, checkpoints"),
    ),
    paths(
        openapi_json,
        super::admin::health,
        super::admin::list_devices,
        super::admin::add_device,
        super::admin::get_device,
        super::admin::revoke_device,
        super::admin::revoke_devices,
        super::admin::quarantine_device,
        super::admin::release_device,
        super::admin::create_token,
        super::admin::connections,
        super::admin::list_suppliers,
        super::admin::add_supplier,
        super::admin::ca_status,
        super::policy_versions_api::groups,
        super::policy_versions_api::current,
        super::policy_versions_api::update,
        super::policy_versions_api::validate,
        super::policy_versions_api::history,
        super::policy_versions_api::version,
        super::policy_versions_api::diff,
        super::policy_versions_api::rollback,
        super::explain_api::explain,
        super::lifecycle_api::patch_device,
        super::lifecycle_api::delete_device,
        super::operators_api::list,
        super::operators_api::show,
        super::operators_api::add,
        super::operators_api::revoke,
        super::operators_api::renew,
        super::operators_api::set_role,
        super::operators_api::renew_server,
        super::dashboard_api::create_login,
        super::policy_api::observations,
        super::policy_api::suggest,
        super::policy_api::unused,
        super::compliance_api::update_supplier,
        super::compliance_api::list_models,
        super::compliance_api::put_model,
        super::compliance_api::get_inventory,
        super::compliance_api::set_inventory,
        super::compliance_api::list_sboms,
        super::compliance_api::import_sbom,
        super::compliance_api::list_advisories,
        super::compliance_api::import_advisories,
        super::compliance_api::advisory_versions,
        super::compliance_api::advisory_affected,
        super::compliance_api::import_vex,
        super::compliance_api::report,
        super::compliance_api::status,
        super::compliance_api::evaluate,
        super::compliance_api::list_waivers,
        super::compliance_api::add_waiver,
        super::compliance_api::remove_waiver,
        super::detection_api::device_stats,
        super::detection_api::fleet_stats,
        super::detection_api::list_alerts,
        super::detection_api::get_alert,
        super::detection_api::set_verdict,
        super::detection_api::list_suppressions,
        super::detection_api::add_suppression,
        super::detection_api::remove_suppression,
        super::findings_api::list,
        super::findings_api::scan,
        super::findings_api::sarif_doc,
        super::findings_api::suppressions,
        super::findings_api::suppress,
        super::findings_api::unsuppress,
        super::audit_api::key,
        super::audit_api::latest,
        super::audit_api::sign_now,
        super::audit_api::checkpoints,
        super::audit_api::entries,
        super::audit_api::inclusion,
        super::audit_api::consistency,
        super::audit_api::verify,
        super::audit_api::rotate,
    )
)]
pub(super) struct ApiDoc;

/// The document as served and committed (pretty JSON, one trailing newline).
pub(super) fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"the document did not serialize: {e}\"}}"));
        s.push('\n');
        s
    })
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server",
    description = "Read route (any operator). The OpenAPI 3.1 document of this API.",
    responses(
        (status = 200, description = "The document", body = Object, content_type = "application/json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn openapi_json(_a: Reader) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

    #[test]
    fn openapi_document_is_committed_as_generated() {
        let generated = document();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is not what the code generates; regenerate it with\n  \
             UPDATE_OPENAPI=1 cargo test -p tollgate openapi\nand commit the result"
        );
    }

    #[test]
    fn openapi_document_has_every_admin_route() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let sources = [
            include_str!("admin.rs"),
            include_str!("audit_api.rs"),
            include_str!("compliance_api.rs"),
            include_str!("detection_api.rs"),
            include_str!("findings_api.rs"),
            include_str!("policy_api.rs"),
            include_str!("policy_versions_api.rs"),
            include_str!("explain_api.rs"),
            include_str!("dashboard_api.rs"),
            include_str!("lifecycle_api.rs"),
            include_str!("operators_api.rs"),
        ];
        let mut routes = 0;
        for src in sources {
            for part in src.split(".route(").skip(1) {
                let Some(path) = part.trim_start().strip_prefix('"') else {
                    continue;
                };
                let path = path.split('"').next().unwrap();
                if !path.starts_with("/api/v1/") {
                    continue;
                }
                routes += 1;
                let ops = paths
                    .get(path)
                    .unwrap_or_else(|| panic!("{path} is not in the document"));
                // Every method the route takes (its arguments, up to the closing parenthesis)
                // is documented.
                let mut depth = 1;
                let end = part
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(part.len(), |(i, _)| i);
                let handlers = &part[..end];
                for method in ["get", "post", "put", "patch", "delete"] {
                    let taken = handlers.contains(&format!(" {method}("))
                        || handlers.contains(&format!(".{method}("))
                        || handlers.contains(&format!(":{method}("))
                        || handlers.contains(&format!("\n{method}("));
                    if taken {
                        assert!(
                            ops.get(method).is_some(),
                            "{method} {path} is not in the document"
                        );
                    }
                }
            }
        }
        assert!(routes > 50, "{routes} routes found in the sources");
        // Every reference resolves (a type alias once became a reference to no schema).
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = document();
        for part in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                schemas.contains_key(name),
                "a reference to no schema: {name}"
            );
        }
        // Every operation says what its errors look like (health, open to all, has none).
        for (path, ops) in paths.iter().filter(|(p, _)| *p != "/api/v1/health") {
            for (method, op) in ops.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                let errors = responses.keys().filter(|s| !s.starts_with('2')).count();
                assert!(errors > 0, "{method} {path} documents no error");
            }
        }
    }
}
