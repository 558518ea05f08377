//! The cgroup tracepoints (mkdir, rmdir, release): raw tracepoints or classic ones.

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::Array,
    programs::{RawTracePoint, TracePoint},
};
use cgtrace_common::{
    MAX_HIERARCHIES,
    names::{map, program},
};

use crate::kernel::tracefs;

use super::load::load_in_parallel;

/// The hooks on the cgroup tracepoints: (tracepoint, raw program, classic program).
pub(super) const CGROUP_HOOKS: [(&str, &str, &str); 3] = [
    (
        "cgroup_mkdir",
        program::RAW_CGROUP_MKDIR,
        program::TP_CGROUP_MKDIR,
    ),
    (
        "cgroup_rmdir",
        program::RAW_CGROUP_RMDIR,
        program::TP_CGROUP_RMDIR,
    ),
    (
        "cgroup_release",
        program::RAW_CGROUP_RELEASE,
        program::TP_CGROUP_RELEASE,
    ),
];

/// Calls the caller's hook once, just before the first cgroup tracepoint is attached.
pub(super) struct BeforeAttach<'a>(pub(super) Option<&'a mut dyn FnMut()>);

impl BeforeAttach<'_> {
    pub(super) fn run(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Attaches the raw cgroup tracepoints. With `omit_known_paths`, rmdir and release leave out
/// the path of a cgroup whose mkdir was reported with it (the pipeline has it): the
/// `cgroup_rename` hook (v1) is attached first, to read every path again once one changes;
/// without that hook, or without `omit_known_paths`, every path is read.
pub(super) fn attach_raw(
    ebpf: &mut Ebpf,
    before: &mut BeforeAttach<'_>,
    omit_known_paths: bool,
) -> anyhow::Result<()> {
    let mut names: Vec<&str> = CGROUP_HOOKS.iter().map(|(_, raw, _)| *raw).collect();
    names.push(program::RAW_CGROUP_RENAME);
    load_in_parallel(ebpf, &names)?;
    before.run();
    let omitting = omit_known_paths
        && attach_rename(ebpf)
            .inspect_err(|e| log::info!("every rmdir and release reads its path: {e:#}"))
            .is_ok();
    if !omitting {
        paths_unreliable(ebpf)?;
    }
    for (tp, prog, _) in CGROUP_HOOKS {
        let p: &mut RawTracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        p.attach(tp)
            .with_context(|| format!("attaching raw tracepoint {tp}"))?;
    }
    Ok(())
}

fn attach_rename(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let prog = program::RAW_CGROUP_RENAME;
    let p: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
        .try_into()?;
    p.attach("cgroup_rename")
        .context("attaching raw tracepoint cgroup_rename")?;
    Ok(())
}

/// Tells the programs that every path must be read (the last slot of `KNOWN_PATHS`).
fn paths_unreliable(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let mut known: Array<_, u64> = Array::try_from(
        ebpf.map_mut(map::KNOWN_PATHS)
            .ok_or_else(|| anyhow!("map KNOWN_PATHS missing from the object"))?,
    )?;
    known
        .set(MAX_HIERARCHIES as u32, 1, 0)
        .context("setting KNOWN_PATHS")?;
    Ok(())
}

pub(super) fn attach_classic(ebpf: &mut Ebpf, before: &mut BeforeAttach<'_>) -> anyhow::Result<()> {
    let names: Vec<&str> = CGROUP_HOOKS.iter().map(|(_, _, tp)| *tp).collect();
    load_in_parallel(ebpf, &names)?;
    before.run();
    for (tp, _, prog) in CGROUP_HOOKS {
        let p: &mut TracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
            .try_into()?;
        p.attach("cgroup", tp)
            .with_context(|| format!("attaching tracepoint cgroup:{tp}"))?;
    }
    Ok(())
}

pub(super) fn classic_layout() -> anyhow::Result<cgtrace_common::TracepointLayout> {
    let root = tracefs::find_or_mount()?;
    let layout = tracefs::read_cgroup_layout(&root, "cgroup_mkdir")?;
    for (tp, _, _) in &CGROUP_HOOKS[1..] {
        let other = tracefs::read_cgroup_layout(&root, tp)?;
        if other != layout {
            bail!("cgroup:{tp} has a different record layout from cgroup:cgroup_mkdir");
        }
    }
    Ok(layout)
}
