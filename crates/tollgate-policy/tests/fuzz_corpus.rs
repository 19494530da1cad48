//! Regression test for the `policy` fuzz target: every committed input (`fuzz/seeds/policy/`,
//! `fuzz/corpus/policy/`) goes through the target's own check (`fuzz/checks/policy.rs`), on stable
//! and without libFuzzer. See docs/fuzzing.md.

#[path = "../../../fuzz/checks/policy.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn policy_fuzz_corpus_passes_the_check() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "policy", checks::check);
}
