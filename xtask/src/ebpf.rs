//! The committed eBPF object (`cgtrace/ebpf/cgtrace.bpf.o`): `cargo xtask build-ebpf` rebuilds
//! it from source, `cargo xtask check-ebpf` (run by `cargo xtask test`) fails when it does not
//! match its sources.
//!
//! The object is built with the nightly toolchain, `rust-src` and `bpf-linker` (through
//! aya-build, as `cgtrace/build.rs` used to), so that building cgtrace itself needs only the
//! stable toolchain. Next to it, `cgtrace.bpf.o.inputs` lists everything it was built from, each
//! with its SHA-256, and the hash of that list (the source hash), which cgtrace embeds and
//! `doctor` prints.
//!
//! Reproducibility: the object's debug info and BTF name the absolute paths of its sources, so
//! the sources are copied to a path that depends only on their hash
//! (`/tmp/cgtrace-ebpf-src/<hash>`) and built there: the object names no path of the checkout
//! or of its target directory (checked with `strings`), and with the same toolchain two builds
//! are byte-for-byte identical (checked). The check compares both the source hash and the
//! bytes.
use std::{
    collections::BTreeSet,
    env, fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{setup, workspace_root};

/// The committed object and its list of inputs, relative to the workspace root.
pub const OBJECT: &str = "cgtrace/ebpf/cgtrace.bpf.o";
pub const INPUTS: &str = "cgtrace/ebpf/cgtrace.bpf.o.inputs";
/// The command that refreshes them.
pub const REFRESH: &str = "cargo xtask build-ebpf";

/// The crates whose sources make up the object.
const SOURCE_CRATES: &[&str] = &["cgtrace-ebpf", "cgtrace-common"];

fn sha256(data: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting sha256sum (coreutils)")?;
    child
        .stdin
        .take()
        .context("sha256sum's stdin")?
        .write_all(data)
        .context("writing to sha256sum")?;
    let out = child.wait_with_output().context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            files_under(root, &path, out)?;
        } else if ty.is_file() {
            out.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

/// `name version` of every package the eBPF crate is built from (and aya-build, which decides
/// how it is built), from `cargo tree` for the bpf target.
fn closure(root: &Path) -> Result<BTreeSet<(String, String)>> {
    let text = crate::output(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args(["tree", "--package", "cgtrace-ebpf", "--target"])
            .args(["bpfel-unknown-none", "--edges", "normal,build", "--prefix"])
            .args(["none", "--format", "{p}", "--locked"]),
    )?;
    let mut set = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(version)) = (words.next(), words.next()) {
            set.insert((
                name.to_string(),
                version.trim_start_matches('v').to_string(),
            ));
        }
    }
    set.insert(("aya-build".to_string(), String::new()));
    Ok(set)
}

/// The `[[package]]` blocks of Cargo.lock for these packages (`aya-build` at any version).
fn lock_entries(lock: &str, pkgs: &BTreeSet<(String, String)>) -> String {
    let mut out = String::new();
    for block in lock.split("\n\n") {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().trim_matches('"').to_string())
        };
        let (Some(name), Some(version)) = (field("name = "), field("version = ")) else {
            continue;
        };
        if pkgs.contains(&(name.clone(), version)) || pkgs.contains(&(name, String::new())) {
            out.push_str(block.trim());
            out.push_str("\n\n");
        }
    }
    out
}

/// The parts of the workspace manifest that shape the object: the package defaults, the
/// profiles and the workspace dependencies the eBPF crate uses.
fn workspace_manifest_part(manifest: &str, pkgs: &BTreeSet<(String, String)>) -> String {
    let names: BTreeSet<&str> = pkgs.iter().map(|(n, _)| n.as_str()).collect();
    let mut section = String::new();
    let mut out = String::new();
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.trim_matches(['[', ']']).to_string();
        }
        let keep = section == "workspace.package"
            || section.starts_with("profile")
            || (section == "workspace.dependencies"
                && t.split(['=', ' '])
                    .next()
                    .is_some_and(|k| names.contains(k) || t.starts_with('[')));
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn toolchain_versions() -> Result<String> {
    let rustc = crate::output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .context("the nightly toolchain (run `cargo xtask setup`)")?;
    let linker = crate::output(
        Command::new("bpf-linker")
            .arg("--version")
            .env("PATH", setup::path_with_cargo_bin()),
    )
    .context("bpf-linker (run `cargo xtask setup`)")?;
    Ok(format!("{}\n{}", rustc.trim(), linker.trim()))
}

