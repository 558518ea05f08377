//! The phases: overhead rounds, the kernel side, the ring scan, start-up, the pipeline.
use std::{
    fmt::Write as _,
    fs, io,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{
    ATTACH_TIMEOUT, RING_DEFAULT, RING_MIN, SETTLE, STARTUP_RUNS,
    cgroups::{Churn, churn},
    modes::{Ctx, Mode, RunResult, cgtrace_tracer, run_mode},
    stats::size_name,
    tracer::{Out, Tracer},
};
use crate::cargo;

// ---------------------------------------------------------------------------------------------
// The phases

/// Overhead and loss: alternating rounds of every mode.
pub(super) struct Rounds {
    /// (mode, round, result), in the order they ran.
    pub(super) results: Vec<(Mode, usize, RunResult)>,
    pub(super) failed: Vec<(Mode, String)>,
}

pub(super) fn overhead_rounds(ctx: &Ctx, rounds: usize, modes: &[Mode]) -> Result<Rounds> {
    let mut r = Rounds {
        results: Vec::new(),
        failed: Vec::new(),
    };
    for round in 0..rounds {
        let mut order: Vec<Mode> = modes
            .iter()
            .copied()
            .filter(|m| !r.failed.iter().any(|(f, _)| f == m))
            .collect();
        if order.is_empty() {
            break;
        }
        // A different order each round (a fixed pseudo-random shuffle): no mode always runs
        // right after the same other one.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(round as u64 + 1);
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        // A second untraced run half a round away: each traced run is divided by the mean of
        // its round's untraced runs, so a drift of the machine within a round cancels out.
        if order.len() > 2
            && let Some(at) = order.iter().position(|m| *m == Mode::Untraced)
        {
            let len = order.len();
            order.insert((at + len / 2) % len + 1, Mode::Untraced);
        }
        let mut line = format!("xtask bench: round {}/{rounds}:", round + 1);
        for (i, mode) in order.into_iter().enumerate() {
            match run_mode(ctx, mode, &format!("round{round}-{i}-{mode:?}"), None) {
                Ok(res) => {
                    let _ = write!(line, " {mode:?} {:.0}/s", res.churn.rate);
                    if let Some(l) = res.lost {
                        let _ = write!(line, " (lost {l})");
                    }
                    r.results.push((mode, round, res));
                }
                Err(e) if mode == Mode::Untraced => {
                    return Err(e.context("the untraced churn failed"));
                }
                Err(e) => {
                    eprintln!("xtask bench: {mode:?} failed, dropped from the rounds: {e:#}");
                    r.failed.push((mode, format!("{e:#}")));
                }
            }
        }
        eprintln!("{line}");
    }
    Ok(r)
}

impl Rounds {
    /// Mean of `rate` over the untraced runs of `round`.
    pub(super) fn base(&self, round: usize, rate: &impl Fn(&Churn) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self
            .results
            .iter()
            .filter(|(m, r, _)| *m == Mode::Untraced && *r == round)
            .filter_map(|(_, _, x)| rate(&x.churn))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Per round: `rate(mode) ÷ rate(untraced)` (the mean of the round's untraced runs), with
    /// `rate` picking a churn figure.
    pub(super) fn ratios(&self, mode: Mode, rate: impl Fn(&Churn) -> Option<f64>) -> Vec<f64> {
        self.results
            .iter()
            .filter(|(m, _, _)| *m == mode)
            .filter_map(|(_, round, res)| {
                let base = self.base(*round, &rate)?;
                let traced = rate(&res.churn)?;
                (base > 0.0).then(|| traced / base)
            })
            .collect()
    }

    pub(super) fn values(&self, mode: Mode, f: impl Fn(&RunResult) -> Option<f64>) -> Vec<f64> {
        self.results
            .iter()
            .filter(|(m, _, _)| *m == mode)
            .filter_map(|(_, _, r)| f(r))
            .collect()
    }

    pub(super) fn failure(&self, mode: Mode) -> Option<&str> {
        self.failed
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, e)| e.as_str())
    }
}

/// `bpftool prog show`: (id, name, run_time_ns, run_cnt) of every loaded program (the run
/// figures are 0 unless `kernel.bpf_stats_enabled` is on).
pub(super) fn bpf_prog_stats() -> Result<Vec<(u64, String, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .context("running bpftool prog show")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_prog_show(&String::from_utf8_lossy(&out.stdout)))
}

