//! Command-line flags of `hybrid-runtime eval` and the Job-facing wrapper.

use std::path::PathBuf;

use clap::Args;

use super::{EvalError, EvalSettings, RetrievalSettings};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Base model GGUF file (not needed with --retrieval-only).
    #[arg(long)]
    pub base_model: Option<PathBuf>,
    /// PEFT adapter directory (adapter_config.json + adapter_model.safetensors); none: base only.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// QA JSONL: {"id","question","answer","supporting_documents":[..],"format":{"regex"|"jsonSchema"}}.
    #[arg(long)]
    pub dataset: PathBuf,
    /// System message for every question (use the one the adapter was trained with).
    #[arg(long)]
    pub system_prompt: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Index revision to retrieve from: the archive `index` published (path, file://, s3://).
    /// Enables recall@k and puts the top passages into each question.
    #[arg(long)]
    pub index: Option<String>,
    /// Embedding model directory the index was built with (required with --index).
    #[arg(long, env = "HYBRID_EMBEDDER_DIR")]
    pub embedder: Option<PathBuf>,
    /// Passages put into the question as context (with --index).
    #[arg(long, default_value_t = 4)]
    pub top_k: usize,
    /// Comma-separated k values recall@k is reported for (with --index).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub recall_at: Vec<usize>,
    /// User turn with retrieved context; {context} = "[n] passage" lines, {question} = the question.
    #[arg(long, default_value = super::retrieval::DEFAULT_PROMPT_TEMPLATE)]
    pub prompt_template: String,
    /// Score retrieval only: no model is loaded and nothing is generated (needs --index).
    #[arg(long)]
    pub retrieval_only: bool,
    /// Scratch directory the index revision is unpacked into (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub scratch: PathBuf,
    /// Where the JSON report goes (also printed to stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Where the model and the embedder compute: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t)]
    pub device: crate::device::DeviceChoice,
}

impl EvalArgs {
    pub fn settings(&self) -> Result<EvalSettings, EvalError> {
        let retrieval = match (&self.index, &self.embedder) {
            (Some(index), Some(embedder)) => Some(RetrievalSettings {
                index: index.clone(),
                embedder: embedder.clone(),
                top_k: self.top_k,
                recall_at: self.recall_at.clone(),
                prompt_template: self.prompt_template.clone(),
                scratch: self.scratch.clone(),
            }),
            (Some(_), None) => {
                return Err(EvalError::InvalidConfig(
                    "--index needs --embedder (or HYBRID_EMBEDDER_DIR): the model the index was built with".into(),
                ));
            }
            (None, _) => None,
        };
        Ok(EvalSettings {
            base_model: self.base_model.clone(),
            adapter: self.adapter.clone(),
            dataset: self.dataset.clone(),
            system_prompt: self.system_prompt.clone(),
            max_new_tokens: self.max_new_tokens,
            retrieval,
            generate: !self.retrieval_only,
            device: self.device,
        })
    }
}

#[derive(serde::Serialize)]
#[serde(tag = "kind", rename = "EvalError")]
struct Failure {
    reason: String,
    message: String,
}

/// Runs the evaluation; returns the process exit code (0 ok, 1 failed).
pub fn main(args: &EvalArgs) -> i32 {
    let outcome = args.settings().and_then(|settings| super::run(&settings));
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
