//! `mkdir_failed`: failed `mkdir` in cgroupfs, one verdict per errno.
use std::collections::VecDeque;

use serde::Serialize;

use super::{
    Ctx, Evidence, IdPicture, MAX_EXAMPLES, NS_PER_S, Severity, Verdict, age_s, window::Ring,
};
use crate::{
    format::{escape::terminal, units::human_secs, units::round_millis},
    kernel::mkdir_errno::{MkdirCause, errno_message, errno_name},
    model::event::Event,
    model::k8s,
};

/// Most distinct errnos tracked.
const MAX_ERRNOS: usize = 32;

/// What a `mkdir_failed` verdict rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MkdirFailedEvidence {
    /// What the failures mean on this kernel (`memcg_ids_exhausted`, …).
    pub cause: MkdirCause,
    /// What the kubelet, runc and mkdir print for the errno.
    pub message: String,
    /// Failures with this errno since start.
    pub count: u64,
    /// Of them, in the hierarchy holding the memory controller.
    pub in_memory_hierarchy: u64,
    /// Seconds of event time `in_window` covers.
    pub window_s: f64,
    /// All dying memcgs (ENOSPC/ENOMEM with the memory hierarchy traced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dying: Option<u64>,
    /// Memcgs online now (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_memcgs: Option<u64>,
    /// Dying memcgs whose IDs swap entries hold (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_held: Option<u64>,
    /// This kernel (before 4.7) keeps a dying memcg's ID until it is freed (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids_held_by_dying: Option<bool>,
    /// Memcg IDs left of 65,535, counted the way this kernel spends them (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_headroom: Option<u64>,
    /// The pod of the latest failure, if its path names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Pods of the recent failures, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_uids: Vec<String>,
    /// The errno.
    pub errno: i32,
    /// Its name (`ENOSPC`).
    pub errno_name: String,
    /// Failures within the window.
    pub in_window: u64,
    /// The path of the latest failure.
    pub path: String,
    /// The process of the latest failure.
    pub comm: String,
    /// Its pid.
    pub pid: u32,
    /// Seconds since the latest failure.
    pub last_seen_age_s: f64,
    /// Paths of the recent failures, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub example_paths: Vec<String>,
    /// The kernel release (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// One failed mkdir.
#[derive(Clone, Debug)]
struct Failure {
    ts: u64,
    path: Box<str>,
    pod_uid: Option<Box<str>>,
    comm: Box<str>,
    pid: u32,
}

/// Failed mkdirs with one errno.
#[derive(Clone, Debug)]
struct Failures {
    errno: i32,
    total: u64,
    in_memory: u64,
    ring: Ring<u64>,
    /// Newest last.
    recent: VecDeque<Failure>,
    /// The pods of the recent failures, distinct, newest last: failures of other cgroups
    /// (system services, probes) do not push them out.
    recent_pods: VecDeque<Box<str>>,
}

/// The detector's state: the failures of each errno seen.
pub(super) struct MkdirFailed {
    failures: Vec<Failures>,
    width: u64,
    buckets: u64,
}

impl MkdirFailed {
    /// Rates over windows of `buckets` buckets of `width` ns.
    pub(super) fn new(width: u64, buckets: u64) -> Self {
        MkdirFailed {
            failures: Vec::new(),
            width,
            buckets,
        }
    }

    /// How many errnos are counted (at most `MAX_ERRNOS`).
    pub(super) fn errnos_tracked(&self) -> usize {
        self.failures.len()
    }

    /// One failed mkdir; `memory`: in the hierarchy holding the memory controller.
    pub(super) fn observe(&mut self, ev: &Event<'_>, memory: bool) {
        // EEXIST never gets here from a run (the pipeline drops it: `mkdir -p` and Go's
        // MkdirAll meet it on every healthy start); fed directly, it is an info verdict.
        let errno = ev.errno.unwrap_or(0).saturating_abs();
        let ts = ev.ts_ns;
        let i = match self.failures.iter().position(|f| f.errno == errno) {
            Some(i) => i,
            None if self.failures.len() < MAX_ERRNOS => {
                self.failures.push(Failures {
                    errno,
                    total: 0,
                    in_memory: 0,
                    ring: Ring::new(self.width, self.buckets),
                    recent: VecDeque::with_capacity(MAX_EXAMPLES),
                    recent_pods: VecDeque::with_capacity(MAX_EXAMPLES),
                });
                self.failures.len() - 1
            }
            None => {
                // mkdir(2) has about a dozen errnos: a full table means garbage input.
                log::debug!("mkdir_failed: errno {errno} not tracked (too many distinct errnos)");
                return;
            }
        };
        let f = &mut self.failures[i];
        f.total += 1;
        f.in_memory += u64::from(memory);
        if let Some(c) = f.ring.at(ts) {
            *c += 1;
        }
        if f.recent.len() >= MAX_EXAMPLES {
            f.recent.pop_front();
        }
        let pod_uid: Option<Box<str>> = k8s::parse_path(ev.path).pod_uid.map(Into::into);
        if let Some(p) = &pod_uid {
            f.recent_pods.retain(|q| q != p);
            if f.recent_pods.len() >= MAX_EXAMPLES {
                f.recent_pods.pop_front();
            }
            f.recent_pods.push_back(p.clone());
        }
        f.recent.push_back(Failure {
            ts,
            path: String::from_utf8_lossy(ev.path).into(),
            pod_uid,
            comm: String::from_utf8_lossy(ev.comm).into(),
            pid: ev.pid,
        });
    }

