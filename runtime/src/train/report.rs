//! What a run reports: the result JSON for the termination message, the progress file, and the
//! full report stored with the adapter.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dataset::DatasetStats;
use super::{TrainError, TrainSpec};

/// The Job's result, written to the termination message path (kept far below its 4096 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", rename = "TrainResult")]
pub struct TrainResult {
    pub revision: String,
    pub artifact_uri: String,
    pub final_loss: f64,
    pub eval_loss: Option<f64>,
    pub steps: usize,
    pub tokens_per_second: f64,
    pub duration_seconds: f64,
}

/// The failure counterpart of [`TrainResult`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename = "TrainError")]
pub struct TrainFailure {
    pub reason: String,
    pub message: String,
}

/// Termination messages are cut by the kubelet at 4096 bytes.
const MAX_MESSAGE_CHARS: usize = 3000;

impl TrainFailure {
    pub fn from_error(e: &TrainError) -> Self {
        let mut message = e.to_string();
        if message.len() > MAX_MESSAGE_CHARS {
            let mut cut = MAX_MESSAGE_CHARS;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Self {
            reason: e.reason().to_string(),
            message,
        }
    }
}

/// Reports a Job's outcome as the operator reads it: the `TrainResult` or `TrainError` JSON to
/// `result_path` (the termination message) and stdout. Returns the exit code: 0 on success, 1
/// on failure.
pub fn write_outcome(outcome: &Result<TrainResult, TrainError>, result_path: &Path) -> i32 {
    let (json, code) = match outcome {
        Ok(result) => (serde_json::to_string(result), 0),
        Err(e) => {
            tracing::error!(reason = e.reason(), "{e}");
            (serde_json::to_string(&TrainFailure::from_error(e)), 1)
        }
    };
    let json = json.unwrap_or_else(|e| {
        format!(r#"{{"kind":"TrainError","reason":"OutputFailed","message":"{e}"}}"#)
    });
    println!("{json}");
    if let Err(e) = std::fs::write(result_path, &json) {
        tracing::warn!("cannot write result to {}: {e}", result_path.display());
    }
    code
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub step: usize,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalRecord {
    pub step: usize,
    pub loss: f64,
}

/// Stored as `train-report.json` beside the adapter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainReport {
    pub revision: String,
    pub spec: serde_json::Value,
    pub dataset_examples: usize,
    pub skipped_overlong: usize,
    pub dataset_digests: Vec<String>,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub trainable_parameters: usize,
    pub initial_eval_loss: Option<f64>,
    pub steps: Vec<StepRecord>,
    pub evals: Vec<EvalRecord>,
    /// Eval loss of the weights that were saved (the best evaluation).
    pub eval_loss: Option<f64>,
    pub stopped_early: bool,
    pub tokens_per_second: f64,
    pub train_seconds: f64,
    pub duration_seconds: f64,
}

impl TrainReport {
    pub fn new(
        revision: &str,
        spec: &TrainSpec,
        data: &DatasetStats,
        train: usize,
        eval: usize,
        trainable: usize,
    ) -> Self {
        let mut spec_json = serde_json::to_value(spec).unwrap_or_default();
        if let Some(obj) = spec_json.as_object_mut() {
            for local in ["outputDir", "resultPath", "progressPath"] {
                obj.remove(local);
            }
        }
        Self {
            revision: revision.to_string(),
            spec: spec_json,
            dataset_examples: data.examples,
            skipped_overlong: data.skipped_overlong,
            dataset_digests: data.file_digests.clone(),
            train_examples: train,
            eval_examples: eval,
            trainable_parameters: trainable,
            initial_eval_loss: None,
            steps: Vec::new(),
            evals: Vec::new(),
            eval_loss: None,
            stopped_early: false,
            tokens_per_second: 0.0,
            train_seconds: 0.0,
            duration_seconds: 0.0,
        }
    }

    pub fn push_step(
        &mut self,
        step: usize,
        loss: f64,
        learning_rate: f64,
        grad_norm: f64,
        tokens: usize,
        seconds: f64,
    ) {
        self.steps.push(StepRecord {
            step,
            loss,
            learning_rate,
            grad_norm,
            tokens,
            seconds,
        });
    }

    pub fn push_eval(&mut self, step: usize, loss: f64) {
        self.evals.push(EvalRecord { step, loss });
    }

    pub fn finish(
        &mut self,
        eval_loss: Option<f64>,
        tokens: usize,
        train_seconds: f64,
        duration_seconds: f64,
    ) {
        self.eval_loss = eval_loss;
        self.train_seconds = train_seconds;
        self.tokens_per_second = if train_seconds > 0.0 {
            tokens as f64 / train_seconds
        } else {
            0.0
        };
        self.duration_seconds = duration_seconds;
    }

    pub fn result(&self, dir: &Path) -> TrainResult {
        let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        TrainResult {
            revision: self.revision.clone(),
            artifact_uri: format!("file://{}", abs.display()),
            final_loss: self.steps.last().map(|s| s.loss).unwrap_or(f64::NAN),
            eval_loss: self.eval_loss,
            steps: self.steps.len(),
            tokens_per_second: self.tokens_per_second,
            duration_seconds: self.duration_seconds,
        }
    }
}

/// The result of a revision that is already published under `dir`, if any.
pub fn existing_result(dir: &Path) -> Result<Option<TrainResult>, TrainError> {
    let path = dir.join(super::REPORT_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let raw = std::fs::read_to_string(&path).map_err(|e| TrainError::output(&path, e))?;
    let rep: TrainReport = serde_json::from_str(&raw).map_err(|e| TrainError::output(&path, e))?;
    Ok(Some(rep.result(dir)))
}

/// The progress file the operator polls: `{"phase","step","totalSteps","loss","etaSeconds"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub phase: String,
    pub step: usize,
    pub total_steps: usize,
    pub loss: Option<f64>,
    pub eta_seconds: Option<f64>,
}

pub struct ProgressWriter {
    path: Option<PathBuf>,
    state: Progress,
}

impl ProgressWriter {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            state: Progress::default(),
        }
    }

