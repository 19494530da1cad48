//! Progress for long CLI work (advisory and SBOM imports, audit export and verification): a
//! bar when the size is known, a spinner when it is not, on stderr, and only when stderr is a
//! terminal, so logs, pipes and tests see nothing of it. It reports; it never decides.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps, labelled `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{bar:32}] {human_pos}/{human_len} ({per_sec}, {eta} left)",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb
}

/// A spinner counting steps of unknown number, labelled `what`.
pub fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {human_pos} ({elapsed})") {
        pb.set_style(style);
    }
    pb.set_message(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

#[cfg(test)]
mod tests {
    #[test]
    fn nothing_is_drawn_when_stderr_is_not_a_terminal() {
        // Under the test harness stderr is captured, as it is under a pipe or a journal.
        if console::Term::stderr().is_term() {
            return;
        }
        assert!(super::bar(10, "x").is_hidden());
        assert!(super::spinner("x").is_hidden());
    }
}
