//! Lifetime histograms: how long cgroups stay live (mkdir → rmdir) and dying (rmdir → freed).
//!
//! Values are nanoseconds in [HdrHistogram](https://hdrhistogram.github.io/HdrHistogram/)s with
//! 3 significant digits that grow as larger values arrive, so a cgroup that lived for a month
//! and one that lived for a microsecond are both kept at 0.1 % precision. There is one pair of
//! histograms (live, dying) per controller hierarchy and, for memory cgroups, one pair per
//! Kubernetes QoS class.
//!
//! Two views: [`Lifetimes::render_terminal`] (bpftrace `hist()`-style log2 buckets with
//! percentiles, for people) and [`HdrLogWriter`] (the standard HdrHistogram interval log, for
//! `HistogramLogProcessor`, HdrHistogram plotters and other tools).
use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{self, Write},
    time::{Duration, SystemTime},
};

use hdrhistogram::{
    Histogram,
    serialization::{
        V2DeflateSerializer,
        interval_log::{IntervalLogWriterBuilder, Tag},
    },
};

use crate::{
    format::{escape::terminal, units::human_ns},
    model::k8s::Qos,
    model::tracker::{Observed, PodSummary, Tracker},
};

/// Significant decimal digits every histogram keeps.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// How many pods [`Lifetimes::update_pods`] keeps (those with the most dying memcgs).
pub const TOP_PODS: usize = 10;

/// Width of the bars drawn by [`Lifetimes::render_terminal`].
const BAR_WIDTH: usize = 40;

/// A phase of a cgroup's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// mkdir → rmdir.
    Live,
    /// rmdir → freed (for memcgs: the memcg itself freed; else the cgroup released).
    Dying,
}

impl Phase {
    /// `live` or `dying`, as used in tags.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Live => "live",
            Phase::Dying => "dying",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Phase::Live => "live time (mkdir → rmdir)",
            Phase::Dying => "dying time (rmdir → freed)",
        }
    }
}

/// A new empty histogram: nanoseconds, 3 significant digits, auto-resizing.
/// `None` only if hdrhistogram rejects constant, valid parameters (it does not).
fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new(SIGNIFICANT_DIGITS).ok()
}

/// Records `ns`, growing the histogram; if it cannot grow, the value is clamped to its top.
fn record_value(h: &mut Histogram<u64>, ns: u64) {
    if h.record(ns).is_err() {
        h.saturating_record(ns);
    }
}

/// The live and dying histograms of one hierarchy or QoS class.
#[derive(Clone, Debug)]
pub struct Phases {
    /// mkdir → rmdir, nanoseconds.
    pub live: Histogram<u64>,
    /// rmdir → freed, nanoseconds.
    pub dying: Histogram<u64>,
}

impl Phases {
    fn new() -> Option<Phases> {
        Some(Phases {
            live: new_histogram()?,
            dying: new_histogram()?,
        })
    }

    /// The histogram of `phase`.
    pub fn get(&self, phase: Phase) -> &Histogram<u64> {
        match phase {
            Phase::Live => &self.live,
            Phase::Dying => &self.dying,
        }
    }

    fn record(&mut self, obs: &Observed) {
        if let Some(ns) = obs.live_ns {
            record_value(&mut self.live, ns);
        }
        if let Some(ns) = obs.dying_ns {
            record_value(&mut self.dying, ns);
        }
    }
}

/// Which histogram group a tag or title names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Hierarchy(u32),
    Qos(usize),
}

/// Cgroup lifetime histograms per hierarchy and per QoS class, plus the pods with the most
/// dying memcgs. Feed it every [`Observed`] the tracker returns.
#[derive(Clone, Debug)]
pub struct Lifetimes {
    memory_hierarchy: Option<u32>,
    /// Hierarchy ids, sorted, and their histograms (same order): a node has a dozen
    /// hierarchies at most, and a short array scanned in place costs less per event than a
    /// tree.
    hierarchy_ids: Vec<u32>,
    hierarchies: Vec<Phases>,
    qos: [Option<Phases>; 4],
    pods: Vec<PodSummary>,
}

impl Lifetimes {
    /// `memory_hierarchy`: the hierarchy holding the memory controller (the tracker's
    /// [`Tracker::memory_hierarchy`]); memcg lifetimes are filed there whatever hierarchy id the
    /// event carried (css events before online carry none).
    pub fn new(memory_hierarchy: Option<u32>) -> Lifetimes {
        Lifetimes {
            memory_hierarchy,
            hierarchy_ids: Vec::new(),
            hierarchies: Vec::new(),
            qos: [None, None, None, None],
            pods: Vec::new(),
        }
    }

