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
//! before 4.8 keep a dying memcg's ID until it is freed, later ones give it back
//! at removal. RHEL/CentOS 7 kernels before 3.10.0-1075.el7 with kmem accounting
//! active pin dying memcgs forever, which ends with `mkdir ...: no space left on
//! device` for every new pod.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Number of memcg IDs: they are 16 bits wide and 0 is never handed out.
pub const MEMCG_ID_MAX: u64 = 65_535;

/// RHEL/CentOS 7 kernel build that fixed the dying-memcg leak (3.10.0-1075.el7).
const RHEL7_FIXED_BUILD: u32 = 1075;
/// Deepest directory level walked below a hierarchy's root.
const MAX_WALK_DEPTH: usize = 32;
/// Most directories walked in one hierarchy (IDs cap live memcgs at 65535 anyway).
const MAX_WALK_DIRS: u64 = 1_000_000;
/// Most memcgs probed for kmem accounting evidence.
const MAX_KMEM_PROBES: u64 = 4096;
/// Longest NPD message, in characters.
const MESSAGE_MAX_CHARS: usize = 80;
/// Most empty pod directories listed in a problem sentence or in the text output.
const MAX_LISTED_POD_DIRS: usize = 5;
/// Linux `EIO`: `memory.kmem.slabinfo` of a memcg without kmem accounting.
const EIO: i32 = 5;

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
            headroom_warn: 10_000,
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

/// Which cgroup hierarchies are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// Only v1 hierarchies (e.g. CentOS 7).
    #[serde(rename = "v1")]
    V1,
    /// Only the v2 hierarchy, usually at `/sys/fs/cgroup`.
    #[serde(rename = "v2")]
    V2,
    /// v1 controllers plus v2 (usually at `/sys/fs/cgroup/unified`).
    #[serde(rename = "hybrid")]
    Hybrid,
    /// No cgroup hierarchy found.
    #[serde(rename = "none")]
    Unmounted,
}

impl Layout {
    /// `"v1"`, `"v2"`, `"hybrid"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::V1 => "v1",
            Layout::V2 => "v2",
            Layout::Hybrid => "hybrid",
            Layout::Unmounted => "none",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the memory controller lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemoryHierarchy {
    /// A v1 hierarchy with the `memory` controller.
    #[serde(rename = "v1")]
    V1,
    /// The v2 hierarchy, with `memory` in the root's `cgroup.controllers`.
    #[serde(rename = "v2")]
    V2,
    /// No memory controller found.
    #[serde(rename = "none")]
    Absent,
}

impl MemoryHierarchy {
    /// `"v1"`, `"v2"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryHierarchy::V1 => "v1",
            MemoryHierarchy::V2 => "v2",
            MemoryHierarchy::Absent => "none",
        }
    }
}

