//! Gathering: everything `cgtrace check` reads from the host, under the host root. No judgement
//! here beyond what a missing file means; [`super::judge`] decides from the [`Facts`].
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{
    CheckError, CheckOptions, EmptyPodDir, MAX_KMEM_PROBES, MAX_WALK_DEPTH, MAX_WALK_DIRS,
};
use crate::kernel::{
    KernelRelease,
    counters::{CgroupStat, ControllerRow, CounterError, proc_cgroups_row},
    hierarchy::{CgroupMounts, MemoryHierarchy},
    mountinfo::Mount,
};
use crate::model::k8s::{self, PodLogIndex};

/// Linux `EIO`: `memory.kmem.slabinfo` of a memcg without kmem accounting.
const EIO: i32 = 5;

/// What the host said, before any judgement.
#[derive(Debug)]
pub(super) struct Facts {
    /// `proc/sys/kernel/osrelease`, trimmed.
    pub(super) kernel_release: Option<String>,
    pub(super) release: Option<KernelRelease>,
    /// `cgroup.memory=nokmem` on the kernel command line.
    pub(super) nokmem_cmdline: bool,
    pub(super) mounts: CgroupMounts,
    /// The `memory` row of `/proc/cgroups`.
    pub(super) memory_row: Option<ControllerRow>,
    pub(super) memory_hierarchy: MemoryHierarchy,
    /// The mount of the memory hierarchy.
    pub(super) memory_mount: Option<Mount>,
    /// The v2 root's `cgroup.stat` (also read in hybrid mode, for evidence).
    pub(super) v2_stat: CgroupStat,
    /// The walk of the memory hierarchy; `None` when there is none or it does not exist.
    pub(super) walk: Option<WalkResult>,
    /// UIDs with a `/var/log/pods` entry, read only when the walk found empty pod directories;
    /// `Err` with a note when the directory cannot be listed.
    pub(super) pod_log_uids: Option<Result<PodLogIndex, String>>,
    /// Notes made while reading, in order.
    pub(super) notes: Vec<String>,
}

/// Reads everything. Missing files leave fields empty; files that exist but cannot be read or
/// parsed are errors naming the path.
pub(super) fn gather(opts: &CheckOptions) -> Result<Facts, CheckError> {
    let root = host_root(opts)?;
    let mut notes = Vec::new();
    let (kernel_release, release) = read_release(&root, &mut notes)?;
    let nokmem_cmdline =
        read_optional(&root.join("proc/cmdline"))?.is_some_and(|s| cmdline_has_nokmem(&s));
    let mounts = discover_mounts(&root, &mut notes)?;
    let memory_row = read_memory_row(&root, &mut notes)?;
    let v2_has_memory = match &mounts.v2 {
        Some(m) => match read_optional(&under_root(&root, &m.point).join("cgroup.controllers"))? {
            Some(c) => c.split_whitespace().any(|c| c == "memory"),
            None => memory_row.is_some_and(|r| r.hierarchy == 0 && r.enabled),
        },
        None => false,
    };
    let memory_hierarchy = mounts.memory_hierarchy(v2_has_memory);
    let memory_mount = mounts.memory_mount(v2_has_memory).cloned();
    let v2_stat = match &mounts.v2 {
        Some(m) => read_cgroup_stat(&under_root(&root, &m.point).join("cgroup.stat"))?,
        None => CgroupStat::default(),
    };
    let memory_disabled = memory_row.is_some_and(|r| !r.enabled);
    let walk = match &memory_mount {
        Some(m) => {
            let cfg = WalkConfig {
                hierarchy: memory_hierarchy,
                probe_kmem: memory_hierarchy == MemoryHierarchy::V1
                    && !nokmem_cmdline
                    && !memory_disabled,
                now: SystemTime::now(),
                pod_dir_min_age: opts.pod_dir_min_age,
            };
            walk_memory(&root, m, &cfg, &mut notes)?
        }
        None => None,
    };
    let pod_log_uids = walk
        .as_ref()
        .filter(|w| !w.pod_dirs.is_empty())
        .map(|_| pod_log_uids(&root.join("var/log/pods")));
    Ok(Facts {
        kernel_release,
        release,
        nokmem_cmdline,
        mounts,
        memory_row,
        memory_hierarchy,
        memory_mount,
        v2_stat,
        walk,
        pod_log_uids,
        notes,
    })
}

