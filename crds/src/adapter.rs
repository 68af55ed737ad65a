//! Adapter: a LoRA adapter trained from a chat dataset on top of a base model.

use crate::common::{
    ComputeResources, Conditions, DataSource, JobRecord, ModelSource, Placement, Progress,
    RetryState, StorageLocation,
};
use crate::corpus::{HttpSourceState, SourceScan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An Adapter is a LoRA adapter fine-tuned on a chat dataset, for domain behaviour (tone,
/// format, vocabulary). Its training revision is a digest of the dataset contents, the
/// hyperparameters and the base model: a change to any of them trains a new immutable adapter
/// revision in a Job; an unchanged Adapter trains nothing. A failed training Job leaves the
/// previous revision serving.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hybrid.dev",
    version = "v1alpha1",
    kind = "Adapter",
    plural = "adapters",
    singular = "adapter",
    shortname = "adp",
    category = "hybrid",
    namespaced,
    status = "AdapterStatus",
    doc = "A LoRA adapter fine-tuned on a chat dataset",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","description":"Active adapter revision","jsonPath":".status.activeRevision.revision"}"#,
    printcolumn = r#"{"name":"Method","type":"string","jsonPath":".spec.method"}"#,
    printcolumn = r#"{"name":"Rank","type":"integer","jsonPath":".spec.hyperparameters.rank"}"#,
    printcolumn = r#"{"name":"Eval-Loss","type":"number","jsonPath":".status.activeRevision.evalLoss"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.method != 'qlora' || self.baseModel.format == 'gguf'")
    .message("method qlora needs a quantized base: set baseModel.format to gguf, or use method lora"),
    validation = Rule::new("self.dataset.all(d, !has(d.s3))")
    .message("dataset: s3 datasets are not implemented yet for training; use configMap, persistentVolumeClaim or http datasets"),
    validation = Rule::new("!has(self.trainer.builtin) || self.baseModel.source.startsWith('pvc://') || self.baseModel.source.startsWith('file://')")
    .message("baseModel.source: the built-in trainer loads base models from pvc:// or file:// only"),
    validation = Rule::new("!has(self.trainer.builtin) || self.output.storage.startsWith('pvc://') || self.output.storage.startsWith('file://')")
    .message("output.storage: the built-in trainer writes adapters to pvc:// or file:// only"),
    validation = Rule::new("!has(self.trainer.image) || (self.baseModel.source.startsWith('pvc://') && self.output.storage.startsWith('pvc://'))")
    .message("an image trainer gets /model and /output from pvc:// locations only: set baseModel.source and output.storage to pvc://<claim>/<path>"))]
pub struct AdapterSpec {
    /// The base model the adapter is trained for. A HybridModel serving this adapter must use the
    /// same `source`, otherwise it is Stalled with reason BaseModelMismatch.
    pub base_model: ModelSource,
    /// Training examples: JSONL files with one `{"messages":[{"role":..,"content":..},..]}` chat
    /// per line. Loss is computed on assistant turns only. ConfigMap datasets are digested by
    /// their contents; HTTP datasets by the body the operator fetches; PVC datasets by a scan
    /// Job's listing (path, size and modification time of each file).
    #[schemars(length(min = 1, max = 16))]
    pub dataset: Vec<DataSource>,
    /// How often HTTP datasets are fetched again and PVC and S3 datasets scanned again to detect
    /// changes, as a duration (`30s`, `15m`, `1h30m`; at least `10s`). A change trains a new
    /// adapter revision; an unchanged dataset trains nothing. ConfigMap datasets are watched, so
    /// edits to them are seen at once either way. Unset: datasets are read when the Adapter is
    /// created or its spec changes, never periodically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub refresh_interval: Option<String>,
    /// `lora` trains on a float (dequantized) base; `qlora` keeps the frozen base quantized for the
    /// forward pass to save memory.
    #[serde(default)]
    pub method: TrainingMethod,
    /// LoRA and optimiser settings.
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// Who trains: the built-in candle trainer, or your own image that writes a PEFT adapter
    /// (`adapter_config.json`, `adapter_model.safetensors`) to `/output`. Set exactly one.
    #[serde(default)]
    pub trainer: Trainer,
    /// CPU, memory and GPUs of the training Job's pod.
    #[serde(default)]
    pub resources: ComputeResources,
    /// Node selector and tolerations of the training Job's pod.
    #[serde(default, flatten)]
    pub placement: Placement,
    /// Where adapter revisions are written; each revision gets its own sub-path named after it.
    pub output: StorageLocation,
}

/// Fine-tuning method.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrainingMethod {
    /// LoRA on a float base.
    #[default]
    Lora,
    /// LoRA on a quantized, frozen base.
    Qlora,
}

