use super::*;
use crate::model::event::Event;
use crate::model::tracker::names::K_HEX;
use cgtrace_common::EventKind;

#[test]
fn container_id_leaves_are_packed_and_restored() {
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let sh = shape(id.as_bytes());
    assert!(sh.kind == K_HEX && sh.len == 64 && sh.prefix.is_empty() && sh.suffix.is_empty());
    let sh = shape(b"Upper0123456789abcdef0123456789abcdef");
    assert!(sh.kind == K_HEX && sh.prefix == b"Upper" && sh.len == 32);
    let mut t = Tracker::new(Some(1));
    let p = format!("/kubepods/pod{UID}/{id}");
    t.observe(&ev(EventKind::Mkdir, 1, 1, 9, p.as_bytes()));
    t.observe(&ev(EventKind::Rmdir, 2, 1, 9, p.as_bytes()));
    assert_eq!(t.dying_memcgs()[0].path, p);
}

use crate::model::baseline::BaselineCgroup;

pub(crate) const UID: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";

pub(crate) fn ev<'a>(kind: EventKind, ts: u64, h: u32, id: u64, path: &'a [u8]) -> Event<'a> {
    Event {
        ts_ns: ts,
        kind,
        hierarchy_id: h,
        cgroup_id: id,
        level: path.iter().filter(|&&c| c == b'/').count() as u32,
        pid: 1,
        tid: 1,
        comm: b"runc",
        path,
        path_truncated: false,
        has_cgroup: true,
        css: 0,
        memcg_id: None,
        usage_bytes: None,
        kmem_bytes: None,
        memsw_bytes: None,
        errno: None,
        errno_inferred: false,
        syscall_relative: false,
        oom: None,
    }
}

