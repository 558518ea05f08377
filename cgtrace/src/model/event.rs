//! Decoding ring buffer records into [`Event`]s: a borrowed view, no allocation per event.
use core::mem::offset_of;

use cgtrace_common::{COMM_LEN, EventKind, OomRaw, OomRecord, PATH_CAP, RawEvent, flags};
use thiserror::Error;

use crate::{kernel::page_size, model::oom::OomKill};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes, expected at least {want}")]
    Short { got: usize, want: usize },
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("path length {0} exceeds the record's path buffer")]
    PathLen(u16),
}

/// One cgroup lifecycle event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub ts_ns: u64,
    pub kind: EventKind,
    pub hierarchy_id: u32,
    pub cgroup_id: u64,
    pub level: u32,
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a [u8],
    pub path: &'a [u8],
    pub path_truncated: bool,
    /// The cgroup fields (`hierarchy_id`, `cgroup_id`, `level`, `path`) are known.
    pub has_cgroup: bool,
    pub css: u64,
    pub memcg_id: Option<u32>,
    pub usage_bytes: Option<u64>,
    pub kmem_bytes: Option<u64>,
    pub memsw_bytes: Option<u64>,
    /// `mkdir_failed`: the errno; None where the kernel left only the half-made cgroup's
    /// release (the errno is kept nowhere).
    pub errno: Option<i32>,
    /// `errno` was not reported but inferred by the pipeline (the memory hierarchy at no memcg ID
    /// headroom gives this kernel's ID-exhaustion errno). Not recorded: a replay infers it again.
    pub errno_inferred: bool,
    /// `mkdir_failed` seen at the syscall exit with a relative path the kernel resolved from its
    /// starting directory: `path` is in its hierarchy (the pipeline makes it absolute, as the
    /// syscall's other failures are).
    pub syscall_relative: bool,
    /// `oom_kill`: the rest of what the kernel said (`pid`, `tid`, `comm` are the victim's;
    /// the cgroup fields and counters the victim's memcg). [`Event::decode`] leaves it out
    /// (it lives elsewhere, to keep every other event small): [`Event::decode_oom`] reads it.
    pub oom: Option<&'a OomKill<'a>>,
}

/// Where a failed mkdir was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureSource {
    /// At the `mkdir`/`mkdirat` syscall exit (`--mkdir-failures syscall`): absolute path, errno,
    /// caller.
    Syscall,
    /// At the return of cgroupfs's `cgroup_mkdir()` (fentry/kprobe tiers): path in its hierarchy,
    /// errno, caller.
    CgroupMkdir,
    /// At the release of the half-made cgroup: path in its hierarchy, no caller, no errno.
    Release,
}

impl FailureSource {
    /// `syscall`, `cgroup_mkdir` or `release`, as JSON has it.
    pub fn name(self) -> &'static str {
        match self {
            FailureSource::Syscall => "syscall",
            FailureSource::CgroupMkdir => "cgroup_mkdir",
            FailureSource::Release => "release",
        }
    }
}

/// The depth of a cgroup from its path relative to the hierarchy root: `/` is 0, `/a/b` is 2
/// (cgroup names cannot hold `/`).
pub fn path_level(path: &[u8]) -> u32 {
    if path.len() <= 1 {
        return 0;
    }
    // Paths are whole here, and only the root ends with `/`.
    memchr::memchr_iter(b'/', path).count() as u32
}

/// A field of the `#[repr(C)]` record type `$record` in `$bytes` (the record's bytes), read at
/// its offset (native endian, as the eBPF side wrote it): only the bytes used are read.
macro_rules! record_field {
    ($record:ty, $bytes:expr, $name:ident: $ty:ty) => {{
        const AT: usize = offset_of!($record, $name);
        // The field has this type (a compile error otherwise).
        const _: fn(&$record) -> $ty = |r| r.$name;
        let mut b = [0u8; size_of::<$ty>()];
        b.copy_from_slice(&$bytes[AT..AT + size_of::<$ty>()]);
        <$ty>::from_ne_bytes(b)
    }};
}

fn until_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

impl<'a> Event<'a> {
    /// A failed mkdir seen through the release of the cgroup the kernel had begun to make (the
    /// failures inside cgroup creation, every path spelling, no caller, no errno of the
    /// kernel's).
    pub fn is_half_made_release(&self) -> bool {
        self.failure_seen_at() == Some(FailureSource::Release)
    }

    /// Where a failed mkdir was seen (None for other events).
    pub fn failure_seen_at(&self) -> Option<FailureSource> {
        if self.kind != EventKind::MkdirFailed {
            return None;
        }
        Some(if !self.has_cgroup || self.syscall_relative {
            FailureSource::Syscall
        } else if self.errno.is_none() || self.errno_inferred {
            FailureSource::Release
        } else {
            FailureSource::CgroupMkdir
        })
    }

