//! Types shared by the eBPF programs and the user side.
//!
//! Everything here is `#[repr(C)]` with explicit padding and no `bool`, so both sides agree on
//! the layout byte for byte. The `user` feature implements `aya::Pod` for them.
#![no_std]

/// Bytes of cgroup path carried by one event (NUL included). Longer paths are cut and flagged
/// with [`flags::PATH_TRUNCATED`]; the kernel itself cuts tracepoint paths at 1023 bytes.
pub const PATH_CAP: usize = 256;
/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Highest hierarchy id the in-kernel controller filter can express (bit index in a `u64`).
pub const MAX_HIERARCHIES: usize = 64;

/// What happened. The numbers are part of the session format: never renumber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Mkdir = 1,
    Rmdir = 2,
    Release = 3,
    CssAlloc = 4,
    CssOnline = 5,
    CssOffline = 6,
    CssReleased = 7,
    CssFree = 8,
    /// A mkdir/mkdirat in cgroupfs that failed (errno in `RawEvent::errno`).
    MkdirFailed = 9,
    /// Start-up walk: a memcg found dying before cgtrace started. `path` is its leaf name,
    /// `css` the cgroup id of its parent; memcg figures as read now.
    DyingAtStart = 10,
    /// `oom:mark_victim`: the OOM killer chose a victim. The record is a [`RawEvent`] (the
    /// victim's pid, comm and memcg) followed by an [`OomRaw`].
    OomKill = 11,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::Mkdir,
        EventKind::Rmdir,
        EventKind::Release,
        EventKind::CssAlloc,
        EventKind::CssOnline,
        EventKind::CssOffline,
        EventKind::CssReleased,
        EventKind::CssFree,
        EventKind::MkdirFailed,
        EventKind::DyingAtStart,
        EventKind::OomKill,
    ];
    /// Slots in per-kind counters (index = kind number).
    pub const SLOTS: usize = 12;

    pub const fn from_u8(v: u8) -> Option<EventKind> {
        Some(match v {
            1 => EventKind::Mkdir,
            2 => EventKind::Rmdir,
            3 => EventKind::Release,
            4 => EventKind::CssAlloc,
            5 => EventKind::CssOnline,
            6 => EventKind::CssOffline,
            7 => EventKind::CssReleased,
            8 => EventKind::CssFree,
            9 => EventKind::MkdirFailed,
            10 => EventKind::DyingAtStart,
            11 => EventKind::OomKill,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Mkdir => "mkdir",
            EventKind::Rmdir => "rmdir",
            EventKind::Release => "release",
            EventKind::CssAlloc => "css_alloc",
            EventKind::CssOnline => "css_online",
            EventKind::CssOffline => "css_offline",
            EventKind::CssReleased => "css_released",
            EventKind::CssFree => "css_free",
            EventKind::MkdirFailed => "mkdir_failed",
            EventKind::DyingAtStart => "dying_at_start",
            EventKind::OomKill => "oom_kill",
        }
    }
}

/// Bits of [`RawEvent::flags`].
pub mod names;

pub mod flags {
    /// The path did not fit in [`super::PATH_CAP`] bytes (or the kernel cut it at 1023).
    pub const PATH_TRUNCATED: u8 = 1 << 0;
    /// Reading the path from the kernel failed; `path` is empty.
    pub const PATH_READ_FAILED: u8 = 1 << 1;
    /// `memcg_id` is valid.
    pub const HAS_MEMCG_ID: u8 = 1 << 2;
    /// `memory_pages` is valid.
    pub const HAS_MEMORY: u8 = 1 << 3;
    /// `kmem_pages` is valid.
    pub const HAS_KMEM: u8 = 1 << 4;
    /// `memsw_pages` is valid.
    pub const HAS_MEMSW: u8 = 1 << 5;
    /// `hierarchy_id`, `cgroup_id` and `level` are valid (css events before online lack them).
    pub const HAS_CGROUP: u8 = 1 << 6;
    /// `level` was not read in the kernel: it is the number of components of `path` (which is
    /// then whole).
    pub const LEVEL_FROM_PATH: u8 = 1 << 7;
}

