//! HybridModel: the deployment that binds a base model, adapters, corpora and a serving policy.

use crate::common::{Conditions, LocalObjectReference, ModelSource};
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A HybridModel serves a base model with LoRA adapters and retrieval over corpora, behind an
/// OpenAI-compatible endpoint, on GPU pods the operator runs. New adapter and index revisions
/// reach running pods without restarts; status reports the revisions the pods have actually
/// loaded, and the lineage from dataset to serving revision.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hybrid.dev",
    version = "v1alpha1",
    kind = "HybridModel",
    plural = "hybridmodels",
    singular = "hybridmodel",
    shortname = "hm",
    category = "hybrid",
    namespaced,
    // The Service is named after the HybridModel, and Service names are DNS-1035 labels.
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("HybridModel names are at most 63 characters: the Service is named after it"),
    status = "HybridModelStatus",
    doc = "A served base model with LoRA adapters and retrieval over corpora",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.availableReplicas"}"#,
    printcolumn = r#"{"name":"Top-K","type":"integer","description":"Retrieval depth in use","jsonPath":".status.topK"}"#,
    printcolumn = r#"{"name":"Serving-Rev","type":"string","description":"Revision of the serving configuration","jsonPath":".status.servingRevision"}"#,
    printcolumn = r#"{"name":"Device","type":"string","priority":1,"description":"Where the serving pods compute (cpu, cuda:N), as they report it","jsonPath":".status.loaded.device"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","priority":1,"jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HybridModelSpec {
    /// The base model to serve. Every referenced Adapter must have been trained for this same
    /// model source.
    pub model: ServedModel,
    /// Adapters to serve on top of the base model. Clients pick one per request with the model
    /// name `<hybridmodel>:<adapter>`; the first is the default. Each is loaded at its active
    /// revision and swapped without restarting pods when a new revision is trained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("adapterRefs must not name the same Adapter twice"))]
    pub adapter_refs: Vec<LocalObjectReference>,
    /// Corpora to retrieve passages from. Each is loaded at its active index revision and swapped
    /// without restarting pods when a new revision is indexed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("corpusRefs must not name the same Corpus twice"))]
    pub corpus_refs: Vec<LocalObjectReference>,
    /// The ServingPolicy (latency SLO, replica bounds, top-k, GPUs) in the same namespace.
    pub serving_policy_ref: LocalObjectReference,
    /// The serving container.
    #[serde(default)]
    pub runtime: RuntimeSpec,
    /// Prompt template. `{context}` is replaced by the retrieved passages (numbered `[1]`, `[2]`, ..)
    /// and `{question}` by the user's last message. Unset: the runtime's default RAG template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16384))]
    #[x_kube(validation = Rule::new("self.contains('{question}')")
        .message("promptTemplate must contain the {question} placeholder (and usually {context})"))]
    pub prompt_template: Option<String>,
    /// System prompt sent before every conversation that does not bring its own. Use the one the
    /// adapters were trained with: adapters learn behaviour conditioned on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16384))]
    pub system_prompt: Option<String>,
    /// Replicas when the ServingPolicy's autoscaling is disabled. Exposed through the `/scale`
    /// subresource so an HPA or KEDA can drive it; ignored while autoscaling is enabled.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
}

/// The base model a HybridModel serves: where its weights are and how pods hold them in memory.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("!has(self.precision) || self.format == 'gguf' || self.precision == 'f32'")
    .message("model.precision: a safetensors base loads only as f32; quantized, q8_0 and f16 need format gguf"))]
pub struct ServedModel {
    /// Where the weights are, and their format (see Adapter `spec.baseModel`).
    #[serde(flatten)]
    pub base: ModelSource,
    /// How serving pods hold the weights (see [`Precision`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

/// How serving pods hold the base model's weights: `quantized` (the GGUF's own blocks,
/// smallest), `q8_0` (re-quantized at load), `f16` or `f32` (dequantized). Default: `f16` for
/// GGUF, `f32` for safetensors (its only precision). Changing it restarts the serving pods
/// (docs/runtime-precision.md).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// The GGUF's own quantized blocks.
    #[serde(rename = "quantized")]
    Quantized,
    /// Re-quantized at load to Q8_0 blocks.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// Dequantized to f16.
    #[serde(rename = "f16")]
    F16,
    /// Dequantized to f32.
    #[serde(rename = "f32")]
    F32,
}

fn default_replicas() -> i32 {
    1
}

/// The serving container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RuntimeSpec {
    /// Runtime image; unset uses the operator's `hybrid-runtime` image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// CPU and memory of the serving container. GPUs come from the ServingPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables of the serving container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

/// Observed state of a HybridModel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HybridModelStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, Serving and Autoscaling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Conditions,
    /// Serving pods that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Serving pods that are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Label selector of the serving pods, for the `/scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster URL of the OpenAI-compatible endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Retrieval depth currently configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    /// Digest of the serving configuration (model, adapter and index revisions, top-k, template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_revision: Option<String>,
    /// Revisions the spec and its references ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<LoadedRevisions>,
    /// Revisions the serving pods report they have loaded; the oldest across pods while a swap is
    /// in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<LoadedRevisions>,
    /// How each served revision came to be: dataset digest → training Job → adapter revision, and
    /// content revision → index Job → index revision, ending in the serving revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    /// The latency autoscaler's last observation and decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
}

/// Adapter and index revisions, by resource name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LoadedRevisions {
    /// Serving revision (digest of the runtime config) these revisions belong to. In
    /// `status.loaded`, what the pods report in their `hybrid.dev/loaded-revisions` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_revision: Option<String>,
    /// Adapter name and revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<NamedRevision>,
    /// Corpus name and index revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<NamedRevision>,
    /// In `status.loaded`: where the pods compute, as they report it (`cpu`, `cuda:0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A resource name and one of its revisions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedRevision {
    /// Adapter or Corpus name.
    pub name: String,
    /// Revision id.
    pub revision: String,
}

/// Where the served revisions came from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Lineage {
    /// One entry per adapter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AdapterLineage>,
    /// One entry per corpus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexLineage>,
    /// Serving configuration revision built from all of the above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_revision: Option<String>,
}

/// dataset digest → training Job → adapter revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdapterLineage {
    /// Adapter name.
    pub adapter: String,
    /// Digest of the training dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Training Job that produced the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_job: Option<String>,
    /// Adapter revision.
    pub revision: String,
}

/// content revision → index Job → index revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IndexLineage {
    /// Corpus name.
    pub corpus: String,
    /// Digest of the source contents, chunking and embedding model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_revision: Option<String>,
    /// Index Job that produced the revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_job: Option<String>,
    /// Index revision.
    pub revision: String,
}

/// The latency autoscaler's view.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// Observed p95 end-to-end latency in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_p95_ms: Option<f64>,
    /// Observed p95 time to first token in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_ttft_p95_ms: Option<f64>,
    /// The SLO target in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_p95_ms: Option<i32>,
    /// Replicas the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Retrieval depth the autoscaler chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    /// Why it decided what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the last change was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision_time: Option<Time>,
}
