//! The one pipeline `live`, `record`, `replay` and `attach` share: decoded events → tracker →
//! sinks. Only the source and the sinks differ, so a replay gives the output of the live run.
pub mod facts;
pub mod filters;
pub mod histogram;
pub mod metrics;
pub(crate) mod node;
pub mod output;
pub(crate) mod own_cost;
pub mod pod_names;
pub(crate) mod sample;

use std::{collections::VecDeque, io};

use cgtrace_common::EventKind;

use crate::{
    detectors::{DetectorConfig, Detectors, KernelFacts, Verdict},
    kernel::{hierarchy::HierarchyError, memcg_ids::KernelMemcgs, mkdir_errno},
    model::hash::hash_bytes,
    model::{
        baseline::Baseline,
        event::{Event, FailureSource},
        oom::OomKill,
        tracker::{Key, Tracker},
    },
    pipeline::{
        facts::RunFacts,
        filters::FilterSet,
        output::{Counts, Sink, Summary},
        pod_names::PodNameSource,
    },
};

/// The leaf-name prefix of the cgroups cgtrace makes itself (the start-up walk's triggers, any
/// cgtrace process's): never the node's news.
pub const OWN_CGROUP_PREFIX: &[u8] = b"cgtrace-walk-";

/// Whether a path names one of cgtrace's own cgroups.
pub fn is_own_cgroup(path: &[u8]) -> bool {
    let leaf = match memchr::memrchr(b'/', path) {
        Some(i) => &path[i + 1..],
        None => path,
    };
    leaf.starts_with(OWN_CGROUP_PREFIX)
}

pub struct Pipeline {
    pub tracker: Tracker,
    pub detectors: Detectors,
    pub counts: Counts,
    pub decode_errors: u64,
    facts: RunFacts,
    filters: FilterSet,
    sinks: Vec<Box<dyn Sink>>,
    pod_names: Box<dyn PodNameSource>,
    /// Failed mkdirs seen lately, newest last: one failure is seen up to three times (at
    /// cgroupfs's `cgroup_mkdir()` return, then at the syscall exit, then at the half-made
    /// cgroup's release) and reported once.
    recent_failures: VecDeque<SeenFailure>,
    /// cgtrace's own cgroups made lately (their events are dropped; a rmdir or release without
    /// its path is known as one by its key).
    own_cgroups: VecDeque<Key>,
    /// Room for the path the tracker gives back to a rmdir or release that left it out.
    path_buf: Vec<u8>,
    /// What the run could not do, said once each (at most [`MAX_NOTES`]).
    notes: Vec<String>,
    error: Option<io::Error>,
}

/// Most notes a run keeps.
const MAX_NOTES: usize = 16;

/// Most of cgtrace's own cgroups remembered (each is removed at once: a few at a time).
const OWN_CGROUPS: usize = 16;

/// Most failed mkdirs remembered to match their later sightings.
const RECENT_FAILURES: usize = 64;
/// How long after the first sighting of a failed mkdir the later ones are looked for (the
/// half-made cgroup's release comes from a kworker after an RCU grace period: 29–65 ms where it
/// was measured).
const SAME_FAILURE_WITHIN_NS: u64 = 5_000_000_000;

/// A failed mkdir reported: where, its hierarchy and the hash of its path below the
/// hierarchy's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SeenFailure {
    ts_ns: u64,
    source: FailureSource,
    hierarchy_id: u32,
    path_hash: u64,
}

/// What becomes of an event in [`Pipeline::failure`].
enum Failure {
    Drop,
    Keep,
    /// A half-made cgroup's release, with the one errno its failure can have.
    Inferred(i32),
}

