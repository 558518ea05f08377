//! Naming the memcgs that were already dying when cgtrace started. Removed cgroups stay on their
//! parent's list of children until they are released, so a pre-order walk of the memory
//! controller's css tree finds every one of them. The walk runs in bounded chunks and resumes
//! from a cursor kept in a map until it is done. Each chunk is one run of the program, either
//! - run directly by cgtrace with `BPF_PROG_TEST_RUN` (5.10+), in cgtrace's own task and with
//!   zeroed arguments (a null cgroup: no real `cgroup_mkdir` has one): the walk starts from the
//!   root of cgtrace's own memcg's ancestry, and needs no cgroup of cgtrace's own; or
//! - as the fallback, on the raw tracepoint of mkdirs that cgtrace itself makes
//!   (`cgtrace-walk-*` at the hierarchy root).

use aya_ebpf::{
    helpers::bpf_get_current_task,
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};
use cgtrace_common::{EventKind, KernelOffsets, WalkState};

use crate::{
    cgroup_tp::report,
    event::{CgroupInfo, LoadTimeBytes, cgroup_ids, config, memory_css, read_field, read_memcg},
};

/// `CSS_ONLINE` and `CSS_DYING` in `cgroup_subsys_state.flags` (include/linux/cgroup-defs.h).
/// `CSS_DYING` is set by `kill_css()` in the rmdir itself (33c35aa48178, 4.17); `CSS_ONLINE` is
/// cleared later, by the offline work after an RCU grace period, which lags on a busy node.
const CSS_ONLINE: u32 = 1 << 1;
const CSS_DYING: u32 = 1 << 4;
/// Steps (one move in the tree each) per trigger. One flat loop, no nesting: the verifier's
/// work stays linear.
const STEPS_PER_RUN: u32 = 16;
/// Dying memcgs reported per trigger (reported after the walk loop, not inside it).
const FOUND_PER_RUN: usize = 1;
/// `WalkState::mode`: visit `cursor` and go down / go right or up from `cursor`.
const DOWN: u32 = 0;
const UP: u32 = 1;
/// Most levels climbed from cgtrace's own memcg to the root (cgroup trees are far shallower).
const MAX_DEPTH: u32 = 64;
/// Return values of a run by `BPF_PROG_TEST_RUN` (the only thing it hands back).
const RUN_MORE: u32 = 0;
const RUN_DONE: u32 = 2;
const RUN_FAILED: u32 = 1;

#[map]
static WALK: Array<WalkState> = Array::with_max_entries(1, 0);

/// Name prefix of the trigger cgroups, set by the loader (length in `Config::walk_name_len`).
#[unsafe(no_mangle)]
static WALK_NAME: LoadTimeBytes<32> = LoadTimeBytes::unset();

/// The address of a list head inside a css.
#[inline(always)]
fn at(css: u64, off: u32) -> u64 {
    css.wrapping_add(off as u64)
}

/// Whether the css's cgroup existed before the first trigger (cgroup ids only grow).
#[inline(always)]
fn made_before(css: u64, first_id: u64, off: &KernelOffsets) -> bool {
    let cgrp = read_field::<u64>(css as *const u8, off.css_cgroup).unwrap_or(0) as *const u8;
    let kn = read_field::<u64>(cgrp, off.cgroup_kn).unwrap_or(0) as *const u8;
    match read_field::<u64>(kn, off.kn_id) {
        Some(id) => first_id == 0 || id < first_id,
        None => false,
    }
}

/// Whether the new cgroup is one of our triggers: level 1, name starting with WALK_NAME.
#[inline(always)]
fn is_trigger(cgrp: *const u8, off: &KernelOffsets, name_len: u32) -> bool {
    if name_len == 0 || name_len > 32 {
        return false;
    }
    let kn = read_field::<u64>(cgrp, off.cgroup_kn).unwrap_or(0) as *const u8;
    let name = read_field::<u64>(kn, off.kn_name).unwrap_or(0) as *const u8;
    if name.is_null() {
        return false;
    }
    WALK_NAME.is_prefix_of(name_len as usize, |i| {
        read_field(name, i as u32).unwrap_or(0)
    })
}

