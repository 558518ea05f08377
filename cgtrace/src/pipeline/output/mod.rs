//! Sinks that print events: one readable line per event ([`TextSink`], [`SummarySink`]) or
//! JSON lines ([`JsonSink`]); the [`Sink`] trait every output implements, and the [`Summary`]
//! a run ends with.
use std::{
    collections::HashMap,
    io::{self},
};

use cgtrace_common::EventKind;
use serde::{Serialize, Serializer, ser::SerializeMap as _};

use crate::{
    detectors::{OomSummary, Verdict},
    format::clock::ClockRef,
    kernel::{hierarchy::Hierarchies, memcg_ids::KernelMemcgs},
    model::event::Event,
    model::tracker::{Observed, PodStats, PodSummary, Totals, Tracker},
};

mod json;
mod text;

pub use json::JsonSink;
pub use text::{SummarySink, TextSink};

/// Totals printed when a run ends.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Events seen, by kind name (JSON adds their `total`, [`Summary::total_events`]).
    #[serde(serialize_with = "events_with_total")]
    pub events: std::collections::BTreeMap<&'static str, u64>,
    /// Events lost because the ring buffer was full (all kinds).
    pub lost: u64,
    pub lost_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Probe tier (`fentry`, `kprobe`, `tracepoint`).
    pub tier: String,
    /// Why each better tier was not used.
    pub tier_rejected: std::collections::BTreeMap<String, String>,
    /// How the cgroup tracepoints were attached (`raw_tracepoint` or `tracepoint`).
    pub attach: String,
    /// The buffer the records came through (`ring`, `perf`).
    pub buffer: String,
    pub duration_ns: u64,
    /// When the run ended (monotonic ns, event time): for sinks that record it.
    #[serde(skip)]
    pub end_ns: u64,
    /// Memcgs (on the hierarchy holding memory) by state, and the kernel's dying count at start.
    #[serde(flatten)]
    pub totals: Totals,
    /// Memcg IDs left of 65,535, counted the way this kernel spends them (absent without a
    /// memory hierarchy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_headroom: Option<u64>,
    /// What the run could not do, said once (e.g. the start-up walk that names dying memcgs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Pods with memcgs, most dying first.
    pub pods: Vec<PodSummary>,
    /// OOM kills, where the run traces them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<OomSummary>,
}

impl Summary {
    pub fn new(counts: &Counts, tier: &str, attach: &str, duration_ns: u64) -> Summary {
        let mut events = std::collections::BTreeMap::new();
        let mut lost_by_kind = std::collections::BTreeMap::new();
        for k in EventKind::ALL {
            events.insert(k.name(), counts.seen[k as usize]);
            if counts.lost[k as usize] > 0 {
                lost_by_kind.insert(k.name(), counts.lost[k as usize]);
            }
        }
        Summary {
            events,
            lost: counts.lost.iter().sum(),
            lost_by_kind,
            tier: tier.to_string(),
            tier_rejected: std::collections::BTreeMap::new(),
            attach: attach.to_string(),
            buffer: "ring".to_string(),
            duration_ns,
            end_ns: 0,
            totals: Totals::default(),
            id_headroom: None,
            notes: Vec::new(),
            pods: Vec::new(),
            oom: None,
        }
    }

    /// Events seen, all kinds.
    pub fn total_events(&self) -> u64 {
        self.events.values().sum()
    }
}

/// The events by kind, with their `total` in its sorted place (what JSON consumers read).
fn events_with_total<S: Serializer>(
    events: &std::collections::BTreeMap<&'static str, u64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    const TOTAL: &str = "total";
    let mut m = s.serialize_map(Some(events.len() + 1))?;
    let mut total = Some(events.values().sum::<u64>());
    for (k, n) in events {
        if *k > TOTAL
            && let Some(t) = total.take()
        {
            m.serialize_entry(TOTAL, &t)?;
        }
        m.serialize_entry(k, n)?;
    }
    if let Some(t) = total {
        m.serialize_entry(TOTAL, &t)?;
    }
    m.end()
}

/// Per-kind counters of seen and lost events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub seen: [u64; EventKind::SLOTS],
    pub lost: [u64; EventKind::SLOTS],
}

/// What every sink needs to render an event.
pub struct RenderContext {
    pub clock: ClockRef,
    labels: HashMap<u32, (String, String)>,
    hierarchies: Hierarchies,
}

impl RenderContext {
    pub fn new(hierarchies: Hierarchies, clock: ClockRef) -> RenderContext {
        let labels = hierarchies
            .by_id
            .keys()
            .map(|&id| (id, Self::render_labels(&hierarchies, id)))
            .collect();
        RenderContext {
            clock,
            labels,
            hierarchies,
        }
    }

    fn render_labels(h: &Hierarchies, id: u32) -> (String, String) {
        let text = h.label(id);
        let list: Vec<String> = match h.get(id) {
            Some(x) if !x.controllers.is_empty() => x.controllers.clone(),
            _ => vec![text.clone()],
        };
        let json = serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_string());
        (text, json)
    }

    /// (text label, JSON array) of a hierarchy's controllers.
    fn labels(&mut self, id: u32) -> &(String, String) {
        let h = &self.hierarchies;
        self.labels
            .entry(id)
            .or_insert_with(|| Self::render_labels(h, id))
    }
}

/// Where events go.
pub trait Sink {
    /// One event, with the pod its cgroup belongs to (when the tracker knows one).
    fn event(&mut self, ev: &Event<'_>, pod: Option<&PodStats>) -> io::Result<()>;
    /// What the tracker made of an event (lifetimes it completed, …), before `event`.
    fn observed(&mut self, _ev: &Event<'_>, _obs: &Observed, _tracker: &Tracker) -> io::Result<()> {
        Ok(())
    }
    /// Events lost since the last call (ring buffer full).
    fn lost(&mut self, _ts_ns: u64, _kind: EventKind, _count: u64) -> io::Result<()> {
        Ok(())
    }
    /// A note of what the run could not do (sessions record it).
    fn note(&mut self, _text: &str) -> io::Result<()> {
        Ok(())
    }
    /// A reading of the kernel's memcg counters (sessions record it).
    fn kernel_memcgs(&mut self, _k: &KernelMemcgs) -> io::Result<()> {
        Ok(())
    }
    /// A pod's name was looked up (recorded so replays need no lookups).
    fn pod_name(&mut self, _uid: &str, _namespace: &str, _name: &str) -> io::Result<()> {
        Ok(())
    }
    /// The detectors' verdicts at the end of a run (before the summary).
    fn verdicts(&mut self, _v: &[Verdict]) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

#[cfg(test)]
mod tests;
