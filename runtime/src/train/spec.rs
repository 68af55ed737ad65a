//! What a training run is asked to do, and the revision id derived from it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lora::{LoraSettings, TargetModule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Frozen base dequantized to f32 everywhere.
    Lora,
    /// Frozen base left quantized in the layers no gradient has to cross (see docs/runtime-train.md).
    Qlora,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BaseFormat {
    Gguf,
    Safetensors,
}

/// Every setting of a training run. Field names are the `--config` YAML keys; the CLI flags are
/// the same names in kebab-case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainSpec {
    /// Base model: a GGUF file, or a Hugging Face directory with config.json, *.safetensors and
    /// tokenizer.json. A `file://` URI is accepted.
    pub base_model: Option<String>,
    /// Detected from the path when absent (`.gguf` file → gguf, directory → safetensors).
    pub base_format: Option<BaseFormat>,
    pub datasets: Vec<PathBuf>,
    pub method: Method,
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub target_modules: Vec<TargetModule>,
    pub epochs: usize,
    /// Stop after this many optimizer steps even if epochs remain.
    pub max_steps: Option<usize>,
    pub learning_rate: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub batch_size: usize,
    pub gradient_accumulation: usize,
    pub max_seq_len: usize,
    /// Drop examples longer than `maxSeqLen` (counted in the report) instead of failing.
    pub skip_overlong: bool,
    pub eval_fraction: f64,
    /// Evaluate every N optimizer steps (default: five times per run, and at the end).
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations without a better eval loss (0: never stop early).
    pub early_stopping_patience: usize,
    pub seed: u64,
    pub output_dir: PathBuf,
    pub result_path: PathBuf,
    pub progress_path: Option<PathBuf>,
    /// Where training computes: auto, cpu, cuda or cuda:N (`--device`).
    pub device: crate::device::DeviceChoice,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            base_model: None,
            base_format: None,
            datasets: Vec::new(),
            method: Method::Lora,
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: vec![TargetModule::QProj, TargetModule::VProj],
            epochs: 1,
            max_steps: None,
            learning_rate: 2e-4,
            warmup_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            batch_size: 4,
            gradient_accumulation: 1,
            max_seq_len: 512,
            skip_overlong: false,
            eval_fraction: 0.1,
            eval_every: None,
            early_stopping_patience: 3,
            seed: 42,
            output_dir: PathBuf::from("/output"),
            result_path: PathBuf::from("/dev/termination-log"),
            progress_path: None,
            device: crate::device::DeviceChoice::Auto,
        }
    }
}