    /// Records the lifetimes one event completed: `obs.live_ns` (on rmdir) and `obs.dying_ns`
    /// (when freed) go to the histograms of `hierarchy_id` and, for memcgs, to those of the
    /// pod's QoS class (`none` for memcgs outside pods).
    pub fn record(&mut self, hierarchy_id: u32, obs: &Observed) {
        if obs.live_ns.is_none() && obs.dying_ns.is_none() {
            return;
        }
        let id = match (obs.memcg, self.memory_hierarchy) {
            (true, Some(m)) => m,
            _ => hierarchy_id,
        };
        match self.hierarchy_ids.iter().position(|&h| h == id) {
            Some(i) => {
                if let Some(p) = self.hierarchies.get_mut(i) {
                    p.record(obs);
                }
            }
            None => {
                if let Some(mut p) = Phases::new() {
                    p.record(obs);
                    let at = self.hierarchy_ids.partition_point(|&h| h < id);
                    self.hierarchy_ids.insert(at, id);
                    self.hierarchies.insert(at, p);
                }
            }
        }
        if obs.memcg {
            let slot = &mut self.qos[Qos::index(obs.qos)];
            if slot.is_none() {
                *slot = Phases::new();
            }
            if let Some(p) = slot {
                p.record(obs);
            }
        }
    }

    /// Takes the pods with the most dying memcgs (at most [`TOP_PODS`], none with zero) from
    /// the tracker, for [`Lifetimes::render_terminal`].
    pub fn update_pods(&mut self, tracker: &Tracker) {
        let pods = tracker.dying_pods();
        self.pods = pods.into_iter().take(TOP_PODS).collect();
    }

    /// The pods kept by the last [`Lifetimes::update_pods`], most dying memcgs first.
    pub fn pods(&self) -> &[PodSummary] {
        &self.pods
    }

    /// The histograms of a hierarchy, if it has recorded anything.
    pub fn hierarchy(&self, hierarchy_id: u32) -> Option<&Phases> {
        let i = self.hierarchy_ids.iter().position(|&h| h == hierarchy_id)?;
        self.hierarchies.get(i)
    }

    /// The histograms of a QoS class (memcgs only), if it has recorded anything.
    pub fn qos(&self, qos: Option<Qos>) -> Option<&Phases> {
        self.qos[Qos::index(qos)].as_ref()
    }

    /// No lifetime has been recorded.
    pub fn is_empty(&self) -> bool {
        self.histograms().all(|(_, _, h)| h.is_empty())
    }

