//! Test cgroups: a parent directory unique to the run, in each hierarchy a test uses, removed
//! with everything under it on drop (after a panic too). Tests never touch other cgroups.
use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Whether the caller may load BPF programs and make cgroups. Outside CI without root this
/// prints why and returns false (the test then skips); with `CI=true` it panics instead.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "{test}: needs root to load BPF programs and make cgroups, and CI=true forbids skipping"
        );
    }
    eprintln!("skipping {test}: needs root (loads BPF programs, makes cgroups)");
    false
}

/// One test's parent cgroup, created in each of the given hierarchy mount points.
pub struct TestParent {
    /// Directory name, unique to this run and test.
    pub name: String,
    mounts: Vec<PathBuf>,
}

impl TestParent {
    /// Creates `/<name>` under every mount in `mounts` (e.g. the v1 memory and v2 roots).
    pub fn new(tag: &str, mounts: &[&Path]) -> io::Result<TestParent> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "cgtrace-test-{}-{}-{nanos:x}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut parent = TestParent {
            name,
            mounts: Vec::new(),
        };
        for m in mounts {
            fs::create_dir(m.join(&parent.name))?;
            parent.mounts.push(m.to_path_buf());
        }
        Ok(parent)
    }

    /// The parent's path relative to the hierarchy root, as events show it: `/<name>`.
    pub fn cgroup_path(&self) -> String {
        format!("/{}", self.name)
    }

    /// Absolute directory of the parent in `mount`.
    pub fn dir(&self, mount: &Path) -> PathBuf {
        mount.join(&self.name)
    }

    /// Makes `rel` (below the parent) in `mount`; returns its inode number.
    pub fn mkdir(&self, mount: &Path, rel: impl AsRef<Path>) -> io::Result<u64> {
        let p = self.dir(mount).join(rel);
        fs::create_dir(&p)?;
        Ok(fs::metadata(&p)?.ino())
    }

    pub fn rmdir(&self, mount: &Path, rel: impl AsRef<Path>) -> io::Result<()> {
        fs::remove_dir(self.dir(mount).join(rel))
    }
}

/// Removes a cgroup directory tree bottom-up (cgroupfs only allows rmdir of empty cgroups;
/// the control files vanish with the directory). Retries briefly on EBUSY while tasks exit.
pub fn remove_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(16) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!(
                    "warning: could not remove test cgroup {}: {e}",
                    dir.display()
                );
                return;
            }
        }
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        for m in &self.mounts {
            remove_tree(&m.join(&self.name));
        }
    }
}
