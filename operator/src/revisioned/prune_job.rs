//! The prune Job: `hybrid-runtime prune` deletes stored revisions (index archives, adapter
//! directories) that a Corpus or an Adapter no longer retains, or all of them when the resource
//! is deleted. The operator cannot reach a PersistentVolumeClaim or a bucket itself, so the
//! runtime image does it, with the same mounts the Jobs that wrote them had.

use crate::digest::ContentDigest;
use crate::error::Result;
use crate::objects::storage::{ClaimMounts, PVC_ROOT};
use crate::objects::{
    LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_REVISION, MANAGED_BY, name_of, revision_object_name,
};
use crate::revisioned::utility_job::{UtilityJob, utility_job};
use k8s_openapi::api::batch::v1::Job;
use kube::Resource;
use std::collections::BTreeMap;

/// Deleting files is a few syscalls per revision.
const PRUNE_CPU: &str = "100m";
const PRUNE_MEMORY: &str = "128Mi";
/// A stuck volume or endpoint fails the Job after this.
const PRUNE_DEADLINE_SECONDS: i64 = 600;
/// Kubernetes retries the pod this often; deleting is idempotent.
const PRUNE_BACKOFF_LIMIT: i32 = 2;
/// A finished prune Job is kept this long for `kubectl describe`, then the TTL controller
/// deletes it: nothing reads its result later.
pub const PRUNE_TTL_SECONDS: i32 = 600;
/// Value of the component label on prune Jobs.
pub const COMPONENT: &str = "prune";
/// Why a prune Job runs: `retention` (revisions left the history) or `deletion` (the owner is
/// being deleted; its finalizer reports the outcome).
pub const LABEL_PRUNE_FOR: &str = "hybrid.dev/prune-for";

/// What a prune Job is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneFor {
    Retention,
    Deletion,
}

impl PruneFor {
    pub fn label(self) -> &'static str {
        match self {
            PruneFor::Retention => "retention",
            PruneFor::Deletion => "deletion",
        }
    }
}

/// The locations as the runtime takes them, sorted and without duplicates: the Job's name is
/// derived from them, so the same set always maps to the same Job.
pub fn normalized(locations: &[String]) -> Vec<String> {
    let mut out: Vec<String> = locations
        .iter()
        .map(|l| l.strip_prefix("file://").unwrap_or(l).to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Digest of a set of locations (16 hex characters).
pub fn locations_digest(locations: &[String]) -> String {
    let mut d = ContentDigest::new("hybrid.dev/prune/v1");
    for l in normalized(locations) {
        d.field("location", l);
    }
    d.finish_revision()
}

/// `<owner>-prune-<digest[:10]>`: deterministic, so a restarted operator finds the Job it
/// created instead of starting a second one.
pub fn prune_job_name(owner: &str, locations: &[String]) -> String {
    revision_object_name(owner, COMPONENT, &locations_digest(locations))
}

/// The Job deleting `locations`, owned by `owner` and labelled `owner_label=<owner>`.
pub fn prune_job<K: Resource<DynamicType = ()>>(
    owner: &K,
    owner_label: &str,
    locations: &[String],
    runtime_image: &str,
    purpose: PruneFor,
) -> Result<Job> {
    let name = name_of(owner)?;
    let locations = normalized(locations);
    let mut claims = ClaimMounts::default();
    let mut args = Vec::new();
    for location in &locations {
        // A location another pod reported as `/pvc/<claim>/…` needs that claim, writable.
        if let Some(rest) = location.strip_prefix(&format!("{PVC_ROOT}/"))
            && let Some((claim, _)) = rest.split_once('/')
        {
            claims.claim(claim, true);
        }
        args.extend(["--location".to_owned(), location.clone()]);
    }
    let (volumes, mounts) = claims.volumes_and_mounts();
    let digest = locations_digest(&locations);
    let labels = BTreeMap::from([
        (owner_label.to_owned(), crate::objects::label_value(&name)),
        (LABEL_REVISION.to_owned(), digest.clone()),
        (LABEL_COMPONENT.to_owned(), COMPONENT.to_owned()),
        (LABEL_PRUNE_FOR.to_owned(), purpose.label().to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ]);
    utility_job(
        owner,
        UtilityJob {
            name: revision_object_name(&name, COMPONENT, &digest),
            command: "prune",
            args,
            labels,
            env: None,
            volumes,
            mounts,
            cpu: PRUNE_CPU,
            memory: PRUNE_MEMORY,
            backoff_limit: PRUNE_BACKOFF_LIMIT,
            deadline_seconds: PRUNE_DEADLINE_SECONDS,
            ttl_seconds: Some(PRUNE_TTL_SECONDS),
        },
        runtime_image,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::LABEL_CORPUS;
    use crate::objects::fixtures::*;

    #[test]
    fn prune_job_mounts_the_claims_of_its_locations_writable() {
        let c = corpus(FINANCE_CORPUS);
        let locations = vec![
            "file:///pvc/hybrid-artifacts/indexes/b.tar.gz".to_owned(),
            "/pvc/hybrid-artifacts/indexes/a.tar.gz".to_owned(),
            "s3://bucket/indexes/c.tar.gz".to_owned(),
            "/pvc/hybrid-artifacts/indexes/a.tar.gz".to_owned(),
        ];
        let job =
            prune_job(&c, LABEL_CORPUS, &locations, "rt:1", PruneFor::Retention).expect("job");
        let name = job.metadata.name.clone().expect("name");
        assert!(name.starts_with("finance-notes-prune-"), "{name}");
        assert_eq!(name, prune_job_name("finance-notes", &locations));
        let labels = job.metadata.labels.clone().expect("labels");
        assert_eq!(labels["app.kubernetes.io/component"], "prune");
        assert_eq!(labels[LABEL_CORPUS], "finance-notes");
        assert_eq!(labels[LABEL_PRUNE_FOR], "retention");
        let spec = job.spec.expect("spec");
        assert_eq!(spec.ttl_seconds_after_finished, Some(PRUNE_TTL_SECONDS));
        let pod = spec.template.spec.expect("pod");
        let c0 = &pod.containers[0];
        assert_eq!(
            c0.args.clone().expect("args"),
            [
                "prune",
                "--location",
                "/pvc/hybrid-artifacts/indexes/a.tar.gz",
                "--location",
                "/pvc/hybrid-artifacts/indexes/b.tar.gz",
                "--location",
                "s3://bucket/indexes/c.tar.gz",
                "--result-path",
                "/dev/termination-log",
            ],
            "sorted, file:// stripped, duplicates dropped"
        );
        let mounts = c0.volume_mounts.clone().expect("mounts");
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        assert_eq!(mounts[0].mount_path, "/pvc/hybrid-artifacts");
        assert_eq!(mounts[0].read_only, Some(false));
        let volumes = pod.volumes.expect("volumes");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.as_str()),
            Some("hybrid-artifacts")
        );
    }

    #[test]
    fn the_name_depends_on_the_set_not_its_order() {
        let a = vec!["/pvc/x/i/1".to_owned(), "/pvc/x/i/2".to_owned()];
        let b = vec!["file:///pvc/x/i/2".to_owned(), "/pvc/x/i/1".to_owned()];
        let c = vec!["/pvc/x/i/1".to_owned()];
        assert_eq!(prune_job_name("c", &a), prune_job_name("c", &b));
        assert_ne!(prune_job_name("c", &a), prune_job_name("c", &c));
    }
}
