//! Statistics of the rounds and the report's table.
use std::fmt::Write as _;

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

#[derive(Clone, Copy, Debug)]
pub(super) struct Stats {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) n: usize,
}

pub(super) fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// 1234567 → "1,234,567".
pub(super) fn grouped(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn millions(v: f64) -> String {
    format!("{:.2} M", v / 1e6)
}

pub(super) fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// One line of the table.
pub(super) struct Row {
    pub(super) figure: String,
    pub(super) cells: Cells,
}

pub(super) enum Cells {
    Measured {
        stats: Stats,
        fmt: fn(f64) -> String,
        target: String,
        /// Whether the median meets the target (None: no target).
        met: Option<bool>,
    },
    /// Not measured, with why.
    Note(String),
}

impl Row {
    pub(super) fn measured(figure: impl Into<String>, stats: Stats, fmt: fn(f64) -> String) -> Row {
        Row {
            figure: figure.into(),
            cells: Cells::Measured {
                stats,
                fmt,
                target: "—".into(),
                met: None,
            },
        }
    }

    pub(super) fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        if let Cells::Measured {
            target: t, met: m, ..
        } = &mut self.cells
        {
            *t = target.into();
            *m = Some(met);
        }
        self
    }

    pub(super) fn note(figure: impl Into<String>, why: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            cells: Cells::Note(why.into()),
        }
    }
}

pub(super) fn ratio(v: f64) -> String {
    format!("{v:.3}")
}

pub(super) fn per_s(v: f64) -> String {
    format!("{}/s", grouped(v))
}

pub(super) fn events_per_s(v: f64) -> String {
    format!("{}/s", millions(v))
}

pub(super) fn count(v: f64) -> String {
    grouped(v)
}

pub(super) fn bytes(v: f64) -> String {
    format!("{v:.0} B")
}

pub(super) fn bytes_1(v: f64) -> String {
    format!("{v:.1} B")
}

pub(super) fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

pub(super) fn ring(v: f64) -> String {
    size_name(v as u64)
}

pub(super) fn nanos(v: f64) -> String {
    format!("{v:.0} ns")
}

pub(super) fn percent(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

pub(super) fn render_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| figure | median | min | max | n | target | |\n|---|---:|---:|---:|---:|---|---|\n",
    );
    for r in rows {
        match &r.cells {
            Cells::Measured {
                stats,
                fmt,
                target,
                met,
            } => {
                let verdict = match met {
                    Some(true) => "met",
                    Some(false) => "**not met**",
                    None => "",
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.figure,
                    fmt(stats.median),
                    fmt(stats.min),
                    fmt(stats.max),
                    stats.n,
                    target,
                    verdict
                );
            }
            Cells::Note(why) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | | | | | |",
                    r.figure,
                    why.replace('|', "\\|")
                );
            }
        }
    }
    s
}