/// The program lines of `bpftool prog show` (continuation lines are indented).
pub(super) fn parse_prog_show(text: &str) -> Vec<(u64, String, u64, u64)> {
    let mut v = Vec::new();
    for line in text.lines() {
        // `<id>: <type>  name <name>  tag <tag>  gpl run_time_ns <ns> run_cnt <n>`
        let Some((id, rest)) = line.split_once(": ") else {
            continue;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let name = after("name").unwrap_or("").to_string();
        let num = |key: &str| after(key).and_then(|x| x.parse().ok()).unwrap_or(0);
        v.push((id, name, num("run_time_ns"), num("run_cnt")));
    }
    v
}

/// `kernel.bpf_stats_enabled` switched on for as long as this lives, then set back.
pub(super) struct BpfStats(pub(super) String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    pub(super) fn enable() -> Result<BpfStats> {
        let was =
            fs::read_to_string(Self::PATH).with_context(|| format!("reading {}", Self::PATH))?;
        fs::write(Self::PATH, "1").with_context(|| format!("writing {}", Self::PATH))?;
        Ok(BpfStats(was.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(Self::PATH, &self.0);
    }
}

/// What [`kernel_cost`] measured: ns per cycle, the churn, per program (name, ns per run,
/// runs per cycle).
pub(super) type KernelCost = (f64, Churn, Vec<(String, f64, f64)>);

/// The kernel-side cost of `cgtrace live`: the run time of its programs (the kernel's own
/// per-program accounting, `kernel.bpf_stats_enabled`) over one churn, per mkdir+rmdir cycle.
/// The accounting itself adds a little to each run: an upper bound.
pub(super) fn kernel_cost(ctx: &Ctx) -> Result<KernelCost> {
    let before: Vec<u64> = bpf_prog_stats()?.iter().map(|p| p.0).collect();
    let (mut t, file) = cgtrace_tracer(ctx, Mode::Live, "kernel-cost", None)?;
    let res = (|| -> Result<KernelCost> {
        t.wait_cgtrace_attached()?;
        thread::sleep(SETTLE);
        let ours = |all: Vec<(u64, String, u64, u64)>| -> Vec<(u64, String, u64, u64)> {
            all.into_iter()
                .filter(|p| !before.contains(&p.0))
                .filter(|p| {
                    ["raw_cgroup_", "sys_e", "exit_mkdir"]
                        .iter()
                        .any(|n| p.1.starts_with(n))
                })
                .collect()
        };
        let stats = BpfStats::enable()?;
        let start = ours(bpf_prog_stats()?);
        let churn = churn(&ctx.parent, ctx.round_secs)?;
        let end = ours(bpf_prog_stats()?);
        drop(stats);
        t.stop()?;
        if end.is_empty() {
            bail!("no cgtrace program found in `bpftool prog show`");
        }
        let cycles = churn.rate * ctx.round_secs;
        let mut total = 0u64;
        let mut per = Vec::new();
        for (id, name, ns, cnt) in &end {
            let (ns0, cnt0) = start
                .iter()
                .find(|p| p.0 == *id)
                .map_or((0, 0), |p| (p.2, p.3));
            let (ns, cnt) = (ns.saturating_sub(ns0), cnt.saturating_sub(cnt0));
            total += ns;
            if cnt > 0 {
                per.push((name.clone(), ns as f64 / cnt as f64, cnt as f64 / cycles));
            }
        }
        Ok((total as f64 / cycles.max(1.0), churn, per))
    })();
    drop(t);
    let _ = fs::remove_file(&file);
    res
}

/// Loss threshold: one round per ring size, 4 KiB → 4 MiB.
pub(super) fn ring_scan(ctx: &Ctx) -> Result<Vec<(u64, u64, f64)>> {
    let mut v = Vec::new();
    let mut size = RING_MIN;
    while size <= RING_DEFAULT {
        let r = run_mode(ctx, Mode::LiveFile, &format!("ring-{size}"), Some(size))
            .with_context(|| format!("loss with --ring-size {size}"))?;
        let lost = r.lost.unwrap_or(0);
        eprintln!(
            "xtask bench: ring {}: lost {lost} at {:.0} cycles/s",
            size_name(size),
            r.churn.rate
        );
        v.push((size, lost, r.churn.rate));
        size *= 2;
    }
    Ok(v)
}

/// Start-up: spawn → `cgtrace: attached`, and spawn → a mkdir made right after attaching shows
/// on stdout. Returns (attach ms, stream ms) per run.
pub(super) fn startup(ctx: &Ctx, parent_cgroup: &str, tag: &str) -> Result<Vec<(f64, f64)>> {
    let mut v = Vec::new();
    for i in 0..STARTUP_RUNS {
        let name = format!("mark-{tag}-{i}");
        let dir = ctx.parent.join(&name);
        let needles = vec![
            "\"event\":\"mkdir\"".to_string(),
            format!("\"path\":\"{parent_cgroup}/{name}\""),
        ];
        let mut t = Tracer::spawn(
            "cgtrace live --json (start-up)",
            &ctx.bin,
            &["live".into(), "--json".into()],
            Out::Watch(needles),
        )?;
        let res = (|| -> Result<(f64, f64)> {
            let attached = t.wait_cgtrace_attached()?;
            fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            let seen = t
                .wait_line(true, |_| true, ATTACH_TIMEOUT)
                .with_context(|| format!("waiting for the mkdir of {name} on stdout"))?;
            t.stop()?;
            Ok((
                attached.duration_since(t.spawned).as_secs_f64() * 1e3,
                seen.duration_since(t.spawned).as_secs_f64() * 1e3,
            ))
        })();
        drop(t);
        let rm = fs::remove_dir(&dir);
        let r = res?;
        if let Err(e) = rm
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(e).with_context(|| format!("rmdir {}", dir.display()));
        }
        eprintln!(
            "xtask bench: start-up ({tag}): attached {:.0} ms, streaming {:.0} ms",
            r.0, r.1
        );
        v.push(r);
        // Let the exited tracer's programs and maps go before the next start.
        thread::sleep(Duration::from_millis(200));
    }
    Ok(v)
}

/// What `cargo bench -p cgtrace --bench pipeline` printed.
#[derive(Default)]
pub(super) struct PipelineResults {
    /// events/s per round: decode → track, decode → track → lifetime histograms, decode alone.
    pub(super) track_eps: Vec<f64>,
    pub(super) histogram_eps: Vec<f64>,
    /// Session rounds: events/s written (decode → SessionWriter), events/s replayed
    /// (SessionReader → track), session bytes per event.
    pub(super) session_write_eps: Vec<f64>,
    pub(super) session_replay_eps: Vec<f64>,
    pub(super) session_bytes_per_event: Vec<f64>,
    /// Thread CPU time ÷ wall time of the pipeline rounds (how much the machine let it run).
    pub(super) cpu_share: Vec<f64>,
    pub(super) decode_eps: Vec<f64>,
    /// (n, bytes per dying cgroup, tracked, dying)
    pub(super) memory: Vec<(u64, f64, u64, u64)>,
    pub(super) notes: Vec<String>,
    pub(super) record_bytes: Option<u64>,
    pub(super) stream: Option<String>,
}

pub(super) fn parse_pipeline(text: &str) -> Result<PipelineResults> {
    let mut p = PipelineResults::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(key) = f.next() else { continue };
        let nums: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        match key {
            "pipeline_round" => {
                let (Some(variant), [events, secs, decode_s, wall_s]) = (f.next(), &nums[..])
                else {
                    bail!("unexpected bench line: {line}");
                };
                let (events, secs, decode_s) = (*events, *secs, *decode_s);
                if *wall_s > 0.0 && secs > 0.0 {
                    p.cpu_share.push(secs / wall_s);
                }
                if secs > 0.0 {
                    match variant {
                        "track" => p.track_eps.push(events / secs),
                        "histograms" => p.histogram_eps.push(events / secs),
                        _ => bail!("unexpected bench line: {line}"),
                    }
                }
                if decode_s > 0.0 {
                    p.decode_eps.push(events / decode_s);
                }
            }
            "session_round" => {
                let [events, write_s, replay_s, bytes] = nums[..] else {
                    bail!("unexpected bench line: {line}");
                };
                if events > 0.0 {
                    p.session_bytes_per_event.push(bytes / events);
                }
                if write_s > 0.0 {
                    p.session_write_eps.push(events / write_s);
                }
                if replay_s > 0.0 {
                    p.session_replay_eps.push(events / replay_s);
                }
            }
            "memory_dying" => {
                let [n, before, after, tracked, dying] = nums[..] else {
                    bail!("unexpected bench line: {line}");
                };
                if n > 0.0 {
                    p.memory
                        .push((n as u64, (after - before) / n, tracked as u64, dying as u64));
                }
            }
            "note" => p.notes.push(line["note".len()..].trim().to_string()),
            "record_bytes" => p.record_bytes = nums.first().map(|&b| b as u64),
            "stream" => p.stream = Some(line["stream".len()..].trim().to_string()),
            _ => {}
        }
    }
    if p.track_eps.is_empty() && p.histogram_eps.is_empty() {
        bail!("the pipeline bench printed no pipeline_round line");
    }
    Ok(p)
}

pub(super) fn pipeline_bench() -> Result<PipelineResults> {
    let out = cargo()
        .args(["bench", "-p", "cgtrace", "--bench", "pipeline"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo bench -p cgtrace --bench pipeline")?;
    if !out.status.success() {
        bail!(
            "cargo bench -p cgtrace --bench pipeline failed with {}",
            out.status
        );
    }
    parse_pipeline(&String::from_utf8_lossy(&out.stdout))
}
