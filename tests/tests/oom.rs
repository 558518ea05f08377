//! OOM kills, for real: a kubelet-style pod and container memcg under the test parent with a
//! small memory limit, a process moved into it that allocates past the limit until the kernel
//! kills it. The kernel's own counts are the oracle: `/proc/vmstat` `oom_kill` (node-wide),
//! `memory.oom_control` (v1) or `memory.events` (v2) of the pod and the container, and which
//! memcg's own counter hit its limit (`memory.failcnt` on v1, `memory.events.local` `max` on
//! v2).
//!
//! * the limit on the container: the `oom_kill` event names the victim (pid, comm,
//!   `oom_score_adj`), its container's memcg, pod and QoS, and that memcg as the one at its limit,
//!   its usage at the limit;
//! * the limit on the pod: the event names the pod's memcg;
//! * end to end with the binary (`end_to_end_*`, this host only: the VMs have no `cgtrace`
//!   binary): two kills of one pod in `live --json` (events and the verdict), in a recorded
//!   session that replays the same, and in `attach --metrics`.
//!
//! Runs on every tier in the kernel-matrix VMs (`cargo xtask vm-test --test oom`), where the
//! css tiers read the constraint from `out_of_memory()` instead of deriving it.
use std::{
    cell::RefCell,
    fs,
    io::Write,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Stdio,
    rc::Rc,
    time::{Duration, Instant},
};

use cgtrace::{
    format::clock::ClockRef,
    kernel::hierarchy::Hierarchies,
    model::{baseline::Baseline, event::Event, oom::Constraint},
    pipeline::{
        Pipeline, facts::RunFacts, filters::Filters, output::JsonSink, output::RenderContext,
        pod_names::NoPodNames,
    },
    probes::{ProbeOptions, Probes, Tier},
};
use cgtrace_common::EventKind;
use integration_tests::{
    Records,
    binary::{cgtrace_command, free_port, http_get, metric, signal_and_wait, spawn_attached},
    cgroup::{TestParent, privileged},
    collect_until, drain,
    oom::{Hog, MemRoot, vmstat_oom_kills},
    tier_from_env,
};
use serde_json::Value;

/// The hog: the test binary re-run with only this test selected (see `integration_tests::oom`).
#[test]
fn oom_hog() {
    integration_tests::oom::hog_main();
}

/// The memory limit the tests set.
const LIMIT: u64 = 32 << 20;
/// The hog gives up (and the test fails) after this much without being killed.
const HOG_MAX: u64 = 512 << 20;
/// What the hog's `oom_score_adj` is set to (and the event must say).
const HOG_ADJ: i32 = 500;
/// A memcg is at its limit within a THP charge (2 MiB) and a charge batch (64 pages).
const MARGIN: u64 = (2 << 20) + 64 * 4096;

/// A kubelet-style pod (cgroupfs driver, Burstable) under the test parent.
struct Pod {
    uid: String,
    dir: PathBuf,
    ino: u64,
    /// Its path as events show it.
    path: String,
}

fn make_pod(mem: &MemRoot, parent: &TestParent, uid: &str) -> Pod {
    let top = parent.dir(&mem.mount);
    mem.mkdir(&top.join("kubepods"));
    mem.mkdir(&top.join("kubepods/burstable"));
    let dir = top.join(format!("kubepods/burstable/pod{uid}"));
    let ino = mem.mkdir(&dir);
    Pod {
        uid: uid.to_string(),
        path: format!("{}/kubepods/burstable/pod{uid}", parent.cgroup_path()),
        dir,
        ino,
    }
}

/// A container memcg of the pod: (dir, inode, id, path).
fn make_container(mem: &MemRoot, pod: &Pod, n: u64) -> (PathBuf, u64, String, String) {
    let id = format!("{:064x}", 0x00c0_ffee_0000_u64 + n);
    let dir = pod.dir.join(&id);
    let ino = mem.mkdir(&dir);
    (dir, ino, id.clone(), format!("{}/{id}", pod.path))
}

/// Runs a hog in `dir` until the OOM killer kills it: its pid and comm.
fn kill_a_hog_in(dir: &Path) -> (u32, String) {
    let hog = Hog::start_in(dir, HOG_MAX);
    let pid = hog.pid();
    let comm = hog.comm.clone();
    fs::write(format!("/proc/{pid}/oom_score_adj"), HOG_ADJ.to_string())
        .expect("set the hog's oom_score_adj");
    let status = hog.wait(Duration::from_secs(60));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the hog was not OOM-killed: {status}"
    );
    (pid, comm)
}

