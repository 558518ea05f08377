//! OOM kills as the pipeline sees them: the part of an `oom_kill` event beyond the victim's pid,
//! comm and memcg (which sit in the event's own fields), and how a run traces them.
use cgtrace_common::{COMM_LEN, OomRaw, oom_constraint, oom_flags};
use serde::Serialize;

use crate::model::k8s::Qos;

/// What limited the allocation that ran into the OOM killer (`enum oom_constraint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// Neither read nor derived.
    #[default]
    Unknown,
    /// The whole node ran out of memory (`CONSTRAINT_NONE`).
    None,
    /// The nodes of the allocating task's cpuset ran out.
    Cpuset,
    /// The nodes of the allocation's memory policy ran out.
    MemoryPolicy,
    /// A memory cgroup hit its limit.
    Memcg,
}

impl Constraint {
    pub const ALL: [Constraint; 5] = [
        Constraint::Memcg,
        Constraint::None,
        Constraint::Cpuset,
        Constraint::MemoryPolicy,
        Constraint::Unknown,
    ];

    /// The record's number ([`oom_constraint`]).
    pub fn from_u8(v: u8) -> Constraint {
        match v {
            oom_constraint::NONE => Constraint::None,
            oom_constraint::CPUSET => Constraint::Cpuset,
            oom_constraint::MEMORY_POLICY => Constraint::MemoryPolicy,
            oom_constraint::MEMCG => Constraint::Memcg,
            _ => Constraint::Unknown,
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Constraint::Unknown => oom_constraint::UNKNOWN,
            Constraint::None => oom_constraint::NONE,
            Constraint::Cpuset => oom_constraint::CPUSET,
            Constraint::MemoryPolicy => oom_constraint::MEMORY_POLICY,
            Constraint::Memcg => oom_constraint::MEMCG,
        }
    }

    /// `memcg`, `cpuset`, `memory_policy`, `none`, `unknown`: the JSON and metric label value.
    pub fn name(self) -> &'static str {
        match self {
            Constraint::Unknown => "unknown",
            Constraint::None => "none",
            Constraint::Cpuset => "cpuset",
            Constraint::MemoryPolicy => "memory_policy",
            Constraint::Memcg => "memcg",
        }
    }
}

/// The memcg that hit its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomLimit<'a> {
    /// On the memory hierarchy (the victim's).
    pub cgroup_id: u64,
    pub level: u32,
    /// Its usage and limit when the victim was chosen: memory, or memory+swap when `memsw`.
    pub usage_bytes: u64,
    pub limit_bytes: u64,
    /// The v1 memory+swap limit (`memory.memsw.limit_in_bytes`) was the one hit.
    pub memsw: bool,
    /// Its path, from the tracker (empty in a record: the pipeline fills it in).
    pub path: &'a [u8],
}

/// The victim's memory when it was chosen (its mm's counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OomMm {
    pub total_vm_bytes: u64,
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub rss_shmem_bytes: u64,
    pub swap_bytes: u64,
    pub pgtables_bytes: u64,
}

/// A task's comm, kept inline (the kernel's `TASK_COMM_LEN`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Comm {
    bytes: [u8; COMM_LEN],
    len: u8,
}

