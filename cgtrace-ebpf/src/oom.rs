//! OOM kills. The raw tracepoint `oom:mark_victim` fires on every tier when the OOM killer marks
//! a victim: its first argument is the victim's `struct task_struct *` on newer and backported
//! builds, its pid before (the loader tells which from BTF or tracefs). The record holds the
//! victim (pids, comm, `oom_score_adj`, mm counters), its memcg (path, counters, limit), the task
//! whose allocation ran into the OOM, and the constraint with the memcg at its limit:
//! - on the css tiers `out_of_memory()` is hooked too, and its `struct oom_control` (kept per
//!   thread while it runs) gives constraint and memcg as the kernel has them; a hook on
//!   `__oom_kill_process()` says whether the kernel counted the kill;
//! - on the tracepoint tier they are derived: the nearest memcg of the victim, also an ancestor
//!   of the allocating task's memcg, whose usage is within `margin_pages` of its limit; none →
//!   node-wide.
//!
//! Two stages, so that the verifier checks each on its own: `raw_oom_mark_victim` builds the
//! record in a per-CPU map value (every read branch-free: a failed read is 0), then tail-calls
//! `raw_oom_emit`, which composes the memcg's path, applies the filters and writes the record.
use core::ffi::c_void;

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        generated::{bpf_get_current_comm, bpf_probe_read_kernel, bpf_probe_read_kernel_str},
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::{HashMap, PerCpuArray, ProgramArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use cgtrace_common::{
    COMM_LEN, EventKind, KernelOffsets, OomLayout, OomRaw, OomRecord, PATH_CAP, RawEvent, flags,
    oom_constraint, oom_flags,
};

use crate::event::{
    CgroupInfo, compose_path, config_ref, count_lost, output_record, passes_filters, wake_flags,
};

/// `PF_EXITING` in `task_struct.flags`.
const PF_EXITING: u32 = 0x4;
/// Most memcg levels climbed from the victim's memcg.
const MAX_LEVELS: u32 = 16;
/// A page counter limit at or above this is no limit (`PAGE_COUNTER_MAX` is 2^51 pages).
const UNLIMITED: u64 = 1 << 50;

/// Set by the loader before load; read-only for the programs.
#[unsafe(no_mangle)]
static OOM_LAYOUT: Global<OomLayout> = Global::new(OomLayout::NONE);

/// The layout in place (see [`config_ref`]).
#[inline(always)]
fn layout() -> &'static OomLayout {
    let p = (&raw const OOM_LAYOUT).cast::<OomLayout>();
    // SAFETY: reading a local; the volatile read hides the static from the optimizer.
    let p = unsafe { core::ptr::read_volatile(&p) };
    // SAFETY: `p` points at the static, never written while programs run.
    unsafe { &*p }
}

/// The record being built, per CPU: the first stage fills it, the second (tail-called) adds the
/// path and writes it to the ring. Between the stages `event.css` holds the victim's `struct
/// cgroup *`.
#[map]
static OOM_SCRATCH: PerCpuArray<OomRecord> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: the second stage, `raw_oom_emit` (set by the loader).
#[map]
static OOM_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Thread → its `struct oom_control *` while `out_of_memory()` runs (css tiers).
#[map]
static OOM_CTX: HashMap<u32, u64> = HashMap::with_max_entries(1024, 0);

/// Thread → victim while `__oom_kill_process()` runs (css tiers).
#[map]
static OOM_KILLING: HashMap<u32, u64> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Reads a `T` at `base + off`, 0 when the read fails (the helper zeroes it) or the field is
/// unknown. No branch on the outcome: the verifier's states do not multiply in the loops.
#[inline(always)]
fn peek<T: Copy + Default>(base: u64, off: u32) -> T {
    let mut v = T::default();
    if off != KernelOffsets::UNKNOWN {
        // SAFETY: the helper copes with any source address and writes at most size_of::<T>()
        // bytes into `v`.
        unsafe {
            bpf_probe_read_kernel(
                (&raw mut v).cast(),
                size_of::<T>() as u32,
                base.wrapping_add(u64::from(off)) as *const c_void,
            );
        }
    }
    v
}

