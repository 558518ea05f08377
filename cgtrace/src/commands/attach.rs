//! `cgtrace attach`: node mode. No per-event output; lifetime histograms and verdicts every
//! `--interval` (and on SIGHUP), Prometheus metrics refreshed about once a second, an
//! HdrHistogram interval log. Its sinks are [`crate::pipeline::node`]'s.
use std::{
    cell::RefCell,
    collections::HashMap,
    io::{self, BufWriter, Write},
    path::PathBuf,
    rc::Rc,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::pipeline::{
    Pipeline,
    facts::RunFacts,
    histogram::{HdrLogWriter, Lifetimes},
    metrics::{Metrics, MetricsState},
    node::{LifetimeSink, MetricsSink},
    output::{RenderContext, Sink, SummarySink},
    own_cost::OwnCost,
};

/// `cgtrace attach`.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// Histograms and verdicts are printed this often.
    pub interval: Duration,
    /// Serve `/metrics` and `/healthz` here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Write the histograms in the HdrHistogram interval-log format here.
    pub hdr_log: Option<PathBuf>,
}

/// The metrics are refreshed from the tracker this often.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// Attach's options with the metrics port bound (before the probes load, so a port in use is
/// an error at once).
pub struct Bound {
    opts: AttachOptions,
    metrics: Option<Arc<Mutex<MetricsState>>>,
}

/// Binds `--metrics` and starts serving `/metrics` and `/healthz` (unhealthy until attached).
pub async fn bind(opts: &AttachOptions) -> anyhow::Result<Bound> {
    let mut metrics = None;
    if let Some(addr) = opts.metrics {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            crate::UsageError(anyhow::anyhow!(
                "cannot listen on {addr} for --metrics: {e}"
            ))
        })?;
        let state = Arc::new(Mutex::new(MetricsState::new(Metrics::new())));
        let serving = state.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::pipeline::metrics::serve_listener(listener, serving).await {
                log::error!("metrics server stopped: {e}");
            }
        });
        metrics = Some(state);
    }
    Ok(Bound {
        opts: opts.clone(),
        metrics,
    })
}

/// Hierarchy id → label ("memory", "cpu,cpuacct", "unified").
fn labels(facts: &RunFacts) -> HashMap<u32, String> {
    let h = &facts.hierarchies;
    h.by_id.keys().map(|&id| (id, h.label(id))).collect()
}

impl Bound {
    /// The sinks of node mode (histograms, metrics, the summary as text) and its periodic state.
    pub fn start(self, facts: &RunFacts) -> anyhow::Result<(Vec<Box<dyn Sink>>, AttachState)> {
        let labels = labels(facts);
        let lifetimes = Rc::new(RefCell::new(Lifetimes::new(facts.memory_hierarchy())));
        let ctx = RenderContext::new(facts.hierarchies.clone(), facts.clock);
        let out = BufWriter::with_capacity(1 << 16, io::stdout());
        let mut sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(LifetimeSink(lifetimes.clone())),
            Box::new(SummarySink::new(out, ctx)),
        ];
        if let Some(m) = &self.metrics {
            sinks.push(Box::new(MetricsSink {
                state: m.clone(),
                labels: labels.clone(),
                memory_hierarchy: facts.memory_hierarchy(),
            }));
        }
        let hdr = match &self.opts.hdr_log {
            Some(p) => {
                let f = std::fs::File::create(p)
                    .with_context(|| format!("creating --hdr-log {}", p.display()))?;
                let l = labels.clone();
                Some(HdrLogWriter::new(
                    BufWriter::new(f),
                    std::time::SystemTime::now(),
                    move |h| label_of(&l, h),
                )?)
            }
            None => None,
        };
        let now = Instant::now();
        let state = AttachState {
            opts: self.opts,
            metrics: self.metrics,
            lifetimes,
            hdr,
            last_report: now,
            last_metrics: now.checked_sub(METRICS_EVERY * 10).unwrap_or(now),
            started: now,
            labels,
        };
        Ok((sinks, state))
    }
}

fn label_of(labels: &HashMap<u32, String>, h: u32) -> String {
    labels
        .get(&h)
        .cloned()
        .unwrap_or_else(|| format!("hierarchy-{h}"))
}

