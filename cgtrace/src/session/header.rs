//! The session header (frame 1): what a session was recorded with, and its payload encoding.

use std::{ffi::OsStr, io, os::unix::ffi::OsStrExt, path::PathBuf};

use bytes::{BufMut, BytesMut};

use super::wire::{Cur, DResult, Malformed, check_str, put_bytes, put_varint};
use crate::{
    format::clock::ClockRef,
    kernel::hierarchy::{Hierarchies, Hierarchy},
    model::oom::OomTracing,
    pipeline::filters::Filters,
};

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
    /// The live run's options as free text (version 1 kept its filters and rejected tiers
    /// here, as JSON).
    pub options: String,
    /// The recording kernel's page size (version 2; 4096 for version-1 files).
    pub page_size: u64,
    /// The live run's filters (version 2).
    pub filters: Filters,
    /// Why each better probe tier was not used: (tier, why) (version 2).
    pub rejected: Vec<(String, String)>,
    /// Why a better tracepoint kind was not used (version 2).
    pub fallbacks: Vec<String>,
    /// How OOM kills were traced (version 3; None: not traced, or an older file).
    pub oom: Option<OomTracing>,
    /// The buffer the records came through (`ring`, `perf`), appended to version 3 (None: an
    /// older file, whose records all came through the ring buffer).
    pub buffer: Option<String>,
}

/// Page size assumed for version-1 sessions, which did not record one.
pub const V1_PAGE_SIZE: u64 = 4096;

fn put_str(b: &mut BytesMut, what: &str, s: &str) -> io::Result<()> {
    check_str(what, s.as_bytes())?;
    put_bytes(b, s.as_bytes());
    Ok(())
}

fn put_opt_str(b: &mut BytesMut, what: &str, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => {
            b.put_u8(1);
            put_str(b, what, s)
        }
        None => {
            b.put_u8(0);
            Ok(())
        }
    }
}

/// The version-2 fields, after `options`.
fn encode_run_facts(b: &mut BytesMut, h: &Header) -> io::Result<()> {
    put_varint(b, h.page_size);
    put_varint(b, h.filters.controllers.len() as u64);
    for c in &h.filters.controllers {
        put_str(b, "filter controller", c)?;
    }
    put_opt_str(b, "path prefix", h.filters.path_prefix.as_deref())?;
    put_opt_str(b, "subtree", h.filters.subtree.as_deref())?;
    put_varint(b, h.rejected.len() as u64);
    for (what, why) in &h.rejected {
        put_str(b, "rejected tier", what)?;
        put_str(b, "rejection reason", why)?;
    }
    put_varint(b, h.fallbacks.len() as u64);
    for f in &h.fallbacks {
        put_str(b, "fallback", f)?;
    }
    encode_oom(b, h.oom.as_ref())?;
    put_opt_str(b, "buffer", h.buffer.as_deref())
}

/// Bits of the version-3 OOM tracing field.
const OOM_VICTIM_TASK: u64 = 1;
const OOM_CONTEXT: u64 = 2;
const OOM_KILL_HOOK: u64 = 4;

/// The version-3 field: how OOM kills were traced.
fn encode_oom(b: &mut BytesMut, oom: Option<&OomTracing>) -> io::Result<()> {
    let Some(o) = oom else {
        b.put_u8(0);
        return Ok(());
    };
    b.put_u8(1);
    let bit = |on: bool, v: u64| if on { v } else { 0 };
    put_varint(
        b,
        bit(o.victim_task, OOM_VICTIM_TASK)
            | bit(o.context, OOM_CONTEXT)
            | bit(o.kill_hook, OOM_KILL_HOOK),
    );
    put_opt_str(b, "OOM context", o.context_off.as_deref())
}

fn decode_oom(c: &mut Cur<'_>) -> DResult<Option<OomTracing>> {
    match c.u8()? {
        0 => return Ok(None),
        1 => {}
        _ => return Err(Malformed("bad OOM presence byte")),
    }
    let f = c.varint()?;
    Ok(Some(OomTracing {
        victim_task: f & OOM_VICTIM_TASK != 0,
        context: f & OOM_CONTEXT != 0,
        kill_hook: f & OOM_KILL_HOOK != 0,
        context_off: opt_string(c)?,
    }))
}

fn opt_string(c: &mut Cur<'_>) -> DResult<Option<String>> {
    match c.u8()? {
        0 => Ok(None),
        1 => Ok(Some(c.string()?)),
        _ => Err(Malformed("bad presence byte")),
    }
}

/// The version-2 fields: (page size, filters, rejected, fallbacks).
type RunFactFields = (u64, Filters, Vec<(String, String)>, Vec<String>);

fn decode_run_facts(c: &mut Cur<'_>) -> DResult<RunFactFields> {
    let page_size = c.varint()?;
    let n = c.count(1)?;
    let mut controllers = Vec::with_capacity(n);
    for _ in 0..n {
        controllers.push(c.string()?);
    }
    let filters = Filters {
        controllers,
        path_prefix: opt_string(c)?,
        subtree: opt_string(c)?,
    };
    let n = c.count(2)?;
    let mut rejected = Vec::with_capacity(n);
    for _ in 0..n {
        rejected.push((c.string()?, c.string()?));
    }
    let n = c.count(1)?;
    let mut fallbacks = Vec::with_capacity(n);
    for _ in 0..n {
        fallbacks.push(c.string()?);
    }
    Ok((page_size, filters, rejected, fallbacks))
}

pub(super) fn encode_header(b: &mut BytesMut, h: &Header) -> io::Result<()> {
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
    encode_run_facts(b, h)
}

/// Decodes a header payload of format `version` (1, 2 or 3).
pub(super) fn decode_header(p: &[u8], version: u16) -> DResult<Header> {
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
    let (page_size, filters, rejected, fallbacks) = if version >= 2 {
        decode_run_facts(&mut c)?
    } else {
        (V1_PAGE_SIZE, Filters::default(), Vec::new(), Vec::new())
    };
    let oom = if version >= 3 {
        decode_oom(&mut c)?
    } else {
        None
    };
    // Appended to version 3: absent from the files written before.
    let buffer = if version >= 3 && c.remaining() > 0 {
        opt_string(&mut c)?
    } else {
        None
    };
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
        page_size,
        filters,
        rejected,
        fallbacks,
        oom,
        buffer,
    })
}
