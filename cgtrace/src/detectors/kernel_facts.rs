//! What the detectors need to know about the running kernel: its version and the thresholds
//! (4.8, 5.9) at which memcg IDs and slab charges changed.
//!
//! Kept in this one small file until the kernel-release type in `crate::kernel` takes these
//! predicates over.
use serde::Serialize;

pub use crate::commands::check::MEMCG_ID_MAX;

/// What the detectors need to know about the running kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelFacts {
    /// The release string (`uname -r`).
    pub release: String,
    /// (major, minor), e.g. `(6, 18)`; `None` when the release could not be parsed. An unknown
    /// version is treated as a modern kernel: no claim that dying memcgs hold IDs or that slab
    /// pins them.
    pub version: Option<(u32, u32)>,
}

impl KernelFacts {
    /// Facts from a release string like `6.18.44-fc-v669` or `3.10.0-957.el7.x86_64`.
    pub fn from_release(release: &str) -> KernelFacts {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major = it.next().and_then(|s| s.parse().ok());
        let minor = it.next().and_then(|s| s.parse().ok());
        KernelFacts {
            release: release.to_string(),
            version: major.zip(minor),
        }
    }

    /// Before 4.8 a memcg keeps its ID until it is freed, so dying memcgs use up the 65,535 IDs;
    /// since then the ID is given back at offline unless swap entries still hold it.
    pub fn ids_held_by_dying(&self) -> bool {
        self.version.is_some_and(|v| v < (4, 8))
    }

    /// Before 5.9 slab objects stay charged to a removed memcg and pin it (the 3.10 kmem leak);
    /// since 5.9 they are moved to the parent at offline.
    pub fn slab_pins_dying(&self) -> bool {
        self.version.is_some_and(|v| v < (5, 9))
    }
}
