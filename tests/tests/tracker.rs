//! The tracker on the real kernel: dying memcgs under pod-shaped paths, counted exactly as the
//! kernel counts them, freed when their pages go; the start-up baseline; a real runtime (runc).
//!
//! One test binary, tests run one at a time (`serial`): they compare with machine-wide kernel
//! counters, which concurrent tests in this binary would disturb.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use cgtrace::{
    detectors::{DetectorConfig, Detectors, KernelFacts},
    format::clock::{ClockRef, monotonic_ns},
    kernel::hierarchy::Hierarchies,
    model::baseline,
    model::tracker::Totals,
    pipeline::{Pipeline, facts::RunFacts, filters::Filters, pod_names::NoPodNames},
    probes::{ProbeOptions, Probes, SubtreeFilter, WalkMethod},
};
use integration_tests::cgroup::{TestParent, charge_file, privileged, rmdir_retry};

static SERIAL: Mutex<()> = Mutex::new(());

const UID: &str = "5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6";

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kernel's count of dying memcgs on the v1 memory hierarchy.
fn kernel_dying(h: &Hierarchies) -> u64 {
    baseline::take(h, 0).dying_before_start_total()
}

/// Polls the kernel's dying count until it equals `want` or the deadline passes.
fn poll_kernel_dying(h: &Hierarchies, want: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let got = kernel_dying(h);
        if got == want || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lets zombies of earlier tests (and the machine's own page-cache zombies) go, then waits until
/// the kernel's dying count holds still for a second: comparisons with it start from rest.
fn settle(h: &Hierarchies) {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = kernel_dying(h);
    let mut stable_since = Instant::now();
    while Instant::now() < deadline && stable_since.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
        let now = kernel_dying(h);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tracker-{}", std::process::id()));
    fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Write back and drop caches until `done` or the deadline (drives frees of page-cache zombies).
fn drop_caches_until(mut done: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    done()
}

struct Live {
    probes: Probes,
    pipe: Pipeline,
}

impl Live {
    fn start(h: &Hierarchies, parent: &TestParent, memory_id: u32) -> Live {
        let probes = Probes::load(&ProbeOptions {
            hierarchies: Some(vec![memory_id]),
            subtree: Some(
                SubtreeFilter::resolve(h, &parent.cgroup_path()).expect("resolve the parent"),
            ),
            ..ProbeOptions::default()
        })
        .expect("load and attach");
        let baseline = baseline::take(h, monotonic_ns());
        let facts = RunFacts::of_probes(&probes, h.clone(), Filters::default(), ClockRef::now());
        assert_eq!(facts.memory_hierarchy(), Some(memory_id));
        let mut pipe = Pipeline::new(facts, &baseline, Vec::new(), Box::new(NoPodNames))
            .expect("the pipeline");
        // Thresholds for a test: any dying memcg with pages counts, at once.
        pipe.detectors = Detectors::new(
            DetectorConfig {
                page_cache_min_age: Duration::ZERO,
                page_cache_min_count: 1,
                ..DetectorConfig::default()
            },
            KernelFacts::from_release(&probes.kernel_release),
        );
        Live { probes, pipe }
    }

    fn pump(&mut self) {
        let pipe = &mut self.pipe;
        while self.probes.drain(4096, |b| pipe.feed_raw(b)) > 0 {}
    }

    fn totals(&mut self) -> Totals {
        self.pump();
        self.pipe.tracker.totals()
    }

    fn pod(&mut self) -> (u64, u64, u64) {
        self.pump();
        let now = self.pipe.tracker.now_ns();
        self.pipe
            .tracker
            .pods(now)
            .into_iter()
            .find(|p| p.stats.pod_uid == UID)
            .map(|p| (p.stats.live, p.stats.dying, p.stats.freed))
            .unwrap_or((0, 0, 0))
    }
}

#[test]
fn dying_memcgs_per_pod_match_the_kernel() {
    if !privileged("dying_memcgs_per_pod_match_the_kernel") {
        return;
    }
    let _serial = serial();
    let h = Hierarchies::load().expect("hierarchies");
    let mem = h.with_controller("memory").expect("memory hierarchy");
    let (memory_id, mount) = (mem.id, mem.mount.clone().expect("memory mount"));
    let parent = TestParent::new("zombies", &[&mount]).expect("test parent");
    let pod_rel = format!("kubepods/burstable/pod{UID}");
    fs::create_dir_all(parent.dir(&mount).join(&pod_rel)).expect("pod dir");
    settle(&h);
    let mut live = Live::start(&h, &parent, memory_id);
    let before = live.totals();
    let kernel_before = kernel_dying(&h);

    const K: usize = 3;
    let scratch = scratch();
    let files: Vec<PathBuf> = (0..K).map(|i| scratch.join(format!("f{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        let ctr = format!("{pod_rel}/{:064x}", i + 1);
        let dir = parent.dir(&mount).join(&ctr);
        fs::create_dir(&dir).expect("container dir");
        charge_file(&dir, f, 2 << 20);
        rmdir_retry(&dir);
    }
    // The kernel: K more dying memcgs (its counters move asynchronously: poll).
    let kernel_after = poll_kernel_dying(&h, kernel_before + K as u64, Duration::from_secs(10));
    assert_eq!(
        kernel_after,
        kernel_before + K as u64,
        "kernel dying count delta"
    );
    let t = live.totals();
    assert_eq!(
        t.dying,
        before.dying + K as u64,
        "tracker dying vs kernel: {t:?}"
    );
    assert_eq!(live.pod(), (1, K as u64, 0), "pod (live, dying, freed)");
    let dying = live.pipe.tracker.dying_memcgs();
    assert_eq!(dying.len(), K);
    // Detector 2 (page cache), not detector 1 (kmem), names them: this kernel reparents slab.
    let verdicts = live.pipe.verdicts();
    let pc = verdicts
        .iter()
        .find(|v| v.detector == "page_cache_pinning")
        .unwrap_or_else(|| panic!("no page_cache_pinning verdict: {verdicts:#?}"));
    assert!(
        pc.summary.contains("page cache or shmem")
            || pc.recommendation.contains("page cache or shmem"),
        "{pc:#?}"
    );
    assert!(
        !verdicts.iter().any(|v| v.detector == "kmem_leak"),
        "{verdicts:#?}"
    );
    for d in &dying {
        assert_eq!(d.pod_uid.as_deref(), Some(UID));
        assert!(d.usage_bytes.is_some_and(|u| u >= 2 << 20), "{d:?}");
    }

    // Drop the pages: every one is freed, and the kernel agrees.
    for f in &files {
        fs::remove_file(f).expect("remove file");
    }
    let freed = drop_caches_until(|| live.pod().2 == K as u64, Duration::from_secs(60));
    assert!(freed, "not all freed: pod {:?}", live.pod());
    assert_eq!(live.pod(), (1, 0, K as u64));
    let t = live.totals();
    assert_eq!(t.freed, before.freed + K as u64);
    assert_eq!(t.dying, before.dying);
    let _ = fs::remove_dir_all(&scratch);
}

#[test]
fn baseline_counts_and_later_attributes_dying_before_start() {
    if !privileged("baseline_counts_and_later_attributes_dying_before_start") {
        return;
    }
    let _serial = serial();
    let h = Hierarchies::load().expect("hierarchies");
    let mem = h.with_controller("memory").expect("memory hierarchy");
    let (memory_id, mount) = (mem.id, mem.mount.clone().expect("memory mount"));
    let parent = TestParent::new("before", &[&mount]).expect("test parent");
    settle(&h);
    let kernel_before = kernel_dying(&h);
    const K: usize = 2;
    let scratch = scratch();
    let files: Vec<PathBuf> = (0..K).map(|i| scratch.join(format!("b{i}"))).collect();
    for (i, f) in files.iter().enumerate() {
        let dir = parent.dir(&mount).join(format!("z{i}"));
        fs::create_dir(&dir).expect("mkdir");
        charge_file(&dir, f, 2 << 20);
        rmdir_retry(&dir);
    }
    let k = poll_kernel_dying(&h, kernel_before + K as u64, Duration::from_secs(10));
    assert_eq!(k, kernel_before + K as u64);
    // Start now: the zombies exist already. The baseline must match the kernel's count taken
    // around it (retried if something else on the machine changed it meanwhile).
    let mut attempt = 0;
    let mut live = loop {
        attempt += 1;
        let k1 = kernel_dying(&h);
        let live = Live::start(&h, &parent, memory_id);
        let k2 = kernel_dying(&h);
        let dbs = live.pipe.tracker.totals().dying_before_start;
        if k1 == k2 || attempt == 5 {
            assert_eq!(dbs, k1, "baseline vs kernel ({k1} before, {k2} after)");
            assert!(dbs >= K as u64);
            break live;
        }
    };
    for f in &files {
        fs::remove_file(f).expect("remove file");
    }
    let done = drop_caches_until(
        || live.totals().freed_before_start == K as u64,
        Duration::from_secs(60),
    );
    assert!(
        done,
        "releases of the dying-before-start memcgs: {:?}",
        live.totals()
    );
    let t = live.totals();
    assert_eq!(t.dying, t.dying_before_start - K as u64);
    let _ = fs::remove_dir_all(&scratch);
}

/// Dying memcgs that existed before start are named (path, pod) by the start-up walk of the
/// memory controller's css tree, and their count matches the kernel's: the walk run by
/// `BPF_PROG_TEST_RUN` (no cgroupfs write; Linux 5.10+)...
#[test]
fn start_up_walk_names_dying_memcgs_of_pods() {
    if !privileged("start_up_walk_names_dying_memcgs_of_pods") {
        return;
    }
    let release = cgtrace::kernel::release();
    if cgtrace::kernel::KernelRelease::parse(&release).is_some_and(|k| !k.prog_test_run_raw_tp()) {
        eprintln!("kernel {release} has no BPF_PROG_TEST_RUN for raw tracepoints: skipped");
        return;
    }
    walk_names_dying_memcgs(Some(WalkMethod::TestRun));
}

/// ... and by the fallback, its raw tracepoint fired by mkdirs of trigger cgroups.
#[test]
fn start_up_walk_by_trigger_cgroups_names_dying_memcgs_of_pods() {
    if !privileged("start_up_walk_by_trigger_cgroups_names_dying_memcgs_of_pods") {
        return;
    }
    walk_names_dying_memcgs(Some(WalkMethod::TriggerCgroup));
}

/// A pod directory under a test parent of the memory hierarchy, for the walk's tests.
struct PodFixture {
    h: Hierarchies,
    memory_id: u32,
    mount: PathBuf,
    parent: TestParent,
    /// The pod's path below the parent.
    pod_rel: String,
}

impl PodFixture {
    fn new(tag: &str) -> PodFixture {
        let h = Hierarchies::load().expect("hierarchies");
        let mem = h.with_controller("memory").expect("memory hierarchy");
        let (memory_id, mount) = (mem.id, mem.mount.clone().expect("memory mount"));
        let parent = TestParent::new(tag, &[&mount]).expect("test parent");
        let pod_rel = format!("kubepods/besteffort/pod{UID}");
        fs::create_dir_all(parent.dir(&mount).join(&pod_rel)).expect("pod dir");
        settle(&h);
        PodFixture {
            h,
            memory_id,
            mount,
            parent,
            pod_rel,
        }
    }

    /// The container `n` of the pod: its directory and its path as cgtrace names it.
    fn container(&self, n: usize) -> (PathBuf, String) {
        let rel = format!("{}/{n:064x}", self.pod_rel);
        (
            self.parent.dir(&self.mount).join(&rel),
            format!("{}/{rel}", self.parent.cgroup_path()),
        )
    }

    fn live(&self) -> Live {
        Live::start(&self.h, &self.parent, self.memory_id)
    }
}

/// Runs the walk as `live` runs it (on its own thread and instance of the object) to its end:
/// its report and records.
fn walk_to_the_end(
    live: &Live,
    mount: &Path,
    method: Option<WalkMethod>,
) -> (cgtrace::probes::WalkReport, Vec<Vec<u8>>) {
    let mut task = live
        .probes
        .spawn_walk_by(mount, method)
        .expect("the walk runs on raw tracepoints");
    let mut records: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        if let Some(r) = task.poll(|b| records.push(b.to_vec())) {
            break r.expect("the walk ran");
        }
        assert!(Instant::now() < deadline, "the walk did not end");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(task.ended());
    (report, records)
}

fn walk_names_dying_memcgs(method: Option<WalkMethod>) {
    let _serial = serial();
    let f = PodFixture::new("walk");
    const K: usize = 3;
    let scratch = scratch();
    let files: Vec<PathBuf> = (0..K).map(|i| scratch.join(format!("w{i}"))).collect();
    let mut paths = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let (dir, path) = f.container(0xabc0 + i);
        fs::create_dir(&dir).expect("mkdir");
        charge_file(&dir, file, 2 << 20);
        rmdir_retry(&dir);
        paths.push(path);
    }
    let mut live = f.live();
    let h = &f.h;
    let k1 = kernel_dying(h);
    let (report, records) = walk_to_the_end(&live, &f.mount, method);
    let k2 = kernel_dying(h);
    assert!(report.done, "{report:?}");
    assert_eq!(Some(report.method), method, "{report:?}");
    // The walk sees every dying memcg of the machine (the filter only keeps ours): the same
    // number the kernel counts, when nothing changed meanwhile.
    if k1 == k2 {
        assert_eq!(u64::from(report.found), k1, "walk vs /proc/cgroups excess");
    }
    assert!(report.found as usize >= K);
    for r in &records {
        live.pipe.feed_raw(r);
    }
    live.pump();
    let named = live.pipe.tracker.dying_memcgs();
    for p in &paths {
        let d = named
            .iter()
            .find(|d| &d.path == p)
            .unwrap_or_else(|| panic!("{p} not named: {named:#?}"));
        assert!(d.before_start);
        assert_eq!(d.pod_uid.as_deref(), Some(UID));
        assert!(d.usage_bytes.is_some_and(|u| u >= 2 << 20), "{d:?}");
    }
    assert_eq!(
        live.pod().1,
        K as u64,
        "pod dying count includes the named ones"
    );
    for file in &files {
        fs::remove_file(file).expect("remove");
    }
    let freed = drop_caches_until(|| live.pod().2 == K as u64, Duration::from_secs(60));
    assert!(freed, "named memcgs freed: pod {:?}", live.pod());
    assert_eq!(live.totals().freed_before_start, K as u64);
}

/// The walk runs beside the events, and its instance sees the memcgs made after start too: a
/// container made, filled and removed while the walk runs is counted once, by its own events,
/// even when the walk's record of it is applied before them (the order two drains of one tick
/// can give); an empty container made and removed meanwhile leaves nothing dying.
#[test]
fn start_up_walk_beside_the_events_counts_each_memcg_once() {
    if !privileged("start_up_walk_beside_the_events_counts_each_memcg_once") {
        return;
    }
    let _serial = serial();
    let f = PodFixture::new("walk-beside");
    let scratch = scratch();
    let files: Vec<PathBuf> = (0..3).map(|i| scratch.join(format!("b{i}"))).collect();
    let pinned = |i: usize| f.container(0xbe50 + i);
    let pin = |i: usize| {
        let (dir, _) = pinned(i);
        fs::create_dir(&dir).expect("mkdir");
        charge_file(&dir, &files[i], 2 << 20);
        rmdir_retry(&dir);
    };
    // Two dying before start, for the walk to name.
    pin(0);
    pin(1);
    let mut live = f.live();
    // After start: one kept dying by its pages, one empty (freed at once).
    pin(2);
    let (empty, _) = f.container(0xe3e3);
    fs::create_dir(&empty).expect("mkdir");
    fs::remove_dir(&empty).expect("rmdir");
    let (report, records) = walk_to_the_end(&live, &f.mount, None);
    assert!(report.found >= 3, "{report:?}");
    // The walk's records first, then the events.
    for r in &records {
        live.pipe.feed_raw(r);
    }
    live.pipe.walk_ended();
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.pod().1 != 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        live.pod().1,
        3,
        "the pod's dying memcgs: the three the test pinned"
    );
    let named = live.pipe.tracker.dying_memcgs();
    for i in 0..3 {
        let (_, p) = pinned(i);
        let d = named
            .iter()
            .find(|d| d.path == p)
            .unwrap_or_else(|| panic!("{p} not named: {named:#?}"));
        assert_eq!(d.before_start, i < 2, "{d:?}");
    }
    for file in &files {
        fs::remove_file(file).expect("remove");
    }
    let freed = drop_caches_until(|| live.pod().2 == 4, Duration::from_secs(60));
    assert!(freed, "all freed: pod {:?}", live.pod());
    assert_eq!(live.pod().1, 0);
    assert_eq!(live.totals().freed_before_start, 2);
}

/// A minimal OCI bundle: busybox as the rootfs, the given command, a kubelet-style cgroupsPath.
fn runc_bundle(dir: &Path, cgroups_path: &str, script: &str) {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox (busybox-static)");
    let st = Command::new("runc")
        .arg("spec")
        .current_dir(dir)
        .status()
        .expect("runc spec (Debian's runc)");
    assert!(st.success());
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(&cfg_path).expect("config.json")).expect("json");
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/busybox", "sh", "-c", script]);
    cfg["root"]["readonly"] = false.into();
    cfg["linux"]["cgroupsPath"] = cgroups_path.into();
    fs::write(&cfg_path, serde_json::to_vec(&cfg).expect("json")).expect("write config");
}

#[test]
fn a_real_runtime_container_memcg_goes_dying_for_its_pod() {
    if !privileged("a_real_runtime_container_memcg_goes_dying_for_its_pod") {
        return;
    }
    let _serial = serial();
    let h = Hierarchies::load().expect("hierarchies");
    let mem = h.with_controller("memory").expect("memory hierarchy");
    let memory_id = mem.id;
    // runc makes the container's cgroup in every hierarchy: the test parent exists in each.
    let mounts: Vec<PathBuf> = h.by_id.values().filter_map(|x| x.mount.clone()).collect();
    let mount_refs: Vec<&Path> = mounts.iter().map(PathBuf::as_path).collect();
    let parent = TestParent::new("runc", &mount_refs).expect("test parent");
    let mut live = Live::start(&h, &parent, memory_id);

    let bundle = scratch().join("bundle");
    let ctr = "c0ffee0000000000000000000000000000000000000000000000000000000001";
    let cgroups_path = format!("{}/kubepods/burstable/pod{UID}/{ctr}", parent.cgroup_path());
    runc_bundle(
        &bundle,
        &cgroups_path,
        "/bin/busybox head -c 2097152 /dev/zero > /data && /bin/busybox sync",
    );
    let id = format!("cgtrace-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .expect("runc run");
    let _ = Command::new("runc")
        .args(["delete", "--force", &id])
        .status();
    assert!(
        out.status.success(),
        "runc run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The container's memcg was created and removed by runc, and is dying (its rootfs pages).
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.pod().1 < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, dying, _) = live.pod();
    assert_eq!(dying, 1, "the container memcg is dying for pod {UID}");
    let d = live.pipe.tracker.dying_memcgs();
    assert!(
        d.iter()
            .any(|d| d.path.ends_with(ctr) && d.pod_uid.as_deref() == Some(UID)),
        "{d:?}"
    );
    assert!(!live.pipe.tracker.pods(0).is_empty());
    // Clean up the pages so the memcg is freed.
    let _ = fs::remove_dir_all(&bundle);
    let freed = drop_caches_until(|| live.pod().2 >= 1, Duration::from_secs(60));
    assert!(
        freed,
        "runc container memcg not freed after dropping its pages"
    );
}

/// The start-up baseline lists exactly the cgroups a test made, with their ids (directory
/// inodes), levels and paths, in each hierarchy it walks (v1 memory, v2): leaves found by their
/// link count and inner cgroups listed alike.
#[test]
fn baseline_lists_every_cgroup_of_a_tree() {
    if !privileged("baseline_lists_every_cgroup_of_a_tree") {
        return;
    }
    let h = Hierarchies::load().expect("hierarchies");
    let mut mounts: Vec<(u32, PathBuf)> = Vec::new();
    if let Some(m) = h.with_controller("memory")
        && let Some(mount) = &m.mount
    {
        mounts.push((m.id, mount.clone()));
    }
    if let Some(v2) = h.get(0)
        && let Some(mount) = &v2.mount
        && !mounts.iter().any(|(id, _)| *id == 0)
    {
        mounts.push((0, mount.clone()));
    }
    assert!(!mounts.is_empty(), "no hierarchy to walk");
    let paths: Vec<&Path> = mounts.iter().map(|(_, m)| m.as_path()).collect();
    let parent = TestParent::new("baseline", &paths).expect("test parent");
    // Inner cgroups at several depths, leaves beside them, an empty inner level.
    let tree = [
        "a",
        "a/b",
        "a/b/c",
        "a/b/c/d",
        "a/leaf1",
        "e",
        "f",
        "f/g",
        "f/g/leaf2",
        "h h",
    ];
    let mut made = Vec::new();
    for (id, mount) in &mounts {
        for rel in tree {
            let ino = parent.mkdir(mount, rel).expect("mkdir");
            made.push((*id, ino, format!("{}/{rel}", parent.cgroup_path())));
        }
        made.push((
            *id,
            fs::metadata(parent.dir(mount)).expect("stat").ino(),
            parent.cgroup_path(),
        ));
    }
    let b = baseline::take(&h, 0);
    let prefix = parent.cgroup_path();
    let mut seen: Vec<(u32, u64, String)> = b
        .cgroups
        .iter()
        .map(|c| {
            (
                c.hierarchy_id,
                c.cgroup_id,
                String::from_utf8_lossy(&c.path).into_owned(),
            )
        })
        .filter(|(_, _, p)| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    for c in b
        .cgroups
        .iter()
        .filter(|c| c.path.starts_with(prefix.as_bytes()))
    {
        let depth = c.path.iter().filter(|&&b| b == b'/').count() as u32;
        assert_eq!(
            c.level,
            depth,
            "level of {:?}",
            String::from_utf8_lossy(&c.path)
        );
    }
    seen.sort();
    made.sort();
    assert_eq!(seen, made);
    // Pre-order: a parent comes before its children.
    let mut listed = std::collections::HashSet::new();
    for c in &b.cgroups {
        if let Some(cut) = c.path.iter().rposition(|&b| b == b'/')
            && cut > 0
        {
            assert!(
                listed.contains(&(c.hierarchy_id, &c.path[..cut])),
                "parent of {:?} listed after it",
                String::from_utf8_lossy(&c.path)
            );
        }
        listed.insert((c.hierarchy_id, &c.path[..]));
    }
}
