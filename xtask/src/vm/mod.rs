//! `cargo xtask vm-test`: the integration tests on the fleets' kernels, in QEMU.
//!
//! This host's kernel refuses fentry and has no kprobes, so those probe tiers are tested in VMs:
//! Ubuntu 20.04's 5.4 (BTF and kprobes, but no fentry, no BPF ring buffer and no
//! `bpf_probe_read_kernel`) and Debian's cloud kernels (5.10 from bullseye, 6.1 from bookworm,
//! 6.12, and the newest Debian offers, from trixie or its backports; all with BTF, kprobes and
//! fentry) boot under TCG with an initramfs holding busybox, the test binaries and their shared
//! libraries. Its `/init` mounts what the tests need, prints what it found (`CGTRACE-VM-FACT`
//! lines), runs each test run (the lifecycle tests once per tier, `CGTRACE_TIER`, the kprobe
//! tier's through the perf buffers, `CGTRACE_BUFFER=perf`; the lost-events test through the perf
//! buffers; the classic-tracepoint pipeline test) but those the host's kernel command line names
//! (`cgtrace.skip=`: runs a kernel cannot take, and the agreement runs of the other tiers), prints a
//! marker line per run to the serial console and powers off. The host reads the markers from the
//! console log; `--readme` writes the README's kernel table from them.
//!
//! `--exhaust` boots the same kernels with 3 GiB to run the memcg ID exhaustion test (the
//! `exhaust` target: it fills every memcg ID under a test parent; `cargo xtask test` also runs it
//! on the host, alone, after everything else).
//!
//! Debian's kernels are downloaded once (`apt-get download`, with package lists of their own
//! under `<cache>/apt`, so the host's apt sources are not touched), Ubuntu's from its pinned
//! address (curl, SHA-256 checked: Debian ships no Ubuntu archive keys), into
//! `$CGTRACE_VM_CACHE` or `/var/cache/cgtrace-vm/`; later runs use the cached `vmlinuz` without
//! network.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

use crate::{setup, workspace_root};
use boot::{boot, outcome_from_log};
use initramfs::{CGTRACE_IN_VM, build_cgtrace_binary, build_initramfs, build_test_binaries};
use kernels::{cache_dir, prepare_kernels, require_host_tools};
use report::{kernel_table, print_failure, print_shell_command, print_summary, write_readme_table};

mod boot;
mod initramfs;
mod kernels;
mod report;
#[cfg(test)]
mod tests;

/// The integration test target run on every tier in the VMs.
const TEST_TARGET: &str = "memcg_lifecycle";
/// The classic-tracepoint run: the pipeline test that attaches `cgroup:*` through tracefs.
const CLASSIC_TARGET: &str = "probes";
const CLASSIC_TEST: &str = "classic_tracepoints_see_every_cgroup";
/// Set in every test run inside a VM: tests that would harm a shared host (a node-wide OOM)
/// run only where it is set.
const VM_ENV: &str = "CGTRACE_VM";
/// Tests whose names start with this run the `cgtrace` binary, which the VMs do not have.
const END_TO_END: &str = "end_to_end";
/// The memcg ID exhaustion test target (`--exhaust` only; `test = false`, so built only because
/// [`build_test_binaries`] names it with `--test`).
const EXHAUST_TARGET: &str = "exhaust";

/// The probe tiers, in the order the VM runs them.
const TIERS: &[&str] = &["fentry", "kprobe", "tracepoint"];
/// The tier whose run goes through the perf buffers (`CGTRACE_BUFFER=perf`) and reads with
/// `bpf_probe_read` (`CGTRACE_PROBE_READ=legacy`): the pairing of the kernels without the ring
/// buffer (before 5.8, where fentry is rare) and without `bpf_probe_read_kernel` (before 5.5);
/// the others use the ring buffer. Folded into a tier run to keep the matrix's time.
const PERF_TIER: &str = "kprobe";
/// The lost-events test, run through the perf buffers (its ring buffer run is on the host).
const LOST_TARGET: &str = "lost";
/// The filter-agreement test (live on raw and classic tracepoints, and replays), on every tier.
const AGREEMENT_TARGET: &str = "agreement";
const AGREEMENT_TEST: &str = "filters_select_the_same_cgroups_on_every_tier_and_in_replay";
const PERF_LOST_RUN: &str = "perf-lost";
/// The runs that go through the ring buffer (the rest of [`TIERS`], the classic tracepoints).
const RING_RUNS: &[&str] = &["fentry", "tracepoint", "classic"];

