//! `cgtrace replay` and `cgtrace report`: a recorded session fed through the same pipeline as
//! `live`, so the output is the live run's.
use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{self, BufReader, BufWriter, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    detectors::Verdict,
    format::units::human_ns,
    kernel::hierarchy::Hierarchies,
    model::baseline::Baseline,
    model::event::Event,
    model::k8s::Qos,
    model::tracker::PodSummary,
    pipeline::histogram::{Lifetimes, Phase},
    pipeline::output::{JsonSink, RenderContext, Sink, Summary, TextSink},
    pipeline::{NodeMode, Pipeline},
    session::{Header, Item, SessionError, SessionReader},
};

/// The filters `live` takes, applied to a recorded stream.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub controllers: Vec<String>,
    pub path_prefix: Option<String>,
    pub subtree: Option<String>,
}

/// `--speed`: a multiple of real time, or as fast as possible.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Speed {
    #[default]
    Max,
    Times(f64),
}

pub fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed::Max);
    }
    match s.trim_end_matches('x').parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Speed::Times(v)),
        _ => Err(format!(
            "invalid speed {s:?} (a positive number, e.g. 10, or max)"
        )),
    }
}

/// The live run's options, as recorded in the header's `options` (JSON).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct RecordedOptions {
    pub filters: String,
    pub tier_rejected: BTreeMap<String, String>,
}

struct Replayer {
    header: Header,
    pipe: Pipeline,
    hierarchy_ids: Option<Vec<u32>>,
    path_prefix: Option<Vec<u8>>,
    subtree: Option<Vec<u8>>,
    first_ts: Option<u64>,
    last_ts: u64,
    end_ns: Option<u64>,
}

impl Replayer {
    fn passes(&self, ev: &Event<'_>) -> bool {
        if let Some(ids) = &self.hierarchy_ids
            && ev.has_cgroup
            && !ids.contains(&ev.hierarchy_id)
        {
            return false;
        }
        if ev.kind == cgtrace_common::EventKind::DyingAtStart {
            return true; // the pipeline filters these on their resolved path
        }
        if let Some(p) = &self.path_prefix
            && ev.has_cgroup
            && !ev.path.starts_with(p)
        {
            return false;
        }
        if let Some(s) = &self.subtree
            && ev.has_cgroup
            && !(ev.path == s.as_slice()
                || (ev.path.starts_with(s) && ev.path.get(s.len()) == Some(&b'/'))
                || s.as_slice() == b"/")
        {
            return false;
        }
        true
    }

    fn summary(&self) -> Summary {
        let end = self.end_ns.unwrap_or(self.last_ts);
        let mut s = self.pipe.summary(
            &self.header.tier,
            &self.header.attach,
            end.saturating_sub(self.header.clock.mono_ns),
        );
        if let Ok(o) = serde_json::from_str::<RecordedOptions>(&self.header.options) {
            s.tier_rejected = o
                .tier_rejected
                .into_iter()
                .map(|(k, v)| (leak_tier(&k), v))
                .collect();
        }
        s
    }
}

/// Tier names are a fixed set: map recorded names back to the static ones.
fn leak_tier(name: &str) -> &'static str {
    match name {
        "fentry" => "fentry",
        "kprobe" => "kprobe",
        "tracepoint" => "tracepoint",
        _ => "unknown",
    }
}

/// Opens a session, reading its header and baseline.
fn open(
    path: &Path,
    filters: &Filters,
    sinks: impl FnOnce(&Header) -> Vec<Box<dyn Sink>>,
) -> anyhow::Result<(SessionReader<BufReader<File>>, Replayer)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = SessionReader::new(BufReader::with_capacity(1 << 20, f))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let header = match reader.next() {
        Ok(Some(Item::Header(h))) => *h,
        Ok(_) => anyhow::bail!("{}: the session has no header", path.display()),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    };
    let baseline = match reader.next() {
        Ok(Some(Item::Baseline(b))) => b,
        _ => Baseline::default(),
    };
    let hierarchy_ids = if filters.controllers.is_empty() {
        None
    } else {
        Some(
            header
                .hierarchies
                .select(&filters.controllers)
                .map_err(|e| crate::UsageError(e.into()))?,
        )
    };
    let memory_hierarchy = header.hierarchies.with_controller("memory").map(|h| h.id);
    let sinks = sinks(&header);
    let mut pipe = Pipeline::new(
        memory_hierarchy,
        &header.kernel_release,
        &baseline,
        sinks,
        None,
    );
    pipe.tracker.set_css_joins(header.tier != "tracepoint");
    pipe.path_prefix(filters.path_prefix.as_ref().map(|p| p.as_bytes().to_vec()));
    let subtree = filters
        .subtree
        .as_ref()
        .map(|s| s.trim_end_matches('/').as_bytes().to_vec())
        .map(|s| if s.is_empty() { b"/".to_vec() } else { s });
    Ok((
        reader,
        Replayer {
            pipe,
            hierarchy_ids,
            path_prefix: filters.path_prefix.as_ref().map(|p| p.as_bytes().to_vec()),
            subtree,
            first_ts: None,
            last_ts: header.clock.mono_ns,
            end_ns: None,
            header,
        },
    ))
}