impl fmt::Display for MemoryHierarchy {
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
    /// This kernel (before 4.8) keeps a dying memcg's ID until it is freed.
    pub ids_held_by_dying: bool,
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

/// `(major, minor, patch, el_build)` as returned by [`parse_release`].
type ReleaseParts = (u32, u32, u32, Option<u32>);

/// Parses a kernel release such as `3.10.0-957.21.3.el7.x86_64`, `5.4.0-1059-aws`
/// or `6.18.44-fc-v669` into `(major, minor, patch, el_build)`.
///
/// `el_build` is the RHEL-style build number (957 above), present only when the
/// release names an `.el<N>` distribution. A missing patch level reads as 0.
/// Returns `None` without at least `major.minor`.
pub fn parse_release(s: &str) -> Option<(u32, u32, u32, Option<u32>)> {
    let s = s.trim();
    let (version, rest) = match s.find('-') {
        Some(dash) => (&s[..dash], Some(&s[dash + 1..])),
        None => (s, None),
    };
    let mut parts = version.split('.');
    let major = leading_number(parts.next()?)?;
    let minor = leading_number(parts.next()?)?;
    let patch = parts.next().and_then(leading_number).unwrap_or(0);
    let el_build = rest.and_then(|rest| {
        let is_el = rest
            .match_indices(".el")
            .any(|(i, _)| rest[i + 3..].starts_with(|c: char| c.is_ascii_digit()));
        if is_el { leading_number(rest) } else { None }
    });
    Some((major, minor, patch, el_build))
}

/// The decimal number at the start of `s`, if any.
fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Runs the check. Missing files make fields `None` (and, with nothing about
/// memory cgroups readable, the status [`Status::Unknown`]); files that exist
/// but cannot be read or parsed are errors naming the path.
pub fn run_check(opts: &CheckOptions) -> Result<CheckReport, CheckError> {
    let root = if opts.host_root.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        opts.host_root.clone()
    };
    match fs::metadata(&root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(CheckError::HostRoot {
                path: root,
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        Err(source) => return Err(CheckError::HostRoot { path: root, source }),
    }
    let is_host = root == Path::new("/");
    let mut notes = Vec::new();

    // Kernel release and command line.
    let release_path = root.join("proc/sys/kernel/osrelease");
    let kernel_release = read_optional(&release_path)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let release = kernel_release.as_deref().and_then(parse_release);
    match (&kernel_release, release) {
        (None, _) => notes.push(format!(
            "{} not found: kernel-specific checks skipped.",
            release_path.display()
        )),
        (Some(r), None) => notes.push(format!(
            "Kernel release {r:?} not understood: kernel-specific checks skipped."
        )),
        _ => {}
    }
    let nokmem_cmdline =
        read_optional(&root.join("proc/cmdline"))?.is_some_and(|s| cmdline_has_nokmem(&s));

    // Mounts and where the memory controller lives.
    let mounts = discover_mounts(&root, is_host, &mut notes)?;
    let layout = mounts.layout();

    let proc_cgroups_path = root.join("proc/cgroups");
    let memory_row = match read_optional(&proc_cgroups_path)? {
        Some(text) => {
            let row = parse_proc_cgroups(&text, &proc_cgroups_path)?;
            if row.is_none() {
                notes.push(format!(
                    "{} has no memory row: kernel built without memory cgroups.",
                    proc_cgroups_path.display()
                ));
            }
            row
        }
        None => {
            notes.push(format!("{} not found.", proc_cgroups_path.display()));
            None
        }
    };
    let memory_controller_enabled = memory_row.map(|r| r.enabled);
    let num_cgroups_memory = memory_row.map(|r| r.num_cgroups);

    let v2_controllers = match &mounts.v2 {
        Some(m) => read_optional(&under_root(&root, &m.mount_point).join("cgroup.controllers"))?,
        None => None,
    };
    let memory_hierarchy = if mounts.v1_memory.is_some() {
        MemoryHierarchy::V1
    } else if mounts.v2.is_some()
        && match &v2_controllers {
            Some(c) => c.split_whitespace().any(|c| c == "memory"),
            None => memory_row.is_some_and(|r| r.hierarchy == 0 && r.enabled),
        }
    {
        MemoryHierarchy::V2
    } else {
        MemoryHierarchy::Absent
    };
    let memory_disabled = memory_controller_enabled == Some(false);

    // v2 root statistics (also reported in hybrid mode, for evidence).
    let v2_stat = match &mounts.v2 {
        Some(m) => {
            let path = under_root(&root, &m.mount_point).join("cgroup.stat");
            match read_optional(&path)? {
                Some(text) => parse_cgroup_stat(&text, &path)?,
                None => CgroupStat::default(),
            }
        }
        None => CgroupStat::default(),
    };

    // Walk the memory hierarchy.
    let memory_mount_entry = match memory_hierarchy {
        MemoryHierarchy::V1 => mounts.v1_memory.as_ref(),
        MemoryHierarchy::V2 => mounts.v2.as_ref(),
        MemoryHierarchy::Absent => None,
    };
    let memory_mount = memory_mount_entry.map(|m| m.mount_point.clone());
    let walk = match memory_mount_entry {
        Some(m) => {
            if m.root != "/" {
                notes.push(format!(
                    "The memory hierarchy is mounted from its subtree {}: visible memcgs outside it are not counted.",
                    m.root
                ));
            }
            let cfg = WalkConfig {
                hierarchy: memory_hierarchy,
                probe_kmem: memory_hierarchy == MemoryHierarchy::V1
                    && !nokmem_cmdline
                    && !memory_disabled,
                now: SystemTime::now(),
                pod_dir_min_age: opts.pod_dir_min_age,
            };
            let dir = under_root(&root, &m.mount_point);
            let walk = walk_hierarchy(&dir, &m.mount_point, &cfg)?;
            if walk.is_none() {
                notes.push(format!(
                    "Memory hierarchy {} is in the mount table but {} does not exist.",
                    m.mount_point,
                    dir.display()
                ));
            }
            walk
        }
        None => None,
    };
    if let Some(w) = &walk {
        if w.incomplete {
            notes.push(format!(
                "The walk of {} stopped at depth {MAX_WALK_DEPTH} or {MAX_WALK_DIRS} directories: counts are incomplete.",
                memory_mount.as_deref().unwrap_or("?")
            ));
        }
        if let Some(first) = &w.first_error {
            notes.push(format!(
                "{} directories of the memory hierarchy could not be read (first: {first}).",
                w.errors
            ));
        }
    }

    // Visible and dying memcgs.
    let walked_memcgs = walk.as_ref().filter(|w| !w.incomplete).map(|w| w.memcgs);
    let (visible_memcgs, dying_memcgs) = match memory_hierarchy {
        MemoryHierarchy::V1 => {
            let dying = match (num_cgroups_memory, walked_memcgs) {
                (Some(num), Some(visible)) => {
                    if num < visible {
                        notes.push(format!(
                            "/proc/cgroups counts {num} memcgs but {visible} are visible: cgroups changed during the check."
                        ));
                    }
                    Some(num.saturating_sub(visible))
                }
                _ => None,
            };
            (walked_memcgs, dying)
        }
        MemoryHierarchy::V2 => {
            let visible = v2_stat.nr_subsys_memory.or(walked_memcgs);
            let dying = if let Some(d) = v2_stat.nr_dying_subsys_memory {
                Some(d)
            } else if let Some(d) = v2_stat.nr_dying_descendants {
                notes.push(
                    "Dying memcgs are taken from nr_dying_descendants (dying cgroups): an upper bound before kernel 6.12."
                        .to_string(),
                );
                Some(d)
            } else {
                // Before 4.14 there is no cgroup.stat; /proc/cgroups counts every
                // v2 cgroup, live and dying.
                match (num_cgroups_memory, walk.as_ref().filter(|w| !w.incomplete)) {
                    (Some(num), Some(w)) => Some(num.saturating_sub(w.dirs)),
                    _ => None,
                }
            };
            (visible, dying)
        }
        MemoryHierarchy::Absent => (None, None),
    };

    // Memcg ID headroom.
    let ids_held_by_dying = release.is_some_and(|(maj, min, _, _)| (maj, min) < (4, 8));
    let id_users = if ids_held_by_dying {
        match (memory_hierarchy, visible_memcgs, dying_memcgs) {
            (MemoryHierarchy::V1, Some(v), _) => num_cgroups_memory.map(|n| n.max(v)),
            (_, Some(v), Some(d)) => Some(v + d),
            _ => None,
        }
    } else {
        visible_memcgs
    };
    let id_headroom = id_users.map(|u| MEMCG_ID_MAX.saturating_sub(u));
    if id_headroom.is_some() && release.is_some() {
        notes.push(if ids_held_by_dying {
            "This kernel (before 4.8) keeps the memcg ID of a dying memcg until it is freed: headroom counts live and dying memcgs.".to_string()
        } else {
            "This kernel (4.8+) frees a memcg's ID at removal unless swap entries hold it: headroom counts live memcgs.".to_string()
        });
    }

    // Kernel-memory accounting.
    let pins_dying = release.is_some_and(|(maj, min, _, _)| (maj, min) < (5, 9));
    let (kmem_active, kmem_evidence) = if memory_disabled {
        (Some(false), "the memory controller is disabled".to_string())
    } else if nokmem_cmdline {
        (
            Some(false),
            "cgroup.memory=nokmem is on the kernel command line".to_string(),
        )
    } else {
        match memory_hierarchy {
            MemoryHierarchy::V2 => (
                Some(true),
                "cgroup v2 always accounts kernel memory (no cgroup.memory=nokmem)".to_string(),
            ),
            MemoryHierarchy::V1 => kmem_from_probe(walk.as_ref().map(|w| &w.kmem), release),
            MemoryHierarchy::Absent => (None, "no memory hierarchy to probe".to_string()),
        }
    };
    let kmem = KmemReport {
        active: kmem_active,
        evidence: kmem_evidence,
        nokmem_cmdline,
        pins_dying,
    };

    let leaky_3_10 = release.is_some_and(|(maj, min, _, el)| {
        (maj, min) == (3, 10) && el.is_none_or(|b| b < RHEL7_FIXED_BUILD)
    });

    // Empty pod directories whose pod is gone.
    let empty_pod_dirs = match &walk {
        Some(w) if !w.pod_dirs.is_empty() => {
            match pod_log_uids(&root.join("var/log/pods"), &mut notes) {
                Some(uids) => {
                    let mut dirs: Vec<EmptyPodDir> = w
                        .pod_dirs
                        .iter()
                        .filter(|d| !uids.contains(&d.pod_uid))
                        .cloned()
                        .collect();
                    dirs.sort_by(|a, b| a.path.cmp(&b.path));
                    dirs
                }
                None => {
                    notes.push(format!(
                        "{} empty pod directories found but /var/log/pods is unreadable: cannot tell whether their pods are gone.",
                        w.pod_dirs.len()
                    ));
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    if let Some(w) = &walk
        && w.young_pod_dirs > 0
    {
        notes.push(format!(
            "{} empty pod directories changed less than {}s ago were skipped.",
            w.young_pod_dirs,
            opts.pod_dir_min_age.as_secs()
        ));
    }

    let mut report = CheckReport {
        status: Status::Ok,
        message: String::new(),
        problems: Vec::new(),
        kernel_release,
        layout,
        memory_hierarchy,
        memory_mount,
        v2_mount: mounts.v2.as_ref().map(|m| m.mount_point.clone()),
        memory_controller_enabled,
        num_cgroups_memory,
        visible_memcgs,
        dying_memcgs,
        nr_dying_descendants: v2_stat.nr_dying_descendants,
        nr_dying_subsys_memory: v2_stat.nr_dying_subsys_memory,
        id_headroom,
        ids_held_by_dying,
        kmem,
        leaky_3_10,
        empty_pod_dirs,
        notes,
    };
    judge(&mut report, opts, release.and_then(|r| r.3));
    Ok(report)
}

/// Fills in status, problems and message.
fn judge(report: &mut CheckReport, opts: &CheckOptions, el_build: Option<u32>) {
    let have_memcg_info = report.num_cgroups_memory.is_some()
        || report.visible_memcgs.is_some()
        || report.dying_memcgs.is_some();
    if report.memory_controller_enabled == Some(false) || !have_memcg_info {
        let reason = if report.memory_controller_enabled == Some(false) {
            "memory cgroup controller disabled"
        } else {
            "no memory cgroup controller found"
        };
        report.status = Status::Unknown;
        report.message = fit_message(&[
            format!(
                "cgtrace: unknown, {reason} (kernel {})",
                short_release(report.kernel_release.as_deref().unwrap_or("?"))
            ),
            format!("cgtrace: unknown, {reason}"),
        ]);
        return;
    }

    let release = report.kernel_release.clone().unwrap_or_else(|| "?".into());
    let dying = count_or_unknown(report.dying_memcgs);
    let headroom = count_or_unknown(report.id_headroom);
    // (priority, tag): the most urgent tag comes first in the message.
    let mut tags: Vec<(u8, String)> = Vec::new();

    let leak_fires =
        report.leaky_3_10 && !report.kmem.nokmem_cmdline && report.kmem.active != Some(false);
    if leak_fires {
        let why = match el_build {
            Some(b) => format!("a RHEL/CentOS 7 build ({b}) older than 3.10.0-1075.el7"),
            None => "a 3.10 kernel without the RHEL fix (3.10.0-1075.el7)".to_string(),
        };
        let active = match report.kmem.active {
            Some(true) => format!(
                "kernel memory accounting is active ({})",
                report.kmem.evidence
            ),
            _ => format!(
                "kernel memory accounting may be active ({}; assuming it is)",
                report.kmem.evidence
            ),
        };
        report.problems.push(format!(
            "Kernel {release} is {why} and {active}: removed memory cgroups stay pinned as dying memcgs \
             and keep their memcg IDs, so once the 65535 IDs are used up every new pod fails with \
             'mkdir /sys/fs/cgroup/memory/kubepods/...: no space left on device' \
             ({dying} dying memcgs now, memcg ID headroom {headroom}). Mitigations: boot with \
             cgroup.memory=nokmem, use runc built with the nokmem tag and a kubelet built with \
             -tags=nokmem, or upgrade to kernel 3.10.0-1075.el7 or later; then drain and reboot \
             the node to release the leaked IDs."
        ));
        tags.push((0, "kmem leak".into()));
    }

    let kmem_pins = report.kmem.pins_dying && report.kmem.active == Some(true);
    if !leak_fires
        && let Some(d) = report.dying_memcgs
        && d >= opts.dying_warn
        && (report.ids_held_by_dying || kmem_pins)
    {
        let mut why = Vec::new();
        if report.ids_held_by_dying {
            why.push(format!(
                "kernel {release} (before 4.8) keeps each dying memcg's ID until it is freed, \
                 so they use up the 65535 memcg IDs (headroom {headroom})"
            ));
        }
        if kmem_pins {
            why.push(format!(
                "kernel memory accounting is active ({}) and kernels before 5.9 do not reparent \
                 slab objects at removal, so kernel-memory charges pin them, wasting memory and \
                 slowing reclaim",
                report.kmem.evidence
            ));
        }
        report.problems.push(format!(
            "{d} dying memory cgroups (threshold {}): {}. Mitigations: boot with \
             cgroup.memory=nokmem or upgrade to kernel 5.9 or later, reduce cgroup churn \
             (crash-looping pods, frequent jobs), or drain and reboot the node.",
            opts.dying_warn,
            why.join("; and ")
        ));
        let tag = if report.ids_held_by_dying {
            "dying hold IDs"
        } else {
            "kmem pins dying"
        };
        tags.push((2, tag.into()));
    }

    if let Some(h) = report.id_headroom
        && h < opts.headroom_warn
    {
        let basis = if report.ids_held_by_dying {
            "live and dying memcgs both hold IDs on this kernel"
        } else {
            "live memcgs hold IDs"
        };
        report.problems.push(format!(
            "Only {h} of {MEMCG_ID_MAX} memcg IDs are free (threshold {}; {basis}; {} visible, \
             {dying} dying): when none is left, creating a memory cgroup fails with ENOSPC and \
             new pods fail with 'no space left on device'. Mitigations: reduce the number of \
             cgroups or pods on the node, on 3.10 kernels boot with cgroup.memory=nokmem or \
             upgrade to 3.10.0-1075.el7 or later, and drain and reboot the node to free IDs \
             held by dying memcgs.",
            opts.headroom_warn,
            count_or_unknown(report.visible_memcgs),
        ));
        tags.push((1, "low ID headroom".into()));
    }

    if !report.empty_pod_dirs.is_empty() {
        let n = report.empty_pod_dirs.len();
        let mut listed: Vec<&str> = report
            .empty_pod_dirs
            .iter()
            .take(MAX_LISTED_POD_DIRS)
            .map(|d| d.path.as_str())
            .collect();
        if n > MAX_LISTED_POD_DIRS {
            listed.push("...");
        }
        report.problems.push(format!(
            "{n} empty kubepods pod cgroup directories belong to pods that are gone (no \
             /var/log/pods entry for their UID): {}. The kubelet failed to remove them; each \
             leaks a cgroup and a memcg ID. Mitigation: after confirming no pod with that UID \
             runs on the node, remove them with rmdir (children first), and check the kubelet \
             log for 'Failed to delete cgroup paths'.",
            listed.join(", ")
        ));
        tags.push((3, format!("{n} leaked pod cgroups")));
    }

    let counts = format!("{dying} dying memcgs, ID headroom {headroom}");
    if report.problems.is_empty() {
        report.status = Status::Ok;
        report.message = fit_message(&[format!("cgtrace: ok, {counts}")]);
    } else {
        report.status = Status::Problem;
        let kernel = short_release(&release);
        tags.sort_by_key(|(priority, _)| *priority);
        let tags: Vec<String> = tags.into_iter().map(|(_, tag)| tag).collect();
        let all = tags.join(", ");
        let first = tags.first().cloned().unwrap_or_default();
        report.message = fit_message(&[
            format!("cgtrace: {counts} ({all}, kernel {kernel})"),
            format!("cgtrace: {counts} ({all})"),
            format!("cgtrace: {counts} ({first}, kernel {kernel})"),
            format!("cgtrace: {counts} ({first})"),
            format!("cgtrace: {first}, {counts}"),
        ]);
    }
}

/// Decides kmem activity on v1 from the walk's probe and the kernel release.
fn kmem_from_probe(
    probe: Option<&KmemProbe>,
    release: Option<ReleaseParts>,
) -> (Option<bool>, String) {
    if let Some(evidence) = probe.and_then(|p| p.active_evidence.clone()) {
        return (Some(true), evidence);
    }
    if release.is_some_and(|(maj, min, _, _)| (maj, min) >= (4, 6)) {
        return (
            Some(true),
            "kernels 4.6+ account kernel memory in every v1 memcg unless cgroup.memory=nokmem"
                .to_string(),
        );
    }
    match probe {
        Some(p) if p.nonroot_inactive > 0 => (
            Some(false),
            format!(
                "no kernel-memory charges or readable memory.kmem.slabinfo in {} probed memcgs",
                p.probed
            ),
        ),
        Some(p) if p.probed > 0 && p.kmem_files == 0 => (
            Some(false),
            "no memory.kmem.* files: kernel built without kmem accounting".to_string(),
        ),
        _ => (
            None,
            "no memcg to probe for kernel-memory charges".to_string(),
        ),
    }
}

/// `n` as text, or `?` when unknown.
fn count_or_unknown(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_string(), |n| n.to_string())
}

/// The release cut before the first `.` after the first `-`:
/// `3.10.0-957.21.3.el7.x86_64` → `3.10.0-957`.
fn short_release(release: &str) -> &str {
    match release.find('-') {
        Some(dash) => match release[dash..].find('.') {
            Some(dot) => &release[..dash + dot],
            None => release,
        },
        None => release,
    }
}

/// The first candidate that fits in 80 characters, else the last one cut to fit.
/// Control characters become spaces so the message stays one line.
fn fit_message(candidates: &[String]) -> String {
    let clean = |s: &String| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    for c in candidates {
        let c = clean(c);
        if c.chars().count() <= MESSAGE_MAX_CHARS {
            return c;
        }
    }
    let last = candidates.last().map(clean).unwrap_or_default();
    truncate_chars(&last, MESSAGE_MAX_CHARS)
}

/// Cuts `s` to at most `max` characters (not bytes), ending in `...` when cut.
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// Renders a report for humans: the message, then problems, evidence and notes.
pub fn render_text(report: &CheckReport) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    let opt = |n: Option<u64>| count_or_unknown(n);
    let _ = writeln!(out, "{}", report.message);
    for p in &report.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    let _ = writeln!(out, "status: {}", report.status);
    let _ = writeln!(
        out,
        "kernel: {}",
        report.kernel_release.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "cgroup layout: {}; memory hierarchy: {}{}",
        report.layout,
        report.memory_hierarchy,
        report
            .memory_mount
            .as_deref()
            .map(|m| format!(" at {m}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "memcgs: {} in /proc/cgroups, {} visible, {} dying",
        opt(report.num_cgroups_memory),
        opt(report.visible_memcgs),
        opt(report.dying_memcgs)
    );
    if report.v2_mount.is_some() {
        let _ = writeln!(
            out,
            "v2 root cgroup.stat: nr_dying_descendants {}, nr_dying_subsys_memory {}",
            opt(report.nr_dying_descendants),
            opt(report.nr_dying_subsys_memory)
        );
    }
    let _ = writeln!(
        out,
        "memcg ID headroom: {} of {MEMCG_ID_MAX} (IDs held by dying memcgs: {})",
        opt(report.id_headroom),
        yes_no(report.ids_held_by_dying)
    );
    let _ = writeln!(
        out,
        "kmem accounting: {} ({}); nokmem on cmdline: {}; slab pins dying memcgs: {}",
        match report.kmem.active {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "unknown",
        },
        report.kmem.evidence,
        yes_no(report.kmem.nokmem_cmdline),
        yes_no(report.kmem.pins_dying)
    );
    let _ = writeln!(out, "leaky 3.10 kernel: {}", yes_no(report.leaky_3_10));
    for d in &report.empty_pod_dirs {
        let _ = writeln!(out, "empty pod dir: {} (pod {})", d.path, d.pod_uid);
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Reads a file; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CheckError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Joins an absolute host path under the host root.
fn under_root(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Whether the kernel command line disables kmem accounting
/// (`cgroup.memory=nokmem`, possibly among other comma-separated options).
fn cmdline_has_nokmem(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|t| *t != "--")
        .filter_map(|t| t.strip_prefix("cgroup.memory="))
        .any(|v| v.split(',').any(|o| o == "nokmem"))
}

/// The `memory` row of `/proc/cgroups`.
#[derive(Debug, Clone, Copy)]
struct MemoryRow {
    hierarchy: u64,
    num_cgroups: u64,
    enabled: bool,
}

/// Parses `/proc/cgroups`; `Ok(None)` without a `memory` row.
fn parse_proc_cgroups(text: &str, path: &Path) -> Result<Option<MemoryRow>, CheckError> {
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("memory") {
            continue;
        }
        let parse_err = |reason: &str| CheckError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason: format!("{reason} in {line:?}"),
        };
        let mut num = || -> Result<u64, CheckError> {
            fields
                .next()
                .ok_or_else(|| parse_err("too few fields"))?
                .parse()
                .map_err(|_| parse_err("not a number"))
        };
        let hierarchy = num()?;
        let num_cgroups = num()?;
        let enabled = num()? != 0;
        return Ok(Some(MemoryRow {
            hierarchy,
            num_cgroups,
            enabled,
        }));
    }
    Ok(None)
}

/// The parts of a v2 `cgroup.stat` this check uses.
#[derive(Debug, Clone, Copy, Default)]
struct CgroupStat {
    nr_dying_descendants: Option<u64>,
    nr_subsys_memory: Option<u64>,
    nr_dying_subsys_memory: Option<u64>,
}

/// Parses a v2 `cgroup.stat`. Negative values (racy reads) count as 0.
fn parse_cgroup_stat(text: &str, path: &Path) -> Result<CgroupStat, CheckError> {
    let mut stat = CgroupStat::default();
    for (i, line) in text.lines().enumerate() {
        let Some((key, value)) = line.trim().split_once(char::is_whitespace) else {
            continue;
        };
        let slot = match key {
            "nr_dying_descendants" => &mut stat.nr_dying_descendants,
            "nr_subsys_memory" => &mut stat.nr_subsys_memory,
            "nr_dying_subsys_memory" => &mut stat.nr_dying_subsys_memory,
            _ => continue,
        };
        let value: i64 = value.trim().parse().map_err(|_| CheckError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason: format!("not a number in {line:?}"),
        })?;
        *slot = Some(value.max(0).unsigned_abs());
    }
    Ok(stat)
}

/// One line of a mount table.
#[derive(Debug, Clone)]
struct MountEntry {
    /// Root of the mount inside its filesystem (`/` unless a subtree is mounted).
    root: String,
    /// Mount point (a host path).
    mount_point: String,
    fstype: String,
    super_options: String,
}

/// The cgroup mounts that matter.
#[derive(Debug, Default)]
struct Mounts {
    any_v1: bool,
    v1_memory: Option<MountEntry>,
    v2: Option<MountEntry>,
}

impl Mounts {
    fn from_entries(entries: Vec<MountEntry>) -> Self {
        let any_v1 = entries.iter().any(|m| m.fstype == "cgroup");
        // Prefer mounts of the whole hierarchy; among equals the first one.
        let v1_memory = entries
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"))
            .min_by_key(|m| m.root != "/")
            .cloned();
        let v2 = entries
            .iter()
            .filter(|m| m.fstype == "cgroup2")
            .min_by_key(|m| {
                (
                    m.root != "/",
                    m.mount_point != "/sys/fs/cgroup" && m.mount_point != "/sys/fs/cgroup/unified",
                )
            })
            .cloned();
        Self {
            any_v1,
            v1_memory,
            v2,
        }
    }

    fn layout(&self) -> Layout {
        match (self.any_v1, self.v2.is_some()) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, true) => Layout::V2,
            (false, false) => Layout::Unmounted,
        }
    }
}

/// Reads the host's mount table, or guesses the usual layout without one.
fn discover_mounts(
    root: &Path,
    is_host: bool,
    notes: &mut Vec<String>,
) -> Result<Mounts, CheckError> {
    let candidates = if is_host {
        vec![PathBuf::from("/proc/self/mountinfo")]
    } else {
        // The host's mount table is init's: our own would list container paths.
        vec![
            root.join("proc/1/mountinfo"),
            root.join("proc/self/mountinfo"),
        ]
    };
    for path in &candidates {
        if let Some(text) = read_optional(path)? {
            return Ok(Mounts::from_entries(parse_mountinfo(&text, path)?));
        }
    }
    notes.push(format!(
        "No mount table found; guessed the cgroup layout from {}.",
        root.join("sys/fs/cgroup").display()
    ));
    let cg = root.join("sys/fs/cgroup");
    let entry = |mount_point: &str, fstype: &str, super_options: &str| MountEntry {
        root: "/".into(),
        mount_point: mount_point.into(),
        fstype: fstype.into(),
        super_options: super_options.into(),
    };
    let v1_memory = cg
        .join("memory/memory.usage_in_bytes")
        .exists()
        .then(|| entry("/sys/fs/cgroup/memory", "cgroup", "rw,memory"));
    let v2 = if cg.join("cgroup.controllers").exists() {
        Some(entry("/sys/fs/cgroup", "cgroup2", "rw"))
    } else if cg.join("unified/cgroup.controllers").exists() {
        Some(entry("/sys/fs/cgroup/unified", "cgroup2", "rw"))
    } else {
        None
    };
    Ok(Mounts {
        any_v1: v1_memory.is_some(),
        v1_memory,
        v2,
    })
}

/// Parses `/proc/<pid>/mountinfo`:
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
fn parse_mountinfo(text: &str, path: &Path) -> Result<Vec<MountEntry>, CheckError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6);
        let (Some(sep), Some(root), Some(mount_point)) = (separator, fields.get(3), fields.get(4))
        else {
            return Err(CheckError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("malformed mountinfo line {line:?}"),
            });
        };
        let Some(fstype) = fields.get(sep + 1) else {
            return Err(CheckError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!("no filesystem type in {line:?}"),
            });
        };
        entries.push(MountEntry {
            root: unescape_octal(root),
            mount_point: unescape_octal(mount_point),
            fstype: unescape_octal(fstype),
            super_options: fields
                .get(sep + 3)
                .map(|s| unescape_octal(s))
                .unwrap_or_default(),
        });
    }
    Ok(entries)
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = oct
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kernel-memory accounting evidence gathered during the walk (v1 only).
#[derive(Debug, Default)]
struct KmemProbe {
    /// Memcgs probed.
    probed: u64,
    /// Probed memcgs that have `memory.kmem.*` files.
    kmem_files: u64,
    /// Non-root memcgs with no kmem charge and no readable `memory.kmem.slabinfo`.
    nonroot_inactive: u64,
    /// Set at the first proof of active accounting.
    active_evidence: Option<String>,
}

