//! The records of a batch frame, read side: the reader's intern rings and the decoding of one
//! record (events, definitions, lost counts, pod names, extensions).

use cgtrace_common::EventKind;

use bytes::BytesMut;

use super::wire::*;
use crate::format::hex;
use crate::kernel::memcg_ids::KernelMemcgs;
use crate::model::oom::{Constraint, OOM_FLAGS_ALL, OomKill, OomLimit, OomMm};

pub(super) struct RSlot {
    pub(super) serial: u64,
    pub(super) known: bool,
    pub(super) def_offset: u64,
    pub(super) bytes: Vec<u8>,
}

/// The reader's side of an intern ring. Its slots are allocated at the first definition.
pub(super) struct ReaderTable {
    pub(super) size: usize,
    pub(super) slots: Vec<RSlot>,
    pub(super) next: u64,
    pub(super) scratch: Vec<u8>,
}

/// What a reference resolves to.
#[derive(Clone, Copy)]
pub(super) enum Resolved {
    Empty,
    Slot(usize),
    /// Defined in a frame lost to damage (or otherwise not available).
    Unknown,
}

impl ReaderTable {
    pub(super) fn new(size: usize) -> ReaderTable {
        ReaderTable {
            size,
            slots: Vec::new(),
            next: 0,
            scratch: Vec::new(),
        }
    }

    pub(super) fn resolve(&self, back: u64, frame_offset: u64) -> Resolved {
        if back == 0 {
            return Resolved::Empty;
        }
        let Some(serial) = self.next.checked_sub(back) else {
            return Resolved::Unknown;
        };
        let i = (serial % self.size as u64) as usize;
        let Some(s) = self.slots.get(i) else {
            return Resolved::Unknown;
        };
        if s.serial == serial
            && s.known
            && s.def_offset.saturating_add(REDEFINE_WINDOW) >= frame_offset
        {
            Resolved::Slot(i)
        } else {
            Resolved::Unknown
        }
    }

    /// Stores `scratch` as the next definition.
    pub(super) fn define_scratch(&mut self, known: bool, frame_offset: u64) {
        let serial = self.next;
        self.next = self.next.wrapping_add(1);
        if self.slots.is_empty() {
            self.slots = (0..self.size)
                .map(|_| RSlot {
                    serial: NO_SERIAL,
                    known: false,
                    def_offset: 0,
                    bytes: Vec::new(),
                })
                .collect();
        }
        let i = (serial % self.size as u64) as usize;
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        std::mem::swap(&mut s.bytes, &mut self.scratch);
        s.serial = serial;
        s.known = known;
        s.def_offset = frame_offset;
    }

    pub(super) fn parse_def_path(&mut self, c: &mut Cur<'_>, frame_offset: u64) -> DResult<()> {
        let base = c.varint()?;
        let hexlen = c.varint()?;
        if hexlen > MAX_INTERNED_LEN as u64 {
            return Err(Malformed("path definition longer than the limit"));
        }
        let hexlen = hexlen as usize;
        let pre = c.bytes()?;
        let (packed, post): (&[u8], &[u8]) = if hexlen > 0 {
            (c.take(hexlen.div_ceil(2))?, c.bytes()?)
        } else {
            (&[], &[])
        };
        let (known, base_bytes): (bool, &[u8]) = match self.resolve(base, frame_offset) {
            Resolved::Empty => (true, &[]),
            Resolved::Slot(i) => (true, &self.slots[i].bytes),
            Resolved::Unknown => (false, &[]),
        };
        let total = base_bytes.len() + pre.len() + hexlen + post.len();
        if total > MAX_INTERNED_LEN {
            return Err(Malformed("path definition longer than the limit"));
        }
        self.scratch.clear();
        self.scratch.reserve(total.max(SLOT_MIN_CAPACITY));
        self.scratch.extend_from_slice(base_bytes);
        self.scratch.extend_from_slice(pre);
        for i in 0..hexlen {
            self.scratch.push(hex::digits_of(packed[i / 2])[i % 2]);
        }
        self.scratch.extend_from_slice(post);
        self.define_scratch(known, frame_offset);
        Ok(())
    }

