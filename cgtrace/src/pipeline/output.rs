//! Sinks that print events: one readable line per event, or JSON lines.
use std::{
    collections::HashMap,
    io::{self, Write},
};

use cgtrace_common::EventKind;
use serde::Serialize;

use crate::{
    detectors::{OomSummary, Verdict},
    format::clock::ClockRef,
    format::escape::{write_json_str, write_terminal},
    kernel::{hierarchy::Hierarchies, memcg_ids::KernelMemcgs},
    model::event::Event,
    model::k8s,
    model::oom::OomKill,
    model::tracker::{Observed, PodStats, PodSummary, Totals, Tracker},
};

/// Totals printed when a run ends.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Events seen, by kind name, plus `total`.
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
        events.insert("total", counts.seen.iter().sum());
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
}

/// Per-kind counters of seen and lost events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub seen: [u64; EventKind::SLOTS],
    pub lost: [u64; EventKind::SLOTS],
}

/// The rest of a failed mkdir's line: the caller (none when the kernel left only the half-made
/// cgroup's release) and the errno, inferred or unknown.
fn write_failure<W: Write>(w: &mut W, ev: &Event<'_>) -> io::Result<()> {
    if ev.is_half_made_release() {
        w.write_all(b"(caller unknown: seen at the half-made cgroup's release)")?;
    } else {
        write_terminal(w, ev.comm)?;
        write!(w, "[{}]", ev.pid)?;
    }
    match ev.errno {
        Some(e) => {
            let name = crate::model::event::errno_name(e);
            let msg = crate::kernel::mkdir_errno::errno_message(e);
            if ev.errno_inferred {
                writeln!(w, " {name} ({msg}; inferred: no memcg ID left)")
            } else {
                writeln!(w, " {name} ({msg})")
            }
        }
        None => writeln!(w, " errno unknown (cgroup creation failed)"),
    }
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
    /// A pod's name was looked up (recorded so replays need no lookups).
    /// A note of what the run could not do (sessions record it).
    fn note(&mut self, _text: &str) -> io::Result<()> {
        Ok(())
    }
    /// A reading of the kernel's memcg counters (sessions record it).
    fn kernel_memcgs(&mut self, _k: &KernelMemcgs) -> io::Result<()> {
        Ok(())
    }
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

/// `13:31:10.123456 mkdir    memory       /kubepods/burstable/pod…  runc[4242]`
pub struct TextSink<W: Write> {
    out: W,
    ctx: RenderContext,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, ctx: RenderContext) -> Self {
        TextSink { out, ctx }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn verdicts(&mut self, v: &[Verdict]) -> io::Result<()> {
        for x in v {
            writeln!(self.out, "{}", crate::detectors::render_verdict(x))?;
        }
        Ok(())
    }

    fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        let (h, m, s, us) = self.ctx.clock.utc_hms_us(ev.ts_ns);
        let label = &self.ctx.labels(ev.hierarchy_id).0;
        let w = &mut self.out;
        write!(
            w,
            "{h:02}:{m:02}:{s:02}.{us:06} {:<12} {label:<14} ",
            ev.kind.name()
        )?;
        write_terminal(w, ev.path)?;
        if ev.path_truncated {
            w.write_all("…[truncated]".as_bytes())?;
        }
        w.write_all(b"  ")?;
        if ev.kind == EventKind::MkdirFailed {
            return write_failure(w, ev);
        }
        write_terminal(w, ev.comm)?;
        write!(w, "[{}] id={}", ev.pid, ev.cgroup_id)?;
        if let Some(o) = &ev.oom {
            write_oom_text(w, o)?;
        }
        writeln!(w)
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let w = &mut self.out;
        writeln!(
            w,
            "-- {} events in {:.1}s (tier {}, {}{}); lost {}",
            s.events.get("total").copied().unwrap_or(0),
            s.duration_ns as f64 / 1e9,
            s.tier,
            s.attach,
            // Named where it is not the ring buffer (so older runs print as they did).
            if s.buffer == "ring" {
                String::new()
            } else {
                format!(", {} buffer", s.buffer)
            },
            s.lost
        )?;
        for (k, n) in s.events.iter().filter(|(k, n)| **n > 0 && **k != "total") {
            write!(w, "   {k} {n}")?;
            if let Some(l) = s.lost_by_kind.get(k) {
                write!(w, " (+{l} lost)")?;
            }
            writeln!(w)?;
        }
        let t = &s.totals;
        writeln!(
            w,
            "-- memcgs: {} live, {} dying, {} freed during the run; {} were dying before start ({} of them freed since)",
            t.live, t.dying, t.freed, t.dying_before_start, t.freed_before_start
        )?;
        if let Some(h) = s.id_headroom {
            writeln!(
                w,
                "-- memcg ID headroom: {h} of {}",
                crate::kernel::MEMCG_ID_MAX
            )?;
        }
        for n in &s.notes {
            w.write_all(b"-- note: ")?;
            write_terminal(w, n.as_bytes())?;
            writeln!(w)?;
        }
        if let Some(o) = &s.oom {
            write!(w, "-- OOM kills: {}", o.kills_text())?;
            if o.marked_not_killed > 0 {
                write!(
                    w,
                    "; {} exiting victims marked, not killed",
                    o.marked_not_killed
                )?;
            }
            writeln!(w, "; the count is {}", o.count_exactness)?;
        }
        for p in s.pods.iter().filter(|p| p.stats.dying > 0).take(10) {
            write!(w, "   pod {}", p.stats.pod_uid)?;
            if let (Some(ns), Some(name)) = (&p.stats.namespace, &p.stats.name) {
                w.write_all(b" (")?;
                write_terminal(w, ns.as_bytes())?;
                w.write_all(b"/")?;
                write_terminal(w, name.as_bytes())?;
                w.write_all(b")")?;
            }
            write!(
                w,
                ": {} dying, {} live, {} freed",
                p.stats.dying, p.stats.live, p.stats.freed
            )?;
            if let Some(age) = p.oldest_dying_age_s {
                write!(w, ", oldest dying {age:.0}s")?;
            }
            writeln!(w)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The text of an `oom_kill` event after its cgroup id: the constraint, the limit hit, the
/// victim's `oom_score_adj` and RSS, the task that ran into the OOM.
fn write_oom_text<W: Write>(w: &mut W, o: &OomKill<'_>) -> io::Result<()> {
    write!(w, " constraint={}", o.constraint.name())?;
    if o.derived {
        w.write_all(b"(derived)")?;
    }
    if let Some(l) = &o.limit {
        w.write_all(b" limit=")?;
        if l.path.is_empty() {
            write!(w, "id:{}", l.cgroup_id)?;
        } else {
            write_terminal(w, l.path)?;
        }
        write!(
            w,
            " {}{}/{}",
            if l.memsw { "memsw " } else { "" },
            crate::format::units::human_bytes(l.usage_bytes),
            crate::format::units::human_bytes(l.limit_bytes)
        )?;
    }
    if let Some(a) = o.oom_score_adj {
        write!(w, " oom_score_adj={a}")?;
    }
    if let Some(m) = &o.mm {
        write!(
            w,
            " rss={} (anon {}, file {}, shmem {})",
            crate::format::units::human_bytes(
                m.rss_anon_bytes + m.rss_file_bytes + m.rss_shmem_bytes
            ),
            crate::format::units::human_bytes(m.rss_anon_bytes),
            crate::format::units::human_bytes(m.rss_file_bytes),
            crate::format::units::human_bytes(m.rss_shmem_bytes)
        )?;
    }
    if let Some(p) = o.trigger_pid {
        w.write_all(b" by=")?;
        write_terminal(w, o.trigger_comm.as_bytes())?;
        write!(w, "[{p}]")?;
    }
    if o.counted == Some(false) {
        w.write_all(b" (marked, not killed: it was exiting)")?;
    }
    Ok(())
}

/// The JSON fields of an `oom_kill` event after the common ones (its own object parts are
/// valid JSON for any path: serde escapes them).
#[derive(Serialize)]
struct OomJson<'a> {
    constraint: &'static str,
    constraint_derived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<LimitJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    victim_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oom_score_adj: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rss: Option<crate::model::oom::OomMm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger_comm: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totalpages_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel_counted: Option<bool>,
    exiting: bool,
    /// Only the victim's pid is known (`mark_victim` of older builds).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    victim_pid_only: bool,
}

#[derive(Serialize)]
struct LimitJson<'a> {
    cgroup_id: u64,
    level: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<std::borrow::Cow<'a, str>>,
    /// `memory`, or `memsw` (the v1 memory+swap limit).
    counter: &'static str,
    usage_bytes: u64,
    limit_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<crate::detectors::LimitScope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qos: Option<k8s::Qos>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<String>,
}

impl<'a> OomJson<'a> {
    fn of(o: &'a OomKill<'a>) -> OomJson<'a> {
        OomJson {
            constraint: o.constraint.name(),
            constraint_derived: o.derived,
            limit: o.limit.as_ref().map(|l| {
                let known = !l.path.is_empty();
                let pod = k8s::parse_path(l.path);
                LimitJson {
                    cgroup_id: l.cgroup_id,
                    level: l.level,
                    path: known.then(|| String::from_utf8_lossy(l.path)),
                    counter: if l.memsw { "memsw" } else { "memory" },
                    usage_bytes: l.usage_bytes,
                    limit_bytes: l.limit_bytes,
                    scope: known.then(|| crate::detectors::LimitScope::of_path(l.path)),
                    pod_uid: pod.pod_uid,
                    qos: pod.qos,
                    container_id: pod.container_id,
                }
            }),
            victim_limit_bytes: o.victim_limit_bytes,
            oom_score_adj: o.oom_score_adj,
            uid: o.uid,
            rss: o.mm,
            trigger_pid: o.trigger_pid,
            trigger_comm: o
                .trigger_pid
                .map(|_| String::from_utf8_lossy(o.trigger_comm.as_bytes())),
            totalpages_bytes: o.totalpages_bytes,
            kernel_counted: o.counted,
            exiting: o.exiting,
            victim_pid_only: !o.victim_task,
        }
    }
}

