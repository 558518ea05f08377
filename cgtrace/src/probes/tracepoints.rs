//! The cgroup tracepoints (mkdir, rmdir, release): raw tracepoints or classic ones.

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    programs::{RawTracePoint, TracePoint},
};
use cgtrace_common::names::program;

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

pub(super) fn attach_raw(ebpf: &mut Ebpf, before: &mut BeforeAttach<'_>) -> anyhow::Result<()> {
    let names: Vec<&str> = CGROUP_HOOKS.iter().map(|(_, raw, _)| *raw).collect();
    load_in_parallel(ebpf, &names)?;
    before.run();
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
