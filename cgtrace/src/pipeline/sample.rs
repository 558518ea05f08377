//! The pipeline's periodic state, for views that show the run as it goes (`cgtrace top`) and
//! plots of a recorded run (`cgtrace report --html`): a [`Snapshot`] of the pipeline once a
//! second and a bounded [`History`] of them.
//!
//! A [`SampleSink`] rides the pipeline beside the other sinks and counts what the tracker keeps
//! no count of: creations and removals per name shape (the shapes of the churn_storm detector,
//! [`normalise_leaf`]), failed mkdirs per errno, and the lifetime histograms. [`Sampler`] turns
//! the pipeline and those counts into a snapshot at a given time. Live, the time is the monotonic
//! clock every second; in a replay, each second of event time ([`Sampler::before_event`]), so a
//! replay gives the samples the live run took.
use std::{cell::RefCell, collections::HashMap, io, rc::Rc};

use cgtrace_common::EventKind;

use crate::{
    detectors::normalise_leaf,
    kernel::mkdir_errno::errno_name,
    model::{
        event::Event,
        k8s::Qos,
        tracker::{Observed, PodStats, PodSummary, Totals, Tracker},
    },
    pipeline::{
        Pipeline,
        histogram::{Lifetimes, Phase},
        output::{Sink, Summary},
    },
};

const NS_PER_S: u64 = 1_000_000_000;
/// Most name shapes counted between two samples; the rest count as [`OTHER_SHAPE`].
const MAX_SHAPES: usize = 256;
/// The shape of cgroups beyond [`MAX_SHAPES`].
pub const OTHER_SHAPE: &str = "<other>";
/// Most distinct errnos of failed mkdirs.
const MAX_ERRNOS: usize = 32;
/// Name shapes and pods kept per history point.
pub const TOP_PER_POINT: usize = 5;
/// Most distinct shape and pod names a history remembers.
const MAX_NAMES: usize = 64;

/// Creations and removals of one shape since the last sample, per hierarchy: a cgroup made in
/// a dozen v1 hierarchies counts once (the most any hierarchy saw).
#[derive(Debug, Default)]
struct ShapeCount {
    /// (hierarchy id, mkdirs, rmdirs)
    by_hierarchy: Vec<(u32, u64, u64)>,
}

impl ShapeCount {
    fn add(&mut self, hierarchy_id: u32, removal: bool) {
        let i = match self.by_hierarchy.iter().position(|h| h.0 == hierarchy_id) {
            Some(i) => i,
            None => {
                self.by_hierarchy.push((hierarchy_id, 0, 0));
                self.by_hierarchy.len() - 1
            }
        };
        let h = &mut self.by_hierarchy[i];
        if removal {
            h.2 += 1;
        } else {
            h.1 += 1;
        }
    }

    fn counts(&self) -> (u64, u64) {
        let mk = self.by_hierarchy.iter().map(|h| h.1).max().unwrap_or(0);
        let rm = self.by_hierarchy.iter().map(|h| h.2).max().unwrap_or(0);
        (mk, rm)
    }
}

/// What the [`SampleSink`] counts.
#[derive(Debug)]
pub struct Counters {
    shapes: HashMap<Box<str>, ShapeCount>,
    shape_buf: String,
    /// errno → failed mkdirs (totals since start).
    failed: Vec<(i32, u64)>,
    /// OOM kills since start (the marks the kernel did not count as kills left out, where the
    /// tier tells), by constraint.
    oom_by_constraint: Vec<(&'static str, u64)>,
    /// Lifetime histograms (the same as `attach` and `report` keep).
    pub lifetimes: Lifetimes,
}

impl Counters {
    pub fn new(memory_hierarchy: Option<u32>) -> Counters {
        Counters {
            shapes: HashMap::new(),
            shape_buf: String::with_capacity(256),
            failed: Vec::new(),
            oom_by_constraint: Vec::new(),
            lifetimes: Lifetimes::new(memory_hierarchy),
        }
    }

