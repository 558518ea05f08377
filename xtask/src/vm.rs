//! `cargo xtask vm-test`: the integration tests on Debian's kernels, in QEMU.
//!
//! This host's kernel refuses fentry and has no kprobes, so those probe tiers are tested in VMs:
//! Debian's cloud kernels (6.1 and 6.12, both with BTF, kprobes and fentry) boot under TCG with an
//! initramfs holding busybox, the test binary and its shared libraries. Its `/init` mounts what the
//! tests need, runs the test binary once per tier (`CGTRACE_TIER`), prints a marker line per run
//! to the serial console and powers off. The host reads the markers from the console log.
//!
//! Kernels are downloaded once (`apt-get download`) into `$CGTRACE_VM_CACHE` or
//! `/var/cache/cgtrace-vm/`; later runs use the cached `vmlinuz` without network.
use std::{
    collections::BTreeSet,
    env,
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

use crate::{is_root, run as run_command, setup, workspace_root};

/// The integration test target run in the VMs.
const TEST_TARGET: &str = "memcg_lifecycle";

/// The probe tiers, in the order the VM runs them.
const TIERS: &[&str] = &["fentry", "kprobe", "tracepoint"];

const DEFAULT_CACHE: &str = "/var/cache/cgtrace-vm";
const BUSYBOX: &str = "/bin/busybox";
/// Where the test binary sits inside the VM.
const VM_TEST_DIR: &str = "test";

const RUN_MARKER: &str = "CGTRACE-VM-RUN";
const RESULT_MARKER: &str = "CGTRACE-VM-RESULT";
const DONE_MARKER: &str = "CGTRACE-VM-DONE";
/// Lines of a failed tier's libtest report shown: its start (which test, where it panicked) and
/// its end (the rest of the message, the summary). A VM that did not finish shows its last lines.
const HEAD_LINES: usize = 40;
const TAIL_LINES: usize = 60;

#[derive(Args)]
pub struct VmTestArgs {
    /// Which Debian kernel(s) to boot.
    #[arg(long, value_enum, default_value = "all")]
    kernel: KernelChoice,
    /// Keep the initramfs and print a QEMU command that boots it into a shell.
    #[arg(long)]
    keep: bool,
    /// Seconds a VM may run before it is killed and counted as failed (TCG is slow).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The integration test target to run in the VMs.
    #[arg(long, default_value = TEST_TARGET)]
    test: String,
}

impl Default for VmTestArgs {
    /// The full matrix, as `cargo xtask test` runs it.
    fn default() -> Self {
        VmTestArgs {
            kernel: KernelChoice::All,
            keep: false,
            timeout: 600,
            test: TEST_TARGET.to_string(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

/// A Debian kernel series: package names `<prefix><abi>[+<tag>]-cloud-amd64`.
struct Series {
    label: &'static str,
    prefix: &'static str,
    /// The same prefix as an extended regular expression, for `apt-cache search`.
    prefix_regex: &'static str,
}

const SERIES: &[Series] = &[
    Series {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        prefix_regex: r"linux-image-6\.1\.0-",
    },
    Series {
        label: "6.12",
        prefix: "linux-image-6.12.",
        prefix_regex: r"linux-image-6\.12\.",
    },
];

const FLAVOUR_SUFFIX: &str = "-cloud-amd64";

impl Series {
    fn selected(&self, choice: KernelChoice) -> bool {
        match choice {
            KernelChoice::All => true,
            KernelChoice::V6_1 => self.label == "6.1",
            KernelChoice::V6_12 => self.label == "6.12",
        }
    }

    /// The ABI number of a package of this series (`56` in `linux-image-6.1.0-56-cloud-amd64`,
    /// `117` in `linux-image-6.12.117+deb12-cloud-amd64`); None for other packages.
    fn abi(&self, package: &str) -> Option<u32> {
        let middle = package
            .strip_prefix(self.prefix)?
            .strip_suffix(FLAVOUR_SUFFIX)?;
        let (number, tag) = middle.split_once('+').unwrap_or((middle, ""));
        let tag_ok = tag.chars().all(|c| c.is_ascii_alphanumeric());
        if !tag_ok || (middle.contains('+') && tag.is_empty()) {
            return None;
        }
        number.parse().ok()
    }

    fn apt_regex(&self) -> String {
        format!(
            "^{}[0-9]+(\\+[a-z0-9]+)?{FLAVOUR_SUFFIX}$",
            self.prefix_regex
        )
    }

    /// The newest package of this series the apt lists or the cache know.
    fn newest(&self, cache: &Path) -> Result<Option<String>> {
        let mut names = apt_packages(&self.apt_regex())?;
        names.extend(cached_packages(cache)?);
        Ok(names
            .into_iter()
            .filter_map(|n| self.abi(&n).map(|abi| (abi, n)))
            .max()
            .map(|(_, n)| n))
    }
}

/// A kernel ready to boot.
struct Kernel {
    /// The release, e.g. `6.1.0-56-cloud-amd64`.
    release: String,
    vmlinuz: PathBuf,
}

/// What one VM reported: each tier's exit status (None: it never ran) and whether it finished.
struct VmOutcome {
    statuses: Vec<(&'static str, Option<i32>)>,
    finished: bool,
    /// Killed at the timeout (else, if not finished, it stopped early: a crash or a panic).
    timed_out: bool,
    log: PathBuf,
}

impl VmOutcome {
    fn passed(&self) -> bool {
        self.finished && self.statuses.iter().all(|(_, s)| *s == Some(0))
    }
}

pub fn run(args: VmTestArgs) -> Result<()> {
    setup::ensure()?;
    require_host_tools()?;
    let cache = cache_dir();
    let out_dir = workspace_root().join("target/vm-test");
    fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;

    let kernels = prepare_kernels(&cache, args.kernel)?;
    let binary = build_test_binary(&args.test)?;
    let initramfs = out_dir.join("initramfs.cpio.gz");
    build_initramfs(&binary, &args.test, &initramfs)?;

    let timeout = Duration::from_secs(args.timeout);
    let mut outcomes = Vec::new();
    for kernel in &kernels {
        let outcome = boot(kernel, &initramfs, &out_dir, timeout)?;
        outcomes.push((kernel, outcome));
    }

    for (kernel, outcome) in &outcomes {
        if !outcome.passed() {
            print_failure(kernel, outcome)?;
        }
    }
    print_summary(&outcomes);
    if args.keep {
        print_shell_command(&kernels, &initramfs);
    } else {
        fs::remove_file(&initramfs).with_context(|| format!("remove {}", initramfs.display()))?;
    }

    let failed = outcomes.iter().filter(|(_, o)| !o.passed()).count();
    if failed > 0 {
        bail!("vm-test: {failed} of {} kernel(s) failed", outcomes.len());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Host tools

/// The programs vm-test runs, with the Debian package that provides each.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("ldd", "libc-bin"),
    ("gzip", "gzip"),
];

fn require_host_tools() -> Result<()> {
    for (program, package) in HOST_TOOLS {
        if find_in_path(program).is_none() {
            bail!("vm-test needs `{program}`: install the Debian package {package}");
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        bail!(
            "vm-test needs a static busybox at {BUSYBOX}: install the Debian package busybox-static"
        );
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// Kernel cache

fn cache_dir() -> PathBuf {
    env::var_os("CGTRACE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The newest kernel of each selected series, downloaded and extracted if not cached yet.
/// A series with no package anywhere is reported and skipped, unless it was asked for alone.
fn prepare_kernels(cache: &Path, choice: KernelChoice) -> Result<Vec<Kernel>> {
    fs::create_dir_all(cache).with_context(|| {
        format!(
            "create the kernel cache {} (set CGTRACE_VM_CACHE to a writable directory)",
            cache.display()
        )
    })?;
    let mut kernels = Vec::new();
    for series in SERIES.iter().filter(|s| s.selected(choice)) {
        let Some(package) = series.newest(cache)? else {
            let msg = format!(
                "no linux-image-{}.*{FLAVOUR_SUFFIX} package in the apt lists or in {}",
                series.label,
                cache.display()
            );
            if choice != KernelChoice::All {
                bail!("vm-test: {msg}");
            }
            eprintln!("vm-test: SKIPPING kernel {}: {msg}", series.label);
            continue;
        };
        kernels.push(cached_kernel(cache, &package)?);
    }
    if kernels.is_empty() {
        bail!("vm-test: no Debian cloud kernel is available to boot");
    }
    Ok(kernels)
}

/// Package names matching an extended regular expression in the apt lists (offline).
fn apt_packages(regex: &str) -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", regex])
        .output()
        .context("run apt-cache search")?;
    if !out.status.success() {
        bail!(
            "apt-cache search {regex} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(" - ").next())
        .map(|n| n.trim().to_string())
        .collect())
}

/// Packages whose vmlinuz is in the cache already.
fn cached_packages(cache: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(cache).with_context(|| format!("read {}", cache.display()))? {
        let entry = entry.with_context(|| format!("read {}", cache.display()))?;
        if entry.path().join("vmlinuz").is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// `<cache>/<package>/vmlinuz`, downloading and extracting the package the first time.
fn cached_kernel(cache: &Path, package: &str) -> Result<Kernel> {
    let dir = cache.join(package);
    let vmlinuz = dir.join("vmlinuz");
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(package)
        .to_string();
    if vmlinuz.is_file() {
        eprintln!("vm-test: kernel {release}: cached in {}", dir.display());
        return Ok(Kernel { release, vmlinuz });
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let deb = match find_deb(&dir, package)? {
        Some(deb) => deb,
        None => download_deb(&dir, package)?,
    };
    extract_vmlinuz(&deb, &release, &vmlinuz)?;
    eprintln!(
        "vm-test: kernel {release}: extracted to {}",
        vmlinuz.display()
    );
    Ok(Kernel { release, vmlinuz })
}

fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("read {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// `apt-get download` into `dir`; on failure (stale lists name a version the mirror dropped)
/// refreshes the lists once, when root, and tries again.
fn download_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    eprintln!("vm-test: downloading {package}");
    if apt_download(dir, package).is_err() {
        if !is_root() {
            bail!(
                "apt-get download {package} failed; the package lists may be stale: run `sudo apt-get update`"
            );
        }
        eprintln!("vm-test: download failed; refreshing the package lists and retrying");
        run_command(Command::new("apt-get").args(["update", "-qq"]))?;
        apt_download(dir, package)?;
    }
    find_deb(dir, package)?.with_context(|| {
        format!(
            "apt-get download {package} succeeded but no .deb is in {}",
            dir.display()
        )
    })
}

fn apt_download(dir: &Path, package: &str) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(dir);
    if is_root() {
        // apt drops to the `_apt` user to download, which cannot write the root-owned cache.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    run_command(cmd.args(["download", "-qq", package]))
}

/// `dpkg-deb -x` into a scratch directory, then `boot/vmlinuz-<release>` moved into place
/// (renamed last, so an interrupted run leaves no half-written vmlinuz).
fn extract_vmlinuz(deb: &Path, release: &str, vmlinuz: &Path) -> Result<()> {
    let dir = vmlinuz
        .parent()
        .context("vmlinuz has no parent directory")?;
    let scratch = dir.join("extract.tmp");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))?;
    }
    run_command(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&scratch))?;
    let image = scratch.join(format!("boot/vmlinuz-{release}"));
    let partial = dir.join("vmlinuz.tmp");
    fs::copy(&image, &partial)
        .with_context(|| format!("copy {} (is it in the package?)", image.display()))?;
    fs::rename(&partial, vmlinuz).with_context(|| format!("rename to {}", vmlinuz.display()))?;
    fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))
}

// ---------------------------------------------------------------------------------------------
// Test binary

/// `cargo test --no-run` for the test target; the path of its executable.
fn build_test_binary(test: &str) -> Result<PathBuf> {
    eprintln!("vm-test: building the `{test}` test binary");
    let out = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace_root())
        .env("PATH", setup::path_with_cargo_bin())
        .args(["test", "-p", "integration-tests", "--test", test])
        .args(["--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the `{test}` test binary failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| artifact_target_name(l).as_deref() == Some(test))
        .filter_map(|l| json_string_field(l, "executable"))
        .next_back()
        .map(PathBuf::from)
        .with_context(|| format!("cargo reported no executable for the test target `{test}`"))
}

/// The `target.name` of a cargo compiler-artifact message.
fn artifact_target_name(message: &str) -> Option<String> {
    let target = message.find(r#""target":{"#)?;
    json_string_field(&message[target..], "name")
}

/// The first `"key":"value"` string in compact JSON (cargo's messages), unescaped.
/// Enough for cargo's messages; xtask keeps to anyhow and clap.
fn json_string_field(json: &str, key: &str) -> Option<String> {
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
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
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

/// The VM's `/init`: mount what the tests need, run the test binary on every tier, power off.
/// With `cgtrace.shell` on the kernel command line it opens a shell instead of running tests.
fn init_script(test_path: &str) -> String {
    let tiers = TIERS.join(" ");
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
# The v1 memory hierarchy first, where the kernel has it (6.1; 6.12 is built without
# CONFIG_MEMCG_V1), as on the build host; then v2, which gets memory where v1 did not take it.
mkdir -p /sys/fs/cgroup/memory /sys/fs/cgroup/unified
mount -t cgroup -o memory memory /sys/fs/cgroup/memory 2>/dev/null || rmdir /sys/fs/cgroup/memory
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
echo +memory > /sys/fs/cgroup/unified/cgroup.subtree_control 2>/dev/null
echo "CGTRACE-VM-KERNEL $(uname -r)"
grep cgroup /proc/mounts
echo "v2 subtree_control: $(cat /sys/fs/cgroup/unified/cgroup.subtree_control)"
if grep -qw cgtrace.shell /proc/cmdline; then
    echo "cgtrace.shell: the tests are not run; try: CI=true CGTRACE_TIER=fentry {test_path}"
    echo "power off with: poweroff -f"
    setsid cttyhack sh
    poweroff -f
fi
cd /tmp
for tier in {tiers}; do
    echo "{RUN_MARKER} tier=$tier"
    CI=true CGTRACE_TIER=$tier RUST_BACKTRACE=1 {test_path} --test-threads=1
    echo "{RESULT_MARKER} tier=$tier status=$?"
done
echo {DONE_MARKER}
poweroff -f
"#
    )
}

/// A gzip-compressed newc cpio: busybox, the test binary, the shared libraries of both at their
/// host paths, `/dev/console` and `/init`.
fn build_initramfs(binary: &Path, test: &str, output: &Path) -> Result<()> {
    let test_path = format!("/{VM_TEST_DIR}/{test}");
    let mut libs = BTreeSet::new();
    for program in [binary, Path::new(BUSYBOX)] {
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
    cpio.file_from_host(&test_path, binary, 0o755)?;
    for lib in &libs {
        let path = lib
            .to_str()
            .with_context(|| format!("library path {} is not UTF-8", lib.display()))?;
        cpio.file_from_host(path, lib, 0o755)?;
    }
    cpio.file("init", 0o755, init_script(&test_path).as_bytes())?;
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

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// A writer of the cpio "newc" format the kernel unpacks as initramfs. Parent directories are
/// added on first use; paths are relative to the archive's root (a leading `/` is dropped).
struct Newc<W: Write> {
    out: W,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Newc<W> {
    fn new(out: W) -> Self {
        Newc {
            out,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn dir_all(&mut self, path: &str) -> Result<()> {
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

    fn parents_of(&mut self, path: &str) -> Result<String> {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir_all(parent)?;
        }
        Ok(path.to_string())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let path = self.parents_of(path)?;
        self.entry(&path, S_IFREG | mode, data, (0, 0))
    }

    /// A regular file with the content of `source` (symlinks followed).
    fn file_from_host(&mut self, path: &str, source: &Path, mode: u32) -> Result<()> {
        let data = fs::read(source).with_context(|| format!("read {}", source.display()))?;
        self.file(path, mode, &data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let path = self.parents_of(path)?;
        self.entry(&path, S_IFLNK | 0o777, target.as_bytes(), (0, 0))
    }

    fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        let path = self.parents_of(path)?;
        self.entry(&path, S_IFCHR | mode, &[], (major, minor))
    }

    fn finish(mut self) -> Result<W> {
        self.entry("TRAILER!!!", 0, &[], (0, 0))?;
        self.out.flush().context("flush the initramfs")?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> Result<()> {
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
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

// ---------------------------------------------------------------------------------------------
// Booting

fn qemu_command(kernel: &Kernel, initramfs: &Path, append: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", append]);
    cmd
}

/// Boots one kernel with the console going to `<out_dir>/<release>.log`, waits for it to power
/// off (or kills it at the timeout) and reads the markers.
fn boot(kernel: &Kernel, initramfs: &Path, out_dir: &Path, timeout: Duration) -> Result<VmOutcome> {
    let log = out_dir.join(format!("{}.log", kernel.release));
    eprintln!(
        "vm-test: booting {} (console: {})",
        kernel.release,
        log.display()
    );
    let console = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let console_err = console
        .try_clone()
        .with_context(|| format!("reopen {}", log.display()))?;
    let started = Instant::now();
    let mut qemu = qemu_command(kernel, initramfs, "console=ttyS0 panic=-1 quiet")
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        .spawn()
        .context("start qemu-system-x86_64")?;
    let timed_out = !wait_or_kill(&mut qemu, timeout)?;
    let elapsed = started.elapsed().as_secs();
    if timed_out {
        eprintln!(
            "vm-test: {} did not finish in {} s; killed",
            kernel.release,
            timeout.as_secs()
        );
    } else {
        eprintln!("vm-test: {} ran for {elapsed} s", kernel.release);
    }
    let text = read_log(&log)?;
    Ok(VmOutcome {
        statuses: TIERS.iter().map(|t| (*t, tier_status(&text, t))).collect(),
        finished: !timed_out && text.lines().any(|l| l.contains(DONE_MARKER)),
        timed_out,
        log,
    })
}

/// Waits for the child; true if it exited, false if it was killed at the timeout.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().context("wait for qemu")?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            child.kill().context("kill qemu")?;
            child.wait().context("wait for the killed qemu")?;
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn read_log(log: &Path) -> Result<String> {
    let bytes = fs::read(log).with_context(|| format!("read {}", log.display()))?;
    // The serial console ends lines with \r\n.
    Ok(String::from_utf8_lossy(&bytes).replace('\r', ""))
}

/// The exit status the VM reported for a tier (the marker may follow kernel output on a line).
fn tier_status(log: &str, tier: &str) -> Option<i32> {
    let marker = format!("{RESULT_MARKER} tier={tier} status=");
    log.lines().find_map(|l| {
        let rest = &l[l.find(&marker)? + marker.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

// ---------------------------------------------------------------------------------------------
// Reporting

fn status_word(status: Option<i32>) -> String {
    match status {
        Some(0) => "PASS".to_string(),
        Some(code) => format!("FAIL (exit status {code})"),
        None => "FAIL (did not run)".to_string(),
    }
}

fn print_summary(outcomes: &[(&Kernel, VmOutcome)]) {
    let width = outcomes
        .iter()
        .map(|(k, _)| k.release.len())
        .max()
        .unwrap_or(0);
    println!();
    for (kernel, outcome) in outcomes {
        for (tier, status) in &outcome.statuses {
            println!(
                "vm-test  {:width$}  {tier:<10}  {}",
                kernel.release,
                status_word(*status)
            );
        }
        if !outcome.finished {
            let why = if outcome.timed_out {
                "killed at the timeout"
            } else {
                "stopped before CGTRACE-VM-DONE"
            };
            println!(
                "vm-test  {:width$}  {:<10}  FAIL ({why}; see {})",
                kernel.release,
                "vm",
                outcome.log.display()
            );
        }
    }
}

/// The libtest report of each failed tier, or the log's end when the VM did not finish.
fn print_failure(kernel: &Kernel, outcome: &VmOutcome) -> Result<()> {
    let text = read_log(&outcome.log)?;
    for (tier, status) in &outcome.statuses {
        if status.is_some_and(|s| s != 0) {
            eprintln!(
                "\n==== vm-test {} tier {tier}: {} (full log: {}) ====",
                kernel.release,
                status_word(*status),
                outcome.log.display()
            );
            let report = failure_report(tier_section(&text, tier));
            eprintln!("{}", excerpt(report, HEAD_LINES, TAIL_LINES));
        }
    }
    if !outcome.finished {
        eprintln!(
            "\n==== vm-test {}: the VM did not finish (end of {}) ====",
            kernel.release,
            outcome.log.display()
        );
        eprintln!("{}", excerpt(&text, 0, HEAD_LINES + TAIL_LINES));
    }
    Ok(())
}

/// The part of the log between a tier's start marker and its result marker.
fn tier_section<'a>(log: &'a str, tier: &str) -> &'a str {
    let start_marker = format!("{RUN_MARKER} tier={tier}\n");
    let end_marker = format!("{RESULT_MARKER} tier={tier} ");
    let start = log
        .find(&start_marker)
        .map_or(0, |i| i + start_marker.len());
    let end = log[start..]
        .find(&end_marker)
        .map_or(log.len(), |i| start + i);
    &log[start..end]
}

/// libtest's report from its `failures:` line on; all of it when there is none (a crash).
fn failure_report(section: &str) -> &str {
    section
        .find("\nfailures:\n")
        .map_or(section, |i| &section[i + 1..])
}

/// The first `head` and the last `tail` lines of `text`, saying how many were left out.
fn excerpt(text: &str, head: usize, tail: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= head + tail {
        return lines.join("\n");
    }
    let left_out = lines.len() - head - tail;
    let note = format!("[... {left_out} line(s) left out ...]");
    let mut shown = lines[..head].to_vec();
    shown.push(&note);
    shown.extend_from_slice(&lines[lines.len() - tail..]);
    shown.join("\n")
}

fn print_shell_command(kernels: &[Kernel], initramfs: &Path) {
    eprintln!(
        "\nvm-test: kept {}; to boot a kernel into a shell (mounts done, tests not run):",
        initramfs.display()
    );
    for kernel in kernels {
        let cmd = qemu_command(
            kernel,
            initramfs,
            "console=ttyS0 panic=-1 quiet cgtrace.shell",
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect();
        eprintln!("  qemu-system-x86_64 {}", args.join(" "));
    }
}

fn shell_quote(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_abi_parses_debian_package_names() {
        let [v6_1, v6_12] = [&SERIES[0], &SERIES[1]];
        assert_eq!(v6_1.abi("linux-image-6.1.0-56-cloud-amd64"), Some(56));
        assert_eq!(
            v6_12.abi("linux-image-6.12.117+deb12-cloud-amd64"),
            Some(117)
        );
        assert_eq!(v6_12.abi("linux-image-6.12.9-cloud-amd64"), Some(9));
        assert_eq!(v6_1.abi("linux-image-6.12.117+deb12-cloud-amd64"), None);
        assert_eq!(v6_12.abi("linux-image-6.1.0-56-cloud-amd64"), None);
        assert_eq!(v6_1.abi("linux-image-6.1.0-56-cloud-amd64-dbg"), None);
        assert_eq!(v6_12.abi("linux-image-6.12.117+-cloud-amd64"), None);
    }

    #[test]
    fn cargo_messages_give_the_test_executable() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#integration-tests@0.1.0","target":{"kind":["test"],"crate_types":["bin"],"name":"memcg_lifecycle","src_path":"/w/a\"b.rs"},"executable":"/w/target/debug/deps/memcg_lifecycle-0123","fresh":true}"#;
        assert_eq!(
            artifact_target_name(line).as_deref(),
            Some("memcg_lifecycle")
        );
        assert_eq!(
            json_string_field(line, "executable").as_deref(),
            Some("/w/target/debug/deps/memcg_lifecycle-0123")
        );
        assert_eq!(
            json_string_field(line, "src_path").as_deref(),
            Some("/w/a\"b.rs")
        );
        assert_eq!(
            json_string_field(r#"{"executable":null}"#, "executable"),
            None
        );
    }

    #[test]
    fn markers_give_statuses_and_sections() {
        let log = "boot\nCGTRACE-VM-RUN tier=fentry\nok\nCGTRACE-VM-RESULT tier=fentry status=0\n\
                   CGTRACE-VM-RUN tier=kprobe\npanicked\n[  1.0] kernel CGTRACE-VM-RESULT tier=kprobe status=101\n";
        assert_eq!(tier_status(log, "fentry"), Some(0));
        assert_eq!(tier_status(log, "kprobe"), Some(101));
        assert_eq!(tier_status(log, "tracepoint"), None);
        assert_eq!(tier_section(log, "kprobe"), "panicked\n[  1.0] kernel ");
        assert_eq!(excerpt("a\nb", 0, 2), "a\nb");
        assert_eq!(
            excerpt("a\nb\nc", 0, 2),
            "[... 1 line(s) left out ...]\nb\nc"
        );
        assert_eq!(
            excerpt("a\nb\nc\nd", 1, 1),
            "a\n[... 2 line(s) left out ...]\nd"
        );
        assert_eq!(
            failure_report("running 1 test\nfailures:\n---- t"),
            "failures:\n---- t"
        );
    }

    #[test]
    fn newc_entries_are_aligned_and_parents_come_first() -> Result<()> {
        let mut cpio = Newc::new(Vec::new());
        cpio.file("/a/b/c", 0o644, b"hello")?;
        cpio.symlink("a/l", "c")?;
        let bytes = cpio.finish()?;
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        // Each entry's name (then its data) in order, parents before children.
        let mut at = 0;
        for name in ["a\0", "a/b\0", "a/b/c\0", "hello", "a/l\0", "TRAILER!!!\0"] {
            let found = text[at..].find(name);
            assert!(found.is_some(), "{name:?} after byte {at}");
            at += found.unwrap_or(0);
        }
        assert!(text.starts_with("070701"));
        Ok(())
    }
}