/// The css at `pos` is dying: removed (its offline may still be queued) or offline.
#[inline(always)]
fn is_dying(pos: u64, off: &KernelOffsets) -> bool {
    let flags = read_field::<u32>(pos as *const u8, off.css_flags).unwrap_or(CSS_ONLINE);
    flags & CSS_ONLINE == 0 || flags & CSS_DYING != 0
}

/// Going down from the css at `pos`: to its first child, or back up when it has none.
#[inline(always)]
fn step_down(pos: u64, off: &KernelOffsets) -> (u64, u32) {
    let children = at(pos, off.css_children);
    let first = read_field::<u64>(children as *const u8, 0).unwrap_or(children);
    if first != children && first != 0 {
        (first.wrapping_sub(off.css_sibling as u64), DOWN)
    } else {
        (pos, UP)
    }
}

/// Going up from the css at `pos`: to its next sibling (then down), or to its parent; `None`
/// when the walk is back at `root` (or lost its way).
#[inline(always)]
fn step_up(pos: u64, root: u64, off: &KernelOffsets) -> Option<(u64, u32)> {
    if pos == root || pos == 0 {
        return None;
    }
    let sib = read_field::<u64>(at(pos, off.css_sibling) as *const u8, 0).unwrap_or(0);
    let parent = read_field::<u64>(pos as *const u8, off.css_parent).unwrap_or(0);
    if parent == 0 {
        return None;
    }
    if sib != at(parent, off.css_children) && sib != 0 {
        Some((sib.wrapping_sub(off.css_sibling as u64), DOWN))
    } else {
        Some((parent, UP))
    }
}

/// The root of the memory controller's css tree, climbed to from cgtrace's own task's memcg
/// (`current->cgroups->subsys[memory_cgrp_id]`).
#[inline(always)]
fn root_from_current(off: &KernelOffsets) -> u64 {
    if off.memory_subsys_idx >= 64 || off.css_set_subsys == KernelOffsets::UNKNOWN {
        return 0;
    }
    // SAFETY: a helper call without arguments; the pointer is only read through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let cset = read_field::<u64>(task, off.task_cgroups).unwrap_or(0) as *const u8;
    let mut css =
        read_field::<u64>(cset, off.css_set_subsys + 8 * off.memory_subsys_idx).unwrap_or(0);
    let mut n = 0;
    while n < MAX_DEPTH && css != 0 {
        let parent = read_field::<u64>(css as *const u8, off.css_parent).unwrap_or(0);
        if parent == 0 {
            return css;
        }
        css = parent;
        n += 1;
    }
    0
}

/// The root of the walk (the memory controller's css root); at the first run, the walk's state
/// set to start there.
#[inline(always)]
fn walk_root(
    cgrp: *const u8,
    test_run: bool,
    st: &mut WalkState,
    off: &KernelOffsets,
) -> Result<u64, u32> {
    let root = if test_run {
        root_from_current(off)
    } else {
        let mine = memory_css(cgrp) as u64;
        if mine == 0 {
            return Err(RUN_FAILED);
        }
        read_field::<u64>(mine as *const u8, off.css_parent).unwrap_or(0)
    };
    if root == 0 {
        return Err(RUN_FAILED);
    }
    if st.cursor == 0 {
        st.cursor = root;
        st.mode = DOWN;
        st.started = 1;
        // Our own triggers die too: the memcgs made from the first one on are left out. Test
        // runs make no cgroup, so the walk sees every dying memcg, those made after start too
        // (user space drops what its events already told).
        st.first_id = if test_run {
            0
        } else {
            cgroup_ids(cgrp).map(|(_, id, _)| id).unwrap_or(0)
        };
    }
    Ok(root)
}

