//! Record and replay end to end: replay gives the live run's output; a real session cut at
//! every byte or with flipped bytes never panics; SIGKILL and a full disk leave a file that
//! replays its prefix; a file that is not a session gets a one-line error.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use cgtrace::{
    kernel::hierarchy::Hierarchies,
    session::{Item, SessionReader},
};
use integration_tests::{
    binary::cgtrace_command,
    cgroup::{TestParent, privileged},
};

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()))
}

fn memory_mount() -> PathBuf {
    let h = Hierarchies::load().expect("hierarchies");
    h.with_controller("memory")
        .and_then(|m| m.mount.clone())
        .expect("memory mount")
}

fn spawn(args: &[&str], stdout: Stdio) -> (Child, std::thread::JoinHandle<String>) {
    integration_tests::binary::spawn_attached(args, stdout)
}

fn stop(child: &mut Child, sig: i32) -> std::process::ExitStatus {
    integration_tests::binary::signal_and_wait(child, sig, Duration::from_secs(20))
}

fn churn(parent: &TestParent, mount: &Path, n: usize, tag: &str) {
    for i in 0..n {
        let d = parent.dir(mount).join(format!("{tag}{i}"));
        fs::create_dir(&d).expect("mkdir");
        fs::remove_dir(&d).expect("rmdir");
    }
}

fn cgtrace(args: &[&str]) -> Output {
    cgtrace_command().args(args).output().expect("run cgtrace")
}

/// Event identity without the timestamp (two programs on one tracepoint read the clock apart).
fn event_key(v: &serde_json::Value) -> String {
    format!(
        "{} {} {} {} {} {}",
        v["event"], v["hierarchy_id"], v["cgroup_id"], v["path"], v["pid"], v["comm"]
    )
}

fn json_lines(s: &[u8]) -> Vec<serde_json::Value> {
    s.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("valid JSON line"))
        .collect()
}

