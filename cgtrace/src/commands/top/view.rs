//! What `cgtrace top` draws: a pure function of a [`Snapshot`], the sparkline history and the
//! keys pressed so far (no terminal, no pipeline here).
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Sparkline, Table},
};

use crate::{
    format::{
        escape,
        units::{human_bytes, human_ns, human_secs, total_and_parts},
    },
    model::k8s::Qos,
    pipeline::sample::{PodRow, ShapeWindowRow, Snapshot},
};

/// How the pod table is ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Dying,
    Oldest,
    Bytes,
    Live,
    Name,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Dying => SortKey::Oldest,
            SortKey::Oldest => SortKey::Bytes,
            SortKey::Bytes => SortKey::Live,
            SortKey::Live => SortKey::Name,
            SortKey::Name => SortKey::Dying,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Dying => "dying",
            SortKey::Oldest => "oldest",
            SortKey::Bytes => "bytes",
            SortKey::Live => "live",
            SortKey::Name => "name",
        }
    }
}

/// The QoS filter: all pods, or one class.
pub const QOS_CYCLE: [Option<Qos>; 4] = [
    None,
    Some(Qos::Guaranteed),
    Some(Qos::Burstable),
    Some(Qos::Besteffort),
];

/// What the keys changed.
#[derive(Clone, Debug, Default)]
pub struct UiState {
    pub sort: SortKey,
    /// Substring of `namespace/name` or the UID (case-insensitive).
    pub filter: String,
    /// Index into [`QOS_CYCLE`].
    pub qos: usize,
    pub paused: bool,
    /// The filter being typed (after `/`).
    pub input: Option<String>,
    /// Colours and bold (off with `NO_COLOR`).
    pub color: bool,
}

impl UiState {
    /// Whether a pod row passes the filters.
    pub fn shows(&self, p: &PodRow) -> bool {
        if let Some(q) = QOS_CYCLE.get(self.qos).copied().flatten()
            && p.pod.stats.qos != Some(q)
        {
            return false;
        }
        if self.filter.is_empty() {
            return true;
        }
        let f = self.filter.to_lowercase();
        p.label().to_lowercase().contains(&f) || p.pod.stats.pod_uid.to_lowercase().contains(&f)
    }

    /// The pod rows to show, in order.
    pub fn pod_rows<'a>(&self, snap: &'a Snapshot) -> Vec<&'a PodRow> {
        let mut rows: Vec<&PodRow> = snap.pods.iter().filter(|p| self.shows(p)).collect();
        let age = |p: &PodRow| p.pod.oldest_dying_age_s.unwrap_or(-1.0);
        rows.sort_by(|a, b| {
            let o = match self.sort {
                SortKey::Dying => b.pod.stats.dying.cmp(&a.pod.stats.dying),
                SortKey::Oldest => age(b).total_cmp(&age(a)),
                SortKey::Bytes => b.dying_bytes.cmp(&a.dying_bytes),
                SortKey::Live => b.pod.stats.live.cmp(&a.pod.stats.live),
                SortKey::Name => a.label().cmp(&b.label()),
            };
            o.then_with(|| b.pod.stats.dying.cmp(&a.pod.stats.dying))
                .then_with(|| a.pod.stats.pod_uid.cmp(&b.pod.stats.pod_uid))
        });
        rows
    }
}

/// What the header says about the source.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// `live`, or the session file of a replay.
    pub replay: Option<String>,
    pub tier: String,
    pub kernel: String,
    /// A replay reached the end of its session.
    pub ended: bool,
}

fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// The last `width` values of a series, as the sparkline takes them.
fn tail(series: &[u64], width: u16) -> &[u64] {
    let w = usize::from(width);
    &series[series.len().saturating_sub(w)..]
}

/// The screen's styles (plain ones without colour).
#[derive(Clone, Copy)]
struct Styles {
    color: bool,
    bold: Style,
    head: Style,
    warn: Style,
    bad: Style,
}

impl Styles {
    fn new(color: bool) -> Styles {
        let st = |s: Style| if color { s } else { Style::default() };
        Styles {
            color,
            bold: st(Style::default().add_modifier(Modifier::BOLD)),
            head: st(Style::default().add_modifier(Modifier::REVERSED)),
            warn: st(Style::default().yellow()),
            bad: st(Style::default().red().add_modifier(Modifier::BOLD)),
        }
    }

