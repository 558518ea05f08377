//! The reliability suite: a 100,000-cycle soak with exact counts and flat memory, concurrent
//! writers plus a real runtime, hostile cgroup names. Runs the real binary as an operator would.
use std::{
    collections::HashMap,
    ffi::OsStr,
    fs,
    io::{BufRead, BufReader, Read},
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use cgtrace::kernel::hierarchy::Hierarchies;
use integration_tests::{
    binary::cgtrace_command,
    cgroup::{TestParent, privileged},
};

/// One test at a time: the soak measures rates and memory.
static SERIAL: Mutex<()> = Mutex::new(());

fn memory_mount() -> (u32, PathBuf) {
    let h = Hierarchies::load().expect("hierarchies");
    let m = h.with_controller("memory").expect("memory hierarchy");
    (m.id, m.mount.clone().expect("memory mount"))
}

/// `cgtrace live --json` with stdout to a file; returns once it is attached.
fn start_live(args: &[&str], out: &Path) -> Child {
    let file = fs::File::create(out).expect("output file");
    let mut full = vec!["live", "--json"];
    full.extend_from_slice(args);
    integration_tests::binary::spawn_attached(&full, Stdio::from(file)).0
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until `path` stops growing for `quiet`, at most `max`.
fn wait_quiet(path: &Path, quiet: Duration, max: Duration) {
    let deadline = Instant::now() + max;
    let mut last = (0u64, Instant::now());
    while Instant::now() < deadline {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() >= quiet {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGINT, wait, and parse the output: events by (kind, hierarchy) and the summary.
fn stop_and_read(mut child: Child, out: &Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "cgtrace did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let text = fs::read(out).expect("read output");
    let mut lines: Vec<serde_json::Value> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("every line is valid JSON"))
        .collect();
    let summary = lines.pop().expect("summary line");
    assert_eq!(summary["type"], "summary");
    (lines, summary)
}

fn count(events: &[serde_json::Value], kind: &str, h: u32) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == kind && e["hierarchy_id"] == h)
        .count()
}

#[test]
fn soak_100k_cycles_exact_counts_flat_memory() {
    if !privileged("soak_100k_cycles_exact_counts_flat_memory") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mem_id, mount) = memory_mount();
    let parent = TestParent::new("soak", &[&mount]).expect("test parent");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{}.jsonl", std::process::id()));
    let prefix = format!("{}/", parent.cgroup_path());
    let child = start_live(&["--path-prefix", &prefix], &out);
    let pid = child.id();
    const N: usize = 100_000;
    let dir = parent.dir(&mount);
    let mut rss_10k = 0;
    let t0 = Instant::now();
    for i in 0..N {
        let c = dir.join(format!("c{}", i % 64));
        fs::create_dir(&c).expect("mkdir");
        fs::remove_dir(&c).expect("rmdir");
        if i + 1 == 10_000 {
            std::thread::sleep(Duration::from_millis(300));
            rss_10k = rss_kib(pid);
        }
    }
    let rate = N as f64 / t0.elapsed().as_secs_f64();
    wait_quiet(&out, Duration::from_secs(2), Duration::from_secs(60));
    let rss_end = rss_kib(pid);
    let (events, summary) = stop_and_read(child, &out);
    eprintln!(
        "soak: {N} cycles at {rate:.0}/s; RSS {rss_10k} KiB after 10k, {rss_end} KiB at the end"
    );
    assert_eq!(count(&events, "mkdir", mem_id), N);
    assert_eq!(count(&events, "rmdir", mem_id), N);
    assert_eq!(
        count(&events, "release", mem_id),
        N,
        "every empty memcg is freed"
    );
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["events"]["mkdir"], N);
    assert!(rss_10k > 0);
    // Freed cgroups leave nothing behind: memory stays flat (allow 4 MiB of allocator noise).
    assert!(
        rss_end <= rss_10k + 4096,
        "RSS grew from {rss_10k} KiB to {rss_end} KiB"
    );
    let _ = fs::remove_file(&out);
}

