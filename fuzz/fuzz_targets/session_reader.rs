//! Feeds arbitrary bytes to the session reader: it must end or error, never panic, hang or
//! grow without bound.
#![no_main]

use cgtrace::session::{Item, SessionReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = SessionReader::new(data) else {
        return;
    };
    let mut bytes_seen = 0usize;
    loop {
        match reader.next() {
            Ok(Some(Item::Event(ev))) => {
                // Touch the borrowed slices so a bad borrow would show.
                bytes_seen = bytes_seen.wrapping_add(ev.path.len() + ev.comm.len());
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    std::hint::black_box((bytes_seen, reader.warnings().len(), reader.clean_end()));
});
