//! Memcg ID exhaustion, for real: live memcgs made under a test parent until `mkdir` fails.
//!
//! While the fill holds, every memcg creation on the machine fails: it runs only where
//! `CGTRACE_EXHAUST=1` says this is a throwaway VM (`cargo xtask vm-test --exhaust`), never on a
//! shared host, and gives every ID back when dropped (after a panic too).
use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::cgroup::{TestParent, remove_tree};

/// The environment variable that allows a fill (set by the exhaustion VM's init only).
pub const ALLOW_ENV: &str = "CGTRACE_EXHAUST";

/// More memcgs than any kernel has IDs for (16 bits): a fill that reaches this found no limit.
const MAX_FILL: usize = 70_000;

/// Panics unless [`ALLOW_ENV`] is `1`: a fill breaks every other memcg user of the machine.
pub fn require_allowed() {
    if std::env::var(ALLOW_ENV).as_deref() != Ok("1") {
        panic!(
            "refusing to exhaust memcg IDs: it makes every memcg mkdir on this machine fail; \
             this runs only in a VM (`cargo xtask vm-test --exhaust` sets {ALLOW_ENV}=1)"
        );
    }
}

/// The memory controller's `num_cgroups` in `/proc/cgroups`: the cgroups of the hierarchy it is
/// bound to, live and dying (each holding a memcg ID while online). Kernels without v1 memory
/// may leave it out of `/proc/cgroups` (7.3 does): then, on v2 (`v2_root`), the root and its
/// live and dying descendants from the root's `cgroup.stat` (in the VM every v2 cgroup has
/// memory).
pub fn memory_num_cgroups(v2_root: Option<&Path>) -> io::Result<u64> {
    let text = fs::read_to_string("/proc/cgroups")?;
    let listed = text.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first() == Some(&"memory"))
            .then(|| cols.get(2)?.parse().ok())
            .flatten()
    });
    if let Some(n) = listed {
        return Ok(n);
    }
    let Some(root) = v2_root else {
        return Err(io::Error::other("no memory line in /proc/cgroups"));
    };
    let stat = fs::read_to_string(root.join("cgroup.stat"))?;
    let field = |name: &str| -> io::Result<u64> {
        stat.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {name} in cgroup.stat")))
    };
    Ok(1 + field("nr_descendants ")? + field("nr_dying_descendants ")?)
}

/// What filling took.
#[derive(Clone, Copy, Debug)]
pub struct FillResult {
    /// Memcgs made under the parent before `mkdir` failed.
    pub made: usize,
    /// The errno of the first failed `mkdir`.
    pub errno: i32,
    /// `num_cgroups` of the memory controller before the fill (the root and the parent among
    /// them).
    pub before: u64,
    pub elapsed: Duration,
}

impl FillResult {
    /// Memcg IDs in use when `mkdir` failed: this kernel's usable ID count.
    pub fn ids(&self) -> u64 {
        self.before + self.made as u64
    }
}

/// A test parent in the memory hierarchy, filled with live memcgs until the kernel refuses one.
pub struct MemcgFill {
    parent: TestParent,
    mount: PathBuf,
    v2: bool,
    made: usize,
    removed: bool,
}

impl MemcgFill {
    /// Makes the parent in `mount` (on v2, `v2` enables `+memory` for its children). Panics
    /// unless the environment allows a fill.
    pub fn new(mount: &Path, v2: bool) -> io::Result<MemcgFill> {
        require_allowed();
        let parent = TestParent::new("exhaust", &[mount])?;
        if v2 {
            fs::write(parent.dir(mount).join("cgroup.subtree_control"), "+memory")?;
        }
        Ok(MemcgFill {
            parent,
            mount: mount.to_path_buf(),
            v2,
            made: 0,
            removed: false,
        })
    }

    /// The parent's directory.
    pub fn dir(&self) -> PathBuf {
        self.parent.dir(&self.mount)
    }

    /// The parent's path as events show it (`/<name>`).
    pub fn cgroup_path(&self) -> String {
        self.parent.cgroup_path()
    }

    /// Makes memcgs `m0`, `m1`, … until `mkdir` fails; the failure is the result. Errors if no
    /// limit is met or the first failure is not the kernel's (EEXIST).
    pub fn fill(&mut self) -> io::Result<FillResult> {
        let before = memory_num_cgroups(self.v2.then_some(self.mount.as_path()))?;
        let dir = self.dir();
        let started = Instant::now();
        let mut name = String::new();
        while self.made < MAX_FILL {
            use std::fmt::Write as _;
            name.clear();
            let _ = write!(name, "m{}", self.made);
            match fs::create_dir(dir.join(&name)) {
                Ok(()) => self.made += 1,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
                Err(e) => {
                    return Ok(FillResult {
                        made: self.made,
                        errno: e.raw_os_error().unwrap_or(0),
                        before,
                        elapsed: started.elapsed(),
                    });
                }
            }
        }
        Err(io::Error::other(format!(
            "{MAX_FILL} memcgs made without mkdir failing: no memcg ID limit met"
        )))
    }

    /// Removes every memcg of the fill and the parent (giving the IDs back); how long it took.
    pub fn remove_all(&mut self) -> Duration {
        let started = Instant::now();
        if !self.removed {
            self.removed = true;
            remove_tree(&self.dir());
        }
        started.elapsed()
    }
}

impl Drop for MemcgFill {
    fn drop(&mut self) {
        // The parent's own drop would do it too; done here first so the IDs are back as soon as
        // the fill goes, whatever else the test still holds.
        self.remove_all();
    }
}
