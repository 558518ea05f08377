//! Failed `mkdir`/`mkdirat` in cgroupfs — the error an operator starts from (`mkdir
//! /sys/fs/cgroup/memory/kubepods/...: no space left on device`) — through the syscall
//! tracepoints. Where the kernel has `bpf_task_pt_regs` (5.15+) and the loader knows the
//! architecture's registers, the exit hook alone does it: a mkdir that succeeded costs one read,
//! and a failed one's path comes from the task's saved user registers. Elsewhere the enter hook
//! remembers the path argument per thread for the exit hook. An absolute path is reported when it
//! starts with the cgroupfs mount prefix; a relative one (`mkdir -p` `chdir`s and passes a name)
//! when its starting directory — the working directory, or `mkdirat`'s directory fd — is in a
//! cgroupfs or cgroup2 superblock, with the path composed from that directory's cgroup.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user,
        generated::{
            bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_user_str,
            bpf_task_pt_regs,
        },
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use cgtrace_common::{EventKind, failure_source};

use crate::{
    cgroup_mkdir::{Child, report_failed_child},
    cgroup_tp::report,
    event::{CgroupInfo, LoadTimeBytes, config, config_ref, read_field},
};

/// `AT_FDCWD`: a relative path starts at the working directory.
const AT_FDCWD: i64 = -100;
const EEXIST: i64 = 17;
/// `CGROUP_SUPER_MAGIC` (v1) and `CGROUP2_SUPER_MAGIC` (include/uapi/linux/magic.h).
const CGROUP_SUPER_MAGIC: u64 = 0x27e0eb;
const CGROUP2_SUPER_MAGIC: u64 = 0x63677270;
/// The node type bits of `kernfs_node.flags` (`KERNFS_TYPE_MASK`).
const KERNFS_TYPE_MASK: u16 = 0x000f;

/// Thread id → (user pointer of the path being created, directory fd).
#[map]
static MKDIR_ARGS: HashMap<u32, [u64; 2]> = HashMap::with_max_entries(16384, 0);

#[map]
static PREFIX_SCRATCH: PerCpuArray<[u8; 64]> = PerCpuArray::with_max_entries(1, 0);

/// The cgroupfs mount prefix (e.g. `/sys/fs/cgroup/`), set by the loader.
#[unsafe(no_mangle)]
static CGROUPFS_PREFIX: LoadTimeBytes<64> = LoadTimeBytes::unset();

fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

fn try_enter(ctx: &TracePointContext, path_off: u32, dfd_off: Option<u32>) -> Result<u32, u32> {
    // SAFETY: the offset comes from the tracepoint's format file; read_at checks the address.
    let path: u64 = unsafe { ctx.read_at(path_off as usize) }.map_err(|_| 1u32)?;
    let dfd = match dfd_off {
        // SAFETY: as above (the int field is 8 bytes wide in the record: its low 32 bits).
        Some(off) => {
            i64::from(unsafe { ctx.read_at::<u64>(off as usize) }.map_err(|_| 1u32)? as i32)
        }
        None => AT_FDCWD,
    };
    MKDIR_ARGS
        .insert(&tid(), &[path, dfd as u64], 0)
        .map_err(|_| 1u32)?;
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
    let args = unsafe { MKDIR_ARGS.get(&tid) }.copied();
    let _ = MKDIR_ARGS.remove(&tid);
    let [path, dfd] = args.ok_or(1u32)?;
    // SAFETY: offset from the format file; read_at checks the address.
    let ret: i64 = unsafe { ctx.read_at(cfg.exit_ret_off as usize) }.map_err(|_| 1u32)?;
    report_failure(ctx, ret, path as *const u8, dfd as i64)
}

/// The exit hook alone: the path argument (and `mkdirat`'s directory fd) are read from the
/// registers the syscall saved on entry (offsets into `struct pt_regs`), only when the mkdir
/// failed.
fn try_exit_regs(ctx: &TracePointContext, regs_off: u32, dfd_off: Option<u32>) -> Result<u32, u32> {
    let cfg = config().syscalls;
    // SAFETY: offset from the format file; read_at checks the address.
    let ret: i64 = unsafe { ctx.read_at(cfg.exit_ret_off as usize) }.map_err(|_| 1u32)?;
    if ret >= 0 || ret == -EEXIST {
        return Ok(0);
    }
    // SAFETY: both helpers take no pointer from us but the current task the first returns.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let path = read_field::<u64>(regs, regs_off).ok_or(1u32)? as *const u8;
    let dfd = match dfd_off {
        // The register holds the int argument sign-extended or not: compare its low 32 bits.
        Some(off) => i64::from(read_field::<u64>(regs, off).ok_or(1u32)? as i32),
        None => AT_FDCWD,
    };
    report_failure(ctx, ret, path, dfd)
}