/// One hook firing, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Cgroup id (kernfs node id); unique within its hierarchy only.
    pub cgroup_id: u64,
    /// `struct cgroup_subsys_state *` for css events, else 0.
    pub css: u64,
    /// Page counters read from the memcg (pages), when the matching flag is set.
    pub memory_pages: u64,
    pub kmem_pages: u64,
    pub memsw_pages: u64,
    /// Hierarchy id (`cgroup_root.hierarchy_id`); 0 is cgroup v2.
    pub hierarchy_id: u32,
    /// Depth below the hierarchy root (root = 0).
    pub level: u32,
    /// Thread group id ("pid") and thread id of the task that caused the event.
    pub tgid: u32,
    pub tid: u32,
    /// Memcg ID (`mem_cgroup.id.id`) when [`flags::HAS_MEMCG_ID`] is set.
    pub memcg_id: u32,
    /// Length of `path` in bytes, without the NUL.
    pub path_len: u16,
    /// An [`EventKind`] number.
    pub kind: u8,
    /// Bits from [`flags`].
    pub flags: u8,
    /// `MkdirFailed`: the errno (positive); else 0.
    pub errno: i32,
    /// `MkdirFailed`: one of [`failure_source`]; else 0.
    pub source: u32,
    pub comm: [u8; COMM_LEN],
    pub path: [u8; PATH_CAP],
}

/// Where a `MkdirFailed` record comes from, when its fields alone do not tell.
pub mod failure_source {
    /// As the record's fields say (a syscall's absolute path without a cgroup; a cgroup
    /// creation's path in its hierarchy; a release without errno).
    pub const FIELDS: u32 = 0;
    /// The syscall exit, with a relative path resolved in the kernel from its starting
    /// directory: the path is in its hierarchy, as a cgroup creation's.
    pub const SYSCALL_RESOLVED: u32 = 1;
}

/// How an OOM kill was constrained (`enum oom_constraint` of the kernel, numbered here, never
/// renumbered: part of the session format).
pub mod oom_constraint {
    /// Not known (no context, nothing derived).
    pub const UNKNOWN: u8 = 0;
    /// `CONSTRAINT_NONE`: the whole node ran out of memory.
    pub const NONE: u8 = 1;
    /// `CONSTRAINT_CPUSET`: the allocation's cpuset's nodes ran out.
    pub const CPUSET: u8 = 2;
    /// `CONSTRAINT_MEMORY_POLICY`: the nodes of the allocation's memory policy ran out.
    pub const MEMORY_POLICY: u8 = 3;
    /// `CONSTRAINT_MEMCG`: a memory cgroup hit its limit.
    pub const MEMCG: u8 = 4;
}