/// LoRA and optimiser settings. Any change is a new training revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hyperparameters {
    /// LoRA rank r: the inner dimension of the low-rank update.
    #[serde(default = "default_rank")]
    #[schemars(range(min = 1, max = 256))]
    pub rank: i32,
    /// LoRA alpha; the update is scaled by alpha / rank.
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 1, max = 1024))]
    pub alpha: i32,
    /// Dropout applied to the LoRA input during training, in [0, 0.9].
    #[serde(default = "default_dropout")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub dropout: f64,
    /// Projections that get LoRA weights (Hugging Face module names).
    #[serde(default = "default_target_modules")]
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n == m))")
        .message("hyperparameters.targetModules must not repeat a module"))]
    pub target_modules: Vec<TargetModule>,
    /// Passes over the training split.
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 1, max = 100))]
    pub epochs: i32,
    /// Peak learning rate of AdamW (after warm-up, before cosine decay).
    #[serde(default = "default_learning_rate")]
    #[schemars(range(min = 0.0000001, max = 0.1))]
    pub learning_rate: f64,
    /// Examples per optimiser step (before gradient accumulation).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch_size: i32,
    /// Micro-batches whose gradients are summed before each optimiser step.
    #[serde(default = "default_grad_accum")]
    #[schemars(range(min = 1, max = 256))]
    pub gradient_accumulation_steps: i32,
    /// Longest tokenized example; longer examples are rejected by the trainer with their line number.
    #[serde(default = "default_max_seq")]
    #[schemars(range(min = 32, max = 32768))]
    pub max_sequence_length: i32,
    /// Seed for shuffling, the held-out split, dropout and initialisation, so runs are reproducible.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0))]
    pub seed: i64,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            rank: default_rank(),
            alpha: default_alpha(),
            dropout: default_dropout(),
            target_modules: default_target_modules(),
            epochs: default_epochs(),
            learning_rate: default_learning_rate(),
            batch_size: default_batch_size(),
            gradient_accumulation_steps: default_grad_accum(),
            max_sequence_length: default_max_seq(),
            seed: default_seed(),
        }
    }
}

fn default_rank() -> i32 {
    8
}
fn default_alpha() -> i32 {
    16
}
fn default_dropout() -> f64 {
    0.05
}
fn default_target_modules() -> Vec<TargetModule> {
    vec![TargetModule::QProj, TargetModule::VProj]
}
fn default_epochs() -> i32 {
    3
}
fn default_learning_rate() -> f64 {
    0.0002
}
fn default_batch_size() -> i32 {
    4
}
fn default_grad_accum() -> i32 {
    1
}
fn default_max_seq() -> i32 {
    512
}
fn default_seed() -> i64 {
    42
}

/// A Llama-family projection that can carry LoRA weights.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum TargetModule {
    /// Attention query projection.
    #[serde(rename = "q_proj")]
    QProj,
    /// Attention key projection.
    #[serde(rename = "k_proj")]
    KProj,
    /// Attention value projection.
    #[serde(rename = "v_proj")]
    VProj,
    /// Attention output projection.
    #[serde(rename = "o_proj")]
    OProj,
    /// MLP gate projection.
    #[serde(rename = "gate_proj")]
    GateProj,
    /// MLP up projection.
    #[serde(rename = "up_proj")]
    UpProj,
    /// MLP down projection.
    #[serde(rename = "down_proj")]
    DownProj,
}

/// Who trains the adapter. Set exactly one of `builtin` or `image`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.builtin) != has(self.image)")
    .message("trainer must set exactly one of builtin or image"))]
pub struct Trainer {
    /// The runtime's own trainer (`hybrid-runtime train`), in the operator's runtime image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinTrainer>,
    /// Your own trainer image. It reads the dataset from `/data`, the base model from `/model`,
    /// the hyperparameters from `/config/train.json`, and must write a PEFT adapter to `/output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageTrainer>,
}

impl Default for Trainer {
    fn default() -> Self {
        Self {
            builtin: Some(BuiltinTrainer::default()),
            image: None,
        }
    }
}

/// The built-in candle LoRA trainer. No settings yet.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct BuiltinTrainer {}

/// A user-supplied trainer image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageTrainer {
    /// Container image reference, for example `registry.example.com/ml/trainer:1.4`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Entrypoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub command: Option<Vec<String>>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub args: Option<Vec<String>>,
}

/// Observed state of an Adapter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdapterStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Trained and SourcesChecked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Conditions,
    /// Digest of the dataset contents alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Digest of dataset contents, hyperparameters and base model: the revision the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_revision: Option<String>,
    /// The adapter revision serving pods load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<AdapterRevision>,
    /// Earlier revisions, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_revisions: Vec<AdapterRevision>,
    /// Progress of the running training Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The most recent training Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobRecord>,
    /// Failed attempts at the current training revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryState>,
    /// The HTTP datasets as last fetched by the operator: their body digests are part of
    /// `datasetDigest`, and their validators make the next check a conditional request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_sources: Vec<HttpSourceState>,
    /// The last scan of the PVC and S3 datasets (a small Job listing their files). Its digest is
    /// part of `datasetDigest`; the scan runs again every `refreshInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_scan: Option<SourceScan>,
}

/// One immutable, trained adapter.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdapterRevision {
    /// Revision id (the training revision it was trained from).
    pub revision: String,
    /// Where the PEFT adapter files are; the path contains the revision.
    pub artifact_uri: String,
    /// Digest of the dataset it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Training Job that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Training loss at the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_loss: Option<f64>,
    /// Loss on the held-out split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// When training finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
}
