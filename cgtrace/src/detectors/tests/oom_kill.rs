//! The `oom_kill` detector: limit and node-wide OOM kills, joined with the crash loop.
use super::*;

// ---- oom_kill ------------------------------------------------------------------------------

fn oom(v: &Verdict) -> &OomKillEvidence {
    match &v.evidence {
        Evidence::OomKill(e) => e,
        e => panic!("not oom_kill evidence: {e:?}"),
    }
}

use crate::model::oom::{Comm, Constraint, OomKill, OomLimit, OomMm};

/// An `oom_kill` as the pipeline hands it over: the victim `pid`/`comm` in the memcg `id` at
/// `path`, with `limit` (cgroup id, path) at its limit, or node-wide.
fn oom_kill<'a>(
    k: &'a mut OomKill<'a>,
    ts: u64,
    id: u64,
    path: &'a [u8],
    pid: u32,
    comm: &'a [u8],
) -> Event<'a> {
    Event {
        pid,
        tid: pid,
        comm,
        oom: Some(k),
        ..mk(EventKind::OomKill, ts, MEM, id, path)
    }
}

fn limit_kill<'a>(limit: Option<(u64, &'a [u8])>, adj: i32, derived: bool) -> OomKill<'a> {
    OomKill {
        constraint: if limit.is_some() {
            Constraint::Memcg
        } else {
            Constraint::None
        },
        derived,
        limit: limit.map(|(cgroup_id, path)| OomLimit {
            cgroup_id,
            level: 5,
            usage_bytes: 32 << 20,
            limit_bytes: 32 << 20,
            memsw: false,
            path,
        }),
        oom_score_adj: Some(adj),
        mm: Some(OomMm {
            rss_anon_bytes: 30 << 20,
            ..OomMm::default()
        }),
        trigger_pid: Some(7),
        trigger_comm: Comm::new(b"java"),
        victim_task: true,
        ..OomKill::default()
    }
}

/// A pod whose container is OOM-killed at its limit, replaced, and killed again: `kills`
/// kills, one every 30 s, each container replaced 2 s after its kill.
fn oom_rig(kills: u64) -> (Rig, String) {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let pod = uid(7);
    let pod_path = format!("/kubepods/burstable/pod{pod}");
    rig.feed(&mk(EventKind::Mkdir, S, MEM, 10, pod_path.as_bytes()));
    rig.t.set_pod_name(&pod, "shop", "cart");
    for j in 0..kills {
        let path = format!("{pod_path}/{}", cid(j));
        let ts = 10 * S + j * 30 * S;
        rig.feed(&mk(EventKind::Mkdir, ts, MEM, 100 + j, path.as_bytes()));
        let mut k = limit_kill(Some((100 + j, path.as_bytes())), 900, true);
        let comm = b"java";
        rig.feed(&oom_kill(
            &mut k,
            ts + 20 * S,
            100 + j,
            path.as_bytes(),
            5000 + j as u32,
            comm,
        ));
        rig.feed(&mk(
            EventKind::Rmdir,
            ts + 21 * S,
            MEM,
            100 + j,
            path.as_bytes(),
        ));
    }
    // The last replacement.
    let path = format!("{pod_path}/{}", cid(kills));
    rig.feed(&mk(
        EventKind::Mkdir,
        10 * S + kills * 30 * S,
        MEM,
        100 + kills,
        path.as_bytes(),
    ));
    (rig, pod)
}

