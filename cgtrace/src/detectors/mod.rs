//! Detectors: verdicts about leaking and churning cgroups, from the event stream and the tracker.
//!
//! [`Detectors::observe`] is called after [`Tracker::observe`] for every event; it keeps only
//! bounded, time-windowed state (rings of time buckets, capped tables, capped example lists) and
//! does no allocation per event beyond those bounded windows. [`Detectors::verdicts`] judges at
//! the tracker's "now" ([`Tracker::now_ns`]).
//!
//! Everything runs on **event time** (`ts_ns`), never the wall clock, and every table is evicted
//! and every verdict list ordered by a total order on its content (never by hash order), so a
//! replay of a recorded session gives exactly the verdicts of the live run.
//!
//! The detectors:
//!
//! * `kmem_leak`: dying memcgs pile up under churn while (almost) none are freed, and kernel
//!   memory pins them (only kernels before 5.9 leave slab charged to a dying memcg; from 5.9 slab
//!   is reparented at offline, so kmem charged at removal is no evidence there). Reports the memcg
//!   ID headroom the way the running kernel spends IDs and, where dying memcgs hold IDs, an ETA to
//!   `mkdir: no space left on device`. Once seen, the pattern is remembered until frees resume,
//!   so the verdict stays while the leaked memcgs do, even when the churn stops.
//! * `page_cache_pinning`: dying memcgs older than a threshold still charged with user pages at
//!   removal: page cache (reclaimable) or shmem/tmpfs (not freed by dropping caches).
//! * `churn_storm`: many cgroups per second with the same name shape. Each path counts once
//!   across hierarchies: a mkdir (rmdir) of a path already counted in another hierarchy less than
//!   [`DetectorConfig::churn_dedup`] earlier is the same creation seen through another v1
//!   hierarchy, so it is not counted again. This works whatever hierarchies are traced
//!   (`--controller` filters, v1 without a memory hierarchy, name=systemd only, v2).
//! * `crash_loop`: a pod whose container cgroups are created over and over.
//! * `mkdir_failed`: failed `mkdir` in cgroupfs, one verdict per errno.
//! * `id_headroom`: few memcg IDs left (the thresholds of `check`), counted the way the running
//!   kernel spends them, from the events and the kernel's own counters read during the run.
//!
//! Layout: this file holds the set ([`Detectors`]), its thresholds, the [`Verdict`] type and the
//! dispatch of events and judgements; each detector has its own file with its state and its
//! evidence type; [`window`] is the ring of time buckets they count in, [`shape`] the name-shape
//! normalisation, [`render`] the text for a terminal, [`kernel_facts`] the kernel thresholds.
use std::collections::HashMap;
use std::time::Duration;

use cgtrace_common::EventKind;
use serde::Serialize;

use crate::{
    format::units::round_millis,
    kernel::{hierarchy::V2_HIERARCHY, memcg_ids, memcg_ids::KernelMemcgs},
    model::event::Event,
    model::tracker::{DyingMemcg, Observed, Totals, Tracker},
};

mod churn_storm;
mod crash_loop;
mod id_headroom;
mod kernel_facts;
mod kmem_leak;
mod mkdir_failed;
mod oom_kill;
mod page_cache;
mod render;
mod shape;
mod window;

pub use churn_storm::ChurnStormEvidence;
pub use crash_loop::CrashLoopEvidence;
pub use id_headroom::IdHeadroomEvidence;
pub use kernel_facts::{KernelFacts, MEMCG_ID_MAX};
pub use kmem_leak::KmemLeakEvidence;
pub use mkdir_failed::MkdirFailedEvidence;
pub use oom_kill::{LimitScope, OomKillEvidence, OomSummary};
pub use page_cache::PageCacheEvidence;
pub use render::render_verdict;
pub use shape::normalise_leaf;

/// Most example paths, pod UIDs or container IDs in one verdict.
const MAX_EXAMPLES: usize = 5;

const NS_PER_S: f64 = 1e9;

