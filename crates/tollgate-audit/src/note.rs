//! The text formats of the audit log's signed artefacts: C2SP signed notes with Ed25519
//! signatures, `tlog-checkpoint` bodies, and `tlog-proof` inclusion proofs (plus a consistency
//! proof form of our own, built on the same conventions).
//!
//! Sources, followed byte for byte:
//!
//! * <https://c2sp.org/signed-note> (C2SP/C2SP `signed-note.md`) and the reference
//!   implementation `golang.org/x/mod/sumdb/note` (golang/mod `sumdb/note/note.go`), which also
//!   defines the verifier key text form `<name>+<key ID hex>+<base64(0x01 || public key)>`;
//! * <https://c2sp.org/tlog-checkpoint> (C2SP/C2SP `tlog-checkpoint.md`);
//! * <https://c2sp.org/tlog-proof> (C2SP/C2SP `tlog-proof.md`).
//!
//! Signed note:
//!
//! ```text
//! <text: one or more lines, each ending in "\n">
//! <empty line>
//! — <key name> <base64(4-byte big-endian key ID || signature)>
//! ...more signature lines
//! ```
//!
//! The signature is Ed25519 (RFC 8032) over the note text, including its final newline but not
//! the blank line. The text is separated from the signatures by the *last* empty line, so the
//! text may itself contain empty lines. A note is valid UTF-8 with no ASCII control character
//! other than newline. The key ID of an Ed25519 key is
//! `SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]`, big-endian.
//!
//! Everything here parses untrusted input (notes, keys and proofs come from files and the
//! network): nothing panics, and every input is bounded ([`MAX_NOTE_BYTES`],
//! [`MAX_LINE_BYTES`], [`MAX_SIGNATURES`], [`MAX_INCLUSION_PROOF_HASHES`],
//! [`MAX_CONSISTENCY_PROOF_HASHES`]).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};

use crate::error::AuditError;

/// A SHA-256 hash (a Merkle tree node or root).
type Hash = [u8; 32];

/// The largest signed note (and checkpoint body) accepted or produced, in bytes: 1 MiB.
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// The longest line accepted or produced, in bytes, without its newline: 8 KiB (room for the
/// largest post-quantum signature lines the signed-note spec anticipates, "nearly 5kB").
pub const MAX_LINE_BYTES: usize = 8 << 10;

/// The most signature lines a note may carry. The signed-note spec requires accepting at least
/// 16; `sumdb/note` refuses more than 100, and so do we.
pub const MAX_SIGNATURES: usize = 100;

/// The most hashes in an inclusion proof: the depth of a tree of at most 2^64 leaves.
pub const MAX_INCLUSION_PROOF_HASHES: usize = 64;

/// The most hashes in a consistency proof: one per level of a tree of at most 2^64 leaves, plus
/// the old tree's subtree root (RFC 9162 §2.1.4.1).
pub const MAX_CONSISTENCY_PROOF_HASHES: usize = 65;

/// The longest key name our own keys may have, in bytes, so that their signature lines stay far
/// below [`MAX_LINE_BYTES`]. (Names in signature lines of other keys are only bounded by the
/// line limit.)
pub const MAX_KEY_NAME_BYTES: usize = 1024;

/// The first line of a `tlog-proof` (an inclusion proof), per c2sp.org/tlog-proof.
pub const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// The first line of a consistency proof in Tollgate's own format (see
/// [`consistency_proof_text`]); deliberately outside the `c2sp.org` namespace.
pub const CONSISTENCY_PROOF_HEADER: &str = "tollgate/tlog-consistency-proof@v1";

/// The largest proof text accepted: a maximal note plus room for the proof lines.
const MAX_PROOF_BYTES: usize = MAX_NOTE_BYTES + (64 << 10);

/// The signed-note signature type identifier of Ed25519.
const ALG_ED25519: u8 = 0x01;

/// The start of a signature line: em dash (U+2014), space.
const SIG_PREFIX: &str = "\u{2014} ";

/// The length of the standard base64 (with padding) of a 32-byte hash.
const HASH_BASE64_LEN: usize = 44;

/// The key ID of an Ed25519 key: the first four bytes, big-endian, of
/// `SHA-256(key name || 0x0A || 0x01 || public key)` (signed-note, "Ed25519 signatures").
fn ed25519_key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ALG_ED25519]);
    ctx.update(public_key);
    let sum = ctx.finish();
    let mut id = [0u8; 4];
    for (dst, src) in id.iter_mut().zip(sum.as_ref()) {
        *dst = *src;
    }
    u32::from_be_bytes(id)
}

/// Why `name` is not a valid key name, if it is not: signed-note requires a non-empty name
/// with no Unicode space and no `+`; a note may hold no ASCII control character either.
fn key_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.contains('+') {
        Some("it contains '+'")
    } else if name.chars().any(char::is_whitespace) {
        Some("it contains a space")
    } else if name.bytes().any(|b| b < 0x20) {
        Some("it contains a control character")
    } else {
        None
    }
}

