//! Verdicts as text for a terminal: a headline, one line per figure, then lists, then what to
//! do. Every figure is escaped for the terminal ([`terminal`]); the summary and the
//! recommendation are escaped when the detector writes them.
use std::fmt::Write as _;

use super::{
    ChurnStormEvidence, CrashLoopEvidence, DyingSample, Evidence, IdHeadroomEvidence,
    KmemLeakEvidence, MEMCG_ID_MAX, MkdirFailedEvidence, OomKillEvidence, PageCacheEvidence,
    Verdict,
};
use crate::format::{
    escape::terminal,
    units::{human_bytes, human_secs},
};

/// A verdict as multi-line text for a terminal; every name in it is escaped.
pub fn render_verdict(v: &Verdict) -> String {
    let mut s = format!(
        "{} {}: {}\n",
        v.severity.as_str().to_ascii_uppercase(),
        v.detector,
        v.summary
    );
    let mut out = Lines(&mut s);
    match &v.evidence {
        Evidence::KmemLeak(e) => kmem_leak(&mut out, e),
        Evidence::PageCache(e) => page_cache(&mut out, e),
        Evidence::ChurnStorm(e) => churn_storm(&mut out, e),
        Evidence::CrashLoop(e) => crash_loop(&mut out, e),
        Evidence::MkdirFailed(e) => mkdir_failed(&mut out, e),
        Evidence::IdHeadroom(e) => id_headroom(&mut out, e),
        Evidence::OomKill(e) => oom_kill(&mut out, e),
    }
    let _ = writeln!(s, "  what to do: {}", v.recommendation);
    s
}

/// The figure lines of a verdict.
struct Lines<'a>(&'a mut String);

impl Lines<'_> {
    fn line(&mut self, label: &str, value: impl ToString) {
        let _ = writeln!(self.0, "  {label}: {}", terminal(&value.to_string()));
    }

    fn maybe(&mut self, label: &str, value: Option<impl ToString>) {
        if let Some(v) = value {
            self.line(label, v);
        }
    }

    fn secs(&mut self, label: &str, s: f64) {
        self.line(label, human_secs(s));
    }

    fn list(&mut self, label: &str, items: &[String]) {
        if !items.is_empty() {
            let _ = writeln!(self.0, "  {label}:");
            for i in items {
                let _ = writeln!(self.0, "    {}", terminal(i));
            }
        }
    }

    fn ids_held(&mut self, held: bool) {
        self.line(
            "dying memcgs hold IDs",
            if held {
                "yes (kernel before 4.7)"
            } else {
                "no (only when swap holds them)"
            },
        );
    }

    fn headroom(&mut self, h: u64) {
        self.line("memcg ID headroom", format!("{h} of {MEMCG_ID_MAX}"));
    }

    fn sample_figures(&mut self, s: &DyingSample) {
        self.maybe("oldest", s.oldest_age_s.map(human_secs));
        self.line("found dying at start", s.found_at_start);
    }

    fn sample_lists(&mut self, s: &DyingSample) {
        self.list("pods", &s.pod_uids);
        self.list("example paths", &s.example_paths);
    }

    fn process(&mut self, comm: &str, pid: Option<u32>) {
        let pid = pid.map_or("?".to_string(), |p| p.to_string());
        self.line("process", format!("{comm}[{pid}]"));
    }
}