#[test]
fn concurrent_writers_and_a_runtime_counts_stay_exact() {
    if !privileged("concurrent_writers_and_a_runtime_counts_stay_exact") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let h = Hierarchies::load().expect("hierarchies");
    let (mem_id, mount) = memory_mount();
    let mounts: Vec<PathBuf> = h.by_id.values().filter_map(|x| x.mount.clone()).collect();
    let refs: Vec<&Path> = mounts.iter().map(PathBuf::as_path).collect();
    let parent = TestParent::new("conc", &refs).expect("test parent");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("conc-{}.jsonl", std::process::id()));
    let child = start_live(&["--subtree", &parent.cgroup_path()], &out);

    const PER_WRITER: usize = 20_000;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let dir = parent.dir(&mount).join(format!("w{w}"));
            fs::create_dir(&dir).expect("writer dir");
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let c = dir.join(format!("c{}", i % 32));
                    fs::create_dir(&c).expect("mkdir");
                    fs::remove_dir(&c).expect("rmdir");
                }
            })
        })
        .collect();
    // A real runtime at the same time: runc containers in a kubelet-style cgroup path.
    const CONTAINERS: usize = 3;
    let bundle =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("conc-bundle-{}", std::process::id()));
    fs::create_dir_all(bundle.join("rootfs/bin")).expect("bundle");
    fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox")).expect("busybox");
    assert!(
        Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .status()
            .expect("runc spec")
            .success()
    );
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(&cfg_path).expect("cfg")).expect("json");
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/busybox", "true"]);
    let mut ctr_ids = Vec::new();
    for i in 0..CONTAINERS {
        let ctr = format!("{:064x}", 0xc0de_0000 + i);
        cfg["linux"]["cgroupsPath"] = format!(
            "{}/kubepods/besteffort/pod5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6/{ctr}",
            parent.cgroup_path()
        )
        .into();
        fs::write(&cfg_path, serde_json::to_vec(&cfg).expect("json")).expect("write cfg");
        let id = format!("cgtrace-conc-{}-{i}", std::process::id());
        let st = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .status()
            .expect("runc run");
        let _ = Command::new("runc")
            .args(["delete", "--force", &id])
            .status();
        assert!(st.success());
        ctr_ids.push(ctr);
    }
    for w in writers {
        w.join().expect("writer thread");
    }
    wait_quiet(&out, Duration::from_secs(2), Duration::from_secs(60));
    let (events, summary) = stop_and_read(child, &out);
    let writer_events = |kind: &str| {
        events
            .iter()
            .filter(|e| {
                e["event"] == kind
                    && e["hierarchy_id"] == mem_id
                    && e["path"]
                        .as_str()
                        .is_some_and(|p| p.contains("/w0/c") || p.contains("/w1/c"))
            })
            .count()
    };
    assert_eq!(writer_events("mkdir"), 2 * PER_WRITER);
    assert_eq!(writer_events("rmdir"), 2 * PER_WRITER);
    // Each container's cgroup: one mkdir and one rmdir in every hierarchy runc uses, attributed.
    for ctr in &ctr_ids {
        let mk: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| {
                e["event"] == "mkdir"
                    && e["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(ctr.as_str()))
            })
            .collect();
        assert!(
            mk.iter().any(|e| e["hierarchy_id"] == mem_id),
            "{ctr} in the memory hierarchy"
        );
        let mut per_h: HashMap<u64, usize> = HashMap::new();
        for e in &mk {
            *per_h
                .entry(e["hierarchy_id"].as_u64().unwrap_or(999))
                .or_default() += 1;
            assert_eq!(e["container_id"], ctr.as_str());
            assert_eq!(e["pod_uid"], "5f0c6e1a-7b2d-4c3e-9f10-a1b2c3d4e5f6");
        }
        assert!(per_h.values().all(|&n| n == 1), "{ctr}: {per_h:?}");
    }
    assert_eq!(summary["lost"], 0);
    let _ = fs::remove_dir_all(&bundle);
    let _ = fs::remove_file(&out);
}

