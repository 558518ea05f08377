//! The user-space pipeline on a synthetic kubelet-like stream, and the tracker's memory per
//! dying cgroup. `cargo bench -p cgtrace --bench pipeline` (what `cargo xtask bench` runs).
//!
//! Prints one machine-readable line per figure (`<key> <values…>`), which `cargo xtask bench`
//! parses:
//!
//! - `pipeline_round <track|histograms> <events> <cpu_s> <decode_cpu_s> <wall_s>`: one round of
//!   decode (`Event::decode`) → track (`Tracker::observe`) → with `histograms`, the lifetime
//!   histograms (`Lifetimes::record`), over raw ring-buffer records on this thread only (one
//!   core): its thread CPU time, that of decoding the same records alone, and its wall time.
//!   Rounds of both kinds alternate with session rounds;
//! - `session_round <events> <write_cpu_s> <replay_cpu_s> <session_bytes>`: the same stream
//!   decoded and written with `SessionWriter` to memory, then read back with `SessionReader`
//!   and tracked;
//! - `memory_dying <n> <rss_before_bytes> <rss_after_bytes> <tracked> <dying>`: a fresh process
//!   fed mkdir + rmdir (no release) of `n` memcgs with kubelet-length paths.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does a quick smoke run instead.
// A benchmark prints its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]
use std::{
    collections::VecDeque,
    env,
    hint::black_box,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use cgtrace::{
    format::clock::ClockRef,
    kernel::hierarchy::Hierarchies,
    model::baseline::Baseline,
    model::event::Event,
    model::tracker::Tracker,
    pipeline::histogram::Lifetimes,
    session::{Header, Item, SessionReader, SessionWriter},
};
use cgtrace_common::{COMM_LEN, EventKind, PATH_CAP, RawEvent, flags};

/// Time spent on the CPU by this thread: on a shared machine, time the thread waited for a CPU
/// does not count against the pipeline.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer, which is valid for writes.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and thread-CPU time of a piece of work.
#[derive(Clone, Copy, Default)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

impl Spent {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (w, c) = (Instant::now(), thread_cpu());
        let r = f();
        self.cpu += thread_cpu().saturating_sub(c);
        self.wall += w.elapsed();
        r
    }
}

/// Hierarchy ids of a hybrid node like this one: memory first (the one that holds memcgs),
/// then the other v1 controllers the kubelet's cgroupfs driver also creates every cgroup in,
/// then the v2 tree.
const HIERARCHIES: [u32; 9] = [4, 1, 2, 3, 5, 6, 7, 8, 0];
const MEMORY_HIERARCHY: u32 = 4;
/// Pods alive at once in the churn stream.
const WINDOW: usize = 64;
/// Containers per pod (the pause container and one app container).
const CONTAINERS: usize = 2;
/// Records per generated chunk (about 24 MiB of records, as a busy ring would hand over).
const CHUNK_RECORDS: usize = 65_536;
const RECORD: usize = size_of::<RawEvent>();
/// Set in the environment of the child process that measures memory: the cgroup count.
const MEMORY_CHILD_ENV: &str = "CGTRACE_BENCH_MEMORY_CHILD";

/// A small deterministic generator (SplitMix64): the same stream every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn push_hex(out: &mut Vec<u8>, mut v: u64, digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let start = out.len();
    out.resize(start + digits, b'0');
    for i in (0..digits).rev() {
        out[start + i] = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

/// `/kubepods/<qos>/pod<uuid>` for a pod drawn from `rng`.
fn pod_path(rng: &mut Rng) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(match rng.next() % 4 {
        0 => b"/kubepods/pod".as_slice(),
        1 => b"/kubepods/besteffort/pod".as_slice(),
        _ => b"/kubepods/burstable/pod".as_slice(),
    });
    let (a, b) = (rng.next(), rng.next());
    push_hex(&mut p, a >> 32, 8);
    p.push(b'-');
    push_hex(&mut p, a >> 16, 4);
    p.push(b'-');
    push_hex(&mut p, 0x4000 | (a & 0x0fff), 4);
    p.push(b'-');
    push_hex(&mut p, 0x8000 | (b >> 48 & 0x3fff), 4);
    p.push(b'-');
    push_hex(&mut p, b, 12);
    p
}

/// `<pod path>/<64 hex digits>`: a container cgroup as the cgroupfs driver names it.
fn container_path(pod: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut p = Vec::with_capacity(pod.len() + 65);
    p.extend_from_slice(pod);
    p.push(b'/');
    for _ in 0..4 {
        push_hex(&mut p, rng.next(), 16);
    }
    p
}

