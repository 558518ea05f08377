//! `cargo xtask bench`: what cgtrace costs, measured side by side on this machine.
//!
//! - overhead: memcg mkdir+rmdir cycles per second with each tracer attached, as a ratio to the
//!   untraced rate of the same round (rounds alternate and rotate the order of the modes);
//! - loss: events lost at the top churn rate with the default ring, and the smallest ring with
//!   no loss over a round;
//! - the kernel side alone (the programs' own run time, `kernel.bpf_stats_enabled`), and the
//!   syscall tax: what a trivial syscall costs anywhere on the node while cgtrace is attached;
//! - the user-space pipeline and the tracker's memory (`cgtrace/benches/pipeline.rs`);
//! - start-up: spawn → attached and spawn → first event streamed, with 10,000 cgroups around;
//! - memory under pod churn: `cgtrace attach` through a million kubelet-like pod lifetimes
//!   ([`pods`]; `--pods-only` runs it alone and `--pod-cycles` sets its length).
//!
//! Every cgroup it makes lives under one parent unique to the run (`cgtrace-bench-<pid>` in the
//! memory hierarchy), removed at the end, after an error or a panic too. The table goes to
//! stdout and to `target/bench/latest.md`, with a description of the machine.
use std::{
    fmt::Write as _,
    fs,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;

use crate::{cargo, is_root, setup, workspace_root};

mod pods;

/// The bpftrace program the overhead is compared with: the same three tracepoints, streamed.
const BPFTRACE_PROGRAM: &str = r#"tracepoint:cgroup:cgroup_mkdir,tracepoint:cgroup:cgroup_rmdir,tracepoint:cgroup:cgroup_release { printf("%s %d %s\n", probe, args->id, str(args->path)); }"#;
const BPFTRACE_TRACEPOINTS: [&str; 3] = ["cgroup_mkdir", "cgroup_rmdir", "cgroup_release"];
/// Targets from the issue.
const TARGET_OVERHEAD: f64 = 0.98;
const TARGET_PIPELINE_EPS: f64 = 10e6;
const TARGET_BYTES_PER_DYING: f64 = 256.0;
const TARGET_STARTUP_MS: f64 = 300.0;
/// Settle time after a tracer reports it is attached, before the churn starts.
const SETTLE: Duration = Duration::from_millis(200);
/// How long a tracer may take to attach, and to exit after SIGINT.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Ring sizes tried for the loss threshold: 4 KiB … 4 MiB (the default).
const RING_MIN: u64 = 4096;
const RING_DEFAULT: u64 = 4 << 20;
/// Start-up runs per configuration.
const STARTUP_RUNS: usize = 5;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Alternating rounds for overhead and loss (the issue asks for at least 7).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Length of one churn run in seconds.
    #[arg(long, default_value_t = 2.0)]
    round_secs: f64,
    /// Existing cgroups for the start-up measure.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=50_000))]
    startup_cgroups: u32,
    /// Do not run `setup` and the release build first (use target/release/cgtrace as it is).
    #[arg(long)]
    no_build: bool,
    /// Pod create/remove cycles of the pod-churn memory measure (0: skip it); figures after
    /// 20,000 and every 100,000.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pod_cycles: u64,
    /// Run only the pod-churn memory measure (and write its README table).
    #[arg(long)]
    pods_only: bool,
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

#[derive(Clone, Copy, Debug)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// 1234567 → "1,234,567".
fn grouped(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn millions(v: f64) -> String {
    format!("{:.2} M", v / 1e6)
}

fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// One line of the table.
struct Row {
    figure: String,
    cells: Cells,
}

enum Cells {
    Measured {
        stats: Stats,
        fmt: fn(f64) -> String,
        target: String,
        /// Whether the median meets the target (None: no target).
        met: Option<bool>,
    },
    /// Not measured, with why.
    Note(String),
}

impl Row {
    fn measured(figure: impl Into<String>, stats: Stats, fmt: fn(f64) -> String) -> Row {
        Row {
            figure: figure.into(),
            cells: Cells::Measured {
                stats,
                fmt,
                target: "—".into(),
                met: None,
            },
        }
    }

    fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        if let Cells::Measured {
            target: t, met: m, ..
        } = &mut self.cells
        {
            *t = target.into();
            *m = Some(met);
        }
        self
    }

    fn note(figure: impl Into<String>, why: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            cells: Cells::Note(why.into()),
        }
    }
}

fn ratio(v: f64) -> String {
    format!("{v:.3}")
}

fn per_s(v: f64) -> String {
    format!("{}/s", grouped(v))
}

fn events_per_s(v: f64) -> String {
    format!("{}/s", millions(v))
}

fn count(v: f64) -> String {
    grouped(v)
}

fn bytes(v: f64) -> String {
    format!("{v:.0} B")
}

fn bytes_1(v: f64) -> String {
    format!("{v:.1} B")
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

fn ring(v: f64) -> String {
    size_name(v as u64)
}

fn nanos(v: f64) -> String {
    format!("{v:.0} ns")
}

fn percent(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn render_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| figure | median | min | max | n | target | |\n|---|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        match &r.cells {
            Cells::Measured {
                stats,
                fmt,
                target,
                met,
            } => {
                let verdict = match met {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "",
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.figure,
                    fmt(stats.median),
                    fmt(stats.min),
                    fmt(stats.max),
                    stats.n,
                    target,
                    verdict
                );
            }
            Cells::Note(why) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | | | | | |",
                    r.figure,
                    why.replace('|', "\\|")
                );
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The machine

struct Machine {
    kernel: String,
    nproc: usize,
    cpu: String,
    date: String,
    loadavg: String,
    bpftrace: String,
    commit: String,
}

fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then_some(())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

impl Machine {
    fn describe() -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let root = workspace_root();
        let commit = first_line(
            Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&root),
        )
        .unwrap_or_else(|| "unknown".into());
        let dirty = first_line(
            Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .current_dir(&root),
        )
        .is_some();
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            nproc: thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            date: utc_now(),
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            bpftrace: first_line(Command::new("bpftrace").arg("--version"))
                .unwrap_or_else(|| "not found".into()),
            commit: if dirty {
                format!("{commit} (with uncommitted changes)")
            } else {
                commit
            },
        }
    }

    fn render(&self) -> String {
        format!(
            "- date: {}\n- kernel: {}\n- CPUs: {} × {}\n- load average at start: {}\n- cgtrace: commit {}, release build\n- bpftrace: {}\n",
            self.date, self.kernel, self.nproc, self.cpu, self.loadavg, self.commit, self.bpftrace
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Cgroups: the run's parent directory and the churn loop

/// The memory controller's hierarchy: a v1 `cgroup` mount with `memory` in its options, or else
/// the v2 mount when its root delegates memory to children.
fn memory_mount() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dir), Some(fstype), Some(opts)) = (f.get(1), f.get(2), f.get(3)) else {
            continue;
        };
        if *fstype == "cgroup" && opts.split(',').any(|o| o == "memory") {
            return Ok(PathBuf::from(dir));
        }
        if *fstype == "cgroup2" {
            v2 = Some(PathBuf::from(dir));
        }
    }
    if let Some(dir) = v2 {
        let ctl = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        if ctl.split_whitespace().any(|c| c == "memory") {
            return Ok(dir);
        }
    }
    bail!("no memory cgroup hierarchy: neither a v1 memory mount nor a v2 root delegating memory")
}

