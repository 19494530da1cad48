//! Fuzz target `admin_bodies`: the check in `fuzz/checks/admin_bodies.rs` (shared with the corpus regression
//! test), fed by libFuzzer. See docs/fuzzing.md.
#![no_main]

#[path = "../checks/admin_bodies.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