/// A task's memory controller css (`task->cgroups->subsys[memory_cgrp_id]`), 0 if unknown.
#[inline(always)]
fn task_memory_css(task: u64, off: &KernelOffsets) -> u64 {
    if off.memory_subsys_idx >= 64 || off.css_set_subsys == KernelOffsets::UNKNOWN {
        return 0;
    }
    let cset: u64 = peek(task, off.task_cgroups);
    peek(cset, off.css_set_subsys + 8 * off.memory_subsys_idx)
}

/// Whether the cgroup `cg` (at `level`) is `of` or one of its ancestors (`of` 0: yes).
#[inline(always)]
fn is_ancestor(cg: u64, level: u32, of: u64, off: &KernelOffsets) -> bool {
    if of == 0 {
        return true;
    }
    let of_level = peek::<i32>(of, off.cgroup_level) as u32;
    if of_level < level || level >= 64 || off.cgroup_ancestors == KernelOffsets::UNKNOWN {
        return false;
    }
    let slot = off.cgroup_ancestors + 8 * level;
    let anc: u64 = peek(of, slot);
    if off.ancestors_are_ptrs == 1 {
        anc == cg
    } else {
        let kn: u64 = peek(cg, off.cgroup_kn);
        anc == peek::<u64>(kn, off.kn_id)
    }
}

/// Writes the memcg of `css` into the record's limit, with its counter (memory, or memsw
/// when `memsw`).
#[inline(always)]
fn set_limit(o: &mut OomRaw, css: u64, memsw: bool, usage: u64, max: u64, off: &KernelOffsets) {
    let cg: u64 = peek(css, off.css_cgroup);
    let kn: u64 = peek(cg, off.cgroup_kn);
    o.limit_cgroup_id = peek(kn, off.kn_id);
    o.limit_level = peek::<i32>(cg, off.cgroup_level) as u32;
    o.limit_usage = usage;
    o.limit_max = max;
    o.flags |= oom_flags::LIMIT;
    if memsw {
        o.flags |= oom_flags::LIMIT_MEMSW;
    }
}

/// The first stage: the victim, its memcg, constraint and limit, into the per-CPU record.
fn try_mark_victim(ctx: &RawTracePointContext) -> Result<u32, u32> {
    let cfg = config_ref();
    let (off, ol) = (&cfg.offsets, layout());
    let Some(rec) = OOM_SCRATCH.get_ptr_mut(0) else {
        return Err(1);
    };
    // SAFETY: this CPU's map value; only this program and its tail call write it, and they
    // do not run preempted.
    let (ev, o) = unsafe { (&mut (*rec).event, &mut (*rec).oom) };
    // SAFETY: a helper call without arguments; the pointer is only read through probe reads.
    let current = unsafe { bpf_get_current_task() } as u64;
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = victim_task(ctx, ev, o, ol, current, pid_tgid);
    mm_counters(o, task, ol);
    let vcss = victim_memcg(ev, o, task, off, ol);
    // Constraint and limit: from the OOM killer's context, or derived.
    o.limit_cgroup_id = 0;
    o.limit_level = 0;
    o.limit_usage = 0;
    o.limit_max = 0;
    o.totalpages = 0;
    o.constraint = oom_constraint::UNKNOWN;
    let tid = pid_tgid as u32;
    let v1 = ev.hierarchy_id != 0;
    // SAFETY: plain lookups; the values are copied out.
    let oc = unsafe { OOM_CTX.get(&tid) }.copied().unwrap_or(0);
    if oc != 0 {
        o.flags |= oom_flags::CONTEXT;
        // SAFETY: as above.
        if unsafe { OOM_KILLING.get(&tid) }.is_some() {
            o.flags |= oom_flags::IN_KILL;
        }
        limit_from_context(o, oc, v1, off, ol);
    } else {
        let cur_css = task_memory_css(current, off);
        limit_derived(
            o,
            if vcss != 0 { vcss } else { cur_css },
            cur_css,
            v1,
            off,
            ol,
        );
    }
    ev.kind = EventKind::OomKill as u8;
    ev.errno = 0;
    ev.source = 0;
    ev.path_len = 0;
    ev.path[0] = 0;
    // SAFETY: a helper call without arguments.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    o._pad = [0; 3];
    // SAFETY: a tail call into the second stage; on return it failed.
    unsafe { OOM_PROGS.tail_call(ctx, 0) };
    // No second stage: the record goes without a path.
    ev.css = 0;
    ev.flags |= flags::PATH_READ_FAILED;
    // SAFETY: the map value is a whole, initialised record (`ev` and `o` are done with).
    let r = unsafe { &*rec };
    if !output_record(ctx, r, 0) {
        count_lost(EventKind::OomKill);
    }
    Ok(0)
}