/// Bits of [`OomRaw::flags`].
pub mod oom_flags {
    /// The victim's task was read (comm, pids, `oom_score_adj`); without it only its pid is
    /// known (the `int pid` form of `mark_victim`, victim not the current task).
    pub const TASK: u32 = 1 << 0;
    /// The victim's mm counters were read (`total_vm`, `rss_*`, `swapents`, `pgtables_bytes`).
    pub const RSS: u32 = 1 << 1;
    /// `uid` is valid.
    pub const UID: u32 = 1 << 2;
    /// `oom_score_adj` is valid.
    pub const ADJ: u32 = 1 << 3;
    /// `limit_*` name the memcg at its limit.
    pub const LIMIT: u32 = 1 << 4;
    /// The limit hit was memory+swap (`memsw`, cgroup v1), not memory.
    pub const LIMIT_MEMSW: u32 = 1 << 5;
    /// Constraint and limit were derived (tracepoint tier), not read from `struct oom_control`.
    pub const DERIVED: u32 = 1 << 6;
    /// The OOM killer's `struct oom_control` was seen (`out_of_memory()` in progress on this
    /// thread: css tiers).
    pub const CONTEXT: u32 = 1 << 7;
    /// Fired inside `__oom_kill_process()`, where the kernel counts the kill (`OOM_KILL`,
    /// `MEMCG_OOM_KILL`); meaningful when the run's facts say that function is hooked.
    pub const IN_KILL: u32 = 1 << 8;
    /// The victim had `PF_EXITING` set when marked (exiting anyway, or already from this
    /// kill's SIGKILL on another CPU).
    pub const EXITING: u32 = 1 << 9;
    /// `victim_max` is valid.
    pub const VICTIM_MAX: u32 = 1 << 10;
    /// `totalpages` is valid (`oc->totalpages`).
    pub const TOTALPAGES: u32 = 1 << 11;
    /// `mark_victim` handed over a pid, not a task (older builds).
    pub const PID_ONLY: u32 = 1 << 12;
    /// `trigger_tgid` and `trigger_comm` are valid.
    pub const TRIGGER: u32 = 1 << 13;
}

/// What an `oom_kill` record carries after its [`RawEvent`] (whose `tgid`/`tid`/`comm` are the
/// victim's, and whose cgroup fields and counters are the victim's memcg).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OomRaw {
    /// The victim's mm counters, in pages (`pgtables_bytes` in bytes), when [`oom_flags::RSS`].
    pub total_vm: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub swapents: u64,
    pub pgtables_bytes: u64,
    /// The memcg at its limit (on the memory hierarchy), with its usage and limit in pages,
    /// when [`oom_flags::LIMIT`].
    pub limit_cgroup_id: u64,
    pub limit_usage: u64,
    pub limit_max: u64,
    /// The victim memcg's own limit (pages), when [`oom_flags::VICTIM_MAX`].
    pub victim_max: u64,
    /// `oc->totalpages`: the memory the OOM killer judged against (pages).
    pub totalpages: u64,
    pub uid: u32,
    pub oom_score_adj: i32,
    /// The task whose allocation ran into the OOM.
    pub trigger_tgid: u32,
    pub limit_level: u32,
    /// Bits of [`oom_flags`].
    pub flags: u32,
    /// An [`oom_constraint`] number.
    pub constraint: u8,
    pub _pad: [u8; 3],
    pub trigger_comm: [u8; COMM_LEN],
}

/// One `oom_kill` ring record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OomRecord {
    pub event: RawEvent,
    pub oom: OomRaw,
}

/// What the OOM programs read (the `OOM_LAYOUT` global), resolved from BTF at load time ([`KernelOffsets::UNKNOWN`]:
/// this kernel lacks the field).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomLayout {
    /// 1: `mark_victim`'s first argument is a `struct task_struct *`; 0: an `int pid`.
    pub victim_is_task: u32,
    /// `struct task_struct` → `pid`, `tgid`, `comm`, `flags`, `signal`, `mm`.
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_flags: u32,
    pub task_signal: u32,
    pub task_mm: u32,
    /// `struct signal_struct` → `oom_score_adj` (a `short`).
    pub signal_oom_score_adj: u32,
    /// `struct mm_struct` → `rss_stat`, the distance between its counters, the counter's value
    /// within one (an array of `percpu_counter` since 6.2, of `atomic_long_t` before).
    pub mm_rss_stat: u32,
    pub rss_stride: u32,
    pub rss_value: u32,
    /// Indices of `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SWAPENTS`, `MM_SHMEMPAGES`.
    pub mm_file: u32,
    pub mm_anon: u32,
    pub mm_swapents: u32,
    pub mm_shmem: u32,
    /// `struct mm_struct` → `total_vm`, `pgtables_bytes`.
    pub mm_total_vm: u32,
    pub mm_pgtables: u32,
    /// `struct mem_cgroup` → `memory.max`, `memsw.max` (pages).
    pub memcg_memory_max: u32,
    pub memcg_memsw_max: u32,
    /// `struct oom_control` → `memcg`, `constraint`, `totalpages`.
    pub oc_memcg: u32,
    pub oc_constraint: u32,
    pub oc_totalpages: u32,
    /// The kernel's `enum oom_constraint` values of NONE, CPUSET, MEMORY_POLICY, MEMCG.
    pub constraint_none: u32,
    pub constraint_cpuset: u32,
    pub constraint_policy: u32,
    pub constraint_memcg: u32,
    /// A memcg is "at its limit" when its usage is within this many pages of it.
    pub margin_pages: u32,
    pub _pad: u32,
}

