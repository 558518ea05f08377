//! The deployment files under `deploy/` parse, fit together, and use only `cgtrace` flags the
//! binary accepts: the container args of the DaemonSet, the node-problem-detector plugin args
//! and the systemd unit's `ExecStart` are checked against `cgtrace <subcommand> --help`.
//!
//! The binary is built first (`cargo build -p cgtrace --bin cgtrace`, a no-op when it is up to
//! date), so the flags checked are those of the current source; `CGTRACE_BIN` overrides it.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

use integration_tests::{
    binary::{cgtrace_bin, workspace},
    cgroup::dying_memcg,
    ci, stdout_of,
};
use serde::Deserialize;
use serde_norway::Value;

fn read(rel: &str) -> String {
    let path = workspace().join("deploy").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every non-empty document of a YAML file.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq_of<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    seq_of(v, what)
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => panic!("{what}: expected strings, got {other:?}"),
        })
        .collect()
}

/// What `cgtrace [<sub>] --help` documents: each flag (`--metrics`, `-v`) and whether it takes
/// a value (`--metrics <ADDR>`).
#[derive(Clone, Debug, Default)]
struct Help {
    flags: BTreeMap<String, bool>,
}

fn help(sub: Option<&str>) -> Help {
    static CACHE: OnceLock<Mutex<BTreeMap<Option<String>, Help>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = sub.map(str::to_string);
    if let Some(h) = cache.lock().expect("cache").get(&key) {
        return h.clone();
    }
    let mut cmd = Command::new(cgtrace_bin());
    cmd.args(sub).arg("--help");
    let out = cmd.output().expect("run cgtrace --help");
    let shown = sub
        .map(|s| format!("cgtrace {s} --help"))
        .unwrap_or_else(|| "cgtrace --help".into());
    assert!(
        out.status.success(),
        "`{shown}` failed (no such subcommand?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = parse_help(&String::from_utf8_lossy(&out.stdout));
    assert!(!h.flags.is_empty(), "`{shown}` lists no flags");
    cache.lock().expect("cache").insert(key, h.clone());
    h
}

/// Flags in clap's help: in option lines (`  -v, --verbose...`, `      --metrics <ADDR>  ...`;
/// wrapped descriptions are indented further) each leading token that starts with `-`; it takes
/// a value when `<NAME>` follows (`--x <N>`, `--x=<N>`).
fn parse_help(text: &str) -> Help {
    let mut flags = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') || line.len() - t.len() > 6 {
            continue;
        }
        let tokens: Vec<&str> = t.split([' ', ',']).filter(|s| !s.is_empty()).collect();
        for (i, tok) in tokens.iter().enumerate() {
            let tok = tok.trim_end_matches("...");
            let (name, inline_value) = match tok.split_once('=') {
                Some((n, v)) => (n, v.starts_with('<') || v.starts_with("[<")),
                None => (tok, false),
            };
            let valid = name.len() > 1
                && name.starts_with('-')
                && name
                    .trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !name.trim_start_matches('-').is_empty();
            if !valid {
                break; // the description starts
            }
            let next_value = tokens
                .get(i + 1)
                .is_some_and(|n| n.starts_with('<') || n.starts_with("[<"));
            flags.insert(name.to_string(), inline_value || next_value);
        }
    }
    Help { flags }
}