/// Only the verdicts and the summary, as text (for `attach`).
pub struct SummarySink<W: Write>(TextSink<W>);

impl<W: Write> SummarySink<W> {
    pub fn new(out: W, ctx: RenderContext) -> Self {
        SummarySink(TextSink::new(out, ctx))
    }
}

impl<W: Write> Sink for SummarySink<W> {
    fn event(&mut self, _ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.0.summary(s)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// JSON lines (`"type": "event"` / `"summary"`), valid JSON for any cgroup name.
pub struct JsonSink<W: Write> {
    out: W,
    ctx: RenderContext,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, ctx: RenderContext) -> Self {
        JsonSink { out, ctx }
    }
}

/// A pod UID or container id as matched in a path, in the form `k8s::parse_path` gives it.
/// Nothing in it needs escaping (hex digits and `-`).
/// An event line's opening: what, when, which cgroup (and its memory css), who, the path.
fn json_identity<W: Write>(w: &mut W, ev: &Event<'_>, controllers: &str) -> io::Result<()> {
    w.write_all(b"{\"type\":\"event\",\"ts_ns\":")?;
    put_u64(w, ev.ts_ns)?;
    w.write_all(b",\"event\":\"")?;
    w.write_all(ev.kind.name().as_bytes())?;
    w.write_all(b"\",\"hierarchy_id\":")?;
    put_u64(w, ev.hierarchy_id.into())?;
    w.write_all(b",\"cgroup_id\":")?;
    put_u64(w, ev.cgroup_id)?;
    w.write_all(b",\"controllers\":")?;
    w.write_all(controllers.as_bytes())?;
    w.write_all(b",\"level\":")?;
    put_u64(w, ev.level.into())?;
    w.write_all(b",\"pid\":")?;
    put_u64(w, ev.pid.into())?;
    w.write_all(b",\"tid\":")?;
    put_u64(w, ev.tid.into())?;
    w.write_all(b",\"comm\":\"")?;
    write_json_str(w, ev.comm)?;
    w.write_all(b"\",\"path\":\"")?;
    let lossy = write_json_str(w, ev.path)?;
    w.write_all(b"\"")?;
    if lossy {
        w.write_all(b",\"path_lossy\":true")?;
    }
    if ev.path_truncated {
        w.write_all(b",\"path_truncated\":true")?;
    }
    if ev.css != 0 {
        w.write_all(b",\"css\":")?;
        put_u64(w, ev.css)?;
    }
    Ok(())
}

/// A failed mkdir's errno (and whether it was inferred) and where it was seen.
fn json_failure<W: Write>(w: &mut W, ev: &Event<'_>) -> io::Result<()> {
    if let Some(e) = ev.errno {
        write!(
            w,
            ",\"errno\":{e},\"error\":\"{}\"",
            crate::model::event::errno_name(e)
        )?;
        if ev.errno_inferred {
            w.write_all(b",\"errno_inferred\":true")?;
        }
    }
    if let Some(at) = ev.failure_seen_at() {
        w.write_all(b",\"seen_at\":\"")?;
        w.write_all(at.name().as_bytes())?;
        w.write_all(b"\"")?;
    }
    Ok(())
}

/// The memcg's ID and counters, where the event carries them.
fn json_memcg<W: Write>(w: &mut W, ev: &Event<'_>) -> io::Result<()> {
    for (k, v) in [
        ("memcg_id", ev.memcg_id.map(u64::from)),
        ("usage_bytes", ev.usage_bytes),
        ("kmem_bytes", ev.kmem_bytes),
        ("memsw_bytes", ev.memsw_bytes),
    ] {
        if let Some(v) = v {
            w.write_all(b",\"")?;
            w.write_all(k.as_bytes())?;
            w.write_all(b"\":")?;
            put_u64(w, v)?;
        }
    }
    Ok(())
}

/// The pod and container the path names, and the pod's name where it is known.
fn json_pod<W: Write>(w: &mut W, ev: &Event<'_>, pod_stats: Option<&PodStats>) -> io::Result<()> {
    // What `k8s::parse_path` gives, written as it is matched (no allocation per event).
    if let Some(m) = k8s::match_path(ev.path) {
        w.write_all(b",\"pod_uid\":\"")?;
        put_id(w, m.uid)?;
        w.write_all(b"\"")?;
        json_opt_str(w, "qos", Some(m.qos.as_str()))?;
        if let Some((runtime, id)) = m.container {
            w.write_all(b",\"container_id\":\"")?;
            put_id(w, id)?;
            w.write_all(b"\"")?;
            json_opt_str(w, "runtime", runtime)?;
        }
    }
    if let Some(p) = pod_stats {
        json_opt_str(w, "pod_name", p.name.as_deref())?;
        json_opt_str(w, "namespace", p.namespace.as_deref())?;
    }
    Ok(())
}

fn put_id<W: Write>(w: &mut W, id: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 64];
    for chunk in id.chunks(buf.len()) {
        for (o, &b) in buf.iter_mut().zip(chunk) {
            *o = k8s::id_byte(b);
        }
        w.write_all(&buf[..chunk.len()])?;
    }
    Ok(())
}

