//! The `host` row of the matrix: the same stages as a guest (doctor, then the integration
//! tests) run directly on this machine's kernel, and read through the same [`GuestReport`],
//! so that one table compares every kernel.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, BufWriter, Write},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{ensure, Result};

use super::{
    guest,
    kernels::Kernel,
    report::{self, GuestReport, QemuExit, MARKER},
    Outcome,
};

/// The same stages on this machine's kernel, read through the same report (the test binary's
/// stderr goes to `host.stderr.log` beside the log).
pub fn run_on_host(plan: &guest::Plan, log: &Path) -> Result<Outcome> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the host run loads eBPF programs: run as root"
    );
    let started = Instant::now();
    let mut log_file = BufWriter::new(File::create(log)?);
    let mut report = GuestReport::default();
    let mut feed = |line: &str| -> Result<()> {
        writeln!(log_file, "{line}")?;
        report.feed(line);
        Ok(())
    };
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    feed(&format!("{MARKER} kernel {}", release.trim()))?;
    feed(&format!("{MARKER} stage doctor"))?;
    let doctor = Command::new(&plan.busyprobe).arg("doctor").output()?;
    for line in String::from_utf8_lossy(&doctor.stdout).lines() {
        feed(line)?;
    }
    feed(&format!(
        "{MARKER} doctor-exit {}",
        doctor.status.code().unwrap_or(-1)
    ))?;
    let mut code = 0;
    if let Some((binary, args)) = &plan.tests {
        feed(&format!("{MARKER} stage tests"))?;
        let t0 = started.elapsed().as_secs_f64();
        let stderr = log.with_extension("stderr.log");
        let mut command = Command::new(binary);
        if let Some(mode) = &plan.mode {
            command.env("BUSYPROBE_MODE", mode);
        }
        let mut child = command
            .args(args)
            .current_dir(&plan.test_cwd)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr)?)
            .spawn()?;
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            feed(&line?)?;
        }
        let rc = child.wait()?.code().unwrap_or(-1);
        feed(&format!(
            "{MARKER} tests-exit {rc} {t0:.2} {:.2}",
            started.elapsed().as_secs_f64()
        ))?;
        code = u8::from(rc != 0);
    }
    feed(&format!("{MARKER} exit {code}"))?;
    log_file.flush()?;
    let verdict = report::verdict(&report, QemuExit::Code(code));
    Ok(Outcome {
        kernel: Kernel::Host,
        report,
        verdict,
        elapsed: started.elapsed(),
        boot: None,
        log: log.to_path_buf(),
    })
}
