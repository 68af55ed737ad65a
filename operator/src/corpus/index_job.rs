//! The index Job of a Corpus content revision: `hybrid-runtime index` over the corpus sources,
//! publishing a new immutable index revision (see docs/runtime-index.md for the flags).

use crate::error::{Error, Result};
use crate::objects::data_sources::{s3_env, source_arg};
use crate::objects::storage::ClaimMounts;
use crate::objects::{
    LABEL_COMPONENT, LABEL_CORPUS, LABEL_MANAGED_BY, LABEL_REVISION, MANAGED_BY, RESULT_PATH,
    compute_resources, controller_ref, name_of, namespace_of, restricted_container_security,
    restricted_pod_security, revision_object_name,
};
use hybrid_crds::Corpus;
use hybrid_crds::corpus::ChunkingStrategy;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Inputs of the index Job besides the Corpus.
pub struct IndexJobInputs<'a> {
    pub content_revision: &'a str,
    pub runtime_images: crate::objects::RuntimeImages<'a>,
    /// Location of the active revision, whose unchanged documents are reused.
    pub previous_location: Option<&'a str>,
}

/// How long an index Job may run (`activeDeadlineSeconds`): embedding a large corpus on CPUs
/// takes minutes to tens of minutes; past an hour something is wrong, and the Job controller
/// stops it (a failed attempt, reported as `DeadlineExceeded`).
pub const INDEX_DEADLINE_SECONDS: i64 = 3600;

pub fn index_job_name(corpus: &str, content_revision: &str) -> String {
    revision_object_name(corpus, "index", content_revision)
}

