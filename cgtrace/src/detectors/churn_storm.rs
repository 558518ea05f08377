//! `churn_storm`: many cgroups per second with the same name shape. Each path counts once across
//! hierarchies: a mkdir (rmdir) of a path already counted in another hierarchy less than
//! [`DetectorConfig::churn_dedup`] earlier is the same creation seen through another v1
//! hierarchy, so it is not counted again.
use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::{
    Ctx, DetectorConfig, Evidence, NS_PER_S, Severity, Verdict, ns,
    shape::{MAX_SHAPE_LEN, normalise_leaf},
    window::Ring,
};
use crate::{
    format::{escape::terminal, units::human_secs, units::round_millis},
    model::{event::Event, hash::hash_bytes},
};

/// Most name shapes tracked.
pub(super) const MAX_SHAPES: usize = 512;
/// Example paths kept per shape.
const SHAPE_EXAMPLES: usize = 3;
/// Slots of the direct-mapped cache that dedupes a path across hierarchies.
const DEDUP_SLOTS: usize = 4096;
/// Buckets of the churn window.
const CHURN_BUCKETS: u64 = 10;
/// Most verdicts in one list.
const MAX_CHURN_VERDICTS: usize = 5;

/// What a `churn_storm` verdict rests on.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChurnStormEvidence {
    /// Cgroups of the shape created within the window.
    pub count: u64,
    /// Seconds of event time the window covers.
    pub window_s: f64,
    /// Creations per second within the window.
    pub rate_per_s: f64,
    /// The normalised leaf name (`<n>` digits, `<hex>` ids, `<uid>` UUIDs).
    pub shape: String,
    /// Cgroups of that shape removed within the window.
    pub removed: u64,
    /// Mean mkdir → rmdir time of those, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_lifetime_s: Option<f64>,
    /// The process that made the latest one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Example paths (at most 3), newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub example_paths: Vec<String>,
}

/// Creations and removals of one name shape per bucket.
#[derive(Clone, Copy, Debug, Default)]
struct ChurnSlot {
    mkdirs: u64,
    rmdirs: u64,
    /// Removals whose creation was seen, and the sum of their lifetimes.
    lived: u64,
    live_ns: u64,
}

/// One cgroup of a shape, as an example.
#[derive(Clone, Debug)]
struct Example {
    ts: u64,
    path: Box<str>,
    comm: Box<str>,
    pid: u32,
}

/// One name shape.
#[derive(Clone, Debug)]
struct Shape {
    ring: Ring<ChurnSlot>,
    /// Oldest first.
    examples: VecDeque<Example>,
    last_ns: u64,
}

/// What the dedupe cache remembers of one path.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    hash: u64,
    mk_ns: u64,
    mk_mask: u64,
    rm_ns: u64,
    rm_mask: u64,
}

/// A shape over the threshold, as found.
struct Storm<'a> {
    rate: f64,
    name: &'a str,
    counts: ChurnSlot,
    span_s: f64,
    shape: &'a Shape,
}

/// The detector's state: the shapes, and the cache that dedupes paths across hierarchies.
pub(super) struct ChurnStorm {
    width: u64,
    shapes: HashMap<Box<str>, Shape>,
    seen: Vec<Seen>,
    shape_buf: String,
}

impl ChurnStorm {
    pub(super) fn new(cfg: &DetectorConfig) -> Self {
        ChurnStorm {
            width: (ns(cfg.churn_window) / CHURN_BUCKETS).max(1),
            shapes: HashMap::new(),
            seen: vec![Seen::default(); DEDUP_SLOTS],
            shape_buf: String::with_capacity(MAX_SHAPE_LEN + 8),
        }
    }

    /// How many shapes are tracked.
    #[cfg(test)]
    pub(super) fn shapes_tracked(&self) -> usize {
        self.shapes.len()
    }

    fn window_ns(&self) -> u64 {
        self.width * CHURN_BUCKETS
    }

