use super::{boot::*, initramfs::*, kernels::*, report::*, *};

/// The tiers with css hooks (only the VMs' kernels have them).
const CSS_TIERS: &[&str] = &["fentry", "kprobe"];

#[test]
fn package_versions_parse_debian_package_names() {
    assert_eq!(
        package_version("linux-image-6.1.0-56-cloud-amd64"),
        Some([6, 1, 0, 56])
    );
    assert_eq!(
        package_version("linux-image-5.10.0-46-cloud-amd64"),
        Some([5, 10, 0, 46])
    );
    assert_eq!(
        package_version("linux-image-6.12.117+deb12-cloud-amd64"),
        Some([6, 12, 117, 0])
    );
    assert_eq!(
        package_version("linux-image-7.3.4+deb13-cloud-amd64"),
        Some([7, 3, 4, 0])
    );
    assert_eq!(
        package_version("linux-image-6.12.9-cloud-amd64"),
        Some([6, 12, 9, 0])
    );
    for not_an_image in [
        "linux-image-6.1.0-56-cloud-amd64-dbg",
        "linux-image-6.12.117+-cloud-amd64",
        "linux-image-6.12-cloud-amd64",
        "linux-image-cloud-amd64",
        "linux-image-6.1.0-56-amd64",
        "linux-binary-7.3.4+deb13-cloud-amd64",
    ] {
        assert_eq!(package_version(not_an_image), None, "{not_an_image}");
    }
}

#[test]
fn series_pick_their_newest_and_newest_picks_any() {
    let names: Vec<String> = [
        "linux-image-5.10.0-32-cloud-amd64",
        "linux-image-5.10.0-46-cloud-amd64",
        "linux-image-6.1.0-9-cloud-amd64",
        "linux-image-6.1.0-57-cloud-amd64",
        "linux-image-6.12.117+deb12-cloud-amd64",
        "linux-image-6.12.118+deb13-cloud-amd64",
        "linux-image-6.12.9-cloud-amd64",
        "linux-image-7.2.12+deb13-cloud-amd64",
        "linux-image-7.3.4+deb13-cloud-amd64",
        "linux-image-cloud-amd64",
    ]
    .map(String::from)
    .to_vec();
    let pick = |label: &str| {
        SERIES
            .iter()
            .find(|s| s.label == label)
            .and_then(|s| s.newest(&names))
    };
    assert_eq!(pick("5.10"), Some("linux-image-5.10.0-46-cloud-amd64"));
    assert_eq!(pick("6.1"), Some("linux-image-6.1.0-57-cloud-amd64"));
    assert_eq!(pick("6.12"), Some("linux-image-6.12.118+deb13-cloud-amd64"));
    assert_eq!(pick("newest"), Some("linux-image-7.3.4+deb13-cloud-amd64"));
    let v5_10 = SERIES
        .iter()
        .find(|s| s.label == "5.10")
        .expect("5.10 series");
    assert!(v5_10.selected(&[KernelChoice::All]));
    assert!(v5_10.selected(&[KernelChoice::V6_1, KernelChoice::V5_10]));
    assert!(!v5_10.selected(&[KernelChoice::Newest]));
    assert_eq!(
        pick("5.4"),
        None,
        "the pinned series picks no Debian package"
    );
}