/// Thresholds of the detectors. All times are event time.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Window of the kmem_leak judgement and of the mkdir_failed rates. Default 10 min.
    pub window: Duration,
    /// Granularity of that window. Default 10 s; the window is judged on whole buckets.
    pub bucket: Duration,
    /// kmem_leak: least net growth of dying memcgs within the window. Default 20.
    pub kmem_min_growth: u64,
    /// kmem_leak: least dying memcgs for a verdict. Default 100.
    pub kmem_min_dying: u64,
    /// kmem_leak: "frees stay near zero" means frees ≤ this × removals in the window. Default 0.1.
    pub kmem_max_free_ratio: f64,
    /// kmem_leak: least share of the dying memcgs (with a known kmem figure) charged with kernel
    /// memory at removal. Default 0.5.
    pub kmem_min_pinned_ratio: f64,
    /// kmem_leak is critical from this many dying memcgs on, whatever the IDs. Default 20,000.
    pub kmem_dying_critical: u64,
    /// kmem_leak is critical when the memcg ID headroom is at most this. Default 10,000.
    pub id_headroom_critical: u64,
    /// kmem_leak is critical when IDs run out within this. Default 7 days.
    pub eta_critical: Duration,
    /// page_cache_pinning: least time dying. Default 30 s.
    pub page_cache_min_age: Duration,
    /// page_cache_pinning: least memcgs for a verdict. Default 10.
    pub page_cache_min_count: u64,
    /// page_cache_pinning is a warning from this many memcgs on (info below). Default 1000.
    pub page_cache_warn_count: u64,
    /// churn_storm: sliding window. Default 10 s.
    pub churn_window: Duration,
    /// churn_storm: least creations per second of one name shape over the window. Default 10.
    pub churn_rate: f64,
    /// churn_storm is critical from this rate on. Default 100/s.
    pub churn_critical_rate: f64,
    /// churn_storm: a path created (removed) again in another hierarchy within this is the same
    /// cgroup seen through another v1 hierarchy. Default 1 s.
    pub churn_dedup: Duration,
    /// crash_loop: window. Default 10 min.
    pub crash_loop_window: Duration,
    /// crash_loop: least container cgroups created for one pod within the window (and at least
    /// this minus one of them replacing removed ones). Default 5.
    pub crash_loop_min: u32,
    /// oom_kill: window. Default 1 h (OOM kills are rare and each one matters).
    pub oom_window: Duration,
    /// oom_kill: kills of one pod within the window that make a warning (fewer: info); a
    /// node-wide OOM is a warning, critical from this many on. Default 2.
    pub oom_repeat_min: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            window: Duration::from_secs(600),
            bucket: Duration::from_secs(10),
            kmem_min_growth: 20,
            kmem_min_dying: 100,
            kmem_max_free_ratio: 0.1,
            kmem_min_pinned_ratio: 0.5,
            kmem_dying_critical: 20_000,
            id_headroom_critical: 10_000,
            eta_critical: Duration::from_secs(7 * 86_400),
            page_cache_min_age: Duration::from_secs(30),
            page_cache_min_count: 10,
            page_cache_warn_count: 1000,
            churn_window: Duration::from_secs(10),
            churn_rate: 10.0,
            churn_critical_rate: 100.0,
            churn_dedup: Duration::from_secs(1),
            crash_loop_window: Duration::from_secs(600),
            crash_loop_min: 5,
            oom_window: Duration::from_secs(3600),
            oom_repeat_min: 2,
        }
    }
}

/// How bad a verdict is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to do yet.
    Info,
    /// Something is wrong or will go wrong.
    Warning,
    /// Failing now or soon (e.g. memcg IDs running out).
    Critical,
}

impl Severity {
    /// `"info"`, `"warning"` or `"critical"`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}
/// What a verdict rests on: each detector's own evidence. Serialized as that detector's object
/// (no tag: the verdict's `detector` says which it is).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    /// Of a `kmem_leak` verdict.
    KmemLeak(KmemLeakEvidence),
    /// Of a `page_cache_pinning` verdict.
    PageCache(PageCacheEvidence),
    /// Of a `churn_storm` verdict.
    ChurnStorm(ChurnStormEvidence),
    /// Of a `crash_loop` verdict.
    CrashLoop(CrashLoopEvidence),
    /// Of a `mkdir_failed` verdict.
    MkdirFailed(MkdirFailedEvidence),
    /// Of an `id_headroom` verdict.
    IdHeadroom(IdHeadroomEvidence),
    /// Of an `oom_kill` verdict.
    OomKill(OomKillEvidence),
}