/// The bytes of one ring buffer record, as the eBPF programs write it.
fn record(
    kind: EventKind,
    ts_ns: u64,
    hierarchy_id: u32,
    cgroup_id: u64,
    path: &[u8],
    comm: &[u8],
    out: &mut Vec<u8>,
) {
    let memcg = hierarchy_id == MEMORY_HIERARCHY && kind != EventKind::Release;
    // As the raw tracepoint programs write them: the level left to the path.
    let mut fl = flags::HAS_CGROUP | flags::LEVEL_FROM_PATH;
    if memcg {
        fl |= flags::HAS_MEMCG_ID | flags::HAS_MEMORY | flags::HAS_KMEM | flags::HAS_MEMSW;
    }
    let path_len = path.len().min(PATH_CAP - 1);
    if path_len < path.len() {
        fl = (fl | flags::PATH_TRUNCATED) & !flags::LEVEL_FROM_PATH;
    }
    let mut ev = RawEvent {
        ts_ns,
        cgroup_id,
        css: 0,
        memory_pages: 12,
        kmem_pages: 3,
        memsw_pages: 12,
        hierarchy_id,
        level: path.iter().filter(|&&c| c == b'/').count() as u32,
        tgid: 4242,
        tid: 4242,
        memcg_id: (cgroup_id & 0xffff) as u32,
        path_len: path_len as u16,
        kind: kind as u8,
        flags: fl,
        errno: 0,
        source: 0,
        comm: [0; COMM_LEN],
        path: [0; PATH_CAP],
    };
    let c = comm.len().min(COMM_LEN - 1);
    ev.comm[..c].copy_from_slice(&comm[..c]);
    ev.path[..path_len].copy_from_slice(&path[..path_len]);
    let p = (&ev as *const RawEvent).cast::<u8>();
    // SAFETY: RawEvent is `#[repr(C)]` plain integers and byte arrays with explicit padding
    // fields (checked in cgtrace-common), so all of its `size_of` bytes are initialized.
    out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, RECORD) });
}

/// One cgroup of a pod: its path and its id in each hierarchy.
struct Cg {
    path: Vec<u8>,
    id: u64,
}

/// The kubelet-like churn stream: pods come and go with `WINDOW` alive at once; every cgroup
/// is made, removed and released in every hierarchy; releases lag one pod behind (they come
/// from a kernel worker after the rmdir).
struct KubeStream {
    rng: Rng,
    ts: u64,
    next_id: u64,
    alive: VecDeque<Vec<Cg>>,
    releasing: Vec<Cg>,
}

impl KubeStream {
    fn new() -> KubeStream {
        KubeStream {
            rng: Rng(0x5EED),
            ts: 1_000_000_000,
            next_id: 1000,
            alive: VecDeque::new(),
            releasing: Vec::new(),
        }
    }

    fn emit(&mut self, kind: EventKind, cg: &Cg, comm: &[u8], out: &mut Vec<u8>) -> usize {
        for (i, &h) in HIERARCHIES.iter().enumerate() {
            self.ts += 1_500;
            // Ids are per hierarchy: the same cgroup has a different id in each.
            let id = cg.id + i as u64;
            record(kind, self.ts, h, id, &cg.path, comm, out);
        }
        HIERARCHIES.len()
    }

    fn new_cg(&mut self, path: Vec<u8>) -> Cg {
        let id = self.next_id;
        self.next_id += HIERARCHIES.len() as u64;
        Cg { path, id }
    }

    /// Appends the records of one step (a pod starts, the oldest stops); returns their number.
    fn step(&mut self, out: &mut Vec<u8>) -> usize {
        let mut n = 0;
        let pod = pod_path(&mut self.rng);
        let mut cgs = vec![self.new_cg(pod.clone())];
        for _ in 0..CONTAINERS {
            let p = container_path(&pod, &mut self.rng);
            cgs.push(self.new_cg(p));
        }
        for cg in &cgs {
            n += self.emit(EventKind::Mkdir, cg, b"runc:[2:INIT]", out);
        }
        self.alive.push_back(cgs);
        for cg in std::mem::take(&mut self.releasing) {
            n += self.emit(EventKind::Release, &cg, b"kworker/1:2", out);
        }
        if self.alive.len() > WINDOW
            && let Some(old) = self.alive.pop_front()
        {
            // Containers first, then the pod.
            for cg in old.iter().rev() {
                n += self.emit(EventKind::Rmdir, cg, b"runc", out);
            }
            self.releasing = old;
        }
        n
    }

    /// Refills `out` with at least `records` records; returns how many.
    fn chunk(&mut self, records: usize, out: &mut Vec<u8>) -> usize {
        out.clear();
        let mut n = 0;
        while n < records {
            n += self.step(out);
        }
        n
    }
}

