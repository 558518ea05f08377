//! Kernel struct offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`), resolved at
//! load time and handed to the programs as load-time globals: CO-RE done by the loader.
//!
//! Members are found by name, descending into anonymous structs and unions; renamed fields are
//! tried under each known spelling. A field this kernel lacks is `None`, never 0.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use btf::types::{Btf, BtfType};
use cgtrace_common::{KernelOffsets, OomLayout, StartDirLayout};
use thiserror::Error;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// A BTF file to read instead of [`VMLINUX`], for kernels that do not expose their BTF (the
/// BTFHub layout, or one extracted from the kernel package): raw BTF. `cgtrace --btf FILE` sets
/// it; a DaemonSet sets it in the environment.
pub const BTF_ENV: &str = "CGTRACE_BTF";

/// Where the kernel's BTF is read from: `$CGTRACE_BTF` when set and not empty, else
/// [`VMLINUX`].
pub fn vmlinux_path() -> PathBuf {
    match std::env::var_os(BTF_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(VMLINUX),
    }
}

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse BTF from {path}: {message}")]
    Parse { path: String, message: String },
}

/// Parsed kernel BTF, with an index of named structs, unions and enums.
pub struct KernelBtf<'a> {
    btf: Btf<'a>,
    by_name: HashMap<String, Vec<u32>>,
}

/// A member's place: byte offset from the start of the outer struct, and its type id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub offset: u32,
    pub type_id: u32,
}