/// Removes a cgroup tree bottom-up (cgroupfs only removes empty cgroups; control files go with
/// their directory). Retries briefly on EBUSY. Returns the first failure.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let mut first_err = None;
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir())
                    && let Err(err) = remove_tree(&e.path())
                {
                    first_err.get_or_insert(err);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            first_err.get_or_insert(e);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) if e.raw_os_error() == Some(16) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                first_err.get_or_insert(e);
                break;
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `<memory mount>/cgtrace-bench-<pid>`: every cgroup of the run lives below it; removed on drop.
struct BenchParent {
    dir: PathBuf,
    /// The parent's path as events show it (relative to the hierarchy root).
    cgroup_path: String,
    removed: bool,
}

impl BenchParent {
    fn create(mount: &Path) -> Result<BenchParent> {
        Self::create_as(mount, format!("cgtrace-bench-{}", std::process::id()))
    }

    /// `cgtrace-bench-<pid>-<what>`: a second parent of the same run.
    fn create_named(mount: &Path, what: &str) -> Result<BenchParent> {
        Self::create_as(
            mount,
            format!("cgtrace-bench-{}-{what}", std::process::id()),
        )
    }

    fn create_as(mount: &Path, name: String) -> Result<BenchParent> {
        let dir = mount.join(&name);
        fs::create_dir(&dir)
            .with_context(|| format!("creating the bench parent cgroup {}", dir.display()))?;
        Ok(BenchParent {
            dir,
            cgroup_path: format!("/{name}"),
            removed: false,
        })
    }

    fn remove(&mut self) -> Result<()> {
        self.removed = true;
        remove_tree(&self.dir)
            .with_context(|| format!("removing the bench cgroups under {}", self.dir.display()))
    }
}

impl Drop for BenchParent {
    fn drop(&mut self) {
        if !self.removed
            && let Err(e) = self.remove()
        {
            eprintln!("xtask bench: warning: {e:#}");
        }
    }
}

/// This thread's time on a CPU and time waiting for one, in ns (`/proc/thread-self/schedstat`;
/// None where the kernel does not provide it).
fn sched_times() -> Option<(u64, u64)> {
    let s = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// What one churn run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Churn {
    /// Cycles per second of wall time.
    rate: f64,
    /// Cycles per second of the churn thread's own CPU time: what the probes add inside the
    /// mkdir/rmdir system calls, without the noise of waiting for a CPU.
    cpu_rate: Option<f64>,
    /// Share of the run the thread spent waiting for a CPU.
    waited: Option<f64>,
}

/// The churn: mkdir + rmdir of one child cgroup in a tight loop for `secs`, on this thread.
/// The kernel's count of memory cgroups (live and dying), from `/proc/cgroups`.
fn memory_cgroups() -> Option<u64> {
    let text = fs::read_to_string("/proc/cgroups").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == "memory").then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Waits (at most 3 s) until the kernel has freed the cgroups the previous run left dying: a
/// run must not pay for the freeing work of the one before it (a fast run leaves more behind
/// than a slow one, which would favour whatever follows a slow tracer).
fn settle_kernel() {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = memory_cgroups();
    let mut still = 0;
    while still < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        let now = memory_cgroups();
        if now.is_some() && now < last {
            still = 0;
        } else {
            still += 1;
        }
        last = now;
    }
}

