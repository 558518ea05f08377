//! The `cgtrace` binary end to end: JSON lines against cgroups the test makes, signals, the
//! summary, usage errors, missing privileges, a closed pipe; `top` and `report --html` flags.
use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use cgtrace::kernel::hierarchy::Hierarchies;
use integration_tests::{
    Scratch,
    binary::{cgtrace_bin, cgtrace_command},
    cgroup::{TestParent, privileged},
    outside_reference, stdout_of,
};

fn mounts() -> (u32, PathBuf, PathBuf) {
    let h = Hierarchies::load().expect("hierarchies");
    let mem = h.with_controller("memory").expect("memory hierarchy");
    let v2 = h.get(0).and_then(|x| x.mount.clone()).expect("v2 mount");
    (mem.id, mem.mount.clone().expect("memory mount"), v2)
}

type Spawned = (
    Child,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<String>,
);

/// Spawns cgtrace with piped output and waits for its "attached" line on stderr.
fn spawn_attached(args: &[&str]) -> Spawned {
    let mut cmd = cgtrace_command();
    cmd.args(args);
    spawn_attached_as(cmd)
}

/// [`spawn_attached`] of a command set up by the caller (its environment, say).
fn spawn_attached_as(mut cmd: std::process::Command) -> Spawned {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cgtrace");
    let stderr = child.stderr.take().expect("stderr");
    let (ready_tx, ready_rx) = mpsc::channel();
    let err_thread = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("cgtrace: attached") {
                let _ = ready_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        let err = err_thread.join().unwrap_or_default();
        panic!("cgtrace did not attach: {err}");
    }
    (child, rx, err_thread)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cgtrace did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn live_json_reports_every_cgroup_and_a_summary() {
    if !privileged("live_json_reports_every_cgroup_and_a_summary") {
        return;
    }
    let (mem_id, mem, v2) = mounts();
    let parent = TestParent::new("cli", &[&mem, &v2]).expect("test parent");
    let prefix = format!("{}/", parent.cgroup_path());
    let (mut child, rx, err) = spawn_attached(&["live", "--json", "--path-prefix", &prefix]);
    const N: usize = 12;
    // Names a terminal or a JSON writer could trip on (the kernel refuses newlines and '/').
    let names: Vec<String> = (0..N)
        .map(|i| match i % 4 {
            0 => format!("plain{i}"),
            1 => format!("esc\x1b[31m{i}"),
            2 => format!("quote\"back\\slash{i}"),
            _ => format!("tab\there{i}"),
        })
        .collect();
    for n in &names {
        parent.mkdir(&mem, n).expect("mkdir memory");
        parent.mkdir(&v2, n).expect("mkdir v2");
    }
    for n in &names {
        parent.rmdir(&mem, n).expect("rmdir memory");
        parent.rmdir(&v2, n).expect("rmdir v2");
    }
    let mut events: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = |ev: &[serde_json::Value], kind: &str, h: u32| {
        ev.iter()
            .filter(|e| e["event"] == kind && e["hierarchy_id"] == h)
            .count()
    };
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("invalid JSON line {line:?}: {e}"));
            assert_eq!(v["type"], "event");
            events.push(v);
        }
        if [mem_id, 0]
            .iter()
            .all(|&h| want(&events, "release", h) == N)
        {
            break;
        }
    }
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut rest: Vec<serde_json::Value> = rx
        .iter()
        .map(|l| serde_json::from_str(&l).expect("valid JSON"))
        .collect();
    let summary = rest.pop().expect("a summary line");
    events.extend(rest);
    assert!(
        status.success(),
        "exit status {status}; stderr: {}",
        err.join().unwrap_or_default()
    );
    assert_eq!(summary["type"], "summary");
    for h in [mem_id, 0] {
        for kind in ["mkdir", "rmdir", "release"] {
            assert_eq!(want(&events, kind, h), N, "{kind} in hierarchy {h}");
        }
    }
    for n in &names {
        let path = format!("{}/{n}", parent.cgroup_path());
        let hits = events.iter().filter(|e| e["path"] == path.as_str()).count();
        assert_eq!(hits, 6, "{path:?}");
    }
    assert_eq!(summary["events"]["total"], events.len());
    assert_eq!(summary["events"]["mkdir"], 2 * N);
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["tier"], "tracepoint");
}

