//! The cgroup tracepoints `cgroup_mkdir`, `cgroup_rmdir`, `cgroup_release`: raw tracepoints (the
//! `struct cgroup *` and the path, no tracefs needed) and the classic tracepoints as fallback.
use aya_ebpf::{
    EbpfContext,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::debug;
use cgtrace_common::{EventKind, flags};

use crate::event::{
    CgroupInfo, Memcg, cgroup_hierarchy_and_id, cgroup_level, config_ref, emit, memory_css,
    never_activated, path_known, path_reported, paths_unreliable, read_memcg,
};

/// `TP_PROTO(struct cgroup *cgrp, const char *path)`.
///
/// At mkdir and rmdir the cgroup still points at its memcg (offline, which runs after rmdir,
/// clears it): read the memcg there, never at release. At mkdir only its ID: its page counters
/// are empty then, and every read costs.
fn try_raw(ctx: &RawTracePointContext, kind: EventKind) -> Result<u32, u32> {
    let cgrp: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let Some((hierarchy_id, cgroup_id)) = cgroup_hierarchy_and_id(cgrp) else {
        debug!(
            ctx,
            "cgtrace: failed to read struct cgroup fields for a {} event", kind as u8
        );
        return Err(1);
    };
    let cfg = config_ref();
    // A release of a cgroup whose mkdir failed after the cgroup was made (its memory css could
    // not be created: memcg IDs exhausted, an allocation failure): reported as that failure,
    // with no errno (the kernel keeps it nowhere) and no task (a kworker releases it).
    let half_made = kind == EventKind::Release && never_activated(cgrp);
    // The user side has the path of a cgroup whose mkdir it was told of: not copied again at
    // rmdir and release (the record's path is then empty, its level read here).
    let omit_path = !half_made
        && matches!(kind, EventKind::Rmdir | EventKind::Release)
        && path_known(cfg, hierarchy_id, cgroup_id);
    // The subtree filter compares levels before the path is read; otherwise the user side
    // counts the level from the path, and one kernel read is saved.
    let level_from_path = cfg.filter_subtree == 0 && !omit_path;
    let level = if level_from_path {
        0
    } else {
        cgroup_level(cgrp).ok_or(1u32)?
    };
    let kind = if half_made {
        EventKind::MkdirFailed
    } else {
        kind
    };
    let (css, memcg) = if kind == EventKind::Release || half_made {
        (core::ptr::null(), Memcg::default())
    } else {
        let css = memory_css(cgrp);
        (css, read_memcg(css, kind != EventKind::Mkdir))
    };
    let info = CgroupInfo {
        hierarchy_id,
        cgroup_id,
        level,
        has_cgroup: true,
        path: if omit_path { core::ptr::null() } else { path },
        cgrp,
        css: css as u64,
        memcg,
        level_from_path,
        no_task: half_made,
        ..CgroupInfo::NONE
    };
    let r = report(ctx, kind, &info);
    // A memcg's mkdir, reported with its path (a lost one made paths unreliable in `emit`).
    if kind == EventKind::Mkdir && !css.is_null() {
        path_reported(hierarchy_id, cgroup_id);
    }
    r
}

/// Classic tracepoint record; field places come from tracefs `format` files.
fn try_classic(ctx: &TracePointContext, kind: EventKind) -> Result<u32, u32> {
    let layout = &config_ref().tracepoint;
    // SAFETY: offsets come from the tracepoint's own format file; read_at uses
    // bpf_probe_read_kernel, which fails cleanly on a bad offset.
    let (root, level, id, loc) = unsafe {
        let root: i32 = ctx.read_at(layout.root_off as usize).map_err(|_| 1u32)?;
        let level: i32 = ctx.read_at(layout.level_off as usize).map_err(|_| 1u32)?;
        let id: u64 = if layout.id_size == 8 {
            ctx.read_at::<u64>(layout.id_off as usize)
                .map_err(|_| 1u32)?
        } else {
            ctx.read_at::<u32>(layout.id_off as usize)
                .map_err(|_| 1u32)? as u64
        };
        let loc: u32 = ctx.read_at(layout.path_off as usize).map_err(|_| 1u32)?;
        (root, level, id, loc)
    };
    // __data_loc: low 16 bits offset from the record start, high 16 bits length.
    let path = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
    let info = CgroupInfo {
        hierarchy_id: root as u32,
        cgroup_id: id,
        level: level as u32,
        has_cgroup: true,
        path,
        ..CgroupInfo::NONE
    };
    report(ctx, kind, &info)
}

#[inline(always)]
pub fn report<C: EbpfContext>(ctx: &C, kind: EventKind, info: &CgroupInfo) -> Result<u32, u32> {
    match emit(ctx, kind, info) {
        Ok(()) => Ok(0),
        Err(-1) => Err(1),
        Err(f) => {
            let f = f as u8;
            if f & flags::PATH_TRUNCATED != 0 {
                debug!(
                    ctx,
                    "cgtrace: path of cgroup {} (hierarchy {}) truncated",
                    info.cgroup_id,
                    info.hierarchy_id
                );
            }
            if f & flags::PATH_READ_FAILED != 0 {
                debug!(
                    ctx,
                    "cgtrace: failed to read the path of cgroup {}", info.cgroup_id
                );
            }
            Err(1)
        }
    }
}

#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn raw_cgroup_mkdir(ctx: RawTracePointContext) -> u32 {
    try_raw(&ctx, EventKind::Mkdir).unwrap_or_else(|e| e)
}

