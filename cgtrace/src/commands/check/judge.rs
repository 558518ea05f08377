//! Policy: the facts [`super::gather`] read → a [`CheckReport`] with its verdict. Pure: no I/O.
use super::gather::{Facts, KmemProbe, WalkResult};
use super::render::{count_or_unknown, fit_message, short_release};
use super::{CheckOptions, CheckReport, EmptyPodDir, KmemReport, MAX_LISTED_POD_DIRS, Status};
use crate::kernel::{KernelRelease, MEMCG_ID_MAX, hierarchy::MemoryHierarchy, memcg_ids};

/// The report the facts call for.
pub(super) fn judge(mut facts: Facts, opts: &CheckOptions) -> CheckReport {
    let mut notes = std::mem::take(&mut facts.notes);
    let release = facts.release;
    let num_cgroups_memory = facts.memory_row.map(|r| r.num_cgroups);
    let memory_disabled = facts.memory_row.is_some_and(|r| !r.enabled);
    let (visible_memcgs, dying_memcgs) = memcg_counts(&facts, &mut notes);
    let ids_held_by_dying = release.is_some_and(|r| !r.ids_returned_at_offline());
    let id_headroom = id_headroom(
        facts.memory_hierarchy,
        ids_held_by_dying,
        num_cgroups_memory,
        visible_memcgs,
        dying_memcgs,
    );
    if id_headroom.is_some() && release.is_some() {
        notes.push(if ids_held_by_dying {
            "This kernel (before 4.7) keeps the memcg ID of a dying memcg until it is freed: headroom counts live and dying memcgs.".to_string()
        } else {
            "This kernel (4.7+) frees a memcg's ID at removal unless swap entries hold it: headroom counts live memcgs.".to_string()
        });
    }
    let kmem = kmem_report(&facts, memory_disabled);
    let empty_pod_dirs = empty_pod_dirs(&facts, opts, &mut notes);
    let mut report = CheckReport {
        status: Status::Ok,
        message: String::new(),
        problems: Vec::new(),
        kernel_release: facts.kernel_release,
        layout: facts.mounts.layout(),
        memory_hierarchy: facts.memory_hierarchy,
        memory_mount: facts.memory_mount.map(|m| m.point.display().to_string()),
        v2_mount: facts.mounts.v2.map(|m| m.point.display().to_string()),
        memory_controller_enabled: facts.memory_row.map(|r| r.enabled),
        num_cgroups_memory,
        visible_memcgs,
        dying_memcgs,
        nr_dying_descendants: facts.v2_stat.nr_dying_descendants,
        nr_dying_subsys_memory: facts.v2_stat.nr_dying_subsys_memory,
        id_headroom,
        ids_held_by_dying,
        id_exhaustion_errno: release
            .map(|r| crate::kernel::mkdir_errno::errno_name(r.memcg_id_exhaustion_errno())),
        kmem,
        leaky_3_10: release.is_some_and(|r| r.has_3_10_kmem_leak()),
        empty_pod_dirs,
        notes,
    };
    verdict(&mut report, opts, release);
    report
}

/// Visible and dying memcgs.
fn memcg_counts(facts: &Facts, notes: &mut Vec<String>) -> (Option<u64>, Option<u64>) {
    let num_cgroups_memory = facts.memory_row.map(|r| r.num_cgroups);
    let complete_walk = facts.walk.as_ref().filter(|w| !w.incomplete);
    let walked_memcgs = complete_walk.map(|w| w.memcgs);
    match facts.memory_hierarchy {
        MemoryHierarchy::V1 => {
            let dying = match (num_cgroups_memory, walked_memcgs) {
                (Some(num), Some(visible)) => {
                    if num < visible {
                        notes.push(format!(
                            "/proc/cgroups counts {num} memcgs but {visible} are visible: cgroups changed during the check."
                        ));
                    }
                    Some(num.saturating_sub(visible))
                }
                _ => None,
            };
            (walked_memcgs, dying)
        }
        MemoryHierarchy::V2 => {
            let stat = &facts.v2_stat;
            let visible = stat.nr_subsys_memory.or(walked_memcgs);
            let dying = if let Some(d) = stat.nr_dying_subsys_memory {
                Some(d)
            } else if let Some(d) = stat.nr_dying_descendants {
                notes.push(
                    "Dying memcgs are taken from nr_dying_descendants (dying cgroups): an upper bound before kernel 6.12."
                        .to_string(),
                );
                Some(d)
            } else {
                // Before 4.14 there is no cgroup.stat; /proc/cgroups counts every
                // v2 cgroup, live and dying.
                match (num_cgroups_memory, complete_walk) {
                    (Some(num), Some(w)) => Some(num.saturating_sub(w.dirs)),
                    _ => None,
                }
            };
            (visible, dying)
        }
        MemoryHierarchy::Absent => (None, None),
    }
}

