//! Node mode's sinks: lifetime histograms and Prometheus metrics, fed from the same events as
//! every other sink. The state is shared with whoever reads it between events (`attach`'s
//! interval report and metrics refresh, `report`'s percentiles).
use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    rc::Rc,
    sync::{Arc, Mutex},
};

use cgtrace_common::EventKind;

use crate::{
    model::{
        event::Event,
        tracker::{Observed, PodStats, Tracker},
    },
    pipeline::{
        histogram::Lifetimes,
        metrics::MetricsState,
        output::{Sink, Summary},
    },
};

/// Lifetime histograms as a sink.
pub struct LifetimeSink(pub Rc<RefCell<Lifetimes>>);

impl Sink for LifetimeSink {
    fn event(&mut self, _ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        Ok(())
    }
    fn observed(&mut self, ev: &Event<'_>, obs: &Observed, _t: &Tracker) -> io::Result<()> {
        self.0.borrow_mut().record(ev.hierarchy_id, obs);
        Ok(())
    }
    fn summary(&mut self, _s: &Summary) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The Prometheus counters that move with each event (the gauges are refreshed from the
/// tracker by `attach`).
pub struct MetricsSink {
    pub state: Arc<Mutex<MetricsState>>,
    /// Hierarchy id → label ("memory", "cpu,cpuacct", "unified").
    pub labels: HashMap<u32, String>,
    pub memory_hierarchy: Option<u32>,
}

impl Sink for MetricsSink {
    fn event(&mut self, _ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        Ok(())
    }
    fn observed(&mut self, ev: &Event<'_>, obs: &Observed, t: &Tracker) -> io::Result<()> {
        let Ok(mut m) = self.state.lock() else {
            return Ok(());
        };
        m.metrics.on_event(ev.kind.name());
        // A kill where the kernel counted one, or where the tier cannot tell.
        if let Some(o) = ev.oom
            && o.counted != Some(false)
        {
            let pod = obs.pod.and_then(|i| t.pod(i));
            let qos = obs.qos.or(pod.and_then(|p| p.qos));
            m.metrics.on_oom_kill(
                qos,
                o.constraint,
                pod.map(|p| (&*p.pod_uid, p.namespace.as_deref(), p.name.as_deref())),
            );
        }
        if obs.live_ns.is_some() || obs.dying_ns.is_some() {
            // Memcg lifetimes belong to the memory hierarchy (css_free has no cgroup fields).
            let h = match (obs.memcg, self.memory_hierarchy) {
                (true, Some(m)) => m,
                _ => ev.hierarchy_id,
            };
            let label = self.labels.get(&h).map(String::as_str).unwrap_or("unknown");
            m.metrics.on_observed(label, obs);
        }
        Ok(())
    }
    fn lost(&mut self, _ts_ns: u64, kind: EventKind, n: u64) -> io::Result<()> {
        if let Ok(mut m) = self.state.lock() {
            m.metrics.on_lost(kind.name(), n);
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
