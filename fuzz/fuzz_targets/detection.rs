//! Fuzz target `detection`: the check in `fuzz/checks/detection.rs` (shared with the corpus
//! regression test), fed by libFuzzer. See docs/fuzzing.md.
#![no_main]

#[path = "../checks/detection.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
