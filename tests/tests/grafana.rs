//! The Grafana dashboard (`deploy/grafana/cgtrace.json`) and the alert rules
//! (`deploy/prometheus/*.yaml`) against a real Prometheus.
//!
//! * `dashboard_is_a_grafana_model`: the JSON model's structure, variables, grid, and that its
//!   queries name only metrics cgtrace exports (and all of them).
//! * `promtool_checks_and_unit_tests_every_alert`: `promtool check rules` and `promtool test
//!   rules deploy/prometheus/tests/*.yaml`, and that those tests make every alert fire and not
//!   fire.
//! * `every_panel_query_and_alert_expression_has_series`: Debian's `prometheus` on loopback
//!   scrapes a real `cgtrace attach --metrics` every second during real churn (a storm of
//!   short-lived cgroups, kubelet-style pod cgroups, one dying memcg per pod, pinned by tmpfs pages,
//!   and a real OOM kill of a container at its memory limit in the first pod).
//!   Then, through the HTTP API, every variable query gives values, and every panel query (the
//!   variables substituted as Grafana would: first the defaults, then one value of each) gives at
//!   least one series, as an instant and as a range query. Every alert expression parses and
//!   evaluates; it must select series once its threshold comparisons are made `bool` (what an
//!   alert compares is there — whether it is over the threshold is promtool's job, with
//!   synthetic series), and an `absent(X)` alert must be quiet while `X` has series.
//!
//! Prometheus and promtool come from `cargo xtask setup`; without them the tests skip, and with
//! `CI=true` they fail.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use integration_tests::{
    Scratch,
    binary::{Running, free_port, have_tool, spawn_attached, workspace},
    cgroup::{PinFiles, TestParent, dying_memcg, privileged},
};
use serde::Deserialize;
use serde_json::Value;

const DASHBOARD: &str = "deploy/grafana/cgtrace.json";

/// The OOM kill's hog: this test binary re-run with only this test selected.
#[test]
fn oom_hog() {
    integration_tests::oom::hog_main();
}
/// Prometheus scrapes (and evaluates the rules) this often in the test.
const SCRAPE_INTERVAL_S: u64 = 1;

fn dashboard() -> Value {
    let path = workspace().join(DASHBOARD);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel, rows' nested panels too.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// One query of one panel.
struct Target {
    panel: String,
    ref_id: String,
    expr: String,
    legend: String,
    instant: bool,
}

fn targets(d: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    for p in panels(d) {
        if p["type"] == "row" {
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Target {
                panel: format!("panel {} {:?}", p["id"], p["title"].as_str().unwrap_or("")),
                ref_id: t["refId"].as_str().unwrap_or("").to_string(),
                expr: t["expr"].as_str().expect("a target with expr").to_string(),
                legend: t["legendFormat"].as_str().unwrap_or("").to_string(),
                instant: t["instant"].as_bool() == Some(true) && t["range"].as_bool() != Some(true),
            });
        }
    }
    out
}

