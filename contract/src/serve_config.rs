//! `config.yaml` of `hybrid-runtime serve` (docs/runtime-contract.md §1): the operator renders
//! it, the runtime parses it strictly (an unknown field is an error naming it) and validates it
//! before anything is loaded. Both use these types, so a field renamed on one side is renamed on
//! the other; `tests/round_trip.rs` checks that what the operator renders parses.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::device::DeviceChoice;
use crate::limits::MAX_TOP_K;
use crate::loaded::{LoadedRevisions, NamedRevision};

/// Passages per question when the config does not say.
pub const DEFAULT_TOP_K: usize = 4;

/// Sequences generated at once by default: on CPU, more only slows each one down.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;
/// Requests waiting beyond the running ones by default; more are answered 429 at once rather
/// than left to time out in a queue.
pub const DEFAULT_MAX_QUEUE: usize = 32;
/// Prompt tokens (with retrieved passages) by default: SmolLM2's context is 2048 (8192 for the
/// larger ones), and prefill time grows with the square of the prompt on CPU.
pub const DEFAULT_MAX_PROMPT_TOKENS: usize = 2048;
/// Upper bound on a request's `max_tokens` by default.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// Adapter name that selects the base model alone (`<name>:base`), so no adapter may use it.
pub const BASE_ADAPTER: &str = "base";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServeConfig {
    /// HybridModel name; the served model ids derive from it.
    pub name: String,
    /// Digest the operator computed over the rest of the file; reported back verbatim. Computed
    /// from the file content when absent (hand-written configs). Left out while the operator
    /// computes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_revision: Option<String>,
    pub model: BaseModel,
    #[serde(default)]
    pub adapters: Vec<ServedAdapter>,
    #[serde(default)]
    pub indexes: Vec<ServedIndex>,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Admission limits; the defaults are left out of a rendered file (no API field sets them yet).
    #[serde(default, skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
    /// Where the model computes: auto (a GPU when the binary and the pod have one), cpu, cuda or
    /// cuda:N. Fixed for the life of the process: a change needs a restart. Always written, so a
    /// rendered file says where it runs.
    #[serde(default)]
    pub device: DeviceChoice,
}

fn default_top_k() -> usize {
    DEFAULT_TOP_K
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseModel {
    /// Path, file://, s3:// or http(s)://.
    pub source: String,
    #[serde(default)]
    pub format: ModelFormat,
    /// How the weights are held; [`BaseModel::precision`] gives the default for the format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

impl BaseModel {
    /// `model.precision`, or the default for the format: [`DEFAULT_GGUF_PRECISION`] for GGUF,
    /// f32 for safetensors (the only precision that loader has).
    pub fn precision(&self) -> Precision {
        match (self.precision, self.format) {
            (Some(p), _) => p,
            (None, ModelFormat::Gguf) => DEFAULT_GGUF_PRECISION,
            (None, ModelFormat::Safetensors) => Precision::F32,
        }
    }
}

/// Weight precision of a GGUF base when the config does not say: f16 decoded fastest of the four
/// on the 2-core CPU VM (twice f32, five times Q8_0 and Q4_1) with prefill close to f32's, at
/// half f32's memory and logits within 0.07 of f32 (BENCHMARKS.md, "Serving").
pub const DEFAULT_GGUF_PRECISION: Precision = Precision::F16;

/// `model.precision` (docs/runtime-precision.md): how the base model's weights are held.
/// Parsed through [`FromStr`](std::str::FromStr), so a wrong value's error names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum Precision {
    /// The GGUF's own quantized blocks (smallest; Q4_1 has no SIMD kernel in candle).
    #[serde(rename = "quantized")]
    Quantized,
    /// Re-quantized at load to Q8_0 blocks (SIMD dot products).
    #[serde(rename = "q8_0")]
    Q8_0,
    /// Dequantized to f16.
    #[serde(rename = "f16")]
    F16,
    /// Dequantized to f32 (the reference).
    #[serde(rename = "f32")]
    F32,
}

impl Precision {
    pub const ALL: [Precision; 4] = [
        Precision::Quantized,
        Precision::Q8_0,
        Precision::F16,
        Precision::F32,
    ];

    /// The value as written in the config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Quantized => "quantized",
            Precision::Q8_0 => "q8_0",
            Precision::F16 => "f16",
            Precision::F32 => "f32",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Precision {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Precision::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "model.precision: unknown value `{s}` (expected one of {})",
                    known.join(", ")
                )
            })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    #[default]
    Gguf,
    Safetensors,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServedAdapter {
    pub name: String,
    pub revision: String,
    /// Directory with `adapter_config.json` and `adapter_model.safetensors`.
    pub artifact_uri: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServedIndex {
    pub corpus: String,
    pub revision: String,
    /// Snapshot archive written by `index`.
    pub location: String,
    /// Embedding model directory (the one the index was built with).
    pub embedder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "d_concurrency")]
    pub max_concurrency: usize,
    #[serde(default = "d_queue")]
    pub max_queue: usize,
    #[serde(default = "d_prompt")]
    pub max_prompt_tokens: usize,
    #[serde(default = "d_tokens")]
    pub max_tokens: usize,
}

