//! `cgtrace top`: a terminal view over the pipeline of a traced run (live: the same run as
//! `live`, with this view as its sink) or of a recorded session (`--replay FILE`, at event time).
//!
//! Once a second (of event time in a replay) a [`Snapshot`] of the pipeline is taken; the screen
//! shows the last one ([`view`]) with sparklines of the recent ones. The terminal is restored on
//! exit, on panic (ratatui's panic hook) and on SIGTERM/SIGINT/SIGHUP (the run ends, then this
//! view is dropped). While the screen is up, stderr (warnings, lost-event notices) goes to a
//! memory file that is printed once the terminal is back.
pub mod view;

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::{
    DefaultTerminal,
    crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
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
use view::{QOS_CYCLE, Source, UiState};

/// Samples the churn table averages over.
const SHAPE_WINDOW: usize = 10;
/// Samples the sparklines keep (one per second).
const SPARK_POINTS: usize = 512;
/// Captured stderr kept while the screen is up; older text is dropped past this.
const CAPTURE_MAX: u64 = 1 << 20;

/// Whether stdout is a terminal (`top` needs one).
pub fn stdout_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(1) == 1 }
}

fn no_terminal() -> anyhow::Error {
    crate::UsageError(anyhow::anyhow!(
        "cgtrace top draws on a terminal, and stdout is not one (use live, attach or report)"
    ))
    .into()
}

/// Stderr sent to a memory file while the screen is up (its text would tear the screen).
struct StderrCapture {
    saved: OwnedFd,
    file: File,
}

impl StderrCapture {
    /// Starts capturing when stderr is a terminal (else it is left alone: None).
    fn start() -> io::Result<Option<StderrCapture>> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(2) } != 1 {
            return Ok(None);
        }
        // SAFETY: memfd_create with a valid NUL-terminated name; the fd returned is ours.
        let mfd = unsafe { libc::memfd_create(c"cgtrace-top-stderr".as_ptr(), libc::MFD_CLOEXEC) };
        if mfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: mfd is a fresh descriptor owned by nothing else.
        let file = unsafe { File::from_raw_fd(mfd) };
        // SAFETY: duplicating fd 2 into a new descriptor we own.
        let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 0) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: saved is a fresh descriptor owned by nothing else.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: both descriptors are open; dup2 replaces fd 2 atomically.
        if unsafe { libc::dup2(mfd, 2) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(StderrCapture { saved, file }))
    }

    /// Keeps the capture bounded: past [`CAPTURE_MAX`] it starts over (fd 2 shares the offset).
    fn trim(&mut self) {
        if self.file.metadata().is_ok_and(|m| m.len() > CAPTURE_MAX) {
            let _ = self.file.set_len(0);
            let _ = self.file.seek(SeekFrom::Start(0));
            let _ = writeln!(self.file, "cgtrace: (earlier messages dropped)");
        }
    }

    /// Puts stderr back and prints what was captured.
    fn stop(mut self) {
        use std::os::fd::AsRawFd as _;
        // SAFETY: both descriptors are open; dup2 puts the saved stderr back on fd 2.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
        let mut text = Vec::new();
        if self.file.seek(SeekFrom::Start(0)).is_ok() && self.file.read_to_end(&mut text).is_ok() {
            let _ = io::stderr().write_all(&text);
        }
    }
}

/// The view and what it shows.
pub struct Top {
    sampler: Sampler,
    term: Option<DefaultTerminal>,
    capture: Option<StderrCapture>,
    snap: Snapshot,
    shapes: ShapeWindow,
    churn: VecDeque<u64>,
    dying: VecDeque<u64>,
    /// What is on screen while paused.
    frozen: Option<(Snapshot, ShapeWindow, Vec<u64>, Vec<u64>)>,
    ui: UiState,
    src: Source,
    last_sample: Instant,
    dirty: bool,
}

impl Top {
    fn new(sampler: Sampler, src: Source) -> Top {
        Top {
            sampler,
            term: None,
            capture: None,
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
            last_sample: Instant::now(),
            dirty: true,
        }
    }

    /// `top` live: the view's sampler sink, for the traced run's pipeline.
    pub fn live(facts: &RunFacts) -> anyhow::Result<(Top, Vec<Box<dyn Sink>>)> {
        if !stdout_is_terminal() {
            return Err(no_terminal());
        }
        let (sampler, sink) = Sampler::new(facts.memory_hierarchy(), facts.clock.mono_ns);
        let src = Source {
            what: "live".into(),
            tier: facts.tier.name().into(),
            kernel: facts.kernel_release.clone(),
            ended: false,
        };
        Ok((Top::new(sampler, src), vec![sink]))
    }

