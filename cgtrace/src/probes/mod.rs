//! Loading and attaching the eBPF programs: the cgroup tracepoints as raw tracepoints (reading
//! `struct cgroup` with BTF-resolved offsets) or, where those are missing, as classic tracepoints
//! (field places from tracefs `format` files).
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        FEntry, FExit, KProbe, Program, RawTracePoint, RawTracePointRunOptions, TestRun as _,
        TracePoint,
    },
};
use aya_log::EbpfLogger;
use cgtrace_common::{
    Config, EventKind, KernelOffsets, MAX_HIERARCHIES, OomLayout, PATH_CAP, Subtree,
    names::{global, map, program},
};

use crate::{kernel, kernel::btf, kernel::tracefs, model::oom::OomTracing};

#[cfg(test)]
mod names;

/// The eBPF object, built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgtrace"));

/// The hooks on the cgroup tracepoints: (tracepoint, raw program, classic program).
const CGROUP_HOOKS: [(&str, &str, &str); 3] = [
    (
        "cgroup_mkdir",
        program::RAW_CGROUP_MKDIR,
        program::TP_CGROUP_MKDIR,
    ),
    (
        "cgroup_rmdir",
        program::RAW_CGROUP_RMDIR,
        program::TP_CGROUP_RMDIR,
    ),
    (
        "cgroup_release",
        program::RAW_CGROUP_RELEASE,
        program::TP_CGROUP_RELEASE,
    ),
];

/// The memcg css lifecycle hooks, and the return of cgroupfs's `cgroup_mkdir()` (failed mkdirs
/// with their caller and errno): (kernel function, fentry/fexit program, kprobe program).
const CSS_HOOKS: [(&str, &str, &str); 6] = [
    (
        "cgroup_mkdir",
        program::FEXIT_CGROUP_MKDIR,
        program::KRETPROBE_CGROUP_MKDIR,
    ),
    (
        "mem_cgroup_css_alloc",
        program::FEXIT_CSS_ALLOC,
        program::KRETPROBE_CSS_ALLOC,
    ),
    (
        "mem_cgroup_css_online",
        program::FENTRY_CSS_ONLINE,
        program::KPROBE_CSS_ONLINE,
    ),
    (
        "mem_cgroup_css_offline",
        program::FENTRY_CSS_OFFLINE,
        program::KPROBE_CSS_OFFLINE,
    ),
    (
        "mem_cgroup_css_released",
        program::FENTRY_CSS_RELEASED,
        program::KPROBE_CSS_RELEASED,
    ),
    (
        "mem_cgroup_css_free",
        program::FENTRY_CSS_FREE,
        program::KPROBE_CSS_FREE,
    ),
];

/// The OOM killer's context on the css tiers: (kernel function, fentry, fexit, kprobe,
/// kretprobe). `out_of_memory()` first (its `struct oom_control`), then `__oom_kill_process()`
/// (where the kernel counts a kill; static, so not on every build).
const OOM_CONTEXT_HOOKS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "out_of_memory",
        program::FENTRY_OUT_OF_MEMORY,
        program::FEXIT_OUT_OF_MEMORY,
        program::KPROBE_OUT_OF_MEMORY,
        program::KRETPROBE_OUT_OF_MEMORY,
    ),
    (
        "__oom_kill_process",
        program::FENTRY_OOM_KILL,
        program::FEXIT_OOM_KILL,
        program::KPROBE_OOM_KILL,
        program::KRETPROBE_OOM_KILL,
    ),
];

/// Name prefix of the cgroups cgtrace makes at start to run the dying-memcg walk.
pub fn walk_trigger_prefix() -> String {
    format!("cgtrace-walk-{}-", std::process::id())
}

/// What the start-up walk for dying memcgs did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkReport {
    pub visited: u32,
    pub found: u32,
    pub done: bool,
    /// Runs of the walk program (one bounded chunk each): test runs or trigger cgroups made.
    pub triggers: u32,
    /// How the walk program was run.
    pub method: WalkMethod,
}

/// How the start-up walk's program was run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkMethod {
    /// Directly, with `BPF_PROG_TEST_RUN` (5.10+), from cgtrace's own task: no cgroupfs write.
    #[default]
    TestRun,
    /// On the mkdir tracepoint, by making `cgtrace-walk-*` cgroups (the fallback: needs a
    /// writable cgroupfs).
    TriggerCgroup,
}

impl WalkMethod {
    pub fn name(self) -> &'static str {
        match self {
            WalkMethod::TestRun => "BPF_PROG_TEST_RUN",
            WalkMethod::TriggerCgroup => "trigger cgroups",
        }
    }
}

/// What a run of the walk program returns (see cgtrace-ebpf/src/walk.rs).
const WALK_RUN_FAILED: u32 = 1;

/// Failed mkdirs through the enter and exit hooks (the enter hook remembers the path per
/// thread): (tracepoint, program).
const MKDIR_FAIL_HOOKS: [(&str, &str); 4] = [
    ("sys_enter_mkdir", program::SYS_ENTER_MKDIR),
    ("sys_enter_mkdirat", program::SYS_ENTER_MKDIRAT),
    ("sys_exit_mkdir", program::SYS_EXIT_MKDIR),
    ("sys_exit_mkdirat", program::SYS_EXIT_MKDIRAT),
];

/// Failed mkdirs through the exit hooks alone (the path comes from the task's saved registers,
/// `bpf_task_pt_regs`, Linux 5.15+): a successful mkdir costs one read.
const MKDIR_FAIL_EXIT_HOOKS: [(&str, &str); 2] = [
    ("sys_exit_mkdir", program::EXIT_MKDIR_REGS),
    ("sys_exit_mkdirat", program::EXIT_MKDIRAT_REGS),
];

/// Which failed mkdirs in cgroupfs are reported (`--mkdir-failures`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MkdirFailureMode {
    /// The failures inside cgroup creation (memcg IDs exhausted, a memcg that cannot be
    /// allocated), from the half-made cgroup's release on every tier: whatever the path's
    /// spelling, no cost per syscall; no caller, the errno inferred where only one is possible
    #[default]
    Cgroupfs,
    /// Also every failed mkdir(2)/mkdirat(2) under /sys/fs/cgroup with its errno and caller
    /// (EACCES, EPERM, EROFS, ENOENT, EAGAIN too), from the syscall tracepoints: every syscall
    /// on the node gets slower while cgtrace runs (a trivial one about 1.4× here)
    Syscall,
}

impl MkdirFailureMode {
    pub fn name(self) -> &'static str {
        match self {
            MkdirFailureMode::Cgroupfs => "cgroupfs",
            MkdirFailureMode::Syscall => "syscall",
        }
    }
}

/// How failed mkdirs are caught at the syscall.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MkdirFailureHooks {
    /// The exit hooks alone where the kernel and architecture allow, else enter and exit.
    #[default]
    Auto,
    /// The enter and exit hooks (what `Auto` falls back to; forced by tests).
    EnterExit,
}