/// Decode → track (→ lifetime histograms) over every record of `buf`; returns the events
/// handled.
fn decode_and_track(
    buf: &[u8],
    tracker: &mut Tracker,
    mut lifetimes: Option<&mut Lifetimes>,
) -> u64 {
    let mut n = 0;
    for rec in buf.chunks_exact(RECORD) {
        match Event::decode(rec) {
            Ok(ev) => {
                let obs = tracker.observe(&ev);
                if let Some(l) = lifetimes.as_deref_mut() {
                    l.record(ev.hierarchy_id, &obs);
                }
                black_box(obs);
                n += 1;
            }
            Err(e) => panic!("the synthetic stream must decode: {e}"),
        }
    }
    n
}

/// Decode alone over every record of `buf` (what the tracker adds is the difference).
fn decode_only(buf: &[u8]) -> u64 {
    let mut n = 0;
    for rec in buf.chunks_exact(RECORD) {
        if black_box(Event::decode(rec)).is_ok() {
            n += 1;
        }
    }
    n
}

/// One round: at least `min_events` events through decode → track (→ lifetime histograms when
/// `histograms`), and the same records through decode alone. Generating the records is not
/// timed. Returns (events, pipeline time, decode time).
fn pipeline_round(min_events: u64, histograms: bool) -> (u64, Spent, Spent) {
    let mut stream = KubeStream::new();
    let mut tracker = Tracker::new(Some(MEMORY_HIERARCHY));
    let mut lifetimes = histograms.then(|| Lifetimes::new(Some(MEMORY_HIERARCHY)));
    let mut buf = Vec::with_capacity((CHUNK_RECORDS + 64) * RECORD);
    let (mut events, mut track, mut decode) = (0u64, Spent::default(), Spent::default());
    while events < min_events {
        stream.chunk(CHUNK_RECORDS, &mut buf);
        decode.time(|| black_box(decode_only(black_box(&buf))));
        events +=
            track.time(|| decode_and_track(black_box(&buf), &mut tracker, lifetimes.as_mut()));
    }
    black_box(tracker.totals());
    black_box(lifetimes);
    (events, track, decode)
}

/// A session header like `cgtrace record` writes (content does not matter for throughput).
fn session_header() -> Header {
    Header {
        cgtrace_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: "6.18.0-bench".into(),
        hostname: "bench".into(),
        boot_id: "00000000-0000-4000-8000-000000000000".into(),
        clock: ClockRef {
            mono_ns: 1_000_000_000,
            realtime_ns: 1_700_000_000_000_000_000,
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
    }
}

/// One session round: at least `min_events` events decoded and written to an in-memory session
/// (what `cgtrace record` does per record), then the session read back and tracked (what a
/// replay does). Returns (events, write time, replay time, session bytes).
fn session_round(min_events: u64) -> Result<(u64, Spent, Spent, usize), String> {
    let mut stream = KubeStream::new();
    let mut buf = Vec::with_capacity((CHUNK_RECORDS + 64) * RECORD);
    let baseline = Baseline::default();
    let mut writer = SessionWriter::new(Vec::new(), &session_header(), &baseline)
        .map_err(|e| format!("session writer: {e}"))?;
    let (mut events, mut write) = (0u64, Spent::default());
    while events < min_events {
        stream.chunk(CHUNK_RECORDS, &mut buf);
        write.time(|| -> Result<(), String> {
            for rec in buf.chunks_exact(RECORD) {
                let ev = Event::decode(rec).map_err(|e| format!("decode: {e}"))?;
                writer
                    .event(&ev)
                    .map_err(|e| format!("session write: {e}"))?;
                events += 1;
            }
            Ok(())
        })?;
    }
    let session = write.time(|| writer.finish_at(u64::MAX / 2));
    let session = session.map_err(|e| format!("session finish: {e}"))?;
    let mut replay = Spent::default();
    let replayed = replay.time(|| -> Result<u64, String> {
        let mut reader =
            SessionReader::new(session.as_slice()).map_err(|e| format!("session reader: {e}"))?;
        let mut tracker = Tracker::new(Some(MEMORY_HIERARCHY));
        let mut n = 0u64;
        while let Some(item) = reader.next().map_err(|e| format!("session read: {e}"))? {
            match item {
                Item::Event(ev) => {
                    black_box(tracker.observe(&ev));
                    n += 1;
                }
                Item::Baseline(b) => tracker.load_baseline(&b),
                _ => {}
            }
        }
        black_box(tracker.totals());
        Ok(n)
    })?;
    if replayed != events {
        return Err(format!("wrote {events} events, replayed {replayed}"));
    }
    Ok((events, write, replay, session.len()))
}

/// Resident set size of this process, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let page = cgtrace::kernel::page_size();
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    resident * page
}