fn churn(parent: &Path, secs: f64) -> Result<Churn> {
    settle_kernel();
    let child = parent.join("c");
    let budget = Duration::from_secs_f64(secs);
    let sched0 = sched_times();
    let start = Instant::now();
    let mut cycles: u64 = 0;
    loop {
        fs::create_dir(&child)
            .with_context(|| format!("mkdir {} (cycle {cycles})", child.display()))?;
        fs::remove_dir(&child)
            .with_context(|| format!("rmdir {} (cycle {cycles})", child.display()))?;
        cycles += 1;
        if cycles.is_multiple_of(64) && start.elapsed() >= budget {
            break;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let (cpu_rate, waited) = match (sched0, sched_times()) {
        (Some((run0, wait0)), Some((run1, wait1))) if run1 > run0 => (
            Some(cycles as f64 / ((run1 - run0) as f64 / 1e9)),
            Some(wait1.saturating_sub(wait0) as f64 / 1e9 / wall),
        ),
        _ => (None, None),
    };
    Ok(Churn {
        rate: cycles as f64 / wall,
        cpu_rate,
        waited,
    })
}

// ---------------------------------------------------------------------------------------------
// Tracer processes

/// Where a tracer's stdout goes.
enum Out {
    Null,
    File(PathBuf),
    /// Piped to us; lines containing every one of these strings are reported with their time.
    Watch(Vec<String>),
}

/// A line a reader thread saw, with when.
type Seen = (Instant, String);

/// A running tracer. Dropping it kills the process if it still runs.
struct Tracer {
    what: String,
    child: Option<Child>,
    spawned: Instant,
    stderr: Receiver<Seen>,
    stderr_log: Arc<Mutex<Vec<String>>>,
    stdout: Option<Receiver<Seen>>,
    readers: Vec<JoinHandle<()>>,
}

fn read_lines(
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
    fn spawn(what: &str, program: &Path, args: &[String], out: Out) -> Result<Tracer> {
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

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn stderr_tail(&self) -> String {
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
    fn check_running(&mut self) -> Result<()> {
        let Some(c) = self.child.as_mut() else {
            bail!("{} was already stopped", self.what);
        };
        if let Some(st) = c.try_wait().context("waiting for the tracer")? {
            bail!("{} exited early ({st}): {}", self.what, self.stderr_tail());
        }
        Ok(())
    }

    /// Waits for a line matching `pred` on stderr (or stdout); returns when it was read.
    fn wait_line(
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
    fn wait_cgtrace_attached(&mut self) -> Result<Instant> {
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
    fn wait_bpftrace_attached(&mut self) -> Result<()> {
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

    fn join_readers(&mut self) {
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// SIGINT, then waits for a clean exit (status 0).
    fn stop(&mut self) -> Result<()> {
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

// ---------------------------------------------------------------------------------------------
// Modes of the overhead rounds

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Untraced,
    /// `cgtrace live --json > /dev/null`
    Live,
    /// `cgtrace live --json > FILE`: the loss figure (the summary's `lost`).
    LiveFile,
    Record,
    Attach,
    Bpftrace,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Live => "`cgtrace live --json > /dev/null`",
            Mode::LiveFile => "`cgtrace live --json > FILE`",
            Mode::Record => "`cgtrace record -o FILE`",
            Mode::Attach => "`cgtrace attach`",
            Mode::Bpftrace => "bpftrace printf of the 3 tracepoints `> /dev/null`",
        }
    }
}

/// What one churn run under one mode gave.
#[derive(Clone, Debug, Default)]
struct RunResult {
    churn: Churn,
    /// `live --json > FILE`: `lost` and the events total from the summary line.
    lost: Option<u64>,
    events: Option<u64>,
}

struct Ctx {
    bin: PathBuf,
    parent: PathBuf,
    tmp: PathBuf,
    round_secs: f64,
}

/// The value of `"key":<number>` in a JSON line (first unescaped occurrence of the key).
fn json_u64(line: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let at = from + i;
        if at == 0 || line.as_bytes()[at - 1] != b'\\' {
            let rest = &line[at + pat.len()..];
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            return digits.parse().ok();
        }
        from = at + pat.len();
    }
    None
}

/// The last non-empty line of a file (read from its end).
fn last_line(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(4 << 20);
    f.seek(SeekFrom::Start(start))
        .with_context(|| format!("seeking in {}", path.display()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} is empty", path.display()))
}

fn cgtrace_tracer(
    ctx: &Ctx,
    mode: Mode,
    tag: &str,
    ring: Option<u64>,
) -> Result<(Tracer, PathBuf)> {
    let file = ctx.tmp.join(format!("{tag}.out"));
    let mut args: Vec<String> = match mode {
        Mode::Live => vec!["live".into(), "--json".into()],
        Mode::LiveFile => vec!["live".into(), "--json".into()],
        Mode::Record => vec![
            "record".into(),
            "-o".into(),
            file.to_string_lossy().into_owned(),
        ],
        Mode::Attach => vec!["attach".into()],
        Mode::Untraced | Mode::Bpftrace => bail!("{mode:?} is not a cgtrace mode"),
    };
    if let Some(r) = ring {
        args.push("--ring-size".into());
        args.push(r.to_string());
    }
    let out = match mode {
        Mode::LiveFile => Out::File(file.clone()),
        _ => Out::Null,
    };
    let t = Tracer::spawn(mode.label(), &ctx.bin, &args, out)?;
    Ok((t, file))
}

/// Syscalls timed per run of the syscall tax.
const TAX_CALLS: u32 = 2_000_000;
/// Rounds of the syscall tax (each: nothing attached, and the two `live` variants).
const TAX_ROUNDS: usize = 7;

/// ns per `getppid(2)`, a syscall that does next to nothing, over [`TAX_CALLS`] calls.
fn syscall_ns() -> f64 {
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..TAX_CALLS {
        sum = sum.wrapping_add(u64::from(std::os::unix::process::parent_id()));
    }
    std::hint::black_box(sum);
    t.elapsed().as_nanos() as f64 / f64::from(TAX_CALLS)
}

/// The modes the syscall tax is measured under, after "nothing attached": the three default
/// modes, then the opt-in syscall hook for failed mkdirs.
const TAX_MODES: [&str; 4] = [
    "live --json",
    "record --force -o {tmp}/tax.cgtrace",
    "attach",
    "live --json --mkdir-failures syscall",
];

/// What every syscall on the node pays while cgtrace is attached (the syscall tracepoint of
/// `--mkdir-failures syscall` sends every syscall through the kernel's tracing slow path; the
/// default modes attach none). Rounds of (nothing attached, then each of [`TAX_MODES`]) in
/// rotating order; ns per syscall of each, in that order.
fn syscall_tax(ctx: &Ctx) -> Result<[Vec<f64>; 5]> {
    let tmp = ctx.tmp.to_string_lossy().into_owned();
    let variants: Vec<Vec<String>> = std::iter::once(Vec::new())
        .chain(TAX_MODES.iter().map(|m| {
            m.replace("{tmp}", &tmp)
                .split(' ')
                .map(str::to_string)
                .collect()
        }))
        .collect();
    let mut out: [Vec<f64>; 5] = Default::default();
    for round in 0..TAX_ROUNDS {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let ns = if variants[i].is_empty() {
                syscall_ns()
            } else {
                let args = &variants[i];
                let mut t = Tracer::spawn(&args.join(" "), &ctx.bin, args, Out::Null)?;
                t.wait_cgtrace_attached()?;
                thread::sleep(SETTLE);
                let ns = syscall_ns();
                t.stop()?;
                ns
            };
            out[i].push(ns);
        }
    }
    Ok(out)
}

/// One churn run under `mode` (the tracer started, attached, and stopped cleanly around it).
fn run_mode(ctx: &Ctx, mode: Mode, tag: &str, ring: Option<u64>) -> Result<RunResult> {
    match mode {
        Mode::Untraced => Ok(RunResult {
            churn: churn(&ctx.parent, ctx.round_secs)?,
            ..RunResult::default()
        }),
        Mode::Bpftrace => {
            let mut t = Tracer::spawn(
                mode.label(),
                Path::new("bpftrace"),
                &["-e".into(), BPFTRACE_PROGRAM.into()],
                Out::Null,
            )?;
            t.wait_bpftrace_attached()?;
            thread::sleep(SETTLE);
            let churn = churn(&ctx.parent, ctx.round_secs)?;
            t.stop()?;
            Ok(RunResult {
                churn,
                ..RunResult::default()
            })
        }
        _ => {
            let (mut t, file) = cgtrace_tracer(ctx, mode, tag, ring)?;
            let res = (|| -> Result<RunResult> {
                t.wait_cgtrace_attached()?;
                thread::sleep(SETTLE);
                let churn = churn(&ctx.parent, ctx.round_secs)?;
                t.stop()?;
                let mut r = RunResult {
                    churn,
                    ..RunResult::default()
                };
                if mode == Mode::LiveFile {
                    let line = last_line(&file)?;
                    if !line.contains("\"type\":\"summary\"") {
                        bail!(
                            "the last line of `cgtrace live --json` is not its summary: {line:.200}"
                        );
                    }
                    r.lost = Some(
                        json_u64(&line, "lost")
                            .ok_or_else(|| anyhow!("no \"lost\" in the summary: {line:.200}"))?,
                    );
                    r.events = json_u64(&line, "total");
                }
                Ok(r)
            })();
            drop(t);
            if file.exists() {
                let _ = fs::remove_file(&file);
            }
            res
        }
    }
}

/// The subcommands in `cgtrace --help` (clap's layout: commands indented by two under
/// `Commands:`, wrapped help text indented further).
fn parse_subcommands(help: &str) -> Vec<String> {
    let mut in_commands = false;
    let mut v = Vec::new();
    for l in help.lines() {
        if l.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if !in_commands {
            continue;
        }
        if !l.is_empty() && !l.starts_with(' ') {
            break;
        }
        if l.starts_with("  ")
            && !l.starts_with("   ")
            && let Some(w) = l.split_whitespace().next()
        {
            v.push(w.to_string());
        }
    }
    v
}

fn subcommands(bin: &Path) -> Result<Vec<String>> {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    if !out.status.success() {
        bail!("{} --help failed with {}", bin.display(), out.status);
    }
    Ok(parse_subcommands(&String::from_utf8_lossy(&out.stdout)))
}

// ---------------------------------------------------------------------------------------------
// The phases

/// Overhead and loss: alternating rounds of every mode.
struct Rounds {
    /// (mode, round, result), in the order they ran.
    results: Vec<(Mode, usize, RunResult)>,
    failed: Vec<(Mode, String)>,
}

fn overhead_rounds(ctx: &Ctx, rounds: usize, modes: &[Mode]) -> Result<Rounds> {
    let mut r = Rounds {
        results: Vec::new(),
        failed: Vec::new(),
    };
    for round in 0..rounds {
        let mut order: Vec<Mode> = modes
            .iter()
            .copied()
            .filter(|m| !r.failed.iter().any(|(f, _)| f == m))
            .collect();
        if order.is_empty() {
            break;
        }
        // A different order each round (a fixed pseudo-random shuffle): no mode always runs
        // right after the same other one.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(round as u64 + 1);
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        // A second untraced run half a round away: each traced run is divided by the mean of
        // its round's untraced runs, so a drift of the machine within a round cancels out.
        if order.len() > 2
            && let Some(at) = order.iter().position(|m| *m == Mode::Untraced)
        {
            let len = order.len();
            order.insert((at + len / 2) % len + 1, Mode::Untraced);
        }
        let mut line = format!("xtask bench: round {}/{rounds}:", round + 1);
        for (i, mode) in order.into_iter().enumerate() {
            match run_mode(ctx, mode, &format!("round{round}-{i}-{mode:?}"), None) {
                Ok(res) => {
                    let _ = write!(line, " {mode:?} {:.0}/s", res.churn.rate);
                    if let Some(l) = res.lost {
                        let _ = write!(line, " (lost {l})");
                    }
                    r.results.push((mode, round, res));
                }
                Err(e) if mode == Mode::Untraced => {
                    return Err(e.context("the untraced churn failed"));
                }
                Err(e) => {
                    eprintln!("xtask bench: {mode:?} failed, dropped from the rounds: {e:#}");
                    r.failed.push((mode, format!("{e:#}")));
                }
            }
        }
        eprintln!("{line}");
    }
    Ok(r)
}

impl Rounds {
    /// Mean of `rate` over the untraced runs of `round`.
    fn base(&self, round: usize, rate: &impl Fn(&Churn) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self
            .results
            .iter()
            .filter(|(m, r, _)| *m == Mode::Untraced && *r == round)
            .filter_map(|(_, _, x)| rate(&x.churn))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Per round: `rate(mode) ÷ rate(untraced)` (the mean of the round's untraced runs), with
    /// `rate` picking a churn figure.
    fn ratios(&self, mode: Mode, rate: impl Fn(&Churn) -> Option<f64>) -> Vec<f64> {
        self.results
            .iter()
            .filter(|(m, _, _)| *m == mode)
            .filter_map(|(_, round, res)| {
                let base = self.base(*round, &rate)?;
                let traced = rate(&res.churn)?;
                (base > 0.0).then(|| traced / base)
            })
            .collect()
    }

    fn values(&self, mode: Mode, f: impl Fn(&RunResult) -> Option<f64>) -> Vec<f64> {
        self.results
            .iter()
            .filter(|(m, _, _)| *m == mode)
            .filter_map(|(_, _, r)| f(r))
            .collect()
    }

    fn failure(&self, mode: Mode) -> Option<&str> {
        self.failed
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, e)| e.as_str())
    }
}

/// `bpftool prog show`: (id, name, run_time_ns, run_cnt) of every loaded program (the run
/// figures are 0 unless `kernel.bpf_stats_enabled` is on).
fn bpf_prog_stats() -> Result<Vec<(u64, String, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .context("running bpftool prog show")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_prog_show(&String::from_utf8_lossy(&out.stdout)))
}

/// The program lines of `bpftool prog show` (continuation lines are indented).
fn parse_prog_show(text: &str) -> Vec<(u64, String, u64, u64)> {
    let mut v = Vec::new();
    for line in text.lines() {
        // `<id>: <type>  name <name>  tag <tag>  gpl run_time_ns <ns> run_cnt <n>`
        let Some((id, rest)) = line.split_once(": ") else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let name = after("name").unwrap_or("").to_string();
        let num = |key: &str| after(key).and_then(|x| x.parse().ok()).unwrap_or(0);
        v.push((id, name, num("run_time_ns"), num("run_cnt")));
    }
    v
}

/// `kernel.bpf_stats_enabled` switched on for as long as this lives, then set back.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> Result<BpfStats> {
        let was =
            fs::read_to_string(Self::PATH).with_context(|| format!("reading {}", Self::PATH))?;
        fs::write(Self::PATH, "1").with_context(|| format!("writing {}", Self::PATH))?;
        Ok(BpfStats(was.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(Self::PATH, &self.0);
    }
}

/// What [`kernel_cost`] measured: ns per cycle, the churn, per program (name, ns per run,
/// runs per cycle).
type KernelCost = (f64, Churn, Vec<(String, f64, f64)>);

/// The kernel-side cost of `cgtrace live`: the run time of its programs (the kernel's own
/// per-program accounting, `kernel.bpf_stats_enabled`) over one churn, per mkdir+rmdir cycle.
/// The accounting itself adds a little to each run: an upper bound.
fn kernel_cost(ctx: &Ctx) -> Result<KernelCost> {
    let before: Vec<u64> = bpf_prog_stats()?.iter().map(|p| p.0).collect();
    let (mut t, file) = cgtrace_tracer(ctx, Mode::Live, "kernel-cost", None)?;
    let res = (|| -> Result<KernelCost> {
        t.wait_cgtrace_attached()?;
        thread::sleep(SETTLE);
        let ours = |all: Vec<(u64, String, u64, u64)>| -> Vec<(u64, String, u64, u64)> {
            all.into_iter()
                .filter(|p| !before.contains(&p.0))
                .filter(|p| {
                    ["raw_cgroup_", "sys_e", "exit_mkdir"]
                        .iter()
                        .any(|n| p.1.starts_with(n))
                })
                .collect()
        };
        let stats = BpfStats::enable()?;
        let start = ours(bpf_prog_stats()?);
        let churn = churn(&ctx.parent, ctx.round_secs)?;
        let end = ours(bpf_prog_stats()?);
        drop(stats);
        t.stop()?;
        if end.is_empty() {
            bail!("no cgtrace program found in `bpftool prog show`");
        }
        let cycles = churn.rate * ctx.round_secs;
        let mut total = 0u64;
        let mut per = Vec::new();
        for (id, name, ns, cnt) in &end {
            let (ns0, cnt0) = start
                .iter()
                .find(|p| p.0 == *id)
                .map_or((0, 0), |p| (p.2, p.3));
            let (ns, cnt) = (ns.saturating_sub(ns0), cnt.saturating_sub(cnt0));
            total += ns;
            if cnt > 0 {
                per.push((name.clone(), ns as f64 / cnt as f64, cnt as f64 / cycles));
            }
        }
        Ok((total as f64 / cycles.max(1.0), churn, per))
    })();
    drop(t);
    let _ = fs::remove_file(&file);
    res
}

/// Loss threshold: one round per ring size, 4 KiB → 4 MiB.
fn ring_scan(ctx: &Ctx) -> Result<Vec<(u64, u64, f64)>> {
    let mut v = Vec::new();
    let mut size = RING_MIN;
    while size <= RING_DEFAULT {
        let r = run_mode(ctx, Mode::LiveFile, &format!("ring-{size}"), Some(size))
            .with_context(|| format!("loss with --ring-size {size}"))?;
        let lost = r.lost.unwrap_or(0);
        eprintln!(
            "xtask bench: ring {}: lost {lost} at {:.0} cycles/s",
            size_name(size),
            r.churn.rate
        );
        v.push((size, lost, r.churn.rate));
        size *= 2;
    }
    Ok(v)
}

/// Start-up: spawn → `cgtrace: attached`, and spawn → a mkdir made right after attaching shows
/// on stdout. Returns (attach ms, stream ms) per run.
fn startup(ctx: &Ctx, parent_cgroup: &str, tag: &str) -> Result<Vec<(f64, f64)>> {
    let mut v = Vec::new();
    for i in 0..STARTUP_RUNS {
        let name = format!("mark-{tag}-{i}");
        let dir = ctx.parent.join(&name);
        let needles = vec![
            "\"event\":\"mkdir\"".to_string(),
            format!("\"path\":\"{parent_cgroup}/{name}\""),
        ];
        let mut t = Tracer::spawn(
            "cgtrace live --json (start-up)",
            &ctx.bin,
            &["live".into(), "--json".into()],
            Out::Watch(needles),
        )?;
        let res = (|| -> Result<(f64, f64)> {
            let attached = t.wait_cgtrace_attached()?;
            fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            let seen = t
                .wait_line(true, |_| true, ATTACH_TIMEOUT)
                .with_context(|| format!("waiting for the mkdir of {name} on stdout"))?;
            t.stop()?;
            Ok((
                attached.duration_since(t.spawned).as_secs_f64() * 1e3,
                seen.duration_since(t.spawned).as_secs_f64() * 1e3,
            ))
        })();
        drop(t);
        let rm = fs::remove_dir(&dir);
        let r = res?;
        if let Err(e) = rm
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("rmdir {}", dir.display()));
        }
        eprintln!(
            "xtask bench: start-up ({tag}): attached {:.0} ms, streaming {:.0} ms",
            r.0, r.1
        );
        v.push(r);
        // Let the exited tracer's programs and maps go before the next start.
        thread::sleep(Duration::from_millis(200));
    }
    Ok(v)
}

/// What `cargo bench -p cgtrace --bench pipeline` printed.
#[derive(Default)]
struct PipelineResults {
    /// events/s per round: decode → track, decode → track → lifetime histograms, decode alone.
    track_eps: Vec<f64>,
    histogram_eps: Vec<f64>,
    /// Session rounds: events/s written (decode → SessionWriter), events/s replayed
    /// (SessionReader → track), session bytes per event.
    session_write_eps: Vec<f64>,
    session_replay_eps: Vec<f64>,
    session_bytes_per_event: Vec<f64>,
    /// Thread CPU time ÷ wall time of the pipeline rounds (how much the machine let it run).
    cpu_share: Vec<f64>,
    decode_eps: Vec<f64>,
    /// (n, bytes per dying cgroup, tracked, dying)
    memory: Vec<(u64, f64, u64, u64)>,
    notes: Vec<String>,
    record_bytes: Option<u64>,
    stream: Option<String>,
}

fn parse_pipeline(text: &str) -> Result<PipelineResults> {
    let mut p = PipelineResults::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else { continue };
        let nums: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match key {
            "pipeline_round" => {
                let (Some(variant), [events, secs, decode_s, wall_s]) = (f.next(), &nums[..])
                else {
                    bail!("unexpected bench line: {line}");
                };
                let (events, secs, decode_s) = (*events, *secs, *decode_s);
                if *wall_s > 0.0 && secs > 0.0 {
                    p.cpu_share.push(secs / wall_s);
                }
                if secs > 0.0 {
                    match variant {
                        "track" => p.track_eps.push(events / secs),
                        "histograms" => p.histogram_eps.push(events / secs),
                        _ => bail!("unexpected bench line: {line}"),
                    }
                }
                if decode_s > 0.0 {
                    p.decode_eps.push(events / decode_s);
                }
            }
            "session_round" => {
                let [events, write_s, replay_s, bytes] = nums[..] else {
                    bail!("unexpected bench line: {line}");
                };
                if events > 0.0 {
                    p.session_bytes_per_event.push(bytes / events);
                }
                if write_s > 0.0 {
                    p.session_write_eps.push(events / write_s);
                }
                if replay_s > 0.0 {
                    p.session_replay_eps.push(events / replay_s);
                }
            }
            "memory_dying" => {
                let [n, before, after, tracked, dying] = nums[..] else {
                    bail!("unexpected bench line: {line}");
                };
                if n > 0.0 {
                    p.memory
                        .push((n as u64, (after - before) / n, tracked as u64, dying as u64));
                }
            }
            "note" => p.notes.push(line["note".len()..].trim().to_string()),
            "record_bytes" => p.record_bytes = nums.first().map(|&b| b as u64),
            "stream" => p.stream = Some(line["stream".len()..].trim().to_string()),
            _ => {}
        }
    }
    if p.track_eps.is_empty() && p.histogram_eps.is_empty() {
        bail!("the pipeline bench printed no pipeline_round line");
    }
    Ok(p)
}

fn pipeline_bench() -> Result<PipelineResults> {
    let out = cargo()
        .args(["bench", "-p", "cgtrace", "--bench", "pipeline"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo bench -p cgtrace --bench pipeline")?;
    if !out.status.success() {
        bail!(
            "cargo bench -p cgtrace --bench pipeline failed with {}",
            out.status
        );
    }
    parse_pipeline(&String::from_utf8_lossy(&out.stdout))
}

// ---------------------------------------------------------------------------------------------

pub fn run(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    if !(0.2..=60.0).contains(&args.round_secs) {
        bail!("--round-secs must be between 0.2 and 60");
    }
    if !is_root() {
        bail!("cargo xtask bench needs root: it loads eBPF programs and makes cgroups");
    }
    if !args.no_build {
        setup::ensure()?;
        crate::build_release_cgtrace()?;
    }
    let bin = workspace_root().join("target/release/cgtrace");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with cargo build --release -p cgtrace",
            bin.display()
        );
    }
    let out_dir = workspace_root().join("target/bench");
    if args.pods_only {
        return pods_only(&args, &bin, &out_dir);
    }
    let tmp = out_dir.join(format!("tmp-{}", std::process::id()));
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let res = measure(&args, &bin, &out_dir, &tmp, started);
    let _ = fs::remove_dir_all(&tmp);
    res
}

/// The pod-churn rows, its curve for the details, and its README table (written now).
fn pod_churn(
    args: &BenchArgs,
    bin: &Path,
    machine: &Machine,
    rows: &mut Vec<Row>,
    details: &mut String,
) -> Result<()> {
    if args.pod_cycles == 0 {
        return Ok(());
    }
    eprintln!(
        "xtask bench: memory under pod churn ({} pod cycles under `cgtrace attach`)",
        grouped(args.pod_cycles as f64)
    );
    let churn = match pods::measure(bin, args.pod_cycles) {
        Ok(c) => c,
        Err(e) => {
            rows.push(Row::note(
                "pod churn: memory of `cgtrace attach`",
                format!("failed: {e:#}"),
            ));
            return Err(e);
        }
    };
    let own = churn.rows();
    let table = render_table(&own);
    let _ = writeln!(
        details,
        "- pod churn ({}/s): {}",
        grouped(churn.rate),
        churn.curve()
    );
    rows.extend(own);
    let readme = workspace_root().join("README.md");
    crate::write_between_markers(
        &readme,
        pods::README_BEGIN,
        pods::README_END,
        &churn.readme_section(&table, &machine.date, &machine.commit),
    )?;
    eprintln!(
        "xtask bench: pod-churn table written to {}",
        readme.display()
    );
    Ok(())
}

/// `--pods-only`: the pod-churn measure alone.
fn pods_only(args: &BenchArgs, bin: &Path, out_dir: &Path) -> Result<()> {
    if args.pod_cycles == 0 {
        bail!("--pods-only needs --pod-cycles above 0");
    }
    let machine = Machine::describe();
    let (mut rows, mut details) = (Vec::new(), String::new());
    let res = pod_churn(args, bin, &machine, &mut rows, &mut details);
    let mut md = String::from("## cgtrace benchmarks (`cargo xtask bench --pods-only`)\n\n");
    md.push_str(&machine.render());
    md.push('\n');
    md.push_str(&render_table(&rows));
    md.push_str("\nDetails:\n");
    md.push_str(&details);
    write_report(out_dir, "pods.md", &md)?;
    res
}

/// Prints the report and writes it to `out_dir/name`.
fn write_report(out_dir: &Path, name: &str, md: &str) -> Result<()> {
    println!("{md}");
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let latest = out_dir.join(name);
    fs::write(&latest, md).with_context(|| format!("writing {}", latest.display()))?;
    eprintln!("xtask bench: table written to {}", latest.display());
    Ok(())
}

fn measure(
    args: &BenchArgs,
    bin: &Path,
    out_dir: &Path,
    tmp: &Path,
    started: Instant,
) -> Result<()> {
    let machine = Machine::describe();
    let subs = subcommands(bin)?;
    let has = |s: &str| subs.iter().any(|c| c == s);
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut details = String::new();
    let mut errors: Vec<String> = Vec::new();

    // 1. The user-space pipeline and the tracker's memory (no kernel involved).
    let t = Instant::now();
    eprintln!("xtask bench: pipeline and memory (cargo bench -p cgtrace --bench pipeline)");
    let pipeline = pipeline_bench();
    let pipeline_time = t.elapsed();

    // 2. Overhead and loss, in alternating rounds.
    let mount = memory_mount()?;
    let mut parent = BenchParent::create(&mount)?;
    let ctx = Ctx {
        bin: bin.to_path_buf(),
        parent: parent.dir.clone(),
        tmp: tmp.to_path_buf(),
        round_secs: args.round_secs,
    };
    let mut modes = vec![Mode::Untraced, Mode::Live, Mode::LiveFile];
    for (sub, mode) in [("record", Mode::Record), ("attach", Mode::Attach)] {
        if has(sub) {
            modes.push(mode);
        }
    }
    modes.push(Mode::Bpftrace);
    let t = Instant::now();
    let rounds = overhead_rounds(&ctx, args.rounds as usize, &modes)?;
    let rounds_time = t.elapsed();

    // 3. The ring size where loss starts.
    let t = Instant::now();
    let scan = ring_scan(&ctx);
    let scan_time = t.elapsed();

    // 3b. The kernel side alone: the programs' own run time per cycle.
    let kcost = kernel_cost(&ctx);

    // 3c. The syscall tax of the failed-mkdir hook.
    let tax = syscall_tax(&ctx);

    // 4. Start-up, with the machine's own cgroups, then with many more.
    let t = Instant::now();
    let startup_plain = startup(&ctx, &parent.cgroup_path, "plain");
    let many = parent.dir.join("many");
    let mut made = 0u32;
    let startup_many = (|| -> Result<Vec<(f64, f64)>> {
        fs::create_dir(&many).with_context(|| format!("mkdir {}", many.display()))?;
        for i in 0..args.startup_cgroups {
            let d = many.join(format!("c{i:05}"));
            fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            made += 1;
        }
        startup(&ctx, &parent.cgroup_path, "many")
    })();
    // Remove them in a known order (quicker than walking 10,000 directories).
    for i in (0..made).rev() {
        let d = many.join(format!("c{i:05}"));
        if let Err(e) = fs::remove_dir(&d) {
            errors.push(format!("rmdir {}: {e}", d.display()));
        }
    }
    let startup_time = t.elapsed();
    if let Err(e) = parent.remove() {
        errors.push(format!("{e:#}"));
    }

    // 5. Memory under pod churn (its rows come last).
    let t = Instant::now();
    let mut pod_rows = Vec::new();
    if let Err(e) = pod_churn(args, bin, &machine, &mut pod_rows, &mut details) {
        errors.push(format!("pod churn: {e:#}"));
    }
    let pods_time = t.elapsed();

    // The table.
    let base = rounds.values(Mode::Untraced, |r| Some(r.churn.rate));
    if let Some(s) = stats(&base) {
        rows.push(Row::measured(
            "untraced memcg mkdir+rmdir rate (cycles/s, one thread)",
            s,
            per_s,
        ));
    }
    for mode in [
        Mode::Live,
        Mode::LiveFile,
        Mode::Record,
        Mode::Attach,
        Mode::Bpftrace,
    ] {
        let figure = format!("overhead: {} (rate ÷ untraced)", mode.label());
        if !modes.contains(&mode) {
            let sub = if mode == Mode::Record {
                "record"
            } else {
                "attach"
            };
            rows.push(Row::note(
                figure,
                format!("skipped: this build of cgtrace has no `{sub}` subcommand"),
            ));
            continue;
        }
        match (
            stats(&rounds.ratios(mode, |c| Some(c.rate))),
            rounds.failure(mode),
        ) {
            (_, Some(e)) => rows.push(Row::note(figure, format!("failed: {e}"))),
            (Some(s), None) => {
                let row = Row::measured(figure, s, ratio);
                // The target is for tracing to /dev/null (or a session file): writing JSON
                // lines to a file and bpftrace are there for comparison.
                rows.push(match mode {
                    Mode::Live | Mode::Record | Mode::Attach => {
                        row.target(format!("≥ {TARGET_OVERHEAD}"), s.median >= TARGET_OVERHEAD)
                    }
                    _ => row,
                });
            }
            (None, None) => rows.push(Row::note(figure, "no result")),
        }
    }
    // The same rounds per second of the churn thread's own CPU time: what the probes cost
    // inside mkdir/rmdir, without the time the thread waited for a CPU (on a busy machine most
    // of the spread of the wall-clock ratios).
    for mode in [
        Mode::Live,
        Mode::LiveFile,
        Mode::Record,
        Mode::Attach,
        Mode::Bpftrace,
    ] {
        if rounds.failure(mode).is_some() {
            continue;
        }
        if let Some(s) = stats(&rounds.ratios(mode, |c| c.cpu_rate)) {
            rows.push(Row::measured(
                format!(
                    "overhead per CPU-second of the churn thread: {} (÷ untraced)",
                    mode.label()
                ),
                s,
                ratio,
            ));
        }
    }
    let waited = rounds.values(Mode::Untraced, |r| r.churn.waited);
    if let Some(s) = stats(&waited) {
        let _ = writeln!(
            details,
            "- the untraced churn thread waited for a CPU {:.0}% of its rounds (median; {:.0}–{:.0}%): the machine was that busy",
            s.median * 100.0,
            s.min * 100.0,
            s.max * 100.0
        );
    }
    let lost = rounds.values(Mode::LiveFile, |r| r.lost.map(|l| l as f64));
    match (stats(&lost), rounds.failure(Mode::LiveFile)) {
        (_, Some(e)) => rows.push(Row::note(
            "loss at the top churn rate, default ring",
            format!("failed: {e}"),
        )),
        (Some(s), None) => rows.push(Row::measured(
            format!(
                "loss: events lost per {} s round at the top churn rate, default ring ({})",
                args.round_secs,
                size_name(RING_DEFAULT)
            ),
            s,
            count,
        )),
        (None, None) => rows.push(Row::note(
            "loss at the top churn rate, default ring",
            "no result",
        )),
    }
    match &scan {
        Ok(scan) => {
            // The smallest size from which every larger size lost nothing.
            let mut threshold = None;
            for &(size, lost, _) in scan.iter().rev() {
                if lost > 0 {
                    break;
                }
                threshold = Some(size);
            }
            let list: Vec<String> = scan
                .iter()
                .map(|(s, l, rate)| format!("{}: {l} lost ({:.0} cycles/s)", size_name(*s), rate))
                .collect();
            let _ = writeln!(
                details,
                "- ring sizes (one {} s round each): {}",
                args.round_secs,
                list.join(", ")
            );
            match threshold {
                Some(t) => rows.push(Row::measured(
                    "loss: smallest ring with 0 lost over a round (loss starts below it)",
                    Stats {
                        median: t as f64,
                        min: t as f64,
                        max: t as f64,
                        n: 1,
                    },
                    ring,
                )),
                None => rows.push(Row::note(
                    "loss: smallest ring with 0 lost over a round",
                    format!("events were lost even with {}", size_name(RING_DEFAULT)),
                )),
            }
        }
        Err(e) => {
            rows.push(Row::note(
                "loss: ring size threshold",
                format!("failed: {e:#}"),
            ));
            errors.push(format!("ring scan: {e:#}"));
        }
    }
    match &kcost {
        Ok((ns, churn, per)) => {
            let one = |v: f64| Stats {
                median: v,
                min: v,
                max: v,
                n: 1,
            };
            rows.push(Row::measured(
                "kernel side: cgtrace's programs per mkdir+rmdir cycle (the kernel's bpf_stats)",
                one(*ns),
                nanos,
            ));
            if let Some(base) = stats(&rounds.values(Mode::Untraced, |r| r.churn.cpu_rate)) {
                // The untraced cycle's CPU time in the churn thread.
                let cycle_ns = 1e9 / base.median;
                rows.push(Row::measured(
                    "kernel side: that time ÷ an untraced cycle's CPU time (upper bound)",
                    one(ns / cycle_ns),
                    percent,
                ));
            }
            let list: Vec<String> = per
                .iter()
                .map(|(name, ns, runs)| format!("{name} {ns:.0} ns × {runs:.2}/cycle"))
                .collect();
            let _ = writeln!(
                details,
                "- kernel side, per program (one {} s churn at {:.0} cycles/s under `cgtrace live --json`, kernel.bpf_stats_enabled on): {}",
                ctx.round_secs,
                churn.rate,
                list.join(", ")
            );
        }
        Err(e) => {
            rows.push(Row::note("kernel side", format!("failed: {e:#}")));
            errors.push(format!("kernel side: {e:#}"));
        }
    }
    match &tax {
        Ok([base, rest @ ..]) => {
            if let Some(s) = stats(base) {
                rows.push(Row::measured(
                    "syscall tax: one getppid(2), nothing attached",
                    s,
                    nanos,
                ));
            }
            for (mode, v) in TAX_MODES.iter().zip(rest) {
                let mode = mode.replace(" --force -o {tmp}/tax.cgtrace", "");
                let figure =
                    format!("syscall tax: getppid(2) under `cgtrace {mode}` (÷ nothing attached)");
                let figure = figure.as_str();
                let r: Vec<f64> = v.iter().zip(base).map(|(t, b)| t / b).collect();
                if let Some(s) = stats(&r) {
                    rows.push(Row::measured(figure, s, ratio));
                }
            }
        }
        Err(e) => {
            rows.push(Row::note("syscall tax", format!("failed: {e:#}")));
            errors.push(format!("syscall tax: {e:#}"));
        }
    }
    match &pipeline {
        Ok(p) => {
            for (figure, v) in [
                (
                    "pipeline: decode → track, kubelet-like stream (events per CPU-second, one thread)",
                    &p.track_eps,
                ),
                (
                    "pipeline: decode → track → lifetime histograms (events per CPU-second, one thread)",
                    &p.histogram_eps,
                ),
            ] {
                if let Some(s) = stats(v) {
                    rows.push(
                        Row::measured(figure, s, events_per_s)
                            .target("≥ 10 M/s", s.median >= TARGET_PIPELINE_EPS),
                    );
                }
            }
            for (figure, v) in [
                (
                    "session: decode → `SessionWriter` to memory (events per CPU-second)",
                    &p.session_write_eps,
                ),
                (
                    "session replay: `SessionReader` → track (events per CPU-second)",
                    &p.session_replay_eps,
                ),
            ] {
                if let Some(s) = stats(v) {
                    rows.push(Row::measured(figure, s, events_per_s));
                }
            }
            if let Some(s) = stats(&p.session_bytes_per_event) {
                rows.push(Row::measured(
                    "session: bytes per event (kubelet-like stream)",
                    s,
                    bytes_1,
                ));
            }
            if let Some(s) = stats(&p.decode_eps) {
                rows.push(Row::measured(
                    "pipeline: decode alone (events per CPU-second, one thread)",
                    s,
                    events_per_s,
                ));
            }
            for &(n, per, tracked, dying) in &p.memory {
                let s = Stats {
                    median: per,
                    min: per,
                    max: per,
                    n: 1,
                };
                rows.push(
                    Row::measured(
                        format!(
                            "memory: RSS per dying memcg, {} tracked (kubelet paths)",
                            grouped(n as f64)
                        ),
                        s,
                        bytes,
                    )
                    .target("≤ 256 B", per <= TARGET_BYTES_PER_DYING),
                );
                if tracked != n || dying != n {
                    notes.push(format!(
                        "memory run of {n}: the tracker held {tracked} cgroups, {dying} dying (expected {n})"
                    ));
                }
            }
            for n in &p.notes {
                notes.push(format!("pipeline bench: {n}"));
            }
            if let (Some(b), Some(st)) = (p.record_bytes, &p.stream) {
                let _ = writeln!(
                    details,
                    "- pipeline stream: raw records of {b} bytes; {st}; mkdir, rmdir and release of `/kubepods/<qos>/pod<uuid>[/<64 hex>]` in every hierarchy; ≥ 5 M events per round, record generation not timed; rates are per second of the thread's CPU time"
                );
            }
            if let Some(s) = stats(&p.cpu_share) {
                let _ = writeln!(
                    details,
                    "- pipeline rounds got {:.0}% (median; {:.0}–{:.0}%) of a CPU in wall time",
                    s.median * 100.0,
                    s.min * 100.0,
                    s.max * 100.0
                );
            }
        }
        Err(e) => {
            rows.push(Row::note("pipeline and memory", format!("failed: {e:#}")));
            errors.push(format!("pipeline bench: {e:#}"));
        }
    }
    for (label, res) in [
        ("the machine's own cgroups", &startup_plain),
        (
            &*format!("{} extra memcgs", grouped(f64::from(args.startup_cgroups))),
            &startup_many,
        ),
    ] {
        match res {
            Ok(v) => {
                let attach: Vec<f64> = v.iter().map(|r| r.0).collect();
                let stream: Vec<f64> = v.iter().map(|r| r.1).collect();
                if let Some(s) = stats(&attach) {
                    rows.push(Row::measured(
                        format!("start-up, {label}: spawn → `cgtrace: attached`"),
                        s,
                        ms,
                    ));
                }
                if let Some(s) = stats(&stream) {
                    rows.push(
                        Row::measured(
                            format!("start-up, {label}: spawn → a mkdir made then is on stdout"),
                            s,
                            ms,
                        )
                        .target("≤ 300 ms", s.median <= TARGET_STARTUP_MS),
                    );
                }
            }
            Err(e) => {
                rows.push(Row::note(
                    format!("start-up, {label}"),
                    format!("failed: {e:#}"),
                ));
                errors.push(format!("start-up ({label}): {e:#}"));
            }
        }
    }

    rows.extend(pod_rows);

    // Per-round raw figures.
    let rounds_n = rounds
        .results
        .iter()
        .map(|(_, r, _)| r + 1)
        .max()
        .unwrap_or(0);
    for round in 0..rounds_n {
        // In the order they ran.
        let cells: Vec<String> = rounds
            .results
            .iter()
            .filter(|(_, r, _)| *r == round)
            .map(|&(m, _, ref r)| {
                let mut s = format!("{m:?} {}", grouped(r.churn.rate));
                if let (Some(c), Some(w)) = (r.churn.cpu_rate, r.churn.waited) {
                    let _ = write!(s, " [{} per CPU-s, waited {:.0}%]", grouped(c), w * 100.0);
                }
                if let (Some(l), Some(e)) = (r.lost, r.events) {
                    let _ = write!(s, " (lost {l}, seen {e})");
                }
                s
            })
            .collect();
        let _ = writeln!(details, "- round {}: {}", round + 1, cells.join(", "));
    }
    let total = started.elapsed();
    let _ = writeln!(
        details,
        "- time: pipeline bench (incl. its build) {:.0} s, overhead rounds {:.0} s, ring scan {:.0} s, start-up {:.0} s, pod churn {:.0} s; total {:.0} s",
        pipeline_time.as_secs_f64(),
        rounds_time.as_secs_f64(),
        scan_time.as_secs_f64(),
        startup_time.as_secs_f64(),
        pods_time.as_secs_f64(),
        total.as_secs_f64()
    );

    let mut md = String::new();
    let _ = writeln!(md, "## cgtrace benchmarks (`cargo xtask bench`)\n");
    md.push_str(&machine.render());
    let _ = writeln!(
        md,
        "\nOverhead: single-threaded memcg mkdir+rmdir churn under `{}`, {} alternating rounds of {} s per mode (modes in a different shuffled order each round, the untraced churn run twice per round, half a round apart; before each run, the kernel's memory cgroup count is let settle); each traced rate is divided by the mean untraced rate of its round. Tracers see every cgroup of the node (no filter).\n",
        parent.cgroup_path, args.rounds, args.round_secs
    );
    md.push_str(&render_table(&rows));
    if !notes.is_empty() {
        md.push_str("\nNotes:\n");
        for n in &notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md.push_str("\nDetails:\n");
    md.push_str(&details);
    write_report(out_dir, "latest.md", &md)?;
    if !errors.is_empty() {
        bail!("some measures failed:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_min_max() {
        let s = stats(&[3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = stats(&[4.0, 1.0, 2.0, 3.0]).expect("stats");
        assert_eq!(s.median, 2.5);
        assert!(stats(&[]).is_none());
    }

    #[test]
    fn json_keys() {
        let l = r#"{"type":"summary","events":{"mkdir":3,"total":9},"lost":12,"lost_by_kind":{"rmdir":12},"pods":[{"name":"a\"lost\":5"}]}"#;
        assert_eq!(json_u64(l, "lost"), Some(12));
        assert_eq!(json_u64(l, "total"), Some(9));
        assert_eq!(json_u64(r#"{"x":"\"lost\":4","lost":0}"#, "lost"), Some(0));
        assert_eq!(json_u64(l, "nope"), None);
    }

    #[test]
    fn dates_and_numbers() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(grouped(1_234_567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(size_name(4096), "4 KiB");
        assert_eq!(size_name(4 << 20), "4 MiB");
    }

    #[test]
    fn parses_bpftool_prog_show() {
        let text = "16259: raw_tracepoint  name raw_cgroup_mkdir  tag beb2924d75b7884d  gpl run_time_ns 4537 run_cnt 1\n\tloaded_at 2026-11-23T17:23:01+0000  uid 0\n\txlated 6400B  jited 3422B  memlock 20480B\n17: tracepoint  name sys_enter_mkdir  tag 85d6bb2caf7bd95f  gpl\n";
        assert_eq!(
            parse_prog_show(text),
            vec![
                (16259, "raw_cgroup_mkdir".to_string(), 4537, 1),
                (17, "sys_enter_mkdir".to_string(), 0, 0)
            ]
        );
    }

    #[test]
    fn parses_the_pipeline_output() {
        let p = parse_pipeline(
            "record_bytes 352\nstream hierarchies=9\npipeline_round track 1000 0.5 0.1 0.5\npipeline_round histograms 1000 1 0.1 2\nsession_round 1000 0.25 0.5 12000\nmemory_dying 10 1000 3000 10 10\nnote session: absent\n",
        )
        .expect("parses");
        assert_eq!(p.track_eps, vec![2000.0]);
        assert_eq!(p.histogram_eps, vec![1000.0]);
        assert_eq!(p.session_write_eps, vec![4000.0]);
        assert_eq!(p.session_replay_eps, vec![2000.0]);
        assert_eq!(p.session_bytes_per_event, vec![12.0]);
        assert_eq!(p.decode_eps, vec![10000.0, 10000.0]);
        assert_eq!(p.memory, vec![(10, 200.0, 10, 10)]);
        assert_eq!(p.notes, vec!["session: absent".to_string()]);
        assert!(parse_pipeline("nothing\n").is_err());
        assert!(parse_pipeline("pipeline_round 1000 0.5 0.1 0.5\n").is_err());
        assert!(parse_pipeline("pipeline_round track 1000 0.5 0.1\n").is_err());
    }

    #[test]
    fn help_subcommands() {
        let text = "Usage: cgtrace\n\nCommands:\n  live    Print\n  check   One-shot\n          wrapped\n\n  help    Print\n\nOptions:\n  -v, --verbose\n";
        assert_eq!(parse_subcommands(text), ["live", "check", "help"]);
    }
}
