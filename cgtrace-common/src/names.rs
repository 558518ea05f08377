//! Names across the BPF boundary: the eBPF object's programs, maps and globals, as the loader
//! looks them up.
//!
//! aya-ebpf's macros take a program's name from its function and a map's from its static (or a
//! string literal, never a constant), so `cgtrace-ebpf` spells each name once more. Both sides
//! are checked: `bpf_name!` in `cgtrace-ebpf` ties each item to its constant at compile time,
//! and `cgtrace`'s tests in `probes/names.rs` parse the built object for every constant (and
//! every program for a constant).

/// Programs (function names in `cgtrace-ebpf`).
pub mod program {
    /// Raw tracepoints on the cgroup lifecycle tracepoints.
    pub const RAW_CGROUP_MKDIR: &str = "raw_cgroup_mkdir";
    pub const RAW_CGROUP_RMDIR: &str = "raw_cgroup_rmdir";
    pub const RAW_CGROUP_RELEASE: &str = "raw_cgroup_release";
    /// The raw tracepoint on `cgroup_rename` (cgroup v1 only): paths the user side knows may
    /// have changed, so rmdir and release read them again.
    pub const RAW_CGROUP_RENAME: &str = "raw_cgroup_rename";
    /// Classic tracepoints on the same.
    pub const TP_CGROUP_MKDIR: &str = "tp_cgroup_mkdir";
    pub const TP_CGROUP_RMDIR: &str = "tp_cgroup_rmdir";
    pub const TP_CGROUP_RELEASE: &str = "tp_cgroup_release";
    /// fentry/fexit on the memcg css lifecycle.
    pub const FEXIT_CSS_ALLOC: &str = "fexit_css_alloc";
    pub const FENTRY_CSS_ONLINE: &str = "fentry_css_online";
    pub const FENTRY_CSS_OFFLINE: &str = "fentry_css_offline";
    pub const FENTRY_CSS_RELEASED: &str = "fentry_css_released";
    pub const FENTRY_CSS_FREE: &str = "fentry_css_free";
    /// kprobes on the same (the alloc hook is an entry/return pair).
    pub const KPROBE_CSS_ALLOC_ENTRY: &str = "kprobe_css_alloc_entry";
    pub const KRETPROBE_CSS_ALLOC: &str = "kretprobe_css_alloc";
    pub const KPROBE_CSS_ONLINE: &str = "kprobe_css_online";
    pub const KPROBE_CSS_OFFLINE: &str = "kprobe_css_offline";
    pub const KPROBE_CSS_RELEASED: &str = "kprobe_css_released";
    pub const KPROBE_CSS_FREE: &str = "kprobe_css_free";
    /// Failed mkdirs inside cgroup creation: the return of cgroupfs's `cgroup_mkdir()`
    /// (fexit; kprobe at entry for the arguments, kretprobe for the return).
    pub const FEXIT_CGROUP_MKDIR: &str = "fexit_cgroup_mkdir";
    pub const KPROBE_CGROUP_MKDIR_ENTRY: &str = "kprobe_cgroup_mkdir_entry";
    pub const KRETPROBE_CGROUP_MKDIR: &str = "kretprobe_cgroup_mkdir";
    /// Failed mkdirs: enter and exit hooks.
    pub const SYS_ENTER_MKDIR: &str = "sys_enter_mkdir";
    pub const SYS_ENTER_MKDIRAT: &str = "sys_enter_mkdirat";
    pub const SYS_EXIT_MKDIR: &str = "sys_exit_mkdir";
    pub const SYS_EXIT_MKDIRAT: &str = "sys_exit_mkdirat";
    /// Failed mkdirs: the exit hooks alone, reading the saved registers.
    pub const EXIT_MKDIR_REGS: &str = "exit_mkdir_regs";
    pub const EXIT_MKDIRAT_REGS: &str = "exit_mkdirat_regs";
    /// The start-up walk for dying memcgs.
    pub const RAW_WALK_DYING: &str = "raw_walk_dying";
    /// OOM kills: the raw tracepoint `mark_victim` (every tier).
    pub const RAW_OOM_MARK_VICTIM: &str = "raw_oom_mark_victim";
    /// Its second stage (the path, the filters, the ring), tail-called through `OOM_PROGS`.
    pub const RAW_OOM_EMIT: &str = "raw_oom_emit";
    /// The OOM killer's context on the css tiers: `out_of_memory()` (its `struct oom_control`)
    /// and `__oom_kill_process()` (where the kernel counts a kill), entry and exit.
    pub const FENTRY_OUT_OF_MEMORY: &str = "fentry_out_of_memory";
    pub const FEXIT_OUT_OF_MEMORY: &str = "fexit_out_of_memory";
    pub const FENTRY_OOM_KILL: &str = "fentry_oom_kill";
    pub const FEXIT_OOM_KILL: &str = "fexit_oom_kill";
    pub const KPROBE_OUT_OF_MEMORY: &str = "kprobe_out_of_memory";
    pub const KRETPROBE_OUT_OF_MEMORY: &str = "kretprobe_out_of_memory";
    pub const KPROBE_OOM_KILL: &str = "kprobe_oom_kill";
    pub const KRETPROBE_OOM_KILL: &str = "kretprobe_oom_kill";

