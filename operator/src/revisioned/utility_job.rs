//! The skeleton of the operator's small runtime Jobs (source scans, prunes): one
//! `hybrid-runtime <command>` container with no GPUs and no placement (it runs anywhere its
//! volumes attach), the restricted security profile, and its result in the termination message.

use crate::error::Result;
use crate::objects::{
    RESULT_PATH, compute_resources, controller_ref, namespace_of, restricted_container_security,
    restricted_pod_security,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use std::collections::BTreeMap;

/// What differs between the small Jobs.
pub struct UtilityJob {
    pub name: String,
    /// The runtime subcommand, also the container's name.
    pub command: &'static str,
    /// Its flags; `--result-path` is added.
    pub args: Vec<String>,
    /// On the Job and its pod.
    pub labels: BTreeMap<String, String>,
    pub env: Option<Vec<EnvVar>>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    pub cpu: &'static str,
    pub memory: &'static str,
    pub backoff_limit: i32,
    pub deadline_seconds: i64,
    /// Finished Jobs nobody reads later are deleted by the TTL controller.
    pub ttl_seconds: Option<i32>,
}

/// The Job, owned by `owner` (a controller reference) in its namespace.
pub fn utility_job<K: Resource<DynamicType = ()>>(
    owner: &K,
    job: UtilityJob,
    runtime_image: &str,
) -> Result<Job> {
    let mut args = vec![job.command.to_owned()];
    args.extend(job.args);
    args.extend(["--result-path".to_owned(), RESULT_PATH.to_owned()]);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job.name),
            namespace: Some(namespace_of(owner)?),
            labels: Some(job.labels.clone()),
            owner_references: Some(vec![controller_ref(owner)?]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(job.backoff_limit),
            active_deadline_seconds: Some(job.deadline_seconds),
            ttl_seconds_after_finished: job.ttl_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job.labels),
                    annotations: crate::objects::job_pod_annotations(owner)?,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    security_context: Some(restricted_pod_security()),
                    volumes: Some(job.volumes),
                    containers: vec![Container {
                        name: job.command.to_owned(),
                        image: Some(runtime_image.to_owned()),
                        command: Some(vec!["hybrid-runtime".to_owned()]),
                        args: Some(args),
                        env: job.env,
                        resources: compute_resources(Some(job.cpu), Some(job.memory), "", 0),
                        volume_mounts: Some(job.mounts),
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
