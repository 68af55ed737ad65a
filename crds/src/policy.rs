//! ServingPolicy: the latency budget and how serving may scale to meet it. Reusable across models.

use crate::common::{Conditions, Placement};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Largest retrieval depth a policy may allow. Every passage lengthens the prompt, so time to
/// first token grows with top-k; beyond this the prompt no longer fits small models' context.
pub const MAX_TOP_K: i32 = 64;

/// A ServingPolicy is a latency SLO and the levers the operator may pull to hold it: replicas
/// within bounds, and retrieval depth (top-k) within bounds. Under pressure the operator lowers
/// top-k first (it takes effect in seconds, without new GPUs) and scales out; when pressure is
/// gone it restores top-k first and scales in after the stabilization window.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hybrid.dev",
    version = "v1alpha1",
    kind = "ServingPolicy",
    plural = "servingpolicies",
    singular = "servingpolicy",
    shortname = "sp",
    category = "hybrid",
    namespaced,
    status = "ServingPolicyStatus",
    doc = "Latency SLO, replica bounds and retrieval depth for serving",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"P95-ms","type":"integer","description":"p95 latency target","jsonPath":".spec.latency.p95Ms"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.replicas.min"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.replicas.max"}"#,
    printcolumn = r#"{"name":"Top-K","type":"integer","jsonPath":".spec.retrieval.topK"}"#,
    printcolumn = r#"{"name":"Autoscaling","type":"boolean","jsonPath":".spec.autoscaling.enabled"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.autoscaling.enabled || has(self.prometheus)")
    .message("autoscaling.enabled needs prometheus.url: the autoscaler reads latency from Prometheus"))]
pub struct ServingPolicySpec {
    /// The latency SLO, measured end to end by the serving pods.
    pub latency: LatencySlo,
    /// Replica bounds for the autoscaler.
    #[serde(default)]
    pub replicas: ReplicaBounds,
    /// How fast to add replicas when latency is above the SLO.
    #[serde(default = "ScalingRule::default_up")]
    pub scale_up: ScalingRule,
    /// How fast to remove replicas once latency is back within the SLO.
    #[serde(default = "ScalingRule::default_down")]
    pub scale_down: ScalingRule,
    /// Retrieval depth: passages put into each prompt.
    #[serde(default)]
    pub retrieval: Retrieval,
    /// GPUs of each serving pod and where they may run.
    #[serde(default)]
    pub gpu: GpuPlacement,
    /// Prometheus the autoscaler queries for latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusEndpoint>,
    /// Whether the operator scales replicas and top-k on latency. When false, the HybridModel's
    /// `spec.replicas` (or an HPA/KEDA through its `/scale` subresource) decides replicas and
    /// `retrieval.topK` is used as is.
    #[serde(default)]
    pub autoscaling: Autoscaling,
}

/// Latency targets in milliseconds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.timeToFirstTokenMs) || self.timeToFirstTokenMs <= self.p95Ms")
    .message("latency.timeToFirstTokenMs must not exceed latency.p95Ms"))]
pub struct LatencySlo {
    /// 95th percentile end-to-end request latency target.
    #[schemars(range(min = 1, max = 600000))]
    pub p95_ms: i32,
    /// 95th percentile time-to-first-token target (streaming requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600000))]
    pub time_to_first_token_ms: Option<i32>,
}

/// Replica bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.min <= self.max")
    .message("replicas.min must be less than or equal to replicas.max"))]
pub struct ReplicaBounds {
    /// Fewest replicas, also used when there is no traffic.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min: i32,
    /// Most replicas.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
}

impl Default for ReplicaBounds {
    fn default() -> Self {
        Self { min: 1, max: 1 }
    }
}

fn one() -> i32 {
    1
}

/// A scaling speed limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRule {
    /// The condition must hold this long before replicas change, to avoid flapping.
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_seconds: i32,
    /// Most replicas added or removed in one decision.
    #[schemars(range(min = 1, max = 100))]
    pub max_step: i32,
}

impl ScalingRule {
    fn default_up() -> Self {
        Self {
            stabilization_seconds: 15,
            max_step: 4,
        }
    }
    fn default_down() -> Self {
        Self {
            stabilization_seconds: 300,
            max_step: 1,
        }
    }
}

/// Retrieval depth bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minTopK <= self.topK")
    .message("retrieval.minTopK must be less than or equal to retrieval.topK"))]
pub struct Retrieval {
    /// Passages per prompt when latency is within the SLO.
    #[serde(default = "default_top_k")]
    #[schemars(range(min = 1, max = MAX_TOP_K))]
    pub top_k: i32,
    /// Fewest passages per prompt the autoscaler may drop to under pressure. A fine-tuned reader
    /// usually keeps its accuracy with 3-5 passages.
    #[serde(default = "default_min_top_k")]
    #[schemars(range(min = 1, max = MAX_TOP_K))]
    pub min_top_k: i32,
}

impl Default for Retrieval {
    fn default() -> Self {
        Self {
            top_k: default_top_k(),
            min_top_k: default_min_top_k(),
        }
    }
}

fn default_top_k() -> i32 {
    8
}
fn default_min_top_k() -> i32 {
    3
}

/// GPUs per serving pod and placement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuPlacement {
    /// Extended resource name the GPUs are requested as.
    #[serde(default = "crate::common::default_gpu_resource")]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
    ))]
    pub resource_name: String,
    /// GPUs per serving pod (0 serves on CPU).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 16))]
    pub count: i32,
    /// Node selector and tolerations of the serving pods.
    #[serde(default, flatten)]
    pub placement: Placement,
}

impl Default for GpuPlacement {
    fn default() -> Self {
        Self {
            resource_name: crate::common::default_gpu_resource(),
            count: 1,
            placement: Placement::default(),
        }
    }
}

/// A Prometheus HTTP API endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PrometheusEndpoint {
    /// Base URL of the Prometheus HTTP API, for example `http://prometheus-operated.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/@?#]+([/?#].*)?$')")
        .message("prometheus.url must start with http:// or https:// followed by a host, with no user:password@ in it (credentials belong in a Secret)"))]
    pub url: String,
}

/// Autoscaling switch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Autoscaling {
    /// Scale replicas and top-k on measured latency.
    #[serde(default)]
    pub enabled: bool,
}

/// Observed state of a ServingPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServingPolicyStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Conditions,
    /// HybridModels that reference this policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}