impl OomLayout {
    pub const NONE: OomLayout = OomLayout {
        victim_is_task: 0,
        task_pid: KernelOffsets::UNKNOWN,
        task_tgid: KernelOffsets::UNKNOWN,
        task_comm: KernelOffsets::UNKNOWN,
        task_flags: KernelOffsets::UNKNOWN,
        task_signal: KernelOffsets::UNKNOWN,
        task_mm: KernelOffsets::UNKNOWN,
        signal_oom_score_adj: KernelOffsets::UNKNOWN,
        mm_rss_stat: KernelOffsets::UNKNOWN,
        rss_stride: 0,
        rss_value: 0,
        mm_file: KernelOffsets::UNKNOWN,
        mm_anon: KernelOffsets::UNKNOWN,
        mm_swapents: KernelOffsets::UNKNOWN,
        mm_shmem: KernelOffsets::UNKNOWN,
        mm_total_vm: KernelOffsets::UNKNOWN,
        mm_pgtables: KernelOffsets::UNKNOWN,
        memcg_memory_max: KernelOffsets::UNKNOWN,
        memcg_memsw_max: KernelOffsets::UNKNOWN,
        oc_memcg: KernelOffsets::UNKNOWN,
        oc_constraint: KernelOffsets::UNKNOWN,
        oc_totalpages: KernelOffsets::UNKNOWN,
        constraint_none: KernelOffsets::UNKNOWN,
        constraint_cpuset: KernelOffsets::UNKNOWN,
        constraint_policy: KernelOffsets::UNKNOWN,
        constraint_memcg: KernelOffsets::UNKNOWN,
        margin_pages: 0,
        _pad: 0,
    };
}

/// Where the classic `cgroup:cgroup_*` tracepoint records keep their fields, read from tracefs
/// `format` files at load time (`id` was `int` on older kernels, `u64` now).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    pub root_off: u32,
    pub root_size: u32,
    pub id_off: u32,
    pub id_size: u32,
    pub level_off: u32,
    pub level_size: u32,
    /// Offset of the `__data_loc char[] path` word.
    pub path_off: u32,
    pub _pad: u32,
}

