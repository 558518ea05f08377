//! `cgtrace doctor`: what this kernel can do for cgtrace, each probe tier tried for real.
use std::io::{self, Write};

use serde::Serialize;

use crate::{
    format::escape::terminal,
    kernel,
    kernel::btf,
    kernel::hierarchy::{Hierarchies, Layout},
    kernel::tracefs,
    probes::{AttachMode, MkdirFailureMode, ProbeOptions, Probes, Tier, WalkMethod, buffer},
};

#[derive(Debug, Serialize)]
pub struct TierResult {
    pub tier: &'static str,
    pub ok: bool,
    /// How the cgroup tracepoints attached alongside, when ok.
    pub attach: Option<&'static str>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub kernel_release: String,
    pub btf: bool,
    pub tracefs: Option<String>,
    /// Whether this kernel can create a BPF ring buffer (tried; the release where trying
    /// failed).
    pub ring_buffer: bool,
    /// The buffer `cgtrace live` would use, and why not the ring buffer where it would not
    /// (None: no tier loaded).
    pub buffer: Option<String>,
    /// How the programs read kernel memory (`bpf_probe_read_kernel`, or `bpf_probe_read`
    /// before 5.5).
    pub kernel_reads: String,
    pub privileges: Result<(), String>,
    pub tiers: Vec<TierResult>,
    /// The tier `cgtrace live` would use.
    pub live_tier: Option<&'static str>,
    /// How `cgtrace live` would catch failed mkdirs, or why it would not (None: no tier loaded).
    pub failed_mkdirs: Option<String>,
    /// How the start-up walk would name memcgs that were dying before start (None: no tier
    /// loaded).
    pub dying_walk: Option<String>,
    /// How `cgtrace live` would trace OOM kills, or why it would not (None: no tier loaded).
    pub oom_kills: Option<String>,
    /// The cgtrace programs loaded on the node now and their run time (bpftop-style).
    pub bpf_cost: Option<crate::pipeline::own_cost::NodePrograms>,
    /// What the kernel lacks that the programs need, when no tier loaded (None: a tier loaded,
    /// or nothing missing was found).
    pub below_floor: Option<String>,
    /// "v1", "v2", "hybrid" or "none".
    pub cgroup_layout: Layout,
    /// Hierarchy holding the memory controller: (id, mount).
    pub memory_hierarchy: Option<(u32, Option<String>)>,
    /// "systemd", "cgroupfs" or "unknown", from the kubepods directories present.
    pub cgroup_driver: &'static str,
    /// Struct offsets resolved from BTF; absent fields are `null`.
    pub offsets: Vec<(&'static str, Option<u32>)>,
}

impl DoctorReport {
    pub fn can_run_live(&self) -> bool {
        self.live_tier.is_some()
    }
}

fn driver(h: &Hierarchies) -> &'static str {
    for x in h.by_id.values() {
        let Some(m) = &x.mount else { continue };
        if m.join("kubepods.slice").is_dir() {
            return "systemd";
        }
        if m.join("kubepods").is_dir() {
            return "cgroupfs";
        }
    }
    "unknown"
}