    fn oom_kill(&mut self, constraint: &'static str) {
        match self
            .oom_by_constraint
            .iter_mut()
            .find(|(c, _)| *c == constraint)
        {
            Some((_, n)) => *n += 1,
            None => self.oom_by_constraint.push((constraint, 1)),
        }
    }

    fn churn(&mut self, ev: &Event<'_>, removal: bool) {
        if !ev.has_cgroup {
            return;
        }
        let leaf = match memchr::memrchr(b'/', ev.path) {
            Some(i) => &ev.path[i + 1..],
            None => ev.path,
        };
        if leaf.is_empty() {
            return;
        }
        normalise_leaf(leaf, &mut self.shape_buf);
        if let Some(c) = self.shapes.get_mut(self.shape_buf.as_str()) {
            c.add(ev.hierarchy_id, removal);
            return;
        }
        let key: &str = if self.shapes.len() < MAX_SHAPES {
            &self.shape_buf
        } else {
            OTHER_SHAPE
        };
        self.shapes
            .entry(key.into())
            .or_default()
            .add(ev.hierarchy_id, removal);
    }

    fn failed_mkdir(&mut self, errno: i32) {
        if let Some(f) = self.failed.iter_mut().find(|f| f.0 == errno) {
            f.1 += 1;
        } else if self.failed.len() < MAX_ERRNOS {
            self.failed.push((errno, 1));
        }
    }
}

/// The sink that feeds [`Counters`]; the [`Sampler`] holds the other end.
pub struct SampleSink(pub Rc<RefCell<Counters>>);

impl Sink for SampleSink {
    fn event(&mut self, _ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        Ok(())
    }
    fn observed(&mut self, ev: &Event<'_>, obs: &Observed, _t: &Tracker) -> io::Result<()> {
        let mut c = self.0.borrow_mut();
        match ev.kind {
            EventKind::Mkdir => c.churn(ev, false),
            EventKind::Rmdir => c.churn(ev, true),
            EventKind::MkdirFailed => c.failed_mkdir(ev.errno.unwrap_or(0).saturating_abs()),
            EventKind::OomKill => {
                if let Some(o) = ev.oom.filter(|o| o.counted != Some(false)) {
                    c.oom_kill(o.constraint.name());
                }
            }
            _ => {}
        }
        c.lifetimes.record(ev.hierarchy_id, obs);
        Ok(())
    }
    fn summary(&mut self, _s: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One pod's row: the tracker's counters and the age of its oldest dying memcg, and the memory
/// charged to its dying memcgs.
#[derive(Clone, Debug)]
pub struct PodRow {
    pub pod: PodSummary,
    /// Memory charged to its dying memcgs when they were removed (None: not known for any).
    pub dying_bytes: Option<u64>,
}

impl PodRow {
    /// `namespace/name`, else the UID.
    pub fn label(&self) -> String {
        let s = &self.pod.stats;
        match (&s.namespace, &s.name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            _ => s.pod_uid.clone(),
        }
    }
}

/// Creations per second of one name shape between two samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeRate {
    pub shape: String,
    pub mkdirs_per_s: f64,
    pub rmdirs_per_s: f64,
}

/// Creations per second of one shape now and over a recent window of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeWindowRow {
    pub shape: String,
    /// In the last sample.
    pub now_per_s: f64,
    /// Means over the window's samples.
    pub mkdirs_per_s: f64,
    pub rmdirs_per_s: f64,
}

/// The shapes of the last `len` samples, so a view still shows what churned a moment ago.
#[derive(Clone, Debug)]
pub struct ShapeWindow {
    len: usize,
    samples: std::collections::VecDeque<Vec<ShapeRate>>,
}

impl ShapeWindow {
    pub fn new(len: usize) -> ShapeWindow {
        ShapeWindow {
            len: len.max(1),
            samples: std::collections::VecDeque::new(),
        }
    }

    pub fn push(&mut self, shapes: &[ShapeRate]) {
        if self.samples.len() >= self.len {
            self.samples.pop_front();
        }
        self.samples.push_back(shapes.to_vec());
    }

