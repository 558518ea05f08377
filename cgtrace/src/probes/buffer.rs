//! Where the programs' records go: the BPF ring buffer (Linux 5.8+) or, where it is missing or
//! forced with `--buffer perf`, the perf event array (one perf buffer per CPU), and reading them
//! back in timestamp order.
//!
//! The programs pick their path from a frozen load-time global ([`cgtrace_common::output`]):
//! the verifier follows only that branch. A kernel without the ring buffer cannot even create
//! the ring buffer maps, and aya 0.14 creates every map of an object, so on the perf path the
//! loader turns the object's ring buffer definitions into one-entry arrays before loading it
//! ([`without_ring_buffers`]); the ring code that refers to them is never verified.
//!
//! Each CPU's perf buffer is in order, the set is not: [`PerfReader`] drains every CPU's
//! buffer, then hands over in timestamp order only the records older than a short hold-back
//! ([`HOLD_BACK_NS`]), keeping the rest for the next drain ([`Merge`]). Lost records are
//! counted per kind in the kernel from `bpf_perf_event_output`'s failures (the ring path's
//! counters); the kernel's own lost-record notices (a count only) are kept to check them.
use std::{
    mem::offset_of,
    os::fd::{AsFd as _, RawFd},
};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapType, RingBuf},
    sys::BpfHelper,
};

use super::perf_ring::{PerfRecord, PerfRing, set_array_slot};
use cgtrace_common::{EventKind, OomRecord, RawEvent, names::map};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolSection};
use thiserror::Error;

/// Which buffer to use (`--buffer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BufferChoice {
    /// The ring buffer where the kernel has one (5.8+), else the perf event array.
    #[default]
    Auto,
    /// The BPF ring buffer.
    Ring,
    /// The perf event array, one buffer per CPU.
    Perf,
}

/// How the programs read kernel memory (`--probe-read`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeRead {
    /// `bpf_probe_read_kernel` where the kernel has it (5.5+), else `bpf_probe_read`.
    #[default]
    Auto,
    /// `bpf_probe_read` everywhere, as on kernels before 5.5.
    Legacy,
}

/// The buffer in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Buffer {
    /// The BPF ring buffer (every session before the perf fallback).
    #[default]
    Ring,
    /// The perf event array.
    Perf,
}

impl Buffer {
    pub const ALL: [Buffer; 2] = [Buffer::Ring, Buffer::Perf];

    pub fn name(self) -> &'static str {
        match self {
            Buffer::Ring => "ring",
            Buffer::Perf => "perf",
        }
    }

    /// The buffer of a recorded name.
    pub fn from_name(name: &str) -> Option<Buffer> {
        Buffer::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The value of the programs' `Config::output`.
    pub fn output(self) -> u64 {
        match self {
            Buffer::Ring => cgtrace_common::output::RING,
            Buffer::Perf => cgtrace_common::output::PERF,
        }
    }

    /// What fills up when records are lost, for the lost-event message.
    pub fn what_fills(self) -> &'static str {
        match self {
            Buffer::Ring => "ring buffer full",
            Buffer::Perf => "a CPU's perf buffer full",
        }
    }
}

