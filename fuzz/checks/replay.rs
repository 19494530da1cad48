//! Replays a fuzz target's committed inputs through its check, without libFuzzer: the
//! hand-written seeds (`fuzz/seeds/<target>/`) and the minimised corpus
//! (`fuzz/corpus/<target>/`). Included with `#[path]` by each `tests/fuzz_corpus.rs`; see
//! docs/fuzzing.md.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Run `check` on every file of the target's seeds and corpus (`manifest_dir` is the including
/// crate's `CARGO_MANIFEST_DIR`, two levels below the repository root). Fails naming every
/// file whose check panicked, and fails when either directory is missing or empty.
pub fn replay(manifest_dir: &str, target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(manifest_dir).join("../../fuzz");
    let mut failed = Vec::new();
    for kind in ["seeds", "corpus"] {
        let files = files(&fuzz.join(kind).join(target));
        assert!(!files.is_empty(), "no {kind} for fuzz target `{target}`");
        for file in files {
            let data = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target `{target}`: {} input(s) fail the check (the panic of each is printed \
         above):\n  {}",
        failed.len(),
        failed.join("\n  ")
    );
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}
