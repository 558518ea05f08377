//! The start-up walk naming the memcgs that were dying before cgtrace started.
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
    programs::{RawTracePoint, RawTracePointRunOptions, TestRun as _},
};
use cgtrace_common::{
    Config, EventKind, KernelOffsets, OomLayout, PATH_CAP,
    names::{map, program},
};

use crate::kernel;

use super::{ProbeOptions, Probes, buffer, load::load_object};

/// Name prefix of the cgroups cgtrace makes at start to run the dying-memcg walk.
pub fn walk_trigger_prefix() -> String {
    format!("cgtrace-walk-{}-", std::process::id())
}

/// What the start-up walk for dying memcgs did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkReport {
    pub visited: u32,
    pub found: u32,
    pub done: bool,
    /// Runs of the walk program (one bounded chunk each): test runs or trigger cgroups made.
    pub triggers: u32,
    /// How the walk program was run.
    pub method: WalkMethod,
}

/// How the start-up walk's program was run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkMethod {
    /// Directly, with `BPF_PROG_TEST_RUN` (5.10+), from cgtrace's own task: no cgroupfs write.
    #[default]
    TestRun,
    /// On the mkdir tracepoint, by making `cgtrace-walk-*` cgroups (the fallback: needs a
    /// writable cgroupfs).
    TriggerCgroup,
}

impl WalkMethod {
    pub fn name(self) -> &'static str {
        match self {
            WalkMethod::TestRun => "BPF_PROG_TEST_RUN",
            WalkMethod::TriggerCgroup => "trigger cgroups",
        }
    }
}

/// What a run of the walk program returns (see cgtrace-ebpf/src/walk.rs).
pub(super) const WALK_RUN_FAILED: u32 = 1;

/// The options, configuration and prefix the programs were loaded with, for the walk.
#[derive(Clone)]
pub(super) struct WalkSetup {
    pub(super) opts: ProbeOptions,
    pub(super) cfg: Config,
    pub(super) prefix: [u8; PATH_CAP],
    pub(super) oom: OomLayout,
}

/// Names the memcgs that were dying before start: runs the walk program directly with
/// `BPF_PROG_TEST_RUN` from cgtrace's own task (no cgroupfs write), or where the kernel refuses
/// that (before 5.10), on mkdirs of `cgtrace-walk-*` cgroups made at the root of `mount` (the
/// hierarchy holding memory), until the walk is done or `stop` is set. The records go to the
/// object's ring as `dying_at_start` events; `after_run` runs after each run (to drain them). The
/// trigger cgroups' own events start with [`walk_trigger_prefix`] and are to be ignored.
pub(super) fn run_walk(
    ebpf: &mut Ebpf,
    off: &KernelOffsets,
    mount: &Path,
    only: Option<WalkMethod>,
    stop: &AtomicBool,
    mut after_run: impl FnMut(),
) -> anyhow::Result<WalkReport> {
    check_walk_offsets(off)?;
    load_walk_program(ebpf)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    // BPF_PROG_TEST_RUN: the program runs in this task, with zeroed arguments.
    let test_run = if only == Some(WalkMethod::TriggerCgroup) {
        Err(anyhow!("trigger cgroups asked for"))
    } else if off.task_cgroups == KernelOffsets::UNKNOWN
        || off.css_set_subsys == KernelOffsets::UNKNOWN
    {
        Err(anyhow!(
            "kernel BTF lacks task_struct.cgroups or css_set.subsys"
        ))
    } else {
        walk_by_test_run(ebpf, stop, deadline, &mut after_run)
    };
    match test_run {
        Ok(report) => {
            log::info!("start-up walk run with BPF_PROG_TEST_RUN");
            return Ok(report);
        }
        // Part of the walk ran: its cursor cannot be trusted by a second method.
        Err(e)
            if only == Some(WalkMethod::TestRun)
                || read_walk_state(ebpf, 0, WalkMethod::TestRun).is_ok_and(|r| r.visited > 0) =>
        {
            return Err(e);
        }
        Err(e) => log::info!(
            "start-up walk: BPF_PROG_TEST_RUN not usable ({e:#}); falling back to trigger cgroups"
        ),
    }
    walk_by_triggers(ebpf, mount, stop, deadline, &mut after_run)
}

/// The walk reads these through BTF: without one of them it cannot run.
fn check_walk_offsets(off: &KernelOffsets) -> anyhow::Result<()> {
    for (name, v) in [
        ("cgroup_subsys_state.children", off.css_children),
        ("cgroup_subsys_state.sibling", off.css_sibling),
        ("cgroup_subsys_state.parent", off.css_parent),
        ("cgroup_subsys_state.flags", off.css_flags),
        ("kernfs_node.name", off.kn_name),
    ] {
        if v == KernelOffsets::UNKNOWN {
            bail!("kernel BTF lacks {name}");
        }
    }
    Ok(())
}