/// Offsets into kernel structs, resolved from the running kernel's BTF at load time.
/// `u32::MAX` means "this kernel does not have the field".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct cgroup` → `kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node` → `id`.
    pub kn_id: u32,
    /// `struct cgroup` → `level`.
    pub cgroup_level: u32,
    /// `struct cgroup` → `root` (`struct cgroup_root *`).
    pub cgroup_root: u32,
    /// `struct cgroup_root` → `hierarchy_id`.
    pub root_hierarchy_id: u32,
    /// `struct cgroup` → `subsys` (array of `struct cgroup_subsys_state *`).
    pub cgroup_subsys: u32,
    /// Index of the memory controller in `subsys` (`memory_cgrp_id`).
    pub memory_subsys_idx: u32,
    /// `struct cgroup` → `ancestors` (6.0+, pointers) or `ancestor_ids` (older, u64 ids).
    pub cgroup_ancestors: u32,
    /// 1 when `cgroup_ancestors` holds `struct cgroup *`, 0 when it holds u64 ids.
    pub ancestors_are_ptrs: u32,
    /// `struct cgroup_subsys_state` → `cgroup`.
    pub css_cgroup: u32,
    /// `struct mem_cgroup` → `css` (the css is embedded; memcg = css - this).
    pub memcg_css: u32,
    /// `struct mem_cgroup` → `id.id` (the 16-bit memcg ID).
    pub memcg_id: u32,
    /// `struct mem_cgroup` → `memory.usage` (pages).
    pub memcg_memory: u32,
    /// `struct mem_cgroup` → `kmem.usage` (pages; v1 only, gone in newer kernels).
    pub memcg_kmem: u32,
    /// `struct mem_cgroup` → `memsw.usage` (pages; memory + swap on v1).
    pub memcg_memsw: u32,
    /// `struct cgroup_subsys_state` → `children`, `sibling` (list heads), `parent`, `flags`.
    pub css_children: u32,
    pub css_sibling: u32,
    pub css_parent: u32,
    pub css_flags: u32,
    /// `struct kernfs_node` → `name`.
    pub kn_name: u32,
    /// `struct kernfs_node` → `__parent` (6.15+) or `parent`.
    pub kn_parent: u32,
    /// `struct task_struct` → `cgroups` (`struct css_set *`), and `struct css_set` → `subsys`
    /// (array of css pointers): the start-up walk run by `BPF_PROG_TEST_RUN` finds the memory
    /// hierarchy from cgtrace's own task.
    pub task_cgroups: u32,
    pub css_set_subsys: u32,
    /// `struct kernfs_node` → `flags` (u16), and the value of `KERNFS_ACTIVATED` in it: a cgroup
    /// whose node was never activated was never announced — its `mkdir` failed after
    /// `cgroup_create()`, and its release is the trace of that failure.
    pub kn_flags: u32,
    pub kn_activated: u32,
    /// `struct kernfs_node` → `priv` (a cgroup directory's `struct cgroup *`): the parent of a
    /// failed `cgroup_mkdir()`.
    pub kn_priv: u32,
}

impl KernelOffsets {
    pub const UNKNOWN: u32 = u32::MAX;
    pub const NONE: KernelOffsets = KernelOffsets {
        cgroup_kn: Self::UNKNOWN,
        kn_id: Self::UNKNOWN,
        cgroup_level: Self::UNKNOWN,
        cgroup_root: Self::UNKNOWN,
        root_hierarchy_id: Self::UNKNOWN,
        cgroup_subsys: Self::UNKNOWN,
        memory_subsys_idx: Self::UNKNOWN,
        cgroup_ancestors: Self::UNKNOWN,
        ancestors_are_ptrs: 0,
        css_cgroup: Self::UNKNOWN,
        memcg_css: Self::UNKNOWN,
        memcg_id: Self::UNKNOWN,
        memcg_memory: Self::UNKNOWN,
        memcg_kmem: Self::UNKNOWN,
        memcg_memsw: Self::UNKNOWN,
        css_children: Self::UNKNOWN,
        css_sibling: Self::UNKNOWN,
        css_parent: Self::UNKNOWN,
        css_flags: Self::UNKNOWN,
        kn_name: Self::UNKNOWN,
        kn_parent: Self::UNKNOWN,
        task_cgroups: Self::UNKNOWN,
        css_set_subsys: Self::UNKNOWN,
        kn_flags: Self::UNKNOWN,
        kn_activated: 0,
        kn_priv: Self::UNKNOWN,
    };
}

/// An in-kernel subtree filter for one hierarchy: only cgroups at or below the cgroup with id
/// `cgroup_id` at depth `level` pass. Entry `h` of the `SUBTREES` map is hierarchy `h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subtree {
    pub cgroup_id: u64,
    pub level: u32,
    /// 1 when this entry is set.
    pub enabled: u32,
}