    /// Every histogram, in a stable order: hierarchies by id, then QoS classes; live, dying.
    fn histograms(&self) -> impl Iterator<Item = (Group, Phase, &Histogram<u64>)> {
        let by_hierarchy = self
            .hierarchy_ids
            .iter()
            .zip(&self.hierarchies)
            .map(|(&id, p)| (Group::Hierarchy(id), p));
        let by_qos = self
            .qos
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (Group::Qos(i), p)));
        by_hierarchy.chain(by_qos).flat_map(|(g, p)| {
            [Phase::Live, Phase::Dying]
                .into_iter()
                .map(move |ph| (g, ph, p.get(ph)))
        })
    }

    /// `(tag, histogram)` for the interval log: `live.memory`, `dying.cpu+cpuacct`,
    /// `dying.qos.burstable`, …
    fn tagged<'a>(
        &'a self,
        labels: &'a dyn Fn(u32) -> String,
    ) -> impl Iterator<Item = (String, &'a Histogram<u64>)> + 'a {
        self.histograms().map(move |(g, phase, h)| {
            let group = match g {
                Group::Hierarchy(id) => tag_safe(&labels(id)),
                Group::Qos(i) => format!("qos.{}", Qos::name(Qos::CLASSES[i])),
            };
            (format!("{}.{group}", phase.name()), h)
        })
    }

    /// The histograms as text: per histogram a title line with count, p50, p90, p99 and max,
    /// then bpftrace-style log2 buckets (`[1ms, 2ms)   12 |@@@@    |`); then the pods with the
    /// most dying memcgs. Empty histograms are left out. `labels` names a hierarchy id
    /// (e.g. `memory`, `cpu,cpuacct`, `unified`).
    pub fn render_terminal(&self, labels: &dyn Fn(u32) -> String) -> String {
        let mut out = String::new();
        for (g, phase, h) in self.histograms() {
            if h.is_empty() {
                continue;
            }
            let group = match g {
                Group::Hierarchy(id) => terminal(&labels(id)),
                Group::Qos(i) => format!("qos {} (memcgs)", Qos::name(Qos::CLASSES[i])),
            };
            let _ = writeln!(
                out,
                "{}, {group}: count {}  p50 {}  p90 {}  p99 {}  max {}",
                phase.title(),
                h.len(),
                human_ns(h.value_at_quantile(0.5)),
                human_ns(h.value_at_quantile(0.9)),
                human_ns(h.value_at_quantile(0.99)),
                human_ns(h.max()),
            );
            out.push_str(&render_buckets(h));
            out.push('\n');
        }
        if out.is_empty() {
            out.push_str("no cgroup lifetimes recorded yet\n");
        }
        if !self.pods.is_empty() {
            out.push_str("pods with the most dying memcgs:\n");
            let _ = writeln!(out, "  {:>6}  {:>8}  {:<10}  POD", "DYING", "OLDEST", "QOS");
            for PodSummary {
                stats: p,
                oldest_dying_age_s,
            } in &self.pods
            {
                let age = oldest_dying_age_s
                    .map(|s| human_ns((s.max(0.0) * 1e9) as u64))
                    .unwrap_or_else(|| "-".into());
                let who = match (&p.namespace, &p.name) {
                    (Some(ns), Some(n)) => format!(
                        "{}/{} ({})",
                        terminal(ns),
                        terminal(n),
                        terminal(&p.pod_uid)
                    ),
                    _ => terminal(&p.pod_uid),
                };
                let _ = writeln!(
                    out,
                    "  {:>6}  {:>8}  {:<10}  {who}",
                    p.dying,
                    age,
                    Qos::name(p.qos)
                );
            }
        }
        out
    }
}

/// A hierarchy label as an interval-log tag: tags may not contain `,`, space, CR or LF.
fn tag_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ',' => '+',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// Lower bounds of the terminal buckets, nanoseconds: powers of two within each unit
/// (1ns … 512ns, 1µs … 512µs, 1ms … 512ms, 1s … 32s, 1min … 32min, 1h, 2h, 4h, …) so every
/// boundary reads as a round number.
fn bucket_bounds() -> Vec<u64> {
    let mut v = Vec::with_capacity(64);
    for unit in [1u64, 1_000, 1_000_000] {
        v.extend((0..10).map(|k| unit << k));
    }
    v.extend((0..6).map(|k| 1_000_000_000u64 << k));
    v.extend((0..6).map(|k| 60_000_000_000u64 << k));
    let hour = 3_600_000_000_000u64;
    let mut k = 0;
    while let Some(b) = hour.checked_shl(k).filter(|b| b >> k == hour) {
        v.push(b);
        k += 1;
    }
    v
}

/// Bucket counts of a histogram: `(lower bound or None for [0, 1ns), count)`, from the first
/// non-empty bucket to the last, empty ones between included.
fn bucket_counts(h: &Histogram<u64>) -> Vec<(Option<usize>, u64)> {
    let bounds = bucket_bounds();
    // Index 0: below the first bound; i + 1: [bounds[i], bounds[i + 1]).
    let mut counts = vec![0u64; bounds.len() + 1];
    for v in h.iter_recorded() {
        let value = h.median_equivalent(v.value_iterated_to());
        let i = bounds.partition_point(|&b| b <= value);
        counts[i] += v.count_at_value();
    }
    let first = counts.iter().position(|&c| c > 0);
    let last = counts.iter().rposition(|&c| c > 0);
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new();
    };
    (first..=last)
        .map(|i| (i.checked_sub(1), counts[i]))
        .collect()
}

