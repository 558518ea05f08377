use super::server::{IO_TIMEOUT, MAX_REQUEST_HEAD, serve_with};
use super::*;
use crate::model::tracker::tests::{UID, ev};
use std::io::{Read, Write};
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The value of the sample `name{labels}` (labels as written, sorted as encoded).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

fn series_count(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .count()
}

fn obs(memcg: bool, qos: Option<Qos>, live_ns: Option<u64>, dying_ns: Option<u64>) -> Observed {
    Observed {
        memcg,
        qos,
        live_ns,
        dying_ns,
        ..Observed::default()
    }
}

/// A tracker with `n` burstable pods; pod i has i + 1 dying memcgs (one container each,
/// removed i + 1 times).
fn tracker_with_pods(n: usize) -> Tracker {
    let mut t = Tracker::new(Some(4));
    let mut id = 1000u64;
    let mut ts = 1u64;
    for i in 0..n {
        let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        let pod = format!("/kubepods/burstable/pod{uid}");
        t.observe(&ev(EventKind::Mkdir, ts, 4, id, pod.as_bytes()));
        id += 1;
        for _ in 0..=i {
            let c = format!("{pod}/{id:064x}");
            t.observe(&ev(EventKind::Mkdir, ts, 4, id, c.as_bytes()));
            ts += 1;
            t.observe(&ev(EventKind::Rmdir, ts, 4, id, c.as_bytes()));
            id += 1;
        }
    }
    t
}

