//! [`SessionReader`]: finds valid frames (skipping and reporting damage), decodes the header
//! and baseline, then yields the batch records as [`Item`]s.

use std::io::{self, Read};

use cgtrace_common::EventKind;
use thiserror::Error;

use super::{
    Baseline, Header,
    baseline::decode_baseline_chunk,
    batch::{Active, Parsed, RawItemEvent, ReaderTable, Resolved, parse_record},
    header::decode_header,
    wire::*,
};
use crate::{
    kernel::memcg_ids::KernelMemcgs,
    model::{
        event::Event,
        oom::{Comm, OomKill},
    },
};

/// Warnings kept; more are counted.
const MAX_WARNINGS: usize = 100;
/// Free room kept after the reader's data before each `read`.
const READ_ROOM: usize = 64 << 10;

/// Everything a reader yields, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// Always first (boxed: events, the common item, stay small to move).
    Header(Box<Header>),
    /// Right after the header (empty, with a warning, when its frames were lost to damage).
    Baseline(Baseline),
    /// An event, borrowing the reader's buffers.
    Event(Event<'a>),
    /// `count` events of `kind` were lost (ring buffer full), noticed at `ts_ns`.
    Lost {
        /// CLOCK_MONOTONIC time the loss was noticed.
        ts_ns: u64,
        /// Kind of the lost events.
        kind: EventKind,
        /// Events lost since the previous report of this kind.
        count: u64,
    },
    /// A pod name lookup made during the live run.
    PodName {
        /// The pod's UID, as in its cgroup path.
        pod_uid: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A reading of the kernel's memcg counters the live run made (the memcg ID headroom
    /// follows it).
    KernelMemcgs(KernelMemcgs),
    /// A note of what the live run could not do.
    Note(String),
    /// Clean end: totals written by the recorder.
    Footer {
        /// Events written.
        events: u64,
        /// Sum of the lost counts written.
        lost: u64,
        /// CLOCK_MONOTONIC time recording ended.
        end_ns: u64,
    },
}

/// Why a session file cannot be read.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The input does not start with [`MAGIC`].
    #[error("not a cgtrace session file (it does not start with the session magic)")]
    NotASession,
    /// The file's format version is not one this reader reads
    /// ([`MIN_FORMAT_VERSION`]..=[`FORMAT_VERSION`]).
    #[error(
        "session file format version {file} is not supported: this cgtrace reads format version {supported} and older{}",
        version_hint(*.file, *.supported)
    )]
    Version {
        /// Version in the file.
        file: u16,
        /// The newest version this reader reads.
        supported: u16,
    },
    /// The file starts with the magic but ends inside the preamble.
    #[error("session file truncated: {len} bytes, the preamble alone needs {PREAMBLE_LEN}")]
    Truncated {
        /// Bytes in the file.
        len: usize,
    },
    /// The header frame (the first frame) is damaged, malformed or missing.
    #[error("session header damaged at byte {offset}: {reason}; cannot replay without it")]
    BadHeader {
        /// File offset of the frame.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the input failed.
    #[error("failed to read the session file")]
    Io(#[from] io::Error),
}

fn version_hint(file: u16, supported: u16) -> &'static str {
    if file > supported {
        " (the file was written by a newer cgtrace: upgrade cgtrace to read it)"
    } else {
        ""
    }
}

/// Counters a reader keeps while decoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Valid frames read.
    pub frames: u64,
    /// Events yielded.
    pub events: u64,
    /// Sum of the counts of the `Lost` items yielded.
    pub lost: u64,
    /// Bytes skipped because they were damaged.
    pub bytes_skipped: u64,
    /// Damaged regions skipped.
    pub damaged_regions: u64,
    /// Events yielded with an empty path or comm because its definition was lost to damage.
    pub unresolved_refs: u64,
    /// Events and lost counts of kinds this cgtrace does not know (skipped).
    pub unknown_kinds: u64,
}

/// A valid frame found in the reader's buffer.
#[derive(Clone, Copy)]
struct FrameLoc {
    ty: u8,
    offset: u64,
    /// Payload bounds in the reader's buffer.
    start: usize,
    end: usize,
}

