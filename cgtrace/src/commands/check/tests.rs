use super::gather::cmdline_has_nokmem;
use super::render::render_text;
use super::render::{fit_message, short_release, truncate_chars};
use super::*;
use crate::kernel::MEMCG_ID_MAX;
use crate::model::k8s::pod_cgroup_uid;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_FIXTURE: AtomicU64 = AtomicU64::new(0);

/// A fake host root under the temp dir, removed on drop (even on panic).
struct Fixture {
    root: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let n = NEXT_FIXTURE.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("cgtrace-check-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn mkdir(&self, rel: &str) {
        fs::create_dir_all(self.root.join(rel)).unwrap();
    }

    fn remove(&self, rel: &str) {
        let path = self.root.join(rel);
        if path.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }

    fn opts(&self) -> CheckOptions {
        CheckOptions {
            host_root: self.root.clone(),
            pod_dir_min_age: Duration::ZERO,
            ..CheckOptions::default()
        }
    }

    fn check(&self) -> CheckReport {
        let report = run_check(&self.opts()).unwrap();
        assert_message_ok(&report);
        report
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn assert_message_ok(report: &CheckReport) {
    assert!(
        report.message.chars().count() <= MESSAGE_MAX_CHARS,
        "message too long: {:?}",
        report.message
    );
    assert!(!report.message.contains('\n'));
    assert!(report.message.starts_with("cgtrace: "));
    let text = render_text(report);
    assert_eq!(text.lines().next(), Some(report.message.as_str()));
    let json = serde_json::to_string(report).unwrap();
    assert!(json.contains(&format!("\"status\":\"{}\"", report.status)));
}

const CENTOS7_MOUNTINFO: &str = "\
60 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/centos-root rw,seclabel,attr2,inode64,noquota
18 60 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw,seclabel
19 60 0:3 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,seclabel,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,seclabel,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,seclabel,cpuacct,cpu
900 60 0:29 /kubepods/burstable/pod1/abc /var/lib/docker/overlay2/x/merged/sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,seclabel,memory
33 24 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,seclabel,memory
34 24 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,seclabel,pids
";

const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
";

const V2_MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

fn proc_cgroups_v1(memory_num: u64) -> String {
    format!(
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
         cpuset\t5\t6\t1\ncpu\t3\t80\t1\ncpuacct\t3\t80\t1\n\
         memory\t10\t{memory_num}\t1\ndevices\t8\t80\t1\nfreezer\t4\t6\t1\n\
         net_cls\t2\t6\t1\nblkio\t9\t80\t1\nperf_event\t6\t6\t1\n\
         hugetlb\t7\t6\t1\npids\t11\t80\t1\nnet_prio\t2\t6\t1\n"
    )
}

const MEMORY: &str = "sys/fs/cgroup/memory";
const SERVICES: u64 = 200;
const PODS: u64 = 20;
/// root + system.slice + services + kubepods + 2 QoS dirs + pods + one container each.
const V1_VISIBLE: u64 = 1 + 1 + SERVICES + 1 + 2 + PODS + PODS;

fn pod_uid(i: u64) -> String {
    format!("{i:08x}-1111-2222-3333-444455556666")
}

/// A v1 node: a memory tree of [`V1_VISIBLE`] directories whose pods all have logs.
fn v1_node(name: &str, release: &str, memory_num: u64, cmdline: &str) -> Fixture {
    let fx = Fixture::new(name);
    fx.write("proc/sys/kernel/osrelease", &format!("{release}\n"));
    fx.write("proc/cmdline", &format!("{cmdline}\n"));
    fx.write("proc/1/mountinfo", CENTOS7_MOUNTINFO);
    fx.write("proc/cgroups", &proc_cgroups_v1(memory_num));
    fx.write(&format!("{MEMORY}/memory.usage_in_bytes"), "123456789\n");
    fx.write(&format!("{MEMORY}/memory.kmem.usage_in_bytes"), "0\n");
    for i in 0..SERVICES {
        fx.mkdir(&format!("{MEMORY}/system.slice/svc{i}.service"));
    }
    for i in 0..PODS {
        let qos = if i % 2 == 0 {
            "burstable"
        } else {
            "besteffort"
        };
        let uid = pod_uid(i);
        fx.mkdir(&format!("{MEMORY}/kubepods/{qos}/pod{uid}/c{i:062x}"));
        fx.mkdir(&format!("var/log/pods/default_web-{i}_{uid}"));
    }
    fx
}

const CENTOS_CMDLINE: &str = "BOOT_IMAGE=/vmlinuz-3.10.0-957.21.3.el7.x86_64 root=/dev/mapper/centos-root ro crashkernel=auto rhgb quiet LANG=en_US.UTF-8";

#[test]
fn centos7_leaky_kernel_with_kmem_is_a_problem() {
    let fx = v1_node(
        "centos7-leak",
        "3.10.0-957.21.3.el7.x86_64",
        40_000,
        CENTOS_CMDLINE,
    );
    fx.write(
        &format!(
            "{MEMORY}/kubepods/burstable/pod{}/memory.kmem.usage_in_bytes",
            pod_uid(0)
        ),
        "0\n",
    );
    fx.write(
        &format!(
            "{MEMORY}/kubepods/burstable/pod{}/c{:062x}/memory.kmem.usage_in_bytes",
            pod_uid(0),
            0
        ),
        "5492736\n",
    );
    let r = fx.check();
    assert_eq!(r.status, Status::Problem);
    assert_eq!(r.status.exit_code(), 1);
    assert_eq!(r.layout, Layout::V1);
    assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
    assert_eq!(r.memory_mount.as_deref(), Some("/sys/fs/cgroup/memory"));
    assert_eq!(r.num_cgroups_memory, Some(40_000));
    assert_eq!(r.visible_memcgs, Some(V1_VISIBLE));
    assert_eq!(r.dying_memcgs, Some(40_000 - V1_VISIBLE));
    assert!(r.ids_held_by_dying);
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 40_000));
    assert!(r.leaky_3_10);
    assert_eq!(r.kmem.active, Some(true));
    assert!(
        r.kmem.evidence.contains("usage_in_bytes is 5492736"),
        "{}",
        r.kmem.evidence
    );
    assert!(r.kmem.pins_dying);
    assert!(!r.kmem.nokmem_cmdline);
    assert!(r.empty_pod_dirs.is_empty());
    assert!(r.message.contains("kmem"), "{}", r.message);
    assert!(r.message.contains("3.10"), "{}", r.message);
    assert_eq!(
        r.message,
        "cgtrace: 39755 dying memcgs, ID headroom 25535 (kmem leak, kernel 3.10.0-957)"
    );
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    let p = &r.problems[0];
    for needle in [
        "39755",
        "25535",
        "nokmem",
        "1075",
        "no space left on device",
        "reboot",
    ] {
        assert!(p.contains(needle), "{needle} missing in {p}");
    }
}

