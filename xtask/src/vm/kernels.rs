//! The kernels: Debian's cloud kernel packages, downloaded with vm-test's own apt lists and
//! cached with their `vmlinuz`; the host tools that takes.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{BUSYBOX, DEFAULT_CACHE, Kernel, KernelChoice};
use crate::{is_root, run as run_command};

/// A kernel series of the matrix.
pub(super) struct Series {
    pub(super) label: &'static str,
    pub(super) source: Source,
    pub(super) choice: KernelChoice,
    /// Runs left out on this kernel (passed to its `/init` as `cgtrace.skip=`), each with why.
    pub(super) skip: &'static [(&'static str, &'static str)],
}

/// Where a series' kernel comes from.
pub(super) enum Source {
    /// The newest `linux-image-<version>-cloud-amd64` of a major.minor (None: the newest of
    /// all), from vm-test's apt lists of Debian's archive.
    Debian { version: Option<(u32, u32)> },
    /// One kernel package at a fixed address of an archive whose signing keys Debian does not
    /// ship (Ubuntu's), checked against its SHA-256 instead.
    Pinned(Pinned),
}

pub(super) struct Pinned {
    pub(super) package: &'static str,
    /// `uname -r` of the kernel.
    pub(super) release: &'static str,
    pub(super) url: &'static str,
    pub(super) sha256: &'static str,
}

/// Ubuntu 20.04's last 5.4 kernel (focal-updates): the fleets' kernel without the BPF ring
/// buffer (5.8), `bpf_probe_read_kernel` (5.5) and BPF trampolines (5.5), with BTF (Ubuntu
/// turned `CONFIG_DEBUG_INFO_BTF` on in focal's updates).
const UBUNTU_5_4: Pinned = Pinned {
    package: "linux-image-5.4.0-216-generic",
    release: "5.4.0-216-generic",
    url: "http://archive.ubuntu.com/ubuntu/pool/main/l/linux-signed/linux-image-5.4.0-216-generic_5.4.0-216.236_amd64.deb",
    sha256: "9ab123036173136d766f49cbcd7decb7ab3da629985abd2c7b12a733b1601514",
};

/// Why the runs that need BPF trampolines (fentry/fexit) are left out: "bpf: Introduce BPF
/// trampoline" (fec56f5890d9) is in Linux 5.5.
const NO_TRAMPOLINES: &str = "no BPF trampolines (fentry) before 5.5";
/// Why a filter-agreement run is left out: each kernel runs it on one tier, the tiers taking
/// turns down the matrix (about 80 s a run under TCG; CI's time).
const AGREEMENT_TURN: &str = "the agreement test runs on another tier of this kernel";

pub(super) const SERIES: &[Series] = &[
    Series {
        label: "5.4",
        source: Source::Pinned(UBUNTU_5_4),
        choice: KernelChoice::V5_4,
        skip: &[
            ("fentry", NO_TRAMPOLINES),
            ("btf-file", NO_TRAMPOLINES),
            ("agreement-fentry", NO_TRAMPOLINES),
            ("agreement-tracepoint", AGREEMENT_TURN),
        ],
    },
    Series {
        label: "5.10",
        source: Source::Debian {
            version: Some((5, 10)),
        },
        choice: KernelChoice::V5_10,
        skip: &[
            ("agreement-kprobe", AGREEMENT_TURN),
            ("agreement-tracepoint", AGREEMENT_TURN),
        ],
    },
    Series {
        label: "6.1",
        source: Source::Debian {
            version: Some((6, 1)),
        },
        choice: KernelChoice::V6_1,
        skip: &[
            ("agreement-fentry", AGREEMENT_TURN),
            ("agreement-kprobe", AGREEMENT_TURN),
        ],
    },
    Series {
        label: "6.12",
        source: Source::Debian {
            version: Some((6, 12)),
        },
        choice: KernelChoice::V6_12,
        skip: &[
            ("agreement-kprobe", AGREEMENT_TURN),
            ("agreement-tracepoint", AGREEMENT_TURN),
        ],
    },
    Series {
        label: "newest",
        source: Source::Debian { version: None },
        choice: KernelChoice::Newest,
        skip: &[
            ("agreement-fentry", AGREEMENT_TURN),
            ("agreement-tracepoint", AGREEMENT_TURN),
        ],
    },
];

pub(super) const IMAGE_PREFIX: &str = "linux-image-";
pub(super) const FLAVOUR_SUFFIX: &str = "-cloud-amd64";

/// The version key of a cloud kernel image package: (major, minor, patch, ABI) from
/// `linux-image-6.1.0-56-cloud-amd64` (Debian's ABI number; patch 0) or
/// `linux-image-6.12.117+deb12-cloud-amd64` (upstream patch level; ABI 0). None for other
/// packages (meta-packages, `-dbg`, `-unsigned`).
pub(super) fn package_version(package: &str) -> Option<[u32; 4]> {
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
    version_key(dotted, abi)
}

