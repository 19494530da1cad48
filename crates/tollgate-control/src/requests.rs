//! The bodies of admin API requests, and the one function that parses them.
//!
//! The control listener reads a request's body (bounded, after the caller's credentials were
//! checked) and hands the bytes to [`parse`]; the fuzz target `admin_bodies` feeds the same
//! function arbitrary bytes. This module owns only the shapes and their parsing: it must not
//! touch the registry or know about HTTP.

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A request body that is not what the route takes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not JSON at all (syntax error, truncated, not UTF-8).
    #[error("the body is not valid JSON: {0}")]
    Syntax(String),
    /// JSON of the wrong shape: a missing or unknown field, a wrong type.
    #[error("the body does not match the request: {0}")]
    Shape(String),
}

/// Parse a JSON request body. An empty body (or only whitespace) is `None`, for routes whose
/// body is optional.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<Option<T>, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Every request is a JSON object: serde would also take an array as the fields in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(body) {
            Err(syntax) => RequestError::Syntax(syntax.to_string()),
            Ok(_) => RequestError::Shape("the body must be a JSON object".into()),
        });
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        // serde_json's own category of the error does not say whether the body is JSON: it stops
        // at the first field a struct refuses, before it has read the rest (a body that is not
        // JSON came back as the wrong shape), and it calls the surplus elements of an array
        // given for a struct "trailing characters" (valid JSON came back as a syntax error). So
        // the body itself decides; only the error path pays for the second parse. (`Value`, not
        // `IgnoredAny`: skipping a string does not check its UTF-8.)
        match serde_json::from_slice::<serde_json::Value>(body) {
            Err(syntax) => RequestError::Syntax(syntax.to_string()),
            Ok(_) => RequestError::Shape(e.to_string()),
        }
    })
}

/// `POST /api/v1/devices`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDevice {
    /// The device id.
    pub id: String,
    /// Its groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Bring a revoked device with this id back (never implicit).
    #[serde(default)]
    pub reactivate: bool,
}

/// `POST /api/v1/devices/{id}/token`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Groups the device gets when it enrolls.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Lifetime of the token, seconds (capped by the configuration).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Let enrollment replace the groups of a device that exists (never implicit).
    #[serde(default)]
    pub change_groups: bool,
}

/// `POST /api/v1/devices/{id}/quarantine`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    /// Why (required).
    pub reason: String,
    /// Who holds the reason (default `operator`); compliance and detection use their own.
    #[serde(default)]
    pub source: Option<String>,
}

/// `POST /api/v1/devices/{id}/release`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// Whose reason to remove (default `operator`).
    #[serde(default)]
    pub source: Option<String>,
    /// Remove every reason, whoever holds it.
    #[serde(default)]
    pub all: bool,
}

/// `POST /api/v1/devices/{id}/revoke`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why (default "unspecified").
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/revocations`: revoke several devices at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeDevices {
    /// Device ids (at least one; the body's size limit bounds how many, about 3,000 with the
    /// default `max_body_bytes`).
    pub devices: Vec<String>,
    /// Why (default "unspecified"), recorded for each device.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/suppliers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSupplier {
    /// Supplier name.
    pub name: String,
    /// Its manufacturing CA certificate(s), PEM; empty for a supplier recorded for inventory
    /// only (its devices enroll by token).
    #[serde(default)]
    pub ca_pem: String,
    /// Groups its devices get at bootstrap enrollment.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Whether a hardware serial may enroll more than once.
    #[serde(default)]
    pub allow_reenroll: bool,
    /// Where vulnerabilities are reported.
    #[serde(default)]
    pub disclosure_contact: Option<String>,
    /// Unix seconds at which the supplier's support ends.
    #[serde(default)]
    pub support_end: Option<i64>,
}

/// `PATCH /api/v1/suppliers/{name}`: fields given are set, an empty string clears the contact.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupplierUpdate {
    /// Where vulnerabilities are reported.
    #[serde(default)]
    pub disclosure_contact: Option<String>,
    /// Unix seconds at which the supplier's support ends (0 clears it).
    #[serde(default)]
    pub support_end: Option<i64>,
}

/// `POST /api/v1/compliance/waivers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaiverRequest {
    /// Rule id.
    pub rule: String,
    /// The device it covers (or `model`).
    #[serde(default)]
    pub device: Option<String>,
    /// The model it covers (or `device`).
    #[serde(default)]
    pub model: Option<String>,
    /// Why.
    pub reason: String,
    /// Seconds from now until it expires.
    pub expires_in_secs: u64,
}

