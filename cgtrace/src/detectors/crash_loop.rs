//! `crash_loop`: a pod whose container cgroups are created over and over.
use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::{Ctx, DetectorConfig, Evidence, MAX_EXAMPLES, NS_PER_S, Severity, Verdict, ns};
use crate::{
    format::{escape::terminal, units::human_secs, units::round_millis},
    model::event::Event,
    model::k8s,
    model::tracker::{Observed, Tracker},
};

/// Most pods tracked.
const MAX_LOOP_PODS: usize = 2048;
/// Most verdicts in one list.
const MAX_CRASH_LOOP_VERDICTS: usize = 10;

/// What a `crash_loop` verdict rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CrashLoopEvidence {
    /// Container cgroups of the pod created within the window.
    pub count: u64,
    /// Seconds the window covers.
    pub window_s: f64,
    /// Container cgroups created after one of the pod's container cgroups was removed
    /// (restarts), within the window.
    pub restarts: u64,
    /// The pod.
    pub pod_uid: String,
    /// Its name, when known (`/var/log/pods`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Its namespace, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// Its QoS class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Container ids, most recent first (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_ids: Vec<String>,
    /// OOM kills of the pod within `oom_kill`'s window: the restarts' likely cause.
    #[serde(skip_serializing_if = "is_zero")]
    pub oom_kills: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Container cgroups of one pod.
#[derive(Clone, Debug, Default)]
struct PodLoop {
    created: VecDeque<u64>,
    restarts: VecDeque<u64>,
    /// Container cgroups removed and not yet replaced.
    pending_rm: u32,
    last_ns: u64,
    /// Most recent container ids, newest last.
    ids: VecDeque<Box<str>>,
}

/// A pod over the threshold, as found.
struct Looping {
    restarts: u64,
    created: u64,
    uid: String,
    pod: u32,
    /// More were created than the ring remembers.
    more: bool,
}

/// The detector's state: the container cgroups of each pod, by tracker pod number.
pub(super) struct CrashLoop {
    loops: HashMap<u32, PodLoop>,
    cap: usize,
}

impl CrashLoop {
    pub(super) fn new(cfg: &DetectorConfig) -> Self {
        CrashLoop {
            loops: HashMap::new(),
            cap: (cfg.crash_loop_min as usize)
                .saturating_mul(4)
                .clamp(64, 1024),
        }
    }

    pub(super) fn container_mkdir(&mut self, ev: &Event<'_>, obs: &Observed, cfg: &DetectorConfig) {
        let Some(pod) = obs.pod else { return };
        let Some(id) = container_leaf_id(ev.path) else {
            return; // a cgroup inside a container, not the container's own
        };
        let ts = ev.ts_ns;
        self.make_room_for_pod(ts, pod, cfg);
        let cap = self.cap;
        let l = self.loops.entry(pod).or_default();
        l.last_ns = l.last_ns.max(ts);
        push_capped(&mut l.created, ts, cap);
        if l.pending_rm > 0 {
            l.pending_rm -= 1;
            push_capped(&mut l.restarts, ts, cap);
        }
        if l.ids.len() >= MAX_EXAMPLES {
            l.ids.pop_front();
        }
        l.ids
            .push_back(String::from_utf8_lossy(id).to_ascii_lowercase().into());
    }

    pub(super) fn container_rmdir(&mut self, ev: &Event<'_>, obs: &Observed) {
        let Some(pod) = obs.pod else { return };
        if container_leaf_id(ev.path).is_none() {
            return;
        }
        if let Some(l) = self.loops.get_mut(&pod) {
            l.pending_rm = l.pending_rm.saturating_add(1);
            l.last_ns = l.last_ns.max(ev.ts_ns);
        }
    }

    /// The tracker forgot the pod (all its cgroups were freed): its number may name another
    /// pod from the next event on.
    pub(super) fn forget_pod(&mut self, pod: u32) {
        self.loops.remove(&pod);
    }

    /// How many pods are tracked.
    pub(super) fn pods_tracked(&self) -> usize {
        self.loops.len()
    }

    fn make_room_for_pod(&mut self, now: u64, pod: u32, cfg: &DetectorConfig) {
        if self.loops.len() < MAX_LOOP_PODS || self.loops.contains_key(&pod) {
            return;
        }
        let window = ns(cfg.crash_loop_window);
        self.loops
            .retain(|_, l| now.saturating_sub(l.last_ns) <= window);
        if self.loops.len() < MAX_LOOP_PODS {
            return;
        }
        if let Some((_, k)) = self.loops.iter().map(|(k, l)| (l.last_ns, *k)).min() {
            self.loops.remove(&k);
        }
    }

    /// Container cgroups the pod `pod` created after `since` (within the window), and whether
    /// the pod is over this detector's threshold.
    pub(super) fn restarts_after(&self, cx: &Ctx<'_>, pod: u32, since: u64) -> (u64, bool) {
        let Some(l) = self.loops.get(&pod) else {
            return (0, false);
        };
        let after = l
            .created
            .iter()
            .filter(|&&t| t > since && t <= cx.now)
            .count() as u64;
        let from = cx.now.saturating_sub(ns(cx.cfg.crash_loop_window));
        let min = u64::from(cx.cfg.crash_loop_min.max(1));
        let count =
            |q: &VecDeque<u64>| q.iter().filter(|&&t| t > from && t <= cx.now).count() as u64;
        (
            after,
            count(&l.created) >= min && count(&l.restarts) + 1 >= min,
        )
    }