#[test]
fn lifecycle_per_pod() {
    let mut t = Tracker::new(Some(4));
    let pod = format!("/kubepods/burstable/pod{UID}");
    let ctr = format!("{pod}/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    let o = t.observe(&ev(EventKind::Mkdir, 10, 4, 100, pod.as_bytes()));
    assert!(o.memcg && o.new_pod.is_some());
    let o = t.observe(&ev(EventKind::Mkdir, 20, 4, 101, ctr.as_bytes()));
    assert!(o.container && o.new_pod.is_none());
    // The same path in another hierarchy is a different cgroup and no memcg.
    let o = t.observe(&ev(EventKind::Mkdir, 21, 2, 101, ctr.as_bytes()));
    assert!(!o.memcg);
    assert_eq!(t.totals().live, 2);
    let mut rm = ev(EventKind::Rmdir, 50, 4, 101, ctr.as_bytes());
    rm.usage_bytes = Some(8192);
    let o = t.observe(&rm);
    assert_eq!(o.live_ns, Some(30));
    assert_eq!((t.totals().live, t.totals().dying), (1, 1));
    let dying = t.dying_memcgs();
    assert_eq!(dying.len(), 1);
    assert_eq!(dying[0].path, ctr);
    assert_eq!(dying[0].usage_bytes, Some(8192));
    assert_eq!(dying[0].pod_uid.as_deref(), Some(UID));
    let pods = t.pods(1_000_000_050);
    assert_eq!(pods[0].stats.dying, 1);
    assert_eq!(pods[0].stats.containers_created, 1);
    assert_eq!(pods[0].oldest_dying_age_s, Some(1.0));
    let o = t.observe(&ev(EventKind::Release, 90, 4, 101, ctr.as_bytes()));
    assert_eq!(o.dying_ns, Some(40));
    assert_eq!(
        (t.totals().live, t.totals().dying, t.totals().freed),
        (1, 0, 1)
    );
    assert_eq!(t.pods(100)[0].stats.freed, 1);
    // Freed cgroups leave nothing behind but counters.
    t.observe(&ev(EventKind::Release, 91, 2, 101, ctr.as_bytes()));
    assert_eq!(t.tracked(), 1);
}

#[test]
fn css_events_join_by_pointer_and_free_counts_once() {
    let mut t = Tracker::new(Some(0));
    let mut alloc = ev(EventKind::CssAlloc, 1, 0, 0, b"");
    alloc.has_cgroup = false;
    alloc.css = 0xffff_8880_0000_1000;
    t.observe(&alloc);
    let mut online = ev(EventKind::CssOnline, 2, 0, 7, b"");
    online.css = alloc.css;
    t.observe(&online);
    let mut mk = ev(EventKind::Mkdir, 3, 0, 7, b"/a");
    mk.css = alloc.css;
    t.observe(&mk);
    t.observe(&ev(EventKind::Rmdir, 4, 0, 7, b"/a"));
    let mut off = ev(EventKind::CssOffline, 5, 0, 7, b"");
    off.css = alloc.css;
    off.usage_bytes = Some(4096);
    t.observe(&off);
    assert_eq!(t.dying_memcgs()[0].usage_bytes, Some(4096));
    let mut free = ev(EventKind::CssFree, 9, 0, 0, b"");
    free.has_cgroup = false;
    free.css = alloc.css;
    let o = t.observe(&free);
    assert_eq!(o.dying_ns, Some(5));
    assert_eq!(t.totals().freed, 1);
    let o = t.observe(&ev(EventKind::Release, 10, 0, 7, b"/a"));
    assert_eq!(o.dying_ns, None, "freed once, at css_free");
    assert_eq!(t.totals().freed, 1);
    assert_eq!(t.tracked(), 0);
}

#[test]
fn baseline_and_dying_before_start() {
    let mut t = Tracker::new(Some(4));
    t.load_baseline(&Baseline {
        cgroups: vec![
            BaselineCgroup {
                hierarchy_id: 4,
                cgroup_id: 1,
                level: 0,
                path: b"/".to_vec(),
            },
            BaselineCgroup {
                hierarchy_id: 4,
                cgroup_id: 5,
                level: 1,
                path: b"/x".to_vec(),
            },
        ],
        dying_before_start: vec![(4, 3)],
        taken_at_ns: 5,
    });
    assert_eq!(
        t.totals(),
        Totals {
            live: 2,
            dying: 3,
            freed: 0,
            dying_before_start: 3,
            freed_before_start: 0
        }
    );
    // A release of a cgroup we never saw: one of the dying-before-start ones.
    let o = t.observe(&ev(EventKind::Release, 9, 4, 77, b"/old/pod"));
    assert!(o.freed_before_start);
    assert_eq!(t.totals().dying, 2);
    assert_eq!(t.totals().freed_before_start, 1);
    // A baseline cgroup removed and freed.
    t.observe(&ev(EventKind::Rmdir, 10, 4, 5, b"/x"));
    let o = t.observe(&ev(EventKind::Release, 12, 4, 5, b"/x"));
    assert_eq!((o.live_ns, o.dying_ns), (None, Some(2)));
    assert_eq!(t.totals().live, 1);
}

/// The start-up walk runs beside the events: a dying memcg it named can be released first.
#[test]
fn walk_record_after_the_release_is_dropped() {
    let mut t = Tracker::new(Some(4));
    t.load_baseline(&Baseline {
        cgroups: vec![BaselineCgroup {
            hierarchy_id: 4,
            cgroup_id: 1,
            level: 0,
            path: b"/".to_vec(),
        }],
        dying_before_start: vec![(4, 2)],
        taken_at_ns: 5,
    });
    // Released before its walk record arrives, then named by the walk: not counted again.
    let o = t.observe(&ev(EventKind::Release, 9, 4, 77, b"/old"));
    assert!(o.freed_before_start);
    let mut found = ev(EventKind::DyingAtStart, 10, 4, 77, b"old");
    found.css = 1;
    t.observe(&found);
    assert_eq!(t.tracked(), 1, "the late walk record adds nothing");
    // The other one is named, then released: counted once.
    let mut found = ev(EventKind::DyingAtStart, 11, 4, 78, b"other");
    found.css = 1;
    t.observe(&found);
    assert_eq!(t.tracked(), 2);
    assert_eq!(t.totals().dying, 1);
    t.observe(&ev(EventKind::Release, 12, 4, 78, b"/other"));
    assert_eq!(t.tracked(), 1);
    let tot = t.totals();
    assert_eq!((tot.dying, tot.freed_before_start), (0, 2));
    assert!(t.released_unnamed.is_empty());
}

#[test]
fn paths_are_interned_and_released() {
    let mut t = Tracker::new(Some(1));
    for i in 0..100u64 {
        let p = format!("/kubepods/besteffort/pod{UID}/c{i}");
        t.observe(&ev(EventKind::Mkdir, i, 1, i + 10, p.as_bytes()));
    }
    assert_eq!(t.dirs.len(), 1);
    for i in 0..100u64 {
        let p = format!("/kubepods/besteffort/pod{UID}/c{i}");
        t.observe(&ev(EventKind::Rmdir, 200 + i, 1, i + 10, p.as_bytes()));
        t.observe(&ev(EventKind::Release, 400 + i, 1, i + 10, p.as_bytes()));
    }
    assert_eq!(t.dirs.len(), 0);
    assert_eq!(t.tracked(), 0);
}

/// A small deterministic generator for the table tests.
/// A small deterministic generator for the storage tests.
pub(super) struct Lcg(pub(super) u64);

impl Lcg {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn paths_of_every_shape_are_kept() {
    let mut t = Tracker::new(Some(3));
    let uid_ = UID.replace('-', "_");
    let id = "3b1f2a9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
    let paths = [
        "/".to_string(),
        "/a".into(),
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope"
        ),
        format!("/kubepods.slice/kubepods-pod{uid_}.slice:crio:{id}"),
        format!("/kubepods/besteffort/pod{UID}/{id}/init.scope"),
        format!("/user.slice/user-0.slice/{}", "long-name-".repeat(20)),
    ];
    for (i, p) in paths.iter().enumerate() {
        t.observe(&ev(EventKind::Mkdir, 1, 3, i as u64, p.as_bytes()));
        t.observe(&ev(EventKind::Mkdir, 1, 5, i as u64, p.as_bytes()));
    }
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(t.path((3, i as u64)).as_deref(), Some(p.as_bytes()));
        // Other hierarchies keep no path.
        assert_eq!(t.path((5, i as u64)).as_deref(), Some(&b"/"[..]));
        assert_eq!(
            t.child_path(3, i as u64, b"x"),
            if p == "/" {
                b"/x".to_vec()
            } else {
                format!("{p}/x").into_bytes()
            }
        );
    }
    assert_eq!(t.child_path(3, 999, b"x"), b"/?/x");
    for (i, p) in paths.iter().enumerate() {
        for h in [3, 5] {
            t.observe(&ev(EventKind::Rmdir, 2, h, i as u64, p.as_bytes()));
            t.observe(&ev(EventKind::Release, 3, h, i as u64, p.as_bytes()));
        }
    }
    assert_eq!(
        (t.tracked(), t.names.len(), t.dirs.len(), t.strings.len()),
        (0, 0, 0, 0)
    );
}

