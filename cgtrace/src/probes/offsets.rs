//! What the kernel's BTF says: struct offsets, syscall argument registers, the OOM layout.

use anyhow::bail;
use cgtrace_common::{KernelOffsets, OomLayout};

use crate::{kernel, kernel::btf};

/// Offsets from the running kernel's BTF.
pub fn kernel_offsets() -> anyhow::Result<KernelOffsets> {
    Ok(kernel_btf_facts()?.offsets)
}

/// What one parse of the kernel's BTF says.
pub(super) struct BtfFacts {
    pub(super) offsets: KernelOffsets,
    /// Where `struct pt_regs` keeps the syscall arguments holding a mkdir's path (see
    /// [`btf::syscall_arg_regs`]).
    pub(super) arg_regs: Option<btf::SyscallArgRegs>,
    /// What resolves a failed mkdir's relative path in the kernel.
    pub(super) start_dir: cgtrace_common::StartDirLayout,
    /// What the OOM programs read, and what of it this kernel lacks.
    pub(super) oom: OomLayout,
    pub(super) oom_missing: Vec<&'static str>,
    /// `mark_victim`'s victim: a task (true) or a pid (false), from the tracepoint's typedef.
    pub(super) victim_task: Option<bool>,
    /// `__oom_kill_process()` is a function of its own (an fentry/kprobe target).
    pub(super) oom_kill_fn: bool,
}

pub(super) fn kernel_btf_facts() -> anyhow::Result<BtfFacts> {
    let path = btf::vmlinux_path();
    let data = btf::read_vmlinux(&path)?;
    let kbtf = btf::KernelBtf::parse(&data, &path.display().to_string())?;
    let (oom, oom_missing) = btf::oom_layout(&kbtf, kernel::page_size());
    Ok(BtfFacts {
        offsets: btf::cgroup_offsets(&kbtf),
        arg_regs: btf::syscall_arg_regs(&kbtf),
        start_dir: btf::start_dir_layout(&kbtf),
        oom,
        oom_missing,
        victim_task: btf::mark_victim_takes_task(&kbtf),
        oom_kill_fn: kbtf.has_func("__oom_kill_process"),
    })
}

/// The offsets, if the raw tracepoint programs can use them.
pub(super) fn raw_offsets(
    offsets: &anyhow::Result<KernelOffsets>,
) -> anyhow::Result<KernelOffsets> {
    let off = match offsets {
        Ok(o) => *o,
        Err(e) => bail!("raw tracepoints need kernel BTF: {e:#}"),
    };
    let missing = btf::missing(&off);
    if !missing.is_empty() {
        bail!("kernel BTF lacks {}", missing.join(", "));
    }
    Ok(off)
}
