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
fn churn_and_check(attach: AttachMode, expect: Attached) {
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
    for s in &seen {
        let key = (s.hierarchy_id, path_str(s));
        let ino = inodes
            .get(&key)
            .unwrap_or_else(|| panic!("event for a cgroup the test did not make: {s:?}"));
        assert_eq!(
            s.cgroup_id & 0xffff_ffff,
            *ino,
            "cgroup id vs inode of {key:?}"
        );
        assert_eq!(s.level, 2, "{s:?}");
        assert!(!s.path_truncated);
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
    churn_and_check(AttachMode::Classic, Attached::Tracepoint);
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
