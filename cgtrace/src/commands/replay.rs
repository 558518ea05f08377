//! `cgtrace replay` and `cgtrace report`: a recorded session fed through the same pipeline as
//! `live`, so the output is the live run's.
use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    detectors::Verdict,
    format::{clock::ClockRef, units::human_ns},
    kernel::hierarchy::Hierarchies,
    model::{baseline::Baseline, k8s::Qos, tracker::PodSummary},
    pipeline::{
        Pipeline,
        facts::RunFacts,
        filters::Filters,
        histogram::{Lifetimes, Phase},
        node::LifetimeSink,
        output::{JsonSink, RenderContext, Sink, Summary, TextSink},
        pod_names::RecordedPodNames,
    },
    probes::{Attached, Tier, buffer::Buffer},
    session::{Header, Item, SessionError, SessionReader},
};

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

/// The live run's options as text in the header's `options` (JSON): what version-1 sessions
/// carried of the run's facts; version 2 has them as typed header fields.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct RecordedOptions {
    /// The filters, for people.
    pub filters: String,
    pub tier_rejected: BTreeMap<String, String>,
}

impl RecordedOptions {
    pub fn of(facts: &RunFacts) -> RecordedOptions {
        RecordedOptions {
            filters: serde_json::to_string(&facts.filters).unwrap_or_default(),
            tier_rejected: facts.rejected.iter().cloned().collect(),
        }
    }
}

/// The facts of a recorded run, from its header, with the replay's own filters.
pub fn facts_of_header(h: &Header, filters: &Filters) -> RunFacts {
    let rejected = if h.rejected.is_empty() {
        // Version 1: the rejected tiers were only in the options text.
        serde_json::from_str::<RecordedOptions>(&h.options)
            .map(|o| o.tier_rejected.into_iter().collect())
            .unwrap_or_default()
    } else {
        h.rejected.clone()
    };
    RunFacts {
        kernel_release: h.kernel_release.clone(),
        page_size: h.page_size,
        hierarchies: h.hierarchies.clone(),
        tier: Tier::from_name(&h.tier).unwrap_or(Tier::Tracepoint),
        tracepoints: Attached::from_name(&h.attach).unwrap_or(Attached::Tracepoint),
        buffer: h
            .buffer
            .as_deref()
            .and_then(Buffer::from_name)
            .unwrap_or(Buffer::Ring),
        rejected,
        fallbacks: h.fallbacks.clone(),
        clock: h.clock,
        filters: filters.clone(),
        oom: h.oom.clone(),
    }
}

/// A session being fed through the pipeline.
pub struct Replayer {
    pub header: Header,
    pub pipe: Pipeline,
    first_ts: Option<u64>,
    last_ts: u64,
    end_ns: Option<u64>,
}

/// Opens a session file, reading its header and baseline.
pub fn open(
    path: &Path,
    filters: &Filters,
    sinks: impl FnOnce(&Hierarchies, ClockRef) -> Vec<Box<dyn Sink>>,
) -> anyhow::Result<(SessionReader<BufReader<File>>, Replayer)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = SessionReader::new(BufReader::with_capacity(1 << 20, f))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    start(reader, filters, sinks).with_context(|| path.display().to_string())
}

/// Reads a session's header and baseline and builds the pipeline from the recorded run's facts,
/// with the replay's filters and sinks.
pub fn start<R: Read>(
    mut reader: SessionReader<R>,
    filters: &Filters,
    sinks: impl FnOnce(&Hierarchies, ClockRef) -> Vec<Box<dyn Sink>>,
) -> anyhow::Result<(SessionReader<R>, Replayer)> {
    let header = match reader.next() {
        Ok(Some(Item::Header(h))) => *h,
        Ok(_) => anyhow::bail!("the session has no header"),
        Err(e) => anyhow::bail!("{e}"),
    };
    let baseline = match reader.next() {
        Ok(Some(Item::Baseline(b))) => b,
        _ => Baseline::default(),
    };
    let facts = facts_of_header(&header, filters);
    let sinks = sinks(&facts.hierarchies, facts.clock);
    let pipe = Pipeline::new(
        facts,
        &baseline,
        sinks,
        Box::new(RecordedPodNames::default()),
    )
    .map_err(|e| crate::UsageError(e.into()))?;
    Ok((
        reader,
        Replayer {
            pipe,
            first_ts: None,
            last_ts: header.clock.mono_ns,
            end_ns: None,
            header,
        },
    ))
}

