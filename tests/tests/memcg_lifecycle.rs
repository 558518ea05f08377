//! The memcg lifecycle on every probe tier: the order of events for a plain memcg, a memcg pinned
//! by page cache until its pages go, and the CO-RE reads against the kernel's own files; and
//! failed mkdirs, through the hooks this kernel allows.
//!
//! Runs on this host (the tier it picks, or `CGTRACE_TIER`) and inside the kernel-matrix VMs
//! (`cargo xtask vm-test` sets `CGTRACE_TIER` to fentry, kprobe and tracepoint in turn).
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use cgtrace::model::event::Event;
use cgtrace::{
    kernel::hierarchy::Hierarchies,
    probes::{
        Attached, MkdirFailureAttach, MkdirFailureHooks, ProbeOptions, Probes, SubtreeFilter, Tier,
        buffer::Buffer,
    },
};
use cgtrace_common::{EventKind, KernelOffsets};
use integration_tests::{
    Records, buffer_from_env,
    cgroup::{TestParent, charge_file},
    collect_until, drain, legacy_reads_from_env, path_str, tier_from_env,
};

/// Where memcgs live on this kernel: the v1 memory hierarchy, else v2 with +memory.
use integration_tests::oom::MemRoot as MemHier;

struct Fixture {
    mem: MemHier,
    parent: TestParent,
    probes: Probes,
    offsets: KernelOffsets,
}

fn setup(tag: &str) -> Option<Fixture> {
    if !integration_tests::cgroup::privileged(tag) {
        return None;
    }
    let h = Hierarchies::load().expect("hierarchies");
    let mem = MemHier::load(&h);
    let parent = TestParent::new(tag, &[&mem.mount]).expect("test parent");
    if mem.v2 {
        // Children of the parent get a memcg only when the parent enables memory for them.
        fs::write(
            parent.dir(&mem.mount).join("cgroup.subtree_control"),
            "+memory",
        )
        .expect("enable +memory in the test parent (is memory in the v2 root's subtree_control?)");
    }
    let subtree = SubtreeFilter::resolve(&h, &parent.cgroup_path()).expect("resolve the parent");
    let probes = Probes::load(&ProbeOptions {
        tier: tier_from_env(),
        buffer: buffer_from_env(),
        legacy_reads: legacy_reads_from_env(),
        hierarchies: Some(vec![mem.hierarchy_id]),
        subtree: Some(subtree),
        ..ProbeOptions::default()
    })
    .expect("load and attach");
    eprintln!(
        "tier {} ({}) on kernel {}, {} buffer, reads with {}",
        probes.tier.name(),
        probes.attached.name(),
        probes.kernel_release,
        probes.events.buffer().name(),
        probes.kernel_reads
    );
    integration_tests::assert_forced(&probes);
    let offsets = probes.offsets.expect("kernel BTF offsets");
    Some(Fixture {
        mem,
        parent,
        probes,
        offsets,
    })
}

fn usage_file(f: &Fixture, name: &str) -> PathBuf {
    let dir = f.parent.dir(&f.mem.mount).join(name);
    dir.join(if f.mem.v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    })
}

