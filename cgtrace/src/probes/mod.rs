//! Loading and attaching the eBPF programs: the cgroup tracepoints as raw tracepoints (reading
//! `struct cgroup` with BTF-resolved offsets) or, where those are missing, as classic tracepoints
//! (field places from tracefs `format` files).

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use aya_log::EbpfLogger;
use cgtrace_common::{EventKind, KernelOffsets, PATH_CAP, Subtree};

use crate::{kernel, model::oom::OomTracing};

pub mod buffer;
mod css;
mod load;
mod mkdir_failures;
#[cfg(test)]
mod names;
mod offsets;
mod oom;
mod perf_ring;
mod tracepoints;
mod walk;

pub use mkdir_failures::{
    CGROUPFS_PREFIX, MkdirFailureAttach, MkdirFailureHooks, MkdirFailureMode,
};
pub use offsets::kernel_offsets;
use walk::WalkSetup;
pub use walk::{WalkMethod, WalkReport, WalkTask, walk_trigger_prefix};

/// The eBPF object, built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgtrace"));

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
    /// Ring buffer bytes (a power of two, multiple of the page size); the perf buffers share
    /// them among the CPUs.
    pub ring_size: u32,
    /// Which buffer the programs write to.
    pub buffer: buffer::BufferChoice,
    /// Read memory with `bpf_probe_read[_str]` even where the kernel has
    /// `bpf_probe_read_{kernel,user}[_str]` (what aya does by itself before 5.5): tests.
    pub legacy_reads: bool,
    /// Only these hierarchy ids (None = all).
    pub hierarchies: Option<Vec<u32>>,
    /// rmdir and release leave out the path of a memcg whose mkdir was reported with it (raw
    /// tracepoints, no path prefix): [`crate::pipeline::Pipeline`] puts the tracker's back.
    /// Off for consumers that read the records themselves and want every path.
    pub omit_known_paths: bool,
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
            buffer: buffer::BufferChoice::Auto,
            legacy_reads: false,
            hierarchies: None,
            omit_known_paths: true,
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
    /// The buffer the records come through.
    pub events: buffer::Events,
    /// Why the ring buffer is not used (None: it is).
    pub buffer_why: Option<String>,
    /// How the programs read memory (`bpf_probe_read_kernel`, or `bpf_probe_read` and why).
    pub kernel_reads: String,
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

/// Rounds a requested ring size to what the kernel accepts.
pub fn ring_size(requested: u64) -> anyhow::Result<u32> {
    let page = kernel::page_size();
    if requested < page {
        bail!("ring size {requested} is smaller than a page ({page} bytes)");
    }
    let size = requested.next_power_of_two();
    u32::try_from(size).map_err(|_| anyhow!("ring size {requested} is too large (max 2 GiB)"))
}

impl Probes {
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

    /// Why failed mkdirs are not traced (None: they are).
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

    /// Drains up to `max` records without blocking, calling `f` with each record's bytes.
    /// Returns how many were drained. The perf buffers hand over, in timestamp order, what is
    /// older than a short hold-back (see [`buffer::HOLD_BACK_NS`]).
    pub fn drain(&mut self, max: usize, f: impl FnMut(&[u8])) -> usize {
        self.events
            .drain(max, crate::format::clock::monotonic_ns(), f)
    }

    /// [`Probes::drain`], the held-back records too: at the end, or where order across
    /// drains does not matter (tests).
    pub fn drain_all(&mut self, max: usize, f: impl FnMut(&[u8])) -> usize {
        self.events.drain_all(max, f)
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