/// Some dying memcgs as evidence (oldest first): the age of the oldest, how many were found at
/// start, the pods with the most of them and example paths. Its fields sit in the evidence
/// object of the verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DyingSample {
    /// Age of the oldest, seconds (a lower bound when it was found dying at start: then it
    /// counts from the start-up walk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_s: Option<f64>,
    /// Of them, those already dying when cgtrace started.
    pub found_at_start: u64,
    /// Pods with the most of them, most first, then by UID (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_uids: Vec<String>,
    /// Example paths (at most 5), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub example_paths: Vec<String>,
}

impl DyingSample {
    /// The sample of `memcgs` (oldest first) at `now`.
    fn of(now: u64, memcgs: &[&DyingMemcg]) -> Self {
        DyingSample {
            oldest_age_s: memcgs.first().map(|d| age_s(now, d.rmdir_ns)),
            found_at_start: memcgs.iter().filter(|d| d.before_start).count() as u64,
            pod_uids: top_pods(memcgs),
            example_paths: memcgs
                .iter()
                .take(MAX_EXAMPLES)
                .map(|d| d.path.clone())
                .collect(),
        }
    }
}

/// One finding.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    /// `"kmem_leak"`, `"page_cache_pinning"`, `"churn_storm"`, `"crash_loop"`, `"mkdir_failed"`
    /// `"id_headroom"` or `"oom_kill"`.
    pub detector: &'static str,
    /// How bad.
    pub severity: Severity,
    /// One line for humans (untrusted names in it are escaped).
    pub summary: String,
    /// The numbers the verdict rests on.
    pub evidence: Evidence,
    /// What to do.
    pub recommendation: String,
}

/// What every detector judges with: the thresholds, the kernel and event time.
struct Ctx<'a> {
    cfg: &'a DetectorConfig,
    kernel: &'a KernelFacts,
    /// The time judged at.
    now: u64,
    /// The first event seen, if any.
    first_ns: Option<u64>,
}

/// Memcg IDs as the running kernel spends them.
#[derive(Clone, Copy, Debug)]
struct IdPicture {
    /// The memory hierarchy is traced, so the counts mean something.
    known: bool,
    live: u64,
    dying: u64,
    swap_held: u64,
    dying_seen: u64,
    held_by_dying: bool,
    headroom: u64,
    /// When the kernel's counters corrected the live count (None: the events alone).
    counters_at: Option<u64>,
}

impl IdPicture {
    fn new(
        kernel: &KernelFacts,
        known: bool,
        totals: &Totals,
        dying: &[DyingMemcg],
        correction: Option<IdCorrection>,
    ) -> Self {
        let swap_held = dying.iter().filter(|d| holds_swap(d)).count() as u64;
        let held_by_dying = kernel.ids_held_by_dying();
        let live = match correction {
            Some(c) => totals.live.saturating_add_signed(c.live_delta),
            None => totals.live,
        };
        IdPicture {
            known,
            live,
            dying: totals.dying,
            swap_held,
            dying_seen: dying.len() as u64,
            held_by_dying,
            headroom: memcg_ids::headroom(memcg_ids::ids_in_use(
                held_by_dying,
                live,
                totals.dying,
                swap_held,
            )),
            counters_at: correction.map(|c| c.at_ns),
        }
    }
}

/// What the kernel's counters said beyond the events: the live memcgs they count less those the
/// tracker counts, at the time of the reading. Events after it move both alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdCorrection {
    live_delta: i64,
    at_ns: u64,
}

/// What the detectors' tables hold: all bounded (capped, windowed), and a pod's entries go
/// when the tracker forgets the pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorFootprint {
    /// Pods `crash_loop` keeps container creations of.
    pub crash_loop_pods: usize,
    /// Name shapes `churn_storm` counts.
    pub churn_shapes: usize,
    /// Errnos `mkdir_failed` counts.
    pub mkdir_errnos: usize,
}

/// The detectors. Feed every event with [`Detectors::observe`]; ask [`Detectors::verdicts`].
pub struct Detectors {
    cfg: DetectorConfig,
    kernel: KernelFacts,
    first_ns: Option<u64>,
    now_ns: u64,
    kmem_leak: kmem_leak::KmemLeak,
    churn_storm: churn_storm::ChurnStorm,
    crash_loop: crash_loop::CrashLoop,
    mkdir_failed: mkdir_failed::MkdirFailed,
    ids: Option<IdCorrection>,
    oom_kill: oom_kill::OomKills,
    /// How the run traces OOM kills (how exact their count is).
    oom: Option<crate::model::oom::OomTracing>,
}