#[test]
fn readable_slabinfo_proves_kmem() {
    let fx = v1_node(
        "centos7-slabinfo",
        "3.10.0-862.el7.x86_64",
        3000,
        CENTOS_CMDLINE,
    );
    fx.write(
        &format!("{MEMORY}/system.slice/svc7.service/memory.kmem.slabinfo"),
        "slabinfo - version: 2.1\n",
    );
    let r = fx.check();
    assert_eq!(r.kmem.active, Some(true));
    assert!(
        r.kmem.evidence.contains("slabinfo is readable"),
        "{}",
        r.kmem.evidence
    );
    assert!(
        r.kmem
            .evidence
            .contains("/sys/fs/cgroup/memory/system.slice/svc7.service")
    );
    assert!(r.leaky_3_10);
    assert_eq!(r.status, Status::Problem);
}

#[test]
fn leaky_kernel_with_unknown_kmem_is_a_problem() {
    // The mount table names the memory hierarchy but it is not there: no probe possible.
    let fx = v1_node(
        "centos7-unknown-kmem",
        "3.10.0-957.el7.x86_64",
        500,
        CENTOS_CMDLINE,
    );
    fx.remove(MEMORY);
    let r = fx.check();
    assert_eq!(r.kmem.active, None);
    assert_eq!(r.visible_memcgs, None);
    assert_eq!(r.dying_memcgs, None);
    assert_eq!(r.id_headroom, None);
    assert_eq!(r.status, Status::Problem);
    assert!(r.problems[0].contains("may be active"), "{}", r.problems[0]);
    assert!(
        r.notes.iter().any(|n| n.contains("does not exist")),
        "{:?}",
        r.notes
    );
}

