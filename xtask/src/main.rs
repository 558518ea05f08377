//! Project orchestration: `cargo xtask setup | live | test | vm-test`.
//!
//! `live` and `test` run `setup` first, so on a fresh machine the README's two commands are all
//! it takes. `setup` is idempotent: a second run changes nothing.
use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod setup;
mod vm;

#[derive(Parser)]
#[command(name = "xtask", about = "cgtrace's build and test orchestration")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh Debian machine lacks (LLVM 22 dev packages, bpf-linker, the nightly's
    /// rust-src, test tools). Does nothing when all is in place.
    Setup,
    /// Set up if needed, build in release mode and run `cgtrace live` (extra arguments are passed on).
    Live {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up if needed and run the whole test suite (extra arguments go to `cargo test`).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Boot Debian's 5.10, 6.1, 6.12 and newest kernels in QEMU and run the memcg lifecycle tests
    /// on every probe tier (fentry, kprobe, tracepoint) and the classic-tracepoint test there;
    /// `--exhaust` runs the memcg ID exhaustion test instead, `--readme` writes the kernel table.
    VmTest(vm::VmTestArgs),
    /// Measure cgtrace on this machine (as root): churn overhead against no tracer and bpftrace,
    /// loss and ring size, the user-space pipeline, memory per dying memcg, start-up. Prints a
    /// table and writes it to target/bench/latest.md.
    Bench(bench::BenchArgs),
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn is_root() -> bool {
    // `id -u` avoids a libc dependency for one call.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a command, failing with its description when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {desc}"))?;
    if !status.success() {
        bail!("{desc} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c.env("PATH", setup::path_with_cargo_bin());
    c
}

/// Builds the release `cgtrace` binary and returns its path.
pub fn build_release_cgtrace() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "cgtrace",
        "--bin",
        "cgtrace",
    ]))?;
    Ok(workspace_root().join("target/release/cgtrace"))
}

fn live(args: Vec<OsString>) -> Result<()> {
    setup::ensure()?;
    let bin = build_release_cgtrace()?;
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        eprintln!("xtask: cgtrace needs root to load eBPF programs; running it with sudo");
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    cmd.arg("live").args(args);
    let status = cmd.status().context("failed to start cgtrace")?;
    if !status.success() {
        bail!("cgtrace exited with {status}");
    }
    Ok(())
}

fn test(args: Vec<OsString>) -> Result<()> {
    setup::ensure()?;
    if !is_root() {
        eprintln!(
            "xtask: not root: tests that load eBPF programs or create cgroups will skip (in CI they fail)"
        );
    }
    run(cargo()
        .args(["test", "--workspace", "--exclude", "cgtrace-ebpf"])
        .args(args))?;
    // The kernel matrix: the fentry and kprobe tiers only exist in the VMs' kernels.
    let ci = env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !ci && env::var("CGTRACE_SKIP_VM").is_ok_and(|v| v == "1") {
        eprintln!("xtask: CGTRACE_SKIP_VM=1: skipping the kernel-matrix VM tests");
        return Ok(());
    }
    vm::run(vm::VmTestArgs::default())
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Setup => setup::ensure(),
        Cmd::Live { args } => live(args),
        Cmd::Test { args } => test(args),
        Cmd::VmTest(args) => vm::run(args),
        Cmd::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
