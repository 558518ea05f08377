//! tracefs: where it is mounted, mounting it when we may, and the `format` files that say where
//! a classic tracepoint keeps its fields.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use cgtrace_common::TracepointLayout;
use thiserror::Error;

use crate::kernel::mountinfo;

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it failed ({source}); mount it with `sudo mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    NotMounted {
        #[source]
        source: io::Error,
    },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no field {field:?} in the tracepoint format")]
    MissingField { path: PathBuf, field: &'static str },
    #[error("{path}: field {field:?} has unsupported size {size}")]
    BadSize {
        path: PathBuf,
        field: &'static str,
        size: u32,
    },
}

/// A field of a tracepoint record, from its `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub decl: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses a tracefs `format` file into its fields (common ones included).
pub fn parse_format(text: &str) -> Vec<Field> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for (i, part) in rest.split(';').enumerate() {
            let part = part.trim();
            if i == 0 {
                decl = Some(part.to_string());
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // The name is the last identifier of the declaration, after dropping a trailing array
        // suffix (`char comm[16]`); `__data_loc char[] path` has its brackets before the name.
        let base = match decl
            .strip_suffix(']')
            .and_then(|d| d.rfind('[').map(|i| &d[..i]))
        {
            Some(b) => b,
            None => decl.as_str(),
        };
        let name = base
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|s| !s.is_empty())
            .unwrap_or("")
            .to_string();
        out.push(Field {
            decl,
            name,
            offset,
            size,
        });
    }
    out
}

/// The layout the classic cgroup programs need, from one `cgroup:cgroup_*` format file.
pub fn cgroup_layout(text: &str, path: &Path) -> Result<TracepointLayout, TracefsError> {
    let fields = parse_format(text);
    let get = |field: &'static str| {
        fields
            .iter()
            .find(|f| f.name == field)
            .ok_or_else(|| TracefsError::MissingField {
                path: path.to_path_buf(),
                field,
            })
    };
    let (root, id, level, p) = (get("root")?, get("id")?, get("level")?, get("path")?);
    for (f, name, sizes) in [
        (root, "root", &[4u32][..]),
        (level, "level", &[4][..]),
        (id, "id", &[4, 8][..]),
        (p, "path", &[4][..]),
    ] {
        if !sizes.contains(&f.size) {
            return Err(TracefsError::BadSize {
                path: path.to_path_buf(),
                field: name,
                size: f.size,
            });
        }
    }
    if !p.decl.contains("__data_loc") {
        return Err(TracefsError::MissingField {
            path: path.to_path_buf(),
            field: "path",
        });
    }
    Ok(TracepointLayout {
        root_off: root.offset,
        root_size: root.size,
        id_off: id.offset,
        id_size: id.size,
        level_off: level.offset,
        level_size: level.size,
        path_off: p.offset,
        _pad: 0,
    })
}

/// Finds tracefs: a mounted tracefs (from mountinfo), or debugfs's `tracing` directory.
pub fn find() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts = mountinfo::parse(&text).ok()?;
    if let Some(m) = mounts.iter().find(|m| m.fstype == "tracefs") {
        return Some(m.point.clone());
    }
    mounts
        .iter()
        .find(|m| m.fstype == "debugfs")
        .map(|m| m.point.join("tracing"))
        .filter(|p| p.join("events").is_dir())
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted (needs root).
pub fn find_or_mount() -> Result<PathBuf, TracefsError> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new("/sys/kernel/tracing");
    let c = |s: &str| std::ffi::CString::new(s).map_err(io::Error::other);
    let (src, tgt, fs) = (
        c("nodev").map_err(|source| TracefsError::NotMounted { source })?,
        c("/sys/kernel/tracing").map_err(|source| TracefsError::NotMounted { source })?,
        c("tracefs").map_err(|source| TracefsError::NotMounted { source })?,
    );
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is NULL.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(TracefsError::NotMounted {
            source: io::Error::last_os_error(),
        });
    }
    log::info!("mounted tracefs at {}", target.display());
    Ok(target.to_path_buf())
}

/// Reads the layout of `cgroup:<event>` from tracefs at `root`.
pub fn read_cgroup_layout(root: &Path, event: &str) -> Result<TracepointLayout, TracefsError> {
    let path = root.join("events/cgroup").join(event).join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.clone(),
        source,
    })?;
    cgroup_layout(&text, &path)
}

/// Offset of `field` in the record of tracepoint `event` (e.g. `syscalls/sys_exit_mkdir`).
pub fn field_offset(root: &Path, event: &str, field: &'static str) -> Result<u32, TracefsError> {
    let path = root.join("events").join(event).join("format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read {
        path: path.clone(),
        source,
    })?;
    parse_format(&text)
        .into_iter()
        .find(|f| f.name == field)
        .map(|f| f.offset)
        .ok_or(TracefsError::MissingField { path, field })
}

/// Whether the record of `oom:mark_victim` (its `format` file's text) carries the victim's task
/// fields — comm, RSS, `oom_score_adj`: the build whose `TP_PROTO` takes the `struct
/// task_struct *` (72ba14deb40a and its backports) — or only its pid (older builds); None when it
/// is not that tracepoint's format.
pub fn mark_victim_takes_task(text: &str) -> Option<bool> {
    let fields = parse_format(text);
    if !fields.iter().any(|f| f.name == "pid") {
        return None;
    }
    Some(
        fields
            .iter()
            .any(|f| f.name == "oom_score_adj" || f.name == "comm"),
    )
}