#[test]
fn leaky_kernel_without_kmem_reports_dying_that_hold_ids() {
    let fx = v1_node(
        "centos7-no-kmem",
        "3.10.0-957.el7.x86_64",
        40_000,
        CENTOS_CMDLINE,
    );
    fx.write(
        &format!("{MEMORY}/system.slice/svc3.service/memory.kmem.usage_in_bytes"),
        "0\n",
    );
    let r = fx.check();
    assert_eq!(r.kmem.active, Some(false), "{}", r.kmem.evidence);
    assert!(r.leaky_3_10);
    assert_eq!(r.status, Status::Problem);
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    assert!(r.problems[0].starts_with("39755 dying memory cgroups (threshold 1000)"));
    assert!(r.message.contains("dying hold IDs"), "{}", r.message);
}

#[test]
fn nokmem_on_cmdline_with_few_dying_is_ok() {
    let fx = v1_node(
        "centos7-nokmem",
        "3.10.0-957.21.3.el7.x86_64",
        V1_VISIBLE + 15,
        &format!("{CENTOS_CMDLINE} cgroup.memory=nosocket,nokmem"),
    );
    // Even a positive kmem charge does not matter with nokmem.
    fx.write(
        &format!("{MEMORY}/system.slice/svc1.service/memory.kmem.usage_in_bytes"),
        "4096\n",
    );
    let r = fx.check();
    assert!(r.kmem.nokmem_cmdline);
    assert_eq!(r.kmem.active, Some(false));
    assert!(r.leaky_3_10);
    assert_eq!(r.dying_memcgs, Some(15));
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V1_VISIBLE - 15));
    assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
    assert_eq!(r.status.exit_code(), 0);
    assert_eq!(
        r.message,
        format!(
            "cgtrace: ok, 15 dying memcgs, ID headroom {}",
            MEMCG_ID_MAX - V1_VISIBLE - 15
        )
    );
}

#[test]
fn fixed_rhel7_kernel_is_not_leaky() {
    let fx = v1_node(
        "centos7-fixed",
        "3.10.0-1160.el7.x86_64",
        300,
        CENTOS_CMDLINE,
    );
    fx.write(
        &format!("{MEMORY}/system.slice/svc1.service/memory.kmem.usage_in_bytes"),
        "4096\n",
    );
    let r = fx.check();
    assert!(!r.leaky_3_10);
    assert_eq!(r.kmem.active, Some(true));
    assert!(r.ids_held_by_dying);
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 300));
    assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
}

#[test]
fn modern_hybrid_node_with_few_dying_is_ok() {
    let fx = v1_node("hybrid", "6.8.0-1015-aws", V1_VISIBLE + 10, "ro quiet");
    fx.write("proc/1/mountinfo", HYBRID_MOUNTINFO);
    fx.write("sys/fs/cgroup/unified/cgroup.controllers", "");
    fx.write(
        "sys/fs/cgroup/unified/cgroup.stat",
        "nr_descendants 40\nnr_dying_descendants 3\n",
    );
    let r = fx.check();
    assert_eq!(r.layout, Layout::Hybrid);
    assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
    assert_eq!(r.v2_mount.as_deref(), Some("/sys/fs/cgroup/unified"));
    assert_eq!(r.nr_dying_descendants, Some(3));
    assert_eq!(r.nr_dying_subsys_memory, None);
    assert_eq!(r.dying_memcgs, Some(10));
    assert!(!r.ids_held_by_dying);
    assert!(!r.kmem.pins_dying);
    assert_eq!(r.kmem.active, Some(true));
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V1_VISIBLE));
    assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
    assert_eq!(r.status.exit_code(), 0);
}

