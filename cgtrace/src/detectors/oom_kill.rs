//! `oom_kill`: containers and pods OOM-killed by a memory limit (repeatedly: a warning, with the
//! container restarts that followed, joined with `crash_loop`'s evidence), and node-wide OOMs,
//! where the kernel chose the victim by `oom_score` and kubelet's `oom_score_adj` decided who
//! died.
use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::{Ctx, Evidence, MAX_EXAMPLES, NS_PER_S, Severity, Verdict, age_s, ns};
use crate::{
    format::{
        escape::terminal,
        units::{human_bytes, human_secs, round_millis, total_and_parts},
    },
    model::{
        event::Event,
        k8s::{self, Qos},
        oom::{Constraint, OomKill, OomTracing, kubelet_oom_score_adj},
        tracker::{Observed, Tracker},
    },
};

/// Most groups (pods, or other cgroups) tracked; the least recently killed go first.
const MAX_GROUPS: usize = 1024;
/// Most kills remembered per group, and node-wide.
const MAX_KILLS: usize = 64;
/// Most verdicts in one list.
const MAX_VERDICTS: usize = 10;

/// Which memcg hit its limit, as its path says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// A container's memcg (`resources.limits.memory`).
    Container,
    /// A pod's memcg (the sum of its containers' limits, plus pod overhead).
    Pod,
    /// A QoS class's parent (`kubepods/burstable`, `kubepods/besteffort`).
    Qos,
    /// `kubepods` itself: node allocatable.
    Kubepods,
    /// Another cgroup (a systemd service, a non-Kubernetes container).
    #[default]
    Other,
    /// No memcg at its limit (not a memcg OOM).
    None,
}

impl LimitScope {
    /// The scope of the memcg at `path`.
    pub fn of_path(path: &[u8]) -> LimitScope {
        LimitScope::of(Some(path))
    }

    fn of(limit_path: Option<&[u8]>) -> LimitScope {
        let Some(p) = limit_path else {
            return LimitScope::None;
        };
        if let Some(m) = k8s::match_path(p) {
            return if m.container.is_some() {
                LimitScope::Container
            } else {
                LimitScope::Pod
            };
        }
        let leaf = p.rsplit(|&c| c == b'/').next().unwrap_or(p);
        if k8s::qos_level(leaf).is_some() {
            LimitScope::Qos
        } else if k8s::is_kubepods(leaf) {
            LimitScope::Kubepods
        } else {
            LimitScope::Other
        }
    }

    fn describe(self) -> &'static str {
        match self {
            LimitScope::Container => "the container's memory limit",
            LimitScope::Pod => "the pod's memory limit",
            LimitScope::Qos => "the memory limit of the pod's QoS class cgroup",
            LimitScope::Kubepods => "the memory limit of kubepods (node allocatable)",
            LimitScope::Other => "a cgroup memory limit",
            LimitScope::None => "no cgroup limit",
        }
    }
}

/// One OOM kill, as the verdicts show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomVictim {
    /// Seconds before the judgement.
    pub age_s: f64,
    pub pid: u32,
    pub comm: String,
    /// The victim's memcg.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<Qos>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// What kubelet gives a container of this QoS class: `[low, high]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubelet_oom_score_adj: Option<(i32, i32)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    pub constraint: Constraint,
    pub limit_scope: LimitScope,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// The v1 memory+swap limit was the one hit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub memsw: bool,
    /// Constraint and limit were derived (tracepoint tier).
    pub derived: bool,
    /// Whether the kernel counted it as a kill (where the tier can tell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_counted: Option<bool>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exiting: bool,
    /// Which process's allocation ran into the OOM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(skip)]
    ts: u64,
}

/// What an `oom_kill` verdict rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomKillEvidence {
    /// OOM kills within the window.
    pub count: u64,
    /// Seconds the window covers.
    pub window_s: f64,
    /// `memcg`, or `none` for the node-wide verdict.
    pub constraint: Constraint,
    /// The pod, when the kills are of one pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<Qos>,
    /// The cgroup, when the kills are of a cgroup that is no pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Which limit the latest kill hit.
    pub limit_scope: LimitScope,
    /// Container ids killed, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_ids: Vec<String>,
    /// Container cgroups of the pod created after its first kill in the window (restarts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts_after: Option<u64>,
    /// `crash_loop` flags the pod too.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub crash_loop: bool,
    /// The kills, newest first (at most 5).
    pub victims: Vec<OomVictim>,
    /// How exact `count` is on this run's probes.
    pub count_exactness: &'static str,
}