fn d_concurrency() -> usize {
    DEFAULT_MAX_CONCURRENCY
}
fn d_queue() -> usize {
    DEFAULT_MAX_QUEUE
}
fn d_prompt() -> usize {
    DEFAULT_MAX_PROMPT_TOKENS
}
fn d_tokens() -> usize {
    DEFAULT_MAX_TOKENS
}

impl Limits {
    pub fn is_default(&self) -> bool {
        *self == Limits::default()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_queue: DEFAULT_MAX_QUEUE,
            max_prompt_tokens: DEFAULT_MAX_PROMPT_TOKENS,
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {message}")]
    Read { path: String, message: String },
    #[error("config: {0}")]
    Parse(String),
    #[error("config field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Hex sha256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ServeConfig {
    /// Parses and validates a config file's text. `serde_yaml` names the unknown field and its
    /// line, which is the message a person needs.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: ServeConfig =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if config.serving_revision.is_none() {
            config.serving_revision = Some(format!("sr-{}", &digest(text.as_bytes())[..20]));
        }
        config.validate()?;
        Ok(config)
    }

    pub fn read(path: &Path) -> Result<(Self, String), ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: format!("not UTF-8: {e}"),
        })?;
        let config = Self::parse(&text)?;
        Ok((config, digest(text.as_bytes())))
    }

    pub fn serving_revision(&self) -> &str {
        self.serving_revision.as_deref().unwrap_or_default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() || self.name.contains(':') {
            return Err(invalid("name", "must be non-empty and contain no `:`"));
        }
        if self.model.source.trim().is_empty() {
            return Err(invalid("model.source", "must not be empty"));
        }
        if self.model.format == ModelFormat::Safetensors && self.model.precision() != Precision::F32
        {
            return Err(invalid(
                "model.precision",
                format!(
                    "`{}` needs a GGUF model; safetensors models load in f32",
                    self.model.precision()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.adapters.iter().enumerate() {
            let field = |f: &str| format!("adapters[{i}].{f}");
            if a.name.trim().is_empty() || a.name.contains(':') {
                return Err(invalid(
                    field("name"),
                    "must be non-empty and contain no `:`",
                ));
            }
            if a.name == BASE_ADAPTER {
                return Err(invalid(
                    field("name"),
                    format!("`{BASE_ADAPTER}` is reserved for the base model alone"),
                ));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(invalid(
                    field("name"),
                    format!("duplicate adapter `{}`", a.name),
                ));
            }
            if a.revision.trim().is_empty() {
                return Err(invalid(field("revision"), "must not be empty"));
            }
            if a.artifact_uri.trim().is_empty() {
                return Err(invalid(field("artifactUri"), "must not be empty"));
            }
        }
        let mut corpora = std::collections::HashSet::new();
        for (i, x) in self.indexes.iter().enumerate() {
            let field = |f: &str| format!("indexes[{i}].{f}");
            if x.corpus.trim().is_empty() {
                return Err(invalid(field("corpus"), "must not be empty"));
            }
            if !corpora.insert(x.corpus.as_str()) {
                return Err(invalid(
                    field("corpus"),
                    format!("duplicate corpus `{}`", x.corpus),
                ));
            }
            if x.location.trim().is_empty() {
                return Err(invalid(field("location"), "must not be empty"));
            }
            if x.embedder.trim().is_empty() {
                return Err(invalid(field("embedder"), "must not be empty"));
            }
            if x.dimensions == Some(0) {
                return Err(invalid(field("dimensions"), "must be positive"));
            }
        }
        if !(1..=MAX_TOP_K).contains(&self.top_k) {
            return Err(invalid(
                "topK",
                format!("must be between 1 and {MAX_TOP_K}, got {}", self.top_k),
            ));
        }
        if let Some(t) = &self.prompt_template
            && !t.contains("{question}")
        {
            return Err(invalid("promptTemplate", "must contain `{question}`"));
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.maxConcurrency", l.max_concurrency),
            ("limits.maxQueue", l.max_queue),
            ("limits.maxPromptTokens", l.max_prompt_tokens),
            ("limits.maxTokens", l.max_tokens),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be positive"));
            }
        }
        Ok(())
    }

    /// What `/v1/admin/revisions` and the Pod annotation report (contract §3); the device is
    /// the runtime's to add.
    pub fn loaded_revisions(&self) -> LoadedRevisions {
        let named = |name: &str, revision: &str| NamedRevision {
            name: name.to_owned(),
            revision: revision.to_owned(),
        };
        LoadedRevisions {
            serving_revision: self.serving_revision().to_owned(),
            adapters: (self.adapters.iter())
                .map(|a| named(&a.name, &a.revision))
                .collect(),
            indexes: (self.indexes.iter())
                .map(|x| named(&x.corpus, &x.revision))
                .collect(),
            device: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name: finance-assistant
servingRevision: sr-1
model:
  source: /models/smollm2.gguf
  format: gguf
adapters:
  - name: finance-tone
    revision: ad-1
    artifactUri: file:///artifacts/finance-tone/ad-1
indexes:
  - corpus: finance-docs
    revision: ix-1
    location: file:///indexes/ix-1.tar.gz
    embedder: /models/minilm
    dimensions: 384
topK: 4
promptTemplate: "C: {context} Q: {question}"
systemPrompt: "Be brief."
limits:
  maxConcurrency: 2
"#;

    #[test]
    fn contract_example_parses_with_default_limits() {
        let c = ServeConfig::parse(FULL).expect("valid config");
        assert_eq!(c.serving_revision(), "sr-1");
        assert_eq!(
            c.adapters[0].artifact_uri,
            "file:///artifacts/finance-tone/ad-1"
        );
        assert_eq!(c.limits.max_concurrency, 2);
        assert_eq!(c.limits.max_queue, DEFAULT_MAX_QUEUE);
        assert_eq!(c.limits.max_tokens, DEFAULT_MAX_TOKENS);
        let r = c.loaded_revisions();
        assert_eq!(r.indexes[0].name, "finance-docs");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = ServeConfig::parse(&FULL.replace("topK: 4", "topK: 4\ntopP: 1"))
            .expect_err("unknown field");
        assert!(err.to_string().contains("topP"), "{err}");
        let err = ServeConfig::parse(&FULL.replace("maxConcurrency: 2", "maxConcurency: 2"))
            .expect_err("misspelt limit");
        assert!(err.to_string().contains("maxConcurency"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        let err = ServeConfig::parse(&FULL.replace("topK: 4", "topK: 65")).expect_err("topK");
        assert!(err.to_string().contains("topK"), "{err}");
        let err = ServeConfig::parse(&FULL.replace("name: finance-tone", "name: base"))
            .expect_err("reserved");
        assert!(err.to_string().contains("adapters[0].name"), "{err}");
        let err = ServeConfig::parse(&FULL.replace("C: {context} Q: {question}", "no slots"))
            .expect_err("template");
        assert!(err.to_string().contains("promptTemplate"), "{err}");
    }

    #[test]
    fn serving_revision_defaults_to_the_content_digest() {
        let text = FULL.replace("servingRevision: sr-1\n", "");
        let a = ServeConfig::parse(&text).expect("valid");
        let b = ServeConfig::parse(&text.replace("Be brief.", "Be terse.")).expect("valid");
        assert!(a.serving_revision().starts_with("sr-"));
        assert_ne!(a.serving_revision(), b.serving_revision());
    }
}
