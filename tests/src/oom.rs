//! OOM kills for the tests: a kubelet-style pod/container memcg under the test parent with a
//! memory limit, and a hog process moved into it that allocates past the limit until the kernel
//! kills it; the kernel's own counts (`/proc/vmstat`, `memory.oom_control` on v1,
//! `memory.events` on v2, `memory.failcnt`) to compare with.
//!
//! The hog is the test binary itself, re-run with [`HOG_ENV`] set and only its `oom_hog` test
//! selected (a test file using [`Hog`] defines `#[test] fn oom_hog() { hog_main() }`): it needs
//! no other program, so it runs in the kernel-matrix VMs too.
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// Set in the hog's environment: the most bytes it allocates before giving up.
pub const HOG_ENV: &str = "CGTRACE_TEST_OOM_HOG";
/// What the hog prints when it waits for "go" (libtest's own text may come first on the line).
const READY: &str = "cgtrace-oom-hog-ready";

/// The hog's side: when [`HOG_ENV`] is set, say it is ready, wait for "go" on stdin, then allocate
/// and touch memory 1 MiB at a time up to the given bytes (then exit 0: no OOM came). Returns at
/// once otherwise.
pub fn hog_main() {
    let Some(max) = std::env::var(HOG_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY}");
    let _ = out.flush();
    let mut line = String::new();
    let _ = BufReader::new(std::io::stdin()).read_line(&mut line);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let step = 1usize << 20;
    let mut total = 0u64;
    while total < max {
        // Written, not only reserved: every page is charged to the memcg.
        kept.push(vec![0x5a; step]);
        total += step as u64;
    }
    std::hint::black_box(&kept);
    std::process::exit(0);
}

/// Where memcgs live here: the v1 memory hierarchy, else cgroup v2 (with `+memory` enabled
/// down the test's directories).
#[derive(Clone, Debug)]
pub struct MemRoot {
    pub hierarchy_id: u32,
    pub mount: PathBuf,
    pub v2: bool,
}

impl MemRoot {
    pub fn load(h: &cgtrace::kernel::hierarchy::Hierarchies) -> MemRoot {
        if let Some(m) = h.with_controller("memory").filter(|m| m.id != 0)
            && let Some(mount) = &m.mount
        {
            return MemRoot {
                hierarchy_id: m.id,
                mount: mount.clone(),
                v2: false,
            };
        }
        let mount = h
            .get(0)
            .and_then(|x| x.mount.clone())
            .expect("a cgroup v2 mount");
        MemRoot {
            hierarchy_id: 0,
            mount,
            v2: true,
        }
    }

    /// Makes `dir` (below an existing directory of this hierarchy); on v2 the parent first
    /// enables memory for its children.
    pub fn mkdir(&self, dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        if self.v2
            && let Some(parent) = dir.parent()
        {
            let ctl = parent.join("cgroup.subtree_control");
            let on = fs::read_to_string(&ctl).unwrap_or_default();
            if !on.split_whitespace().any(|c| c == "memory") {
                fs::write(&ctl, "+memory")
                    .unwrap_or_else(|e| panic!("enable +memory in {}: {e}", ctl.display()));
            }
        }
        fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        // v1 before 5.13 (no longer on 6.18) is not hierarchical unless asked: a limit would
        // not cover the children. Kubelet asks for it on kubepods; children inherit it.
        let h = dir.join("memory.use_hierarchy");
        if !self.v2 && fs::read_to_string(&h).is_ok_and(|v| v.trim() == "0") {
            fs::write(&h, "1").unwrap_or_else(|e| panic!("write {}: {e}", h.display()));
        }
        fs::metadata(dir)
            .unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()))
            .ino()
    }

    /// Sets the memory limit of the memcg at `dir`.
    pub fn set_limit(&self, dir: &Path, bytes: u64) {
        let f = dir.join(if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        });
        fs::write(&f, bytes.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", f.display()));
        if self.v2 {
            // No swap to escape to (the VMs have none; this says so).
            let _ = fs::write(dir.join("memory.swap.max"), "0");
        }
    }

    /// The kernel's count of OOM kills in the memcg at `dir`: v2 `memory.events` (it and below);
    /// v1 `memory.oom_control` (only the memcg of the victim's mm on 6.18, it and below on
    /// kernels that count v1's hierarchically).
    pub fn oom_kills(&self, dir: &Path) -> u64 {
        let f = dir.join(if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        });
        key_value(&f, "oom_kill").unwrap_or_else(|| panic!("no oom_kill in {}", f.display()))
    }

    /// How often the memcg at `dir` itself hit its limit: v1 `memory.failcnt` (its own page
    /// counter), v2 `memory.events.local` `max` (its own events only).
    pub fn limit_hits(&self, dir: &Path) -> u64 {
        if self.v2 {
            let f = dir.join("memory.events.local");
            key_value(&f, "max").unwrap_or_else(|| panic!("no max in {}", f.display()))
        } else {
            let f = dir.join("memory.failcnt");
            fs::read_to_string(&f)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("read {}", f.display()))
        }
    }
}

/// The value of `key` in a `key value` per line file.
fn key_value(f: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(f).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// `oom_kill` of `/proc/vmstat`: every OOM kill on the node since boot.
pub fn vmstat_oom_kills() -> u64 {
    key_value(Path::new("/proc/vmstat"), "oom_kill").expect("oom_kill in /proc/vmstat")
}

/// A hog process in a memcg.
pub struct Hog {
    child: Child,
    /// Its comm (the test binary's name, cut to 15 bytes), read before it allocates.
    pub comm: String,
}

impl Hog {
    /// Starts the hog (the current test binary's `oom_hog` test), moves it into the memcg at
    /// `dir`, and lets it allocate up to `max_bytes`.
    pub fn start_in(dir: &Path, max_bytes: u64) -> Hog {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args(["--exact", "oom_hog", "--test-threads=1", "--nocapture"])
            .env(HOG_ENV, max_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the hog");
        // Its stdout, line by line, from a thread: a hog that never gets ready fails the test
        // instead of hanging it.
        let out = child.stdout.take().expect("hog stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(READY) => break,
                Ok(_) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the hog did not get ready: {e}");
                }
            }
        }
        let pid = child.id();
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move the hog into {}: {e}", dir.display()));
        let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
            .expect("the hog's comm")
            .trim_end()
            .to_string();
        child
            .stdin
            .take()
            .expect("hog stdin")
            .write_all(b"go\n")
            .expect("start the hog");
        Hog { child, comm }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the hog to end (the OOM killer's SIGKILL), failing the test after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for the hog") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the hog did not end within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        // After a panic: never leave a hog behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