/// The task that triggered the OOM kill (the current one) and the victim's task: the argument,
/// or (pid form) the current task when it is the victim. Returns the victim's task (0: not
/// known).
#[inline(always)]
fn victim_task(
    ctx: &RawTracePointContext,
    ev: &mut RawEvent,
    o: &mut OomRaw,
    ol: &OomLayout,
    current: u64,
    pid_tgid: u64,
) -> u64 {
    let arg0: u64 = ctx.arg(0);
    o.flags = oom_flags::TRIGGER;
    o.trigger_tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the helper writes at most COMM_LEN bytes into the array.
    unsafe { bpf_get_current_comm(o.trigger_comm.as_mut_ptr().cast(), COMM_LEN as u32) };
    let task = if ol.victim_is_task == 1 {
        o.uid = ctx.arg::<u64>(1) as u32;
        o.flags |= oom_flags::UID;
        arg0
    } else {
        o.flags |= oom_flags::PID_ONLY;
        o.uid = 0;
        if peek::<i32>(current, ol.task_pid) == arg0 as i32 {
            current
        } else {
            0
        }
    };
    let tgid = peek::<i32>(task, ol.task_tgid) as u32;
    let tpid = peek::<i32>(task, ol.task_pid) as u32;
    ev.tgid = if tgid != 0 { tgid } else { arg0 as u32 };
    ev.tid = if tpid != 0 { tpid } else { arg0 as u32 };
    ev.comm = [0; COMM_LEN];
    o.oom_score_adj = 0;
    if tgid != 0 {
        o.flags |= oom_flags::TASK | oom_flags::ADJ;
        let signal: u64 = peek(task, ol.task_signal);
        o.oom_score_adj = i32::from(peek::<i16>(signal, ol.signal_oom_score_adj));
        if peek::<u32>(task, ol.task_flags) & PF_EXITING != 0 {
            o.flags |= oom_flags::EXITING;
        }
        if ol.task_comm != KernelOffsets::UNKNOWN {
            // SAFETY: the helper writes at most COMM_LEN bytes into the array.
            unsafe {
                bpf_probe_read_kernel_str(
                    ev.comm.as_mut_ptr().cast(),
                    COMM_LEN as u32,
                    task.wrapping_add(u64::from(ol.task_comm)) as *const c_void,
                );
            }
        }
    }
    task
}

/// The victim's mm counters.
#[inline(always)]
fn mm_counters(o: &mut OomRaw, task: u64, ol: &OomLayout) {
    let mm: u64 = peek(task, ol.task_mm);
    let rss = |idx: u32| -> u64 {
        if idx >= 8 || ol.mm_rss_stat == KernelOffsets::UNKNOWN {
            return 0;
        }
        peek::<i64>(mm, ol.mm_rss_stat + idx * ol.rss_stride + ol.rss_value).max(0) as u64
    };
    o.total_vm = peek(mm, ol.mm_total_vm);
    o.rss_anon = rss(ol.mm_anon);
    o.rss_file = rss(ol.mm_file);
    o.rss_shmem = rss(ol.mm_shmem);
    o.swapents = rss(ol.mm_swapents);
    o.pgtables_bytes = peek::<i64>(mm, ol.mm_pgtables).max(0) as u64;
    if mm != 0 {
        o.flags |= oom_flags::RSS;
    }
}

