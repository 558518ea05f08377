//! Loading and attaching the eBPF programs: the cgroup tracepoints as raw tracepoints (reading
//! `struct cgroup` with BTF-resolved offsets) or, where those are missing, as classic tracepoints
//! (field places from tracefs `format` files).
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use aya_log::EbpfLogger;
use cgtrace_common::{Config, EventKind, KernelOffsets, MAX_HIERARCHIES, PATH_CAP};

use crate::{btf, kernel, tracefs};

/// The eBPF object, built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgtrace"));

/// The hooks on the cgroup tracepoints: (tracepoint, raw program, classic program).
const CGROUP_HOOKS: [(&str, &str, &str); 3] = [
    ("cgroup_mkdir", "raw_cgroup_mkdir", "tp_cgroup_mkdir"),
    ("cgroup_rmdir", "raw_cgroup_rmdir", "tp_cgroup_rmdir"),
    ("cgroup_release", "raw_cgroup_release", "tp_cgroup_release"),
];

pub const DEFAULT_RING_SIZE: u32 = 4 << 20;

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
}

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub attach: AttachMode,
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
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            attach: AttachMode::Auto,
            ring_size: DEFAULT_RING_SIZE,
            hierarchies: None,
            path_prefix: None,
            wakeup_bytes: None,
            bpf_debug_log: false,
        }
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
}

/// Rounds a requested ring size to what the kernel accepts.
pub fn ring_size(requested: u64) -> anyhow::Result<u32> {
    let page = 4096u64;
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
    cfg.wakeup_bytes = opts.wakeup_bytes.unwrap_or(u64::from(opts.ring_size) / 8);
    Ok((cfg, prefix))
}

fn load_object(opts: &ProbeOptions, cfg: &Config, prefix: &[u8; PATH_CAP]) -> anyhow::Result<Ebpf> {
    let level: u8 = if opts.bpf_debug_log { 4 } else { 0 };
    EbpfLoader::new()
        .override_global("CONFIG", cfg, true)
        .override_global("PATH_PREFIX", prefix, true)
        .override_global(aya_log::LEVEL, &level, false)
        .map_max_entries("EVENTS", opts.ring_size)
        .load(EBPF_OBJECT)
        .context("failed to load the eBPF object")
}

fn attach_raw(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for (tp, prog, _) in CGROUP_HOOKS {
        let p: &mut RawTracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {prog}"))?;
        p.attach(tp)
            .with_context(|| format!("attaching raw tracepoint {tp}"))?;
    }
    Ok(())
}

fn attach_classic(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for (tp, _, prog) in CGROUP_HOOKS {
        let p: &mut TracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {prog}"))?;
        p.attach("cgroup", tp)
            .with_context(|| format!("attaching tracepoint cgroup:{tp}"))?;
    }
    Ok(())
}

/// Offsets for the raw tracepoint programs, or why they cannot be had.
fn raw_offsets() -> anyhow::Result<KernelOffsets> {
    let data = btf::read_vmlinux(Path::new(btf::VMLINUX))?;
    let kbtf = btf::KernelBtf::parse(&data, btf::VMLINUX)?;
    let off = btf::cgroup_offsets(&kbtf);
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
        let kernel_release = kernel::release();
        kernel::check_privileges()?;
        kernel::check_ring_buffer(&kernel_release)?;
        kernel::raise_memlock();
        let (mut cfg, prefix) = base_config(opts)?;
        let mut fallbacks = Vec::new();

        let mut attached = None;
        if opts.attach != AttachMode::Classic {
            let raw = raw_offsets().and_then(|off| {
                cfg.offsets = off;
                let mut ebpf = load_object(opts, &cfg, &prefix)?;
                attach_raw(&mut ebpf)?;
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
                cfg.offsets = KernelOffsets::NONE;
                cfg.tracepoint = classic_layout()?;
                let mut ebpf = load_object(opts, &cfg, &prefix)?;
                attach_classic(&mut ebpf)?;
                (ebpf, Attached::Tracepoint)
            }
        };

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
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("map EVENTS missing from the object"))?,
        )?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map("LOST")
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
        })
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
