//! `cargo xtask dist`: the release tarball, `target/dist/cgtrace-<version>-x86_64-linux.tar.gz`
//! (+ `.sha256`): a statically linked cgtrace (glibc's `crt-static`: the musl target would be a
//! toolchain download), its man pages and shell completions generated from the clap definitions.
//!
//! The binary is built with the stable toolchain alone, in an environment without nightly,
//! rust-src, LLVM or bpf-linker (PATH is the stable toolchain's own bin directory and the
//! system's), into its own target directory: the build is the proof that the committed eBPF
//! object is all cgtrace needs.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap_complete::Shell;

use crate::{run, workspace_root};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The release tarball's name (without directory).
pub fn tarball_name() -> String {
    format!("cgtrace-{VERSION}-x86_64-linux.tar.gz")
}

/// [`crate::output`], trimmed.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    Ok(crate::output(cmd)?.trim().to_string())
}

/// The stable toolchain's sysroot (its `bin/` holds cargo and rustc themselves, not the rustup
/// proxies).
fn stable_sysroot() -> Result<PathBuf> {
    Ok(PathBuf::from(stdout_of(
        Command::new("rustup").args(["run", "stable", "rustc", "--print", "sysroot"]),
    )?))
}

/// Builds the static release binary with the stable toolchain alone and returns its path.
pub fn build_static_binary() -> Result<PathBuf> {
    let root = workspace_root();
    let sysroot = stable_sysroot()?;
    let bin_dir = sysroot.join("bin");
    let path = env::join_paths([bin_dir.as_path(), Path::new("/usr/bin"), Path::new("/bin")])?;
    // Nothing of the eBPF toolchain is reachable from this environment.
    for tool in ["bpf-linker", "rustup"] {
        if let Ok(p) = which::which_in(tool, Some(&path), &root) {
            bail!(
                "{tool} is reachable at {} in the stable-only build's PATH",
                p.display()
            );
        }
    }
    let target_dir = root.join("target/dist-build");
    eprintln!(
        "xtask: building the static cgtrace with the stable toolchain alone (PATH={})",
        path.to_string_lossy()
    );
    let mut cmd = Command::new(bin_dir.join("cargo"));
    cmd.current_dir(&root)
        .env_clear()
        .env("PATH", &path)
        .env("RUSTUP_TOOLCHAIN", "stable")
        .env("RUSTC", bin_dir.join("rustc"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "--locked", "--package", "cgtrace"])
        .args(["--bin", "cgtrace", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for var in ["HOME", "CARGO_HOME", "TERM"] {
        if let Some(v) = env::var_os(var) {
            cmd.env(var, v);
        }
    }
    run(&mut cmd)?;
    let bin = target_dir.join(TARGET).join("release/cgtrace");
    check_static(&bin)?;
    Ok(bin)
}

/// NSS functions, which a static glibc still loads from shared libraries at run time.
const NSS_SYMBOLS: &[&str] = &[
    "getaddrinfo",
    "gethostbyname",
    "gethostbyname_r",
    "getpwnam",
    "getpwnam_r",
    "getpwuid",
    "getpwuid_r",
    "getgrnam",
    "getgrgid",
];

/// The binary needs nothing from the host at run time: `ldd` calls it static ("not a dynamic
/// executable" for a static executable, "statically linked" for the static-pie rustc links with
/// `crt-static`, which keeps ASLR), it has no program interpreter and no NSS calls, and it runs
/// with an empty environment.
fn check_static(bin: &Path) -> Result<()> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !text.contains("not a dynamic executable") && !text.contains("statically linked") {
        bail!("{} is not static; ldd says: {}", bin.display(), text.trim());
    }
    let headers = stdout_of(Command::new("readelf").arg("--program-headers").arg(bin))?;
    if headers.contains("INTERP") {
        bail!("{} has a program interpreter", bin.display());
    }
    let symbols = stdout_of(Command::new("nm").arg(bin))?;
    let nss: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| NSS_SYMBOLS.contains(s))
        .collect();
    if !nss.is_empty() {
        bail!(
            "{} calls NSS ({}), which a static glibc loads from shared libraries",
            bin.display(),
            nss.join(", ")
        );
    }
    let version = stdout_of(Command::new(bin).env_clear().arg("--version"))?;
    if !version.contains(VERSION) {
        bail!("{} --version says {version:?}", bin.display());
    }
    eprintln!("xtask: {} is static ({})", bin.display(), text.trim());
    Ok(())
}

/// Man pages (one per verb) and completions for bash, zsh and fish under `dir`.
fn generate_docs(dir: &Path) -> Result<()> {
    let man = dir.join("share/man/man1");
    fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cgtrace::cli::command(), &man).context("writing the man pages")?;
    for (shell, sub) in [
        (Shell::Bash, "share/bash-completion/completions"),
        (Shell::Zsh, "share/zsh/site-functions"),
        (Shell::Fish, "share/fish/vendor_completions.d"),
    ] {
        let d = dir.join(sub);
        fs::create_dir_all(&d)?;
        let mut cmd = cgtrace::cli::command();
        let written = clap_complete::generate_to(shell, &mut cmd, "cgtrace", &d)
            .with_context(|| format!("writing the {shell} completions"))?;
        // bash-completion looks completions up by the command's bare name.
        if shell == Shell::Bash {
            fs::rename(&written, d.join("cgtrace"))?;
        }
    }
    Ok(())
}

/// The source commit (with `-dirty` when the tree has changes) and its time.
pub fn source_commit() -> (String, String) {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(workspace_root())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let time = git(&["log", "-1", "--format=%ct"]).unwrap_or_else(|| "0".into());
    (
        if dirty {
            format!("{commit}-dirty")
        } else {
            commit
        },
        time,
    )
}

/// `cargo xtask dist`: builds the tarball and its SHA-256 file; returns the tarball's path.
pub fn run_dist() -> Result<PathBuf> {
    let root = workspace_root();
    let bin = build_static_binary()?;
    let dist = root.join("target/dist");
    let name = format!("cgtrace-{VERSION}-x86_64-linux");
    let stage = dist.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(stage.join("bin"))?;
    fs::copy(&bin, stage.join("bin/cgtrace")).context("copying the binary")?;
    generate_docs(&stage)?;
    for (from, to) in [
        ("README.md", "README.md"),
        (
            "deploy/systemd/cgtrace.service",
            "share/cgtrace/cgtrace.service",
        ),
        (
            "deploy/kubernetes/daemonset.yaml",
            "share/cgtrace/daemonset.yaml",
        ),
    ] {
        let to = stage.join(to);
        if let Some(p) = to.parent() {
            fs::create_dir_all(p)?;
        }
        fs::copy(root.join(from), &to).with_context(|| format!("copying {from}"))?;
    }
    let (_, time) = source_commit();
    let tarball = dist.join(tarball_name());
    // Reproducible: sorted, owned by root, every file dated at the commit.
    run(Command::new("tar")
        .current_dir(&dist)
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{time}"))
        .args(["--use-compress-program=gzip -n", "-cf"])
        .arg(&tarball)
        .arg(&name))?;
    let sum = stdout_of(
        Command::new("sha256sum")
            .current_dir(&dist)
            .arg(tarball_name()),
    )?;
    fs::write(
        dist.join(format!("{}.sha256", tarball_name())),
        format!("{sum}\n"),
    )?;
    eprintln!("xtask: wrote {} and its .sha256", tarball.display());
    Ok(tarball)
}