#[test]
fn help_parsing() {
    let h = parse_help(
        "Usage: cgtrace check [OPTIONS]\n\nOptions:\n      --json  Full evidence\n  \
         -v, --verbose...  More diagnostics (-v: info,\n                    -vv: debug)\n      \
         --host-root <DIR>  Where\n      --ring-size=<SIZE>  x\n                          \
         --not-a-flag wrapped description\n  -h, --help  Print help (see more with '--help')\n",
    );
    let want: BTreeMap<String, bool> = [
        ("--json", false),
        ("-v", false),
        ("--verbose", false),
        ("--host-root", true),
        ("--ring-size", true),
        ("-h", false),
        ("--help", false),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(h.flags, want);
}

/// Checks a `cgtrace` command line (without the binary) against the binary's help.
/// Returns the values given to long flags.
fn check_invocation(source: &str, args: &[String]) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let sub_at = args
        .iter()
        .position(|a| !a.starts_with('-'))
        .unwrap_or_else(|| panic!("{source}: no cgtrace subcommand in {args:?}"));
    let global = help(None);
    for a in &args[..sub_at] {
        assert!(
            global.flags.contains_key(a),
            "{source}: `cgtrace` has no global flag {a}"
        );
    }
    let sub = &args[sub_at];
    let h = help(Some(sub));
    let mut i = sub_at + 1;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if !a.starts_with('-') {
            panic!("{source}: unexpected argument {a:?} to `cgtrace {sub}` in {args:?}");
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let takes_value = *h.flags.get(name).unwrap_or_else(|| {
            panic!(
                "{source}: `cgtrace {sub}` does not accept {name}; it accepts {:?}",
                h.flags.keys().collect::<Vec<_>>()
            )
        });
        let value = match (takes_value, inline) {
            (true, Some(v)) => v,
            (true, None) => {
                let v = args
                    .get(i)
                    .filter(|v| !v.starts_with("--"))
                    .unwrap_or_else(|| panic!("{source}: {name} needs a value in {args:?}"));
                i += 1;
                v.clone()
            }
            (false, Some(_)) => panic!("{source}: {name} takes no value in {args:?}"),
            (false, None) => String::new(),
        };
        values.insert(name.to_string(), value);
    }
    values
}

fn is_cgtrace(path: &str) -> bool {
    path == "cgtrace" || path.ends_with("/cgtrace")
}

fn find_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("daemonset.yaml: no {kind}"))
}

