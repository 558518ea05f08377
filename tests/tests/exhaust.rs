//! Memcg ID exhaustion end to end, as an operator meets it: live memcgs under a test parent
//! until `mkdir` fails, then kubelet-style pod mkdirs (one by absolute path, as the kubelet and
//! runc do; one by a relative name from a working directory in cgroupfs, as `mkdir -p` does),
//! with `cgtrace live` started before the exhaustion and another started after it (the operator
//! who arrives when pods already fail), and `cgtrace check` beside them. Fills every memcg ID of
//! the machine while it runs: only where `CGTRACE_EXHAUST=1` says so (`cargo xtask vm-test
//! --exhaust`, and `cargo xtask test` once every other test has finished), one test at a time.
//! A plain `cargo test` neither builds nor runs it (`test = false` in `tests/Cargo.toml`): only
//! `cargo test -p integration-tests --test exhaust` does.
//!
//! Asserted against the kernel: the errno its facts predict, the number of IDs it hands out,
//! what the cgroup tracepoints show for the failed mkdir (no `cgroup_mkdir`, a `cgroup_release`
//! for the half-made cgroup). Asserted of cgtrace: both failed pod mkdirs as events (path, pod,
//! errno, hierarchy; the caller where the mode can know it), the critical verdict naming memcg ID
//! exhaustion, the headroom, nothing naming cgtrace's own cgroups, `check`'s exit code and text.
//! Prints `CGTRACE-VM-FACT exhaust ...` for vm-test's summary.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use std::{fs::File, process::Stdio};

use cgtrace::kernel::{hierarchy::Hierarchies, mkdir_errno::errno_name};
use integration_tests::{
    binary::{cgtrace_command, signal_and_wait, spawn_attached},
    exhaust::MemcgFill,
};
use serde_json::Value;

/// The errno a memcg mkdir fails with when IDs run out, per the kernel sources (see
/// `../shared/design.md`): ENOSPC ≤ 4.6, ENOMEM 4.7–5.6, ENOSPC 5.7–6.11 (`idr_alloc`), EBUSY
/// 6.12+ (`xa_alloc`). The test's oracle; #13 moves this into cgtrace's kernel facts.
fn predicted_errno(version: (u32, u32)) -> i32 {
    if version >= (6, 12) {
        libc::EBUSY
    } else if version >= (5, 7) {
        libc::ENOSPC
    } else if version >= (4, 7) {
        libc::ENOMEM
    } else {
        libc::ENOSPC
    }
}

/// Memcg IDs are 16 bits: 65,535 usable, or 65,534 on IDR builds with the exclusive end (fixed
/// in 5.18 and in later stable backports).
const ID_COUNTS: [u64; 2] = [65_534, 65_535];

/// The kernel's own view: the cgroup tracepoints recorded in the tracefs trace buffer.
struct KernelTrace {
    root: PathBuf,
}

const EVENTS: [&str; 3] = ["cgroup_mkdir", "cgroup_rmdir", "cgroup_release"];

impl KernelTrace {
    fn start() -> KernelTrace {
        let root = PathBuf::from("/sys/kernel/tracing");
        fs::write(root.join("trace"), "").expect("clear the trace buffer");
        for e in EVENTS {
            fs::write(root.join(format!("events/cgroup/{e}/enable")), "1")
                .expect("enable a cgroup tracepoint");
        }
        KernelTrace { root }
    }

    /// The trace lines that mention `name`.
    fn lines_with(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.root.join("trace"))
            .expect("read the trace buffer")
            .lines()
            .filter(|l| l.contains(name))
            .map(|l| l.trim().to_string())
            .collect()
    }
}

impl Drop for KernelTrace {
    fn drop(&mut self) {
        for e in EVENTS {
            let _ = fs::write(self.root.join(format!("events/cgroup/{e}/enable")), "0");
        }
    }
}

/// The memory hierarchy: v1 where the kernel has it (mounted first by the VM's init), else v2.
fn memory_hierarchy(h: &Hierarchies) -> (u32, PathBuf, bool) {
    if let Some(m) = h.with_controller("memory").filter(|m| m.id != 0)
        && let Some(mount) = &m.mount
    {
        return (m.id, mount.clone(), false);
    }
    let v2 = h
        .get(0)
        .and_then(|x| x.mount.clone())
        .expect("a cgroup v2 mount");
    (0, v2, true)
}

/// The kubelet's pod UIDs of the two pods that cannot start.
const POD_ABS: &str = "5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6";
const POD_REL: &str = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d";

/// A `cgtrace live --json` run writing to a file; its lines once stopped.
struct Live {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    out: PathBuf,
    name: &'static str,
}

