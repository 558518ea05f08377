//! The kernel release, parsed once, and every version gate cgtrace relies on as a named
//! predicate. Nothing else in the crate compares kernel versions.
//!
//! A release string such as `6.18.44-fc-v669`, `5.4.0-1059-aws` or `3.10.0-957.21.3.el7.x86_64`
//! becomes [`KernelRelease`]: major, minor, patch and, for RHEL-style builds (`.el<N>`), the
//! distribution build number (957 above). Distributions backport fixes, so a version gate is what
//! mainline did; where a backport matters (the RHEL 7 kmem fix, the stable trees' IDR errno) the
//! predicate says so.
use serde::Serialize;

/// Linux `ENOMEM`.
pub const ENOMEM: i32 = 12;
/// Linux `EBUSY`.
pub const EBUSY: i32 = 16;
/// Linux `ENOSPC`.
pub const ENOSPC: i32 = 28;

/// RHEL/CentOS 7 kernel build that fixed the dying-memcg kmem leak (3.10.0-1075.el7).
pub const RHEL7_FIXED_BUILD: u32 = 1075;

/// A parsed kernel release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KernelRelease {
    pub major: u32,
    pub minor: u32,
    /// The third number; 0 when the release has none (`6.1`).
    pub patch: u32,
    /// The RHEL-style build number after the dash (`957` in `3.10.0-957.el7`), only when the
    /// release names an `.el<N>` distribution.
    pub el_build: Option<u32>,
}

