//! `cgtrace live`: stream every cgroup event of this node to stdout until Ctrl-C.
use std::{
    collections::HashMap,
    io::{self, BufWriter, Write},
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use cgtrace_common::EventKind;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    commands::record::{self, RecordOptions, SessionSink},
    commands::replay::RecordedOptions,
    format::clock::{ClockRef, monotonic_ns},
    kernel::hierarchy::Hierarchies,
    model::baseline,
    pipeline::histogram::{HdrLogWriter, Lifetimes},
    pipeline::metrics::{Metrics, MetricsState},
    pipeline::output::{JsonSink, RenderContext, Sink, TextSink},
    pipeline::{NodeMode, Pipeline, PodNames},
    probes::{ProbeOptions, Probes},
    session::{Header, SessionWriter},
};

/// Records handled per drain batch before yielding to signals and timers.
pub const DRAIN_BATCH: usize = 4096;
/// Bounded drain interval: with no-wake-up submits, this is how late an event can be.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// How often the per-CPU lost counters are read.
const LOST_POLL: Duration = Duration::from_millis(250);
/// The status line (stderr, only on a terminal): memcgs by state and the top pods by dying count.
pub fn status_line(pipe: &Pipeline, lost: u64) -> String {
    let t = pipe.tracker.totals();
    let mut line = format!(
        "live {} · dying {} · freed {} · events {} · lost {}",
        t.live,
        t.dying,
        t.freed,
        pipe.counts.seen.iter().sum::<u64>(),
        lost
    );
    let pods = pipe.tracker.pods(pipe.tracker.now_ns());
    let top: Vec<String> = pods
        .iter()
        .filter(|p| p.stats.dying > 0)
        .take(3)
        .map(|p| {
            let name = match (&p.stats.namespace, &p.stats.name) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                _ => p.stats.pod_uid.chars().take(8).collect(),
            };
            // Names come from directory names: keep control characters off the terminal.
            let name: String = name.chars().filter(|c| !c.is_control()).collect();
            format!("{name} {}", p.stats.dying)
        })
        .collect();
    if !top.is_empty() {
        line.push_str(" · top dying: ");
        line.push_str(&top.join(", "));
    }
    line
}

/// What a traced run does with the events.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// `live`: one line per event.
    #[default]
    Text,
    /// `live --json`: JSON lines.
    Json,
    /// `attach`: no per-event output; histograms, verdicts, metrics.
    Attach(AttachOptions),
    /// `record`: every input of the pipeline to a session file.
    Record(RecordOptions),
}

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

#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub mode: Mode,
    pub duration: Option<Duration>,
    pub probe: ProbeOptions,
    /// Where the host's `/` is (in a container); `/` normally.
    pub host_root: PathBuf,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            mode: Mode::Text,
            duration: None,
            probe: ProbeOptions::default(),
            host_root: PathBuf::from("/"),
        }
    }
}

struct RingFd(Probes);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.ring.as_raw_fd()
    }
}

/// Runs `cgtrace live` on a single-threaded tokio runtime.
pub fn run(opts: &LiveOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    rt.block_on(live(opts))
}

/// "fentry: EPERM …; kprobe: kernel built without CONFIG_KPROBES" — why better tiers lost.
pub fn rejected_list(p: &Probes) -> String {
    p.rejected
        .iter()
        .map(|(t, why)| format!("{}: {why}", t.name()))
        .chain(p.fallbacks.iter().cloned())
        .collect::<Vec<_>>()
        .join("; ")
}

