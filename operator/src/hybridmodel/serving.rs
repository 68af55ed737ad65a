//! What a HybridModel serves with: the runtime config (a ConfigMap the pods mount and reload),
//! the Deployment of `hybrid-runtime serve`, its Service and PodDisruptionBudget.
//!
//! Adapter and index revisions reach pods only through the ConfigMap, never through the pod
//! template: a new revision changes `config.yaml`, the kubelet refreshes the mounted file, and
//! the runtime reloads it without a restart. The pod template changes (and pods roll) only for
//! what a running process cannot pick up: image, resources, env, and the base model.

use crate::digest::ContentDigest;
use crate::error::{Error, Result};
use crate::objects::storage::ClaimMounts;
use crate::objects::{
    LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY, compute_resources, controller_ref,
    name_of, namespace_of, restricted_container_security, restricted_pod_security,
};
use hybrid_contract::serve_config::{
    BaseModel, DEFAULT_TOP_K, Limits, ServeConfig, ServedAdapter, ServedIndex,
};
use hybrid_crds::common::ModelFormat;
use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Port the runtime serves HTTP on (OpenAI API, probes, metrics).
pub const HTTP_PORT: i32 = 8080;
/// Where the runtime config is mounted; the runtime watches this directory.
pub const CONFIG_DIR: &str = "/etc/hybrid";
pub const CONFIG_KEY: &str = "config.yaml";
/// Pod-template annotation with the digest of what needs a restart to take effect.
pub const RESTART_ANNOTATION: &str = "hybrid.dev/restart-digest";
/// Pod annotation where each serving pod reports what it has loaded (the contract's).
pub use hybrid_contract::loaded::LOADED_REVISIONS_ANNOTATION as LOADED_ANNOTATION;
/// ServiceAccount (and Role, RoleBinding) of serving pods, one per namespace: lets a pod
/// `get` and `patch` pods in its namespace to write [`LOADED_ANNOTATION`] on itself.
pub const RUNTIME_SERVICE_ACCOUNT: &str = "hybrid-runtime";
/// How long a rollout (or scale-up) may go without a new pod becoming available before the
/// Deployment controller marks it `ProgressDeadlineExceeded` and the HybridModel is Stalled:
/// pulling a GPU runtime image and loading a base model can take minutes, a quarter of an hour
/// without progress cannot.
pub const SERVING_PROGRESS_DEADLINE_SECONDS: i32 = 900;

/// The referenced objects, in spec order, as read from the cluster.
pub struct ServingInputs<'a> {
    pub model: &'a HybridModel,
    pub policy: &'a ServingPolicy,
    pub adapters: &'a [Adapter],
    pub corpora: &'a [Corpus],
    pub runtime_images: crate::objects::RuntimeImages<'a>,
}

/// Everything a HybridModel needs in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingObjects {
    pub config: ServeConfig,
    pub serving_revision: String,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    pub rbac: RuntimeRbac,
}

/// The namespace's `hybrid-runtime` ServiceAccount, Role and RoleBinding. Shared by every
/// HybridModel of the namespace, so they carry no owner reference (an owner's deletion would
/// take them from the others); they stay when the last HybridModel goes.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeRbac {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

pub fn runtime_rbac(namespace: &str) -> RuntimeRbac {
    let meta = || ObjectMeta {
        name: Some(RUNTIME_SERVICE_ACCOUNT.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (LABEL_COMPONENT.to_owned(), "serving".to_owned()),
        ])),
        ..Default::default()
    };
    RuntimeRbac {
        service_account: ServiceAccount {
            metadata: meta(),
            ..Default::default()
        },
        role: Role {
            metadata: meta(),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".to_owned()]),
                verbs: vec!["get".to_owned(), "patch".to_owned()],
                ..Default::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "Role".to_owned(),
                name: RUNTIME_SERVICE_ACCOUNT.to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: RUNTIME_SERVICE_ACCOUNT.to_owned(),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            }]),
        },
    }
}

