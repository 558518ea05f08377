//! `cargo xtask vm-test`: the integration tests on Debian's kernels, in QEMU.
//!
//! This host's kernel refuses fentry and has no kprobes, so those probe tiers are tested in VMs:
//! Debian's cloud kernels (5.10 from bullseye, 6.1 from bookworm, 6.12, and the newest Debian
//! offers, from trixie or its backports; all with BTF, kprobes and fentry) boot under TCG with an
//! initramfs holding busybox, the test binaries and their shared libraries. Its `/init` mounts
//! what the tests need, prints what it found (`CGTRACE-VM-FACT` lines), runs each test run (the
//! lifecycle tests once per tier, `CGTRACE_TIER`; the classic-tracepoint pipeline test), prints a
//! marker line per run to the serial console and powers off. The host reads the markers from the
//! console log; `--readme` writes the README's kernel table from them.
//!
//! `--exhaust` boots the same kernels with 3 GiB to run the memcg ID exhaustion test (the
//! `exhaust` target: it fills every memcg ID under a test parent; never run it on a host).
//!
//! Kernels are downloaded once (`apt-get download`, with package lists of their own under
//! `<cache>/apt`, so the host's apt sources are not touched) into `$CGTRACE_VM_CACHE` or
//! `/var/cache/cgtrace-vm/`; later runs use the cached `vmlinuz` without network.
use std::{
    collections::{BTreeMap, BTreeSet},
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

/// The integration test target run on every tier in the VMs.
const TEST_TARGET: &str = "memcg_lifecycle";
/// The classic-tracepoint run: the pipeline test that attaches `cgroup:*` through tracefs.
const CLASSIC_TARGET: &str = "probes";
const CLASSIC_TEST: &str = "classic_tracepoints_see_every_cgroup";
/// Set in every test run inside a VM: tests that would harm a shared host (a node-wide OOM)
/// run only where it is set.
const VM_ENV: &str = "CGTRACE_VM";
/// Tests whose names start with this run the `cgtrace` binary, which the VMs do not have.
const END_TO_END: &str = "end_to_end";
/// The memcg ID exhaustion test target (`--exhaust` only).
const EXHAUST_TARGET: &str = "exhaust";

/// The probe tiers, in the order the VM runs them.
const TIERS: &[&str] = &["fentry", "kprobe", "tracepoint"];

const DEFAULT_CACHE: &str = "/var/cache/cgtrace-vm";
const BUSYBOX: &str = "/bin/busybox";
/// Where the test binaries sit inside the VM.
const VM_TEST_DIR: &str = "test";

const RUN_MARKER: &str = "CGTRACE-VM-RUN";
const RESULT_MARKER: &str = "CGTRACE-VM-RESULT";
const DONE_MARKER: &str = "CGTRACE-VM-DONE";
/// `CGTRACE-VM-FACT <key> <value>`: what the VM's init or a test found out about the kernel.
const FACT_MARKER: &str = "CGTRACE-VM-FACT";
/// Lines of a failed run's libtest report shown: its start (which test, where it panicked) and
/// its end (the rest of the message, the summary). A VM that did not finish shows its last lines.
const HEAD_LINES: usize = 40;
const TAIL_LINES: usize = 60;

/// The README's generated kernel table sits between these lines.
const README_BEGIN: &str = "<!-- kernel-matrix:begin (cargo xtask vm-test --readme) -->";
const README_END: &str = "<!-- kernel-matrix:end -->";

/// Guest memory: the matrix fits in 1 GiB; filling every memcg ID takes ~1.7 GB of kernel memory.
const MATRIX_MEMORY_MIB: u32 = 1024;
const EXHAUST_MEMORY_MIB: u32 = 3072;

#[derive(Args)]
pub struct VmTestArgs {
    /// Which Debian kernel(s) to boot (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    kernel: Vec<KernelChoice>,
    /// Keep the initramfs and print a QEMU command that boots it into a shell.
    #[arg(long)]
    keep: bool,
    /// Seconds a VM may run before it is killed and counted as failed (TCG is slow; default
    /// 900, 2400 with --exhaust).
    #[arg(long)]
    timeout: Option<u64>,
    /// Run this integration test target on every tier instead of the matrix's runs.
    #[arg(long)]
    test: Option<String>,
    /// Boot with 3 GiB and run the memcg ID exhaustion test (fills every memcg ID) instead.
    #[arg(long, conflicts_with = "test")]
    exhaust: bool,
    /// Write the kernel table between the markers in README.md from this run's results.
    #[arg(long, conflicts_with_all = ["test", "exhaust"])]
    readme: bool,
    /// Refresh the kernel package lists (`apt-get update` of vm-test's own lists) first.
    #[arg(long)]
    refresh: bool,
    /// Boot nothing: read the console logs the last run left in target/vm-test (with --readme:
    /// rewrite the table from them).
    #[arg(long, conflicts_with_all = ["test", "exhaust", "keep"])]
    from_logs: bool,
}

impl Default for VmTestArgs {
    /// The full matrix, as `cargo xtask test` runs it.
    fn default() -> Self {
        VmTestArgs {
            kernel: vec![KernelChoice::All],
            keep: false,
            timeout: None,
            test: None,
            exhaust: false,
            readme: false,
            refresh: false,
            from_logs: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// The newest Debian kernel (trixie or its backports), when newer than the series above.
    Newest,
    All,
}

/// A Debian kernel series: the newest `linux-image-<version>-cloud-amd64` of a major.minor, or
/// the newest of all.
struct Series {
    label: &'static str,
    /// (major, minor); None: the newest kernel of any version.
    version: Option<(u32, u32)>,
    choice: KernelChoice,
}

const SERIES: &[Series] = &[
    Series {
        label: "5.10",
        version: Some((5, 10)),
        choice: KernelChoice::V5_10,
    },
    Series {
        label: "6.1",
        version: Some((6, 1)),
        choice: KernelChoice::V6_1,
    },
    Series {
        label: "6.12",
        version: Some((6, 12)),
        choice: KernelChoice::V6_12,
    },
    Series {
        label: "newest",
        version: None,
        choice: KernelChoice::Newest,
    },
];

const IMAGE_PREFIX: &str = "linux-image-";
const FLAVOUR_SUFFIX: &str = "-cloud-amd64";

/// The version key of a cloud kernel image package: (major, minor, patch, ABI) from
/// `linux-image-6.1.0-56-cloud-amd64` (Debian's ABI number; patch 0) or
/// `linux-image-6.12.117+deb12-cloud-amd64` (upstream patch level; ABI 0). None for other
/// packages (meta-packages, `-dbg`, `-unsigned`).
fn package_version(package: &str) -> Option<[u32; 4]> {
    let middle = package
        .strip_prefix(IMAGE_PREFIX)?
        .strip_suffix(FLAVOUR_SUFFIX)?;
    let (version, tag) = match middle.split_once('+') {
        Some((v, tag)) if !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric()) => {
            (v, Some(tag))
        }
        Some(_) => return None,
        None => (middle, None),
    };
    let (dotted, abi) = match version.split_once('-') {
        Some((d, abi)) if tag.is_none() => (d, abi.parse().ok()?),
        Some(_) => return None,
        None => (version, 0),
    };
    let parts: Vec<u32> = dotted
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [major, minor, patch] = parts[..] else {
        return None;
    };
    Some([major, minor, patch, abi])
}

impl Series {
    fn selected(&self, choices: &[KernelChoice]) -> bool {
        choices
            .iter()
            .any(|c| *c == KernelChoice::All || *c == self.choice)
    }

    fn matches(&self, package: &str) -> Option<[u32; 4]> {
        let v = package_version(package)?;
        match self.version {
            Some((major, minor)) if (v[0], v[1]) != (major, minor) => None,
            _ => Some(v),
        }
    }

    /// The newest package of this series among `names`.
    fn newest<'a>(&self, names: &'a [String]) -> Option<&'a str> {
        names
            .iter()
            .filter_map(|n| self.matches(n).map(|v| (v, n)))
            .max()
            .map(|(_, n)| n.as_str())
    }
}