/// Waits until an event of time `ts_ns` is due at `speed`.
fn pace(r: &mut Replayer, start: Instant, ts_ns: u64, speed: Speed) -> io::Result<()> {
    let first = *r.first_ts.get_or_insert(ts_ns);
    if let Speed::Times(x) = speed {
        let due = Duration::from_nanos((ts_ns.saturating_sub(first) as f64 / x) as u64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            r.pipe.flush()?;
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// Feeds every item after the baseline through the pipeline. A damaged file replays what can
/// be read; the reader's warnings go to stderr.
pub fn feed<R: Read>(
    reader: &mut SessionReader<R>,
    r: &mut Replayer,
    speed: Speed,
) -> anyhow::Result<()> {
    feed_with(reader, r, speed, |_, _| Ok(true))
}

/// [`feed`], with `before(pipeline, ts_ns)` called before each event (after pacing); it returns
/// false to stop the replay there (`top` and `report --html` sample the pipeline from it).
pub fn feed_with<R: Read>(
    reader: &mut SessionReader<R>,
    r: &mut Replayer,
    speed: Speed,
    mut before: impl FnMut(&Pipeline, u64) -> anyhow::Result<bool>,
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
                pace(r, start, ev.ts_ns, speed)?;
                if !before(&r.pipe, ev.ts_ns)? {
                    return Ok(());
                }
                r.pipe.event(&ev);
            }
            Item::Lost { ts_ns, kind, count } => r.pipe.lost_delta(ts_ns, kind, count),
            Item::PodName {
                pod_uid,
                namespace,
                name,
            } => r.pipe.pod_name(&pod_uid, &namespace, &name),
            Item::KernelMemcgs(k) => r.pipe.kernel_memcgs(&k),
            Item::Note(n) => {
                r.pipe.note(&n);
            }
            Item::Footer { end_ns, .. } => r.end_ns = Some(end_ns),
            Item::Header(_) | Item::Baseline(_) => {}
        }
        r.pipe.take_sink_error()?;
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

impl Replayer {
    /// Where the recorded run ended: its footer, else its last event.
    pub fn end_ns(&self) -> u64 {
        self.end_ns.unwrap_or(self.last_ts)
    }
}

/// `cgtrace replay FILE`: the live output of the recorded run.
pub fn replay(path: &Path, json: bool, speed: Speed, filters: &Filters) -> anyhow::Result<()> {
    let (mut reader, mut r) = open(path, filters, |h, clock| {
        let out = BufWriter::with_capacity(1 << 16, io::stdout());
        let ctx = RenderContext::new(h.clone(), clock);
        if json {
            vec![Box::new(JsonSink::new(out, ctx)) as Box<dyn Sink>]
        } else {
            vec![Box::new(TextSink::new(out, ctx)) as Box<dyn Sink>]
        }
    })?;
    feed(&mut reader, &mut r, speed)?;
    let end = r.end_ns();
    r.pipe.finish(end)?;
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
    let lifetimes_of_run = std::rc::Rc::new(std::cell::RefCell::new(Lifetimes::new(None)));
    let shared = lifetimes_of_run.clone();
    let (mut reader, mut r) = open(path, filters, |h, _| {
        let memory = h.with_controller("memory").map(|m| m.id);
        *shared.borrow_mut() = Lifetimes::new(memory);
        vec![Box::new(LifetimeSink(shared)) as Box<dyn Sink>]
    })?;
    feed(&mut reader, &mut r, Speed::Max)?;
    let summary = r.pipe.summary(r.end_ns());
    let verdicts = r.pipe.verdicts();
    let mut lifetimes = BTreeMap::new();
    {
        let node = lifetimes_of_run.borrow();
        let hs: &Hierarchies = &r.header.hierarchies;
        for &id in hs.by_id.keys() {
            if let Some(p) = node.hierarchy(id) {
                for phase in [Phase::Live, Phase::Dying] {
                    if let Some(pc) = percentiles(p.get(phase)) {
                        lifetimes.insert(format!("{}.{}", phase.name(), hs.label(id)), pc);
                    }
                }
            }
        }
        for q in Qos::CLASSES {
            if let Some(p) = node.qos(q) {
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

/// The report's table of pods with memcgs (the first 50).
fn write_pods(out: &mut impl Write, pods: &[PodSummary]) -> anyhow::Result<()> {
    let pods: Vec<&PodSummary> = pods
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
    Ok(())
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
        s.total_events(),
        s.lost
    )?;
    writeln!(
        out,
        "memcgs: {} live, {} dying, {} freed during the run; {} dying before start ({} freed since)",
        t.live, t.dying, t.freed, t.dying_before_start, t.freed_before_start
    )?;
    if let Some(o) = &s.oom {
        writeln!(
            out,
            "OOM kills: {} (the count is {})",
            o.kills_text(),
            o.count_exactness
        )?;
    }
    write_pods(&mut out, &s.pods)?;
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

#[cfg(test)]
mod tests {
    use cgtrace_common::EventKind;

    use super::*;
    use crate::{model::tracker::tests::ev, session::SessionWriter};

    /// A session recorded on a kernel of 64 KiB pages replays its figures in pages of that size,
    /// whatever the page size of the machine that replays it.
    #[test]
    fn a_session_replays_in_the_page_size_of_its_header() -> anyhow::Result<()> {
        const PAGE: u64 = 65536;
        let header = Header {
            cgtrace_version: "0.1.0".into(),
            kernel_release: "6.1.0-arm64-64k".into(),
            hostname: "node".into(),
            boot_id: "6f1c2c6e-3d2a-4b7e-9d55-0b7c1f2e3a4d".into(),
            clock: ClockRef {
                mono_ns: 1,
                realtime_ns: 1_763_900_000_000_000_000,
            },
            tier: "tracepoint".into(),
            attach: "raw_tracepoint".into(),
            hierarchies: RunFacts::memory_at(Some(4)),
            options: String::new(),
            page_size: PAGE,
            filters: Filters::default(),
            rejected: Vec::new(),
            fallbacks: Vec::new(),
            oom: None,
            buffer: None,
        };
        // The most pages the tracker holds: in pages of another size they would not fit.
        let pages = [1u32, 3, u32::MAX];
        let paths: Vec<String> = (0..pages.len()).map(|i| format!("/svc{i}")).collect();
        let mut w = SessionWriter::new(Vec::new(), &header, &Baseline::default())?;
        for (i, (&p, path)) in pages.iter().zip(&paths).enumerate() {
            let id = 100 + i as u64;
            w.event(&ev(EventKind::Mkdir, 10, 4, id, path.as_bytes()))?;
            let mut rmdir = ev(EventKind::Rmdir, 20, 4, id, path.as_bytes());
            rmdir.usage_bytes = Some(u64::from(p) * PAGE);
            rmdir.kmem_bytes = Some(u64::from(p / 2) * PAGE);
            w.event(&rmdir)?;
        }
        let bytes = w.finish_at(30)?;

        let reader = SessionReader::new(&bytes[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (mut reader, mut r) = start(reader, &Filters::default(), |_, _| Vec::new())?;
        feed(&mut reader, &mut r, Speed::Max)?;
        let figures: Vec<(Option<u64>, Option<u64>)> = r
            .pipe
            .tracker
            .dying_memcgs()
            .iter()
            .map(|d| (d.usage_bytes, d.kmem_bytes))
            .collect();
        let want: Vec<(Option<u64>, Option<u64>)> = pages
            .iter()
            .map(|&p| (Some(u64::from(p) * PAGE), Some(u64::from(p / 2) * PAGE)))
            .collect();
        assert_eq!(figures, want);
        Ok(())
    }
}
