//! `hybrid-runtime verify-adapter`: the last step of a training Job whose adapter a user's image
//! made (`spec.trainer.image`). The image runs first (an init container) and writes to the
//! output directory; this checks that the directory holds a PEFT LoRA adapter that serving can
//! load (`lora::peft::inspect`) and reports the Job's outcome in the built-in trainer's result
//! contract: a `TrainResult`, carrying over the loss the image reported in its optional result
//! file, or a `TrainError` with a stable reason and a message naming the missing or bad file.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use super::{TrainError, TrainResult};
use crate::lora::peft;

/// The result file a trainer image may write beside its adapter (`resultPath` in its
/// `/config/train.json`).
pub const TRAINER_RESULT_FILE: &str = "result.json";

/// Names listed when an expected file is missing (what the trainer wrote instead).
const MAX_LISTED: usize = 12;

#[derive(Debug, Args)]
pub struct VerifyAdapterArgs {
    /// The directory the trainer wrote the adapter to (`adapter_config.json`,
    /// `adapter_model.safetensors`).
    #[arg(long, default_value = "/output")]
    pub output: PathBuf,
    /// The trainer's optional result file (`finalLoss`, `evalLoss`, `steps`, ...)
    /// [default: <output>/result.json].
    #[arg(long)]
    pub trainer_result: Option<PathBuf>,
    /// Revision id to report [default: the output directory's name].
    #[arg(long)]
    pub revision: Option<String>,
    /// `artifactUri` to report: where serving finds the adapter [default: file://<output>].
    #[arg(long)]
    pub artifact_uri: Option<String>,
    /// Where the result JSON goes (also printed to stdout).
    #[arg(long, default_value = "/dev/termination-log")]
    pub result_path: PathBuf,
}

/// Runs the subcommand as a Job would: result JSON to the result path (and stdout), exit code
/// 0 on success, 1 on failure.
pub fn main(args: &VerifyAdapterArgs) -> i32 {
    super::report::write_outcome(&verify(args), &args.result_path)
}

/// What a trainer image may report in its result file. Every field is optional; `revision` and
/// `artifactUri`, if present, are ignored (the operator decides where the adapter lives).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrainerReport {
    kind: Option<String>,
    final_loss: Option<f64>,
    eval_loss: Option<f64>,
    steps: Option<usize>,
    tokens_per_second: Option<f64>,
    duration_seconds: Option<f64>,
    reason: Option<String>,
    message: Option<String>,
}

