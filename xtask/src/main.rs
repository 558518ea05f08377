//! Project orchestration: `cargo xtask setup | live | test | vm-test | build-ebpf | check-ebpf |
//! dist | image`.
//!
//! `test` runs `setup` first and `live` needs nothing but the stable toolchain, so on a fresh
//! machine the README's two commands are all it takes. `setup` is idempotent: a second run
//! changes nothing.
use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod dist;
mod ebpf;
mod image;
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
    /// Rebuild the committed eBPF object (cgtrace/ebpf/cgtrace.bpf.o) and its inputs list from
    /// source (nightly, rust-src, bpf-linker; `setup` installs them).
    BuildEbpf,
    /// Check that the committed eBPF object matches its sources (rebuilds it and compares).
    CheckEbpf,
    /// The release tarball target/dist/cgtrace-<version>-x86_64-linux.tar.gz (+ .sha256): a static
    /// binary built with the stable toolchain alone, man pages, shell completions.
    Dist,
    /// The OCI image archive target/image/cgtrace-<version>.oci.tar (the static binary alone,
    /// no base image), built with umoci, no container daemon.
    Image,
    /// Build in release mode (the stable toolchain alone: the eBPF object is committed) and run
    /// `cgtrace live` (extra arguments are passed on).
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

/// Runs a command and returns its stdout, failing with its description and stderr when it
/// fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c.env("PATH", setup::path_with_cargo_bin());
    c
}

/// Builds the release `cgtrace` binary and returns its path.
/// `text` with what lies between the lines `begin` and `end` replaced by `section`.
pub fn replace_between_markers(
    text: &str,
    begin: &str,
    end: &str,
    section: &str,
) -> Result<String> {
    let b = text
        .find(begin)
        .with_context(|| format!("no line {begin}"))?;
    let body = b + begin.len();
    let e = body
        + text[body..]
            .find(end)
            .with_context(|| format!("no line {end} after {begin}"))?;
    Ok(format!("{}\n{section}{}", &text[..body], &text[e..]))
}

/// Writes `section` between the lines `begin` and `end` of the file `path` (README.md's
/// generated tables).
pub fn write_between_markers(path: &Path, begin: &str, end: &str, section: &str) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let new = replace_between_markers(&text, begin, end, section)
        .with_context(|| format!("{}", path.display()))?;
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}

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
    // Nothing to install: cgtrace builds with the stable toolchain alone.
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
    // The committed eBPF object must be the one its sources build.
    ebpf::check()?;
    // The release artefacts (the static build is the stable-toolchain-only build); the deploy
    // tests run the image in runc.
    dist::run_dist()?;
    image::run_image()?;
    run(cargo()
        .args(["test", "--workspace", "--exclude", "cgtrace-ebpf"])
        .args(args))?;
    // The memcg ID exhaustion reproduction fills every memcg ID of the machine for some
    // seconds: alone, once everything else has finished, as root (`test = false` keeps it out
    // of the workspace run above; named, it runs).
    if is_root() {
        run(cargo()
            .env("CGTRACE_EXHAUST", "1")
            .args(["test", "-p", "integration-tests", "--test", "exhaust", "--"])
            .args(["--test-threads=1", "--nocapture"]))?;
    }
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
        Cmd::BuildEbpf => ebpf::build_committed(),
        Cmd::Dist => dist::run_dist().map(drop),
        Cmd::Image => image::run_image().map(drop),
        Cmd::CheckEbpf => setup::ensure().and_then(|()| ebpf::check()),
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