    /// `s`, or the plain style without colour.
    fn st(self, s: Style) -> Style {
        if self.color { s } else { Style::default() }
    }
}

/// Draws the whole screen.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    f: &mut Frame<'_>,
    snap: &Snapshot,
    shapes: &[ShapeWindowRow],
    window_s: usize,
    churn: &[u64],
    dying: &[u64],
    ui: &UiState,
    src: &Source,
) {
    let styles = Styles::new(ui.color);
    let [top, spark, body, keys] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(3),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let header = vec![
        title_line(snap, ui, src, styles),
        memcgs_line(snap, styles),
        churn_line(snap, styles),
    ];
    f.render_widget(Paragraph::new(header), top);
    draw_sparklines(f, spark, churn, dying, styles);
    draw_body(f, body, snap, shapes, window_s, ui, styles.head);
    f.render_widget(Paragraph::new(keys_line(ui, styles.bold)), keys);
}

/// Header: source and state first (a narrow terminal cuts the end), then the run's facts.
fn title_line(snap: &Snapshot, ui: &UiState, src: &Source, styles: Styles) -> Line<'static> {
    let mut title = vec![
        Span::styled("cgtrace top", styles.bold),
        Span::raw(format!(
            " — {} · t+{}",
            if src.replay.is_some() {
                "replay"
            } else {
                "live"
            },
            human_secs(snap.elapsed_s)
        )),
    ];
    if ui.paused {
        title.push(Span::styled(" · PAUSED", styles.warn));
    }
    if src.ended {
        title.push(Span::styled(" · end of session", styles.warn));
    }
    title.push(Span::raw(format!(
        " · tier {} · kernel {}",
        escape::terminal(&src.tier),
        escape::terminal(&src.kernel)
    )));
    if let Some(file) = &src.replay {
        title.push(Span::raw(format!(" · {}", escape::terminal(file))));
    }
    Line::from(title)
}

/// The memcgs by state, the ID headroom, the failed mkdirs and the OOM kills.
fn memcgs_line(snap: &Snapshot, styles: Styles) -> Line<'static> {
    let bad = styles.bad;
    let t = &snap.totals;
    let headroom = match snap.id_headroom {
        Some(h) => h.to_string(),
        None => "unknown".to_string(),
    };
    let headroom_style = match snap.id_headroom {
        Some(h) if h < 10_000 => bad,
        _ => Style::default(),
    };
    let failed = with_commonest(
        snap.failed_mkdirs,
        snap.failed_by_errno.iter().map(|(e, n)| (e.as_str(), *n)),
    );
    Line::from(vec![
        Span::raw(format!(
            "memcgs: live {} · dying {} · freed {} · ID headroom ",
            t.live, t.dying, t.freed
        )),
        Span::styled(headroom, headroom_style),
        Span::raw(" · failed mkdirs "),
        Span::styled(
            failed,
            if snap.failed_mkdirs > 0 {
                bad
            } else {
                Style::default()
            },
        ),
        Span::raw(" · OOM kills "),
        Span::styled(
            oom_kills(snap),
            if snap.oom_kills > 0 {
                bad
            } else {
                Style::default()
            },
        ),
    ])
}

/// Churn, events, lost events, and the memcgs that were dying before start.
fn churn_line(snap: &Snapshot, styles: Styles) -> Line<'static> {
    let t = &snap.totals;
    Line::from(vec![
        Span::raw(format!(
            "churn {}/s · events {} · lost ",
            rate(snap.churn_per_s),
            snap.events
        )),
        Span::styled(
            snap.lost.to_string(),
            if snap.lost > 0 {
                styles.bad
            } else {
                Style::default()
            },
        ),
        Span::raw(format!(
            " · dying before start {} ({} freed since)",
            t.dying_before_start, t.freed_before_start
        )),
    ])
}