/// The hooks that catch failed mkdirs once attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MkdirFailureAttach {
    ExitOnly,
    EnterExit,
}

impl MkdirFailureAttach {
    pub fn describe(self) -> &'static str {
        match self {
            MkdirFailureAttach::ExitOnly => "the syscall exit hooks (path from saved registers)",
            MkdirFailureAttach::EnterExit => "the syscall enter and exit hooks",
        }
    }
}

/// Failed mkdirs are reported when their path starts with this.
pub const CGROUPFS_PREFIX: &str = "/sys/fs/cgroup/";

pub const DEFAULT_RING_SIZE: u32 = 4 << 20;

/// The probe ladder: the best tier the kernel accepts is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Tier {
    /// fentry/fexit on the memcg css functions (needs BTF and BPF tracing programs).
    Fentry,
    /// kprobe/kretprobe on the same functions (needs CONFIG_KPROBES).
    Kprobe,
    /// The cgroup tracepoints only; the memcg lifecycle is derived from them.
    Tracepoint,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Fentry, Tier::Kprobe, Tier::Tracepoint];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Fentry => "fentry",
            Tier::Kprobe => "kprobe",
            Tier::Tracepoint => "tracepoint",
        }
    }

    /// The tier of a recorded name.
    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// How to attach the cgroup tracepoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Raw tracepoints, falling back to classic ones.
    #[default]
    Auto,
    /// Raw tracepoints only.
    Raw,
    /// Classic tracepoints only (needs tracefs).
    Classic,
}

/// `--subtree`: the path and, per hierarchy, the cgroup it names.
#[derive(Clone, Debug)]
pub struct SubtreeFilter {
    pub path: String,
    pub entries: Vec<(u32, Subtree)>,
}

impl SubtreeFilter {
    /// Resolves `path` in every mounted hierarchy where it exists.
    pub fn resolve(
        h: &crate::kernel::hierarchy::Hierarchies,
        path: &str,
    ) -> anyhow::Result<SubtreeFilter> {
        let entries = h
            .resolve_subtree(path)?
            .into_iter()
            .map(|(hid, cgroup_id, level)| {
                (
                    hid,
                    Subtree {
                        cgroup_id,
                        level,
                        enabled: 1,
                    },
                )
            })
            .collect();
        Ok(SubtreeFilter {
            path: path.to_string(),
            entries,
        })
    }
}

/// What was attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    RawTracepoint,
    Tracepoint,
}

impl Attached {
    pub fn name(self) -> &'static str {
        match self {
            Attached::RawTracepoint => "raw_tracepoint",
            Attached::Tracepoint => "tracepoint",
        }
    }

    /// The tracepoint kind of a recorded name.
    pub fn from_name(name: &str) -> Option<Attached> {
        [Attached::RawTracepoint, Attached::Tracepoint]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Force a tier (None: the best the kernel accepts).
    pub tier: Option<Tier>,
    pub attach: AttachMode,
    /// Only cgroups at or below a cgroup path, in the hierarchies where it exists.
    pub subtree: Option<SubtreeFilter>,
    /// Ring buffer bytes (a power of two, multiple of the page size).
    pub ring_size: u32,
    /// Only these hierarchy ids (None = all).
    pub hierarchies: Option<Vec<u32>>,
    /// Only paths starting with these bytes.
    pub path_prefix: Option<Vec<u8>>,
    /// Force a wake-up once this many bytes wait in the ring (None: ring_size / 8; Some(0): the
    /// kernel's default wake-up per event).
    pub wakeup_bytes: Option<u64>,
    /// Enable BPF-side debug logs (aya-log).
    pub bpf_debug_log: bool,
    /// Which failed mkdirs are reported: [`MkdirFailureMode::Syscall`] attaches the syscall
    /// tracepoints (needs tracefs); the half-made cgroup's release is reported in every mode.
    pub mkdir_failures: MkdirFailureMode,
    /// Which syscall hooks catch them.
    pub mkdir_failure_hooks: MkdirFailureHooks,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            tier: None,
            attach: AttachMode::Auto,
            subtree: None,
            ring_size: DEFAULT_RING_SIZE,
            hierarchies: None,
            path_prefix: None,
            wakeup_bytes: None,
            bpf_debug_log: false,
            mkdir_failures: MkdirFailureMode::Cgroupfs,
            mkdir_failure_hooks: MkdirFailureHooks::Auto,
        }
    }
}

impl ProbeOptions {
    /// The kernel-side form of the user's filters: hierarchy ids, the subtree's cgroup per
    /// hierarchy, the path prefix. Only an optimisation (the pipeline applies `filters` to every
    /// event); errors are the user's (an unknown controller, a subtree that exists nowhere, a
    /// prefix longer than the kernel compares).
    pub fn set_filters(
        &mut self,
        filters: &crate::pipeline::filters::Filters,
        h: &crate::kernel::hierarchy::Hierarchies,
    ) -> anyhow::Result<()> {
        self.hierarchies = if filters.controllers.is_empty() {
            None
        } else {
            Some(h.select(&filters.controllers)?)
        };
        self.subtree = match &filters.subtree {
            Some(p) => Some(SubtreeFilter::resolve(h, p)?),
            None => None,
        };
        let path_prefix = filters.path_prefix.as_ref().map(|p| p.as_bytes().to_vec());
        if let Some(p) = &path_prefix
            && p.len() >= PATH_CAP
        {
            bail!(
                "--path-prefix is {} bytes; at most {} are supported",
                p.len(),
                PATH_CAP - 1
            );
        }
        self.path_prefix = path_prefix;
        Ok(())
    }
}

/// Loaded and attached programs, with the maps the user side reads.
pub struct Probes {
    /// Keeps programs and links alive.
    _ebpf: Ebpf,
    pub ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
    pub attached: Attached,
    /// Why a better attach mode was not used.
    pub fallbacks: Vec<String>,
    pub kernel_release: String,
    /// The tier in use, and why each better one was rejected.
    pub tier: Tier,
    pub rejected: Vec<(Tier, String)>,
    /// Offsets resolved from BTF (None when BTF is unavailable).
    pub offsets: Option<KernelOffsets>,
    /// The hooks that trace failed mkdirs, or why they are not traced.
    pub mkdir_failures: Result<MkdirFailureAttach, String>,
    /// How OOM kills are traced, or why they are not.
    pub oom: Result<OomTracing, String>,
    /// What the start-up walk's own instance of the object needs (raw tracepoints only).
    walk_setup: Option<WalkSetup>,
}

/// The options, configuration and prefix the programs were loaded with, for the walk.
#[derive(Clone)]
struct WalkSetup {
    opts: ProbeOptions,
    cfg: Config,
    prefix: [u8; PATH_CAP],
    oom: OomLayout,
}

