//! The VM's initramfs: the test binaries, their shared libraries, busybox and `/init`.
use std::{
    collections::{BTreeMap, BTreeSet},
    env,
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{
    BUSYBOX, DONE_MARKER, FACT_MARKER, RESULT_MARKER, RUN_MARKER, SKIP_MARKER, TestRun,
    VM_BTF_COPY, VM_ENV, VM_TEST_DIR, report::shell_quote,
};
use crate::{setup, workspace_root};

// ---------------------------------------------------------------------------------------------
// Test binaries

/// `cargo test --no-run` for the test targets; the path of each one's executable.
pub(super) fn build_test_binaries(targets: &BTreeSet<&str>) -> Result<BTreeMap<String, PathBuf>> {
    let names: Vec<&str> = targets.iter().copied().collect();
    eprintln!("vm-test: building the test binaries {}", names.join(", "));
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .args(["test", "-p", "integration-tests"]);
    for t in &names {
        cmd.args(["--test", t]);
    }
    let out = cmd
        .args(["--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed ({})", out.status);
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
    {
        if let (Some(name), Some(exe)) = (
            artifact_target_name(line),
            json_string_field(line, "executable"),
        ) && targets.contains(name.as_str())
        {
            found.insert(name, PathBuf::from(exe));
        }
    }
    if let Some(missing) = names.iter().find(|t| !found.contains_key(**t)) {
        bail!("cargo reported no executable for the test target `{missing}`");
    }
    Ok(found)
}

/// The name of the cgtrace binary in the VM's test directory (`--exhaust` only).
pub(super) const CGTRACE_IN_VM: &str = "cgtrace";

/// `cargo build -p cgtrace --bin cgtrace` (the tests' profile); the executable's path.
pub(super) fn build_cgtrace_binary() -> Result<PathBuf> {
    let out = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .args([
            "build",
            "-p",
            "cgtrace",
            "--bin",
            "cgtrace",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo build -p cgtrace")?;
    if !out.status.success() {
        bail!("building cgtrace failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| artifact_target_name(l).as_deref() == Some("cgtrace"))
        .find_map(|l| json_string_field(l, "executable"))
        .map(PathBuf::from)
        .context("cargo reported no cgtrace executable")
}

/// The `target.name` of a cargo compiler-artifact message.
pub(super) fn artifact_target_name(message: &str) -> Option<String> {
    let target = message.find(r#""target":{"#)?;
    json_string_field(&message[target..], "name")
}

/// The first `"key":"value"` string in compact JSON (cargo's messages), unescaped.
/// Enough for cargo's messages; xtask keeps to anyhow and clap.
pub(super) fn json_string_field(json: &str, key: &str) -> Option<String> {
    let opening = format!("\"{key}\":\"");
    let start = json.find(&opening)? + opening.len();
    let mut value = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The absolute paths of the shared libraries `ldd` lists (loader included); none for a static
/// binary.
pub(super) fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed ({})", binary.display(), out.status);
    }
    let mut libs = Vec::new();
    for line in stdout.lines() {
        if line.contains("not found") {
            bail!("ldd {}: {}", binary.display(), line.trim());
        }
        let before_address = line.split(" (").next().unwrap_or("");
        let path = before_address
            .rsplit_once("=>")
            .map_or(before_address, |(_, p)| p)
            .trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

// ---------------------------------------------------------------------------------------------
// Initramfs

/// One run's part of `/init`: left out where the kernel command line names it; BTF hidden
/// around it where it asks; its markers around the test binary.
fn run_block(run: &TestRun) -> String {
    let mut body = String::new();
    let env: Vec<String> = run.env.iter().map(|e| shell_quote(e)).collect();
    let args: Vec<String> = run.args.iter().map(|a| shell_quote(a)).collect();
    body.push_str(&format!(
        "case \" $skip \" in *\" {name} \"*) echo \"{SKIP_MARKER} run={name}\" ;; *)\n",
        name = run.name
    ));
    if run.hide_btf {
        body.push_str(&format!(
            "[ -f {VM_BTF_COPY} ] || cp /sys/kernel/btf/vmlinux {VM_BTF_COPY}\n\
             mount -t tmpfs btf-hidden /sys/kernel/btf\n"
        ));
    }
    body.push_str(&format!(
        "echo \"{RUN_MARKER} run={name}\"\n\
         start=$(cut -d. -f1 /proc/uptime)\n\
         env CI=true RUST_BACKTRACE=1 {VM_ENV}=1 {env} /{VM_TEST_DIR}/{target} --test-threads=1 {args}\n\
         status=$?\n\
         echo \"{RESULT_MARKER} run={name} status=$status seconds=$(( $(cut -d. -f1 /proc/uptime) - start ))\"\n",
        name = run.name,
        env = env.join(" "),
        target = run.target,
        args = args.join(" "),
    ));
    if run.hide_btf {
        body.push_str("umount /sys/kernel/btf\n");
    }
    body.push_str(";; esac\n");
    body
}

/// The VM's `/init`: mount what the tests need, print what the kernel has, run each test run,
/// power off. With `cgtrace.shell` on the kernel command line it opens a shell instead.
pub(super) fn init_script(runs: &[TestRun]) -> String {
    let body: String = runs.iter().map(run_block).collect();
    let first = runs.first().map_or(String::new(), |r| {
        format!(
            "env CI=true {} /{VM_TEST_DIR}/{}",
            r.env.join(" "),
            r.target
        )
    });
    format!(
        r#"#!/bin/sh
# Written by `cargo xtask vm-test`.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mount -t tmpfs cgroup /sys/fs/cgroup
# The v1 memory hierarchy first, where the kernel has it (5.10, 6.1; Debian's 6.12 and newer are
# built without CONFIG_MEMCG_V1), as on the build host; then v2, which gets memory where v1 did
# not take it.
mkdir -p /sys/fs/cgroup/memory /sys/fs/cgroup/unified
mount -t cgroup -o memory memory /sys/fs/cgroup/memory 2>/dev/null || rmdir /sys/fs/cgroup/memory
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
echo +memory > /sys/fs/cgroup/unified/cgroup.subtree_control 2>/dev/null
echo "CGTRACE-VM-KERNEL $(uname -r)"
echo "{FACT_MARKER} version $(cat /proc/version)"
if [ -d /sys/fs/cgroup/memory ]; then memcg=v1; else memcg=v2; fi
echo "{FACT_MARKER} memcg $memcg"
if [ -r /sys/kernel/btf/vmlinux ]; then btf=/sys/kernel/btf/vmlinux; else btf=none; fi
echo "{FACT_MARKER} btf $btf"
echo "{FACT_MARKER} tracepoint_id $(grep -o 'field:[^;]* id;' /sys/kernel/tracing/events/cgroup/cgroup_mkdir/format)"
echo "{FACT_MARKER} mem_total_kib $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
grep cgroup /proc/mounts
echo "v2 subtree_control: $(cat /sys/fs/cgroup/unified/cgroup.subtree_control)"
if grep -qw cgtrace.shell /proc/cmdline; then
    echo "cgtrace.shell: the tests are not run; try: {first}"
    echo "power off with: poweroff -f"
    setsid cttyhack sh
    poweroff -f
fi
# The runs left out on this kernel, named by the host (`cgtrace.skip=a,b`).
skip=$(sed -n 's/.*cgtrace\.skip=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
echo "skipped here: $skip"
cd /tmp
{body}echo {DONE_MARKER}
poweroff -f
"#
    )
}

/// A gzip-compressed newc cpio: busybox, the test binaries, the shared libraries of all at their
/// host paths, `/dev/console` and `/init`.
pub(super) fn build_initramfs(
    binaries: &BTreeMap<String, PathBuf>,
    runs: &[TestRun],
    output: &Path,
) -> Result<()> {
    let mut libs = BTreeSet::new();
    for program in binaries
        .values()
        .map(PathBuf::as_path)
        .chain([Path::new(BUSYBOX)])
    {
        libs.extend(shared_libraries(program)?);
    }

    let file = File::create(output).with_context(|| format!("create {}", output.display()))?;
    let mut gzip = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("start gzip")?;
    let stdin = gzip.stdin.take().context("gzip has no stdin")?;
    let mut cpio = Newc::new(BufWriter::new(stdin));
    for dir in ["proc", "sys", "dev", "tmp", "bin"] {
        cpio.dir_all(dir)?;
    }
    cpio.char_device("dev/console", 0o600, 5, 1)?;
    cpio.file_from_host(BUSYBOX, Path::new(BUSYBOX), 0o755)?;
    cpio.symlink("bin/sh", "busybox")?;
    let stripped_dir = output.with_extension("stripped");
    fs::create_dir_all(&stripped_dir)
        .with_context(|| format!("create {}", stripped_dir.display()))?;
    for (target, binary) in binaries {
        let stripped = strip_debug(binary, &stripped_dir.join(target))?;
        cpio.file_from_host(&format!("/{VM_TEST_DIR}/{target}"), &stripped, 0o755)?;
    }
    for lib in &libs {
        let path = lib
            .to_str()
            .with_context(|| format!("library path {} is not UTF-8", lib.display()))?;
        cpio.file_from_host(path, lib, 0o755)?;
    }
    cpio.file("init", 0o755, init_script(runs).as_bytes())?;
    cpio.finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .context("write to gzip")?;
    let status = gzip.wait().context("wait for gzip")?;
    if !status.success() {
        bail!("gzip failed with {status}");
    }
    let size = fs::metadata(output)
        .with_context(|| format!("stat {}", output.display()))?
        .len();
    eprintln!(
        "vm-test: initramfs {} ({} MiB, {} libraries)",
        output.display(),
        size >> 20,
        libs.len()
    );
    Ok(())
}

/// A copy of `binary` without its debug sections at `out` (the test builds' debug info is most of
/// their size, and the kernel unpacks the initramfs into the VM's memory).
fn strip_debug(binary: &Path, out: &Path) -> Result<PathBuf> {
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(out)
        .status()
        .context("run objcopy (binutils)")?;
    if !status.success() {
        bail!(
            "objcopy --strip-debug {} failed with {status}",
            binary.display()
        );
    }
    Ok(out.to_path_buf())
}

pub(super) const S_IFDIR: u32 = 0o040_000;
pub(super) const S_IFREG: u32 = 0o100_000;
pub(super) const S_IFLNK: u32 = 0o120_000;
pub(super) const S_IFCHR: u32 = 0o020_000;

/// A writer of the cpio "newc" format the kernel unpacks as initramfs. Parent directories are
/// added on first use; paths are relative to the archive's root (a leading `/` is dropped).
pub(super) struct Newc<W: Write> {
    out: W,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Newc<W> {
    pub(super) fn new(out: W) -> Self {
        Newc {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    pub(super) fn dir_all(&mut self, path: &str) -> Result<()> {
        let path = path.trim_start_matches('/');
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if self.dirs.insert(so_far.clone()) {
                self.entry(&so_far, S_IFDIR | 0o755, &[], (0, 0))?;
            }
        }
        Ok(())
    }

    pub(super) fn parents_of(&mut self, path: &str) -> Result<String> {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir_all(parent)?;
        }
        Ok(path.to_string())
    }

    pub(super) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let path = self.parents_of(path)?;
        self.entry(&path, S_IFREG | mode, data, (0, 0))
    }

    /// A regular file with the content of `source` (symlinks followed).
    pub(super) fn file_from_host(&mut self, path: &str, source: &Path, mode: u32) -> Result<()> {
        let data = fs::read(source).with_context(|| format!("read {}", source.display()))?;
        self.file(path, mode, &data)
    }

    pub(super) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let path = self.parents_of(path)?;
        self.entry(&path, S_IFLNK | 0o777, target.as_bytes(), (0, 0))
    }

    pub(super) fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let path = self.parents_of(path)?;
        self.entry(&path, S_IFCHR | mode, &[], (major, minor))
    }

    pub(super) fn finish(mut self) -> Result<W> {
        self.entry("TRAILER!!!", 0, &[], (0, 0))?;
        self.out.flush().context("flush the initramfs")?;
        Ok(self.out)
    }

    pub(super) fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> Result<()> {
        let size = u32::try_from(data.len())
            .with_context(|| format!("{name} is too large for a newc cpio (4 GiB)"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let name_size = name.len() + 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name_size as u32,
            0,
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        let write = |out: &mut W| -> std::io::Result<()> {
            out.write_all(header.as_bytes())?;
            out.write_all(name.as_bytes())?;
            out.write_all(&[0])?;
            out.write_all(&[0; 3][..pad4(header.len() + name_size)])?;
            out.write_all(data)?;
            out.write_all(&[0; 3][..pad4(data.len())])
        };
        write(&mut self.out).with_context(|| format!("write {name} to the initramfs"))
    }
}

/// Bytes of padding to the next multiple of 4.
pub(super) fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}
