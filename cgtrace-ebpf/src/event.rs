//! The ring buffer, the lost-event counters, the load-time configuration and the code every
//! program shares to filter, reserve, fill and submit one event.
use core::{mem::MaybeUninit, ptr};

use aya_ebpf::{
    EbpfContext, Global,
    bindings::BPF_F_CURRENT_CPU,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::bpf_probe_read_user_str,
        generated::{
            bpf_get_current_comm as bpf_get_current_comm_raw, bpf_perf_event_output,
            bpf_probe_read_kernel_str,
        },
    },
    macros::map,
    maps::{Array, PerCpuArray, PerfEventArray, RingBuf},
};
use cgtrace_common::{
    COMM_LEN, Config, EventKind, KernelOffsets, MAX_HIERARCHIES, PATH_CAP, RawEvent, Subtree,
    flags, output,
};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Set by the loader before load; read-only for the programs.
#[unsafe(no_mangle)]
static CONFIG: Global<Config> = Global::new(Config::DEFAULT);

/// A byte array the loader patches before load, read one byte at a time (a whole copy would not
/// fit the 512-byte BPF stack).
#[repr(transparent)]
pub struct LoadTimeBytes<const N: usize>(MaybeUninit<[u8; N]>);

impl<const N: usize> LoadTimeBytes<N> {
    /// The compile-time value: non-zero bytes keep the array in `.rodata`, where the loader can
    /// set it.
    pub const fn unset() -> Self {
        LoadTimeBytes(MaybeUninit::new([0xff; N]))
    }

    #[inline(always)]
    fn get(&self, i: usize) -> u8 {
        // SAFETY: callers keep i < N; the volatile read stops the compiler from folding the
        // compile-time value the loader replaces.
        unsafe { ptr::read_volatile(self.0.as_ptr().cast::<u8>().add(i)) }
    }

