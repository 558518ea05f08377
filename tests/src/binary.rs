//! The `cgtrace` binary for tests that run it, and loopback ports for the servers they start.
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// The workspace root (the tests crate sits in it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// The `cgtrace` binary: `CGTRACE_BIN`, else built from this workspace with `cargo build -p
/// cgtrace --bin cgtrace` (a no-op when it is up to date), at the path cargo reports.
pub fn cgtrace_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CGTRACE_BIN") {
            return PathBuf::from(p);
        }
        let out = Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "--package",
                "cgtrace",
                "--bin",
                "cgtrace",
                "--message-format=json-render-diagnostics",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "`cargo build -p cgtrace --bin cgtrace` failed"
        );
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

/// A TCP port free on 127.0.0.1 a moment ago (the kernel's pick for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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
