//! The OOM killer's hooks: the `mark_victim` tracepoint and the context of `out_of_memory()`
//! and `__oom_kill_process()` on the css tiers.

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf,
    maps::ProgramArray,
    programs::{FEntry, FExit, KProbe, Program, RawTracePoint},
};
use cgtrace_common::{
    OomLayout,
    names::{map, program},
};

use crate::kernel::tracefs;

use super::{Tier, load::load_error, offsets::BtfFacts};

/// The OOM killer's context on the css tiers: (kernel function, fentry, fexit, kprobe,
/// kretprobe). `out_of_memory()` first (its `struct oom_control`), then `__oom_kill_process()`
/// (where the kernel counts a kill; static, so not on every build).
pub(super) const OOM_CONTEXT_HOOKS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "out_of_memory",
        program::FENTRY_OUT_OF_MEMORY,
        program::FEXIT_OUT_OF_MEMORY,
        program::KPROBE_OUT_OF_MEMORY,
        program::KRETPROBE_OUT_OF_MEMORY,
    ),
    (
        "__oom_kill_process",
        program::FENTRY_OOM_KILL,
        program::FEXIT_OOM_KILL,
        program::KPROBE_OOM_KILL,
        program::KRETPROBE_OOM_KILL,
    ),
];

/// The OOM programs' layout, with the form of `mark_victim` from BTF, else from tracefs; or why
/// OOM kills cannot be traced.
pub(super) fn oom_plan(facts: &anyhow::Result<BtfFacts>) -> Result<OomLayout, String> {
    let f = facts
        .as_ref()
        .map_err(|e| format!("OOM kills need kernel BTF: {e:#}"))?;
    if !f.oom_missing.is_empty() {
        return Err(format!("kernel BTF lacks {}", f.oom_missing.join(", ")));
    }
    let victim_task = match f.victim_task {
        Some(t) => t,
        None => tracefs::find_or_mount()
            .map_err(|e| e.to_string())
            .and_then(|root| tracefs::read_mark_victim_form(&root).map_err(|e| e.to_string()))?
            .ok_or("neither BTF nor tracefs says what oom:mark_victim hands over")?,
    };
    Ok(OomLayout {
        victim_is_task: u32::from(victim_task),
        ..f.oom
    })
}

/// Attaches the raw tracepoint `mark_victim`, its second stage loaded into `OOM_PROGS` first.
pub(super) fn attach_oom_victim(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let emit: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_OOM_EMIT)
        .ok_or_else(|| anyhow!("program raw_oom_emit missing from the object"))?
        .try_into()?;
    emit.load().context("loading raw_oom_emit")?;
    let fd = emit.fd()?.try_clone()?;
    let mut progs = ProgramArray::try_from(
        ebpf.map_mut(map::OOM_PROGS)
            .ok_or_else(|| anyhow!("map OOM_PROGS missing from the object"))?,
    )?;
    progs
        .set(0, &fd, 0)
        .context("putting raw_oom_emit into OOM_PROGS")?;
    let p: &mut RawTracePoint = ebpf
        .program_mut(program::RAW_OOM_MARK_VICTIM)
        .ok_or_else(|| anyhow!("program raw_oom_mark_victim missing from the object"))?
        .try_into()?;
    p.load().context("loading raw_oom_mark_victim")?;
    p.attach("mark_victim")
        .context("attaching raw tracepoint mark_victim")?;
    Ok(())
}

/// One OOM context hook of `tier`: entry and exit programs on `func`.
pub(super) fn attach_oom_hook(
    ebpf: &mut Ebpf,
    tier: Tier,
    btf: Option<&Btf>,
    (func, fentry, fexit, kprobe, kretprobe): (&str, &str, &str, &str, &str),
) -> anyhow::Result<()> {
    match tier {
        Tier::Tracepoint => bail!("the tracepoint tier hooks no kernel functions"),
        Tier::Fentry => {
            let btf = btf.ok_or_else(|| anyhow!("no kernel BTF"))?;
            let p: &mut FEntry = ebpf
                .program_mut(fentry)
                .ok_or_else(|| anyhow!("program {fentry} missing"))?
                .try_into()?;
            p.load(func, btf).map_err(load_error)?;
            p.attach().with_context(|| format!("fentry {func}"))?;
            let p: &mut FExit = ebpf
                .program_mut(fexit)
                .ok_or_else(|| anyhow!("program {fexit} missing"))?
                .try_into()?;
            p.load(func, btf).map_err(load_error)?;
            p.attach().with_context(|| format!("fexit {func}"))?;
        }
        Tier::Kprobe => {
            for prog in [kprobe, kretprobe] {
                let p: &mut KProbe = ebpf
                    .program_mut(prog)
                    .ok_or_else(|| anyhow!("program {prog} missing"))?
                    .try_into()?;
                p.load().map_err(load_error)?;
                p.attach(func, 0)
                    .with_context(|| format!("attaching {prog} to {func}"))?;
            }
        }
    }
    Ok(())
}

/// [`attach_oom_hook`], unloading both programs when either fails: a half-attached pair would
/// leave a thread's context behind.
pub(super) fn attach_oom_hook_or_unload(
    ebpf: &mut Ebpf,
    tier: Tier,
    btf: Option<&Btf>,
    hook: (&str, &str, &str, &str, &str),
) -> anyhow::Result<()> {
    let r = attach_oom_hook(ebpf, tier, btf, hook);
    if r.is_err() {
        let (_, a, b, c, d) = hook;
        for prog in [a, b, c, d] {
            let _ = match ebpf.program_mut(prog) {
                Some(Program::FEntry(p)) => p.unload(),
                Some(Program::FExit(p)) => p.unload(),
                Some(Program::KProbe(p)) => p.unload(),
                _ => Ok(()),
            };
        }
    }
    r
}

/// Attaches the OOM killer's context hooks of a css tier: whether `out_of_memory()` and
/// `__oom_kill_process()` are hooked, and why not where they are not.
pub(super) fn attach_oom_context(
    ebpf: &mut Ebpf,
    tier: Tier,
    btf: Option<&Btf>,
    oom_kill_fn: bool,
) -> (bool, bool, Option<String>) {
    if let Err(e) = attach_oom_hook_or_unload(ebpf, tier, btf, OOM_CONTEXT_HOOKS[0]) {
        return (false, false, Some(format!("{e:#}")));
    }
    if !oom_kill_fn {
        return (
            true,
            false,
            Some("__oom_kill_process is not a function of its own on this build".to_string()),
        );
    }
    match attach_oom_hook_or_unload(ebpf, tier, btf, OOM_CONTEXT_HOOKS[1]) {
        Ok(()) => (true, true, None),
        Err(e) => (true, false, Some(format!("__oom_kill_process: {e:#}"))),
    }
}