/// The Job's outcome: the trainer's own failure if it reported one, else the adapter check,
/// else the result with the trainer's numbers.
pub fn verify(args: &VerifyAdapterArgs) -> Result<TrainResult, TrainError> {
    let result_file =
        (args.trainer_result.clone()).unwrap_or_else(|| args.output.join(TRAINER_RESULT_FILE));
    let reported = read_trainer_report(&result_file)?.unwrap_or_default();
    let summary = check_output(&args.output)?;
    tracing::info!(
        pairs = summary.pairs,
        layers = summary.layers,
        r = summary.settings.rank,
        "{} holds a PEFT LoRA adapter",
        args.output.display()
    );
    let abs = std::path::absolute(&args.output).unwrap_or_else(|_| args.output.clone());
    let revision = args.revision.clone().unwrap_or_else(|| {
        (abs.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(TrainResult {
        revision,
        artifact_uri: (args.artifact_uri.clone())
            .unwrap_or_else(|| format!("file://{}", abs.display())),
        // No loss reported: NaN, written as `null`.
        final_loss: reported.final_loss.unwrap_or(f64::NAN),
        eval_loss: reported.eval_loss,
        steps: reported.steps.unwrap_or(0),
        tokens_per_second: reported.tokens_per_second.unwrap_or(0.0),
        duration_seconds: reported.duration_seconds.unwrap_or(0.0),
    })
}

/// The trainer's result file: None when it wrote none; a `TrainError` document is its failure.
fn read_trainer_report(path: &Path) -> Result<Option<TrainerReport>, TrainError> {
    let invalid = |detail: String| TrainError::InvalidTrainerResult {
        path: path.to_path_buf(),
        detail,
    };
    let raw = match std::fs::read_to_string(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(e.to_string())),
    };
    let report: TrainerReport = serde_json::from_str(&raw).map_err(|e| {
        invalid(format!(
            "not a JSON object of finalLoss, evalLoss, steps, tokensPerSecond, durationSeconds: {e}"
        ))
    })?;
    match report.kind.as_deref() {
        None | Some("TrainResult") => Ok(Some(report)),
        Some("TrainError") => Err(TrainError::TrainerFailed {
            reason: report.reason.unwrap_or_else(|| "TrainError".into()),
            message: report.message.unwrap_or_default(),
        }),
        Some(other) => Err(invalid(format!(
            "kind {other:?} is neither TrainResult nor TrainError"
        ))),
    }
}

/// The adapter check, with the trainer's mistakes that `peft::inspect` would report less
/// plainly named first: nothing written, a file missing, a pickle instead of safetensors.
pub fn check_output(dir: &Path) -> Result<peft::AdapterSummary, TrainError> {
    let invalid = TrainError::InvalidAdapterOutput;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!("{} does not exist", dir.display())));
        }
        Err(e) => return Err(invalid(format!("cannot list {}: {e}", dir.display()))),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(invalid(format!(
            "{} is empty: the trainer wrote nothing; it must write {} and {} (PEFT's save_pretrained with safe_serialization=True)",
            dir.display(),
            peft::CONFIG_FILE,
            peft::WEIGHTS_FILE
        )));
    }
    let holds = || {
        let mut listed = names.iter().take(MAX_LISTED).cloned().collect::<Vec<_>>();
        if names.len() > MAX_LISTED {
            listed.push(format!("and {} more", names.len() - MAX_LISTED));
        }
        format!("{} holds {}", dir.display(), listed.join(", "))
    };
    for file in [peft::CONFIG_FILE, peft::WEIGHTS_FILE] {
        if names.iter().any(|n| n == file) {
            continue;
        }
        let hint = match file {
            peft::WEIGHTS_FILE if names.iter().any(|n| n == "adapter_model.bin") => {
                "; adapter_model.bin (pickle) is not loaded: save with safe_serialization=True"
            }
            _ => "",
        };
        return Err(invalid(format!(
            "{} is missing ({}){hint}",
            dir.join(file).display(),
            holds()
        )));
    }
    peft::inspect(dir).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::train::report::TrainFailure;

    const CONFIG: &str = r#"{"peft_type":"LORA","task_type":"CAUSAL_LM","r":4,"lora_alpha":8,
        "lora_dropout":0.0,"target_modules":["q_proj","v_proj"],"bias":"none"}"#;

    fn key(layer: usize, module: &str, matrix: &str) -> String {
        let parent = match module {
            "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
            _ => "mlp",
        };
        format!("base_model.model.model.layers.{layer}.{parent}.{module}.lora_{matrix}.weight")
    }

    /// Writes `config` and safetensors holding `tensors` (name → shape) to a fresh directory.
    fn adapter(config: Option<&str>, tensors: &[(String, &[usize])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        if let Some(config) = config {
            std::fs::write(dir.path().join(peft::CONFIG_FILE), config).expect("config");
        }
        if !tensors.is_empty() {
            let map: HashMap<String, Tensor> = tensors
                .iter()
                .map(|(name, shape)| {
                    let t = Tensor::zeros(*shape, DType::F32, &Device::Cpu).expect("zeros");
                    (name.clone(), t)
                })
                .collect();
            candle_core::safetensors::save(&map, dir.path().join(peft::WEIGHTS_FILE))
                .expect("safetensors");
        }
        dir
    }

    /// Tensor names and shapes of a safetensors file.
    type Tensors = Vec<(String, &'static [usize])>;

    fn good_tensors() -> Tensors {
        let mut t: Tensors = Vec::new();
        for layer in 0..2 {
            t.push((key(layer, "q_proj", "A"), &[4, 64]));
            t.push((key(layer, "q_proj", "B"), &[64, 4]));
            t.push((key(layer, "v_proj", "A"), &[4, 64]));
            t.push((key(layer, "v_proj", "B"), &[16, 4]));
        }
        t
    }

    fn args(dir: &Path) -> VerifyAdapterArgs {
        VerifyAdapterArgs {
            output: dir.to_path_buf(),
            trainer_result: None,
            revision: Some("abcdef0123456789".into()),
            artifact_uri: Some("file:///pvc/artifacts/adapters/abcdef0123456789".into()),
            result_path: dir.join("unused"),
        }
    }

    /// The reason and message a failed verification reports.
    fn failure(dir: &Path) -> (String, String) {
        let e = verify(&args(dir)).expect_err("invalid");
        let f = TrainFailure::from_error(&e);
        (f.reason, f.message)
    }

    #[test]
    fn a_good_adapter_is_a_train_result_without_a_loss() {
        let dir = adapter(Some(CONFIG), &good_tensors());
        let r = verify(&args(dir.path())).expect("valid");
        assert_eq!(r.revision, "abcdef0123456789");
        assert_eq!(
            r.artifact_uri,
            "file:///pvc/artifacts/adapters/abcdef0123456789"
        );
        assert!(r.final_loss.is_nan());
        assert_eq!((r.eval_loss, r.steps), (None, 0));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["kind"], "TrainResult");
        assert!(json["finalLoss"].is_null(), "{json}");
        let summary = check_output(dir.path()).expect("valid");
        assert_eq!((summary.pairs, summary.layers), (4, 2));
    }

    #[test]
    fn the_trainers_loss_is_carried_over() {
        let dir = adapter(Some(CONFIG), &good_tensors());
        std::fs::write(
            dir.path().join(TRAINER_RESULT_FILE),
            r#"{"finalLoss":0.41,"evalLoss":0.52,"steps":40,"durationSeconds":95.5,"artifactUri":"ignored"}"#,
        )
        .expect("result");
        let r = verify(&args(dir.path())).expect("valid");
        assert_eq!(
            (r.final_loss, r.eval_loss, r.steps, r.duration_seconds),
            (0.41, Some(0.52), 40, 95.5)
        );
        assert_eq!(
            r.artifact_uri,
            "file:///pvc/artifacts/adapters/abcdef0123456789"
        );
    }

    #[test]
    fn a_bad_or_failed_trainer_result_is_reported() {
        let dir = adapter(Some(CONFIG), &good_tensors());
        let result = dir.path().join(TRAINER_RESULT_FILE);
        std::fs::write(&result, r#"{"finalLoss":NaN}"#).expect("result");
        let (reason, message) = failure(dir.path());
        assert_eq!(reason, "InvalidTrainerResult");
        assert!(message.contains("result.json"), "{message}");
        std::fs::write(&result, r#"{"finalLoss":"0.4"}"#).expect("result");
        assert_eq!(failure(dir.path()).0, "InvalidTrainerResult");
        std::fs::write(
            &result,
            r#"{"kind":"TrainError","reason":"OutOfMemory","message":"CUDA out of memory"}"#,
        )
        .expect("result");
        let (reason, message) = failure(dir.path());
        assert_eq!(reason, "TrainerFailed");
        assert_eq!(
            message,
            "the trainer reported OutOfMemory: CUDA out of memory"
        );
    }

    #[test]
    fn nothing_written_is_invalid_output() {
        let dir = tempfile::tempdir().expect("tmp");
        let (reason, message) = failure(dir.path());
        assert_eq!(reason, "InvalidAdapterOutput");
        assert!(
            message.contains("is empty: the trainer wrote nothing")
                && message.contains("adapter_model.safetensors"),
            "{message}"
        );
        let (reason, message) = failure(&dir.path().join("absent"));
        assert_eq!(reason, "InvalidAdapterOutput");
        assert!(message.contains("absent does not exist"), "{message}");
    }

    #[test]
    fn a_missing_file_is_named_with_what_was_written() {
        let dir = adapter(Some(CONFIG), &[]);
        std::fs::write(dir.path().join("adapter_model.bin"), b"pickle").expect("bin");
        let (reason, message) = failure(dir.path());
        assert_eq!(reason, "InvalidAdapterOutput");
        assert!(
            message.contains("adapter_model.safetensors is missing")
                && message.contains("holds adapter_config.json, adapter_model.bin")
                && message.contains("safe_serialization=True"),
            "{message}"
        );
        let dir = adapter(None, &good_tensors());
        let (_, message) = failure(dir.path());
        assert!(
            message.contains("adapter_config.json is missing"),
            "{message}"
        );
    }

    #[test]
    fn configs_serving_refuses_are_refused_by_name() {
        let cases: [(&str, &str); 7] = [
            (
                r#"{"peft_type":"IA3","task_type":"CAUSAL_LM","target_modules":["k_proj"],"feedforward_modules":[]}"#,
                "peft_type IA3 is not LORA",
            ),
            (
                &CONFIG.replace(r#""bias":"none""#, r#""bias":"none","use_dora":true"#),
                "use_dora is true: DoRA adapters",
            ),
            (
                &CONFIG.replace(r#""r":4,"#, ""),
                "not a PEFT LoRA config: missing field `r`",
            ),
            (
                &CONFIG.replace(r#""lora_alpha":8,"#, ""),
                "missing field `lora_alpha`",
            ),
            (
                &CONFIG.replace(r#""target_modules":["q_proj","v_proj"],"#, ""),
                "missing field `target_modules`",
            ),
            (
                &CONFIG.replace("v_proj", "lm_head"),
                "adapter_config.json: unknown target module `lm_head`",
            ),
            ("{not json", "not a PEFT LoRA config"),
        ];
        for (config, expected) in cases {
            let dir = adapter(Some(config), &good_tensors());
            let (reason, message) = failure(dir.path());
            assert_eq!(reason, "InvalidAdapterOutput", "{config}");
            assert!(message.contains(expected), "{config}: {message}");
        }
    }

    #[test]
    fn tensors_that_do_not_fit_the_config_are_refused() {
        let mut rank_8 = good_tensors();
        rank_8[0] = (key(0, "q_proj", "A"), &[8, 64]);
        rank_8[1] = (key(0, "q_proj", "B"), &[64, 8]);
        let mut half = good_tensors();
        half.remove(1);
        let mut other_module = good_tensors();
        other_module.push((key(0, "k_proj", "A"), &[4, 64]));
        let cases: [(Tensors, &str); 4] = [
            (
                rank_8,
                "layer 0 q_proj: lora_A [8, 64] / lora_B [64, 8] do not fit r=4",
            ),
            (half, "layer 0 q_proj has only one of lora_A/lora_B"),
            (
                other_module,
                "unexpected tensor base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",
            ),
            (
                vec![("lora_magnitude".to_owned(), &[4])],
                "unexpected tensor lora_magnitude",
            ),
        ];
        for (tensors, expected) in cases {
            let dir = adapter(Some(CONFIG), &tensors);
            let (reason, message) = failure(dir.path());
            assert_eq!(reason, "InvalidAdapterOutput");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn unreadable_safetensors_are_refused() {
        let dir = adapter(Some(CONFIG), &good_tensors());
        let weights = dir.path().join(peft::WEIGHTS_FILE);
        let bytes = std::fs::read(&weights).expect("read");
        std::fs::write(&weights, &bytes[..bytes.len() - 10]).expect("truncate");
        let (reason, message) = failure(dir.path());
        assert_eq!(reason, "InvalidAdapterOutput");
        assert!(message.contains("truncated or corrupt"), "{message}");
        std::fs::write(&weights, b"{\"not\": \"safetensors\"}").expect("junk");
        let (_, message) = failure(dir.path());
        assert!(message.contains("not a safetensors file"), "{message}");
        // An empty safetensors file (header `{}`): no pair.
        let empty: HashMap<String, Tensor> = HashMap::new();
        candle_core::safetensors::save(&empty, &weights).expect("empty");
        let (_, message) = failure(dir.path());
        assert!(
            message.contains("holds no lora_A/lora_B tensor pair"),
            "{message}"
        );
    }
}
