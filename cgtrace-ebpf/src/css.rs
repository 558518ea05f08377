//! The memcg css lifecycle: `mem_cgroup_css_{alloc,online,offline,released,free}` through
//! fentry/fexit where the kernel allows BPF tracing programs, else kprobe/kretprobe. The loader
//! attaches one family or neither (tracepoints-only tier).
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use cgtrace_common::EventKind;

use crate::{
    cgroup_tp::report,
    event::{CgroupInfo, cgroup_ids, compose_path, config_ref, read_field, read_memcg},
};

/// The cgroup a css belongs to (`css->cgroup`), null when unknown.
#[inline(always)]
fn css_cgroup(css: *const u8) -> *const u8 {
    read_field::<u64>(css, config_ref().offsets.css_cgroup).unwrap_or(0) as *const u8
}

/// online/offline/released/free: the css is linked to its cgroup.
fn try_css<C: EbpfContext>(ctx: &C, css: *const u8, kind: EventKind) -> Result<u32, u32> {
    if css.is_null() {
        return Err(1);
    }
    let cgrp = css_cgroup(css);
    let (hierarchy_id, cgroup_id, level, has_cgroup) = match cgroup_ids(cgrp) {
        Some((h, id, l)) => (h, id, l, true),
        None => (0, 0, 0, false),
    };
    // From css_online on, the css is linked to its cgroup: compose the cgroup's path.
    let (path, truncated) = if has_cgroup {
        compose_path(cgrp).unwrap_or((core::ptr::null(), false))
    } else {
        (core::ptr::null(), false)
    };
    let info = CgroupInfo {
        hierarchy_id,
        cgroup_id,
        level,
        has_cgroup,
        path,
        cgrp,
        css: css as u64,
        memcg: read_memcg(css, true),
        truncated,
        ..CgroupInfo::NONE
    };
    report(ctx, kind, &info)
}

/// alloc: the new css is not linked to its cgroup yet; the parent's cgroup decides the filters.
fn try_css_alloc<C: EbpfContext>(ctx: &C, css: u64, parent_css: *const u8) -> Result<u32, u32> {
    // NULL or ERR_PTR(-errno): allocation failed, nothing was created.
    if css == 0 || css >= (-4095i64) as u64 {
        return Err(1);
    }
    let parent = css_cgroup(parent_css);
    let (hierarchy_id, level) = match cgroup_ids(parent) {
        Some((h, _, l)) => (h, l),
        None => (0, 0),
    };
    let info = CgroupInfo {
        hierarchy_id,
        level,
        cgrp: parent,
        css,
        ..CgroupInfo::NONE
    };
    report(ctx, EventKind::CssAlloc, &info)
}

#[fexit(function = "mem_cgroup_css_alloc")]
pub fn fexit_css_alloc(ctx: FExitContext) -> i32 {
    // fexit arguments: the function's arguments, then its return value.
    let parent: *const u8 = ctx.arg(0);
    let css: u64 = ctx.arg(1);
    try_css_alloc(&ctx, css, parent).map_or(0, |_| 0)
}

#[fentry(function = "mem_cgroup_css_online")]
pub fn fentry_css_online(ctx: FEntryContext) -> i32 {
    try_css(&ctx, ctx.arg(0), EventKind::CssOnline).map_or(0, |_| 0)
}

#[fentry(function = "mem_cgroup_css_offline")]
pub fn fentry_css_offline(ctx: FEntryContext) -> i32 {
    try_css(&ctx, ctx.arg(0), EventKind::CssOffline).map_or(0, |_| 0)
}

#[fentry(function = "mem_cgroup_css_released")]
pub fn fentry_css_released(ctx: FEntryContext) -> i32 {
    try_css(&ctx, ctx.arg(0), EventKind::CssReleased).map_or(0, |_| 0)
}

#[fentry(function = "mem_cgroup_css_free")]
pub fn fentry_css_free(ctx: FEntryContext) -> i32 {
    try_css(&ctx, ctx.arg(0), EventKind::CssFree).map_or(0, |_| 0)
}

/// kprobe tier: the parent css of an allocation in flight, per thread (a kretprobe only sees
/// the return value; the filters need the parent).
#[map]
static ALLOC_PARENT: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

#[kprobe]
pub fn kprobe_css_alloc_entry(ctx: ProbeContext) -> u32 {
    let parent: u64 = ctx.arg(0).unwrap_or(0);
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = ALLOC_PARENT.insert(&tid, &parent, 0);
    0
}

#[kretprobe]
pub fn kretprobe_css_alloc(ctx: RetProbeContext) -> u32 {
    let css: u64 = ctx.ret();
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: a plain lookup; the value is copied before the entry is removed.
    let parent = unsafe { ALLOC_PARENT.get(&tid) }.copied().unwrap_or(0);
    let _ = ALLOC_PARENT.remove(&tid);
    try_css_alloc(&ctx, css, parent as *const u8).map_or(0, |_| 0)
}

#[kprobe]
pub fn kprobe_css_online(ctx: ProbeContext) -> u32 {
    let css: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    try_css(&ctx, css, EventKind::CssOnline).map_or(0, |_| 0)
}

#[kprobe]
pub fn kprobe_css_offline(ctx: ProbeContext) -> u32 {
    let css: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    try_css(&ctx, css, EventKind::CssOffline).map_or(0, |_| 0)
}

#[kprobe]
pub fn kprobe_css_released(ctx: ProbeContext) -> u32 {
    let css: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    try_css(&ctx, css, EventKind::CssReleased).map_or(0, |_| 0)
}

#[kprobe]
pub fn kprobe_css_free(ctx: ProbeContext) -> u32 {
    let css: *const u8 = ctx.arg(0).unwrap_or(core::ptr::null());
    try_css(&ctx, css, EventKind::CssFree).map_or(0, |_| 0)
}

// The names the loader looks these up by.
bpf_name!(program cgtrace_common::names::program::FEXIT_CSS_ALLOC, fexit_css_alloc);
bpf_name!(program cgtrace_common::names::program::FENTRY_CSS_ONLINE, fentry_css_online);
bpf_name!(program cgtrace_common::names::program::FENTRY_CSS_OFFLINE, fentry_css_offline);
bpf_name!(program cgtrace_common::names::program::FENTRY_CSS_RELEASED, fentry_css_released);
bpf_name!(program cgtrace_common::names::program::FENTRY_CSS_FREE, fentry_css_free);
bpf_name!(program cgtrace_common::names::program::KPROBE_CSS_ALLOC_ENTRY, kprobe_css_alloc_entry);
bpf_name!(program cgtrace_common::names::program::KRETPROBE_CSS_ALLOC, kretprobe_css_alloc);
bpf_name!(program cgtrace_common::names::program::KPROBE_CSS_ONLINE, kprobe_css_online);
bpf_name!(program cgtrace_common::names::program::KPROBE_CSS_OFFLINE, kprobe_css_offline);
bpf_name!(program cgtrace_common::names::program::KPROBE_CSS_RELEASED, kprobe_css_released);
bpf_name!(program cgtrace_common::names::program::KPROBE_CSS_FREE, kprobe_css_free);