/// The victim's memcg: its cgroup's fields and its counters into the event, its limit into
/// `o`. Returns its memory css (0: not known).
#[inline(always)]
fn victim_memcg(
    ev: &mut RawEvent,
    o: &mut OomRaw,
    task: u64,
    off: &KernelOffsets,
    ol: &OomLayout,
) -> u64 {
    let vcss = task_memory_css(task, off);
    let vcg: u64 = peek(vcss, off.css_cgroup);
    let root: u64 = peek(vcg, off.cgroup_root);
    let kn: u64 = peek(vcg, off.cgroup_kn);
    ev.hierarchy_id = peek::<i32>(root, off.root_hierarchy_id) as u32;
    ev.cgroup_id = peek(kn, off.kn_id);
    ev.level = peek::<i32>(vcg, off.cgroup_level) as u32;
    ev.css = vcg;
    let memcg = vcss.wrapping_sub(u64::from(off.memcg_css));
    ev.memcg_id = peek::<i32>(memcg, off.memcg_id) as u32;
    ev.memory_pages = peek(memcg, off.memcg_memory);
    ev.kmem_pages = peek(memcg, off.memcg_kmem);
    ev.memsw_pages = peek(memcg, off.memcg_memsw);
    ev.flags = 0;
    if ev.cgroup_id != 0 && vcss != 0 {
        ev.flags = flags::HAS_CGROUP | flags::HAS_MEMCG_ID | flags::HAS_MEMORY;
        if off.memcg_kmem != KernelOffsets::UNKNOWN {
            ev.flags |= flags::HAS_KMEM;
        }
        if off.memcg_memsw != KernelOffsets::UNKNOWN {
            ev.flags |= flags::HAS_MEMSW;
        }
    }
    o.victim_max = peek(memcg, ol.memcg_memory_max);
    if vcss != 0 && o.victim_max < UNLIMITED {
        o.flags |= oom_flags::VICTIM_MAX;
    }
    vcss
}

/// Constraint and limit from the OOM killer's `struct oom_control` (`oc`).
#[inline(always)]
fn limit_from_context(o: &mut OomRaw, oc: u64, v1: bool, off: &KernelOffsets, ol: &OomLayout) {
    let margin = u64::from(ol.margin_pages);
    o.totalpages = peek(oc, ol.oc_totalpages);
    if ol.oc_totalpages != KernelOffsets::UNKNOWN {
        o.flags |= oom_flags::TOTALPAGES;
    }
    let oc_memcg: u64 = peek(oc, ol.oc_memcg);
    if oc_memcg == 0 {
        o.constraint = constraint_of(peek::<u32>(oc, ol.oc_constraint), ol);
        return;
    }
    // A memcg OOM (also before `constraint_type()` ran: an exiting task's shortcut).
    o.constraint = oom_constraint::MEMCG;
    let usage: u64 = peek(oc_memcg, off.memcg_memory);
    let max: u64 = peek(oc_memcg, ol.memcg_memory_max);
    let sw_usage: u64 = peek(oc_memcg, off.memcg_memsw);
    let sw_max: u64 = peek(oc_memcg, ol.memcg_memsw_max);
    let css = oc_memcg.wrapping_add(u64::from(off.memcg_css));
    if v1
        && sw_max < UNLIMITED
        && sw_usage.saturating_add(margin) >= sw_max
        && !(max < UNLIMITED && usage.saturating_add(margin) >= max)
    {
        set_limit(o, css, true, sw_usage, sw_max, off);
    } else {
        set_limit(o, css, false, usage, max, off);
    }
}