#[derive(Debug, Error)]
pub enum BufferError {
    #[error("--buffer ring: this kernel has no BPF ring buffer (Linux 5.8+); use --buffer perf")]
    NoRing,
    #[error("the eBPF object does not parse as ELF: {0}")]
    Elf(#[from] object::Error),
    #[error("map {0} is not in the eBPF object's maps section")]
    NoMap(String),
    #[error("cannot list the online CPUs ({0}): {1}")]
    Cpus(&'static str, std::io::Error),
    #[error("opening the perf buffer of CPU {cpu}: {source}")]
    Open { cpu: u32, source: std::io::Error },
    #[error("map {0} is not a perf event array")]
    NotPerf(&'static str),
    #[error(transparent)]
    Map(#[from] aya::maps::MapError),
    #[error("map {0} missing from the object")]
    Missing(&'static str),
}

/// Whether this kernel can create a BPF ring buffer (None: the probe itself failed).
pub fn kernel_has_ring() -> Option<bool> {
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(b) => Some(b),
        Err(e) => {
            log::debug!("probing for the BPF ring buffer failed: {e}");
            None
        }
    }
}

/// The buffer to use for `choice`, and why the ring buffer is not used where it is not.
pub fn choose(
    choice: BufferChoice,
    has_ring: Option<bool>,
) -> Result<(Buffer, Option<String>), BufferError> {
    match (choice, has_ring) {
        (BufferChoice::Perf, _) => Ok((Buffer::Perf, Some("perf buffer forced".to_string()))),
        (BufferChoice::Ring, Some(false)) => Err(BufferError::NoRing),
        (BufferChoice::Ring, _) => Ok((Buffer::Ring, None)),
        (BufferChoice::Auto, Some(false)) => Ok((
            Buffer::Perf,
            Some("this kernel has no BPF ring buffer (Linux 5.8+)".to_string()),
        )),
        // A failed probe: try the ring buffer, whose load failure then says why.
        (BufferChoice::Auto, _) => Ok((Buffer::Ring, None)),
    }
}

/// The eBPF object, 8-byte aligned (the ELF parser reads its headers in place).
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn new(bytes: &[u8]) -> AlignedObject {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        let mut out = AlignedObject {
            words: Vec::new(),
            len: bytes.len(),
        };
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        out.words = words;
        out
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes (u64s seen as bytes: any bit
        // pattern is a valid u8), borrowed for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably for as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// `BPF_MAP_TYPE_ARRAY`, which every kernel with BPF can create.
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// A copy of `object` in which the legacy map definitions (`struct bpf_map_def` in the `maps`
/// section: type, key size, value size, max entries, flags, …) of `maps` describe one-entry
/// arrays of u32: for kernels that cannot create the ring buffers the object defines, whose
/// code the programs' load-time configuration leaves unverified.
pub fn without_ring_buffers(object: &[u8], maps: &[&str]) -> Result<AlignedObject, BufferError> {
    let mut places = Vec::new();
    {
        let file = object::File::parse(object)?;
        for name in maps {
            let place = file.symbols().find_map(|sym| {
                if sym.name().ok()? != *name {
                    return None;
                }
                let SymbolSection::Section(i) = sym.section() else {
                    return None;
                };
                let section = file.section_by_index(i).ok()?;
                if section.name().ok()? != "maps" {
                    return None;
                }
                let (start, size) = section.file_range()?;
                let at = sym.address().checked_sub(section.address())?;
                (at + 16 <= size).then_some((start + at) as usize)
            });
            places.push(place.ok_or_else(|| BufferError::NoMap(name.to_string()))?);
        }
    }
    let mut out = AlignedObject::new(object);
    let bytes = out.bytes_mut();
    for at in places {
        for (i, v) in [BPF_MAP_TYPE_ARRAY, 4, 4, 1].into_iter().enumerate() {
            bytes[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_ne_bytes());
        }
    }
    Ok(out)
}

/// Sets the programs' configuration for `buffer`: the output path, and for the perf buffers no
/// ring wake-ups to ask for.
pub fn configure(cfg: &mut cgtrace_common::Config, buffer: Buffer) {
    cfg.output = buffer.output();
    if buffer == Buffer::Perf {
        cfg.wakeup_bytes = 0;
    }
}

/// The object to load for `cfg`: the embedded one for the ring buffer; for the perf buffers a
/// copy without ring buffer maps (`EVENTS`, and aya-log's unless BPF-side logs are asked for on
/// a kernel that has the ring buffer: its code is pruned with the log level at 0). With
/// `legacy_reads`, every `bpf_probe_read_{kernel,user}[_str]` call becomes
/// `bpf_probe_read[_str]` ([`with_legacy_reads`]).
pub fn object_for(
    cfg: &cgtrace_common::Config,
    debug_log: bool,
    legacy_reads: bool,
) -> Result<Option<AlignedObject>, BufferError> {
    let mut object = if cfg.output == cgtrace_common::output::PERF {
        let keep_logs = debug_log && kernel_has_ring() == Some(true);
        let maps: &[&str] = if keep_logs {
            &[map::EVENTS]
        } else {
            &[map::EVENTS, map::AYA_LOGS]
        };
        Some(without_ring_buffers(super::EBPF_OBJECT, maps)?)
    } else if legacy_reads {
        Some(AlignedObject::new(super::EBPF_OBJECT))
    } else {
        None
    };
    if legacy_reads && let Some(o) = &mut object {
        with_legacy_reads(o)?;
    }
    Ok(object)
}

/// Helper ids (`enum bpf_func_id`).
const BPF_FUNC_PROBE_READ: i32 = BpfHelper::BPF_FUNC_probe_read as i32;
const BPF_FUNC_PROBE_READ_STR: i32 = BpfHelper::BPF_FUNC_probe_read_str as i32;
const BPF_FUNC_PROBE_READ_USER: i32 = BpfHelper::BPF_FUNC_probe_read_user as i32;
const BPF_FUNC_PROBE_READ_KERNEL: i32 = BpfHelper::BPF_FUNC_probe_read_kernel as i32;
const BPF_FUNC_PROBE_READ_USER_STR: i32 = BpfHelper::BPF_FUNC_probe_read_user_str as i32;
const BPF_FUNC_PROBE_READ_KERNEL_STR: i32 = BpfHelper::BPF_FUNC_probe_read_kernel_str as i32;

/// How the programs read kernel and user memory here, for the reports.
pub fn kernel_reads(forced_legacy: bool) -> String {
    if forced_legacy {
        "bpf_probe_read (forced)".to_string()
    } else if kernel_has_probe_read_kernel() {
        "bpf_probe_read_kernel".to_string()
    } else {
        "bpf_probe_read (this kernel has no bpf_probe_read_kernel, Linux 5.5+)".to_string()
    }
}

/// Turns every helper call to `bpf_probe_read_{kernel,user}` into `bpf_probe_read`, and the
/// `_str` ones into `bpf_probe_read_str`, in the object's code: what aya 0.14 does itself at
/// load on kernels without `bpf_probe_read_kernel` (before 5.5; aya-obj's
/// `Function::sanitize`, from its own probe of the helper), done here to force it on newer
/// kernels (tests on the VM matrix). Returns how many calls were rewritten.
pub fn with_legacy_reads(object: &mut AlignedObject) -> Result<usize, BufferError> {
    let mut ranges = Vec::new();
    {
        let file = object::File::parse(object.bytes())?;
        for section in file.sections() {
            if section.kind() == object::SectionKind::Text
                && let Some((start, size)) = section.file_range()
            {
                ranges.push((start as usize, size as usize));
            }
        }
    }
    let bytes = object.bytes_mut();
    let mut n = 0;
    for (start, size) in ranges {
        let Some(code) = bytes.get_mut(start..start + size) else {
            continue;
        };
        for insn in code.chunks_exact_mut(8) {
            // BPF_JMP | BPF_CALL | BPF_K with no registers: a helper call (the second half of a
            // 16-byte load has opcode 0).
            if insn[0] != 0x85 || insn[1] != 0 {
                continue;
            }
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            let to = match imm {
                BPF_FUNC_PROBE_READ_KERNEL | BPF_FUNC_PROBE_READ_USER => BPF_FUNC_PROBE_READ,
                BPF_FUNC_PROBE_READ_KERNEL_STR | BPF_FUNC_PROBE_READ_USER_STR => {
                    BPF_FUNC_PROBE_READ_STR
                }
                _ => continue,
            };
            insn[4..8].copy_from_slice(&to.to_le_bytes());
            n += 1;
        }
    }
    Ok(n)
}

/// Whether this kernel has `bpf_probe_read_kernel` (5.5+), as aya found at start-up; where it
/// has not, aya's loader makes the programs read with `bpf_probe_read` instead.
pub fn kernel_has_probe_read_kernel() -> bool {
    aya::features().bpf_probe_read_kernel()
}

/// Pages per CPU's perf buffer for a total of `total_bytes` (`--ring-size`) over `cpus` CPUs:
/// a power of two, at least one.
pub fn pages_per_cpu(total_bytes: u64, cpus: usize, page: u64) -> usize {
    let per_cpu = (total_bytes / page.max(1) / cpus.max(1) as u64).max(1);
    // The largest power of two not above it.
    1usize << (63 - per_cpu.leading_zeros())
}

/// How long a record is held back before it is handed over: longer than a program takes from
/// reading the clock to writing its record, so a drain that starts at `t` has every record
/// stamped before `t - HOLD_BACK_NS` from every CPU.
pub const HOLD_BACK_NS: u64 = 10_000_000;

/// Records from the CPUs' buffers, handed over in timestamp order.
#[derive(Default)]
pub struct Merge {
    arena: Vec<u8>,
    spare: Vec<u8>,
    held: Vec<Held>,
    /// Order of arrival, for equal timestamps (a CPU's own order).
    seq: u64,
    /// The last timestamp handed over.
    last_ts: u64,
    /// Records that came in older than one already handed over (only if a program took longer
    /// than the hold-back); handed over anyway, counted.
    pub late: u64,
}

#[derive(Clone, Copy)]
struct Held {
    ts: u64,
    seq: u64,
    off: usize,
    len: usize,
}

/// The length of the record at the start of `bytes`: a perf sample carries the kernel's
/// alignment padding after it, cut here so the records are the ring buffer's, byte for byte.
pub fn record_len(head: &[u8], total: usize) -> usize {
    let kind = head.get(offset_of!(RawEvent, kind)).copied();
    let want = if kind == Some(EventKind::OomKill as u8) {
        size_of::<OomRecord>()
    } else {
        size_of::<RawEvent>()
    };
    total.min(want)
}

impl Merge {
    /// Takes one record, given as up to two pieces (a sample that wraps around its buffer).
    pub fn push(&mut self, head: &[u8], tail: &[u8]) {
        let len = record_len(head, head.len() + tail.len());
        let off = self.arena.len();
        let from_head = len.min(head.len());
        self.arena.extend_from_slice(&head[..from_head]);
        self.arena.extend_from_slice(&tail[..len - from_head]);
        let mut ts = [0u8; 8];
        if let Some(b) = self.arena.get(off..off + 8) {
            ts.copy_from_slice(b);
        }
        self.held.push(Held {
            ts: u64::from_ne_bytes(ts),
            seq: self.seq,
            off,
            len,
        });
        self.seq += 1;
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Hands over, oldest first, every record stamped at or before `cutoff_ns`; keeps the rest.
    /// Returns how many were handed over.
    pub fn release(&mut self, cutoff_ns: u64, mut f: impl FnMut(&[u8])) -> usize {
        self.held.sort_unstable_by_key(|h| (h.ts, h.seq));
        let n = self.held.partition_point(|h| h.ts <= cutoff_ns);
        for h in &self.held[..n] {
            if h.ts < self.last_ts {
                self.late += 1;
            }
            self.last_ts = self.last_ts.max(h.ts);
            f(&self.arena[h.off..h.off + h.len]);
        }
        // What is kept moves to the spare arena, which becomes the arena (capacities are
        // reused: no allocation once they have grown to a buffer's worth).
        self.spare.clear();
        let mut kept = 0;
        for i in n..self.held.len() {
            let h = self.held[i];
            let off = self.spare.len();
            self.spare
                .extend_from_slice(&self.arena[h.off..h.off + h.len]);
            self.held[kept] = Held { off, ..h };
            kept += 1;
        }
        self.held.truncate(kept);
        std::mem::swap(&mut self.arena, &mut self.spare);
        n
    }
}

/// The perf buffers of every online CPU and the merge of their records.
pub struct PerfReader {
    /// Keeps the array (and the buffers' slots in it) alive.
    _array: MapData,
    bufs: Vec<PerfRing>,
    merge: Merge,
    /// Records the kernel said it dropped (its lost-record notices).
    notices: u64,
    pages_per_cpu: usize,
}

impl PerfReader {
    /// Opens one perf buffer per online CPU, `total_bytes` over all of them.
    pub fn open(ebpf: &mut Ebpf, total_bytes: u64) -> Result<PerfReader, BufferError> {
        let cpus = aya::util::online_cpus().map_err(|(what, e)| BufferError::Cpus(what, e))?;
        let pages = pages_per_cpu(total_bytes, cpus.len(), crate::kernel::page_size());
        let Map::PerfEventArray(array) = ebpf
            .take_map(map::PERF_EVENTS)
            .ok_or(BufferError::Missing(map::PERF_EVENTS))?
        else {
            return Err(BufferError::NotPerf(map::PERF_EVENTS));
        };
        let page = crate::kernel::page_size() as usize;
        // Wake a waiter (there is none: the buffers are drained on a timer) only once half a
        // buffer waits, not for every record as aya's buffers do.
        let watermark = (pages * page / 2) as u32;
        let bufs = cpus
            .iter()
            .map(|&cpu| {
                let ring = PerfRing::open(cpu, pages, page, watermark)
                    .map_err(|source| BufferError::Open { cpu, source })?;
                set_array_slot(array.fd().as_fd(), cpu, ring.fd())
                    .map_err(|source| BufferError::Open { cpu, source })?;
                Ok(ring)
            })
            .collect::<Result<Vec<_>, BufferError>>()?;
        Ok(PerfReader {
            _array: array,
            bufs,
            merge: Merge::default(),
            notices: 0,
            pages_per_cpu: pages,
        })
    }

    /// Reads every CPU's buffer, then hands over in timestamp order the records stamped at or
    /// before `cutoff_ns`.
    pub fn drain(&mut self, cutoff_ns: u64, f: impl FnMut(&[u8])) -> usize {
        let PerfReader {
            bufs,
            merge,
            notices,
            ..
        } = self;
        for buf in bufs.iter_mut() {
            buf.read(|e| match e {
                PerfRecord::Sample { head, tail } => merge.push(head, tail),
                PerfRecord::Lost(count) => *notices += count,
            });
        }
        let n = merge.release(cutoff_ns, f);
        if merge.late > 0 {
            log::debug!("{} perf records arrived after newer ones", merge.late);
        }
        n
    }

    /// The kernel's lost-record notices so far.
    pub fn notices(&self) -> u64 {
        self.notices
    }

    pub fn pages_per_cpu(&self) -> usize {
        self.pages_per_cpu
    }

    pub fn cpus(&self) -> usize {
        self.bufs.len()
    }
}

/// The records' source: one of the two buffers.
pub enum Events {
    Ring(RingBuf<MapData>),
    Perf(Box<PerfReader>),
}

impl Events {
    /// Takes the configured buffer's map out of a loaded object (`total_bytes`: the perf
    /// buffers' share of `--ring-size`).
    pub fn take(ebpf: &mut Ebpf, buffer: Buffer, total_bytes: u64) -> Result<Events, BufferError> {
        Ok(match buffer {
            Buffer::Ring => Events::Ring(RingBuf::try_from(
                ebpf.take_map(map::EVENTS)
                    .ok_or(BufferError::Missing(map::EVENTS))?,
            )?),
            Buffer::Perf => Events::Perf(Box::new(PerfReader::open(ebpf, total_bytes)?)),
        })
    }

    pub fn buffer(&self) -> Buffer {
        match self {
            Events::Ring(_) => Buffer::Ring,
            Events::Perf(_) => Buffer::Perf,
        }
    }

    /// The fd to wait on (the ring buffer's); None for the perf buffers, drained on a timer
    /// only (their watermark is half a buffer: a wait would take that long).
    pub fn wait_fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd as _;
        match self {
            Events::Ring(r) => Some(r.as_raw_fd()),
            Events::Perf(_) => None,
        }
    }

    /// Hands over up to `max` records (the ring's; the perf buffers hand over everything that
    /// is due, in timestamp order); returns how many.
    pub fn drain(&mut self, max: usize, now_ns: u64, f: impl FnMut(&[u8])) -> usize {
        self.drain_until(max, now_ns.saturating_sub(HOLD_BACK_NS), f)
    }

    /// Everything, the held-back records too: at the end of a run.
    pub fn drain_all(&mut self, max: usize, f: impl FnMut(&[u8])) -> usize {
        self.drain_until(max, u64::MAX, f)
    }

    fn drain_until(&mut self, max: usize, cutoff_ns: u64, mut f: impl FnMut(&[u8])) -> usize {
        match self {
            Events::Ring(ring) => {
                let mut n = 0;
                while n < max {
                    let Some(item) = ring.next() else { break };
                    f(&item);
                    n += 1;
                }
                n
            }
            Events::Perf(p) => p.drain(cutoff_ns, f),
        }
    }

    /// The kernel's lost-record notices (perf buffers only).
    pub fn notices(&self) -> Option<u64> {
        match self {
            Events::Ring(_) => None,
            Events::Perf(p) => Some(p.notices()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `kind` stamped `ts`, with the perf sample's padding after it.
    fn sample(ts: u64, kind: EventKind, tag: u8) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<RawEvent>() + 4];
        b[..8].copy_from_slice(&ts.to_ne_bytes());
        b[offset_of!(RawEvent, kind)] = kind as u8;
        b[offset_of!(RawEvent, path)] = tag;
        b
    }

    fn tags(out: &[Vec<u8>]) -> Vec<(u64, u8)> {
        out.iter()
            .map(|r| {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&r[..8]);
                (u64::from_ne_bytes(ts), r[offset_of!(RawEvent, path)])
            })
            .collect()
    }

    #[test]
    fn merges_cpus_in_timestamp_order_across_drains() {
        let mut m = Merge::default();
        let mut out = Vec::new();
        // CPU 0 then CPU 1, each in order; together out of order.
        for (ts, tag) in [(10, 1), (40, 2), (70, 3)] {
            m.push(&sample(ts, EventKind::Mkdir, tag), &[]);
        }
        for (ts, tag) in [(20, 4), (30, 5), (80, 6)] {
            m.push(&sample(ts, EventKind::Rmdir, tag), &[]);
        }
        // Drained at 60 with nothing younger than 50 handed over.
        assert_eq!(m.release(50, |r| out.push(r.to_vec())), 4);
        assert_eq!(tags(&out), [(10, 1), (20, 4), (30, 5), (40, 2)]);
        assert_eq!(m.len(), 2);
        // The next drain brings CPU 1's 60 and CPU 0's 90: the held records merge with them.
        m.push(&sample(90, EventKind::Mkdir, 7), &[]);
        m.push(&sample(60, EventKind::Rmdir, 8), &[]);
        assert_eq!(m.release(85, |r| out.push(r.to_vec())), 3);
        assert_eq!(m.release(u64::MAX, |r| out.push(r.to_vec())), 1);
        let ts: Vec<u64> = tags(&out).iter().map(|t| t.0).collect();
        assert_eq!(ts, [10, 20, 30, 40, 60, 70, 80, 90]);
        assert_eq!(tags(&out)[4..], [(60, 8), (70, 3), (80, 6), (90, 7)]);
        assert_eq!(m.late, 0);
        assert!(m.is_empty());
        // Every record is the ring buffer's size: the padding is cut.
        assert!(out.iter().all(|r| r.len() == size_of::<RawEvent>()));
    }

    #[test]
    fn equal_timestamps_keep_their_order_and_late_records_are_counted() {
        let mut m = Merge::default();
        let mut out = Vec::new();
        for tag in 1..=3 {
            m.push(&sample(5, EventKind::Mkdir, tag), &[]);
        }
        m.release(5, |r| out.push(r.to_vec()));
        m.push(&sample(4, EventKind::Mkdir, 9), &[]);
        m.release(10, |r| out.push(r.to_vec()));
        assert_eq!(tags(&out), [(5, 1), (5, 2), (5, 3), (4, 9)]);
        assert_eq!(m.late, 1);
    }

    #[test]
    fn wrapped_samples_and_oom_records_keep_their_length() {
        let mut m = Merge::default();
        let mut oom = vec![0u8; size_of::<OomRecord>() + 4];
        oom[..8].copy_from_slice(&7u64.to_ne_bytes());
        oom[offset_of!(RawEvent, kind)] = EventKind::OomKill as u8;
        let (head, tail) = oom.split_at(100);
        m.push(head, tail);
        let mut out = Vec::new();
        m.release(u64::MAX, |r| out.push(r.to_vec()));
        assert_eq!(out, [oom[..size_of::<OomRecord>()].to_vec()]);
    }

    #[test]
    fn perf_buffer_sizes() {
        // 4 MiB over 2 CPUs of 4 KiB pages: 512 pages each; one page when the total is less.
        assert_eq!(pages_per_cpu(4 << 20, 2, 4096), 512);
        assert_eq!(pages_per_cpu(4096, 2, 4096), 1);
        assert_eq!(pages_per_cpu(3 << 20, 1, 4096), 512);
        assert_eq!(pages_per_cpu(0, 0, 4096), 1);
    }

    #[test]
    fn choice() {
        assert_eq!(
            choose(BufferChoice::Auto, Some(true)).ok().map(|c| c.0),
            Some(Buffer::Ring)
        );
        assert_eq!(
            choose(BufferChoice::Auto, Some(false)).ok().map(|c| c.0),
            Some(Buffer::Perf)
        );
        assert_eq!(
            choose(BufferChoice::Auto, None).ok().map(|c| c.0),
            Some(Buffer::Ring)
        );
        assert!(matches!(
            choose(BufferChoice::Ring, Some(false)),
            Err(BufferError::NoRing)
        ));
        assert_eq!(
            choose(BufferChoice::Perf, Some(true)).ok().map(|c| c.0),
            Some(Buffer::Perf)
        );
        for b in Buffer::ALL {
            assert_eq!(Buffer::from_name(b.name()), Some(b));
        }
    }

    #[test]
    fn legacy_reads_rewrite_every_read_helper_call() {
        let count = |o: &AlignedObject, ids: &[i32]| {
            let file = object::File::parse(o.bytes()).expect("parses");
            file.sections()
                .filter(|s| s.kind() == object::SectionKind::Text)
                .flat_map(|s| {
                    s.data()
                        .expect("data")
                        .chunks_exact(8)
                        .map(<[u8]>::to_vec)
                        .collect::<Vec<_>>()
                })
                .filter(|i| {
                    i[0] == 0x85
                        && i[1] == 0
                        && ids.contains(&i32::from_le_bytes([i[4], i[5], i[6], i[7]]))
                })
                .count()
        };
        let modern = [
            BPF_FUNC_PROBE_READ_KERNEL,
            BPF_FUNC_PROBE_READ_USER,
            BPF_FUNC_PROBE_READ_KERNEL_STR,
            BPF_FUNC_PROBE_READ_USER_STR,
        ];
        let legacy = [BPF_FUNC_PROBE_READ, BPF_FUNC_PROBE_READ_STR];
        let plain = AlignedObject::new(super::super::EBPF_OBJECT);
        let before = count(&plain, &modern);
        assert!(
            before > 100,
            "the programs read kernel memory: {before} calls"
        );
        assert_eq!(count(&plain, &legacy), 0);
        let mut o = AlignedObject::new(super::super::EBPF_OBJECT);
        assert_eq!(with_legacy_reads(&mut o).expect("rewrites"), before);
        assert_eq!(count(&o, &modern), 0);
        assert_eq!(count(&o, &legacy), before);
    }

    #[test]
    fn ring_buffers_become_arrays() {
        let obj = without_ring_buffers(super::super::EBPF_OBJECT, &[map::EVENTS, map::AYA_LOGS])
            .expect("patches");
        let file = object::File::parse(obj.bytes()).expect("parses");
        let maps = file.section_by_name("maps").expect("maps section");
        let data = maps.data().expect("data");
        for name in [map::EVENTS, map::AYA_LOGS] {
            let sym = file
                .symbols()
                .find(|s| s.name() == Ok(name))
                .expect("symbol");
            let at = sym.address() as usize;
            let word = |i: usize| {
                u32::from_ne_bytes(
                    data[at + 4 * i..at + 4 * i + 4]
                        .try_into()
                        .expect("4 bytes"),
                )
            };
            assert_eq!(
                (word(0), word(1), word(2), word(3)),
                (BPF_MAP_TYPE_ARRAY, 4, 4, 1)
            );
        }
        assert!(matches!(
            without_ring_buffers(super::super::EBPF_OBJECT, &["NO_SUCH_MAP"]),
            Err(BufferError::NoMap(_))
        ));
    }
}
