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
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use cgtrace_common::EventKind;
use serde::Serialize;

use crate::{
    kernel::hierarchy::V2_HIERARCHY,
    model::event::{Event, errno_name},
    model::k8s,
    model::tracker::{DyingMemcg, Observed, Totals, Tracker},
};

pub use crate::commands::check::MEMCG_ID_MAX;

/// Linux errno values the detectors treat specially.
const ENOENT: i32 = 2;
const ENOMEM: i32 = 12;
const EEXIST: i32 = 17;
const ENOSPC: i32 = 28;

/// Most example paths, pod UIDs or container IDs in one verdict.
const MAX_EXAMPLES: usize = 5;
/// Most name shapes tracked by the churn detector.
const MAX_SHAPES: usize = 512;
/// Example paths kept per shape.
const SHAPE_EXAMPLES: usize = 3;
/// Slots of the direct-mapped cache that dedupes a path across hierarchies.
const DEDUP_SLOTS: usize = 4096;
/// Buckets of the churn window.
const CHURN_BUCKETS: u64 = 10;
/// Most pods tracked by the crash-loop detector.
const MAX_LOOP_PODS: usize = 2048;
/// Most distinct errnos tracked by the mkdir_failed detector.
const MAX_ERRNOS: usize = 32;
/// Most buckets in a window, whatever the configuration says.
const MAX_WINDOW_BUCKETS: u64 = 10_000;
/// Most churn_storm / crash_loop verdicts in one list.
const MAX_CHURN_VERDICTS: usize = 5;
const MAX_CRASH_LOOP_VERDICTS: usize = 10;
/// Longest name shape kept, in bytes.
const MAX_SHAPE_LEN: usize = 200;
/// Hex runs this long inside a name are ids.
const LONG_HEX: usize = 16;

const NS_PER_S: f64 = 1e9;

/// What the detectors need to know about the running kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelFacts {
    /// The release string (`uname -r`).
    pub release: String,
    /// (major, minor), e.g. `(6, 18)`; `None` when the release could not be parsed. An unknown
    /// version is treated as a modern kernel: no claim that dying memcgs hold IDs or that slab
    /// pins them.
    pub version: Option<(u32, u32)>,
}

impl KernelFacts {
    /// Facts from a release string like `6.18.44-fc-v669` or `3.10.0-957.el7.x86_64`.
    pub fn from_release(release: &str) -> KernelFacts {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major = it.next().and_then(|s| s.parse().ok());
        let minor = it.next().and_then(|s| s.parse().ok());
        KernelFacts {
            release: release.to_string(),
            version: major.zip(minor),
        }
    }

    /// Before 4.8 a memcg keeps its ID until it is freed, so dying memcgs use up the 65,535 IDs;
    /// since then the ID is given back at offline unless swap entries still hold it.
    pub fn ids_held_by_dying(&self) -> bool {
        self.version.is_some_and(|v| v < (4, 8))
    }

    /// Before 5.9 slab objects stay charged to a removed memcg and pin it (the 3.10 kmem leak);
    /// since 5.9 they are moved to the parent at offline.
    pub fn slab_pins_dying(&self) -> bool {
        self.version.is_some_and(|v| v < (5, 9))
    }
}

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

/// What a verdict rests on. Only the fields a detector fills are serialized.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The main count of the verdict: dying memcgs (kmem_leak, page_cache_pinning), creations
    /// (churn_storm, crash_loop), failures since start (mkdir_failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Seconds of event time the windowed numbers cover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    /// Events per second within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// All dying memcgs the kernel holds (seen removed, plus those dying before start not freed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dying: Option<u64>,
    /// Dying memcgs charged with kernel memory at removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmem_pinned: Option<u64>,
    /// Memory cgroups removed within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_in_window: Option<u64>,
    /// Dying memory cgroups freed within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_in_window: Option<u64>,
    /// Net growth of dying memcgs, per hour, over the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_per_hour: Option<f64>,
    /// Memcgs online now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_memcgs: Option<u64>,
    /// Dying memcgs whose memcg ID swap entries hold (memory+swap above memory at removal on v1,
    /// swap above 0 on v2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_held: Option<u64>,
    /// This kernel (before 4.8) keeps a dying memcg's ID until it is freed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids_held_by_dying: Option<bool>,
    /// Memcg IDs left of 65,535, counted the way this kernel spends them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_headroom: Option<u64>,
    /// Seconds until the IDs run out at the current growth (only where dying memcgs hold IDs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_to_enospc_s: Option<f64>,
    /// Bytes of user pages (memory minus kernel memory) charged at removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Bytes of kernel memory charged at removal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmem_bytes: Option<u64>,
    /// Age of the oldest dying memcg counted, seconds (a lower bound when it was found dying at
    /// start: then it counts from the start-up walk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_s: Option<f64>,
    /// Of the dying memcgs counted, those already dying when cgtrace started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_at_start: Option<u64>,
    /// churn_storm: the normalised leaf name (`<n>` digits, `<hex>` ids, `<uid>` UUIDs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// churn_storm: cgroups of that shape removed within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    /// churn_storm: mean mkdir → rmdir time of those, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_lifetime_s: Option<f64>,
    /// crash_loop: container cgroups created after one of the pod's container cgroups was
    /// removed (restarts), within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u64>,
    /// The pod of the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Its name, when known (`/var/log/pods`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Its namespace, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// Its QoS class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Pods involved, most affected first (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_uids: Vec<String>,
    /// Container ids, most recent first (at most 5).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_ids: Vec<String>,
    /// mkdir_failed: the errno.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// mkdir_failed: its name (`ENOSPC`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_name: Option<String>,
    /// mkdir_failed: failures within the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_window: Option<u64>,
    /// mkdir_failed: the path of the latest failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// mkdir_failed: the process of the latest failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// mkdir_failed: its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// mkdir_failed: seconds since the latest failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_age_s: Option<f64>,
    /// Example paths (at most 5), oldest or most relevant first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub example_paths: Vec<String>,
    /// The kernel release, where the verdict depends on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// One finding.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Verdict {
    /// `"kmem_leak"`, `"page_cache_pinning"`, `"churn_storm"`, `"crash_loop"` or `"mkdir_failed"`.
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

/// A ring of time buckets; a slot is valid for the bucket index stamped on it, so nothing has to
/// be cleared as time moves on. Windows are judged on whole buckets before the current one.
#[derive(Clone, Debug)]
struct Ring<T> {
    width: u64,
    /// (bucket index + 1, value); 0 = never used.
    slots: Vec<(u64, T)>,
}

impl<T: Copy + Default> Ring<T> {
    /// A ring for windows of `complete` buckets of `width` ns (plus the current one).
    fn new(width: u64, complete: u64) -> Ring<T> {
        let complete = complete.clamp(1, MAX_WINDOW_BUCKETS);
        Ring {
            width: width.max(1),
            slots: vec![(0, T::default()); complete as usize + 1],
        }
    }

    fn complete(&self) -> u64 {
        self.slots.len() as u64 - 1
    }

    /// The bucket of `ts`, or `None` when it is older than the ring remembers.
    fn at(&mut self, ts: u64) -> Option<&mut T> {
        let idx = ts / self.width;
        let stamp = idx + 1;
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(idx % n) as usize];
        if slot.0 > stamp {
            return None;
        }
        if slot.0 < stamp {
            *slot = (stamp, T::default());
        }
        Some(&mut slot.1)
    }

    /// Start (inclusive) and end (exclusive) of the window before the bucket holding `now`.
    fn window(&self, now: u64) -> (u64, u64) {
        let now_idx = now / self.width;
        let start = now_idx.saturating_sub(self.complete()) * self.width;
        (start, now_idx * self.width)
    }

    /// The buckets of that window.
    fn buckets(&self, now: u64) -> impl Iterator<Item = &T> {
        let now_idx = now / self.width;
        let n = self.slots.len() as u64;
        (now_idx.saturating_sub(self.complete())..now_idx).filter_map(move |idx| {
            let slot = &self.slots[(idx % n) as usize];
            (slot.0 == idx + 1).then_some(&slot.1)
        })
    }
}

impl Ring<u64> {
    /// The sum of the last `complete` buckets including the current one, and the start of the
    /// first of them.
    fn recent(&self, now: u64) -> (u64, u64) {
        let now_idx = now / self.width;
        let n = self.slots.len() as u64;
        let first = (now_idx + 1).saturating_sub(self.complete());
        let sum = (first..=now_idx)
            .filter_map(|idx| {
                let slot = &self.slots[(idx % n) as usize];
                (slot.0 == idx + 1).then_some(slot.1)
            })
            .sum();
        (sum, first * self.width)
    }
}

/// Memory-hierarchy removals and frees per bucket (kmem_leak).
#[derive(Clone, Copy, Debug, Default)]
struct LeakSlot {
    rmdirs: u64,
    frees: u64,
}

/// The kmem_leak window.
#[derive(Clone, Copy, Debug, Default)]
struct LeakWindow {
    rmdirs: u64,
    frees: u64,
    span_ns: u64,
    /// Events were observed since before the window started.
    full: bool,
}

impl LeakWindow {
    fn growth(&self) -> i64 {
        self.rmdirs as i64 - self.frees as i64
    }

    /// Dying memcgs pile up and (almost) none are freed.
    fn accumulating(&self, cfg: &DetectorConfig) -> bool {
        self.full
            && self.growth() >= cfg.kmem_min_growth as i64
            && (self.frees as f64) <= cfg.kmem_max_free_ratio * self.rmdirs as f64
    }

    /// Frees resumed: the churn is freed again, or the dying count fell by the growth threshold.
    fn recovering(&self, cfg: &DetectorConfig) -> bool {
        let min = cfg.kmem_min_growth as i64;
        (self.rmdirs as i64 >= min
            && self.frees as f64 > cfg.kmem_max_free_ratio * self.rmdirs as f64)
            || self.growth() <= -min.max(1)
    }
}

/// Creations and removals of one name shape per bucket.
#[derive(Clone, Copy, Debug, Default)]
struct ChurnSlot {
    mkdirs: u64,
    rmdirs: u64,
    /// Removals whose creation was seen, and the sum of their lifetimes.
    lived: u64,
    live_ns: u64,
}

/// One cgroup of a shape, as an example.
#[derive(Clone, Debug)]
struct Example {
    ts: u64,
    path: Box<str>,
    comm: Box<str>,
    pid: u32,
}

/// One name shape.
#[derive(Clone, Debug)]
struct Shape {
    ring: Ring<ChurnSlot>,
    /// Oldest first.
    examples: VecDeque<Example>,
    last_ns: u64,
}

/// What the dedupe cache remembers of one path.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    hash: u64,
    mk_ns: u64,
    mk_mask: u64,
    rm_ns: u64,
    rm_mask: u64,
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

