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

mod baseline;
mod batch;
mod header;
mod reader;
mod wire;
mod writer;

#[cfg(test)]
mod tests;

/// The baseline types are the tracker's own, so a session records exactly what a live run
/// starts from.
pub use crate::model::baseline::{Baseline, BaselineCgroup};
pub use header::Header;
pub use reader::{Item, ReadStats, SessionError, SessionReader};
pub use wire::{
    BASELINE_CHUNK, BATCH_TARGET, COMM_SLOTS, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_TRAILER_LEN,
    MAGIC, MAX_INTERNED_LEN, MAX_PAYLOAD, MAX_STRING_LEN, MIN_FORMAT_VERSION, PATH_SLOTS,
    PREAMBLE_LEN, REDEFINE_WINDOW, SYNC,
};
pub use writer::SessionWriter;
