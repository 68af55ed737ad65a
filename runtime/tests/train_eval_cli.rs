//! `hybrid-runtime eval` end to end on the packaged SmolLM2.

mod train_support;

use std::process::Command;

#[test]
fn eval_scores_answers_and_format_compliance() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report_path = tmp.path().join("report.json");
    let out = Command::new(train_support::runtime_bin())
        .arg("eval")
        .arg("--base-model")
        .arg(train_support::smollm2_gguf())
        .arg("--dataset")
        .arg(train_support::fixture("qa.jsonl"))
        .args(["--max-new-tokens", "12"])
        .arg("--output")
        .arg(&report_path)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    assert_eq!(report["kind"], "EvalResult");
    assert_eq!(report["items"], 2);
    let items = report["perItem"].as_array().expect("items");
    // The f32 base answers "The capital of France is Paris." (see reference measurements).
    assert!(
        items[0]["prediction"]
            .as_str()
            .unwrap_or_default()
            .contains("Paris"),
        "{report}"
    );
    assert_eq!(items[0]["answerContained"], true, "{report}");
    assert_eq!(items[1]["formatOk"], false, "{report}");
    assert_eq!(report["formatCompliance"], 0.5, "{report}");

    let bad = Command::new(train_support::runtime_bin())
        .arg("eval")
        .arg("--base-model")
        .arg(train_support::smollm2_gguf())
        .arg("--dataset")
        .arg(train_support::fixture("malformed.jsonl"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        stdout.contains("MalformedExample") && stdout.contains("malformed.jsonl:1"),
        "{stdout}"
    );
}