#[test]
fn pods_are_keyed_by_uid_value_and_form() {
    let mut t = Tracker::new(Some(1));
    // A static pod's UID (32 hex digits) with the same digits as a UUID is another pod.
    let hash_uid = UID.replace('-', "");
    let paths = [
        format!("/kubepods/burstable/pod{UID}"),
        format!("/kubepods/burstable/pod{hash_uid}"),
        // The same pods through the systemd driver and in upper case.
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        ),
        format!("/kubepods/burstable/pod{}", hash_uid.to_uppercase()),
        // Another UUID.
        "/kubepods/pod0a1b2c3d-0000-4000-8000-00000000abce".into(),
    ];
    let mut new_pods = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let o = t.observe(&ev(EventKind::Mkdir, 1, 1, i as u64, p.as_bytes()));
        new_pods.push(o.new_pod);
    }
    assert_eq!(new_pods, [Some(0), Some(1), None, None, Some(2)]);
    let uids: Vec<&str> = (0..3)
        .filter_map(|i| t.pod(i))
        .map(|p| &*p.pod_uid)
        .collect();
    assert_eq!(
        uids,
        [UID, &hash_uid, "0a1b2c3d-0000-4000-8000-00000000abce"]
    );
    assert_eq!(t.pod(0).map(|p| p.live), Some(2));
    assert_eq!(t.pod(1).map(|p| p.live), Some(2));
    t.set_pod_name(&hash_uid, "kube-system", "etcd");
    t.set_pod_name(UID, "default", "web");
    t.set_pod_name("not-a-uid", "x", "y");
    assert_eq!(t.pod(1).and_then(|p| p.name.as_deref()), Some("etcd"));
    assert_eq!(t.pod(0).and_then(|p| p.name.as_deref()), Some("web"));
    assert_eq!(t.pod(2).and_then(|p| p.name.as_deref()), None);
    // Many pods: the index grows and finds them all again.
    for i in 0..2000u64 {
        let p = format!("/kubepods/pod{:08x}-0000-4000-8000-{:012x}", i, i * 7);
        let o = t.observe(&ev(EventKind::Mkdir, 1, 1, 1000 + i, p.as_bytes()));
        assert!(o.new_pod.is_some());
        let o = t.observe(&ev(
            EventKind::Mkdir,
            1,
            1,
            5000 + i,
            format!("{p}/c").as_bytes(),
        ));
        assert_eq!(o.pod, Some(3 + i as u32));
        assert!(o.new_pod.is_none());
    }
}

