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
use plotters::{
    coord::Shift,
    prelude::{
        BLACK, ChartBuilder, DrawingArea, IntoDrawingArea, LineSeries, PathElement, RGBColor,
        Rectangle, SVGBackend, WHITE,
    },
    style::{Color as _, IntoFont as _},
};

use crate::{
    commands::replay::{self, Speed},
    detectors::Verdict,
    format::units::{human_bytes, human_ns, human_secs},
    model::k8s::Qos,
    pipeline::{
        filters::Filters,
        histogram::{Lifetimes, Phase},
        output::Summary,
        sample::{History, Sampler, Snapshot},
    },
};

/// Most points of each time series.
pub const MAX_POINTS: usize = 1000;
/// Series drawn per plot besides the total.
const TOP_SERIES: usize = 5;
const W: u32 = 900;
const H: u32 = 320;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// What the page shows, collected from one replay.
pub struct HtmlReport {
    pub hostname: String,
    pub kernel_release: String,
    pub summary: Summary,
    pub verdicts: Vec<Verdict>,
    pub history: History,
    pub last: Snapshot,
    pub lifetimes: Lifetimes,
    pub memory_hierarchy: Option<u32>,
    pub warnings: Vec<String>,
}

/// Replays the session, sampling the pipeline once a second of event time.
pub fn collect(path: &Path, filters: &Filters) -> anyhow::Result<HtmlReport> {
    let mut sampler = None;
    let mut memory_hierarchy = None;
    let (mut reader, mut r) = replay::open(path, filters, |h, clock| {
        memory_hierarchy = h.with_controller("memory").map(|m| m.id);
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
        memory_hierarchy,
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

/// Text for HTML: `<>&"'` escaped, control characters shown as escapes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => o.extend(c.escape_default()),
            c => o.push(c),
        }
    }
    o
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e:?}")
}

/// A line plot of named series of (seconds, value); returns the SVG.
fn line_plot(
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root: Area<'_> = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let x_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(1.0_f64, f64::max);
        let y_max = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(1.0_f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18).into_font())
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc(y_desc)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Lifetime buckets: two per decade from 1 µs to 10⁴ s.
fn buckets() -> Vec<u64> {
    let mut b = Vec::new();
    let mut v = 1_000u64;
    while v <= 10_000_000_000_000 {
        b.push(v);
        b.push(v * 3);
        v *= 10;
    }
    b
}

