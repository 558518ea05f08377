//! The release artefacts: cgtrace builds with the stable toolchain alone (no nightly, rust-src,
//! LLVM or bpf-linker: the eBPF object is committed), and the tarball of `cargo xtask dist`
//! holds a static binary that runs without anything from the host, its man pages and its shell
//! completions.
//!
//! `cargo xtask test` runs `cargo xtask dist` before the tests; run alone, the tests skip when
//! the tarball is missing (with `CI=true` they fail).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use integration_tests::{binary::workspace, ci, stdout_of};

/// The build `cargo xtask dist` makes (xtask/src/dist.rs: same flags, same target directory, so
/// after it this is a no-op), in an environment where only the stable toolchain is reachable:
/// PATH is the stable toolchain's own bin directory (cargo and rustc themselves, no rustup
/// proxies) and the system's; nothing else of the environment is passed but HOME.
#[test]
fn the_stable_toolchain_alone_builds_cgtrace() {
    let Ok(out) = Command::new("rustup")
        .args(["run", "stable", "rustc", "--print", "sysroot"])
        .output()
    else {
        assert!(!ci(), "rustup missing");
        eprintln!("skipping: no rustup");
        return;
    };
    assert!(out.status.success());
    let bin_dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin");
    let path = env::join_paths([bin_dir.as_path(), Path::new("/usr/bin"), Path::new("/bin")])
        .expect("PATH");
    // The oracle for "nothing else": a shell with that PATH finds neither bpf-linker nor
    // rustup (so no nightly toolchain either). (Debian's own LLVM tools in /usr/bin, if
    // installed, are not the eBPF toolchain: without bpf-linker nothing could link for bpf.)
    for tool in ["bpf-linker", "rustup"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .env_clear()
            .env("PATH", &path)
            .output()
            .expect("sh");
        assert!(
            !found.status.success(),
            "{tool} is reachable: {}",
            String::from_utf8_lossy(&found.stdout)
        );
    }
    let rustc = stdout_of(
        Command::new(bin_dir.join("rustc"))
            .env_clear()
            .env("PATH", &path)
            .arg("--version"),
    );
    assert!(!rustc.contains("nightly"), "{rustc}");
    let mut cmd = Command::new(bin_dir.join("cargo"));
    cmd.current_dir(workspace())
        .env_clear()
        .env("PATH", &path)
        .env("RUSTUP_TOOLCHAIN", "stable")
        .env("RUSTC", bin_dir.join("rustc"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "--locked", "--package", "cgtrace"])
        .args(["--bin", "cgtrace", "--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(workspace().join("target/dist-build"));
    for var in ["HOME", "CARGO_HOME"] {
        if let Some(v) = env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let st = cmd.status().expect("stable cargo");
    assert!(st.success(), "the stable-only build failed: {st}");
    let bin = workspace().join("target/dist-build/x86_64-unknown-linux-gnu/release/cgtrace");
    let version = stdout_of(Command::new(&bin).env_clear().arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

/// The tarball: its SHA-256 file checks, the binary is static and runs with an empty
/// environment, a man page per verb of the clap definition, completions for three shells.
#[test]
fn the_tarball_is_self_contained() {
    let version = env!("CARGO_PKG_VERSION");
    let dist = workspace().join("target/dist");
    let name = format!("cgtrace-{version}-x86_64-linux");
    let tarball = dist.join(format!("{name}.tar.gz"));
    if !tarball.is_file() {
        assert!(
            !ci(),
            "{} missing: `cargo xtask dist` builds it",
            tarball.display()
        );
        eprintln!("skipping: no tarball (run `cargo xtask dist`)");
        return;
    }
    stdout_of(
        Command::new("sha256sum")
            .current_dir(&dist)
            .args(["--check", "--strict"])
            .arg(format!("{name}.tar.gz.sha256")),
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("dir");
    stdout_of(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&out),
    );
    let root = out.join(&name);
    let bin = root.join("bin/cgtrace");
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd: {said}"
    );
    let headers = stdout_of(Command::new("readelf").arg("--program-headers").arg(&bin));
    assert!(!headers.contains("INTERP"), "no program interpreter");
    let v = stdout_of(Command::new(&bin).env_clear().arg("--version"));
    assert!(v.contains(version), "{v}");
    // Its help, from the clap definition, needs nothing around either.
    let help = stdout_of(Command::new(&bin).env_clear().args(["check", "--help"]));
    assert!(help.contains("--host-root"), "{help}");

    let cmd = cgtrace::cli::command();
    assert!(root.join("share/man/man1/cgtrace.1").is_file());
    for sub in cmd.get_subcommands() {
        let page = root.join(format!("share/man/man1/cgtrace-{}.1", sub.get_name()));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH"), "{}", page.display());
    }
    for (file, marker) in [
        ("share/bash-completion/completions/cgtrace", "complete"),
        ("share/zsh/site-functions/_cgtrace", "#compdef cgtrace"),
        (
            "share/fish/vendor_completions.d/cgtrace.fish",
            "complete -c cgtrace",
        ),
    ] {
        let text =
            std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(marker), "{file}");
        for sub in cmd.get_subcommands() {
            assert!(
                text.contains(sub.get_name()),
                "{file} completes {}",
                sub.get_name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
