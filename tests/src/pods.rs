//! Kubelet-like pod churn for the memory soak test and `cargo xtask bench`'s pod-churn measure:
//! pods of the cgroupfs driver's layout (`<root>/pod<uid>/<64 hex>`, a pod cgroup and one
//! container cgroup) made and removed by a few threads at once, and what a process holds: its
//! RSS and the memory charged to a memory cgroup.
use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    thread,
};

/// The memory cgroup file of a memcg's usage: `memory.current` on v2, `memory.usage_in_bytes`
/// on v1 (`mount` is the memory hierarchy's).
pub fn usage_file(mount: &Path) -> &'static str {
    if is_v2(mount) {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    }
}

/// Whether the memory hierarchy mounted at `mount` is cgroup v2 (children get the controller
/// through `cgroup.subtree_control`).
pub fn is_v2(mount: &Path) -> bool {
    mount.join("cgroup.controllers").exists()
}

/// Makes `dir` and, on v2, hands the memory controller to its children.
pub fn make_memcg_parent(dir: &Path, v2: bool) -> io::Result<()> {
    fs::create_dir(dir)?;
    if v2 {
        fs::write(dir.join("cgroup.subtree_control"), "+memory")?;
    }
    Ok(())
}

/// The pod and container cgroup of pod `n` below `root` (`tag` keeps runs apart: in the UID and
/// the container id).
pub fn pod_paths(root: &Path, tag: u32, n: u64) -> (PathBuf, PathBuf) {
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        tag,
        (n >> 48) & 0xffff,
        (n >> 36) & 0xfff,
        (n >> 24) & 0xfff,
        n & 0xffff_ffff_ffff
    );
    let pod = root.join(format!("pod{uid}"));
    let ctr = pod.join(format!("{n:056x}{tag:08x}"));
    (pod, ctr)
}

/// Threads that make and remove pods below `root` (pod cgroup, container cgroup, then both
/// removed).
pub struct Creators {
    pub root: PathBuf,
    /// Keeps runs apart (in the UIDs and container ids).
    pub tag: u32,
    pub threads: u64,
    /// The memory hierarchy is v2: each pod hands the controller to its container.
    pub v2: bool,
    /// Pods done.
    pub done: AtomicU64,
}

impl Creators {
    pub fn new(root: PathBuf, threads: u64, v2: bool) -> Creators {
        Creators {
            root,
            tag: std::process::id(),
            threads: threads.max(1),
            v2,
            done: AtomicU64::new(0),
        }
    }

    fn one(&self, n: u64) -> io::Result<()> {
        let with_path = |p: &Path, what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        let (pod, ctr) = pod_paths(&self.root, self.tag, n);
        fs::create_dir(&pod).map_err(|e| with_path(&pod, "mkdir", e))?;
        if self.v2 {
            fs::write(pod.join("cgroup.subtree_control"), "+memory")
                .map_err(|e| with_path(&pod, "enabling memory in", e))?;
        }
        fs::create_dir(&ctr).map_err(|e| with_path(&ctr, "mkdir", e))?;
        fs::remove_dir(&ctr).map_err(|e| with_path(&ctr, "rmdir", e))?;
        fs::remove_dir(&pod).map_err(|e| with_path(&pod, "rmdir", e))?;
        self.done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Pods `from..to`, spread over the threads. The first error stops the thread that met it
    /// and is returned, naming the path.
    pub fn run(&self, from: u64, to: u64) -> io::Result<()> {
        let step = self.threads as usize;
        thread::scope(|s| {
            let workers: Vec<_> = (0..self.threads)
                .map(|w| {
                    s.spawn(move || (from + w..to).step_by(step).try_for_each(|n| self.one(n)))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a pod creator panicked")))
                })
                .collect::<io::Result<Vec<()>>>()
                .map(drop)
        })
    }

    /// [`Creators::run`] in stretches of `step` pods, calling `caught_up(pods done)` after each:
    /// a tracer slower than the creators (a debug build, a loaded machine) lets them wait there
    /// instead of losing events.
    pub fn paced(
        &self,
        from: u64,
        to: u64,
        step: u64,
        mut caught_up: impl FnMut(u64) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut at = from;
        while at < to {
            let end = to.min(at + step.max(1));
            self.run(at, end)?;
            caught_up(end)?;
            at = end;
        }
        Ok(())
    }
}

/// `VmRSS` of process `pid`, bytes.
pub fn rss(pid: u32) -> io::Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

/// A number in a cgroup file (`memory.current`, …).
pub fn read_u64(path: &Path) -> io::Result<u64> {
    fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

/// A shell script for `sh -c SCRIPT PROGRAM ARGS…` that moves itself into the cgroup `dir`,
/// then becomes `PROGRAM ARGS…` (same pid): everything that process allocates, BPF maps and
/// rings included, is charged to that cgroup.
pub fn exec_in_cgroup_script(dir: &Path) -> String {
    format!(
        "echo $$ > '{}/cgroup.procs' && exec \"$0\" \"$@\"",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_paths_are_kubelet_like_and_distinct() {
        let root = Path::new("/x/kubepods/burstable");
        let (pod, ctr) = pod_paths(root, 0x1234, 0x0102_0304_0506_0708);
        let name = pod.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let uid = name.strip_prefix("pod").unwrap_or("");
        let groups: Vec<usize> = uid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{uid}");
        assert!(
            uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{uid}"
        );
        let id = ctr.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_ne!(
            pod_paths(Path::new("/r"), 1, 5).0,
            pod_paths(Path::new("/r"), 1, 6).0
        );
    }
}