impl<'a> KernelBtf<'a> {
    pub fn parse(data: &'a [u8], path: &str) -> Result<KernelBtf<'a>, BtfError> {
        let btf = Btf::load_raw(data).map_err(|e| BtfError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, t) in btf.types().iter().enumerate() {
            let name = match t {
                BtfType::Struct(c) | BtfType::Union(c) => c.name,
                BtfType::Enum(e) => e.name,
                _ => continue,
            };
            if !name.is_empty() {
                by_name.entry(name.to_string()).or_default().push(id as u32);
            }
        }
        Ok(KernelBtf { btf, by_name })
    }

    fn strip(&self, mut id: u32) -> u32 {
        // Skip typedefs and qualifiers (bounded: BTF chains are short).
        for _ in 0..32 {
            id = match self.btf.type_by_id(id) {
                BtfType::Typedef(t) => t.type_id,
                BtfType::Volatile(t) => t.type_id,
                BtfType::Const(t) => t.type_id,
                BtfType::Restrict(t) => t.type_id,
                BtfType::TypeTag(t) => t.type_id,
                _ => return id,
            };
        }
        id
    }

    /// The id of the struct (with a body) called `name`.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().copied().find(|&id| {
            matches!(self.btf.type_by_id(id), BtfType::Struct(c) | BtfType::Union(c) if !c.members.is_empty())
        })
    }

    /// Finds member `name` of composite `id`, descending into anonymous members.
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<Place> {
        if depth > 8 {
            return None;
        }
        let (BtfType::Struct(c) | BtfType::Union(c)) = self.btf.type_by_id(self.strip(id)) else {
            return None;
        };
        for m in &c.members {
            if m.name == name {
                return Some(Place {
                    offset: m.bit_offset / 8,
                    type_id: m.type_id,
                });
            }
        }
        for m in c.members.iter().filter(|m| m.name.is_empty()) {
            if let Some(p) = self.member(m.type_id, name, depth + 1) {
                return Some(Place {
                    offset: m.bit_offset / 8 + p.offset,
                    type_id: p.type_id,
                });
            }
        }
        None
    }

    /// Offset of a (possibly nested) member: `path` is a list of segments, each a list of the
    /// spellings the field has had (e.g. `&["__parent", "parent"]`).
    pub fn offset_of(&self, strukt: &str, path: &[&[&str]]) -> Option<u32> {
        self.place_of(strukt, path).map(|p| p.offset)
    }

    /// [`KernelBtf::offset_of`] with the member's type.
    pub fn place_of(&self, strukt: &str, path: &[&[&str]]) -> Option<Place> {
        let mut id = self.struct_id(strukt)?;
        let mut offset = 0;
        for names in path {
            let p = names.iter().find_map(|n| self.member(id, n, 0))?;
            offset += p.offset;
            id = p.type_id;
        }
        Some(Place {
            offset,
            type_id: id,
        })
    }

    /// The value of an enumerator of any enum, named or anonymous (`MM_ANONPAGES`).
    pub fn enumerator(&self, value_name: &str) -> Option<i64> {
        self.btf.types().iter().find_map(|t| match t {
            BtfType::Enum(e) => e
                .values
                .iter()
                .find(|v| v.name == value_name)
                .map(|v| i64::from(v.value)),
            BtfType::Enum64(e) => e
                .values
                .iter()
                .find(|v| v.name == value_name)
                .map(|v| v.value),
            _ => None,
        })
    }

    /// Whether the kernel has a function of this name (a possible fentry/kprobe target).
    pub fn has_func(&self, name: &str) -> bool {
        self.btf
            .types()
            .iter()
            .any(|t| matches!(t, BtfType::Func(f) if f.name == name))
    }

    /// The parameters of a raw tracepoint, from its `btf_trace_<name>` typedef (`void (*)(void
    /// *, <the TP_PROTO arguments>)`): their type ids, without the first.
    pub fn tracepoint_params(&self, tracepoint: &str) -> Option<Vec<u32>> {
        let name = format!("btf_trace_{tracepoint}");
        let td = self.btf.types().iter().find_map(|t| match t {
            BtfType::Typedef(td) if td.name == name => Some(td.type_id),
            _ => None,
        })?;
        let BtfType::Ptr(p) = self.btf.type_by_id(self.strip(td)) else {
            return None;
        };
        let BtfType::FuncProto(f) = self.btf.type_by_id(self.strip(p.type_id)) else {
            return None;
        };
        Some(f.params.iter().skip(1).map(|p| p.type_id).collect())
    }

    /// Whether `type_id` is a pointer to `struct <name>`.
    pub fn is_ptr_to(&self, type_id: u32, name: &str) -> bool {
        let BtfType::Ptr(p) = self.btf.type_by_id(self.strip(type_id)) else {
            return false;
        };
        matches!(self.btf.type_by_id(self.strip(p.type_id)), BtfType::Struct(c) if c.name == name)
    }

    /// Whether `type_id` is an array of 64-bit integers.
    pub fn array_of_u64(&self, type_id: u32) -> bool {
        let BtfType::Array(a) = self.btf.type_by_id(self.strip(type_id)) else {
            return false;
        };
        matches!(self.btf.type_by_id(self.strip(a.val_type_id)), BtfType::Int(i) if i.bits == 64)
    }

    /// Whether `type_id` is an integer type.
    pub fn is_int(&self, type_id: u32) -> bool {
        matches!(self.btf.type_by_id(self.strip(type_id)), BtfType::Int(_))
    }

    /// Value of an enumerator (e.g. `memory_cgrp_id` of `enum cgroup_subsys_id`).
    pub fn enum_value(&self, enum_name: &str, value_name: &str) -> Option<i64> {
        self.by_name
            .get(enum_name)?
            .iter()
            .find_map(|&id| match self.btf.type_by_id(id) {
                BtfType::Enum(e) => e
                    .values
                    .iter()
                    .find(|v| v.name == value_name)
                    .map(|v| i64::from(v.value)),
                _ => None,
            })
    }
}

