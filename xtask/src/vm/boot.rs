//! Booting a kernel in QEMU and reading its console log.
use std::{
    collections::BTreeMap,
    fs::{self, File},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{DONE_MARKER, FACT_MARKER, Kernel, RESULT_MARKER, SKIP_MARKER, TestRun, VmOutcome};

// ---------------------------------------------------------------------------------------------
// Booting

pub(super) fn qemu_command(
    kernel: &Kernel,
    initramfs: &Path,
    append: &str,
    memory_mib: u32,
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2"])
        .arg("-m")
        .arg(memory_mib.to_string())
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", append]);
    cmd
}

/// Boots one kernel with the console going to `<out_dir>/<release>.log`, waits for it to power
/// off (or kills it at the timeout) and reads the markers.
pub(super) fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    out_dir: &Path,
    runs: &[TestRun],
    memory_mib: u32,
    timeout: Duration,
    log_suffix: &str,
) -> Result<VmOutcome> {
    let log = out_dir.join(format!("{}{log_suffix}.log", kernel.release));
    eprintln!(
        "vm-test: booting {} with {memory_mib} MiB (console: {})",
        kernel.release,
        log.display()
    );
    let console = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let console_err = console
        .try_clone()
        .with_context(|| format!("reopen {}", log.display()))?;
    let started = Instant::now();
    let mut qemu = qemu_command(kernel, initramfs, &kernel_command_line(kernel), memory_mib)
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        .spawn()
        .context("start qemu-system-x86_64")?;
    let timed_out = !wait_or_kill(&mut qemu, timeout)?;
    let seconds = started.elapsed().as_secs();
    if timed_out {
        eprintln!(
            "vm-test: {} did not finish in {} s; killed",
            kernel.release,
            timeout.as_secs()
        );
    } else {
        eprintln!("vm-test: {} ran for {seconds} s", kernel.release);
    }
    outcome_from_log(&log, runs, timed_out, Some(seconds))
}

/// The VM's kernel command line: the serial console, power off on a panic, and the runs this
/// kernel cannot take.
pub(super) fn kernel_command_line(kernel: &Kernel) -> String {
    let mut line = String::from("console=ttyS0 panic=-1 quiet");
    if !kernel.skip.is_empty() {
        let runs: Vec<&str> = kernel.skip.iter().map(|(run, _)| *run).collect();
        line.push_str(&format!(" cgtrace.skip={}", runs.join(",")));
    }
    line
}

/// What a VM's console log says; `seconds` None: the sum of its runs' times.
pub(super) fn outcome_from_log(
    log: &Path,
    runs: &[TestRun],
    timed_out: bool,
    seconds: Option<u64>,
) -> Result<VmOutcome> {
    let text = read_log(log)?;
    Ok(VmOutcome {
        statuses: runs
            .iter()
            .map(|r| (r.name.clone(), run_status(&text, &r.name)))
            .collect(),
        skipped: runs
            .iter()
            .filter(|r| run_skipped(&text, &r.name))
            .map(|r| r.name.clone())
            .collect(),
        facts: facts(&text),
        finished: !timed_out && text.lines().any(|l| l.contains(DONE_MARKER)),
        timed_out,
        seconds: seconds.unwrap_or_else(|| {
            runs.iter()
                .filter_map(|r| run_seconds(&text, &r.name))
                .sum()
        }),
        log: log.to_path_buf(),
    })
}

/// Waits for the child; true if it exited, false if it was killed at the timeout.
pub(super) fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().context("wait for qemu")?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            child.kill().context("kill qemu")?;
            child.wait().context("wait for the killed qemu")?;
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

pub(super) fn read_log(log: &Path) -> Result<String> {
    let bytes = fs::read(log).with_context(|| format!("read {}", log.display()))?;
    // The serial console ends lines with \r\n.
    Ok(String::from_utf8_lossy(&bytes).replace('\r', ""))
}

/// The text after a marker on the lines holding it (the marker may follow kernel output).
pub(super) fn after_marker<'a>(
    log: &'a str,
    marker: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    log.lines()
        .filter_map(move |l| Some(&l[l.find(marker)? + marker.len()..]))
}

/// The exit status the VM reported for a run.
pub(super) fn run_status(log: &str, run: &str) -> Option<i32> {
    let marker = format!("{RESULT_MARKER} run={run} status=");
    after_marker(log, &marker).find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Whether the VM's `/init` skipped a run (the kernel cannot take it).
pub(super) fn run_skipped(log: &str, run: &str) -> bool {
    let marker = format!("{SKIP_MARKER} run={run}");
    after_marker(log, &marker).any(|rest| rest.trim().is_empty())
}

/// Seconds a run took, as the VM measured them.
pub(super) fn run_seconds(log: &str, run: &str) -> Option<u64> {
    let marker = format!("{RESULT_MARKER} run={run} status=");
    after_marker(log, &marker).find_map(|rest| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix("seconds="))?
            .parse()
            .ok()
    })
}

/// `CGTRACE-VM-FACT <key> <value>` lines; a later line wins.
pub(super) fn facts(log: &str) -> BTreeMap<String, String> {
    let marker = format!("{FACT_MARKER} ");
    after_marker(log, &marker)
        .filter_map(|rest| {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            (!key.is_empty()).then(|| (key.to_string(), value.trim().to_string()))
        })
        .collect()
}