/// A kubelet-like pod (pod cgroup and one container cgroup) made, removed and freed.
fn pod_cycle(t: &mut Tracker, n: u64, ts: u64) -> Vec<Observed> {
    let pod = format!("/kubepods/burstable/pod{:08x}-0000-4000-8000-{:012x}", n, n);
    let ctr = format!("{pod}/{:064x}", n);
    let (p, c) = (2 * n + 100, 2 * n + 101);
    vec![
        t.observe(&ev(EventKind::Mkdir, ts, 1, p, pod.as_bytes())),
        t.observe(&ev(EventKind::Mkdir, ts + 1, 1, c, ctr.as_bytes())),
        t.observe(&ev(EventKind::Rmdir, ts + 2, 1, c, ctr.as_bytes())),
        t.observe(&ev(EventKind::Rmdir, ts + 3, 1, p, pod.as_bytes())),
        t.observe(&ev(EventKind::Release, ts + 4, 1, c, ctr.as_bytes())),
        t.observe(&ev(EventKind::Release, ts + 5, 1, p, pod.as_bytes())),
    ]
}

#[test]
fn freed_pods_are_forgotten_and_the_tables_return_to_the_baseline() {
    let mut t = Tracker::new(Some(1));
    // What stays: the kubepods skeleton (live all along).
    t.observe(&ev(EventKind::Mkdir, 1, 1, 1, b"/kubepods"));
    t.observe(&ev(EventKind::Mkdir, 2, 1, 2, b"/kubepods/burstable"));
    // A warm-up round of pods alive at once, then their removal: the tables' high mark.
    let mut ts = 10;
    for n in 0..200u64 {
        pod_cycle(&mut t, n, ts);
        ts += 10;
    }
    let baseline = t.footprint();
    assert_eq!(
        (baseline.cgroups, baseline.pods, baseline.dirs),
        (2, 0, 2),
        "{baseline:?}"
    );
    for n in 200..20_000u64 {
        let obs = pod_cycle(&mut t, n, ts);
        ts += 10;
        // The last release forgets the pod, and says so.
        assert_eq!(obs[5].forgotten_pod, obs[0].new_pod, "pod {n}");
        assert!(obs[..5].iter().all(|o| o.forgotten_pod.is_none()));
    }
    assert_eq!(t.footprint(), baseline);
    assert!(t.pods(ts).is_empty() && t.dying_pods().is_empty());
    let tot = t.totals();
    assert_eq!((tot.live, tot.dying, tot.freed), (2, 0, 40_000));
}

#[test]
fn a_pod_that_comes_back_is_a_new_entry() {
    let mut t = Tracker::new(Some(1));
    let pod = format!("/kubepods/burstable/pod{UID}");
    let ctr = format!("{pod}/{:064x}", 7);
    t.observe(&ev(EventKind::Mkdir, 1, 1, 10, pod.as_bytes()));
    t.observe(&ev(EventKind::Mkdir, 2, 1, 11, ctr.as_bytes()));
    t.set_pod_name(UID, "default", "web");
    t.observe(&ev(EventKind::Rmdir, 3, 1, 11, ctr.as_bytes()));
    t.observe(&ev(EventKind::Rmdir, 4, 1, 10, pod.as_bytes()));
    let o = t.observe(&ev(EventKind::Release, 5, 1, 11, ctr.as_bytes()));
    assert_eq!((o.pod, o.forgotten_pod), (Some(0), None));
    assert_eq!(t.pod(0).map(|p| (p.dying, p.freed)), Some((1, 1)));
    let o = t.observe(&ev(EventKind::Release, 6, 1, 10, pod.as_bytes()));
    assert_eq!((o.pod, o.forgotten_pod), (Some(0), Some(0)));
    // Still named during the event that forgot it (the sinks see it), not found by UID.
    assert_eq!(t.pod(0).map(|p| p.freed), Some(2));
    assert!(t.find_pod(UID).is_none());
    assert_eq!(t.footprint().pods, 0);
    // Another event frees the slot; the pod coming back starts from nothing.
    t.observe(&ev(EventKind::Mkdir, 7, 1, 99, b"/other"));
    assert_eq!(t.pod(0).map(|p| p.freed), None);
    let o = t.observe(&ev(EventKind::Mkdir, 8, 1, 20, pod.as_bytes()));
    assert_eq!(o.new_pod, Some(0));
    let p = t.pod(0).cloned().unwrap_or_default();
    assert_eq!((p.live, p.freed, p.name), (1, 0, None));
    assert_eq!(
        t.totals().freed,
        2,
        "the forgotten pod's frees stay in the totals"
    );
}

