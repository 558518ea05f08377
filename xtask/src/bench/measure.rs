//! Every measure in turn, and the report's table of them.
use std::{fmt::Write as _, fs, path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};

use super::{
    BenchArgs, RING_DEFAULT, TARGET_BYTES_PER_DYING, TARGET_OVERHEAD, TARGET_PIPELINE_EPS,
    TARGET_STARTUP_MS,
    cgroups::{BenchParent, memory_mount},
    machine::Machine,
    modes::{Ctx, Mode, TAX_MODES, subcommands, syscall_tax},
    phases::{kernel_cost, overhead_rounds, pipeline_bench, ring_scan, startup},
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

pub(super) fn measure(
    args: &BenchArgs,
    bin: &Path,
    out_dir: &Path,
    tmp: &Path,
    started: Instant,
) -> Result<()> {
    let machine = Machine::describe();
    let subs = subcommands(bin)?;
    let has = |s: &str| subs.iter().any(|c| c == s);
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut details = String::new();
    let mut errors: Vec<String> = Vec::new();

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
    // 1. The user-space pipeline and the tracker's memory (no kernel involved).
    let t = Instant::now();
    eprintln!("xtask bench: pipeline and memory (cargo bench -p cgtrace --bench pipeline)");
    let pipeline = pipeline_bench();
    let pipeline_time = t.elapsed();

    // 2. Overhead and loss, in alternating rounds.
    let mut modes = vec![Mode::Untraced, Mode::Live, Mode::LivePerf, Mode::LiveFile];
    for (sub, mode) in [("record", Mode::Record), ("attach", Mode::Attach)] {
        if has(sub) {
            modes.push(mode);
        }
    }
    modes.push(Mode::Bpftrace);
    let t = Instant::now();
    let rounds = overhead_rounds(&ctx, args.rounds as usize, &modes)?;
    let rounds_time = t.elapsed();

    // 3. The ring size where loss starts.
    let t = Instant::now();
    let scan = ring_scan(&ctx);
    let scan_time = t.elapsed();

    // 3b. The kernel side alone: the programs' own run time per cycle.
    let kcost = kernel_cost(&ctx);

    // 3c. The syscall tax of the failed-mkdir hook.
    let tax = syscall_tax(&ctx);

    // 4. Start-up, with the machine's own cgroups, then with many more.
    let t = Instant::now();
    let startup_plain = startup(&ctx, &parent.cgroup_path, "plain");
    let many = parent.dir.join("many");
    let mut made = 0u32;
    let startup_many = (|| -> Result<Vec<(f64, f64)>> {
        fs::create_dir(&many).with_context(|| format!("mkdir {}", many.display()))?;
        for i in 0..args.startup_cgroups {
            let d = many.join(format!("c{i:05}"));
            fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            made += 1;
        }
        startup(&ctx, &parent.cgroup_path, "many")
    })();
    // Remove them in a known order (quicker than walking 10,000 directories).
    for i in (0..made).rev() {
        let d = many.join(format!("c{i:05}"));
        if let Err(e) = fs::remove_dir(&d) {
            errors.push(format!("rmdir {}: {e}", d.display()));
        }
    }
    let startup_time = t.elapsed();
    if let Err(e) = parent.remove() {
        errors.push(format!("{e:#}"));
    }

    // 5. Memory under pod churn (its rows come last).
    let t = Instant::now();
    let mut pod_rows = Vec::new();
    if let Err(e) = pod_churn(args, bin, &machine, &mut pod_rows, &mut details) {
        errors.push(format!("pod churn: {e:#}"));
    }
    let pods_time = t.elapsed();

    // The table.
    let base = rounds.values(Mode::Untraced, |r| Some(r.churn.rate));
    if let Some(s) = stats(&base) {
        rows.push(Row::measured(
            "untraced memcg mkdir+rmdir rate (cycles/s, one thread)",
            s,
            per_s,
        ));
    }
    for mode in [
        Mode::Live,
        Mode::LivePerf,
        Mode::LiveFile,
        Mode::Record,
        Mode::Attach,
        Mode::Bpftrace,
    ] {
        let figure = format!("overhead: {} (rate ÷ untraced)", mode.label());
        if !modes.contains(&mode) {
            let sub = if mode == Mode::Record {
                "record"
            } else {
                "attach"
            };
            rows.push(Row::note(
                figure,
                format!("skipped: this build of cgtrace has no `{sub}` subcommand"),
            ));
            continue;
        }
        match (
            stats(&rounds.ratios(mode, |c| Some(c.rate))),
            rounds.failure(mode),
        ) {
            (_, Some(e)) => rows.push(Row::note(figure, format!("failed: {e}"))),
            (Some(s), None) => {
                let row = Row::measured(figure, s, ratio);
                // The target is for tracing to /dev/null (or a session file): writing JSON
                // lines to a file and bpftrace are there for comparison.
                rows.push(match mode {
                    Mode::Live | Mode::Record | Mode::Attach => {
                        row.target(format!("≥ {TARGET_OVERHEAD}"), s.median >= TARGET_OVERHEAD)
                    }
                    _ => row,
                });
            }
            (None, None) => rows.push(Row::note(figure, "no result")),
        }
    }
    // The same rounds per second of the churn thread's own CPU time: what the probes cost
    // inside mkdir/rmdir, without the time the thread waited for a CPU (on a busy machine most
    // of the spread of the wall-clock ratios).
    for mode in [
        Mode::Live,
        Mode::LivePerf,
        Mode::LiveFile,
        Mode::Record,
        Mode::Attach,
        Mode::Bpftrace,
    ] {
        if rounds.failure(mode).is_some() {
            continue;
        }
        if let Some(s) = stats(&rounds.ratios(mode, |c| c.cpu_rate)) {
            rows.push(Row::measured(
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
            details,
            "- the untraced churn thread waited for a CPU {:.0}% of its rounds (median; {:.0}–{:.0}%): the machine was that busy",
            s.median * 100.0,
            s.min * 100.0,
            s.max * 100.0
        );
    }
    let lost = rounds.values(Mode::LiveFile, |r| r.lost.map(|l| l as f64));
    match (stats(&lost), rounds.failure(Mode::LiveFile)) {
        (_, Some(e)) => rows.push(Row::note(
            "loss at the top churn rate, default ring",
            format!("failed: {e}"),
        )),
        (Some(s), None) => rows.push(Row::measured(
            format!(
                "loss: events lost per {} s round at the top churn rate, default ring ({})",
                args.round_secs,
                size_name(RING_DEFAULT)
            ),
            s,
            count,
        )),
        (None, None) => rows.push(Row::note(
            "loss at the top churn rate, default ring",
            "no result",
        )),
    }
    match &scan {
        Ok(scan) => {
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
                details,
                "- ring sizes (one {} s round each): {}",
                args.round_secs,
                list.join(", ")
            );
            match threshold {
                Some(t) => rows.push(Row::measured(
                    "loss: smallest ring with 0 lost over a round (loss starts below it)",
                    Stats {
                        median: t as f64,
                        min: t as f64,
                        max: t as f64,
                        n: 1,
                    },
                    ring,
                )),
                None => rows.push(Row::note(
                    "loss: smallest ring with 0 lost over a round",
                    format!("events were lost even with {}", size_name(RING_DEFAULT)),
                )),
            }
        }
        Err(e) => {
            rows.push(Row::note(
                "loss: ring size threshold",
                format!("failed: {e:#}"),
            ));
            errors.push(format!("ring scan: {e:#}"));
        }
    }
    match &kcost {
        Ok((ns, churn, per)) => {
            let one = |v: f64| Stats {
                median: v,
                min: v,
                max: v,
                n: 1,
            };
            rows.push(Row::measured(
                "kernel side: cgtrace's programs per mkdir+rmdir cycle (the kernel's bpf_stats)",
                one(*ns),
                nanos,
            ));
            if let Some(base) = stats(&rounds.values(Mode::Untraced, |r| r.churn.cpu_rate)) {
                // The untraced cycle's CPU time in the churn thread.
                let cycle_ns = 1e9 / base.median;
                rows.push(Row::measured(
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
                details,
                "- kernel side, per program (one {} s churn at {:.0} cycles/s under `cgtrace live --json`, kernel.bpf_stats_enabled on): {}",
                ctx.round_secs,
                churn.rate,
                list.join(", ")
            );
        }
        Err(e) => {
            rows.push(Row::note("kernel side", format!("failed: {e:#}")));
            errors.push(format!("kernel side: {e:#}"));
        }
    }
    match &tax {
        Ok([base, rest @ ..]) => {
            if let Some(s) = stats(base) {
                rows.push(Row::measured(
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
                    rows.push(Row::measured(figure, s, ratio));
                }
            }
        }
        Err(e) => {
            rows.push(Row::note("syscall tax", format!("failed: {e:#}")));
            errors.push(format!("syscall tax: {e:#}"));
        }
    }
    match &pipeline {
        Ok(p) => {
            for (figure, v) in [
                (
                    "pipeline: decode → track, kubelet-like stream (events per CPU-second, one thread)",
                    &p.track_eps,
                ),
                (
                    "pipeline: decode → track → lifetime histograms (events per CPU-second, one thread)",
                    &p.histogram_eps,
                ),
            ] {
                if let Some(s) = stats(v) {
                    rows.push(
                        Row::measured(figure, s, events_per_s)
                            .target("≥ 10 M/s", s.median >= TARGET_PIPELINE_EPS),
                    );
                }
            }
            for (figure, v) in [
                (
                    "session: decode → `SessionWriter` to memory (events per CPU-second)",
                    &p.session_write_eps,
                ),
                (
                    "session replay: `SessionReader` → track (events per CPU-second)",
                    &p.session_replay_eps,
                ),
            ] {
                if let Some(s) = stats(v) {
                    rows.push(Row::measured(figure, s, events_per_s));
                }
            }
            if let Some(s) = stats(&p.session_bytes_per_event) {
                rows.push(Row::measured(
                    "session: bytes per event (kubelet-like stream)",
                    s,
                    bytes_1,
                ));
            }
            if let Some(s) = stats(&p.decode_eps) {
                rows.push(Row::measured(
                    "pipeline: decode alone (events per CPU-second, one thread)",
                    s,
                    events_per_s,
                ));
            }
            for &(n, per, tracked, dying) in &p.memory {
                let s = Stats {
                    median: per,
                    min: per,
                    max: per,
                    n: 1,
                };
                rows.push(
                    Row::measured(
                        format!(
                            "memory: RSS per dying memcg, {} tracked (kubelet paths)",
                            grouped(n as f64)
                        ),
                        s,
                        bytes,
                    )
                    .target("≤ 256 B", per <= TARGET_BYTES_PER_DYING),
                );
                if tracked != n || dying != n {
                    notes.push(format!(
                        "memory run of {n}: the tracker held {tracked} cgroups, {dying} dying (expected {n})"
                    ));
                }
            }
            for n in &p.notes {
                notes.push(format!("pipeline bench: {n}"));
            }
            if let (Some(b), Some(st)) = (p.record_bytes, &p.stream) {
                let _ = writeln!(
                    details,
                    "- pipeline stream: raw records of {b} bytes; {st}; mkdir, rmdir and release of `/kubepods/<qos>/pod<uuid>[/<64 hex>]` in every hierarchy; ≥ 5 M events per round, record generation not timed; rates are per second of the thread's CPU time"
                );
            }
            if let Some(s) = stats(&p.cpu_share) {
                let _ = writeln!(
                    details,
                    "- pipeline rounds got {:.0}% (median; {:.0}–{:.0}%) of a CPU in wall time",
                    s.median * 100.0,
                    s.min * 100.0,
                    s.max * 100.0
                );
            }
        }
        Err(e) => {
            rows.push(Row::note("pipeline and memory", format!("failed: {e:#}")));
            errors.push(format!("pipeline bench: {e:#}"));
        }
    }
    for (label, res) in [
        ("the machine's own cgroups", &startup_plain),
        (
            &*format!("{} extra memcgs", grouped(f64::from(args.startup_cgroups))),
            &startup_many,
        ),
    ] {
        match res {
            Ok(v) => {
                let attach: Vec<f64> = v.iter().map(|r| r.0).collect();
                let stream: Vec<f64> = v.iter().map(|r| r.1).collect();
                if let Some(s) = stats(&attach) {
                    rows.push(Row::measured(
                        format!("start-up, {label}: spawn → `cgtrace: attached`"),
                        s,
                        ms,
                    ));
                }
                if let Some(s) = stats(&stream) {
                    rows.push(
                        Row::measured(
                            format!("start-up, {label}: spawn → a mkdir made then is on stdout"),
                            s,
                            ms,
                        )
                        .target("≤ 300 ms", s.median <= TARGET_STARTUP_MS),
                    );
                }
            }
            Err(e) => {
                rows.push(Row::note(
                    format!("start-up, {label}"),
                    format!("failed: {e:#}"),
                ));
                errors.push(format!("start-up ({label}): {e:#}"));
            }
        }
    }

    rows.extend(pod_rows);

    // Per-round raw figures.
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
        let _ = writeln!(details, "- round {}: {}", round + 1, cells.join(", "));
    }
    let total = started.elapsed();
    let _ = writeln!(
        details,
        "- time: pipeline bench (incl. its build) {:.0} s, overhead rounds {:.0} s, ring scan {:.0} s, start-up {:.0} s, pod churn {:.0} s; total {:.0} s",
        pipeline_time.as_secs_f64(),
        rounds_time.as_secs_f64(),
        scan_time.as_secs_f64(),
        startup_time.as_secs_f64(),
        pods_time.as_secs_f64(),
        total.as_secs_f64()
    );

    let mut md = String::new();
    let _ = writeln!(md, "## cgtrace benchmarks (`cargo xtask bench`)\n");
    md.push_str(&machine.render());
    let _ = writeln!(
        md,
        "\nOverhead: single-threaded memcg mkdir+rmdir churn under `{}`, {} alternating rounds of {} s per mode (modes in a different shuffled order each round, the untraced churn run twice per round, half a round apart; before each run, the kernel's memory cgroup count is let settle); each traced rate is divided by the mean untraced rate of its round. Tracers see every cgroup of the node (no filter).\n",
        parent.cgroup_path, args.rounds, args.round_secs
    );
    md.push_str(&render_table(&rows));
    if !notes.is_empty() {
        md.push_str("\nNotes:\n");
        for n in &notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md.push_str("\nDetails:\n");
    md.push_str(&details);
    write_report(out_dir, "latest.md", &md)?;
    if !errors.is_empty() {
        bail!("some measures failed:\n  {}", errors.join("\n  "));
    }
    Ok(())
}
