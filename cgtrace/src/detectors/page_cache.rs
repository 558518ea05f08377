//! `page_cache_pinning`: dying memcgs older than a threshold still charged with user pages at
//! removal: page cache (reclaimable) or shmem/tmpfs (not freed by dropping caches).
use serde::Serialize;

use super::{Ctx, DyingSample, Evidence, Severity, Verdict, ns};
use crate::{
    format::units::{human_bytes, human_secs},
    model::tracker::{DyingMemcg, Totals},
};

/// What a `page_cache_pinning` verdict rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PageCacheEvidence {
    /// Dying memcgs held by user pages.
    pub count: u64,
    /// All dying memcgs the kernel holds.
    pub dying: u64,
    /// Bytes of user pages (memory minus kernel memory) charged at removal.
    pub total_bytes: u64,
    /// Bytes of kernel memory charged at removal, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmem_bytes: Option<u64>,
    /// The memcgs counted.
    #[serde(flatten)]
    pub sample: DyingSample,
}

/// The verdict, if enough memcgs are held (those `kmem_leak` already counts are left out when it
/// fired).
pub(super) fn verdict(
    cx: &Ctx<'_>,
    totals: &Totals,
    dying: &[DyingMemcg],
    kmem_fired: bool,
) -> Option<Verdict> {
    let (cfg, now) = (cx.cfg, cx.now);
    let min_age = ns(cfg.page_cache_min_age);
    // `dying` is oldest first, so the first match is the oldest.
    let held: Vec<(&DyingMemcg, u64)> = dying
        .iter()
        .filter(|d| now.saturating_sub(d.rmdir_ns) >= min_age)
        .filter(|d| !(kmem_fired && d.kmem_bytes.is_some_and(|k| k > 0)))
        .filter_map(|d| {
            let user = d.usage_bytes?.saturating_sub(d.kmem_bytes.unwrap_or(0));
            (user > 0).then_some((d, user))
        })
        .collect();
    let n = held.len() as u64;
    if n == 0 || n < cfg.page_cache_min_count {
        return None;
    }
    let total: u64 = held.iter().map(|(_, u)| u).sum();
    let kmem: u64 = held.iter().filter_map(|(d, _)| d.kmem_bytes).sum();
    let memcgs: Vec<&DyingMemcg> = held.iter().map(|(d, _)| *d).collect();
    let sample = DyingSample::of(now, &memcgs);
    let at_least = held.first().is_some_and(|(d, _)| d.before_start);
    let summary = format!(
        "{n} dying memcgs held by {} of page cache or shmem charged at removal (oldest {}{} old)",
        human_bytes(total),
        if at_least { "at least " } else { "" },
        human_secs(sample.oldest_age_s.unwrap_or(0.0)),
    );
    let evidence = PageCacheEvidence {
        count: n,
        dying: totals.dying,
        total_bytes: total,
        kmem_bytes: held
            .iter()
            .any(|(d, _)| d.kmem_bytes.is_some())
            .then_some(kmem),
        sample,
    };
    Some(Verdict {
        detector: "page_cache_pinning",
        severity: if n >= cfg.page_cache_warn_count {
            Severity::Warning
        } else {
            Severity::Info
        },
        summary,
        evidence: Evidence::PageCache(evidence),
        recommendation: recommendation(cx.kernel.slab_pins_dying()),
    })
}

fn recommendation(slab_pins: bool) -> String {
    let slab_note = if slab_pins {
        " On this kernel (before 5.9) kernel memory charged to them pins them too, so some may \
         stay after the pages are gone."
    } else {
        ""
    };
    format!(
        "These memcgs were removed while pages were still charged to them: page cache \
         (reclaimable: it goes under memory pressure or when dropped) or shmem/tmpfs (emptyDir \
         with medium Memory, /dev/shm), which dropping caches does not free; the figures cannot \
         tell the two apart. To confirm, run `sync; echo 3 > /proc/sys/vm/drop_caches` and watch \
         them get freed (release events, the dying count falling); those that stay are likely \
         shmem or tmpfs files still referenced. On cgroup v1, writing 0 to memory.force_empty \
         before rmdir (a runtime hook) reclaims the pages before removal. Harmless in small \
         numbers; many cost memory and slow down reclaim.{slab_note}"
    )
}
