//! The Merkle-tree maths of the audit log, as RFC 9162 §2.1 defines it: leaf and node hashes,
//! tree heads, inclusion and consistency proofs and their verification, and the frontier (the
//! right edge of a growing tree) that lets the log append in O(log n) memory.
//!
//! Everything here is pure computation over hashes. It does no I/O and makes no storage
//! decisions: complete subtrees are read through the [`Subtrees`] trait, which the on-disk store
//! implements over its level files and [`MemoryTree`] implements in memory. Sizes, indices and
//! proofs may come from files and the network, so every function returns an error on bad input
//! instead of panicking, and none does more than O(log n) subtree lookups.
//!
//! Terms: the *tree of size n* is the Merkle tree over leaves `0..n`. A *complete subtree* at
//! `(level, index)` covers leaves `[index·2^level, (index+1)·2^level)`; it is a node of every tree
//! that contains all its leaves.

use ring::digest;

use crate::AuditError;

/// A SHA-256 hash: a leaf hash, a node hash or a tree head.
pub type Hash = [u8; 32];

/// The most levels a tree of `u64` leaves can have above its leaves.
const MAX_LEVELS: u32 = 64;

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(digest.as_ref()) {
        *o = *b;
    }
    out
}

/// The hash of one log entry as a leaf: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0x00], entry])
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The head of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// Hashes of complete, aligned subtrees: `subtree(level, index)` is the Merkle tree hash of
/// leaves `[index·2^level, (index+1)·2^level)` (level 0 is the leaf hash itself). Implemented by
/// the on-disk store (one file per level) and by [`MemoryTree`]. A subtree that is not complete
/// in the source is an error, never a panic.
pub trait Subtrees {
    /// The hash of the complete subtree at `(level, index)`.
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, AuditError>;
}

