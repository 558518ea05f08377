//! `cgtrace doctor`: what this kernel can do for cgtrace, each probe tier tried for real.

use serde::Serialize;

use crate::{
    kernel,
    kernel::btf,
    kernel::hierarchy::Hierarchies,
    kernel::tracefs,
    probes::{AttachMode, ProbeOptions, Probes, Tier},
};

#[derive(Debug, Serialize)]
pub struct TierResult {
    pub tier: &'static str,
    pub ok: bool,
    /// How the cgroup tracepoints attached alongside, when ok.
    pub attach: Option<&'static str>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub kernel_release: String,
    pub btf: bool,
    pub tracefs: Option<String>,
    pub ring_buffer: bool,
    pub privileges: Result<(), String>,
    pub tiers: Vec<TierResult>,
    /// The tier `cgtrace live` would use.
    pub live_tier: Option<&'static str>,
    /// How `cgtrace live` would catch failed mkdirs, or why it would not (None: no tier loaded).
    pub failed_mkdirs: Option<String>,
    /// "v1", "v2" or "hybrid".
    pub cgroup_layout: &'static str,
    /// Hierarchy holding the memory controller: (id, mount).
    pub memory_hierarchy: Option<(u32, Option<String>)>,
    /// "systemd", "cgroupfs" or "unknown", from the kubepods directories present.
    pub cgroup_driver: &'static str,
    /// Struct offsets resolved from BTF; absent fields are `null`.
    pub offsets: Vec<(&'static str, Option<u32>)>,
}

impl DoctorReport {
    pub fn can_run_live(&self) -> bool {
        self.live_tier.is_some()
    }
}

fn layout(h: &Hierarchies) -> &'static str {
    let v1 = h.by_id.values().any(|x| x.id != 0 && x.mount.is_some());
    let v2 = h.get(0).is_some_and(|x| x.mount.is_some());
    match (v1, v2) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        _ => "v2",
    }
}

fn driver(h: &Hierarchies) -> &'static str {
    for x in h.by_id.values() {
        let Some(m) = &x.mount else { continue };
        if m.join("kubepods.slice").is_dir() {
            return "systemd";
        }
        if m.join("kubepods").is_dir() {
            return "cgroupfs";
        }
    }
    "unknown"
}

/// Runs every check. Loading programs needs privileges; without them the tiers say so.
pub fn run() -> DoctorReport {
    let release = kernel::release();
    let hierarchies = Hierarchies::load().unwrap_or_default();
    let offsets = crate::probes::kernel_offsets().ok();
    let mut tiers = Vec::new();
    let mut live_tier = None;
    let mut failed_mkdirs = None;
    for t in Tier::ALL {
        let opts = ProbeOptions {
            tier: Some(t),
            attach: AttachMode::Auto,
            ring_size: 64 * 1024,
            ..ProbeOptions::default()
        };
        match Probes::load(&opts) {
            Ok(p) => {
                live_tier.get_or_insert(t.name());
                failed_mkdirs.get_or_insert_with(|| match &p.mkdir_failures {
                    Ok(h) => format!("traced by {}", h.describe()),
                    Err(why) => format!("not traced: {why}"),
                });
                tiers.push(TierResult {
                    tier: t.name(),
                    ok: true,
                    attach: Some(p.attached.name()),
                    error: None,
                });
            }
            Err(e) => {
                // "tier X (forced …): reason" → the reason.
                let msg = e
                    .chain()
                    .skip(1)
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": ");
                tiers.push(TierResult {
                    tier: t.name(),
                    ok: false,
                    attach: None,
                    error: Some(if msg.is_empty() {
                        format!("{e:#}")
                    } else {
                        msg
                    }),
                });
            }
        }
    }
    DoctorReport {
        btf: btf::vmlinux_path().exists(),
        tracefs: tracefs::find().map(|p| p.display().to_string()),
        ring_buffer: kernel::check_ring_buffer(&release).is_ok(),
        privileges: kernel::check_privileges().map_err(|e| e.to_string()),
        kernel_release: release,
        tiers,
        live_tier,
        failed_mkdirs,
        cgroup_layout: layout(&hierarchies),
        memory_hierarchy: hierarchies
            .with_controller("memory")
            .map(|h| (h.id, h.mount.as_ref().map(|m| m.display().to_string()))),
        cgroup_driver: driver(&hierarchies),
        offsets: offsets
            .map(|o| {
                btf::named(&o)
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            n,
                            (v != cgtrace_common::KernelOffsets::UNKNOWN).then_some(v),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Human-readable report.
pub fn render(r: &DoctorReport) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut s = String::new();
    s += &format!("kernel:          {}\n", r.kernel_release);
    s += &format!(
        "privileges:      {}\n",
        match &r.privileges {
            Ok(()) => "ok (can load BPF programs)".to_string(),
            Err(e) => e.clone(),
        }
    );
    s += &format!(
        "BTF:             {} ({})\n",
        yes(r.btf),
        btf::vmlinux_path().display()
    );
    s += &format!(
        "tracefs:         {}\n",
        r.tracefs
            .as_deref()
            .unwrap_or("not mounted (cgtrace mounts it when it needs it)")
    );
    s += &format!("BPF ring buffer: {}\n", yes(r.ring_buffer));
    for t in &r.tiers {
        match (&t.error, t.attach) {
            (None, Some(a)) => {
                s += &format!("tier {:<11} ok (cgroup tracepoints as {a}s)\n", t.tier)
            }
            (Some(e), _) => s += &format!("tier {:<11} no: {e}\n", t.tier),
            _ => {}
        }
    }
    s += &format!(
        "cgroups:         {}; memory controller on {}\n",
        r.cgroup_layout,
        match &r.memory_hierarchy {
            Some((0, m)) => format!("v2 ({})", m.as_deref().unwrap_or("not mounted")),
            Some((id, m)) => format!(
                "v1 hierarchy {id} ({})",
                m.as_deref().unwrap_or("not mounted")
            ),
            None => "no hierarchy".to_string(),
        }
    );
    s += &format!(
        "cgroup driver:   {} (from the kubepods directories present)\n",
        r.cgroup_driver
    );
    if !r.offsets.is_empty() {
        let missing: Vec<&str> = r
            .offsets
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| *n)
            .collect();
        s += &format!(
            "BTF offsets:     {} resolved{}\n",
            r.offsets.len() - missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; not in this kernel: {}", missing.join(", "))
            }
        );
    }
    if let Some(m) = &r.failed_mkdirs {
        s += &format!("failed mkdirs:   {m}\n");
    }
    match r.live_tier {
        Some(t) => s += &format!("cgtrace live would use tier {t}\n"),
        None => s += "cgtrace live cannot run here\n",
    }
    s
}
