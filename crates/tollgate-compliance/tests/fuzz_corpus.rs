//! Regression test for the `compliance` fuzz target: every committed input
//! (`fuzz/seeds/compliance/`, `fuzz/corpus/compliance/`) goes through the target's own check
//! (`fuzz/checks/compliance.rs`), on stable and without libFuzzer. See docs/fuzzing.md.

#[path = "../../../fuzz/checks/compliance.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn compliance_fuzz_corpus_passes_the_check() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "compliance", checks::check);
}