/// Looks for proof of kmem accounting in one memcg: a positive
/// `memory.kmem.usage_in_bytes`, or a readable `memory.kmem.slabinfo` (which
/// fails with EIO where accounting is off). The root memcg's slabinfo is EIO on
/// 3.10 even when accounting is on elsewhere, so only its usage counts.
fn probe_kmem(dir: &Path, display: &str, is_root: bool, probe: &mut KmemProbe) {
    probe.probed += 1;
    let mut zero_usage = false;
    if let Ok(s) = fs::read_to_string(dir.join("memory.kmem.usage_in_bytes")) {
        probe.kmem_files += 1;
        match s.trim().parse::<u64>() {
            Ok(v) if v > 0 => {
                probe.active_evidence =
                    Some(format!("memory.kmem.usage_in_bytes is {v} in {display}"));
                return;
            }
            Ok(_) => zero_usage = true,
            Err(_) => {}
        }
    }
    if is_root {
        return;
    }
    match read_some(&dir.join("memory.kmem.slabinfo")) {
        Ok(()) => {
            probe.active_evidence = Some(format!("memory.kmem.slabinfo is readable in {display}"));
        }
        Err(e) if e.raw_os_error() == Some(EIO) => probe.nonroot_inactive += 1,
        Err(_) if zero_usage => probe.nonroot_inactive += 1,
        Err(_) => {}
    }
}