async fn live(opts: &LiveOptions) -> anyhow::Result<()> {
    // Signals first: Ctrl-C during start-up still ends with a summary, not a kill.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let hierarchies =
        Hierarchies::load_host(&opts.host_root).context("failed to read the cgroup hierarchies")?;
    // Node mode: bind the metrics port first, so a port in use is a clear error at once.
    let mut node_state = None;
    if let Mode::Attach(a) = &opts.mode
        && let Some(addr) = a.metrics
    {
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
        node_state = Some(state);
    }
    // The start-up state, walked once, on a thread of its own while the programs are verified,
    // and finished before they attach: a cgroup made in between shows up unknown at its rmdir,
    // one removed in between is settled by its release.
    let t0 = Instant::now();
    let (baseline, probes) = std::thread::scope(|s| {
        let walker = s.spawn(|| {
            let b = baseline::take(&hierarchies, monotonic_ns());
            log::debug!(
                "baseline: {} cgroups walked in {} ms",
                b.cgroups.len(),
                t0.elapsed().as_millis()
            );
            b
        });
        let mut walker = Some(walker);
        let mut baseline = None;
        let mut finish = || {
            if let Some(w) = walker.take() {
                baseline = Some(w.join());
            }
        };
        let probes = Probes::load_with(&opts.probe, &mut finish);
        finish();
        (baseline, probes)
    });
    let probes = probes?;
    let baseline = match baseline {
        Some(Ok(b)) => b,
        _ => anyhow::bail!("the start-up baseline walk failed"),
    };
    log::debug!(
        "probes loaded and attached in {} ms",
        t0.elapsed().as_millis()
    );
    // Dying memcgs already there: name them with the start-up walk, in the background (its
    // program's verification and the walk itself would delay streaming).
    let mut walk = None;
    if baseline.dying_before_start_total() > 0
        && let Some(mount) = hierarchies
            .with_controller("memory")
            .and_then(|m| m.mount.clone())
    {
        match probes.spawn_walk(&mount) {
            Ok(w) => walk = Some(w),
            Err(e) => log::info!("dying memcgs before start are counted, not named: {e:#}"),
        }
    }
    let clock = ClockRef::now();
    let started = Instant::now();
    let tier = probes.tier.name();
    let attach_kind = probes.attached.name();
    let rejected = rejected_list(&probes);

    let memory_hierarchy = hierarchies.with_controller("memory").map(|h| h.id);
    let labels: HashMap<u32, String> = hierarchies
        .by_id
        .keys()
        .map(|&id| (id, hierarchies.label(id)))
        .collect();
    let out = BufWriter::with_capacity(1 << 16, io::stdout());
    let ctx_hierarchies = hierarchies.clone();
    let ctx = RenderContext::new(hierarchies, clock);
    let mut recording = None;
    let sinks: Vec<Box<dyn Sink>> = match &opts.mode {
        Mode::Json => vec![Box::new(JsonSink::new(out, ctx))],
        Mode::Text => vec![Box::new(TextSink::new(out, ctx))],
        // attach prints histograms and the summary itself, no events.
        Mode::Attach(_) => vec![Box::new(crate::pipeline::output::SummarySink::new(
            out, ctx,
        ))],
        Mode::Record(r) => {
            let file = record::create(&r.path, r.force)?;
            let header = Header {
                cgtrace_version: env!("CARGO_PKG_VERSION").to_string(),
                kernel_release: probes.kernel_release.clone(),
                hostname: record::hostname(),
                boot_id: record::boot_id(),
                clock,
                tier: tier.to_string(),
                attach: attach_kind.to_string(),
                hierarchies: ctx_hierarchies.clone(),
                options: serde_json::to_string(&RecordedOptions {
                    filters: format!(
                        "{:?}",
                        opts.probe
                            .path_prefix
                            .as_ref()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                    ),
                    tier_rejected: probes
                        .rejected
                        .iter()
                        .map(|(t, why)| (t.name().to_string(), why.clone()))
                        .collect(),
                })?,
            };
            let writer =
                SessionWriter::new(BufWriter::with_capacity(1 << 16, file), &header, &baseline)
                    .with_context(|| format!("writing {}", r.path.display()))?;
            let sink = SessionSink::new(writer, r.path.clone());
            recording = Some((sink.bytes.clone(), sink.end_ns.clone(), r.clone()));
            vec![
                Box::new(sink),
                Box::new(crate::pipeline::output::SummarySink::new(io::stderr(), ctx)),
            ]
        }
    };
    let mut pipe = Pipeline::new(
        memory_hierarchy,
        &probes.kernel_release,
        &baseline,
        sinks,
        Some(PodNames::new(opts.host_root.join("var/log/pods"))),
    );
    let mut attach = None;
    if let Mode::Attach(a) = &opts.mode {
        pipe.node = Some(NodeMode {
            lifetimes: Lifetimes::new(memory_hierarchy),
            metrics: node_state.clone(),
            labels: labels.clone(),
        });
        let hdr = match &a.hdr_log {
            Some(p) => {
                let f = std::fs::File::create(p)
                    .with_context(|| format!("creating --hdr-log {}", p.display()))?;
                let l = labels.clone();
                Some(HdrLogWriter::new(
                    BufWriter::new(f),
                    std::time::SystemTime::now(),
                    move |h| {
                        l.get(&h)
                            .cloned()
                            .unwrap_or_else(|| format!("hierarchy-{h}"))
                    },
                )?)
            }
            None => None,
        };
        attach = Some(AttachState {
            opts: a.clone(),
            hdr,
            last_report: Instant::now(),
            last_metrics: Instant::now() - Duration::from_secs(10),
            started: Instant::now(),
            labels: labels.clone(),
        });
    }
    pipe.tracker
        .set_css_joins(probes.tier != crate::probes::Tier::Tracepoint);
    pipe.path_prefix(opts.probe.path_prefix.clone());
    pipe.ignore_paths_with_prefix(
        format!("/{}", crate::probes::walk_trigger_prefix()).into_bytes(),
    );

    // Attached, baseline taken: from here every event is streamed.
    eprintln!(
        "cgtrace: attached: tier {tier} ({attach_kind}s on the cgroup tracepoints{}), kernel {}, ring {} KiB{}",
        if probes.tier == crate::probes::Tier::Tracepoint {
            ""
        } else {
            " + memcg css hooks"
        },
        probes.kernel_release,
        opts.probe.ring_size / 1024,
        if rejected.is_empty() {
            String::new()
        } else {
            format!("; not used: {rejected}")
        }
    );
    if probes.offsets.is_none() {
        eprintln!(
            "cgtrace: no kernel BTF ({} unreadable; give one with --btf FILE or CGTRACE_BTF=FILE): \
             memcg IDs and usage (memory, kmem, memsw) are unknown in every event and dying memcgs \
             from before start are not named; mkdir, rmdir and release still stream from the \
             cgroup tracepoints",
            crate::kernel::btf::vmlinux_path().display()
        );
    }
    // SAFETY: the fd is the ring buffer map's, owned by `Probes` inside the AsyncFd: it stays open
    // and the same for the AsyncFd's whole life, and as_raw_fd always returns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(RingFd(probes), Interest::READABLE) }
        .map_err(io::Error::from)
        .context("registering the ring buffer with epoll")?;
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut last_lost_poll = Instant::now();
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(2) } == 1 && !matches!(opts.mode, Mode::Attach(_));
    if let Some(m) = &node_state
        && let Ok(mut m) = m.lock()
    {
        m.attached = true;
        m.last_drain = Instant::now();
        m.metrics
            .set_attached_info(&[("tier", tier), ("attach", attach_kind)]);
    }
    let mut status = String::new();
    let mut status_at: Option<Instant> = None;
    let mut reported_lost = [0u64; EventKind::SLOTS];
    let uses_tracefs = ring.get_ref().0.attached == crate::probes::Attached::Tracepoint
        || ring.get_ref().0.mkdir_failures.is_ok();
    let mut tracefs_gone = false;

    loop {
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = until => break,
            _ = sighup.recv() => {
                if let Some(a) = &mut attach {
                    a.report(&mut pipe)?;
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                guard.clear_ready();
            }
            _ = tick.tick() => {}
        }
        if let Some(w) = &mut walk
            && let Some(report) = w.poll(|b| pipe.record(b))
        {
            log_walk(&report);
        }
        // Drain in bounded batches, yielding between them so signals are never starved.
        loop {
            let n = ring.get_mut().0.drain(DRAIN_BATCH, |b| pipe.record(b));
            pipe.check()?;
            if n < DRAIN_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Events and the status line share the terminal: clear it, print, redraw.
        if tty {
            eprint!("\r\x1b[K");
        }
        pipe.flush()?;
        if tty {
            // Recomputed about once a second (it walks the pods), redrawn after every batch.
            if status_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                status = match &recording {
                    Some((bytes, _, r)) => {
                        let secs = started.elapsed().as_secs_f64();
                        let n: u64 = pipe.counts.seen.iter().sum();
                        format!(
                            "recording {}: {secs:.0}s · {n} events ({:.0}/s) · lost {} · {} · dying memcgs {}",
                            r.path.display(),
                            n as f64 / secs.max(0.001),
                            pipe.counts.lost.iter().sum::<u64>(),
                            record::human_bytes(bytes.get()),
                            pipe.tracker.totals().dying
                        )
                    }
                    None => status_line(&pipe, pipe.counts.lost.iter().sum()),
                };
                status_at = Some(Instant::now());
            }
            eprint!("{status}");
        }
        if let Some(logger) = ring.get_mut().0.logger.as_mut() {
            logger.flush();
        }
        if last_lost_poll.elapsed() >= LOST_POLL {
            last_lost_poll = Instant::now();
            poll_lost(&ring.get_ref().0, &mut pipe, &mut reported_lost);
            // Classic tracepoints came from tracefs: say so if it goes away under us.
            if uses_tracefs && !tracefs_gone && crate::kernel::tracefs::find().is_none() {
                tracefs_gone = true;
                eprintln!(
                    "cgtrace: warning: tracefs was unmounted while cgtrace runs: the attached tracepoints keep working, but a restart needs tracefs (mount -t tracefs nodev /sys/kernel/tracing)"
                );
            }
        }
        if let Some(a) = &mut attach {
            a.tick(&mut pipe)?;
        }
        if let Some((bytes, _, r)) = &recording
            && r.max_size.is_some_and(|m| bytes.get() >= m)
        {
            eprintln!(
                "cgtrace: {} reached --max-size ({}): stopping",
                r.path.display(),
                record::human_bytes(bytes.get())
            );
            break;
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    // Finish: the walk's records (stopped if still running), everything still in the ring,
    // the final lost counts, the summary.
    if let Some(w) = &mut walk
        && let Some(report) = w.finish(|b| pipe.record(b))
    {
        log_walk(&report);
    }
    while ring.get_mut().0.drain(DRAIN_BATCH, |b| pipe.record(b)) > 0 {
        pipe.check()?;
    }
    poll_lost(&ring.get_ref().0, &mut pipe, &mut reported_lost);
    if let Some(a) = &mut attach {
        a.report(&mut pipe)?;
    }
    // Event time, not the wall clock: a replay of a recording prints the same duration.
    let end_ns = monotonic_ns();
    if let Some((_, end, _)) = &recording {
        end.set(end_ns);
    }
    let mut summary = pipe.summary(tier, attach_kind, end_ns.saturating_sub(clock.mono_ns));
    summary.tier_rejected = ring
        .get_ref()
        .0
        .rejected
        .iter()
        .map(|(t, why)| (t.name(), why.clone()))
        .collect();
    pipe.finish(&summary)?;
    Ok(())
}

fn log_walk(report: &Result<crate::probes::WalkReport, String>) {
    match report {
        Ok(r) => log::info!(
            "start-up walk: {} memcgs visited, {} found dying, {} triggers{}",
            r.visited,
            r.found,
            r.triggers,
            if r.done {
                ""
            } else {
                " (stopped before the end)"
            }
        ),
        Err(e) => log::info!("dying memcgs before start are counted, not named: {e}"),
    }
}

/// `attach`'s periodic work: metrics about once a second, histograms and verdicts every interval.
struct AttachState {
    opts: AttachOptions,
    hdr: Option<HdrLogWriter<BufWriter<std::fs::File>>>,
    last_report: Instant,
    last_metrics: Instant,
    started: Instant,
    labels: HashMap<u32, String>,
}

impl AttachState {
    fn tick(&mut self, pipe: &mut Pipeline) -> anyhow::Result<()> {
        if self.last_metrics.elapsed() >= Duration::from_secs(1) {
            self.last_metrics = Instant::now();
            let verdicts = pipe.verdicts();
            let levels: Vec<(&str, u8)> = verdicts
                .iter()
                .map(|v| (v.detector, v.severity as u8 + 1))
                .collect();
            let headroom = pipe.detectors.id_headroom(&pipe.tracker);
            if let Some(node) = &mut pipe.node {
                node.lifetimes.update_pods(&pipe.tracker);
                if let Some(m) = &node.metrics
                    && let Ok(mut m) = m.lock()
                {
                    m.last_drain = Instant::now();
                    m.metrics.update(&pipe.tracker, headroom, &levels);
                }
            }
        }
        if self.last_report.elapsed() >= self.opts.interval {
            self.report(pipe)?;
        }
        Ok(())
    }

    /// Prints the histograms and the current verdicts; writes an HdrHistogram log interval.
    fn report(&mut self, pipe: &mut Pipeline) -> anyhow::Result<()> {
        let interval = self.last_report.elapsed();
        self.last_report = Instant::now();
        let Some(node) = &mut pipe.node else {
            return Ok(());
        };
        node.lifetimes.update_pods(&pipe.tracker);
        let labels = &self.labels;
        let text = node.lifetimes.render_terminal(&|h| {
            labels
                .get(&h)
                .cloned()
                .unwrap_or_else(|| format!("hierarchy-{h}"))
        });
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
        out.write_all(text.as_bytes())?;
        for v in pipe.detectors.verdicts(&pipe.tracker) {
            writeln!(out, "{}", crate::detectors::render_verdict(&v))?;
        }
        out.flush()?;
        if let Some(h) = &mut self.hdr {
            let start = (self.started.elapsed() - interval).as_secs_f64();
            h.write_interval(start, interval.as_secs_f64(), &node.lifetimes)?;
            h.flush()?;
        }
        Ok(())
    }
}

/// Reads the lost counters and reports growth on stderr: nothing is lost silently.
fn poll_lost(p: &Probes, pipe: &mut Pipeline, reported: &mut [u64; EventKind::SLOTS]) {
    match p.lost() {
        Ok(lost) => {
            for k in EventKind::ALL {
                let i = k as usize;
                if lost[i] > reported[i] {
                    eprintln!(
                        "cgtrace: lost {} {} event(s) (ring buffer full; try a larger --ring-size)",
                        lost[i] - reported[i],
                        k.name()
                    );
                    reported[i] = lost[i];
                }
            }
            pipe.lost_totals(monotonic_ns(), &lost);
        }
        Err(e) => log::warn!("cannot read the lost-event counters: {e:#}"),
    }
}
