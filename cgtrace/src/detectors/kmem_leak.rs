//! `kmem_leak`: dying memcgs pile up under churn while (almost) none are freed, and kernel memory
//! pins them (kernels before 5.9). Reports the memcg ID headroom and, where dying memcgs hold IDs,
//! an ETA to `mkdir: no space left on device`. Once seen, the pattern is remembered until frees
//! resume.
use serde::Serialize;

use super::{
    Ctx, DetectorConfig, DyingSample, Evidence, IdPicture, NS_PER_S, Severity, Verdict,
    window::Ring,
};
use crate::{
    format::{escape::terminal, units::human_secs, units::round_millis},
    model::tracker::{DyingMemcg, Totals},
};

/// What a `kmem_leak` verdict rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KmemLeakEvidence {
    /// All dying memcgs the kernel holds (seen removed, plus those dying before start not freed).
    pub count: u64,
    /// Seconds of event time the windowed numbers cover.
    pub window_s: f64,
    /// The same as `count`.
    pub dying: u64,
    /// Dying memcgs charged with kernel memory at removal.
    pub kmem_pinned: u64,
    /// Memory cgroups removed within the window.
    pub removed_in_window: u64,
    /// Dying memory cgroups freed within the window.
    pub freed_in_window: u64,
    /// Net growth of dying memcgs, per hour, over the window.
    pub growth_per_hour: f64,
    /// Memcgs online now.
    pub live_memcgs: u64,
    /// Dying memcgs whose memcg ID swap entries hold (memory+swap above memory at removal on v1,
    /// swap above 0 on v2).
    pub swap_held: u64,
    /// This kernel (before 4.8) keeps a dying memcg's ID until it is freed.
    pub ids_held_by_dying: bool,
    /// Memcg IDs left of 65,535, counted the way this kernel spends them.
    pub id_headroom: u64,
    /// Seconds until the IDs run out at the current growth (only where dying memcgs hold IDs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_to_enospc_s: Option<f64>,
    /// Bytes of kernel memory charged at removal to the pinned memcgs.
    pub kmem_bytes: u64,
    /// The pinned memcgs.
    #[serde(flatten)]
    pub sample: DyingSample,
    /// The kernel release.
    pub kernel: String,
}

/// Memory-hierarchy removals and frees per bucket.
#[derive(Clone, Copy, Debug, Default)]
struct LeakSlot {
    rmdirs: u64,
    frees: u64,
}

/// The window judged.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LeakWindow {
    pub(super) rmdirs: u64,
    pub(super) frees: u64,
    span_ns: u64,
    /// Events were observed since before the window started.
    full: bool,
}

impl LeakWindow {
    fn growth(&self) -> i64 {
        self.rmdirs as i64 - self.frees as i64
    }

    /// Dying memcgs pile up and (almost) none are freed.
    fn accumulating(&self, cfg: &DetectorConfig) -> bool {
        self.full
            && self.growth() >= cfg.kmem_min_growth as i64
            && (self.frees as f64) <= cfg.kmem_max_free_ratio * self.rmdirs as f64
    }

    /// Frees resumed: the churn is freed again, or the dying count fell by the growth threshold.
    fn recovering(&self, cfg: &DetectorConfig) -> bool {
        let min = cfg.kmem_min_growth as i64;
        (self.rmdirs as i64 >= min
            && self.frees as f64 > cfg.kmem_max_free_ratio * self.rmdirs as f64)
            || self.growth() <= -min.max(1)
    }
}

/// The detector's state: removals and frees per bucket, and whether the pattern was seen.
pub(super) struct KmemLeak {
    ring: Ring<LeakSlot>,
    checked_idx: u64,
    latched: bool,
}

/// The numbers of a firing verdict.
struct Leak<'a> {
    w: LeakWindow,
    span_s: f64,
    growth_per_hour: f64,
    eta_s: Option<f64>,
    pinned: Vec<&'a DyingMemcg>,
}

impl KmemLeak {
    /// A window of `buckets` buckets of `width` ns.
    pub(super) fn new(width: u64, buckets: u64) -> Self {
        KmemLeak {
            ring: Ring::new(width, buckets),
            checked_idx: u64::MAX,
            latched: false,
        }
    }

    /// A memory-hierarchy cgroup was removed at `ts`.
    pub(super) fn removed(&mut self, ts: u64) {
        if let Some(s) = self.ring.at(ts) {
            s.rmdirs += 1;
        }
    }

    /// A dying memory-hierarchy cgroup was freed at `ts`.
    pub(super) fn freed(&mut self, ts: u64) {
        if let Some(s) = self.ring.at(ts) {
            s.frees += 1;
        }
    }

    pub(super) fn window(&self, now: u64, first_ns: Option<u64>) -> LeakWindow {
        let mut w = LeakWindow::default();
        for s in self.ring.buckets(now) {
            w.rmdirs += s.rmdirs;
            w.frees += s.frees;
        }
        let (start, end) = self.ring.window(now);
        let first = first_ns.unwrap_or(now);
        w.full = end > start && first <= start;
        w.span_ns = end.saturating_sub(start.max(first));
        w
    }

    /// Once per bucket: remember that dying memcgs piled up, until frees resume.
    pub(super) fn tick(&mut self, now: u64, first_ns: Option<u64>, cfg: &DetectorConfig) {
        let idx = now / self.ring.width;
        if idx == self.checked_idx {
            return;
        }
        self.checked_idx = idx;
        let w = self.window(now, first_ns);
        if w.accumulating(cfg) {
            self.latched = true;
        } else if w.recovering(cfg) {
            self.latched = false;
        }
    }