    /// Whether the string whose `i`th byte `byte(i)` gives (asked only for `i < want` and
    /// `i < N`) starts with the first `want` bytes of this array. One flat bounded loop.
    #[inline(always)]
    pub fn is_prefix_of(&self, want: usize, mut byte: impl FnMut(usize) -> u8) -> bool {
        let mut i = 0usize;
        while i < N {
            if i >= want {
                return true;
            }
            if byte(i) != self.get(i) {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// The path prefix filter (`Config::path_prefix_len` bytes are used).
#[unsafe(no_mangle)]
static PATH_PREFIX: LoadTimeBytes<PATH_CAP> = LoadTimeBytes::unset();

/// Size set by the loader (`--ring-size`). Where the perf event array is used instead, the
/// loader turns this map into a one-entry array before load (kernels before 5.8 cannot create a
/// ring buffer); the programs' ring code is then never verified (see [`uses_perf`]).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// The perf event array: one perf buffer per CPU, opened by the user side (kernels without the
/// ring buffer, or `--buffer perf`).
#[map]
static PERF_EVENTS: PerfEventArray<RawEvent> = PerfEventArray::new(0);

/// Per-CPU room to build a cgroup event in before `bpf_perf_event_output` copies it (the ring
/// path fills its reserved slot in place instead).
#[map]
static PERF_SCRATCH: PerCpuArray<RawEvent> = PerCpuArray::with_max_entries(1, 0);

/// Whether records go to the perf event array. A load from the frozen read-only configuration:
/// the verifier knows its value, follows only the branch it selects and drops the other, so
/// neither path pays for the other (and the ring helpers of a pruned branch are never checked
/// against a kernel that lacks them).
#[inline(always)]
pub fn uses_perf() -> bool {
    config_ref().output == output::PERF
}

/// Writes a whole record (in map memory or on the stack) to the configured buffer; false when it
/// found no room (the caller counts it lost).
#[inline(always)]
pub fn output_record<C: EbpfContext, T>(ctx: &C, record: &T, ring_flags: u64) -> bool {
    if uses_perf() {
        // SAFETY: `record` is a whole, initialised value of `size_of::<T>()` bytes; the map
        // pointer is the perf event array's definition (what aya-ebpf's own `output` passes).
        let ret = unsafe {
            bpf_perf_event_output(
                ctx.as_ptr(),
                ptr::from_ref(&PERF_EVENTS).cast_mut().cast(),
                u64::from(BPF_F_CURRENT_CPU),
                ptr::from_ref(record).cast_mut().cast(),
                size_of::<T>() as u64,
            )
        };
        ret == 0
    } else {
        EVENTS.output::<T>(record, ring_flags).is_ok()
    }
}

/// Events that found the ring full, per CPU and per event kind.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventKind::SLOTS as u32, 0);

/// Subtree filter per hierarchy id, written by the loader before attaching.
#[map]
static SUBTREES: Array<Subtree> = Array::with_max_entries(MAX_HIERARCHIES as u32, 0);

/// Per hierarchy id, the id of the first cgroup whose mkdir this run reported with its path, 0
/// until then: the user side knows the path of every cgroup made after it, so rmdir and
/// release need not read it again. Cgroup ids (kernfs node ids) only grow within a hierarchy
/// (`idr_alloc_cyclic`, with a generation above the 32-bit number since Linux 5.5, "kernfs: use
/// 64bit inos if ino_t is 64bit"). The last slot, [`PATHS_UNRELIABLE`], is non-zero once that
/// no longer holds for the rest of the run (a mkdir record lost, a v1 cgroup renamed, or the
/// loader's choice): every path is read again.
#[map]
static KNOWN_PATHS: Array<u64> = Array::with_max_entries(MAX_HIERARCHIES as u32 + 1, 0);

const PATHS_UNRELIABLE: u32 = MAX_HIERARCHIES as u32;

/// Whether rmdir or release of `cgroup_id` in `hierarchy_id` can leave its path out: the user
/// side has it from the cgroup's mkdir (made after the first one reported), and no path-prefix
/// filter needs it in the kernel.
#[inline(always)]
pub fn path_known(cfg: &Config, hierarchy_id: u32, cgroup_id: u64) -> bool {
    if cfg.path_prefix_len != 0 || hierarchy_id >= MAX_HIERARCHIES as u32 {
        return false;
    }
    // Array lookups are inlined by the verifier: no helper call.
    let unreliable = KNOWN_PATHS.get(PATHS_UNRELIABLE).copied().unwrap_or(1);
    let first = KNOWN_PATHS.get(hierarchy_id).copied().unwrap_or(0);
    unreliable == 0 && first != 0 && cgroup_id >= first
}

/// A mkdir of `cgroup_id` was reported with its path: the first one of its hierarchy starts
/// the range [`path_known`] answers for. Only memcgs (the user side keeps paths for the memory
/// hierarchy alone). Two CPUs may race here; either id is a safe start (both were reported).
#[inline(always)]
pub fn path_reported(hierarchy_id: u32, cgroup_id: u64) {
    if let Some(first) = KNOWN_PATHS.get_ptr_mut(hierarchy_id)
        // SAFETY: a map value of this array; a torn read is impossible for an aligned u64.
        && unsafe { *first } == 0
    {
        // SAFETY: as above.
        unsafe { *first = cgroup_id };
    }
}

/// From now on rmdir and release read every path: the user side may not know some.
#[inline(always)]
pub fn paths_unreliable() {
    if let Some(flag) = KNOWN_PATHS.get_ptr_mut(PATHS_UNRELIABLE) {
        // SAFETY: a map value of this array.
        unsafe { *flag = 1 };
    }
}

/// Per-CPU room to read a path into before deciding whether the event passes the prefix filter.
#[map]
static SCRATCH: PerCpuArray<[u8; PATH_CAP]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to compose a path from kernfs names (twice the path size: every name is read
/// at an offset below PATH_CAP with room for PATH_CAP bytes).
#[map]
static PATH_BUF: PerCpuArray<[u8; 2 * PATH_CAP]> = PerCpuArray::with_max_entries(1, 0);

/// Deepest cgroup whose path is composed from kernfs names.
const MAX_DEPTH: usize = 16;

/// Composes the path of a cgroup (relative to its hierarchy root) from the kernfs names of
/// its directory and its ancestors: for hooks that get a `struct cgroup *` but no path (the css
/// hooks). Returns a pointer to the NUL-terminated path in a per-CPU buffer and whether it was
/// cut; None when the fields are unknown.
#[inline(always)]
pub fn compose_path(cgrp: *const u8) -> Option<(*const u8, bool)> {
    compose_child_path(cgrp, core::ptr::null(), false)
}

/// The kernfs nodes of `cgrp` and its ancestors below the hierarchy root (the root's node has
/// no parent: it is not part of the path), leaf first: (nodes, how many, whether there were
/// more than [`MAX_DEPTH`]).
#[inline(always)]
fn kernfs_ancestry(
    cgrp: *const u8,
    off: &KernelOffsets,
) -> Option<([u64; MAX_DEPTH], usize, bool)> {
    let mut kns = [0u64; MAX_DEPTH];
    let mut kn = read_field::<u64>(cgrp, off.cgroup_kn)?;
    let mut depth = 0usize;
    while depth < MAX_DEPTH {
        let parent = read_field::<u64>(kn as *const u8, off.kn_parent).unwrap_or(0);
        if parent == 0 {
            break;
        }
        if let Some(slot) = kns.get_mut(depth) {
            *slot = kn;
        }
        depth += 1;
        kn = parent;
    }
    let more =
        depth == MAX_DEPTH && read_field::<u64>(kn as *const u8, off.kn_parent).unwrap_or(0) != 0;
    Some((kns, depth, more))
}

/// Appends `/` and the string at `name` (a kernel string, or a user one when `user`) to the
/// path in `buf` ending at `pos` (below PATH_CAP - 1): the new end, None when the read failed.
#[inline(always)]
fn append_name(buf: *mut u8, pos: usize, name: *const u8, user: bool) -> Option<usize> {
    // The volatile read keeps the mask in the program: the verifier needs it to bound `at`
    // (the compiler would drop it, knowing pos < PATH_CAP - 1 from the caller's check).
    // SAFETY: reading a local.
    let at = unsafe { ptr::read_volatile(&pos) } & (PATH_CAP - 1);
    // SAFETY: buf is this CPU's 2*PATH_CAP-byte value and at < PATH_CAP.
    unsafe { *buf.add(at) = b'/' };
    let dst = (at + 1) & (PATH_CAP - 1);
    // SAFETY: dst < PATH_CAP, the helper writes at most PATH_CAP bytes: within 2*PATH_CAP.
    let n = unsafe {
        if user {
            bpf_probe_read_user_str(buf.add(dst).cast(), PATH_CAP as u32, name.cast())
        } else {
            bpf_probe_read_kernel_str(buf.add(dst).cast(), PATH_CAP as u32, name.cast())
        }
    };
    if n <= 0 {
        return None;
    }
    Some(dst + (n as usize).min(PATH_CAP) - 1)
}

/// [`compose_path`] of `cgrp`, then `/leaf` when `leaf` (a kernel string, or a user one when
/// `leaf_user`) is not null: the path a child named `leaf` would have (a failed
/// `cgroup_mkdir()`'s, or a failed syscall's relative path below its starting directory).
#[inline(always)]
pub fn compose_child_path(
    cgrp: *const u8,
    leaf: *const u8,
    leaf_user: bool,
) -> Option<(*const u8, bool)> {
    let off = &config_ref().offsets;
    if off.kn_parent == KernelOffsets::UNKNOWN || off.kn_name == KernelOffsets::UNKNOWN {
        return None;
    }
    let buf = PATH_BUF.get_ptr_mut(0)?;
    let buf = buf.cast::<u8>();
    let (kns, mut depth, mut truncated) = kernfs_ancestry(cgrp, off)?;
    let mut pos = 0usize;
    // SAFETY: buf is this CPU's 2*PATH_CAP-byte value; every write is below PATH_CAP + PATH_CAP.
    unsafe { *buf = b'/' };
    let mut i = MAX_DEPTH;
    while i > 0 {
        i -= 1;
        if i >= depth {
            continue;
        }
        if pos >= PATH_CAP - 1 {
            truncated = true;
            break;
        }
        let node = kns.get(i).copied().unwrap_or(0);
        let name = read_field::<u64>(node as *const u8, off.kn_name).unwrap_or(0) as *const u8;
        pos = append_name(buf, pos, name, false)?;
    }
    if !leaf.is_null() && !truncated {
        if pos >= PATH_CAP - 1 {
            truncated = true;
        } else {
            pos = append_name(buf, pos, leaf, leaf_user)?;
            depth += 1;
        }
    }
    if depth == 0 {
        pos = 1;
    }
    if pos >= PATH_CAP {
        truncated = true;
        pos = PATH_CAP - 1;
    }
    // SAFETY: reading a local; the masked index is < PATH_CAP.
    let end = unsafe { ptr::read_volatile(&pos) } & (PATH_CAP - 1);
    // SAFETY: end < PATH_CAP.
    unsafe { *buf.add(end) = 0 };
    Some((buf as *const u8, truncated))
}

#[inline(always)]
pub fn config() -> Config {
    CONFIG.load()
}

/// The configuration in place, for programs whose stack cannot hold a copy: every field read
/// through it is a load from the (frozen, read-only) map value.
#[inline(always)]
pub fn config_ref() -> &'static Config {
    // `Global` is `repr(transparent)`.
    let p = (&raw const CONFIG).cast::<Config>();
    // SAFETY: reading a local. The volatile read hides from the compiler that `p` is the
    // static, so it cannot fold the compile-time value the loader replaces into the reads.
    let p = unsafe { ptr::read_volatile(&p) };
    // SAFETY: `p` points at the static, valid and never written while programs run.
    unsafe { &*p }
}

/// Figures read from a memcg (pages); `flags` has the record's `HAS_*` flag of each one read (0
/// where unread or where this kernel lacks the field). Plain fields, all written whatever was
/// read: Linux < 5.12 refuses a read of stack never written, and an `Option`'s payload is one
/// when LLVM loads it without looking at the discriminant (`unwrap_or` as a select).
#[derive(Clone, Copy, Default)]
pub struct Memcg {
    pub id: u32,
    pub memory: u64,
    pub kmem: u64,
    pub memsw: u64,
    pub flags: u8,
}

/// What a hook learned about the cgroup before the event is built.
pub struct CgroupInfo {
    pub hierarchy_id: u32,
    pub cgroup_id: u64,
    pub level: u32,
    /// Whether `hierarchy_id`, `cgroup_id` and `level` are known (css_alloc: only the css).
    pub has_cgroup: bool,
    /// Kernel pointer to the NUL-terminated path; null when the hook has none (css events).
    pub path: *const u8,
    /// The `struct cgroup *` when the hook has one (raw tracepoints, css events after alloc);
    /// null otherwise. Used by the subtree filter.
    pub cgrp: *const u8,
    /// The memory css pointer, 0 when none.
    pub css: u64,
    pub memcg: Memcg,
    /// `path` points to user memory (a failed mkdir's argument), not kernel memory.
    pub user_path: bool,
    /// `mkdir_failed`: the errno.
    pub errno: i32,
    /// The path was already cut when it was composed.
    pub truncated: bool,
    /// `level` was not read: the user side counts it from the path (cgroup names hold no `/`),
    /// unless the path is cut or unread, when `emit` reads it after all.
    pub level_from_path: bool,
    /// The current task is not the event's cause (a kworker releasing a half-made cgroup): no
    /// pid or comm in the record.
    pub no_task: bool,
    /// `mkdir_failed`: a [`cgtrace_common::failure_source`] value.
    pub source: u32,
}

impl CgroupInfo {
    /// Nothing known: each hook sets what it learned and takes the rest from here
    /// (`..CgroupInfo::NONE`).
    pub const NONE: CgroupInfo = CgroupInfo {
        hierarchy_id: 0,
        cgroup_id: 0,
        level: 0,
        has_cgroup: false,
        path: core::ptr::null(),
        cgrp: core::ptr::null(),
        css: 0,
        memcg: Memcg {
            id: 0,
            memory: 0,
            kmem: 0,
            memsw: 0,
            flags: 0,
        },
        user_path: false,
        errno: 0,
        truncated: false,
        level_from_path: false,
        no_task: false,
        source: 0,
    };
}

/// (hierarchy id, cgroup id, level) of a `struct cgroup *`.
#[inline(always)]
pub fn cgroup_ids(cgrp: *const u8) -> Option<(u32, u64, u32)> {
    let (h, id) = cgroup_hierarchy_and_id(cgrp)?;
    Some((h, id, cgroup_level(cgrp)?))
}

/// (hierarchy id, cgroup id) of a `struct cgroup *`.
#[inline(always)]
pub fn cgroup_hierarchy_and_id(cgrp: *const u8) -> Option<(u32, u64)> {
    let off = &config_ref().offsets;
    let root = read_field::<u64>(cgrp, off.cgroup_root)? as *const u8;
    let kn = read_field::<u64>(cgrp, off.cgroup_kn)? as *const u8;
    let h = read_field::<i32>(root, off.root_hierarchy_id)?;
    let id = read_field::<u64>(kn, off.kn_id)?;
    Some((h as u32, id))
}

/// Whether the kernfs node of a `struct cgroup *` was never activated: `cgroup_mkdir()`
/// activates it only once the cgroup and its css exist, so a cgroup released without it is the
/// remains of a `mkdir` that failed after `cgroup_create()`. False when this kernel's BTF lacks
/// the field or the flag.
#[inline(always)]
pub fn never_activated(cgrp: *const u8) -> bool {
    let off = &config_ref().offsets;
    if off.kn_activated == 0 {
        return false;
    }
    let Some(kn) = read_field::<u64>(cgrp, off.cgroup_kn) else {
        return false;
    };
    read_field::<u16>(kn as *const u8, off.kn_flags)
        .is_some_and(|f| u32::from(f) & off.kn_activated == 0)
}

/// The depth of a `struct cgroup *` below its hierarchy root.
#[inline(always)]
pub fn cgroup_level(cgrp: *const u8) -> Option<u32> {
    read_field::<i32>(cgrp, config_ref().offsets.cgroup_level).map(|l| l as u32)
}

/// The memory controller's css of a cgroup (`cgrp->subsys[memory_cgrp_id]`), null when the
/// cgroup has none (other hierarchies; v2 cgroups whose parent does not enable memory).
#[inline(always)]
pub fn memory_css(cgrp: *const u8) -> *const u8 {
    let off = &config_ref().offsets;
    if off.cgroup_subsys == KernelOffsets::UNKNOWN
        || off.memory_subsys_idx == KernelOffsets::UNKNOWN
        || off.memory_subsys_idx >= 64
    {
        return core::ptr::null();
    }
    let slot = off.cgroup_subsys + 8 * off.memory_subsys_idx;
    read_field::<u64>(cgrp, slot).unwrap_or(0) as *const u8
}

/// Reads the memcg that embeds `css`: its ID, and its page counters when `counters` (not at
/// mkdir, where they are still empty and every read costs).
#[inline(always)]
pub fn read_memcg(css: *const u8, counters: bool) -> Memcg {
    let off = &config_ref().offsets;
    if css.is_null() || off.memcg_css == KernelOffsets::UNKNOWN {
        return Memcg::default();
    }
    let memcg = css.wrapping_sub(off.memcg_css as usize);
    let mut m = Memcg::default();
    if let Some(id) = read_field::<i32>(memcg, off.memcg_id) {
        m.id = id as u32;
        m.flags |= flags::HAS_MEMCG_ID;
    }
    if !counters {
        return m;
    }
    if let Some(v) = read_field::<u64>(memcg, off.memcg_memory) {
        m.memory = v;
        m.flags |= flags::HAS_MEMORY;
    }
    if let Some(v) = read_field::<u64>(memcg, off.memcg_kmem) {
        m.kmem = v;
        m.flags |= flags::HAS_KMEM;
    }
    if let Some(v) = read_field::<u64>(memcg, off.memcg_memsw) {
        m.memsw = v;
        m.flags |= flags::HAS_MEMSW;
    }
    m
}

/// Whether the cgroup is at or below the configured subtree of its hierarchy.
#[inline(always)]
fn subtree_passes(cfg: &Config, info: &CgroupInfo) -> bool {
    if cfg.filter_subtree == 0 {
        return true;
    }
    if info.cgrp.is_null() || info.hierarchy_id as usize >= MAX_HIERARCHIES {
        return false;
    }
    let Some(s) = SUBTREES.get(info.hierarchy_id) else {
        return false;
    };
    if s.enabled == 0 || info.level < s.level || s.level >= 64 {
        return false;
    }
    let off = &cfg.offsets;
    if off.cgroup_ancestors == KernelOffsets::UNKNOWN {
        return false;
    }
    let slot = off.cgroup_ancestors + 8 * s.level;
    let id = if off.ancestors_are_ptrs == 1 {
        let anc = read_field::<u64>(info.cgrp, slot).unwrap_or(0) as *const u8;
        let kn = read_field::<u64>(anc, off.cgroup_kn).unwrap_or(0) as *const u8;
        read_field::<u64>(kn, off.kn_id)
    } else {
        read_field::<u64>(info.cgrp, slot)
    };
    id == Some(s.cgroup_id)
}

/// Reads a `T` at `base + off`; `None` when the field is unknown on this kernel or the read fails.
#[inline(always)]
pub fn read_field<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    if off == KernelOffsets::UNKNOWN || base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).ok() }
}

#[inline(always)]
fn hierarchy_passes(cfg: &Config, hierarchy_id: u32) -> bool {
    cfg.filter_hierarchies == 0
        || (hierarchy_id < 64 && (cfg.hierarchy_mask >> hierarchy_id) & 1 == 1)
}

/// Compares the start of the kernel string at `path` with the configured prefix.
#[inline(always)]
fn prefix_passes(cfg: &Config, path: *const u8) -> bool {
    let want = cfg.path_prefix_len as usize;
    if want == 0 {
        return true;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `scratch` points at this CPU's PATH_CAP-byte map value; the helper writes at most
    // PATH_CAP bytes and copes with any source address.
    let got = unsafe { bpf_probe_read_kernel_str(scratch.cast(), PATH_CAP as u32, path.cast()) };
    if got <= 0 {
        return false;
    }
    // `got` counts the NUL: the path has got - 1 bytes.
    let have = (got - 1) as usize;
    if have < want {
        return false;
    }
    // SAFETY: i < PATH_CAP, the size of the scratch value.
    PATH_PREFIX.is_prefix_of(want, |i| unsafe { *(scratch as *const u8).add(i) })
}

/// Events submitted per CPU, to look at the ring's fill level only every [`QUERY_EVERY`]th time.
#[map]
static SUBMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The fill level is checked once per this many events per CPU (a power of two): the threshold
/// is overshot by at most this many records per CPU, and the other events save a helper call.
const QUERY_EVERY: u64 = 16;

/// Submit flags: no wake-up (the consumer drains on a timer) unless `wakeup_bytes` wait in the
/// ring; 0 (the kernel's wake-up per event) when `wakeup_bytes` is 0.
#[inline(always)]
pub fn wake_flags(cfg: &Config) -> u64 {
    if cfg.wakeup_bytes == 0 || uses_perf() {
        return 0;
    }
    // Array lookups are inlined by the verifier: no helper call.
    if let Some(n) = SUBMITTED.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        let due = unsafe {
            *n += 1;
            *n & (QUERY_EVERY - 1) == 0
        };
        if !due {
            return BPF_RB_NO_WAKEUP;
        }
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= cfg.wakeup_bytes {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
pub fn count_lost(kind: EventKind) {
    if let Some(slot) = LOST.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs (no preemption).
        unsafe { *slot += 1 };
    }
}

/// Filters, fills and writes one cgroup event to the configured buffer. Returns the error the
/// verifier-friendly callers ignore (the number is only for aya-log).
#[inline(always)]
pub fn emit<C: EbpfContext>(ctx: &C, kind: EventKind, info: &CgroupInfo) -> Result<(), i64> {
    let cfg = config_ref();
    if !passes_filters(cfg, kind, info) {
        return Ok(());
    }
    let ev_flags = if uses_perf() {
        let Some(ev) = PERF_SCRATCH.get_ptr_mut(0) else {
            count_lost(kind);
            return Err(-1);
        };
        // SAFETY: `ev` points at this CPU's map value of size_of::<RawEvent>() bytes, written
        // only by this program while it runs.
        let ev_flags = unsafe { complete(ev, kind, info) };
        // SAFETY: as above; `complete` wrote every field.
        if !output_record(ctx, unsafe { &*ev }, 0) {
            count_lost(kind);
            if kind == EventKind::Mkdir {
                paths_unreliable();
            }
            return Err(-1);
        }
        ev_flags
    } else {
        // Filled in place in the ring: cheaper here than building the record elsewhere and
        // copying only its used part with bpf_ringbuf_output (measured with bpf_stats).
        let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
            count_lost(kind);
            if kind == EventKind::Mkdir {
                paths_unreliable();
            }
            return Err(-1);
        };
        // SAFETY: a reserved ring slot of size_of::<RawEvent>() bytes that only this program
        // writes until submit.
        let ev_flags = unsafe { complete(entry.as_mut_ptr(), kind, info) };
        entry.submit(wake_flags(cfg));
        ev_flags
    };
    if ev_flags & (flags::PATH_TRUNCATED | flags::PATH_READ_FAILED) != 0 {
        return Err(ev_flags as i64);
    }
    Ok(())
}

/// Writes the whole record of one event at `ev`; returns its flags.
///
/// # Safety
/// `ev` points at size_of::<RawEvent>() bytes that only this program writes meanwhile.
#[inline(always)]
unsafe fn complete(ev: *mut RawEvent, kind: EventKind, info: &CgroupInfo) -> u8 {
    // SAFETY: the caller's promise.
    let len = unsafe { fill(ev, kind, info) };
    let mut ev_flags = present_flags(info);
    if info.truncated {
        ev_flags |= flags::PATH_TRUNCATED;
    }
    let path_len = path_len(info, len, &mut ev_flags);
    let mut level = info.level;
    if info.level_from_path {
        if ev_flags & (flags::PATH_TRUNCATED | flags::PATH_READ_FAILED) == 0 {
            ev_flags |= flags::LEVEL_FROM_PATH;
        } else {
            level = cgroup_level(info.cgrp).unwrap_or(0);
        }
    }
    // SAFETY: the caller's promise.
    unsafe {
        (*ev).path_len = path_len;
        (*ev).flags = ev_flags;
        (*ev).level = level;
    }
    ev_flags
}

/// Whether the event passes the load-time filters (hierarchies, path prefix, subtrees).
#[inline(always)]
pub fn passes_filters(cfg: &Config, kind: EventKind, info: &CgroupInfo) -> bool {
    // Failed mkdirs seen at the syscall have no cgroup: their own program checked the cgroupfs
    // prefix (a half-made cgroup's release has one, and is filtered like any cgroup).
    // Start-up walk records carry a leaf name, not a path: no prefix check for them.
    (kind == EventKind::MkdirFailed && !info.has_cgroup)
        || (hierarchy_passes(cfg, info.hierarchy_id)
            && (kind == EventKind::DyingAtStart
                || info.path.is_null()
                || prefix_passes(cfg, info.path))
            && subtree_passes(cfg, info))
}

/// The flags saying which of the cgroup's values the event carries.
#[inline(always)]
fn present_flags(info: &CgroupInfo) -> u8 {
    let m = info.memcg;
    m.flags
        | if info.has_cgroup {
            flags::HAS_CGROUP
        } else {
            0
        }
}

/// Writes every field but `path_len`, `flags` and `level`, and the path; returns what the string
/// helper returned (the length with its NUL, or an error).
///
/// # Safety
/// `ev` points at size_of::<RawEvent>() bytes (a reserved ring slot, or this CPU's perf scratch
/// record) that only this program writes meanwhile.
#[inline(always)]
unsafe fn fill(ev: *mut RawEvent, kind: EventKind, info: &CgroupInfo) -> i64 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let m = info.memcg;
    // SAFETY: the caller's promise; the string helper writes at most PATH_CAP bytes into `path`.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).cgroup_id = info.cgroup_id;
        (*ev).css = info.css;
        (*ev).memory_pages = m.memory;
        (*ev).kmem_pages = m.kmem;
        (*ev).memsw_pages = m.memsw;
        (*ev).hierarchy_id = info.hierarchy_id;
        if info.no_task {
            (*ev).tgid = 0;
            (*ev).tid = 0;
        } else {
            (*ev).tgid = (pid_tgid >> 32) as u32;
            (*ev).tid = pid_tgid as u32;
        }
        (*ev).memcg_id = m.id;
        (*ev).kind = kind as u8;
        (*ev).errno = info.errno;
        (*ev).source = info.source;
        // Straight into the record (the kernel zeroes it when there is no task).
        if info.no_task {
            (*ev).comm[0] = 0;
        } else {
            bpf_get_current_comm_raw((*ev).comm.as_mut_ptr().cast(), COMM_LEN as u32);
        }
        if info.path.is_null() {
            (*ev).path[0] = 0;
            1
        } else if info.user_path {
            bpf_probe_read_user_str(
                (*ev).path.as_mut_ptr().cast(),
                PATH_CAP as u32,
                info.path.cast(),
            )
        } else {
            bpf_probe_read_kernel_str(
                (*ev).path.as_mut_ptr().cast(),
                PATH_CAP as u32,
                info.path.cast(),
            )
        }
    }
}