const DEFAULT_CACHE: &str = "/var/cache/cgtrace-vm";
const BUSYBOX: &str = "/bin/busybox";
/// Where the test binaries sit inside the VM.
const VM_TEST_DIR: &str = "test";

const RUN_MARKER: &str = "CGTRACE-VM-RUN";
const RESULT_MARKER: &str = "CGTRACE-VM-RESULT";
/// `CGTRACE-VM-SKIP run=<name>`: a run the kernel cannot take (named on its command line).
const SKIP_MARKER: &str = "CGTRACE-VM-SKIP";
const DONE_MARKER: &str = "CGTRACE-VM-DONE";
/// `CGTRACE-VM-FACT <key> <value>`: what the VM's init or a test found out about the kernel.
const FACT_MARKER: &str = "CGTRACE-VM-FACT";
/// Lines of a failed run's libtest report shown: its start (which test, where it panicked) and
/// its end (the rest of the message, the summary). A VM that did not finish shows its last lines.
const HEAD_LINES: usize = 40;
const TAIL_LINES: usize = 60;

/// The README's generated kernel table sits between these lines.
const README_BEGIN: &str = "<!-- kernel-matrix:begin (cargo xtask vm-test --readme) -->";
const README_END: &str = "<!-- kernel-matrix:end -->";

/// Guest memory: the matrix fits in 1 GiB; filling every memcg ID takes ~1.7 GB of kernel memory.
const MATRIX_MEMORY_MIB: u32 = 1024;
const EXHAUST_MEMORY_MIB: u32 = 3072;

#[derive(Args)]
pub struct VmTestArgs {
    /// Which Debian kernel(s) to boot (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    kernel: Vec<KernelChoice>,
    /// Keep the initramfs and print a QEMU command that boots it into a shell.
    #[arg(long)]
    keep: bool,
    /// Seconds a VM may run before it is killed and counted as failed (TCG is slow; default
    /// 900, 2400 with --exhaust).
    #[arg(long)]
    timeout: Option<u64>,
    /// Run this integration test target on every tier instead of the matrix's runs.
    #[arg(long)]
    test: Option<String>,
    /// Boot with 3 GiB and run the memcg ID exhaustion test (fills every memcg ID) instead.
    #[arg(long, conflicts_with = "test")]
    exhaust: bool,
    /// Write the kernel table between the markers in README.md from this run's results.
    #[arg(long, conflicts_with_all = ["test", "exhaust"])]
    readme: bool,
    /// Refresh the kernel package lists (`apt-get update` of vm-test's own lists) first.
    #[arg(long)]
    refresh: bool,
    /// Boot nothing: read the console logs the last run left in target/vm-test (with --readme:
    /// rewrite the table from them).
    #[arg(long, conflicts_with_all = ["test", "exhaust", "keep"])]
    from_logs: bool,
}

impl Default for VmTestArgs {
    /// The full matrix, as `cargo xtask test` runs it.
    fn default() -> Self {
        VmTestArgs {
            kernel: vec![KernelChoice::All],
            keep: false,
            timeout: None,
            test: None,
            exhaust: false,
            readme: false,
            refresh: false,
            from_logs: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    /// Ubuntu 20.04's 5.4 (no ring buffer, no fentry, no `bpf_probe_read_kernel`).
    #[value(name = "5.4")]
    V5_4,
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// The newest Debian kernel (trixie or its backports), when newer than the series above.
    Newest,
    All,
}

/// A kernel ready to boot.
struct Kernel {
    /// The release, e.g. `6.1.0-56-cloud-amd64`.
    release: String,
    /// The package it came from.
    package: String,
    vmlinuz: PathBuf,
    /// Runs left out on this kernel (told to its `/init` as `cgtrace.skip=`), each with why.
    skip: &'static [(&'static str, &'static str)],
}

impl Kernel {
    /// Why a run is left out on this kernel ("" when it is not).
    fn why_skipped(&self, run: &str) -> &'static str {
        self.skip
            .iter()
            .find(|(r, _)| *r == run)
            .map_or("", |(_, why)| *why)
    }
}

/// One run of a test binary inside the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TestRun {
    /// Its name in the markers and the summary (a tier, `classic`, `exhaust`).
    name: String,
    /// The integration test target.
    target: String,
    /// Environment settings, `NAME=value`.
    env: Vec<String>,
    /// Extra arguments to the libtest binary.
    args: Vec<String>,
    /// Run with `/sys/kernel/btf` hidden (an empty tmpfs over it; a copy of its vmlinux stays
    /// at [`VM_BTF_COPY`]).
    hide_btf: bool,
}

