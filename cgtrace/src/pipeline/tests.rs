use std::{cell::RefCell, rc::Rc};

use super::*;
use crate::{model::tracker::PodStats, model::tracker::tests::ev};

type Seen = Rc<RefCell<Vec<(EventKind, Vec<u8>)>>>;

/// Keeps (kind, path) of every event it gets.
struct Paths(Seen);

impl Sink for Paths {
    fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        self.0.borrow_mut().push((ev.kind, ev.path.to_vec()));
        Ok(())
    }
    fn summary(&mut self, _s: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn pipeline(memory: Option<u32>, sinks: Vec<Box<dyn Sink>>) -> Pipeline {
    let mut facts = RunFacts::new("6.1.0", RunFacts::memory_at(memory));
    facts.tier = crate::probes::Tier::Fentry;
    Pipeline::new(
        facts,
        &Baseline::default(),
        sinks,
        Box::new(pod_names::NoPodNames),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn css_events_get_the_path_the_tracker_knows() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut p = pipeline(Some(4), vec![Box::new(Paths(seen.clone()))]);
    let css = 0xffff_8880_0000_2000;
    let mut online = ev(EventKind::CssOnline, 1, 4, 7, b"");
    online.css = css;
    p.event(&online);
    let mut mk = ev(EventKind::Mkdir, 2, 4, 7, b"/kubepods/x");
    mk.css = css;
    p.event(&mk);
    let mut off = ev(EventKind::CssOffline, 3, 4, 7, b"");
    off.css = css;
    p.event(&off);
    let got = seen.borrow();
    assert_eq!(
        got[0],
        (EventKind::CssOnline, Vec::new()),
        "not known before the mkdir"
    );
    assert_eq!(got[2], (EventKind::CssOffline, b"/kubepods/x".to_vec()));
}

#[test]
fn the_event_that_forgets_a_pod_still_names_it_and_a_pod_that_comes_back_is_named_again() {
    type Pods = Rc<RefCell<Vec<(EventKind, Option<String>)>>>;
    struct PodsSeen(Pods);
    impl Sink for PodsSeen {
        fn event(&mut self, ev: &Event<'_>, pod: Option<&PodStats>) -> io::Result<()> {
            let who = pod.map(|p| format!("{}/{:?}", p.pod_uid, p.name));
            self.0.borrow_mut().push((ev.kind, who));
            Ok(())
        }
        fn summary(&mut self, _s: &Summary) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    /// Names every pod, counting the lookups.
    struct Names(Rc<RefCell<u32>>);
    impl pod_names::PodNameSource for Names {
        fn lookup(&mut self, _uid: &str) -> Option<(String, String)> {
            *self.0.borrow_mut() += 1;
            Some(("ns".into(), "web".into()))
        }
    }
    let seen: Pods = Rc::default();
    let lookups = Rc::new(RefCell::new(0));
    let mut facts = RunFacts::new("6.1.0", RunFacts::memory_at(Some(4)));
    facts.tier = crate::probes::Tier::Tracepoint;
    let mut p = Pipeline::new(
        facts,
        &Baseline::default(),
        vec![Box::new(PodsSeen(seen.clone()))],
        Box::new(Names(lookups.clone())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let uid = crate::model::tracker::tests::UID;
    let pod = format!("/kubepods/burstable/pod{uid}");
    for round in 0..2u64 {
        let t = round * 10;
        p.event(&ev(EventKind::Mkdir, t + 1, 4, 7 + round, pod.as_bytes()));
        p.event(&ev(EventKind::Rmdir, t + 2, 4, 7 + round, pod.as_bytes()));
        p.event(&ev(EventKind::Release, t + 3, 4, 7 + round, pod.as_bytes()));
        assert_eq!(p.tracker.pods_tracked(), 0);
    }
    let named = Some(format!("{uid}/Some(\"web\")"));
    let want: Vec<(EventKind, Option<String>)> =
        [EventKind::Mkdir, EventKind::Rmdir, EventKind::Release]
            .repeat(2)
            .into_iter()
            .map(|k| (k, named.clone()))
            .collect();
    assert_eq!(*seen.borrow(), want);
    assert_eq!(*lookups.borrow(), 2, "looked up again when it came back");
}

#[test]
fn own_walk_triggers_are_ignored() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut p = pipeline(None, vec![Box::new(Paths(seen.clone()))]);
    p.event(&ev(EventKind::Mkdir, 1, 4, 7, b"/cgtrace-walk-1-0"));
    p.event(&ev(EventKind::Mkdir, 2, 4, 8, b"/other"));
    assert_eq!(seen.borrow().len(), 1);
    assert_eq!(p.counts.seen[EventKind::Mkdir as usize], 1);
    // Its own failed trigger mkdir (read-only cgroupfs) is no node failure; others are.
    p.event(&ev(
        EventKind::MkdirFailed,
        3,
        0,
        0,
        b"/sys/fs/cgroup/memory/cgtrace-walk-1-0",
    ));
    p.event(&ev(
        EventKind::MkdirFailed,
        4,
        0,
        0,
        b"/sys/fs/cgroup/memory/kubepods",
    ));
    assert_eq!(p.counts.seen[EventKind::MkdirFailed as usize], 1);
    assert_eq!(seen.borrow().len(), 2);
}

/// rmdir and release records of a memcg whose mkdir told its path leave it out (the programs
/// skip the copy): the pipeline puts the tracker's back, truncation flag included, for every
/// sink; cgtrace's own cgroups stay out; an unknown cgroup's goes on without a path (and a
/// note), or is dropped where filters are set (its mkdir was filtered out).
#[test]
fn rmdir_and_release_without_a_path_get_the_one_their_mkdir_told() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut p = pipeline(Some(4), vec![Box::new(Paths(seen.clone()))]);
    let long = b"/kubepods/burstable/pod5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6/0123456789abcdef";
    p.event(&ev(EventKind::Mkdir, 1, 4, 7, long));
    let mut cut = ev(EventKind::Mkdir, 2, 4, 8, b"/kubepods/cut-here");
    cut.path_truncated = true;
    p.event(&cut);
    p.event(&ev(EventKind::Mkdir, 3, 4, 9, b"/cgtrace-walk-7-0"));
    for (ts, id) in [(4, 7), (5, 8), (6, 9)] {
        p.event(&ev(EventKind::Rmdir, ts, 4, id, b""));
    }
    let shown = Rc::new(RefCell::new(Vec::new()));
    struct Truncated(Rc<RefCell<Vec<bool>>>);
    impl Sink for Truncated {
        fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
            self.0.borrow_mut().push(ev.path_truncated);
            Ok(())
        }
        fn summary(&mut self, _s: &Summary) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    p.sinks.push(Box::new(Truncated(shown.clone())));
    for (ts, id) in [(7, 7), (8, 8), (9, 9)] {
        p.event(&ev(EventKind::Release, ts, 4, id, b""));
    }
    let got: Vec<(EventKind, Vec<u8>)> = seen.borrow().clone();
    assert_eq!(
        got,
        [
            (EventKind::Mkdir, long.to_vec()),
            (EventKind::Mkdir, b"/kubepods/cut-here".to_vec()),
            (EventKind::Rmdir, long.to_vec()),
            (EventKind::Rmdir, b"/kubepods/cut-here".to_vec()),
            (EventKind::Release, long.to_vec()),
            (EventKind::Release, b"/kubepods/cut-here".to_vec()),
        ]
    );
    assert_eq!(
        *shown.borrow(),
        [false, true],
        "the truncation goes with the path"
    );
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    assert_eq!(p.tracker.totals().dying, 0);

    // A cgroup the tracker never met: passed on without a path, said once.
    // (The programs read the level where they leave the path out.)
    for (kind, ts) in [(EventKind::Rmdir, 10), (EventKind::Release, 11)] {
        let mut e = ev(kind, ts, 4, 99, b"");
        e.level = 2;
        p.event(&e);
    }
    assert_eq!(seen.borrow().len(), 8);
    assert_eq!(seen.borrow()[7], (EventKind::Release, Vec::new()));
    assert_eq!(p.notes.len(), 1, "{:?}", p.notes);

    // With filters, such a cgroup is one the filters kept out.
    let mut facts = RunFacts::new("6.1.0", RunFacts::memory_at(Some(4)));
    facts.filters.subtree = Some("/kubepods".to_string());
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut p = Pipeline::new(
        facts,
        &Baseline::default(),
        vec![Box::new(Paths(seen.clone()))],
        Box::new(pod_names::NoPodNames),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    p.event(&ev(EventKind::Mkdir, 1, 4, 7, b"/elsewhere"));
    p.event(&ev(EventKind::Rmdir, 2, 4, 7, b""));
    p.event(&ev(EventKind::Mkdir, 3, 4, 8, b"/kubepods/x"));
    p.event(&ev(EventKind::Rmdir, 4, 4, 8, b""));
    assert_eq!(
        *seen.borrow(),
        [
            (EventKind::Mkdir, b"/kubepods/x".to_vec()),
            (EventKind::Rmdir, b"/kubepods/x".to_vec())
        ]
    );
}

#[test]
fn failed_mkdirs_get_their_hierarchy_and_eexist_is_no_failure() {
    let seen: Seen = Rc::default();
    let ids: Rc<RefCell<Vec<u32>>> = Rc::default();
    struct Ids(Rc<RefCell<Vec<u32>>>);
    impl Sink for Ids {
        fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
            self.0.borrow_mut().push(ev.hierarchy_id);
            Ok(())
        }
        fn summary(&mut self, _s: &Summary) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut h = RunFacts::memory_at(Some(4));
    if let Some(m) = h.by_id.get_mut(&4) {
        m.mount = Some("/sys/fs/cgroup/memory".into());
    }
    let facts = RunFacts::new("6.18.44", h);
    let mut p = Pipeline::new(
        facts,
        &Baseline::default(),
        vec![Box::new(Paths(seen.clone())), Box::new(Ids(ids.clone()))],
        Box::new(pod_names::NoPodNames),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut busy = ev(
        EventKind::MkdirFailed,
        1,
        0,
        0,
        b"/sys/fs/cgroup/memory/kubepods/x",
    );
    busy.errno = Some(16);
    busy.has_cgroup = false;
    p.event(&busy);
    let mut exists = busy;
    exists.errno = Some(17);
    p.event(&exists);
    assert_eq!(
        seen.borrow().len(),
        1,
        "EEXIST is dropped: {:?}",
        seen.borrow()
    );
    assert_eq!(*ids.borrow(), vec![4], "the hierarchy from the path");
    assert_eq!(p.counts.seen[EventKind::MkdirFailed as usize], 1);
}

/// The failed mkdirs the sinks got: (path, errno, inferred).
type Failures = Rc<RefCell<Vec<(Vec<u8>, Option<i32>, bool)>>>;

struct FailureSink(Failures);

impl Sink for FailureSink {
    fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        if ev.kind == EventKind::MkdirFailed {
            self.0
                .borrow_mut()
                .push((ev.path.to_vec(), ev.errno, ev.errno_inferred));
        }
        Ok(())
    }
    fn summary(&mut self, _s: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A pipeline on `release` with the memory hierarchy 4 mounted at /sys/fs/cgroup/memory.
fn memory_pipeline(release: &str, sink: Failures) -> Pipeline {
    let mut h = RunFacts::memory_at(Some(4));
    if let Some(m) = h.by_id.get_mut(&4) {
        m.mount = Some("/sys/fs/cgroup/memory".into());
    }
    Pipeline::new(
        RunFacts::new(release, h),
        &Baseline::default(),
        vec![Box::new(FailureSink(sink))],
        Box::new(pod_names::NoPodNames),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// What the release program sends for a half-made cgroup: a failed mkdir with the cgroup's
/// ids and path, no errno, no task.
fn half_made(ts: u64, id: u64, path: &'static [u8]) -> Event<'static> {
    let mut e = ev(EventKind::MkdirFailed, ts, 4, id, path);
    e.pid = 0;
    e.tid = 0;
    e.comm = b"";
    e.errno = None;
    e
}

#[test]
fn a_half_made_cgroup_at_no_headroom_is_memcg_id_exhaustion() {
    let seen: Failures = Rc::default();
    let mut p = memory_pipeline("6.18.44", seen.clone());
    // Far from exhaustion: the errno stays unknown.
    p.event(&half_made(1, 900, b"/kubepods/burstable/podaa"));
    // The kernel's counters say every memcg ID is used.
    p.kernel_memcgs(&KernelMemcgs {
        ts_ns: 2,
        all: Some(crate::kernel::MEMCG_ID_MAX),
        ..KernelMemcgs::default()
    });
    assert_eq!(p.detectors.id_headroom(&p.tracker), Some(0));
    p.event(&half_made(3, 901, b"/kubepods/burstable/podbb"));
    let got = seen.borrow().clone();
    assert_eq!(
        got,
        vec![
            (b"/kubepods/burstable/podaa".to_vec(), None, false),
            (b"/kubepods/burstable/podbb".to_vec(), Some(16), true),
        ],
        "EBUSY inferred on 6.12+ only at no headroom"
    );
    let v = p.verdicts();
    let exhausted = v
        .iter()
        .find(|v| v.detector == "mkdir_failed" && v.summary.starts_with("memcg IDs exhausted"))
        .expect("a memcg-IDs-exhausted verdict");
    assert_eq!(exhausted.severity, crate::detectors::Severity::Critical);
    assert!(
        exhausted.summary.contains("caller not seen"),
        "{}",
        exhausted.summary
    );
    let unknown = v
        .iter()
        .find(|v| {
            v.detector == "mkdir_failed"
                && matches!(&v.evidence, crate::detectors::Evidence::MkdirFailed(e)
                        if e.cause == mkdir_errno::MkdirCause::CssCreationFailed)
        })
        .expect("the unknown-errno failure has its own verdict");
    assert_eq!(unknown.severity, crate::detectors::Severity::Critical);
    let headroom = v
        .iter()
        .find(|v| v.detector == "id_headroom")
        .expect("an id_headroom verdict");
    assert_eq!(headroom.severity, crate::detectors::Severity::Critical);
    assert_eq!(p.summary(4).id_headroom, Some(0));
}

#[test]
fn a_relative_path_resolved_at_the_syscall_is_made_absolute_and_its_release_not_repeated() {
    let seen: Failures = Rc::default();
    let mut p = memory_pipeline("6.1.0", seen.clone());
    // `mkdir -p` from a working directory in cgroupfs: the kernel composed the path below
    // the hierarchy's root from that directory's cgroup.
    let mut rel = ev(EventKind::MkdirFailed, 1, 4, 0, b"/kubepods/podff");
    rel.errno = Some(28);
    rel.syscall_relative = true;
    assert_eq!(rel.failure_seen_at(), Some(FailureSource::Syscall));
    p.event(&rel);
    // Its half-made cgroup's release: the same failure.
    p.event(&half_made(40_000_001, 81, b"/kubepods/podff"));
    assert_eq!(
        seen.borrow().clone(),
        vec![(
            b"/sys/fs/cgroup/memory/kubepods/podff".to_vec(),
            Some(28),
            false
        )]
    );
}

#[test]
fn a_failure_seen_at_the_syscall_is_not_reported_again_at_its_release() {
    let seen: Failures = Rc::default();
    let mut p = memory_pipeline("6.1.0", seen.clone());
    let mut at_syscall = ev(
        EventKind::MkdirFailed,
        1,
        0,
        0,
        b"/sys/fs/cgroup/memory/kubepods/podcc",
    );
    at_syscall.has_cgroup = false;
    at_syscall.errno = Some(28);
    p.event(&at_syscall);
    // Its half-made cgroup's release 40 ms later: the same failure.
    p.event(&half_made(40_000_001, 77, b"/kubepods/podcc"));
    // Another path, and the same path much later: failures of their own.
    p.event(&half_made(40_000_002, 78, b"/kubepods/poddd"));
    p.event(&half_made(90_000_000_000, 79, b"/kubepods/podcc"));
    // Seen at cgroupfs's cgroup_mkdir() return first (fentry/kprobe tiers), then at the
    // syscall exit, then at the release: one failure.
    let mut at_cgroupfs = ev(
        EventKind::MkdirFailed,
        100_000_000_000,
        4,
        0,
        b"/kubepods/podee",
    );
    at_cgroupfs.errno = Some(28);
    p.event(&at_cgroupfs);
    let mut later_syscall = at_syscall;
    later_syscall.ts_ns = 100_000_000_001;
    later_syscall.path = b"/sys/fs/cgroup/memory/kubepods/podee";
    p.event(&later_syscall);
    p.event(&half_made(100_040_000_000, 80, b"/kubepods/podee"));
    let paths: Vec<Vec<u8>> = seen.borrow().iter().map(|f| f.0.clone()).collect();
    assert_eq!(
        paths,
        vec![
            b"/sys/fs/cgroup/memory/kubepods/podcc".to_vec(),
            b"/kubepods/poddd".to_vec(),
            b"/kubepods/podcc".to_vec(),
            b"/kubepods/podee".to_vec(),
        ]
    );
    assert_eq!(p.counts.seen[EventKind::MkdirFailed as usize], 4);
}

#[test]
fn kernel_counts_correct_the_headroom_and_events_move_it_after() {
    let seen: Failures = Rc::default();
    let mut p = memory_pipeline("6.1.0", seen);
    assert_eq!(
        p.detectors.id_headroom(&p.tracker),
        Some(crate::kernel::MEMCG_ID_MAX)
    );
    // 1,000 memcgs the events never showed (made before a filtered subtree, say).
    p.kernel_memcgs(&KernelMemcgs {
        ts_ns: 1,
        all: Some(1_000),
        ..KernelMemcgs::default()
    });
    assert_eq!(
        p.detectors.id_headroom(&p.tracker),
        Some(crate::kernel::MEMCG_ID_MAX - 1_000)
    );
    p.event(&ev(EventKind::Mkdir, 2, 4, 5, b"/kubepods/x"));
    assert_eq!(
        p.detectors.id_headroom(&p.tracker),
        Some(crate::kernel::MEMCG_ID_MAX - 1_001)
    );
    p.note("said once");
    assert!(!p.note("said once"));
    assert_eq!(p.summary(3).notes, vec!["said once".to_string()]);
}

/// The start-up walk's late record of a memcg the events told of reaches no sink; its record
/// of a memcg dying since before start does, with the path the tracker makes of it.
#[test]
fn a_stale_walk_record_is_dropped_before_the_sinks() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut facts = RunFacts::new("6.1.0", RunFacts::memory_at(Some(4)));
    facts.tier = crate::probes::Tier::Fentry;
    let baseline = Baseline {
        cgroups: vec![crate::model::baseline::BaselineCgroup {
            hierarchy_id: 4,
            cgroup_id: 1,
            level: 0,
            path: b"/".to_vec(),
        }],
        dying_before_start: vec![(4, 1)],
        taken_at_ns: 1,
    };
    let mut p = Pipeline::new(
        facts,
        &baseline,
        vec![Box::new(Paths(seen.clone()))],
        Box::new(pod_names::NoPodNames),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    p.event(&ev(EventKind::Mkdir, 2, 4, 100, b"/ctr"));
    p.event(&ev(EventKind::Rmdir, 3, 4, 100, b"/ctr"));
    let walked = |id: u64, leaf: &'static [u8]| {
        let mut w = ev(EventKind::DyingAtStart, 4, 4, id, leaf);
        w.css = 1;
        w
    };
    p.event(&walked(100, b"ctr"));
    p.event(&walked(50, b"old"));
    assert_eq!(
        *seen.borrow(),
        [
            (EventKind::Mkdir, b"/ctr".to_vec()),
            (EventKind::Rmdir, b"/ctr".to_vec()),
            (EventKind::DyingAtStart, b"/old".to_vec()),
        ]
    );
    assert_eq!(p.tracker.totals().dying, 2);
    assert_eq!(p.counts.seen[EventKind::DyingAtStart as usize], 1);
}