/// The run's OOM kills, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomSummary {
    /// `oom_kill` events that count as kills (all, where the tier cannot tell).
    pub kills: u64,
    /// Of them, by constraint.
    pub by_constraint: BTreeMap<&'static str, u64>,
    /// Victims the kernel marked without killing (already exiting), where the tier tells.
    pub marked_not_killed: u64,
    /// How exact `kills` is.
    pub count_exactness: &'static str,
}

impl OomSummary {
    /// `N (memcg 2, none 1)`: the kills and, if any, how they were constrained.
    pub fn kills_text(&self) -> String {
        let by = self.by_constraint.iter().map(|(c, n)| format!("{c} {n}"));
        total_and_parts(self.kills, by)
    }
}

/// What a group is: a pod (by UID), or another cgroup (by path).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum GroupKey {
    Pod(Box<str>),
    Cgroup(Box<str>),
}

#[derive(Clone, Debug, Default)]
struct Group {
    kills: VecDeque<OomVictim>,
    last_ns: u64,
    /// The tracker's pod number at the latest kill.
    pod: Option<u32>,
}

/// The detector's state.
pub(super) struct OomKills {
    groups: HashMap<GroupKey, Group>,
    node_wide: VecDeque<OomVictim>,
    kills: u64,
    by_constraint: [u64; 5],
    not_killed: u64,
}

fn constraint_slot(c: Constraint) -> usize {
    Constraint::ALL.iter().position(|&x| x == c).unwrap_or(0)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn push_capped<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() >= MAX_KILLS {
        q.pop_front();
    }
    q.push_back(v);
}

impl OomKills {
    pub(super) fn new() -> Self {
        OomKills {
            groups: HashMap::new(),
            node_wide: VecDeque::new(),
            kills: 0,
            by_constraint: [0; 5],
            not_killed: 0,
        }
    }