/// Opens a file and reads a little of it (enough to run a seq_file's show).
fn read_some(path: &Path) -> io::Result<()> {
    let mut buf = [0u8; 256];
    fs::File::open(path)?.read(&mut buf).map(|_| ())
}

/// How to walk a memory hierarchy.
#[derive(Debug)]
struct WalkConfig {
    hierarchy: MemoryHierarchy,
    probe_kmem: bool,
    now: SystemTime,
    pod_dir_min_age: Duration,
}

/// What a walk found.
#[derive(Debug, Default)]
struct WalkResult {
    /// Directories read (cgroups visible), the root included.
    dirs: u64,
    /// Those with a memory controller (all of them on v1).
    memcgs: u64,
    /// The depth or size bound was hit.
    incomplete: bool,
    /// Directories that exist but could not be read.
    errors: u64,
    first_error: Option<String>,
    kmem: KmemProbe,
    /// Empty kubepods pod directories old enough to judge.
    pod_dirs: Vec<EmptyPodDir>,
    /// Empty pod directories skipped as too young.
    young_pod_dirs: u64,
}

impl WalkResult {
    fn note_error(&mut self, display: &str, e: &io::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{display}: {e}"));
        }
    }
}

/// A directory waiting to be walked.
struct WalkItem {
    dir: PathBuf,
    display: String,
    depth: usize,
    is_memcg: bool,
    under_kubepods: bool,
    pod_uid: Option<String>,
}

