//! The session header (frame 1): what a session was recorded with, and its payload encoding.

use std::{ffi::OsStr, io, os::unix::ffi::OsStrExt, path::PathBuf};

use bytes::{BufMut, BytesMut};

use super::wire::{Cur, DResult, Malformed, check_str, put_bytes, put_varint};
use crate::{
    format::clock::ClockRef,
    kernel::hierarchy::{Hierarchies, Hierarchy},
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
    /// The filters used, free text.
    pub options: String,
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
    Ok(())
}

pub(super) fn decode_header(p: &[u8]) -> DResult<Header> {
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