/// A kernel ready to boot.
struct Kernel {
    /// The release, e.g. `6.1.0-56-cloud-amd64`.
    release: String,
    /// The Debian package it came from.
    package: String,
    vmlinuz: PathBuf,
}

/// One run of a test binary inside the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TestRun {
    /// Its name in the markers and the summary (a tier, `classic`, `exhaust`).
    name: String,
    /// The integration test target.
    target: String,
    /// Environment settings, `NAME=value`.
    env: Vec<String>,
    /// Extra arguments to the libtest binary.
    args: Vec<String>,
    /// Run with `/sys/kernel/btf` hidden (an empty tmpfs over it; a copy of its vmlinux stays
    /// at [`VM_BTF_COPY`]).
    hide_btf: bool,
}

/// Where the VM keeps a copy of its kernel's BTF for the runs with `/sys/kernel/btf` hidden.
const VM_BTF_COPY: &str = "/tmp/vmlinux.btf";

/// The runs of a mode: the test target on every tier (with `--show-output`, so facts printed
/// by passing tests reach the console), the classic-tracepoint pipeline test, or the exhaustion
/// test alone.
fn test_runs(args: &VmTestArgs) -> Vec<TestRun> {
    if args.exhaust {
        return vec![TestRun {
            name: "exhaust".to_string(),
            target: EXHAUST_TARGET.to_string(),
            env: vec![
                "CGTRACE_EXHAUST=1".to_string(),
                format!("CGTRACE_BIN=/{VM_TEST_DIR}/{CGTRACE_IN_VM}"),
            ],
            args: vec!["--include-ignored".to_string(), "--nocapture".to_string()],
            hide_btf: false,
        }];
    }
    let target = args.test.clone().unwrap_or_else(|| TEST_TARGET.to_string());
    let mut runs: Vec<TestRun> = TIERS
        .iter()
        .map(|tier| TestRun {
            name: (*tier).to_string(),
            target: target.clone(),
            env: vec![format!("CGTRACE_TIER={tier}")],
            // The VMs have no `cgtrace` binary: tests that run it are named `end_to_end_*`.
            args: vec![
                "--show-output".to_string(),
                "--skip".to_string(),
                END_TO_END.to_string(),
            ],
            hide_btf: false,
        })
        .collect();
    if args.test.is_none() {
        let classic = TestRun {
            name: "classic".to_string(),
            target: CLASSIC_TARGET.to_string(),
            env: Vec::new(),
            args: vec![CLASSIC_TEST.to_string(), "--exact".to_string()],
            hide_btf: false,
        };
        runs.extend([
            classic.clone(),
            // The kernel's BTF from a file (`CGTRACE_BTF`) where /sys/kernel/btf is missing: the
            // lifecycle tests check the memcg reads against the kernel's own files, on the tier
            // that uses BTF most (fentry: its attach targets too).
            TestRun {
                name: "btf-file".to_string(),
                target: target.clone(),
                env: vec![
                    "CGTRACE_TIER=fentry".to_string(),
                    format!("CGTRACE_BTF={VM_BTF_COPY}"),
                ],
                args: Vec::new(),
                hide_btf: true,
            },
            // No BTF at all: the classic tracepoints still stream every mkdir/rmdir/release.
            TestRun {
                name: "no-btf".to_string(),
                hide_btf: true,
                ..classic
            },
        ]);
    }
    runs
}