/// One failed mkdir.
#[derive(Clone, Debug)]
struct Failure {
    ts: u64,
    path: Box<str>,
    pod_uid: Option<Box<str>>,
    comm: Box<str>,
    pid: u32,
}

/// Failed mkdirs with one errno.
#[derive(Clone, Debug)]
struct Failures {
    errno: i32,
    total: u64,
    ring: Ring<u64>,
    /// Newest last.
    recent: VecDeque<Failure>,
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
}

/// The detectors. Feed every event with [`Detectors::observe`]; ask [`Detectors::verdicts`].
pub struct Detectors {
    cfg: DetectorConfig,
    kernel: KernelFacts,
    first_ns: Option<u64>,
    now_ns: u64,
    // kmem_leak
    leak: Ring<LeakSlot>,
    leak_checked_idx: u64,
    leak_latched: bool,
    // churn_storm
    churn_width: u64,
    shapes: HashMap<Box<str>, Shape>,
    seen: Vec<Seen>,
    shape_buf: String,
    // crash_loop
    loops: HashMap<u32, PodLoop>,
    loop_cap: usize,
    // mkdir_failed
    failures: Vec<Failures>,
}

impl Detectors {
    /// Detectors with these thresholds, for this kernel.
    pub fn new(cfg: DetectorConfig, kernel: KernelFacts) -> Self {
        let width = ns(cfg.bucket).max(1);
        let leak = Ring::new(width, ns(cfg.window) / width);
        let churn_width = (ns(cfg.churn_window) / CHURN_BUCKETS).max(1);
        let loop_cap = (cfg.crash_loop_min as usize)
            .saturating_mul(4)
            .clamp(64, 1024);
        Detectors {
            cfg,
            kernel,
            first_ns: None,
            now_ns: 0,
            leak,
            leak_checked_idx: u64::MAX,
            leak_latched: false,
            churn_width,
            shapes: HashMap::new(),
            seen: vec![Seen::default(); DEDUP_SLOTS],
            shape_buf: String::with_capacity(MAX_SHAPE_LEN + 8),
            loops: HashMap::new(),
            loop_cap,
            failures: Vec::new(),
        }
    }

    /// The kernel facts the detectors judge with.
    pub fn kernel(&self) -> &KernelFacts {
        &self.kernel
    }

    /// The thresholds.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Takes one event, after `tracker.observe(ev)` returned `obs`.
    pub fn observe(&mut self, ev: &Event<'_>, obs: &Observed, tracker: &Tracker) {
        let ts = ev.ts_ns;
        self.now_ns = self.now_ns.max(ts).max(tracker.now_ns());
        let first = *self.first_ns.get_or_insert(ts);
        self.first_ns = Some(first.min(ts));
        self.leak_tick();
        match ev.kind {
            EventKind::Mkdir => {
                self.churn(ev, false, None);
                if obs.memcg && obs.container {
                    self.container_mkdir(ev, obs);
                }
            }
            EventKind::Rmdir => {
                if obs.memcg {
                    if let Some(s) = self.leak.at(ts) {
                        s.rmdirs += 1;
                    }
                    if obs.container {
                        self.container_rmdir(ev, obs);
                    }
                }
                self.churn(ev, true, obs.live_ns);
            }
            EventKind::Release | EventKind::CssFree => {
                if obs.memcg
                    && (obs.dying_ns.is_some() || obs.freed_before_start)
                    && let Some(s) = self.leak.at(ts)
                {
                    s.frees += 1;
                }
            }
            EventKind::MkdirFailed => self.mkdir_failed(ev),
            // Dying since before start: part of the tracker's dying count, but no removal
            // within the window (its free counts, through `freed_before_start`).
            EventKind::DyingAtStart => {}
            EventKind::CssAlloc
            | EventKind::CssOnline
            | EventKind::CssOffline
            | EventKind::CssReleased => {}
        }
    }

    /// Current verdicts, judged at `tracker.now_ns()`: kmem_leak, page_cache_pinning,
    /// churn_storm, crash_loop, mkdir_failed, in that order.
    pub fn verdicts(&self, tracker: &Tracker) -> Vec<Verdict> {
        let now = tracker.now_ns().max(self.now_ns);
        let totals = tracker.totals();
        let dying = if tracker.memory_hierarchy().is_some() {
            tracker.dying_memcgs()
        } else {
            Vec::new()
        };
        let ids = self.id_picture(tracker.memory_hierarchy().is_some(), &totals, &dying);
        let mut out = Vec::new();
        let kmem = self.kmem_leak(now, &totals, &dying, &ids);
        let kmem_fired = kmem.is_some();
        out.extend(kmem);
        out.extend(self.page_cache(now, &totals, &dying, kmem_fired));
        out.extend(self.churn_storms(now));
        out.extend(self.crash_loops(now, tracker));
        out.extend(self.mkdir_failures(now, &ids, kmem_fired));
        out
    }

    // ---- kmem_leak ------------------------------------------------------------------------

    fn leak_window(&self, now: u64) -> LeakWindow {
        let mut w = LeakWindow::default();
        for s in self.leak.buckets(now) {
            w.rmdirs += s.rmdirs;
            w.frees += s.frees;
        }
        let (start, end) = self.leak.window(now);
        let first = self.first_ns.unwrap_or(now);
        w.full = end > start && first <= start;
        w.span_ns = end.saturating_sub(start.max(first));
        w
    }

    /// Once per bucket: remember that dying memcgs piled up, until frees resume.
    fn leak_tick(&mut self) {
        let idx = self.now_ns / self.leak.width;
        if idx == self.leak_checked_idx {
            return;
        }
        self.leak_checked_idx = idx;
        let w = self.leak_window(self.now_ns);
        if w.accumulating(&self.cfg) {
            self.leak_latched = true;
        } else if w.recovering(&self.cfg) {
            self.leak_latched = false;
        }
    }

    /// Memcg ID headroom the way the running kernel uses IDs (what `kmem_leak` reports, and the
    /// `cgtrace_memcg_id_headroom` metric); None without a memory hierarchy.
    pub fn id_headroom(&self, tracker: &Tracker) -> Option<u64> {
        tracker.memory_hierarchy()?;
        let dying = tracker.dying_memcgs();
        Some(self.id_picture(true, &tracker.totals(), &dying).headroom)
    }

    fn id_picture(&self, known: bool, totals: &Totals, dying: &[DyingMemcg]) -> IdPicture {
        let swap_held = dying.iter().filter(|d| holds_swap(d)).count() as u64;
        let held_by_dying = self.kernel.ids_held_by_dying();
        let used = if held_by_dying {
            totals.live + totals.dying
        } else {
            totals.live + swap_held
        };
        IdPicture {
            known,
            live: totals.live,
            dying: totals.dying,
            swap_held,
            dying_seen: dying.len() as u64,
            held_by_dying,
            headroom: MEMCG_ID_MAX.saturating_sub(used),
        }
    }

    fn kmem_leak(
        &self,
        now: u64,
        totals: &Totals,
        dying: &[DyingMemcg],
        ids: &IdPicture,
    ) -> Option<Verdict> {
        let cfg = &self.cfg;
        if !self.kernel.slab_pins_dying() {
            return None;
        }
        let w = self.leak_window(now);
        if !(w.accumulating(cfg) || (self.leak_latched && !w.recovering(cfg))) {
            return None;
        }
        if totals.dying < cfg.kmem_min_dying {
            return None;
        }
        let pinned: Vec<&DyingMemcg> = dying
            .iter()
            .filter(|d| d.kmem_bytes.is_some_and(|k| k > 0))
            .collect();
        let known = dying.iter().filter(|d| d.kmem_bytes.is_some()).count();
        if pinned.is_empty() || (pinned.len() as f64) < cfg.kmem_min_pinned_ratio * known as f64 {
            return None;
        }
        let span_s = w.span_ns as f64 / NS_PER_S;
        let growth_per_hour = if span_s > 0.0 {
            w.growth() as f64 / span_s * 3600.0
        } else {
            0.0
        };
        // Growth of the IDs dying memcgs hold: all of it before 4.8, the swap-held share after.
        let id_growth = if ids.held_by_dying {
            growth_per_hour
        } else if ids.swap_held > 0 && ids.dying_seen > 0 {
            growth_per_hour * ids.swap_held as f64 / ids.dying_seen as f64
        } else {
            0.0
        };
        let eta_s = (id_growth > 0.0).then(|| ids.headroom as f64 / id_growth * 3600.0);
        let critical = ids.headroom <= cfg.id_headroom_critical
            || eta_s.is_some_and(|e| e <= cfg.eta_critical.as_secs_f64())
            || totals.dying >= cfg.kmem_dying_critical;
        let kmem_bytes: u64 = pinned.iter().filter_map(|d| d.kmem_bytes).sum();
        let oldest = pinned.first().map(|d| age_s(now, d.rmdir_ns));
        let found_at_start = pinned.iter().filter(|d| d.before_start).count() as u64;
        let eta_txt = match eta_s {
            Some(e) => format!(", IDs run out in ~{}", human_secs(e)),
            None if ids.held_by_dying => ", not growing now".to_string(),
            None => String::new(),
        };
        let summary = format!(
            "{} dying memcgs pinned by kernel memory and not freed ({:+.0}/h over {}; {} \
             removed, {} freed): memcg ID headroom {}{eta_txt}",
            totals.dying,
            growth_per_hour,
            human_secs(span_s),
            w.rmdirs,
            w.frees,
            ids.headroom,
        );
        let ids_txt = if ids.held_by_dying {
            format!(
                "Kernel {} (before 4.8) keeps each dying memcg's ID until it is freed, so they use \
                 up the 65,535 memcg IDs and then every new pod fails with 'mkdir \
                 /sys/fs/cgroup/memory/kubepods/...: no space left on device'. ",
                escape_control(&self.kernel.release)
            )
        } else {
            format!(
                "Kernel {} gives a memcg's ID back at removal unless swap entries hold it ({} of \
                 the dying memcgs seen do), but the pinned memcgs waste memory and slow down \
                 reclaim. ",
                escape_control(&self.kernel.release),
                ids.swap_held
            )
        };
        let recommendation = format!(
            "Kernels before 5.9 leave slab objects charged to a removed memcg, so it stays dying \
             until reboot. {ids_txt}Mitigations: boot with cgroup.memory=nokmem on the kernel \
             command line; use runc built with the nokmem build tag and a kubelet built with \
             -tags=nokmem so they do not switch kernel-memory accounting on; move to a fixed \
             kernel (3.10.0-1075.el7 or later on RHEL/CentOS 7, 5.9 or later elsewhere); reduce \
             cgroup churn (crash-looping pods, frequent jobs, exec probes); then drain and reboot \
             the node to free the leaked memcgs and their IDs."
        );
        Some(Verdict {
            detector: "kmem_leak",
            severity: if critical {
                Severity::Critical
            } else {
                Severity::Warning
            },
            summary,
            evidence: Evidence {
                count: Some(totals.dying),
                dying: Some(totals.dying),
                kmem_pinned: Some(pinned.len() as u64),
                kmem_bytes: Some(kmem_bytes),
                removed_in_window: Some(w.rmdirs),
                freed_in_window: Some(w.frees),
                window_s: Some(round3(span_s)),
                growth_per_hour: Some(round3(growth_per_hour)),
                live_memcgs: Some(ids.live),
                swap_held: Some(ids.swap_held),
                ids_held_by_dying: Some(ids.held_by_dying),
                id_headroom: Some(ids.headroom),
                eta_to_enospc_s: eta_s.map(round3),
                oldest_age_s: oldest,
                found_at_start: Some(found_at_start),
                example_paths: pinned
                    .iter()
                    .take(MAX_EXAMPLES)
                    .map(|d| d.path.clone())
                    .collect(),
                pod_uids: top_pods(pinned.iter().copied()),
                kernel: Some(self.kernel.release.clone()),
                ..Evidence::default()
            },
            recommendation,
        })
    }

