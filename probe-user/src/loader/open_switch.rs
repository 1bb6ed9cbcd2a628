//! The open probes on demand (`--open-times contended`): loaded with the others, attached only
//! while some mount is contended. An attached syscall tracepoint costs every open on the node
//! its dispatch even when its program returns at once; detached, the opens pay nothing.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use aya::{
    programs::{
        fentry::FEntryLinkId, fexit::FExitLinkId, lsm::LsmLinkId, trace_point::TracePointLinkId,
        Lsm, Program,
    },
    Ebpf,
};

use super::{
    tracepoint, FnAttachment, Mode, EVENT_FD_FENTRY, OPEN_TIME_FENTRY, OPEN_TIME_LSM,
    OPEN_TIME_TRACEPOINTS,
};

/// One attachment of an open program, to undo.
enum OpenLink {
    TracePoint(&'static str, TracePointLinkId),
    FEntry(&'static str, FEntryLinkId),
    FExit(&'static str, FExitLinkId),
    Lsm(&'static str, LsmLinkId),
}

/// Attaches and detaches the open-time programs of the mode the probes run in.
pub struct OpenTimeSwitch {
    ebpf: Arc<Mutex<Ebpf>>,
    mode: Mode,
    links: Vec<OpenLink>,
}

impl OpenTimeSwitch {
    /// A switch, off, over the loaded probes.
    pub(super) fn new(ebpf: Arc<Mutex<Ebpf>>, mode: Mode) -> Self {
        Self {
            ebpf,
            mode,
            links: Vec::new(),
        }
    }

    /// Whether the open programs are attached.
    pub fn is_on(&self) -> bool {
        !self.links.is_empty()
    }

    /// Attaches every open program (nothing when they are): all or none.
    pub fn on(&mut self) -> Result<()> {
        if self.is_on() {
            return Ok(());
        }
        let attached = match self.mode {
            Mode::Tracepoint => self.attach_tracepoints(),
            Mode::Fentry => self.attach_fentry(&OPEN_TIME_FENTRY),
            // The event fds' marks before the hook that reads them.
            Mode::Enhanced => self
                .attach_fentry(&OPEN_TIME_FENTRY)
                .and_then(|()| self.attach_fentry(&EVENT_FD_FENTRY))
                .and_then(|()| self.attach_hook()),
        };
        if attached.is_err() {
            self.off();
        }
        attached
    }

    /// Detaches every open program.
    pub fn off(&mut self) {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(PoisonError::into_inner);
        for link in self.links.drain(..) {
            if let Err(e) = detach(&mut ebpf, link) {
                tracing::warn!("detaching an open probe: {e:#}");
            }
        }
    }

    fn attach_tracepoints(&mut self) -> Result<()> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(PoisonError::into_inner);
        for a in &OPEN_TIME_TRACEPOINTS {
            let prog = tracepoint(&mut ebpf, a.program)?;
            for name in a.names {
                let link = prog
                    .attach(a.category, name)
                    .with_context(|| format!("attaching to tracepoint {}:{name}", a.category))?;
                self.links.push(OpenLink::TracePoint(a.program, link));
            }
        }
        Ok(())
    }

    fn attach_fentry(&mut self, programs: &[FnAttachment]) -> Result<()> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(PoisonError::into_inner);
        for a in programs {
            let link = match ebpf.program_mut(a.program) {
                Some(Program::FEntry(p)) => p.attach().map(|l| OpenLink::FEntry(a.program, l)),
                Some(Program::FExit(p)) => p.attach().map(|l| OpenLink::FExit(a.program, l)),
                _ => anyhow::bail!("program {} is not an fentry/fexit program", a.program),
            };
            let link =
                link.with_context(|| format!("attaching {} to {}", a.program, a.function))?;
            self.links.push(link);
        }
        Ok(())
    }

    fn attach_hook(&mut self) -> Result<()> {
        let mut ebpf = self.ebpf.lock().unwrap_or_else(PoisonError::into_inner);
        let a = OPEN_TIME_LSM;
        let link = lsm_program(&mut ebpf, a.program)?
            .attach()
            .with_context(|| format!("attaching {} to the {} hook", a.program, a.hook))?;
        self.links.push(OpenLink::Lsm(a.program, link));
        Ok(())
    }
}

/// The BPF LSM program `name` of the object.
fn lsm_program<'e>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut Lsm> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not a BPF LSM program"))
}

/// Undoes one attachment.
fn detach(ebpf: &mut Ebpf, link: OpenLink) -> Result<()> {
    match link {
        OpenLink::TracePoint(name, id) => tracepoint(ebpf, name)?.detach(id)?,
        OpenLink::FEntry(name, id) => match ebpf.program_mut(name) {
            Some(Program::FEntry(p)) => p.detach(id)?,
            _ => anyhow::bail!("program {name} is not an fentry program"),
        },
        OpenLink::FExit(name, id) => match ebpf.program_mut(name) {
            Some(Program::FExit(p)) => p.detach(id)?,
            _ => anyhow::bail!("program {name} is not an fexit program"),
        },
        OpenLink::Lsm(name, id) => lsm_program(ebpf, name)?.detach(id)?,
    }
    Ok(())
}

/// The open programs are detached when the switch goes.
impl Drop for OpenTimeSwitch {
    fn drop(&mut self) {
        self.off();
    }
}