impl Live {
    fn start(name: &'static str, dir: &Path, args: &[&str]) -> Live {
        let out = dir.join(format!(
            "cgtrace-exhaust-{name}-{}.jsonl",
            std::process::id()
        ));
        let file = File::create(&out).expect("create the output file");
        let mut all = vec!["live", "--json"];
        all.extend_from_slice(args);
        let (child, stderr) = spawn_attached(&all, Stdio::from(file));
        Live {
            child,
            stderr: Some(stderr),
            out,
            name,
        }
    }

    /// Stops it (SIGINT: the summary and verdicts are written) and parses its lines.
    fn stop(mut self) -> (Vec<Value>, String) {
        let status = signal_and_wait(&mut self.child, libc::SIGINT, Duration::from_secs(60));
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        assert!(status.success(), "{}: {status}: {stderr}", self.name);
        let text = fs::read_to_string(&self.out).expect("read the output");
        let _ = fs::remove_file(&self.out);
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", self.name)))
            .collect();
        (lines, stderr)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // After a panic: never leave a tracer running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn of_type<'a>(lines: &'a [Value], ty: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == ty).collect()
}

/// The failed-mkdir events naming this pod.
fn failures<'a>(lines: &'a [Value], pod: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "event" && l["event"] == "mkdir_failed" && l["pod_uid"] == pod)
        .collect()
}