    // ---- page_cache_pinning ---------------------------------------------------------------

    fn page_cache(
        &self,
        now: u64,
        totals: &Totals,
        dying: &[DyingMemcg],
        kmem_fired: bool,
    ) -> Option<Verdict> {
        let cfg = &self.cfg;
        let min_age = ns(cfg.page_cache_min_age);
        let slab_pins = self.kernel.slab_pins_dying();
        // `dying` is oldest first, so the first match is the oldest.
        let held: Vec<(&DyingMemcg, u64)> = dying
            .iter()
            .filter(|d| now.saturating_sub(d.rmdir_ns) >= min_age)
            .filter(|d| !(kmem_fired && d.kmem_bytes.is_some_and(|k| k > 0)))
            .filter_map(|d| {
                let user = d.usage_bytes?.saturating_sub(d.kmem_bytes.unwrap_or(0));
                (user > 0).then_some((d, user))
            })
            .collect();
        let n = held.len() as u64;
        if n == 0 || n < cfg.page_cache_min_count {
            return None;
        }
        let total: u64 = held.iter().map(|(_, u)| u).sum();
        let kmem: u64 = held.iter().filter_map(|(d, _)| d.kmem_bytes).sum();
        let oldest = held.first().map(|(d, _)| age_s(now, d.rmdir_ns));
        let found_at_start = held.iter().filter(|(d, _)| d.before_start).count() as u64;
        let at_least = held.first().is_some_and(|(d, _)| d.before_start);
        let summary = format!(
            "{n} dying memcgs held by {} of page cache or shmem charged at removal (oldest {}{} \
             old)",
            human_bytes(total),
            if at_least { "at least " } else { "" },
            human_secs(oldest.unwrap_or(0.0)),
        );
        let slab_note = if slab_pins {
            " On this kernel (before 5.9) kernel memory charged to them pins them too, so some \
             may stay after the pages are gone."
        } else {
            ""
        };
        let recommendation = format!(
            "These memcgs were removed while pages were still charged to them: page cache \
             (reclaimable: it goes under memory pressure or when dropped) or shmem/tmpfs (emptyDir \
             with medium Memory, /dev/shm), which dropping caches does not free; the figures \
             cannot tell the two apart. To confirm, run `sync; echo 3 > /proc/sys/vm/drop_caches` \
             and watch them get freed (release events, the dying count falling); those that stay \
             are likely shmem or tmpfs files still referenced. On cgroup v1, writing 0 to \
             memory.force_empty before rmdir (a runtime hook) reclaims the pages before removal. \
             Harmless in small numbers; many cost memory and slow down reclaim.{slab_note}"
        );
        Some(Verdict {
            detector: "page_cache_pinning",
            severity: if n >= cfg.page_cache_warn_count {
                Severity::Warning
            } else {
                Severity::Info
            },
            summary,
            evidence: Evidence {
                count: Some(n),
                dying: Some(totals.dying),
                total_bytes: Some(total),
                kmem_bytes: held
                    .iter()
                    .any(|(d, _)| d.kmem_bytes.is_some())
                    .then_some(kmem),
                oldest_age_s: oldest,
                found_at_start: Some(found_at_start),
                example_paths: held
                    .iter()
                    .take(MAX_EXAMPLES)
                    .map(|(d, _)| d.path.clone())
                    .collect(),
                pod_uids: top_pods(held.iter().map(|(d, _)| *d)),
                ..Evidence::default()
            },
            recommendation,
        })
    }

    // ---- churn_storm ----------------------------------------------------------------------

    /// Counts a mkdir or rmdir (`removal`, with the cgroup's lifetime when its mkdir was seen)
    /// of a path once across hierarchies, per name shape.
    fn churn(&mut self, ev: &Event<'_>, removal: bool, live_ns: Option<u64>) {
        if !ev.has_cgroup {
            return;
        }
        let leaf = match ev.path.iter().rposition(|&c| c == b'/') {
            Some(i) => &ev.path[i + 1..],
            None => ev.path,
        };
        if leaf.is_empty() {
            return;
        }
        let ts = ev.ts_ns;
        let hash = fnv1a(ev.path);
        let bit = 1u64 << (ev.hierarchy_id % 64);
        let dedup = ns(self.cfg.churn_dedup);
        let seen = &mut self.seen[(hash % DEDUP_SLOTS as u64) as usize];
        let (last, mask) = if removal {
            (&mut seen.rm_ns, &mut seen.rm_mask)
        } else {
            (&mut seen.mk_ns, &mut seen.mk_mask)
        };
        if seen.hash == hash && ts.abs_diff(*last) <= dedup && *mask & bit == 0 {
            *mask |= bit; // the same cgroup through another hierarchy
            return;
        }
        if seen.hash != hash {
            *seen = Seen {
                hash,
                ..Seen::default()
            };
        }
        let (last, mask) = if removal {
            (&mut seen.rm_ns, &mut seen.rm_mask)
        } else {
            (&mut seen.mk_ns, &mut seen.mk_mask)
        };
        *last = ts;
        *mask = bit;

        normalise_leaf(leaf, &mut self.shape_buf);
        if !self.shapes.contains_key(self.shape_buf.as_str()) {
            if removal {
                return; // removals only add to shapes already seen created
            }
            self.make_room_for_shape(ts);
            let ring = Ring::new(self.churn_width, CHURN_BUCKETS);
            self.shapes.insert(
                self.shape_buf.as_str().into(),
                Shape {
                    ring,
                    examples: VecDeque::with_capacity(SHAPE_EXAMPLES),
                    last_ns: ts,
                },
            );
        }
        let window = self.churn_width * CHURN_BUCKETS;
        let Some(shape) = self.shapes.get_mut(self.shape_buf.as_str()) else {
            return;
        };
        shape.last_ns = shape.last_ns.max(ts);
        if let Some(s) = shape.ring.at(ts) {
            if !removal {
                s.mkdirs += 1;
            } else {
                s.rmdirs += 1;
                if let Some(l) = live_ns {
                    s.lived += 1;
                    s.live_ns = s.live_ns.saturating_add(l);
                }
            }
        }
        if !removal {
            let stale = shape
                .examples
                .front()
                .is_some_and(|x| ts.saturating_sub(x.ts) > window);
            if shape.examples.len() < SHAPE_EXAMPLES || stale {
                if shape.examples.len() >= SHAPE_EXAMPLES {
                    shape.examples.pop_front();
                }
                shape.examples.push_back(Example {
                    ts,
                    path: String::from_utf8_lossy(ev.path).into(),
                    comm: String::from_utf8_lossy(ev.comm).into(),
                    pid: ev.pid,
                });
            }
        }
    }

    /// Drops shapes idle for a window; when none is, the one with the fewest recent creations.
    fn make_room_for_shape(&mut self, now: u64) {
        if self.shapes.len() < MAX_SHAPES {
            return;
        }
        let window = self.churn_width * CHURN_BUCKETS;
        self.shapes
            .retain(|_, s| now.saturating_sub(s.last_ns) <= window);
        if self.shapes.len() < MAX_SHAPES {
            return;
        }
        let victim = self
            .shapes
            .iter()
            .map(|(k, s)| {
                let n: u64 = s.ring.buckets(now).map(|b| b.mkdirs).sum();
                (n, s.last_ns, k)
            })
            .min()
            .map(|(_, _, k)| k.clone());
        if let Some(k) = victim {
            self.shapes.remove(&k);
        }
    }