/// Rounds a requested ring size to what the kernel accepts.
pub fn ring_size(requested: u64) -> anyhow::Result<u32> {
    let page = kernel::page_size();
    if requested < page {
        bail!("ring size {requested} is smaller than a page ({page} bytes)");
    }
    let size = requested.next_power_of_two();
    u32::try_from(size).map_err(|_| anyhow!("ring size {requested} is too large (max 2 GiB)"))
}

fn base_config(opts: &ProbeOptions) -> anyhow::Result<(Config, [u8; PATH_CAP])> {
    let mut cfg = Config::DEFAULT;
    if let Some(ids) = &opts.hierarchies {
        cfg.filter_hierarchies = 1;
        for &id in ids {
            if id as usize >= MAX_HIERARCHIES {
                bail!("hierarchy id {id} is beyond the in-kernel filter's range");
            }
            cfg.hierarchy_mask |= 1 << id;
        }
    }
    let mut prefix = [0u8; PATH_CAP];
    if let Some(p) = &opts.path_prefix {
        if p.len() >= PATH_CAP {
            bail!(
                "--path-prefix is {} bytes; at most {} are supported",
                p.len(),
                PATH_CAP - 1
            );
        }
        prefix[..p.len()].copy_from_slice(p);
        cfg.path_prefix_len = p.len() as u32;
    }
    if opts.subtree.is_some() {
        cfg.filter_subtree = 1;
    }
    cfg.wakeup_bytes = opts.wakeup_bytes.unwrap_or(u64::from(opts.ring_size) / 8);
    Ok((cfg, prefix))
}

fn load_object(
    opts: &ProbeOptions,
    cfg: &Config,
    prefix: &[u8; PATH_CAP],
    oom: &OomLayout,
) -> anyhow::Result<Ebpf> {
    let level: u8 = if opts.bpf_debug_log { 4 } else { 0 };
    let mut cgroupfs = [0u8; 64];
    cgroupfs[..CGROUPFS_PREFIX.len()].copy_from_slice(CGROUPFS_PREFIX.as_bytes());
    let mut walk_name = [0u8; 32];
    let trigger = walk_trigger_prefix();
    walk_name[..trigger.len()].copy_from_slice(trigger.as_bytes());
    let mut cfg = *cfg;
    cfg.walk_name_len = trigger.len() as u32;
    let cfg = &cfg;
    let mut ebpf = EbpfLoader::new()
        .override_global(global::WALK_NAME, &walk_name, true)
        .override_global(global::CONFIG, cfg, true)
        .override_global(global::PATH_PREFIX, prefix, true)
        .override_global(global::CGROUPFS_PREFIX, &cgroupfs, true)
        .override_global(global::OOM_LAYOUT, oom, true)
        .override_global(aya_log::LEVEL, &level, false)
        .map_max_entries(map::EVENTS, opts.ring_size)
        .load(EBPF_OBJECT)
        .context("failed to load the eBPF object")?;
    // Filled before any program is attached: until then, a subtree filter passes nothing.
    if let Some(subtree) = &opts.subtree {
        let mut map: Array<_, Subtree> = Array::try_from(
            ebpf.map_mut(map::SUBTREES)
                .ok_or_else(|| anyhow!("map SUBTREES missing from the object"))?,
        )?;
        for (h, s) in &subtree.entries {
            map.set(*h, s, 0)
                .with_context(|| format!("setting the subtree filter of hierarchy {h}"))?;
        }
    }
    Ok(ebpf)
}

/// Attaches the memcg css programs of `tier`, or says why the kernel would not have them.
/// On failure nothing of the tier stays attached.
/// The kprobe tier's entry halves of the return hooks: the arguments, kept per thread for the
/// kretprobe.
const KPROBE_ENTRIES: [(&str, &str, &str); 2] = [
    ("mem_cgroup_css_alloc", "", program::KPROBE_CSS_ALLOC_ENTRY),
    ("cgroup_mkdir", "", program::KPROBE_CGROUP_MKDIR_ENTRY),
];

fn attach_css(ebpf: &mut Ebpf, tier: Tier, btf: Option<&Btf>) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        match tier {
            Tier::Tracepoint => Ok(()),
            Tier::Fentry => {
                let btf = btf
                    .ok_or_else(|| anyhow!("no kernel BTF ({})", btf::vmlinux_path().display()))?;
                for (func, prog, _) in CSS_HOOKS {
                    let p = ebpf
                        .program_mut(prog)
                        .ok_or_else(|| anyhow!("program {prog} missing from the object"))?;
                    if prog.starts_with("fexit") {
                        let p: &mut FExit = p.try_into()?;
                        p.load(func, btf).map_err(load_error)?;
                        p.attach()
                            .with_context(|| format!("attaching fexit {func}"))?;
                    } else {
                        let p: &mut FEntry = p.try_into()?;
                        p.load(func, btf).map_err(load_error)?;
                        p.attach()
                            .with_context(|| format!("attaching fentry {func}"))?;
                    }
                }
                Ok(())
            }
            Tier::Kprobe => {
                if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
                    bail!(
                        "kernel built without CONFIG_KPROBES (no kprobe PMU in /sys/bus/event_source/devices)"
                    );
                }
                // The allocation's parent, remembered at entry for the kretprobe's filters.
                let hooks = KPROBE_ENTRIES.into_iter().chain(CSS_HOOKS);
                for (func, _, prog) in hooks {
                    let p: &mut KProbe = ebpf
                        .program_mut(prog)
                        .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
                        .try_into()?;
                    p.load().map_err(load_error)?;
                    p.attach(func, 0)
                        .with_context(|| format!("attaching {prog} to {func}"))?;
                }
                Ok(())
            }
        }
    })();
    if result.is_err() {
        for (_, fprog, kprog) in CSS_HOOKS.iter().chain(KPROBE_ENTRIES.iter()) {
            for prog in [*fprog, *kprog] {
                if let Some(p) = ebpf.program_mut(prog) {
                    let _ = match p {
                        aya::programs::Program::FEntry(p) => p.unload(),
                        aya::programs::Program::FExit(p) => p.unload(),
                        aya::programs::Program::KProbe(p) => p.unload(),
                        _ => Ok(()),
                    };
                }
            }
        }
    }
    result
}

/// Names the usual refusal: EPERM from BPF_PROG_LOAD (e.g. BPF tracing programs disallowed).
fn load_error(e: aya::programs::ProgramError) -> anyhow::Error {
    let e = anyhow::Error::from(e);
    // EPERM: the program type is refused; EACCES would be the verifier rejecting the program.
    let eperm = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EPERM)
    });
    if eperm {
        log::debug!("BPF_PROG_LOAD refused: {e:#}");
        anyhow!("EPERM from BPF_PROG_LOAD (this kernel refuses the program type)")
    } else {
        e.context("BPF_PROG_LOAD failed")
    }
}

