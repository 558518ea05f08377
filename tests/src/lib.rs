//! Shared helpers for the real-kernel integration tests: test cgroups, hierarchy mounts, and
//! collecting decoded events from loaded programs until a condition or a deadline.
pub mod binary;
pub mod cgroup;
pub mod exhaust;
pub mod oom;
pub mod pods;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cgtrace::{kernel::hierarchy::Hierarchies, model::event::Event, probes::Probes};
use cgtrace_common::EventKind;

/// Ring records as the programs wrote them, kept whole and read with [`Event::decode`]: the
/// tests assert on `cgtrace`'s own [`Event`], not on a copy of its fields.
#[derive(Clone, Debug, Default)]
pub struct Records(Vec<Vec<u8>>);

impl Records {
    /// The records' bytes, in ring order.
    pub fn raw(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// The events, in ring order.
    pub fn events(&self) -> Vec<Event<'_>> {
        self.0
            .iter()
            .map(|r| Event::decode(r).expect("every record decodes"))
            .collect()
    }
}

/// An event's cgroup path, lossily as text.
pub fn path_str(e: &Event<'_>) -> String {
    String::from_utf8_lossy(e.path).into_owned()
}

/// The probe tier a test should force: `CGTRACE_TIER` (set by the VM runner), else None (auto).
pub fn tier_from_env() -> Option<cgtrace::probes::Tier> {
    use cgtrace::probes::Tier;
    match std::env::var("CGTRACE_TIER").ok()?.as_str() {
        "fentry" => Some(Tier::Fentry),
        "kprobe" => Some(Tier::Kprobe),
        "tracepoint" => Some(Tier::Tracepoint),
        other => panic!("unknown CGTRACE_TIER {other:?}"),
    }
}

/// The buffer a test should force: `CGTRACE_BUFFER` (`ring`, `perf`, `auto`; set by the VM
/// runner), else auto.
pub fn buffer_from_env() -> cgtrace::probes::buffer::BufferChoice {
    use cgtrace::probes::buffer::BufferChoice;
    match std::env::var("CGTRACE_BUFFER").ok().as_deref() {
        None | Some("auto") => BufferChoice::Auto,
        Some("ring") => BufferChoice::Ring,
        Some("perf") => BufferChoice::Perf,
        Some(other) => panic!("unknown CGTRACE_BUFFER {other:?}"),
    }
}

/// Whether a test should force `bpf_probe_read` (`CGTRACE_PROBE_READ=legacy`, set by the VM
/// runner) where the kernel has `bpf_probe_read_kernel`.
pub fn legacy_reads_from_env() -> bool {
    match std::env::var("CGTRACE_PROBE_READ").ok().as_deref() {
        None | Some("auto") => false,
        Some("legacy") => true,
        Some(other) => panic!("unknown CGTRACE_PROBE_READ {other:?}"),
    }
}

/// Fails unless the probes use what `CGTRACE_BUFFER` and `CGTRACE_PROBE_READ` forced (a forced
/// run that silently used the defaults would prove nothing).
pub fn assert_forced(probes: &Probes) {
    use cgtrace::probes::buffer::{Buffer, BufferChoice};
    match buffer_from_env() {
        BufferChoice::Perf => assert_eq!(probes.events.buffer(), Buffer::Perf),
        BufferChoice::Ring => assert_eq!(probes.events.buffer(), Buffer::Ring),
        BufferChoice::Auto => {}
    }
    if legacy_reads_from_env() {
        assert_eq!(probes.kernel_reads, "bpf_probe_read (forced)");
    }
}

/// The v1 memory hierarchy (id, mount) and the v2 mount on this host.
pub struct Layout {
    pub hierarchies: Hierarchies,
    pub memory_id: u32,
    pub memory_mount: PathBuf,
    pub v2_mount: PathBuf,
}

impl Layout {
    pub fn load() -> Layout {
        let hierarchies = Hierarchies::load().expect("read the cgroup hierarchies");
        let mem = hierarchies
            .with_controller("memory")
            .expect("a hierarchy with the memory controller");
        let memory_id = mem.id;
        let memory_mount = mem.mount.clone().expect("memory hierarchy mounted");
        let v2_mount = hierarchies
            .get(0)
            .and_then(|h| h.mount.clone())
            .expect("cgroup v2 mounted");
        Layout {
            hierarchies,
            memory_id,
            memory_mount,
            v2_mount,
        }
    }
}

/// Drains the ring into `out` until `done(out)` or the deadline; returns whether `done` held.
pub fn collect_until(
    probes: &mut Probes,
    out: &mut Records,
    timeout: Duration,
    mut done: impl FnMut(&[Event<'_>]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        drain(probes, out);
        if done(&out.events()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drains everything that is in the buffer now (the perf buffers' held-back records too).
pub fn drain(probes: &mut Probes, out: &mut Records) {
    while probes.drain_all(4096, |b| {
        Event::decode(b).expect("every record decodes");
        out.0.push(b.to_vec());
    }) > 0
    {}
}

/// How many of `seen` are of `kind` in hierarchy `h`.
pub fn count(seen: &[Event<'_>], kind: EventKind, h: u32) -> usize {
    seen.iter()
        .filter(|s| s.kind == kind && s.hierarchy_id == h)
        .count()
}

/// A scratch directory of the test's own under `base` (the test's `CARGO_TARGET_TMPDIR`),
/// removed with its contents on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(base: &Path, tag: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("cgtrace-{tag}-{}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// What an HTML page refers to outside itself (a script, style sheet, font or image to fetch),
/// if anything: `report --html` must be self-contained.
pub fn outside_reference(html: &str) -> Option<&'static str> {
    [
        "<script src",
        "<link",
        "@import",
        "url(",
        "src=\"http",
        "href=\"http",
    ]
    .into_iter()
    .find(|bad| html.contains(bad))
}

/// Whether CI forbids skipping (`CI=true`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `cmd`'s stdout, failing the test with its stderr when it fails.
pub fn stdout_of(cmd: &mut std::process::Command) -> String {
    let desc = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{desc}: {e}"));
    assert!(
        out.status.success(),
        "{desc}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
