//! Every measure in turn, and the report's table of them.
use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    BenchArgs, RING_DEFAULT, TARGET_BYTES_PER_DYING, TARGET_OVERHEAD, TARGET_PIPELINE_EPS,
    TARGET_STARTUP_MS,
    cgroups::{BenchParent, memory_mount},
    machine::Machine,
    modes::{Ctx, Mode, TAX_MODES, subcommands, syscall_tax},
    phases::{
        KernelCost, PipelineResults, Rounds, kernel_cost, overhead_rounds, pipeline_bench,
        ring_scan, startup,
    },
    pod_churn,
    stats::{
        Row, Stats, bytes, bytes_1, count, events_per_s, grouped, ms, nanos, per_s, percent, ratio,
        render_table, ring, size_name, stats,
    },
    write_report,
};

/// `--overhead-only`: alternating rounds of untraced, `live` on the ring buffer and `live` on
/// the perf buffers; their ratios on stderr.
fn overhead_only(ctx: &Ctx, rounds: usize) -> Result<()> {
    let modes = [Mode::Untraced, Mode::Live, Mode::LivePerf];
    let r = overhead_rounds(ctx, rounds, &modes)?;
    if let Some(s) = stats(&r.values(Mode::Untraced, |r| Some(r.churn.rate))) {
        eprintln!(
            "xtask bench: untraced: {:.0} cycles/s (median of {}; {:.0}–{:.0})",
            s.median, s.n, s.min, s.max
        );
    }
    let mut failed = 0;
    for mode in &modes[1..] {
        match (stats(&r.ratios(*mode, |c| Some(c.rate))), r.failure(*mode)) {
            (_, Some(e)) => {
                failed += 1;
                eprintln!("xtask bench: {}: failed: {e}", mode.label());
            }
            (Some(s), None) => eprintln!(
                "xtask bench: {}: {:.3} of the untraced rate (median of {}; {:.3}–{:.3})",
                mode.label(),
                s.median,
                s.n,
                s.min,
                s.max
            ),
            (None, None) => eprintln!("xtask bench: {}: no result", mode.label()),
        }
    }
    if failed > 0 {
        bail!("{failed} mode(s) failed");
    }
    Ok(())
}

/// The start-up runs of one configuration: (spawn → attached, spawn → streamed) in ms.
type Startup = Result<Vec<(f64, f64)>>;

/// What the phases gave, for the table (failed phases carry their error).
struct Phases {
    modes: Vec<Mode>,
    rounds: Rounds,
    pipeline: Result<PipelineResults>,
    scan: Result<Vec<(u64, u64, f64)>>,
    kcost: Result<KernelCost>,
    tax: Result<[Vec<f64>; 5]>,
    startup_plain: Startup,
    startup_many: Startup,
    pod_rows: Vec<Row>,
    took: Took,
}

/// How long each phase took.
struct Took {
    pipeline: Duration,
    rounds: Duration,
    scan: Duration,
    startup: Duration,
    pods: Duration,
}

/// The report as it is built: the table's rows, its notes and details, and what failed.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    details: String,
    errors: Vec<String>,
}

/// The README's bench table sits between these lines (the pod-churn table has its own).
pub(super) const README_BEGIN: &str = "<!-- bench:begin (cargo xtask bench) -->";
pub(super) const README_END: &str = "<!-- bench:end -->";

pub(super) fn measure(
    args: &BenchArgs,
    bin: &Path,
    out_dir: &Path,
    tmp: &Path,
    started: Instant,
) -> Result<()> {
    let machine = Machine::describe();
    let subs = subcommands(bin)?;

    // The churn's parent cgroup (all `--overhead-only` needs).
    let mount = memory_mount()?;
    let mut parent = BenchParent::create(&mount)?;
    let ctx = Ctx {
        bin: bin.to_path_buf(),
        parent: parent.dir.clone(),
        tmp: tmp.to_path_buf(),
        round_secs: args.round_secs,
    };
    if args.overhead_only {
        let res = overhead_only(&ctx, args.rounds as usize);
        parent.remove()?;
        return res;
    }
    let mut report = Report::default();
    let phases = run_phases(args, &ctx, &subs, &mut parent, &machine, &mut report)?;

    // The table.
    report.table(args, &phases);
    report.rows.extend(phases.pod_rows);

    // Per-round raw figures.
    report.round_details(&phases.rounds);
    phases.took.details(&mut report.details, started.elapsed());

    let md = report.render(&machine, &parent.cgroup_path, args);
    write_report(out_dir, "latest.md", &md)?;
    let readme = crate::workspace_root().join("README.md");
    crate::write_between_markers(
        &readme,
        README_BEGIN,
        README_END,
        &report.readme_section(&machine, &parent.cgroup_path, args),
    )?;
    eprintln!("xtask bench: table written to {}", readme.display());
    if !report.errors.is_empty() {
        bail!("some measures failed:\n  {}", report.errors.join("\n  "));
    }
    Ok(())
}

