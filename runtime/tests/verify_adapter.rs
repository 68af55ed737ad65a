//! `hybrid-runtime verify-adapter` as the image trainer's Job runs it (after the user's image,
//! on its `/output`): exit codes and the result JSON, on an adapter that `hybrid-runtime train`
//! really wrote for SmolLM2, on that adapter broken in the ways trainer images get it wrong, and
//! on an empty output.

mod train_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    result: Value,
    stdout: String,
    stderr: String,
}

fn verify(output: &Path, result_path: &Path) -> Run {
    let out = Command::new(train_support::runtime_bin())
        .arg("verify-adapter")
        .arg("--output")
        .arg(output)
        .arg("--revision")
        .arg("abcdef0123456789")
        .arg("--artifact-uri")
        .arg("file:///pvc/hybrid-artifacts/adapters/abcdef0123456789")
        .arg("--result-path")
        .arg(result_path)
        .output()
        .expect("runs hybrid-runtime");
    let raw = std::fs::read_to_string(result_path).unwrap_or_default();
    Run {
        code: out.status.code().unwrap_or(-1),
        result: serde_json::from_str(&raw).unwrap_or(Value::Null),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A real adapter: one step of `hybrid-runtime train` on SmolLM2; returns its revision directory.
fn trained_adapter(root: &Path) -> PathBuf {
    let output = root.join("trained");
    let result_path = root.join("train-result.json");
    let out = Command::new(train_support::runtime_bin())
        .arg("train")
        .arg("--base-model")
        .arg(train_support::smollm2_gguf())
        .arg("--dataset")
        .arg(train_support::fixture("tiny-chat.jsonl"))
        .args(["--max-steps", "1", "--rank", "4", "--max-seq-len", "96"])
        .args(["--target-modules", "q_proj,v_proj", "--eval-fraction", "0"])
        .arg("--output-dir")
        .arg(&output)
        .arg("--result-path")
        .arg(&result_path)
        .output()
        .expect("runs hybrid-runtime train");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value =
        serde_json::from_slice(&std::fs::read(&result_path).expect("train result")).expect("json");
    output.join(result["revision"].as_str().expect("revision"))
}

/// A copy of `dir`'s adapter files in a fresh directory, as a trainer image would leave them.
fn copy_adapter(dir: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(dir.join(f), to.join(f)).expect("copy");
    }
    to.to_path_buf()
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("adapter_config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    edit(&mut config);
    std::fs::write(&path, config.to_string()).expect("write config");
}

/// The result is also printed, for `kubectl logs`.
fn stdout_json(run: &Run) -> Value {
    serde_json::from_str(run.stdout.trim()).unwrap_or(Value::Null)
}

fn assert_invalid(run: &Run, expected: &str) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.result["kind"], "TrainError", "{}", run.result);
    assert_eq!(
        run.result["reason"], "InvalidAdapterOutput",
        "{}",
        run.result
    );
    let message = run.result["message"].as_str().unwrap_or_default();
    assert!(message.contains(expected), "{message}");
}

#[test]
fn a_trained_adapter_verifies_and_broken_copies_fail_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let trained = trained_adapter(tmp.path());
    let result_path = tmp.path().join("result.json");

    let good = copy_adapter(&trained, &tmp.path().join("good"));
    let run = verify(&good, &result_path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.result["kind"], "TrainResult", "{}", run.result);
    assert_eq!(run.result["revision"], "abcdef0123456789");
    assert_eq!(
        run.result["artifactUri"],
        "file:///pvc/hybrid-artifacts/adapters/abcdef0123456789"
    );
    assert!(
        run.result["finalLoss"].is_null(),
        "no loss reported: {}",
        run.result
    );
    assert_eq!(stdout_json(&run), run.result);

    // The trainer's own result file carries its numbers over.
    std::fs::write(
        good.join("result.json"),
        r#"{"kind":"TrainResult","finalLoss":0.75,"evalLoss":0.8,"steps":12,"tokensPerSecond":50.5,"durationSeconds":30}"#,
    )
    .expect("trainer result");
    let run = verify(&good, &result_path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.result["finalLoss"].as_f64(),
        Some(0.75),
        "{}",
        run.result
    );
    assert_eq!(run.result["evalLoss"].as_f64(), Some(0.8));
    assert_eq!(run.result["steps"].as_u64(), Some(12));

    let dora = copy_adapter(&trained, &tmp.path().join("dora"));
    edit_config(&dora, |c| c["use_dora"] = true.into());
    assert_invalid(&verify(&dora, &result_path), "use_dora is true");

    let not_lora = copy_adapter(&trained, &tmp.path().join("prefix"));
    edit_config(&not_lora, |c| c["peft_type"] = "PREFIX_TUNING".into());
    assert_invalid(
        &verify(&not_lora, &result_path),
        "peft_type PREFIX_TUNING is not LORA",
    );

    let other_rank = copy_adapter(&trained, &tmp.path().join("rank"));
    edit_config(&other_rank, |c| c["r"] = 16.into());
    assert_invalid(&verify(&other_rank, &result_path), "do not fit r=16");

    let no_weights = copy_adapter(&trained, &tmp.path().join("no-weights"));
    std::fs::remove_file(no_weights.join("adapter_model.safetensors")).expect("rm");
    assert_invalid(
        &verify(&no_weights, &result_path),
        "adapter_model.safetensors is missing",
    );
}

#[test]
fn an_empty_output_is_a_train_error_and_exit_code_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = tmp.path().join("output");
    std::fs::create_dir(&output).expect("mkdir");
    let result_path = tmp.path().join("result.json");
    let run = verify(&output, &result_path);
    assert_invalid(&run, "is empty: the trainer wrote nothing");
    assert_eq!(stdout_json(&run), run.result);
}
