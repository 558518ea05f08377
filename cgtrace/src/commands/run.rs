//! A traced run — what `live`, `record` and `attach` share: attach the probes, take the start-up
//! baseline, build the pipeline from the run's facts with the mode's sinks, drain the ring until
//! a signal or `--duration`, finish. The modes differ only in their sinks and periodic work.
use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use cgtrace_common::EventKind;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{Signal, SignalKind, signal},
};

use crate::{
    commands::{
        attach::{AttachOptions, AttachState},
        live,
        record::{self, RecordOptions, Recording},
        top::Top,
    },
    format::{
        clock::{ClockRef, monotonic_ns},
        units::human_bytes,
    },
    kernel::{hierarchy::Hierarchies, memcg_ids::KernelMemcgs},
    model::baseline::{self, Baseline},
    pipeline::{
        Pipeline,
        facts::RunFacts,
        filters::Filters,
        own_cost::{OwnCost, RingStats},
        pod_names::PodLogDir,
    },
    probes::{MkdirFailureMode, ProbeOptions, Probes, Tier, WalkTask, buffer::Events},
};

/// Records handled per drain batch before yielding to signals and timers.
pub const DRAIN_BATCH: usize = 4096;
/// Bounded drain interval: with no-wake-up submits, this is how late an event can be.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// How often the per-CPU lost counters are read.
const LOST_POLL: Duration = Duration::from_millis(250);
/// How often the kernel's memcg counters are read for the memcg ID headroom (one small file).
const KERNEL_COUNTS_POLL: Duration = Duration::from_secs(1);
/// A reading equal to the last one applied is applied (and recorded) again after this long.
const KERNEL_COUNTS_REFRESH: Duration = Duration::from_secs(60);

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
    /// `top`: a terminal view of the pipeline, refreshed each second.
    Top,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub mode: Mode,
    pub duration: Option<Duration>,
    pub probe: ProbeOptions,
    /// The user's filters (the probes carry their kernel-side form).
    pub filters: Filters,
    /// Where the host's `/` is (in a container); `/` normally.
    pub host_root: PathBuf,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mode: Mode::Text,
            duration: None,
            probe: ProbeOptions::default(),
            filters: Filters::default(),
            host_root: PathBuf::from("/"),
        }
    }
}

/// The ring buffer's fd, to wait on.
struct WaitFd(RawFd);

impl AsRawFd for WaitFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The probes and what a drain waits on besides the timer: the ring buffer's fd (its submits
/// wake it once `wakeup_bytes` wait), none for the perf buffers (drained on the timer alone).
struct Source {
    /// Dropped before `probes`, which owns the fd.
    wait: Option<AsyncFd<WaitFd>>,
    probes: Probes,
}

impl Source {
    fn new(probes: Probes) -> anyhow::Result<Source> {
        let wait = match probes.events.wait_fd() {
            // SAFETY: the fd is the ring buffer map's, owned by `probes`, which this struct
            // drops only after the AsyncFd (field order): it stays open and the same for the
            // AsyncFd's whole life, and as_raw_fd always returns it.
            Some(fd) => Some(
                unsafe { AsyncFd::register_with_interest(WaitFd(fd), Interest::READABLE) }
                    .map_err(io::Error::from)
                    .context("registering the ring buffer with epoll")?,
            ),
            None => None,
        };
        Ok(Source { wait, probes })
    }

    /// Until the ring buffer is readable (never for the perf buffers).
    async fn readable(&self) -> io::Result<()> {
        match &self.wait {
            Some(w) => {
                let mut guard = w.readable().await?;
                guard.clear_ready();
                Ok(())
            }
            None => std::future::pending().await,
        }
    }
}

/// Runs a traced run on a single-threaded tokio runtime.
pub fn run(opts: &RunOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    rt.block_on(traced(opts))
}

struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

