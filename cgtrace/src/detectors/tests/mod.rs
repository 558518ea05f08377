use super::*;
use crate::model::tracker::tests::ev;
use shape::MAX_SHAPE_LEN;
use window::Ring;

fn kmem(v: &Verdict) -> &KmemLeakEvidence {
    match &v.evidence {
        Evidence::KmemLeak(e) => e,
        e => panic!("not kmem_leak evidence: {e:?}"),
    }
}

fn page(v: &Verdict) -> &PageCacheEvidence {
    match &v.evidence {
        Evidence::PageCache(e) => e,
        e => panic!("not page_cache_pinning evidence: {e:?}"),
    }
}

fn churn(v: &Verdict) -> &ChurnStormEvidence {
    match &v.evidence {
        Evidence::ChurnStorm(e) => e,
        e => panic!("not churn_storm evidence: {e:?}"),
    }
}

fn crash(v: &Verdict) -> &CrashLoopEvidence {
    match &v.evidence {
        Evidence::CrashLoop(e) => e,
        e => panic!("not crash_loop evidence: {e:?}"),
    }
}

fn mkdir(v: &Verdict) -> &MkdirFailedEvidence {
    match &v.evidence {
        Evidence::MkdirFailed(e) => e,
        e => panic!("not mkdir_failed evidence: {e:?}"),
    }
}

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const MEM: u32 = 4;

fn uid(i: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", 0x0a1b_2c3d_u64 + i, i)
}

fn cid(i: u64) -> String {
    format!("{:064x}", 0xc0ff_ee00_0000_0000_u64 + i)
}

/// An event the way the decoder hands it over.
fn mk<'a>(kind: EventKind, ts: u64, h: u32, id: u64, path: &'a [u8]) -> Event<'a> {
    Event {
        pid: 4242,
        tid: 4242,
        ..ev(kind, ts, h, id, path)
    }
}

/// A tracker and detectors fed together.
struct Rig {
    t: Tracker,
    d: Detectors,
}

impl Rig {
    fn new(release: &str, memory: u32) -> Rig {
        Rig {
            t: Tracker::new(Some(memory)),
            d: Detectors::new(
                DetectorConfig::default(),
                KernelFacts::from_release(release),
            ),
        }
    }

    fn feed(&mut self, ev: &Event<'_>) {
        let o = self.t.observe(ev);
        self.d.observe(ev, &o, &self.t);
    }

    fn verdicts(&self) -> Vec<Verdict> {
        self.d.verdicts(&self.t)
    }

    fn find(&self, detector: &str) -> Vec<Verdict> {
        self.verdicts()
            .into_iter()
            .filter(|v| v.detector == detector)
            .collect()
    }
}

/// Pods 0..pods, then one container every `every` s for `n` containers, removed `live` s
/// after creation with the given memcg figures, freed `free_after` s after removal (None:
/// never). Calls `check` every simulated minute.
#[allow(clippy::too_many_arguments)]
fn churn_containers(
    rig: &mut Rig,
    pods: u64,
    n: u64,
    every: u64,
    live: u64,
    figures: (u64, Option<u64>, Option<u64>),
    free_after: Option<u64>,
    mut check: impl FnMut(&Rig, u64),
) {
    let mut evs: Vec<(u64, EventKind, u64, String)> = Vec::new();
    for p in 0..pods {
        evs.push((
            S / 2,
            EventKind::Mkdir,
            10 + p,
            format!("/kubepods/burstable/pod{}", uid(p)),
        ));
    }
    for k in 0..n {
        let path = format!("/kubepods/burstable/pod{}/{}", uid(k % pods), cid(k));
        let mk_ts = (every * k + 1) * S;
        let rm_ts = mk_ts + live * S;
        evs.push((mk_ts, EventKind::Mkdir, 1000 + k, path.clone()));
        evs.push((rm_ts, EventKind::Rmdir, 1000 + k, path.clone()));
        if let Some(f) = free_after {
            evs.push((rm_ts + f * S, EventKind::Release, 1000 + k, path));
        }
    }
    evs.sort_by_key(|e| (e.0, e.1 as u8, e.2));
    let mut next_check = 60 * S;
    for (ts, kind, id, path) in &evs {
        while *ts > next_check {
            check(rig, next_check);
            next_check += 60 * S;
        }
        let mut e = mk(*kind, *ts, MEM, *id, path.as_bytes());
        if *kind == EventKind::Rmdir {
            e.usage_bytes = Some(figures.0);
            e.kmem_bytes = figures.1;
            e.memsw_bytes = figures.2;
        }
        rig.feed(&e);
    }
}

