//! The facts of one run that the pipeline depends on: where the events came from and how they
//! were caught. A live run takes them from the probes it attached; a replay from the session
//! header, so both build the same pipeline from the same value.
use crate::{
    format::clock::ClockRef,
    kernel::hierarchy::Hierarchies,
    model::oom::OomTracing,
    pipeline::filters::Filters,
    probes::{Attached, Probes, Tier, buffer::Buffer},
};

/// What a run is: kernel, cgroup layout, probe tier and tracepoint kind, filters.
#[derive(Clone, Debug)]
pub struct RunFacts {
    /// `uname -r` of the kernel the events come from.
    pub kernel_release: String,
    /// The page size of that kernel (page counters are in pages).
    pub page_size: u64,
    /// Hierarchy id → controllers and mount point.
    pub hierarchies: Hierarchies,
    /// The probe tier in use.
    pub tier: Tier,
    /// How the cgroup tracepoints were attached.
    pub tracepoints: Attached,
    /// The buffer the records came through (ring for sessions that predate the choice).
    pub buffer: Buffer,
    /// Why each better tier (or tracepoint kind) was not used: (what, why).
    pub rejected: Vec<(String, String)>,
    /// Why a better tracepoint kind was not used.
    pub fallbacks: Vec<String>,
    /// Monotonic ↔ wall-clock reference taken at start.
    pub clock: ClockRef,
    /// The user's filters, applied by the pipeline to every event.
    pub filters: Filters,
    /// How OOM kills are traced (None: they are not, or the session predates them).
    pub oom: Option<OomTracing>,
}

impl RunFacts {
    /// The facts of a live run on the probes it attached.
    pub fn of_probes(
        probes: &Probes,
        hierarchies: Hierarchies,
        filters: Filters,
        clock: ClockRef,
    ) -> RunFacts {
        RunFacts {
            kernel_release: probes.kernel_release.clone(),
            page_size: crate::kernel::page_size(),
            hierarchies,
            tier: probes.tier,
            tracepoints: probes.attached,
            buffer: probes.events.buffer(),
            rejected: probes
                .rejected
                .iter()
                .map(|(t, why)| (t.name().to_string(), why.clone()))
                .collect(),
            fallbacks: probes.fallbacks.clone(),
            clock,
            filters,
            oom: probes.oom.as_ref().ok().cloned(),
        }
    }

    /// A run on `kernel_release` with these hierarchies, on raw tracepoints, unfiltered (tests,
    /// benches, synthetic streams).
    pub fn new(kernel_release: &str, hierarchies: Hierarchies) -> RunFacts {
        RunFacts {
            kernel_release: kernel_release.to_string(),
            page_size: crate::kernel::page_size(),
            hierarchies,
            tier: Tier::Tracepoint,
            tracepoints: Attached::RawTracepoint,
            buffer: Buffer::Ring,
            rejected: Vec::new(),
            fallbacks: Vec::new(),
            clock: ClockRef::now(),
            filters: Filters::default(),
            oom: None,
        }
    }

    /// Hierarchies where `memory` (if given) holds the memory controller, mounted nowhere.
    pub fn memory_at(memory: Option<u32>) -> Hierarchies {
        let mut h = Hierarchies::default();
        if let Some(id) = memory {
            h.by_id.insert(
                id,
                crate::kernel::hierarchy::Hierarchy {
                    id,
                    controllers: vec!["memory".to_string()],
                    mount: None,
                },
            );
        }
        h
    }

    /// The hierarchy that holds the memory controller.
    pub fn memory_hierarchy(&self) -> Option<u32> {
        self.hierarchies.with_controller("memory").map(|h| h.id)
    }

    /// Whether css events are joined to their cgroups (the css tiers report them).
    pub fn css_joins(&self) -> bool {
        self.tier != Tier::Tracepoint
    }

    /// "fentry: EPERM …; kprobe: kernel built without CONFIG_KPROBES".
    pub fn rejected_list(&self) -> String {
        self.rejected
            .iter()
            .map(|(t, why)| format!("{t}: {why}"))
            .chain(self.fallbacks.iter().cloned())
            .collect::<Vec<_>>()
            .join("; ")
    }
}
