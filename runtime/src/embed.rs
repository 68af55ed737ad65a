//! Sentence embeddings with a BERT-family encoder (all-MiniLM-L6-v2 and its relatives).
//!
//! The model directory holds `config.json`, `tokenizer.json` and `model.safetensors`, as the
//! sentence-transformers packages ship them. Pooling is the attention-masked mean of the last hidden
//! state followed by L2 normalisation, so the dot product of two embeddings is their cosine.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::chunk::TokenSpans;
use crate::device::Placement;

/// BERT's position table has 512 entries; longer inputs are truncated (chunks never get there).
pub const MAX_INPUT_TOKENS: usize = 512;

/// Files that make up an embedder; all of them feed the model digest.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedder file {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("embedding failed: {0}")]
    Inference(String),
}

impl EmbedError {
    fn load(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Load {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

pub struct Embedder {
    model: BertModel,
    /// Configured for batches: longest-in-batch padding, truncation at [`MAX_INPUT_TOKENS`].
    batch_tokenizer: Tokenizer,
    /// No padding or truncation: used to measure and split whole documents.
    span_tokenizer: Tokenizer,
    device: Device,
    dimension: usize,
}

impl Embedder {
    /// Loads the model from a local directory on the CPU.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Self::load_on(dir, Device::Cpu)
    }

    /// Loads the model onto a subcommand's device.
    pub fn load_for(dir: &Path, placement: &Placement) -> Result<Self, EmbedError> {
        Self::load_on(dir, placement.device.clone())
    }

    /// The weights are f32 on every device. candle's BERT builds its attention mask by multiplying
    /// `f32::MIN` cast to the model's dtype: in f16 that is -inf, and `0 × -inf` makes every
    /// unmasked position NaN. On a GPU, cuBLAS runs f32 matmuls on tensor cores (TF32) anyway.
    pub fn load_on(dir: &Path, device: Device) -> Result<Self, EmbedError> {
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| EmbedError::load(&config_path, e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| EmbedError::load(&config_path, e))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut span_tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| EmbedError::load(&tokenizer_path, e))?;
        span_tokenizer.with_padding(None);
        span_tokenizer
            .with_truncation(None)
            .map_err(|e| EmbedError::load(&tokenizer_path, e))?;
        let mut batch_tokenizer = span_tokenizer.clone();
        // The shipped tokenizer pads every input to a fixed 128; pad per batch instead.
        batch_tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let max_len = MAX_INPUT_TOKENS.min(config.max_position_embeddings);
        batch_tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| EmbedError::load(&tokenizer_path, e))?;

        let weights_path = dir.join("model.safetensors");
        let weights =
            std::fs::read(&weights_path).map_err(|e| EmbedError::load(&weights_path, e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| EmbedError::load(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| EmbedError::load(&weights_path, e))?;
        Ok(Self {
            model,
            batch_tokenizer,
            span_tokenizer,
            device,
            dimension: config.hidden_size,
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Embeds one batch of texts; each result is unit length. The whole slice is one forward pass,
    /// so callers choose the batch size (similar lengths together waste the least padding).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inference = |e: candle_core::Error| EmbedError::Inference(e.to_string());
        let encodings = self
            .batch_tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Inference(format!("tokenizing: {e}")))?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for encoding in &encodings {
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (texts.len(), len), &self.device).map_err(inference)?;
        let mask = Tensor::from_vec(mask, (texts.len(), len), &self.device).map_err(inference)?;
        let token_types = ids.zeros_like().map_err(inference)?;
        let hidden = self
            .model
            .forward(&ids, &token_types, Some(&mask))
            .map_err(inference)?;

        // Masked mean over the sequence, then L2 normalisation.
        let mask = mask
            .to_dtype(DType::F32)
            .map_err(inference)?
            .unsqueeze(2)
            .map_err(inference)?;
        let summed = hidden
            .broadcast_mul(&mask)
            .and_then(|t| t.sum(1))
            .map_err(inference)?;
        let counts = mask
            .sum(1)
            .and_then(|t| t.clamp(1e-9f32, f32::MAX))
            .map_err(inference)?;
        let mean = summed.broadcast_div(&counts).map_err(inference)?;
        let norm = mean
            .sqr()
            .and_then(|t| t.sum_keepdim(1))
            .and_then(|t| t.sqrt())
            .map_err(inference)?;
        let norm = norm.clamp(1e-12f32, f32::MAX).map_err(inference)?;
        mean.broadcast_div(&norm)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(inference)
    }

    /// Number of tokens of `text` as the model would see it, without special tokens.
    pub fn count_tokens(&self, text: &str) -> Result<usize, EmbedError> {
        self.span_tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .map_err(|e| EmbedError::Inference(format!("tokenizing: {e}")))
    }
}

impl TokenSpans for Embedder {
    fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>, String> {
        let encoding = self
            .span_tokenizer
            .encode(text, false)
            .map_err(|e| format!("tokenizing: {e}"))?;
        Ok(encoding.get_offsets().to_vec())
    }
}

/// Digest of the model files (config, tokenizer, weights): a different model, or the same model
/// with another tokenizer, gives a different digest and therefore forces a full re-embed.
pub fn model_digest(dir: &Path) -> Result<String, EmbedError> {
    let mut hasher = Sha256::new();
    for name in MODEL_FILES {
        let path = dir.join(name);
        let mut file = std::fs::File::open(&path).map_err(|e| EmbedError::load(&path, e))?;
        hasher.update(name.as_bytes());
        std::io::copy(&mut file, &mut hasher).map_err(|e| EmbedError::load(&path, e))?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Dot product; for embeddings from [`Embedder::embed`] this is the cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
