//! Round trips through [`SessionWriter`] and [`SessionReader`]: truncation, damage, unknown
//! records and versions, the size per event and decode throughput.

use std::{
    ffi::OsStr,
    io::{self, Write},
    os::unix::ffi::OsStrExt,
    path::PathBuf,
    time::Instant,
};

use bytes::{BufMut, BytesMut};
use cgtrace_common::EventKind;

use super::{wire::*, *};
use crate::{
    format::clock::ClockRef,
    kernel::{
        hierarchy::{Hierarchies, Hierarchy},
        memcg_ids::KernelMemcgs,
    },
    model::event::Event,
    model::oom::{Comm, Constraint, OomKill, OomLimit, OomMm},
};

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
    oom: Option<Box<OomKill<'static>>>,
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
            errno_inferred: false,
            syscall_relative: false,
            oom: self.oom.as_deref(),
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
            // A session keeps no limit path (the tracker knows it).
            oom: e.oom.map(|o| {
                Box::new(OomKill {
                    limit: o.limit.map(|l| OomLimit { path: b"", ..l }),
                    ..*o
                })
            }),
        }
    }

    /// An event on hierarchy 0 as the tracker's tests make them, with this pid and comm.
    fn simple(ts_ns: u64, kind: EventKind, cgroup_id: u64, pid: u32, comm: &str, path: &str) -> Ev {
        let e = crate::model::tracker::tests::ev(kind, ts_ns, 0, cgroup_id, path.as_bytes());
        Ev::of(&Event {
            pid,
            tid: pid,
            comm: comm.as_bytes(),
            ..e
        })
    }
}

/// An owned [`Item`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Header(Box<Header>),
    Baseline(Baseline),
    Event(Ev),
    Lost(u64, EventKind, u64),
    Pod(String, String, String),
    Kernel(KernelMemcgs),
    Note(String),
    Footer(u64, u64, u64),
}

fn own(it: Item<'_>) -> Owned {
    match it {
        Item::Header(h) => Owned::Header(h),
        Item::Baseline(b) => Owned::Baseline(b),
        Item::Event(e) => Owned::Event(Ev::of(&e)),
        Item::Lost { ts_ns, kind, count } => Owned::Lost(ts_ns, kind, count),
        Item::PodName {
            pod_uid,
            namespace,
            name,
        } => Owned::Pod(pod_uid, namespace, name),
        Item::KernelMemcgs(k) => Owned::Kernel(k),
        Item::Note(n) => Owned::Note(n),
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
    Kernel(KernelMemcgs),
    Note(String),
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
        page_size: 16384,
        filters: crate::pipeline::filters::Filters {
            controllers: vec!["memory".into()],
            path_prefix: Some("/kubepods".into()),
            subtree: None,
        },
        rejected: vec![("fentry".into(), "EPERM from BPF_PROG_LOAD".into())],
        fallbacks: vec![],
        oom: None,
        buffer: Some("perf".into()),
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
            In::Kernel(k) => w.kernel_memcgs(k).expect("kernel memcgs"),
            In::Note(n) => w.note(n).expect("note"),
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
    let mut out = vec![
        Owned::Header(Box::new(h.clone())),
        Owned::Baseline(b.clone()),
    ];
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
            In::Kernel(k) => out.push(Owned::Kernel(*k)),
            In::Note(n) => out.push(Owned::Note(n.clone())),
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
    for k in [
        KernelMemcgs {
            ts_ns: 7,
            all: Some(65_535),
            ..KernelMemcgs::default()
        },
        KernelMemcgs {
            ts_ns: u64::MAX,
            live: Some(0),
            all: None,
            dying: Some(u64::MAX),
        },
        KernelMemcgs::default(),
    ] {
        v.push(In::Kernel(k));
    }
    v.push(In::Note(
        "the start-up walk could not run (\u{1b}[31m\n)".to_string(),
    ));
    v.push(In::Note(String::new()));
    // OOM kills: every field, then the victim's comm as the trigger's, then a bare block.
    let mut e = Ev::simple(
        9,
        EventKind::OomKill,
        77,
        4242,
        "java",
        "/kubepods/burstable/pod0b7c1f2e-3a4d-4c3b-9d4e-5f6a7b8c9d01/c0ffee",
    );
    e.usage_bytes = Some(32 << 20);
    let full = OomKill {
        constraint: Constraint::Memcg,
        derived: true,
        limit: Some(OomLimit {
            cgroup_id: u64::MAX,
            level: 4,
            usage_bytes: (32 << 20) - 4096,
            limit_bytes: 32 << 20,
            memsw: true,
            path: b"",
        }),
        victim_limit_bytes: Some(u64::MAX),
        oom_score_adj: Some(-1000),
        uid: Some(u32::MAX),
        mm: Some(OomMm {
            total_vm_bytes: 1,
            rss_anon_bytes: 2 << 30,
            rss_file_bytes: 4096,
            rss_shmem_bytes: 0,
            swap_bytes: u64::MAX,
            pgtables_bytes: 12288,
        }),
        trigger_pid: Some(7),
        trigger_comm: Comm::new(b"kubelet"),
        totalpages_bytes: Some(8 << 30),
        victim_task: true,
        pid_only: true,
        exiting: true,
        context: true,
        in_kill: true,
        counted: None,
    };
    e.oom = Some(Box::new(full));
    v.push(In::Ev(e.clone()));
    e.oom = Some(Box::new(OomKill {
        trigger_comm: Comm::new(b"java"),
        ..full
    }));
    v.push(In::Ev(e.clone()));
    e.oom = Some(Box::new(OomKill::default()));
    v.push(In::Ev(e));
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
    println!("churn, 100000 events over 5000 cgroup paths: {total} bytes, {bpe:.2} bytes/event");
    assert!(total as u64 > REDEFINE_WINDOW);
    assert!(bpe <= 32.0, "{bpe}");

    let inputs = kube_churn(100_000, 0, 12);
    let (total, bpe) = bytes_per_event(&inputs);
    println!("churn, 100000 events, every container path new: {total} bytes, {bpe:.2} bytes/event");
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
    let mut w = SessionWriter::new(Vec::new(), &header(), &Baseline::default()).expect("writer");
    let mut e = Ev::simple(1, EventKind::Mkdir, 1, 1, "a", "/a");
    e.path = vec![b'a'; MAX_INTERNED_LEN + 1];
    let err = w.event(&e.view()).expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("4097"));
}

#[test]
fn the_buffer_is_appended_to_version_3_and_older_version_3_headers_still_decode() {
    let mut h = header();
    for buffer in [Some("perf"), Some("ring"), None] {
        h.buffer = buffer.map(String::from);
        let mut b = BytesMut::new();
        super::header::encode_header(&mut b, &h).expect("encode");
        assert_eq!(super::header::decode_header(&b, 3).expect("decode"), h);
    }
    // Written before the buffer was appended: the header ends after the OOM field.
    let mut b = BytesMut::new();
    super::header::encode_header(&mut b, &h).expect("encode");
    assert_eq!(b.last(), Some(&0), "an absent buffer is one presence byte");
    let old = super::header::decode_header(&b[..b.len() - 1], 3).expect("decode");
    assert_eq!(old.buffer, None);
    assert_eq!(old, h);
}
