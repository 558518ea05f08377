//! Facts about the running kernel and our privileges, checked before loading anything so the
//! errors say what is wrong instead of a bare EPERM.
use std::fs;

pub mod btf;
pub mod hierarchy;
pub mod tracefs;

use thiserror::Error;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error(
        "cgtrace needs root, or CAP_BPF and CAP_PERFMON, to load eBPF programs (missing: {missing}); try `sudo cgtrace ...`"
    )]
    Privileges { missing: String },
    #[error(
        "kernel {release} has no BPF ring buffer (needs Linux 5.8 or later); `cgtrace check` works without eBPF"
    )]
    NoRingBuf { release: String },
}

/// The page size of the running system (page counters and ring sizes are in pages; 16K and 64K
/// on some arm64 kernels).
pub fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf reads a constant of the running system; no memory is passed.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    })
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

/// Fails with a one-line explanation when we cannot load BPF programs.
pub fn check_privileges() -> Result<(), KernelError> {
    let Some(caps) = effective_caps() else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
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

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK: lift it where we may.
pub fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure is harmless (and expected on
    // kernels that account BPF memory to the memcg instead).
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            std::io::Error::last_os_error()
        );
    }
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
}
