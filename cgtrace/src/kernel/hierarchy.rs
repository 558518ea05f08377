//! The cgroup hierarchies of this node: hierarchy id → controllers and mount point.
//!
//! Cgroup ids are per hierarchy, so every event names its hierarchy; this map turns that id into
//! the controller names an operator knows ("memory", "cpu,cpuacct", "name=systemd", v2's "unified").
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use thiserror::Error;

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
        let mut h = Self::parse(&read(cgroup)?, &read(mountinfo)?);
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
    pub fn parse(cgroup: &str, mountinfo: &str) -> Hierarchies {
        let mounts = parse_mountinfo(mountinfo);
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
                mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup2")
                    .map(|m| m.point.clone())
            } else {
                mounts
                    .iter()
                    .find(|m| {
                        m.fstype == "cgroup"
                            && !controllers.is_empty()
                            && controllers.iter().all(|c| m.options.iter().any(|o| o == c))
                    })
                    .map(|m| m.point.clone())
            };
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

/// One line of mountinfo, the parts we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
    pub options: Vec<String>,
}

/// Parses `/proc/<pid>/mountinfo`: mount point (field 5) and, after the ` - ` separator, the
/// filesystem type and super options.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (Some(fstype), Some(_source), Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        out.push(Mount {
            point: PathBuf::from(unescape_octal(point)),
            fstype: fstype.to_string(),
            options: opts.split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        let h = Hierarchies::parse(CGROUP, MOUNTINFO);
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
        let h = Hierarchies::parse(CGROUP, MOUNTINFO);
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
    fn mountinfo_unescapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert!(
            m.iter()
                .any(|m| m.point == Path::new("/mnt/with space") && m.fstype == "tracefs")
        );
    }
}