/// A `Write` the test keeps a handle on.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The records through the pipeline a live run builds on these probes, as JSON lines.
fn json_lines(probes: &Probes, hierarchies: &Hierarchies, recs: &Records) -> Vec<Value> {
    let out = Shared::default();
    let facts = RunFacts::of_probes(
        probes,
        hierarchies.clone(),
        Filters::default(),
        ClockRef::now(),
    );
    let ctx = RenderContext::new(hierarchies.clone(), facts.clock);
    let mut p = Pipeline::new(
        facts,
        &Baseline::default(),
        vec![Box::new(JsonSink::new(out.clone(), ctx))],
        Box::new(NoPodNames),
    )
    .expect("pipeline");
    for r in recs.raw() {
        p.feed_raw(r);
    }
    p.finish(0).expect("finish");
    let text = String::from_utf8(out.0.borrow().clone()).expect("UTF-8 JSON");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON {l}: {e}")))
        .collect()
}

/// What one OOM test saw.
struct Seen {
    probes: Probes,
    hierarchies: Hierarchies,
    recs: Records,
}

fn start(test: &str) -> Option<(MemRoot, TestParent, Seen)> {
    if !privileged(test) {
        return None;
    }
    let hierarchies = Hierarchies::load().expect("hierarchies");
    let mem = MemRoot::load(&hierarchies);
    // Every memcg event of the node: the vmstat oracle counts every OOM kill too.
    let probes = Probes::load(&ProbeOptions {
        tier: tier_from_env(),
        hierarchies: Some(vec![mem.hierarchy_id]),
        ..ProbeOptions::default()
    })
    .expect("load and attach");
    let oom = probes
        .oom
        .clone()
        .unwrap_or_else(|why| panic!("OOM kills are not traced on this kernel: {why}"));
    eprintln!(
        "tier {} on {}: OOM kills {}",
        probes.tier.name(),
        probes.kernel_release,
        oom.describe()
    );
    let parent = TestParent::new(test, &[&mem.mount]).expect("test parent");
    Some((
        mem,
        parent,
        Seen {
            probes,
            hierarchies,
            recs: Records::default(),
        },
    ))
}

/// Waits for the `oom_kill` of `pid`; returns the `oom_kill` events (anyone's) seen.
fn wait_for_kill(s: &mut Seen, pid: u32) -> usize {
    let done = collect_until(&mut s.probes, &mut s.recs, Duration::from_secs(30), |e| {
        e.iter()
            .any(|e| e.kind == EventKind::OomKill && e.pid == pid)
    });
    assert!(done, "no oom_kill event for pid {pid} within 30 s");
    s.recs
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::OomKill)
        .count()
}