#[test]
fn one_limit_oom_kill_is_info_a_second_a_warning_with_restarts() {
    let (rig, pod) = oom_rig(1);
    let v = rig.find("oom_kill");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].severity, Severity::Info);
    assert_eq!(oom(&v[0]).count, 1);

    let (rig, pod2) = oom_rig(2);
    assert_eq!(pod, pod2);
    let v = rig.find("oom_kill");
    assert_eq!(v.len(), 1, "{v:?}");
    let e = oom(&v[0]);
    assert_eq!(v[0].severity, Severity::Warning);
    assert_eq!(e.count, 2);
    assert_eq!(e.constraint, Constraint::Memcg);
    assert_eq!(e.limit_scope, LimitScope::Container);
    assert_eq!(e.pod_uid.as_deref(), Some(pod.as_str()));
    assert_eq!(e.pod_name.as_deref(), Some("cart"));
    assert_eq!(e.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(e.qos, Some(crate::model::k8s::Qos::Burstable));
    // Containers made after the first kill: the one replacing it, the next.
    assert_eq!(e.restarts_after, Some(2));
    assert!(!e.crash_loop);
    assert_eq!(e.container_ids, vec![cid(1), cid(0)]);
    assert_eq!(e.victims.len(), 2);
    assert_eq!(e.victims[0].pid, 5001, "newest first");
    assert_eq!(e.victims[0].oom_score_adj, Some(900));
    assert_eq!(e.victims[0].kubelet_oom_score_adj, Some((3, 999)));
    assert_eq!(e.victims[0].rss_bytes, Some(30 << 20));
    assert_eq!(e.victims[0].trigger.as_deref(), Some("java[7]"));
    assert!(e.victims[0].derived);
    assert!(v[0].summary.contains("shop/cart"), "{}", v[0].summary);
    assert!(
        v[0].summary.contains("OOM-killed 2 times")
            && v[0]
                .summary
                .contains("the container's memory limit at 32.0 MiB of 32.0 MiB"),
        "{}",
        v[0].summary
    );
    assert!(v[0].recommendation.contains("raise the limit"));
    assert!(
        v[0].recommendation
            .contains("kubectl -n shop describe pod cart")
    );
    assert!(v[0].recommendation.contains("derived"));
    let text = render_verdict(&v[0]);
    assert!(text.starts_with("WARNING oom_kill: "), "{text}");
    assert!(text.contains("victims:"), "{text}");
}

#[test]
fn oom_kills_join_the_crash_loop() {
    // Kills every 30 s for 10 minutes: crash_loop fires, and each says so of the other.
    let (rig, pod) = oom_rig(12);
    let v = rig.find("oom_kill");
    let e = oom(&v[0]);
    assert!(e.crash_loop, "{e:?}");
    assert!(v[0].summary.contains("crash-looping"), "{}", v[0].summary);
    let c = rig.find("crash_loop");
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(crash(&c[0]).pod_uid, pod);
    assert_eq!(crash(&c[0]).oom_kills, 12);
    assert!(
        c[0].summary.contains("after 12 OOM kills"),
        "{}",
        c[0].summary
    );
}

#[test]
fn a_pod_limit_and_a_qos_limit_are_named() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let pod = format!("/kubepods/burstable/pod{}", uid(8));
    let ctr = format!("{pod}/{}", cid(8));
    rig.feed(&mk(EventKind::Mkdir, S, MEM, 10, b"/kubepods/burstable"));
    rig.feed(&mk(EventKind::Mkdir, S, MEM, 11, pod.as_bytes()));
    rig.feed(&mk(EventKind::Mkdir, S, MEM, 12, ctr.as_bytes()));
    let mut k = limit_kill(Some((11, pod.as_bytes())), 10, false);
    rig.feed(&oom_kill(&mut k, 2 * S, 12, ctr.as_bytes(), 40, b"node"));
    let v = rig.find("oom_kill");
    assert_eq!(oom(&v[0]).limit_scope, LimitScope::Pod);
    assert!(v[0].recommendation.contains("pod-level memory limit"));
    assert!(!v[0].recommendation.contains("derived"));
    let mut k = limit_kill(Some((10, b"/kubepods/burstable")), 10, false);
    rig.feed(&oom_kill(&mut k, 3 * S, 12, ctr.as_bytes(), 41, b"node"));
    let v = rig.find("oom_kill");
    assert_eq!(oom(&v[0]).count, 2);
    assert_eq!(oom(&v[0]).limit_scope, LimitScope::Qos);
    assert!(v[0].recommendation.contains("node allocatable"));
}

