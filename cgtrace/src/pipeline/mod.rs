//! The one pipeline `live`, `record`, `replay` and `attach` share: decoded events → tracker →
//! sinks. Only the source and the sinks differ, so a replay gives the output of the live run.
pub mod facts;
pub mod filters;
pub mod histogram;
pub mod metrics;
pub mod node;
pub mod output;
pub mod own_cost;
pub mod pod_names;
pub mod sample;

use std::{collections::VecDeque, io};

use cgtrace_common::EventKind;

use crate::{
    detectors::{DetectorConfig, Detectors, KernelFacts, Verdict},
    kernel::{hierarchy::HierarchyError, memcg_ids::KernelMemcgs, mkdir_errno},
    model::hash::FastHasher,
    model::{
        baseline::Baseline,
        event::{Event, FailureSource},
        tracker::Tracker,
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
    /// What the run could not do, said once each (at most [`MAX_NOTES`]).
    notes: Vec<String>,
    error: Option<io::Error>,
}

/// Most notes a run keeps.
const MAX_NOTES: usize = 16;

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

fn path_hash(p: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = FastHasher::default();
    h.write(p);
    h.finish()
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

    /// Handles one ring buffer record.
    pub fn record(&mut self, bytes: &[u8]) {
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
        if ev.kind != EventKind::DyingAtStart && is_own_cgroup(ev.path) {
            return;
        }
        // A failed mkdir caught at the syscall names its hierarchy only through its path.
        let located;
        let ev = if ev.kind == EventKind::MkdirFailed
            && ev.hierarchy_id == 0
            && let Some(h) = self.facts.hierarchies.of_path(ev.path)
        {
            let level = self
                .facts
                .hierarchies
                .relative_path(h, ev.path)
                .map_or(0, crate::model::event::path_level);
            located = Event {
                hierarchy_id: h,
                level,
                ..*ev
            };
            &located
        } else {
            ev
        };
        // An OOM kill: the victim's memcg and the memcg at its limit as the tracker knows them
        // (also once they were removed), and whether the kernel counted it.
        let (enriched, enriched_oom, victim_path, limit_path);
        let ev = match ev.oom {
            Some(o) if ev.kind == EventKind::OomKill => {
                victim_path = self
                    .tracker
                    .memcg((ev.hierarchy_id, ev.cgroup_id))
                    .map(|m| m.path);
                limit_path = o.limit.and_then(|l| {
                    self.tracker
                        .memcg((ev.hierarchy_id, l.cgroup_id))
                        .map(|m| m.path)
                });
                let mut o = *o;
                if let (Some(l), Some(p)) = (&mut o.limit, &limit_path) {
                    l.path = p;
                }
                o.counted = self.facts.oom.as_ref().and_then(|t| t.counted(&o));
                enriched_oom = o;
                enriched = Event {
                    path: victim_path.as_deref().unwrap_or(ev.path),
                    oom: Some(&enriched_oom),
                    ..*ev
                };
                &enriched
            }
            _ => ev,
        };
        // EEXIST (`mkdir -p`, Go's MkdirAll on every healthy start) is not a failure.
        if ev.kind == EventKind::MkdirFailed && ev.errno.map(i32::abs) == Some(mkdir_errno::EEXIST)
        {
            return;
        }
        let inferred;
        let ev = if ev.kind != EventKind::MkdirFailed {
            ev
        } else if self.seen_before(ev) {
            // The same failure, already reported from a source that says more.
            return;
        } else if !ev.is_half_made_release() {
            ev
        } else if let Some(errno) = self.inferred_errno(ev) {
            inferred = Event {
                errno: Some(errno),
                errno_inferred: true,
                ..*ev
            };
            &inferred
        } else {
            ev
        };
        let known = self.known_path(ev);
        let path = known.as_deref().unwrap_or(ev.path);
        if !self.passes(ev, path) {
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
        let want = path_hash(rel);
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

    /// The first output error since the last call.
    pub fn check(&mut self) -> io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        self.check()
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
        self.check()?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;
    use crate::{model::tracker::PodStats, model::tracker::tests::ev};

    type Seen = Rc<RefCell<Vec<(EventKind, Vec<u8>)>>>;

    /// Keeps (kind, path) of every event it gets.
    struct Paths(Seen);

    impl Sink for Paths {
        fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
            self.0.borrow_mut().push((ev.kind, ev.path.to_vec()));
            Ok(())
        }
        fn summary(&mut self, _s: &Summary) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pipeline(memory: Option<u32>, sinks: Vec<Box<dyn Sink>>) -> Pipeline {
        let mut facts = RunFacts::new("6.1.0", RunFacts::memory_at(memory));
        facts.tier = crate::probes::Tier::Fentry;
        Pipeline::new(
            facts,
            &Baseline::default(),
            sinks,
            Box::new(pod_names::NoPodNames),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn css_events_get_the_path_the_tracker_knows() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut p = pipeline(Some(4), vec![Box::new(Paths(seen.clone()))]);
        let css = 0xffff_8880_0000_2000;
        let mut online = ev(EventKind::CssOnline, 1, 4, 7, b"");
        online.css = css;
        p.event(&online);
        let mut mk = ev(EventKind::Mkdir, 2, 4, 7, b"/kubepods/x");
        mk.css = css;
        p.event(&mk);
        let mut off = ev(EventKind::CssOffline, 3, 4, 7, b"");
        off.css = css;
        p.event(&off);
        let got = seen.borrow();
        assert_eq!(
            got[0],
            (EventKind::CssOnline, Vec::new()),
            "not known before the mkdir"
        );
        assert_eq!(got[2], (EventKind::CssOffline, b"/kubepods/x".to_vec()));
    }

    #[test]
    fn the_event_that_forgets_a_pod_still_names_it_and_a_pod_that_comes_back_is_named_again() {
        type Pods = Rc<RefCell<Vec<(EventKind, Option<String>)>>>;
        struct PodsSeen(Pods);
        impl Sink for PodsSeen {
            fn event(&mut self, ev: &Event<'_>, pod: Option<&PodStats>) -> io::Result<()> {
                let who = pod.map(|p| format!("{}/{:?}", p.pod_uid, p.name));
                self.0.borrow_mut().push((ev.kind, who));
                Ok(())
            }
            fn summary(&mut self, _s: &Summary) -> io::Result<()> {
                Ok(())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        /// Names every pod, counting the lookups.
        struct Names(Rc<RefCell<u32>>);
        impl pod_names::PodNameSource for Names {
            fn lookup(&mut self, _uid: &str) -> Option<(String, String)> {
                *self.0.borrow_mut() += 1;
                Some(("ns".into(), "web".into()))
            }
        }
        let seen: Pods = Rc::default();
        let lookups = Rc::new(RefCell::new(0));
        let mut facts = RunFacts::new("6.1.0", RunFacts::memory_at(Some(4)));
        facts.tier = crate::probes::Tier::Tracepoint;
        let mut p = Pipeline::new(
            facts,
            &Baseline::default(),
            vec![Box::new(PodsSeen(seen.clone()))],
            Box::new(Names(lookups.clone())),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let uid = crate::model::tracker::tests::UID;
        let pod = format!("/kubepods/burstable/pod{uid}");
        for round in 0..2u64 {
            let t = round * 10;
            p.event(&ev(EventKind::Mkdir, t + 1, 4, 7 + round, pod.as_bytes()));
            p.event(&ev(EventKind::Rmdir, t + 2, 4, 7 + round, pod.as_bytes()));
            p.event(&ev(EventKind::Release, t + 3, 4, 7 + round, pod.as_bytes()));
            assert_eq!(p.tracker.pods_tracked(), 0);
        }
        let named = Some(format!("{uid}/Some(\"web\")"));
        let want: Vec<(EventKind, Option<String>)> =
            [EventKind::Mkdir, EventKind::Rmdir, EventKind::Release]
                .repeat(2)
                .into_iter()
                .map(|k| (k, named.clone()))
                .collect();
        assert_eq!(*seen.borrow(), want);
        assert_eq!(*lookups.borrow(), 2, "looked up again when it came back");
    }

    #[test]
    fn own_walk_triggers_are_ignored() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut p = pipeline(None, vec![Box::new(Paths(seen.clone()))]);
        p.event(&ev(EventKind::Mkdir, 1, 4, 7, b"/cgtrace-walk-1-0"));
        p.event(&ev(EventKind::Mkdir, 2, 4, 8, b"/other"));
        assert_eq!(seen.borrow().len(), 1);
        assert_eq!(p.counts.seen[EventKind::Mkdir as usize], 1);
        // Its own failed trigger mkdir (read-only cgroupfs) is no node failure; others are.
        p.event(&ev(
            EventKind::MkdirFailed,
            3,
            0,
            0,
            b"/sys/fs/cgroup/memory/cgtrace-walk-1-0",
        ));
        p.event(&ev(
            EventKind::MkdirFailed,
            4,
            0,
            0,
            b"/sys/fs/cgroup/memory/kubepods",
        ));
        assert_eq!(p.counts.seen[EventKind::MkdirFailed as usize], 1);
        assert_eq!(seen.borrow().len(), 2);
    }

    #[test]
    fn failed_mkdirs_get_their_hierarchy_and_eexist_is_no_failure() {
        let seen: Seen = Rc::default();
        let ids: Rc<RefCell<Vec<u32>>> = Rc::default();
        struct Ids(Rc<RefCell<Vec<u32>>>);
        impl Sink for Ids {
            fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
                self.0.borrow_mut().push(ev.hierarchy_id);
                Ok(())
            }
            fn summary(&mut self, _s: &Summary) -> io::Result<()> {
                Ok(())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut h = RunFacts::memory_at(Some(4));
        if let Some(m) = h.by_id.get_mut(&4) {
            m.mount = Some("/sys/fs/cgroup/memory".into());
        }
        let facts = RunFacts::new("6.18.44", h);
        let mut p = Pipeline::new(
            facts,
            &Baseline::default(),
            vec![Box::new(Paths(seen.clone())), Box::new(Ids(ids.clone()))],
            Box::new(pod_names::NoPodNames),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut busy = ev(
            EventKind::MkdirFailed,
            1,
            0,
            0,
            b"/sys/fs/cgroup/memory/kubepods/x",
        );
        busy.errno = Some(16);
        busy.has_cgroup = false;
        p.event(&busy);
        let mut exists = busy;
        exists.errno = Some(17);
        p.event(&exists);
        assert_eq!(
            seen.borrow().len(),
            1,
            "EEXIST is dropped: {:?}",
            seen.borrow()
        );
        assert_eq!(*ids.borrow(), vec![4], "the hierarchy from the path");
        assert_eq!(p.counts.seen[EventKind::MkdirFailed as usize], 1);
    }

    /// The failed mkdirs the sinks got: (path, errno, inferred).
    type Failures = Rc<RefCell<Vec<(Vec<u8>, Option<i32>, bool)>>>;

    struct FailureSink(Failures);

    impl Sink for FailureSink {
        fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
            if ev.kind == EventKind::MkdirFailed {
                self.0
                    .borrow_mut()
                    .push((ev.path.to_vec(), ev.errno, ev.errno_inferred));
            }
            Ok(())
        }
        fn summary(&mut self, _s: &Summary) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A pipeline on `release` with the memory hierarchy 4 mounted at /sys/fs/cgroup/memory.
    fn memory_pipeline(release: &str, sink: Failures) -> Pipeline {
        let mut h = RunFacts::memory_at(Some(4));
        if let Some(m) = h.by_id.get_mut(&4) {
            m.mount = Some("/sys/fs/cgroup/memory".into());
        }
        Pipeline::new(
            RunFacts::new(release, h),
            &Baseline::default(),
            vec![Box::new(FailureSink(sink))],
            Box::new(pod_names::NoPodNames),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// What the release program sends for a half-made cgroup: a failed mkdir with the cgroup's
    /// ids and path, no errno, no task.
    fn half_made(ts: u64, id: u64, path: &'static [u8]) -> Event<'static> {
        let mut e = ev(EventKind::MkdirFailed, ts, 4, id, path);
        e.pid = 0;
        e.tid = 0;
        e.comm = b"";
        e.errno = None;
        e
    }

    #[test]
    fn a_half_made_cgroup_at_no_headroom_is_memcg_id_exhaustion() {
        let seen: Failures = Rc::default();
        let mut p = memory_pipeline("6.18.44", seen.clone());
        // Far from exhaustion: the errno stays unknown.
        p.event(&half_made(1, 900, b"/kubepods/burstable/podaa"));
        // The kernel's counters say every memcg ID is used.
        p.kernel_memcgs(&KernelMemcgs {
            ts_ns: 2,
            all: Some(crate::kernel::MEMCG_ID_MAX),
            ..KernelMemcgs::default()
        });
        assert_eq!(p.detectors.id_headroom(&p.tracker), Some(0));
        p.event(&half_made(3, 901, b"/kubepods/burstable/podbb"));
        let got = seen.borrow().clone();
        assert_eq!(
            got,
            vec![
                (b"/kubepods/burstable/podaa".to_vec(), None, false),
                (b"/kubepods/burstable/podbb".to_vec(), Some(16), true),
            ],
            "EBUSY inferred on 6.12+ only at no headroom"
        );
        let v = p.verdicts();
        let exhausted = v
            .iter()
            .find(|v| v.detector == "mkdir_failed" && v.summary.starts_with("memcg IDs exhausted"))
            .expect("a memcg-IDs-exhausted verdict");
        assert_eq!(exhausted.severity, crate::detectors::Severity::Critical);
        assert!(
            exhausted.summary.contains("caller not seen"),
            "{}",
            exhausted.summary
        );
        let unknown = v
            .iter()
            .find(|v| {
                v.detector == "mkdir_failed"
                    && matches!(&v.evidence, crate::detectors::Evidence::MkdirFailed(e)
                        if e.cause == mkdir_errno::MkdirCause::CssCreationFailed)
            })
            .expect("the unknown-errno failure has its own verdict");
        assert_eq!(unknown.severity, crate::detectors::Severity::Critical);
        let headroom = v
            .iter()
            .find(|v| v.detector == "id_headroom")
            .expect("an id_headroom verdict");
        assert_eq!(headroom.severity, crate::detectors::Severity::Critical);
        assert_eq!(p.summary(4).id_headroom, Some(0));
    }

    #[test]
    fn a_failure_seen_at_the_syscall_is_not_reported_again_at_its_release() {
        let seen: Failures = Rc::default();
        let mut p = memory_pipeline("6.1.0", seen.clone());
        let mut at_syscall = ev(
            EventKind::MkdirFailed,
            1,
            0,
            0,
            b"/sys/fs/cgroup/memory/kubepods/podcc",
        );
        at_syscall.has_cgroup = false;
        at_syscall.errno = Some(28);
        p.event(&at_syscall);
        // Its half-made cgroup's release 40 ms later: the same failure.
        p.event(&half_made(40_000_001, 77, b"/kubepods/podcc"));
        // Another path, and the same path much later: failures of their own.
        p.event(&half_made(40_000_002, 78, b"/kubepods/poddd"));
        p.event(&half_made(90_000_000_000, 79, b"/kubepods/podcc"));
        // Seen at cgroupfs's cgroup_mkdir() return first (fentry/kprobe tiers), then at the
        // syscall exit, then at the release: one failure.
        let mut at_cgroupfs = ev(
            EventKind::MkdirFailed,
            100_000_000_000,
            4,
            0,
            b"/kubepods/podee",
        );
        at_cgroupfs.errno = Some(28);
        p.event(&at_cgroupfs);
        let mut later_syscall = at_syscall;
        later_syscall.ts_ns = 100_000_000_001;
        later_syscall.path = b"/sys/fs/cgroup/memory/kubepods/podee";
        p.event(&later_syscall);
        p.event(&half_made(100_040_000_000, 80, b"/kubepods/podee"));
        let paths: Vec<Vec<u8>> = seen.borrow().iter().map(|f| f.0.clone()).collect();
        assert_eq!(
            paths,
            vec![
                b"/sys/fs/cgroup/memory/kubepods/podcc".to_vec(),
                b"/kubepods/poddd".to_vec(),
                b"/kubepods/podcc".to_vec(),
                b"/kubepods/podee".to_vec(),
            ]
        );
        assert_eq!(p.counts.seen[EventKind::MkdirFailed as usize], 4);
    }

    #[test]
    fn kernel_counts_correct_the_headroom_and_events_move_it_after() {
        let seen: Failures = Rc::default();
        let mut p = memory_pipeline("6.1.0", seen);
        assert_eq!(
            p.detectors.id_headroom(&p.tracker),
            Some(crate::kernel::MEMCG_ID_MAX)
        );
        // 1,000 memcgs the events never showed (made before a filtered subtree, say).
        p.kernel_memcgs(&KernelMemcgs {
            ts_ns: 1,
            all: Some(1_000),
            ..KernelMemcgs::default()
        });
        assert_eq!(
            p.detectors.id_headroom(&p.tracker),
            Some(crate::kernel::MEMCG_ID_MAX - 1_000)
        );
        p.event(&ev(EventKind::Mkdir, 2, 4, 5, b"/kubepods/x"));
        assert_eq!(
            p.detectors.id_headroom(&p.tracker),
            Some(crate::kernel::MEMCG_ID_MAX - 1_001)
        );
        p.note("said once");
        assert!(!p.note("said once"));
        assert_eq!(p.summary(3).notes, vec!["said once".to_string()]);
    }
}