/// Folds the complete subtrees that tile `[start, start + len)` into the Merkle tree hash of
/// those leaves, the largest subtree leftmost. Visits the subtrees right to left (lowest set bit
/// of `len` first) so that no buffer is needed. The caller guarantees that `start` is a multiple
/// of the largest power of two ≤ `len`, so that every subtree of the tiling is aligned.
fn fold_range(src: &impl Subtrees, start: u64, len: u64) -> Result<Hash, AuditError> {
    let mut acc: Option<Hash> = None;
    let mut rest = len;
    while rest != 0 {
        let level = rest.trailing_zeros();
        rest &= !(1u64 << level);
        // `rest` is now the leaves of the larger subtrees to the left of this one.
        let offset = start.checked_add(rest).ok_or(AuditError::OutOfRange {
            what: "range end",
            value: u64::MAX,
            size: u64::MAX,
        })?;
        let hash = src.subtree(level, offset >> level)?;
        acc = Some(match acc {
            None => hash,
            Some(right) => node_hash(&hash, &right),
        });
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// The Merkle tree hash of leaves `[start, end)`, MTH(D\[start:end\]) in RFC 9162 terms, with
/// O(log n) subtree lookups. `start` must be a multiple of the largest power of two ≤
/// `end - start` (true of every node of an RFC 9162 tree, and of every prefix `[0, n)`), so that
/// the range is tiled by complete subtrees of the source; an empty range is [`empty_root`].
pub fn range_root(src: &impl Subtrees, start: u64, end: u64) -> Result<Hash, AuditError> {
    let len = end.checked_sub(start).ok_or(AuditError::OutOfRange {
        what: "range start",
        value: start,
        size: end,
    })?;
    if len == 0 {
        return Ok(empty_root());
    }
    let top = 1u64 << (63 - len.leading_zeros());
    if !start.is_multiple_of(top) {
        return Err(AuditError::malformed(
            "subtree range",
            format!("[{start}, {end}) does not start on a multiple of {top}"),
        ));
    }
    fold_range(src, start, len)
}

/// The tree head of the tree of `size` leaves: MTH(D\[0:size\]), [`empty_root`] for size 0.
pub fn root(src: &impl Subtrees, size: u64) -> Result<Hash, AuditError> {
    fold_range(src, 0, size)
}

/// The largest power of two strictly below `n`, for `n ≥ 2` (RFC 9162's `k`).
fn split_point(n: u64) -> u64 {
    // For n ≥ 2, n - 1 ≥ 1, and the highest bit of n - 1 is the largest power of two < n.
    let below = n.saturating_sub(1).max(1);
    1u64 << (63 - below.leading_zeros())
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1 PATH):
/// the sibling hashes from the leaf up to the root, nearest the leaf first.
pub fn inclusion_proof(
    src: &impl Subtrees,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, AuditError> {
    if index >= size {
        return Err(AuditError::OutOfRange {
            what: "index",
            value: index,
            size,
        });
    }
    // Walk down from the root; (start, len) is the current node, `m` the leaf's offset in it.
    // Only the first right sibling met can be an incomplete subtree: below a left turn every
    // node is complete. So this is O(log n) lookups in all.
    let mut path = Vec::with_capacity(MAX_LEVELS as usize);
    let (mut start, mut len, mut m) = (0u64, size, index);
    while len > 1 {
        let k = split_point(len);
        if m < k {
            path.push(range_root(src, start + k, start + len)?);
            len = k;
        } else {
            path.push(range_root(src, start, start + k)?);
            start += k;
            m -= k;
            len -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof from the tree of `old_size` leaves to the tree of `new_size` leaves
/// (RFC 9162 §2.1.4.1 PROOF). Empty when `old_size` is 0 or equal to `new_size`; `old_size >
/// new_size` is [`AuditError::OutOfRange`].
pub fn consistency_proof(
    src: &impl Subtrees,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, AuditError> {
    if old_size > new_size {
        return Err(AuditError::OutOfRange {
            what: "old size",
            value: old_size,
            size: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:start+len], whole), walked from the root down; the hashes come out
    // root-first and are reversed at the end.
    let mut proof = Vec::with_capacity(MAX_LEVELS as usize + 1);
    let (mut start, mut len, mut m, mut whole) = (0u64, new_size, old_size, true);
    loop {
        if m == len {
            if !whole {
                proof.push(range_root(src, start, start + len)?);
            }
            break;
        }
        // Here 1 ≤ m < len, so len ≥ 2.
        let k = split_point(len);
        if m <= k {
            proof.push(range_root(src, start + k, start + len)?);
            len = k;
        } else {
            proof.push(range_root(src, start, start + k)?);
            start += k;
            m -= k;
            len -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The number of bits needed to write `x` (0 for 0).
fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

fn proof_failed(detail: impl Into<String>) -> AuditError {
    AuditError::ProofFailed(detail.into())
}

/// Folds a path of sibling hashes up from `seed`, the node at position `index` among the
/// `count` nodes of its level (the last possibly incomplete). Returns the root the path leads
/// to and, folded from only the left siblings, the root of the tree that ends with the seed
/// node. Errors if `path` has not exactly the length such a path has.
///
/// Below level `inner` (where the seed's path and the last node's path meet) every sibling is
/// present, on the side the index bit says; above it only left siblings exist (a node whose
/// right side would be beyond the end is promoted unchanged).
fn fold_path(
    seed: Hash,
    index: u64,
    count: u64,
    path: &[Hash],
) -> Result<(Hash, Hash), AuditError> {
    let last = count.saturating_sub(1);
    let inner = bit_len(index ^ last);
    let border = (index.checked_shr(inner).unwrap_or(0)).count_ones();
    let want = (inner as usize).saturating_add(border as usize);
    let split = path.split_at_checked(inner as usize);
    let (Some((inner_path, border_path)), true) = (split, path.len() == want) else {
        return Err(proof_failed(format!(
            "the proof has {} hashes, a path to node {index} of {count} has {want}",
            path.len()
        )));
    };
    let (mut full, mut left_only) = (seed, seed);
    for (level, sibling) in (0u32..).zip(inner_path) {
        if index.checked_shr(level).unwrap_or(0) & 1 == 1 {
            full = node_hash(sibling, &full);
            left_only = node_hash(sibling, &left_only);
        } else {
            full = node_hash(&full, sibling);
        }
    }
    for sibling in border_path {
        full = node_hash(sibling, &full);
        left_only = node_hash(sibling, &left_only);
    }
    Ok((full, left_only))
}

/// Checks that `proof` proves the leaf hash `leaf` is leaf `index` of the tree of `size` leaves
/// whose head is `root` (RFC 9162 §2.1.3.2). An index outside the tree is
/// [`AuditError::OutOfRange`]; any other failure is [`AuditError::ProofFailed`].
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), AuditError> {
    if index >= size {
        return Err(AuditError::OutOfRange {
            what: "index",
            value: index,
            size,
        });
    }
    let (computed, _) = fold_path(*leaf, index, size, proof)?;
    if computed != *root {
        return Err(proof_failed(format!(
            "the inclusion proof of leaf {index} does not lead to the head of the tree of size {size}"
        )));
    }
    Ok(())
}

/// Checks that `proof` proves the tree of `new_size` leaves with head `new_root` extends the
/// tree of `old_size` leaves with head `old_root` (RFC 9162 §2.1.4.2). Equal sizes need an empty
/// proof and equal heads; an old size of 0 needs an empty proof and is consistent with anything.
/// `old_size > new_size` is [`AuditError::OutOfRange`]; any other failure is
/// [`AuditError::ProofFailed`].
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), AuditError> {
    if old_size > new_size {
        return Err(AuditError::OutOfRange {
            what: "old size",
            value: old_size,
            size: new_size,
        });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(proof_failed(format!(
                "a consistency proof from size {old_size} to size {new_size} must be empty, this one has {} hashes",
                proof.len()
            )));
        }
        if old_size == new_size && old_root != new_root {
            return Err(proof_failed(format!(
                "two different heads for the tree of size {old_size}"
            )));
        }
        return Ok(());
    }
    // The old tree ends with the complete subtree X at (level, index): its lowest set bit. The
    // proof is X's hash (left out when X is the whole old tree, whose head the verifier has)
    // followed by X's path to the new root; X's left siblings alone lead to the old root.
    let level = old_size.trailing_zeros();
    let index = (old_size - 1) >> level;
    let count = ((new_size - 1) >> level) + 1;
    let (seed, path) = if index == 0 {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(proof_failed("the consistency proof is empty")),
        }
    };
    let (computed_new, computed_old) = fold_path(seed, index, count, path)
        .map_err(|_| proof_failed(format!(
            "the consistency proof from size {old_size} to size {new_size} has the wrong length ({} hashes)",
            proof.len()
        )))?;
    if computed_old != *old_root {
        return Err(proof_failed(format!(
            "the consistency proof does not lead to the head of the tree of size {old_size}"
        )));
    }
    if computed_new != *new_root {
        return Err(proof_failed(format!(
            "the consistency proof does not lead to the head of the tree of size {new_size}"
        )));
    }
    Ok(())
}

/// The right edge of a growing tree (a compact range over `[0, size)`): the heads of the
/// complete subtrees that tile it, one per set bit of the size, largest first. O(log n) memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Complete subtree hashes, the leftmost (largest) first.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash. Returns the complete subtrees this append finished, as `(level,
    /// index, hash)`, level 0 (the leaf itself) first: the store appends each to its level file.
    ///
    /// A tree is limited to `u64::MAX` leaves (at 20,000 a second, millions of years): pushing
    /// onto a full tree changes nothing and returns no subtrees.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let Some(new_size) = self.size.checked_add(1) else {
            return Vec::new();
        };
        let merges = self.size.trailing_ones();
        let mut done = Vec::with_capacity(merges as usize + 1);
        let mut index = self.size;
        let mut hash = leaf;
        done.push((0, index, hash));
        for level in 1..=merges {
            let Some(left) = self.nodes.pop() else {
                // Unreachable while `nodes` holds one hash per set bit of `size`.
                break;
            };
            hash = node_hash(&left, &hash);
            index >>= 1;
            done.push((level, index, hash));
        }
        self.nodes.push(hash);
        self.size = new_size;
        done
    }

    /// The tree head of everything pushed ([`empty_root`] when empty).
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }

    /// Rebuilds the frontier of the tree of `size` leaves from a source of its complete
    /// subtrees (the store reopening its files), with one lookup per set bit of `size`.
    pub fn from_subtrees(src: &impl Subtrees, size: u64) -> Result<Frontier, AuditError> {
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        let mut offset = 0u64;
        for level in (0..MAX_LEVELS).rev() {
            let bit = 1u64 << level;
            if size & bit != 0 {
                nodes.push(src.subtree(level, offset >> level)?);
                offset |= bit;
            }
        }
        Ok(Frontier { size, nodes })
    }
}

/// A tree held in memory: its leaf hashes and every complete subtree above them (about twice the
/// leaves in all), so that each [`Subtrees`] lookup is O(1). For tests, the offline verifier of
/// small exports, and proofs over them.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    leaves: Vec<Hash>,
    /// `upper[l - 1]` holds the complete subtrees of level `l`, left to right.
    upper: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
        let mut level = 0usize;
        loop {
            let lower = if level == 0 {
                &self.leaves
            } else {
                match self.upper.get(level - 1) {
                    Some(lower) => lower,
                    None => break,
                }
            };
            let n = lower.len();
            if n == 0 || !n.is_multiple_of(2) {
                break;
            }
            let (Some(left), Some(right)) = (lower.get(n - 2), lower.get(n - 1)) else {
                break;
            };
            let parent = node_hash(left, right);
            if self.upper.len() <= level {
                self.upper.push(Vec::new());
            }
            if let Some(above) = self.upper.get_mut(level) {
                above.push(parent);
            }
            level += 1;
        }
    }

    /// The number of leaves.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The leaf hashes, in order.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }
}

impl Subtrees for MemoryTree {
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, AuditError> {
        let row = if level == 0 {
            Some(&self.leaves)
        } else {
            usize::try_from(level - 1)
                .ok()
                .and_then(|l| self.upper.get(l))
        };
        let found = row.and_then(|row| row.get(usize::try_from(index).ok()?));
        found.copied().ok_or_else(|| AuditError::OutOfRange {
            what: "subtree end",
            value: index
                .checked_add(1)
                .and_then(|i| i.checked_mul(1u64.checked_shl(level)?))
                .unwrap_or(u64::MAX),
            size: self.leaves.len() as u64,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code: panics are test failures
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex {s}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h(s: &str) -> Hash {
        unhex(s).try_into().unwrap()
    }

    // The reference inputs and heads of the Certificate Transparency test vectors (RFC 6962;
    // the same values are in transparency-dev/merkle, proof/verify_test.go).
    const CT_ENTRIES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const CT_EMPTY_ROOT: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const CT_EMPTY_LEAF: &str = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";
    /// `CT_ROOTS[n - 1]` is the head of the tree over the first `n` entries.
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// (index, size, proof): inclusion proofs of the reference vectors.
    const CT_INCLUSION: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    /// (old size, new size, proof): consistency proofs of the reference vectors.
    const CT_CONSISTENCY: [(u64, u64, &[&str]); 4] = [
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn ct_tree() -> MemoryTree {
        let mut tree = MemoryTree::new();
        for entry in CT_ENTRIES {
            tree.push(leaf_hash(&unhex(entry)));
        }
        tree
    }

    fn tree_of(n: u64) -> MemoryTree {
        let mut tree = MemoryTree::new();
        for i in 0..n {
            tree.push(leaf_hash(format!("entry {i}").as_bytes()));
        }
        tree
    }

    // ── Reference definitions, straight from RFC 9162 §2.1, over a slice of leaf hashes ──

    fn k_of(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn ref_mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = k_of(n);
                node_hash(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
            }
        }
    }

    fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = k_of(n);
        if m < k {
            let mut p = ref_path(m, &d[..k]);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &d[k..]);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    fn ref_subproof(m: usize, d: &[Hash], whole: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if whole { Vec::new() } else { vec![ref_mth(d)] };
        }
        let k = k_of(n);
        if m <= k {
            let mut p = ref_subproof(m, &d[..k], whole);
            p.push(ref_mth(&d[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &d[k..], false);
            p.push(ref_mth(&d[..k]));
            p
        }
    }

    /// §2.1.3.2, step by step: the oracle for corruptions the proof format cannot detect (a
    /// size or index whose path has the same shape).
    fn rfc_verify_inclusion(
        leaf: &Hash,
        index: u64,
        size: u64,
        proof: &[Hash],
        root: &Hash,
    ) -> bool {
        if index >= size {
            return false;
        }
        let (mut fnn, mut sn, mut r) = (index, size - 1, *leaf);
        for p in proof {
            if sn == 0 {
                return false;
            }
            if fnn & 1 == 1 || fnn == sn {
                r = node_hash(p, &r);
                if fnn & 1 == 0 {
                    while fnn & 1 == 0 && fnn != 0 {
                        fnn >>= 1;
                        sn >>= 1;
                    }
                }
            } else {
                r = node_hash(&r, p);
            }
            fnn >>= 1;
            sn >>= 1;
        }
        sn == 0 && r == *root
    }

    /// §2.1.4.2, step by step, with the trivial cases of the API.
    fn rfc_verify_consistency(
        first: u64,
        second: u64,
        fh: &Hash,
        sh: &Hash,
        proof: &[Hash],
    ) -> bool {
        if first > second {
            return false;
        }
        if first == second {
            return proof.is_empty() && fh == sh;
        }
        if first == 0 {
            return proof.is_empty();
        }
        if proof.is_empty() {
            return false;
        }
        let mut path = proof.to_vec();
        if first.is_power_of_two() {
            path.insert(0, *fh);
        }
        let (mut fnn, mut sn) = (first - 1, second - 1);
        while fnn & 1 == 1 {
            fnn >>= 1;
            sn >>= 1;
        }
        let (mut fr, mut sr) = (path[0], path[0]);
        for c in &path[1..] {
            if sn == 0 {
                return false;
            }
            if fnn & 1 == 1 || fnn == sn {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
                if fnn & 1 == 0 {
                    while fnn & 1 == 0 && fnn != 0 {
                        fnn >>= 1;
                        sn >>= 1;
                    }
                }
            } else {
                sr = node_hash(&sr, c);
            }
            fnn >>= 1;
            sn >>= 1;
        }
        fr == *fh && sr == *sh && sn == 0
    }

    fn flip(proof: &[Hash], i: usize) -> Vec<Hash> {
        let mut p = proof.to_vec();
        p[i][0] ^= 0x10;
        p
    }

    // ── Known answers ──

    #[test]
    fn hashes_match_the_reference_vectors() {
        assert_eq!(empty_root(), h(CT_EMPTY_ROOT));
        assert_eq!(leaf_hash(b""), h(CT_EMPTY_LEAF));
        let tree = ct_tree();
        assert_eq!(root(&tree, 0).unwrap(), h(CT_EMPTY_ROOT));
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), h(CT_EMPTY_ROOT));
        for (n, want) in (1u64..).zip(CT_ROOTS) {
            assert_eq!(root(&tree, n).unwrap(), h(want), "size {n}");
            assert_eq!(ref_mth(&tree.leaves()[..n as usize]), h(want), "size {n}");
            frontier.push(tree.leaves()[n as usize - 1]);
            assert_eq!(frontier.root(), h(want), "frontier of size {n}");
        }
    }

    #[test]
    fn proofs_match_the_reference_vectors() {
        let tree = ct_tree();
        for (index, size, want) in CT_INCLUSION {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(
                inclusion_proof(&tree, index, size).unwrap(),
                want,
                "{index} in {size}"
            );
            let root = h(CT_ROOTS[size as usize - 1]);
            verify_inclusion(&tree.leaves()[index as usize], index, size, &want, &root).unwrap();
        }
        for (old, new, want) in CT_CONSISTENCY {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(
                consistency_proof(&tree, old, new).unwrap(),
                want,
                "{old} to {new}"
            );
            let (r1, r2) = (h(CT_ROOTS[old as usize - 1]), h(CT_ROOTS[new as usize - 1]));
            verify_consistency(old, new, &r1, &r2, &want).unwrap();
        }
    }

    // ── Every small tree ──

    #[test]
    fn every_inclusion_proof_up_to_64_verifies_and_every_corruption_fails() {
        let tree = tree_of(64);
        let some = leaf_hash(b"not in the tree");
        for size in 1..=64u64 {
            let leaves = &tree.leaves()[..size as usize];
            let root = root(&tree, size).unwrap();
            assert_eq!(root, ref_mth(leaves));
            for index in 0..size {
                let leaf = &leaves[index as usize];
                let proof = inclusion_proof(&tree, index, size).unwrap();
                assert_eq!(proof, ref_path(index as usize, leaves), "{index} in {size}");
                verify_inclusion(leaf, index, size, &proof, &root).unwrap();
                assert!(rfc_verify_inclusion(leaf, index, size, &proof, &root));

                let fails = |leaf: &Hash, i: u64, s: u64, p: &[Hash], r: &Hash| {
                    verify_inclusion(leaf, i, s, p, r).is_err()
                };
                for i in 0..proof.len() {
                    assert!(fails(leaf, index, size, &flip(&proof, i), &root));
                }
                assert!(fails(&some, index, size, &proof, &root));
                assert!(fails(leaf, index, size, &proof, &some));
                assert!(fails(leaf, index, size, &proof, &empty_root()));
                if let Some((_, short)) = proof.split_last() {
                    assert!(fails(leaf, index, size, short, &root));
                }
                let mut long = proof.clone();
                long.push(root);
                assert!(fails(leaf, index, size, &long, &root));
                let mut long = vec![some];
                long.extend_from_slice(&proof);
                assert!(fails(leaf, index, size, &long, &root));
                // A wrong index or size fails unless its path has exactly the same shape (then
                // the hashing is the same, and RFC 9162's own algorithm accepts it too: the
                // size is bound by the signed head, not by the proof).
                for i in [index.wrapping_sub(1), index + 1, index ^ 2, index ^ 1] {
                    let ok = verify_inclusion(leaf, i, size, &proof, &root).is_ok();
                    assert_eq!(ok, rfc_verify_inclusion(leaf, i, size, &proof, &root));
                    assert!(!ok || i == index, "index {i} for {index} in {size}");
                }
                for s in [size - 1, size + 1, size * 2, size / 2, u64::MAX] {
                    let ok = verify_inclusion(leaf, index, s, &proof, &root).is_ok();
                    assert_eq!(
                        ok,
                        rfc_verify_inclusion(leaf, index, s, &proof, &root),
                        "{index} {size}->{s}"
                    );
                }
                assert!(fails(leaf, index, size * 2, &proof, &root) || size == 1);
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_64_verifies_and_every_corruption_fails() {
        let tree = tree_of(64);
        let some = leaf_hash(b"some other head");
        let roots: Vec<Hash> = (0..=64).map(|n| root(&tree, n).unwrap()).collect();
        for new in 1..=64u64 {
            let leaves = &tree.leaves()[..new as usize];
            let r2 = roots[new as usize];
            for old in 0..=new {
                let r1 = roots[old as usize];
                let proof = consistency_proof(&tree, old, new).unwrap();
                if old == 0 || old == new {
                    assert!(proof.is_empty());
                } else {
                    assert_eq!(
                        proof,
                        ref_subproof(old as usize, leaves, true),
                        "{old} to {new}"
                    );
                }
                verify_consistency(old, new, &r1, &r2, &proof).unwrap();
                assert!(rfc_verify_consistency(old, new, &r1, &r2, &proof));
                if old == 0 {
                    continue;
                }
                let fails = |o: u64, n: u64, a: &Hash, b: &Hash, p: &[Hash]| {
                    verify_consistency(o, n, a, b, p).is_err()
                };
                for i in 0..proof.len() {
                    assert!(
                        fails(old, new, &r1, &r2, &flip(&proof, i)),
                        "{old} to {new} flip {i}"
                    );
                }
                assert!(fails(old, new, &some, &r2, &proof));
                assert!(fails(old, new, &r1, &some, &proof));
                if old != new {
                    assert!(fails(old, new, &r2, &r1, &proof));
                    assert!(fails(old, new, &r1, &r2, &[]));
                }
                if let Some((_, short)) = proof.split_last() {
                    assert!(fails(old, new, &r1, &r2, short));
                }
                for extra in [r1, r2, some] {
                    let mut long = proof.clone();
                    long.push(extra);
                    assert!(fails(old, new, &r1, &r2, &long));
                    let mut long = vec![extra];
                    long.extend_from_slice(&proof);
                    assert!(fails(old, new, &r1, &r2, &long));
                }
                for (o, n) in [
                    (old - 1, new),
                    (old + 1, new),
                    (old ^ 2, new),
                    (old, new - 1),
                    (old, new + 1),
                    (old, new * 2),
                    (old, new / 2),
                ] {
                    let ok = verify_consistency(o, n, &r1, &r2, &proof).is_ok();
                    assert_eq!(
                        ok,
                        rfc_verify_consistency(o, n, &r1, &r2, &proof),
                        "{old}->{new} as {o}->{n}"
                    );
                }
                if old < new {
                    for o in [old - 1, old + 1] {
                        if o != 0 && o < new {
                            assert!(
                                fails(o, new, &r1, &r2, &proof),
                                "{old}->{new} as {o}->{new}"
                            );
                        }
                    }
                }
            }
        }
    }

    // ── The frontier ──

    #[test]
    fn frontier_matches_the_tree_and_reports_every_completed_subtree() {
        let tree = tree_of(300);
        let mut frontier = Frontier::new();
        let mut seen = 0usize;
        assert_eq!(frontier.root(), root(&tree, 0).unwrap());
        for (i, leaf) in tree.leaves().iter().enumerate() {
            let done = frontier.push(*leaf);
            let size = i as u64 + 1;
            assert_eq!(frontier.size(), size);
            assert_eq!(frontier.root(), root(&tree, size).unwrap(), "size {size}");
            assert_eq!(frontier.root(), ref_mth(&tree.leaves()[..=i]));
            // Leaf i completes one subtree per trailing one of i, plus the leaf itself.
            assert_eq!(done.len() as u32, (i as u64).trailing_ones() + 1);
            for (k, (level, index, hash)) in done.iter().enumerate() {
                assert_eq!(*level as usize, k);
                assert_eq!(*index, (i as u64) >> level);
                assert_eq!(*hash, tree.subtree(*level, *index).unwrap());
                // The subtree ends exactly at this leaf.
                assert_eq!((index + 1) << level, size);
            }
            seen += done.len();
            let rebuilt = Frontier::from_subtrees(&tree, size).unwrap();
            assert_eq!(rebuilt, frontier, "size {size}");
        }
        // Every complete subtree of the tree was reported exactly once.
        let total: u64 = (0..9).map(|l| 300u64 >> l).sum();
        assert_eq!(seen as u64, total);

        // A rebuilt frontier keeps growing like the original.
        let mut rebuilt = Frontier::from_subtrees(&tree, 137).unwrap();
        let mut original = Frontier::new();
        for leaf in &tree.leaves()[..137] {
            original.push(*leaf);
        }
        for leaf in &tree.leaves()[137..] {
            assert_eq!(rebuilt.push(*leaf), original.push(*leaf));
            assert_eq!(rebuilt.root(), original.root());
        }
        assert_eq!(Frontier::from_subtrees(&tree, 0).unwrap(), Frontier::new());
        assert!(Frontier::from_subtrees(&tree, 301).is_err());
    }

    // ── Hostile input ──

    /// A tree of `u64::MAX` identical leaves, to reach the largest sizes without storing them.
    struct Uniform(Vec<Hash>);

    impl Uniform {
        fn new() -> Uniform {
            let mut levels = vec![leaf_hash(b"same")];
            for l in 0..64 {
                let below = levels[l];
                levels.push(node_hash(&below, &below));
            }
            Uniform(levels)
        }
    }

    impl Subtrees for Uniform {
        fn subtree(&self, level: u32, index: u64) -> Result<Hash, AuditError> {
            let end = u128::from(index + 1) << level;
            assert!(end <= u128::from(u64::MAX), "asked for ({level}, {index})");
            Ok(self.0[level as usize])
        }
    }

    #[test]
    fn the_largest_trees_work() {
        let src = Uniform::new();
        let leaf = src.0[0];
        for size in [
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 63) + 1,
            (1 << 63) - 1,
        ] {
            let r = root(&src, size).unwrap();
            let frontier = Frontier::from_subtrees(&src, size).unwrap();
            assert_eq!(frontier.root(), r);
            for index in [0, 1, size / 2, size - 2, size - 1] {
                let proof = inclusion_proof(&src, index, size).unwrap();
                assert!(proof.len() <= 64);
                verify_inclusion(&leaf, index, size, &proof, &r).unwrap();
                assert!(rfc_verify_inclusion(&leaf, index, size, &proof, &r));
                for i in 0..proof.len() {
                    assert!(verify_inclusion(&leaf, index, size, &flip(&proof, i), &r).is_err());
                }
            }
            for old in [1, 2, 3, size / 2, size - 1, (1 << 62) + 5] {
                let r1 = root(&src, old).unwrap();
                let proof = consistency_proof(&src, old, size).unwrap();
                verify_consistency(old, size, &r1, &r, &proof).unwrap();
                assert!(rfc_verify_consistency(old, size, &r1, &r, &proof));
                for i in 0..proof.len() {
                    assert!(verify_consistency(old, size, &r1, &r, &flip(&proof, i)).is_err());
                }
            }
        }
        // A full frontier refuses more leaves instead of overflowing.
        let mut full = Frontier::from_subtrees(&src, u64::MAX).unwrap();
        let before = full.clone();
        assert!(full.push(leaf).is_empty());
        assert_eq!(full, before);
        // One leaf short of full: the last push completes all 64 levels.
        let mut nearly = Frontier::from_subtrees(&src, u64::MAX - 1).unwrap();
        assert_eq!(nearly.push(leaf).len(), 1);
    }

    #[test]
    fn hostile_proofs_are_errors_not_panics() {
        let tree = tree_of(10);
        let r = root(&tree, 10).unwrap();
        let leaf = tree.leaves()[3];
        let junk: Vec<Hash> = (0..70u8).map(|i| leaf_hash(&[i])).collect();
        let sizes = [0, 1, 2, 3, 10, 1 << 32, 1 << 63, u64::MAX - 1, u64::MAX];
        for &size in &sizes {
            for index in [
                0,
                1,
                size / 2,
                size.wrapping_sub(1),
                size,
                size.wrapping_add(1),
                u64::MAX,
            ] {
                for n in [0, 1, 2, 31, 63, 64, 65, 70] {
                    let proof = &junk[..n];
                    let result = verify_inclusion(&leaf, index, size, proof, &r);
                    assert!(result.is_err());
                    assert!(!rfc_verify_inclusion(&leaf, index, size, proof, &r));
                    if index >= size {
                        assert!(matches!(result, Err(AuditError::OutOfRange { .. })));
                    } else {
                        assert!(matches!(result, Err(AuditError::ProofFailed(_))));
                    }
                }
            }
            for &new in &sizes {
                for n in [0, 1, 2, 64, 65, 70] {
                    let proof = &junk[..n];
                    let result = verify_consistency(size, new, &r, &leaf, proof);
                    assert_eq!(
                        result.is_ok(),
                        rfc_verify_consistency(size, new, &r, &leaf, proof)
                    );
                    // Only the trivial case passes: from the empty tree (the heads differ).
                    assert_eq!(
                        result.is_ok(),
                        size == 0 && new != 0 && n == 0,
                        "{size} -> {new} with {n}"
                    );
                    if size > new {
                        assert!(matches!(result, Err(AuditError::OutOfRange { .. })));
                    }
                }
            }
        }
        // Equal sizes need equal heads and an empty proof.
        verify_consistency(10, 10, &r, &r, &[]).unwrap();
        assert!(verify_consistency(10, 10, &r, &leaf, &[]).is_err());
        assert!(verify_consistency(10, 10, &r, &r, &junk[..1]).is_err());
        verify_consistency(0, 0, &r, &r, &[]).unwrap();
        assert!(verify_consistency(0, 0, &r, &leaf, &[]).is_err());
    }

    #[test]
    fn proofs_outside_the_tree_are_errors() {
        let tree = tree_of(10);
        assert!(matches!(
            inclusion_proof(&tree, 10, 10),
            Err(AuditError::OutOfRange {
                what: "index",
                value: 10,
                size: 10
            })
        ));
        assert!(inclusion_proof(&tree, 0, 0).is_err());
        assert!(inclusion_proof(&tree, u64::MAX, u64::MAX).is_err());
        // Beyond what the source holds: the source's error, not a panic.
        assert!(inclusion_proof(&tree, 3, 11).is_err());
        assert!(inclusion_proof(&tree, 3, u64::MAX).is_err());
        assert!(root(&tree, 11).is_err());
        assert!(root(&tree, u64::MAX).is_err());
        assert!(matches!(
            consistency_proof(&tree, 5, 4),
            Err(AuditError::OutOfRange {
                what: "old size",
                value: 5,
                size: 4
            })
        ));
        assert!(consistency_proof(&tree, 5, 11).is_err());
        assert!(consistency_proof(&tree, 5, u64::MAX).is_err());
        assert_eq!(consistency_proof(&tree, 0, 10).unwrap(), Vec::<Hash>::new());
        assert_eq!(
            consistency_proof(&tree, 10, 10).unwrap(),
            Vec::<Hash>::new()
        );
        assert_eq!(
            consistency_proof(&tree, 0, u64::MAX).unwrap(),
            Vec::<Hash>::new()
        );

        assert!(tree.subtree(0, 10).is_err());
        assert!(tree.subtree(3, 1).is_err());
        assert_eq!(tree.subtree(3, 0).unwrap(), ref_mth(&tree.leaves()[..8]));
        assert!(tree.subtree(64, 0).is_err());
        assert!(tree.subtree(u32::MAX, u64::MAX).is_err());
        assert!(MemoryTree::new().subtree(0, 0).is_err());
    }

    #[test]
    fn range_root_is_the_hash_of_aligned_ranges() {
        let tree = tree_of(40);
        let leaves = tree.leaves();
        for start in 0..40u64 {
            for end in start..=40u64 {
                let len = end - start;
                let aligned = len == 0 || start.is_multiple_of(1 << (63 - len.leading_zeros()));
                let got = range_root(&tree, start, end);
                if aligned {
                    assert_eq!(
                        got.unwrap(),
                        ref_mth(&leaves[start as usize..end as usize]),
                        "[{start}, {end})"
                    );
                } else {
                    assert!(got.is_err(), "[{start}, {end})");
                }
            }
        }
        assert!(range_root(&tree, 5, 4).is_err());
        assert!(range_root(&tree, 32, 48).is_err()); // aligned, but beyond the tree
        assert!(range_root(&tree, 0, u64::MAX).is_err());
    }

    #[test]
    fn memory_tree_levels_match_the_definition() {
        let tree = tree_of(100);
        assert_eq!(tree.len(), 100);
        assert!(!tree.is_empty());
        assert!(MemoryTree::new().is_empty());
        for level in 0..8u32 {
            for index in 0..(100u64 >> level) {
                let (a, b) = ((index << level) as usize, ((index + 1) << level) as usize);
                assert_eq!(
                    tree.subtree(level, index).unwrap(),
                    ref_mth(&tree.leaves()[a..b])
                );
            }
            assert!(tree.subtree(level, 100 >> level).is_err());
        }
    }
}