#[test]
fn kernel_facts() {
    let k = KernelFacts::from_release("3.10.0-957.21.3.el7.x86_64");
    assert_eq!(k.version.map(|v| v.version()), Some((3, 10)));
    assert!(k.ids_held_by_dying() && k.slab_pins_dying());
    let k = KernelFacts::from_release("4.19.0-26-amd64");
    assert!(!k.ids_held_by_dying() && k.slab_pins_dying());
    let k = KernelFacts::from_release("6.18.44-fc-v669");
    assert_eq!(k.version.map(|v| v.version()), Some((6, 18)));
    assert!(!k.ids_held_by_dying() && !k.slab_pins_dying());
    let k = KernelFacts::from_release("garbage");
    assert_eq!(k.version, None);
    assert!(!k.ids_held_by_dying() && !k.slab_pins_dying());
}

/// 1800 containers over 3 h (one every 6 s), kmem charged, never freed.
fn kmem_leak_rig(release: &str) -> Rig {
    let mut rig = Rig::new(release, MEM);
    let fig = (256 * 1024, Some(64 * 1024), Some(256 * 1024));
    churn_containers(&mut rig, 10, 1800, 6, 5, fig, None, |rig, now| {
        let v = rig.find("kmem_leak");
        // Not before a whole window of events was seen.
        if now <= 610 * S {
            assert!(v.is_empty(), "at {now}: {v:?}");
        }
        if now >= 700 * S {
            assert_eq!(v.len(), 1, "at {now}");
        }
    });
    rig
}

#[test]
fn kmem_leak_on_3_10() {
    let rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
    assert_eq!(rig.t.now_ns(), 10_800 * S);
    let v = rig.find("kmem_leak");
    assert_eq!(v.len(), 1, "{v:?}");
    let v = &v[0];
    assert_eq!(v.severity, Severity::Critical);
    let e = kmem(v);
    assert_eq!(e.count, 1800);
    assert_eq!(e.dying, 1800);
    assert_eq!(e.kmem_pinned, 1800);
    assert_eq!(e.kmem_bytes, 1800 * 64 * 1024);
    // Window [10200 s, 10800 s): removals at 10200, 10206, …, 10794.
    assert_eq!(e.removed_in_window, 100);
    assert_eq!(e.freed_in_window, 0);
    assert_eq!(e.window_s, 600.0);
    assert_eq!(e.growth_per_hour, 600.0);
    assert_eq!(e.live_memcgs, 10);
    assert_eq!(e.swap_held, 0);
    assert!(e.ids_held_by_dying);
    // 65535 − 10 live − 1800 dying, at 600/h: 106.2 h.
    assert_eq!(e.id_headroom, 63_725);
    assert_eq!(e.eta_to_enospc_s, Some(382_350.0));
    assert_eq!(e.sample.oldest_age_s, Some(10_794.0));
    assert_eq!(e.sample.example_paths.len(), 5);
    assert_eq!(
        e.sample.example_paths[0],
        format!("/kubepods/burstable/pod{}/{}", uid(0), cid(0))
    );
    assert_eq!(e.sample.pod_uids.len(), 5);
    assert!(v.summary.contains("1800 dying memcgs"), "{}", v.summary);
    assert!(
        v.summary.contains("+600/h") && v.summary.contains("63725"),
        "{}",
        v.summary
    );
    assert!(v.summary.contains("4d 10h"), "{}", v.summary);
    for m in [
        "cgroup.memory=nokmem",
        "nokmem",
        "-tags=nokmem",
        "3.10.0-1075.el7",
        "reboot",
    ] {
        assert!(v.recommendation.contains(m), "{m}: {}", v.recommendation);
    }
    // The pinned memcgs are kmem_leak's, not page cache.
    assert!(rig.find("page_cache_pinning").is_empty());
}