/// The dentry a relative path starts from: the working directory, or the directory fd's.
#[inline(always)]
fn start_dentry(dfd: i64) -> Option<u64> {
    let l = &config_ref().syscalls.start;
    // SAFETY: a helper call without arguments; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if dfd == AT_FDCWD {
        let fs = read_field::<u64>(task, l.task_fs)?;
        return read_field::<u64>(fs as *const u8, l.fs_pwd_dentry);
    }
    if !(0..=i64::from(i32::MAX)).contains(&dfd) {
        return None;
    }
    let files = read_field::<u64>(task, l.task_files)?;
    let fdt = read_field::<u64>(files as *const u8, l.files_fdt)? as *const u8;
    let max = read_field::<u32>(fdt, l.fdt_max_fds)?;
    if dfd as u64 >= u64::from(max) {
        return None;
    }
    let fds = read_field::<u64>(fdt, l.fdt_fd)?;
    let file = read_field::<u64>((fds + dfd as u64 * 8) as *const u8, 0)?;
    read_field::<u64>(file as *const u8, l.file_dentry)
}

/// The `struct cgroup *` of a relative path's starting directory, when it is a cgroup directory
/// in a cgroupfs or cgroup2 superblock: its kernfs node is the inode's `i_private`
/// (`kernfs_dentry_node()`), a directory's node's `priv` its cgroup.
#[inline(always)]
fn start_cgroup(dfd: i64) -> Option<*const u8> {
    let l = &config_ref().syscalls.start;
    if l.known == 0 {
        return None;
    }
    let dentry = start_dentry(dfd)? as *const u8;
    let sb = read_field::<u64>(dentry, l.dentry_sb)? as *const u8;
    let magic = read_field::<u64>(sb, l.sb_magic)?;
    if magic != CGROUP_SUPER_MAGIC && magic != CGROUP2_SUPER_MAGIC {
        return None;
    }
    let inode = read_field::<u64>(dentry, l.dentry_inode)? as *const u8;
    let kn = read_field::<u64>(inode, l.inode_private)? as *const u8;
    let flags = read_field::<u16>(kn, config_ref().offsets.kn_flags)?;
    if u32::from(flags & KERNFS_TYPE_MASK) != l.kn_dir {
        return None;
    }
    let cgrp = read_field::<u64>(kn, config_ref().offsets.kn_priv)?;
    (cgrp != 0).then_some(cgrp as *const u8)
}

/// Reports a failed mkdir (`ret` < 0, not EEXIST) of the user path `path` (relative ones from
/// `dfd`) when it is in cgroupfs.
fn report_failure(
    ctx: &TracePointContext,
    ret: i64,
    path: *const u8,
    dfd: i64,
) -> Result<u32, u32> {
    if ret >= 0 || ret == -EEXIST {
        return Ok(0);
    }
    // SAFETY: reads one byte of user memory; the helper checks the address.
    let first: u8 = unsafe { bpf_probe_read_user(path) }.map_err(|_| 1u32)?;
    if first != b'/' {
        return report_relative(ctx, ret, path, dfd);
    }
    let want = config().syscalls.cgroupfs_prefix_len as usize;
    if want == 0 || want > 64 || !in_cgroupfs(path, want) {
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

/// A relative path whose starting directory is a cgroup: the path composed below it, in its
/// hierarchy.
fn report_relative(
    ctx: &TracePointContext,
    ret: i64,
    name: *const u8,
    dfd: i64,
) -> Result<u32, u32> {
    let Some(parent) = start_cgroup(dfd) else {
        return Ok(0);
    };
    report_failed_child(
        ctx,
        parent,
        Child::User(name),
        (-ret) as i32,
        failure_source::SYSCALL_RESOLVED,
    )
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdir")]
pub fn sys_enter_mkdir(ctx: TracePointContext) -> u32 {
    try_enter(&ctx, config().syscalls.mkdir_path_off, None).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_enter_mkdirat")]
pub fn sys_enter_mkdirat(ctx: TracePointContext) -> u32 {
    let cfg = config().syscalls;
    try_enter(&ctx, cfg.mkdirat_path_off, Some(cfg.mkdirat_dfd_off)).unwrap_or_else(|e| e)
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
    try_exit_regs(&ctx, config().syscalls.regs_mkdir_path, None).unwrap_or_else(|e| e)
}

#[tracepoint(category = "syscalls", name = "sys_exit_mkdirat")]
pub fn exit_mkdirat_regs(ctx: TracePointContext) -> u32 {
    let cfg = config().syscalls;
    try_exit_regs(&ctx, cfg.regs_mkdirat_path, Some(cfg.regs_mkdirat_dfd)).unwrap_or_else(|e| e)
}

// The names the loader looks these up by.
bpf_name!(program cgtrace_common::names::program::SYS_ENTER_MKDIR, sys_enter_mkdir);
bpf_name!(program cgtrace_common::names::program::SYS_ENTER_MKDIRAT, sys_enter_mkdirat);
bpf_name!(program cgtrace_common::names::program::SYS_EXIT_MKDIR, sys_exit_mkdir);
bpf_name!(program cgtrace_common::names::program::SYS_EXIT_MKDIRAT, sys_exit_mkdirat);
bpf_name!(program cgtrace_common::names::program::EXIT_MKDIR_REGS, exit_mkdir_regs);
bpf_name!(program cgtrace_common::names::program::EXIT_MKDIRAT_REGS, exit_mkdirat_regs);
bpf_name!(static cgtrace_common::names::global::CGROUPFS_PREFIX, CGROUPFS_PREFIX);
