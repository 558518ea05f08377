//! Valid preamble and header, then frames whose payloads the fuzzer chooses, sealed with correct
//! checksums: reaches the record decoder, which random bytes (almost always failing the CRC)
//! do not. Frames are built from the layout in docs/format.md, not from the writer's helpers.
#![no_main]

use std::sync::OnceLock;

use cgtrace::{
    format::clock::ClockRef,
    kernel::hierarchy::Hierarchies,
    session::{Baseline, Header, SYNC, SessionReader, SessionWriter},
};
use libfuzzer_sys::fuzz_target;

/// Preamble, header frame and an empty baseline frame.
fn prefix() -> &'static [u8] {
    static PREFIX: OnceLock<Vec<u8>> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let header = Header {
            cgtrace_version: "fuzz".into(),
            kernel_release: "0".into(),
            hostname: "fuzz".into(),
            boot_id: "0".into(),
            clock: ClockRef {
                mono_ns: 0,
                realtime_ns: 0,
            },
            tier: "tracepoint".into(),
            attach: "raw_tracepoint".into(),
            hierarchies: Hierarchies::default(),
            options: String::new(),
            page_size: 4096,
            filters: Default::default(),
            rejected: Vec::new(),
            fallbacks: Vec::new(),
            oom: None,
            buffer: Some("ring".into()),
        };
        match SessionWriter::new(Vec::new(), &header, &Baseline::default()) {
            Ok(w) => w.get_ref().clone(),
            Err(_) => Vec::new(),
        }
    })
}

fn push_frame(out: &mut Vec<u8>, ty: u8, count: u32, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&SYNC);
    out.push(ty);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let hcrc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    // Input: repeated [type selector, length (u16 LE), payload...].
    let mut file = prefix().to_vec();
    let mut rest = data;
    while let [sel, l0, l1, tail @ ..] = rest {
        let ty = match sel % 8 {
            0 => 2,       // baseline
            1 => 4,       // footer
            7 => sel / 8, // anything, unknown types included
            _ => 3,       // batch
        };
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        push_frame(&mut file, ty, u32::from(*sel), &tail[..len]);
        rest = &tail[len..];
    }
    let Ok(mut reader) = SessionReader::new(&file[..]) else {
        return;
    };
    let mut n = 0u64;
    while let Ok(Some(_)) = reader.next() {
        n += 1;
    }
    std::hint::black_box((n, reader.warnings().len()));
});