/// Runs every check. Loading programs needs privileges; without them the tiers say so.
pub fn run() -> DoctorReport {
    let release = kernel::release();
    let hierarchies = Hierarchies::load().unwrap_or_default();
    let offsets = crate::probes::kernel_offsets().ok();
    let tried = try_tiers();
    DoctorReport {
        btf: btf::vmlinux_path().exists(),
        tracefs: tracefs::find().map(|p| p.display().to_string()),
        ring_buffer: buffer::kernel_has_ring().unwrap_or_else(|| {
            kernel::KernelRelease::parse(&release).is_none_or(|k| k.has_ringbuf())
        }),
        buffer: tried.buffer,
        kernel_reads: buffer::kernel_reads(false),
        below_floor: if tried.live_tier.is_none() {
            kernel::floor::FloorFacts::probe(kernel::check_privileges().is_ok()).explain()
        } else {
            None
        },
        privileges: kernel::check_privileges().map_err(|e| e.to_string()),
        kernel_release: release,
        tiers: tried.tiers,
        live_tier: tried.live_tier,
        failed_mkdirs: tried.failed_mkdirs,
        dying_walk: tried.dying_walk,
        oom_kills: tried.oom_kills,
        // After the tiers were tried: their programs are unloaded again.
        bpf_cost: crate::pipeline::own_cost::NodePrograms::read(),
        cgroup_layout: hierarchies.layout(),
        memory_hierarchy: hierarchies
            .memory()
            .map(|h| (h.id, h.mount.as_ref().map(|m| m.display().to_string()))),
        cgroup_driver: driver(&hierarchies),
        offsets: offsets
            .map(|o| {
                btf::named(&o)
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            n,
                            (v != cgtrace_common::KernelOffsets::UNKNOWN).then_some(v),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// What loading each tier for real said.
struct Tried {
    tiers: Vec<TierResult>,
    live_tier: Option<&'static str>,
    failed_mkdirs: Option<String>,
    dying_walk: Option<String>,
    oom_kills: Option<String>,
    buffer: Option<String>,
}

/// The buffer these probes write to, and why.
fn buffer_used(p: &Probes) -> String {
    match (p.events.buffer(), &p.buffer_why) {
        (b, None) => b.name().to_string(),
        (b, Some(why)) => format!("{} ({why})", b.name()),
    }
}

/// What each `--mkdir-failures` mode would report with these probes.
fn failed_mkdirs(p: &Probes) -> String {
    let cgroupfs = match p.half_made_releases() {
        Ok(()) => "failures inside cgroup creation (memcg IDs exhausted, css allocation) from the \
                   half-made cgroup's release, no cost per syscall, no caller"
            .to_string(),
        Err(why) => format!("not reported ({why})"),
    };
    let syscall = match &p.mkdir_failures {
        Ok(h) => format!(
            "every failed mkdir with errno and caller, by {} (every syscall slower)",
            h.describe()
        ),
        Err(why) => format!("not available: {why}"),
    };
    format!("cgroupfs (default): {cgroupfs}; syscall: {syscall}")
}

/// How the start-up walk would run on these probes.
fn walk_method(p: &Probes) -> String {
    match p.try_walk_test_run() {
        Ok(()) => format!(
            "named by a walk run with {} (no cgroupfs write)",
            WalkMethod::TestRun.name()
        ),
        Err(why) => format!(
            "named by a walk on {} (needs a writable cgroupfs; {} not usable: {why})",
            WalkMethod::TriggerCgroup.name(),
            WalkMethod::TestRun.name()
        ),
    }
}

/// Loads every tier in turn, best first; the first that loads is the one `live` would use.
fn try_tiers() -> Tried {
    let mut tried = Tried {
        tiers: Vec::new(),
        live_tier: None,
        failed_mkdirs: None,
        dying_walk: None,
        oom_kills: None,
        buffer: None,
    };
    for t in Tier::ALL {
        let opts = ProbeOptions {
            tier: Some(t),
            attach: AttachMode::Auto,
            ring_size: 64 * 1024,
            // Whether the syscall hooks would attach, for what `--mkdir-failures syscall` adds.
            mkdir_failures: MkdirFailureMode::Syscall,
            ..ProbeOptions::default()
        };
        let result = match Probes::load(&opts) {
            Ok(p) => {
                tried.live_tier.get_or_insert(t.name());
                tried.buffer.get_or_insert_with(|| buffer_used(&p));
                tried.failed_mkdirs.get_or_insert_with(|| failed_mkdirs(&p));
                if tried.dying_walk.is_none() {
                    tried.dying_walk = Some(walk_method(&p));
                }
                tried.oom_kills.get_or_insert_with(|| match &p.oom {
                    Ok(o) => o.describe(),
                    Err(why) => format!("not traced: {why}"),
                });
                TierResult {
                    tier: t.name(),
                    ok: true,
                    attach: Some(p.attached.name()),
                    error: None,
                }
            }
            Err(e) => TierResult {
                tier: t.name(),
                ok: false,
                attach: None,
                error: Some(tier_error(&e)),
            },
        };
        tried.tiers.push(result);
    }
    tried
}

/// "tier X (forced …): reason" → the reason.
fn tier_error(e: &anyhow::Error) -> String {
    let msg = e
        .chain()
        .skip(1)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    if msg.is_empty() {
        format!("{e:#}")
    } else {
        msg
    }
}

/// Writes the report to `out` as text or as one line of JSON. I/O errors keep their kind (a
/// closed pipe is `BrokenPipe`).
pub fn write_report(out: &mut dyn Write, r: &DoctorReport, json: bool) -> io::Result<()> {
    super::write_report(out, r, json, render)
}

/// Human-readable report: the kernel and its features, the tiers, the cgroups, what cgtrace
/// would trace and at what cost. What comes from the host (paths, the kernel release, errors
/// that name files) is escaped for the terminal ([`terminal`]).
pub fn render(r: &DoctorReport) -> String {
    let mut s = render_kernel(r);
    render_cgroups(r, &mut s);
    render_tracing(r, &mut s);
    s
}

/// The kernel, privileges, BTF, tracefs, buffers and the tiers.
fn render_kernel(r: &DoctorReport) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut s = String::new();
    s += &format!("kernel:          {}\n", terminal(&r.kernel_release));
    s += &format!(
        "privileges:      {}\n",
        match &r.privileges {
            Ok(()) => "ok (can load BPF programs)".to_string(),
            Err(e) => terminal(e),
        }
    );
    s += &format!(
        "BTF:             {} ({})\n",
        yes(r.btf),
        terminal(&btf::vmlinux_path().display().to_string())
    );
    s += &format!(
        "tracefs:         {}\n",
        r.tracefs.as_deref().map_or_else(
            || "not mounted (cgtrace mounts it when it needs it)".to_string(),
            terminal
        )
    );
    s += &format!("BPF ring buffer: {}\n", yes(r.ring_buffer));
    if let Some(b) = &r.buffer {
        s += &format!("event buffer:    {b}\n");
    }
    s += &format!("kernel reads:    {}\n", r.kernel_reads);
    for t in &r.tiers {
        match (&t.error, t.attach) {
            (None, Some(a)) => {
                s += &format!("tier {:<11} ok (cgroup tracepoints as {a}s)\n", t.tier)
            }
            (Some(e), _) => s += &format!("tier {:<11} no: {}\n", t.tier, terminal(e)),
            _ => {}
        }
    }
    s
}

/// The cgroup layout, the driver and the BTF offsets found.
fn render_cgroups(r: &DoctorReport, s: &mut String) {
    let mount = |m: &Option<String>| m.as_deref().map_or_else(|| "not mounted".into(), terminal);
    *s += &format!(
        "cgroups:         {}; memory controller on {}\n",
        r.cgroup_layout,
        match &r.memory_hierarchy {
            Some((0, m)) => format!("v2 ({})", mount(m)),
            Some((id, m)) => format!("v1 hierarchy {id} ({})", mount(m)),
            None => "no hierarchy".to_string(),
        }
    );
    *s += &format!(
        "cgroup driver:   {} (from the kubepods directories present)\n",
        r.cgroup_driver
    );
    if !r.offsets.is_empty() {
        let missing: Vec<&str> = r
            .offsets
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        *s += &format!(
            "BTF offsets:     {} resolved{}\n",
            r.offsets.len() - missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; not in this kernel: {}", missing.join(", "))
            }
        );
    }
}

/// What cgtrace would trace here and what it costs.
fn render_tracing(r: &DoctorReport, s: &mut String) {
    if let Some(m) = &r.failed_mkdirs {
        *s += &format!("failed mkdirs:   {m}\n");
    }
    if let Some(w) = &r.dying_walk {
        *s += &format!("dying at start:  {w}\n");
    }
    if let Some(o) = &r.oom_kills {
        *s += &format!("OOM kills:       {o}\n");
    }
    if let Some(c) = &r.bpf_cost {
        *s += &format!("BPF cost:        {}\n", c.render());
    }
    match r.live_tier {
        Some(t) => *s += &format!("cgtrace live would use tier {t}\n"),
        None => {
            *s += "cgtrace live cannot run here\n";
            if let Some(why) = &r.below_floor {
                *s += &format!("below the floor:  {why}\n");
            }
        }
    }
}
