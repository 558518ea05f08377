//! `id_headroom`: few memcg IDs left (the thresholds `check` uses): a warning below
//! [`HEADROOM_WARN`], critical when none or almost none is left and every new memcg (every new
//! pod) fails. The count is the running kernel's way of spending IDs ([`IdPicture`]), kept
//! current from the events and corrected by the kernel's own counters where they were read.
use serde::Serialize;

use super::{Ctx, Evidence, IdPicture, Severity, Verdict};
use crate::kernel::{
    MEMCG_ID_MAX,
    memcg_ids::HEADROOM_WARN,
    mkdir_errno::{EXHAUSTED_HEADROOM, errno_message, errno_name},
};

/// What an `id_headroom` verdict rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IdHeadroomEvidence {
    /// Memcg IDs left of 65,535.
    pub id_headroom: u64,
    /// The threshold below which headroom is low.
    pub warn_below: u64,
    /// Memcgs online now.
    pub live_memcgs: u64,
    /// Dying memcgs.
    pub dying: u64,
    /// Dying memcgs whose IDs swap entries hold.
    pub swap_held: u64,
    /// This kernel (before 4.7) keeps a dying memcg's ID until it is freed.
    pub ids_held_by_dying: bool,
    /// Where the live count comes from: `kernel_counters` (read during the run, the events since
    /// added) or `events` (the start-up walk and the events alone).
    pub counted_from: &'static str,
    /// Seconds since the kernel's counters were last read, when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters_age_s: Option<f64>,
    /// The errno a memcg mkdir fails with on this kernel when no ID is left, and its message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exhaustion_errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exhaustion_message: Option<&'static str>,
    /// The kernel release.
    pub kernel: String,
}

/// The verdict on `ids`, if the headroom is low.
pub(super) fn verdict(cx: &Ctx<'_>, ids: &IdPicture) -> Option<Verdict> {
    if !ids.known || ids.headroom >= HEADROOM_WARN {
        return None;
    }
    let errno = cx.kernel.id_exhaustion_errno();
    let message = errno.map(errno_message);
    let exhausted = ids.headroom <= EXHAUSTED_HEADROOM;
    let how = message.map_or_else(
        || "creating a memory cgroup fails".to_string(),
        |m| format!("creating a memory cgroup fails with '{m}'"),
    );
    let summary = if exhausted {
        format!(
            "memcg IDs exhausted: {} of {MEMCG_ID_MAX} left ({} live, {} dying, {} held by swap); \
             {how} and new pods cannot start",
            ids.headroom, ids.live, ids.dying, ids.swap_held
        )
    } else {
        format!(
            "only {} of {MEMCG_ID_MAX} memcg IDs left (below {HEADROOM_WARN}; {} live, {} \
             dying, {} held by swap): when none is left, {how}",
            ids.headroom, ids.live, ids.dying, ids.swap_held
        )
    };
    let held = if ids.held_by_dying {
        format!(
            "On this kernel dying memcgs keep their IDs until freed ({} dying): boot with \
             cgroup.memory=nokmem or use runc and kubelet built with nokmem, or a fixed kernel; a \
             drain and reboot frees them now.",
            ids.dying
        )
    } else {
        "This kernel gives a removed memcg's ID back at offline unless swap entries hold it, so \
         live memcgs hold the IDs: find what creates them (the paths `cgtrace live` shows), \
         remove leaked cgroups, lower the pod density; swapoff frees the swap-held ones."
            .to_string()
    };
    Some(Verdict {
        detector: "id_headroom",
        severity: if exhausted {
            Severity::Critical
        } else {
            Severity::Warning
        },
        summary,
        evidence: Evidence::IdHeadroom(IdHeadroomEvidence {
            id_headroom: ids.headroom,
            warn_below: HEADROOM_WARN,
            live_memcgs: ids.live,
            dying: ids.dying,
            swap_held: ids.swap_held,
            ids_held_by_dying: ids.held_by_dying,
            counted_from: if ids.counters_at.is_some() {
                "kernel_counters"
            } else {
                "events"
            },
            counters_age_s: ids.counters_at.map(|t| super::age_s(cx.now, t)),
            exhaustion_errno: errno.map(errno_name),
            exhaustion_message: message,
            kernel: cx.kernel.release.clone(),
        }),
        recommendation: held,
    })
}
