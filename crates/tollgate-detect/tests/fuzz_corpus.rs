//! Regression test for the `detection` fuzz target: every committed input
//! (`fuzz/seeds/detection/`, `fuzz/corpus/detection/`) goes through the target's own check
//! (`fuzz/checks/detection.rs`), on stable and without libFuzzer. See docs/fuzzing.md.

#[path = "../../../fuzz/checks/detection.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn detection_fuzz_corpus_passes_the_check() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "detection", checks::check);
}