    fn churn_storms(&self, now: u64) -> Vec<Verdict> {
        let cfg = &self.cfg;
        let window_s = (self.churn_width * CHURN_BUCKETS) as f64 / NS_PER_S;
        let min_count = cfg.churn_rate * window_s;
        let mut found: Vec<(f64, &str, ChurnSlot, f64, &Shape)> = Vec::new();
        for (name, shape) in &self.shapes {
            let mut c = ChurnSlot::default();
            for b in shape.ring.buckets(now) {
                c.mkdirs += b.mkdirs;
                c.rmdirs += b.rmdirs;
                c.lived += b.lived;
                c.live_ns = c.live_ns.saturating_add(b.live_ns);
            }
            if c.mkdirs == 0 || (c.mkdirs as f64) < min_count {
                continue;
            }
            let (start, end) = shape.ring.window(now);
            let span = end.saturating_sub(start.max(self.first_ns.unwrap_or(start)));
            if span == 0 {
                continue;
            }
            let span_s = span as f64 / NS_PER_S;
            let rate = c.mkdirs as f64 / span_s;
            if rate < cfg.churn_rate {
                continue;
            }
            found.push((rate, name, c, span_s, shape));
        }
        found.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        found
            .into_iter()
            .take(MAX_CHURN_VERDICTS)
            .map(|(rate, name, c, span_s, shape)| {
                let (mkdirs, rmdirs) = (c.mkdirs, c.rmdirs);
                let mean_life = (c.lived > 0).then(|| c.live_ns as f64 / c.lived as f64 / NS_PER_S);
                let life_txt = match mean_life {
                    Some(l) => format!(", {rmdirs} removed after {} on average", human_secs(l)),
                    None => String::new(),
                };
                let summary = format!(
                    "{:.1} cgroups/s named like {} created ({mkdirs} in {}{life_txt})",
                    rate,
                    escape_control(name),
                    human_secs(span_s),
                );
                let mut recommendation = String::from(
                    "Something creates and removes cgroups in a tight loop: the process shown \
                     made the latest one (systemd when it creates a unit's cgroup on someone's \
                     behalf; then the name says who asked); watch them with `cgtrace live \
                     --path-prefix <parent>`. Storms cost systemd and the kernel CPU (cgroup locks), and on \
                     kernels that keep dying memcgs every created memory cgroup can leave one \
                     behind.",
                );
                if name.starts_with("libcontainer_") && name.contains("systemd_test_default") {
                    recommendation.push_str(
                        " This shape is runc probing systemd with a throw-away slice on every \
                         invocation, including each `runc exec` of a Kubernetes exec probe \
                         (older runc with the systemd cgroup driver): upgrade runc (and the \
                         containerd or docker that ships it), or use fewer or slower exec probes.",
                    );
                }
                Verdict {
                    detector: "churn_storm",
                    severity: if rate >= cfg.churn_critical_rate {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    summary,
                    evidence: Evidence {
                        count: Some(mkdirs),
                        window_s: Some(round3(span_s)),
                        rate_per_s: Some(round3(rate)),
                        shape: Some(name.to_string()),
                        removed: Some(rmdirs),
                        mean_lifetime_s: mean_life.map(round3),
                        example_paths: shape
                            .examples
                            .iter()
                            .rev()
                            .map(|x| x.path.to_string())
                            .collect(),
                        comm: shape.examples.back().map(|x| x.comm.to_string()),
                        pid: shape.examples.back().map(|x| x.pid),
                        ..Evidence::default()
                    },
                    recommendation,
                }
            })
            .collect()
    }

    // ---- crash_loop -----------------------------------------------------------------------

    fn container_mkdir(&mut self, ev: &Event<'_>, obs: &Observed) {
        let Some(pod) = obs.pod else { return };
        let Some(id) = container_leaf_id(ev.path) else {
            return; // a cgroup inside a container, not the container's own
        };
        let ts = ev.ts_ns;
        self.make_room_for_pod(ts, pod);
        let cap = self.loop_cap;
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

    fn container_rmdir(&mut self, ev: &Event<'_>, obs: &Observed) {
        let Some(pod) = obs.pod else { return };
        if container_leaf_id(ev.path).is_none() {
            return;
        }
        if let Some(l) = self.loops.get_mut(&pod) {
            l.pending_rm = l.pending_rm.saturating_add(1);
            l.last_ns = l.last_ns.max(ev.ts_ns);
        }
    }

    fn make_room_for_pod(&mut self, now: u64, pod: u32) {
        if self.loops.len() < MAX_LOOP_PODS || self.loops.contains_key(&pod) {
            return;
        }
        let window = ns(self.cfg.crash_loop_window);
        self.loops
            .retain(|_, l| now.saturating_sub(l.last_ns) <= window);
        if self.loops.len() < MAX_LOOP_PODS {
            return;
        }
        if let Some((_, k)) = self.loops.iter().map(|(k, l)| (l.last_ns, *k)).min() {
            self.loops.remove(&k);
        }
    }

    fn crash_loops(&self, now: u64, tracker: &Tracker) -> Vec<Verdict> {
        let cfg = &self.cfg;
        let window = ns(cfg.crash_loop_window);
        let since = now.saturating_sub(window);
        let min = u64::from(cfg.crash_loop_min.max(1));
        let in_window =
            |q: &VecDeque<u64>| q.iter().filter(|&&t| t > since && t <= now).count() as u64;
        let mut found: Vec<(u64, u64, String, u32, bool)> = Vec::new();
        for (&pod, l) in &self.loops {
            let created = in_window(&l.created);
            let restarts = in_window(&l.restarts);
            if created >= min && restarts + 1 >= min {
                let uid = tracker
                    .pod(pod)
                    .map(|p| p.pod_uid.clone())
                    .unwrap_or_default();
                // The ring is full of creations within the window: there were more.
                let more = l.created.len() >= self.loop_cap
                    && l.created.front().is_some_and(|&t| t > since);
                found.push((restarts, created, uid, pod, more));
            }
        }
        found.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.cmp(&a.1))
                .then_with(|| a.2.cmp(&b.2))
        });
        let window_s = window as f64 / NS_PER_S;
        found
            .into_iter()
            .take(MAX_CRASH_LOOP_VERDICTS)
            .map(|(restarts, created, uid, pod, more)| {
                let stats = tracker.pod(pod);
                let name = stats.and_then(|p| p.name.clone());
                let namespace = stats.and_then(|p| p.namespace.clone());
                let who = match (&namespace, &name) {
                    (Some(ns), Some(n)) => format!("{}/{} ({uid})", escape_control(ns), escape_control(n)),
                    _ => uid.clone(),
                };
                let ids: Vec<String> = self
                    .loops
                    .get(&pod)
                    .map(|l| l.ids.iter().rev().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                let kubectl = match (&namespace, &name) {
                    (Some(ns), Some(n)) => format!(
                        "`kubectl -n {} describe pod {}` and `kubectl -n {} logs {} --previous`",
                        escape_control(ns),
                        escape_control(n),
                        escape_control(ns),
                        escape_control(n)
                    ),
                    _ => format!(
                        "find the pod with `kubectl get pods -A -o \
                         custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,UID:.metadata.uid \
                         | grep {uid}`, then run `kubectl describe pod` and `kubectl logs \
                         --previous` on it"
                    ),
                };
                Verdict {
                    detector: "crash_loop",
                    severity: Severity::Warning,
                    summary: format!(
                        "pod {who} created {}{created} container cgroups in {} ({restarts} \
                         replacing removed ones): its containers keep restarting",
                        if more { "at least " } else { "" },
                        human_secs(window_s)
                    ),
                    evidence: Evidence {
                        count: Some(created),
                        restarts: Some(restarts),
                        window_s: Some(round3(window_s)),
                        pod_uid: Some(uid.clone()),
                        pod_name: name.clone(),
                        pod_namespace: namespace.clone(),
                        qos: stats.and_then(|p| p.qos).map(|q| q.as_str().to_string()),
                        container_ids: ids,
                        ..Evidence::default()
                    },
                    recommendation: format!(
                        "Find out why the containers exit: {kubectl}; look for failing probes, \
                         OOM kills and bad configuration. Every restart creates container \
                         cgroups in every hierarchy and removes the old ones, which on kernels \
                         before 5.9 can leave a dying memcg behind each time."
                    ),
                }
            })
            .collect()
    }

    // ---- mkdir_failed ---------------------------------------------------------------------

    fn mkdir_failed(&mut self, ev: &Event<'_>) {
        let errno = ev.errno.unwrap_or(0).saturating_abs();
        let ts = ev.ts_ns;
        let i = match self.failures.iter().position(|f| f.errno == errno) {
            Some(i) => i,
            None if self.failures.len() < MAX_ERRNOS => {
                self.failures.push(Failures {
                    errno,
                    total: 0,
                    ring: Ring::new(self.leak.width, self.leak.complete()),
                    recent: VecDeque::with_capacity(MAX_EXAMPLES),
                });
                self.failures.len() - 1
            }
            None => {
                // mkdir(2) has about a dozen errnos: a full table means garbage input.
                log::debug!("mkdir_failed: errno {errno} not tracked (too many distinct errnos)");
                return;
            }
        };
        let f = &mut self.failures[i];
        f.total += 1;
        if let Some(c) = f.ring.at(ts) {
            *c += 1;
        }
        if f.recent.len() >= MAX_EXAMPLES {
            f.recent.pop_front();
        }
        f.recent.push_back(Failure {
            ts,
            path: String::from_utf8_lossy(ev.path).into(),
            pod_uid: k8s::parse_path(ev.path).pod_uid.map(Into::into),
            comm: String::from_utf8_lossy(ev.comm).into(),
            pid: ev.pid,
        });
    }

