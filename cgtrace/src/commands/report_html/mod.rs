//! `cgtrace report --html FILE`: one self-contained page of a recorded session — SVG plots
//! (drawn by plotters' SVG backend) of dying memcgs, churn by name shape and memcg ID headroom
//! over time, the lifetime histograms, the verdicts with their evidence, and a sortable pod
//! table (a few lines of inline script). No network: no external script, style sheet or font.
//!
//! The time series come from the replay itself: the pipeline sampled at each second of event
//! time ([`Sampler::before_event`]) into a bounded [`History`] (merged pairwise past
//! [`MAX_POINTS`]), so the session format carries nothing more than the events.
use std::{fmt::Write as _, fs::File, io::Write as _, path::Path};

use anyhow::Context as _;

use crate::{
    commands::replay::{self, Speed},
    detectors::Verdict,
    format::{
        escape,
        units::{human_bytes, human_ns, human_secs, total_and_parts},
    },
    model::k8s::Qos,
    pipeline::{
        filters::Filters,
        histogram::Lifetimes,
        output::Summary,
        sample::{History, Sampler, Snapshot},
    },
};

mod plot;

use plot::plots;

/// Most points of each time series.
pub const MAX_POINTS: usize = 1000;

/// What the page shows, collected from one replay.
pub struct HtmlReport {
    pub hostname: String,
    pub kernel_release: String,
    pub summary: Summary,
    pub verdicts: Vec<Verdict>,
    pub history: History,
    pub last: Snapshot,
    pub lifetimes: Lifetimes,
    pub warnings: Vec<String>,
}

/// Replays the session, sampling the pipeline once a second of event time.
pub fn collect(path: &Path, filters: &Filters) -> anyhow::Result<HtmlReport> {
    let mut sampler = None;
    let (mut reader, mut r) = replay::open(path, filters, |h, clock| {
        let memory_hierarchy = h.with_controller("memory").map(|m| m.id);
        let (s, sink) = Sampler::new(memory_hierarchy, clock.mono_ns);
        sampler = Some(s);
        vec![sink]
    })?;
    let mut sampler = sampler.context("the replay built no pipeline")?;
    let mut history = History::new(MAX_POINTS);
    replay::feed_with(&mut reader, &mut r, Speed::Max, |pipe, ts| {
        for s in sampler.before_event(pipe, ts) {
            history.push(&s);
        }
        Ok(true)
    })?;
    let end = r.end_ns();
    let last = sampler.sample(&r.pipe, end);
    history.push(&last);
    Ok(HtmlReport {
        hostname: r.header.hostname.clone(),
        kernel_release: r.header.kernel_release.clone(),
        summary: r.pipe.summary(end),
        verdicts: r.pipe.verdicts(),
        history,
        last,
        lifetimes: sampler.with_lifetimes(Lifetimes::clone),
        warnings: reader.warnings().to_vec(),
    })
}

