//! Rendering a [`CheckReport`]: the text for humans (its first line is the NPD message) and the
//! JSON object, and the NPD message itself fitted to 80 characters.
use std::io::{self, Write};

use super::{CheckReport, MESSAGE_MAX_CHARS};
use crate::{format::escape::terminal, kernel::MEMCG_ID_MAX};

/// Writes the report to `out` as text or as one line of JSON. I/O errors keep their kind (a
/// closed pipe is `BrokenPipe`).
pub fn write_report(out: &mut dyn Write, report: &CheckReport, json: bool) -> io::Result<()> {
    crate::commands::write_report(out, report, json, render_text)
}

/// `n` as text, or `?` when unknown.
pub(super) fn count_or_unknown(n: Option<u64>) -> String {
    n.map_or_else(|| "?".to_string(), |n| n.to_string())
}

/// The release cut before the first `.` after the first `-`:
/// `3.10.0-957.21.3.el7.x86_64` → `3.10.0-957`.
pub(super) fn short_release(release: &str) -> &str {
    match release.find('-') {
        Some(dash) => match release[dash..].find('.') {
            Some(dot) => &release[..dash + dot],
            None => release,
        },
        None => release,
    }
}

/// The first candidate that fits in 80 characters, else the last one cut to fit. Escaped as
/// all terminal text is ([`terminal`]), so the message stays one line.
pub(super) fn fit_message(candidates: &[String]) -> String {
    let clean = |s: &String| terminal(s);
    for c in candidates {
        let c = clean(c);
        if c.chars().count() <= MESSAGE_MAX_CHARS {
            return c;
        }
    }
    let last = candidates.last().map(clean).unwrap_or_default();
    truncate_chars(&last, MESSAGE_MAX_CHARS)
}

/// Cuts `s` to at most `max` characters (not bytes), ending in `...` when cut.
pub(super) fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// Renders a report for humans: the message, then problems, evidence and notes. What comes from
/// the host (paths, names, the kernel release) is escaped for the terminal ([`terminal`]); the
/// message already is ([`fit_message`]).
pub fn render_text(report: &CheckReport) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    let opt = |n: Option<u64>| count_or_unknown(n);
    let _ = writeln!(out, "{}", report.message);
    for p in &report.problems {
        let _ = writeln!(out, "problem: {}", terminal(p));
    }
    let _ = writeln!(out, "status: {}", report.status);
    let _ = writeln!(
        out,
        "kernel: {}",
        terminal(report.kernel_release.as_deref().unwrap_or("unknown"))
    );
    let _ = writeln!(
        out,
        "cgroup layout: {}; memory hierarchy: {}{}",
        report.layout,
        report.memory_hierarchy,
        report
            .memory_mount
            .as_deref()
            .map(|m| format!(" at {}", terminal(m)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "memcgs: {} in /proc/cgroups, {} visible, {} dying",
        opt(report.num_cgroups_memory),
        opt(report.visible_memcgs),
        opt(report.dying_memcgs)
    );
    if report.v2_mount.is_some() {
        let _ = writeln!(
            out,
            "v2 root cgroup.stat: nr_dying_descendants {}, nr_dying_subsys_memory {}",
            opt(report.nr_dying_descendants),
            opt(report.nr_dying_subsys_memory)
        );
    }
    let _ = writeln!(
        out,
        "memcg ID headroom: {} of {MEMCG_ID_MAX} (IDs held by dying memcgs: {})",
        opt(report.id_headroom),
        yes_no(report.ids_held_by_dying)
    );
    let _ = writeln!(
        out,
        "kmem accounting: {} ({}); nokmem on cmdline: {}; slab pins dying memcgs: {}",
        match report.kmem.active {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "unknown",
        },
        terminal(&report.kmem.evidence),
        yes_no(report.kmem.nokmem_cmdline),
        yes_no(report.kmem.pins_dying)
    );
    let _ = writeln!(out, "leaky 3.10 kernel: {}", yes_no(report.leaky_3_10));
    for d in &report.empty_pod_dirs {
        let _ = writeln!(
            out,
            "empty pod dir: {} (pod {})",
            terminal(&d.path),
            d.pod_uid
        );
    }
    for n in &report.notes {
        let _ = writeln!(out, "note: {}", terminal(n));
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
