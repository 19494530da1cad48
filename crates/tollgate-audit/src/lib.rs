//! The tamper-evident audit log.
//!
//! Owns the log of every security event: an append-only file of canonical entries, the RFC 9162
//! Merkle tree over them (leaf `SHA-256(0x00 || entry)`, node `SHA-256(0x01 || left || right)`),
//! Ed25519-signed checkpoints in the C2SP `tlog-checkpoint` signed-note format, inclusion and
//! consistency proofs, export, and verification (online and offline, locating tampering).
//!
//! It must not block a session: the broker never calls it; the binary feeds it from the event
//! bus on its own thread, and only control actions wait for their entry to be durable.

#![forbid(unsafe_code)]

pub mod entry;
pub mod error;
pub mod findings;
pub mod log;
pub mod merkle;
pub mod note;
pub mod verify;

pub use error::AuditError;