    /// An `oom_kill` event, after the tracker saw it (`obs`: the victim memcg's pod).
    pub(super) fn observe(&mut self, ev: &Event<'_>, obs: &Observed, tracker: &Tracker) {
        let Some(o) = &ev.oom else { return };
        if o.counted == Some(false) {
            self.not_killed += 1;
            return;
        }
        self.kills += 1;
        self.by_constraint[constraint_slot(o.constraint)] += 1;
        let v = victim(ev, o, obs, tracker);
        if o.constraint == Constraint::None {
            push_capped(&mut self.node_wide, v.clone());
        }
        let key = match &v.pod_uid {
            Some(uid) => GroupKey::Pod(uid.as_str().into()),
            None => GroupKey::Cgroup(
                v.limit_path
                    .clone()
                    .unwrap_or_else(|| v.path.clone())
                    .into(),
            ),
        };
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            // The least recently killed group goes (ties: the smallest key, for replays).
            if let Some(k) = self
                .groups
                .iter()
                .map(|(k, g)| (g.last_ns, k))
                .min()
                .map(|(_, k)| k.clone())
            {
                self.groups.remove(&k);
            }
        }
        let g = self.groups.entry(key).or_default();
        g.last_ns = g.last_ns.max(ev.ts_ns);
        g.pod = obs.pod.or(g.pod);
        push_capped(&mut g.kills, v);
    }

    /// The run's totals.
    pub(super) fn summary(&self, t: &OomTracing) -> OomSummary {
        OomSummary {
            kills: self.kills,
            by_constraint: Constraint::ALL
                .iter()
                .zip(self.by_constraint)
                .filter(|(_, n)| *n > 0)
                .map(|(c, n)| (c.name(), n))
                .collect(),
            marked_not_killed: self.not_killed,
            count_exactness: t.exactness(),
        }
    }

    /// Kills of the pod `pod` (tracker number) within the window.
    pub(super) fn pod_kills(&self, cx: &Ctx<'_>, pod_uid: &str) -> u64 {
        let since = cx.now.saturating_sub(ns(cx.cfg.oom_window));
        self.groups
            .get(&GroupKey::Pod(pod_uid.into()))
            .map_or(0, |g| {
                g.kills
                    .iter()
                    .filter(|k| k.ts > since && k.ts <= cx.now)
                    .count() as u64
            })
    }

    /// Per pod (or cgroup) with limit OOM kills in the window, then one for node-wide OOMs.
    /// `restarts(pod, since)`: container cgroups the pod created after `since`, and whether
    /// `crash_loop` flags it.
    pub(super) fn verdicts(
        &self,
        cx: &Ctx<'_>,
        tracker: &Tracker,
        exactness: &'static str,
        restarts: &dyn Fn(u32, u64) -> (u64, bool),
    ) -> Vec<Verdict> {
        let window = ns(cx.cfg.oom_window);
        let since = cx.now.saturating_sub(window);
        let in_window = |k: &&OomVictim| k.ts > since && k.ts <= cx.now;
        let mut found: Vec<(&GroupKey, &Group, Vec<&OomVictim>)> = self
            .groups
            .iter()
            .map(|(k, g)| {
                let kills: Vec<&OomVictim> = g
                    .kills
                    .iter()
                    .filter(in_window)
                    .filter(|k| k.constraint != Constraint::None)
                    .collect();
                (k, g, kills)
            })
            .filter(|(_, _, kills)| !kills.is_empty())
            .collect();
        found.sort_by(|a, b| b.2.len().cmp(&a.2.len()).then_with(|| a.0.cmp(b.0)));
        let window_s = window as f64 / NS_PER_S;
        let mut out: Vec<Verdict> = found
            .into_iter()
            .take(MAX_VERDICTS)
            .map(|(key, g, kills)| {
                self.group_verdict(cx, tracker, key, g, &kills, window_s, exactness, restarts)
            })
            .collect();
        let node: Vec<&OomVictim> = self.node_wide.iter().filter(in_window).collect();
        if !node.is_empty() {
            out.push(node_verdict(cx, &node, window_s, exactness));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn group_verdict(
        &self,
        cx: &Ctx<'_>,
        tracker: &Tracker,
        key: &GroupKey,
        g: &Group,
        kills: &[&OomVictim],
        window_s: f64,
        exactness: &'static str,
        restarts: &dyn Fn(u32, u64) -> (u64, bool),
    ) -> Verdict {
        let n = kills.len() as u64;
        let latest = kills[kills.len() - 1];
        let first_ts = kills[0].ts;
        let victims = newest(cx, kills);
        let mut ev = OomKillEvidence {
            count: n,
            window_s: round_millis(window_s),
            constraint: latest.constraint,
            limit_scope: latest.limit_scope,
            count_exactness: exactness,
            ..OomKillEvidence::default()
        };
        ev.container_ids = recent_container_ids(kills);
        let who = group_who(&mut ev, key, g, tracker, latest, first_ts, restarts);
        let summary = group_summary(&who, n, window_s, latest, &ev);
        let recommendation = limit_recommendation(&ev, latest);
        ev.victims = victims;
        Verdict {
            detector: "oom_kill",
            severity: if n >= u64::from(cx.cfg.oom_repeat_min.max(1)) || ev.crash_loop {
                Severity::Warning
            } else {
                Severity::Info
            },
            summary,
            evidence: Evidence::OomKill(ev),
            recommendation,
        }
    }
}

/// The container ids of the latest kills, newest first, at most [`MAX_EXAMPLES`].
fn recent_container_ids(kills: &[&OomVictim]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for k in kills.iter().rev() {
        if let Some(id) = &k.container_id
            && !ids.contains(id)
            && ids.len() < MAX_EXAMPLES
        {
            ids.push(id.clone());
        }
    }
    ids
}

/// Who a group is (its pod, named when the tracker knows it, or its cgroup), filled into `ev`
/// with the restarts of the pod's containers after the first kill.
fn group_who(
    ev: &mut OomKillEvidence,
    key: &GroupKey,
    g: &Group,
    tracker: &Tracker,
    latest: &OomVictim,
    first_ts: u64,
    restarts: &dyn Fn(u32, u64) -> (u64, bool),
) -> String {
    match key {
        GroupKey::Pod(uid) => {
            ev.pod_uid = Some(uid.to_string());
            ev.qos = latest.qos;
            // The tracker's pod, if it is still this one.
            let stats = g
                .pod
                .and_then(|i| tracker.pod(i).map(|p| (i, p)))
                .filter(|(_, p)| *p.pod_uid == **uid);
            if let Some((i, p)) = stats {
                ev.pod_name = p.name.clone();
                ev.pod_namespace = p.namespace.clone();
                let (r, looping) = restarts(i, first_ts);
                ev.restarts_after = Some(r);
                ev.crash_loop = looping;
            }
            match (&ev.pod_namespace, &ev.pod_name) {
                (Some(ns), Some(name)) => {
                    format!("pod {}/{} ({uid})", terminal(ns), terminal(name))
                }
                _ => format!("pod {uid}"),
            }
        }
        GroupKey::Cgroup(path) => {
            ev.cgroup = Some(path.to_string());
            format!("cgroup {}", terminal(path))
        }
    }
}

/// The verdict's one line: who, how often, which limit, the latest victim, the restarts.
fn group_summary(
    who: &str,
    n: u64,
    window_s: f64,
    latest: &OomVictim,
    ev: &OomKillEvidence,
) -> String {
    let limit = match (latest.limit_bytes, latest.usage_bytes) {
        (Some(l), Some(u)) => format!(
            " ({}{} at {} of {})",
            latest.limit_scope.describe(),
            if latest.memsw { ", memory+swap" } else { "" },
            human_bytes(u),
            human_bytes(l)
        ),
        _ => format!(" ({})", latest.limit_scope.describe()),
    };
    let restarts_text = match (ev.restarts_after, ev.crash_loop) {
        (Some(r), true) => format!("; {r} container restarts followed: it is crash-looping"),
        (Some(r), false) if r > 0 => format!("; {r} container restarts followed"),
        _ => String::new(),
    };
    format!(
        "{who} OOM-killed {n} time{} in {}: {} hit{limit}, victim {}[{}]{restarts_text}",
        if n == 1 { "" } else { "s" },
        human_secs(window_s),
        match latest.constraint {
            Constraint::Memcg => "a memory limit",
            Constraint::Cpuset => "its cpuset's memory",
            Constraint::MemoryPolicy => "its memory policy's nodes",
            _ => "the OOM killer",
        },
        terminal(&latest.comm),
        latest.pid
    )
}

/// The victim of an `oom_kill` event, as a verdict shows it.
fn victim(ev: &Event<'_>, o: &OomKill<'_>, obs: &Observed, tracker: &Tracker) -> OomVictim {
    let m = k8s::match_path(ev.path);
    let pod_uid = obs
        .pod
        .and_then(|i| tracker.pod(i))
        .map(|p| p.pod_uid.clone())
        .or_else(|| m.map(|m| k8s::uid_string(m.uid)));
    let qos = obs.qos.or(m.map(|m| m.qos));
    // The limit's path from the tracker; the victim's own memcg is known without it.
    let limit_path = o.limit.and_then(|l| {
        if !l.path.is_empty() {
            Some(l.path)
        } else if l.cgroup_id == ev.cgroup_id && ev.has_cgroup {
            Some(ev.path)
        } else {
            None
        }
    });
    OomVictim {
        age_s: 0.0,
        pid: ev.pid,
        comm: lossy(ev.comm),
        path: lossy(ev.path),
        container_id: m
            .and_then(|m| m.container)
            .map(|(_, id)| k8s::uid_string(id)),
        pod_uid,
        qos,
        oom_score_adj: o.oom_score_adj,
        kubelet_oom_score_adj: qos.map(kubelet_oom_score_adj),
        rss_bytes: o
            .mm
            .map(|m| m.rss_anon_bytes + m.rss_file_bytes + m.rss_shmem_bytes),
        constraint: o.constraint,
        limit_scope: if o.constraint == Constraint::Memcg {
            match (limit_path, o.limit) {
                (None, Some(_)) => LimitScope::Other,
                (p, _) => LimitScope::of(p),
            }
        } else {
            LimitScope::None
        },
        limit_path: limit_path.map(lossy),
        limit_bytes: o.limit.map(|l| l.limit_bytes),
        usage_bytes: o.limit.map(|l| l.usage_bytes),
        memsw: o.limit.is_some_and(|l| l.memsw),
        derived: o.derived,
        kernel_counted: o.counted,
        exiting: o.exiting,
        trigger: o
            .trigger_pid
            .map(|p| format!("{}[{p}]", lossy(o.trigger_comm.as_bytes()))),
        ts: ev.ts_ns,
    }
}

/// The newest kills (at most 5), with their ages.
fn newest(cx: &Ctx<'_>, kills: &[&OomVictim]) -> Vec<OomVictim> {
    kills
        .iter()
        .rev()
        .take(MAX_EXAMPLES)
        .map(|k| OomVictim {
            age_s: age_s(cx.now, k.ts),
            ..(*k).clone()
        })
        .collect()
}

fn limit_recommendation(ev: &OomKillEvidence, latest: &OomVictim) -> String {
    let kubectl = match (&ev.pod_namespace, &ev.pod_name) {
        (Some(ns), Some(n)) => format!(
            "`kubectl -n {} describe pod {}` (Last State: OOMKilled) and its memory graphs",
            terminal(ns),
            terminal(n)
        ),
        _ => "`kubectl describe pod` of the pod (Last State: OOMKilled) and its memory graphs"
            .to_string(),
    };
    let what = match latest.limit_scope {
        LimitScope::Container => {
            "The container reached its own memory limit (resources.limits.memory). If its \
             working set legitimately needs more, raise the limit (and the request with it); if \
             usage grows until every kill, it leaks: fix the leak (heap profile, the runtime's \
             memory settings such as the JVM's -Xmx or GOMEMLIMIT below the limit)."
        }
        LimitScope::Pod => {
            "The pod reached its pod-level memory limit (the sum of its containers' limits plus \
             overhead): one container used more than its share. Find which (their usage at the \
             kill), then raise that container's limit or fix its leak."
        }
        LimitScope::Qos | LimitScope::Kubepods => {
            "A cgroup above the pods reached its limit (kubepods or a QoS class: node \
             allocatable): the node's pods together use more than kubelet allows. Set requests \
             that match usage so the scheduler does not overcommit the node, and check \
             --kube-reserved/--system-reserved and the eviction thresholds, which should evict \
             before this limit is hit."
        }
        _ => {
            "A cgroup reached its memory limit: raise the limit if the workload needs the \
             memory, or fix the leak."
        }
    };
    let derived = if latest.derived {
        " (The limit was derived from the memcgs' usage at the kill: the tracepoint tier \
         cannot read the kernel's choice.)"
    } else {
        ""
    };
    format!("{what} Look at {kubectl}. Every kill restarts the container.{derived}")
}

fn node_verdict(
    cx: &Ctx<'_>,
    kills: &[&OomVictim],
    window_s: f64,
    exactness: &'static str,
) -> Verdict {
    let n = kills.len() as u64;
    let latest = kills[kills.len() - 1];
    let victims = newest(cx, kills);
    let qos = |k: &OomVictim| Qos::name(k.qos);
    let adj = |k: &OomVictim| k.oom_score_adj.map_or("?".to_string(), |a| a.to_string());
    let summary = format!(
        "node-wide OOM: the kernel OOM-killed {n} process{} in {} with no cgroup limit hit; \
         latest {}[{}] ({} pod, oom_score_adj {}){}",
        if n == 1 { "" } else { "es" },
        human_secs(window_s),
        terminal(&latest.comm),
        latest.pid,
        qos(latest),
        adj(latest),
        if latest.derived {
            " (derived: no memcg of the victim was at its limit)"
        } else {
            ""
        }
    );
    let unexpected: Vec<String> = kills
        .iter()
        .filter_map(|k| {
            let (lo, hi) = k.kubelet_oom_score_adj?;
            let a = k.oom_score_adj?;
            (a < lo || a > hi).then(|| {
                format!(
                    "{}[{}] has oom_score_adj {a}, not the {lo}..{hi} kubelet gives {}",
                    terminal(&k.comm),
                    k.pid,
                    qos(k)
                )
            })
        })
        .take(MAX_EXAMPLES)
        .collect();
    let mut recommendation = "The node ran out of memory: the kernel chose the victim by \
        oom_score (its memory share plus oom_score_adj). kubelet sets oom_score_adj -997 for \
        Guaranteed containers, 1000 for BestEffort and 1000 - 1000 x request / node capacity \
        (3..999) for Burstable, so BestEffort and low-request Burstable pods die first and \
        Guaranteed ones last. To protect a pod, give it memory requests equal to its limits \
        (Guaranteed); give every pod a memory limit so none can take the node; make kubelet \
        evict before the kernel kills (--eviction-hard memory.available, --system-reserved and \
        --kube-reserved sized to what runs outside pods); and look for the process that grew \
        (its RSS at the kill)."
        .to_string();
    if !unexpected.is_empty() {
        recommendation.push_str(&format!(
            " Not what kubelet sets: {} (an oom_score_adj changed by hand or by the workload).",
            unexpected.join("; ")
        ));
    }
    Verdict {
        detector: "oom_kill",
        severity: if n >= u64::from(cx.cfg.oom_repeat_min.max(1)) {
            Severity::Critical
        } else {
            Severity::Warning
        },
        summary,
        evidence: Evidence::OomKill(OomKillEvidence {
            count: n,
            window_s: round_millis(window_s),
            constraint: Constraint::None,
            limit_scope: LimitScope::None,
            victims,
            count_exactness: exactness,
            ..OomKillEvidence::default()
        }),
        recommendation,
    }
}
