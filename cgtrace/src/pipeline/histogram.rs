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
mod tests {
    use super::*;
    use base64::Engine as _;
    use hdrhistogram::serialization::{
        Deserializer,
        interval_log::{IntervalLogIterator, LogEntry},
    };

    const MS: u64 = 1_000_000;

    fn labels(id: u32) -> String {
        match id {
            0 => "unified".into(),
            3 => "cpu,cpuacct".into(),
            4 => "memory".into(),
            n => format!("hierarchy{n}"),
        }
    }

    fn live(memcg: bool, qos: Option<Qos>, ns: u64) -> Observed {
        Observed {
            memcg,
            qos,
            live_ns: Some(ns),
            ..Observed::default()
        }
    }

    fn dying(memcg: bool, qos: Option<Qos>, ns: u64) -> Observed {
        Observed {
            memcg,
            qos,
            dying_ns: Some(ns),
            ..Observed::default()
        }
    }

    /// A 64-bit LCG (Knuth's MMIX constants) → uniform (0, 1).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        /// Standard normal (Box–Muller).
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.next(), self.next());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    fn assert_close(what: &str, got: u64, want: f64, rel: f64) {
        let err = (got as f64 - want).abs() / want;
        assert!(err <= rel, "{what}: got {got}, want {want} (±{rel})");
    }

    /// The sample's own quantile (nearest rank), to compare hdr's estimate with.
    fn exact_quantile(sorted: &[u64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64
    }

    #[test]
    fn uniform_percentiles() {
        let mut l = Lifetimes::new(Some(4));
        for ms in 1..=1000u64 {
            l.record(4, &live(true, Some(Qos::Burstable), ms * MS));
        }
        for h in [
            &l.hierarchy(4).expect("memory").live,
            &l.qos(Some(Qos::Burstable)).expect("burstable").live,
        ] {
            assert_eq!(h.len(), 1000);
            assert_close("p50", h.value_at_quantile(0.5), 500.0 * MS as f64, 0.001);
            assert_close("p90", h.value_at_quantile(0.9), 900.0 * MS as f64, 0.001);
            assert_close("p99", h.value_at_quantile(0.99), 990.0 * MS as f64, 0.001);
            assert_close("max", h.max(), 1000.0 * MS as f64, 0.001);
            assert_eq!(h.min(), h.lowest_equivalent(MS));
        }
        assert!(l.hierarchy(4).is_some_and(|p| p.dying.is_empty()));
        assert!(l.qos(None).is_none(), "no unattributed memcgs recorded");
    }

    #[test]
    fn exponential_and_lognormal_match_their_samples() {
        let mut rng = Lcg(42);
        let mut l = Lifetimes::new(Some(4));
        // Exponential dying times, mean 10 s: median 10 s · ln 2.
        let mean = 10e9;
        let mut exp: Vec<u64> = (0..100_000)
            .map(|_| (-mean * rng.next().ln()) as u64)
            .collect();
        for &v in &exp {
            l.record(4, &dying(true, Some(Qos::Besteffort), v));
        }
        // Log-normal live times of non-memory cgroups: median e^μ = 2 ms, σ = 1.5.
        let mu = (2.0 * MS as f64).ln();
        let mut logn: Vec<u64> = (0..100_000)
            .map(|_| (mu + 1.5 * rng.normal()).exp() as u64)
            .collect();
        for &v in &logn {
            l.record(3, &live(false, None, v));
        }
        exp.sort_unstable();
        logn.sort_unstable();
        let he = &l.qos(Some(Qos::Besteffort)).expect("qos").dying;
        let hl = &l.hierarchy(3).expect("cpu").live;
        assert_close(
            "exp median",
            he.value_at_quantile(0.5),
            mean * 2f64.ln(),
            0.02,
        );
        assert_close(
            "lognormal median",
            hl.value_at_quantile(0.5),
            2.0 * MS as f64,
            0.02,
        );
        for q in [0.5, 0.9, 0.99, 0.999] {
            // hdr keeps 3 significant digits: within 0.1 % of the sample's own quantile.
            assert_close(
                "exp",
                he.value_at_quantile(q),
                exact_quantile(&exp, q),
                0.001,
            );
            assert_close(
                "logn",
                hl.value_at_quantile(q),
                exact_quantile(&logn, q),
                0.001,
            );
        }
        // Non-memcgs stay out of the QoS histograms.
        assert!(l.qos(None).is_none());
        assert_eq!(l.hierarchy(4).expect("memory").dying.len(), 100_000);
    }

    #[test]
    fn memcg_lifetimes_go_to_the_memory_hierarchy() {
        let mut l = Lifetimes::new(Some(4));
        // A css_free without cgroup fields carries hierarchy id 0: still the memory hierarchy's.
        l.record(0, &dying(true, None, 5 * MS));
        l.record(0, &dying(false, None, 7 * MS));
        l.record(4, &Observed::default());
        assert_eq!(l.hierarchy(4).map(|p| p.dying.len()), Some(1));
        assert_eq!(l.hierarchy(0).map(|p| p.dying.len()), Some(1));
        assert_eq!(l.qos(None).map(|p| p.dying.len()), Some(1));
        // Very long and zero lifetimes are kept.
        l.record(4, &live(true, None, 90 * 24 * 3600 * 1_000_000_000));
        l.record(4, &live(true, None, 0));
        let h = &l.hierarchy(4).expect("memory").live;
        assert_eq!(h.len(), 2);
        assert_close("90 days", h.max(), 90.0 * 86400e9, 0.001);
    }

    #[test]
    fn bounds_are_increasing_and_round() {
        let b = bucket_bounds();
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        let labels: Vec<String> = b.iter().map(|&v| human_ns(v)).collect();
        for want in [
            "1ns", "512ns", "1µs", "1ms", "512ms", "1s", "32s", "1min", "32min", "1h",
        ] {
            assert!(labels.iter().any(|l| l == want), "{want} in {labels:?}");
        }
        assert!(*b.last().expect("bounds") > u64::MAX / 2);
    }

    #[test]
    fn render_buckets_sum_to_the_count() {
        let mut rng = Lcg(7);
        let mut l = Lifetimes::new(Some(4));
        for ms in 1..=1000u64 {
            l.record(4, &live(true, Some(Qos::Guaranteed), ms * MS));
        }
        for _ in 0..5000 {
            let v = (-(3e9f64) * rng.next().ln()) as u64;
            l.record(2, &dying(false, None, v));
        }
        for (_, _, h) in l.histograms() {
            let total: u64 = bucket_counts(h).iter().map(|&(_, c)| c).sum();
            assert_eq!(total, h.len());
        }
        let text = l.render_terminal(&labels);
        // Parse the bucket lines back: their counts add up to each title's count.
        let mut sections = 0;
        let mut expected = None;
        let mut sum = 0u64;
        for line in text.lines().chain([""]) {
            if let Some((_, rest)) = line.split_once(": ")
                && line.contains("time (")
            {
                let n: u64 = rest
                    .strip_prefix("count ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .expect("count");
                expected = Some(n);
                sum = 0;
            } else if line.starts_with('[') {
                let count: u64 = line
                    .split_once(") ")
                    .and_then(|(_, r)| r.split('|').next())
                    .and_then(|c| c.trim().parse().ok())
                    .expect("bucket count");
                sum += count;
                assert!(line.ends_with('|'));
            } else if let Some(n) = expected.take() {
                assert_eq!(sum, n, "{text}");
                sections += 1;
            }
        }
        // memory live, qos guaranteed live, hierarchy 2 dying.
        assert_eq!(sections, 3, "{text}");
        assert!(
            text.contains("live time (mkdir → rmdir), memory: count 1000  p50 500ms"),
            "{text}"
        );
        assert!(
            text.contains("p50 500ms  p90 900ms  p99 990ms  max 1s"),
            "{text}"
        );
        assert!(text.contains("qos guaranteed (memcgs)"), "{text}");
        let full = text
            .lines()
            .skip_while(|l| !l.contains(", memory: "))
            .find(|l| l.starts_with("[512ms, 1s)"))
            .expect("the 512ms bucket");
        assert!(full.contains(" 488 |"), "512..=999 ms: {full}");
        assert!(
            full.contains(&"@".repeat(BAR_WIDTH)),
            "the fullest bucket fills the bar: {text}"
        );
        assert!(text.contains("[1ms, 2ms)"), "{text}");
    }

    #[test]
    fn render_empty_and_pods() {
        use crate::model::tracker::tests::{UID, ev};
        use cgtrace_common::EventKind;

        let l = Lifetimes::new(None);
        assert!(l.is_empty());
        assert_eq!(
            l.render_terminal(&labels),
            "no cgroup lifetimes recorded yet\n"
        );

        let mut t = Tracker::new(Some(4));
        let pod = format!("/kubepods/burstable/pod{UID}");
        let c1 = format!("{pod}/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let mut l = Lifetimes::new(t.memory_hierarchy());
        for e in [
            ev(EventKind::Mkdir, 1_000, 4, 100, pod.as_bytes()),
            ev(EventKind::Mkdir, 2_000, 4, 101, c1.as_bytes()),
            ev(EventKind::Rmdir, 3_000_000_000, 4, 101, c1.as_bytes()),
            ev(EventKind::Mkdir, 3_500_000_000, 4, 102, b"/system.slice/x"),
        ] {
            let obs = t.observe(&e);
            l.record(e.hierarchy_id, &obs);
        }
        t.set_pod_name(UID, "default", "web\x1b[2J");
        l.update_pods(&t);
        assert_eq!(l.pods().len(), 1);
        assert_eq!(l.pods()[0].stats.dying, 1);
        assert_eq!(l.pods()[0].oldest_dying_age_s, Some(0.5));
        let text = l.render_terminal(&labels);
        assert!(text.contains("pods with the most dying memcgs:"), "{text}");
        assert!(
            text.contains(&format!("default/web\\x1b[2J ({UID})")),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "escaped: {text}");
        assert!(text.contains("burstable"), "{text}");
        assert!(text.contains("500ms"), "{text}");
        assert!(
            text.contains("live time (mkdir → rmdir), memory: count 1  p50 3s"),
            "{text}"
        );
    }

    /// Parses an interval log: per tag, the interval histograms in order.
    fn parse_log(
        bytes: &[u8],
    ) -> std::collections::BTreeMap<String, Vec<(f64, f64, Histogram<u64>)>> {
        let mut out: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        let mut de = Deserializer::new();
        for entry in IntervalLogIterator::new(bytes) {
            match entry.expect("parses") {
                LogEntry::Interval(i) => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(i.encoded_histogram())
                        .expect("base64");
                    let h: Histogram<u64> = de.deserialize(&mut &raw[..]).expect("deserializes");
                    out.entry(i.tag().expect("tagged").as_str().to_string())
                        .or_default()
                        .push((
                            i.start_timestamp().as_secs_f64(),
                            i.duration().as_secs_f64(),
                            h,
                        ));
                }
                LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
            }
        }
        out
    }

    #[test]
    fn interval_log_round_trips() {
        let mut rng = Lcg(99);
        let mut l = Lifetimes::new(Some(4));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut w = HdrLogWriter::new(Vec::new(), start, labels).expect("header");
        let mut fed: HashMap<&str, u64> = HashMap::new();
        for round in 0..3u64 {
            for i in 0..(100 * (round + 1)) {
                let v = (-(2e9f64) * rng.next().ln()) as u64 + 1;
                let qos = Qos::CLASSES[(i % 4) as usize];
                l.record(4, &live(true, qos, v));
                l.record(4, &dying(true, qos, v / 3));
                l.record(3, &live(false, None, v * 2));
                *fed.entry("live.memory").or_default() += 1;
                *fed.entry("dying.memory").or_default() += 1;
                *fed.entry("live.cpu+cpuacct").or_default() += 1;
            }
            w.write_interval(60.0 * round as f64, 60.0, &l)
                .expect("interval");
        }
        let bytes = w.into_inner();
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.starts_with("#cgtrace cgroup lifetimes"), "{text}");
        assert!(text.contains("#[StartTime: 1700000000.000 "), "{text}");
        assert!(text.contains("#[BaseTime: 1700000000.000 "), "{text}");
        assert!(
            text.contains("\"StartTimestamp\",\"Interval_Length\""),
            "{text}"
        );

        let log = parse_log(&bytes);
        let tags: Vec<&str> = log.keys().map(String::as_str).collect();
        assert_eq!(
            tags,
            [
                "dying.cpu+cpuacct",
                "dying.memory",
                "dying.qos.besteffort",
                "dying.qos.burstable",
                "dying.qos.guaranteed",
                "dying.qos.none",
                "live.cpu+cpuacct",
                "live.memory",
                "live.qos.besteffort",
                "live.qos.burstable",
                "live.qos.guaranteed",
                "live.qos.none",
            ]
        );
        for (tag, intervals) in &log {
            assert_eq!(intervals.len(), 3, "{tag}: one histogram per interval");
            // Intervals hold what was new: 100, 200, 300 (a quarter of it per QoS class).
            let counts: Vec<u64> = intervals.iter().map(|(_, _, h)| h.len()).collect();
            let per = if tag.contains(".qos.") { 25 } else { 100 };
            let want = if tag == "dying.cpu+cpuacct" {
                vec![0, 0, 0]
            } else {
                vec![per, 2 * per, 3 * per]
            };
            assert_eq!(counts, want, "{tag}");
            let starts: Vec<(f64, f64)> = intervals.iter().map(|&(s, d, _)| (s, d)).collect();
            assert_eq!(starts, [(0.0, 60.0), (60.0, 60.0), (120.0, 60.0)], "{tag}");
            // The intervals add up to the cumulative histogram, bucket for bucket.
            let mut sum = new_histogram().expect("histogram");
            for (_, _, h) in intervals {
                sum.add(h).expect("add");
            }
            let cumulative = l
                .tagged(&labels)
                .find(|(t, _)| t == tag)
                .map(|(_, h)| h)
                .expect("tag in lifetimes");
            assert_eq!(&sum, cumulative, "{tag}");
            if let Some(&n) = fed.get(tag.as_str()) {
                assert_eq!(sum.len(), n, "{tag}");
            }
        }
    }

    #[test]
    fn tags_are_valid() {
        assert_eq!(tag_safe("cpu,cpuacct"), "cpu+cpuacct");
        assert_eq!(tag_safe("name=my hier\n"), "name=my_hier_");
        assert!(Tag::new(&tag_safe("a, b\r\n")).is_some());
    }
}