/// Sparklines: churn and dying memcgs over time, one column per sample.
fn draw_sparklines(f: &mut Frame<'_>, area: Rect, churn: &[u64], dying: &[u64], styles: Styles) {
    let [s1, s2] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let inner = s1.width.saturating_sub(2);
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(
                "churn/s (max {})",
                tail(churn, inner).iter().max().unwrap_or(&0)
            )))
            .data(tail(churn, inner))
            .style(styles.st(Style::default().cyan())),
        s1,
    );
    let inner = s2.width.saturating_sub(2);
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(format!(
                "dying memcgs (max {})",
                tail(dying, inner).iter().max().unwrap_or(&0)
            )))
            .data(tail(dying, inner))
            .style(styles.st(Style::default().magenta())),
        s2,
    );
}

/// Body: pods on the left, shapes and lifetimes on the right (below each other when narrow).
fn draw_body(
    f: &mut Frame<'_>,
    body: Rect,
    snap: &Snapshot,
    shapes: &[ShapeWindowRow],
    window_s: usize,
    ui: &UiState,
    head: Style,
) {
    let (pods_area, right) = if body.width >= 150 {
        let [a, b] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
            .areas(body);
        (a, b)
    } else {
        let [a, b] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
        (a, b)
    };
    draw_pods(f, pods_area, snap, ui, head);
    let [shapes_area, life_area] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    draw_shapes(f, shapes_area, shapes, window_s, head);
    draw_lifetimes(f, life_area, snap, head);
}

/// Keys, or the filter being typed.
fn keys_line(ui: &UiState, bold: Style) -> Line<'static> {
    match &ui.input {
        Some(s) => Line::from(vec![
            Span::styled("filter pods: ", bold),
            Span::raw(escape::terminal(s)),
            Span::raw("▏  (Enter apply · Esc cancel)"),
        ]),
        None => Line::from(format!(
            "q quit · p {} · s sort ({}) · / filter{} · f QoS ({}) · c clear",
            if ui.paused { "resume" } else { "pause" },
            ui.sort.name(),
            if ui.filter.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape::terminal(&ui.filter))
            },
            QOS_CYCLE
                .get(ui.qos)
                .copied()
                .flatten()
                .map_or("all", |q| q.as_str())
        )),
    }
}

fn draw_pods(f: &mut Frame<'_>, area: Rect, snap: &Snapshot, ui: &UiState, head: Style) {
    let rows = ui.pod_rows(snap);
    let shown = rows.len();
    let header = Row::new(["DYING", "OLDEST", "BYTES", "LIVE", "FREED", "QOS", "POD"]).style(head);
    let body = rows.into_iter().map(|p| {
        Row::new(vec![
            Cell::from(p.pod.stats.dying.to_string()),
            Cell::from(p.pod.oldest_dying_age_s.map_or("-".to_string(), human_secs)),
            Cell::from(p.dying_bytes.map_or("-".to_string(), human_bytes)),
            Cell::from(p.pod.stats.live.to_string()),
            Cell::from(p.pod.stats.freed.to_string()),
            Cell::from(Qos::name(p.pod.stats.qos)),
            Cell::from(escape::terminal(&p.label())),
        ])
    });
    let table = Table::new(
        body,
        [
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(11),
            Constraint::Min(20),
        ],
    )
    .header(header)
    .block(Block::bordered().title(format!(
        "pods by dying memcgs ({shown} of {}, sort: {})",
        snap.pods.len(),
        ui.sort.name()
    )));
    f.render_widget(table, area);
}