impl Pipeline {
    /// The one constructor: live runs pass the facts of their probes, replays those of the
    /// session header. Fails when a filter names a controller the hierarchies do not have.
    pub fn new(
        facts: RunFacts,
        baseline: &Baseline,
        sinks: Vec<Box<dyn Sink>>,
        pod_names: Box<dyn PodNameSource>,
    ) -> Result<Pipeline, HierarchyError> {
        let filters = facts.filters.compile(&facts.hierarchies)?;
        let mut tracker = Tracker::new(facts.memory_hierarchy());
        tracker.set_css_joins(facts.css_joins());
        tracker.set_page_size(facts.page_size);
        tracker.load_baseline(baseline);
        let mut detectors = Detectors::new(
            DetectorConfig::default(),
            KernelFacts::from_release(&facts.kernel_release),
        );
        detectors.set_oom_tracing(facts.oom.clone());
        Ok(Pipeline {
            tracker,
            detectors,
            counts: Counts::default(),
            decode_errors: 0,
            facts,
            filters,
            sinks,
            pod_names,
            recent_failures: VecDeque::with_capacity(RECENT_FAILURES),
            own_cgroups: VecDeque::with_capacity(OWN_CGROUPS),
            path_buf: Vec::new(),
            notes: Vec::new(),
            error: None,
        })
    }

    /// The facts this pipeline was built from.
    pub fn facts(&self) -> &RunFacts {
        &self.facts
    }

    fn keep<T>(&mut self, r: io::Result<T>) {
        if let Err(e) = r
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }

