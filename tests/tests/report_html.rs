//! `cgtrace report --html`: a recording of real cgroup activity under the test's own parent (a
//! storm of short-lived `job-<n>` cgroups and kubelet-style pods whose container memcgs tmpfs
//! pages keep dying) rendered to one page, which Debian's headless Chromium, kept off the
//! network, loads: no console message, every plot an `<svg>` in the rendered DOM, the pods with
//! the dying counts the test made, the churn_storm verdict, and a screenshot that is not blank.
use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_tests::{
    Layout,
    binary::{cgtrace_bin, have_tool},
    cgroup::{TestParent, privileged},
};

/// The plots the page must have, by figure id.
const PLOTS: [&str; 5] = [
    "plot-dying",
    "plot-churn",
    "plot-headroom",
    "plot-live",
    "plot-dying-lifetimes",
];

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

/// `cgtrace record`, ended by SIGTERM.
struct Record(Child);

impl Record {
    fn start(file: &Path, subtree: &str) -> Record {
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
        assert!(first.starts_with("cgtrace: attached"), "record: {first}");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
        });
        Record(child)
    }

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

impl Drop for Record {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes `dir` (a memcg), writes 2 MiB to the tmpfs `file` from a shell in it, removes `dir`.
fn dying_memcg(dir: &Path, file: &Path) {
    fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let script = format!(
        "echo $$ > '{}' && head -c 2097152 /dev/zero > '{}'",
        dir.join("cgroup.procs").display(),
        file.display()
    );
    let st = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .expect("run sh");
    assert!(st.success(), "{script}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = fs::remove_dir(dir) {
        assert!(Instant::now() < deadline, "rmdir {}: {e}", dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Headless Chromium on a local file, kept off the network (a dead proxy, no name resolves,
/// no background services), with its own profile directory.
fn chromium(profile: &Path, page: &Path, args: &[&str]) -> Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--window-size=1000,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Console messages in Chromium's log (errors, CSP violations, uncaught exceptions).
fn console_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect()
}

/// The text of the element opened by `open` up to the next `close`.
fn section<'a>(html: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = html.find(open)?;
    let rest = &html[i..];
    let j = rest.find(close)?;
    Some(&rest[..j])
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let test = "html_report_renders_in_headless_chromium";
    if !privileged(test) || !have_tool(test, "chromium") {
        return;
    }
    let layout = Layout::load();
    let mount = layout.memory_mount.clone();
    // Declared first, dropped last: the cgroups go after everything that uses them.
    let parent = TestParent::new("html", &[&mount]).expect("test parent");
    let scratch = Scratch::new("html");
    let mut pins = PinFiles(Vec::new());
    let shm = Path::new("/dev/shm");
    let pin_dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        scratch.0.clone()
    };
    let session = scratch.0.join("run.session");
    let page = scratch.0.join("report.html");
    let top = parent.dir(&mount);

    let mut record = Record::start(&session, &parent.cgroup_path());
    let pods = [
        ("burstable", "4c7e0de5-aaaa-4c3b-9d4e-5f6a7b8c9d01", 3u64),
        ("besteffort", "4c7e0de5-bbbb-4c3b-9d4e-5f6a7b8c9d02", 1),
    ];
    fs::create_dir(top.join("kubepods")).expect("mkdir kubepods");
    for (i, (qos, uid, n)) in pods.iter().enumerate() {
        let qdir = top.join("kubepods").join(qos);
        fs::create_dir(&qdir).expect("mkdir qos");
        let pod = qdir.join(format!("pod{uid}"));
        fs::create_dir(&pod).expect("mkdir pod");
        for c in 0..*n {
            let file = pin_dir.join(format!("cgtrace-html-{}-pin-{i}-{c}", std::process::id()));
            pins.0.push(file.clone());
            dying_memcg(
                &pod.join(format!("{:064x}", 0x4e7e_0000_u64 + (i as u64) * 16 + c)),
                &file,
            );
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    // A storm: 200 short-lived cgroups in about 4 s (churn_storm fires at 10 a second).
    let mut made = 0;
    for n in 0..200 {
        let d = top.join(format!("job-{n}"));
        fs::create_dir(&d).expect("mkdir job");
        fs::remove_dir(&d).expect("rmdir job");
        made += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    record.stop();

    let st = Command::new(cgtrace_bin())
        .args(["report", "--html"])
        .arg(&page)
        .arg(&session)
        .status()
        .expect("run cgtrace report --html");
    assert!(st.success(), "cgtrace report --html failed");
    let html = fs::read_to_string(&page).expect("read the page");

    // Self-contained: nothing to fetch.
    for bad in [
        "<script src",
        "<link",
        "@import",
        "url(",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(
            !html.contains(bad),
            "the page refers to something outside: {bad}"
        );
    }

    let profile = scratch.0.join("chromium-profile");
    let dom = chromium(&profile, &page, &["--dump-dom"]);
    let console = console_lines(&dom.stderr);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    for id in PLOTS {
        let fig = section(&dom, &format!("id=\"{id}\""), "</figure>")
            .unwrap_or_else(|| panic!("no figure {id} in the rendered page"));
        assert!(
            fig.contains("<svg")
                && fig.contains("</svg>")
                && (fig.contains("<polyline") || fig.contains("<rect")),
            "figure {id} has no drawn SVG"
        );
    }
    // The pods the test made, with their dying memcgs; the storm's verdict.
    let table = section(&dom, "id=\"pods\"", "</table>").expect("the pod table");
    for (qos, uid, n) in pods {
        let row = table
            .split("<tr>")
            .find(|r| r.contains(uid))
            .unwrap_or_else(|| panic!("{uid} in the pod table"));
        assert!(
            row.starts_with(&format!("<td data-v=\"{n}\">{n}</td>")),
            "{uid}: {n} dying: {row}"
        );
        assert!(row.contains(qos), "{row}");
    }
    let verdicts = section(&dom, "id=\"verdicts\"", "<h2>").expect("the verdicts");
    assert!(
        verdicts.contains("churn_storm") && verdicts.contains("job-&lt;n&gt;"),
        "{made} job cgroups made, no churn_storm verdict: {verdicts}"
    );

    // A screenshot that is not blank: the pixels vary, and a fair share is not background.
    let shot = scratch.0.join("report.png");
    let out = chromium(
        &profile,
        &page,
        &[&format!("--screenshot={}", shot.display())],
    );
    let console = console_lines(&out.stderr);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let decoder = png::Decoder::new(BufReader::new(fs::File::open(&shot).expect("screenshot")));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let px = info.color_type.samples();
    assert!(px >= 3, "colour screenshot: {:?}", info.color_type);
    let lum: Vec<f64> = buf[..info.buffer_size()]
        .chunks(px)
        .map(|c| 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64)
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let var = lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64;
    let inked = lum.iter().filter(|&&l| l < 200.0).count() as f64 / lum.len() as f64;
    assert!(
        var > 100.0 && inked > 0.01,
        "the screenshot looks blank: variance {var:.1}, {:.2}% dark pixels",
        inked * 100.0
    );
    if let Ok(keep) = std::env::var("CGTRACE_KEEP_SCREENSHOT") {
        let _ = fs::copy(&shot, keep);
    }
    drop(pins);
}
