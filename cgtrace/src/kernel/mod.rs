//! Facts about the running kernel and our privileges, checked before loading anything so the
//! errors say what is wrong instead of a bare EPERM.
use std::fs;

pub mod btf;
pub mod hierarchy;
pub mod tracefs;

use thiserror::Error;

pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// CAP_BPF and CAP_PERFMON exist since 5.8; before, `bpf()` and `perf_event_open()` want
/// CAP_SYS_ADMIN.
pub const CAP_BPF_SINCE: (u32, u32) = (5, 8);
/// BPF memory is charged to the memcg since 5.11; before, to RLIMIT_MEMLOCK, which only
/// CAP_SYS_RESOURCE may raise.
pub const BPF_MEMCG_ACCOUNTING_SINCE: (u32, u32) = (5, 11);

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
    #[error(
        "kernel {release} has no BPF ring buffer (needs Linux 5.8 or later); `cgtrace check` works without eBPF"
    )]
    NoRingBuf { release: String },
}

/// The kernel release (`uname -r`).
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// (major, minor) of a release string like `6.18.44-fc-v669` or `3.10.0-957.el7.x86_64`.
pub fn version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
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
    if version(release).is_some_and(|v| v < CAP_BPF_SINCE) {
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

/// The BPF ring buffer arrived in 5.8.
pub fn check_ring_buffer(release: &str) -> Result<(), KernelError> {
    match version(release) {
        Some(v) if v < (5, 8) => Err(KernelError::NoRingBuf {
            release: release.to_string(),
        }),
        _ => Ok(()),
    }
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
    if version(&release).is_some_and(|v| v < BPF_MEMCG_ACCOUNTING_SINCE) {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } == 0 {
            if cur.rlim_cur == libc::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                format!("currently {} KiB", cur.rlim_cur / 1024)
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
    fn parses_versions() {
        assert_eq!(version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(version("3.10.0-957.21.3.el7.x86_64"), Some((3, 10)));
        assert_eq!(version("5.4.0-1059-aws"), Some((5, 4)));
        assert_eq!(version("garbage"), None);
        assert!(check_ring_buffer("5.4.0").is_err());
        assert!(check_ring_buffer("5.8.0").is_ok());
        let e = check_ring_buffer("4.19.1").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("4.19.1") && e.contains("5.8")));
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