/// The host root, checked to be a directory (`/` when empty).
fn host_root(opts: &CheckOptions) -> Result<PathBuf, CheckError> {
    let root = if opts.host_root.as_os_str().is_empty() {
        PathBuf::from("/")
    } else {
        opts.host_root.clone()
    };
    match fs::metadata(&root) {
        Ok(meta) if meta.is_dir() => Ok(root),
        Ok(_) => Err(CheckError::HostRoot {
            path: root,
            source: io::Error::from(io::ErrorKind::NotADirectory),
        }),
        Err(source) => Err(CheckError::HostRoot { path: root, source }),
    }
}

/// The kernel release, raw and parsed.
fn read_release(
    root: &Path,
    notes: &mut Vec<String>,
) -> Result<(Option<String>, Option<KernelRelease>), CheckError> {
    let path = root.join("proc/sys/kernel/osrelease");
    let raw = read_optional(&path)?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let release = raw.as_deref().and_then(KernelRelease::parse);
    match (&raw, release) {
        (None, _) => notes.push(format!(
            "{} not found: kernel-specific checks skipped.",
            path.display()
        )),
        (Some(r), None) => notes.push(format!(
            "Kernel release {r:?} not understood: kernel-specific checks skipped."
        )),
        _ => {}
    }
    Ok((raw, release))
}

/// The `memory` row of `proc/cgroups`.
fn read_memory_row(
    root: &Path,
    notes: &mut Vec<String>,
) -> Result<Option<ControllerRow>, CheckError> {
    let path = root.join("proc/cgroups");
    let Some(text) = read_optional(&path)? else {
        notes.push(format!("{} not found.", path.display()));
        return Ok(None);
    };
    let row = proc_cgroups_row(&text, "memory").map_err(|e| parse_error(&path, e))?;
    if row.is_none() {
        notes.push(format!(
            "{} has no memory row: kernel built without memory cgroups.",
            path.display()
        ));
    }
    Ok(row)
}

fn read_cgroup_stat(path: &Path) -> Result<CgroupStat, CheckError> {
    match read_optional(path)? {
        Some(text) => CgroupStat::parse(&text).map_err(|e| parse_error(path, e)),
        None => Ok(CgroupStat::default()),
    }
}

fn parse_error(path: &Path, e: CounterError) -> CheckError {
    CheckError::Parse {
        path: path.to_path_buf(),
        line: e.line,
        reason: e.reason,
    }
}

/// Walks the memory hierarchy mounted at `m`, with notes on what limits the counts.
fn walk_memory(
    root: &Path,
    m: &Mount,
    cfg: &WalkConfig,
    notes: &mut Vec<String>,
) -> Result<Option<WalkResult>, CheckError> {
    let point = m.point.display().to_string();
    if !m.is_whole() {
        notes.push(format!(
            "The memory hierarchy is mounted from its subtree {}: visible memcgs outside it are not counted.",
            m.root.display()
        ));
    }
    let dir = under_root(root, &m.point);
    let walk = walk_hierarchy(&dir, &point, cfg)?;
    let Some(w) = &walk else {
        notes.push(format!(
            "Memory hierarchy {point} is in the mount table but {} does not exist.",
            dir.display()
        ));
        return Ok(None);
    };
    if w.incomplete {
        notes.push(format!(
            "The walk of {point} stopped at depth {MAX_WALK_DEPTH} or {MAX_WALK_DIRS} directories: counts are incomplete."
        ));
    }
    if let Some(first) = &w.first_error {
        notes.push(format!(
            "{} directories of the memory hierarchy could not be read (first: {first}).",
            w.errors
        ));
    }
    Ok(walk)
}

/// Reads the host's mount table, or guesses the usual layout without one.
fn discover_mounts(root: &Path, notes: &mut Vec<String>) -> Result<CgroupMounts, CheckError> {
    let candidates = if root == Path::new("/") {
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
            return CgroupMounts::parse(&text).map_err(|e| CheckError::Parse {
                path: path.clone(),
                line: e.line,
                reason: format!("{} in {:?}", e.reason, e.text),
            });
        }
    }
    notes.push(format!(
        "No mount table found; guessed the cgroup layout from {}.",
        root.join("sys/fs/cgroup").display()
    ));
    Ok(guess_mounts(&root.join("sys/fs/cgroup")))
}

