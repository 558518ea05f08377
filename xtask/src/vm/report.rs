//! What the runs say: the summary, the failures, and the README's kernel table.
use std::{path::Path, process::Command, time::Duration};

use anyhow::Result;

use super::{
    HEAD_LINES, Kernel, PERF_LOST_RUN, PERF_TIER, README_BEGIN, README_END, RESULT_MARKER,
    RING_RUNS, RUN_MARKER, TAIL_LINES, TIERS, VmOutcome,
    boot::{qemu_command, read_log, run_seconds},
};

// ---------------------------------------------------------------------------------------------
// Reporting

pub(super) fn status_word(status: Option<i32>) -> String {
    match status {
        Some(0) => "PASS".to_string(),
        Some(code) => format!("FAIL (exit status {code})"),
        None => "FAIL (did not run)".to_string(),
    }
}

pub(super) fn print_summary(outcomes: &[(&Kernel, VmOutcome)], elapsed: Duration) {
    let width = outcomes
        .iter()
        .map(|(k, _)| k.release.len())
        .max()
        .unwrap_or(0);
    println!();
    for (kernel, outcome) in outcomes {
        let text = read_log(&outcome.log).unwrap_or_default();
        for (run, status) in &outcome.statuses {
            if outcome.skipped.contains(run) {
                println!(
                    "vm-test  {:width$}  {run:<10}  not run ({})",
                    kernel.release,
                    kernel.why_skipped(run)
                );
                continue;
            }
            let took = run_seconds(&text, run).map_or(String::new(), |s| format!("  ({s} s)"));
            println!(
                "vm-test  {:width$}  {run:<10}  {}{took}",
                kernel.release,
                status_word(*status)
            );
        }
        if let Some(exhaust) = outcome.facts.get("exhaust") {
            println!("vm-test  {:width$}  exhaust     {exhaust}", kernel.release);
        }
        if !outcome.finished {
            let why = if outcome.timed_out {
                "killed at the timeout"
            } else {
                "stopped before CGTRACE-VM-DONE"
            };
            println!(
                "vm-test  {:width$}  {:<10}  FAIL ({why}; see {})",
                kernel.release,
                "vm",
                outcome.log.display()
            );
        }
        println!(
            "vm-test  {:width$}  {:<10}  {} s in the VM",
            kernel.release, "total", outcome.seconds
        );
    }
    println!(
        "vm-test: {} kernel(s) in {} s",
        outcomes.len(),
        elapsed.as_secs()
    );
}

/// The libtest report of each failed run, or the log's end when the VM did not finish.
pub(super) fn print_failure(kernel: &Kernel, outcome: &VmOutcome) -> Result<()> {
    let text = read_log(&outcome.log)?;
    for (run, status) in &outcome.statuses {
        if status.is_some_and(|s| s != 0) {
            eprintln!(
                "\n==== vm-test {} run {run}: {} (full log: {}) ====",
                kernel.release,
                status_word(*status),
                outcome.log.display()
            );
            let report = failure_report(run_section(&text, run));
            eprintln!("{}", excerpt(report, HEAD_LINES, TAIL_LINES));
        }
    }
    if !outcome.finished {
        eprintln!(
            "\n==== vm-test {}: the VM did not finish (end of {}) ====",
            kernel.release,
            outcome.log.display()
        );
        eprintln!("{}", excerpt(&text, 0, HEAD_LINES + TAIL_LINES));
    }
    Ok(())
}

/// The part of the log between a run's start marker and its result marker.
pub(super) fn run_section<'a>(log: &'a str, run: &str) -> &'a str {
    let start_marker = format!("{RUN_MARKER} run={run}\n");
    let end_marker = format!("{RESULT_MARKER} run={run} ");
    let start = log
        .find(&start_marker)
        .map_or(0, |i| i + start_marker.len());
    let end = log[start..]
        .find(&end_marker)
        .map_or(log.len(), |i| start + i);
    &log[start..end]
}

/// libtest's report from its `failures:` line on; all of it when there is none (a crash).
pub(super) fn failure_report(section: &str) -> &str {
    section
        .find("\nfailures:\n")
        .map_or(section, |i| &section[i + 1..])
}

/// The first `head` and the last `tail` lines of `text`, saying how many were left out.
pub(super) fn excerpt(text: &str, head: usize, tail: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= head + tail {
        return lines.join("\n");
    }
    let left_out = lines.len() - head - tail;
    let note = format!("[... {left_out} line(s) left out ...]");
    let mut shown = lines[..head].to_vec();
    shown.push(&note);
    shown.extend_from_slice(&lines[lines.len() - tail..]);
    shown.join("\n")
}

