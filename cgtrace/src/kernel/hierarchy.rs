//! The one model of a node's cgroup layout: which cgroup filesystems are mounted where
//! ([`CgroupMounts`], from the mount table), whether that is v1, v2 or hybrid ([`Layout`]),
//! which hierarchy holds the memory controller ([`MemoryHierarchy`]), and hierarchy id →
//! controllers and mount point ([`Hierarchies`]).
//!
//! Cgroup ids are per hierarchy, so every event names its hierarchy; [`Hierarchies`] turns that
//! id into the controller names an operator knows ("memory", "cpu,cpuacct", "name=systemd", v2's
//! "unified").
use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::Serialize;
use thiserror::Error;

use super::mountinfo::{self, Mount, MountinfoError};

/// Hierarchy id of cgroup v2 (the default hierarchy).
pub const V2_HIERARCHY: u32 = 0;

#[derive(Debug, Error)]
pub enum HierarchyError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown controller {name:?}; this node has: {known}")]
    UnknownController { name: String, known: String },
    #[error("no cgroup {path:?} in any mounted hierarchy")]
    NoSubtree { path: String },
    #[error("malformed {}", path.display())]
    Mountinfo {
        path: PathBuf,
        #[source]
        source: MountinfoError,
    },
}

/// Which kinds of cgroup hierarchy are mounted.
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
    /// The layout with (any) v1 hierarchies and the v2 hierarchy mounted or not.
    pub fn of(v1: bool, v2: bool) -> Layout {
        match (v1, v2) {
            (true, true) => Layout::Hybrid,
            (true, false) => Layout::V1,
            (false, true) => Layout::V2,
            (false, false) => Layout::Unmounted,
        }
    }

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

/// The cgroup filesystems of a mount table. Where a hierarchy is mounted more than once (a
/// container's bind mount of a subtree, say), mounts of the whole hierarchy come first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// `cgroup` (v1) mounts, whole-hierarchy mounts first, then in mount-table order.
    pub v1: Vec<Mount>,
    /// The `cgroup2` mount: a whole one at `/sys/fs/cgroup` or `/sys/fs/cgroup/unified` when
    /// there is one, else the first.
    pub v2: Option<Mount>,
}

impl CgroupMounts {
    pub fn from_mounts(mounts: &[Mount]) -> CgroupMounts {
        let mut v1: Vec<Mount> = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup")
            .cloned()
            .collect();
        v1.sort_by_key(|m| !m.is_whole());
        let v2 = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup2")
            .min_by_key(|m| {
                let usual = m.point == Path::new("/sys/fs/cgroup")
                    || m.point == Path::new("/sys/fs/cgroup/unified");
                (!m.is_whole(), !usual)
            })
            .cloned();
        CgroupMounts { v1, v2 }
    }

    /// Parses a mount table's text.
    pub fn parse(mountinfo: &str) -> Result<CgroupMounts, MountinfoError> {
        Ok(Self::from_mounts(&mountinfo::parse(mountinfo)?))
    }

    pub fn layout(&self) -> Layout {
        Layout::of(!self.v1.is_empty(), self.v2.is_some())
    }

    /// The v1 mount of the hierarchy holding every one of `controllers` (not empty).
    pub fn v1_with_all(&self, controllers: &[String]) -> Option<&Mount> {
        if controllers.is_empty() {
            return None;
        }
        self.v1
            .iter()
            .find(|m| controllers.iter().all(|c| m.has_option(c)))
    }

    /// The v1 mount of the hierarchy holding `controller`.
    pub fn v1_with(&self, controller: &str) -> Option<&Mount> {
        self.v1.iter().find(|m| m.has_option(controller))
    }

    /// Where the memory controller lives: a v1 hierarchy when one holds it, else v2 when
    /// `v2_has_memory` (memory is in the v2 root's `cgroup.controllers`).
    pub fn memory_hierarchy(&self, v2_has_memory: bool) -> MemoryHierarchy {
        if self.v1_with("memory").is_some() {
            MemoryHierarchy::V1
        } else if self.v2.is_some() && v2_has_memory {
            MemoryHierarchy::V2
        } else {
            MemoryHierarchy::Absent
        }
    }

    /// The mount of the hierarchy holding memory, as [`Self::memory_hierarchy`] says.
    pub fn memory_mount(&self, v2_has_memory: bool) -> Option<&Mount> {
        match self.memory_hierarchy(v2_has_memory) {
            MemoryHierarchy::V1 => self.v1_with("memory"),
            MemoryHierarchy::V2 => self.v2.as_ref(),
            MemoryHierarchy::Absent => None,
        }
    }
}

