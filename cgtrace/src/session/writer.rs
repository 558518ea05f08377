//! [`SessionWriter`]: the preamble, header and baseline frames at once, then events, lost
//! counts and pod names in batch frames, with paths and comms interned.

use std::io::{self, Write};

use bytes::{BufMut, BytesMut};
use cgtrace_common::EventKind;

use super::{Baseline, Header, baseline::encode_baseline_chunks, header::encode_header, wire::*};
use crate::{
    format::hex,
    kernel::memcg_ids::KernelMemcgs,
    model::{
        event::Event,
        hash::{FastMap, hash_bytes},
        oom::OomKill,
    },
};

/// How many parent directories a writer tries as the base of a new path definition.
const MAX_BASE_LEVELS: usize = 4;

struct WSlot {
    serial: u64,
    hash: u64,
    def_offset: u64,
    bytes: Vec<u8>,
}

/// The writer's side of an intern ring: slot `serial % slots`, plus hash → serial.
struct WriterTable {
    slots: Vec<WSlot>,
    /// [`hash_bytes`] of a string → its serial.
    map: FastMap<u64, u64>,
    next: u64,
}

impl WriterTable {
    fn new(n: usize) -> WriterTable {
        let mut map = FastMap::default();
        map.reserve(n);
        WriterTable {
            slots: (0..n)
                .map(|_| WSlot {
                    serial: NO_SERIAL,
                    hash: 0,
                    def_offset: 0,
                    bytes: Vec::new(),
                })
                .collect(),
            map,
            next: 0,
        }
    }

    /// The serial under which `s` may be referenced from the frame at `frame_offset`.
    fn lookup(&self, s: &[u8], hash: u64, frame_offset: u64) -> Option<u64> {
        let serial = *self.map.get(&hash)?;
        let slot = &self.slots[(serial % self.slots.len() as u64) as usize];
        (slot.serial == serial
            && slot.bytes == s
            && slot.def_offset.saturating_add(REDEFINE_WINDOW) >= frame_offset)
            .then_some(serial)
    }

    /// Drops every definition (serials keep counting, so none is reused).
    fn forget_all(&mut self) {
        self.map.clear();
        for slot in &mut self.slots {
            slot.serial = NO_SERIAL;
        }
    }

    fn insert(&mut self, s: &[u8], hash: u64, frame_offset: u64) -> u64 {
        let serial = self.next;
        self.next += 1;
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(serial % n) as usize];
        if slot.serial != NO_SERIAL && self.map.get(&slot.hash) == Some(&slot.serial) {
            self.map.remove(&slot.hash);
        }
        slot.serial = serial;
        slot.hash = hash;
        slot.def_offset = frame_offset;
        slot.bytes.clear();
        // One allocation per slot for every event path (< `PATH_CAP`), then reuse.
        slot.bytes.reserve(s.len().max(SLOT_MIN_CAPACITY));
        slot.bytes.extend_from_slice(s);
        self.map.insert(hash, serial);
        serial
    }
}

/// Appends a path definition if needed; returns the reference to put in the event.
fn intern_path(t: &mut WriterTable, b: &mut BytesMut, p: &[u8], frame_offset: u64) -> u64 {
    if p.is_empty() {
        return 0;
    }
    let hash = hash_bytes(p);
    let serial = match t.lookup(p, hash, frame_offset) {
        Some(s) => s,
        None => define_path(t, b, p, hash, frame_offset, true),
    };
    t.next - serial
}

/// Appends the definition of `p` (not defined yet) and returns its serial. Its base is the
/// nearest ancestor directory still defined; with none, and `define_parent`, the parent
/// directory is defined first (siblings, e.g. the containers of a pod, then share it).
fn define_path(
    t: &mut WriterTable,
    b: &mut BytesMut,
    p: &[u8],
    hash: u64,
    frame_offset: u64,
    define_parent: bool,
) -> u64 {
    let mut base = None;
    let mut end = p.len();
    for _ in 0..MAX_BASE_LEVELS {
        let Some(i) = p[..end].iter().rposition(|&c| c == b'/') else {
            break;
        };
        if i == 0 {
            break;
        }
        let parent = &p[..i];
        if let Some(s) = t.lookup(parent, hash_bytes(parent), frame_offset) {
            base = Some((s, i));
            break;
        }
        end = i;
    }
    if base.is_none()
        && define_parent
        && let Some(i) = p.iter().rposition(|&c| c == b'/')
        && i > 0
    {
        let parent = &p[..i];
        let s = define_path(t, b, parent, hash_bytes(parent), frame_offset, false);
        base = Some((s, i));
    }
    let (base_ref, suffix) = match base {
        Some((s, i)) => (t.next - s, &p[i..]),
        None => (0, p),
    };
    b.put_u8(tag::DEF_PATH);
    put_varint(b, base_ref);
    let (hs, hl) = longest_hex_run(suffix);
    if hl >= MIN_HEX_RUN {
        put_varint(b, hl as u64);
        put_bytes(b, &suffix[..hs]);
        for pair in suffix[hs..hs + hl].chunks(2) {
            b.put_u8(hex::pack_pair(pair));
        }
        put_bytes(b, &suffix[hs + hl..]);
    } else {
        put_varint(b, 0);
        put_bytes(b, suffix);
    }
    t.insert(p, hash, frame_offset)
}

