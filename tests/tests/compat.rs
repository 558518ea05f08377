//! Sessions recorded by older cgtrace versions still replay: a format-version-1 file recorded by
//! cgtrace 0.1.0 (`tests/fixtures/session-v1.cgtrace`, a pod's cgroups made and removed on this
//! kind of machine) replays and reports exactly what that version printed for it
//! (`session-v1.*` beside it, captured with the 0.1.0 binary), but for what later versions
//! changed on purpose, each named in [`since_0_1`]. Needs no root.
use std::{path::Path, process::Command};

use integration_tests::binary::cgtrace_bin;

const FIXTURE: &str = "fixtures/session-v1.cgtrace";

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What cgtrace printed for the fixture after 0.1.0, on purpose: the summary gained the memcg ID
/// headroom (a line in text, `id_headroom` in JSON); pods whose memcgs were all freed are folded
/// into the totals, no longer listed (memory bounded by what exists); the JSON summary names the
/// buffer (`ring` for this file). Applied to the old output (drop its pods with nothing live or
/// dying) and the new (drop the added headroom and buffer).
fn since_0_1(old: &str, new: &str) -> (String, String) {
    let new: String = new
        .lines()
        .filter(|l| !l.starts_with("-- memcg ID headroom: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut kept = String::new();
    let mut lines = old.lines().peekable();
    while let Some(l) = lines.next() {
        if l == "pods:" {
            let mut block = vec![l.to_string()];
            while let Some(n) = lines.next_if(|n| !n.is_empty()) {
                block.push(n.to_string());
            }
            let gone = block[2..].iter().all(|r| {
                let cols: Vec<&str> = r.split_whitespace().collect();
                cols.first() == Some(&"0") && cols.get(1) == Some(&"0")
            });
            if gone {
                lines.next(); // the blank line after the table
                continue;
            }
            for b in block {
                kept.push_str(&b);
                kept.push('\n');
            }
            continue;
        }
        kept.push_str(l);
        kept.push('\n');
    }
    (kept, new)
}

/// [`since_0_1`] for a JSON value holding a summary (a summary line, or a report).
fn json_since_0_1(old: &mut serde_json::Value, new: &mut serde_json::Value) {
    for (v, is_new) in [(old, false), (new, true)] {
        let s = if v["type"] == "summary" {
            v
        } else if v.get("summary").is_some() {
            &mut v["summary"]
        } else {
            continue;
        };
        let Some(obj) = s.as_object_mut() else {
            continue;
        };
        if is_new {
            obj.remove("id_headroom");
            // The buffer the records came through, since the perf buffer fallback: a session
            // from before it came through the ring buffer.
            assert_eq!(obj.remove("buffer"), Some(serde_json::json!("ring")));
        } else if let Some(serde_json::Value::Array(pods)) = obj.get_mut("pods") {
            pods.retain(|p| p["live"] != 0 || p["dying"] != 0);
        }
    }
}

fn run(args: &[&str]) -> String {
    let session = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let out = Command::new(cgtrace_bin())
        .args(args)
        .arg(&session)
        .output()
        .expect("run cgtrace");
    assert!(
        out.status.success(),
        "cgtrace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn a_version_1_session_replays_as_json_as_it_did() {
    let new = run(&["replay", "--json"]);
    let old = fixture("session-v1.replay.jsonl");
    assert_eq!(new.lines().count(), old.lines().count());
    for (n, o) in new.lines().zip(old.lines()) {
        let mut n: serde_json::Value = serde_json::from_str(n).expect("new JSON line");
        let mut o: serde_json::Value = serde_json::from_str(o).expect("old JSON line");
        json_since_0_1(&mut o, &mut n);
        assert_eq!(n, o);
    }
}

#[test]
fn a_version_1_session_replays_as_text_as_it_did() {
    let (old, new) = since_0_1(&fixture("session-v1.replay.txt"), &run(&["replay"]));
    assert_eq!(new, old);
}

#[test]
fn a_version_1_session_reports_as_it_did() {
    let (old, new) = since_0_1(&fixture("session-v1.report.txt"), &run(&["report"]));
    assert_eq!(new, old);
    let mut old: serde_json::Value =
        serde_json::from_str(&fixture("session-v1.report.json")).expect("old report JSON");
    let mut new: serde_json::Value =
        serde_json::from_str(&run(&["report", "--json"])).expect("new report JSON");
    json_since_0_1(&mut old, &mut new);
    assert_eq!(new, old);
}