/// The probes loaded and attached, and the baseline walked meanwhile on a thread of its own
/// (finished before the programs attach: a cgroup made in between shows up unknown at its
/// rmdir, one removed in between is settled by its release).
fn attach_probes(opts: &RunOptions, h: &Hierarchies) -> anyhow::Result<(Probes, Baseline)> {
    let t0 = Instant::now();
    let (baseline, probes) = std::thread::scope(|s| {
        let mut walker = Some(s.spawn(|| baseline::take(h, monotonic_ns())));
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
    // Below the floor, the loader's error is the kernel's; say what the kernel lacks first.
    let probes = probes.map_err(|e| {
        let may_load = crate::kernel::check_privileges().is_ok();
        match crate::kernel::floor::FloorFacts::probe(may_load).explain() {
            Some(why) => e.context(why),
            None => e,
        }
    })?;
    let Some(Ok(baseline)) = baseline else {
        anyhow::bail!("the start-up baseline walk failed");
    };
    log::debug!(
        "probes loaded and attached, {} cgroups in the baseline, in {} ms",
        baseline.cgroups.len(),
        t0.elapsed().as_millis()
    );
    Ok((probes, baseline))
}

/// Dying memcgs already there: named by the start-up walk, in the background (its program's
/// verification and the walk itself would delay streaming).
fn start_walk(
    probes: &Probes,
    baseline: &Baseline,
    h: &Hierarchies,
) -> Result<Option<WalkTask>, String> {
    if baseline.dying_before_start_total() == 0 {
        return Ok(None);
    }
    let Some(mount) = h.with_controller("memory").and_then(|m| m.mount.clone()) else {
        return Ok(None);
    };
    probes
        .spawn_walk(&mount)
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}

/// Says once, on stderr and in the summary and session, that the start-up walk could not name
/// the memcgs dying before start; they are still counted.
fn walk_failed(pipe: &mut Pipeline, why: &str) {
    let n = pipe.tracker.totals().dying_before_start;
    let text = format!(
        "the start-up walk could not run ({why}): the {n} memcgs dying before start are counted \
         but not named"
    );
    if pipe.note(&text) {
        eprintln!("cgtrace: {text}");
    }
}

/// The first line on stderr: what was attached, and what was not used and why.
fn announce(facts: &RunFacts, probes: &Probes, ring_size: u32, failed_mkdirs: &str) {
    let rejected = facts.rejected_list();
    let buffer = match &probes.events {
        Events::Ring(_) => format!("ring {}", human_bytes(u64::from(ring_size))),
        Events::Perf(p) => format!(
            "perf buffers {} x {} CPUs ({})",
            human_bytes(p.pages_per_cpu() as u64 * crate::kernel::page_size()),
            p.cpus(),
            probes.buffer_why.as_deref().unwrap_or("perf buffer chosen")
        ),
    };
    let reads = if probes.kernel_reads == "bpf_probe_read_kernel" {
        String::new()
    } else {
        format!(", reads with {}", probes.kernel_reads)
    };
    eprintln!(
        "cgtrace: attached: tier {} ({}s on the cgroup tracepoints{}), kernel {}, {buffer}{reads}, \
         failed mkdirs: {failed_mkdirs}{}",
        facts.tier.name(),
        facts.tracepoints.name(),
        if facts.tier == Tier::Tracepoint {
            ""
        } else {
            " + memcg css hooks"
        },
        facts.kernel_release,
        if rejected.is_empty() {
            String::new()
        } else {
            format!("; not used: {rejected}")
        }
    );
}

/// How failed mkdirs are caught in this run, for the first line.
fn failed_mkdirs(probes: &Probes, mode: MkdirFailureMode) -> String {
    let release = match probes.half_made_releases() {
        Ok(()) => "at the half-made cgroup's release".to_string(),
        Err(why) => format!("not at the half-made cgroup's release ({why})"),
    };
    match (mode, &probes.mkdir_failures) {
        (MkdirFailureMode::Cgroupfs, _) => release,
        (MkdirFailureMode::Syscall, Ok(h)) => format!("{release} and by {}", h.describe()),
        (MkdirFailureMode::Syscall, Err(why)) => {
            format!("{release}; not at the syscall ({why})")
        }
    }
}

/// The mode's own state: its periodic work and its end.
enum ModeState {
    Stream,
    Attach(Box<AttachState>),
    Record(Recording),
    Top(Box<Top>),
}

async fn traced(opts: &RunOptions) -> anyhow::Result<()> {
    // Signals first: Ctrl-C during start-up still ends with a summary, not a kill.
    let mut signals = Signals::install()?;
    let hierarchies =
        Hierarchies::load_host(&opts.host_root).context("failed to read the cgroup hierarchies")?;
    // Node mode binds the metrics port first, so a port in use is a clear error at once.
    let pending_attach = match &opts.mode {
        Mode::Attach(a) => Some(crate::commands::attach::bind(a).await?),
        _ => None,
    };
    let (probes, baseline) = attach_probes(opts, &hierarchies)?;
    let walk_start = start_walk(&probes, &baseline, &hierarchies);
    let probes_without_btf = probes.offsets.is_none();
    let failed_mkdirs = failed_mkdirs(&probes, opts.probe.mkdir_failures);
    let clock = ClockRef::now();
    let facts = RunFacts::of_probes(&probes, hierarchies, opts.filters.clone(), clock);
    let pod_names = Box::new(PodLogDir::new(opts.host_root.join("var/log/pods")));
    let (sinks, mut state) = mode_sinks(opts, &facts, &baseline, pending_attach)?;
    let mut pipe = Pipeline::new(facts, &baseline, sinks, pod_names)
        .map_err(|e| crate::UsageError(e.into()))?;
    announce(pipe.facts(), &probes, opts.probe.ring_size, &failed_mkdirs);
    let mut walk = match walk_start {
        Ok(w) => w,
        Err(e) => {
            walk_failed(&mut pipe, &e);
            None
        }
    };
    if walk.is_none() {
        pipe.walk_ended();
    }
    if probes_without_btf {
        warn_without_btf();
    }
    match &mut state {
        ModeState::Attach(a) => a.attached(pipe.facts()),
        ModeState::Top(t) => t.enter()?,
        _ => {}
    }
    let mut src = Source::new(probes)?;
    let mut lost = LostReporter::default();
    let mut counts = KernelCounts::default();
    counts.poll(&mut pipe);
    let mut drains = Drains {
        stats: RingStats {
            size_bytes: u64::from(opts.probe.ring_size),
            ..RingStats::default()
        },
    };
    run_loop(
        opts,
        &mut signals,
        &mut src,
        &mut walk,
        &mut pipe,
        &mut state,
        &mut lost,
        &mut counts,
        &mut drains,
    )
    .await?;
    if let ModeState::Top(t) = &mut state {
        t.leave();
    }
    finish(
        &mut walk,
        &mut src,
        &mut pipe,
        &mut state,
        &mut lost,
        &mut drains,
    )
}

/// The sinks and the state of the run's mode.
fn mode_sinks(
    opts: &RunOptions,
    facts: &RunFacts,
    baseline: &Baseline,
    pending_attach: Option<crate::commands::attach::Bound>,
) -> anyhow::Result<(Vec<Box<dyn crate::pipeline::output::Sink>>, ModeState)> {
    Ok(match (&opts.mode, pending_attach) {
        (Mode::Text, _) => (live::text_sinks(facts), ModeState::Stream),
        (Mode::Json, _) => (live::json_sinks(facts), ModeState::Stream),
        (Mode::Record(r), _) => {
            let (sinks, rec) = record::start(r, facts, baseline)?;
            (sinks, ModeState::Record(rec))
        }
        (Mode::Attach(_), Some(p)) => {
            let (sinks, a) = p.start(facts)?;
            (sinks, ModeState::Attach(Box::new(a)))
        }
        (Mode::Attach(_), None) => anyhow::bail!("attach without its metrics state"),
        (Mode::Top, _) => {
            let (top, sinks) = Top::live(facts)?;
            (sinks, ModeState::Top(Box::new(top)))
        }
    })
}

/// Says what a run without kernel BTF lacks.
fn warn_without_btf() {
    eprintln!(
        "cgtrace: no kernel BTF ({} unreadable; give one with --btf FILE or CGTRACE_BTF=FILE): \
         memcg IDs and usage (memory, kmem, memsw) are unknown in every event and dying memcgs \
         from before start are not named; mkdir, rmdir and release still stream from the \
         cgroup tracepoints",
        crate::kernel::btf::vmlinux_path().display()
    );
}

/// Finish: everything still in the ring, then the walk's records (stopped if still running),
/// the final lost counts, the last report, the summary — at event time, so a replay of a
/// recording prints the same duration.
fn finish(
    walk: &mut Option<WalkTask>,
    src: &mut Source,
    pipe: &mut Pipeline,
    state: &mut ModeState,
    lost: &mut LostReporter,
    drains: &mut Drains,
) -> anyhow::Result<()> {
    let walked = Walked::finish(walk);
    while drains.drain_all(&mut src.probes, pipe) > 0 {
        pipe.take_sink_error()?;
    }
    walked.apply(pipe);
    lost.poll(&src.probes, pipe);
    lost.check_notices(&src.probes);
    if let ModeState::Attach(a) = state {
        let cost = drains.own_cost(&src.probes, pipe.facts());
        a.report(pipe, &cost)?;
    }
    pipe.finish(monotonic_ns())?;
    Ok(())
}

/// The ring's drains, counted for cgtrace's own-cost figures.
struct Drains {
    stats: RingStats,
}

impl Drains {
    /// One bounded batch into the pipeline; returns the records drained.
    fn drain(&mut self, probes: &mut Probes, pipe: &mut Pipeline) -> usize {
        self.drain_by(probes, pipe, false)
    }

    /// The same, the perf buffers' held-back records too (at the end of the run).
    fn drain_all(&mut self, probes: &mut Probes, pipe: &mut Pipeline) -> usize {
        self.drain_by(probes, pipe, true)
    }

    fn drain_by(&mut self, probes: &mut Probes, pipe: &mut Pipeline, all: bool) -> usize {
        let mut bytes = 0u64;
        let f = |b: &[u8]| {
            bytes += b.len() as u64;
            pipe.feed_raw(b)
        };
        let n = if all {
            probes.drain_all(DRAIN_BATCH, f)
        } else {
            probes.drain(DRAIN_BATCH, f)
        };
        self.stats.drained(n, bytes);
        n
    }

    /// A sample of cgtrace's own cost; the fullest-drain figure starts over.
    fn own_cost(&mut self, probes: &Probes, facts: &RunFacts) -> OwnCost {
        let c = OwnCost::sample(&facts.hierarchies, self.stats, || probes.program_stats());
        self.stats.fill_bytes = 0;
        c
    }
}

/// Drains until a signal, `--duration` or `--max-size` ends the run.
#[allow(clippy::too_many_arguments)]
async fn run_loop(
    opts: &RunOptions,
    signals: &mut Signals,
    src: &mut Source,
    walk: &mut Option<WalkTask>,
    pipe: &mut Pipeline,
    state: &mut ModeState,
    lost: &mut LostReporter,
    counts: &mut KernelCounts,
    drains: &mut Drains,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut status =
        live::StatusLine::new(!matches!(state, ModeState::Attach(_) | ModeState::Top(_)));
    let mut lost_poll = LostPoll::new(&src.probes);
    loop {
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signals.int.recv() => break,
            _ = signals.term.recv() => break,
            _ = until => break,
            _ = signals.hup.recv() => {
                match state {
                    ModeState::Attach(a) => {
                        let cost = drains.own_cost(&src.probes, pipe.facts());
                        a.report(pipe, &cost)?;
                    }
                    // The terminal hung up (or was asked to): the view ends.
                    ModeState::Top(_) => break,
                    _ => {}
                }
            }
            ready = src.readable() => ready.context("waiting on the ring buffer")?,
            _ = tick.tick() => {}
            // `top`: a key, a resize, the next second (never for the other modes).
            woke = async {
                match &mut *state {
                    ModeState::Top(t) => t.wake().await,
                    _ => std::future::pending().await,
                }
            } => woke?,
        }
        drain_pass(walk, src, pipe, drains).await?;
        let recording = match state {
            ModeState::Record(r) => Some(&*r),
            _ => None,
        };
        status.around_flush(pipe, recording)?;
        if let Some(logger) = src.probes.logger.as_mut() {
            logger.flush();
        }
        if counts.due() {
            counts.poll(pipe);
        }
        lost_poll.poll(&src.probes, pipe, lost);
        if mode_tick(state, pipe, src, drains)? {
            break;
        }
    }
    status.clear();
    Ok(())
}

/// One pass: the ring drained in bounded batches (yielding between them so signals are never
/// starved), then the walk's records that came before the pass began (the ring held each event
/// that came before them: a walked memcg's mkdir and rmdir).
async fn drain_pass(
    walk: &mut Option<WalkTask>,
    src: &mut Source,
    pipe: &mut Pipeline,
    drains: &mut Drains,
) -> anyhow::Result<()> {
    let walked = Walked::take(walk);
    loop {
        let n = drains.drain(&mut src.probes, pipe);
        pipe.take_sink_error()?;
        if n < DRAIN_BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    walked.apply(pipe);
    Ok(())
}

/// The periodic poll of lost counts, watching for tracefs going away when it is needed.
struct LostPoll {
    last: Instant,
    uses_tracefs: bool,
    tracefs_gone: bool,
}

impl LostPoll {
    fn new(probes: &Probes) -> LostPoll {
        LostPoll {
            last: Instant::now(),
            uses_tracefs: probes.attached == crate::probes::Attached::Tracepoint
                || probes.mkdir_failures.is_ok(),
            tracefs_gone: false,
        }
    }

    /// Every [`LOST_POLL`]: the lost counts, and whether tracefs is still there.
    fn poll(&mut self, probes: &Probes, pipe: &mut Pipeline, lost: &mut LostReporter) {
        if self.last.elapsed() < LOST_POLL {
            return;
        }
        self.last = Instant::now();
        lost.poll(probes, pipe);
        // Classic tracepoints came from tracefs: say so if it goes away under us.
        if self.uses_tracefs && !self.tracefs_gone && crate::kernel::tracefs::find().is_none() {
            self.tracefs_gone = true;
            eprintln!(
                "cgtrace: warning: tracefs was unmounted while cgtrace runs: the attached tracepoints keep working, but a restart needs tracefs (mount -t tracefs nodev /sys/kernel/tracing)"
            );
        }
    }
}

/// The mode's periodic work after a wake-up; true when it ends the run.
fn mode_tick(
    state: &mut ModeState,
    pipe: &mut Pipeline,
    src: &mut Source,
    drains: &mut Drains,
) -> anyhow::Result<bool> {
    match state {
        ModeState::Attach(a) => a.tick(pipe, |p| drains.own_cost(&src.probes, p.facts()))?,
        ModeState::Record(r) if r.full() => return Ok(true),
        ModeState::Top(t) => {
            let quit = t.tick(pipe, monotonic_ns())?;
            if quit {
                return Ok(true);
            }
        }
        _ => {}
    }
    Ok(false)
}

/// Records of the start-up walk taken from it, to apply once the ring drained past them.
#[derive(Default)]
struct Walked {
    records: Vec<Vec<u8>>,
    report: Option<Result<crate::probes::WalkReport, String>>,
}

impl Walked {
    /// The records that came so far, and the walk's report if it ended.
    fn take(walk: &mut Option<WalkTask>) -> Walked {
        let mut w = Walked::default();
        if let Some(task) = walk {
            w.report = task.poll(|b| w.records.push(b.to_vec()));
        }
        w
    }

    /// Stops the walk and takes what it sent.
    fn finish(walk: &mut Option<WalkTask>) -> Walked {
        let mut w = Walked::default();
        if let Some(task) = walk {
            w.report = task.finish(|b| w.records.push(b.to_vec()));
        }
        w
    }

    fn apply(self, pipe: &mut Pipeline) {
        for r in &self.records {
            pipe.feed_raw(r);
        }
        if let Some(report) = self.report {
            log_walk(pipe, &report);
        }
    }
}

fn log_walk(pipe: &mut Pipeline, report: &Result<crate::probes::WalkReport, String>) {
    match report {
        Ok(r) => log::info!(
            "start-up walk ({}): {} memcgs visited, {} found dying, {} runs{}",
            r.method.name(),
            r.visited,
            r.found,
            r.triggers,
            if r.done {
                ""
            } else {
                " (stopped before the end)"
            }
        ),
        Err(e) => walk_failed(pipe, e),
    }
    pipe.walk_ended();
}

/// Reads the kernel's memcg counters once a second, after a drain (so the events before the
/// reading are in), and hands a changed reading (or the same one once a minute) to the pipeline,
/// which corrects the memcg ID headroom with it and records it.
#[derive(Default)]
struct KernelCounts {
    applied: Option<(KernelMemcgs, Instant)>,
    polled: Option<Instant>,
    failed: bool,
}

impl KernelCounts {
    fn due(&self) -> bool {
        self.polled
            .is_none_or(|t| t.elapsed() >= KERNEL_COUNTS_POLL)
    }

    fn poll(&mut self, pipe: &mut Pipeline) {
        self.polled = Some(Instant::now());
        if pipe.tracker.memory_hierarchy().is_none() {
            return;
        }
        let k = match KernelMemcgs::read(&pipe.facts().hierarchies, monotonic_ns()) {
            Ok(k) => k,
            Err(e) => {
                if !self.failed {
                    self.failed = true;
                    log::warn!(
                        "cannot read the kernel's memcg counters: the memcg ID headroom is counted from the events alone: {e}"
                    );
                }
                return;
            }
        };
        let same = |a: &KernelMemcgs| (a.live, a.all, a.dying) == (k.live, k.all, k.dying);
        if let Some((last, at)) = &self.applied
            && same(last)
            && at.elapsed() < KERNEL_COUNTS_REFRESH
        {
            return;
        }
        pipe.kernel_memcgs(&k);
        self.applied = Some((k, Instant::now()));
    }
}

/// Reads the lost counters and reports growth on stderr: nothing is lost silently.
#[derive(Default)]
struct LostReporter {
    reported: [u64; EventKind::SLOTS],
}

impl LostReporter {
    /// At the end, with the perf buffers: the kernel's lost-record notices against the records
    /// the programs counted lost. Each failed `bpf_perf_event_output` for want of room is both;
    /// more notices than counted losses would be losses the counters missed (said, never
    /// silent); fewer are failures of another kind (e.g. no buffer open on a CPU).
    fn check_notices(&self, p: &Probes) {
        let Some(notices) = p.events.notices() else {
            return;
        };
        let counted: u64 = self.reported.iter().sum();
        log::info!(
            "perf buffers: {notices} records the kernel reported lost, {counted} counted lost by the programs"
        );
        if notices > counted {
            eprintln!(
                "cgtrace: the kernel reported {notices} records lost from the perf buffers but the \
                 programs counted {counted}: {} lost events of unknown kind",
                notices - counted
            );
        }
    }

    fn poll(&mut self, p: &Probes, pipe: &mut Pipeline) {
        match p.lost() {
            Ok(lost) => {
                for k in EventKind::ALL {
                    let i = k as usize;
                    if lost[i] > self.reported[i] {
                        eprintln!(
                            "cgtrace: lost {} {} event(s) ({}; try a larger --ring-size)",
                            lost[i] - self.reported[i],
                            k.name(),
                            p.events.buffer().what_fills()
                        );
                        self.reported[i] = lost[i];
                    }
                }
                pipe.lost_totals(monotonic_ns(), &lost);
            }
            Err(e) => log::warn!("cannot read the lost-event counters: {e:#}"),
        }
    }
}