#[test]
fn kmem_leak_on_4_19_has_no_eta() {
    let rig = kmem_leak_rig("4.19.0-26-amd64");
    let v = rig.find("kmem_leak");
    assert_eq!(v.len(), 1, "{v:?}");
    let e = kmem(&v[0]);
    assert_eq!(v[0].severity, Severity::Warning);
    assert_eq!(e.growth_per_hour, 600.0);
    assert!(!e.ids_held_by_dying);
    assert_eq!(e.id_headroom, 65_525);
    assert_eq!(e.eta_to_enospc_s, None);
}

#[test]
fn kmem_leak_stays_while_nothing_frees_and_goes_when_freed() {
    let mut rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
    // Churn stops; an unrelated event two hours later.
    rig.feed(&mk(EventKind::Mkdir, 18_000 * S, 2, 1, b"/quiet"));
    let v = rig.find("kmem_leak");
    assert_eq!(v.len(), 1);
    assert_eq!(kmem(&v[0]).growth_per_hour, 0.0);
    assert_eq!(kmem(&v[0]).eta_to_enospc_s, None);
    // A reboot-free miracle: 1750 of them are freed.
    for k in 0..1750u64 {
        let path = format!("/kubepods/burstable/pod{}/{}", uid(k % 10), cid(k));
        rig.feed(&mk(
            EventKind::Release,
            18_100 * S + k * MS,
            MEM,
            1000 + k,
            path.as_bytes(),
        ));
    }
    rig.feed(&mk(EventKind::Mkdir, 18_800 * S, 2, 2, b"/quiet2"));
    assert!(rig.find("kmem_leak").is_empty());
}

#[test]
fn no_kmem_leak_for_page_cache_plateau_on_6_x() {
    // Usage mostly file pages, small kmem, freed 60 s after removal.
    let fig = (1 << 20, Some(16 * 1024), Some(1 << 20));
    for release in ["6.18.44-fc-v669", "4.19.0-26-amd64"] {
        let mut rig = Rig::new(release, MEM);
        churn_containers(&mut rig, 10, 1800, 6, 5, fig, Some(60), |rig, now| {
            assert!(rig.find("kmem_leak").is_empty(), "{release} at {now}");
        });
        assert!(rig.find("kmem_leak").is_empty());
        let t = rig.t.totals();
        assert!(t.dying <= 11 && t.freed >= 1789, "{t:?}");
    }
}

#[test]
fn no_kmem_leak_when_dying_are_freed_steadily_on_4_19() {
    // One every 2 s, freed 8 min later: ~240 dying on a plateau, above kmem_min_dying.
    let fig = (1 << 20, Some(64 * 1024), Some(1 << 20));
    let mut rig = Rig::new("4.19.0-26-amd64", MEM);
    let mut max_dying = 0;
    churn_containers(&mut rig, 10, 5400, 2, 1, fig, Some(480), |rig, now| {
        max_dying = max_dying.max(rig.t.totals().dying);
        assert!(rig.find("kmem_leak").is_empty(), "at {now}");
    });
    assert!(max_dying >= 200, "{max_dying}");
    assert!(rig.find("kmem_leak").is_empty());
}

