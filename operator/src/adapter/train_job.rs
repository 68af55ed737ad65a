//! The training Job of an Adapter training revision: the built-in `hybrid-runtime train` (see
//! docs/runtime-train.md for the flags), or a user image with the dataset at `/data`, the base
//! model at `/model`, the settings at `/config/train.json` and its output at `/output`. The user
//! image runs as an init container; the Job's container `train` then runs `hybrid-runtime
//! verify-adapter` on `/output`, which reports the result (or why the output is no adapter)
//! exactly as the built-in trainer does.

use crate::error::{Error, Result};
use crate::objects::storage::{ClaimMounts, Location, PVC_ROOT};
use crate::objects::{
    LABEL_ADAPTER, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_REVISION, MANAGED_BY, RESULT_PATH,
    compute_resources, controller_ref, name_of, namespace_of, restricted_container_security,
    restricted_pod_security, revision_object_name,
};
use crate::revisioned::inputs::ConfigMaps;
use hybrid_crds::Adapter;
use hybrid_crds::adapter::{ImageTrainer, TargetModule, TrainingMethod};
use hybrid_crds::common::{DataSource, ModelFormat};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

pub struct TrainJobInputs<'a> {
    pub training_revision: &'a str,
    pub runtime_images: crate::objects::RuntimeImages<'a>,
    /// The dataset ConfigMaps, to list the files of sources without `keys`.
    pub config_maps: &'a ConfigMaps,
}

/// What a training run needs in the cluster: the Job, and for image trainers the ConfigMap
/// holding `/config/train.json` (same name as the Job, owned by the Adapter).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainJob {
    pub job: Job,
    pub config: Option<ConfigMap>,
}

/// How long a training Job may run (`activeDeadlineSeconds`): LoRA fine-tuning of a small
/// model on one GPU takes minutes to a few hours; past six hours the Job controller stops it
/// (a failed attempt, reported as `DeadlineExceeded`).
pub const TRAIN_DEADLINE_SECONDS: i64 = 6 * 3600;

/// The Job's container, whose termination message holds the result (what the operator reads).
const TRAIN_CONTAINER: &str = "train";

/// The init container that runs an image trainer.
const TRAINER_INIT_CONTAINER: &str = "trainer";

/// Where an image trainer may write its own result (`resultPath` in `/config/train.json`):
/// beside the adapter, where `verify-adapter` reads its loss.
pub const IMAGE_TRAINER_RESULT_PATH: &str = "/output/result.json";

/// What the pod runs.
enum Run<'a> {
    /// `hybrid-runtime train` in the runtime image.
    Builtin { image: String, args: Vec<String> },
    /// The user's image, then `hybrid-runtime verify-adapter` with these arguments.
    Image {
        trainer: &'a ImageTrainer,
        verify_args: Vec<String>,
    },
}

pub fn train_job_name(adapter: &str, training_revision: &str) -> String {
    revision_object_name(adapter, "train", training_revision)
}

/// Where an image trainer's output lands: `<output.storage>/<revision>`, as a path in the pod.
pub fn image_trainer_artifact_uri(adapter: &Adapter, training_revision: &str) -> Result<String> {
    let mut claims = ClaimMounts::default();
    match claims.resolve(&adapter.spec.output.storage, true)? {
        Location::Local(p) => Ok(format!("file://{p}/{training_revision}")),
        Location::Remote(uri) => Ok(format!("{}/{training_revision}", uri.trim_end_matches('/'))),
    }
}

