//! The one parser of `/proc/<pid>/mountinfo` (`proc_pid_mountinfo(5)`).
//!
//! A line is `id parent major:minor root mount-point options [optional fields...] - fstype source
//! super-options`. The kernel escapes space, tab, newline and backslash in the path fields as
//! `\ooo` (octal), so a field never holds a literal space and splitting on spaces is exact.
use std::{
    ffi::OsString,
    os::unix::ffi::OsStringExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// A line of mountinfo that is not in the kernel's format.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {reason} in {text:?}")]
pub struct MountinfoError {
    /// 1-based line number.
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Root of the mount inside its filesystem (`/` unless a subtree is bind-mounted).
    pub root: PathBuf,
    /// Mount point.
    pub point: PathBuf,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options (for cgroup v1: the controllers, `name=<name>`, `xattr`, ...).
    pub super_options: Vec<String>,
}

impl Mount {
    /// Whether `option` is among the super options.
    pub fn has_option(&self, option: &str) -> bool {
        self.super_options.iter().any(|o| o == option)
    }

    /// The whole filesystem is mounted, not a subtree of it.
    pub fn is_whole(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// Parses the text of a mountinfo file; blank lines are skipped, any other line not in the
/// kernel's format is an error.
pub fn parse(text: &str) -> Result<Vec<Mount>, MountinfoError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|reason| MountinfoError {
                line: i + 1,
                reason,
                text: l.to_string(),
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Result<Mount, &'static str> {
    let fields: Vec<&str> = line.split(' ').collect();
    if fields.len() < 6 {
        return Err("too few fields");
    }
    // The optional fields end at the first lone `-` after the six fixed ones.
    let sep = fields[6..]
        .iter()
        .position(|f| *f == "-")
        .map(|p| p + 6)
        .ok_or("no ` - ` separator")?;
    let fstype = fields.get(sep + 1).ok_or("no filesystem type")?;
    let source = fields.get(sep + 2).copied().unwrap_or("");
    let super_options = fields.get(sep + 3).copied().unwrap_or("");
    Ok(Mount {
        root: unescape_path(fields[3]),
        point: unescape_path(fields[4]),
        fstype: unescape(fstype),
        source: unescape(source),
        super_options: super_options
            .split(',')
            .filter(|o| !o.is_empty())
            .map(unescape)
            .collect(),
    })
}

fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s)).into_owned()
}

/// Paths keep their bytes (they need not be UTF-8).
fn unescape_path(s: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_bytes(s)))
}

/// Undoes the kernel's `\ooo` escaping, wherever in the field it is (its end included). A
/// backslash not followed by three octal digits of a byte value stays as it is.
fn unescape_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(byte) = u8::try_from(
                oct.iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')),
            )
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let text = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755

33 25 0:30 / /sys/fs/cgroup/memory rw shared:16 master:3 - cgroup cgroup rw,memory
900 60 0:29 /kubepods/pod1 /var/lib/x/memory ro master:16 - cgroup cgroup rw,seclabel,memory
";
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].fstype, "tmpfs");
        assert_eq!(m[0].super_options, ["ro", "mode=755"]);
        assert_eq!(m[1].point, Path::new("/sys/fs/cgroup/memory"));
        assert!(m[1].has_option("memory") && m[1].is_whole());
        assert_eq!(m[2].root, Path::new("/kubepods/pod1"));
        assert!(!m[2].is_whole());
    }

    #[test]
    fn unescapes_anywhere_in_a_field() {
        let text = r"40 22 0:40 / /mnt/with\040space rw - tracefs nodev rw
41 22 0:41 /a\134b /mnt/end\040 rw - tmpfs my\011src rw,x\040y
42 22 0:42 / /mnt/\012start rw - tmpfs none rw
43 22 0:43 / /mnt/odd\9\0 rw - tmpfs none rw
44 22 0:44 / /mnt/\377 rw - tmpfs none rw
45 22 0:45 / /mnt/\777x rw - tmpfs none rw
";
        let m = parse(text).unwrap();
        assert_eq!(m[0].point, Path::new("/mnt/with space"));
        assert_eq!(m[0].fstype, "tracefs");
        assert_eq!(m[1].root, Path::new(r"/a\b"));
        assert_eq!(m[1].point, Path::new("/mnt/end "));
        assert_eq!(m[1].source, "my\tsrc");
        assert_eq!(m[1].super_options, ["rw", "x y"]);
        assert_eq!(m[2].point, Path::new("/mnt/\nstart"));
        assert_eq!(m[3].point, Path::new(r"/mnt/odd\9\0"));
        assert_eq!(
            m[4].point.as_os_str().as_encoded_bytes(),
            b"/mnt/\xff",
            "paths keep non-UTF-8 bytes"
        );
        assert_eq!(m[5].point, Path::new(r"/mnt/\777x"));
    }

    #[test]
    fn malformed_lines_are_errors() {
        let e = parse("25 24 0:22 / /sys/fs/cgroup ro\n36 31 0:33 / /x rw\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("separator"), "{e}");
        let e = parse("1 2 3:4 / /a rw -\n").unwrap_err();
        assert_eq!(e.reason, "no filesystem type");
        assert_eq!(parse("1 2\n").unwrap_err().reason, "too few fields");
        assert_eq!(parse("").unwrap(), vec![]);
    }

    /// This machine's own table parses, and every cgroup mount point is a directory.
    #[test]
    fn this_machine() {
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let m = parse(&text).unwrap();
        assert_eq!(m.len(), text.lines().filter(|l| !l.is_empty()).count());
        for x in m.iter().filter(|x| x.fstype.starts_with("cgroup")) {
            assert!(x.point.is_dir(), "{x:?}");
        }
    }
}