    /// Counts a mkdir or rmdir (`removal`, with the cgroup's lifetime when its mkdir was seen)
    /// of a path once across hierarchies, per name shape.
    pub(super) fn observe(
        &mut self,
        ev: &Event<'_>,
        removal: bool,
        live_ns: Option<u64>,
        cfg: &DetectorConfig,
    ) {
        if !ev.has_cgroup {
            return;
        }
        let leaf = match ev.path.iter().rposition(|&c| c == b'/') {
            Some(i) => &ev.path[i + 1..],
            None => ev.path,
        };
        if leaf.is_empty() || self.seen_elsewhere(ev, removal, ns(cfg.churn_dedup)) {
            return;
        }
        normalise_leaf(leaf, &mut self.shape_buf);
        if !self.shapes.contains_key(self.shape_buf.as_str()) {
            if removal {
                return; // removals only add to shapes already seen created
            }
            self.add_shape(ev.ts_ns);
        }
        let window = self.window_ns();
        let Some(shape) = self.shapes.get_mut(self.shape_buf.as_str()) else {
            return;
        };
        shape.count(ev, removal, live_ns, window);
    }

    /// Whether this mkdir (rmdir) is one already counted through another hierarchy within
    /// `dedup` ns; remembers it otherwise.
    fn seen_elsewhere(&mut self, ev: &Event<'_>, removal: bool, dedup: u64) -> bool {
        let ts = ev.ts_ns;
        let hash = hash_bytes(ev.path);
        let bit = 1u64 << (ev.hierarchy_id % 64);
        let seen = &mut self.seen[(hash % DEDUP_SLOTS as u64) as usize];
        let (last, mask) = if removal {
            (&mut seen.rm_ns, &mut seen.rm_mask)
        } else {
            (&mut seen.mk_ns, &mut seen.mk_mask)
        };
        if seen.hash == hash && ts.abs_diff(*last) <= dedup && *mask & bit == 0 {
            *mask |= bit; // the same cgroup through another hierarchy
            return true;
        }
        if seen.hash != hash {
            *seen = Seen {
                hash,
                ..Seen::default()
            };
        }
        let (last, mask) = if removal {
            (&mut seen.rm_ns, &mut seen.rm_mask)
        } else {
            (&mut seen.mk_ns, &mut seen.mk_mask)
        };
        *last = ts;
        *mask = bit;
        false
    }

    /// Starts tracking the shape in `shape_buf`, first making room for it.
    fn add_shape(&mut self, ts: u64) {
        self.make_room_for_shape(ts);
        let ring = Ring::new(self.width, CHURN_BUCKETS);
        self.shapes.insert(
            self.shape_buf.as_str().into(),
            Shape {
                ring,
                examples: VecDeque::with_capacity(SHAPE_EXAMPLES),
                last_ns: ts,
            },
        );
    }

    /// Drops shapes idle for a window; when none is, the one with the fewest recent creations.
    fn make_room_for_shape(&mut self, now: u64) {
        if self.shapes.len() < MAX_SHAPES {
            return;
        }
        let window = self.window_ns();
        self.shapes
            .retain(|_, s| now.saturating_sub(s.last_ns) <= window);
        if self.shapes.len() < MAX_SHAPES {
            return;
        }
        let victim = self
            .shapes
            .iter()
            .map(|(k, s)| {
                let n: u64 = s.ring.buckets(now).map(|b| b.mkdirs).sum();
                (n, s.last_ns, k)
            })
            .min()
            .map(|(_, _, k)| k.clone());
        if let Some(k) = victim {
            self.shapes.remove(&k);
        }
    }

    pub(super) fn verdicts(&self, cx: &Ctx<'_>) -> Vec<Verdict> {
        let mut found = self.storms(cx);
        found.sort_by(|a, b| b.rate.total_cmp(&a.rate).then_with(|| a.name.cmp(b.name)));
        found
            .into_iter()
            .take(MAX_CHURN_VERDICTS)
            .map(|s| s.verdict(cx.cfg))
            .collect()
    }