/// A pure v2 node; `stat` is the root's cgroup.stat.
fn v2_node(name: &str, release: &str, stat: &str) -> Fixture {
    let fx = Fixture::new(name);
    let cg = "sys/fs/cgroup";
    fx.write("proc/sys/kernel/osrelease", release);
    fx.write("proc/cmdline", "ro quiet");
    fx.write("proc/1/mountinfo", V2_MOUNTINFO);
    fx.write(
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1600\t1\nmemory\t0\t1600\t1\n",
    );
    fx.write(
        &format!("{cg}/cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    fx.write(
        &format!("{cg}/cgroup.subtree_control"),
        "cpuset cpu io memory pids\n",
    );
    fx.write(&format!("{cg}/cgroup.stat"), stat);
    fx.write(
        &format!("{cg}/system.slice/cgroup.subtree_control"),
        "memory pids\n",
    );
    for i in 0..10 {
        fx.write(
            &format!("{cg}/system.slice/s{i}.service/cgroup.subtree_control"),
            "",
        );
    }
    // No memory in init.scope's children: they are not memcgs.
    fx.write(&format!("{cg}/init.scope/cgroup.subtree_control"), "");
    fx.mkdir(&format!("{cg}/init.scope/inner"));
    fx.write(
        &format!("{cg}/kubepods.slice/cgroup.subtree_control"),
        "cpu memory\n",
    );
    fx.write(
        &format!("{cg}/kubepods.slice/kubepods-burstable.slice/cgroup.subtree_control"),
        "cpu memory\n",
    );
    let pod = format!(
        "{cg}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        pod_uid(1).replace('-', "_")
    );
    fx.write(&format!("{pod}/cgroup.subtree_control"), "cpu memory\n");
    fx.mkdir(&format!("{pod}/cri-containerd-abc.scope"));
    fx.mkdir(&format!("var/log/pods/kube-system_coredns_{}", pod_uid(1)));
    fx
}

/// root, system.slice + 10 services, init.scope, kubepods.slice, burstable, pod, container.
const V2_MEMCGS: u64 = 1 + 1 + 10 + 1 + 1 + 1 + 1 + 1;

#[test]
fn v2_node_uses_cgroup_stat() {
    let fx = v2_node(
        "v2",
        "6.1.0-18-amd64",
        "nr_descendants 18\nnr_dying_descendants 1500\n",
    );
    let r = fx.check();
    assert_eq!(r.layout, Layout::V2);
    assert_eq!(r.memory_hierarchy, MemoryHierarchy::V2);
    assert_eq!(r.visible_memcgs, Some(V2_MEMCGS));
    assert_eq!(r.nr_dying_descendants, Some(1500));
    assert_eq!(r.dying_memcgs, Some(1500));
    assert_eq!(r.num_cgroups_memory, Some(1600));
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V2_MEMCGS));
    assert_eq!(r.kmem.active, Some(true));
    assert!(!r.kmem.pins_dying);
    // Many dying memcgs, but on 6.1 they hold neither IDs nor slab: ok.
    assert_eq!(r.status, Status::Ok, "{:#?}", r.problems);
    assert_eq!(
        r.message,
        format!(
            "cgtrace: ok, 1500 dying memcgs, ID headroom {}",
            MEMCG_ID_MAX - V2_MEMCGS
        )
    );
}

#[test]
fn v2_node_prefers_subsys_counts() {
    let fx = v2_node(
        "v2-612",
        "6.12.9-200.fc41.x86_64",
        "nr_descendants 18\nnr_subsys_cpu 17\nnr_subsys_memory 31\nnr_dying_descendants 9\nnr_dying_subsys_cpu 0\nnr_dying_subsys_memory 7\n",
    );
    let r = fx.check();
    assert_eq!(r.visible_memcgs, Some(31));
    assert_eq!(r.dying_memcgs, Some(7));
    assert_eq!(r.nr_dying_subsys_memory, Some(7));
    assert_eq!(r.nr_dying_descendants, Some(9));
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 31));
    assert_eq!(r.status, Status::Ok);
}

#[test]
fn v2_node_before_5_9_with_many_dying_is_a_problem() {
    let fx = v2_node(
        "v2-54",
        "5.4.0-1059-aws",
        "nr_descendants 18\nnr_dying_descendants 1500\n",
    );
    let r = fx.check();
    assert!(r.kmem.pins_dying);
    assert_eq!(r.status, Status::Problem);
    assert!(r.message.contains("kmem pins dying"), "{}", r.message);
    assert!(r.problems[0].contains("1500 dying memory cgroups"));
    assert!(r.problems[0].contains("5.9"));
}

#[test]
fn nothing_readable_is_unknown() {
    let fx = Fixture::new("empty");
    let r = fx.check();
    assert_eq!(r.status, Status::Unknown);
    assert_eq!(r.status.exit_code(), 2);
    assert_eq!(r.layout, Layout::Unmounted);
    assert_eq!(r.memory_hierarchy, MemoryHierarchy::Absent);
    assert!(r.problems.is_empty());
    assert!(r.message.starts_with("cgtrace: unknown"), "{}", r.message);

    // Even a leaky release alone is not enough to judge.
    fx.write("proc/sys/kernel/osrelease", "3.10.0-957.el7.x86_64");
    assert_eq!(fx.check().status, Status::Unknown);
}

