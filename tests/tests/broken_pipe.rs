//! `cgtrace check` and `cgtrace doctor` with stdout a closed pipe (`| head -0`): no panic, a quiet
//! exit, like `live` and other Unix tools. Needs no root (doctor reports the tiers it cannot load).
use std::process::{Command, Stdio};

use integration_tests::binary::cgtrace_bin;

#[test]
fn closed_stdout_is_a_quiet_exit() {
    for args in [
        &["check"][..],
        &["check", "--json"],
        &["check", "--host-root", "/nonexistent-host-root"],
        &["doctor"],
        &["doctor", "--json"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader); // nobody reads: every write fails with EPIPE
        let out = Command::new(cgtrace_bin())
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .expect("run cgtrace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("cgtrace: error"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
