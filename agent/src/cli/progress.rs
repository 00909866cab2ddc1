//! A progress bar on standard error for long operations (`weir outbox export`, `purge`,
//! `verify`), drawn only when standard error is a terminal: piped or under systemd the
//! commands stay quiet.
//!
//! Hand-written rather than `indicatif`: one line redrawn with `\r` is all we need, and the
//! binary shipped to the Pi stays free of `console`, `unicode-width` and `portable-atomic`.

use std::io::{IsTerminal, Write};

/// Width of the bar itself, in characters.
const WIDTH: usize = 30;

/// One bar; redraws only when the shown percentage changes, so a million rows do not mean a
/// million writes to the terminal.
pub struct Progress {
    label: &'static str,
    total: u64,
    shown: Option<u64>,
    enabled: bool,
}

impl Progress {
    /// A bar counting to `total`, shown when standard error is a terminal.
    pub fn new(label: &'static str, total: u64) -> Self {
        Self::with_terminal(label, total, std::io::stderr().is_terminal())
    }

    /// A bar drawn only when `enabled` (tests pass `false` or `true` explicitly).
    pub fn with_terminal(label: &'static str, total: u64, enabled: bool) -> Self {
        Self {
            label,
            total,
            shown: None,
            enabled,
        }
    }

    /// `done` of `total` are finished.
    pub fn set(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let pct = percent(done, self.total);
        if self.shown == Some(pct) {
            return;
        }
        self.shown = Some(pct);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}", render(self.label, done, self.total));
        let _ = err.flush();
    }

    /// Erases the bar, leaving the line for what comes next.
    pub fn finish(&mut self) {
        if self.enabled && self.shown.is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
        self.shown = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn percent(done: u64, total: u64) -> u64 {
    (done.min(total) * 100).checked_div(total).unwrap_or(100)
}

/// `label [#######-----------------------]  23% 230/1000`.
pub fn render(label: &str, done: u64, total: u64) -> String {
    let pct = percent(done, total);
    let filled = usize::try_from(pct).unwrap_or(100) * WIDTH / 100;
    format!(
        "{label} [{}{}] {pct:>3}% {done}/{total}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_in_proportion_and_caps_at_the_total() {
        assert_eq!(
            render("export", 250, 1000),
            "export [#######-----------------------]  25% 250/1000"
        );
        assert_eq!(
            render("x", 5, 4),
            "x [##############################] 100% 5/4"
        );
        assert_eq!(
            render("x", 0, 0),
            "x [##############################] 100% 0/0"
        );
    }

    #[test]
    fn a_bar_that_is_not_on_a_terminal_never_draws() {
        let mut p = Progress::with_terminal("x", 10, false);
        p.set(5);
        assert_eq!(p.shown, None);
        let mut p = Progress::with_terminal("x", 10, true);
        p.set(5);
        assert_eq!(p.shown, Some(50));
        p.finish();
        assert_eq!(p.shown, None);
    }
}
