//! The one pipeline `live`, `record`, `replay` and `attach` share: decoded events → tracker →
//! sinks. Only the source and the sinks differ, so a replay gives the output of the live run.
pub mod histogram;
pub mod metrics;
pub mod output;

use std::{
    collections::HashMap,
    io,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cgtrace_common::EventKind;

use crate::{
    detectors::{DetectorConfig, Detectors, KernelFacts, Verdict},
    model::baseline::Baseline,
    model::event::Event,
    model::k8s::PodLogIndex,
    model::tracker::Tracker,
    pipeline::histogram::Lifetimes,
    pipeline::metrics::MetricsState,
    pipeline::output::{Counts, Sink, Summary},
};

/// Node mode: lifetime histograms and Prometheus metrics fed from the same events.
pub struct NodeMode {
    pub lifetimes: Lifetimes,
    pub metrics: Option<Arc<Mutex<MetricsState>>>,
    /// Hierarchy id → label for metrics ("memory", "cpu,cpuacct", "unified").
    pub labels: HashMap<u32, String>,
}

/// Pod name lookups in `/var/log/pods` (live runs only; sessions record the answers).
pub struct PodNames {
    dir: PathBuf,
    index: PodLogIndex,
    loaded: Instant,
}

impl PodNames {
    pub fn new(dir: PathBuf) -> PodNames {
        let index = PodLogIndex::load(&dir).unwrap_or_default();
        PodNames {
            dir,
            index,
            loaded: Instant::now(),
        }
    }

    /// (namespace, name) of a pod; rereads the directory (at most every 2 s) on a miss.
    fn lookup(&mut self, uid: &str) -> Option<(String, String)> {
        if self.index.lookup(uid).is_none() && self.loaded.elapsed() > Duration::from_secs(2) {
            self.index = PodLogIndex::load(&self.dir).unwrap_or_default();
            self.loaded = Instant::now();
        }
        self.index
            .lookup(uid)
            .map(|(ns, n)| (ns.to_string(), n.to_string()))
    }
}

pub struct Pipeline {
    pub tracker: Tracker,
    pub detectors: Detectors,
    pub node: Option<NodeMode>,
    pub counts: Counts,
    pub decode_errors: u64,
    sinks: Vec<Box<dyn Sink>>,
    pod_names: Option<PodNames>,
    error: Option<io::Error>,
    /// Events of cgroups whose path starts with this are cgtrace's own (walk triggers): dropped.
    ignore_prefix: Option<Vec<u8>>,
    /// `--path-prefix`, for the start-up walk's records (the kernel sees only their leaf name).
    path_prefix: Option<Vec<u8>>,
}

/// Whether the last component of a failed mkdir's path (as the caller spelt it, e.g.
/// `/sys/fs/cgroup/memory/cgtrace-walk-…`) starts with `prefix` (`/cgtrace-walk-…`).
fn leaf_is(path: &[u8], prefix: &[u8]) -> bool {
    let leaf = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let want = prefix.strip_prefix(b"/").unwrap_or(prefix);
    !want.is_empty() && leaf.starts_with(want)
}

impl Pipeline {
    /// `kernel_release`: of the kernel the events come from (the session's, in a replay).
    pub fn new(
        memory_hierarchy: Option<u32>,
        kernel_release: &str,
        baseline: &Baseline,
        sinks: Vec<Box<dyn Sink>>,
        pod_names: Option<PodNames>,
    ) -> Pipeline {
        let mut tracker = Tracker::new(memory_hierarchy);
        tracker.load_baseline(baseline);
        Pipeline {
            tracker,
            detectors: Detectors::new(
                DetectorConfig::default(),
                KernelFacts::from_release(kernel_release),
            ),
            node: None,
            counts: Counts::default(),
            decode_errors: 0,
            sinks,
            pod_names,
            error: None,
            ignore_prefix: None,
            path_prefix: None,
        }
    }

    /// Applies `--path-prefix` to the start-up walk's records too (in user space: the kernel
    /// only had their leaf name).
    pub fn path_prefix(&mut self, prefix: Option<Vec<u8>>) {
        self.path_prefix = prefix;
    }

    /// Drops events of cgroups whose path starts with `prefix` (cgtrace's own).
    pub fn ignore_paths_with_prefix(&mut self, prefix: Vec<u8>) {
        self.ignore_prefix = Some(prefix);
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
        match Event::decode(bytes) {
            Ok(ev) => self.event(&ev),
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors <= 10 {
                    log::warn!("undecodable ring buffer record: {e}");
                }
            }
        }
    }

    /// Handles one event.
    pub fn event(&mut self, ev: &Event<'_>) {
        if let Some(p) = &self.ignore_prefix
            && ev.kind != EventKind::DyingAtStart
            && (ev.path.starts_with(p)
                || (ev.kind == EventKind::MkdirFailed && leaf_is(ev.path, p)))
        {
            return;
        }
        if ev.kind == EventKind::DyingAtStart
            && let Some(p) = &self.path_prefix
            && !self
                .tracker
                .child_path(ev.hierarchy_id, ev.css, ev.path)
                .starts_with(p)
        {
            return;
        }
        self.counts.seen[ev.kind as usize] += 1;
        let obs = self.tracker.observe(ev);
        self.detectors.observe(ev, &obs, &self.tracker);
        if let Some(node) = &mut self.node {
            // Memcg lifetimes belong to the memory hierarchy (css_free has no cgroup fields).
            let h = if obs.memcg {
                self.tracker.memory_hierarchy().unwrap_or(ev.hierarchy_id)
            } else {
                ev.hierarchy_id
            };
            node.lifetimes.record(h, &obs);
            if let Some(m) = &node.metrics
                && let Ok(mut m) = m.lock()
            {
                m.metrics.on_event(ev.kind.name());
                if obs.live_ns.is_some() || obs.dying_ns.is_some() {
                    let label = node.labels.get(&h).map(String::as_str).unwrap_or("unknown");
                    m.metrics.on_observed(label, &obs);
                }
            }
        }
        // A pod seen for the first time; or a pod of the baseline (so never new) whose dying
        // memcg the start-up walk found: look its name up (once per such record, few).
        let unnamed = obs.new_pod.or_else(|| {
            obs.pod
                .filter(|_| ev.kind == EventKind::DyingAtStart)
                .filter(|&i| self.tracker.pod(i).is_some_and(|p| p.name.is_none()))
        });
        if let (Some(i), Some(names)) = (unnamed, self.pod_names.as_mut())
            && let Some(uid) = self.tracker.pod(i).map(|p| p.pod_uid.clone())
            && let Some((ns, name)) = names.lookup(&uid)
        {
            self.tracker.set_pod_name(&uid, &ns, &name);
            for i in 0..self.sinks.len() {
                let r = self.sinks[i].pod_name(&uid, &ns, &name);
                self.keep(r);
            }
        }
        // The walk reports a leaf name, css hooks no path: show the path the tracker knows
        // (from the mkdir, or the baseline; at css_online of a new cgroup it is not known yet).
        let resolved;
        let needs_path = ev.kind == EventKind::DyingAtStart
            || (ev.has_cgroup
                && ev.path.is_empty()
                && matches!(
                    ev.kind,
                    EventKind::CssOnline
                        | EventKind::CssOffline
                        | EventKind::CssReleased
                        | EventKind::CssFree
                ));
        let ev = if needs_path && let Some(p) = self.tracker.path((ev.hierarchy_id, ev.cgroup_id)) {
            resolved = p;
            &Event {
                path: &resolved,
                ..*ev
            }
        } else {
            ev
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

    /// A pod name from a recorded session.
    pub fn pod_name(&mut self, uid: &str, namespace: &str, name: &str) {
        self.tracker.set_pod_name(uid, namespace, name);
        for i in 0..self.sinks.len() {
            let r = self.sinks[i].pod_name(uid, namespace, name);
            self.keep(r);
        }
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
                if let Some(m) = self.node.as_ref().and_then(|n| n.metrics.as_ref())
                    && let Ok(mut m) = m.lock()
                {
                    m.metrics.on_lost(k.name(), n);
                }
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

    pub fn summary(&self, tier: &str, attach: &str, duration_ns: u64) -> Summary {
        let mut s = Summary::new(&self.counts, tier, attach, duration_ns);
        s.totals = self.tracker.totals();
        s.pods = self.tracker.pods(self.tracker.now_ns());
        s
    }

    /// The detectors' current verdicts.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.detectors.verdicts(&self.tracker)
    }

    /// Writes the verdicts and the summary to every sink and flushes.
    pub fn finish(&mut self, summary: &Summary) -> io::Result<()> {
        let verdicts = self.verdicts();
        for s in &mut self.sinks {
            s.verdicts(&verdicts)?;
            s.summary(summary)?;
            s.flush()?;
        }
        self.check()
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

    #[test]
    fn css_events_get_the_path_the_tracker_knows() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut p = Pipeline::new(
            Some(4),
            "6.1.0",
            &Baseline::default(),
            vec![Box::new(Paths(seen.clone()))],
            None,
        );
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
    fn own_walk_triggers_are_ignored() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut p = Pipeline::new(
            None,
            "6.1.0",
            &Baseline::default(),
            vec![Box::new(Paths(seen.clone()))],
            None,
        );
        p.ignore_paths_with_prefix(b"/cgtrace-walk-1-".to_vec());
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
}
