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
    coord::combinators::IntoLogRange,
    prelude::{
        BLACK, ChartBuilder, DrawingArea, IntoDrawingArea, LineSeries, PathElement, RGBColor,
        Rectangle, SVGBackend, WHITE,
    },
    style::{Color as _, IntoFont as _},
};

use crate::{
    commands::replay::{self, Speed},
    detectors::Verdict,
    format::{
        escape,
        units::{human_bytes, human_ns, human_secs},
    },
    kernel::MEMCG_ID_MAX,
    model::k8s::Qos,
    pipeline::{
        filters::Filters,
        histogram::{Lifetimes, Phase},
        output::Summary,
        sample::{History, Sampler, Snapshot, TOP_PER_POINT},
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

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e:?}")
}

/// Type sizes in the plots (pixels; the page shows them at their size).
const CAPTION_PX: u32 = 20;
const LABEL_PX: u32 = 14;
const DESC_PX: u32 = 15;
const LEGEND_PX: u32 = 14;

/// What a line plot's y axis shows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum YAxis {
    /// Whole numbers from 0 (labels only at integers).
    Count,
    /// A rate from 0.
    Rate,
    /// A fixed range, whole numbers.
    Fixed(f64, f64),
}

/// One chart of a line plot: a caption, the y axis, and named series of (seconds, value).
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    y: YAxis,
    series: &'a [(String, Vec<(f64, f64)>)],
}

/// The time axis in the unit that suits the session's length: (divisor, description).
fn time_unit(x_max_s: f64) -> (f64, &'static str) {
    if x_max_s > 3.0 * 3600.0 {
        (3600.0, "hours since start")
    } else if x_max_s > 600.0 {
        (60.0, "minutes since start")
    } else {
        (1.0, "seconds since start")
    }
}

