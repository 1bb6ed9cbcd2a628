//! One sink that forwards every event to several: the agent's recording and its metrics
//! (and live clients). The recording is set apart ([`FanOut::with_recording`]): a line it
//! cannot write is counted there and never stops the others, which are told when it starts
//! and stops losing lines (`recording-failing`, `recording-lines-lost` warnings).

use std::{
    io,
    time::{Instant, SystemTime},
};

use crate::{
    event::{UmountAttempt, Warning},
    sink::{
        record::{Losing, Recording},
        Sink,
    },
    stats::Stats,
};

/// Forwards each event to the recording first, then to every other sink in order. Another
/// sink's error ends the stream (as it would alone): the sinks after it do not get that
/// event.
pub struct FanOut {
    recording: Option<Recording>,
    sinks: Vec<Box<dyn Sink>>,
}

impl FanOut {
    /// A sink over `sinks`, written in this order.
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Self {
            recording: None,
            sinks,
        }
    }

    /// Writes every event to `recording` before the other sinks.
    pub fn with_recording(mut self, recording: Recording) -> Self {
        self.recording = Some(recording);
        self
    }

    /// Hands an event to the recording, tells the others when it started or stopped losing
    /// lines with it, then hands it to them.
    fn each(&mut self, mut write: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        if let Some(recording) = &mut self.recording {
            let before = recording.losing().cloned();
            write(recording)?;
            if let Some(change) = change(before.as_ref(), recording.losing()) {
                for sink in &mut self.sinks {
                    sink.warning(&change)?;
                }
            }
        }
        self.sinks.iter_mut().try_for_each(|s| write(s.as_mut()))
    }
}

/// What the other sinks are told when the recording starts or stops losing lines.
fn change(before: Option<&Losing>, now: Option<&Losing>) -> Option<Warning> {
    match (before, now) {
        (None, Some(started)) => Some(Warning::RecordingFailing {
            ts: started.since,
            cause: started.cause.clone(),
        }),
        (Some(ended), None) => Some(ended.lines_lost(SystemTime::now())),
        _ => None,
    }
}

impl Sink for FanOut {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.each(|s| s.umount(attempt))
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.each(|s| s.warning(warning))
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.each(|s| s.stats(ts, stats, last))
    }

    fn wake_at(&self) -> Option<Instant> {
        let recording = self.recording.iter().map(|r| r.wake_at());
        let others = self.sinks.iter().map(|s| s.wake_at());
        recording.chain(others).flatten().min()
    }

    fn tick(&mut self, now: Instant) -> io::Result<()> {
        self.each(|s| match s.wake_at() {
            Some(at) if at <= now => s.tick(now),
            _ => Ok(()),
        })
    }

    /// The recording writes the lines it kept back first: the others are told of a change
    /// in what it loses before their own flush.
    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush())
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;
    use crate::event::sample_attempt;

    /// Notes what it receives under its name; `fail` makes its `umount` fail.
    struct Noting {
        name: &'static str,
        log: Rc<RefCell<Vec<String>>>,
        fail: bool,
    }

    impl Sink for Noting {
        fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
            self.log
                .borrow_mut()
                .push(format!("{} umount {}", self.name, attempt.call.ret));
            if self.fail {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            Ok(())
        }

        fn warning(&mut self, warning: &Warning) -> io::Result<()> {
            let what = match warning {
                Warning::AliveAfterUnmount { .. } => "alive".to_string(),
                Warning::RecordingFailing { cause, .. } => format!("failing {cause}"),
                Warning::RecordingLinesLost { lines, cause, .. } => {
                    format!("lost {lines} {cause}")
                }
            };
            self.log
                .borrow_mut()
                .push(format!("{} warning {what}", self.name));
            Ok(())
        }

        fn stats(&mut self, _: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
            self.log
                .borrow_mut()
                .push(format!("{} stats {} {last}", self.name, stats.events));
            Ok(())
        }
    }

    fn noting(name: &'static str, log: &Rc<RefCell<Vec<String>>>, fail: bool) -> Box<Noting> {
        Box::new(Noting {
            name,
            log: log.clone(),
            fail,
        })
    }

    #[test]
    fn every_sink_gets_every_event_in_order_and_an_error_stops_it() {
        let log = Rc::default();
        let mut fan = FanOut::new(vec![noting("a", &log, false), noting("b", &log, false)]);
        fan.umount(&sample_attempt(b"/mnt", Some(b"/mnt"), -16, 0))
            .unwrap();
        let stats = Stats {
            events: 2,
            ..Default::default()
        };
        fan.stats(SystemTime::UNIX_EPOCH, &stats, true).unwrap();
        assert_eq!(
            *log.borrow(),
            [
                "a umount -16",
                "b umount -16",
                "a stats 2 true",
                "b stats 2 true"
            ]
        );

        let log = Rc::default();
        let mut fan = FanOut::new(vec![noting("a", &log, true), noting("b", &log, false)]);
        let gone = fan.umount(&sample_attempt(b"/mnt", None, 0, 0));
        assert_eq!(gone.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(*log.borrow(), ["a umount 0"], "b never saw it");
    }

    #[test]
    fn the_others_are_told_when_the_recording_starts_and_stops_losing_lines() {
        let losing = |lines| Losing {
            lines,
            cause: "ENOSPC".into(),
            since: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(change(None, None), None);
        assert_eq!(
            change(None, Some(&losing(1))),
            Some(Warning::RecordingFailing {
                ts: SystemTime::UNIX_EPOCH,
                cause: "ENOSPC".into()
            })
        );
        assert_eq!(change(Some(&losing(1)), Some(&losing(2))), None, "once");
        let Some(Warning::RecordingLinesLost { lines, cause, .. }) = change(Some(&losing(7)), None)
        else {
            panic!("the end of the gap");
        };
        assert_eq!((lines, cause.as_str()), (7, "ENOSPC"));
    }

    /// The recording is written, and the other sinks get the event too.
    #[test]
    fn the_recording_comes_first_and_the_others_get_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let recording = Recording::new(
            crate::sink::record::RotatingFile::create(crate::sink::record::RecordPlan {
                path: dir.path().join("rec.jsonl"),
                rotate_at: None,
                keep: 1,
                header: b"{}".to_vec(),
                sync: crate::sink::record::SyncEvery::Off,
            })
            .unwrap(),
        );
        let log = Rc::default();
        let mut fan = FanOut::new(vec![noting("m", &log, false)]).with_recording(recording);
        fan.umount(&sample_attempt(b"/mnt", None, -16, 0)).unwrap();
        assert_eq!(*log.borrow(), ["m umount -16"]);
        let text = || std::fs::read_to_string(dir.path().join("rec.jsonl")).unwrap();
        assert_eq!(text().lines().count(), 1, "kept back until the turn ends");
        fan.flush().unwrap();
        assert_eq!(text().lines().count(), 2, "{}", text());
    }
}