    /// The shapes created faster than the threshold over the window.
    fn storms(&self, cx: &Ctx<'_>) -> Vec<Storm<'_>> {
        let (cfg, now) = (cx.cfg, cx.now);
        let window_s = self.window_ns() as f64 / NS_PER_S;
        let min_count = cfg.churn_rate * window_s;
        let mut found = Vec::new();
        for (name, shape) in &self.shapes {
            let mut c = ChurnSlot::default();
            for b in shape.ring.buckets(now) {
                c.mkdirs += b.mkdirs;
                c.rmdirs += b.rmdirs;
                c.lived += b.lived;
                c.live_ns = c.live_ns.saturating_add(b.live_ns);
            }
            if c.mkdirs == 0 || (c.mkdirs as f64) < min_count {
                continue;
            }
            let (start, end) = shape.ring.window(now);
            let span = end.saturating_sub(start.max(cx.first_ns.unwrap_or(start)));
            if span == 0 {
                continue;
            }
            let span_s = span as f64 / NS_PER_S;
            let rate = c.mkdirs as f64 / span_s;
            if rate < cfg.churn_rate {
                continue;
            }
            found.push(Storm {
                rate,
                name,
                counts: c,
                span_s,
                shape,
            });
        }
        found
    }
}

impl Shape {
    /// Counts a mkdir or rmdir of this shape, keeping the mkdir as an example when there is room
    /// or the oldest example is older than `window`.
    fn count(&mut self, ev: &Event<'_>, removal: bool, live_ns: Option<u64>, window: u64) {
        let ts = ev.ts_ns;
        self.last_ns = self.last_ns.max(ts);
        if let Some(s) = self.ring.at(ts) {
            if !removal {
                s.mkdirs += 1;
            } else {
                s.rmdirs += 1;
                if let Some(l) = live_ns {
                    s.lived += 1;
                    s.live_ns = s.live_ns.saturating_add(l);
                }
            }
        }
        if removal {
            return;
        }
        let stale = self
            .examples
            .front()
            .is_some_and(|x| ts.saturating_sub(x.ts) > window);
        if self.examples.len() < SHAPE_EXAMPLES || stale {
            if self.examples.len() >= SHAPE_EXAMPLES {
                self.examples.pop_front();
            }
            self.examples.push_back(Example {
                ts,
                path: String::from_utf8_lossy(ev.path).into(),
                comm: String::from_utf8_lossy(ev.comm).into(),
                pid: ev.pid,
            });
        }
    }
}

impl Storm<'_> {
    fn verdict(&self, cfg: &DetectorConfig) -> Verdict {
        let c = &self.counts;
        let (mkdirs, rmdirs) = (c.mkdirs, c.rmdirs);
        let mean_life = (c.lived > 0).then(|| c.live_ns as f64 / c.lived as f64 / NS_PER_S);
        let life_txt = match mean_life {
            Some(l) => format!(", {rmdirs} removed after {} on average", human_secs(l)),
            None => String::new(),
        };
        let summary = format!(
            "{:.1} cgroups/s named like {} created ({mkdirs} in {}{life_txt})",
            self.rate,
            terminal(self.name),
            human_secs(self.span_s),
        );
        let examples = &self.shape.examples;
        Verdict {
            detector: "churn_storm",
            severity: if self.rate >= cfg.churn_critical_rate {
                Severity::Critical
            } else {
                Severity::Warning
            },
            summary,
            evidence: Evidence::ChurnStorm(ChurnStormEvidence {
                count: mkdirs,
                window_s: round_millis(self.span_s),
                rate_per_s: round_millis(self.rate),
                shape: self.name.to_string(),
                removed: rmdirs,
                mean_lifetime_s: mean_life.map(round_millis),
                comm: examples.back().map(|x| x.comm.to_string()),
                pid: examples.back().map(|x| x.pid),
                example_paths: examples.iter().rev().map(|x| x.path.to_string()).collect(),
            }),
            recommendation: recommendation(self.name),
        }
    }
}

fn recommendation(shape: &str) -> String {
    let mut r = String::from(
        "Something creates and removes cgroups in a tight loop: the process shown made the \
         latest one (systemd when it creates a unit's cgroup on someone's behalf; then the name \
         says who asked); watch them with `cgtrace live --path-prefix <parent>`. Storms cost \
         systemd and the kernel CPU (cgroup locks), and on kernels that keep dying memcgs every \
         created memory cgroup can leave one behind.",
    );
    if shape.starts_with("libcontainer_") && shape.contains("systemd_test_default") {
        r.push_str(
            " This shape is runc probing systemd with a throw-away slice on every invocation, \
             including each `runc exec` of a Kubernetes exec probe (older runc with the systemd \
             cgroup driver): upgrade runc (and the containerd or docker that ships it), or use \
             fewer or slower exec probes.",
        );
    }
    r
}