/// Memcg IDs still free: all memcgs hold one where dying ones keep theirs, else live ones.
fn id_headroom(
    hierarchy: MemoryHierarchy,
    ids_held_by_dying: bool,
    num_cgroups_memory: Option<u64>,
    visible: Option<u64>,
    dying: Option<u64>,
) -> Option<u64> {
    // check cannot tell which dying memcgs swap entries hold: none are counted.
    let id_users = match (hierarchy, ids_held_by_dying, visible, dying) {
        // /proc/cgroups counts every memcg the v1 hierarchy holds, live and dying.
        (MemoryHierarchy::V1, true, Some(v), _) => num_cgroups_memory.map(|n| n.max(v)),
        (_, true, Some(v), Some(d)) => Some(memcg_ids::ids_in_use(true, v, d, 0)),
        (_, true, _, _) => None,
        (_, false, v, _) => v.map(|v| memcg_ids::ids_in_use(false, v, 0, 0)),
    };
    id_users.map(memcg_ids::headroom)
}

/// Kernel-memory accounting: active or not, and on what evidence.
fn kmem_report(facts: &Facts, memory_disabled: bool) -> KmemReport {
    let (active, evidence) = if memory_disabled {
        (Some(false), "the memory controller is disabled".to_string())
    } else if facts.nokmem_cmdline {
        (
            Some(false),
            "cgroup.memory=nokmem is on the kernel command line".to_string(),
        )
    } else {
        match facts.memory_hierarchy {
            MemoryHierarchy::V2 => (
                Some(true),
                "cgroup v2 always accounts kernel memory (no cgroup.memory=nokmem)".to_string(),
            ),
            MemoryHierarchy::V1 => {
                kmem_from_probe(facts.walk.as_ref().map(|w| &w.kmem), facts.release)
            }
            MemoryHierarchy::Absent => (None, "no memory hierarchy to probe".to_string()),
        }
    };
    KmemReport {
        active,
        evidence,
        nokmem_cmdline: facts.nokmem_cmdline,
        pins_dying: facts.release.is_some_and(|r| !r.slab_reparented()),
    }
}

/// Empty pod directories whose pod is gone, with notes on what could not be judged.
fn empty_pod_dirs(facts: &Facts, opts: &CheckOptions, notes: &mut Vec<String>) -> Vec<EmptyPodDir> {
    let Some(w) = &facts.walk else {
        return Vec::new();
    };
    let dirs = match (&facts.pod_log_uids, w.pod_dirs.is_empty()) {
        (Some(Ok(uids)), false) => {
            let mut dirs: Vec<EmptyPodDir> = w
                .pod_dirs
                .iter()
                .filter(|d| !uids.contains(&d.pod_uid))
                .cloned()
                .collect();
            dirs.sort_by(|a, b| a.path.cmp(&b.path));
            dirs
        }
        (Some(Err(note)), false) => {
            notes.push(note.clone());
            notes.push(format!(
                "{} empty pod directories found but /var/log/pods is unreadable: cannot tell whether their pods are gone.",
                w.pod_dirs.len()
            ));
            Vec::new()
        }
        _ => Vec::new(),
    };
    young_pod_dirs_note(w, opts, notes);
    dirs
}

fn young_pod_dirs_note(w: &WalkResult, opts: &CheckOptions, notes: &mut Vec<String>) {
    if w.young_pod_dirs > 0 {
        notes.push(format!(
            "{} empty pod directories changed less than {}s ago were skipped.",
            w.young_pod_dirs,
            opts.pod_dir_min_age.as_secs()
        ));
    }
}

/// (priority, tag) of a problem: the most urgent tag comes first in the message.
type Tag = (u8, String);

/// Fills in status, problems and message.
fn verdict(report: &mut CheckReport, opts: &CheckOptions, release: Option<KernelRelease>) {
    if unknown_verdict(report) {
        return;
    }
    let mut tags: Vec<Tag> = Vec::new();
    let leak_fires =
        report.leaky_3_10 && !report.kmem.nokmem_cmdline && report.kmem.active != Some(false);
    if leak_fires {
        tags.push(leak_problem(report, release.and_then(|r| r.el_build)));
    }
    if !leak_fires && let Some(tag) = dying_problem(report, opts) {
        tags.push(tag);
    }
    if let Some(tag) = headroom_problem(report, opts) {
        tags.push(tag);
    }
    if let Some(tag) = pod_dir_problem(report) {
        tags.push(tag);
    }
    set_message(report, tags);
}