impl Series {
    pub(super) fn selected(&self, choices: &[KernelChoice]) -> bool {
        choices
            .iter()
            .any(|c| *c == KernelChoice::All || *c == self.choice)
    }

    /// The version key of a Debian package of this series (None for a pinned series).
    pub(super) fn matches(&self, package: &str) -> Option<[u32; 4]> {
        let Source::Debian { version } = self.source else {
            return None;
        };
        let v = package_version(package)?;
        match version {
            Some((major, minor)) if (v[0], v[1]) != (major, minor) => None,
            _ => Some(v),
        }
    }

    /// The newest Debian package of this series among `names`.
    pub(super) fn newest<'a>(&self, names: &'a [String]) -> Option<&'a str> {
        names
            .iter()
            .filter_map(|n| self.matches(n).map(|v| (v, n)))
            .max()
            .map(|(_, n)| n.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Host tools

/// The programs vm-test runs, with the Debian package that provides each.
pub(super) const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("apt-get", "apt"),
    ("apt-cache", "apt"),
    ("dpkg-deb", "dpkg"),
    ("ldd", "libc-bin"),
    ("gzip", "gzip"),
    ("curl", "curl"),
    ("sha256sum", "coreutils"),
];

/// The keyring that signs Debian's archive (bullseye, bookworm and trixie keys).
pub(super) const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

