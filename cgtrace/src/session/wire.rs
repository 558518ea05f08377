//! Encoding primitives of the session format: the format's constants, frame types, record
//! tags and event flags, varints (LEB128, zigzag), the read cursor, packed hex, frame sealing
//! (sync marker, lengths, CRC-32 checksums) and the per-frame delta state both sides share.

use std::io;

use bytes::{BufMut, BytesMut};

use crate::format::hex;

/// First 8 bytes of every session file. `0x89` is not ASCII (catches 7-bit transfers and tells
/// the file from text at once).
pub const MAGIC: [u8; 8] = *b"\x89CGTRACE";
/// Format version written after [`MAGIC`]; readers refuse any other.
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format version readers still read: version 1 had no typed run facts in its header
/// (its page size is taken as 4096, its filters and rejected tiers from the free-text options).
pub const MIN_FORMAT_VERSION: u16 = 1;
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
pub(super) mod frame {
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

/// Record tags inside a batch frame. `1..=15` are events of that [`cgtrace_common::EventKind`] number.
pub(super) mod tag {
    pub const EVENT_MAX: u8 = 0x0F;
    pub const DEF_PATH: u8 = 0x10;
    pub const DEF_COMM: u8 = 0x11;
    pub const LOST: u8 = 0x12;
    pub const POD_NAME: u8 = 0x13;
    /// Extension: a reading of the kernel's memcg counters (see `docs/format.md`).
    pub const EXT_KERNEL_MEMCGS: u8 = 0x40;
    /// Extension: a note of what the live run could not do (UTF-8, at most 64 KiB).
    pub const EXT_NOTE: u8 = 0x41;
    /// `0x40..=0x7F`: extension records, `varint length · bytes`, skipped by readers that do not
    /// know them.
    pub const EXT_MIN: u8 = 0x40;
    pub const EXT_MAX: u8 = 0x7F;
}

/// Bits of an event record's flags varint.
pub(super) mod evflag {
    pub const PATH_TRUNCATED: u64 = 1 << 0;
    pub const HAS_CGROUP: u64 = 1 << 1;
    pub const TID: u64 = 1 << 2;
    pub const CSS: u64 = 1 << 3;
    pub const MEMCG_ID: u64 = 1 << 4;
    pub const USAGE: u64 = 1 << 5;
    pub const KMEM: u64 = 1 << 6;
    pub const MEMSW: u64 = 1 << 7;
    pub const ERRNO: u64 = 1 << 8;
    /// Version 3: the OOM block follows (`oom_kill` events).
    pub const OOM: u64 = 1 << 9;
    pub const ALL: u64 = (1 << 10) - 1;
}

/// A packed run of lowercase hex digits in a path definition must be at least this long.
pub(super) const MIN_HEX_RUN: usize = 16;
/// Per-hierarchy cgroup id delta slots (indexed by `hierarchy_id % 16`).
pub(super) const CGID_SLOTS: usize = 16;
/// Capacity an intern slot buffer gets on first use (event paths are shorter than
/// `cgtrace_common::PATH_CAP`), so reused slots do not reallocate.
pub(super) const SLOT_MIN_CAPACITY: usize = 256;

pub(super) fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(super) fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    put_varint(b, s.len() as u64);
    b.put_slice(s);
}

/// Memory sizes are page multiples: rotating the page offset bits to the top makes them small
/// varints, and the rotation is exact for every value.
pub(super) fn mem_enc(v: u64) -> u64 {
    v.rotate_right(12)
}

pub(super) fn mem_dec(v: u64) -> u64 {
    v.rotate_left(12)
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Why a record or payload could not be decoded.
#[derive(Debug)]
pub(super) struct Malformed(pub(super) &'static str);

pub(super) type DResult<T> = Result<T, Malformed>;

/// A read cursor over a payload.
pub(super) struct Cur<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cur<'a> {
    pub(super) fn new(b: &'a [u8]) -> Cur<'a> {
        Cur { b, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    pub(super) fn u8(&mut self) -> DResult<u8> {
        let v = *self.b.get(self.pos).ok_or(Malformed("record cut short"))?;
        self.pos += 1;
        Ok(v)
    }

    pub(super) fn varint(&mut self) -> DResult<u64> {
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

    pub(super) fn varint_u32(&mut self) -> DResult<u32> {
        u32::try_from(self.varint()?).map_err(|_| Malformed("value exceeds 32 bits"))
    }

    pub(super) fn len(&mut self) -> DResult<usize> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(Malformed("length runs past the end of the frame"));
        }
        Ok(n as usize)
    }

    pub(super) fn take(&mut self, n: usize) -> DResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(Malformed("length runs past the end of the frame"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(super) fn bytes(&mut self) -> DResult<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    pub(super) fn string(&mut self) -> DResult<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| Malformed("string is not UTF-8"))
    }

    /// A count of items, each at least `min_size` bytes: bounded by what the payload can hold,
    /// so it can size an allocation.
    pub(super) fn count(&mut self, min_size: usize) -> DResult<usize> {
        let n = self.varint()?;
        if n.saturating_mul(min_size as u64) > self.remaining() as u64 {
            return Err(Malformed("item count exceeds what the frame can hold"));
        }
        Ok(n as usize)
    }
}

/// (start, length) of the longest run of lowercase hex digits.
pub(super) fn longest_hex_run(s: &[u8]) -> (usize, usize) {
    let (mut best, mut start, mut run) = ((0, 0), 0, 0);
    for (i, &c) in s.iter().enumerate() {
        if hex::is_lower(c) {
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
pub(super) fn seal_frame(buf: &mut BytesMut, ty: u8, count: u32) -> io::Result<()> {
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

pub(super) fn begin_frame(buf: &mut BytesMut) {
    buf.clear();
    buf.put_bytes(0, FRAME_HEADER_LEN);
}

/// Refuses a string longer than [`MAX_STRING_LEN`].
pub(super) fn check_str(what: &str, s: &[u8]) -> io::Result<()> {
    if s.len() > MAX_STRING_LEN {
        return Err(invalid(format!(
            "session {what} of {} bytes exceeds the {MAX_STRING_LEN}-byte limit",
            s.len()
        )));
    }
    Ok(())
}

/// Per-frame delta state (reset at every batch frame, identical on both sides).
pub(super) struct Deltas {
    pub(super) prev_ts: u64,
    pub(super) cgid: [u64; CGID_SLOTS],
    pub(super) pid: [u32; 16],
    pub(super) css: u64,
}

impl Deltas {
    pub(super) fn new(base_ts: u64) -> Deltas {
        Deltas {
            prev_ts: base_ts,
            cgid: [0; CGID_SLOTS],
            pid: [0; 16],
            css: 0,
        }
    }
}

/// Serial of an intern slot that holds no definition.
pub(super) const NO_SERIAL: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;

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
