//! The `cgtrace` command line: its clap definition (also used by `cargo xtask dist` for the man
//! pages and shell completions) and what each verb runs.
use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use crate::{
    UsageError,
    commands::check,
    commands::doctor,
    commands::record::RecordOptions,
    commands::replay,
    commands::{
        attach::AttachOptions,
        run::{self as traced, Mode, RunOptions},
    },
    commands::{report_html, top},
    format::{escape::terminal, units},
    kernel::hierarchy::Hierarchies,
    pipeline::filters::Filters,
    probes::{self, AttachMode, ProbeOptions, Tier},
};
use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};

/// Trace the life of every cgroup on this node with eBPF.
///
/// Needs root (or CAP_BPF + CAP_PERFMON) to load its eBPF programs.
#[derive(Parser, Debug)]
#[command(name = "cgtrace", version, about, long_about = None,
    long_version = concat!(env!("CARGO_PKG_VERSION"), " (eBPF object from sources ", env!("CGTRACE_EBPF_SOURCE_HASH"), ")"))]
pub struct Cli {
    /// More diagnostics on stderr (-v: info, -vv: debug incl. BPF-side logs). RUST_LOG works too.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Read the kernel's BTF from FILE (raw BTF: the BTFHub layout, or one extracted from the
    /// kernel package) where /sys/kernel/btf/vmlinux is missing; also `CGTRACE_BTF=FILE`.
    #[arg(long, value_name = "FILE", global = true)]
    pub btf: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print every cgroup mkdir/rmdir/release on this node as it happens.
    Live(LiveArgs),
    /// A terminal view of this node (or of a recorded session with --replay), refreshed each
    /// second: pods by dying memcgs, churn by name shape, memcg ID headroom, lifetimes.
    Top(TopArgs),
    /// Record the session to a file (to replay and analyse later, elsewhere).
    Record(RecordArgs),
    /// Replay a recorded session: the same output as the live run that recorded it.
    Replay(ReplayArgs),
    /// A recorded session's summary: pods, verdicts with evidence, lifetime percentiles.
    Report(ReportArgs),
    /// Stay attached (node mode): lifetime histograms and verdicts every --interval, Prometheus
    /// metrics with --metrics. SIGHUP prints the histograms now; SIGTERM exits cleanly.
    Attach(AttachArgs),
    /// One-shot health check without eBPF (for node-problem-detector and old kernels): dying
    /// memcgs, memcg ID headroom, kmem accounting, the 3.10 kmem leak. Exit 0 ok, 1 problem,
    /// 2 unknown; the first line of stdout is the message (≤ 80 characters).
    Check(CheckArgs),
    /// What this kernel allows: BTF, tracefs, ring buffer, each probe tier tried for real, the
    /// cgroup layout and driver. Exit 0 when `cgtrace live` can run here, 1 otherwise.
    Doctor(DoctorArgs),
}

#[derive(Args, Debug)]
struct DoctorArgs {
    /// The report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// The session file to write (created mode 0600; never through a symlink).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    force: bool,
    /// Stop cleanly once the file reaches this size (e.g. 512M).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size)]
    max_size: Option<u64>,
    #[command(flatten)]
    trace: TraceArgs,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// The session file.
    file: PathBuf,
    /// JSON lines, as `live --json` printed them.
    #[arg(long)]
    json: bool,
    /// Replay speed: a multiple of real time (e.g. 10) or max.
    #[arg(long, value_name = "N|max", value_parser = replay::parse_speed, default_value = "max")]
    speed: replay::Speed,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// The session file.
    file: PathBuf,
    /// The report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write the report as one self-contained HTML page with plots to OUT.
    #[arg(long, value_name = "OUT", conflicts_with = "json")]
    html: Option<PathBuf>,
    #[command(flatten)]
    filter: FilterArgs,
}