/// Feeds every item after the baseline through the pipeline. A damaged file replays what can
/// be read; the reader's warnings go to stderr.
fn feed(
    reader: &mut SessionReader<BufReader<File>>,
    r: &mut Replayer,
    speed: Speed,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let item = match reader.next() {
            Ok(Some(i)) => i,
            Ok(None) => break,
            Err(SessionError::Io(e)) => return Err(e).context("reading the session"),
            Err(e) => {
                eprintln!("cgtrace: warning: {e}");
                break;
            }
        };
        match item {
            Item::Event(ev) => {
                r.last_ts = r.last_ts.max(ev.ts_ns);
                let first = *r.first_ts.get_or_insert(ev.ts_ns);
                if let Speed::Times(x) = speed {
                    let due =
                        Duration::from_nanos((ev.ts_ns.saturating_sub(first) as f64 / x) as u64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        r.pipe.flush()?;
                        std::thread::sleep(wait);
                    }
                }
                if r.passes(&ev) {
                    r.pipe.event(&ev);
                }
            }
            Item::Lost { ts_ns, kind, count } => r.pipe.lost_delta(ts_ns, kind, count),
            Item::PodName {
                pod_uid,
                namespace,
                name,
            } => r.pipe.pod_name(&pod_uid, &namespace, &name),
            Item::Footer { end_ns, .. } => r.end_ns = Some(end_ns),
            Item::Header(_) | Item::Baseline(_) => {}
        }
        r.pipe.check()?;
    }
    for w in reader.warnings() {
        eprintln!("cgtrace: warning: {w}");
    }
    if !reader.clean_end() {
        eprintln!(
            "cgtrace: warning: the session has no end marker (recording interrupted?): replayed what was complete"
        );
    }
    Ok(())
}

/// `cgtrace replay FILE`: the live output of the recorded run.
pub fn replay(path: &Path, json: bool, speed: Speed, filters: &Filters) -> anyhow::Result<()> {
    let (mut reader, mut r) = open(path, filters, |h| {
        let out = BufWriter::with_capacity(1 << 16, io::stdout());
        let ctx = RenderContext::new(h.hierarchies.clone(), h.clock);
        if json {
            vec![Box::new(JsonSink::new(out, ctx)) as Box<dyn Sink>]
        } else {
            vec![Box::new(TextSink::new(out, ctx)) as Box<dyn Sink>]
        }
    })?;
    feed(&mut reader, &mut r, speed)?;
    let summary = r.summary();
    r.pipe.finish(&summary)?;
    Ok(())
}

/// Percentiles of one lifetime histogram.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// `cgtrace report --json`.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub hostname: String,
    pub kernel_release: String,
    pub summary: Summary,
    pub verdicts: Vec<Verdict>,
    /// "live.memory", "dying.qos.burstable", … → percentiles.
    pub lifetimes: BTreeMap<String, Percentiles>,
    pub warnings: Vec<String>,
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        count: h.len(),
        p50_ns: h.value_at_quantile(0.5),
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        max_ns: h.max(),
    })
}

