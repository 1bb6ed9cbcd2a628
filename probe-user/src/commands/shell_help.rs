//! `busyprobe completions SHELL` and `busyprobe man`: generated from the clap definitions, so
//! they never drift from `--help`.

use std::{io::Write as _, process::ExitCode};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "busyprobe", &mut out);
    out.flush().context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the manual page (roff).
pub fn man() -> Result<ExitCode> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("rendering the manual page")?;
    std::io::stdout()
        .lock()
        .write_all(&page)
        .context("writing the manual page")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_knows_the_subcommands() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "busyprobe",
            &mut script,
        );
        let script = String::from_utf8(script).unwrap();
        for word in [
            "watch",
            "record",
            "who",
            "doctor",
            "demo",
            "--only-failed",
            "--scan",
        ] {
            assert!(script.contains(word), "{word} missing");
        }
    }

    #[test]
    fn the_man_page_describes_the_tool() {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie"), "roff: {}", &page[..40]);
        assert!(page.contains("busyprobe"));
        assert!(page.contains("Who is holding the mount"), "the about text");
    }
}