/// The bucket lines of one histogram.
fn render_buckets(h: &Histogram<u64>) -> String {
    let bounds = bucket_bounds();
    let rows = bucket_counts(h);
    let label = |b: Option<usize>| match b {
        None => "[0, 1ns)".to_string(),
        Some(i) => match bounds.get(i + 1) {
            Some(&hi) => format!("[{}, {})", human_ns(bounds[i]), human_ns(hi)),
            None => format!("[{}, ...)", human_ns(bounds[i])),
        },
    };
    let labels: Vec<String> = rows.iter().map(|&(b, _)| label(b)).collect();
    let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let max = rows.iter().map(|&(_, c)| c).max().unwrap_or(0).max(1);
    let digits = max.to_string().len();
    let mut out = String::new();
    for ((_, count), l) in rows.iter().zip(&labels) {
        let mut n = ((*count as u128 * BAR_WIDTH as u128) / max as u128) as usize;
        if *count > 0 {
            n = n.max(1);
        }
        let pad = width - l.chars().count();
        let _ = writeln!(
            out,
            "{l}{:pad$} {count:>digits$} |{}{}|",
            "",
            "@".repeat(n),
            " ".repeat(BAR_WIDTH - n),
        );
    }
    out
}

/// Writes [`Lifetimes`] as a standard HdrHistogram interval log (the format of Java's
/// `HistogramLogWriter`): one line per histogram and interval, tagged `live.<hierarchy>`,
/// `dying.<hierarchy>`, `live.qos.<class>`, `dying.qos.<class>`; values in nanoseconds,
/// histograms V2-encoded, deflated and base64'd. Read it with `HistogramLogProcessor`,
/// HdrHistogram's plotters or [`hdrhistogram::serialization::interval_log::IntervalLogIterator`].
///
/// Each interval holds only what was recorded since the previous one: the writer keeps a copy
/// of every cumulative histogram as of its last write and writes the difference.
pub struct HdrLogWriter<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
    labels: Box<dyn Fn(u32) -> String + Send>,
    previous: HashMap<String, Histogram<u64>>,
}

impl<W: Write> HdrLogWriter<W> {
    /// Writes the log header to `out`: comments, `StartTime` and `BaseTime` (both `start`; the
    /// interval timestamps given to [`HdrLogWriter::write_interval`] are seconds since then)
    /// and the column legend. `labels` names hierarchy ids for the tags.
    pub fn new(
        mut out: W,
        start: SystemTime,
        labels: impl Fn(u32) -> String + Send + 'static,
    ) -> io::Result<HdrLogWriter<W>> {
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment("cgtrace cgroup lifetimes, nanoseconds (Interval_Max too)")
            .add_comment(
                "tags: live.<hierarchy> (mkdir to rmdir), dying.<hierarchy> (rmdir to freed), \
                 live.qos.<class> and dying.qos.<class> (memcgs)",
            )
            .with_start_time(start)
            .with_base_time(start);
        builder.begin_log_with(&mut out, &mut serializer)?;
        out.write_all(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        )?;
        out.flush()?;
        Ok(HdrLogWriter {
            out,
            serializer,
            labels: Box::new(labels),
            previous: HashMap::new(),
        })
    }

    /// Writes one interval: for every histogram of `lifetimes`, what it recorded since the
    /// previous call (everything, on the first), then flushes. `start_s`: the interval's start,
    /// seconds since the log's start; `duration_s`: its length. Histograms that recorded
    /// nothing in the interval are written too (count 0), so every tag has every interval.
    pub fn write_interval(
        &mut self,
        start_s: f64,
        duration_s: f64,
        lifetimes: &Lifetimes,
    ) -> io::Result<()> {
        let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default();
        let (start, duration) = (secs(start_s), secs(duration_s));
        let mut w =
            IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.serializer)?;
        for (tag, cumulative) in lifetimes.tagged(&*self.labels) {
            let mut interval = cumulative.clone();
            if let Some(prev) = self.previous.get(&tag)
                && interval.subtract(prev).is_err()
            {
                // Cannot happen (cumulative histograms only grow); do not write a wrong interval.
                w.write_comment(&format!("{tag}: interval skipped (histogram shrank)"))?;
                self.previous.insert(tag, cumulative.clone());
                continue;
            }
            w.write_histogram(&interval, start, duration, Tag::new(&tag))
                .map_err(|e| interval_log_error(&tag, e))?;
            self.previous.insert(tag, cumulative.clone());
        }
        self.out.flush()
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// An interval-log error as an I/O error that keeps the underlying kind (a closed pipe stays
/// `BrokenPipe`).
fn interval_log_error(
    tag: &str,
    e: hdrhistogram::serialization::interval_log::IntervalLogWriterError<
        hdrhistogram::serialization::V2DeflateSerializeError,
    >,
) -> io::Error {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterError;
    match e {
        IntervalLogWriterError::IoError(e) => e,
        other => io::Error::other(format!("interval log: {tag}: {other}")),
    }
}

#[cfg(test)]
mod tests;