/// Checks a key name for one of our own keys: valid per signed-note and at most
/// [`MAX_KEY_NAME_BYTES`].
fn check_own_key_name(what: &str, name: &str) -> Result<(), AuditError> {
    if let Some(why) = key_name_problem(name) {
        return Err(AuditError::malformed(
            what,
            format!("invalid key name {name:?}: {why}"),
        ));
    }
    if name.len() > MAX_KEY_NAME_BYTES {
        return Err(AuditError::malformed(
            what,
            format!("key name longer than {MAX_KEY_NAME_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks what every note (and every text in it) must satisfy: no ASCII control character other
/// than newline (signed-note, "Format"; UTF-8 validity is given by `&str`), and no line longer
/// than [`MAX_LINE_BYTES`].
fn check_chars_and_lines(what: &str, s: &str) -> Result<(), AuditError> {
    let mut line_len = 0usize;
    for (i, b) in s.bytes().enumerate() {
        if b == b'\n' {
            line_len = 0;
            continue;
        }
        if b < 0x20 {
            return Err(AuditError::malformed(
                what,
                format!("control character 0x{b:02x} at byte {i}"),
            ));
        }
        line_len += 1;
        if line_len > MAX_LINE_BYTES {
            return Err(AuditError::malformed(
                what,
                format!("a line is longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Parses an ASCII decimal with no leading zero (unless it is `0`) that fits a `u64`, the form
/// of the checkpoint tree size and the proof index.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    // Only digits are left, so `parse` sees no sign; it refuses an overflow.
    s.parse().ok()
}

/// Decodes the standard base64 (with padding, canonical) of a 32-byte hash.
fn decode_hash(s: &str) -> Option<Hash> {
    if s.len() != HASH_BASE64_LEN {
        return None;
    }
    STANDARD.decode(s).ok()?.try_into().ok()
}

/// One signature line of a note, parsed but not verified.
struct SigLine<'a> {
    /// The key name.
    name: &'a str,
    /// The key ID (the first four bytes of the decoded signature field).
    key_id: u32,
    /// The signature proper (the bytes after the key ID).
    signature: Vec<u8>,
}

/// Splits a signed note into its text (ending in its final newline) and its signature lines,
/// checking the whole syntax of signed-note but no signature.
fn split_note(note: &str) -> Result<(&str, Vec<SigLine<'_>>), AuditError> {
    const WHAT: &str = "signed note";
    if note.len() > MAX_NOTE_BYTES {
        return Err(AuditError::malformed(
            WHAT,
            format!("longer than {MAX_NOTE_BYTES} bytes"),
        ));
    }
    check_chars_and_lines(WHAT, note)?;
    // The text is separated from the signatures by the last empty line.
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| AuditError::malformed(WHAT, "no empty line before the signatures"))?;
    let (text, sigs) = match (note.get(..split + 1), note.get(split + 2..)) {
        (Some(text), Some(sigs)) => (text, sigs),
        _ => return Err(AuditError::malformed(WHAT, "cannot split the note")),
    };
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or_else(|| AuditError::malformed(WHAT, "it does not end with a signature line"))?;
    let mut out = Vec::new();
    for line in sigs.split('\n') {
        if out.len() == MAX_SIGNATURES {
            return Err(AuditError::malformed(
                WHAT,
                format!("more than {MAX_SIGNATURES} signatures"),
            ));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
            AuditError::malformed(
                WHAT,
                "a signature line does not start with an em dash (U+2014) and a space",
            )
        })?;
        let (name, b64) = rest.split_once(' ').ok_or_else(|| {
            AuditError::malformed(WHAT, "a signature line has no space after the key name")
        })?;
        if let Some(why) = key_name_problem(name) {
            return Err(AuditError::malformed(
                WHAT,
                format!("invalid key name {name:?} in a signature line: {why}"),
            ));
        }
        let blob = STANDARD.decode(b64).map_err(|_| {
            AuditError::malformed(WHAT, format!("the signature by {name:?} is not base64"))
        })?;
        // At least the 4-byte key ID and one byte of signature (as `sumdb/note`).
        let (id, signature) = match (blob.get(..4), blob.get(4..)) {
            (Some(id), Some(sig)) if !sig.is_empty() => (id, sig),
            _ => (&[][..], &[][..]),
        };
        let id: [u8; 4] = id.try_into().map_err(|_| {
            AuditError::malformed(WHAT, format!("the signature by {name:?} is too short"))
        })?;
        out.push(SigLine {
            name,
            key_id: u32::from_be_bytes(id),
            signature: signature.to_vec(),
        });
    }
    Ok((text, out))
}

/// Checks a note text before signing it, so that we never sign what [`Verifier::open`] would
/// refuse: it ends in a newline, has no control character other than newline and no line over
/// [`MAX_LINE_BYTES`].
fn check_note_text(text: &str) -> Result<(), AuditError> {
    const WHAT: &str = "note text";
    if !text.ends_with('\n') {
        return Err(AuditError::malformed(
            WHAT,
            "it does not end with a newline",
        ));
    }
    if text.len() > MAX_NOTE_BYTES {
        return Err(AuditError::malformed(
            WHAT,
            format!("longer than {MAX_NOTE_BYTES} bytes"),
        ));
    }
    check_chars_and_lines(WHAT, text)
}

/// The log's signing key: an Ed25519 key pair stored as PKCS#8 v2 (ring's format), and its key
/// name (the log's origin, e.g. `tollgate.example/audit`).
///
/// Its [`Debug`](fmt::Debug) form shows the name, key ID and public key, never the private key.
pub struct Signer {
    /// The key name.
    name: String,
    /// The key pair.
    key_pair: Ed25519KeyPair,
    /// The signed-note key ID of (name, public key).
    key_id: u32,
    /// The Ed25519 public key.
    public_key: [u8; 32],
}

impl Signer {
    /// Generates a new random Ed25519 key and returns it as PKCS#8 v2 bytes (the caller stores
    /// them with mode 0600 and loads them with [`Signer::from_pkcs8`]).
    pub fn generate_pkcs8() -> Result<Vec<u8>, AuditError> {
        let rng = SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|doc| doc.as_ref().to_vec())
            .map_err(|_| AuditError::Key("could not generate an Ed25519 key".to_owned()))
    }

    /// A signer named `name` (which must be a valid signed-note key name: non-empty, no Unicode
    /// space, no `+`, no control character, at most [`MAX_KEY_NAME_BYTES`]) with the Ed25519 key
    /// in `pkcs8` (PKCS#8 v2, as [`Signer::generate_pkcs8`] makes; ring checks that the public
    /// key in it matches the private key).
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Signer, AuditError> {
        if let Some(why) = key_name_problem(name) {
            return Err(AuditError::Key(format!("invalid key name {name:?}: {why}")));
        }
        if name.len() > MAX_KEY_NAME_BYTES {
            return Err(AuditError::Key(format!(
                "key name longer than {MAX_KEY_NAME_BYTES} bytes"
            )));
        }
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| AuditError::Key(format!("not an Ed25519 PKCS#8 v2 key: {e}")))?;
        let public_key: [u8; 32] =
            key_pair.public_key().as_ref().try_into().map_err(|_| {
                AuditError::Key("the Ed25519 public key is not 32 bytes".to_owned())
            })?;
        Ok(Signer {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, &public_key),
            key_pair,
            public_key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID: `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, big-endian.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// The verifier key text, `<name>+<key ID as 8 lowercase hex digits>+<base64(0x01 || public
    /// key)>`, which [`Verifier::parse`] reads.
    pub fn verifier_key(&self) -> String {
        self.verifier().to_text()
    }

    /// The verifier of this key's signatures.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: self.public_key,
        }
    }

    /// Signs `text` and returns the signed note: the text, an empty line, and the signature line
    /// `— <name> <base64(key ID || Ed25519 signature of the text)>` followed by a newline.
    ///
    /// `text` must end with a newline and hold no control character other than newline; it may
    /// contain empty lines (the signed-note spec allows them: a reader splits at the last empty
    /// line). Its lines must not be longer than [`MAX_LINE_BYTES`] and the note not longer than
    /// [`MAX_NOTE_BYTES`], so that every note we sign is one we can open.
    pub fn sign(&self, text: &str) -> Result<String, AuditError> {
        check_note_text(text)?;
        let signature = self.key_pair.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + signature.as_ref().len());
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        let note = format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(&blob)
        );
        if note.len() > MAX_NOTE_BYTES {
            return Err(AuditError::malformed(
                "note text",
                format!("the signed note would be longer than {MAX_NOTE_BYTES} bytes"),
            ));
        }
        Ok(note)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .field("public_key", &STANDARD.encode(self.public_key))
            .finish_non_exhaustive()
    }
}

/// A trusted Ed25519 signed-note key: the verifier of a log's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// The key name (for a log: its origin).
    pub name: String,
    /// The key ID, `SHA-256(name || 0x0A || 0x01 || public key)[:4]` big-endian.
    pub key_id: u32,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
}

impl Verifier {
    /// Reads a verifier key `<name>+<key ID>+<base64(0x01 || 32-byte public key)>`, the form of
    /// `golang.org/x/mod/sumdb/note` (`NewVerifier`): the name and the key ID end at the first
    /// and second `+` (the base64 may contain `+`); the name must be a valid key name; the key
    /// ID is exactly 8 hex digits (either case, as Go accepts) and must equal the key ID
    /// computed from the name and the key; the key is standard base64 with padding, type byte
    /// `0x01` (Ed25519) and 32 bytes. No surrounding whitespace is allowed (trim a line read
    /// from a file first).
    pub fn parse(vkey: &str) -> Result<Verifier, AuditError> {
        const WHAT: &str = "verifier key";
        if vkey.len() > MAX_LINE_BYTES {
            return Err(AuditError::malformed(
                WHAT,
                format!("longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        let (name, rest) = vkey
            .split_once('+')
            .ok_or_else(|| AuditError::malformed(WHAT, "expected <name>+<key ID>+<key>"))?;
        let (hex, b64) = rest
            .split_once('+')
            .ok_or_else(|| AuditError::malformed(WHAT, "expected <name>+<key ID>+<key>"))?;
        check_own_key_name(WHAT, name)?;
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuditError::malformed(
                WHAT,
                "the key ID is not 8 hexadecimal digits",
            ));
        }
        let key_id = u32::from_str_radix(hex, 16)
            .map_err(|_| AuditError::malformed(WHAT, "the key ID is not hexadecimal"))?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| AuditError::malformed(WHAT, "the key is not base64"))?;
        let (alg, public_key) = match key.split_first() {
            Some((alg, rest)) => (*alg, rest),
            None => return Err(AuditError::malformed(WHAT, "the key is empty")),
        };
        if alg != ALG_ED25519 {
            return Err(AuditError::malformed(
                WHAT,
                format!("unsupported signature type 0x{alg:02x} (only Ed25519, 0x01)"),
            ));
        }
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| AuditError::malformed(WHAT, "the Ed25519 key is not 32 bytes"))?;
        if ed25519_key_id(name, &public_key) != key_id {
            return Err(AuditError::malformed(
                WHAT,
                "the key ID does not match the name and key",
            ));
        }
        Ok(Verifier {
            name: name.to_owned(),
            key_id,
            public_key,
        })
    }

    /// The verifier key text, `<name>+<key ID as 8 lowercase hex digits>+<base64(0x01 ||
    /// public key)>`.
    pub fn to_text(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(&self.public_key);
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(&key)
        )
    }

    /// Verifies a signed note and returns its text (the signed part, ending in its final
    /// newline) if it carries a valid signature by this key.
    ///
    /// The rules of c2sp.org/signed-note: the note must be well-formed (see the module
    /// documentation; every signature line, known or not, must parse), at most
    /// [`MAX_NOTE_BYTES`] with at most [`MAX_SIGNATURES`] signatures. A signature whose key
    /// name *and* key ID are this key's is verified, and if any such signature fails the whole
    /// note is refused ([`AuditError::BadSignature`]); signatures by other keys (even with the
    /// same name or the same ID, but not both) are ignored; a note with no signature by this
    /// key is refused ([`AuditError::BadSignature`]).
    pub fn open(&self, note: &str) -> Result<String, AuditError> {
        let (text, sigs) = split_note(note)?;
        let key = UnparsedPublicKey::new(&ED25519, &self.public_key);
        let mut verified = false;
        for sig in &sigs {
            if sig.name != self.name || sig.key_id != self.key_id {
                continue;
            }
            key.verify(text.as_bytes(), &sig.signature).map_err(|_| {
                AuditError::BadSignature(format!(
                    "invalid signature by {}+{:08x} on the note",
                    self.name, self.key_id
                ))
            })?;
            verified = true;
        }
        if !verified {
            return Err(AuditError::BadSignature(format!(
                "the note carries no signature by {}+{:08x}",
                self.name, self.key_id
            )));
        }
        Ok(text.to_owned())
    }
}

/// A transparency-log checkpoint (c2sp.org/tlog-checkpoint): the note text of a signed tree
/// head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (first line); non-empty. Tollgate uses the log's key name.
    pub origin: String,
    /// The number of leaves of the tree (second line).
    pub size: u64,
    /// The RFC 6962 Merkle tree hash of the tree (third line, base64).
    pub root: [u8; 32],
    /// The optional extension lines, each non-empty (the spec does not recommend them).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64(root)>\n` then one `<extension>\n` per
    /// extension line. It is only a valid checkpoint if the fields are (a non-empty origin and
    /// non-empty extensions, none with a newline or control character); [`Checkpoint::sign`]
    /// checks that.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint note text (the body only, no signatures), per
    /// c2sp.org/tlog-checkpoint: at least three non-empty lines, each ending in a newline; the
    /// origin (non-empty; the spec's recommendation of no spaces and no `+` is not enforced, as
    /// it tells clients not to assume it); the tree size in ASCII decimal with no leading zero
    /// (unless `0`) that fits a `u64`; the root hash in standard base64 of exactly 32 bytes;
    /// then any extension lines, which must be non-empty.
    pub fn parse(text: &str) -> Result<Checkpoint, AuditError> {
        const WHAT: &str = "checkpoint";
        if text.len() > MAX_NOTE_BYTES {
            return Err(AuditError::malformed(
                WHAT,
                format!("longer than {MAX_NOTE_BYTES} bytes"),
            ));
        }
        check_chars_and_lines(WHAT, text)?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| AuditError::malformed(WHAT, "it does not end with a newline"))?;
        let mut lines = body.split('\n');
        let mut next = |what: &str| -> Result<&str, AuditError> {
            match lines.next() {
                Some("") => Err(AuditError::malformed(WHAT, format!("the {what} is empty"))),
                Some(line) => Ok(line),
                None => Err(AuditError::malformed(WHAT, format!("no {what} line"))),
            }
        };
        let origin = next("origin")?;
        let size = next("tree size")?;
        let root = next("root hash")?;
        let size = parse_decimal(size).ok_or_else(|| {
            AuditError::malformed(
                WHAT,
                format!("the tree size {size:?} is not a decimal number without leading zeros that fits 64 bits"),
            )
        })?;
        let root = decode_hash(root).ok_or_else(|| {
            AuditError::malformed(
                WHAT,
                format!("the root hash {root:?} is not the base64 of 32 bytes"),
            )
        })?;
        let mut extensions = Vec::new();
        for line in lines {
            if line.is_empty() {
                return Err(AuditError::malformed(WHAT, "an extension line is empty"));
            }
            extensions.push(line.to_owned());
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Parses and verifies a signed checkpoint note with `v`: the note must carry a valid
    /// signature by `v` (see [`Verifier::open`]), its text must be a checkpoint (see
    /// [`Checkpoint::parse`]), and its origin must equal `v`'s key name.
    ///
    /// The last rule is Tollgate's, stricter than c2sp.org/tlog-checkpoint (which says the log's
    /// key name SHOULD match the origin): our logs always sign with key name == origin, and a
    /// verifier checks the origin it expects; a checkpoint whose origin differs is refused with
    /// [`AuditError::BadSignature`] (it is not a checkpoint of the expected log).
    pub fn open(note: &str, v: &Verifier) -> Result<Checkpoint, AuditError> {
        let text = v.open(note)?;
        let checkpoint = Checkpoint::parse(&text)?;
        if checkpoint.origin != v.name {
            return Err(AuditError::BadSignature(format!(
                "the checkpoint's origin {:?} is not the log's key name {:?}",
                checkpoint.origin, v.name
            )));
        }
        Ok(checkpoint)
    }

    /// Signs this checkpoint with `signer` and returns the signed note. The origin must equal
    /// the signer's key name, and the fields must form a valid checkpoint (the text must parse
    /// back to the same checkpoint).
    pub fn sign(&self, signer: &Signer) -> Result<String, AuditError> {
        if self.origin != signer.name() {
            return Err(AuditError::malformed(
                "checkpoint",
                format!(
                    "the origin {:?} is not the signing key's name {:?}",
                    self.origin,
                    signer.name()
                ),
            ));
        }
        let text = self.to_text();
        if Checkpoint::parse(&text)? != *self {
            return Err(AuditError::malformed(
                "checkpoint",
                "its fields do not print as a checkpoint that parses back to them",
            ));
        }
        signer.sign(&text)
    }
}

/// Takes the next line, which must end in a newline, off the front of `rest`.
fn take_line<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let (line, tail) = rest.split_once('\n')?;
    *rest = tail;
    Some(line)
}

/// The parts of a proof text.
struct ProofParts<'a> {
    /// The decoded `extra` data, if the line is there.
    extra: Option<Vec<u8>>,
    /// The number after the keyword (`index` or `old`).
    number: u64,
    /// The hashes.
    hashes: Vec<Hash>,
    /// The signed checkpoint, verbatim.
    checkpoint: &'a str,
}

