//! `cgtrace live`: stream every cgroup event of this node to stdout until Ctrl-C.
use std::{
    io::{self, BufWriter},
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use cgtrace_common::EventKind;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    baseline,
    clock::{ClockRef, monotonic_ns},
    hierarchy::Hierarchies,
    output::{JsonSink, RenderContext, Sink, TextSink},
    pipeline::{Pipeline, PodNames},
    probes::{ProbeOptions, Probes},
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

#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    pub json: bool,
    pub duration: Option<Duration>,
    pub probe: ProbeOptions,
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
    let hierarchies = Hierarchies::load().context("failed to read the cgroup hierarchies")?;
    let probes = Probes::load(&opts.probe)?;
    let clock = ClockRef::now();
    let started = Instant::now();
    let tier = probes.tier.name();
    let attach = probes.attached.name();
    let rejected = rejected_list(&probes);
    eprintln!(
        "cgtrace: attached: tier {tier} ({attach}s on the cgroup tracepoints{}), kernel {}, ring {} KiB{}",
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
    // The baseline is taken after attaching: nothing created meanwhile is missed.
    let baseline = baseline::take(&hierarchies, monotonic_ns());
    let hierarchies_for_walk = hierarchies.clone();
    let memory_hierarchy = hierarchies.with_controller("memory").map(|h| h.id);
    let out = BufWriter::with_capacity(1 << 16, io::stdout());
    let ctx = RenderContext::new(hierarchies, clock);
    let sink: Box<dyn Sink> = if opts.json {
        Box::new(JsonSink::new(out, ctx))
    } else {
        Box::new(TextSink::new(out, ctx))
    };
    let mut pipe = Pipeline::new(
        memory_hierarchy,
        &baseline,
        vec![sink],
        Some(PodNames::new(PathBuf::from("/var/log/pods"))),
    );
    pipe.ignore_paths_with_prefix(
        format!("/{}", crate::probes::walk_trigger_prefix()).into_bytes(),
    );
    let mut probes = probes;
    name_dying_before_start(&mut probes, &hierarchies_for_walk, &baseline);

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
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
    let tty = unsafe { libc::isatty(2) } == 1;
    let mut status = String::new();
    let mut status_at: Option<Instant> = None;
    let mut reported_lost = [0u64; EventKind::SLOTS];

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
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                guard.clear_ready();
            }
            _ = tick.tick() => {}
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
                status = status_line(&pipe, pipe.counts.lost.iter().sum());
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
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    // Finish: everything still in the ring, the final lost counts, the summary.
    while ring.get_mut().0.drain(DRAIN_BATCH, |b| pipe.record(b)) > 0 {
        pipe.check()?;
    }
    poll_lost(&ring.get_ref().0, &mut pipe, &mut reported_lost);
    let mut summary = pipe.summary(tier, attach, started.elapsed().as_nanos() as u64);
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

/// Runs the start-up walk that names the memcgs already dying (where the kernel lets us).
pub fn name_dying_before_start(
    probes: &mut Probes,
    h: &Hierarchies,
    baseline: &baseline::Baseline,
) {
    if baseline.dying_before_start_total() == 0 {
        return;
    }
    let Some(mount) = h.with_controller("memory").and_then(|m| m.mount.clone()) else {
        return;
    };
    let t0 = Instant::now();
    match probes.walk_dying(&mount) {
        Ok(r) => log::info!(
            "start-up walk: {} memcgs visited, {} found dying in {} ms{}",
            r.visited,
            r.found,
            t0.elapsed().as_millis(),
            if r.done {
                ""
            } else {
                " (stopped before the end)"
            }
        ),
        Err(e) => log::info!("dying memcgs before start are counted, not named: {e:#}"),
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