/// Reads the kernel's BTF blob.
pub fn read_vmlinux(path: &Path) -> Result<Vec<u8>, BtfError> {
    fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Offsets the programs need to read `struct cgroup`, its memcg, and css → cgroup.
pub fn cgroup_offsets(btf: &KernelBtf<'_>) -> KernelOffsets {
    let u = |o: Option<u32>| o.unwrap_or(KernelOffsets::UNKNOWN);
    // `ancestors` (6.0+) holds `struct cgroup *`; `ancestor_ids` before held u64 ids, and
    // before 5.5 ints: the cgroups' idr numbers, not their ids ("cgroup: use cgrp->kn->id as
    // the cgroup ID", 743210386c03), which the programs cannot compare with a cgroup id.
    let (ancestors, ptrs) = match btf.offset_of("cgroup", &[&["ancestors"]]) {
        Some(o) => (Some(o), 1),
        None => (
            btf.place_of("cgroup", &[&["ancestor_ids"]])
                .filter(|p| btf.array_of_u64(p.type_id))
                .map(|p| p.offset),
            0,
        ),
    };
    let memory_idx = btf
        .enum_value("cgroup_subsys_id", "memory_cgrp_id")
        .and_then(|v| u32::try_from(v).ok());
    KernelOffsets {
        cgroup_kn: u(btf.offset_of("cgroup", &[&["kn"]])),
        kn_id: u(btf.offset_of("kernfs_node", &[&["id"]])),
        cgroup_level: u(btf.offset_of("cgroup", &[&["level"]])),
        cgroup_root: u(btf.offset_of("cgroup", &[&["root"]])),
        root_hierarchy_id: u(btf.offset_of("cgroup_root", &[&["hierarchy_id"]])),
        cgroup_subsys: u(btf.offset_of("cgroup", &[&["subsys"]])),
        memory_subsys_idx: u(memory_idx),
        cgroup_ancestors: u(ancestors),
        ancestors_are_ptrs: ptrs,
        css_cgroup: u(btf.offset_of("cgroup_subsys_state", &[&["cgroup"]])),
        memcg_css: u(btf.offset_of("mem_cgroup", &[&["css"]])),
        memcg_id: u(btf.offset_of("mem_cgroup", &[&["id"], &["id"]])),
        memcg_memory: u(btf.offset_of("mem_cgroup", &[&["memory"], &["usage"]])),
        memcg_kmem: u(btf.offset_of("mem_cgroup", &[&["kmem"], &["usage"]])),
        memcg_memsw: u(btf.offset_of("mem_cgroup", &[&["memsw"], &["usage"]])),
        css_children: u(btf.offset_of("cgroup_subsys_state", &[&["children"]])),
        css_sibling: u(btf.offset_of("cgroup_subsys_state", &[&["sibling"]])),
        css_parent: u(btf.offset_of("cgroup_subsys_state", &[&["parent"]])),
        css_flags: u(btf.offset_of("cgroup_subsys_state", &[&["flags"]])),
        kn_name: u(btf.offset_of("kernfs_node", &[&["name"]])),
        kn_parent: u(btf.offset_of("kernfs_node", &[&["__parent", "parent"]])),
        task_cgroups: u(btf.offset_of("task_struct", &[&["cgroups"]])),
        css_set_subsys: u(btf.offset_of("css_set", &[&["subsys"]])),
        kn_flags: u(btf.offset_of("kernfs_node", &[&["flags"]])),
        kn_activated: btf
            .enum_value("kernfs_node_flag", "KERNFS_ACTIVATED")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        kn_priv: u(btf.offset_of("kernfs_node", &[&["priv"]])),
    }
}

/// How `oom:mark_victim` hands over its victim on this kernel, from BTF: `Some(true)` a
/// `struct task_struct *` (72ba14deb40a, 6.10, and its 2025 backports to the 5.4–6.6 stable
/// trees), `Some(false)` an `int pid` (before), None when BTF has no `btf_trace_mark_victim`.
pub fn mark_victim_takes_task(btf: &KernelBtf<'_>) -> Option<bool> {
    let params = btf.tracepoint_params("mark_victim")?;
    let first = *params.first()?;
    if btf.is_ptr_to(first, "task_struct") {
        Some(true)
    } else if btf.is_int(first) {
        Some(false)
    } else {
        None
    }
}

/// Room left below a limit within which a memcg counts as at its limit: a THP charge (2 MiB)
/// plus a charge batch (64 pages).
fn margin_pages(page_size: u64) -> u32 {
    u32::try_from(((2 << 20) + 64 * page_size) / page_size.max(1)).unwrap_or(u32::MAX)
}

/// `mm_struct.rss_stat`: an array of `percpu_counter` (6.2+; the value in `count`), or a
/// `struct mm_rss_stat` holding an array of `atomic_long_t` (before).
/// Returns (offset of the array, stride, offset of the value in an element).
fn rss_stat_place(btf: &KernelBtf<'_>) -> Option<(u32, u32, u32)> {
    btf.place_of("mm_struct", &[&["rss_stat"]]).and_then(|p| {
        let (offset, array) = match btf.btf.type_by_id(btf.strip(p.type_id)) {
            BtfType::Array(a) => (p.offset, a.val_type_id),
            BtfType::Struct(_) => {
                let c = btf.member(p.type_id, "count", 0)?;
                match btf.btf.type_by_id(btf.strip(c.type_id)) {
                    BtfType::Array(a) => (p.offset + c.offset, a.val_type_id),
                    _ => return None,
                }
            }
            _ => return None,
        };
        let stride = btf.btf.get_size_of(array);
        let value = ["count", "counter"]
            .iter()
            .find_map(|n| btf.member(array, n, 0))
            .map_or(0, |m| m.offset);
        Some((offset, stride, value))
    })
}

/// What the OOM programs read (`victim_is_task` from [`mark_victim_takes_task`]), and the
/// names of what this kernel's BTF lacks of it.
pub fn oom_layout(btf: &KernelBtf<'_>, page_size: u64) -> (OomLayout, Vec<&'static str>) {
    let u = |o: Option<u32>| o.unwrap_or(KernelOffsets::UNKNOWN);
    let mut missing = Vec::new();
    let mut need = |name: &'static str, o: Option<u32>| {
        if o.is_none() {
            missing.push(name);
        }
        u(o)
    };
    let enumerator = |n: &str| btf.enumerator(n).and_then(|v| u32::try_from(v).ok());
    let rss = rss_stat_place(btf);
    let layout = OomLayout {
        victim_is_task: u32::from(mark_victim_takes_task(btf) == Some(true)),
        task_pid: need("task_struct.pid", btf.offset_of("task_struct", &[&["pid"]])),
        task_tgid: need(
            "task_struct.tgid",
            btf.offset_of("task_struct", &[&["tgid"]]),
        ),
        task_comm: need(
            "task_struct.comm",
            btf.offset_of("task_struct", &[&["comm"]]),
        ),
        task_flags: need(
            "task_struct.flags",
            btf.offset_of("task_struct", &[&["flags"]]),
        ),
        task_signal: need(
            "task_struct.signal",
            btf.offset_of("task_struct", &[&["signal"]]),
        ),
        task_mm: need("task_struct.mm", btf.offset_of("task_struct", &[&["mm"]])),
        signal_oom_score_adj: need(
            "signal_struct.oom_score_adj",
            btf.offset_of("signal_struct", &[&["oom_score_adj"]]),
        ),
        mm_rss_stat: need("mm_struct.rss_stat", rss.map(|r| r.0)),
        rss_stride: rss.map_or(0, |r| r.1),
        rss_value: rss.map_or(0, |r| r.2),
        mm_file: need("MM_FILEPAGES", enumerator("MM_FILEPAGES")),
        mm_anon: need("MM_ANONPAGES", enumerator("MM_ANONPAGES")),
        mm_swapents: need("MM_SWAPENTS", enumerator("MM_SWAPENTS")),
        mm_shmem: need("MM_SHMEMPAGES", enumerator("MM_SHMEMPAGES")),
        mm_total_vm: need(
            "mm_struct.total_vm",
            btf.offset_of("mm_struct", &[&["total_vm"]]),
        ),
        mm_pgtables: u(btf.offset_of("mm_struct", &[&["pgtables_bytes"]])),
        memcg_memory_max: need(
            "mem_cgroup.memory.max",
            btf.offset_of("mem_cgroup", &[&["memory"], &["max"]]),
        ),
        memcg_memsw_max: u(btf.offset_of("mem_cgroup", &[&["memsw"], &["max"]])),
        oc_memcg: u(btf.offset_of("oom_control", &[&["memcg"]])),
        oc_constraint: u(btf.offset_of("oom_control", &[&["constraint"]])),
        oc_totalpages: u(btf.offset_of("oom_control", &[&["totalpages"]])),
        constraint_none: u(enumerator("CONSTRAINT_NONE")),
        constraint_cpuset: u(enumerator("CONSTRAINT_CPUSET")),
        constraint_policy: u(enumerator("CONSTRAINT_MEMORY_POLICY")),
        constraint_memcg: u(enumerator("CONSTRAINT_MEMCG")),
        margin_pages: margin_pages(page_size),
        _pad: 0,
    };
    (layout, missing)
}