impl Detectors {
    /// Detectors with these thresholds, for this kernel.
    pub fn new(cfg: DetectorConfig, kernel: KernelFacts) -> Self {
        let width = ns(cfg.bucket).max(1);
        let buckets = ns(cfg.window) / width;
        Detectors {
            kmem_leak: kmem_leak::KmemLeak::new(width, buckets),
            churn_storm: churn_storm::ChurnStorm::new(&cfg),
            crash_loop: crash_loop::CrashLoop::new(&cfg),
            mkdir_failed: mkdir_failed::MkdirFailed::new(width, buckets),
            oom_kill: oom_kill::OomKills::new(),
            oom: None,
            cfg,
            kernel,
            first_ns: None,
            now_ns: 0,
            ids: None,
        }
    }

    /// A reading of the kernel's memcg counters, taken after the events before it were fed:
    /// from now on the memcg ID headroom counts the live memcgs the kernel counted, moved by the
    /// events since.
    pub fn kernel_memcgs(&mut self, k: &KernelMemcgs, tracker: &Tracker) {
        let totals = tracker.totals();
        let Some(kernel_live) = k.live_with(totals.dying) else {
            return;
        };
        let delta = i64::try_from(kernel_live).unwrap_or(i64::MAX)
            - i64::try_from(totals.live).unwrap_or(i64::MAX);
        // Where the kernel counts live memcgs (v2) it is the authority. Where it counts only all
        // of them (v1), the live ones are that less the dying ones the tracker knows, which lost
        // release events inflate: then it may only add to the tracker's count, never take away
        // (the headroom errs low, never high).
        let delta = if k.live.is_some() {
            delta
        } else {
            delta.max(0)
        };
        self.ids = Some(IdCorrection {
            live_delta: delta,
            at_ns: k.ts_ns,
        });
        self.now_ns = self.now_ns.max(k.ts_ns);
    }

    /// The kernel facts the detectors judge with.
    pub fn kernel(&self) -> &KernelFacts {
        &self.kernel
    }

    /// The thresholds.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// How the run traces OOM kills (None: it does not).
    pub fn set_oom_tracing(&mut self, oom: Option<crate::model::oom::OomTracing>) {
        self.oom = oom;
    }

    /// The run's OOM kills, for the summary.
    pub fn oom_summary(&self, t: &crate::model::oom::OomTracing) -> OomSummary {
        self.oom_kill.summary(t)
    }

