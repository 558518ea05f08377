//! Below the floor: what a kernel lacks that cgtrace's eBPF programs need, named one by one, for
//! `live` (when loading fails) and `doctor`. Tried where it can be (the `bpf()` syscall, aya's
//! probe of global data, tracefs's cgroup events); by the release's version where it cannot (the
//! verifier's bounded loops), then only when the programs did not load.
use std::{fmt, path::Path};

use crate::kernel::KernelRelease;

/// The cgroup tracepoints every tier attaches.
pub const CGROUP_TRACEPOINTS: [&str; 3] = ["cgroup_mkdir", "cgroup_rmdir", "cgroup_release"];

/// What was found about the kernel's floor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloorFacts {
    /// `uname -r`.
    pub release: String,
    /// `bpf(2)` exists (false: ENOSYS, a kernel built without `CONFIG_BPF_SYSCALL`).
    pub bpf_syscall: bool,
    /// aya's probe of BPF global data (None: not asked, e.g. without the privileges to load).
    pub global_data: Option<bool>,
    /// The cgroup tracepoints missing from tracefs's `events/cgroup` (None: no tracefs to look
    /// in).
    pub missing_tracepoints: Option<Vec<&'static str>>,
}

/// One thing the kernel lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    BpfSyscall,
    GlobalData,
    BoundedLoops,
    CgroupTracepoints(Vec<&'static str>),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::BpfSyscall => {
                f.write_str("the bpf() system call (a kernel built without CONFIG_BPF_SYSCALL)")
            }
            Missing::GlobalData => f.write_str(
                "BPF global data (read-only array maps, Linux 5.2), which holds the programs' \
                 load-time configuration",
            ),
            Missing::BoundedLoops => f.write_str(
                "bounded loops in the BPF verifier (Linux 5.3; judged by the version, a \
                 backport may have them)",
            ),
            Missing::CgroupTracepoints(names) => write!(
                f,
                "the cgroup tracepoints (Linux 4.13; tracefs has no cgroup:{})",
                names.join(", cgroup:")
            ),
        }
    }
}

impl FloorFacts {
    /// Looks at the running kernel (aya's global-data probe only when `may_load`: without the
    /// privileges every probe fails).
    pub fn probe(may_load: bool) -> FloorFacts {
        let bpf_syscall = bpf_syscall_exists();
        FloorFacts {
            release: crate::kernel::release(),
            bpf_syscall,
            global_data: (bpf_syscall && may_load).then(|| aya::features().bpf_global_data()),
            missing_tracepoints: super::tracefs::find().and_then(|t| missing_tracepoints(&t)),
        }
    }

    /// Everything missing, most basic first.
    pub fn missing(&self) -> Vec<Missing> {
        let k = KernelRelease::parse(&self.release);
        let mut out = Vec::new();
        if !self.bpf_syscall {
            out.push(Missing::BpfSyscall);
        }
        let old = |gate: fn(&KernelRelease) -> bool| k.as_ref().is_some_and(|k| !gate(k));
        match self.global_data {
            Some(false) => out.push(Missing::GlobalData),
            None if self.bpf_syscall && old(KernelRelease::has_global_data) => {
                out.push(Missing::GlobalData)
            }
            _ => {}
        }
        if self.bpf_syscall && old(KernelRelease::has_bounded_loops) {
            out.push(Missing::BoundedLoops);
        }
        match &self.missing_tracepoints {
            Some(names) if !names.is_empty() => out.push(Missing::CgroupTracepoints(names.clone())),
            None if old(KernelRelease::cgroup_tracepoints) => {
                out.push(Missing::CgroupTracepoints(CGROUP_TRACEPOINTS.to_vec()))
            }
            _ => {}
        }
        out
    }

    /// One sentence naming what is missing and pointing to `cgtrace check` (None: nothing
    /// found missing).
    pub fn explain(&self) -> Option<String> {
        let missing = self.missing();
        if missing.is_empty() {
            return None;
        }
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        Some(format!(
            "kernel {} lacks what cgtrace's eBPF programs need: {}; `cgtrace check` works \
             without eBPF (dying memcgs, memcg ID headroom, the kmem pattern)",
            self.release,
            list.join("; ")
        ))
    }
}

/// The cgroup tracepoints `events/cgroup` of a tracefs mounted at `root` lacks (None: no
/// `events` directory to look in).
pub fn missing_tracepoints(root: &Path) -> Option<Vec<&'static str>> {
    let events = root.join("events");
    if !events.is_dir() {
        return None;
    }
    Some(
        CGROUP_TRACEPOINTS
            .into_iter()
            .filter(|tp| !events.join("cgroup").join(tp).is_dir())
            .collect(),
    )
}