#[test]
fn page_cache_pinning_on_6_x() {
    let mut rig = Rig::new("6.18.44-fc-v669", 0);
    rig.feed(&mk(
        EventKind::Mkdir,
        S,
        0,
        9,
        format!("/kubepods/burstable/pod{}", uid(1)).as_bytes(),
    ));
    for i in 0..50u64 {
        let path = format!("/kubepods/burstable/pod{}/{}", uid(1 + i % 2), cid(i));
        rig.feed(&mk(
            EventKind::Mkdir,
            (2 + i) * S,
            0,
            100 + i,
            path.as_bytes(),
        ));
    }
    for i in 0..50u64 {
        let path = format!("/kubepods/burstable/pod{}/{}", uid(1 + i % 2), cid(i));
        let mut e = mk(EventKind::Rmdir, (100 + i) * S, 0, 100 + i, path.as_bytes());
        e.usage_bytes = Some(4 << 20);
        rig.feed(&e);
    }
    // At 149 s only the 20 removed at 100..=119 s are 30 s old.
    let v = rig.find("page_cache_pinning");
    assert_eq!(v.first().map(|v| page(v).count), Some(20), "{v:?}");
    rig.feed(&mk(EventKind::Mkdir, 400 * S, 9, 1, b"/tick"));
    let v = rig.find("page_cache_pinning");
    assert_eq!(v.len(), 1, "{:?}", rig.verdicts());
    let v = &v[0];
    assert_eq!(v.severity, Severity::Info);
    assert_eq!(page(v).count, 50);
    assert_eq!(page(v).dying, 50);
    assert_eq!(page(v).total_bytes, 50 * (4 << 20));
    assert_eq!(page(v).kmem_bytes, None);
    assert_eq!(page(v).sample.oldest_age_s, Some(300.0));
    assert_eq!(page(v).sample.found_at_start, 0);
    assert_eq!(page(v).sample.pod_uids, vec![uid(1), uid(2)]);
    assert_eq!(
        page(v).sample.example_paths[0],
        format!("/kubepods/burstable/pod{}/{}", uid(1), cid(0))
    );
    assert!(v.summary.contains("page cache or shmem"), "{}", v.summary);
    assert!(v.summary.contains("200.0 MiB"), "{}", v.summary);
    assert!(v.recommendation.contains("drop_caches"));
    assert!(v.recommendation.contains("memory.force_empty"));
    assert!(rig.find("kmem_leak").is_empty());
}

#[test]
fn normalises_names() {
    let mut s = String::new();
    let mut shape = |leaf: &[u8]| {
        normalise_leaf(leaf, &mut s);
        s.clone()
    };
    let u = uid(7);
    let u_ = u.replace('-', "_");
    assert_eq!(
        shape(b"libcontainer_12345_systemd_test_default.slice"),
        "libcontainer_<n>_systemd_test_default.slice"
    );
    assert_eq!(
        shape(format!("cri-containerd-{}.scope", cid(3)).as_bytes()),
        "cri-containerd-<hex>.scope"
    );
    assert_eq!(shape(cid(3).as_bytes()), "<hex>");
    assert_eq!(shape(b"3b1f2a9c8d7e"), "<hex>");
    assert_eq!(shape(format!("pod{u}").as_bytes()), "pod<uid>");
    assert_eq!(
        shape(format!("kubepods-burstable-pod{u_}.slice").as_bytes()),
        "kubepods-burstable-pod<uid>.slice"
    );
    assert_eq!(shape(b"pod5d1e0f4b2a3c4d5e6f708192a3b4c5d6"), "pod<hex>");
    assert_eq!(shape(b"podab1e0f4b2a3c4d5e6f708192a3b4c5d6"), "pod<hex>");
    assert_eq!(
        shape(b"run-r3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c.scope"),
        "run-r<hex>.scope"
    );
    assert_eq!(
        shape(b"run-rab2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c.scope"),
        "run-r<hex>.scope"
    );
    assert_eq!(shape(b"session-42.scope"), "session-<n>.scope");
    assert_eq!(shape(b"a1b2"), "a<n>b<n>");
    assert_eq!(shape(b"system.slice"), "system.slice");
    assert_eq!(shape(b"bad\xffname\x1b7"), "bad\u{fffd}name\x1b<n>");
    assert!(shape(&[b'a'; 255]).len() <= MAX_SHAPE_LEN);
    assert_eq!(shape(b""), "");
}