    pub(super) fn parse_def_comm(&mut self, c: &mut Cur<'_>, frame_offset: u64) -> DResult<()> {
        let s = c.bytes()?;
        if s.len() > MAX_INTERNED_LEN {
            return Err(Malformed("comm definition longer than the limit"));
        }
        self.scratch.clear();
        self.scratch.reserve(s.len().max(SLOT_MIN_CAPACITY));
        self.scratch.extend_from_slice(s);
        self.define_scratch(true, frame_offset);
        Ok(())
    }
}

/// An event's fields before its strings are looked up.
pub(super) struct RawItemEvent {
    pub(super) ts_ns: u64,
    pub(super) kind: EventKind,
    pub(super) hierarchy_id: u32,
    pub(super) cgroup_id: u64,
    pub(super) level: u32,
    pub(super) pid: u32,
    pub(super) tid: u32,
    pub(super) comm: Resolved,
    pub(super) path: Resolved,
    pub(super) path_truncated: bool,
    pub(super) has_cgroup: bool,
    pub(super) css: u64,
    pub(super) memcg_id: Option<u32>,
    pub(super) usage_bytes: Option<u64>,
    pub(super) kmem_bytes: Option<u64>,
    pub(super) memsw_bytes: Option<u64>,
    pub(super) errno: Option<i32>,
    /// `oom_kill`: the OOM block was parsed into the caller's slot; its trigger comm's
    /// reference.
    pub(super) oom: Option<Resolved>,
}

/// The victim's memory of an OOM block: six sizes.
fn read_oom_mm(c: &mut Cur<'_>) -> DResult<OomMm> {
    let mut v = [0u64; 6];
    for x in &mut v {
        *x = mem_dec(c.varint()?);
    }
    Ok(OomMm {
        total_vm_bytes: v[0],
        rss_anon_bytes: v[1],
        rss_file_bytes: v[2],
        rss_shmem_bytes: v[3],
        swap_bytes: v[4],
        pgtables_bytes: v[5],
    })
}

/// The OOM block of an event record (format version 3); the trigger comm is left empty and
/// returned as a reference.
fn parse_oom(
    c: &mut Cur<'_>,
    comms: &ReaderTable,
    frame_offset: u64,
) -> DResult<(OomKill<'static>, Resolved)> {
    let f = c.varint()?;
    if f & !u64::from(OOM_FLAGS_ALL) != 0 {
        return Err(Malformed("unknown OOM flags"));
    }
    let has = |bit: u32| f & u64::from(bit) != 0;
    use cgtrace_common::oom_flags as of;
    let constraint = match c.u8()? {
        v if v <= cgtrace_common::oom_constraint::MEMCG => Constraint::from_u8(v),
        _ => return Err(Malformed("unknown OOM constraint")),
    };
    let oom_score_adj = if has(of::ADJ) {
        Some(i32::try_from(unzigzag(c.varint()?)).map_err(|_| Malformed("oom_score_adj"))?)
    } else {
        None
    };
    let uid = if has(of::UID) {
        Some(c.varint_u32()?)
    } else {
        None
    };
    let mm = if has(of::RSS) {
        Some(read_oom_mm(c)?)
    } else {
        None
    };
    let limit = if has(of::LIMIT) {
        Some(OomLimit {
            cgroup_id: c.varint()?,
            level: c.varint_u32()?,
            usage_bytes: mem_dec(c.varint()?),
            limit_bytes: mem_dec(c.varint()?),
            memsw: has(of::LIMIT_MEMSW),
            path: b"",
        })
    } else {
        None
    };
    let mut mem = |bit: u32| -> DResult<Option<u64>> {
        Ok(if has(bit) {
            Some(mem_dec(c.varint()?))
        } else {
            None
        })
    };
    let victim_limit_bytes = mem(of::VICTIM_MAX)?;
    let totalpages_bytes = mem(of::TOTALPAGES)?;
    let (trigger_pid, trigger) = if has(of::TRIGGER) {
        let pid = c.varint_u32()?;
        (Some(pid), comms.resolve(c.varint()?, frame_offset))
    } else {
        (None, Resolved::Empty)
    };
    let k = OomKill {
        constraint,
        derived: has(of::DERIVED),
        limit,
        victim_limit_bytes,
        oom_score_adj,
        uid,
        mm,
        trigger_pid,
        trigger_comm: Default::default(),
        totalpages_bytes,
        victim_task: has(of::TASK),
        pid_only: has(of::PID_ONLY),
        exiting: has(of::EXITING),
        context: has(of::CONTEXT),
        in_kill: has(of::IN_KILL),
        counted: None,
    };
    Ok((k, trigger))
}