#[test]
fn cargo_messages_give_the_test_executable() {
    let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#integration-tests@0.1.0","target":{"kind":["test"],"crate_types":["bin"],"name":"memcg_lifecycle","src_path":"/w/a\"b.rs"},"executable":"/w/target/debug/deps/memcg_lifecycle-0123","fresh":true}"#;
    assert_eq!(
        artifact_target_name(line).as_deref(),
        Some("memcg_lifecycle")
    );
    assert_eq!(
        json_string_field(line, "executable").as_deref(),
        Some("/w/target/debug/deps/memcg_lifecycle-0123")
    );
    assert_eq!(
        json_string_field(line, "src_path").as_deref(),
        Some("/w/a\"b.rs")
    );
    assert_eq!(
        json_string_field(r#"{"executable":null}"#, "executable"),
        None
    );
}

#[test]
fn markers_give_statuses_sections_and_facts() {
    let log = "boot\nCGTRACE-VM-FACT memcg v2\nCGTRACE-VM-RUN run=fentry\nok\n\
                   CGTRACE-VM-RESULT run=fentry status=0 seconds=41\n\
                   CGTRACE-VM-RUN run=kprobe\npanicked\n[  1.0] kernel CGTRACE-VM-RESULT run=kprobe status=101\n\
                   x CGTRACE-VM-FACT mkdir_failure_hooks the syscall enter and exit hooks\n";
    assert_eq!(run_status(log, "fentry"), Some(0));
    assert_eq!(run_seconds(log, "fentry"), Some(41));
    assert_eq!(run_status(log, "kprobe"), Some(101));
    assert_eq!(run_seconds(log, "kprobe"), None);
    assert_eq!(run_status(log, "tracepoint"), None);
    assert_eq!(run_section(log, "kprobe"), "panicked\n[  1.0] kernel ");
    let f = facts(log);
    assert_eq!(f.get("memcg").map(String::as_str), Some("v2"));
    assert_eq!(
        f.get("mkdir_failure_hooks").map(String::as_str),
        Some("the syscall enter and exit hooks")
    );
    assert_eq!(excerpt("a\nb", 0, 2), "a\nb");
    assert_eq!(
        excerpt("a\nb\nc", 0, 2),
        "[... 1 line(s) left out ...]\nb\nc"
    );
    assert_eq!(
        excerpt("a\nb\nc\nd", 1, 1),
        "a\n[... 2 line(s) left out ...]\nd"
    );
    assert_eq!(
        failure_report("running 1 test\nfailures:\n---- t"),
        "failures:\n---- t"
    );
}

#[test]
fn matrix_runs_every_tier_and_the_classic_test() {
    let runs = test_runs(&VmTestArgs::default());
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fentry",
            "kprobe",
            "tracepoint",
            "perf-lost",
            "classic",
            "btf-file",
            "no-btf",
            "agreement-fentry",
            "agreement-kprobe",
            "agreement-tracepoint"
        ]
    );
    assert!(runs[7..].iter().all(|r| r.target == AGREEMENT_TARGET));
    assert!(runs[5].hide_btf && runs[6].hide_btf && !runs[4].hide_btf);
    assert!(runs[0].env.contains(&"CGTRACE_TIER=fentry".to_string()));
    // The perf buffers: the kprobe tier's run and the lost-events run; the rest use the ring.
    let perf = |r: &TestRun| r.env.contains(&"CGTRACE_BUFFER=perf".to_string());
    let through_perf: Vec<&str> = runs
        .iter()
        .filter(|r| perf(r))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(through_perf, ["kprobe", "perf-lost"]);
    assert_eq!(runs[3].target, LOST_TARGET);
    let exhaust = test_runs(&VmTestArgs {
        exhaust: true,
        ..VmTestArgs::default()
    });
    assert_eq!(exhaust.len(), 1);
    assert_eq!(exhaust[0].target, EXHAUST_TARGET);
    let script = init_script(&runs);
    assert!(script.contains("CGTRACE-VM-RUN run=classic"));
    assert!(script.contains(
        "mount -t tmpfs btf-hidden /sys/kernel/btf\necho \"CGTRACE-VM-RUN run=btf-file\""
    ));
    assert!(
        script
            .contains("/test/probes --test-threads=1 classic_tracepoints_see_every_cgroup --exact")
    );
}

#[test]
fn table_facts_and_readme_markers() {
    assert_eq!(
        debian_version(
            "Linux version 5.10.0-46-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-10 (Debian 10.2.1-6) 10.2.1 20210110) #1 SMP Debian 5.10.262-1 (2026-07-31)"
        ),
        Some("5.10.262-1")
    );
    assert_eq!(tracepoint_id_type("field:u64 id;"), Some("u64"));
    assert_eq!(tracepoint_id_type("field:int id;"), Some("int"));
    assert_eq!(tracepoint_id_type(""), None);
    let readme = format!("a\n{README_BEGIN}\nold\n{README_END}\nb\n");
    assert_eq!(
        crate::replace_between_markers(&readme, README_BEGIN, README_END, "new\n").ok(),
        Some(format!("a\n{README_BEGIN}\nnew\n{README_END}\nb\n"))
    );
    assert!(crate::replace_between_markers("no markers", README_BEGIN, README_END, "x").is_err());
}

#[test]
fn newc_entries_are_aligned_and_parents_come_first() -> Result<()> {
    let mut cpio = Newc::new(Vec::new());
    cpio.file("/a/b/c", 0o644, b"hello")?;
    cpio.symlink("a/l", "c")?;
    let bytes = cpio.finish()?;
    assert_eq!(bytes.len() % 4, 0);
    let text = String::from_utf8_lossy(&bytes);
    // Each entry's name (then its data) in order, parents before children.
    let mut at = 0;
    for name in ["a\0", "a/b\0", "a/b/c\0", "hello", "a/l\0", "TRAILER!!!\0"] {
        let found = text[at..].find(name);
        assert!(found.is_some(), "{name:?} after byte {at}");
        at += found.unwrap_or(0);
    }
    assert!(text.starts_with("070701"));
    Ok(())
}

