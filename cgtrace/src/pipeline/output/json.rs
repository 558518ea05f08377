//! JSON lines: one object per event, valid JSON for any cgroup name.
use std::io::{self, Write};

use cgtrace_common::EventKind;
use serde::Serialize;

use crate::{
    detectors::Verdict, format::escape::write_json_str, model::event::Event, model::k8s,
    model::oom::OomKill, model::tracker::PodStats,
};

use super::{RenderContext, Sink, Summary};

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
            crate::kernel::mkdir_errno::errno_name(e)
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