/// Every phase in turn; errors of the clean-up and of the pod churn go to `report`.
fn run_phases(
    args: &BenchArgs,
    ctx: &Ctx,
    subs: &[String],
    parent: &mut BenchParent,
    machine: &Machine,
    report: &mut Report,
) -> Result<Phases> {
    // 1. The user-space pipeline and the tracker's memory (no kernel involved).
    let t = Instant::now();
    eprintln!("xtask bench: pipeline and memory (cargo bench -p cgtrace --bench pipeline)");
    let pipeline = pipeline_bench();
    let pipeline_time = t.elapsed();

    // 2. Overhead and loss, in alternating rounds.
    let modes = round_modes(subs);
    let t = Instant::now();
    let rounds = overhead_rounds(ctx, args.rounds as usize, &modes)?;
    let rounds_time = t.elapsed();

    // 3. The ring size where loss starts.
    let t = Instant::now();
    let scan = ring_scan(ctx);
    let scan_time = t.elapsed();

    // 3b. The kernel side alone: the programs' own run time per cycle.
    let kcost = kernel_cost(ctx);

    // 3c. The syscall tax of the failed-mkdir hook.
    let tax = syscall_tax(ctx);

    // 4. Start-up, with the machine's own cgroups, then with many more.
    let t = Instant::now();
    let (startup_plain, startup_many) = startup_phase(args, ctx, parent, &mut report.errors);
    let startup_time = t.elapsed();
    if let Err(e) = parent.remove() {
        report.errors.push(format!("{e:#}"));
    }

    // 5. Memory under pod churn (its rows come last).
    let t = Instant::now();
    let mut pod_rows = Vec::new();
    if let Err(e) = pod_churn(args, &ctx.bin, machine, &mut pod_rows, &mut report.details) {
        report.errors.push(format!("pod churn: {e:#}"));
    }
    let pods_time = t.elapsed();

    Ok(Phases {
        modes,
        rounds,
        pipeline,
        scan,
        kcost,
        tax,
        startup_plain,
        startup_many,
        pod_rows,
        took: Took {
            pipeline: pipeline_time,
            rounds: rounds_time,
            scan: scan_time,
            startup: startup_time,
            pods: pods_time,
        },
    })
}

/// The modes of the overhead rounds: `record` and `attach` where this build has them.
fn round_modes(subs: &[String]) -> Vec<Mode> {
    let has = |s: &str| subs.iter().any(|c| c == s);
    let mut modes = vec![Mode::Untraced, Mode::Live, Mode::LivePerf, Mode::LiveFile];
    for (sub, mode) in [("record", Mode::Record), ("attach", Mode::Attach)] {
        if has(sub) {
            modes.push(mode);
        }
    }
    modes.push(Mode::Bpftrace);
    modes
}

/// Start-up with the machine's own cgroups, then with `--startup-cgroups` more; the extra
/// cgroups are removed after, failures to remove them go to `errors`.
fn startup_phase(
    args: &BenchArgs,
    ctx: &Ctx,
    parent: &BenchParent,
    errors: &mut Vec<String>,
) -> (Startup, Startup) {
    let startup_plain = startup(ctx, &parent.cgroup_path, "plain");
    let many = parent.dir.join("many");
    let mut made = 0u32;
    let startup_many = (|| -> Startup {
        fs::create_dir(&many).with_context(|| format!("mkdir {}", many.display()))?;
        for i in 0..args.startup_cgroups {
            let d = many.join(format!("c{i:05}"));
            fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            made += 1;
        }
        startup(ctx, &parent.cgroup_path, "many")
    })();
    // Remove them in a known order (quicker than walking 10,000 directories).
    for i in (0..made).rev() {
        let d = many.join(format!("c{i:05}"));
        if let Err(e) = fs::remove_dir(&d) {
            errors.push(format!("rmdir {}: {e}", d.display()));
        }
    }
    (startup_plain, startup_many)
}

