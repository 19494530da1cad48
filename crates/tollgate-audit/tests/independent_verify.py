#!/usr/bin/env python3
"""An independent RFC 9162 Merkle-tree verifier, for cross-checking tollgate-audit.

Written from the text of RFC 9162 (§2.1.1 tree hash, §2.1.3.2 inclusion, §2.1.4.2
consistency), with the standard library only, and deliberately not from the Rust code: the
Rust verifier folds a proof by the shape of the path, this one runs the RFC's fn/sn
algorithm step by step, and tree heads are computed here from the entries themselves.

Reads JSON lines on stdin, one check each:

  {"kind":"inclusion","leaf":hex,"index":n,"size":n,"proof":[hex...],"root":hex}
  {"kind":"consistency","old_size":n,"new_size":n,"old_root":hex,"new_root":hex,"proof":[hex...]}
  {"kind":"root","leaves":[hex entry data...],"root":hex}

and prints one line per input: "ok" if the check holds, "bad" otherwise (including any
malformed input).
"""

import hashlib
import json
import sys


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(entries: list) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1, recursively over the entries themselves."""
    n = len(entries)
    if n == 0:
        return h(b"")
    if n == 1:
        return h(b"\x00" + entries[0])
    k = 1
    while k * 2 < n:  # the largest power of two smaller than n
        k *= 2
    return h(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def verify_inclusion(leaf_index, tree_size, hash_, inclusion_path, root_hash) -> bool:
    """RFC 9162 §2.1.3.2, step by step."""
    # 1. Compare leaf_index from the inclusion_proof against tree_size.
    if leaf_index >= tree_size:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn, sn = leaf_index, tree_size - 1
    # 3. Set r to hash.
    r = hash_
    # 4. For each value p in the inclusion_path array:
    for p in inclusion_path:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # 1. Set r to HASH(0x01 || p || r).
            r = h(b"\x01" + p + r)
            # 2. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #    either LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        # Otherwise: set r to HASH(0x01 || r || p).
        else:
            r = h(b"\x01" + r + p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Compare sn to 0. Compare r against the root_hash.
    return sn == 0 and r == root_hash


def verify_consistency(first, second, first_hash, second_hash, consistency_path) -> bool:
    """RFC 9162 §2.1.4.2, step by step, after the trivial cases (equal sizes: nothing to
    prove, the heads must be the same; first size 0: the empty tree is a prefix of any)."""
    if first > second:
        return False
    if first == second:
        return not consistency_path and first_hash == second_hash
    if first == 0:
        return not consistency_path
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not consistency_path:
        return False
    path = list(consistency_path)
    # 2. If first is an exact power of 2, then prepend first_hash to the consistency_path.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn, sn = first - 1, second - 1
    # 4. If LSB(fn) is set, then right-shift both fn and sn equally until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, then stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if fn & 1 or fn == sn:
            # 1. Set fr to HASH(0x01 || c || fr).  2. Set sr to HASH(0x01 || c || sr).
            fr = h(b"\x01" + c + fr)
            sr = h(b"\x01" + c + sr)
            # 3. If LSB(fn) is not set, then right-shift both fn and sn equally until
            #    either LSB(fn) is set or fn is 0.
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        # Otherwise: set sr to HASH(0x01 || sr || c).
        else:
            sr = h(b"\x01" + sr + c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Verify fr equals first_hash, sr equals second_hash, and sn is 0.
    return fr == first_hash and sr == second_hash and sn == 0


def hash_of(value) -> bytes:
    data = bytes.fromhex(value)
    if len(data) != 32:
        raise ValueError("not a SHA-256 hash")
    return data


def size_of(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ValueError("not a tree size or index")
    return value


def check(line: str) -> bool:
    msg = json.loads(line)
    kind = msg["kind"]
    if kind == "inclusion":
        return verify_inclusion(
            size_of(msg["index"]),
            size_of(msg["size"]),
            hash_of(msg["leaf"]),
            [hash_of(p) for p in msg["proof"]],
            hash_of(msg["root"]),
        )
    if kind == "consistency":
        return verify_consistency(
            size_of(msg["old_size"]),
            size_of(msg["new_size"]),
            hash_of(msg["old_root"]),
            hash_of(msg["new_root"]),
            [hash_of(p) for p in msg["proof"]],
        )
    if kind == "root":
        return mth([bytes.fromhex(e) for e in msg["leaves"]]) == hash_of(msg["root"])
    raise ValueError("unknown kind")


def main() -> None:
    out = []
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            good = check(line)
        except (ValueError, KeyError, TypeError):
            good = False
        out.append("ok" if good else "bad")
    sys.stdout.write("".join(x + "\n" for x in out))


if __name__ == "__main__":
    main()