/// Without the OOM killer's context: the nearest memcg from `css` up at its limit (memory, or
/// on v1 memory+swap) that is an ancestor of the current task's (`cur_css`), else a node-wide
/// OOM.
#[inline(always)]
fn limit_derived(
    o: &mut OomRaw,
    mut css: u64,
    cur_css: u64,
    v1: bool,
    off: &KernelOffsets,
    ol: &OomLayout,
) {
    let margin = u64::from(ol.margin_pages);
    o.flags |= oom_flags::DERIVED;
    o.constraint = oom_constraint::NONE;
    let cur_cg: u64 = peek(cur_css, off.css_cgroup);
    let mut i = 0;
    while i < MAX_LEVELS && css != 0 {
        let memcg = css.wrapping_sub(u64::from(off.memcg_css));
        let usage: u64 = peek(memcg, off.memcg_memory);
        let max: u64 = peek(memcg, ol.memcg_memory_max);
        let sw_usage: u64 = peek(memcg, off.memcg_memsw);
        let sw_max: u64 = peek(memcg, ol.memcg_memsw_max);
        let hit = max < UNLIMITED && usage.saturating_add(margin) >= max;
        let sw_hit = v1 && sw_max < UNLIMITED && sw_usage.saturating_add(margin) >= sw_max;
        if hit || sw_hit {
            let cg: u64 = peek(css, off.css_cgroup);
            let level = peek::<i32>(cg, off.cgroup_level) as u32;
            if is_ancestor(cg, level, cur_cg, off) {
                o.constraint = oom_constraint::MEMCG;
                if hit {
                    set_limit(o, css, false, usage, max, off);
                } else {
                    set_limit(o, css, true, sw_usage, sw_max, off);
                }
                return;
            }
        }
        css = peek(css, off.css_parent);
        i += 1;
    }
}

/// The second stage: the victim memcg's path, the filters, then the record to the ring.
fn try_emit(ctx: &RawTracePointContext) -> Result<u32, u32> {
    let cfg = config_ref();
    let Some(rec) = OOM_SCRATCH.get_ptr_mut(0) else {
        return Err(1);
    };
    // SAFETY: this CPU's map value, filled by the first stage just before.
    let ev = unsafe { &mut (*rec).event };
    let cgrp = ev.css as *const u8;
    ev.css = 0;
    if ev.flags & flags::HAS_CGROUP != 0 {
        let (path, truncated) = compose_path(cgrp).unwrap_or((core::ptr::null(), false));
        let info = CgroupInfo {
            hierarchy_id: ev.hierarchy_id,
            cgroup_id: ev.cgroup_id,
            level: ev.level,
            has_cgroup: true,
            path,
            cgrp,
            truncated,
            ..CgroupInfo::NONE
        };
        if !passes_filters(cfg, EventKind::OomKill, &info) {
            return Ok(0);
        }
        if path.is_null() {
            ev.flags |= flags::PATH_READ_FAILED;
        } else {
            // SAFETY: the helper writes at most PATH_CAP bytes into the record's path.
            let n = unsafe {
                bpf_probe_read_kernel_str(ev.path.as_mut_ptr().cast(), PATH_CAP as u32, path.cast())
            };
            if n > 0 {
                ev.path_len = (n - 1) as u16;
            } else {
                ev.flags |= flags::PATH_READ_FAILED;
            }
            if truncated {
                ev.flags |= flags::PATH_TRUNCATED;
            }
        }
    }
    // SAFETY: the map value is a whole, initialised record (`ev` is done with).
    let r = unsafe { &*rec };
    if !output_record(ctx, r, wake_flags(cfg)) {
        count_lost(EventKind::OomKill);
        return Err(1);
    }
    Ok(0)
}

