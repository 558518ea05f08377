//! `cgtrace top` in a real terminal: tmux runs it while the test makes kubelet-style pod
//! cgroups with dying memcgs (pinned by tmpfs pages) under a parent of its own; `tmux
//! capture-pane` must show each pod with the dying count the test made and the memory the kernel
//! charged to those memcgs (read from the memcg just before each rmdir). A `cgtrace record` of
//! the same run, replayed with `top --replay`, must show the same pod rows, and every replay of
//! it the same screen. Each way of ending the view — q, Esc, Ctrl-C, SIGTERM, SIGINT, the
//! terminal going away — must end it at once and leave the terminal as it was.
use std::{
    collections::HashMap,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Layout, Scratch,
    binary::{Running, cgtrace_bin, have_tool, spawn_attached},
    cgroup::{PinFiles, TestParent, dying_memcg, privileged},
};

/// A tmux server of the test's own (its own socket, no user configuration). On drop (after a
/// panic too) it is killed, and every process it ran is waited for (SIGKILLed if a hang-up
/// did not end it within 10 s).
struct Tmux {
    socket: String,
    /// The server's pid and each pane's first process.
    pids: Vec<i32>,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("cgtrace-{tag}-{}", std::process::id()),
            pids: Vec::new(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    /// `#{format}` of session `name`.
    fn show(&self, name: &str, format: &str) -> String {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", name, format])
            .stderr(Stdio::null())
            .output()
            .expect("run tmux display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs `shell_command` in a new detached session `name` of `w`×`h` cells, whose pane stays
    /// (dead, its screen kept) after the command exits; returns the pane's process id.
    fn start(&mut self, name: &str, w: u16, h: u16, shell_command: &str) -> i32 {
        let st = self
            .cmd()
            .args(["new-session", "-d", "-s", name, "-x", &w.to_string()])
            .args(["-y", &h.to_string(), shell_command])
            .args([";", "set-option", "-t", name, "remain-on-exit", "on"])
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session {shell_command}");
        for f in ["#{pid}", "#{pane_pid}"] {
            if let Ok(pid) = self.show(name, f).parse()
                && !self.pids.contains(&pid)
            {
                self.pids.push(pid);
            }
        }
        self.show(name, "#{pane_pid}")
            .parse()
            .unwrap_or_else(|e| panic!("pane pid of {name}: {e}"))
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
        let st = self
            .cmd()
            .args(["send-keys", "-t", name, keys])
            .status()
            .expect("run tmux send-keys");
        assert!(st.success(), "tmux send-keys {keys}");
    }

    /// The pane's command has exited.
    fn exited(&self, name: &str) -> bool {
        self.show(name, "#{pane_dead}") == "1"
    }

    /// Closes session `name`: its terminal goes away under what runs there (a hang-up).
    fn kill_session(&self, name: &str) {
        let st = self
            .cmd()
            .args(["kill-session", "-t", name])
            .status()
            .expect("run tmux kill-session");
        assert!(st.success(), "tmux kill-session {name}");
    }

    /// `cgtrace top ARGS` as the command of a new 160×45 session `name`, once its screen shows
    /// `ready`; returns its pid.
    fn start_top(&mut self, name: &str, args: &str, ready: &str) -> i32 {
        let bin = cgtrace_bin().display();
        let pid = self.start(name, 160, 45, &format!("exec {bin} top {args}"));
        self.wait_for(name, ready, Duration::from_secs(60), |s| s.contains(ready));
        pid
    }

    /// Waits until `done(screen)` holds; panics with the last screen at the deadline, or at
    /// once if the pane's command exited.
    fn wait_for(&self, name: &str, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.capture(name);
            if done(&s) {
                return;
            }
            assert!(
                !self.exited(name),
                "{what}: the command exited; the screen:\n{s}"
            );
            assert!(Instant::now() < deadline, "{what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether process `pid` still runs (a zombie does not).
fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Waits up to `timeout` for `pid` to end; whether it did.
fn ends_within(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while running(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
        for &pid in &self.pids {
            if !ends_within(pid, Duration::from_secs(10)) {
                eprintln!("warning: process {pid} of tmux outlived its terminal; killing it");
                // SAFETY: kill(2) on a process this test had tmux start, still running.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The pod row of `uid` on a screen: each column's text under its header (the header row of
/// the same table, the box-drawing borders left out).
fn pod_row(screen: &str, uid: &str) -> Option<HashMap<String, String>> {
    let lines: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let text = |l: &[char]| l.iter().collect::<String>();
    let row = lines.iter().position(|l| text(l).contains(uid))?;
    let header = lines[..row]
        .iter()
        .rposition(|l| text(l).contains("DYING") && text(l).contains("POD"))?;
    let head = &lines[header];
    let h = text(head);
    let start = h.find("DYING")?;
    let start = h[..start].chars().count();
    let end = (start..head.len())
        .find(|&i| head[i] == '│')
        .unwrap_or(head.len());
    // Column starts: where a name begins after a blank, up to the table's right border.
    let cols: Vec<usize> = (start..end)
        .filter(|&i| head[i] != ' ' && (i == start || head[i - 1] == ' '))
        .collect();
    let cells = &lines[row];
    let mut out = HashMap::new();
    for (k, &c) in cols.iter().enumerate() {
        let stop = cols.get(k + 1).copied().unwrap_or(end).min(cells.len());
        let name: String = head[c..].iter().take_while(|&&ch| ch != ' ').collect();
        let cell: String = cells.get(c..stop).unwrap_or_default().iter().collect();
        out.insert(name, cell.trim().to_string());
    }
    Some(out)
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
fn parse_bytes(shown: &str) -> f64 {
    let (num, unit) = shown.split_once(' ').unwrap_or((shown, "B"));
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

/// How a replay's view is ended.
#[derive(Clone, Copy, Debug)]
enum End {
    Key(&'static str),
    Signal(i32),
}

/// `top --replay SESSION` in tmux session `name` under a shell that, once top has exited,
/// writes top's exit status and `stty -a` to a file; returns the screen at the end of the
/// session. `end` ends it, which must happen at once, with exit status 0, the terminal's modes
/// back and top's screen gone.
fn replay_and_end(
    tmux: &mut Tmux,
    scratch: &Path,
    name: &str,
    env: &str,
    session: &Path,
    end: End,
) -> String {
    let bin = cgtrace_bin().display().to_string();
    let pid_file = scratch.join(format!("{name}.pid"));
    let stty_file = scratch.join(format!("{name}.stty"));
    let script = scratch.join(format!("{name}.sh"));
    fs::write(
        &script,
        format!(
            "{env} sh -c 'echo $$ > {pid}; exec {bin} top --replay {session} --speed max'\n\
             echo \"exit $?\" > {stty}.tmp; stty -a >> {stty}.tmp; mv {stty}.tmp {stty}\n",
            pid = pid_file.display(),
            session = session.display(),
            stty = stty_file.display(),
        ),
    )
    .expect("write the replay script");
    tmux.start(name, 160, 45, &format!("sh {}", script.display()));
    tmux.wait_for(
        name,
        "the replay reaches the end of the session",
        Duration::from_secs(30),
        |s| s.contains("end of session"),
    );
    let screen = tmux.capture(name);
    let pid: i32 = fs::read_to_string(&pid_file)
        .expect("top's pid")
        .trim()
        .parse()
        .expect("a pid");
    let t0 = Instant::now();
    match end {
        End::Key(k) => tmux.keys(name, k),
        End::Signal(sig) => {
            // SAFETY: kill(2) on the top process this test started (its pid from its shell).
            assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill top");
        }
    }
    let deadline = t0 + Duration::from_secs(5);
    while !stty_file.exists() {
        assert!(Instant::now() < deadline, "top did not exit on {end:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("top --replay ended on {end:?} after {:?}", t0.elapsed());
    let after = fs::read_to_string(&stty_file).expect("stty output");
    assert!(
        after.starts_with("exit 0"),
        "top's exit on {end:?}: {after}"
    );
    let modes: Vec<&str> = after.split_whitespace().collect();
    for m in ["icanon", "echo", "isig", "opost"] {
        assert!(
            modes.contains(&m),
            "{m} not restored after {end:?}: {after}"
        );
    }
    let left = tmux.capture(name);
    assert!(
        !left.contains("cgtrace top —"),
        "top's screen is still showing after it exited on {end:?}:\n{left}"
    );
    screen
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
    let scratch = Scratch::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "top");
    let mut pins = PinFiles::default();
    let pin_dir = PinFiles::dir(scratch.path());
    let session = scratch.path().join("top.session");
    let subtree = parent.cgroup_path();
    let mut tmux = Tmux::new("top");

    let (record, record_err) = spawn_attached(
        &[
            "record",
            "-o",
            &session.display().to_string(),
            "--subtree",
            &subtree,
        ],
        Stdio::null(),
    );
    let mut record = Running::new("cgtrace record", record);
    let err_log = scratch.path().join("top-live.stderr");
    let live_pid = tmux.start_top(
        "live",
        &format!("--subtree {subtree} 2>{}", err_log.display()),
        "cgtrace top — live",
    );

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
            let file = pins.add(&pin_dir, &format!("cgtrace-top-pin-{i}-{c}"));
            let ctr = pod.join(format!("{:064x}", 0x70b0_0000_u64 + (i as u64) * 16 + c));
            bytes += dying_memcg(&ctr, &file, 4 << 20);
        }
        charged.push(bytes);
    }

    // The live screen: each pod with its dying memcgs, its live pod cgroup, the charged bytes.
    tmux.wait_for(
        "live",
        "the live screen shows both pods with their dying counts",
        Duration::from_secs(20),
        |s| {
            pods.iter().all(|(_, uid, n)| {
                pod_row(s, uid).is_some_and(|r| r.get("DYING") == Some(&n.to_string()))
            })
        },
    );
    let live_screen = tmux.capture("live");
    for ((qos, uid, n), bytes) in pods.iter().zip(&charged) {
        let row = pod_row(&live_screen, uid).expect("pod row");
        let col = |c: &str| row.get(c).map_or("", String::as_str);
        assert_eq!(col("DYING"), n.to_string(), "dying count of {uid}");
        assert_eq!(col("LIVE"), "1", "the pod cgroup itself is live: {row:?}");
        assert_eq!(col("FREED"), "0", "nothing freed: {row:?}");
        assert_eq!(col("QOS"), *qos);
        assert!(col("POD").contains(uid), "{row:?}");
        assert!(
            col("OLDEST").ends_with('s'),
            "the oldest dying memcg's age: {row:?}"
        );
        let shown = parse_bytes(col("BYTES"));
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

    // The recording ends; the live rows are kept to compare with the replay's.
    let st = record.stop();
    assert!(st.is_some_and(|s| s.success()), "record: {st:?}");
    let record_err = record_err.join().unwrap_or_default();
    assert!(!record_err.contains("error"), "record: {record_err}");
    let live_screen = tmux.capture("live");
    let live_rows: Vec<HashMap<String, String>> = pods
        .iter()
        .map(|(_, uid, _)| pod_row(&live_screen, uid).expect("pod row"))
        .collect();

    // The terminal goes away under the live view (its window closed): it must end, not spin.
    tmux.kill_session("live");
    assert!(
        ends_within(live_pid, Duration::from_secs(10)),
        "top kept running after its terminal went away"
    );
    let err = fs::read_to_string(&err_log).unwrap_or_default();
    assert!(
        err.starts_with("cgtrace: attached") && !err.contains("panicked"),
        "top's stderr: {err}"
    );

    // The replay of the recording: the same pod rows (but the age of the oldest dying memcg,
    // which is taken at the end of the recording there and a moment later live). No
    // attributes under NO_COLOR.
    let replay_screen = replay_and_end(
        &mut tmux,
        scratch.path(),
        "replay",
        "NO_COLOR=1",
        &session,
        End::Signal(libc::SIGTERM),
    );
    for ((_, uid, _), mut live) in pods.iter().zip(live_rows) {
        let mut replayed = pod_row(&replay_screen, uid)
            .unwrap_or_else(|| panic!("{uid} in the replay:\n{replay_screen}"));
        live.remove("OLDEST");
        replayed.remove("OLDEST");
        assert_eq!(
            replayed, live,
            "{uid}: replay and live differ\n{replay_screen}"
        );
    }
    let styled = styles(&tmux.capture_styled("replay"));
    assert!(styled.is_empty(), "NO_COLOR, yet attributes: {styled:?}");

    // Every other way of ending it; each replay of the session draws the same screen.
    for (k, end) in [
        End::Key("q"),
        End::Key("Escape"),
        End::Key("C-c"),
        End::Signal(libc::SIGINT),
        End::Signal(libc::SIGHUP),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("replay{k}");
        let screen = replay_and_end(&mut tmux, scratch.path(), &name, "", &session, end);
        assert_eq!(
            screen, replay_screen,
            "another replay of the same session drew another screen"
        );
    }

    // A replay whose terminal goes away.
    let replay_args = format!("--replay {} --speed max", session.display());
    let pid = tmux.start_top("gone", &replay_args, "end of session");
    tmux.kill_session("gone");
    assert!(
        ends_within(pid, Duration::from_secs(10)),
        "top --replay kept running after its terminal went away"
    );
    drop(tmux);
    drop(pins);
}
