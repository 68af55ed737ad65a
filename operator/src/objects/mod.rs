//! What every kind's pure builders share: labels, names, owner references, the restricted
//! security profile, runtime images and resources, storage URIs, and the test fixtures. Nothing
//! here talks to the API server. Each kind's own builders live beside it (`corpus/index_job.rs`,
//! `adapter/train_job.rs`, `hybridmodel/serving.rs`).

pub mod data_sources;
pub mod storage;

use crate::error::{Error, Result};
use hybrid_contract::device::DeviceChoice;
use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use std::collections::BTreeMap;

pub const LABEL_CORPUS: &str = "hybrid.dev/corpus";
pub const LABEL_ADAPTER: &str = "hybrid.dev/adapter";
pub const LABEL_MODEL: &str = "hybrid.dev/hybridmodel";
pub const LABEL_REVISION: &str = "hybrid.dev/revision";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "hybrid-operator";

/// Annotation on a Corpus or Adapter: a JSON object of annotations its Jobs' pods get, e.g.
/// `{"sidecar.istio.io/inject":"false"}`. Read when a Job is created; not part of any revision.
/// The e2e tests pass KWOK's `hybrid.dev/kwok-termination-message` through it.
pub const JOB_POD_ANNOTATIONS: &str = "hybrid.dev/job-pod-annotations";

/// The pod annotations asked for by [`JOB_POD_ANNOTATIONS`] on `owner`.
pub fn job_pod_annotations<K: Resource>(owner: &K) -> Result<Option<BTreeMap<String, String>>> {
    let Some(raw) = owner
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(JOB_POD_ANNOTATIONS))
    else {
        return Ok(None);
    };
    serde_json::from_str::<BTreeMap<String, String>>(raw)
        .map(|m| (!m.is_empty()).then_some(m))
        .map_err(|e| {
            Error::InvalidSpec(format!(
                "annotation {JOB_POD_ANNOTATIONS} must be a JSON object of string values: {e}"
            ))
        })
}

/// Where a Job writes its result, read back from the pod's termination message.
pub const RESULT_PATH: &str = "/dev/termination-log";

/// Kubernetes object names that end up in label values (`job-name`) must fit 63 characters.
const MAX_LABEL_VALUE: usize = 63;

/// `<owner>-<kind>-<revision[:10]>`, cut so it stays a valid label value. Deterministic, so a
/// restarted operator finds the Job it already created instead of starting a second one.
pub fn revision_object_name(owner: &str, kind: &str, revision: &str) -> String {
    let rev: String = revision.chars().take(10).collect();
    let suffix = format!("-{kind}-{rev}");
    let room = MAX_LABEL_VALUE.saturating_sub(suffix.len());
    let mut base: String = owner.chars().take(room).collect();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// An object name as a label value. Names may have 253 characters, label values 63: longer
/// names are cut and suffixed with a digest of the whole name, so they stay distinct.
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        return name.to_owned();
    }
    let digest = crate::digest::sha256_hex(name);
    let mut head: String = name.chars().take(MAX_LABEL_VALUE - 11).collect();
    while head.ends_with(['-', '.']) {
        head.pop();
    }
    format!("{head}-{}", &digest[..10])
}

/// A controller owner reference, so garbage collection removes what the resource owns and the
/// controller's `owns` watch maps child events back to it.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid or metadata.name"))
}

pub fn namespace_of<K: Resource>(obj: &K) -> Result<String> {
    obj.meta()
        .namespace
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))
}

pub fn name_of<K: Resource>(obj: &K) -> Result<String> {
    obj.meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))
}

/// The restricted Pod Security Standard: non-root, no privilege escalation, read-only root,
/// no capabilities, RuntimeDefault seccomp. Writable paths are emptyDirs.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Pod-level half of the restricted profile. 65532 is the distroless `nonroot` user the runtime
/// image runs as; `fsGroup` makes mounted volumes writable for it.
pub fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The runtime's two builds: the CPU one, and the CUDA one that containers requesting GPUs run
/// (docs/gpu.md). Set by the operator's `--runtime-image` and `--runtime-cuda-image`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeImages<'a> {
    pub cpu: &'a str,
    pub cuda: &'a str,
}

impl<'a> RuntimeImages<'a> {
    /// The image a runtime container with `gpus` GPUs runs.
    pub fn for_gpus(&self, gpus: i32) -> &'a str {
        match gpus > 0 {
            true => self.cuda,
            false => self.cpu,
        }
    }
}