    /// Takes over the terminal (after the start-up messages).
    pub fn enter(&mut self) -> anyhow::Result<()> {
        if self.term.is_some() {
            return Ok(());
        }
        self.term = Some(ratatui::try_init().context("cannot set up the terminal")?);
        self.capture = StderrCapture::start().unwrap_or_else(|e| {
            log::info!("stderr is not captured while the screen is up: {e}");
            None
        });
        self.dirty = true;
        Ok(())
    }

    /// Gives the terminal back and prints the messages captured meanwhile.
    pub fn leave(&mut self) {
        if self.term.take().is_some() {
            let _ = ratatui::try_restore();
        }
        if let Some(c) = self.capture.take() {
            c.stop();
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

    /// Handles the terminal's events, waiting up to `wait` for the first; true to quit.
    fn poll_keys(&mut self, wait: Duration) -> anyhow::Result<bool> {
        let mut wait = wait;
        while event::poll(wait).context("reading the terminal")? {
            wait = Duration::ZERO;
            match event::read().context("reading the terminal")? {
                TermEvent::Key(k) if self.key(k) => return Ok(true),
                TermEvent::Resize(..) => self.dirty = true,
                _ => {}
            }
        }
        Ok(false)
    }

    fn redraw(&mut self) -> anyhow::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
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

    /// Live, every drain tick: keys, a sample once a second, the screen. True to quit.
    pub fn tick(&mut self, pipe: &Pipeline, now_ns: u64) -> anyhow::Result<bool> {
        if self.poll_keys(Duration::ZERO)? {
            return Ok(true);
        }
        if self.last_sample.elapsed() >= Duration::from_secs(1) {
            self.last_sample = Instant::now();
            let s = self.sampler.sample(pipe, now_ns);
            self.push(s);
        }
        self.redraw()?;
        Ok(false)
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        self.leave();
    }
}

/// SIGTERM, SIGINT and SIGHUP end a replay's view (live, the traced run handles them).
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        signal_hook::flag::register(sig, flag.clone()).context("installing a signal handler")?;
    }
    Ok(flag)
}

/// `cgtrace top --replay FILE`: the session through the pipeline at `speed`, a sample at each
/// second of event time; the last screen stays until `q`.
pub fn replay(path: &Path, speed: Speed, filters: &Filters) -> anyhow::Result<()> {
    if !stdout_is_terminal() {
        return Err(no_terminal());
    }
    let stop = stop_flag()?;
    let mut sampler = None;
    let (mut reader, mut r) = replay::open(path, filters, |h, clock| {
        let memory = h.with_controller("memory").map(|m| m.id);
        let (s, sink) = Sampler::new(memory, clock.mono_ns);
        sampler = Some(s);
        vec![sink]
    })?;
    let sampler = sampler.context("the replay built no pipeline")?;
    let src = Source {
        what: format!("replay {}", path.display()),
        tier: r.header.tier.clone(),
        kernel: r.header.kernel_release.clone(),
        ended: false,
    };
    let mut top = Top::new(sampler, src);
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
        // Paced: wait for the event's time, handling keys meanwhile; paused: wait for `p`.
        loop {
            if stop.load(Ordering::Relaxed) {
                quit = true;
            }
            if quit {
                return Ok(false);
            }
            let wait = match speed {
                Speed::Times(x) => {
                    let due = Duration::from_nanos((ts.saturating_sub(first) as f64 / x) as u64)
                        + paused_for;
                    due.saturating_sub(started.elapsed())
                }
                Speed::Max => Duration::ZERO,
            };
            if !top.ui.paused && wait.is_zero() {
                if n.is_multiple_of(1024) || speed != Speed::Max {
                    quit = top.poll_keys(Duration::ZERO)?;
                    top.redraw()?;
                }
                if quit {
                    return Ok(false);
                }
                return Ok(true);
            }
            let t = Instant::now();
            let step = if top.ui.paused {
                Duration::from_millis(100)
            } else {
                wait.min(Duration::from_millis(100))
            };
            quit = top.poll_keys(step)?;
            if top.ui.paused {
                paused_for += t.elapsed();
            }
            top.redraw()?;
        }
    })?;
    if !quit {
        let end = r.end_ns();
        let s = top.sampler.sample(&r.pipe, end);
        top.push(s);
        top.src.ended = true;
        top.dirty = true;
        while !quit && !stop.load(Ordering::Relaxed) {
            top.redraw()?;
            quit = top.poll_keys(Duration::from_millis(200))?;
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
        let mut t = Top::new(sampler, Source::default());
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