pub fn selector_labels(model: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MODEL.to_owned(), crate::objects::label_value(model)),
        (LABEL_COMPONENT.to_owned(), "serving".to_owned()),
    ])
}

/// The label selector string for the `/scale` subresource.
pub fn selector_string(model: &str) -> String {
    selector_labels(model)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn config_map_name(model: &str) -> String {
    format!("{model}-runtime")
}

pub fn endpoint(model: &str, namespace: &str) -> String {
    format!("http://{model}.{namespace}.svc:{HTTP_PORT}/v1")
}

/// Every Adapter must be trained for the base model the HybridModel serves.
pub fn check_base_models(model: &HybridModel, adapters: &[Adapter]) -> Result<()> {
    for adapter in adapters {
        if adapter.spec.base_model.source != model.spec.model.base.source {
            return Err(Error::BaseModelMismatch {
                adapter: name_of(adapter)?,
                adapter_base: adapter.spec.base_model.source.clone(),
                model_base: model.spec.model.base.source.clone(),
            });
        }
    }
    Ok(())
}

/// Retrieval depth: the policy's topK, bounded by its floor. The latency autoscaler (not built
/// yet) will lower it under pressure through the HybridModel status.
pub fn top_k(model: &HybridModel, policy: &ServingPolicy) -> i32 {
    let r = &policy.spec.retrieval;
    let chosen = model
        .status
        .as_ref()
        .and_then(|s| s.autoscaler.as_ref())
        .and_then(|a| a.top_k)
        .filter(|_| policy.spec.autoscaling.enabled)
        .unwrap_or(r.top_k);
    chosen.clamp(r.min_top_k.min(r.top_k), r.top_k)
}

/// Replicas: `spec.replicas` when autoscaling is off; otherwise the autoscaler's last decision,
/// within the policy's bounds (its minimum until it has decided).
pub fn replicas(model: &HybridModel, policy: &ServingPolicy) -> i32 {
    let bounds = &policy.spec.replicas;
    if !policy.spec.autoscaling.enabled {
        return model.spec.replicas;
    }
    model
        .status
        .as_ref()
        .and_then(|s| s.autoscaler.as_ref())
        .and_then(|a| a.desired_replicas)
        .unwrap_or(bounds.min)
        .clamp(bounds.min, bounds.max.max(bounds.min))
}

pub fn serving_objects(inputs: &ServingInputs<'_>) -> Result<ServingObjects> {
    let model = inputs.model;
    let name = name_of(model)?;
    let namespace = namespace_of(model)?;
    check_base_models(model, inputs.adapters)?;

    let mut claims = ClaimMounts::default();
    let mut adapters = Vec::new();
    for adapter in inputs.adapters {
        let adapter_name = name_of(adapter)?;
        let active = adapter
            .status
            .as_ref()
            .and_then(|s| s.active_revision.as_ref())
            .ok_or_else(|| Error::DependencyNotReady {
                kind: "Adapter",
                name: adapter_name.clone(),
                message: "no trained revision yet".into(),
            })?;
        // Artifacts live under the Adapter's output storage; mount that claim read-only.
        claims.resolve(&adapter.spec.output.storage, false)?;
        adapters.push(ServedAdapter {
            name: adapter_name,
            revision: active.revision.clone(),
            artifact_uri: active.artifact_uri.clone(),
        });
    }
    let mut indexes = Vec::new();
    for corpus in inputs.corpora {
        let corpus_name = name_of(corpus)?;
        let active = corpus
            .status
            .as_ref()
            .and_then(|s| s.active_revision.as_ref())
            .ok_or_else(|| Error::DependencyNotReady {
                kind: "Corpus",
                name: corpus_name.clone(),
                message: "no index revision yet".into(),
            })?;
        if let Some(embedded) = &corpus.spec.vector_store.embedded {
            claims.resolve(&embedded.storage, false)?;
        }
        let embedder = claims.resolve(&corpus.spec.embedding.model, false)?;
        indexes.push(ServedIndex {
            corpus: corpus_name,
            revision: active.revision.clone(),
            location: active.location.clone(),
            embedder: embedder.as_arg().to_owned(),
            dimensions: usize::try_from(corpus.spec.embedding.dimensions).ok(),
        });
    }
    let model_location = claims.resolve(&model.spec.model.base.source, false)?;
    let mut config = ServeConfig {
        name: name.clone(),
        serving_revision: None,
        model: BaseModel {
            source: model_location.as_arg().to_owned(),
            format: served_format(model.spec.model.base.format),
            precision: model.spec.model.precision.map(served_precision),
        },
        adapters,
        indexes,
        top_k: usize::try_from(top_k(model, inputs.policy)).unwrap_or(DEFAULT_TOP_K),
        prompt_template: model.spec.prompt_template.clone(),
        system_prompt: model.spec.system_prompt.clone(),
        // No API field sets them yet: the runtime's defaults apply.
        limits: Limits::default(),
        device: crate::objects::device_for_gpus(inputs.policy.spec.gpu.count),
    };
    let to_yaml = |c: &ServeConfig| {
        serde_yaml::to_string(c).map_err(|e| Error::Serialization(format!("runtime config: {e}")))
    };
    // The serving revision is the digest of the file without it, then written into it.
    let mut d = ContentDigest::new("hybrid.dev/serving/v1");
    d.field("config.yaml", &to_yaml(&config)?);
    let serving_revision = d.finish_revision();
    config.serving_revision = Some(serving_revision.clone());
    let config_yaml = to_yaml(&config)?;

    let owner = controller_ref(model)?;
    let labels = {
        let mut l = selector_labels(&name);
        l.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
        l
    };
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };

    let config_map = ConfigMap {
        metadata: meta(config_map_name(&name)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config_yaml)])),
        ..Default::default()
    };

    let mut restart = ContentDigest::new("hybrid.dev/restart/v1");
    restart.json_field("model", &model.spec.model)?;
    let restart_digest = restart.finish_revision();

    let policy = &inputs.policy.spec;
    let mut resources = model.spec.runtime.resources.clone().unwrap_or_default();
    if let Some(gpu) = compute_resources(None, None, &policy.gpu.resource_name, policy.gpu.count) {
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .extend(gpu.limits.unwrap_or_default());
    }
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    // A ConfigMap mounted as a directory (no subPath) is refreshed in place by the kubelet;
    // a subPath mount would freeze it and break revision swaps.
    let mut mounts = vec![
        VolumeMount {
            name: "config".to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..Default::default()
        },
    ];
    let (claim_volumes, claim_mounts) = claims.volumes_and_mounts();
    volumes.extend(claim_volumes);
    mounts.extend(claim_mounts);

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let placement = &policy.gpu.placement;
    let deployment = Deployment {
        metadata: meta(name.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas(model, inputs.policy)),
            progress_deadline_seconds: Some(SERVING_PROGRESS_DEADLINE_SECONDS),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    annotations: Some(BTreeMap::from([(
                        RESTART_ANNOTATION.to_owned(),
                        restart_digest,
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // The runtime reports its loaded revisions on its own Pod with this
                    // ServiceAccount's token.
                    service_account_name: Some(RUNTIME_SERVICE_ACCOUNT.to_owned()),
                    automount_service_account_token: Some(true),
                    security_context: Some(restricted_pod_security()),
                    node_selector: (!placement.node_selector.is_empty())
                        .then(|| placement.node_selector.clone()),
                    tolerations: (!placement.tolerations.is_empty())
                        .then(|| placement.tolerations.clone()),
                    volumes: Some(volumes),
                    containers: vec![Container {
                        name: "runtime".to_owned(),
                        image: Some(model.spec.runtime.image.clone().unwrap_or_else(|| {
                            inputs.runtime_images.for_gpus(policy.gpu.count).to_owned()
                        })),
                        command: Some(vec!["hybrid-runtime".to_owned()]),
                        args: Some(vec![
                            "serve".to_owned(),
                            "--config".to_owned(),
                            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
                        ]),
                        env: Some(runtime_env(&model.spec.runtime.env)),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".to_owned()),
                            container_port: HTTP_PORT,
                            protocol: Some("TCP".to_owned()),
                            ..Default::default()
                        }]),
                        resources: (resources != Default::default()).then_some(resources),
                        readiness_probe: Some(probe("/readyz", 5, 3)),
                        liveness_probe: Some(Probe {
                            // Loading a base model can take minutes; do not kill a pod for it.
                            initial_delay_seconds: Some(30),
                            ..probe("/healthz", 10, 6)
                        }),
                        volume_mounts: Some(mounts),
                        security_context: Some(restricted_container_security()),
                        // A pod that exits at start (a model file that is not there) leaves its
                        // last log lines as the message the HybridModel's condition shows.
                        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };

    let service = Service {
        metadata: meta(name.clone()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };

    let pdb = PodDisruptionBudget {
        metadata: meta(name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };

    Ok(ServingObjects {
        config,
        serving_revision,
        config_map,
        deployment,
        service,
        pdb,
        rbac: runtime_rbac(&namespace),
    })
}

/// A Prometheus Operator ServiceMonitor scraping the runtime's `/metrics` through the model's
/// Service (port `http`), owned by the HybridModel. Built as JSON: the operator does not link the
/// Prometheus Operator's types, and creates it only where that CRD is served.
pub fn service_monitor(model: &HybridModel) -> Result<serde_json::Value> {
    let name = name_of(model)?;
    let mut labels = selector_labels(&name);
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    Ok(serde_json::json!({
        "metadata": {
            "name": name,
            "namespace": namespace_of(model)?,
            "labels": labels,
            "ownerReferences": [controller_ref(model)?],
        },
        "spec": {
            "selector": {"matchLabels": selector_labels(&name)},
            // Every runtime series gets `model` = the HybridModel name (the autoscaler's and the
            // alerts' join key, docs/metrics.md); the runtime's own `model` label (the same name)
            // is kept as exported.
            "endpoints": [{
                "port": "http",
                "path": "/metrics",
                "interval": "15s",
                "honorLabels": true,
                "relabelings": [{"action": "replace", "targetLabel": "model", "replacement": name}],
            }],
        },
    }))
}

/// `POD_NAME` and `POD_NAMESPACE` from the downward API (where the runtime writes its report),
/// then the user's variables.
fn runtime_env(user: &[EnvVar]) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
    ];
    env.extend(
        user.iter()
            .filter(|e| e.name != "POD_NAME" && e.name != "POD_NAMESPACE")
            .cloned(),
    );
    env
}

/// The API's model format as the serve config writes it.
fn served_format(format: ModelFormat) -> hybrid_contract::serve_config::ModelFormat {
    use hybrid_contract::serve_config::ModelFormat as Served;
    match format {
        ModelFormat::Gguf => Served::Gguf,
        ModelFormat::Safetensors => Served::Safetensors,
    }
}

/// The API's `model.precision` as the serve config writes it.
fn served_precision(
    precision: hybrid_crds::model::Precision,
) -> hybrid_contract::serve_config::Precision {
    use hybrid_contract::serve_config::Precision as Served;
    use hybrid_crds::model::Precision;
    match precision {
        Precision::Quantized => Served::Quantized,
        Precision::Q8_0 => Served::Q8_0,
        Precision::F16 => Served::F16,
        Precision::F32 => Served::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::*;
    use hybrid_contract::device::DeviceChoice;

    const MODEL: &str = r#"
apiVersion: hybrid.dev/v1alpha1
kind: HybridModel
metadata: {name: advisor, namespace: demo, uid: 3333-model, generation: 4}
spec:
  model: {source: pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf, format: gguf}
  adapterRefs: [{name: finance-compliance}]
  corpusRefs: [{name: finance-notes}]
  servingPolicyRef: {name: advisory-latency}
  systemPrompt: Be brief.
  promptTemplate: "Context: {context}\nQuestion: {question}"
  replicas: 2
  runtime:
    resources: {limits: {memory: 8Gi}, requests: {cpu: "1"}}
"#;

    const POLICY: &str = r#"
apiVersion: hybrid.dev/v1alpha1
kind: ServingPolicy
metadata: {name: advisory-latency, namespace: demo}
spec:
  latency: {p95Ms: 2500}
  replicas: {min: 1, max: 4}
  retrieval: {topK: 8, minTopK: 3}
  gpu:
    resourceName: nvidia.com/gpu
    count: 1
    nodeSelector: {nvidia.com/gpu.present: "true"}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  autoscaling: {enabled: false}
"#;

    fn ready_adapter(revision: &str) -> Adapter {
        let mut a = adapter(FINANCE_ADAPTER);
        a.status = Some(serde_yaml::from_str(&format!(
            "activeRevision: {{revision: {revision}, artifactUri: 'file:///pvc/hybrid-artifacts/adapters/{revision}'}}"
        )).expect("status"));
        a
    }

    fn ready_corpus(revision: &str) -> Corpus {
        let mut c = corpus(FINANCE_CORPUS);
        c.status = Some(serde_yaml::from_str(&format!(
            "activeRevision: {{revision: {revision}, contentRevision: c1, location: /pvc/hybrid-artifacts/indexes/{revision}.tar.gz}}"
        )).expect("status"));
        c
    }

    fn build(model_yaml: &str, adapter_rev: &str, index_rev: &str) -> Result<ServingObjects> {
        serving_objects(&ServingInputs {
            model: &model(model_yaml),
            policy: &policy(POLICY),
            adapters: &[ready_adapter(adapter_rev)],
            corpora: &[ready_corpus(index_rev)],
            runtime_images: crate::objects::RuntimeImages {
                cpu: "ghcr.io/hybrid/runtime:1",
                cuda: "ghcr.io/hybrid/runtime:1-cuda",
            },
        })
    }

    #[test]
    fn pods_without_gpus_run_the_cpu_build_on_device_cpu() {
        let o = serving_objects(&ServingInputs {
            model: &model(MODEL),
            policy: &policy(&POLICY.replace("count: 1", "count: 0")),
            adapters: &[ready_adapter("ad-1")],
            corpora: &[ready_corpus("ix-1")],
            runtime_images: crate::objects::RuntimeImages {
                cpu: "ghcr.io/hybrid/runtime:1",
                cuda: "ghcr.io/hybrid/runtime:1-cuda",
            },
        })
        .expect("objects");
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&o.config_map.data.clone().expect("data")["config.yaml"])
                .expect("yaml");
        assert_eq!(yaml["device"], "cpu");
        let pod = o.deployment.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("ghcr.io/hybrid/runtime:1")
        );
    }

    #[test]
    fn config_lists_active_revisions_and_settings() {
        let o = build(MODEL, "ad-1", "ix-1").expect("objects");
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&o.config_map.data.clone().expect("data")["config.yaml"])
                .expect("yaml");
        assert_eq!(
            yaml["model"]["source"],
            "/pvc/hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(yaml["model"]["format"], "gguf");
        assert_eq!(yaml["adapters"][0]["name"], "finance-compliance");
        assert_eq!(yaml["adapters"][0]["revision"], "ad-1");
        assert_eq!(
            yaml["adapters"][0]["artifactUri"],
            "file:///pvc/hybrid-artifacts/adapters/ad-1"
        );
        assert_eq!(yaml["indexes"][0]["corpus"], "finance-notes");
        assert_eq!(yaml["indexes"][0]["revision"], "ix-1");
        assert_eq!(
            yaml["indexes"][0]["embedder"],
            "/pvc/hybrid-models/all-MiniLM-L6-v2"
        );
        assert_eq!(yaml["topK"], 8);
        assert_eq!(yaml["systemPrompt"], "Be brief.");
        assert!(
            yaml["promptTemplate"]
                .as_str()
                .expect("tpl")
                .contains("{question}")
        );
        assert_eq!(
            o.config_map.metadata.name.as_deref(),
            Some("advisor-runtime")
        );
    }

    /// The contract's round trip: the file the operator renders is what the runtime parses
    /// (`ServeConfig::parse` is the runtime's own parser), field for field, and the report the
    /// runtime then writes is what the operator folds into "every pod loaded this revision".
    #[test]
    fn the_rendered_config_parses_as_the_runtime_parses_it_and_its_report_folds_back() {
        for gpus in [0, 1] {
            let mut p = policy(POLICY);
            p.spec.gpu.count = gpus;
            let o = serving_objects(&ServingInputs {
                model: &model(MODEL),
                policy: &p,
                adapters: &[ready_adapter("ad-1")],
                corpora: &[ready_corpus("ix-1")],
                runtime_images: crate::objects::RuntimeImages {
                    cpu: "r:1",
                    cuda: "r:1-cuda",
                },
            })
            .expect("objects");
            let text = &o.config_map.data.clone().expect("data")[CONFIG_KEY];
            let parsed = ServeConfig::parse(text).expect("the runtime accepts the rendered file");
            assert_eq!(parsed, o.config, "every field survives the round trip");
            assert_eq!(parsed.serving_revision(), o.serving_revision);

            let mut report = parsed.loaded_revisions();
            report.device = Some("cpu".into());
            let pod: crate::cluster::cached_objects::ServingPod =
                serde_json::from_value(serde_json::json!({
                    "metadata": {
                        "name": "advisor-0",
                        "annotations": {LOADED_ANNOTATION: report.to_annotation()},
                    },
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }))
                .expect("pod");
            let folded = crate::hybridmodel::loaded_report::fold(&[&pod], &o.serving_revision);
            assert!(folded.all_loaded, "{}", folded.message);
            let loaded = folded.loaded.expect("loaded");
            assert_eq!(loaded.adapters[0].revision, "ad-1");
            assert_eq!(loaded.indexes[0].name, "finance-notes");
            assert_eq!(loaded.indexes[0].revision, "ix-1");
        }
    }

    #[test]
    fn config_names_the_model_and_carries_its_own_serving_revision() {
        let o = build(MODEL, "ad-1", "ix-1").expect("objects");
        let text = &o.config_map.data.clone().expect("data")["config.yaml"];
        let yaml: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
        assert_eq!(yaml["name"], "advisor");
        assert_eq!(yaml["servingRevision"], o.serving_revision.as_str());
        assert!(yaml.get("limits").is_none(), "unset limits are left out");
        // The revision is the digest of the file without it.
        let mut without = o.config.clone();
        without.serving_revision = None;
        let mut d = ContentDigest::new("hybrid.dev/serving/v1");
        d.field(
            "config.yaml",
            serde_yaml::to_string(&without).expect("yaml"),
        );
        assert_eq!(d.finish_revision(), o.serving_revision);
    }

    #[test]
    fn service_monitor_scrapes_the_model_service() {
        let sm = service_monitor(&model(MODEL)).expect("sm");
        assert_eq!(sm["metadata"]["name"], "advisor");
        assert_eq!(
            sm["spec"]["endpoints"][0]["relabelings"][0]["replacement"], "advisor",
            "runtime series are labelled with the HybridModel name"
        );
        assert_eq!(sm["metadata"]["ownerReferences"][0]["uid"], "3333-model");
        assert_eq!(
            sm["spec"]["selector"]["matchLabels"]["hybrid.dev/hybridmodel"],
            "advisor"
        );
        let svc = build(MODEL, "ad-1", "ix-1").expect("objects").service;
        assert_eq!(
            sm["spec"]["endpoints"][0]["port"],
            svc.spec.expect("spec").ports.expect("ports")[0]
                .name
                .clone()
                .expect("port name")
        );
    }

    #[test]
    fn serving_pods_report_with_the_runtime_service_account() {
        let o = build(MODEL, "ad-1", "ix-1").expect("objects");
        let pod = o.deployment.spec.expect("s").template.spec.expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("hybrid-runtime"));
        assert_eq!(pod.automount_service_account_token, Some(true));
        let env = pod.containers[0].env.clone().expect("env");
        let field = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.clone())
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path)
        };
        assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
        assert_eq!(
            field("POD_NAMESPACE").as_deref(),
            Some("metadata.namespace")
        );
        let rbac = &o.rbac;
        assert_eq!(
            rbac.service_account.metadata.namespace.as_deref(),
            Some("demo")
        );
        let rule = &rbac.role.rules.clone().expect("rules")[0];
        assert_eq!(rule.resources.clone().expect("res"), ["pods"]);
        assert_eq!(rule.verbs, ["get", "patch"]);
        assert_eq!(rbac.role_binding.role_ref.name, "hybrid-runtime");
        assert!(
            rbac.role.metadata.owner_references.is_none(),
            "shared by every model of the namespace"
        );
    }

    #[test]
    fn a_new_revision_changes_the_config_but_not_the_pod_template() {
        let old = build(MODEL, "ad-1", "ix-1").expect("objects");
        let new_adapter = build(MODEL, "ad-2", "ix-1").expect("objects");
        let new_index = build(MODEL, "ad-1", "ix-2").expect("objects");
        for new in [&new_adapter, &new_index] {
            assert_ne!(new.serving_revision, old.serving_revision);
            assert_ne!(new.config_map.data, old.config_map.data);
            assert_eq!(
                new.deployment.spec.as_ref().expect("s").template,
                old.deployment.spec.as_ref().expect("s").template,
                "a revision swap must not restart pods"
            );
        }
        assert_eq!(
            build(MODEL, "ad-1", "ix-1")
                .expect("again")
                .serving_revision,
            old.serving_revision
        );

        // A new base model does need new processes.
        let other_base = MODEL.replace("format: gguf}", "format: safetensors}");
        let restarted = build(&other_base, "ad-1", "ix-1").expect("objects");
        assert_ne!(
            restarted.deployment.spec.expect("s").template.metadata,
            old.deployment.spec.expect("s").template.metadata
        );
    }

    #[test]
    fn model_precision_reaches_the_runtime_config_and_restarts_the_pods() {
        let default = build(MODEL, "ad-1", "ix-1").expect("objects");
        let text = &default.config_map.data.as_ref().expect("data")["config.yaml"];
        assert!(
            !text.contains("precision"),
            "unset: the runtime's default\n{text}"
        );
        let q8 = MODEL.replace("format: gguf}", "format: gguf, precision: q8_0}");
        let o = build(&q8, "ad-1", "ix-1").expect("objects");
        let text = &o.config_map.data.as_ref().expect("data")["config.yaml"];
        assert!(text.contains("  precision: q8_0\n"), "{text}");
        // The runtime refuses a new precision on reload, so the pods roll.
        assert_ne!(
            o.deployment.spec.expect("s").template.metadata,
            default.deployment.spec.expect("s").template.metadata
        );
    }

    #[test]
    fn deployment_runs_the_runtime_on_the_policy_gpus() {
        let o = build(MODEL, "ad-1", "ix-1").expect("objects");
        let spec = o.deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2), "autoscaling off: spec.replicas");
        assert_eq!(spec.progress_deadline_seconds, Some(900));
        let container = &spec.template.spec.as_ref().expect("pod").containers[0];
        assert_eq!(
            container.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError"),
            "a crash at start must leave its error for the condition"
        );
        assert_eq!(
            spec.selector.match_labels.clone().expect("sel")["hybrid.dev/hybridmodel"],
            "advisor"
        );
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(
            c.args.clone().expect("args"),
            ["serve", "--config", "/etc/hybrid/config.yaml"]
        );
        // One GPU per pod: the CUDA build, told to find it.
        assert_eq!(c.image.as_deref(), Some("ghcr.io/hybrid/runtime:1-cuda"));
        assert_eq!(o.config.device, DeviceChoice::Auto);
        let res = c.resources.clone().expect("res");
        let limits = res.limits.expect("limits");
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
        assert_eq!(limits["memory"].0, "8Gi", "user resources kept");
        assert_eq!(res.requests.expect("req")["cpu"].0, "1");
        assert_eq!(
            pod.node_selector.expect("ns")["nvidia.com/gpu.present"],
            "true"
        );
        assert_eq!(pod.tolerations.expect("tol").len(), 1);
        let http = |p: &Option<Probe>| {
            p.clone()
                .expect("probe")
                .http_get
                .expect("http")
                .path
                .expect("path")
        };
        assert_eq!(http(&c.readiness_probe), "/readyz");
        assert_eq!(http(&c.liveness_probe), "/healthz");
        let sc = c.security_context.clone().expect("sc");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.expect("caps").drop,
            Some(vec!["ALL".to_owned()])
        );
        let mounts = c.volume_mounts.clone().expect("mounts");
        let config = mounts
            .iter()
            .find(|m| m.mount_path == "/etc/hybrid")
            .expect("config mount");
        assert!(
            config.sub_path.is_none(),
            "subPath mounts are never refreshed"
        );
        assert!(
            mounts
                .iter()
                .all(|m| m.mount_path == "/tmp" || m.read_only == Some(true))
        );

        assert_eq!(
            o.pdb.spec.expect("pdb").max_unavailable,
            Some(IntOrString::Int(1))
        );
        let svc = o.service.spec.expect("svc");
        assert_eq!(
            svc.selector.expect("sel")["app.kubernetes.io/component"],
            "serving"
        );
        assert_eq!(
            o.deployment.metadata.owner_references.expect("o")[0].uid,
            "3333-model"
        );
    }

    #[test]
    fn every_object_carries_the_managed_by_label_the_owned_watches_select_on() {
        let o = build(MODEL, "ad-1", "ix-1").expect("objects");
        for (kind, meta) in [
            ("ConfigMap", &o.config_map.metadata),
            ("Deployment", &o.deployment.metadata),
            ("Service", &o.service.metadata),
            ("PodDisruptionBudget", &o.pdb.metadata),
        ] {
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("hybrid-operator"),
                "{kind} would be invisible to the owns() watch"
            );
        }
    }

    #[test]
    fn autoscaled_replicas_stay_within_policy_bounds() {
        let p = policy(&POLICY.replace("enabled: false", "enabled: true"));
        let mut m = model(MODEL);
        assert_eq!(replicas(&m, &p), 1, "minimum until the autoscaler decides");
        m.status =
            Some(serde_yaml::from_str("autoscaler: {desiredReplicas: 9, topK: 1}").expect("st"));
        assert_eq!(replicas(&m, &p), 4);
        assert_eq!(top_k(&m, &p), 3, "never below minTopK");
        assert_eq!(
            top_k(&m, &policy(POLICY)),
            8,
            "autoscaler ignored when disabled"
        );
    }

    #[test]
    fn adapter_for_another_base_model_is_a_mismatch() {
        let mut a = ready_adapter("ad-1");
        a.spec.base_model.source = "pvc://hybrid-models/Other.gguf".into();
        let err = serving_objects(&ServingInputs {
            model: &model(MODEL),
            policy: &policy(POLICY),
            adapters: &[a],
            corpora: &[ready_corpus("ix-1")],
            runtime_images: crate::objects::RuntimeImages {
                cpu: "img",
                cuda: "img-cuda",
            },
        })
        .expect_err("mismatch");
        assert_eq!(err.label(), "BaseModelMismatch");
        let msg = err.to_string();
        assert!(msg.contains("pvc://hybrid-models/Other.gguf"), "{msg}");
        assert!(
            msg.contains("pvc://hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "{msg}"
        );
    }

    #[test]
    fn dependency_without_an_active_revision_is_not_ready() {
        let err = serving_objects(&ServingInputs {
            model: &model(MODEL),
            policy: &policy(POLICY),
            adapters: &[adapter(FINANCE_ADAPTER)],
            corpora: &[ready_corpus("ix-1")],
            runtime_images: crate::objects::RuntimeImages {
                cpu: "img",
                cuda: "img-cuda",
            },
        })
        .expect_err("not ready");
        assert_eq!(err.label(), "DependencyNotReady");
        assert!(err.to_string().contains("finance-compliance"));
    }
}
