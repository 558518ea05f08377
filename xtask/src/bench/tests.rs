use super::{machine::*, modes::*, phases::*, stats::*};

#[test]
fn stats_median_min_max() {
    let s = stats(&[3.0, 1.0, 2.0]).expect("stats");
    assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
    let s = stats(&[4.0, 1.0, 2.0, 3.0]).expect("stats");
    assert_eq!(s.median, 2.5);
    assert!(stats(&[]).is_none());
}

#[test]
fn json_keys() {
    let l = r#"{"type":"summary","events":{"mkdir":3,"total":9},"lost":12,"lost_by_kind":{"rmdir":12},"pods":[{"name":"a\"lost\":5"}]}"#;
    assert_eq!(json_u64(l, "lost"), Some(12));
    assert_eq!(json_u64(l, "total"), Some(9));
    assert_eq!(json_u64(r#"{"x":"\"lost\":4","lost":0}"#, "lost"), Some(0));
    assert_eq!(json_u64(l, "nope"), None);
}

#[test]
fn dates_and_numbers() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(grouped(1_234_567.4), "1,234,567");
    assert_eq!(grouped(999.0), "999");
    assert_eq!(size_name(4096), "4 KiB");
    assert_eq!(size_name(4 << 20), "4 MiB");
}

#[test]
fn parses_bpftool_prog_show() {
    let text = "16259: raw_tracepoint  name raw_cgroup_mkdir  tag beb2924d75b7884d  gpl run_time_ns 4537 run_cnt 1\n\tloaded_at 2026-11-23T17:23:01+0000  uid 0\n\txlated 6400B  jited 3422B  memlock 20480B\n17: tracepoint  name sys_enter_mkdir  tag 85d6bb2caf7bd95f  gpl\n";
    assert_eq!(
        parse_prog_show(text),
        vec![
            (16259, "raw_cgroup_mkdir".to_string(), 4537, 1),
            (17, "sys_enter_mkdir".to_string(), 0, 0)
        ]
    );
}

#[test]
fn parses_the_pipeline_output() {
    let p = parse_pipeline(
            "record_bytes 352\nstream hierarchies=9\npipeline_round track 1000 0.5 0.1 0.5\npipeline_round histograms 1000 1 0.1 2\nsession_round 1000 0.25 0.5 12000\nmemory_dying 10 1000 3000 10 10\nnote session: absent\n",
        )
        .expect("parses");
    assert_eq!(p.track_eps, vec![2000.0]);
    assert_eq!(p.histogram_eps, vec![1000.0]);
    assert_eq!(p.session_write_eps, vec![4000.0]);
    assert_eq!(p.session_replay_eps, vec![2000.0]);
    assert_eq!(p.session_bytes_per_event, vec![12.0]);
    assert_eq!(p.decode_eps, vec![10000.0, 10000.0]);
    assert_eq!(p.memory, vec![(10, 200.0, 10, 10)]);
    assert_eq!(p.notes, vec!["session: absent".to_string()]);
    assert!(parse_pipeline("nothing\n").is_err());
    assert!(parse_pipeline("pipeline_round 1000 0.5 0.1 0.5\n").is_err());
    assert!(parse_pipeline("pipeline_round track 1000 0.5 0.1\n").is_err());
}

#[test]
fn help_subcommands() {
    let text = "Usage: cgtrace\n\nCommands:\n  live    Print\n  check   One-shot\n          wrapped\n\n  help    Print\n\nOptions:\n  -v, --verbose\n";
    assert_eq!(parse_subcommands(text), ["live", "check", "help"]);
}
