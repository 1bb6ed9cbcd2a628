//! What the screen does besides drawing, on the user's word: copy text to the terminal's
//! clipboard (OSC 52: works over ssh and in tmux with `set-clipboard on`, no X needed), write
//! a file. The [`App`](super::app::App) decides what (a pure verb leaves an [`Action`]); the
//! loop in `mod.rs` does it here and shows what happened.

use std::{io::Write, path::PathBuf};

use base64::{engine::general_purpose::STANDARD, Engine as _};

/// Something to do outside the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Copy `text` to the terminal's clipboard; `what` names it for the status bar.
    Copy {
        /// What is copied, in words (`the who command`).
        what: String,
        /// The text.
        text: String,
    },
    /// Write `text` to a new file at `path`.
    Write {
        /// Where.
        path: PathBuf,
        /// What.
        text: String,
    },
}

/// The OSC 52 sequence that sets the clipboard to `text`.
pub fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", STANDARD.encode(text))
}

/// Does `action` (`terminal` is where OSC 52 goes); returns what happened, for the status
/// bar.
pub fn perform(action: Action, terminal: &mut impl Write) -> String {
    match action {
        Action::Copy { what, text } => {
            let sent = terminal
                .write_all(osc52(&text).as_bytes())
                .and_then(|()| terminal.flush());
            match sent {
                Ok(()) => format!("copied {what} to the clipboard (OSC 52)"),
                Err(e) => format!("could not copy {what}: {e}"),
            }
        }
        Action::Write { path, text } => {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()));
            match written {
                Ok(()) => format!("wrote {}", path.display()),
                Err(e) => format!("could not write {}: {e}", path.display()),
            }
        }
    }
}

/// `text` as one word for a POSIX shell: single-quoted, each `'` written `'\''`.
pub fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_writes_osc_52_and_writing_makes_a_new_file() {
        let mut terminal = Vec::new();
        let said = perform(
            Action::Copy {
                what: "the who command".into(),
                text: "busyprobe who '/m'".into(),
            },
            &mut terminal,
        );
        assert_eq!(said, "copied the who command to the clipboard (OSC 52)");
        assert_eq!(terminal, b"\x1b]52;c;YnVzeXByb2JlIHdobyAnL20n\x07");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.md");
        let write = || Action::Write {
            path: path.clone(),
            text: "# r\n".into(),
        };
        assert_eq!(
            perform(write(), &mut terminal),
            format!("wrote {}", path.display())
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# r\n");
        assert!(
            perform(write(), &mut terminal).starts_with("could not write"),
            "never over a file"
        );
        assert_eq!(shell_word("/m/it's"), r"'/m/it'\''s'");
    }
}
