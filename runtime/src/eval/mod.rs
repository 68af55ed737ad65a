//! `hybrid-runtime eval`: answer a QA set with a base model (+ PEFT adapter) and score it.
//!
//! QA JSONL, one object per line: `{"id":..,"question":..,"answer":..,"format":{"regex":..}}`
//! (other keys are ignored). Each question is asked as a ChatML user turn, answered greedily, and
//! scored with SQuAD-style normalised exact match and token F1, whether the normalised gold
//! answer appears in the normalised prediction, and whether the prediction matches the item's
//! format regex. Retrieval is not part of this first version: the model answers from its weights.

pub mod cli;
pub mod metrics;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::chat::{ChatTemplate, IM_END, Message, Role};
use crate::model::{BaseWeights, KvCache, Llama};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("invalid eval configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot load model {path}: {detail}")]
    ModelUnreadable { path: PathBuf, detail: String },
    #[error("cannot load adapter {path}: {detail}")]
    AdapterUnreadable { path: PathBuf, detail: String },
    #[error("cannot read QA set {path}: {detail}")]
    DatasetUnreadable { path: PathBuf, detail: String },
    #[error("{path}:{line}: malformed QA item: {detail}")]
    MalformedItem {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("QA set {0} has no items")]
    EmptyDataset(PathBuf),
    #[error("generation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl EvalError {
    pub fn reason(&self) -> &'static str {
        match self {
            EvalError::InvalidConfig(_) => "InvalidConfig",
            EvalError::ModelUnreadable { .. } => "BaseModelUnreadable",
            EvalError::AdapterUnreadable { .. } => "AdapterUnreadable",
            EvalError::DatasetUnreadable { .. } => "DatasetUnreadable",
            EvalError::MalformedItem { .. } => "MalformedExample",
            EvalError::EmptyDataset(_) => "EmptyDataset",
            EvalError::Compute(_) => "ComputeFailed",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct FormatSpec {
    regex: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QaItem {
    #[serde(default)]
    pub id: Option<String>,
    pub question: String,
    pub answer: String,
    #[serde(default)]
    format: Option<FormatSpec>,
}

/// One QA item with its compiled format rule.
pub struct Question {
    pub item: QaItem,
    pub format: Option<regex::Regex>,
}

pub fn load_questions(path: &Path) -> Result<Vec<Question>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::DatasetUnreadable {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let malformed = |detail: String| EvalError::MalformedItem {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        let item: QaItem = serde_json::from_str(raw).map_err(|e| malformed(e.to_string()))?;
        let format = match &item.format {
            Some(f) => Some(
                regex::Regex::new(&f.regex).map_err(|e| malformed(format!("format regex: {e}")))?,
            ),
            None => None,
        };
        out.push(Question { item, format });
    }
    if out.is_empty() {
        return Err(EvalError::EmptyDataset(path.to_path_buf()));
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemScore {
    pub id: Option<String>,
    pub prediction: String,
    pub exact_match: bool,
    pub token_f1: f64,
    pub answer_contained: bool,
    /// `None` when the item declares no format.
    pub format_ok: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", rename = "EvalResult")]
pub struct EvalReport {
    pub items: usize,
    pub exact_match: f64,
    pub token_f1: f64,
    pub answer_contained: f64,
    /// Share of the items that declare a format whose answer matches it (`null`: none declare).
    pub format_compliance: Option<f64>,
    pub adapter: Option<String>,
    pub duration_seconds: f64,
    pub per_item: Vec<ItemScore>,
}

/// Greedy decoding until `<|im_end|>` or `max_new_tokens`.
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompt: &str,
    max_new_tokens: usize,
) -> Result<String, EvalError> {
    let enc = tokenizer
        .encode(prompt, false)
        .map_err(|e| EvalError::InvalidConfig(format!("tokenizer: {e}")))?;
    let stop = tokenizer.token_to_id(IM_END);
    let mut cache = KvCache::new();
    let mut input = Tensor::new(enc.get_ids(), model.device())?.unsqueeze(0)?;
    let mut out: Vec<u32> = Vec::new();
    for _ in 0..max_new_tokens {
        let logits = model.forward_cached(&input, &mut cache)?;
        let last = logits.squeeze(0)?.get(input.dim(1)? - 1)?;
        let next = last.argmax(0)?.to_scalar::<u32>()?;
        if Some(next) == stop {
            break;
        }
        out.push(next);
        input = Tensor::new(&[next], model.device())?.unsqueeze(0)?;
    }
    tokenizer
        .decode(&out, true)
        .map_err(|e| EvalError::InvalidConfig(format!("tokenizer: {e}")))
}

pub struct EvalSettings {
    pub base_model: PathBuf,
    pub adapter: Option<PathBuf>,
    pub dataset: PathBuf,
    pub system_prompt: Option<String>,
    pub max_new_tokens: usize,
}

pub fn run(s: &EvalSettings) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    let questions = load_questions(&s.dataset)?;
    let device = Device::Cpu;
    let unreadable = |detail: String| EvalError::ModelUnreadable {
        path: s.base_model.clone(),
        detail,
    };
    let mut model = Llama::from_gguf(&s.base_model, BaseWeights::Float32, &device)
        .map_err(|e| unreadable(e.to_string()))?;
    let mut file = std::fs::File::open(&s.base_model).map_err(|e| unreadable(e.to_string()))?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file)
        .map_err(|e| unreadable(e.to_string()))?;
    let tokenizer = crate::tokenizer::from_gguf_content(&content).map_err(unreadable)?;
    let template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .map(|t| ChatTemplate::from_jinja(t))
        .unwrap_or_default();
    if let Some(dir) = &s.adapter {
        crate::lora::peft::load(&mut model, dir, &device).map_err(|detail| {
            EvalError::AdapterUnreadable {
                path: dir.clone(),
                detail,
            }
        })?;
    }
    let mut per_item = Vec::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        let mut messages = Vec::new();
        if let Some(system) = &s.system_prompt {
            messages.push(Message {
                role: Role::System,
                content: system.clone(),
            });
        }
        messages.push(Message {
            role: Role::User,
            content: q.item.question.clone(),
        });
        let prediction = generate(
            &model,
            &tokenizer,
            &template.render_prompt(&messages),
            s.max_new_tokens,
        )?;
        let score = ItemScore {
            id: q.item.id.clone(),
            exact_match: metrics::exact_match(&prediction, &q.item.answer),
            token_f1: metrics::token_f1(&prediction, &q.item.answer),
            answer_contained: metrics::contains_answer(&prediction, &q.item.answer),
            format_ok: q.format.as_ref().map(|re| re.is_match(prediction.trim())),
            prediction,
        };
        tracing::info!(
            "eval {}/{}: f1 {:.2} format {:?}",
            i + 1,
            questions.len(),
            score.token_f1,
            score.format_ok
        );
        per_item.push(score);
    }
    let n = per_item.len().max(1) as f64;
    let share =
        |f: &dyn Fn(&ItemScore) -> bool| per_item.iter().filter(|s| f(s)).count() as f64 / n;
    let with_format: Vec<bool> = per_item.iter().filter_map(|s| s.format_ok).collect();
    Ok(EvalReport {
        items: per_item.len(),
        exact_match: share(&|s| s.exact_match),
        token_f1: per_item.iter().map(|s| s.token_f1).sum::<f64>() / n,
        answer_contained: share(&|s| s.answer_contained),
        format_compliance: match with_format.is_empty() {
            true => None,
            false => {
                Some(with_format.iter().filter(|ok| **ok).count() as f64 / with_format.len() as f64)
            }
        },
        adapter: s.adapter.as_ref().map(|p| p.display().to_string()),
        duration_seconds: started.elapsed().as_secs_f64(),
        per_item,
    })
}
