//! Types shared by several kinds: data sources, references, resources and status building blocks.

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest number of entries accepted in user-supplied lists. Bounded lists keep the apiserver's
/// CEL cost estimate low enough for the rules below to be admitted at all.
pub const MAX_LIST_ITEMS: u32 = 64;
/// Longest URI or path accepted anywhere in the API.
pub const MAX_URI_LENGTH: u32 = 2048;

/// A reference to an object of a known kind in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalObjectReference {
    /// Name of the referenced object in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("name must be a valid Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
}

/// One place documents or training examples are read from. Set exactly one of `configMap`,
/// `persistentVolumeClaim`, `http` or `s3`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.configMap), has(self.persistentVolumeClaim), has(self.http), has(self.s3)].filter(x, x).size() == 1"
).message("each source must set exactly one of configMap, persistentVolumeClaim, http or s3"))]
pub struct DataSource {
    /// Read every key of a ConfigMap in the same namespace (or only `keys`) as one document per key.
    /// The operator watches the ConfigMap and digests its contents itself, so an edit triggers a new
    /// revision within seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// Read files below `path` on a PersistentVolumeClaim. For a Corpus, a small scan Job lists
    /// them (path, size, modification time) when the source is new and every `refreshInterval`;
    /// a changed listing starts a new index revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PvcSource>,
    /// Fetch one document over HTTP(S). For a Corpus, the operator fetches it and digests the
    /// body when the source is new and every `refreshInterval` (conditional requests with the
    /// response's `ETag` and `Last-Modified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// Read objects under a prefix of an S3-compatible bucket. For a Corpus, a small scan Job
    /// lists them (key, size, ETag) when the source is new and every `refreshInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
}

/// Documents stored as the keys of a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigMapSource {
    /// Name of the ConfigMap in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Keys to read. All keys (data and binaryData) when empty or unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub keys: Option<Vec<String>>,
}

/// Files on a PersistentVolumeClaim in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    /// Name of the PersistentVolumeClaim.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Absolute directory or file path inside the volume, for example `/docs`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('/')")
        .message("path must be absolute inside the volume, for example /docs"))]
    pub path: String,
}

/// One document fetched over HTTP(S).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.headersSecretRef)")
    .message("headersSecretRef is not implemented yet: neither the operator's fetch nor the index and training Jobs send request headers; publish the document without authentication, or use a configMap, persistentVolumeClaim or s3 source"))]
pub struct HttpSource {
    /// `http://` or `https://` URL of the document.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/@?#]+([/?#].*)?$')")
        .message("url must start with http:// or https:// followed by a host, with no user:password@ in it (credentials belong in a Secret)"))]
    pub url: String,
    /// Reserved: a Secret whose keys would be sent as HTTP request headers (for example
    /// `Authorization`). Not implemented yet, so admission refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<LocalObjectReference>,
}

/// Objects under a prefix of an S3-compatible bucket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct S3Source {
    /// Bucket name (3-63 lowercase letters, digits, dots and hyphens).
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix to read below; empty reads the whole bucket.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub prefix: String,
    /// Endpoint of an S3-compatible service (MinIO, Ceph); unset means AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/@?#]+([/?#].*)?$')")
        .message("endpoint must start with http:// or https:// followed by a host, with no user:password@ in it (credentials belong in a Secret)"))]
    pub endpoint: Option<String>,
    /// Region of the bucket, for example `eu-west-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// Secret with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub credentials_secret_ref: LocalObjectReference,
}

/// Format of model weights.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// A single GGUF file (quantized or float).
    #[default]
    Gguf,
    /// A Hugging Face directory with `config.json`, `*.safetensors` and `tokenizer.json`.
    Safetensors,
}

