//! Failed mkdirs inside cgroup creation, with their caller and errno and no syscall hook: the
//! return of cgroupfs's `cgroup_mkdir(parent_kn, name, mode)` (the kernfs mkdir operation) on
//! the fentry/kprobe tiers. It sees the failures made once cgroupfs is asked (memcg IDs
//! exhausted, a css that cannot be allocated, EAGAIN from `cgroup.max.descendants`/`max.depth`,
//! ENODEV for a dying parent); the ones the VFS refuses first (EACCES, EPERM, EROFS, EEXIST)
//! never reach it. One cheap exit for every successful mkdir.
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_pid_tgid,
    macros::{fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use cgtrace_common::EventKind;

use crate::{
    cgroup_tp::report,
    event::{CgroupInfo, cgroup_ids, compose_child_path, config_ref, read_field},
};

const EEXIST: i32 = 17;

/// A failed `cgroup_mkdir()` (`ret` < 0) of `name` under the cgroupfs directory `parent_kn`.
fn try_failed<C: EbpfContext>(
    ctx: &C,
    parent_kn: *const u8,
    name: *const u8,
    ret: i32,
) -> Result<u32, u32> {
    // EEXIST is `mkdir -p` and Go's MkdirAll on every healthy start, not a failure.
    if ret >= 0 || ret == -EEXIST {
        return Ok(0);
    }
    let parent =
        read_field::<u64>(parent_kn, config_ref().offsets.kn_priv).ok_or(1u32)? as *const u8;
    report_failed_child(ctx, parent, Child::Kernel(name), -ret, 0)
}

/// The name of a child that could not be made: one component in kernel memory (cgroupfs's
/// argument), or the user's name, which may hold several (`a/b`, relative to a directory).
pub enum Child {
    Kernel(*const u8),
    User(*const u8),
}

/// Reports a failed mkdir of `child` below the cgroup `parent`, with its path composed below
/// the parent's; the filters judge the parent (the child never existed or is gone).
#[inline(always)]
pub fn report_failed_child<C: EbpfContext>(
    ctx: &C,
    parent: *const u8,
    child: Child,
    errno: i32,
    source: u32,
) -> Result<u32, u32> {
    let (name, user) = match child {
        Child::Kernel(n) => (n, false),
        Child::User(n) => (n, true),
    };
    let (hierarchy_id, _, level) = cgroup_ids(parent).ok_or(1u32)?;
    let (path, truncated) = compose_child_path(parent, name, user).ok_or(1u32)?;
    let info = CgroupInfo {
        hierarchy_id,
        level: level + 1,
        has_cgroup: true,
        path,
        cgrp: parent,
        errno,
        truncated,
        // A user's name may hold several components: the level comes from the path.
        level_from_path: user,
        source,
        ..CgroupInfo::NONE
    };
    report(ctx, EventKind::MkdirFailed, &info)
}

#[fexit(function = "cgroup_mkdir")]
pub fn fexit_cgroup_mkdir(ctx: FExitContext) -> i32 {
    // fexit arguments: the function's (parent_kn, name, mode), then its int return value.
    let parent: *const u8 = ctx.arg(0);
    let name: *const u8 = ctx.arg(1);
    let ret: u64 = ctx.arg(3);
    try_failed(&ctx, parent, name, ret as i32).map_or(0, |_| 0)
}

/// kprobe tier: the arguments of a `cgroup_mkdir()` in flight, per thread.
#[map]
static CGROUP_MKDIR_ARGS: HashMap<u32, [u64; 2]> = HashMap::with_max_entries(4096, 0);

#[kprobe]
pub fn kprobe_cgroup_mkdir_entry(ctx: ProbeContext) -> u32 {
    let parent: u64 = ctx.arg(0).unwrap_or(0);
    let name: u64 = ctx.arg(1).unwrap_or(0);
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = CGROUP_MKDIR_ARGS.insert(&tid, &[parent, name], 0);
    0
}

#[kretprobe]
pub fn kretprobe_cgroup_mkdir(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: a plain lookup; the value is copied before the entry is removed.
    let args = unsafe { CGROUP_MKDIR_ARGS.get(&tid) }.copied();
    let _ = CGROUP_MKDIR_ARGS.remove(&tid);
    let Some([parent, name]) = args else {
        return 0;
    };
    try_failed(&ctx, parent as *const u8, name as *const u8, ret as i32).map_or(0, |_| 0)
}

// The names the loader looks these up by.
bpf_name!(program cgtrace_common::names::program::FEXIT_CGROUP_MKDIR, fexit_cgroup_mkdir);
bpf_name!(program cgtrace_common::names::program::KPROBE_CGROUP_MKDIR_ENTRY, kprobe_cgroup_mkdir_entry);
bpf_name!(program cgtrace_common::names::program::KRETPROBE_CGROUP_MKDIR, kretprobe_cgroup_mkdir);
