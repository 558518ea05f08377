//! Session files: `cgtrace record -o FILE` writes one, `cgtrace replay FILE` / `cgtrace report
//! FILE` read it back and must print exactly what the live run printed.
//!
//! The byte-level specification is `docs/format.md`; this is a summary.
//!
//! * A 12-byte preamble: [`MAGIC`], the format version ([`FORMAT_VERSION`], `u16` LE) and a
//!   reserved `u16`.
//! * Then frames, each `SYNC · type · payload length · item count · header CRC · payload ·
//!   payload CRC`. Checksums are CRC-32 (IEEE 802.3, the `crc32fast` crate). A reader that meets
//!   a damaged frame scans forward for the next [`SYNC`] whose header and payload checksums hold,
//!   and reports the bytes it skipped. A file cut short (SIGKILL, power loss) replays up to its
//!   last complete frame.
//! * Frame 1 is the [`Header`], then one or more baseline frames ([`Baseline`], split in chunks of
//!   about 1 MiB), then batch frames holding events, lost-event counts and pod names, then a
//!   footer with totals on a clean end.
//! * Inside a batch, fields are LEB128 varints (zigzag for signed deltas); timestamps, cgroup ids
//!   and pids are deltas; paths and comms are interned. Interned strings get consecutive serial
//!   numbers, stored in fixed-size rings ([`PATH_SLOTS`], [`COMM_SLOTS`]) and referenced by their
//!   distance from the newest definition. The serial of a frame's first definition is in the
//!   frame, so each frame decodes after a skipped one. A writer references a definition only
//!   while it is in its ring slot and was written less than [`REDEFINE_WINDOW`] bytes before the
//!   referencing frame, else it defines the string again: a definition lost to damage is missed
//!   for at most that many bytes (those events replay with an empty path and a warning), and both
//!   sides' tables stay bounded.
//!
//! Neither side allocates per event once warmed up: the writer builds each frame in one reused
//! [`BytesMut`] and writes it with one `write_all`; the reader keeps one input buffer and the
//! interned strings in reused slot buffers, and hands out [`Event`]s that borrow them.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    ffi::OsStr,
    hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState},
    io::{self, Read, Write},
    os::unix::ffi::OsStrExt,
    path::PathBuf,
};

use bytes::{BufMut, BytesMut};
use cgtrace_common::EventKind;
use thiserror::Error;

use crate::{
    format::clock::ClockRef,
    kernel::hierarchy::{Hierarchies, Hierarchy},
    model::event::Event,
};

/// First 8 bytes of every session file. `0x89` is not ASCII (catches 7-bit transfers and tells
/// the file from text at once).
pub const MAGIC: [u8; 8] = *b"\x89CGTRACE";
/// Format version written after [`MAGIC`]; readers refuse any other.
pub const FORMAT_VERSION: u16 = 1;
/// Length of the preamble: magic, version (`u16` LE), reserved flags (`u16` LE).
pub const PREAMBLE_LEN: usize = 12;
/// Marks the start of every frame. `0xFF` and `0xFE` never occur in UTF-8 text.
pub const SYNC: [u8; 4] = [0xFF, b'C', b'G', 0xFE];
/// Bytes before a frame's payload: sync, type, payload length, item count, header CRC.
pub const FRAME_HEADER_LEN: usize = 17;
/// Bytes after a frame's payload: the payload CRC.
pub const FRAME_TRAILER_LEN: usize = 4;
/// Largest payload a frame may have; larger lengths are treated as damage.
pub const MAX_PAYLOAD: usize = 16 << 20;
/// A batch frame is closed once its payload reaches this size.
pub const BATCH_TARGET: usize = 64 << 10;
/// Baseline cgroups are split into frames of about this many payload bytes.
pub const BASELINE_CHUNK: usize = 1 << 20;
/// Slots of the path intern ring (part of the format: a definition lives in slot `serial % PATH_SLOTS`).
pub const PATH_SLOTS: usize = 8192;
/// Slots of the comm intern ring.
pub const COMM_SLOTS: usize = 1024;
/// A definition may be referenced only from frames starting less than this many bytes after the
/// frame that holds it (part of the format).
pub const REDEFINE_WINDOW: u64 = 1 << 20;
/// Longest interned string (event path or comm).
pub const MAX_INTERNED_LEN: usize = 4096;
/// Longest string in a header field or a pod name record.
pub const MAX_STRING_LEN: usize = 64 << 10;

/// Frame types.
mod frame {
    pub const HEADER: u8 = 1;
    pub const BASELINE: u8 = 2;
    pub const BATCH: u8 = 3;
    pub const FOOTER: u8 = 4;

    pub fn name(ty: u8) -> &'static str {
        match ty {
            HEADER => "header",
            BASELINE => "baseline",
            BATCH => "batch",
            FOOTER => "footer",
            _ => "unknown",
        }
    }
}

/// Record tags inside a batch frame. `1..=15` are events of that [`EventKind`] number.
mod tag {
    pub const EVENT_MAX: u8 = 0x0F;
    pub const DEF_PATH: u8 = 0x10;
    pub const DEF_COMM: u8 = 0x11;
    pub const LOST: u8 = 0x12;
    pub const POD_NAME: u8 = 0x13;
    /// `0x40..=0x7F`: extension records, `varint length · bytes`, skipped by readers that do not
    /// know them.
    pub const EXT_MIN: u8 = 0x40;
    pub const EXT_MAX: u8 = 0x7F;
}

/// Bits of an event record's flags varint.
mod evflag {
    pub const PATH_TRUNCATED: u64 = 1 << 0;
    pub const HAS_CGROUP: u64 = 1 << 1;
    pub const TID: u64 = 1 << 2;
    pub const CSS: u64 = 1 << 3;
    pub const MEMCG_ID: u64 = 1 << 4;
    pub const USAGE: u64 = 1 << 5;
    pub const KMEM: u64 = 1 << 6;
    pub const MEMSW: u64 = 1 << 7;
    pub const ERRNO: u64 = 1 << 8;
    pub const ALL: u64 = (1 << 9) - 1;
}

/// A packed run of lowercase hex digits in a path definition must be at least this long.
const MIN_HEX_RUN: usize = 16;
/// How many parent directories a writer tries as the base of a new path definition.
const MAX_BASE_LEVELS: usize = 4;
/// Per-hierarchy cgroup id delta slots (indexed by `hierarchy_id % 16`).
const CGID_SLOTS: usize = 16;
/// Capacity an intern slot buffer gets on first use (event paths are shorter than
/// `cgtrace_common::PATH_CAP`), so reused slots do not reallocate.
const SLOT_MIN_CAPACITY: usize = 256;
/// Warnings kept; more are counted.
const MAX_WARNINGS: usize = 100;
/// Free room kept after the reader's data before each `read`.
const READ_ROOM: usize = 64 << 10;

/// What a session was recorded with: everything replay needs to print what live printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Version of the cgtrace that recorded.
    pub cgtrace_version: String,
    /// `uname -r` of the recording node.
    pub kernel_release: String,
    /// Host name of the recording node.
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: monotonic timestamps compare only within one boot.
    pub boot_id: String,
    /// Monotonic ↔ wall-clock reference taken at start.
    pub clock: ClockRef,
    /// Probe tier (`tracepoint`, …).
    pub tier: String,
    /// Attach kind (`raw_tracepoint`, `tracepoint`).
    pub attach: String,
    /// Hierarchy id → controllers and mount point.
    pub hierarchies: Hierarchies,
    /// The filters used, free text.
    pub options: String,
}

/// The baseline types are the tracker's own, so a session records exactly what a live run
/// starts from.
pub use crate::model::baseline::{Baseline, BaselineCgroup};

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
    /// The file's format version is not [`FORMAT_VERSION`].
    #[error(
        "session file format version {file} is not supported: this cgtrace reads format version {supported}{}",
        version_hint(*.file, *.supported)
    )]
    Version {
        /// Version in the file.
        file: u16,
        /// Version this reader reads.
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

// ---------------------------------------------------------------------------------------------
// Encoding primitives.

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    put_varint(b, s.len() as u64);
    b.put_slice(s);
}

