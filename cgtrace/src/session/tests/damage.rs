//! Damaged, truncated, foreign and future session files: a prefix or an error, never a panic.
use super::*;

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
        let len = u32::from_le_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
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
    let text = b"13:42:04.801116 mkdir        memory         /cgtrace-demo  mkdir[9689] id=3137\n";
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