/// The traced modes, in the table's order.
const TRACED: [Mode; 6] = [
    Mode::Live,
    Mode::LivePerf,
    Mode::LiveFile,
    Mode::Record,
    Mode::Attach,
    Mode::Bpftrace,
];

/// Stats of a single figure.
fn one(v: f64) -> Stats {
    Stats {
        median: v,
        min: v,
        max: v,
        n: 1,
    }
}

impl Report {
    /// The rows of every phase but the pod churn, in the table's order.
    fn table(&mut self, args: &BenchArgs, p: &Phases) {
        self.overhead_rows(&p.rounds, &p.modes);
        self.loss_rows(&p.rounds, args.round_secs);
        self.ring_scan_rows(&p.scan, args.round_secs);
        self.kernel_rows(&p.kcost, &p.rounds, args.round_secs);
        self.tax_rows(&p.tax);
        self.pipeline_rows(&p.pipeline);
        for (label, res) in [
            ("the machine's own cgroups", &p.startup_plain),
            (
                &*format!("{} extra memcgs", grouped(f64::from(args.startup_cgroups))),
                &p.startup_many,
            ),
        ] {
            self.startup_rows(label, res);
        }
    }

    /// A phase that failed: a note in the table (`figure`) and an error (`what`).
    fn failed(&mut self, figure: impl Into<String>, what: &str, e: &anyhow::Error) {
        self.rows.push(Row::note(figure, format!("failed: {e:#}")));
        self.errors.push(format!("{what}: {e:#}"));
    }

    /// The untraced rate, each traced mode's ratio to it, then the same per CPU-second.
    fn overhead_rows(&mut self, rounds: &Rounds, modes: &[Mode]) {
        let base = rounds.values(Mode::Untraced, |r| Some(r.churn.rate));
        if let Some(s) = stats(&base) {
            self.rows.push(Row::measured(
                "untraced memcg mkdir+rmdir rate (cycles/s, one thread)",
                s,
                per_s,
            ));
        }
        for mode in TRACED {
            let figure = format!("overhead: {} (rate ÷ untraced)", mode.label());
            if !modes.contains(&mode) {
                let sub = if mode == Mode::Record {
                    "record"
                } else {
                    "attach"
                };
                self.rows.push(Row::note(
                    figure,
                    format!("skipped: this build of cgtrace has no `{sub}` subcommand"),
                ));
                continue;
            }
            match (
                stats(&rounds.ratios(mode, |c| Some(c.rate))),
                rounds.failure(mode),
            ) {
                (_, Some(e)) => self.rows.push(Row::note(figure, format!("failed: {e}"))),
                (Some(s), None) => {
                    let row = Row::measured(figure, s, ratio);
                    // The target is for tracing to /dev/null (or a session file): writing JSON
                    // lines to a file and bpftrace are there for comparison.
                    self.rows.push(match mode {
                        Mode::Live | Mode::Record | Mode::Attach => {
                            row.target(format!("≥ {TARGET_OVERHEAD}"), s.median >= TARGET_OVERHEAD)
                        }
                        _ => row,
                    });
                }
                (None, None) => self.rows.push(Row::note(figure, "no result")),
            }
        }
        self.cpu_rows(rounds);
    }

    /// The same rounds per second of the churn thread's own CPU time: what the probes cost
    /// inside mkdir/rmdir, without the time the thread waited for a CPU (on a busy machine most
    /// of the spread of the wall-clock ratios).
    fn cpu_rows(&mut self, rounds: &Rounds) {
        for mode in TRACED {
            if rounds.failure(mode).is_some() {
                continue;
            }
            if let Some(s) = stats(&rounds.ratios(mode, |c| c.cpu_rate)) {
                self.rows.push(Row::measured(
                    format!(
                        "overhead per CPU-second of the churn thread: {} (÷ untraced)",
                        mode.label()
                    ),
                    s,
                    ratio,
                ));
            }
        }
        let waited = rounds.values(Mode::Untraced, |r| r.churn.waited);
        if let Some(s) = stats(&waited) {
            let _ = writeln!(
                self.details,
                "- the untraced churn thread waited for a CPU {:.0}% of its rounds (median; {:.0}–{:.0}%): the machine was that busy",
                s.median * 100.0,
                s.min * 100.0,
                s.max * 100.0
            );
        }
    }