fn draw_shapes(
    f: &mut Frame<'_>,
    area: Rect,
    shapes: &[ShapeWindowRow],
    window_s: usize,
    head: Style,
) {
    let header = Row::new(["NOW/s", "MKDIR/s", "RMDIR/s", "NAME SHAPE"]).style(head);
    let rows = shapes.iter().map(|s| {
        Row::new(vec![
            Cell::from(rate(s.now_per_s)),
            Cell::from(rate(s.mkdirs_per_s)),
            Cell::from(rate(s.rmdirs_per_s)),
            Cell::from(escape::terminal(&s.shape)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(Block::bordered().title(format!(
        "cgroup churn by name shape (last second; mean of {window_s}s)"
    )));
    f.render_widget(table, area);
}

fn draw_lifetimes(f: &mut Frame<'_>, area: Rect, snap: &Snapshot, head: Style) {
    let header = Row::new(["PHASE", "QOS", "COUNT", "P50", "P90", "P99", "MAX"]).style(head);
    let rows = snap.lifetimes.iter().map(|l| {
        Row::new(vec![
            Cell::from(l.phase),
            Cell::from(l.qos),
            Cell::from(l.count.to_string()),
            Cell::from(human_ns(l.p50_ns)),
            Cell::from(human_ns(l.p90_ns)),
            Cell::from(human_ns(l.p99_ns)),
            Cell::from(human_ns(l.max_ns)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
        ],
    )
    .header(header)
    .block(Block::bordered().title("memcg lifetimes"));
    f.render_widget(table, area);
}

/// OOM kills since start, with the three commonest constraints (`none` is node-wide).
fn oom_kills(snap: &Snapshot) -> String {
    with_commonest(snap.oom_kills, snap.oom_by_constraint.iter().copied())
}

/// `total`, then the three commonest of its parts (already sorted, most first): `5 (a 3, b 2)`.
fn with_commonest<'a>(total: u64, parts: impl Iterator<Item = (&'a str, u64)>) -> String {
    total_and_parts(total, parts.take(3).map(|(k, n)| format!("{k} {n}")))
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::model::tracker::{PodStats, PodSummary};

    fn snap() -> Snapshot {
        Snapshot {
            pods: vec![
                PodRow {
                    pod: PodSummary {
                        stats: PodStats {
                            pod_uid: "aaaa".into(),
                            namespace: Some("prod".into()),
                            name: Some("web\x1b[31m".into()),
                            qos: Some(Qos::Burstable),
                            live: 2,
                            dying: 3,
                            freed: 1,
                            ..PodStats::default()
                        },
                        oldest_dying_age_s: Some(75.0),
                    },
                    dying_bytes: Some(4 << 20),
                },
                PodRow {
                    pod: PodSummary {
                        stats: PodStats {
                            pod_uid: "bbbb".into(),
                            qos: Some(Qos::Besteffort),
                            live: 9,
                            dying: 1,
                            ..PodStats::default()
                        },
                        oldest_dying_age_s: Some(5.0),
                    },
                    dying_bytes: None,
                },
            ],
            id_headroom: Some(65_000),
            oom_kills: 3,
            oom_by_constraint: vec![("memcg", 2), ("none", 1)],
            ..Snapshot::default()
        }
    }

    fn screen(ui: &UiState, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap_or_else(|e| panic!("{e}"));
        let shapes = [ShapeWindowRow {
            shape: "job-<n>".into(),
            now_per_s: 50.0,
            mkdirs_per_s: 40.0,
            rmdirs_per_s: 39.0,
        }];
        t.draw(|f| {
            draw(
                f,
                &snap(),
                &shapes,
                10,
                &[1, 5, 3],
                &[0, 1, 4],
                ui,
                &Source::default(),
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let buf = t.backend().buffer().clone();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    #[test]
    fn shows_pods_shapes_and_escapes_names() {
        let s = screen(&UiState::default(), 130, 30);
        assert!(s.contains("prod/web\\x1b[31m"), "{s}");
        assert!(!s.contains('\x1b'));
        assert!(s.contains("job-<n>"), "{s}");
        assert!(s.contains("4.0 MiB"), "{s}");
        assert!(s.contains("1m 15s"), "{s}");
        assert!(s.contains("ID headroom 65000"), "{s}");
        assert!(s.contains("OOM kills 3 (memcg 2, none 1)"), "{s}");
    }

    #[test]
    fn sorts_and_filters() {
        let sn = snap();
        let mut ui = UiState::default();
        let uids = |ui: &UiState| -> Vec<String> {
            ui.pod_rows(&sn)
                .iter()
                .map(|p| p.pod.stats.pod_uid.clone())
                .collect()
        };
        assert_eq!(uids(&ui), ["aaaa", "bbbb"]);
        ui.sort = SortKey::Live;
        assert_eq!(uids(&ui), ["bbbb", "aaaa"]);
        ui.filter = "PROD".into();
        assert_eq!(uids(&ui), ["aaaa"]);
        ui.filter.clear();
        ui.qos = 3; // besteffort
        assert_eq!(uids(&ui), ["bbbb"]);
    }

    #[test]
    fn draws_in_a_tiny_terminal() {
        let s = screen(&UiState::default(), 20, 5);
        assert!(!s.is_empty());
    }
}
