//! `cgtrace report --html`: a recording of real cgroup activity under the test's own parent (a
//! storm of short-lived `job-<n>` cgroups and kubelet-style pods whose container memcgs tmpfs
//! pages keep dying) rendered to one page, which Debian's headless Chromium, kept off the
//! network, loads: no console message, every plot an `<svg>` in the rendered DOM, the pods with
//! the dying counts the test made, the churn_storm verdict, and a screenshot that is not blank.
use std::{
    fs,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Layout, Scratch,
    binary::{Running, cgtrace_bin, have_tool, spawn_attached},
    cgroup::{PinFiles, TestParent, dying_memcg, privileged},
    outside_reference,
};

/// The plots the page must have, by figure id.
const PLOTS: [&str; 5] = [
    "plot-dying",
    "plot-churn",
    "plot-headroom",
    "plot-live",
    "plot-dying-lifetimes",
];

/// Chromium's profile directory for this test, and whatever Chromium left running with it:
/// on drop (after a panic too) every process whose command line names the profile is killed
/// and waited for.
struct Profile(PathBuf);

impl Profile {
    /// The processes (pids) started with this profile.
    fn processes(&self) -> Vec<i32> {
        let needle = format!("--user-data-dir={}", self.0.display());
        let Ok(rd) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
            })
            .collect()
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.processes();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                eprintln!("warning: chromium processes {left:?} are still running");
                return;
            }
            for pid in left {
                // SAFETY: kill(2) on a Chromium process this test started (its command line
                // names this test's own profile directory).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// The `data-v` values of column `col` in the body of table `id`, in row order.
fn column(html: &str, id: &str, col: usize) -> Vec<f64> {
    let Some(table) = section(html, &format!("id=\"{id}\""), "</table>") else {
        return Vec::new();
    };
    let body = table.split_once("<tbody>").map_or("", |(_, b)| b);
    body.split("<tr>")
        .skip(1)
        .filter_map(|row| {
            let cell = row.split("<td").nth(col + 1)?;
            let v = cell.split_once("data-v=\"")?.1.split_once('"')?.0;
            v.parse().ok()
        })
        .collect()
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
    let scratch = Scratch::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "html");
    let mut pins = PinFiles::default();
    let pin_dir = PinFiles::dir(scratch.path());
    let session = scratch.path().join("run.session");
    let page = scratch.path().join("report.html");
    let top = parent.dir(&mount);

    let (record, record_err) = spawn_attached(
        &[
            "record",
            "-o",
            &session.display().to_string(),
            "--subtree",
            &parent.cgroup_path(),
        ],
        Stdio::null(),
    );
    let mut record = Running::new("cgtrace record", record);
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
            let file = pins.add(&pin_dir, &format!("cgtrace-html-pin-{i}-{c}"));
            let ctr = pod.join(format!("{:064x}", 0x4e7e_0000_u64 + (i as u64) * 16 + c));
            dying_memcg(&ctr, &file, 2 << 20);
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
    let st = record.stop();
    assert!(st.is_some_and(|s| s.success()), "record: {st:?}");
    let record_err = record_err.join().unwrap_or_default();
    assert!(!record_err.contains("error"), "record: {record_err}");

    let st = Command::new(cgtrace_bin())
        .args(["report", "--html"])
        .arg(&page)
        .arg(&session)
        .status()
        .expect("run cgtrace report --html");
    assert!(st.success(), "cgtrace report --html failed");
    let html = fs::read_to_string(&page).expect("read the page");

    // Self-contained: nothing to fetch.
    assert_eq!(outside_reference(&html), None, "the page refers outside");

    let profile = Profile(scratch.path().join("chromium-profile"));
    let dom = chromium(&profile.0, &page, &["--dump-dom"]);
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

    // The tables sort when a column is clicked: a copy of the page whose own script clicks
    // the pods' "dying" and the lifetimes' "count" headers once (ascending).
    let clicked = scratch.path().join("clicked.html");
    let click = "<script>document.querySelector('#pods-table th').click();\
                 document.querySelector('#lifetimes-table th:nth-child(3)').click();</script>";
    fs::write(
        &clicked,
        html.replacen("</body>", &format!("{click}</body>"), 1),
    )
    .expect("write the clicked page");
    let out = chromium(&profile.0, &clicked, &["--dump-dom"]);
    let console = console_lines(&out.stderr);
    assert!(
        console.is_empty(),
        "console messages after the clicks: {console:#?}"
    );
    let dom_clicked = String::from_utf8_lossy(&out.stdout).into_owned();
    // (The node's other pods, live ones too, may be in the table beside the test's.)
    let dying = column(&html, "pods-table", 0);
    assert!(
        dying.len() >= pods.len()
            && dying.windows(2).all(|w| w[0] >= w[1])
            && dying[0] > dying[dying.len() - 1],
        "the page lists the pods most dying first: {dying:?}"
    );
    for (table, col) in [("pods-table", 0), ("lifetimes-table", 2)] {
        let before = column(&html, table, col);
        let after = column(&dom_clicked, table, col);
        let mut want = before.clone();
        want.sort_by(f64::total_cmp);
        assert_eq!(
            after, want,
            "{table} sorted by column {col} (it was {before:?})"
        );
    }

    // A screenshot that is not blank: the pixels vary, and a fair share is not background.
    let shot = scratch.path().join("report.png");
    let out = chromium(
        &profile.0,
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
    // CGTRACE_KEEP_SCREENSHOT=FILE.png keeps the screenshot, and the page beside it.
    if let Ok(keep) = std::env::var("CGTRACE_KEEP_SCREENSHOT") {
        let _ = fs::copy(&shot, &keep);
        let _ = fs::copy(&page, Path::new(&keep).with_extension("html"));
    }
    drop(pins);
}
