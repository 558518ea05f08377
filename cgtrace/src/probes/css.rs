//! The memcg css lifecycle hooks of the fentry and kprobe tiers.
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, KProbe},
};
use cgtrace_common::names::program;

use crate::kernel::btf;

use super::{Tier, load::load_error};

/// The memcg css lifecycle hooks, and the return of cgroupfs's `cgroup_mkdir()` (failed mkdirs
/// with their caller and errno): (kernel function, fentry/fexit program, kprobe program).
pub(super) const CSS_HOOKS: [(&str, &str, &str); 6] = [
    (
        "cgroup_mkdir",
        program::FEXIT_CGROUP_MKDIR,
        program::KRETPROBE_CGROUP_MKDIR,
    ),
    (
        "mem_cgroup_css_alloc",
        program::FEXIT_CSS_ALLOC,
        program::KRETPROBE_CSS_ALLOC,
    ),
    (
        "mem_cgroup_css_online",
        program::FENTRY_CSS_ONLINE,
        program::KPROBE_CSS_ONLINE,
    ),
    (
        "mem_cgroup_css_offline",
        program::FENTRY_CSS_OFFLINE,
        program::KPROBE_CSS_OFFLINE,
    ),
    (
        "mem_cgroup_css_released",
        program::FENTRY_CSS_RELEASED,
        program::KPROBE_CSS_RELEASED,
    ),
    (
        "mem_cgroup_css_free",
        program::FENTRY_CSS_FREE,
        program::KPROBE_CSS_FREE,
    ),
];

/// The kprobe tier's entry halves of the return hooks: the arguments, kept per thread for the
/// kretprobe.
pub(super) const KPROBE_ENTRIES: [(&str, &str, &str); 2] = [
    ("mem_cgroup_css_alloc", "", program::KPROBE_CSS_ALLOC_ENTRY),
    ("cgroup_mkdir", "", program::KPROBE_CGROUP_MKDIR_ENTRY),
];

/// Attaches the memcg css programs of `tier`, or says why the kernel would not have them.
/// On failure nothing of the tier stays attached.
pub(super) fn attach_css(ebpf: &mut Ebpf, tier: Tier, btf: Option<&Btf>) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        match tier {
            Tier::Tracepoint => Ok(()),
            Tier::Fentry => {
                let btf = btf
                    .ok_or_else(|| anyhow!("no kernel BTF ({})", btf::vmlinux_path().display()))?;
                for (func, prog, _) in CSS_HOOKS {
                    let p = ebpf
                        .program_mut(prog)
                        .ok_or_else(|| anyhow!("program {prog} missing from the object"))?;
                    if prog.starts_with("fexit") {
                        let p: &mut FExit = p.try_into()?;
                        p.load(func, btf).map_err(load_error)?;
                        p.attach()
                            .with_context(|| format!("attaching fexit {func}"))?;
                    } else {
                        let p: &mut FEntry = p.try_into()?;
                        p.load(func, btf).map_err(load_error)?;
                        p.attach()
                            .with_context(|| format!("attaching fentry {func}"))?;
                    }
                }
                Ok(())
            }
            Tier::Kprobe => {
                if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
                    bail!(
                        "kernel built without CONFIG_KPROBES (no kprobe PMU in /sys/bus/event_source/devices)"
                    );
                }
                // The allocation's parent, remembered at entry for the kretprobe's filters.
                let hooks = KPROBE_ENTRIES.into_iter().chain(CSS_HOOKS);
                for (func, _, prog) in hooks {
                    let p: &mut KProbe = ebpf
                        .program_mut(prog)
                        .ok_or_else(|| anyhow!("program {prog} missing from the object"))?
                        .try_into()?;
                    p.load().map_err(load_error)?;
                    p.attach(func, 0)
                        .with_context(|| format!("attaching {prog} to {func}"))?;
                }
                Ok(())
            }
        }
    })();
    if result.is_err() {
        for (_, fprog, kprog) in CSS_HOOKS.iter().chain(KPROBE_ENTRIES.iter()) {
            for prog in [*fprog, *kprog] {
                if let Some(p) = ebpf.program_mut(prog) {
                    let _ = match p {
                        aya::programs::Program::FEntry(p) => p.unload(),
                        aya::programs::Program::FExit(p) => p.unload(),
                        aya::programs::Program::KProbe(p) => p.unload(),
                        _ => Ok(()),
                    };
                }
            }
        }
    }
    result
}