/// The JSON line of the `oom_kill` event of `pid`.
fn json_kill(lines: &[Value], pid: u32) -> Value {
    lines
        .iter()
        .find(|v| v["event"] == "oom_kill" && v["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("no oom_kill JSON line for pid {pid}: {lines:#?}"))
}

/// The checks both limit tests share: the victim, its memcg and the memcg at its limit (`limit`
/// `(inode, path)`) in the decoded event and in the pipeline's JSON line.
#[allow(clippy::too_many_arguments)]
fn check_kill(
    s: &Seen,
    pid: u32,
    comm: &str,
    victim: (u64, &str),
    limit: (u64, &str),
    pod: &Pod,
    container_id: &str,
    scope: &str,
) -> Value {
    let events = s.recs.events();
    let raw = s
        .recs
        .raw()
        .iter()
        .zip(&events)
        .find(|(_, e)| e.kind == EventKind::OomKill && e.pid == pid)
        .map(|(r, _)| r)
        .expect("the record");
    let ev: Event<'_> = Event::decode(raw).expect("decodes");
    let k = Event::decode_oom(raw).expect("the OOM part decodes");
    eprintln!("event: {ev:?}\noom: {k:?}");
    assert_eq!(String::from_utf8_lossy(ev.comm), comm);
    assert_eq!((ev.cgroup_id, ev.has_cgroup), (victim.0, true));
    assert_eq!(String::from_utf8_lossy(ev.path), victim.1);
    assert_eq!(k.constraint, Constraint::Memcg, "{k:?}");
    assert_eq!(k.oom_score_adj, Some(HOG_ADJ));
    // (`exiting` may be set: the victim can start exiting from the kill's SIGKILL on the other
    // CPU before it is marked.)
    assert!(k.victim_task && !k.pid_only, "{k:?}");
    let l = k.limit.expect("the memcg at its limit");
    assert_eq!(l.cgroup_id, limit.0, "{k:?}");
    assert_eq!(l.limit_bytes, LIMIT, "{k:?}");
    assert!(
        l.usage_bytes + MARGIN >= LIMIT && l.usage_bytes <= LIMIT,
        "usage {} not at the limit {LIMIT}",
        l.usage_bytes
    );
    let mm = k.mm.expect("the victim's mm counters");
    assert!(
        mm.rss_anon_bytes >= LIMIT / 2,
        "the hog's anonymous RSS {} at the kill",
        mm.rss_anon_bytes
    );
    // The css tiers read the constraint from the OOM killer; the tracepoint tier derives it.
    let css_tier = s.probes.tier != Tier::Tracepoint;
    let oom = s.probes.oom.as_ref().expect("OOM tracing");
    assert_eq!(k.derived, !css_tier, "{k:?}");
    assert_eq!(k.context, css_tier && oom.context, "{k:?}");
    if oom.kill_hook {
        assert!(k.in_kill, "counted where the kernel counts: {k:?}");
    }
    let lines = json_lines(&s.probes, &s.hierarchies, &s.recs);
    let j = json_kill(&lines, pid);
    eprintln!("JSON: {j}");
    assert_eq!(j["comm"], comm);
    assert_eq!(j["path"], victim.1);
    assert_eq!(j["pod_uid"], pod.uid.as_str());
    assert_eq!(j["qos"], "burstable");
    assert_eq!(j["container_id"], container_id);
    assert_eq!(j["constraint"], "memcg");
    assert_eq!(j["constraint_derived"], !css_tier);
    assert_eq!(j["oom_score_adj"], HOG_ADJ);
    assert_eq!(j["limit"]["path"], limit.1);
    assert_eq!(j["limit"]["cgroup_id"], limit.0);
    assert_eq!(j["limit"]["scope"], scope);
    assert_eq!(j["limit"]["limit_bytes"], LIMIT);
    assert_eq!(j["limit"]["pod_uid"], pod.uid.as_str());
    j
}

/// OOM kills (`oom_kill` events the kernel counted, or all where the tier cannot tell) with
/// timestamps in `(from, to)`.
fn kills_between(s: &Seen, from: u64, to: u64) -> u64 {
    s.recs
        .raw()
        .iter()
        .filter_map(|r| {
            let e = Event::decode(r).ok()?;
            (e.kind == EventKind::OomKill && e.ts_ns > from && e.ts_ns < to).then_some(r)
        })
        .filter(|r| {
            let k = Event::decode_oom(r).expect("decodes");
            let t = s.probes.oom.as_ref().expect("OOM tracing");
            t.counted(&k) != Some(false)
        })
        .count() as u64
}

#[test]
fn a_container_limit_oom_names_the_container_pod_qos_and_limit() {
    let Some((mem, parent, mut s)) = start("oom-ctr") else {
        return;
    };
    let pod = make_pod(&mem, &parent, "0b0c1a2e-0001-4c3b-9d4e-5f6a7b8c9d01");
    let (dir, ino, id, path) = make_container(&mem, &pod, 1);
    mem.set_limit(&dir, LIMIT);
    let (t0, vm0) = (cgtrace::format::clock::monotonic_ns(), vmstat_oom_kills());
    let (pid, comm) = kill_a_hog_in(&dir);
    wait_for_kill(&mut s, pid);
    let (t1, vm1) = (cgtrace::format::clock::monotonic_ns(), vmstat_oom_kills());
    std::thread::sleep(Duration::from_millis(100));
    drain(&mut s.probes, &mut s.recs);
    check_kill(
        &s,
        pid,
        &comm,
        (ino, &path),
        (ino, &path),
        &pod,
        &id,
        "container",
    );
    // The kernel's counts: one kill in the container (v2 counts it in the pod too; v1's
    // memory.oom_control counts only the victim's own memcg on this kernel), the container's own
    // limit hit, not the pod's; every kill on the node in the window is an event.
    assert_eq!(mem.oom_kills(&dir), 1);
    if mem.v2 {
        assert_eq!(mem.oom_kills(&pod.dir), 1);
    }
    assert!(mem.limit_hits(&dir) > 0);
    assert_eq!(mem.limit_hits(&pod.dir), 0);
    let seen = kills_between(&s, t0, t1);
    eprintln!(
        "oracles: /proc/vmstat oom_kill +{}, container oom_kill {}, pod oom_kill {}; cgtrace: {seen} kills",
        vm1 - vm0,
        mem.oom_kills(&dir),
        mem.oom_kills(&pod.dir)
    );
    assert_eq!(seen, vm1 - vm0, "cgtrace's kills against /proc/vmstat");
    assert_eq!(s.probes.lost().expect("lost").iter().sum::<u64>(), 0);
}

#[test]
fn a_pod_limit_oom_names_the_pods_memcg() {
    let Some((mem, parent, mut s)) = start("oom-pod") else {
        return;
    };
    let pod = make_pod(&mem, &parent, "0b0c1a2e-0002-4c3b-9d4e-5f6a7b8c9d02");
    mem.set_limit(&pod.dir, LIMIT);
    let (dir, ino, id, path) = make_container(&mem, &pod, 2);
    let (pid, comm) = kill_a_hog_in(&dir);
    wait_for_kill(&mut s, pid);
    check_kill(
        &s,
        pid,
        &comm,
        (ino, &path),
        (pod.ino, &pod.path),
        &pod,
        &id,
        "pod",
    );
    // The pod's own counter hit its limit, the container's (no limit) never did.
    assert!(mem.limit_hits(&pod.dir) > 0);
    assert_eq!(mem.limit_hits(&dir), 0);
    // The kill counts in the victim's memcg (and, on v2, in the pod's).
    assert_eq!(mem.oom_kills(&dir), 1);
    if mem.v2 {
        assert_eq!(mem.oom_kills(&pod.dir), 1);
    }
}

/// A node-wide OOM: a BestEffort-style pod's container with no limit allocates until the node
/// runs out. Only inside the kernel-matrix VMs (`CGTRACE_VM=1`, 1 GiB each): it exhausts the
/// machine's memory.
#[test]
fn a_node_wide_oom_is_constraint_none_and_the_victim_chosen_by_oom_score_adj() {
    if std::env::var("CGTRACE_VM").ok().as_deref() != Some("1") {
        eprintln!(
            "skipping: exhausts the machine's memory; runs only in the VMs of `cargo xtask vm-test --test oom`"
        );
        return;
    }
    let Some((mem, parent, mut s)) = start("oom-node") else {
        return;
    };
    // This process must not be the one the kernel picks: only the hog, with kubelet's
    // BestEffort score, may be.
    fs::write("/proc/self/oom_score_adj", "-1000").expect("protect the test");
    let top = parent.dir(&mem.mount);
    mem.mkdir(&top.join("kubepods"));
    mem.mkdir(&top.join("kubepods/besteffort"));
    let uid = "0b0c1a2e-0004-4c3b-9d4e-5f6a7b8c9d04";
    let pod = top.join(format!("kubepods/besteffort/pod{uid}"));
    mem.mkdir(&pod);
    let id = format!("{:064x}", 0x00c0_ffee_0000_u64 + 5);
    let dir = pod.join(&id);
    let ino = mem.mkdir(&dir);
    let vm0 = vmstat_oom_kills();
    let hog = Hog::start_in(&dir, 64 << 30);
    let pid = hog.pid();
    fs::write(format!("/proc/{pid}/oom_score_adj"), "1000").expect("the hog's oom_score_adj");
    let status = hog.wait(Duration::from_secs(300));
    let _ = fs::write("/proc/self/oom_score_adj", "0");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "not OOM-killed: {status}"
    );
    wait_for_kill(&mut s, pid);
    let vm1 = vmstat_oom_kills();
    let raw = s
        .recs
        .raw()
        .iter()
        .find(|r| Event::decode(r).is_ok_and(|e| e.kind == EventKind::OomKill && e.pid == pid))
        .expect("the record");
    let ev = Event::decode(raw).expect("decodes");
    let k = Event::decode_oom(raw).expect("the OOM part decodes");
    eprintln!("node-wide: {k:?}");
    assert_eq!(ev.cgroup_id, ino);
    assert_eq!(k.constraint, Constraint::None, "{k:?}");
    assert_eq!(k.limit, None, "{k:?}");
    assert_eq!(k.oom_score_adj, Some(1000));
    assert_eq!(k.derived, s.probes.tier == Tier::Tracepoint, "{k:?}");
    let lines = json_lines(&s.probes, &s.hierarchies, &s.recs);
    let j = json_kill(&lines, pid);
    assert_eq!(j["constraint"], "none");
    assert_eq!(j["qos"], "besteffort");
    assert_eq!(j["pod_uid"], uid);
    let v = lines
        .iter()
        .find(|v| v["type"] == "verdict" && v["detector"] == "oom_kill")
        .unwrap_or_else(|| panic!("no oom_kill verdict: {lines:#?}"));
    assert_eq!(v["evidence"]["constraint"], "none");
    assert_eq!(v["evidence"]["victims"][0]["pid"], pid);
    assert_eq!(
        v["evidence"]["victims"][0]["kubelet_oom_score_adj"],
        serde_json::json!([1000, 1000])
    );
    // The kernel's counts: one kill on the node, in the victim's memcg, no limit hit.
    assert_eq!(vm1 - vm0, 1);
    assert_eq!(mem.oom_kills(&dir), 1);
    assert_eq!(mem.limit_hits(&dir), 0);
}

// ---- end to end, with the binary ------------------------------------------------------------

/// The sum of every series of a metric.
fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A `cgtrace` child killed on drop, so a failing test leaves none behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn lines_of(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON {l}: {e}")))
        .collect()
}

/// The event and verdict lines about OOM kills, without what differs between two cgtrace
/// processes seeing the same kills: each program's own clock reading (`ts_ns`) and the ages
/// counted from it.
fn oom_lines(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v["event"] == "oom_kill" || v["detector"] == "oom_kill")
        .map(|v| {
            let mut v = v.clone();
            // `exiting` is the victim's PF_EXITING as each tracer read it: the kernel sends
            // SIGKILL before it marks the victim, so the victim's thread on another CPU may set
            // it between the live tracer's program and the recording tracer's.
            if let Some(o) = v.as_object_mut() {
                o.remove("ts_ns");
                o.remove("exiting");
            }
            if let Some(victims) = v["evidence"]["victims"].as_array_mut() {
                for x in victims {
                    if let Some(o) = x.as_object_mut() {
                        o.remove("age_s");
                        o.remove("exiting");
                    }
                }
            }
            v
        })
        .collect()
}

#[test]
fn end_to_end_two_kills_of_a_pod_in_live_record_replay_and_metrics() {
    let test = "end_to_end_two_kills_of_a_pod_in_live_record_replay_and_metrics";
    if !privileged(test) {
        return;
    }
    let hierarchies = Hierarchies::load().expect("hierarchies");
    let mem = MemRoot::load(&hierarchies);
    let parent = TestParent::new("oom-e2e", &[&mem.mount]).expect("test parent");
    let prefix = parent.cgroup_path();
    let scratch = std::env::temp_dir().join(format!("cgtrace-oom-e2e-{}", std::process::id()));
    fs::create_dir_all(&scratch).expect("scratch dir");
    let session = scratch.join("oom.cgtrace");
    let _ = fs::remove_file(&session);
    let live_out = fs::File::create(scratch.join("live.jsonl")).expect("live output");

    let (live, live_err) = spawn_attached(
        &["live", "--json", "--path-prefix", &prefix],
        Stdio::from(live_out),
    );
    let mut live = Running(live);
    let session_arg = session.display().to_string();
    let (record, record_err) = spawn_attached(
        &["record", "-o", &session_arg, "--path-prefix", &prefix],
        Stdio::null(),
    );
    let mut record = Running(record);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (attach, attach_err) = spawn_attached(
        &["attach", "--metrics", &addr, "--interval", "1h"],
        Stdio::null(),
    );
    let mut attach = Running(attach);
    let vm0 = vmstat_oom_kills();
    let (_, body0) = http_get(port, "/metrics");
    let all0 = metric_sum(&body0, "cgtrace_oom_kills_total");

    // Two kills of one pod: its container, then the container that replaces it (a restart).
    let uid = "0b0c1a2e-0003-4c3b-9d4e-5f6a7b8c9d03";
    let pod = make_pod(&mem, &parent, uid);
    let (c1, _, _, _) = make_container(&mem, &pod, 3);
    mem.set_limit(&c1, LIMIT);
    let (pid1, _) = kill_a_hog_in(&c1);
    let c1_kills = mem.oom_kills(&c1);
    integration_tests::cgroup::remove_tree(&c1);
    let (c2, _, _, _) = make_container(&mem, &pod, 4);
    mem.set_limit(&c2, LIMIT);
    let (pid2, _) = kill_a_hog_in(&c2);

    // The metrics count both, per pod too.
    let pod_series = format!(
        "cgtrace_pod_oom_kills_total{{pod_uid=\"{uid}\",namespace=\"\",name=\"\",qos=\"burstable\"}}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (_, body) = http_get(port, "/metrics");
        if metric(&body, &pod_series) == Some(2.0) || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let vm1 = vmstat_oom_kills();
    assert_eq!(metric(&body, &pod_series), Some(2.0), "{body}");
    assert!(
        metric(
            &body,
            "cgtrace_oom_kills_total{qos=\"burstable\",constraint=\"memcg\"}"
        )
        .is_some_and(|v| v >= 2.0),
        "{body}"
    );
    let all = metric_sum(&body, "cgtrace_oom_kills_total") - all0;
    let c2_kills = mem.oom_kills(&c2);
    eprintln!(
        "oracles: /proc/vmstat oom_kill +{}, the containers' oom_kill {c1_kills} and {c2_kills}; \
         attach: +{all}",
        vm1 - vm0,
    );
    assert_eq!(
        all,
        (vm1 - vm0) as f64,
        "attach's kills against /proc/vmstat"
    );
    assert_eq!((c1_kills, c2_kills), (1, 1));

    // Wait until live and record have both kills (they drain on their own timers), then stop.
    std::thread::sleep(Duration::from_millis(500));
    for (child, name) in [(&mut live, "live"), (&mut record, "record")] {
        let st = signal_and_wait(&mut child.0, libc::SIGINT, Duration::from_secs(20));
        assert!(st.success(), "{name}: {st}");
    }
    let st = signal_and_wait(&mut attach.0, libc::SIGTERM, Duration::from_secs(20));
    assert!(st.success(), "attach: {st}");
    for (name, err) in [
        ("live", live_err),
        ("record", record_err),
        ("attach", attach_err),
    ] {
        let err = err.join().expect("stderr");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }

    let live_text = fs::read_to_string(scratch.join("live.jsonl")).expect("live output");
    let live_lines = lines_of(&live_text);
    let kills: Vec<&Value> = live_lines
        .iter()
        .filter(|v| v["event"] == "oom_kill")
        .collect();
    assert_eq!(kills.len(), 2, "{live_text}");
    assert_eq!(
        (kills[0]["pid"].clone(), kills[1]["pid"].clone()),
        (pid1.into(), pid2.into())
    );
    for k in &kills {
        assert_eq!(k["pod_uid"], uid);
        assert_eq!(k["constraint"], "memcg");
        assert_eq!(k["limit"]["scope"], "container");
    }
    let verdict = live_lines
        .iter()
        .find(|v| v["type"] == "verdict" && v["detector"] == "oom_kill")
        .unwrap_or_else(|| panic!("no oom_kill verdict: {live_text}"));
    eprintln!("verdict: {verdict}");
    assert_eq!(verdict["severity"], "warning");
    assert_eq!(verdict["evidence"]["count"], 2);
    assert_eq!(verdict["evidence"]["pod_uid"], uid);
    assert_eq!(verdict["evidence"]["restarts_after"], 1);
    assert_eq!(verdict["evidence"]["victims"][0]["pid"], pid2);
    let summary = live_lines.last().expect("a summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["events"]["oom_kill"], 2);
    assert_eq!(summary["oom"]["kills"], 2);

    // The recorded session replays the same events and verdict.
    let out = cgtrace_command()
        .args(["replay", "--json"])
        .arg(&session)
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = lines_of(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(oom_lines(&replayed), oom_lines(&live_lines));
    let out = cgtrace_command()
        .arg("report")
        .arg(&session)
        .output()
        .expect("report");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("oom_kill") && report.contains(uid),
        "{report}"
    );
    let html = scratch.join("report.html");
    let out = cgtrace_command()
        .args(["report", "--html"])
        .arg(&html)
        .arg(&session)
        .output()
        .expect("report --html");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = fs::read_to_string(&html).expect("the HTML report");
    assert!(page.contains("OOM kills: 2 (2 memcg)."), "{page}");
    let _ = fs::remove_dir_all(&scratch);
}