#[test]
fn churn_storm_of_runc_systemd_probes() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let t0 = 1000 * S;
    let mut id = 1;
    for i in 0..1000u64 {
        let ts = t0 + i * 20 * MS;
        let path = format!("/libcontainer_{}_systemd_test_default.slice", 40_000 + i);
        for h in 1..=5u32 {
            rig.feed(&mk(
                EventKind::Mkdir,
                ts + u64::from(h) * 1000,
                h,
                id + u64::from(h),
                path.as_bytes(),
            ));
        }
        for h in 1..=5u32 {
            let mut e = mk(
                EventKind::Rmdir,
                ts + 5 * MS + u64::from(h) * 1000,
                h,
                id + u64::from(h),
                path.as_bytes(),
            );
            e.usage_bytes = Some(0);
            rig.feed(&e);
        }
        id += 10;
    }
    let v = rig.find("churn_storm");
    assert_eq!(v.len(), 1, "{v:?}");
    let v = &v[0];
    let rate = churn(v).rate_per_s;
    assert!((rate - 50.0).abs() <= 1.0, "{rate}");
    assert_eq!(
        churn(v).shape,
        "libcontainer_<n>_systemd_test_default.slice"
    );
    assert_eq!(churn(v).removed, churn(v).count);
    assert_eq!(churn(v).mean_lifetime_s, Some(0.005));
    assert_eq!(v.severity, Severity::Warning);
    assert!(churn(v).example_paths[0].starts_with("/libcontainer_4"));
    assert_eq!(churn(v).comm.as_deref(), Some("runc"));
    assert_eq!(churn(v).pid, Some(4242));
    assert!(v.recommendation.contains("runc"));
    // None of it is a memcg leak or a crash loop.
    assert!(rig.find("kmem_leak").is_empty() && rig.find("crash_loop").is_empty());
}

#[test]
fn no_churn_storm_for_normal_churn() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
    ];
    for i in 0..120u64 {
        let path = format!("/system.slice/{}-{}.service", words[(i % 7) as usize], i);
        rig.feed(&mk(
            EventKind::Mkdir,
            (10 + i) * S,
            MEM,
            100 + i,
            path.as_bytes(),
        ));
        rig.feed(&mk(
            EventKind::Rmdir,
            (10 + i) * S + 500 * MS,
            MEM,
            100 + i,
            path.as_bytes(),
        ));
    }
    assert!(rig.find("churn_storm").is_empty(), "{:?}", rig.verdicts());
}

#[test]
fn churn_shapes_stay_bounded() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    for i in 0..5000u64 {
        // Letters only, so every name is its own shape.
        let name: String = format!("{i:05}")
            .bytes()
            .map(|b| char::from(b - b'0' + b'g'))
            .collect();
        let path = format!("/x{name}");
        rig.feed(&mk(
            EventKind::Mkdir,
            10 * S + i * MS,
            MEM,
            100 + i,
            path.as_bytes(),
        ));
    }
    assert!(rig.d.churn_storm.shapes_tracked() <= churn_storm::MAX_SHAPES);
}

fn crash_loop_rig() -> Rig {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let (a, b) = (uid(1), uid(2));
    rig.feed(&mk(
        EventKind::Mkdir,
        S,
        MEM,
        10,
        format!("/kubepods/burstable/pod{a}").as_bytes(),
    ));
    rig.feed(&mk(
        EventKind::Mkdir,
        S,
        MEM,
        11,
        format!("/kubepods/burstable/pod{b}").as_bytes(),
    ));
    rig.t.set_pod_name(&a, "default", "crashy");
    for j in 0..8u64 {
        let path = format!("/kubepods/burstable/pod{a}/{}", cid(j));
        let ts = 10 * S + j * 35 * S;
        rig.feed(&mk(EventKind::Mkdir, ts, MEM, 100 + j, path.as_bytes()));
        // A cgroup inside the container is not another container.
        let inner = format!("{path}/init.scope");
        rig.feed(&mk(
            EventKind::Mkdir,
            ts + MS,
            MEM,
            200 + j,
            inner.as_bytes(),
        ));
        rig.feed(&mk(
            EventKind::Rmdir,
            ts + 29 * S,
            MEM,
            200 + j,
            inner.as_bytes(),
        ));
        rig.feed(&mk(
            EventKind::Rmdir,
            ts + 30 * S,
            MEM,
            100 + j,
            path.as_bytes(),
        ));
    }
    for j in 0..2u64 {
        let path = format!("/kubepods/burstable/pod{b}/{}", cid(50 + j));
        rig.feed(&mk(
            EventKind::Mkdir,
            20 * S + j * 100 * S,
            MEM,
            300 + j,
            path.as_bytes(),
        ));
        rig.feed(&mk(
            EventKind::Rmdir,
            80 * S + j * 100 * S,
            MEM,
            300 + j,
            path.as_bytes(),
        ));
    }
    rig
}