impl Comm {
    /// The first [`COMM_LEN`] bytes of `b`.
    pub fn new(b: &[u8]) -> Comm {
        let mut c = Comm::default();
        let n = b.len().min(COMM_LEN);
        c.bytes[..n].copy_from_slice(&b[..n]);
        c.len = n as u8;
        c
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What an `oom_kill` event carries beyond the victim's pid, comm and memcg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomKill<'a> {
    pub constraint: Constraint,
    /// Constraint and limit were derived from the memcgs' counters (tracepoint tier), not read
    /// from the kernel's `struct oom_control`.
    pub derived: bool,
    /// The memcg at its limit (memcg OOMs).
    pub limit: Option<OomLimit<'a>>,
    /// The victim memcg's own memory limit.
    pub victim_limit_bytes: Option<u64>,
    pub oom_score_adj: Option<i32>,
    pub uid: Option<u32>,
    pub mm: Option<OomMm>,
    /// The task whose allocation ran into the OOM.
    pub trigger_pid: Option<u32>,
    pub trigger_comm: Comm,
    /// `oc->totalpages`, in bytes: what the victim's badness was judged against.
    pub totalpages_bytes: Option<u64>,
    /// The victim's task was read (else only its pid is known).
    pub victim_task: bool,
    /// `mark_victim` handed over a pid only (older builds).
    pub pid_only: bool,
    /// The victim had `PF_EXITING` set when it was marked: exiting anyway, or (another CPU
    /// being faster) already from this kill's SIGKILL, so it does not tell the two apart.
    pub exiting: bool,
    /// The OOM killer's `struct oom_control` was seen (css tiers).
    pub context: bool,
    /// Fired inside `__oom_kill_process()`, where the kernel counts kills.
    pub in_kill: bool,
    /// Whether the kernel counted this as a kill (`OOM_KILL`): known only where
    /// `__oom_kill_process()` is hooked; filled in by the pipeline from the run's facts.
    pub counted: Option<bool>,
}

impl<'a> OomKill<'a> {
    /// Decodes the record's tail, with page counts in pages of `page_size` bytes.
    pub fn from_raw(o: &OomRaw, trigger_comm: &[u8], page_size: u64) -> OomKill<'a> {
        let f = o.flags;
        let has = |bit: u32| f & bit != 0;
        let bytes = |pages: u64| pages.saturating_mul(page_size);
        OomKill {
            constraint: Constraint::from_u8(o.constraint),
            derived: has(oom_flags::DERIVED),
            limit: has(oom_flags::LIMIT).then(|| OomLimit {
                cgroup_id: o.limit_cgroup_id,
                level: o.limit_level,
                usage_bytes: bytes(o.limit_usage),
                limit_bytes: bytes(o.limit_max),
                memsw: has(oom_flags::LIMIT_MEMSW),
                path: b"",
            }),
            victim_limit_bytes: has(oom_flags::VICTIM_MAX).then(|| bytes(o.victim_max)),
            oom_score_adj: has(oom_flags::ADJ).then_some(o.oom_score_adj),
            uid: has(oom_flags::UID).then_some(o.uid),
            mm: has(oom_flags::RSS).then(|| OomMm {
                total_vm_bytes: bytes(o.total_vm),
                rss_anon_bytes: bytes(o.rss_anon),
                rss_file_bytes: bytes(o.rss_file),
                rss_shmem_bytes: bytes(o.rss_shmem),
                swap_bytes: bytes(o.swapents),
                pgtables_bytes: o.pgtables_bytes,
            }),
            trigger_pid: has(oom_flags::TRIGGER).then_some(o.trigger_tgid),
            trigger_comm: if has(oom_flags::TRIGGER) {
                Comm::new(trigger_comm)
            } else {
                Comm::default()
            },
            totalpages_bytes: has(oom_flags::TOTALPAGES).then(|| bytes(o.totalpages)),
            victim_task: has(oom_flags::TASK),
            pid_only: has(oom_flags::PID_ONLY),
            exiting: has(oom_flags::EXITING),
            context: has(oom_flags::CONTEXT),
            in_kill: has(oom_flags::IN_KILL),
            counted: None,
        }
    }

    /// The record's flag bits for these fields (the session format keeps them).
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        let mut set = |bit: u32, on: bool| {
            if on {
                f |= bit;
            }
        };
        set(oom_flags::TASK, self.victim_task);
        set(oom_flags::RSS, self.mm.is_some());
        set(oom_flags::UID, self.uid.is_some());
        set(oom_flags::ADJ, self.oom_score_adj.is_some());
        set(oom_flags::LIMIT, self.limit.is_some());
        set(oom_flags::LIMIT_MEMSW, self.limit.is_some_and(|l| l.memsw));
        set(oom_flags::DERIVED, self.derived);
        set(oom_flags::CONTEXT, self.context);
        set(oom_flags::IN_KILL, self.in_kill);
        set(oom_flags::EXITING, self.exiting);
        set(oom_flags::VICTIM_MAX, self.victim_limit_bytes.is_some());
        set(oom_flags::TOTALPAGES, self.totalpages_bytes.is_some());
        set(oom_flags::PID_ONLY, self.pid_only);
        set(oom_flags::TRIGGER, self.trigger_pid.is_some());
        f
    }
}

/// Every bit [`OomKill::flags`] sets.
pub const OOM_FLAGS_ALL: u32 = (1 << 14) - 1;

/// How a run traces OOM kills (recorded in session headers from format version 3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OomTracing {
    /// `mark_victim` hands over the victim's `struct task_struct *` (else its pid only).
    pub victim_task: bool,
    /// `out_of_memory()` is hooked: constraint and memcg come from `struct oom_control` (css
    /// tiers); else they are derived from the memcgs' counters.
    pub context: bool,
    /// `__oom_kill_process()` is hooked too: each event says whether the kernel counted it.
    pub kill_hook: bool,
    /// Why the context hooks are not used, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_off: Option<String>,
}