/// Memory sizes are page multiples: rotating the page offset bits to the top makes them small
/// varints, and the rotation is exact for every value.
fn mem_enc(v: u64) -> u64 {
    v.rotate_right(12)
}

fn mem_dec(v: u64) -> u64 {
    v.rotate_left(12)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Why a record or payload could not be decoded.
#[derive(Debug)]
struct Malformed(&'static str);

type DResult<T> = Result<T, Malformed>;

/// A read cursor over a payload.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(b: &'a [u8]) -> Cur<'a> {
        Cur { b, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    fn u8(&mut self) -> DResult<u8> {
        let v = *self.b.get(self.pos).ok_or(Malformed("record cut short"))?;
        self.pos += 1;
        Ok(v)
    }

    fn varint(&mut self) -> DResult<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let c = self.u8()?;
            if i == 9 && c > 1 {
                return Err(Malformed("varint overflows 64 bits"));
            }
            v |= u64::from(c & 0x7F) << (7 * i);
            if c & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Malformed("varint longer than 10 bytes"))
    }

    fn varint_u32(&mut self) -> DResult<u32> {
        u32::try_from(self.varint()?).map_err(|_| Malformed("value exceeds 32 bits"))
    }

    fn len(&mut self) -> DResult<usize> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(Malformed("length runs past the end of the frame"));
        }
        Ok(n as usize)
    }

    fn take(&mut self, n: usize) -> DResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(Malformed("length runs past the end of the frame"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn bytes(&mut self) -> DResult<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> DResult<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| Malformed("string is not UTF-8"))
    }

    /// A count of items, each at least `min_size` bytes: bounded by what the payload can hold,
    /// so it can size an allocation.
    fn count(&mut self, min_size: usize) -> DResult<usize> {
        let n = self.varint()?;
        if n.saturating_mul(min_size as u64) > self.remaining() as u64 {
            return Err(Malformed("item count exceeds what the frame can hold"));
        }
        Ok(n as usize)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// (start, length) of the longest run of lowercase hex digits.
fn longest_hex_run(s: &[u8]) -> (usize, usize) {
    let (mut best, mut start, mut run) = ((0, 0), 0, 0);
    for (i, &c) in s.iter().enumerate() {
        if hex_val(c).is_some() {
            if run == 0 {
                start = i;
            }
            run += 1;
            if run > best.1 {
                best = (start, run);
            }
        } else {
            run = 0;
        }
    }
    best
}

/// Fills in the header and trailer of a frame whose payload follows a
/// [`FRAME_HEADER_LEN`]-byte placeholder in `buf`.
fn seal_frame(buf: &mut BytesMut, ty: u8, count: u32) -> io::Result<()> {
    let len = buf.len().saturating_sub(FRAME_HEADER_LEN);
    if len > MAX_PAYLOAD {
        return Err(invalid(format!(
            "session {} frame of {len} bytes exceeds the {MAX_PAYLOAD}-byte limit",
            frame::name(ty)
        )));
    }
    let crc = crc32fast::hash(&buf[FRAME_HEADER_LEN..]);
    buf.put_u32_le(crc);
    buf[0..4].copy_from_slice(&SYNC);
    buf[4] = ty;
    buf[5..9].copy_from_slice(&(len as u32).to_le_bytes());
    buf[9..13].copy_from_slice(&count.to_le_bytes());
    let hcrc = crc32fast::hash(&buf[..13]);
    buf[13..17].copy_from_slice(&hcrc.to_le_bytes());
    Ok(())
}

fn begin_frame(buf: &mut BytesMut) {
    buf.clear();
    buf.put_bytes(0, FRAME_HEADER_LEN);
}

// ---------------------------------------------------------------------------------------------
// Header and baseline payloads.

fn check_str(what: &str, s: &[u8]) -> io::Result<()> {
    if s.len() > MAX_STRING_LEN {
        return Err(invalid(format!(
            "session {what} of {} bytes exceeds the {MAX_STRING_LEN}-byte limit",
            s.len()
        )));
    }
    Ok(())
}

fn encode_header(b: &mut BytesMut, h: &Header) -> io::Result<()> {
    for (what, s) in [
        ("cgtrace version", &h.cgtrace_version),
        ("kernel release", &h.kernel_release),
        ("hostname", &h.hostname),
        ("boot id", &h.boot_id),
    ] {
        check_str(what, s.as_bytes())?;
        put_bytes(b, s.as_bytes());
    }
    put_varint(b, h.clock.mono_ns);
    put_varint(b, h.clock.realtime_ns);
    for (what, s) in [("tier", &h.tier), ("attach kind", &h.attach)] {
        check_str(what, s.as_bytes())?;
        put_bytes(b, s.as_bytes());
    }
    put_varint(b, h.hierarchies.by_id.len() as u64);
    for (&key, hier) in &h.hierarchies.by_id {
        put_varint(b, u64::from(key));
        put_varint(b, u64::from(hier.id));
        put_varint(b, hier.controllers.len() as u64);
        for c in &hier.controllers {
            check_str("controller name", c.as_bytes())?;
            put_bytes(b, c.as_bytes());
        }
        match &hier.mount {
            Some(m) => {
                let m = m.as_os_str().as_bytes();
                check_str("mount point", m)?;
                b.put_u8(1);
                put_bytes(b, m);
            }
            None => b.put_u8(0),
        }
    }
    check_str("options", h.options.as_bytes())?;
    put_bytes(b, h.options.as_bytes());
    Ok(())
}

fn decode_header(p: &[u8]) -> DResult<Header> {
    let mut c = Cur::new(p);
    let cgtrace_version = c.string()?;
    let kernel_release = c.string()?;
    let hostname = c.string()?;
    let boot_id = c.string()?;
    let clock = ClockRef {
        mono_ns: c.varint()?,
        realtime_ns: c.varint()?,
    };
    let tier = c.string()?;
    let attach = c.string()?;
    let mut hierarchies = Hierarchies::default();
    let n = c.count(4)?;
    for _ in 0..n {
        let key = c.varint_u32()?;
        let id = c.varint_u32()?;
        let nc = c.count(1)?;
        let mut controllers = Vec::with_capacity(nc);
        for _ in 0..nc {
            controllers.push(c.string()?);
        }
        let mount = match c.u8()? {
            0 => None,
            1 => Some(PathBuf::from(OsStr::from_bytes(c.bytes()?))),
            _ => return Err(Malformed("bad mount presence byte")),
        };
        let h = Hierarchy {
            id,
            controllers,
            mount,
        };
        if hierarchies.by_id.insert(key, h).is_some() {
            return Err(Malformed("hierarchy listed twice"));
        }
    }
    let options = c.string()?;
    // Fields appended by later writers of this version are ignored.
    Ok(Header {
        cgtrace_version,
        kernel_release,
        hostname,
        boot_id,
        clock,
        tier,
        attach,
        hierarchies,
        options,
    })
}

/// Splits the baseline into chunk payloads (without chunk index/count, which are prepended
/// when written). Returns (payload bodies, cgroups per chunk).
fn encode_baseline_chunks(bl: &Baseline) -> io::Result<Vec<(BytesMut, u32)>> {
    let mut chunks = Vec::new();
    let mut body = BytesMut::new();
    let mut n = 0u32;
    for cg in &bl.cgroups {
        if cg.path.len() > MAX_STRING_LEN {
            return Err(invalid(format!(
                "baseline cgroup path of {} bytes exceeds the {MAX_STRING_LEN}-byte limit",
                cg.path.len()
            )));
        }
        put_varint(&mut body, u64::from(cg.hierarchy_id));
        put_varint(&mut body, cg.cgroup_id);
        put_varint(&mut body, u64::from(cg.level));
        put_bytes(&mut body, &cg.path);
        n += 1;
        if body.len() >= BASELINE_CHUNK {
            chunks.push((std::mem::take(&mut body), n));
            n = 0;
        }
    }
    if n > 0 || chunks.is_empty() {
        chunks.push((body, n));
    }
    Ok(chunks)
}

/// One decoded baseline chunk.
struct BaselineChunk {
    total: u64,
    taken_at_ns: u64,
    dying: Vec<(u32, u64)>,
    cgroups: Vec<BaselineCgroup>,
}

fn decode_baseline_chunk(p: &[u8]) -> DResult<BaselineChunk> {
    let mut c = Cur::new(p);
    let index = c.varint()?;
    let total = c.varint()?;
    if index >= total {
        return Err(Malformed("baseline chunk index beyond the chunk count"));
    }
    let taken_at_ns = c.varint()?;
    let nd = c.count(2)?;
    let mut dying = Vec::with_capacity(nd);
    for _ in 0..nd {
        dying.push((c.varint_u32()?, c.varint()?));
    }
    let ncg = c.count(4)?;
    let mut cgroups = Vec::with_capacity(ncg);
    for _ in 0..ncg {
        cgroups.push(BaselineCgroup {
            hierarchy_id: c.varint_u32()?,
            cgroup_id: c.varint()?,
            level: c.varint_u32()?,
            path: c.bytes()?.to_vec(),
        });
    }
    Ok(BaselineChunk {
        total,
        taken_at_ns,
        dying,
        cgroups,
    })
}

// ---------------------------------------------------------------------------------------------
// Per-frame delta state (reset at every batch frame, identical on both sides).

struct Deltas {
    prev_ts: u64,
    cgid: [u64; CGID_SLOTS],
    pid: [u32; 16],
    css: u64,
}

impl Deltas {
    fn new(base_ts: u64) -> Deltas {
        Deltas {
            prev_ts: base_ts,
            cgid: [0; CGID_SLOTS],
            pid: [0; 16],
            css: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer.

/// `HashMap` hasher for keys that are already hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

const NO_SERIAL: u64 = u64::MAX;

struct WSlot {
    serial: u64,
    hash: u64,
    def_offset: u64,
    bytes: Vec<u8>,
}

/// The writer's side of an intern ring: slot `serial % slots`, plus hash → serial.
struct WriterTable {
    slots: Vec<WSlot>,
    map: HashMap<u64, u64, BuildHasherDefault<IdHasher>>,
    next: u64,
    hasher: RandomState,
}

impl WriterTable {
    fn new(n: usize) -> WriterTable {
        let mut map = HashMap::default();
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
            hasher: RandomState::new(),
        }
    }

    fn hash(&self, s: &[u8]) -> u64 {
        self.hasher.hash_one(s)
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
    let hash = t.hash(p);
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
        if let Some(s) = t.lookup(parent, t.hash(parent), frame_offset) {
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
        let s = define_path(t, b, parent, t.hash(parent), frame_offset, false);
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
            let hi = hex_val(pair[0]).unwrap_or(0);
            let lo = pair.get(1).and_then(|&c| hex_val(c)).unwrap_or(0);
            b.put_u8(hi << 4 | lo);
        }
        put_bytes(b, &suffix[hs + hl..]);
    } else {
        put_varint(b, 0);
        put_bytes(b, suffix);
    }
    t.insert(p, hash, frame_offset)
}

fn intern_comm(t: &mut WriterTable, b: &mut BytesMut, s: &[u8], frame_offset: u64) -> u64 {
    if s.is_empty() {
        return 0;
    }
    let hash = t.hash(s);
    let serial = match t.lookup(s, hash, frame_offset) {
        Some(serial) => serial,
        None => {
            b.put_u8(tag::DEF_COMM);
            put_bytes(b, s);
            t.insert(s, hash, frame_offset)
        }
    };
    t.next - serial
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
        let comm_ref = intern_comm(&mut self.comms, &mut self.buf, ev.comm, off);
        let path_ref = intern_path(&mut self.paths, &mut self.buf, ev.path, off);

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
        set(&mut fl, evflag::ERRNO, ev.errno.is_some());

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
        if let Some(e) = ev.errno {
            put_varint(b, zigzag(i64::from(e)));
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

// ---------------------------------------------------------------------------------------------
// Reader.

struct RSlot {
    serial: u64,
    known: bool,
    def_offset: u64,
    bytes: Vec<u8>,
}

/// The reader's side of an intern ring. Its slots are allocated at the first definition.
struct ReaderTable {
    size: usize,
    slots: Vec<RSlot>,
    next: u64,
    scratch: Vec<u8>,
}

/// What a reference resolves to.
#[derive(Clone, Copy)]
enum Resolved {
    Empty,
    Slot(usize),
    /// Defined in a frame lost to damage (or otherwise not available).
    Unknown,
}

impl ReaderTable {
    fn new(size: usize) -> ReaderTable {
        ReaderTable {
            size,
            slots: Vec::new(),
            next: 0,
            scratch: Vec::new(),
        }
    }

    fn resolve(&self, back: u64, frame_offset: u64) -> Resolved {
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
    fn define_scratch(&mut self, known: bool, frame_offset: u64) {
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

    fn parse_def_path(&mut self, c: &mut Cur<'_>, frame_offset: u64) -> DResult<()> {
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
            let byte = packed[i / 2];
            let nib = if i % 2 == 0 { byte >> 4 } else { byte & 0xF };
            self.scratch.push(HEX_DIGITS[usize::from(nib)]);
        }
        self.scratch.extend_from_slice(post);
        self.define_scratch(known, frame_offset);
        Ok(())
    }

    fn parse_def_comm(&mut self, c: &mut Cur<'_>, frame_offset: u64) -> DResult<()> {
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
struct RawItemEvent {
    ts_ns: u64,
    kind: EventKind,
    hierarchy_id: u32,
    cgroup_id: u64,
    level: u32,
    pid: u32,
    tid: u32,
    comm: Resolved,
    path: Resolved,
    path_truncated: bool,
    has_cgroup: bool,
    css: u64,
    memcg_id: Option<u32>,
    usage_bytes: Option<u64>,
    kmem_bytes: Option<u64>,
    memsw_bytes: Option<u64>,
    errno: Option<i32>,
}

/// One record's outcome.
enum Parsed {
    /// A definition, an extension, or something skipped: nothing to yield.
    Nothing,
    Event(RawItemEvent),
    Lost {
        ts_ns: u64,
        kind: EventKind,
        count: u64,
    },
    PodName(String, String, String),
}

/// The batch frame being decoded.
struct Active {
    /// Payload bounds in the reader's buffer.
    start: usize,
    end: usize,
    /// Cursor, relative to `start`.
    pos: usize,
    /// File offset of the frame.
    offset: u64,
    deltas: Deltas,
    unresolved: u64,
    unknown_kinds: u64,
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
        if version != FORMAT_VERSION {
            return Err(SessionError::Version {
                file: version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(SessionReader {
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
            // The active batch stays in place (no per-record move of its delta state).
            if let Some(a) = self.active.as_mut() {
                if a.start + a.pos >= a.end {
                    if let Some(a) = self.active.take() {
                        self.finish_batch(&a);
                    }
                    continue;
                }
                let payload = &self.buf[a.start..a.end];
                let mut c = Cur {
                    b: payload,
                    pos: a.pos,
                };
                let res = parse_record(&mut c, a, &mut self.paths, &mut self.comms);
                a.pos = c.pos;
                let (a_offset, a_pos) = (a.offset, a.pos);
                match res {
                    Ok(Parsed::Nothing) => {}
                    Ok(Parsed::Event(raw)) => {
                        self.stats.events += 1;
                        if matches!(raw.comm, Resolved::Unknown)
                            || matches!(raw.path, Resolved::Unknown)
                        {
                            self.stats.unresolved_refs += 1;
                        }
                        return Ok(Some(Item::Event(self.make_event(raw))));
                    }
                    Ok(Parsed::Lost { ts_ns, kind, count }) => {
                        self.stats.lost = self.stats.lost.saturating_add(count);
                        return Ok(Some(Item::Lost { ts_ns, kind, count }));
                    }
                    Ok(Parsed::PodName(pod_uid, namespace, name)) => {
                        return Ok(Some(Item::PodName {
                            pod_uid,
                            namespace,
                            name,
                        }));
                    }
                    Err(Malformed(why)) => {
                        let rec_at = a_offset + (FRAME_HEADER_LEN + a_pos) as u64;
                        self.warn(format!(
                            "malformed record near byte {rec_at} in frame at byte {a_offset}: {why}; the rest of the frame was skipped"
                        ));
                        if let Some(a) = self.active.take() {
                            self.finish_batch(&a);
                        }
                    }
                }
                continue;
            }
            if self.phase == Phase::Done {
                return Ok(None);
            }
            let loc = match self.pending.take() {
                Some(l) => l,
                None => match self.next_frame()? {
                    Scan::Frame(l) => l,
                    Scan::End { tail } => {
                        let phase = self.phase;
                        self.truncated(tail);
                        self.done();
                        if phase == Phase::Baseline && self.baseline.is_some() {
                            return Ok(Some(Item::Baseline(self.take_baseline())));
                        }
                        return Ok(None);
                    }
                },
            };
            match (self.phase, loc.ty) {
                (Phase::Header, frame::HEADER) => {
                    let res = decode_header(&self.buf[loc.start..loc.end]);
                    self.consume(&loc);
                    return match res {
                        Ok(h) => {
                            self.phase = Phase::Baseline;
                            Ok(Some(Item::Header(Box::new(h))))
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
                    return Ok(Some(Item::Baseline(self.take_baseline())));
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
                        return Ok(Some(Item::Footer {
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
        }
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
        }
    }
}

fn read_ts(c: &mut Cur<'_>, d: &mut Deltas) -> DResult<u64> {
    let ts = d.prev_ts.wrapping_add(unzigzag(c.varint()?) as u64);
    d.prev_ts = ts;
    Ok(ts)
}

/// Decodes one record of a batch frame.
fn parse_record(
    c: &mut Cur<'_>,
    a: &mut Active,
    paths: &mut ReaderTable,
    comms: &mut ReaderTable,
) -> DResult<Parsed> {
    let t = c.u8()?;
    match t {
        1..=tag::EVENT_MAX => {
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
            let errno = if fl & evflag::ERRNO != 0 {
                let e = unzigzag(c.varint()?);
                Some(i32::try_from(e).map_err(|_| Malformed("errno out of range"))?)
            } else {
                None
            };
            let Some(kind) = EventKind::from_u8(t) else {
                a.unknown_kinds += 1;
                return Ok(Parsed::Nothing);
            };
            if matches!(comm, Resolved::Unknown) || matches!(path, Resolved::Unknown) {
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
            }))
        }
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
            c.bytes()?;
            Ok(Parsed::Nothing)
        }
        _ => Err(Malformed("unknown record type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An owned event, to build inputs and compare outputs.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Ev {
        ts_ns: u64,
        kind: EventKind,
        hierarchy_id: u32,
        cgroup_id: u64,
        level: u32,
        pid: u32,
        tid: u32,
        comm: Vec<u8>,
        path: Vec<u8>,
        path_truncated: bool,
        has_cgroup: bool,
        css: u64,
        memcg_id: Option<u32>,
        usage_bytes: Option<u64>,
        kmem_bytes: Option<u64>,
        memsw_bytes: Option<u64>,
        errno: Option<i32>,
    }

    impl Ev {
        fn view(&self) -> Event<'_> {
            Event {
                ts_ns: self.ts_ns,
                kind: self.kind,
                hierarchy_id: self.hierarchy_id,
                cgroup_id: self.cgroup_id,
                level: self.level,
                pid: self.pid,
                tid: self.tid,
                comm: &self.comm,
                path: &self.path,
                path_truncated: self.path_truncated,
                has_cgroup: self.has_cgroup,
                css: self.css,
                memcg_id: self.memcg_id,
                usage_bytes: self.usage_bytes,
                kmem_bytes: self.kmem_bytes,
                memsw_bytes: self.memsw_bytes,
                errno: self.errno,
            }
        }

        fn of(e: &Event<'_>) -> Ev {
            Ev {
                ts_ns: e.ts_ns,
                kind: e.kind,
                hierarchy_id: e.hierarchy_id,
                cgroup_id: e.cgroup_id,
                level: e.level,
                pid: e.pid,
                tid: e.tid,
                comm: e.comm.to_vec(),
                path: e.path.to_vec(),
                path_truncated: e.path_truncated,
                has_cgroup: e.has_cgroup,
                css: e.css,
                memcg_id: e.memcg_id,
                usage_bytes: e.usage_bytes,
                kmem_bytes: e.kmem_bytes,
                memsw_bytes: e.memsw_bytes,
                errno: e.errno,
            }
        }

        fn simple(
            ts_ns: u64,
            kind: EventKind,
            cgroup_id: u64,
            pid: u32,
            comm: &str,
            path: &str,
        ) -> Ev {
            Ev {
                ts_ns,
                kind,
                hierarchy_id: 0,
                cgroup_id,
                level: path.bytes().filter(|&c| c == b'/').count() as u32,
                pid,
                tid: pid,
                comm: comm.as_bytes().to_vec(),
                path: path.as_bytes().to_vec(),
                path_truncated: false,
                has_cgroup: true,
                css: 0,
                memcg_id: None,
                usage_bytes: None,
                kmem_bytes: None,
                memsw_bytes: None,
                errno: None,
            }
        }
    }

    /// An owned [`Item`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Owned {
        Header(Header),
        Baseline(Baseline),
        Event(Ev),
        Lost(u64, EventKind, u64),
        Pod(String, String, String),
        Footer(u64, u64, u64),
    }

    fn own(it: Item<'_>) -> Owned {
        match it {
            Item::Header(h) => Owned::Header(*h),
            Item::Baseline(b) => Owned::Baseline(b),
            Item::Event(e) => Owned::Event(Ev::of(&e)),
            Item::Lost { ts_ns, kind, count } => Owned::Lost(ts_ns, kind, count),
            Item::PodName {
                pod_uid,
                namespace,
                name,
            } => Owned::Pod(pod_uid, namespace, name),
            Item::Footer {
                events,
                lost,
                end_ns,
            } => Owned::Footer(events, lost, end_ns),
        }
    }

    /// What to feed the writer.
    #[derive(Clone, Debug)]
    enum In {
        Ev(Ev),
        Lost(u64, EventKind, u64),
        Pod(String, String, String),
        Flush,
    }

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn hex(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| HEX_DIGITS[self.below(16) as usize] as char)
                .collect()
        }
    }

    const CGROUP: &str = "12:pids:/\n9:memory:/user.slice\n4:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/init.scope\n";
    const MOUNTINFO: &str = "\
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    fn header() -> Header {
        let mut hierarchies = Hierarchies::parse(CGROUP, MOUNTINFO).expect("mountinfo");
        hierarchies.by_id.insert(
            40,
            Hierarchy {
                id: 40,
                controllers: vec![],
                mount: Some(PathBuf::from(OsStr::from_bytes(b"/mnt/\xff odd"))),
            },
        );
        Header {
            cgtrace_version: "0.1.0".into(),
            kernel_release: "6.18.44-fc-v669".into(),
            hostname: "node-7.example".into(),
            boot_id: "6f1c2c6e-3d2a-4b7e-9d55-0b7c1f2e3a4d".into(),
            clock: ClockRef {
                mono_ns: 712_000_000_000,
                realtime_ns: 1_763_900_000_000_000_000,
            },
            tier: "tracepoint".into(),
            attach: "raw_tracepoint".into(),
            hierarchies,
            options: "--controller memory --path-prefix /kubepods ✓".into(),
        }
    }

    fn baseline(n: usize) -> Baseline {
        Baseline {
            cgroups: (0..n)
                .map(|i| BaselineCgroup {
                    hierarchy_id: (i % 3) as u32,
                    cgroup_id: 0x1_0000_0000 + i as u64,
                    level: 2,
                    path: format!("/kubepods/besteffort/pod{i:036}").into_bytes(),
                })
                .collect(),
            dying_before_start: vec![(9, 1234), (0, 7)],
            taken_at_ns: 711_999_000_000,
        }
    }

    /// Writes a session; returns the bytes and the file offset of each batch frame.
    fn write(h: &Header, b: &Baseline, inputs: &[In], end_ns: u64) -> (Vec<u8>, Vec<u64>) {
        let mut w = SessionWriter::new(Vec::new(), h, b).expect("writer");
        let mut frames = Vec::new();
        let flush = |w: &mut SessionWriter<Vec<u8>>, frames: &mut Vec<u64>| {
            if w.pending_bytes() > 0 {
                frames.push(w.bytes_written());
            }
            w.flush_batch().expect("flush");
        };
        for i in inputs {
            // Frames the writer closes by itself.
            let before = w.bytes_written();
            match i {
                In::Ev(e) => w.event(&e.view()).expect("event"),
                In::Lost(ts, k, n) => w.lost(*ts, *k, *n).expect("lost"),
                In::Pod(u, n, p) => w.pod_name(u, n, p).expect("pod"),
                In::Flush => flush(&mut w, &mut frames),
            }
            if !matches!(i, In::Flush) && w.bytes_written() != before {
                frames.push(before);
            }
        }
        flush(&mut w, &mut frames);
        (w.finish_at(end_ns).expect("finish"), frames)
    }

    fn expected(h: &Header, b: &Baseline, inputs: &[In], end_ns: u64) -> Vec<Owned> {
        let mut out = vec![Owned::Header(h.clone()), Owned::Baseline(b.clone())];
        let (mut events, mut lost) = (0, 0);
        for i in inputs {
            match i {
                In::Ev(e) => {
                    events += 1;
                    out.push(Owned::Event(e.clone()));
                }
                In::Lost(ts, k, n) => {
                    lost += n;
                    out.push(Owned::Lost(*ts, *k, *n));
                }
                In::Pod(u, n, p) => out.push(Owned::Pod(u.clone(), n.clone(), p.clone())),
                In::Flush => {}
            }
        }
        out.push(Owned::Footer(events, lost, end_ns));
        out
    }

    struct Decoded {
        items: Vec<Owned>,
        warnings: Vec<String>,
        clean: bool,
        stats: ReadStats,
    }

    fn read(bytes: &[u8]) -> Result<Decoded, SessionError> {
        let mut r = SessionReader::new(bytes)?;
        let mut items = Vec::new();
        let mut guard = 0usize;
        let mut err = None;
        loop {
            guard += 1;
            assert!(guard < 10_000_000, "reader does not end");
            match r.next() {
                Ok(Some(it)) => items.push(own(it)),
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        Ok(Decoded {
            items,
            warnings: r.warnings().to_vec(),
            clean: r.clean_end(),
            stats: r.stats().clone(),
        })
    }

    fn events_of(items: &[Owned]) -> Vec<Ev> {
        items
            .iter()
            .filter_map(|i| match i {
                Owned::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// Kubernetes-like churn over `n_paths` cgroup paths (a pod cgroup and 4 containers per
    /// pod), each path going through mkdir → rmdir → release; `n_paths == 0`: every lifecycle
    /// gets a new container path. Flushes every 100 ms of event time, as `record` does.
    fn kube_churn(n_events: usize, n_paths: usize, seed: u64) -> Vec<In> {
        let mut rng = Lcg(seed);
        let qos = ["", "burstable/", "besteffort/"];
        let pod_of = |rng: &mut Lcg| {
            format!(
                "/kubepods/{}pod{}-{}-{}-{}-{}",
                qos[rng.below(3) as usize],
                rng.hex(8),
                rng.hex(4),
                rng.hex(4),
                rng.hex(4),
                rng.hex(12)
            )
        };
        let mut paths: Vec<String> = Vec::new();
        while paths.len() < n_paths {
            let pod = pod_of(&mut rng);
            paths.push(pod.clone());
            for _ in 0..4 {
                paths.push(format!("{pod}/{}", rng.hex(64)));
            }
        }
        paths.truncate(n_paths);
        let mut idle: Vec<usize> = (0..paths.len()).collect();
        // (path, cgroup id, next step: 0 = rmdir, 1 = release)
        let mut active: Vec<(String, Option<usize>, u64, u8)> = Vec::new();
        let (mut ts, mut next_id, mut pid) = (712_000_000_000u64, 0x1_0000_1000u64, 40_000u32);
        let mut last_flush = ts;
        let mut out = Vec::new();
        let mut n = 0;
        let mut cur_pod = pod_of(&mut rng);
        while n < n_events {
            ts += 1_000 + rng.below(200_000);
            if ts - last_flush >= 100_000_000 {
                out.push(In::Flush);
                last_flush = ts;
            }
            let start = active.len() < 8 || (rng.below(3) == 0 && active.len() < 2000);
            if start && (n_paths == 0 || !idle.is_empty()) {
                let (path, slot) = if n_paths == 0 {
                    if rng.below(5) == 0 {
                        cur_pod = pod_of(&mut rng);
                    }
                    (format!("{cur_pod}/{}", rng.hex(64)), None)
                } else {
                    let k = rng.below(idle.len() as u64) as usize;
                    let p = idle.swap_remove(k);
                    (paths[p].clone(), Some(p))
                };
                next_id += 1 + rng.below(3);
                pid += 1 + rng.below(40) as u32;
                let comm = if path.matches('/').count() == 2 {
                    "kubelet"
                } else {
                    "runc:[2:INIT]"
                };
                out.push(In::Ev(Ev::simple(
                    ts,
                    EventKind::Mkdir,
                    next_id,
                    pid,
                    comm,
                    &path,
                )));
                active.push((path, slot, next_id, 0));
            } else {
                let k = rng.below(active.len() as u64) as usize;
                let (path, slot, id, step) = active[k].clone();
                if step == 0 {
                    pid += 1 + rng.below(40) as u32;
                    out.push(In::Ev(Ev::simple(
                        ts,
                        EventKind::Rmdir,
                        id,
                        pid,
                        "runc:[2:INIT]",
                        &path,
                    )));
                    active[k].3 = 1;
                } else {
                    let (kw, kpid) = if rng.below(2) == 0 {
                        ("kworker/1:0", 23)
                    } else {
                        ("kworker/u8:2", 1187)
                    };
                    out.push(In::Ev(Ev::simple(
                        ts,
                        EventKind::Release,
                        id,
                        kpid,
                        kw,
                        &path,
                    )));
                    active.swap_remove(k);
                    if let Some(s) = slot {
                        idle.push(s);
                    }
                }
            }
            n += 1;
        }
        out
    }

    /// Events with every field exercised, lost counts and pod names.
    fn odd_inputs() -> Vec<In> {
        let mut v = Vec::new();
        let mut e = Ev::simple(5, EventKind::CssAlloc, 0, 1, "", "");
        e.has_cgroup = false;
        e.css = 0xffff_8880_1234_5600;
        e.tid = 2;
        v.push(In::Ev(e.clone()));
        e.kind = EventKind::CssOnline;
        e.ts_ns = 3; // backwards
        e.css = 0xffff_8880_1234_5000;
        e.memcg_id = Some(u32::MAX);
        e.usage_bytes = Some(4096 * 12345);
        e.kmem_bytes = Some(1); // not a page multiple
        e.memsw_bytes = Some(u64::MAX);
        e.errno = Some(i32::MIN);
        e.hierarchy_id = u32::MAX;
        e.cgroup_id = u64::MAX;
        e.level = u32::MAX;
        e.pid = u32::MAX;
        e.tid = 0;
        e.comm = b"\x00\xffodd\ncomm".to_vec();
        e.path = vec![b'/'; MAX_INTERNED_LEN];
        e.path_truncated = true;
        v.push(In::Ev(e.clone()));
        v.push(In::Lost(u64::MAX, EventKind::Rmdir, 77));
        v.push(In::Pod(
            "0b7c1f2e-3a4d".into(),
            "kube-system".into(),
            "coredns-55c9".into(),
        ));
        v.push(In::Flush);
        v.push(In::Pod("".into(), "".into(), "".into()));
        v.push(In::Flush);
        for k in EventKind::ALL {
            let mut e = Ev::simple(
                u64::MAX - k as u64,
                k,
                k as u64,
                0,
                "systemd",
                "/system.slice/a\\x2db.service",
            );
            e.hierarchy_id = 9 + 16; // shares a delta slot with 9
            if k == EventKind::MkdirFailed {
                e.errno = Some(28); // ENOSPC
            }
            v.push(In::Ev(e));
        }
        v.push(In::Ev(Ev::simple(0, EventKind::Mkdir, 0, 0, "x", "/")));
        v.push(In::Ev(Ev::simple(
            1,
            EventKind::Mkdir,
            1,
            1,
            "x",
            "no-slash",
        )));
        v.push(In::Ev(Ev::simple(
            2,
            EventKind::Mkdir,
            2,
            2,
            "x",
            "/a/0123456789abcdef0123456789abcde",
        )));
        v.push(In::Ev(Ev::simple(
            2,
            EventKind::Mkdir,
            2,
            2,
            "x",
            "/a/0123456789abcdef0123456789abcde/1",
        )));
        v.push(In::Lost(0, EventKind::CssFree, 0));
        v
    }

    #[test]
    fn round_trip() {
        let h = header();
        let b = baseline(300);
        let mut inputs = odd_inputs();
        inputs.extend(kube_churn(20_000, 500, 1));
        inputs.extend(odd_inputs());
        let (bytes, frames) = write(&h, &b, &inputs, 999);
        assert!(frames.len() > 5);
        let d = read(&bytes).expect("reads");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert!(d.clean);
        assert_eq!(d.items, expected(&h, &b, &inputs, 999));
        assert_eq!(d.stats.events, events_of(&d.items).len() as u64);
    }

    #[test]
    fn empty_session_round_trips() {
        let h = header();
        let b = Baseline::default();
        let (bytes, _) = write(&h, &b, &[], 1);
        let d = read(&bytes).expect("reads");
        assert!(d.warnings.is_empty() && d.clean);
        assert_eq!(d.items, expected(&h, &b, &[], 1));
    }

    #[test]
    fn large_baseline_spans_frames() {
        let h = header();
        let mut b = baseline(20_000);
        for (i, c) in b.cgroups.iter_mut().enumerate() {
            c.path.extend_from_slice(format!("/{i:064x}").as_bytes());
        }
        let (bytes, _) = write(&h, &b, &[], 1);
        assert!(bytes.len() > 2 * BASELINE_CHUNK);
        let d = read(&bytes).expect("reads");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.items, expected(&h, &b, &[], 1));

        // Damage the second baseline frame: the rest of the baseline still arrives.
        let second = bytes[PREAMBLE_LEN + 100..]
            .windows(4)
            .position(|w| w == SYNC)
            .map(|p| p + PREAMBLE_LEN + 100)
            .and_then(|p| {
                bytes[p + 1..]
                    .windows(4)
                    .position(|w| w == SYNC)
                    .map(|q| q + p + 1)
            })
            .expect("second baseline frame");
        let mut bad = bytes.clone();
        bad[second + 200] ^= 0x55;
        let d = read(&bad).expect("reads");
        assert!(
            d.warnings.iter().any(|w| w.contains("baseline incomplete")),
            "{:?}",
            d.warnings
        );
        let Some(Owned::Baseline(got)) = d.items.get(1) else {
            panic!("no baseline: {:?}", d.items.get(1));
        };
        assert!(!got.cgroups.is_empty() && got.cgroups.len() < b.cgroups.len());
    }

    fn small_session() -> (Header, Baseline, Vec<In>, Vec<u8>, Vec<u64>) {
        let h = header();
        let b = baseline(5);
        let mut inputs = Vec::new();
        for (i, x) in kube_churn(320, 40, 7)
            .into_iter()
            .filter(|x| !matches!(x, In::Flush))
            .enumerate()
        {
            if i % 25 == 24 {
                inputs.push(In::Flush);
            }
            if i == 100 {
                inputs.push(In::Lost(712_000_000_000, EventKind::Release, 3));
                inputs.push(In::Pod("uid".into(), "ns".into(), "name".into()));
            }
            inputs.push(x);
        }
        let (bytes, frames) = write(&h, &b, &inputs, 42);
        (h, b, inputs, bytes, frames)
    }

    #[test]
    fn truncation_at_every_offset_yields_a_prefix() {
        let (h, b, inputs, bytes, frames) = small_session();
        assert!(frames.len() >= 10);
        let full = expected(&h, &b, &inputs, 42);
        assert!(events_of(&full).len() >= 300);
        for cut in 0..=bytes.len() {
            match read(&bytes[..cut]) {
                Err(SessionError::NotASession) => assert!(cut < MAGIC.len() || cut == 0),
                Err(SessionError::Truncated { len }) => assert!(len == cut && cut < PREAMBLE_LEN),
                Err(e) => panic!("cut at {cut}: {e}"),
                Ok(d) => {
                    assert!(cut >= PREAMBLE_LEN);
                    assert!(d.items.len() <= full.len());
                    assert_eq!(d.items[..], full[..d.items.len()], "cut at {cut}");
                    if cut < bytes.len() {
                        assert!(!d.clean);
                        assert!(
                            d.warnings.iter().any(|w| w.contains("truncated at byte")),
                            "cut at {cut}: {:?}",
                            d.warnings
                        );
                    } else {
                        assert!(d.clean && d.warnings.is_empty());
                        assert_eq!(d.items, full);
                    }
                }
            }
        }
        // A cut at a frame boundary replays every event before it.
        let d = read(&bytes[..frames[5] as usize]).expect("reads");
        let before: usize = events_of(&d.items).len();
        assert!(before > 100);
        assert!(d.warnings[0].contains(&format!(
            "truncated at byte {}: replayed the {before} events",
            frames[5]
        )));
    }

    /// `got` must be a subsequence of `want`, events equal except that a path or comm may be
    /// empty where its definition was lost.
    fn assert_subsequence(got: &[Ev], want: &[Ev]) {
        let mut j = 0;
        for g in got {
            loop {
                assert!(j < want.len(), "decoded event not in the original: {g:?}");
                let w = &want[j];
                j += 1;
                let mut relaxed = w.clone();
                if g.path.is_empty() {
                    relaxed.path.clear();
                }
                if g.comm.is_empty() {
                    relaxed.comm.clear();
                }
                if *g == relaxed {
                    break;
                }
            }
        }
    }

    #[test]
    fn random_byte_flips_never_panic() {
        let (_, _, inputs, bytes, _) = small_session();
        let want: Vec<Ev> = inputs
            .iter()
            .filter_map(|i| match i {
                In::Ev(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let mut rng = Lcg(0xC0FFEE);
        let (mut ok, mut events) = (0, 0);
        for trial in 0..4000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] ^= 1 + rng.below(255) as u8;
            }
            if trial % 7 == 0 {
                let cut = rng.below(b.len() as u64) as usize;
                b.truncate(cut);
            }
            if let Ok(d) = read(&b) {
                ok += 1;
                let got = events_of(&d.items);
                events += got.len();
                assert_subsequence(&got, &want);
            }
        }
        assert!(ok > 3000 && events > 0, "{ok} {events}");
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Lcg(99);
        for _ in 0..2000 {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            b.extend_from_slice(&[0, 0]);
            let n = rng.below(600);
            for _ in 0..n {
                // Sprinkle sync markers so the frame parser is exercised.
                if rng.below(40) == 0 {
                    b.extend_from_slice(&SYNC);
                } else {
                    b.push(rng.below(256) as u8);
                }
            }
            let _ = read(&b);
        }
    }

    /// (offset, type, payload range) of every frame of an intact session.
    fn frames_of(bytes: &[u8]) -> Vec<(usize, u8, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let mut at = PREAMBLE_LEN;
        while at + FRAME_HEADER_LEN <= bytes.len() {
            let len =
                u32::from_le_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
            let ps = at + FRAME_HEADER_LEN;
            out.push((at, bytes[at + 4], ps..ps + len as usize));
            at = ps + len as usize + FRAME_TRAILER_LEN;
        }
        out
    }

    #[test]
    fn mutated_payloads_with_valid_checksums_never_panic() {
        // Damage the checksums cannot catch (a buggy or hostile writer): the record decoder
        // itself must hold.
        let (_, _, _, bytes, _) = small_session();
        let frames = frames_of(&bytes);
        assert_eq!(frames.last().map(|f| f.1), Some(frame::FOOTER));
        let mut rng = Lcg(0xBAD5EED);
        let mut decoded = 0;
        for trial in 0..3000 {
            let mut out = bytes[..PREAMBLE_LEN].to_vec();
            let victim = 1 + rng.below(frames.len() as u64 - 1) as usize;
            for (i, (at, ty, range)) in frames.iter().enumerate() {
                if i != victim && !(trial % 5 == 0 && i == 0) {
                    out.extend_from_slice(&bytes[*at..range.end + FRAME_TRAILER_LEN]);
                    continue;
                }
                let mut payload = bytes[range.clone()].to_vec();
                for _ in 0..1 + rng.below(6) {
                    match rng.below(4) {
                        0 if !payload.is_empty() => {
                            let k = rng.below(payload.len() as u64) as usize;
                            payload[k] = rng.below(256) as u8;
                        }
                        1 if !payload.is_empty() => {
                            let k = rng.below(payload.len() as u64) as usize;
                            payload.truncate(k);
                        }
                        2 => {
                            let k = rng.below(payload.len() as u64 + 1) as usize;
                            let junk: Vec<u8> =
                                (0..rng.below(12)).map(|_| rng.below(256) as u8).collect();
                            payload.splice(k..k, junk);
                        }
                        _ if !payload.is_empty() => {
                            let k = rng.below(payload.len() as u64) as usize;
                            payload[k] ^= 0x80;
                        }
                        _ => {}
                    }
                }
                let mut f = BytesMut::new();
                begin_frame(&mut f);
                f.put_slice(&payload);
                seal_frame(&mut f, *ty, rng.below(1000) as u32).expect("seal");
                out.extend_from_slice(&f);
            }
            if let Ok(d) = read(&out) {
                decoded += events_of(&d.items).len();
            }
        }
        assert!(decoded > 0);
    }

    #[test]
    fn bad_checksum_in_a_middle_frame_is_skipped() {
        let (h, b, inputs, bytes, frames) = small_session();
        let full = expected(&h, &b, &inputs, 42);
        let all = events_of(&full);
        let k = frames.len() / 2;
        let (off, next) = (frames[k] as usize, frames[k + 1] as usize);
        let mut bad = bytes.clone();
        bad[(off + next) / 2] ^= 0x10;
        let d = read(&bad).expect("reads");
        assert!(d.clean);
        let msg = format!(
            "bad checksum in frame at byte {off}: skipped {} bytes, resynchronised at byte {next}",
            next - off
        );
        assert!(
            d.warnings.iter().any(|w| w.starts_with(&msg)),
            "{:?}",
            d.warnings
        );
        assert!(d.warnings.iter().any(|w| w.contains("footer counts")));
        let got = events_of(&d.items);
        let lost = u32::from_le_bytes([
            bytes[off + 9],
            bytes[off + 10],
            bytes[off + 11],
            bytes[off + 12],
        ]) as usize;
        assert!(lost > 0);
        assert_eq!(got.len(), all.len() - lost);
        assert_subsequence(&got, &all);
        // Events whose path or comm was defined in the damaged frame come back with it empty,
        // and are counted (see also `lost_definitions_are_redefined_within_the_window`).
        let empty = got
            .iter()
            .filter(|e| e.path.is_empty() || e.comm.is_empty())
            .count() as u64;
        assert_eq!(empty, d.stats.unresolved_refs);
        assert_eq!(d.stats.damaged_regions, 1);
        assert_eq!(d.stats.bytes_skipped, (next - off) as u64);
        // The frame after the damaged one decodes on its own: its events are all present.
        let tail = &all[all.len() - 10..];
        let gtail = &got[got.len() - 10..];
        assert_subsequence(gtail, tail);

        // A damaged frame header is reported the same way.
        let mut bad = bytes.clone();
        bad[off + 6] ^= 0x01;
        let d = read(&bad).expect("reads");
        assert!(
            d.warnings.iter().any(|w| w.starts_with(&format!(
                "damaged frame header in frame at byte {off}: skipped"
            ))),
            "{:?}",
            d.warnings
        );
        assert_eq!(events_of(&d.items).len(), all.len() - lost);
    }

    #[test]
    fn lost_definitions_are_redefined_within_the_window() {
        // A path used in every frame: damage to the frame defining it costs at most the
        // window, after which it is defined again.
        let h = header();
        let b = Baseline::default();
        let mut inputs = Vec::new();
        let mut rng = Lcg(5);
        let mut ts = 1u64;
        for f in 0..400 {
            for i in 0..200 {
                ts += 1000;
                let path = if i == 0 {
                    "/kubepods/hot".to_string()
                } else {
                    format!("/kubepods/x{}", rng.hex(40))
                };
                inputs.push(In::Ev(Ev::simple(
                    ts,
                    EventKind::Mkdir,
                    f * 1000 + i,
                    1,
                    "runc",
                    &path,
                )));
            }
            inputs.push(In::Flush);
        }
        let (bytes, frames) = write(&h, &b, &inputs, 1);
        assert!(bytes.len() as u64 > 2 * REDEFINE_WINDOW);
        let mut bad = bytes.clone();
        let off = frames[0] as usize;
        bad[off + FRAME_HEADER_LEN + 30] ^= 0xFF;
        let d = read(&bad).expect("reads");
        let got = events_of(&d.items);
        let hot: Vec<&Ev> = got.iter().filter(|e| e.cgroup_id % 1000 == 0).collect();
        let empty = hot.iter().filter(|e| e.path.is_empty()).count();
        assert!(empty > 0 && d.stats.unresolved_refs >= empty as u64);
        let window_frames = frames
            .iter()
            .filter(|&&f| f <= frames[0] + REDEFINE_WINDOW)
            .count();
        assert!(empty < window_frames + 1, "{empty} {window_frames}");
        assert!(hot.last().is_some_and(|e| e.path == b"/kubepods/hot"));
        assert!(d.warnings.iter().any(|w| w.contains("empty path")));
    }

    #[test]
    fn damaged_header_is_an_error() {
        let (_, _, _, bytes, _) = small_session();
        let mut bad = bytes.clone();
        bad[PREAMBLE_LEN + 25] ^= 1;
        match read(&bad) {
            Err(e @ SessionError::BadHeader { offset: 12, .. }) => {
                assert!(e.to_string().contains("bad checksum"), "{e}")
            }
            other => panic!("{:?}", other.map(|d| d.items.len())),
        }
    }

    #[test]
    fn not_a_session() {
        let mut rng = Lcg(3);
        let mut random: Vec<u8> = (0..4096).map(|_| rng.below(256) as u8).collect();
        random[0] = 0x42;
        let text =
            b"13:42:04.801116 mkdir        memory         /cgtrace-demo  mkdir[9689] id=3137\n";
        for input in [&random[..], &[][..], &text[..], &b"CGTRACE\x01"[..]] {
            assert!(matches!(
                SessionReader::new(input),
                Err(SessionError::NotASession)
            ));
        }
        assert!(matches!(
            SessionReader::new(&MAGIC[..5]),
            Err(SessionError::Truncated { len: 5 })
        ));
        let msg = SessionError::NotASession.to_string();
        assert!(msg.contains("not a cgtrace session"));
    }

    #[test]
    fn future_version_is_refused_naming_both() {
        let (_, _, _, mut bytes, _) = small_session();
        bytes[8..10].copy_from_slice(&7u16.to_le_bytes());
        let err = SessionReader::new(&bytes[..]).err().expect("refused");
        assert!(matches!(
            err,
            SessionError::Version {
                file: 7,
                supported: FORMAT_VERSION
            }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("version 7") && msg.contains(&format!("version {FORMAT_VERSION}")),
            "{msg}"
        );
        assert!(msg.contains("newer cgtrace"), "{msg}");
        bytes[8..10].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            SessionReader::new(&bytes[..]),
            Err(SessionError::Version { file: 0, .. })
        ));
    }

    /// Builds a frame by hand.
    fn frame_bytes(ty: u8, count: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        begin_frame(&mut b);
        b.put_slice(payload);
        seal_frame(&mut b, ty, count).expect("seal");
        b.to_vec()
    }

    #[test]
    fn unknown_frames_records_and_kinds_are_skipped() {
        let h = header();
        let b = Baseline::default();
        let inputs = vec![In::Ev(Ev::simple(10, EventKind::Mkdir, 1, 1, "a", "/a"))];
        let (bytes, _) = write(&h, &b, &inputs, 1);
        // Cut the footer off, add hand-made frames, then the footer again.
        let footer_at = bytes.len()
            - bytes
                .windows(4)
                .rev()
                .position(|w| w == SYNC)
                .map(|p| p + 4)
                .expect("footer");
        let mut f = bytes[..footer_at].to_vec();
        f.extend(frame_bytes(99, 0, b"future"));
        let mut p = BytesMut::new();
        for v in [1, 1000, 0, 0] {
            put_varint(&mut p, v); // seq, base ts, path serial, comm serial
        }
        p.put_slice(&[0x40, 3, 1, 2, 3]); // extension record
        p.put_slice(&[12, 0, 0, 0, 10, 0, 14, 0, 0]); // event of unknown kind 12
        p.put_slice(&[1, 0, 0, 0, 10, 0, 14, 0, 0]); // mkdir
        f.extend(frame_bytes(frame::BATCH, 2, &p));
        f.extend_from_slice(&bytes[footer_at..]);
        let d = read(&f).expect("reads");
        let got = events_of(&d.items);
        assert_eq!(got.len(), 2);
        // The skipped record of kind 12 still moved the cgroup id delta base (5 + 5).
        let mut want = Ev::simple(1000, EventKind::Mkdir, 10, 7, "", "");
        want.has_cgroup = false;
        want.level = 0;
        assert_eq!(got[1], want);
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("unknown frame (type 99)")),
            "{:?}",
            d.warnings
        );
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("kinds this cgtrace does not know"))
        );
        assert_eq!(d.stats.unknown_kinds, 1);
    }

    fn bytes_per_event(inputs: &[In]) -> (usize, f64) {
        let n = inputs.iter().filter(|i| matches!(i, In::Ev(_))).count();
        let h = header();
        let b = Baseline::default();
        let (bytes, _) = write(&h, &b, inputs, 1);
        let (empty, _) = write(&h, &b, &[], 1);
        let d = read(&bytes).expect("reads");
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert_eq!(d.items, expected(&h, &b, inputs, 1));
        (bytes.len(), (bytes.len() - empty.len()) as f64 / n as f64)
    }

    #[test]
    fn churn_costs_at_most_32_bytes_per_event() {
        let inputs = kube_churn(100_000, 5_000, 11);
        let (total, bpe) = bytes_per_event(&inputs);
        println!(
            "churn, 100000 events over 5000 cgroup paths: {total} bytes, {bpe:.2} bytes/event"
        );
        assert!(total as u64 > REDEFINE_WINDOW);
        assert!(bpe <= 32.0, "{bpe}");

        let inputs = kube_churn(100_000, 0, 12);
        let (total, bpe) = bytes_per_event(&inputs);
        println!(
            "churn, 100000 events, every container path new: {total} bytes, {bpe:.2} bytes/event"
        );
        assert!(bpe <= 32.0, "{bpe}");
    }

    #[test]
    fn decode_throughput() {
        let inputs = kube_churn(100_000, 5_000, 13);
        let (bytes, _) = write(&header(), &Baseline::default(), &inputs, 1);
        let rounds = 5;
        let t = Instant::now();
        let mut n = 0u64;
        for _ in 0..rounds {
            let mut r = SessionReader::new(&bytes[..]).expect("reads");
            while let Some(it) = r.next().expect("decodes") {
                if let Item::Event(e) = it {
                    n += e.path.len() as u64 / e.path.len().max(1) as u64;
                }
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "decode: {n} events in {secs:.3} s = {:.0} events/s ({:.0} MB/s)",
            n as f64 / secs,
            (bytes.len() * rounds) as f64 / secs / 1e6
        );
        let t = Instant::now();
        let (bytes2, _) = write(&header(), &Baseline::default(), &inputs, 1);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "encode: 100000 events in {secs:.3} s = {:.0} events/s",
            100_000.0 / secs
        );
        assert_eq!(bytes.len(), bytes2.len());
    }

    /// Fails the writes it is told to, like a full disk.
    struct Flaky {
        out: Vec<u8>,
        fail: bool,
    }

    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.fail {
                return Err(io::Error::other("disk full"));
            }
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_batch_write_does_not_leave_dangling_references() {
        let out = Flaky {
            out: Vec::new(),
            fail: false,
        };
        let mut w = SessionWriter::new(out, &header(), &Baseline::default()).expect("writer");
        let e1 = Ev::simple(10, EventKind::Mkdir, 1, 1, "runc", "/kubepods/a");
        let e2 = Ev::simple(20, EventKind::Rmdir, 1, 1, "runc", "/kubepods/a");
        w.event(&e1.view()).expect("event");
        w.get_mut().fail = true;
        assert!(w.flush_batch().is_err());
        w.get_mut().fail = false;
        w.event(&e2.view()).expect("event");
        let out = w.finish_at(30).expect("finish");
        let d = read(&out.out).expect("reads");
        assert_eq!(events_of(&d.items), vec![e2]);
        assert_eq!(d.stats.unresolved_refs, 0);
    }

    #[test]
    fn writer_refuses_oversized_strings() {
        let mut w =
            SessionWriter::new(Vec::new(), &header(), &Baseline::default()).expect("writer");
        let mut e = Ev::simple(1, EventKind::Mkdir, 1, 1, "a", "/a");
        e.path = vec![b'a'; MAX_INTERNED_LEN + 1];
        let err = w.event(&e.view()).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("4097"));
    }

    #[test]
    fn varints_and_zigzag() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            let mut c = Cur::new(&b);
            assert_eq!(c.varint().ok(), Some(v));
            assert_eq!(c.remaining(), 0);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        for v in [0u64, 4096, 1, u64::MAX] {
            assert_eq!(mem_dec(mem_enc(v)), v);
        }
        // 11 bytes, or a 10th byte above 1: malformed, no panic.
        assert!(Cur::new(&[0xFF; 11]).varint().is_err());
        assert!(
            Cur::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02])
                .varint()
                .is_err()
        );
    }
}