#[test]
fn disabled_memory_controller_is_unknown() {
    let fx = v1_node("disabled", "5.4.0-1059-aws", 1, "cgroup_disable=memory");
    fx.write(
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n",
    );
    fx.write("proc/1/mountinfo", "");
    fx.remove(MEMORY);
    let r = fx.check();
    assert_eq!(r.status, Status::Unknown);
    assert!(r.message.contains("disabled"), "{}", r.message);
}

#[test]
fn missing_host_root_is_an_error_naming_it() {
    let fx = Fixture::new("missing-root");
    let missing = fx.root.join("nope");
    let err = run_check(&CheckOptions {
        host_root: missing.clone(),
        ..CheckOptions::default()
    })
    .unwrap_err();
    assert!(matches!(&err, CheckError::HostRoot { path, .. } if *path == missing));
    assert!(err.to_string().contains(&missing.display().to_string()));
}

#[test]
fn malformed_proc_cgroups_is_an_error_naming_it() {
    let fx = v1_node("bad-cgroups", "5.4.0-1059-aws", 1, "");
    fx.write(
        "proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t10\tlots\t1\n",
    );
    let err = run_check(&fx.opts()).unwrap_err();
    match &err {
        CheckError::Parse { path, line, .. } => {
            assert_eq!(*path, fx.root.join("proc/cgroups"));
            assert_eq!(*line, 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("proc/cgroups:2"), "{err}");

    fx.write("proc/cgroups", &proc_cgroups_v1(300));
    fx.write(
        "proc/1/mountinfo",
        "36 31 0:33 / /sys/fs/cgroup/memory rw\n",
    );
    let err = run_check(&fx.opts()).unwrap_err();
    assert!(matches!(&err, CheckError::Parse { path, .. } if path.ends_with("proc/1/mountinfo")));
}

#[test]
fn empty_pod_dirs_of_gone_pods_are_reported() {
    let fx = v1_node("pods", "5.15.0-1034-azure", V1_VISIBLE + 5, "ro");
    let gone_cgroupfs = pod_uid(100);
    let gone_systemd = pod_uid(101);
    let alive_empty = pod_uid(102);
    let gone_busy = pod_uid(103);
    let gone_guaranteed = "0123456789abcdef0123456789abcdef"; // static pod hash
    fx.mkdir(&format!("{MEMORY}/kubepods/burstable/pod{gone_cgroupfs}"));
    fx.mkdir(&format!("{MEMORY}/kubepods/pod{gone_guaranteed}"));
    fx.mkdir(&format!(
        "{MEMORY}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        gone_systemd.replace('-', "_")
    ));
    fx.mkdir(&format!("{MEMORY}/kubepods/besteffort/pod{alive_empty}"));
    fx.mkdir(&format!("var/log/pods/default_starting_{alive_empty}"));
    fx.mkdir(&format!(
        "{MEMORY}/kubepods/burstable/pod{gone_busy}/container"
    ));
    // Not under kubepods: ignored.
    fx.mkdir(&format!("{MEMORY}/system.slice/pod{}", pod_uid(104)));
    let extra = 1 + 1 + 3 + 1 + 2 + 1;

    let r = fx.check();
    assert_eq!(r.visible_memcgs, Some(V1_VISIBLE + extra));
    let found: Vec<(&str, &str)> = r
        .empty_pod_dirs
        .iter()
        .map(|d| (d.path.as_str(), d.pod_uid.as_str()))
        .collect();
    let burstable = format!("/sys/fs/cgroup/memory/kubepods/burstable/pod{gone_cgroupfs}");
    let guaranteed = format!("/sys/fs/cgroup/memory/kubepods/pod{gone_guaranteed}");
    let systemd = format!(
        "/sys/fs/cgroup/memory/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        gone_systemd.replace('-', "_")
    );
    assert_eq!(
        found,
        vec![
            (systemd.as_str(), gone_systemd.as_str()),
            (burstable.as_str(), gone_cgroupfs.as_str()),
            (guaranteed.as_str(), gone_guaranteed),
        ]
    );
    assert_eq!(r.status, Status::Problem);
    assert!(r.message.contains("3 leaked pod cgroups"), "{}", r.message);
    assert!(r.problems[0].contains(&burstable));

    // Freshly changed directories are skipped by default.
    let r = run_check(&CheckOptions {
        host_root: fx.root.clone(),
        ..CheckOptions::default()
    })
    .unwrap();
    assert!(r.empty_pod_dirs.is_empty());
    assert_eq!(r.status, Status::Ok);
    assert!(
        r.notes.iter().any(|n| n.contains("skipped")),
        "{:?}",
        r.notes
    );

    // Without /var/log/pods nothing can be said about them.
    fx.remove("var/log/pods");
    let r = fx.check();
    assert!(r.empty_pod_dirs.is_empty());
    assert_eq!(r.status, Status::Ok);
    assert!(
        r.notes.iter().any(|n| n.contains("/var/log/pods")),
        "{:?}",
        r.notes
    );
}

#[test]
fn headroom_counts_visible_on_5_x_and_all_on_3_10() {
    let fx = v1_node("headroom-54", "5.4.0-1059-aws", 60_000, "ro");
    let r = fx.check();
    assert!(!r.ids_held_by_dying);
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - V1_VISIBLE));
    assert_eq!(r.dying_memcgs, Some(60_000 - V1_VISIBLE));
    // 5.4 has kmem on by default and does not reparent slab: a problem.
    assert_eq!(r.kmem.active, Some(true));
    assert_eq!(r.status, Status::Problem);
    assert_eq!(r.problems.len(), 1, "{:#?}", r.problems);
    assert!(r.message.contains("kmem pins dying"), "{}", r.message);

    let fx = v1_node(
        "headroom-310",
        "3.10.0-1160.el7.x86_64",
        60_000,
        CENTOS_CMDLINE,
    );
    let r = fx.check();
    assert!(r.ids_held_by_dying);
    assert_eq!(r.id_headroom, Some(MEMCG_ID_MAX - 60_000));
    assert_eq!(r.status, Status::Problem);
    assert!(
        r.problems
            .iter()
            .any(|p| p.starts_with("Only 5535 of 65535 memcg IDs are free"))
    );
    assert!(r.message.contains("low ID headroom"), "{}", r.message);
    assert!(r.message.contains("ID headroom 5535"), "{}", r.message);

    // 4.4 also keeps IDs of dying memcgs.
    let fx = v1_node("headroom-44", "4.4.0-210-generic", 60_000, "ro");
    assert_eq!(fx.check().id_headroom, Some(MEMCG_ID_MAX - 60_000));
}