/// Verifies and loads the walk program.
fn load_walk_program(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_WALK_DYING)
        .ok_or_else(|| anyhow!("program raw_walk_dying missing from the object"))?
        .try_into()?;
    let t0 = Instant::now();
    prog.load().context("loading raw_walk_dying")?;
    log::debug!("raw_walk_dying verified and loaded in {:?}", t0.elapsed());
    Ok(())
}

/// The walk's state after `n` runs by `method`.
fn read_walk_state(ebpf: &Ebpf, n: u32, method: WalkMethod) -> anyhow::Result<WalkReport> {
    let state: Array<_, cgtrace_common::WalkState> = Array::try_from(
        ebpf.map(map::WALK)
            .ok_or_else(|| anyhow!("map WALK missing from the object"))?,
    )?;
    let st = state.get(&0, 0)?;
    Ok(WalkReport {
        visited: st.visited,
        found: st.found,
        done: st.done != 0,
        triggers: n,
        method,
    })
}

/// Runs the walk program with `BPF_PROG_TEST_RUN` until the walk is done, `stop` is set or
/// `deadline` passed.
fn walk_by_test_run(
    ebpf: &mut Ebpf,
    stop: &AtomicBool,
    deadline: Instant,
    after_run: &mut impl FnMut(),
) -> anyhow::Result<WalkReport> {
    let mut report = WalkReport::default();
    for n in 1u32.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let prog: &RawTracePoint = ebpf
            .program(program::RAW_WALK_DYING)
            .ok_or_else(|| anyhow!("program raw_walk_dying missing"))?
            .try_into()?;
        let ret = prog
            .test_run(RawTracePointRunOptions::new())
            .context("BPF_PROG_TEST_RUN of raw_walk_dying")?
            .return_value;
        after_run();
        if ret == WALK_RUN_FAILED {
            bail!("the walk found no memory controller css from its own task");
        }
        report = read_walk_state(ebpf, n, WalkMethod::TestRun)?;
        if report.done || Instant::now() > deadline {
            break;
        }
    }
    Ok(report)
}

/// Runs the walk program on the mkdir tracepoint, making (and removing) trigger cgroups at
/// the root of `mount` until the walk is done, `stop` is set or `deadline` passed; then
/// detaches and unloads it.
fn walk_by_triggers(
    ebpf: &mut Ebpf,
    mount: &Path,
    stop: &AtomicBool,
    deadline: Instant,
    after_run: &mut impl FnMut(),
) -> anyhow::Result<WalkReport> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_WALK_DYING)
        .ok_or_else(|| anyhow!("program raw_walk_dying missing from the object"))?
        .try_into()?;
    let link = prog.attach("cgroup_mkdir").context("attaching the walk")?;
    let prefix = walk_trigger_prefix();
    let mut report = WalkReport::default();
    let result = (|| -> anyhow::Result<()> {
        for n in 0u32.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let dir = mount.join(format!("{prefix}{n}"));
            std::fs::create_dir(&dir)
                .with_context(|| format!("making the walk trigger {}", dir.display()))?;
            let _ = std::fs::remove_dir(&dir);
            after_run();
            report = read_walk_state(ebpf, n + 1, WalkMethod::TriggerCgroup)?;
            if report.done || Instant::now() > deadline {
                break;
            }
        }
        Ok(())
    })();
    if let Some(p) = ebpf.program_mut(program::RAW_WALK_DYING)
        && let Ok(p) = <&mut RawTracePoint>::try_from(p)
    {
        let _ = p.detach(link);
        let _ = p.unload();
    }
    result?;
    Ok(report)
}

/// What the background walk sends: its records, then its report.
pub(super) enum WalkMsg {
    Record(Vec<u8>),
    Done(Result<WalkReport, String>),
}

/// The start-up walk naming dying memcgs, running on its own thread with its own instance of
/// the object (and its own small ring): start-up does not wait for the walk program's
/// verification nor for the walk. Dropping it stops the walk and waits for the thread, so no
/// trigger cgroup is left behind.
pub struct WalkTask {
    rx: mpsc::Receiver<WalkMsg>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The report was returned.
    ended: bool,
}