/// Loads (verifies) the named tracepoint programs at once, one thread each: verifying the
/// cgroup programs is most of start-up, and the kernel verifies in parallel.
fn load_in_parallel(ebpf: &mut Ebpf, names: &[&str]) -> anyhow::Result<()> {
    let progs: Vec<(&str, &mut Program)> = ebpf
        .programs_mut()
        .filter(|(n, _)| names.contains(n))
        .collect();
    if let Some(missing) = names
        .iter()
        .find(|n| !progs.iter().any(|(have, _)| have == *n))
    {
        bail!("program {missing} missing from the object");
    }
    std::thread::scope(|s| {
        let loads: Vec<_> = progs
            .into_iter()
            .map(|(name, p)| {
                s.spawn(move || {
                    match p {
                        Program::RawTracePoint(p) => p.load(),
                        Program::TracePoint(p) => p.load(),
                        _ => bail!("program {name} is not a tracepoint program"),
                    }
                    .with_context(|| format!("loading {name}"))
                })
            })
            .collect();
        // Every thread is joined before an error is returned.
        let results: Vec<anyhow::Result<()>> = loads
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a program-loading thread panicked")))
            })
            .collect();
        results.into_iter().collect::<anyhow::Result<()>>()
    })
}

/// Calls the caller's hook once, just before the first cgroup tracepoint is attached.
struct BeforeAttach<'a>(Option<&'a mut dyn FnMut()>);

impl BeforeAttach<'_> {
    fn run(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn attach_raw(ebpf: &mut Ebpf, before: &mut BeforeAttach<'_>) -> anyhow::Result<()> {
    let names: Vec<&str> = CGROUP_HOOKS.iter().map(|(_, raw, _)| *raw).collect();
    load_in_parallel(ebpf, &names)?;
    before.run();
    for (tp, prog, _) in CGROUP_HOOKS {
        let p: &mut RawTracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        p.attach(tp)
            .with_context(|| format!("attaching raw tracepoint {tp}"))?;
    }
    Ok(())
}

fn attach_classic(ebpf: &mut Ebpf, before: &mut BeforeAttach<'_>) -> anyhow::Result<()> {
    let names: Vec<&str> = CGROUP_HOOKS.iter().map(|(_, _, tp)| *tp).collect();
    load_in_parallel(ebpf, &names)?;
    before.run();
    for (tp, _, prog) in CGROUP_HOOKS {
        let p: &mut TracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        p.attach("cgroup", tp)
            .with_context(|| format!("attaching tracepoint cgroup:{tp}"))?;
    }
    Ok(())
}

fn attach_mkdir_failures(ebpf: &mut Ebpf, exit_only: bool) -> anyhow::Result<MkdirFailureAttach> {
    // Everything is loaded before anything is attached, so a refused exit-only program leaves
    // nothing behind to report a failure twice.
    if exit_only {
        match load_syscall_hooks(ebpf, &MKDIR_FAIL_EXIT_HOOKS) {
            Ok(()) => {
                attach_syscall_hooks(ebpf, &MKDIR_FAIL_EXIT_HOOKS)?;
                return Ok(MkdirFailureAttach::ExitOnly);
            }
            // Kernels before 5.15 lack bpf_task_pt_regs: the verifier refuses the program.
            Err(e) => log::info!("exit-only failed-mkdir hooks unavailable: {e:#}"),
        }
    }
    load_syscall_hooks(ebpf, &MKDIR_FAIL_HOOKS)?;
    attach_syscall_hooks(ebpf, &MKDIR_FAIL_HOOKS)?;
    Ok(MkdirFailureAttach::EnterExit)
}

fn syscall_program<'a>(ebpf: &'a mut Ebpf, prog: &str) -> anyhow::Result<&'a mut TracePoint> {
    Ok(ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
        .try_into()?)
}

fn load_syscall_hooks(ebpf: &mut Ebpf, hooks: &[(&str, &str)]) -> anyhow::Result<()> {
    for &(_, prog) in hooks {
        syscall_program(ebpf, prog)?
            .load()
            .with_context(|| format!("loading {prog}"))?;
    }
    Ok(())
}

fn attach_syscall_hooks(ebpf: &mut Ebpf, hooks: &[(&str, &str)]) -> anyhow::Result<()> {
    for &(tp, prog) in hooks {
        syscall_program(ebpf, prog)?
            .attach("syscalls", tp)
            .with_context(|| format!("attaching tracepoint syscalls:{tp}"))?;
    }
    Ok(())
}

/// Names the memcgs that were dying before start: runs the walk program directly with
/// `BPF_PROG_TEST_RUN` from cgtrace's own task (no cgroupfs write), or where the kernel refuses
/// that (before 5.10), on mkdirs of `cgtrace-walk-*` cgroups made at the root of `mount` (the
/// hierarchy holding memory), until the walk is done or `stop` is set. The records go to the
/// object's ring as `dying_at_start` events; `after_run` runs after each run (to drain them). The
/// trigger cgroups' own events start with [`walk_trigger_prefix`] and are to be ignored.
fn run_walk(
    ebpf: &mut Ebpf,
    off: &KernelOffsets,
    mount: &Path,
    only: Option<WalkMethod>,
    stop: &AtomicBool,
    mut after_run: impl FnMut(),
) -> anyhow::Result<WalkReport> {
    for (name, v) in [
        ("cgroup_subsys_state.children", off.css_children),
        ("cgroup_subsys_state.sibling", off.css_sibling),
        ("cgroup_subsys_state.parent", off.css_parent),
        ("cgroup_subsys_state.flags", off.css_flags),
        ("kernfs_node.name", off.kn_name),
    ] {
        if v == KernelOffsets::UNKNOWN {
            bail!("kernel BTF lacks {name}");
        }
    }
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_WALK_DYING)
        .ok_or_else(|| anyhow!("program raw_walk_dying missing from the object"))?
        .try_into()?;
    let t0 = Instant::now();
    prog.load().context("loading raw_walk_dying")?;
    log::debug!("raw_walk_dying verified and loaded in {:?}", t0.elapsed());
    let deadline = Instant::now() + Duration::from_secs(20);
    let read_state = |ebpf: &Ebpf, n: u32, method| -> anyhow::Result<WalkReport> {
        let state: Array<_, cgtrace_common::WalkState> = Array::try_from(
            ebpf.map(map::WALK)
                .ok_or_else(|| anyhow!("map WALK missing from the object"))?,
        )?;
        let st = state.get(&0, 0)?;
        Ok(WalkReport {
            visited: st.visited,
            found: st.found,
            done: st.done != 0,
            triggers: n,
            method,
        })
    };
    // BPF_PROG_TEST_RUN: the program runs in this task, with zeroed arguments.
    let test_run = if only == Some(WalkMethod::TriggerCgroup) {
        Err(anyhow!("trigger cgroups asked for"))
    } else if off.task_cgroups == KernelOffsets::UNKNOWN
        || off.css_set_subsys == KernelOffsets::UNKNOWN
    {
        Err(anyhow!(
            "kernel BTF lacks task_struct.cgroups or css_set.subsys"
        ))
    } else {
        (|| -> anyhow::Result<WalkReport> {
            let mut report = WalkReport::default();
            for n in 1u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let prog: &RawTracePoint = ebpf
                    .program(program::RAW_WALK_DYING)
                    .ok_or_else(|| anyhow!("program raw_walk_dying missing"))?
                    .try_into()?;
                let ret = prog
                    .test_run(RawTracePointRunOptions::new())
                    .context("BPF_PROG_TEST_RUN of raw_walk_dying")?
                    .return_value;
                after_run();
                if ret == WALK_RUN_FAILED {
                    bail!("the walk found no memory controller css from its own task");
                }
                report = read_state(ebpf, n, WalkMethod::TestRun)?;
                if report.done || Instant::now() > deadline {
                    break;
                }
            }
            Ok(report)
        })()
    };
    match test_run {
        Ok(report) => {
            log::info!("start-up walk run with BPF_PROG_TEST_RUN");
            return Ok(report);
        }
        // Part of the walk ran: its cursor cannot be trusted by a second method.
        Err(e)
            if only == Some(WalkMethod::TestRun)
                || read_state(ebpf, 0, WalkMethod::TestRun).is_ok_and(|r| r.visited > 0) =>
        {
            return Err(e);
        }
        Err(e) => log::info!(
            "start-up walk: BPF_PROG_TEST_RUN not usable ({e:#}); falling back to trigger cgroups"
        ),
    }
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_WALK_DYING)
        .ok_or_else(|| anyhow!("program raw_walk_dying missing from the object"))?
        .try_into()?;
    let link = prog.attach("cgroup_mkdir").context("attaching the walk")?;
    let prefix = walk_trigger_prefix();
    let mut report = WalkReport::default();
    let result = (|| -> anyhow::Result<()> {
        for n in 0u32.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let dir = mount.join(format!("{prefix}{n}"));
            std::fs::create_dir(&dir)
                .with_context(|| format!("making the walk trigger {}", dir.display()))?;
            let _ = std::fs::remove_dir(&dir);
            after_run();
            report = read_state(ebpf, n + 1, WalkMethod::TriggerCgroup)?;
            if report.done || Instant::now() > deadline {
                break;
            }
        }
        Ok(())
    })();
    if let Some(p) = ebpf.program_mut(program::RAW_WALK_DYING)
        && let Ok(p) = <&mut RawTracePoint>::try_from(p)
    {
        let _ = p.detach(link);
        let _ = p.unload();
    }
    result?;
    Ok(report)
}