impl KernelRelease {
    /// Parses a release string (surrounding whitespace ignored). `None` without at least
    /// `major.minor`.
    pub fn parse(s: &str) -> Option<KernelRelease> {
        let s = s.trim();
        let (version, rest) = match s.split_once('-') {
            Some((v, rest)) => (v, Some(rest)),
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
        Some(KernelRelease {
            major,
            minor,
            patch,
            el_build,
        })
    }

    /// The running kernel's release (`/proc/sys/kernel/osrelease`), when it can be read and
    /// parsed.
    pub fn running() -> Option<KernelRelease> {
        KernelRelease::parse(&super::release())
    }

    /// `(major, minor)`.
    pub fn version(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// At least `major.minor` (mainline numbering).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version() >= (major, minor)
    }

    /// At least `major.minor.patch`.
    fn at_least_patch(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }

    /// The BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`), Linux 5.8 (457f44363a88, "bpf: Implement
    /// BPF ring buffer and verifier support for it").
    pub fn has_ringbuf(&self) -> bool {
        self.at_least(5, 8)
    }

    /// A memcg gives its 16-bit ID back at offline (unless swap entries still hold it), Linux
    /// 4.7 (73f576c04b94, "mm: memcontrol: fix cgroup creation failure after many small jobs").
    /// Before, a dying memcg keeps its ID until it is freed, so dying memcgs use up the IDs.
    pub fn ids_returned_at_offline(&self) -> bool {
        self.at_least(4, 7)
    }

    /// Slab objects are moved to the parent when a memcg goes offline, Linux 5.9 (the slab
    /// controller rework, 9855609bde03 "mm: memcg/slab: use a single set of kmem_caches for all
    /// accounted allocations" and its series). Before, kernel-memory charges pin dying memcgs.
    pub fn slab_reparented(&self) -> bool {
        self.at_least(5, 9)
    }

    /// A RHEL/CentOS 7 build (3.10.0-N.el7) at or after 3.10.0-1075.el7, which carries the fix
    /// for per-memcg slab caches pinning removed memcgs (and their IDs) forever.
    pub fn is_fixed_rhel7_build(&self) -> bool {
        self.version() == (3, 10) && self.el_build.is_some_and(|b| b >= RHEL7_FIXED_BUILD)
    }

    /// A 3.10 kernel without the RHEL 7 fix ([`Self::is_fixed_rhel7_build`]): with kmem
    /// accounting on, removed memcgs stay pinned and keep their IDs until a reboot.
    pub fn has_3_10_kmem_leak(&self) -> bool {
        self.version() == (3, 10) && !self.is_fixed_rhel7_build()
    }

    /// Kernel memory is accounted in every v1 memcg unless `cgroup.memory=nokmem`, Linux 4.6
    /// ("mm: memcontrol: enable kmem accounting for all cgroups in the legacy hierarchy").
    /// Before, only memcgs with a `memory.kmem.limit_in_bytes` set account it.
    pub fn kmem_accounted_by_default(&self) -> bool {
        self.at_least(4, 6)
    }

    /// `bpf_probe_read_kernel`, Linux 5.5 (6ae08ae3dea2, "bpf: Add probe_read_{user, kernel} and
    /// probe_read_{user, kernel}_str helpers"); older kernels have only `bpf_probe_read`.
    pub fn has_bpf_probe_read_kernel(&self) -> bool {
        self.at_least(5, 5)
    }

    /// BPF global data (`.rodata`/`.data`/`.bss` as array maps, read-only ones frozen), Linux 5.2
    /// (d8eca5bbb2be, "bpf: implement lookup-free direct value access for maps"): cgtrace's
    /// load-time configuration lives there.
    pub fn has_global_data(&self) -> bool {
        self.at_least(5, 2)
    }

    /// Bounded loops in the verifier, Linux 5.3 (2589726d12a1, "bpf: introduce bounded loops"):
    /// cgtrace's path and walk loops need them.
    pub fn has_bounded_loops(&self) -> bool {
        self.at_least(5, 3)
    }

    /// BPF memory is charged to the loader's memcg instead of RLIMIT_MEMLOCK, Linux 5.11 (Roman
    /// Gushchin's series "bpf: switch to memcg-based memory accounting"); before, raising
    /// RLIMIT_MEMLOCK needs CAP_SYS_RESOURCE.
    pub fn memcg_charges_bpf(&self) -> bool {
        self.at_least(5, 11)
    }

    /// The `cgroup:*` tracepoints (`cgroup_mkdir`, `cgroup_rmdir`, `cgroup_release`), Linux 4.13
    /// (ed1777de25a3, "cgroup: add tracepoints for basic operations"). Until 4.19 they carry no
    /// path.
    pub fn cgroup_tracepoints(&self) -> bool {
        self.at_least(4, 13)
    }

    /// Raw tracepoints (`BPF_PROG_TYPE_RAW_TRACEPOINT`), Linux 4.17 (c4f6699dfcb8, "bpf:
    /// introduce BPF_RAW_TRACEPOINT").
    pub fn raw_tracepoints(&self) -> bool {
        self.at_least(4, 17)
    }

    /// `CAP_BPF` and `CAP_PERFMON`, Linux 5.8 (a17b53c4a4b5, "bpf, capability: Introduce
    /// CAP_BPF"; 980737282232, "capabilities: introduce CAP_PERFMON"). Before, loading needs
    /// CAP_SYS_ADMIN.
    pub fn cap_bpf(&self) -> bool {
        self.at_least(5, 8)
    }

    /// `BPF_PROG_TEST_RUN` runs raw tracepoint programs, Linux 5.10 (1b4d60ec162f, "bpf: Enable
    /// BPF_PROG_TEST_RUN for raw_tracepoint").
    pub fn prog_test_run_raw_tp(&self) -> bool {
        self.at_least(5, 10)
    }

    /// `bpf_task_pt_regs`, Linux 5.15 (dd6e10fbd9fb, "bpf: Add bpf_task_pt_regs() helper"): the
    /// syscall-exit hook alone can read a failed mkdir's path from the saved registers.
    pub fn has_bpf_task_pt_regs(&self) -> bool {
        self.at_least(5, 15)
    }

    /// The errno of `mkdir` in cgroupfs when the memcg IDs have run out (from
    /// `mem_cgroup_alloc()` / `css_alloc` of each era):
    ///
    /// * ≤ 4.6: ENOSPC (the css id is over `MEM_CGROUP_ID_MAX` at online);
    /// * 4.7 – 5.6: ENOMEM (`mem_cgroup_alloc()` returned NULL when `idr_alloc` failed);
    /// * 5.7 – 6.11, and the stable backports from 5.4.41 and 5.6.13: ENOSPC (11d6761218d1, "mm,
    ///   memcg: fix error return value of mem_cgroup_css_alloc()", which passes `idr_alloc`'s
    ///   error on);
    /// * 6.12 and later: EBUSY (the IDR became an XArray; `xa_alloc` fails with -EBUSY).
    pub fn memcg_id_exhaustion_errno(&self) -> i32 {
        if self.at_least(6, 12) {
            EBUSY
        } else if self.at_least(5, 7) || self.is_stable_errno_backport() {
            ENOSPC
        } else if self.ids_returned_at_offline() {
            ENOMEM
        } else {
            ENOSPC
        }
    }

    /// 5.4.41+ and 5.6.13+ carry 11d6761218d1 from the stable trees.
    fn is_stable_errno_backport(&self) -> bool {
        match self.version() {
            (5, 4) => self.at_least_patch(5, 4, 41),
            (5, 6) => self.at_least_patch(5, 6, 13),
            _ => false,
        }
    }
}

/// The decimal number at the start of `s`, if any.
fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> KernelRelease {
        KernelRelease::parse(s).unwrap_or_else(|| panic!("{s:?} does not parse"))
    }

    #[test]
    fn parses_releases() {
        type Parts = (u32, u32, u32, Option<u32>);
        let table: &[(&str, Option<Parts>)] = &[
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
            ("garbage", None),
            ("5", None),
            ("5.x", None),
        ];
        for (input, want) in table {
            let got = KernelRelease::parse(input).map(|k| (k.major, k.minor, k.patch, k.el_build));
            assert_eq!(got, *want, "{input:?}");
        }
    }

