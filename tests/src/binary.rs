//! Running the `cgtrace` binary in tests: find (or build) it, spawn it, wait until it is
//! attached, signal it.
//!
//! `CARGO_BIN_EXE_cgtrace` exists only inside the `cgtrace` package, so the binary is built
//! here (`cargo build -p cgtrace --bin cgtrace`, a no-op when it is up to date, in the profile
//! of the tests) and cargo names the executable; `CGTRACE_BIN` overrides it.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// The `cgtrace` binary: `CGTRACE_BIN`, else built from this workspace.
pub fn cgtrace_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CGTRACE_BIN") {
            return PathBuf::from(p);
        }
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(workspace()).args([
            "build",
            "--quiet",
            "--package",
            "cgtrace",
            "--bin",
            "cgtrace",
            "--message-format=json-render-diagnostics",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "`cargo build -p cgtrace --bin cgtrace` failed"
        );
        // Cargo names the executable it produced (wherever the target directory is).
        let built = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "cgtrace")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from));
        let bin = built.unwrap_or_else(|| workspace().join("target/debug/cgtrace"));
        assert!(bin.is_file(), "no cgtrace binary at {}", bin.display());
        bin
    })
}

/// `Command::new(cgtrace_bin())`.
pub fn cgtrace_command() -> Command {
    Command::new(cgtrace_bin())
}

/// Spawns `cgtrace ARGS` and returns once it printed `cgtrace: attached` on stderr, with a
/// thread that collects the rest of stderr (so cgtrace never blocks on it).
pub fn spawn_attached(args: &[&str], stdout: Stdio) -> (Child, JoinHandle<String>) {
    spawn_attached_command(cgtrace_command().args(args), stdout)
}

/// [`spawn_attached`] of a command that becomes cgtrace (e.g. a shell that moves itself into a
/// cgroup first, then execs it).
pub fn spawn_attached_command(cmd: &mut Command, stdout: Stdio) -> (Child, JoinHandle<String>) {
    let mut child = cmd
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cgtrace");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first).expect("first stderr line");
    assert!(first.starts_with("cgtrace: attached"), "{first}");
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    (child, rest)
}

/// Sends `sig` and waits for the exit, failing the test after `timeout`.
pub fn signal_and_wait(child: &mut Child, sig: i32, timeout: Duration) -> ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "cgtrace did not exit after signal {sig}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process of the test, stopped on drop (after a panic too): SIGTERM, then SIGKILL
/// if it has not exited within 10 s; reaped either way.
pub struct Running {
    /// For the warning when SIGTERM was not enough.
    pub name: &'static str,
    pub child: Child,
}

impl Running {
    pub fn new(name: &'static str, child: Child) -> Running {
        Running { name, child }
    }

    /// Ends the process (a no-op once it has exited) and returns how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet (try_wait said so).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: {} did not exit after SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port free on 127.0.0.1 a moment ago (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET path` from 127.0.0.1:`port` (one connection): (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read");
    let status = all
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = all.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// The value of a metric line `name{labels} value` (the first that starts with
/// `name_and_labels`).
pub fn metric(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Whether the program `name` is on PATH. Missing outside CI, the caller skips (this prints
/// why); with `CI=true` it panics, since `cargo xtask setup` installs it.
pub fn have_tool(test: &str, name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "{test}: `{name}` is not installed (cargo xtask setup installs it); CI=true forbids skipping"
        );
    }
    eprintln!("skipping {test}: `{name}` is not installed (run cargo xtask setup)");
    false
}