/// Up to [`STEPS_PER_RUN`] moves of the pre-order walk from the state's cursor, stopping at the
/// first dying memcg found (put in `found`): how many were found.
#[inline(always)]
fn walk_steps(
    st: &mut WalkState,
    root: u64,
    off: &KernelOffsets,
    found: &mut [u64; FOUND_PER_RUN],
) -> usize {
    let first_id = st.first_id;
    let mut pos = st.cursor;
    let mut mode = st.mode;
    let mut nfound = 0usize;
    let mut n = 0;
    while n < STEPS_PER_RUN && nfound < FOUND_PER_RUN {
        n += 1;
        if mode == DOWN {
            if pos != root {
                // Dying, and made before the walk began.
                if is_dying(pos, off) && made_before(pos, first_id, off) {
                    found[nfound & (FOUND_PER_RUN - 1)] = pos;
                    nfound += 1;
                }
                st.visited += 1;
            }
            (pos, mode) = step_down(pos, off);
        } else {
            match step_up(pos, root, off) {
                Some(next) => (pos, mode) = next,
                None => {
                    st.done = 1;
                    break;
                }
            }
        }
    }
    st.cursor = pos;
    st.mode = mode;
    st.found += nfound as u32;
    nfound
}

fn try_walk(ctx: &RawTracePointContext) -> Result<u32, u32> {
    let cfg = config();
    let off = cfg.offsets;
    let cgrp: *const u8 = ctx.arg(0);
    // A test run (zeroed arguments), or one of our trigger mkdirs.
    let test_run = cgrp.is_null();
    if !test_run
        && (read_field::<i32>(cgrp, off.cgroup_level) != Some(1)
            || !is_trigger(cgrp, &off, cfg.walk_name_len))
    {
        return Ok(RUN_MORE);
    }
    let Some(state) = WALK.get_ptr_mut(0) else {
        return Err(RUN_FAILED);
    };
    // SAFETY: the single map value, only written by this program (runs are serial).
    let st = unsafe { &mut *state };
    if st.done != 0 {
        return Ok(RUN_DONE);
    }
    let root = walk_root(cgrp, test_run, st, &off)?;
    let mut found = [0u64; FOUND_PER_RUN];
    let nfound = walk_steps(st, root, &off, &mut found);
    let mut i = 0;
    while i < FOUND_PER_RUN {
        if i < nfound {
            visit(ctx, found[i]);
        }
        i += 1;
    }
    Ok(if st.done != 0 { RUN_DONE } else { RUN_MORE })
}

/// Reports one dying memcg: its cgroup, leaf name, parent's cgroup id and current figures.
#[inline(never)]
fn visit(ctx: &RawTracePointContext, css: u64) {
    let off = &config().offsets;
    let cgrp = read_field::<u64>(css as *const u8, off.css_cgroup).unwrap_or(0) as *const u8;
    let Some((hierarchy_id, cgroup_id, level)) = cgroup_ids(cgrp) else {
        return;
    };
    let kn = read_field::<u64>(cgrp, off.cgroup_kn).unwrap_or(0) as *const u8;
    let name = read_field::<u64>(kn, off.kn_name).unwrap_or(0) as *const u8;
    let parent_css = read_field::<u64>(css as *const u8, off.css_parent).unwrap_or(0) as *const u8;
    let parent_cgrp = read_field::<u64>(parent_css, off.css_cgroup).unwrap_or(0) as *const u8;
    let parent_id = cgroup_ids(parent_cgrp).map(|(_, id, _)| id).unwrap_or(0);
    let info = CgroupInfo {
        hierarchy_id,
        cgroup_id,
        level,
        has_cgroup: true,
        path: name,
        cgrp,
        css: parent_id,
        memcg: read_memcg(css as *const u8, true),
        ..CgroupInfo::NONE
    };
    let _ = report(ctx, EventKind::DyingAtStart, &info);
}

#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn raw_walk_dying(ctx: RawTracePointContext) -> u32 {
    try_walk(&ctx).unwrap_or_else(|e| e)
}

// The names the loader looks these up by.
bpf_name!(program cgtrace_common::names::program::RAW_WALK_DYING, raw_walk_dying);
bpf_name!(static cgtrace_common::names::map::WALK, WALK);
bpf_name!(static cgtrace_common::names::global::WALK_NAME, WALK_NAME);