#[test]
fn mountinfo_fallbacks() {
    // proc/self/mountinfo when proc/1 is absent.
    let fx = v1_node("self-mountinfo", "6.8.0-1015-aws", V1_VISIBLE, "ro");
    fx.remove("proc/1");
    fx.write("proc/self/mountinfo", CENTOS7_MOUNTINFO);
    assert_eq!(fx.check().visible_memcgs, Some(V1_VISIBLE));
    // No mount table at all: the usual paths.
    fx.remove("proc/self");
    let r = fx.check();
    assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
    assert_eq!(r.visible_memcgs, Some(V1_VISIBLE));
    assert_eq!(r.dying_memcgs, Some(0));
    assert!(r.notes.iter().any(|n| n.contains("No mount table")));
}

#[test]
fn symlinks_are_not_followed() {
    let fx = v1_node("symlink", "6.8.0-1015-aws", V1_VISIBLE, "ro");
    std::os::unix::fs::symlink(
        fx.root.join(MEMORY).join("system.slice"),
        fx.root.join(MEMORY).join("loop"),
    )
    .unwrap();
    assert_eq!(fx.check().visible_memcgs, Some(V1_VISIBLE));
}

// The release table moved with the parser: `kernel::release::tests::parses_releases`.

#[test]
fn leaky_classification() {
    let leaky = |rel: &str| {
        let fx = v1_node("leaky", rel, V1_VISIBLE, "ro");
        fx.check().leaky_3_10
    };
    assert!(leaky("3.10.0-957.21.3.el7.x86_64"));
    assert!(leaky("3.10.0-1062.18.1.el7.x86_64"));
    assert!(!leaky("3.10.0-1075.el7.x86_64"));
    assert!(!leaky("3.10.0-1160.119.1.el7.x86_64"));
    assert!(leaky("3.10.107-1-tlinux2-0052"));
    assert!(!leaky("4.18.0-348.el8.x86_64"));
    assert!(!leaky("5.4.0-1059-aws"));
}

