//! Modes of the overhead rounds and one round of each.
use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{
    BPFTRACE_PROGRAM, SETTLE,
    cgroups::{Churn, churn},
    tracer::{Out, Tracer},
};

// ---------------------------------------------------------------------------------------------
// Modes of the overhead rounds

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Untraced,
    /// `cgtrace live --json > /dev/null`
    Live,
    /// `cgtrace live --json --buffer perf > /dev/null`: the perf event array beside the ring.
    LivePerf,
    /// `cgtrace live --json > FILE`: the loss figure (the summary's `lost`).
    LiveFile,
    Record,
    Attach,
    Bpftrace,
}

impl Mode {
    pub(super) fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Live => "`cgtrace live --json > /dev/null`",
            Mode::LivePerf => "`cgtrace live --json --buffer perf > /dev/null`",
            Mode::LiveFile => "`cgtrace live --json > FILE`",
            Mode::Record => "`cgtrace record -o FILE`",
            Mode::Attach => "`cgtrace attach`",
            Mode::Bpftrace => "bpftrace printf of the 3 tracepoints `> /dev/null`",
        }
    }
}

/// What one churn run under one mode gave.
#[derive(Clone, Debug, Default)]
pub(super) struct RunResult {
    pub(super) churn: Churn,
    /// `live --json > FILE`: `lost` and the events total from the summary line.
    pub(super) lost: Option<u64>,
    pub(super) events: Option<u64>,
}

pub(super) struct Ctx {
    pub(super) bin: PathBuf,
    pub(super) parent: PathBuf,
    pub(super) tmp: PathBuf,
    pub(super) round_secs: f64,
}

/// The value of `"key":<number>` in a JSON line (first unescaped occurrence of the key).
pub(super) fn json_u64(line: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let at = from + i;
        if at == 0 || line.as_bytes()[at - 1] != b'\\' {
            let rest = &line[at + pat.len()..];
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            return digits.parse().ok();
        }
        from = at + pat.len();
    }
    None
}

/// The last non-empty line of a file (read from its end).
pub(super) fn last_line(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(4 << 20);
    f.seek(SeekFrom::Start(start))
        .with_context(|| format!("seeking in {}", path.display()))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{} is empty", path.display()))
}

pub(super) fn cgtrace_tracer(
    ctx: &Ctx,
    mode: Mode,
    tag: &str,
    ring: Option<u64>,
) -> Result<(Tracer, PathBuf)> {
    let file = ctx.tmp.join(format!("{tag}.out"));
    let mut args: Vec<String> = match mode {
        Mode::Live => vec!["live".into(), "--json".into()],
        Mode::LivePerf => vec![
            "live".into(),
            "--json".into(),
            "--buffer".into(),
            "perf".into(),
        ],
        Mode::LiveFile => vec!["live".into(), "--json".into()],
        Mode::Record => vec![
            "record".into(),
            "-o".into(),
            file.to_string_lossy().into_owned(),
        ],
        Mode::Attach => vec!["attach".into()],
        Mode::Untraced | Mode::Bpftrace => bail!("{mode:?} is not a cgtrace mode"),
    };
    if let Some(r) = ring {
        args.push("--ring-size".into());
        args.push(r.to_string());
    }
    let out = match mode {
        Mode::LiveFile => Out::File(file.clone()),
        _ => Out::Null,
    };
    let t = Tracer::spawn(mode.label(), &ctx.bin, &args, out)?;
    Ok((t, file))
}

/// Syscalls timed per run of the syscall tax.
pub(super) const TAX_CALLS: u32 = 2_000_000;
/// Rounds of the syscall tax (each: nothing attached, and the two `live` variants).
pub(super) const TAX_ROUNDS: usize = 7;

/// ns per `getppid(2)`, a syscall that does next to nothing, over [`TAX_CALLS`] calls.
pub(super) fn syscall_ns() -> f64 {
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..TAX_CALLS {
        sum = sum.wrapping_add(u64::from(std::os::unix::process::parent_id()));
    }
    std::hint::black_box(sum);
    t.elapsed().as_nanos() as f64 / f64::from(TAX_CALLS)
}

/// The modes the syscall tax is measured under, after "nothing attached": the three default
/// modes, then the opt-in syscall hook for failed mkdirs.
pub(super) const TAX_MODES: [&str; 4] = [
    "live --json",
    "record --force -o {tmp}/tax.cgtrace",
    "attach",
    "live --json --mkdir-failures syscall",
];