/// Appends a comm definition if needed; returns the serial to refer to (None: empty). Refer to
/// it as `t.next - serial` once every definition the event needs is written.
fn intern_comm(t: &mut WriterTable, b: &mut BytesMut, s: &[u8], frame_offset: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let hash = hash_bytes(s);
    Some(match t.lookup(s, hash, frame_offset) {
        Some(serial) => serial,
        None => {
            b.put_u8(tag::DEF_COMM);
            put_bytes(b, s);
            t.insert(s, hash, frame_offset)
        }
    })
}

/// An event record's flags: which optional fields follow (`errno`: the one recorded).
#[inline]
fn event_flags(ev: &Event<'_>, errno: Option<i32>) -> u64 {
    let mut fl = 0;
    let set = |fl: &mut u64, bit: u64, on: bool| {
        if on {
            *fl |= bit;
        }
    };
    set(&mut fl, evflag::PATH_TRUNCATED, ev.path_truncated);
    set(&mut fl, evflag::HAS_CGROUP, ev.has_cgroup);
    set(&mut fl, evflag::TID, ev.tid != ev.pid);
    set(&mut fl, evflag::CSS, ev.css != 0);
    set(&mut fl, evflag::MEMCG_ID, ev.memcg_id.is_some());
    set(&mut fl, evflag::USAGE, ev.usage_bytes.is_some());
    set(&mut fl, evflag::KMEM, ev.kmem_bytes.is_some());
    set(&mut fl, evflag::MEMSW, ev.memsw_bytes.is_some());
    set(&mut fl, evflag::ERRNO, errno.is_some());
    set(&mut fl, evflag::OOM, ev.oom.is_some());
    fl
}

/// The OOM block of an `oom_kill` event (format version 3).
fn put_oom(b: &mut BytesMut, o: &OomKill<'_>, trigger_ref: u64) {
    put_varint(b, u64::from(o.flags()));
    b.put_u8(o.constraint.as_u8());
    if let Some(a) = o.oom_score_adj {
        put_varint(b, zigzag(i64::from(a)));
    }
    if let Some(u) = o.uid {
        put_varint(b, u64::from(u));
    }
    if let Some(m) = &o.mm {
        for v in [
            m.total_vm_bytes,
            m.rss_anon_bytes,
            m.rss_file_bytes,
            m.rss_shmem_bytes,
            m.swap_bytes,
            m.pgtables_bytes,
        ] {
            put_varint(b, mem_enc(v));
        }
    }
    if let Some(l) = &o.limit {
        put_varint(b, l.cgroup_id);
        put_varint(b, u64::from(l.level));
        put_varint(b, mem_enc(l.usage_bytes));
        put_varint(b, mem_enc(l.limit_bytes));
    }
    for v in [o.victim_limit_bytes, o.totalpages_bytes]
        .into_iter()
        .flatten()
    {
        put_varint(b, mem_enc(v));
    }
    if let Some(p) = o.trigger_pid {
        put_varint(b, u64::from(p));
        put_varint(b, trigger_ref);
    }
}

/// Writes a session: header and baseline at once, then events in batch frames.
///
/// Events, lost counts and pod names are appended to the current batch in memory; a batch
/// becomes a frame (one `write_all` and a `flush`) on [`Self::flush_batch`], which the caller
/// calls periodically, and by itself once it holds [`BATCH_TARGET`] bytes. Call
/// [`Self::finish`] for a clean end; a writer dropped without it loses its open batch.
pub struct SessionWriter<W: Write> {
    out: W,
    buf: BytesMut,
    in_batch: bool,
    batch_events: u32,
    batch_seq: u64,
    bytes_written: u64,
    deltas: Deltas,
    last_ts: u64,
    paths: WriterTable,
    comms: WriterTable,
    events: u64,
    lost: u64,
}