/// An integer in decimal, without the formatting machinery.
fn put_u64<W: Write>(w: &mut W, v: u64) -> io::Result<()> {
    w.write_all(itoa::Buffer::new().format(v).as_bytes())
}

fn json_opt_str<W: Write>(w: &mut W, key: &str, v: Option<&str>) -> io::Result<()> {
    if let Some(v) = v {
        write!(w, ",\"{key}\":\"")?;
        write_json_str(w, v.as_bytes())?;
        w.write_all(b"\"")?;
    }
    Ok(())
}

impl<W: Write> Sink for JsonSink<W> {
    fn verdicts(&mut self, v: &[Verdict]) -> io::Result<()> {
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            ty: &'static str,
            #[serde(flatten)]
            v: &'a Verdict,
        }
        for x in v {
            serde_json::to_writer(
                &mut self.out,
                &Line {
                    ty: "verdict",
                    v: x,
                },
            )
            .map_err(io::Error::from)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn event(&mut self, ev: &Event<'_>, pod_stats: Option<&PodStats>) -> io::Result<()> {
        // A failed mkdir seen at the syscall has its hierarchy from its path.
        let controllers: &str = if ev.has_cgroup || ev.kind == EventKind::MkdirFailed {
            &self.ctx.labels(ev.hierarchy_id).1
        } else {
            "[]"
        };
        let w = &mut self.out;
        // Hand-written rather than `write!`: this runs for every event.
        json_identity(w, ev, controllers)?;
        json_failure(w, ev)?;
        json_memcg(w, ev)?;
        json_pod(w, ev, pod_stats)?;
        if let Some(o) = &ev.oom {
            // Rare: serde writes this part (an object's fields spliced into the line).
            let v = serde_json::to_vec(&OomJson::of(o)).map_err(io::Error::from)?;
            if v.len() > 2 {
                w.write_all(b",")?;
                w.write_all(&v[1..v.len() - 1])?;
            }
        }
        w.write_all(b"}\n")
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            ty: &'static str,
            #[serde(flatten)]
            s: &'a Summary,
        }
        serde_json::to_writer(&mut self.out, &Line { ty: "summary", s })
            .map_err(io::Error::from)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::tests::raw_bytes;
    use cgtrace_common::flags;

    fn ctx() -> RenderContext {
        let h = Hierarchies::parse(
            "7:memory:/\n0::/\n",
            "33 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        )
        .expect("mountinfo");
        RenderContext::new(
            h,
            ClockRef {
                mono_ns: 1_000_000_000,
                realtime_ns: 3_600_000_000_000,
            },
        )
    }

    fn render(json: bool, path: &[u8], fl: u8) -> String {
        let bytes = raw_bytes(1, path, flags::HAS_CGROUP | fl);
        let ev = Event::decode(&bytes).expect("decodes");
        let mut out = Vec::new();
        if json {
            JsonSink::new(&mut out, ctx())
                .event(&ev, None)
                .expect("write");
        } else {
            TextSink::new(&mut out, ctx())
                .event(&ev, None)
                .expect("write");
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn text_line() {
        let line = render(false, b"/kubepods/x", 0);
        // ts 1_000_000_123 is 123 ns after the monotonic reference, i.e. 01:00:00.000000 UTC.
        assert!(line.starts_with("01:00:00.000000 mkdir"), "{line}");
        assert!(
            line.contains(" memory ")
                && line.contains("/kubepods/x")
                && line.contains("runc[4242]"),
            "{line}"
        );
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }

    #[test]
    fn text_escapes_hostile_names() {
        let line = render(false, b"/a\x1b[2J\nb\xff", flags::PATH_TRUNCATED);
        assert!(line.contains("/a\\x1b[2J\\nb\\xff…[truncated]"), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!line.contains('\x1b'));
    }

    #[test]
    fn json_line_is_valid_for_hostile_names() {
        for p in [
            &b"/plain"[..],
            b"/q\"uote\\",
            b"/nl\nesc\x1b",
            b"/bad\xff\xfe",
            b"/t\tab",
        ] {
            let line = render(true, p, 0);
            assert_eq!(line.matches('\n').count(), 1);
            let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
            assert_eq!(v["type"], "event");
            assert_eq!(v["event"], "mkdir");
            assert_eq!(v["pid"], 4242);
            assert_eq!(v["controllers"], serde_json::json!(["memory"]));
            assert_eq!(v["cgroup_id"], 0x1_0000_0042u64);
            if let Ok(s) = std::str::from_utf8(p) {
                assert_eq!(v["path"], s);
            } else {
                assert_eq!(v["path_lossy"], true);
            }
        }
    }

    #[test]
    fn json_carries_pod_fields() {
        let p = b"/kubepods/burstable/pod0a1b2c3d-0000-4000-8000-00000000abcd/0123456789abcdef0123";
        let v: serde_json::Value = serde_json::from_str(&render(true, p, 0)).expect("json");
        assert_eq!(v["pod_uid"], "0a1b2c3d-0000-4000-8000-00000000abcd");
        assert_eq!(v["qos"], "burstable");
    }

    /// The pod fields of a JSON line are exactly what `k8s::parse_path` makes of the path.
    #[test]
    fn json_pod_fields_match_parse_path() {
        let uid = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let under = uid.replace('-', "_");
        let id = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
        let paths = [
            format!("/kubepods/burstable/pod{uid}/{id}"),
            format!("/kubepods/pod{}/{id}", uid.to_uppercase()),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/cri-containerd-{}.scope",
                id.to_lowercase()
            ),
            format!("/kubepods.slice/kubepods-pod{under}.slice/docker-{id}.scope"),
            format!("/kubepods/besteffort/pod{uid}"),
            format!("/kubepods/besteffort/pod{uid}/{id}/nested"),
            "/system.slice/docker.service".to_string(),
            "/kubepods/burstable/podnot-a-uid/x".to_string(),
        ];
        // The shapes are the interesting ones: pods, containers, runtimes, and neither.
        let parsed: Vec<_> = paths
            .iter()
            .map(|p| k8s::parse_path(p.as_bytes()))
            .collect();
        assert!(parsed[2].container_id.is_some() && parsed[2].runtime == Some("containerd"));
        assert!(parsed[4].pod_uid.is_some() && parsed[4].container_id.is_none());
        assert!(parsed[6].is_empty());
        for p in &paths {
            let v: serde_json::Value =
                serde_json::from_str(&render(true, p.as_bytes(), 0)).expect("json");
            let want = k8s::parse_path(p.as_bytes());
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            assert_eq!(field("pod_uid"), want.pod_uid, "{p}");
            assert_eq!(
                field("qos").as_deref(),
                want.qos.map(k8s::Qos::as_str),
                "{p}"
            );
            assert_eq!(field("container_id"), want.container_id, "{p}");
            assert_eq!(field("runtime").as_deref(), want.runtime, "{p}");
        }
    }

    #[test]
    fn summary_json() {
        let mut c = Counts::default();
        c.seen[EventKind::Mkdir as usize] = 3;
        c.lost[EventKind::Rmdir as usize] = 2;
        let s = Summary::new(&c, "tracepoint", "raw_tracepoint", 5);
        let mut out = Vec::new();
        JsonSink::new(&mut out, ctx()).summary(&s).expect("write");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["type"], "summary");
        assert_eq!(v["events"]["mkdir"], 3);
        assert_eq!(v["events"]["total"], 3);
        assert_eq!(v["lost"], 2);
        assert_eq!(v["tier"], "tracepoint");
    }
}