pub(super) fn require_host_tools() -> Result<()> {
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

pub(super) fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// Kernel packages: vm-test's own apt lists

/// The suites the kernels come from: bullseye (5.10), bookworm (6.1, 6.12 backported),
/// trixie and trixie-backports (6.12 and newer), with their security updates.
pub(super) const APT_SOURCES: &[(&str, &str)] = &[
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
pub(super) struct Apt {
    root: PathBuf,
}

impl Apt {
    pub(super) fn new(cache: &Path) -> Apt {
        Apt {
            root: cache.join("apt"),
        }
    }

    pub(super) fn sources_path(&self) -> PathBuf {
        self.root.join("sources.list")
    }

    pub(super) fn lists(&self) -> PathBuf {
        self.root.join("lists")
    }

    pub(super) fn sources() -> String {
        let mut text = String::from("# Written by `cargo xtask vm-test`.\n");
        for (archive, suite) in APT_SOURCES {
            text.push_str(&format!(
                "deb [signed-by={DEBIAN_KEYRING}] http://deb.debian.org/{archive} {suite} main\n"
            ));
        }
        text
    }

    pub(super) fn command(&self, program: &str) -> Command {
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
    pub(super) fn ensure_lists(&self, refresh: bool) -> Result<bool> {
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

    pub(super) fn has_lists(&self) -> Result<bool> {
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

    pub(super) fn update(&self) -> Result<()> {
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
    pub(super) fn image_packages(&self) -> Result<Vec<String>> {
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
    pub(super) fn download(&self, dir: &Path, package: &str) -> Result<PathBuf> {
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

pub(super) fn cache_dir() -> PathBuf {
    env::var_os("CGTRACE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

/// The newest kernel of each selected series, downloaded and extracted if not cached yet.
/// A series with no package anywhere is reported and skipped, unless it was asked for by name;
/// `newest` is skipped when it is a kernel of another selected series.
pub(super) fn prepare_kernels(
    cache: &Path,
    choices: &[KernelChoice],
    refresh: bool,
) -> Result<Vec<Kernel>> {
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
    // (version key, series, Debian package; None: the series' pinned one).
    let mut picked: Vec<([u32; 4], &Series, Option<String>)> = Vec::new();
    for series in SERIES.iter().filter(|s| s.selected(choices)) {
        let version = match &series.source {
            Source::Pinned(pinned) => {
                let key = release_version(pinned.release).with_context(|| {
                    format!("the pinned release {} has no version", pinned.release)
                })?;
                picked.push((key, series, None));
                continue;
            }
            Source::Debian { version } => version,
        };
        let Some(package) = series.newest(&names) else {
            let msg = format!(
                "no linux-image-{}*{FLAVOUR_SUFFIX} package in the apt lists or in {}",
                version.map_or(String::new(), |(a, b)| format!("{a}.{b}.")),
                cache.display()
            );
            if by_name {
                bail!("vm-test: {msg}");
            }
            eprintln!("vm-test: SKIPPING kernel {}: {msg}", series.label);
            continue;
        };
        if picked.iter().any(|(_, _, p)| p.as_deref() == Some(package)) {
            eprintln!(
                "vm-test: kernel {}: {package} is already in the matrix",
                series.label
            );
            continue;
        }
        let key = package_version(package).context("a matched package has a version")?;
        picked.push((key, series, Some(package.to_string())));
    }
    // Oldest first.
    picked.sort_by_key(|(key, _, _)| *key);
    let kernels = picked
        .iter()
        .map(|(_, series, package)| {
            let mut kernel = match (&series.source, package) {
                (Source::Pinned(pinned), _) => pinned_kernel(cache, pinned)?,
                (Source::Debian { .. }, Some(p)) => cached_kernel(cache, &apt, p)?,
                (Source::Debian { .. }, None) => bail!("no package picked for {}", series.label),
            };
            kernel.skip = series.skip;
            Ok(kernel)
        })
        .collect::<Result<Vec<_>>>()?;
    if kernels.is_empty() {
        bail!("vm-test: no kernel is available to boot");
    }
    Ok(kernels)
}

/// (major, minor, patch, ABI) of a release such as `5.4.0-216-generic`.
pub(super) fn release_version(release: &str) -> Option<[u32; 4]> {
    let (dotted, rest) = release.split_once('-').unwrap_or((release, ""));
    let abi = rest
        .split('-')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    version_key(dotted, abi)
}

/// (major, minor, patch, ABI) from `major.minor.patch` and the ABI number.
fn version_key(dotted: &str, abi: u32) -> Option<[u32; 4]> {
    let parts: Vec<u32> = dotted
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [major, minor, patch] = parts[..] else {
        return None;
    };
    Some([major, minor, patch, abi])
}

/// `<cache>/<package>/vmlinuz` of a pinned package: downloaded with curl the first time, its
/// SHA-256 checked before it is unpacked.
pub(super) fn pinned_kernel(cache: &Path, pinned: &Pinned) -> Result<Kernel> {
    let dir = cache.join(pinned.package);
    let vmlinuz = dir.join("vmlinuz");
    let kernel = Kernel {
        release: pinned.release.to_string(),
        package: pinned.package.to_string(),
        vmlinuz: vmlinuz.clone(),
        skip: &[],
    };
    if vmlinuz.is_file() {
        eprintln!(
            "vm-test: kernel {}: cached in {}",
            pinned.release,
            dir.display()
        );
        return Ok(kernel);
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let name = pinned.url.rsplit('/').next().unwrap_or(pinned.package);
    let deb = dir.join(name);
    let partial = dir.join(format!("{name}.part"));
    eprintln!("vm-test: downloading {}", pinned.url);
    run_command(
        Command::new("curl")
            .args(["-fsSL", "--retry", "3", "-o"])
            .arg(&partial)
            .arg(pinned.url),
    )?;
    let got = sha256_of(&partial)?;
    if got != pinned.sha256 {
        fs::remove_file(&partial).with_context(|| format!("remove {}", partial.display()))?;
        bail!(
            "{} has SHA-256 {got}, not the pinned {}",
            pinned.url,
            pinned.sha256
        );
    }
    fs::rename(&partial, &deb).with_context(|| format!("rename to {}", deb.display()))?;
    let scratch = dir.join("extract.tmp");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))?;
    }
    run_command(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&scratch))?;
    let image = image_in(&scratch, pinned.release)
        .with_context(|| format!("{} holds no vmlinuz-{}", deb.display(), pinned.release))?;
    install_image(&image, &vmlinuz)?;
    fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))?;
    eprintln!(
        "vm-test: kernel {}: extracted to {}",
        pinned.release,
        vmlinuz.display()
    );
    Ok(kernel)
}

/// `sha256sum FILE`'s hash.
fn sha256_of(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .context("run sha256sum (coreutils)")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", file.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().unwrap_or("").to_string())
}

/// Copies the image next to its place, then renames it there: an interrupted run leaves no
/// half-written vmlinuz.
fn install_image(image: &Path, vmlinuz: &Path) -> Result<()> {
    let partial = vmlinuz.with_extension("tmp");
    fs::copy(image, &partial).with_context(|| format!("copy {}", image.display()))?;
    fs::rename(&partial, vmlinuz).with_context(|| format!("rename to {}", vmlinuz.display()))
}

/// Packages whose vmlinuz is in the cache already.
pub(super) fn cached_packages(cache: &Path) -> Result<Vec<String>> {
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
pub(super) fn cached_kernel(cache: &Path, apt: &Apt, package: &str) -> Result<Kernel> {
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
        skip: &[],
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

pub(super) fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
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
pub(super) fn image_in(tree: &Path, release: &str) -> Option<PathBuf> {
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
pub(super) fn extract_vmlinuz(apt: &Apt, deb: &Path, release: &str, vmlinuz: &Path) -> Result<()> {
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
    install_image(&image, vmlinuz)?;
    fs::remove_dir_all(&scratch).with_context(|| format!("remove {}", scratch.display()))
}
