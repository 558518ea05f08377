//! Shared helpers for the real-kernel integration tests: test cgroups, hierarchy mounts, and
//! collecting decoded events from loaded programs until a condition or a deadline.
pub mod cgroup;
pub mod exhaust;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use cgtrace::{kernel::hierarchy::Hierarchies, model::event::Event, probes::Probes};
use cgtrace_common::EventKind;

/// An event with owned fields, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub kind: EventKind,
    pub hierarchy_id: u32,
    pub cgroup_id: u64,
    pub level: u32,
    pub pid: u32,
    pub comm: Vec<u8>,
    pub path: Vec<u8>,
    pub truncated: bool,
    pub css: u64,
    pub memcg_id: Option<u32>,
    pub usage_bytes: Option<u64>,
    pub kmem_bytes: Option<u64>,
    pub memsw_bytes: Option<u64>,
    pub has_cgroup: bool,
    pub errno: Option<i32>,
}

impl Seen {
    pub fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
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
    out: &mut Vec<Seen>,
    timeout: Duration,
    mut done: impl FnMut(&[Seen]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        drain(probes, out);
        if done(out) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drains everything that is in the ring now.
pub fn drain(probes: &mut Probes, out: &mut Vec<Seen>) {
    while probes.drain(4096, |b| {
        let e = Event::decode(b).expect("every record decodes");
        out.push(Seen {
            kind: e.kind,
            hierarchy_id: e.hierarchy_id,
            cgroup_id: e.cgroup_id,
            level: e.level,
            pid: e.pid,
            comm: e.comm.to_vec(),
            path: e.path.to_vec(),
            truncated: e.path_truncated,
            css: e.css,
            memcg_id: e.memcg_id,
            usage_bytes: e.usage_bytes,
            kmem_bytes: e.kmem_bytes,
            memsw_bytes: e.memsw_bytes,
            has_cgroup: e.has_cgroup,
            errno: e.errno,
        });
    }) > 0
    {}
}

/// How many of `seen` are of `kind` in hierarchy `h`.
pub fn count(seen: &[Seen], kind: EventKind, h: u32) -> usize {
    seen.iter()
        .filter(|s| s.kind == kind && s.hierarchy_id == h)
        .count()
}
