//! The attribution side of the pipeline: each EBUSY is attributed, and each successful
//! unmount checked for a filesystem that lives on, by an [`Attributor`] on a blocking thread,
//! so the event stream never waits for a scan. The pipeline completes what comes back.

use std::{io, sync::Arc};

use tokio::task::{JoinError, JoinSet};

use crate::{
    event::{UmountAttempt, Warning},
    sink::Sink,
};

/// What a blocking job gives back to the pipeline.
pub enum Finished {
    /// An EBUSY attempt, now with its holders (the pipeline adds the transient ones).
    Attempt(Box<UmountAttempt>),
    /// A warning about a successful unmount.
    Warning(Box<Warning>),
    /// Nothing to report.
    Nothing,
}

/// Finds who holds a mount: the attribution engine in production ([`super::live::Live`]), a
/// stand-in in tests. Every method may block (it runs on a blocking thread).
pub trait Attributor: Send + Sync + 'static {
    /// Called on the event loop as an EBUSY is decoded, before its job starts: a cheap chance
    /// to remember what may be gone by the time the job runs (the caller's mount table).
    fn learn_namespace(&self, attempt: &UmountAttempt);
    /// The EBUSY attempt with who holds its mount now (or why that is unknown).
    fn attribute(&self, attempt: UmountAttempt) -> Finished;
    /// A warning if the filesystem a successful unmount removed is still in use.
    fn check_outlived(&self, attempt: &UmountAttempt) -> Finished;
}

/// Whether a successful attempt should be checked for a filesystem that lives on.
fn may_outlive(attempt: &UmountAttempt) -> bool {
    !attempt.call.failed() && attempt.target_abs.is_some()
}

/// The jobs of one pipeline: its attributor (none with `--no-holders`) and what runs.
pub struct Jobs {
    attributor: Option<Arc<dyn Attributor>>,
    running: JoinSet<Finished>,
}

impl Jobs {
    /// Jobs run by `attributor`; without one, every attempt is written as it comes.
    pub fn new(attributor: Option<Arc<dyn Attributor>>) -> Self {
        Self {
            attributor,
            running: JoinSet::new(),
        }
    }

    /// Whether no job is running.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    /// The next job to finish (pending forever while none runs: guard with [`Self::is_idle`]).
    pub async fn next_finished(&mut self) -> Option<Result<Finished, JoinError>> {
        self.running.join_next().await
    }

    /// Writes each attempt that needs no attribution at once; starts the attribution of each
    /// EBUSY, and the alive-after-unmount check of each success, on a blocking thread.
    pub fn dispatch(
        &mut self,
        attempts: Vec<UmountAttempt>,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        for attempt in attempts {
            let Some(attributor) = &self.attributor else {
                sink.umount(&attempt)?;
                continue;
            };
            let attributor = Arc::clone(attributor);
            // An EBUSY is written once it is attributed.
            if attempt.call.failed_with(libc::EBUSY) {
                attributor.learn_namespace(&attempt);
                self.running
                    .spawn_blocking(move || attributor.attribute(attempt));
                continue;
            }
            sink.umount(&attempt)?;
            if may_outlive(&attempt) {
                self.running
                    .spawn_blocking(move || attributor.check_outlived(&attempt));
            }
        }
        Ok(())
    }
}