/// The events of one memcg: joined by cgroup id for cgroup events, by css pointer for css ones.
fn events_of(seen: &[Event<'_>], cgroup_id: u64, css: u64) -> Vec<EventKind> {
    seen.iter()
        .filter(|s| (s.has_cgroup && s.cgroup_id == cgroup_id) || (css != 0 && s.css == css))
        .map(|s| s.kind)
        .collect()
}

fn is_css_tier(t: Tier) -> bool {
    t != Tier::Tracepoint
}

#[test]
fn plain_memcg_lifecycle_in_order_with_kernel_values() {
    let Some(mut f) = setup("lifecycle") else {
        return;
    };
    // Siblings alive at the same time: their memcg IDs must differ (IDs name live memcgs).
    let sib: Vec<u64> = (0..3)
        .map(|i| {
            f.parent
                .mkdir(&f.mem.mount, format!("s{i}"))
                .expect("mkdir sibling")
        })
        .collect();
    let ino = f.parent.mkdir(&f.mem.mount, "m").expect("mkdir");
    let usage_before: u64 = fs::read_to_string(usage_file(&f, "m"))
        .expect("read usage")
        .trim()
        .parse()
        .expect("usage is a number");
    f.parent.rmdir(&f.mem.mount, "m").expect("rmdir");
    for i in 0..3 {
        f.parent
            .rmdir(&f.mem.mount, format!("s{i}"))
            .expect("rmdir sibling");
    }

    let mut recs = Records::default();
    let tier = f.probes.tier;
    let done = collect_until(&mut f.probes, &mut recs, Duration::from_secs(30), |s| {
        s.iter()
            .any(|e| e.kind == EventKind::Release && e.cgroup_id == ino)
    });
    let seen = recs.events();
    assert!(done, "no release for the memcg within 30 s: {seen:#?}");
    let mkdir = seen
        .iter()
        .find(|e| e.kind == EventKind::Mkdir && e.cgroup_id == ino)
        .expect("mkdir event");
    let rmdir = seen
        .iter()
        .find(|e| e.kind == EventKind::Rmdir && e.cgroup_id == ino)
        .expect("rmdir event");
    // CO-RE reads against the kernel's own values.
    assert!(mkdir.memcg_id.is_some_and(|id| id > 0), "{mkdir:?}");
    let mut ids: Vec<u32> = sib
        .iter()
        .chain(std::iter::once(&ino))
        .map(|id| {
            seen.iter()
                .find(|e| e.kind == EventKind::Mkdir && e.cgroup_id == *id)
                .and_then(|e| e.memcg_id)
                .expect("memcg ID at mkdir")
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        4,
        "memcg IDs of live siblings are unique: {ids:?}"
    );
    assert_ne!(mkdir.css, 0);
    assert_eq!(rmdir.css, mkdir.css);
    let usage = rmdir.usage_bytes.expect("usage at rmdir");
    assert!(
        usage.abs_diff(usage_before) <= 2 * 4096,
        "usage {usage} vs kernel {usage_before}"
    );
    let kernel_has_kmem = f.offsets.memcg_kmem != KernelOffsets::UNKNOWN;
    assert_eq!(rmdir.kmem_bytes.is_some(), kernel_has_kmem, "{rmdir:?}");
    let release = seen
        .iter()
        .find(|e| e.kind == EventKind::Release && e.cgroup_id == ino)
        .expect("release event");
    assert_eq!(release.memcg_id, None, "release must not read the memcg");
    // With raw tracepoints into the ring buffer, rmdir and release leave out the path their
    // mkdir told (the pipeline puts it back) and read the level instead; classic tracepoints
    // and the perf buffer carry every path.
    let omitted =
        f.probes.attached == Attached::RawTracepoint && f.probes.events.buffer() == Buffer::Ring;
    if let Ok(run) = std::env::var("CGTRACE_TIER") {
        // For the kernel table `cargo xtask vm-test --readme` writes: the buffer this run's
        // probes chose (5.4 has no ring buffer: auto picks the perf buffers there).
        let buffer = match f.probes.events.buffer() {
            Buffer::Ring => "ring",
            Buffer::Perf => "perf",
        };
        println!("CGTRACE-VM-FACT buffer_{run} {buffer}");
    }
    for e in [rmdir, release] {
        assert_eq!(e.level, mkdir.level, "{e:?}");
        if omitted {
            assert!(e.path.is_empty(), "path left out: {e:?}");
        } else {
            assert_eq!(e.path, mkdir.path, "{e:?}");
        }
    }

    let order = events_of(&seen, ino, mkdir.css);
    if is_css_tier(tier) {
        use EventKind::*;
        assert_eq!(
            order,
            [
                CssAlloc,
                CssOnline,
                Mkdir,
                Rmdir,
                CssOffline,
                CssReleased,
                CssFree,
                Release
            ],
            "{seen:#?}"
        );
        // From css_online on, css events carry the owning cgroup's path (composed in the kernel).
        let online = seen
            .iter()
            .find(|e| e.kind == CssOnline && e.css == mkdir.css)
            .expect("css_online");
        assert_eq!(online.path, mkdir.path, "css_online path");
        assert_eq!(
            (online.hierarchy_id, online.cgroup_id),
            (mkdir.hierarchy_id, ino)
        );
        let offline = seen
            .iter()
            .find(|e| e.kind == CssOffline && e.css == mkdir.css)
            .expect("css_offline");
        assert_eq!(offline.path, mkdir.path, "css_offline path");
        assert_eq!(offline.cgroup_id, ino);
        assert!(offline.usage_bytes.is_some());
        let free = seen
            .iter()
            .find(|e| e.kind == CssFree && e.css == mkdir.css)
            .expect("css_free");
        assert_eq!(free.memcg_id, Some(0), "the memcg ID reads 0 at free");
    } else {
        assert_eq!(
            order,
            [EventKind::Mkdir, EventKind::Rmdir, EventKind::Release]
        );
    }
    assert_eq!(f.probes.lost().expect("lost").iter().sum::<u64>(), 0);
}

/// A directory on a real filesystem for the page-cache file (not the cgroup tree).
fn scratch_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf();
    if fs::create_dir_all(&d).is_ok() {
        d
    } else {
        std::env::temp_dir()
    }
}

/// The kernel's count of dying cgroups below the test parent (v2 `cgroup.stat`; None on v1).
fn kernel_dying_descendants(f: &Fixture) -> Option<u64> {
    if !f.mem.v2 {
        return None;
    }
    let stat = fs::read_to_string(f.parent.dir(&f.mem.mount).join("cgroup.stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("nr_dying_descendants "))?
        .trim()
        .parse()
        .ok()
}

#[test]
fn page_cache_keeps_a_memcg_dying_until_its_pages_go() {
    let Some(mut f) = setup("pagecache") else {
        return;
    };
    let ino = f.parent.mkdir(&f.mem.mount, "pc").expect("mkdir");
    let file = scratch_dir().join(format!("cgtrace-pagecache-{}-{ino}", std::process::id()));
    // A shell joins the memcg, writes 4 MiB of file pages (charged to the memcg), exits.
    charge_file(&f.parent.dir(&f.mem.mount).join("pc"), &file, 4 << 20);
    let usage: u64 = fs::read_to_string(usage_file(&f, "pc"))
        .expect("read usage")
        .trim()
        .parse()
        .expect("number");
    assert!(
        usage >= 4 << 20,
        "the file's pages are charged: usage {usage}"
    );
    // rmdir may see the exiting shell for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = f.parent.rmdir(&f.mem.mount, "pc") {
        assert!(Instant::now() < deadline, "rmdir: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tier = f.probes.tier;
    let mut recs = Records::default();
    // Dying: offline (css tiers) happens, free/release do not while the pages stay.
    collect_until(&mut f.probes, &mut recs, Duration::from_secs(3), |_| false);
    let (css, before) = {
        let seen = recs.events();
        let rmdir = seen
            .iter()
            .find(|e| e.kind == EventKind::Rmdir && e.cgroup_id == ino)
            .expect("rmdir event");
        assert!(rmdir.usage_bytes.is_some_and(|u| u >= 4 << 20), "{rmdir:?}");
        (rmdir.css, events_of(&seen, ino, rmdir.css))
    };
    // Newer kernels (7.3 here, v2) move a dying memcg's page cache to the parent at offline:
    // then nothing pins it and the kernel counts no dying descendant. cgtrace must agree with
    // the kernel either way.
    if kernel_dying_descendants(&f) == Some(0) {
        eprintln!("this kernel does not keep a memcg dying for its page cache");
        assert!(
            before.contains(&EventKind::Release),
            "the kernel freed the memcg, cgtrace saw no release: {before:?}"
        );
        if is_css_tier(tier) {
            assert!(before.contains(&EventKind::CssFree), "{before:?}");
        }
        let _ = fs::remove_file(&file);
        return;
    }
    assert!(
        !before.contains(&EventKind::Release),
        "released while pinned: {before:?}"
    );
    if is_css_tier(tier) {
        assert!(before.contains(&EventKind::CssOffline), "{before:?}");
        assert!(!before.contains(&EventKind::CssFree), "{before:?}");
    }
    // Drop the pages: remove the file, write back and drop caches (metadata pages of the
    // filesystem charged to the memcg go too). The memcg is freed, then released.
    fs::remove_file(&file).expect("remove the file");
    // Generous: under TCG on a loaded host the kernel has taken over a minute to free it.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut freed = false;
    while !freed && Instant::now() < deadline {
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
        freed = collect_until(&mut f.probes, &mut recs, Duration::from_secs(2), |s| {
            s.iter()
                .any(|e| e.kind == EventKind::Release && e.cgroup_id == ino)
        });
    }
    drain(&mut f.probes, &mut recs);
    assert!(freed, "not released after its pages were dropped");
    let after = events_of(&recs.events(), ino, css);
    if is_css_tier(tier) {
        let free = after
            .iter()
            .position(|k| *k == EventKind::CssFree)
            .expect("css_free");
        let rel = after
            .iter()
            .position(|k| *k == EventKind::Release)
            .expect("release");
        assert!(free < rel, "{after:?}");
    }
}

/// The offsets resolved from this kernel's own BTF: the core ones always, the memcg counters
/// where the kernel has them (6.12 without CONFIG_MEMCG_V1 has no `kmem`: reported unknown).
#[test]
fn offsets_resolve_from_this_kernels_btf() {
    // `CGTRACE_BTF` names a file where /sys/kernel/btf/vmlinux is hidden (vm-test's btf-file run).
    let path = cgtrace::kernel::btf::vmlinux_path();
    let data = match cgtrace::kernel::btf::read_vmlinux(&path) {
        Ok(d) => d,
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "no BTF in CI: {e}");
            return;
        }
    };
    let btf = cgtrace::kernel::btf::KernelBtf::parse(&data, &path.display().to_string())
        .expect("parse BTF");
    let o = cgtrace::kernel::btf::cgroup_offsets(&btf);
    assert!(cgtrace::kernel::btf::missing(&o).is_empty(), "{o:?}");
    for (name, v) in cgtrace::kernel::btf::named(&o) {
        if name == "mem_cgroup.kmem.usage" {
            // Present exactly when the struct has the member.
            assert_eq!(
                v != KernelOffsets::UNKNOWN,
                btf.offset_of("mem_cgroup", &[&["kmem"]]).is_some(),
                "{name}"
            );
        } else if name == "cgroup.ancestors" && ancestors_are_idr_numbers() {
            // Before 5.5 `ancestor_ids` holds idr numbers, not ids: left unresolved, and
            // subtrees are filtered by path instead.
            assert_eq!(v, KernelOffsets::UNKNOWN, "{name}");
        } else {
            assert_ne!(v, KernelOffsets::UNKNOWN, "{name} unresolved");
        }
    }
    eprintln!(
        "kmem counter on this kernel: {}",
        o.memcg_kmem != KernelOffsets::UNKNOWN
    );
}

/// Whether this kernel's `struct cgroup` has `int ancestor_ids[]` (before 5.5), by bpftool's
/// dump of its BTF (the oracle independent of cgtrace's reader).
fn ancestors_are_idr_numbers() -> bool {
    let path = cgtrace::kernel::btf::vmlinux_path();
    let Ok(out) = std::process::Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(&path)
        .args(["format", "c"])
        .output()
    else {
        // No bpftool (the VMs): the kernel release says it, 5.5 being the change.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut v = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        return (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (5, 5);
    };
    String::from_utf8_lossy(&out.stdout).contains("int ancestor_ids[")
}

/// A failed mkdir in cgroupfs is reported with its path and errno (v2 `cgroup.max.descendants`
/// makes it fail with EAGAIN deterministically), through the exit hooks alone where the kernel
/// allows (5.15+ on x86-64) and through the enter and exit hooks they fall back to. Here rather
/// than with the tracker tests so that the kernel-matrix VMs run it too.
#[test]
fn failed_mkdir_is_reported_with_path_and_errno() {
    if !integration_tests::cgroup::privileged("failed_mkdir_is_reported_with_path_and_errno") {
        return;
    }
    let h = Hierarchies::load().expect("hierarchies");
    let v2 = h.get(0).and_then(|x| x.mount.clone()).expect("v2 mount");
    let parent = TestParent::new("mkdirfail", &[&v2]).expect("test parent");
    fs::write(parent.dir(&v2).join("cgroup.max.descendants"), "0").expect("limit descendants");
    let exit_only_expected = cfg!(target_arch = "x86_64")
        && cgtrace::kernel::KernelRelease::running().is_some_and(|k| k.has_bpf_task_pt_regs());
    for (hooks, want_attach) in [
        (
            MkdirFailureHooks::Auto,
            if exit_only_expected {
                MkdirFailureAttach::ExitOnly
            } else {
                MkdirFailureAttach::EnterExit
            },
        ),
        (MkdirFailureHooks::EnterExit, MkdirFailureAttach::EnterExit),
    ] {
        let mut probes = Probes::load(&ProbeOptions {
            tier: tier_from_env(),
            buffer: buffer_from_env(),
            legacy_reads: legacy_reads_from_env(),
            hierarchies: Some(vec![0]),
            subtree: Some(SubtreeFilter::resolve(&h, &parent.cgroup_path()).expect("resolve")),
            mkdir_failures: cgtrace::probes::MkdirFailureMode::Syscall,
            mkdir_failure_hooks: hooks,
            ..ProbeOptions::default()
        })
        .expect("load");
        assert_eq!(
            probes.mkdir_failures_off(),
            None,
            "failed mkdirs are traced"
        );
        assert_eq!(
            probes.mkdir_failure_hooks(),
            Some(want_attach),
            "with {hooks:?}"
        );
        if hooks == MkdirFailureHooks::Auto {
            // For the kernel table `cargo xtask vm-test --readme` writes (it runs the tests
            // with --show-output).
            println!(
                "CGTRACE-VM-FACT mkdir_failure_hooks {}",
                want_attach.describe()
            );
        }
        // Both syscalls: mkdir(2), and mkdirat(2) with a directory fd (ignored for an absolute
        // path: what the hooks see is the path argument).
        let want = parent.dir(&v2).join("kubepods");
        let want_at = parent.dir(&v2).join("kubepods-at");
        let path = std::ffi::CString::new(want.as_os_str().as_encoded_bytes()).expect("no NUL");
        let path_at =
            std::ffi::CString::new(want_at.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: a valid NUL-terminated path.
        let rc = unsafe { libc::syscall(libc::SYS_mkdir, path.as_ptr(), 0o755) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((rc, errno), (-1, Some(libc::EAGAIN)), "mkdir must fail");
        // SAFETY: a valid NUL-terminated path; AT_FDCWD is a valid directory fd.
        let rc =
            unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, path_at.as_ptr(), 0o755) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((rc, errno), (-1, Some(libc::EAGAIN)), "mkdirat must fail");
        let mut recs = Records::default();
        let failed = |s: &[Event<'_>], w: &Path| -> usize {
            s.iter()
                .filter(|e| {
                    e.kind == cgtrace_common::EventKind::MkdirFailed
                        && e.path == w.as_os_str().as_encoded_bytes()
                })
                .count()
        };
        let found = collect_until(&mut probes, &mut recs, Duration::from_secs(5), |s| {
            failed(s, &want) > 0 && failed(s, &want_at) > 0
        });
        let seen = recs.events();
        assert!(
            found,
            "no mkdir_failed events for {} and {} with {hooks:?}: {seen:#?}",
            want.display(),
            want_at.display()
        );
        for w in [&want, &want_at] {
            assert_eq!(
                failed(&seen, w),
                1,
                "{} reported once with {hooks:?}",
                w.display()
            );
            let ev = seen
                .iter()
                .find(|e| e.path == w.as_os_str().as_encoded_bytes())
                .expect("the event");
            assert_eq!(ev.errno, Some(libc::EAGAIN));
            assert_eq!(ev.pid, std::process::id());
        }
        relative_spellings_are_resolved(&mut probes, &parent, &v2, hooks);
    }
}

/// Relative spellings of a failed mkdir, resolved in the kernel from the starting directory:
/// `mkdirat` with a directory fd (a name, and a name below a missing directory: ENOENT from the
/// VFS), and `mkdir` run with the parent as its working directory (as coreutils `mkdir -p` does
/// it). Each comes with its path in the hierarchy, the errno and the caller.
fn relative_spellings_are_resolved(
    probes: &mut Probes,
    parent: &TestParent,
    v2: &Path,
    hooks: MkdirFailureHooks,
) {
    use std::os::fd::AsRawFd;
    let dir = parent.dir(v2);
    let dirfd = fs::File::open(&dir).expect("open the test parent");
    let mut want = Vec::new();
    for (name, errno) in [
        ("kubepods-fd", libc::EAGAIN),
        ("missing/kubepods", libc::ENOENT),
    ] {
        let c = std::ffi::CString::new(name).expect("no NUL");
        // SAFETY: a valid directory fd and NUL-terminated path.
        let rc = unsafe { libc::syscall(libc::SYS_mkdirat, dirfd.as_raw_fd(), c.as_ptr(), 0o755) };
        let got = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(
            (rc, got),
            (-1, Some(errno)),
            "mkdirat(fd, {name}) must fail"
        );
        want.push((name, errno, std::process::id()));
    }
    let mut child = std::process::Command::new("mkdir")
        .arg("kubepods-cwd")
        .current_dir(&dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run mkdir");
    let pid = child.id();
    assert!(!child.wait().expect("mkdir").success(), "mkdir must fail");
    want.push(("kubepods-cwd", libc::EAGAIN, pid));
    let path_of = |name: &str| format!("{}/{name}", parent.cgroup_path()).into_bytes();
    let mut recs = Records::default();
    let found = collect_until(probes, &mut recs, Duration::from_secs(5), |s| {
        want.iter().all(|(name, _, _)| {
            let p = path_of(name);
            s.iter().any(|e| {
                e.kind == EventKind::MkdirFailed && e.syscall_relative && e.path == p.as_slice()
            })
        })
    });
    let seen = recs.events();
    assert!(
        found,
        "relative mkdirs not all reported with {hooks:?}: {seen:#?}"
    );
    for (name, errno, pid) in &want {
        let p = path_of(name);
        // On the fentry/kprobe tiers cgroup_mkdir()'s return reports the EAGAINs too, with the
        // same path (the pipeline keeps one of them): only the syscall's here.
        let evs: Vec<_> = seen
            .iter()
            .filter(|e| e.syscall_relative && e.path == p.as_slice())
            .collect();
        assert_eq!(
            evs.len(),
            1,
            "{name} reported once with {hooks:?}: {evs:#?}"
        );
        let ev = evs[0];
        assert!(ev.has_cgroup, "{ev:?}");
        assert_eq!(
            ev.failure_seen_at(),
            Some(cgtrace::model::event::FailureSource::Syscall)
        );
        assert_eq!(
            (ev.hierarchy_id, ev.errno, ev.pid),
            (0, Some(*errno), *pid),
            "{name}"
        );
        assert_eq!(
            ev.level,
            cgtrace::model::event::path_level(&p),
            "{name}: the level counts the composed path's components"
        );
    }
}

/// In the default mode (no syscall hook) the fentry/kprobe tiers still see a mkdir that fails
/// inside cgroupfs (EAGAIN from `cgroup.max.descendants` here) at the return of `cgroup_mkdir()`,
/// with the path in its hierarchy, the errno and the caller. The tracepoint tier cannot: EAGAIN
/// is refused before a cgroup is made, so no half-made cgroup is released either.
#[test]
fn failed_mkdir_inside_cgroupfs_is_reported_without_a_syscall_hook() {
    if !integration_tests::cgroup::privileged(
        "failed_mkdir_inside_cgroupfs_is_reported_without_a_syscall_hook",
    ) {
        return;
    }
    let h = Hierarchies::load().expect("hierarchies");
    let v2 = h.get(0).and_then(|x| x.mount.clone()).expect("v2 mount");
    let parent = TestParent::new("cgmkdirfail", &[&v2]).expect("test parent");
    fs::write(parent.dir(&v2).join("cgroup.max.descendants"), "0").expect("limit descendants");
    let mut probes = Probes::load(&ProbeOptions {
        tier: tier_from_env(),
        buffer: buffer_from_env(),
        legacy_reads: legacy_reads_from_env(),
        hierarchies: Some(vec![0]),
        subtree: Some(SubtreeFilter::resolve(&h, &parent.cgroup_path()).expect("resolve")),
        ..ProbeOptions::default()
    })
    .expect("load");
    assert!(
        probes.mkdir_failures_off().is_some(),
        "no syscall hook by default"
    );
    let dir = parent.dir(&v2).join("kubepods");
    let err = fs::create_dir(&dir).expect_err("mkdir must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
    let want = format!("{}/kubepods", parent.cgroup_path());
    let mut recs = Records::default();
    let css_tier = probes.tier != cgtrace::probes::Tier::Tracepoint;
    let found = collect_until(&mut probes, &mut recs, Duration::from_secs(3), |s| {
        s.iter()
            .any(|e| e.kind == EventKind::MkdirFailed && path_str(e) == want)
    });
    let seen = recs.events();
    if !css_tier {
        assert!(!found, "the tracepoint tier has no such hook: {seen:#?}");
        return;
    }
    assert!(
        found,
        "no mkdir_failed for {want} on {}: {seen:#?}",
        probes.tier.name()
    );
    let ev = seen
        .iter()
        .find(|e| e.kind == EventKind::MkdirFailed && path_str(e) == want)
        .expect("the event");
    assert_eq!(ev.errno, Some(libc::EAGAIN));
    assert_eq!(ev.pid, std::process::id());
    assert_eq!(ev.hierarchy_id, 0);
    assert!(ev.has_cgroup);
    assert_eq!(
        ev.failure_seen_at(),
        Some(cgtrace::model::event::FailureSource::CgroupMkdir)
    );
}