#[test]
fn hostile_names_are_escaped_valid_and_truncation_is_flagged() {
    if !privileged("hostile_names_are_escaped_valid_and_truncation_is_flagged") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mem_id, mount) = memory_mount();
    let parent = TestParent::new("hostile", &[&mount]).expect("test parent");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-{}.jsonl", std::process::id()));
    // A path prefix rather than a subtree: the level is then left to the path's components
    // where the path is whole, and read in the kernel where it is cut.
    let prefix = format!("{}/", parent.cgroup_path());
    let parent_level = parent
        .cgroup_path()
        .split('/')
        .filter(|c| !c.is_empty())
        .count() as u64;
    let child = start_live(&["--path-prefix", &prefix], &out);
    let names: Vec<Vec<u8>> = vec![
        b"esc\x1b[2J\x1b]0;title\x07".to_vec(),
        b"tab\there".to_vec(),
        b"quote\"s'and\\back".to_vec(),
        b"bad\xff\xfe\xc3utf8".to_vec(),
        vec![b'x'; 255],
    ];
    let dir = parent.dir(&mount);
    let mut inodes = Vec::new();
    for n in &names {
        let p = dir.join(OsStr::from_bytes(n));
        fs::create_dir(&p).expect("mkdir hostile name");
        inodes.push(fs::metadata(&p).expect("stat").ino());
    }
    // Deep nesting beyond the in-kernel path buffer.
    let mut deep = dir.clone();
    for i in 0..6 {
        deep = deep.join(format!("{i}{}", "d".repeat(60)));
        fs::create_dir(&deep).expect("mkdir deep");
    }
    let deep_ino = fs::metadata(&deep).expect("stat").ino();
    wait_quiet(&out, Duration::from_secs(1), Duration::from_secs(20));
    let (events, _) = stop_and_read(child, &out);
    let mk: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "mkdir" && e["hierarchy_id"] == mem_id)
        .collect();
    for (n, ino) in names.iter().zip(&inodes) {
        let e = mk
            .iter()
            .find(|e| e["cgroup_id"].as_u64() == Some(*ino))
            .unwrap_or_else(|| panic!("no event for {n:?}"));
        assert_eq!(e["level"].as_u64(), Some(parent_level + 1), "{e}");
        if let Ok(s) = std::str::from_utf8(n) {
            let full = format!("{}/{s}", parent.cgroup_path());
            if e["path_truncated"] == true {
                // Cut to the event's buffer, still attributed by its id.
                assert!(
                    e["path"].as_str().is_some_and(|p| full.starts_with(p)),
                    "{e}"
                );
            } else {
                assert_eq!(e["path"], full.as_str());
            }
        } else {
            assert_eq!(e["path_lossy"], true);
        }
    }
    let d = mk
        .iter()
        .find(|e| e["cgroup_id"].as_u64() == Some(deep_ino))
        .expect("event for the deep cgroup, attributed by id");
    assert_eq!(d["path_truncated"], true);
    assert_eq!(d["level"].as_u64(), Some(parent_level + 6), "{d}");
    // The same names through the text output: one line each, no control characters.
    let text_out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-{}.txt", std::process::id()));
    let file = fs::File::create(&text_out).expect("text out");
    let mut child = cgtrace_command()
        .args(["live", "--subtree", &parent.cgroup_path()])
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first).expect("attached line");
    assert!(first.starts_with("cgtrace: attached"), "{first}");
    for n in &names {
        fs::remove_dir(dir.join(OsStr::from_bytes(n))).expect("rmdir");
    }
    wait_quiet(&text_out, Duration::from_secs(1), Duration::from_secs(10));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().expect("wait").success());
    let text = fs::read(&text_out).expect("read text");
    let text = String::from_utf8(text).expect("text output is UTF-8");
    let rmdirs: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("rmdir"))
        .collect();
    assert_eq!(rmdirs.len(), names.len(), "{text}");
    for l in &rmdirs {
        assert!(!l.chars().any(|c| c.is_control()), "{l:?}");
    }
    assert!(text.contains("esc\\x1b[2J\\x1b]0;title\\x07"));
    assert!(text.contains("bad\\xff\\xfe\\xc3utf8"));
    let _ = fs::remove_file(&out);
    let _ = fs::remove_file(&text_out);
}

/// tracefs unmounted while cgtrace runs on classic tracepoints: reported, no hang, events go on.
#[test]
fn tracefs_unmounted_while_running_is_reported_not_a_hang() {
    if !privileged("tracefs_unmounted_while_running_is_reported_not_a_hang") {
        return;
    }
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tracefs) = cgtrace::kernel::tracefs::find() else {
        eprintln!("skipping: tracefs not mounted");
        return;
    };
    /// Mounts tracefs back where it was, even after a panic.
    struct Remount(PathBuf);
    impl Drop for Remount {
        fn drop(&mut self) {
            if cgtrace::kernel::tracefs::find().is_none() {
                let _ = Command::new("mount")
                    .args(["-t", "tracefs", "nodev"])
                    .arg(&self.0)
                    .status();
            }
        }
    }
    let (_, mount) = memory_mount();
    let parent = TestParent::new("tracefs", &[&mount]).expect("test parent");
    let mut child = cgtrace_command()
        .args([
            "live",
            "--json",
            "--tracepoints",
            "classic",
            "--subtree",
            &parent.cgroup_path(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("attached");
    assert!(line.starts_with("cgtrace: attached"), "{line}");
    let _remount = Remount(tracefs.clone());
    let st = Command::new("umount")
        .arg("-l")
        .arg(&tracefs)
        .status()
        .expect("umount");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(600));
    fs::create_dir(parent.dir(&mount).join("after")).expect("mkdir");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ev = String::new();
    out.read_line(&mut ev).expect("an event after the unmount");
    assert!(ev.contains("\"mkdir\"") && ev.contains("/after"), "{ev}");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "hang after tracefs went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).expect("stderr");
    assert!(rest.contains("tracefs was unmounted"), "{rest}");
}