/// One mounted hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub id: u32,
    /// Controller names; named v1 hierarchies appear as `name=<name>`; v2 lists the controllers
    /// enabled at its root (possibly none).
    pub controllers: Vec<String>,
    /// Where it is mounted, when it is.
    pub mount: Option<PathBuf>,
}

impl Hierarchy {
    /// Label for output: the controllers joined with ',', "unified" for an empty v2.
    pub fn label(&self) -> String {
        if self.id == V2_HIERARCHY {
            "unified".to_string()
        } else if self.controllers.is_empty() {
            format!("hierarchy-{}", self.id)
        } else {
            self.controllers.join(",")
        }
    }

    pub fn has_controller(&self, name: &str) -> bool {
        self.controllers.iter().any(|c| c == name)
    }
}

/// All hierarchies, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub by_id: BTreeMap<u32, Hierarchy>,
}

impl Hierarchies {
    /// Reads this process's view: `/proc/self/cgroup` and `/proc/self/mountinfo`.
    pub fn load() -> Result<Hierarchies, HierarchyError> {
        Self::load_from(
            Path::new("/proc/self/cgroup"),
            Path::new("/proc/self/mountinfo"),
        )
    }

    /// The host's hierarchies when the host's `/` is mounted at `root` (in a container with
    /// hostPID: the host's init's view, mount points under `root`). `root` = `/`: [`Self::load`].
    pub fn load_host(root: &Path) -> Result<Hierarchies, HierarchyError> {
        if root == Path::new("/") {
            return Self::load();
        }
        let mut h = Self::load_from(&root.join("proc/1/cgroup"), &root.join("proc/1/mountinfo"))?;
        for x in h.by_id.values_mut() {
            if let Some(m) = &x.mount {
                x.mount = Some(root.join(m.strip_prefix("/").unwrap_or(m)));
            }
        }
        Ok(h)
    }

    pub fn load_from(cgroup: &Path, mountinfo: &Path) -> Result<Hierarchies, HierarchyError> {
        let read = |p: &Path| {
            fs::read_to_string(p).map_err(|source| HierarchyError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let mut h = Self::parse(&read(cgroup)?, &read(mountinfo)?).map_err(|source| {
            HierarchyError::Mountinfo {
                path: mountinfo.to_path_buf(),
                source,
            }
        })?;
        // v2 lists its controllers in the root's cgroup.controllers.
        if let Some(v2) = h.by_id.get_mut(&V2_HIERARCHY)
            && let Some(mount) = &v2.mount
            && let Ok(s) = fs::read_to_string(mount.join("cgroup.controllers"))
        {
            v2.controllers = s.split_whitespace().map(str::to_string).collect();
        }
        Ok(h)
    }

    /// Parses the text of `/proc/<pid>/cgroup` and `/proc/<pid>/mountinfo`.
    pub fn parse(cgroup: &str, mountinfo: &str) -> Result<Hierarchies, MountinfoError> {
        Ok(Self::from_mounts(cgroup, &CgroupMounts::parse(mountinfo)?))
    }

    /// The hierarchies listed in the text of `/proc/<pid>/cgroup`, with their mount points.
    pub fn from_mounts(cgroup: &str, mounts: &CgroupMounts) -> Hierarchies {
        let mut by_id = BTreeMap::new();
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrl)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(id) = id.parse::<u32>() else { continue };
            let controllers: Vec<String> = ctrl
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            let mount = if id == V2_HIERARCHY {
                mounts.v2.as_ref()
            } else {
                mounts.v1_with_all(&controllers)
            }
            .map(|m| m.point.clone());
            by_id.insert(
                id,
                Hierarchy {
                    id,
                    controllers,
                    mount,
                },
            );
        }
        Hierarchies { by_id }
    }

    pub fn get(&self, id: u32) -> Option<&Hierarchy> {
        self.by_id.get(&id)
    }

