//! The control plane's errors. The binary maps each variant to an HTTP status in one place.

use tollgate_registry::RegistryError;

/// What went wrong in a control-plane operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The audit log could not record a control action ahead of it, so it was not carried out.
    #[error("not done: the audit log could not record it first ({0})")]
    AuditUnavailable(String),
    /// A device id, group or supplier name outside the allowed alphabet or length.
    #[error("{what}: {detail}")]
    InvalidName {
        /// "device id", "group", "supplier name".
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A request field that makes no sense (an empty reason, say).
    #[error("{0}")]
    InvalidRequest(String),
    /// A supplier CA file that is not a usable CA certificate.
    #[error("supplier CA: {0}")]
    InvalidSupplierCa(String),
    /// The certificate request was refused (weak key, bad signature, CA request...).
    #[error("certificate request refused: {0}")]
    CsrRefused(#[from] tollgate_pki::CsrError),
    /// The CSR's subject names another device than the credentials.
    #[error("the request's subject CN {cn:?} does not name device {device:?}, {why}")]
    SubjectMismatch {
        /// CN in the request.
        cn: String,
        /// Device the credentials are for.
        device: String,
        /// "which the token is for", ...
        why: &'static str,
    },
    /// An enrollment token was refused.
    #[error("enrollment token refused: {0}")]
    TokenRefused(&'static str),
    /// A bootstrap certificate that names no usable device.
    #[error("bootstrap certificate refused: {0}")]
    BootstrapRefused(String),
    /// Bootstrap enrollment by a supplier that is not registered.
    #[error("unknown supplier {0:?}")]
    UnknownSupplier(String),
    /// The device id is bound to another supplier (or to none).
    #[error("device {device:?} is bound to {bound}; supplier {supplier:?} cannot enroll it")]
    SupplierMismatch {
        /// Device id.
        device: String,
        /// "supplier X" or "no supplier (registered by an operator)".
        bound: String,
        /// The supplier that tried.
        supplier: String,
    },
    /// This hardware serial already enrolled and the supplier does not allow it again.
    #[error("hardware serial {serial} of supplier {supplier} already enrolled; the supplier does not allow re-enrollment")]
    AlreadyEnrolled {
        /// Hardware serial.
        serial: String,
        /// Supplier.
        supplier: String,
    },
    /// The device is revoked: enrollment cannot bring it back (an operator can).
    #[error("device {0:?} is revoked")]
    DeviceRevoked(String),
    /// The credentials are revoked or no longer belong to an active device.
    #[error("{0}")]
    NotActive(String),
    /// No such device.
    #[error("device {0:?} not found")]
    DeviceNotFound(String),
    /// The device exists already.
    #[error("device {0:?} already exists")]
    DeviceExists(String),
    /// The id belongs to a revoked device; reactivating it needs the explicit flag.
    #[error(
        "device {0:?} exists and is revoked; pass reactivate (CLI: --reactivate) to bring it back"
    )]
    ReactivationRequired(String),
    /// The request would change an existing device's groups without the explicit flag.
    #[error("device {device:?} exists with groups {current:?}; pass change_groups (CLI: --change-groups) to give it {requested:?}")]
    GroupChangeRequired {
        /// Device id.
        device: String,
        /// Its groups now.
        current: Vec<String>,
        /// Groups asked for.
        requested: Vec<String>,
    },
    /// A supplier with this name exists already.
    #[error("supplier {0:?} already exists")]
    SupplierExists(String),
    /// The device is not quarantined by that source.
    #[error("device {device:?} is not quarantined{by}")]
    NotQuarantined {
        /// Device id.
        device: String,
        /// " by SOURCE", or empty.
        by: String,
    },
    /// No such operator.
    #[error("operator {0:?} not found")]
    OperatorNotFound(String),
    /// An operator with this name exists (or existed: a revoked name stays taken).
    #[error("operator {0:?} already exists (a revoked operator's name stays taken)")]
    OperatorExists(String),
    /// The operator is revoked: it cannot be renewed or given a role.
    #[error("operator {0:?} is revoked")]
    OperatorRevoked(String),
    /// The change would leave no active admin, and nobody could administer the gateway.
    #[error("operator {0:?} is the last active admin; add another admin first")]
    LastAdmin(String),
    /// The registry failed.
    #[error("registry: {0}")]
    Registry(RegistryError),
    /// Certificate or CRL signing failed.
    #[error("PKI: {0}")]
    Pki(#[from] tollgate_pki::PkiError),
    /// A file of the data directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The policy file was refused (its line-precise errors); the last good policy stays.
    #[error("{0}")]
    PolicyRejected(String),
    /// The compliance profile was refused (every problem, with line and column).
    #[error("{0}")]
    ProfileRejected(String),
    /// An SBOM, advisory or VEX document was refused; nothing from it was stored.
    #[error("{0}")]
    InvalidDocument(String),
    /// A model that is not recorded.
    #[error("{0}")]
    UnknownModel(String),
    /// A change was asked of a version that is no longer the one in force (`If-Match`).
    #[error(
        "the policy in force is version {current}; reload it and apply the change to that version"
    )]
    StaleVersion {
        /// The version in force.
        current: u64,
    },
    /// Something named by the request does not exist (an advisory, a waiver).
    #[error("{0} not found")]
    NotFound(String),
}

impl From<RegistryError> for ControlError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::LastAdmin(name) => ControlError::LastAdmin(name),
            other => ControlError::Registry(other),
        }
    }
}

impl ControlError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> ControlError {
        ControlError::Io {
            context: context.into(),
            source,
        }
    }
}
