//! `cargo xtask setup`: what a fresh Debian 12 machine of this kind lacks, installed once.
//!
//! Each step checks first and does nothing when its result is already there.
use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{is_root, run};

/// Debian packages: LLVM 22 for bpf-linker, and the tools the tests and benchmarks use
/// (bpftrace as a second tracer, bpftool as the BTF oracle, runc + busybox as a real container
/// runtime, hyperfine for timings, qemu to boot Debian's kernels for `cargo xtask vm-test`, umoci
/// to write the OCI image and skopeo to inspect and push it, binutils to check the static binary,
/// curl to fetch vm-test's pinned Ubuntu kernel).
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftrace",
    "bpftool",
    "runc",
    "busybox-static",
    "hyperfine",
    "qemu-system-x86",
    "umoci",
    "skopeo",
    "binutils",
    "curl",
];

/// Debian packages installed without their recommended ones: tmux, in which the `cgtrace top`
/// test runs the view in a real terminal, and Debian's chromium, which loads the `report
/// --html` page headless, with a font for its screenshot (chromium recommends desktop services —
/// upower, udev, a notification daemon — that a test machine does without).
const PACKAGES_WITHOUT_RECOMMENDS: &[&str] = &["tmux", "chromium", "fonts-dejavu-core"];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// cargo-fuzz, for README's `cargo +nightly fuzz run ...` (this version builds with stable
/// rustc 1.95).
const CARGO_FUZZ_VERSION: &str = "0.13.1";

fn cargo_bin() -> PathBuf {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

/// PATH with cargo's bin directory (where bpf-linker is installed) in it.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    let bin = cargo_bin();
    if !paths.contains(&bin) {
        paths.push(bin);
    }
    env::join_paths(paths).unwrap_or_default()
}

fn sudo(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

fn package_installed(p: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", p])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn missing(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect()
}

/// `apt-get install` of `packages` (after one `apt-get update` per setup: package lists on a
/// new machine are stale or empty), with or without their recommended packages.
fn apt_install(packages: &[&str], recommends: bool, apt_updated: &mut bool) -> Result<()> {
    if !*apt_updated {
        run(sudo("apt-get").args(["update", "-qq"]))?;
        *apt_updated = true;
    }
    let mut cmd = sudo("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"]);
    if !recommends {
        cmd.arg("--no-install-recommends");
    }
    run(cmd.args(packages))
}

/// Debian's policy hook: `invoke-rc.d` and `deb-systemd-invoke` ask it before starting a
/// service from a package's maintainer scripts; exit code 101 means "do not".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// A `policy-rc.d` that forbids starting services, in place while it lives when there was none
/// (containers usually have one already; it is then left alone).
struct NoServiceStarts {
    created: bool,
}

impl NoServiceStarts {
    fn new() -> Result<NoServiceStarts> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(NoServiceStarts { created: false });
        }
        run(sudo("sh").args([
            "-c",
            &format!(
                "printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod 0755 {POLICY_RC_D}"
            ),
        ]))
        .with_context(|| format!("writing {POLICY_RC_D} so the package starts no service"))?;
        Ok(NoServiceStarts { created: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.created
            && let Err(e) = run(sudo("rm").args(["-f", POLICY_RC_D]))
        {
            eprintln!("setup: warning: could not remove {POLICY_RC_D}: {e:#}");
        }
    }
}

/// Debian's `prometheus` (server and `promtool`) for the dashboard and alert-rule tests, which
/// start their own server on a free loopback port. The package would start and enable a
/// service on :9090 that scrapes itself into /var/lib/prometheus: it is installed with service
/// starts forbidden, and where systemd runs the unit is disabled and stopped. Without
/// recommends (no node exporter). Returns whether it installed anything.
fn ensure_prometheus(apt_updated: &mut bool) -> Result<bool> {
    if package_installed("prometheus") && Path::new("/usr/bin/promtool").exists() {
        return Ok(false);
    }
    eprintln!("setup: installing Debian's prometheus (its service is not started)");
    let guard = NoServiceStarts::new()?;
    apt_install(&["prometheus"], false, apt_updated)?;
    drop(guard);
    if Path::new("/run/systemd/system").is_dir() {
        run(sudo("systemctl").args(["disable", "--now", "--quiet", "prometheus.service"]))
            .context("disabling the prometheus service the package enabled")?;
    }
    Ok(true)
}

fn has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false)
}

/// bpf-linker present and linked against LLVM 22 (rustc's LLVM).
fn has_bpf_linker() -> bool {
    let bin = cargo_bin().join("bpf-linker");
    if !bin.exists() {
        return false;
    }
    Command::new("ldd")
        .arg(&bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("libLLVM.so.22"))
        .unwrap_or(false)
}

/// `cargo fuzz` present (any version: a newer one installed by hand is kept).
fn has_cargo_fuzz() -> bool {
    Command::new(cargo_bin().join("cargo-fuzz"))
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Installs whatever is missing. Prints what it did, or that nothing was needed.
pub fn ensure() -> Result<()> {
    let mut did = Vec::new();
    let mut apt_updated = false;

    for (packages, recommends, what) in [
        (PACKAGES, true, "Debian packages"),
        (
            PACKAGES_WITHOUT_RECOMMENDS,
            false,
            "Debian packages without their recommended ones",
        ),
    ] {
        let missing = missing(packages);
        if !missing.is_empty() {
            eprintln!("setup: installing {what}: {}", missing.join(" "));
            apt_install(&missing, recommends, &mut apt_updated)?;
            if !did.contains(&"packages") {
                did.push("packages");
            }
        }
    }

    if ensure_prometheus(&mut apt_updated)? {
        did.push("prometheus");
    }

    if !has_rust_src() {
        eprintln!("setup: adding rust-src to the nightly toolchain (the eBPF build needs it)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context(
            "could not add rust-src to the preinstalled nightly toolchain; the eBPF programs \
                 are built with `cargo +nightly -Z build-std=core` and need it",
        )?;
        did.push("rust-src");
    }

    if !has_bpf_linker() {
        eprintln!("setup: building bpf-linker against LLVM 22 (about a minute)");
        let mut path = OsString::from(format!("{LLVM_PREFIX}/bin:"));
        path.push(path_with_cargo_bin());
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(Command::new(cargo)
            .args(["install", "bpf-linker", "--version", "0.13.0", "--force"])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))?;
        if !has_bpf_linker() {
            bail!("bpf-linker was installed but is not linked against LLVM 22");
        }
        did.push("bpf-linker");
    }

    if !has_cargo_fuzz() {
        eprintln!("setup: building cargo-fuzz {CARGO_FUZZ_VERSION} (a few minutes)");
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(Command::new(cargo)
            .arg("install")
            .arg("--locked")
            .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}")))?;
        if !has_cargo_fuzz() {
            bail!("cargo-fuzz was installed but `cargo fuzz --version` fails");
        }
        did.push("cargo-fuzz");
    }

    if did.is_empty() {
        eprintln!("setup: everything is in place");
    } else {
        eprintln!("setup: done ({})", did.join(", "));
    }
    Ok(())
}