/// The CUDA build's image when none is configured: `-cuda` appended to the tag (`:latest-cuda`
/// when untagged). An image pinned by digest has no such sibling, so it is kept as it is.
pub fn cuda_image_of(image: &str) -> String {
    if image.contains('@') {
        return image.to_owned();
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].contains(':') {
        true => format!("{image}-cuda"),
        false => format!("{image}:latest-cuda"),
    }
}

/// The runtime's `--device` (and the serve config's `device`) for a container with `gpus` GPUs:
/// `auto` finds the GPU the device plugin gave it; `cpu` for none, so a CUDA image on a node
/// whose driver shows every GPU cannot wander onto one it did not request.
pub fn device_for_gpus(gpus: i32) -> DeviceChoice {
    match gpus > 0 {
        true => DeviceChoice::Auto,
        false => DeviceChoice::Cpu,
    }
}

/// CPU and memory as request = limit (predictable scheduling for batch work), GPUs as limits
/// (extended resources cannot overcommit, the request follows the limit).
pub fn compute_resources(
    cpu: Option<&str>,
    memory: Option<&str>,
    gpu_resource: &str,
    gpus: i32,
) -> Option<ResourceRequirements> {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = cpu {
        requests.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
        limits.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
    }
    if let Some(memory) = memory {
        requests.insert("memory".to_owned(), Quantity(memory.to_owned()));
        limits.insert("memory".to_owned(), Quantity(memory.to_owned()));
    }
    if gpus > 0 {
        limits.insert(gpu_resource.to_owned(), Quantity(gpus.to_string()));
    }
    if requests.is_empty() && limits.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Inline YAML fixtures shared by the builder tests.
    use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
    use k8s_openapi::api::core::v1::ConfigMap;

    pub fn corpus(yaml: &str) -> Corpus {
        serde_yaml::from_str(yaml).expect("corpus fixture")
    }
    pub fn adapter(yaml: &str) -> Adapter {
        serde_yaml::from_str(yaml).expect("adapter fixture")
    }
    pub fn model(yaml: &str) -> HybridModel {
        serde_yaml::from_str(yaml).expect("model fixture")
    }
    pub fn policy(yaml: &str) -> ServingPolicy {
        serde_yaml::from_str(yaml).expect("policy fixture")
    }
    pub fn config_map(yaml: &str) -> ConfigMap {
        serde_yaml::from_str(yaml).expect("configmap fixture")
    }

    pub const FINANCE_CORPUS: &str = r#"
apiVersion: hybrid.dev/v1alpha1
kind: Corpus
metadata: {name: finance-notes, namespace: demo, uid: 1111-corpus, generation: 2}
spec:
  sources:
    - configMap: {name: finance-corpus}
    - persistentVolumeClaim: {claimName: filings, path: /docs}
  chunking: {strategy: markdown, size: 256, overlap: 32}
  embedding: {model: pvc://hybrid-models/all-MiniLM-L6-v2, dimensions: 384}
  vectorStore:
    embedded: {storage: pvc://hybrid-artifacts/indexes}
  retainRevisions: 2
  indexer:
    resources: {gpus: 1, gpuResourceName: nvidia.com/gpu, cpu: "2", memory: 4Gi}
    nodeSelector: {nvidia.com/gpu.present: "true"}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
"#;

    pub const FINANCE_CM: &str = r##"
apiVersion: v1
kind: ConfigMap
metadata: {name: finance-corpus, namespace: demo}
data:
  a.md: "# A\nalpha"
  b.md: "# B\nbeta"
"##;

    pub const FINANCE_ADAPTER: &str = r#"
apiVersion: hybrid.dev/v1alpha1
kind: Adapter
metadata: {name: finance-compliance, namespace: demo, uid: 2222-adapter, generation: 1}
spec:
  baseModel: {source: pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf, format: gguf}
  dataset:
    - configMap: {name: finance-dataset, keys: [train.jsonl]}
  method: lora
  hyperparameters: {rank: 8, alpha: 16, epochs: 2, maxSequenceLength: 256}
  trainer: {builtin: {}}
  resources: {gpus: 2, gpuResourceName: amd.com/gpu}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  output: {storage: pvc://hybrid-artifacts/adapters}
"#;

    pub const FINANCE_DATASET_CM: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: finance-dataset, namespace: demo}
data:
  train.jsonl: '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}'
  README.md: not training data
"#;
}

#[cfg(test)]
mod tests {

    #[test]
    fn job_pod_annotations_are_a_json_object_of_strings() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let with = |v: &str| {
            let mut c = ConfigMap::default();
            c.metadata.annotations = Some([(JOB_POD_ANNOTATIONS.to_owned(), v.to_owned())].into());
            c
        };
        assert_eq!(
            job_pod_annotations(&ConfigMap::default()).expect("none"),
            None
        );
        let got = job_pod_annotations(&with(r#"{"a.io/x":"1"}"#)).expect("parsed");
        assert_eq!(got.expect("some")["a.io/x"], "1");
        let err = job_pod_annotations(&with(r#"{"a":1}"#)).expect_err("number");
        assert_eq!(err.label(), "InvalidSpec");
        assert!(err.to_string().contains(JOB_POD_ANNOTATIONS), "{err}");
    }

    #[test]
    fn applied_means_every_desired_field_is_live() {
        use serde_json::json;
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"ports": [{"port": 80}], "emptyDir": {}, "env": []}});
        let live = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}, "uid": "u"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "emptyDir": {}}, "status": {}});
        assert!(is_applied(&desired, &live));
        let changed = json!({"metadata": {"name": "a", "labels": {"x": "2"}}});
        assert!(!is_applied(&changed, &live), "a changed value");
        let more = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        assert!(!is_applied(&more, &live), "a longer list");
        let missing = json!({"spec": {"replicas": 1}});
        assert!(
            !is_applied(&missing, &live),
            "a field the live object lacks"
        );
    }
    use super::*;

    #[test]
    fn gpu_containers_run_the_cuda_image_on_device_auto() {
        let images = RuntimeImages {
            cpu: "r:1",
            cuda: "r:1-cuda",
        };
        assert_eq!(
            (images.for_gpus(0), device_for_gpus(0).to_string().as_str()),
            ("r:1", "cpu")
        );
        assert_eq!(
            (images.for_gpus(2), device_for_gpus(2).to_string().as_str()),
            ("r:1-cuda", "auto")
        );
        assert_eq!(
            cuda_image_of("ghcr.io/h/runtime:0.1"),
            "ghcr.io/h/runtime:0.1-cuda"
        );
        assert_eq!(
            cuda_image_of("localhost:5000/runtime"),
            "localhost:5000/runtime:latest-cuda"
        );
        let pinned = "ghcr.io/h/runtime@sha256:0123";
        assert_eq!(cuda_image_of(pinned), pinned);
    }

    #[test]
    fn revision_names_fit_a_label_value_and_stay_deterministic() {
        assert_eq!(
            revision_object_name("finance-notes", "index", "0123456789abcdef"),
            "finance-notes-index-0123456789"
        );
        let long = "a".repeat(80) + "-b";
        let name = revision_object_name(&long, "train", "0123456789abcdef");
        assert!(name.len() <= 63, "{name} is {} long", name.len());
        assert!(name.ends_with("-train-0123456789"));
        let dashy = format!("{}-{}", "x".repeat(45), "y".repeat(20));
        let name = revision_object_name(&dashy, "index", "0123456789");
        assert!(!name.contains("--"), "{name}");
    }

    #[test]
    fn long_names_become_distinct_valid_label_values() {
        assert_eq!(label_value("finance-notes"), "finance-notes");
        let a = format!("{}-a", "x".repeat(100));
        let b = format!("{}-b", "x".repeat(100));
        assert!(label_value(&a).len() <= 63);
        assert_ne!(label_value(&a), label_value(&b));
        assert_eq!(label_value(&a), label_value(&a));
    }

    #[test]
    fn gpus_are_limits_and_cpu_memory_are_requests_and_limits() {
        let r = compute_resources(Some("2"), Some("4Gi"), "nvidia.com/gpu", 1).expect("some");
        let limits = r.limits.expect("limits");
        assert_eq!(limits["nvidia.com/gpu"], Quantity("1".into()));
        assert_eq!(limits["memory"], Quantity("4Gi".into()));
        let requests = r.requests.expect("requests");
        assert!(!requests.contains_key("nvidia.com/gpu"));
        assert_eq!(requests["cpu"], Quantity("2".into()));
        assert!(compute_resources(None, None, "nvidia.com/gpu", 0).is_none());
    }
}

/// Whether `live` already holds everything `desired` sets: every object key of `desired` with a
/// subset-equal value in `live`, lists of the same length compared item by item, scalars equal.
/// Fields only `live` has (defaults, status, other managers' fields) do not matter. Used to skip
/// server-side applies that would change nothing.
pub fn is_applied(desired: &serde_json::Value, live: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_applied(dv, lv),
            // The apiserver drops empty values; an empty desired value asks for nothing.
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_applied(dv, lv))
        }
        (d, Value::Null) => is_empty(d),
        (d, l) => d == l,
    }
}

fn is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(o) => o.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}