/// [`mark_victim_takes_task`] of this kernel's tracefs at `root`.
pub fn read_mark_victim_form(root: &Path) -> Result<Option<bool>, TracefsError> {
    let path = root.join("events/oom/mark_victim/format");
    let text = fs::read_to_string(&path).map_err(|source| TracefsError::Read { path, source })?;
    Ok(mark_victim_takes_task(&text))
}

/// The syscall tracepoint layout the failed-mkdir programs need.
pub fn syscall_layout(root: &Path) -> Result<cgtrace_common::SyscallLayout, TracefsError> {
    Ok(cgtrace_common::SyscallLayout {
        mkdir_path_off: field_offset(root, "syscalls/sys_enter_mkdir", "pathname")?,
        mkdirat_path_off: field_offset(root, "syscalls/sys_enter_mkdirat", "pathname")?,
        exit_ret_off: field_offset(root, "syscalls/sys_exit_mkdirat", "ret")?,
        cgroupfs_prefix_len: 0,
        regs_mkdir_path: cgtrace_common::KernelOffsets::UNKNOWN,
        regs_mkdirat_path: cgtrace_common::KernelOffsets::UNKNOWN,
        mkdirat_dfd_off: field_offset(root, "syscalls/sys_enter_mkdirat", "dfd")?,
        regs_mkdirat_dfd: cgtrace_common::KernelOffsets::UNKNOWN,
        start: cgtrace_common::StartDirLayout::NONE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `oom:mark_victim` since 72ba14deb40a (6.10 and the 2025 stable backports; this host).
    const MARK_VICTIM_TASK: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;
\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;
\tfield:unsigned long pgtables;\toffset:56;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s\", REC->pid, __get_str(comm)
";

    /// `oom:mark_victim` before: `TP_PROTO(int pid)`.
    const MARK_VICTIM_PID: &str = "name: mark_victim
ID: 401
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    #[test]
    fn mark_victim_forms() {
        assert_eq!(mark_victim_takes_task(MARK_VICTIM_TASK), Some(true));
        assert_eq!(mark_victim_takes_task(MARK_VICTIM_PID), Some(false));
        assert_eq!(mark_victim_takes_task(FORMAT_NEW), None);
        if let Some(root) = find()
            && let Ok(form) = read_mark_victim_form(&root)
        {
            // This host's build takes the task (checked by hand: see kernel/btf.rs's test).
            assert!(form.is_some());
        }
    }

    /// `cgroup:cgroup_mkdir` on 6.x: `id` is u64.
    pub const FORMAT_NEW: &str = "name: cgroup_mkdir
ID: 123
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int root;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int level;\toffset:12;\tsize:4;\tsigned:1;
\tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;
\tfield:char comm[16];\toffset:28;\tsize:16;\tsigned:0;

print fmt: \"root=%d id=%llu level=%d path=%s\", REC->root, REC->id, REC->level, __get_str(path)
";

    /// `cgroup:cgroup_mkdir` on 4.x: `id` is int.
    pub const FORMAT_OLD: &str = "name: cgroup_mkdir
ID: 456
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int root;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int id;\toffset:12;\tsize:4;\tsigned:1;
\tfield:int level;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] path;\toffset:20;\tsize:4;\tsigned:1;

print fmt: \"root=%d id=%d level=%d path=%s\", REC->root, REC->id, REC->level, __get_str(path)
";

    #[test]
    fn new_kernel_layout() {
        let l = cgroup_layout(FORMAT_NEW, Path::new("x")).ok();
        assert_eq!(
            l,
            Some(TracepointLayout {
                root_off: 8,
                root_size: 4,
                id_off: 16,
                id_size: 8,
                level_off: 12,
                level_size: 4,
                path_off: 24,
                _pad: 0
            })
        );
    }

    #[test]
    fn old_kernel_layout_with_int_id() {
        let l = cgroup_layout(FORMAT_OLD, Path::new("x")).ok();
        assert_eq!(
            l.map(|l| (l.id_off, l.id_size, l.level_off, l.path_off)),
            Some((12, 4, 16, 20))
        );
    }

    #[test]
    fn missing_or_odd_fields_are_errors() {
        let no_path = FORMAT_NEW.replace("__data_loc char[] path", "int other");
        let e = cgroup_layout(&no_path, Path::new("f"))
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("path")));
        let odd = FORMAT_NEW.replace("size:8", "size:2");
        assert!(matches!(
            cgroup_layout(&odd, Path::new("f")),
            Err(TracefsError::BadSize { field: "id", .. })
        ));
        assert!(parse_format("garbage\nfield:\nfield:int x; offset:z;").is_empty());
        let names: Vec<String> = parse_format(FORMAT_NEW)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert!(
            names.contains(&"path".to_string()) && names.contains(&"comm".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn this_kernels_format_parses_when_readable() {
        if let Some(root) = find()
            && root.join("events/cgroup/cgroup_mkdir/format").exists()
        {
            let l = read_cgroup_layout(&root, "cgroup_mkdir");
            assert!(l.is_ok(), "{l:?}");
        }
    }
}