/// Offsets in `struct pt_regs` of the saved user registers holding a syscall's first and second
/// argument (`mkdir`'s path, `mkdirat`'s path), on the architectures whose spelling is known:
/// x86-64 (`di`, `si`). None elsewhere.
pub fn syscall_arg_regs(btf: &KernelBtf<'_>) -> Option<SyscallArgRegs> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let di = btf.offset_of("pt_regs", &[&["di"]])?;
    Some(SyscallArgRegs {
        mkdir_path: di,
        mkdirat_path: btf.offset_of("pt_regs", &[&["si"]])?,
        mkdirat_dfd: di,
    })
}

/// Offsets in `struct pt_regs` of the failed-mkdir hooks' syscall arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallArgRegs {
    /// `mkdir(path, mode)`: the path.
    pub mkdir_path: u32,
    /// `mkdirat(dfd, path, mode)`: the path and the directory fd.
    pub mkdirat_path: u32,
    pub mkdirat_dfd: u32,
}

/// What resolves a failed mkdir's relative path from its starting directory (the working
/// directory or the directory fd) in the kernel; `known` 0 when BTF lacks any of it.
pub fn start_dir_layout(btf: &KernelBtf<'_>) -> StartDirLayout {
    let dir = btf
        .enum_value("kernfs_node_type", "KERNFS_DIR")
        .and_then(|v| u32::try_from(v).ok());
    let offsets = [
        btf.offset_of("task_struct", &[&["fs"]]),
        btf.offset_of("fs_struct", &[&["pwd"], &["dentry"]]),
        btf.offset_of("task_struct", &[&["files"]]),
        btf.offset_of("files_struct", &[&["fdt"]]),
        btf.offset_of("fdtable", &[&["max_fds"]]),
        btf.offset_of("fdtable", &[&["fd"]]),
        btf.offset_of("file", &[&["f_path"], &["dentry"]]),
        btf.offset_of("dentry", &[&["d_sb"]]),
        btf.offset_of("dentry", &[&["d_inode"]]),
        btf.offset_of("inode", &[&["i_private"]]),
        btf.offset_of("super_block", &[&["s_magic"]]),
    ];
    let (
        Some(kn_dir),
        [
            Some(a),
            Some(b),
            Some(c),
            Some(d),
            Some(e),
            Some(f),
            Some(g),
            Some(h),
            Some(i),
            Some(j),
            Some(k),
        ],
    ) = (dir, offsets)
    else {
        return StartDirLayout::NONE;
    };
    StartDirLayout {
        task_fs: a,
        fs_pwd_dentry: b,
        task_files: c,
        files_fdt: d,
        fdt_max_fds: e,
        fdt_fd: f,
        file_dentry: g,
        dentry_sb: h,
        dentry_inode: i,
        inode_private: j,
        sb_magic: k,
        kn_dir,
        known: 1,
        _pad: 0,
    }
}