    /// Decodes one record of the programs' buffer and feeds its event through ([`Pipeline::event`]).
    pub fn feed_raw(&mut self, bytes: &[u8]) {
        let decoded = Event::decode(bytes).and_then(|ev| match ev.kind {
            EventKind::OomKill => Ok((ev, Some(Event::decode_oom(bytes)?))),
            _ => Ok((ev, None)),
        });
        match decoded {
            Ok((ev, None)) => self.event(&ev),
            Ok((ev, Some(oom))) => self.event(&Event {
                oom: Some(&oom),
                ..ev
            }),
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors <= 10 {
                    log::warn!("undecodable ring buffer record: {e}");
                }
            }
        }
    }

    /// The path the tracker knows for an event that carries none of its own: the walk reports a
    /// leaf name, css hooks no path (at css_online of a new cgroup it is not known yet).
    fn known_path(&self, ev: &Event<'_>) -> Option<Vec<u8>> {
        if ev.kind == EventKind::DyingAtStart {
            return Some(self.tracker.child_path(ev.hierarchy_id, ev.css, ev.path));
        }
        let css_event = matches!(
            ev.kind,
            EventKind::CssOnline
                | EventKind::CssOffline
                | EventKind::CssReleased
                | EventKind::CssFree
        );
        if css_event && ev.has_cgroup && ev.path.is_empty() {
            return self.tracker.path((ev.hierarchy_id, ev.cgroup_id));
        }
        None
    }

    /// The filters, with one meaning on every tier and in replay. Events that name no cgroup,
    /// or whose path is not known, pass (the kernel-side filters judged them where they could).
    fn passes(&self, ev: &Event<'_>, path: &[u8]) -> bool {
        if ev.failure_seen_at() == Some(FailureSource::Syscall) {
            // Its absolute path, below its hierarchy's root (where the hierarchy is known).
            return match self
                .facts
                .hierarchies
                .relative_path(ev.hierarchy_id, ev.path)
            {
                Some(rel) => {
                    self.filters.passes_hierarchy(ev.hierarchy_id) && self.filters.passes_path(rel)
                }
                None => true,
            };
        }
        if !(ev.has_cgroup || ev.kind == EventKind::DyingAtStart) {
            return true;
        }
        if !self.filters.passes_hierarchy(ev.hierarchy_id) {
            return false;
        }
        path.is_empty() && ev.kind != EventKind::DyingAtStart || self.filters.passes_path(path)
    }

    /// Handles one event.
    pub fn event(&mut self, ev: &Event<'_>) {
        if ev.path.is_empty()
            && ev.has_cgroup
            && matches!(ev.kind, EventKind::Rmdir | EventKind::Release)
        {
            let mut buf = std::mem::take(&mut self.path_buf);
            if let Some(ev) = self.with_known_path(ev, &mut buf) {
                self.handle(&ev);
            }
            self.path_buf = buf;
            return;
        }
        self.handle(ev);
    }

    /// A rmdir or release whose program left the path out (the tracker has it from the
    /// cgroup's mkdir) with that path put back; None for one of cgtrace's own cgroups, and for
    /// an unknown cgroup when filters are set (its mkdir was filtered out).
    fn with_known_path<'b>(&mut self, ev: &Event<'b>, buf: &'b mut Vec<u8>) -> Option<Event<'b>> {
        let key = (ev.hierarchy_id, ev.cgroup_id);
        if let Some(truncated) = self.tracker.path_into(key, buf) {
            return Some(Event {
                path: buf.as_slice(),
                path_truncated: truncated,
                ..*ev
            });
        }
        if let Some(i) = self.own_cgroups.iter().position(|k| *k == key) {
            if ev.kind == EventKind::Release {
                self.own_cgroups.remove(i);
            }
            return None;
        }
        if !self.facts.filters.is_empty() {
            return None;
        }
        // Said once: `note` drops repeats.
        self.note("a rmdir or release came without its path for a cgroup whose mkdir cgtrace did not see: passed on with an empty path");
        Some(*ev)
    }

    /// Handles one event whose path is known (or needs none): completes what the record could
    /// not say (a failed mkdir's place, an OOM kill's memcgs), drops repeats, then dispatches.
    fn handle(&mut self, ev: &Event<'_>) {
        if self.own_cgroup(ev) {
            return;
        }
        // A failed mkdir caught at the syscall with a relative path the kernel resolved: made
        // absolute under its hierarchy's mount, as the syscall's absolute paths are.
        let absolute = self.absolute_failure_path(ev);
        let resolved;
        let ev = match &absolute {
            Some(p) => {
                resolved = Event {
                    path: p,
                    has_cgroup: false,
                    syscall_relative: false,
                    ..*ev
                };
                &resolved
            }
            None => ev,
        };
        // A failed mkdir caught at the syscall names its hierarchy only through its path.
        let located;
        let ev = match self.failure_hierarchy(ev) {
            Some((hierarchy_id, level)) => {
                located = Event {
                    hierarchy_id,
                    level,
                    ..*ev
                };
                &located
            }
            None => ev,
        };
        // An OOM kill: the victim's memcg and the memcg at its limit as the tracker knows them
        // (also once they were removed), and whether the kernel counted it.
        let (victim_path, limit_path) = self.oom_paths(ev);
        let (enriched, enriched_oom);
        let ev = match ev.oom {
            Some(o) if ev.kind == EventKind::OomKill => {
                enriched_oom = self.oom_enriched(o, limit_path.as_deref());
                enriched = Event {
                    path: victim_path.as_deref().unwrap_or(ev.path),
                    oom: Some(&enriched_oom),
                    ..*ev
                };
                &enriched
            }
            _ => ev,
        };
        let inferred;
        let ev = match self.failure(ev) {
            Failure::Drop => return,
            Failure::Keep => ev,
            Failure::Inferred(errno) => {
                inferred = Event {
                    errno: Some(errno),
                    errno_inferred: true,
                    ..*ev
                };
                &inferred
            }
        };
        self.dispatch(ev);
    }

    /// Whether the event is about one of cgtrace's own cgroups (dropped; a mkdir's key is kept
    /// to know its rmdir and release without their paths).
    fn own_cgroup(&mut self, ev: &Event<'_>) -> bool {
        if ev.kind == EventKind::DyingAtStart || !is_own_cgroup(ev.path) {
            return false;
        }
        if ev.kind == EventKind::Mkdir {
            if self.own_cgroups.len() >= OWN_CGROUPS {
                self.own_cgroups.pop_front();
            }
            self.own_cgroups.push_back((ev.hierarchy_id, ev.cgroup_id));
        }
        true
    }

    /// The absolute path of a failed mkdir caught at the syscall with a relative path.
    fn absolute_failure_path(&self, ev: &Event<'_>) -> Option<Vec<u8>> {
        if !(ev.syscall_relative && ev.has_cgroup) {
            return None;
        }
        self.facts
            .hierarchies
            .absolute_path(ev.hierarchy_id, ev.path)
    }

    /// The hierarchy and level of a failed mkdir caught at the syscall, from its path.
    fn failure_hierarchy(&self, ev: &Event<'_>) -> Option<(u32, u32)> {
        if ev.kind != EventKind::MkdirFailed || ev.has_cgroup || ev.hierarchy_id != 0 {
            return None;
        }
        let hierarchies = &self.facts.hierarchies;
        let h = hierarchies.of_path(ev.path)?;
        let level = hierarchies
            .relative_path(h, ev.path)
            .map_or(0, crate::model::event::path_level);
        Some((h, level))
    }

    /// An OOM kill's victim memcg path and the path of the memcg at its limit, as the tracker
    /// knows them.
    fn oom_paths(&self, ev: &Event<'_>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let Some(o) = ev.oom.filter(|_| ev.kind == EventKind::OomKill) else {
            return (None, None);
        };
        let path = |id| self.tracker.memcg((ev.hierarchy_id, id)).map(|m| m.path);
        (path(ev.cgroup_id), o.limit.and_then(|l| path(l.cgroup_id)))
    }

    /// An OOM kill with the limit memcg's path put in, and whether the kernel counted it.
    fn oom_enriched<'a>(&self, o: &OomKill<'a>, limit_path: Option<&'a [u8]>) -> OomKill<'a> {
        let mut o = *o;
        if let (Some(l), Some(p)) = (&mut o.limit, limit_path) {
            l.path = p;
        }
        o.counted = self.facts.oom.as_ref().and_then(|t| t.counted(&o));
        o
    }

    /// What becomes of a failed mkdir: EEXIST (`mkdir -p`, Go's MkdirAll on every healthy
    /// start) is no failure, a repeat of one reported from a source that says more is dropped,
    /// a half-made cgroup's release gets its errno where only one is possible.
    fn failure(&mut self, ev: &Event<'_>) -> Failure {
        if ev.kind != EventKind::MkdirFailed {
            return Failure::Keep;
        }
        if ev.errno.map(i32::abs) == Some(mkdir_errno::EEXIST) || self.seen_before(ev) {
            return Failure::Drop;
        }
        if !ev.is_half_made_release() {
            return Failure::Keep;
        }
        self.inferred_errno(ev)
            .map_or(Failure::Keep, Failure::Inferred)
    }

    /// Filters a complete event, then tracker, detectors and sinks see it.
    fn dispatch(&mut self, ev: &Event<'_>) {
        let known = self.known_path(ev);
        let path = known.as_deref().unwrap_or(ev.path);
        if !self.passes(ev, path) {
            return;
        }
        // The start-up walk runs beside the events: its late record of a memcg they told of.
        if ev.kind == EventKind::DyingAtStart && self.tracker.stale_walk_record(ev) {
            return;
        }
        self.counts.seen[ev.kind as usize] += 1;
        let obs = self.tracker.observe(ev);
        self.detectors.observe(ev, &obs, &self.tracker);
        for i in 0..self.sinks.len() {
            let r = self.sinks[i].observed(ev, &obs, &self.tracker);
            self.keep(r);
        }
        // A pod seen for the first time; or a pod of the baseline (so never new) whose dying
        // memcg the start-up walk found: look its name up (once per such record, few).
        let unnamed = obs.new_pod.or_else(|| {
            obs.pod
                .filter(|_| ev.kind == EventKind::DyingAtStart)
                .filter(|&i| self.tracker.pod(i).is_some_and(|p| p.name.is_none()))
        });
        if let Some(i) = unnamed {
            self.name_new_pod(i);
        }
        let shown;
        let ev = match &known {
            Some(p) if ev.kind != EventKind::DyingAtStart || !p.is_empty() => {
                shown = Event { path: p, ..*ev };
                &shown
            }
            _ => ev,
        };
        let pod = obs.pod.and_then(|i| self.tracker.pod(i));
        let mut err = None;
        for s in &mut self.sinks {
            if let Err(e) = s.event(ev, pod) {
                err.get_or_insert(e);
            }
        }
        if let Some(e) = err {
            self.keep(Err::<(), _>(e));
        }
    }

    /// Whether this failed mkdir was already reported from a source that says more (the
    /// `cgroup_mkdir()` return before the syscall exit, either before the half-made cgroup's
    /// release) within [`SAME_FAILURE_WITHIN_NS`]; else remembers it. Matched by hierarchy and
    /// path below the hierarchy's root (the syscall's absolute path made relative).
    fn seen_before(&mut self, ev: &Event<'_>) -> bool {
        let Some(source) = ev.failure_seen_at() else {
            return false;
        };
        let rel = match source {
            FailureSource::Syscall => self
                .facts
                .hierarchies
                .relative_path(ev.hierarchy_id, ev.path),
            _ => Some(ev.path),
        };
        let Some(rel) = rel else {
            return false;
        };
        let want = hash_bytes(rel);
        let found = self.recent_failures.iter().rposition(|f| {
            f.hierarchy_id == ev.hierarchy_id
                && f.path_hash == want
                && ev.ts_ns.saturating_sub(f.ts_ns) <= SAME_FAILURE_WITHIN_NS
                && match source {
                    FailureSource::Release => true,
                    FailureSource::Syscall => f.source == FailureSource::CgroupMkdir,
                    FailureSource::CgroupMkdir => false,
                }
        });
        if let Some(i) = found {
            // A release is the last sighting: nothing more to match.
            if source == FailureSource::Release {
                self.recent_failures.remove(i);
            }
            return true;
        }
        if self.recent_failures.len() >= RECENT_FAILURES {
            self.recent_failures.pop_front();
        }
        self.recent_failures.push_back(SeenFailure {
            ts_ns: ev.ts_ns,
            source,
            hierarchy_id: ev.hierarchy_id,
            path_hash: want,
        });
        false
    }

    /// The errno of a failed mkdir known only from its half-made cgroup's release, where only one
    /// is possible: in the memory hierarchy with no memcg ID left, this kernel's ID-exhaustion
    /// errno. Elsewhere it stays unknown ("css creation failed").
    fn inferred_errno(&self, ev: &Event<'_>) -> Option<i32> {
        if self.tracker.memory_hierarchy() != Some(ev.hierarchy_id) {
            return None;
        }
        let headroom = self.detectors.id_headroom(&self.tracker)?;
        (headroom <= mkdir_errno::EXHAUSTED_HEADROOM)
            .then(|| self.detectors.kernel().id_exhaustion_errno())
            .flatten()
    }

    /// Something the run could not do (said once: a repeat is dropped), for the summary and the
    /// session; returns whether it was new.
    /// The start-up walk ended (or failed): its records are over.
    pub fn walk_ended(&mut self) {
        self.tracker.walk_ended();
    }

    pub fn note(&mut self, text: &str) -> bool {
        if self.notes.len() >= MAX_NOTES || self.notes.iter().any(|n| n == text) {
            return false;
        }
        self.notes.push(text.to_string());
        for i in 0..self.sinks.len() {
            let r = self.sinks[i].note(text);
            self.keep(r);
        }
        true
    }

    /// A reading of the kernel's memcg counters, taken after the events before it were fed: the
    /// memcg ID headroom follows it from now on; recorded by the sinks that keep the run.
    pub fn kernel_memcgs(&mut self, k: &KernelMemcgs) {
        self.detectors.kernel_memcgs(k, &self.tracker);
        for i in 0..self.sinks.len() {
            let r = self.sinks[i].kernel_memcgs(k);
            self.keep(r);
        }
    }

    /// A pod the tracker just met (or an unnamed one of the baseline): its name and namespace,
    /// when the source knows them.
    fn name_new_pod(&mut self, i: u32) {
        let Some(uid) = self.tracker.pod(i).map(|p| p.pod_uid.clone()) else {
            return;
        };
        if let Some((ns, name)) = self.pod_names.lookup(&uid) {
            self.tracker.set_pod_name(&uid, &ns, &name);
            for i in 0..self.sinks.len() {
                let r = self.sinks[i].pod_name(&uid, &ns, &name);
                self.keep(r);
            }
        }
    }

    /// A pod name from a recorded session: kept for the pod's first event (the live run
    /// recorded it just before), and set at once if the pod is already tracked.
    pub fn pod_name(&mut self, uid: &str, namespace: &str, name: &str) {
        self.pod_names.recorded(uid, namespace, name);
        self.tracker.set_pod_name(uid, namespace, name);
    }

    /// `count` more lost events of `kind` (from a recorded session).
    pub fn lost_delta(&mut self, ts_ns: u64, kind: EventKind, count: u64) {
        let mut totals = self.counts.lost;
        totals[kind as usize] += count;
        self.lost_totals(ts_ns, &totals);
    }

    /// New totals of lost events (per kind): the growth goes to the sinks.
    pub fn lost_totals(&mut self, ts_ns: u64, lost: &[u64; EventKind::SLOTS]) {
        for k in EventKind::ALL {
            let i = k as usize;
            if lost[i] > self.counts.lost[i] {
                let n = lost[i] - self.counts.lost[i];
                self.counts.lost[i] = lost[i];
                for j in 0..self.sinks.len() {
                    let r = self.sinks[j].lost(ts_ns, k, n);
                    self.keep(r);
                }
            }
        }
    }

    /// The first error a sink returned since the last call.
    pub fn take_sink_error(&mut self) -> io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        self.take_sink_error()
    }

    /// The summary of the run up to `end_ns` (event time: a replay gives the live run's).
    pub fn summary(&self, end_ns: u64) -> Summary {
        let mut s = Summary::new(
            &self.counts,
            self.facts.tier.name(),
            self.facts.tracepoints.name(),
            end_ns.saturating_sub(self.facts.clock.mono_ns),
        );
        s.end_ns = end_ns;
        s.buffer = self.facts.buffer.name().to_string();
        s.tier_rejected = self.facts.rejected.iter().cloned().collect();
        match &self.facts.oom {
            Some(t) => s.oom = Some(self.detectors.oom_summary(t)),
            // Not traced (or recorded before cgtrace traced them): not a count of 0.
            None => {
                s.events.remove(EventKind::OomKill.name());
            }
        }
        s.totals = self.tracker.totals();
        s.id_headroom = self.detectors.id_headroom(&self.tracker);
        s.notes = self.notes.clone();
        s.pods = self.tracker.pods(self.tracker.now_ns());
        s
    }

    /// The detectors' current verdicts.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.detectors.verdicts(&self.tracker)
    }

    /// Ends the run at `end_ns`: the verdicts and the summary to every sink, flushed.
    pub fn finish(&mut self, end_ns: u64) -> io::Result<Summary> {
        let summary = self.summary(end_ns);
        let verdicts = self.verdicts();
        for s in &mut self.sinks {
            s.verdicts(&verdicts)?;
            s.summary(&summary)?;
            s.flush()?;
        }
        self.take_sink_error()?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests;
