//! `hybrid-runtime eval`: answer a QA set with a base model (+ PEFT adapter), optionally with
//! passages retrieved from an index revision, and score it.
//!
//! QA JSONL, one object per line:
//! `{"id":..,"question":..,"answer":..,"supporting_documents":[..],"format":{"regex":..}}`
//! (`format` may instead be `{"jsonSchema":{..}}`; other keys are ignored). With an index, every
//! question is embedded and searched: retrieval recall@k is the share of the item's supporting
//! documents among the documents of the top-k passages, and the top `--top-k` passages become the
//! context of the question (`--prompt-template`). Each question is asked as a ChatML user turn,
//! answered greedily, and scored with SQuAD-style normalised exact match and token F1, whether the
//! normalised gold answer appears in the normalised prediction, and whether the prediction obeys
//! the item's format rule. `--retrieval-only` skips generation (no model needed).
//! The contract is in docs/runtime-train.md ("hybrid-runtime eval").

pub mod cli;
pub mod format;
pub mod metrics;
pub mod retrieval;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::chat::{ChatTemplate, IM_END, Message, Role};
use crate::device::Placement;
use crate::embed::Embedder;
use crate::index::revision::LoadedRevision;
use crate::model::{BaseWeights, KvCache, Llama};
use crate::store::SearchHit;
use format::{FormatRule, FormatSpec};

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
    #[error("cannot load embedder {path}: {detail}")]
    EmbedderUnreadable { path: PathBuf, detail: String },
    #[error("cannot open index revision {location}: {detail}")]
    IndexUnreadable { location: String, detail: String },
    #[error("retrieval failed: {0}")]
    Retrieval(String),
    #[error("generation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
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
            EvalError::EmbedderUnreadable { .. } => "EmbedderUnavailable",
            EvalError::IndexUnreadable { .. } => "IndexUnavailable",
            EvalError::Retrieval(_) => "RetrievalFailed",
            EvalError::Compute(_) => "ComputeFailed",
            EvalError::Device(_) => "DeviceUnavailable",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct QaItem {
    #[serde(default)]
    pub id: Option<String>,
    pub question: String,
    pub answer: String,
    /// Ids (or file stems) of the documents that hold the answer.
    #[serde(default, alias = "supportingDocuments")]
    pub supporting_documents: Vec<String>,
    #[serde(default)]
    format: Option<FormatSpec>,
}