/// `attach`'s periodic work: metrics about once a second, histograms and verdicts every interval.
pub struct AttachState {
    opts: AttachOptions,
    metrics: Option<Arc<Mutex<MetricsState>>>,
    lifetimes: Rc<RefCell<Lifetimes>>,
    hdr: Option<HdrLogWriter<BufWriter<std::fs::File>>>,
    last_report: Instant,
    last_metrics: Instant,
    started: Instant,
    labels: HashMap<u32, String>,
}

impl AttachState {
    /// The probes are attached: `/healthz` turns healthy, the info metric says how.
    pub fn attached(&mut self, facts: &RunFacts) {
        if let Some(m) = &self.metrics
            && let Ok(mut m) = m.lock()
        {
            m.attached = true;
            m.last_drain = Instant::now();
            m.metrics.set_attached_info(&[
                ("tier", facts.tier.name()),
                ("attach", facts.tracepoints.name()),
            ]);
        }
    }

    /// The periodic work; `own_cost` samples cgtrace's own cost (once a second at most).
    pub fn tick(
        &mut self,
        pipe: &mut Pipeline,
        own_cost: impl FnOnce(&Pipeline) -> OwnCost,
    ) -> anyhow::Result<()> {
        let due_metrics = self.last_metrics.elapsed() >= METRICS_EVERY;
        let due_report = self.last_report.elapsed() >= self.opts.interval;
        if !(due_metrics || due_report) {
            return Ok(());
        }
        let cost = own_cost(pipe);
        if due_metrics {
            self.last_metrics = Instant::now();
            self.refresh_metrics(pipe, &cost);
        }
        if due_report {
            self.report(pipe, &cost)?;
        }
        Ok(())
    }

    fn refresh_metrics(&mut self, pipe: &Pipeline, cost: &OwnCost) {
        let verdicts = pipe.verdicts();
        let levels: Vec<(&str, u8)> = verdicts
            .iter()
            .map(|v| (v.detector, v.severity as u8 + 1))
            .collect();
        let headroom = pipe.detectors.id_headroom(&pipe.tracker);
        self.lifetimes.borrow_mut().update_pods(&pipe.tracker);
        if let Some(m) = &self.metrics
            && let Ok(mut m) = m.lock()
        {
            m.last_drain = Instant::now();
            m.metrics.update(&pipe.tracker, headroom, &levels);
            m.metrics.update_own_cost(cost);
        }
    }

    /// Prints the histograms and the current verdicts; writes an HdrHistogram log interval.
    pub fn report(&mut self, pipe: &mut Pipeline, cost: &OwnCost) -> anyhow::Result<()> {
        let interval = self.last_report.elapsed();
        self.last_report = Instant::now();
        let mut lifetimes = self.lifetimes.borrow_mut();
        lifetimes.update_pods(&pipe.tracker);
        let labels = &self.labels;
        let text = lifetimes.render_terminal(&|h| label_of(labels, h));
        let t = pipe.tracker.totals();
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "== cgtrace attach: {:.0}s: memcgs {} live, {} dying, {} freed; {} dying before start; events {}, lost {}",
            self.started.elapsed().as_secs_f64(),
            t.live,
            t.dying,
            t.freed,
            t.dying_before_start,
            pipe.counts.seen.iter().sum::<u64>(),
            pipe.counts.lost.iter().sum::<u64>()
        )?;
        if let Some(t) = &pipe.facts().oom {
            let o = pipe.detectors.oom_summary(t);
            writeln!(out, "OOM kills: {}", o.kills_text())?;
        }
        writeln!(out, "{}", cost.render())?;
        out.write_all(text.as_bytes())?;
        for v in pipe.verdicts() {
            writeln!(out, "{}", crate::detectors::render_verdict(&v))?;
        }
        out.flush()?;
        if let Some(h) = &mut self.hdr {
            let start = (self.started.elapsed() - interval).as_secs_f64();
            h.write_interval(start, interval.as_secs_f64(), &lifetimes)?;
            h.flush()?;
        }
        Ok(())
    }
}
