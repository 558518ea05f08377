//! Prometheus metrics (`cgtrace attach --metrics ADDR`), encoded with `prometheus-client` in the
//! OpenMetrics text format and served by a tiny HTTP/1.1 server on tokio.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cgtrace_events_total` | counter | `event` |
//! | `cgtrace_lost_events_total` | counter | `event` |
//! | `cgtrace_cgroups` | gauge (memcgs) | `state` = `live`, `dying`, `freed` |
//! | `cgtrace_dying_before_start` | gauge | |
//! | `cgtrace_pod_dying_memcgs` | gauge | `pod_uid`, `namespace`, `name`, `qos` (top pods, rest in `pod_uid="other"`) |
//! | `cgtrace_oom_kills_total` | counter (every QoS × constraint from the start) | `qos`, `constraint` |
//! | `cgtrace_pod_oom_kills_total` | counter | `pod_uid`, `namespace`, `name`, `qos` (the first pods killed, later ones in `pod_uid="other"`) |
//! | `cgtrace_cgroup_live_seconds` | histogram | `hierarchy`, `qos` |
//! | `cgtrace_cgroup_dying_seconds` | histogram | `hierarchy`, `qos` |
//! | `cgtrace_memcg_id_headroom` | gauge (absent when unknown) | |
//! | `cgtrace_verdict` | gauge: 0 none, 1 info, 2 warning, 3 critical | `detector` |
//! | `cgtrace_up` | gauge: 1 attached and draining | |
//! | `cgtrace_attached_info` | info | what the caller sets (tier, kernel, …) |
//! | `cgtrace_self_cpu_seconds_total`, `cgtrace_self_resident_memory_bytes`, `cgtrace_self_cgroup_memory_bytes` | counter, gauges | cgtrace's own CPU and memory ([`crate::pipeline::own_cost`]) |
//! | `cgtrace_ring_drains_total`, `cgtrace_ring_records_total`, `cgtrace_ring_fill_bytes`, `cgtrace_ring_size_bytes` | counters, gauges | the ring buffer |
//! | `cgtrace_bpf_program_run_seconds_total`, `cgtrace_bpf_program_runs_total` | counters (they move while `kernel.bpf_stats_enabled` is 1) | `program` |
//! | `cgtrace_bpf_stats_enabled` | gauge | |
//!
//! Per-event calls ([`Metrics::on_event`], [`Metrics::on_observed`]) allocate nothing once a
//! label set has been seen: the metric handles are cached by label.
use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use cgtrace_common::EventKind;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::{
    model::tracker::{Observed, Tracker},
    model::{k8s::Qos, oom::Constraint},
    pipeline::own_cost::{OwnCost, OwnCostMetrics},
};

mod server;

pub use server::{parse_listen_addr, serve_listener};

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Default bound on `cgtrace_pod_dying_memcgs` series (plus one `pod_uid="other"`).
pub const DEFAULT_POD_LIMIT: usize = 200;

/// `/healthz` fails when the ring buffer was not drained for longer than this.
pub const HEALTHY_DRAIN_AGE: Duration = Duration::from_secs(5);

/// Lifetime histogram buckets: 1 ms × 4^k, k = 0..14 (1 ms … 67,109 s ≈ 18.6 h), then +Inf.
const BUCKET_START_S: f64 = 0.001;
const BUCKET_FACTOR: f64 = 4.0;
const BUCKET_COUNT: u16 = 14;

/// Names of the metric families as exposed (histograms without `_bucket`/`_sum`/`_count`).
pub const METRIC_NAMES: &[&str] = &[
    "cgtrace_events_total",
    "cgtrace_lost_events_total",
    "cgtrace_cgroups",
    "cgtrace_dying_before_start",
    "cgtrace_pod_dying_memcgs",
    "cgtrace_oom_kills_total",
    "cgtrace_pod_oom_kills_total",
    "cgtrace_cgroup_live_seconds",
    "cgtrace_cgroup_dying_seconds",
    "cgtrace_memcg_id_headroom",
    "cgtrace_verdict",
    "cgtrace_up",
    "cgtrace_attached_info",
    "cgtrace_self_cpu_seconds_total",
    "cgtrace_self_resident_memory_bytes",
    "cgtrace_self_cgroup_memory_bytes",
    "cgtrace_ring_drains_total",
    "cgtrace_ring_records_total",
    "cgtrace_ring_fill_bytes",
    "cgtrace_ring_size_bytes",
    "cgtrace_bpf_program_run_seconds_total",
    "cgtrace_bpf_program_runs_total",
    "cgtrace_bpf_stats_enabled",
];