/// Builds the report of a session.
pub fn build_report(path: &Path, filters: &Filters) -> anyhow::Result<Report> {
    let (mut reader, mut r) = open(path, filters, |_| Vec::new())?;
    let memory = r.pipe.tracker.memory_hierarchy();
    r.pipe.node = Some(NodeMode {
        lifetimes: Lifetimes::new(memory),
        metrics: None,
        labels: HashMap::new(),
    });
    feed(&mut reader, &mut r, Speed::Max)?;
    let summary = r.summary();
    let verdicts = r.pipe.verdicts();
    let mut lifetimes = BTreeMap::new();
    if let Some(node) = &r.pipe.node {
        let hs: &Hierarchies = &r.header.hierarchies;
        for &id in hs.by_id.keys() {
            if let Some(p) = node.lifetimes.hierarchy(id) {
                for phase in [Phase::Live, Phase::Dying] {
                    if let Some(pc) = percentiles(p.get(phase)) {
                        lifetimes.insert(format!("{}.{}", phase.name(), hs.label(id)), pc);
                    }
                }
            }
        }
        for q in [
            Some(Qos::Guaranteed),
            Some(Qos::Burstable),
            Some(Qos::Besteffort),
            None,
        ] {
            if let Some(p) = node.lifetimes.qos(q) {
                for phase in [Phase::Live, Phase::Dying] {
                    if let Some(pc) = percentiles(p.get(phase)) {
                        lifetimes.insert(format!("{}.qos.{}", phase.name(), Qos::name(q)), pc);
                    }
                }
            }
        }
    }
    Ok(Report {
        ty: "report",
        hostname: r.header.hostname.clone(),
        kernel_release: r.header.kernel_release.clone(),
        summary,
        verdicts,
        lifetimes,
        warnings: reader.warnings().to_vec(),
    })
}

/// `cgtrace report FILE`.
pub fn report(path: &Path, json: bool, filters: &Filters) -> anyhow::Result<()> {
    let rep = build_report(path, filters)?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &rep)?;
        writeln!(out)?;
        return Ok(());
    }
    let s = &rep.summary;
    let t = &s.totals;
    writeln!(
        out,
        "session from {} (kernel {}), {:.1}s, tier {}: {} events, {} lost",
        rep.hostname,
        rep.kernel_release,
        s.duration_ns as f64 / 1e9,
        s.tier,
        s.events.get("total").copied().unwrap_or(0),
        s.lost
    )?;
    writeln!(
        out,
        "memcgs: {} live, {} dying, {} freed during the run; {} dying before start ({} freed since)",
        t.live, t.dying, t.freed, t.dying_before_start, t.freed_before_start
    )?;
    let pods: Vec<&PodSummary> = s
        .pods
        .iter()
        .filter(|p| p.stats.live + p.stats.dying + p.stats.freed > 0)
        .collect();
    if !pods.is_empty() {
        writeln!(out, "\npods:")?;
        writeln!(
            out,
            "  {:>6} {:>6} {:>6}  {:<10}  POD",
            "LIVE", "DYING", "FREED", "QOS"
        )?;
        for p in pods.iter().take(50) {
            let name = match (&p.stats.namespace, &p.stats.name) {
                (Some(ns), Some(n)) => format!(" {ns}/{n}"),
                _ => String::new(),
            };
            let mut line = Vec::new();
            crate::format::escape::write_terminal(
                &mut line,
                format!("{}{name}", p.stats.pod_uid).as_bytes(),
            )?;
            writeln!(
                out,
                "  {:>6} {:>6} {:>6}  {:<10}  {}",
                p.stats.live,
                p.stats.dying,
                p.stats.freed,
                Qos::name(p.stats.qos),
                String::from_utf8_lossy(&line)
            )?;
        }
    }
    if !rep.lifetimes.is_empty() {
        writeln!(out, "\nlifetimes:")?;
        for (k, p) in &rep.lifetimes {
            writeln!(
                out,
                "  {k:<28} count {:>7}  p50 {:>8}  p90 {:>8}  p99 {:>8}  max {:>8}",
                p.count,
                human_ns(p.p50_ns),
                human_ns(p.p90_ns),
                human_ns(p.p99_ns),
                human_ns(p.max_ns)
            )?;
        }
    }
    if rep.verdicts.is_empty() {
        writeln!(out, "\nverdicts: none")?;
    } else {
        writeln!(out, "\nverdicts:")?;
        for v in &rep.verdicts {
            writeln!(out, "{}", crate::detectors::render_verdict(v))?;
        }
    }
    Ok(())
}