    /// One verdict per errno, the most severe first, then by errno.
    pub(super) fn verdicts(&self, cx: &Ctx<'_>, ids: &IdPicture, kmem_fired: bool) -> Vec<Verdict> {
        let mut out: Vec<(i32, Verdict)> = self
            .failures
            .iter()
            .filter_map(|f| Some((f.errno, f.verdict(cx, ids, kmem_fired)?)))
            .collect();
        out.sort_by(|a, b| b.1.severity.cmp(&a.1.severity).then(a.0.cmp(&b.0)));
        out.into_iter().map(|(_, v)| v).collect()
    }
}

impl Failures {
    fn verdict(&self, cx: &Ctx<'_>, ids: &IdPicture, kmem_fired: bool) -> Option<Verdict> {
        let now = cx.now;
        let last = self.recent.back()?;
        let name = if self.errno == 0 {
            "unknown errno".to_string()
        } else {
            errno_name(self.errno)
        };
        let cause = MkdirCause::of(
            self.errno,
            cx.kernel.version.as_ref(),
            self.in_memory > 0,
            ids.known.then_some(ids.headroom),
        );
        let severity = match cause {
            MkdirCause::MemcgIdsExhausted
            | MkdirCause::AllocationFailed
            | MkdirCause::ControllerRefused
            | MkdirCause::CssCreationFailed => Severity::Critical,
            MkdirCause::Exists | MkdirCause::ParentGone => Severity::Info,
            _ => Severity::Warning,
        };
        let (in_window, start) = self.ring.recent(now);
        let span = now.saturating_sub(start.max(cx.first_ns.unwrap_or(start)));
        let age = age_s(now, last.ts);
        let ids_relevant = ids.known
            && matches!(
                cause,
                MkdirCause::MemcgIdsExhausted
                    | MkdirCause::MaybeMemcgIdsExhausted
                    | MkdirCause::AllocationFailed
                    | MkdirCause::ControllerRefused
                    | MkdirCause::CssCreationFailed
            );
        let mut summary = self.summary(&name, age, ids_relevant.then_some((ids, kmem_fired)));
        if cause == MkdirCause::MemcgIdsExhausted {
            summary = format!(
                "memcg IDs exhausted, new pods cannot start: {summary} ({} live, {} dying, {} held by swap)",
                ids.live, ids.dying, ids.swap_held
            );
        }
        let (paths, pods) = self.recent_paths_and_pods();
        let evidence = MkdirFailedEvidence {
            cause,
            message: errno_message(self.errno).to_string(),
            count: self.total,
            in_memory_hierarchy: self.in_memory,
            swap_held: ids_relevant.then_some(ids.swap_held),
            window_s: round_millis(span as f64 / NS_PER_S),
            dying: ids_relevant.then_some(ids.dying),
            live_memcgs: ids_relevant.then_some(ids.live),
            ids_held_by_dying: ids_relevant.then_some(ids.held_by_dying),
            id_headroom: ids_relevant.then_some(ids.headroom),
            pod_uid: last.pod_uid.as_deref().map(str::to_string),
            pod_uids: pods,
            errno: self.errno,
            errno_name: name,
            in_window,
            path: last.path.to_string(),
            comm: last.comm.to_string(),
            pid: last.pid,
            last_seen_age_s: age,
            example_paths: paths,
            kernel: ids_relevant.then(|| cx.kernel.release.clone()),
        };
        Some(Verdict {
            detector: "mkdir_failed",
            severity,
            summary,
            evidence: Evidence::MkdirFailed(evidence),
            recommendation: recommendation(cause, self.errno, ids),
        })
    }

