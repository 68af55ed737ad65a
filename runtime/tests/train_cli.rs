//! `hybrid-runtime train` as the operator's Job runs it: exit codes, result JSON, published
//! revisions, and what happens on bad input.

mod train_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    result: Value,
    stderr: String,
}

fn train(output: &Path, dataset: &Path, extra: &[String]) -> Run {
    let result_path = output.with_extension("result.json");
    let out = Command::new(train_support::runtime_bin())
        .arg("train")
        .arg("--base-model")
        .arg(train_support::smollm2_gguf())
        .arg("--dataset")
        .arg(dataset)
        .arg("--output-dir")
        .arg(output)
        .arg("--result-path")
        .arg(&result_path)
        .args(extra)
        .output()
        .expect("runs hybrid-runtime");
    let raw = std::fs::read_to_string(&result_path).unwrap_or_default();
    Run {
        code: out.status.code().unwrap_or(-1),
        result: serde_json::from_str(&raw).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Small, fast settings; `overrides` replace flags of the same name.
fn quick(overrides: &[(&str, &str)]) -> Vec<String> {
    let mut flags: Vec<(&str, &str)> = vec![
        ("--max-steps", "4"),
        ("--learning-rate", "3e-3"),
        ("--batch-size", "2"),
        ("--rank", "8"),
        ("--eval-fraction", "0.2"),
        ("--eval-every", "2"),
        ("--warmup-ratio", "0.1"),
        ("--seed", "7"),
        ("--max-seq-len", "96"),
        ("--dropout", "0.05"),
    ];
    for (k, v) in overrides {
        match flags.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v,
            None => flags.push((k, v)),
        }
    }
    flags
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn training_learns_publishes_a_revision_and_is_reproducible() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out1 = tmp.path().join("out1");
    let progress = tmp.path().join("progress.json");
    let progress_arg = progress.to_string_lossy().into_owned();
    let args = quick(&[("--progress-path", progress_arg.as_str())]);
    let first = train(&out1, &train_support::fixture("tiny-chat.jsonl"), &args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.result["kind"], "TrainResult", "{}", first.result);
    let revision = first.result["revision"]
        .as_str()
        .expect("revision")
        .to_string();
    let dir = out1.join(&revision);
    assert_eq!(
        first.result["artifactUri"],
        format!("file://{}", dir.display())
    );
    assert_eq!(first.result["steps"], 4);
    assert!(
        first.result["tokensPerSecond"]
            .as_f64()
            .is_some_and(|t| t > 0.0)
    );
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "train-report.json",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    assert_eq!(
        entries(&out1),
        vec![dir.clone()],
        "only the published revision, no partial directories"
    );

    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("train-report.json")).expect("report"))
            .expect("json");
    let losses: Vec<f64> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["loss"].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert!(
        losses.last() < losses.first(),
        "training loss must fall: {losses:?}"
    );
    let initial_eval = report["initialEvalLoss"]
        .as_f64()
        .expect("initial eval loss");
    let eval = first.result["evalLoss"].as_f64().expect("eval loss");
    assert!(
        eval < initial_eval,
        "eval loss must fall: {initial_eval} -> {eval}"
    );

    let progress: Value =
        serde_json::from_slice(&std::fs::read(&progress).expect("progress file")).expect("json");
    assert_eq!(progress["step"], 4);
    assert_eq!(progress["totalSteps"], 4);
    assert_eq!(progress["phase"], "done");
    assert!(
        progress["etaSeconds"].is_number() && progress["loss"].is_number(),
        "{progress}"
    );

    // Same inputs → same revision; the second Job reports the published result without retraining.
    let again = train(
        &out1,
        &train_support::fixture("tiny-chat.jsonl"),
        &quick(&[]),
    );
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.result, first.result);

    // Seeded: a fresh run elsewhere trains byte-identical weights.
    let out2 = tmp.path().join("out2");
    let second = train(
        &out2,
        &train_support::fixture("tiny-chat.jsonl"),
        &quick(&[]),
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(second.result["revision"], revision.as_str());
    let w1 = std::fs::read(dir.join("adapter_model.safetensors")).expect("weights");
    let w2 =
        std::fs::read(out2.join(&revision).join("adapter_model.safetensors")).expect("weights");
    assert!(
        w1 == w2,
        "same seed and inputs must give identical adapters"
    );

    // A different seed is a different revision.
    let other_seed = quick(&[("--seed", "8"), ("--max-steps", "1")]);
    let third = train(
        &out2,
        &train_support::fixture("tiny-chat.jsonl"),
        &other_seed,
    );
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_ne!(third.result["revision"], revision.as_str());
}

fn assert_fails(run: &Run, reason: &str, needle: &str, output: &Path) {
    assert_eq!(run.code, 1, "must exit non-zero: {}", run.stderr);
    assert_eq!(run.result["kind"], "TrainError", "{}", run.result);
    assert_eq!(run.result["reason"], reason, "{}", run.result);
    let message = run.result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
    assert!(
        entries(output).is_empty(),
        "nothing may be published on failure: {:?}",
        entries(output)
    );
}

#[test]
fn malformed_line_is_reported_with_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let run = train(
        &out,
        &train_support::fixture("malformed.jsonl"),
        &quick(&[]),
    );
    assert_fails(&run, "MalformedExample", "malformed.jsonl:3:", &out);
}

#[test]
fn empty_dataset_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let run = train(&out, &train_support::fixture("empty.jsonl"), &quick(&[]));
    assert_fails(&run, "EmptyDataset", "empty.jsonl", &out);
}

#[test]
fn overlong_example_fails_unless_skipping_is_asked_for() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let run = train(&out, &train_support::fixture("overlong.jsonl"), &quick(&[]));
    assert_fails(&run, "ExampleTooLong", "overlong.jsonl:2:", &out);

    let skip = quick(&[("--skip-overlong", ""), ("--max-steps", "1")]);
    let run = train(&out, &train_support::fixture("overlong.jsonl"), &skip);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let dir = out.join(run.result["revision"].as_str().expect("revision"));
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("train-report.json")).expect("report"))
            .expect("json");
    assert_eq!(report["skippedOverlong"], 1);
    assert_eq!(report["trainExamples"], 1);
}

#[test]
fn invalid_settings_and_missing_model_fail_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let bad = quick(&[("--rank", "0")]);
    let run = train(&out, &train_support::fixture("tiny-chat.jsonl"), &bad);
    assert_fails(&run, "InvalidConfig", "rank", &out);

    let result_path = tmp.path().join("missing.result.json");
    let status = Command::new(train_support::runtime_bin())
        .args([
            "train",
            "--base-model",
            "/nonexistent/model.gguf",
            "--dataset",
        ])
        .arg(train_support::fixture("tiny-chat.jsonl"))
        .arg("--output-dir")
        .arg(&out)
        .arg("--result-path")
        .arg(&result_path)
        .status()
        .expect("runs");
    assert_eq!(status.code(), Some(1));
    let result: Value =
        serde_json::from_slice(&std::fs::read(&result_path).expect("result")).expect("json");
    assert_eq!(result["reason"], "BaseModelUnreadable", "{result}");
}
