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
    fmt, io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
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
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use crate::{
    model::tracker::{Observed, Tracker},
    model::{k8s::Qos, oom::Constraint},
    pipeline::own_cost::{OwnCost, OwnCostMetrics},
};

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

/// Parses `--metrics`: `9101` or `:9101` listen on 127.0.0.1 (only what is asked for is
/// exposed); `localhost:9101`, `0.0.0.0:9101`, `[::]:9101`, `10.0.0.1:9101` as given.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let examples = "examples: 9101, :9101, 127.0.0.1:9101, 0.0.0.0:9101, [::]:9101";
    let port_only = t.strip_prefix(':').unwrap_or(t);
    let addr = if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only
            .parse()
            .map_err(|_| format!("invalid port in listen address {s:?} (1-65535)"))?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else if let Some(port) = t.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in listen address {s:?} (1-65535)"))?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        t.parse()
            .map_err(|_| format!("invalid listen address {s:?} ({examples})"))?
    };
    if addr.port() == 0 {
        return Err(format!(
            "listen address {s:?} has port 0; give a port ({examples})"
        ));
    }
    Ok(addr)
}

/// Longest request head (request line and headers) read.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Time a client gets to send its request head, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;

/// Binds `addr` and serves `/metrics` and `/healthz` on it forever, one task per connection.
/// Returns only if binding fails.
pub async fn serve(addr: SocketAddr, state: Arc<Mutex<MetricsState>>) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_listener(listener, state).await
}

/// [`serve`] on a listener the caller bound (to learn the port of `:0`, or to report a bind
/// error before attaching).
pub async fn serve_listener(
    listener: TcpListener,
    state: Arc<Mutex<MetricsState>>,
) -> io::Result<()> {
    serve_with(listener, state, IO_TIMEOUT).await
}

/// Decrements the connection count when a connection task ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_with(
    listener: TcpListener,
    state: Arc<Mutex<MetricsState>>,
    io_timeout: Duration,
) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                log::warn!("metrics server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let slot = ConnectionSlot(active.clone());
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = handle(stream, &state, io_timeout).await {
                log::debug!("metrics server: connection: {e}");
            }
        });
    }
}

/// How reading a request head ended.
enum Head {
    /// The request line.
    Line(String),
    /// The client closed before sending a line.
    Closed,
    /// The head exceeded [`MAX_REQUEST_HEAD`].
    TooLarge,
}

/// Reads the request head (up to the blank line) and returns its first line.
async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        let n = stream.read(&mut buf[len..]).await?;
        let eof = n == 0;
        len += n;
        let head = &buf[..len];
        let complete =
            head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
        if complete || (eof && head.contains(&b'\n')) {
            let end = head.iter().position(|&b| b == b'\n').unwrap_or(len);
            let line = String::from_utf8_lossy(&head[..end]);
            return Ok(Head::Line(line.trim_end_matches('\r').to_string()));
        }
        if eof {
            return Ok(Head::Closed);
        }
    }
}

fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        r.push_str("Allow: GET, HEAD\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The response to a request line.
fn route(line: &str, state: &Mutex<MetricsState>) -> Vec<u8> {
    let mut parts = line.split_ascii_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return response("400 Bad Request", TEXT, "bad request\n", false);
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response("405 Method Not Allowed", TEXT, "only GET and HEAD\n", false);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    match path {
        "/metrics" => {
            let body = lock().scrape();
            response("200 OK", CONTENT_TYPE, &body, head_only)
        }
        "/healthz" => match lock().unhealthy_reason() {
            None => response("200 OK", TEXT, "ok\n", head_only),
            Some(why) => response(
                "503 Service Unavailable",
                TEXT,
                &format!("unhealthy: {why}\n"),
                head_only,
            ),
        },
        _ => response(
            "404 Not Found",
            TEXT,
            "not found: try /metrics or /healthz\n",
            head_only,
        ),
    }
}

async fn handle(
    mut stream: TcpStream,
    state: &Mutex<MetricsState>,
    io_timeout: Duration,
) -> io::Result<()> {
    let reply = match timeout(io_timeout, read_head(&mut stream)).await {
        Ok(Ok(Head::Line(line))) => route(&line, state),
        Ok(Ok(Head::Closed)) => return Ok(()),
        Ok(Ok(Head::TooLarge)) => response(
            "431 Request Header Fields Too Large",
            TEXT,
            "request head too large\n",
            false,
        ),
        Ok(Err(e)) => return Err(e),
        Err(_) => response("408 Request Timeout", TEXT, "request timeout\n", false),
    };
    match timeout(io_timeout, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client too slow taking the response",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tracker::tests::{UID, ev};
    use std::io::{Read, Write};

    /// The value of the sample `name{labels}` (labels as written, sorted as encoded).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split(' ').next()?.parse().ok())
    }

    fn series_count(text: &str, name: &str) -> usize {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .count()
    }

    fn obs(memcg: bool, qos: Option<Qos>, live_ns: Option<u64>, dying_ns: Option<u64>) -> Observed {
        Observed {
            memcg,
            qos,
            live_ns,
            dying_ns,
            ..Observed::default()
        }
    }

    /// A tracker with `n` burstable pods; pod i has i + 1 dying memcgs (one container each,
    /// removed i + 1 times).
    fn tracker_with_pods(n: usize) -> Tracker {
        let mut t = Tracker::new(Some(4));
        let mut id = 1000u64;
        let mut ts = 1u64;
        for i in 0..n {
            let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
            let pod = format!("/kubepods/burstable/pod{uid}");
            t.observe(&ev(EventKind::Mkdir, ts, 4, id, pod.as_bytes()));
            id += 1;
            for _ in 0..=i {
                let c = format!("{pod}/{id:064x}");
                t.observe(&ev(EventKind::Mkdir, ts, 4, id, c.as_bytes()));
                ts += 1;
                t.observe(&ev(EventKind::Rmdir, ts, 4, id, c.as_bytes()));
                id += 1;
            }
        }
        t
    }

    #[test]
    fn encodes_names_labels_and_values() {
        let mut m = Metrics::new();
        m.update_own_cost(&OwnCost {
            cpu_seconds: 1.5,
            programs: vec![crate::pipeline::own_cost::ProgramStat {
                name: "raw_cgroup_mkdir".into(),
                run_time_ns: 3_000,
                run_count: 2,
            }],
            bpf_stats: true,
            ..OwnCost::default()
        });
        for _ in 0..3 {
            m.on_event("mkdir");
        }
        m.on_event("rmdir");
        m.on_lost("release", 7);
        m.on_observed(
            "memory",
            &obs(true, Some(Qos::Burstable), Some(2_000_000), None),
        );
        m.on_observed(
            "memory",
            &obs(true, Some(Qos::Burstable), None, Some(3_000_000_000)),
        );
        m.on_observed("cpu,cpuacct", &obs(false, None, Some(500_000_000), None));
        m.on_observed("memory", &obs(true, None, None, None));

        let mut t = Tracker::new(Some(4));
        let pod = format!("/kubepods/burstable/pod{UID}");
        let ctr = format!("{pod}/{:064x}", 7);
        t.observe(&ev(EventKind::Mkdir, 10, 4, 100, pod.as_bytes()));
        t.observe(&ev(EventKind::Mkdir, 20, 4, 101, ctr.as_bytes()));
        t.observe(&ev(EventKind::Rmdir, 50, 4, 101, ctr.as_bytes()));
        t.set_pod_name(UID, "kube-system", "we\"ird\\pod\nname");
        m.update(&t, Some(65_000), &[("dying_growth", 2), ("id_headroom", 0)]);
        m.set_attached_info(&[("tier", "fentry"), ("kernel", "6.8.0")]);
        m.on_oom_kill(
            Some(Qos::Burstable),
            Constraint::Memcg,
            Some((UID, None, None)),
        );
        let text = MetricsState::new(m).scrape();

        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            sample(&text, "cgtrace_events_total{event=\"mkdir\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "cgtrace_events_total{event=\"rmdir\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "cgtrace_events_total{event=\"css_free\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "cgtrace_lost_events_total{event=\"release\"}"),
            Some(7.0)
        );
        assert_eq!(
            sample(&text, "cgtrace_lost_events_total{event=\"mkdir\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&text, "cgtrace_cgroups{state=\"live\"}"), Some(1.0));
        assert_eq!(sample(&text, "cgtrace_cgroups{state=\"dying\"}"), Some(1.0));
        assert_eq!(sample(&text, "cgtrace_cgroups{state=\"freed\"}"), Some(0.0));
        assert_eq!(sample(&text, "cgtrace_dying_before_start"), Some(0.0));
        let pod_series = format!(
            "cgtrace_pod_dying_memcgs{{pod_uid=\"{UID}\",namespace=\"kube-system\",\
             name=\"we\\\"ird\\\\pod\\nname\",qos=\"burstable\"}}"
        );
        assert_eq!(sample(&text, &pod_series), Some(1.0), "{text}");
        assert_eq!(sample(&text, "cgtrace_memcg_id_headroom"), Some(65_000.0));
        assert_eq!(
            sample(&text, "cgtrace_verdict{detector=\"dying_growth\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "cgtrace_verdict{detector=\"id_headroom\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&text, "cgtrace_up"), Some(0.0), "not attached");
        assert_eq!(
            sample(
                &text,
                "cgtrace_attached_info{tier=\"fentry\",kernel=\"6.8.0\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert!(text.contains("# TYPE cgtrace_cgroup_live_seconds histogram"));
        assert!(text.contains("# UNIT cgtrace_cgroup_live_seconds seconds"));
        let live = "cgtrace_cgroup_live_seconds";
        let mem = "hierarchy=\"memory\",qos=\"burstable\"";
        assert_eq!(sample(&text, &format!("{live}_count{{{mem}}}")), Some(1.0));
        assert_eq!(sample(&text, &format!("{live}_sum{{{mem}}}")), Some(0.002));
        // 2 ms falls in (1 ms, 4 ms]: not in le=0.001, in le=0.004.
        assert_eq!(
            sample(&text, &format!("{live}_bucket{{le=\"0.001\",{mem}}}")),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("{live}_bucket{{le=\"0.004\",{mem}}}")),
            Some(1.0),
            "{text}"
        );
        let dying = "cgtrace_cgroup_dying_seconds";
        assert_eq!(sample(&text, &format!("{dying}_count{{{mem}}}")), Some(1.0));
        assert_eq!(sample(&text, &format!("{dying}_sum{{{mem}}}")), Some(3.0));
        let cpu = "hierarchy=\"cpu,cpuacct\",qos=\"none\"";
        assert_eq!(sample(&text, &format!("{live}_count{{{cpu}}}")), Some(1.0));
        assert_eq!(series_count(&text, &format!("{dying}_count")), 1, "{text}");
        // 14 finite buckets and +Inf.
        let buckets = text
            .lines()
            .filter(|l| l.starts_with(&format!("{live}_bucket{{")) && l.contains(mem))
            .count();
        assert_eq!(buckets, 15);
        assert!(text.contains(&format!("{live}_bucket{{le=\"+Inf\",{mem}}} 1")));
        assert!(text.contains(&format!("{live}_bucket{{le=\"67108.864\",{mem}}} 1")));
        let prog = "program=\"raw_cgroup_mkdir\"";
        assert_eq!(
            sample(&text, &format!("cgtrace_bpf_program_runs_total{{{prog}}}")),
            Some(2.0)
        );
        assert_eq!(sample(&text, "cgtrace_self_cpu_seconds_total"), Some(1.5));
        assert_eq!(sample(&text, "cgtrace_bpf_stats_enabled"), Some(1.0));
        for name in METRIC_NAMES {
            let family = name
                .strip_suffix("_total")
                .or_else(|| name.strip_suffix("_info"))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn headroom_is_absent_when_unknown_and_dropped_series_go() {
        let mut m = Metrics::new();
        let t = tracker_with_pods(3);
        m.update(&t, Some(10), &[("a", 1)]);
        let text = m.encode();
        assert_eq!(sample(&text, "cgtrace_memcg_id_headroom"), Some(10.0));
        assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), 3);
        m.update(&Tracker::new(Some(4)), None, &[]);
        let text = m.encode();
        assert!(!text.contains("cgtrace_memcg_id_headroom"), "{text}");
        assert!(!text.contains("cgtrace_verdict"), "{text}");
        assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), 0, "{text}");
        assert_eq!(sample(&text, "cgtrace_cgroups{state=\"dying\"}"), Some(0.0));
    }

    #[test]
    fn oom_kills_by_qos_and_constraint_and_per_pod_bounded() {
        let mut m = Metrics::with_pod_limit(2);
        let text = m.encode();
        // Every class × constraint is there from the start, at 0.
        assert_eq!(
            series_count(&text, "cgtrace_oom_kills_total"),
            4 * 5,
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "cgtrace_oom_kills_total{qos=\"burstable\",constraint=\"memcg\"}"
            ),
            Some(0.0)
        );
        m.on_oom_kill(
            Some(Qos::Burstable),
            Constraint::Memcg,
            Some(("u1", None, None)),
        );
        m.on_oom_kill(
            Some(Qos::Burstable),
            Constraint::Memcg,
            Some(("u1", Some("ns"), Some("later"))),
        );
        m.on_oom_kill(
            Some(Qos::Besteffort),
            Constraint::None,
            Some(("u2", Some("n\"s"), Some("b"))),
        );
        m.on_oom_kill(
            Some(Qos::Guaranteed),
            Constraint::None,
            Some(("u3", None, None)),
        );
        m.on_oom_kill(None, Constraint::Memcg, None);
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                "cgtrace_oom_kills_total{qos=\"burstable\",constraint=\"memcg\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "cgtrace_oom_kills_total{qos=\"none\",constraint=\"memcg\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "cgtrace_oom_kills_total{qos=\"besteffort\",constraint=\"none\"}"
            ),
            Some(1.0)
        );
        // One series per pod (its first labels), the third pod in "other".
        assert_eq!(
            series_count(&text, "cgtrace_pod_oom_kills_total"),
            3,
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "cgtrace_pod_oom_kills_total{pod_uid=\"u1\",namespace=\"\",name=\"\",qos=\"burstable\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "cgtrace_pod_oom_kills_total{pod_uid=\"u2\",namespace=\"n\\\"s\",name=\"b\",qos=\"besteffort\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "cgtrace_pod_oom_kills_total{pod_uid=\"other\",namespace=\"\",name=\"\",qos=\"\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn pod_cardinality_is_bounded() {
        let n = 25;
        let t = tracker_with_pods(n);
        let mut m = Metrics::with_pod_limit(10);
        m.update(&t, None, &[]);
        let text = m.encode();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("cgtrace_pod_dying_memcgs{"))
            .collect();
        assert_eq!(lines.len(), 11, "10 pods and other: {text}");
        // Pods 15..25 (16..=25 dying each) are kept; 1..=15 go to "other".
        let other = lines
            .iter()
            .find(|l| l.contains("pod_uid=\"other\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
        assert_eq!(other, Some((1..=15u64).sum::<u64>()));
        let kept: u64 = lines
            .iter()
            .filter(|l| !l.contains("pod_uid=\"other\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(kept, (16..=25u64).sum::<u64>());
        assert_eq!(kept + other.unwrap_or(0), t.totals().dying);
        // Under the limit: no "other".
        let mut m = Metrics::new();
        m.update(&t, None, &[]);
        let text = m.encode();
        assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), n);
        assert!(!text.contains("{pod_uid=\"other\""), "{text}");
    }

    #[test]
    fn pod_series_and_caches_return_to_the_baseline_as_pods_come_and_go() {
        let mut t = Tracker::new(Some(4));
        let mut m = Metrics::with_pod_limit(10);
        let mut lifetimes = crate::pipeline::histogram::Lifetimes::new(Some(4));
        let mut ts = 1u64;
        let mut feed = |t: &mut Tracker, m: &mut Metrics, kind: EventKind, id: u64, p: &str| {
            ts += 1_000;
            let e = ev(kind, ts, 4, id, p.as_bytes());
            let o = t.observe(&e);
            m.on_event(kind.name());
            m.on_observed("memory", &o);
            lifetimes.record(4, &o);
        };
        let mut sizes = None;
        for round in 0..40u64 {
            let paths: Vec<(u64, String, String)> = (0..50u64)
                .map(|i| {
                    let n = round * 50 + i;
                    let pod = format!("/kubepods/burstable/pod{n:08x}-0000-4000-8000-{n:012x}");
                    let ctr = format!("{pod}/{n:064x}");
                    (n, pod, ctr)
                })
                .collect();
            for (n, pod, ctr) in &paths {
                feed(&mut t, &mut m, EventKind::Mkdir, 10 + 2 * n, pod);
                feed(&mut t, &mut m, EventKind::Mkdir, 11 + 2 * n, ctr);
                feed(&mut t, &mut m, EventKind::Rmdir, 11 + 2 * n, ctr);
                feed(&mut t, &mut m, EventKind::Rmdir, 10 + 2 * n, pod);
            }
            m.update(&t, None, &[]);
            assert_eq!(series_count(&m.encode(), "cgtrace_pod_dying_memcgs"), 11);
            for (n, pod, ctr) in &paths {
                feed(&mut t, &mut m, EventKind::Release, 11 + 2 * n, ctr);
                feed(&mut t, &mut m, EventKind::Release, 10 + 2 * n, pod);
            }
            m.update(&t, None, &[]);
            let text = m.encode();
            assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), 0, "{text}");
            // Series (lines), not bytes: the counters' digits grow.
            let size = (
                text.lines().count(),
                m.event_cache.len(),
                m.lifetime_cache.len(),
                t.footprint(),
            );
            match &sizes {
                None => sizes = Some(size),
                Some(s) => assert_eq!(&size, s, "round {round}"),
            }
        }
        assert_eq!(t.totals().freed, 4000);
        lifetimes.update_pods(&t);
        assert!(lifetimes.pods().is_empty());
    }

    #[test]
    fn listen_addresses() {
        let ok = |s: &str| parse_listen_addr(s).map(|a| a.to_string());
        assert_eq!(ok("9101").as_deref(), Ok("127.0.0.1:9101"));
        assert_eq!(ok(":9101").as_deref(), Ok("127.0.0.1:9101"));
        assert_eq!(ok(" 9101 ").as_deref(), Ok("127.0.0.1:9101"));
        assert_eq!(ok("localhost:9101").as_deref(), Ok("127.0.0.1:9101"));
        assert_eq!(ok("0.0.0.0:9101").as_deref(), Ok("0.0.0.0:9101"));
        assert_eq!(ok("10.0.0.1:9101").as_deref(), Ok("10.0.0.1:9101"));
        assert_eq!(ok("[::]:9101").as_deref(), Ok("[::]:9101"));
        assert_eq!(ok("[::1]:9101").as_deref(), Ok("[::1]:9101"));
        for bad in [
            "",
            ":",
            "0",
            ":0",
            "65536",
            "99999999999",
            "-1",
            "abc",
            "1.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:x",
            "::1:9101",
            "host.example:9101",
            "9101\nx",
            "0.0.0.0:0",
        ] {
            let e = parse_listen_addr(bad).expect_err(bad);
            assert!(!e.contains('\n') && !e.is_empty(), "{bad:?}: {e}");
        }
    }

    /// Runs the server on its own thread and runtime (as `attach` runs it next to the
    /// pipeline); returns its address.
    fn start_server(state: Arc<Mutex<MetricsState>>, io_timeout: Duration) -> SocketAddr {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("addr");
        std_listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let _ = serve_with(listener, state, io_timeout).await;
            });
        });
        addr
    }

    /// Sends `request` on a fresh connection; returns (status line, body).
    fn request(addr: SocketAddr, request: &[u8]) -> (String, String) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        let text = String::from_utf8(raw).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let status = head.lines().next().unwrap_or_default().to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("content length");
        if !request.starts_with(b"HEAD") {
            assert_eq!(body.len(), len, "{head}");
        }
        (status, body.to_string())
    }

    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
    }

    #[test]
    fn serves_metrics_and_health() {
        let state = Arc::new(Mutex::new(MetricsState::new(Metrics::new())));
        let addr = start_server(state.clone(), IO_TIMEOUT);
        let count = "cgtrace_cgroup_dying_seconds_count{hierarchy=\"memory\",qos=\"besteffort\"}";

        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.ends_with("# EOF\n"));
        assert_eq!(sample(&body, count), None, "no observation yet");
        assert_eq!(sample(&body, "cgtrace_up"), Some(0.0));

        let feed = |n: u64| {
            let mut s = state.lock().expect("lock");
            for i in 0..n {
                s.metrics.on_event("release");
                s.metrics.on_observed(
                    "memory",
                    &obs(true, Some(Qos::Besteffort), None, Some(i * 1_000_000)),
                );
            }
        };
        feed(17);
        let (_, body) = get(addr, "/metrics");
        assert_eq!(sample(&body, count), Some(17.0));
        feed(25);
        let (_, body) = get(addr, "/metrics?x=1");
        assert_eq!(sample(&body, count), Some(42.0));
        assert_eq!(
            sample(&body, "cgtrace_events_total{event=\"release\"}"),
            Some(42.0)
        );

        // Health: not attached → 503; attached and drained → 200; drain too old → 503.
        let (status, body) = get(addr, "/healthz");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(body.contains("not attached"), "{body}");
        {
            let mut s = state.lock().expect("lock");
            s.attached = true;
            s.last_drain = Instant::now();
        }
        assert_eq!(
            get(addr, "/healthz"),
            ("HTTP/1.1 200 OK".into(), "ok\n".into())
        );
        let (_, body) = get(addr, "/metrics");
        assert_eq!(sample(&body, "cgtrace_up"), Some(1.0));
        if let Some(old) = Instant::now().checked_sub(Duration::from_secs(6)) {
            state.lock().expect("lock").last_drain = old;
            let (status, body) = get(addr, "/healthz");
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
            assert!(body.contains("not drained"), "{body}");
            let (_, body) = get(addr, "/metrics");
            assert_eq!(sample(&body, "cgtrace_up"), Some(0.0));
            state.lock().expect("lock").last_drain = Instant::now();
        }

        // Everything else.
        assert_eq!(get(addr, "/").0, "HTTP/1.1 404 Not Found");
        assert_eq!(get(addr, "/metricsx").0, "HTTP/1.1 404 Not Found");
        let (status, _) = request(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        let (status, body) = request(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
        let (status, _) = request(addr, b"GARBAGE\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST_HEAD * 2));
        let (status, _) = request(addr, &huge);
        assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
        // A bare request line from a minimal client that closes its side.
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /healthz\n").expect("send");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        // A connection that sends nothing and closes does not disturb the server.
        drop(std::net::TcpStream::connect(addr).expect("connect"));
        assert_eq!(get(addr, "/healthz").0, "HTTP/1.1 200 OK");
    }

    #[test]
    fn slow_clients_time_out() {
        let state = Arc::new(Mutex::new(MetricsState::new(Metrics::new())));
        let addr = start_server(state, Duration::from_millis(200));
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metr").expect("send");
        let started = Instant::now();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