/// Status unknown when nothing about memory cgroups could be read (or memory is disabled).
fn unknown_verdict(report: &mut CheckReport) -> bool {
    let have_memcg_info = report.num_cgroups_memory.is_some()
        || report.visible_memcgs.is_some()
        || report.dying_memcgs.is_some();
    if report.memory_controller_enabled != Some(false) && have_memcg_info {
        return false;
    }
    let reason = if report.memory_controller_enabled == Some(false) {
        "memory cgroup controller disabled"
    } else {
        "no memory cgroup controller found"
    };
    report.status = Status::Unknown;
    report.message = fit_message(&[
        format!(
            "cgtrace: unknown, {reason} (kernel {})",
            short_release(report.kernel_release.as_deref().unwrap_or("?"))
        ),
        format!("cgtrace: unknown, {reason}"),
    ]);
    true
}

fn release_or_unknown(report: &CheckReport) -> String {
    report.kernel_release.clone().unwrap_or_else(|| "?".into())
}

/// The 3.10 kmem leak with kmem accounting (possibly) active.
fn leak_problem(report: &mut CheckReport, el_build: Option<u32>) -> Tag {
    let release = release_or_unknown(report);
    let dying = count_or_unknown(report.dying_memcgs);
    let headroom = count_or_unknown(report.id_headroom);
    let why = match el_build {
        Some(b) => format!("a RHEL/CentOS 7 build ({b}) older than 3.10.0-1075.el7"),
        None => "a 3.10 kernel without the RHEL fix (3.10.0-1075.el7)".to_string(),
    };
    let active = match report.kmem.active {
        Some(true) => format!(
            "kernel memory accounting is active ({})",
            report.kmem.evidence
        ),
        _ => format!(
            "kernel memory accounting may be active ({}; assuming it is)",
            report.kmem.evidence
        ),
    };
    report.problems.push(format!(
        "Kernel {release} is {why} and {active}: removed memory cgroups stay pinned as dying memcgs \
         and keep their memcg IDs, so once the 65535 IDs are used up every new pod fails with \
         'mkdir /sys/fs/cgroup/memory/kubepods/...: no space left on device' \
         ({dying} dying memcgs now, memcg ID headroom {headroom}). Mitigations: boot with \
         cgroup.memory=nokmem, use runc built with the nokmem tag and a kubelet built with \
         -tags=nokmem, or upgrade to kernel 3.10.0-1075.el7 or later; then drain and reboot \
         the node to release the leaked IDs."
    ));
    (0, "kmem leak".into())
}

/// Many dying memcgs that hold IDs or are pinned by kmem.
fn dying_problem(report: &mut CheckReport, opts: &CheckOptions) -> Option<Tag> {
    let kmem_pins = report.kmem.pins_dying && report.kmem.active == Some(true);
    let d = report.dying_memcgs?;
    if d < opts.dying_warn || !(report.ids_held_by_dying || kmem_pins) {
        return None;
    }
    let release = release_or_unknown(report);
    let headroom = count_or_unknown(report.id_headroom);
    let mut why = Vec::new();
    if report.ids_held_by_dying {
        why.push(format!(
            "kernel {release} (before 4.7) keeps each dying memcg's ID until it is freed, \
             so they use up the 65535 memcg IDs (headroom {headroom})"
        ));
    }
    if kmem_pins {
        why.push(format!(
            "kernel memory accounting is active ({}) and kernels before 5.9 do not reparent \
             slab objects at removal, so kernel-memory charges pin them, wasting memory and \
             slowing reclaim",
            report.kmem.evidence
        ));
    }
    report.problems.push(format!(
        "{d} dying memory cgroups (threshold {}): {}. Mitigations: boot with \
         cgroup.memory=nokmem or upgrade to kernel 5.9 or later, reduce cgroup churn \
         (crash-looping pods, frequent jobs), or drain and reboot the node.",
        opts.dying_warn,
        why.join("; and ")
    ));
    let tag = if report.ids_held_by_dying {
        "dying hold IDs"
    } else {
        "kmem pins dying"
    };
    Some((2, tag.into()))
}