/// Walks a hierarchy without following symlinks, tolerating directories that
/// vanish meanwhile. `Ok(None)` when `top` itself does not exist.
fn walk_hierarchy(
    top: &Path,
    display_top: &str,
    cfg: &WalkConfig,
) -> Result<Option<WalkResult>, CheckError> {
    let mut res = WalkResult::default();
    let mut stack = vec![WalkItem {
        dir: top.to_path_buf(),
        display: display_top.to_string(),
        depth: 0,
        is_memcg: true,
        under_kubepods: false,
        pod_uid: None,
    }];
    while let Some(item) = stack.pop() {
        let entries = match fs::read_dir(&item.dir) {
            Ok(rd) => rd,
            Err(e) if item.depth == 0 => {
                if e.kind() == io::ErrorKind::NotFound {
                    return Ok(None);
                }
                return Err(CheckError::Read {
                    path: top.to_path_buf(),
                    source: e,
                });
            }
            // Removed since its parent was listed: it is dying now, not visible.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                res.dirs += 1;
                res.memcgs += u64::from(item.is_memcg);
                res.note_error(&item.display, &e);
                continue;
            }
        };
        res.dirs += 1;
        res.memcgs += u64::from(item.is_memcg);

        let children_memcg = item.is_memcg
            && match cfg.hierarchy {
                MemoryHierarchy::V2 => fs::read_to_string(item.dir.join("cgroup.subtree_control"))
                    .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory")),
                _ => true,
            };
        if cfg.probe_kmem
            && item.is_memcg
            && res.kmem.active_evidence.is_none()
            && res.kmem.probed < MAX_KMEM_PROBES
        {
            probe_kmem(&item.dir, &item.display, item.depth == 0, &mut res.kmem);
        }

        let mut child_dirs = 0u64;
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        res.note_error(&item.display, &e);
                    }
                    continue;
                }
            };
            // file_type() does not follow symlinks.
            match entry.file_type() {
                Ok(ft) if ft.is_dir() => {}
                Ok(_) => continue,
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        res.note_error(&item.display, &e);
                    }
                    continue;
                }
            }
            child_dirs += 1;
            let queued = u64::try_from(stack.len()).unwrap_or(u64::MAX);
            if item.depth + 1 > MAX_WALK_DEPTH || res.dirs.saturating_add(queued) >= MAX_WALK_DIRS {
                res.incomplete = true;
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let under_kubepods = item.under_kubepods || name.starts_with("kubepods");
            let pod_uid = if under_kubepods {
                pod_uid_from_name(&name)
            } else {
                None
            };
            stack.push(WalkItem {
                dir: entry.path(),
                display: format!("{}/{name}", item.display.trim_end_matches('/')),
                depth: item.depth + 1,
                is_memcg: children_memcg,
                under_kubepods,
                pod_uid,
            });
        }

        if let Some(pod_uid) = item.pod_uid
            && child_dirs == 0
        {
            // A recent change means the kubelet may be creating or removing it.
            let Ok(mtime) = fs::symlink_metadata(&item.dir).and_then(|m| m.modified()) else {
                continue;
            };
            let age = cfg.now.duration_since(mtime).unwrap_or(Duration::ZERO);
            if age < cfg.pod_dir_min_age {
                res.young_pod_dirs += 1;
            } else {
                res.pod_dirs.push(EmptyPodDir {
                    path: item.display,
                    pod_uid,
                });
            }
        }
    }
    Ok(Some(res))
}

/// The pod UID in a kubepods directory name: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd driver).
fn pod_uid_from_name(name: &str) -> Option<String> {
    let raw = match name.strip_suffix(".slice") {
        Some(stem) => {
            let at = stem.rfind("-pod")?;
            stem[at + 4..].replace('_', "-")
        }
        None => name.strip_prefix("pod")?.to_string(),
    };
    is_pod_uid(&raw).then(|| raw.to_ascii_lowercase())
}

/// A pod UID: a UUID, or 32 hex digits (static pods' config hash).
fn is_pod_uid(s: &str) -> bool {
    (32..=36).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && s.bytes().filter(u8::is_ascii_hexdigit).count() == 32
}