#[test]
fn encodes_names_labels_and_values() {
    let mut m = Metrics::new();
    m.update_own_cost(&OwnCost {
        cpu_seconds: 1.5,
        programs: vec![crate::pipeline::own_cost::ProgramStat {
            name: "raw_cgroup_mkdir".into(),
            run_time_ns: 3_000,
            run_count: 2,
        }],
        bpf_stats: true,
        ..OwnCost::default()
    });
    for _ in 0..3 {
        m.on_event("mkdir");
    }
    m.on_event("rmdir");
    m.on_lost("release", 7);
    m.on_observed(
        "memory",
        &obs(true, Some(Qos::Burstable), Some(2_000_000), None),
    );
    m.on_observed(
        "memory",
        &obs(true, Some(Qos::Burstable), None, Some(3_000_000_000)),
    );
    m.on_observed("cpu,cpuacct", &obs(false, None, Some(500_000_000), None));
    m.on_observed("memory", &obs(true, None, None, None));

    let mut t = Tracker::new(Some(4));
    let pod = format!("/kubepods/burstable/pod{UID}");
    let ctr = format!("{pod}/{:064x}", 7);
    t.observe(&ev(EventKind::Mkdir, 10, 4, 100, pod.as_bytes()));
    t.observe(&ev(EventKind::Mkdir, 20, 4, 101, ctr.as_bytes()));
    t.observe(&ev(EventKind::Rmdir, 50, 4, 101, ctr.as_bytes()));
    t.set_pod_name(UID, "kube-system", "we\"ird\\pod\nname");
    m.update(&t, Some(65_000), &[("dying_growth", 2), ("id_headroom", 0)]);
    m.set_attached_info(&[("tier", "fentry"), ("kernel", "6.8.0")]);
    m.on_oom_kill(
        Some(Qos::Burstable),
        Constraint::Memcg,
        Some((UID, None, None)),
    );
    let text = MetricsState::new(m).scrape();

    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        sample(&text, "cgtrace_events_total{event=\"mkdir\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "cgtrace_events_total{event=\"rmdir\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "cgtrace_events_total{event=\"css_free\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "cgtrace_lost_events_total{event=\"release\"}"),
        Some(7.0)
    );
    assert_eq!(
        sample(&text, "cgtrace_lost_events_total{event=\"mkdir\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "cgtrace_cgroups{state=\"live\"}"), Some(1.0));
    assert_eq!(sample(&text, "cgtrace_cgroups{state=\"dying\"}"), Some(1.0));
    assert_eq!(sample(&text, "cgtrace_cgroups{state=\"freed\"}"), Some(0.0));
    assert_eq!(sample(&text, "cgtrace_dying_before_start"), Some(0.0));
    let pod_series = format!(
        "cgtrace_pod_dying_memcgs{{pod_uid=\"{UID}\",namespace=\"kube-system\",\
             name=\"we\\\"ird\\\\pod\\nname\",qos=\"burstable\"}}"
    );
    assert_eq!(sample(&text, &pod_series), Some(1.0), "{text}");
    assert_eq!(sample(&text, "cgtrace_memcg_id_headroom"), Some(65_000.0));
    assert_eq!(
        sample(&text, "cgtrace_verdict{detector=\"dying_growth\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "cgtrace_verdict{detector=\"id_headroom\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "cgtrace_up"), Some(0.0), "not attached");
    assert_eq!(
        sample(
            &text,
            "cgtrace_attached_info{tier=\"fentry\",kernel=\"6.8.0\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE cgtrace_cgroup_live_seconds histogram"));
    assert!(text.contains("# UNIT cgtrace_cgroup_live_seconds seconds"));
    let live = "cgtrace_cgroup_live_seconds";
    let mem = "hierarchy=\"memory\",qos=\"burstable\"";
    assert_eq!(sample(&text, &format!("{live}_count{{{mem}}}")), Some(1.0));
    assert_eq!(sample(&text, &format!("{live}_sum{{{mem}}}")), Some(0.002));
    // 2 ms falls in (1 ms, 4 ms]: not in le=0.001, in le=0.004.
    assert_eq!(
        sample(&text, &format!("{live}_bucket{{le=\"0.001\",{mem}}}")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("{live}_bucket{{le=\"0.004\",{mem}}}")),
        Some(1.0),
        "{text}"
    );
    let dying = "cgtrace_cgroup_dying_seconds";
    assert_eq!(sample(&text, &format!("{dying}_count{{{mem}}}")), Some(1.0));
    assert_eq!(sample(&text, &format!("{dying}_sum{{{mem}}}")), Some(3.0));
    let cpu = "hierarchy=\"cpu,cpuacct\",qos=\"none\"";
    assert_eq!(sample(&text, &format!("{live}_count{{{cpu}}}")), Some(1.0));
    assert_eq!(series_count(&text, &format!("{dying}_count")), 1, "{text}");
    // 14 finite buckets and +Inf.
    let buckets = text
        .lines()
        .filter(|l| l.starts_with(&format!("{live}_bucket{{")) && l.contains(mem))
        .count();
    assert_eq!(buckets, 15);
    assert!(text.contains(&format!("{live}_bucket{{le=\"+Inf\",{mem}}} 1")));
    assert!(text.contains(&format!("{live}_bucket{{le=\"67108.864\",{mem}}} 1")));
    let prog = "program=\"raw_cgroup_mkdir\"";
    assert_eq!(
        sample(&text, &format!("cgtrace_bpf_program_runs_total{{{prog}}}")),
        Some(2.0)
    );
    assert_eq!(sample(&text, "cgtrace_self_cpu_seconds_total"), Some(1.5));
    assert_eq!(sample(&text, "cgtrace_bpf_stats_enabled"), Some(1.0));
    for name in METRIC_NAMES {
        let family = name
            .strip_suffix("_total")
            .or_else(|| name.strip_suffix("_info"))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{name}: {text}"
        );
    }
}

#[test]
fn headroom_is_absent_when_unknown_and_dropped_series_go() {
    let mut m = Metrics::new();
    let t = tracker_with_pods(3);
    m.update(&t, Some(10), &[("a", 1)]);
    let text = m.encode();
    assert_eq!(sample(&text, "cgtrace_memcg_id_headroom"), Some(10.0));
    assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), 3);
    m.update(&Tracker::new(Some(4)), None, &[]);
    let text = m.encode();
    assert!(!text.contains("cgtrace_memcg_id_headroom"), "{text}");
    assert!(!text.contains("cgtrace_verdict"), "{text}");
    assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), 0, "{text}");
    assert_eq!(sample(&text, "cgtrace_cgroups{state=\"dying\"}"), Some(0.0));
}

#[test]
fn oom_kills_by_qos_and_constraint_and_per_pod_bounded() {
    let mut m = Metrics::with_pod_limit(2);
    let text = m.encode();
    // Every class × constraint is there from the start, at 0.
    assert_eq!(
        series_count(&text, "cgtrace_oom_kills_total"),
        4 * 5,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cgtrace_oom_kills_total{qos=\"burstable\",constraint=\"memcg\"}"
        ),
        Some(0.0)
    );
    m.on_oom_kill(
        Some(Qos::Burstable),
        Constraint::Memcg,
        Some(("u1", None, None)),
    );
    m.on_oom_kill(
        Some(Qos::Burstable),
        Constraint::Memcg,
        Some(("u1", Some("ns"), Some("later"))),
    );
    m.on_oom_kill(
        Some(Qos::Besteffort),
        Constraint::None,
        Some(("u2", Some("n\"s"), Some("b"))),
    );
    m.on_oom_kill(
        Some(Qos::Guaranteed),
        Constraint::None,
        Some(("u3", None, None)),
    );
    m.on_oom_kill(None, Constraint::Memcg, None);
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            "cgtrace_oom_kills_total{qos=\"burstable\",constraint=\"memcg\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "cgtrace_oom_kills_total{qos=\"none\",constraint=\"memcg\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "cgtrace_oom_kills_total{qos=\"besteffort\",constraint=\"none\"}"
        ),
        Some(1.0)
    );
    // One series per pod (its first labels), the third pod in "other".
    assert_eq!(
        series_count(&text, "cgtrace_pod_oom_kills_total"),
        3,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cgtrace_pod_oom_kills_total{pod_uid=\"u1\",namespace=\"\",name=\"\",qos=\"burstable\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "cgtrace_pod_oom_kills_total{pod_uid=\"u2\",namespace=\"n\\\"s\",name=\"b\",qos=\"besteffort\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "cgtrace_pod_oom_kills_total{pod_uid=\"other\",namespace=\"\",name=\"\",qos=\"\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn pod_cardinality_is_bounded() {
    let n = 25;
    let t = tracker_with_pods(n);
    let mut m = Metrics::with_pod_limit(10);
    m.update(&t, None, &[]);
    let text = m.encode();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("cgtrace_pod_dying_memcgs{"))
        .collect();
    assert_eq!(lines.len(), 11, "10 pods and other: {text}");
    // Pods 15..25 (16..=25 dying each) are kept; 1..=15 go to "other".
    let other = lines
        .iter()
        .find(|l| l.contains("pod_uid=\"other\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(other, Some((1..=15u64).sum::<u64>()));
    let kept: u64 = lines
        .iter()
        .filter(|l| !l.contains("pod_uid=\"other\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(kept, (16..=25u64).sum::<u64>());
    assert_eq!(kept + other.unwrap_or(0), t.totals().dying);
    // Under the limit: no "other".
    let mut m = Metrics::new();
    m.update(&t, None, &[]);
    let text = m.encode();
    assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), n);
    assert!(!text.contains("{pod_uid=\"other\""), "{text}");
}

#[test]
fn pod_series_and_caches_return_to_the_baseline_as_pods_come_and_go() {
    let mut t = Tracker::new(Some(4));
    let mut m = Metrics::with_pod_limit(10);
    let mut lifetimes = crate::pipeline::histogram::Lifetimes::new(Some(4));
    let mut ts = 1u64;
    let mut feed = |t: &mut Tracker, m: &mut Metrics, kind: EventKind, id: u64, p: &str| {
        ts += 1_000;
        let e = ev(kind, ts, 4, id, p.as_bytes());
        let o = t.observe(&e);
        m.on_event(kind.name());
        m.on_observed("memory", &o);
        lifetimes.record(4, &o);
    };
    let mut sizes = None;
    for round in 0..40u64 {
        let paths: Vec<(u64, String, String)> = (0..50u64)
            .map(|i| {
                let n = round * 50 + i;
                let pod = format!("/kubepods/burstable/pod{n:08x}-0000-4000-8000-{n:012x}");
                let ctr = format!("{pod}/{n:064x}");
                (n, pod, ctr)
            })
            .collect();
        for (n, pod, ctr) in &paths {
            feed(&mut t, &mut m, EventKind::Mkdir, 10 + 2 * n, pod);
            feed(&mut t, &mut m, EventKind::Mkdir, 11 + 2 * n, ctr);
            feed(&mut t, &mut m, EventKind::Rmdir, 11 + 2 * n, ctr);
            feed(&mut t, &mut m, EventKind::Rmdir, 10 + 2 * n, pod);
        }
        m.update(&t, None, &[]);
        assert_eq!(series_count(&m.encode(), "cgtrace_pod_dying_memcgs"), 11);
        for (n, pod, ctr) in &paths {
            feed(&mut t, &mut m, EventKind::Release, 11 + 2 * n, ctr);
            feed(&mut t, &mut m, EventKind::Release, 10 + 2 * n, pod);
        }
        m.update(&t, None, &[]);
        let text = m.encode();
        assert_eq!(series_count(&text, "cgtrace_pod_dying_memcgs"), 0, "{text}");
        // Series (lines), not bytes: the counters' digits grow.
        let size = (
            text.lines().count(),
            m.event_cache.len(),
            m.lifetime_cache.len(),
            t.footprint(),
        );
        match &sizes {
            None => sizes = Some(size),
            Some(s) => assert_eq!(&size, s, "round {round}"),
        }
    }
    assert_eq!(t.totals().freed, 4000);
    lifetimes.update_pods(&t);
    assert!(lifetimes.pods().is_empty());
}

#[test]
fn listen_addresses() {
    let ok = |s: &str| parse_listen_addr(s).map(|a| a.to_string());
    assert_eq!(ok("9101").as_deref(), Ok("127.0.0.1:9101"));
    assert_eq!(ok(":9101").as_deref(), Ok("127.0.0.1:9101"));
    assert_eq!(ok(" 9101 ").as_deref(), Ok("127.0.0.1:9101"));
    assert_eq!(ok("localhost:9101").as_deref(), Ok("127.0.0.1:9101"));
    assert_eq!(ok("0.0.0.0:9101").as_deref(), Ok("0.0.0.0:9101"));
    assert_eq!(ok("10.0.0.1:9101").as_deref(), Ok("10.0.0.1:9101"));
    assert_eq!(ok("[::]:9101").as_deref(), Ok("[::]:9101"));
    assert_eq!(ok("[::1]:9101").as_deref(), Ok("[::1]:9101"));
    for bad in [
        "",
        ":",
        "0",
        ":0",
        "65536",
        "99999999999",
        "-1",
        "abc",
        "1.2.3.4",
        "1.2.3.4:",
        "1.2.3.4:x",
        "::1:9101",
        "host.example:9101",
        "9101\nx",
        "0.0.0.0:0",
    ] {
        let e = parse_listen_addr(bad).expect_err(bad);
        assert!(!e.contains('\n') && !e.is_empty(), "{bad:?}: {e}");
    }
}

/// Runs the server on its own thread and runtime (as `attach` runs it next to the
/// pipeline); returns its address.
fn start_server(state: Arc<Mutex<MetricsState>>, io_timeout: Duration) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = std_listener.local_addr().expect("addr");
    std_listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            let _ = serve_with(listener, state, io_timeout).await;
        });
    });
    addr
}

/// Sends `request` on a fresh connection; returns (status line, body).
fn request(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.lines().next().unwrap_or_default().to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .expect("content length");
    if !request.starts_with(b"HEAD") {
        assert_eq!(body.len(), len, "{head}");
    }
    (status, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

#[test]
fn serves_metrics_and_health() {
    let state = Arc::new(Mutex::new(MetricsState::new(Metrics::new())));
    let addr = start_server(state.clone(), IO_TIMEOUT);
    let count = "cgtrace_cgroup_dying_seconds_count{hierarchy=\"memory\",qos=\"besteffort\"}";

    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("# EOF\n"));
    assert_eq!(sample(&body, count), None, "no observation yet");
    assert_eq!(sample(&body, "cgtrace_up"), Some(0.0));

    let feed = |n: u64| {
        let mut s = state.lock().expect("lock");
        for i in 0..n {
            s.metrics.on_event("release");
            s.metrics.on_observed(
                "memory",
                &obs(true, Some(Qos::Besteffort), None, Some(i * 1_000_000)),
            );
        }
    };
    feed(17);
    let (_, body) = get(addr, "/metrics");
    assert_eq!(sample(&body, count), Some(17.0));
    feed(25);
    let (_, body) = get(addr, "/metrics?x=1");
    assert_eq!(sample(&body, count), Some(42.0));
    assert_eq!(
        sample(&body, "cgtrace_events_total{event=\"release\"}"),
        Some(42.0)
    );

    // Health: not attached → 503; attached and drained → 200; drain too old → 503.
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(body.contains("not attached"), "{body}");
    {
        let mut s = state.lock().expect("lock");
        s.attached = true;
        s.last_drain = Instant::now();
    }
    assert_eq!(
        get(addr, "/healthz"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    let (_, body) = get(addr, "/metrics");
    assert_eq!(sample(&body, "cgtrace_up"), Some(1.0));
    if let Some(old) = Instant::now().checked_sub(Duration::from_secs(6)) {
        state.lock().expect("lock").last_drain = old;
        let (status, body) = get(addr, "/healthz");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(body.contains("not drained"), "{body}");
        let (_, body) = get(addr, "/metrics");
        assert_eq!(sample(&body, "cgtrace_up"), Some(0.0));
        state.lock().expect("lock").last_drain = Instant::now();
    }

    // Everything else.
    assert_eq!(get(addr, "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(get(addr, "/metricsx").0, "HTTP/1.1 404 Not Found");
    let (status, _) = request(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = request(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    let (status, _) = request(addr, b"GARBAGE\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST_HEAD * 2));
    let (status, _) = request(addr, &huge);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // A bare request line from a minimal client that closes its side.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /healthz\n").expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    // A connection that sends nothing and closes does not disturb the server.
    drop(std::net::TcpStream::connect(addr).expect("connect"));
    assert_eq!(get(addr, "/healthz").0, "HTTP/1.1 200 OK");
}

#[test]
fn slow_clients_time_out() {
    let state = Arc::new(Mutex::new(MetricsState::new(Metrics::new())));
    let addr = start_server(state, Duration::from_millis(200));
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metr").expect("send");
    let started = Instant::now();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
