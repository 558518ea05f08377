//! `cgtrace live`: stream every cgroup event of this node to stdout until Ctrl-C, as text or
//! JSON lines, with a status line on a terminal. The run itself is [`crate::commands::run`].
use std::{
    io::{self, BufWriter},
    time::{Duration, Instant},
};

use crate::{
    commands::record::Recording,
    pipeline::{
        Pipeline,
        facts::RunFacts,
        output::{JsonSink, RenderContext, Sink, TextSink},
    },
};

fn context(facts: &RunFacts) -> RenderContext {
    RenderContext::new(facts.hierarchies.clone(), facts.clock)
}

/// `live`: one line per event on stdout.
pub fn text_sinks(facts: &RunFacts) -> Vec<Box<dyn Sink>> {
    let out = BufWriter::with_capacity(1 << 16, io::stdout());
    vec![Box::new(TextSink::new(out, context(facts)))]
}

/// `live --json`: JSON lines on stdout.
pub fn json_sinks(facts: &RunFacts) -> Vec<Box<dyn Sink>> {
    let out = BufWriter::with_capacity(1 << 16, io::stdout());
    vec![Box::new(JsonSink::new(out, context(facts)))]
}

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
            // Names come from directory names: escape control characters for the terminal.
            let name = crate::format::escape::terminal(&name);
            format!("{name} {}", p.stats.dying)
        })
        .collect();
    if !top.is_empty() {
        line.push_str(" · top dying: ");
        line.push_str(&top.join(", "));
    }
    line
}

/// The status line on stderr, when it is a terminal: cleared before events are printed and
/// redrawn after them; its text recomputed about once a second (it walks the pods).
pub struct StatusLine {
    on: bool,
    text: String,
    at: Option<Instant>,
    started: Instant,
}

impl StatusLine {
    /// `wanted`: the mode shows one (not `attach`).
    pub fn new(wanted: bool) -> StatusLine {
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(2) } == 1;
        StatusLine {
            on: wanted && tty,
            text: String::new(),
            at: None,
            started: Instant::now(),
        }
    }

    /// Clears the line, flushes the pipeline's output, redraws the line.
    pub fn around_flush(
        &mut self,
        pipe: &mut Pipeline,
        recording: Option<&Recording>,
    ) -> io::Result<()> {
        if self.on {
            eprint!("\r\x1b[K");
        }
        pipe.flush()?;
        if !self.on {
            return Ok(());
        }
        if self
            .at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.text = match recording {
                Some(r) => r.status(pipe, self.started.elapsed()),
                None => status_line(pipe, pipe.counts.lost.iter().sum()),
            };
            self.at = Some(Instant::now());
        }
        eprint!("{}", self.text);
        Ok(())
    }

    /// Leaves the terminal clean at the end.
    pub fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}
