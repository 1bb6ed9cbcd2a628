//! `watch --connect` and `top --connect`: the stream of a running agent, read from its socket
//! instead of loaded probes (no CAP_BPF needed, only the right to connect).

use std::{
    io::{self, BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::ExitCode,
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{
    recording::parse_line,
    sink::{json::wire::Line, text::TextLines},
};

/// The agent's stream on `path`, or an error that says what to do.
pub fn connect(path: &Path) -> Result<BufReader<UnixStream>> {
    let stream = UnixStream::connect(path).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => {
                ": no such socket; is `busyprobe agent` running, and serving this --socket?"
            }
            io::ErrorKind::PermissionDenied => {
                ": the socket is root's unless the agent was given --socket-group (and you \
                 are in that group)"
            }
            io::ErrorKind::ConnectionRefused => ": nothing accepts on it; its agent is gone",
            _ => "",
        };
        anyhow!(e).context(format!(
            "connecting to the agent at {}{why}",
            path.display()
        ))
    })?;
    Ok(BufReader::new(stream))
}

/// How a client's stream went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ending {
    /// The agent's last counters arrived (it stopped cleanly).
    pub agent_stopped: bool,
    /// Lines that were not JSON Lines of schema 1, as `LINE: why`.
    pub malformed: Vec<String>,
}

/// Hands each well-formed line of `input` to `each` (with its bytes, without the newline)
/// until the input ends or `each` fails.
pub fn read_lines(
    input: impl BufRead,
    mut each: impl FnMut(&[u8], Line) -> io::Result<()>,
) -> io::Result<Ending> {
    let mut ending = Ending::default();
    for (number, bytes) in input.split(b'\n').enumerate() {
        let bytes = bytes?;
        match parse_line(&bytes) {
            Ok(line) => {
                ending.agent_stopped |= matches!(&line, Line::Stats(s) if s.last);
                each(&bytes, line)?;
            }
            Err(why) => {
                tracing::warn!("line {} of the agent's stream: {why}", number + 1);
                ending.malformed.push(format!("{}: {why}", number + 1));
            }
        }
    }
    Ok(ending)
}

/// `watch --connect PATH`: the agent's lines on stdout, as `watch` prints them (JSON Lines
/// byte for byte with `--json`), failures only with `only_failed`.
pub fn watch(path: &Path, json: bool, only_failed: bool) -> Result<ExitCode> {
    let input = connect(path)?;
    let stdout = io::stdout().lock();
    let mut text = TextLines::new(stdout);
    let mut raw = io::stdout().lock();
    let shown = read_lines(input, |bytes, line| {
        if only_failed && matches!(&line, Line::Umount(u) if !u.failed()) {
            return Ok(());
        }
        if json {
            raw.write_all(bytes)?;
            raw.write_all(b"\n")?;
            raw.flush()
        } else {
            text.line(&line)
        }
    });
    match shown {
        Ok(Ending {
            agent_stopped: true,
            ..
        }) => {
            tracing::info!("the agent stopped");
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => bail!(
            "the agent's stream at {} ended before its last counters: the agent died or was \
             killed",
            path.display()
        ),
        // The reader went away (`watch --connect | head -1`): that is how pipes end.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e).context("reading the agent's stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::sample_attempt,
        sink::json::{header_line, wire::UmountLine},
    };

    #[test]
    fn reads_each_line_in_order_says_which_are_malformed_and_whether_the_agent_stopped() {
        let umount = serde_json::to_string(&UmountLine::new(&sample_attempt(
            b"/m",
            Some(b"/m"),
            -16,
            0,
        )))
        .unwrap();
        let header = header_line("h", "6.1", "fentry", std::time::UNIX_EPOCH);
        let last = r#"{"v":1,"type":"stats","ts":"2026-11-23T19:31:47.863680404Z","events":3,"drops":{},"decode_errors":0,"final":true}"#;
        let input = format!("{header}\n{{oops\n{umount}\n{last}\n");
        let mut seen = Vec::new();
        let ending = read_lines(input.as_bytes(), |bytes, line| {
            seen.push((String::from_utf8(bytes.to_vec()).unwrap(), line));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].0, header);
        assert!(matches!(seen[0].1, Line::Header(_)));
        assert_eq!(seen[1].0, umount);
        assert!(ending.agent_stopped);
        assert_eq!(ending.malformed.len(), 1);
        assert!(
            ending.malformed[0].starts_with("2: not JSON"),
            "{:?}",
            ending.malformed
        );

        let cut = format!("{header}\n{umount}\n");
        let ending = read_lines(cut.as_bytes(), |_, _| Ok(())).unwrap();
        assert_eq!(ending, Ending::default(), "no final counters: not stopped");
    }
}