#[test]
fn kubernetes_daemonset() {
    let docs = yaml_docs("kubernetes/daemonset.yaml");
    for d in &docs {
        assert!(
            d["apiVersion"].is_string() && d["kind"].is_string(),
            "{d:?}"
        );
        assert!(d["metadata"]["name"].is_string(), "{d:?}");
    }
    let ns = find_kind(&docs, "Namespace");
    let namespace = str_of(&ns["metadata"]["name"], "Namespace name");
    assert_eq!(namespace, "cgtrace");
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        assert_eq!(
            d["metadata"]["namespace"].as_str(),
            Some(namespace),
            "{d:?}"
        );
    }
    let sa = find_kind(&docs, "ServiceAccount");
    let ds = find_kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    // The selector selects the pods.
    let selector = ds["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&pod_labels[str_of(k, "label")], v, "selector label {k:?}");
    }
    // Every taint is tolerated.
    assert!(
        seq_of(&pod["tolerations"], "tolerations")
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null() && t["effect"].is_null()),
        "tolerations must include a bare `operator: Exists`"
    );

    let containers = seq_of(&pod["containers"], "containers");
    let c = containers
        .iter()
        .find(|c| {
            c["command"]
                .as_sequence()
                .and_then(|s| s.first())
                .and_then(Value::as_str)
                .is_some_and(is_cgtrace)
        })
        .expect("a container whose command is cgtrace");
    let args = strings(&c["args"], "container args");
    let flags = check_invocation("daemonset.yaml container args", &args);
    assert_eq!(args[0], "attach");
    let metrics = cgtrace::pipeline::metrics::parse_listen_addr(&flags["--metrics"])
        .expect("--metrics parses");
    assert!(
        metrics.ip().is_unspecified(),
        "--metrics must listen on all addresses in a pod, not {metrics}"
    );
    let port = i64::from(metrics.port());
    let host_root = flags.get("--host-root").expect("--host-root").clone();

    // The port named `metrics` is the one cgtrace listens on; the probes use it.
    let ports = seq_of(&c["ports"], "ports");
    let named = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(named["containerPort"].as_i64(), Some(port));
    for probe in ["livenessProbe", "startupProbe"] {
        let get = &c[probe]["httpGet"];
        if probe == "livenessProbe" || !c[probe].is_null() {
            assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
            assert!(
                get["port"] == "metrics" || get["port"].as_i64() == Some(port),
                "{probe} port"
            );
        }
    }
    // Resources and privileges.
    for k in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][k][r].is_string(), "resources.{k}.{r}");
        }
    }
    let sc = &c["securityContext"];
    let caps = strings(&sc["capabilities"]["add"], "capabilities.add");
    for cap in ["BPF", "PERFMON", "SYS_RESOURCE"] {
        assert!(caps.iter().any(|c| c == cap), "capability {cap}");
    }
    assert_eq!(sc["seccompProfile"]["type"].as_str(), Some("Unconfined"));

    // Mounts: read-only hostPaths; the host's /proc and cgroupfs under --host-root.
    let volumes: BTreeMap<String, String> = seq_of(&pod["volumes"], "volumes")
        .iter()
        .map(|v| {
            (
                str_of(&v["name"], "volume name").to_string(),
                str_of(&v["hostPath"]["path"], "hostPath").to_string(),
            )
        })
        .collect();
    let mounts: BTreeMap<String, String> = seq_of(&c["volumeMounts"], "volumeMounts")
        .iter()
        .map(|m| {
            assert_eq!(
                m["readOnly"].as_bool(),
                Some(true),
                "{m:?} must be read-only"
            );
            let name = str_of(&m["name"], "mount name");
            let host = volumes
                .get(name)
                .unwrap_or_else(|| panic!("mount of unknown volume {name}"));
            (
                str_of(&m["mountPath"], "mountPath").to_string(),
                host.clone(),
            )
        })
        .collect();
    let under_root = |host: &str| format!("{}{host}", host_root.trim_end_matches('/'));
    for host in ["/proc", "/sys/fs/cgroup", "/var/log/pods"] {
        assert_eq!(
            mounts.get(&under_root(host)).map(String::as_str),
            Some(host),
            "the host's {host} at {}",
            under_root(host)
        );
    }
    for same in ["/sys/kernel/btf", "/sys/kernel/tracing"] {
        assert_eq!(mounts.get(same).map(String::as_str), Some(same), "{same}");
    }

    // The Service reaches the metrics port, and says so to Prometheus.
    let svc = find_kind(&docs, "Service");
    for (k, v) in svc["spec"]["selector"]
        .as_mapping()
        .expect("service selector")
    {
        assert_eq!(&pod_labels[str_of(k, "label")], v, "service selector {k:?}");
    }
    let sp = seq_of(&svc["spec"]["ports"], "service ports");
    assert!(
        sp.iter()
            .any(|p| p["targetPort"] == "metrics" || p["targetPort"].as_i64() == Some(port)),
        "service targets the metrics port"
    );
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        ann["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    assert_eq!(ann["prometheus.io/path"].as_str(), Some("/metrics"));
}

/// A Go duration as node-problem-detector parses it (`30s`, `5m`, `1m30s`), in seconds.
fn go_duration(s: &str) -> f64 {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let v: f64 = num.parse().unwrap_or_else(|_| panic!("bad duration {s:?}"));
        num.clear();
        total += v * match unit.as_str() {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => panic!("unit {u:?} in {s:?}"),
        };
    }
    assert!(num.is_empty() && total > 0.0, "bad duration {s:?}");
    total
}