    /// Every predicate just below and at its threshold.
    #[test]
    fn thresholds() {
        type Pred = fn(&KernelRelease) -> bool;
        let gates: &[(&str, Pred, &str, &str)] = &[
            ("ringbuf", KernelRelease::has_ringbuf, "5.7.19", "5.8.0"),
            (
                "ids",
                KernelRelease::ids_returned_at_offline,
                "4.6.7",
                "4.7.0",
            ),
            ("slab", KernelRelease::slab_reparented, "5.8.18", "5.9.1"),
            (
                "kmem",
                KernelRelease::kmem_accounted_by_default,
                "4.5.7",
                "4.6.0",
            ),
            (
                "read_kernel",
                KernelRelease::has_bpf_probe_read_kernel,
                "5.4.0-1059-aws",
                "5.5.0",
            ),
            (
                "memcg_bpf",
                KernelRelease::memcg_charges_bpf,
                "5.10.0-28-cloud-amd64",
                "5.11.0",
            ),
            (
                "cgroup_tp",
                KernelRelease::cgroup_tracepoints,
                "4.12.14",
                "4.13.0",
            ),
            (
                "raw_tp",
                KernelRelease::raw_tracepoints,
                "4.16.18",
                "4.17.0",
            ),
            ("cap_bpf", KernelRelease::cap_bpf, "5.7.0", "5.8.0"),
            (
                "test_run",
                KernelRelease::prog_test_run_raw_tp,
                "5.9.16",
                "5.10.0",
            ),
            (
                "pt_regs",
                KernelRelease::has_bpf_task_pt_regs,
                "5.14.21",
                "5.15.0",
            ),
        ];
        for (name, pred, below, at) in gates {
            assert!(!pred(&r(below)), "{name}: {below}");
            assert!(pred(&r(at)), "{name}: {at}");
            assert!(pred(&r("6.18.44-fc-v669")), "{name}: 6.18");
            assert!(!pred(&r("3.10.0-1160.el7.x86_64")), "{name}: 3.10");
        }
    }

    #[test]
    fn rhel7_builds() {
        assert!(!r("3.10.0-957.21.3.el7.x86_64").is_fixed_rhel7_build());
        assert!(!r("3.10.0-1062.18.1.el7.x86_64").is_fixed_rhel7_build());
        assert!(r("3.10.0-1075.el7.x86_64").is_fixed_rhel7_build());
        assert!(r("3.10.0-1160.119.1.el7.x86_64").is_fixed_rhel7_build());
        assert!(!r("3.10.107-1-tlinux2-0052").is_fixed_rhel7_build());
        assert!(!r("4.18.0-348.el8.x86_64").is_fixed_rhel7_build());

        assert!(r("3.10.0-957.21.3.el7.x86_64").has_3_10_kmem_leak());
        assert!(r("3.10.107-1-tlinux2-0052").has_3_10_kmem_leak());
        assert!(!r("3.10.0-1075.el7").has_3_10_kmem_leak());
        assert!(!r("4.18.0-348.el8.x86_64").has_3_10_kmem_leak());
        assert!(!r("5.4.0-1059-aws").has_3_10_kmem_leak());
    }

    #[test]
    fn id_exhaustion_errno_per_kernel() {
        let table = [
            ("3.10.0-957.el7.x86_64", ENOSPC),
            ("4.4.0-210-generic", ENOSPC),
            ("4.6.7", ENOSPC),
            ("4.7.0", ENOMEM),
            ("4.19.300", ENOMEM),
            ("5.4.0", ENOMEM),
            ("5.4.40", ENOMEM),
            ("5.4.41", ENOSPC),
            ("5.4.0-1059-aws", ENOMEM),
            ("5.5.19", ENOMEM),
            ("5.6.12", ENOMEM),
            ("5.6.13", ENOSPC),
            ("5.7.0", ENOSPC),
            ("5.10.0-28-cloud-amd64", ENOSPC),
            ("6.1.0-18-amd64", ENOSPC),
            ("6.11.11", ENOSPC),
            ("6.12.0", EBUSY),
            ("6.18.44-fc-v669", EBUSY),
        ];
        for (rel, want) in table {
            assert_eq!(r(rel).memcg_id_exhaustion_errno(), want, "{rel}");
        }
    }

    #[test]
    fn orders() {
        assert!(r("5.4.41") > r("5.4.40"));
        assert_eq!(r("6.18.44-fc-v669").version(), (6, 18));
        assert!(r("6.18.44-fc-v669").at_least(6, 18));
        assert!(!r("6.18.44-fc-v669").at_least(6, 19));
    }
}
