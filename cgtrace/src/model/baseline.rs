//! The state before start: every cgroup that exists (walking the memory hierarchy and the v2
//! tree) and how many dying memcgs the kernel already holds.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::kernel::{
    counters::{CgroupStat, proc_cgroups_row},
    hierarchy::{Hierarchies, V2_HIERARCHY},
};

/// One cgroup that existed at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaselineCgroup {
    pub hierarchy_id: u32,
    pub cgroup_id: u64,
    pub level: u32,
    /// Relative to the hierarchy root, `/` for the root.
    pub path: Vec<u8>,
}

/// The start-up state a tracker begins from (recorded in sessions so a replay starts the same).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Baseline {
    pub cgroups: Vec<BaselineCgroup>,
    /// Dying memcgs the kernel held at start, per hierarchy (the one holding memory).
    pub dying_before_start: Vec<(u32, u64)>,
    /// CLOCK_MONOTONIC time of the walk.
    pub taken_at_ns: u64,
}

impl Baseline {
    pub fn dying_before_start_total(&self) -> u64 {
        self.dying_before_start.iter().map(|(_, n)| n).sum()
    }
}

/// Walks `root` (a hierarchy mount) depth-first, pre-order, without following symlinks;
/// bounded depth. Children's inode numbers (= cgroup ids) come from the directory entries.
///
/// kernfs counts a directory's subdirectories in its link count, so a cgroup whose link count
/// is 2 has no children: one `lstat` replaces listing its ~30 control files (on a node of pods,
/// most cgroups are leaves; this is most of the start-up walk's time).
fn walk(hierarchy_id: u32, root: &Path, out: &mut Vec<BaselineCgroup>) -> u64 {
    use std::os::unix::fs::DirEntryExt;
    const MAX_LEVEL: u32 = 64;
    let Ok(md) = fs::symlink_metadata(root) else {
        return 0;
    };
    let mut count = 0;
    let mut stack: Vec<(PathBuf, Vec<u8>, u32, u64)> =
        vec![(root.to_path_buf(), b"/".to_vec(), 0, md.ino())];
    while let Some((dir, rel, level, ino)) = stack.pop() {
        count += 1;
        let listed = if level < MAX_LEVEL {
            fs::read_dir(&dir).ok()
        } else {
            None
        };
        out.push(BaselineCgroup {
            hierarchy_id,
            cgroup_id: ino,
            level,
            path: rel,
        });
        let Some(rd) = listed else { continue };
        let rel_at = out.len() - 1;
        // Cgroups vanish while we walk: what is gone is skipped.
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let parent = &out[rel_at].path;
            let mut child = if parent == b"/" {
                Vec::new()
            } else {
                parent.clone()
            };
            child.push(b'/');
            child.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(
                e.file_name().as_os_str(),
            ));
            let path = e.path();
            let leaf = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.nlink() == 2);
            if leaf {
                count += 1;
                out.push(BaselineCgroup {
                    hierarchy_id,
                    cgroup_id: e.ino(),
                    level: level + 1,
                    path: child,
                });
            } else {
                stack.push((path, child, level + 1, e.ino()));
            }
        }
    }
    count
}

/// Takes the baseline: walks the memory hierarchy (v1) and the v2 tree, and counts the dying
/// memcgs the kernel holds (v1: `/proc/cgroups` minus visible memcg directories; v2:
/// `nr_dying_subsys_memory`, else `nr_dying_descendants`).
pub fn take(h: &Hierarchies, now_ns: u64) -> Baseline {
    let mut b = Baseline {
        taken_at_ns: now_ns,
        ..Baseline::default()
    };
    let mem = h.memory();
    let mut visible_memcgs = None;
    if let Some(m) = mem.filter(|m| m.id != V2_HIERARCHY)
        && let Some(mount) = &m.mount
    {
        visible_memcgs = Some(walk(m.id, mount, &mut b.cgroups));
    }
    if let Some(v2) = h.get(V2_HIERARCHY)
        && let Some(mount) = &v2.mount
    {
        walk(V2_HIERARCHY, mount, &mut b.cgroups);
        if mem.is_some_and(|m| m.id == V2_HIERARCHY)
            && let Ok(stat) = fs::read_to_string(mount.join("cgroup.stat"))
            && let Some(d) = CgroupStat::parse(&stat).ok().and_then(|s| s.dying_memcgs())
        {
            b.dying_before_start.push((V2_HIERARCHY, d));
        }
    }
    if let (Some(m), Some(visible)) = (mem, visible_memcgs)
        && let Some(n) = fs::read_to_string("/proc/cgroups")
            .ok()
            .and_then(|t| proc_cgroups_row(&t, "memory").ok().flatten())
            .map(|r| r.num_cgroups)
    {
        b.dying_before_start.push((m.id, n.saturating_sub(visible)));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_this_machine() {
        let h = Hierarchies::load().expect("hierarchies");
        let b = take(&h, 0);
        if let Some(m) = h.with_controller("memory").filter(|m| m.mount.is_some()) {
            assert!(
                b.cgroups
                    .iter()
                    .any(|c| c.hierarchy_id == m.id && c.path == b"/" && c.level == 0)
            );
            assert!(b.dying_before_start.iter().any(|(id, _)| *id == m.id));
        }
    }
}