/// `POST /api/v1/compliance/evaluate`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// A candidate profile (TOML text) to evaluate instead of the one in force; never applied.
    #[serde(default)]
    pub profile: Option<String>,
    /// Show what would change without applying it (always true with `profile`).
    #[serde(default)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bodies_are_none_and_bad_ones_say_why() {
        assert!(parse::<RevokeRequest>(b"").unwrap().is_none());
        assert!(parse::<RevokeRequest>(b" \n").unwrap().is_none());
        let r = parse::<RevokeRequest>(br#"{"reason":"lost"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(r.reason.as_deref(), Some("lost"));
        assert!(matches!(
            parse::<RevokeRequest>(b"{\"reason\":"),
            Err(RequestError::Syntax(_))
        ));
        assert!(matches!(
            parse::<RevokeRequest>(br#"{"why":"x"}"#),
            Err(RequestError::Shape(_))
        ));
        assert!(matches!(
            parse::<AddDevice>(br#"{"id": 7}"#),
            Err(RequestError::Shape(_))
        ));
        // An array is JSON, but no request is one (serde would read it as the fields in order).
        assert!(matches!(
            parse::<AddDevice>(br#"["pump-7"]"#),
            Err(RequestError::Shape(_))
        ));
        assert!(matches!(
            parse::<AddDevice>(b"[\"pump-7\""),
            Err(RequestError::Syntax(_))
        ));
    }

    /// Found by the `admin_bodies` fuzz target: serde refused the unknown field before it had
    /// read the rest, so a body that is not JSON was reported as JSON of the wrong shape; and
    /// an array with more elements than the struct has fields, valid JSON, was reported as a
    /// syntax error.
    #[test]
    fn syntax_means_not_json_and_shape_means_json_of_the_wrong_shape() {
        for body in [
            &b"{\"source\":\"operat\x03\":false}"[..],
            br#"{"source":"x""#,
            br#"{"id":7,"#,
            br#"{"reason":"lost"} trailing"#,
            &b"{\"reason\":\"stolen\",\"source\":\"de\x8e\x8e\"}"[..],
            &b"{\"source\":\"x\",\"id\":\"\xff\"}"[..],
        ] {
            assert!(
                matches!(parse::<AddDevice>(body), Err(RequestError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &br#"{"source":"x"}"#[..],
            // serde reads an array as the fields in order; the surplus is not a syntax error.
            br#"  ["@s",""  ]  "#,
            br#"["pump-7", [], false, 1]"#,
        ] {
            assert!(
                matches!(parse::<AddDevice>(body), Err(RequestError::Shape(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            parse::<RevokeRequest>(br#"["lost", "and found"]"#),
            Err(RequestError::Shape(_))
        ));
    }
}

/// `POST /api/v1/operators`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddOperator {
    /// The operator's name (letters, digits and . _ - :).
    pub name: String,
    /// `admin` or `viewer`.
    pub role: String,
    /// A PKCS#10 request, PEM, whose subject CN is the name: the key stays with the caller.
    pub csr: String,
    /// Certificate lifetime in days (default 90).
    #[serde(default)]
    pub validity_days: Option<u32>,
}

/// `POST /api/v1/operators/{name}/renew`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewOperator {
    /// A PKCS#10 request, PEM, whose subject CN is the operator's name.
    pub csr: String,
    /// Certificate lifetime in days (default 90).
    #[serde(default)]
    pub validity_days: Option<u32>,
    /// Revoke the operator's older certificates now (otherwise they stay valid until they
    /// expire).
    #[serde(default)]
    pub revoke_old: bool,
}

/// `POST /api/v1/operators/{name}/role`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorRoleRequest {
    /// `admin` or `viewer`.
    pub role: String,
}

/// `POST /api/v1/operators/{name}/revoke`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeOperator {
    /// Why (recorded).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/ca/server/renew`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewServer {
    /// DNS names to add to those of the current certificate.
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP addresses to add.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<std::net::IpAddr>,
    /// Lifetime in days (default 825).
    #[serde(default)]
    pub validity_days: Option<u32>,
}

/// `PATCH /api/v1/devices/{id}`: the fields given change, the others stay.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDevice {
    /// The device's groups, replacing its current ones.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Labels to set (a value) or remove (`null`), key by key (JSON merge-patch style).
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, Option<String>>>,
}

/// `DELETE /api/v1/devices/{id}`.
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteDevice {
    /// Why (recorded).
    #[serde(default)]
    pub reason: Option<String>,
}