    /// Every program.
    pub const ALL: &[&str] = &[
        RAW_CGROUP_MKDIR,
        RAW_CGROUP_RMDIR,
        RAW_CGROUP_RELEASE,
        RAW_CGROUP_RENAME,
        TP_CGROUP_MKDIR,
        TP_CGROUP_RMDIR,
        TP_CGROUP_RELEASE,
        FEXIT_CSS_ALLOC,
        FENTRY_CSS_ONLINE,
        FENTRY_CSS_OFFLINE,
        FENTRY_CSS_RELEASED,
        FENTRY_CSS_FREE,
        KPROBE_CSS_ALLOC_ENTRY,
        KRETPROBE_CSS_ALLOC,
        KPROBE_CSS_ONLINE,
        KPROBE_CSS_OFFLINE,
        KPROBE_CSS_RELEASED,
        KPROBE_CSS_FREE,
        FEXIT_CGROUP_MKDIR,
        KPROBE_CGROUP_MKDIR_ENTRY,
        KRETPROBE_CGROUP_MKDIR,
        SYS_ENTER_MKDIR,
        SYS_ENTER_MKDIRAT,
        SYS_EXIT_MKDIR,
        SYS_EXIT_MKDIRAT,
        EXIT_MKDIR_REGS,
        EXIT_MKDIRAT_REGS,
        RAW_WALK_DYING,
        RAW_OOM_MARK_VICTIM,
        RAW_OOM_EMIT,
        FENTRY_OUT_OF_MEMORY,
        FEXIT_OUT_OF_MEMORY,
        FENTRY_OOM_KILL,
        FEXIT_OOM_KILL,
        KPROBE_OUT_OF_MEMORY,
        KRETPROBE_OUT_OF_MEMORY,
        KPROBE_OOM_KILL,
        KRETPROBE_OOM_KILL,
    ];
}

/// Maps the user side opens (static names in `cgtrace-ebpf`).
pub mod map {
    /// The event ring buffer.
    pub const EVENTS: &str = "EVENTS";
    /// The event perf event array (kernels without the ring buffer).
    pub const PERF_EVENTS: &str = "PERF_EVENTS";
    /// aya-log's ring buffer (aya-log-ebpf's name).
    pub const AYA_LOGS: &str = "AYA_LOGS";
    /// Per-CPU lost-event counts per kind.
    pub const LOST: &str = "LOST";
    /// Subtree filter per hierarchy.
    pub const SUBTREES: &str = "SUBTREES";
    /// Per hierarchy, the first cgroup id whose mkdir was reported with its path (the user side
    /// knows every later cgroup's path); one more slot, non-zero once that no longer holds.
    pub const KNOWN_PATHS: &str = "KNOWN_PATHS";
    /// The start-up walk's state.
    pub const WALK: &str = "WALK";
    /// The OOM program's second stage (a program array).
    pub const OOM_PROGS: &str = "OOM_PROGS";

    /// Every map the user side opens.
    pub const ALL: &[&str] = &[
        EVENTS,
        PERF_EVENTS,
        LOST,
        SUBTREES,
        KNOWN_PATHS,
        WALK,
        OOM_PROGS,
        AYA_LOGS,
    ];
}

/// Globals set at load time (`#[no_mangle]` statics in `cgtrace-ebpf`).
pub mod global {
    /// The `Config`.
    pub const CONFIG: &str = "CONFIG";
    /// The path prefix filter.
    pub const PATH_PREFIX: &str = "PATH_PREFIX";
    /// The cgroupfs mount prefix failed mkdirs are matched against.
    pub const CGROUPFS_PREFIX: &str = "CGROUPFS_PREFIX";
    /// Name prefix of the cgroups that trigger the start-up walk.
    pub const WALK_NAME: &str = "WALK_NAME";
    /// The `OomLayout` of the OOM programs.
    pub const OOM_LAYOUT: &str = "OOM_LAYOUT";

    /// Every global.
    pub const ALL: &[&str] = &[CONFIG, PATH_PREFIX, CGROUPFS_PREFIX, WALK_NAME, OOM_LAYOUT];
}