pub fn index_job(corpus: &Corpus, inputs: &IndexJobInputs<'_>) -> Result<Job> {
    let name = name_of(corpus)?;
    let namespace = namespace_of(corpus)?;
    let spec = &corpus.spec;
    let mut claims = ClaimMounts::default();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    let mut args = vec!["index".to_owned()];

    let mut s3: Option<&hybrid_crds::common::S3Source> = None;
    for (i, source) in spec.sources.iter().enumerate() {
        args.push("--source".to_owned());
        args.push(source_arg(
            i,
            source,
            &mut claims,
            &mut volumes,
            &mut mounts,
            &mut s3,
        )?);
    }
    if let Some(s3) = s3 {
        env.extend(s3_env(s3));
    }

    let chunking = &spec.chunking;
    let strategy = match chunking.strategy {
        ChunkingStrategy::Fixed => "fixed",
        ChunkingStrategy::Sentence => "sentence",
        ChunkingStrategy::Markdown => "markdown",
    };
    args.extend([
        "--chunk-strategy".to_owned(),
        strategy.to_owned(),
        "--chunk-size".to_owned(),
        chunking.size.to_string(),
        "--chunk-overlap".to_owned(),
        chunking.overlap.to_string(),
        "--embedder".to_owned(),
        claims
            .resolve(&spec.embedding.model, false)?
            .as_arg()
            .to_owned(),
    ]);

    let output = match (&spec.vector_store.embedded, &spec.vector_store.qdrant) {
        (Some(embedded), None) => claims.resolve(&embedded.storage, true)?,
        (None, Some(_)) => {
            return Err(Error::NotImplemented(
                "vectorStore.qdrant: the runtime's index command only publishes embedded shards; use vectorStore.embedded".into(),
            ));
        }
        _ => {
            return Err(Error::InvalidSpec(
                "vectorStore must set exactly one of embedded or qdrant".into(),
            ));
        }
    };
    args.extend(["--output".to_owned(), output.as_arg().to_owned()]);
    if let Some(previous) = inputs.previous_location {
        args.extend(["--previous".to_owned(), previous.to_owned()]);
    }
    let gpus = spec
        .indexer
        .as_ref()
        .map_or(0, |indexer| indexer.resources.gpus);
    args.extend([
        "--device".to_owned(),
        crate::objects::device_for_gpus(gpus).to_string(),
        "--work-dir".to_owned(),
        "/tmp/index".to_owned(),
        "--result-path".to_owned(),
        RESULT_PATH.to_owned(),
    ]);

    // Read-only root: scratch space is an emptyDir.
    volumes.push(Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..Default::default()
    });
    let (claim_volumes, claim_mounts) = claims.volumes_and_mounts();
    volumes.extend(claim_volumes);
    mounts.extend(claim_mounts);

    let indexer = spec.indexer.clone().unwrap_or_default();
    let labels = BTreeMap::from([
        (LABEL_CORPUS.to_owned(), crate::objects::label_value(&name)),
        (
            LABEL_REVISION.to_owned(),
            inputs.content_revision.to_owned(),
        ),
        (LABEL_COMPONENT.to_owned(), "index".to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    let placement = &indexer.placement;
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(index_job_name(&name, inputs.content_revision)),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            owner_references: Some(vec![controller_ref(corpus)?]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // The operator retries itself, with backoff and a budget it reports in status.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(INDEX_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: crate::objects::job_pod_annotations(corpus)?,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    security_context: Some(restricted_pod_security()),
                    node_selector: (!placement.node_selector.is_empty())
                        .then(|| placement.node_selector.clone()),
                    tolerations: (!placement.tolerations.is_empty())
                        .then(|| placement.tolerations.clone()),
                    volumes: Some(volumes),
                    containers: vec![Container {
                        name: "index".to_owned(),
                        image: Some(
                            inputs
                                .runtime_images
                                .for_gpus(indexer.resources.gpus)
                                .to_owned(),
                        ),
                        command: Some(vec!["hybrid-runtime".to_owned()]),
                        args: Some(args),
                        env: (!env.is_empty()).then_some(env),
                        resources: compute_resources(
                            indexer.resources.cpu.as_deref(),
                            indexer.resources.memory.as_deref(),
                            &indexer.resources.gpu_resource_name,
                            indexer.resources.gpus,
                        ),
                        volume_mounts: Some(mounts),
                        termination_message_path: Some(RESULT_PATH.to_owned()),
                        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                        security_context: Some(restricted_container_security()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixtures::*;

    fn build(yaml: &str, previous: Option<&str>) -> Result<Job> {
        index_job(
            &corpus(yaml),
            &IndexJobInputs {
                content_revision: "0123456789abcdef",
                runtime_images: crate::objects::RuntimeImages {
                    cpu: "ghcr.io/hybrid/runtime:1",
                    cuda: "ghcr.io/hybrid/runtime:1-cuda",
                },
                previous_location: previous,
            },
        )
    }

    fn arg_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn index_job_runs_the_runtime_with_the_corpus_settings() {
        let job = build(
            FINANCE_CORPUS,
            Some("/pvc/hybrid-artifacts/indexes/ix-old.tar.gz"),
        )
        .expect("job");
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("finance-notes-index-0123456789")
        );
        let labels = job.metadata.labels.clone().expect("labels");
        assert_eq!(labels["hybrid.dev/corpus"], "finance-notes");
        assert_eq!(labels["hybrid.dev/revision"], "0123456789abcdef");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "hybrid-operator");
        let owner = &job.metadata.owner_references.clone().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Corpus", "1111-corpus")
        );
        assert_eq!(owner.controller, Some(true));

        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        let args = c.args.clone().expect("args");
        assert_eq!(args[0], "index");
        assert_eq!(
            c.command.as_deref(),
            Some(&["hybrid-runtime".to_owned()][..])
        );
        assert_eq!(
            arg_after(&args, "--source"),
            ["/sources/0", "/pvc/filings/docs"]
        );
        assert_eq!(arg_after(&args, "--chunk-strategy"), ["markdown"]);
        assert_eq!(arg_after(&args, "--chunk-size"), ["256"]);
        assert_eq!(arg_after(&args, "--chunk-overlap"), ["32"]);
        assert_eq!(
            arg_after(&args, "--embedder"),
            ["/pvc/hybrid-models/all-MiniLM-L6-v2"]
        );
        assert_eq!(
            arg_after(&args, "--output"),
            ["/pvc/hybrid-artifacts/indexes"]
        );
        assert_eq!(
            arg_after(&args, "--previous"),
            ["/pvc/hybrid-artifacts/indexes/ix-old.tar.gz"]
        );
        assert_eq!(arg_after(&args, "--result-path"), ["/dev/termination-log"]);
        // One GPU: the CUDA build, finding its GPU itself.
        assert_eq!(arg_after(&args, "--device"), ["auto"]);
        assert_eq!(c.image.as_deref(), Some("ghcr.io/hybrid/runtime:1-cuda"));
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );

        let limits = c.resources.clone().expect("res").limits.expect("limits");
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
        assert_eq!(
            pod.node_selector.expect("ns")["nvidia.com/gpu.present"],
            "true"
        );
        assert_eq!(
            pod.tolerations.expect("tol")[0].key.as_deref(),
            Some("nvidia.com/gpu")
        );

        let sc = c.security_context.clone().expect("sc");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.expect("caps").drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(sc.seccomp_profile.expect("seccomp").type_, "RuntimeDefault");

        let mounts = c.volume_mounts.clone().expect("mounts");
        let writable: Vec<_> = mounts
            .iter()
            .filter(|m| m.read_only != Some(true))
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            writable,
            ["/tmp", "/pvc/hybrid-artifacts"],
            "only scratch and output are writable"
        );
        let volumes = pod.volumes.expect("volumes");
        let source = volumes
            .iter()
            .find(|v| v.name == "source-0")
            .expect("cm volume");
        assert_eq!(
            source.config_map.as_ref().expect("cm").name,
            "finance-corpus"
        );
    }

    #[test]
    fn first_revision_has_no_previous_and_the_same_inputs_build_the_same_job() {
        let a = build(FINANCE_CORPUS, None).expect("job");
        let b = build(FINANCE_CORPUS, None).expect("job");
        assert_eq!(a, b);
        let args = a.spec.expect("s").template.spec.expect("p").containers[0]
            .args
            .clone()
            .expect("args");
        assert!(!args.contains(&"--previous".to_owned()));
    }

    #[test]
    fn unsupported_sources_and_stores_say_so() {
        let qdrant = FINANCE_CORPUS.replace(
            "embedded: {storage: pvc://hybrid-artifacts/indexes}",
            "qdrant: {url: http://qdrant:6334}",
        );
        let err = build(&qdrant, None).expect_err("qdrant");
        assert_eq!(err.label(), "NotImplemented");
        assert!(err.to_string().contains("vectorStore.qdrant"));

        let with_headers = FINANCE_CORPUS.replace(
            "- persistentVolumeClaim: {claimName: filings, path: /docs}",
            "- http: {url: https://example.com/a.md, headersSecretRef: {name: tok}}",
        );
        let err = build(&with_headers, None).expect_err("headers");
        assert!(err.to_string().contains("sources[1].http.headersSecretRef"));
    }

    #[test]
    fn s3_sources_get_credentials_from_the_secret() {
        let s3 = FINANCE_CORPUS.replace(
            "- persistentVolumeClaim: {claimName: filings, path: /docs}",
            "- s3: {bucket: docs-bucket, prefix: handbook/, endpoint: http://minio:9000, credentialsSecretRef: {name: s3-creds}}",
        );
        let job = build(&s3, None).expect("job");
        let c = job.spec.expect("s").template.spec.expect("p").containers[0].clone();
        let args = c.args.expect("args");
        assert_eq!(
            arg_after(&args, "--source")[1],
            "s3://docs-bucket/handbook/"
        );
        let env = c.env.expect("env");
        let key = env
            .iter()
            .find(|e| e.name == "AWS_ACCESS_KEY_ID")
            .expect("key");
        let sel = key
            .value_from
            .clone()
            .expect("from")
            .secret_key_ref
            .expect("secret");
        assert_eq!(sel.name, "s3-creds");
        assert!(env.iter().any(
            |e| e.name == "AWS_ENDPOINT_URL" && e.value.as_deref() == Some("http://minio:9000")
        ));
    }
}