/// One record's outcome.
pub(super) enum Parsed {
    /// A definition, an extension, or something skipped: nothing to yield.
    Nothing,
    Event(RawItemEvent),
    Lost {
        ts_ns: u64,
        kind: EventKind,
        count: u64,
    },
    PodName(String, String, String),
    KernelMemcgs(KernelMemcgs),
    Note(String),
}

/// The batch frame being decoded.
pub(super) struct Active {
    /// Payload bounds in the reader's buffer.
    pub(super) start: usize,
    pub(super) end: usize,
    /// Cursor, relative to `start`.
    pub(super) pos: usize,
    /// File offset of the frame.
    pub(super) offset: u64,
    pub(super) deltas: Deltas,
    pub(super) unresolved: u64,
    pub(super) unknown_kinds: u64,
}

pub(super) fn read_ts(c: &mut Cur<'_>, d: &mut Deltas) -> DResult<u64> {
    let ts = d.prev_ts.wrapping_add(unzigzag(c.varint()?) as u64);
    d.prev_ts = ts;
    Ok(ts)
}

/// The payload of an [`tag::EXT_KERNEL_MEMCGS`] record: `ts_ns`, a presence bitmap (1 live,
/// 2 all, 4 dying), then each present count, all varints. None when it is cut short: an
/// extension a reader cannot decode is skipped.
fn decode_kernel_memcgs(b: &[u8]) -> Option<KernelMemcgs> {
    let mut c = Cur { b, pos: 0 };
    let ts_ns = c.varint().ok()?;
    let present = c.varint().ok()?;
    let mut take = |bit: u64| -> Option<Option<u64>> {
        if present & bit == 0 {
            return Some(None);
        }
        c.varint().ok().map(Some)
    };
    Some(KernelMemcgs {
        ts_ns,
        live: take(1)?,
        all: take(2)?,
        dying: take(4)?,
    })
}

/// The payload of an [`tag::EXT_KERNEL_MEMCGS`] record.
pub(super) fn encode_kernel_memcgs(k: &KernelMemcgs, out: &mut BytesMut) {
    put_varint(out, k.ts_ns);
    let present = u64::from(k.live.is_some())
        | u64::from(k.all.is_some()) << 1
        | u64::from(k.dying.is_some()) << 2;
    put_varint(out, present);
    for v in [k.live, k.all, k.dying].into_iter().flatten() {
        put_varint(out, v);
    }
}

/// An event record (`t` is its kind), after its type byte.
#[inline]
fn parse_event(
    c: &mut Cur<'_>,
    t: u8,
    a: &mut Active,
    paths: &mut ReaderTable,
    comms: &mut ReaderTable,
    oom_slot: &mut OomKill<'static>,
) -> DResult<Parsed> {
    let fl = c.varint()?;
    if fl & !evflag::ALL != 0 {
        return Err(Malformed("unknown event flags"));
    }
    let d = &mut a.deltas;
    let ts_ns = read_ts(c, d)?;
    let hierarchy_id = c.varint_u32()?;
    let slot = hierarchy_id as usize % CGID_SLOTS;
    let cgroup_id = d.cgid[slot].wrapping_add(unzigzag(c.varint()?) as u64);
    d.cgid[slot] = cgroup_id;
    let level = c.varint_u32()?;
    let ks = usize::from(t) % 16;
    let pid = d.pid[ks].wrapping_add(unzigzag(c.varint()?) as u32);
    d.pid[ks] = pid;
    let tid = if fl & evflag::TID != 0 {
        pid.wrapping_add(unzigzag(c.varint()?) as u32)
    } else {
        pid
    };
    let comm = comms.resolve(c.varint()?, a.offset);
    let path = paths.resolve(c.varint()?, a.offset);
    let MemcgFields {
        css,
        memcg_id,
        usage_bytes,
        kmem_bytes,
        memsw_bytes,
    } = read_memcg_fields(c, d, fl)?;
    let errno = if fl & evflag::ERRNO != 0 {
        let e = unzigzag(c.varint()?);
        Some(i32::try_from(e).map_err(|_| Malformed("errno out of range"))?)
    } else {
        None
    };
    let oom = if fl & evflag::OOM != 0 {
        let (k, trigger) = parse_oom(c, comms, a.offset)?;
        *oom_slot = k;
        Some(trigger)
    } else {
        None
    };
    let Some(kind) = EventKind::from_u8(t) else {
        a.unknown_kinds += 1;
        return Ok(Parsed::Nothing);
    };
    let trigger_unknown = matches!(oom, Some(Resolved::Unknown));
    if matches!(comm, Resolved::Unknown) || matches!(path, Resolved::Unknown) || trigger_unknown {
        a.unresolved += 1;
    }
    Ok(Parsed::Event(RawItemEvent {
        ts_ns,
        kind,
        hierarchy_id,
        cgroup_id,
        level,
        pid,
        tid,
        comm,
        path,
        path_truncated: fl & evflag::PATH_TRUNCATED != 0,
        has_cgroup: fl & evflag::HAS_CGROUP != 0,
        css,
        memcg_id,
        usage_bytes,
        kmem_bytes,
        memsw_bytes,
        errno,
        oom,
    }))
}

