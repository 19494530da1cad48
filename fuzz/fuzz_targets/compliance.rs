//! Fuzz target `compliance`: the check in `fuzz/checks/compliance.rs` (shared with the corpus
//! regression test), fed by libFuzzer. See docs/fuzzing.md.
#![no_main]

#[path = "../checks/compliance.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
