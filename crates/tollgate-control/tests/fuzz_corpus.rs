//! Regression test for the `admin_bodies` fuzz target: every committed input (`fuzz/seeds/admin_bodies/`,
//! `fuzz/corpus/admin_bodies/`) goes through the target's own check (`fuzz/checks/admin_bodies.rs`), on stable
//! and without libFuzzer. See docs/fuzzing.md.

#[path = "../../../fuzz/checks/admin_bodies.rs"]
mod checks;
#[path = "../../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn admin_bodies_fuzz_corpus_passes_the_check() {
    replay::replay(env!("CARGO_MANIFEST_DIR"), "admin_bodies", checks::check);
}
