//! Failed mkdirs in cgroupfs caught at the syscall (`--mkdir-failures syscall`).

use anyhow::{Context as _, anyhow};
use aya::{Ebpf, programs::TracePoint};
use cgtrace_common::names::program;

/// Failed mkdirs through the enter and exit hooks (the enter hook remembers the path per
/// thread): (tracepoint, program).
pub(super) const MKDIR_FAIL_HOOKS: [(&str, &str); 4] = [
    ("sys_enter_mkdir", program::SYS_ENTER_MKDIR),
    ("sys_enter_mkdirat", program::SYS_ENTER_MKDIRAT),
    ("sys_exit_mkdir", program::SYS_EXIT_MKDIR),
    ("sys_exit_mkdirat", program::SYS_EXIT_MKDIRAT),
];

/// Failed mkdirs through the exit hooks alone (the path comes from the task's saved registers,
/// `bpf_task_pt_regs`, Linux 5.15+): a successful mkdir costs one read.
pub(super) const MKDIR_FAIL_EXIT_HOOKS: [(&str, &str); 2] = [
    ("sys_exit_mkdir", program::EXIT_MKDIR_REGS),
    ("sys_exit_mkdirat", program::EXIT_MKDIRAT_REGS),
];

/// Which failed mkdirs in cgroupfs are reported (`--mkdir-failures`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MkdirFailureMode {
    /// The failures inside cgroup creation (memcg IDs exhausted, a memcg that cannot be
    /// allocated), from the half-made cgroup's release on every tier: whatever the path's
    /// spelling, no cost per syscall; no caller, the errno inferred where only one is possible
    #[default]
    Cgroupfs,
    /// Also every failed mkdir(2)/mkdirat(2) under /sys/fs/cgroup with its errno and caller
    /// (EACCES, EPERM, EROFS, ENOENT, EAGAIN too), from the syscall tracepoints: every syscall
    /// on the node gets slower while cgtrace runs (a trivial one about 1.4× here)
    Syscall,
}

impl MkdirFailureMode {
    pub fn name(self) -> &'static str {
        match self {
            MkdirFailureMode::Cgroupfs => "cgroupfs",
            MkdirFailureMode::Syscall => "syscall",
        }
    }
}

/// How failed mkdirs are caught at the syscall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MkdirFailureHooks {
    /// The exit hooks alone where the kernel and architecture allow, else enter and exit.
    #[default]
    Auto,
    /// The enter and exit hooks (what `Auto` falls back to; forced by tests).
    EnterExit,
}

/// The hooks that catch failed mkdirs once attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MkdirFailureAttach {
    ExitOnly,
    EnterExit,
}

impl MkdirFailureAttach {
    pub fn describe(self) -> &'static str {
        match self {
            MkdirFailureAttach::ExitOnly => "the syscall exit hooks (path from saved registers)",
            MkdirFailureAttach::EnterExit => "the syscall enter and exit hooks",
        }
    }
}

/// Failed mkdirs are reported when their path starts with this.
pub const CGROUPFS_PREFIX: &str = "/sys/fs/cgroup/";

pub(super) fn attach_mkdir_failures(
    ebpf: &mut Ebpf,
    exit_only: bool,
) -> anyhow::Result<MkdirFailureAttach> {
    // Everything is loaded before anything is attached, so a refused exit-only program leaves
    // nothing behind to report a failure twice.
    if exit_only {
        match load_syscall_hooks(ebpf, &MKDIR_FAIL_EXIT_HOOKS) {
            Ok(()) => {
                attach_syscall_hooks(ebpf, &MKDIR_FAIL_EXIT_HOOKS)?;
                return Ok(MkdirFailureAttach::ExitOnly);
            }
            // Kernels before 5.15 lack bpf_task_pt_regs: the verifier refuses the program.
            Err(e) => log::info!("exit-only failed-mkdir hooks unavailable: {e:#}"),
        }
    }
    load_syscall_hooks(ebpf, &MKDIR_FAIL_HOOKS)?;
    attach_syscall_hooks(ebpf, &MKDIR_FAIL_HOOKS)?;
    Ok(MkdirFailureAttach::EnterExit)
}

pub(super) fn syscall_program<'a>(
    ebpf: &'a mut Ebpf,
    prog: &str,
) -> anyhow::Result<&'a mut TracePoint> {
    Ok(ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
        .try_into()?)
}

pub(super) fn load_syscall_hooks(ebpf: &mut Ebpf, hooks: &[(&str, &str)]) -> anyhow::Result<()> {
    for &(_, prog) in hooks {
        syscall_program(ebpf, prog)?
            .load()
            .with_context(|| format!("loading {prog}"))?;
    }
    Ok(())
}

pub(super) fn attach_syscall_hooks(ebpf: &mut Ebpf, hooks: &[(&str, &str)]) -> anyhow::Result<()> {
    for &(tp, prog) in hooks {
        syscall_program(ebpf, prog)?
            .attach("syscalls", tp)
            .with_context(|| format!("attaching tracepoint syscalls:{tp}"))?;
    }
    Ok(())
}