/// The cgroups of the memory test: pods of one pod cgroup and 3 containers, each with a
/// kubelet-length path, generated again (not stored) for the rmdir pass.
fn memory_cgroup(i: u64, path: &mut Vec<u8>) {
    let pod = i / 4;
    let mut rng = Rng(0xD1E5 ^ pod.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    path.clear();
    path.extend_from_slice(&pod_path(&mut rng));
    let which = i % 4;
    if which > 0 {
        let mut c = Rng(rng.next() ^ which);
        let p = container_path(b"", &mut c);
        path.extend_from_slice(&p);
    }
}

/// In a fresh process: RSS before and after tracking `n` dying memcgs.
fn memory_child(n: u64) {
    let mut tracker = Tracker::new(Some(MEMORY_HIERARCHY));
    let mut path = Vec::with_capacity(PATH_CAP);
    let mut rec = Vec::with_capacity(RECORD);
    let mut feed = |kind: EventKind, i: u64, tracker: &mut Tracker| {
        memory_cgroup(i, &mut path);
        rec.clear();
        record(
            kind,
            1_000_000 + i * 1000 + kind as u64,
            MEMORY_HIERARCHY,
            10_000 + i,
            &path,
            b"runc",
            &mut rec,
        );
        match Event::decode(&rec) {
            Ok(ev) => {
                tracker.observe(&ev);
            }
            Err(e) => panic!("the synthetic record must decode: {e}"),
        }
    };
    // Warm the allocator and the code paths on another tracker, so the first allocations of
    // the process do not count.
    {
        let mut warm = Tracker::new(Some(MEMORY_HIERARCHY));
        for i in 0..64 {
            feed(EventKind::Mkdir, 1_000_000_000 + i, &mut warm);
        }
    }
    let before = rss_bytes();
    // Pods are made, then their cgroups removed, in the order a kubelet would; nothing is freed.
    for i in 0..n {
        feed(EventKind::Mkdir, i, &mut tracker);
    }
    for i in (0..n).rev() {
        feed(EventKind::Rmdir, i, &mut tracker);
    }
    let after = rss_bytes();
    let t = tracker.totals();
    println!(
        "memory_dying {n} {before} {after} {} {}",
        tracker.tracked(),
        t.dying
    );
    black_box(&tracker);
}

/// Runs the memory measure for `n` cgroups in a child process (a clean heap).
fn memory(n: u64) -> Result<(), String> {
    let exe = env::current_exe().map_err(|e| format!("cannot find the bench binary: {e}"))?;
    let out = Command::new(&exe)
        .env(MEMORY_CHILD_ENV, n.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "memory child for {n} cgroups failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn main() -> ExitCode {
    if let Ok(n) = env::var(MEMORY_CHILD_ENV) {
        match n.parse() {
            Ok(n) => {
                memory_child(n);
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("{MEMORY_CHILD_ENV}={n}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // `cargo bench` passes `--bench`; anything else (`cargo test --all-targets`) is a smoke run.
    let full = env::args().any(|a| a == "--bench");
    let (rounds, min_events, sizes): (usize, u64, &[u64]) = if full {
        (5, 5_000_000, &[10_000, 65_535])
    } else {
        (1, 20_000, &[1_000])
    };
    println!("record_bytes {RECORD}");
    println!(
        "stream hierarchies={} window_pods={WINDOW} containers_per_pod={CONTAINERS}",
        HIERARCHIES.len()
    );
    // One untimed round first: page in the code and warm the allocator.
    black_box(pipeline_round(min_events.min(500_000), true));
    // Alternating rounds: decode → track; decode → track → lifetime histograms; a session
    // written and replayed.
    for _ in 0..rounds {
        for histograms in [false, true] {
            let (events, track, decode) = pipeline_round(min_events, histograms);
            println!(
                "pipeline_round {} {events} {:.6} {:.6} {:.6}",
                if histograms { "histograms" } else { "track" },
                track.cpu.as_secs_f64(),
                decode.cpu.as_secs_f64(),
                track.wall.as_secs_f64()
            );
        }
        match session_round(min_events) {
            Ok((events, write, replay, bytes)) => println!(
                "session_round {events} {:.6} {:.6} {bytes}",
                write.cpu.as_secs_f64(),
                replay.cpu.as_secs_f64()
            ),
            Err(e) => {
                eprintln!("pipeline bench: session round: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    for &n in sizes {
        if let Err(e) = memory(n) {
            eprintln!("pipeline bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
