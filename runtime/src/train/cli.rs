//! Command-line flags of `hybrid-runtime train`, merged over an optional `--config` YAML file
//! (flags win), and the Job-facing wrapper that writes the result JSON and sets the exit code.

use std::path::PathBuf;

use clap::Args;

use super::{BaseFormat, Method, TrainError, TrainSpec};
use crate::lora::TargetModule;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// YAML file with the same settings in camelCase (`baseModel`, `datasets`, `rank`, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base model: GGUF file, or Hugging Face safetensors directory (path or file:// URI).
    #[arg(long)]
    pub base_model: Option<String>,
    #[arg(long, value_enum)]
    pub base_format: Option<BaseFormat>,
    /// JSONL dataset file(s) of {"messages":[...]} lines; repeat or comma-separate.
    #[arg(long = "dataset", value_delimiter = ',')]
    pub datasets: Vec<PathBuf>,
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    #[arg(long)]
    pub rank: Option<usize>,
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Comma-separated: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.
    #[arg(long, value_delimiter = ',')]
    pub target_modules: Vec<TargetModule>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub gradient_accumulation: Option<usize>,
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Drop (and count) examples longer than --max-seq-len instead of failing.
    #[arg(long)]
    pub skip_overlong: bool,
    #[arg(long)]
    pub eval_fraction: Option<f64>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long)]
    pub early_stopping_patience: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Revisions are written to <output-dir>/<revision>/ [default: /output].
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Where the result JSON goes [default: /dev/termination-log].
    #[arg(long)]
    pub result_path: Option<PathBuf>,
    /// JSON progress file rewritten after every step.
    #[arg(long)]
    pub progress_path: Option<PathBuf>,
    /// Where training computes: auto (a GPU when this binary has CUDA and one is visible, else
    /// the CPU), cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<crate::device::DeviceChoice>,
}

impl TrainArgs {
    /// The effective spec: defaults, then the config file, then flags.
    pub fn resolve(&self) -> Result<TrainSpec, TrainError> {
        let mut spec = match &self.config {
            Some(path) => {
                let raw = std::fs::read_to_string(path).map_err(|e| {
                    TrainError::InvalidConfig(format!("cannot read {}: {e}", path.display()))
                })?;
                serde_yaml::from_str(&raw)
                    .map_err(|e| TrainError::InvalidConfig(format!("{}: {e}", path.display())))?
            }
            None => TrainSpec::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(v) = self.$field.clone() { spec.$field = v; } )* };
        }
        overlay!(
            method,
            rank,
            alpha,
            dropout,
            epochs,
            learning_rate,
            warmup_ratio,
            weight_decay,
            max_grad_norm,
            batch_size,
            gradient_accumulation,
            max_seq_len,
            eval_fraction,
            early_stopping_patience,
            seed,
            output_dir,
            result_path
        );
        if self.base_model.is_some() {
            spec.base_model = self.base_model.clone();
        }
        if self.base_format.is_some() {
            spec.base_format = self.base_format;
        }
        if self.max_steps.is_some() {
            spec.max_steps = self.max_steps;
        }
        if self.eval_every.is_some() {
            spec.eval_every = self.eval_every;
        }
        if let Some(device) = self.device {
            spec.device = device;
        }
        if self.progress_path.is_some() {
            spec.progress_path = self.progress_path.clone();
        }
        if !self.datasets.is_empty() {
            spec.datasets = self.datasets.clone();
        }
        if !self.target_modules.is_empty() {
            spec.target_modules = self.target_modules.clone();
        }
        spec.skip_overlong |= self.skip_overlong;
        Ok(spec)
    }
}

/// Runs the subcommand as a Job would: result JSON to the result path (and stdout), exit code
/// 0 on success, 1 on failure.
pub fn main(args: &TrainArgs) -> i32 {
    let spec = args.resolve();
    let result_path = spec
        .as_ref()
        .map(|s| s.result_path.clone())
        .unwrap_or_else(|_| {
            args.result_path
                .clone()
                .unwrap_or_else(|| TrainSpec::default().result_path)
        });
    let outcome = spec.and_then(|s| super::run(&s));
    super::report::write_outcome(&outcome, &result_path)
}
