//! The README's quick start, run as written (with the binary under test for `tollgate`, and a
//! temporary HOME for `~`): it used to race (the policy was written before the backgrounded
//! server had created the directory) and to work only inside the repository. Steps 0 to 5 must
//! work from a shell as they stand; step 5's message must reach step 4's subscriber.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test harness code: panics are test failures

mod support;

use std::process::Command;

/// The shell block of the README's quick start, split at its numbered steps.
fn quick_start() -> Vec<(u32, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("## Quick start")
        .expect("a quick start section");
    let block = &readme[start..];
    let open = block.find("```sh\n").unwrap() + 6;
    let close = open + block[open..].find("```").unwrap();
    let mut steps: Vec<(u32, String)> = Vec::new();
    for line in block[open..close].lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some((n, _)) = rest.split_once(". ") {
                if let Ok(n) = n.parse() {
                    steps.push((n, String::new()));
                }
            }
        }
        if let Some((_, text)) = steps.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    steps
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let steps = quick_start();
    let numbers: Vec<u32> = steps.iter().map(|s| s.0).collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4, 5, 6, 7], "the quick start's steps");
    let home = support::temp_dir("readme-home");
    std::fs::create_dir_all(&home).unwrap();
    // `tollgate` on the PATH is the binary under test (a symlink, so `tollgate serve &` is the
    // server process itself, which the trap can stop).
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(support::BIN, bin.join("tollgate")).unwrap();
    let mut script = format!(
        "set -euo pipefail\ncd {home}\nexport PATH={bin}:$PATH\n\
         trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n",
        home = home.display(),
        bin = bin.display(),
    );
    for (n, text) in &steps[..5] {
        // Installing is what the test is doing already: the binary under test is `tollgate`.
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("cargo install"))
            .map(|l| format!("{l}\n"))
            .collect();
        script.push_str(&format!("echo '--- step {n}' >&2\n{text}"));
    }
    // Step 5 again until step 4's subscriber prints it (it may still be subscribing).
    let publish = &steps[5].1;
    script.push_str(&format!(
        "for i in $(seq 60); do\n{publish}\
         grep -qF 'devices/sensor-1/telemetry {{\"temp\": 21.5}}' sub.out && exit 0\n\
         sleep 0.5\ndone\nexit 1\n"
    ));
    // The subscriber's output goes to a file the loop can read.
    let script = script.replace(
        "-t 'devices/+/telemetry' -v &",
        "-t 'devices/+/telemetry' -v > sub.out &",
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("HOME", &home)
        .env_remove("TOLLGATE_DATA")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the quick start failed:\n{stderr}\n--- script\n{script}"
    );
    assert!(home.join("tollgate-data/ca/root.crt").exists());
    let _ = std::fs::remove_dir_all(&home);
}
