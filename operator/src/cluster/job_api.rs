//! The Job API calls every controller makes: create a Job once, delete it with its pods, and
//! read a finished pod's termination state when the cache has not seen it yet.

use crate::cluster::cached_objects::JobPod;
use crate::error::{Error, Result};
use crate::revisioned::jobs;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ContainerStateTerminated;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};

/// Creates the Job unless it exists; true when this call created it (a watch cache a moment
/// behind reads a Job just created as absent: the Event and metric of its start must not be
/// repeated). Jobs are created, never applied: their pod template is immutable, and the name
/// already pins the revision.
pub async fn create_if_absent(jobs: &Api<Job>, job: &Job) -> Result<(Job, bool)> {
    match jobs.create(&PostParams::default(), job).await {
        Ok(created) => Ok((created, true)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = job
                .metadata
                .name
                .as_deref()
                .ok_or(Error::MissingObjectKey("metadata.name"))?;
            Ok((jobs.get(name).await?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes a Job and its pods (after their result was recorded).
pub async fn delete(jobs: &Api<Job>, name: &str) -> Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match jobs.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The terminated state of `container` in the Job's newest pod (reason, exit code, message),
/// read from the apiserver.
pub async fn terminated(
    pods: &Api<JobPod>,
    job_name: &str,
    container: &str,
) -> Result<Option<ContainerStateTerminated>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{}={job_name}", jobs::JOB_NAME_LABEL)))
        .await?;
    Ok(jobs::newest_terminated(list.items.iter(), container))
}