    /// The shapes seen in the window, most created (window mean) first.
    pub fn rows(&self) -> Vec<ShapeWindowRow> {
        let n = self.samples.len().max(1) as f64;
        let mut rows: Vec<ShapeWindowRow> = Vec::new();
        for (k, sample) in self.samples.iter().enumerate() {
            let last = k + 1 == self.samples.len();
            for r in sample {
                let i = match rows.iter().position(|x| x.shape == r.shape) {
                    Some(i) => i,
                    None => {
                        rows.push(ShapeWindowRow {
                            shape: r.shape.clone(),
                            now_per_s: 0.0,
                            mkdirs_per_s: 0.0,
                            rmdirs_per_s: 0.0,
                        });
                        rows.len() - 1
                    }
                };
                rows[i].mkdirs_per_s += r.mkdirs_per_s / n;
                rows[i].rmdirs_per_s += r.rmdirs_per_s / n;
                if last {
                    rows[i].now_per_s = r.mkdirs_per_s;
                }
            }
        }
        rows.sort_by(|a, b| {
            b.mkdirs_per_s
                .total_cmp(&a.mkdirs_per_s)
                .then_with(|| a.shape.cmp(&b.shape))
        });
        rows
    }

    /// Samples in the window.
    pub fn samples(&self) -> usize {
        self.samples.len()
    }
}

/// Percentiles of one lifetime histogram, nanoseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LifetimeRow {
    /// `live` or `dying`.
    pub phase: &'static str,
    /// QoS class (`none`: memcgs outside pods).
    pub qos: &'static str,
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// The pipeline at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// When (event time, monotonic nanoseconds).
    pub t_ns: u64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    pub totals: Totals,
    /// Pods with memcgs, most dying first.
    pub pods: Vec<PodRow>,
    /// Name shapes created or removed since the last sample, most created first.
    pub shapes: Vec<ShapeRate>,
    /// Cgroups created per second since the last sample (all shapes).
    pub churn_per_s: f64,
    /// Memcg IDs left (None without a memory hierarchy).
    pub id_headroom: Option<u64>,
    /// Failed mkdirs since start, and per errno name.
    pub failed_mkdirs: u64,
    pub failed_by_errno: Vec<(String, u64)>,
    /// OOM kills since start, and per constraint (most first).
    pub oom_kills: u64,
    pub oom_by_constraint: Vec<(&'static str, u64)>,
    pub lost: u64,
    pub events: u64,
    /// Memcg lifetimes per QoS class.
    pub lifetimes: Vec<LifetimeRow>,
}

/// Takes snapshots of a pipeline that carries a [`SampleSink`].
pub struct Sampler {
    counters: Rc<RefCell<Counters>>,
    last_ns: u64,
    last_sec: Option<u64>,
}

/// The lifetime percentiles per phase and QoS class (those with any memcg).
fn lifetime_rows(l: &Lifetimes) -> Vec<LifetimeRow> {
    let mut lifetimes = Vec::new();
    for q in Qos::CLASSES {
        if let Some(p) = l.qos(q) {
            for phase in [Phase::Live, Phase::Dying] {
                let h = p.get(phase);
                if !h.is_empty() {
                    lifetimes.push(LifetimeRow {
                        phase: phase.name(),
                        qos: Qos::name(q),
                        count: h.len(),
                        p50_ns: h.value_at_quantile(0.5),
                        p90_ns: h.value_at_quantile(0.9),
                        p99_ns: h.value_at_quantile(0.99),
                        max_ns: h.max(),
                    });
                }
            }
        }
    }
    lifetimes
}

impl Sampler {
    /// A sampler and the sink to put into the pipeline; `start_ns`: when the run started.
    pub fn new(memory_hierarchy: Option<u32>, start_ns: u64) -> (Sampler, Box<dyn Sink>) {
        let counters = Rc::new(RefCell::new(Counters::new(memory_hierarchy)));
        let sink = Box::new(SampleSink(counters.clone()));
        (
            Sampler {
                counters,
                last_ns: start_ns,
                last_sec: None,
            },
            sink,
        )
    }

