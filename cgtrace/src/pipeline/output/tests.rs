use super::*;
use crate::model::event::tests::raw_bytes;
use crate::{format::clock::ClockRef, kernel::hierarchy::Hierarchies, model::k8s};
use cgtrace_common::flags;

fn ctx() -> RenderContext {
    let h = Hierarchies::parse(
        "7:memory:/\n0::/\n",
        "33 25 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    )
    .expect("mountinfo");
    RenderContext::new(
        h,
        ClockRef {
            mono_ns: 1_000_000_000,
            realtime_ns: 3_600_000_000_000,
        },
    )
}

fn render(json: bool, path: &[u8], fl: u8) -> String {
    let bytes = raw_bytes(1, path, flags::HAS_CGROUP | fl);
    let ev = Event::decode(&bytes).expect("decodes");
    let mut out = Vec::new();
    if json {
        JsonSink::new(&mut out, ctx())
            .event(&ev, None)
            .expect("write");
    } else {
        TextSink::new(&mut out, ctx())
            .event(&ev, None)
            .expect("write");
    }
    String::from_utf8(out).expect("utf8")
}

#[test]
fn text_line() {
    let line = render(false, b"/kubepods/x", 0);
    // ts 1_000_000_123 is 123 ns after the monotonic reference, i.e. 01:00:00.000000 UTC.
    assert!(line.starts_with("01:00:00.000000 mkdir"), "{line}");
    assert!(
        line.contains(" memory ") && line.contains("/kubepods/x") && line.contains("runc[4242]"),
        "{line}"
    );
    assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
}

#[test]
fn text_escapes_hostile_names() {
    let line = render(false, b"/a\x1b[2J\nb\xff", flags::PATH_TRUNCATED);
    assert!(line.contains("/a\\x1b[2J\\nb\\xff…[truncated]"), "{line}");
    assert_eq!(line.matches('\n').count(), 1);
    assert!(!line.contains('\x1b'));
}

#[test]
fn json_line_is_valid_for_hostile_names() {
    for p in [
        &b"/plain"[..],
        b"/q\"uote\\",
        b"/nl\nesc\x1b",
        b"/bad\xff\xfe",
        b"/t\tab",
    ] {
        let line = render(true, p, 0);
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["type"], "event");
        assert_eq!(v["event"], "mkdir");
        assert_eq!(v["pid"], 4242);
        assert_eq!(v["controllers"], serde_json::json!(["memory"]));
        assert_eq!(v["cgroup_id"], 0x1_0000_0042u64);
        if let Ok(s) = std::str::from_utf8(p) {
            assert_eq!(v["path"], s);
        } else {
            assert_eq!(v["path_lossy"], true);
        }
    }
}

#[test]
fn json_carries_pod_fields() {
    let p = b"/kubepods/burstable/pod0a1b2c3d-0000-4000-8000-00000000abcd/0123456789abcdef0123";
    let v: serde_json::Value = serde_json::from_str(&render(true, p, 0)).expect("json");
    assert_eq!(v["pod_uid"], "0a1b2c3d-0000-4000-8000-00000000abcd");
    assert_eq!(v["qos"], "burstable");
}

/// The pod fields of a JSON line are exactly what `k8s::parse_path` makes of the path.
#[test]
fn json_pod_fields_match_parse_path() {
    let uid = "0a1b2c3d-0000-4000-8000-00000000abcd";
    let under = uid.replace('-', "_");
    let id = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
    let paths = [
        format!("/kubepods/burstable/pod{uid}/{id}"),
        format!("/kubepods/pod{}/{id}", uid.to_uppercase()),
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/cri-containerd-{}.scope",
            id.to_lowercase()
        ),
        format!("/kubepods.slice/kubepods-pod{under}.slice/docker-{id}.scope"),
        format!("/kubepods/besteffort/pod{uid}"),
        format!("/kubepods/besteffort/pod{uid}/{id}/nested"),
        "/system.slice/docker.service".to_string(),
        "/kubepods/burstable/podnot-a-uid/x".to_string(),
    ];
    // The shapes are the interesting ones: pods, containers, runtimes, and neither.
    let parsed: Vec<_> = paths
        .iter()
        .map(|p| k8s::parse_path(p.as_bytes()))
        .collect();
    assert!(parsed[2].container_id.is_some() && parsed[2].runtime == Some("containerd"));
    assert!(parsed[4].pod_uid.is_some() && parsed[4].container_id.is_none());
    assert!(parsed[6].is_empty());
    for p in &paths {
        let v: serde_json::Value =
            serde_json::from_str(&render(true, p.as_bytes(), 0)).expect("json");
        let want = k8s::parse_path(p.as_bytes());
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        assert_eq!(field("pod_uid"), want.pod_uid, "{p}");
        assert_eq!(
            field("qos").as_deref(),
            want.qos.map(k8s::Qos::as_str),
            "{p}"
        );
        assert_eq!(field("container_id"), want.container_id, "{p}");
        assert_eq!(field("runtime").as_deref(), want.runtime, "{p}");
    }
}

#[test]
fn summary_json() {
    let mut c = Counts::default();
    c.seen[EventKind::Mkdir as usize] = 3;
    c.lost[EventKind::Rmdir as usize] = 2;
    let s = Summary::new(&c, "tracepoint", "raw_tracepoint", 5);
    let mut out = Vec::new();
    JsonSink::new(&mut out, ctx()).summary(&s).expect("write");
    // The total is computed, not an event kind; JSON puts it among the kinds, in key order.
    assert_eq!(s.total_events(), 3);
    assert!(!s.events.contains_key("total"));
    let text = std::str::from_utf8(&out).expect("utf-8");
    assert!(
        text.contains(r#""release":0,"rmdir":0,"total":3},"#),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["type"], "summary");
    assert_eq!(v["events"]["mkdir"], 3);
    assert_eq!(v["events"]["total"], 3);
    assert_eq!(v["lost"], 2);
    assert_eq!(v["tier"], "tracepoint");
}