/// One QA item with its compiled format rule.
pub struct Question {
    pub item: QaItem,
    pub format: Option<FormatRule>,
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
        if item.question.trim().is_empty() {
            return Err(malformed("`question` is empty".into()));
        }
        if item
            .supporting_documents
            .iter()
            .any(|d| d.trim().is_empty())
        {
            return Err(malformed("`supporting_documents` has an empty id".into()));
        }
        let format = match &item.format {
            Some(spec) => Some(FormatRule::compile(spec).map_err(malformed)?),
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
    /// Absent with `--retrieval-only`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_contained: Option<bool>,
    /// `None` when the item declares no format (or nothing was generated).
    pub format_ok: Option<bool>,
    /// Documents of the retrieved passages, best first, each once (with an index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieved_documents: Option<Vec<String>>,
    /// recall@k per k (with an index and supporting documents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_at_k: Option<BTreeMap<usize, f64>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrievalReport {
    pub index: String,
    pub revision: String,
    /// Passages given to the model as context.
    pub top_k: usize,
    /// Mean over the items with supporting documents; `null` when none has any.
    pub recall_at_k: Option<BTreeMap<usize, f64>>,
    pub items_with_supporting_documents: usize,
    /// Supporting document ids that match no document of the index (a dataset or corpus error).
    pub unknown_supporting_documents: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", rename = "EvalResult")]
pub struct EvalReport {
    pub items: usize,
    /// Answer scores; `null` with `--retrieval-only`.
    pub exact_match: Option<f64>,
    pub token_f1: Option<f64>,
    pub answer_contained: Option<f64>,
    /// Share of the items that declare a format whose answer obeys it (`null`: none declare, or
    /// nothing was generated).
    pub format_compliance: Option<f64>,
    pub adapter: Option<String>,
    /// `null` without `--index`.
    pub retrieval: Option<RetrievalReport>,
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

/// Where passages come from and how they are scored and shown.
#[derive(Debug, Clone)]
pub struct RetrievalSettings {
    /// Index revision: archive path/URI as `index` publishes it.
    pub index: String,
    pub embedder: PathBuf,
    /// Passages given to the model as context.
    pub top_k: usize,
    /// The k values recall is reported for.
    pub recall_at: Vec<usize>,
    pub prompt_template: String,
    /// Where the revision is unpacked.
    pub scratch: PathBuf,
}

#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Required unless `generate` is false.
    pub base_model: Option<PathBuf>,
    pub adapter: Option<PathBuf>,
    pub dataset: PathBuf,
    pub system_prompt: Option<String>,
    pub max_new_tokens: usize,
    pub retrieval: Option<RetrievalSettings>,
    /// False: score retrieval only, load no model.
    pub generate: bool,
    /// Where the model and the embedder compute.
    pub device: crate::device::DeviceChoice,
}

/// Most passages or recall depth an evaluation may ask for: what serving allows.
pub use hybrid_contract::limits::MAX_TOP_K;

impl EvalSettings {
    /// Checks the combination of settings; errors name the flag.
    pub fn validate(&self) -> Result<(), EvalError> {
        let invalid = |m: &str| Err(EvalError::InvalidConfig(m.to_string()));
        if self.generate {
            if self.base_model.is_none() {
                return invalid("--base-model is required (unless --retrieval-only)");
            }
            if self.max_new_tokens == 0 {
                return invalid("--max-new-tokens must be at least 1");
            }
        } else {
            if self.retrieval.is_none() {
                return invalid("--retrieval-only needs --index");
            }
            if self.adapter.is_some() {
                return invalid("--adapter has no effect with --retrieval-only");
            }
        }
        if let Some(r) = &self.retrieval {
            if !(1..=MAX_TOP_K).contains(&r.top_k) {
                return Err(EvalError::InvalidConfig(format!(
                    "--top-k must be between 1 and {MAX_TOP_K}, got {}",
                    r.top_k
                )));
            }
            if r.recall_at.is_empty() {
                return invalid("--recall-at needs at least one k");
            }
            if let Some(k) = r.recall_at.iter().find(|k| !(1..=MAX_TOP_K).contains(*k)) {
                return Err(EvalError::InvalidConfig(format!(
                    "--recall-at values must be between 1 and {MAX_TOP_K}, got {k}"
                )));
            }
            retrieval::validate_template(&r.prompt_template).map_err(EvalError::InvalidConfig)?;
        }
        Ok(())
    }
}

/// Retrieved passages for every question, and the report part they give.
fn retrieve_all(
    r: &RetrievalSettings,
    questions: &[Question],
    placement: &Placement,
) -> Result<(Vec<Vec<SearchHit>>, RetrievalReport), EvalError> {
    let embedder =
        Embedder::load_for(&r.embedder, placement).map_err(|e| EvalError::EmbedderUnreadable {
            path: r.embedder.clone(),
            detail: e.to_string(),
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EvalError::Retrieval(e.to_string()))?;
    let revision = runtime
        .block_on(LoadedRevision::open(&r.index, &r.scratch))
        .map_err(|e| EvalError::IndexUnreadable {
            location: r.index.clone(),
            detail: e.to_string(),
        })?;
    if revision.manifest().embedder.dimension != embedder.dimension() {
        return Err(EvalError::InvalidConfig(format!(
            "--embedder {} gives {}-dimensional vectors but index {} holds {}",
            r.embedder.display(),
            embedder.dimension(),
            r.index,
            revision.manifest().embedder.dimension
        )));
    }
    let digest =
        crate::embed::model_digest(&r.embedder).map_err(|e| EvalError::EmbedderUnreadable {
            path: r.embedder.clone(),
            detail: e.to_string(),
        })?;
    if digest != revision.manifest().embedder.digest {
        tracing::warn!(
            embedder = %r.embedder.display(),
            "the embedder differs from the one the index was built with; recall will suffer"
        );
    }
    let depth = r
        .recall_at
        .iter()
        .copied()
        .chain([r.top_k])
        .max()
        .unwrap_or(r.top_k);
    let texts: Vec<&str> = questions.iter().map(|q| q.item.question.as_str()).collect();
    let vectors = embedder
        .embed(&texts)
        .map_err(|e| EvalError::Retrieval(e.to_string()))?;
    let mut all_hits = Vec::with_capacity(questions.len());
    for vector in &vectors {
        all_hits.push(
            revision
                .search(vector, depth)
                .map_err(|e| EvalError::Retrieval(e.to_string()))?,
        );
    }
    let mut unknown: Vec<String> = Vec::new();
    for q in questions {
        for wanted in &q.item.supporting_documents {
            let known = revision
                .manifest()
                .documents
                .iter()
                .any(|d| retrieval::document_matches(&d.id, wanted));
            if !known && !unknown.contains(wanted) {
                tracing::warn!(
                    document = %wanted,
                    item = q.item.id.as_deref().unwrap_or("?"),
                    "supporting document is not in the index"
                );
                unknown.push(wanted.clone());
            }
        }
    }
    let with_support = questions
        .iter()
        .filter(|q| !q.item.supporting_documents.is_empty())
        .count();
    let recall_at_k = (with_support > 0).then(|| {
        r.recall_at
            .iter()
            .map(|&k| {
                let sum: f64 = questions
                    .iter()
                    .zip(&all_hits)
                    .filter_map(|(q, hits)| {
                        retrieval::recall_at(hits, &q.item.supporting_documents, k)
                    })
                    .sum();
                (k, sum / with_support as f64)
            })
            .collect()
    });
    let report = RetrievalReport {
        index: revision.location().to_string(),
        revision: revision.revision().to_string(),
        top_k: r.top_k,
        recall_at_k,
        items_with_supporting_documents: with_support,
        unknown_supporting_documents: unknown,
    };
    tracing::info!(recall = ?report.recall_at_k, revision = %report.revision, "retrieval scored");
    Ok((all_hits, report))
}

/// Model, tokenizer and chat template, with the adapter attached.
struct Generator {
    model: Llama,
    tokenizer: Tokenizer,
    template: ChatTemplate,
}

/// On the CPU the weights are f32 (the reference the project's scores were measured with); on a
/// GPU f16, as `serve` holds them by default.
fn load_generator(
    base_model: &Path,
    adapter: Option<&Path>,
    placement: &Placement,
) -> Result<Generator, EvalError> {
    let device = placement.device.clone();
    let unreadable = |detail: String| EvalError::ModelUnreadable {
        path: base_model.to_path_buf(),
        detail,
    };
    let weights = match placement.is_cuda() {
        true => BaseWeights::Float16,
        false => BaseWeights::Float32,
    };
    let mut model =
        Llama::from_gguf(base_model, weights, &device).map_err(|e| unreadable(e.to_string()))?;
    let mut file = std::fs::File::open(base_model).map_err(|e| unreadable(e.to_string()))?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file)
        .map_err(|e| unreadable(e.to_string()))?;
    let tokenizer = crate::tokenizer::from_gguf_content(&content).map_err(unreadable)?;
    let template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .map(|t| ChatTemplate::from_jinja(t))
        .unwrap_or_default();
    if let Some(dir) = adapter {
        crate::lora::peft::load(&mut model, dir, &device).map_err(|detail| {
            EvalError::AdapterUnreadable {
                path: dir.to_path_buf(),
                detail,
            }
        })?;
    }
    Ok(Generator {
        model,
        tokenizer,
        template,
    })
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

pub fn run(s: &EvalSettings) -> Result<EvalReport, EvalError> {
    let started = Instant::now();
    s.validate()?;
    let placement = crate::device::select(s.device, "--device")?;
    crate::device::log_placement("eval", s.device, &placement);
    let questions = load_questions(&s.dataset)?;
    let (hits, retrieval_report) = match &s.retrieval {
        Some(r) => {
            let (hits, report) = retrieve_all(r, &questions, &placement)?;
            (Some(hits), Some(report))
        }
        None => (None, None),
    };
    let generator = match (&s.base_model, s.generate) {
        (Some(path), true) => Some(load_generator(path, s.adapter.as_deref(), &placement)?),
        _ => None,
    };
    let mut per_item = Vec::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        let item_hits = hits.as_ref().and_then(|h| h.get(i));
        let mut score = ItemScore {
            id: q.item.id.clone(),
            prediction: None,
            exact_match: None,
            token_f1: None,
            answer_contained: None,
            format_ok: None,
            retrieved_documents: item_hits.map(|h| retrieval::ranked_documents(h)),
            recall_at_k: match (item_hits, &s.retrieval) {
                (Some(h), Some(r)) if !q.item.supporting_documents.is_empty() => Some(
                    r.recall_at
                        .iter()
                        .filter_map(|&k| {
                            retrieval::recall_at(h, &q.item.supporting_documents, k).map(|v| (k, v))
                        })
                        .collect(),
                ),
                _ => None,
            },
        };
        if let Some(g) = &generator {
            let user = match (item_hits, &s.retrieval) {
                (Some(h), Some(r)) => retrieval::render_prompt(
                    &r.prompt_template,
                    &q.item.question,
                    &h[..r.top_k.min(h.len())],
                ),
                _ => q.item.question.clone(),
            };
            let mut messages = Vec::new();
            if let Some(system) = &s.system_prompt {
                messages.push(Message {
                    role: Role::System,
                    content: system.clone(),
                });
            }
            messages.push(Message {
                role: Role::User,
                content: user,
            });
            let prediction = generate(
                &g.model,
                &g.tokenizer,
                &g.template.render_prompt(&messages),
                s.max_new_tokens,
            )?;
            score.exact_match = Some(metrics::exact_match(&prediction, &q.item.answer));
            score.token_f1 = Some(metrics::token_f1(&prediction, &q.item.answer));
            score.answer_contained = Some(metrics::contains_answer(&prediction, &q.item.answer));
            score.format_ok = q.format.as_ref().map(|rule| rule.check(&prediction));
            score.prediction = Some(prediction);
            tracing::info!(
                "eval {}/{}: f1 {:.2} format {:?}",
                i + 1,
                questions.len(),
                score.token_f1.unwrap_or_default(),
                score.format_ok
            );
        }
        per_item.push(score);
    }
    let share = |f: &dyn Fn(&ItemScore) -> Option<bool>| {
        mean(
            per_item
                .iter()
                .filter_map(f)
                .map(|ok| f64::from(u8::from(ok))),
        )
    };
    Ok(EvalReport {
        items: per_item.len(),
        exact_match: share(&|s| s.exact_match),
        token_f1: mean(per_item.iter().filter_map(|s| s.token_f1)),
        answer_contained: share(&|s| s.answer_contained),
        format_compliance: share(&|s| s.format_ok),
        adapter: s.adapter.as_ref().map(|p| p.display().to_string()),
        retrieval: retrieval_report,
        duration_seconds: started.elapsed().as_secs_f64(),
        per_item,
    })
}
