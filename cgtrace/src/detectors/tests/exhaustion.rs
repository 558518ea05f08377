//! Memcg ID exhaustion at no headroom, and detector tables that return to the baseline once pods are forgotten.
use super::*;

/// The node's memcgs hold every ID (65,535 live, as the baseline walk found them), then a pod's
/// mkdir fails with this kernel's exhaustion errno.
fn exhausted_rig(release: &str) -> Rig {
    let mut rig = Rig::new(release, MEM);
    let mut base = crate::model::baseline::Baseline::default();
    for i in 0..MEMCG_ID_MAX {
        base.cgroups.push(crate::model::baseline::BaselineCgroup {
            hierarchy_id: MEM,
            cgroup_id: 1000 + i,
            level: 2,
            path: format!("/fill/{i}").into_bytes(),
        });
    }
    rig.t.load_baseline(&base);
    rig
}

#[test]
fn mkdir_failed_at_no_headroom_is_memcg_id_exhaustion() {
    for (release, errno, name) in [
        ("6.18.44-fc-v669", 16, "EBUSY"),
        ("6.1.0-57-cloud-amd64", 28, "ENOSPC"),
    ] {
        let mut rig = exhausted_rig(release);
        let path = format!("/kubepods/burstable/pod{}", uid(7));
        let mut e = mk(EventKind::MkdirFailed, 42 * S, MEM, 0, path.as_bytes());
        e.has_cgroup = false;
        e.errno = Some(errno);
        e.comm = b"kubelet";
        rig.feed(&e);
        let v = rig.find("mkdir_failed");
        assert_eq!(v.len(), 1, "{v:?}");
        let m = mkdir(&v[0]);
        assert_eq!(v[0].severity, Severity::Critical, "{release}");
        assert_eq!(
            m.cause,
            crate::kernel::mkdir_errno::MkdirCause::MemcgIdsExhausted
        );
        assert_eq!(m.errno_name, name);
        assert_eq!(m.id_headroom, Some(0));
        assert_eq!(m.live_memcgs, Some(MEMCG_ID_MAX));
        assert_eq!(m.pod_uid, Some(uid(7)));
        assert!(
            v[0].summary.starts_with("memcg IDs exhausted") && v[0].summary.contains("kubelet"),
            "{}",
            v[0].summary
        );
        assert!(
            v[0].recommendation
                .contains(crate::kernel::mkdir_errno::errno_message(errno)),
            "{}",
            v[0].recommendation
        );
        // The same errno outside the memory hierarchy is no ID exhaustion.
        let mut rig = exhausted_rig(release);
        let mut e = mk(EventKind::MkdirFailed, 42 * S, MEM + 1, 0, path.as_bytes());
        e.has_cgroup = false;
        e.errno = Some(errno);
        rig.feed(&e);
        let v = rig.find("mkdir_failed");
        assert_ne!(
            mkdir(&v[0]).cause,
            crate::kernel::mkdir_errno::MkdirCause::MemcgIdsExhausted
        );
    }
}

/// Pod `n` (uid(n)) restarting its container `restarts` times, then removed; everything freed
/// a second later. Returns the time after it.
fn crash_looping_pod(rig: &mut Rig, n: u64, restarts: u64, t0: u64) -> u64 {
    let pod = format!("/kubepods/burstable/pod{}", uid(n));
    let pod_id = 1_000_000 + n * 100;
    rig.feed(&mk(EventKind::Mkdir, t0, MEM, pod_id, pod.as_bytes()));
    let mut ts = t0;
    let mut ctrs = Vec::new();
    for j in 0..restarts {
        let c = format!("{pod}/{}", cid(n * 100 + j));
        let id = pod_id + 1 + j;
        rig.feed(&mk(EventKind::Mkdir, ts + MS, MEM, id, c.as_bytes()));
        rig.feed(&mk(EventKind::Rmdir, ts + 2 * MS, MEM, id, c.as_bytes()));
        ctrs.push((id, c));
        ts += 3 * MS;
    }
    // A failed mkdir of the pod's next container (a full memcg ID space, say).
    let at = format!("/sys/fs/cgroup/memory{pod}/{}", cid(n * 100 + 99));
    let mut failed = mk(EventKind::MkdirFailed, ts, 0, 0, at.as_bytes());
    failed.errno = Some(-28);
    failed.has_cgroup = false;
    rig.feed(&failed);
    rig.feed(&mk(EventKind::Rmdir, ts + MS, MEM, pod_id, pod.as_bytes()));
    for (id, c) in &ctrs {
        rig.feed(&mk(EventKind::Release, ts + S, MEM, *id, c.as_bytes()));
    }
    rig.feed(&mk(
        EventKind::Release,
        ts + S + MS,
        MEM,
        pod_id,
        pod.as_bytes(),
    ));
    ts + S + 2 * MS
}

#[test]
fn detector_tables_return_to_the_baseline_after_many_pods() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let mut ts = S;
    for n in 0..100u64 {
        ts = crash_looping_pod(&mut rig, n, 6, ts);
    }
    let baseline = rig.d.footprint();
    assert_eq!(baseline.crash_loop_pods, 0, "forgotten with their pods");
    assert!(
        baseline.churn_shapes > 0 && baseline.mkdir_errnos == 1,
        "{baseline:?}"
    );
    let tracker = rig.t.footprint();
    for n in 100..3_000u64 {
        ts = crash_looping_pod(&mut rig, n, 6, ts);
    }
    assert_eq!(rig.d.footprint(), baseline);
    assert_eq!(rig.t.footprint(), tracker);
}

#[test]
fn a_forgotten_pods_crash_loop_is_not_passed_on_to_the_next_pod_in_its_slot() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let ts = crash_looping_pod(&mut rig, 1, 8, S);
    assert!(
        rig.find("crash_loop").is_empty(),
        "pod 1 is gone: {:?}",
        rig.verdicts()
    );
    // Pod 2 takes pod 1's slot and restarts twice: no crash loop of its own.
    let pod = format!("/kubepods/burstable/pod{}", uid(2));
    let o = rig
        .t
        .observe(&mk(EventKind::Mkdir, ts, MEM, 7, pod.as_bytes()));
    assert_eq!(o.new_pod, Some(0), "the slot is reused");
    rig.d.observe(
        &mk(EventKind::Mkdir, ts, MEM, 7, pod.as_bytes()),
        &o,
        &rig.t,
    );
    for j in 0..2u64 {
        let c = format!("{pod}/{}", cid(500 + j));
        rig.feed(&mk(
            EventKind::Mkdir,
            ts + (2 * j + 1) * MS,
            MEM,
            8 + j,
            c.as_bytes(),
        ));
        rig.feed(&mk(
            EventKind::Rmdir,
            ts + (2 * j + 2) * MS,
            MEM,
            8 + j,
            c.as_bytes(),
        ));
    }
    assert!(rig.find("crash_loop").is_empty(), "{:?}", rig.verdicts());
    assert_eq!(rig.d.footprint().crash_loop_pods, 1);
}
