//! The page's SVG plots, drawn by plotters: the time series of dying memcgs, churn and memcg ID
//! headroom, and the lifetime histograms.

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
    format::{escape, units::human_ns},
    kernel::MEMCG_ID_MAX,
    model::k8s::Qos,
    pipeline::{histogram::Phase, sample::TOP_PER_POINT},
};

use super::HtmlReport;

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
pub(super) type Plot = (&'static str, &'static str, String, String);

/// The plots.
pub(super) fn plots(rep: &HtmlReport) -> anyhow::Result<Vec<Plot>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
