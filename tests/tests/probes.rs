//! The tracepoint pipeline against the real kernel: every mkdir/rmdir/release of cgroups the test
//! makes, in the v1 memory hierarchy and in v2, exactly once, with the right ids and paths.
use std::{collections::HashMap, time::Duration};

use cgtrace::probes::{AttachMode, Attached, ProbeOptions, Probes, Tier};
use cgtrace_common::{EventKind, PATH_CAP};
use integration_tests::{
    Layout, Records, cgroup::TestParent, collect_until, count, drain, path_str,
};

const N: usize = 40;

fn options(attach: AttachMode, parent: &TestParent) -> ProbeOptions {
    ProbeOptions {
        attach,
        // The cgroup tracepoints alone: where the kernel allows the css hooks (the VMs), their
        // css_alloc records carry no path for the prefix filter to hold back.
        tier: Some(Tier::Tracepoint),
        // Filtered in the kernel to this test's parent: the machine's own churn stays out.
        path_prefix: Some(format!("{}/", parent.cgroup_path()).into_bytes()),
        ..ProbeOptions::default()
    }
}

/// Makes N cgroups in the memory hierarchy and in v2 (one hierarchy where memory is on v2, as on
/// kernels built without CONFIG_MEMCG_V1), removes them, and checks the events.
/// Whether the classic `cgroup:cgroup_mkdir` tracepoint declares its `id` an `int` (tracefs).
fn classic_id_is_int() -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|t| {
            std::fs::read_to_string(format!("{t}/events/cgroup/cgroup_mkdir/format")).ok()
        })
        .is_some_and(|f| f.contains("field:int id;"))
}

/// Returns the buffer the probes chose (`ring` or `perf`).
fn churn_and_check(attach: AttachMode, expect: Attached) -> &'static str {
    let layout = Layout::load();
    let hierarchies: Vec<(u32, &std::path::Path)> = if layout.memory_id == 0 {
        vec![(0, &layout.v2_mount)]
    } else {
        vec![
            (layout.memory_id, &layout.memory_mount),
            (0, &layout.v2_mount),
        ]
    };
    let mounts: Vec<&std::path::Path> = hierarchies.iter().map(|(_, m)| *m).collect();
    let parent = TestParent::new("pipeline", &mounts).expect("create the test parent");
    let mut probes = Probes::load(&options(attach, &parent)).expect("load and attach");
    assert_eq!(probes.attached, expect);
    let buffer = match probes.events.buffer() {
        cgtrace::probes::buffer::Buffer::Ring => "ring",
        cgtrace::probes::buffer::Buffer::Perf => "perf",
    };

    // (hierarchy, name) → inode of the directory: the oracle for cgroup ids.
    let mut inodes: HashMap<(u32, String), u64> = HashMap::new();
    for i in 0..N {
        let name = format!("c{i}");
        for (h, mount) in &hierarchies {
            let ino = parent.mkdir(mount, &name).expect("mkdir");
            inodes.insert((*h, format!("{}/{name}", parent.cgroup_path())), ino);
        }
    }
    for i in 0..N {
        for mount in &mounts {
            parent.rmdir(mount, format!("c{i}")).expect("rmdir");
        }
    }

    let mut recs = Records::default();
    // Empty cgroups that never held a task are freed promptly; the kernel does it
    // asynchronously, so poll until every release arrived or the deadline passed.
    let complete = collect_until(&mut probes, &mut recs, Duration::from_secs(30), |s| {
        hierarchies
            .iter()
            .all(|&(h, _)| count(s, EventKind::Release, h) >= N)
    });
    let seen = recs.events();
    for &(h, _) in &hierarchies {
        assert_eq!(
            count(&seen, EventKind::Mkdir, h),
            N,
            "mkdir events in hierarchy {h}"
        );
        assert_eq!(
            count(&seen, EventKind::Rmdir, h),
            N,
            "rmdir events in hierarchy {h}"
        );
    }
    assert!(complete, "not every release arrived within 30 s: {seen:#?}");
    // Before 5.5 the classic tracepoints' `id` is an `int`: the cgroup's idr number, not its
    // id ("cgroup: use cgrp->kn->id as the cgroup ID", 743210386c03). Then each cgroup keeps
    // one number from mkdir to release, and the cgroups alive together have distinct ones.
    let idr_numbers = attach == AttachMode::Classic && classic_id_is_int();
    assert_eq!(
        probes.fallbacks.iter().any(|f| f.contains("idr number")),
        idr_numbers,
        "the run says when its ids are idr numbers: {:?}",
        probes.fallbacks
    );
    let mut numbers: HashMap<(u32, String), u64> = HashMap::new();
    for s in &seen {
        let key = (s.hierarchy_id, path_str(s));
        let id = inodes
            .get(&key)
            .unwrap_or_else(|| panic!("event for a cgroup the test did not make: {s:?}"));
        if idr_numbers {
            let first = *numbers.entry(key.clone()).or_insert(s.cgroup_id);
            assert_eq!(s.cgroup_id, first, "one idr number per cgroup: {key:?}");
        } else {
            assert_eq!(s.cgroup_id, *id, "cgroup id vs the kernel's of {key:?}");
        }
        assert_eq!(s.level, 2, "{s:?}");
        assert!(!s.path_truncated);
    }
    if idr_numbers {
        for &(h, _) in &hierarchies {
            let mut of_h: Vec<u64> = numbers
                .iter()
                .filter(|((hh, _), _)| *hh == h)
                .map(|(_, n)| *n)
                .collect();
            of_h.sort_unstable();
            of_h.dedup();
            assert_eq!(of_h.len(), N, "distinct idr numbers in hierarchy {h}");
        }
    }
    // Every cgroup: exactly one mkdir, one rmdir, one release, in that order.
    for key in inodes.keys() {
        let kinds: Vec<EventKind> = seen
            .iter()
            .filter(|s| (s.hierarchy_id, path_str(s)) == *key)
            .map(|s| s.kind)
            .collect();
        assert_eq!(
            kinds,
            [EventKind::Mkdir, EventKind::Rmdir, EventKind::Release],
            "{key:?}"
        );
    }
    // The mkdir/rmdir came from this process.
    let me = std::process::id();
    assert!(
        seen.iter()
            .filter(|s| s.kind != EventKind::Release)
            .all(|s| s.pid == me)
    );
    assert_eq!(probes.lost().expect("read lost").iter().sum::<u64>(), 0);
    buffer
}

