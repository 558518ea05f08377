//! Test cgroups: a parent directory unique to the run, in each hierarchy a test uses, removed
//! with everything under it on drop (after a panic too). Tests never touch other cgroups.
use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
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
    /// Makes a cgroup; returns its cgroup id (see [`cgroup_id`]).
    pub fn mkdir(&self, mount: &Path, rel: impl AsRef<Path>) -> io::Result<u64> {
        let p = self.dir(mount).join(rel);
        fs::create_dir(&p)?;
        cgroup_id(&p)
    }

    pub fn rmdir(&self, mount: &Path, rel: impl AsRef<Path>) -> io::Result<()> {
        fs::remove_dir(self.dir(mount).join(rel))
    }
}

/// The kernel's id of the cgroup at `dir`: its kernfs file handle (`name_to_handle_at`), the
/// oracle for the ids cgtrace reads. From 5.5 it is the inode number; before, the inode number
/// is its low 32 bits and the kernfs generation its high 32 ("kernfs: use 64bit inos if ino_t
/// is 64bit", 5.5). Falls back to the inode number where the handle cannot be had.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    let ino = fs::metadata(dir)?.ino();
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return Ok(ino);
    };
    // struct file_handle with room for 8 bytes of handle (kernfs uses 8).
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; 8],
    }
    let mut handle = Handle {
        bytes: 8,
        kind: 0,
        data: [0; 8],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: a NUL-terminated path, a file_handle whose `handle_bytes` says how much room
    // follows it, and an int for the mount id.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            path.as_ptr(),
            std::ptr::from_mut(&mut handle),
            std::ptr::from_mut(&mut mount_id),
            0,
        )
    };
    if ret != 0 || handle.bytes != 8 {
        return Ok(ino);
    }
    Ok(u64::from_le_bytes(handle.data))
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

/// Runs a shell inside the memcg `dir` that writes `bytes` to `file` and exits: the file's pages
/// are charged to the memcg (page cache on disk, shmem on tmpfs) and outlive the shell.
pub fn charge_file(dir: &Path, file: &Path, bytes: u64) {
    let script = format!(
        "echo $$ > '{}' && head -c {bytes} /dev/zero > '{}' && sync",
        dir.join("cgroup.procs").display(),
        file.display()
    );
    let st = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .expect("run sh");
    assert!(st.success(), "{script}");
}

/// Removes the cgroup `dir`, retrying briefly while the tasks that were in it exit.
pub fn rmdir_retry(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = fs::remove_dir(dir) {
        assert!(Instant::now() < deadline, "rmdir {}: {e}", dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The memory the kernel charges to the memcg `dir` now (v1 `memory.usage_in_bytes`, v2
/// `memory.current`).
pub fn memcg_usage(dir: &Path) -> u64 {
    let file = ["memory.usage_in_bytes", "memory.current"]
        .iter()
        .map(|f| dir.join(f))
        .find(|f| f.exists())
        .unwrap_or_else(|| panic!("{} is not a memcg", dir.display()));
    fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Makes the memcg `dir`, charges `bytes` of `file` to it ([`charge_file`]) and removes it: the
/// file's pages keep it dying. Returns what the kernel charged to it just before the rmdir.
pub fn dying_memcg(dir: &Path, file: &Path, bytes: u64) -> u64 {
    fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    charge_file(dir, file, bytes);
    let usage = memcg_usage(dir);
    rmdir_retry(dir);
    usage
}

/// Files whose pages keep memcgs dying; removed on drop, which lets the kernel free them.
#[derive(Default)]
pub struct PinFiles(pub Vec<PathBuf>);

impl PinFiles {
    /// Where pinning files go: tmpfs (`/dev/shm`), whose pages neither reclaim without swap
    /// nor another test's drop_caches frees (only removing the file does), else `fallback`.
    pub fn dir(fallback: &Path) -> PathBuf {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            fallback.to_path_buf()
        }
    }

    /// A new file name in `dir`, removed on drop.
    pub fn add(&mut self, dir: &Path, name: &str) -> PathBuf {
        let f = dir.join(format!("{name}-{}", std::process::id()));
        self.0.push(f.clone());
        f
    }
}

impl Drop for PinFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = fs::remove_file(f);
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