#[test]
fn node_problem_detector_plugin() {
    let text = read("node-problem-detector/cgtrace-check.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("cgtrace-check.json parses");
    assert_eq!(v["plugin"], "custom");
    let pc = &v["pluginConfig"];
    // `cgtrace check` keeps its first line within NPD's default message length.
    assert_eq!(pc["max_output_length"], 80);
    assert!(pc["concurrency"].as_u64().is_some_and(|n| n >= 1));
    go_duration(pc["invoke_interval"].as_str().expect("invoke_interval"));
    let global_timeout = go_duration(pc["timeout"].as_str().expect("timeout"));
    assert!(v["source"].as_str().is_some_and(|s| !s.is_empty()));
    let conditions: Vec<&str> = v["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            assert!(c["reason"].is_string() && c["message"].is_string(), "{c}");
            c["type"].as_str().expect("condition type")
        })
        .collect();
    assert!(conditions.contains(&"CgroupLeak"));
    let rules = v["rules"].as_array().expect("rules");
    assert!(!rules.is_empty());
    for (i, r) in rules.iter().enumerate() {
        let source = format!("cgtrace-check.json rule {i}");
        let ty = r["type"].as_str().expect("rule type");
        assert!(
            ty == "permanent" || ty == "temporary",
            "{source}: type {ty}"
        );
        if ty == "permanent" {
            // NPD refuses permanent rules whose condition has no default.
            let cond = r["condition"].as_str().expect("condition");
            assert!(conditions.contains(&cond), "{source}: condition {cond}");
        }
        assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()));
        if let Some(t) = r["timeout"].as_str() {
            assert!(
                go_duration(t) <= global_timeout,
                "{source}: NPD refuses rule timeouts above the global one"
            );
        }
        let path = r["path"].as_str().expect("path");
        assert!(
            path.starts_with('/') && is_cgtrace(path),
            "{source}: path {path}"
        );
        let args: Vec<String> = r["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string args").to_string())
            .collect();
        assert_eq!(args.first().map(String::as_str), Some("check"));
        check_invocation(&source, &args);
    }
}

#[test]
fn prometheus_rules() {
    let docs = yaml_docs("prometheus/cgtrace-rules.yaml");
    assert_eq!(docs.len(), 1);
    let known: BTreeSet<&str> = cgtrace::pipeline::metrics::METRIC_NAMES
        .iter()
        .copied()
        .collect();
    let mut alerts = BTreeSet::new();
    for g in seq_of(&docs[0]["groups"], "groups") {
        str_of(&g["name"], "group name");
        for r in seq_of(&g["rules"], "rules") {
            let alert = str_of(&r["alert"], "alert").to_string();
            assert!(alerts.insert(alert.clone()), "duplicate alert {alert}");
            let expr = str_of(&r["expr"], "expr");
            let severity = str_of(&r["labels"]["severity"], "severity");
            assert!(
                ["info", "warning", "critical"].contains(&severity),
                "{alert}: severity {severity}"
            );
            str_of(&r["annotations"]["summary"], "summary");
            if !r["for"].is_null() {
                go_duration(str_of(&r["for"], "for"));
            }
            // Every cgtrace metric named exists.
            let mut named = 0;
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("cgtrace_") {
                    continue;
                }
                named += 1;
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s).filter(|b| known.contains(b)))
                    .unwrap_or(word);
                assert!(known.contains(base), "{alert}: unknown metric {word}");
            }
            assert!(named > 0, "{alert}: names no cgtrace metric");
        }
    }
    for want in [
        "cgtrace_cgroups{state=\"dying\"}",
        "cgtrace_memcg_id_headroom",
        "cgtrace_lost_events_total",
        "cgtrace_verdict >= 2",
        "cgtrace_up",
    ] {
        let text = read("prometheus/cgtrace-rules.yaml");
        assert!(text.contains(want), "rules mention {want}");
    }
}

#[test]
fn systemd_unit() {
    let text = read("systemd/cgtrace.service");
    let mut section = String::new();
    let mut keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: keep ExecStart on one line",
            n + 1
        );
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: outside a section", n + 1);
        keys.entry((section.clone(), k.trim().to_string()))
            .or_default()
            .push(v.trim().to_string());
    }
    let get = |s: &str, k: &str| keys.get(&(s.to_string(), k.to_string()));
    assert!(get("Unit", "Description").is_some());
    assert_eq!(
        get("Install", "WantedBy").map(Vec::as_slice),
        Some(&["multi-user.target".to_string()][..])
    );
    assert_eq!(
        get("Service", "Restart").map(Vec::as_slice),
        Some(&["on-failure".to_string()][..])
    );
    let execs = get("Service", "ExecStart").expect("ExecStart");
    assert_eq!(execs.len(), 1);
    let words: Vec<String> = execs[0].split_whitespace().map(str::to_string).collect();
    let bin = words[0].trim_start_matches(['-', '@', ':', '+', '!']);
    assert!(
        bin.starts_with('/') && is_cgtrace(bin),
        "ExecStart runs {bin}"
    );
    let flags = check_invocation("cgtrace.service ExecStart", &words[1..]);
    assert_eq!(words[1], "attach");
    let addr =
        cgtrace::pipeline::metrics::parse_listen_addr(&flags["--metrics"]).expect("--metrics");
    assert!(addr.ip().is_loopback(), "metrics on loopback by default");
    for k in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let caps = get("Service", k).unwrap_or_else(|| panic!("{k}")).join(" ");
        for cap in [
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_RESOURCE",
            "CAP_SYS_ADMIN",
        ] {
            assert!(caps.split_whitespace().any(|c| c == cap), "{k} lacks {cap}");
        }
    }
    // Directives that would break bpf() or perf_event_open().
    assert!(get("Service", "SystemCallFilter").is_none());
    assert!(get("Service", "PrivateUsers").is_none());
}

