//! Failed `mkdir`/`mkdirat` in cgroupfs — the error an operator starts from (`mkdir
//! /sys/fs/cgroup/memory/kubepods/...: no space left on device`) — through the syscall
//! tracepoints. Where the kernel has `bpf_task_pt_regs` (5.15+) and the loader knows the
//! architecture's registers, the exit hook alone does it: a mkdir that succeeded costs one read,
//! and a failed one's path comes from the task's saved user registers. Elsewhere the enter hook
//! remembers the path argument per thread for the exit hook. Failures are reported when the path
//! starts with the cgroupfs mount prefix.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task_btf, bpf_probe_read_user_str, bpf_task_pt_regs},
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use cgtrace_common::EventKind;

use crate::{
    cgroup_tp::report,
    event::{CgroupInfo, LoadTimeBytes, config, read_field},
};

/// Thread id → user pointer of the path being created.
#[map]
static MKDIR_ARGS: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

#[map]
static PREFIX_SCRATCH: PerCpuArray<[u8; 64]> = PerCpuArray::with_max_entries(1, 0);

/// The cgroupfs mount prefix (e.g. `/sys/fs/cgroup/`), set by the loader.
#[unsafe(no_mangle)]
static CGROUPFS_PREFIX: LoadTimeBytes<64> = LoadTimeBytes::unset();

fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

fn try_enter(ctx: &TracePointContext, path_off: u32) -> Result<u32, u32> {
    // SAFETY: the offset comes from the tracepoint's format file; read_at checks the address.
    let path: u64 = unsafe { ctx.read_at(path_off as usize) }.map_err(|_| 1u32)?;
    MKDIR_ARGS.insert(&tid(), &path, 0).map_err(|_| 1u32)?;
    Ok(0)
}

/// Whether the user string at `path` starts with the cgroupfs prefix.
fn in_cgroupfs(path: *const u8, want: usize) -> bool {
    let Some(buf) = PREFIX_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: buf is this CPU's 64-byte map value; the helper writes at most 64 bytes.
    let got = unsafe { bpf_probe_read_user_str(buf.cast(), 64, path.cast()) };
    if got <= 0 || ((got - 1) as usize) < want {
        return false;
    }
    // SAFETY: i < 64, the size of the scratch value.
    CGROUPFS_PREFIX.is_prefix_of(want, |i| unsafe { *(buf as *const u8).add(i) })
}

fn try_exit(ctx: &TracePointContext) -> Result<u32, u32> {
    let cfg = config().syscalls;
    let tid = tid();
    // SAFETY: a plain hash lookup; the value is copied out before removal.
    let path = unsafe { MKDIR_ARGS.get(&tid) }.copied();
    let _ = MKDIR_ARGS.remove(&tid);
    let path = path.ok_or(1u32)? as *const u8;
    // SAFETY: offset from the format file; read_at checks the address.
    let ret: i64 = unsafe { ctx.read_at(cfg.exit_ret_off as usize) }.map_err(|_| 1u32)?;
    report_failure(ctx, ret, path)
}

/// The exit hook alone: the path argument is read from the registers the syscall saved on entry
/// (`regs_off` into `struct pt_regs`), only when the mkdir failed.
fn try_exit_regs(ctx: &TracePointContext, regs_off: u32) -> Result<u32, u32> {
    let cfg = config().syscalls;
    // SAFETY: offset from the format file; read_at checks the address.
    let ret: i64 = unsafe { ctx.read_at(cfg.exit_ret_off as usize) }.map_err(|_| 1u32)?;
    if ret >= 0 {
        return Ok(0);
    }
    // SAFETY: both helpers take no pointer from us but the current task the first returns.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let path = read_field::<u64>(regs, regs_off).ok_or(1u32)? as *const u8;
    report_failure(ctx, ret, path)
}

/// Reports a failed mkdir (`ret` < 0) of the user path `path` when it is in cgroupfs.
fn report_failure(ctx: &TracePointContext, ret: i64, path: *const u8) -> Result<u32, u32> {
    let want = config().syscalls.cgroupfs_prefix_len as usize;
    if ret >= 0 || want == 0 || want > 64 || !in_cgroupfs(path, want) {
        return Ok(0);
    }
    let info = CgroupInfo {
        path,
        user_path: true,
        errno: (-ret) as i32,
        ..CgroupInfo::NONE
    };
    report(ctx, EventKind::MkdirFailed, &info)
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdir")]
pub fn sys_enter_mkdir(ctx: TracePointContext) -> u32 {
    try_enter(&ctx, config().syscalls.mkdir_path_off).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdirat")]
pub fn sys_enter_mkdirat(ctx: TracePointContext) -> u32 {
    try_enter(&ctx, config().syscalls.mkdirat_path_off).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdir")]
pub fn sys_exit_mkdir(ctx: TracePointContext) -> u32 {
    try_exit(&ctx).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdirat")]
pub fn sys_exit_mkdirat(ctx: TracePointContext) -> u32 {
    try_exit(&ctx).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdir")]
pub fn exit_mkdir_regs(ctx: TracePointContext) -> u32 {
    try_exit_regs(&ctx, config().syscalls.regs_mkdir_path).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdirat")]
pub fn exit_mkdirat_regs(ctx: TracePointContext) -> u32 {
    try_exit_regs(&ctx, config().syscalls.regs_mkdirat_path).unwrap_or_else(|e| e)
}

// The names the loader looks these up by.
bpf_name!(program cgtrace_common::names::program::SYS_ENTER_MKDIR, sys_enter_mkdir);
bpf_name!(program cgtrace_common::names::program::SYS_ENTER_MKDIRAT, sys_enter_mkdirat);
bpf_name!(program cgtrace_common::names::program::SYS_EXIT_MKDIR, sys_exit_mkdir);
bpf_name!(program cgtrace_common::names::program::SYS_EXIT_MKDIRAT, sys_exit_mkdirat);
bpf_name!(program cgtrace_common::names::program::EXIT_MKDIR_REGS, exit_mkdir_regs);
bpf_name!(program cgtrace_common::names::program::EXIT_MKDIRAT_REGS, exit_mkdirat_regs);
bpf_name!(static cgtrace_common::names::global::CGROUPFS_PREFIX, CGROUPFS_PREFIX);