/// What the background walk sends: its records, then its report.
enum WalkMsg {
    Record(Vec<u8>),
    Done(Result<WalkReport, String>),
}

/// The start-up walk naming dying memcgs, running on its own thread with its own instance of
/// the object (and its own small ring): start-up does not wait for the walk program's
/// verification nor for the walk. Dropping it stops the walk and waits for the thread, so no
/// trigger cgroup is left behind.
pub struct WalkTask {
    rx: mpsc::Receiver<WalkMsg>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The report was returned.
    ended: bool,
}

impl WalkTask {
    /// Passes the records that arrived to `f`; returns the report once, when the walk ended.
    pub fn poll(&mut self, mut f: impl FnMut(&[u8])) -> Option<Result<WalkReport, String>> {
        while !self.ended {
            let report = match self.rx.try_recv() {
                Ok(WalkMsg::Record(r)) => {
                    f(&r);
                    continue;
                }
                Ok(WalkMsg::Done(r)) => r,
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    Err("the walk thread ended without a report".to_string())
                }
            };
            self.ended = true;
            return Some(report);
        }
        None
    }

    /// Whether the walk ended (its report was returned by [`WalkTask::poll`]).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Stops the walk (if still running) and waits for its thread; then passes the records it
    /// sent to `f` and returns its report (None if that was already returned).
    pub fn finish(&mut self, f: impl FnMut(&[u8])) -> Option<Result<WalkReport, String>> {
        self.stop_and_join();
        self.poll(f)
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WalkTask {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Ring size of the walk's own instance: it reports one memcg per trigger and is drained after
/// each, so a page would do; 16 pages (the kernel wants a power-of-two multiple of the page size).
fn walk_ring_size() -> u32 {
    u32::try_from(kernel::page_size() * 16).unwrap_or(1 << 20)
}

/// Offsets from the running kernel's BTF.
pub fn kernel_offsets() -> anyhow::Result<KernelOffsets> {
    Ok(kernel_btf_facts()?.offsets)
}

/// What one parse of the kernel's BTF says.
struct BtfFacts {
    offsets: KernelOffsets,
    /// Where `struct pt_regs` keeps the syscall arguments holding a mkdir's path (see
    /// [`btf::syscall_arg_regs`]).
    arg_regs: Option<btf::SyscallArgRegs>,
    /// What resolves a failed mkdir's relative path in the kernel.
    start_dir: cgtrace_common::StartDirLayout,
    /// What the OOM programs read, and what of it this kernel lacks.
    oom: OomLayout,
    oom_missing: Vec<&'static str>,
    /// `mark_victim`'s victim: a task (true) or a pid (false), from the tracepoint's typedef.
    victim_task: Option<bool>,
    /// `__oom_kill_process()` is a function of its own (an fentry/kprobe target).
    oom_kill_fn: bool,
}

fn kernel_btf_facts() -> anyhow::Result<BtfFacts> {
    let path = btf::vmlinux_path();
    let data = btf::read_vmlinux(&path)?;
    let kbtf = btf::KernelBtf::parse(&data, &path.display().to_string())?;
    let (oom, oom_missing) = btf::oom_layout(&kbtf, kernel::page_size());
    Ok(BtfFacts {
        offsets: btf::cgroup_offsets(&kbtf),
        arg_regs: btf::syscall_arg_regs(&kbtf),
        start_dir: btf::start_dir_layout(&kbtf),
        oom,
        oom_missing,
        victim_task: btf::mark_victim_takes_task(&kbtf),
        oom_kill_fn: kbtf.has_func("__oom_kill_process"),
    })
}

/// The OOM programs' layout, with the form of `mark_victim` from BTF, else from tracefs; or why
/// OOM kills cannot be traced.
fn oom_plan(facts: &anyhow::Result<BtfFacts>) -> Result<OomLayout, String> {
    let f = facts
        .as_ref()
        .map_err(|e| format!("OOM kills need kernel BTF: {e:#}"))?;
    if !f.oom_missing.is_empty() {
        return Err(format!("kernel BTF lacks {}", f.oom_missing.join(", ")));
    }
    let victim_task = match f.victim_task {
        Some(t) => t,
        None => tracefs::find_or_mount()
            .map_err(|e| e.to_string())
            .and_then(|root| tracefs::read_mark_victim_form(&root).map_err(|e| e.to_string()))?
            .ok_or("neither BTF nor tracefs says what oom:mark_victim hands over")?,
    };
    Ok(OomLayout {
        victim_is_task: u32::from(victim_task),
        ..f.oom
    })
}

/// Attaches the raw tracepoint `mark_victim`, its second stage loaded into `OOM_PROGS` first.
fn attach_oom_victim(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let emit: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_OOM_EMIT)
        .ok_or_else(|| anyhow!("program raw_oom_emit missing from the object"))?
        .try_into()?;
    emit.load().context("loading raw_oom_emit")?;
    let fd = emit.fd()?.try_clone()?;
    let mut progs = ProgramArray::try_from(
        ebpf.map_mut(map::OOM_PROGS)
            .ok_or_else(|| anyhow!("map OOM_PROGS missing from the object"))?,
    )?;
    progs
        .set(0, &fd, 0)
        .context("putting raw_oom_emit into OOM_PROGS")?;
    let p: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_OOM_MARK_VICTIM)
        .ok_or_else(|| anyhow!("program raw_oom_mark_victim missing from the object"))?
        .try_into()?;
    p.load().context("loading raw_oom_mark_victim")?;
    p.attach("mark_victim")
        .context("attaching raw tracepoint mark_victim")?;
    Ok(())
}

