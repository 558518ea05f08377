//! The pod-churn memory measure: `cgtrace attach` through many kubelet-like pod lifetimes (a
//! pod cgroup and one container cgroup, `kubepods/burstable/pod<uid>/<container id>`, made,
//! removed and freed by the kernel), and what it holds after each 100,000: its RSS and the
//! memory charged to a memory cgroup of its own (BPF maps and the ring are charged there since
//! 5.11). Memory is to be bounded by what exists, not by what existed: the figures after the
//! last cycle are to be within 2 MiB of those after the first 20,000.
//!
//! Everything lives under one parent unique to the run (`cgtrace-bench-<pid>-pods` in the
//! memory hierarchy): `cgtrace` (cgtrace's own memcg) and `kubepods/burstable/…`. cgtrace
//! traces that subtree only (`--subtree`), so the count of events it saw tells when it caught
//! up; the figures are read then, with the creators paused.
use std::{
    fmt::Write as _,
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use integration_tests::{binary::metric, pods};

use super::{BenchParent, Out, Row, Stats, Tracer, grouped, memory_mount};

/// The pod cycles the figures are compared against (the warm-up).
pub(super) const WARMUP: u64 = 20_000;
/// A figure every this many cycles.
const EVERY: u64 = 100_000;
/// Most growth after the warm-up (bytes), RSS and cgroup memory alike.
const TARGET_GROWTH: f64 = 2.0 * 1024.0 * 1024.0;
/// Threads making and removing pods (the machine has 2 CPUs; cgtrace needs some too).
const CREATORS: u64 = 2;
/// How long cgtrace may take to catch up with the events of a stretch (and the kernel to free
/// what was removed).
const CATCH_UP: Duration = Duration::from_secs(60);
/// Pods made between two waits for cgtrace (12,000 events: far less than its ring holds).
const STEP: u64 = 2_000;

/// The README's pod-churn table sits between these lines.
pub(super) const README_BEGIN: &str = "<!-- pod-churn:begin (cargo xtask bench) -->";
pub(super) const README_END: &str = "<!-- pod-churn:end -->";

/// One figure of the curve.
#[derive(Clone, Copy, Debug)]
pub(super) struct Point {
    /// Pod cycles done.
    pub(super) cycles: u64,
    /// Seconds since the churn started.
    pub(super) secs: f64,
    /// cgtrace's resident set (bytes).
    pub(super) rss: u64,
    /// Memory charged to cgtrace's memcg (bytes): `memory.usage_in_bytes` (v1), `memory.current`
    /// (v2).
    pub(super) cgroup: u64,
    /// Memcgs dying in cgtrace's view when it was read.
    pub(super) dying: u64,
    /// Events cgtrace lost so far (a lost release leaves a memcg dying in its view for good).
    pub(super) lost: u64,
}

/// What one run measured.
pub(super) struct PodChurn {
    pub(super) points: Vec<Point>,
    /// The cgroup memory file read (`memory.usage_in_bytes` or `memory.current`).
    pub(super) cgroup_file: &'static str,
    /// Where the pods were made.
    pub(super) parent: String,
    /// Pod cycles per second of wall time over the run.
    pub(super) rate: f64,
}

impl PodChurn {
    fn warm(&self) -> Option<&Point> {
        self.points.iter().find(|p| p.cycles >= WARMUP)
    }

    fn last(&self) -> Option<&Point> {
        self.points.last()
    }

    /// (RSS growth, cgroup growth) after the warm-up, bytes (negative: it shrank).
    pub(super) fn growth(&self) -> Option<(f64, f64)> {
        let (w, l) = (self.warm()?, self.last()?);
        Some((
            l.rss as f64 - w.rss as f64,
            l.cgroup as f64 - w.cgroup as f64,
        ))
    }

    /// The table rows: the figures after the warm-up and after the last cycle, and the growth
    /// in between against the target.
    pub(super) fn rows(&self) -> Vec<Row> {
        let (Some(w), Some(l), Some((g_rss, g_cg))) = (self.warm(), self.last(), self.growth())
        else {
            return vec![Row::note(
                "pod churn: memory of `cgtrace attach`",
                "no figure after the warm-up",
            )];
        };
        let one = |v: f64| Stats {
            median: v,
            min: v,
            max: v,
            n: 1,
        };
        let (n, warm) = (grouped(l.cycles as f64), grouped(w.cycles as f64));
        let memcg = format!("cgtrace's memcg ({})", self.cgroup_file);
        let mut rows = Vec::new();
        for (what, short, at_warm, at_last, growth) in [
            ("RSS of `cgtrace attach`", "RSS", w.rss, l.rss, g_rss),
            (memcg.as_str(), "cgtrace's memcg", w.cgroup, l.cgroup, g_cg),
        ] {
            rows.push(Row::measured(
                format!("pod churn: {what} after {warm} pod cycles"),
                one(at_warm as f64),
                mib,
            ));
            rows.push(Row::measured(
                format!("pod churn: {what} after {n} pod cycles"),
                one(at_last as f64),
                mib,
            ));
            rows.push(
                Row::measured(
                    format!("pod churn: {short} growth, {warm} → {n} pod cycles"),
                    one(growth),
                    mib_signed,
                )
                .target("≤ 2 MiB", growth <= TARGET_GROWTH),
            );
        }
        if l.lost > 0 {
            rows.push(Row::note(
                "pod churn: events lost",
                format!("{}: the figures are not of whole pods", l.lost),
            ));
        }
        rows
    }

    /// The curve, one line.
    pub(super) fn curve(&self) -> String {
        let cells: Vec<String> = self
            .points
            .iter()
            .map(|p| {
                format!(
                    "{}: RSS {}, memcg {} ({} dying)",
                    grouped(p.cycles as f64),
                    mib(p.rss as f64),
                    mib(p.cgroup as f64),
                    p.dying
                )
            })
            .collect();
        cells.join("; ")
    }

    /// The README section: what was run, the table, the curve.
    pub(super) fn readme_section(&self, table: &str, date: &str, commit: &str) -> String {
        let mut s = String::new();
        let last = self.last().map_or(0, |p| p.cycles);
        let _ = writeln!(
            s,
            "{} pod cycles (a pod cgroup and a container cgroup, `kubepods/burstable/pod<uid>/<64 hex>`, made and removed by {CREATORS} threads under `{}`, {}/s) under `cgtrace attach --subtree` of that parent, cgtrace in a memory cgroup of its own; written by `cargo xtask bench` (`--pods-only --pod-cycles N` runs it alone) on {date}, cgtrace commit {commit}:\n",
            grouped(last as f64),
            self.parent,
            grouped(self.rate),
        );
        s.push_str(table);
        let _ = writeln!(s, "\nCurve: {}.", self.curve());
        s
    }
}

fn mib(v: f64) -> String {
    format!("{:.1} MiB", v / 1048576.0)
}

fn mib_signed(v: f64) -> String {
    format!("{:+.2} MiB", v / 1048576.0)
}

/// `GET /metrics` from cgtrace's server.
fn scrape(port: u16) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connecting to /metrics")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut all = String::new();
    s.read_to_string(&mut all).context("reading /metrics")?;
    Ok(all)
}