#[test]
fn css_joins_of_untracked_cgroups_are_not_kept() {
    let mut t = Tracker::new(Some(1));
    for i in 0..1000u64 {
        // A css that goes online in a cgroup whose mkdir is filtered out (or lost).
        let mut online = ev(EventKind::CssOnline, i, 1, 1000 + i, b"");
        online.css = 0xffff_8880_0000_0000 + i * 64;
        t.observe(&online);
    }
    assert_eq!(t.footprint().css_joins, 0);
}

#[test]
fn a_long_churn_stays_flat() {
    let mut t = Tracker::new(Some(1));
    let id = |n: u64| format!("{n:064x}");
    let mut peak = None;
    for round in 0..30u64 {
        for i in 0..500u64 {
            let n = round * 500 + i;
            let pod = format!("/kubepods/pod{:08x}-0000-4000-8000-{:012x}", n / 4, n / 4);
            let p = format!("{pod}/{}", id(n));
            for h in [1, 2] {
                t.observe(&ev(EventKind::Mkdir, n, h, n, p.as_bytes()));
                t.observe(&ev(EventKind::Rmdir, n + 1, h, n, p.as_bytes()));
            }
            // Releases lag: half of the cgroups stay dying for a round.
            if n >= 250 {
                let old = n - 250;
                let pod = format!(
                    "/kubepods/pod{:08x}-0000-4000-8000-{:012x}",
                    old / 4,
                    old / 4
                );
                let p = format!("{pod}/{}", id(old));
                for h in [1, 2] {
                    t.observe(&ev(EventKind::Release, n + 2, h, old, p.as_bytes()));
                }
            }
        }
        assert_eq!(t.tracked(), 500);
        let size = (
            t.cgroups.chunks.len(),
            t.names.chunks.len(),
            t.index.buckets.len(),
            t.dirs.index.buckets.len(),
        );
        match peak {
            None => peak = Some(size),
            Some(p) => assert_eq!(size, p, "round {round}"),
        }
    }
    assert_eq!(t.totals().dying, 250);
    assert_eq!(t.dying_memcgs().len(), 250);
}

/// A baseline of the root memcg of hierarchy 4 with `dying` memcgs dying before start.
fn walked_baseline(dying: u64, more: &[(u64, &str)]) -> Tracker {
    let mut t = Tracker::new(Some(4));
    let mut cgroups = vec![BaselineCgroup {
        hierarchy_id: 4,
        cgroup_id: 1,
        level: 0,
        path: b"/".to_vec(),
    }];
    cgroups.extend(more.iter().map(|(id, p)| BaselineCgroup {
        hierarchy_id: 4,
        cgroup_id: *id,
        level: p.matches('/').count() as u32,
        path: p.as_bytes().to_vec(),
    }));
    t.load_baseline(&Baseline {
        cgroups,
        dying_before_start: vec![(4, dying)],
        taken_at_ns: 5,
    });
    t
}

fn pod_dying(t: &Tracker) -> Vec<u64> {
    t.dying_pods().iter().map(|p| p.stats.dying).collect()
}

/// The walk's record of memcg `id`: its leaf name, its parent's cgroup ID in `css`.
fn walk_record(ts: u64, id: u64, parent: u64, leaf: &[u8]) -> Event<'_> {
    let mut found = ev(EventKind::DyingAtStart, ts, 4, id, leaf);
    found.css = parent;
    found
}