impl WalkTask {
    /// Passes the records that arrived to `f`; returns the report once, when the walk ended.
    pub fn poll(&mut self, mut f: impl FnMut(&[u8])) -> Option<Result<WalkReport, String>> {
        while !self.ended {
            let report = match self.rx.try_recv() {
                Ok(WalkMsg::Record(r)) => {
                    f(&r);
                    continue;
                }
                Ok(WalkMsg::Done(r)) => r,
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    Err("the walk thread ended without a report".to_string())
                }
            };
            self.ended = true;
            return Some(report);
        }
        None
    }

    /// Whether the walk ended (its report was returned by [`WalkTask::poll`]).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Stops the walk (if still running) and waits for its thread; then passes the records it
    /// sent to `f` and returns its report (None if that was already returned).
    pub fn finish(&mut self, f: impl FnMut(&[u8])) -> Option<Result<WalkReport, String>> {
        self.stop_and_join();
        self.poll(f)
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WalkTask {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Ring size of the walk's own instance: it reports one memcg per trigger and is drained after
/// each, so a page would do; 16 pages (the kernel wants a power-of-two multiple of the page size).
pub(super) fn walk_ring_size() -> u32 {
    u32::try_from(kernel::page_size() * 16).unwrap_or(1 << 20)
}

impl Probes {
    /// Starts the walk naming the memcgs that were dying before start (see [`run_walk`]) on a
    /// thread of its own, triggered at the root of `mount` (the hierarchy holding memory). Its
    /// records come through [`WalkTask::poll`], beside the ring's events.
    pub fn spawn_walk(&self, mount: &Path) -> anyhow::Result<WalkTask> {
        self.spawn_walk_by(mount, None)
    }

    /// How the start-up walk would run here: one bounded `BPF_PROG_TEST_RUN` of the walk
    /// program in an instance of its own (its records are dropped), or why not (then the walk
    /// falls back to trigger cgroups). For `doctor`.
    pub fn try_walk_test_run(&self) -> Result<(), String> {
        let setup = self
            .walk_setup
            .clone()
            .ok_or_else(|| "the walk needs raw tracepoints".to_string())?;
        let off = &setup.cfg.offsets;
        if off.task_cgroups == KernelOffsets::UNKNOWN
            || off.css_set_subsys == KernelOffsets::UNKNOWN
        {
            return Err("kernel BTF lacks task_struct.cgroups or css_set.subsys".to_string());
        }
        (|| -> anyhow::Result<()> {
            let mut ebpf = load_object(&setup.opts, &setup.cfg, &setup.prefix, &setup.oom)?;
            let prog: &mut RawTracePoint = ebpf
                .program_mut(program::RAW_WALK_DYING)
                .ok_or_else(|| anyhow!("program raw_walk_dying missing from the object"))?
                .try_into()?;
            prog.load().context("loading raw_walk_dying")?;
            let ret = prog
                .test_run(RawTracePointRunOptions::new())
                .context("BPF_PROG_TEST_RUN")?
                .return_value;
            if ret == WALK_RUN_FAILED {
                bail!("the walk found no memory controller css from its own task");
            }
            Ok(())
        })()
        .map_err(|e| format!("{e:#}"))
    }

    /// [`Probes::spawn_walk`] with only one method (`None`: `BPF_PROG_TEST_RUN`, falling back
    /// to trigger cgroups).
    pub fn spawn_walk_by(
        &self,
        mount: &Path,
        only: Option<WalkMethod>,
    ) -> anyhow::Result<WalkTask> {
        let setup = self
            .walk_setup
            .clone()
            .ok_or_else(|| anyhow!("the walk needs raw tracepoints"))?;
        let mount = mount.to_path_buf();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cgtrace-walk".to_string())
            .spawn(move || {
                let result = (|| -> anyhow::Result<WalkReport> {
                    let mut ebpf = load_object(&setup.opts, &setup.cfg, &setup.prefix, &setup.oom)
                        .context("loading the walk's instance of the object")?;
                    let buffer = if setup.cfg.output == cgtrace_common::output::PERF {
                        buffer::Buffer::Perf
                    } else {
                        buffer::Buffer::Ring
                    };
                    let mut ring =
                        buffer::Events::take(&mut ebpf, buffer, u64::from(setup.opts.ring_size))?;
                    let off = &setup.cfg.offsets;
                    let report = run_walk(&mut ebpf, off, &mount, only, &stopped, || {
                        while ring.drain_all(usize::MAX, |item| {
                            let _ = tx.send(WalkMsg::Record(item.to_vec()));
                        }) > 0
                        {}
                    })?;
                    let lost = PerCpuArray::<_, u64>::try_from(
                        ebpf.map(map::LOST)
                            .ok_or_else(|| anyhow!("map LOST missing from the object"))?,
                    )?
                    .get(&(EventKind::DyingAtStart as u32), 0)
                    .context("reading the walk's LOST")?
                    .iter()
                    .sum::<u64>();
                    if lost > 0 {
                        bail!("the walk lost {lost} records (its ring was full)");
                    }
                    Ok(report)
                })();
                let _ = tx.send(WalkMsg::Done(result.map_err(|e| format!("{e:#}"))));
            })
            .context("starting the walk thread")?;
        Ok(WalkTask {
            rx,
            stop,
            thread: Some(thread),
            ended: false,
        })
    }
}