/// `$name` and `${name}` (with an optional `:format`) in `s`.
fn variables_used(s: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (start, braced) = if b.get(i + 1) == Some(&b'{') {
                (i + 2, true)
            } else {
                (i + 1, false)
            };
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > start {
                out.insert(s[start..j].to_string());
            }
            if braced {
                while j < b.len() && b[j] != b'}' {
                    j += 1;
                }
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces `$name` and `${name}` with `value` (longest names first, so `$__range` does not
/// eat `$__range_s`).
fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = s.to_string();
    for n in names {
        out = out.replace(&format!("${{{n}}}"), &vars[n]);
        out = out.replace(&format!("${n}"), &vars[n]);
    }
    out
}

/// The metric names in a PromQL expression: identifiers outside label matchers, strings and
/// range brackets that are not function names (followed by `(`), keywords, label lists of
/// `by (…)`/`on (…)`-style clauses, parts of numbers or variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
    ];
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    let (mut braces, mut brackets) = (0usize, 0usize);
    let mut in_string: Option<u8> = None;
    let mut label_list = false;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = in_string {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                in_string = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => in_string = Some(c),
            b'{' => braces += 1,
            b'}' => braces = braces.saturating_sub(1),
            b'[' => brackets += 1,
            b']' => brackets = brackets.saturating_sub(1),
            b')' => label_list = false,
            _ => {}
        }
        let word_char = |x: u8| x.is_ascii_alphanumeric() || x == b'_' || x == b':';
        if c.is_ascii_digit() || c == b'.' || c == b'$' {
            // A number (1e-9, 0.99) or a variable: not a name.
            i += 1;
            while i < b.len() && (word_char(b[i]) || b[i] == b'.') {
                i += 1;
            }
            continue;
        }
        if word_char(c) {
            let start = i;
            while i < b.len() && word_char(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = expr[i..].trim_start().bytes().next();
            if braces > 0 || brackets > 0 || label_list {
                continue;
            }
            if AGGREGATIONS.contains(&word) {
                // `sum by (le) (…)`: followed by a clause, not `(`.
            } else if KEYWORDS.contains(&word) {
                label_list = next == Some(b'(')
                    && !matches!(word, "bool" | "and" | "or" | "unless" | "atan2");
            } else if next != Some(b'(') {
                out.insert(word.to_string());
            }
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn metric_names_are_found() {
    let got = metric_names(
        r#"histogram_quantile(0.99, sum by (le, qos) (rate(cgtrace_x_bucket{a="b(c)"}[$__rate_interval]))) + on (job) group_left up > bool 1e-9 and sum(cgtrace_y offset 5m) without (a)"#,
    );
    let want: BTreeSet<String> = ["cgtrace_x_bucket", "up", "cgtrace_y"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

/// A cgtrace metric name as exported: the family, or a histogram family's `_bucket`/`_sum`/
/// `_count`.
fn family_of(name: &str) -> Option<&'static str> {
    let known = cgtrace::pipeline::metrics::METRIC_NAMES;
    known.iter().copied().find(|f| {
        *f == name
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s) == Some(f))
    })
}

#[test]
fn dashboard_is_a_grafana_model() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["id"].is_null(), "no instance id in a shipped model");
    assert!(d["time"]["from"].as_str().is_some() && d["time"]["to"] == "now");

    // Variables: a Prometheus data source, then node and pod (and the others) over it.
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let by_name: BTreeMap<&str, &Value> = vars
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name"), v))
        .collect();
    assert_eq!(by_name.len(), vars.len(), "variable names are unique");
    let ds = by_name.get("datasource").expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["node", "pod"] {
        let v = by_name
            .get(name)
            .unwrap_or_else(|| panic!("a {name} variable"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["multi"], true, "{name}");
    }
    assert!(
        by_name["node"]["definition"]
            .as_str()
            .is_some_and(|q| q.contains("instance")),
        "node is the Prometheus instance"
    );
    // Variables only refer to variables defined before them (Grafana resolves in order).
    let mut defined = BTreeSet::new();
    for v in vars {
        let def = v["definition"].as_str().unwrap_or("");
        for used in variables_used(def) {
            assert!(
                defined.contains(&used),
                "{:?} uses ${used} before it is defined",
                v["name"]
            );
        }
        defined.insert(v["name"].as_str().expect("name").to_string());
    }

    // Panels: unique ids, on the 24-column grid without overlaps, on the data source variable.
    let mut ids = BTreeSet::new();
    let mut cells: BTreeSet<(u64, u64)> = BTreeSet::new();
    for p in panels(&d) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "panel {id}: gridPos {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panel {id} overlaps another at ({cx}, {cy})"
                );
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["title"].as_str().is_some_and(|t| !t.is_empty()),
            "panel {id} title"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
        let ts = p["targets"].as_array().expect("targets");
        assert!(!ts.is_empty(), "panel {id} has no query");
        let mut refs = BTreeSet::new();
        for t in ts {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "panel {id}: refIds"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
        }
        if p["type"] == "heatmap" {
            for t in ts {
                let e = t["expr"].as_str().expect("expr");
                assert_eq!(t["format"], "heatmap", "panel {id}");
                assert!(
                    e.contains("_bucket") && e.contains("by (le)"),
                    "panel {id}: {e}"
                );
            }
            assert_eq!(
                p["options"]["calculate"], false,
                "panel {id}: buckets come from cgtrace"
            );
        }
    }

    // Queries: only variables the dashboard defines or Grafana provides; only metrics cgtrace
    // exports (and Prometheus' own `up`), and every family cgtrace exports is on a panel.
    let builtins = ["__rate_interval", "__interval", "__range"];
    let mut families = BTreeSet::new();
    for t in targets(&d) {
        for v in variables_used(&t.expr) {
            assert!(
                defined.contains(&v) || builtins.contains(&v.as_str()),
                "{} {}: unknown variable ${v}",
                t.panel,
                t.ref_id
            );
        }
        for m in metric_names(&t.expr) {
            if m == "up" {
                continue;
            }
            let f = family_of(&m)
                .unwrap_or_else(|| panic!("{} {}: {m} is not a cgtrace metric", t.panel, t.ref_id));
            families.insert(f);
        }
    }
    let all: BTreeSet<&str> = cgtrace::pipeline::metrics::METRIC_NAMES
        .iter()
        .copied()
        .collect();
    let unused: Vec<_> = all.difference(&families).collect();
    assert!(unused.is_empty(), "metrics on no panel: {unused:?}");
}