/// `cgtrace report --html OUT FILE`.
pub fn write(session: &Path, out: &Path, filters: &Filters) -> anyhow::Result<()> {
    let rep = collect(session, filters)?;
    let page = render(&rep, &session.display().to_string())?;
    let mut f = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    f.write_all(page.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Text for HTML: `<>&"'` escaped as entities; control and bidirectional-text characters as
/// the terminal shows them ([`escape::terminal`]), so a cgroup name reads the same in both.
/// Line breaks and backslashes stay (the evidence is pretty-printed JSON).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut plain = 0;
    let flush = |o: &mut String, run: &str| {
        if !run.is_empty() {
            o.push_str(&escape::terminal(run));
        }
    };
    for (i, c) in s.char_indices() {
        let entity = match c {
            '<' => "&lt;",
            '>' => "&gt;",
            '&' => "&amp;",
            '"' => "&quot;",
            '\'' => "&#39;",
            '\n' => "\n",
            '\\' => "\\",
            _ => continue,
        };
        flush(&mut o, &s[plain..i]);
        o.push_str(entity);
        plain = i + c.len_utf8();
    }
    flush(&mut o, &s[plain..]);
    o
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:960px}\
h1{font-size:22px}h2{font-size:18px;margin-top:28px}table{border-collapse:collapse;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}\
th{background:#eee;cursor:pointer}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}\
.v{border-left:4px solid #999;padding:4px 12px;margin:12px 0}.critical{border-color:#c00}\
.warning{border-color:#e90}.info{border-color:#39c}figure{margin:12px 0}figcaption{font-size:13px;color:#555}";

/// Sorts a table by the clicked column (numbers by `data-v`), toggling the direction.
const SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach(function(th){\
th.addEventListener('click',function(){var i=th.cellIndex,tb=th.closest('table').tBodies[0];\
var rows=Array.from(tb.rows);var d=th.dataset.d==='1'?-1:1;th.dataset.d=d===1?'1':'0';\
rows.sort(function(a,b){var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;\
if(x!==undefined&&y!==undefined){return d*(Number(x)-Number(y));}\
return d*a.cells[i].textContent.localeCompare(b.cells[i].textContent);});\
rows.forEach(function(r){tb.appendChild(r);});});});";

/// The document head, the run's facts and its warnings.
fn write_head(o: &mut String, rep: &HtmlReport, source: &str) {
    let s = &rep.summary;
    let t = &s.totals;
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\
<title>cgtrace report: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&rep.hostname)
    );
    let _ = write!(
        o,
        "<h1>cgtrace report: {} (kernel {})</h1>\n<p>Session <code>{}</code>: {:.1} s, tier {}, {} events, {} lost.<br>\
Memcgs at the end: {} live, {} dying, {} freed during the run; {} dying before start ({} freed since). \
Memcg ID headroom: {}. Failed mkdirs: {}. OOM kills: {}.</p>\n",
        esc(&rep.hostname),
        esc(&rep.kernel_release),
        esc(source),
        s.duration_ns as f64 / 1e9,
        esc(&s.tier),
        s.total_events(),
        s.lost,
        t.live,
        t.dying,
        t.freed,
        t.dying_before_start,
        t.freed_before_start,
        rep.last
            .id_headroom
            .map_or("unknown".to_string(), |h| h.to_string()),
        rep.last.failed_mkdirs,
        oom_kills(s),
    );
    for w in &rep.warnings {
        let _ = writeln!(o, "<p><b>warning:</b> {}</p>", esc(w));
    }
}

/// The detectors' verdicts.
fn write_verdicts(o: &mut String, rep: &HtmlReport) {
    o.push_str("<h2 id=\"verdicts\">Verdicts</h2>\n");
    if rep.verdicts.is_empty() {
        o.push_str("<p>None: no detector fired.</p>\n");
    }
    for v in &rep.verdicts {
        let sev = v.severity.as_str();
        let evidence = serde_json::to_string_pretty(&v.evidence).unwrap_or_default();
        let _ = writeln!(
            o,
            "<div class=\"v {sev}\"><p><b>{}</b> [{}] {}</p><pre>{}</pre><p>{}</p></div>",
            esc(v.detector),
            esc(sev),
            esc(&v.summary),
            esc(&evidence),
            esc(&v.recommendation)
        );
    }
}

/// The table of pods.
fn write_pods(o: &mut String, rep: &HtmlReport) {
    o.push_str("<h2 id=\"pods\">Pods</h2>\n<p>Click a column to sort.</p>\n<table class=\"sortable\" id=\"pods-table\"><thead><tr>\
<th>dying</th><th>oldest dying</th><th>bytes at removal</th><th>live</th><th>freed</th><th class=\"l\">QoS</th><th class=\"l\">pod</th></tr></thead><tbody>\n");
    for p in &rep.last.pods {
        let (st, age) = (&p.pod.stats, p.pod.oldest_dying_age_s);
        let _ = writeln!(
            o,
            "<tr><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}{}</td></tr>",
            st.dying,
            st.dying,
            age.unwrap_or(-1.0),
            age.map_or("-".to_string(), human_secs),
            p.dying_bytes.unwrap_or(0),
            p.dying_bytes.map_or("-".to_string(), human_bytes),
            st.live,
            st.live,
            st.freed,
            st.freed,
            Qos::name(st.qos),
            esc(&p.label()),
            if st.namespace.is_some() {
                format!(" <small>{}</small>", esc(&st.pod_uid))
            } else {
                String::new()
            }
        );
    }
    o.push_str("</tbody></table>\n");
}

/// The table of lifetime percentiles.
fn write_lifetimes(o: &mut String, rep: &HtmlReport) {
    o.push_str("<h2 id=\"lifetimes\">Lifetime percentiles</h2>\n<table class=\"sortable\" id=\"lifetimes-table\"><thead><tr>\
<th class=\"l\">phase</th><th class=\"l\">QoS</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr></thead><tbody>\n");
    for l in &rep.last.lifetimes {
        let _ = writeln!(
            o,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td></tr>",
            l.phase,
            l.qos,
            l.count,
            l.count,
            l.p50_ns,
            human_ns(l.p50_ns),
            l.p90_ns,
            human_ns(l.p90_ns),
            l.p99_ns,
            human_ns(l.p99_ns),
            l.max_ns,
            human_ns(l.max_ns)
        );
    }
    o.push_str("</tbody></table>\n");
}

/// The page.
pub fn render(rep: &HtmlReport, source: &str) -> anyhow::Result<String> {
    let mut o = String::new();
    write_head(&mut o, rep, source);
    write_verdicts(&mut o, rep);
    for (id, heading, note, svg) in plots(rep)? {
        let _ = write!(
            o,
            "<h2>{}</h2>\n<figure id=\"{id}\">{svg}<figcaption>{}</figcaption></figure>\n",
            esc(heading),
            esc(&note)
        );
    }

    write_pods(&mut o, rep);
    write_lifetimes(&mut o, rep);
    let _ = write!(
        o,
        "<p><small>{} samples, one per second of event time (merged when over {MAX_POINTS}).</small></p>\n<script>{SCRIPT}</script>\n</body></html>\n",
        rep.history.len()
    );
    Ok(o)
}

/// The run's OOM kills with their constraints (`none`: node-wide), for the summary line.
fn oom_kills(s: &Summary) -> String {
    let Some(o) = &s.oom else {
        return "not traced".to_string();
    };
    let by = o
        .by_constraint
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{n} {c}"));
    total_and_parts(o.kills, by)
}

#[cfg(test)]
mod tests;