#[test]
fn helpers() {
    assert_eq!(short_release("3.10.0-957.21.3.el7.x86_64"), "3.10.0-957");
    assert_eq!(short_release("5.4.0-1059-aws"), "5.4.0-1059-aws");
    assert_eq!(short_release("6.1"), "6.1");
    assert!(cmdline_has_nokmem("ro cgroup.memory=nokmem quiet"));
    assert!(cmdline_has_nokmem("cgroup.memory=nosocket,nokmem"));
    assert!(!cmdline_has_nokmem("cgroup.memory=nosocket"));
    assert!(!cmdline_has_nokmem("ro -- cgroup.memory=nokmem"));
    let line = r"1 2 0:3 / /mnt/a\040b\\c\134d rw - tmpfs none rw";
    let m = crate::kernel::mountinfo::parse(line).unwrap();
    assert_eq!(m[0].point, Path::new(r"/mnt/a b\\c\d"));
    assert_eq!(
        pod_cgroup_uid(b"/kubepods/podABCDEF01-1111-2222-3333-444455556666"),
        Some("abcdef01-1111-2222-3333-444455556666".into())
    );
    assert_eq!(
        pod_cgroup_uid(b"/kubepods.slice/kubepods-pod01234567_1111_2222_3333_444455556666.slice"),
        Some("01234567-1111-2222-3333-444455556666".into())
    );
    assert_eq!(pod_cgroup_uid(b"/kubepods/pod123"), None);
    assert_eq!(
        pod_cgroup_uid(b"/kubepods.slice/kubepods-burstable.slice"),
        None
    );
    assert_eq!(Status::Ok.exit_code(), 0);
    assert_eq!(Status::Problem.exit_code(), 1);
    assert_eq!(Status::Unknown.exit_code(), 2);
}

#[test]
fn messages_are_escaped_for_the_terminal() {
    let m = fit_message(&["cgtrace: /a\nb\u{1b}[31m\u{202e}c".to_string()]);
    assert_eq!(m, "cgtrace: /a\\nb\\x1b[31m\\u{202e}c");
}

#[test]
fn messages_are_cut_at_char_boundaries() {
    let long = "é".repeat(200);
    let cut = truncate_chars(&long, MESSAGE_MAX_CHARS);
    assert_eq!(cut.chars().count(), MESSAGE_MAX_CHARS);
    assert!(cut.ends_with("..."));
    assert_eq!(truncate_chars("short", MESSAGE_MAX_CHARS), "short");

    // A hostile release (long, multi-byte, newline) still gives one short line.
    let fx = v1_node(
        "unicode",
        &format!("3.10.0-ü{}\nx", "ß".repeat(120)),
        40_000,
        CENTOS_CMDLINE,
    );
    fx.write(
        &format!("{MEMORY}/system.slice/svc1.service/memory.kmem.usage_in_bytes"),
        "1\n",
    );
    for i in 0..3 {
        fx.mkdir(&format!(
            "{MEMORY}/kubepods/burstable/pod{}",
            pod_uid(60 + i)
        ));
    }
    let r = fx.check(); // asserts the length
    assert_eq!(r.status, Status::Problem);
    assert_eq!(r.problems.len(), 2, "{:#?}", r.problems);
}

/// Read-only check of this machine's real cgroups.
#[test]
fn real_host_read_only() {
    let fresh = fs::read_to_string("/proc/cgroups").ok().and_then(|t| {
        crate::kernel::counters::proc_cgroups_row(&t, "memory")
            .ok()
            .flatten()
    });
    let Some(fresh) = fresh.filter(|r| r.enabled) else {
        eprintln!("skipped: no enabled memory controller in /proc/cgroups");
        return;
    };
    let r = run_check(&CheckOptions::default()).unwrap();
    assert_message_ok(&r);
    eprintln!("{}", render_text(&r));
    assert_ne!(r.status, Status::Unknown);
    assert_ne!(r.memory_hierarchy, MemoryHierarchy::Absent);
    assert!(r.dying_memcgs.is_some());
    assert!(r.visible_memcgs.is_some());
    assert!(r.id_headroom.is_some());
    assert!(r.kernel_release.is_some());
    let num = r.num_cgroups_memory.unwrap();
    assert!(
        num.abs_diff(fresh.num_cgroups) <= 50,
        "{num} vs fresh {}",
        fresh.num_cgroups
    );
    if Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists() {
        assert_eq!(r.memory_hierarchy, MemoryHierarchy::V1);
        assert_eq!(r.memory_mount.as_deref(), Some("/sys/fs/cgroup/memory"));
    }
}
