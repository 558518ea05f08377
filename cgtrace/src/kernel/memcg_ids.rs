//! Memcg IDs: how the running kernel spends its 65,535, the headroom left, and a cheap reading of
//! the kernel's own memcg counters. `check` counts once from them; `live`, `record` and `attach`
//! keep the count current from the events and re-read the counters periodically
//! ([`KernelMemcgs::read`]: one small file, no walk) to correct what the events cannot see
//! (memcgs made before a filter's subtree, lost events).
//!
//! | kernel | a memcg holds an ID | IDs in use |
//! |---|---|---|
//! | before 4.7 | from online until it is freed | live + dying memcgs |
//! | 4.7 and later (73f576c04b94) | from online until offline, longer while swap entries hold it | live memcgs + dying ones held by swap |
use std::{fs, io};

use serde::Serialize;
use thiserror::Error;

use super::{
    MEMCG_ID_MAX,
    counters::{CgroupStat, CounterError, proc_cgroups_row},
    hierarchy::{Hierarchies, V2_HIERARCHY},
};

/// Free memcg IDs below this are low (a warning in `check` and in the `id_headroom` verdict).
pub const HEADROOM_WARN: u64 = 10_000;

/// Memcg IDs in use, the way the kernel spends them: `ids_held_by_dying` (kernels before 4.7)
/// counts every memcg not yet freed, later kernels the live ones and the dying ones whose ID
/// swap entries hold.
pub fn ids_in_use(ids_held_by_dying: bool, live: u64, dying: u64, swap_held: u64) -> u64 {
    if ids_held_by_dying {
        live.saturating_add(dying)
    } else {
        live.saturating_add(swap_held)
    }
}

/// Memcg IDs left of [`MEMCG_ID_MAX`] when `in_use` are taken.
pub fn headroom(in_use: u64) -> u64 {
    MEMCG_ID_MAX.saturating_sub(in_use)
}

#[derive(Debug, Error)]
pub enum MemcgCountError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: CounterError,
    },
    #[error("no memory controller in /proc/cgroups and no cgroup v2 mount with it")]
    NoMemory,
}

/// What the kernel's counters say about memcgs at one moment. Each count is what the kernel
/// itself reports; the caller combines them with what it knows (the dying memcgs it tracks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelMemcgs {
    /// CLOCK_MONOTONIC time of the reading (the events' clock).
    pub ts_ns: u64,
    /// Live memcgs, where the kernel counts them apart (cgroup v2: `nr_subsys_memory` from
    /// 6.12, or every v2 cgroup before; the root counted).
    pub live: Option<u64>,
    /// Every memcg the kernel holds, live and dying (v1: `/proc/cgroups` `num_cgroups`).
    pub all: Option<u64>,
    /// Dying memcgs, where the kernel counts them (v2 `cgroup.stat`).
    pub dying: Option<u64>,
}

impl KernelMemcgs {
    /// The live memcgs: counted by the kernel, or all memcgs less `tracked_dying` (the dying
    /// memcgs the caller knows of, those dying at start among them).
    pub fn live_with(&self, tracked_dying: u64) -> Option<u64> {
        self.live
            .or_else(|| Some(self.all?.saturating_sub(tracked_dying)))
    }

    /// Reads the counters of the hierarchy holding the memory controller (`h`), stamped
    /// `ts_ns`.
    pub fn read(h: &Hierarchies, ts_ns: u64) -> Result<KernelMemcgs, MemcgCountError> {
        let memory = h.memory().ok_or(MemcgCountError::NoMemory)?;
        if memory.id != V2_HIERARCHY {
            let text = read("/proc/cgroups")?;
            let row = proc_cgroups_row(&text, "memory")
                .map_err(|source| MemcgCountError::Parse {
                    path: "/proc/cgroups".into(),
                    source,
                })?
                .ok_or(MemcgCountError::NoMemory)?;
            return Ok(KernelMemcgs {
                ts_ns,
                all: Some(row.num_cgroups),
                ..KernelMemcgs::default()
            });
        }
        let mount = memory.mount.as_ref().ok_or(MemcgCountError::NoMemory)?;
        let path = mount.join("cgroup.stat");
        let shown = path.display().to_string();
        let text = read(&shown)?;
        let stat = CgroupStat::parse(&text).map_err(|source| MemcgCountError::Parse {
            path: shown,
            source,
        })?;
        Ok(Self::from_v2_root(&stat, ts_ns))
    }

    /// The counts in the v2 root's `cgroup.stat`. `nr_subsys_memory` (6.12+) counts the memory
    /// css of the root's descendants; before it every v2 cgroup is taken as a memcg (the memory
    /// controller is enabled down the tree on a node that uses it).
    pub fn from_v2_root(stat: &CgroupStat, ts_ns: u64) -> KernelMemcgs {
        let live = stat.nr_subsys_memory.or(stat.nr_descendants).map(|n| n + 1);
        KernelMemcgs {
            ts_ns,
            live,
            all: None,
            dying: stat.dying_memcgs(),
        }
    }
}

fn read(path: &str) -> Result<String, MemcgCountError> {
    fs::read_to_string(path).map_err(|source| MemcgCountError::Read {
        path: path.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_use_by_era() {
        // Before 4.7 every memcg not yet freed holds its ID.
        assert_eq!(ids_in_use(true, 100, 50, 7), 150);
        // Since 4.7 live ones, and dying ones only while swap holds them.
        assert_eq!(ids_in_use(false, 100, 50, 7), 107);
        assert_eq!(headroom(ids_in_use(false, MEMCG_ID_MAX, 3, 0)), 0);
        assert_eq!(headroom(ids_in_use(true, 65_000, 1_000, 0)), 0);
        assert_eq!(headroom(35), MEMCG_ID_MAX - 35);
    }

    #[test]
    fn live_from_all_and_tracked_dying() {
        let v1 = KernelMemcgs {
            ts_ns: 1,
            all: Some(65_535),
            ..KernelMemcgs::default()
        };
        assert_eq!(v1.live_with(35), Some(65_500));
        assert_eq!(v1.live_with(70_000), Some(0));
        let stat = CgroupStat::parse(
            "nr_descendants 40\nnr_subsys_memory 30\nnr_dying_descendants 5\nnr_dying_subsys_memory 2\n",
        )
        .unwrap();
        let v2 = KernelMemcgs::from_v2_root(&stat, 2);
        assert_eq!((v2.live, v2.dying), (Some(31), Some(2)));
        // The kernel's own live count wins over what the caller tracks.
        assert_eq!(v2.live_with(1_000), Some(31));
        let old = CgroupStat::parse("nr_descendants 12\nnr_dying_descendants 4\n").unwrap();
        let v2 = KernelMemcgs::from_v2_root(&old, 3);
        assert_eq!((v2.live, v2.dying), (Some(13), Some(4)));
    }

    #[test]
    fn reads_this_machines_counters() {
        let Ok(h) = Hierarchies::load() else {
            return;
        };
        if h.memory().is_none() {
            return;
        }
        let k = KernelMemcgs::read(&h, 5).expect("the memory counters of this machine");
        assert_eq!(k.ts_ns, 5);
        assert!(k.live.or(k.all).is_some_and(|n| n >= 1), "{k:?}");
    }
}
