//! `cgtrace top`: a terminal view over the pipeline of a traced run (live: the same run as
//! `live`, with this view's sampler as its sink) or of a recorded session (`--replay FILE`, at
//! event time).
//!
//! Once a second (of event time in a replay) a [`Snapshot`] of the pipeline is taken; the screen
//! shows the last one ([`view`]) with sparklines of the recent ones. Nothing spins: live, the
//! traced run's loop also wakes for the terminal's input, a resize and the next second
//! ([`Top::wake`]); a replay waits in `poll(2)` on the terminal and a signal pipe until the next
//! event is due, the next redraw or a key. The screen is redrawn once a second, and at once on a
//! key or a resize.
//!
//! The view ends on `q`, Esc or Ctrl-C, on SIGTERM, SIGINT and SIGHUP, and when the terminal
//! goes away; the terminal is restored then, and on a panic (ratatui's panic hook, after ours
//! gave stderr back). While the screen is up, stderr (warnings, lost-event notices) goes to a
//! memory file that is printed once the terminal is back.
mod term;
pub mod view;

use std::{
    collections::VecDeque,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::{
    DefaultTerminal,
    crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix as tokio_signal,
};

use crate::{
    commands::replay::{self, Speed},
    pipeline::{
        Pipeline,
        facts::RunFacts,
        filters::Filters,
        output::Sink,
        sample::{Sampler, ShapeWindow, Snapshot},
    },
};
use term::{StderrCapture, StopSignals, Tty, TtyState};
use view::{QOS_CYCLE, Source, UiState};

/// Samples the churn table averages over.
const SHAPE_WINDOW: usize = 10;
/// Samples the sparklines keep (one per second).
const SPARK_POINTS: usize = 512;
/// How often the screen is redrawn (and, live, the pipeline sampled).
const REFRESH: Duration = Duration::from_secs(1);
/// At full replay speed, events between two looks at the terminal and the clock.
const EVENTS_PER_LOOK: u64 = 1024;

/// Whether stdout is a terminal (`top` needs one).
pub fn stdout_is_terminal() -> bool {
    term::is_terminal(libc::STDOUT_FILENO)
}

/// An error (a usage error: exit 2) unless stdout is a terminal.
pub fn require_terminal() -> anyhow::Result<()> {
    if stdout_is_terminal() {
        Ok(())
    } else {
        Err(crate::UsageError(anyhow::anyhow!(
            "cgtrace top draws on a terminal, and stdout is not one (use live, attach or report)"
        ))
        .into())
    }
}

/// Where the view's input and wake-ups come from.
enum Input {
    /// Unit tests: keys are handed to [`Top::key`].
    #[cfg(test)]
    None,
    /// Inside the traced run's tokio loop, which handles SIGTERM, SIGINT and SIGHUP itself.
    Live {
        tty: AsyncFd<Tty>,
        winch: tokio_signal::Signal,
    },
    /// A replay, waiting in `poll(2)`.
    Replay { tty: Tty, signals: StopSignals },
}

/// The view and what it shows.
pub struct Top {
    sampler: Sampler,
    term: Option<DefaultTerminal>,
    capture: Option<StderrCapture>,
    input: Input,
    snap: Snapshot,
    shapes: ShapeWindow,
    churn: VecDeque<u64>,
    dying: VecDeque<u64>,
    /// What is on screen while paused.
    frozen: Option<(Snapshot, ShapeWindow, Vec<u64>, Vec<u64>)>,
    ui: UiState,
    src: Source,
    /// Live: when the next sample is taken.
    next_sample: Instant,
    /// When the screen was last drawn.
    drawn_at: Option<Instant>,
    /// Something changed since the last draw.
    dirty: bool,
    /// A key or a resize: redraw now, not at the next refresh.
    urgent: bool,
}

impl Top {
    fn new(sampler: Sampler, src: Source, input: Input) -> Top {
        Top {
            sampler,
            term: None,
            capture: None,
            input,
            snap: Snapshot::default(),
            shapes: ShapeWindow::new(SHAPE_WINDOW),
            churn: VecDeque::with_capacity(SPARK_POINTS),
            dying: VecDeque::with_capacity(SPARK_POINTS),
            frozen: None,
            ui: UiState {
                color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
                ..UiState::default()
            },
            src,
            next_sample: Instant::now() + REFRESH,
            drawn_at: None,
            dirty: true,
            urgent: true,
        }
    }

    /// `top` live: the view and its sampler sink for the traced run's pipeline (in the run's
    /// tokio runtime: the terminal is waited on there).
    pub fn live(facts: &RunFacts) -> anyhow::Result<(Top, Vec<Box<dyn Sink>>)> {
        require_terminal()?;
        let tty = Tty::open().context("cannot open the terminal")?;
        // SAFETY: the descriptor is stdin or the /dev/tty that `Tty` owns: it stays open, and is
        // the same one, for as long as the AsyncFd (which owns the `Tty`) lives, and as_raw_fd
        // always returns it.
        let tty = unsafe { AsyncFd::register_with_interest(tty, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("waiting on the terminal")?;
        let winch = tokio_signal::signal(tokio_signal::SignalKind::window_change())
            .context("installing the SIGWINCH handler")?;
        let (sampler, sink) = Sampler::new(facts.memory_hierarchy(), facts.clock.mono_ns);
        let src = Source {
            replay: None,
            tier: facts.tier.name().into(),
            kernel: facts.kernel_release.clone(),
            ended: false,
        };
        Ok((
            Top::new(sampler, src, Input::Live { tty, winch }),
            vec![sink],
        ))
    }

    /// Takes over the terminal (after the start-up messages).
    pub fn enter(&mut self) -> anyhow::Result<()> {
        if self.term.is_some() {
            return Ok(());
        }
        // ratatui's panic hook restores the terminal; ours, run before it, gives stderr back.
        self.term = Some(ratatui::try_init().context("cannot set up the terminal")?);
        term::install_panic_hook();
        self.capture = StderrCapture::start().unwrap_or_else(|e| {
            log::info!("stderr is not captured while the screen is up: {e}");
            None
        });
        self.dirty = true;
        self.urgent = true;
        Ok(())
    }

    /// Gives the terminal back and prints the messages captured meanwhile.
    pub fn leave(&mut self) {
        // Unwinding from a panic, ratatui's panic hook has restored the terminal already; a
        // second restore would move the cursor back over the panic message.
        if self.term.take().is_some() && !std::thread::panicking() {
            let _ = ratatui::try_restore();
        }
        if let Some(c) = self.capture.take() {
            c.stop();
        }
    }

    fn tty(&self) -> Option<&Tty> {
        match &self.input {
            #[cfg(test)]
            Input::None => None,
            Input::Live { tty, .. } => Some(tty.get_ref()),
            Input::Replay { tty, .. } => Some(tty),
        }
    }

    fn push(&mut self, s: Snapshot) {
        for (q, v) in [
            (&mut self.churn, s.churn_per_s.round() as u64),
            (&mut self.dying, s.totals.dying),
        ] {
            if q.len() >= SPARK_POINTS {
                q.pop_front();
            }
            q.push_back(v);
        }
        self.shapes.push(&s.shapes);
        self.snap = s;
        self.dirty = true;
    }

    fn toggle_pause(&mut self) {
        self.ui.paused = !self.ui.paused;
        self.frozen = self.ui.paused.then(|| {
            (
                self.snap.clone(),
                self.shapes.clone(),
                self.churn.iter().copied().collect(),
                self.dying.iter().copied().collect(),
            )
        });
    }

    /// One key; true to quit.
    fn key(&mut self, k: KeyEvent) -> bool {
        if k.kind != KeyEventKind::Press {
            return false;
        }
        self.dirty = true;
        self.urgent = true;
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return true;
        }
        if let Some(input) = &mut self.ui.input {
            match k.code {
                KeyCode::Char(c) if input.len() < 200 => input.push(c),
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Enter => {
                    self.ui.filter = self.ui.input.take().unwrap_or_default();
                }
                KeyCode::Esc => self.ui.input = None,
                _ => {}
            }
            return false;
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return true,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('s') => self.ui.sort = self.ui.sort.next(),
            KeyCode::Char('/') => self.ui.input = Some(self.ui.filter.clone()),
            KeyCode::Char('f') => self.ui.qos = (self.ui.qos + 1) % QOS_CYCLE.len(),
            KeyCode::Char('c') => {
                self.ui.filter.clear();
                self.ui.qos = 0;
            }
            _ => {}
        }
        false
    }

    /// Reads the terminal's pending events (never blocking, never when it hung up); true to
    /// quit, also when the terminal is gone.
    fn read_input(&mut self) -> anyhow::Result<bool> {
        loop {
            let Some(tty) = self.tty() else {
                return Ok(false);
            };
            // Ask crossterm only while the terminal is there and has input: on a terminal
            // that hung up, its read loop never returns.
            if tty.state().context("polling the terminal")? == TtyState::Gone {
                log::info!("the terminal went away: top ends");
                return Ok(true);
            }
            if !event::poll(Duration::ZERO).context("reading the terminal")? {
                return Ok(false);
            }
            match event::read().context("reading the terminal")? {
                TermEvent::Key(k) if self.key(k) => return Ok(true),
                TermEvent::Resize(..) => {
                    self.dirty = true;
                    self.urgent = true;
                }
                _ => {}
            }
        }
    }

    /// Draws the screen if something changed and a redraw is due (once a [`REFRESH`], at once
    /// after a key or a resize).
    fn redraw(&mut self, now: Instant) -> anyhow::Result<()> {
        let due = self.urgent || self.drawn_at.is_none_or(|t| now >= t + REFRESH);
        if !self.dirty || !due {
            return Ok(());
        }
        self.dirty = false;
        self.urgent = false;
        self.drawn_at = Some(now);
        if let Some(c) = &mut self.capture {
            c.trim();
        }
        let Some(term) = self.term.as_mut() else {
            return Ok(());
        };
        let (snap, shapes, churn, dying): (&Snapshot, &ShapeWindow, Vec<u64>, Vec<u64>) =
            match &self.frozen {
                Some((s, w, c, d)) => (s, w, c.clone(), d.clone()),
                None => (
                    &self.snap,
                    &self.shapes,
                    self.churn.iter().copied().collect(),
                    self.dying.iter().copied().collect(),
                ),
            };
        let rows = shapes.rows();
        let window = shapes.samples();
        let (ui, src) = (&self.ui, &self.src);
        term.draw(|f| view::draw(f, snap, &rows, window, &churn, &dying, ui, src))
            .context("drawing the screen")?;
        Ok(())
    }

    /// Live: resolves when the view has something to do — input on the terminal (or its
    /// hang-up), a resize, or the next second's sample. Never, outside a live view.
    pub async fn wake(&mut self) -> anyhow::Result<()> {
        let due = tokio::time::Instant::from_std(self.next_sample);
        let Input::Live { tty, winch } = &mut self.input else {
            return std::future::pending().await;
        };
        tokio::select! {
            guard = tty.readable() => {
                // Cleared before reading: input arriving meanwhile wakes us again.
                guard.context("waiting on the terminal")?.clear_ready();
            }
            _ = winch.recv() => {
                self.dirty = true;
                self.urgent = true;
            }
            _ = tokio::time::sleep_until(due) => {}
        }
        Ok(())
    }

    /// Live, after each wake-up of the traced run's loop: keys, a sample once a second, the
    /// screen when it changed. True to quit.
    pub fn tick(&mut self, pipe: &Pipeline, now_ns: u64) -> anyhow::Result<bool> {
        if self.read_input()? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= self.next_sample {
            self.next_sample += REFRESH;
            if self.next_sample <= now {
                self.next_sample = now + REFRESH;
            }
            let s = self.sampler.sample(pipe, now_ns);
            self.push(s);
            // The sample is the refresh: draw it now.
            self.urgent = true;
        }
        self.redraw(now)?;
        Ok(false)
    }

    /// A replay: waits until `deadline` (None: until something happens), handling keys,
    /// resizes and redraws meanwhile; returns early on a key or a redraw. True to quit.
    fn serve(&mut self, deadline: Option<Instant>) -> anyhow::Result<bool> {
        let now = Instant::now();
        let redraw_at = self
            .dirty
            .then(|| self.drawn_at.map_or(now, |t| t + REFRESH));
        let until = match (deadline, redraw_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = until.map(|u| u.saturating_duration_since(now));
        let Input::Replay { tty, signals } = &self.input else {
            return Ok(false);
        };
        let (state, signalled) = tty
            .wait(Some(signals.fd()), timeout)
            .context("waiting on the terminal")?;
        if signalled {
            signals.drain();
        }
        if signals.quit() {
            return Ok(true);
        }
        if signals.take_resized() {
            self.dirty = true;
            self.urgent = true;
        }
        if state != TtyState::Quiet && self.read_input()? {
            return Ok(true);
        }
        self.redraw(Instant::now())?;
        Ok(false)
    }

    fn signalled(&self) -> bool {
        matches!(&self.input, Input::Replay { signals, .. } if signals.quit())
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        self.leave();
    }
}

/// `cgtrace top --replay FILE`: the session through the pipeline at `speed`, a sample at each
/// second of event time; the last screen stays until `q` or a signal.
pub fn replay(path: &Path, speed: Speed, filters: &Filters) -> anyhow::Result<()> {
    require_terminal()?;
    let signals = StopSignals::install().context("installing the signal handlers")?;
    let tty = Tty::open().context("cannot open the terminal")?;
    let mut sampler = None;
    let (mut reader, mut r) = replay::open(path, filters, |h, clock| {
        let memory = h.with_controller("memory").map(|m| m.id);
        let (s, sink) = Sampler::new(memory, clock.mono_ns);
        sampler = Some(s);
        vec![sink]
    })?;
    let sampler = sampler.context("the replay built no pipeline")?;
    let src = Source {
        replay: Some(path.display().to_string()),
        tier: r.header.tier.clone(),
        kernel: r.header.kernel_release.clone(),
        ended: false,
    };
    let mut top = Top::new(sampler, src, Input::Replay { tty, signals });
    top.enter()?;
    let started = Instant::now();
    let mut first_ts = None;
    let mut paused_for = Duration::ZERO;
    let mut quit = false;
    let mut n = 0u64;
    replay::feed_with(&mut reader, &mut r, Speed::Max, |pipe, ts| {
        for s in top.sampler.before_event(pipe, ts) {
            top.push(s);
        }
        n += 1;
        let first = *first_ts.get_or_insert(ts);
        loop {
            if quit || top.signalled() {
                quit = true;
                return Ok(false);
            }
            let paused = top.ui.paused;
            let due = match speed {
                Speed::Times(x) => Some(
                    started
                        + paused_for
                        + Duration::from_nanos((ts.saturating_sub(first) as f64 / x) as u64),
                ),
                Speed::Max => None,
            };
            let t = Instant::now();
            if !paused && due.is_none_or(|d| d <= t) {
                // Due: feed it. At full speed the terminal is looked at every so many events.
                if speed == Speed::Max && !n.is_multiple_of(EVENTS_PER_LOOK) {
                    return Ok(true);
                }
                quit = top.serve(Some(t))?;
                return Ok(!quit);
            }
            // Paused (wait for a key) or early (wait for the event's time).
            quit = top.serve(if paused { None } else { due })?;
            if paused {
                paused_for += t.elapsed();
            }
        }
    })?;
    if !quit {
        let end = r.end_ns();
        let s = top.sampler.sample(&r.pipe, end);
        top.push(s);
        top.src.ended = true;
        top.urgent = true;
        while !quit {
            quit = top.serve(None)?;
        }
    }
    top.leave();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn keys_filter_sort_pause_and_quit() {
        let (sampler, _sink) = Sampler::new(None, 0);
        let mut t = Top::new(sampler, Source::default(), Input::None);
        assert!(!t.key(key(KeyCode::Char('/'))));
        for c in "kube-sys".chars() {
            assert!(
                !t.key(key(KeyCode::Char(c))),
                "typing q-less text never quits"
            );
        }
        assert!(
            !t.key(key(KeyCode::Char('q'))),
            "q is text while typing a filter"
        );
        t.key(key(KeyCode::Backspace));
        t.key(key(KeyCode::Enter));
        assert_eq!(t.ui.filter, "kube-sys");
        assert!(t.ui.input.is_none());
        t.key(key(KeyCode::Char('s')));
        assert_eq!(t.ui.sort, view::SortKey::Oldest);
        t.key(key(KeyCode::Char('f')));
        assert_eq!(
            QOS_CYCLE[t.ui.qos],
            Some(crate::model::k8s::Qos::Guaranteed)
        );
        t.key(key(KeyCode::Char('p')));
        assert!(t.ui.paused && t.frozen.is_some());
        t.push(Snapshot {
            t_ns: 7,
            ..Snapshot::default()
        });
        assert_eq!(
            t.frozen.as_ref().map(|f| f.0.t_ns),
            Some(0),
            "paused: the screen keeps its snapshot"
        );
        t.key(key(KeyCode::Char(' ')));
        assert!(!t.ui.paused && t.frozen.is_none());
        t.key(key(KeyCode::Char('c')));
        assert!(t.ui.filter.is_empty() && t.ui.qos == 0);
        assert!(t.key(key(KeyCode::Char('q'))));
        assert!(t.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    }
}
