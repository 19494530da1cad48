#!/usr/bin/env python3
"""Re-check a Tollgate audit-log export with nothing but Python's standard library.

    python3 verify_export.py EXPORT_DIR [VERIFIER_KEY]

Re-hashes EXPORT_DIR/entries.jsonl as an RFC 9162 Merkle tree (leaf = SHA-256(0x00 || line),
node = SHA-256(0x01 || left || right)) and compares the root at the checkpoint's size with the
root in EXPORT_DIR/checkpoint. With VERIFIER_KEY (`tollgate audit key`) and the `cryptography`
package installed, it also checks the checkpoint's Ed25519 signature. Exit 0 if it all holds.
"""
import base64, hashlib, sys

def mth(leaves):
    """Merkle tree hash of a list of leaf hashes (RFC 9162 section 2.1.1)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()

export = sys.argv[1]
note = open(f"{export}/checkpoint", encoding="utf-8").read()
text, _, signatures = note.partition("\n\n")
origin, size, root = text.split("\n")[:3]
size, root = int(size), base64.b64decode(root)
with open(f"{export}/entries.jsonl", "rb") as f:
    leaves = [hashlib.sha256(b"\x00" + line.rstrip(b"\n")).digest() for line in f]
if len(leaves) < size:
    sys.exit(f"TAMPERED: {len(leaves)} entries, but the checkpoint signs {size}")
if mth(leaves[:size]) != root:
    sys.exit(f"TAMPERED: the first {size} entries do not hash to the signed root")
if len(sys.argv) > 2:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    name, key_id, key = sys.argv[2].split("+", 2)
    key = base64.b64decode(key)
    assert key[0] == 1 and name == origin, "not this log's key"
    for line in signatures.splitlines():
        _, signer, sig = line.split(" ")
        sig = base64.b64decode(sig)
        if signer == name and sig[:4].hex() == key_id:
            Ed25519PublicKey.from_public_bytes(key[1:]).verify(sig[4:], (text + "\n").encode())
            break
    else:
        sys.exit("no signature by this key")
print(f"ok: {size} entries hash to the signed root of {origin}")
