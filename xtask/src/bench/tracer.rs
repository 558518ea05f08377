//! Tracer processes: cgtrace or bpftrace started, watched and stopped.
use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{ATTACH_TIMEOUT, BPFTRACE_TRACEPOINTS, EXIT_TIMEOUT};

// ---------------------------------------------------------------------------------------------
// Tracer processes

/// Where a tracer's stdout goes.
pub(super) enum Out {
    Null,
    File(PathBuf),
    /// Piped to us; lines containing every one of these strings are reported with their time.
    Watch(Vec<String>),
}

/// A line a reader thread saw, with when.
pub(super) type Seen = (Instant, String);

/// A running tracer. Dropping it kills the process if it still runs.
pub(super) struct Tracer {
    pub(super) what: String,
    pub(super) child: Option<Child>,
    pub(super) spawned: Instant,
    pub(super) stderr: Receiver<Seen>,
    pub(super) stderr_log: Arc<Mutex<Vec<String>>>,
    pub(super) stdout: Option<Receiver<Seen>>,
    pub(super) readers: Vec<JoinHandle<()>>,
}

pub(super) fn read_lines(
    r: impl Read + Send + 'static,
    keep: impl Fn(&str) -> bool + Send + 'static,
    log: Option<Arc<Mutex<Vec<String>>>>,
) -> (Receiver<Seen>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let at = Instant::now();
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end();
            if let Some(log) = &log
                && let Ok(mut l) = log.lock()
            {
                if l.len() >= 200 {
                    l.remove(0);
                }
                l.push(line.to_string());
            }
            if keep(line) {
                // The receiver may be gone (the tracer is being stopped): keep draining.
                let _ = tx.send((at, line.to_string()));
            }
        }
    });
    (rx, h)
}

impl Tracer {
    pub(super) fn spawn(what: &str, program: &Path, args: &[String], out: Out) -> Result<Tracer> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
        match &out {
            Out::Null => {
                cmd.stdout(Stdio::null());
            }
            Out::File(p) => {
                let f = fs::File::create(p)
                    .with_context(|| format!("creating {} for {what}'s output", p.display()))?;
                cmd.stdout(f);
            }
            Out::Watch(_) => {
                cmd.stdout(Stdio::piped());
            }
        }
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({})", program.display()))?;
        let stderr_log = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let Some(err) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: no stderr pipe");
        };
        let (stderr, h) = read_lines(err, |_| true, Some(stderr_log.clone()));
        readers.push(h);
        let mut stdout = None;
        if let Out::Watch(needles) = out {
            let Some(o) = child.stdout.take() else {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what}: no stdout pipe");
            };
            let (rx, h) = read_lines(
                o,
                move |l| needles.iter().all(|n| l.contains(n.as_str())),
                None,
            );
            readers.push(h);
            stdout = Some(rx);
        }
        Ok(Tracer {
            what: what.to_string(),
            child: Some(child),
            spawned,
            stderr,
            stderr_log,
            stdout,
            readers,
        })
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(super) fn stderr_tail(&self) -> String {
        let l = self
            .stderr_log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        let tail: Vec<&str> = l.iter().rev().take(8).rev().map(String::as_str).collect();
        if tail.is_empty() {
            "(nothing on stderr)".into()
        } else {
            tail.join(" / ")
        }
    }

    /// Fails when the process has exited.
    pub(super) fn check_running(&mut self) -> Result<()> {
        let Some(c) = self.child.as_mut() else {
            bail!("{} was already stopped", self.what);
        };
        if let Some(st) = c.try_wait().context("waiting for the tracer")? {
            bail!("{} exited early ({st}): {}", self.what, self.stderr_tail());
        }
        Ok(())
    }

    /// Waits for a line matching `pred` on stderr (or stdout); returns when it was read.
    pub(super) fn wait_line(
        &mut self,
        stdout: bool,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let rx = if stdout {
                self.stdout
                    .as_ref()
                    .ok_or_else(|| anyhow!("{}: stdout is not watched", self.what))?
            } else {
                &self.stderr
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok((at, line)) if pred(&line) => return Ok(at),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.check_running()?;
                    if left.is_zero() {
                        bail!(
                            "{}: nothing awaited within {timeout:?}; stderr: {}",
                            self.what,
                            self.stderr_tail()
                        );
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // The stream closed: the process is exiting.
                    thread::sleep(Duration::from_millis(50));
                    self.check_running()?;
                    bail!(
                        "{} closed its output; stderr: {}",
                        self.what,
                        self.stderr_tail()
                    );
                }
            }
        }
    }

    /// cgtrace's `cgtrace: attached` line on stderr.
    pub(super) fn wait_cgtrace_attached(&mut self) -> Result<Instant> {
        self.wait_line(
            false,
            |l| l.starts_with("cgtrace: attached"),
            ATTACH_TIMEOUT,
        )
        .with_context(|| format!("waiting for {} to attach", self.what))
    }

    /// bpftrace 0.17 prints `Attaching N probes...` on stdout (here /dev/null) before it
    /// attaches: ask the kernel instead (`bpftool perf` lists tracepoints with BPF programs
    /// per pid) until the three tracepoints are attached.
    pub(super) fn wait_bpftrace_attached(&mut self) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("bpftrace is not running"))?;
        let prefix = format!("pid {pid} ");
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            self.check_running()?;
            let out = Command::new("bpftool")
                .args(["perf", "show"])
                .stderr(Stdio::null())
                .output()
                .context(
                    "running `bpftool perf show` (bpftool is needed to see bpftrace attach)",
                )?;
            let text = String::from_utf8_lossy(&out.stdout);
            let attached = BPFTRACE_TRACEPOINTS
                .iter()
                .filter(|tp| {
                    text.lines().any(|l| {
                        l.starts_with(&prefix)
                            && l.split_whitespace().last() == Some(**tp)
                            && l.contains("tracepoint")
                    })
                })
                .count();
            if attached == BPFTRACE_TRACEPOINTS.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "bpftrace did not attach its 3 tracepoints within {ATTACH_TIMEOUT:?} ({attached} seen); stderr: {}",
                    self.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn join_readers(&mut self) {
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// SIGINT, then waits for a clean exit (status 0).
    pub(super) fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status();
        if !matches!(&sent, Ok(st) if st.success()) {
            let _ = child.kill();
            let _ = child.wait();
            self.join_readers();
            return match sent {
                Err(e) => Err(e).context("running kill -INT"),
                Ok(st) => Err(anyhow!("kill -INT {pid} failed with {st}")),
            };
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status: Option<ExitStatus> = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) | Err(_) => break None,
            }
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            self.join_readers();
            bail!(
                "{} did not exit within {EXIT_TIMEOUT:?} of SIGINT (killed); stderr: {}",
                self.what,
                self.stderr_tail()
            );
        };
        self.join_readers();
        if !status.success() {
            bail!(
                "{} did not exit cleanly after SIGINT ({status}); stderr: {}",
                self.what,
                self.stderr_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