    /// In a replay, before each event at `ts_ns`: a snapshot at each second of event time the
    /// event moves past (at most two: the end of the last second seen and, after a quiet gap,
    /// the start of this one).
    pub fn before_event(&mut self, pipe: &Pipeline, ts_ns: u64) -> Vec<Snapshot> {
        let sec = ts_ns / NS_PER_S;
        let mut out = Vec::new();
        if let Some(l) = self.last_sec
            && sec > l
        {
            out.push(self.sample(pipe, (l + 1) * NS_PER_S));
            if sec > l + 1 {
                out.push(self.sample(pipe, sec * NS_PER_S));
            }
        }
        if self.last_sec.is_none_or(|l| sec > l) {
            self.last_sec = Some(sec);
        }
        out
    }

    /// The pipeline at `now_ns`; churn rates are over the time since the last sample.
    pub fn sample(&mut self, pipe: &Pipeline, now_ns: u64) -> Snapshot {
        let tracker = &pipe.tracker;
        let dt_s = (now_ns.saturating_sub(self.last_ns) as f64 / 1e9).max(1e-3);
        self.last_ns = now_ns;
        let bytes = tracker.dying_bytes_by_pod();
        let pods = tracker
            .pods(now_ns)
            .into_iter()
            .filter(|p| p.stats.live + p.stats.dying + p.stats.freed > 0)
            .map(|pod| PodRow {
                dying_bytes: bytes.get(pod.stats.pod_uid.as_str()).copied(),
                pod,
            })
            .collect();
        let mut c = self.counters.borrow_mut();
        let mut shapes: Vec<ShapeRate> = c
            .shapes
            .iter()
            .map(|(k, v)| {
                let (mk, rm) = v.counts();
                ShapeRate {
                    shape: k.to_string(),
                    mkdirs_per_s: mk as f64 / dt_s,
                    rmdirs_per_s: rm as f64 / dt_s,
                }
            })
            .collect();
        c.shapes.clear();
        shapes.sort_by(|a, b| {
            b.mkdirs_per_s
                .total_cmp(&a.mkdirs_per_s)
                .then_with(|| b.rmdirs_per_s.total_cmp(&a.rmdirs_per_s))
                .then_with(|| a.shape.cmp(&b.shape))
        });
        let churn_per_s = shapes.iter().fold(0.0, |a, s| a + s.mkdirs_per_s);
        let mut failed_by_errno: Vec<(String, u64)> = c
            .failed
            .iter()
            .map(|&(e, n)| {
                let name = if e == 0 {
                    "unknown".to_string()
                } else {
                    errno_name(e)
                };
                (name, n)
            })
            .collect();
        failed_by_errno.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut oom_by_constraint = c.oom_by_constraint.clone();
        oom_by_constraint.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let lifetimes = lifetime_rows(&c.lifetimes);
        Snapshot {
            t_ns: now_ns,
            elapsed_s: now_ns.saturating_sub(pipe.facts().clock.mono_ns) as f64 / 1e9,
            totals: tracker.totals(),
            pods,
            shapes,
            churn_per_s,
            id_headroom: pipe.detectors.id_headroom(tracker),
            failed_mkdirs: pipe.counts.seen[EventKind::MkdirFailed as usize],
            failed_by_errno,
            oom_kills: oom_by_constraint.iter().map(|(_, n)| n).sum(),
            oom_by_constraint,
            lost: pipe.counts.lost.iter().sum(),
            events: pipe.counts.seen.iter().sum(),
            lifetimes,
        }
    }

