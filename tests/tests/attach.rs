//! `cgtrace attach` end to end: Prometheus metrics scraped over HTTP during real churn grow by
//! exactly the cgroups the test made; /healthz; SIGHUP prints histograms; SIGTERM exits fast;
//! bad addresses and a port in use are one-line errors.
use std::{
    fs,
    io::Read,
    net::TcpListener,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use cgtrace::kernel::hierarchy::Hierarchies;
use integration_tests::{
    binary::{cgtrace_command, free_port, http_get, metric},
    cgroup::{TestParent, privileged},
};

fn spawn_attach(args: &[&str]) -> (Child, std::thread::JoinHandle<String>) {
    let mut full = vec!["attach"];
    full.extend_from_slice(args);
    let (mut child, _err) = integration_tests::binary::spawn_attached(&full, Stdio::piped());
    let mut out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    (child, reader)
}

#[test]
fn metrics_grow_by_exactly_the_cgroups_made_and_sigterm_is_fast() {
    if !privileged("metrics_grow_by_exactly_the_cgroups_made_and_sigterm_is_fast") {
        return;
    }
    let h = Hierarchies::load().expect("hierarchies");
    let mem = h.with_controller("memory").expect("memory hierarchy");
    let mount = mem.mount.clone().expect("memory mount");
    let parent = TestParent::new("attach", &[&mount]).expect("test parent");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (child, stdout) = spawn_attach(&[
        "--metrics",
        &addr,
        "--subtree",
        &parent.cgroup_path(),
        "--interval",
        "1h",
    ]);
    let live_count = "cgtrace_cgroup_live_seconds_count{hierarchy=\"memory\",qos=\"none\"}";
    let dying_count = "cgtrace_cgroup_dying_seconds_count{hierarchy=\"memory\",qos=\"none\"}";
    let (st, body) = http_get(port, "/metrics");
    assert_eq!(st, 200, "{body}");
    let live0 = metric(&body, live_count).unwrap_or(0.0);
    let mk0 = metric(&body, "cgtrace_events_total{event=\"mkdir\"}").unwrap_or(0.0);
    const N: usize = 25;
    for i in 0..N {
        fs::create_dir(parent.dir(&mount).join(format!("m{i}"))).expect("mkdir");
    }
    for i in 0..N {
        fs::remove_dir(parent.dir(&mount).join(format!("m{i}"))).expect("rmdir");
    }
    // Histograms grow per event; wait until the frees arrived too.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (_, body) = http_get(port, "/metrics");
        if metric(&body, dying_count).unwrap_or(0.0) >= N as f64 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric(&body, live_count).unwrap_or(0.0) - live0,
        N as f64,
        "{body}"
    );
    assert_eq!(metric(&body, dying_count), Some(N as f64), "{body}");
    assert_eq!(
        metric(&body, "cgtrace_events_total{event=\"mkdir\"}").unwrap_or(0.0) - mk0,
        N as f64
    );
    for name in [
        "cgtrace_lost_events_total",
        "cgtrace_cgroups{state=\"live\"}",
        "cgtrace_cgroups{state=\"dying\"}",
        "cgtrace_cgroups{state=\"freed\"}",
        "cgtrace_memcg_id_headroom",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    assert!(
        body.lines()
            .all(|l| l.starts_with('#') || l.starts_with("cgtrace_") || l.is_empty())
    );
    let (st, _) = http_get(port, "/healthz");
    assert_eq!(st, 200);
    let (st, _) = http_get(port, "/nope");
    assert_eq!(st, 404);

    // `doctor` on the node finds the running attach's programs by name, as bpftop does.
    let out = cgtrace_command()
        .args(["doctor", "--json"])
        .output()
        .expect("doctor");
    let doctor: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let loaded = doctor["bpf_cost"]["programs"].as_u64().unwrap_or(0);
    assert!(loaded >= 3, "the attach's programs: {}", doctor["bpf_cost"]);

    // SIGHUP prints the histograms now.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut child = child;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t0.elapsed();
    assert!(status.success(), "{status}");
    eprintln!("attach exited {took:?} after SIGTERM");
    let out = stdout.join().expect("stdout");
    assert!(
        out.contains("live time (mkdir → rmdir), memory: count 25"),
        "{out}"
    );
    assert!(
        out.contains("dying time (rmdir → freed), memory: count 25"),
        "{out}"
    );
}

#[test]
fn bad_metrics_addresses_and_a_busy_port_are_one_line_errors() {
    for bad in ["nonsense", "1.2.3.4.5:80", "localhost:99999", ":0"] {
        let out = cgtrace_command()
            .args(["attach", "--metrics", bad])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad}: {err}");
    }
    if !privileged("bad_metrics_addresses_and_a_busy_port_are_one_line_errors") {
        return;
    }
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let out = cgtrace_command()
        .args(["attach", "--metrics", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&port.to_string()) && err.lines().count() == 1,
        "{err}"
    );
    let out = cgtrace_command()
        .args([
            "attach",
            "--hdr-log",
            "/nonexistent-dir/x.hlog",
            "--duration",
            "1s",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("hdr-log"), "{err}");
}