// ---- alert rules ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
}

#[derive(Deserialize)]
struct RuleTestFile {
    tests: Vec<RuleTestGroup>,
}

#[derive(Deserialize)]
struct RuleTestGroup {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde_norway::Value>,
}

/// The `*.yaml` files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    out.sort();
    out
}

fn rule_files() -> Vec<PathBuf> {
    let files = yaml_files(&workspace().join("deploy/prometheus"));
    assert!(!files.is_empty(), "no rule files in deploy/prometheus");
    files
}

/// One rule of a rule file.
struct LoadedRule {
    file: String,
    name: String,
    expr: String,
    alert: bool,
}

/// Every rule of every rule file.
fn rules() -> Vec<LoadedRule> {
    let mut out = Vec::new();
    for f in rule_files() {
        let text = fs::read_to_string(&f).expect("read rules");
        let rf: RuleFile =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for g in rf.groups {
            for r in g.rules {
                let alert = r.alert.is_some();
                let name = r.alert.or(r.record).expect("alert or record");
                out.push(LoadedRule {
                    file: f.display().to_string(),
                    name,
                    expr: r.expr,
                    alert,
                });
            }
        }
    }
    out
}

fn run_promtool(args: &[&std::ffi::OsStr]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool {args:?}:\n{text}");
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
}

#[test]
fn promtool_checks_and_unit_tests_every_alert() {
    let test = "promtool_checks_and_unit_tests_every_alert";
    if !have_tool(test, "promtool") {
        return;
    }
    let files = rule_files();
    let mut check: Vec<&std::ffi::OsStr> = vec!["check".as_ref(), "rules".as_ref()];
    check.extend(files.iter().map(|f| f.as_os_str()));
    run_promtool(&check);

    let tests = yaml_files(&workspace().join("deploy/prometheus/tests"));
    assert!(
        !tests.is_empty(),
        "no promtool tests in deploy/prometheus/tests"
    );
    let mut unit: Vec<&std::ffi::OsStr> = vec!["test".as_ref(), "rules".as_ref()];
    unit.extend(tests.iter().map(|f| f.as_os_str()));
    run_promtool(&unit);

    // Each alert has a case where it fires and one where it does not.
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for f in &tests {
        let text = fs::read_to_string(f).expect("read tests");
        let tf: RuleTestFile =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for t in tf.tests.iter().flat_map(|g| &g.alert_rule_test) {
            if t.exp_alerts.is_empty() {
                quiet.insert(t.alertname.clone());
            } else {
                fires.insert(t.alertname.clone());
            }
        }
    }
    for r in rules().into_iter().filter(|r| r.alert) {
        let (file, name) = (&r.file, &r.name);
        assert!(
            fires.contains(name),
            "{file}: no promtool case where {name} fires"
        );
        assert!(
            quiet.contains(name),
            "{file}: no promtool case where {name} stays quiet"
        );
    }
}

