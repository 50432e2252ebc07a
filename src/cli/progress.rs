//! Progress bars and status lines on stderr, silenced by `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress output of the commands. Bars draw only on a terminal, and
/// status lines go to stderr unless quiet.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress { quiet }
    }

    /// Creates a bar of `len` steps labelled `message`, hidden when quiet.
    pub fn bar(&self, len: usize, message: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
        )
        .expect("the progress template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message.to_string());
        bar
    }

    /// Prints a status line to stderr unless quiet.
    pub fn status(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// Prints a warning to stderr, also when quiet.
    pub fn warn(&self, line: &str) {
        eprintln!("warning: {line}");
    }
}