#[test]
fn crash_loop_names_the_pod() {
    let rig = crash_loop_rig();
    let v = rig.find("crash_loop");
    assert_eq!(v.len(), 1, "{v:?}");
    let v = &v[0];
    assert_eq!(crash(v).pod_uid, uid(1));
    assert_eq!(crash(v).pod_name.as_deref(), Some("crashy"));
    assert_eq!(crash(v).pod_namespace.as_deref(), Some("default"));
    assert_eq!(crash(v).qos.as_deref(), Some("burstable"));
    assert_eq!(crash(v).count, 8);
    assert_eq!(crash(v).restarts, 7);
    assert_eq!(crash(v).window_s, 600.0);
    assert_eq!(crash(v).container_ids.len(), 5);
    assert_eq!(crash(v).container_ids[0], cid(7));
    assert!(v.summary.contains("default/crashy"), "{}", v.summary);
    assert!(
        v.recommendation
            .contains("kubectl -n default logs crashy --previous")
    );
}

#[test]
fn pod_start_with_init_containers_is_no_crash_loop() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let p = uid(3);
    rig.feed(&mk(
        EventKind::Mkdir,
        S,
        MEM,
        10,
        format!("/kubepods/pod{p}").as_bytes(),
    ));
    let mut ts = 2 * S;
    let mut step = |rig: &mut Rig, kind, j: u64| {
        let path = format!("/kubepods/pod{p}/{}", cid(j));
        rig.feed(&mk(kind, ts, MEM, 100 + j, path.as_bytes()));
        ts += S;
    };
    // pause, two init containers one after the other, three app containers.
    step(&mut rig, EventKind::Mkdir, 0);
    step(&mut rig, EventKind::Mkdir, 1);
    step(&mut rig, EventKind::Rmdir, 1);
    step(&mut rig, EventKind::Mkdir, 2);
    step(&mut rig, EventKind::Rmdir, 2);
    for j in 3..6 {
        step(&mut rig, EventKind::Mkdir, j);
    }
    assert!(rig.find("crash_loop").is_empty(), "{:?}", rig.verdicts());
}

#[test]
fn mkdir_failed_enospc() {
    let mut rig = Rig::new("3.10.0-957.el7.x86_64", MEM);
    let path = format!(
        "/sys/fs/cgroup/memory/kubepods/burstable/pod{}/{}",
        uid(5),
        cid(5)
    );
    let mut e = mk(EventKind::MkdirFailed, 42 * S, 0, 0, path.as_bytes());
    e.has_cgroup = false;
    e.errno = Some(28);
    e.pid = 31337;
    rig.feed(&e);
    let mut e2 = mk(
        EventKind::MkdirFailed,
        43 * S,
        0,
        0,
        b"/sys/fs/cgroup/memory/x",
    );
    e2.has_cgroup = false;
    e2.errno = Some(17);
    e2.comm = b"mkdir";
    rig.feed(&e2);
    let v = rig.find("mkdir_failed");
    assert_eq!(v.len(), 2, "{v:?}");
    let c = &v[0];
    assert_eq!(c.severity, Severity::Critical);
    assert_eq!(mkdir(c).errno, 28);
    assert_eq!(mkdir(c).errno_name, "ENOSPC");
    assert_eq!(mkdir(c).path, path.as_str());
    assert_eq!(mkdir(c).pod_uid, Some(uid(5)));
    assert_eq!(mkdir(c).comm, "runc");
    assert_eq!(mkdir(c).pid, 31337);
    assert_eq!(mkdir(c).count, 1);
    assert_eq!(mkdir(c).in_window, 1);
    assert_eq!(mkdir(c).last_seen_age_s, 1.0);
    assert_eq!(mkdir(c).id_headroom, Some(MEMCG_ID_MAX));
    assert!(
        c.summary.contains("ENOSPC") && c.summary.contains("runc[31337]"),
        "{}",
        c.summary
    );
    assert_eq!(v[1].severity, Severity::Info);
    assert_eq!(mkdir(&v[1]).errno_name, "EEXIST");
    assert_eq!(mkdir(&v[1]).id_headroom, None);
}

