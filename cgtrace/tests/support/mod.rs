//! Running the `cgtrace` binary in tests: spawn it, wait until it is attached, signal it.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, ExitStatus, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_cgtrace");

/// Spawns `cgtrace ARGS` and returns once it printed `cgtrace: attached` on stderr, with a
/// thread that collects the rest of stderr (so cgtrace never blocks on it).
pub fn spawn_attached(args: &[&str], stdout: Stdio) -> (Child, JoinHandle<String>) {
    let mut child = Command::new(BIN)
        .args(args)
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