/// The counts of events cgtrace saw or counted lost: (rmdirs, releases), the dying memcgs it
/// tracks and the events it lost (all kinds).
fn seen(port: u16) -> Result<(u64, u64, u64, u64)> {
    let body = scrape(port)?;
    let get = |s: &str| {
        metric(&body, s)
            .map(|v| v as u64)
            .ok_or_else(|| anyhow!("no {s} in /metrics"))
    };
    let both = |kind: &str| -> Result<u64> {
        Ok(get(&format!("cgtrace_events_total{{event=\"{kind}\"}}"))?
            + get(&format!("cgtrace_lost_events_total{{event=\"{kind}\"}}"))?)
    };
    let lost = body
        .lines()
        .filter(|l| l.starts_with("cgtrace_lost_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    Ok((
        both("rmdir")?,
        both("release")?,
        get("cgtrace_cgroups{state=\"dying\"}")?,
        lost,
    ))
}

/// Waits until cgtrace saw (or lost) `rmdirs` rmdirs.
fn wait_rmdirs(port: u16, rmdirs: u64) -> Result<()> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let (rm, _, _, _) = seen(port)?;
        if rm >= rmdirs {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("cgtrace saw {rm} of {rmdirs} rmdirs within {CATCH_UP:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `sh` arguments running `cgtrace attach` on the bench parent from inside cgtrace's own memcg
/// `own`: the shell moves itself into it, then becomes cgtrace (same pid), so everything cgtrace
/// allocates, BPF maps included, is charged there.
fn attach_args(bin: &Path, own: &Path, parent_cgroup: &str, port: u16) -> Vec<String> {
    vec![
        "-c".into(),
        pods::exec_in_cgroup_script(own),
        bin.to_string_lossy().into_owned(),
        "attach".into(),
        "--subtree".into(),
        parent_cgroup.to_string(),
        "--metrics".into(),
        format!("127.0.0.1:{port}"),
        "--interval".into(),
        "1h".into(),
    ]
}

/// Waits until cgtrace saw every rmdir and release of `to` pod cycles (the kernel frees the
/// memcgs soon) since the counts `(rm0, rel0)`; returns the dying memcgs and lost events then.
fn wait_caught_up(
    t: &mut Tracer,
    port: u16,
    (rm0, rel0): (u64, u64),
    to: u64,
) -> Result<(u64, u64)> {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        t.check_running()?;
        let (rm, rel, dying, lost) = seen(port)?;
        if rm >= rm0 + 2 * to && rel >= rel0 + 2 * to {
            return Ok((dying, lost));
        }
        if Instant::now() >= deadline {
            bail!(
                "after {to} pod cycles cgtrace saw {} rmdirs and {} releases of {} within {CATCH_UP:?}",
                rm - rm0,
                rel - rel0,
                2 * to
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The bench's cgroups: the parent unique to the run, cgtrace's own memcg in it, and the
/// `kubepods/burstable` the pods are made in.
struct Tree {
    parent: BenchParent,
    own: PathBuf,
    root: PathBuf,
}

/// Makes the bench parent in `mount`, cgtrace's memcg and the pods' parents below it.
fn make_tree(mount: &Path, v2: bool) -> Result<Tree> {
    let parent = BenchParent::create_named(mount, "pods")?;
    let dir = parent.dir.clone();
    if v2 {
        fs::write(dir.join("cgroup.subtree_control"), "+memory")
            .context("enabling memory below the bench parent")?;
    }
    let own = dir.join("cgtrace");
    fs::create_dir(&own).with_context(|| format!("mkdir {}", own.display()))?;
    let root = dir.join("kubepods/burstable");
    for d in [dir.join("kubepods"), root.clone()] {
        pods::make_memcg_parent(&d, v2).with_context(|| format!("mkdir {}", d.display()))?;
    }
    Ok(Tree { parent, own, root })
}

/// Starts `cgtrace attach` (`bin`) on the bench parent inside its own memcg, with its metrics
/// on a free port; returns it, its pid and the port once it attached.
fn start_attach(bin: &Path, tree: &Tree) -> Result<(Tracer, u32, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free port for --metrics")?;
    let args = attach_args(bin, &tree.own, &tree.parent.cgroup_path, port);
    let mut t = Tracer::spawn(
        "`cgtrace attach` (pod churn)",
        Path::new("sh"),
        &args,
        Out::Null,
    )?;
    t.wait_cgtrace_attached()?;
    let pid = t
        .pid()
        .ok_or_else(|| anyhow!("cgtrace attach is not running"))?;
    Ok((t, pid, port))
}

/// The pod cycles after which a figure is read: the warm-up, every 100,000 and the end.
fn stops(cycles: u64) -> Vec<u64> {
    let mut stops: Vec<u64> = vec![WARMUP.min(cycles)];
    stops.extend((1..).map(|k| k * EVERY).take_while(|&c| c < cycles));
    stops.push(cycles);
    stops.dedup();
    stops
}

/// The figure after `to` pod cycles, once cgtrace caught up with them (every rmdir and release
/// seen since the counts `seen0`) and refreshed its metrics once more.
fn read_point(
    t: &mut Tracer,
    (pid, port): (u32, u16),
    seen0: (u64, u64),
    to: u64,
    own_usage: &Path,
    started: Instant,
) -> Result<Point> {
    let (dying, lost) = wait_caught_up(t, port, seen0, to)?;
    // One more refresh of the metrics (the periodic work) before reading.
    thread::sleep(Duration::from_millis(1100));
    let p = Point {
        cycles: to,
        secs: started.elapsed().as_secs_f64(),
        rss: pods::rss(pid).context("cgtrace's RSS")?,
        cgroup: pods::read_u64(own_usage).context("cgtrace's memcg usage")?,
        dying,
        lost,
    };
    eprintln!(
        "xtask bench: pod churn: {} cycles in {:.0} s: RSS {}, memcg {}",
        grouped(p.cycles as f64),
        p.secs,
        mib(p.rss as f64),
        mib(p.cgroup as f64)
    );
    Ok(p)
}

/// Runs `cycles` pod cycles under `cgtrace attach` (`bin`), a figure after the warm-up, every
/// 100,000 and at the end.
pub(super) fn measure(bin: &Path, cycles: u64) -> Result<PodChurn> {
    let mount = memory_mount()?;
    let v2 = pods::is_v2(&mount);
    let mut tree = make_tree(&mount, v2)?;
    let cgroup_file = pods::usage_file(&mount);
    let own_usage = tree.own.join(cgroup_file);
    let (mut t, pid, port) = start_attach(bin, &tree)?;
    let (rm0, rel0, _, _) = seen(port)?;
    let creators = pods::Creators::new(tree.root.clone(), CREATORS, v2);
    let started = Instant::now();
    let mut churn_time = Duration::ZERO;
    let mut points = Vec::new();
    let mut from = 0;
    for to in stops(cycles) {
        if to <= from {
            continue;
        }
        let t0 = Instant::now();
        creators
            .paced(from, to, STEP, |n| {
                wait_rmdirs(port, rm0 + 2 * n).map_err(std::io::Error::other)
            })
            .context("pod churn")?;
        churn_time += t0.elapsed();
        from = to;
        points.push(read_point(
            &mut t,
            (pid, port),
            (rm0, rel0),
            to,
            &own_usage,
            started,
        )?);
    }
    t.stop()?;
    // cgtrace's memcg is empty now; everything goes with the parent.
    tree.parent.remove()?;
    Ok(PodChurn {
        points,
        cgroup_file,
        parent: tree.parent.cgroup_path.clone(),
        rate: creators.done.load(Ordering::Relaxed) as f64 / churn_time.as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(cycles: u64, rss: u64, cgroup: u64) -> Point {
        Point {
            cycles,
            secs: 0.0,
            rss,
            cgroup,
            dying: 0,
            lost: 0,
        }
    }

    #[test]
    fn growth_is_from_the_warm_up_to_the_end() {
        let c = PodChurn {
            points: vec![
                point(20_000, 10 << 20, 20 << 20),
                point(100_000, 11 << 20, 20 << 20),
                point(200_000, 11 << 20, 19 << 20),
            ],
            cgroup_file: "memory.usage_in_bytes",
            parent: "/p".into(),
            rate: 1.0,
        };
        assert_eq!(
            c.growth(),
            Some(((1u64 << 20) as f64, -((1u64 << 20) as f64)))
        );
        let table = super::super::render_table(&c.rows());
        assert!(
            table.contains("| pod churn: RSS growth, 20,000 → 200,000 pod cycles | +1.00 MiB |"),
            "{table}"
        );
        assert!(table.contains("-1.00 MiB"), "{table}");
        assert_eq!(table.matches("| met |").count(), 2, "{table}");
        let s = c.readme_section(&table, "today", "abc");
        assert!(
            s.contains("200,000: RSS 11.0 MiB, memcg 19.0 MiB (0 dying)"),
            "{s}"
        );
    }
}
