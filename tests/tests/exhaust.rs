//! Memcg ID exhaustion end to end, in a VM only (`cargo xtask vm-test --exhaust`, which boots
//! each kernel of the matrix with 3 GiB and sets `CGTRACE_EXHAUST=1`): live memcgs under a test
//! parent until `mkdir` fails, then a pod-style `mkdir` with cgtrace's programs attached and the
//! kernel's own trace buffer on the cgroup tracepoints.
//!
//! Asserted against the kernel: the errno its facts predict, the number of IDs it hands out,
//! what the cgroup tracepoints show for the failed mkdir (no `cgroup_mkdir`, a `cgroup_release`
//! for the half-made cgroup), cgtrace's `mkdir_failed` event. Prints one `CGTRACE-VM-FACT
//! exhaust ...` line for vm-test's summary. Hook assertions on cgtrace's output (#13) in here.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use cgtrace::model::event::Event;
use cgtrace::{
    kernel::hierarchy::Hierarchies,
    model::event::errno_name,
    probes::{ProbeOptions, Probes, SubtreeFilter},
};
use cgtrace_common::EventKind;
use integration_tests::{Records, collect_until, exhaust::MemcgFill, path_str, tier_from_env};

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

#[test]
#[ignore = "fills every memcg ID of the machine: runs only in `cargo xtask vm-test --exhaust`"]
fn memcg_id_exhaustion_fails_mkdir_with_the_kernels_errno() {
    integration_tests::exhaust::require_allowed();
    if !integration_tests::cgroup::privileged("memcg_id_exhaustion") {
        return;
    }
    let release = cgtrace::kernel::release();
    let version = cgtrace::kernel::KernelRelease::parse(&release)
        .expect("kernel version")
        .version();
    let h = Hierarchies::load().expect("hierarchies");
    let (hid, mount, v2) = memory_hierarchy(&h);
    let mut fill = MemcgFill::new(&mount, v2).expect("make the fill's parent");
    let result = fill.fill().expect("fill memcg IDs");
    eprintln!(
        "filled: {} memcgs in {:.1} s ({} before), then mkdir failed with {}",
        result.made,
        result.elapsed.as_secs_f64(),
        result.before,
        errno_name(result.errno)
    );

    // cgtrace attached after the fill (the operator arrives when pods already fail).
    let subtree = SubtreeFilter::resolve(&h, &fill.cgroup_path()).expect("resolve the parent");
    let mut probes = Probes::load(&ProbeOptions {
        tier: tier_from_env(),
        hierarchies: Some(vec![hid]),
        subtree: Some(subtree),
        ..ProbeOptions::default()
    })
    .expect("load and attach with memcg IDs exhausted");
    let trace = KernelTrace::start();

    // A kubelet-style pod mkdir by absolute path.
    let pod = "kubepods-burstable-pod5f0c6e1a";
    let pod_dir = fill.dir().join(pod);
    let t0 = Instant::now();
    let err = fs::create_dir(&pod_dir).expect_err("the pod mkdir must fail");
    let errno = err.raw_os_error().expect("an errno");
    let want_path = format!("{}/{pod}", fill.cgroup_path());
    let mut recs = Records::default();
    let released = collect_until(&mut probes, &mut recs, Duration::from_secs(10), |s| {
        s.iter()
            .any(|e| e.kind == EventKind::Release && path_str(e) == want_path)
    });
    let seen = recs.events();
    let release_after = t0.elapsed();
    let of_pod: Vec<&Event<'_>> = seen
        .iter()
        .filter(|e| path_str(e) == want_path || e.path == pod_dir.as_os_str().as_encoded_bytes())
        .collect();
    let kernel_lines = trace.lines_with(pod);
    drop(trace);
    let release_ev = of_pod.iter().find(|e| e.kind == EventKind::Release);
    let failed_ev = of_pod.iter().find(|e| e.kind == EventKind::MkdirFailed);
    let mkdir_ev = of_pod.iter().any(|e| e.kind == EventKind::Mkdir);
    for e in &of_pod {
        eprintln!("cgtrace saw: {e:?}");
    }
    for l in &kernel_lines {
        eprintln!("kernel trace: {l}");
    }
    let kernel_release_lines = kernel_lines
        .iter()
        .filter(|l| l.contains("cgroup_release:"))
        .count();
    let kernel_mkdir_lines = kernel_lines
        .iter()
        .filter(|l| l.contains("cgroup_mkdir:"))
        .count();
    let removal = fill.remove_all();
    println!(
        "CGTRACE-VM-FACT exhaust errno={} made={} before={} ids={} fill_s={:.1} remove_s={:.1} \
         tp_mkdir={kernel_mkdir_lines} tp_release={kernel_release_lines} cgtrace_release={} \
         cgtrace_mkdir_failed={} release_ms={} tier={}",
        errno_name(errno),
        result.made,
        result.before,
        result.ids(),
        result.elapsed.as_secs_f64(),
        removal.as_secs_f64(),
        release_ev.map_or("none".to_string(), |e| format!(
            "{}[{}]",
            String::from_utf8_lossy(e.comm),
            e.pid
        )),
        failed_ev.map_or("none".to_string(), |e| format!(
            "{}@{}",
            e.errno.map_or("?".to_string(), errno_name),
            e.pid
        )),
        if released {
            release_after.as_millis().to_string()
        } else {
            "none".to_string()
        },
        probes.tier.name(),
    );

    // The kernel's facts.
    assert_eq!(
        errno,
        predicted_errno(version),
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
    assert_eq!(kernel_mkdir_lines, 0, "{kernel_lines:#?}");
    assert_eq!(kernel_release_lines, 1, "{kernel_lines:#?}");
    assert!(!mkdir_ev, "cgtrace reported a mkdir: {of_pod:#?}");
    assert!(released, "no release event from cgtrace: {seen:#?}");
    let failed = failed_ev.expect("cgtrace's mkdir_failed event");
    assert_eq!(failed.errno, Some(errno));
    assert_eq!(failed.pid, std::process::id());
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
