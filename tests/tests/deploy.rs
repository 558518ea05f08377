//! The deployment files under `deploy/` parse, fit together, and use only `cgtrace` flags the
//! binary accepts: the container args of the DaemonSet, the node-problem-detector plugin args
//! and the systemd unit's `ExecStart` are checked against `cgtrace <subcommand> --help`.
//!
//! The binary is built first (`cargo build -p cgtrace --bin cgtrace`, a no-op when it is up to
//! date), so the flags checked are those of the current source; `CGTRACE_BIN` overrides it.
use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::{Mutex, OnceLock},
};

use integration_tests::binary::{cgtrace_bin, workspace};
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