#[test]
fn text_output_escapes_control_characters() {
    if !privileged("text_output_escapes_control_characters") {
        return;
    }
    let (_, mem, _) = mounts();
    let parent = TestParent::new("clitext", &[&mem]).expect("test parent");
    let prefix = format!("{}/", parent.cgroup_path());
    let (mut child, rx, _err) =
        spawn_attached(&["live", "--controller", "memory", "--path-prefix", &prefix]);
    parent
        .mkdir(&mem, "evil\x1b]0;pwned\x07\tname")
        .expect("mkdir");
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an event line");
    signal(&child, libc::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    assert!(line.contains("mkdir") && line.contains("memory"), "{line}");
    assert!(line.contains("evil\\x1b]0;pwned\\x07\\tname"), "{line}");
    assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    if !privileged("a_closed_pipe_ends_quietly") {
        return;
    }
    let (_, mem, _) = mounts();
    let parent = TestParent::new("clipipe", &[&mem]).expect("test parent");
    let prefix = format!("{}/", parent.cgroup_path());
    let mut child = cgtrace_command()
        .args(["live", "--duration", "20s", "--path-prefix", &prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    // Wait until it attached (its first stderr line), then produce output and read one line.
    let mut first = String::new();
    stderr.read_line(&mut first).expect("attached line");
    assert!(first.starts_with("cgtrace: attached"), "{first}");
    parent.mkdir(&mem, "a").expect("mkdir");
    let mut line = String::new();
    out.read_line(&mut line).expect("one line");
    drop(out); // like `| head -1`
    for i in 0..50 {
        parent.mkdir(&mem, format!("b{i}")).expect("mkdir");
    }
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let mut err = String::new();
    stderr.read_to_string(&mut err).expect("stderr");
    assert!(status.success(), "{status}: {err}");
    assert!(!err.contains("error"), "{err}");
}

#[test]
fn usage_errors_exit_2_without_a_panic() {
    for args in [
        &["live", "--bogus"][..],
        &["live", "--duration", "5y"],
        &["live", "--ring-size", "12X"],
        &["live", "--controller", "no-such-controller"],
        &["frobnicate"],
    ] {
        let out = cgtrace_command().args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn without_privileges_says_what_is_missing() {
    if !privileged("without_privileges_says_what_is_missing") {
        return;
    }
    // Drop to nobody: no capabilities left.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(cgtrace_bin())
        .arg("live")
        .output()
        .expect("run setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON") && err.contains("sudo"),
        "{err}"
    );
}

/// The committed version-1 session (see `compat.rs`).
fn fixture_session() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/session-v1.cgtrace")
}

#[test]
fn top_and_report_html_are_documented_and_refuse_bad_input() {
    let help = stdout_of(cgtrace_command().arg("--help"));
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("top ")),
        "{help}"
    );
    let top = stdout_of(cgtrace_command().args(["top", "--help"]));
    for flag in [
        "--replay <FILE>",
        "--speed <N|max>",
        "--duration <DURATION>",
        "--subtree <PATH>",
        "--tier <TIER>",
    ] {
        assert!(top.contains(flag), "top --help lacks {flag}:\n{top}");
    }
    let report = stdout_of(cgtrace_command().args(["report", "--help"]));
    assert!(report.contains("--html <OUT>"), "{report}");

    let session = fixture_session().display().to_string();
    for (args, why) in [
        (&["top"][..], "a terminal"),
        (&["top", "--replay", &session], "a terminal"),
        (&["top", "--speed", "10"], "--replay"),
        (
            &["top", "--replay", &session, "--duration", "5s"],
            "--duration",
        ),
        (&["top", "--replay", &session, "--speed", "0"], "speed"),
        (
            &["report", "--html", "o.html", "--json", &session],
            "--json",
        ),
        (
            &[
                "report",
                "--html",
                "/nonexistent-cgtrace-dir/o.html",
                &session,
            ],
            "not a directory",
        ),
    ] {
        // stdout is a pipe here: not a terminal.
        let out = cgtrace_command().args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?} should say {why:?}: {err}");
        if args[0] == "top" && why == "a terminal" {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
}

#[test]
fn report_html_of_a_recorded_session_is_one_self_contained_page() {
    let scratch = Scratch::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "cli-html");
    let page = scratch.path().join("report.html");
    let out = cgtrace_command()
        .args(["report", "--html"])
        .arg(&page)
        .arg(fixture_session())
        .output()
        .expect("run cgtrace report --html");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).expect("the page");
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(
        html.contains("default-src 'none'"),
        "a CSP forbids fetching"
    );
    assert_eq!(outside_reference(&html), None, "the page refers outside");
    for id in [
        "plot-dying",
        "plot-churn",
        "plot-headroom",
        "plot-live",
        "plot-dying-lifetimes",
        "pods-table",
        "lifetimes-table",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no {id}");
    }
    assert_eq!(html.matches("<svg").count(), 5, "one SVG per plot");
}