    /// The lifetime histograms so far.
    pub fn with_lifetimes<T>(&self, f: impl FnOnce(&Lifetimes) -> T) -> T {
        f(&self.counters.borrow().lifetimes)
    }
}

/// One point of a [`History`]: a snapshot reduced to what plots and sparklines draw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub t_ns: u64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Dying memcgs (the most over the samples merged into this point).
    pub dying: u64,
    pub live: u64,
    /// The least over the samples merged.
    pub id_headroom: Option<u64>,
    /// Cgroups created per second (mean over the samples merged).
    pub churn_per_s: f64,
    /// Totals since start.
    pub failed_mkdirs: u64,
    pub lost: u64,
    /// The top shapes (index into [`History::shape_names`]) and their creations per second.
    pub shapes: Vec<(u16, f64)>,
    /// The top pods (index into [`History::pod_names`]) and their dying memcgs.
    pub pods: Vec<(u16, u64)>,
    /// Samples merged into this point.
    merged: u32,
}

/// A bounded time series of snapshots: at most `cap` points; when full, neighbours are merged
/// in pairs and each later point takes as many samples as the older ones do.
#[derive(Clone, Debug)]
pub struct History {
    cap: usize,
    points: Vec<Point>,
    /// Samples per point now (doubles at each merge).
    stride: u32,
    pending: Option<Point>,
    shape_names: Vec<String>,
    pod_names: Vec<String>,
}

fn intern(names: &mut Vec<String>, name: &str) -> Option<u16> {
    if let Some(i) = names.iter().position(|n| n == name) {
        return Some(i as u16);
    }
    if names.len() >= MAX_NAMES {
        return None;
    }
    names.push(name.to_string());
    Some((names.len() - 1) as u16)
}

/// Merges `b` (later) into `a`.
fn merge(a: &mut Point, b: &Point) {
    let (na, nb) = (a.merged.max(1) as f64, b.merged.max(1) as f64);
    a.churn_per_s = (a.churn_per_s * na + b.churn_per_s * nb) / (na + nb);
    for (i, r) in &mut a.shapes {
        let other = b.shapes.iter().find(|s| s.0 == *i).map_or(0.0, |s| s.1);
        *r = (*r * na + other * nb) / (na + nb);
    }
    for &(i, r) in &b.shapes {
        if !a.shapes.iter().any(|s| s.0 == i) {
            a.shapes.push((i, r * nb / (na + nb)));
        }
    }
    for &(i, n) in &b.pods {
        match a.pods.iter_mut().find(|p| p.0 == i) {
            Some(p) => p.1 = p.1.max(n),
            None => a.pods.push((i, n)),
        }
    }
    a.t_ns = b.t_ns;
    a.elapsed_s = b.elapsed_s;
    a.dying = a.dying.max(b.dying);
    a.live = b.live;
    a.id_headroom = match (a.id_headroom, b.id_headroom) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    a.failed_mkdirs = b.failed_mkdirs;
    a.lost = b.lost;
    a.merged += b.merged.max(1);
}

impl History {
    /// A history of at most `cap` points (at least 2).
    pub fn new(cap: usize) -> History {
        History {
            cap: cap.max(2),
            points: Vec::new(),
            stride: 1,
            pending: None,
            shape_names: Vec::new(),
            pod_names: Vec::new(),
        }
    }

    /// Adds a snapshot.
    pub fn push(&mut self, s: &Snapshot) {
        let mut p = Point {
            t_ns: s.t_ns,
            elapsed_s: s.elapsed_s,
            dying: s.totals.dying,
            live: s.totals.live,
            id_headroom: s.id_headroom,
            churn_per_s: s.churn_per_s,
            failed_mkdirs: s.failed_mkdirs,
            lost: s.lost,
            shapes: Vec::new(),
            pods: Vec::new(),
            merged: 1,
        };
        for r in s.shapes.iter().filter(|r| r.mkdirs_per_s > 0.0) {
            if p.shapes.len() >= TOP_PER_POINT {
                break;
            }
            if let Some(i) = intern(&mut self.shape_names, &r.shape) {
                p.shapes.push((i, r.mkdirs_per_s));
            }
        }
        for r in s.pods.iter().filter(|r| r.pod.stats.dying > 0) {
            if p.pods.len() >= TOP_PER_POINT {
                break;
            }
            if let Some(i) = intern(&mut self.pod_names, &r.label()) {
                p.pods.push((i, r.pod.stats.dying));
            }
        }
        match &mut self.pending {
            Some(a) => merge(a, &p),
            None => self.pending = Some(p),
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|a| a.merged >= self.stride)
            && let Some(a) = self.pending.take()
        {
            self.points.push(a);
        }
        if self.points.len() >= self.cap {
            let old = std::mem::take(&mut self.points);
            let mut it = old.into_iter();
            while let Some(mut a) = it.next() {
                if let Some(b) = it.next() {
                    merge(&mut a, &b);
                }
                self.points.push(a);
            }
            self.stride = self.stride.saturating_mul(2);
        }
    }

