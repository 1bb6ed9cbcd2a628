//! One sink that forwards every event to several (the agent: a recording and the metrics),
//! and [`FailuresOnly`], which passes on only the failed attempts (`agent --only-failed`
//! narrows the recording, not the metrics).

use std::{io, time::SystemTime};

use crate::{
    event::{UmountAttempt, Warning},
    sink::Sink,
    stats::Stats,
};

/// Forwards each event to every sink, in order. A sink's error ends the stream (as it would
/// alone): the sinks after it do not get that event.
pub struct FanOut {
    sinks: Vec<Box<dyn Sink>>,
}

impl FanOut {
    /// A sink over `sinks`, written in this order.
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Self {
        Self { sinks }
    }
}

impl Sink for FanOut {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.umount(attempt))
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.warning(warning))
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.stats(ts, stats, last))
    }
}

/// Passes on the failed attempts only (warnings and stats all).
pub struct FailuresOnly<S: Sink>(pub S);

impl<S: Sink> Sink for FailuresOnly<S> {
    fn umount(&mut self, attempt: &UmountAttempt) -> io::Result<()> {
        if attempt.call.failed() {
            self.0.umount(attempt)
        } else {
            Ok(())
        }
    }

    fn warning(&mut self, warning: &Warning) -> io::Result<()> {
        self.0.warning(warning)
    }

    fn stats(&mut self, ts: SystemTime, stats: &Stats, last: bool) -> io::Result<()> {
        self.0.stats(ts, stats, last)
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

        fn warning(&mut self, _: &Warning) -> io::Result<()> {
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
        let mut fan = FanOut::new(vec![
            noting("a", &log, false),
            Box::new(FailuresOnly(*noting("b", &log, false))),
        ]);
        fan.umount(&sample_attempt(b"/mnt", Some(b"/mnt"), 0, 0))
            .unwrap();
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
                "a umount 0",
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
}