/// One OOM context hook of `tier`: entry and exit programs on `func`.
fn attach_oom_hook(
    ebpf: &mut Ebpf,
    tier: Tier,
    btf: Option<&Btf>,
    (func, fentry, fexit, kprobe, kretprobe): (&str, &str, &str, &str, &str),
) -> anyhow::Result<()> {
    match tier {
        Tier::Tracepoint => bail!("the tracepoint tier hooks no kernel functions"),
        Tier::Fentry => {
            let btf = btf.ok_or_else(|| anyhow!("no kernel BTF"))?;
            let p: &mut FEntry = ebpf
                .program_mut(fentry)
                .ok_or_else(|| anyhow!("program {fentry} missing"))?
                .try_into()?;
            p.load(func, btf).map_err(load_error)?;
            p.attach().with_context(|| format!("fentry {func}"))?;
            let p: &mut FExit = ebpf
                .program_mut(fexit)
                .ok_or_else(|| anyhow!("program {fexit} missing"))?
                .try_into()?;
            p.load(func, btf).map_err(load_error)?;
            p.attach().with_context(|| format!("fexit {func}"))?;
        }
        Tier::Kprobe => {
            for prog in [kprobe, kretprobe] {
                let p: &mut KProbe = ebpf
                    .program_mut(prog)
                    .ok_or_else(|| anyhow!("program {prog} missing"))?
                    .try_into()?;
                p.load().map_err(load_error)?;
                p.attach(func, 0)
                    .with_context(|| format!("attaching {prog} to {func}"))?;
            }
        }
    }
    Ok(())
}

/// [`attach_oom_hook`], unloading both programs when either fails: a half-attached pair would
/// leave a thread's context behind.
fn attach_oom_hook_or_unload(
    ebpf: &mut Ebpf,
    tier: Tier,
    btf: Option<&Btf>,
    hook: (&str, &str, &str, &str, &str),
) -> anyhow::Result<()> {
    let r = attach_oom_hook(ebpf, tier, btf, hook);
    if r.is_err() {
        let (_, a, b, c, d) = hook;
        for prog in [a, b, c, d] {
            let _ = match ebpf.program_mut(prog) {
                Some(Program::FEntry(p)) => p.unload(),
                Some(Program::FExit(p)) => p.unload(),
                Some(Program::KProbe(p)) => p.unload(),
                _ => Ok(()),
            };
        }
    }
    r
}

/// Attaches the OOM killer's context hooks of a css tier: whether `out_of_memory()` and
/// `__oom_kill_process()` are hooked, and why not where they are not.
fn attach_oom_context(
    ebpf: &mut Ebpf,
    tier: Tier,
    btf: Option<&Btf>,
    oom_kill_fn: bool,
) -> (bool, bool, Option<String>) {
    if let Err(e) = attach_oom_hook_or_unload(ebpf, tier, btf, OOM_CONTEXT_HOOKS[0]) {
        return (false, false, Some(format!("{e:#}")));
    }
    if !oom_kill_fn {
        return (
            true,
            false,
            Some("__oom_kill_process is not a function of its own on this build".to_string()),
        );
    }
    match attach_oom_hook_or_unload(ebpf, tier, btf, OOM_CONTEXT_HOOKS[1]) {
        Ok(()) => (true, true, None),
        Err(e) => (true, false, Some(format!("__oom_kill_process: {e:#}"))),
    }
}

/// The offsets, if the raw tracepoint programs can use them.
fn raw_offsets(offsets: &anyhow::Result<KernelOffsets>) -> anyhow::Result<KernelOffsets> {
    let off = match offsets {
        Ok(o) => *o,
        Err(e) => bail!("raw tracepoints need kernel BTF: {e:#}"),
    };
    let missing = btf::missing(&off);
    if !missing.is_empty() {
        bail!("kernel BTF lacks {}", missing.join(", "));
    }
    Ok(off)
}

fn classic_layout() -> anyhow::Result<cgtrace_common::TracepointLayout> {
    let root = tracefs::find_or_mount()?;
    let layout = tracefs::read_cgroup_layout(&root, "cgroup_mkdir")?;
    for (tp, _, _) in &CGROUP_HOOKS[1..] {
        let other = tracefs::read_cgroup_layout(&root, tp)?;
        if other != layout {
            bail!("cgroup:{tp} has a different record layout from cgroup:cgroup_mkdir");
        }
    }
    Ok(layout)
}

impl Probes {
    /// Checks privileges and the kernel, loads the programs and attaches them.
    pub fn load(opts: &ProbeOptions) -> anyhow::Result<Probes> {
        Probes::load_with(opts, &mut || {})
    }

