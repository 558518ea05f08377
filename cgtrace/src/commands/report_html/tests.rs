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
