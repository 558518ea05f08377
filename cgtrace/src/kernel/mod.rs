//! Facts about the running kernel and our privileges, checked before loading anything so the
//! errors say what is wrong instead of a bare EPERM.
use std::{fs, sync::OnceLock};

pub mod btf;
pub(crate) mod counters;
pub mod floor;
pub mod hierarchy;
pub(crate) mod memcg_ids;
pub mod mkdir_errno;
pub(crate) mod mountinfo;
pub(crate) mod release;
pub mod tracefs;

pub use release::KernelRelease;

use thiserror::Error;

pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Number of memcg IDs: they are 16 bits wide and 0 is never handed out
/// (`MEM_CGROUP_ID_MAX` in `include/linux/memcontrol.h`).
pub const MEMCG_ID_MAX: u64 = 65_535;

/// Page size of the running system (4 KiB on x86-64; 16 KiB or 64 KiB on some arm64 and ppc64
/// kernels), read once. The kernel counts memcg usage in pages and sizes the BPF ring buffer in
/// pages.
pub fn page_size() -> u64 {
    static PAGE_SIZE: OnceLock<u64> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // sysconf fails only for unknown names; 4096 is the page size of every kernel that
        // could not answer it.
        u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(4096)
    })
}

#[derive(Debug, Error)]
pub enum KernelError {
    #[error(
        "cgtrace needs root, or CAP_BPF and CAP_PERFMON, to load eBPF programs (missing: {missing}); try `sudo cgtrace ...`"
    )]
    Privileges { missing: String },
    #[error(
        "kernel {release} is older than 5.8: it has no CAP_BPF/CAP_PERFMON, so bpf() and perf_event_open() need CAP_SYS_ADMIN (run as root; in Kubernetes `privileged: true`)"
    )]
    NeedsSysAdmin { release: String },
    #[error(
        "kernel {release} is older than 5.11 and charges BPF maps to RLIMIT_MEMLOCK ({limit}), which cgtrace could not raise: {reason}; raising it needs CAP_SYS_RESOURCE"
    )]
    Memlock {
        release: String,
        limit: String,
        reason: String,
    },
}

/// The kernel release (`uname -r`).
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Effective capabilities from `/proc/self/status`.
pub fn effective_caps() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Fails with a one-line explanation when we cannot load BPF programs on this kernel.
pub fn check_privileges() -> Result<(), KernelError> {
    let Some(caps) = effective_caps() else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    privileges_for(caps, &release())
}

/// What `caps` lack to load BPF programs on kernel `release`.
pub fn privileges_for(caps: u64, release: &str) -> Result<(), KernelError> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    if KernelRelease::parse(release).is_some_and(|k| !k.cap_bpf()) {
        return Err(KernelError::NeedsSysAdmin {
            release: release.to_string(),
        });
    }
    if has(CAP_BPF) && has(CAP_PERFMON) {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF (to load BPF programs and maps)"),
        (
            CAP_PERFMON,
            "CAP_PERFMON (to attach tracing programs and read kernel memory from them)",
        ),
    ]
    .into_iter()
    .filter(|(c, _)| !has(*c))
    .map(|(_, n)| n)
    .collect();
    Err(KernelError::Privileges {
        missing: missing.join(", "),
    })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK: lift it where we may. Fails there
/// (naming CAP_SYS_RESOURCE) when it cannot be lifted; later kernels do not need it.
pub fn raise_memlock() -> Result<(), KernelError> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let release = release();
    if KernelRelease::parse(&release).is_some_and(|k| !k.memcg_charges_bpf()) {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } == 0 {
            if cur.rlim_cur == libc::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                format!(
                    "currently {}",
                    crate::format::units::human_bytes(cur.rlim_cur)
                )
            }
        } else {
            "limit unknown".to_string()
        };
        return Err(KernelError::Memlock {
            release,
            limit,
            reason: err.to_string(),
        });
    }
    log::debug!("setrlimit(RLIMIT_MEMLOCK) failed (not needed on {release}): {err}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_the_systems() {
        let p = page_size();
        assert!(p.is_power_of_two() && p >= 4096, "{p}");
        // The independent oracle: getconf, the libc tool.
        if let Ok(out) = std::process::Command::new("getconf")
            .arg("PAGESIZE")
            .output()
        {
            let s = String::from_utf8_lossy(&out.stdout);
            assert_eq!(s.trim().parse::<u64>().ok(), Some(p));
        }
        assert_eq!(page_size(), p);
    }

    #[test]
    fn the_missing_capability_depends_on_the_kernel() {
        let bit = |c: u32| 1u64 << c;
        let bpf_perfmon = bit(CAP_BPF) | bit(CAP_PERFMON);
        assert!(privileges_for(bpf_perfmon, "6.1.0").is_ok());
        assert!(privileges_for(bit(CAP_SYS_ADMIN), "5.4.0").is_ok());
        let old = privileges_for(bpf_perfmon, "5.4.0")
            .err()
            .map(|e| e.to_string());
        assert!(old.is_some_and(|e| e.contains("CAP_SYS_ADMIN") && e.contains("5.8")));
        let e = privileges_for(bit(CAP_BPF), "6.1.0")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("CAP_PERFMON") && !e.contains("CAP_BPF (")));
    }
}