    /// Events lost at the top churn rate with the default ring.
    fn loss_rows(&mut self, rounds: &Rounds, round_secs: f64) {
        let lost = rounds.values(Mode::LiveFile, |r| r.lost.map(|l| l as f64));
        match (stats(&lost), rounds.failure(Mode::LiveFile)) {
            (_, Some(e)) => self.rows.push(Row::note(
                "loss at the top churn rate, default ring",
                format!("failed: {e}"),
            )),
            (Some(s), None) => self.rows.push(Row::measured(
                format!(
                    "loss: events lost per {} s round at the top churn rate, default ring ({})",
                    round_secs,
                    size_name(RING_DEFAULT)
                ),
                s,
                count,
            )),
            (None, None) => self.rows.push(Row::note(
                "loss at the top churn rate, default ring",
                "no result",
            )),
        }
    }

    /// The smallest ring without loss, and every size tried in the details.
    fn ring_scan_rows(&mut self, scan: &Result<Vec<(u64, u64, f64)>>, round_secs: f64) {
        let scan = match scan {
            Ok(scan) => scan,
            Err(e) => return self.failed("loss: ring size threshold", "ring scan", e),
        };
        // The smallest size from which every larger size lost nothing.
        let mut threshold = None;
        for &(size, lost, _) in scan.iter().rev() {
            if lost > 0 {
                break;
            }
            threshold = Some(size);
        }
        let list: Vec<String> = scan
            .iter()
            .map(|(s, l, rate)| format!("{}: {l} lost ({:.0} cycles/s)", size_name(*s), rate))
            .collect();
        let _ = writeln!(
            self.details,
            "- ring sizes (one {} s round each): {}",
            round_secs,
            list.join(", ")
        );
        match threshold {
            Some(t) => self.rows.push(Row::measured(
                "loss: smallest ring with 0 lost over a round (loss starts below it)",
                one(t as f64),
                ring,
            )),
            None => self.rows.push(Row::note(
                "loss: smallest ring with 0 lost over a round",
                format!("events were lost even with {}", size_name(RING_DEFAULT)),
            )),
        }
    }

    /// The programs' own run time per cycle, against an untraced cycle's CPU time.
    fn kernel_rows(&mut self, kcost: &Result<KernelCost>, rounds: &Rounds, round_secs: f64) {
        let (ns, churn, per) = match kcost {
            Ok(k) => k,
            Err(e) => return self.failed("kernel side", "kernel side", e),
        };
        self.rows.push(Row::measured(
            "kernel side: cgtrace's programs per mkdir+rmdir cycle (the kernel's bpf_stats)",
            one(*ns),
            nanos,
        ));
        if let Some(base) = stats(&rounds.values(Mode::Untraced, |r| r.churn.cpu_rate)) {
            // The untraced cycle's CPU time in the churn thread.
            let cycle_ns = 1e9 / base.median;
            self.rows.push(Row::measured(
                "kernel side: that time ÷ an untraced cycle's CPU time (upper bound)",
                one(ns / cycle_ns),
                percent,
            ));
        }
        let list: Vec<String> = per
            .iter()
            .map(|(name, ns, runs)| format!("{name} {ns:.0} ns × {runs:.2}/cycle"))
            .collect();
        let _ = writeln!(
            self.details,
            "- kernel side, per program (one {} s churn at {:.0} cycles/s under `cgtrace live --json`, kernel.bpf_stats_enabled on): {}",
            round_secs,
            churn.rate,
            list.join(", ")
        );
    }