    fn ctx(&self, now: u64) -> Ctx<'_> {
        Ctx {
            cfg: &self.cfg,
            kernel: &self.kernel,
            now,
            first_ns: self.first_ns,
        }
    }

    /// Takes one event, after `tracker.observe(ev)` returned `obs`.
    pub fn observe(&mut self, ev: &Event<'_>, obs: &Observed, tracker: &Tracker) {
        let ts = ev.ts_ns;
        self.now_ns = self.now_ns.max(ts).max(tracker.now_ns());
        let first = *self.first_ns.get_or_insert(ts);
        self.first_ns = Some(first.min(ts));
        self.kmem_leak.tick(self.now_ns, self.first_ns, &self.cfg);
        if let Some(pod) = obs.forgotten_pod {
            self.crash_loop.forget_pod(pod);
        }
        match ev.kind {
            EventKind::Mkdir => {
                self.churn_storm.observe(ev, false, None, &self.cfg);
                if obs.memcg && obs.container {
                    self.crash_loop.container_mkdir(ev, obs, &self.cfg);
                }
            }
            EventKind::Rmdir => {
                if obs.memcg {
                    self.kmem_leak.removed(ts);
                    if obs.container {
                        self.crash_loop.container_rmdir(ev, obs);
                    }
                }
                self.churn_storm.observe(ev, true, obs.live_ns, &self.cfg);
            }
            EventKind::Release | EventKind::CssFree => {
                if obs.memcg && (obs.dying_ns.is_some() || obs.freed_before_start) {
                    self.kmem_leak.freed(ts);
                }
            }
            EventKind::MkdirFailed => {
                let memory = tracker.memory_hierarchy() == Some(ev.hierarchy_id);
                self.mkdir_failed.observe(ev, memory);
            }
            // Dying since before start: part of the tracker's dying count, but no removal
            // within the window (its free counts, through `freed_before_start`).
            EventKind::DyingAtStart => {}
            EventKind::OomKill => self.oom_kill.observe(ev, obs, tracker),
            EventKind::CssAlloc
            | EventKind::CssOnline
            | EventKind::CssOffline
            | EventKind::CssReleased => {}
        }
    }

    /// Current verdicts, judged at `tracker.now_ns()`: kmem_leak, page_cache_pinning,
    /// churn_storm, oom_kill, crash_loop, mkdir_failed, id_headroom, in that order.
    pub fn verdicts(&self, tracker: &Tracker) -> Vec<Verdict> {
        let cx = self.ctx(tracker.now_ns().max(self.now_ns));
        let totals = tracker.totals();
        let known = tracker.memory_hierarchy().is_some();
        let dying = if known {
            tracker.dying_memcgs()
        } else {
            Vec::new()
        };
        let ids = IdPicture::new(&self.kernel, known, &totals, &dying, self.ids);
        let mut out = Vec::new();
        let kmem = self.kmem_leak.verdict(&cx, &totals, &dying, &ids);
        let kmem_fired = kmem.is_some();
        out.extend(kmem);
        out.extend(page_cache::verdict(&cx, &totals, &dying, kmem_fired));
        out.extend(self.churn_storm.verdicts(&cx));
        let exactness = self.oom.as_ref().map_or("", |t| t.exactness());
        let restarts = |pod: u32, since: u64| self.crash_loop.restarts_after(&cx, pod, since);
        out.extend(self.oom_kill.verdicts(&cx, tracker, exactness, &restarts));
        let oom_kills = |uid: &str| self.oom_kill.pod_kills(&cx, uid);
        out.extend(self.crash_loop.verdicts(&cx, tracker, &oom_kills));
        out.extend(self.mkdir_failed.verdicts(&cx, &ids, kmem_fired));
        out.extend(id_headroom::verdict(&cx, &ids));
        out
    }

    /// How much the detectors' tables hold, for tests and benches.
    pub fn footprint(&self) -> DetectorFootprint {
        DetectorFootprint {
            crash_loop_pods: self.crash_loop.pods_tracked(),
            churn_shapes: self.churn_storm.shapes_tracked(),
            mkdir_errnos: self.mkdir_failed.errnos_tracked(),
        }
    }

    /// Memcg ID headroom the way the running kernel uses IDs (what `kmem_leak` reports, and the
    /// `cgtrace_memcg_id_headroom` metric); None without a memory hierarchy.
    pub fn id_headroom(&self, tracker: &Tracker) -> Option<u64> {
        tracker.memory_hierarchy()?;
        let dying = tracker.dying_memcgs();
        Some(IdPicture::new(&self.kernel, true, &tracker.totals(), &dying, self.ids).headroom)
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// Nanoseconds of a duration, saturating.
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Seconds from `then` to `now`, to the millisecond.
fn age_s(now: u64, then: u64) -> f64 {
    round_millis(now.saturating_sub(then) as f64 / NS_PER_S)
}

/// A dying memcg whose ID swap entries hold: memory+swap above memory on v1; v2's counter in that
/// place is swap alone.
fn holds_swap(d: &DyingMemcg) -> bool {
    if d.hierarchy_id == V2_HIERARCHY {
        return d.memsw_bytes.is_some_and(|s| s > 0);
    }
    matches!((d.usage_bytes, d.memsw_bytes), (Some(u), Some(m)) if m > u)
}

/// The pods with the most of these memcgs (at most 5), most first, then by UID.
fn top_pods(memcgs: &[&DyingMemcg]) -> Vec<String> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for d in memcgs {
        if let Some(p) = &d.pod_uid {
            *counts.entry(p.as_str()).or_default() += 1;
        }
    }
    let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v.into_iter()
        .take(MAX_EXAMPLES)
        .map(|(p, _)| p.to_string())
        .collect()
}

#[cfg(test)]
mod tests;