    /// The hierarchy an absolute path lies in (`/sys/fs/cgroup/memory/kubepods/x` → the one
    /// mounted at `/sys/fs/cgroup/memory`): the longest mount point that is the path or a
    /// directory above it.
    pub fn of_path(&self, path: &[u8]) -> Option<u32> {
        use std::os::unix::ffi::OsStrExt;
        self.by_id
            .values()
            .filter_map(|h| {
                let m = h.mount.as_ref()?.as_os_str().as_bytes();
                let m = m.strip_suffix(b"/").unwrap_or(m);
                let inside = path.starts_with(m)
                    && (path.len() == m.len() || path.get(m.len()) == Some(&b'/'));
                (inside && !m.is_empty()).then_some((m.len(), h.id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// An absolute path in hierarchy `id` as the kernel names it there: below the hierarchy's
    /// root (`/sys/fs/cgroup/memory/kubepods/x` → `/kubepods/x`; the mount point itself → `/`).
    /// None when the path is not under that hierarchy's mount.
    pub fn relative_path<'p>(&self, id: u32, path: &'p [u8]) -> Option<&'p [u8]> {
        use std::os::unix::ffi::OsStrExt;
        let m = self.get(id)?.mount.as_ref()?.as_os_str().as_bytes();
        let m = m.strip_suffix(b"/").unwrap_or(m);
        let rest = path.strip_prefix(m)?;
        match rest {
            [] => Some(b"/"),
            [b'/', ..] => Some(rest),
            _ => None,
        }
    }

    /// The inverse of [`Hierarchies::relative_path`]: a path below hierarchy `id`'s root as an
    /// absolute path under its mount point (`/kubepods/x` → `/sys/fs/cgroup/memory/kubepods/x`).
    /// None when the hierarchy has no mount point here.
    pub fn absolute_path(&self, id: u32, rel: &[u8]) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let m = self.get(id)?.mount.as_ref()?.as_os_str().as_bytes();
        let m = m.strip_suffix(b"/").unwrap_or(m);
        let rel = if rel == b"/" { &[][..] } else { rel };
        let mut out = Vec::with_capacity(m.len() + rel.len() + 1);
        out.extend_from_slice(m);
        if !rel.starts_with(b"/") {
            out.push(b'/');
        }
        out.extend_from_slice(rel);
        Some(out)
    }

    /// v1, v2 or hybrid, from the hierarchies with a mount point.
    pub fn layout(&self) -> Layout {
        let v1 = self
            .by_id
            .values()
            .any(|h| h.id != V2_HIERARCHY && h.mount.is_some());
        let v2 = self.get(V2_HIERARCHY).is_some_and(|h| h.mount.is_some());
        Layout::of(v1, v2)
    }

    /// The hierarchy holding the memory controller.
    pub fn memory(&self) -> Option<&Hierarchy> {
        self.with_controller("memory")
    }

    pub fn memory_hierarchy(&self) -> MemoryHierarchy {
        match self.memory() {
            Some(h) if h.id == V2_HIERARCHY => MemoryHierarchy::V2,
            Some(_) => MemoryHierarchy::V1,
            None => MemoryHierarchy::Absent,
        }
    }

    /// The hierarchy that holds `controller`.
    pub fn with_controller(&self, controller: &str) -> Option<&Hierarchy> {
        self.by_id.values().find(|h| h.has_controller(controller))
    }

    /// Hierarchy ids selected by user-given controller names. `unified`, `v2` and `cgroup2` name
    /// the v2 hierarchy; `systemd` also matches `name=systemd`.
    pub fn select(&self, names: &[String]) -> Result<Vec<u32>, HierarchyError> {
        let mut ids = Vec::new();
        for name in names {
            let found: Vec<u32> = self
                .by_id
                .values()
                .filter(|h| match name.as_str() {
                    "unified" | "v2" | "cgroup2" => h.id == V2_HIERARCHY,
                    n => h.has_controller(n) || h.has_controller(&format!("name={n}")),
                })
                .map(|h| h.id)
                .collect();
            if found.is_empty() {
                let known: Vec<String> = self.by_id.values().map(Hierarchy::label).collect();
                return Err(HierarchyError::UnknownController {
                    name: name.clone(),
                    known: known.join(" "),
                });
            }
            ids.extend(found);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Resolves a cgroup path (relative to the hierarchy roots, e.g. `/kubepods`) in every
    /// mounted hierarchy where that directory exists: (hierarchy id, cgroup id, level). On
    /// 64-bit kernels the cgroup id is the directory's inode number.
    pub fn resolve_subtree(&self, path: &str) -> Result<Vec<(u32, u64, u32)>, HierarchyError> {
        use std::os::unix::fs::MetadataExt;
        let rel = path.trim_matches('/');
        let level = rel.split('/').filter(|c| !c.is_empty()).count() as u32;
        let found: Vec<(u32, u64, u32)> = self
            .by_id
            .values()
            .filter_map(|h| {
                let dir = h.mount.as_ref()?.join(rel);
                let md = fs::metadata(&dir).ok().filter(|m| m.is_dir())?;
                Some((h.id, md.ino(), level))
            })
            .collect();
        if found.is_empty() {
            return Err(HierarchyError::NoSubtree {
                path: path.to_string(),
            });
        }
        Ok(found)
    }

    /// Label of a hierarchy id, `hierarchy-<id>` when unknown (e.g. mounted after start).
    pub fn label(&self, id: u32) -> String {
        match self.get(id) {
            Some(h) => h.label(),
            None if id == V2_HIERARCHY => "unified".to_string(),
            None => format!("hierarchy-{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUP: &str = "12:pids:/\n9:memory:/user.slice\n4:cpu,cpuacct:/\n1:name=systemd:/init.scope\n0::/init.scope\n";
    const MOUNTINFO: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 25 0:33 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 22 0:40 / /mnt/with\\040space rw - tracefs nodev rw
";

    #[test]
    fn parses_hybrid_layout() {
        let h = Hierarchies::parse(CGROUP, MOUNTINFO).unwrap();
        assert_eq!(h.by_id.len(), 5);
        assert_eq!(h.label(9), "memory");
        assert_eq!(h.label(4), "cpu,cpuacct");
        assert_eq!(h.label(1), "name=systemd");
        assert_eq!(h.label(0), "unified");
        assert_eq!(h.label(77), "hierarchy-77");
        assert_eq!(
            h.get(9).and_then(|x| x.mount.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            h.get(0).and_then(|x| x.mount.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(h.with_controller("memory").map(|x| x.id), Some(9));
    }

    #[test]
    fn selects_by_controller() {
        let h = Hierarchies::parse(CGROUP, MOUNTINFO).unwrap();
        assert_eq!(h.select(&["memory".into()]).ok(), Some(vec![9]));
        assert_eq!(
            h.select(&["cpu".into(), "v2".into()]).ok(),
            Some(vec![0, 4])
        );
        assert_eq!(h.select(&["systemd".into()]).ok(), Some(vec![1]));
        let err = h.select(&["bogus".into()]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("bogus") && e.contains("memory")));
    }

    #[test]
    fn layouts() {
        let h = Hierarchies::parse(CGROUP, MOUNTINFO).unwrap();
        assert_eq!(h.layout(), Layout::Hybrid);
        assert_eq!(h.memory_hierarchy(), MemoryHierarchy::V1);
        let m = CgroupMounts::parse(MOUNTINFO).unwrap();
        assert_eq!(m.layout(), Layout::Hybrid);
        assert_eq!(m.memory_hierarchy(false), MemoryHierarchy::V1);
        assert_eq!(
            m.memory_mount(false).map(|m| m.point.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );

        let v2 = "30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::parse("0::/init.scope\n", v2).unwrap();
        assert_eq!(h.layout(), Layout::V2);
        let m = CgroupMounts::parse(v2).unwrap();
        assert_eq!(m.layout(), Layout::V2);
        assert_eq!(m.memory_hierarchy(true), MemoryHierarchy::V2);
        assert_eq!(m.memory_hierarchy(false), MemoryHierarchy::Absent);

        let none = CgroupMounts::parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n").unwrap();
        assert_eq!(none.layout(), Layout::Unmounted);
        assert_eq!(Hierarchies::default().layout(), Layout::Unmounted);
        assert_eq!(
            Hierarchies::default().memory_hierarchy(),
            MemoryHierarchy::Absent
        );
    }

    /// A container's bind mount of a subtree listed first does not hide the whole hierarchy.
    #[test]
    fn whole_hierarchy_mounts_win() {
        let text = "\
900 60 0:29 /kubepods/pod1/abc /var/lib/docker/x/sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
901 60 0:26 /kubepods /var/lib/docker/x/sys/fs/cgroup ro - cgroup2 cgroup2 rw
33 24 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 24 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        let h = Hierarchies::parse("9:memory:/\n0::/\n", text).unwrap();
        assert_eq!(
            h.get(9).and_then(|x| x.mount.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            h.get(0).and_then(|x| x.mount.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn malformed_mountinfo_is_an_error() {
        assert!(Hierarchies::parse(CGROUP, "36 31 0:33 / /x rw\n").is_err());
    }

    /// On this machine the two views of the layout agree: the hierarchies this process is in
    /// and the cgroup filesystems of the mount table.
    #[test]
    fn this_machine_views_agree() {
        let (Ok(h), Ok(text)) = (
            Hierarchies::load(),
            fs::read_to_string("/proc/self/mountinfo"),
        ) else {
            return;
        };
        let m = CgroupMounts::parse(&text).unwrap();
        assert_eq!(h.layout(), m.layout());
        let v2_memory = h
            .get(V2_HIERARCHY)
            .is_some_and(|x| x.has_controller("memory"));
        assert_eq!(h.memory_hierarchy(), m.memory_hierarchy(v2_memory));
        assert_eq!(
            h.memory().and_then(|x| x.mount.clone()),
            m.memory_mount(v2_memory).map(|x| x.point.clone())
        );
    }
}