/// The path's length from the string helper's `len`, flagging a failed read and a path that goes
/// on past the buffer.
#[inline(always)]
fn path_len(info: &CgroupInfo, len: i64, ev_flags: &mut u8) -> u16 {
    if len <= 0 {
        *ev_flags |= flags::PATH_READ_FAILED;
        return 0;
    }
    let n = (len - 1) as u16;
    // A full buffer means the path may go on: look at the byte after the last one kept.
    if n as usize == PATH_CAP - 1 {
        let at = info.path.wrapping_add(PATH_CAP - 1);
        // SAFETY: reads one byte of the string; the helpers check the address.
        let next: u8 = if info.user_path {
            unsafe { bpf_probe_read_user(at) }
        } else {
            unsafe { bpf_probe_read_kernel(at) }
        }
        .unwrap_or(0);
        if next != 0 {
            *ev_flags |= flags::PATH_TRUNCATED;
        }
    }
    n
}

// The names the loader looks these up by.
bpf_name!(static cgtrace_common::names::map::EVENTS, EVENTS);
bpf_name!(static cgtrace_common::names::map::PERF_EVENTS, PERF_EVENTS);
bpf_name!(static cgtrace_common::names::map::LOST, LOST);
bpf_name!(static cgtrace_common::names::map::SUBTREES, SUBTREES);
bpf_name!(static cgtrace_common::names::map::KNOWN_PATHS, KNOWN_PATHS);
bpf_name!(static cgtrace_common::names::global::CONFIG, CONFIG);
bpf_name!(static cgtrace_common::names::global::PATH_PREFIX, PATH_PREFIX);