/// UIDs of pods with a `/var/log/pods` entry (`<namespace>_<name>_<uid>`, or
/// `<uid>` with old kubelets); `None` when the directory cannot be listed.
fn pod_log_uids(dir: &Path, notes: &mut Vec<String>) -> Option<HashSet<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            notes.push(format!("Cannot list {}: {e}.", dir.display()));
            return None;
        }
    };
    let mut uids = HashSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(uid) = name.rsplit('_').next()
            && is_pod_uid(uid)
        {
            uids.insert(uid.to_ascii_lowercase());
        }
    }
    Some(uids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NEXT_FIXTURE: AtomicU64 = AtomicU64::new(0);

    /// A fake host root under the temp dir, removed on drop (even on panic).
    struct Fixture {
        root: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let n = NEXT_FIXTURE.fetch_add(1, Ordering::Relaxed);
            let root = std::env::temp_dir()
                .join(format!("cgtrace-check-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Self { root }
        }

        fn write(&self, rel: &str, content: &str) {
            let path = self.root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn mkdir(&self, rel: &str) {
            fs::create_dir_all(self.root.join(rel)).unwrap();
        }

        fn remove(&self, rel: &str) {
            let path = self.root.join(rel);
            if path.is_dir() {
                fs::remove_dir_all(path).unwrap();
            } else {
                fs::remove_file(path).unwrap();
            }
        }

        fn opts(&self) -> CheckOptions {
            CheckOptions {
                host_root: self.root.clone(),
                pod_dir_min_age: Duration::ZERO,
                ..CheckOptions::default()
            }
        }

        fn check(&self) -> CheckReport {
            let report = run_check(&self.opts()).unwrap();
            assert_message_ok(&report);
            report
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn assert_message_ok(report: &CheckReport) {
        assert!(
            report.message.chars().count() <= MESSAGE_MAX_CHARS,
            "message too long: {:?}",
            report.message
        );
        assert!(!report.message.contains('\n'));
        assert!(report.message.starts_with("cgtrace: "));
        let text = render_text(report);
        assert_eq!(text.lines().next(), Some(report.message.as_str()));
        let json = serde_json::to_string(report).unwrap();
        assert!(json.contains(&format!("\"status\":\"{}\"", report.status)));
    }

    const CENTOS7_MOUNTINFO: &str = "\
60 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/centos-root rw,seclabel,attr2,inode64,noquota
18 60 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw,seclabel
19 60 0:3 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,seclabel,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,seclabel,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,seclabel,cpuacct,cpu
900 60 0:29 /kubepods/burstable/pod1/abc /var/lib/docker/overlay2/x/merged/sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,seclabel,memory
33 24 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,seclabel,memory
34 24 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,seclabel,pids
";

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
";

    const V2_MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn proc_cgroups_v1(memory_num: u64) -> String {
        format!(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
             cpuset\t5\t6\t1\ncpu\t3\t80\t1\ncpuacct\t3\t80\t1\n\
             memory\t10\t{memory_num}\t1\ndevices\t8\t80\t1\nfreezer\t4\t6\t1\n\
             net_cls\t2\t6\t1\nblkio\t9\t80\t1\nperf_event\t6\t6\t1\n\
             hugetlb\t7\t6\t1\npids\t11\t80\t1\nnet_prio\t2\t6\t1\n"
        )
    }

    const MEMORY: &str = "sys/fs/cgroup/memory";
    const SERVICES: u64 = 200;
    const PODS: u64 = 20;
    /// root + system.slice + services + kubepods + 2 QoS dirs + pods + one container each.
    const V1_VISIBLE: u64 = 1 + 1 + SERVICES + 1 + 2 + PODS + PODS;

    fn pod_uid(i: u64) -> String {
        format!("{i:08x}-1111-2222-3333-444455556666")
    }

    /// A v1 node: a memory tree of [`V1_VISIBLE`] directories whose pods all have logs.
    fn v1_node(name: &str, release: &str, memory_num: u64, cmdline: &str) -> Fixture {
        let fx = Fixture::new(name);
        fx.write("proc/sys/kernel/osrelease", &format!("{release}\n"));
        fx.write("proc/cmdline", &format!("{cmdline}\n"));
        fx.write("proc/1/mountinfo", CENTOS7_MOUNTINFO);
        fx.write("proc/cgroups", &proc_cgroups_v1(memory_num));
        fx.write(&format!("{MEMORY}/memory.usage_in_bytes"), "123456789\n");
        fx.write(&format!("{MEMORY}/memory.kmem.usage_in_bytes"), "0\n");
        for i in 0..SERVICES {
            fx.mkdir(&format!("{MEMORY}/system.slice/svc{i}.service"));
        }
        for i in 0..PODS {
            let qos = if i % 2 == 0 {
                "burstable"
            } else {
                "besteffort"
            };
            let uid = pod_uid(i);
            fx.mkdir(&format!("{MEMORY}/kubepods/{qos}/pod{uid}/c{i:062x}"));
            fx.mkdir(&format!("var/log/pods/default_web-{i}_{uid}"));
        }
        fx
    }

    const CENTOS_CMDLINE: &str = "BOOT_IMAGE=/vmlinuz-3.10.0-957.21.3.el7.x86_64 root=/dev/mapper/centos-root ro crashkernel=auto rhgb quiet LANG=en_US.UTF-8";

    #[test]
    fn centos7_leaky_kernel_with_kmem_is_a_problem() {
        let fx = v1_node(
            "centos7-leak",
            "3.10.0-957.21.3.el7.x86_64",
            40_000,
            CENTOS_CMDLINE,
        );
        fx.write(
            &format!(
                "{MEMORY}/kubepods/burstable/pod{}/memory.kmem.usage_in_bytes",
                pod_uid(0)
            ),
            "0\n",
        );
        fx.write(
            &format!(
                "{MEMORY}/kubepods/burstable/pod{}/c{:062x}/memory.kmem.usage_in_bytes",
                pod_uid(0),
                0
            ),
            "5492736\n",
        );
        let r = fx.check();
        assert_eq!(r.status, Status::Problem);
        assert_eq!(r.status.exit_code(), 1);
        assert_eq!(r.layout, Layout::V1);
        assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
        assert_eq!(r.memory_mount.as_deref(), Some("/sys/fs/cgroup/memory"));
        assert_eq!(r.num_cgroups_memory, Some(40_000));
        assert_eq!(r.visible_memcgs, Some(V1_VISIBLE));
        assert_eq!(r.dying_memcgs, Some(40_000 - V1_VISIBLE));
        assert!(r.ids_held_by_dying);
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 40_000));
        assert!(r.leaky_3_10);
        assert_eq!(r.kmem.active, Some(true));
        assert!(
            r.kmem.evidence.contains("usage_in_bytes is 5492736"),
            "{}",
            r.kmem.evidence
        );
        assert!(r.kmem.pins_dying);
        assert!(!r.kmem.nokmem_cmdline);
        assert!(r.empty_pod_dirs.is_empty());
        assert!(r.message.contains("kmem"), "{}", r.message);
        assert!(r.message.contains("3.10"), "{}", r.message);
        assert_eq!(
            r.message,
            "cgtrace: 39755 dying memcgs, ID headroom 25535 (kmem leak, kernel 3.10.0-957)"
        );
        assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
        let p = &r.problems[0];
        for needle in [
            "39755",
            "25535",
            "nokmem",
            "1075",
            "no space left on device",
            "reboot",
        ] {
            assert!(p.contains(needle), "{needle} missing in {p}");
        }
    }

    #[test]
    fn readable_slabinfo_proves_kmem() {
        let fx = v1_node(
            "centos7-slabinfo",
            "3.10.0-862.el7.x86_64",
            3000,
            CENTOS_CMDLINE,
        );
        fx.write(
            &format!("{MEMORY}/system.slice/svc7.service/memory.kmem.slabinfo"),
            "slabinfo - version: 2.1\n",
        );
        let r = fx.check();
        assert_eq!(r.kmem.active, Some(true));
        assert!(
            r.kmem.evidence.contains("slabinfo is readable"),
            "{}",
            r.kmem.evidence
        );
        assert!(
            r.kmem
                .evidence
                .contains("/sys/fs/cgroup/memory/system.slice/svc7.service")
        );
        assert!(r.leaky_3_10);
        assert_eq!(r.status, Status::Problem);
    }

    #[test]
    fn leaky_kernel_with_unknown_kmem_is_a_problem() {
        // The mount table names the memory hierarchy but it is not there: no probe possible.
        let fx = v1_node(
            "centos7-unknown-kmem",
            "3.10.0-957.el7.x86_64",
            500,
            CENTOS_CMDLINE,
        );
        fx.remove(MEMORY);
        let r = fx.check();
        assert_eq!(r.kmem.active, None);
        assert_eq!(r.visible_memcgs, None);
        assert_eq!(r.dying_memcgs, None);
        assert_eq!(r.id_headroom, None);
        assert_eq!(r.status, Status::Problem);
        assert!(r.problems[0].contains("may be active"), "{}", r.problems[0]);
        assert!(
            r.notes.iter().any(|n| n.contains("does not exist")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn leaky_kernel_without_kmem_reports_dying_that_hold_ids() {
        let fx = v1_node(
            "centos7-no-kmem",
            "3.10.0-957.el7.x86_64",
            40_000,
            CENTOS_CMDLINE,
        );
        fx.write(
            &format!("{MEMORY}/system.slice/svc3.service/memory.kmem.usage_in_bytes"),
            "0\n",
        );
        let r = fx.check();
        assert_eq!(r.kmem.active, Some(false), "{}", r.kmem.evidence);
        assert!(r.leaky_3_10);
        assert_eq!(r.status, Status::Problem);
        assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
        assert!(r.problems[0].starts_with("39755 dying memory cgroups (threshold 1000)"));
        assert!(r.message.contains("dying hold IDs"), "{}", r.message);
    }

    #[test]
    fn nokmem_on_cmdline_with_few_dying_is_ok() {
        let fx = v1_node(
            "centos7-nokmem",
            "3.10.0-957.21.3.el7.x86_64",
            V1_VISIBLE + 15,
            &format!("{CENTOS_CMDLINE} cgroup.memory=nosocket,nokmem"),
        );
        // Even a positive kmem charge does not matter with nokmem.
        fx.write(
            &format!("{MEMORY}/system.slice/svc1.service/memory.kmem.usage_in_bytes"),
            "4096\n",
        );
        let r = fx.check();
        assert!(r.kmem.nokmem_cmdline);
        assert_eq!(r.kmem.active, Some(false));
        assert!(r.leaky_3_10);
        assert_eq!(r.dying_memcgs, Some(15));
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V1_VISIBLE - 15));
        assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
        assert_eq!(r.status.exit_code(), 0);
        assert_eq!(
            r.message,
            format!(
                "cgtrace: ok, 15 dying memcgs, ID headroom {}",
                MEMCG_ID_MAX - V1_VISIBLE - 15
            )
        );
    }

    #[test]
    fn fixed_rhel7_kernel_is_not_leaky() {
        let fx = v1_node(
            "centos7-fixed",
            "3.10.0-1160.el7.x86_64",
            300,
            CENTOS_CMDLINE,
        );
        fx.write(
            &format!("{MEMORY}/system.slice/svc1.service/memory.kmem.usage_in_bytes"),
            "4096\n",
        );
        let r = fx.check();
        assert!(!r.leaky_3_10);
        assert_eq!(r.kmem.active, Some(true));
        assert!(r.ids_held_by_dying);
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 300));
        assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
    }

    #[test]
    fn modern_hybrid_node_with_few_dying_is_ok() {
        let fx = v1_node("hybrid", "6.8.0-1015-aws", V1_VISIBLE + 10, "ro quiet");
        fx.write("proc/1/mountinfo", HYBRID_MOUNTINFO);
        fx.write("sys/fs/cgroup/unified/cgroup.controllers", "");
        fx.write(
            "sys/fs/cgroup/unified/cgroup.stat",
            "nr_descendants 40\nnr_dying_descendants 3\n",
        );
        let r = fx.check();
        assert_eq!(r.layout, Layout::Hybrid);
        assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
        assert_eq!(r.v2_mount.as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(r.nr_dying_descendants, Some(3));
        assert_eq!(r.nr_dying_subsys_memory, None);
        assert_eq!(r.dying_memcgs, Some(10));
        assert!(!r.ids_held_by_dying);
        assert!(!r.kmem.pins_dying);
        assert_eq!(r.kmem.active, Some(true));
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V1_VISIBLE));
        assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
        assert_eq!(r.status.exit_code(), 0);
    }

    /// A pure v2 node; `stat` is the root's cgroup.stat.
    fn v2_node(name: &str, release: &str, stat: &str) -> Fixture {
        let fx = Fixture::new(name);
        let cg = "sys/fs/cgroup";
        fx.write("proc/sys/kernel/osrelease", release);
        fx.write("proc/cmdline", "ro quiet");
        fx.write("proc/1/mountinfo", V2_MOUNTINFO);
        fx.write(
            "proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1600\t1\nmemory\t0\t1600\t1\n",
        );
        fx.write(
            &format!("{cg}/cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        fx.write(
            &format!("{cg}/cgroup.subtree_control"),
            "cpuset cpu io memory pids\n",
        );
        fx.write(&format!("{cg}/cgroup.stat"), stat);
        fx.write(
            &format!("{cg}/system.slice/cgroup.subtree_control"),
            "memory pids\n",
        );
        for i in 0..10 {
            fx.write(
                &format!("{cg}/system.slice/s{i}.service/cgroup.subtree_control"),
                "",
            );
        }
        // No memory in init.scope's children: they are not memcgs.
        fx.write(&format!("{cg}/init.scope/cgroup.subtree_control"), "");
        fx.mkdir(&format!("{cg}/init.scope/inner"));
        fx.write(
            &format!("{cg}/kubepods.slice/cgroup.subtree_control"),
            "cpu memory\n",
        );
        fx.write(
            &format!("{cg}/kubepods.slice/kubepods-burstable.slice/cgroup.subtree_control"),
            "cpu memory\n",
        );
        let pod = format!(
            "{cg}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            pod_uid(1).replace('-', "_")
        );
        fx.write(&format!("{pod}/cgroup.subtree_control"), "cpu memory\n");
        fx.mkdir(&format!("{pod}/cri-containerd-abc.scope"));
        fx.mkdir(&format!("var/log/pods/kube-system_coredns_{}", pod_uid(1)));
        fx
    }

    /// root, system.slice + 10 services, init.scope, kubepods.slice, burstable, pod, container.
    const V2_MEMCGS: u64 = 1 + 1 + 10 + 1 + 1 + 1 + 1 + 1;

    #[test]
    fn v2_node_uses_cgroup_stat() {
        let fx = v2_node(
            "v2",
            "6.1.0-18-amd64",
            "nr_descendants 18\nnr_dying_descendants 1500\n",
        );
        let r = fx.check();
        assert_eq!(r.layout, Layout::V2);
        assert_eq!(r.memory_hierarchy, MemoryHierarchy::V2);
        assert_eq!(r.visible_memcgs, Some(V2_MEMCGS));
        assert_eq!(r.nr_dying_descendants, Some(1500));
        assert_eq!(r.dying_memcgs, Some(1500));
        assert_eq!(r.num_cgroups_memory, Some(1600));
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V2_MEMCGS));
        assert_eq!(r.kmem.active, Some(true));
        assert!(!r.kmem.pins_dying);
        // Many dying memcgs, but on 6.1 they hold neither IDs nor slab: ok.
        assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
        assert_eq!(
            r.message,
            format!(
                "cgtrace: ok, 1500 dying memcgs, ID headroom {}",
                MEMCG_ID_MAX - V2_MEMCGS
            )
        );
    }

    #[test]
    fn v2_node_prefers_subsys_counts() {
        let fx = v2_node(
            "v2-612",
            "6.12.9-200.fc41.x86_64",
            "nr_descendants 18\nnr_subsys_cpu 17\nnr_subsys_memory 31\nnr_dying_descendants 9\nnr_dying_subsys_cpu 0\nnr_dying_subsys_memory 7\n",
        );
        let r = fx.check();
        assert_eq!(r.visible_memcgs, Some(31));
        assert_eq!(r.dying_memcgs, Some(7));
        assert_eq!(r.nr_dying_subsys_memory, Some(7));
        assert_eq!(r.nr_dying_descendants, Some(9));
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 31));
        assert_eq!(r.status, Status::Ok);
    }

    #[test]
    fn v2_node_before_5_9_with_many_dying_is_a_problem() {
        let fx = v2_node(
            "v2-54",
            "5.4.0-1059-aws",
            "nr_descendants 18\nnr_dying_descendants 1500\n",
        );
        let r = fx.check();
        assert!(r.kmem.pins_dying);
        assert_eq!(r.status, Status::Problem);
        assert!(r.message.contains("kmem pins dying"), "{}", r.message);
        assert!(r.problems[0].contains("1500 dying memory cgroups"));
        assert!(r.problems[0].contains("5.9"));
    }

    #[test]
    fn nothing_readable_is_unknown() {
        let fx = Fixture::new("empty");
        let r = fx.check();
        assert_eq!(r.status, Status::Unknown);
        assert_eq!(r.status.exit_code(), 2);
        assert_eq!(r.layout, Layout::Unmounted);
        assert_eq!(r.memory_hierarchy, MemoryHierarchy::Absent);
        assert!(r.problems.is_empty());
        assert!(r.message.starts_with("cgtrace: unknown"), "{}", r.message);

        // Even a leaky release alone is not enough to judge.
        fx.write("proc/sys/kernel/osrelease", "3.10.0-957.el7.x86_64");
        assert_eq!(fx.check().status, Status::Unknown);
    }

    #[test]
    fn disabled_memory_controller_is_unknown() {
        let fx = v1_node("disabled", "5.4.0-1059-aws", 1, "cgroup_disable=memory");
        fx.write(
            "proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n",
        );
        fx.write("proc/1/mountinfo", "");
        fx.remove(MEMORY);
        let r = fx.check();
        assert_eq!(r.status, Status::Unknown);
        assert!(r.message.contains("disabled"), "{}", r.message);
    }

    #[test]
    fn missing_host_root_is_an_error_naming_it() {
        let fx = Fixture::new("missing-root");
        let missing = fx.root.join("nope");
        let err = run_check(&CheckOptions {
            host_root: missing.clone(),
            ..CheckOptions::default()
        })
        .unwrap_err();
        assert!(matches!(&err, CheckError::HostRoot { path, .. } if *path == missing));
        assert!(err.to_string().contains(&missing.display().to_string()));
    }

    #[test]
    fn malformed_proc_cgroups_is_an_error_naming_it() {
        let fx = v1_node("bad-cgroups", "5.4.0-1059-aws", 1, "");
        fx.write(
            "proc/cgroups",
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t10\tlots\t1\n",
        );
        let err = run_check(&fx.opts()).unwrap_err();
        match &err {
            CheckError::Parse { path, line, .. } => {
                assert_eq!(*path, fx.root.join("proc/cgroups"));
                assert_eq!(*line, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("proc/cgroups:2"), "{err}");

        fx.write("proc/cgroups", &proc_cgroups_v1(300));
        fx.write(
            "proc/1/mountinfo",
            "36 31 0:33 / /sys/fs/cgroup/memory rw\n",
        );
        let err = run_check(&fx.opts()).unwrap_err();
        assert!(
            matches!(&err, CheckError::Parse { path, .. } if path.ends_with("proc/1/mountinfo"))
        );
    }

    #[test]
    fn empty_pod_dirs_of_gone_pods_are_reported() {
        let fx = v1_node("pods", "5.15.0-1034-azure", V1_VISIBLE + 5, "ro");
        let gone_cgroupfs = pod_uid(100);
        let gone_systemd = pod_uid(101);
        let alive_empty = pod_uid(102);
        let gone_busy = pod_uid(103);
        let gone_guaranteed = "0123456789abcdef0123456789abcdef"; // static pod hash
        fx.mkdir(&format!("{MEMORY}/kubepods/burstable/pod{gone_cgroupfs}"));
        fx.mkdir(&format!("{MEMORY}/kubepods/pod{gone_guaranteed}"));
        fx.mkdir(&format!(
            "{MEMORY}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            gone_systemd.replace('-', "_")
        ));
        fx.mkdir(&format!("{MEMORY}/kubepods/besteffort/pod{alive_empty}"));
        fx.mkdir(&format!("var/log/pods/default_starting_{alive_empty}"));
        fx.mkdir(&format!(
            "{MEMORY}/kubepods/burstable/pod{gone_busy}/container"
        ));
        // Not under kubepods: ignored.
        fx.mkdir(&format!("{MEMORY}/system.slice/pod{}", pod_uid(104)));
        let extra = 1 + 1 + 3 + 1 + 2 + 1;

        let r = fx.check();
        assert_eq!(r.visible_memcgs, Some(V1_VISIBLE + extra));
        let found: Vec<(&str, &str)> = r
            .empty_pod_dirs
            .iter()
            .map(|d| (d.path.as_str(), d.pod_uid.as_str()))
            .collect();
        let burstable = format!("/sys/fs/cgroup/memory/kubepods/burstable/pod{gone_cgroupfs}");
        let guaranteed = format!("/sys/fs/cgroup/memory/kubepods/pod{gone_guaranteed}");
        let systemd = format!(
            "/sys/fs/cgroup/memory/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            gone_systemd.replace('-', "_")
        );
        assert_eq!(
            found,
            vec![
                (systemd.as_str(), gone_systemd.as_str()),
                (burstable.as_str(), gone_cgroupfs.as_str()),
                (guaranteed.as_str(), gone_guaranteed),
            ]
        );
        assert_eq!(r.status, Status::Problem);
        assert!(r.message.contains("3 leaked pod cgroups"), "{}", r.message);
        assert!(r.problems[0].contains(&burstable));

        // Freshly changed directories are skipped by default.
        let r = run_check(&CheckOptions {
            host_root: fx.root.clone(),
            ..CheckOptions::default()
        })
        .unwrap();
        assert!(r.empty_pod_dirs.is_empty());
        assert_eq!(r.status, Status::Ok);
        assert!(
            r.notes.iter().any(|n| n.contains("skipped")),
            "{:?}",
            r.notes
        );

        // Without /var/log/pods nothing can be said about them.
        fx.remove("var/log/pods");
        let r = fx.check();
        assert!(r.empty_pod_dirs.is_empty());
        assert_eq!(r.status, Status::Ok);
        assert!(
            r.notes.iter().any(|n| n.contains("/var/log/pods")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn headroom_counts_visible_on_5_x_and_all_on_3_10() {
        let fx = v1_node("headroom-54", "5.4.0-1059-aws", 60_000, "ro");
        let r = fx.check();
        assert!(!r.ids_held_by_dying);
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V1_VISIBLE));
        assert_eq!(r.dying_memcgs, Some(60_000 - V1_VISIBLE));
        // 5.4 has kmem on by default and does not reparent slab: a problem.
        assert_eq!(r.kmem.active, Some(true));
        assert_eq!(r.status, Status::Problem);
        assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
        assert!(r.message.contains("kmem pins dying"), "{}", r.message);

        let fx = v1_node(
            "headroom-310",
            "3.10.0-1160.el7.x86_64",
            60_000,
            CENTOS_CMDLINE,
        );
        let r = fx.check();
        assert!(r.ids_held_by_dying);
        assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 60_000));
        assert_eq!(r.status, Status::Problem);
        assert!(
            r.problems
                .iter()
                .any(|p| p.starts_with("Only 5535 of 65535 memcg IDs are free"))
        );
        assert!(r.message.contains("low ID headroom"), "{}", r.message);
        assert!(r.message.contains("ID headroom 5535"), "{}", r.message);

        // 4.4 also keeps IDs of dying memcgs.
        let fx = v1_node("headroom-44", "4.4.0-210-generic", 60_000, "ro");
        assert_eq!(fx.check().id_headroom, Some(MEMCG_ID_MAX - 60_000));
    }

    #[test]
    fn mountinfo_fallbacks() {
        // proc/self/mountinfo when proc/1 is absent.
        let fx = v1_node("self-mountinfo", "6.8.0-1015-aws", V1_VISIBLE, "ro");
        fx.remove("proc/1");
        fx.write("proc/self/mountinfo", CENTOS7_MOUNTINFO);
        assert_eq!(fx.check().visible_memcgs, Some(V1_VISIBLE));
        // No mount table at all: the usual paths.
        fx.remove("proc/self");
        let r = fx.check();
        assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
        assert_eq!(r.visible_memcgs, Some(V1_VISIBLE));
        assert_eq!(r.dying_memcgs, Some(0));
        assert!(r.notes.iter().any(|n| n.contains("No mount table")));
    }

    #[test]
    fn symlinks_are_not_followed() {
        let fx = v1_node("symlink", "6.8.0-1015-aws", V1_VISIBLE, "ro");
        std::os::unix::fs::symlink(
            fx.root.join(MEMORY).join("system.slice"),
            fx.root.join(MEMORY).join("loop"),
        )
        .unwrap();
        assert_eq!(fx.check().visible_memcgs, Some(V1_VISIBLE));
    }

    #[test]
    fn release_parser_table() {
        let table: &[(&str, Option<ReleaseParts>)] = &[
            ("3.10.0-957.21.3.el7.x86_64", Some((3, 10, 0, Some(957)))),
            ("3.10.0-1160.el7.x86_64", Some((3, 10, 0, Some(1160)))),
            ("3.10.0-1075.el7", Some((3, 10, 0, Some(1075)))),
            (
                "3.10.0-862.el7.centos.plus.x86_64",
                Some((3, 10, 0, Some(862))),
            ),
            ("4.18.0-348.el8.x86_64", Some((4, 18, 0, Some(348)))),
            ("5.14.0-362.8.1.el9_3.x86_64", Some((5, 14, 0, Some(362)))),
            ("5.4.0-1059-aws", Some((5, 4, 0, None))),
            ("6.18.44-fc-v669", Some((6, 18, 44, None))),
            ("3.10.107-1-tlinux2-0052", Some((3, 10, 107, None))),
            ("4.9.0-0.bpo.6-amd64", Some((4, 9, 0, None))),
            ("5.15.0+", Some((5, 15, 0, None))),
            ("6.1", Some((6, 1, 0, None))),
            ("6.12.9-200.fc41.x86_64", Some((6, 12, 9, None))),
            (" 5.10.0-28-cloud-amd64\n", Some((5, 10, 0, None))),
            ("", None),
            ("linux", None),
            ("5", None),
            ("5.x", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_release(input), *want, "{input:?}");
        }
    }

    #[test]
    fn leaky_classification() {
        let leaky = |rel: &str| {
            let fx = v1_node("leaky", rel, V1_VISIBLE, "ro");
            fx.check().leaky_3_10
        };
        assert!(leaky("3.10.0-957.21.3.el7.x86_64"));
        assert!(leaky("3.10.0-1062.18.1.el7.x86_64"));
        assert!(!leaky("3.10.0-1075.el7.x86_64"));
        assert!(!leaky("3.10.0-1160.119.1.el7.x86_64"));
        assert!(leaky("3.10.107-1-tlinux2-0052"));
        assert!(!leaky("4.18.0-348.el8.x86_64"));
        assert!(!leaky("5.4.0-1059-aws"));
    }

    #[test]
    fn helpers() {
        assert_eq!(short_release("3.10.0-957.21.3.el7.x86_64"), "3.10.0-957");
        assert_eq!(short_release("5.4.0-1059-aws"), "5.4.0-1059-aws");
        assert_eq!(short_release("6.1"), "6.1");
        assert!(cmdline_has_nokmem("ro cgroup.memory=nokmem quiet"));
        assert!(cmdline_has_nokmem("cgroup.memory=nosocket,nokmem"));
        assert!(!cmdline_has_nokmem("cgroup.memory=nosocket"));
        assert!(!cmdline_has_nokmem("ro -- cgroup.memory=nokmem"));
        assert_eq!(unescape_octal(r"/mnt/a\040b\\c\134d"), r"/mnt/a b\\c\d");
        assert_eq!(
            pod_uid_from_name("podABCDEF01-1111-2222-3333-444455556666"),
            Some("abcdef01-1111-2222-3333-444455556666".into())
        );
        assert_eq!(
            pod_uid_from_name("kubepods-pod01234567_1111_2222_3333_444455556666.slice"),
            Some("01234567-1111-2222-3333-444455556666".into())
        );
        assert_eq!(pod_uid_from_name("pod123"), None);
        assert_eq!(pod_uid_from_name("kubepods-burstable.slice"), None);
        assert_eq!(Status::Ok.exit_code(), 0);
        assert_eq!(Status::Problem.exit_code(), 1);
        assert_eq!(Status::Unknown.exit_code(), 2);
    }

    #[test]
    fn messages_are_cut_at_char_boundaries() {
        let long = "é".repeat(200);
        let cut = truncate_chars(&long, MESSAGE_MAX_CHARS);
        assert_eq!(cut.chars().count(), MESSAGE_MAX_CHARS);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate_chars("short", MESSAGE_MAX_CHARS), "short");

        // A hostile release (long, multi-byte, newline) still gives one short line.
        let fx = v1_node(
            "unicode",
            &format!("3.10.0-ü{}\nx", "ß".repeat(120)),
            40_000,
            CENTOS_CMDLINE,
        );
        fx.write(
            &format!("{MEMORY}/system.slice/svc1.service/memory.kmem.usage_in_bytes"),
            "1\n",
        );
        for i in 0..3 {
            fx.mkdir(&format!(
                "{MEMORY}/kubepods/burstable/pod{}",
                pod_uid(60 + i)
            ));
        }
        let r = fx.check(); // asserts the length
        assert_eq!(r.status, Status::Problem);
        assert_eq!(r.problems.len(), 2, "{:#?}", r.problems);
    }

    /// Read-only check of this machine's real cgroups.
    #[test]
    fn real_host_read_only() {
        let fresh = fs::read_to_string("/proc/cgroups").ok().and_then(|t| {
            parse_proc_cgroups(&t, Path::new("/proc/cgroups"))
                .ok()
                .flatten()
        });
        let Some(fresh) = fresh.filter(|r| r.enabled) else {
            eprintln!("skipped: no enabled memory controller in /proc/cgroups");
            return;
        };
        let r = run_check(&CheckOptions::default()).unwrap();
        assert_message_ok(&r);
        eprintln!("{}", render_text(&r));
        assert_ne!(r.status, Status::Unknown);
        assert_ne!(r.memory_hierarchy, MemoryHierarchy::Absent);
        assert!(r.dying_memcgs.is_some());
        assert!(r.visible_memcgs.is_some());
        assert!(r.id_headroom.is_some());
        assert!(r.kernel_release.is_some());
        let num = r.num_cgroups_memory.unwrap();
        assert!(
            num.abs_diff(fresh.num_cgroups) <= 50,
            "{num} vs fresh {}",
            fresh.num_cgroups
        );
        if Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists() {
            assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
            assert_eq!(r.memory_mount.as_deref(), Some("/sys/fs/cgroup/memory"));
        }
    }
}