/// Where the VM keeps a copy of its kernel's BTF for the runs with `/sys/kernel/btf` hidden.
const VM_BTF_COPY: &str = "/tmp/vmlinux.btf";

/// The runs of a mode: the test target on every tier (with `--show-output`, so facts printed
/// by passing tests reach the console), the classic-tracepoint pipeline test, or the exhaustion
/// test alone.
fn test_runs(args: &VmTestArgs) -> Vec<TestRun> {
    if args.exhaust {
        return vec![TestRun {
            name: "exhaust".to_string(),
            target: EXHAUST_TARGET.to_string(),
            env: vec![
                "CGTRACE_EXHAUST=1".to_string(),
                format!("CGTRACE_BIN=/{VM_TEST_DIR}/{CGTRACE_IN_VM}"),
            ],
            args: vec!["--nocapture".to_string()],
            hide_btf: false,
        }];
    }
    let target = args.test.clone().unwrap_or_else(|| TEST_TARGET.to_string());
    let mut runs = tier_runs(&target);
    if args.test.is_none() {
        runs.extend(matrix_runs(&target));
    }
    runs
}

/// The test target once per probe tier.
fn tier_runs(target: &str) -> Vec<TestRun> {
    TIERS
        .iter()
        .map(|tier| TestRun {
            name: (*tier).to_string(),
            target: target.to_string(),
            // The perf tier's run also reads with bpf_probe_read, as on kernels before 5.5.
            env: if *tier == PERF_TIER {
                vec![
                    format!("CGTRACE_TIER={tier}"),
                    "CGTRACE_BUFFER=perf".to_string(),
                    "CGTRACE_PROBE_READ=legacy".to_string(),
                ]
            } else {
                vec![format!("CGTRACE_TIER={tier}")]
            },
            // The VMs have no `cgtrace` binary: tests that run it are named `end_to_end_*`.
            args: vec![
                "--show-output".to_string(),
                "--skip".to_string(),
                END_TO_END.to_string(),
            ],
            hide_btf: false,
        })
        .collect()
}

/// The matrix's runs besides the tiers': lost events through perf buffers, the classic
/// tracepoints with and without BTF, BTF from a file, the filter agreement.
fn matrix_runs(target: &str) -> Vec<TestRun> {
    let classic = TestRun {
        name: "classic".to_string(),
        target: CLASSIC_TARGET.to_string(),
        env: Vec::new(),
        // --show-output: the buffer it went through reaches the console (a fact).
        args: vec![
            CLASSIC_TEST.to_string(),
            "--exact".to_string(),
            "--show-output".to_string(),
        ],
        hide_btf: false,
    };
    let mut runs = vec![
        // Every event delivered or counted lost, per kind, through one-page perf buffers;
        // the kernel's lost-record notices against the programs' counts.
        TestRun {
            name: PERF_LOST_RUN.to_string(),
            target: LOST_TARGET.to_string(),
            env: vec!["CGTRACE_BUFFER=perf".to_string()],
            args: vec!["--show-output".to_string()],
            hide_btf: false,
        },
        classic.clone(),
        // The kernel's BTF from a file (`CGTRACE_BTF`) where /sys/kernel/btf is missing: the
        // lifecycle tests check the memcg reads against the kernel's own files, on the tier
        // that uses BTF most (fentry: its attach targets too).
        TestRun {
            name: "btf-file".to_string(),
            target: target.to_string(),
            env: vec![
                "CGTRACE_TIER=fentry".to_string(),
                format!("CGTRACE_BTF={VM_BTF_COPY}"),
            ],
            args: Vec::new(),
            hide_btf: true,
        },
        // No BTF at all: the classic tracepoints still stream every mkdir/rmdir/release.
        TestRun {
            name: "no-btf".to_string(),
            hide_btf: true,
            ..classic
        },
    ];
    // One filter set, one meaning, on every tier (each kernel runs one of them: about a minute
    // a run under TCG; the host runs it on its tracepoint tier too).
    runs.extend(TIERS.iter().map(|tier| TestRun {
        name: format!("agreement-{tier}"),
        target: AGREEMENT_TARGET.to_string(),
        env: vec![format!("CGTRACE_TIER={tier}")],
        args: vec![AGREEMENT_TEST.to_string(), "--exact".to_string()],
        hide_btf: false,
    }));
    runs
}