/// Prints a proof: header, optional `extra` line, `<keyword> <number>`, one base64 hash per
/// line, an empty line, and the signed checkpoint verbatim.
fn proof_text(
    header: &str,
    extra: Option<&[u8]>,
    keyword: &str,
    number: u64,
    hashes: &[Hash],
    signed_checkpoint: &str,
) -> String {
    let mut text = String::with_capacity(
        header.len() + 32 + hashes.len() * (HASH_BASE64_LEN + 1) + signed_checkpoint.len(),
    );
    text.push_str(header);
    text.push('\n');
    if let Some(extra) = extra.filter(|e| !e.is_empty()) {
        text.push_str("extra ");
        text.push_str(&STANDARD.encode(extra));
        text.push('\n');
    }
    text.push_str(keyword);
    text.push(' ');
    text.push_str(&number.to_string());
    text.push('\n');
    for hash in hashes {
        text.push_str(&STANDARD.encode(hash));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(signed_checkpoint);
    text
}

/// Parses a proof of the form [`proof_text`] prints: checks the syntax of every part, including
/// that the checkpoint is a well-formed signed note whose text is a checkpoint (its signatures
/// are not verified here).
fn parse_proof<'a>(
    what: &str,
    text: &'a str,
    header: &str,
    allow_extra: bool,
    keyword: &str,
    max_hashes: usize,
) -> Result<ProofParts<'a>, AuditError> {
    if text.len() > MAX_PROOF_BYTES {
        return Err(AuditError::malformed(
            what,
            format!("longer than {MAX_PROOF_BYTES} bytes"),
        ));
    }
    check_chars_and_lines(what, text)?;
    let mut rest = text;
    let truncated = || AuditError::malformed(what, "truncated");
    if take_line(&mut rest).ok_or_else(truncated)? != header {
        return Err(AuditError::malformed(
            what,
            format!("the first line is not {header:?}"),
        ));
    }
    let mut line = take_line(&mut rest).ok_or_else(truncated)?;
    let mut extra = None;
    if allow_extra {
        if let Some(b64) = line.strip_prefix("extra ") {
            let data = STANDARD
                .decode(b64)
                .map_err(|_| AuditError::malformed(what, "the extra data is not base64"))?;
            if data.is_empty() {
                return Err(AuditError::malformed(
                    what,
                    "the extra line is present but empty",
                ));
            }
            extra = Some(data);
            line = take_line(&mut rest).ok_or_else(truncated)?;
        }
    }
    let number = line
        .strip_prefix(keyword)
        .and_then(|l| l.strip_prefix(' '))
        .ok_or_else(|| AuditError::malformed(what, format!("no {keyword:?} line")))?;
    let number = parse_decimal(number).ok_or_else(|| {
        AuditError::malformed(
            what,
            format!("the {keyword} {number:?} is not a decimal number without leading zeros that fits 64 bits"),
        )
    })?;
    let mut hashes = Vec::new();
    loop {
        let line = take_line(&mut rest).ok_or_else(truncated)?;
        if line.is_empty() {
            break;
        }
        if hashes.len() == max_hashes {
            return Err(AuditError::malformed(
                what,
                format!("more than {max_hashes} hashes"),
            ));
        }
        let hash = decode_hash(line).ok_or_else(|| {
            AuditError::malformed(
                what,
                format!("{line:?} is not the base64 of a 32-byte hash"),
            )
        })?;
        hashes.push(hash);
    }
    let (checkpoint_text, _) = split_note(rest)?;
    Checkpoint::parse(checkpoint_text)?;
    Ok(ProofParts {
        extra,
        number,
        hashes,
        checkpoint: rest,
    })
}