/// A label value escaped for the text format (`prometheus-client` writes values verbatim, and
/// pod names come from directory names).
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    pod_uid: String,
    namespace: String,
    name: String,
    qos: String,
}

impl PodLabels {
    /// The series of the pods beyond the limit.
    fn other() -> PodLabels {
        PodLabels {
            pod_uid: "other".into(),
            namespace: String::new(),
            name: String::new(),
            qos: String::new(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OomLabels {
    qos: String,
    constraint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifetimeLabels {
    hierarchy: String,
    qos: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectorLabels {
    detector: String,
}

fn lifetime_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        BUCKET_START_S,
        BUCKET_FACTOR,
        BUCKET_COUNT,
    ))
}

type HistogramFamily = Family<LifetimeLabels, Histogram, fn() -> Histogram>;

/// `cgtrace_memcg_id_headroom`: a gauge that is absent while its value is unknown.
#[derive(Debug, Default)]
struct OptionalGauge {
    value: AtomicI64,
    present: AtomicBool,
}

impl Collector for OptionalGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        if !self.present.load(Ordering::Relaxed) {
            return Ok(());
        }
        let g = ConstGauge::new(self.value.load(Ordering::Relaxed));
        let m = encoder.encode_descriptor(
            "memcg_id_headroom",
            "Memcg IDs still free (65535 minus online memcgs and offline memcgs holding one)",
            None,
            g.metric_type(),
        )?;
        g.encode(m)
    }
}

/// `cgtrace_attached_info`: set once the probes are attached.
#[derive(Debug, Default)]
struct AttachedInfo {
    labels: Mutex<Option<Vec<(String, String)>>>,
}

impl Collector for AttachedInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let labels = match self.labels.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let Some(labels) = labels else {
            return Ok(());
        };
        let info = Info::new(labels);
        let m = encoder.encode_descriptor(
            "attached",
            "How cgtrace is attached to this kernel",
            None,
            info.metric_type(),
        )?;
        info.encode(m)
    }
}

