//! A deliberately tiny ring buffer and a burst: every event is either delivered or counted lost,
//! per kind, exactly.
use std::time::{Duration, Instant};

use cgtrace::probes::{ProbeOptions, Probes};
use cgtrace_common::EventKind;
use integration_tests::{
    Layout, Records, buffer_from_env, cgroup::TestParent, count, drain, legacy_reads_from_env,
    path_str,
};

const BURST: usize = 200;

#[test]
fn lost_events_are_counted_exactly() {
    if !integration_tests::cgroup::privileged("lost_events_are_counted_exactly") {
        return;
    }
    let layout = Layout::load();
    let h = layout.memory_id;
    let parent = TestParent::new("lost", &[&layout.memory_mount]).expect("create the test parent");
    let mut probes = Probes::load(&ProbeOptions {
        ring_size: 4096, // one page (per CPU for perf buffers): room for about 11 events
        buffer: buffer_from_env(),
        legacy_reads: legacy_reads_from_env(),
        hierarchies: Some(vec![h]),
        path_prefix: Some(format!("{}/", parent.cgroup_path()).into_bytes()),
        ..ProbeOptions::default()
    })
    .expect("load and attach");
    integration_tests::assert_forced(&probes);

    // Burst without draining: the ring fills and the rest is counted lost.
    for i in 0..BURST {
        parent
            .mkdir(&layout.memory_mount, format!("c{i}"))
            .expect("mkdir");
    }
    let mut seen = Records::default();
    drain(&mut probes, &mut seen);
    let lost = probes.lost().expect("read lost");
    let mk_seen = count(&seen.events(), EventKind::Mkdir, h);
    let mk_lost = lost[EventKind::Mkdir as usize] as usize;
    assert_eq!(
        mk_seen + mk_lost,
        BURST,
        "mkdir: seen {mk_seen} + lost {mk_lost}"
    );
    assert!(
        mk_lost > 0,
        "a one-page ring must overflow with {BURST} events"
    );

    for i in 0..BURST {
        parent
            .rmdir(&layout.memory_mount, format!("c{i}"))
            .expect("rmdir");
    }
    // rmdir events are written synchronously by the rmdir calls: all are in the ring or lost.
    drain(&mut probes, &mut seen);
    let lost = probes.lost().expect("read lost");
    let rm_seen = count(&seen.events(), EventKind::Rmdir, h);
    let rm_lost = lost[EventKind::Rmdir as usize] as usize;
    assert_eq!(
        rm_seen + rm_lost,
        BURST,
        "rmdir: seen {rm_seen} + lost {rm_lost}"
    );
    assert!(rm_lost > 0);

    // Releases come later, from a kernel worker: poll until seen + lost covers every cgroup.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (rel_seen, rel_lost) = loop {
        drain(&mut probes, &mut seen);
        let rel_lost = probes.lost().expect("read lost")[EventKind::Release as usize] as usize;
        let rel_seen = count(&seen.events(), EventKind::Release, h);
        if rel_seen + rel_lost >= BURST || Instant::now() >= deadline {
            break (rel_seen, rel_lost);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        rel_seen + rel_lost,
        BURST,
        "release: seen {rel_seen} + lost {rel_lost}"
    );
    // The perf buffers: the kernel's lost-record notices (written once a buffer has room again)
    // never exceed what the programs counted lost, and cover the mkdir burst's losses, which
    // had the rmdirs' records after them on every CPU that lost any.
    if let Some(notices) = probes.events.notices() {
        let counted: u64 = probes.lost().expect("read lost").iter().sum();
        eprintln!("perf: {notices} lost-record notices, {counted} counted lost by the programs");
        assert!(notices <= counted, "notices {notices} > counted {counted}");
        assert!(
            notices >= mk_lost as u64,
            "notices {notices} < mkdir losses {mk_lost}"
        );
    }
    // Nothing from outside the test's parent got in. (On the css tiers the memcg css events come
    // too, through the hierarchy filter: css_alloc has no path to filter on, nor to check.)
    let prefix = format!("{}/", parent.cgroup_path());
    let tracepoint_kinds = [EventKind::Mkdir, EventKind::Rmdir, EventKind::Release];
    let outside: Vec<String> = seen
        .events()
        .iter()
        .filter(|s| tracepoint_kinds.contains(&s.kind) && !path_str(s).starts_with(&prefix))
        .map(|s| format!("{} {}", s.kind.name(), path_str(s)))
        .collect();
    assert!(
        outside.is_empty(),
        "events from outside the parent: {outside:?}"
    );
}