impl FilterArgs {
    /// The filters, with one meaning live and in replay.
    fn filters(&self) -> Filters {
        Filters {
            controllers: self.controllers.clone(),
            path_prefix: self.path_prefix.clone(),
            subtree: self.subtree.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct AttachArgs {
    /// How often histograms and verdicts are printed (e.g. 60s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, default_value = "60s")]
    interval: Duration,
    /// Serve Prometheus /metrics and /healthz at ADDR (`9101` or `:9101` bind 127.0.0.1;
    /// `0.0.0.0:9101` for all interfaces). Default: off.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Write the lifetime histograms to FILE in the HdrHistogram interval-log format.
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// Where the host's / is mounted when cgtrace runs in a container (e.g. /host).
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    #[command(flatten)]
    trace: TraceArgs,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Full evidence as one JSON object.
    #[arg(long)]
    json: bool,
    /// Where the host's / is mounted (when running in a container).
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: std::path::PathBuf,
    /// Dying memcgs at or above this count are a problem when they hold IDs or kmem pins them.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    dying_warn: u64,
    /// Free memcg IDs below this count are a problem.
    #[arg(long, value_name = "N", default_value_t = 10000)]
    headroom_warn: u64,
}

#[derive(Args, Debug)]
struct FilterArgs {
    /// Only hierarchies holding this controller (repeatable): memory, cpu, pids, systemd, unified…
    #[arg(long = "controller", value_name = "NAME")]
    controllers: Vec<String>,
    /// Only cgroups whose path (relative to the hierarchy root) starts with this string,
    /// e.g. /kubepods. Applied in the kernel when tracing.
    #[arg(long, value_name = "PREFIX")]
    path_prefix: Option<String>,
    /// Only cgroups at or below this cgroup (a path relative to the hierarchy roots, e.g.
    /// /kubepods), in every hierarchy where it exists. Applied in the kernel when tracing, css
    /// events too.
    #[arg(long, value_name = "PATH")]
    subtree: Option<String>,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Force a probe tier instead of the best one the kernel accepts (fentry → kprobe →
    /// tracepoint); forcing one the kernel refuses is an error saying why.
    #[arg(long, value_enum)]
    tier: Option<Tier>,
    /// Which cgroup tracepoints to attach: raw tracepoints falling back to classic ones (auto),
    /// or one of them forced.
    // `--attach`, 0.1.0's spelling, still parses (hidden).
    #[arg(long, alias = "attach", value_enum, default_value_t = AttachMode::Auto)]
    tracepoints: AttachMode,
    /// Ring buffer size (rounded up to a power of two), e.g. 4M.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_size, default_value = "4M")]
    ring_size: u64,
    /// Which buffer the programs write to: the BPF ring buffer where the kernel has one (5.8+),
    /// else the perf event array (auto), or one of them forced. Perf buffers are one per CPU,
    /// `--ring-size` shared among them, merged in timestamp order.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = probes::buffer::BufferChoice::Auto)]
    buffer: probes::buffer::BufferChoice,
    /// How the programs read kernel memory: `bpf_probe_read_kernel` where the kernel has it
    /// (5.5+), else `bpf_probe_read` (auto); `legacy` forces `bpf_probe_read` on any kernel, the
    /// path kernels before 5.5 take (to reproduce it, or to compare). Live's first line says
    /// which is used.
    #[arg(long, value_enum, value_name = "HOW", env = "CGTRACE_PROBE_READ",
        default_value_t = probes::buffer::ProbeRead::Auto)]
    probe_read: probes::buffer::ProbeRead,
    /// Which failed mkdirs in cgroupfs to report: `cgroupfs` (the failures inside cgroup
    /// creation, such as memcg ID exhaustion, at no cost per syscall) or `syscall` (every failed
    /// mkdir with its errno and caller; makes every syscall on the node slower while cgtrace
    /// runs, about +40-70 ns each where this was measured).
    #[arg(long, value_enum, value_name = "MODE", default_value_t = probes::MkdirFailureMode::Cgroupfs)]
    mkdir_failures: probes::MkdirFailureMode,
    /// Read every rmdir's and release's path in the kernel, also where cgtrace has it from the
    /// cgroup's mkdir (by default those are left out: less work per event in the kernel, the
    /// same output). For comparing costs and for debugging.
    #[arg(long, hide = true)]
    read_every_path: bool,
}

#[derive(Args, Debug)]
struct LiveArgs {
    /// JSON lines: one object per event, a summary object at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    trace: TraceArgs,
}

/// What the traced verbs that stream (`live`, `record`, `attach`) take: how long, which
/// cgroups, which probes.
#[derive(Args, Debug)]
struct TraceArgs {
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    duration: Option<Duration>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    probe: ProbeArgs,
}

impl TraceArgs {
    /// A traced run of `mode` with these arguments.
    fn run(&self, mode: Mode, verbose: u8, host_root: PathBuf) -> anyhow::Result<ExitCode> {
        let probe = probe_options(&self.filter, &self.probe, verbose)?;
        trace(mode, self.duration, probe, &self.filter, host_root)
    }
}

#[derive(Args, Debug)]
struct TopArgs {
    /// Show a recorded session instead of this node (at event time).
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// With --replay: speed, a multiple of real time (e.g. 10) or max.
    #[arg(long, value_name = "N|max", value_parser = replay::parse_speed, default_value = "1", requires = "replay")]
    speed: replay::Speed,
    /// Stop after this long (live); default: until q, Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, conflicts_with = "replay")]
    duration: Option<Duration>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    probe: ProbeArgs,
}

fn top(a: &TopArgs, verbose: u8) -> anyhow::Result<ExitCode> {
    if let Some(file) = &a.replay {
        top::replay(file, a.speed, &a.filter.filters())?;
        return Ok(ExitCode::SUCCESS);
    }
    // Before the probes load: without a terminal there is nothing to draw on.
    top::require_terminal()?;
    let probe = probe_options(&a.filter, &a.probe, verbose)?;
    trace(Mode::Top, a.duration, probe, &a.filter, PathBuf::from("/"))
}

/// A traced run (`live`, `record`, `attach`, `top`) of `mode` with the verb's filters, the
/// host's `/` at `host_root`.
fn trace(
    mode: Mode,
    duration: Option<Duration>,
    probe: ProbeOptions,
    filter: &FilterArgs,
    host_root: PathBuf,
) -> anyhow::Result<ExitCode> {
    traced::run(&RunOptions {
        mode,
        duration,
        probe,
        filters: filter.filters(),
        host_root,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A file to write must be in a directory that exists (checked before any work is done).
fn writable_path(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        anyhow::bail!(
            "cannot write {}: {} is not a directory",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

fn usage<T, E: Into<anyhow::Error>>(r: Result<T, E>) -> anyhow::Result<T> {
    r.map_err(|e| UsageError(e.into()).into())
}

fn probe_options(f: &FilterArgs, p: &ProbeArgs, verbose: u8) -> anyhow::Result<ProbeOptions> {
    let h = Hierarchies::load().context("failed to read the cgroup hierarchies")?;
    let mut opts = ProbeOptions {
        tier: p.tier,
        mkdir_failures: p.mkdir_failures,
        mkdir_failure_hooks: probes::MkdirFailureHooks::Auto,
        attach: p.tracepoints,
        buffer: p.buffer,
        legacy_reads: p.probe_read == probes::buffer::ProbeRead::Legacy,
        ring_size: usage(probes::ring_size(p.ring_size))?,
        wakeup_bytes: None,
        omit_known_paths: !p.read_every_path,
        bpf_debug_log: verbose >= 2
            || std::env::var("RUST_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace")),
        ..ProbeOptions::default()
    };
    usage(opts.set_filters(&f.filters(), &h))?;
    Ok(opts)
}

fn check(a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let opts = check::CheckOptions {
        host_root: a.host_root.clone(),
        dying_warn: a.dying_warn,
        headroom_warn: a.headroom_warn,
        ..check::CheckOptions::default()
    };
    let mut out = io::stdout().lock();
    match check::run_check(&opts) {
        Ok(report) => {
            check::write_report(&mut out, &report, a.json)?;
            Ok(ExitCode::from(report.status.exit_code()))
        }
        Err(e) => {
            // The NPD protocol: first stdout line is the message, exit 2 = unknown. The error
            // names paths of the host: escaped, so the message stays one line.
            let msg: String = terminal(&format!("cgtrace: unknown: {e}"))
                .chars()
                .take(80)
                .collect();
            writeln!(out, "{msg}").and_then(|()| out.flush())?;
            eprintln!(
                "cgtrace: error: {}",
                terminal(&format!("{:#}", anyhow::Error::from(e)))
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// Runs the verb the command line asks for.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(a) => check(&a),
        Command::Top(a) => top(&a, cli.verbose),
        Command::Doctor(a) => {
            let r = doctor::run();
            doctor::write_report(&mut io::stdout().lock(), &r, a.json)?;
            Ok(if r.can_run_live() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Live(a) => {
            let mode = if a.json { Mode::Json } else { Mode::Text };
            a.trace.run(mode, cli.verbose, PathBuf::from("/"))
        }
        Command::Record(a) => {
            usage(writable_path(&a.output))?;
            let mode = Mode::Record(RecordOptions {
                path: a.output.clone(),
                max_size: a.max_size,
                force: a.force,
            });
            a.trace.run(mode, cli.verbose, PathBuf::from("/"))
        }
        Command::Replay(a) => {
            replay::replay(&a.file, a.json, a.speed, &a.filter.filters())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(a) => {
            match &a.html {
                Some(out) => {
                    usage(writable_path(out))?;
                    report_html::write(&a.file, out, &a.filter.filters())?
                }
                None => replay::report(&a.file, a.json, &a.filter.filters())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Attach(a) => {
            let metrics = match &a.metrics {
                Some(s) => Some(usage(
                    crate::pipeline::metrics::parse_listen_addr(s)
                        .map_err(|e| anyhow::anyhow!("--metrics: {e}")),
                )?),
                None => None,
            };
            if !a.host_root.is_dir() {
                return usage(Err(anyhow::anyhow!(
                    "--host-root {} is not a directory",
                    a.host_root.display()
                )));
            }
            let mode = Mode::Attach(AttachOptions {
                interval: a.interval,
                metrics,
                hdr_log: a.hdr_log.clone(),
            });
            a.trace.run(mode, cli.verbose, a.host_root.clone())
        }
    }
}

/// The clap command (for man pages and completions).
pub fn command() -> clap::Command {
    Cli::command()
}