    /// The points, oldest first (the samples not yet making a full point last).
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter().chain(self.pending.iter())
    }

    pub fn len(&self) -> usize {
        self.points.len() + usize::from(self.pending.is_some())
    }

    /// The names of the shapes points refer to.
    pub fn shape_names(&self) -> &[String] {
        &self.shape_names
    }

    /// The labels of the pods points refer to.
    pub fn pod_names(&self) -> &[String] {
        &self.pod_names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{baseline::Baseline, tracker::tests::ev},
        pipeline::{facts::RunFacts, pod_names::NoPodNames},
    };

    fn pipeline() -> (Pipeline, Sampler) {
        let facts = RunFacts::new("6.1.0", RunFacts::memory_at(Some(4)));
        let (sampler, sink) = Sampler::new(Some(4), facts.clock.mono_ns);
        let p = Pipeline::new(
            facts,
            &Baseline::default(),
            vec![sink],
            Box::new(NoPodNames),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (p, sampler)
    }

    #[test]
    fn oom_kills_are_counted_by_constraint() {
        use crate::model::oom::{Constraint, OomKill};
        let (mut p, mut s) = pipeline();
        let base = p.facts().clock.mono_ns;
        let kill = |c| OomKill {
            constraint: c,
            ..OomKill::default()
        };
        let (memcg, node) = (kill(Constraint::Memcg), kill(Constraint::None));
        for (i, k) in [&memcg, &node, &memcg].into_iter().enumerate() {
            p.event(&Event {
                oom: Some(k),
                ..ev(EventKind::OomKill, base + i as u64, 4, 9, b"/kubepods/x")
            });
        }
        let snap = s.sample(&p, base + NS_PER_S);
        assert_eq!(snap.oom_kills, 3);
        assert_eq!(snap.oom_by_constraint, vec![("memcg", 2), ("none", 1)]);
    }

    #[test]
    fn churn_counts_a_path_once_across_hierarchies() {
        let (mut p, mut s) = pipeline();
        let base = p.facts().clock.mono_ns;
        for i in 0..10u64 {
            let path = format!("/job-{i}");
            for h in [4, 5, 6] {
                p.event(&ev(EventKind::Mkdir, base + i, h, 100 + i, path.as_bytes()));
            }
            p.event(&ev(
                EventKind::Rmdir,
                base + i + 1,
                4,
                100 + i,
                path.as_bytes(),
            ));
        }
        let snap = s.sample(&p, base + 2 * NS_PER_S);
        assert_eq!(snap.shapes.len(), 1);
        assert_eq!(snap.shapes[0].shape, "job-<n>");
        assert!((snap.shapes[0].mkdirs_per_s - 5.0).abs() < 1e-9);
        assert!((snap.shapes[0].rmdirs_per_s - 5.0).abs() < 1e-9);
        assert!((snap.churn_per_s - 5.0).abs() < 1e-9);
        // Counted since the last sample only.
        let next = s.sample(&p, base + 3 * NS_PER_S);
        assert!(next.shapes.is_empty());
        assert_eq!(next.churn_per_s, 0.0);
    }

    #[test]
    fn pods_carry_dying_counts_and_bytes() {
        let (mut p, mut s) = pipeline();
        let base = p.facts().clock.mono_ns;
        let uid = "5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6";
        let pod = format!("/kubepods/burstable/pod{uid}");
        let c = format!("{pod}/{:064x}", 7);
        p.event(&ev(EventKind::Mkdir, base + 1, 4, 10, pod.as_bytes()));
        p.event(&ev(EventKind::Mkdir, base + 2, 4, 11, c.as_bytes()));
        let mut rm = ev(EventKind::Rmdir, base + 3, 4, 11, c.as_bytes());
        let charged = 3 * crate::kernel::page_size();
        rm.usage_bytes = Some(charged);
        p.event(&rm);
        let snap = s.sample(&p, base + 5 * NS_PER_S);
        let row = snap
            .pods
            .iter()
            .find(|r| r.pod.stats.pod_uid == uid)
            .unwrap_or_else(|| panic!("pod row in {:?}", snap.pods));
        assert_eq!(row.pod.stats.dying, 1);
        assert_eq!(row.pod.stats.live, 1);
        assert_eq!(row.pod.stats.qos, Some(Qos::Burstable));
        assert_eq!(row.dying_bytes, Some(charged));
        let age = row.pod.oldest_dying_age_s.unwrap_or(0.0);
        assert!((age - (5.0 - 3e-9)).abs() < 1e-6, "{age}");
        assert_eq!(snap.totals.dying, 1);
        assert!(snap.lifetimes.iter().any(|l| l.phase == "live"));
    }

    #[test]
    fn replay_samples_each_second_of_event_time() {
        let (mut p, mut s) = pipeline();
        let mut seen = Vec::new();
        let start = 10 * NS_PER_S;
        for ts in [
            start + 1,
            start + 500_000_000,
            start + NS_PER_S + 1,
            start + 5 * NS_PER_S,
        ] {
            seen.extend(s.before_event(&p, ts).iter().map(|snap| snap.t_ns));
            p.event(&ev(EventKind::Mkdir, ts, 4, ts, b"/x-1"));
        }
        assert_eq!(
            seen,
            vec![start + NS_PER_S, start + 2 * NS_PER_S, start + 5 * NS_PER_S]
        );
    }

    #[test]
    fn shape_window_averages_recent_samples() {
        let mut w = ShapeWindow::new(2);
        let r = |s: &str, mk: f64| ShapeRate {
            shape: s.into(),
            mkdirs_per_s: mk,
            rmdirs_per_s: mk,
        };
        w.push(&[r("a", 100.0)]);
        w.push(&[r("a", 10.0), r("b", 4.0)]);
        w.push(&[r("b", 2.0)]);
        let rows = w.rows();
        assert_eq!(rows.len(), 2, "a's 100/s left the window: {rows:?}");
        assert_eq!(rows[0].shape, "a");
        assert!((rows[0].mkdirs_per_s - 5.0).abs() < 1e-9);
        assert_eq!(rows[0].now_per_s, 0.0);
        assert!((rows[1].mkdirs_per_s - 3.0).abs() < 1e-9);
        assert_eq!(rows[1].now_per_s, 2.0);
    }

    #[test]
    fn history_stays_bounded_and_keeps_peaks() {
        let mut h = History::new(16);
        for i in 0..1000u64 {
            let snap = Snapshot {
                t_ns: i * NS_PER_S,
                totals: Totals {
                    dying: if i == 500 { 99 } else { i % 7 },
                    ..Totals::default()
                },
                churn_per_s: 2.0,
                id_headroom: Some(65_535 - i),
                ..Snapshot::default()
            };
            h.push(&snap);
            assert!(h.len() <= 17, "{} points", h.len());
        }
        assert!(
            h.points().any(|p| p.dying == 99),
            "the peak survives merging"
        );
        assert!(h.points().all(|p| (p.churn_per_s - 2.0).abs() < 1e-9));
        assert_eq!(
            h.points().map(|p| p.id_headroom).min().flatten(),
            Some(65_535 - 999)
        );
        let t: Vec<u64> = h.points().map(|p| p.t_ns).collect();
        assert!(t.windows(2).all(|w| w[0] < w[1]), "in time order: {t:?}");
    }
}
