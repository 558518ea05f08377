//! Loading the object and the ladder of tiers: [`Probes::load`].
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::Program,
};
use aya_log::EbpfLogger;
use cgtrace_common::{
    Config, KernelOffsets, MAX_HIERARCHIES, OomLayout, PATH_CAP, StartDirLayout, Subtree,
    names::{global, map},
};

use crate::{kernel, kernel::btf, kernel::tracefs, model::oom::OomTracing};

use super::{
    AttachMode, Attached, EBPF_OBJECT, ProbeOptions, Probes, Tier, buffer,
    css::attach_css,
    is_permission_error,
    mkdir_failures::{
        CGROUPFS_PREFIX, MkdirFailureAttach, MkdirFailureHooks, MkdirFailureMode,
        attach_mkdir_failures,
    },
    offsets::{kernel_btf_facts, raw_offsets},
    oom::{attach_oom_context, attach_oom_victim, oom_plan},
    tracepoints::{BeforeAttach, attach_classic, attach_raw, classic_layout},
    walk::{WalkSetup, walk_ring_size, walk_trigger_prefix},
};

pub(super) fn base_config(opts: &ProbeOptions) -> anyhow::Result<(Config, [u8; PATH_CAP])> {
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

pub(super) fn load_object(
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
    let object = buffer::object_for(cfg, opts.bpf_debug_log, opts.legacy_reads)
        .context("preparing the eBPF object (perf buffers, legacy reads)")?;
    let mut loader = EbpfLoader::new();
    loader
        .override_global(global::WALK_NAME, &walk_name, true)
        .override_global(global::CONFIG, cfg, true)
        .override_global(global::PATH_PREFIX, prefix, true)
        .override_global(global::CGROUPFS_PREFIX, &cgroupfs, true)
        .override_global(global::OOM_LAYOUT, oom, true)
        .override_global(aya_log::LEVEL, &level, false);
    if cfg.output == cgtrace_common::output::RING {
        loader.map_max_entries(map::EVENTS, opts.ring_size);
    }
    let mut ebpf = loader
        .load(object.as_ref().map_or(EBPF_OBJECT, |o| o.bytes()))
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

/// Names the usual refusal: EPERM from BPF_PROG_LOAD (e.g. BPF tracing programs disallowed).
pub(super) fn load_error(e: aya::programs::ProgramError) -> anyhow::Error {
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
pub(super) fn load_in_parallel(ebpf: &mut Ebpf, names: &[&str]) -> anyhow::Result<()> {
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

/// What one parse of the kernel's BTF gives loading: the struct offsets (or why there are
/// none), the syscall argument registers, what resolves a relative path, the OOM plan.
struct BtfPlan {
    offsets: anyhow::Result<KernelOffsets>,
    arg_regs: Option<btf::SyscallArgRegs>,
    start_dir: Option<StartDirLayout>,
    oom_kill_fn: bool,
    /// What the OOM programs read, or why OOM kills cannot be traced.
    oom_layout: Result<OomLayout, String>,
}

impl BtfPlan {
    fn resolve() -> BtfPlan {
        let t0 = Instant::now();
        let facts = kernel_btf_facts();
        let arg_regs = facts.as_ref().ok().and_then(|f| f.arg_regs);
        let start_dir = facts.as_ref().ok().map(|f| f.start_dir);
        let oom_kill_fn = facts.as_ref().is_ok_and(|f| f.oom_kill_fn);
        let oom_layout = oom_plan(&facts);
        let offsets = facts.map(|f| f.offsets);
        log::debug!("BTF offsets resolved in {} ms", t0.elapsed().as_millis());
        BtfPlan {
            offsets,
            arg_regs,
            start_dir,
            oom_kill_fn,
            oom_layout,
        }
    }
}

/// Failed mkdirs need the syscall tracepoints (tracefs): their layout goes into `cfg`, or
/// without them, why failed mkdirs are not traced.
fn configure_mkdir_failures(
    opts: &ProbeOptions,
    cfg: &mut Config,
    btf: &BtfPlan,
) -> Option<String> {
    if opts.mkdir_failures != MkdirFailureMode::Syscall {
        return Some("not asked for (--mkdir-failures syscall)".to_string());
    }
    match tracefs::find_or_mount()
        .map_err(anyhow::Error::from)
        .and_then(|root| Ok(tracefs::syscall_layout(&root)?))
    {
        Ok(l) => {
            cfg.syscalls = l;
            cfg.syscalls.cgroupfs_prefix_len = CGROUPFS_PREFIX.len() as u32;
            if let Some(regs) = btf.arg_regs
                && opts.mkdir_failure_hooks == MkdirFailureHooks::Auto
            {
                cfg.syscalls.regs_mkdir_path = regs.mkdir_path;
                cfg.syscalls.regs_mkdirat_path = regs.mkdirat_path;
                cfg.syscalls.regs_mkdirat_dfd = regs.mkdirat_dfd;
            }
            if let Some(start) = btf.start_dir {
                cfg.syscalls.start = start;
            }
            None
        }
        Err(e) => Some(format!("{e:#}")),
    }
}

/// The object loaded and its cgroup programs attached: raw tracepoints where the kernel's BTF
/// has what they read (with what the start-up walk needs), else the classic tracepoints (why
/// raw ones were not used goes to `fallbacks`).
fn attach_cgroup_programs(
    opts: &ProbeOptions,
    cfg: &mut Config,
    prefix: [u8; PATH_CAP],
    btf: &BtfPlan,
    before: &mut BeforeAttach<'_>,
    fallbacks: &mut Vec<String>,
    phase: &dyn Fn(&str),
) -> anyhow::Result<(Ebpf, Attached, Option<WalkSetup>)> {
    let layout = btf.oom_layout.clone().unwrap_or(OomLayout::NONE);
    if opts.attach != AttachMode::Classic {
        match load_raw(opts, cfg, prefix, &btf.offsets, layout, before, phase) {
            Ok((ebpf, walk_setup)) => return Ok((ebpf, Attached::RawTracepoint, Some(walk_setup))),
            Err(e) if opts.attach == AttachMode::Raw => {
                return Err(e.context("raw tracepoints (forced with --tracepoints raw)"));
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
    let ebpf = load_classic(opts, cfg, prefix, &btf.offsets, &layout, before)?;
    if cfg.tracepoint.id_size == 4 {
        // Said wherever the run's facts go (first line, session header, replay).
        fallbacks.push(CLASSIC_IDR_NUMBERS.to_string());
    }
    Ok((ebpf, Attached::Tracepoint, None))
}

/// Before 5.5 the classic tracepoints' `int id` is the cgroup's idr number, reused once the
/// cgroup is released, not its id ("cgroup: use cgrp->kn->id as the cgroup ID", 743210386c03).
const CLASSIC_IDR_NUMBERS: &str = "cgroup ids: the classic tracepoints of this kernel \
    (before 5.5) give each cgroup's idr number, not its id (inode); numbers are reused after release";

/// The object with the cgroup programs on raw tracepoints, and what the start-up walk's own
/// instance of it needs.
fn load_raw(
    opts: &ProbeOptions,
    cfg: &mut Config,
    prefix: [u8; PATH_CAP],
    offsets: &anyhow::Result<KernelOffsets>,
    layout: OomLayout,
    before: &mut BeforeAttach<'_>,
    phase: &dyn Fn(&str),
) -> anyhow::Result<(Ebpf, WalkSetup)> {
    cfg.offsets = raw_offsets(offsets)?;
    // Before 5.5 the cgroup's ancestors are idr numbers, not ids (see `cgroup_offsets`).
    let prefix = if cfg.offsets.cgroup_ancestors == KernelOffsets::UNKNOWN {
        subtree_as_prefix(opts, cfg, prefix)?
    } else {
        prefix
    };
    let mut ebpf = load_object(opts, cfg, &prefix, &layout)?;
    phase("object loaded");
    // Records from per-CPU perf buffers are merged by time: a rmdir could come before the mkdir
    // that told its path, so they carry every path.
    let omit = opts.omit_known_paths && cfg.output == cgtrace_common::output::RING;
    attach_raw(&mut ebpf, before, omit)?;
    phase("raw tracepoints attached");
    let walk_setup = WalkSetup {
        opts: ProbeOptions {
            ring_size: walk_ring_size(),
            bpf_debug_log: false,
            ..opts.clone()
        },
        cfg: *cfg,
        prefix,
        oom: layout,
    };
    Ok((ebpf, walk_setup))
}

/// The object with the cgroup programs on the classic tracepoints.
fn load_classic(
    opts: &ProbeOptions,
    cfg: &mut Config,
    prefix: [u8; PATH_CAP],
    offsets: &anyhow::Result<KernelOffsets>,
    layout: &OomLayout,
    before: &mut BeforeAttach<'_>,
) -> anyhow::Result<Ebpf> {
    // css programs still read structs through BTF offsets where there are some.
    cfg.offsets = offsets.as_ref().copied().unwrap_or(KernelOffsets::NONE);
    cfg.tracepoint = classic_layout()?;
    // Classic records carry no struct cgroup *.
    let prefix = subtree_as_prefix(opts, cfg, prefix)?;
    let mut ebpf = load_object(opts, cfg, &prefix, layout)?;
    attach_classic(&mut ebpf, before)?;
    Ok(ebpf)
}

/// Where the programs cannot check a subtree by its ancestors' ids, it becomes a path prefix
/// in the kernel. It lets `/kubepods.slice` through for `/kubepods`; the pipeline's filters
/// remove it. With --path-prefix too, the shorter of the two stays in the kernel (every path
/// that passes both starts with it), the pipeline checks both.
fn subtree_as_prefix(
    opts: &ProbeOptions,
    cfg: &mut Config,
    mut prefix: [u8; PATH_CAP],
) -> anyhow::Result<[u8; PATH_CAP]> {
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
    Ok(prefix)
}

/// The probe ladder, tried for real: the first tier the kernel accepts wins (`--tier`: only
/// that one). The tier, and why each better one was rejected.
fn probe_ladder(
    ebpf: &mut Ebpf,
    forced: Option<Tier>,
    aya_btf: Option<&Btf>,
) -> anyhow::Result<(Tier, Vec<(Tier, String)>)> {
    let mut rejected = Vec::new();
    let mut tier = None;
    let candidates: Vec<Tier> = match forced {
        Some(t) => vec![t],
        None => Tier::ALL.to_vec(),
    };
    for t in candidates {
        match attach_css(ebpf, t, aya_btf) {
            Ok(()) => {
                tier = Some(t);
                break;
            }
            Err(e) if forced.is_some() => {
                return Err(e.context(format!("tier {} (forced with --tier)", t.name())));
            }
            Err(e) => {
                log::info!("tier {} unavailable: {e:#}", t.name());
                rejected.push((t, format!("{e:#}")));
            }
        }
    }
    let tier = tier.ok_or_else(|| anyhow!("no probe tier could be attached"))?;
    Ok((tier, rejected))
}

/// OOM kills: mark_victim as a raw tracepoint (it reads the victim's task through BTF),
/// with the OOM killer's context where the tier hooks kernel functions.
fn trace_oom(
    ebpf: &mut Ebpf,
    btf: BtfPlan,
    attached: Attached,
    tier: Tier,
    aya_btf: Option<&Btf>,
) -> Result<OomTracing, String> {
    let oom_kill_fn = btf.oom_kill_fn;
    let oom = btf.oom_layout.and_then(|layout| {
        if attached != Attached::RawTracepoint {
            return Err("OOM kills need raw tracepoints".to_string());
        }
        attach_oom_victim(ebpf).map_err(|e| format!("{e:#}"))?;
        let (context, kill_hook, context_off) = match tier {
            Tier::Tracepoint => (
                false,
                false,
                Some("the tracepoint tier hooks no kernel functions: constraint and limit are derived".to_string()),
            ),
            t => attach_oom_context(ebpf, t, aya_btf, oom_kill_fn),
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
    oom
}

/// The failed-mkdir hooks attached (exit-only where the saved registers give the path), or
/// why failed mkdirs are not traced.
fn trace_mkdir_failures(
    ebpf: &mut Ebpf,
    off: Option<String>,
    cfg: &Config,
) -> Result<MkdirFailureAttach, String> {
    let mkdir_failures = match off {
        Some(why) => Err(why),
        None => {
            let exit_only = cfg.syscalls.regs_mkdir_path != KernelOffsets::UNKNOWN;
            attach_mkdir_failures(ebpf, exit_only).map_err(|e| format!("{e:#}"))
        }
    };
    match &mkdir_failures {
        Ok(h) => log::info!("failed mkdirs traced with {}", h.describe()),
        Err(why) => log::info!("failed mkdirs are not traced: {why}"),
    }
    mkdir_failures
}

/// The BPF-side logger (`--bpf-debug-log`), if it can be set up.
fn bpf_logger(ebpf: &mut Ebpf, bpf_debug_log: bool) -> Option<EbpfLogger<&'static dyn log::Log>> {
    if !bpf_debug_log {
        return None;
    }
    match EbpfLogger::init(ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("BPF-side logging unavailable: {e}");
            None
        }
    }
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
        let (buffer, buffer_why) = buffer::choose(opts.buffer, buffer::kernel_has_ring())?;
        kernel::raise_memlock()?;
        phase("privileges and ring buffer checked");
        let (mut cfg, prefix) = base_config(opts)?;
        buffer::configure(&mut cfg, buffer);
        let mut fallbacks = Vec::new();
        let btf = BtfPlan::resolve();
        let mkdir_failures_off = configure_mkdir_failures(opts, &mut cfg, &btf);
        if let Err(e) = &btf.offsets {
            log::info!("no kernel BTF: {e:#}");
        }
        phase("tracefs layouts read");

        let (mut ebpf, attached, walk_setup) = attach_cgroup_programs(
            opts,
            &mut cfg,
            prefix,
            &btf,
            &mut before,
            &mut fallbacks,
            &phase,
        )?;

        // The probe ladder, tried for real: the first tier the kernel accepts wins.
        let t0 = Instant::now();
        let aya_btf = Btf::parse_file(btf::vmlinux_path(), aya::Endianness::default()).ok();
        log::debug!(
            "kernel BTF parsed for fentry in {} ms",
            t0.elapsed().as_millis()
        );
        let (tier, rejected) = probe_ladder(&mut ebpf, opts.tier, aya_btf.as_ref())?;
        phase("probe ladder done");

        let offsets = btf.offsets.as_ref().ok().copied();
        let oom = trace_oom(&mut ebpf, btf, attached, tier, aya_btf.as_ref());
        let mkdir_failures = trace_mkdir_failures(&mut ebpf, mkdir_failures_off, &cfg);

        phase("failed-mkdir tracepoints attached");
        let logger = bpf_logger(&mut ebpf, opts.bpf_debug_log);
        let events = buffer::Events::take(&mut ebpf, buffer, u64::from(opts.ring_size))?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map(map::LOST)
                .ok_or_else(|| anyhow!("map LOST missing from the object"))?,
        )?;
        Ok(Probes {
            _ebpf: ebpf,
            events,
            buffer_why,
            kernel_reads: buffer::kernel_reads(opts.legacy_reads),
            lost,
            logger,
            attached,
            fallbacks,
            kernel_release,
            tier,
            rejected,
            offsets,
            mkdir_failures,
            oom,
            walk_setup,
        })
    }
}