impl OomTracing {
    /// How exact the run's count of OOM kills is, for people.
    pub fn exactness(&self) -> &'static str {
        if self.context && self.kill_hook {
            "exact: an event is a kill where __oom_kill_process() counted one (OOM_KILL); \
             marks of tasks that were exiting anyway are shown, not counted"
        } else {
            "an upper bound: every oom:mark_victim counts, including tasks that were exiting \
             anyway and only marked (the kernel counts those in neither OOM_KILL nor \
             oom_kill); processes sharing the victim's mm are killed without a mark, as the \
             kernel counts them"
        }
    }

    /// How the run traces them, for people (`doctor`).
    pub fn describe(&self) -> String {
        let victim = if self.victim_task {
            "the victim's task"
        } else {
            "the victim's pid only (this build's mark_victim)"
        };
        let how = if self.context {
            "constraint and limit from out_of_memory()'s oom_control"
        } else {
            "constraint and limit derived from the memcgs' usage"
        };
        let mut s = format!("traced by oom:mark_victim ({victim}); {how}");
        if let Some(why) = &self.context_off {
            s.push_str(&format!(" ({why})"));
        }
        s.push_str(&format!("; the count is {}", self.exactness()));
        s
    }

    /// Whether an event of this run counts as a kill: the kernel counted it, or the run cannot
    /// tell.
    pub fn counted(&self, k: &OomKill<'_>) -> Option<bool> {
        (self.context && self.kill_hook && k.context).then_some(k.in_kill)
    }
}

/// The `oom_score_adj` kubelet gives a container of this QoS class: Guaranteed −997,
/// BestEffort 1000, Burstable `1000 − 1000 × request / capacity` clamped to [3, 999] (a range).
pub fn kubelet_oom_score_adj(qos: Qos) -> (i32, i32) {
    match qos {
        Qos::Guaranteed => (-997, -997),
        Qos::Besteffort => (1000, 1000),
        Qos::Burstable => (3, 999),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(flags: u32) -> OomRaw {
        OomRaw {
            total_vm: 10,
            rss_anon: 8,
            rss_file: 1,
            rss_shmem: 2,
            swapents: 0,
            pgtables_bytes: 12288,
            limit_cgroup_id: 77,
            limit_usage: 8192,
            limit_max: 8192,
            victim_max: 8192,
            totalpages: 8192,
            uid: 1000,
            oom_score_adj: -997,
            trigger_tgid: 42,
            limit_level: 5,
            flags,
            constraint: oom_constraint::MEMCG,
            _pad: [0; 3],
            trigger_comm: [0; COMM_LEN],
        }
    }

    #[test]
    fn flags_round_trip() {
        for f in [
            0,
            OOM_FLAGS_ALL,
            oom_flags::TASK | oom_flags::LIMIT | oom_flags::DERIVED,
        ] {
            let k = OomKill::from_raw(&raw(f), b"perl", 4096);
            assert_eq!(k.flags(), f, "{f:#x}");
        }
        let k = OomKill::from_raw(&raw(OOM_FLAGS_ALL), b"perl", 4096);
        assert_eq!(k.constraint, Constraint::Memcg);
        let l = k.limit.expect("limit");
        assert_eq!((l.cgroup_id, l.level, l.usage_bytes), (77, 5, 8192 * 4096));
        assert!(l.memsw);
        assert_eq!(k.oom_score_adj, Some(-997));
        assert_eq!(k.mm.map(|m| m.rss_anon_bytes), Some(8 * 4096));
        assert_eq!(k.mm.map(|m| m.pgtables_bytes), Some(12288));
        assert_eq!(
            (k.trigger_pid, k.trigger_comm.as_bytes()),
            (Some(42), &b"perl"[..])
        );
        let k = OomKill::from_raw(&raw(0), b"perl", 4096);
        assert_eq!(
            (k.limit, k.oom_score_adj, k.trigger_comm.as_bytes()),
            (None, None, &b""[..])
        );
        assert_eq!(
            Comm::new(b"0123456789abcdefXYZ").as_bytes(),
            b"0123456789abcdef"
        );
    }

    #[test]
    fn constraints_round_trip() {
        for c in Constraint::ALL {
            assert_eq!(Constraint::from_u8(c.as_u8()), c);
        }
        assert_eq!(Constraint::from_u8(200), Constraint::Unknown);
    }

    #[test]
    fn counted_only_where_the_kill_is_hooked() {
        let mut k = OomKill {
            context: true,
            in_kill: true,
            ..OomKill::default()
        };
        let tp = OomTracing::default();
        assert_eq!(tp.counted(&k), None);
        let css = OomTracing {
            victim_task: true,
            context: true,
            kill_hook: true,
            context_off: None,
        };
        assert_eq!(css.counted(&k), Some(true));
        k.in_kill = false;
        assert_eq!(css.counted(&k), Some(false));
    }
}