#[test]
fn node_wide_oom_explains_the_victim_choice() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let be = format!("/kubepods/besteffort/pod{}/{}", uid(1), cid(1));
    let g = format!("/kubepods/pod{}/{}", uid(2), cid(2));
    rig.feed(&mk(EventKind::Mkdir, S, MEM, 20, be.as_bytes()));
    rig.feed(&mk(EventKind::Mkdir, S, MEM, 21, g.as_bytes()));
    let mut k = limit_kill(None, 1000, true);
    rig.feed(&oom_kill(&mut k, 2 * S, 20, be.as_bytes(), 50, b"batch"));
    let v = rig.find("oom_kill");
    assert_eq!(v.len(), 1, "node-wide only: {v:?}");
    assert_eq!(v[0].severity, Severity::Warning);
    let e = oom(&v[0]);
    assert_eq!(e.constraint, Constraint::None);
    assert_eq!(e.limit_scope, LimitScope::None);
    assert_eq!(e.victims[0].qos, Some(crate::model::k8s::Qos::Besteffort));
    assert_eq!(e.victims[0].kubelet_oom_score_adj, Some((1000, 1000)));
    assert!(v[0].summary.contains("node-wide OOM"), "{}", v[0].summary);
    assert!(v[0].summary.contains("besteffort pod, oom_score_adj 1000"));
    assert!(v[0].recommendation.contains("-997 for Guaranteed"));
    assert!(!v[0].recommendation.contains("Not what kubelet sets"));
    // A Guaranteed container with an oom_score_adj kubelet would not give it: said so; a
    // second node-wide kill makes it critical.
    let mut k = limit_kill(None, 0, true);
    rig.feed(&oom_kill(&mut k, 3 * S, 21, g.as_bytes(), 51, b"db"));
    let v = rig.find("oom_kill");
    assert_eq!(v[0].severity, Severity::Critical);
    assert_eq!(oom(&v[0]).count, 2);
    assert!(
        v[0].recommendation
            .contains("db[51] has oom_score_adj 0, not the -997..-997 kubelet gives guaranteed"),
        "{}",
        v[0].recommendation
    );
}

#[test]
fn marked_exiting_victims_are_not_kills_and_verdicts_are_valid_json() {
    let mut rig = Rig::new("6.18.44-fc-v669", MEM);
    let evil = format!("/kubepods/burstable/pod{}/{}", uid(3), cid(3));
    rig.feed(&mk(EventKind::Mkdir, S, MEM, 30, evil.as_bytes()));
    let mut k = limit_kill(Some((30, evil.as_bytes())), 5, false);
    k.counted = Some(false);
    k.exiting = true;
    rig.feed(&oom_kill(
        &mut k,
        2 * S,
        30,
        evil.as_bytes(),
        60,
        b"ev\x1bil\n",
    ));
    assert!(rig.find("oom_kill").is_empty(), "a mark is no kill");
    let mut k = limit_kill(Some((30, evil.as_bytes())), 5, false);
    k.counted = Some(true);
    rig.feed(&oom_kill(
        &mut k,
        3 * S,
        30,
        evil.as_bytes(),
        61,
        b"ev\x1bil\n",
    ));
    let v = rig.find("oom_kill");
    assert_eq!(oom(&v[0]).count, 1);
    assert_eq!(oom(&v[0]).victims[0].kernel_counted, Some(true));
    let t = crate::model::oom::OomTracing {
        victim_task: true,
        context: true,
        kill_hook: true,
        context_off: None,
    };
    let s = rig.d.oom_summary(&t);
    assert_eq!((s.kills, s.marked_not_killed), (1, 1));
    let json = serde_json::to_string(&v[0]).unwrap_or_default();
    let back: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(back["evidence"]["victims"][0]["comm"], "ev\x1bil\n");
    let text = render_verdict(&v[0]);
    assert!(!text.contains('\x1b'), "{text}");
    assert!(
        !v[0].summary.chars().any(char::is_control),
        "{}",
        v[0].summary
    );
}