/// The kernel's `enum oom_constraint` value as ours.
#[inline(always)]
fn constraint_of(v: u32, ol: &OomLayout) -> u8 {
    if v == ol.constraint_none {
        oom_constraint::NONE
    } else if v == ol.constraint_cpuset {
        oom_constraint::CPUSET
    } else if v == ol.constraint_policy {
        oom_constraint::MEMORY_POLICY
    } else if v == ol.constraint_memcg {
        oom_constraint::MEMCG
    } else {
        oom_constraint::UNKNOWN
    }
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn raw_oom_mark_victim(ctx: RawTracePointContext) -> u32 {
    try_mark_victim(&ctx).unwrap_or_else(|e| e)
}

/// Tail-called by [`raw_oom_mark_victim`]; never attached.
#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn raw_oom_emit(ctx: RawTracePointContext) -> u32 {
    try_emit(&ctx).unwrap_or_else(|e| e)
}

/// `out_of_memory(struct oom_control *oc)` began on this thread.
#[inline(always)]
fn enter(map: &HashMap<u32, u64>, value: u64) {
    let _ = map.insert(&tid(), &value, 0);
}

#[inline(always)]
fn leave(map: &HashMap<u32, u64>) {
    let _ = map.remove(&tid());
}

#[fentry(function = "out_of_memory")]
pub fn fentry_out_of_memory(ctx: FEntryContext) -> i32 {
    enter(&OOM_CTX, ctx.arg(0));
    0
}

#[fexit(function = "out_of_memory")]
pub fn fexit_out_of_memory(_ctx: FExitContext) -> i32 {
    leave(&OOM_CTX);
    0
}

#[fentry(function = "__oom_kill_process")]
pub fn fentry_oom_kill(ctx: FEntryContext) -> i32 {
    enter(&OOM_KILLING, ctx.arg(0));
    0
}

#[fexit(function = "__oom_kill_process")]
pub fn fexit_oom_kill(_ctx: FExitContext) -> i32 {
    leave(&OOM_KILLING);
    0
}

#[kprobe]
pub fn kprobe_out_of_memory(ctx: ProbeContext) -> u32 {
    enter(&OOM_CTX, ctx.arg(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn kretprobe_out_of_memory(_ctx: RetProbeContext) -> u32 {
    leave(&OOM_CTX);
    0
}

#[kprobe]
pub fn kprobe_oom_kill(ctx: ProbeContext) -> u32 {
    enter(&OOM_KILLING, ctx.arg(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn kretprobe_oom_kill(_ctx: RetProbeContext) -> u32 {
    leave(&OOM_KILLING);
    0
}

// The names the loader looks these up by.
bpf_name!(program cgtrace_common::names::program::RAW_OOM_MARK_VICTIM, raw_oom_mark_victim);
bpf_name!(program cgtrace_common::names::program::RAW_OOM_EMIT, raw_oom_emit);
bpf_name!(static cgtrace_common::names::global::OOM_LAYOUT, OOM_LAYOUT);
bpf_name!(static cgtrace_common::names::map::OOM_PROGS, OOM_PROGS);
bpf_name!(program cgtrace_common::names::program::FENTRY_OUT_OF_MEMORY, fentry_out_of_memory);
bpf_name!(program cgtrace_common::names::program::FEXIT_OUT_OF_MEMORY, fexit_out_of_memory);
bpf_name!(program cgtrace_common::names::program::FENTRY_OOM_KILL, fentry_oom_kill);
bpf_name!(program cgtrace_common::names::program::FEXIT_OOM_KILL, fexit_oom_kill);
bpf_name!(program cgtrace_common::names::program::KPROBE_OUT_OF_MEMORY, kprobe_out_of_memory);
bpf_name!(program cgtrace_common::names::program::KRETPROBE_OUT_OF_MEMORY, kretprobe_out_of_memory);
bpf_name!(program cgtrace_common::names::program::KPROBE_OOM_KILL, kprobe_oom_kill);
bpf_name!(program cgtrace_common::names::program::KRETPROBE_OOM_KILL, kretprobe_oom_kill);