    fn mkdir_failures(&self, now: u64, ids: &IdPicture, kmem_fired: bool) -> Vec<Verdict> {
        let mut out: Vec<Verdict> = self
            .failures
            .iter()
            .filter_map(|f| {
                let last = f.recent.back()?;
                let name = if f.errno == 0 {
                    "unknown errno".to_string()
                } else {
                    errno_name(f.errno)
                };
                let severity = match f.errno {
                    ENOSPC | ENOMEM => Severity::Critical,
                    EEXIST | ENOENT => Severity::Info,
                    _ => Severity::Warning,
                };
                let (in_window, start) = f.ring.recent(now);
                let span = now.saturating_sub(start.max(self.first_ns.unwrap_or(start)));
                let pod_txt = match &last.pod_uid {
                    Some(p) => format!(" for pod {p}"),
                    None => String::new(),
                };
                let age = age_s(now, last.ts);
                let ids_relevant = matches!(f.errno, ENOSPC | ENOMEM) && ids.known;
                let ids_txt = if ids_relevant {
                    format!(
                        "; memcg ID headroom estimate {}{}",
                        ids.headroom,
                        if kmem_fired { ", see kmem_leak" } else { "" }
                    )
                } else {
                    String::new()
                };
                let summary = format!(
                    "mkdir in cgroupfs failed with {name} {} time{} (latest {} ago: {} by \
                     {}[{}]{pod_txt}){ids_txt}",
                    f.total,
                    if f.total == 1 { "" } else { "s" },
                    human_secs(age),
                    escape_control(&last.path),
                    escape_control(&last.comm),
                    last.pid,
                );
                let recommendation = match f.errno {
                    ENOSPC | ENOMEM => format!(
                        "Creating a cgroup failed: pods on this node cannot start ('mkdir ...: \
                         {}'). Depending on the kernel, running out of the 65,535 memcg IDs shows \
                         as ENOSPC or ENOMEM: compare the memcg ID headroom{} with `cgtrace \
                         check`, which counts /proc/cgroups. If dying memcgs hold the IDs, see \
                         kmem_leak: boot with cgroup.memory=nokmem or move to a fixed kernel, \
                         then drain and reboot. On cgroup v2 also check cgroup.max.descendants \
                         and cgroup.max.depth of the parent; ENOMEM can also be real memory \
                         pressure or fragmentation (per-CPU allocations).",
                        if f.errno == ENOSPC {
                            "no space left on device"
                        } else {
                            "cannot allocate memory"
                        },
                        match (ids.known, ids.held_by_dying) {
                            (false, _) => String::new(),
                            (true, true) => format!(
                                " (estimated {} from the memcgs cgtrace saw; this kernel keeps \
                                 the IDs of dying memcgs until they are freed)",
                                ids.headroom
                            ),
                            (true, false) => format!(
                                " (estimated {} from the memcgs cgtrace saw; this kernel gives \
                                 IDs back at removal unless swap holds them)",
                                ids.headroom
                            ),
                        },
                    ),
                    EEXIST | ENOENT => "Usually a harmless race (the cgroup already exists, or \
                         its parent was just removed); worth a look only if it repeats for the \
                         same path."
                        .to_string(),
                    _ => "Check the process and the path: permissions (EACCES/EPERM: user \
                          namespaces, read-only cgroupfs, delegation), or a limit of the parent \
                          cgroup."
                        .to_string(),
                };
                let mut paths: Vec<String> = Vec::new();
                let mut pods: Vec<String> = Vec::new();
                for r in f.recent.iter().rev() {
                    if !paths.iter().any(|p| **p == *r.path) {
                        paths.push(r.path.to_string());
                    }
                    if let Some(p) = &r.pod_uid
                        && !pods.iter().any(|q| **q == **p)
                    {
                        pods.push(p.to_string());
                    }
                }
                Some(Verdict {
                    detector: "mkdir_failed",
                    severity,
                    summary,
                    evidence: Evidence {
                        count: Some(f.total),
                        in_window: Some(in_window),
                        window_s: Some(round3(span as f64 / NS_PER_S)),
                        errno: Some(f.errno),
                        errno_name: Some(name),
                        path: Some(last.path.to_string()),
                        pod_uid: last.pod_uid.as_deref().map(str::to_string),
                        comm: Some(last.comm.to_string()),
                        pid: Some(last.pid),
                        last_seen_age_s: Some(age),
                        example_paths: paths,
                        pod_uids: pods,
                        id_headroom: ids_relevant.then_some(ids.headroom),
                        ids_held_by_dying: ids_relevant.then_some(ids.held_by_dying),
                        dying: ids_relevant.then_some(ids.dying),
                        live_memcgs: ids_relevant.then_some(ids.live),
                        kernel: ids_relevant.then(|| self.kernel.release.clone()),
                        ..Evidence::default()
                    },
                    recommendation,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.evidence.errno.cmp(&b.evidence.errno))
        });
        out
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// Nanoseconds of a duration, saturating.
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn age_s(now: u64, then: u64) -> f64 {
    round3(now.saturating_sub(then) as f64 / NS_PER_S)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn push_capped(q: &mut VecDeque<u64>, v: u64, cap: usize) {
    if q.len() >= cap {
        q.pop_front();
    }
    q.push_back(v);
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
fn top_pods<'a>(it: impl Iterator<Item = &'a DyingMemcg>) -> Vec<String> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for d in it {
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

/// FNV-1a: a hash that is the same in every run (dedupe decisions must replay identically).
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The container id a container cgroup's own leaf names (`<id>`, `<runtime>-<id>.scope`,
/// `<slice>:<runtime>:<id>`); `None` for cgroups inside a container (`<id>/init.scope`) and for
/// runtime monitors (`crio-conmon-<id>.scope`).
fn container_leaf_id(path: &[u8]) -> Option<&[u8]> {
    let leaf = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    };
    let id = match leaf.iter().rposition(|&c| c == b':') {
        Some(i) => &leaf[i + 1..],
        None => {
            let name = leaf.strip_suffix(b".scope").unwrap_or(leaf);
            [&b"cri-containerd-"[..], b"crio-", b"docker-", b"libpod-"]
                .iter()
                .find_map(|p| name.strip_prefix(*p))
                .unwrap_or(name)
        }
    };
    ((12..=128).contains(&id.len()) && id.iter().all(u8::is_ascii_hexdigit)).then_some(id)
}

fn uuid_at(b: &[u8], p: usize) -> bool {
    let Some(u) = b.get(p..p + 36) else {
        return false;
    };
    let sep = u[8];
    if !(sep == b'-' || sep == b'_') || [13, 18, 23].iter().any(|&i| u[i] != sep) {
        return false;
    }
    let hex_ok = [0..8, 9..13, 14..18, 19..23, 24..36]
        .into_iter()
        .all(|r| u[r].iter().all(u8::is_ascii_hexdigit));
    hex_ok && b.get(p + 36).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// Writes a leaf name's shape into `out`: UUIDs (`-` or `_` separated) → `<uid>`; alphanumeric
/// tokens of digits → `<n>`; tokens of 8+ hex digits → `<hex>`; inside other tokens, hex runs of
/// 16+ → `<hex>` (a short head before a 32- or 64-digit id stays, so `pod<32 hex>` → `pod<hex>`)
/// and digit runs → `<n>`. Other bytes are kept (invalid UTF-8 as U+FFFD); at most 200 bytes.
pub fn normalise_leaf(leaf: &[u8], out: &mut String) {
    out.clear();
    let n = leaf.len();
    let mut i = 0;
    while i < n && out.len() < MAX_SHAPE_LEN {
        if !leaf[i].is_ascii_alphanumeric() {
            let e = leaf[i..]
                .iter()
                .position(u8::is_ascii_alphanumeric)
                .map_or(n, |k| i + k);
            out.push_str(&String::from_utf8_lossy(&leaf[i..e]));
            i = e;
            continue;
        }
        let k = leaf[i..]
            .iter()
            .position(|c| !c.is_ascii_alphanumeric())
            .map_or(n, |e| i + e);
        // A UUID's first separator ends an alphanumeric run 8 bytes after the UUID starts.
        if k >= i + 8 && uuid_at(leaf, k - 8) {
            shape_token(&leaf[i..k - 8], out);
            out.push_str("<uid>");
            i = k - 8 + 36;
            continue;
        }
        shape_token(&leaf[i..k], out);
        i = k;
    }
    if out.len() > MAX_SHAPE_LEN {
        let mut cut = MAX_SHAPE_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
}

/// One alphanumeric token of a leaf name.
fn shape_token(t: &[u8], out: &mut String) {
    if t.is_empty() {
        return;
    }
    if t.iter().all(u8::is_ascii_digit) {
        out.push_str("<n>");
        return;
    }
    if t.len() >= 8 && t.iter().all(u8::is_ascii_hexdigit) {
        out.push_str("<hex>");
        return;
    }
    let mut m = 0;
    while m < t.len() {
        if !t[m].is_ascii_hexdigit() {
            out.push(char::from(t[m]));
            m += 1;
            continue;
        }
        let r = t[m..]
            .iter()
            .position(|c| !c.is_ascii_hexdigit())
            .map_or(t.len(), |e| m + e);
        let len = r - m;
        if len >= LONG_HEX {
            let head = if m > 0 {
                [32, 64]
                    .into_iter()
                    .find(|&id| len > id && len - id <= 4)
                    .map_or(0, |id| len - id)
            } else {
                0
            };
            collapse_digits(&t[m..m + head], out);
            out.push_str("<hex>");
        } else {
            collapse_digits(&t[m..r], out);
        }
        m = r;
    }
}

fn collapse_digits(t: &[u8], out: &mut String) {
    let mut in_digits = false;
    for &c in t {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push_str("<n>");
            }
            in_digits = true;
        } else {
            out.push(char::from(c));
            in_digits = false;
        }
    }
}

/// Replaces control characters (C0, DEL, C1) with `\xNN` and bidirectional-text controls with
/// `\u{NNNN}`, so names chosen by whoever created a cgroup cannot drive the terminal.
fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else if matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
        {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// `45s`, `12m 3s`, `10m`, `3h 20m`, `4d 10h`; below a second in milliseconds.
fn human_secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".to_string();
    }
    if s < 1.0 {
        return format!("{:.0}ms", s * 1000.0);
    }
    if s < 60.0 {
        return format!("{:.0}s", s.floor());
    }
    let t = s.round() as u64;
    let (d, h, m, sec) = (t / 86_400, t % 86_400 / 3600, t % 3600 / 60, t % 60);
    let (big, small) = if d > 0 {
        ((d, 'd'), (h, 'h'))
    } else if h > 0 {
        ((h, 'h'), (m, 'm'))
    } else {
        ((m, 'm'), (sec, 's'))
    };
    if small.0 == 0 {
        format!("{}{}", big.0, big.1)
    } else {
        format!("{}{} {}{}", big.0, big.1, small.0, small.1)
    }
}

/// `512 B`, `4.0 KiB`, `200.0 MiB`, `1.5 GiB`.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A verdict as multi-line text for a terminal; every name in it has its control characters
/// escaped as `\xNN`.
pub fn render_verdict(v: &Verdict) -> String {
    let e = &v.evidence;
    let mut s = format!(
        "{} {}: {}\n",
        v.severity.as_str().to_ascii_uppercase(),
        v.detector,
        escape_control(&v.summary)
    );
    let mut line = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            let _ = writeln!(s, "  {label}: {}", escape_control(&value));
        }
    };
    let secs = |v: Option<f64>| v.map(human_secs);
    line("count", e.count.map(|c| c.to_string()));
    line("window", secs(e.window_s));
    line("rate", e.rate_per_s.map(|r| format!("{r:.1}/s")));
    line("shape", e.shape.clone());
    line("dying memcgs", e.dying.map(|c| c.to_string()));
    line(
        "pinned by kernel memory",
        e.kmem_pinned.map(|c| c.to_string()),
    );
    line(
        "removed in window",
        e.removed_in_window.map(|c| c.to_string()),
    );
    line("freed in window", e.freed_in_window.map(|c| c.to_string()));
    line("growth", e.growth_per_hour.map(|g| format!("{g:+.1}/h")));
    line("live memcgs", e.live_memcgs.map(|c| c.to_string()));
    line("held by swap", e.swap_held.map(|c| c.to_string()));
    line(
        "dying memcgs hold IDs",
        e.ids_held_by_dying.map(|b| {
            if b {
                "yes (kernel before 4.8)"
            } else {
                "no (only when swap holds them)"
            }
            .to_string()
        }),
    );
    line(
        "memcg ID headroom",
        e.id_headroom.map(|h| format!("{h} of {MEMCG_ID_MAX}")),
    );
    line("IDs run out in", secs(e.eta_to_enospc_s));
    line("user pages at removal", e.total_bytes.map(human_bytes));
    line("kernel memory at removal", e.kmem_bytes.map(human_bytes));
    line("oldest", secs(e.oldest_age_s));
    line(
        "found dying at start",
        e.found_at_start.map(|c| c.to_string()),
    );
    line("removed", e.removed.map(|c| c.to_string()));
    line("mean lifetime", secs(e.mean_lifetime_s));
    line("restarts", e.restarts.map(|c| c.to_string()));
    line("pod", e.pod_uid.clone());
    line(
        "pod name",
        match (&e.pod_namespace, &e.pod_name) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n.clone()),
            _ => None,
        },
    );
    line("qos", e.qos.clone());
    line(
        "errno",
        e.errno.map(|n| match &e.errno_name {
            Some(name) => format!("{name} ({n})"),
            None => n.to_string(),
        }),
    );
    line("in window", e.in_window.map(|c| c.to_string()));
    line("path", e.path.clone());
    line(
        "process",
        e.comm
            .as_ref()
            .map(|c| format!("{c}[{}]", e.pid.map_or("?".to_string(), |p| p.to_string()))),
    );
    line(
        "last seen",
        secs(e.last_seen_age_s).map(|a| format!("{a} ago")),
    );
    line("kernel", e.kernel.clone());
    let mut list = |label: &str, items: &[String]| {
        if !items.is_empty() {
            let _ = writeln!(s, "  {label}:");
            for i in items {
                let _ = writeln!(s, "    {}", escape_control(i));
            }
        }
    };
    list("pods", &e.pod_uids);
    list("container ids", &e.container_ids);
    list("example paths", &e.example_paths);
    let _ = writeln!(s, "  what to do: {}", escape_control(&v.recommendation));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;
    const MEM: u32 = 4;

    fn uid(i: u64) -> String {
        format!("{:08x}-0000-4000-8000-{:012x}", 0x0a1b_2c3d_u64 + i, i)
    }

    fn cid(i: u64) -> String {
        format!("{:064x}", 0xc0ff_ee00_0000_0000_u64 + i)
    }

    /// An event the way the decoder hands it over.
    fn mk<'a>(kind: EventKind, ts: u64, h: u32, id: u64, path: &'a [u8]) -> Event<'a> {
        Event {
            pid: 4242,
            tid: 4242,
            ..crate::model::tracker::tests::ev(kind, ts, h, id, path)
        }
    }

    /// A tracker and detectors fed together.
    struct Rig {
        t: Tracker,
        d: Detectors,
    }

    impl Rig {
        fn new(release: &str, memory: u32) -> Rig {
            Rig {
                t: Tracker::new(Some(memory)),
                d: Detectors::new(
                    DetectorConfig::default(),
                    KernelFacts::from_release(release),
                ),
            }
        }

        fn feed(&mut self, ev: &Event<'_>) {
            let o = self.t.observe(ev);
            self.d.observe(ev, &o, &self.t);
        }

        fn verdicts(&self) -> Vec<Verdict> {
            self.d.verdicts(&self.t)
        }

        fn find(&self, detector: &str) -> Vec<Verdict> {
            self.verdicts()
                .into_iter()
                .filter(|v| v.detector == detector)
                .collect()
        }
    }

    /// Pods 0..pods, then one container every `every` s for `n` containers, removed `live` s
    /// after creation with the given memcg figures, freed `free_after` s after removal (None:
    /// never). Calls `check` every simulated minute.
    #[allow(clippy::too_many_arguments)]
    fn churn_containers(
        rig: &mut Rig,
        pods: u64,
        n: u64,
        every: u64,
        live: u64,
        figures: (u64, Option<u64>, Option<u64>),
        free_after: Option<u64>,
        mut check: impl FnMut(&Rig, u64),
    ) {
        let mut evs: Vec<(u64, EventKind, u64, String)> = Vec::new();
        for p in 0..pods {
            evs.push((
                S / 2,
                EventKind::Mkdir,
                10 + p,
                format!("/kubepods/burstable/pod{}", uid(p)),
            ));
        }
        for k in 0..n {
            let path = format!("/kubepods/burstable/pod{}/{}", uid(k % pods), cid(k));
            let mk_ts = (every * k + 1) * S;
            let rm_ts = mk_ts + live * S;
            evs.push((mk_ts, EventKind::Mkdir, 1000 + k, path.clone()));
            evs.push((rm_ts, EventKind::Rmdir, 1000 + k, path.clone()));
            if let Some(f) = free_after {
                evs.push((rm_ts + f * S, EventKind::Release, 1000 + k, path));
            }
        }
        evs.sort_by_key(|e| (e.0, e.1 as u8, e.2));
        let mut next_check = 60 * S;
        for (ts, kind, id, path) in &evs {
            while *ts > next_check {
                check(rig, next_check);
                next_check += 60 * S;
            }
            let mut e = mk(*kind, *ts, MEM, *id, path.as_bytes());
            if *kind == EventKind::Rmdir {
                e.usage_bytes = Some(figures.0);
                e.kmem_bytes = figures.1;
                e.memsw_bytes = figures.2;
            }
            rig.feed(&e);
        }
    }

    #[test]
    fn kernel_facts() {
        let k = KernelFacts::from_release("3.10.0-957.21.3.el7.x86_64");
        assert_eq!(k.version, Some((3, 10)));
        assert!(k.ids_held_by_dying() && k.slab_pins_dying());
        let k = KernelFacts::from_release("4.19.0-26-amd64");
        assert!(!k.ids_held_by_dying() && k.slab_pins_dying());
        let k = KernelFacts::from_release("6.18.44-fc-v669");
        assert_eq!(k.version, Some((6, 18)));
        assert!(!k.ids_held_by_dying() && !k.slab_pins_dying());
        let k = KernelFacts::from_release("garbage");
        assert_eq!(k.version, None);
        assert!(!k.ids_held_by_dying() && !k.slab_pins_dying());
    }

    /// 1800 containers over 3 h (one every 6 s), kmem charged, never freed.
    fn kmem_leak_rig(release: &str) -> Rig {
        let mut rig = Rig::new(release, MEM);
        let fig = (256 * 1024, Some(64 * 1024), Some(256 * 1024));
        churn_containers(&mut rig, 10, 1800, 6, 5, fig, None, |rig, now| {
            let v = rig.find("kmem_leak");
            // Not before a whole window of events was seen.
            if now <= 610 * S {
                assert!(v.is_empty(), "at {now}: {v:?}");
            }
            if now >= 700 * S {
                assert_eq!(v.len(), 1, "at {now}");
            }
        });
        rig
    }

    #[test]
    fn kmem_leak_on_3_10() {
        let rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
        assert_eq!(rig.t.now_ns(), 10_800 * S);
        let v = rig.find("kmem_leak");
        assert_eq!(v.len(), 1, "{v:?}");
        let v = &v[0];
        assert_eq!(v.severity, Severity::Critical);
        let e = &v.evidence;
        assert_eq!(e.count, Some(1800));
        assert_eq!(e.dying, Some(1800));
        assert_eq!(e.kmem_pinned, Some(1800));
        assert_eq!(e.kmem_bytes, Some(1800 * 64 * 1024));
        // Window [10200 s, 10800 s): removals at 10200, 10206, …, 10794.
        assert_eq!(e.removed_in_window, Some(100));
        assert_eq!(e.freed_in_window, Some(0));
        assert_eq!(e.window_s, Some(600.0));
        assert_eq!(e.growth_per_hour, Some(600.0));
        assert_eq!(e.live_memcgs, Some(10));
        assert_eq!(e.swap_held, Some(0));
        assert_eq!(e.ids_held_by_dying, Some(true));
        // 65535 − 10 live − 1800 dying, at 600/h: 106.2 h.
        assert_eq!(e.id_headroom, Some(63_725));
        assert_eq!(e.eta_to_enospc_s, Some(382_350.0));
        assert_eq!(e.oldest_age_s, Some(10_794.0));
        assert_eq!(e.example_paths.len(), 5);
        assert_eq!(
            e.example_paths[0],
            format!("/kubepods/burstable/pod{}/{}", uid(0), cid(0))
        );
        assert_eq!(e.pod_uids.len(), 5);
        assert!(v.summary.contains("1800 dying memcgs"), "{}", v.summary);
        assert!(
            v.summary.contains("+600/h") && v.summary.contains("63725"),
            "{}",
            v.summary
        );
        assert!(v.summary.contains("4d 10h"), "{}", v.summary);
        for m in [
            "cgroup.memory=nokmem",
            "nokmem",
            "-tags=nokmem",
            "3.10.0-1075.el7",
            "reboot",
        ] {
            assert!(v.recommendation.contains(m), "{m}: {}", v.recommendation);
        }
        // The pinned memcgs are kmem_leak's, not page cache.
        assert!(rig.find("page_cache_pinning").is_empty());
    }

    #[test]
    fn kmem_leak_on_4_19_has_no_eta() {
        let rig = kmem_leak_rig("4.19.0-26-amd64");
        let v = rig.find("kmem_leak");
        assert_eq!(v.len(), 1, "{v:?}");
        let e = &v[0].evidence;
        assert_eq!(v[0].severity, Severity::Warning);
        assert_eq!(e.growth_per_hour, Some(600.0));
        assert_eq!(e.ids_held_by_dying, Some(false));
        assert_eq!(e.id_headroom, Some(65_525));
        assert_eq!(e.eta_to_enospc_s, None);
    }

    #[test]
    fn kmem_leak_stays_while_nothing_frees_and_goes_when_freed() {
        let mut rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
        // Churn stops; an unrelated event two hours later.
        rig.feed(&mk(EventKind::Mkdir, 18_000 * S, 2, 1, b"/quiet"));
        let v = rig.find("kmem_leak");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].evidence.growth_per_hour, Some(0.0));
        assert_eq!(v[0].evidence.eta_to_enospc_s, None);
        // A reboot-free miracle: 1750 of them are freed.
        for k in 0..1750u64 {
            let path = format!("/kubepods/burstable/pod{}/{}", uid(k % 10), cid(k));
            rig.feed(&mk(
                EventKind::Release,
                18_100 * S + k * MS,
                MEM,
                1000 + k,
                path.as_bytes(),
            ));
        }
        rig.feed(&mk(EventKind::Mkdir, 18_800 * S, 2, 2, b"/quiet2"));
        assert!(rig.find("kmem_leak").is_empty());
    }

    #[test]
    fn no_kmem_leak_for_page_cache_plateau_on_6_x() {
        // Usage mostly file pages, small kmem, freed 60 s after removal.
        let fig = (1 << 20, Some(16 * 1024), Some(1 << 20));
        for release in ["6.18.44-fc-v669", "4.19.0-26-amd64"] {
            let mut rig = Rig::new(release, MEM);
            churn_containers(&mut rig, 10, 1800, 6, 5, fig, Some(60), |rig, now| {
                assert!(rig.find("kmem_leak").is_empty(), "{release} at {now}");
            });
            assert!(rig.find("kmem_leak").is_empty());
            let t = rig.t.totals();
            assert!(t.dying <= 11 && t.freed >= 1789, "{t:?}");
        }
    }

    #[test]
    fn no_kmem_leak_when_dying_are_freed_steadily_on_4_19() {
        // One every 2 s, freed 8 min later: ~240 dying on a plateau, above kmem_min_dying.
        let fig = (1 << 20, Some(64 * 1024), Some(1 << 20));
        let mut rig = Rig::new("4.19.0-26-amd64", MEM);
        let mut max_dying = 0;
        churn_containers(&mut rig, 10, 5400, 2, 1, fig, Some(480), |rig, now| {
            max_dying = max_dying.max(rig.t.totals().dying);
            assert!(rig.find("kmem_leak").is_empty(), "at {now}");
        });
        assert!(max_dying >= 200, "{max_dying}");
        assert!(rig.find("kmem_leak").is_empty());
    }

    #[test]
    fn page_cache_pinning_on_6_x() {
        let mut rig = Rig::new("6.18.44-fc-v669", 0);
        rig.feed(&mk(
            EventKind::Mkdir,
            S,
            0,
            9,
            format!("/kubepods/burstable/pod{}", uid(1)).as_bytes(),
        ));
        for i in 0..50u64 {
            let path = format!("/kubepods/burstable/pod{}/{}", uid(1 + i % 2), cid(i));
            rig.feed(&mk(
                EventKind::Mkdir,
                (2 + i) * S,
                0,
                100 + i,
                path.as_bytes(),
            ));
        }
        for i in 0..50u64 {
            let path = format!("/kubepods/burstable/pod{}/{}", uid(1 + i % 2), cid(i));
            let mut e = mk(EventKind::Rmdir, (100 + i) * S, 0, 100 + i, path.as_bytes());
            e.usage_bytes = Some(4 << 20);
            rig.feed(&e);
        }
        // At 149 s only the 20 removed at 100..=119 s are 30 s old.
        let v = rig.find("page_cache_pinning");
        assert_eq!(v.first().and_then(|v| v.evidence.count), Some(20), "{v:?}");
        rig.feed(&mk(EventKind::Mkdir, 400 * S, 9, 1, b"/tick"));
        let v = rig.find("page_cache_pinning");
        assert_eq!(v.len(), 1, "{:?}", rig.verdicts());
        let v = &v[0];
        assert_eq!(v.severity, Severity::Info);
        assert_eq!(v.evidence.count, Some(50));
        assert_eq!(v.evidence.dying, Some(50));
        assert_eq!(v.evidence.total_bytes, Some(50 * (4 << 20)));
        assert_eq!(v.evidence.kmem_bytes, None);
        assert_eq!(v.evidence.oldest_age_s, Some(300.0));
        assert_eq!(v.evidence.found_at_start, Some(0));
        assert_eq!(v.evidence.pod_uids, vec![uid(1), uid(2)]);
        assert_eq!(
            v.evidence.example_paths[0],
            format!("/kubepods/burstable/pod{}/{}", uid(1), cid(0))
        );
        assert!(v.summary.contains("page cache or shmem"), "{}", v.summary);
        assert!(v.summary.contains("200.0 MiB"), "{}", v.summary);
        assert!(v.recommendation.contains("drop_caches"));
        assert!(v.recommendation.contains("memory.force_empty"));
        assert!(rig.find("kmem_leak").is_empty());
    }

    #[test]
    fn normalises_names() {
        let mut s = String::new();
        let mut shape = |leaf: &[u8]| {
            normalise_leaf(leaf, &mut s);
            s.clone()
        };
        let u = uid(7);
        let u_ = u.replace('-', "_");
        assert_eq!(
            shape(b"libcontainer_12345_systemd_test_default.slice"),
            "libcontainer_<n>_systemd_test_default.slice"
        );
        assert_eq!(
            shape(format!("cri-containerd-{}.scope", cid(3)).as_bytes()),
            "cri-containerd-<hex>.scope"
        );
        assert_eq!(shape(cid(3).as_bytes()), "<hex>");
        assert_eq!(shape(b"3b1f2a9c8d7e"), "<hex>");
        assert_eq!(shape(format!("pod{u}").as_bytes()), "pod<uid>");
        assert_eq!(
            shape(format!("kubepods-burstable-pod{u_}.slice").as_bytes()),
            "kubepods-burstable-pod<uid>.slice"
        );
        assert_eq!(shape(b"pod5d1e0f4b2a3c4d5e6f708192a3b4c5d6"), "pod<hex>");
        assert_eq!(shape(b"podab1e0f4b2a3c4d5e6f708192a3b4c5d6"), "pod<hex>");
        assert_eq!(
            shape(b"run-r3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c.scope"),
            "run-r<hex>.scope"
        );
        assert_eq!(
            shape(b"run-rab2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c.scope"),
            "run-r<hex>.scope"
        );
        assert_eq!(shape(b"session-42.scope"), "session-<n>.scope");
        assert_eq!(shape(b"a1b2"), "a<n>b<n>");
        assert_eq!(shape(b"system.slice"), "system.slice");
        assert_eq!(shape(b"bad\xffname\x1b7"), "bad\u{fffd}name\x1b<n>");
        assert!(shape(&[b'a'; 255]).len() <= MAX_SHAPE_LEN);
        assert_eq!(shape(b""), "");
    }

    #[test]
    fn churn_storm_of_runc_systemd_probes() {
        let mut rig = Rig::new("6.18.44-fc-v669", MEM);
        let t0 = 1000 * S;
        let mut id = 1;
        for i in 0..1000u64 {
            let ts = t0 + i * 20 * MS;
            let path = format!("/libcontainer_{}_systemd_test_default.slice", 40_000 + i);
            for h in 1..=5u32 {
                rig.feed(&mk(
                    EventKind::Mkdir,
                    ts + u64::from(h) * 1000,
                    h,
                    id + u64::from(h),
                    path.as_bytes(),
                ));
            }
            for h in 1..=5u32 {
                let mut e = mk(
                    EventKind::Rmdir,
                    ts + 5 * MS + u64::from(h) * 1000,
                    h,
                    id + u64::from(h),
                    path.as_bytes(),
                );
                e.usage_bytes = Some(0);
                rig.feed(&e);
            }
            id += 10;
        }
        let v = rig.find("churn_storm");
        assert_eq!(v.len(), 1, "{v:?}");
        let v = &v[0];
        let rate = v.evidence.rate_per_s.unwrap_or(0.0);
        assert!((rate - 50.0).abs() <= 1.0, "{rate}");
        assert_eq!(
            v.evidence.shape.as_deref(),
            Some("libcontainer_<n>_systemd_test_default.slice")
        );
        assert_eq!(v.evidence.removed, Some(v.evidence.count.unwrap_or(0)));
        assert_eq!(v.evidence.mean_lifetime_s, Some(0.005));
        assert_eq!(v.severity, Severity::Warning);
        assert!(v.evidence.example_paths[0].starts_with("/libcontainer_4"));
        assert_eq!(v.evidence.comm.as_deref(), Some("runc"));
        assert_eq!(v.evidence.pid, Some(4242));
        assert!(v.recommendation.contains("runc"));
        // None of it is a memcg leak or a crash loop.
        assert!(rig.find("kmem_leak").is_empty() && rig.find("crash_loop").is_empty());
    }

    #[test]
    fn no_churn_storm_for_normal_churn() {
        let mut rig = Rig::new("6.18.44-fc-v669", MEM);
        let words = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
        ];
        for i in 0..120u64 {
            let path = format!("/system.slice/{}-{}.service", words[(i % 7) as usize], i);
            rig.feed(&mk(
                EventKind::Mkdir,
                (10 + i) * S,
                MEM,
                100 + i,
                path.as_bytes(),
            ));
            rig.feed(&mk(
                EventKind::Rmdir,
                (10 + i) * S + 500 * MS,
                MEM,
                100 + i,
                path.as_bytes(),
            ));
        }
        assert!(rig.find("churn_storm").is_empty(), "{:?}", rig.verdicts());
    }

    #[test]
    fn churn_shapes_stay_bounded() {
        let mut rig = Rig::new("6.18.44-fc-v669", MEM);
        for i in 0..5000u64 {
            // Letters only, so every name is its own shape.
            let name: String = format!("{i:05}")
                .bytes()
                .map(|b| char::from(b - b'0' + b'g'))
                .collect();
            let path = format!("/x{name}");
            rig.feed(&mk(
                EventKind::Mkdir,
                10 * S + i * MS,
                MEM,
                100 + i,
                path.as_bytes(),
            ));
        }
        assert!(rig.d.shapes.len() <= MAX_SHAPES);
    }

    fn crash_loop_rig() -> Rig {
        let mut rig = Rig::new("6.18.44-fc-v669", MEM);
        let (a, b) = (uid(1), uid(2));
        rig.feed(&mk(
            EventKind::Mkdir,
            S,
            MEM,
            10,
            format!("/kubepods/burstable/pod{a}").as_bytes(),
        ));
        rig.feed(&mk(
            EventKind::Mkdir,
            S,
            MEM,
            11,
            format!("/kubepods/burstable/pod{b}").as_bytes(),
        ));
        rig.t.set_pod_name(&a, "default", "crashy");
        for j in 0..8u64 {
            let path = format!("/kubepods/burstable/pod{a}/{}", cid(j));
            let ts = 10 * S + j * 35 * S;
            rig.feed(&mk(EventKind::Mkdir, ts, MEM, 100 + j, path.as_bytes()));
            // A cgroup inside the container is not another container.
            let inner = format!("{path}/init.scope");
            rig.feed(&mk(
                EventKind::Mkdir,
                ts + MS,
                MEM,
                200 + j,
                inner.as_bytes(),
            ));
            rig.feed(&mk(
                EventKind::Rmdir,
                ts + 29 * S,
                MEM,
                200 + j,
                inner.as_bytes(),
            ));
            rig.feed(&mk(
                EventKind::Rmdir,
                ts + 30 * S,
                MEM,
                100 + j,
                path.as_bytes(),
            ));
        }
        for j in 0..2u64 {
            let path = format!("/kubepods/burstable/pod{b}/{}", cid(50 + j));
            rig.feed(&mk(
                EventKind::Mkdir,
                20 * S + j * 100 * S,
                MEM,
                300 + j,
                path.as_bytes(),
            ));
            rig.feed(&mk(
                EventKind::Rmdir,
                80 * S + j * 100 * S,
                MEM,
                300 + j,
                path.as_bytes(),
            ));
        }
        rig
    }

    #[test]
    fn crash_loop_names_the_pod() {
        let rig = crash_loop_rig();
        let v = rig.find("crash_loop");
        assert_eq!(v.len(), 1, "{v:?}");
        let v = &v[0];
        assert_eq!(v.evidence.pod_uid, Some(uid(1)));
        assert_eq!(v.evidence.pod_name.as_deref(), Some("crashy"));
        assert_eq!(v.evidence.pod_namespace.as_deref(), Some("default"));
        assert_eq!(v.evidence.qos.as_deref(), Some("burstable"));
        assert_eq!(v.evidence.count, Some(8));
        assert_eq!(v.evidence.restarts, Some(7));
        assert_eq!(v.evidence.window_s, Some(600.0));
        assert_eq!(v.evidence.container_ids.len(), 5);
        assert_eq!(v.evidence.container_ids[0], cid(7));
        assert!(v.summary.contains("default/crashy"), "{}", v.summary);
        assert!(
            v.recommendation
                .contains("kubectl -n default logs crashy --previous")
        );
    }

    #[test]
    fn pod_start_with_init_containers_is_no_crash_loop() {
        let mut rig = Rig::new("6.18.44-fc-v669", MEM);
        let p = uid(3);
        rig.feed(&mk(
            EventKind::Mkdir,
            S,
            MEM,
            10,
            format!("/kubepods/pod{p}").as_bytes(),
        ));
        let mut ts = 2 * S;
        let mut step = |rig: &mut Rig, kind, j: u64| {
            let path = format!("/kubepods/pod{p}/{}", cid(j));
            rig.feed(&mk(kind, ts, MEM, 100 + j, path.as_bytes()));
            ts += S;
        };
        // pause, two init containers one after the other, three app containers.
        step(&mut rig, EventKind::Mkdir, 0);
        step(&mut rig, EventKind::Mkdir, 1);
        step(&mut rig, EventKind::Rmdir, 1);
        step(&mut rig, EventKind::Mkdir, 2);
        step(&mut rig, EventKind::Rmdir, 2);
        for j in 3..6 {
            step(&mut rig, EventKind::Mkdir, j);
        }
        assert!(rig.find("crash_loop").is_empty(), "{:?}", rig.verdicts());
    }

    #[test]
    fn mkdir_failed_enospc() {
        let mut rig = Rig::new("3.10.0-957.el7.x86_64", MEM);
        let path = format!(
            "/sys/fs/cgroup/memory/kubepods/burstable/pod{}/{}",
            uid(5),
            cid(5)
        );
        let mut e = mk(EventKind::MkdirFailed, 42 * S, 0, 0, path.as_bytes());
        e.has_cgroup = false;
        e.errno = Some(28);
        e.pid = 31337;
        rig.feed(&e);
        let mut e2 = mk(
            EventKind::MkdirFailed,
            43 * S,
            0,
            0,
            b"/sys/fs/cgroup/memory/x",
        );
        e2.has_cgroup = false;
        e2.errno = Some(17);
        e2.comm = b"mkdir";
        rig.feed(&e2);
        let v = rig.find("mkdir_failed");
        assert_eq!(v.len(), 2, "{v:?}");
        let c = &v[0];
        assert_eq!(c.severity, Severity::Critical);
        assert_eq!(c.evidence.errno, Some(28));
        assert_eq!(c.evidence.errno_name.as_deref(), Some("ENOSPC"));
        assert_eq!(c.evidence.path.as_deref(), Some(path.as_str()));
        assert_eq!(c.evidence.pod_uid, Some(uid(5)));
        assert_eq!(c.evidence.comm.as_deref(), Some("runc"));
        assert_eq!(c.evidence.pid, Some(31337));
        assert_eq!(c.evidence.count, Some(1));
        assert_eq!(c.evidence.in_window, Some(1));
        assert_eq!(c.evidence.last_seen_age_s, Some(1.0));
        assert_eq!(c.evidence.id_headroom, Some(MEMCG_ID_MAX));
        assert!(
            c.summary.contains("ENOSPC") && c.summary.contains("runc[31337]"),
            "{}",
            c.summary
        );
        assert_eq!(v[1].severity, Severity::Info);
        assert_eq!(v[1].evidence.errno_name.as_deref(), Some("EEXIST"));
        assert_eq!(v[1].evidence.id_headroom, None);
    }

    #[test]
    fn render_escapes_control_characters() {
        let mut rig = Rig::new("6.18.44-fc-v669", MEM);
        let mut e = mk(
            EventKind::MkdirFailed,
            S,
            0,
            0,
            b"/sys/fs/cgroup/evil\x1b[2J\nname\xff",
        );
        e.errno = Some(12);
        e.comm = b"ev\x07il";
        rig.feed(&e);
        let v = rig.find("mkdir_failed");
        assert_eq!(v.len(), 1);
        let text = render_verdict(&v[0]);
        assert!(text.starts_with("CRITICAL mkdir_failed: "), "{text}");
        assert!(text.contains("evil\\x1b[2J\\x0aname\u{fffd}"), "{text}");
        assert!(text.contains("ev\\x07il[4242]"), "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!v[0].summary.chars().any(char::is_control));
        // JSON keeps the real name and stays valid.
        let json = serde_json::to_string(&v[0]).unwrap_or_default();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back["severity"], "critical");
        assert_eq!(
            back["evidence"]["path"],
            "/sys/fs/cgroup/evil\x1b[2J\nname\u{fffd}"
        );
        assert!(back["evidence"].get("growth_per_hour").is_none());
        assert_eq!(escape_control("a\u{202e}b"), "a\\u{202e}b");
    }

    #[test]
    fn renders_every_detector() {
        let rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
        for v in rig.verdicts() {
            let text = render_verdict(&v);
            assert!(text.lines().count() >= 3, "{text}");
            assert!(text.contains("what to do:"));
        }
        let text = render_verdict(&rig.find("kmem_leak")[0]);
        assert!(text.contains("memcg ID headroom: 63725 of 65535"), "{text}");
        assert!(text.contains("IDs run out in: 4d 10h"), "{text}");
        assert!(text.contains("growth: +600.0/h"), "{text}");
    }

    /// Everything at once, replayed: the verdicts depend on the events only.
    fn mixed_run() -> (Vec<Verdict>, String) {
        let mut rig = kmem_leak_rig("3.10.0-957.el7.x86_64");
        let t0 = 11_000 * S;
        for i in 0..600u64 {
            let path = format!("/libcontainer_{}_systemd_test_default.slice", 7000 + i);
            for h in [1u32, 2, MEM] {
                rig.feed(&mk(
                    EventKind::Mkdir,
                    t0 + i * 20 * MS,
                    h,
                    50_000 + i * 8 + u64::from(h),
                    path.as_bytes(),
                ));
            }
        }
        let mut e = mk(
            EventKind::MkdirFailed,
            t0 + 12 * S,
            0,
            0,
            b"/sys/fs/cgroup/memory/kubepods/x",
        );
        e.errno = Some(28);
        e.has_cgroup = false;
        rig.feed(&e);
        let v = rig.verdicts();
        let json = serde_json::to_string(&v).unwrap_or_default();
        (v, json)
    }

    #[test]
    fn verdicts_depend_only_on_events() {
        let (a, ja) = mixed_run();
        let (b, jb) = mixed_run();
        assert_eq!(a, b);
        assert_eq!(ja, jb);
        let names: Vec<&str> = a.iter().map(|v| v.detector).collect();
        for d in ["kmem_leak", "churn_storm", "crash_loop", "mkdir_failed"] {
            assert!(names.contains(&d), "{d} missing from {names:?}");
        }
        assert_eq!(names[0], "kmem_leak");
        let enospc = a.iter().find(|v| v.detector == "mkdir_failed");
        assert!(enospc.is_some_and(|v| v.summary.contains("see kmem_leak")));
    }

    #[test]
    fn rings_ignore_what_they_no_longer_remember() {
        let mut r: Ring<u64> = Ring::new(10, 3);
        *r.at(5).unwrap_or(&mut 0) += 1; // bucket 0
        *r.at(45).unwrap_or(&mut 0) += 1; // bucket 4 reuses bucket 0's slot
        assert!(r.at(5).is_none(), "older than the ring");
        assert_eq!(r.buckets(50).copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.window(50), (20, 50));
        assert_eq!(r.buckets(45).count(), 0);
    }

    #[test]
    fn enospc_without_memory_hierarchy_claims_no_headroom() {
        let mut rig = Rig::new("5.15.0-91-generic", MEM);
        rig.t = Tracker::new(None);
        let mut e = mk(
            EventKind::MkdirFailed,
            S,
            0,
            0,
            b"/sys/fs/cgroup/kubepods/x",
        );
        e.errno = Some(28);
        rig.feed(&e);
        let v = rig.find("mkdir_failed");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].severity, Severity::Critical);
        assert_eq!(v[0].evidence.id_headroom, None);
        assert!(!v[0].summary.contains("headroom"), "{}", v[0].summary);
        assert!(!v[0].recommendation.contains("estimated"));
    }

    #[test]
    fn crash_loop_count_says_when_it_is_a_lower_bound() {
        let mut rig = Rig::new("6.18.44-fc-v669", MEM);
        let p = uid(9);
        rig.feed(&mk(
            EventKind::Mkdir,
            S,
            MEM,
            10,
            format!("/kubepods/pod{p}").as_bytes(),
        ));
        for j in 0..100u64 {
            let path = format!("/kubepods/pod{p}/{}", cid(j));
            rig.feed(&mk(
                EventKind::Mkdir,
                (2 + 5 * j) * S,
                MEM,
                100 + j,
                path.as_bytes(),
            ));
            rig.feed(&mk(
                EventKind::Rmdir,
                (4 + 5 * j) * S,
                MEM,
                100 + j,
                path.as_bytes(),
            ));
        }
        let v = rig.find("crash_loop");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].evidence.count, Some(64));
        assert!(
            v[0].summary.contains("created at least 64"),
            "{}",
            v[0].summary
        );
        assert!(v[0].recommendation.contains(&format!("grep {p}")));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_secs(0.0042), "4ms");
        assert_eq!(human_secs(45.7), "45s");
        assert_eq!(human_secs(600.0), "10m");
        assert_eq!(human_secs(723.0), "12m 3s");
        assert_eq!(human_secs(7200.0), "2h");
        assert_eq!(human_secs(382_350.0), "4d 10h");
        assert_eq!(human_secs(f64::NAN), "?");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(200 << 20), "200.0 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn memcgs_found_dying_at_start_count_with_ages_as_lower_bounds() {
        use crate::model::baseline::{Baseline, BaselineCgroup};
        let mut rig = Rig::new("6.18.44-fc-v669", 0);
        let pod = format!("/kubepods/burstable/pod{}", uid(4));
        rig.t.load_baseline(&Baseline {
            cgroups: vec![
                BaselineCgroup {
                    hierarchy_id: 0,
                    cgroup_id: 1,
                    level: 0,
                    path: b"/".to_vec(),
                },
                BaselineCgroup {
                    hierarchy_id: 0,
                    cgroup_id: 2,
                    level: 3,
                    path: pod.clone().into_bytes(),
                },
            ],
            dying_before_start: vec![(0, 12)],
            taken_at_ns: 5 * S,
        });
        // The start-up walk: 12 dying containers of the pod (leaf names, parent id in css).
        for i in 0..12u64 {
            let leaf = cid(i);
            let mut e = mk(EventKind::DyingAtStart, 5 * S, 0, 100 + i, leaf.as_bytes());
            e.css = 2;
            e.usage_bytes = Some(1 << 20);
            rig.feed(&e);
        }
        // Not freed within the run, no removals either: no growth, no kmem_leak on any kernel.
        rig.feed(&mk(EventKind::Mkdir, 100 * S, 9, 1, b"/tick"));
        let v = rig.find("page_cache_pinning");
        assert_eq!(v.len(), 1, "{:?}", rig.verdicts());
        let e = &v[0].evidence;
        assert_eq!(e.count, Some(12));
        assert_eq!(e.found_at_start, Some(12));
        assert_eq!(e.oldest_age_s, Some(95.0));
        assert_eq!(e.example_paths[0], format!("{pod}/{}", cid(0)));
        assert!(
            v[0].summary.contains("oldest at least 1m 35s old"),
            "{}",
            v[0].summary
        );
        // Freed: counted as frees, not as removals.
        for i in 0..12u64 {
            let path = format!("{pod}/{}", cid(i));
            rig.feed(&mk(
                EventKind::Release,
                200 * S + i,
                0,
                100 + i,
                path.as_bytes(),
            ));
        }
        let w = rig.d.leak_window(300 * S);
        assert_eq!((w.rmdirs, w.frees), (0, 12));
        assert!(rig.find("page_cache_pinning").is_empty());
    }
}