pub(super) fn print_shell_command(kernels: &[Kernel], initramfs: &Path, memory_mib: u32) {
    eprintln!(
        "\nvm-test: kept {}; to boot a kernel into a shell (mounts done, tests not run):",
        initramfs.display()
    );
    for kernel in kernels {
        let cmd = qemu_command(
            kernel,
            initramfs,
            "console=ttyS0 panic=-1 quiet cgtrace.shell",
            memory_mib,
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect();
        eprintln!("  qemu-system-x86_64 {}", args.join(" "));
    }
}

pub(super) fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// The README's kernel table

/// The upstream version from `/proc/version` (`... #1 SMP Debian 5.10.262-1 (2026-07-31)`).
pub(super) fn debian_version(proc_version: &str) -> Option<&str> {
    // The last one: the compiler's version in parentheses says "Debian" too.
    let after = &proc_version[proc_version.rfind("Debian ")? + "Debian ".len()..];
    after.split_whitespace().next()
}

/// The type of the classic tracepoints' `id` from its format line (`field:u64 id;`).
pub(super) fn tracepoint_id_type(fact: &str) -> Option<&str> {
    let decl = fact.strip_prefix("field:")?.strip_suffix(" id;")?;
    Some(decl.trim())
}

/// The tiers that passed on a kernel, those that failed, and those left out with why.
fn tier_cell(kernel: &Kernel, o: &VmOutcome) -> String {
    let tiers: Vec<&str> = TIERS.iter().copied().filter(|t| o.run_passed(t)).collect();
    let failed: Vec<&str> = TIERS
        .iter()
        .copied()
        .filter(|t| !o.run_passed(t) && !o.skipped.contains(*t))
        .collect();
    let not_run: Vec<&str> = TIERS
        .iter()
        .copied()
        .filter(|t| o.skipped.contains(*t))
        .collect();
    let mut cell = if tiers.is_empty() {
        "none".to_string()
    } else {
        tiers.join(", ")
    };
    if !failed.is_empty() {
        cell.push_str(&format!(" (FAILED: {})", failed.join(", ")));
    }
    for run in not_run {
        cell.push_str(&format!(" (not {run}: {})", kernel.why_skipped(run)));
    }
    cell
}

/// One row per kernel: what passed on it, and what the kernel offered, from the VM's output.
pub(super) fn kernel_table(outcomes: &[(&Kernel, VmOutcome)]) -> String {
    let mut text = String::from(
        "| kernel | package | memcg | probe tiers passed | classic tracepoints | failed mkdirs caught by | BTF | buffer |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (kernel, o) in outcomes {
        let fact = |k: &str| o.facts.get(k).map(String::as_str);
        let version = fact("version")
            .and_then(debian_version)
            .unwrap_or(kernel.release.as_str());
        let tier_cell = tier_cell(kernel, o);
        let id = fact("tracepoint_id")
            .and_then(tracepoint_id_type)
            .map_or(String::new(), |t| format!(" (`{t} id`)"));
        let classic = if o.run_passed("classic") {
            format!("passed{id}")
        } else {
            format!("FAILED{id}")
        };
        let mut btf = match fact("btf") {
            Some("none") | None => "none".to_string(),
            Some(path) => format!("`{path}`"),
        };
        let word = |run: &str| {
            if o.run_passed(run) {
                "passed"
            } else if o.skipped.contains(run) {
                "not run"
            } else {
                "FAILED"
            }
        };
        btf.push_str(&format!(
            "; from a file (`CGTRACE_BTF`, fentry): {}; none (classic tracepoints): {}",
            word("btf-file"),
            word("no-btf")
        ));
        text.push_str(&format!(
            "| {version} (`{release}`) | `{package}` | {memcg} | {tier_cell} | {classic} | {hooks} | {btf} | {buffer} |\n",
            buffer = buffer_cell(o),
            release = kernel.release,
            package = kernel.package,
            memcg = fact("memcg").unwrap_or("?"),
            hooks = fact("mkdir_failure_hooks").unwrap_or("?"),
        ));
    }
    let total: u64 = outcomes.iter().map(|(_, o)| o.seconds).sum();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    text.push_str(&format!(
        "\nWritten by `cargo xtask vm-test --readme` from the VMs' console output on {date}: \
         {} kernel(s) under QEMU TCG in {} min {} s.\n",
        outcomes.len(),
        total / 60,
        total % 60
    ));
    text
}

/// The buffers that passed: per buffer kind, the runs that went through it (each lifecycle run
/// says which buffer its probes chose: `CGTRACE-VM-FACT buffer_<run> ring|perf`; the other
/// runs' buffers are the matrix's choice), and the lost-events test on the perf buffers.
pub(super) fn buffer_cell(o: &VmOutcome) -> String {
    let mut by_kind: Vec<(&str, Vec<String>)> = vec![("ring", Vec::new()), ("perf", Vec::new())];
    let runs = TIERS.iter().chain(RING_RUNS).copied();
    let mut seen = Vec::new();
    for run in runs.filter(|r| o.run_passed(r)) {
        if seen.contains(&run) {
            continue;
        }
        seen.push(run);
        let kind = o
            .facts
            .get(&format!("buffer_{run}"))
            .map(String::as_str)
            .unwrap_or(if run == PERF_TIER { "perf" } else { "ring" });
        let label = if run == PERF_TIER {
            format!("{run} lifecycle with bpf_probe_read")
        } else {
            run.to_string()
        };
        if let Some((_, list)) = by_kind.iter_mut().find(|(k, _)| *k == kind) {
            list.push(label);
        }
    }
    if o.run_passed(PERF_LOST_RUN)
        && let Some((_, list)) = by_kind.iter_mut().find(|(k, _)| *k == "perf")
    {
        list.push("lost events".to_string());
    }
    let mut cells: Vec<String> = by_kind
        .iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(kind, list)| format!("{kind} ({})", list.join(", ")))
        .collect();
    if !o.run_passed(PERF_LOST_RUN) && !o.skipped.contains(PERF_LOST_RUN) {
        cells.push(format!("perf FAILED ({PERF_LOST_RUN})"));
    }
    cells.join("; ")
}

/// Replaces what is between the markers in the README (the markers stay).
pub(super) fn write_readme_table(readme: &Path, table: &str) -> Result<()> {
    crate::write_between_markers(readme, README_BEGIN, README_END, table)
}
