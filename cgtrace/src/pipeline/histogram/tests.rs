use super::*;
use base64::Engine as _;
use hdrhistogram::serialization::{
    Deserializer,
    interval_log::{IntervalLogIterator, LogEntry},
};

const MS: u64 = 1_000_000;

fn labels(id: u32) -> String {
    match id {
        0 => "unified".into(),
        3 => "cpu,cpuacct".into(),
        4 => "memory".into(),
        n => format!("hierarchy{n}"),
    }
}

fn live(memcg: bool, qos: Option<Qos>, ns: u64) -> Observed {
    Observed {
        memcg,
        qos,
        live_ns: Some(ns),
        ..Observed::default()
    }
}

fn dying(memcg: bool, qos: Option<Qos>, ns: u64) -> Observed {
    Observed {
        memcg,
        qos,
        dying_ns: Some(ns),
        ..Observed::default()
    }
}

/// A 64-bit LCG (Knuth's MMIX constants) → uniform (0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next(), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn assert_close(what: &str, got: u64, want: f64, rel: f64) {
    let err = (got as f64 - want).abs() / want;
    assert!(err <= rel, "{what}: got {got}, want {want} (±{rel})");
}

/// The sample's own quantile (nearest rank), to compare hdr's estimate with.
fn exact_quantile(sorted: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

#[test]
fn uniform_percentiles() {
    let mut l = Lifetimes::new(Some(4));
    for ms in 1..=1000u64 {
        l.record(4, &live(true, Some(Qos::Burstable), ms * MS));
    }
    for h in [
        &l.hierarchy(4).expect("memory").live,
        &l.qos(Some(Qos::Burstable)).expect("burstable").live,
    ] {
        assert_eq!(h.len(), 1000);
        assert_close("p50", h.value_at_quantile(0.5), 500.0 * MS as f64, 0.001);
        assert_close("p90", h.value_at_quantile(0.9), 900.0 * MS as f64, 0.001);
        assert_close("p99", h.value_at_quantile(0.99), 990.0 * MS as f64, 0.001);
        assert_close("max", h.max(), 1000.0 * MS as f64, 0.001);
        assert_eq!(h.min(), h.lowest_equivalent(MS));
    }
    assert!(l.hierarchy(4).is_some_and(|p| p.dying.is_empty()));
    assert!(l.qos(None).is_none(), "no unattributed memcgs recorded");
}

#[test]
fn exponential_and_lognormal_match_their_samples() {
    let mut rng = Lcg(42);
    let mut l = Lifetimes::new(Some(4));
    // Exponential dying times, mean 10 s: median 10 s · ln 2.
    let mean = 10e9;
    let mut exp: Vec<u64> = (0..100_000)
        .map(|_| (-mean * rng.next().ln()) as u64)
        .collect();
    for &v in &exp {
        l.record(4, &dying(true, Some(Qos::Besteffort), v));
    }
    // Log-normal live times of non-memory cgroups: median e^μ = 2 ms, σ = 1.5.
    let mu = (2.0 * MS as f64).ln();
    let mut logn: Vec<u64> = (0..100_000)
        .map(|_| (mu + 1.5 * rng.normal()).exp() as u64)
        .collect();
    for &v in &logn {
        l.record(3, &live(false, None, v));
    }
    exp.sort_unstable();
    logn.sort_unstable();
    let he = &l.qos(Some(Qos::Besteffort)).expect("qos").dying;
    let hl = &l.hierarchy(3).expect("cpu").live;
    assert_close(
        "exp median",
        he.value_at_quantile(0.5),
        mean * 2f64.ln(),
        0.02,
    );
    assert_close(
        "lognormal median",
        hl.value_at_quantile(0.5),
        2.0 * MS as f64,
        0.02,
    );
    for q in [0.5, 0.9, 0.99, 0.999] {
        // hdr keeps 3 significant digits: within 0.1 % of the sample's own quantile.
        assert_close(
            "exp",
            he.value_at_quantile(q),
            exact_quantile(&exp, q),
            0.001,
        );
        assert_close(
            "logn",
            hl.value_at_quantile(q),
            exact_quantile(&logn, q),
            0.001,
        );
    }
    // Non-memcgs stay out of the QoS histograms.
    assert!(l.qos(None).is_none());
    assert_eq!(l.hierarchy(4).expect("memory").dying.len(), 100_000);
}

#[test]
fn memcg_lifetimes_go_to_the_memory_hierarchy() {
    let mut l = Lifetimes::new(Some(4));
    // A css_free without cgroup fields carries hierarchy id 0: still the memory hierarchy's.
    l.record(0, &dying(true, None, 5 * MS));
    l.record(0, &dying(false, None, 7 * MS));
    l.record(4, &Observed::default());
    assert_eq!(l.hierarchy(4).map(|p| p.dying.len()), Some(1));
    assert_eq!(l.hierarchy(0).map(|p| p.dying.len()), Some(1));
    assert_eq!(l.qos(None).map(|p| p.dying.len()), Some(1));
    // Very long and zero lifetimes are kept.
    l.record(4, &live(true, None, 90 * 24 * 3600 * 1_000_000_000));
    l.record(4, &live(true, None, 0));
    let h = &l.hierarchy(4).expect("memory").live;
    assert_eq!(h.len(), 2);
    assert_close("90 days", h.max(), 90.0 * 86400e9, 0.001);
}

#[test]
fn bounds_are_increasing_and_round() {
    let b = bucket_bounds();
    assert!(b.windows(2).all(|w| w[0] < w[1]));
    let labels: Vec<String> = b.iter().map(|&v| human_ns(v)).collect();
    for want in [
        "1ns", "512ns", "1µs", "1ms", "512ms", "1s", "32s", "1min", "32min", "1h",
    ] {
        assert!(labels.iter().any(|l| l == want), "{want} in {labels:?}");
    }
    assert!(*b.last().expect("bounds") > u64::MAX / 2);
}

#[test]
fn render_buckets_sum_to_the_count() {
    let mut rng = Lcg(7);
    let mut l = Lifetimes::new(Some(4));
    for ms in 1..=1000u64 {
        l.record(4, &live(true, Some(Qos::Guaranteed), ms * MS));
    }
    for _ in 0..5000 {
        let v = (-(3e9f64) * rng.next().ln()) as u64;
        l.record(2, &dying(false, None, v));
    }
    for (_, _, h) in l.histograms() {
        let total: u64 = bucket_counts(h).iter().map(|&(_, c)| c).sum();
        assert_eq!(total, h.len());
    }
    let text = l.render_terminal(&labels);
    // Parse the bucket lines back: their counts add up to each title's count.
    let mut sections = 0;
    let mut expected = None;
    let mut sum = 0u64;
    for line in text.lines().chain([""]) {
        if let Some((_, rest)) = line.split_once(": ")
            && line.contains("time (")
        {
            let n: u64 = rest
                .strip_prefix("count ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .expect("count");
            expected = Some(n);
            sum = 0;
        } else if line.starts_with('[') {
            let count: u64 = line
                .split_once(") ")
                .and_then(|(_, r)| r.split('|').next())
                .and_then(|c| c.trim().parse().ok())
                .expect("bucket count");
            sum += count;
            assert!(line.ends_with('|'));
        } else if let Some(n) = expected.take() {
            assert_eq!(sum, n, "{text}");
            sections += 1;
        }
    }
    // memory live, qos guaranteed live, hierarchy 2 dying.
    assert_eq!(sections, 3, "{text}");
    assert!(
        text.contains("live time (mkdir → rmdir), memory: count 1000  p50 500ms"),
        "{text}"
    );
    assert!(
        text.contains("p50 500ms  p90 900ms  p99 990ms  max 1s"),
        "{text}"
    );
    assert!(text.contains("qos guaranteed (memcgs)"), "{text}");
    let full = text
        .lines()
        .skip_while(|l| !l.contains(", memory: "))
        .find(|l| l.starts_with("[512ms, 1s)"))
        .expect("the 512ms bucket");
    assert!(full.contains(" 488 |"), "512..=999 ms: {full}");
    assert!(
        full.contains(&"@".repeat(BAR_WIDTH)),
        "the fullest bucket fills the bar: {text}"
    );
    assert!(text.contains("[1ms, 2ms)"), "{text}");
}

#[test]
fn render_empty_and_pods() {
    use crate::model::tracker::tests::{UID, ev};
    use cgtrace_common::EventKind;

    let l = Lifetimes::new(None);
    assert!(l.is_empty());
    assert_eq!(
        l.render_terminal(&labels),
        "no cgroup lifetimes recorded yet\n"
    );

    let mut t = Tracker::new(Some(4));
    let pod = format!("/kubepods/burstable/pod{UID}");
    let c1 = format!("{pod}/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    let mut l = Lifetimes::new(t.memory_hierarchy());
    for e in [
        ev(EventKind::Mkdir, 1_000, 4, 100, pod.as_bytes()),
        ev(EventKind::Mkdir, 2_000, 4, 101, c1.as_bytes()),
        ev(EventKind::Rmdir, 3_000_000_000, 4, 101, c1.as_bytes()),
        ev(EventKind::Mkdir, 3_500_000_000, 4, 102, b"/system.slice/x"),
    ] {
        let obs = t.observe(&e);
        l.record(e.hierarchy_id, &obs);
    }
    t.set_pod_name(UID, "default", "web\x1b[2J");
    l.update_pods(&t);
    assert_eq!(l.pods().len(), 1);
    assert_eq!(l.pods()[0].stats.dying, 1);
    assert_eq!(l.pods()[0].oldest_dying_age_s, Some(0.5));
    let text = l.render_terminal(&labels);
    assert!(text.contains("pods with the most dying memcgs:"), "{text}");
    assert!(
        text.contains(&format!("default/web\\x1b[2J ({UID})")),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "escaped: {text}");
    assert!(text.contains("burstable"), "{text}");
    assert!(text.contains("500ms"), "{text}");
    assert!(
        text.contains("live time (mkdir → rmdir), memory: count 1  p50 3s"),
        "{text}"
    );
}

/// Parses an interval log: per tag, the interval histograms in order.
fn parse_log(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<(f64, f64, Histogram<u64>)>> {
    let mut out: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(bytes) {
        match entry.expect("parses") {
            LogEntry::Interval(i) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(i.encoded_histogram())
                    .expect("base64");
                let h: Histogram<u64> = de.deserialize(&mut &raw[..]).expect("deserializes");
                out.entry(i.tag().expect("tagged").as_str().to_string())
                    .or_default()
                    .push((
                        i.start_timestamp().as_secs_f64(),
                        i.duration().as_secs_f64(),
                        h,
                    ));
            }
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
        }
    }
    out
}

#[test]
fn interval_log_round_trips() {
    let mut rng = Lcg(99);
    let mut l = Lifetimes::new(Some(4));
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut w = HdrLogWriter::new(Vec::new(), start, labels).expect("header");
    let mut fed: HashMap<&str, u64> = HashMap::new();
    for round in 0..3u64 {
        for i in 0..(100 * (round + 1)) {
            let v = (-(2e9f64) * rng.next().ln()) as u64 + 1;
            let qos = Qos::CLASSES[(i % 4) as usize];
            l.record(4, &live(true, qos, v));
            l.record(4, &dying(true, qos, v / 3));
            l.record(3, &live(false, None, v * 2));
            *fed.entry("live.memory").or_default() += 1;
            *fed.entry("dying.memory").or_default() += 1;
            *fed.entry("live.cpu+cpuacct").or_default() += 1;
        }
        w.write_interval(60.0 * round as f64, 60.0, &l)
            .expect("interval");
    }
    let bytes = w.into_inner();
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    assert!(text.starts_with("#cgtrace cgroup lifetimes"), "{text}");
    assert!(text.contains("#[StartTime: 1700000000.000 "), "{text}");
    assert!(text.contains("#[BaseTime: 1700000000.000 "), "{text}");
    assert!(
        text.contains("\"StartTimestamp\",\"Interval_Length\""),
        "{text}"
    );

    let log = parse_log(&bytes);
    let tags: Vec<&str> = log.keys().map(String::as_str).collect();
    assert_eq!(
        tags,
        [
            "dying.cpu+cpuacct",
            "dying.memory",
            "dying.qos.besteffort",
            "dying.qos.burstable",
            "dying.qos.guaranteed",
            "dying.qos.none",
            "live.cpu+cpuacct",
            "live.memory",
            "live.qos.besteffort",
            "live.qos.burstable",
            "live.qos.guaranteed",
            "live.qos.none",
        ]
    );
    for (tag, intervals) in &log {
        assert_eq!(intervals.len(), 3, "{tag}: one histogram per interval");
        // Intervals hold what was new: 100, 200, 300 (a quarter of it per QoS class).
        let counts: Vec<u64> = intervals.iter().map(|(_, _, h)| h.len()).collect();
        let per = if tag.contains(".qos.") { 25 } else { 100 };
        let want = if tag == "dying.cpu+cpuacct" {
            vec![0, 0, 0]
        } else {
            vec![per, 2 * per, 3 * per]
        };
        assert_eq!(counts, want, "{tag}");
        let starts: Vec<(f64, f64)> = intervals.iter().map(|&(s, d, _)| (s, d)).collect();
        assert_eq!(starts, [(0.0, 60.0), (60.0, 60.0), (120.0, 60.0)], "{tag}");
        // The intervals add up to the cumulative histogram, bucket for bucket.
        let mut sum = new_histogram().expect("histogram");
        for (_, _, h) in intervals {
            sum.add(h).expect("add");
        }
        let cumulative = l
            .tagged(&labels)
            .find(|(t, _)| t == tag)
            .map(|(_, h)| h)
            .expect("tag in lifetimes");
        assert_eq!(&sum, cumulative, "{tag}");
        if let Some(&n) = fed.get(tag.as_str()) {
            assert_eq!(sum.len(), n, "{tag}");
        }
    }
}

#[test]
fn tags_are_valid() {
    assert_eq!(tag_safe("cpu,cpuacct"), "cpu+cpuacct");
    assert_eq!(tag_safe("name=my hier\n"), "name=my_hier_");
    assert!(Tag::new(&tag_safe("a, b\r\n")).is_some());
}