/// Every offset with its name, for `doctor` and tests.
pub fn named(o: &KernelOffsets) -> [(&'static str, u32); 24] {
    [
        ("cgroup.kn", o.cgroup_kn),
        ("kernfs_node.id", o.kn_id),
        ("cgroup.level", o.cgroup_level),
        ("cgroup.root", o.cgroup_root),
        ("cgroup_root.hierarchy_id", o.root_hierarchy_id),
        ("cgroup.subsys", o.cgroup_subsys),
        ("memory_cgrp_id", o.memory_subsys_idx),
        ("cgroup.ancestors", o.cgroup_ancestors),
        ("cgroup_subsys_state.cgroup", o.css_cgroup),
        ("mem_cgroup.css", o.memcg_css),
        ("mem_cgroup.id.id", o.memcg_id),
        ("mem_cgroup.memory.usage", o.memcg_memory),
        ("mem_cgroup.kmem.usage", o.memcg_kmem),
        ("mem_cgroup.memsw.usage", o.memcg_memsw),
        ("cgroup_subsys_state.children", o.css_children),
        ("cgroup_subsys_state.sibling", o.css_sibling),
        ("cgroup_subsys_state.parent", o.css_parent),
        ("cgroup_subsys_state.flags", o.css_flags),
        ("kernfs_node.name", o.kn_name),
        ("kernfs_node.parent", o.kn_parent),
        ("task_struct.cgroups", o.task_cgroups),
        ("css_set.subsys", o.css_set_subsys),
        ("kernfs_node.flags", o.kn_flags),
        ("kernfs_node.priv", o.kn_priv),
    ]
}

/// Names of the fields the raw tracepoint programs cannot do without, unknown on this kernel.
pub fn missing(o: &KernelOffsets) -> Vec<&'static str> {
    named(o)[..5]
        .iter()
        .filter(|(_, v)| *v == KernelOffsets::UNKNOWN)
        .map(|(n, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `bpftool btf dump` is the independent oracle for the offsets on this host.
    fn bpftool_offset(strukt: &str, member: &str) -> Option<u32> {
        let out = Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let header = format!("STRUCT '{strukt}' size=");
        let mut in_struct = false;
        for line in text.lines() {
            if line.contains(&header) {
                in_struct = true;
                continue;
            }
            if in_struct {
                let l = line.trim();
                if !l.starts_with('\'') {
                    in_struct = false;
                    continue;
                }
                if l.starts_with(&format!("'{member}' ")) {
                    let bits = l.split("bits_offset=").nth(1)?;
                    let bits: u32 = bits.split_whitespace().next()?.parse().ok()?;
                    return Some(bits / 8);
                }
            }
        }
        None
    }

    /// Whether bpftool is there to compare with (it must be in CI).
    fn bpftool_installed() -> bool {
        if Command::new("bpftool").arg("version").output().is_ok() {
            return true;
        }
        assert!(std::env::var("CI").is_err(), "bpftool missing in CI");
        eprintln!("skipping the bpftool comparison: bpftool not installed");
        false
    }

    /// Each (struct, member, resolved offset) is where bpftool says.
    fn assert_bpftool_offsets(members: &[(&str, &str, u32)]) {
        for &(s, m, got) in members {
            assert_eq!(bpftool_offset(s, m), Some(got), "{s}.{m}");
        }
    }

    #[test]
    fn offsets_match_bpftool() {
        let Ok(data) = read_vmlinux(Path::new(VMLINUX)) else {
            eprintln!("skipping: {VMLINUX} not readable");
            return;
        };
        let btf = KernelBtf::parse(&data, VMLINUX).expect("vmlinux BTF parses");
        let o = cgroup_offsets(&btf);
        assert!(missing(&o).is_empty(), "missing {:?}", missing(&o));
        if !bpftool_installed() {
            return;
        }
        assert_bpftool_offsets(&[
            ("cgroup", "kn", o.cgroup_kn),
            ("cgroup", "level", o.cgroup_level),
            ("cgroup", "root", o.cgroup_root),
            ("cgroup_root", "hierarchy_id", o.root_hierarchy_id),
            ("kernfs_node", "id", o.kn_id),
            ("cgroup", "subsys", o.cgroup_subsys),
            ("cgroup_subsys_state", "cgroup", o.css_cgroup),
            ("mem_cgroup", "css", o.memcg_css),
        ]);
        // Nested members: outer offset (bpftool) + inner offset (bpftool) = resolved offset.
        let memory = bpftool_offset("mem_cgroup", "memory").expect("mem_cgroup.memory");
        let usage = bpftool_offset("page_counter", "usage").expect("page_counter.usage");
        assert_eq!(o.memcg_memory, memory + usage);
        let id = bpftool_offset("mem_cgroup", "id").expect("mem_cgroup.id");
        let id_id = bpftool_offset("mem_cgroup_id", "id").expect("mem_cgroup_id.id");
        assert_eq!(o.memcg_id, id + id_id);
        // kmem exists on this v1-capable kernel; memsw sits in an anonymous union (bpftool
        // lists it under the union, not the struct), so only check it resolved.
        assert_eq!(
            Some(o.memcg_kmem),
            bpftool_offset("mem_cgroup", "kmem").map(|k| k + usage)
        );
        assert_ne!(o.memcg_memsw, KernelOffsets::UNKNOWN);
        assert_ne!(o.cgroup_ancestors, KernelOffsets::UNKNOWN);
    }

    #[test]
    fn oom_layout_matches_bpftool() {
        let Ok(data) = read_vmlinux(Path::new(VMLINUX)) else {
            eprintln!("skipping: {VMLINUX} not readable");
            return;
        };
        let btf = KernelBtf::parse(&data, VMLINUX).expect("vmlinux BTF parses");
        let (l, missing) = oom_layout(&btf, 4096);
        assert!(missing.is_empty(), "missing {missing:?}");
        // This host's build hands mark_victim the task (checked with bpftool: the typedef is
        // `void (*)(void *, struct task_struct *, uid_t)`).
        assert_eq!(mark_victim_takes_task(&btf), Some(true));
        assert_eq!(l.margin_pages, 512 + 64);
        assert!(l.rss_stride >= 8, "{l:?}");
        // The anonymous enum's counters, and oom_constraint's values.
        assert_eq!(
            (l.mm_file, l.mm_anon, l.mm_swapents, l.mm_shmem),
            (0, 1, 2, 3)
        );
        assert_eq!(
            (
                l.constraint_none,
                l.constraint_cpuset,
                l.constraint_policy,
                l.constraint_memcg
            ),
            (0, 1, 2, 3)
        );
        if !bpftool_installed() {
            return;
        }
        assert_bpftool_offsets(&[
            ("task_struct", "pid", l.task_pid),
            ("task_struct", "tgid", l.task_tgid),
            ("task_struct", "comm", l.task_comm),
            ("task_struct", "signal", l.task_signal),
            ("task_struct", "mm", l.task_mm),
            ("signal_struct", "oom_score_adj", l.signal_oom_score_adj),
            ("oom_control", "memcg", l.oc_memcg),
            ("oom_control", "constraint", l.oc_constraint),
            ("oom_control", "totalpages", l.oc_totalpages),
        ]);
        let memory = bpftool_offset("mem_cgroup", "memory").expect("mem_cgroup.memory");
        let max = bpftool_offset("page_counter", "max").expect("page_counter.max");
        assert_eq!(l.memcg_memory_max, memory + max);
    }

    #[test]
    fn anonymous_members_and_renames() {
        let Ok(data) = read_vmlinux(Path::new(VMLINUX)) else {
            return;
        };
        let btf = KernelBtf::parse(&data, VMLINUX).expect("vmlinux BTF parses");
        // kernfs_node's parent was renamed __parent in 6.15: one of the spellings resolves.
        assert!(
            btf.offset_of("kernfs_node", &[&["__parent", "parent"]])
                .is_some()
        );
        // mem_cgroup.memsw lives in an anonymous union.
        if btf.struct_id("mem_cgroup").is_some() {
            assert!(btf.offset_of("mem_cgroup", &[&["memsw", "swap"]]).is_some());
        }
        assert!(btf.offset_of("cgroup", &[&["no_such_field"]]).is_none());
        assert!(btf.offset_of("no_such_struct", &[&["x"]]).is_none());
        assert!(
            btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")
                .is_some()
        );
    }
}