/// Where the `syscalls:sys_{enter,exit}_mkdir{,at}` records keep `pathname` and `ret`, from
/// their tracefs `format` files.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallLayout {
    pub mkdir_path_off: u32,
    pub mkdirat_path_off: u32,
    pub exit_ret_off: u32,
    /// Length of the cgroupfs mount prefix (`CGROUPFS_PREFIX`) failed mkdirs must start with.
    pub cgroupfs_prefix_len: u32,
    /// Offsets in `struct pt_regs` of the registers holding `mkdir`'s and `mkdirat`'s path
    /// argument (from BTF; [`KernelOffsets::UNKNOWN`] where the architecture's spelling is not
    /// known). With them the exit hook alone reads the path of a failed mkdir.
    pub regs_mkdir_path: u32,
    pub regs_mkdirat_path: u32,
    /// `mkdirat`'s directory fd: in its enter record, and in `struct pt_regs` (as above).
    pub mkdirat_dfd_off: u32,
    pub regs_mkdirat_dfd: u32,
    /// Where a relative path starts (the working directory or the directory fd).
    pub start: StartDirLayout,
}

/// What the failed-mkdir hooks read to resolve a relative path's starting directory in the kernel
/// (`current->fs->pwd` or the directory fd's file), to tell it is in cgroupfs (its superblock)
/// and to find its cgroup (the kernfs node's `priv`); from BTF. `known` is 1 when every offset
/// resolved (else relative paths are not resolved).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartDirLayout {
    /// `task_struct` → `fs`, and `fs_struct` → `pwd.dentry`.
    pub task_fs: u32,
    pub fs_pwd_dentry: u32,
    /// `task_struct` → `files`, `files_struct` → `fdt`, `fdtable` → `max_fds` and `fd`.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    /// `file` → `f_path.dentry`.
    pub file_dentry: u32,
    /// `dentry` → `d_sb` and `d_inode`, `inode` → `i_private` (a kernfs inode's `struct
    /// kernfs_node *`, see `kernfs_dentry_node()`), and `super_block` → `s_magic`.
    pub dentry_sb: u32,
    pub dentry_inode: u32,
    pub inode_private: u32,
    pub sb_magic: u32,
    /// `KERNFS_DIR` (`enum kernfs_node_type`), the type in a kernfs node's `flags`.
    pub kn_dir: u32,
    pub known: u32,
    pub _pad: u32,
}

impl StartDirLayout {
    pub const NONE: StartDirLayout = StartDirLayout {
        task_fs: KernelOffsets::UNKNOWN,
        fs_pwd_dentry: KernelOffsets::UNKNOWN,
        task_files: KernelOffsets::UNKNOWN,
        files_fdt: KernelOffsets::UNKNOWN,
        fdt_max_fds: KernelOffsets::UNKNOWN,
        fdt_fd: KernelOffsets::UNKNOWN,
        file_dentry: KernelOffsets::UNKNOWN,
        dentry_sb: KernelOffsets::UNKNOWN,
        dentry_inode: KernelOffsets::UNKNOWN,
        inode_private: KernelOffsets::UNKNOWN,
        sb_magic: KernelOffsets::UNKNOWN,
        kn_dir: 0,
        known: 0,
        _pad: 0,
    };
}

impl Default for StartDirLayout {
    fn default() -> Self {
        Self::NONE
    }
}

/// Progress of the start-up walk for dying memcgs (one map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkState {
    /// Where the walk stands (0: not started).
    pub cursor: u64,
    /// 1 when the walk reached its end.
    pub done: u32,
    pub visited: u32,
    pub found: u32,
    /// 0: visit `cursor` then go down; 1: go to its next sibling, or up.
    pub mode: u32,
    pub started: u32,
    pub _pad: u32,
    /// Cgroup id of the first trigger: cgroups from then on (ids grow) are not "before start".
    pub first_id: u64,
}