/// What one VM reported: each run's exit status (None: it never ran), whether it finished, and
/// the facts it printed.
struct VmOutcome {
    statuses: Vec<(String, Option<i32>)>,
    facts: BTreeMap<String, String>,
    finished: bool,
    /// Killed at the timeout (else, if not finished, it stopped early: a crash or a panic).
    timed_out: bool,
    seconds: u64,
    log: PathBuf,
}

impl VmOutcome {
    fn passed(&self) -> bool {
        self.finished && self.statuses.iter().all(|(_, s)| *s == Some(0))
    }

    fn run_passed(&self, run: &str) -> bool {
        self.statuses
            .iter()
            .any(|(name, s)| name == run && *s == Some(0))
    }
}

pub fn run(args: VmTestArgs) -> Result<()> {
    setup::ensure()?;
    require_host_tools()?;
    let cache = cache_dir();
    let out_dir = workspace_root().join("target/vm-test");
    fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;

    let kernels = prepare_kernels(&cache, &args.kernel, args.refresh)?;
    let runs = test_runs(&args);
    if args.from_logs {
        let outcomes = kernels
            .iter()
            .map(|k| {
                Ok((
                    k,
                    outcome_from_log(
                        &out_dir.join(format!("{}.log", k.release)),
                        &runs,
                        false,
                        None,
                    )?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        print_summary(&outcomes, Duration::ZERO);
        if args.readme {
            let readme = workspace_root().join("README.md");
            write_readme_table(&readme, &kernel_table(&outcomes))?;
            eprintln!("vm-test: wrote the kernel table to {}", readme.display());
        }
        return Ok(());
    }
    let targets: BTreeSet<&str> = runs.iter().map(|r| r.target.as_str()).collect();
    let mut binaries = build_test_binaries(&targets)?;
    if args.exhaust {
        // The exhaustion test runs `cgtrace live` and `cgtrace check` as an operator would.
        binaries.insert(CGTRACE_IN_VM.to_string(), build_cgtrace_binary()?);
    }
    let initramfs = out_dir.join(if args.exhaust {
        "initramfs-exhaust.cpio.gz"
    } else {
        "initramfs.cpio.gz"
    });
    build_initramfs(&binaries, &runs, &initramfs)?;

    let (memory, default_timeout) = if args.exhaust {
        (EXHAUST_MEMORY_MIB, 2400)
    } else {
        (MATRIX_MEMORY_MIB, 900)
    };
    let timeout = Duration::from_secs(args.timeout.unwrap_or(default_timeout));
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for kernel in &kernels {
        let outcome = boot(
            kernel,
            &initramfs,
            &out_dir,
            &runs,
            memory,
            timeout,
            if args.exhaust { "-exhaust" } else { "" },
        )?;
        outcomes.push((kernel, outcome));
    }

    for (kernel, outcome) in &outcomes {
        if !outcome.passed() {
            print_failure(kernel, outcome)?;
        }
    }
    print_summary(&outcomes, started.elapsed());
    if args.readme {
        let readme = workspace_root().join("README.md");
        write_readme_table(&readme, &kernel_table(&outcomes))?;
        eprintln!("vm-test: wrote the kernel table to {}", readme.display());
    }
    if args.keep {
        print_shell_command(&kernels, &initramfs, memory);
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

/// The keyring that signs Debian's archive (bullseye, bookworm and trixie keys).
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

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
    if !Path::new(DEBIAN_KEYRING).is_file() {
        bail!(
            "vm-test needs Debian's archive keys at {DEBIAN_KEYRING}: install the Debian package debian-archive-keyring"
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
// Kernel packages: vm-test's own apt lists

/// The suites the kernels come from: bullseye (5.10), bookworm (6.1, 6.12 backported),
/// trixie and trixie-backports (6.12 and newer), with their security updates.
const APT_SOURCES: &[(&str, &str)] = &[
    ("debian", "bullseye"),
    ("debian-security", "bullseye-security"),
    ("debian", "bookworm"),
    ("debian-security", "bookworm-security"),
    ("debian", "trixie"),
    ("debian-security", "trixie-security"),
    ("debian", "trixie-backports"),
];

/// apt with package lists, caches and sources of its own under `<cache>/apt`: the host's
/// sources (one Debian release) stay untouched, and its lock is not taken.
struct Apt {
    root: PathBuf,
}

impl Apt {
    fn new(cache: &Path) -> Apt {
        Apt {
            root: cache.join("apt"),
        }
    }

    fn sources_path(&self) -> PathBuf {
        self.root.join("sources.list")
    }

    fn lists(&self) -> PathBuf {
        self.root.join("lists")
    }

    fn sources() -> String {
        let mut text = String::from("# Written by `cargo xtask vm-test`.\n");
        for (archive, suite) in APT_SOURCES {
            text.push_str(&format!(
                "deb [signed-by={DEBIAN_KEYRING}] http://deb.debian.org/{archive} {suite} main\n"
            ));
        }
        text
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        for o in [
            opt("Dir::Etc::SourceList", &self.sources_path()),
            opt("Dir::Etc::SourceParts", &self.root.join("sources.list.d")),
            opt("Dir::State::Lists", &self.lists()),
            opt("Dir::Cache", &self.root.join("cache")),
            // Package lists only: no translations, no AppStream metadata.
            "Acquire::Languages=none".to_string(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".to_string(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".to_string(),
        ] {
            cmd.arg("-o").arg(o);
        }
        if is_root() {
            // apt drops to the `_apt` user to download, which cannot write the root-owned cache.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd
    }

    /// Writes the sources and fetches the lists when they are missing, the sources changed, or
    /// `refresh` asks for it. Returns whether the lists were fetched.
    fn ensure_lists(&self, refresh: bool) -> Result<bool> {
        for dir in [
            self.lists().join("partial"),
            self.root.join("cache/archives/partial"),
            self.root.join("sources.list.d"),
        ] {
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let wanted = Apt::sources();
        let path = self.sources_path();
        let changed = fs::read_to_string(&path).ok().as_deref() != Some(wanted.as_str());
        if changed {
            fs::write(&path, &wanted).with_context(|| format!("write {}", path.display()))?;
        }
        if changed || refresh || !self.has_lists()? {
            self.update()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn has_lists(&self) -> Result<bool> {
        let dir = self.lists();
        for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let name = entry
                .with_context(|| format!("read {}", dir.display()))?
                .file_name();
            // `..._Packages`, stored compressed (`.lz4`) where apt is configured so.
            if name.to_string_lossy().contains("_Packages") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn update(&self) -> Result<()> {
        eprintln!(
            "vm-test: fetching the kernel package lists ({}) into {}",
            APT_SOURCES
                .iter()
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                .join(", "),
            self.lists().display()
        );
        run_command(self.command("apt-get").args(["update", "-qq"]))
    }

    /// The cloud kernel image packages the lists know (offline).
    fn image_packages(&self) -> Result<Vec<String>> {
        let regex = format!(r"^{IMAGE_PREFIX}[0-9].*{FLAVOUR_SUFFIX}$");
        let out = self
            .command("apt-cache")
            .args(["search", "--names-only", &regex])
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

    /// `apt-get download` into `dir`; on failure (the lists name a version the mirror dropped)
    /// refreshes the lists once and tries again.
    fn download(&self, dir: &Path, package: &str) -> Result<PathBuf> {
        eprintln!("vm-test: downloading {package}");
        let fetch = || {
            run_command(
                self.command("apt-get")
                    .current_dir(dir)
                    .args(["download", "-qq", package]),
            )
        };
        if fetch().is_err() {
            eprintln!("vm-test: download failed; refreshing the package lists and retrying");
            self.update()?;
            fetch()?;
        }
        find_deb(dir, package)?.with_context(|| {
            format!(
                "apt-get download {package} succeeded but no .deb is in {}",
                dir.display()
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel cache

fn cache_dir() -> PathBuf {
    env::var_os("CGTRACE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The newest kernel of each selected series, downloaded and extracted if not cached yet.
/// A series with no package anywhere is reported and skipped, unless it was asked for by name;
/// `newest` is skipped when it is a kernel of another selected series.
fn prepare_kernels(cache: &Path, choices: &[KernelChoice], refresh: bool) -> Result<Vec<Kernel>> {
    fs::create_dir_all(cache).with_context(|| {
        format!(
            "create the kernel cache {} (set CGTRACE_VM_CACHE to a writable directory)",
            cache.display()
        )
    })?;
    let apt = Apt::new(cache);
    let mut names = cached_packages(cache)?;
    // Offline with every kernel cached is fine; the lists are only needed to find new ones.
    match apt.ensure_lists(refresh) {
        Ok(_) => names.extend(apt.image_packages()?),
        Err(e) => eprintln!(
            "vm-test: WARNING: no kernel package lists ({e:#}); using the cached kernels only"
        ),
    }
    let by_name = choices.iter().any(|c| *c != KernelChoice::All);
    let mut packages: Vec<String> = Vec::new();
    for series in SERIES.iter().filter(|s| s.selected(choices)) {
        let Some(package) = series.newest(&names) else {
            let msg = format!(
                "no linux-image-{}*{FLAVOUR_SUFFIX} package in the apt lists or in {}",
                series
                    .version
                    .map_or(String::new(), |(a, b)| format!("{a}.{b}.")),
                cache.display()
            );
            if by_name {
                bail!("vm-test: {msg}");
            }
            eprintln!("vm-test: SKIPPING kernel {}: {msg}", series.label);
            continue;
        };
        if packages.iter().any(|p| p == package) {
            eprintln!(
                "vm-test: kernel {}: {package} is already in the matrix",
                series.label
            );
            continue;
        }
        packages.push(package.to_string());
    }
    // Oldest first.
    packages.sort_by_key(|p| package_version(p));
    let kernels = packages
        .iter()
        .map(|p| cached_kernel(cache, &apt, p))
        .collect::<Result<Vec<_>>>()?;
    if kernels.is_empty() {
        bail!("vm-test: no Debian cloud kernel is available to boot");
    }
    Ok(kernels)
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
fn cached_kernel(cache: &Path, apt: &Apt, package: &str) -> Result<Kernel> {
    let dir = cache.join(package);
    let vmlinuz = dir.join("vmlinuz");
    let release = package
        .strip_prefix(IMAGE_PREFIX)
        .unwrap_or(package)
        .to_string();
    let kernel = Kernel {
        release: release.clone(),
        package: package.to_string(),
        vmlinuz: vmlinuz.clone(),
    };
    if vmlinuz.is_file() {
        eprintln!("vm-test: kernel {release}: cached in {}", dir.display());
        return Ok(kernel);
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let deb = match find_deb(&dir, package)? {
        Some(deb) => deb,
        None => apt.download(&dir, package)?,
    };
    extract_vmlinuz(apt, &deb, &release, &vmlinuz)?;
    eprintln!(
        "vm-test: kernel {release}: extracted to {}",
        vmlinuz.display()
    );
    Ok(kernel)
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

/// Where a kernel package keeps the image: `boot/` up to Debian's 6.18 packages,
/// `usr/lib/modules/<release>/` in the newer split ones.
fn image_in(tree: &Path, release: &str) -> Option<PathBuf> {
    [
        format!("boot/vmlinuz-{release}"),
        format!("usr/lib/modules/{release}/vmlinuz"),
        format!("lib/modules/{release}/vmlinuz"),
    ]
    .into_iter()
    .map(|p| tree.join(p))
    .find(|p| p.is_file())
}

/// `dpkg-deb -x` into a scratch directory, then the image moved into place (renamed last, so an
/// interrupted run leaves no half-written vmlinuz). Newer Debian kernels split the image into
/// `linux-binary-<release>`, which `linux-image-<release>` depends on: fetched the same way.
fn extract_vmlinuz(apt: &Apt, deb: &Path, release: &str, vmlinuz: &Path) -> Result<()> {
    let dir = vmlinuz
        .parent()
        .context("vmlinuz has no parent directory")?;
    let scratch = dir.join("extract.tmp");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))?;
    }
    run_command(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&scratch))?;
    let image = match image_in(&scratch, release) {
        Some(image) => image,
        None => {
            let binary = format!("linux-binary-{release}");
            let depends = Command::new("dpkg-deb")
                .args(["-f"])
                .arg(deb)
                .arg("Depends")
                .output()
                .context("run dpkg-deb -f")?;
            let depends = String::from_utf8_lossy(&depends.stdout);
            if !depends
                .split([',', '|', ' ', '('])
                .any(|d| d.trim() == binary)
            {
                bail!(
                    "{} holds no vmlinuz-{release} and does not depend on {binary}",
                    deb.display()
                );
            }
            let binary_deb = match find_deb(dir, &binary)? {
                Some(d) => d,
                None => apt.download(dir, &binary)?,
            };
            run_command(
                Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(&binary_deb)
                    .arg(&scratch),
            )?;
            image_in(&scratch, release).with_context(|| {
                format!(
                    "neither {} nor {} holds vmlinuz-{release}",
                    deb.display(),
                    binary_deb.display()
                )
            })?
        }
    };
    let partial = dir.join("vmlinuz.tmp");
    fs::copy(&image, &partial).with_context(|| format!("copy {}", image.display()))?;
    fs::rename(&partial, vmlinuz).with_context(|| format!("rename to {}", vmlinuz.display()))?;
    fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))
}

// ---------------------------------------------------------------------------------------------
// Test binaries

/// `cargo test --no-run` for the test targets; the path of each one's executable.
fn build_test_binaries(targets: &BTreeSet<&str>) -> Result<BTreeMap<String, PathBuf>> {
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
const CGTRACE_IN_VM: &str = "cgtrace";

/// `cargo build -p cgtrace --bin cgtrace` (the tests' profile); the executable's path.
fn build_cgtrace_binary() -> Result<PathBuf> {
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

/// The VM's `/init`: mount what the tests need, print what the kernel has, run each test run,
/// power off. With `cgtrace.shell` on the kernel command line it opens a shell instead.
fn init_script(runs: &[TestRun]) -> String {
    let mut body = String::new();
    for run in runs {
        let env: Vec<String> = run.env.iter().map(|e| shell_quote(e)).collect();
        let args: Vec<String> = run.args.iter().map(|a| shell_quote(a)).collect();
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
    }
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
cd /tmp
{body}echo {DONE_MARKER}
poweroff -f
"#
    )
}

/// A gzip-compressed newc cpio: busybox, the test binaries, the shared libraries of all at their
/// host paths, `/dev/console` and `/init`.
fn build_initramfs(
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
    for (target, binary) in binaries {
        cpio.file_from_host(&format!("/{VM_TEST_DIR}/{target}"), binary, 0o755)?;
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

fn qemu_command(kernel: &Kernel, initramfs: &Path, append: &str, memory_mib: u32) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2"])
        .arg("-m")
        .arg(memory_mib.to_string())
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
fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    out_dir: &Path,
    runs: &[TestRun],
    memory_mib: u32,
    timeout: Duration,
    log_suffix: &str,
) -> Result<VmOutcome> {
    let log = out_dir.join(format!("{}{log_suffix}.log", kernel.release));
    eprintln!(
        "vm-test: booting {} with {memory_mib} MiB (console: {})",
        kernel.release,
        log.display()
    );
    let console = File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let console_err = console
        .try_clone()
        .with_context(|| format!("reopen {}", log.display()))?;
    let started = Instant::now();
    let mut qemu = qemu_command(
        kernel,
        initramfs,
        "console=ttyS0 panic=-1 quiet",
        memory_mib,
    )
    .stdin(Stdio::null())
    .stdout(console)
    .stderr(console_err)
    .spawn()
    .context("start qemu-system-x86_64")?;
    let timed_out = !wait_or_kill(&mut qemu, timeout)?;
    let seconds = started.elapsed().as_secs();
    if timed_out {
        eprintln!(
            "vm-test: {} did not finish in {} s; killed",
            kernel.release,
            timeout.as_secs()
        );
    } else {
        eprintln!("vm-test: {} ran for {seconds} s", kernel.release);
    }
    outcome_from_log(&log, runs, timed_out, Some(seconds))
}

/// What a VM's console log says; `seconds` None: the sum of its runs' times.
fn outcome_from_log(
    log: &Path,
    runs: &[TestRun],
    timed_out: bool,
    seconds: Option<u64>,
) -> Result<VmOutcome> {
    let text = read_log(log)?;
    Ok(VmOutcome {
        statuses: runs
            .iter()
            .map(|r| (r.name.clone(), run_status(&text, &r.name)))
            .collect(),
        facts: facts(&text),
        finished: !timed_out && text.lines().any(|l| l.contains(DONE_MARKER)),
        timed_out,
        seconds: seconds.unwrap_or_else(|| {
            runs.iter()
                .filter_map(|r| run_seconds(&text, &r.name))
                .sum()
        }),
        log: log.to_path_buf(),
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

/// The text after a marker on the lines holding it (the marker may follow kernel output).
fn after_marker<'a>(log: &'a str, marker: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    log.lines()
        .filter_map(move |l| Some(&l[l.find(marker)? + marker.len()..]))
}

/// The exit status the VM reported for a run.
fn run_status(log: &str, run: &str) -> Option<i32> {
    let marker = format!("{RESULT_MARKER} run={run} status=");
    after_marker(log, &marker).find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Seconds a run took, as the VM measured them.
fn run_seconds(log: &str, run: &str) -> Option<u64> {
    let marker = format!("{RESULT_MARKER} run={run} status=");
    after_marker(log, &marker).find_map(|rest| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix("seconds="))?
            .parse()
            .ok()
    })
}

/// `CGTRACE-VM-FACT <key> <value>` lines; a later line wins.
fn facts(log: &str) -> BTreeMap<String, String> {
    let marker = format!("{FACT_MARKER} ");
    after_marker(log, &marker)
        .filter_map(|rest| {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            (!key.is_empty()).then(|| (key.to_string(), value.trim().to_string()))
        })
        .collect()
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

fn print_summary(outcomes: &[(&Kernel, VmOutcome)], elapsed: Duration) {
    let width = outcomes
        .iter()
        .map(|(k, _)| k.release.len())
        .max()
        .unwrap_or(0);
    println!();
    for (kernel, outcome) in outcomes {
        let text = read_log(&outcome.log).unwrap_or_default();
        for (run, status) in &outcome.statuses {
            let took = run_seconds(&text, run).map_or(String::new(), |s| format!("  ({s} s)"));
            println!(
                "vm-test  {:width$}  {run:<10}  {}{took}",
                kernel.release,
                status_word(*status)
            );
        }
        if let Some(exhaust) = outcome.facts.get("exhaust") {
            println!("vm-test  {:width$}  exhaust     {exhaust}", kernel.release);
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
        println!(
            "vm-test  {:width$}  {:<10}  {} s in the VM",
            kernel.release, "total", outcome.seconds
        );
    }
    println!(
        "vm-test: {} kernel(s) in {} s",
        outcomes.len(),
        elapsed.as_secs()
    );
}

/// The libtest report of each failed run, or the log's end when the VM did not finish.
fn print_failure(kernel: &Kernel, outcome: &VmOutcome) -> Result<()> {
    let text = read_log(&outcome.log)?;
    for (run, status) in &outcome.statuses {
        if status.is_some_and(|s| s != 0) {
            eprintln!(
                "\n==== vm-test {} run {run}: {} (full log: {}) ====",
                kernel.release,
                status_word(*status),
                outcome.log.display()
            );
            let report = failure_report(run_section(&text, run));
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

/// The part of the log between a run's start marker and its result marker.
fn run_section<'a>(log: &'a str, run: &str) -> &'a str {
    let start_marker = format!("{RUN_MARKER} run={run}\n");
    let end_marker = format!("{RESULT_MARKER} run={run} ");
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

fn print_shell_command(kernels: &[Kernel], initramfs: &Path, memory_mib: u32) {
    eprintln!(
        "\nvm-test: kept {}; to boot a kernel into a shell (mounts done, tests not run):",
        initramfs.display()
    );
    for kernel in kernels {
        let cmd = qemu_command(
            kernel,
            initramfs,
            "console=ttyS0 panic=-1 quiet cgtrace.shell",
            memory_mib,
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect();
        eprintln!("  qemu-system-x86_64 {}", args.join(" "));
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// The README's kernel table

/// The upstream version from `/proc/version` (`... #1 SMP Debian 5.10.262-1 (2026-07-31)`).
fn debian_version(proc_version: &str) -> Option<&str> {
    // The last one: the compiler's version in parentheses says "Debian" too.
    let after = &proc_version[proc_version.rfind("Debian ")? + "Debian ".len()..];
    after.split_whitespace().next()
}

/// The type of the classic tracepoints' `id` from its format line (`field:u64 id;`).
fn tracepoint_id_type(fact: &str) -> Option<&str> {
    let decl = fact.strip_prefix("field:")?.strip_suffix(" id;")?;
    Some(decl.trim())
}

/// One row per kernel: what passed on it, and what the kernel offered, from the VM's output.
fn kernel_table(outcomes: &[(&Kernel, VmOutcome)]) -> String {
    let mut text = String::from(
        "| kernel | Debian package | memcg | probe tiers passed | classic tracepoints | failed mkdirs caught by | BTF | buffer |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (kernel, o) in outcomes {
        let fact = |k: &str| o.facts.get(k).map(String::as_str);
        let version = fact("version")
            .and_then(debian_version)
            .unwrap_or(kernel.release.as_str());
        let tiers: Vec<&str> = TIERS.iter().copied().filter(|t| o.run_passed(t)).collect();
        let failed: Vec<&str> = TIERS.iter().copied().filter(|t| !o.run_passed(t)).collect();
        let mut tier_cell = if tiers.is_empty() {
            "none".to_string()
        } else {
            tiers.join(", ")
        };
        if !failed.is_empty() {
            tier_cell.push_str(&format!(" (FAILED: {})", failed.join(", ")));
        }
        let id = fact("tracepoint_id")
            .and_then(tracepoint_id_type)
            .map_or(String::new(), |t| format!(" (`{t} id`)"));
        let classic = if o.run_passed("classic") {
            format!("passed{id}")
        } else {
            format!("FAILED{id}")
        };
        let mut btf = match fact("btf") {
            Some("none") | None => "none".to_string(),
            Some(path) => format!("`{path}`"),
        };
        let word = |run: &str| {
            if o.run_passed(run) {
                "passed"
            } else {
                "FAILED"
            }
        };
        btf.push_str(&format!(
            "; from a file (`CGTRACE_BTF`, fentry): {}; none (classic tracepoints): {}",
            word("btf-file"),
            word("no-btf")
        ));
        text.push_str(&format!(
            "| {version} (`{release}`) | `{package}` | {memcg} | {tier_cell} | {classic} | {hooks} | {btf} | ring buffer |\n",
            release = kernel.release,
            package = kernel.package,
            memcg = fact("memcg").unwrap_or("?"),
            hooks = fact("mkdir_failure_hooks").unwrap_or("?"),
        ));
    }
    let total: u64 = outcomes.iter().map(|(_, o)| o.seconds).sum();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    text.push_str(&format!(
        "\nWritten by `cargo xtask vm-test --readme` from the VMs' console output on {date}: \
         {} kernel(s) under QEMU TCG in {} min {} s.\n",
        outcomes.len(),
        total / 60,
        total % 60
    ));
    text
}

/// Replaces what is between the markers in the README (the markers stay).
fn write_readme_table(readme: &Path, table: &str) -> Result<()> {
    crate::write_between_markers(readme, README_BEGIN, README_END, table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_versions_parse_debian_package_names() {
        assert_eq!(
            package_version("linux-image-6.1.0-56-cloud-amd64"),
            Some([6, 1, 0, 56])
        );
        assert_eq!(
            package_version("linux-image-5.10.0-46-cloud-amd64"),
            Some([5, 10, 0, 46])
        );
        assert_eq!(
            package_version("linux-image-6.12.117+deb12-cloud-amd64"),
            Some([6, 12, 117, 0])
        );
        assert_eq!(
            package_version("linux-image-7.3.4+deb13-cloud-amd64"),
            Some([7, 3, 4, 0])
        );
        assert_eq!(
            package_version("linux-image-6.12.9-cloud-amd64"),
            Some([6, 12, 9, 0])
        );
        for not_an_image in [
            "linux-image-6.1.0-56-cloud-amd64-dbg",
            "linux-image-6.12.117+-cloud-amd64",
            "linux-image-6.12-cloud-amd64",
            "linux-image-cloud-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-binary-7.3.4+deb13-cloud-amd64",
        ] {
            assert_eq!(package_version(not_an_image), None, "{not_an_image}");
        }
    }

    #[test]
    fn series_pick_their_newest_and_newest_picks_any() {
        let names: Vec<String> = [
            "linux-image-5.10.0-32-cloud-amd64",
            "linux-image-5.10.0-46-cloud-amd64",
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.118+deb13-cloud-amd64",
            "linux-image-6.12.9-cloud-amd64",
            "linux-image-7.2.12+deb13-cloud-amd64",
            "linux-image-7.3.4+deb13-cloud-amd64",
            "linux-image-cloud-amd64",
        ]
        .map(String::from)
        .to_vec();
        let pick = |label: &str| {
            SERIES
                .iter()
                .find(|s| s.label == label)
                .and_then(|s| s.newest(&names))
        };
        assert_eq!(pick("5.10"), Some("linux-image-5.10.0-46-cloud-amd64"));
        assert_eq!(pick("6.1"), Some("linux-image-6.1.0-57-cloud-amd64"));
        assert_eq!(pick("6.12"), Some("linux-image-6.12.118+deb13-cloud-amd64"));
        assert_eq!(pick("newest"), Some("linux-image-7.3.4+deb13-cloud-amd64"));
        assert!(SERIES[0].selected(&[KernelChoice::All]));
        assert!(SERIES[0].selected(&[KernelChoice::V6_1, KernelChoice::V5_10]));
        assert!(!SERIES[0].selected(&[KernelChoice::Newest]));
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
    fn markers_give_statuses_sections_and_facts() {
        let log = "boot\nCGTRACE-VM-FACT memcg v2\nCGTRACE-VM-RUN run=fentry\nok\n\
                   CGTRACE-VM-RESULT run=fentry status=0 seconds=41\n\
                   CGTRACE-VM-RUN run=kprobe\npanicked\n[  1.0] kernel CGTRACE-VM-RESULT run=kprobe status=101\n\
                   x CGTRACE-VM-FACT mkdir_failure_hooks the syscall enter and exit hooks\n";
        assert_eq!(run_status(log, "fentry"), Some(0));
        assert_eq!(run_seconds(log, "fentry"), Some(41));
        assert_eq!(run_status(log, "kprobe"), Some(101));
        assert_eq!(run_seconds(log, "kprobe"), None);
        assert_eq!(run_status(log, "tracepoint"), None);
        assert_eq!(run_section(log, "kprobe"), "panicked\n[  1.0] kernel ");
        let f = facts(log);
        assert_eq!(f.get("memcg").map(String::as_str), Some("v2"));
        assert_eq!(
            f.get("mkdir_failure_hooks").map(String::as_str),
            Some("the syscall enter and exit hooks")
        );
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
    fn matrix_runs_every_tier_and_the_classic_test() {
        let runs = test_runs(&VmTestArgs::default());
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fentry",
                "kprobe",
                "tracepoint",
                "classic",
                "btf-file",
                "no-btf"
            ]
        );
        assert!(runs[4].hide_btf && runs[5].hide_btf && !runs[3].hide_btf);
        assert!(runs[0].env.contains(&"CGTRACE_TIER=fentry".to_string()));
        let exhaust = test_runs(&VmTestArgs {
            exhaust: true,
            ..VmTestArgs::default()
        });
        assert_eq!(exhaust.len(), 1);
        assert_eq!(exhaust[0].target, EXHAUST_TARGET);
        let script = init_script(&runs);
        assert!(script.contains("CGTRACE-VM-RUN run=classic"));
        assert!(script.contains(
            "mount -t tmpfs btf-hidden /sys/kernel/btf\necho \"CGTRACE-VM-RUN run=btf-file\""
        ));
        assert!(script.contains(
            "/test/probes --test-threads=1 classic_tracepoints_see_every_cgroup --exact"
        ));
    }

    #[test]
    fn table_facts_and_readme_markers() {
        assert_eq!(
            debian_version(
                "Linux version 5.10.0-46-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-10 (Debian 10.2.1-6) 10.2.1 20210110) #1 SMP Debian 5.10.262-1 (2026-07-31)"
            ),
            Some("5.10.262-1")
        );
        assert_eq!(tracepoint_id_type("field:u64 id;"), Some("u64"));
        assert_eq!(tracepoint_id_type("field:int id;"), Some("int"));
        assert_eq!(tracepoint_id_type(""), None);
        let readme = format!("a\n{README_BEGIN}\nold\n{README_END}\nb\n");
        assert_eq!(
            crate::replace_between_markers(&readme, README_BEGIN, README_END, "new\n").ok(),
            Some(format!("a\n{README_BEGIN}\nnew\n{README_END}\nb\n"))
        );
        assert!(
            crate::replace_between_markers("no markers", README_BEGIN, README_END, "x").is_err()
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