/// The metrics of one cgtrace process. Use it behind one lock ([`MetricsState`]): an
/// [`Metrics::update`] and a scrape must not interleave.
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    lost: Family<EventLabels, Counter>,
    dying_before_start: Gauge,
    pod_dying: Family<PodLabels, Gauge>,
    oom_kills: Family<OomLabels, Counter>,
    pod_oom_kills: Family<PodLabels, Counter>,
    /// Pods with a `cgtrace_pod_oom_kills_total` series of their own (by UID); the rest count
    /// in `pod_uid="other"`. Counters keep their series, so the first pods keep them.
    pod_oom_series: HashMap<Box<str>, Counter>,
    live_seconds: HistogramFamily,
    dying_seconds: HistogramFamily,
    headroom: Arc<OptionalGauge>,
    verdicts: Family<DetectorLabels, Gauge>,
    up: Gauge,
    attached: Arc<AttachedInfo>,
    pod_limit: usize,
    event_cache: HashMap<Box<str>, Counter>,
    lost_cache: HashMap<Box<str>, Counter>,
    /// Per hierarchy label: [qos index][0 live, 1 dying].
    lifetime_cache: HashMap<Box<str>, [[Option<Histogram>; 2]; 4]>,
    state_gauges: [Gauge; 3],
    own: OwnCostMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A count as a gauge value (saturating).
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// All families registered; counters for every event kind and the `cgroups` states exist
    /// from the start (at 0), so `increase()` sees their first change.
    pub fn new() -> Metrics {
        Metrics::with_pod_limit(DEFAULT_POD_LIMIT)
    }

    /// Like [`Metrics::new`], with at most `pod_limit` pods in `cgtrace_pod_dying_memcgs`.
    pub fn with_pod_limit(pod_limit: usize) -> Metrics {
        let cgroups = Family::<StateLabels, Gauge>::default();
        let mut registry = Registry::with_prefix("cgtrace");
        let own = OwnCostMetrics::register(&mut registry);
        let mut m = Metrics {
            own,
            registry,
            events: Family::default(),
            lost: Family::default(),
            state_gauges: ["live", "dying", "freed"].map(|s| {
                cgroups.get_or_create_owned(&StateLabels {
                    state: s.to_string(),
                })
            }),
            dying_before_start: Gauge::default(),
            pod_dying: Family::default(),
            oom_kills: Family::default(),
            pod_oom_kills: Family::default(),
            pod_oom_series: HashMap::new(),
            live_seconds: Family::new_with_constructor(lifetime_histogram as fn() -> Histogram),
            dying_seconds: Family::new_with_constructor(lifetime_histogram as fn() -> Histogram),
            headroom: Arc::new(OptionalGauge::default()),
            verdicts: Family::default(),
            up: Gauge::default(),
            attached: Arc::new(AttachedInfo::default()),
            pod_limit,
            event_cache: HashMap::new(),
            lost_cache: HashMap::new(),
            lifetime_cache: HashMap::new(),
        };
        m.register_families(cgroups);
        for k in EventKind::ALL {
            m.event_counter(k.name());
            m.lost_counter(k.name());
        }
        for q in Qos::CLASSES {
            for c in Constraint::ALL {
                m.oom_kills.get_or_create_owned(&OomLabels {
                    qos: Qos::name(q).to_string(),
                    constraint: c.name().to_string(),
                });
            }
        }
        m
    }

    /// Registers every family (`cgroups` is kept only through its three gauges).
    fn register_families(&mut self, cgroups: Family<StateLabels, Gauge>) {
        let registry = &mut self.registry;
        registry.register(
            "events",
            "Cgroup lifecycle events seen, by kind",
            self.events.clone(),
        );
        registry.register(
            "lost_events",
            "Events lost because the ring buffer was full, by kind",
            self.lost.clone(),
        );
        registry.register(
            "cgroups",
            "Memory cgroups by state: live (in cgroupfs), dying (removed, not freed), freed (since start)",
            cgroups,
        );
        registry.register(
            "dying_before_start",
            "Dying memcgs the kernel already held when cgtrace started",
            self.dying_before_start.clone(),
        );
        registry.register(
            "pod_dying_memcgs",
            "Dying memcgs per pod (the pods with the most; the rest summed in pod_uid=\"other\")",
            self.pod_dying.clone(),
        );
        registry.register(
            "oom_kills",
            "OOM kills, by the victim's QoS class and the constraint (memcg: a cgroup limit; none: node-wide)",
            self.oom_kills.clone(),
        );
        registry.register(
            "pod_oom_kills",
            "OOM kills per pod (the first pods killed; the rest summed in pod_uid=\"other\")",
            self.pod_oom_kills.clone(),
        );
        registry.register_with_unit(
            "cgroup_live",
            "Cgroup live time, mkdir to rmdir",
            Unit::Seconds,
            self.live_seconds.clone(),
        );
        registry.register_with_unit(
            "cgroup_dying",
            "Cgroup dying time, rmdir to freed",
            Unit::Seconds,
            self.dying_seconds.clone(),
        );
        registry.register_collector(Box::new(self.headroom.clone()));
        registry.register(
            "verdict",
            "Detector verdicts: 0 none, 1 info, 2 warning, 3 critical",
            self.verdicts.clone(),
        );
        registry.register(
            "up",
            "1 while the probes are attached and the ring buffer is drained",
            self.up.clone(),
        );
        registry.register_collector(Box::new(self.attached.clone()));
    }

    fn event_counter(&mut self, kind: &str) -> &Counter {
        let (cache, family) = (&mut self.event_cache, &self.events);
        cache.entry(kind.into()).or_insert_with(|| {
            family.get_or_create_owned(&EventLabels {
                event: escape_label(kind),
            })
        })
    }

    fn lost_counter(&mut self, kind: &str) -> &Counter {
        let (cache, family) = (&mut self.lost_cache, &self.lost);
        cache.entry(kind.into()).or_insert_with(|| {
            family.get_or_create_owned(&EventLabels {
                event: escape_label(kind),
            })
        })
    }

    /// One event of kind `kind_name` (`mkdir`, `rmdir`, …: [`EventKind::name`]).
    pub fn on_event(&mut self, kind_name: &str) {
        match self.event_cache.get(kind_name) {
            Some(c) => {
                c.inc();
            }
            None => {
                self.event_counter(kind_name).inc();
            }
        }
    }

    /// `n` events of kind `kind_name` lost.
    pub fn on_lost(&mut self, kind_name: &str, n: u64) {
        match self.lost_cache.get(kind_name) {
            Some(c) => {
                c.inc_by(n);
            }
            None => {
                self.lost_counter(kind_name).inc_by(n);
            }
        }
    }

    /// An OOM kill of a victim of class `qos` (None: not a pod), with `constraint`; `pod`: its
    /// UID, namespace and name when it is a pod's.
    pub fn on_oom_kill(
        &mut self,
        qos: Option<Qos>,
        constraint: Constraint,
        pod: Option<(&str, Option<&str>, Option<&str>)>,
    ) {
        self.oom_kills
            .get_or_create(&OomLabels {
                qos: Qos::name(qos).to_string(),
                constraint: constraint.name().to_string(),
            })
            .inc();
        let Some((uid, ns, name)) = pod else { return };
        if let Some(c) = self.pod_oom_series.get(uid) {
            c.inc();
            return;
        }
        let labels = if self.pod_oom_series.len() < self.pod_limit {
            PodLabels {
                pod_uid: escape_label(uid),
                namespace: escape_label(ns.unwrap_or("")),
                name: escape_label(name.unwrap_or("")),
                qos: Qos::name(qos).to_string(),
            }
        } else {
            PodLabels::other()
        };
        let c = self.pod_oom_kills.get_or_create_owned(&labels);
        c.inc();
        if labels.pod_uid != "other" {
            self.pod_oom_series.insert(uid.into(), c);
        }
    }

    /// The lifetimes one event completed, into `cgtrace_cgroup_{live,dying}_seconds`.
    /// `hierarchy_label` names the hierarchy (`memory`, `cpu,cpuacct`, `unified`); for memcgs
    /// (`obs.memcg`) pass the memory hierarchy's label, whatever the event carried. `qos` is
    /// the pod's class where the tracker attributed one (memcgs), else `none`.
    pub fn on_observed(&mut self, hierarchy_label: &str, obs: &Observed) {
        if obs.live_ns.is_none() && obs.dying_ns.is_none() {
            return;
        }
        let qi = Qos::index(obs.qos);
        if !self.lifetime_cache.contains_key(hierarchy_label) {
            self.lifetime_cache
                .insert(hierarchy_label.into(), Default::default());
        }
        let Some(slots) = self.lifetime_cache.get_mut(hierarchy_label) else {
            return;
        };
        for (phase, ns) in [(0, obs.live_ns), (1, obs.dying_ns)] {
            let Some(ns) = ns else { continue };
            let h = slots[qi][phase].get_or_insert_with(|| {
                let labels = LifetimeLabels {
                    hierarchy: escape_label(hierarchy_label),
                    qos: Qos::name(obs.qos).to_string(),
                };
                if phase == 0 {
                    self.live_seconds.get_or_create_owned(&labels)
                } else {
                    self.dying_seconds.get_or_create_owned(&labels)
                }
            });
            h.observe(ns as f64 / 1e9);
        }
    }

    /// Refreshes the gauges from the tracker (about once a second): memcg counts, the pods with
    /// the most dying memcgs (series of pods that dropped out are removed), the memcg ID
    /// headroom (`None`: the metric is absent) and the detectors' verdicts
    /// (`(detector, 0 none | 1 info | 2 warning | 3 critical)`).
    pub fn update(&mut self, tracker: &Tracker, headroom: Option<u64>, verdicts: &[(&str, u8)]) {
        let t = tracker.totals();
        let [live, dying, freed] = &self.state_gauges;
        live.set(to_i64(t.live));
        dying.set(to_i64(t.dying));
        freed.set(to_i64(t.freed));
        self.dying_before_start.set(to_i64(t.dying_before_start));

        let pods = tracker.dying_pods();
        self.pod_dying.clear();
        let mut other = 0u64;
        for (i, p) in pods.iter().enumerate() {
            if i >= self.pod_limit {
                other = other.saturating_add(p.stats.dying);
                continue;
            }
            let labels = PodLabels {
                pod_uid: escape_label(&p.stats.pod_uid),
                namespace: escape_label(p.stats.namespace.as_deref().unwrap_or("")),
                name: escape_label(p.stats.name.as_deref().unwrap_or("")),
                qos: Qos::name(p.stats.qos).to_string(),
            };
            self.pod_dying
                .get_or_create(&labels)
                .set(to_i64(p.stats.dying));
        }
        if pods.len() > self.pod_limit {
            self.pod_dying
                .get_or_create(&PodLabels::other())
                .set(to_i64(other));
        }

        match headroom {
            Some(v) => {
                self.headroom.value.store(to_i64(v), Ordering::Relaxed);
                self.headroom.present.store(true, Ordering::Relaxed);
            }
            None => self.headroom.present.store(false, Ordering::Relaxed),
        }

        self.verdicts.clear();
        for &(detector, level) in verdicts {
            self.verdicts
                .get_or_create(&DetectorLabels {
                    detector: escape_label(detector),
                })
                .set(i64::from(level));
        }
    }

    /// Sets `cgtrace_up` (the server does this from [`MetricsState::healthy`] on each scrape).
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    /// Sets `cgtrace_attached_info{…} 1`, e.g. `[("tier", "fentry"), ("kernel", "6.8.0")]`.
    pub fn set_attached_info(&self, labels: &[(&str, &str)]) {
        let v: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), escape_label(v)))
            .collect();
        match self.attached.labels.lock() {
            Ok(mut g) => *g = Some(v),
            Err(p) => *p.into_inner() = Some(v),
        }
    }

    /// Everything in the OpenMetrics text format ([`CONTENT_TYPE`]), ending in `# EOF`.
    /// cgtrace's own cost, sampled (about once a second).
    pub fn update_own_cost(&mut self, c: &OwnCost) {
        self.own.update(c);
    }

    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(16 * 1024);
        if let Err(e) = encode(&mut s, &self.registry) {
            // Only a label set or collector failing to write could cause this.
            log::warn!("encoding metrics failed: {e}");
        }
        s
    }
}