pub fn train_job(adapter: &Adapter, inputs: &TrainJobInputs<'_>) -> Result<TrainJob> {
    let name = name_of(adapter)?;
    let namespace = namespace_of(adapter)?;
    let job_name = train_job_name(&name, inputs.training_revision);
    let spec = &adapter.spec;
    let owner = controller_ref(adapter)?;

    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..Default::default()
    }];
    let mut claims = ClaimMounts::default();
    let mut dataset_files = Vec::new();
    for (i, source) in spec.dataset.iter().enumerate() {
        dataset_files.extend(dataset_source(
            i,
            source,
            inputs.config_maps,
            &mut claims,
            &mut volumes,
            &mut mounts,
        )?);
    }

    let (run, config) = match (&spec.trainer.builtin, &spec.trainer.image) {
        (Some(_), None) => {
            let base = match claims.resolve(&spec.base_model.source, false)? {
                Location::Local(p) => p,
                Location::Remote(uri) => {
                    return Err(Error::NotImplemented(format!(
                        "baseModel.source {uri:?}: the built-in trainer loads base models from pvc:// or file:// only"
                    )));
                }
            };
            let output = match claims.resolve(&spec.output.storage, true)? {
                Location::Local(p) => p,
                Location::Remote(uri) => {
                    return Err(Error::NotImplemented(format!(
                        "output.storage {uri:?}: the built-in trainer writes adapters to pvc:// or file:// only"
                    )));
                }
            };
            let args = builtin_args(adapter, &base, &dataset_files, &output);
            let image = (inputs.runtime_images.for_gpus(spec.resources.gpus)).to_owned();
            (Run::Builtin { image, args }, None)
        }
        (None, Some(trainer)) => {
            mount_at(
                &spec.base_model.source,
                "/model",
                false,
                &mut volumes,
                &mut mounts,
                "model",
            )?;
            let output = format!(
                "{}/{}",
                spec.output.storage.trim_end_matches('/'),
                inputs.training_revision
            );
            mount_at(
                &output,
                "/output",
                true,
                &mut volumes,
                &mut mounts,
                "output",
            )?;
            let train_json = serde_json::json!({
                "revision": inputs.training_revision,
                "method": spec.method,
                "baseModel": {"path": "/model", "format": spec.base_model.format},
                "datasets": dataset_files,
                "hyperparameters": spec.hyperparameters,
                "outputDir": "/output",
                "resultPath": IMAGE_TRAINER_RESULT_PATH,
            });
            volumes.push(Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: job_name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "config".to_owned(),
                mount_path: "/config".to_owned(),
                read_only: Some(true),
                ..Default::default()
            });
            let config = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(job_name.clone()),
                    namespace: Some(namespace.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    labels: Some(BTreeMap::from([
                        (LABEL_ADAPTER.to_owned(), crate::objects::label_value(&name)),
                        (
                            LABEL_REVISION.to_owned(),
                            inputs.training_revision.to_owned(),
                        ),
                        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                    ])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "train.json".to_owned(),
                    serde_json::to_string_pretty(&train_json)?,
                )])),
                ..Default::default()
            };
            let artifact_uri = image_trainer_artifact_uri(adapter, inputs.training_revision)?;
            let verify_args = [
                "verify-adapter",
                "--output",
                "/output",
                "--trainer-result",
                IMAGE_TRAINER_RESULT_PATH,
                "--revision",
                inputs.training_revision,
                "--artifact-uri",
                &artifact_uri,
                "--result-path",
                RESULT_PATH,
            ];
            let verify_args = verify_args.map(str::to_owned).to_vec();
            (
                Run::Image {
                    trainer,
                    verify_args,
                },
                Some(config),
            )
        }
        _ => {
            return Err(Error::InvalidSpec(
                "trainer must set exactly one of builtin or image".into(),
            ));
        }
    };
    let (claim_volumes, claim_mounts) = claims.volumes_and_mounts();
    volumes.extend(claim_volumes);
    mounts.extend(claim_mounts);

    let resources = |gpus: i32| {
        compute_resources(
            spec.resources.cpu.as_deref(),
            spec.resources.memory.as_deref(),
            &spec.resources.gpu_resource_name,
            gpus,
        )
    };
    let container = |name: &str,
                     image: String,
                     command: Option<Vec<String>>,
                     args: Option<Vec<String>>,
                     gpus: i32,
                     mounts: Vec<VolumeMount>| Container {
        name: name.to_owned(),
        image: Some(image),
        command,
        args,
        resources: resources(gpus),
        volume_mounts: Some(mounts),
        termination_message_path: Some(RESULT_PATH.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        security_context: Some(restricted_container_security()),
        ..Default::default()
    };
    let runtime_command = || Some(vec!["hybrid-runtime".to_owned()]);
    let (init_containers, main) = match run {
        Run::Builtin { image, args } => (
            None,
            container(
                TRAIN_CONTAINER,
                image,
                runtime_command(),
                Some(args),
                spec.resources.gpus,
                mounts,
            ),
        ),
        Run::Image {
            trainer,
            verify_args,
        } => {
            // verify-adapter only reads /output and needs no GPU. The pod still gets the
            // trainer's GPUs: its request is the larger of its largest init container's and
            // the sum of its containers'.
            let verify_mounts = (mounts.iter())
                .filter(|m| m.mount_path == "/tmp" || m.mount_path == "/output")
                .map(|m| {
                    let mut m = m.clone();
                    if m.mount_path == "/output" {
                        m.read_only = Some(true);
                    }
                    m
                })
                .collect();
            let trainer_container = container(
                TRAINER_INIT_CONTAINER,
                trainer.image.clone(),
                trainer.command.clone(),
                trainer.args.clone(),
                spec.resources.gpus,
                mounts,
            );
            (
                Some(vec![trainer_container]),
                container(
                    TRAIN_CONTAINER,
                    inputs.runtime_images.for_gpus(0).to_owned(),
                    runtime_command(),
                    Some(verify_args),
                    0,
                    verify_mounts,
                ),
            )
        }
    };

    let labels = BTreeMap::from([
        (LABEL_ADAPTER.to_owned(), crate::objects::label_value(&name)),
        (
            LABEL_REVISION.to_owned(),
            inputs.training_revision.to_owned(),
        ),
        (LABEL_COMPONENT.to_owned(), "train".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(TRAIN_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: crate::objects::job_pod_annotations(adapter)?,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    security_context: Some(restricted_pod_security()),
                    node_selector: (!spec.placement.node_selector.is_empty())
                        .then(|| spec.placement.node_selector.clone()),
                    tolerations: (!spec.placement.tolerations.is_empty())
                        .then(|| spec.placement.tolerations.clone()),
                    volumes: Some(volumes),
                    init_containers,
                    containers: vec![main],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    Ok(TrainJob { job, config })
}

fn builtin_args(adapter: &Adapter, base: &str, datasets: &[String], output: &str) -> Vec<String> {
    let spec = &adapter.spec;
    let h = &spec.hyperparameters;
    let format = match spec.base_model.format {
        ModelFormat::Gguf => "gguf",
        ModelFormat::Safetensors => "safetensors",
    };
    let method = match spec.method {
        TrainingMethod::Lora => "lora",
        TrainingMethod::Qlora => "qlora",
    };
    let modules: Vec<&str> = h
        .target_modules
        .iter()
        .map(|m| match m {
            TargetModule::QProj => "q_proj",
            TargetModule::KProj => "k_proj",
            TargetModule::VProj => "v_proj",
            TargetModule::OProj => "o_proj",
            TargetModule::GateProj => "gate_proj",
            TargetModule::UpProj => "up_proj",
            TargetModule::DownProj => "down_proj",
        })
        .collect();
    let mut args: Vec<String> = vec!["train".into()];
    let mut flag = |k: &str, v: String| {
        args.push(k.to_owned());
        args.push(v);
    };
    flag("--base-model", base.to_owned());
    flag("--base-format", format.to_owned());
    flag("--dataset", datasets.join(","));
    flag("--method", method.to_owned());
    flag("--rank", h.rank.to_string());
    flag("--alpha", h.alpha.to_string());
    flag("--dropout", h.dropout.to_string());
    flag("--target-modules", modules.join(","));
    flag("--epochs", h.epochs.to_string());
    flag("--learning-rate", h.learning_rate.to_string());
    flag("--batch-size", h.batch_size.to_string());
    flag(
        "--gradient-accumulation",
        h.gradient_accumulation_steps.to_string(),
    );
    flag("--max-seq-len", h.max_sequence_length.to_string());
    flag("--seed", h.seed.to_string());
    flag("--output-dir", output.to_owned());
    flag("--result-path", RESULT_PATH.to_owned());
    flag(
        "--device",
        crate::objects::device_for_gpus(spec.resources.gpus).to_string(),
    );
    args
}

/// Mounts one dataset source and returns the JSONL files it contributes, as paths in the pod.
fn dataset_source(
    i: usize,
    source: &DataSource,
    config_maps: &ConfigMaps,
    claims: &mut ClaimMounts,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
) -> Result<Vec<String>> {
    if let Some(cm) = &source.config_map {
        let keys: Vec<String> = crate::revisioned::inputs::config_map_documents(cm, config_maps)?
            .into_keys()
            .collect();
        let dir = format!("/data/{i}");
        volumes.push(Volume {
            name: format!("dataset-{i}"),
            config_map: Some(ConfigMapVolumeSource {
                name: cm.name.clone(),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: format!("dataset-{i}"),
            mount_path: dir.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        Ok(keys.into_iter().map(|k| format!("{dir}/{k}")).collect())
    } else if let Some(pvc) = &source.persistent_volume_claim {
        let root = claims.claim(&pvc.claim_name, false);
        Ok(vec![format!("{root}{}", pvc.path)])
    } else if let Some(http) = &source.http {
        // The trainer fetches the URL itself; the operator digested the same body.
        if http.headers_secret_ref.is_some() {
            return Err(Error::NotImplemented(format!(
                "dataset[{i}].http.headersSecretRef: the trainer cannot send request headers yet"
            )));
        }
        Ok(vec![http.url.clone()])
    } else {
        Err(Error::NotImplemented(format!(
            "dataset[{i}]: training datasets are read from configMap, persistentVolumeClaim and http sources only"
        )))
    }
}

/// Mounts the directory or file a `pvc://` URI names at a fixed path (image trainers expect
/// `/model` and `/output`). Other schemes cannot be mounted.
fn mount_at(
    uri: &str,
    at: &str,
    writable: bool,
    volumes: &mut Vec<Volume>,
    mounts: &mut Vec<VolumeMount>,
    volume: &str,
) -> Result<()> {
    let mut claims = ClaimMounts::default();
    let Location::Local(path) = claims.resolve(uri, writable)? else {
        return Err(Error::NotImplemented(format!(
            "{uri:?}: image trainers get {at} from pvc:// locations only"
        )));
    };
    let Some(rest) = path.strip_prefix(&format!("{PVC_ROOT}/")) else {
        return Err(Error::NotImplemented(format!(
            "{uri:?}: image trainers get {at} from pvc:// locations only"
        )));
    };
    let (claim, sub_path) = rest.split_once('/').unwrap_or((rest, ""));
    volumes.push(Volume {
        name: volume.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_owned(),
            read_only: Some(!writable),
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: volume.to_owned(),
        mount_path: at.to_owned(),
        sub_path: (!sub_path.is_empty()).then(|| sub_path.to_owned()),
        read_only: Some(!writable),
        ..Default::default()
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::*;

    fn cms() -> ConfigMaps {
        let cm = config_map(FINANCE_DATASET_CM);
        ConfigMaps::from([("finance-dataset".to_owned(), cm)])
    }

    fn build(yaml: &str) -> Result<TrainJob> {
        train_job(
            &adapter(yaml),
            &TrainJobInputs {
                training_revision: "abcdef0123456789",
                runtime_images: crate::objects::RuntimeImages {
                    cpu: "ghcr.io/hybrid/runtime:1",
                    cuda: "ghcr.io/hybrid/runtime:1-cuda",
                },
                config_maps: &cms(),
            },
        )
    }

    fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        args.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    }

    #[test]
    fn builtin_trainer_gets_runtime_flags_from_the_spec() {
        let TrainJob { job, config } = build(FINANCE_ADAPTER).expect("job");
        assert!(config.is_none());
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("finance-compliance-train-abcdef0123")
        );
        let labels = job.metadata.labels.clone().expect("labels");
        assert_eq!(labels["hybrid.dev/adapter"], "finance-compliance");
        assert_eq!(labels["hybrid.dev/revision"], "abcdef0123456789");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "hybrid-operator");
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(6 * 3600));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        // The adapter asks for 2 GPUs: the CUDA build, finding its GPU itself.
        assert_eq!(c.image.as_deref(), Some("ghcr.io/hybrid/runtime:1-cuda"));
        let args = c.args.clone().expect("args");
        assert_eq!(args[0], "train");
        assert_eq!(arg_after(&args, "--device"), Some("auto"));
        assert_eq!(
            arg_after(&args, "--base-model"),
            Some("/pvc/hybrid-models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(arg_after(&args, "--base-format"), Some("gguf"));
        // Only the selected key, not README.md.
        assert_eq!(arg_after(&args, "--dataset"), Some("/data/0/train.jsonl"));
        assert_eq!(arg_after(&args, "--rank"), Some("8"));
        assert_eq!(arg_after(&args, "--epochs"), Some("2"));
        assert_eq!(arg_after(&args, "--max-seq-len"), Some("256"));
        assert_eq!(arg_after(&args, "--target-modules"), Some("q_proj,v_proj"));
        assert_eq!(
            arg_after(&args, "--output-dir"),
            Some("/pvc/hybrid-artifacts/adapters")
        );
        assert_eq!(
            arg_after(&args, "--result-path"),
            Some("/dev/termination-log")
        );
        let limits = c.resources.clone().expect("res").limits.expect("limits");
        assert_eq!(limits["amd.com/gpu"].0, "2");
        assert!(!limits.contains_key("nvidia.com/gpu"));
        assert_eq!(pod.tolerations.expect("tol").len(), 1);
        assert_eq!(
            c.security_context
                .clone()
                .expect("sc")
                .read_only_root_filesystem,
            Some(true)
        );
    }

    #[test]
    fn image_trainer_gets_data_model_config_and_output_mounts() {
        let yaml = FINANCE_ADAPTER.replace(
            "trainer: {builtin: {}}",
            "trainer: {image: {image: registry.example.com/ml/trainer:1.4, command: [python, train.py], args: [--fast]}}",
        );
        let TrainJob { job, config } = build(&yaml).expect("job");
        let config = config.expect("train.json ConfigMap");
        assert_eq!(config.metadata.name, job.metadata.name);
        let train: serde_json::Value =
            serde_json::from_str(&config.data.expect("data")["train.json"]).expect("json");
        assert_eq!(train["hyperparameters"]["rank"], 8);
        assert_eq!(train["datasets"][0], "/data/0/train.jsonl");
        assert_eq!(train["outputDir"], "/output");
        // Beside the adapter, where verify-adapter reads it (the init container's own
        // termination message is not the Job's result).
        assert_eq!(train["resultPath"], "/output/result.json");

        let pod = job.spec.expect("s").template.spec.expect("p");
        let init = pod.init_containers.clone().expect("init containers");
        assert_eq!(init.len(), 1);
        let c = &init[0];
        assert_eq!(c.name, "trainer");
        assert_eq!(
            c.image.as_deref(),
            Some("registry.example.com/ml/trainer:1.4")
        );
        assert_eq!(c.command.clone().expect("cmd"), ["python", "train.py"]);
        assert_eq!(c.args.clone().expect("args"), ["--fast"]);
        let limits = c.resources.clone().expect("res").limits.expect("limits");
        assert_eq!(limits["amd.com/gpu"].0, "2", "the trainer gets the GPUs");
        let mounts = c.volume_mounts.clone().expect("mounts");
        let at = |p: &str| mounts.iter().find(|m| m.mount_path == p).cloned().expect(p);
        assert_eq!(
            at("/output").sub_path.as_deref(),
            Some("adapters/abcdef0123456789")
        );
        assert_eq!(at("/output").read_only, Some(false));
        assert_eq!(
            at("/model").sub_path.as_deref(),
            Some("SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(at("/model").read_only, Some(true));
        assert_eq!(at("/config").read_only, Some(true));
        assert_eq!(at("/data/0").read_only, Some(true));
        assert_eq!(
            image_trainer_artifact_uri(&adapter(&yaml), "abcdef0123456789").expect("uri"),
            "file:///pvc/hybrid-artifacts/adapters/abcdef0123456789"
        );
        assert_eq!(
            c.security_context
                .clone()
                .expect("sc")
                .read_only_root_filesystem,
            Some(true)
        );
    }

    #[test]
    fn image_trainer_output_is_verified_by_the_runtime_in_the_result_container() {
        let yaml = FINANCE_ADAPTER.replace(
            "trainer: {builtin: {}}",
            "trainer: {image: {image: registry.example.com/ml/trainer:1.4}}",
        );
        let TrainJob { job, .. } = build(&yaml).expect("job");
        let pod = job.spec.expect("s").template.spec.expect("p");
        assert_eq!(pod.containers.len(), 1);
        let c = &pod.containers[0];
        // The container whose termination message the operator reads.
        assert_eq!(c.name, "train");
        // No GPU for the check: the CPU build.
        assert_eq!(c.image.as_deref(), Some("ghcr.io/hybrid/runtime:1"));
        assert_eq!(c.command.clone().expect("cmd"), ["hybrid-runtime"]);
        let args = c.args.clone().expect("args");
        assert_eq!(args[0], "verify-adapter");
        assert_eq!(arg_after(&args, "--output"), Some("/output"));
        assert_eq!(
            arg_after(&args, "--trainer-result"),
            Some("/output/result.json")
        );
        assert_eq!(arg_after(&args, "--revision"), Some("abcdef0123456789"));
        assert_eq!(
            arg_after(&args, "--artifact-uri"),
            Some("file:///pvc/hybrid-artifacts/adapters/abcdef0123456789")
        );
        assert_eq!(
            arg_after(&args, "--result-path"),
            Some("/dev/termination-log")
        );
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let limits = (c.resources.clone()).and_then(|r| r.limits);
        assert!(
            limits.unwrap_or_default().is_empty(),
            "no GPU, and no cpu/memory set"
        );
        let mounts = c.volume_mounts.clone().expect("mounts");
        let paths: Vec<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        assert_eq!(paths, ["/tmp", "/output"]);
        let output = &mounts[1];
        assert_eq!(output.read_only, Some(true));
        assert_eq!(
            output.sub_path.as_deref(),
            Some("adapters/abcdef0123456789")
        );
        assert_eq!(
            c.security_context
                .clone()
                .expect("sc")
                .read_only_root_filesystem,
            Some(true)
        );
        // The built-in trainer has no init container.
        let builtin = build(FINANCE_ADAPTER).expect("job").job;
        let pod = builtin.spec.expect("s").template.spec.expect("p");
        assert!(pod.init_containers.is_none());
    }

    #[test]
    fn unsupported_locations_say_so() {
        let s3_out = FINANCE_ADAPTER.replace(
            "output: {storage: pvc://hybrid-artifacts/adapters}",
            "output: {storage: s3://bucket/adapters}",
        );
        let err = build(&s3_out).expect_err("s3 output");
        assert_eq!(err.label(), "NotImplemented");
        assert!(err.to_string().contains("output.storage"));
        let s3_data = FINANCE_ADAPTER.replace(
            "- configMap: {name: finance-dataset, keys: [train.jsonl]}",
            "- s3: {bucket: data, prefix: train/, credentialsSecretRef: {name: s3}}",
        );
        assert!(
            build(&s3_data)
                .expect_err("s3")
                .to_string()
                .contains("dataset[0]")
        );
    }

    #[test]
    fn http_datasets_are_fetched_by_the_trainer() {
        let http_data = FINANCE_ADAPTER.replace(
            "- configMap: {name: finance-dataset, keys: [train.jsonl]}",
            "- http: {url: https://example.com/train.jsonl}",
        );
        let built = build(&http_data).expect("http dataset");
        let pod = built.job.spec.expect("spec").template.spec.expect("pod");
        let args = pod.containers[0].args.clone().expect("args");
        assert_eq!(
            arg_after(&args, "--dataset"),
            Some("https://example.com/train.jsonl")
        );
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .all(|v| !v.name.starts_with("dataset-")),
            "nothing is mounted for an HTTP dataset"
        );
    }
}