/// The inputs list: one `sha256 name` line per input, the toolchain, and the source hash over
/// all of it as the first line.
pub fn inputs(root: &Path) -> Result<String> {
    let mut body = String::new();
    let mut files = Vec::new();
    for krate in SOURCE_CRATES {
        files_under(root, &root.join(krate), &mut files)?;
    }
    files.sort();
    for f in &files {
        let data = fs::read(root.join(f)).with_context(|| format!("reading {}", f.display()))?;
        body.push_str(&format!("{} {}\n", sha256(&data)?, f.display()));
    }
    let pkgs = closure(root)?;
    let lock = fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    body.push_str(&format!(
        "{} Cargo.lock ({})\n",
        sha256(lock_entries(&lock, &pkgs).as_bytes())?,
        pkgs.iter()
            .map(|(n, v)| if v.is_empty() {
                n.clone()
            } else {
                format!("{n} {v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let manifest = fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    body.push_str(&format!(
        "{} Cargo.toml (workspace.package, profiles, eBPF dependencies)\n",
        sha256(workspace_manifest_part(&manifest, &pkgs).as_bytes())?
    ));
    for line in toolchain_versions()?.lines() {
        body.push_str(&format!("toolchain {line}\n"));
    }
    Ok(format!("source-hash {}\n{body}", sha256(body.as_bytes())?))
}

/// The source hash of an inputs list (its first line).
fn source_hash(inputs: &str) -> &str {
    inputs
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("source-hash "))
        .unwrap_or("")
}

/// Copies the workspace's files (tracked and untracked, not ignored) to `dst`.
fn stage(root: &Path, dst: &Path) -> Result<()> {
    let list = crate::output(Command::new("git").current_dir(root).args([
        "ls-files",
        "--cached",
        "--others",
        "--exclude-standard",
        "-z",
    ]))?;
    if dst.exists() {
        fs::remove_dir_all(dst).with_context(|| format!("removing {}", dst.display()))?;
    }
    for rel in list.split('\0').filter(|s| !s.is_empty()) {
        let src = root.join(rel);
        if !src.is_file() {
            continue; // deleted but still in the index
        }
        let to = dst.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&src, &to).with_context(|| format!("copying {rel}"))?;
    }
    Ok(())
}

/// Builds the object from source and returns its bytes and inputs list (nothing is written to
/// the tree).
fn build(root: &Path) -> Result<(Vec<u8>, String)> {
    let inputs = inputs(root)?;
    let hash = source_hash(&inputs);
    let staged = PathBuf::from(format!("/tmp/cgtrace-ebpf-src/{}", &hash[..16]));
    stage(root, &staged)?;
    let out_dir = root.join("target/ebpf");
    fs::create_dir_all(&out_dir)?;
    let package = staged.join("cgtrace-ebpf");
    eprintln!(
        "xtask: building the eBPF object from {} (nightly, bpf-linker)",
        staged.display()
    );
    // SAFETY: xtask is single-threaded here; aya-build reads these as a build script would.
    unsafe {
        env::set_var("OUT_DIR", &out_dir);
        env::set_var("CARGO_CFG_TARGET_ENDIAN", "little");
        env::set_var("CARGO_CFG_TARGET_ARCH", env::consts::ARCH);
        env::set_var("PATH", setup::path_with_cargo_bin());
        env::set_var("CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS", "fallback");
        env::remove_var("CARGO_TARGET_DIR");
    }
    let cwd = env::current_dir()?;
    env::set_current_dir(&staged)?;
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name: "cgtrace-ebpf",
            root_dir: package.to_str().context("non-UTF-8 staging path")?,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    );
    env::set_current_dir(cwd)?;
    // The copy is only needed while building (its path is what the object names).
    let _ = fs::remove_dir_all(&staged);
    built.context("building cgtrace-ebpf")?;
    let object = fs::read(out_dir.join("cgtrace")).context("reading the built object")?;
    Ok((object, inputs))
}

