//! The machine the figures were taken on.
use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::workspace_root;

// ---------------------------------------------------------------------------------------------
// The machine

pub(super) struct Machine {
    pub(super) kernel: String,
    pub(super) nproc: usize,
    pub(super) cpu: String,
    pub(super) date: String,
    pub(super) loadavg: String,
    pub(super) bpftrace: String,
    pub(super) commit: String,
}

pub(super) fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then_some(())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub(super) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

impl Machine {
    pub(super) fn describe() -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let root = workspace_root();
        let commit = first_line(
            Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&root),
        )
        .unwrap_or_else(|| "unknown".into());
        let dirty = first_line(
            Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .current_dir(&root),
        )
        .is_some();
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            nproc: thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            date: utc_now(),
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            bpftrace: first_line(Command::new("bpftrace").arg("--version"))
                .unwrap_or_else(|| "not found".into()),
            commit: if dirty {
                format!("{commit} (with uncommitted changes)")
            } else {
                commit
            },
        }
    }

    pub(super) fn render(&self) -> String {
        format!(
            "- date: {}\n- kernel: {}\n- CPUs: {} × {}\n- load average at start: {}\n- cgtrace: commit {}, release build\n- bpftrace: {}\n",
            self.date, self.kernel, self.nproc, self.cpu, self.loadavg, self.commit, self.bpftrace
        )
    }
}