/// A proof in the c2sp.org/tlog-proof@v1 format: that the entry at `index` is in the tree of a
/// signed checkpoint.
///
/// ```text
/// c2sp.org/tlog-proof@v1
/// extra <base64 of opaque extra data>      (optional)
/// index <zero-based index, decimal, no leading zeros>
/// <base64 hash>                             (zero or more: the RFC 6962 inclusion proof,
/// ...                                        leaf's sibling first, root's child last)
/// <empty line>
/// <the signed checkpoint note, verbatim>
/// ```
///
/// The extra data is not authenticated by anything: the spec says applications must not
/// trust it implicitly. Tollgate's own proofs carry none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The opaque extra data, if any (never empty: with no extra data the line is omitted).
    pub extra: Option<Vec<u8>>,
    /// The zero-based index of the entry in the log.
    pub index: u64,
    /// The inclusion proof, from the leaf's sibling up to the root's child.
    pub proof: Vec<[u8; 32]>,
    /// The signed checkpoint, verbatim.
    pub checkpoint: String,
}

impl InclusionProof {
    /// The proof text (an empty `extra` is printed as no `extra` line).
    pub fn to_text(&self) -> String {
        proof_text(
            TLOG_PROOF_HEADER,
            self.extra.as_deref(),
            "index",
            self.index,
            &self.proof,
            &self.checkpoint,
        )
    }

    /// Parses a proof text, checking its syntax: the header, an optional non-empty `extra` line,
    /// the index, at most [`MAX_INCLUSION_PROOF_HASHES`] hashes (each the base64 of 32 bytes),
    /// the empty line, and a checkpoint that is a well-formed signed note with a valid
    /// checkpoint text. Nothing is verified: open the checkpoint with [`Checkpoint::open`],
    /// then check the proof against its root.
    pub fn parse(text: &str) -> Result<InclusionProof, AuditError> {
        let parts = parse_proof(
            "inclusion proof",
            text,
            TLOG_PROOF_HEADER,
            true,
            "index",
            MAX_INCLUSION_PROOF_HASHES,
        )?;
        Ok(InclusionProof {
            extra: parts.extra,
            index: parts.number,
            proof: parts.hashes,
            checkpoint: parts.checkpoint.to_owned(),
        })
    }
}

/// The c2sp.org/tlog-proof@v1 text of an inclusion proof with no extra data: the entry at
/// `index` is in the tree of `signed_checkpoint` (a signed checkpoint note, included verbatim),
/// by the RFC 6962 inclusion `proof`. See [`InclusionProof`] for the format.
pub fn inclusion_proof_text(index: u64, proof: &[[u8; 32]], signed_checkpoint: &str) -> String {
    proof_text(
        TLOG_PROOF_HEADER,
        None,
        "index",
        index,
        proof,
        signed_checkpoint,
    )
}

/// Parses a c2sp.org/tlog-proof@v1 text into (index, inclusion proof, signed checkpoint note),
/// checking its syntax as [`InclusionProof::parse`] does. An `extra` line is accepted and
/// dropped (it is unauthenticated; use [`InclusionProof::parse`] to read it).
pub fn parse_inclusion_proof_text(text: &str) -> Result<(u64, Vec<[u8; 32]>, String), AuditError> {
    let proof = InclusionProof::parse(text)?;
    Ok((proof.index, proof.proof, proof.checkpoint))
}

/// The text of a consistency proof: the tree of size `old_size` is a prefix of the tree of
/// `signed_checkpoint` (a signed checkpoint note, included verbatim), by the RFC 9162
/// consistency `proof`.
///
/// **This format is Tollgate's extension, not a C2SP specification**: c2sp.org/tlog-proof
/// defines inclusion proofs only. It follows the same conventions, with its own first line:
///
/// ```text
/// tollgate/tlog-consistency-proof@v1
/// old <old tree size, decimal, no leading zeros>
/// <base64 hash>                      (zero or more: the RFC 9162 consistency proof, in order)
/// <empty line>
/// <the signed checkpoint note of the new tree, verbatim>
/// ```
pub fn consistency_proof_text(
    old_size: u64,
    proof: &[[u8; 32]],
    signed_checkpoint: &str,
) -> String {
    proof_text(
        CONSISTENCY_PROOF_HEADER,
        None,
        "old",
        old_size,
        proof,
        signed_checkpoint,
    )
}