/// `expr` with `bool` after each comparison operator outside label matchers, strings and range
/// brackets: the same expression, but comparisons give 0/1 for every series instead of
/// dropping the series below the threshold.
fn with_bool_comparisons(expr: &str) -> String {
    let b = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() + 16);
    let mut i = 0;
    let mut depth_brace = 0usize;
    let mut depth_bracket = 0usize;
    let mut in_string: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = in_string {
            out.push(c as char);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            if c == q {
                in_string = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => in_string = Some(c),
            b'{' => depth_brace += 1,
            b'}' => depth_brace = depth_brace.saturating_sub(1),
            b'[' => depth_bracket += 1,
            b']' => depth_bracket = depth_bracket.saturating_sub(1),
            _ => {}
        }
        if depth_brace == 0 && depth_bracket == 0 {
            let two = expr.get(i..i + 2).unwrap_or("");
            let op = if ["==", "!=", ">=", "<="].contains(&two) {
                Some(two)
            } else if c == b'>' || c == b'<' {
                Some(&expr[i..i + 1])
            } else {
                None
            };
            if let Some(op) = op {
                out.push_str(op);
                i += op.len();
                if !expr[i..].trim_start().starts_with("bool") {
                    out.push_str(" bool");
                }
                continue;
            }
        }
        out.push(c as char);
        i += 1;
    }
    out
}