/// What every syscall on the node pays while cgtrace is attached (the syscall tracepoint of
/// `--mkdir-failures syscall` sends every syscall through the kernel's tracing slow path; the
/// default modes attach none). Rounds of (nothing attached, then each of [`TAX_MODES`]) in
/// rotating order; ns per syscall of each, in that order.
pub(super) fn syscall_tax(ctx: &Ctx) -> Result<[Vec<f64>; 5]> {
    let tmp = ctx.tmp.to_string_lossy().into_owned();
    let variants: Vec<Vec<String>> = std::iter::once(Vec::new())
        .chain(TAX_MODES.iter().map(|m| {
            m.replace("{tmp}", &tmp)
                .split(' ')
                .map(str::to_string)
                .collect()
        }))
        .collect();
    let mut out: [Vec<f64>; 5] = Default::default();
    for round in 0..TAX_ROUNDS {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let ns = if variants[i].is_empty() {
                syscall_ns()
            } else {
                let args = &variants[i];
                let mut t = Tracer::spawn(&args.join(" "), &ctx.bin, args, Out::Null)?;
                t.wait_cgtrace_attached()?;
                thread::sleep(SETTLE);
                let ns = syscall_ns();
                t.stop()?;
                ns
            };
            out[i].push(ns);
        }
    }
    Ok(out)
}

/// One churn run under `mode` (the tracer started, attached, and stopped cleanly around it).
pub(super) fn run_mode(ctx: &Ctx, mode: Mode, tag: &str, ring: Option<u64>) -> Result<RunResult> {
    match mode {
        Mode::Untraced => Ok(RunResult {
            churn: churn(&ctx.parent, ctx.round_secs)?,
            ..RunResult::default()
        }),
        Mode::Bpftrace => {
            let mut t = Tracer::spawn(
                mode.label(),
                Path::new("bpftrace"),
                &["-e".into(), BPFTRACE_PROGRAM.into()],
                Out::Null,
            )?;
            t.wait_bpftrace_attached()?;
            thread::sleep(SETTLE);
            let churn = churn(&ctx.parent, ctx.round_secs)?;
            t.stop()?;
            Ok(RunResult {
                churn,
                ..RunResult::default()
            })
        }
        _ => {
            let (mut t, file) = cgtrace_tracer(ctx, mode, tag, ring)?;
            let res = (|| -> Result<RunResult> {
                t.wait_cgtrace_attached()?;
                thread::sleep(SETTLE);
                let churn = churn(&ctx.parent, ctx.round_secs)?;
                t.stop()?;
                let mut r = RunResult {
                    churn,
                    ..RunResult::default()
                };
                if mode == Mode::LiveFile {
                    let line = last_line(&file)?;
                    if !line.contains("\"type\":\"summary\"") {
                        bail!(
                            "the last line of `cgtrace live --json` is not its summary: {line:.200}"
                        );
                    }
                    r.lost = Some(
                        json_u64(&line, "lost")
                            .ok_or_else(|| anyhow!("no \"lost\" in the summary: {line:.200}"))?,
                    );
                    r.events = json_u64(&line, "total");
                }
                Ok(r)
            })();
            drop(t);
            if file.exists() {
                let _ = fs::remove_file(&file);
            }
            res
        }
    }
}

/// The subcommands in `cgtrace --help` (clap's layout: commands indented by two under
/// `Commands:`, wrapped help text indented further).
pub(super) fn parse_subcommands(help: &str) -> Vec<String> {
    let mut in_commands = false;
    let mut v = Vec::new();
    for l in help.lines() {
        if l.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if !in_commands {
            continue;
        }
        if !l.is_empty() && !l.starts_with(' ') {
            break;
        }
        if l.starts_with("  ")
            && !l.starts_with("   ")
            && let Some(w) = l.split_whitespace().next()
        {
            v.push(w.to_string());
        }
    }
    v
}

pub(super) fn subcommands(bin: &Path) -> Result<Vec<String>> {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    if !out.status.success() {
        bail!("{} --help failed with {}", bin.display(), out.status);
    }
    Ok(parse_subcommands(&String::from_utf8_lossy(&out.stdout)))
}