#[test]
fn readme_names_every_file() {
    let readme = read("README.md");
    for f in [
        "kubernetes/daemonset.yaml",
        "node-problem-detector/cgtrace-check.json",
        "prometheus/cgtrace-rules.yaml",
        "systemd/cgtrace.service",
    ] {
        assert!(workspace().join("deploy").join(f).is_file(), "{f} exists");
        assert!(readme.contains(f), "README.md explains {f}");
    }
}

#[test]
fn invocations_are_checked() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let flags = check_invocation(
        "ok",
        &args(&[
            "-v",
            "check",
            "--json",
            "--host-root=/host",
            "--dying-warn",
            "5",
        ]),
    );
    assert_eq!(flags["--host-root"], "/host");
    assert_eq!(flags["--dying-warn"], "5");
    for bad in [
        &["check", "--no-such-flag"][..],
        &["check", "--host-root"],
        &["check", "--json=yes"],
        &["check", "--host-root", "/host", "stray"],
        &["--json", "check"],
        &["--help"],
    ] {
        let bad = args(bad);
        let r = std::panic::catch_unwind(|| check_invocation("bad", &bad));
        assert!(r.is_err(), "{bad:?} must be refused");
    }
}

/// "256Mi", "64M", "1Gi" as bytes.
fn k8s_quantity(q: &str) -> u64 {
    let (num, mult) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>().expect("quantity") * mult
}

/// What the runc test leaves on the host, removed on drop (even after a panic): the container,
/// the bundle, the page-cache files pinning dying memcgs, the pod log directory.
struct RuncRun {
    id: String,
    work: PathBuf,
    child: Option<std::process::Child>,
}

impl Drop for RuncRun {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "KILL"])
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.work);
        // The dying memcgs' page cache went with the files: let the kernel free them
        // (machine-wide, harmless: clean page cache only).
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    }
}