/// Reads a whole session with the library: the events (as keys) and whether it ended cleanly.
fn read_events(bytes: &[u8]) -> Result<(Vec<String>, bool), String> {
    let mut r = SessionReader::new(bytes).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        match r.next() {
            Ok(Some(Item::Event(e))) => out.push(format!(
                "{} {} {} {:?} {}",
                e.kind.name(),
                e.hierarchy_id,
                e.cgroup_id,
                e.path,
                e.ts_ns
            )),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((out, r.clean_end()))
}

#[test]
fn replay_prints_what_live_printed() {
    if !privileged("replay_prints_what_live_printed") {
        return;
    }
    let mount = memory_mount();
    let parent = TestParent::new("rr", &[&mount]).expect("test parent");
    let file = tmp("rr.cgtrace");
    let _ = fs::remove_file(&file);
    let sub = parent.cgroup_path();
    let file_s = file.to_string_lossy().into_owned();
    let (mut rec, rec_err) = spawn(&["record", "-o", &file_s, "--subtree", &sub], Stdio::null());
    let live_out = tmp("rr-live.jsonl");
    let (mut live, _live_err) = spawn(
        &["live", "--json", "--subtree", &sub],
        Stdio::from(fs::File::create(&live_out).expect("live out")),
    );
    let pod = "kubepods/burstable/pod5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6";
    fs::create_dir_all(parent.dir(&mount).join(pod)).expect("pod dir");
    for i in 0..40 {
        let d = parent.dir(&mount).join(format!("{pod}/{:064x}", i + 1));
        fs::create_dir(&d).expect("mkdir");
        fs::remove_dir(&d).expect("rmdir");
    }
    std::thread::sleep(Duration::from_secs(2)); // releases
    assert!(stop(&mut live, libc::SIGINT).success());
    assert!(stop(&mut rec, libc::SIGTERM).success());
    let rec_stderr = rec_err.join().expect("record stderr");
    let mode = fs::metadata(&file).expect("session").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let replay = cgtrace(&["replay", "--json", &file_s]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let mut live_lines = json_lines(&fs::read(&live_out).expect("live output"));
    let mut replay_lines = json_lines(&replay.stdout);
    let live_summary = live_lines.pop().expect("live summary");
    let replay_summary = replay_lines.pop().expect("replay summary");
    let keys = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .filter(|l| l["type"] == "event")
            .map(event_key)
            .collect()
    };
    let (lk, rk) = (keys(&live_lines), keys(&replay_lines));
    assert!(rk.len() >= 120, "{} replayed events", rk.len());
    assert_eq!(lk, rk, "the same events, in order");
    for k in ["mkdir", "rmdir", "release"] {
        assert_eq!(
            live_summary["events"][k], replay_summary["events"][k],
            "{k}"
        );
    }
    assert_eq!(replay_summary["lost"], 0);
    // Totals depend on each run's own start-up baseline (the machine's dying memcgs move),
    // so they are compared between the recording run and its replay, below.
    // The recording run's own summary (stderr) is exactly the replay's text summary.
    let replay_text = cgtrace(&["replay", &file_s]);
    let text = String::from_utf8_lossy(&replay_text.stdout);
    let summary_start = text.find("-- ").expect("a summary in the replay");
    let rec_summary = rec_stderr
        .find("-- ")
        .map(|i| &rec_stderr[i..])
        .expect("a summary from record");
    assert_eq!(&text[summary_start..], rec_summary);
    // Replays are deterministic.
    assert_eq!(
        cgtrace(&["replay", "--json", &file_s]).stdout,
        replay.stdout
    );
    // report
    let report = cgtrace(&["report", "--json", &file_s]);
    assert!(report.status.success());
    let rep: serde_json::Value = serde_json::from_slice(&report.stdout).expect("report JSON");
    assert_eq!(rep["type"], "report");
    assert!(
        rep["lifetimes"]["live.memory"]["count"]
            .as_u64()
            .is_some_and(|c| c >= 40),
        "{rep}"
    );

    // The real session, cut at every byte and with flipped bytes: no panic, a prefix.
    let bytes = fs::read(&file).expect("read session");
    let (full, clean) = read_events(&bytes).expect("the whole session reads");
    assert!(clean);
    for cut in 0..bytes.len() {
        if let Ok((events, _)) = read_events(&bytes[..cut]) {
            assert!(full.starts_with(&events), "cut at {cut}: not a prefix");
        }
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (seed >> 33) as usize % b.len();
            b[i] ^= (seed >> 13) as u8 | 1;
        }
        let _ = read_events(&b);
    }
    // A truncated file replays its prefix with a warning, through the binary too.
    let cut = tmp("rr-cut.cgtrace");
    fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write cut");
    let out = cgtrace(&["replay", &cut.to_string_lossy()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    for f in [&file, &live_out, &cut] {
        let _ = fs::remove_file(f);
    }
}

#[test]
fn sigkill_during_record_leaves_a_replayable_prefix() {
    if !privileged("sigkill_during_record_leaves_a_replayable_prefix") {
        return;
    }
    let mount = memory_mount();
    let parent = TestParent::new("kill", &[&mount]).expect("test parent");
    let file = tmp("kill.cgtrace");
    let _ = fs::remove_file(&file);
    let file_s = file.to_string_lossy().into_owned();
    let (mut rec, _) = spawn(
        &["record", "-o", &file_s, "--subtree", &parent.cgroup_path()],
        Stdio::null(),
    );
    churn(&parent, &mount, 200, "k");
    std::thread::sleep(Duration::from_millis(300)); // at least one batch flushed
    let st = stop(&mut rec, libc::SIGKILL);
    assert!(!st.success());
    let bytes = fs::read(&file).expect("session");
    let (events, clean) = read_events(&bytes).expect("the prefix reads");
    assert!(!clean, "no footer after SIGKILL");
    assert!(
        events.iter().filter(|e| e.starts_with("mkdir")).count() >= 100,
        "{}",
        events.len()
    );
    let out = cgtrace(&["replay", &file_s]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no end marker"));
    let _ = fs::remove_file(&file);
}

#[test]
fn record_onto_a_full_disk_is_a_clear_error_and_the_file_replays() {
    if !privileged("record_onto_a_full_disk_is_a_clear_error_and_the_file_replays") {
        return;
    }
    let mount = memory_mount();
    let parent = TestParent::new("full", &[&mount]).expect("test parent");
    // Room for the header and baseline (they grow with the machine's cgroups) plus 64 KiB.
    let probe_file = tmp("full-probe.cgtrace");
    let _ = fs::remove_file(&probe_file);
    let out = cgtrace(&[
        "record",
        "-o",
        &probe_file.to_string_lossy(),
        "--subtree",
        &parent.cgroup_path(),
        "--duration",
        "1s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = fs::metadata(&probe_file).expect("probe session").len();
    let _ = fs::remove_file(&probe_file);
    let size = (base + (64 << 10)).div_ceil(4096) * 4096;
    let dir = tmp("tinyfs");
    fs::create_dir_all(&dir).expect("dir");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount");
    assert!(st.success(), "mount a tiny tmpfs");
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _umount = Umount(dir.clone());
    let file = dir.join("s.cgtrace");
    let file_s = file.to_string_lossy().into_owned();
    let (mut rec, err) = spawn(
        &["record", "-o", &file_s, "--subtree", &parent.cgroup_path()],
        Stdio::null(),
    );
    // Distinct names: nothing interns away; the 64 KiB fill up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    let status = loop {
        let d = parent
            .dir(&mount)
            .join(format!("full-{i:08}-{}", "p".repeat(80)));
        fs::create_dir(&d).expect("mkdir");
        fs::remove_dir(&d).expect("rmdir");
        i += 1;
        if let Some(s) = rec.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "record did not stop on a full disk"
        );
    };
    let err = err.join().expect("stderr");
    assert!(!status.success(), "{status}");
    assert!(
        err.contains("No space left on device") && err.contains("s.cgtrace"),
        "{err}"
    );
    let bytes = fs::read(&file).expect("partial session");
    let (events, _) = read_events(&bytes).expect("the partial file reads");
    assert!(!events.is_empty());
    let out = cgtrace(&["replay", &file_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_files_get_one_line_errors() {
    let junk = tmp("junk.txt");
    fs::write(&junk, "this is not a cgtrace session\n").expect("write");
    let empty = tmp("empty.cgtrace");
    fs::write(&empty, b"").expect("write");
    for f in [&junk, &empty, &tmp("does-not-exist")] {
        for verb in ["replay", "report"] {
            let out = cgtrace(&[verb, &f.to_string_lossy()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{verb} {}: {err}", f.display());
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!err.contains("panicked"));
        }
    }
    let out = cgtrace(&["replay", "--speed", "fast", &junk.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    // An existing output file is refused without --force; a missing directory is a usage error.
    let out = cgtrace(&["record", "-o", &junk.to_string_lossy(), "--duration", "1s"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force") || !privileged_quiet());
    let out = cgtrace(&["record", "-o", "/nonexistent-dir/x.cgtrace"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = fs::remove_file(&junk);
    let _ = fs::remove_file(&empty);
}

fn privileged_quiet() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