/// CLOCK_MONOTONIC now, the events' clock.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn memcg_id_exhaustion_end_to_end() {
    integration_tests::exhaust::require_allowed();
    if !integration_tests::cgroup::privileged("memcg_id_exhaustion") {
        return;
    }
    let release = cgtrace::kernel::release();
    let version = cgtrace::kernel::KernelRelease::parse(&release)
        .expect("kernel version")
        .version();
    let want_errno = predicted_errno(version);
    let h = Hierarchies::load().expect("hierarchies");
    let (hid, mount, v2) = memory_hierarchy(&h);
    let mut fill = MemcgFill::new(&mount, v2).expect("make the fill's parent");
    // The QoS parent exists before the IDs run out, as the kubelet's does.
    let qos = fill.dir().join("kubepods/burstable");
    fs::create_dir_all(&qos).expect("make kubepods/burstable");
    if v2 {
        for d in [fill.dir().join("kubepods"), qos.clone()] {
            fs::write(d.join("cgroup.subtree_control"), "+memory").expect("+memory");
        }
    }
    let tmp = std::env::temp_dir();
    let parent_path = fill.cgroup_path();
    // Started before the exhaustion, tracing the syscalls too (the caller where it is known),
    // watching the pods' subtree: the fill's memcgs are filtered out in the kernel, so its ID
    // headroom comes from the kernel's counters.
    let pods_subtree = format!("{parent_path}/kubepods");
    let before = Live::start(
        "before",
        &tmp,
        &["--mkdir-failures", "syscall", "--subtree", &pods_subtree],
    );
    let result = fill.fill().expect("fill memcg IDs");
    eprintln!(
        "filled: {} memcgs in {:.1} s ({} before), then mkdir failed with {}",
        result.made,
        result.elapsed.as_secs_f64(),
        result.before,
        errno_name(result.errno)
    );
    // Started after it, in the default mode, filtered to the test's subtree: the operator who
    // arrives when pods already fail.
    let after = Live::start("after", &tmp, &["--subtree", &parent_path]);
    // Let both read the kernel's counters once more (once a second).
    std::thread::sleep(Duration::from_millis(1500));
    let trace = KernelTrace::start();

    // A kubelet-style pod mkdir by absolute path...
    let pod_abs = qos.join(format!("pod{POD_ABS}"));
    let t_abs = monotonic_ns();
    let err = fs::create_dir(&pod_abs).expect_err("the pod mkdir must fail");
    let errno = err.raw_os_error().expect("an errno");
    // ...and one by a relative name from a working directory in cgroupfs, as `mkdir -p` does.
    let t_rel = monotonic_ns();
    let rel = std::process::Command::new("mkdir")
        .args(["-p", &format!("pod{POD_REL}")])
        .current_dir(&qos)
        .output()
        .expect("run mkdir -p");
    let rel_stderr = String::from_utf8_lossy(&rel.stderr).trim().to_string();
    assert!(!rel.status.success(), "mkdir -p must fail");
    // The half-made cgroups' releases come from a kworker after an RCU grace period.
    std::thread::sleep(Duration::from_millis(1500));
    let check = cgtrace_command()
        .arg("check")
        .output()
        .expect("run cgtrace check");
    let check_text = String::from_utf8_lossy(&check.stdout).to_string();
    let check_json = cgtrace_command()
        .args(["check", "--json"])
        .output()
        .expect("run cgtrace check --json");
    let check_json: Value = serde_json::from_slice(&check_json.stdout).expect("check --json");
    let kernel_lines = trace.lines_with(POD_ABS);
    drop(trace);
    let (before, before_err) = before.stop();
    let (after, after_err) = after.stop();
    let removal = fill.remove_all();

    let pod_dir_rel = |pod: &str| format!("{parent_path}/kubepods/burstable/pod{pod}");
    let pod_rel_abs = qos.join(format!("pod{POD_REL}"));
    let abs_after = failures(&after, POD_ABS);
    let rel_after = failures(&after, POD_REL);
    let abs_before = failures(&before, POD_ABS);
    let rel_before = failures(&before, POD_REL);
    for l in abs_before
        .iter()
        .chain(&rel_before)
        .chain(&abs_after)
        .chain(&rel_after)
    {
        eprintln!("cgtrace: {l}");
    }
    for l in &kernel_lines {
        eprintln!("kernel trace: {l}");
    }
    eprintln!("mkdir -p: {rel_stderr}");
    eprintln!("check (exit {:?}): {check_text}", check.status.code());
    let delay_ms = |evs: &[&Value], t0: u64| {
        evs.first()
            .and_then(|e| e["ts_ns"].as_u64())
            .map_or("none".to_string(), |ts| {
                format!("{}", ts.saturating_sub(t0) / 1_000_000)
            })
    };
    println!(
        "CGTRACE-VM-FACT exhaust errno={} made={} before={} ids={} fill_s={:.1} remove_s={:.1} \
         tp_release={} cgtrace_abs={} cgtrace_rel={} release_ms={} headroom_after={}",
        errno_name(errno),
        result.made,
        result.before,
        result.ids(),
        result.elapsed.as_secs_f64(),
        removal.as_secs_f64(),
        kernel_lines
            .iter()
            .filter(|l| l.contains("cgroup_release:"))
            .count(),
        abs_after.len(),
        rel_after.len(),
        delay_ms(&abs_after, t_abs),
        of_type(&after, "summary")
            .first()
            .map_or(Value::Null, |s| s["id_headroom"].clone()),
    );

    // The kernel's facts.
    assert_eq!(
        errno,
        want_errno,
        "{release}: exhaustion gave {}",
        errno_name(errno)
    );
    assert_eq!(
        result.errno, errno,
        "the fill's failure and the pod's are the same"
    );
    assert!(
        ID_COUNTS.contains(&result.ids()),
        "{release}: {} memcg IDs handed out ({} made + {} before)",
        result.ids(),
        result.made,
        result.before
    );
    // What the tracepoints show for the failed mkdir: never announced, released when the
    // half-made cgroup is destroyed.
    assert!(
        !kernel_lines.iter().any(|l| l.contains("cgroup_mkdir:")),
        "{kernel_lines:#?}"
    );
    assert_eq!(
        kernel_lines
            .iter()
            .filter(|l| l.contains("cgroup_release:"))
            .count(),
        1,
        "{kernel_lines:#?}"
    );

    // Both cgtrace runs: each failed pod mkdir once, in the memory hierarchy, with its pod.
    let want_name = errno_name(want_errno);
    for (run, abs, relf) in [
        ("before", &abs_before, &rel_before),
        ("after", &abs_after, &rel_after),
    ] {
        assert_eq!(
            abs.len(),
            1,
            "{run}: the absolute-path pod mkdir once: {abs:#?}"
        );
        assert_eq!(relf.len(), 1, "{run}: the mkdir -p pod once: {relf:#?}");
        for e in abs.iter().chain(relf.iter()) {
            assert_eq!(e["hierarchy_id"], hid, "{run}: {e}");
            assert_eq!(e["error"], want_name.as_str(), "{run}: {e}");
            assert_eq!(e["qos"], "burstable", "{run}: {e}");
        }
    }
    // Where each failure is seen depends on the tier: the fentry/kprobe tiers see it at the
    // return of cgroupfs's cgroup_mkdir(), in the caller's context, with the kernel's errno, first
    // (the syscall exit and the release after it are the same failure); the tracepoint tier at
    // the half-made cgroup's release, with no caller and the errno inferred from no ID headroom,
    // or, with `--mkdir-failures syscall`, at the syscall exit for an absolute path.
    let tier = of_type(&after, "summary")[0]["tier"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let css_tier = tier != "tracepoint";
    for (run, abs, relf) in [
        ("before", &abs_before, &rel_before),
        ("after", &abs_after, &rel_after),
    ] {
        let (a, r) = (abs[0], relf[0]);
        if css_tier {
            for e in [a, r] {
                assert_eq!(e["seen_at"], "cgroup_mkdir", "{run} on {tier}: {e}");
                assert!(e.get("errno_inferred").is_none(), "{run}: {e}");
            }
            assert_eq!(a["path"], pod_dir_rel(POD_ABS).as_str(), "{run}: {a}");
            assert_eq!(a["pid"], std::process::id(), "{run}: {a}");
            assert_ne!(r["pid"], 0, "{run}: {r}");
            assert_eq!(r["comm"], "mkdir", "{run}: {r}");
        } else if run == "before" {
            // The syscall exit: the absolute path as given, and the relative one resolved in the
            // kernel from mkdir's working directory, made absolute.
            assert_eq!(a["path"], pod_abs.to_string_lossy().as_ref(), "{a}");
            assert_eq!(a["pid"], std::process::id(), "{a}");
            assert_eq!(r["path"], pod_rel_abs.to_string_lossy().as_ref(), "{r}");
            assert_ne!(r["pid"], 0, "{r}");
            assert_eq!(r["comm"], "mkdir", "{r}");
            for e in [a, r] {
                assert_eq!(e["seen_at"], "syscall", "{e}");
                assert!(e.get("errno_inferred").is_none(), "{e}");
            }
        } else {
            for e in [a, r] {
                assert_eq!(e["seen_at"], "release", "{run}: {e}");
                assert_eq!(e["pid"], 0, "{run}: {e}");
                assert_eq!(e["errno_inferred"], true, "{run}: {e}");
            }
            assert_eq!(a["path"], pod_dir_rel(POD_ABS).as_str(), "{a}");
        }
        if css_tier || run == "after" {
            assert_eq!(r["path"], pod_dir_rel(POD_REL).as_str(), "{run}: {r}");
        }
    }
    // Within a second of the mkdir (the release follows after an RCU grace period).
    for (evs, t0) in [(&abs_after, t_abs), (&rel_after, t_rel)] {
        let ts = evs[0]["ts_ns"].as_u64().expect("ts_ns");
        assert!(
            ts >= t0 && ts - t0 < 1_000_000_000,
            "{} ms after the mkdir",
            (ts - t0) / 1_000_000
        );
    }

    // The verdicts: memcg IDs exhausted, critical, naming both pods; the headroom.
    for (run, lines) in [("before", &before), ("after", &after)] {
        let verdicts = of_type(lines, "verdict");
        for v in &verdicts {
            eprintln!("{run} verdict: {v}");
        }
        let exhausted = verdicts
            .iter()
            .find(|v| {
                v["detector"] == "mkdir_failed" && v["evidence"]["cause"] == "memcg_ids_exhausted"
            })
            .unwrap_or_else(|| panic!("{run}: no memcg-IDs-exhausted verdict: {verdicts:#?}"));
        assert_eq!(exhausted["severity"], "critical", "{run}");
        assert!(
            exhausted["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("memcg IDs exhausted")),
            "{run}: {exhausted}"
        );
        let pods = exhausted["evidence"]["pod_uids"].to_string();
        assert!(
            pods.contains(POD_ABS) && pods.contains(POD_REL),
            "{run}: {pods}"
        );
        assert_eq!(
            exhausted["evidence"]["message"],
            cgtrace::kernel::mkdir_errno::errno_message(want_errno),
            "{run}: what the kubelet and runc log"
        );
        let headroom = verdicts
            .iter()
            .find(|v| v["detector"] == "id_headroom")
            .unwrap_or_else(|| panic!("{run}: no id_headroom verdict"));
        assert_eq!(headroom["severity"], "critical", "{run}: {headroom}");
        let summary = of_type(lines, "summary");
        let h = summary[0]["id_headroom"]
            .as_u64()
            .expect("id_headroom in the summary");
        assert!(
            h <= cgtrace::kernel::mkdir_errno::EXHAUSTED_HEADROOM,
            "{run}: headroom {h}"
        );
        // cgtrace's own cgroups are never the node's news.
        let own = lines
            .iter()
            .filter(|l| l.to_string().contains("cgtrace-walk"))
            .count();
        assert_eq!(own, 0, "{run}: cgtrace's own cgroups reported");
    }
    for (run, err) in [("before", &before_err), ("after", &after_err)] {
        assert!(!err.contains("cgtrace-walk"), "{run}: {err}");
    }

    // check, beside them: a problem (exit 1) naming this kernel's errno.
    assert_eq!(check.status.code(), Some(1), "{check_text}");
    assert!(check_text.contains(&want_name), "{check_text}");
    assert_eq!(
        check_json["id_exhaustion_errno"],
        want_name.as_str(),
        "{check_json}"
    );

    assert!(
        memory_hierarchy_is_usable(&mount),
        "the IDs came back after the fill was removed"
    );
}

/// A memcg can be made again (and is removed at once).
fn memory_hierarchy_is_usable(mount: &Path) -> bool {
    let probe = mount.join(format!("cgtrace-exhaust-after-{}", std::process::id()));
    let ok = fs::create_dir(&probe).is_ok();
    let _ = fs::remove_dir(&probe);
    ok
}