    /// [`Probes::load`], calling `before_attach` once the cgroup programs are verified, just
    /// before they are attached (e.g. to finish a baseline taken meanwhile). It is called at
    /// most once, and not at all when loading fails before that point.
    pub fn load_with(
        opts: &ProbeOptions,
        before_attach: &mut dyn FnMut(),
    ) -> anyhow::Result<Probes> {
        let mut before = BeforeAttach(Some(before_attach));
        let kernel_release = kernel::release();
        let started = Instant::now();
        let phase =
            |what: &str| log::debug!("load: {what} at {} ms", started.elapsed().as_millis());
        kernel::check_privileges()?;
        kernel::check_ring_buffer(&kernel_release)?;
        kernel::raise_memlock()?;
        phase("privileges and ring buffer checked");
        let (mut cfg, prefix) = base_config(opts)?;
        let mut fallbacks = Vec::new();
        let t0 = Instant::now();
        let facts = kernel_btf_facts();
        let arg_regs = facts.as_ref().ok().and_then(|f| f.arg_regs);
        let start_dir = facts.as_ref().ok().map(|f| f.start_dir);
        let oom_kill_fn = facts.as_ref().is_ok_and(|f| f.oom_kill_fn);
        let oom_layout = oom_plan(&facts);
        let layout = oom_layout.clone().unwrap_or(OomLayout::NONE);
        let offsets = facts.map(|f| f.offsets);
        log::debug!("BTF offsets resolved in {} ms", t0.elapsed().as_millis());
        // Failed mkdirs need the syscall tracepoints (tracefs); without them, say so and go on.
        let mut mkdir_failures_off: Option<String> = None;
        if opts.mkdir_failures == MkdirFailureMode::Syscall {
            match tracefs::find_or_mount()
                .map_err(anyhow::Error::from)
                .and_then(|root| Ok(tracefs::syscall_layout(&root)?))
            {
                Ok(l) => {
                    cfg.syscalls = l;
                    cfg.syscalls.cgroupfs_prefix_len = CGROUPFS_PREFIX.len() as u32;
                    if let Some(regs) = arg_regs
                        && opts.mkdir_failure_hooks == MkdirFailureHooks::Auto
                    {
                        cfg.syscalls.regs_mkdir_path = regs.mkdir_path;
                        cfg.syscalls.regs_mkdirat_path = regs.mkdirat_path;
                        cfg.syscalls.regs_mkdirat_dfd = regs.mkdirat_dfd;
                    }
                    if let Some(start) = start_dir {
                        cfg.syscalls.start = start;
                    }
                }
                Err(e) => mkdir_failures_off = Some(format!("{e:#}")),
            }
        } else {
            mkdir_failures_off = Some("not asked for (--mkdir-failures syscall)".to_string());
        }
        if let Err(e) = &offsets {
            log::info!("no kernel BTF: {e:#}");
        }
        phase("tracefs layouts read");

        let mut attached = None;
        let mut walk_setup = None;
        if opts.attach != AttachMode::Classic {
            let raw = raw_offsets(&offsets).and_then(|off| {
                cfg.offsets = off;
                let mut ebpf = load_object(opts, &cfg, &prefix, &layout)?;
                phase("object loaded");
                attach_raw(&mut ebpf, &mut before)?;
                phase("raw tracepoints attached");
                walk_setup = Some(WalkSetup {
                    opts: ProbeOptions {
                        ring_size: walk_ring_size(),
                        bpf_debug_log: false,
                        ..opts.clone()
                    },
                    cfg,
                    prefix,
                    oom: layout,
                });
                Ok(ebpf)
            });
            match raw {
                Ok(ebpf) => attached = Some((ebpf, Attached::RawTracepoint)),
                Err(e) if opts.attach == AttachMode::Raw => {
                    return Err(e.context("raw tracepoints (forced with --attach raw)"));
                }
                Err(e) => {
                    if is_permission_error(&e) {
                        return Err(e);
                    }
                    log::info!("raw tracepoints unavailable, using classic tracepoints: {e:#}");
                    fallbacks.push(format!("raw_tracepoint: {e:#}"));
                }
            }
        }
        let (mut ebpf, attached) = match attached {
            Some(a) => a,
            None => {
                // css programs still read structs through BTF offsets where there are some.
                cfg.offsets = offsets.as_ref().copied().unwrap_or(KernelOffsets::NONE);
                cfg.tracepoint = classic_layout()?;
                // Classic records carry no struct cgroup *: a subtree becomes a path prefix in
                // the kernel. It lets `/kubepods.slice` through for `/kubepods`; the pipeline's
                // filters remove it. With --path-prefix too, the shorter of the two stays in the
                // kernel (every path that passes both starts with it), the pipeline checks both.
                let mut prefix = prefix;
                if let Some(sub) = &opts.subtree {
                    let p = sub.path.trim_end_matches('/').as_bytes();
                    if p.len() >= PATH_CAP {
                        bail!("--subtree path is longer than {} bytes", PATH_CAP - 1);
                    }
                    if cfg.path_prefix_len == 0 || p.len() < cfg.path_prefix_len as usize {
                        prefix = [0; PATH_CAP];
                        prefix[..p.len()].copy_from_slice(p);
                        cfg.path_prefix_len = p.len() as u32;
                    }
                    cfg.filter_subtree = 0;
                }
                let mut ebpf = load_object(opts, &cfg, &prefix, &layout)?;
                attach_classic(&mut ebpf, &mut before)?;
                (ebpf, Attached::Tracepoint)
            }
        };

        // The probe ladder, tried for real: the first tier the kernel accepts wins.
        let t0 = Instant::now();
        let aya_btf = Btf::parse_file(btf::vmlinux_path(), aya::Endianness::default()).ok();
        log::debug!(
            "kernel BTF parsed for fentry in {} ms",
            t0.elapsed().as_millis()
        );
        let mut rejected = Vec::new();
        let mut tier = None;
        let candidates: Vec<Tier> = match opts.tier {
            Some(t) => vec![t],
            None => Tier::ALL.to_vec(),
        };
        for t in candidates {
            match attach_css(&mut ebpf, t, aya_btf.as_ref()) {
                Ok(()) => {
                    tier = Some(t);
                    break;
                }
                Err(e) if opts.tier.is_some() => {
                    return Err(e.context(format!("tier {} (forced with --tier)", t.name())));
                }
                Err(e) => {
                    log::info!("tier {} unavailable: {e:#}", t.name());
                    rejected.push((t, format!("{e:#}")));
                }
            }
        }
        let tier = tier.ok_or_else(|| anyhow!("no probe tier could be attached"))?;
        phase("probe ladder done");

        // OOM kills: mark_victim as a raw tracepoint (it reads the victim's task through BTF),
        // with the OOM killer's context where the tier hooks kernel functions.
        let oom = oom_layout.and_then(|layout| {
            if attached != Attached::RawTracepoint {
                return Err("OOM kills need raw tracepoints".to_string());
            }
            attach_oom_victim(&mut ebpf).map_err(|e| format!("{e:#}"))?;
            let (context, kill_hook, context_off) = match tier {
                Tier::Tracepoint => (
                    false,
                    false,
                    Some("the tracepoint tier hooks no kernel functions: constraint and limit are derived".to_string()),
                ),
                t => attach_oom_context(&mut ebpf, t, aya_btf.as_ref(), oom_kill_fn),
            };
            Ok(OomTracing {
                victim_task: layout.victim_is_task == 1,
                context,
                kill_hook,
                context_off,
            })
        });
        match &oom {
            Ok(o) => log::info!("OOM kills traced: {o:?}"),
            Err(why) => log::info!("OOM kills are not traced: {why}"),
        }

        let mkdir_failures = match mkdir_failures_off {
            Some(why) => Err(why),
            None => {
                let exit_only = cfg.syscalls.regs_mkdir_path != KernelOffsets::UNKNOWN;
                attach_mkdir_failures(&mut ebpf, exit_only).map_err(|e| format!("{e:#}"))
            }
        };
        match &mkdir_failures {
            Ok(h) => log::info!("failed mkdirs traced with {}", h.describe()),
            Err(why) => log::info!("failed mkdirs are not traced: {why}"),
        }

        phase("failed-mkdir tracepoints attached");
        let logger = if opts.bpf_debug_log {
            match EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    log::warn!("BPF-side logging unavailable: {e}");
                    None
                }
            }
        } else {
            None
        };
        let ring = RingBuf::try_from(
            ebpf.take_map(map::EVENTS)
                .ok_or_else(|| anyhow!("map EVENTS missing from the object"))?,
        )?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map(map::LOST)
                .ok_or_else(|| anyhow!("map LOST missing from the object"))?,
        )?;
        Ok(Probes {
            _ebpf: ebpf,
            ring,
            lost,
            logger,
            attached,
            fallbacks,
            kernel_release,
            tier,
            rejected,
            offsets: offsets.ok(),
            mkdir_failures,
            oom,
            walk_setup,
        })
    }

    /// Why failed mkdirs are not traced (None: they are).
    /// Whether the failures inside cgroup creation are reported from the half-made cgroup's
    /// release (raw tracepoints, `kernfs_node.flags` and `KERNFS_ACTIVATED` from BTF), or why
    /// not.
    pub fn half_made_releases(&self) -> Result<(), &'static str> {
        if self.attached != Attached::RawTracepoint {
            return Err("the classic tracepoints carry no struct cgroup to read");
        }
        match &self.offsets {
            Some(o) if o.kn_activated != 0 && o.kn_flags != KernelOffsets::UNKNOWN => Ok(()),
            _ => Err("this kernel's BTF has no kernfs_node.flags or KERNFS_ACTIVATED"),
        }
    }

    pub fn mkdir_failures_off(&self) -> Option<&str> {
        self.mkdir_failures.as_ref().err().map(String::as_str)
    }

    /// The hooks that trace failed mkdirs (None when they are not traced).
    pub fn mkdir_failure_hooks(&self) -> Option<MkdirFailureAttach> {
        self.mkdir_failures.as_ref().ok().copied()
    }

    /// Each loaded program's accumulated run time and count, from the kernel (they only move
    /// while `kernel.bpf_stats_enabled` is 1): a syscall per program, call it on a timer.
    pub fn program_stats(&self) -> Vec<crate::pipeline::own_cost::ProgramStat> {
        self._ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                Some(crate::pipeline::own_cost::ProgramStat {
                    name: name.to_string(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }

    /// Lost events so far, per kind (summed over CPUs): a few syscalls, call it on a timer.
    pub fn lost(&self) -> anyhow::Result<[u64; EventKind::SLOTS]> {
        let mut out = [0u64; EventKind::SLOTS];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = self.lost.get(&(i as u32), 0).context("reading LOST")?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }

    /// Starts the walk naming the memcgs that were dying before start (see [`run_walk`]) on a
    /// thread of its own, triggered at the root of `mount` (the hierarchy holding memory). Its
    /// records come through [`WalkTask::poll`], beside the ring's events.
    pub fn spawn_walk(&self, mount: &Path) -> anyhow::Result<WalkTask> {
        self.spawn_walk_by(mount, None)
    }

    /// How the start-up walk would run here: one bounded `BPF_PROG_TEST_RUN` of the walk
    /// program in an instance of its own (its records are dropped), or why not (then the walk
    /// falls back to trigger cgroups). For `doctor`.
    pub fn try_walk_test_run(&self) -> Result<(), String> {
        let setup = self
            .walk_setup
            .clone()
            .ok_or_else(|| "the walk needs raw tracepoints".to_string())?;
        let off = &setup.cfg.offsets;
        if off.task_cgroups == KernelOffsets::UNKNOWN
            || off.css_set_subsys == KernelOffsets::UNKNOWN
        {
            return Err("kernel BTF lacks task_struct.cgroups or css_set.subsys".to_string());
        }
        (|| -> anyhow::Result<()> {
            let mut ebpf = load_object(&setup.opts, &setup.cfg, &setup.prefix, &setup.oom)?;
            let prog: &mut RawTracePoint = ebpf
                .program_mut(program::RAW_WALK_DYING)
                .ok_or_else(|| anyhow!("program raw_walk_dying missing from the object"))?
                .try_into()?;
            prog.load().context("loading raw_walk_dying")?;
            let ret = prog
                .test_run(RawTracePointRunOptions::new())
                .context("BPF_PROG_TEST_RUN")?
                .return_value;
            if ret == WALK_RUN_FAILED {
                bail!("the walk found no memory controller css from its own task");
            }
            Ok(())
        })()
        .map_err(|e| format!("{e:#}"))
    }

    /// [`Probes::spawn_walk`] with only one method (`None`: `BPF_PROG_TEST_RUN`, falling back
    /// to trigger cgroups).
    pub fn spawn_walk_by(
        &self,
        mount: &Path,
        only: Option<WalkMethod>,
    ) -> anyhow::Result<WalkTask> {
        let setup = self
            .walk_setup
            .clone()
            .ok_or_else(|| anyhow!("the walk needs raw tracepoints"))?;
        let mount = mount.to_path_buf();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cgtrace-walk".to_string())
            .spawn(move || {
                let result = (|| -> anyhow::Result<WalkReport> {
                    let mut ebpf = load_object(&setup.opts, &setup.cfg, &setup.prefix, &setup.oom)
                        .context("loading the walk's instance of the object")?;
                    let mut ring = RingBuf::try_from(
                        ebpf.take_map(map::EVENTS)
                            .ok_or_else(|| anyhow!("map EVENTS missing from the object"))?,
                    )?;
                    let off = &setup.cfg.offsets;
                    let report = run_walk(&mut ebpf, off, &mount, only, &stopped, || {
                        while let Some(item) = ring.next() {
                            let _ = tx.send(WalkMsg::Record(item.to_vec()));
                        }
                    })?;
                    let lost = PerCpuArray::<_, u64>::try_from(
                        ebpf.map(map::LOST)
                            .ok_or_else(|| anyhow!("map LOST missing from the object"))?,
                    )?
                    .get(&(EventKind::DyingAtStart as u32), 0)
                    .context("reading the walk's LOST")?
                    .iter()
                    .sum::<u64>();
                    if lost > 0 {
                        bail!("the walk lost {lost} records (its ring was full)");
                    }
                    Ok(report)
                })();
                let _ = tx.send(WalkMsg::Done(result.map_err(|e| format!("{e:#}"))));
            })
            .context("starting the walk thread")?;
        Ok(WalkTask {
            rx,
            stop,
            thread: Some(thread),
            ended: false,
        })
    }

    /// Drains up to `max` records without blocking, calling `f` with each record's bytes.
    /// Returns how many were drained.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            f(&item);
            n += 1;
        }
        n
    }
}

/// Whether an error chain holds EPERM/EACCES (privilege trouble rather than a missing feature).
pub fn is_permission_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::EPERM || code == libc::EACCES)
    })
}