/// The DaemonSet, run the way it is written, in a real container runtime: the image from
/// `cargo xtask image` unpacked with umoci and run by runc, with the container's command,
/// securityContext (user, capabilities, read-only root, no privilege escalation, seccomp),
/// host PID namespace, memory limit and volume mounts read from `daemonset.yaml`. Asserts that
/// it attaches on the tier `cgtrace doctor` picks on the host, serves `/healthz` (200) and
/// `/metrics`, attributes a pod made after its start to its name, and names (through the
/// `BPF_PROG_TEST_RUN` walk, with the host cgroupfs read-only) a memcg that was dying before;
/// exits 0 on SIGTERM; and, run again without CAP_PERFMON, fails naming that capability.
///
/// Two departures from a kubelet, both said here: this machine's capability bounding set lacks
/// CAP_SYS_RESOURCE, so a runtime asked for it fails ("unable to apply caps"); the test leaves
/// out exactly that one (it only raises RLIMIT_MEMLOCK, which kernels ≥ 5.11 do not need). And
/// the `pod-logs` volume's host directory is a test-owned one instead of /var/log/pods (the
/// container sees it at the manifest's mountPath all the same). There is no CNI: the test
/// brings up the pod network namespace's loopback and talks to the port through it.
#[test]
fn daemonset_runs_in_runc() {
    use std::time::{Duration, Instant};
    if !integration_tests::cgroup::privileged("daemonset_runs_in_runc") {
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    let archive = workspace().join(format!("target/image/cgtrace-{version}.oci.tar"));
    if !archive.is_file() {
        assert!(
            !ci(),
            "{} missing: `cargo xtask image` builds it (`cargo xtask test` does first)",
            archive.display()
        );
        eprintln!("skipping daemonset_runs_in_runc: no image (run `cargo xtask image`)");
        return;
    }

    // The manifest: container, pod, volumes.
    let docs = yaml_docs("kubernetes/daemonset.yaml");
    let ds = find_kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &seq_of(&pod["containers"], "containers")[0];
    let sc = &c["securityContext"];
    let mut argv = strings(&c["command"], "command");
    argv.extend(strings(&c["args"], "args"));
    let flags = check_invocation("daemonset.yaml", &argv[1..]);
    let port = cgtrace::pipeline::metrics::parse_listen_addr(&flags["--metrics"])
        .expect("--metrics")
        .port();
    assert_eq!(
        strings(&sc["capabilities"]["drop"], "drop"),
        ["ALL"],
        "capabilities start from none"
    );
    let caps: Vec<String> = strings(&sc["capabilities"]["add"], "add")
        .into_iter()
        // Not in this machine's bounding set (see above).
        .filter(|c| c != "SYS_RESOURCE")
        .map(|c| format!("CAP_{c}"))
        .collect();
    assert!(caps.len() >= 2, "{caps:?}");

    let h = cgtrace::kernel::hierarchy::Hierarchies::load().expect("hierarchies");
    let memory = h
        .with_controller("memory")
        .and_then(|m| m.mount.clone())
        .expect("memory hierarchy");
    let mounts: Vec<PathBuf> = h.by_id.values().filter_map(|x| x.mount.clone()).collect();
    let mount_refs: Vec<&Path> = mounts.iter().map(PathBuf::as_path).collect();
    let parent =
        integration_tests::cgroup::TestParent::new("deploy", &mount_refs).expect("test parent");
    let id = parent.name.clone();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&id);
    let mut run = RuncRun {
        id: id.clone(),
        work: work.clone(),
        child: None,
    };
    std::fs::create_dir_all(work.join("layout")).expect("work dir");
    let pod_logs = work.join("var-log-pods");
    std::fs::create_dir_all(&pod_logs).expect("pod logs dir");

    // Its labels, as skopeo (what pushes it) reads them: the version and the source commit.
    if let Ok(out) = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}:{version}", archive.display()))
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
        let labels = &info["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], version);
        let head = stdout_of(
            Command::new("git")
                .current_dir(workspace())
                .args(["rev-parse", "HEAD"]),
        );
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .expect("revision label");
        assert!(revision.len() >= 40, "{revision}");
        eprintln!("image of {revision} (HEAD {})", head.trim());
        assert!(
            info["Layers"].as_array().is_some_and(|l| l.len() == 1),
            "{info}"
        );
    } else {
        assert!(!ci(), "skopeo missing (cargo xtask setup installs it)");
    }

    // The image, unpacked as a runc bundle.
    stdout_of(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(work.join("layout")),
    );
    let bundle = work.join("bundle");
    stdout_of(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{version}", work.join("layout").display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    let entries: Vec<_> = walk_files(&rootfs);
    assert_eq!(
        entries,
        [PathBuf::from("usr/local/bin/cgtrace")],
        "the image holds the binary alone"
    );
    let in_image = rootfs.join("usr/local/bin/cgtrace");
    assert_eq!(
        Some(Path::new("/usr/local/bin/cgtrace")),
        argv.first().map(Path::new)
    );

    // The config: the manifest's container.
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("config.json")).expect("json");
    let p = &mut cfg["process"];
    p["terminal"] = false.into();
    p["args"] = serde_json::json!(argv);
    // Logs at info level (-v): the walk says how it ran. Nothing else changes.
    let mut env = p["env"].as_array().cloned().unwrap_or_default();
    env.push("RUST_LOG=info".into());
    p["env"] = env.into();
    p["user"] = serde_json::json!({"uid": sc["runAsUser"].as_i64().expect("runAsUser"), "gid": 0});
    p["noNewPrivileges"] = (!sc["allowPrivilegeEscalation"].as_bool().unwrap_or(true)).into();
    p["capabilities"] = serde_json::json!({
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": [], "ambient": [],
    });
    cfg["root"]["readonly"] = sc["readOnlyRootFilesystem"]
        .as_bool()
        .unwrap_or(false)
        .into();
    let volumes = seq_of(&pod["volumes"], "volumes");
    let mut ro_cgroup = false;
    for m in seq_of(&c["volumeMounts"], "volumeMounts") {
        let name = str_of(&m["name"], "volumeMount name");
        let v = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name}"));
        let host = str_of(&v["hostPath"]["path"], "hostPath");
        let source = if host == "/var/log/pods" {
            pod_logs.display().to_string()
        } else {
            host.to_string()
        };
        let ro = m["readOnly"].as_bool().unwrap_or(false);
        ro_cgroup |= host == "/sys/fs/cgroup" && ro;
        let mut opts = vec!["rbind", "rprivate"];
        if ro {
            opts.push("ro");
        }
        cfg["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(serde_json::json!({
                "destination": str_of(&m["mountPath"], "mountPath"),
                "type": "bind",
                "source": source,
                "options": opts,
            }));
    }
    assert!(ro_cgroup, "the host cgroupfs is mounted read-only");
    let linux = &mut cfg["linux"];
    if pod["hostPID"].as_bool() == Some(true) {
        linux["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != "pid");
    }
    assert_eq!(sc["seccompProfile"]["type"].as_str(), Some("Unconfined"));
    if let Some(o) = linux.as_object_mut() {
        o.remove("seccomp");
    }
    linux["cgroupsPath"] = format!("{}/cgtrace-pod", parent.cgroup_path()).into();
    linux["resources"]["memory"]["limit"] =
        k8s_quantity(str_of(&c["resources"]["limits"]["memory"], "memory limit")).into();
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json")).expect("config");

    // A memcg of pod A, dying before the start.
    let (ns, uid_a, uid_b) = (
        "deploy-test",
        "0b6c1f2e-5a4d-4c3b-9a8e-7f6d5c4b3a2a",
        "0b6c1f2e-5a4d-4c3b-9a8e-7f6d5c4b3a2b",
    );
    let pod_dir = |uid: &str| format!("kubepods/besteffort/pod{uid}");
    for (uid, name) in [(uid_a, "before-start"), (uid_b, "after-start")] {
        std::fs::create_dir(pod_logs.join(format!("{ns}_{name}_{uid}"))).expect("pod log dir");
    }
    std::fs::create_dir_all(parent.dir(&memory).join(pod_dir(uid_a))).expect("pod A");
    dying_memcg(
        &parent
            .dir(&memory)
            .join(pod_dir(uid_a))
            .join(format!("{:064x}", 0xa)),
        &work.join("pin-a"),
        4 << 20,
    );

    // The tier cgtrace picks on the host.
    let doctor: serde_json::Value = serde_json::from_str(&stdout_of(
        Command::new(&in_image).args(["doctor", "--json"]),
    ))
    .expect("doctor json");
    let best = doctor["live_tier"].as_str().expect("live_tier").to_string();

    // Run it.
    let stderr_path = work.join("stderr");
    run.child = Some(
        Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("stdout")).expect("stdout"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr"))
            .spawn()
            .expect("runc (Debian's runc)"),
    );
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The whole line (stderr is read while cgtrace writes it).
    let attached_line = || {
        let text = stderr();
        let complete = text.rsplit_once('\n').map(|(done, _)| done).unwrap_or("");
        complete
            .lines()
            .find(|l| l.starts_with("cgtrace: attached"))
            .map(str::to_string)
    };
    while attached_line().is_none() {
        if let Some(st) = run.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!(
                "the container exited ({st}) before attaching:\n{}",
                stderr()
            );
        }
        assert!(Instant::now() < deadline, "not attached:\n{}", stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = attached_line().unwrap_or_default();
    assert!(
        line.starts_with(&format!("cgtrace: attached: tier {best} ")),
        "attached on the best tier ({best}): {line}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&stdout_of(Command::new("runc").args(["state", &id])))
            .expect("runc state");
    let pid = state["pid"].as_i64().expect("pid").to_string();
    let in_pod_net = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.args(["--target", &pid, "--net", "--"]).args(args);
        c
    };
    stdout_of(&mut in_pod_net(&["ip", "link", "set", "lo", "up"]));
    let get = |path: &str| -> (String, String) {
        let out = in_pod_net(&[
            "curl",
            "--silent",
            "--max-time",
            "5",
            "--write-out",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };

    // Pod B, made after the start: its memcg goes dying too.
    std::fs::create_dir_all(parent.dir(&memory).join(pod_dir(uid_b))).expect("pod B");
    dying_memcg(
        &parent
            .dir(&memory)
            .join(pod_dir(uid_b))
            .join(format!("{:064x}", 0xb)),
        &work.join("pin-b"),
        4 << 20,
    );

    let pod_series = |metrics: &str, uid: &str, name: &str| {
        metrics.lines().any(|l| {
            l.starts_with("cgtrace_pod_dying_memcgs{")
                && l.contains(&format!("pod_uid=\"{uid}\""))
                && l.contains(&format!("name=\"{name}\""))
                && l.contains(&format!("namespace=\"{ns}\""))
                && l.ends_with(" 1")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let (health, _) = get("/healthz");
        let (code, metrics) = get("/metrics");
        if health == "200"
            && code == "200"
            && pod_series(&metrics, uid_a, "before-start")
            && pod_series(&metrics, uid_b, "after-start")
        {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "healthz {health}, metrics {code}:\n{metrics}\nstderr:\n{}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        metrics.contains(&format!("tier=\"{best}\"")),
        "cgtrace_attached_info names the tier:\n{metrics}"
    );
    let err = stderr();
    assert!(
        err.contains("start-up walk (BPF_PROG_TEST_RUN)"),
        "the walk ran without writing to cgroupfs:\n{err}"
    );
    assert!(!err.contains("walk trigger"), "{err}");

    // SIGTERM: a clean exit, as the kubelet stops it.
    stdout_of(Command::new("runc").args(["kill", &id, "TERM"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = run.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        stderr()
    );
    run.child = None;
    stdout_of(Command::new("runc").args(["delete", "--force", &id]));

    // The same container without CAP_PERFMON: cgtrace's error names it and what it is for.
    let without: Vec<&String> = caps.iter().filter(|c| *c != "CAP_PERFMON").collect();
    cfg["process"]["capabilities"] = serde_json::json!({
        "bounding": without, "effective": without, "permitted": without,
        "inheritable": [], "ambient": [],
    });
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json")).expect("config");
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("runc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran without CAP_PERFMON:\n{err}");
    assert!(
        err.contains("missing: CAP_PERFMON (to attach tracing programs"),
        "the error names the capability:\n{err}"
    );
    drop(run);
    drop(parent);
}

/// Files (not directories) under `root`, relative to it.
fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// `systemd-analyze verify` (Debian's systemd) accepts the unit without a word, in a root of
/// its own: the host's unit directory, the unit, and cgtrace at the ExecStart path.
#[test]
fn systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(!ci(), "systemd-analyze missing (Debian's systemd package)");
        eprintln!("skipping systemd_unit_verifies: no systemd-analyze");
        return;
    };
    assert!(version.status.success());
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sdroot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("usr/local/bin")).expect("root");
    std::fs::create_dir_all(root.join("etc/systemd/system")).expect("root");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).expect("root");
    stdout_of(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(root.join("usr/lib/systemd/")),
    );
    std::fs::copy(cgtrace_bin(), root.join("usr/local/bin/cgtrace")).expect("binary");
    std::fs::copy(
        workspace().join("deploy/systemd/cgtrace.service"),
        root.join("etc/systemd/system/cgtrace.service"),
    )
    .expect("unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/etc/systemd/system/cgtrace.service")
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&root);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