/// A tick label: whole numbers without decimals, others with one or two.
fn tick(v: f64, span: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if span >= 2.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Draws one panel into `area`.
fn draw_panel(area: &Area<'_>, panel: &Panel<'_>, x_max_s: f64) -> anyhow::Result<()> {
    let (unit, x_desc) = time_unit(x_max_s);
    let x_max = (x_max_s / unit).max(1e-3);
    let peak = panel
        .series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let (y_min, y_max) = match panel.y {
        YAxis::Count => (0.0, (peak * 1.1).max(4.0)),
        YAxis::Rate => (0.0, (peak * 1.1).max(1.0)),
        YAxis::Fixed(lo, hi) => (lo, hi),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", CAPTION_PX).into_font())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, y_min..y_max)
        .map_err(plot_err)?;
    let y_fmt = |v: &f64| match panel.y {
        YAxis::Count | YAxis::Fixed(..) if (v - v.round()).abs() > 1e-9 => String::new(),
        _ => tick(*v, y_max - y_min),
    };
    let x_fmt = |v: &f64| tick(*v, x_max);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(panel.y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(("sans-serif", LABEL_PX))
        .axis_desc_style(("sans-serif", DESC_PX))
        .light_line_style(RGBColor(244, 244, 244))
        .draw()
        .map_err(plot_err)?;
    for (i, (name, pts)) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, y)| (x / unit, y)),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", LEGEND_PX))
            .draw()
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Line plots stacked in one SVG, one [`H`] high each; returns the SVG.
fn line_plot(panels: &[Panel<'_>]) -> anyhow::Result<String> {
    let x_max_s = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.1.iter().map(|p| p.0)))
        .fold(1.0_f64, f64::max);
    let n = panels.len().max(1);
    let mut svg = String::new();
    {
        let height = H * n as u32;
        let root: Area<'_> = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        for (area, panel) in root.split_evenly((n, 1)).iter().zip(panels) {
            draw_panel(area, panel, x_max_s)?;
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

/// Where a histogram's bars start on its log scale (below 1, so a count of 1 shows).
const BAR_BASE: f64 = 0.5;

/// Each histogram's counts per bucket of `bounds` (the first below `bounds[0]`), and the first
/// and last bucket any of them uses.
fn bucket_counts(
    bounds: &[u64],
    hs: &[(String, &hdrhistogram::Histogram<u64>)],
) -> (Vec<Vec<u64>>, usize, usize) {
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
    (counts, lo, hi)
}

/// A log-scale count's label: whole counts from 1 up, nothing between them.
fn count_label(v: &f64) -> String {
    if *v >= 1.0 && (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// A histogram of lifetimes (log buckets) for each named histogram; returns the SVG.
fn histogram_plot(
    title: &str,
    hs: &[(String, &hdrhistogram::Histogram<u64>)],
) -> anyhow::Result<String> {
    let bounds = buckets();
    let (counts, lo, hi) = bucket_counts(&bounds, hs);
    let label = |i: usize| -> String {
        if i == 0 {
            format!("<{}", human_ns(bounds[0]))
        } else {
            format!("≥{}", human_ns(bounds[i - 1]))
        }
    };
    // A log scale: a QoS class with a handful of memcgs beside hundreds outside pods still
    // shows; bars start below 1 so a count of 1 is drawn.
    let y_max = (counts.iter().flatten().copied().max().unwrap_or(1) as f64 * 2.0).max(10.0);
    let n = hs.len().max(1) as f64;
    let mut svg = String::new();
    {
        let root: Area<'_> = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", CAPTION_PX).into_font())
            .margin(12)
            // Room for the last bucket's label, centred on the right edge.
            .margin_right(40)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(lo as f64..(hi + 1) as f64, (BAR_BASE..y_max).log_scale())
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
            .y_label_formatter(&count_label)
            .x_desc("lifetime (bucket start)")
            .y_desc("memcgs (log scale)")
            .light_line_style(WHITE)
            .label_style(("sans-serif", LABEL_PX))
            .axis_desc_style(("sans-serif", DESC_PX))
            .draw()
            .map_err(plot_err)?;
        for (k, (name, _)) in hs.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let c = &counts[k];
            chart
                .draw_series((lo..=hi).filter(|&i| c[i] > 0).map(|i| {
                    let x0 = i as f64 + 0.1 + 0.8 * k as f64 / n;
                    let x1 = x0 + 0.8 / n;
                    Rectangle::new([(x0, BAR_BASE), (x1, c[i] as f64)], color.filled())
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
            .label_font(("sans-serif", LEGEND_PX))
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
            // Legends are text in the SVG (plotters escapes markup): controls as the terminal
            // shows them.
            let name = names.get(usize::from(i)).map_or("", String::as_str);
            (escape::terminal(name), pts)
        })
        .collect()
}

/// A plot: (id, heading, note, svg).
type Plot = (&'static str, &'static str, String, String);

/// The plots.
fn plots(rep: &HtmlReport) -> anyhow::Result<Vec<Plot>> {
    let mut out = vec![dying_plot(rep)?, churn_plot(rep)?, headroom_plot(rep)?];
    out.extend(lifetime_plots(rep)?);
    Ok(out)
}

/// Dying memcgs over time: all of them, and the pods with the most.
fn dying_plot(rep: &HtmlReport) -> anyhow::Result<Plot> {
    let h = &rep.history;
    let total = [(
        "all memcgs".to_string(),
        h.points().map(|p| (p.elapsed_s, p.dying as f64)).collect(),
    )];
    let pods = top_series(rep, h.pod_names(), |p| {
        p.pods.iter().map(|&(i, n)| (i, n as f64)).collect()
    });
    Ok((
        "plot-dying",
        "Dying memcgs over time",
        format!(
            "Above, every dying memcg the run knew of (the node's, {} of them dying before the run \
             started); below, the pods with the most (each sample keeps its top {TOP_PER_POINT} pods: \
             a pod not among them counts 0 there).",
            rep.summary.totals.dying_before_start
        ),
        line_plot(&[
            Panel {
                caption: "dying memcgs, all",
                y_desc: "dying memcgs",
                y: YAxis::Count,
                series: &total,
            },
            Panel {
                caption: if pods.is_empty() {
                    "dying memcgs of pods (none)"
                } else {
                    "dying memcgs of the pods with the most"
                },
                y_desc: "dying memcgs",
                y: YAxis::Count,
                series: &pods,
            },
        ])?,
    ))
}

/// Cgroups created per second, by name shape.
fn churn_plot(rep: &HtmlReport) -> anyhow::Result<Plot> {
    let h = &rep.history;
    let mut churn = vec![(
        "all shapes".to_string(),
        h.points().map(|p| (p.elapsed_s, p.churn_per_s)).collect(),
    )];
    churn.extend(top_series(rep, h.shape_names(), |p| p.shapes.clone()));
    Ok((
        "plot-churn",
        "Cgroup churn by name shape",
        "Cgroups created per second, by the churn_storm detector's name shapes (a path counts once across hierarchies).".to_string(),
        line_plot(&[Panel {
            caption: "cgroups created per second",
            y_desc: "mkdir/s",
            y: YAxis::Rate,
            series: &churn,
        }])?,
    ))
}

/// The memcg ID headroom over time.
fn headroom_plot(rep: &HtmlReport) -> anyhow::Result<Plot> {
    let h = &rep.history;
    let headroom = [(
        "free memcg IDs".to_string(),
        h.points()
            .filter_map(|p| p.id_headroom.map(|v| (p.elapsed_s, v as f64)))
            .collect::<Vec<_>>(),
    )];
    Ok((
        "plot-headroom",
        "Memcg ID headroom over time",
        if headroom[0].1.is_empty() {
            "No memory hierarchy in the session: headroom unknown.".to_string()
        } else {
            format!(
                "Memcg IDs left (of {MEMCG_ID_MAX}) the way this kernel spends them; at 0, every \
                 new memcg (every new pod) fails."
            )
        },
        line_plot(&[Panel {
            caption: "memcg ID headroom",
            y_desc: "free IDs",
            y: YAxis::Fixed(0.0, MEMCG_ID_MAX as f64),
            series: &headroom,
        }])?,
    ))
}

/// The lifetime histograms per QoS class: live, then dying.
fn lifetime_plots(rep: &HtmlReport) -> anyhow::Result<[Plot; 2]> {
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
    let live_plot = (
        "plot-live",
        "Memcg lifetimes: live (mkdir → rmdir)",
        "Per QoS class (none: memcgs outside pods); buckets two per decade.".to_string(),
        histogram_plot("live: mkdir → rmdir", &live)?,
    );
    let dying_plot = (
        "plot-dying-lifetimes",
        "Memcg lifetimes: dying (rmdir → freed)",
        "Per QoS class (none: memcgs outside pods); memcgs still dying at the end are not in it."
            .to_string(),
        histogram_plot("dying: rmdir → freed", &dying)?,
    );
    Ok([live_plot, dying_plot])
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
    let by: Vec<String> = o
        .by_constraint
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{n} {c}"))
        .collect();
    if by.is_empty() {
        o.kills.to_string()
    } else {
        format!("{} ({})", o.kills, by.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{baseline::Baseline, tracker::tests::ev},
        pipeline::{Pipeline, facts::RunFacts, pod_names::NoPodNames},
    };
    use cgtrace_common::EventKind;

    /// The page of a run whose cgroups have hostile names, sampled as `collect` samples.
    fn hostile_page() -> String {
        let facts = RunFacts::new("6.1.0", RunFacts::memory_at(Some(4)));
        let start = facts.clock.mono_ns;
        let (mut sampler, sink) = Sampler::new(Some(4), start);
        let mut p = Pipeline::new(
            facts,
            &Baseline::default(),
            vec![sink],
            Box::new(NoPodNames),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut history = History::new(MAX_POINTS);
        for i in 0..40u64 {
            let ts = start + i * 100_000_000;
            let path = format!("/<script>x\x1b[31m\u{202e}-{i}");
            for s in sampler.before_event(&p, ts) {
                history.push(&s);
            }
            p.event(&ev(EventKind::Mkdir, ts, 4, 100 + i, path.as_bytes()));
            p.event(&ev(EventKind::Rmdir, ts + 1, 4, 100 + i, path.as_bytes()));
        }
        let end = start + 5_000_000_000;
        let last = sampler.sample(&p, end);
        history.push(&last);
        let rep = HtmlReport {
            hostname: "node<1>".into(),
            kernel_release: "6.1.0".into(),
            summary: p.summary(end),
            verdicts: p.verdicts(),
            history,
            last,
            lifetimes: sampler.with_lifetimes(Lifetimes::clone),
            warnings: Vec::new(),
        };
        render(&rep, "/tmp/<s>.cgtrace").unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn hostile_names_stay_text() {
        let page = hostile_page();
        assert!(!page.contains("<script>x"), "markup from a cgroup name");
        assert!(
            page.contains("&lt;script&gt;x"),
            "the name is shown, escaped"
        );
        assert!(
            !page.chars().any(|c| c == '\x1b' || c == '\u{202e}'),
            "control or bidi characters from a name"
        );
        assert!(
            page.contains("x\\x1b[") && page.contains("\\u{202e}-"),
            "escaped as the terminal shows them"
        );
        assert_eq!(page.matches("<svg").count(), 5);
        assert_eq!(
            page.matches("<script>").count(),
            1,
            "only the page's own script"
        );
    }

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            esc("<a href='x'>&\x1b"),
            "&lt;a href=&#39;x&#39;&gt;&amp;\\x1b"
        );
        // The terminal's escapes for controls and bidi overrides; line breaks and backslashes
        // (pretty-printed JSON) stay.
        assert_eq!(esc("evil\u{202e}txt\t"), "evil\\u{202e}txt\\t");
        assert_eq!(esc("{\n  \"a\\u0001\"\n}"), "{\n  &quot;a\\u0001&quot;\n}");
        assert_eq!(esc("café"), "café");
    }

    #[test]
    fn plots_draw_svg_even_when_empty() {
        let series = [("a".to_string(), vec![(0.0, 1.0), (2.0, 3.0)])];
        for y in [YAxis::Count, YAxis::Rate, YAxis::Fixed(0.0, 65_535.0)] {
            let panel = Panel {
                caption: "t",
                y_desc: "y",
                y,
                series: &series,
            };
            let svg = line_plot(&[panel]).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{svg}");
            assert!(svg.contains("<polyline"), "{svg}");
        }
        let none = Panel {
            caption: "nothing",
            y_desc: "y",
            y: YAxis::Count,
            series: &[],
        };
        let svg = line_plot(&[none]).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(svg.contains("</svg>"));
        let empty = histogram_plot("h", &[]).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(empty.contains("<svg"));
    }
}