/// `namespace/name` (or the name alone) of a pod, when known.
fn pod_name(namespace: &Option<String>, name: &Option<String>) -> Option<String> {
    match (namespace, name) {
        (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
        (None, Some(n)) => Some(n.clone()),
        _ => None,
    }
}

fn kmem_leak(out: &mut Lines<'_>, e: &KmemLeakEvidence) {
    out.line("count", e.count);
    out.secs("window", e.window_s);
    out.line("dying memcgs", e.dying);
    out.line("pinned by kernel memory", e.kmem_pinned);
    out.line("removed in window", e.removed_in_window);
    out.line("freed in window", e.freed_in_window);
    out.line("growth", format!("{:+.1}/h", e.growth_per_hour));
    out.line("live memcgs", e.live_memcgs);
    out.line("held by swap", e.swap_held);
    out.ids_held(e.ids_held_by_dying);
    out.headroom(e.id_headroom);
    out.maybe("IDs run out in", e.eta_to_enospc_s.map(human_secs));
    out.line("kernel memory at removal", human_bytes(e.kmem_bytes));
    out.sample_figures(&e.sample);
    out.line("kernel", &e.kernel);
    out.sample_lists(&e.sample);
}

fn page_cache(out: &mut Lines<'_>, e: &PageCacheEvidence) {
    out.line("count", e.count);
    out.line("dying memcgs", e.dying);
    out.line("user pages at removal", human_bytes(e.total_bytes));
    out.maybe("kernel memory at removal", e.kmem_bytes.map(human_bytes));
    out.sample_figures(&e.sample);
    out.sample_lists(&e.sample);
}

fn churn_storm(out: &mut Lines<'_>, e: &ChurnStormEvidence) {
    out.line("count", e.count);
    out.secs("window", e.window_s);
    out.line("rate", format!("{:.1}/s", e.rate_per_s));
    out.line("shape", &e.shape);
    out.line("removed", e.removed);
    out.maybe("mean lifetime", e.mean_lifetime_s.map(human_secs));
    if let Some(comm) = &e.comm {
        out.process(comm, e.pid);
    }
    out.list("example paths", &e.example_paths);
}

fn crash_loop(out: &mut Lines<'_>, e: &CrashLoopEvidence) {
    out.line("count", e.count);
    out.secs("window", e.window_s);
    out.line("restarts", e.restarts);
    out.line("pod", &e.pod_uid);
    out.maybe("pod name", pod_name(&e.pod_namespace, &e.pod_name));
    out.maybe("qos", e.qos.as_ref());
    if e.oom_kills > 0 {
        out.line("OOM kills", e.oom_kills);
    }
    out.list("container ids", &e.container_ids);
}

fn oom_kill(out: &mut Lines<'_>, e: &OomKillEvidence) {
    out.line("count", e.count);
    out.secs("window", e.window_s);
    out.line("constraint", e.constraint.name());
    out.maybe("pod", e.pod_uid.as_ref());
    out.maybe("pod name", pod_name(&e.pod_namespace, &e.pod_name));
    out.maybe("qos", e.qos.map(|q| q.as_str()));
    out.maybe("cgroup", e.cgroup.as_ref());
    out.maybe("restarts after", e.restarts_after);
    if e.crash_loop {
        out.line("crash loop", "yes (see crash_loop)");
    }
    out.line("count is", e.count_exactness);
    out.list("container ids", &e.container_ids);
    let victims: Vec<String> = e
        .victims
        .iter()
        .map(|v| {
            let mut s = format!("{}[{}] {} ago", v.comm, v.pid, human_secs(v.age_s));
            if let Some(a) = v.oom_score_adj {
                s.push_str(&format!(", oom_score_adj {a}"));
            }
            if let Some(r) = v.rss_bytes {
                s.push_str(&format!(", rss {}", human_bytes(r)));
            }
            if let (Some(u), Some(l)) = (v.usage_bytes, v.limit_bytes) {
                // The limit's memcg, unless it is the victim's own.
                let at = match v.limit_path.as_deref() {
                    Some(p) if p != v.path => format!(" at {p}"),
                    _ => String::new(),
                };
                s.push_str(&format!(
                    ", {}limit {} of {}{at}",
                    if v.memsw { "memory+swap " } else { "" },
                    human_bytes(u),
                    human_bytes(l)
                ));
            }
            if v.derived {
                s.push_str(" (derived)");
            }
            s.push_str(&format!(": {}", v.path));
            s
        })
        .collect();
    out.list("victims", &victims);
}

fn mkdir_failed(out: &mut Lines<'_>, e: &MkdirFailedEvidence) {
    out.line("count", e.count);
    out.secs("window", e.window_s);
    out.maybe("dying memcgs", e.dying);
    out.maybe("live memcgs", e.live_memcgs);
    if let Some(held) = e.ids_held_by_dying {
        out.ids_held(held);
    }
    if let Some(h) = e.id_headroom {
        out.headroom(h);
    }
    out.maybe("pod", e.pod_uid.as_ref());
    out.line("errno", format!("{} ({})", e.errno_name, e.errno));
    out.line("in window", e.in_window);
    out.line("path", &e.path);
    out.process(&e.comm, Some(e.pid));
    out.line(
        "last seen",
        format!("{} ago", human_secs(e.last_seen_age_s)),
    );
    out.maybe("kernel", e.kernel.as_ref());
    out.list("pods", &e.pod_uids);
    out.list("example paths", &e.example_paths);
}

fn id_headroom(out: &mut Lines<'_>, e: &IdHeadroomEvidence) {
    out.headroom(e.id_headroom);
    out.line("low below", e.warn_below);
    out.line("live memcgs", e.live_memcgs);
    out.line("dying memcgs", e.dying);
    out.line("held by swap", e.swap_held);
    out.ids_held(e.ids_held_by_dying);
    out.line(
        "counted from",
        match e.counters_age_s {
            Some(age) => format!(
                "the kernel's counters ({} ago) and the events since",
                human_secs(age)
            ),
            None => "the start-up walk and the events".to_string(),
        },
    );
    if let (Some(errno), Some(msg)) = (&e.exhaustion_errno, e.exhaustion_message) {
        out.line(
            "when none is left",
            format!("mkdir fails with {errno} ('{msg}')"),
        );
    }
    out.line("kernel", &e.kernel);
}