/// `--tracepoints` names which cgroup tracepoints are attached; 0.1.0's `--attach` still works
/// but is no longer shown.
#[test]
fn tracepoints_flag_and_its_old_spelling_both_work() {
    for cmd in ["live", "record", "attach", "top"] {
        let help = stdout_of(cgtrace_command().args([cmd, "--help"]));
        assert!(help.contains("--tracepoints <"), "{cmd} --help:\n{help}");
        assert!(!help.contains("--attach"), "{cmd} --help:\n{help}");
    }
    for flag in ["--tracepoints", "--attach"] {
        let m = cgtrace::cli::command()
            .try_get_matches_from(["cgtrace", "live", flag, "classic"])
            .unwrap_or_else(|e| panic!("{flag}: {e}"));
        let (_, live) = m.subcommand().expect("live");
        assert_eq!(
            live.get_one::<cgtrace::probes::AttachMode>("tracepoints"),
            Some(&cgtrace::probes::AttachMode::Classic),
            "{flag}"
        );
        let out = cgtrace_command()
            .args(["live", flag, "bogus"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains("raw") && err.contains("classic"),
            "{flag}: {err}"
        );
    }
    if !privileged("tracepoints_flag_and_its_old_spelling_both_work") {
        return;
    }
    for flag in ["--tracepoints", "--attach"] {
        let out = cgtrace_command()
            .args(["live", "--json", "--duration", "1s", flag, "classic"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{flag}: {err}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().expect("a summary line"))
                .expect("JSON summary");
        assert_eq!(summary["attach"], "tracepoint", "{flag}: {stdout}");
    }
}

/// `--probe-read legacy` (or `CGTRACE_PROBE_READ=legacy`) forces `bpf_probe_read`, the read
/// path of kernels before 5.5, and the first line says so; events still arrive.
#[test]
fn probe_read_flag_forces_the_old_kernels_reads() {
    let help = stdout_of(cgtrace_command().args(["live", "--help"]));
    assert!(help.contains("--probe-read <HOW>"), "{help}");
    let out = cgtrace_command()
        .args(["live", "--probe-read", "bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    if !privileged("probe_read_flag_forces_the_old_kernels_reads") {
        return;
    }
    let (_, mem_mount, _) = mounts();
    for (args, env) in [
        (&["--probe-read", "legacy"][..], None),
        (&[][..], Some("legacy")),
    ] {
        let mut cmd = cgtrace_command();
        cmd.args(["live", "--json", "--duration", "2s"]).args(args);
        if let Some(v) = env {
            cmd.env("CGTRACE_PROBE_READ", v);
        } else {
            cmd.env_remove("CGTRACE_PROBE_READ");
        }
        let (mut child, rx, err_thread) = spawn_attached_as(cmd);
        let parent = TestParent::new("probe-read", &[&mem_mount]).expect("test parent");
        parent.mkdir(&mem_mount, "c").expect("mkdir");
        parent.rmdir(&mem_mount, "c").expect("rmdir");
        let status = wait_exit(&mut child, Duration::from_secs(20));
        let err = err_thread.join().unwrap_or_default();
        assert!(status.success(), "{args:?} {env:?}: {err}");
        assert!(
            err.contains("reads with bpf_probe_read (forced)"),
            "{args:?} {env:?}: {err}"
        );
        // The reader thread ends at EOF: every line is in the channel.
        let stdout: Vec<String> = rx.iter().collect();
        let want = format!("{}/c", parent.cgroup_path());
        assert!(
            stdout
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|v| v["event"] == "mkdir" && v["path"] == want.as_str()),
            "{args:?} {env:?}: no mkdir of {want} in {stdout:?}"
        );
    }
}
