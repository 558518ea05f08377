//! cgtrace's own cost, in plain view (as bpftop shows its programs'): the CPU time and resident
//! memory of the process, the memory charged to its cgroup (BPF maps are charged there since
//! 5.11), the ring buffer's drains and fill, and — when the node has BPF run-time statistics on
//! (`kernel.bpf_stats_enabled`; switching them on needs CAP_SYS_ADMIN, so cgtrace only reads
//! them) — each program's run time and run count. Sampled about once a second by `attach`,
//! exported as metrics, printed in its interval report and by `doctor`.
use std::{fs, path::Path};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::{kernel::hierarchy::Hierarchies, pipeline::metrics::to_i64};

/// Where the node's BPF run-time statistics switch is.
pub const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Whether the node has BPF run-time statistics on (None: not readable, kernels before 5.1).
pub fn bpf_stats_enabled() -> Option<bool> {
    let s = fs::read_to_string(BPF_STATS_SYSCTL).ok()?;
    Some(s.trim() != "0")
}

/// One program's accumulated run time and count (zero unless the statistics are on).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgramStat {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// What the run loop counts of the ring buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RingStats {
    /// Drain passes.
    pub drains: u64,
    /// Records drained.
    pub records: u64,
    /// Bytes waiting in the ring at the fullest drain since the last sample.
    pub fill_bytes: u64,
    /// The ring's size.
    pub size_bytes: u64,
}

impl RingStats {
    /// One drain pass that found `records` records of `bytes` bytes waiting.
    pub fn drained(&mut self, records: usize, bytes: u64) {
        self.drains += 1;
        self.records += records as u64;
        self.fill_bytes = self.fill_bytes.max(bytes);
    }
}

/// One sample of the process's own cost.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct OwnCost {
    /// User + system CPU time of the process so far.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// `memory.current` (v2) or `memory.usage_in_bytes` (v1) of the process's own memory cgroup.
    pub cgroup_memory_bytes: Option<u64>,
    pub ring: RingStats,
    /// Per program (the figures only move while the node has BPF statistics on).
    pub programs: Vec<ProgramStat>,
    /// Whether the node has BPF statistics on (`kernel.bpf_stats_enabled`).
    pub bpf_stats: bool,
}

/// CPU seconds and RSS from `/proc/self/stat` (fields 14, 15 and 24, after the comm).
fn process_stat(page_size: u64) -> Option<(f64, u64)> {
    let s = fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(((utime + stime) as f64 / hz, rss_pages * page_size))
}

/// The memory charged to this process's memory cgroup, read through `hierarchies` (the host's
/// cgroupfs under `--host-root` in a container). None where it cannot be found: a cgroup
/// namespace hides the path, or the file is missing.
pub fn own_cgroup_memory(hierarchies: &Hierarchies) -> Option<u64> {
    let mem = hierarchies.with_controller("memory")?;
    let mount = mem.mount.as_ref()?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (id, ctrl, path) = (it.next()?, it.next()?, it.next()?);
        let hit = if mem.id == crate::kernel::hierarchy::V2_HIERARCHY {
            id == "0" && ctrl.is_empty()
        } else {
            ctrl.split(',').any(|c| c == "memory")
        };
        hit.then(|| path.to_string())
    })?;
    let dir = mount.join(path.trim_start_matches('/'));
    ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|f| read_u64(&dir.join(f)))
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl OwnCost {
    /// Samples the process and its programs.
    pub fn sample(
        hierarchies: &Hierarchies,
        ring: RingStats,
        programs: impl FnOnce() -> Vec<ProgramStat>,
    ) -> OwnCost {
        let (cpu_seconds, rss_bytes) = process_stat(crate::kernel::page_size()).unwrap_or_default();
        OwnCost {
            cpu_seconds,
            rss_bytes,
            cgroup_memory_bytes: own_cgroup_memory(hierarchies),
            ring,
            programs: programs(),
            bpf_stats: bpf_stats_enabled().unwrap_or(false),
        }
    }

    /// `own cost: CPU 1.23 s, RSS 14.2 MiB, cgroup 20.1 MiB, ring 3 KiB of 4096 KiB at the fullest
    /// drain, BPF 2.1 µs per run over 4 programs` (or why the BPF figure is missing).
    pub fn render(&self) -> String {
        use crate::format::units::human_bytes;
        let cgroup = match self.cgroup_memory_bytes {
            Some(b) => human_bytes(b),
            None => "unknown".to_string(),
        };
        let bpf = if self.bpf_stats {
            let p = &self.programs;
            let (t, n) = p.iter().fold((0u64, 0u64), |(t, n), s| {
                (t + s.run_time_ns, n + s.run_count)
            });
            format!(
                "BPF {:.0} ns per run ({} runs, {} programs)",
                t as f64 / n.max(1) as f64,
                n,
                p.len()
            )
        } else {
            format!("BPF run time not counted ({BPF_STATS_SYSCTL} is 0)")
        };
        format!(
            "own cost: CPU {:.2} s, RSS {}, cgroup memory {cgroup}, ring {} drains, {} records, fullest {} of {}, {bpf}",
            self.cpu_seconds,
            human_bytes(self.rss_bytes),
            self.ring.drains,
            self.ring.records,
            human_bytes(self.ring.fill_bytes),
            human_bytes(self.ring.size_bytes),
        )
    }
}