/// Load-time configuration of the programs (a read-only global, so the verifier prunes the
/// branches a configuration does not take).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Config {
    pub offsets: KernelOffsets,
    pub tracepoint: TracepointLayout,
    pub syscalls: SyscallLayout,
    /// Bit `h` set: events of hierarchy `h` pass. Only consulted when `filter_hierarchies` is 1.
    pub hierarchy_mask: u64,
    pub filter_hierarchies: u32,
    /// Length of `path_prefix`; 0 = no path filter.
    pub path_prefix_len: u32,
    /// 1: only cgroups inside the `SUBTREES` entries pass (hierarchies without one: none).
    pub filter_subtree: u32,
    /// Length of the walk trigger name prefix (`WALK_NAME`).
    pub walk_name_len: u32,
    /// Submit with a forced wake-up once this many bytes wait in the ring (else no wake-up: the
    /// user side drains on a short timer).
    pub wakeup_bytes: u64,
    /// Where records go: [`output::RING`] or [`output::PERF`]. A u64 so that a copy on the stack
    /// keeps its known value for the verifier on older kernels too (they track 8-byte spills
    /// only), which then prunes the path not taken.
    pub output: u64,
}

/// Values of [`Config::output`]: the buffer the programs write their records to.
pub mod output {
    /// The BPF ring buffer (`EVENTS`, Linux 5.8+).
    pub const RING: u64 = 0;
    /// The perf event array (`PERF_EVENTS`), one buffer per CPU: kernels without the ring buffer.
    pub const PERF: u64 = 1;
}

impl Config {
    pub const DEFAULT: Config = Config {
        offsets: KernelOffsets::NONE,
        tracepoint: TracepointLayout {
            root_off: 0,
            root_size: 0,
            id_off: 0,
            id_size: 0,
            level_off: 0,
            level_size: 0,
            path_off: 0,
            _pad: 0,
        },
        syscalls: SyscallLayout {
            mkdir_path_off: 0,
            mkdirat_path_off: 0,
            exit_ret_off: 0,
            cgroupfs_prefix_len: 0,
            regs_mkdir_path: KernelOffsets::UNKNOWN,
            regs_mkdirat_path: KernelOffsets::UNKNOWN,
            mkdirat_dfd_off: 0,
            regs_mkdirat_dfd: KernelOffsets::UNKNOWN,
            start: StartDirLayout::NONE,
        },
        hierarchy_mask: 0,
        filter_hierarchies: 0,
        path_prefix_len: 0,
        filter_subtree: 0,
        walk_name_len: 0,
        wakeup_bytes: 0,
        output: output::RING,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::RawEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TracepointLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Subtree {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WalkState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomRaw {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomRecord {}
}

// Layout checks: the eBPF and user sides must agree, and no implicit padding may hide anywhere.
const _: () =
    assert!(core::mem::size_of::<RawEvent>() == 6 * 8 + 5 * 4 + 2 + 2 + 8 + COMM_LEN + PATH_CAP);
const _: () = assert!(core::mem::size_of::<RawEvent>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<TracepointLayout>() == 32);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 104);
const _: () = assert!(core::mem::size_of::<Subtree>() == 16);
const _: () = assert!(core::mem::size_of::<WalkState>() == 40);
const _: () = assert!(core::mem::size_of::<OomRaw>() == 11 * 8 + 5 * 4 + 4 + COMM_LEN);
const _: () = assert!(core::mem::size_of::<OomRecord>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<OomRecord>() == core::mem::size_of::<RawEvent>() + 128);
const _: () = assert!(core::mem::size_of::<OomLayout>() == 28 * 4);
const _: () = assert!(core::mem::size_of::<StartDirLayout>() == 14 * 4);
const _: () = assert!(core::mem::size_of::<SyscallLayout>() == 8 * 4 + 14 * 4);
const _: () = assert!(core::mem::size_of::<Config>() == 104 + 32 + 88 + 8 + 4 + 4 + 4 + 4 + 8 + 8);
