//! Regression test for the `csr` fuzz target: every committed input (`fuzz/seeds/csr/`,
//! `fuzz/corpus/csr/`) goes through the target's own check (`fuzz/checks/csr.rs`), on stable
//! and without libFuzzer. See docs/fuzzing.md.

#[path = "../../../fuzz/checks/csr.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn csr_fuzz_corpus_passes_the_check() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "csr", checks::check);
}
