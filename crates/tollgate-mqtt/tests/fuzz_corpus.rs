//! Regression test for the `decode` fuzz target: every committed input (`fuzz/seeds/decode/`,
//! `fuzz/corpus/decode/`) goes through the target's own check (`fuzz/checks/decode.rs`), on stable
//! and without libFuzzer. See docs/fuzzing.md.

#[path = "../../../fuzz/checks/decode.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn decode_fuzz_corpus_passes_the_check() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "decode", checks::check);
}