/// The walk's instance sees memcgs made after start too (a container removed while the walk
/// ran): its record of one, tracked or released already, adds nothing.
#[test]
fn a_walk_record_of_a_memcg_made_after_start_is_stale() {
    let mut t = walked_baseline(2, &[]);
    let pod = format!("/kubepods/burstable/pod{UID}");
    let ctr = |n: u64| format!("{pod}/{:064x}", 0xc0ffee + n);
    t.observe(&ev(EventKind::Mkdir, 10, 4, 100, pod.as_bytes()));
    t.observe(&ev(EventKind::Mkdir, 11, 4, 101, ctr(1).as_bytes()));
    t.observe(&ev(EventKind::Rmdir, 12, 4, 101, ctr(1).as_bytes()));
    // Made, removed and freed: forgotten.
    t.observe(&ev(EventKind::Mkdir, 13, 4, 102, ctr(2).as_bytes()));
    t.observe(&ev(EventKind::Rmdir, 14, 4, 102, ctr(2).as_bytes()));
    t.observe(&ev(EventKind::Release, 15, 4, 102, ctr(2).as_bytes()));
    assert_eq!(pod_dying(&t), [1]);
    for id in [101, 102] {
        let leaf = ctr(id - 100);
        let rec = walk_record(
            20,
            id,
            100,
            leaf.rsplit('/').next().unwrap_or("").as_bytes(),
        );
        assert!(t.stale_walk_record(&rec), "{id}");
        t.observe(&rec);
    }
    assert_eq!(pod_dying(&t), [1], "counted once, by its rmdir");
    assert_eq!(t.tracked(), 3);
    // One made before start (a lower ID) that the baseline did not see: named.
    let rec = walk_record(21, 50, 1, b"old");
    assert!(!t.stale_walk_record(&rec));
    t.observe(&rec);
    assert_eq!(t.tracked(), 4);
    assert_eq!(
        t.totals().dying,
        1 + 2,
        "one removed after start, two before"
    );
}

/// Were the walk's record of a memcg applied before the memcg's mkdir, the mkdir takes the
/// entry over: the memcg is counted by its own events only.
#[test]
fn a_mkdir_after_a_walk_record_of_it_takes_over() {
    let pod = format!("/kubepods/burstable/pod{UID}");
    let ctr = format!("{pod}/{:064x}", 0xdead_0000_u64);
    let mut t = walked_baseline(1, &[(5, &pod)]);
    t.observe(&walk_record(11, 101, 5, &ctr.as_bytes()[pod.len() + 1..]));
    assert_eq!(pod_dying(&t), [1]);
    t.observe(&ev(EventKind::Mkdir, 12, 4, 101, ctr.as_bytes()));
    assert_eq!(pod_dying(&t), Vec::<u64>::new());
    assert_eq!(t.totals().live, 3, "root, pod and container");
    assert_eq!(t.dying_memcgs().len(), 0);
    t.observe(&ev(EventKind::Rmdir, 13, 4, 101, ctr.as_bytes()));
    assert_eq!(t.dying_memcgs()[0].path, ctr);
    assert_eq!(pod_dying(&t), [1]);
    assert_eq!(t.totals().dying, 1 + 1);
}

/// A memcg live at start, removed and freed before the walk's record of it is applied: the
/// record is dropped; once the walk ended, releases are no longer remembered for it.
#[test]
fn a_baseline_memcg_freed_before_its_walk_record() {
    let pod = format!("/kubepods/burstable/pod{UID}");
    let ctr = |n: u64| format!("{pod}/{:064x}", 0xdead_0000 + n);
    let (c1, c2) = (ctr(1), ctr(2));
    let mut t = walked_baseline(1, &[(5, &pod), (6, &c1), (7, &c2)]);
    t.observe(&ev(EventKind::Rmdir, 10, 4, 6, c1.as_bytes()));
    t.observe(&ev(EventKind::Release, 11, 4, 6, c1.as_bytes()));
    let rec = walk_record(12, 6, 5, &c1.as_bytes()[pod.len() + 1..]);
    t.observe(&rec);
    assert_eq!(pod_dying(&t), Vec::<u64>::new());
    assert_eq!(t.totals().dying, 1, "only the one dying before start");
    assert_eq!(
        t.footprint().released_unnamed,
        0,
        "the walk names a memcg once"
    );
    t.walk_ended();
    t.observe(&ev(EventKind::Rmdir, 13, 4, 7, c2.as_bytes()));
    t.observe(&ev(EventKind::Release, 14, 4, 7, c2.as_bytes()));
    assert_eq!(t.footprint().released_unnamed, 0);
    // A release of an unknown memcg (one dying before start) is not remembered either.
    t.observe(&ev(EventKind::Release, 15, 4, 60, b"/gone"));
    assert_eq!(t.footprint().released_unnamed, 0);
    assert_eq!(t.totals().freed_before_start, 1);
}
