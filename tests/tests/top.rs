//! `cgtrace top` in a real terminal: tmux runs it while the test makes kubelet-style pod
//! cgroups with dying memcgs (pinned by tmpfs pages) under a parent of its own; `tmux
//! capture-pane` must show each pod with the dying count the test made and the memory the kernel
//! charged to those memcgs (read from `memory.usage_in_bytes` just before each rmdir). A
//! `cgtrace record` of the same run, replayed with `top --replay`, must show the same pod rows.
use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_tests::{
    Layout,
    binary::{cgtrace_bin, have_tool},
    cgroup::{TestParent, privileged},
};

/// A scratch directory under the target directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cgtrace-{tag}-{}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Files whose pages keep memcgs dying; removed on drop, which lets the kernel free them.
struct PinFiles(Vec<PathBuf>);

impl Drop for PinFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = fs::remove_file(f);
        }
    }
}

/// A tmux server of the test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("cgtrace-{tag}-{}", std::process::id()),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Runs `shell_command` in a new detached session `name` of `w`×`h` cells.
    fn start(&self, name: &str, w: u16, h: u16, shell_command: &str) {
        let st = self
            .cmd()
            .args(["new-session", "-d", "-s", name, "-x", &w.to_string()])
            .args(["-y", &h.to_string(), shell_command])
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session {shell_command}");
    }

    fn capture(&self, name: &str) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", name])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen with its attributes as escape sequences.
    fn capture_styled(&self, name: &str) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-e", "-t", name])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn resize(&self, name: &str, w: u16, h: u16) {
        let st = self
            .cmd()
            .args(["resize-window", "-t", name, "-x", &w.to_string()])
            .args(["-y", &h.to_string()])
            .status()
            .expect("run tmux resize-window");
        assert!(st.success(), "tmux resize-window");
    }

    fn keys(&self, name: &str, keys: &str) {
        let _ = self.cmd().args(["send-keys", "-t", name, keys]).status();
    }

    fn alive(&self, name: &str) -> bool {
        self.cmd()
            .args(["has-session", "-t", name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The screen once `done(screen)` holds; panics with the last screen at the deadline.
    fn wait_for(&self, name: &str, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.capture(name);
            if done(&s) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// A child process ended by SIGTERM (then SIGKILL) on drop.
struct Proc(Child);

impl Proc {
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cgtrace record`, returned once it says it is attached.
fn start_record(file: &Path, subtree: &str) -> (Proc, JoinHandle<String>) {
    let mut child = Command::new(cgtrace_bin())
        .args(["record", "-o"])
        .arg(file)
        .args(["--subtree", subtree])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cgtrace record");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first).expect("cgtrace's first line");
    let proc = Proc(child);
    assert!(first.starts_with("cgtrace: attached"), "record: {first}");
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    (proc, rest)
}

/// Makes `dir` (a memcg), runs a shell in it that writes 4 MiB to `file` (tmpfs: neither
/// reclaim without swap nor another test's drop_caches frees it) and exits, and removes `dir`.
/// Returns the memory the kernel charged to it just before the rmdir.
fn dying_memcg(dir: &Path, file: &Path) -> u64 {
    fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let script = format!(
        "echo $$ > '{}' && head -c 4194304 /dev/zero > '{}'",
        dir.join("cgroup.procs").display(),
        file.display()
    );
    let st = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .expect("run sh");
    assert!(st.success(), "{script}");
    let usage: u64 = fs::read_to_string(dir.join("memory.usage_in_bytes"))
        .expect("memory.usage_in_bytes")
        .trim()
        .parse()
        .expect("a number");
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = fs::remove_dir(dir) {
        assert!(Instant::now() < deadline, "rmdir {}: {e}", dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    usage
}

/// The pod row of `uid` on a screen, as its cells (the box-drawing borders dropped).
fn pod_row(screen: &str, uid: &str) -> Option<Vec<String>> {
    let line = screen.lines().find(|l| l.contains(uid))?;
    let inner = line.split('│').find(|cell| cell.contains(uid))?;
    Some(inner.split_whitespace().map(str::to_string).collect())
}

/// The parameters of the SGR sequences (`ESC [ … m`) on a screen that set an attribute or a
/// colour (not the resets).
fn styles(screen: &str) -> Vec<String> {
    screen
        .split("\x1b[")
        .skip(1)
        .filter_map(|s| s.find('m').map(|i| &s[..i]))
        .filter(|p| p.chars().all(|c| c.is_ascii_digit() || c == ';'))
        .filter(|p| !p.split(';').all(|x| matches!(x, "" | "0" | "39" | "49")))
        .map(str::to_string)
        .collect()
}

/// "4.0 MiB" → bytes (the view's one-decimal binary units).
fn parse_bytes(num: &str, unit: &str) -> f64 {
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    let m = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    v * m
}

#[test]
fn top_shows_the_pods_in_a_terminal_and_a_replay_shows_the_same() {
    let test = "top_shows_the_pods_in_a_terminal_and_a_replay_shows_the_same";
    if !privileged(test) || !have_tool(test, "tmux") {
        return;
    }
    let layout = Layout::load();
    let mount = layout.memory_mount.clone();
    // Declared first, dropped last: the cgroups go after everything that uses them.
    let parent = TestParent::new("top", &[&mount]).expect("test parent");
    let scratch = Scratch::new("top");
    let mut pins = PinFiles(Vec::new());
    let shm = Path::new("/dev/shm");
    let pin_dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        scratch.0.clone()
    };
    let session = scratch.0.join("top.session");
    let subtree = parent.cgroup_path();
    let tmux = Tmux::new("top");
    let bin = cgtrace_bin().display().to_string();

    let (mut record, record_err) = start_record(&session, &subtree);
    let err_log = scratch.0.join("top-live.stderr");
    tmux.start(
        "live",
        160,
        45,
        &format!("exec {bin} top --subtree {subtree} 2>{}", err_log.display()),
    );
    tmux.wait_for("live", "top starts", Duration::from_secs(60), |s| {
        s.contains("cgtrace top — live")
    });

    // Kubelet-style pods (cgroupfs driver) with container memcgs kept dying by tmpfs pages.
    let top = parent.dir(&mount);
    let pods = [
        ("burstable", "7a1c0de5-1111-4c3b-9d4e-5f6a7b8c9d01", 2u64),
        ("besteffort", "7a1c0de5-2222-4c3b-9d4e-5f6a7b8c9d02", 1),
    ];
    fs::create_dir(top.join("kubepods")).expect("mkdir kubepods");
    let mut charged = Vec::new();
    for (i, (qos, uid, n)) in pods.iter().enumerate() {
        let qdir = top.join("kubepods").join(qos);
        fs::create_dir(&qdir).expect("mkdir qos");
        let pod = qdir.join(format!("pod{uid}"));
        fs::create_dir(&pod).expect("mkdir pod");
        let mut bytes = 0;
        for c in 0..*n {
            let file = pin_dir.join(format!("cgtrace-top-{}-pin-{i}-{c}", std::process::id()));
            pins.0.push(file.clone());
            bytes += dying_memcg(
                &pod.join(format!("{:064x}", 0x70b0_0000_u64 + (i as u64) * 16 + c)),
                &file,
            );
        }
        charged.push(bytes);
    }

    // The live screen: each pod with its dying memcgs, its live pod cgroup, the charged bytes.
    tmux.wait_for(
        "live",
        "the live screen shows both pods with their dying counts",
        Duration::from_secs(20),
        |s| {
            pods.iter()
                .all(|(_, uid, n)| pod_row(s, uid).is_some_and(|r| r[0] == n.to_string()))
        },
    );
    let live_screen = tmux.capture("live");
    for ((qos, uid, n), bytes) in pods.iter().zip(&charged) {
        let row = pod_row(&live_screen, uid).expect("pod row");
        // DYING OLDEST BYTES(num unit) LIVE FREED QOS POD
        assert_eq!(row.len(), 8, "{row:?}\n{live_screen}");
        assert_eq!(row[0], n.to_string(), "dying count of {uid}");
        assert_eq!(row[4], "1", "the pod cgroup itself is live: {row:?}");
        assert_eq!(row[5], "0", "nothing freed: {row:?}");
        assert_eq!(row[6], *qos);
        let shown = parse_bytes(&row[2], &row[3]);
        let want = *bytes as f64;
        assert!(
            (shown - want).abs() <= want * 0.05 + 0.06 * 1024.0 * 1024.0,
            "{uid}: {shown} bytes shown, the kernel charged {want} before the rmdirs"
        );
    }
    assert!(
        live_screen.contains("failed mkdirs 0") && live_screen.contains("lost 0"),
        "{live_screen}"
    );

    assert!(
        !styles(&tmux.capture_styled("live")).is_empty(),
        "the live screen has no attributes (colours, bold, reverse) at all"
    );

    // A resize redraws the screen at the new size (the narrow layout: tables stacked).
    tmux.resize("live", 100, 32);
    tmux.wait_for(
        "live",
        "after a resize to 100x32 the pods are still shown, within 100 columns",
        Duration::from_secs(10),
        |s| {
            s.lines().count() <= 32
                && s.lines().all(|l| l.chars().count() <= 100)
                && s.lines().any(|l| l.starts_with("q quit"))
                && pods.iter().all(|(_, uid, _)| pod_row(s, uid).is_some())
        },
    );
    tmux.resize("live", 160, 45);
    tmux.wait_for(
        "live",
        "redrawn at 160x45 again",
        Duration::from_secs(10),
        |s| {
            s.lines().any(|l| l.starts_with("q quit") && l.len() < 160)
                && s.lines().any(|l| l.chars().count() >= 150)
                && pods.iter().all(|(_, uid, _)| pod_row(s, uid).is_some())
        },
    );

    // The recording ends; top quits on q and gives the terminal back.
    record.stop();
    let record_err = record_err.join().unwrap_or_default();
    assert!(!record_err.contains("error"), "record: {record_err}");
    let live_rows: Vec<Vec<String>> = pods
        .iter()
        .map(|(_, uid, _)| pod_row(&tmux.capture("live"), uid).expect("pod row"))
        .collect();
    tmux.keys("live", "q");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive("live") {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = fs::read_to_string(&err_log).unwrap_or_default();
    assert!(
        err.starts_with("cgtrace: attached") && !err.contains("panicked"),
        "top's stderr: {err}"
    );

    // The replay of the recording: the same pod rows (but the age of the oldest dying memcg,
    // which is taken at the end of the recording there and a moment later live). A shell runs
    // it and, once it has exited, records the terminal's modes.
    let pid_file = scratch.0.join("top-replay.pid");
    let stty_file = scratch.0.join("stty-after");
    let script = scratch.0.join("replay.sh");
    fs::write(
        &script,
        format!(
            "NO_COLOR=1 sh -c 'echo $$ > {pid}; exec {bin} top --replay {session} --speed max'\n\
             echo \"exit $?\" > {stty}.tmp; stty -a >> {stty}.tmp; mv {stty}.tmp {stty}\n\
             sleep 60\n",
            pid = pid_file.display(),
            session = session.display(),
            stty = stty_file.display(),
        ),
    )
    .expect("write the replay script");
    tmux.start("replay", 160, 45, &format!("sh {}", script.display()));
    tmux.wait_for(
        "replay",
        "the replay reaches the end of the session",
        Duration::from_secs(30),
        |s| s.contains("end of session"),
    );
    let replay_screen = tmux.capture("replay");
    let without_age = |mut r: Vec<String>| {
        r.remove(1);
        r
    };
    for ((_, uid, _), live) in pods.iter().zip(live_rows) {
        let replayed = pod_row(&replay_screen, uid)
            .unwrap_or_else(|| panic!("{uid} in the replay:\n{replay_screen}"));
        assert_eq!(
            without_age(replayed),
            without_age(live),
            "{uid}: replay and live differ\n{replay_screen}"
        );
    }
    let styled = styles(&tmux.capture_styled("replay"));
    assert!(styled.is_empty(), "NO_COLOR, yet attributes: {styled:?}");

    // SIGTERM ends it and the terminal is as it was: canonical mode and echo back, the main
    // screen (not top's) showing.
    let pid: i32 = fs::read_to_string(&pid_file)
        .expect("top's pid")
        .trim()
        .parse()
        .expect("a pid");
    // SAFETY: kill(2) on the top process this test started (its pid from its own shell).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill top");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stty_file.exists() {
        assert!(Instant::now() < deadline, "top did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = fs::read_to_string(&stty_file).expect("stty output");
    assert!(after.starts_with("exit 0"), "top's exit: {after}");
    let modes: Vec<&str> = after.split_whitespace().collect();
    for m in ["icanon", "echo", "isig", "opost"] {
        assert!(
            modes.contains(&m),
            "{m} not restored after SIGTERM: {after}"
        );
    }
    let screen = tmux.capture("replay");
    assert!(
        !screen.contains("cgtrace top —"),
        "top's screen is still showing after it exited:\n{screen}"
    );
    drop(pins);
}