impl TrainSpec {
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.base_model.as_deref().is_none_or(str::is_empty) {
            problems.push("a base model is required (--base-model)".to_string());
        }
        if self.datasets.is_empty() {
            problems.push("at least one dataset is required (--dataset)".to_string());
        }
        if self.rank == 0 {
            problems.push("rank must be at least 1".to_string());
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 {
            problems.push("alpha must be positive".to_string());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            problems.push("dropout must be in [0, 1)".to_string());
        }
        if self.target_modules.is_empty() {
            problems.push("at least one target module is required".to_string());
        }
        if self.epochs == 0 || self.max_steps == Some(0) {
            problems.push("epochs and max steps must be at least 1".to_string());
        }
        if !self.learning_rate.is_finite() || self.learning_rate <= 0.0 {
            problems.push("learning rate must be positive".to_string());
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            problems.push("warm-up ratio must be in [0, 1)".to_string());
        }
        if self.batch_size == 0 || self.gradient_accumulation == 0 {
            problems.push("batch size and gradient accumulation must be at least 1".to_string());
        }
        if self.max_seq_len < 2 {
            problems.push("max sequence length must be at least 2".to_string());
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            problems.push("eval fraction must be in [0, 1)".to_string());
        }
        if self.eval_every == Some(0) {
            problems.push("eval every must be at least 1".to_string());
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems.join("; ")),
        }
    }

    pub fn lora_settings(&self) -> LoraSettings {
        let mut target_modules = self.target_modules.clone();
        target_modules.sort();
        target_modules.dedup();
        LoraSettings {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules,
            use_rslora: false,
        }
    }

    /// The training revision: sha256 over the dataset files' digests, every setting that can
    /// change the trained weights, and the base model file's digest; 16 hex digits.
    /// Paths and where results are written are not part of it, so moving a dataset or changing
    /// the output directory does not retrain.
    pub fn revision(&self, dataset_digests: &[String], base_model_digest: &str) -> String {
        let mut modules: Vec<&str> = self
            .lora_settings()
            .target_modules
            .iter()
            .map(|m| m.hf_name())
            .collect();
        modules.sort_unstable();
        let hyper = serde_json::json!({
            "method": self.method,
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "targetModules": modules,
            "epochs": self.epochs,
            "maxSteps": self.max_steps,
            "learningRate": self.learning_rate,
            "warmupRatio": self.warmup_ratio,
            "weightDecay": self.weight_decay,
            "maxGradNorm": self.max_grad_norm,
            "batchSize": self.batch_size,
            "gradientAccumulation": self.gradient_accumulation,
            "maxSeqLen": self.max_seq_len,
            "skipOverlong": self.skip_overlong,
            "evalFraction": self.eval_fraction,
            "evalEvery": self.eval_every,
            "earlyStoppingPatience": self.early_stopping_patience,
            "seed": self.seed,
            "trainer": TRAINER_VERSION,
        });
        let mut h = Sha256::new();
        for d in dataset_digests {
            h.update(b"dataset:");
            h.update(d.as_bytes());
            h.update(b"\n");
        }
        h.update(b"hyperparameters:");
        h.update(hyper.to_string().as_bytes());
        h.update(b"\nbase:");
        h.update(base_model_digest.as_bytes());
        hex::encode(h.finalize())[..16].to_string()
    }
}

/// Bumped when a trainer change alters what the same inputs train into, so revisions change.
pub const TRAINER_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TrainSpec {
        TrainSpec {
            base_model: Some("m.gguf".into()),
            datasets: vec!["d.jsonl".into()],
            ..TrainSpec::default()
        }
    }

    #[test]
    fn revision_follows_inputs_not_locations() {
        let base = spec().revision(&["aa".into()], "bb");
        assert_eq!(base.len(), 16);
        let moved = TrainSpec {
            output_dir: "/elsewhere".into(),
            datasets: vec!["/x/d.jsonl".into()],
            ..spec()
        };
        assert_eq!(moved.revision(&["aa".into()], "bb"), base);
        assert_ne!(spec().revision(&["ab".into()], "bb"), base);
        assert_ne!(spec().revision(&["aa".into()], "bc"), base);
        assert_ne!(
            TrainSpec { rank: 16, ..spec() }.revision(&["aa".into()], "bb"),
            base
        );
        let reordered = TrainSpec {
            target_modules: vec![TargetModule::VProj, TargetModule::QProj],
            ..spec()
        };
        assert_eq!(reordered.revision(&["aa".into()], "bb"), base);
    }

    #[test]
    fn validation_lists_every_problem() {
        let bad = TrainSpec {
            rank: 0,
            eval_fraction: 1.5,
            ..TrainSpec::default()
        };
        let err = bad.validate().expect_err("invalid");
        for word in ["base model", "dataset", "rank", "eval fraction"] {
            assert!(err.contains(word), "{err}");
        }
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn yaml_config_uses_camel_case_and_rejects_typos() {
        let s: TrainSpec = serde_yaml::from_str(
            "baseModel: m.gguf\ndatasets: [a.jsonl]\nrank: 4\ntargetModules: [q_proj, k_proj]\n",
        )
        .expect("valid yaml");
        assert_eq!(s.rank, 4);
        assert_eq!(
            s.target_modules,
            vec![TargetModule::QProj, TargetModule::KProj]
        );
        assert!(serde_yaml::from_str::<TrainSpec>("rnak: 4\n").is_err());
    }
}
