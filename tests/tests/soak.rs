//! Soak: 200,000 kubelet-like pod lifetimes (a pod cgroup and a container cgroup each, made,
//! removed and freed by the kernel) under `cgtrace attach`, which runs in a memory cgroup of its
//! own. Its memory is bounded by what exists, not by what existed: after a warm-up of 20,000
//! pods, neither its RSS nor the memory charged to its memcg (BPF maps and the ring are charged
//! there since 5.11) grows by 2 MiB or more.
//!
//! Why 2 MiB: after the warm-up every table has met its high mark (a few hundred pods are alive
//! or dying at once here) and the ring has been written through; what is left to move is
//! page-granular (allocator arenas, a histogram bucket array growing to a new magnitude) and
//! stays far below a megabyte. A leak of a dozen bytes per pod would be 180,000 × 12 B ≈ 2.1 MB:
//! the bound catches it (before pods were forgotten, cgtrace kept ~750 B per pod that ever
//! existed: +130 MB here).
//!
//! The figures are read when cgtrace has caught up: every rmdir and release of the stretch seen
//! (or counted lost) in its metrics, and one more periodic refresh run. No timing is asserted.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Layout,
    binary::{cgtrace_bin, free_port, http_get, metric, signal_and_wait, spawn_attached_command},
    cgroup::{TestParent, privileged},
    pods,
};

const CYCLES: u64 = 200_000;
const WARMUP: u64 = 20_000;
const BOUND: u64 = 2 << 20;
/// Pod creators at once (2 CPUs here; cgtrace needs one too).
const CREATORS: u64 = 2;
/// How long cgtrace may take to catch up with one stretch (a debug build, on a loaded machine).
const CATCH_UP: Duration = Duration::from_secs(300);
/// Pods made between two waits for cgtrace (12,000 events: far less than its ring holds).
const STEP: u64 = 2_000;

/// Kills cgtrace if the test fails before it stops it (its cgroup can then be removed).
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Events of `kind` seen plus those lost.
fn seen_or_lost(body: &str, kind: &str) -> u64 {
    let seen = metric(body, &format!("cgtrace_events_total{{event=\"{kind}\"}}"));
    let lost = metric(
        body,
        &format!("cgtrace_lost_events_total{{event=\"{kind}\"}}"),
    );
    (seen.unwrap_or(0.0) + lost.unwrap_or(0.0)) as u64
}

/// Events lost, all kinds.
fn lost(body: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with("cgtrace_lost_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until cgtrace counted `rmdirs` rmdirs and `releases` releases (seen or lost).
fn catch_up(port: u16, rmdirs: u64, releases: u64) {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let (_, body) = http_get(port, "/metrics");
        let (rm, rel) = (seen_or_lost(&body, "rmdir"), seen_or_lost(&body, "release"));
        if rm >= rmdirs && rel >= releases {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cgtrace counted {rm} of {rmdirs} rmdirs and {rel} of {releases} releases within {CATCH_UP:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_memory_stays_flat_through_200k_pods() {
    if !privileged("attach_memory_stays_flat_through_200k_pods") {
        return;
    }
    let started = Instant::now();
    let layout = Layout::load();
    let mount = layout.memory_mount.as_path();
    let v2 = pods::is_v2(mount);
    let parent = TestParent::new("soak", &[mount]).expect("test parent");
    let dir = parent.dir(mount);
    if v2 {
        std::fs::write(dir.join("cgroup.subtree_control"), "+memory").expect("+memory");
    }
    let own = dir.join("cgtrace");
    std::fs::create_dir(&own).expect("cgtrace's memcg");
    let root = dir.join("kubepods/burstable");
    for d in [dir.join("kubepods"), root.clone()] {
        pods::make_memcg_parent(&d, v2).expect("kubepods");
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let subtree = parent.cgroup_path();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(pods::exec_in_cgroup_script(&own))
        .arg(cgtrace_bin())
        .args([
            "attach",
            "--subtree",
            &subtree,
            "--metrics",
            &addr,
            "--interval",
            "1h",
        ]);
    let (child, stderr) = spawn_attached_command(&mut cmd, Stdio::null());
    let pid = child.id();
    let mut running = Running(Some(child));
    let (_, body) = http_get(port, "/metrics");
    let (rm0, rel0) = (seen_or_lost(&body, "rmdir"), seen_or_lost(&body, "release"));
    let usage = own.join(pods::usage_file(mount));
    let figures = || {
        (
            pods::rss(pid).expect("cgtrace's RSS"),
            pods::read_u64(&usage).expect("cgtrace's memcg usage"),
        )
    };
    let creators = pods::Creators::new(root.clone(), CREATORS, v2);
    let mut curve: Vec<(u64, u64, u64)> = Vec::new();
    let mut from = 0;
    for to in [WARMUP, 65_000, 110_000, 155_000, CYCLES] {
        creators
            .paced(from, to, STEP, |n| {
                catch_up(port, rm0 + 2 * n, 0);
                Ok(())
            })
            .expect("pod churn");
        from = to;
        catch_up(port, rm0 + 2 * to, rel0 + 2 * to);
        // The metrics (tracker → gauges, verdicts) refresh once a second: once more.
        std::thread::sleep(Duration::from_millis(1100));
        let (rss, cg) = figures();
        let (_, body) = http_get(port, "/metrics");
        let gauge = |s: &str| metric(&body, s).unwrap_or(-1.0);
        eprintln!(
            "soak: {to} pods after {:.0} s: RSS {:.2} MiB, memcg {:.2} MiB; memcgs live {}, dying {}; lost {}",
            started.elapsed().as_secs_f64(),
            rss as f64 / 1048576.0,
            cg as f64 / 1048576.0,
            gauge("cgtrace_cgroups{state=\"live\"}"),
            gauge("cgtrace_cgroups{state=\"dying\"}"),
            lost(&body),
        );
        curve.push((to, rss, cg));
        assert_eq!(
            lost(&body),
            0,
            "events lost: the figures would not be of whole pods"
        );
    }
    let mut child = running.0.take().expect("cgtrace running");
    let status = signal_and_wait(&mut child, libc::SIGTERM, Duration::from_secs(30));
    let err = stderr.join().unwrap_or_default();
    assert!(status.success(), "cgtrace attach: {status}: {err}");
    let (_, rss0, cg0) = curve[0];
    for &(n, rss, cg) in &curve[1..] {
        assert!(
            rss < rss0 + BOUND,
            "RSS grew by {} B from {WARMUP} to {n} pods (bound {BOUND}): {curve:?}",
            rss - rss0
        );
        assert!(
            cg < cg0 + BOUND,
            "cgtrace's memcg grew by {} B from {WARMUP} to {n} pods (bound {BOUND}): {curve:?}",
            cg - cg0
        );
    }
    drop(parent);
}
