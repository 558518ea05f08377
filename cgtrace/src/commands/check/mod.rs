//! `cgtrace check`: a one-shot health check of memory-cgroup (memcg) bookkeeping.
//!
//! It needs no eBPF, so it runs on old kernels too, and it speaks the
//! node-problem-detector (NPD) custom plugin protocol: the first line of stdout
//! is a message of at most 80 characters and the exit code is 0 (ok), 1 (problem)
//! or 2 (unknown), see [`Status::exit_code`].
//!
//! What it looks at, all read under [`CheckOptions::host_root`]:
//!
//! * `proc/sys/kernel/osrelease`: the kernel release (read from the file, not
//!   `uname`, so fixtures and containers with the host's `/` mounted work);
//! * `proc/cgroups`: the `memory` row's `num_cgroups` counts live *and* dying
//!   (removed but still referenced) memcgs;
//! * the mount table (`/proc/self/mountinfo`, or `<host_root>/proc/1/mountinfo` when
//!   `host_root` is not `/`) to find the v1 memory hierarchy and the v2 hierarchy;
//! * a walk of the memory hierarchy: visible memcgs, kernel-memory (kmem)
//!   accounting evidence and empty kubepods pod directories;
//! * the v2 root's `cgroup.stat` (`nr_dying_descendants`, `nr_dying_subsys_memory`);
//! * `proc/cmdline` (`cgroup.memory=nokmem`) and `var/log/pods`.
//!
//! Dying memcgs are `num_cgroups - visible` on v1. Memcg IDs are 16 bits; kernels
//! before 4.7 keep a dying memcg's ID until it is freed, later ones give it back
//! at removal. RHEL/CentOS 7 kernels before 3.10.0-1075.el7 with kmem accounting
//! active pin dying memcgs forever, which ends with `mkdir ...: no space left on
//! device` for every new pod.

//!
//! The work is split in three: [`gather`] reads the host (the only part that does I/O),
//! [`judge`] turns those facts into a verdict (pure policy), [`render`] writes the report as text
//! or JSON.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

mod gather;
mod judge;
mod render;
#[cfg(test)]
mod tests;

pub use crate::kernel::hierarchy::{Layout, MemoryHierarchy};
pub use render::write_report;
/// Deepest directory level walked below a hierarchy's root.
pub(super) const MAX_WALK_DEPTH: usize = 32;
/// Most directories walked in one hierarchy (IDs cap live memcgs at 65535 anyway).
pub(super) const MAX_WALK_DIRS: u64 = 1_000_000;
/// Most memcgs probed for kmem accounting evidence.
pub(super) const MAX_KMEM_PROBES: u64 = 4096;
/// Longest NPD message, in characters.
pub(super) const MESSAGE_MAX_CHARS: usize = 80;
/// Most empty pod directories listed in a problem sentence or in the text output.
pub(super) const MAX_LISTED_POD_DIRS: usize = 5;

/// Options for [`run_check`].
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The host's `/`: `/` normally, e.g. `/host` in a container that mounts the
    /// host's root there. Every path read is joined under it.
    pub host_root: PathBuf,
    /// Dying memcgs at or above this count are a problem when they hold memcg IDs
    /// or are pinned by kernel-memory charges. Default 1000.
    pub dying_warn: u64,
    /// Free memcg IDs below this count are a problem. Default 10000.
    pub headroom_warn: u64,
    /// Empty pod directories changed more recently than this are ignored: the
    /// kubelet may be creating or removing them right now. Default 2 minutes.
    pub pod_dir_min_age: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            dying_warn: 1000,
            headroom_warn: crate::kernel::memcg_ids::HEADROOM_WARN,
            pod_dir_min_age: Duration::from_secs(120),
        }
    }
}

/// Verdict of a check; see [`Status::exit_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong found.
    Ok,
    /// At least one problem found; see [`CheckReport::problems`].
    Problem,
    /// Nothing useful could be read (no memory controller, no `/proc/cgroups`).
    Unknown,
}

impl Status {
    /// Exit code per the NPD custom plugin protocol: 0 ok, 1 problem, 2 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Problem => 1,
            Status::Unknown => 2,
        }
    }

    /// `"ok"`, `"problem"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Problem => "problem",
            Status::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kernel-memory (kmem) accounting evidence.
