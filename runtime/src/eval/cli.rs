//! Command-line flags of `hybrid-runtime eval` and the Job-facing wrapper.

use std::path::PathBuf;

use clap::Args;

use super::{EvalError, EvalSettings};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Base model GGUF file.
    #[arg(long)]
    pub base_model: PathBuf,
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors); none: base only.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// QA JSONL: {"id","question","answer","format":{"regex"}} per line.
    #[arg(long)]
    pub dataset: PathBuf,
    /// System message for every question (use the one the adapter was trained with).
    #[arg(long)]
    pub system_prompt: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Where the JSON report goes (also printed to stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(serde::Serialize)]
#[serde(tag = "kind", rename = "EvalError")]
struct Failure {
    reason: String,
    message: String,
}

/// Runs the evaluation; returns the process exit code (0 ok, 1 failed).
pub fn main(args: &EvalArgs) -> i32 {
    let settings = EvalSettings {
        base_model: args.base_model.clone(),
        adapter: args.adapter.clone(),
        dataset: args.dataset.clone(),
        system_prompt: args.system_prompt.clone(),
        max_new_tokens: args.max_new_tokens,
    };
    let outcome = if args.max_new_tokens == 0 {
        Err(EvalError::InvalidConfig(
            "max new tokens must be at least 1".into(),
        ))
    } else {
        super::run(&settings)
    };
    let (json, code) = match &outcome {
        Ok(report) => (serde_json::to_string_pretty(report), 0),
        Err(e) => {
            tracing::error!(reason = e.reason(), "{e}");
            (
                serde_json::to_string(&Failure {
                    reason: e.reason().into(),
                    message: e.to_string(),
                }),
                1,
            )
        }
    };
    let json = json.unwrap_or_else(|e| {
        format!(r#"{{"kind":"EvalError","reason":"OutputFailed","message":"{e}"}}"#)
    });
    println!("{json}");
    if let Some(path) = &args.output
        && let Err(e) = std::fs::write(path, &json)
    {
        tracing::error!("cannot write {}: {e}", path.display());
        return 1;
    }
    code
}
