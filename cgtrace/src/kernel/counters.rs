//! The kernel's own counts of cgroups: the one parser each of `/proc/cgroups` and of a v2
//! `cgroup.stat`.
use thiserror::Error;

/// A line of a counter file that is not in the kernel's format.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct CounterError {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// One row of `/proc/cgroups`: `subsys_name hierarchy num_cgroups enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerRow {
    /// Hierarchy id the controller is bound to (0: v2, or not bound).
    pub hierarchy: u32,
    /// Cgroups with this controller's css, live and dying (on v2: every cgroup of the v2
    /// hierarchy).
    pub num_cgroups: u64,
    pub enabled: bool,
}

/// The row of `controller` in the text of `/proc/cgroups`; `Ok(None)` without one (a kernel
/// built without it). A row of that controller not in the kernel's format is an error.
pub fn proc_cgroups_row(
    text: &str,
    controller: &str,
) -> Result<Option<ControllerRow>, CounterError> {
    for (i, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some(controller) {
            continue;
        }
        let err = |reason: &str| CounterError {
            line: i + 1,
            reason: format!("{reason} in {line:?}"),
        };
        let mut num = || -> Result<u64, CounterError> {
            fields
                .next()
                .ok_or_else(|| err("too few fields"))?
                .parse()
                .map_err(|_| err("not a number"))
        };
        let hierarchy = u32::try_from(num()?).map_err(|_| err("hierarchy id out of range"))?;
        let num_cgroups = num()?;
        let enabled = num()? != 0;
        return Ok(Some(ControllerRow {
            hierarchy,
            num_cgroups,
            enabled,
        }));
    }
    Ok(None)
}

/// The counts of a v2 `cgroup.stat` cgtrace uses; a key the kernel does not have is `None`
/// (`nr_subsys_*` and `nr_dying_subsys_*` exist from 6.12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupStat {
    pub nr_descendants: Option<u64>,
    /// Removed cgroups still held (counts cgroups, not memcgs).
    pub nr_dying_descendants: Option<u64>,
    /// Live memcgs in the subtree, the cgroup itself included.
    pub nr_subsys_memory: Option<u64>,
    /// Dying memcgs in the subtree.
    pub nr_dying_subsys_memory: Option<u64>,
}

impl CgroupStat {
    /// Parses the text of `cgroup.stat`. Negative values (racy reads) count as 0; a known key
    /// with a value that is not a number is an error; unknown keys are skipped.
    pub fn parse(text: &str) -> Result<CgroupStat, CounterError> {
        let mut stat = CgroupStat::default();
        for (i, line) in text.lines().enumerate() {
            let Some((key, value)) = line.trim().split_once(char::is_whitespace) else {
                continue;
            };
            let slot = match key {
                "nr_descendants" => &mut stat.nr_descendants,
                "nr_dying_descendants" => &mut stat.nr_dying_descendants,
                "nr_subsys_memory" => &mut stat.nr_subsys_memory,
                "nr_dying_subsys_memory" => &mut stat.nr_dying_subsys_memory,
                _ => continue,
            };
            let value: i64 = value.trim().parse().map_err(|_| CounterError {
                line: i + 1,
                reason: format!("not a number in {line:?}"),
            })?;
            *slot = Some(value.max(0).unsigned_abs());
        }
        Ok(stat)
    }

    /// Dying memcgs: `nr_dying_subsys_memory` (6.12+), else `nr_dying_descendants` (dying
    /// cgroups: an upper bound).
    pub fn dying_memcgs(&self) -> Option<u64> {
        self.nr_dying_subsys_memory.or(self.nr_dying_descendants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t40\t1\nmemory\t4\t57\t1\nhugetlb\t0\t3\t0\n";

    #[test]
    fn proc_cgroups_rows() {
        let m = proc_cgroups_row(PROC_CGROUPS, "memory").unwrap();
        assert_eq!(
            m,
            Some(ControllerRow {
                hierarchy: 4,
                num_cgroups: 57,
                enabled: true
            })
        );
        let h = proc_cgroups_row(PROC_CGROUPS, "hugetlb").unwrap().unwrap();
        assert!(!h.enabled && h.hierarchy == 0);
        assert_eq!(proc_cgroups_row("cpu 1 2 1\n", "memory"), Ok(None));
        let e = proc_cgroups_row("#h\nmemory\t10\tlots\t1\n", "memory").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("not a number"), "{e}");
        let e = proc_cgroups_row("memory 10 3\n", "memory").unwrap_err();
        assert!(e.reason.contains("too few fields"), "{e}");
    }

    #[test]
    fn cgroup_stat() {
        let st = "nr_descendants 12\nnr_subsys_cpu 4\nnr_subsys_memory 9\nnr_dying_descendants 3\nnr_dying_subsys_memory 2\n";
        let s = CgroupStat::parse(st).unwrap();
        assert_eq!(s.nr_descendants, Some(12));
        assert_eq!(s.nr_subsys_memory, Some(9));
        assert_eq!(s.nr_dying_descendants, Some(3));
        assert_eq!(s.dying_memcgs(), Some(2));
        let old = CgroupStat::parse("nr_descendants 5\nnr_dying_descendants -1\n").unwrap();
        assert_eq!(old.nr_dying_descendants, Some(0));
        assert_eq!(old.nr_subsys_memory, None);
        assert_eq!(old.dying_memcgs(), Some(0));
        let e = CgroupStat::parse("nr_descendants 1\nnr_dying_descendants x\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    /// This machine's files parse, and agree with each other where they overlap.
    #[test]
    fn this_machine() {
        if let Ok(t) = std::fs::read_to_string("/proc/cgroups") {
            for line in t.lines().filter(|l| !l.starts_with('#')) {
                let name = line.split_whitespace().next().unwrap_or_default();
                assert!(proc_cgroups_row(&t, name).unwrap().is_some(), "{name}");
            }
        }
        for p in [
            "/sys/fs/cgroup/cgroup.stat",
            "/sys/fs/cgroup/unified/cgroup.stat",
        ] {
            if let Ok(t) = std::fs::read_to_string(p) {
                assert!(
                    CgroupStat::parse(&t).unwrap().nr_descendants.is_some(),
                    "{p}"
                );
            }
        }
    }
}