/// What one VM reported: each run's exit status (None: it never ran), whether it finished, and
/// the facts it printed.
struct VmOutcome {
    statuses: Vec<(String, Option<i32>)>,
    /// Runs the VM's `/init` left out (`cgtrace.skip=`).
    skipped: BTreeSet<String>,
    facts: BTreeMap<String, String>,
    finished: bool,
    /// Killed at the timeout (else, if not finished, it stopped early: a crash or a panic).
    timed_out: bool,
    seconds: u64,
    log: PathBuf,
}

impl VmOutcome {
    fn passed(&self) -> bool {
        self.finished
            && self
                .statuses
                .iter()
                .all(|(name, s)| *s == Some(0) || self.skipped.contains(name))
    }

    fn run_passed(&self, run: &str) -> bool {
        self.statuses
            .iter()
            .any(|(name, s)| name == run && *s == Some(0))
    }
}

/// `--from-logs`: the summary (and with `readme`, the README's table) from the console logs the
/// last run left in `out_dir`.
fn report_from_logs(
    kernels: &[Kernel],
    runs: &[TestRun],
    out_dir: &std::path::Path,
    readme: bool,
) -> Result<()> {
    let outcomes = kernels
        .iter()
        .map(|k| {
            let log = out_dir.join(format!("{}.log", k.release));
            Ok((k, outcome_from_log(&log, runs, false, None)?))
        })
        .collect::<Result<Vec<_>>>()?;
    print_summary(&outcomes, Duration::ZERO);
    if readme {
        write_kernel_table(&outcomes)?;
    }
    Ok(())
}

/// Writes the kernel table between its markers in README.md.
fn write_kernel_table(outcomes: &[(&Kernel, VmOutcome)]) -> Result<()> {
    let readme = workspace_root().join("README.md");
    write_readme_table(&readme, &kernel_table(outcomes))?;
    eprintln!("vm-test: wrote the kernel table to {}", readme.display());
    Ok(())
}

pub fn run(args: VmTestArgs) -> Result<()> {
    setup::ensure()?;
    require_host_tools()?;
    let cache = cache_dir();
    let out_dir = workspace_root().join("target/vm-test");
    fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;

    let kernels = prepare_kernels(&cache, &args.kernel, args.refresh)?;
    let runs = test_runs(&args);
    if args.from_logs {
        return report_from_logs(&kernels, &runs, &out_dir, args.readme);
    }
    let targets: BTreeSet<&str> = runs.iter().map(|r| r.target.as_str()).collect();
    let mut binaries = build_test_binaries(&targets)?;
    if args.exhaust {
        // The exhaustion test runs `cgtrace live` and `cgtrace check` as an operator would.
        binaries.insert(CGTRACE_IN_VM.to_string(), build_cgtrace_binary()?);
    }
    let initramfs = out_dir.join(if args.exhaust {
        "initramfs-exhaust.cpio.gz"
    } else {
        "initramfs.cpio.gz"
    });
    build_initramfs(&binaries, &runs, &initramfs)?;

    let (memory, default_timeout) = if args.exhaust {
        (EXHAUST_MEMORY_MIB, 2400)
    } else {
        (MATRIX_MEMORY_MIB, 900)
    };
    let timeout = Duration::from_secs(args.timeout.unwrap_or(default_timeout));
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for kernel in &kernels {
        let outcome = boot(
            kernel,
            &initramfs,
            &out_dir,
            &runs,
            memory,
            timeout,
            if args.exhaust { "-exhaust" } else { "" },
        )?;
        outcomes.push((kernel, outcome));
    }

    for (kernel, outcome) in &outcomes {
        if !outcome.passed() {
            print_failure(kernel, outcome)?;
        }
    }
    print_summary(&outcomes, started.elapsed());
    if args.readme {
        write_kernel_table(&outcomes)?;
    }
    if args.keep {
        print_shell_command(&kernels, &initramfs, memory);
    } else {
        fs::remove_file(&initramfs).with_context(|| format!("remove {}", initramfs.display()))?;
    }

    let failed = outcomes.iter().filter(|(_, o)| !o.passed()).count();
    if failed > 0 {
        bail!("vm-test: {failed} of {} kernel(s) failed", outcomes.len());
    }
    Ok(())
}