/// The memcg fields of an event record, each there when its flag in `fl` is.
struct MemcgFields {
    css: u64,
    memcg_id: Option<u32>,
    usage_bytes: Option<u64>,
    kmem_bytes: Option<u64>,
    memsw_bytes: Option<u64>,
}

#[inline]
fn read_memcg_fields(c: &mut Cur<'_>, d: &mut Deltas, fl: u64) -> DResult<MemcgFields> {
    let css = if fl & evflag::CSS != 0 {
        let v = d.css.wrapping_add(unzigzag(c.varint()?) as u64);
        d.css = v;
        v
    } else {
        0
    };
    let memcg_id = if fl & evflag::MEMCG_ID != 0 {
        Some(c.varint_u32()?)
    } else {
        None
    };
    let mut mem = |bit: u64| -> DResult<Option<u64>> {
        Ok(if fl & bit != 0 {
            Some(mem_dec(c.varint()?))
        } else {
            None
        })
    };
    let usage_bytes = mem(evflag::USAGE)?;
    let kmem_bytes = mem(evflag::KMEM)?;
    let memsw_bytes = mem(evflag::MEMSW)?;
    Ok(MemcgFields {
        css,
        memcg_id,
        usage_bytes,
        kmem_bytes,
        memsw_bytes,
    })
}

/// Decodes one record of a batch frame.
pub(super) fn parse_record(
    c: &mut Cur<'_>,
    a: &mut Active,
    paths: &mut ReaderTable,
    comms: &mut ReaderTable,
    oom_slot: &mut OomKill<'static>,
) -> DResult<Parsed> {
    let t = c.u8()?;
    match t {
        1..=tag::EVENT_MAX => parse_event(c, t, a, paths, comms, oom_slot),
        tag::DEF_PATH => {
            paths.parse_def_path(c, a.offset)?;
            Ok(Parsed::Nothing)
        }
        tag::DEF_COMM => {
            comms.parse_def_comm(c, a.offset)?;
            Ok(Parsed::Nothing)
        }
        tag::LOST => {
            let ts_ns = read_ts(c, &mut a.deltas)?;
            let k = c.u8()?;
            let count = c.varint()?;
            match EventKind::from_u8(k) {
                Some(kind) => Ok(Parsed::Lost { ts_ns, kind, count }),
                None => {
                    a.unknown_kinds += 1;
                    Ok(Parsed::Nothing)
                }
            }
        }
        tag::POD_NAME => Ok(Parsed::PodName(c.string()?, c.string()?, c.string()?)),
        tag::EXT_MIN..=tag::EXT_MAX => {
            let b = c.bytes()?;
            Ok(match t {
                tag::EXT_KERNEL_MEMCGS => {
                    decode_kernel_memcgs(b).map_or(Parsed::Nothing, Parsed::KernelMemcgs)
                }
                tag::EXT_NOTE => Parsed::Note(String::from_utf8_lossy(b).into_owned()),
                // Extensions of later writers.
                _ => Parsed::Nothing,
            })
        }
        _ => Err(Malformed("unknown record type")),
    }
}
