//! What the detectors need to know about the kernel the events come from: its release, with
//! the version gates of [`crate::kernel::release`].
use serde::Serialize;

pub use crate::kernel::MEMCG_ID_MAX;
use crate::kernel::release::KernelRelease;

/// What the detectors need to know about the running kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelFacts {
    /// The release string (`uname -r`).
    pub release: String,
    /// The parsed release; `None` when it could not be parsed. An unknown version is treated as
    /// a modern kernel: no claim that dying memcgs hold IDs or that slab pins them.
    pub version: Option<KernelRelease>,
}

impl KernelFacts {
    /// Facts from a release string like `6.18.44-fc-v669` or `3.10.0-957.el7.x86_64`.
    pub fn from_release(release: &str) -> KernelFacts {
        KernelFacts {
            release: release.to_string(),
            version: KernelRelease::parse(release),
        }
    }

    /// Dying memcgs keep their IDs (before 4.7, see [`KernelRelease::ids_returned_at_offline`]).
    pub fn ids_held_by_dying(&self) -> bool {
        self.version.is_some_and(|k| !k.ids_returned_at_offline())
    }

    /// Slab objects stay charged to a removed memcg and pin it (before 5.9, see
    /// [`KernelRelease::slab_reparented`]).
    pub fn slab_pins_dying(&self) -> bool {
        self.version.is_some_and(|k| !k.slab_reparented())
    }

    /// The errno `mkdir` in the memory hierarchy fails with when memcg IDs run out on this
    /// kernel (None when the release is unknown).
    pub fn id_exhaustion_errno(&self) -> Option<i32> {
        self.version.map(|k| k.memcg_id_exhaustion_errno())
    }
}