/// `cargo xtask build-ebpf`: rebuilds the committed object and its inputs list.
pub fn build_committed() -> Result<()> {
    setup::ensure()?;
    let root = workspace_root();
    let (object, inputs) = build(&root)?;
    fs::create_dir_all(root.join("cgtrace/ebpf"))?;
    fs::write(root.join(OBJECT), &object).context("writing the object")?;
    fs::write(root.join(INPUTS), &inputs).context("writing the inputs list")?;
    eprintln!(
        "xtask: wrote {OBJECT} ({} bytes, sha256 {}) and {INPUTS} ({})",
        object.len(),
        sha256(&object)?,
        source_hash(&inputs)
    );
    Ok(())
}

/// Lines of `now` that are not in `then`: which inputs changed.
fn changed(then: &str, now: &str) -> Vec<String> {
    let old: BTreeSet<&str> = then.lines().skip(1).collect();
    now.lines()
        .skip(1)
        .filter(|l| !old.contains(l))
        .map(|l| format!("  {l}"))
        .collect()
}

/// `cargo xtask check-ebpf`: the committed object matches its sources (source hash), and the
/// object rebuilt from them is byte-for-byte the committed one.
pub fn check() -> Result<()> {
    let root = workspace_root();
    let committed_inputs = fs::read_to_string(root.join(INPUTS))
        .with_context(|| format!("reading {INPUTS}; run `{REFRESH}`"))?;
    let committed = fs::read(root.join(OBJECT))
        .with_context(|| format!("reading {OBJECT}; run `{REFRESH}`"))?;
    let (object, inputs) = build(&root)?;
    if source_hash(&inputs) != source_hash(&committed_inputs) {
        bail!(
            "{OBJECT} is stale: its sources changed since it was built (source hash {} now, {} \
             committed). Run `{REFRESH}` and commit {OBJECT} and {INPUTS}. Changed inputs:\n{}",
            source_hash(&inputs),
            source_hash(&committed_inputs),
            changed(&committed_inputs, &inputs).join("\n")
        );
    }
    if object != committed {
        bail!(
            "{OBJECT} differs from the object rebuilt from its sources (same source hash {}; \
             sha256 {} committed, {} rebuilt). Run `{REFRESH}` and commit {OBJECT}.",
            source_hash(&inputs),
            sha256(&committed)?,
            sha256(&object)?
        );
    }
    eprintln!(
        "xtask: {OBJECT} matches its sources ({}) and rebuilds byte for byte",
        source_hash(&inputs)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_entries_keep_only_the_closure() {
        let lock = "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\n\n\
                    [[package]]\nname = \"b\"\nversion = \"2.0.0\"\n\n\
                    [[package]]\nname = \"aya-build\"\nversion = \"0.2.0\"\n";
        let pkgs: BTreeSet<_> = [
            ("a".into(), "1.0.0".into()),
            ("aya-build".into(), String::new()),
        ]
        .into_iter()
        .collect();
        let got = lock_entries(lock, &pkgs);
        assert!(got.contains("name = \"a\"") && got.contains("aya-build"));
        assert!(!got.contains("name = \"b\""));
    }

    #[test]
    fn manifest_part_skips_unrelated_dependencies() {
        let m = "[workspace]\nmembers = [\"x\"]\n[workspace.dependencies]\naya-ebpf = \"0.2\"\n\
                 tokio = \"1\"\n[profile.release]\ndebug = false\n";
        let pkgs: BTreeSet<_> = [("aya-ebpf".into(), "0.2.1".into())].into_iter().collect();
        let got = workspace_manifest_part(m, &pkgs);
        assert!(got.contains("aya-ebpf") && got.contains("debug = false"));
        assert!(!got.contains("tokio") && !got.contains("members"));
    }
}