    /// A trivial syscall's cost with nothing attached, and under each mode as a ratio to it.
    fn tax_rows(&mut self, tax: &Result<[Vec<f64>; 5]>) {
        let [base, rest @ ..] = match tax {
            Ok(t) => t,
            Err(e) => return self.failed("syscall tax", "syscall tax", e),
        };
        if let Some(s) = stats(base) {
            self.rows.push(Row::measured(
                "syscall tax: one getppid(2), nothing attached",
                s,
                nanos,
            ));
        }
        for (mode, v) in TAX_MODES.iter().zip(rest) {
            let mode = mode.replace(" --force -o {tmp}/tax.cgtrace", "");
            let figure =
                format!("syscall tax: getppid(2) under `cgtrace {mode}` (÷ nothing attached)");
            let figure = figure.as_str();
            let r: Vec<f64> = v.iter().zip(base).map(|(t, b)| t / b).collect();
            if let Some(s) = stats(&r) {
                self.rows.push(Row::measured(figure, s, ratio));
            }
        }
    }

    /// The pipeline's and the session's rates, the tracker's memory, their notes and details.
    fn pipeline_rows(&mut self, pipeline: &Result<PipelineResults>) {
        let p = match pipeline {
            Ok(p) => p,
            Err(e) => return self.failed("pipeline and memory", "pipeline bench", e),
        };
        let target = Some(("≥ 10 M/s", TARGET_PIPELINE_EPS));
        self.eps_rows(
            [
                (
                    "pipeline: decode → track, kubelet-like stream (events per CPU-second, one thread)",
                    &p.track_eps,
                ),
                (
                    "pipeline: decode → track → lifetime histograms (events per CPU-second, one thread)",
                    &p.histogram_eps,
                ),
            ],
            target,
        );
        self.eps_rows(
            [
                (
                    "session: decode → `SessionWriter` to memory (events per CPU-second)",
                    &p.session_write_eps,
                ),
                (
                    "session replay: `SessionReader` → track (events per CPU-second)",
                    &p.session_replay_eps,
                ),
            ],
            None,
        );
        if let Some(s) = stats(&p.session_bytes_per_event) {
            self.rows.push(Row::measured(
                "session: bytes per event (kubelet-like stream)",
                s,
                bytes_1,
            ));
        }
        if let Some(s) = stats(&p.decode_eps) {
            self.rows.push(Row::measured(
                "pipeline: decode alone (events per CPU-second, one thread)",
                s,
                events_per_s,
            ));
        }
        self.memory_rows(p);
        self.pipeline_details(p);
    }

    /// A row of events per CPU-second for each figure with values, against `target` (its text
    /// and the least median that meets it) if any.
    fn eps_rows(&mut self, figures: [(&str, &Vec<f64>); 2], target: Option<(&str, f64)>) {
        for (figure, v) in figures {
            if let Some(s) = stats(v) {
                let row = Row::measured(figure, s, events_per_s);
                self.rows.push(match target {
                    Some((text, least)) => row.target(text, s.median >= least),
                    None => row,
                });
            }
        }
    }

    /// RSS per dying memcg for each size the tracker was filled to.
    fn memory_rows(&mut self, p: &PipelineResults) {
        for &(n, per, tracked, dying) in &p.memory {
            self.rows.push(
                Row::measured(
                    format!(
                        "memory: RSS per dying memcg, {} tracked (kubelet paths)",
                        grouped(n as f64)
                    ),
                    one(per),
                    bytes,
                )
                .target("≤ 256 B", per <= TARGET_BYTES_PER_DYING),
            );
            if tracked != n || dying != n {
                self.notes.push(format!(
                    "memory run of {n}: the tracker held {tracked} cgroups, {dying} dying (expected {n})"
                ));
            }
        }
    }

    /// The pipeline bench's notes, its stream and the CPU share its rounds got.
    fn pipeline_details(&mut self, p: &PipelineResults) {
        for n in &p.notes {
            self.notes.push(format!("pipeline bench: {n}"));
        }
        if let (Some(b), Some(st)) = (p.record_bytes, &p.stream) {
            let _ = writeln!(
                self.details,
                "- pipeline stream: raw records of {b} bytes; {st}; mkdir, rmdir and release of `/kubepods/<qos>/pod<uuid>[/<64 hex>]` in every hierarchy; ≥ 5 M events per round, record generation not timed; rates are per second of the thread's CPU time"
            );
        }
        if let Some(s) = stats(&p.cpu_share) {
            let _ = writeln!(
                self.details,
                "- pipeline rounds got {:.0}% (median; {:.0}–{:.0}%) of a CPU in wall time",
                s.median * 100.0,
                s.min * 100.0,
                s.max * 100.0
            );
        }
    }

