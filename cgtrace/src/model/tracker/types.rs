//! What the tracker hands out: per-pod counters, what one event changed, dying memcgs, totals.
use serde::Serialize;

use crate::model::k8s::Qos;

/// Per-pod counters (memcgs on the memory hierarchy).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PodStats {
    pub pod_uid: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub qos: Option<Qos>,
    pub live: u64,
    pub dying: u64,
    pub freed: u64,
    /// Container cgroups created (all hierarchies count once: memory hierarchy only).
    pub containers_created: u64,
}

/// What one event changed, for histograms and detectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The cgroup is a memcg on the memory hierarchy.
    pub memcg: bool,
    /// A pod seen for the first time (index for [`Tracker::pod`]): look its name up.
    pub new_pod: Option<u32>,
    /// mkdir → rmdir, on rmdir.
    pub live_ns: Option<u64>,
    /// rmdir → freed, when the memcg was freed.
    pub dying_ns: Option<u64>,
    /// A dying memcg that existed before start was freed now.
    pub freed_before_start: bool,
    pub qos: Option<Qos>,
    /// The pod of the cgroup, if any.
    pub pod: Option<u32>,
    /// The cgroup is a container (the path names a container id).
    pub container: bool,
    /// A pod forgotten by this event (its last tracked cgroup went): drop what is kept for it.
    /// [`Tracker::pod`] still names it during this event; later pods may reuse its number.
    pub forgotten_pod: Option<u32>,
}

/// One dying memcg, for reports and detectors.
#[derive(Clone, Debug, Serialize)]
pub struct DyingMemcg {
    pub hierarchy_id: u32,
    pub cgroup_id: u64,
    pub path: String,
    pub pod_uid: Option<String>,
    pub rmdir_ns: u64,
    pub usage_bytes: Option<u64>,
    pub kmem_bytes: Option<u64>,
    pub memsw_bytes: Option<u64>,
    /// The path was cut to the event's buffer.
    pub path_truncated: bool,
    /// Found dying by the start-up walk: `rmdir_ns` is when it was found, not when removed.
    pub before_start: bool,
}

/// Totals for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Memcgs alive now (baseline + created − removed).
    pub live: u64,
    /// Memcgs removed but not freed: seen removed during the run plus those dying before start
    /// that were not freed since.
    pub dying: u64,
    /// Memcgs freed during the run.
    pub freed: u64,
    /// Dying memcgs the kernel held at start.
    pub dying_before_start: u64,
    /// Of those, freed during the run (attributed by their release event's path).
    pub freed_before_start: u64,
}

/// What the tracker's tables hold (`cgroups`, `names`, …) and have room for (`*_slots`,
/// `*_buckets`, `css_capacity`): after cgroups and pods come and go, back where they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub cgroups: usize,
    pub cgroup_slots: usize,
    pub cgroup_buckets: usize,
    pub names: usize,
    pub name_slots: usize,
    pub dirs: usize,
    pub dir_slots: usize,
    pub strings: usize,
    pub string_slots: usize,
    pub pods: usize,
    pub pod_slots: usize,
    pub pod_buckets: usize,
    pub css_joins: usize,
    pub css_capacity: usize,
    pub released_unnamed: usize,
}

/// A pod in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct PodSummary {
    #[serde(flatten)]
    pub stats: PodStats,
    /// Age of the oldest dying memcg, seconds.
    pub oldest_dying_age_s: Option<f64>,
}

/// A memcg the tracker holds, as [`super::Tracker::memcg`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedMemcg {
    /// Its path relative to the hierarchy root.
    pub path: Vec<u8>,
    /// Its pod (index for [`super::Tracker::pod`]).
    pub pod: Option<u32>,
    /// A container's own memcg.
    pub container: bool,
    /// Live, or removed and dying.
    pub state: super::State,
}