    /// The summary line; `ids` when the memcg ID headroom bears on this errno.
    fn summary(&self, name: &str, age: f64, ids: Option<(&IdPicture, bool)>) -> String {
        let Some(last) = self.recent.back() else {
            return String::new();
        };
        let pod_txt = match &last.pod_uid {
            Some(p) => format!(" for pod {p}"),
            None => String::new(),
        };
        let ids_txt = match ids {
            Some((ids, kmem_fired)) => format!(
                "; memcg ID headroom estimate {}{}",
                ids.headroom,
                if kmem_fired { ", see kmem_leak" } else { "" }
            ),
            None => String::new(),
        };
        let by = if last.pid == 0 && last.comm.is_empty() {
            "a caller not seen (the kernel left only the half-made cgroup)".to_string()
        } else {
            format!("{}[{}]", terminal(&last.comm), last.pid)
        };
        format!(
            "mkdir in cgroupfs failed with {name} {} time{} (latest {} ago: {} by \
             {by}{pod_txt}){ids_txt}",
            self.total,
            if self.total == 1 { "" } else { "s" },
            human_secs(age),
            terminal(&last.path),
        )
    }

    /// The distinct paths and pods of the recent failures, newest first.
    fn recent_paths_and_pods(&self) -> (Vec<String>, Vec<String>) {
        let mut paths: Vec<String> = Vec::new();
        for r in self.recent.iter().rev() {
            if !paths.iter().any(|p| **p == *r.path) {
                paths.push(r.path.to_string());
            }
        }
        let pods = self
            .recent_pods
            .iter()
            .rev()
            .map(|p| p.to_string())
            .collect();
        (paths, pods)
    }
}

fn recommendation(cause: MkdirCause, errno: i32, ids: &IdPicture) -> String {
    let msg = errno_message(errno);
    match cause {
        MkdirCause::MemcgIdsExhausted if ids.held_by_dying => format!(
            "The node has used up its 65,535 memcg IDs: every new pod fails with 'mkdir ...: \
             {msg}' (kubelet, runc). On this kernel dying memcgs keep their IDs until they are \
             freed ({} dying now): see kmem_leak. Boot with cgroup.memory=nokmem, or use runc \
             and kubelet built with nokmem, or a fixed kernel; a drain and reboot clears it now.",
            ids.dying
        ),
        MkdirCause::MemcgIdsExhausted => format!(
            "The node has used up its 65,535 memcg IDs: every new pod fails with 'mkdir ...: \
             {msg}' (kubelet, runc). This kernel gives a removed memcg's ID back at offline \
             unless swap entries hold it, so the IDs are held by {} live memcgs and {} held by \
             swap: find what creates them (`cgtrace live` names the paths and processes), \
             remove leaked cgroups, lower the pod density; swapoff frees the swap-held ones.",
            ids.live, ids.swap_held
        ),
        MkdirCause::MaybeMemcgIdsExhausted => format!(
            "'mkdir ...: {msg}' is how this kernel reports memcg ID exhaustion; the ID headroom is \
             not known here: run `cgtrace check`, which counts the memcgs the kernel holds."
        ),
        MkdirCause::AllocationFailed | MkdirCause::ControllerRefused => format!(
            "Creating a cgroup failed: pods on this node cannot start ('mkdir ...: {msg}'). The \
             memcg ID headroom{} does not point at ID exhaustion: look for memory pressure or \
             fragmentation (ENOMEM), or a controller refusing the cgroup (a v1 cpuset without \
             cpus/mems, another controller's limit); `cgtrace check` counts the memcgs.",
            if ids.known {
                format!(" ({})", ids.headroom)
            } else {
                String::new()
            }
        ),
        MkdirCause::LimitReached => "An ancestor's cgroup.max.descendants or cgroup.max.depth \
                                     (cgroup v2) is reached: raise it or remove cgroups below it."
            .to_string(),
        MkdirCause::NotPermitted => "Check the process and the path: permissions \
                                     (EACCES/EPERM: user namespaces, delegation), or a read-only \
                                     cgroupfs (EROFS)."
            .to_string(),
        MkdirCause::Exists | MkdirCause::ParentGone => "Usually a harmless race (the cgroup \
                                                        already exists, or its parent was just \
                                                        removed); worth a look only if it \
                                                        repeats for the same path."
            .to_string(),
        MkdirCause::CssCreationFailed => format!(
            "The kernel made the cgroup but could not create a controller's state for it, and \
             destroyed it again: pods on this node cannot start. The errno is kept nowhere; the \
             memcg ID headroom{} does not point at ID exhaustion: look for memory pressure \
             (kernel allocation failures in dmesg), a controller refusing the cgroup, or run \
             cgtrace with `--mkdir-failures syscall` to see the errno and the caller.",
            if ids.known {
                format!(" ({})", ids.headroom)
            } else {
                String::new()
            }
        ),
        MkdirCause::Other => "Check the process and the path, and the limits of the parent \
                              cgroup."
            .to_string(),
    }
}