/// Model weights and where to load them from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelSource {
    /// Location of the weights: `file:///path` (baked into the image or a mounted volume),
    /// `pvc://<claim>/<path>`, `s3://<bucket>/<key>` or `http(s)://...`. Never a model hub name:
    /// clusters that cannot reach the internet must work the same way.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(file://.+|s3://.+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^/].*|https?://[^/@?#]+([/?#].*)?)$')")
        .message("source must be a URI with scheme file://, pvc://, s3://, http:// or https://: pvc://<claim>/<path> with a valid claim name and a path, http(s):// with no user:password@ in it"),
        validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')")
        .message("source must not contain a '..' segment: it would climb out of its volume or prefix"))]
    pub source: String,
    /// Weight format: `gguf` or `safetensors`.
    #[serde(default)]
    pub format: ModelFormat,
}

/// Where an artifact (index revision, adapter revision) is written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageLocation {
    /// Base URI under which immutable revisions are written, one sub-path per revision:
    /// `pvc://<claim>/<path>`, `s3://<bucket>/<prefix>` or `file:///path`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(file://.+|s3://.+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*(/.*)?)$')")
        .message("storage must be a URI with scheme pvc://, s3:// or file://, for example pvc://hybrid-artifacts/indexes, with a valid claim name after pvc://"),
        validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')")
        .message("storage must not contain a '..' segment: it would climb out of its volume or prefix"))]
    pub storage: String,
}

/// Accelerators and CPU/memory for a Job or a serving pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// Number of GPUs per pod (0 runs on CPU).
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: i32,
    /// Extended resource name the GPUs are requested as.
    #[serde(default = "default_gpu_resource")]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
    ))]
    pub gpu_resource_name: String,
    /// CPU request and limit, as a Kubernetes quantity (`4`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    /// Memory request and limit, as a Kubernetes quantity (`16Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub memory: Option<String>,
}

impl Default for ComputeResources {
    fn default() -> Self {
        Self {
            gpus: 0,
            gpu_resource_name: default_gpu_resource(),
            cpu: None,
            memory: None,
        }
    }
}

pub fn default_gpu_resource() -> String {
    "nvidia.com/gpu".to_owned()
}

/// Where a Job's pods may run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels the pods must match, for example `nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate, for example the `nvidia.com/gpu` taint of GPU nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = Rule::new("self.all(t, !has(t.effect) || t.effect in ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute'])")
            .message("tolerations[].effect must be NoSchedule, PreferNoSchedule, NoExecute, or empty for all effects"),
        validation = Rule::new("self.all(t, !has(t.operator) || t.operator in ['', 'Exists', 'Equal'])")
            .message("tolerations[].operator must be Exists or Equal"),
        validation = Rule::new("self.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || t.value == '')")
            .message("tolerations[]: a toleration with operator Exists takes no value")
    )]
    pub tolerations: Vec<Toleration>,
}

/// How far a long-running Job has got, as reported by its progress file.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Current phase, for example `scanning`, `embedding`, `training`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Units done (documents, chunks or steps, see `unit`).
    #[serde(default)]
    pub done: i64,
    /// Units in total.
    #[serde(default)]
    pub total: i64,
    /// What `done` and `total` count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Estimated seconds until the Job finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
}

/// The most recent Job run for a resource, whatever its outcome.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// Name of the Job.
    pub name: String,
    /// Revision the Job was building.
    pub revision: String,
    /// `Running`, `Succeeded` or `Failed`.
    pub outcome: String,
    /// When the Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Failure reason and message taken from the pod's termination message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Retries of a failing revision: exponential backoff until the retry budget is spent, then
/// Stalled until the spec changes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetryState {
    /// Revision the failures belong to; a new revision starts from zero.
    pub revision: String,
    /// Failed attempts so far.
    pub failures: i32,
    /// Earliest time of the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
}

/// Conditions in the kstatus shape: Ready, Reconciling and Stalled on every kind, plus the
/// kind-specific ones (Indexed, Trained, Serving). Keyed by `type` for server-side apply.
pub type Conditions = Vec<Condition>;