/// What the HTTP server shares with the pipeline: the metrics and the health inputs.
pub struct MetricsState {
    /// The metrics.
    pub metrics: Metrics,
    /// The probes are attached.
    pub attached: bool,
    /// When the ring buffer was last drained.
    pub last_drain: Instant,
}

impl MetricsState {
    /// Not attached yet; `last_drain` is now.
    pub fn new(metrics: Metrics) -> MetricsState {
        MetricsState {
            metrics,
            attached: false,
            last_drain: Instant::now(),
        }
    }

    /// Attached, and the ring buffer was drained within [`HEALTHY_DRAIN_AGE`].
    pub fn healthy(&self) -> bool {
        self.attached && self.last_drain.elapsed() <= HEALTHY_DRAIN_AGE
    }

    /// Why [`MetricsState::healthy`] is false; `None` when healthy.
    pub fn unhealthy_reason(&self) -> Option<String> {
        if !self.attached {
            return Some("probes not attached".into());
        }
        let age = self.last_drain.elapsed();
        (age > HEALTHY_DRAIN_AGE).then(|| {
            format!(
                "ring buffer not drained for {:.1}s (limit {}s)",
                age.as_secs_f64(),
                HEALTHY_DRAIN_AGE.as_secs()
            )
        })
    }

    /// The scrape body: `cgtrace_up` set from health, then everything encoded.
    pub fn scrape(&self) -> String {
        self.metrics.set_up(self.healthy());
        self.metrics.encode()
    }
}

#[cfg(test)]
mod tests;