    pub fn phase(&mut self, phase: &str) {
        self.state.phase = phase.to_string();
        self.write();
    }

    pub fn step(&mut self, step: usize, total: usize, loss: f64, eta: f64) {
        self.state = Progress {
            phase: "training".into(),
            step,
            total_steps: total,
            loss: Some(loss),
            eta_seconds: Some(eta),
        };
        self.write();
    }

    /// Replaces the file atomically so a reader never sees half a JSON document. Progress is
    /// advisory: a failure to write it is logged, not fatal.
    fn write(&self) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_string(&self.state).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, path)) {
            tracing::warn!("cannot write progress file {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_json_has_the_contract_shape() {
        let r = TrainResult {
            revision: "abc".into(),
            artifact_uri: "file:///output/abc".into(),
            final_loss: 1.5,
            eval_loss: Some(1.25),
            steps: 3,
            tokens_per_second: 70.0,
            duration_seconds: 9.0,
        };
        let v: serde_json::Value = serde_json::to_value(&r).expect("serializable");
        assert_eq!(v["kind"], "TrainResult");
        for key in [
            "revision",
            "artifactUri",
            "finalLoss",
            "evalLoss",
            "steps",
            "tokensPerSecond",
            "durationSeconds",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        let e = TrainFailure::from_error(&TrainError::EmptyDataset("x".repeat(10_000)));
        let json = serde_json::to_string(&e).expect("serializable");
        assert!(json.len() < 4096, "{}", json.len());
        assert!(
            json.contains(r#""kind":"TrainError""#) && json.contains(r#""reason":"EmptyDataset""#),
            "{json}"
        );
    }
}
