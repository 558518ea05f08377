//! What a failed `mkdir` in cgroupfs means, from its errno and the kernel it ran on: the one
//! table the `mkdir_failed` detector and `check` read.
//!
//! | errno | cause |
//! |---|---|
//! | the kernel's ID-exhaustion errno ([`KernelRelease::memcg_id_exhaustion_errno`]: ENOSPC, ENOMEM or EBUSY by era) in the memory hierarchy with the memcg ID headroom at or near 0 | memcg IDs exhausted |
//! | ENOMEM otherwise | a memcg (or other css) allocation failed: memory pressure, fragmentation |
//! | ENOSPC / EBUSY otherwise | a controller refused the new css (IDs of another controller, a v1 `cpuset` without cpus/mems) |
//! | EAGAIN | `cgroup.max.descendants` or `cgroup.max.depth` of an ancestor reached (v2) |
//! | EACCES, EPERM, EROFS | no permission: delegation, user namespaces, a read-only cgroupfs |
//! | EEXIST | the cgroup exists already: `mkdir -p` / Go's `MkdirAll` on every healthy start, not a failure |
//! | ENOENT | the parent was removed meanwhile: a race |
//! | none (0): only the half-made cgroup's release was seen | a controller's css could not be created (the failures inside cgroup creation); at no memcg ID headroom the pipeline infers the exhaustion errno instead |
use serde::Serialize;

use super::release::{EBUSY, ENOMEM, ENOSPC, KernelRelease};

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const EAGAIN: i32 = 11;
pub const EACCES: i32 = 13;
pub const EEXIST: i32 = 17;
pub const ENOTDIR: i32 = 20;
pub const EINVAL: i32 = 22;
pub const EROFS: i32 = 30;
pub const ENAMETOOLONG: i32 = 36;
pub const EDQUOT: i32 = 122;

/// The symbolic names of the errnos a failed mkdir returns: the one table of their names.
const ERRNO_NAMES: [(i32, &str); 13] = [
    (EPERM, "EPERM"),
    (ENOENT, "ENOENT"),
    (EAGAIN, "EAGAIN"),
    (ENOMEM, "ENOMEM"),
    (EACCES, "EACCES"),
    (EBUSY, "EBUSY"),
    (EEXIST, "EEXIST"),
    (ENOTDIR, "ENOTDIR"),
    (EINVAL, "EINVAL"),
    (ENOSPC, "ENOSPC"),
    (EROFS, "EROFS"),
    (ENAMETOOLONG, "ENAMETOOLONG"),
    (EDQUOT, "EDQUOT"),
];

/// The symbolic name of an errno a failed mkdir returns (`E<n>` for others).
pub fn errno_name(e: i32) -> String {
    match ERRNO_NAMES.iter().find(|(n, _)| *n == e) {
        Some((_, name)) => (*name).to_string(),
        None => format!("E{e}"),
    }
}

/// Memcg ID headroom at or below this is "at or near 0": the failed mkdir may have raced with
/// removals that freed a few IDs between the failure and the count.
pub const EXHAUSTED_HEADROOM: u64 = 16;

/// What a failed cgroupfs mkdir means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MkdirCause {
    /// The 65,535 memcg IDs are used up: every new pod fails.
    MemcgIdsExhausted,
    /// This kernel's exhaustion errno in the memory hierarchy, headroom not known.
    MaybeMemcgIdsExhausted,
    /// A css could not be allocated.
    AllocationFailed,
    /// A controller refused the new css for another reason.
    ControllerRefused,
    /// A descendants or depth limit of an ancestor.
    LimitReached,
    /// Permissions, delegation, a read-only cgroupfs.
    NotPermitted,
    /// The cgroup exists: not a failure.
    Exists,
    /// The parent is gone: a race.
    ParentGone,
    /// The kernel made the cgroup but not its css (seen at the half-made cgroup's release,
    /// errno unknown).
    CssCreationFailed,
    /// Anything else.
    #[default]
    Other,
}

impl MkdirCause {
    /// The cause of a failed mkdir with `errno` (positive) on `kernel` (None: release unknown),
    /// in the memory hierarchy or not, with the memcg ID headroom where it is known.
    pub fn of(
        errno: i32,
        kernel: Option<&KernelRelease>,
        memory_hierarchy: bool,
        headroom: Option<u64>,
    ) -> MkdirCause {
        let exhaustion_errno = match kernel {
            Some(k) => errno == k.memcg_id_exhaustion_errno(),
            None => matches!(errno, ENOSPC | ENOMEM | EBUSY),
        };
        if exhaustion_errno && memory_hierarchy {
            return match headroom {
                Some(h) if h <= EXHAUSTED_HEADROOM => MkdirCause::MemcgIdsExhausted,
                None => MkdirCause::MaybeMemcgIdsExhausted,
                Some(_) if errno == ENOMEM => MkdirCause::AllocationFailed,
                Some(_) => MkdirCause::ControllerRefused,
            };
        }
        match errno {
            0 => MkdirCause::CssCreationFailed,
            ENOMEM => MkdirCause::AllocationFailed,
            ENOSPC | EBUSY => MkdirCause::ControllerRefused,
            EAGAIN => MkdirCause::LimitReached,
            EACCES | EPERM | EROFS => MkdirCause::NotPermitted,
            EEXIST => MkdirCause::Exists,
            ENOENT => MkdirCause::ParentGone,
            _ => MkdirCause::Other,
        }
    }

