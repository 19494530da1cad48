//! Fuzz target `decode`: the check in `fuzz/checks/decode.rs` (shared with the corpus regression
//! test), fed by libFuzzer. See docs/fuzzing.md.
#![no_main]

#[path = "../checks/decode.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