/// Parses a consistency proof text of [`consistency_proof_text`]'s format (Tollgate's
/// extension, not a C2SP format) into (old tree size, consistency proof, signed checkpoint note
/// of the new tree), checking its syntax: the header, the `old` line, at most
/// [`MAX_CONSISTENCY_PROOF_HASHES`] hashes, the empty line, and a well-formed signed checkpoint
/// note. Nothing is verified, nor is `old size <= new size` checked: that is the verifier's job.
pub fn parse_consistency_proof_text(
    text: &str,
) -> Result<(u64, Vec<[u8; 32]>, String), AuditError> {
    let parts = parse_proof(
        "consistency proof",
        text,
        CONSISTENCY_PROOF_HEADER,
        false,
        "old",
        MAX_CONSISTENCY_PROOF_HASHES,
    )?;
    Ok((parts.number, parts.hashes, parts.checkpoint.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    // Test vectors of golang.org/x/mod/sumdb/note (golang/mod, sumdb/note/note.go package
    // documentation and sumdb/note/note_test.go TestSign, TestOpen, TestNewVerifier).
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    // The key of sum.golang.org (golang/go, src/cmd/go/internal/modfetch/key.go; its base64
    // contains '+') and a checkpoint it signed (https://sum.golang.org/latest of 2024-09-23, as
    // quoted in a public Go test; it is authentic if the signature verifies under the key).
    const SUMDB_VKEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
    const SUMDB_CHECKPOINT: &str = "go.sum database tree\n30055305\nmXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n\n— sum.golang.org Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFcAAlWFJJYle3EJlDCrQ+y3A8=\n";

    // The examples of C2SP/C2SP signed-note.md and tlog-checkpoint.md (no public key is
    // published for them: only their syntax is checked).
    const C2SP_NOTE: &str = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
    const C2SP_CHECKPOINT: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";

    const ORIGIN: &str = "tollgate.example/audit";

    fn go_note() -> String {
        format!("{GO_TEXT}\n{PETER_SIG}")
    }

    /// ring's PKCS#8 v2 document of an Ed25519 seed (the layout of ring's
    /// `ed25519_pkcs8_v2_template.der`: prefix, seed, `[1]` public key).
    fn pkcs8_from_seed(seed: &[u8]) -> Vec<u8> {
        let kp = Ed25519KeyPair::from_seed_unchecked(seed).unwrap();
        let mut doc = vec![
            0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        doc.extend_from_slice(seed);
        doc.extend_from_slice(&[0x81, 0x21, 0x00]);
        doc.extend_from_slice(kp.public_key().as_ref());
        doc
    }

    fn peter_signer() -> Signer {
        let key64 = PETER_SKEY.splitn(5, '+').nth(4).unwrap();
        let key = STANDARD.decode(key64).unwrap();
        assert_eq!(key[0], 0x01);
        Signer::from_pkcs8("PeterNeumann", &pkcs8_from_seed(&key[1..])).unwrap()
    }

    fn new_signer(name: &str) -> Signer {
        Signer::from_pkcs8(name, &Signer::generate_pkcs8().unwrap()).unwrap()
    }

    fn checkpoint(size: u64) -> Checkpoint {
        Checkpoint {
            origin: ORIGIN.to_owned(),
            size,
            root: [size as u8; 32],
            extensions: Vec::new(),
        }
    }

    fn is_malformed(r: Result<impl fmt::Debug, AuditError>) -> bool {
        matches!(r, Err(AuditError::Malformed { .. }))
    }

    fn is_bad_signature(r: Result<impl fmt::Debug, AuditError>) -> bool {
        matches!(r, Err(AuditError::BadSignature(_)))
    }

    #[test]
    fn go_verifier_keys_parse_and_print_back() {
        let peter = Verifier::parse(PETER_VKEY).unwrap();
        assert_eq!(peter.name, "PeterNeumann");
        assert_eq!(peter.key_id, 0xc74f20a3);
        assert_eq!(peter.to_text(), PETER_VKEY);
        let enoch = Verifier::parse(ENOCH_VKEY).unwrap();
        assert_eq!(enoch.key_id, 0xaf0cfe78);
        assert_eq!(enoch.to_text(), ENOCH_VKEY);
        let sumdb = Verifier::parse(SUMDB_VKEY).unwrap();
        assert_eq!(sumdb.name, "sum.golang.org");
        assert_eq!(sumdb.key_id, 0x033de0ae);
        assert_eq!(sumdb.to_text(), SUMDB_VKEY);
        // Go accepts an upper-case key ID, and so do we.
        let upper = PETER_VKEY.replace("c74f20a3", "C74F20A3");
        assert_eq!(Verifier::parse(&upper).unwrap(), peter);
    }

    #[test]
    fn go_verifier_key_manglings_are_refused() {
        // As golang/mod sumdb/note/note_test.go TestNewVerifier: every proper substring and
        // every one-byte increment is refused.
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i == 0 && j == b.len() {
                    continue;
                }
                let k = std::str::from_utf8(&b[i..j]).unwrap();
                assert!(Verifier::parse(k).is_err(), "{k:?} accepted");
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] += 1;
            let k = String::from_utf8(m).unwrap();
            assert!(Verifier::parse(&k).is_err(), "{k:?} accepted");
        }
        // Wrong key length and unknown algorithm, each with an adjusted key hash.
        for k in [
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(is_malformed(Verifier::parse(k)), "{k:?} accepted");
        }
        for k in [
            "",
            "+",
            "++",
            "PeterNeumann",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+c74f20a3+",
            "PeterNeumann+0xc74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n",
            " PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(is_malformed(Verifier::parse(k)), "{k:?} accepted");
        }
    }

    #[test]
    fn go_note_opens() {
        let peter = Verifier::parse(PETER_VKEY).unwrap();
        let enoch = Verifier::parse(ENOCH_VKEY).unwrap();
        assert_eq!(peter.open(&go_note()).unwrap(), GO_TEXT);
        // The doubly-signed note of TestOpen: each key finds its own signature and ignores
        // the other.
        let both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        assert_eq!(peter.open(&both).unwrap(), GO_TEXT);
        assert_eq!(enoch.open(&both).unwrap(), GO_TEXT);
        // Duplicated verified and unverified signatures, one of them corrupt but unknown.
        let corrupt_enoch = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
        let dup = format!("{GO_TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}{corrupt_enoch}");
        assert_eq!(peter.open(&dup).unwrap(), GO_TEXT);
        assert!(is_bad_signature(enoch.open(&dup)));
        // A corrupt signature by a known key refuses the note.
        let corrupt_peter = format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert!(is_bad_signature(peter.open(&corrupt_peter)));
        // 101 signatures are too many, even valid ones.
        let many = format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101));
        assert!(is_malformed(peter.open(&many)));
        let hundred = format!("{GO_TEXT}\n{}", PETER_SIG.repeat(100));
        assert_eq!(peter.open(&hundred).unwrap(), GO_TEXT);
    }

    #[test]
    fn go_bad_messages_are_malformed() {
        // The "invalid encoded message syntax" cases of TestOpen (the non-UTF-8 one cannot be
        // a &str).
        let peter = Verifier::parse(PETER_VKEY).unwrap();
        let bad = [
            GO_TEXT.to_owned(),
            format!("{GO_TEXT}\n"),
            format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\x01{GO_TEXT}\n{PETER_SIG}"),
            format!("{GO_TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="),
            format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
        ];
        for msg in &bad {
            assert!(is_malformed(peter.open(msg)), "{msg:?} accepted");
        }
    }

    #[test]
    fn go_signer_reproduces_the_go_note() {
        // Ed25519 is deterministic: our signer with Go's example key must produce Go's note.
        let signer = peter_signer();
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.verifier_key(), PETER_VKEY);
        assert_eq!(signer.sign(GO_TEXT).unwrap(), go_note());
    }

    #[test]
    fn key_id_is_computed_per_spec() {
        let signer = new_signer(ORIGIN);
        let mut input = ORIGIN.as_bytes().to_vec();
        input.push(0x0a);
        input.push(0x01);
        input.extend_from_slice(&signer.public_key());
        let sum = digest::digest(&digest::SHA256, &input);
        let want = u32::from_be_bytes(sum.as_ref()[..4].try_into().unwrap());
        assert_eq!(signer.key_id(), want);
        let vkey = signer.verifier_key();
        let mut key = vec![0x01];
        key.extend_from_slice(&signer.public_key());
        assert_eq!(
            vkey,
            format!("{ORIGIN}+{want:08x}+{}", STANDARD.encode(&key))
        );
        let v = Verifier::parse(&vkey).unwrap();
        assert_eq!(v, signer.verifier());
        assert_eq!(v.to_text(), vkey);
    }

    #[test]
    fn signer_debug_hides_the_private_key() {
        let pkcs8 = Signer::generate_pkcs8().unwrap();
        let signer = Signer::from_pkcs8(ORIGIN, &pkcs8).unwrap();
        let debug = format!("{signer:?}");
        assert!(debug.contains(ORIGIN));
        assert!(debug.contains(&format!("{:08x}", signer.key_id())));
        // The seed (bytes 16..48 of ring's document) appears in no encoding.
        let seed = &pkcs8[16..48];
        assert!(!debug.contains(&STANDARD.encode(seed)));
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&hex));
        assert!(!debug.contains(&format!("{:?}", seed)));
    }

    #[test]
    fn signer_refuses_bad_names_and_keys() {
        let pkcs8 = Signer::generate_pkcs8().unwrap();
        for name in ["", "a+b", "a b", "a\tb", "a\u{a0}b", "a\u{3000}b", "a\x01b"] {
            assert!(matches!(
                Signer::from_pkcs8(name, &pkcs8),
                Err(AuditError::Key(_))
            ));
        }
        let long = "a".repeat(MAX_KEY_NAME_BYTES + 1);
        assert!(matches!(
            Signer::from_pkcs8(&long, &pkcs8),
            Err(AuditError::Key(_))
        ));
        assert!(Signer::from_pkcs8(&long[1..], &pkcs8).is_ok());
        for bad in [&[][..], &pkcs8[..pkcs8.len() - 1], &[0u8; 83][..]] {
            assert!(matches!(
                Signer::from_pkcs8(ORIGIN, bad),
                Err(AuditError::Key(_))
            ));
        }
        // A document whose public key does not match its seed.
        let mut wrong = pkcs8.clone();
        let last = wrong.len() - 1;
        wrong[last] ^= 1;
        assert!(matches!(
            Signer::from_pkcs8(ORIGIN, &wrong),
            Err(AuditError::Key(_))
        ));
    }

    #[test]
    fn sign_open_round_trip() {
        let signer = new_signer(ORIGIN);
        let v = signer.verifier();
        for text in [
            "hello\n",
            "\n",
            "a\n\nb\n",
            "trailing empty line\n\n",
            "— looks like a signature line\n",
            "ünïcödé ✓\n",
        ] {
            let note = signer.sign(text).unwrap();
            assert!(note.starts_with(text));
            assert!(note.ends_with('\n'));
            assert_eq!(v.open(&note).unwrap(), text, "{note:?}");
        }
        // The C2SP example's text, with its empty line, signed by our key.
        let (text, sigs) = split_note(C2SP_NOTE).unwrap();
        assert_eq!(sigs.len(), 1);
        assert_eq!(v.open(&signer.sign(text).unwrap()).unwrap(), text);
    }

    #[test]
    fn sign_refuses_what_open_would_refuse() {
        let signer = new_signer(ORIGIN);
        for text in ["", "no newline", "a\r\n", "tab\there\n", "nul\0\n"] {
            assert!(is_malformed(signer.sign(text)), "{text:?} signed");
        }
        let long_line = format!("{}\n", "x".repeat(MAX_LINE_BYTES + 1));
        assert!(is_malformed(signer.sign(&long_line)));
        let max_line = format!("{}\n", "x".repeat(MAX_LINE_BYTES));
        assert!(signer
            .verifier()
            .open(&signer.sign(&max_line).unwrap())
            .is_ok());
        // A text over the limit, and a text under it whose signed note would be over it.
        let line = format!("{}\n", "x".repeat(999));
        let big = line.repeat(MAX_NOTE_BYTES / 1000 + 1);
        assert!(is_malformed(signer.sign(&big)));
        let mut almost = line.repeat(MAX_NOTE_BYTES / 1000);
        almost.push_str(&"y\n".repeat((MAX_NOTE_BYTES - almost.len() - 50) / 2));
        assert!(almost.len() <= MAX_NOTE_BYTES);
        assert!(is_malformed(signer.sign(&almost)));
        let mut fits = line.repeat(MAX_NOTE_BYTES / 1000 - 1);
        fits.push_str(&"y\n".repeat(100));
        let note = signer.sign(&fits).unwrap();
        assert_eq!(signer.verifier().open(&note).unwrap(), fits);
    }

    #[test]
    fn tampering_is_refused() {
        let signer = new_signer(ORIGIN);
        let v = signer.verifier();
        let text = "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let note = signer.sign(text).unwrap();
        assert_eq!(v.open(&note).unwrap(), text);

        // Every changed text byte.
        for i in 0..text.len() {
            let mut b = note.clone().into_bytes();
            b[i] = if b[i] == b'x' { b'y' } else { b'x' };
            let n = String::from_utf8(b).unwrap();
            assert!(v.open(&n).is_err(), "changed byte {i} accepted");
        }
        // Every changed signature character (still base64).
        let sig_start = note.rfind(' ').unwrap() + 1;
        for i in sig_start..note.len() - 1 {
            let mut b = note.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let n = String::from_utf8(b).unwrap();
            assert!(v.open(&n).is_err(), "changed signature byte {i} accepted");
        }
        // A wrong key, including one with the same name.
        assert!(is_bad_signature(new_signer(ORIGIN).verifier().open(&note)));
        assert!(is_bad_signature(new_signer("other").verifier().open(&note)));
        // The same key under another name has another key ID: no signature by it.
        let mut renamed = v.clone();
        renamed.name = "other".to_owned();
        renamed.key_id = ed25519_key_id("other", &renamed.public_key);
        assert!(is_bad_signature(renamed.open(&note)));
        // A verifier with our name and key ID but another public key: the signature is ours
        // by name and ID, so it is verified and fails.
        let mut impostor = new_signer(ORIGIN).verifier();
        impostor.key_id = v.key_id;
        assert!(is_bad_signature(impostor.open(&note)));
        // A missing blank line.
        let no_blank = note.replacen("=\n\n", "=\n", 1);
        assert!(is_malformed(v.open(&no_blank)));
        // A signature by another key only.
        let other = new_signer("other.example/log").sign(text).unwrap();
        assert!(is_bad_signature(v.open(&other)));
        // Another key's signature alongside ours is ignored.
        let other_sig = &other[text.len() + 1..];
        assert_eq!(v.open(&format!("{note}{other_sig}")).unwrap(), text);
        assert_eq!(
            v.open(&format!("{text}\n{other_sig}{}", &note[text.len() + 1..]))
                .unwrap(),
            text
        );
        // An em dash replaced by '-'.
        assert!(is_malformed(v.open(&note.replace('—', "-"))));
        assert!(is_malformed(v.open(&note.replace("— ", "—"))));
        // CRLF line endings.
        assert!(is_malformed(v.open(&note.replace('\n', "\r\n"))));
        // Trailing garbage.
        assert!(is_malformed(v.open(&format!("{note}garbage"))));
        assert!(is_malformed(v.open(&format!("{note}garbage\n"))));
        assert!(is_malformed(v.open(&format!("{note}\n"))));
        assert!(is_malformed(v.open(&format!("{note} "))));
        // A signature line with a space in it, without its final newline, or too short.
        let sig_line = &note[text.len() + 1..];
        assert!(is_malformed(
            v.open(&format!("{text}\n{}", sig_line.replace(' ', "  ")))
        ));
        assert!(is_malformed(v.open(&note[..note.len() - 1])));
        assert!(is_malformed(
            v.open(&format!("{text}\n— {ORIGIN} AAAAAA==\n"))
        ));
        assert!(is_malformed(v.open(&format!("{text}\n— {ORIGIN} \n"))));
        // A valid signature by our key plus an invalid one by it.
        let id = v.key_id.to_be_bytes();
        let mut forged = id.to_vec();
        forged.extend_from_slice(&[0u8; 64]);
        let forged_line = format!("— {ORIGIN} {}\n", STANDARD.encode(&forged));
        assert!(is_bad_signature(v.open(&format!("{note}{forged_line}"))));
        // Our key ID under another name, and our name with another key ID, are ignored.
        let other_name = format!("— someone.else {}\n", STANDARD.encode(&forged));
        assert_eq!(v.open(&format!("{note}{other_name}")).unwrap(), text);
        let mut other_id = (v.key_id ^ 1).to_be_bytes().to_vec();
        other_id.extend_from_slice(&[0u8; 64]);
        let other_id_line = format!("— {ORIGIN} {}\n", STANDARD.encode(&other_id));
        assert_eq!(v.open(&format!("{note}{other_id_line}")).unwrap(), text);
        assert!(is_bad_signature(
            v.open(&format!("{text}\n{other_id_line}"))
        ));
        // A note over the size limit.
        let huge = format!("{}{note}", "x\n".repeat(MAX_NOTE_BYTES / 2));
        assert!(is_malformed(v.open(&huge)));
    }

    #[test]
    fn c2sp_examples_are_well_formed() {
        let (text, sigs) = split_note(C2SP_NOTE).unwrap();
        assert_eq!(
            text,
            "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n"
        );
        assert_eq!(sigs[0].name, "quasimodo.example/salvatore");
        assert_eq!(sigs[0].signature.len(), 64);
        let (text, sigs) = split_note(C2SP_CHECKPOINT).unwrap();
        assert_eq!(sigs[0].name, "example.com/behind-the-sofa");
        assert_eq!(sigs[0].signature.len(), 64);
        let c = Checkpoint::parse(text).unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20852163);
        assert_eq!(
            STANDARD.encode(c.root),
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
        );
        assert!(c.extensions.is_empty());
        assert_eq!(c.to_text(), text);
    }

    #[test]
    fn sumdb_checkpoint_verifies() {
        let v = Verifier::parse(SUMDB_VKEY).unwrap();
        let text = v.open(SUMDB_CHECKPOINT).unwrap();
        let c = Checkpoint::parse(&text).unwrap();
        assert_eq!(c.origin, "go.sum database tree");
        assert_eq!(c.size, 30055305);
        assert_eq!(
            STANDARD.encode(c.root),
            "mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM="
        );
        assert_eq!(c.to_text(), text);
        // Its origin is not its key name, which our rule refuses.
        assert!(is_bad_signature(Checkpoint::open(SUMDB_CHECKPOINT, &v)));
        // A changed tree size breaks the signature.
        let forged = SUMDB_CHECKPOINT.replace("30055305", "30055306");
        assert!(is_bad_signature(v.open(&forged)));
    }

    #[test]
    fn checkpoint_round_trip() {
        let signer = new_signer(ORIGIN);
        let v = signer.verifier();
        for c in [
            checkpoint(0),
            checkpoint(1),
            checkpoint(u64::MAX),
            Checkpoint {
                extensions: vec!["ext one".to_owned(), "— two".to_owned()],
                ..checkpoint(17)
            },
        ] {
            let text = c.to_text();
            assert!(text.ends_with('\n'));
            assert_eq!(Checkpoint::parse(&text).unwrap(), c);
            let note = c.sign(&signer).unwrap();
            assert!(note.starts_with(&text));
            assert_eq!(Checkpoint::open(&note, &v).unwrap(), c);
            // Another log's key does not open it.
            assert!(is_bad_signature(Checkpoint::open(
                &note,
                &new_signer(ORIGIN).verifier()
            )));
        }
        assert_eq!(
            checkpoint(5).to_text(),
            format!("{ORIGIN}\n5\n{}\n", STANDARD.encode([5u8; 32]))
        );
        // An origin other than the key name is refused on both sides.
        let other = Checkpoint {
            origin: "other.example/log".to_owned(),
            ..checkpoint(3)
        };
        assert!(is_malformed(other.sign(&signer)));
        let note = signer.sign(&other.to_text()).unwrap();
        assert!(is_bad_signature(Checkpoint::open(&note, &v)));
        // Fields that do not print as a checkpoint are refused.
        for bad in [
            Checkpoint {
                extensions: vec![String::new()],
                ..checkpoint(3)
            },
            Checkpoint {
                extensions: vec!["a\nb".to_owned()],
                ..checkpoint(3)
            },
            Checkpoint {
                extensions: vec!["a\rb".to_owned()],
                ..checkpoint(3)
            },
        ] {
            assert!(is_malformed(bad.sign(&signer)), "{bad:?} signed");
        }
        let bad_origin = Checkpoint {
            origin: format!("{ORIGIN}\n5"),
            ..checkpoint(3)
        };
        assert!(is_malformed(bad_origin.sign(&signer)));
        // A signed note whose text is not a checkpoint.
        assert!(is_malformed(Checkpoint::open(
            &signer.sign("hello\n").unwrap(),
            &v
        )));
    }

    #[test]
    fn malformed_checkpoints_are_refused() {
        let root = STANDARD.encode([7u8; 32]);
        let ok = format!("o\n5\n{root}\n");
        assert!(Checkpoint::parse(&ok).is_ok());
        let root31 = STANDARD.encode([7u8; 31]);
        let root33 = STANDARD.encode([7u8; 33]);
        let unpadded = root.trim_end_matches('=').to_owned();
        let urlsafe = base64::engine::general_purpose::URL_SAFE.encode([0xffu8; 32]);
        let bad = [
            format!("o\n01\n{root}\n"),
            format!("o\n00\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n+1\n{root}\n"),
            format!("o\n 1\n{root}\n"),
            format!("o\n1 \n{root}\n"),
            format!("o\n0x10\n{root}\n"),
            format!("o\n1e3\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n99999999999999999999999\n{root}\n"),
            format!("o\n\n{root}\n"),
            "o\n5\nnot base64!\n".to_owned(),
            format!("o\n5\n{root31}\n"),
            format!("o\n5\n{root33}\n"),
            format!("o\n5\n{unpadded}\n"),
            format!("o\n5\n{urlsafe}\n"),
            format!("o\n5\n {root}\n"),
            "o\n5\n\n".to_owned(),
            "o\n5\n".to_owned(),
            "o\n".to_owned(),
            String::new(),
            "\n".to_owned(),
            format!("\n5\n{root}\n"),
            format!("o\n5\n{root}"),
            format!("o\n5\n{root}\n\n"),
            format!("o\n5\n{root}\next\n\n"),
            format!("o\n5\n{root}\n\next\n"),
            format!("o\r\n5\r\n{root}\r\n"),
            format!("o\n5\n{root}\nx\ty\n"),
            format!("{}\n5\n{root}\n", "o".repeat(MAX_LINE_BYTES + 1)),
        ];
        for text in &bad {
            assert!(is_malformed(Checkpoint::parse(text)), "{text:?} accepted");
        }
        assert_eq!(
            Checkpoint::parse(&format!("o\n18446744073709551615\n{root}\n"))
                .unwrap()
                .size,
            u64::MAX
        );
    }

    fn hashes(n: usize) -> Vec<Hash> {
        (0..n).map(|i| [i as u8; 32]).collect()
    }

    #[test]
    fn inclusion_proof_round_trip() {
        let signer = new_signer(ORIGIN);
        let note = checkpoint(1000).sign(&signer).unwrap();
        for (index, n) in [(0u64, 0usize), (1, 1), (999, 10), (u64::MAX, 64)] {
            let proof = hashes(n);
            let text = inclusion_proof_text(index, &proof, &note);
            assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex "));
            assert!(text.ends_with(&format!("\n\n{note}")));
            let (i, p, c) = parse_inclusion_proof_text(&text).unwrap();
            assert_eq!((i, &p, c.as_str()), (index, &proof, note.as_str()));
            assert_eq!(
                Checkpoint::open(&c, &signer.verifier()).unwrap(),
                checkpoint(1000)
            );
            let parsed = InclusionProof::parse(&text).unwrap();
            assert_eq!(parsed.extra, None);
            assert_eq!(parsed.to_text(), text);
        }
        assert_eq!(
            inclusion_proof_text(3, &hashes(2), &note),
            format!(
                "c2sp.org/tlog-proof@v1\nindex 3\n{}\n{}\n\n{note}",
                STANDARD.encode([0u8; 32]),
                STANDARD.encode([1u8; 32])
            )
        );
        // With extra data.
        let with_extra = InclusionProof {
            extra: Some(b"age-v1.2.1-darwin-arm64.tar.gz".to_vec()),
            index: 73894,
            proof: hashes(5),
            checkpoint: note.clone(),
        };
        let text = with_extra.to_text();
        assert!(text.starts_with(
            "c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\nindex 73894\n"
        ));
        assert_eq!(InclusionProof::parse(&text).unwrap(), with_extra);
        let (i, p, c) = parse_inclusion_proof_text(&text).unwrap();
        assert_eq!((i, p, c), (73894, hashes(5), note.clone()));
        // An empty extra is printed as none.
        let empty_extra = InclusionProof {
            extra: Some(Vec::new()),
            ..with_extra.clone()
        };
        assert!(!empty_extra.to_text().contains("extra"));
    }

    #[test]
    fn c2sp_proof_example_lines_parse() {
        // The proof lines of the tlog-proof.md example, with a checkpoint of ours (the
        // example's signatures are elided with "[...]").
        let signer = new_signer(ORIGIN);
        let note = checkpoint(109482).sign(&signer).unwrap();
        let text = format!(
            "c2sp.org/tlog-proof@v1\n\
             extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n\
             index 73894\n\
             gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n\
             B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n\
             EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n\
             RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n\
             AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n\
             \n{note}"
        );
        let p = InclusionProof::parse(&text).unwrap();
        assert!(p
            .extra
            .as_deref()
            .unwrap()
            .starts_with(b"age-v1.2.1-darwin-arm64.tar.gz"));
        assert_eq!(p.index, 73894);
        assert_eq!(p.proof.len(), 5);
        assert_eq!(
            STANDARD.encode(p.proof[4]),
            "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk="
        );
        assert_eq!(p.to_text(), text);
    }

    #[test]
    fn malformed_inclusion_proofs_are_refused() {
        let signer = new_signer(ORIGIN);
        let note = checkpoint(10).sign(&signer).unwrap();
        let h = STANDARD.encode([9u8; 32]);
        let h31 = STANDARD.encode([9u8; 31]);
        let h33 = STANDARD.encode([9u8; 33]);
        let too_many = format!("{h}\n").repeat(65);
        let max = format!("{h}\n").repeat(64);
        assert!(parse_inclusion_proof_text(&format!(
            "c2sp.org/tlog-proof@v1\nindex 1\n{max}\n{note}"
        ))
        .is_ok());
        let bad = [
            format!("c2sp.org/tlog-proof@v2\nindex 1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1 \nindex 1\n{h}\n\n{note}"),
            format!("index 1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 01\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex -1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 18446744073709551616\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex  1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nIndex 1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h31}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h33}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\nnot a hash\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{too_many}\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\nnot a note\n"),
            format!(
                "c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n{}",
                signer.sign("not a checkpoint\n").unwrap()
            ),
            format!("c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n{note}garbage"),
            format!(
                "c2sp.org/tlog-proof@v1\nindex 1\n{h}\n\n{}",
                &note[..note.len() - 1]
            ),
            format!("c2sp.org/tlog-proof@v1\nextra \nindex 1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nindex 1\nextra AA==\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\nextra AA==\nextra AA==\nindex 1\n{h}\n\n{note}"),
            format!("c2sp.org/tlog-proof@v1\r\nindex 1\r\n{h}\r\n\r\n{note}"),
            "c2sp.org/tlog-proof@v1\nindex 1\n".to_owned(),
            "c2sp.org/tlog-proof@v1".to_owned(),
            String::new(),
            // A consistency proof is not an inclusion proof.
            consistency_proof_text(1, &[[9u8; 32]], &note),
        ];
        for text in &bad {
            assert!(
                is_malformed(parse_inclusion_proof_text(text)),
                "{text:?} accepted"
            );
        }
    }

    #[test]
    fn consistency_proof_round_trip_and_refusals() {
        let signer = new_signer(ORIGIN);
        let note = checkpoint(10).sign(&signer).unwrap();
        for (old, n) in [(0u64, 0usize), (1, 1), (7, 4), (u64::MAX, 65)] {
            let proof = hashes(n);
            let text = consistency_proof_text(old, &proof, &note);
            assert!(text.starts_with("tollgate/tlog-consistency-proof@v1\nold "));
            let (o, p, c) = parse_consistency_proof_text(&text).unwrap();
            assert_eq!((o, p, c), (old, proof, note.clone()));
        }
        let h = STANDARD.encode([9u8; 32]);
        let too_many = format!("{h}\n").repeat(66);
        let bad = [
            format!("tollgate/tlog-consistency-proof@v1\nold 01\n{h}\n\n{note}"),
            format!("tollgate/tlog-consistency-proof@v1\nindex 1\n{h}\n\n{note}"),
            format!("tollgate/tlog-consistency-proof@v1\nextra AA==\nold 1\n{h}\n\n{note}"),
            format!("tollgate/tlog-consistency-proof@v1\nold 1\n{too_many}\n{note}"),
            format!("tollgate/tlog-consistency-proof@v1\nold 1\n{h}\n{note}"),
            format!("tollgate/tlog-consistency-proof@v1\nold 1\n{h}\n\nnot a note\n"),
            format!("c2sp.org/tlog-proof@v1\nold 1\n{h}\n\n{note}"),
            inclusion_proof_text(1, &[[9u8; 32]], &note),
            String::new(),
        ];
        for text in &bad {
            assert!(
                is_malformed(parse_consistency_proof_text(text)),
                "{text:?} accepted"
            );
        }
    }

    /// xorshift64*: a small deterministic generator for the fuzz loop.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
        const INTERESTING: &[u8] = b"\n\r \0+=-/A0a\xe2\x80\x94\xff";
        let mut b = input.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(b.len() + 1);
            match rng.below(7) {
                0 if at < b.len() => b[at] = rng.next() as u8,
                1 if at < b.len() => b[at] = INTERESTING[rng.below(INTERESTING.len())],
                2 => b.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                3 if at < b.len() => {
                    b.remove(at);
                }
                4 => b.truncate(at),
                5 => {
                    let from = rng.below(b.len() + 1);
                    let to = (from + rng.below(64)).min(b.len());
                    let chunk = b[from..to].to_vec();
                    b.splice(at..at, chunk);
                }
                _ if at < b.len() => b[at] ^= 1 << rng.below(8),
                _ => {}
            }
        }
        b
    }

    #[test]
    fn nothing_panics_on_mutated_input() {
        let signer = new_signer(ORIGIN);
        let v = signer.verifier();
        let cp = Checkpoint {
            extensions: vec!["ext".to_owned()],
            ..checkpoint(42)
        };
        let note = cp.sign(&signer).unwrap();
        let text = cp.to_text();
        let inclusion = InclusionProof {
            extra: Some(b"extra".to_vec()),
            index: 41,
            proof: hashes(6),
            checkpoint: note.clone(),
        }
        .to_text();
        let consistency = consistency_proof_text(17, &hashes(6), &note);
        let seeds = [
            note.as_bytes(),
            text.as_bytes(),
            inclusion.as_bytes(),
            consistency.as_bytes(),
            PETER_VKEY.as_bytes(),
            SUMDB_CHECKPOINT.as_bytes(),
        ];
        let peter = Verifier::parse(PETER_VKEY).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let input = if round % 10 == 9 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                mutate(&mut rng, seeds[round % seeds.len()])
            };
            let s = String::from_utf8_lossy(&input);
            if let Ok(opened) = v.open(&s) {
                // No mutation can forge a signature: what opens is what was signed.
                assert_eq!(opened, text, "{s:?}");
            }
            if let Ok(c) = Checkpoint::open(&s, &v) {
                assert_eq!(c, cp);
            }
            let _ = peter.open(&s);
            let _ = Checkpoint::parse(&s);
            let _ = Verifier::parse(&s);
            if let Ok((_, _, c)) = parse_inclusion_proof_text(&s) {
                let _ = Checkpoint::open(&c, &v);
            }
            if let Ok((_, _, c)) = parse_consistency_proof_text(&s) {
                let _ = Checkpoint::open(&c, &v);
            }
            let _ = InclusionProof::parse(&s);
        }
    }
}
