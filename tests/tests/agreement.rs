//! One pipeline, one meaning: the same filter set selects the same cgroups on raw and classic
//! tracepoints, on the probe tier in use (`CGTRACE_TIER` in the VM matrix), and in a replay of
//! the recorded session; and a replay names the pods the live run named, with the pod log
//! directory gone and as an unprivileged user.
//!
//! The oracle is the tree the test makes: which of its cgroups each filter set must select is
//! written out below, not computed by cgtrace's own filter code.
use std::{
    cell::RefCell,
    collections::BTreeSet,
    fs,
    io::{self, Cursor, Write},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    process::{Command, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

use cgtrace::{
    commands::{record, replay},
    format::clock::ClockRef,
    model::{baseline, event::Event, tracker::PodStats},
    pipeline::{
        Pipeline,
        facts::RunFacts,
        filters::Filters,
        output::{JsonSink, RenderContext, Sink, Summary},
        pod_names::{NoPodNames, PodLogDir},
    },
    probes::{AttachMode, ProbeOptions, Probes},
    session::{SessionReader, SessionWriter},
};
use cgtrace_common::EventKind;
use integration_tests::{
    Layout,
    binary::cgtrace_bin,
    cgroup::{TestParent, privileged},
    tier_from_env,
};

/// Made before the probes load (a subtree filter names an existing cgroup) and kept.
const SKELETON: &str = "kubepods";

/// The tree under the test parent, made in this order and removed in reverse.
const TREE: [&str; 6] = [
    "kubepods/burstable",
    "kubepods/burstable/pod5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6",
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    "kubepodsX",
    "other",
];

/// (kind, path relative to the test parent) of the mkdirs and rmdirs under it.
type Selected = BTreeSet<(&'static str, String)>;

/// Collects the mkdirs and rmdirs under the test parent, and writes a session in memory.
struct Tee {
    parent: Vec<u8>,
    seen: Rc<RefCell<Selected>>,
    session: Option<SessionWriter<Vec<u8>>>,
    file: Rc<RefCell<Vec<u8>>>,
}

impl Tee {
    fn new(parent: &str, session: Option<SessionWriter<Vec<u8>>>) -> Tee {
        Tee {
            parent: format!("{parent}/").into_bytes(),
            seen: Rc::default(),
            session,
            file: Rc::default(),
        }
    }
}

impl Sink for Tee {
    fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        if matches!(ev.kind, EventKind::Mkdir | EventKind::Rmdir)
            && let Some(rel) = ev.path.strip_prefix(self.parent.as_slice())
        {
            let rel = String::from_utf8_lossy(rel).into_owned();
            self.seen.borrow_mut().insert((ev.kind.name(), rel));
        }
        match &mut self.session {
            Some(w) => w.event(ev),
            None => Ok(()),
        }
    }
    fn lost(&mut self, ts_ns: u64, kind: EventKind, count: u64) -> io::Result<()> {
        match &mut self.session {
            Some(w) => w.lost(ts_ns, kind, count),
            None => Ok(()),
        }
    }
    fn pod_name(&mut self, uid: &str, namespace: &str, name: &str) -> io::Result<()> {
        match &mut self.session {
            Some(w) => w.pod_name(uid, namespace, name),
            None => Ok(()),
        }
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        if let Some(w) = self.session.take() {
            *self.file.borrow_mut() = w.finish_at(s.end_ns)?;
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn filters(prefix: Option<String>, subtree: Option<String>, controllers: &[&str]) -> Filters {
    Filters {
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        path_prefix: prefix,
        subtree,
    }
}

fn expect(paths: &[&str]) -> Selected {
    paths
        .iter()
        .flat_map(|p| [("mkdir", p.to_string()), ("rmdir", p.to_string())])
        .collect()
}

/// A live run as `record` starts it: the probes with `filters` on `attach`, the run's facts, the
/// baseline, and a [`Tee`] writing the session in memory.
fn start(
    layout: &Layout,
    parent: &TestParent,
    filters: &Filters,
    attach: AttachMode,
) -> (Probes, RunFacts, baseline::Baseline, Tee) {
    let mut opts = ProbeOptions {
        tier: tier_from_env(),
        attach,
        mkdir_failures: cgtrace::probes::MkdirFailureMode::Cgroupfs,
        ..ProbeOptions::default()
    };
    opts.set_filters(filters, &layout.hierarchies)
        .expect("the filters resolve");
    let probes = Probes::load(&opts).expect("load and attach");
    let facts = RunFacts::of_probes(
        &probes,
        layout.hierarchies.clone(),
        filters.clone(),
        ClockRef::now(),
    );
    let base = baseline::take(&layout.hierarchies, cgtrace::format::clock::monotonic_ns());
    let header = record::header(&facts).expect("a header");
    let writer = SessionWriter::new(Vec::new(), &header, &base).expect("a session");
    let tee = Tee::new(&parent.cgroup_path(), Some(writer));
    (probes, facts, base, tee)
}

/// One traced run with `filters` on `attach`: the tree made and removed, every event through a
/// pipeline built the way `live` builds it. Returns what it selected and the session bytes.
fn traced(
    layout: &Layout,
    parent: &TestParent,
    filters: &Filters,
    attach: AttachMode,
    want: &Selected,
) -> (Selected, Vec<u8>) {
    let (mut probes, facts, base, tee) = start(layout, parent, filters, attach);
    let (seen, file) = (tee.seen.clone(), tee.file.clone());
    let mut pipe =
        Pipeline::new(facts, &base, vec![Box::new(tee)], Box::new(NoPodNames)).expect("pipeline");
    for p in TREE {
        parent.mkdir(&layout.memory_mount, p).expect("mkdir");
    }
    for p in TREE.iter().rev() {
        parent.rmdir(&layout.memory_mount, p).expect("rmdir");
    }
    // Everything selected arrives, then a little longer for anything that should not.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !want.is_subset(&seen.borrow()) {
        probes.drain(4096, |b| pipe.feed_raw(b));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    probes.drain(4096, |b| pipe.feed_raw(b));
    pipe.finish(cgtrace::format::clock::monotonic_ns())
        .expect("finish");
    let got = seen.borrow().clone();
    let bytes = file.borrow().clone();
    (got, bytes)
}

/// What a replay of `session` with `filters` selects.
fn replayed(session: &[u8], parent: &TestParent, filters: &Filters) -> Selected {
    let reader = SessionReader::new(Cursor::new(session.to_vec())).expect("a session");
    let tee = Tee::new(&parent.cgroup_path(), None);
    let seen = tee.seen.clone();
    let (mut reader, mut r) =
        replay::start(reader, filters, |_, _| vec![Box::new(tee) as Box<dyn Sink>])
            .expect("replay starts");
    replay::feed(&mut reader, &mut r, replay::Speed::Max).expect("replay");
    let end = r.end_ns();
    r.pipe.finish(end).expect("finish");
    seen.borrow().clone()
}

#[test]
fn filters_select_the_same_cgroups_on_every_tier_and_in_replay() {
    if !privileged("filters_select_the_same_cgroups_on_every_tier_and_in_replay") {
        return;
    }
    let layout = Layout::load();
    let parent = TestParent::new("filters", &[&layout.memory_mount]).expect("test parent");
    parent
        .mkdir(&layout.memory_mount, SKELETON)
        .expect("mkdir the skeleton");
    let p = parent.cgroup_path();
    let cases: Vec<(&str, Filters, Selected)> = vec![
        (
            "--subtree P/kubepods (a / boundary: not kubepods.slice, not kubepodsX)",
            filters(None, Some(format!("{p}/kubepods/")), &[]),
            expect(&TREE[..2]),
        ),
        (
            "--path-prefix P/kubepods (bytes: kubepods.slice and kubepodsX too)",
            filters(Some(format!("{p}/kubepods")), None, &[]),
            expect(&TREE[..5]),
        ),
        (
            "--subtree P/kubepods --path-prefix P/kubepods/burstable/pod",
            filters(
                Some(format!("{p}/kubepods/burstable/pod")),
                Some(format!("{p}/kubepods")),
                &[],
            ),
            expect(&TREE[1..2]),
        ),
        (
            "--controller memory --subtree P",
            filters(None, Some(p.clone()), &["memory"]),
            expect(&TREE),
        ),
    ];
    // One recording without filters, replayed with each filter set, must agree too.
    let everything = filters(None, Some(p.clone()), &[]);
    for attach in [AttachMode::Raw, AttachMode::Classic] {
        let (all, unfiltered) = traced(&layout, &parent, &everything, attach, &expect(&TREE));
        assert_eq!(all, expect(&TREE), "{attach:?}: the whole tree");
        for (what, f, want) in &cases {
            let (live, session) = traced(&layout, &parent, f, attach, want);
            assert_eq!(&live, want, "{attach:?} {what}: live");
            assert_eq!(
                &replayed(&session, &parent, f),
                want,
                "{attach:?} {what}: replay of the filtered recording"
            );
            assert_eq!(
                &replayed(&unfiltered, &parent, f),
                want,
                "{attach:?} {what}: replay of the unfiltered recording"
            );
        }
    }
}

/// A `Write` into a shared buffer (the live run's JSON lines).
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The pod fields of each event line under the test parent: (event, path, pod_uid, namespace,
/// pod_name).
fn pod_fields(json: &str, parent: &str) -> Vec<[String; 5]> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "event")
        .filter(|v| v["path"].as_str().is_some_and(|p| p.starts_with(parent)))
        .map(|v| {
            ["event", "path", "pod_uid", "namespace", "pod_name"]
                .map(|k| v[k].as_str().unwrap_or("-").to_string())
        })
        .collect()
}

#[test]
fn a_replay_names_the_pods_the_live_run_named() {
    if !privileged("a_replay_names_the_pods_the_live_run_named") {
        return;
    }
    const UID: &str = "0b5e7a9c-3d1f-4e2a-8c6b-9f0e1d2c3b4a";
    let layout = Layout::load();
    let parent = TestParent::new("podnames", &[&layout.memory_mount]).expect("test parent");
    let work = std::env::temp_dir().join(format!("{}-work", parent.name));
    let logs = work.join("pods");
    fs::create_dir_all(logs.join(format!("team-a_web-0_{UID}"))).expect("pod log dir");
    let filters = filters(None, Some(parent.cgroup_path()), &[]);
    let (mut probes, facts, base, tee) = start(&layout, &parent, &filters, AttachMode::Auto);
    let file = tee.file.clone();
    let live_json = Shared::default();
    let ctx = RenderContext::new(facts.hierarchies.clone(), facts.clock);
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(JsonSink::new(live_json.clone(), ctx)),
        Box::new(tee),
    ];
    let mut pipe = Pipeline::new(facts, &base, sinks, Box::new(PodLogDir::new(logs.clone())))
        .expect("pipeline");
    let pod = format!("kubepods/burstable/pod{UID}");
    let container = format!("{pod}/{}", "c0ffee".repeat(10) + "c0ff");
    for p in ["kubepods", "kubepods/burstable", &pod, &container] {
        parent.mkdir(&layout.memory_mount, p).expect("mkdir");
    }
    for p in [&container, &pod] {
        parent.rmdir(&layout.memory_mount, p).expect("rmdir");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && pod_fields(
            &String::from_utf8_lossy(&live_json.0.borrow()),
            &parent.cgroup_path(),
        )
        .iter()
        .filter(|f| f[0] == "rmdir")
        .count()
            < 2
    {
        probes.drain(4096, |b| pipe.feed_raw(b));
        pipe.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(20));
    }
    pipe.finish(cgtrace::format::clock::monotonic_ns())
        .expect("finish");
    let live = pod_fields(
        &String::from_utf8_lossy(&live_json.0.borrow()),
        &parent.cgroup_path(),
    );
    let named: Vec<_> = live.iter().filter(|f| f[2] == UID).collect();
    assert_eq!(named.len(), 4, "mkdir+rmdir of pod and container: {live:?}");
    assert!(
        named.iter().all(|f| f[3] == "team-a" && f[4] == "web-0"),
        "live names the pod: {live:?}"
    );

    // The pod's logs are gone; the session replays elsewhere, unprivileged.
    fs::remove_dir_all(&logs).expect("remove the pod log dir");
    let session = work.join("s.cgtrace");
    fs::write(&session, file.borrow().as_slice()).expect("write the session");
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&session, fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = Command::new(cgtrace_bin())
        .args(["replay", "--json"])
        .arg(&session)
        .uid(65534)
        .gid(65534)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cgtrace replay as nobody");
    assert!(out.status.success(), "replay as nobody: {:?}", out.status);
    let replayed = pod_fields(&String::from_utf8_lossy(&out.stdout), &parent.cgroup_path());
    assert_eq!(
        replayed, live,
        "the replay prints the live run's pod fields"
    );
    let _ = fs::remove_dir_all(&work);
}