#[raw_tracepoint(tracepoint = "cgroup_rmdir")]
pub fn raw_cgroup_rmdir(ctx: RawTracePointContext) -> u32 {
    try_raw(&ctx, EventKind::Rmdir).unwrap_or_else(|e| e)
}

#[raw_tracepoint(tracepoint = "cgroup_release")]
pub fn raw_cgroup_release(ctx: RawTracePointContext) -> u32 {
    try_raw(&ctx, EventKind::Release).unwrap_or_else(|e| e)
}

/// `TP_PROTO(struct cgroup *cgrp, const char *path)`: a v1 cgroup renamed. Its path and its
/// descendants' changed, so the user side's may be stale: every path is read from now on.
#[raw_tracepoint(tracepoint = "cgroup_rename")]
pub fn raw_cgroup_rename(_ctx: RawTracePointContext) -> u32 {
    paths_unreliable();
    0
}

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn tp_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    try_classic(&ctx, EventKind::Mkdir).unwrap_or_else(|e| e)
}

#[tracepoint(category = "cgroup", name = "cgroup_rmdir")]
pub fn tp_cgroup_rmdir(ctx: TracePointContext) -> u32 {
    try_classic(&ctx, EventKind::Rmdir).unwrap_or_else(|e| e)
}

#[tracepoint(category = "cgroup", name = "cgroup_release")]
pub fn tp_cgroup_release(ctx: TracePointContext) -> u32 {
    try_classic(&ctx, EventKind::Release).unwrap_or_else(|e| e)
}

// The names the loader looks these up by.
bpf_name!(program cgtrace_common::names::program::RAW_CGROUP_MKDIR, raw_cgroup_mkdir);
bpf_name!(program cgtrace_common::names::program::RAW_CGROUP_RMDIR, raw_cgroup_rmdir);
bpf_name!(program cgtrace_common::names::program::RAW_CGROUP_RELEASE, raw_cgroup_release);
bpf_name!(program cgtrace_common::names::program::RAW_CGROUP_RENAME, raw_cgroup_rename);
bpf_name!(program cgtrace_common::names::program::TP_CGROUP_MKDIR, tp_cgroup_mkdir);
bpf_name!(program cgtrace_common::names::program::TP_CGROUP_RMDIR, tp_cgroup_rmdir);
bpf_name!(program cgtrace_common::names::program::TP_CGROUP_RELEASE, tp_cgroup_release);