/// The usual mount points, where their files exist under `cg` (the host's `/sys/fs/cgroup`).
fn guess_mounts(cg: &Path) -> CgroupMounts {
    let mount = |point: &str, fstype: &str, options: &[&str]| Mount {
        root: PathBuf::from("/"),
        point: PathBuf::from(point),
        fstype: fstype.into(),
        source: fstype.into(),
        super_options: options.iter().map(|o| o.to_string()).collect(),
    };
    let v1 = if cg.join("memory/memory.usage_in_bytes").exists() {
        vec![mount("/sys/fs/cgroup/memory", "cgroup", &["rw", "memory"])]
    } else {
        Vec::new()
    };
    let v2 = if cg.join("cgroup.controllers").exists() {
        Some(mount("/sys/fs/cgroup", "cgroup2", &["rw"]))
    } else if cg.join("unified/cgroup.controllers").exists() {
        Some(mount("/sys/fs/cgroup/unified", "cgroup2", &["rw"]))
    } else {
        None
    };
    CgroupMounts { v1, v2 }
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
fn under_root(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap_or(abs))
}

/// Whether the kernel command line disables kmem accounting
/// (`cgroup.memory=nokmem`, possibly among other comma-separated options).
pub(super) fn cmdline_has_nokmem(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|t| *t != "--")
        .filter_map(|t| t.strip_prefix("cgroup.memory="))
        .any(|v| v.split(',').any(|o| o == "nokmem"))
}

/// Kernel-memory accounting evidence gathered during the walk (v1 only).
#[derive(Debug, Default)]
pub(super) struct KmemProbe {
    /// Memcgs probed.
    pub(super) probed: u64,
    /// Probed memcgs that have `memory.kmem.*` files.
    pub(super) kmem_files: u64,
    /// Non-root memcgs with no kmem charge and no readable `memory.kmem.slabinfo`.
    pub(super) nonroot_inactive: u64,
    /// Set at the first proof of active accounting.
    pub(super) active_evidence: Option<String>,
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
pub(super) struct WalkResult {
    /// Directories read (cgroups visible), the root included.
    pub(super) dirs: u64,
    /// Those with a memory controller (all of them on v1).
    pub(super) memcgs: u64,
    /// The depth or size bound was hit.
    pub(super) incomplete: bool,
    /// Directories that exist but could not be read.
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) kmem: KmemProbe,
    /// Empty kubepods pod directories old enough to judge.
    pub(super) pod_dirs: Vec<EmptyPodDir>,
    /// Empty pod directories skipped as too young.
    pub(super) young_pod_dirs: u64,
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
    /// The pod's UID when this is a pod's own cgroup.
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

        visit_dir(item, entries, cfg, &mut res, &mut stack);
    }
    Ok(Some(res))
}

/// One directory of the walk, listed: counts its memcg evidence, queues its subdirectories and
/// records it when it is an empty pod directory.
fn visit_dir(
    item: WalkItem,
    entries: fs::ReadDir,
    cfg: &WalkConfig,
    res: &mut WalkResult,
    stack: &mut Vec<WalkItem>,
) {
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

    let child_dirs = queue_children(&item, entries, children_memcg, res, stack);
    if child_dirs == 0 {
        note_empty_pod_dir(item, cfg, res);
    }
}

/// Queues the subdirectories of `item` (symlinks not followed) within the walk's bounds;
/// returns how many it has.
fn queue_children(
    item: &WalkItem,
    entries: fs::ReadDir,
    children_memcg: bool,
    res: &mut WalkResult,
    stack: &mut Vec<WalkItem>,
) -> u64 {
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
        let display = format!("{}/{name}", item.display.trim_end_matches('/'));
        stack.push(WalkItem {
            dir: entry.path(),
            pod_uid: k8s::pod_cgroup_uid(display.as_bytes()),
            display,
            depth: item.depth + 1,
            is_memcg: children_memcg,
        });
    }
    child_dirs
}

/// Records `item` when it is a pod directory (without children) old enough to judge.
fn note_empty_pod_dir(item: WalkItem, cfg: &WalkConfig, res: &mut WalkResult) {
    if let Some(pod_uid) = item.pod_uid {
        // A recent change means the kubelet may be creating or removing it.
        let Ok(mtime) = fs::symlink_metadata(&item.dir).and_then(|m| m.modified()) else {
            return;
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

/// The UIDs of pods with a `/var/log/pods` entry ([`PodLogIndex`]); `Err` with a note when the
/// directory cannot be listed.
fn pod_log_uids(dir: &Path) -> Result<PodLogIndex, String> {
    PodLogIndex::read(dir).map_err(|e| format!("Cannot list {}: {e}.", dir.display()))
}