#[test]
fn comparisons_become_bool() {
    assert_eq!(
        with_bool_comparisons(r#"deriv(x{state="a>b"}[1h]) * 3600 > 500 and x{s!="d"} >= bool 2"#),
        r#"deriv(x{state="a>b"}[1h]) * 3600 > bool 500 and x{s!="d"} >= bool 2"#
    );
    assert_eq!(
        with_bool_comparisons("up == 0 and on (job) y"),
        "up == bool 0 and on (job) y"
    );
}

/// The argument of an `absent(…)`/`absent_over_time(…)` that is the whole expression.
fn absent_argument(expr: &str) -> Option<&str> {
    let e = expr.trim();
    ["absent(", "absent_over_time("]
        .iter()
        .find_map(|f| e.strip_prefix(f))
        .and_then(|rest| rest.strip_suffix(')'))
}

// ---- a real Prometheus scraping a real cgtrace ---------------------------------------------

/// Debian's Prometheus on a free loopback port with its own config and data directory.
struct Prometheus {
    /// Ended on drop.
    proc: Running,
    base: String,
    log: PathBuf,
    agent: ureq::Agent,
}

impl Prometheus {
    fn start(dir: &Path, scrape_target: &str, rule_files: &[PathBuf]) -> Prometheus {
        let port = free_port();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|f| format!("  - '{}'\n", f.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {SCRAPE_INTERVAL_S}s\n  scrape_timeout: {SCRAPE_INTERVAL_S}s\n  \
             evaluation_interval: {SCRAPE_INTERVAL_S}s\nrule_files:\n{}scrape_configs:\n  - job_name: cgtrace\n    \
             static_configs:\n      - targets: ['{scrape_target}']\n",
            rules.concat()
        );
        let cfg = dir.join("prometheus.yml");
        fs::write(&cfg, config).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let log_file = fs::File::create(&log).expect("create prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut p = Prometheus {
            proc: Running::new("prometheus", child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = p
                .agent
                .get(format!("{}/-/ready", p.base))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return p;
            }
            if let Ok(Some(st)) = p.proc.child.try_wait() {
                panic!(
                    "prometheus exited ({st}) before it was ready:\n{}",
                    p.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 60 s:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of Prometheus's log, for failure messages.
    fn log_text(&self) -> String {
        let all = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// GET `path` with `params`; the `data` of a `status: success` answer, or the error.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {path}: reading the body: {e}"))?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path}: {status}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "GET {path} {params:?}: {status} {}: {}",
                v["errorType"], v["error"]
            ));
        }
        Ok(v["data"].clone())
    }

    /// An instant query at `time` (Unix seconds): its result vector.
    fn query(&self, expr: &str, time: f64) -> Result<Vec<Value>, String> {
        let t = format!("{time:.3}");
        let data = self.api("/api/v1/query", &[("query", expr), ("time", &t)])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// A range query over `[end - span, end]`, one point per scrape.
    fn query_range(&self, expr: &str, end: f64, span: f64) -> Result<Vec<Value>, String> {
        let (s, e) = (format!("{:.3}", end - span), format!("{end:.3}"));
        let step = SCRAPE_INTERVAL_S.to_string();
        let data = self.api(
            "/api/v1/query_range",
            &[("query", expr), ("start", &s), ("end", &e), ("step", &step)],
        )?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// What Grafana's `label_values(selector, label)` asks: `/api/v1/label/<l>/values`.
    fn label_values(&self, label: &str, selector: Option<&str>) -> Result<Vec<String>, String> {
        let path = format!("/api/v1/label/{label}/values");
        let data = match selector {
            Some(s) => self.api(&path, &[("match[]", s)])?,
            None => self.api(&path, &[])?,
        };
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }
}

/// Grafana's Prometheus escaping of a value for a regex matcher inside a PromQL string.
fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        match c {
            '\\' | '^' | '$' | '*' | '+' | '?' | '.' | '(' | ')' | '|' | '{' | '}' | '[' | ']' => {
                out.push_str("\\\\");
                out.push(c);
            }
            '\'' | '"' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Grafana's formatting of a multi-value selection in a regex matcher: `(a|b)`, one value bare.
fn regex_alternation(values: &[String]) -> String {
    let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
    if escaped.len() == 1 {
        escaped[0].clone()
    } else {
        format!("({})", escaped.join("|"))
    }
}

/// `label_values(selector, label)` or `label_values(label)`.
fn parse_label_values(q: &str) -> (Option<String>, String) {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("variable query {q:?} is not label_values(…)"));
    match inner.rsplit_once(',') {
        Some((sel, label)) => (Some(sel.trim().to_string()), label.trim().to_string()),
        None => (None, inner.trim().to_string()),
    }
}

/// A Grafana relative time (`now-6h`) as seconds before now.
fn relative_seconds(from: &str) -> u64 {
    let d = from
        .strip_prefix("now-")
        .expect("time.from is now-<duration>");
    let (n, unit) = d.split_at(d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len()));
    let n: u64 = n.parse().expect("a number");
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        u => panic!("unit {u:?} in {from}"),
    }
}

/// Cgroups made during the test: a storm of short-lived `job-<n>` cgroups (cgtrace's
/// churn_storm detector fires at 10 a second) and crash-looping container cgroups in one pod.
struct Churn {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Churn {
    fn start(parent: PathBuf, crash_pod: PathBuf) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let d = parent.join(format!("job-{n}"));
                if fs::create_dir(&d).is_ok() {
                    let _ = fs::remove_dir(&d);
                }
                if n.is_multiple_of(10) {
                    let c = crash_pod.join(format!("{:064x}", 0xc0ffee_u64 + n));
                    if fs::create_dir(&c).is_ok() {
                        let _ = fs::remove_dir(&c);
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        Churn {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(n) => eprintln!("churn: {n} cgroups made and removed"),
                Err(_) => eprintln!("warning: the churn thread panicked"),
            }
        }
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The queries of one evaluation, and which gave nothing (or failed).
fn evaluate_panels(
    prom: &Prometheus,
    d: &Value,
    vars: &BTreeMap<String, String>,
    time: f64,
) -> Vec<String> {
    let mut problems = Vec::new();
    for t in targets(d) {
        let expr = substitute(&t.expr, vars);
        assert!(
            !expr.contains('$'),
            "{} {}: unsubstituted variable in {expr}",
            t.panel,
            t.ref_id
        );
        match prom.query(&expr, time) {
            Ok(r) if r.is_empty() => {
                problems.push(format!("{} {}: no series for {expr}", t.panel, t.ref_id))
            }
            Ok(r) => {
                // The legend names labels the series have (not ones aggregated away).
                for label in legend_labels(&t.legend) {
                    let missing = r.iter().any(|s| s["metric"][label.as_str()].is_null());
                    if missing && !MAY_BE_EMPTY.contains(&label.as_str()) {
                        problems.push(format!(
                            "{} {}: legend {:?} names {label}, which {expr} does not keep",
                            t.panel, t.ref_id, t.legend
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{} {}: {e}", t.panel, t.ref_id)),
        }
        if !t.instant {
            match prom.query_range(&expr, time, 10.0) {
                Ok(r) if r.is_empty() => problems.push(format!(
                    "{} {}: no series in a range query for {expr}",
                    t.panel, t.ref_id
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("{} {} (range): {e}", t.panel, t.ref_id)),
            }
        }
    }
    problems
}

/// Labels cgtrace may export empty, which Prometheus then drops from the series: pod names and
/// namespaces where `/var/log/pods` was not readable (as for the test's pods).
const MAY_BE_EMPTY: &[&str] = &["namespace", "name"];

/// The `{{label}}` names of a legend format.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}").map(|(l, _)| l.trim().to_string()))
        .collect()
}

/// Variable name → the text Grafana puts in its place.
type Substitutions = BTreeMap<String, String>;

/// The variables' values (and each query variable's options): with `defaults` what the
/// dashboard selects when opened (All, or the saved selection among the options), else the
/// first option of each.
fn variable_values(
    prom: &Prometheus,
    d: &Value,
    defaults: bool,
    builtins: &BTreeMap<String, String>,
) -> Result<(Substitutions, BTreeMap<String, Vec<String>>), String> {
    let mut vars = builtins.clone();
    let mut options = BTreeMap::new();
    for v in d["templating"]["list"].as_array().expect("templating") {
        let name = v["name"].as_str().expect("name").to_string();
        if v["type"] != "query" {
            continue;
        }
        let def = v["definition"].as_str().expect("definition");
        let (sel, label) = parse_label_values(&substitute(def, &vars));
        let values = prom.label_values(&label, sel.as_deref())?;
        if values.is_empty() {
            return Err(format!("variable {name}: {def} has no values"));
        }
        let current: Vec<String> = match &v["current"]["value"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        let value = if defaults && current.iter().any(|c| c == "$__all") {
            match v["allValue"].as_str() {
                Some(a) if !a.is_empty() => a.to_string(),
                _ => regex_alternation(&values),
            }
        } else if defaults {
            let kept: Vec<String> = current
                .iter()
                .filter(|c| values.contains(c))
                .cloned()
                .collect();
            if kept.is_empty() {
                regex_alternation(&values[..1])
            } else {
                regex_alternation(&kept)
            }
        } else {
            regex_alternation(&values[..1])
        };
        vars.insert(name.clone(), value);
        options.insert(name, values);
    }
    Ok((vars, options))
}

#[test]
fn every_panel_query_and_alert_expression_has_series() {
    let test = "every_panel_query_and_alert_expression_has_series";
    if !privileged(test) || !have_tool(test, "prometheus") {
        return;
    }
    let d = dashboard();
    let hierarchies = cgtrace::kernel::hierarchy::Hierarchies::load().expect("hierarchies");
    let mem = hierarchies
        .with_controller("memory")
        .expect("a hierarchy with the memory controller");
    let mem_label = mem.label();
    let mount = mem.mount.clone().expect("memory hierarchy mounted");

    // Declared first, dropped last: the cgroups go after everything that uses them.
    let parent = TestParent::new("grafana", &[&mount]).expect("test parent");
    let scratch = Scratch::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "grafana");
    let mut pins = PinFiles::default();
    let pin_dir = PinFiles::dir(scratch.path());

    let cgtrace_port = free_port();
    let target = format!("127.0.0.1:{cgtrace_port}");
    let prom = Prometheus::start(scratch.path(), &target, &rule_files());
    let (cgtrace, cgtrace_err) = spawn_attached(
        &[
            "attach",
            "--metrics",
            &target,
            "--subtree",
            &parent.cgroup_path(),
            "--interval",
            "1h",
        ],
        Stdio::null(),
    );
    let cgtrace = Running::new("cgtrace", cgtrace);

    // Kubelet-style pods (cgroupfs driver), each with one container memcg that a file's pages
    // keep dying: the per-pod series.
    let top = parent.dir(&mount);
    let pods = [
        ("burstable", "0b0c1a2e-1111-4c3b-9d4e-5f6a7b8c9d01"),
        ("besteffort", "0b0c1a2e-2222-4c3b-9d4e-5f6a7b8c9d02"),
    ];
    fs::create_dir(top.join("kubepods")).expect("mkdir kubepods");
    for (i, (qos, uid)) in pods.iter().enumerate() {
        let qdir = top.join("kubepods").join(qos);
        fs::create_dir(&qdir).expect("mkdir qos");
        let pod = qdir.join(format!("pod{uid}"));
        fs::create_dir(&pod).expect("mkdir pod");
        let file = pins.add(&pin_dir, &format!("cgtrace-grafana-pin-{i}"));
        dying_memcg(
            &pod.join(format!("{:064x}", 0xdead_0000_u64 + i as u64)),
            &file,
            4 << 20,
        );
    }
    let crash_pod = top
        .join("kubepods/burstable")
        .join(format!("pod{}", pods[0].1));
    // A real OOM kill in the first pod: a container at its memory limit (the OOM kill series).
    let mem_root = integration_tests::oom::MemRoot::load(&hierarchies);
    let oom_ctr = crash_pod.join(format!("{:064x}", 0x00c0_ffee_0000_u64 + 77));
    mem_root.mkdir(&oom_ctr);
    mem_root.set_limit(&oom_ctr, 32 << 20);
    let hog = integration_tests::oom::Hog::start_in(&oom_ctr, 512 << 20);
    let st = hog.wait(Duration::from_secs(60));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL),
        "the hog was not OOM-killed: {st}"
    );
    let churn = Churn::start(top.clone(), crash_pod);
    let pod_uids: BTreeSet<String> = pods.iter().map(|(_, u)| u.to_string()).collect();

    // Grafana's interval variables, for the dashboard's range and a data source whose scrape
    // interval is this Prometheus's: $__interval at its floor, the scrape interval, and
    // $__rate_interval = max($__interval + scrape interval, 4 × scrape interval).
    let range_s = relative_seconds(d["time"]["from"].as_str().expect("time.from"));
    let interval_s = SCRAPE_INTERVAL_S;
    let rate_interval_s = (interval_s + SCRAPE_INTERVAL_S).max(4 * SCRAPE_INTERVAL_S);
    let builtins: BTreeMap<String, String> = [
        ("__interval", format!("{interval_s}s")),
        ("__rate_interval", format!("{rate_interval_s}s")),
        ("__range", format!("{range_s}s")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    // Wait until every panel has data (the pods' dying memcgs, the churn storm's verdict and a
    // few scrapes for the rates), at most a minute.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let (mut vars, mut options, mut problems);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let t = now_s();
        match variable_values(&prom, &d, true, &builtins) {
            Ok((v, o)) => {
                problems = evaluate_panels(&prom, &d, &v, t);
                (vars, options) = (v, o);
            }
            Err(e) => {
                problems = vec![e];
                (vars, options) = (BTreeMap::new(), BTreeMap::new());
            }
        }
        if problems.is_empty() || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        problems.is_empty(),
        "after {:?} of churn:\n{}\nprometheus log:\n{}",
        started.elapsed(),
        problems.join("\n"),
        prom.log_text()
    );
    eprintln!(
        "all {} panel queries have series after {:?}; variables {vars:?}",
        targets(&d).len(),
        started.elapsed()
    );
    // The variables offer what the test made.
    assert_eq!(options["node"], vec![target.clone()], "node variable");
    assert_eq!(
        options["pod"].iter().cloned().collect::<BTreeSet<_>>(),
        pod_uids,
        "pod variable"
    );
    assert!(
        options["hierarchy"].contains(&mem_label),
        "{:?}",
        options["hierarchy"]
    );

    // One concrete value of each variable (a node's escaped address, one pod) as well.
    let (one, _) = variable_values(&prom, &d, false, &builtins).expect("variables");
    let problems = evaluate_panels(&prom, &d, &one, now_s());
    assert!(
        problems.is_empty(),
        "with {one:?}:\n{}",
        problems.join("\n")
    );

    // The storm of job-<n> cgroups is a churn_storm verdict (a warning: under 100 a second),
    // once its window holds 100 of them (2 s at the churn's pace, longer on a loaded machine:
    // the panels can have their series before).
    let deadline = Instant::now() + Duration::from_secs(30);
    let verdicts = loop {
        let v = prom
            .query("cgtrace_verdict{detector=\"churn_storm\"} == 2", now_s())
            .expect("verdict query");
        if v.len() == 1 || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(verdicts.len(), 1, "churn_storm verdict: {verdicts:?}");

    // Alert expressions: each parses and evaluates; with its comparisons made `bool` it selects
    // series; an absent() alert is quiet while its argument has series.
    let t = now_s();
    let mut problems = Vec::new();
    for LoadedRule {
        file, name, expr, ..
    } in rules()
    {
        if let Err(e) = prom.query(&expr, t) {
            problems.push(format!("{file} {name}: {e}"));
            continue;
        }
        if let Some(arg) = absent_argument(&expr) {
            match prom.query(arg, t) {
                Ok(r) if r.is_empty() => problems.push(format!("{name}: no series for {arg}")),
                Ok(_) => {}
                Err(e) => problems.push(format!("{name}: {e}")),
            }
            match prom.query(&expr, t) {
                Ok(r) if !r.is_empty() => {
                    problems.push(format!("{name}: {expr} fires while cgtrace is scraped"))
                }
                _ => {}
            }
            continue;
        }
        let unfiltered = with_bool_comparisons(&expr);
        match prom.query(&unfiltered, t) {
            Ok(r) if r.is_empty() => problems.push(format!("{name}: no series for {unfiltered}")),
            Ok(r) => eprintln!("{name}: {} series for {unfiltered}", r.len()),
            Err(e) => problems.push(format!("{name}: {unfiltered}: {e}")),
        }
    }
    // Prometheus itself loaded and evaluated every rule without error.
    let loaded = prom.api("/api/v1/rules", &[]).expect("rules API");
    let mut evaluated = BTreeSet::new();
    for g in loaded["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("").to_string();
            if r["health"] != "ok" {
                problems.push(format!(
                    "rule {name}: health {} {}",
                    r["health"], r["lastError"]
                ));
            }
            evaluated.insert(name);
        }
    }
    for LoadedRule { name, .. } in rules() {
        if !evaluated.contains(&name) {
            problems.push(format!("rule {name} not loaded by prometheus"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Once the churn stopped (its crash-looping containers are dying for a moment each), the
    // pods hold exactly the one pinned memcg the test left in each.
    drop(churn);
    let want: BTreeMap<String, String> = pod_uids
        .iter()
        .map(|u| (u.clone(), "1".to_string()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        std::thread::sleep(Duration::from_secs(2));
        let per_pod = prom
            .query(
                &format!("cgtrace_pod_dying_memcgs{{instance=\"{target}\"}}"),
                now_s(),
            )
            .expect("per-pod query");
        let got: BTreeMap<String, String> = per_pod
            .iter()
            .map(|s| {
                (
                    s["metric"]["pod_uid"].as_str().unwrap_or("").to_string(),
                    s["value"][1].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if got == want || Instant::now() > deadline {
            break got;
        }
    };
    assert_eq!(got, want, "dying memcgs per pod");
    drop(cgtrace);
    let err = cgtrace_err.join().unwrap_or_default();
    assert!(!err.contains("panicked"), "cgtrace: {err}");
}
