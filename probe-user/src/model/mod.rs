//! The vocabulary of busyprobe's answers, shared by the attribution engine that finds them,
//! the live pipeline that completes them and the sinks that write them: who holds a mount
//! ([`Holder`], of a [`HolderKind`], [`Seen`] some way) and everything known about one
//! mount ([`Attribution`], with the [`MountCopy`]s of the mount in other namespaces). Plain
//! data: it depends on nothing but the mount table's entries.

mod attribution;
mod copy;
mod explanation;
mod holder;

#[cfg(test)]
pub(crate) use attribution::sample_attribution;
pub use attribution::{Accessor, Attribution, Coverage, MountSummary, Uninspectable};
pub use copy::MountCopy;
pub use explanation::{Explanation, ExplanationCode};
#[cfg(test)]
pub(crate) use holder::sample_process_holder;
pub use holder::{Holder, HolderKind, HolderProcess, OpenTimeUnknown, QueuedFile, Seen};