/// A histogram of lifetimes (log buckets) for each named histogram; returns the SVG.
fn histogram_plot(
    title: &str,
    hs: &[(String, &hdrhistogram::Histogram<u64>)],
) -> anyhow::Result<String> {
    let bounds = buckets();
    let counts: Vec<Vec<u64>> = hs
        .iter()
        .map(|(_, h)| {
            let mut c = vec![0u64; bounds.len() + 1];
            for v in h.iter_recorded() {
                let i = bounds.partition_point(|&b| b <= v.value_iterated_to());
                c[i] += v.count_at_value();
            }
            c
        })
        .collect();
    let used: Vec<usize> = (0..=bounds.len())
        .filter(|&i| counts.iter().any(|c| c[i] > 0))
        .collect();
    let (lo, hi) = match (used.first(), used.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (0, 0),
    };
    let label = |i: usize| -> String {
        if i == 0 {
            format!("<{}", human_ns(bounds[0]))
        } else {
            format!("≥{}", human_ns(bounds[i - 1]))
        }
    };
    let y_max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
    let n = hs.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root: Area<'_> = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18).into_font())
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(lo as f64..(hi + 1) as f64, 0.0..y_max)
            .map_err(plot_err)?;
        let fmt = |x: &f64| {
            let i = x.floor() as usize;
            if (x - x.floor()).abs() < 1e-9 && i <= bounds.len() {
                label(i)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels((hi - lo + 2).min(24))
            .x_label_formatter(&fmt)
            .x_desc("lifetime (bucket start)")
            .y_desc("memcgs")
            .draw()
            .map_err(plot_err)?;
        for (k, (name, _)) in hs.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let c = &counts[k];
            chart
                .draw_series((lo..=hi).map(|i| {
                    let x0 = i as f64 + 0.1 + 0.8 * k as f64 / n;
                    let x1 = x0 + 0.8 / n;
                    Rectangle::new([(x0, 0.0), (x1, c[i] as f64)], color.filled())
                }))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The series of the top `TOP_SERIES` names (by peak) of sparse per-point values.
fn top_series(
    rep: &HtmlReport,
    names: &[String],
    values: impl Fn(&crate::pipeline::sample::Point) -> Vec<(u16, f64)>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut peak: Vec<(f64, u16)> = Vec::new();
    for p in rep.history.points() {
        for (i, v) in values(p) {
            match peak.iter_mut().find(|x| x.1 == i) {
                Some(x) => x.0 = x.0.max(v),
                None => peak.push((v, i)),
            }
        }
    }
    peak.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    peak.truncate(TOP_SERIES);
    peak.iter()
        .map(|&(_, i)| {
            let pts = rep
                .history
                .points()
                .map(|p| {
                    let v = values(p).iter().find(|x| x.0 == i).map_or(0.0, |x| x.1);
                    (p.elapsed_s, v)
                })
                .collect();
            (names.get(usize::from(i)).cloned().unwrap_or_default(), pts)
        })
        .collect()
}

/// The plots: (id, heading, note, svg).
fn plots(rep: &HtmlReport) -> anyhow::Result<Vec<(&'static str, &'static str, String, String)>> {
    let h = &rep.history;
    let mut out = Vec::new();

    let mut dying = vec![(
        "all memcgs".to_string(),
        h.points().map(|p| (p.elapsed_s, p.dying as f64)).collect(),
    )];
    dying.extend(top_series(rep, h.pod_names(), |p| {
        p.pods.iter().map(|&(i, n)| (i, n as f64)).collect()
    }));
    out.push((
        "plot-dying",
        "Dying memcgs over time",
        "Total, and the pods with the most (each sample keeps its top 5 pods: a pod not among them counts 0 there).".to_string(),
        line_plot("dying memcgs", "dying memcgs", &dying)?,
    ));

    let mut churn = vec![(
        "all shapes".to_string(),
        h.points().map(|p| (p.elapsed_s, p.churn_per_s)).collect(),
    )];
    churn.extend(top_series(rep, h.shape_names(), |p| p.shapes.clone()));
    out.push((
        "plot-churn",
        "Cgroup churn by name shape",
        "Cgroups created per second, by the churn_storm detector's name shapes (a path counts once across hierarchies).".to_string(),
        line_plot("cgroups created per second", "mkdir/s", &churn)?,
    ));

    let headroom: Vec<(f64, f64)> = h
        .points()
        .filter_map(|p| p.id_headroom.map(|v| (p.elapsed_s, v as f64)))
        .collect();
    out.push((
        "plot-headroom",
        "Memcg ID headroom over time",
        if headroom.is_empty() {
            "No memory hierarchy in the session: headroom unknown.".to_string()
        } else {
            "Memcg IDs left (65,535 at most) the way this kernel spends them.".to_string()
        },
        line_plot(
            "memcg ID headroom",
            "free IDs",
            &[("headroom".to_string(), headroom)],
        )?,
    ));

    let mut hs: Vec<(String, &hdrhistogram::Histogram<u64>)> = Vec::new();
    for q in Qos::CLASSES {
        if let Some(p) = rep.lifetimes.qos(q) {
            for phase in [Phase::Live, Phase::Dying] {
                if !p.get(phase).is_empty() {
                    hs.push((format!("{} {}", phase.name(), Qos::name(q)), p.get(phase)));
                }
            }
        }
    }
    let (live, dying): (Vec<_>, Vec<_>) = hs.into_iter().partition(|(n, _)| n.starts_with("live"));
    out.push((
        "plot-live",
        "Memcg lifetimes: live (mkdir → rmdir)",
        "Per QoS class; buckets two per decade.".to_string(),
        histogram_plot("live: mkdir → rmdir", &live)?,
    ));
    out.push((
        "plot-dying-lifetimes",
        "Memcg lifetimes: dying (rmdir → freed)",
        "Per QoS class; memcgs still dying at the end are not in it.".to_string(),
        histogram_plot("dying: rmdir → freed", &dying)?,
    ));
    Ok(out)
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:960px}\
h1{font-size:22px}h2{font-size:18px;margin-top:28px}table{border-collapse:collapse;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}\
th{background:#eee;cursor:pointer}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow:auto}\
.v{border-left:4px solid #999;padding:4px 12px;margin:12px 0}.critical{border-color:#c00}\
.warning{border-color:#e90}.info{border-color:#39c}figure{margin:12px 0}figcaption{font-size:13px;color:#555}";

/// Sorts a table by the clicked column (numbers by `data-v`), toggling the direction.
const SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach(function(th,i){\
th.addEventListener('click',function(){var tb=th.closest('table').tBodies[0];\
var rows=Array.from(tb.rows);var d=th.dataset.d==='1'?-1:1;th.dataset.d=d===1?'1':'0';\
rows.sort(function(a,b){var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;\
if(x!==undefined&&y!==undefined){return d*(Number(x)-Number(y));}\
return d*a.cells[i].textContent.localeCompare(b.cells[i].textContent);});\
rows.forEach(function(r){tb.appendChild(r);});});});";

/// The page.
pub fn render(rep: &HtmlReport, source: &str) -> anyhow::Result<String> {
    let s = &rep.summary;
    let t = &s.totals;
    let mut o = String::new();
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
Memcg ID headroom: {}. Failed mkdirs: {}.</p>\n",
        esc(&rep.hostname),
        esc(&rep.kernel_release),
        esc(source),
        s.duration_ns as f64 / 1e9,
        esc(&s.tier),
        s.events.get("total").copied().unwrap_or(0),
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
    );
    for w in &rep.warnings {
        let _ = writeln!(o, "<p><b>warning:</b> {}</p>", esc(w));
    }

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

    for (id, heading, note, svg) in plots(rep)? {
        let _ = write!(
            o,
            "<h2>{}</h2>\n<figure id=\"{id}\">{svg}<figcaption>{}</figcaption></figure>\n",
            esc(heading),
            esc(&note)
        );
    }

    o.push_str("<h2 id=\"pods\">Pods</h2>\n<p>Click a column to sort.</p>\n<table class=\"sortable\"><thead><tr>\
<th>dying</th><th>oldest dying</th><th>bytes at removal</th><th>live</th><th>freed</th><th class=\"l\">QoS</th><th class=\"l\">pod</th></tr></thead><tbody>\n");
    for p in &rep.last.pods {
        let age = p.oldest_dying_age_s;
        let _ = writeln!(
            o,
            "<tr><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td data-v=\"{}\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}{}</td></tr>",
            p.dying,
            p.dying,
            age.unwrap_or(-1.0),
            age.map_or("-".to_string(), human_secs),
            p.dying_bytes.unwrap_or(0),
            p.dying_bytes.map_or("-".to_string(), human_bytes),
            p.live,
            p.live,
            p.freed,
            p.freed,
            Qos::name(p.qos),
            esc(&p.label()),
            if p.namespace.is_some() {
                format!(" <small>{}</small>", esc(&p.pod_uid))
            } else {
                String::new()
            }
        );
    }
    o.push_str("</tbody></table>\n");

    o.push_str("<h2 id=\"lifetimes\">Lifetime percentiles</h2>\n<table class=\"sortable\"><thead><tr>\
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
    let _ = write!(
        o,
        "<p><small>{} samples, one per second of event time (merged when over {MAX_POINTS}).</small></p>\n<script>{SCRIPT}</script>\n</body></html>\n",
        rep.history.len()
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            esc("<a href='x'>&\x1b"),
            "&lt;a href=&#39;x&#39;&gt;&amp;\\u{1b}"
        );
    }

    #[test]
    fn plots_draw_svg_even_when_empty() {
        let svg = line_plot("t", "y", &[("a".into(), vec![(0.0, 1.0), (2.0, 3.0)])])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{svg}");
        let empty = histogram_plot("h", &[]).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(empty.contains("<svg"));
    }
}
