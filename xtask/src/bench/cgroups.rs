//! Cgroups: the run's parent directory and the churn loop.
use std::{
    fs, io,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

// ---------------------------------------------------------------------------------------------
// Cgroups: the run's parent directory and the churn loop

/// The memory controller's hierarchy: a v1 `cgroup` mount with `memory` in its options, or else
/// the v2 mount when its root delegates memory to children.
pub(super) fn memory_mount() -> Result<PathBuf> {
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
pub(super) fn remove_tree(dir: &Path) -> io::Result<()> {
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
pub(super) struct BenchParent {
    pub(super) dir: PathBuf,
    /// The parent's path as events show it (relative to the hierarchy root).
    pub(super) cgroup_path: String,
    pub(super) removed: bool,
}

impl BenchParent {
    pub(super) fn create(mount: &Path) -> Result<BenchParent> {
        Self::create_as(mount, format!("cgtrace-bench-{}", std::process::id()))
    }

    /// `cgtrace-bench-<pid>-<what>`: a second parent of the same run.
    pub(super) fn create_named(mount: &Path, what: &str) -> Result<BenchParent> {
        Self::create_as(
            mount,
            format!("cgtrace-bench-{}-{what}", std::process::id()),
        )
    }

    pub(super) fn create_as(mount: &Path, name: String) -> Result<BenchParent> {
        let dir = mount.join(&name);
        fs::create_dir(&dir)
            .with_context(|| format!("creating the bench parent cgroup {}", dir.display()))?;
        Ok(BenchParent {
            dir,
            cgroup_path: format!("/{name}"),
            removed: false,
        })
    }

    pub(super) fn remove(&mut self) -> Result<()> {
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
pub(super) fn sched_times() -> Option<(u64, u64)> {
    let s = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// What one churn run measured.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Churn {
    /// Cycles per second of wall time.
    pub(super) rate: f64,
    /// Cycles per second of the churn thread's own CPU time: what the probes add inside the
    /// mkdir/rmdir system calls, without the noise of waiting for a CPU.
    pub(super) cpu_rate: Option<f64>,
    /// Share of the run the thread spent waiting for a CPU.
    pub(super) waited: Option<f64>,
}

/// The churn: mkdir + rmdir of one child cgroup in a tight loop for `secs`, on this thread.
/// The kernel's count of memory cgroups (live and dying), from `/proc/cgroups`.
pub(super) fn memory_cgroups() -> Option<u64> {
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
pub(super) fn settle_kernel() {
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

pub(super) fn churn(parent: &Path, secs: f64) -> Result<Churn> {
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