#[test]
fn raw_tracepoints_see_every_cgroup() {
    if !integration_tests::cgroup::privileged("raw_tracepoints_see_every_cgroup") {
        return;
    }
    churn_and_check(AttachMode::Auto, Attached::RawTracepoint);
}

#[test]
fn classic_tracepoints_see_every_cgroup() {
    if !integration_tests::cgroup::privileged("classic_tracepoints_see_every_cgroup") {
        return;
    }
    let buffer = churn_and_check(AttachMode::Classic, Attached::Tracepoint);
    // For the kernel table `cargo xtask vm-test --readme` writes (the VM runs this test as
    // its `classic` run, with --show-output).
    println!("CGTRACE-VM-FACT buffer_classic {buffer}");
}

/// A path longer than the event's buffer is cut, flagged, and still carries the right id.
#[test]
fn long_paths_are_truncated_and_flagged() {
    if !integration_tests::cgroup::privileged("long_paths_are_truncated_and_flagged") {
        return;
    }
    let layout = Layout::load();
    let parent = TestParent::new("long", &[&layout.memory_mount]).expect("create the test parent");
    let mut probes = Probes::load(&ProbeOptions {
        hierarchies: Some(vec![layout.memory_id]),
        path_prefix: Some(format!("{}/", parent.cgroup_path()).into_bytes()),
        ..ProbeOptions::default()
    })
    .expect("load and attach");
    let a = "a".repeat(200);
    let b = "b".repeat(200);
    parent.mkdir(&layout.memory_mount, &a).expect("mkdir a");
    let ino = parent
        .mkdir(&layout.memory_mount, format!("{a}/{b}"))
        .expect("mkdir a/b");
    let mut recs = Records::default();
    assert!(collect_until(
        &mut probes,
        &mut recs,
        Duration::from_secs(5),
        |s| s.len() >= 2
    ));
    drain(&mut probes, &mut recs);
    let seen = recs.events();
    let long = seen
        .iter()
        .find(|s| s.cgroup_id & 0xffff_ffff == ino)
        .expect("event for the long path");
    assert!(long.path_truncated, "{long:?}");
    assert_eq!(long.path.len(), PATH_CAP - 1);
    assert!(path_str(long).starts_with(&format!("{}/{a}/bbb", parent.cgroup_path())));
    let short = seen
        .iter()
        .find(|s| s.cgroup_id & 0xffff_ffff != ino)
        .expect("short event");
    assert!(!short.path_truncated);
}