#[test]
fn render_escapes_control_characters() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let mut e = mk(
        EventKind::MkdirFailed,
        S,
        0,
        0,
        b"/sys/fs/cgroup/evil\x1b[2J\nname\xff",
    );
    e.errno = Some(12);
    e.comm = b"ev\x07il";
    rig.feed(&e);
    let v = rig.find("mkdir_failed");
    assert_eq!(v.len(), 1);
    let text = render_verdict(&v[0]);
    assert!(text.starts_with("CRITICAL mkdir_failed: "), "{text}");
    // One escaping policy for all terminal text (`format::escape`): a newline reads `\n`.
    assert!(text.contains("evil\\x1b[2J\\nname\u{fffd}"), "{text}");
    assert!(text.contains("ev\\x07il[4242]"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(!v[0].summary.chars().any(char::is_control));
    // JSON keeps the real name and stays valid.
    let json = serde_json::to_string(&v[0]).unwrap_or_default();
    let back: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back["severity"], "critical");
    assert_eq!(
        back["evidence"]["path"],
        "/sys/fs/cgroup/evil\x1b[2J\nname\u{fffd}"
    );
    assert!(back["evidence"].get("growth_per_hour").is_none());
    assert_eq!(crate::format::escape::terminal("a\u{202e}b"), "a\\u{202e}b");
}

#[test]
fn renders_every_detector() {
    let rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
    for v in rig.verdicts() {
        let text = render_verdict(&v);
        assert!(text.lines().count() >= 3, "{text}");
        assert!(text.contains("what to do:"));
    }
    let text = render_verdict(&rig.find("kmem_leak")[0]);
    assert!(text.contains("memcg ID headroom: 63725 of 65535"), "{text}");
    assert!(text.contains("IDs run out in: 4d 10h"), "{text}");
    assert!(text.contains("growth: +600.0/h"), "{text}");
}

/// Everything at once, replayed: the verdicts depend on the events only.
fn mixed_run() -> (Vec<Verdict>, String) {
    let mut rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
    let t0 = 11_000 * S;
    for i in 0..600u64 {
        let path = format!("/libcontainer_{}_systemd_test_default.slice", 7000 + i);
        for h in [1u32, 2, MEM] {
            rig.feed(&mk(
                EventKind::Mkdir,
                t0 + i * 20 * MS,
                h,
                50_000 + i * 8 + u64::from(h),
                path.as_bytes(),
            ));
        }
    }
    let mut e = mk(
        EventKind::MkdirFailed,
        t0 + 12 * S,
        0,
        0,
        b"/sys/fs/cgroup/memory/kubepods/x",
    );
    e.errno = Some(28);
    e.has_cgroup = false;
    rig.feed(&e);
    let v = rig.verdicts();
    let json = serde_json::to_string(&v).unwrap_or_default();
    (v, json)
}

#[test]
fn verdicts_depend_only_on_events() {
    let (a, ja) = mixed_run();
    let (b, jb) = mixed_run();
    assert_eq!(a, b);
    assert_eq!(ja, jb);
    let names: Vec<&str> = a.iter().map(|v| v.detector).collect();
    for d in ["kmem_leak", "churn_storm", "crash_loop", "mkdir_failed"] {
        assert!(names.contains(&d), "{d} missing from {names:?}");
    }
    assert_eq!(names[0], "kmem_leak");
    let enospc = a.iter().find(|v| v.detector == "mkdir_failed");
    assert!(enospc.is_some_and(|v| v.summary.contains("see kmem_leak")));
}

