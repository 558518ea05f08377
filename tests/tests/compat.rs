//! Sessions recorded by older cgtrace versions still replay: a format-version-1 file recorded by
//! cgtrace 0.1.0 (`tests/fixtures/session-v1.cgtrace`, a pod's cgroups made and removed on this
//! kind of machine) replays and reports exactly what that version printed for it
//! (`session-v1.*` beside it, captured with the 0.1.0 binary). Needs no root.
use std::{path::Path, process::Command};

use integration_tests::binary::cgtrace_bin;

const FIXTURE: &str = "fixtures/session-v1.cgtrace";

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
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
    assert_eq!(
        run(&["replay", "--json"]),
        fixture("session-v1.replay.jsonl")
    );
}

#[test]
fn a_version_1_session_replays_as_text_as_it_did() {
    assert_eq!(run(&["replay"]), fixture("session-v1.replay.txt"));
}

#[test]
fn a_version_1_session_reports_as_it_did() {
    assert_eq!(run(&["report"]), fixture("session-v1.report.txt"));
    let old: serde_json::Value =
        serde_json::from_str(&fixture("session-v1.report.json")).expect("old report JSON");
    let new: serde_json::Value =
        serde_json::from_str(&run(&["report", "--json"])).expect("new report JSON");
    assert_eq!(new, old);
}