    /// Decodes a record as the eBPF programs wrote it.
    pub fn decode(buf: &'a [u8]) -> Result<Event<'a>, DecodeError> {
        let want = size_of::<RawEvent>();
        if buf.len() < want {
            return Err(DecodeError::Short {
                got: buf.len(),
                want,
            });
        }
        let raw = &buf[..want];
        // Not the whole record with its path buffer: only the fields.
        macro_rules! field {
            ($name:ident: $ty:ty) => {
                record_field!(RawEvent, raw, $name: $ty)
            };
        }
        let path_len = field!(path_len: u16);
        let kind = field!(kind: u8);
        let fl = field!(flags: u8);
        let kind = EventKind::from_u8(kind).ok_or(DecodeError::Kind(kind))?;
        if path_len as usize >= PATH_CAP {
            return Err(DecodeError::PathLen(path_len));
        }
        let errno = field!(errno: i32);
        let source = field!(source: u32);
        let comm_at = offset_of!(RawEvent, comm);
        let comm = until_nul(&raw[comm_at..comm_at + COMM_LEN]);
        let path_at = offset_of!(RawEvent, path);
        let path = &raw[path_at..path_at + path_len as usize];
        let pages = |flag: u8, v: u64| (fl & flag != 0).then(|| v.saturating_mul(page_size()));
        if kind == EventKind::OomKill && buf.len() < size_of::<OomRecord>() {
            return Err(DecodeError::Short {
                got: buf.len(),
                want: size_of::<OomRecord>(),
            });
        }
        Ok(Event {
            ts_ns: field!(ts_ns: u64),
            cgroup_id: field!(cgroup_id: u64),
            css: field!(css: u64),
            usage_bytes: pages(flags::HAS_MEMORY, field!(memory_pages: u64)),
            kmem_bytes: pages(flags::HAS_KMEM, field!(kmem_pages: u64)),
            memsw_bytes: pages(flags::HAS_MEMSW, field!(memsw_pages: u64)),
            hierarchy_id: field!(hierarchy_id: u32),
            level: if fl & flags::LEVEL_FROM_PATH != 0 {
                path_level(path)
            } else {
                field!(level: u32)
            },
            pid: field!(tgid: u32),
            tid: field!(tid: u32),
            memcg_id: (fl & flags::HAS_MEMCG_ID != 0).then(|| field!(memcg_id: u32)),
            kind,
            comm,
            path,
            path_truncated: fl & flags::PATH_TRUNCATED != 0,
            has_cgroup: fl & flags::HAS_CGROUP != 0,
            // 0: a half-made cgroup's release, reported as the failed mkdir it is.
            errno: (kind == EventKind::MkdirFailed && errno != 0).then_some(errno),
            errno_inferred: false,
            syscall_relative: kind == EventKind::MkdirFailed
                && source == cgtrace_common::failure_source::SYSCALL_RESOLVED,
            oom: None,
        })
    }

    /// The [`OomRaw`] after the [`RawEvent`] of an `oom_kill` record.
    pub fn decode_oom(buf: &[u8]) -> Result<OomKill<'static>, DecodeError> {
        let want = size_of::<OomRecord>();
        let Some(tail) = buf.get(offset_of!(OomRecord, oom)..want) else {
            return Err(DecodeError::Short {
                got: buf.len(),
                want,
            });
        };
        macro_rules! field {
            ($name:ident: $ty:ty) => {
                record_field!(OomRaw, tail, $name: $ty)
            };
        }
        let raw = OomRaw {
            total_vm: field!(total_vm: u64),
            rss_anon: field!(rss_anon: u64),
            rss_file: field!(rss_file: u64),
            rss_shmem: field!(rss_shmem: u64),
            swapents: field!(swapents: u64),
            pgtables_bytes: field!(pgtables_bytes: u64),
            limit_cgroup_id: field!(limit_cgroup_id: u64),
            limit_usage: field!(limit_usage: u64),
            limit_max: field!(limit_max: u64),
            victim_max: field!(victim_max: u64),
            totalpages: field!(totalpages: u64),
            uid: field!(uid: u32),
            oom_score_adj: field!(oom_score_adj: i32),
            trigger_tgid: field!(trigger_tgid: u32),
            limit_level: field!(limit_level: u32),
            flags: field!(flags: u32),
            constraint: field!(constraint: u8),
            _pad: [0; 3],
            trigger_comm: [0; COMM_LEN],
        };
        let at = offset_of!(OomRaw, trigger_comm);
        let comm = until_nul(&tail[at..at + COMM_LEN]);
        Ok(OomKill::from_raw(&raw, comm, page_size()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cgtrace_common::COMM_LEN;
    use std::mem::offset_of;

    #[test]
    fn offsets_match_the_struct() {
        assert_eq!(offset_of!(RawEvent, ts_ns), 0);
        assert_eq!(offset_of!(RawEvent, cgroup_id), 8);
        assert_eq!(offset_of!(RawEvent, css), 16);
        assert_eq!(offset_of!(RawEvent, memory_pages), 24);
        assert_eq!(offset_of!(RawEvent, kmem_pages), 32);
        assert_eq!(offset_of!(RawEvent, memsw_pages), 40);
        assert_eq!(offset_of!(RawEvent, hierarchy_id), 48);
        assert_eq!(offset_of!(RawEvent, level), 52);
        assert_eq!(offset_of!(RawEvent, tgid), 56);
        assert_eq!(offset_of!(RawEvent, tid), 60);
        assert_eq!(offset_of!(RawEvent, memcg_id), 64);
        assert_eq!(offset_of!(RawEvent, path_len), 68);
        assert_eq!(offset_of!(RawEvent, kind), 70);
        assert_eq!(offset_of!(RawEvent, flags), 71);
        assert_eq!(offset_of!(RawEvent, errno), 72);
        assert_eq!(offset_of!(RawEvent, comm), 80);
        assert_eq!(offset_of!(RawEvent, path), 80 + COMM_LEN);
    }

    /// Builds the bytes of a record the way the eBPF side does.
    pub(crate) fn raw_bytes(kind: u8, path: &[u8], fl: u8) -> Vec<u8> {
        let mut ev = RawEvent {
            ts_ns: 1_000_000_123,
            cgroup_id: 0x1_0000_0042,
            css: 0,
            memory_pages: 3,
            kmem_pages: 1,
            memsw_pages: 4,
            hierarchy_id: 7,
            level: 2,
            tgid: 4242,
            tid: 4243,
            memcg_id: 17,
            path_len: path.len() as u16,
            kind,
            flags: fl,
            errno: if kind == 9 { 28 } else { 0 },
            source: 0,
            comm: [0; COMM_LEN],
            path: [0xAA; PATH_CAP],
        };
        ev.comm[..4].copy_from_slice(b"runc");
        ev.path[..path.len()].copy_from_slice(path);
        ev.path[path.len()] = 0;
        let p = &ev as *const RawEvent as *const u8;
        // SAFETY: RawEvent is repr(C) plain data without implicit padding; we read exactly its bytes.
        unsafe { std::slice::from_raw_parts(p, size_of::<RawEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_a_record() {
        let b = raw_bytes(
            1,
            b"/a/b",
            flags::HAS_CGROUP | flags::HAS_MEMCG_ID | flags::HAS_MEMORY,
        );
        let e = Event::decode(&b).expect("decodes");
        assert_eq!(e.kind, EventKind::Mkdir);
        assert_eq!(e.path, b"/a/b");
        assert_eq!(e.comm, b"runc");
        assert_eq!((e.pid, e.tid, e.level, e.hierarchy_id), (4242, 4243, 2, 7));
        assert_eq!(e.cgroup_id, 0x1_0000_0042);
        assert_eq!(e.memcg_id, Some(17));
        assert_eq!(e.usage_bytes, Some(3 * page_size()));
        assert_eq!(e.kmem_bytes, None);
        assert!(e.has_cgroup && !e.path_truncated);
    }

    /// Records whose level the programs left to the path's component count.
    #[test]
    fn level_from_the_path() {
        for (path, level) in [
            (&b"/"[..], 0),
            (b"/kubepods", 1),
            (b"/kubepods/burstable/pod1234/abcd", 4),
        ] {
            let mut b = raw_bytes(1, path, flags::HAS_CGROUP | flags::LEVEL_FROM_PATH);
            b[52..56].copy_from_slice(&99u32.to_ne_bytes());
            assert_eq!(Event::decode(&b).expect("decodes").level, level, "{path:?}");
        }
        // Without the flag the record's own level counts.
        let b = raw_bytes(1, b"/a", flags::HAS_CGROUP);
        assert_eq!(Event::decode(&b).expect("decodes").level, 2);
    }

    #[test]
    fn rejects_bad_records() {
        assert!(matches!(
            Event::decode(&[0u8; 10]),
            Err(DecodeError::Short { .. })
        ));
        assert_eq!(
            Event::decode(&raw_bytes(99, b"/", 0)),
            Err(DecodeError::Kind(99))
        );
        let mut b = raw_bytes(1, b"/", 0);
        b[68..70].copy_from_slice(&(PATH_CAP as u16).to_ne_bytes());
        assert_eq!(
            Event::decode(&b),
            Err(DecodeError::PathLen(PATH_CAP as u16))
        );
    }
}
