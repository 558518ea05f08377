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
            .map(|_| crate::format::hex::DIGITS[self.below(16) as usize] as char)
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

mod damage;