#[test]
fn the_buffer_cell_says_which_buffers_passed() {
    let outcome = |passed: &[&str], facts: &[(&str, &str)], skipped: &[&str]| VmOutcome {
        statuses: ["fentry", "kprobe", "tracepoint", "perf-lost", "classic"]
            .iter()
            .map(|r| (r.to_string(), Some(if passed.contains(r) { 0 } else { 1 })))
            .collect(),
        skipped: skipped.iter().map(|r| r.to_string()).collect(),
        facts: facts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        finished: true,
        timed_out: false,
        seconds: 0,
        log: PathBuf::new(),
    };
    let every = ["fentry", "kprobe", "tracepoint", "perf-lost", "classic"];
    let all = outcome(&every, &[], &[]);
    assert!(all.passed());
    assert_eq!(
        buffer_cell(&all),
        "ring (fentry, tracepoint, classic); perf (kprobe lifecycle with bpf_probe_read, lost events)"
    );
    assert_eq!(
        buffer_cell(&outcome(&["fentry", "kprobe"], &[], &[])),
        "ring (fentry); perf (kprobe lifecycle with bpf_probe_read); perf FAILED (perf-lost)"
    );
    // 5.4: no ring buffer (each run says what its probes chose), no fentry.
    let no_ring = outcome(
        &["kprobe", "tracepoint", "perf-lost", "classic"],
        &[
            ("buffer_kprobe", "perf"),
            ("buffer_tracepoint", "perf"),
            ("buffer_classic", "perf"),
        ],
        &["fentry"],
    );
    assert!(no_ring.passed(), "a skipped run is not a failure");
    assert_eq!(
        buffer_cell(&no_ring),
        "perf (kprobe lifecycle with bpf_probe_read, tracepoint, classic, lost events)"
    );
    assert!(!outcome(&["kprobe"], &[], &["fentry"]).passed());
}

#[test]
fn a_kernel_that_cannot_take_a_run_skips_it() {
    let kernel = Kernel {
        release: "5.4.0-216-generic".to_string(),
        package: "linux-image-5.4.0-216-generic".to_string(),
        vmlinuz: PathBuf::new(),
        skip: &[("fentry", "no fentry"), ("btf-file", "no fentry")],
    };
    assert_eq!(
        kernel_command_line(&kernel),
        "console=ttyS0 panic=-1 quiet cgtrace.skip=fentry,btf-file"
    );
    let init = init_script(&test_runs(&VmTestArgs::default()));
    assert!(init.contains(
        "skip=$(sed -n 's/.*cgtrace\\.skip=\\([^ ]*\\).*/\\1/p' /proc/cmdline | tr , ' ')"
    ));
    assert!(
        init.contains(r#"case " $skip " in *" fentry "*) echo "CGTRACE-VM-SKIP run=fentry" ;; *)"#)
    );
    assert_eq!(
        init.matches(";; esac").count(),
        test_runs(&VmTestArgs::default()).len()
    );
    let log = "CGTRACE-VM-SKIP run=fentry\nCGTRACE-VM-SKIP run=btf-file\n";
    assert!(run_skipped(log, "fentry"));
    assert!(!run_skipped(log, "btf"), "a prefix of a skipped run's name");
    assert!(!run_skipped(log, "kprobe"));
    // The pinned series sorts by its release; its runs without trampolines are named.
    assert_eq!(release_version("5.4.0-216-generic"), Some([5, 4, 0, 216]));
    assert_eq!(release_version("6.12.9"), Some([6, 12, 9, 0]));
    assert_eq!(release_version("x"), None);
    let ubuntu = SERIES
        .iter()
        .find(|s| s.label == "5.4")
        .expect("5.4 series");
    assert!(matches!(ubuntu.source, Source::Pinned(_)));
    assert_eq!(kernel.why_skipped("btf-file"), "no fentry");
    assert_eq!(kernel.why_skipped("kprobe"), "");
    let runs = test_runs(&VmTestArgs::default());
    for series in SERIES {
        for (run, why) in series.skip {
            assert!(
                runs.iter().any(|r| r.name == *run),
                "{run} is a run of the matrix"
            );
            assert!(!why.is_empty());
        }
    }
    // Each kernel runs the agreement test once; each css tier's run stays on two kernels, the
    // tracepoint tier's on one (and the host).
    for tier in TIERS {
        let run = format!("agreement-{tier}");
        let on = SERIES
            .iter()
            .filter(|s| !s.skip.iter().any(|(r, _)| *r == run))
            .count();
        let want = if CSS_TIERS.contains(tier) { 2 } else { 1 };
        assert!(on >= want, "{run} runs on {on} kernel(s)");
    }
    for series in SERIES {
        let runs = TIERS
            .iter()
            .filter(|t| {
                let run = format!("agreement-{t}");
                !series.skip.iter().any(|(r, _)| *r == run)
            })
            .count();
        assert_eq!(runs, 1, "{} runs the agreement test once", series.label);
    }
    assert_eq!(ubuntu.matches("linux-image-5.4.0-1-cloud-amd64"), None);
}