    pub(super) fn verdict(
        &self,
        cx: &Ctx<'_>,
        totals: &Totals,
        dying: &[DyingMemcg],
        ids: &IdPicture,
    ) -> Option<Verdict> {
        let leak = self.judge(cx, totals, dying, ids)?;
        let cfg = cx.cfg;
        let critical = ids.headroom <= cfg.id_headroom_critical
            || leak
                .eta_s
                .is_some_and(|e| e <= cfg.eta_critical.as_secs_f64())
            || totals.dying >= cfg.kmem_dying_critical;
        let pinned = &leak.pinned;
        let evidence = KmemLeakEvidence {
            count: totals.dying,
            window_s: round_millis(leak.span_s),
            dying: totals.dying,
            kmem_pinned: pinned.len() as u64,
            removed_in_window: leak.w.rmdirs,
            freed_in_window: leak.w.frees,
            growth_per_hour: round_millis(leak.growth_per_hour),
            live_memcgs: ids.live,
            swap_held: ids.swap_held,
            ids_held_by_dying: ids.held_by_dying,
            id_headroom: ids.headroom,
            eta_to_enospc_s: leak.eta_s.map(round_millis),
            kmem_bytes: pinned.iter().filter_map(|d| d.kmem_bytes).sum(),
            sample: DyingSample::of(cx.now, pinned),
            kernel: cx.kernel.release.clone(),
        };
        Some(Verdict {
            detector: "kmem_leak",
            severity: if critical {
                Severity::Critical
            } else {
                Severity::Warning
            },
            summary: summary(&leak, totals, ids),
            evidence: Evidence::KmemLeak(evidence),
            recommendation: recommendation(cx, ids),
        })
    }

    /// Whether the pattern holds now, and its numbers.
    fn judge<'a>(
        &self,
        cx: &Ctx<'_>,
        totals: &Totals,
        dying: &'a [DyingMemcg],
        ids: &IdPicture,
    ) -> Option<Leak<'a>> {
        let cfg = cx.cfg;
        if !cx.kernel.slab_pins_dying() {
            return None;
        }
        let w = self.window(cx.now, cx.first_ns);
        if !(w.accumulating(cfg) || (self.latched && !w.recovering(cfg))) {
            return None;
        }
        if totals.dying < cfg.kmem_min_dying {
            return None;
        }
        let pinned: Vec<&DyingMemcg> = dying
            .iter()
            .filter(|d| d.kmem_bytes.is_some_and(|k| k > 0))
            .collect();
        let known = dying.iter().filter(|d| d.kmem_bytes.is_some()).count();
        if pinned.is_empty() || (pinned.len() as f64) < cfg.kmem_min_pinned_ratio * known as f64 {
            return None;
        }
        let span_s = w.span_ns as f64 / NS_PER_S;
        let growth_per_hour = if span_s > 0.0 {
            w.growth() as f64 / span_s * 3600.0
        } else {
            0.0
        };
        // Growth of the IDs dying memcgs hold: all of it before 4.8, the swap-held share after.
        let id_growth = if ids.held_by_dying {
            growth_per_hour
        } else if ids.swap_held > 0 && ids.dying_seen > 0 {
            growth_per_hour * ids.swap_held as f64 / ids.dying_seen as f64
        } else {
            0.0
        };
        let eta_s = (id_growth > 0.0).then(|| ids.headroom as f64 / id_growth * 3600.0);
        Some(Leak {
            w,
            span_s,
            growth_per_hour,
            eta_s,
            pinned,
        })
    }
}

fn summary(leak: &Leak<'_>, totals: &Totals, ids: &IdPicture) -> String {
    let eta_txt = match leak.eta_s {
        Some(e) => format!(", IDs run out in ~{}", human_secs(e)),
        None if ids.held_by_dying => ", not growing now".to_string(),
        None => String::new(),
    };
    format!(
        "{} dying memcgs pinned by kernel memory and not freed ({:+.0}/h over {}; {} removed, {} \
         freed): memcg ID headroom {}{eta_txt}",
        totals.dying,
        leak.growth_per_hour,
        human_secs(leak.span_s),
        leak.w.rmdirs,
        leak.w.frees,
        ids.headroom,
    )
}

fn recommendation(cx: &Ctx<'_>, ids: &IdPicture) -> String {
    let ids_txt = if ids.held_by_dying {
        format!(
            "Kernel {} (before 4.8) keeps each dying memcg's ID until it is freed, so they use \
             up the 65,535 memcg IDs and then every new pod fails with 'mkdir \
             /sys/fs/cgroup/memory/kubepods/...: no space left on device'. ",
            terminal(&cx.kernel.release)
        )
    } else {
        format!(
            "Kernel {} gives a memcg's ID back at removal unless swap entries hold it ({} of \
             the dying memcgs seen do), but the pinned memcgs waste memory and slow down \
             reclaim. ",
            terminal(&cx.kernel.release),
            ids.swap_held
        )
    };
    format!(
        "Kernels before 5.9 leave slab objects charged to a removed memcg, so it stays dying \
         until reboot. {ids_txt}Mitigations: boot with cgroup.memory=nokmem on the kernel \
         command line; use runc built with the nokmem build tag and a kubelet built with \
         -tags=nokmem so they do not switch kernel-memory accounting on; move to a fixed \
         kernel (3.10.0-1075.el7 or later on RHEL/CentOS 7, 5.9 or later elsewhere); reduce \
         cgroup churn (crash-looping pods, frequent jobs, exec probes); then drain and reboot \
         the node to free the leaked memcgs and their IDs."
    )
}