/// The cost of the cgtrace programs loaded on the node now (by any cgtrace process: a running
/// `attach` DaemonSet, a `live`), found by name among every loaded BPF program, as bpftop finds
/// programs. The kernel keeps 15 bytes of a program's name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodePrograms {
    pub programs: usize,
    pub run_time_ns: u64,
    pub run_count: u64,
    pub bpf_stats: bool,
}

impl NodePrograms {
    /// Reads every loaded program's info (needs CAP_SYS_ADMIN or CAP_BPF); None when the kernel
    /// refuses to list them.
    pub fn read() -> Option<NodePrograms> {
        let ours: Vec<&str> = cgtrace_common::names::program::ALL
            .iter()
            .map(|n| &n[..n.len().min(15)])
            .collect();
        let mut out = NodePrograms {
            bpf_stats: bpf_stats_enabled().unwrap_or(false),
            ..NodePrograms::default()
        };
        for info in aya::programs::loaded_programs() {
            let info = info.ok()?;
            let Some(name) = info.name_as_str() else {
                continue;
            };
            if ours.contains(&name) {
                out.programs += 1;
                out.run_time_ns += u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
                out.run_count += info.run_count();
            }
        }
        Some(out)
    }

    /// `12 cgtrace programs loaded: 310 ns per run over 1,234 runs` (or why not counted).
    pub fn render(&self) -> String {
        if self.programs == 0 {
            return "no cgtrace programs loaded on this node now (none attached)".to_string();
        }
        let cost = if self.bpf_stats {
            format!(
                "{:.0} ns per run over {} runs since the statistics were switched on",
                self.run_time_ns as f64 / self.run_count.max(1) as f64,
                self.run_count
            )
        } else {
            format!(
                "run time not counted ({BPF_STATS_SYSCTL} is 0; `sysctl kernel.bpf_stats_enabled=1` \
                 counts it, at a small cost to every BPF program, and needs CAP_SYS_ADMIN)"
            )
        };
        format!("{} cgtrace programs loaded: {cost}", self.programs)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

/// The own-cost metric families.
pub struct OwnCostMetrics {
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    rss: Gauge,
    cgroup: Gauge,
    drains: Counter,
    records: Counter,
    fill: Gauge,
    size: Gauge,
    run_time: Family<ProgramLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    run_count: Family<ProgramLabels, Counter>,
    stats_enabled: Gauge,
    last: OwnCost,
}

impl OwnCostMetrics {
    pub fn register(r: &mut Registry) -> OwnCostMetrics {
        let m = OwnCostMetrics {
            cpu: Counter::default(),
            rss: Gauge::default(),
            cgroup: Gauge::default(),
            drains: Counter::default(),
            records: Counter::default(),
            fill: Gauge::default(),
            size: Gauge::default(),
            run_time: Family::default(),
            run_count: Family::default(),
            stats_enabled: Gauge::default(),
            last: OwnCost::default(),
        };
        let s = Unit::Seconds;
        let b = Unit::Bytes;
        r.register_with_unit(
            "self_cpu",
            "CPU time of cgtrace itself",
            s.clone(),
            m.cpu.clone(),
        );
        r.register_with_unit(
            "self_resident_memory",
            "cgtrace's RSS",
            b.clone(),
            m.rss.clone(),
        );
        r.register_with_unit(
            "self_cgroup_memory",
            "Memory charged to cgtrace's own memory cgroup (BPF maps included since Linux 5.11)",
            b.clone(),
            m.cgroup.clone(),
        );
        r.register("ring_drains", "Ring buffer drain passes", m.drains.clone());
        r.register(
            "ring_records",
            "Records drained from the ring buffer",
            m.records.clone(),
        );
        r.register_with_unit(
            "ring_fill",
            "Bytes waiting in the ring buffer at the fullest drain of the last second",
            b.clone(),
            m.fill.clone(),
        );
        r.register_with_unit("ring_size", "The ring buffer's size", b, m.size.clone());
        r.register_with_unit(
            "bpf_program_run",
            "Run time of cgtrace's BPF programs (only while kernel.bpf_stats_enabled is 1)",
            s,
            m.run_time.clone(),
        );
        r.register(
            "bpf_program_runs",
            "Runs of cgtrace's BPF programs (only while kernel.bpf_stats_enabled is 1)",
            m.run_count.clone(),
        );
        r.register(
            "bpf_stats_enabled",
            "1 while the node counts BPF program run time (kernel.bpf_stats_enabled)",
            m.stats_enabled.clone(),
        );
        m
    }

    /// A new sample: counters move by the growth since the last one.
    pub fn update(&mut self, c: &OwnCost) {
        let grow = |new: u64, old: u64| new.saturating_sub(old);
        if c.cpu_seconds > self.last.cpu_seconds {
            self.cpu.inc_by(c.cpu_seconds - self.last.cpu_seconds);
        }
        self.rss.set(to_i64(c.rss_bytes));
        self.cgroup
            .set(c.cgroup_memory_bytes.map(to_i64).unwrap_or(-1));
        self.drains
            .inc_by(grow(c.ring.drains, self.last.ring.drains));
        self.records
            .inc_by(grow(c.ring.records, self.last.ring.records));
        self.fill.set(to_i64(c.ring.fill_bytes));
        self.size.set(to_i64(c.ring.size_bytes));
        self.stats_enabled.set(i64::from(c.bpf_stats));
        for p in &c.programs {
            let old = self
                .last
                .programs
                .iter()
                .find(|o| o.name == p.name)
                .cloned()
                .unwrap_or_default();
            let l = ProgramLabels {
                program: p.name.clone(),
            };
            let dt = grow(p.run_time_ns, old.run_time_ns);
            self.run_time.get_or_create(&l).inc_by(dt as f64 / 1e9);
            self.run_count
                .get_or_create(&l)
                .inc_by(grow(p.run_count, old.run_count));
        }
        self.last = c.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_programs_say_their_cost_or_why_not() {
        let mut n = NodePrograms::default();
        assert!(n.render().starts_with("no cgtrace programs loaded"));
        n.programs = 5;
        n.run_time_ns = 3_000;
        n.run_count = 10;
        assert!(
            n.render().contains("run time not counted"),
            "{}",
            n.render()
        );
        n.bpf_stats = true;
        assert_eq!(
            n.render(),
            "5 cgtrace programs loaded: 300 ns per run over 10 runs since the statistics were \
             switched on"
        );
    }

    #[test]
    fn samples_this_process() {
        let c = OwnCost::sample(&Hierarchies::default(), RingStats::default(), Vec::new);
        assert!(c.rss_bytes > 0, "{c:?}");
        assert!(c.cpu_seconds >= 0.0);
        assert!(c.render().starts_with("own cost: CPU "), "{}", c.render());
    }

    #[test]
    fn ring_stats_keep_the_fullest_drain() {
        let mut r = RingStats::default();
        r.drained(3, 300);
        r.drained(1, 100);
        assert_eq!((r.drains, r.records, r.fill_bytes), (2, 4, 300));
    }
}