/// What reading a frame outside a batch gave.
enum FrameStep {
    Item(Item<'static>),
    End,
    /// Nothing to yield yet: read on.
    Again,
}

enum Scan {
    Frame(FrameLoc),
    /// End of input; `tail` bytes of an incomplete frame precede it.
    End {
        tail: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Header,
    Baseline,
    Body,
    Done,
}

/// A damaged region being skipped.
struct Skip {
    from: u64,
    reason: &'static str,
    /// Events in damaged frames whose headers were intact.
    events: u64,
}

/// Reads a session written by [`SessionWriter`], one [`Item`] at a time.
///
/// Damage is skipped with a warning (see [`Self::warnings`]); only a missing or damaged
/// session header and I/O errors are errors. No input makes it panic, and its memory stays
/// bounded (about [`MAX_PAYLOAD`] for the input buffer plus the intern rings).
pub struct SessionReader<R: Read> {
    /// The file's format version.
    version: u16,
    input: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    eof: bool,
    phase: Phase,
    active: Option<Active>,
    pending: Option<FrameLoc>,
    skip: Option<Skip>,
    just_resynced: bool,
    next_batch_seq: u64,
    baseline: Option<Baseline>,
    baseline_chunks: (u64, u64),
    paths: ReaderTable,
    comms: ReaderTable,
    warnings: Vec<String>,
    suppressed: u64,
    clean_end: bool,
    stats: ReadStats,
    /// The OOM block of the `oom_kill` event yielded last (events borrow it).
    oom: OomKill<'static>,
}

impl<R: Read> SessionReader<R> {
    /// Checks the preamble: [`SessionError::NotASession`] without the magic,
    /// [`SessionError::Version`] for another format version.
    pub fn new(mut input: R) -> Result<Self, SessionError> {
        let mut pre = [0u8; PREAMBLE_LEN];
        let mut n = 0;
        while n < PREAMBLE_LEN {
            match input.read(&mut pre[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let m = n.min(MAGIC.len());
        if n == 0 || pre[..m] != MAGIC[..m] {
            return Err(SessionError::NotASession);
        }
        if n < PREAMBLE_LEN {
            return Err(SessionError::Truncated { len: n });
        }
        let version = u16::from_le_bytes([pre[8], pre[9]]);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(SessionError::Version {
                file: version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(SessionReader {
            version,
            input,
            buf: Vec::new(),
            start: 0,
            end: 0,
            buf_offset: PREAMBLE_LEN as u64,
            eof: false,
            phase: Phase::Header,
            active: None,
            pending: None,
            skip: None,
            just_resynced: false,
            next_batch_seq: 0,
            baseline: None,
            baseline_chunks: (0, 0),
            paths: ReaderTable::new(PATH_SLOTS),
            comms: ReaderTable::new(COMM_SLOTS),
            warnings: Vec::new(),
            suppressed: 0,
            clean_end: false,
            stats: ReadStats::default(),
            oom: OomKill::default(),
        })
    }

    /// What was noticed along the way: truncation, damage skipped, definitions lost.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The footer was read: the recording ended cleanly.
    pub fn clean_end(&self) -> bool {
        self.clean_end
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    fn warn(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        } else {
            self.suppressed += 1;
        }
    }

    fn done(&mut self) {
        self.phase = Phase::Done;
        if self.suppressed > 0 {
            let n = std::mem::take(&mut self.suppressed);
            self.warnings.push(format!("{n} more warnings not shown"));
        }
    }

    fn offset_of(&self, idx: usize) -> u64 {
        self.buf_offset + idx as u64
    }

    /// Reads until `n` bytes are available from `start`, or the input ends.
    fn fill(&mut self, n: usize) -> Result<(), SessionError> {
        while self.end - self.start < n && !self.eof {
            if self.buf.len() - self.end < READ_ROOM || self.buf.len() - self.start < n {
                self.buf.copy_within(self.start..self.end, 0);
                self.buf_offset += self.start as u64;
                self.end -= self.start;
                self.start = 0;
                let want = n.max(self.end + READ_ROOM);
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn damage(&mut self, at: u64, reason: &'static str, events: u64) {
        match &mut self.skip {
            Some(s) => s.events = s.events.saturating_add(events),
            None => {
                self.skip = Some(Skip {
                    from: at,
                    reason,
                    events,
                })
            }
        }
    }

    fn end_skip(&mut self, at: u64, to_eof: bool) {
        let Some(s) = self.skip.take() else { return };
        let n = at.saturating_sub(s.from);
        self.stats.bytes_skipped = self.stats.bytes_skipped.saturating_add(n);
        self.stats.damaged_regions += 1;
        let held = if s.events > 0 {
            format!(" (the damaged frames held at least {} events)", s.events)
        } else {
            String::new()
        };
        let msg = if to_eof {
            format!(
                "{} in frame at byte {}: skipped {n} bytes to the end of the file{held}",
                s.reason, s.from
            )
        } else {
            self.just_resynced = true;
            format!(
                "{} in frame at byte {}: skipped {n} bytes, resynchronised at byte {at}{held}",
                s.reason, s.from
            )
        };
        self.warn(msg);
    }

    /// Moves `start` to the next possible sync marker after it (reading more as needed).
    fn scan_forward(&mut self) -> Result<(), SessionError> {
        self.start += 1;
        loop {
            let hay = &self.buf[self.start..self.end];
            if let Some(k) = hay.windows(SYNC.len()).position(|w| w == SYNC) {
                self.start += k;
                return Ok(());
            }
            // Keep a possible partial marker at the end.
            let keep = hay.len().min(SYNC.len() - 1);
            self.start = self.end - keep;
            if self.eof {
                return Ok(());
            }
            self.fill(READ_ROOM)?;
            if self.eof && self.end - self.start <= keep {
                return Ok(());
            }
        }
    }

    /// Finds the next valid frame at or after `start`, skipping damage.
    fn next_frame(&mut self) -> Result<Scan, SessionError> {
        loop {
            self.fill(FRAME_HEADER_LEN)?;
            let avail = self.end - self.start;
            let at = self.offset_of(self.start);
            if avail < FRAME_HEADER_LEN {
                // The input ends here.
                if self.skip.is_some() {
                    self.start = self.end;
                    let eof_at = self.offset_of(self.end);
                    self.end_skip(eof_at, true);
                    return Ok(Scan::End { tail: 0 });
                }
                return Ok(Scan::End { tail: avail });
            }
            let h = &self.buf[self.start..self.start + FRAME_HEADER_LEN];
            let stored_hcrc = u32::from_le_bytes([h[13], h[14], h[15], h[16]]);
            let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]) as usize;
            let count = u32::from_le_bytes([h[9], h[10], h[11], h[12]]);
            let ty = h[4];
            let header_ok = h[..4] == SYNC && crc32fast::hash(&h[..13]) == stored_hcrc;
            if !header_ok || len > MAX_PAYLOAD {
                let reason = if h[..4] == SYNC {
                    "damaged frame header"
                } else {
                    "no frame marker"
                };
                self.damage(at, reason, 0);
                if self.phase == Phase::Header {
                    return Err(self.bad_header(at, reason));
                }
                self.scan_forward()?;
                continue;
            }
            let total = FRAME_HEADER_LEN + len + FRAME_TRAILER_LEN;
            self.fill(total)?;
            let avail = self.end - self.start;
            if avail < total {
                self.end_skip(at, false);
                return Ok(Scan::End { tail: avail });
            }
            let ps = self.start + FRAME_HEADER_LEN;
            let pe = ps + len;
            let t = &self.buf[pe..pe + FRAME_TRAILER_LEN];
            let stored = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
            if crc32fast::hash(&self.buf[ps..pe]) != stored {
                let events = if ty == frame::BATCH {
                    u64::from(count)
                } else {
                    0
                };
                self.damage(at, "bad checksum", events);
                if self.phase == Phase::Header {
                    return Err(self.bad_header(at, "bad checksum"));
                }
                self.scan_forward()?;
                continue;
            }
            self.end_skip(at, false);
            self.stats.frames += 1;
            return Ok(Scan::Frame(FrameLoc {
                ty,
                offset: at,
                start: ps,
                end: pe,
            }));
        }
    }

    fn bad_header(&mut self, at: u64, reason: &str) -> SessionError {
        self.skip = None;
        self.done();
        SessionError::BadHeader {
            offset: at,
            reason: reason.to_string(),
        }
    }

    /// Marks the frame at `loc` consumed.
    fn consume(&mut self, loc: &FrameLoc) {
        self.start = loc.end + FRAME_TRAILER_LEN;
    }

    fn truncated(&mut self, tail: usize) {
        let at = self.offset_of(self.end).saturating_sub(tail as u64);
        let what = if tail > 0 {
            format!("{tail} bytes of an incomplete frame ignored")
        } else {
            "no footer: the recording was interrupted".to_string()
        };
        let msg = if self.phase == Phase::Header {
            format!("truncated at byte {at} before the session header was complete ({what})")
        } else {
            format!(
                "truncated at byte {at}: replayed the {} events before it ({what})",
                self.stats.events
            )
        };
        self.warn(msg);
    }

    fn take_baseline(&mut self) -> Baseline {
        let (seen, total) = self.baseline_chunks;
        match self.baseline.take() {
            Some(b) => {
                if seen < total {
                    self.warn(format!(
                        "baseline incomplete: {seen} of its {total} frames were readable"
                    ));
                }
                b
            }
            None => {
                self.warn("the baseline was lost to damage: replaying without it".to_string());
                Baseline::default()
            }
        }
    }

    fn add_baseline_chunk(&mut self, loc: &FrameLoc) {
        match decode_baseline_chunk(&self.buf[loc.start..loc.end]) {
            Ok(ch)
                if self.baseline.is_some() && self.baseline_chunks.0 >= self.baseline_chunks.1 =>
            {
                let off = loc.offset;
                self.warn(format!(
                    "baseline frame at byte {off} beyond the {} announced ignored",
                    ch.total.min(self.baseline_chunks.1)
                ));
            }
            Ok(ch) => {
                let b = self.baseline.get_or_insert_with(Baseline::default);
                b.taken_at_ns = ch.taken_at_ns;
                b.dying_before_start.extend(ch.dying);
                b.cgroups.extend(ch.cgroups);
                self.baseline_chunks.0 += 1;
                self.baseline_chunks.1 = ch.total;
            }
            Err(Malformed(why)) => {
                let off = loc.offset;
                self.warn(format!(
                    "malformed baseline frame at byte {off}: {why}; ignored"
                ));
            }
        }
    }

    fn start_batch(&mut self, loc: &FrameLoc) {
        let mut c = Cur::new(&self.buf[loc.start..loc.end]);
        let pre = (|| -> DResult<(u64, u64, u64, u64)> {
            Ok((c.varint()?, c.varint()?, c.varint()?, c.varint()?))
        })();
        let pos = c.pos;
        match pre {
            Ok((seq, base_ts, path_serial, comm_serial)) => {
                if seq > self.next_batch_seq && !self.just_resynced {
                    let n = seq - self.next_batch_seq;
                    let off = loc.offset;
                    self.warn(format!("{n} batch frames missing before byte {off}"));
                }
                self.just_resynced = false;
                self.next_batch_seq = seq.saturating_add(1);
                self.paths.next = path_serial;
                self.comms.next = comm_serial;
                self.active = Some(Active {
                    start: loc.start,
                    end: loc.end,
                    pos,
                    offset: loc.offset,
                    deltas: Deltas::new(base_ts),
                    unresolved: 0,
                    unknown_kinds: 0,
                });
            }
            Err(Malformed(why)) => {
                let off = loc.offset;
                self.warn(format!(
                    "malformed batch frame at byte {off}: {why}; skipped"
                ));
                self.consume(loc);
            }
        }
    }

    fn finish_batch(&mut self, a: &Active) {
        self.start = a.end + FRAME_TRAILER_LEN;
        if a.unresolved > 0 {
            self.warn(format!(
                "frame at byte {}: {} events refer to paths or comms defined in frames lost to damage; they are replayed with an empty path or comm",
                a.offset, a.unresolved
            ));
        }
        if a.unknown_kinds > 0 {
            self.stats.unknown_kinds = self.stats.unknown_kinds.saturating_add(a.unknown_kinds);
            self.warn(format!(
                "frame at byte {}: {} records of event kinds this cgtrace does not know were skipped",
                a.offset, a.unknown_kinds
            ));
        }
    }

    fn finish_footer(&mut self, loc: &FrameLoc) -> Option<(u64, u64, u64)> {
        let mut c = Cur::new(&self.buf[loc.start..loc.end]);
        let f = (|| -> DResult<(u64, u64, u64, u64)> {
            Ok((c.varint()?, c.varint()?, c.varint()?, c.varint()?))
        })();
        self.consume(loc);
        match f {
            Ok((events, lost, end_ns, batches)) => {
                if events != self.stats.events || batches != self.next_batch_seq {
                    self.warn(format!(
                        "the footer counts {events} events in {batches} batch frames; {} events were replayed",
                        self.stats.events
                    ));
                }
                Some((events, lost, end_ns))
            }
            Err(Malformed(why)) => {
                let off = loc.offset;
                self.warn(format!("malformed footer at byte {off}: {why}; ignored"));
                None
            }
        }
    }

    /// The next item, or `None` at the end of the session. Events borrow the reader until the
    /// next call.
    #[allow(clippy::should_implement_trait)] // a lending iterator cannot be an `Iterator`
    pub fn next(&mut self) -> Result<Option<Item<'_>>, SessionError> {
        loop {
            if self.active.is_some() {
                let Some(p) = self.next_record() else {
                    continue;
                };
                return Ok(Some(match p {
                    Parsed::Nothing => continue,
                    Parsed::Event(raw) => Item::Event(self.make_event(raw)),
                    Parsed::Lost { ts_ns, kind, count } => Item::Lost { ts_ns, kind, count },
                    Parsed::KernelMemcgs(k) => Item::KernelMemcgs(k),
                    Parsed::Note(n) => Item::Note(n),
                    Parsed::PodName(pod_uid, namespace, name) => Item::PodName {
                        pod_uid,
                        namespace,
                        name,
                    },
                }));
            }
            if self.phase == Phase::Done {
                return Ok(None);
            }
            match self.next_frame_step()? {
                FrameStep::Item(item) => return Ok(Some(item)),
                FrameStep::End => return Ok(None),
                FrameStep::Again => {}
            }
        }
    }

    /// The active batch's next record that yields an item (its counts taken), or None when
    /// there is none to yield yet: the batch ended or was cut at a malformed record, or the
    /// record defined something. The active batch stays in place (no per-record move of its
    /// delta state).
    fn next_record(&mut self) -> Option<Parsed> {
        let a = self.active.as_mut()?;
        if a.start + a.pos >= a.end {
            if let Some(a) = self.active.take() {
                self.finish_batch(&a);
            }
            return None;
        }
        let payload = &self.buf[a.start..a.end];
        let mut c = Cur {
            b: payload,
            pos: a.pos,
        };
        let res = parse_record(&mut c, a, &mut self.paths, &mut self.comms, &mut self.oom);
        a.pos = c.pos;
        let (a_offset, a_pos) = (a.offset, a.pos);
        match res {
            Ok(Parsed::Nothing) => None,
            Ok(Parsed::Event(raw)) => {
                self.stats.events += 1;
                if matches!(raw.comm, Resolved::Unknown) || matches!(raw.path, Resolved::Unknown) {
                    self.stats.unresolved_refs += 1;
                }
                if let Some(Resolved::Slot(i)) = raw.oom {
                    self.oom.trigger_comm = Comm::new(&self.comms.slots[i].bytes);
                }
                Some(Parsed::Event(raw))
            }
            Ok(Parsed::Lost { ts_ns, kind, count }) => {
                self.stats.lost = self.stats.lost.saturating_add(count);
                Some(Parsed::Lost { ts_ns, kind, count })
            }
            Ok(p) => Some(p),
            Err(Malformed(why)) => {
                let rec_at = a_offset + (FRAME_HEADER_LEN + a_pos) as u64;
                self.warn(format!(
                    "malformed record near byte {rec_at} in frame at byte {a_offset}: {why}; the rest of the frame was skipped"
                ));
                if let Some(a) = self.active.take() {
                    self.finish_batch(&a);
                }
                None
            }
        }
    }

    /// Reads the next frame outside a batch: a header, baseline or footer item, the end, or
    /// nothing to yield yet (a batch started, a baseline chunk added, a frame skipped).
    fn next_frame_step(&mut self) -> Result<FrameStep, SessionError> {
        let loc = match self.pending.take() {
            Some(l) => l,
            None => match self.next_frame()? {
                Scan::Frame(l) => l,
                Scan::End { tail } => {
                    let phase = self.phase;
                    self.truncated(tail);
                    self.done();
                    if phase == Phase::Baseline && self.baseline.is_some() {
                        return Ok(FrameStep::Item(Item::Baseline(self.take_baseline())));
                    }
                    return Ok(FrameStep::End);
                }
            },
        };
        match (self.phase, loc.ty) {
            (Phase::Header, frame::HEADER) => {
                let res = decode_header(&self.buf[loc.start..loc.end], self.version);
                self.consume(&loc);
                return match res {
                    Ok(h) => {
                        self.phase = Phase::Baseline;
                        Ok(FrameStep::Item(Item::Header(Box::new(h))))
                    }
                    Err(Malformed(why)) => Err(self.bad_header(loc.offset, why)),
                };
            }
            (Phase::Header, ty) => {
                let why = format!("the first frame is a {} frame", frame::name(ty));
                return Err(self.bad_header(loc.offset, &why));
            }
            (Phase::Baseline, frame::BASELINE) => {
                self.add_baseline_chunk(&loc);
                self.consume(&loc);
            }
            (Phase::Baseline, _) => {
                self.pending = Some(loc);
                self.phase = Phase::Body;
                return Ok(FrameStep::Item(Item::Baseline(self.take_baseline())));
            }
            (Phase::Body, frame::BATCH) => self.start_batch(&loc),
            (Phase::Body, frame::FOOTER) => {
                let footer = self.finish_footer(&loc);
                if let Some((events, lost, end_ns)) = footer {
                    self.clean_end = true;
                    self.fill(1)?;
                    if self.end > self.start {
                        let at = self.offset_of(self.start);
                        self.warn(format!("data after the footer at byte {at} ignored"));
                    }
                    self.done();
                    return Ok(FrameStep::Item(Item::Footer {
                        events,
                        lost,
                        end_ns,
                    }));
                }
            }
            (_, ty) => {
                let off = loc.offset;
                self.warn(format!(
                    "unexpected {} frame (type {ty}) at byte {off} ignored",
                    frame::name(ty)
                ));
                self.consume(&loc);
            }
        }
        Ok(FrameStep::Again)
    }

    fn make_event(&self, r: RawItemEvent) -> Event<'_> {
        fn s(t: &ReaderTable, x: Resolved) -> &[u8] {
            match x {
                Resolved::Slot(i) => &t.slots[i].bytes,
                Resolved::Empty | Resolved::Unknown => &[],
            }
        }
        Event {
            ts_ns: r.ts_ns,
            kind: r.kind,
            hierarchy_id: r.hierarchy_id,
            cgroup_id: r.cgroup_id,
            level: r.level,
            pid: r.pid,
            tid: r.tid,
            comm: s(&self.comms, r.comm),
            path: s(&self.paths, r.path),
            path_truncated: r.path_truncated,
            has_cgroup: r.has_cgroup,
            css: r.css,
            memcg_id: r.memcg_id,
            usage_bytes: r.usage_bytes,
            kmem_bytes: r.kmem_bytes,
            memsw_bytes: r.memsw_bytes,
            errno: r.errno,
            errno_inferred: false,
            syscall_relative: false,
            oom: r.oom.is_some().then_some(&self.oom),
        }
    }
}