    /// Whether this is worth reporting as a problem at all.
    pub fn is_failure(self) -> bool {
        self != MkdirCause::Exists
    }

    /// One line for people.
    pub fn describe(self) -> &'static str {
        match self {
            MkdirCause::MemcgIdsExhausted => "memcg IDs exhausted",
            MkdirCause::MaybeMemcgIdsExhausted => {
                "possibly memcg IDs exhausted (this kernel's errno for it; the ID headroom is not known)"
            }
            MkdirCause::AllocationFailed => "a cgroup's memory could not be allocated",
            MkdirCause::ControllerRefused => "a controller refused the new cgroup",
            MkdirCause::LimitReached => {
                "cgroup.max.descendants or cgroup.max.depth of an ancestor reached"
            }
            MkdirCause::NotPermitted => {
                "not permitted (permissions, delegation, user namespace or a read-only cgroupfs)"
            }
            MkdirCause::Exists => "the cgroup exists already",
            MkdirCause::ParentGone => "the parent cgroup was removed meanwhile",
            MkdirCause::CssCreationFailed => {
                "a controller's state for the new cgroup could not be created (errno unknown)"
            }
            MkdirCause::Other => "an unusual error",
        }
    }
}

/// What the kubelet, runc and `mkdir` print for `errno` (`strerror`).
pub fn errno_message(errno: i32) -> &'static str {
    match errno {
        EPERM => "operation not permitted",
        ENOENT => "no such file or directory",
        EAGAIN => "resource temporarily unavailable",
        ENOMEM => "cannot allocate memory",
        EACCES => "permission denied",
        EBUSY => "device or resource busy",
        EEXIST => "file exists",
        ENOSPC => "no space left on device",
        EROFS => "read-only file system",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(ENOSPC), "ENOSPC");
        assert_eq!(errno_name(EDQUOT), "EDQUOT");
        assert_eq!(errno_name(9999), "E9999");
    }

    fn k(s: &str) -> KernelRelease {
        KernelRelease::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn exhaustion_is_the_kernels_errno_in_the_memory_hierarchy_at_no_headroom() {
        // (kernel, the errno ID exhaustion gives there): design.md's table.
        for (release, errno) in [
            ("3.10.0-957.el7.x86_64", ENOSPC),
            ("4.19.0-26-amd64", ENOMEM),
            ("5.4.41", ENOSPC),
            ("5.4.0-100-generic", ENOMEM),
            ("5.4.40", ENOMEM),
            ("5.6.13", ENOSPC),
            ("5.10.0-30-cloud-amd64", ENOSPC),
            ("6.1.0-57-cloud-amd64", ENOSPC),
            ("6.11.0", ENOSPC),
            ("6.12.117+deb12-cloud-amd64", EBUSY),
            ("6.18.44-fc-v669", EBUSY),
        ] {
            let k = k(release);
            assert_eq!(
                MkdirCause::of(errno, Some(&k), true, Some(0)),
                MkdirCause::MemcgIdsExhausted,
                "{release}"
            );
            assert_eq!(
                MkdirCause::of(errno, Some(&k), true, None),
                MkdirCause::MaybeMemcgIdsExhausted,
                "{release}"
            );
            // With IDs to spare it is something else; outside memory, never exhaustion.
            assert_ne!(
                MkdirCause::of(errno, Some(&k), true, Some(30_000)),
                MkdirCause::MemcgIdsExhausted,
                "{release}"
            );
            assert_ne!(
                MkdirCause::of(errno, Some(&k), false, Some(0)),
                MkdirCause::MemcgIdsExhausted,
                "{release}"
            );
        }
        // Another kernel's exhaustion errno is not this kernel's exhaustion.
        let new = k("6.18.44-fc-v669");
        assert_eq!(
            MkdirCause::of(ENOSPC, Some(&new), true, Some(0)),
            MkdirCause::ControllerRefused
        );
        assert_eq!(
            MkdirCause::of(ENOMEM, Some(&new), true, Some(0)),
            MkdirCause::AllocationFailed
        );
    }

    #[test]
    fn the_other_errnos() {
        let k = k("6.18.44-fc-v669");
        for (errno, cause) in [
            (EAGAIN, MkdirCause::LimitReached),
            (EACCES, MkdirCause::NotPermitted),
            (EPERM, MkdirCause::NotPermitted),
            (EROFS, MkdirCause::NotPermitted),
            (EEXIST, MkdirCause::Exists),
            (ENOENT, MkdirCause::ParentGone),
            (22, MkdirCause::Other),
        ] {
            assert_eq!(MkdirCause::of(errno, Some(&k), true, Some(0)), cause);
        }
        assert!(!MkdirCause::Exists.is_failure());
        assert!(MkdirCause::MemcgIdsExhausted.is_failure());
        assert_eq!(errno_message(EBUSY), "device or resource busy");
        assert_eq!(errno_message(ENOSPC), "no space left on device");
    }

    #[test]
    fn unknown_release_takes_any_exhaustion_errno() {
        for errno in [ENOSPC, ENOMEM, EBUSY] {
            assert_eq!(
                MkdirCause::of(errno, None, true, Some(3)),
                MkdirCause::MemcgIdsExhausted
            );
        }
    }
}