    pub(super) fn verdicts(
        &self,
        cx: &Ctx<'_>,
        tracker: &Tracker,
        oom_kills: &dyn Fn(&str) -> u64,
    ) -> Vec<Verdict> {
        let window = ns(cx.cfg.crash_loop_window);
        let mut found = self.looping(cx, tracker);
        found.sort_by(|a, b| {
            b.restarts
                .cmp(&a.restarts)
                .then(b.created.cmp(&a.created))
                .then_with(|| a.uid.cmp(&b.uid))
        });
        let window_s = window as f64 / NS_PER_S;
        found
            .into_iter()
            .take(MAX_CRASH_LOOP_VERDICTS)
            .map(|l| {
                let kills = oom_kills(&l.uid);
                self.verdict(l, window_s, tracker, kills)
            })
            .collect()
    }

    /// The pods with enough container cgroups created, and replaced, within the window.
    fn looping(&self, cx: &Ctx<'_>, tracker: &Tracker) -> Vec<Looping> {
        let now = cx.now;
        let since = now.saturating_sub(ns(cx.cfg.crash_loop_window));
        let min = u64::from(cx.cfg.crash_loop_min.max(1));
        let in_window =
            |q: &VecDeque<u64>| q.iter().filter(|&&t| t > since && t <= now).count() as u64;
        let mut found = Vec::new();
        for (&pod, l) in &self.loops {
            let created = in_window(&l.created);
            let restarts = in_window(&l.restarts);
            if created >= min && restarts + 1 >= min {
                let uid = tracker
                    .pod(pod)
                    .map(|p| p.pod_uid.clone())
                    .unwrap_or_default();
                // The ring is full of creations within the window: there were more.
                let more =
                    l.created.len() >= self.cap && l.created.front().is_some_and(|&t| t > since);
                found.push(Looping {
                    restarts,
                    created,
                    uid,
                    pod,
                    more,
                });
            }
        }
        found
    }

    fn verdict(&self, l: Looping, window_s: f64, tracker: &Tracker, oom_kills: u64) -> Verdict {
        let Looping {
            restarts,
            created,
            uid,
            pod,
            more,
        } = l;
        let stats = tracker.pod(pod);
        let name = stats.and_then(|p| p.name.clone());
        let namespace = stats.and_then(|p| p.namespace.clone());
        let who = match (&namespace, &name) {
            (Some(ns), Some(n)) => format!("{}/{} ({uid})", terminal(ns), terminal(n)),
            _ => uid.clone(),
        };
        let ids: Vec<String> = self
            .loops
            .get(&pod)
            .map(|l| l.ids.iter().rev().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        let summary = format!(
            "pod {who} created {}{created} container cgroups in {} ({restarts} replacing \
             removed ones): its containers keep restarting{}",
            if more { "at least " } else { "" },
            human_secs(window_s),
            if oom_kills > 0 {
                format!(", after {oom_kills} OOM kills")
            } else {
                String::new()
            }
        );
        let mut recommendation = recommendation(&uid, namespace.as_deref(), name.as_deref());
        if oom_kills > 0 {
            recommendation.push_str(
                " Its containers were OOM-killed: see the oom_kill verdict for the limit hit.",
            );
        }
        Verdict {
            detector: "crash_loop",
            severity: Severity::Warning,
            summary,
            evidence: Evidence::CrashLoop(CrashLoopEvidence {
                count: created,
                window_s: round_millis(window_s),
                restarts,
                pod_uid: uid,
                pod_name: name,
                pod_namespace: namespace,
                qos: stats.and_then(|p| p.qos).map(|q| q.as_str().to_string()),
                container_ids: ids,
                oom_kills,
            }),
            recommendation,
        }
    }
}

fn recommendation(uid: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let kubectl = match (namespace, name) {
        (Some(ns), Some(n)) => {
            let (ns, n) = (terminal(ns), terminal(n));
            format!("`kubectl -n {ns} describe pod {n}` and `kubectl -n {ns} logs {n} --previous`")
        }
        _ => format!(
            "find the pod with `kubectl get pods -A -o \
             custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,UID:.metadata.uid \
             | grep {uid}`, then run `kubectl describe pod` and `kubectl logs --previous` on it"
        ),
    };
    format!(
        "Find out why the containers exit: {kubectl}; look for failing probes, OOM kills and bad \
         configuration. Every restart creates container cgroups in every hierarchy and removes \
         the old ones, which on kernels before 5.9 can leave a dying memcg behind each time."
    )
}

/// The container id a container cgroup's own leaf names (`<id>`, `<runtime>-<id>.scope`,
/// `<slice>:<runtime>:<id>`); `None` for cgroups inside a container (`<id>/init.scope`) and for
/// runtime monitors (`crio-conmon-<id>.scope`).
fn container_leaf_id(path: &[u8]) -> Option<&[u8]> {
    let leaf = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    };
    k8s::container_id(leaf)
}

fn push_capped(q: &mut VecDeque<u64>, v: u64, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(v);
}