#[test]
fn rings_ignore_what_they_no_longer_remember() {
    let mut r: Ring<u64> = Ring::new(10, 3);
    *r.at(5).unwrap_or(&mut 0) += 1; // bucket 0
    *r.at(45).unwrap_or(&mut 0) += 1; // bucket 4 reuses bucket 0's slot
    assert!(r.at(5).is_none(), "older than the ring");
    assert_eq!(r.buckets(50).copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(r.window(50), (20, 50));
    assert_eq!(r.buckets(45).count(), 0);
}

#[test]
fn enospc_without_memory_hierarchy_claims_no_headroom() {
    let mut rig = Rig::new("5.15.0-91-generic", MEM);
    rig.t = Tracker::new(None);
    let mut e = mk(
        EventKind::MkdirFailed,
        S,
        0,
        0,
        b"/sys/fs/cgroup/kubepods/x",
    );
    e.errno = Some(28);
    rig.feed(&e);
    let v = rig.find("mkdir_failed");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].severity, Severity::Critical);
    assert_eq!(mkdir(&v[0]).id_headroom, None);
    assert!(!v[0].summary.contains("headroom"), "{}", v[0].summary);
    assert!(!v[0].recommendation.contains("estimated"));
}

#[test]
fn crash_loop_count_says_when_it_is_a_lower_bound() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let p = uid(9);
    rig.feed(&mk(
        EventKind::Mkdir,
        S,
        MEM,
        10,
        format!("/kubepods/pod{p}").as_bytes(),
    ));
    for j in 0..100u64 {
        let path = format!("/kubepods/pod{p}/{}", cid(j));
        rig.feed(&mk(
            EventKind::Mkdir,
            (2 + 5 * j) * S,
            MEM,
            100 + j,
            path.as_bytes(),
        ));
        rig.feed(&mk(
            EventKind::Rmdir,
            (4 + 5 * j) * S,
            MEM,
            100 + j,
            path.as_bytes(),
        ));
    }
    let v = rig.find("crash_loop");
    assert_eq!(v.len(), 1);
    assert_eq!(crash(&v[0]).count, 64);
    assert!(
        v[0].summary.contains("created at least 64"),
        "{}",
        v[0].summary
    );
    assert!(v[0].recommendation.contains(&format!("grep {p}")));
}

#[test]
fn memcgs_found_dying_at_start_count_with_ages_as_lower_bounds() {
    use crate::model::baseline::{Baseline, BaselineCgroup};
    let mut rig = Rig::new("6.18.44-fc-v669", 0);
    let pod = format!("/kubepods/burstable/pod{}", uid(4));
    rig.t.load_baseline(&Baseline {
        cgroups: vec![
            BaselineCgroup {
                hierarchy_id: 0,
                cgroup_id: 1,
                level: 0,
                path: b"/".to_vec(),
            },
            BaselineCgroup {
                hierarchy_id: 0,
                cgroup_id: 2,
                level: 3,
                path: pod.clone().into_bytes(),
            },
        ],
        dying_before_start: vec![(0, 12)],
        taken_at_ns: 5 * S,
    });
    // The start-up walk: 12 dying containers of the pod (leaf names, parent id in css).
    for i in 0..12u64 {
        let leaf = cid(i);
        let mut e = mk(EventKind::DyingAtStart, 5 * S, 0, 100 + i, leaf.as_bytes());
        e.css = 2;
        e.usage_bytes = Some(1 << 20);
        rig.feed(&e);
    }
    // Not freed within the run, no removals either: no growth, no kmem_leak on any kernel.
    rig.feed(&mk(EventKind::Mkdir, 100 * S, 9, 1, b"/tick"));
    let v = rig.find("page_cache_pinning");
    assert_eq!(v.len(), 1, "{:?}", rig.verdicts());
    let e = page(&v[0]);
    assert_eq!(e.count, 12);
    assert_eq!(e.sample.found_at_start, 12);
    assert_eq!(e.sample.oldest_age_s, Some(95.0));
    assert_eq!(e.sample.example_paths[0], format!("{pod}/{}", cid(0)));
    assert!(
        v[0].summary.contains("oldest at least 1m 35s old"),
        "{}",
        v[0].summary
    );
    // Freed: counted as frees, not as removals.
    for i in 0..12u64 {
        let path = format!("{pod}/{}", cid(i));
        rig.feed(&mk(
            EventKind::Release,
            200 * S + i,
            0,
            100 + i,
            path.as_bytes(),
        ));
    }
    let w = rig.d.kmem_leak.window(300 * S, rig.d.first_ns);
    assert_eq!((w.rmdirs, w.frees), (0, 12));
    assert!(rig.find("page_cache_pinning").is_empty());
}

mod exhaustion;
mod oom_kill;