impl<W: Write> SessionWriter<W> {
    /// Writes the preamble, the header frame and the baseline frames to `out`.
    pub fn new(mut out: W, header: &Header, baseline: &Baseline) -> io::Result<Self> {
        // Room for a full batch plus the largest record (an event with a path, its parent and a
        // comm defined), so steady-state batches never reallocate.
        let mut buf = BytesMut::with_capacity(BATCH_TARGET + 4 * MAX_INTERNED_LEN + 256);
        let mut written = 0u64;
        let mut pre = [0u8; PREAMBLE_LEN];
        pre[..8].copy_from_slice(&MAGIC);
        pre[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.write_all(&pre)?;
        written += PREAMBLE_LEN as u64;

        begin_frame(&mut buf);
        encode_header(&mut buf, header)?;
        seal_frame(&mut buf, frame::HEADER, 0)?;
        out.write_all(&buf)?;
        written += buf.len() as u64;

        let chunks = encode_baseline_chunks(baseline)?;
        let total = chunks.len() as u64;
        for (i, (body, n)) in chunks.iter().enumerate() {
            begin_frame(&mut buf);
            put_varint(&mut buf, i as u64);
            put_varint(&mut buf, total);
            put_varint(&mut buf, baseline.taken_at_ns);
            if i == 0 {
                put_varint(&mut buf, baseline.dying_before_start.len() as u64);
                for &(h, count) in &baseline.dying_before_start {
                    put_varint(&mut buf, u64::from(h));
                    put_varint(&mut buf, count);
                }
            } else {
                put_varint(&mut buf, 0);
            }
            put_varint(&mut buf, u64::from(*n));
            buf.put_slice(body);
            seal_frame(&mut buf, frame::BASELINE, *n)?;
            out.write_all(&buf)?;
            written += buf.len() as u64;
        }
        out.flush()?;
        buf.clear();
        Ok(SessionWriter {
            out,
            buf,
            in_batch: false,
            batch_events: 0,
            batch_seq: 0,
            bytes_written: written,
            deltas: Deltas::new(0),
            last_ts: baseline.taken_at_ns.max(header.clock.mono_ns),
            paths: WriterTable::new(PATH_SLOTS),
            comms: WriterTable::new(COMM_SLOTS),
            events: 0,
            lost: 0,
        })
    }

    fn begin_batch(&mut self, ts: u64) {
        if self.in_batch {
            return;
        }
        begin_frame(&mut self.buf);
        put_varint(&mut self.buf, self.batch_seq);
        put_varint(&mut self.buf, ts);
        put_varint(&mut self.buf, self.paths.next);
        put_varint(&mut self.buf, self.comms.next);
        self.deltas = Deltas::new(ts);
        self.batch_events = 0;
        self.in_batch = true;
    }

    fn put_ts(&mut self, ts: u64) {
        put_varint(
            &mut self.buf,
            zigzag(ts.wrapping_sub(self.deltas.prev_ts) as i64),
        );
        self.deltas.prev_ts = ts;
        self.last_ts = ts;
    }

    fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() >= FRAME_HEADER_LEN + BATCH_TARGET || self.batch_events == u32::MAX {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Appends an event to the current batch (no allocation, no system call unless the batch
    /// is full). Paths and comms longer than [`MAX_INTERNED_LEN`] are refused.
    pub fn event(&mut self, ev: &Event<'_>) -> io::Result<()> {
        if ev.path.len() > MAX_INTERNED_LEN || ev.comm.len() > MAX_INTERNED_LEN {
            return Err(invalid(format!(
                "event path ({} bytes) or comm ({} bytes) exceeds the {MAX_INTERNED_LEN}-byte limit",
                ev.path.len(),
                ev.comm.len()
            )));
        }
        self.begin_batch(ev.ts_ns);
        let off = self.bytes_written;
        let comm = intern_comm(&mut self.comms, &mut self.buf, ev.comm, off);
        let trigger = match &ev.oom {
            Some(o) => intern_comm(
                &mut self.comms,
                &mut self.buf,
                o.trigger_comm.as_bytes(),
                off,
            ),
            None => None,
        };
        let next = self.comms.next;
        let comm_ref = comm.map_or(0, |s| next - s);
        let trigger_ref = trigger.map_or(0, |s| next - s);
        let path_ref = intern_path(&mut self.paths, &mut self.buf, ev.path, off);

        // An inferred errno is the pipeline's, not the kernel's: a replay infers it again.
        let errno = ev.errno.filter(|_| !ev.errno_inferred);
        let fl = event_flags(ev, errno);

        let kind = ev.kind as u8;
        self.buf.put_u8(kind);
        put_varint(&mut self.buf, fl);
        self.put_ts(ev.ts_ns);
        let d = &mut self.deltas;
        let b = &mut self.buf;
        put_varint(b, u64::from(ev.hierarchy_id));
        let slot = ev.hierarchy_id as usize % CGID_SLOTS;
        put_varint(b, zigzag(ev.cgroup_id.wrapping_sub(d.cgid[slot]) as i64));
        d.cgid[slot] = ev.cgroup_id;
        put_varint(b, u64::from(ev.level));
        let ks = usize::from(kind) % 16;
        put_varint(b, zigzag(i64::from(ev.pid.wrapping_sub(d.pid[ks]) as i32)));
        d.pid[ks] = ev.pid;
        if ev.tid != ev.pid {
            put_varint(b, zigzag(i64::from(ev.tid.wrapping_sub(ev.pid) as i32)));
        }
        put_varint(b, comm_ref);
        put_varint(b, path_ref);
        if ev.css != 0 {
            put_varint(b, zigzag(ev.css.wrapping_sub(d.css) as i64));
            d.css = ev.css;
        }
        if let Some(v) = ev.memcg_id {
            put_varint(b, u64::from(v));
        }
        for v in [ev.usage_bytes, ev.kmem_bytes, ev.memsw_bytes]
            .into_iter()
            .flatten()
        {
            put_varint(b, mem_enc(v));
        }
        if let Some(e) = errno {
            put_varint(b, zigzag(i64::from(e)));
        }
        if let Some(o) = ev.oom {
            put_oom(b, o, trigger_ref);
        }
        self.batch_events += 1;
        self.events += 1;
        self.maybe_flush()
    }

    /// Records that `count` events of `kind` were lost, noticed at `ts_ns`.
    pub fn lost(&mut self, ts_ns: u64, kind: EventKind, count: u64) -> io::Result<()> {
        self.begin_batch(ts_ns);
        self.buf.put_u8(tag::LOST);
        self.put_ts(ts_ns);
        self.buf.put_u8(kind as u8);
        put_varint(&mut self.buf, count);
        self.lost = self.lost.saturating_add(count);
        self.maybe_flush()
    }

    /// Records a note of what the run could not do.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        check_str("note", text.as_bytes())?;
        self.begin_batch(self.last_ts);
        self.buf.put_u8(tag::EXT_NOTE);
        put_bytes(&mut self.buf, text.as_bytes());
        self.maybe_flush()
    }

    /// Records a reading of the kernel's memcg counters.
    pub fn kernel_memcgs(&mut self, k: &KernelMemcgs) -> io::Result<()> {
        self.begin_batch(self.last_ts.max(k.ts_ns));
        self.buf.put_u8(tag::EXT_KERNEL_MEMCGS);
        let mut payload = BytesMut::with_capacity(32);
        super::batch::encode_kernel_memcgs(k, &mut payload);
        put_bytes(&mut self.buf, &payload);
        self.maybe_flush()
    }

    /// Records a pod name lookup (pod uid → namespace and name).
    pub fn pod_name(&mut self, uid: &str, ns: &str, name: &str) -> io::Result<()> {
        check_str("pod uid", uid.as_bytes())?;
        check_str("pod namespace", ns.as_bytes())?;
        check_str("pod name", name.as_bytes())?;
        self.begin_batch(self.last_ts);
        self.buf.put_u8(tag::POD_NAME);
        for s in [uid, ns, name] {
            put_bytes(&mut self.buf, s.as_bytes());
        }
        self.maybe_flush()
    }

    /// Closes the current batch and writes it as one frame, then flushes `out`. Does nothing
    /// when the batch is empty.
    pub fn flush_batch(&mut self) -> io::Result<()> {
        if !self.in_batch {
            return Ok(());
        }
        self.in_batch = false;
        self.batch_seq += 1;
        let sealed = seal_frame(&mut self.buf, frame::BATCH, self.batch_events);
        let res = sealed
            .and_then(|()| self.out.write_all(&self.buf))
            .and_then(|()| self.out.flush());
        match res {
            Ok(()) => self.bytes_written += self.buf.len() as u64,
            Err(_) => {
                // The frame may not have reached the file: never reference its definitions.
                self.paths.forget_all();
                self.comms.forget_all();
            }
        }
        self.buf.clear();
        res
    }

    /// The output, e.g. to `fsync` it between batches.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The output, mutably. Writing to it directly corrupts the session.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Bytes written to `out` so far (complete frames only; the open batch is not counted).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Bytes waiting in the open batch.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Events written (including the open batch).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Writes the open batch and the footer (end time: CLOCK_MONOTONIC now) and flushes;
    /// returns `out` for the caller to fsync.
    pub fn finish(self) -> io::Result<W> {
        self.finish_at(crate::format::clock::monotonic_ns())
    }

    /// [`Self::finish`] with an explicit end time.
    pub fn finish_at(mut self, end_ns: u64) -> io::Result<W> {
        self.flush_batch()?;
        begin_frame(&mut self.buf);
        put_varint(&mut self.buf, self.events);
        put_varint(&mut self.buf, self.lost);
        put_varint(&mut self.buf, end_ns);
        put_varint(&mut self.buf, self.batch_seq);
        seal_frame(&mut self.buf, frame::FOOTER, 0)?;
        self.out.write_all(&self.buf)?;
        self.bytes_written += self.buf.len() as u64;
        self.out.flush()?;
        Ok(self.out)
    }
}