/// Whether `bpf(2)` exists: an invalid command gets EINVAL (or EPERM) from a kernel that has it,
/// ENOSYS from one that has not.
fn bpf_syscall_exists() -> bool {
    // SAFETY: command -1 does not exist; the kernel rejects it before reading the (null,
    // zero-sized) attribute.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, -1i64, std::ptr::null::<u8>(), 0u32) };
    !(rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A tracefs tree of `tracepoints` (names under `events/`), removed on drop.
    struct Tracefs(PathBuf);

    impl Tracefs {
        fn new(tag: &str, tracepoints: &[&str]) -> Tracefs {
            let root =
                std::env::temp_dir().join(format!("cgtrace-floor-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("events")).expect("events");
            for tp in tracepoints {
                let dir = root.join("events").join(tp);
                std::fs::create_dir_all(&dir).expect("tracepoint dir");
                std::fs::write(dir.join("format"), format!("name: {tp}\n")).expect("format");
            }
            Tracefs(root)
        }
    }

    impl Drop for Tracefs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn facts(
        release: &str,
        bpf: bool,
        global_data: Option<bool>,
        tracefs: Option<&Tracefs>,
    ) -> FloorFacts {
        FloorFacts {
            release: release.to_string(),
            bpf_syscall: bpf,
            global_data,
            missing_tracepoints: tracefs.and_then(|t| missing_tracepoints(&t.0)),
        }
    }

    #[test]
    fn a_modern_kernel_lacks_nothing() {
        let t = Tracefs::new(
            "modern",
            &[
                "cgroup/cgroup_mkdir",
                "cgroup/cgroup_rmdir",
                "cgroup/cgroup_release",
                "sched/sched_switch",
            ],
        );
        assert_eq!(
            facts("6.18.44-fc-v669", true, Some(true), Some(&t)).missing(),
            []
        );
        // Ubuntu 20.04: the perf buffers and bpf_probe_read cover it.
        assert_eq!(
            facts("5.4.0-1059-aws", true, Some(true), Some(&t)).explain(),
            None
        );
        // RHEL 8's 4.18 with global data backported: only the version-judged loops are named.
        assert_eq!(
            facts("4.18.0-553.el8_10.x86_64", true, Some(true), Some(&t)).missing(),
            [Missing::BoundedLoops]
        );
    }

    #[test]
    fn centos_7_lacks_the_tracepoints_and_the_bpf_features() {
        // CentOS 7's 3.10: bpf(2) absent on most builds; tracefs with no cgroup events.
        let t = Tracefs::new("el7", &["sched/sched_switch", "syscalls/sys_enter_mkdir"]);
        let f = facts("3.10.0-1160.el7.x86_64", false, None, Some(&t));
        assert_eq!(
            f.missing(),
            [
                Missing::BpfSyscall,
                Missing::CgroupTracepoints(CGROUP_TRACEPOINTS.to_vec())
            ]
        );
        let text = f.explain().expect("something is missing");
        assert!(text.contains("CONFIG_BPF_SYSCALL"), "{text}");
        assert!(
            text.contains("cgroup:cgroup_mkdir, cgroup:cgroup_rmdir, cgroup:cgroup_release"),
            "{text}"
        );
        assert!(text.contains("`cgtrace check`"), "{text}");
    }

    #[test]
    fn a_4_x_kernel_lacks_global_data_and_loops() {
        let t = Tracefs::new(
            "4x",
            &[
                "cgroup/cgroup_mkdir",
                "cgroup/cgroup_rmdir",
                "cgroup/cgroup_release",
            ],
        );
        assert_eq!(
            facts("4.19.0-27-amd64", true, Some(false), Some(&t)).missing(),
            [Missing::GlobalData, Missing::BoundedLoops]
        );
        // Not asked (no privileges): judged by the version.
        assert_eq!(
            facts("4.19.0-27-amd64", true, None, Some(&t)).missing(),
            [Missing::GlobalData, Missing::BoundedLoops]
        );
        // No tracefs to look in: the tracepoints judged by the version (4.9 < 4.13).
        assert!(
            facts("4.9.0-19-amd64", true, Some(false), None)
                .missing()
                .contains(&Missing::CgroupTracepoints(CGROUP_TRACEPOINTS.to_vec()))
        );
        // A partial set is named exactly.
        let t = Tracefs::new("partial", &["cgroup/cgroup_mkdir", "cgroup/cgroup_rmdir"]);
        assert_eq!(missing_tracepoints(&t.0), Some(vec!["cgroup_release"]));
    }

    #[test]
    fn this_machine_has_the_bpf_syscall() {
        assert!(bpf_syscall_exists());
    }
}