/// Few memcg IDs left.
fn headroom_problem(report: &mut CheckReport, opts: &CheckOptions) -> Option<Tag> {
    let h = report.id_headroom.filter(|&h| h < opts.headroom_warn)?;
    let basis = if report.ids_held_by_dying {
        "live and dying memcgs both hold IDs on this kernel"
    } else {
        "live memcgs hold IDs"
    };
    let (errno, message) = match report
        .kernel_release
        .as_deref()
        .and_then(KernelRelease::parse)
    {
        Some(k) => {
            let e = k.memcg_id_exhaustion_errno();
            (
                crate::kernel::mkdir_errno::errno_name(e),
                crate::kernel::mkdir_errno::errno_message(e),
            )
        }
        None => (
            "ENOSPC, ENOMEM or EBUSY (by kernel)".to_string(),
            "no space left on device' (or 'cannot allocate memory', 'device or resource busy'",
        ),
    };
    report.problems.push(format!(
        "Only {h} of {MEMCG_ID_MAX} memcg IDs are free (threshold {}; {basis}; {} visible, \
         {} dying): when none is left, creating a memory cgroup fails with {errno} on this \
         kernel and new pods fail with '{message}'. Mitigations: reduce the number of \
         cgroups or pods on the node, on 3.10 kernels boot with cgroup.memory=nokmem or \
         upgrade to 3.10.0-1075.el7 or later, and drain and reboot the node to free IDs \
         held by dying memcgs.",
        opts.headroom_warn,
        count_or_unknown(report.visible_memcgs),
        count_or_unknown(report.dying_memcgs),
    ));
    Some((1, "low ID headroom".into()))
}

/// Empty pod directories of pods that are gone.
fn pod_dir_problem(report: &mut CheckReport) -> Option<Tag> {
    if report.empty_pod_dirs.is_empty() {
        return None;
    }
    let n = report.empty_pod_dirs.len();
    let mut listed: Vec<&str> = report
        .empty_pod_dirs
        .iter()
        .take(MAX_LISTED_POD_DIRS)
        .map(|d| d.path.as_str())
        .collect();
    if n > MAX_LISTED_POD_DIRS {
        listed.push("...");
    }
    let problem = format!(
        "{n} empty kubepods pod cgroup directories belong to pods that are gone (no \
         /var/log/pods entry for their UID): {}. The kubelet failed to remove them; each \
         leaks a cgroup and a memcg ID. Mitigation: after confirming no pod with that UID \
         runs on the node, remove them with rmdir (children first), and check the kubelet \
         log for 'Failed to delete cgroup paths'.",
        listed.join(", ")
    );
    report.problems.push(problem);
    Some((3, format!("{n} leaked pod cgroups")))
}

/// Status and the NPD message from the problems found.
fn set_message(report: &mut CheckReport, mut tags: Vec<Tag>) {
    let dying = count_or_unknown(report.dying_memcgs);
    let headroom = count_or_unknown(report.id_headroom);
    let counts = format!("{dying} dying memcgs, ID headroom {headroom}");
    if report.problems.is_empty() {
        report.status = Status::Ok;
        report.message = fit_message(&[format!("cgtrace: ok, {counts}")]);
        return;
    }
    report.status = Status::Problem;
    let release = release_or_unknown(report);
    let kernel = short_release(&release);
    tags.sort_by_key(|(priority, _)| *priority);
    let tags: Vec<String> = tags.into_iter().map(|(_, tag)| tag).collect();
    let all = tags.join(", ");
    let first = tags.first().cloned().unwrap_or_default();
    report.message = fit_message(&[
        format!("cgtrace: {counts} ({all}, kernel {kernel})"),
        format!("cgtrace: {counts} ({all})"),
        format!("cgtrace: {counts} ({first}, kernel {kernel})"),
        format!("cgtrace: {counts} ({first})"),
        format!("cgtrace: {first}, {counts}"),
    ]);
}

/// Decides kmem activity on v1 from the walk's probe and the kernel release.
fn kmem_from_probe(
    probe: Option<&KmemProbe>,
    release: Option<KernelRelease>,
) -> (Option<bool>, String) {
    if let Some(evidence) = probe.and_then(|p| p.active_evidence.clone()) {
        return (Some(true), evidence);
    }
    if release.is_some_and(|r| r.kmem_accounted_by_default()) {
        return (
            Some(true),
            "kernels 4.6+ account kernel memory in every v1 memcg unless cgroup.memory=nokmem"
                .to_string(),
        );
    }
    match probe {
        Some(p) if p.nonroot_inactive > 0 => (
            Some(false),
            format!(
                "no kernel-memory charges or readable memory.kmem.slabinfo in {} probed memcgs",
                p.probed
            ),
        ),
        Some(p) if p.probed > 0 && p.kmem_files == 0 => (
            Some(false),
            "no memory.kmem.* files: kernel built without kmem accounting".to_string(),
        ),
        _ => (
            None,
            "no memcg to probe for kernel-memory charges".to_string(),
        ),
    }
}