    /// Spawn → attached and spawn → first event streamed, with the cgroups of `label`.
    fn startup_rows(&mut self, label: &str, res: &Startup) {
        let v = match res {
            Ok(v) => v,
            Err(e) => {
                let what = format!("start-up ({label})");
                return self.failed(format!("start-up, {label}"), &what, e);
            }
        };
        let attach: Vec<f64> = v.iter().map(|r| r.0).collect();
        let stream: Vec<f64> = v.iter().map(|r| r.1).collect();
        if let Some(s) = stats(&attach) {
            self.rows.push(Row::measured(
                format!("start-up, {label}: spawn → `cgtrace: attached`"),
                s,
                ms,
            ));
        }
        if let Some(s) = stats(&stream) {
            self.rows.push(
                Row::measured(
                    format!("start-up, {label}: spawn → a mkdir made then is on stdout"),
                    s,
                    ms,
                )
                .target("≤ 300 ms", s.median <= TARGET_STARTUP_MS),
            );
        }
    }

    /// Every round's raw figures, in the order they ran.
    fn round_details(&mut self, rounds: &Rounds) {
        let rounds_n = rounds
            .results
            .iter()
            .map(|(_, r, _)| r + 1)
            .max()
            .unwrap_or(0);
        for round in 0..rounds_n {
            // In the order they ran.
            let cells: Vec<String> = rounds
                .results
                .iter()
                .filter(|(_, r, _)| *r == round)
                .map(|&(m, _, ref r)| {
                    let mut s = format!("{m:?} {}", grouped(r.churn.rate));
                    if let (Some(c), Some(w)) = (r.churn.cpu_rate, r.churn.waited) {
                        let _ = write!(s, " [{} per CPU-s, waited {:.0}%]", grouped(c), w * 100.0);
                    }
                    if let (Some(l), Some(e)) = (r.lost, r.events) {
                        let _ = write!(s, " (lost {l}, seen {e})");
                    }
                    s
                })
                .collect();
            let _ = writeln!(self.details, "- round {}: {}", round + 1, cells.join(", "));
        }
    }

    /// The report's markdown: the machine, how the overhead was measured, the table, the notes
    /// and the details.
    fn render(&self, machine: &Machine, parent_cgroup: &str, args: &BenchArgs) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## cgtrace benchmarks (`cargo xtask bench`)\n");
        md.push_str(&self.readme_section(machine, parent_cgroup, args));
        md.push_str("\nDetails:\n");
        md.push_str(&self.details);
        md
    }

    /// The machine, what was run, the table and its notes: README's section.
    fn readme_section(&self, machine: &Machine, parent_cgroup: &str, args: &BenchArgs) -> String {
        let mut md = machine.render();
        let _ = writeln!(
            md,
            "\nOverhead: single-threaded memcg mkdir+rmdir churn under `{}`, {} alternating rounds of {} s per mode (modes in a different shuffled order each round, the untraced churn run twice per round, half a round apart; before each run, the kernel's memory cgroup count is let settle); each traced rate is divided by the mean untraced rate of its round. Tracers see every cgroup of the node (no filter).\n",
            parent_cgroup, args.rounds, args.round_secs
        );
        md.push_str(&render_table(&self.rows));
        if !self.notes.is_empty() {
            md.push_str("\nNotes:\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        md
    }
}

impl Took {
    /// The details' line of the time each phase took and the total.
    fn details(&self, details: &mut String, total: Duration) {
        let _ = writeln!(
            details,
            "- time: pipeline bench (incl. its build) {:.0} s, overhead rounds {:.0} s, ring scan {:.0} s, start-up {:.0} s, pod churn {:.0} s; total {:.0} s",
            self.pipeline.as_secs_f64(),
            self.rounds.as_secs_f64(),
            self.scan.as_secs_f64(),
            self.startup.as_secs_f64(),
            self.pods.as_secs_f64(),
            total.as_secs_f64()
        );
    }
}