#[derive(Debug, Clone, Serialize)]
pub struct KmemReport {
    /// Whether kmem accounting is active; `None` when it could not be told.
    pub active: Option<bool>,
    /// What `active` is based on.
    pub evidence: String,
    /// `cgroup.memory=nokmem` is on the kernel command line.
    pub nokmem_cmdline: bool,
    /// This kernel (before 5.9) does not reparent slab objects when a memcg is
    /// removed, so kmem charges pin dying memcgs.
    pub pins_dying: bool,
}

/// An empty kubepods pod directory whose pod is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmptyPodDir {
    /// Host path of the directory, e.g. `/sys/fs/cgroup/memory/kubepods/burstable/pod<uid>`.
    pub path: String,
    /// The pod UID taken from the directory name (dashes, lower case).
    pub pod_uid: String,
}

/// Everything [`run_check`] found; serializes to the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Verdict.
    pub status: Status,
    /// One line of at most 80 characters, for NPD.
    pub message: String,
    /// Full sentences, with numbers and mitigations, one per problem.
    pub problems: Vec<String>,
    /// Kernel release from `proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// Which cgroup hierarchies are mounted.
    pub layout: Layout,
    /// Where the memory controller lives.
    pub memory_hierarchy: MemoryHierarchy,
    /// Host path of the memory hierarchy's root directory, if any.
    pub memory_mount: Option<String>,
    /// Host path of the v2 hierarchy's root directory, if any.
    pub v2_mount: Option<String>,
    /// `enabled` column of the `memory` row of `/proc/cgroups`.
    pub memory_controller_enabled: Option<bool>,
    /// `num_cgroups` of the `memory` row of `/proc/cgroups` (live and dying; on v2
    /// it counts every cgroup of the v2 hierarchy).
    pub num_cgroups_memory: Option<u64>,
    /// Memcgs visible in the memory hierarchy, its root included.
    pub visible_memcgs: Option<u64>,
    /// Removed memcgs the kernel still holds.
    pub dying_memcgs: Option<u64>,
    /// `nr_dying_descendants` from the v2 root's `cgroup.stat` (counts cgroups).
    pub nr_dying_descendants: Option<u64>,
    /// `nr_dying_subsys_memory` from the v2 root's `cgroup.stat` (kernel 6.12+).
    pub nr_dying_subsys_memory: Option<u64>,
    /// Memcg IDs still free: 65535 minus the memcgs holding one.
    pub id_headroom: Option<u64>,
    /// This kernel (before 4.7) keeps a dying memcg's ID until it is freed.
    pub ids_held_by_dying: bool,
    /// The errno `mkdir` fails with on this kernel when the memcg IDs are used up (`ENOSPC`,
    /// `ENOMEM` or `EBUSY` by kernel era; None when the release is unknown).
    pub id_exhaustion_errno: Option<String>,
    /// Kernel-memory accounting evidence.
    pub kmem: KmemReport,
    /// A 3.10 kernel without the RHEL fix (before 3.10.0-1075.el7).
    pub leaky_3_10: bool,
    /// Empty kubepods pod directories whose pod has no `/var/log/pods` entry.
    pub empty_pod_dirs: Vec<EmptyPodDir>,
    /// Further evidence and caveats, one sentence each.
    pub notes: Vec<String>,
}

/// Why [`run_check`] could not produce a report. Every variant names the path
/// that failed. Callers should report it as [`Status::Unknown`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The host root is missing or not a directory.
    #[error("host root {} is not a usable directory", path.display())]
    HostRoot {
        /// The configured host root.
        path: PathBuf,
        /// Why it is unusable.
        #[source]
        source: io::Error,
    },
    /// A file or directory that exists could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A kernel file had unexpected contents.
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
}

/// Runs the check. Missing files make fields `None` (and, with nothing about
/// memory cgroups readable, the status [`Status::Unknown`]); files that exist
/// but cannot be read or parsed are errors naming the path.
pub fn run_check(opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let facts = gather::gather(opts)?;
    Ok(judge::judge(facts, opts))
}
