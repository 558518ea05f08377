//! The text sinks: one readable line per event, or only the verdicts and the summary.
use std::io::{self, Write};

use cgtrace_common::EventKind;

use crate::{
    detectors::Verdict, format::escape::write_terminal, model::event::Event, model::oom::OomKill,
    model::tracker::PodStats,
};

use super::{RenderContext, Sink, Summary};

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
            let name = crate::kernel::mkdir_errno::errno_name(e);
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
            s.total_events(),
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
        for (k, n) in s.events.iter().filter(|(_, n)| **n > 0) {
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
